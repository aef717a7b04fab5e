#!/usr/bin/env python3
"""
pop3_bench.py - RETR throughput, Tern vs Dovecot (dovecot-pop3d), same machine, same run,
same client, on copies of the same Maildir (bench/README.md rules). Run by hand through
bench/pop3/run.sh (which installs dovecot-pop3d if needed); needs root (Dovecot setuid).

What is measured: one POP3 session per server logs in with USER/PASS over loopback (plain
TCP on both), then RETRs every message (pipelined, WINDOW commands in flight, which both
servers support), then QUITs without deleting. MB/s = octets of message data received
between the "+OK" lines and the terminating ".", over the RETR phase only; login (with
the first-login index build) and QUIT are reported separately. One warm-up session per
server, then RUNS alternating sessions; the median is reported, and the ratio Tern/Dovecot.

Usage: pop3_bench.py [--messages 10000] [--size 10240] [--runs 3] [--window 16]
"""

import argparse
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import benchlib  # noqa: E402

USER = "bench@example.test"
PASSWORD = "benchpw"
DOVECOT = "/usr/sbin/dovecot"


def make_maildir(root, n, size):
    """A Maildir with n messages of about size bytes (LF line ends, some dot-lines)."""
    md = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    line = "x" * 74 + "\n"
    now = int(time.time())
    for i in range(n):
        head = (f"Return-Path: <bench@example.org>\nFrom: <bench@example.org>\n"
                f"To: <{USER}>\nSubject: bench {i}\nMessage-ID: <bench-{i}@example.org>\n\n")
        body_lines = max(1, (size - len(head)) // len(line))
        body = "".join((". dot-line\n" if k % 50 == 49 else line) for k in range(body_lines))
        (md / "cur" / f"{now}.M{i:08d}P{os.getpid()}.bench:2,").write_text(head + body)
    return md


def chown_tree(path, uid, gid):
    for r, dirs, files in os.walk(path):
        os.chown(r, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(r, name), uid, gid)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"+OK"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answering +OK on port {port}")


class Pop3Reader:
    """Minimal fast POP3 client side: buffered socket, replies parsed with bytes.find."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = bytearray()
        self.pos = 0

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed")
        self.buf += chunk

    def line(self):
        if self.pos > (4 << 20):  # compact between replies only (offsets stay valid)
            del self.buf[:self.pos]
            self.pos = 0
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                ln = bytes(self.buf[self.pos:i])
                self.pos = i + 2
                return ln
            self._fill()

    def multiline_octets(self):
        """Skip a multi-line body; return its octets (before the final '.')."""
        start = self.pos
        if self.buf[start:start + 3] == b".\r\n":
            self.pos = start + 3
            return 0
        search = max(start - 2, 0)
        while True:
            i = self.buf.find(b"\r\n.\r\n", search)
            if i >= 0:
                self.pos = i + 5
                return i + 2 - start
            search = max(len(self.buf) - 4, start)
            self._fill()

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")


def session(port, n, window):
    """Login, RETR 1..n pipelined, QUIT. Returns dict of timings and octets."""
    t0 = time.monotonic()
    c = Pop3Reader(port)
    assert c.line().startswith(b"+OK")
    c.cmd(f"USER {USER}")
    assert c.line().startswith(b"+OK")
    c.cmd(f"PASS {PASSWORD}")
    r = c.line()
    assert r.startswith(b"+OK"), r
    c.cmd("STAT")
    stat = c.line().split()
    assert int(stat[1]) == n, stat
    t1 = time.monotonic()
    octets = 0
    sent = 0
    for k in range(1, n + 1):
        while sent < n and sent < k - 1 + window:
            sent += 1
            c.cmd(f"RETR {sent}")
        r = c.line()
        assert r.startswith(b"+OK"), r
        octets += c.multiline_octets()
    t2 = time.monotonic()
    c.cmd("QUIT")
    c.line()
    t3 = time.monotonic()
    c.sock.close()
    return {"login_s": t1 - t0, "retr_s": t2 - t1, "quit_s": t3 - t2, "octets": octets,
            "mb_s": octets / (t2 - t1) / 1e6}


def dovecot_start(root, port, uid, gid):
    (root / "run").mkdir()
    (root / "state").mkdir()
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    conf = root / "dovecot.conf"
    conf.write_text(f"""
protocols = pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
{benchlib.dovecot_login_service("pop3", port)}""")
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port)
    except RuntimeError:
        proc.kill()
        proc.wait()
        log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
        raise RuntimeError(f"dovecot did not start:\n{log[-3000:]}") from None
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=16)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("pop3_bench: run as root (Dovecot switches to the mail user)")
    if not Path("/usr/lib/dovecot/pop3").exists():
        sys.exit("pop3_bench: dovecot-pop3d is missing (bench/pop3/run.sh installs it)")

    work = Path(tempfile.mkdtemp(prefix="pop3-bench-"))
    os.chmod(work, 0o755)
    srv = dv = None
    try:
        print(f"building a Maildir of {a.messages} messages of ~{a.size} bytes ...", flush=True)
        template = make_maildir(work / "template", a.messages, a.size)

        srv = benchlib.start_tern()
        srv.cli("user", "add", USER, "--password-stdin", input=PASSWORD + "\n")
        run_user = srv.run_user or "root"
        uid, gid = pwd.getpwnam(run_user).pw_uid, pwd.getpwnam(run_user).pw_gid
        tern_md = srv.maildir(USER)
        tern_md.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template, tern_md)
        chown_tree(srv.data_dir / "mail", uid, gid)

        dv_root = work / "dovecot"
        (dv_root / "home" / USER).mkdir(parents=True)
        shutil.copytree(template, dv_root / "home" / USER / "Maildir")
        chown_tree(dv_root / "home", uid, gid)
        dv_port = free_port()
        dv = dovecot_start(dv_root, dv_port, uid, gid)

        servers = {"tern": srv.ports["pop3"], "dovecot": dv_port}
        for name, port in servers.items():
            w = session(port, a.messages, a.window)
            print(f"warm-up {name:8s} login {w['login_s']:.2f}s (first login: index build) "
                  f"retr {w['mb_s']:.1f} MB/s quit {w['quit_s']:.2f}s", flush=True)
        results = {name: [] for name in servers}
        for run in range(a.runs):
            for name, port in servers.items():
                # the box may be shared: keep the load next to each number
                loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                r = session(port, a.messages, a.window)
                results[name].append(r)
                print(f"run {run + 1} {name:8s} retr {r['octets'] / 1e6:.1f} MB in "
                      f"{r['retr_s']:.2f}s = {r['mb_s']:.1f} MB/s (login {r['login_s']:.3f}s, "
                      f"quit {r['quit_s']:.3f}s; load average before: {loadavg})", flush=True)
        med = {n: statistics.median(x["mb_s"] for x in rs) for n, rs in results.items()}
        for n, rs in results.items():
            v = [x["mb_s"] for x in rs]
            print(f"{n}: runs {' '.join(f'{x:.1f}' for x in v)} MB/s, spread (max-min)/median "
                  f"{(max(v) - min(v)) / med[n] * 100:.0f} %")
        ratio = med["tern"] / med["dovecot"] if med["dovecot"] else float("nan")
        print(f"\nPOP3 RETR of {a.messages} messages (~{a.size} B), median of {a.runs}: "
              f"tern {med['tern']:.1f} MB/s, dovecot {med['dovecot']:.1f} MB/s, "
              f"ratio tern/dovecot = {ratio:.2f}")
        benchlib.report("pop3-retr", {
            "messages": a.messages, "size": a.size, "runs": a.runs, "window": a.window,
            "tern_mb_s": round(med["tern"], 2), "dovecot_mb_s": round(med["dovecot"], 2),
            "ratio": round(ratio, 3),
            "tern_quit_s": [round(r["quit_s"], 3) for r in results["tern"]],
            "dovecot_quit_s": [round(r["quit_s"], 3) for r in results["dovecot"]],
        })
    finally:
        if dv is not None:
            dv.terminate()
            try:
                dv.wait(timeout=20)
            except subprocess.TimeoutExpired:
                dv.kill()
                dv.wait()
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
