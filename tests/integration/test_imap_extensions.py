"""
test_imap_extensions.py - IMAP extensions on the wire, against the real binary:
MULTIAPPEND (RFC 3502) with synchronising literals and LITERAL+, APPENDUID with a UID set
(RFC 4315), all-or-nothing, spilled literals, the message-count and total-size bounds;
LIST-EXTENDED (RFC 5258: selection/return options, several patterns, \\NonExistent,
\\Subscribed, CHILDINFO), SPECIAL-USE selection (RFC 6154 §5.1) and LIST-STATUS (RFC 5819).
"""

import re

from test_imap_lib import (converse, fresh_user, imap_client, imaplib_login, sample_message,
                           wire)

LIST_RE = r'^\* LIST \(([^)]*)\) "/" ("(?:[^"\\]|\\.)*"|[^ \r]+)( \(.*\))?\r$'


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def unquote(name):
    return name[1:-1].replace('\\"', '"').replace("\\\\", "\\") if name.startswith('"') else name


def list_lines(text):
    """[(attrs set, name, extended-data or '')] of the * LIST lines, in order."""
    out = []
    for attrs, name, ext in re.findall(LIST_RE, text, re.M):
        out.append((set(attrs.split()), unquote(name), ext.strip()))
    return out


def cmd(c, tag, line, done=None):
    return converse(c, [(f"{tag} {line}", done or rf"^{tag} (OK|NO|BAD)")])[0]


def status_of(c, box):
    got = cmd(c, "st", f"STATUS {box} (MESSAGES UIDNEXT)")
    m = re.search(r"MESSAGES (\d+) UIDNEXT (\d+)", got)
    assert m, got
    return int(m.group(1)), int(m.group(2))


def fetch_all(m, box):
    """{uid: (flags text, internaldate text, body bytes)} via imaplib."""
    assert m.select(box)[0] == "OK"
    typ, data = m.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK", data
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head = item[0].decode()
        uid = int(re.search(r"UID (\d+)", head).group(1))
        flags = re.search(r"FLAGS \(([^)]*)\)", head).group(1)
        date = re.search(r'INTERNALDATE "([^"]+)"', head).group(1)
        out[uid] = (flags, date, item[1])
    return out


# ---- MULTIAPPEND -------------------------------------------------------------------------

def test_capabilities_advertised(tern):
    user, pw = fresh_user(tern, "xcap")
    c = login(tern, user, pw)
    got = cmd(c, "b", "CAPABILITY")
    caps = re.search(r"^\* CAPABILITY (.*)\r$", got, re.M).group(1).split()
    for cap in ("MULTIAPPEND", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "UIDPLUS"):
        assert cap in caps, caps


def test_multiappend_sync_literals(tern):
    user, pw = fresh_user(tern, "xma")
    c = login(tern, user, pw)
    cmd(c, "b", "CREATE Box")
    m1, m2, m3 = (wire(sample_message(i)) for i in (1, 2, 3))
    c.send(f"c APPEND Box (\\Seen) {{{len(m1)}}}")
    c.expect(r"^\+ ")
    c.send_raw(m1 + f' (\\Flagged $Work) "01-Feb-2020 10:11:12 +0100" {{{len(m2)}}}\r\n'.encode())
    c.expect(r"^\+ ")
    c.send_raw(m2 + f" {{{len(m3)}}}\r\n".encode())
    c.expect(r"^\+ ")
    c.send_raw(m3 + b"\r\n")
    got = c.expect(r"^c (OK|NO|BAD)")
    mm = re.search(r"^c OK \[APPENDUID (\d+) (\d+):(\d+)\] ", got, re.M)
    assert mm, got
    first, last = int(mm.group(2)), int(mm.group(3))
    assert last == first + 2
    im = imaplib_login(tern, user, pw)
    msgs = fetch_all(im, "Box")
    assert sorted(msgs) == [first, first + 1, first + 2]
    assert msgs[first][2] == m1 and msgs[first + 1][2] == m2 and msgs[first + 2][2] == m3
    assert "\\Seen" in msgs[first][0] and "\\Flagged" not in msgs[first][0]
    assert "\\Flagged" in msgs[first + 1][0] and "$Work" in msgs[first + 1][0]
    assert "\\Seen" not in msgs[first + 1][0]
    assert msgs[first + 1][1] == "01-Feb-2020 09:11:12 +0000" or \
        msgs[first + 1][1] == "01-Feb-2020 10:11:12 +0100", msgs[first + 1][1]
    # the UIDVALIDITY in APPENDUID is the mailbox's
    got = cmd(c, "d", "STATUS Box (UIDVALIDITY MESSAGES)")
    assert f"UIDVALIDITY {mm.group(1)}" in got and "MESSAGES 3" in got, got


def test_multiappend_literal_plus_and_selected_exists(tern):
    user, pw = fresh_user(tern, "xmp", [sample_message(9)])
    c = login(tern, user, pw)
    cmd(c, "b", "SELECT INBOX")
    parts = [wire(sample_message(i)) for i in range(4)]
    data = b"c APPEND INBOX"
    for p in parts:
        data += f" {{{len(p)}+}}\r\n".encode() + p
    c.send_raw(data + b"\r\n")
    got = c.expect(r"^c (OK|NO|BAD)")
    assert re.search(r"^c OK \[APPENDUID \d+ 2:5\] ", got, re.M), got
    # appended to the selected mailbox: the client hears EXISTS with the reply
    assert "* 5 EXISTS" in got, got
    im = imaplib_login(tern, user, pw)
    msgs = fetch_all(im, "INBOX")
    assert [msgs[u][2] for u in (2, 3, 4, 5)] == parts


def test_multiappend_all_or_nothing(tern):
    user, pw = fresh_user(tern, "xmn")
    c = login(tern, user, pw)
    cmd(c, "b", "CREATE Box")
    m1, m2 = wire(sample_message(1)), wire(sample_message(2))
    before = status_of(c, "Box")
    # a bad flag on the second message: BAD, and the first is not stored either
    c.send_raw(f"c APPEND Box {{{len(m1)}+}}\r\n".encode() + m1 +
               f" (\\Bogus) {{{len(m2)}+}}\r\n".encode() + m2 + b"\r\n")
    got = c.expect(r"^c (OK|NO|BAD)")
    assert re.search(r"^c BAD ", got, re.M), got
    # a bad date-time on the second message
    c.send_raw(f"d APPEND Box {{{len(m1)}+}}\r\n".encode() + m1 +
               f' "99-Foo-2020 10:00:00 +0000" {{{len(m2)}+}}\r\n'.encode() + m2 + b"\r\n")
    got = c.expect(r"^d (OK|NO|BAD)")
    assert re.search(r"^d BAD ", got, re.M), got
    # a second message that is not a literal
    c.send_raw(f"e APPEND Box {{{len(m1)}+}}\r\n".encode() + m1 + b" NIL\r\n")
    got = c.expect(r"^e (OK|NO|BAD)")
    assert re.search(r"^e BAD ", got, re.M), got
    assert status_of(c, "Box") == before
    # a missing mailbox: NO [TRYCREATE], nothing created
    c.send_raw(f"f APPEND Nope {{{len(m1)}+}}\r\n".encode() + m1 +
               f" {{{len(m2)}+}}\r\n".encode() + m2 + b"\r\n")
    got = c.expect(r"^f (OK|NO|BAD)")
    assert re.search(r"^f NO \[TRYCREATE\] ", got, re.M), got
    got = cmd(c, "g", 'LIST "" Nope')
    assert "* LIST" not in got
    # the session is still in step
    got = cmd(c, "h", "NOOP")
    assert re.search(r"^h OK", got, re.M)
    # no file left behind in the Maildir
    md = tern.maildir(user)
    import os
    for sub in ("tmp", "cur", "new"):
        path = os.path.join(md, ".Box", sub)
        assert os.listdir(path) == [], (sub, os.listdir(path))


def test_multiappend_big_literals_spilled(tern):
    """Big literals go to the spill file, each at its own offset; many medium ones pass the
    in-memory budget and spill too. Every byte must come back as sent."""
    user, pw = fresh_user(tern, "xmb")
    c = login(tern, user, pw)
    cmd(c, "b", "CREATE Big")
    parts = []
    for i, size in enumerate([300_000, 1000, 400_000, 200_000, 200_000, 200_000, 200_000,
                              200_000, 200_000, 5]):
        body = (f"line {i} " * (size // 8 + 1))[:size]
        body = "\n".join(body[k:k + 70] for k in range(0, len(body), 70))
        parts.append(wire(f"Subject: big {i}\n\n{body}\n"))
    c.send(f"c APPEND Big {{{len(parts[0])}}}")
    c.expect(r"^\+ ")
    for i, p in enumerate(parts):
        if i + 1 < len(parts):
            nxt = parts[i + 1]
            sync = i % 2 == 0
            c.send_raw(p + f" {{{len(nxt)}{'' if sync else '+'}}}\r\n".encode())
            if sync:
                c.expect(r"^\+ ")
        else:
            c.send_raw(p + b"\r\n")
    got = c.expect(r"^c (OK|NO|BAD)", timeout=60)
    assert re.search(rf"^c OK \[APPENDUID \d+ 1:{len(parts)}\] ", got, re.M), got
    im = imaplib_login(tern, user, pw)
    msgs = fetch_all(im, "Big")
    assert [msgs[u][2] for u in range(1, len(parts) + 1)] == parts


def test_multiappend_message_count_limit(tern):
    """At most 1000 messages in one APPEND: the 1001st literal is refused with [LIMIT]
    before its data is sent, and nothing of the command is stored."""
    user, pw = fresh_user(tern, "xml")
    c = login(tern, user, pw)
    cmd(c, "b", "CREATE Box")
    data = b"c APPEND Box"
    for _ in range(1000):
        data += b" {1+}\r\nx"
    c.send_raw(data + b" {1}\r\n")
    got = c.expect(r"^c (OK|NO|BAD)", timeout=60)
    assert re.search(r"^c NO \[LIMIT\] ", got, re.M), got
    assert status_of(c, "Box")[0] == 0
    # with LITERAL+ the data follows regardless: the server cannot resync and says BYE
    c2 = login(tern, user, pw)
    data = b"d APPEND Box" + b" {1+}\r\nx" * 1001 + b"\r\n"
    c2.send_raw(data)
    got = c2.expect(r"^\* BYE ", timeout=60)
    assert c2.is_closed()
    assert status_of(c, "Box")[0] == 0


def test_multiappend_total_size_limit(tern_factory):
    """Each message is within smtp.max_message_size and all of them within 4 times it."""
    srv = tern_factory({"smtp.max_message_size": "100000"})
    user, pw = fresh_user(srv, "xmt")
    c = login(srv, user, pw)
    cmd(c, "b", "CREATE Box")
    chunk = b"x" * 90_000
    c.send("c APPEND Box {90000}")
    c.expect(r"^\+ ")
    for _ in range(3):
        c.send_raw(chunk + b" {90000}\r\n")
        c.expect(r"^\+ ")
    c.send_raw(chunk + b" {90000}\r\n")  # the 5th would pass 400000 octets
    got = c.expect(r"^c (OK|NO|BAD)")
    assert re.search(r"^c NO \[TOOBIG\] ", got, re.M), got
    assert status_of(c, "Box")[0] == 0
    # four fit
    c.send("d APPEND Box {90000}")
    c.expect(r"^\+ ")
    for _ in range(3):
        c.send_raw(chunk + b" {90000}\r\n")
        c.expect(r"^\+ ")
    c.send_raw(chunk + b"\r\n")
    got = c.expect(r"^d (OK|NO|BAD)")
    assert re.search(r"^d OK \[APPENDUID \d+ 1:4\] ", got, re.M), got


def test_single_append_unchanged(tern):
    user, pw = fresh_user(tern, "xms")
    c = login(tern, user, pw)
    m1 = wire(sample_message(1))
    c.send_raw(f"c APPEND INBOX (\\Seen) {{{len(m1)}+}}\r\n".encode() + m1 + b"\r\n")
    got = c.expect(r"^c (OK|NO|BAD)")
    assert re.search(r"^c OK \[APPENDUID \d+ 1\] Append completed\.\r$", got, re.M), got
    got = cmd(c, "d", 'APPEND INBOX "not a date" {1+}\r\nx')
    assert re.search(r"^d BAD Invalid date-time\.", got, re.M), got
    got = cmd(c, "e", "APPEND INBOX")
    assert re.search(r"^e BAD Usage: APPEND ", got, re.M), got


# ---- LIST-EXTENDED / SPECIAL-USE / LIST-STATUS -------------------------------------------

def setup_tree(tern, prefix, messages=()):
    user, pw = fresh_user(tern, prefix, messages)
    c = login(tern, user, pw)
    for box in ("A/B", "Foo", "Foo/Bar", "Plain"):
        cmd(c, "b", f"CREATE {box}")
    for box in ("A/B", "Foo/Bar", "INBOX"):
        cmd(c, "c", f"SUBSCRIBE {box}")
    cmd(c, "c", "UNSUBSCRIBE Plain")
    cmd(c, "c", "UNSUBSCRIBE Foo")
    return user, pw, c


def names(lines):
    return [n for _, n, _ in lines]


def test_list_plain_forms_unchanged(tern):
    user, pw, c = setup_tree(tern, "xlp")
    got = cmd(c, "d", 'LIST "" *')
    lines = {n: a for a, n, _ in list_lines(got)}
    assert lines["A"] == {"\\HasChildren", "\\Noselect"}
    assert lines["Foo"] == {"\\HasChildren"} and lines["Plain"] == {"\\HasNoChildren"}
    assert lines["Sent"] == {"\\HasNoChildren", "\\Sent"}
    got = cmd(c, "e", 'LIST "" ""')
    assert '* LIST (\\Noselect) "/" ""\r\n' in got
    got = cmd(c, "f", "LIST foo")
    assert re.search(r"^f BAD Usage: LIST reference pattern", got, re.M), got


def test_list_selection_subscribed(tern):
    user, pw, c = setup_tree(tern, "xls")
    subscribed = set(names(list_lines(cmd(c, "d", 'LSUB "" *').replace("* LSUB", "* LIST"))))
    assert {"A/B", "Foo/Bar", "INBOX"} <= subscribed and "Plain" not in subscribed
    got = cmd(c, "e", 'LIST (SUBSCRIBED) "" *')
    lines = list_lines(got)
    assert set(names(lines)) == subscribed
    assert all(a == {"\\Subscribed"} for a, _, _ in lines), lines
    # RECURSIVEMATCH: parents of subscribed mailboxes, with CHILDINFO; \NonExistent for A
    got = cmd(c, "f", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" %')
    by = {n: (a, x) for a, n, x in list_lines(got)}
    assert by["A"] == ({"\\NonExistent"}, '("CHILDINFO" ("SUBSCRIBED"))'), by
    assert by["Foo"] == (set(), '("CHILDINFO" ("SUBSCRIBED"))'), by
    assert by["INBOX"] == ({"\\Subscribed"}, ""), by
    assert "Plain" not in by and "A/B" not in by
    # with CHILDREN asked for as well
    got = cmd(c, "g", 'LIST (SUBSCRIBED) "" Foo* RETURN (CHILDREN)')
    assert list_lines(got) == [({"\\Subscribed", "\\HasNoChildren"}, "Foo/Bar", "")], got


def test_list_recursivematch_alone_is_bad(tern):
    user, pw, c = setup_tree(tern, "xlr")
    for opts in ("(RECURSIVEMATCH)", "(REMOTE RECURSIVEMATCH)"):
        got = cmd(c, "d", f'LIST {opts} "" %')
        assert re.search(r"^d BAD ", got, re.M), got
    for bad in ('LIST (BOGUS) "" *', 'LIST "" * RETURN (BOGUS)', 'LIST "" * RETURN',
                'LIST "" * RETURN (STATUS)', 'LIST "" * RETURN (STATUS (BOGUS))',
                'LIST "" ()', 'LIST "" * FOO (CHILDREN)', 'LIST (SUBSCRIBED) ""'):
        got = cmd(c, "e", bad)
        assert re.search(r"^e BAD ", got, re.M), (bad, got)


def test_list_remote_and_empty_options(tern):
    user, pw, c = setup_tree(tern, "xle")
    plain = names(list_lines(cmd(c, "d", 'LIST "" *')))
    for line in ('LIST () "" *', 'LIST (REMOTE) "" *', 'LIST "" * RETURN ()'):
        got = cmd(c, "e", line)
        lines = list_lines(got)
        assert names(lines) == plain, (line, got)
        # extended LIST gives only the attributes asked for; A is only a name
        for a, n, _ in lines:
            assert a == ({"\\NonExistent"} if n == "A" else set()), (line, a, n)


def test_list_return_options(tern):
    user, pw, c = setup_tree(tern, "xlo")
    got = cmd(c, "d", 'LIST "" % RETURN (CHILDREN SUBSCRIBED SPECIAL-USE)')
    by = {n: a for a, n, _ in list_lines(got)}
    assert by["A"] == {"\\NonExistent", "\\HasChildren"}
    assert by["Foo"] == {"\\HasChildren"}
    assert by["INBOX"] == {"\\Subscribed", "\\HasNoChildren"}
    assert by["Sent"] >= {"\\Sent", "\\HasNoChildren"}
    assert by["Plain"] == {"\\HasNoChildren"}


def test_list_special_use_selection(tern):
    user, pw, c = setup_tree(tern, "xlu")
    plain = list_lines(cmd(c, "d", 'LIST "" *'))
    specials = {n: a & {"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All",
                        "\\Flagged"} for a, n, _ in plain}
    specials = {n: a for n, a in specials.items() if a}
    assert "Sent" in specials
    got = cmd(c, "e", 'LIST (SPECIAL-USE) "" *')
    lines = list_lines(got)
    assert {n: a for a, n, _ in lines} == specials, got
    got = cmd(c, "f", 'LIST (SPECIAL-USE RECURSIVEMATCH) "" *')
    assert {n: a for a, n, _ in list_lines(got)} == specials, got


def test_list_multiple_patterns(tern):
    user, pw, c = setup_tree(tern, "xlm")
    got = cmd(c, "d", 'LIST "" ("INBOX" "Fo*")')
    assert names(list_lines(got)) == ["INBOX", "Foo", "Foo/Bar"], got
    # a mailbox matching several patterns is listed once; empty patterns are ignored
    got = cmd(c, "e", 'LIST "" ("*" "inbox" "" "Foo")')
    n = names(list_lines(got))
    assert len(n) == len(set(n)) and n.count("INBOX") == 1 and "Foo" in n
    got = cmd(c, "f", 'LIST "" ("" "")')
    assert "* LIST" not in got and re.search(r"^f OK", got, re.M)
    # reference prefixed to each pattern
    got = cmd(c, "g", 'LIST "Foo/" ("%" "Nothing")')
    assert names(list_lines(got)) == ["Foo/Bar"], got
    # bounded: 64 patterns pass, 65 are refused
    ok = "(" + " ".join(f'"p{i}"' for i in range(63)) + ' "Plain")'
    got = cmd(c, "h", f'LIST "" {ok}')
    assert names(list_lines(got)) == ["Plain"], got
    bad = "(" + " ".join(f'"p{i}"' for i in range(65)) + ")"
    got = cmd(c, "i", f'LIST "" {bad}')
    assert re.search(r"^i BAD ", got, re.M), got


def test_list_status(tern):
    msgs = [sample_message(i) for i in range(3)]
    user, pw, c = setup_tree(tern, "xlt", msgs)
    cmd(c, "d", "SELECT INBOX")
    cmd(c, "d", "STORE 1 +FLAGS (\\Seen)")
    got = cmd(c, "e", 'LIST "" * RETURN (STATUS (MESSAGES UNSEEN))')
    lines = got.splitlines()
    # every selectable mailbox's LIST line is followed by its STATUS; A is not selectable
    listed = [ln for ln in lines if ln.startswith("* LIST")]
    statuses = [ln for ln in lines if ln.startswith("* STATUS")]
    assert len(statuses) == len(listed) - 1
    for i, ln in enumerate(lines):
        if ln.startswith("* LIST"):
            name = unquote(re.match(LIST_RE, ln + "\r").group(2))
            if name == "A":
                assert not lines[i + 1].startswith("* STATUS"), lines
            else:
                nxt = lines[i + 1]
                assert re.match(rf'^\* STATUS "?{re.escape(name)}"? \(MESSAGES \d+ UNSEEN \d+\)$',
                                nxt), (ln, nxt)
    assert re.search(r'^\* STATUS "?INBOX"? \(MESSAGES 3 UNSEEN 2\)\r$', got, re.M), got
    # with a selection option, and with the other STATUS items
    got = cmd(c, "f", 'LIST (SUBSCRIBED) "" INBOX RETURN (STATUS (UIDNEXT MESSAGES))')
    assert re.search(r'^\* LIST \(\\Subscribed\) "/" "?INBOX"?\r\n\* STATUS "?INBOX"? '
                     r'\(MESSAGES 3 UIDNEXT 4\)\r$', got, re.M), got
    got = cmd(c, "g", 'LIST "" Nothing RETURN (STATUS (MESSAGES))')
    assert "* STATUS" not in got and re.search(r"^g OK", got, re.M)


def test_list_extended_imaplib(tern):
    """Python's imaplib sends the extended forms through its plain list()."""
    user, pw, c = setup_tree(tern, "xli")
    m = imaplib_login(tern, user, pw)
    typ, data = m.list('""', '"*" RETURN (SPECIAL-USE)')
    assert typ == "OK", data
    assert any(b"\\Sent" in d and d.endswith(b'"Sent"') for d in data), data
    typ, data = m.list('""', '("INBOX" "Plain")')
    assert typ == "OK" and len(data) == 2, data


# ---- ESEARCH (RFC 4731) -------------------------------------------------------------------

def test_esearch_return_options(tern):
    user, pw = fresh_user(tern, "xes", [sample_message(i) for i in range(5)])
    c = login(tern, user, pw)
    got = cmd(c, "a", "CAPABILITY")
    assert " ESEARCH" in got
    cmd(c, "b", "SELECT INBOX")
    cmd(c, "c", "STORE 2,4 +FLAGS (\\Seen)")
    got = cmd(c, "d", "SEARCH RETURN (MIN MAX COUNT ALL) ALL")
    assert '* ESEARCH (TAG "d") MIN 1 MAX 5 ALL 1:5 COUNT 5\r\n' in got, got
    got = cmd(c, "e", "SEARCH RETURN (ALL COUNT MAX MIN) UNSEEN")
    assert '* ESEARCH (TAG "e") MIN 1 MAX 5 ALL 1,3,5 COUNT 3\r\n' in got, got
    # RETURN () is RETURN (ALL); UID form carries UID and UIDs
    got = cmd(c, "f", "UID SEARCH RETURN () 1:*")
    assert '* ESEARCH (TAG "f") UID ALL 1:5\r\n' in got, got
    got = cmd(c, "g", "UID SEARCH RETURN (COUNT) SEEN")
    assert '* ESEARCH (TAG "g") UID COUNT 2\r\n' in got, got
    # nothing found: only COUNT is given
    got = cmd(c, "h", "SEARCH RETURN (MIN MAX ALL COUNT) UID 999")
    assert '* ESEARCH (TAG "h") COUNT 0\r\n' in got, got
    got = cmd(c, "i", "SEARCH RETURN (MIN) CHARSET UTF-8 ALL")
    assert '* ESEARCH (TAG "i") MIN 1\r\n' in got, got
    # no plain * SEARCH line with RETURN, and the plain form is unchanged
    assert "* SEARCH" not in got
    got = cmd(c, "j", "SEARCH UNSEEN")
    assert "* SEARCH 1 3 5\r\n" in got and "ESEARCH" not in got, got
    for bad in ("SEARCH RETURN (FOO) ALL", "SEARCH RETURN MIN ALL", "SEARCH RETURN (MIN)", "SEARCH RETURN (" + "MIN " * 17 + ") ALL"):
        got = cmd(c, "k", bad)
        assert re.search(r"^k BAD ", got, re.M), (bad, got)
    # CONDSTORE: the highest MODSEQ of what matched
    cmd(c, "l", "ENABLE CONDSTORE")
    got = cmd(c, "m", "SEARCH RETURN (COUNT) MODSEQ 1")
    assert re.search(r'^\* ESEARCH \(TAG "m"\) COUNT 5 MODSEQ \d+\r$', got, re.M), got


def test_append_spilled_mailbox_name(tern):
    """A mailbox name as big as a spilled literal is refused, not read (its bytes are in
    the spill file), and the message after it is not stored."""
    user, pw = fresh_user(tern, "xsn")
    c = login(tern, user, pw)
    c.send_raw(b"c APPEND {300000+}\r\n" + b"x" * 300000 + b" {5+}\r\nhello\r\n")
    got = c.expect(r"^c (OK|NO|BAD)")
    assert re.search(r"^c BAD Usage: APPEND ", got, re.M), got
    assert status_of(c, "INBOX")[0] == 0


def test_multiappend_over_quota_stores_nothing(tern):
    """RFC 9208: the quota must hold the whole MULTIAPPEND, which is stored all or none:
    each message fits, together they do not -> NO [OVERQUOTA], nothing stored."""
    user, pw = fresh_user(tern, "xmq")
    tern.cli("user", "quota", user, str(20 * 1024))
    c = login(tern, user, pw)
    part = wire(sample_message(1, body="x" * 8000 + "\n"))
    data = b"c APPEND INBOX"
    for _ in range(3):
        data += f" {{{len(part)}+}}\r\n".encode() + part
    c.send_raw(data + b"\r\n")
    got = c.expect(r"^c (OK|NO|BAD)")
    assert re.search(r"^c NO \[OVERQUOTA\] ", got, re.M), got
    assert status_of(c, "INBOX")[0] == 0
    # two fit
    c.send_raw(b"d APPEND INBOX" + (f" {{{len(part)}+}}\r\n".encode() + part) * 2 + b"\r\n")
    got = c.expect(r"^d (OK|NO|BAD)")
    assert re.search(r"^d OK \[APPENDUID \d+ 1:2\] ", got, re.M), got
