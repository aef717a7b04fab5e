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

# Why each is needed: DESIGN §3. Mail authentication (issue 12): libpsl-dev + publicsuffix
# for DMARC's organizational domain; python3-dkim (dkimpy), opendkim-tools and python3-spf
# (pyspf, with the RFC 7208 test suite) as independent implementations the tests compare
# with; iproute2/util-linux for the private network namespace OpenDKIM's test tool gets.
# nettle-dev: Debian 12's libunbound.pc requires nettle and
# hogweed but libunbound-dev does not depend on nettle-dev (pkg-config fails without it).
# libmariadb-dev, libpq-dev: the SQL directory drivers (directory.driver = mysql /
# postgresql); mariadb-server, mariadb-client, postgresql: the real servers
# tests/integration/test_directory_sql.py starts as private instances (never the system
# services: see below); dovecot-core's doveadm makes the password hashes postfixadmin's
# "dovecot:" settings store. rspamd and opendkim: the milter tests run private instances
# of both on loopback (never the system services: see below).
PACKAGES="
meson ninja-build pkg-config gcc libc6-dev clang libclang-rt-14-dev
libevent-dev libssl-dev libgsasl-dev libcrypt-dev libargon2-dev libsqlite3-dev
libunbound-dev nettle-dev libcmocka-dev libunistring-dev zlib1g-dev libmariadb-dev libpq-dev
python3 python3-pytest python3-pytest-timeout python3-pytest-xdist
openssl gnutls-bin ca-certificates curl swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
isync fetchmail dovecot-core sqlite3 passwd procps
dovecot-imapd dovecot-pop3d postfix
libpsl-dev publicsuffix libcurl4-openssl-dev
python3-dkim python3-nacl opendkim-tools python3-spf python3-yaml iproute2 util-linux
nsd ldnsutils
mariadb-server mariadb-client postgresql
rspamd opendkim
"
# dovecot-imapd/-pop3d and postfix: the migration and LMTP tests run their own instances
# (tests/integration/dovecot_util.py, postfix_util.py) on loopback ports; the system
# services must never start (they would take ports 25, 110, 143...): see below.

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
    # Postfix: "No configuration" (no main.cf, nothing started); and while installing,
    # a policy-rc.d that refuses every service start (unless the machine has its own),
    # so neither the system Postfix, Dovecot, NSD, MariaDB, PostgreSQL, rspamd nor OpenDKIM
    # ever runs.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing || { [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; exit 1; }
    if [ $made_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
else
    echo "install-deps: all packages present"
fi

# The users the server's processes run as when started as root (docs/SECURITY.md):
# tern (run_user: mail workers, queue), tern-login (login_user: the login processes,
# chrooted) and tern-auth (auth_user: the auth process, owner of tern.db).
for u in tern tern-login tern-auth; do
    if [ "$(id -u)" = 0 ] && ! getent passwd "$u" >/dev/null; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
        echo "install-deps: created system user $u"
    fi
done
