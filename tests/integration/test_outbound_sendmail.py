"""
test_outbound_sendmail.py - local submission with `tern sendmail` (and the binary invoked
as "sendmail"/"mailq" through a symlink): durable queueing before exit 0, Date/Message-ID/
From added when missing, -t with Bcc removed, LF input, the "." terminator without -i,
local delivery by the queue runner, null-sender failures (double bounce / discard) and
expiry after queue.lifetime.
"""

import os
import re
import subprocess

import pytest

from outbound_util import SmtpSink
from tern_util import maildir_messages, wait_for


@pytest.fixture
def sink():
    s = SmtpSink()
    yield s
    s.close()


def read_msgs(box):
    return [open(p, "rb").read() for p in maildir_messages(box)]


def test_sendmail_local_delivery_adds_headers(tern):
    r = tern.cli("sendmail", "-f", "alice@example.test", "bob@example.test",
                 input="Subject: from sendmail\n\nline one\n.\nnot reached\n")
    assert r.returncode == 0
    box = tern.maildir("bob@example.test")
    wait_for(lambda: any(b"from sendmail" in m for m in read_msgs(box)), what="delivery")
    msg = [m for m in read_msgs(box) if b"from sendmail" in m][0]
    assert b"Return-Path: <alice@example.test>" in msg
    assert re.search(rb"^Date: ", msg, re.M)
    assert re.search(rb"^Message-ID: <\d{14}\.[0-9A-F]+@mail\.example\.test>", msg, re.M)
    assert re.search(rb"^From: alice@example\.test", msg, re.M)
    assert b"line one\n" in msg
    assert b"not reached" not in msg  # a lone "." ends the input without -i
    tern.wait_log(r"tern/local\[\d+\]: [0-9A-F]+: to=<bob@example.test>, relay=local, .*"
                  r"status=sent \(delivered to maildir\)")


def test_sendmail_t_bcc_and_dot_with_i(tern_factory, sink):
    srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
    msg = ("From: Alice <alice@example.test>\nTo: bob@example.test,\n  \"Carol X\" "
           "<carol@remote.test>\nBcc: hidden@remote.test\nSubject: t\n\nbody\n.\nafter dot\n")
    srv.cli("sendmail", "-t", "-i", "-f", "alice@example.test", input=msg)
    wait_for(lambda: len({r for m in sink.messages for r in m["rcpts"]}) == 2,
             what="both remote recipients")
    assert sorted({r for m in sink.messages for r in m["rcpts"]}) == [
        "carol@remote.test", "hidden@remote.test"]
    data = sink.messages[0]["data"]
    assert b"Bcc" not in data and b"hidden" not in data
    assert b"\r\n.\r\nafter dot\r\n" in data  # -i: the dot is data (and was stuffed)
    box = srv.maildir("bob@example.test")
    wait_for(lambda: maildir_messages(box), what="local copy")
    assert b"after dot" in read_msgs(box)[0]


def test_sendmail_no_recipients_fails(tern):
    r = tern.cli("sendmail", "-t", input="Subject: nobody\n\nx\n", check=False)
    assert r.returncode != 0
    assert "No recipient addresses found" in r.stderr


def test_symlink_names(tern, tmp_path):
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    os.symlink(str(tern.bin), link_dir / "sendmail")
    os.symlink(str(tern.bin), link_dir / "mailq")
    env = dict(os.environ, TERN_CONFIG=str(tern.config_path))
    r = subprocess.run([str(link_dir / "sendmail"), "-oi", "-f", "bob@example.test",
                        "alice@example.test"], input="Subject: via link\n\nhi\n", text=True,
                       env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    box = tern.maildir("alice@example.test")
    wait_for(lambda: any(b"via link" in m for m in read_msgs(box)), what="delivery via link")
    r = subprocess.run([str(link_dir / "mailq")], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    assert "Mail queue is empty" in r.stdout or "Request" in r.stdout


def test_mailq_and_bp_show_deferred(tern_factory):
    def behaviour(cmd, state):
        return "451 4.3.0 later" if cmd.upper().startswith("RCPT") else None

    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        srv.cli("sendmail", "-f", "alice@example.test", "q@remote.test", input="Subject: q\n\nq\n")
        qid = srv.wait_log(r"([0-9A-F]+): to=<q@remote.test>, .*status=deferred").group(1)
        for args in (("mailq",), ("sendmail", "-bp")):
            out = srv.cli(*args).stdout
            assert re.search(r"^%s\s+\d+ .* alice@example\.test$" % qid, out, re.M), out
            assert "q@remote.test" in out
    finally:
        sink.close()


def test_null_sender_failure_goes_to_postmaster_or_is_dropped(tern_factory):
    def behaviour(cmd, state):
        return "550 5.1.1 no such user" if cmd.upper().startswith("RCPT") else None

    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        # no postmaster yet: the failed bounce is dropped with a log line
        srv.cli("sendmail", "-f", "<>", "x@remote.test", input="Subject: nb\n\nx\n")
        srv.wait_log(r"to=<x@remote.test>, .*status=bounced")
        srv.wait_log(r"tern/bounce\[\d+\]: [0-9A-F]+: undeliverable null-sender message "
                     r"discarded")
        # with a postmaster alias, it gets a double bounce
        srv.cli("alias", "add", "postmaster@example.test", "bob@example.test")
        since = srv.log_offset()
        srv.cli("sendmail", "-f", "<>", "y@remote.test", input="Subject: nb2\n\ny\n")
        srv.wait_log(r"sender non-delivery notification", since=since)
        box = srv.maildir("bob@example.test")
        wait_for(lambda: maildir_messages(box), what="double bounce at postmaster")
        dsn = read_msgs(box)[0]
        assert b"Final-Recipient: rfc822; y@remote.test" in dsn
        assert b"To: <postmaster@example.test>" in dsn
        # nothing ever went back to the null sender
        assert not any(m["mail_from"] == "" and m["rcpts"] == [""] for m in sink.messages)
    finally:
        sink.close()


def test_expiry_bounces(tern_factory):
    def behaviour(cmd, state):
        return "451 4.3.0 later" if cmd.upper().startswith("RCPT") else None

    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port,
                            "queue.lifetime": "0"})
        srv.cli("sendmail", "-f", "alice@example.test", "e@remote.test", input="Subject: e\n\ne\n")
        srv.wait_log(r"to=<e@remote.test>, .*dsn=5\.3\.0, status=expired, returned to sender")
        box = srv.maildir("alice@example.test")
        wait_for(lambda: maildir_messages(box), what="expiry bounce")
        dsn = read_msgs(box)[0]
        assert b"Status: 5.3.0" in dsn
        assert b"message expired" in dsn
    finally:
        sink.close()
