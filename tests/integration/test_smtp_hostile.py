"""
test_smtp_hostile.py - hostile and broken input against tern's SMTP server: overlong
lines, SMTP smuggling (bare LF / bare CR end-of-data variants), message size, NUL bytes,
error and idle limits, STARTTLS command injection (CVE-2011-0411 class), state errors,
pipelining, many BDAT chunks, HTTP to the mail port.
"""

import re
import socket
import time

import pytest

from tern_util import Client, converse, maildir_messages, sasl_plain, wait_for


def session(tern, port="smtp", ehlo=True):
    c = Client(tern.host, tern.ports[port])
    c.read_until(r"^220 ")
    if ehlo:
        converse(c, [("EHLO client.test", r"^250 ")])
    return c


def count_with(tern, address, needle):
    n = 0
    for f in maildir_messages(tern.maildir(address)):
        if needle in open(f, "rb").read():
            n += 1
    return n


def test_overlong_command_line_keeps_connection_usable(tern):
    c = session(tern)
    r = converse(c, [("NOOP " + "x" * 600, r"^500 "), ("NOOP", r"^250 ")])
    assert r[0].startswith("500 5.5.2 Error: line too long")
    # a line with no LF at all, far past every limit, then a normal command
    c.send_raw(b"y" * 20000)
    c.send_raw(b"z" * 20000 + b"\r\nNOOP\r\n")
    r = c.read_until(r"^250 ")
    assert "500 5.5.2 Error: line too long" in r
    converse(c, [("QUIT", r"^221 ")])


def test_bare_lf_command_lines_accepted(tern):
    c = session(tern, ehlo=False)
    c.send_raw(b"EHLO nc.test\nNOOP\n")
    r = c.read_until(r"^250 2\.0\.0 Ok")
    assert "250-mail.example.test" in r


@pytest.mark.parametrize("marker", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"])
def test_smtp_smuggling_is_not_end_of_data(tern, marker):
    tok = f"smuggle-{abs(hash(marker))}-{time.monotonic_ns()}".encode()
    c = session(tern)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("DATA", r"^354 ")])
    c.send_raw(b"Subject: " + tok + b"\r\n\r\nbefore" + marker +
               b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
               b"Subject: smuggled " + tok + b"\r\n\r\nevil\r\n.\r\n")
    r = c.read_until(r"^250 2\.0\.0 Ok: queued as ")
    # exactly one reply to the whole thing: nothing after the fake marker was a command
    converse(c, [("NOOP", r"^250 2\.0\.0 Ok")])
    assert r.count("\n") == 1, r
    wait_for(lambda: count_with(tern, "alice@example.test", tok) == 1, what="the one message")
    assert count_with(tern, "bob@example.test", b"smuggled " + tok) == 0
    text = [open(f, "rb").read() for f in maildir_messages(tern.maildir("alice@example.test"))
            if tok in open(f, "rb").read()][0]
    assert b"MAIL FROM:<evil@remote.example>" in text  # it is message content


def test_message_size_limit(tern_factory):
    srv = tern_factory({"smtp.max_message_size": 10000})
    c = session(srv)
    r = converse(c, [("MAIL FROM:<a@remote.example> SIZE=20000", r"^552 ")])
    assert r[0].startswith("552 5.3.4 Message size exceeds fixed limit")
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("DATA", r"^354 ")])
    c.send_raw(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 30 + b".\r\n")
    r = c.read_until(r"^552 ")
    assert r.startswith("552 5.3.4 Message size exceeds fixed limit")
    # the stream is in sync again and the transaction is gone
    r = converse(c, [("NOOP", r"^250 "), ("RCPT TO:<alice@example.test>", r"^503 ")])
    assert "need MAIL" in r[1]
    assert maildir_messages(srv.maildir("alice@example.test")) == []


def test_nul_bytes(tern):
    c = session(tern)
    r = converse(c, [("NOOP\0junk", r"^500 ")])
    assert r[0].startswith("500 5.5.2")
    tok = f"nul-{time.monotonic_ns()}".encode()
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("DATA", r"^354 ")])
    c.send_raw(b"Subject: " + tok + b"\r\n\r\na\0b\r\n.\r\n")
    c.read_until(r"^250 2\.0\.0 Ok: queued as ")
    wait_for(lambda: count_with(tern, "alice@example.test", tok) == 1, what="NUL message")
    data = [open(f, "rb").read() for f in maildir_messages(tern.maildir("alice@example.test"))
            if tok in open(f, "rb").read()][0]
    assert data.endswith(b"\n\na\0b\n")


def test_long_text_lines_are_accepted(tern):
    """RFC 5321 §4.5.3.1.6 allows servers to accept text lines over 998 octets and
    §4.5.3.1 asks implementations to avoid such limits; we accept and keep them."""
    tok = f"long-{time.monotonic_ns()}".encode()
    c = session(tern)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("DATA", r"^354 ")])
    line = b"L" * 5000
    c.send_raw(b"Subject: " + tok + b"\r\n\r\n" + line + b"\r\n.\r\n")
    c.read_until(r"^250 2\.0\.0 Ok: queued as ")
    wait_for(lambda: count_with(tern, "alice@example.test", tok) == 1, what="long-line message")


def test_too_many_errors(tern_factory):
    srv = tern_factory({"smtp.max_errors": 5})
    c = session(srv)
    for i in range(4):
        converse(c, [(f"BOGUS{i}", r"^502 5\.5\.2 Error: command not recognized")])
    c.send("BOGUS5")
    r = c.read_until(r"^421 ")
    assert "421 4.7.0 mail.example.test Error: too many errors" in r
    assert c.is_closed()


def test_idle_timeout(tern_factory):
    srv = tern_factory({"smtp.timeout": 2})
    c = session(srv)
    r = c.read_until(r"^421 ", timeout=30)
    assert r.startswith("421 4.4.2 mail.example.test Error: timeout exceeded")
    assert c.is_closed()
    srv.wait_log(r"timeout after EHLO from localhost\[127\.0\.0\.1\]")


def test_starttls_discards_pipelined_commands_and_resets(tern):
    c = session(tern)
    # CVE-2011-0411: commands sent in clear together with STARTTLS must not run
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\n")
    c.read_until(r"^220 2\.0\.0 Ready to start TLS")
    c.starttls()
    # RFC 3207 §4.2: state is reset, EHLO is needed again
    r = converse(c, [("MAIL FROM:<a@remote.example>", r"^503 "),
                     ("EHLO client.test", r"^250 "),
                     ("RCPT TO:<bob@example.test>", r"^503 "),
                     ("STARTTLS", r"^554 "),
                     ("QUIT", r"^221 ")])
    assert "send HELO/EHLO first" in r[0]
    assert "STARTTLS" not in r[1]
    assert "need MAIL command" in r[2]


def test_state_errors(tern):
    c = Client(tern.host, tern.ports["smtp"])
    c.read_until(r"^220 ")
    r = converse(c, [("MAIL FROM:<a@remote.example>", r"^503 "),
                     ("HELO client.test", r"^250 "),
                     ("RCPT TO:<alice@example.test>", r"^503 "),
                     ("DATA", r"^503 "),
                     ("MAIL FROM:<a@remote.example>", r"^250 "),
                     ("MAIL FROM:<a@remote.example>", r"^503 "),
                     ("DATA", r"^503 "),
                     ("MAIL FROM <bad>", r"^503 "),
                     ("RSET", r"^250 "),
                     ("MAIL FROM:<a@", r"^501 "),
                     ("VRFY alice@example.test", r"^252 "),
                     ("EXPN list", r"^502 "),
                     ("HELP", r"^214 "),
                     ("AUTH PLAIN", r"^334 "),
                     ("*", r"^501 "),
                     ("QUIT", r"^221 ")])
    assert "503 5.5.1 Error: send HELO/EHLO first" in r[0]
    assert "503 5.5.1 Error: need MAIL command" in r[2]
    assert "503 5.5.1 Error: need MAIL command" in r[3]
    assert "503 5.5.1 Error: nested MAIL command" in r[5]
    assert "503 5.5.1 Error: need RCPT command" in r[6]
    assert "501 5.1.7 Bad sender address syntax" in r[9]
    assert "252 2.0.0 alice@example.test" in r[10]
    assert "501 5.7.0 Authentication aborted" in r[14]


def test_too_many_recipients(tern_factory):
    srv = tern_factory({"smtp.max_recipients": 3})
    c = session(srv)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 ")])
    for i in range(3):
        converse(c, [(f"RCPT TO:<alice+{i}@example.test>", r"^250 ")])
    r = converse(c, [("RCPT TO:<bob@example.test>", r"^452 ")])
    assert r[0].startswith("452 4.5.3 Error: too many recipients")


def test_pipelining_in_one_write(tern):
    tok = f"pipe-{time.monotonic_ns()}"
    c = session(tern)
    c.send_raw(("MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
                "RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                f"Subject: {tok}\r\n\r\nhi\r\n.\r\nNOOP\r\nQUIT\r\n").encode())
    r = c.read_until(r"^221 ")
    codes = [l[:3] for l in r.splitlines()]
    assert codes == ["250", "250", "550", "250", "354", "250", "250", "221"], r


def test_many_bdat_chunks(tern):
    tok = f"chunks-{time.monotonic_ns()}".encode()
    c = session(tern)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 ")])
    body = b"Subject: " + tok + b"\r\n\r\n" + b"x" * 10000 + b"\r\n"
    n = 0
    batch = bytearray()
    for i in range(len(body)):
        batch += b"BDAT 1\r\n" + body[i:i + 1]
        n += 1
    c.send_raw(bytes(batch))
    got = 0
    while got < n:
        c.read_line()
        got += 1
    c.send_raw(b"BDAT 0 LAST\r\n")
    c.read_until(r"^250 2\.0\.0 Ok: queued as ")
    wait_for(lambda: count_with(tern, "alice@example.test", tok) == 1, what="chunked message")


def test_bdat_without_transaction_consumes_chunk(tern):
    c = session(tern)
    c.send_raw(b"BDAT 12\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
    r = c.read_until(r"^250 ")
    assert r.startswith("503 5.5.1 Error: need MAIL command"), r


def test_http_to_mail_port(tern):
    c = Client(tern.host, tern.ports["smtp"])
    c.read_until(r"^220 ")
    c.send("GET / HTTP/1.0")
    r = c.read_until(r"^221 ")
    assert "221 2.7.0" in r
    assert c.is_closed()


def test_auth_throttle_blocks_after_failures(tern_factory):
    srv = tern_factory({"auth.max_failures": 2})
    c = session(srv)
    for _ in range(2):
        converse(c, [("AUTH PLAIN " + sasl_plain("alice@example.test", "bad"), r"^535 ")])
    r = converse(c, [("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw"), r"^454 ")])
    assert r[0].startswith("454 4.7.0")


def test_junk_commands_limit(tern_factory):
    """Past 100 commands without progress (NOOP, RSET, VRFY, HELP...) each one counts as
    an error (Postfix smtpd_junk_command_limit), so an endless NOOP loop ends with 421."""
    srv = tern_factory({"smtp.max_errors": 3})
    c = session(srv)
    c.send_raw(b"NOOP\r\n" * 110)
    r = c.read_until(r"^421 ")
    assert r.count("250 2.0.0 Ok") == 103, r.count("250 2.0.0 Ok")
    assert "421 4.7.0 mail.example.test Error: too many errors" in r
    assert c.is_closed()


def test_utf8_address_needs_smtputf8(tern):
    c = session(tern)
    r = converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                     ("RCPT TO:<jürgen@example.test>", r"^553 "),
                     ("RSET", r"^250 "),
                     ("MAIL FROM:<a@remote.example> SMTPUTF8", r"^250 "),
                     ("RCPT TO:<jürgen@example.test>", r"^550 "),
                     ("QUIT", r"^221 ")])
    assert r[1].startswith("553 5.6.7")


def test_dropped_connection_is_logged(tern):
    since = tern.log_offset()
    c = session(tern)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("DATA", r"^354 ")])
    c.send_raw(b"Subject: half a message\r\n")
    c.close()
    tern.wait_log(r"lost connection after DATA from localhost\[127\.0\.0\.1\]", since=since)


def test_mail_loop_too_many_hops(tern):
    c = session(tern)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("DATA", r"^354 ")])
    c.send_raw(b"".join(b"Received: from hop%d by relay\r\n" % i for i in range(51)) +
               b"Subject: loop\r\n\r\nround and round\r\n.\r\n")
    r = c.read_until(r"^554 ")
    assert r.startswith("554 5.4.0 Error: too many hops")
    converse(c, [("NOOP", r"^250 ")])


def test_bdat_syntax_error_closes(tern):
    """A BDAT without a valid size: the octets after it cannot be told apart from
    commands, so the server answers 501 and hangs up instead of executing them."""
    c = session(tern)
    c.send_raw(b"BDAT 12x\r\nMAIL FROM:<evil@remote.example>\r\n")
    r = c.read_until(r"^501 ")
    assert r.startswith("501 5.5.4 Syntax: BDAT count [LAST]")
    assert c.is_closed()


def test_forwarding_loop_is_refused(tern):
    c = session(tern)
    converse(c, [("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<info@example.test>", r"^250 "),
                 ("DATA", r"^354 ")])
    c.send_raw(b"Delivered-To: alice@example.test\r\nSubject: loop\r\n\r\nback again\r\n.\r\n")
    r = c.read_until(r"^554 ")
    assert r.startswith("554 5.4.6 Error: mail forwarding loop for <alice@example.test>")


def test_disconnect_while_delivery_job_runs(tern):
    """The client hangs up right after the end of data, while the delivery job is in the
    workpool: the session must outlive the job, and the server must carry on."""
    tok = f"hangup-{time.monotonic_ns()}".encode()
    for i in range(20):
        c = session(tern)
        c.send_raw(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        c.read_until(r"^354 ")
        c.send_raw(b"Subject: " + tok + b"\r\n\r\n" + str(i).encode() + b"\r\n.\r\nQUIT\r\n")
        c.close()
    c = session(tern)
    converse(c, [("NOOP", r"^250 "), ("QUIT", r"^221 ")])
    # the complete messages are delivered (the client just did not wait for the 250),
    # each once
    wait_for(lambda: count_with(tern, "bob@example.test", tok) == 20, what="20 deliveries")
