#!/bin/sh
# install-deps.sh - install every Debian 12 package Tern needs to build, run and test.
#
# Usage (as root): ./scripts/install-deps.sh
# Idempotent and fast when everything is present: packages are checked with dpkg-query
# first and apt-get runs only for the missing ones. Also creates the unprivileged system
# user `tern` the server drops to when started as root (DESIGN §2 "Privileges").
# Set TERN_SKIP_DEPS=1 to skip entirely (e.g. a developer machine without root).
set -eu

if [ "${TERN_SKIP_DEPS:-0}" = 1 ]; then
    echo "install-deps: skipped (TERN_SKIP_DEPS=1)"
    exit 0
fi

# Why each is needed: DESIGN §3. nettle-dev: Debian 12's libunbound.pc requires nettle and
# hogweed but libunbound-dev does not depend on nettle-dev (pkg-config fails without it).
PACKAGES="
meson ninja-build pkg-config gcc libc6-dev clang libclang-rt-14-dev
libevent-dev libssl-dev libgsasl-dev libcrypt-dev libargon2-dev libsqlite3-dev
libunbound-dev nettle-dev libcmocka-dev
python3 python3-pytest python3-pytest-timeout
openssl gnutls-bin ca-certificates curl swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
isync fetchmail dovecot-core sqlite3 passwd procps
rspamd opendkim opendkim-tools iproute2 util-linux
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing packages:$missing" >&2
        echo "install-deps: run as root (or install them yourself and set TERN_SKIP_DEPS=1)" >&2
        exit 1
    fi
    echo "install-deps: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # No recommends: keeps the install small and never pulls in an MTA that would take
    # port 25; the recommends we need (perl TLS/SASL modules for swaks) are listed above.
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
else
    echo "install-deps: all packages present"
fi

# The server drops privileges to this user when started as root (config: run_user).
if [ "$(id -u)" = 0 ] && ! getent passwd tern >/dev/null; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tern
    echo "install-deps: created system user tern"
fi
