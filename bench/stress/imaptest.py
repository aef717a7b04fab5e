#!/usr/bin/python3
"""
imaptest.py - Dovecot's imaptest (an independent IMAP stress tester and state checker)
in its stress mode against a Tern it starts itself: several workers, users
imaptest1..N@example.test, messages APPENDed from an mbox made of the stress tester's
messages (tests/stress/msggen.py: plain, multipart/mixed with base64, multipart/
alternative, dot lines, some ~30 KB). imaptest tracks every session's view of the
mailbox and reports each protocol or state error as an "Error:" line; the goal is none.
Afterwards: the server still running, no sanitizer report in its log, its processes'
RSS before and after, SIGTERM obeyed. Appends one JSON line to
bench/results/imaptest.jsonl and exits 0 only with zero errors.

imaptest is not packaged in Debian: build it from github dovecot/imaptest (branch
release-2.3) against Debian's dovecot-dev (see bench/stress/README.md).

    /usr/bin/python3 bench/stress/imaptest.py --imaptest /tmp/imaptest/src/imaptest
    /usr/bin/python3 bench/stress/imaptest.py --imaptest ... --binary build-asan/tern \\
        --users 4 --clients 10 --secs 300 -- checkpoint=10
Arguments after "--" go to imaptest as they are (its own key=value options).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "stress"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import stress  # noqa: E402 - server_memory, load_average, SANITIZER_RE, CHILD_DEATH_RE
from msggen import message_for  # noqa: E402

PASSWORD = "imaptestpw"
ERROR_RE = re.compile(r"^Error: .*$", re.M)
PANIC_RE = re.compile(r"^(Panic|Fatal): .*$", re.M)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imaptest", default=os.environ.get("IMAPTEST", "imaptest"),
                    help="the imaptest binary ($IMAPTEST or imaptest on PATH)")
    ap.add_argument("--binary", help="tern binary (default $TERN_BIN or build/tern)")
    ap.add_argument("--users", type=int, default=4, help="users imaptest1..N (4)")
    ap.add_argument("--clients", type=int, default=10, help="imaptest clients (10)")
    ap.add_argument("--secs", type=int, default=300, help="length of the run (300)")
    ap.add_argument("--messages", type=int, default=200, help="messages in the mbox (200)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a tern.conf setting (default worker_processes=3)")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "imaptest.jsonl"))
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("extra", nargs="*", help="imaptest options after --")
    return ap.parse_args(argv)


def write_mbox(path, n):
    """An mbox of n stress messages (imaptest reads mbox, LF line ends, and sends CRLF)."""
    with open(path, "wb") as f:
        for i in range(n):
            raw = message_for(f"imaptest.m{i}").raw.replace(b"\r\n", b"\n")
            raw = re.sub(rb"(?m)^(>*From )", rb">\1", raw)
            f.write(b"From imaptest@example.test Sat Dec  6 12:00:00 2025\n" + raw)
            if not raw.endswith(b"\n"):
                f.write(b"\n")
            f.write(b"\n")


def main(argv):
    args = parse_args(argv)
    if args.binary:
        os.environ["TERN_BIN"] = str(Path(args.binary).resolve())
    if args.keep_data:
        os.environ["TERN_KEEP_DATA"] = "1"
    import conftest
    signal.signal(signal.SIGTERM, conftest._on_fatal_signal)
    settings = {"worker_processes": "3"}
    settings.update(kv.split("=", 1) for kv in args.set)
    srv = conftest.TernServer({"max_connections_per_ip": 0, "auth.max_failures": 1000000,
                               **settings}, name="tern-imaptest")
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "users": args.users,
           "clients": args.clients, "secs": args.secs, "settings": settings,
           "imaptest_args": args.extra}
    try:
        srv.provision()
        for i in range(1, args.users + 1):
            srv.cli("user", "add", f"imaptest{i}@example.test", "--password-stdin",
                    input=PASSWORD + "\n")
        srv.start()
        rec["binary"] = f"{srv.bin} (pid {srv.pid})"
        mbox = srv.root / "imaptest.mbox"
        write_mbox(mbox, args.messages)
        status = lambda: srv.cli("status", check=False, timeout=10).stdout  # noqa: E731
        mem_start, load_start = stress.server_memory(srv.pid, status), stress.load_average()
        cmd = [args.imaptest, f"host={srv.host}", f"port={srv.ports['imap']}",
               "user=imaptest%d@example.test", f"users=1-{args.users}",
               f"pass={PASSWORD}", f"mbox={mbox}", f"clients={args.clients}",
               f"secs={args.secs}"] + args.extra
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(
            p for p in ("/usr/lib/dovecot", env.get("LD_LIBRARY_PATH")) if p)
        print("imaptest:", " ".join(cmd), flush=True)
        t0 = time.monotonic()
        cp = subprocess.run(cmd, capture_output=True, text=True, env=env,
                            timeout=args.secs + 300)
        out = cp.stdout + cp.stderr
        (srv.root / "imaptest.out").write_text(out)
        rec["elapsed"] = round(time.monotonic() - t0, 1)
        rec["imaptest_exit"] = cp.returncode
        errors = ERROR_RE.findall(out)
        panics = PANIC_RE.findall(out)
        rec["errors"] = len(errors)
        rec["panics"] = len(panics)
        # "Totals:", the command names, their probabilities, then the counts
        tail = out.split("Totals:", 1)[1].split("\n") if "Totals:" in out else []
        rows = [ln.split() for ln in tail if ln.strip()]
        if len(rows) >= 2 and all(x.isdigit() for x in rows[-1]):
            rec["totals"] = dict(zip(rows[0], (int(x) for x in rows[-1])))
            rec["commands"] = sum(rec["totals"].values())
        mem_end, load_end = stress.server_memory(srv.pid, status), stress.load_average()
        rec["memory_rss_kb"] = {p: {"start": mem_start.get(p), "end": mem_end.get(p)}
                                for p in sorted(set(mem_start) | set(mem_end))}
        rec["load"] = {"start": load_start, "end": load_end}
        rec["alive"] = srv.is_running()
        t1 = time.monotonic()
        if rec["alive"]:
            os.kill(srv.pid, signal.SIGTERM)
            try:
                rec["sigterm_exit"] = srv.proc.wait(timeout=10)
                rec["sigterm_secs"] = round(time.monotonic() - t1, 2)
            except subprocess.TimeoutExpired:
                srv.kill9()
                rec["sigterm_exit"] = "did not exit within 10 s"
        log = srv.log_text()
        rec["sanitizer_reports"] = len(stress.SANITIZER_RE.findall(log))
        rec["process_deaths"] = [m.group(0) for m in stress.CHILD_DEATH_RE.finditer(log)]
        print("\n".join(out.splitlines()[-25:]))
        for e in errors[:20]:
            print("  ", e[:300])
        for e in panics[:5]:
            print("  ", e[:300])
    finally:
        srv.cleanup()
        kept = Path(srv.root).exists()
        rec["data"] = str(srv.root) if kept else None
    ok = (rec.get("errors") == 0 and rec.get("panics") == 0 and rec.get("alive")
          and rec.get("sigterm_exit") == 0 and rec.get("sanitizer_reports") == 0
          and not rec.get("process_deaths"))
    rec["result"] = "PASS" if ok else "FAIL"
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print("result:", json.dumps(rec))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
