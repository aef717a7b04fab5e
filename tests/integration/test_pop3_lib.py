"""
test_pop3_lib.py - helpers shared by the POP3 integration tests (no tests here).

  add_user(tern, address, password)   create a user with the CLI while the server runs
  deliver_file(tern, address, text)   put a message straight into the user's Maildir/new
                                      (LF line ends), as another program would; the store
                                      picks it up at the next login
  wire_form(text)                     what RETR must send for a stored message: CRLF line
                                      ends and byte-stuffing (RFC 1939 §3)
  list_size(text)                     what LIST/STAT/"+OK n octets" must say: the octets of
                                      wire_form without the byte-stuffing (RFC 1939 §11)
  unstuff(wire)                       a multi-line reply's body with the byte-stuffing removed
  pop3(tern, user=None, password=None, port='pop3', tls=False) -> poplib client, logged in
                                      when a user is given
  Client / converse / apop_digest / sasl_plain / b64 re-exported from tern_util
"""

import itertools
import os
import poplib
import pwd
import re
import time

from tern_util import (IO_TIMEOUT, Client, apop_digest, b64, converse,  # noqa: F401
                       sasl_plain, tls_context)

_counter = itertools.count()


def add_user(tern, address, password):
    tern.cli("user", "add", address, "--password-stdin", input=password + "\n")
    tern.users[address] = password
    return address


def _chown(path, tern):
    if getattr(tern, "run_user", None):
        pw = pwd.getpwnam(tern.run_user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def deliver_file(tern, address, text, fsync=True):
    """Write a message (str or bytes, LF line ends kept as given) into Maildir/new."""
    md = tern.maildir(address)
    for d in (md.parent.parent.parent, md.parent.parent, md.parent, md, md / "tmp",
              md / "new", md / "cur"):
        if not d.exists():
            d.mkdir(mode=0o700)
            _chown(d, tern)
    data = text.encode() if isinstance(text, str) else text
    name = f"{int(time.time())}.M{next(_counter):08d}P{os.getpid()}.pop3test"
    tmp = md / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    _chown(tmp, tern)
    os.rename(tmp, md / "new" / name)
    return md / "new" / name


def sample_message(n, subject=None, body=None):
    """A small message with LF line ends; body may hold dot-lines."""
    subject = subject or f"message {n}"
    body = body if body is not None else f"Hello {n}.\n.leading dot line\n..two dots\nbye\n"
    return (f"Return-Path: <sender@example.org>\nFrom: sender@example.org\n"
            f"To: someone@example.test\nSubject: {subject}\n"
            f"Message-Id: <{n}.{time.time()}@example.org>\n\n{body}")


def crlf_form(text):
    """The message with CRLF line ends (a CR already before an LF stays one CR; a bare CR
    stays), ending with a line end as RETR sends it."""
    data = text.encode() if isinstance(text, str) else text
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    if data.endswith(b"\r") and not data.endswith(b"\r\n"):
        data += b"\n"
    elif data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def wire_form(text):
    """RFC 1939 §3: CRLF line ends, lines starting with '.' get one more '.'."""
    lines = crlf_form(text).split(b"\r\n")[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


def unstuff(wire):
    """Undo RFC 1939 §3 byte-stuffing in a reply body (CRLF lines, terminator removed)."""
    lines = wire.split(b"\r\n")
    return b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)


def list_size(text):
    """RFC 1939 §11: the size LIST/STAT report does not count the byte-stuffing."""
    return len(crlf_form(text))


def pop3(tern, user=None, password=None, port="pop3", tls=False):
    """A poplib client; logged in with USER/PASS when user is given."""
    if tls:
        p = poplib.POP3_SSL(tern.host, tern.ports[port], context=tls_context(),
                            timeout=IO_TIMEOUT)
    else:
        p = poplib.POP3(tern.host, tern.ports[port], timeout=IO_TIMEOUT)
    if user:
        p.user(user)
        p.pass_(password if password is not None else tern.users[user])
    return p


def fresh_user(tern, prefix, messages=()):
    """A new user with the given messages delivered; returns (address, password)."""
    address = f"{prefix}{next(_counter)}@example.test"
    password = f"pw-{address}"
    add_user(tern, address, password)
    for m in messages:
        deliver_file(tern, address, m)
    return address, password
