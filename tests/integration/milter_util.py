"""Real milters for the tests, started in the test's temporary folder on loopback (never the
system services): rspamd in milter-proxy mode (rspamd_proxy with milter = yes, scanning
itself) and OpenDKIM signing for example.test. Each is stopped by its own PID.

rspamd is pointed at a DNS server on a dead loopback port (it never asks the network) and
its fuzzy checks are off. Its public-suffix list is a handful of test TLDs: compiling the
full list (~9600 suffixes) took 18 of its 20 s start-up, for every test module that starts
one."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import free_ports

RSPAMD_CONF = """
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    # before options.inc: the first of UCL's duplicate keys is the one rspamd uses
    url_tld = "$DBDIR/tld.dat";
    .include "$CONFDIR/options.inc"
    dns { nameserver = ["127.0.0.1:1"]; timeout = 0.2s; retransmits = 1; }
    local_addrs = [];
    # YJS*... (the GTUBE variant for "add header") as well as the standard XJS*... reject
    enable_test_patterns = true;
}
logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "info"; }
worker "rspamd_proxy" {
    bind_socket = "127.0.0.1:%(port)d";
    milter = yes;
    timeout = 120s;
    upstream "local" { default = yes; self_scan = yes; }
    count = 1;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
    quarantine_on_reject = %(quarantine)s;
}
"""
MILTER_HEADERS = """use = ["x-spamd-result", "x-rspamd-queue-id", "x-spam-status"];
skip_local = false;
skip_authenticated = false;
"""


def wait_port(port, proc, timeout, what, log=None):
    """Bounded wait until 127.0.0.1:port accepts a connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log() if log else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not listening on {port} after {timeout}s: {log() if log else ''}")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Rspamd:
    def __init__(self, quarantine_on_reject=False):
        if not shutil.which("rspamd"):
            raise RuntimeError("rspamd is not installed (scripts/install-deps.sh)")
        self.dir = Path(tempfile.mkdtemp(prefix="rspamd-it-"))
        self.port = free_ports(1)[0]
        (self.dir / "local" / "local.d").mkdir(parents=True)
        (self.dir / "rspamd.conf").write_text(
            RSPAMD_CONF % {"port": self.port,
                           "quarantine": "true" if quarantine_on_reject else "false"})
        (self.dir / "local" / "local.d" / "milter_headers.conf").write_text(MILTER_HEADERS)
        (self.dir / "local" / "local.d" / "fuzzy_check.conf").write_text("enabled = false;\n")
        (self.dir / "tld.dat").write_text("com\nnet\norg\nexample\ntest\n")
        d = str(self.dir)
        self.proc = subprocess.Popen(
            ["rspamd", "-f", "-i", "-c", f"{d}/rspamd.conf", f"--var=DBDIR={d}",
             f"--var=RUNDIR={d}", f"--var=LOGDIR={d}", f"--var=LOCAL_CONFDIR={d}/local"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr.txt", "wb"))
        try:
            wait_port(self.port, self.proc, 240, "rspamd", self.log_tail)
        except Exception:
            self.close()
            raise
        self.address = f"inet:127.0.0.1:{self.port}"

    def log_tail(self):
        try:
            return (self.dir / "rspamd.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def close(self):
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class OpenDkim:
    """OpenDKIM signing mail from example.test with selector "test"."""

    def __init__(self):
        if not shutil.which("opendkim"):
            raise RuntimeError("opendkim is not installed (scripts/install-deps.sh)")
        self.dir = Path(tempfile.mkdtemp(prefix="opendkim-it-"))
        self.port = free_ports(1)[0]
        subprocess.run(["opendkim-genkey", "-D", str(self.dir), "-d", "example.test", "-s",
                        "test", "-b", "2048"], check=True, capture_output=True)
        txt = (self.dir / "test.txt").read_text()
        # test._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; " "p=..." ) -> one string
        self.public_txt = "".join(part for part in txt.split('"')[1::2])
        conf = self.dir / "opendkim.conf"
        conf.write_text(
            "Mode s\nDomain example.test\nSelector test\n"
            f"KeyFile {self.dir}/test.private\nSocket inet:{self.port}@127.0.0.1\n"
            f"PidFile {self.dir}/opendkim.pid\nBackground no\nSyslog no\n"
            "RequireSafeKeys false\nCanonicalization relaxed/simple\n"
            "InternalHosts 127.0.0.0/8\nLogWhy yes\n")
        self.proc = subprocess.Popen(["opendkim", "-f", "-x", str(conf)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.txt", "wb"))
        try:
            wait_port(self.port, self.proc, 30, "opendkim",
                      lambda: (self.dir / "stderr.txt").read_text(errors="replace"))
        except Exception:
            self.close()
            raise
        self.address = f"inet:127.0.0.1:{self.port}"

    def close(self):
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


DKIM_VERIFY = r'''
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from outbound_util import DnsServer
dns = DnsServer({("test._domainkey.example.test", "TXT"): [sys.argv[2]]}, port=53)
with open(sys.argv[3], "rb") as f:
    r = subprocess.run(["opendkim-testmsg"], stdin=f, capture_output=True)
sys.stdout.write(r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace"))
dns.close()
sys.exit(r.returncode)
'''


def opendkim_testmsg_verify(message_path, public_txt):
    """Verify a message's DKIM signature with opendkim-testmsg. Its DNS lookup of
    test._domainkey.example.test is answered inside a private network namespace (only
    loopback; /etc/resolv.conf bind-mounted to 127.0.0.1 there) by a test DNS server on
    port 53, so nothing leaves the machine. Returns (exit code, output)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory(prefix="dkimv-") as tmp:
        resolv = Path(tmp) / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")
        script = Path(tmp) / "verify.py"
        script.write_text(DKIM_VERIFY)
        cmd = (f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
               f"exec /usr/bin/python3 {script} {here} '{public_txt}' {message_path}")
        r = subprocess.run(["unshare", "-n", "-m", "sh", "-c", cmd], capture_output=True,
                           timeout=60)
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


class ScriptedMilter:
    """A milter written for the tests, speaking the MTA-facing side of the Sendmail milter
    protocol (version 6) on a loopback port: it records every command it receives, in
    order, with the macros sent before it, and answers each stage as told.

    actions maps a stage to an answer: keys "connect", "helo", "mail", "rcpt", "data",
    "eom", or "mail:<address>" / "rcpt:<address>" for one address; answers "continue",
    "accept", "reject", "tempfail", "discard", "hang" (say nothing: the MTA's timeout
    decides), or a reply such as "550 5.7.1 no thanks" (SMFIR_REPLYCODE). Anything not
    listed continues. Each connection is served by its own thread; close() ends them."""

    NAMES = {b"C": "connect", b"H": "helo", b"M": "mail", b"R": "rcpt", b"T": "data",
             b"L": "header", b"N": "eoh", b"B": "body", b"E": "eom", b"A": "abort",
             b"Q": "quit", b"D": "macro", b"O": "optneg"}

    def __init__(self, actions=None):
        import threading
        self.actions = dict(actions or {})
        self.events = []  # (connection number, stage name, argument text, macros dict)
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.address = f"inet:127.0.0.1:{self.port}"
        self.closed = threading.Event()
        self.conns = []
        self.n = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        import threading
        while not self.closed.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.n += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, self.n), daemon=True).start()

    @staticmethod
    def _recv_exact(c, n):
        data = b""
        while len(data) < n:
            chunk = c.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    @staticmethod
    def _send(c, cmd, data=b""):
        import struct
        c.sendall(struct.pack("!I", len(data) + 1) + cmd + data)

    def _answer(self, c, stage, arg):
        action = self.actions.get(f"{stage}:{arg}", self.actions.get(stage, "continue"))
        if action == "hang":
            self.closed.wait(120)
            return
        codes = {"continue": b"c", "accept": b"a", "reject": b"r", "tempfail": b"t",
                 "discard": b"d"}
        if action in codes:
            self._send(c, codes[action])
        else:
            self._send(c, b"y", action.encode() + b"\0")

    def _serve(self, c, no):
        import struct
        macros = {}
        try:
            while True:
                (length,) = struct.unpack("!I", self._recv_exact(c, 4))
                pkt = self._recv_exact(c, length)
                cmd, data = pkt[:1], pkt[1:]
                name = self.NAMES.get(cmd, cmd.decode(errors="replace"))
                if cmd == b"O":
                    # every action, every stage, replies to each
                    self._send(c, b"O", struct.pack("!III", 6, 0x1FF, 0))
                    continue
                if cmd == b"D":
                    parts = data[1:].split(b"\0")
                    macros = {parts[i].decode(): parts[i + 1].decode()
                              for i in range(0, len(parts) - 1, 2)}
                    continue
                if cmd == b"C":
                    arg = data.split(b"\0", 1)[0].decode()
                elif cmd in (b"H", b"M", b"R"):
                    arg = data.split(b"\0", 1)[0].decode()
                elif cmd == b"L":
                    arg = data.split(b"\0", 1)[0].decode()
                else:
                    arg = ""
                with self.lock:
                    self.events.append((no, name, arg, macros))
                macros = {}
                if cmd == b"Q":
                    return
                if cmd == b"A":
                    continue
                if cmd in (b"L", b"N", b"B"):
                    self._send(c, b"c")
                    continue
                self._answer(c, name, arg)
        except (EOFError, OSError):
            return
        finally:
            c.close()

    def stages(self, conn=None):
        """The stage names received so far (of one connection, or all)."""
        with self.lock:
            return [e[1] for e in self.events if conn is None or e[0] == conn]

    def find(self, stage, arg=None):
        with self.lock:
            return [e for e in self.events if e[1] == stage and (arg is None or e[2] == arg)]

    def close(self):
        self.closed.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
