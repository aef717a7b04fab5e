# bench/lib/mta.sh - the part shared by the shell benchmarks that race Tern against a
# private Postfix (bench/smtp/run.sh, bench/relay/run.sh). Sourced, never run:
#
#     . "$(dirname "$0")/../lib/mta.sh"
#
# The sourcing script sets MESSAGES, SESSIONS and SIZE (the smtp-source load) and then:
#   bench_init NAME              root and $TERN_BIN checks; WORK = a fresh
#                                /var/tmp/tern-bench-NAME.XXXXXX (a real disk, not tmpfs);
#                                at exit every pid in PIDS, the private Postfix and the
#                                private Dovecot (if started) are stopped and WORK removed
#                                (KEEP=1 keeps it)
#   bench_install PKG...         apt-get install PKG... without configuring or starting the
#                                system's services (debconf "No configuration", policy-rc.d)
#   tern_setup EXTRA_CONF        $WORK/tern/tern.conf: SMTP on a free loopback port TPORT,
#                                every other listener off, then the lines EXTRA_CONF; the
#                                run user and the domain example.test are created
#   tern_start                   hand $WORK/tern to the run user, `serve -f`; sets TERN_PID
#                                (users may be added with tern_cli between the two)
#   tern_cli ARGS...             the tern CLI on that config
#   postfix_start EXTRA_MAIN_CF  a private Postfix in P=$WORK/postfix (own config, queue and
#                                data directories, chroot off), smtpd on a free loopback port
#                                PPORT; EXTRA_MAIN_CF says where mail goes
#   load PORT RCPT               smtp-source: SESSIONS sessions, MESSAGES messages of SIZE
#   count_files DIR, wait_count DIR N TIMEOUT_S, wait_port PORT, now, median (stdin),
#   free_port, log, die
# The system's own Postfix/Dovecot (if any) are never touched: everything runs from WORK
# on loopback high ports.
# shellcheck shell=bash

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_cleanup() {
    set +e
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    [ -f "$WORK/postfix/main.cf" ] && postfix -c "$WORK/postfix" stop >/dev/null 2>&1
    [ -f "$WORK/dovecot/run/master.pid" ] && kill "$(cat "$WORK/dovecot/run/master.pid")" 2>/dev/null
    sleep 1
    [ -z "${KEEP:-}" ] && rm -rf "$WORK"
}

bench_init() { # name
    REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    TERN_BIN=${TERN_BIN:-$REPO/build/tern}
    TERN_RUN_USER=${TERN_RUN_USER:-tern}
    [ "$(id -u)" = 0 ] || die "run as root (private Postfix/Dovecot instances need it)"
    [ -x "$TERN_BIN" ] || die "no tern binary at $TERN_BIN (meson setup build && ninja -C build)"
    WORK=$(mktemp -d "/var/tmp/tern-bench-$1.XXXXXX")
    chmod 755 "$WORK"
    PIDS=()
    trap bench_cleanup EXIT
}

bench_install() { # package...
    [ $# -gt 0 ] || return 0
    log "installing $* (not configured, not started)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    local made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

# smtp-source and smtp-sink come with the postfix package.
smtp_tools_missing() {
    ! command -v smtp-source >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-source ]
}

count_files() { find "$1" -type f 2>/dev/null | wc -l; }

wait_count() { # dir expected timeout_s
    local end=$((SECONDS + $3))
    while [ "$(count_files "$1")" -lt "$2" ]; do
        [ $SECONDS -ge $end ] && { log "timeout: $(count_files "$1")/$2 in $1"; return 1; }
        sleep 0.05
    done
}

wait_port() { # port: up to 10 s for something to listen there
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

now() { date +%s.%N; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# smtp-source: -s sessions in parallel, -m messages total, -l size
load() { # port recipient
    "$SMTP_SOURCE" -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@load.example \
        -t "$2" -M load.example "127.0.0.1:$1"
}

# ---- Tern ----------------------------------------------------------------------------------
tern_cli() { "$TERN_BIN" -c "$WORK/tern/tern.conf" "$@"; }

tern_setup() { # extra config lines
    TPORT=$(free_port)
    mkdir -p "$WORK/tern"
    cat > "$WORK/tern/tern.conf" <<EOF
hostname = bench.example.test
data_dir = $WORK/tern/data
smtp.listen = 127.0.0.1:$TPORT
submission.listen =
submissions.listen =
pop3.listen =
pop3s.listen =
imap.listen =
imaps.listen =
run_user = $TERN_RUN_USER
$1
EOF
    # run_user, and the login processes' and the auth process's users (docs/SECURITY.md)
    for u in "$TERN_RUN_USER" tern-login tern-auth; do
        id "$u" >/dev/null 2>&1 || useradd --system --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
    done
    tern_cli domain add example.test >/dev/null
}

tern_start() {
    chown -R "$TERN_RUN_USER" "$WORK/tern"
    # (the login processes' empty root must stay root's; the server re-owns tern.db)
    if [ -d "$WORK/tern/data/run" ]; then chown -R root:root "$WORK/tern/data/run"; fi
    # Not through tern_cli: a backgrounded function is a subshell, and $! must be tern
    # itself (cleanup kills it; strace and perf attach to it).
    "$TERN_BIN" -c "$WORK/tern/tern.conf" serve -f > "$WORK/tern/server.log" 2>&1 &
    TERN_PID=$!
    PIDS+=("$TERN_PID")
    for _ in $(seq 200); do grep -qs "daemon started" "$WORK/tern/server.log" && break; sleep 0.05; done
    grep -qs "daemon started" "$WORK/tern/server.log" ||
        die "tern did not start: $(tail "$WORK/tern/server.log")"
}

# ---- reference: Postfix --------------------------------------------------------------------
postfix_start() { # extra main.cf lines
    PPORT=$(free_port)
    P="$WORK/postfix"
    mkdir -p "$P/spool" "$P/data"
    chown postfix:postfix "$P/data"
    cat > "$P/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $P/spool
data_directory = $P/data
mail_owner = postfix
setgid_group = postdrop
myhostname = ref.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = $P/maillog
biff = no
alias_maps =
alias_database =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
$1
EOF
    # Debian's master.cf without chroot, with smtpd only on our loopback port.
    awk -v port="$PPORT" '
        /^#/ || /^[ \t]/ || NF == 0 { print; next }
        $1 == "smtp" && $2 == "inet" { print "127.0.0.1:" port " inet n - n - - smtpd"; next }
        $2 == "inet" { next }
        { if (NF >= 8) $5 = "n"; print }
    ' /etc/postfix/master.cf > "$P/master.cf"
    grep -q '^postlog' "$P/master.cf" || echo 'postlog unix-dgram n - n - 1 postlogd' >> "$P/master.cf"
    postfix -c "$P" check >/dev/null 2>&1 || true
    postfix -c "$P" start >/dev/null 2>&1 || die "postfix did not start: $(tail "$P/maillog" 2>/dev/null)"
    wait_port "$PPORT" || true
}
