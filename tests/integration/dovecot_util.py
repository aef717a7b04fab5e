"""
dovecot_util.py - a real Dovecot (Debian's dovecot-imapd + dovecot-pop3d) for migration
tests: its own config, base_dir, log and mail location in a temp folder, IMAP and POP3 on
free loopback ports, plaintext logins from a passwd-file (SHA512-CRYPT hashes). Never the system instance: it
runs as `dovecot -F -c <our config>` and is stopped by its PID.

    dc = Dovecot(mail_user="tern")             # mail files owned by that system user
    dc.add_user("mig1@example.test", "pw")      # home: <root>/home/mig1
    dc.start(); ... dc.stop(); dc.cleanup()
    dc.maildir("mig1@example.test")             # -> Path of its Maildir

An SQL setup instead of the passwd-file (test_migration_sql.py): Dovecot(mail_user,
auth=<passdb/userdb blocks>, mail_location="maildir:/srv/vmail/%d/%n", conf_dir=<folder
where dovecot.conf is written, beside its dovecot-sql.conf.ext>).
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import free_ports

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
HAS_DOVECOT = os.path.exists(DOVECOT) and os.path.exists("/usr/lib/dovecot/imap") and \
    os.path.exists("/usr/lib/dovecot/pop3")


class Dovecot:
    def __init__(self, mail_user, auth=None, mail_location="maildir:~/Maildir", conf_dir=None):
        # its own folder, reachable by Dovecot's unprivileged processes (pytest's tmp_path
        # is under a 0700 folder)
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-it-"))
        os.chmod(self.root, 0o755)
        self.home_root = self.root / "home"
        self.home_root.mkdir()
        self.pw = pwd.getpwnam(mail_user)
        os.chown(self.home_root, self.pw.pw_uid, self.pw.pw_gid)
        self.ports = dict(zip(("imap", "pop3"), free_ports(2)))
        self.passwd = self.root / "passwd"
        self.passwd.write_text("")
        self.log = self.root / "dovecot.log"
        self.proc = None
        self.users = {}
        self.auth = auth
        self.mail_location = mail_location
        self.conf_dir = Path(conf_dir) if conf_dir else self.root

    def auth_blocks(self):
        """passdb/userdb: the given ones, else the passwd-file with static homes."""
        if self.auth is not None:
            return self.auth
        uid, gid = self.pw.pw_uid, self.pw.pw_gid
        return f"""passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.home_root}/%n
}}
"""

    def config(self):
        uid, gid = self.pw.pw_uid, self.pw.pw_gid
        return f"""# written by tests/integration/dovecot_util.py
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log}
info_log_path = {self.log}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = {self.mail_location}
first_valid_uid = {min(uid, 500)}
default_login_user = dovenull
default_internal_user = dovecot
mail_uid = {uid}
mail_gid = {gid}
namespace inbox {{
  inbox = yes
  separator = /
}}
{self.auth_blocks()}service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.ports['imap']}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.ports['pop3']}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""

    def add_user(self, address, password):
        """A passwd-file user whose password is stored as `doveadm pw` makes it
        (SHA512-CRYPT, Dovecot's usual choice): a move carries this hash, not the password."""
        cp = subprocess.run(["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password],
                            text=True, capture_output=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        with open(self.passwd, "a") as f:
            f.write(f"{address}:{cp.stdout.strip()}\n")
        self.users[address] = password

    def stored_hash(self, address):
        """The passwd-file's "{SCHEME}hash" of address."""
        for line in self.passwd.read_text().splitlines():
            user, _, rest = line.partition(":")
            if user == address:
                return rest.partition(":")[0]
        raise KeyError(address)

    def maildir(self, address):
        return self.home_root / address.partition("@")[0] / "Maildir"

    def start(self):
        conf = self.conf_dir / "dovecot.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("dovecot exited: " + self.proc.stdout.read().decode() +
                                     (self.log.read_text() if self.log.exists() else ""))
            try:
                with socket.create_connection(("127.0.0.1", self.ports["imap"]), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("dovecot did not start: " +
                             (self.log.read_text() if self.log.exists() else ""))

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc = None

    def cleanup(self):
        self.stop()
        if not os.environ.get("TERN_KEEP_DATA"):
            shutil.rmtree(self.root, ignore_errors=True)
