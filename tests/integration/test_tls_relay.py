"""
test_tls_relay.py - issue 10: the login process's relay of a TLS session's plaintext to
its mail worker (core/conn.c, conn_relay_*), which has no buffers of its own: the
worker's bytes go straight into the TLS output, the client's wait in the TLS input.

  - a large FETCH (IMAPS) and a large RETR (POP3S) arrive whole and byte for byte;
  - a large APPEND (IMAPS, client -> worker, more than the input high-water mark at
    once) is stored byte for byte;
  - a client that stops reading leaves the worker's output in the socketpair (ss shows
    its receive queue) while the login process's memory stays bounded, and then gets
    every byte;
  - a client that vanishes in the middle of a FETCH ends its relay: the login process
    closes both descriptors, and the server goes on serving.
No test asserts on time.
"""

import imaplib
import os
import poplib
import re
import socket
import ssl
import subprocess

import pytest

from test_imap_lib import add_user, imaplib_login
from tern_util import IO_TIMEOUT, tls_context, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: login processes")

BIG = 3 * 1024 * 1024
SANITIZED = os.environ.get("TERN_SANITIZED", "") not in ("", "0")  # a message well above every high-water mark on the way


def _server(tern_factory):
    return tern_factory({"worker_processes": "1", "login_processes": "1"})


def _login_pid(srv):
    pids = re.findall(r"^login: pid (\d+)", srv.cli("status").stdout, re.M)
    assert len(pids) == 1, pids
    return int(pids[0])


def _login_connections(srv):
    """The connections of the (one) login process, from tern status."""
    m = re.search(r"^login: pid \d+,.*connections (\d+)", srv.cli("status").stdout, re.M)
    assert m, srv.cli("status").stdout
    return int(m.group(1))


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))


def _relay_ends(pid):
    """The login process's unix stream sockets (the relays' ends; its channels to the
    other processes are seqpacket sockets) as ss lists them."""
    out = subprocess.run(["ss", "-xpnH"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if line.split()[:2] == ["u_str", "ESTAB"] and f"pid={pid}," in line]


def _relay_backlog(pid):
    """Bytes waiting unread in the relays' ends of the login process."""
    return sum(int(line.split()[2]) for line in _relay_ends(pid))


def _message(tag, size):
    """A message of about size bytes whose every line differs (a lost or repeated block
    shows)."""
    head = f"From: a@example.test\r\nTo: b@example.test\r\nSubject: {tag}\r\n\r\n".encode()
    lines, n = [], len(head)
    i = 0
    while n < size:
        line = f"{tag} line {i:08d} {'x' * 60}\r\n".encode()
        lines.append(line)
        n += len(line)
        i += 1
    return head + b"".join(lines)


def _append_plain(srv, user, msg):
    c = imaplib_login(srv, user, "pw")
    typ, _ = c.append("INBOX", None, None, msg)
    assert typ == "OK"
    c.logout()


def test_large_fetch_and_retr_through_the_relay(tern_factory):
    srv = _server(tern_factory)
    user = add_user(srv, "big@example.test", "pw")
    msg = _message("fetch", BIG)
    _append_plain(srv, user, msg)
    t = imaplib_login(srv, user, "pw", tls=True)
    t.select("INBOX", readonly=True)
    typ, data = t.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == msg
    t.logout()
    p = poplib.POP3_SSL(srv.host, srv.ports["pop3s"], context=tls_context(),
                        timeout=IO_TIMEOUT)
    p.user(user)
    p.pass_("pw")
    _, lines, _ = p.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == msg
    p.quit()


def test_large_append_through_the_relay(tern_factory):
    srv = _server(tern_factory)
    user = add_user(srv, "up@example.test", "pw")
    msg = _message("append", BIG)
    t = imaplib_login(srv, user, "pw", tls=True)
    typ, _ = t.append("INBOX", None, None, msg)
    assert typ == "OK"
    t.logout()
    c = imaplib_login(srv, user, "pw")
    c.select("INBOX", readonly=True)
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == msg
    c.logout()


def _tls_socket(srv, rcvbuf=None):
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(IO_TIMEOUT)
    raw.connect((srv.host, srv.ports["imaps"]))
    return tls_context().wrap_socket(raw, server_hostname=srv.host)


def _read_until(s, marker, sink=None):
    buf = b""
    while marker not in buf:
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        buf += chunk
        if sink is not None:
            sink(len(chunk))
    return buf


def test_slow_reader_gets_every_byte_and_memory_stays_bounded(tern_factory):
    srv = _server(tern_factory)
    user = add_user(srv, "slow@example.test", "pw")
    msgs = [_message(f"slow{k}", BIG) for k in range(4)]  # 12 MB in one FETCH
    for m in msgs:
        _append_plain(srv, user, m)
    pid = _login_pid(srv)
    s = _tls_socket(srv, rcvbuf=16384)
    _read_until(s, b"\r\n")
    s.sendall(b"a LOGIN slow@example.test pw\r\nb SELECT INBOX\r\n")
    _read_until(s, b"b OK")
    base = _rss_kb(pid)
    s.sendall(b"c FETCH 1:4 (BODY.PEEK[])\r\n")
    # the client reads nothing: the login process takes in a bounded part of the 12 MB
    # and then leaves the worker's output in the socketpair (its receive queue fills);
    # without that bound its memory would grow by the whole answer instead
    # (a sanitizer's heap has no meaningful RSS: there only the held-back output counts)
    seen = {}

    def held_back_or_grown():
        seen["backlog"], seen["grown"] = _relay_backlog(pid), _rss_kb(pid) - base
        return seen["backlog"] >= 32 * 1024 or (not SANITIZED and seen["grown"] >= 8 * 1024)
    wait_for(held_back_or_grown, timeout=60,
             what="the worker's output held back, or the login process grown")
    assert seen["backlog"] >= 32 * 1024, seen
    assert SANITIZED or seen["grown"] < 4 * 1024, seen
    got = bytearray()
    while b"\r\nc OK" not in got[-256:]:
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    for m in msgs:
        assert m in got
    s.sendall(b"d LOGOUT\r\n")
    _read_until(s, b"d OK")
    s.close()


def test_client_vanishing_mid_fetch_ends_the_relay(tern_factory):
    srv = _server(tern_factory)
    user = add_user(srv, "gone@example.test", "pw")
    _append_plain(srv, user, _message("gone", BIG))
    pid = _login_pid(srv)
    for k in range(3):
        s = _tls_socket(srv)
        _read_until(s, b"\r\n")
        s.sendall(b"a LOGIN gone@example.test pw\r\nb SELECT INBOX\r\n")
        _read_until(s, b"b OK")
        assert _relay_ends(pid), "the session is not relayed"  # (the check sees relays)
        s.sendall(b"c FETCH 1 (BODY.PEEK[])\r\n")
        s.recv(4096)  # the transfer has begun
        # vanish: a reset, no close_notify and no FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    # the client sockets and the relays' ends are closed again in the login process
    try:
        wait_for(lambda: _login_connections(srv) == 0 and not _relay_ends(pid), timeout=30,
                 what="the relays gone and their descriptors closed")
    except AssertionError as e:
        raise AssertionError(f"{e}: {srv.cli('status').stdout} {_relay_ends(pid)}") from e
    # and the server still serves the same user over TLS
    t = imaplib_login(srv, user, "pw", tls=True)
    t.select("INBOX", readonly=True)
    typ, data = t.fetch("1", "(RFC822.SIZE)")
    assert typ == "OK"
    t.logout()
    assert not re.search(r"panic|fatal|assert", srv.log_text(), re.I)
