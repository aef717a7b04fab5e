"""
test_lmtp.py - LMTP (RFC 2033) into the store, on the unix socket under data_dir (the
default lmtp.listen) and on a loopback TCP port: LHLO and its capabilities, SMTP-only
verbs refused, relaying never, one reply per accepted recipient after DATA (one good,
one over quota), pipelining; and a real Postfix in front (virtual_transport =
lmtp:unix:...) delivering one message to a known and an unknown user.
"""

import os
import smtplib
import socket

import pytest

from postfix_util import HAS_POSTFIX, Postfix
from conftest import free_ports
from tern_util import IO_TIMEOUT, maildir_messages, wait_for
from test_pop3_lib import add_user


def maildir_texts(maildir):
    out = []
    for path in maildir_messages(maildir):
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def lmtp_socket(tern):
    return str(tern.data_dir / "lmtp")


def message(subject, size=0):
    return (f"From: a@example.org\r\nTo: b@example.test\r\nSubject: {subject}\r\n\r\n"
            + "x" * size + "\r\n").encode()


def lmtp_connect(tern):
    lm = smtplib.LMTP(lmtp_socket(tern), timeout=IO_TIMEOUT)
    code, caps = lm.ehlo("mx.example.test")  # smtplib's LMTP sends LHLO here
    assert code == 250, caps
    return lm


def test_lmtp_per_recipient_replies(tern):
    full = add_user(tern, "lmtpfull@example.test", "pw")
    tern.cli("user", "quota", full, "2000")  # not full yet: the 5 kB message is too big
    lm = lmtp_connect(tern)
    assert lm.has_extn("pipelining") and lm.has_extn("enhancedstatuscodes")
    assert lm.has_extn("8bitmime") and lm.has_extn("size")
    assert not lm.has_extn("starttls") and not lm.has_extn("auth") and not lm.has_extn("chunking")
    assert lm.mail("sender@example.org")[0] == 250
    assert lm.rcpt("alice@example.test")[0] == 250
    code, text = lm.rcpt("nosuchuser@example.test")
    assert code == 550 and b"5.1.1" in text
    assert lm.rcpt("info@example.test")[0] == 250  # alias of alice: its own copy and reply
    assert lm.rcpt(full)[0] == 250
    # RFC 2033 §4.2: after the final dot one reply per accepted RCPT, in RCPT order
    replies = [lm.data(message("per rcpt", 5000))]
    replies += [lm.getreply() for _ in range(2)]
    assert [c for c, _ in replies] == [250, 250, 552], replies
    assert b"<alice@example.test>" in replies[0][1] and b"<info@example.test>" in replies[1][1]
    assert b"5.2.2" in replies[2][1] and full.encode() in replies[2][1]
    assert lm.noop()[0] == 250  # no reply was left unread
    lm.quit()
    alice = [m for m in maildir_texts(tern.maildir("alice@example.test"))
             if b"Subject: per rcpt" in m]
    assert len(alice) == 2  # one copy per RCPT in LMTP
    assert all(b"with LMTP" in m for m in alice)
    assert not any(b"per rcpt" in m for m in maildir_texts(tern.maildir(full)))


def test_lmtp_is_not_smtp(tern):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    s.connect(lmtp_socket(tern))
    f = s.makefile("rwb")
    assert f.readline().startswith(b"220 ")

    def cmd(line):
        f.write(line + b"\r\n")
        f.flush()
        return f.readline()

    assert cmd(b"MAIL FROM:<a@example.org>").startswith(b"503 5.5.1 Error: send LHLO first")
    assert cmd(b"HELO x").startswith(b"502")
    assert cmd(b"EHLO x").startswith(b"502")
    f.write(b"LHLO x\r\n")
    f.flush()
    while not f.readline().startswith(b"250 "):
        pass
    assert cmd(b"STARTTLS").startswith(b"502")
    assert cmd(b"MAIL FROM:<a@example.org>").startswith(b"250")
    # never a relay, whoever connects
    assert cmd(b"RCPT TO:<someone@example.org>").startswith(b"550 5.1.1")
    assert cmd(b"BDAT 10 LAST").startswith(b"502")
    # DATA refused whole (no valid recipient yet)
    assert cmd(b"DATA").startswith(b"503")
    # pipelined: two recipients and the message in one write, two replies after the dot
    f.write(b"RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    f.flush()
    assert f.readline().startswith(b"250") and f.readline().startswith(b"250")
    assert f.readline().startswith(b"354")
    f.write(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    f.flush()
    assert f.readline().startswith(b"250 2.0.0 <alice@example.test>")
    assert f.readline().startswith(b"250 2.0.0 <bob@example.test>")
    assert f.readline().startswith(b"221")
    s.close()


def test_lmtp_tcp_loopback(tern_factory):
    port = free_ports(1)[0]
    t = tern_factory({"lmtp.listen": f"127.0.0.1:{port}"})
    lm = smtplib.LMTP("127.0.0.1", port, timeout=IO_TIMEOUT)
    assert lm.ehlo("mx")[0] == 250
    assert lm.sendmail("a@example.org", ["bob@example.test"], message("over tcp")) == {}
    lm.quit()
    assert any(b"over tcp" in m for m in maildir_texts(t.maildir("bob@example.test")))
    assert not os.path.exists(t.data_dir / "lmtp")  # only what lmtp.listen names


@pytest.mark.skipif(not HAS_POSTFIX, reason="postfix not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="a Postfix instance needs root")
def test_postfix_delivers_over_lmtp(tern_factory):
    t = tern_factory({"lmtp.socket_group": "postfix", "lmtp.socket_mode": "0660"})
    pf = Postfix(transport=f"lmtp:unix:{t.data_dir / 'lmtp'}", domains="example.test")
    try:
        pf.start()
        with smtplib.SMTP("127.0.0.1", pf.port, timeout=IO_TIMEOUT) as c:
            c.ehlo("client.example.org")
            # the null sender: Postfix's bounce for the unknown user needs no delivery
            refused = c.sendmail("<>", ["alice@example.test", "ghost@example.test"],
                                 message("through postfix"))
            assert refused == {}  # Postfix accepts both (virtual_mailbox_maps = static:ok)
        wait_for(lambda: any(b"through postfix" in m
                             for m in maildir_texts(t.maildir("alice@example.test"))),
                 timeout=30, what="delivery through Postfix")
        def verdicts():
            log = pf.log_text()
            return "to=<ghost@example.test>" in log and any(
                "to=<alice@example.test>" in ln and "status=" in ln for ln in log.splitlines())

        wait_for(verdicts, timeout=30, what="Postfix's verdict for both recipients")
        log = pf.log_text()
        alice = [ln for ln in log.splitlines() if "to=<alice@example.test>" in ln]
        assert any("status=sent" in ln and "relay=" in ln and "lmtp" in ln for ln in alice), log
        ghost = [ln for ln in log.splitlines() if "to=<ghost@example.test>" in ln]
        assert any("status=bounced" in ln and "5.1.1" in ln for ln in ghost), log
        msg = [m for m in maildir_texts(t.maildir("alice@example.test"))
               if b"through postfix" in m][0]
        assert b"with LMTP" in msg and b"Received: from mx.example.test" in msg
    finally:
        pf.cleanup()
