"""
test_imap_qresync.py - QRESYNC (RFC 7162 §3.2) against the real binary: ENABLE QRESYNC,
SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids [seq-match]])) with VANISHED
(EARLIER) from the index's tombstones and FETCH of what changed, UID FETCH (CHANGEDSINCE
VANISHED), VANISHED instead of EXPUNGE (EXPUNGE, MOVE, another session's expunge),
[CLOSED], and the errors the RFC requires; the command shapes of the RFC's examples.
"""

import re

from test_imap_lib import converse, fresh_user, imap_client


def msg(i):
    return f"Subject: m{i}\nMessage-ID: <q{i}@x>\n\nbody {i}\n"


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def status(text, tag):
    return re.search(rf"^{tag} (OK|NO|BAD)", text, re.M).group(1)


def select_state(c, tag="s"):
    got = cmd(c, tag, "SELECT INBOX")
    uidv = int(re.search(r"UIDVALIDITY (\d+)", got).group(1))
    hms = int(re.search(r"HIGHESTMODSEQ (\d+)", got).group(1))
    return uidv, hms


def test_enable_and_errors(tern):
    user, pw = fresh_user(tern, "qrerr", messages=[msg(1)])
    c = login(tern, user, pw)
    got = cmd(c, "a1", "SELECT INBOX (QRESYNC (1 1))")
    assert status(got, "a1") == "BAD", got  # §3.2.5: not without ENABLE QRESYNC
    got = cmd(c, "a2", "ENABLE QRESYNC")
    assert re.search(r"^\* ENABLED QRESYNC\r$", got, re.M), got
    assert "QRESYNC" in cmd(c, "a3", "CAPABILITY")
    for bad in ("SELECT INBOX (QRESYNC)", "SELECT INBOX (QRESYNC (0 1))",
                "SELECT INBOX (QRESYNC (1 x))", "SELECT INBOX (QRESYNC (1 2 3 4 5))",
                "SELECT INBOX (FOO)"):
        assert status(cmd(c, "b", bad), "b") == "BAD", bad
    cmd(c, "c", "SELECT INBOX")
    # VANISHED only for UID FETCH with CHANGEDSINCE
    assert status(cmd(c, "d1", "FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)"), "d1") == "BAD"
    assert status(cmd(c, "d2", "UID FETCH 1 FLAGS (VANISHED)"), "d2") == "BAD"
    c2 = login(tern, user, pw)
    cmd(c2, "e", "SELECT INBOX")
    assert status(cmd(c2, "e1", "UID FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)"), "e1") == "BAD"


def test_select_qresync_resynchronises(tern):
    user, pw = fresh_user(tern, "qrsel", messages=[msg(i) for i in range(1, 7)])
    # the client's first session: it remembers UIDVALIDITY and HIGHESTMODSEQ
    a = login(tern, user, pw)
    uidv, hms = select_state(a)
    cmd(a, "l", "LOGOUT")
    # meanwhile another client expunges 2 and 5 and flags 3
    b = login(tern, user, pw)
    cmd(b, "s", "SELECT INBOX")
    cmd(b, "f1", "UID STORE 2,5 +FLAGS (\\Deleted)")
    cmd(b, "f2", "UID STORE 3 +FLAGS (\\Flagged)")
    got = cmd(b, "x", "EXPUNGE")
    assert got.count(" EXPUNGE\r\n") == 2, got  # b never enabled QRESYNC
    # RFC 7162 §3.2.5.2 example shape: ENABLE, then SELECT with QRESYNC
    a = login(tern, user, pw)
    cmd(a, "e", "ENABLE QRESYNC")
    got = cmd(a, "A02", f"SELECT INBOX (QRESYNC ({uidv} {hms} 1:6))")
    assert status(got, "A02") == "OK", got
    assert re.search(r"^\* VANISHED \(EARLIER\) 2,5\r$", got, re.M), got
    fetches = re.findall(r"^\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)\r$",
                         got, re.M)
    assert [(int(s), int(u)) for s, u, _, _ in fetches] == [(2, 3)], got
    assert "\\Flagged" in fetches[0][2] and int(fetches[0][3]) > hms
    # the VANISHED and FETCH come after HIGHESTMODSEQ, before the tagged OK
    assert got.index("HIGHESTMODSEQ") < got.index("VANISHED") < got.index("A02 OK")
    # known-uids limits the report; seq-match data is accepted
    got = cmd(a, "A03", f"EXAMINE INBOX (QRESYNC ({uidv} {hms} 1:3 (1:2 1:2)))")
    assert re.search(r"^\* OK \[CLOSED\]", got, re.M), got  # §3.2.11
    assert re.search(r"^\* VANISHED \(EARLIER\) 2\r$", got, re.M), got
    # a stale UIDVALIDITY: a plain SELECT, nothing resynchronised
    got = cmd(a, "A04", f"SELECT INBOX (QRESYNC ({uidv + 1} {hms}))")
    assert "VANISHED" not in got and " FETCH " not in got, got
    # up to date: nothing to report
    _, now = int(uidv), int(re.search(r"HIGHESTMODSEQ (\d+)", got).group(1))
    got = cmd(a, "A05", f"SELECT INBOX (QRESYNC ({uidv} {now}))")
    assert "VANISHED" not in got and " FETCH " not in got, got


def test_vanished_replaces_expunge(tern):
    user, pw = fresh_user(tern, "qrvan", messages=[msg(i) for i in range(1, 6)])
    a = login(tern, user, pw)
    cmd(a, "e", "ENABLE QRESYNC")
    uidv, hms = select_state(a)
    # our own EXPUNGE
    cmd(a, "f", "STORE 2,4 +FLAGS (\\Deleted)")
    got = cmd(a, "x", "EXPUNGE")
    assert re.search(r"^\* VANISHED 2,4\r$", got, re.M) and "EXPUNGE\r\n" not in got, got
    # another session's expunge, noticed by NOOP
    b = login(tern, user, pw)
    cmd(b, "s", "SELECT INBOX")
    cmd(b, "f", "UID STORE 5 +FLAGS (\\Deleted)")
    cmd(b, "x", "EXPUNGE")
    got = cmd(a, "n", "NOOP")
    assert re.search(r"^\* VANISHED 5\r$", got, re.M), got
    # MOVE reports VANISHED too (RFC 6851 §4.3 with QRESYNC)
    cmd(a, "c", "CREATE Other")
    got = cmd(a, "m", "UID MOVE 1 Other")
    assert re.search(r"^\* VANISHED 1\r$", got, re.M), got
    # store responses carry the UID for QRESYNC clients
    got = cmd(a, "t", "STORE 1 +FLAGS (\\Seen)")
    assert re.search(r"^\* 1 FETCH \(UID 3 FLAGS \(\\Seen[^)]*\) MODSEQ \(\d+\)\)\r$", got, re.M), got
    # UID FETCH (CHANGEDSINCE VANISHED) (§3.2.6 example shape)
    got = cmd(a, "s2", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
    assert re.search(r"^\* VANISHED \(EARLIER\) 1:2,4:5\r$", got, re.M), got
    assert re.search(r"^\* 1 FETCH \(UID 3 FLAGS \(\\Seen[^)]*\) MODSEQ \(\d+\)\)\r$", got, re.M), got
    assert got.index("VANISHED") < got.index("FETCH")
    got = cmd(a, "s3", "UID FETCH 4:5 (FLAGS) (VANISHED CHANGEDSINCE %d)" % hms)
    assert re.search(r"^\* VANISHED \(EARLIER\) 4:5\r$", got, re.M), got
    # tombstones go with a deleted mailbox; a new one of that name starts clean
    cmd(a, "u", "SELECT Other")
    cmd(a, "d", "DELETE Other")  # still selected elsewhere is fine for Maildir
    cmd(a, "c2", "CREATE Other")
    got = cmd(a, "s4", "SELECT Other (QRESYNC (%d 1))" % uidv)
    assert "VANISHED" not in got, got
