"""
test_outbound_throughput.py - the fast path of relaying (issue 5, relay-perf): mail
received over SMTP is handed to the queue runner at once (no wait for a queue scan),
parked sessions are reused with RSET pipelined in front of MAIL FROM, a stale parked
session falls back to a new connection without deferring, and a burst of messages
arrives exactly once over a handful of connections.
"""

import re
import smtplib

import pytest

from outbound_util import SmtpSink
from tern_util import wait_for

SENDER = "load@client.test"


def relay_server(tern_factory, sink, extra=None):
    cfg = {"transport.remote.test": "[127.0.0.1]:%d" % sink.port,
           "relay_networks": "127.0.0.0/8",
           "outbound.tls": "none"}
    cfg.update(extra or {})
    return tern_factory(cfg)


def send_burst(srv, n, sessions=4, rcpt="r@remote.test"):
    """n messages over `sessions` SMTP sessions, each with a unique Subject."""
    per = (n + sessions - 1) // sessions
    sent = []
    for s_no in range(sessions):
        with smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=30) as s:
            s.ehlo("client.test")
            for k in range(per):
                i = s_no * per + k
                if i >= n:
                    break
                subject = "burst-%04d" % i
                msg = "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\n%s\r\n" % (
                    SENDER, rcpt, subject, ".line\r\n" * 20)
                s.sendmail(SENDER, [rcpt], msg.encode())
                sent.append(subject)
    return sent


def subjects(sink):
    out = []
    for m in list(sink.messages):
        for line in m["data"].split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return out


@pytest.mark.threads  # a loop/workpool hand-off: the TSan stage (-m threads) runs it
def test_burst_arrives_exactly_once_over_reused_connections(tern_factory):
    sink = SmtpSink()
    try:
        srv = relay_server(tern_factory, sink, {"queue.max_deliveries": "8",
                                                "queue.destination_concurrency": "8"})
        sent = send_burst(srv, 200)
        wait_for(lambda: len(sink.messages) >= 200, timeout=60, what="200 messages at the sink")
        wait_for(lambda: srv.log_text().count(": removed") >= 200, timeout=30,
                 what="every queue file removed")
        got = subjects(sink)
        assert sorted(got) == sorted(sent)  # all of them, none twice
        # dot-stuffing survived the bulk copy
        body = b"\r\n\r\n" + b".line\r\n" * 20 + b"\r\n"
        assert all(m["data"].endswith(body) for m in sink.messages)
        # sessions are parked and reused: at most one connection per delivery slot
        # (plus reconnects if a parked one expired), never one per message
        assert sink.connections <= 16, sink.connections
        out = srv.cli("queue", "list").stdout
        assert re.findall(r"^([0-9A-F]{6,})[*! ]", out, re.M) == []
    finally:
        sink.close()


def test_new_mail_does_not_wait_for_a_scan(tern_factory):
    sink = SmtpSink()
    try:
        # with an hour between scans, only the receive-side notification can get the
        # message out within the wait below
        srv = relay_server(tern_factory, sink, {"queue.scan_interval": "3600"})
        srv.wait_log(r"queue runner started")
        send_burst(srv, 3, sessions=1)
        wait_for(lambda: len(sink.messages) == 3, timeout=20, what="delivered without a scan")
    finally:
        sink.close()


def test_stale_parked_session_falls_back_to_new_connection(tern_factory):
    def drop_rset_on_first_connection(cmd, state):
        # the peer "timed out" the parked session: it goes away at the RSET
        if cmd.upper() == "RSET" and state["n"] == 1:
            return "DROP"
        return None

    sink = SmtpSink(drop_rset_on_first_connection)
    try:
        srv = relay_server(tern_factory, sink)
        send_burst(srv, 1, sessions=1, rcpt="a1@remote.test")
        srv.wait_log(r"to=<a1@remote.test>, .*status=sent")
        send_burst(srv, 1, sessions=1, rcpt="a2@remote.test")
        srv.wait_log(r"to=<a2@remote.test>, .*status=sent")
        assert "to=<a2@remote.test>" not in "".join(
            l for l in srv.log_text().splitlines() if "status=deferred (" in l
            and "queued for delivery" not in l)
        assert [m["rcpts"] for m in sink.messages] == [["a1@remote.test"], ["a2@remote.test"]]
        assert sink.connections == 2
        # the RSET went in the same pipelined group as MAIL FROM
        assert sink.commands.count("RSET") == 1
    finally:
        sink.close()
