"""
test_imap_objectid.py - small extensions on the wire against the real binary: STATUS=SIZE
(RFC 8438), APPENDLIMIT (RFC 7889), OBJECTID (RFC 8474: MAILBOXID, EMAILID, THREADID,
SEARCH EMAILID), SAVEDATE (RFC 8514: FETCH SAVEDATE, SEARCH SAVED*), UNAUTHENTICATE
(RFC 8437), REPLACE (RFC 8508) and PREVIEW (RFC 8970), with imaplib and raw sessions.
"""

import imaplib
import re
import time

from test_imap_lib import converse, fresh_user, imap_client, imaplib_login

MSG = "Subject: a\n\nhello\n"


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def test_capabilities_and_status_items(tern):
    user, pw = fresh_user(tern, "oid", messages=[MSG, MSG])
    c = login(tern, user, pw)
    caps = re.search(r"^\* CAPABILITY (.*)\r$", cmd(c, "a", "CAPABILITY"), re.M).group(1).split()
    for cap in ("STATUS=SIZE", "OBJECTID", "SAVEDATE", "UNAUTHENTICATE"):
        assert cap in caps, caps
    limit = [int(x.split("=")[1]) for x in caps if x.startswith("APPENDLIMIT=")]
    assert limit and limit[0] > 0, caps
    got = cmd(c, "b", "STATUS INBOX (SIZE APPENDLIMIT MAILBOXID MESSAGES)")
    items = dict(re.findall(r"(SIZE|APPENDLIMIT|MESSAGES) (\d+)", got))
    assert int(items["SIZE"]) == 2 * len(MSG.replace("\n", "\r\n")), got
    assert int(items["APPENDLIMIT"]) == limit[0], got
    assert int(items["MESSAGES"]) == 2, got
    mbid = re.search(r"MAILBOXID \((M[0-9a-f]+)\)", got).group(1)
    # SELECT names it, it survives RENAME, CREATE tells a new one (RFC 8474 §4)
    got = cmd(c, "c", "SELECT INBOX")
    assert f"[MAILBOXID ({mbid})]" in got, got
    got = cmd(c, "d", "CREATE Box1")
    new_id = re.search(r"^d OK \[MAILBOXID \((M[0-9a-f]+)\)\]", got, re.M).group(1)
    assert new_id != mbid
    cmd(c, "e", "RENAME Box1 Box2")
    got = cmd(c, "f", "STATUS Box2 (MAILBOXID)")
    assert f"MAILBOXID ({new_id})" in got, got
    # LIST-STATUS takes the new items too
    got = cmd(c, "g", 'LIST "" Box2 RETURN (STATUS (MAILBOXID APPENDLIMIT))')
    assert f"MAILBOXID ({new_id})" in got and "APPENDLIMIT" in got, got


def test_emailid_and_savedate(tern):
    user, pw = fresh_user(tern, "oid2", messages=[MSG, MSG])
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "a", "FETCH 1:2 (EMAILID THREADID SAVEDATE UID)")
    ids = re.findall(r"EMAILID \((E[0-9a-f]+)\)", got)
    assert len(ids) == 2 and ids[0] != ids[1], got
    assert got.count("THREADID NIL") == 2, got
    dates = re.findall(r'SAVEDATE "(\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d \+0000)"', got)
    assert len(dates) == 2, got
    # stable: the same id again, and SEARCH finds it (RFC 8474 §7)
    got2 = cmd(c, "b", "FETCH 2 (EMAILID)")
    assert ids[1] in got2
    got = cmd(c, "c", f"SEARCH EMAILID {ids[1]}")
    assert re.search(r"^\* SEARCH 2\r$", got, re.M), got
    got = cmd(c, "d", "SEARCH THREADID T123")
    assert re.search(r"^\* SEARCH\r$", got, re.M), got
    assert re.search(r"^e BAD", cmd(c, "e", "SEARCH EMAILID bad/id"), re.M)
    # RFC 8514 §4.3 search keys on the save date (today, in UTC)
    today = time.strftime("%d-%b-%Y", time.gmtime())
    got = cmd(c, "f", f"SEARCH SAVEDON {today} SAVEDATESUPPORTED")
    assert re.search(r"^\* SEARCH 1 2\r$", got, re.M), got
    got = cmd(c, "g", "SEARCH SAVEDBEFORE 1-Jan-2000")
    assert re.search(r"^\* SEARCH\r$", got, re.M), got
    got = cmd(c, "h", "SEARCH SAVEDSINCE 1-Jan-2000")
    assert re.search(r"^\* SEARCH 1 2\r$", got, re.M), got
    # an APPEND with an old internal date is still saved today
    m = imaplib_login(tern, user, pw)
    assert m.append("INBOX", None, '"01-Jan-2001 00:00:00 +0000"', b"Subject: x\r\n\r\ny\r\n")[0] == "OK"
    m.select("INBOX")
    typ, data = m.fetch("3", "(INTERNALDATE SAVEDATE)")
    text = data[0].decode()
    assert "2001" in text and today in text, text
    m.logout()


def test_threadid(tern):
    """RFC 8474 §5.2, §7: a thread's messages share a THREADID (here: the first message's
    id, from References, else In-Reply-To, else Message-ID), in every mailbox; a message
    with no id at all has none (NIL); SEARCH THREADID finds the thread."""
    thread = [
        "Message-ID: <root@x>\nSubject: plan\n\nroot\n",
        "Message-ID: <a1@x>\nReferences: <root@x>\nSubject: Re: plan\n\nr1\n",
        "Message-ID: <a2@x>\nIn-Reply-To: <root@x>\nSubject: Re: plan\n\nr2\n",
        "Message-ID: <a3@x>\nReferences: <root@x>\n <a1@x>\nSubject: Re: plan\n\nr3\n",
        "Message-ID: <other@x>\nSubject: plan\n\nanother thread, same subject\n",
        MSG,
    ]
    user, pw = fresh_user(tern, "thrid", messages=thread)
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "a", "FETCH 1:6 (THREADID)")
    ids = dict((int(n), t) for n, t in re.findall(r"^\* (\d+) FETCH \(THREADID \(?(\w+)", got,
                                                   re.M))
    assert len(ids) == 6, got
    assert ids[1] == ids[2] == ids[3] == ids[4] != ids[5], ids
    assert re.fullmatch(r"T[0-9a-f]{16}", ids[1]), ids
    assert ids[6] == "NIL", got
    got = cmd(c, "b", f"SEARCH THREADID {ids[1]}")
    assert re.search(r"^\* SEARCH 1 2 3 4\r$", got, re.M), got
    # the same in another mailbox: it follows from the message, not where it lies
    cmd(c, "c", "CREATE Other")
    cmd(c, "d", "COPY 3 Other")
    cmd(c, "e", "SELECT Other")
    got = cmd(c, "f", "FETCH 1 (THREADID)")
    assert f"THREADID ({ids[1]})" in got, got


def test_unauthenticate(tern):
    user, pw = fresh_user(tern, "unauth", messages=[MSG])
    c = login(tern, user, pw)
    cmd(c, "a", "ENABLE QRESYNC")
    cmd(c, "b", "SELECT INBOX")
    got = cmd(c, "c", "UNAUTHENTICATE")
    assert re.search(r"^c OK", got, re.M), got
    # back to the not-authenticated state: commands of the other states are refused
    assert re.search(r"^d (BAD|NO)", cmd(c, "d", "SELECT INBOX"), re.M)
    caps = cmd(c, "e", "CAPABILITY")
    assert "UNAUTHENTICATE" not in caps and "AUTH=" in caps, caps
    # the same connection logs in again, as another user too; ENABLE state was reset
    user2, pw2 = fresh_user(tern, "unauth2", messages=[MSG, MSG])
    converse(c, [(f"f LOGIN {user2} {pw2}", r"^f OK")])
    got = cmd(c, "g", "SELECT INBOX")
    assert "2 EXISTS" in got and "CLOSED" not in got, got
    assert re.search(r"^h BAD", cmd(c, "h", "SELECT INBOX (QRESYNC (1 1))"), re.M)
    assert re.search(r"^i BAD", cmd(c, "i", "UNAUTHENTICATE extra"), re.M)


def test_replace(tern):
    draft = "Subject: draft v{}\n\nversion {}\n"
    user, pw = fresh_user(tern, "repl", messages=[MSG, draft.format(1, 1)])
    c = login(tern, user, pw)
    cmd(c, "a", "SELECT INBOX")
    assert "REPLACE" in cmd(c, "b", "CAPABILITY")
    # RFC 8508 §3 example shape: REPLACE 2 with a new version, into the same mailbox
    new = draft.format(2, 2).replace("\n", "\r\n").encode()
    c.send(f"A003 REPLACE 2 INBOX (\\Seen \\Draft) {{{len(new)}}}")
    c.expect(r"^\+ ")
    c.send(new.decode() + "")
    got = converse(c, [("", r"^A003 (OK|NO|BAD)")])[0]
    m = re.search(r"^\* OK \[APPENDUID (\d+) (\d+)\] Replacement Message ID\r$", got, re.M)
    assert m, got
    assert re.search(r"^\* 2 EXPUNGE\r$", got, re.M), got
    assert re.search(r"^A003 OK Replace completed", got, re.M), got
    assert got.index("APPENDUID") < got.index("EXPUNGE")
    got = cmd(c, "d", "UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert "draft v1" not in got and "draft v2" in got and "\\Draft" in got, got
    # UID REPLACE into another mailbox, with QRESYNC: VANISHED
    cmd(c, "e", "CREATE Drafts")
    c2 = login(tern, user, pw)
    cmd(c2, "f", "ENABLE QRESYNC")
    cmd(c2, "g", "SELECT INBOX")
    uid = int(re.search(r"UID (\d+)", cmd(c2, "h", "FETCH 2 (UID)")).group(1))
    body = b"Subject: moved\r\n\r\nx\r\n"
    got = converse(c2, [(f"i UID REPLACE {uid} Drafts {{{len(body)}+}}\r\n" + body.decode() +
                         "\r\n", r"^i (OK|NO|BAD)")])[0]
    assert re.search(rf"^\* VANISHED {uid}\r$", got, re.M), got
    assert re.search(r"^\* OK \[APPENDUID \d+ 1\]", got, re.M), got
    # errors: no such message, read-only, two messages
    assert re.search(r"^j NO", cmd(c2, "j", "REPLACE 99 INBOX {1+}\r\nx"), re.M)
    cmd(c2, "k", "EXAMINE INBOX")
    assert re.search(r"^l NO", cmd(c2, "l", "REPLACE 1 INBOX {1+}\r\nx"), re.M)
    cmd(c2, "m", "SELECT INBOX")
    assert re.search(r"^n BAD", cmd(c2, "n", "REPLACE 1 INBOX {1+}\r\nx {1+}\r\ny"), re.M)


def test_preview(tern):
    html = ("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" +
            "PHA+SGVsbG8gPGI+d29ybGQ8L2I+ICZhbXA7IGFsbDwvcD4=\n")
    user, pw = fresh_user(tern, "prev", messages=["Subject: a\n\nFirst   line\nsecond line\n",
                                                   html])
    m = imaplib_login(tern, user, pw)
    assert "PREVIEW" in m.capability()[1][0].decode()
    m.select("INBOX")
    typ, data = m.fetch("1:2", "(PREVIEW)")
    assert typ == "OK", data
    text = b" ".join(x if isinstance(x, bytes) else b"".join(x) for x in data).decode()
    assert 'PREVIEW "First line second line"' in text, text
    assert 'PREVIEW "Hello world & all"' in text, text
    # RFC 8970 §3.1: PREVIEW (LAZY) gives the same; an unknown modifier is BAD
    typ, data = m.fetch("1", "(PREVIEW (LAZY) UID)")
    assert 'PREVIEW "First line second line"' in data[0].decode(), data
    try:
        m.fetch("1", "(PREVIEW (FOO))")
        assert False, "PREVIEW (FOO) accepted"
    except imaplib.IMAP4.error:
        pass
    m.logout()


def test_binary(tern):
    b64 = ("Content-Type: multipart/mixed; boundary=x\n\n--x\n"
           "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
           "AAECAwQ=\n--x\n"
           "Content-Type: text/plain\nContent-Transfer-Encoding: x-custom\n\nabc\n--x--\n")
    user, pw = fresh_user(tern, "bin", messages=[b64])
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    assert "BINARY" in cmd(c, "b", "CAPABILITY")
    cmd(c, "s", "SELECT INBOX")
    c.send("d FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[1]<1.2>)")
    raw = b""
    while not re.search(rb"^d (OK|NO|BAD)", raw, re.M):
        raw += c.sock.recv(65536)
    # RFC 3516: decoded bytes; a NUL makes it a literal8
    assert b"BINARY.SIZE[1] 5" in raw, raw
    assert b"BINARY[1] ~{5}\r\n\x00\x01\x02\x03\x04" in raw, raw
    assert b"BINARY[1]<1> {2}\r\n\x01\x02" in raw, raw  # no NUL in this range
    got = cmd(c, "e", "FETCH 1 (BINARY.PEEK[2])")
    assert re.search(r"^e NO \[UNKNOWN-CTE\]", got, re.M), got
    assert re.search(r"^f BAD", cmd(c, "f", "FETCH 1 (BINARY[1.HEADER])"), re.M)
    # APPEND with a literal8 holding NUL: stored in base64, BINARY gives the bytes back
    msg = (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
           b"\r\n\x00\xffdata\r\n")
    c.send_raw(b"g APPEND INBOX ~{%d+}\r\n" % len(msg) + msg + b"\r\n")
    got = converse(c, [(None, r"^g (OK|NO|BAD)")])[0]
    assert re.search(r"^g OK \[APPENDUID", got, re.M), got
    cmd(c, "n", "NOOP")
    c.send("h FETCH 2 (BODY.PEEK[1] BINARY.PEEK[1])")
    raw = b""
    while not re.search(rb"^h (OK|NO|BAD)", raw, re.M):
        raw += c.sock.recv(65536)
    assert b"BODY[1] {14}\r\nAP9kYXRhDQo=\r\n" in raw, raw  # base64, no NUL on the wire
    assert b"BINARY[1] ~{8}\r\n\x00\xffdata\r\n" in raw, raw
