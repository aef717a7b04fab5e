"""
test_imap_search.py - IMAP SEARCH (RFC 3501 §6.4.4) against the real binary with imaplib:
one test per search key, sequence sets and parentheses, CHARSET handling, and matching
through MIME decoding (RFC 2047 header words in B and Q, base64 and quoted-printable
bodies, ISO-8859-1 and KOI8-R text converted to UTF-8, case-insensitive beyond ASCII,
nested message/rfc822, attachments not searched as text).
"""

import imaplib
import re

import pytest

from test_imap_lib import IO_TIMEOUT, converse, fresh_user, imap_client, wire

MSG1 = """From: Alice Example <alice@a.example>
To: bob@b.example
Cc: carol@c.example
Bcc: dave@d.example
Subject: plain hello
X-Custom: custom-value
Date: Mon, 02 Mar 2026 10:00:00 +0000

The quick brown fox
"""

MSG2 = """From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <jorg@x.example>
To: erin@e.example
Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=
Date: Fri, 06 Mar 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 cr=C3=A8me and a soft=
break here
"""

MSG3 = """From: frank@f.example
To: gina@g.example
Subject: =?UTF-8?Q?foo?= =?UTF-8?Q?bar?= tail
Date: Wed, 11 Mar 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BOUND"

preamble is not searched: PREAMBLEWORD
--BOUND
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: base64

x2EgY2/7dGUgY2hlciwgdHLocyBjaGVyLgo=
--BOUND
Content-Type: text/plain; charset=KOI8-R
Content-Transfer-Encoding: base64

8NLJ18XULCDNydIK
--BOUND
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

U0VDUkVUQVRUQUNIIGJpbmFyeQABCg==
--BOUND--
"""

MSG4 = """From: henry@h.example
To: ivy@i.example
Subject: forwarded
Date: Mon, 16 Mar 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="OUTER"

--OUTER
Content-Type: text/plain

see attached
--OUTER
Content-Type: message/rfc822

From: inner@j.example
Subject: =?UTF-8?Q?inner_=C3=A9t=C3=A9?=

nested body text
--OUTER--
"""

DATES = ['"01-Mar-2026 12:00:00 +0000"', '"05-Mar-2026 12:00:00 +0000"',
         '"10-Mar-2026 12:00:00 +0000"', '"15-Mar-2026 12:00:00 +0000"']
FLAGS = ["(\\Answered \\Seen)", "(\\Flagged $Work)", "(\\Draft \\Deleted)", "()"]


@pytest.fixture(scope="module")
def box(tern):
    user, pw = fresh_user(tern, "search")
    m = imaplib.IMAP4(tern.host, tern.ports["imap"], timeout=IO_TIMEOUT)
    m.login(user, pw)
    for msg, date, flags in zip((MSG1, MSG2, MSG3, MSG4), DATES, FLAGS):
        typ, _ = m.append("INBOX", flags, date, wire(msg))
        assert typ == "OK"
    typ, _ = m.select("INBOX")
    assert typ == "OK"
    sizes = {}
    typ, data = m.fetch("1:4", "(RFC822.SIZE)")
    for line in data:
        n, size = re.match(rb"(\d+) \(RFC822\.SIZE (\d+)\)", line).groups()
        sizes[int(n)] = int(size)
    m.sizes = sizes
    m.user, m.pw = user, pw
    yield m
    m.logout()


def search(m, *criteria, charset=None, literal=None, uid=False):
    """Run SEARCH; literal (bytes) goes as the last argument, sent as an IMAP literal."""
    if literal is not None:
        m.literal = literal
    if uid:
        args = (("CHARSET", charset) if charset else ()) + criteria
        typ, data = m.uid("SEARCH", *args)
    else:
        typ, data = m.search(charset, *criteria)
    assert typ == "OK", data
    return [int(x) for x in data[0].split()]


KEYS = [
    ("ALL", [1, 2, 3, 4]),
    ("ANSWERED", [1]),
    ("BCC dave", [1]),
    ("BEFORE 05-Mar-2026", [1]),
    ("BODY brown", [1]),
    ("CC carol", [1]),
    ("DELETED", [3]),
    ("DRAFT", [3]),
    ("FLAGGED", [2]),
    ("FROM alice", [1]),
    ("HEADER X-Custom custom-val", [1]),
    ('HEADER X-Custom ""', [1]),
    ("KEYWORD $Work", [2]),
    ("LARGER {larger}", [3, 4]),
    ("NOT SEEN", [2, 3, 4]),
    ("ON 10-Mar-2026", [3]),
    ("OR FLAGGED DRAFT", [2, 3]),
    ("SEEN", [1]),
    ("SENTBEFORE 06-Mar-2026", [1]),
    ("SENTON 11-Mar-2026", [3]),
    ("SENTSINCE 11-Mar-2026", [3, 4]),
    ("SINCE 10-Mar-2026", [3, 4]),
    ("SMALLER {smaller}", [1, 2]),
    ("SUBJECT forwarded", [4]),
    ("TEXT carol", [1]),
    ("TO ivy", [4]),
    ("UNANSWERED", [2, 3, 4]),
    ("UNDELETED", [1, 2, 4]),
    ("UNDRAFT", [1, 2, 4]),
    ("UNFLAGGED", [1, 3, 4]),
    ("UNKEYWORD $Work", [1, 3, 4]),
    ("UNSEEN", [2, 3, 4]),
    ("2:3", [2, 3]),
    ("1,4", [1, 4]),
    ("3:*", [3, 4]),
    ("(OR SEEN FLAGGED) (NOT DELETED)", [1, 2]),
    ("((SINCE 05-Mar-2026) (BEFORE 15-Mar-2026))", [2, 3]),
    ("NOT (OR 1 2)", [3, 4]),
]


@pytest.mark.parametrize("key,want", KEYS, ids=[k for k, _ in KEYS])
def test_search_key(box, key, want):
    sizes = box.sizes
    larger = max(sizes[1], sizes[2])
    smaller = min(sizes[3], sizes[4])
    assert larger < smaller  # the two multipart messages are the big ones
    crit = key.format(larger=larger, smaller=smaller)
    assert search(box, crit) == want


def test_search_uid_key_and_uid_search(box):
    typ, data = box.fetch("1:4", "(UID)")
    uids = [int(re.search(rb"UID (\d+)", d).group(1)) for d in data]
    assert search(box, f"UID {uids[1]}:{uids[2]}") == [2, 3]
    assert search(box, "SEEN", uid=True) == [uids[0]]
    assert search(box, f"UID {uids[3]}", uid=True) == [uids[3]]


def test_recent_new_old(box, tern):
    # This session selected first: all four are \Recent here.
    assert search(box, "RECENT") == [1, 2, 3, 4]
    assert search(box, "NEW") == [2, 3, 4]
    assert search(box, "OLD") == []
    other = imaplib.IMAP4(tern.host, tern.ports["imap"], timeout=IO_TIMEOUT)
    other.login(box.user, box.pw)
    other.select("INBOX")
    assert search(other, "RECENT") == []
    assert search(other, "NEW") == []
    assert search(other, "OLD") == [1, 2, 3, 4]
    other.logout()


def test_rfc2047_headers(box):
    assert search(box, "SUBJECT", charset="UTF-8", literal="grüße".encode()) == [2]
    assert search(box, "SUBJECT", charset="UTF-8", literal="KÖLN".encode()) == [2]
    assert search(box, "FROM", charset="UTF-8", literal="jörg müller".encode()) == [2]
    # white space between adjacent encoded-words disappears (RFC 2047 §6.2)
    assert search(box, "SUBJECT foobar") == [3]
    assert search(box, "SUBJECT =?UTF-8?B?") == []
    assert search(box, "HEADER Subject", charset="UTF-8", literal="aus köln".encode()) == [2]


def test_body_transfer_encodings_and_charsets(box):
    # quoted-printable UTF-8, with a soft line break joining two words
    assert search(box, "BODY", charset="UTF-8", literal="café CRÈME".encode()) == [2]
    assert search(box, "BODY softbreak") == [2]
    assert search(box, "BODY C3") == []
    # base64 ISO-8859-1, matched case-insensitively beyond ASCII
    assert search(box, "BODY", charset="UTF-8", literal="ÇA COÛTE CHER".encode()) == [3]
    # base64 KOI8-R through iconv, Cyrillic case folding
    assert search(box, "BODY", charset="UTF-8", literal="ПРИВЕТ".encode()) == [3]
    assert search(box, "TEXT", charset="UTF-8", literal="мир".encode()) == [3]
    # the base64 text is not the text
    assert search(box, "BODY x2EgY2") == []
    # attachments and the preamble are not text
    assert search(box, "BODY SECRETATTACH") == []
    assert search(box, "TEXT PREAMBLEWORD") == []


def test_nested_message_and_text_vs_body(box):
    assert search(box, "BODY", charset="UTF-8", literal="inner ÉTÉ".encode()) == [4]
    assert search(box, 'BODY "nested body"') == [4]
    assert search(box, "BODY inner@j.example") == [4]
    # TEXT covers the header, BODY does not
    assert search(box, 'TEXT "plain hello"') == [1]
    assert search(box, 'BODY "plain hello"') == []
    assert search(box, "BODY", charset="US-ASCII", literal=b"QUICK brown") == [1]


def test_charsets(box, tern):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {box.user} {box.pw}", r"^a OK"), ("b SELECT INBOX", r"^b OK")])
    got = converse(c, [("c SEARCH CHARSET ISO-8859-2 SUBJECT x",
                        r"^c NO \[BADCHARSET \(UTF-8 US-ASCII\)\]")])[0]
    assert "* SEARCH" not in got
    got = converse(c, [("d SEARCH CHARSET us-ascii SUBJECT hello", r"^d OK")])[0]
    assert "* SEARCH 1\r\n" in got
    word = "grüße".encode()
    c.send_raw(b"e SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n" % len(word) + word + b"\r\n")
    got = c.read_until(r"^e OK")
    assert "* SEARCH 2\r\n" in got
    converse(c, [("f LOGOUT", r"^f OK")])
