"""
dovecot_util.py - a real Dovecot (Debian's dovecot-imapd + dovecot-pop3d) for migration
tests: its own config, base_dir, log and mail location in a temp folder, IMAP and POP3 on
free loopback ports, plaintext logins from a passwd-file. Never the system instance: it
runs as `dovecot -F -c <our config>` and is stopped by its PID.

    dc = Dovecot(mail_user="tern")             # mail files owned by that system user
    dc.add_user("mig1@example.test", "pw")      # home: <root>/home/mig1
    dc.start(); ... dc.stop(); dc.cleanup()
    dc.maildir("mig1@example.test")             # -> Path of its Maildir
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
    def __init__(self, mail_user):
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
mail_location = maildir:~/Maildir
first_valid_uid = {min(uid, 500)}
default_login_user = dovenull
default_internal_user = dovecot
mail_uid = {uid}
mail_gid = {gid}
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.home_root}/%n
}}
service imap-login {{
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
        with open(self.passwd, "a") as f:
            f.write(f"{address}:{{PLAIN}}{password}\n")
        self.users[address] = password

    def maildir(self, address):
        return self.home_root / address.partition("@")[0] / "Maildir"

    def start(self):
        conf = self.root / "dovecot.conf"
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
