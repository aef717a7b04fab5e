"""
test_imap_lib.py - helpers shared by the IMAP integration tests (no tests here).

  add_user(tern, address, password)   create a user with the CLI while the server runs
  deliver_file(tern, address, text)   put a message straight into Maildir/new (LF line ends)
  fresh_user(tern, prefix, messages)  a new user with messages -> (address, password)
  wire(text) -> bytes                 the message as IMAP sends it (CRLF line ends)
  imap_client(tern, port='imap')      a tern_util.Client past the greeting
  imaplib_login(tern, user, pw, tls)  an imaplib client, logged in
"""

import imaplib
import itertools
import os
import pwd
import re
import time

from tern_util import (IO_TIMEOUT, Client, b64, converse, sasl_plain,  # noqa: F401
                       tls_context)

_counter = itertools.count()

GREETING_RE = r"^\* OK \[CAPABILITY IMAP4rev1 [^\]]*\] IMAP4rev1 ready\.\r\n$"


def add_user(tern, address, password):
    tern.cli("user", "add", address, "--password-stdin", input=password + "\n")
    tern.users[address] = password
    return address


def _chown(path, tern):
    if getattr(tern, "run_user", None):
        pw = pwd.getpwnam(tern.run_user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def deliver_file(tern, address, text):
    """Write a message (str or bytes) into Maildir/new as another program would."""
    md = tern.maildir(address)
    for d in (md.parent.parent.parent, md.parent.parent, md.parent, md, md / "tmp",
              md / "new", md / "cur"):
        if not d.exists():
            d.mkdir(mode=0o700)
            _chown(d, tern)
    data = text.encode() if isinstance(text, str) else text
    name = f"{int(time.time())}.M{next(_counter):06d}P{os.getpid()}.imaptest"
    tmp = md / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _chown(tmp, tern)
    os.rename(tmp, md / "new" / name)
    return md / "new" / name


def fresh_user(tern, prefix, messages=()):
    address = f"{prefix}{next(_counter)}@example.test"
    password = f"pw-{next(_counter)}"
    add_user(tern, address, password)
    for m in messages:
        deliver_file(tern, address, m)
    return address, password


def wire(text):
    data = text.encode() if isinstance(text, str) else text
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def imap_client(tern, port="imap"):
    c = Client(tern.host, tern.ports[port], tls=(port == "imaps"))
    greeting = c.read_line()
    assert re.match(GREETING_RE, greeting), greeting
    assert "dovecot" not in greeting.lower() and "tern" not in greeting.lower()
    return c


def read_literal_reply(c, tag):
    """Read a tagged reply that may carry literals; returns the raw bytes up to the tag."""
    out = b""
    while True:
        line = c.read_line().encode()
        out += line
        m = re.search(rb"\{(\d+)\}\r\n$", line)
        if m:
            out += c.read_bytes(int(m.group(1)))
            continue
        if line.startswith(tag.encode() + b" "):
            return out


def imaplib_login(tern, user, password, tls=False):
    if tls:
        m = imaplib.IMAP4_SSL(tern.host, tern.ports["imaps"], ssl_context=tls_context(),
                              timeout=IO_TIMEOUT)
    else:
        m = imaplib.IMAP4(tern.host, tern.ports["imap"], timeout=IO_TIMEOUT)
    m.login(user, password)
    return m


def sample_message(n, subject=None, body=None):
    subject = subject or f"message {n}"
    body = body if body is not None else f"Hello {n}.\nsecond line\n"
    return (f"From: Sender <sender@example.org>\nTo: someone@example.test\n"
            f"Subject: {subject}\nDate: Wed, 25 Nov 2026 09:00:0{n % 10} +0000\n"
            f"Message-Id: <{n}.{time.time()}@example.org>\n\n{body}")
