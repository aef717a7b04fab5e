#!/usr/bin/python3
r"""imaptest_run.py - Dovecot's imaptest (the field's IMAP compliance and stress tester)
against a fresh Tern, by hand (CI cannot fetch imaptest's source).

Build imaptest once, outside the repository (Debian 12, as root):

    apt-get install -y dovecot-dev
    git clone -b release-2.3 https://github.com/dovecot/imaptest /tmp/imaptest
    cd /tmp/imaptest && sed -i 's/imap_parser_create(\(.*\), (size_t)-1)/imap_parser_create(\1, (size_t)-1, NULL)/' src/*.c
    ./autogen.sh && ./configure --with-dovecot=/usr/lib/dovecot && make
(the sed: Debian 12's Dovecot 2.3.19 headers take a fourth, parameters argument that
imaptest's release-2.3 branch does not pass.)

Then, from the checkout:

    /usr/bin/python3 bench/imap/imaptest_run.py compliance --imaptest /tmp/imaptest
    /usr/bin/python3 bench/imap/imaptest_run.py stress --imaptest /tmp/imaptest --clients 10 --secs 30

`compliance` runs every scripted test group in imaptest's src/tests (or --tests DIR) and
prints imaptest's summary (groups failed / skipped, commands failed) and the failures;
`stress` runs imaptest's random mix of commands with N clients on one mailbox and prints
its totals and the number of error lines. Both start Tern with the integration fixtures
(tests/integration/conftest.py: free loopback ports, a temporary data folder) and a user
it@example.test; TERN_BIN picks the binary (default build/tern). Exit status: 0 when
imaptest reported no failure and no error line.
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import conftest  # noqa: E402  (the fixtures that start tern)

IMAPTEST_ENV = dict(os.environ, LD_LIBRARY_PATH="/usr/lib/dovecot")


def start_server():
    """A fresh tern with the imaptest user; the IMAP idle timeout long enough for a run."""
    srv = conftest._make_server({"imap.timeout": "1800"})
    srv.cli("user", "add", "it@example.test", "--password-stdin", input="itpw\n")
    return srv


def base_args(binary, srv, is_tls=False):
    port = srv.ports["imaps"] if is_tls else srv.ports["imap"]
    return [str(binary), f"host={srv.host}", f"port={port}", "user=it@example.test",
            "pass=itpw"] + (["ssl=any-cert"] if is_tls else [])


def run(cmd, timeout):
    print(" ".join(cmd), flush=True)
    r = subprocess.run(cmd, env=IMAPTEST_ENV, capture_output=True, text=True, timeout=timeout)
    return r.stdout + r.stderr


def compliance(args, binary, srv):
    tests = args.tests or str(pathlib.Path(args.imaptest) / "src" / "tests")
    out = run(base_args(binary, srv) + [f"test={tests}"], args.timeout)
    lines = out.splitlines()
    summary = [l for l in lines if "test groups" in l or "individual commands" in l]
    failures = [l for l in lines if l.startswith("*** Test")]
    print("\n".join(lines[-40:] if failures else summary))
    print(f"failed commands listed: {len(failures)}")
    return 0 if summary and not failures else 1


def stress(args, binary, srv):
    mbox = pathlib.Path(args.imaptest) / "dovecot-crlf"
    if not mbox.exists():
        mbox = pathlib.Path(args.imaptest) / "src" / "tests" / "default.mbox"
    extra = [f"mbox={mbox}", f"clients={args.clients}", f"secs={args.secs}"]
    if not args.pipelining:
        extra.append("no_pipelining")
    out = run(base_args(binary, srv, args.tls) + extra, args.secs + 120)
    lines = out.splitlines()
    print("\n".join(lines[-12:]))
    errors = [l for l in lines if "error" in l.lower()]
    print(f"error lines: {len(errors)}")
    print("\n".join(errors[:10]))
    return 0 if not errors else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["compliance", "stress"])
    ap.add_argument("--imaptest", required=True, help="imaptest's built source folder")
    ap.add_argument("--tests", help="compliance: a folder of test scripts (default src/tests)")
    ap.add_argument("--clients", type=int, default=10, help="stress: clients at once")
    ap.add_argument("--secs", type=int, default=30, help="stress: seconds")
    ap.add_argument("--tls", action="store_true", help="stress: over implicit TLS (993)")
    ap.add_argument("--pipelining", action="store_true",
                    help="stress: let imaptest pipeline commands (default: one at a time)")
    ap.add_argument("--timeout", type=int, default=900, help="compliance: seconds at most")
    ap.add_argument("--keep-log", help="copy the server's log here at the end")
    args = ap.parse_args()
    binary = pathlib.Path(args.imaptest) / "src" / "imaptest"
    if not binary.exists():
        sys.exit(f"no imaptest binary at {binary}: build it first (see --help)")
    srv = start_server()
    try:
        rc = compliance(args, binary, srv) if args.mode == "compliance" else stress(args, binary, srv)
        alive = srv.proc.poll() is None
        print(f"server alive at the end: {'yes' if alive else 'no'}")
        rc = rc if alive else 1
    finally:
        srv.stop()
        if args.keep_log:
            shutil.copy(srv.log_path, args.keep_log)
        srv.cleanup()
    sys.exit(rc)


if __name__ == "__main__":
    main()
