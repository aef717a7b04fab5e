"""
test_imap_sort.py - SORT (RFC 5256), SORT=DISPLAY (RFC 5957), THREAD (ORDEREDSUBJECT,
REFERENCES, REFS), ESORT and PARTIAL (RFC 5267), SEARCHRES (RFC 5182) and WITHIN
(RFC 5032) on the wire, against the real binary, with imaplib and raw sessions; the
command shapes of the RFCs' examples replayed on a mailbox made for them.
"""

import imaplib
import re
import time

from test_imap_lib import converse, fresh_user, imap_client, imaplib_login


def msg(subject, date, frm, to="x@example.org", extra=(), body="body\n"):
    lines = [f"Subject: {subject}", f"Date: {date}", f"From: {frm}", f"To: {to}"]
    return "\n".join(lines + list(extra)) + "\n\n" + body


# 1..6: subjects with reply markers, dates out of arrival order, sizes differ
MAILBOX = [
    msg("Re: Lunch", "Mon, 2 Jan 2006 10:00:00 +0000", "Carol <carol@c.org>", body="x\n" * 30),
    msg("lunch", "Sun, 1 Jan 2006 10:00:00 +0000", "alice@a.org", to="Zed <z@z.org>",
        extra=["Message-ID: <lunch@a.org>"]),
    msg("[list] Budget", "Tue, 3 Jan 2006 09:00:00 +0100", "=?utf-8?q?=C3=89mile?= <e@e.org>",
        to="bob@b.org", body="y\n" * 5),
    msg("Fwd: budget (fwd)", "Tue, 3 Jan 2006 07:00:00 +0000", "Bob <bob@b.org>",
        extra=["Message-ID: <b2@b.org>", "References: <b1@b.org>"]),
    msg("Re: lunch", "Wed, 4 Jan 2006 10:00:00 +0000", "dave@d.org",
        extra=["Message-ID: <r1@d.org>", "In-Reply-To: <lunch@a.org>"]),
    msg("zebra", "garbage date", "Alice <alice@a.org>", to="Ann <a@a.org>"),
]


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def untagged(text, name):
    m = re.search(rf"^\* {name}(.*)\r$", text, re.M)
    assert m, text
    return m.group(1).strip()


def select_mailbox(tern, prefix):
    user, pw = fresh_user(tern, prefix, messages=MAILBOX)
    c = login(tern, user, pw)
    got = cmd(c, "s", "SELECT INBOX")
    assert "6 EXISTS" in got, got
    return c, user, pw


def test_capabilities(tern):
    user, pw = fresh_user(tern, "scap")
    m = imaplib_login(tern, user, pw)
    caps = m.capability()[1][0].decode().split()
    for cap in ("SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
                "THREAD=REFS", "ESORT", "SEARCHRES", "WITHIN"):
        assert cap in caps, caps
    m.logout()


def test_sort_each_key(tern):
    c, _, _ = select_mailbox(tern, "skey")

    def sort(crit, search="ALL"):
        got = cmd(c, "t", f"SORT ({crit}) UTF-8 {search}")
        assert re.search(r"^t OK", got, re.M), got
        return untagged(got, "SORT").split()

    # base subjects (RFC 5256 §2.1): lunch x3, budget x2, zebra; ties by sequence
    assert sort("SUBJECT") == ["3", "4", "1", "2", "5", "6"]
    assert sort("REVERSE SUBJECT") == ["6", "1", "2", "5", "3", "4"]
    # sent dates in UTC (3 is 08:00Z, 4 07:00Z); 6 has no usable Date: its internal
    # date (now) sorts last
    assert sort("DATE") == ["2", "1", "4", "3", "5", "6"]
    assert sort("REVERSE DATE") == ["6", "5", "3", "4", "1", "2"]
    assert sort("ARRIVAL") == ["1", "2", "3", "4", "5", "6"]
    size = sort("SIZE")
    assert size[-1] == "1" and size.index("3") > size.index("2"), size
    # addr-mailbox of the first From: alice alice bob carol dave e
    assert sort("FROM") == ["2", "6", "4", "1", "5", "3"]
    assert sort("TO") == ["6", "3", "1", "4", "5", "2"]
    # RFC 5957 display names (decoded, i;unicode-casemap): Alice, alice@a.org, Bob,
    # Carol, dave@d.org, Émile
    assert sort("DISPLAYFROM") == ["6", "2", "4", "1", "5", "3"]
    assert sort("DISPLAYTO") == ["6", "3", "1", "4", "5", "2"]
    # several criteria: subject, then reverse date
    assert sort("SUBJECT REVERSE DATE") == ["3", "4", "5", "1", "2", "6"]
    # with search criteria, and UID SORT
    assert sort("DATE", "FROM alice") == ["2", "6"]
    got = cmd(c, "u", "UID SORT (REVERSE DATE) US-ASCII 2:4")
    assert untagged(got, "SORT").split() == ["3", "4", "2"]
    # equal keys (delivered in the same second): the sequence number, never reversed
    got = cmd(c, "v", "SORT (REVERSE ARRIVAL) US-ASCII 2:4")
    arrival = untagged(got, "SORT").split()
    assert sorted(arrival) == ["2", "3", "4"], arrival


def test_sort_errors(tern):
    c, _, _ = select_mailbox(tern, "serr")
    assert re.search(r"^a BAD", cmd(c, "a", "SORT (BOGUS) UTF-8 ALL"), re.M)
    assert re.search(r"^b BAD", cmd(c, "b", "SORT (DATE) UTF-8"), re.M)
    assert re.search(r"^c NO \[BADCHARSET", cmd(c, "c", "SORT (DATE) KOI8-R ALL"), re.M)
    assert re.search(r"^d BAD", cmd(c, "d", "SORT DATE UTF-8 ALL"), re.M)
    assert re.search(r"^e BAD", cmd(c, "e", "THREAD XYZ UTF-8 ALL"), re.M)
    assert re.search(r"^f BAD", cmd(c, "f", "SORT RETURN (PARTIAL 1:2 ALL) (DATE) UTF-8 ALL"),
                     re.M)
    # not selected
    user, pw = fresh_user(tern, "serr2")
    c2 = login(tern, user, pw)
    assert re.search(r"^g BAD", cmd(c2, "g", "SORT (DATE) UTF-8 ALL"), re.M)


def test_sort_with_imaplib(tern):
    _, user, pw = select_mailbox(tern, "slib")
    m = imaplib_login(tern, user, pw)
    m.select("INBOX")
    typ, data = m.sort("(REVERSE DATE)", "UTF-8", "ALL")
    assert typ == "OK" and data[0].split() == [b"6", b"5", b"3", b"4", b"1", b"2"]
    typ, data = m.uid("SORT", "(SUBJECT)", "UTF-8", "ALL")
    assert typ == "OK" and data[0].split() == [b"3", b"4", b"1", b"2", b"5", b"6"]
    typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
    assert typ == "OK", data
    m.logout()


def test_thread_algorithms(tern):
    c, _, _ = select_mailbox(tern, "sthr")
    # ORDEREDSUBJECT: by base subject then date; threads by their first message's date
    got = cmd(c, "a", "THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert untagged(got, "THREAD") == "(2 (1)(5))(4 3)(6)"
    # REFERENCES: 5 replies to 2 (In-Reply-To); 4's parent is missing (pruned dummy);
    # lunch: 2 holds 1 (a reply, by subject) and 5; budget: 4 and 3 neither a reply to
    # the other's thread subject winner... 3 is not a reply, 4 is: 4 joins 3
    got = cmd(c, "b", "THREAD REFERENCES UTF-8 ALL")
    assert untagged(got, "THREAD") == "(2 (1)(5))(3 4)(6)"
    # REFS: no subject merge; threads ordered by their newest message
    got = cmd(c, "c", "THREAD REFS UTF-8 ALL")
    assert untagged(got, "THREAD") == "(1)(4)(3)(2 5)(6)"
    # UID THREAD and a search: only messages 1-3
    got = cmd(c, "d", "UID THREAD REFERENCES UTF-8 1:3")
    assert untagged(got, "THREAD") == "(2 1)(3)"
    got = cmd(c, "e", "THREAD REFERENCES UTF-8 SUBJECT nothing-matches")
    assert re.search(r"^\* THREAD\r$", got, re.M), got


def test_esort_and_partial(tern):
    c, _, _ = select_mailbox(tern, "sesort")
    # RFC 5267 §3.1 example shape: SORT RETURN (MIN MAX COUNT) ...
    got = cmd(c, "A282", "SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 ALL")
    assert untagged(got, "ESEARCH") == '(TAG "A282") MIN 2 MAX 6 COUNT 6'
    got = cmd(c, "A283", "SORT RETURN (ALL) (DATE) UTF-8 ALL")
    # ALL keeps the sort order (runs only where ascending)
    assert untagged(got, "ESEARCH") == '(TAG "A283") ALL 2,1,4,3,5:6'
    got = cmd(c, "A284", "UID SORT RETURN (COUNT) (DATE) UTF-8 FROM nobody")
    assert untagged(got, "ESEARCH") == '(TAG "A284") UID COUNT 0'
    # RFC 5267 §4.4 PARTIAL over the sorted result, and RFC 9394 from the end
    got = cmd(c, "p1", "SORT RETURN (PARTIAL 2:3) (DATE) UTF-8 ALL")
    assert untagged(got, "ESEARCH") == '(TAG "p1") PARTIAL (2:3 1,4)'
    got = cmd(c, "p2", "SORT RETURN (PARTIAL -1:-2 COUNT) (DATE) UTF-8 ALL")
    assert untagged(got, "ESEARCH") == '(TAG "p2") COUNT 6 PARTIAL (-1:-2 5:6)'
    got = cmd(c, "p3", "SEARCH RETURN (PARTIAL 5:10) ALL")
    assert untagged(got, "ESEARCH") == '(TAG "p3") PARTIAL (5:10 5:6)'
    got = cmd(c, "p4", "SEARCH RETURN (PARTIAL 7:10) ALL")
    assert untagged(got, "ESEARCH") == '(TAG "p4") PARTIAL (7:10 NIL)'


def test_searchres(tern):
    c, _, _ = select_mailbox(tern, "sres")
    # RFC 5182 §3 example shapes: SEARCH RETURN (SAVE) then FETCH $
    got = cmd(c, "A282", "SEARCH RETURN (SAVE) FROM alice")
    assert "* ESEARCH" not in got and "* SEARCH" not in got, got
    got = cmd(c, "A283", "FETCH $ (UID)")
    assert re.findall(r"^\* (\d+) FETCH", got, re.M) == ["2", "6"], got
    # '$' in search criteria, combined
    got = cmd(c, "A284", "SEARCH $ SUBJECT lunch")
    assert untagged(got, "SEARCH") == "2"
    got = cmd(c, "A285", "UID SEARCH NOT $")
    assert untagged(got, "SEARCH").split() == ["1", "3", "4", "5"]
    # SAVE with MIN/MAX saves only those (RFC 5182 §2.4); with another option it answers
    got = cmd(c, "A286", "SEARCH RETURN (SAVE MIN COUNT) SUBJECT lunch")
    assert untagged(got, "ESEARCH") == '(TAG "A286") MIN 1 COUNT 3'
    got = cmd(c, "A287", "FETCH $ (UID)")
    assert re.findall(r"^\* (\d+) FETCH", got, re.M) == ["1", "2", "5"], got
    cmd(c, "A288", "SEARCH RETURN (SAVE MIN MAX) SUBJECT lunch")
    got = cmd(c, "A289", "UID SEARCH UID $")
    assert untagged(got, "SEARCH").split() == ["1", "5"]
    # SORT saves too; STORE and COPY take '$'
    cmd(c, "A290", "SORT RETURN (SAVE) (DATE) UTF-8 SUBJECT budget")
    got = cmd(c, "A291", "STORE $ +FLAGS (\\Flagged)")
    assert re.findall(r"^\* (\d+) FETCH", got, re.M) == ["3", "4"], got
    cmd(c, "A292", "CREATE Saved")
    got = cmd(c, "A293", "COPY $ Saved")
    assert re.search(r"^A293 OK \[COPYUID \d+ 3:4 1:2\]", got, re.M), got
    # a failed command empties the saved result (RFC 5182 §2.1)
    assert re.search(r"^A294 BAD", cmd(c, "A294", "SEARCH RETURN (SAVE) BOGUS"), re.M)
    got = cmd(c, "A295", "FETCH $ (UID)")
    assert "FETCH" not in got.split("A295")[0] and re.search(r"^A295 OK", got, re.M), got
    # the saved result goes with the mailbox
    cmd(c, "A296", "SEARCH RETURN (SAVE) ALL")
    cmd(c, "A297", "SELECT INBOX")
    got = cmd(c, "A298", "SEARCH $")
    assert untagged(got, "SEARCH") == ""


def test_within(tern):
    user, pw = fresh_user(tern, "swithin")
    m = imaplib_login(tern, user, pw)
    old = time.time() - 3 * 86400
    assert m.append("INBOX", None, imaplib_time(old), b"Subject: old\r\n\r\nx\r\n")[0] == "OK"
    assert m.append("INBOX", None, imaplib_time(time.time()), b"Subject: new\r\n\r\nx\r\n")[0] == "OK"
    m.select("INBOX")
    assert m.search(None, "YOUNGER", "3600")[1][0].split() == [b"2"]
    assert m.search(None, "OLDER", "86400")[1][0].split() == [b"1"]
    assert m.search(None, "OLDER", "864000")[1][0].split() == []
    try:
        m.search(None, "YOUNGER", "0")
        assert False, "YOUNGER 0 accepted"
    except imaplib.IMAP4.error as e:
        assert "BAD" in str(e) or "Invalid" in str(e)
    m.logout()


def imaplib_time(t):
    return imaplib.Time2Internaldate(t)
