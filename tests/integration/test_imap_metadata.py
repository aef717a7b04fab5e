"""
test_imap_metadata.py - METADATA (RFC 5464) against the real binary: SETMETADATA and
GETMETADATA on a mailbox and on the server (""), the RFC's example commands, DEPTH and
MAXSIZE (LONGENTRIES), removal with NIL, the limits ([METADATA MAXSIZE], [METADATA
TOOMANY]), bad entry names, and entries following RENAME and DELETE.
"""

import re

from test_imap_lib import converse, fresh_user, imap_client


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def metadata(got):
    m = re.search(r"^\* METADATA (\S+) \((.*)\)\r$", got, re.M)
    assert m, got
    return m.group(1), m.group(2)


def test_set_get_delete(tern):
    user, pw = fresh_user(tern, "meta")
    c = login(tern, user, pw)
    assert "METADATA" in cmd(c, "a", "CAPABILITY")
    # RFC 5464 §4.3 example shapes
    got = cmd(c, "a1", 'SETMETADATA INBOX (/private/comment "My own comment")')
    assert re.search(r"^a1 OK", got, re.M), got
    got = cmd(c, "a2", "GETMETADATA INBOX /private/comment")
    assert metadata(got) == ('"INBOX"', '/private/comment "My own comment"'), got
    cmd(c, "a3", 'SETMETADATA "" (/shared/comment "Shared comment")')
    got = cmd(c, "a4", 'GETMETADATA "" /shared/comment')
    assert metadata(got) == ('""', '/shared/comment "Shared comment"'), got
    # several entries; a missing one is NIL; names are case-insensitive
    got = cmd(c, "a5", "GETMETADATA INBOX (/private/COMMENT /shared/comment)")
    assert metadata(got)[1] == '/private/comment "My own comment" /shared/comment NIL', got
    # NIL removes (a quoted "NIL" is a value)
    cmd(c, "a6", "SETMETADATA INBOX (/private/comment NIL)")
    got = cmd(c, "a7", "GETMETADATA INBOX /private/comment")
    assert metadata(got)[1] == "/private/comment NIL", got
    cmd(c, "a8", 'SETMETADATA INBOX (/private/comment "NIL")')
    assert metadata(cmd(c, "a9", "GETMETADATA INBOX /private/comment"))[1] == \
        '/private/comment "NIL"'


def test_depth_and_maxsize(tern):
    user, pw = fresh_user(tern, "meta2")
    c = login(tern, user, pw)
    cmd(c, "a", 'SETMETADATA INBOX (/private/x "1" /private/x/a "22" /private/x/a/b "333")')
    got = cmd(c, "b", "GETMETADATA (DEPTH 0) INBOX /private/x")
    assert metadata(got)[1] == '/private/x "1"', got
    got = cmd(c, "c", "GETMETADATA (DEPTH 1) INBOX /private/x")
    assert metadata(got)[1] == '/private/x "1" /private/x/a "22"', got
    got = cmd(c, "d", "GETMETADATA (DEPTH infinity) INBOX /private/x")
    assert metadata(got)[1] == '/private/x "1" /private/x/a "22" /private/x/a/b "333"', got
    # §4.2.1 MAXSIZE: longer values are left out and the longest is reported
    got = cmd(c, "e", "GETMETADATA (MAXSIZE 2 DEPTH infinity) INBOX /private/x")
    assert metadata(got)[1] == '/private/x "1" /private/x/a "22"', got
    assert re.search(r"^e OK \[METADATA LONGENTRIES 3\]", got, re.M), got
    # a value with a NUL comes back as literal8
    c.send_raw(b"f SETMETADATA INBOX (/private/bin ~{3+}\r\na\x00b)\r\n")
    assert re.search(r"^f OK", converse(c, [(None, r"^f (OK|NO|BAD)")])[0], re.M)
    c.send("g GETMETADATA INBOX /private/bin")
    raw = b""
    while b"g OK" not in raw:
        raw += c.sock.recv(4096)
    assert b"/private/bin ~{3}\r\na\x00b)" in raw, raw


def test_errors_and_limits(tern):
    user, pw = fresh_user(tern, "meta3")
    c = login(tern, user, pw)
    for bad in ('SETMETADATA INBOX (/comment "x")', 'SETMETADATA INBOX (/private/ "x")',
                'SETMETADATA INBOX (/private/a//b "x")', 'SETMETADATA INBOX (/private/a* "x")',
                'SETMETADATA INBOX (/private/a)', "GETMETADATA (DEPTH 2) INBOX /private/a",
                "GETMETADATA INBOX", "GETMETADATA (FOO 1) INBOX /private/a"):
        assert re.search(r"^b BAD", cmd(c, "b", bad), re.M), bad
    got = cmd(c, "c", 'SETMETADATA Nope (/private/a "x")')
    assert re.search(r"^c NO", got, re.M), got
    big = "x" * 20000
    c.send(f"d SETMETADATA INBOX (/private/big {{{len(big)}+}}")
    got = converse(c, [(big + ")", r"^d (OK|NO|BAD)")])[0]
    assert re.search(r"^d NO \[METADATA MAXSIZE 16384\]", got, re.M), got
    # entries follow RENAME and go with DELETE
    cmd(c, "e", "CREATE Box")
    cmd(c, "f", 'SETMETADATA Box (/private/note "kept")')
    cmd(c, "g", "RENAME Box Box2")
    assert metadata(cmd(c, "h", "GETMETADATA Box2 /private/note"))[1] == '/private/note "kept"'
    cmd(c, "i", "DELETE Box2")
    cmd(c, "j", "CREATE Box2")
    assert metadata(cmd(c, "k", "GETMETADATA Box2 /private/note"))[1] == "/private/note NIL"


def test_too_many_entries(tern):
    user, pw = fresh_user(tern, "meta4")
    c = login(tern, user, pw)
    for k in range(10):  # 10 x 100 = the 1,000 entries a user may have
        pairs = " ".join(f'/private/e{k}/{i} "v"' for i in range(100))
        assert re.search(rf"^s{k} OK", cmd(c, f"s{k}", f"SETMETADATA INBOX ({pairs})"), re.M)
    got = cmd(c, "t", 'SETMETADATA INBOX (/private/one/more "v")')
    assert re.search(r"^t NO \[METADATA TOOMANY\]", got, re.M), got
    # replacing an existing entry is still fine
    assert re.search(r"^u OK", cmd(c, "u", 'SETMETADATA INBOX (/private/e0/0 "w")'), re.M)
