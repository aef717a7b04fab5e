"""
chaos.py - process deaths and reloads during the stress mix (`stress.py --chaos`).

While the clients run, one thread of the tester, at random bounded intervals (seeded),
does one of:
  hup          SIGHUP to the master with the configuration unchanged (a new generation of
               workers and login processes; the old one drains; the auth process stays)
  reload       tern.conf rewritten with one setting changed, then SIGHUP: the auth
               process is replaced too (master.c master_reload)
  kill-worker  SIGSEGV or SIGKILL to a mail worker of the current generation
  kill-login   ... to a login process
  kill-auth    ... to the auth process
  kill-queue   ... to the queue process
PIDs come from `tern status` and are checked to be children of our own master
(/proc/<pid>/stat) before a signal is sent. After each event the thread waits until the
master has replaced what died (`tern status` shows every kind again with a new pid) and a
new connection is served (IMAP LOGIN, SMTP EHLO); how long that took is recorded, and a
bound (`restart_limit`) exceeded is a violation (`no-restart`, `not-served`).

What the clients report during chaos is sorted at the end (classify()): a session ended
by a connection error (kinds in CUT_KINDS) is a "cut" when an event that can end sessions
(a kill of a worker or login process, a reload: the generation draining from the reload
before is stopped) happened after the session started and before the error, within the
time that event took to recover; a temporary failure (`NO [UNAVAILABLE]`, an SMTP 4xx,
`-ERR [SYS/TEMP]`) is "temporary" within the window of an event that can cause one
(TEMPORARY: not the death of a login or queue process). Everything else stays a
violation of its kind: in particular a LOGIN refused with `[AUTHENTICATIONFAILED]` after
the correct password. (Such a refusal was once expected while the auth process was
replaced: its one-time tokens died with it. A reload now hands them over, and a worker
answers a token it cannot confirm, after a crash of the auth process, with a temporary
failure.)
"""

import imaplib
import os
import random
import re
import signal
import smtplib
import threading
import time

# kinds a client reports when its connection broke ("connect": reset before the greeting
# by a process that died after accepting it; a refused connection is never a cut)
CUT_KINDS = {"disconnect", "bye", "connect"}
# kinds whose detail may show a temporary failure (classified by TEMP_RE)
TEMP_KINDS_PREFIX = ("no-", "smtp", "pop3-err")
TEMP_RE = re.compile(r"\[UNAVAILABLE\]|\[SYS/TEMP\]|-> 4\d\d ")

ACTIONS = ("hup", "reload", "kill-worker", "kill-login", "kill-auth", "kill-queue")
# events that can end an established session: its process died or was told to stop
CUTTING = {"hup", "reload", "kill-worker", "kill-login"}
# events after which a request may fail temporarily: the auth process is away (logins,
# directory and quota lookups), a worker died with a handoff or delivery in flight, or
# a reload's draining generation turned one away
TEMPORARY = {"hup", "reload", "kill-auth", "kill-worker"}
SIGNALS = (signal.SIGSEGV, signal.SIGKILL)
# `tern status`: "worker: pid 123, generation 2 (draining), up 5 s, ..."
STATUS_RE = re.compile(r"^(worker|login|auth|queue): pid (\d+), generation (\d+)"
                       r"( \(draining\))?", re.M)
MASTER_RE = re.compile(r"^master: pid (\d+),.*generation (\d+)", re.M)
GRACE = 2.0   # seconds after an event's recovery in which its effects may still show


def parse_spec(text):
    """--chaos PERIOD[,ACTION...]: mean seconds between events and the actions to draw
    from (default all). Raises ValueError."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    period = float(parts[0])
    if not 0.2 <= period <= 3600:
        raise ValueError("period out of range")
    actions = tuple(parts[1:]) or ACTIONS
    for a in actions:
        if a not in ACTIONS:
            raise ValueError(f"unknown action {a}")
    return period, actions


class Event:
    """One thing chaos did: when (monotonic), what, to which process, how it ended."""

    def __init__(self, t, action, kind=None, pid=None, sig=None):
        self.t, self.action, self.kind, self.pid, self.sig = t, action, kind, pid, sig
        self.end = None          # monotonic time the server was whole and serving again
        self.recovered = None    # seconds until `tern status` showed the replacement
        self.served = None       # seconds until a new connection was served
        self.note = ""

    def describe(self):
        what = self.action
        if self.pid:
            what += f" pid {self.pid} with {signal.Signals(self.sig).name}"
        rec = f"restarted in {self.recovered:.2f} s" if self.recovered is not None else \
            "NOT restarted"
        srv = f"served in {self.served:.2f} s" if self.served is not None else "NOT served"
        return f"{what}: {rec}, {srv}{'; ' + self.note if self.note else ''}"


class Chaos(threading.Thread):
    """The chaos thread of one run against our own server (stress.OwnServer)."""

    def __init__(self, server, ctx, period, actions, seed, deadline, v,
                 restart_limit=70.0):
        super().__init__(daemon=True, name="chaos")
        self.server, self.ctx, self.v = server, ctx, v
        self.period, self.actions = period, actions
        self.rng = random.Random(f"chaos/{seed}")
        self.deadline = deadline
        self.restart_limit = restart_limit
        self.events = []
        self.stop = threading.Event()
        self.reload_toggle = False
        self.wanted = None       # {kind: count} of the current generation

    # --- the server's processes -----------------------------------------------------------
    def status(self):
        """(master generation, [(kind, pid, generation, is_draining)]) or (None, [])."""
        try:
            text = self.server.status_text(20) or ""
        except Exception:                          # noqa: BLE001 - timeout while restarting
            return None, []
        m = MASTER_RE.search(text)
        procs = [(k, int(p), int(g), bool(d)) for k, p, g, d in STATUS_RE.findall(text)]
        return (int(m.group(2)) if m else None), procs

    def is_our_child(self, pid):
        """Only tern's own children get a signal: the parent in /proc/<pid>/stat is our
        master."""
        try:
            stat = open(f"/proc/{pid}/stat").read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        return ppid == self.server.srv.pid

    def current(self, procs, gen):
        return [(k, p) for k, p, g, d in procs if not d and (k in ("auth", "queue") or g == gen)]

    def is_whole(self, gen, procs, gone):
        """Every kind of the current generation at its count, none of the pids in gone."""
        live = self.current(procs, gen)
        if any(p in gone for _, p in live):
            return False
        counts = {}
        for k, _ in live:
            counts[k] = counts.get(k, 0) + 1
        return all(counts.get(k, 0) >= n for k, n in self.wanted.items())

    # --- one event -----------------------------------------------------------------------
    def run(self):
        gen, procs = self.status()
        self.wanted = {}
        for k, _ in self.current(procs, gen):
            self.wanted[k] = self.wanted.get(k, 0) + 1
        while not self.stop.is_set():
            pause = self.rng.uniform(0.5 * self.period, 1.5 * self.period)
            if time.monotonic() + pause >= self.deadline or self.stop.wait(pause):
                return
            action = self.rng.choice(self.actions)
            try:
                self.fire(action)
            except Exception as e:                 # noqa: BLE001 - a tester bug
                self.v.add("tester-error", f"chaos {action}: {e!r}")
                return

    def fire(self, action):
        gen, procs = self.status()
        if gen is None:
            self.v.add("not-served", f"chaos {action}: `tern status` did not answer")
            return
        if action in ("hup", "reload"):
            ev = Event(time.monotonic(), action)
            if action == "reload":
                # a changed setting the auth process reads: master_reload replaces it
                self.reload_toggle = not self.reload_toggle
                self.server.rewrite_config({"auth.failure_delay":
                                            "6" if self.reload_toggle else "5"})
            since = self.server.srv.log_offset()
            ev.t = time.monotonic()
            os.kill(self.server.srv.pid, signal.SIGHUP)
            self.events.append(ev)
            try:
                self.server.srv.wait_log(r"reload: configuration reloaded, generation \d+",
                                         timeout=self.restart_limit, since=since)
            except AssertionError:
                ev.note = "no 'configuration reloaded' line"
                self.v.add("no-restart", f"chaos {action}: the master did not log the reload")
                ev.end = time.monotonic()
                return
            self.wait_whole(ev, set(), new_gen=gen + 1)
            return
        kind = action.split("-", 1)[1]
        targets = [p for k, p in self.current(procs, gen) if k == kind and self.is_our_child(p)]
        if not targets:
            return                   # (e.g. still being restarted after the last event)
        pid = self.rng.choice(targets)
        sig = self.rng.choice(SIGNALS)
        ev = Event(time.monotonic(), action, kind, pid, sig)
        self.events.append(ev)
        os.kill(pid, sig)
        self.wait_whole(ev, {pid}, new_gen=gen)

    def wait_whole(self, ev, gone, new_gen):
        """Wait until the master shows the whole current generation again (without the
        pids in gone), then until a new connection is served."""
        limit = ev.t + self.restart_limit
        while time.monotonic() < limit:
            gen, procs = self.status()
            if gen is not None and gen >= new_gen and self.is_whole(gen, procs, gone):
                ev.recovered = time.monotonic() - ev.t
                break
            time.sleep(0.1)
        else:
            self.v.add("no-restart", f"chaos {ev.action} (pid {ev.pid}): the master did not "
                       f"restore every process within {self.restart_limit:g} s",
                       self.server.srv.log_text()[-3000:])
        t_served = self.probe(limit)
        if t_served is None:
            self.v.add("not-served", f"chaos {ev.action} (pid {ev.pid}): no new connection "
                       f"served within {self.restart_limit:g} s",
                       self.server.srv.log_text()[-3000:])
        else:
            ev.served = t_served - ev.t
        ev.end = time.monotonic()

    def probe(self, limit):
        """A new IMAP login and an SMTP EHLO succeed (temporary failures retried): the
        time they did, or None by limit."""
        user, pw = self.ctx.users[0]
        while time.monotonic() < limit:
            try:
                m = imaplib.IMAP4(self.ctx.host, self.ctx.imap_port, timeout=10)
                try:
                    m.login(user, pw)
                    m.logout()
                finally:
                    try:
                        m.shutdown()
                    except OSError:
                        pass
                with smtplib.SMTP(self.ctx.host, self.ctx.smtp_port, timeout=10) as s:
                    code, _ = s.ehlo("probe.example.org")
                    if code != 250:
                        raise smtplib.SMTPException(code)
                return time.monotonic()
            except (OSError, imaplib.IMAP4.error, smtplib.SMTPException, EOFError):
                time.sleep(0.1)
        return None

    # --- the end -------------------------------------------------------------------------
    def killed(self):
        """{pid: signal} of every process chaos killed."""
        return {e.pid: e.sig for e in self.events if e.pid}

    def summary_lines(self, t0, timeline=40):
        out = [f"chaos: {len(self.events)} events (period {self.period:g} s):"]
        by = {}
        for e in self.events:
            by.setdefault(e.action, []).append(e)
        for action, evs in sorted(by.items()):
            rec = [e.recovered for e in evs if e.recovered is not None]
            srv = [e.served for e in evs if e.served is not None]
            out.append(f"  {action:<12} {len(evs):>4}  restored max "
                       f"{max(rec) if rec else float('nan'):.2f} s, served again max "
                       f"{max(srv) if srv else float('nan'):.2f} s")
        out.append("  timeline (s into the mix):")
        for e in self.events[:timeline]:
            out.append(f"    +{e.t - t0:7.2f}  {e.describe()}")
        if len(self.events) > timeline:
            out.append(f"    ... {len(self.events) - timeline} more")
        return out


def classify(pending, events, v, counts, t0):
    """Sort the clients' deferred reports (model.Violations.pending) by the events:
    cut / temporary go to counts, the rest back into v as violations
    (with their time and the nearest event, t0: the start of the mix)."""
    for kind, t, start, detail, context in pending:
        cat = None
        for e in events:
            end = (e.end if e.end is not None else time.monotonic()) + GRACE
            if not e.t <= t <= end:
                continue
            if kind in CUT_KINDS and e.action in CUTTING and start is not None and \
                    start <= e.t and "Refused" not in detail:
                cat = "cut"
            elif kind.startswith(TEMP_KINDS_PREFIX) and e.action in TEMPORARY and \
                    TEMP_RE.search(detail):
                cat = "temporary"
            if cat:
                break
        if cat:
            counts[f"{cat} ({kind})"] += 1
            continue
        near = min(events, key=lambda e: abs(e.t - t), default=None)
        when = f" [at +{t - t0:.2f} s, session from " \
               f"+{(start if start is not None else t) - t0:.2f} s; nearest event: " + \
               (f"+{near.t - t0:.2f} s {near.describe()}]" if near else "none]")
        v.add(kind, detail + when, context)


SANITIZER_PID_RE = re.compile(r"==(\d+)==\s*(?:ERROR: \w+Sanitizer: SEGV|"
                              r"\w+Sanitizer:DEADLYSIGNAL)")


def injected_reports(log, killed):
    """Sanitizer reports that are our own SIGSEGV: a sanitizer catches the signal we sent
    and reports a SEGV from the process we sent it to. Returns (their count, the log with
    those reports' lines removed)."""
    segv = {p for p, s in killed.items() if s == signal.SIGSEGV}
    lines = log.splitlines(keepends=True)
    n = 0
    out = []
    for ln in lines:
        m = SANITIZER_PID_RE.search(ln)
        if m and int(m.group(1)) in segv:
            n += ln.find("ERROR") >= 0
            continue
        out.append(ln)
    return n, "".join(out)


def is_deferred(kind):
    """Violations.defer during chaos: reports a chaos event may explain."""
    return kind in CUT_KINDS or kind.startswith(TEMP_KINDS_PREFIX)
