#!/usr/bin/env bash
# bench/relay/run.sh - outbound relaying, side by side: smtp-source -> MTA -> smtp-sink,
# Tern's queue runner versus Postfix, 10 KB messages over 20 concurrent sessions, all on
# loopback. Run by hand (not in CI), as root, on an idle box:
#
#     bench/relay/run.sh                # MESSAGES=2000 SESSIONS=20 SIZE=10240 RUNS=3
#     MESSAGES=10000 RUNS=1 bench/relay/run.sh
#
# What it does:
#   - a Postfix smtp-sink on a free loopback port dumps every message it accepts into a
#     file (-d), so "delivered" = a file exists;
#   - Tern: relay_networks = 127.0.0.0/8, transport.sink.example = [127.0.0.1]:<sink>,
#     queue.max_deliveries = queue.destination_concurrency = 20; Tern acknowledges after the
#     queue file is fsync'd, the queue runner then relays;
#   - reference: a private Postfix instance (own config, queue and data directories under
#     the temp dir, smtpd on a free loopback port, chroot off), relayhost = the sink,
#     default_destination_concurrency_limit = 20;
#   - time = from the start of smtp-source until the sink holds every message;
#   - both MTAs are up at once and the runs alternate (tern, reference, tern, ...), so a
#     busy minute on a shared machine hits both alike;
#   - prints messages/s for each (median of RUNS) and the ratio Tern / reference.
# The system's own Postfix (if any) is never touched.
#
# Status: both halves work; numbers in bench/relay/README.md. Both MTAs reuse their
# connections to the sink (Tern parks a session up to 5 s after a transaction). Run the
# script on its own: it needs the box quiet-ish and is not part of CI.
set -euo pipefail

MESSAGES=${MESSAGES:-2000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-10240}
RUNS=${RUNS:-3}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TERN_BIN=${TERN_BIN:-$REPO/build/tern}
WORK=$(mktemp -d /var/tmp/tern-bench-relay.XXXXXX)   # a real disk, not tmpfs
chmod 755 "$WORK"
PIDS=()

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the private Postfix instance needs it)"
[ -x "$TERN_BIN" ] || die "no tern binary at $TERN_BIN (meson setup build && ninja -C build)"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cleanup() {
    set +e
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    [ -f "$WORK/postfix/main.cf" ] && postfix -c "$WORK/postfix" stop >/dev/null 2>&1
    sleep 1
    [ -z "${KEEP:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v smtp-source >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-source ]; then
    log "installing postfix (not configured, not started)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)

count_files() { find "$1" -type f 2>/dev/null | wc -l; }

wait_count() { # dir expected timeout_s
    local end=$((SECONDS + $3))
    while [ "$(count_files "$1")" -lt "$2" ]; do
        [ $SECONDS -ge $end ] && { log "timeout: $(count_files "$1")/$2 in $1"; return 1; }
        sleep 0.05
    done
}

now() { date +%s.%N; }

load() { # port recipient
    "$SMTP_SOURCE" -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@load.example \
        -t "$2" -M load.example "127.0.0.1:$1"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ---- the sink ----------------------------------------------------------------------------
SPORT=$(free_port)
mkdir -p "$WORK/sink"
chown nobody "$WORK/sink"
# -u: run as nobody; -d: one file per message under the dir; 256: listen backlog
"$SMTP_SINK" -u nobody -d "$WORK/sink/m." "127.0.0.1:$SPORT" 256 &
PIDS+=($!)
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$SPORT),1)" 2>/dev/null && break
    sleep 0.05
done
# the dump template holds no "/" after the dir: files land directly in $WORK/sink
SINK="$WORK/sink"

# ---- Tern ----------------------------------------------------------------------------------
TPORT=$(free_port)
mkdir -p "$WORK/tern"
cat > "$WORK/tern/tern.conf" <<EOF2
hostname = bench.example.test
data_dir = $WORK/tern/data
smtp.listen = 127.0.0.1:$TPORT
submission.listen =
submissions.listen =
pop3.listen =
pop3s.listen =
imap.listen =
imaps.listen =
run_user = ${TERN_RUN_USER:-tern}
relay_networks = 127.0.0.0/8
transport.sink.example = [127.0.0.1]:$SPORT
queue.max_deliveries = 20
queue.destination_concurrency = 20
outbound.tls = none
EOF2
id "${TERN_RUN_USER:-tern}" >/dev/null 2>&1 || useradd --system --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin "${TERN_RUN_USER:-tern}"
"$TERN_BIN" -c "$WORK/tern/tern.conf" domain add example.test >/dev/null
chown -R "${TERN_RUN_USER:-tern}" "$WORK/tern"
"$TERN_BIN" -c "$WORK/tern/tern.conf" serve -f > "$WORK/tern/server.log" 2>&1 &
PIDS+=($!)
TERN_PID=$!
for _ in $(seq 200); do grep -q "daemon started" "$WORK/tern/server.log" && break; sleep 0.05; done
grep -q "daemon started" "$WORK/tern/server.log" || die "tern did not start: $(tail "$WORK/tern/server.log")"

# ---- reference: Postfix --------------------------------------------------------------------
PPORT=$(free_port)
P="$WORK/postfix"
mkdir -p "$P/spool" "$P/data"
chown postfix:postfix "$P/data"
cat > "$P/main.cf" <<EOF2
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
relayhost = [127.0.0.1]:$SPORT
default_destination_concurrency_limit = 20
smtp_tls_security_level = none
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = $P/maillog
biff = no
alias_maps =
alias_database =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
EOF2
awk -v port="$PPORT" '
    /^#/ || /^[ \t]/ || NF == 0 { print; next }
    $1 == "smtp" && $2 == "inet" { print "127.0.0.1:" port " inet n - n - - smtpd"; next }
    $2 == "inet" { next }
    { if (NF >= 8) $5 = "n"; print }
' /etc/postfix/master.cf > "$P/master.cf"
grep -q '^postlog' "$P/master.cf" || echo 'postlog unix-dgram n - n - 1 postlogd' >> "$P/master.cf"
postfix -c "$P" check >/dev/null 2>&1 || true
postfix -c "$P" start >/dev/null 2>&1 || die "postfix did not start: $(tail "$P/maillog" 2>/dev/null)"
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$PPORT),1)" 2>/dev/null && break
    sleep 0.1
done

measure() { # label port -> one rate on stdout
    local before t0 t1
    before=$(count_files "$SINK")
    t0=$(now)
    load "$2" bench@sink.example >/dev/null
    wait_count "$SINK" $((before + MESSAGES)) 1200 || die "$1 lost messages (KEEP=1 keeps $WORK)"
    t1=$(now)
    echo "$MESSAGES / ($t1 - $t0)" | bc -l
}

warm_up() { # label port
    local before
    before=$(count_files "$SINK")
    log "$1: warm-up"
    MESSAGES=100 load "$2" bench@sink.example >/dev/null
    wait_count "$SINK" $((before + 100)) 120 || die "$1 did not relay the warm-up (KEEP=1 keeps $WORK)"
}

# Both MTAs run side by side (the idle one costs nothing) and the runs alternate
# tern, postfix, tern, ... so that load from other jobs on a shared machine hits both
# alike instead of whichever happened to run during a busy minute.
warm_up tern "$TPORT"
warm_up reference "$PPORT"
tern_rates=()
ref_rates=()
for run in $(seq "$RUNS"); do
    rate=$(measure tern "$TPORT")
    log "tern run $run: $(printf %.1f "$rate") msg/s (load $(cut -d' ' -f1 /proc/loadavg))"
    tern_rates+=("$rate")
    rate=$(measure reference "$PPORT")
    log "reference run $run: $(printf %.1f "$rate") msg/s (load $(cut -d' ' -f1 /proc/loadavg))"
    ref_rates+=("$rate")
done
TERN_RATE=$(printf '%s\n' "${tern_rates[@]}" | median)
REF_RATE=$(printf '%s\n' "${ref_rates[@]}" | median)
kill "$TERN_PID"; wait "$TERN_PID" 2>/dev/null || true

printf '\nRelay (receive, queue, deliver to smtp-sink), %d x %d-byte messages, %d sessions (median of %d)\n' \
    "$MESSAGES" "$SIZE" "$SESSIONS" "$RUNS"
printf '  tern:                   %10.1f msg/s\n' "$TERN_RATE"
printf '  postfix:                %10.1f msg/s\n' "$REF_RATE"
printf '  ratio tern / reference: %10.2f x\n' "$(echo "$TERN_RATE / $REF_RATE" | bc -l)"
