"""
test_imap_sections.py - FETCH of MIME part sections streamed from the file (RFC 3501
§6.4.5): BODY[n], BODY[n.MIME], BODY[n.HEADER]/TEXT of a message/rfc822 part, partials,
a part that does not exist, on a message with a large attachment; byte-exact against the
message as written (LF on disk, CRLF on the wire). Clients: imaplib and curl.
"""

import base64
import poplib
import subprocess

from test_imap_lib import fresh_user, imaplib_login, wire

BIG = base64.encodebytes(bytes(range(256)) * (12 * 1024 * 1024 // 256)).decode()

PART1_MIME = "Content-Type: text/plain; charset=us-ascii\n\n"
PART1 = "first part text\nline two\n"
PART2_MIME = "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
INNER_HDR = "From: inner@example.org\nSubject: inner\n\n"
INNER_BODY = "inner body\n"

MSG = ("From: a@example.org\nTo: b@example.test\nSubject: sections\n"
       "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n"
       f"--XX\n{PART1_MIME}{PART1}"
       f"--XX\n{PART2_MIME}{BIG}"
       f"--XX\nContent-Type: message/rfc822\n\n{INNER_HDR}{INNER_BODY}"
       "--XX--\n")


def strip_last_newline(s):
    # the line break before a boundary belongs to the boundary (RFC 2046 §5.1.1)
    return s[:-1]


def test_part_sections_byte_exact(tern):
    user, pw = fresh_user(tern, "sect", [MSG])
    m = imaplib_login(tern, user, pw)
    m.select("INBOX")
    typ, data = m.fetch("1", "(BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[3.HEADER] "
                        "BODY.PEEK[3.TEXT] BODY.PEEK[2]<0.40> BODY.PEEK[9])")
    assert typ == "OK"
    got = {}
    for item in data:
        if isinstance(item, tuple):
            label = item[0].rsplit(b" ", 2)[-2] if item[0].endswith(b"}") else item[0]
            got[label.split(b"(")[-1]] = item[1]
    assert got[b"BODY[1]"] == wire(strip_last_newline(PART1))
    assert got[b"BODY[1.MIME]"] == wire(PART1_MIME)
    assert got[b"BODY[3.HEADER]"] == wire(INNER_HDR)
    assert got[b"BODY[3.TEXT]"] == wire(strip_last_newline(INNER_BODY))
    assert got[b"BODY[2]<0>"] == wire(BIG)[:40]
    tail = data[-1] if isinstance(data[-1], bytes) else data[-1][0]
    assert b"BODY[9] NIL" in tail
    # the whole attachment, byte-exact, and its size as RFC822.SIZE counts it
    typ, data = m.fetch("1", "(BODY.PEEK[2] RFC822.SIZE)")
    assert data[0][1] == wire(strip_last_newline(BIG))
    assert b"RFC822.SIZE %d" % len(wire(MSG)) in data[0][0] + data[1]
    m.logout()


def test_curl_fetches_a_section(tern):
    user, pw = fresh_user(tern, "sectcurl", [MSG])
    r = subprocess.run(
        ["curl", "-s", "--max-time", "30", "-u", f"{user}:{pw}",
         f"imap://{tern.host}:{tern.ports['imap']}/INBOX;UID=1;SECTION=3.TEXT"],
        capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == wire(strip_last_newline(INNER_BODY))


def test_streamed_literal_across_chunk_edges(tern):
    """A message file with CRLF and bare-LF lines mixed, a CR as the last byte of each
    64 KiB read (the LF that follows starts the next) and lone CRs: BODY[] and its
    partials are the CRLF form, byte-exact, and RFC822.SIZE (and POP3's LIST) count the
    same: the size of a file another program wrote used to count its CRLFs twice."""
    chunk = 64 * 1024
    head = b"From: a@example.org\nSubject: edges\r\n\r\n"
    body = bytearray()
    n = 0
    while len(head) + len(body) < 3 * chunk + 100:
        end = len(head) + len(body)
        if (end + 1) % chunk == 0:
            body += b"\r\n"   # CR at the end of a read, LF at the start of the next
        elif (end + 1) % chunk == 1:
            body += b"\n"     # a bare LF as the first byte of a read
        else:
            body += [b"line %d\n" % n, b"line %d\r\n" % n, b"cr\ralone\n"][n % 3]
            n += 1
    data = head + bytes(body)
    user, pw = fresh_user(tern, "edges", [data])
    expect = wire(data)
    m = imaplib_login(tern, user, pw)
    m.select("INBOX")
    typ, got = m.fetch("1", "(BODY.PEEK[] RFC822.SIZE)")
    assert typ == "OK"
    assert got[0][1] == expect
    assert b"RFC822.SIZE %d" % len(expect) in got[0][0] + got[1]
    for start, size in ((0, 10), (chunk - 3, 8), (chunk + 5, 3 * chunk), (2 * chunk - 1, 2)):
        typ, got = m.fetch("1", f"(BODY.PEEK[]<{start}.{size}>)")
        assert typ == "OK"
        assert got[0][1] == expect[start:start + size], (start, size)
    m.logout()
    # POP3 announces the same size (LIST) as it sends (RETR)
    p = poplib.POP3(tern.host, tern.ports["pop3"], timeout=60)
    p.user(user)
    p.pass_(pw)
    assert p.list()[1] == [b"1 %d" % len(expect)]
    _, lines, _ = p.retr(1)
    assert b"".join(line + b"\r\n" for line in lines) == expect
    p.quit()
