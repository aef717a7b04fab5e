"""
test_imap_idle.py - IDLE keepalives and time limit (RFC 2177 §3): an idling client hears
"* OK Still here" periodically (every imap.timeout/2 here, at most every 120 s), DONE
still ends the IDLE normally, and an IDLE that lasts imap.timeout (the IDLE limit; 30
minutes by default) without DONE ends with an untagged BYE and the connection closed.
"""

import re

import pytest

from test_imap_lib import add_user, converse, deliver_file, imap_client, sample_message
from tern_util import child_pids, fd_targets, send_mail, wait_for


def test_idle_keepalive_then_done_then_limit(tern_factory):
    srv = tern_factory({"imap.timeout": "4"})
    add_user(srv, "idler@example.test", "idlepw")
    deliver_file(srv, "idler@example.test", sample_message(1))
    c = imap_client(srv)
    converse(c, [("a LOGIN idler@example.test idlepw", r"^a OK"),
                 ("b SELECT INBOX", r"^b OK"),
                 ("c IDLE", r"^\+ ")])
    converse(c, [(None, r"^\* OK Still here\r$")], timeout=20)
    converse(c, [("DONE", r"^c OK Idle completed")])
    # a second IDLE left alone: keepalives, then the limit (no DONE ever comes)
    converse(c, [("d IDLE", r"^\+ ")])
    converse(c, [(None, r"^\* OK Still here\r$")], timeout=20)
    got = converse(c, [(None, r"^\* BYE IDLE time limit reached\.\r$")], timeout=30)[0]
    assert "d OK" not in got
    assert c.is_closed(timeout=10)


def _index_descriptors(pid):
    """Descriptors open on some user's index.db (or its -wal) in the server process that
    holds the most: each process (the workers, the queue process) has its own pool."""
    return max(sum("/index.db" in target for target in fd_targets(p, with_children=False))
               for p in [pid] + child_pids(pid))


def test_logged_in_sessions_hold_no_index_connection(tern_factory):
    """A session that only logged in holds no SQLite connection either: the LOGIN job
    gives the one store_user_open used back to the pool (a regression kept one per
    session, two descriptors and ~110 KB each, in every idle authenticated session)."""
    # one worker process: the pool (and the bound below) is per process
    srv = tern_factory({"worker_threads": "4", "worker_processes": "1"})
    add_user(srv, "loginonly@example.test", "loginpw")
    sessions = []
    for k in range(12):
        c = imap_client(srv)
        converse(c, [(f"a{k} LOGIN loginonly@example.test loginpw", rf"^a{k} OK")])
        sessions.append(c)
    # as below: pooled connections (db + wal, at most 2 idle per user), the -shm, deferred
    # closes; before the fix, 24 (db + wal of each session)
    limit = 2 * 2 + 1 + 4
    wait_for(lambda: _index_descriptors(srv.pid) <= limit, timeout=20,
             what="no index connection held per logged-in session")
    for k, c in enumerate(sessions):
        converse(c, [(f"z{k} LOGOUT", rf"^z{k} OK")])


@pytest.mark.threads  # a loop/workpool hand-off: the TSan stage (-m threads) runs it
def test_idle_sessions_share_the_users_index(tern_factory):
    """Between commands a session holds no SQLite connection: twelve sessions of one user
    idling in INBOX leave at most two pooled index connections open (before, each kept its
    own: two descriptors and ~100 KB per session), and every one of them still hears of a
    message delivered over SMTP while it idles."""
    # one worker process: the pool (and the bound below) is per process
    srv = tern_factory({"worker_threads": "4", "worker_processes": "1"})
    add_user(srv, "sharer@example.test", "sharepw")
    deliver_file(srv, "sharer@example.test", sample_message(1))
    sessions = []
    for k in range(12):
        c = imap_client(srv)
        converse(c, [(f"a{k} LOGIN sharer@example.test sharepw", rf"^a{k} OK"),
                     (f"b{k} SELECT INBOX", rf"^b{k} OK"),
                     (f"c{k} IDLE", r"^\+ ")])
        sessions.append(c)
    # db + wal per pooled connection (the store keeps at most 2 idle ones per user), the
    # shared -shm, and at most one db descriptor per worker thread whose close SQLite
    # defers while another connection holds a lock on the file; before, every session
    # kept its own db + wal (25 here). An IDLE session may still be syncing after another
    # one's SELECT woke it: wait for the count to settle.
    limit = 2 * 2 + 1 + 4
    wait_for(lambda: _index_descriptors(srv.pid) <= limit, timeout=20,
             what="no index connection held per idle session")
    send_mail(srv, "someone@example.org", ["sharer@example.test"], "news for everyone")
    for c in sessions:
        converse(c, [(None, r"^\* 2 EXISTS\r$")], timeout=20)
    for k, c in enumerate(sessions):
        converse(c, [("DONE", rf"^c{k} OK Idle completed"),
                     (f"d{k} FETCH 2 (BODY.PEEK[TEXT])", rf"^d{k} OK")])
    # the delivery woke all twelve at once (a connection per busy worker thread); the
    # extra connections were closed when the burst was over
    wait_for(lambda: _index_descriptors(srv.pid) <= limit, timeout=20,
             what="no index connection held per session after the burst")


@pytest.mark.threads  # one job syncs many sessions' views: the TSan stage runs it
def test_idle_sessions_woken_together_each_see_every_change(tern_factory):
    """One change wakes every IDLE session of the mailbox, and their syncs run in one job
    (the first view reads the index, the others take a copy of its round): each session
    must still get exactly its own numbering of every change, \\Recent must go to one
    session only (RFC 3501 §2.3.2), and EXAMINE sessions, another mode, sync apart."""
    import imaplib
    srv = tern_factory({"worker_processes": "1"})  # every session in one process
    add_user(srv, "crowd@example.test", "crowdpw")
    deliver_file(srv, "crowd@example.test", sample_message(1))
    sessions, recent_at_select = [], []
    for k in range(12):
        c = imap_client(srv)
        verb = "EXAMINE" if k >= 10 else "SELECT"
        got = converse(c, [(f"a{k} LOGIN crowd@example.test crowdpw", rf"^a{k} OK"),
                           (f"b{k} {verb} INBOX", rf"^b{k} OK"),
                           (f"c{k} IDLE", r"^\+ ")])
        recent_at_select.append(int(re.search(r"^\* (\d+) RECENT", got[1], re.M).group(1)))
        sessions.append(c)
    send_mail(srv, "someone@example.org", ["crowd@example.test"], "news for the crowd")
    claimed = 0
    for k, c in enumerate(sessions):
        got = converse(c, [(None, r"^\* 2 EXISTS\r\n\* \d+ RECENT\r$")], timeout=30)[0]
        recent = int(re.search(r"^\* (\d+) RECENT", got, re.M).group(1))
        if k < 10 and recent > recent_at_select[k]:
            claimed += 1
    assert claimed == 1, "the new message is \\Recent in exactly one read-write session"

    # another client flags message 2, then deletes and expunges message 1
    m = imaplib.IMAP4(srv.host, srv.ports["imap"])
    m.login("crowd@example.test", "crowdpw")
    m.select("INBOX")
    assert m.store("2", "+FLAGS", "(\\Flagged $Crowd)")[0] == "OK"
    for c in sessions:
        converse(c, [(None, r"^\* 2 FETCH \(UID 2 FLAGS \([^)]*\\Flagged[^)]*\)\)\r$")],
                 timeout=30)
    assert m.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert m.expunge()[0] == "OK"
    m.logout()
    for k, c in enumerate(sessions):
        converse(c, [(None, r"^\* 1 EXPUNGE\r$")], timeout=30)
        got = converse(c, [("DONE", rf"^c{k} OK Idle completed"),
                           (f"d{k} FETCH 1:* (UID FLAGS)", rf"^d{k} OK")])[1]
        # the one message left, numbered 1 in every session, with the keyword announced
        assert re.search(r"^\* 1 FETCH \(UID 2 FLAGS \([^)]*\$Crowd[^)]*\)\)\r$", got, re.M), got
        assert not re.search(r"^\* 2 FETCH", got, re.M), got
        c.close()
