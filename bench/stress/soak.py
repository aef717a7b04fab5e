#!/usr/bin/python3
"""
soak.py - the long run of the concurrency stress tester (tests/stress/stress.py): by
default 50 clients for 10 minutes on 2 users x 2 mailboxes (half the clients on each
user's INBOX and second mailbox), spread over 2 client processes, then the same
end-of-run checks as the CI run. Appends one JSON result line to
bench/results/stress-soak.jsonl and prints it; the exit status is stress.py's (0: no
violation). DESIGN §7's target: 0 violations and 0 sanitizer reports under ASan and TSan.

    /usr/bin/python3 bench/stress/soak.py                                   # build/tern
    ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \\
        /usr/bin/python3 bench/stress/soak.py --binary build-asan/tern --io-timeout 60
    TSAN_OPTIONS=halt_on_error=0 \\
        /usr/bin/python3 bench/stress/soak.py --binary build-tsan/tern --io-timeout 120

Any stress.py option may be given and overrides the defaults (e.g. --seconds 120, or
--host/--imap-port/... to soak a server started by hand, see tests/stress/README.md).
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "stress"))

import stress  # noqa: E402

DEFAULTS = {"--clients": "50", "--seconds": "600", "--users": "2", "--mailboxes": "2",
            "--procs": "2", "--seed": "1", "--examples": "3",
            "--json": str(REPO / "bench" / "results" / "stress-soak.jsonl")}


def main(argv):
    args = list(argv)
    for k, v in DEFAULTS.items():
        if k not in args:
            args += [k, v]
    Path(args[args.index("--json") + 1]).parent.mkdir(parents=True, exist_ok=True)
    rc = stress.main(args)
    with open(args[args.index("--json") + 1]) as f:
        print("result:", f.readlines()[-1].strip())
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
