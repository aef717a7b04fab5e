#!/usr/bin/python3
"""
stress.py - Tern's concurrency stress tester (issue 9, "Correct under concurrency").

Many real IMAP, POP3 and SMTP clients (Python's imaplib/poplib/smtplib) work on the same
mailboxes at once with a seeded random mix of commands; every reply is checked against a
model of what the protocols allow (model.py), and at the end a quiet pass settles what
no single session can know (nothing lost, nothing duplicated, flags converged, UIDs
never reused). Then the server must still be alive, have no sanitizer report in its log,
and exit within a bound on SIGTERM. See README.md in this folder.

  /usr/bin/python3 tests/stress/stress.py [--clients 10] [--users 1] [--mailboxes 1]
      [--seconds 20] [--seed 1] [--binary build/tern] [--keep-data] [--procs 0]
  ... or against a running server:
      --host 127.0.0.1 --imap-port 143 --pop3-port 110 --smtp-port 25 \\
      --user a@example.test:pw [--user ...] [--server-pid PID] [--server-log FILE]

Exit status: 0 no violation, 1 violations, 2 the tester could not run (setup failed).
"""

import argparse
import imaplib
import json
import multiprocessing
import os
import poplib
import random
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import chaos as chaos_mod  # noqa: E402
from clients import Ctx, ImapClient, SessionOver, worker  # noqa: E402
from model import Cmd, FinalState, Ledger, Violations, check_final, norm_mailbox  # noqa: E402
from msggen import message_for  # noqa: E402

# conftest's pattern plus ThreadSanitizer's "WARNING:" reports (TSan runs).
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory|UndefinedBehavior)Sanitizer|"
                          r"WARNING: ThreadSanitizer|runtime error: ")
# src/core/master.c: "process tern/worker pid 123 killed by signal 11" / "... exit status 1"
CHILD_DEATH_RE = re.compile(r"process tern/\S+ pid (\d+) (killed by signal \d+|exit status \d+)")
DEFAULT_PASSWORD = "stresspw"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10, help="concurrent clients (10)")
    ap.add_argument("--users", type=int, default=1, help="users the clients share (1)")
    ap.add_argument("--mailboxes", type=int, default=1,
                    help="mailboxes per user: INBOX, Box1, ... (1)")
    ap.add_argument("--seconds", type=float, default=20, help="duration of the mix (20)")
    ap.add_argument("--seed", type=int, default=1, help="seed of every client's choices (1)")
    ap.add_argument("--max-ops", type=int, default=0,
                    help="stop each client after this many commands (0: only --seconds)")
    ap.add_argument("--binary", help="tern binary to start (default $TERN_BIN or build/tern)")
    ap.add_argument("--keep-data", action="store_true", help="keep the server's data folder")
    ap.add_argument("--procs", type=int, default=0,
                    help="spread the clients over this many processes (0: threads only)")
    ap.add_argument("--mix", default="imap=60,pop3=10,smtp=10,vandal=40",
                    help="session kinds and weights (imap=60,pop3=10,smtp=10,vandal=40); a "
                         "vandal pipelines commands, reads nothing and resets the connection")
    ap.add_argument("--initial", type=int, default=15, help="messages per mailbox at start")
    ap.add_argument("--min-messages", type=int, default=10,
                    help="below this a mailbox grows faster (10)")
    ap.add_argument("--max-messages", type=int, default=60,
                    help="above this a mailbox shrinks faster (60)")
    ap.add_argument("--io-timeout", type=float, default=30.0,
                    help="a reply later than this is a 'timeout' violation (30 s)")
    ap.add_argument("--term-limit", type=float, default=10.0,
                    help="SIGTERM must stop the server within this (10 s; DESIGN §7)")
    ap.add_argument("--load-before-term", type=float, default=1.0,
                    help="seconds of APPEND/SMTP/IDLE load before the SIGTERM (1 s)")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="pause before the convergence snapshot (0: NOOP must show all)")
    ap.add_argument("--tls", type=float, default=0.25,
                    help="share of sessions over TLS: IMAPS, POP3S, SMTP STARTTLS (0.25)")
    ap.add_argument("--imap-ops", metavar="LIST",
                    help="only these IMAP commands (to narrow a bug down): fetch,store,append,"
                         "search,noop,idle,expunge,uid_expunge,copy,move,status,reselect,"
                         "close,unselect")
    ap.add_argument("--session-length", default="5,60", metavar="MIN,MAX",
                    help="IMAP commands per session, drawn between MIN and MAX (5,60)")
    ap.add_argument("--delete-share", type=float, metavar="P",
                    help="probability that a STORE adds \\Deleted (default: by mailbox size)")
    ap.add_argument("--no-self-copy", dest="self_copy", action="store_false",
                    help="COPY only to other mailboxes (default: also into the selected one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a tern.conf setting for our own server (repeatable), e.g. "
                         "master_process=no, worker_processes=3")
    ap.add_argument("--mem-interval", type=float, default=60.0, metavar="S",
                    help="sample the server's processes' RSS and the load average every "
                         "S seconds of the mix (60)")
    ap.add_argument("--json", help="append the summary as one JSON line to this file")
    ap.add_argument("--examples", type=int, default=3, help="examples printed per kind")
    ap.add_argument("--chaos", metavar="PERIOD[,ACTION...]",
                    help="during the mix, every PERIOD s on average (0.5-1.5x, seeded) one of "
                         "the actions: hup, reload, kill-worker, kill-login, kill-auth, "
                         "kill-queue (default all); our own server only")
    ap.add_argument("--chaos-seed", type=int, help="seed of the chaos events (--seed)")
    ap.add_argument("--restart-limit", type=float, default=70.0, metavar="S",
                    help="with --chaos: the master must restore a killed process and a new "
                         "connection must be served within S s of the event (70: the back-off "
                         "of a process that keeps dying reaches 60 s)")
    g = ap.add_argument_group("an already running server (no server is started)")
    g.add_argument("--host", default=None)
    g.add_argument("--imap-port", type=int)
    g.add_argument("--pop3-port", type=int)
    g.add_argument("--smtp-port", type=int)
    g.add_argument("--imaps-port", type=int, help="implicit-TLS IMAP (for --tls)")
    g.add_argument("--pop3s-port", type=int, help="implicit-TLS POP3 (for --tls)")
    g.add_argument("--user", action="append", default=[], metavar="ADDRESS:PASSWORD",
                   help="a user the clients log in as (repeat)")
    g.add_argument("--server-pid", type=int, help="check it is alive at the end")
    g.add_argument("--server-log", help="scan it for sanitizer reports")
    g.add_argument("--sigterm", action="store_true",
                   help="with --server-pid: SIGTERM it at the end and time the exit")
    args = ap.parse_args(argv)
    try:
        args.mix = {k: float(w) for k, w in (kv.split("=") for kv in args.mix.split(","))}
        assert set(args.mix) <= {"imap", "pop3", "smtp", "vandal"} and \
            sum(args.mix.values()) > 0
    except (ValueError, AssertionError):
        ap.error("--mix: e.g. imap=60,pop3=10,smtp=10,vandal=40")
    try:
        lo, hi = (int(x) for x in args.session_length.split(","))
        assert 1 <= lo <= hi
        args.session_length = (lo, hi)
    except (ValueError, AssertionError):
        ap.error("--session-length: MIN,MAX with 1 <= MIN <= MAX")
    try:
        args.set = dict(kv.split("=", 1) for kv in args.set)
        assert all(k.strip() for k in args.set)
    except (ValueError, AssertionError):
        ap.error("--set: KEY=VALUE, e.g. master_process=no")
    args.set = {k.strip(): v.strip() for k, v in args.set.items()}
    args.external = args.host is not None
    if args.external and not (args.imap_port and args.pop3_port and args.smtp_port
                              and args.user):
        ap.error("--host needs --imap-port, --pop3-port, --smtp-port and --user")
    if not args.external and args.user:
        ap.error("--user needs --host (its own server gets its own users)")
    if args.external and args.set:
        ap.error("--set configures our own server only")
    if args.chaos:
        if args.external:
            ap.error("--chaos needs our own server (it signals the master's children)")
        try:
            args.chaos = chaos_mod.parse_spec(args.chaos)
        except ValueError as e:
            ap.error(f"--chaos: PERIOD[,ACTION...], e.g. 3 or 2,kill-worker,hup ({e})")
        if args.set.get("master_process") == "no":
            ap.error("--chaos needs master_process = yes")
    if args.chaos_seed is None:
        args.chaos_seed = args.seed
    return args


# --------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------

class OwnServer:
    """A tern started like the integration tests start it (tests/integration/conftest.py)
    plus the stress users; the data folder is removed at the end unless kept."""

    def __init__(self, args):
        if args.binary:
            os.environ["TERN_BIN"] = str(Path(args.binary).resolve())
        if args.keep_data:
            os.environ["TERN_KEEP_DATA"] = "1"
        import conftest                    # the integration tests' server class
        self.conftest = conftest
        # SIGTERM to the tester (a CI time limit) takes its server down with it.
        signal.signal(signal.SIGTERM, conftest._on_fatal_signal)
        # Many clients from one address: no per-IP cap and no failed-login blocks, neither
        # per address nor per (address, account) (the clients drop some logins with a
        # wrong password on purpose; the delays stay, in conftest's milliseconds).
        self.overrides = {"max_connections_per_ip": 0, "auth.max_failures": 1000000,
                          "auth.account_max_failures": 0, **args.set}
        self.srv = conftest.TernServer(self.overrides, name="tern-stress")
        self.users = [(f"stress{i}@example.test", DEFAULT_PASSWORD)
                      for i in range(1, args.users + 1)]
        try:
            self.srv.provision()
            for user, pw in self.users:
                # a quota (never reached) so that APPEND and delivery take the quota path
                self.srv.cli("user", "add", user, "--password-stdin", "--quota", "10G",
                             input=pw + "\n")
            self.srv.start()
        except BaseException:
            self.srv.cleanup()
            raise
        args.host = self.srv.host
        args.imap_port = self.srv.ports["imap"]
        args.pop3_port = self.srv.ports["pop3"]
        args.smtp_port = self.srv.ports["smtp"]
        args.imaps_port = self.srv.ports["imaps"]
        args.pop3s_port = self.srv.ports["pop3s"]

    def describe(self):
        return f"{self.srv.bin} (pid {self.srv.pid}, data {self.srv.root})"

    def alive(self):
        return self.srv.is_running()

    def exit_status(self):
        return self.srv.proc.poll()

    def log_text(self):
        return self.srv.log_text()

    def terminate(self, limit):
        """SIGTERM; returns (seconds to exit or None if it did not within limit, status)."""
        proc = self.srv.proc
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(timeout=limit)
            return time.monotonic() - t0, rc
        except Exception:                          # noqa: BLE001 - subprocess.TimeoutExpired
            self.srv.kill9()
            return None, self.srv.returncode

    def restart(self):
        self.srv.start()

    def rewrite_config(self, changes):
        """tern.conf again with changes on top of our settings (for a reload)."""
        self.overrides.update(changes)
        self.srv.write_config(self.overrides)

    def memory(self):
        """{process: RSS in kB}: `tern status` names the master's children (workers, auth,
        queue); the master itself, or the only process with master_process = no, from
        /proc."""
        return server_memory(self.srv.proc.pid, lambda: self.status_text(10))

    def status_text(self, timeout):
        """`tern status` (not through conftest's cli(), which gives the data folder back
        to the run user after each command: while it walks the tree tern.db is not the
        auth user's, and an auth process starting then cannot open it)."""
        return subprocess.run([str(self.srv.bin), "-c", str(self.srv.config_path), "status"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout).stdout

    def cleanup(self):
        self.srv.cleanup()
        kept = Path(self.srv.root).exists()
        return self.srv.root if kept else None


class ExternalServer:
    """A server someone else runs: optional pid (alive, SIGTERM) and log (sanitizers)."""

    def __init__(self, args):
        self.pid = args.server_pid
        self.log = args.server_log
        self.users = [tuple(u.rsplit(":", 1)) for u in args.user]

    def describe(self):
        return f"external {self.pid or '(pid unknown)'}"

    def alive(self):
        if not self.pid:
            return None
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def exit_status(self):
        return None

    def log_text(self):
        if not self.log:
            return ""
        return Path(self.log).read_text(errors="replace")

    def terminate(self, limit):
        t0 = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)
        while time.monotonic() - t0 < limit:
            if not self.alive():
                return time.monotonic() - t0, None
            time.sleep(0.02)
        return None, None

    def cleanup(self):
        return None

    def memory(self):
        return server_memory(self.pid, None) if self.pid else {}


# `tern status` (src/core/master.c): "worker: pid 123, generation 1, up 5 s, rss 9120 kB, ..."
STATUS_RSS_RE = re.compile(r"^(\w+): pid (\d+),.*? rss (\d+) kB", re.M)


def _proc_rss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def server_memory(pid, status_text):
    """RSS (kB) of the server's processes: "master" (or "server" when it runs alone) and,
    from `tern status`, "worker1", "worker2", ..., "auth", "queue" in its order."""
    out = {}
    text = ""
    if status_text is not None:
        try:
            text = status_text() or ""
        except Exception:                          # noqa: BLE001 - not running, timeout
            text = ""
    seen = Counter()
    for m in STATUS_RSS_RE.finditer(text):
        kind = m.group(1)
        if kind in ("master", "total", "spool"):
            continue
        seen[kind] += 1
        name = f"{kind}{seen[kind]}" if kind == "worker" else kind
        out[name] = int(m.group(3))
    rss = _proc_rss_kb(pid)
    if rss is not None:
        out["master" if out else "server"] = rss
    return out


def load_average():
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


class MemorySampler(threading.Thread):
    """Samples (seconds into the mix, {process: RSS kB}, load average) every interval."""

    def __init__(self, server, interval):
        super().__init__(daemon=True, name="memory-sampler")
        self.server, self.interval = server, interval
        self.samples = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def sample(self):
        self.samples.append((round(time.monotonic() - self.t0, 1), self.server.memory(),
                             load_average()))

    def run(self):
        while not self.stop.wait(self.interval):
            self.sample()


def memory_report(samples):
    """Lines for the summary and a dict for the JSON: RSS per process at the start, at the
    end and its peak; the load average's first, last and highest 1-minute value."""
    if not samples:
        return [], {}
    first, last = samples[0][1], samples[-1][1]
    procs = sorted(set(first) | set(last))
    rep = {"rss_kb": {}, "load": {}}
    lines = []
    for p in procs:
        vals = [s[1][p] for s in samples if p in s[1]]
        a, b = first.get(p), last.get(p)
        rep["rss_kb"][p] = {"start": a, "end": b, "max": max(vals) if vals else None}
        growth = f"{b - a:+d} kB" if a is not None and b is not None else "n/a"
        lines.append(f"  rss {p:<10} start {a} kB, end {b} kB ({growth}), "
                     f"max {max(vals) if vals else None} kB")
    rep["samples"] = [{"t": t, "rss_kb": m, "load": ld} for t, m, ld in samples]
    lines.append("  rss over time (kB; " + ", ".join(procs) + "):")
    for t, m, _ in samples:
        lines.append(f"    {t:>7.1f} s " + " ".join(f"{m.get(p, '-'):>7}" for p in procs))
    loads = [s[2] for s in samples if s[2]]
    if loads:
        rep["load"] = {"start": loads[0], "end": loads[-1],
                       "max_1min": max(x[0] for x in loads)}
        lines.append(f"  load average: start {loads[0]}, end {loads[-1]}, highest 1-min "
                     f"{max(x[0] for x in loads):.2f} ({len(samples)} samples)")
    return lines, rep


# --------------------------------------------------------------------------------------
# set-up, run, final pass
# --------------------------------------------------------------------------------------

def setup_mailboxes(ctx, v, ledger):
    """Create the mailboxes and put --initial messages in each (through the model)."""
    rng = random.Random(f"{ctx.seed}/setup")
    tokens = [0]
    for user, pw in ctx.users:
        c = ImapClient(ctx, 0, user, pw, rng, v, ledger, tokens)
        c.who = f"setup ({user})"
        c.connect()
        for box in ctx.mailboxes[1:]:
            c.run(Cmd("CREATE", line=f"CREATE {box}"), c.conn.create, box)
        for box in ctx.mailboxes:
            for _ in range(ctx.initial):
                token = c.new_token()
                ledger.attempts[(user, token)] += 1
                c.run(Cmd("APPEND", mailbox=box, token=token, line=f"APPEND {box} ({token})"),
                      c.conn.append, box, None, None, message_for(token).raw)
        c.logout()
        c.close()


def final_pass(ctx, v, ledger):
    """Read every mailbox with a fresh session (EXAMINE: nothing changes) and every
    user's POP3 UIDL list; returns a FinalState."""
    final = FinalState(run_id=ctx.run_id)
    rng = random.Random(0)
    for user, pw in ctx.users:
        c = ImapClient(ctx, 0, user, pw, rng, v, ledger, [0])
        c.who = f"final pass ({user})"
        try:
            c.connect()
            for box in ctx.mailboxes:
                c.select(box, readonly=True)
                if c.model.state != "selected":
                    continue
                n = c.model.count()
                if n:
                    items = "(UID FLAGS BODY.PEEK[HEADER.FIELDS (X-STRESS-ID)])"
                    cmd = Cmd("FETCH", targets=list(range(1, n + 1)),
                              items=["UID", "FLAGS", "BODY[HEADER.FIELDS]"],
                              line=f"FETCH 1:* {items}")
                    cmd.target_uids = {}
                    c.run(cmd, c.conn.fetch, "1:*", items, label="FETCH (final pass)")
                m = c.model
                if len(m.known()) != n:
                    continue
                mbox = (user, norm_mailbox(box))
                final.uidvalidity[mbox] = m.uidvalidity
                final.mailboxes[mbox] = {
                    e.uid: (frozenset(m.flags.get(e.uid, frozenset()) - {"\\recent"}),
                            m.tokens.get(e.uid)) for e in m.view}
            c.logout()
            c.close()
        except SessionOver:
            c.close()
        final.pop3[user] = pop3_listing(ctx, user, pw, v)
    return final


def pop3_listing(ctx, user, pw, v):
    """The set of UIDLs of user's maildrop (None if POP3 could not be read)."""
    for _ in range(50):
        try:
            p = poplib.POP3(ctx.host, ctx.pop3_port, timeout=ctx.io_timeout)
            try:
                p.user(user)
                p.pass_(pw)
                _, lines, _ = p.uidl()
                p.quit()
                return {ln.split()[1].decode() for ln in lines}
            finally:
                p.close()
        except poplib.error_proto as e:
            if b"[IN-USE]" in e.args[0]:
                time.sleep(0.1)
                continue
            v.add("pop3-err", f"final pass ({user}): {e.args[0]!r}")
            return None
        except OSError as e:
            v.add("disconnect", f"final pass ({user}): POP3: {e!r}")
            return None
    v.add("pop3-lock", f"final pass ({user}): maildrop still locked ([IN-USE]) 5 s after "
          f"every client left (a lock not released when its session ended)")
    return None


def _load_imap(ctx, user, pw, box, cid, stop, acked, lock):
    """APPEND in a loop until the server goes away; note what was acknowledged."""
    n = 0
    try:
        m = imaplib.IMAP4(ctx.host, ctx.imap_port, timeout=ctx.io_timeout)
        m.login(user, pw)
        m.select(box)
        while not stop.is_set():
            n += 1
            token = f"{ctx.run_id}.a{cid}.{n}"
            typ, _ = m.append(box, None, None, message_for(token).raw)
            if typ == "OK":
                with lock:
                    acked.append((user, box, token))
            m.fetch("1:*" if n % 5 == 0 else f"{n % 3 + 1}", "(FLAGS BODY.PEEK[HEADER])")
    except (OSError, imaplib.IMAP4.error, EOFError):
        pass                                      # the server is going away: expected


def _load_smtp(ctx, user, cid, stop, acked, lock):
    n = 0
    try:
        with smtplib.SMTP(ctx.host, ctx.smtp_port, timeout=ctx.io_timeout) as s:
            while not stop.is_set():
                n += 1
                token = f"{ctx.run_id}.s{cid}.{n}"
                s.sendmail("stress@example.org", [user], message_for(token).raw)
                with lock:
                    acked.append((user, "INBOX", token))
    except (OSError, smtplib.SMTPException):
        pass


def _load_idle(ctx, user, pw, stop):
    try:
        m = imaplib.IMAP4(ctx.host, ctx.imap_port, timeout=ctx.io_timeout)
        m.login(user, pw)
        m.select("INBOX")
        m.send(b"I1 IDLE\r\n")
        while not stop.is_set() and m.readline():
            pass
    except (OSError, imaplib.IMAP4.error, EOFError):
        pass


def shutdown_under_load(ctx, server, args, v, final_before=None):
    """SIGTERM while clients APPEND, deliver, FETCH and IDLE; the server must exit within
    --term-limit. Our own server is then restarted: every message acknowledged during the
    load must be there exactly once (DESIGN §7: SIGTERM under full load). Returns the
    text for the summary."""
    stop = threading.Event()
    acked, lock = [], threading.Lock()
    threads = []
    for i, (user, pw) in enumerate(server.users * max(1, 4 // len(server.users))):
        box = ctx.mailboxes[i % len(ctx.mailboxes)]
        threads.append(threading.Thread(target=_load_imap, daemon=True, args=(
            ctx, user, pw, box, 1000 + i, stop, acked, lock)))
        threads.append(threading.Thread(target=_load_smtp, daemon=True, args=(
            ctx, user, 2000 + i, stop, acked, lock)))
        threads.append(threading.Thread(target=_load_idle, daemon=True, args=(
            ctx, user, pw, stop)))
    for t in threads:
        t.start()
    time.sleep(args.load_before_term)
    with lock:
        before = len(acked)
    secs, rc = server.terminate(args.term_limit)
    stop.set()
    for t in threads:
        t.join(ctx.io_timeout + 5)
    if secs is None:
        v.add("shutdown-hang", f"still running {args.term_limit:g}s after SIGTERM under load "
              f"(killed)", server.log_text()[-3000:])
        text = f"under load ({before} messages acknowledged by then): did NOT exit within " \
               f"{args.term_limit:g} s (killed)"
    else:
        text = f"under load ({before} messages acknowledged by then): exited in {secs:.2f} s " \
               f"(limit {args.term_limit:g} s), status {rc}"
        if rc not in (0, None):
            v.add("shutdown-status", f"exit status {rc} after SIGTERM", server.log_text()[-3000:])
    if not hasattr(server, "restart") or not acked:
        return text
    try:
        server.restart()
    except Exception as e:                         # noqa: BLE001
        v.add("restart", f"the server did not start again after SIGTERM: {e}")
        return text
    counts = Counter()
    for user, pw in server.users:
        c = ImapClient(ctx, 0, user, pw, random.Random(0), v, Ledger(), [0])
        c.who = f"after restart ({user})"
        try:
            c.connect()
            for box in ctx.mailboxes:
                c.select(box, readonly=True)
                if c.model.state == "selected" and c.model.count():
                    c.sync()
                for tok in c.model.tokens.values():
                    counts[(user, box, tok)] += 1
            c.logout()
            c.close()
        except SessionOver:
            c.close()
    for key in acked:
        if counts[key] != 1:
            v.add("shutdown-lost" if counts[key] == 0 else "duplicate",
                  f"{key[2]} acknowledged to {key[0]} {key[1]} just before SIGTERM is there "
                  f"{counts[key]} times after the restart")
    if final_before is not None:
        text += "; " + check_restart(ctx, v, final_before)
    secs2, rc2 = server.terminate(args.term_limit)
    if secs2 is None:
        v.add("shutdown-hang", f"idle server still running {args.term_limit:g}s after SIGTERM")
    return text + f"; after restart all {len(acked)} acknowledged checked; idle SIGTERM " \
        f"{'exited in %.2f s' % secs2 if secs2 is not None else 'HUNG'}"


def check_restart(ctx, v, before):
    """After chaos: every message of the final pass (taken before the SIGTERM) is there
    after the restart, under the same UID, exactly once."""
    after = final_pass(ctx, v, Ledger())
    n = 0
    for mbox, msgs in before.mailboxes.items():
        now_msgs = after.mailboxes.get(mbox)
        if now_msgs is None:
            v.add("restart-lost", f"{mbox}: not readable after the restart")
            continue
        had = Counter(tok for _, tok in msgs.values() if tok)
        has = Counter(tok for _, tok in now_msgs.values() if tok)
        for uid, (_, tok) in msgs.items():
            n += 1
            if uid not in now_msgs or now_msgs[uid][1] != tok:
                v.add("restart-lost", f"{mbox} UID {uid} ({tok}) was there before the SIGTERM, "
                      f"not after the restart")
        for tok, k in had.items():
            if has[tok] > k:
                v.add("duplicate", f"{mbox} {tok}: {k} copies before the SIGTERM, {has[tok]} "
                      f"after the restart")
    return f"all {n} messages of the final pass checked again after the restart"


def _run_clients_in_process(ctx, cids, out_queue=None):
    """Run clients cids as threads; return (or put on out_queue) their results."""
    results = []
    threads = [threading.Thread(target=worker, args=(ctx, cid, results), daemon=True,
                                name=f"client-{cid}") for cid in cids]
    for t in threads:
        t.start()
    limit = ctx.deadline + ctx.io_timeout * 6 + 60
    for t in threads:
        t.join(max(0.1, limit - time.monotonic()))
    v = Violations()
    ledger = Ledger()
    for rv, rl in list(results):
        v.merge(rv)
        ledger.merge(rl)
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        v.add("hang", f"clients still blocked {ctx.io_timeout * 6 + 60:.0f}s after the end: "
              f"{stuck[:10]}")
    if out_queue is not None:
        out_queue.put((v, ledger))
    return v, ledger


def run_clients(ctx, args):
    cids = list(range(1, args.clients + 1))
    if args.procs <= 1:
        return _run_clients_in_process(ctx, cids)
    mp = multiprocessing.get_context("fork")
    ctx.barrier = mp.Barrier(len(cids))
    q = mp.Queue()
    groups = [cids[i::args.procs] for i in range(args.procs)]
    procs = [mp.Process(target=_run_clients_in_process, args=(ctx, g, q), daemon=True)
             for g in groups if g]
    for p in procs:
        p.start()
    v = Violations()
    ledger = Ledger()
    limit = ctx.deadline + ctx.io_timeout * 6 + 90
    for _ in procs:
        try:
            rv, rl = q.get(timeout=max(1.0, limit - time.monotonic()))
            v.merge(rv)
            ledger.merge(rl)
        except Exception:                          # noqa: BLE001 - queue.Empty
            v.add("hang", "a client process did not report")
            break
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
    return v, ledger


# --------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------

def count_ops(ledger):
    """Commands sent (the "session:" counters count connections, not commands)."""
    return sum(n for k, n in ledger.ops.items() if not k.startswith("session:"))


def print_summary(args, info, ledger, v, examples):
    out = []
    w = out.append
    w("=" * 78)
    w(f"tern stress: seed {args.seed}, {args.clients} clients, {len(info['users'])} user(s), "
      f"{args.mailboxes} mailbox(es) each, {args.seconds:g} s, mix {info['mix']}, "
      f"procs {args.procs or 1}")
    w(f"server: {info['server']}")
    total = count_ops(ledger)
    w(f"operations: {total} in {info['elapsed']:.1f} s = {info['ops_per_s']:.0f} ops/s "
      f"(acknowledged: {ledger.acked_append} APPEND, {len(ledger.acked_smtp)} SMTP "
      f"deliveries)")
    for k, n in sorted(ledger.ops.items()):
        w(f"  {k:<42} {n:>8}")
    w(f"violations: {v.total()}" + ("" if v else " (none)"))
    for kind, n in sorted(v.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        w(f"  {kind:<42} {n:>8}")
    for kind, n in sorted(v.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        for i, ex in enumerate(v.examples[kind][:examples]):
            w(f"--- {kind} example {i + 1}: {ex['detail']}")
            if ex["context"]:
                w("    " + ex["context"].replace("\n", "\n    "))
    if info.get("chaos"):
        out.extend(info["chaos"].summary_lines(info["t0"]))
        cc = info["chaos_counts"]
        w(f"  sessions cut or failed by chaos (not violations): {sum(cc.values())}")
        for k, n in sorted(cc.items()):
            w(f"    {k:<40} {n:>8}")
        w(f"  sanitizer reports of the SIGSEGVs sent (ignored): "
          f"{info.get('injected_reports', 0)}")
    if info.get("memory_lines"):
        w("server memory and machine load over the mix:")
        out.extend(info["memory_lines"])
    w(f"server alive at the end: {info['alive']}; sanitizer reports: "
      f"{info['sanitizer'] or 'none'}; SIGTERM: {info['sigterm']}")
    if info.get("kept"):
        w(f"data kept in {info['kept']}")
    w(f"RESULT: {'FAIL' if v else 'PASS'} ({v.total()} violations, "
      f"{len(v.counts)} kinds)")
    print("\n".join(out), flush=True)


def main(argv=None):
    args = parse_args(argv)
    run_id = f"r{args.seed}x{os.urandom(3).hex()}"
    v = Violations()
    ledger = Ledger()
    try:
        server = ExternalServer(args) if args.external else OwnServer(args)
    except Exception as e:                         # noqa: BLE001
        print(f"stress: cannot start the server: {e}", file=sys.stderr)
        return 2
    info = {"server": server.describe(), "users": [u for u, _ in server.users],
            "mix": ",".join(f"{k}={w:g}" for k, w in args.mix.items())}
    try:
        ctx = Ctx(args, server.users, run_id, deadline=0.0,
                  barrier=threading.Barrier(args.clients))
        try:
            setup_mailboxes(ctx, v, ledger)
        except SessionOver:
            print("stress: set-up failed:", file=sys.stderr)
            for kind, exs in v.examples.items():
                print(f"  {kind}: {exs[0]['detail']}", file=sys.stderr)
            return 2
        print(f"stress: server {info['server']}; {args.clients} clients for "
              f"{args.seconds:g} s (seed {args.seed})", flush=True)
        sampler = MemorySampler(server, args.mem_interval)
        sampler.sample()                           # after set-up, before the mix
        sampler.start()
        t0 = time.monotonic()
        ctx.deadline = t0 + args.seconds
        chaos = None
        if args.chaos:
            # the clients' connection errors and temporary failures wait for classify()
            Violations.defer = chaos_mod.is_deferred
            chaos = chaos_mod.Chaos(server, ctx, *args.chaos, seed=args.chaos_seed,
                                    deadline=ctx.deadline, v=v,
                                    restart_limit=args.restart_limit)
            chaos.start()
        cv, cl = run_clients(ctx, args)
        elapsed = time.monotonic() - t0
        if chaos:
            chaos.stop.set()
            chaos.join(args.restart_limit + 60)
            Violations.defer = None
            info["chaos_counts"] = Counter()
            chaos_mod.classify(cv.pending, chaos.events, cv, info["chaos_counts"], t0)
            info["t0"] = t0
            cv.pending = []
            info["chaos"] = chaos
        sampler.stop.set()
        sampler.join(15)
        if server.alive():
            sampler.sample()                       # after the mix, before the final pass
        info["memory_lines"], info["memory"] = memory_report(sampler.samples)
        v.merge(cv)
        ledger.merge(cl)
        info["elapsed"] = elapsed
        info["ops_per_s"] = count_ops(cl) / max(elapsed, 1e-9)
        alive = server.alive()
        final = final_pass(ctx, v, ledger) if alive is not False else None
        if final is not None:
            check_final(ledger, final, v)
        else:
            rc = server.exit_status()
            how = f"killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0 \
                else f"exit status {rc}"
            v.add("server-died", f"the server is not running after the mix ({how}); "
                  f"end-of-run checks skipped",
                  server.log_text()[-3000:])
        info["alive"] = {True: "yes", False: "NO", None: "unknown"}[alive]
        # SIGTERM under load: must exit within the limit (a bound; the time is reported)
        # and, restarted, still hold everything it acknowledged.
        before_term = len(server.log_text())
        if alive and (not args.external or args.sigterm):
            info["sigterm"] = shutdown_under_load(ctx, server, args, v,
                                                  final if args.chaos else None)
        else:
            info["sigterm"] = "not sent"
        log = server.log_text()
        killed = chaos.killed() if chaos else {}
        if killed:
            # a sanitizer that catches the SIGSEGV we sent reports it: not a finding
            info["injected_reports"], log = chaos_mod.injected_reports(log, killed)
        # The master restarts a worker (or queue) process that dies: the run goes on,
        # but a death is a crash (or, after the SIGTERM, a process that had to be killed).
        # The deaths chaos caused are the expected ones.
        for m in CHILD_DEATH_RE.finditer(log):
            if int(m.group(1)) in killed:
                continue
            v.add("process-died" if m.start() < before_term else "shutdown-status",
                  m.group(0), log[max(0, m.start() - 1500):m.end() + 200])
        m = SANITIZER_RE.search(log)
        info["sanitizer"] = None
        if m:
            n = len(SANITIZER_RE.findall(log))
            info["sanitizer"] = f"{n} (see log)"
            v.add("sanitizer", f"{n} sanitizer report(s) in the server log",
                  log[max(0, m.start() - 200):][:4000])
    finally:
        info["kept"] = server.cleanup() if not args.external else None
    print_summary(args, info, ledger, v, args.examples)
    if args.json:
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "seed": args.seed,
               "clients": args.clients, "users": args.users, "mailboxes": args.mailboxes,
               "seconds": args.seconds, "procs": args.procs, "binary": info["server"],
               "ops": count_ops(ledger), "ops_per_s": round(info.get("ops_per_s", 0), 1),
               "violations": dict(v.counts), "alive": info.get("alive"),
               "sigterm": info.get("sigterm"), "sanitizer": info.get("sanitizer"),
               "settings": args.set, "memory": info.get("memory"),
               "acked_append": ledger.acked_append, "acked_smtp": len(ledger.acked_smtp),
               "chaos": None if not info.get("chaos") else {
                   "events": Counter(e.action for e in info["chaos"].events),
                   "outcomes": dict(info["chaos_counts"]),
                   "max_restore_s": max([e.recovered or 0 for e in info["chaos"].events]
                                        or [0]),
                   "injected_reports": info.get("injected_reports", 0)},
               "result": "FAIL" if v else "PASS"}
        with open(args.json, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return 1 if v else 0


if __name__ == "__main__":
    sys.exit(main())
