"""
test_smtp_seeds.py - replay every SMTP session of the seeds (../shared/seeds, admins'
telnet sessions against Postfix) against the real tern binary, command by command, with
the reply codes (and Postfix wording) the seeds show. Names and passwords are adapted to
the test directory: alice@example.test / alicepw, bob@example.test / bobpw.

Seeds: 000 Czech (EHLO, MAIL FROM without brackets, DATA, queued as), 001 Russian (HELO,
null sender, AUTH LOGIN / PLAIN / CRAM-MD5), 002 German (lowercase, AUTH LOGIN with
initial response, AUTH PLAIN, several RCPT TO), 003 English (session plus its log lines,
open relay refused), 004 Japanese (banner hides the software, AUTH PLAIN, MAIL FROM
without brackets, relay to a foreign domain after AUTH).
"""

import base64
import re

from tern_util import Client, b64, converse, maildir_messages, sasl_cram_md5, sasl_plain, wait_for

EHLO_END = r"^250 "


def connect(tern, port="smtp"):
    c = Client(tern.host, tern.ports[port])
    greeting = c.read_until(r"^220 ")
    return c, greeting


def queued_id(reply):
    m = re.search(r"^250 2\.0\.0 Ok: queued as ([0-9A-F]+)", reply, re.M)
    assert m, reply
    return m.group(1)


def message_with(tern, address, needle):
    """Wait until a message containing needle is in address's Maildir; return its text."""
    def find():
        for f in maildir_messages(tern.maildir(address)):
            text = open(f, "rb").read().decode(errors="replace")
            if needle in text:
                return text
        return None
    return wait_for(find, what=f"message with {needle!r} for {address}")


def test_seed000_czech_ehlo_mail_without_brackets(tern):
    since = tern.log_offset()
    c, greeting = connect(tern)
    # The banner names the host and ESMTP, never the software (DESIGN §6, seed 004).
    assert greeting == "220 mail.example.test ESMTP\r\n"
    r = converse(c, [
        ("EHLO vodik.locnet", EHLO_END),
        ("MAIL FROM: od.koho.ten@email.je", r"^250 2\.1\.0 Ok\r$"),
        ("RCPT TO: alice@example.test", r"^250 2\.1\.5 Ok\r$"),
        ("DATA", r"^354 End data with <CR><LF>\.<CR><LF>\r$"),
        ("Subject: pozdrav od anonyma", None),
        ("", None),
        ("Ahoj, jak se mas? seed000", None),
        (".", r"^250 2\.0\.0 Ok: queued as [0-9A-F]+\r$"),
        ("QUIT", r"^221 2\.0\.0 Bye\r$"),
    ])
    ehlo = r[0].splitlines()
    assert ehlo[0] == "250-mail.example.test"
    caps = [l[4:] for l in ehlo[1:]]
    for cap in ("PIPELINING", "SIZE 52428800", "VRFY", "STARTTLS", "ENHANCEDSTATUSCODES",
                "8BITMIME", "SMTPUTF8", "CHUNKING"):
        assert cap in caps, caps
    assert any(x.startswith("AUTH ") and "PLAIN" in x for x in caps), caps
    assert any(x.startswith("AUTH=") for x in caps), caps
    assert "ETRN" in caps and "DSN" in caps  # issue 5: RFC 1985 and RFC 3461 work now
    assert c.is_closed()
    qid = queued_id(r[7])
    text = message_with(tern, "alice@example.test", "seed000")
    assert text.startswith("Return-Path: <od.koho.ten@email.je>\n")
    assert "X-Original-To: alice@example.test\n" in text
    assert "Delivered-To: alice@example.test\n" in text
    assert re.search(r"Received: from vodik\.locnet \(localhost \[127\.0\.0\.1\]\)\n"
                     r"\tby mail\.example\.test \(Tern\) with ESMTP id " + qid + r"\n"
                     r"\tfor <alice@example\.test>; \w{3}, .+\n", text), text
    assert text.endswith("Subject: pozdrav od anonyma\n\nAhoj, jak se mas? seed000\n")
    tern.wait_log(r"connect from localhost\[127\.0\.0\.1\]", since=since)
    tern.wait_log(qid + r": client=localhost\[127\.0\.0\.1\]", since=since)
    tern.wait_log(qid + r": from=<od\.koho\.ten@email\.je>, size=\d+, nrcpt=1", since=since)
    tern.wait_log(qid + r": to=<alice@example\.test>, relay=local, delay=[\d.]+, dsn=2\.0\.0, "
                  r"status=sent \(delivered to maildir\)", since=since)
    tern.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 "
                  r"quit=1 commands=5", since=since)


def test_seed001_russian_helo_null_sender(tern):
    c, _ = connect(tern)
    r = converse(c, [
        ("HELO localhost.localdomain", r"^250 mail\.example\.test\r$"),
        ("MAIL FROM:<>", r"^250 2\.1\.0 Ok"),
        ("RCPT TO:<bob@example.test>", r"^250 2\.1\.5 Ok"),
        ("DATA", r"^354 "),
        ("FROM: root@localhost.localdomain", None),
        ("TO: bob@example.test", None),
        ("SUBJECT: test mail from test subject seed001", None),
        ("", None),
        ("test body", None),
        (".", r"^250 2\.0\.0 Ok: queued as "),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ])
    qid = queued_id(r[9])
    text = message_with(tern, "bob@example.test", "seed001")
    assert text.startswith("Return-Path: <>\n")
    # HELO, not EHLO: the protocol is plain SMTP (RFC 3848)
    assert f"by mail.example.test (Tern) with SMTP id {qid}" in text


def test_seed001_russian_auth_login(tern):
    c, _ = connect(tern)
    r = converse(c, [
        ("EHLO client.server.net", EHLO_END),
        ("AUTH LOGIN", r"^334 VXNlcm5hbWU6\r$"),
        (b64("alice@example.test"), r"^334 UGFzc3dvcmQ6\r$"),
        (b64("alicepw"), r"^235 2\.7\.0 Authentication successful\r$"),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ])
    assert "AUTH PLAIN LOGIN" in r[0] or re.search(r"AUTH .*LOGIN", r[0])


def test_seed001_russian_auth_plain(tern):
    c, _ = connect(tern)
    converse(c, [
        ("EHLO client.server.net", EHLO_END),
        ("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw", "alice@example.test"),
         r"^235 2\.7\.0 Authentication successful"),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ])


def test_seed001_russian_auth_cram_md5(tern):
    c, _ = connect(tern)
    r = converse(c, [
        ("EHLO client.server.net", EHLO_END),
        ("AUTH CRAM-MD5", r"^334 \S+\r$"),
    ])
    assert "CRAM-MD5" in r[0]
    challenge = r[1].split()[1]
    # RFC 2195: the challenge is a msg-id like <random.time@hostname>
    assert re.match(r"<[^@>]+@mail\.example\.test>$", base64.b64decode(challenge).decode())
    converse(c, [
        (sasl_cram_md5("alice@example.test", "alicepw", challenge),
         r"^235 2\.7\.0 Authentication successful"),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ])


def test_seed002_german_lowercase_auth_login_initial_response(tern):
    c, _ = connect(tern)
    r = converse(c, [
        ("helo test", r"^250 mail\.example\.test"),
        ("auth login " + b64("bob@example.test"), r"^334 UGFzc3dvcmQ6\r$"),
        (b64("bobpw"), r"^235 2\.7\.0 "),
        ("mail from:<bob@example.test>", r"^250 2\.1\.0 Ok"),
        ("rcpt to:<alice@example.test>", r"^250 2\.1\.5 Ok"),
        ("rcpt to:<info@example.test>", r"^250 2\.1\.5 Ok"),
        ("data", r"^354 "),
        ("From: Test <bob@example.test>", None),
        ("To: xyz <alice@example.test>", None),
        ("Subject: Test seed002", None),
        ("", None),
        ("test", None),
        (".", r"^250 2\.0\.0 Ok: queued as "),
        ("quit", r"^221 2\.0\.0 "),
    ])
    # info@ is an alias of alice@: one copy only (deduplicated)
    text = message_with(tern, "alice@example.test", "seed002")
    assert "Delivered-To: alice@example.test\n" in text
    n = sum("seed002" in open(f, errors="replace").read()
            for f in maildir_messages(tern.maildir("alice@example.test")))
    assert n == 1


def test_seed002_german_auth_plain(tern):
    c, _ = connect(tern)
    converse(c, [
        ("helo test", r"^250 "),
        ("auth plain " + sasl_plain("bob@example.test", "bobpw", "bob@example.test"),
         r"^235 2\.7\.0 "),
        ("quit", r"^221 "),
    ])


def test_seed003_english_session_and_log_lines(tern):
    since = tern.log_offset()
    c, _ = connect(tern)
    r = converse(c, [
        ("EHLO example.org", EHLO_END),
        ("MAIL FROM: <samt@example.org>", r"^250 2\.1\.0 Ok"),
        ("RCPT TO: <alice@example.test>", r"^250 2\.1\.5 Ok"),
        ("DATA", r"^354 "),
        ("Subject: This is my subject line seed003", None),
        ("Message-ID: <20061212080251.seed003@hostname.example.org>", None),
        ("", None),
        ("I continue writing until I'm out of interesting things to say", None),
        ("which is not that far away", None),
        (".", r"^250 2\.0\.0 Ok: queued as "),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ])
    qid = queued_id(r[9])
    tern.wait_log(qid + r": message-id=<20061212080251\.seed003@hostname\.example\.org>",
                  since=since)
    tern.wait_log(qid + r": from=<samt@example\.org>, size=\d+, nrcpt=1", since=since)
    tern.wait_log(qid + r": to=<alice@example\.test>, relay=local", since=since)
    tern.wait_log(r"disconnect from localhost\[127\.0\.0\.1\]", since=since)


def test_seed003_open_relay_refused(tern):
    since = tern.log_offset()
    c, _ = connect(tern)
    r = converse(c, [
        ("EHLO example.org", EHLO_END),
        ("MAIL FROM:<samt@example.org>", r"^250 "),
        ("RCPT TO:<victim@elsewhere.example>", r"^554 "),
        ("RCPT TO: samt@localhost", r"^554 "),
        ("QUIT", r"^221 "),
    ])
    assert r[2].startswith("554 5.7.1 <victim@elsewhere.example>: Relay access denied")
    tern.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1 "
                  r"<victim@elsewhere\.example>: Relay access denied; "
                  r"from=<samt@example\.org> to=<victim@elsewhere\.example> proto=ESMTP "
                  r"helo=<example\.org>", since=since)


def test_seed003_unknown_user(tern):
    c, _ = connect(tern)
    r = converse(c, [
        ("EHLO example.org", EHLO_END),
        ("MAIL FROM:<samt@example.org>", r"^250 "),
        ("RCPT TO:<nobody@example.test>", r"^550 "),
        ("QUIT", r"^221 "),
    ])
    assert r[2].startswith("550 5.1.1 <nobody@example.test>: Recipient address rejected: "
                           "User unknown in virtual mailbox table")


def test_seed004_japanese_auth_plain_relay_after_auth(tern):
    c, greeting = connect(tern)
    assert "Postfix" not in greeting and "Tern" not in greeting
    r = converse(c, [
        ("EHLO mail.example.com", EHLO_END),
        ("AUTH PLAIN " + b64("\0alice@example.test\0alicepw"),
         r"^235 2\.7\.0 Authentication successful"),
        ("MAIL FROM:alice@example.test", r"^250 2\.1\.0 Ok"),
        ("RCPT TO:sample@gmail.example", r"^250 2\.1\.5 Ok"),
        ("DATA", r"^354 "),
        ("SUBJECT this is test seed004", None),
        ("test mail", None),
        (".", r"^250 2\.0\.0 Ok: queued as "),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ])
    assert re.search(r"^250-AUTH .*PLAIN", r[0], re.M)
    assert re.search(r"^250-AUTH=.*PLAIN", r[0], re.M)
    qid = queued_id(r[7])
    # foreign recipient: spooled in the queue, durable before the 250. The queue moves
    # the file (incoming/ -> active/ -> deferred/) by rename, so one walk of the folders
    # can miss it: look again, briefly.
    queue = tern.data_dir / "queue"

    def spooled():
        for p in queue.rglob(qid):
            try:
                return p.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue
        return None

    data = wait_for(spooled, timeout=5, what=f"{qid} in the queue")
    assert b"seed004" in data
    assert re.search(rb"by mail\.example\.test \(Tern\) with ESMTPA id " + qid.encode(), data)
    # submission adds the missing Message-ID and Date (RFC 6409 §8)
    assert b"Message-ID: <" in data and b"\nDate: " in data


def test_seed004_failed_login_is_logged(tern):
    since = tern.log_offset()
    c, _ = connect(tern)
    converse(c, [
        ("EHLO mail.example.com", EHLO_END),
        ("AUTH PLAIN " + b64("\0alice@example.test\0wrong"),
         r"^535 5\.7\.8 Error: authentication failed: "),
        ("QUIT", r"^221 "),
    ])
    tern.wait_log(r"warning: localhost\[127\.0\.0\.1\]: SASL PLAIN authentication failed",
                  since=since)
