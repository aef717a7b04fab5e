"""
test_imap_rev2.py - IMAP4rev2 (RFC 9051) beside IMAP4rev1, UTF8=ACCEPT (RFC 6855) and
LITERAL+/LITERAL- (RFC 7888) against the real binary, with raw sessions and imaplib.

rev1 stays the default: each rev2 behaviour (RFC 9051 Appendix E) is checked after
ENABLE IMAP4rev2 and, where it differs, against a session that did not enable it: no
\\Recent / RECENT / [UNSEEN], SELECT's LIST response (OLDNAME for a denormalized name) and
[CLOSED], SEARCH answered with ESEARCH, STATUS DELETED, UTF-8 mailbox names (the store keeps
modified UTF-7, so rev1 and rev2 sessions see the same mailboxes), the capability list
unchanged by ENABLE. UTF8=ACCEPT: the UTF8 APPEND data item, UTF-8 headers returned as
they are, SEARCH CHARSET refused, and 8-bit headers from sessions that did not enable it stored
(imap.utf8_append_strict = no, the default) or refused (yes). LITERAL-: announced instead of LITERAL+ with imap.literal_plus = no, a {n+}
literal over 4096 octets refused with BAD [TOOBIG] and skipped, the session going on.
"""

import imaplib
import re
import unicodedata

from test_imap_lib import (IO_TIMEOUT, add_user, converse, fresh_user, imap_client,
                           read_literal_reply)


def msg(i, subject=None):
    return f"Subject: {subject or f'm{i}'}\nMessage-ID: <r{i}@x>\nFrom: a@x\n\nbody {i}\n"


def login(tern, user, pw, enable=None):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    if enable:
        got = cmd(c, "en", f"ENABLE {enable}")
        assert status(got, "en") == "OK", got
    return c


def cmd(c, tag, line):
    return converse(c, [(line and f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def status(text, tag):
    return re.search(rf"^{tag} (OK|NO|BAD)", text, re.M).group(1)


def caps(text):
    return re.search(r"^\* CAPABILITY (.*)\r$", text, re.M).group(1).split()


# ---- capabilities and ENABLE ------------------------------------------------------------

def test_capability_before_and_after_login_and_enable(tern):
    user, pw = fresh_user(tern, "r2cap")
    c = imap_client(tern)
    pre = caps(cmd(c, "c1", "CAPABILITY"))
    # the login process announces both revisions (RFC 9051 Appendix A) and LITERAL+ only
    assert "IMAP4rev1" in pre and "IMAP4rev2" in pre and "LITERAL+" in pre, pre
    assert "LITERAL-" not in pre  # RFC 7888 §5: never both
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    post = caps(cmd(c, "c2", "CAPABILITY"))
    for cap in ("IMAP4rev1", "IMAP4rev2", "UTF8=ACCEPT", "LITERAL+", "ENABLE", "ESEARCH",
                "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "BINARY", "MOVE", "UNSELECT",
                "SEARCHRES", "NAMESPACE", "SPECIAL-USE", "SASL-IR", "IDLE"):
        assert cap in post, (cap, post)
    # RFC 9051 §6.3.1 example: ENABLE names what it enabled, CAPABILITY stays the same
    got = cmd(c, "t2", "ENABLE CONDSTORE X-GOOD-IDEA")
    assert re.search(r"^\* ENABLED CONDSTORE\r$", got, re.M), got
    got = cmd(c, "t3", "ENABLE IMAP4rev2 UTF8=ACCEPT")
    assert re.search(r"^\* ENABLED IMAP4rev2 UTF8=ACCEPT\r$", got, re.M), got
    # §6.3.1: additive; a second ENABLE names only what it newly enabled
    got = cmd(c, "t4", "ENABLE IMAP4rev2")
    assert re.search(r"^\* ENABLED\r$", got, re.M), got
    assert caps(cmd(c, "t5", "CAPABILITY")) == post
    assert status(cmd(c, "t6", "ENABLE"), "t6") == "BAD"  # no arguments


def test_enable_is_post_login(tern):
    c = imap_client(tern)
    got = cmd(c, "e", "ENABLE IMAP4rev2")
    assert status(got, "e") == "NO" and "ENABLED" not in got, got


# ---- selected state ---------------------------------------------------------------------

def test_select_rev2_list_closed_and_no_recent(tern):
    user, pw = fresh_user(tern, "r2sel", messages=[msg(1), msg(2), msg(3)])
    c = login(tern, user, pw, "IMAP4rev2")
    got = cmd(c, "A142", "SELECT INBOX")
    assert status(got, "A142") == "OK", got
    assert re.search(r"^\* 3 EXISTS\r$", got, re.M), got
    assert "RECENT" not in got and "[UNSEEN" not in got, got  # Appendix E items 11-12
    # §6.3.2: LIST with the mailbox name and accurate attributes
    assert re.search(r'^\* LIST \(\\HasNoChildren \\Subscribed\) "/" "INBOX"\r$', got, re.M), got
    assert re.search(r"^\* OK \[UIDVALIDITY \d+\]", got, re.M)
    assert re.search(r"^\* OK \[UIDNEXT 4\]", got, re.M)
    assert re.search(r"^\* OK \[PERMANENTFLAGS \(", got, re.M)
    assert "[CLOSED]" not in got
    got = cmd(c, "f", "FETCH 1:3 FLAGS")
    assert "\\Recent" not in got and got.count(" FETCH ") == 3, got
    assert status(cmd(c, "s", "SEARCH NEW"), "s") == "OK"  # deprecated, still understood
    cmd(c, "cr", "CREATE Drafts")
    got = cmd(c, "A143", "SELECT Drafts")
    # §6.3.2 second example: [CLOSED] before the new mailbox's responses
    lines = got.splitlines()
    assert lines[0].startswith("* OK [CLOSED]"), got
    assert re.search(r'^\* LIST \(\\HasNoChildren \\Subscribed \\Drafts\) "/" "Drafts"\r$', got,
                     re.M), got
    # a failed SELECT still closes the mailbox selected before
    got = cmd(c, "A144", "SELECT Nowhere")
    assert status(got, "A144") == "NO" and "[CLOSED]" in got, got
    assert status(cmd(c, "A145", "FETCH 1 FLAGS"), "A145") == "BAD"  # nothing selected


def test_rev1_session_unchanged(tern):
    """Without ENABLE IMAP4rev2 the IMAP4rev1 replies stay as they were."""
    user, pw = fresh_user(tern, "r1sel", messages=[msg(1), msg(2)])
    c = login(tern, user, pw)
    got = cmd(c, "s", "SELECT INBOX")
    assert re.search(r"^\* 2 RECENT\r$", got, re.M), got
    assert "[UNSEEN 1]" in got and "* LIST" not in got, got
    assert "\\Recent" in cmd(c, "f", "FETCH 1 FLAGS")
    got = cmd(c, "q", "SEARCH ALL")
    assert re.search(r"^\* SEARCH 1 2\r$", got, re.M) and "ESEARCH" not in got, got
    got = cmd(c, "s2", "SELECT INBOX")
    assert "[CLOSED]" not in got, got  # rev1 without QRESYNC: no CLOSED


def test_search_answers_esearch(tern):
    user, pw = fresh_user(tern, "r2srch", messages=[msg(i) for i in range(1, 12)])
    c = login(tern, user, pw, "IMAP4rev2")
    cmd(c, "s", "SELECT INBOX")
    cmd(c, "f", "STORE 2,10,11 +FLAGS (\\Flagged)")
    # RFC 9051 §6.4.4 examples
    got = cmd(c, "A282", "SEARCH FLAGGED")
    assert re.search(r'^\* ESEARCH \(TAG "A282"\) ALL 2,10:11\r$', got, re.M), got
    assert "* SEARCH" not in got
    got = cmd(c, "A283", "SEARCH RETURN () FLAGGED NOT FROM \"Smith\"")
    assert re.search(r'^\* ESEARCH \(TAG "A283"\) ALL 2,10:11\r$', got, re.M), got
    got = cmd(c, "A284", "SEARCH TEXT \"string not in mailbox\"")
    assert re.search(r'^\* ESEARCH \(TAG "A284"\)\r$', got, re.M), got
    got = cmd(c, "A285", "UID SEARCH FLAGGED")
    assert re.search(r'^\* ESEARCH \(TAG "A285"\) UID ALL 2,10:11\r$', got, re.M), got
    got = cmd(c, "A286", "SEARCH RETURN (MIN MAX COUNT) FLAGGED")
    assert re.search(r'^\* ESEARCH \(TAG "A286"\) MIN 2 MAX 11 COUNT 3\r$', got, re.M), got
    got = cmd(c, "A287", "SEARCH CHARSET UTF-8 FLAGGED")  # rev2 keeps CHARSET
    assert re.search(r'^\* ESEARCH \(TAG "A287"\) ALL 2,10:11\r$', got, re.M), got
    # SEARCHRES (folded into rev2): SAVE alone answers nothing, "$" then works
    got = cmd(c, "A288", "SEARCH RETURN (SAVE) FLAGGED")
    assert "ESEARCH" not in got and status(got, "A288") == "OK", got
    got = cmd(c, "A289", "FETCH $ (UID)")
    assert got.count(" FETCH ") == 3, got


def test_status_deleted_and_size(tern):
    user, pw = fresh_user(tern, "r2st", messages=[msg(1), msg(2), msg(3)])
    c = login(tern, user, pw, "IMAP4rev2")
    cmd(c, "s", "SELECT INBOX")
    cmd(c, "f", "STORE 1,3 +FLAGS (\\Deleted)")
    got = cmd(c, "A042", "STATUS INBOX (MESSAGES UNSEEN DELETED SIZE)")
    m = re.search(r'^\* STATUS "?INBOX"? \(MESSAGES 3 UNSEEN 3 SIZE (\d+) DELETED 2\)\r$',
                  got, re.M)
    assert m and int(m.group(1)) > 0, got
    # LIST-STATUS with the rev2 items
    got = cmd(c, "l", 'LIST "" "INBOX" RETURN (STATUS (DELETED))')
    assert re.search(r'^\* STATUS "?INBOX"? \(DELETED 2\)\r$', got, re.M), got
    # a rev1 session may ask for it too
    r1 = login(tern, user, pw)
    got = cmd(r1, "x", "STATUS INBOX (DELETED RECENT)")
    assert re.search(r"DELETED 2\)", got), got


def test_idle_reports_without_recent(tern):
    user, pw = fresh_user(tern, "r2idle", messages=[msg(1)])
    c = login(tern, user, pw, "IMAP4rev2")
    cmd(c, "s", "SELECT INBOX")
    c.send("i IDLE")
    c.read_until(r"^\+ ")
    other = login(tern, user, pw)
    data = b"Subject: x\r\n\r\nhi\r\n"
    other.send_raw(b"ap APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    assert status(other.read_until(r"^ap "), "ap") == "OK"
    got = c.read_until(r"^\* \d+ EXISTS\r$")
    c.send("DONE")
    got += c.read_until(r"^i OK")
    assert "RECENT" not in got, got


# ---- UTF-8 mailbox names ----------------------------------------------------------------

def test_utf8_mailbox_names_shared_with_rev1(tern):
    user, pw = fresh_user(tern, "r2name")
    rev2 = login(tern, user, pw, "IMAP4rev2")
    rev1 = login(tern, user, pw)
    got = cmd(rev2, "c1", 'CREATE "Entwürfe"')
    assert status(got, "c1") == "OK", got
    got = cmd(rev2, "c2", 'CREATE "A&B"')  # "&" is an ordinary character in UTF-8 names
    assert status(got, "c2") == "OK", got
    # the rev1 session sees the same mailboxes in modified UTF-7 (RFC 9051 Appendix A.1)
    got = cmd(rev1, "l1", 'LIST "" "*"')
    assert re.search(r'^\* LIST \([^)]*\) "/" "?Entw&APw-rfe"?\r$', got, re.M), got
    assert re.search(r'^\* LIST \([^)]*\) "/" "?A&-B"?\r$', got, re.M), got
    # and what a rev1 client created in modified UTF-7 reads as UTF-8 in rev2
    assert status(cmd(rev1, "c3", "CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-"), "c3") == "OK"
    got = cmd(rev2, "l2", 'LIST "" "*"')
    assert re.search(r'^\* LIST \([^)]*\) "/" "Entwürfe"\r$', got, re.M), got
    assert re.search(r'^\* LIST \([^)]*\) "/" "A&B"\r$', got, re.M), got
    assert re.search(r'^\* LIST \([^)]*\) "/" "~peter/mail/台北/日本語"\r$', got, re.M), got
    # patterns are UTF-8 too
    got = cmd(rev2, "l3", 'LIST "" "Entw*"')
    assert '"Entwürfe"' in got and "A&B" not in got, got
    got = cmd(rev2, "st", 'STATUS "Entwürfe" (MESSAGES)')
    assert re.search(r'^\* STATUS "Entwürfe" \(MESSAGES 0\)\r$', got, re.M), got
    assert status(cmd(rev2, "r", 'RENAME "Entwürfe" "Brouillons été"'), "r") == "OK"
    got = cmd(rev1, "l4", 'LIST "" "Brouillons*"')
    assert "Brouillons &AOk-t&AOk-" in got, got


def test_utf8_names_normalized_and_checked(tern):
    user, pw = fresh_user(tern, "r2nfc")
    c = login(tern, user, pw, "IMAP4rev2")
    nfc = "Café"
    nfd = unicodedata.normalize("NFD", nfc)
    assert status(cmd(c, "c", f'CREATE "{nfc}"'), "c") == "OK"
    # RFC 9051 §5.1/§6.3.2: the denormalized name opens the same mailbox, and SELECT's
    # LIST tells the normalized name with OLDNAME
    got = cmd(c, "s", f'SELECT "{nfd}"')
    assert status(got, "s") == "OK", got
    m = re.search(r'^\* LIST \([^)]*\) "/" "Café" \("OLDNAME" \("(.*)"\)\)\r$', got, re.M)
    assert m and m.group(1) == nfd, got
    assert status(cmd(c, "d", f'CREATE "{nfd}"'), "d") == "NO"  # exists already
    # RFC 6855 §3: invalid UTF-8 in a quoted string is BAD; controls are not names
    c.send_raw(b'x1 CREATE "bad\xff\xfe"\r\n')
    assert status(c.read_until(r"^x1 "), "x1") == "BAD"
    c.send_raw('x2 CREATE "ctl\u0085x"\r\n'.encode())
    assert status(c.read_until(r"^x2 "), "x2") in ("BAD", "NO")
    got = cmd(c, "l", 'LIST "" "*"')
    assert "ctl" not in got and "bad" not in got, got


def test_imaplib_utf8_accept(tern):
    """Python's imaplib: enable("UTF8=ACCEPT") switches it to UTF-8 commands."""
    user, pw = fresh_user(tern, "r2lib", messages=[msg(1)])
    m = imaplib.IMAP4(tern.host, tern.ports["imap"], timeout=IO_TIMEOUT)
    m.login(user, pw)
    typ, data = m.enable("UTF8=ACCEPT")
    assert typ == "OK", data
    assert m.utf8_enabled
    assert m.create('"Rechnungen/März"')[0] == "OK"
    typ, data = m.list('""', '"Rechnungen/*"')
    assert typ == "OK" and any("März".encode() in d for d in data if d), data
    typ, data = m.select('"Rechnungen/März"')
    assert typ == "OK", data
    assert m.close()[0] == "OK"
    with __import__("pytest").raises(imaplib.IMAP4.error):
        m.search("UTF-8", "ALL")  # imaplib itself refuses a charset in UTF-8 mode
    m.logout()


# ---- UTF8=ACCEPT: APPEND, headers, SEARCH -------------------------------------------------

UTF8_MSG = ("From: Jöran <j@x>\r\nSubject: Grüße aus Köln\r\nMessage-ID: <u1@x>\r\n"
            "\r\nBody\r\n").encode()


def append_utf8(c, tag, data, utf8_form=True):
    head = f"{tag} APPEND INBOX " + ("UTF8 (~{%d+}\r\n" if utf8_form else "{%d+}\r\n")
    c.send_raw(head.encode() % len(data) + data + (b")\r\n" if utf8_form else b"\r\n"))
    return c.read_until(rf"^{tag} (OK|NO|BAD)")


def test_utf8_append_and_fetch(tern):
    user, pw = fresh_user(tern, "r2app")
    c = login(tern, user, pw, "UTF8=ACCEPT")
    got = append_utf8(c, "A1", UTF8_MSG)
    assert status(got, "A1") == "OK" and "APPENDUID" in got, got
    cmd(c, "s", "SELECT INBOX")
    c.send("f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] ENVELOPE)")
    raw = read_literal_reply(c, "f")
    # RFC 6855: UTF-8 header data is returned as it is
    assert "Grüße aus Köln".encode() in raw and "Jöran".encode() in raw, raw
    # SEARCH with UTF-8 in a quoted string, no CHARSET
    got = cmd(c, "q1", 'SEARCH SUBJECT "grüße"')
    assert re.search(r"^\* SEARCH 1\r$", got, re.M), got
    # RFC 6855 §3: a charset after ENABLE UTF8=ACCEPT is BAD
    assert status(cmd(c, "q2", "SEARCH CHARSET UTF-8 ALL"), "q2") == "BAD"
    # the UTF8 item needs a literal8
    c.send_raw(b'bad APPEND INBOX UTF8 ("Subject: x\r\n\r\nx")\r\n')
    assert status(c.read_until(r"^bad "), "bad") == "BAD"


def test_8bit_headers_stored_without_enable_by_default(tern):
    """imap.utf8_append_strict = no (the default): a session that enabled nothing may still
    store real-world mail with raw UTF-8 headers (a migration tool copying a mailbox), as
    Dovecot 2.3 does."""
    user, pw = fresh_user(tern, "r2lenient")
    c = login(tern, user, pw)
    got = append_utf8(c, "A1", UTF8_MSG, utf8_form=False)
    assert status(got, "A1") == "OK", got
    got = cmd(c, "st", "STATUS INBOX (MESSAGES)")
    assert "MESSAGES 1" in got, got


def test_8bit_headers_refused_without_enable_when_strict(tern_factory):
    tern = tern_factory({"imap.utf8_append_strict": "yes"})
    user, pw = fresh_user(tern, "r2legacy")
    c = login(tern, user, pw)
    # RFC 6855 §4: NO for 8-bit header fields from a session that did not enable UTF-8,
    # with or without the UTF8 item
    got = append_utf8(c, "A1", UTF8_MSG, utf8_form=False)
    assert status(got, "A1") == "NO", got
    got = append_utf8(c, "A2", UTF8_MSG)
    assert status(got, "A2") == "NO", got
    # 8-bit in the body only stays acceptable (8BITMIME)
    body8 = "Subject: plain\r\n\r\nGrüße\r\n".encode()
    assert status(append_utf8(c, "A3", body8, utf8_form=False), "A3") == "OK"
    # IMAP4rev2 allows UTF-8 headers (RFC 9051 §4.3.1)
    r2 = login(tern, user, pw, "IMAP4rev2")
    assert status(append_utf8(r2, "A4", UTF8_MSG), "A4") == "OK"
    got = cmd(c, "st", "STATUS INBOX (MESSAGES)")
    assert "MESSAGES 2" in got, got


# ---- literals -----------------------------------------------------------------------------

def test_literal_plus_takes_big_nonsync_in_rev2(tern):
    user, pw = fresh_user(tern, "r2lit")
    c = login(tern, user, pw, "IMAP4rev2")
    data = b"Subject: big\r\n\r\n" + b"x" * 6000 + b"\r\n"
    c.send_raw(b"A1 APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    got = c.read_until(r"^A1 (OK|NO|BAD)")
    assert status(got, "A1") == "OK", got  # LITERAL+ is announced: no 4096 limit


def test_literal_minus(tern_factory):
    srv = tern_factory({"imap.literal_plus": "no"})
    user, pw = "lm@example.test", "pw-lm-1"
    add_user(srv, user, pw)
    c = imap_client(srv)
    pre = caps(cmd(c, "c", "CAPABILITY"))
    assert "LITERAL-" in pre and "LITERAL+" not in pre, pre
    # a small {n+} literal is fine (RFC 7888 §3 example shape)
    c.send_raw(f"A001 LOGIN {{{len(user)}+}}\r\n{user} {{{len(pw)}+}}\r\n{pw}\r\n".encode())
    assert status(c.read_until(r"^A001 "), "A001") == "OK"
    assert "LITERAL-" in caps(cmd(c, "c2", "CAPABILITY"))
    # RFC 7888 §5: over 4096 octets, APPEND gets BAD [TOOBIG]; the octets are skipped
    data = b"Subject: big\r\n\r\n" + b"y" * 5000 + b"\r\n"
    c.send_raw(b"A2 APPEND INBOX (\\Seen) {%d+}\r\n" % len(data) + data + b"\r\n")
    got = c.read_until(r"^A2 (OK|NO|BAD)")
    assert re.search(r"^A2 BAD \[TOOBIG\]", got, re.M), got
    # ...and so is the rest of that command, another {n+} literal included (MULTIAPPEND)
    c.send_raw(b"A3 APPEND INBOX {5000+}\r\n" + b"z" * 5000 + b" {10+}\r\n0123456789\r\n")
    got = c.read_until(r"^A3 (OK|NO|BAD)")
    assert re.search(r"^A3 BAD \[TOOBIG\]", got, re.M), got
    got = cmd(c, "n", "NOOP")
    assert status(got, "n") == "OK" and "BAD" not in got, got
    # a synchronizing literal of any size is still fine
    c.send(b"A4 APPEND INBOX {%d}" % len(data))
    c.read_until(r"^\+ ")
    c.send_raw(data + b"\r\n")
    assert status(c.read_until(r"^A4 (OK|NO|BAD)"), "A4") == "OK"
    got = cmd(c, "st", "STATUS INBOX (MESSAGES)")
    assert "MESSAGES 1" in got, got
    # a further {n+} of a refused command that is past any limit: its octets cannot be
    # skipped for ever, so the session ends (RFC 7888 §4 choice 2, with TOOBIG)
    c.send_raw(b"A5 APPEND INBOX {5000+}\r\n" + b"z" * 5000 + b" {99999999999+}\r\n")
    got = c.read_until(r"^\* BYE")
    assert re.search(r"^A5 BAD \[TOOBIG\]", got, re.M), got
    assert "* BYE [TOOBIG]" in got and c.is_closed(), got
