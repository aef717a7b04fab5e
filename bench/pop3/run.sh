#!/bin/sh
# bench/pop3/run.sh - by hand: POP3 RETR throughput of Tern vs Dovecot (dovecot-pop3d) on
# copies of the same Maildir, in the same run; prints MB/s of each and the ratio.
#   sudo bench/pop3/run.sh [--messages 10000] [--size 10240] [--runs 3] [--window 16]
# Needs: a release build of tern ($TERN_BIN, else build/tern), root, python3 with pytest
# (the integration fixtures start tern). Installs dovecot-pop3d if it is missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x /usr/lib/dovecot/pop3 ]; then
    echo "installing dovecot-pop3d (Debian) ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-pop3d >/dev/null
fi
# The package may start a system dovecot on 110/995; we run our own instance on a free
# port with its own config, so the system one is left alone.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" "$here/pop3_bench.py" "$@"
