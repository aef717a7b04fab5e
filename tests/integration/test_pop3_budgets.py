"""
test_pop3_budgets.py - DESIGN §6 budgets for POP3 under hostile input: a client that
pipelines commands forever and never reads its replies must not grow the server's
output without bound, and backpressure must pause (every reply is sent once it reads).
"""

import socket

from test_smtp_budgets import flood_without_reading, read_to_eof, rss_kb, rss_slack_kb
from tern_util import Client


def still_serves(srv):
    c = Client(srv.host, srv.ports["pop3"])
    assert c.read_line().startswith("+OK")
    c.send("QUIT")
    assert c.read_line().startswith("+OK")


def test_peer_that_never_reads_keeps_output_bounded(tern_factory):
    srv = tern_factory({"pop3.timeout": 60})
    still_serves(srv)
    before = rss_kb(srv.pid)
    total = 24 * 1024 * 1024  # 4 M CAPAs: ~500 MB of replies if nothing stopped it
    s, sent = flood_without_reading(srv.host, srv.ports["pop3"], b"", b"CAPA\r\n", total)
    try:
        grown = rss_kb(srv.pid) - before
        print(f"server read {sent} bytes, RSS grew by {grown} kB")
        assert sent < total, "the server read everything a non-reading peer sent"
        assert grown < 100 * 1024 + rss_slack_kb(srv), f"server RSS grew by {grown} kB"
        still_serves(srv)
    finally:
        s.close()


def test_unread_replies_are_all_sent_once_the_peer_reads(tern):
    n = 5000  # ~600 kB of CAPA replies: past the output cap
    c = Client(tern.host, tern.ports["pop3"])
    c.read_line()
    c.send_raw(b"CAPA\r\n" * n + b"QUIT\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    r = read_to_eof(c.sock)
    assert r.count("UIDL") == n, r[-300:]
    assert r.rstrip().endswith("+OK Logging out.")


def test_slowloris_is_cut_by_the_idle_timeout(tern_factory):
    """A line dribbled one byte at a time, each byte inside the idle timeout but the line
    never finished: the session must end, not live forever on one partial line."""
    srv = tern_factory({"pop3.timeout": 2})
    c = Client(srv.host, srv.ports["pop3"])
    assert c.read_line().startswith("+OK")
    closed = False
    for _ in range(60):  # bound: 60 bytes, 0.5 s apart = 30 s >> 2 s timeout
        try:
            c.sock.sendall(b"C")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if c.is_closed(timeout=0.5):  # also the pause between bytes
            closed = True
            break
    assert closed, "a never-finished command line kept the session alive"
    still_serves(srv)
