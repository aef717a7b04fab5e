"""
test_imap_seeds.py - every IMAP session of the seed articles (../shared/seeds beside the repository) replayed
against the real tern: seed 000 (LOGIN, CAPABILITY, LIST, SELECT, FETCH FLAGS, FETCH
body[text], LOGOUT), seed 001 (FETCH body[header], body, body[]; AUTHENTICATE CRAM-MD5;
STARTTLS with openssl s_client; 993), seed 002 (a command without a tag, CAPABILITY,
STARTTLS, LOGIN, AUTHENTICATE LOGIN with prompts, AUTHENTICATE PLAIN with SASL-IR).
"""

import re

from test_imap_lib import (GREETING_RE, b64, converse, fresh_user, imap_client,
                           read_literal_reply, wire)
from tern_util import openssl_s_client, sasl_cram_md5, sasl_plain

SEED000_MSG2 = (
    "Return-Path: <root@tsunami.locnet>\n"
    "Subject: cron\n"
    "From: root@tsunami.locnet\n"
    "To: tsunami@tsunami.locnet\n"
    "\n"
    "mkdir: cannot create directory `/var/run/sendmail/msp': Permission denied\n")

SEED001_MSG = (
    "Return-Path: <>\n"
    "FROM: root@localhost.localdomain\n"
    "TO: user@mail.server.net\n"
    "SUBJECT: test mail from test subject\n"
    "Message-Id: <20141101002009.1CF5FC0AAE@mail.server.net>\n"
    "Date: Sat, 1 Nov 2014 03:20:09 +0300 (MSK)\n"
    "\n"
    "test body\n")


def test_seed000_login_capability_list_select_fetch_logout(tern):
    first = "Subject: one\n\nfirst\n"
    user, pw = fresh_user(tern, "tsunami", [first, SEED000_MSG2])
    c = imap_client(tern)
    converse(c, [(f". LOGIN {user} {pw}", r"^\. OK ")])
    caps = converse(c, [("IDENT01 CAPABILITY", r"^IDENT01 OK Capability completed\.\r$")])[0]
    assert re.search(r"^\* CAPABILITY IMAP4rev1 .*IDLE", caps, re.M)
    lst = converse(c, [('id01 LIST "" "*"', r"^id01 OK List completed\.\r$")])[0]
    assert re.search(r'^\* LIST \([^)]*\) "/" "INBOX"\r$', lst, re.M)
    assert re.search(r'^\* LIST \([^)]*\\Sent[^)]*\) "/" "Sent"\r$', lst, re.M)
    sel = converse(c, [('id02 SELECT "INBOX"', r"^id02 OK \[READ-WRITE\] Select completed\.\r$")])[0]
    assert "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n" in sel
    assert re.search(r"^\* OK \[PERMANENTFLAGS \(\\Answered \\Flagged \\Deleted \\Seen \\Draft "
                     r"\\\*\)\] Flags permitted\.\r$", sel, re.M)
    assert "* 2 EXISTS\r\n" in sel
    assert re.search(r"^\* \d+ RECENT\r$", sel, re.M)
    assert re.search(r"^\* OK \[UIDVALIDITY \d+\] UIDs valid\r$", sel, re.M)
    assert re.search(r"^\* OK \[UIDNEXT 3\] Predicted next UID\r$", sel, re.M)
    fl = converse(c, [("id03 FETCH 1:* FLAGS", r"^id03 OK Fetch completed\.\r$")])[0]
    assert re.search(r"^\* 1 FETCH \(FLAGS \([^)]*\)\)\r$", fl, re.M)
    assert re.search(r"^\* 2 FETCH \(FLAGS \([^)]*\)\)\r$", fl, re.M)
    c.send("id04 FETCH 2 body[text]")
    got = read_literal_reply(c, "id04")
    text = b"mkdir: cannot create directory `/var/run/sendmail/msp': Permission denied\r\n"
    assert got.startswith(b"* 2 FETCH (BODY[TEXT] {%d}\r\n" % len(text) + text)
    assert got.endswith(b"id04 OK Fetch completed.\r\n")
    # \Seen was set by the non-PEEK fetch
    fl = converse(c, [("id05 FETCH 2 FLAGS", r"^id05 OK")])[0]
    assert "\\Seen" in fl
    converse(c, [("id06 logout", r"^id06 OK Logout completed\.\r$")])
    assert c.is_closed()


def test_seed001_fetch_header_body_and_whole(tern):
    user, pw = fresh_user(tern, "seed001", [SEED001_MSG])
    c = imap_client(tern)
    converse(c, [(f"001 LOGIN {user} {pw}", r"^001 OK"),
                 ("003 SELECT Inbox", r"^003 OK \[READ-WRITE\]")])
    c.send("004 FETCH 1 body[header]")
    got = read_literal_reply(c, "004")
    header = wire(SEED001_MSG.split("\n\n")[0] + "\n\n")
    assert got.startswith(b"* 1 FETCH (BODY[HEADER] {%d}\r\n" % len(header) + header)
    c.send("004 FETCH 1 body")
    got = read_literal_reply(c, "004")
    assert (b'* 1 FETCH (BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 1))\r\n'
            in got)
    c.send("004 FETCH 1 body[]")
    got = read_literal_reply(c, "004")
    whole = wire(SEED001_MSG)
    assert b"BODY[] {%d}\r\n" % len(whole) + whole in got
    c.send("004 FETCH 1 (RFC822.SIZE BODY.PEEK[]<0.6>)")
    got = read_literal_reply(c, "004")
    assert b"RFC822.SIZE %d" % len(whole) in got
    assert b"BODY[]<0> {6}\r\nReturn" in got
    converse(c, [("005 LOGOUT", r"^\* BYE Logging out\r\n005 OK Logout completed\.\r$")])


def test_seed002_untagged_logout_is_bad(tern):
    c = imap_client(tern)
    bad = converse(c, [("logout", r"BAD")])[0]
    assert re.match(r"^\* BAD ", bad), bad
    converse(c, [("02 logout", r"^\* BYE Logging out\r\n02 OK Logout completed\.\r$")])


def test_seed002_capability_login_and_authenticate_login(tern):
    user, pw = fresh_user(tern, "seed002")
    c = imap_client(tern)
    caps = converse(c, [("aa capability", r"^aa OK ")])[0]
    assert "STARTTLS" in caps and "AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps
    converse(c, [("bb authenticate login", r"^\+ VXNlcm5hbWU6\r$"),
                 (b64(user), r"^\+ UGFzc3dvcmQ6\r$"),
                 (b64(pw), r"^bb OK \[CAPABILITY IMAP4rev1 [^\]]*\] Logged in\r$")])
    converse(c, [("cc logout", r"^cc OK")])
    c = imap_client(tern)
    converse(c, [(f"cc login {user} {pw}", r"^cc OK \[CAPABILITY ")])
    c.close()


def test_seed002_authenticate_plain_sasl_ir_and_failures(tern):
    user, pw = fresh_user(tern, "plain")
    c = imap_client(tern)
    converse(c, [(f"bb authenticate plain {sasl_plain(user, 'wrong')}",
                  r"^bb NO \[AUTHENTICATIONFAILED\] "),
                 ("bc authenticate plain", r"^\+ ?\r$"),
                 (sasl_plain(user, pw), r"^bc OK \[CAPABILITY ")])
    converse(c, [("bd select inbox", r"^bd OK \[READ-WRITE\]")])
    tern.wait_log(r"imap\[\d+\]: Login: user=<" + re.escape(user) + r">, method=PLAIN")
    c.close()
    c = imap_client(tern)
    converse(c, [("x authenticate login", r"^\+ "), ("*", r"^x BAD ")])
    c.close()


def test_seed001_authenticate_cram_md5(tern):
    c = imap_client(tern)
    caps = converse(c, [("00 CAPABILITY", r"^00 OK")])[0]
    assert "AUTH=CRAM-MD5" in caps
    ch = converse(c, [("01 AUTHENTICATE CRAM-MD5", r"^\+ \S+\r$")])[0]
    challenge = ch.strip()[2:]
    converse(c, [(sasl_cram_md5("alice@example.test", "alicepw", challenge),
                  r"^01 OK \[CAPABILITY [^\]]*\] Logged in\r$"),
                 ("02 LOGOUT", r"^02 OK Logout completed\.")])


def test_seed001_starttls_with_openssl_s_client(tern):
    out = openssl_s_client(tern.ports["imap"], [
        ("a CAPABILITY", r"^a OK Capability completed"),
        ("b LOGIN alice@example.test alicepw", r"^b OK"),
        ("c SELECT INBOX", r"^c OK"),
        ("d LOGOUT", r"^d OK Logout completed"),
    ], starttls="imap")
    caps = re.search(r"^\* CAPABILITY (.*)$", out, re.M).group(1)
    assert "AUTH=PLAIN" in caps and "STARTTLS" not in caps


def test_seed002_starttls_discards_pipelined_input(tern):
    c = imap_client(tern)
    c.send_raw(b"bb starttls\r\nzz LOGIN alice@example.test alicepw\r\n")
    converse(c, [(None, r"^bb OK Begin TLS negotiation now\.\r$")])
    c.starttls()
    caps = converse(c, [("cc capability", r"^cc OK")])[0]
    assert "zz" not in caps and "STARTTLS" not in caps
    converse(c, [("dd login alice@example.test alicepw", r"^dd OK"),
                 ("ee logout", r"^ee OK")])


def test_seed000_imaps_993(tern):
    out = openssl_s_client(tern.ports["imaps"], [
        (None, r"\* OK \[CAPABILITY IMAP4rev1"),
        ("a LOGIN alice@example.test alicepw", r"a OK"),
        ("b LOGOUT", r"b OK Logout completed"),
    ])
    assert "* BYE Logging out" in out


def test_literal_limits(tern):
    c = imap_client(tern)
    # Too big: refused at once, no "+" continuation, no allocation.
    r = converse(c, [("a APPEND INBOX {4294967295}", r"^a (NO|BAD) ")])[0]
    assert not r.startswith("+")
    # LOGIN with synchronising literals gets "+" go-aheads.
    c.send("b LOGIN {18}")
    converse(c, [(None, r"^\+ ")])
    c.send_raw(b"alice@example.test {7}\r\n")
    converse(c, [(None, r"^\+ ")])
    converse(c, [("alicepw", r"^b OK ")])
    # LITERAL+ needs no go-ahead
    c.send_raw(b"c APPEND INBOX (\\Seen) {12+}\r\nSubject: x\r\n\r\n")
    converse(c, [(None, r"^c OK \[APPENDUID \d+ \d+\] Append completed\.\r$")])
    c.close()


def test_seed003_select_unseen_fetch_close_logout_and_log(tern):
    third = "Subject: third\n\nHopefully you've received this email message without fault ?\n\n\n"
    user, pw = fresh_user(tern, "charlie", ["Subject: one\n\n1\n", "Subject: two\n\n2\n", third])
    c = imap_client(tern)
    converse(c, [(f"a1 login {user} {pw}", r"^a1 OK ")])
    sel = converse(c, [("a2 select inbox", r"^a2 OK \[READ-WRITE\] Select completed\.\r$")])[0]
    assert "* 3 EXISTS\r\n" in sel and "* OK [UNSEEN 1] First unseen.\r\n" in sel
    assert "* OK [UIDNEXT 4] Predicted next UID\r\n" in sel
    c.send("a3 fetch 3 body[text]")
    got = read_literal_reply(c, "a3")
    text = wire(third.split("\n\n", 1)[1])
    assert len(text) == 66
    assert got == b"* 3 FETCH (BODY[TEXT] {66}\r\n" + text + b" FLAGS (\\Seen))\r\n" \
        b"a3 OK Fetch completed.\r\n" or got.startswith(b"* 3 FETCH (BODY[TEXT] {66}\r\n" + text)
    converse(c, [("a4 close", r"^a4 OK Close completed\.\r$"),
                 ("a5 logout", r"^\* BYE Logging out\r\na5 OK Logout completed\.\r$")])
    assert c.is_closed()
    tern.wait_log(r"imap\[\d+\]: Login: user=<" + re.escape(user) +
                  r">, method=PLAIN, rip=127\.0\.0\.1, lip=127\.0\.0\.1")
    tern.wait_log(r"imap\[\d+\]: Disconnected: Logged out user=<" + re.escape(user) + ">")


def test_authenticate_scram_sha_256_with_server_signature(tern):
    """SCRAM-SHA-256 (RFC 7677): the server's final message comes as a '+' challenge, the
    client answers with an empty line, then OK (RFC 3501 has no success data in OK)."""
    import base64
    import hashlib
    import hmac
    import os

    user, pw = fresh_user(tern, "scram")
    c = imap_client(tern)
    caps = converse(c, [("a CAPABILITY", r"^a OK")])[0]
    assert "AUTH=SCRAM-SHA-256" in caps
    nonce = base64.b64encode(os.urandom(18)).decode()
    client_first_bare = f"n={user},r={nonce}"
    c.send(f"b AUTHENTICATE SCRAM-SHA-256 {b64('n,,' + client_first_bare)}")
    line = converse(c, [(None, r"^\+ \S+\r$")])[0]
    server_first = base64.b64decode(line[2:].strip()).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={b64('n,,')},r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    c.send(b64(f"{without_proof},p={proof}"))
    line = converse(c, [(None, r"^(\+ \S+|b OK.*)\r$")])[0]
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    verifier = base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest()).decode()
    assert line.startswith("+ "), line
    assert base64.b64decode(line[2:].strip()).decode() == f"v={verifier}"
    converse(c, [("", r"^b OK \[CAPABILITY [^\]]*\] Logged in\r$"),
                 ("c SELECT INBOX", r"^c OK")])
    tern.wait_log(r"Login: user=<" + re.escape(user) + r">, method=SCRAM-SHA-256")
