#!/bin/sh
# run-demo.sh - install what is needed, build, and run Tern in the foreground on its
# embedded defaults with a demo domain and user. One command on a fresh Debian 12:
#
#   ./scripts/run-demo.sh   (as root)
#
# What it does:
#   1. scripts/install-deps.sh (apt-get; skipped with TERN_SKIP_DEPS=1)
#   2. meson setup build && ninja -C build
#   3. writes var/tern.conf if absent (only data_dir and log settings; every other key is
#      the embedded default: standard ports 25/587/465/110/995/143/993 as root, 2525/2587/
#      2465/2110/2995/2143/2993 otherwise; self-signed certificate generated on first start)
#   4. creates domain example.test and user demo@example.test with a random password
#      (kept in var/demo-password so re-runs print the same one)
#   5. exec tern serve -f (Ctrl-C or SIGTERM stops it)
# Arguments are passed to tern as global options, e.g. to stay on loopback high ports:
#   ./scripts/run-demo.sh -o smtp.listen=127.0.0.1:2525 -o imap.listen=127.0.0.1:2143
# Environment: TERN_DEMO_DIR (default ./var), TERN_DEMO_USER (default demo@example.test).
set -eu

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/install-deps.sh"

if [ ! -f build/build.ninja ]; then
    meson setup build
fi
ninja -C build

DATA="${TERN_DEMO_DIR:-$ROOT/var}"
USER_ADDR="${TERN_DEMO_USER:-demo@example.test}"
DOMAIN="${USER_ADDR#*@}"
RUN_USER=""
if [ "$(id -u)" = 0 ]; then
    RUN_USER=tern
    # The server drops privileges to $RUN_USER, which must reach the data folder. A
    # checkout under /root (mode 0700) is not reachable: use the root default instead.
    mkdir -p "$DATA"
    if ! runuser -u "$RUN_USER" -- test -x "$DATA" 2>/dev/null; then
        echo "run-demo: user $RUN_USER cannot reach $DATA; using /var/lib/tern for data"
        DATA=/var/lib/tern
    fi
fi
mkdir -p "$DATA"
CONF="$DATA/tern.conf"

if [ ! -f "$CONF" ]; then
    cat >"$CONF" <<CONF_EOF
# Tern demo configuration, written by scripts/run-demo.sh. Every key not set here has its
# embedded default; see docs/CONFIG.md, and \`tern -c $CONF config show\` for all values.
data_dir = $DATA
log.target = stderr
# hostname = mail.example.test
# smtp.listen = *:25
# imap.listen = *:143
CONF_EOF
    echo "run-demo: wrote $CONF"
fi

TERN="$ROOT/build/tern"
tern() { "$TERN" -c "$CONF" "$@"; }
# The script's arguments (-o key=value ...) go to `config check` and `serve` as well.

tern "$@" config check

if ! tern domain list 2>/dev/null | grep -qx "$DOMAIN"; then
    tern domain add "$DOMAIN"
fi
PWFILE="$DATA/demo-password"
if [ ! -s "$PWFILE" ]; then
    (umask 077 && openssl rand -base64 12 | tr -d '/+=\n' >"$PWFILE")
fi
PASSWORD="$(cat "$PWFILE")"
if ! tern user show "$USER_ADDR" >/dev/null 2>&1; then
    printf '%s\n' "$PASSWORD" | tern user add "$USER_ADDR" --password-stdin
fi

# Files the CLI created as root must belong to the user the server runs as.
if [ -n "$RUN_USER" ]; then
    chown -R "$RUN_USER:" "$DATA"
    chown root: "$CONF" "$PWFILE"
    # run/ (the master's socket, the login processes' empty root) stays root's; the
    # server gives tern.db to auth_user itself
    if [ -d "$DATA/run" ]; then chown -R root: "$DATA/run"; fi
fi

echo
echo "run-demo: demo account $USER_ADDR, password: $PASSWORD"
echo "run-demo: data in $DATA; effective settings: $TERN -c $CONF config show"
tern "$@" config show | grep -E '^(hostname|[a-z0-9]+\.listen) ' | sed 's/^/run-demo:   /'
echo "run-demo: starting tern serve -f (Ctrl-C stops)"
echo
exec "$TERN" -c "$CONF" "$@" serve -f
