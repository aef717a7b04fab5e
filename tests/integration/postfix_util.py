"""
postfix_util.py - a real Postfix (Debian's postfix package) in front of Tern for LMTP
tests: a non-system instance with its own config_directory, queue_directory and log file
in a temp folder, smtpd on one free loopback port (never port 25), no chroot. The system
instance is never started or touched; this one is stopped with `postfix -c <dir> stop`
(which signals the master whose PID is in our queue directory) and, failing that, by
that PID.

    pf = Postfix(transport="lmtp:unix:/path/to/tern/lmtp", domains="example.test")
    pf.start(); ...; pf.stop(); pf.cleanup()
    pf.port, pf.log_text()
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import free_ports

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
HAS_POSTFIX = os.path.exists(POSTFIX) and os.path.exists("/usr/lib/postfix/sbin/master") and \
    os.path.exists("/usr/share/postfix/master.cf.dist")

# services an instance that receives on SMTP and delivers over LMTP needs
_MASTER_CF = """\
{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    def __init__(self, transport, domains):
        self.root = Path(tempfile.mkdtemp(prefix="postfix-it-"))
        os.chmod(self.root, 0o755)
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir()
        shutil.chown(self.data_dir, "postfix")
        self.log = self.root / "maillog"
        self.port = free_ports(1)[0]
        (self.config_dir / "master.cf").write_text(_MASTER_CF.format(port=f"127.0.0.1:{self.port}"))
        (self.config_dir / "main.cf").write_text(f"""\
# written by tests/integration/postfix_util.py
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydomain = example.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtp_dns_support_level = disabled
disable_dns_lookups = yes
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
virtual_mailbox_domains = {domains}
virtual_mailbox_maps = static:ok
virtual_transport = {transport}
lmtp_connect_timeout = 10s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")

    def postfix(self, *args, check=True):
        r = subprocess.run([POSTFIX, "-c", str(self.config_dir), *args], capture_output=True,
                           text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)}: {r.stdout}{r.stderr}"
                                 f"{self.log_text()}")
        return r

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def master_pid(self):
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self):
        self.postfix("start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(100).startswith(b"220"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("postfix smtpd did not answer: " + self.log_text())

    def stop(self):
        pid = self.master_pid()
        if pid is None:
            return
        self.postfix("stop", check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def cleanup(self):
        self.stop()
        if not os.environ.get("TERN_KEEP_DATA"):
            shutil.rmtree(self.root, ignore_errors=True)
