"""
test_smtp_delivery.py - what SMTP hands to the store, checked byte for byte in the
Maildir: dot-unstuffing, 8-bit bodies, a 20 MB message (spilled to a temporary file),
50+ recipients, trace headers per copy, headers added on submission only, and the
kill -9 durability rule: every message that got "250" is in a Maildir exactly once.
"""

import hashlib
import os
import re
import smtplib
import socket
import threading
import time
import uuid

import pytest

from tern_util import IO_TIMEOUT, Client, converse, maildir_messages, wait_for


def files_with(tern, address, needle):
    out = []
    for f in maildir_messages(tern.maildir(address)):
        data = open(f, "rb").read()
        if needle in data:
            out.append(data)
    return out


def one_message(tern, address, needle):
    return wait_for(lambda: (files_with(tern, address, needle) or [None])[0],
                    what=f"message {needle!r} for {address}")


def split_trace(data):
    """Our prepended trace block ends after the Received header's last line (';date')."""
    m = re.search(rb"\tfor <[^>]+>; [^\n]+\n", data)
    assert m, data[:800]
    return data[:m.end()], data[m.end():]


def send_raw_message(tern, rcpts, wire_body, mail_from="sender@remote.example",
                     params=""):
    c = Client(tern.host, tern.ports["smtp"], timeout=120)
    c.read_until(r"^220 ")
    converse(c, [("EHLO client.test", r"^250 "),
                 (f"MAIL FROM:<{mail_from}>{params}", r"^250 ")])
    for r in rcpts:
        converse(c, [(f"RCPT TO:<{r}>", r"^250 ")])
    converse(c, [("DATA", r"^354 ")])
    c.send_raw(wire_body + b".\r\n")
    reply = c.read_until(r"^\d{3} ", timeout=120)
    converse(c, [("QUIT", r"^221 ")])
    return reply


@pytest.mark.threads
def test_dot_stuffing_and_8bit_byte_for_byte(tern):
    tok = uuid.uuid4().hex.encode()
    body = (b"Subject: " + tok + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" +
            "Příliš žluťoučký kůň — 日本語\r\n".encode() +
            b"\xff\xfe raw octets\r\n"
            b"..one dot\r\n"
            b"...two dots\r\n"
            b"..\r\n"
            b". space\r\n"
            b"last line\r\n")
    wire = body
    reply = send_raw_message(tern, ["alice@example.test"], wire, params=" BODY=8BITMIME")
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    data = one_message(tern, "alice@example.test", tok)
    trace, content = split_trace(data)
    expected = (body.replace(b"\r\n..", b"\r\n.").replace(b"\r\n. space", b"\r\n space")
                .replace(b"\r\n", b"\n"))
    assert content == expected
    assert trace.startswith(b"Return-Path: <sender@remote.example>\n")
    # port 25, unauthenticated: no Message-ID/Date added (only submission adds them)
    assert b"Message-ID" not in data and b"\nDate:" not in data


def test_submission_adds_message_id_and_date(tern):
    tok = uuid.uuid4().hex
    with smtplib.SMTP(tern.host, tern.ports["submission"], local_hostname="client.test",
                      timeout=IO_TIMEOUT) as s:
        s.login("alice@example.test", "alicepw")
        s.sendmail("alice@example.test", ["bob@example.test"], f"Subject: {tok}\r\n\r\nx\r\n")
    data = one_message(tern, "bob@example.test", tok.encode())
    assert re.search(rb"\nMessage-ID: <\d{14}\.[0-9A-F]+@mail\.example\.test>\n", data)
    assert re.search(rb"\nDate: \w{3}, \d{1,2} \w{3} \d{4} ", data)


def test_20mb_message(tern):
    tok = uuid.uuid4().hex.encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"  # 74 octets
    n = (20 * 1024 * 1024) // len(line)
    header = b"Subject: " + tok + b"\r\n\r\n"
    wire = header + line * n
    reply = send_raw_message(tern, ["bob@example.test"], wire)
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    files = wait_for(lambda: [f for f in maildir_messages(tern.maildir("bob@example.test"))
                              if tok in open(f, "rb").read(4096)],
                     what="20 MB message")
    data = open(files[0], "rb").read()
    _, content = split_trace(data)
    expected = wire.replace(b"\r\n", b"\n")
    assert len(content) == len(expected)
    assert hashlib.sha256(content).digest() == hashlib.sha256(expected).digest()


def test_fifty_five_recipients(tern):
    users = [f"many{i:02d}@example.test" for i in range(55)]
    for u in users:
        if not tern.maildir(u).parent.exists():
            tern.cli("user", "add", u, "--password-stdin", input="pw-" + u + "\n", check=False)
    tok = uuid.uuid4().hex.encode()
    reply = send_raw_message(tern, users, b"Subject: " + tok + b"\r\n\r\nto many\r\n")
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    for u in users:
        data = one_message(tern, u, tok)
        assert b"Delivered-To: " + u.encode() + b"\n" in data
        assert b"\tfor <" + u.encode() + b">; " in data


def test_alias_and_plus_address_go_to_one_copy(tern):
    tok = uuid.uuid4().hex.encode()
    reply = send_raw_message(tern, ["info@example.test", "alice+tag@example.test",
                                    "alice@example.test"],
                             b"Subject: " + tok + b"\r\n\r\nonce\r\n")
    assert reply.startswith("250 ")
    wait_for(lambda: len(files_with(tern, "alice@example.test", tok)) == 1, what="one copy")
    data = files_with(tern, "alice@example.test", tok)[0]
    assert b"X-Original-To: info@example.test\n" in data


def test_kill9_durability(tern_factory):
    """Senders run while the server is killed with SIGKILL; after a restart every message
    that was acknowledged with 250 is in the Maildir exactly once."""
    srv = tern_factory()
    run_id = uuid.uuid4().hex[:8]
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def sender(k):
        try:
            with smtplib.SMTP(srv.host, srv.ports["smtp"], local_hostname="client.test",
                              timeout=IO_TIMEOUT) as s:
                for i in range(10000):
                    if stop.is_set():
                        return
                    tok = f"dur-{run_id}-{k}-{i}"
                    s.sendmail("load@remote.example", ["alice@example.test"],
                               f"X-Dur: {tok}\r\nSubject: durability\r\n\r\n{tok}\r\n")
                    with lock:
                        acked.append(tok)
        except (smtplib.SMTPException, OSError):
            return

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 200, timeout=120, what="200 acknowledged messages")
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    with lock:
        acked_now = list(acked)
    srv.start()
    counts = {}
    for f in maildir_messages(srv.maildir("alice@example.test")):
        m = re.search(rb"\nX-Dur: (dur-[^\r\n]+)\n", open(f, "rb").read())
        if m:
            tok = m.group(1).decode()
            counts[tok] = counts.get(tok, 0) + 1
    missing = [t for t in acked_now if counts.get(t, 0) != 1]
    assert not missing, f"{len(missing)} acknowledged messages not exactly once: {missing[:5]}"
    assert all(v == 1 for v in counts.values())
    # and the restarted server still takes mail
    c = Client(srv.host, srv.ports["smtp"])
    c.read_until(r"^220 ")
    converse(c, [("EHLO client.test", r"^250 "), ("QUIT", r"^221 ")])


@pytest.mark.threads
def test_quota_at_data_and_at_rcpt(tern):
    user = "quota@example.test"
    if not tern.maildir(user).parent.exists():
        tern.cli("user", "add", user, "--password-stdin", "--quota", "3000", input="qpw\n")
    tok = uuid.uuid4().hex.encode()
    first = b"Subject: " + tok + b"\r\n\r\n" + b"q" * 2000 + b"\r\n"
    assert send_raw_message(tern, [user], first).startswith("250 ")
    one_message(tern, user, tok)
    # the copy would not fit: refused at end of data, nothing stored (all or nothing)
    reply = send_raw_message(tern, [user], b"Subject: second\r\n\r\n" + b"q" * 2000 + b"\r\n")
    assert reply.startswith("552 5.2.2 "), reply
    assert len(maildir_messages(tern.maildir(user))) == 1
    # once usage reaches the quota, RCPT already says so (temporary: 452 4.2.2)
    tern.cli("user", "quota", user, "1000")
    c = Client(tern.host, tern.ports["smtp"])
    c.read_until(r"^220 ")
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("MAIL FROM:<a@remote.example>", r"^250 "),
                     (f"RCPT TO:<{user}>", r"^452 "),
                     ("RCPT TO:<bob@example.test>", r"^250 "),
                     ("QUIT", r"^221 ")])
    assert r[2].startswith(f"452 4.2.2 <{user}>: Recipient address rejected: Mailbox full")


def test_disabled_user_is_unknown(tern):
    user = "gone@example.test"
    if not tern.maildir(user).parent.exists():
        tern.cli("user", "add", user, "--password-stdin", input="gpw\n")
        tern.cli("user", "disable", user)
    c = Client(tern.host, tern.ports["smtp"])
    c.read_until(r"^220 ")
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("MAIL FROM:<a@remote.example>", r"^250 "),
                     (f"RCPT TO:<{user}>", r"^550 "),
                     ("QUIT", r"^221 ")])
    assert "5.1.1" in r[2]


def test_ipv6_peer_in_received_header(tern_factory):
    """RFC 5321 §4.1.3: an IPv6 peer is written as an address literal "[IPv6:...]"."""
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        s6.bind(("::1", 0))
    except OSError:
        import pytest
        pytest.skip("no IPv6 loopback")
    port = s6.getsockname()[1]
    s6.close()
    srv = tern_factory({"smtp.listen": f"[::1]:{port}"})
    tok = uuid.uuid4().hex.encode()
    with smtplib.SMTP("::1", port, local_hostname="v6client.test", timeout=IO_TIMEOUT) as s:
        s.sendmail("a@remote.example", ["alice@example.test"],
                   b"Subject: " + tok + b"\r\n\r\nover IPv6\r\n")
    data = one_message(srv, "alice@example.test", tok)
    assert b"Received: from v6client.test (localhost [IPv6:::1])\n" in data
    srv.wait_log(r"connect from localhost\[::1\]")
