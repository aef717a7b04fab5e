#!/usr/bin/python3
"""
reference.py - run the concurrency stress tester (tests/stress/stress.py) against a
private Dovecot (IMAP + POP3, Maildir) instead of Tern: the model must find nothing
there, which is how we know its rules are the protocol's and not Tern's quirks.

By hand, as root (Dovecot switches to the mail user), loopback only; needs
dovecot-imapd and dovecot-pop3d (`apt-get install -y dovecot-imapd dovecot-pop3d`).
Dovecot has no SMTP listener here, so the mix is IMAP, POP3 and vandals, TLS off; any other
option is passed to stress.py:

    /usr/bin/python3 bench/stress/reference.py --clients 10 --seconds 20
    /usr/bin/python3 bench/stress/reference.py --clients 20 --seconds 30 --mailboxes 3

COPY into the selected mailbox itself is left out (stress.py --no-self-copy) unless
--self-copy is given: Dovecot's Maildir then now and then loses or renumbers such a copy
when other sessions rename and expunge at the same time (its log says "Duplicate file
entry" / "Expunged message reappeared"), which the tester reports as `lost` /
`uid-renumbered` - a Dovecot weakness, not a model error.

Exit status: stress.py's (0: no violation).
"""

import os
import pwd
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "bench" / "imap"))
sys.path.insert(0, str(REPO / "tests" / "stress"))

import imap_bench  # noqa: E402  (dovecot_start/stop, free_port, chown_tree)
import stress  # noqa: E402


def main(argv):
    users = 1
    for i, a in enumerate(argv):
        if a == "--users" and i + 1 < len(argv):
            users = int(argv[i + 1])
    addresses = [f"stress{i}@example.test" for i in range(1, users + 1)]
    run_user = "tern" if any(p.pw_name == "tern" for p in pwd.getpwall()) else "nobody"
    uid, gid = pwd.getpwnam(run_user).pw_uid, pwd.getpwnam(run_user).pw_gid
    work = Path(tempfile.mkdtemp(prefix="stress-dovecot-"))
    os.chmod(work, 0o755)
    (work / "dv" / "home").mkdir(parents=True)
    imap_bench.chown_tree(work / "dv" / "home", uid, gid)
    imap_port, pop3_port = imap_bench.free_port(), imap_bench.free_port()
    dv = imap_bench.dovecot_start(work / "dv", imap_port, uid, gid, addresses,
                                  pop3_port=pop3_port)
    try:
        self_copy = "--self-copy" in argv
        args = [a for a in argv if a != "--self-copy"]
        args += ["--host", "127.0.0.1", "--imap-port", str(imap_port),
                 "--pop3-port", str(pop3_port), "--smtp-port", "1",
                 "--mix", "imap=60,pop3=10,vandal=40", "--tls", "0"] + \
            ([] if self_copy else ["--no-self-copy"]) + [
                "--server-pid", str(dv.pid),
                "--server-log", str(work / "dv" / "dovecot.log")]
        for a in addresses:
            args += ["--user", f"{a}:{imap_bench.PASSWORD}"]
        return stress.main(args)
    finally:
        imap_bench.dovecot_stop(dv)
        if os.environ.get("TERN_KEEP_DATA"):
            print(f"reference: Dovecot's data and log kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
