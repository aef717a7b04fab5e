"""
test_smtp_clients.py - real SMTP clients against tern: swaks (plain, STARTTLS, AUTH
PLAIN/LOGIN/CRAM-MD5 on 587, implicit TLS on 465), Python smtplib (starttls, login,
send_message), raw BDAT (smtplib has none), curl smtp:// and smtps:// uploads, and
openssl s_client (-starttls smtp on 25 and 587, -connect to 465) driven through pipes.
Every message is found again in the Maildir by a unique header.
"""

import re
import smtplib
import subprocess
import uuid
from email.message import EmailMessage

import pytest

from tern_util import (IO_TIMEOUT, Client, b64, converse, maildir_messages, openssl_s_client,
                       sasl_plain, tls_context, wait_for)

CLIENT_TIMEOUT = 60


def unique():
    return uuid.uuid4().hex


def delivered(tern, address, token):
    """Wait for the message carrying token in address's Maildir; return its bytes."""
    def find():
        for f in maildir_messages(tern.maildir(address)):
            data = open(f, "rb").read()
            if token.encode() in data:
                return data
        return None
    return wait_for(find, what=f"delivery of {token} to {address}")


def swaks(tern, *args):
    cmd = ["swaks", "--server", tern.host, "--timeout", "30", "--hide-all"] + list(args)
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    return cp


def swaks_verbose(tern, *args):
    cmd = ["swaks", "--server", tern.host, "--timeout", "30"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)


def test_swaks_plain(tern):
    tok = unique()
    cp = swaks_verbose(tern, "--port", str(tern.ports["smtp"]), "--from", "sender@remote.example",
                       "--to", "alice@example.test", "--header", f"X-Token: {tok}")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as [0-9A-F]+", cp.stdout)
    data = delivered(tern, "alice@example.test", tok)
    assert b"with ESMTP id" in data


def test_swaks_starttls(tern):
    tok = unique()
    cp = swaks_verbose(tern, "--port", str(tern.ports["smtp"]), "--tls", "--from",
                       "sender@remote.example", "--to", "bob@example.test", "--header",
                       f"X-Token: {tok}")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "220 2.0.0 Ready to start TLS" in cp.stdout
    data = delivered(tern, "bob@example.test", tok)
    # RFC 3848: ESMTPS, and the cipher is recorded
    assert re.search(rb"\(using TLSv1\.[23] with cipher [^\n]+\)\n\tby mail\.example\.test "
                     rb"\(Tern\) with ESMTPS id", data), data[:600]


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_auth_submission(tern, mech):
    tok = unique()
    cp = swaks_verbose(tern, "--port", str(tern.ports["submission"]), "--auth", mech,
                       "--auth-user", "alice@example.test", "--auth-password", "alicepw",
                       "--from", "alice@example.test", "--to", "bob@example.test", "--header",
                       f"X-Token: {tok}")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "235 2.7.0 Authentication successful" in cp.stdout
    data = delivered(tern, "bob@example.test", tok)
    assert b"(Authenticated sender: alice@example.test)" in data
    assert b"with ESMTPA id" in data
    qid = re.search(rb"with ESMTPA id ([0-9A-F]+)", data).group(1).decode()
    tern.wait_log(qid + r": client=localhost\[127\.0\.0\.1\], sasl_method=" +
                  re.escape(mech) + r", sasl_username=alice@example\.test")


def test_swaks_auth_starttls_submission(tern):
    tok = unique()
    cp = swaks(tern, "--port", str(tern.ports["submission"]), "--tls", "--auth", "LOGIN",
               "--auth-user", "bob@example.test", "--auth-password", "bobpw", "--from",
               "bob@example.test", "--to", "alice@example.test", "--header", f"X-Token: {tok}")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    data = delivered(tern, "alice@example.test", tok)
    assert b"with ESMTPSA id" in data


def test_swaks_submissions_465_tls_on_connect(tern):
    tok = unique()
    cp = swaks_verbose(tern, "--port", str(tern.ports["submissions"]), "--tlsc", "--auth",
                       "PLAIN", "--auth-user", "alice@example.test", "--auth-password",
                       "alicepw", "--from", "alice@example.test", "--to", "bob@example.test",
                       "--header", f"X-Token: {tok}")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # implicit TLS: STARTTLS is not offered again
    assert "250-STARTTLS" not in cp.stdout
    data = delivered(tern, "bob@example.test", tok)
    assert b"with ESMTPSA id" in data


def test_swaks_bad_password(tern):
    cp = swaks(tern, "--port", str(tern.ports["submission"]), "--auth", "PLAIN", "--auth-user",
               "alice@example.test", "--auth-password", "nope", "--from", "alice@example.test",
               "--to", "bob@example.test")
    assert cp.returncode != 0


def test_submission_requires_auth(tern):
    c = Client(tern.host, tern.ports["submission"])
    c.read_until(r"^220 ")
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("MAIL FROM:<alice@example.test>", r"^530 "),
                     ("QUIT", r"^221 ")])
    assert r[1].startswith("530 5.7.0 Authentication required")


def test_submission_sender_must_be_owned(tern):
    c = Client(tern.host, tern.ports["submission"])
    c.read_until(r"^220 ")
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw"), r"^235 "),
                     ("MAIL FROM:<bob@example.test>", r"^553 "),
                     ("MAIL FROM:<info@example.test>", r"^250 "),  # alias of alice
                     ("RSET", r"^250 "),
                     ("MAIL FROM:<alice@example.test>", r"^250 "),
                     ("QUIT", r"^221 ")])
    assert "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user" in r[2]


@pytest.mark.threads  # a loop/workpool hand-off: the TSan stage (-m threads) runs it
def test_smtplib_starttls_login_send_message(tern):
    tok = unique()
    msg = EmailMessage()
    msg["From"] = "alice@example.test"
    msg["To"] = "bob@example.test"
    msg["Subject"] = "smtplib " + tok
    msg.set_content("Grüße aus Prag — 8-bit body\n.leading dot line\n")
    with smtplib.SMTP(tern.host, tern.ports["submission"], local_hostname="client.test",
                      timeout=IO_TIMEOUT) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=tls_context())
        s.ehlo()
        assert not s.has_extn("starttls")
        s.login("alice@example.test", "alicepw")
        refused = s.send_message(msg)
        assert refused == {}
    data = delivered(tern, "bob@example.test", tok)
    assert b"\n.leading dot line\n" in data
    assert "Grüße".encode() in data or b"=?utf-8?" in data.lower() or b"Gr=C3=BC" in data


def test_smtplib_implicit_tls_465(tern):
    tok = unique()
    with smtplib.SMTP_SSL(tern.host, tern.ports["submissions"], local_hostname="client.test",
                          context=tls_context(), timeout=IO_TIMEOUT) as s:
        s.login("bob@example.test", "bobpw")
        s.sendmail("bob@example.test", ["alice@example.test"],
                   f"Subject: {tok}\r\n\r\nvia 465\r\n")
    delivered(tern, "alice@example.test", tok)


def test_raw_bdat(tern):
    tok = unique()
    part1 = f"Subject: bdat {tok}\r\nX-Token: {tok}\r\n\r\n".encode()
    part2 = b"line one\r\n.\r\nnot the end: BDAT has no dot transparency\r\n"
    c = Client(tern.host, tern.ports["smtp"])
    c.read_until(r"^220 ")
    converse(c, [("EHLO client.test", r"^250 CHUNKING"),
                 ("MAIL FROM:<x@remote.example> BODY=8BITMIME", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 ")])
    c.send_raw(b"BDAT %d\r\n" % len(part1) + part1)
    c.read_until(r"^250 2\.0\.0 Ok: \d+ bytes")
    c.send_raw(b"BDAT %d LAST\r\n" % len(part2) + part2)
    r = c.read_until(r"^250 2\.0\.0 Ok: queued as ")
    converse(c, [("QUIT", r"^221 ")])
    data = delivered(tern, "alice@example.test", tok)
    assert data.endswith(b"\n\nline one\n.\nnot the end: BDAT has no dot transparency\n")
    assert r


def test_curl_smtp_upload(tern, tmp_path):
    tok = unique()
    f = tmp_path / "mail.txt"
    f.write_bytes(f"From: c@remote.example\r\nSubject: curl {tok}\r\n\r\n.dot first\r\nbye\r\n"
                  .encode())
    cp = subprocess.run(["curl", "-sS", "--max-time", "30", f"smtp://{tern.host}:"
                         f"{tern.ports['smtp']}/client.test", "--mail-from",
                         "c@remote.example", "--mail-rcpt", "alice@example.test", "-T", str(f)],
                        capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    assert cp.returncode == 0, cp.stderr
    data = delivered(tern, "alice@example.test", tok)
    assert data.endswith(b"\n\n.dot first\nbye\n")


def test_curl_smtps_auth_465(tern, tmp_path):
    tok = unique()
    f = tmp_path / "mail.txt"
    f.write_bytes(f"Subject: curl465 {tok}\r\n\r\nhello\r\n".encode())
    cp = subprocess.run(["curl", "-sS", "-k", "--max-time", "30", f"smtps://{tern.host}:"
                         f"{tern.ports['submissions']}", "--user", "alice@example.test:alicepw",
                         "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
                         "-T", str(f)], capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    assert cp.returncode == 0, cp.stderr
    delivered(tern, "bob@example.test", tok)


def test_openssl_starttls_smtp(tern):
    tok = unique()
    out = openssl_s_client(tern.ports["smtp"], [
        (None, r"^250 "),
        ("EHLO client.test", r"^250 CHUNKING"),
        ("MAIL FROM:<x@remote.example>", r"^250 2\.1\.0"),
        ("RCPT TO:<bob@example.test>", r"^250 2\.1\.5"),
        ("DATA", r"^354 "),
        (f"Subject: s_client {tok}", None),
        ("", None),
        ("over STARTTLS", None),
        (".", r"^250 2\.0\.0 Ok: queued as"),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ], starttls="smtp")
    assert "Protocol" in out or "TLSv1" in out
    after_tls = out.split("EHLO client.test", 1)[-1]
    assert "STARTTLS" not in after_tls.split("250 CHUNKING")[0]
    delivered(tern, "bob@example.test", tok)


def test_openssl_connect_465_auth_login(tern):
    out = openssl_s_client(tern.ports["submissions"], [
        (None, r"^220 mail\.example\.test ESMTP"),
        ("EHLO client.test", r"^250 CHUNKING"),
        ("AUTH LOGIN", r"^334 VXNlcm5hbWU6"),
        (b64("alice@example.test"), r"^334 UGFzc3dvcmQ6"),
        (b64("alicepw"), r"^235 2\.7\.0 Authentication successful"),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ])
    assert "235 2.7.0" in out


def test_openssl_starttls_submission_auth_plain(tern):
    """Seed 001: openssl s_client -starttls smtp -crlf -connect host:587, then AUTH."""
    tok = unique()
    out = openssl_s_client(tern.ports["submission"], [
        (None, r"^250 "),
        ("EHLO client.test", r"^250 CHUNKING"),
        ("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw"), r"^235 2\.7\.0"),
        ("MAIL FROM:<alice@example.test>", r"^250 2\.1\.0"),
        ("RCPT TO:<bob@example.test>", r"^250 2\.1\.5"),
        ("DATA", r"^354 "),
        (f"Subject: s_client 587 {tok}", None),
        ("", None),
        ("via submission", None),
        (".", r"^250 2\.0\.0 Ok: queued as"),
        ("QUIT", r"^221 2\.0\.0 Bye"),
    ], starttls="smtp")
    assert "235 2.7.0" in out
    data = delivered(tern, "bob@example.test", tok)
    assert b"with ESMTPSA id" in data


def test_gnutls_cli_starttls_by_sigalrm(tern):
    """Seed 003: gnutls-cli -s (plain first), type STARTTLS, then SIGALRM starts TLS."""
    import os
    import shutil
    import signal
    import threading
    import time

    if not shutil.which("gnutls-cli"):
        pytest.skip("gnutls-cli (package gnutls-bin) not installed")
    proc = subprocess.Popen(["gnutls-cli", "-s", "--insecure", "--crlf", "-p",
                             str(tern.ports["submission"]), tern.host],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = bytearray()
    cond = threading.Condition()

    def reader():
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            with cond:
                if not chunk:
                    cond.notify_all()
                    return
                out.extend(chunk)
                cond.notify_all()

    threading.Thread(target=reader, daemon=True).start()

    def expect(regex, since):
        pat = re.compile(regex, re.M)
        deadline = time.monotonic() + 30
        with cond:
            while not pat.search(out[since:].decode(errors="replace")):
                left = deadline - time.monotonic()
                assert left > 0, f"gnutls-cli: no /{regex}/ in:\n{out.decode(errors='replace')}"
                cond.wait(min(left, 0.2))

    def step(line, regex):
        with cond:
            since = len(out)
        if line is not None:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
        expect(regex, since)

    try:
        step(None, r"^220 mail\.example\.test ESMTP")
        step("ehlo test", r"^250 CHUNKING")
        with cond:
            since = len(out)
        proc.stdin.write(b"starttls\n")
        proc.stdin.flush()
        expect(r"^220 2\.0\.0 Ready to start TLS", since)
        with cond:
            since = len(out)
        proc.send_signal(signal.SIGALRM)
        expect(r"^- Description: \(TLS|^- Options:", since)
        with cond:
            before_ehlo = len(out)
        step("ehlo test", r"^250 CHUNKING")
        assert "250-STARTTLS" not in out[before_ehlo:].decode(errors="replace")
        step("auth plain " + sasl_plain("bob@example.test", "bobpw"), r"^235 2\.7\.0")
        step("quit", r"^221 2\.0\.0 Bye")
    finally:
        proc.kill()
        proc.wait(timeout=10)
