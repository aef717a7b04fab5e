"""
test_pop3_seeds.py - every POP3 session of the seed articles (../shared/seeds beside the repository) replayed
against the real tern, with the replies the seeds show (Dovecot wording, without the
software name). Messages are put into the Maildir directly; the users are the seeds'
users in our test domain (bare logins map to the only domain, example.test).
"""

import re

import pytest

from test_pop3_lib import (Client, add_user, apop_digest, b64, converse, deliver_file,
                           list_size, sample_message, unstuff, wire_form)

# Seed 000: the message RETR 2 shows (Postfix trace headers, tab-folded Received).
SEED000_MSG2 = (
    "Return-Path: <od.koho.ten@email.je>\n"
    "X-Original-To: tsunami@tsunami.locnet\n"
    "Delivered-To: tsunami@tsunami.locnet\n"
    "Received: from vodik.locnet (vodik [192.168.0.13])\n"
    "\tby tsunami (Postfix) with ESMTP id 0AA3929FAA\n"
    "\tfor <tsunami@tsunami.locnet>; Sat, 7 Jan 2006 23:36:40 +0100 (CET)\n"
    "Subject: pozdrav od anonyma\n"
    "Message-Id: <20060107223653.0AA3929FAA@tsunami>\n"
    "Date: Sat, 7 Jan 2006 23:36:40 +0100 (CET)\n"
    "From: od.koho.ten@email.je\n"
    "To: undisclosed-recipients:;\n"
    "\n"
    "Ahoj, jak se mas?\n")


def read_multiline(client):
    """Read a multi-line reply body up to the terminating '.' line; return raw bytes."""
    data = b""
    while True:
        line = client.read_line().encode()
        if line == b".\r\n":
            return data
        data += line


def pop_client(tern, port="pop3"):
    c = Client(tern.host, tern.ports[port])
    greeting = c.read_line()
    assert re.match(r"^\+OK POP3 ready( <[^>]+@mail\.example\.test>)?\.?\r\n$", greeting), greeting
    assert "Dovecot" not in greeting and "tern" not in greeting.lower()
    return c, greeting


def test_seed000_user_pass_stat_list_retr_dele_quit(tern):
    """Seed 000 (Czech): USER/PASS, STAT, LIST, RETR 2, DELE 2, QUIT deleting."""
    add_user(tern, "tsunami@example.test", "heslo")
    msgs = [sample_message(1), SEED000_MSG2, sample_message(3)]
    paths = [deliver_file(tern, "tsunami@example.test", m) for m in msgs]
    sizes = [list_size(m) for m in msgs]

    c, _ = pop_client(tern)
    converse(c, [("USER tsunami", r"^\+OK\r?$"),
                 ("PASS heslo", r"^\+OK Logged in\.\r?$")])
    stat = converse(c, [("STAT", r"^\+OK ")])[0]
    assert stat == f"+OK 3 {sum(sizes)}\r\n"
    c.send("LIST")
    assert c.read_line() == "+OK 3 messages:\r\n"
    assert read_multiline(c) == b"".join(f"{i + 1} {s}\r\n".encode() for i, s in enumerate(sizes))
    c.send("RETR 2")
    assert c.read_line() == f"+OK {sizes[1]} octets\r\n"
    body = read_multiline(c)
    assert body == wire_form(SEED000_MSG2)
    assert len(unstuff(body)) == sizes[1]
    converse(c, [("DELE 2", r"^\+OK Marked to be deleted\.\r?$"),
                 ("QUIT", r"^\+OK Logging out, messages deleted\.\r?$")])
    assert c.is_closed()
    c.close()
    # The delete is durable once +OK was sent: the file is gone, the others stay.
    assert not paths[1].exists() and not any(
        p.name.startswith(paths[1].name) for p in (paths[1].parent.parent / "cur").iterdir())
    c, _ = pop_client(tern)
    converse(c, [("USER tsunami", r"^\+OK"), ("PASS heslo", r"^\+OK Logged in\.")])
    assert converse(c, [("STAT", r"^\+OK ")])[0] == f"+OK 2 {sizes[0] + sizes[2]}\r\n"
    converse(c, [("QUIT", r"^\+OK Logging out\.\r?$")])
    c.close()


def test_seed001_noop_top_retr_dele(tern):
    """Seed 001 (Russian): user@domain login, NOOP, TOP without a line count, RETR, DELE."""
    add_user(tern, "test@example.test", "testpass")
    msg = ("Return-Path: <>\nFROM: root@localhost.localdomain\nTO: test@example.test\n"
           "SUBJECT: test mail from test subject\n"
           "Date: Sat, 1 Nov 2014 03:20:09 +0300 (MSK)\n\ntest body\n")
    deliver_file(tern, "test@example.test", sample_message(1))
    deliver_file(tern, "test@example.test", msg)
    c, _ = pop_client(tern)
    converse(c, [("USER test@example.test", r"^\+OK"),
                 ("PASS testpass", r"^\+OK Logged in\."),
                 ("NOOP", r"^\+OK\r?$")])
    c.send("TOP 2")
    assert c.read_line() == "+OK\r\n"
    header = msg.split("\n\n")[0] + "\n\n"
    assert read_multiline(c) == wire_form(header)
    c.send("RETR 2")
    assert c.read_line() == f"+OK {list_size(msg)} octets\r\n"
    assert read_multiline(c) == wire_form(msg)
    converse(c, [("DELE 2", r"^\+OK Marked to be deleted\."),
                 ("QUIT", r"^\+OK Logging out, messages deleted\.")])
    c.close()


def test_seed001_auth_and_capa_listing(tern):
    """Seed 001: bare AUTH lists the mechanisms, CAPA the capabilities, then QUIT."""
    c, _ = pop_client(tern)
    c.send("AUTH")
    assert c.read_line() == "+OK\r\n"
    mechs = read_multiline(c).decode().split()
    assert "PLAIN" in mechs and "LOGIN" in mechs  # loopback: plaintext allowed
    assert "CRAM-MD5" in mechs and "SCRAM-SHA-256" in mechs
    c.send("CAPA")
    assert c.read_line() == "+OK\r\n"
    caps = read_multiline(c).decode().splitlines()
    for cap in ("TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "STLS"):
        assert cap in caps, caps
    sasl = [x for x in caps if x.startswith("SASL ")]
    assert sasl and set(sasl[0].split()[1:]) == set(mechs)
    assert not any(x.startswith("IMPLEMENTATION") for x in caps)
    converse(c, [("QUIT", r"^\+OK Logging out\.\r?$")])
    assert c.is_closed()
    c.close()


def test_seed002_capa_apop_user_authlogin(tern):
    """Seed 002 (German): CAPA, USER/PASS, APOP with MD5(timestamp + password), AUTH LOGIN
    with the Username:/Password: prompts, STAT/LIST/RETR/TOP/DELE."""
    add_user(tern, "beispiel@example.test", "gEhEiM!")
    msgs = [sample_message(1), sample_message(2, body="line1\nline2\n.line3\nline4\n")]
    for m in msgs:
        deliver_file(tern, "beispiel@example.test", m)

    c, _ = pop_client(tern)
    c.send("capa")
    assert c.read_line() == "+OK\r\n"
    caps = read_multiline(c).decode().splitlines()
    assert "TOP" in caps and "UIDL" in caps and "RESP-CODES" in caps
    converse(c, [("user beispiel@example.test", r"^\+OK"),
                 ("pass gEhEiM!", r"^\+OK Logged in\."),
                 ("quit", r"^\+OK Logging out\.")])
    c.close()

    # APOP: the digest of the greeting's timestamp and the password (md5sum as in the seed)
    c, greeting = pop_client(tern)
    assert "<" in greeting, "APOP must be offered: users have a plaintext-equivalent credential"
    digest = apop_digest(greeting, "gEhEiM!")
    converse(c, [(f"apop beispiel@example.test {digest}", r"^\+OK Logged in\."),
                 ("quit", r"^\+OK Logging out\.")])
    c.close()
    # A wrong digest fails with the RFC 3206 AUTH response code.
    c, greeting = pop_client(tern)
    converse(c, [(f"apop beispiel@example.test {'0' * 32}",
                  r"^-ERR \[AUTH\] Authentication failed\.\r?$"),
                 ("quit", r"^\+OK")])
    c.close()

    # AUTH LOGIN exactly as typed in the seed
    c, _ = pop_client(tern)
    converse(c, [("auth login", r"^\+ VXNlcm5hbWU6\r?$"),
                 (b64("beispiel@example.test"), r"^\+ UGFzc3dvcmQ6\r?$"),
                 (b64("gEhEiM!"), r"^\+OK Logged in\.")])
    sizes = [list_size(m) for m in msgs]
    assert converse(c, [("STAT", r"^\+OK")])[0] == f"+OK 2 {sum(sizes)}\r\n"
    c.send("LIST")
    assert c.read_line() == "+OK 2 messages:\r\n"
    assert read_multiline(c) == f"1 {sizes[0]}\r\n2 {sizes[1]}\r\n".encode()
    c.send("RETR 1")
    assert c.read_line() == f"+OK {sizes[0]} octets\r\n"
    assert read_multiline(c) == wire_form(msgs[0])
    c.send("TOP 2 3")
    assert c.read_line() == "+OK\r\n"
    head, body = msgs[1].split("\n\n", 1)
    assert read_multiline(c) == wire_form(head + "\n\n" + "".join(body.splitlines(True)[:3]))
    converse(c, [("DELE 1", r"^\+OK Marked to be deleted\."),
                 ("QUIT", r"^\+OK Logging out, messages deleted\.")])
    c.close()


def test_seed003_virtual_user_and_log_lines(tern_factory):
    """Seed 003 (English): a virtual user@domain logs in, LIST, RETR 3, QUIT; the maillog
    shows the Login and Disconnected lines with top/retr/del/size counters."""
    srv = tern_factory()
    srv.cli("domain", "add", "alpha.example.org")
    add_user(srv, "charlie@alpha.example.org", "charlie")
    msgs = [sample_message(1), sample_message(2, body="short\n"), sample_message(3)]
    for m in msgs:
        deliver_file(srv, "charlie@alpha.example.org", m)
    sizes = [list_size(m) for m in msgs]
    c, _ = pop_client(srv)
    converse(c, [("user charlie@alpha.example.org", r"^\+OK\r?$"),
                 ("pass charlie", r"^\+OK Logged in\.")])
    c.send("list")
    assert c.read_line() == "+OK 3 messages:\r\n"
    assert read_multiline(c) == "".join(f"{i + 1} {s}\r\n" for i, s in enumerate(sizes)).encode()
    c.send("retr 3")
    assert c.read_line() == f"+OK {sizes[2]} octets\r\n"
    assert read_multiline(c) == wire_form(msgs[2])
    converse(c, [("QUIT", r"^\+OK Logging out\.\r?$")])
    c.close()
    srv.wait_log(r"tern/pop3\[\d+\]: Login: user=<charlie@alpha\.example\.org>, method=PLAIN, "
                 r"rip=127\.0\.0\.1, lip=127\.0\.0\.1")
    srv.wait_log(r"tern/pop3\[\d+\]: Disconnected: Logged out top=0/0, "
                 rf"retr=1/{len(wire_form(msgs[2]))}, del=0/3, size={sum(sizes)}")
    # -ERR Authentication failed (seed 003 "Simple Errors") and its log line
    c, _ = pop_client(srv)
    converse(c, [("user charlie@alpha.example.org", r"^\+OK"),
                 ("pass wrong", r"^-ERR \[AUTH\] Authentication failed\.\r?$"),
                 ("QUIT", r"^\+OK")])
    c.close()
    srv.wait_log(r"Disconnected \(auth failed, 1 attempts\): user=<charlie@alpha\.example\.org>, "
                 r"method=PLAIN, rip=127\.0\.0\.1")


def test_seed004_bare_user_and_auth_plain(tern):
    """Seed 004 (Japanese): USER sample / PASS password, STAT, LIST, RETR 1, QUIT; and the
    AUTH PLAIN initial response the seed computes with perl (AHNhbXBsZQBwYXNzd29yZA==)."""
    add_user(tern, "sample@example.test", "password")
    msg = sample_message(1)
    deliver_file(tern, "sample@example.test", msg)
    size = list_size(msg)
    c, _ = pop_client(tern)
    converse(c, [("USER sample", r"^\+OK\r?$"), ("PASS password", r"^\+OK Logged in\.")])
    assert converse(c, [("STAT", r"^\+OK")])[0] == f"+OK 1 {size}\r\n"
    c.send("LIST")
    assert c.read_line() == "+OK 1 messages:\r\n"
    assert read_multiline(c) == f"1 {size}\r\n".encode()
    c.send("RETR 1")
    assert c.read_line() == f"+OK {size} octets\r\n"
    assert read_multiline(c) == wire_form(msg)
    converse(c, [("QUIT", r"^\+OK Logging out\.\r?$")])
    assert c.is_closed()
    c.close()

    c, _ = pop_client(tern)
    converse(c, [("AUTH PLAIN AHNhbXBsZQBwYXNzd29yZA==", r"^\+OK Logged in\."),
                 ("STAT", rf"^\+OK 1 {size}\r?$"),
                 ("QUIT", r"^\+OK Logging out\.")])
    c.close()
    tern.wait_log(r"Login: user=<sample@example\.test>, method=PLAIN, rip=127\.0\.0\.1")


@pytest.mark.parametrize("mech", ["CRAM-MD5"])
def test_seed001_cram_md5(tern, mech):
    """Seed 001 computes a CRAM-MD5 response with a script; POP3 AUTH CRAM-MD5 works."""
    from tern_util import sasl_cram_md5
    add_user(tern, "cram@example.test", "testpass")
    c, _ = pop_client(tern)
    challenge = converse(c, [(f"AUTH {mech}", r"^\+ ")])[0]
    ch = challenge[2:].strip()
    converse(c, [(sasl_cram_md5("cram@example.test", "testpass", ch), r"^\+OK Logged in\."),
                 ("QUIT", r"^\+OK")])
    c.close()
