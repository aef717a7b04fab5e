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
import re
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
