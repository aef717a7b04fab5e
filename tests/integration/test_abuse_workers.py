"""The abuse defences across worker processes (issue 13 on the process model of issue 10).

With several workers a client's connections land in different processes. The state the
defences count must still be one for the whole server:
  - failed logins: the policy's table lives in the auth process; failures made through
    connections in different workers add up to one pair lock, which every worker then
    applies, which `tern auth blocks` lists and lifts (the block is logged by the auth
    process);
  - rate limits: the counters live in the master's shared anvil, so a client gets
    ratelimit.* once, not once per worker;
  - and both work with master_process = no (one process).
Which worker holds a connection is read from the pid in its log lines ("tern/imap[pid]:
Login: ...", "tern/smtpd[pid]: connect from ..."). No assertion on time.
"""
import imaplib
import os
import re
import signal
import smtplib
import socket

import pytest

from tern_util import sasl_plain, wait_for

imaplib.Commands.setdefault("UNAUTHENTICATE", ("AUTH", "SELECTED"))  # RFC 8437

SESSIONS_MAX = 12  # logins made to find sessions in different workers


def _pids(srv, kind):
    """Pids of the live processes of one kind ("worker", "auth") from tern status."""
    out = srv.cli("status").stdout
    return [int(p) for p in re.findall(rf"^{kind}: pid (\d+)", out, re.M)]


def _spread_sessions(srv, want_workers):
    """IMAP sessions logged in as alice, each with the pid of its worker, until they span
    want_workers workers (the master balances accepts over the workers)."""
    sessions = []
    for _ in range(SESSIONS_MAX):
        since = srv.log_offset()
        m = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
        m.login("alice@example.test", "alicepw")
        hit = srv.wait_log(r"tern/imap\[(\d+)\]: Login: user=<alice@example\.test>", since=since)
        sessions.append((m, int(hit.group(1))))
        if len({pid for _, pid in sessions}) >= want_workers:
            return sessions
    pytest.fail(f"{SESSIONS_MAX} sessions did not span {want_workers} workers: "
                f"{[pid for _, pid in sessions]}")


def _login_again(m, user, password):
    """LOGIN as user on the same connection (UNAUTHENTICATE first when logged in): 'OK'
    or the NO text."""
    if m.state != "NONAUTH":
        typ, _ = m._simple_command("UNAUTHENTICATE")
        assert typ == "OK"
        m.state = "NONAUTH"
    try:
        m.login(user, password)
        return "OK"
    except imaplib.IMAP4.error as e:
        return str(e)


def _close_all(sessions):
    for m, _ in sessions:
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def test_failures_through_different_workers_lock_the_pair(tern_factory):
    srv = tern_factory({"worker_processes": 3, "auth.account_max_failures": 4,
                        "auth.max_failures": 100})
    sessions = _spread_sessions(srv, 3)
    by_worker = {}
    for m, pid in sessions:
        by_worker.setdefault(pid, []).append(m)
    # four wrong passwords for bob, going round the workers: no worker sees more than two
    workers = sorted(by_worker)
    order = [by_worker[workers[i % len(workers)]][0] for i in range(4)]
    failed_in = set()
    for m in order:
        since = srv.log_offset()
        assert "AUTHENTICATIONFAILED" in _login_again(m, "bob@example.test", "guess")
        hit = srv.wait_log(r"tern/imap\[(\d+)\]: login failed: user=<bob@example\.test>",
                           since=since)
        failed_in.add(int(hit.group(1)))
    assert len(failed_in) >= 2, failed_in
    # the lock: counted and logged by the auth process, not by any worker
    hit = srv.wait_log(r"tern/imap\[(\d+)\]: warning: block: rip=127\.0\.0\.1, "
                       r"user=<bob@example\.test>, 4 failed logins")
    assert int(hit.group(1)) in _pids(srv, "auth"), hit.group(0)
    assert int(hit.group(1)) not in by_worker
    # every worker refuses bob's right password from here now; alice still gets in
    for pid in workers:
        assert "UNAVAILABLE" in _login_again(by_worker[pid][0], "bob@example.test", "bobpw")
        assert _login_again(by_worker[pid][0], "alice@example.test", "alicepw") == "OK"
    # SMTP AUTH (a worker too) asks the same table
    s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30)
    s.ehlo("client.test")
    assert s.docmd("AUTH", "PLAIN " + sasl_plain("bob@example.test", "bobpw"))[0] == 454
    s.quit()
    # `tern auth blocks` reaches the auth process's table: it lists and lifts the lock
    out = srv.cli("auth", "blocks").stdout
    assert re.search(r"^127\.0\.0\.1\s+bob@example\.test\s+4\s", out, re.M), out
    assert srv.cli("auth", "blocks", "clear", "127.0.0.1",
                   "bob@example.test").stdout.strip() == "cleared 1"
    for pid in workers:
        assert _login_again(by_worker[pid][0], "bob@example.test", "bobpw") == "OK"
    _close_all(sessions)


def _smtp_connect(srv):
    """An SMTP connection that has read its first reply line; (socket, line)."""
    sock = socket.create_connection((srv.host, srv.ports["smtp"]), 30)
    line = sock.makefile("rb").readline().decode()
    return sock, line


def test_rate_limit_is_not_multiplied_by_the_workers(tern_factory):
    limit = 9
    srv = tern_factory({"worker_processes": 3, "ratelimit.connections": limit})
    since = srv.log_offset()
    held = []
    # connections kept open, so the master's balancing spreads them over the workers
    for _ in range(limit):
        sock, line = _smtp_connect(srv)
        assert line.startswith("220 "), line
        held.append(sock)
    connects = r"tern/smtpd\[(\d+)\]: connect from localhost"
    wait_for(lambda: len(re.findall(connects, srv.log_text()[since:])) >= limit,
             what=f"{limit} connect lines")
    pids = {int(p) for p in re.findall(connects, srv.log_text()[since:])}
    assert len(pids) >= 2, f"the {limit} connections all landed in one worker: {pids}"
    # each worker saw fewer than the limit; together they saw it: the next one is refused
    sock, line = _smtp_connect(srv)
    assert line.startswith("421 4.7.0 mail.example.test Error: too many connections from "
                           "127.0.0.1"), line
    srv.wait_log(r"warning: Connection rate limit exceeded: %d from localhost\[127\.0\.0\.1\] "
                 r"for service smtp" % (limit + 1))
    for s in held + [sock]:
        s.close()


def test_user_message_limit_over_workers(tern_factory):
    """An authenticated user's MAIL limit holds over sessions in different workers."""
    srv = tern_factory({"worker_processes": 3, "ratelimit.user_messages": 2})
    sessions, pids = [], set()
    for _ in range(SESSIONS_MAX):
        since = srv.log_offset()
        s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30)
        s.ehlo("client.test")
        hit = srv.wait_log(r"tern/smtpd\[(\d+)\]: connect from", since=since)
        sessions.append(s)
        pids.add(int(hit.group(1)))
        if len(pids) >= 2 and len(sessions) >= 3:
            break
    assert len(pids) >= 2, pids
    codes = []
    for s in sessions[-3:]:
        s.login("alice@example.test", "alicepw")
        codes.append(s.mail("alice@example.test")[0])
    assert codes == [250, 250, 450], codes
    for s in sessions:
        s.close()


def test_single_process_mode(tern_factory):
    """master_process = no: the same policy (its table and the control socket in the one
    process) and the same rate limits."""
    srv = tern_factory({"master_process": "no", "auth.account_max_failures": 2,
                        "ratelimit.connections": 3})
    m = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
    for _ in range(2):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login("bob@example.test", "guess")
    srv.wait_log(r"warning: block: rip=127\.0\.0\.1, user=<bob@example\.test>, 2 failed")
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        m.login("bob@example.test", "bobpw")
    assert "bob@example.test" in srv.cli("auth", "blocks").stdout
    assert srv.cli("auth", "blocks", "clear", "--all").stdout.strip() == "cleared 1"
    m.login("bob@example.test", "bobpw")
    m.logout()
    # IMAP connections are not rate-limited; three SMTP connections are, the fourth not
    held = []
    for _ in range(3):
        sock, line = _smtp_connect(srv)
        assert line.startswith("220 "), line
        held.append(sock)
    sock, line = _smtp_connect(srv)
    assert line.startswith("421 4.7.0 "), line
    for s in held + [sock]:
        s.close()


def _saved_blocks(srv):
    """(address, account) of the blocks <data_dir>/penalty.db holds now."""
    import sqlite3
    path = srv.data_dir / "penalty.db"
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return {(a, u) for a, u in db.execute(
            "SELECT address, account FROM entry WHERE blocked_until > 0")}
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()


# Under ASan (TERN_SANITIZED=1) a SIGSEGV is reported by the sanitizer as a crash of its
# own, which the fixture counts as a report: SIGABRT stands in for it (test_process_model).
CRASH = ("SIGABRT" if os.environ.get("TERN_SANITIZED", "") not in ("", "0") else "SIGSEGV")


@pytest.mark.parametrize("crash", ["SIGKILL", CRASH])
def test_block_survives_an_auth_process_restart(tern_factory, crash):
    """The failed-login table is saved by the auth process (<data_dir>/penalty.db): an
    attacker who crashes it (or waits for a restart) does not get a clean slate."""
    srv = tern_factory({"auth.account_max_failures": 3, "auth.max_failures": 100})
    m = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
    for _ in range(3):
        assert "AUTHENTICATIONFAILED" in _login_again(m, "bob@example.test", "guess")
    srv.wait_log(r"warning: block: rip=127\.0\.0\.1, user=<bob@example\.test>, 3 failed")
    wait_for(lambda: ("127.0.0.1", "bob@example.test") in _saved_blocks(srv),
             what="the block saved to penalty.db")
    m.logout()
    (auth_pid,) = _pids(srv, "auth")
    since = srv.log_offset()
    os.kill(auth_pid, getattr(signal, crash))
    srv.wait_log(rf"process tern/auth pid {auth_pid} killed by signal", since=since)
    hit = srv.wait_log(r"failed-login table: (\d+) entries restored from .*penalty\.db",
                       since=since, timeout=60)
    assert int(hit.group(1)) >= 1

    def right_password_refused():
        c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
        try:
            return _login_again(c, "alice@example.test", "alicepw") == "OK" and \
                _login_again(c, "bob@example.test", "bobpw")
        finally:
            try:
                c.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
    # the new auth process still refuses bob's right password from here; alice gets in
    result = wait_for(right_password_refused, timeout=60, what="logins after the restart")
    assert "UNAVAILABLE" in result, result
    (new_auth,) = _pids(srv, "auth")
    assert new_auth != auth_pid
    out = srv.cli("auth", "blocks").stdout
    assert re.search(r"^127\.0\.0\.1\s+bob@example\.test\s+3\s", out, re.M), out
    # lifted by the admin: gone from the file too, and bob gets in
    assert srv.cli("auth", "blocks", "clear", "127.0.0.1",
                   "bob@example.test").stdout.strip() == "cleared 1"
    wait_for(lambda: not _saved_blocks(srv), what="the lifted block gone from penalty.db")
    c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
    assert _login_again(c, "bob@example.test", "bobpw") == "OK"
    c.logout()


def test_block_survives_a_restart_in_one_process(tern_factory):
    """master_process = no: the one process holds and saves the table; a block outlives
    `tern serve` being stopped and started again."""
    srv = tern_factory({"master_process": "no", "auth.account_max_failures": 2,
                        "auth.max_failures": 100})
    m = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
    for _ in range(2):
        assert "AUTHENTICATIONFAILED" in _login_again(m, "bob@example.test", "guess")
    m.logout()
    srv.wait_log(r"warning: block: rip=127\.0\.0\.1, user=<bob@example\.test>, 2 failed")
    srv.stop()
    since = srv.log_offset()
    srv.start()
    srv.wait_log(r"failed-login table: \d+ entries restored", since=since)
    m = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
    assert "UNAVAILABLE" in _login_again(m, "bob@example.test", "bobpw")
    assert _login_again(m, "alice@example.test", "alicepw") == "OK"
    m.logout()
