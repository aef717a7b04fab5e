#!/usr/bin/env python3
"""
kill9_bench.py - DESIGN §7 "messages lost or duplicated after kill -9 under load: 0".

Rounds of: SMTP sessions (smtplib) and IMAP APPEND clients (imaplib) store messages with
a unique token into one user's INBOX as fast as they can; after --seconds the server gets
SIGKILL; it is restarted; then every token that was acknowledged (SMTP 250, IMAP OK) must
be in the Maildir exactly once, and IMAP's EXISTS must equal the number of files (no
message indexed twice, none missing from the index). Tokens stored but not yet
acknowledged when the kill came may be present (at most once) or absent: both are right.

    TERN_BIN=/tmp/build-rel/tern /usr/bin/python3 bench/durability/kill9_bench.py --rounds 5

Loopback only; the server is a private instance (benchlib.start_tern) removed at the end.
Bounded: --rounds × (--seconds + restart), each client stops at the kill.
"""
import argparse
import imaplib
import re
import smtplib
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import benchlib  # noqa: E402

USER, PASSWORD = "alice@example.test", "alicepw"
TOKEN_RE = re.compile(rb"(?:^|\n)X-Dur: (dur-[0-9a-f]+-[a-z]\d+-\d+)\r?\n")


def smtp_client(srv, name, run_id, acked, lock, stop):
    try:
        with smtplib.SMTP(srv.host, srv.ports["smtp"], local_hostname="load.test",
                          timeout=30) as s:
            for i in range(100000):
                if stop.is_set():
                    return
                tok = f"dur-{run_id}-{name}-{i}"
                s.sendmail("load@remote.example", [USER],
                           f"X-Dur: {tok}\r\nSubject: kill9\r\n\r\n{tok}\r\n" + "z" * 4000)
                with lock:
                    acked.append(tok)
    except (smtplib.SMTPException, OSError):
        return


def imap_client(srv, name, run_id, acked, lock, stop):
    try:
        c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
        c.login(USER, PASSWORD)
        for i in range(100000):
            if stop.is_set():
                return
            tok = f"dur-{run_id}-{name}-{i}"
            msg = f"X-Dur: {tok}\r\nSubject: kill9\r\n\r\n{tok}\r\n" + "y" * 4000
            typ, _ = c.append("INBOX", None, None, msg.encode())
            if typ == "OK":
                with lock:
                    acked.append(tok)
    except (imaplib.IMAP4.error, OSError, EOFError):
        return


def count_tokens(maildir):
    counts = {}
    n_files = 0
    for sub in ("new", "cur"):
        for f in (maildir / sub).iterdir():
            n_files += 1
            m = TOKEN_RE.search(f.read_bytes())
            if m:
                tok = m.group(1).decode()
                counts[tok] = counts.get(tok, 0) + 1
    return counts, n_files


def imap_exists(srv):
    c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=60)
    c.login(USER, PASSWORD)
    typ, data = c.select("INBOX")
    c.logout()
    return int(data[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--smtp", type=int, default=20, help="concurrent SMTP sessions")
    ap.add_argument("--imap", type=int, default=10, help="concurrent IMAP APPEND clients")
    args = ap.parse_args()
    srv = benchlib.start_tern()
    totals = {"acked": 0, "lost": 0, "duplicated": 0, "unacked_present": 0,
              "index_mismatch": 0}
    try:
        for rnd in range(args.rounds):
            run_id = uuid.uuid4().hex[:8]
            acked, lock, stop = [], threading.Lock(), threading.Event()
            threads = [threading.Thread(target=smtp_client, daemon=True,
                                        args=(srv, f"s{k}", run_id, acked, lock, stop))
                       for k in range(args.smtp)]
            threads += [threading.Thread(target=imap_client, daemon=True,
                                         args=(srv, f"i{k}", run_id, acked, lock, stop))
                        for k in range(args.imap)]
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            srv.kill9()
            stop.set()
            for t in threads:
                t.join(timeout=30)
            with lock:
                acked_now = list(acked)
            srv.start()
            counts, n_files = count_tokens(srv.maildir(USER))
            mine = {t: n for t, n in counts.items() if t.startswith(f"dur-{run_id}-")}
            lost = [t for t in acked_now if counts.get(t, 0) == 0]
            dup = [t for t, n in mine.items() if n > 1]
            unacked = len(set(mine) - set(acked_now))
            exists = imap_exists(srv)
            r = {"round": rnd + 1, "acked": len(acked_now), "lost": len(lost),
                 "duplicated": len(dup), "unacked_present": unacked,
                 "files": n_files, "imap_exists": exists,
                 "index_mismatch": int(exists != n_files)}
            print(r, flush=True)
            for k in totals:
                totals[k] += r[k]
    finally:
        srv.stop()
        srv.cleanup()
    totals.update({"bench": "kill9", "rounds": args.rounds, "seconds": args.seconds,
                   "smtp": args.smtp, "imap": args.imap})
    benchlib.report("kill9", totals)
    return 0 if totals["lost"] == 0 and totals["duplicated"] == 0 and \
        totals["index_mismatch"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
