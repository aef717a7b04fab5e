"""
test_outbound_relay.py - the queue runner delivering mail out of `tern serve` (issue 5):
to a Python SMTP sink and to a second Tern instance on loopback, routed with
transport.<domain> overrides; per-recipient 2xx/4xx/5xx handling, retries via
`tern queue flush`, bounces (RFC 3464) to a local sender, STARTTLS to the peer,
smarthost with AUTH, and a restart with mail in the queue.
"""

import os
import re
import signal
import smtplib
import time

import pytest

from outbound_util import SmtpSink
from tern_util import maildir_messages, wait_for

SUBMIT_FROM = "alice@example.test"


def submit(srv, rcpts, body="Subject: hi\r\n\r\nhello\r\n", sender=SUBMIT_FROM,
           user="alice@example.test", pw="alicepw"):
    """Submit over the submission port with AUTH (relaying is allowed after AUTH)."""
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=15) as s:
        s.ehlo("client.test")
        s.login(user, pw)
        msg = ("From: <%s>\r\nTo: %s\r\n" % (sender, ", ".join(rcpts))) + body
        s.sendmail(sender, rcpts, msg.encode())


def queue_ids(srv):
    out = srv.cli("queue", "list").stdout
    return re.findall(r"^([0-9A-F]{6,})[*! ]", out, re.M)


@pytest.fixture
def sink():
    s = SmtpSink()
    yield s
    s.close()


def test_relay_to_sink(tern_factory, sink):
    srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
    body = "Subject: dots\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
    submit(srv, ["carol@remote.test"], body=body)
    m = srv.wait_log(r"tern/smtp\[\d+\]: ([0-9A-F]+): to=<carol@remote.test>, "
                     r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, delay=[\d.]+, "
                     r"delays=[\d.e+-]+/0/[\d.e+-]+/[\d.e+-]+, dsn=2\.0\.0, "
                     r"status=sent \(250 2\.0\.0 Ok: queued as SINK1\)" % sink.port)
    wait_for(lambda: sink.messages, what="sink got the message")
    msg = sink.messages[0]
    assert msg["mail_from"] == SUBMIT_FROM
    assert msg["rcpts"] == ["carol@remote.test"]
    assert b"\r\n.leading dot\r\n..two\r\nend\r\n" in msg["data"]
    assert msg["data"].startswith(b"Received: ")
    assert "SIZE=" in msg["mail_cmd"]
    srv.wait_log(r"%s: removed" % m.group(1))
    assert queue_ids(srv) == []


def test_per_recipient_results_and_bounce(tern_factory):
    def behaviour(cmd, state):
        if cmd.upper().startswith("RCPT") and "nosuch" in cmd:
            return "550 5.1.1 <nosuch@remote.test>: Recipient address rejected"
        return None

    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        submit(srv, ["ok@remote.test", "nosuch@remote.test"])
        srv.wait_log(r"to=<ok@remote.test>, .*status=sent")
        srv.wait_log(r"to=<nosuch@remote.test>, .*dsn=5\.1\.1, status=bounced "
                     r"\(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.1\.1")
        srv.wait_log(r"sender non-delivery notification: [0-9A-F]+")
        # the DSN goes to the local sender's mailbox
        box = srv.maildir("alice@example.test")
        wait_for(lambda: maildir_messages(box), what="bounce in alice's mailbox")
        dsn = open(maildir_messages(box)[0]).read()
        assert "Content-Type: multipart/report; report-type=delivery-status" in dsn
        assert "Final-Recipient: rfc822; nosuch@remote.test" in dsn
        assert "Action: failed" in dsn
        assert "Status: 5.1.1" in dsn
        assert "Diagnostic-Code: smtp; 550 5.1.1 <nosuch@remote.test>: Recipient address " \
            "rejected" in dsn
        assert "<nosuch@remote.test>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1" in dsn
        assert "Return-Path: <>" in dsn
        assert "ok@remote.test" not in dsn.split("text/rfc822-headers")[0]
        assert [m["rcpts"] for m in sink.messages] == [["ok@remote.test"]]
    finally:
        sink.close()


def test_tempfail_then_flush(tern_factory):
    calls = {"n": 0}

    def behaviour(cmd, state):
        if cmd.upper().startswith("RCPT"):
            calls["n"] += 1
            if calls["n"] == 1:
                return "450 4.2.0 <later@remote.test>: try again later"
        return None

    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        submit(srv, ["later@remote.test"])
        m = srv.wait_log(r"([0-9A-F]+): to=<later@remote.test>, .*dsn=4\.2\.0, status=deferred")
        qid = m.group(1)
        assert (srv.data_dir / "queue" / "deferred" / qid).exists()
        out = srv.cli("queue", "list").stdout
        assert qid in out and "later@remote.test" in out
        # the retry time is in the future (queue.retry_min = 300 s): nothing happens alone
        envelope = (srv.data_dir / "queue" / "deferred" / qid).read_bytes()
        assert b"\nattempts=1\n" in envelope
        assert (srv.data_dir / "queue" / "deferred" / qid).stat().st_mtime > time.time() + 200
        since = srv.log_offset()
        r = srv.cli("queue", "flush")
        assert "1 deferred message" in r.stdout
        srv.wait_log(r"%s: to=<later@remote.test>, .*status=sent" % qid, since=since)
        wait_for(lambda: sink.messages, what="sink got the retried message")
        srv.wait_log(r"%s: removed" % qid, since=since)
    finally:
        sink.close()


def test_connection_refused_defers_then_next_address(tern_factory, sink):
    # nothing listens on this port: deferred with the connect error
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    srv = tern_factory({"transport.dead.test": "[127.0.0.1]:%d" % dead})
    submit(srv, ["x@dead.test"])
    srv.wait_log(r"to=<x@dead.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*dsn=4\.4\.1, "
                 r"status=deferred \(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
                 r"Connection refused\)" % (dead, dead))


def test_restart_keeps_queue(tern_factory):
    def behaviour(cmd, state):
        if cmd.upper().startswith("RCPT") and sink.reject:
            return "451 4.3.0 not now"
        return None

    sink = SmtpSink(behaviour)
    sink.reject = True
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        for i in range(3):
            submit(srv, ["r%d@remote.test" % i])
        for i in range(3):
            srv.wait_log(r"to=<r%d@remote.test>, .*status=deferred" % i)
        before = sorted(queue_ids(srv))
        assert len(before) == 3
        srv.stop()
        assert sorted(queue_ids(srv)) == before
        sink.reject = False
        srv.cli("queue", "flush")
        since = srv.log_offset()
        srv.start()
        for i in range(3):
            srv.wait_log(r"to=<r%d@remote.test>, .*status=sent" % i, since=since)
        wait_for(lambda: queue_ids(srv) == [], what="queue empty")
        assert sorted(r for m in sink.messages for r in m["rcpts"]) == [
            "r0@remote.test", "r1@remote.test", "r2@remote.test"]
    finally:
        sink.close()


def test_hold_is_left_alone(tern_factory):
    def behaviour(cmd, state):
        if cmd.upper().startswith("RCPT") and "<h@" in cmd:
            return "451 4.3.0 not now"
        return None

    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        submit(srv, ["h@remote.test"])
        # the runner's attempt (tern/smtp), not smtpd's "queued for delivery" line: the
        # runner starts at once, so holding before its attempt ends would race with it
        qid = srv.wait_log(r"tern/smtp\[\d+\]: ([0-9A-F]+): to=<h@remote.test>, "
                           r".*status=deferred").group(1)
        srv.cli("queue", "hold", qid)
        since = srv.log_offset()
        srv.cli("queue", "flush")
        # a later message goes through: the runner has scanned since, and left hold/ alone
        submit(srv, ["other@remote.test"])
        srv.wait_log(r"to=<other@remote.test>, .*status=sent", since=since)
        assert (srv.data_dir / "queue" / "hold" / qid).exists()
        assert "to=<h@remote.test>" not in srv.log_text()[since:]
        assert "!" in srv.cli("queue", "list").stdout
    finally:
        sink.close()


def test_starttls_to_tern_peer(tern_factory):
    peer = tern_factory()
    peer.cli("domain", "add", "peer.test")
    peer.cli("user", "add", "dave@peer.test", "--password-stdin", input="davepw\n")
    srv = tern_factory({"transport.peer.test": "[127.0.0.1]:%d" % peer.ports["smtp"]})
    submit(srv, ["dave@peer.test"], body="Subject: via tls\r\n\r\n8bit: caf\u00e9\r\n")
    srv.wait_log(r"Untrusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
                 r"TLSv1\.[23] with cipher" % peer.ports["smtp"])
    srv.wait_log(r"to=<dave@peer.test>, .*status=sent \(250 ")
    box = peer.maildir("dave@peer.test")
    wait_for(lambda: maildir_messages(box), what="message at the peer")
    text = open(maildir_messages(box)[0], 'rb').read()
    assert b"Subject: via tls" in text
    assert b"with ESMTPS" in text
    assert "caf\u00e9".encode() in text


def test_smarthost_with_auth(tern_factory):
    peer = tern_factory()
    peer.cli("domain", "add", "far.test")
    peer.cli("user", "add", "erin@far.test", "--password-stdin", input="erinpw\n")
    srv = tern_factory(start=False)
    pwfile = srv.data_dir / "relaypw"  # inside the data folder: readable by run_user
    pwfile.write_text("erinpw\n")
    srv.write_config({
        "relayhost": "[127.0.0.1]:%d" % peer.ports["submission"],
        "relayhost.username": "erin@far.test",
        "relayhost.password_file": str(pwfile),
    })
    srv.start()
    # the smarthost lets erin send only as herself: inject with sendmail -f
    srv.cli("sendmail", "-f", "erin@far.test", "erin@far.test",
            input="Subject: via smarthost\n\nhello\n")
    srv.wait_log(r"Untrusted TLS connection established to 127\.0\.0\.1")
    srv.wait_log(r"to=<erin@far.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent"
                 % peer.ports["submission"])
    box = peer.maildir("erin@far.test")
    wait_for(lambda: maildir_messages(box), what="message at the smarthost's user")
    assert b"Authenticated sender: erin@far.test" in open(maildir_messages(box)[0], 'rb').read()


def test_smarthost_bad_password_defers(tern_factory):
    peer = tern_factory()
    srv = tern_factory({
        "relayhost": "[127.0.0.1]:%d" % peer.ports["submission"],
        "relayhost.username": "bob@example.test",
        "relayhost.password": "wrong",
    })
    submit(srv, ["z@far.test"])
    srv.wait_log(r"to=<z@far.test>, .*dsn=4\.7\.0, status=deferred \(SASL authentication "
                 r"failed; server 127\.0\.0\.1\[127\.0\.0\.1\] said: 535")


def test_size_limit_bounces(tern_factory):
    sink = SmtpSink(size_limit=1000)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        submit(srv, ["big@remote.test"], body="Subject: big\r\n\r\n" + "x" * 3000 + "\r\n")
        srv.wait_log(r"to=<big@remote.test>, .*dsn=5\.3\.4, status=bounced \(message size "
                     r"\d+ exceeds size limit 1000")
        assert sink.messages == []
        assert not any(c.upper().startswith("MAIL") for c in sink.commands)
    finally:
        sink.close()


def test_tls_encrypt_policy_defers_without_starttls(tern_factory, sink):
    srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port,
                        "outbound.tls": "encrypt"})
    submit(srv, ["t@remote.test"])
    srv.wait_log(r"to=<t@remote.test>, .*dsn=4\.7\.4, status=deferred \(TLS is required, but "
                 r"was not offered by host 127\.0\.0\.1\[127\.0\.0\.1\]\)")
    assert sink.messages == []


def test_destination_concurrency_limit(tern_factory):
    import threading
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    release = threading.Event()

    def behaviour(cmd, st):
        if cmd.upper().startswith("MAIL"):
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            release.wait(2)  # hold the first sessions a moment (a bound, not an assertion)
        if cmd == "END-OF-DATA":
            with lock:
                state["now"] -= 1
        return None

    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port,
                            "queue.destination_concurrency": "2"})
        for i in range(5):
            srv.cli("sendmail", "-f", "alice@example.test", "c%d@remote.test" % i,
                    input="Subject: c\n\nc\n")
        wait_for(lambda: len(sink.messages) == 5, timeout=30, what="all five delivered")
        assert state["max"] <= 2
    finally:
        release.set()
        sink.close()


def test_connection_reused_for_next_message(tern_factory, sink):
    srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
    submit(srv, ["a1@remote.test"])
    srv.wait_log(r"to=<a1@remote.test>, .*status=sent")
    submit(srv, ["a2@remote.test"])
    srv.wait_log(r"to=<a2@remote.test>, .*status=sent")
    # the second message went over the parked session, checked with RSET first
    assert sink.connections == 1
    assert "RSET" in sink.commands
    assert [m["rcpts"] for m in sink.messages] == [["a1@remote.test"], ["a2@remote.test"]]


def test_helo_fallback_and_8bitmime(tern_factory):
    def old_server(cmd, state):
        if cmd.upper().startswith("EHLO"):
            return "502 5.5.2 Error: command not recognized"
        return None

    old = SmtpSink(old_server)
    new = SmtpSink()
    try:
        srv = tern_factory({"transport.old.test": "[127.0.0.1]:%d" % old.port,
                            "transport.new.test": "[127.0.0.1]:%d" % new.port})
        body = "Subject: 8bit\r\n\r\ncaf\u00e9\r\n"
        submit(srv, ["u@old.test"], body=body)
        submit(srv, ["u@new.test"], body=body)
        srv.wait_log(r"to=<u@old.test>, .*status=sent")
        srv.wait_log(r"to=<u@new.test>, .*status=sent")
        assert any(c.upper().startswith("HELO ") for c in old.commands)
        # no ESMTP: plain MAIL FROM, no parameters
        assert old.messages[0]["mail_cmd"] == "MAIL FROM:<alice@example.test>"
        assert "BODY=8BITMIME" in new.messages[0]["mail_cmd"]
        assert "caf\u00e9".encode() in new.messages[0]["data"]
    finally:
        old.close()
        new.close()


def test_kill9_mid_delivery_loses_nothing(tern_factory):
    import threading
    stall = threading.Event()
    reached = threading.Event()

    def behaviour(cmd, state):
        if cmd == "END-OF-DATA" and not stall.is_set():
            reached.set()
            stall.wait(20)  # the server dies while we hold the final reply back
            return "451 4.3.0 connection was dropped"
        return None

    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        submit(srv, ["k@remote.test"])
        wait_for(reached.is_set, timeout=20, what="delivery in progress")
        # The whole server at once: SIGKILL to the master alone leaves its queue process
        # to notice the exit on its own, and under load it was still there to read the
        # 451 below and defer the message (then the restarted server waits the retry
        # delay instead of sending it).
        os.killpg(srv.pid, signal.SIGKILL)
        srv.kill9()
        stall.set()
        ids = queue_ids(srv)
        assert len(ids) == 1  # still queued: nothing was acknowledged by the sink
        since = srv.log_offset()
        srv.start()
        srv.wait_log(r"%s: to=<k@remote.test>, .*status=sent" % ids[0], since=since)
        wait_for(lambda: queue_ids(srv) == [], what="queue empty")
        assert [m["rcpts"] for m in sink.messages] == [["k@remote.test"]]
    finally:
        stall.set()
        sink.close()
