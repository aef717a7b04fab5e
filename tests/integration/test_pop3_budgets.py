"""
test_pop3_budgets.py - DESIGN §6 budgets for POP3 under hostile input: a client that
pipelines commands forever and never reads its replies must not grow the server's
output without bound, and backpressure must pause (every reply is sent once it reads).
"""

from budget_util import check_all_replies_sent, check_non_reader_is_bounded, dribble_until_closed
from tern_util import Client


def still_serves(srv):
    c = Client(srv.host, srv.ports["pop3"])
    assert c.read_line().startswith("+OK")
    c.send("QUIT")
    assert c.read_line().startswith("+OK")


def test_peer_that_never_reads_keeps_output_bounded(tern_factory):
    srv = tern_factory({"pop3.timeout": 60})
    still_serves(srv)
    # 4 M CAPAs: ~500 MB of replies if nothing stopped it
    check_non_reader_is_bounded(srv, "pop3", b"CAPA\r\n", still_serves)


def test_unread_replies_are_all_sent_once_the_peer_reads(tern):
    n = 5000  # ~600 kB of CAPA replies: past the output cap
    c = Client(tern.host, tern.ports["pop3"])
    c.read_line()
    r = check_all_replies_sent(c, b"CAPA\r\n", n, b"QUIT\r\n", "UIDL")
    assert r.rstrip().endswith("+OK Logging out.")


def test_slowloris_is_cut_by_the_idle_timeout(tern_factory):
    """A line dribbled one byte at a time, each byte inside the idle timeout but the line
    never finished: the session must end, not live forever on one partial line."""
    srv = tern_factory({"pop3.timeout": 2})
    c = Client(srv.host, srv.ports["pop3"])
    assert c.read_line().startswith("+OK")
    # bound: 60 bytes, 0.5 s apart = 30 s >> 2 s timeout
    closed = dribble_until_closed(c, b"C")
    assert closed, "a never-finished command line kept the session alive"
    still_serves(srv)
