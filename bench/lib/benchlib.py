"""
benchlib.py - shared helpers for Tern's side-by-side benchmarks (bench/README.md).

Import from a benchmark script:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "lib")); import benchlib

  start_tern(overrides=None) -> server    a provisioned tern (same fixture code as the
                                          integration tests; .stop()/.cleanup() when done)
  make_message(size, i) -> bytes          a CRLF message of about size bytes
  smtp_load(host, port, rcpt, sessions, messages, size) -> Result
                                          N concurrent SMTP sessions, each sending its share
                                          of messages over one connection (RSET between)
  fsync_probe(dir, files, size, threads) -> files/s of write+fsync(file)+fsync(dir)
                                          (serial with threads=1, shared commits with more)
  rss_kb(pid) -> int                      resident memory of a process, from /proc
  report(name, dict)                      print one JSON line and append it to
                                          bench/results/<name>.jsonl
  dovecot_login_service(proto, port, tls_port=0)
                                          config text of a private Dovecot's listeners
  tls_client_context() -> SSLContext      a client context that accepts the benches'
                                          self-signed certificates (loopback only)
  load_average() -> str                   "1.23 2.34 3.45" from /proc/loadavg

Everything here is stdlib only. Numbers are measurements, never test assertions.
"""

import json
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))


def start_tern(overrides=None):
    """A provisioned, running tern on free loopback ports (see tests/integration/conftest.py)."""
    import conftest  # the integration fixtures' server class; needs python3-pytest
    return conftest._make_server(overrides, name="tern-bench")


def dovecot_login_service(proto, port, tls_port=0):
    """Dovecot config text: the `proto`-login service listening on 127.0.0.1:port, its
    implicit-TLS listener on tls_port (0: off; the private Dovecots of bench/imap,
    bench/pop3, bench/stress, bench/tls). port 0 turns the plain listener off."""
    return (f"service {proto}-login {{\n  inet_listener {proto} {{\n    address = 127.0.0.1\n"
            f"    port = {port}\n  }}\n  inet_listener {proto}s {{\n"
            f"    address = 127.0.0.1\n    port = {tls_port}\n  }}\n}}\n")


def tls_client_context():
    """A TLS client context for the benches: no certificate check (the servers run
    self-signed certificates on loopback), TLS 1.2 or 1.3 as the server chooses."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def load_average():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg prints them."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def make_message(size, i=0, sender="bench@example.org", rcpt="alice@example.test"):
    """A message of about size bytes with CRLF line ends, body lines of 76 chars."""
    head = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench {i}\r\n"
            f"Message-ID: <bench-{i}-{os.getpid()}@example.org>\r\n\r\n").encode()
    line = (b"x" * 74) + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


@dataclass
class Result:
    sessions: int
    messages: int
    size: int
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    per_second: float = 0.0
    errors: list = field(default_factory=list)


def _smtp_session(host, port, rcpt, count, size, res, lock, start_evt):
    def expect(f, code):
        while True:
            line = f.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                if not line.startswith(code):
                    raise RuntimeError(line.decode(errors="replace").strip())
                return

    ok = failed = 0
    err = None
    start_evt.wait()
    try:
        with socket.create_connection((host, port), timeout=120) as s:
            f = s.makefile("rb")
            expect(f, b"220")
            s.sendall(b"EHLO bench.example.org\r\n")
            expect(f, b"250")
            for i in range(count):
                msg = make_message(size, i, rcpt=rcpt)
                s.sendall(b"MAIL FROM:<bench@example.org>\r\n")
                expect(f, b"250")
                s.sendall(f"RCPT TO:<{rcpt}>\r\n".encode())
                expect(f, b"250")
                s.sendall(b"DATA\r\n")
                expect(f, b"354")
                s.sendall(msg + b".\r\n")
                try:
                    expect(f, b"250")
                    ok += 1
                except RuntimeError as e:
                    failed += 1
                    err = str(e)
            s.sendall(b"QUIT\r\n")
    except (OSError, RuntimeError, ConnectionError) as e:
        err = repr(e)
        failed += count - ok - failed
    with lock:
        res.ok += ok
        res.failed += failed
        if err and len(res.errors) < 10:
            res.errors.append(err)


def smtp_load(host, port, rcpt="alice@example.test", sessions=50, messages=5000, size=10240):
    """Deliver `messages` messages over `sessions` concurrent connections; msgs/s."""
    res = Result(sessions, messages, size)
    lock = threading.Lock()
    start_evt = threading.Event()
    per = [messages // sessions + (1 if i < messages % sessions else 0) for i in range(sessions)]
    threads = [threading.Thread(target=_smtp_session,
                                args=(host, port, rcpt, n, size, res, lock, start_evt))
               for n in per]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    start_evt.set()
    for t in threads:
        t.join()
    res.seconds = time.monotonic() - t0
    res.per_second = res.ok / res.seconds if res.seconds else 0.0
    return res


def _fsync_worker(d, n, data, counter, lock):
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            p = os.path.join(d, f"{threading.get_ident()}-{i}")
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            os.fsync(dfd)
            with lock:
                counter[0] += 1
    finally:
        os.close(dfd)


def fsync_probe(directory, files=2000, size=10240, threads=1):
    """How many size-byte files per second the disk makes durable (file + dir fsync)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    counter, lock = [0], threading.Lock()
    per = files // threads
    ts = [threading.Thread(target=_fsync_worker, args=(str(d), per, data, counter, lock))
          for _ in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    for p in d.iterdir():
        p.unlink()
    return counter[0] / dt if dt else 0.0


def rss_kb(pid):
    """Resident set size of pid in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def report(name, values):
    """Print one JSON line and append it to bench/results/<name>.jsonl."""
    if hasattr(values, "__dataclass_fields__"):
        values = asdict(values)
    rec = {"bench": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **values}
    line = json.dumps(rec, sort_keys=True)
    print(line)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    with open(out / f"{name}.jsonl", "a") as f:
        f.write(line + "\n")
