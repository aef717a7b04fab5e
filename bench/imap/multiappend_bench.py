#!/usr/bin/env python3
"""
multiappend_bench.py - time N messages stored one APPEND each vs one MULTIAPPEND
(RFC 3502) of N, on a private tern (TERN_BIN). Both are durable before the OK: each message
file is fsync'd either way; MULTIAPPEND saves the per-command round trip, cur/ fsync and
index transaction.

    TERN_BIN=/tmp/build-rel/tern /usr/bin/python3 bench/imap/multiappend_bench.py -n 200 --runs 3
"""
import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import benchlib  # noqa: E402

PASSWORD = "bench-pw"


def session(port, user):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rwb")
    f.readline()
    f.write(f"a LOGIN {user} {PASSWORD}\r\n".encode())
    f.flush()
    while not f.readline().startswith(b"a "):
        pass
    return s, f


def wait_tag(f, tag):
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(tag + b" "):
            if b" OK " not in line:
                raise RuntimeError(line)
            return


def run_single(f, box, msgs):
    for i, m in enumerate(msgs):
        tag = f"s{i}".encode()
        f.write(tag + f" APPEND {box} {{{len(m)}+}}\r\n".encode() + m + b"\r\n")
        f.flush()
        wait_tag(f, tag)


def run_multi(f, box, msgs):
    data = f"m APPEND {box}".encode()
    for m in msgs:
        data += f" {{{len(m)}+}}\r\n".encode() + m
    f.write(data + b"\r\n")
    f.flush()
    wait_tag(f, b"m")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    srv = benchlib.start_tern({})
    try:
        user = "mab@example.test"
        srv.cli("user", "add", user, "--password-stdin", input=PASSWORD + "\n")
        s, f = session(srv.ports["imap"], user)
        msgs = [benchlib.make_message(a.size, i) for i in range(a.n)]
        res = {"single": [], "multi": []}
        for r in range(a.runs):
            for kind, fn in (("single", run_single), ("multi", run_multi)):
                box = f"{kind}{r}"
                f.write(f"c CREATE {box}\r\n".encode())
                f.flush()
                wait_tag(f, b"c")
                t0 = time.monotonic()
                fn(f, box, msgs)
                res[kind].append(time.monotonic() - t0)
        s.close()
        single, multi = statistics.median(res["single"]), statistics.median(res["multi"])
        print(f"{a.n} messages of {a.size} B: {a.n} APPENDs {single:.3f}s "
              f"({a.n / single:.0f} msg/s), one MULTIAPPEND {multi:.3f}s "
              f"({a.n / multi:.0f} msg/s), {single / multi:.2f}x (median of {a.runs})")
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    main()
