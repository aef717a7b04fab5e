"""
test_imap_idle.py - IDLE keepalives and time limit (RFC 2177 §3): an idling client hears
"* OK Still here" periodically (every imap.timeout/2 here, at most every 120 s), DONE
still ends the IDLE normally, and an IDLE that lasts imap.timeout (the IDLE limit; 30
minutes by default) without DONE ends with an untagged BYE and the connection closed.
"""

from test_imap_lib import add_user, converse, deliver_file, imap_client, sample_message


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
