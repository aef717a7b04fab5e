"""
budget_util.py - helpers shared by the DESIGN §6 budget tests (test_smtp_budgets.py,
test_pop3_budgets.py, test_pop3_session.py): hostile peers and the server's memory.

  rss_kb(pid) / rss_slack_kb(srv)     resident set of a process; growth allowed on top of
                                      a budget for an ASan build's quarantine
  tree_rss_kb(srv)                    resident set of the whole server: the master and
                                      every process it started
  flood_without_reading(host, port, prologue, line, total) -> (socket, bytes sent)
  read_to_eof(sock) -> str            everything the server sends until it closes
  check_non_reader_is_bounded(srv, port, line, still_serves)
                                      a peer that pipelines `line` forever and never reads:
                                      the server stops reading, its RSS stays bounded, and
                                      it still serves others
  check_all_replies_sent(c, line, n, quit, marker) -> str
                                      n pipelined `line`s + `quit`, half-close, read late:
                                      `marker` appears n times (no reply dropped)
  dribble_until_closed(c, data)       send `data` again and again, 0.5 s apart, until the
                                      server closes (True) or 60 rounds pass (False)

Every wait is bounded (socket timeouts, a fixed number of rounds); nothing asserts on time.
"""

import re
import socket

from tern_util import child_pids


def rss_slack_kb(srv):
    """RSS growth allowed on top of the real budget: an ASan build keeps up to 256 MB of
    freed memory in quarantine, which is not ours to count."""
    with open(f"/proc/{srv.pid}/maps") as f:
        if "libasan" in f.read():
            return 400 * 1024
    with open(srv.bin, "rb") as f:
        return 400 * 1024 if b"__asan_init" in f.read() else 0


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def tree_rss_kb(srv):
    """The master's resident set plus its children's (login processes, mail workers, the
    auth and queue processes), in kB: a session's memory is in a child, not in the
    master, whose own RSS a budget test would find flat whatever the session does."""
    total = rss_kb(srv.pid)
    for pid in child_pids(srv.pid):
        try:
            total += rss_kb(pid)
        except (OSError, AttributeError):
            pass  # exited meanwhile (or a zombie without VmRSS)
    return total


def flood_without_reading(host, port, prologue, line, total):
    """Connect with a tiny receive buffer, send prologue then `line` repeated up to total
    bytes without ever reading. Returns (socket, bytes the server let us send): sending
    stops when the server stops reading (a 3 s blocked send is the bound)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    s.settimeout(3)
    s.sendall(prologue)
    chunk = line * max(1, 65536 // len(line))
    sent = 0
    while sent < total:
        try:
            n = s.send(chunk)
        except socket.timeout:
            break
        sent += n
    return s, sent


def read_to_eof(sock, limit=64 * 1024 * 1024):
    """Everything the server sends until it closes (bounded by the socket timeout and
    limit). Raw reads: Client.read_until rescans its whole text per line."""
    sock.settimeout(30)
    data = bytearray()
    while len(data) < limit:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def check_non_reader_is_bounded(srv, port, line, still_serves):
    """24 MB of `line` from a peer that never reads its replies (tens of times that in
    replies if nothing stopped it): the server must stop taking commands while its output
    is over a cap, so TCP pushes back, instead of buffering the replies; its RSS grows by
    less than 100 MB and it still serves another client (still_serves(srv))."""
    before = tree_rss_kb(srv)
    total = 24 * 1024 * 1024
    s, sent = flood_without_reading(srv.host, srv.ports[port], b"", line, total)
    try:
        grown = tree_rss_kb(srv) - before
        print(f"server read {sent} bytes, RSS grew by {grown} kB")
        assert sent < total, "the server read everything a non-reading peer sent"
        assert grown < 100 * 1024 + rss_slack_kb(srv), f"server RSS grew by {grown} kB"
        still_serves(srv)
    finally:
        s.close()


def check_all_replies_sent(c, line, n, quit, marker):
    """Backpressure must pause, not drop: on a greeted Client, pipeline n `line`s and
    `quit`, half-close, then read everything. Every command is answered (`marker` once per
    reply); returns the text for the caller's check of the final reply."""
    c.send_raw(line * n + quit)
    c.sock.shutdown(socket.SHUT_WR)
    r = read_to_eof(c.sock)
    assert r.count(marker) == n, r[-300:]
    return r


def dribble_until_closed(c, data, rounds=60, pause=0.5):
    """Send `data` once a round, `pause` seconds apart (the wait for the close is the
    pause), until the server closes the connection: True, or False after `rounds`.
    With a 2 s server timeout the default bound (30 s) is far past it."""
    for _ in range(rounds):
        try:
            c.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return True
        if c.is_closed(timeout=pause):
            return True
    return False
