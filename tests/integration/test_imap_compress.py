"""
test_imap_compress.py - COMPRESS=DEFLATE (RFC 4978) against the real binary: a raw
client that deflates its commands and inflates the replies with Python's zlib (raw
deflate, sync flush), over plain IMAP and over implicit TLS; a large FETCH read back
intact; the errors the RFC requires ([COMPRESSIONACTIVE], BAD, not before login).
"""

import re
import socket
import ssl
import zlib

from tern_util import IO_TIMEOUT
from test_imap_lib import fresh_user

BIG = "".join(f"line {i:06d} of a long message that compresses well\n" for i in range(20000))


class ZClient:
    """A line-oriented IMAP client that can switch to deflate after COMPRESS."""

    def __init__(self, host, port, tls=False):
        s = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s)
        self.s, self.buf, self.z_out, self.z_in, self.wire_in = s, b"", None, None, 0
        self.read_until(rb"^\* OK")

    def send(self, line):
        data = line.encode() + b"\r\n"
        if self.z_out:
            data = self.z_out.compress(data) + self.z_out.flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(data)

    def fill(self):
        chunk = self.s.recv(65536)
        assert chunk, "connection closed"
        self.wire_in += len(chunk)
        self.buf += self.z_in.decompress(chunk) if self.z_in else chunk

    def read_until(self, pattern):
        """Read until a line matches pattern (bytes regex); return everything read."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self.fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line + b"\r\n"
            m = re.search(rb"\{(\d+)\}$", line)
            if m:  # a literal: read its bytes as they are
                n = int(m.group(1))
                while len(self.buf) < n:
                    self.fill()
                out += self.buf[:n]
                self.buf = self.buf[n:]
                continue
            if re.search(pattern, line):
                return out

    def cmd(self, tag, line):
        self.send(f"{tag} {line}")
        return self.read_until(rb"^" + tag.encode() + rb" (OK|NO|BAD)")

    def start_compress(self):
        self.z_out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.z_in = zlib.decompressobj(-15)
        # bytes that came in the same packet as the OK were compressed already
        rest, self.buf = self.buf, b""
        if rest:
            self.buf = self.z_in.decompress(rest)


def session(tern, tls=False):
    user, pw = fresh_user(tern, "zc", messages=[f"Subject: big\n\n{BIG}", "Subject: small\n\nx\n"])
    c = ZClient(tern.host, tern.ports["imaps" if tls else "imap"], tls=tls)
    return c, user, pw


def run_compressed(c, user, pw):
    got = c.cmd("a", "COMPRESS DEFLATE")
    assert re.search(rb"^a (NO|BAD)", got, re.M), got  # not before login
    assert b"OK" in c.cmd("b", f"LOGIN {user} {pw}")
    caps = c.cmd("c", "CAPABILITY")
    assert b"COMPRESS=DEFLATE" in caps, caps
    assert re.search(rb"^d BAD", c.cmd("d", "COMPRESS GZIP"), re.M)
    got = c.cmd("e", "COMPRESS DEFLATE")
    assert re.search(rb"^e OK", got, re.M), got
    c.start_compress()
    got = c.cmd("f", "SELECT INBOX")
    assert b"2 EXISTS" in got, got
    before = c.wire_in
    got = c.cmd("g", "FETCH 1:2 (BODY.PEEK[TEXT])")
    assert re.search(rb"^g OK", got, re.M), got
    body = re.search(rb"BODY\[TEXT\] \{(\d+)\}\r\n", got)
    n = int(body.group(1))
    start = body.end()
    assert got[start:start + n] == BIG.replace("\n", "\r\n").encode()
    # what crossed the wire is a fraction of what was fetched
    assert c.wire_in - before < len(got) // 5, (c.wire_in - before, len(got))
    got = c.cmd("h", "COMPRESS DEFLATE")
    assert re.search(rb"^h NO \[COMPRESSIONACTIVE\]", got, re.M), got
    assert b"COMPRESS=DEFLATE" not in c.cmd("i", "CAPABILITY")
    got = c.cmd("j", "LOGOUT")
    assert b"BYE" in got


def test_compress_plain(tern):
    c, user, pw = session(tern)
    run_compressed(c, user, pw)


def test_compress_over_tls(tern):
    c, user, pw = session(tern, tls=True)
    run_compressed(c, user, pw)


def test_compress_garbage_closes(tern):
    c, user, pw = session(tern)
    c.cmd("b", f"LOGIN {user} {pw}")
    c.cmd("e", "COMPRESS DEFLATE")
    c.start_compress()
    c.s.sendall(b"\xff" * 64)  # not a deflate stream
    c.s.settimeout(IO_TIMEOUT)
    # the server closes at once (EOF or reset), well before the read timeout
    try:
        while c.s.recv(4096):
            pass
    except ConnectionResetError:
        pass
