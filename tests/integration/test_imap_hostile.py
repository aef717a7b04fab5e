"""
test_imap_hostile.py - tern's IMAP server against hostile or broken input: overlong lines,
oversized literals (synchronising and LITERAL+), deep nesting, commands in the wrong state,
garbage bytes, pipelining, big FETCHes that must stream in batches, the failed-login
throttle, and slowloris (command lines, literals and SASL responses trickled octet by octet). Every case ends with the server still answering.
"""

import re
import socket
import time

from test_imap_lib import (Client, converse, fresh_user, imap_client, imaplib_login,
                           read_literal_reply, sample_message, wire)


def still_alive(tern):
    c = imap_client(tern)
    converse(c, [("z NOOP", r"^z OK")])
    c.close()


def test_overlong_line_gets_bye(tern):
    c = imap_client(tern)
    c.send_raw(b"a " + b"x" * (200 * 1024))
    got = c.read_until(r"^\* BYE ")
    assert "Line too long" in got
    assert c.is_closed()
    still_alive(tern)


def test_nonsync_literal_too_big_closes(tern):
    c = imap_client(tern)
    c.send("a LOGIN {999999999+}")
    converse(c, [(None, r"^\* BYE ")])
    assert c.is_closed()
    still_alive(tern)


def test_sync_literal_too_big_outside_append_is_refused(tern):
    c = imap_client(tern)
    got = converse(c, [("a LOGIN {100000}", r"^a (NO|BAD) ")])[0]
    assert not got.startswith("+")
    converse(c, [("b NOOP", r"^b OK")])


def test_deep_nesting_and_bad_syntax(tern):
    user, pw = fresh_user(tern, "hostile")
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK"), ("b SELECT INBOX", r"^b OK")])
    converse(c, [("c SEARCH " + "(" * 100 + "ALL" + ")" * 100, r"^c BAD ")])
    converse(c, [('d SEARCH "unterminated', r"^d BAD ")])
    converse(c, [("e FETCH 1 (BODY[HEADER.FIELDS (A)", r"^e BAD ")])
    converse(c, [("f FETCH x:y FLAGS", r"^f BAD ")])
    converse(c, [("g STORE 1 +FLAGS (\\Bogus)", r"^g BAD ")])
    converse(c, [("h FROBNICATE", r"^h BAD ")])
    converse(c, [("i UID LOGIN a b", r"^i BAD ")])
    c.send_raw(b"\x00\xff\xfe garbage\r\n")
    converse(c, [(None, r"^\* BAD ")])
    converse(c, [("j NOOP", r"^j OK")])
    c.close()


def test_wrong_state(tern):
    c = imap_client(tern)
    converse(c, [("a SELECT INBOX", r"^a NO "),
                 ("b FETCH 1 FLAGS", r"^b NO "),
                 ("c AUTHENTICATE X-UNKNOWN", r"^c NO "),
                 ("d LOGIN alice@example.test alicepw", r"^d OK"),
                 ("e LOGIN alice@example.test alicepw", r"^e BAD "),
                 ("f FETCH 1 FLAGS", r"^f BAD "),
                 ("g STARTTLS", r"^g BAD "),
                 ("h EXAMINE nosuchbox", r"^h NO "),
                 ("i LOGOUT", r"^i OK")])


def test_pipelined_commands_answered_in_order(tern):
    user, pw = fresh_user(tern, "pipe", [sample_message(1)])
    c = imap_client(tern)
    c.send_raw((f"a LOGIN {user} {pw}\r\nb SELECT INBOX\r\nc FETCH 1 FLAGS\r\n"
                "d NOOP\r\ne LOGOUT\r\n").encode())
    got = c.read_until(r"^e OK")
    tags = [ln.split(" ")[0] for ln in got.splitlines() if not ln.startswith("*")]
    assert tags == ["a", "b", "c", "d", "e"], got


def test_big_fetch_streams_in_batches(tern):
    big_body = ("0123456789abcdef" * 4 + "\n") * 60000  # ~3.9 MB
    msgs = [sample_message(i) for i in range(1, 201)] + [sample_message(999, "big", big_body)]
    user, pw = fresh_user(tern, "big", msgs)
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK"), ("b SELECT INBOX", r"^b OK")])
    c.send("c FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])")
    got = read_literal_reply(c, "c")
    assert got.endswith(b"c OK Fetch completed.\r\n")
    assert got.count(b" FETCH (") == 201
    assert wire(msgs[-1]) in got
    # a partial of the streamed TEXT, counted in CRLF octets
    text = wire(msgs[-1]).split(b"\r\n\r\n", 1)[1]
    found = converse(c, [("s SEARCH SUBJECT big", r"^s OK")])[0]
    seq = int(re.search(r"^\* SEARCH (\d+)\r$", found, re.M).group(1))
    c.send(f"d FETCH {seq} (BODY.PEEK[TEXT]<100001.300000> RFC822.SIZE)")
    got = read_literal_reply(c, "d")
    assert b"BODY[TEXT]<100001> {300000}\r\n" + text[100001:400001] + b" RFC822.SIZE %d)" % len(
        wire(msgs[-1])) in got
    converse(c, [("e LOGOUT", r"^e OK")])


def test_failed_login_throttle(tern_factory):
    srv = tern_factory({"auth.max_failures": "3"})
    c = imap_client(srv)
    for i in range(3):
        converse(c, [(f"a{i} LOGIN alice@example.test wrong", rf"^a{i} NO ")])
    got = converse(c, [("b LOGIN alice@example.test alicepw", r"^b NO ")])[0]
    assert "UNAVAILABLE" in got or "AUTHENTICATIONFAILED" in got
    srv.wait_log(r"imap\[\d+\]: login failed: user=<alice@example.test>")


def test_big_literal_with_pipelined_command_in_one_write(tern):
    """The spill file takes exactly the literal; the bytes after it are the next command."""
    user, pw = fresh_user(tern, "spill")
    msg = b"Subject: spill\r\n\r\n" + b"x" * 70 + b"\r\n"
    msg = msg * 5000  # ~370 KB: above the spill threshold
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    c.send_raw(b"b APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\nc NOOP\r\nd SELECT INBOX\r\n")
    got = c.read_until(r"^d OK")
    assert re.search(r"^b OK \[APPENDUID \d+ 1\]", got, re.M), got
    assert re.search(r"^c OK", got, re.M) and "* 1 EXISTS" in got
    c.send("e FETCH 1 BODY.PEEK[]")
    got = read_literal_reply(c, "e")
    assert b"BODY[] {%d}\r\n" % len(msg) + msg + b")\r\n" in got


def test_disconnect_mid_fetch_and_mid_append(tern):
    big_body = ("y" * 70 + "\n") * 40000  # ~2.8 MB
    user, pw = fresh_user(tern, "drop", [sample_message(1, "big", big_body)])
    for _ in range(3):
        c = imap_client(tern)
        converse(c, [(f"a LOGIN {user} {pw}", r"^a OK"), ("b SELECT INBOX", r"^b OK")])
        c.send("c FETCH 1 BODY.PEEK[]")
        c.read_line()
        c.close()  # gone while the literal streams
        c = imap_client(tern)
        converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
        c.send_raw(b"b APPEND INBOX {1000000+}\r\n" + b"z" * 500000)
        c.close()  # gone in the middle of a spilled literal
    still_alive(tern)
    m = imaplib_login(tern, user, pw)
    assert m.select("INBOX") == ("OK", [b"1"])
    m.logout()


def test_pipelined_flood_without_reading(tern):
    """Thousands of pipelined commands from a client that reads late: every one answered,
    in order (the session waits for its output to drain instead of buffering without end)."""
    c = imap_client(tern)
    n = 5000
    c.send_raw(b"".join(b"t%d CAPABILITY\r\n" % i for i in range(n)))
    # Line by line: read_until() searches all it has read after every line, quadratic
    # over these 10,000 lines (it took most of this test's 20 to 60 s).
    deadline = time.monotonic() + 60
    tags = []
    for _ in range(3 * n):  # bound: two lines per reply expected
        m = re.match(r"(t\d+) OK", c.read_line(timeout=max(0.001, deadline - time.monotonic())))
        if m:
            tags.append(m.group(1))
            if m.group(1) == f"t{n - 1}":
                break
    assert tags == [f"t{i}" for i in range(n)]


# ---- slowloris: input trickled to hold a session (imap.timeout = 2) ----------------------

def trickle_until_closed(c, data, partner=None):
    """Send data one octet at a time, 0.5 s apart (each octet well inside the idle timeout),
    until the server closes; True if it did. partner, a logged-in client on another
    connection, sends a whole command between octets and must be answered every time."""
    for i, octet in enumerate(data[:60]):  # bound: 60 octets = 30 s >> the 2 s timeout
        try:
            c.sock.sendall(bytes([octet]))
        except (BrokenPipeError, ConnectionResetError):
            return True
        if c.is_closed(timeout=0.5):  # also the pause between octets
            return True
        if partner is not None:
            converse(partner, [(f"p{i} NOOP", rf"^p{i} OK")])
    return False


def slow_server(tern_factory):
    srv = tern_factory({"imap.timeout": "2"})
    user, pw = fresh_user(srv, "slow")
    partner = imap_client(srv)
    converse(partner, [(f"a LOGIN {user} {pw}", r"^a OK"), ("b SELECT INBOX", r"^b OK")])
    return srv, user, pw, partner


def test_trickled_command_line_is_cut(tern_factory):
    """Each octet re-arms the idle timer, but a command line must be complete within
    imap.timeout of its first octet: the trickler is dropped, the partner keeps working."""
    srv, user, pw, partner = slow_server(tern_factory)
    c = imap_client(srv)
    assert trickle_until_closed(c, b"a LOGIN " + b"x" * 80, partner), \
        "a never-finished command line kept the session alive"
    assert b"* BYE" in c.buf
    converse(partner, [("z NOOP", r"^z OK")])
    still_alive(srv)


def test_trickled_line_after_a_literal_is_cut(tern_factory):
    """The clock runs for the whole command, across its literals."""
    srv, user, pw, partner = slow_server(tern_factory)
    c = imap_client(srv)
    c.send_raw(b"a LOGIN {5+}\r\nalice")
    assert trickle_until_closed(c, b" " + b"x" * 80, partner)
    converse(partner, [("z NOOP", r"^z OK")])


def test_trickled_append_literal_is_cut(tern_factory):
    """Literal data must keep a minimum rate (imap.timeout plus 1 s per 500 octets):
    an APPEND literal dribbled an octet at a time is cut and nothing is stored."""
    srv, user, pw, partner = slow_server(tern_factory)
    c = imap_client(srv)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    c.send("b APPEND INBOX {1000}")
    converse(c, [(None, r"^\+ ")])
    assert trickle_until_closed(c, b"x" * 1000, partner), \
        "a trickled literal kept the session alive"
    got = converse(partner, [("z NOOP", r"^z OK")])[0]
    assert "EXISTS" not in got
    assert re.search(r"^y OK", converse(partner, [("y SELECT INBOX", r"^y OK")])[0], re.M)
    converse(partner, [("x SEARCH ALL", r"^\* SEARCH\r$")])


def test_trickled_sasl_response_is_cut(tern_factory):
    srv, user, pw, partner = slow_server(tern_factory)
    c = imap_client(srv)
    converse(c, [("a AUTHENTICATE PLAIN", r"^\+")])
    assert trickle_until_closed(c, b"A" * 80, partner)
    converse(partner, [("z NOOP", r"^z OK")])


def test_large_append_at_a_normal_rate_survives_a_short_timeout(tern_factory):
    """The rate rule must not cut honest clients: a 3 MB APPEND sent in pieces with pauses
    (longer in total than imap.timeout, far above 500 octets/s) is stored whole."""
    srv = tern_factory({"imap.timeout": "2"})
    user, pw = fresh_user(srv, "slow")
    line = b"y" * 78 + b"\r\n"
    msg = b"Subject: big slow append\r\n\r\n" + line * 40000  # ~3.2 MB
    c = imap_client(srv)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    c.send(b"b APPEND INBOX {%d}" % len(msg))
    converse(c, [(None, r"^\+ ")])
    step = 256 * 1024
    for off in range(0, len(msg), step):  # 13 pieces, 0.3 s apart: ~4 s > the timeout
        c.send_raw(msg[off:off + step])
        assert not c.is_closed(timeout=0.3), "an APPEND at a normal rate was cut"
    c.send_raw(b"\r\n")
    got = converse(c, [(None, r"^b (OK|NO|BAD)")])[0]
    assert re.search(r"^b OK", got, re.M), got
    c.send("d SELECT INBOX")
    assert "* 1 EXISTS" in c.read_until(r"^d OK")
    c.send("e FETCH 1 BODY.PEEK[]")
    assert b"BODY[] {%d}\r\n" % len(msg) + msg + b")\r\n" in read_literal_reply(c, "e")
    c.send("f LOGOUT")
    c.read_until(r"^f OK")


def test_idle_without_input_still_ends_by_its_own_limit(tern_factory):
    """The line rule applies to input; an IDLE waiting quietly for DONE is not cut by it,
    and DONE sent in one piece is answered."""
    srv, user, pw, partner = slow_server(tern_factory)
    partner.send("i IDLE")
    partner.read_until(r"^\+ ")
    partner.send("DONE")
    partner.read_until(r"^i OK")
    converse(partner, [("z NOOP", r"^z OK")])


def _fetch_and_stall(srv, user, pw, wait):
    """FETCH a large message over a socket with a small receive buffer, read nothing for
    `wait` seconds (past imap.timeout), then read until the server closes. Returns (the
    announced literal size, the bytes after the literal's "{n}\\r\\n")."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # fills quickly
    s.settimeout(60)
    s.connect((srv.host, srv.ports["imap"]))
    c = Client.__new__(Client)
    c.host, c.timeout, c.sock, c.buf, c.transcript = srv.host, 60, s, b"", []
    c.read_line()
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK"), ("b SELECT INBOX", r"^b OK")])
    c.send("c FETCH 1 BODY.PEEK[]")
    line = c.read_line()
    m = re.search(r"\{(\d+)\}\r\n$", line)
    assert m, line
    time.sleep(wait)  # not an assertion on time: the server's write timeout must pass
    # Once the reader resumes, the server sends what it had queued and closes (before
    # the fix it never wrote again: the connection stayed open, the session with it).
    assert c.is_closed(timeout=60), "the timed-out connection was never closed"
    data, c.buf = c.buf, b""
    c.close()
    return int(m.group(1)), data


def test_write_timeout_inside_a_streamed_literal_sends_no_bye(tern_factory):
    """A client that stops reading in the middle of a streamed FETCH literal is dropped by
    the write timeout: what was queued still reaches it if it reads again, then the
    connection closes (libevent had disabled writing, so it never did), and no "* BYE" is
    written into the literal's octets (it would read as message text, RFC 3501 §4.3;
    POP3 already keeps its farewell out of a RETR)."""
    srv = tern_factory({"imap.timeout": "2"})
    line = b"z" * 78 + b"\r\n"
    msg = b"Subject: stalled fetch\r\n\r\n" + line * 120000  # ~9.6 MB: past every buffer
    user, pw = fresh_user(srv, "stall", [msg])
    for wait in (4, 8, 16):  # bounded: retried only if the timeout had not fired yet
        size, data = _fetch_and_stall(srv, user, pw, wait)
        if len(data) < size:
            break  # the write timeout cut the literal short: the case under test
    else:
        raise AssertionError("the write timeout never cut the stalled FETCH")
    assert b"BYE" not in data, data[data.find(b"BYE") - 200:][:300]
    assert msg.startswith(data), "the literal carried bytes that are not the message's"
    still_alive(srv)
