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

import pytest

from tern_util import Client, converse, maildir_messages, wait_for


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
    before = rss_kb(srv.pid)
    total = 24 * 1024 * 1024  # 3 M EHLOs: ~750 MB of replies if nothing stopped it
    s, sent = flood_without_reading(srv.host, srv.ports["smtp"], b"", b"EHLO x\r\n", total)
    try:
        grown = rss_kb(srv.pid) - before
        print(f"server read {sent} bytes, RSS grew by {grown} kB")
        assert sent < total, "the server read everything a non-reading peer sent"
        assert grown < 100 * 1024 + rss_slack_kb(srv), f"server RSS grew by {grown} kB"
        still_serves(srv)
    finally:
        s.close()
    srv.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=\d+")


def test_unread_replies_are_all_sent_once_the_peer_reads(tern):
    """Backpressure must pause, not drop: every pipelined command gets its reply, in
    order, when the client reads at last (even after it half-closed)."""
    n = 3000  # ~750 kB of EHLO replies: past the output cap
    c = Client(tern.host, tern.ports["smtp"])
    c.read_until(r"^220 ")
    c.send_raw(b"EHLO x\r\n" * n + b"QUIT\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    r = read_to_eof(c.sock)
    assert r.count("250 CHUNKING") == n
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


def test_100k_header_lines(tern):
    """10^5 header fields (1.2 MB): accepted whole, or refused with a clean reply; the
    server answers another client afterwards."""
    tok = f"hdrs-{time.monotonic_ns()}".encode()
    r = deliver_raw(tern, "alice@example.test", message_with_headers(100000, tok))
    if r.startswith("250"):
        wait_for(lambda: count_with(tern, "alice@example.test", tok) == 1, timeout=60,
                 what="the 10^5-header message")
    else:
        assert re.match(r"^5\d\d 5\.", r), r
    still_serves(tern)


def test_100k_addresses_in_to_header(tern):
    """A To: header of 10^5 addresses (one folded field of ~2.5 MB) on submission, where
    headers are looked at (Message-ID/Date added): accepted or refused cleanly."""
    tok = f"to-{time.monotonic_ns()}".encode()
    to = b",\r\n ".join(b"u%d@example.org" % i for i in range(100000))
    data = b"To: " + to + b"\r\nSubject: " + tok + b"\r\n\r\nbody\r\n"
    r = deliver_raw(tern, "alice@example.test", data)
    if r.startswith("250"):
        wait_for(lambda: count_with(tern, "alice@example.test", tok) == 1, timeout=60,
                 what="the message with a 10^5-address To:")
    else:
        assert re.match(r"^5\d\d 5\.", r), r
    still_serves(tern)


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
    closed = False
    for i in range(60):  # bound: 60 bytes, 0.5 s apart = 30 s >> 2 s timeout
        try:
            c.sock.sendall(b"N")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if c.is_closed(timeout=0.5):  # also the pause between bytes
            closed = True
            break
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
    closed = False
    for i in range(60):  # bound: 60 lines, 0.5 s apart = 30 s >> 2 s timeout
        try:
            c.sock.sendall(b"x\r\n")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if c.is_closed(timeout=0.5):
            closed = True
            break
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
