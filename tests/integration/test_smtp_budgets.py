"""
test_smtp_budgets.py - DESIGN §6 budgets under hostile input, measured on the real server:
a peer that never reads its replies, 10^5 header lines, a 10^5-address To: header,
10^5 RCPT attempts past the limit, connection floods from one IP, slowloris.

No assertion is on wall-clock time: each test checks behaviour (memory stayed bounded,
the message was accepted or refused, the server still answers another client).
Every wait is bounded (socket timeouts, wait_for).
"""

import re
import socket
import time

from budget_util import check_all_replies_sent, check_non_reader_is_bounded, dribble_until_closed
from tern_util import Client, converse, maildir_messages, wait_for


def smtp_session(srv, port="smtp"):
    c = Client(srv.host, srv.ports[port])
    c.read_until(r"^220 ")
    converse(c, [("EHLO client.test", r"^250 ")])
    return c


def still_serves(srv):
    c = smtp_session(srv)
    converse(c, [("NOOP", r"^250 "), ("QUIT", r"^221 ")])


def test_peer_that_never_reads_keeps_output_bounded(tern_factory):
    """EHLO in a loop, replies never read: ~30x amplification. The server must stop
    taking commands while its output is over a cap (so TCP pushes back), not buffer
    hundreds of megabytes of replies."""
    srv = tern_factory({"smtp.timeout": 60})
    still_serves(srv)
    # 3 M EHLOs: ~750 MB of replies if nothing stopped it
    check_non_reader_is_bounded(srv, "smtp", b"EHLO x\r\n", still_serves)
    srv.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=\d+")


def test_unread_replies_are_all_sent_once_the_peer_reads(tern):
    """Backpressure must pause, not drop: every pipelined command gets its reply, in
    order, when the client reads at last (even after it half-closed)."""
    n = 3000  # ~750 kB of EHLO replies: past the output cap
    c = Client(tern.host, tern.ports["smtp"])
    c.read_until(r"^220 ")
    r = check_all_replies_sent(c, b"EHLO x\r\n", n, b"QUIT\r\n", "250 CHUNKING")
    assert r.rstrip().endswith("221 2.0.0 Bye")


def message_with_headers(n_headers, tok):
    head = b"".join(b"X-H%d: v\r\n" % i for i in range(n_headers))
    return head + b"Subject: " + tok + b"\r\n\r\nbody\r\n"


def deliver_raw(srv, rcpt, data, port="smtp"):
    c = smtp_session(srv, port)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 (f"RCPT TO:<{rcpt}>", r"^250 "),
                 ("DATA", r"^354 ")])
    c.send_raw(data + b".\r\n")
    r = c.read_until(r"^[245]\d\d ", timeout=120)
    converse(c, [("QUIT", r"^221 ")])
    return r


def count_with(srv, address, needle):
    return sum(1 for f in maildir_messages(srv.maildir(address)) if needle in open(f, "rb").read())


def check_delivered_whole_or_refused(srv, data, tok, what):
    """Send data to alice: either it is accepted and arrives once (the message carrying
    tok), or it is refused with a clean permanent reply; the server then still serves."""
    r = deliver_raw(srv, "alice@example.test", data)
    if r.startswith("250"):
        wait_for(lambda: count_with(srv, "alice@example.test", tok) == 1, timeout=60,
                 what=what)
    else:
        assert re.match(r"^5\d\d 5\.", r), r
    still_serves(srv)


def test_100k_header_lines(tern):
    """10^5 header fields (1.2 MB): accepted whole, or refused with a clean reply; the
    server answers another client afterwards."""
    tok = f"hdrs-{time.monotonic_ns()}".encode()
    check_delivered_whole_or_refused(tern, message_with_headers(100000, tok), tok,
                                     "the 10^5-header message")


def test_100k_addresses_in_to_header(tern):
    """A To: header of 10^5 addresses (one folded field of ~2.5 MB) on submission, where
    headers are looked at (Message-ID/Date added): accepted or refused cleanly."""
    tok = f"to-{time.monotonic_ns()}".encode()
    to = b",\r\n ".join(b"u%d@example.org" % i for i in range(100000))
    data = b"To: " + to + b"\r\nSubject: " + tok + b"\r\n\r\nbody\r\n"
    check_delivered_whole_or_refused(tern, data, tok, "the message with a 10^5-address To:")


def test_100k_rcpt_attempts_past_the_limit(tern_factory):
    """10^5 pipelined RCPTs past max_recipients: each is refused (452, an error), the
    error limit ends the session early, and the server keeps serving."""
    srv = tern_factory({"smtp.max_recipients": 2})
    c = smtp_session(srv)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 ")])
    c.sock.settimeout(30)
    try:
        c.send_raw(b"RCPT TO:<alice@example.test>\r\n" * 100000)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass  # the server hung up before reading all of it: that is the point
    r = c.read_until(r"^421 ", timeout=30)
    assert r.count("250 2.1.5") == 2
    assert "452 4.5.3 Error: too many recipients" in r
    assert "421 4.7.0 mail.example.test Error: too many errors" in r
    still_serves(srv)


def test_connection_flood_from_one_ip(tern_factory):
    """Past max_connections_per_ip the server refuses (421) instead of serving one IP
    without bound; other connections are unaffected, and closing frees the slots."""
    srv = tern_factory({"max_connections_per_ip": 5})
    held = []
    try:
        for _ in range(5):
            c = Client(srv.host, srv.ports["smtp"])
            c.read_until(r"^220 ")
            held.append(c)
        refused = 0
        for _ in range(20):
            c = Client(srv.host, srv.ports["smtp"])
            try:
                line = c.read_line()
            except Exception:
                line = ""
            if not line.startswith("220"):
                refused += 1
            c.close()
        assert refused == 20
    finally:
        for c in held:
            c.close()
    wait_for(lambda: _greets(srv), timeout=15, what="a free connection slot")


def _greets(srv):
    try:
        c = Client(srv.host, srv.ports["smtp"])
        ok = c.read_line().startswith("220")
        c.close()
        return ok
    except Exception:
        return False


def test_slowloris_is_cut_by_the_idle_timeout(tern_factory):
    """A command dribbled one byte at a time, each byte inside the idle timeout but the
    line never finished: the session must end, not live forever on one partial line."""
    srv = tern_factory({"smtp.timeout": 2})
    c = Client(srv.host, srv.ports["smtp"])
    c.read_until(r"^220 ")
    # bound: 60 bytes, 0.5 s apart = 30 s >> 2 s timeout
    closed = dribble_until_closed(c, b"N")
    assert closed, "a never-finished command line kept the session alive"
    still_serves(srv)


def test_trickled_message_text_is_cut(tern_factory):
    """DATA text trickled one short line at a time, each inside the idle timeout: the
    message must still arrive at a minimum rate (Postfix smtpd_min_data_rate), so the
    session ends with 421 instead of holding a slot forever; nothing is delivered."""
    srv = tern_factory({"smtp.timeout": 2})
    tok = f"trickle-{time.monotonic_ns()}".encode()
    c = smtp_session(srv)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("DATA", r"^354 ")])
    c.send_raw(b"Subject: " + tok + b"\r\n\r\n")
    # bound: 60 lines, 0.5 s apart = 30 s >> 2 s timeout
    closed = dribble_until_closed(c, b"x\r\n")
    assert closed, "a trickled message kept the session alive"
    srv.wait_log(r"timeout after DATA from localhost\[127\.0\.0\.1\]")
    still_serves(srv)
    assert count_with(srv, "alice@example.test", tok) == 0


def test_auth_throttle_is_per_ip_across_connections(tern_factory):
    """Failed AUTHs are counted per client IP, not per connection: reconnecting does not
    reset the throttle, and a throttled IP gets 454 even with the right password."""
    from tern_util import sasl_plain
    srv = tern_factory({"auth.max_failures": 3})
    for _ in range(3):
        c = smtp_session(srv, "submission")
        converse(c, [("AUTH PLAIN " + sasl_plain("alice@example.test", "wrong"), r"^535 ")])
        c.close()
    c = smtp_session(srv, "submission")
    r = converse(c, [("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw"), r"^454 ")])
    assert r[0].startswith("454 4.7.0")
    c.close()
