"""
test_auth_handover.py - issue 10: a reload that replaces the auth process hands its state
over, so no session handed from a login process to a mail worker is refused at the switch.

A session crosses the privilege boundary with a one-time token the auth process issued
(auth/token.c); the mail worker redeems it there. Before, a reload that changed a setting
started the new auth process at once beside the stopping one: a token issued by the old
one was unknown to the new one, so a client whose LOGIN was accepted got
"NO [AUTHENTICATIONFAILED]" (or a temporary failure when the redemption was in flight),
and logins in flight at the switch failed as temporary. Now the master starts the new
auth process when the old one has exited, the old one passes its live tokens on through
the master and tells its clients which requests it never read (auth/server.c).

Here real clients (imaplib, poplib) log in over implicit TLS (993, 995: relayed by the
login process) and plain connections (143, 110: the socket moves), and use the session
(SELECT, STAT), in a loop, while the configuration is reloaded several times with a
changed setting (each reload replaces the auth process). Every login with the right
password must succeed and give a working session. Bounded loops, waits on conditions, no
assertion on time.
"""

import imaplib
import os
import poplib
import re
import signal
import subprocess
import threading

import pytest

from test_imap_lib import add_user
from tern_util import IO_TIMEOUT, child_pids, tls_context, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a root master and run_user")

RELOADS = 8
PER_RELOAD = 12  # logins of each client kind after each reload before the next one
THREADS = 3      # client threads per kind (imaps, imap, pop3s, pop3)


def _status(srv):
    """`tern status` run directly: srv.cli() gives the data folder back to its owners after
    each command (chown of tern.db to run_user, then to auth_user), which races with a new
    auth process opening tern.db in the middle of a reload."""
    cmd = [str(srv.bin), "-c", str(srv.config_path), "status"]
    return subprocess.run(cmd, text=True, capture_output=True, timeout=30, check=True).stdout


def _pids(srv, kind):
    """Pids of the live processes of one kind that do not drain (tern status)."""
    out = _status(srv)
    return [int(m.group(1)) for m in re.finditer(rf"^{kind}: pid (\d+), generation \d+(.*)$",
                                                  out, re.M)
            if not m.group(2).startswith(" (draining)")]


def _imap_session(srv, user, is_tls):
    if is_tls:
        c = imaplib.IMAP4_SSL(srv.host, srv.ports["imaps"], ssl_context=tls_context(),
                              timeout=IO_TIMEOUT)
    else:
        c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=IO_TIMEOUT)
    try:
        try:
            c.login(user, "pw")
        except imaplib.IMAP4.error as e:
            return "login", repr(e)
        try:
            typ, data = c.select("INBOX")
            if typ != "OK":
                return "session", f"SELECT {typ} {data!r}"
            c.logout()
        except (imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError) as e:
            return "session", repr(e)
        return "ok", None
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


def _pop3_session(srv, user, is_tls):
    if is_tls:
        p = poplib.POP3_SSL(srv.host, srv.ports["pop3s"], context=tls_context(),
                            timeout=IO_TIMEOUT)
    else:
        p = poplib.POP3(srv.host, srv.ports["pop3"], timeout=IO_TIMEOUT)
    try:
        try:
            p.user(user)
            p.pass_("pw")
        except poplib.error_proto as e:
            return "login", repr(e)
        try:
            p.stat()
            p.quit()
        except (poplib.error_proto, OSError) as e:
            return "session", repr(e)
        return "ok", None
    finally:
        try:
            p.close()
        except OSError:
            pass


class LoginLoop:
    """One thread per client kind: log in, use the session, log out; record outcomes."""

    KINDS = [("imaps", _imap_session, True), ("imap", _imap_session, False),
             ("pop3s", _pop3_session, True), ("pop3", _pop3_session, False)]

    def __init__(self, srv, max_each=3000):
        self.srv = srv
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = {k: 0 for k, _, _ in self.KINDS}
        self.failures = []  # (kind, stage, what)
        self.threads = []
        for kind, fn, is_tls in self.KINDS:
            for k in range(THREADS):
                user = add_user(srv, f"ho-{kind}-{k}@example.test", "pw")  # one maildrop each
                t = threading.Thread(target=self._run, args=(kind, fn, user, is_tls, max_each))
                self.threads.append(t)
        for t in self.threads:
            t.start()

    def _run(self, kind, fn, user, is_tls, max_each):
        for _ in range(max_each):
            if self.stop_event.is_set():
                return
            try:
                stage, what = fn(self.srv, user, is_tls)
            except OSError as e:  # connect, TLS handshake, greeting
                stage, what = "connect", repr(e)
            with self.lock:
                if stage == "ok":
                    self.ok[kind] += 1
                else:
                    self.failures.append((kind, stage, what))

    def min_ok(self):
        with self.lock:
            return min(self.ok.values())

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(120)


def test_reload_replacing_auth_refuses_no_handed_over_session(tern_factory):
    srv = tern_factory({"worker_processes": "2"})
    loop = LoginLoop(srv)
    try:
        wait_for(lambda: loop.min_ok() >= PER_RELOAD, timeout=120,
                 what="logins of every kind under way")
        for gen in range(1, RELOADS + 1):
            auth = _pids(srv, "auth")
            # a changed setting: the auth process cannot tell which settings it reads, so
            # it is replaced (master.c, master_reload)
            srv.write_config({"worker_processes": "2", "smtp.max_recipients": str(70 + gen)})
            since = srv.log_offset()
            os.kill(srv.pid, signal.SIGHUP)
            srv.wait_log(rf"reload: configuration reloaded, generation {gen}\b", since=since,
                         timeout=30)
            wait_for(lambda: len(_pids(srv, "auth")) == 1 and _pids(srv, "auth") != auth,
                     timeout=60, what="the new auth process")
            before = dict(loop.ok)
            wait_for(lambda: all(loop.ok[k] >= before[k] + PER_RELOAD for k in before),
                     timeout=120, what=f"logins of every kind after reload {gen}")
            # the next reload only once the old generation is gone (a second reload stops
            # a draining generation at once, cutting its sessions: not what is tested)
            wait_for(lambda: len(_pids(srv, "worker")) == 2 and
                     "(draining)" not in _status(srv),
                     timeout=60, what=f"the generation before reload {gen} to exit")
    finally:
        loop.stop()
    log = srv.log_text()
    warnings = [line for line in log.splitlines() if re.search(r"warning:|error:", line)]
    assert not loop.failures, (f"{len(loop.failures)} failed of "
                               f"{sum(loop.ok.values()) + len(loop.failures)}: "
                               f"{loop.failures[:5]}; the server's warnings: {warnings[:12]}")
    assert "handed-over session refused" not in log
    assert not re.search(r"cannot (hand|connect|pass)", log), "noise at reload"
    assert len(_pids(srv, "auth")) == 1 and len(child_pids(srv.pid)) > 0


def _imap_login_reply(srv, user, password):
    c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=IO_TIMEOUT)
    try:
        c.login(user, password)
        c.logout()
        return "OK"
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


def test_reload_replacing_auth_keeps_the_failed_login_counts(tern_factory):
    """The failed-login table's last state passes too: the new auth process reads
    penalty.db after the old one's last save (before, it read the file while the old one
    still counted, and the old one's last save was refused: failures of the last second
    before a reload were forgotten). Two failures before the reload and one after lock
    the (address, account) pair at auth.account_max_failures = 3."""
    srv = tern_factory({"worker_processes": "2", "auth.account_max_failures": "3",
                        "auth.max_failures": "100"})
    user = add_user(srv, "pen@example.test", "right")
    for _ in range(2):
        assert "AUTHENTICATIONFAILED" in _imap_login_reply(srv, user, "guess")
    auth = _pids(srv, "auth")
    srv.write_config({"worker_processes": "2", "auth.account_max_failures": "3",
                      "auth.max_failures": "100", "smtp.max_recipients": "71"})
    since = srv.log_offset()
    os.kill(srv.pid, signal.SIGHUP)  # at once: the old process has not saved the table yet
    srv.wait_log(r"reload: configuration reloaded, generation 1\b", since=since, timeout=30)
    wait_for(lambda: len(_pids(srv, "auth")) == 1 and _pids(srv, "auth") != auth,
             timeout=60, what="the new auth process")
    assert "AUTHENTICATIONFAILED" in _imap_login_reply(srv, user, "guess")
    # the third failure counted with the two before the reload: the pair is locked
    assert "UNAVAILABLE" in _imap_login_reply(srv, user, "right")
    srv.wait_log(r"login refused \(blocked\): user=<pen@example\.test>", since=since)


def _queued_seqpacket_bytes(pid):
    """Bytes waiting unread in pid's seqpacket sockets (its channels: a session handed to
    a mail worker waits there while the worker is stopped), as ss lists them."""
    out = subprocess.run(["ss", "-xpnH"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[2]) for line in out.splitlines()
               if line.split()[:1] == ["u_seq"] and f"pid={pid}," in line)


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_token_lost_with_a_crashed_auth_process_is_a_temporary_failure(tern_factory, proto):
    """A crash of the auth process (SIGKILL) passes no tokens on: a session the login
    process handed over just before, with the right password, cannot be confirmed by the
    new one. The client must get a temporary failure (NO [UNAVAILABLE], -ERR [SYS/TEMP]),
    never "authentication failed", which would make it ask its user for a password that
    was right. Made deterministic: the only mail worker is stopped (SIGSTOP) until the
    hand-over waits in its channel, the auth process is killed and restarted, then the
    worker goes on and asks the new one."""
    srv = tern_factory({"worker_processes": "1"})
    user = add_user(srv, f"crash-{proto}@example.test", "pw")
    worker, auth = _pids(srv, "worker")[0], _pids(srv, "auth")
    reply = {}

    def login():
        try:
            if proto == "imap":
                c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=60)
                try:
                    c.login(user, "pw")
                    reply["text"] = "OK"
                except imaplib.IMAP4.error as e:
                    reply["text"] = str(e)
                c.shutdown()
            else:
                c = poplib.POP3(srv.host, srv.ports["pop3"], timeout=60)
                c.user(user)
                try:
                    reply["text"] = c.pass_("pw").decode()
                except poplib.error_proto as e:
                    reply["text"] = str(e)
                c.close()
        except OSError as e:
            reply["text"] = f"connection: {e!r}"

    queued = _queued_seqpacket_bytes(worker)
    os.kill(worker, signal.SIGSTOP)
    try:
        t = threading.Thread(target=login)
        t.start()
        wait_for(lambda: _queued_seqpacket_bytes(worker) > queued, timeout=30,
                 what="the hand-over waiting in the stopped worker's channel")
        since = srv.log_offset()
        os.kill(auth[0], signal.SIGKILL)
        wait_for(lambda: len(_pids(srv, "auth")) == 1 and _pids(srv, "auth") != auth,
                 timeout=60, what="the restarted auth process")
    finally:
        os.kill(worker, signal.SIGCONT)
    t.join(90)
    assert not t.is_alive()
    srv.wait_log(r"handed-over session refused: the auth process did not confirm its token",
                 since=since, timeout=30)
    if proto == "imap":
        assert "[UNAVAILABLE]" in reply["text"], reply
    else:
        assert "[SYS/TEMP]" in reply["text"], reply
    # the user's next login works (the new auth process, the same worker)
    if proto == "imap":
        c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=IO_TIMEOUT)
        assert c.login(user, "pw")[0] == "OK"
        c.logout()
    else:
        c = poplib.POP3(srv.host, srv.ports["pop3"], timeout=IO_TIMEOUT)
        c.user(user)
        assert c.pass_("pw").startswith(b"+OK")
        c.quit()
