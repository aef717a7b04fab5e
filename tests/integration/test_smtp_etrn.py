"""
test_smtp_etrn.py - ETRN (RFC 1985) on the port-25 role (issue 5): a deferred domain is
flushed on request (the SmtpSink of outbound_util.py first answers 4xx, then 250 after
ETRN), and the RFC 1985 replies for unknown nodes, named queues, bad syntax, ETRN inside
a transaction and on the submission port. Driven with smtplib.docmd and swaks.
"""

import smtplib
import subprocess

import pytest

from outbound_util import SmtpSink
from tern_util import wait_for

ALICE = "alice@example.test"


def etrn(srv, arg, port="smtp"):
    with smtplib.SMTP(srv.host, srv.ports[port], timeout=15) as s:
        s.ehlo("client.test")
        code, text = s.docmd("ETRN", arg) if arg is not None else s.docmd("ETRN")
        return code, text.decode()


@pytest.fixture
def flaky_sink():
    """Answers 451 to RCPT until .accept is set."""
    state = {"accept": False}

    def behaviour(cmd, st):
        if cmd.upper().startswith("RCPT") and not state["accept"]:
            return "451 4.3.0 come back later"
        return None
    sink = SmtpSink(behaviour)
    sink.state = state
    yield sink
    sink.close()


def test_etrn_flushes_deferred_domain(tern_factory, flaky_sink):
    # retries an hour apart: only ETRN can bring the message back this soon
    srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % flaky_sink.port,
                        "queue.retry_min": "3600", "queue.retry_max": "3600"})
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=15) as s:
        s.ehlo("client.test")
        s.login(ALICE, "alicepw")
        s.sendmail(ALICE, ["carol@remote.test"],
                   b"From: <alice@example.test>\r\nSubject: etrn\r\n\r\nhello\r\n")
    m = srv.wait_log(r"tern/smtp\[\d+\]: ([0-9A-F]+): to=<carol@remote.test>, "
                     r"relay=127\.0\.0\.1.*status=deferred")
    qid = m.group(1)
    wait_for(lambda: (srv.data_dir / "queue" / "deferred" / qid).exists(),
             what="message in deferred/")
    flaky_sink.state["accept"] = True
    since = srv.log_offset()
    code, text = etrn(srv, "remote.test")
    assert (code, text) == (250, "Queuing for node remote.test started")
    srv.wait_log(r"%s: to=<carol@remote.test>, .*status=sent" % qid, since=since)
    wait_for(lambda: flaky_sink.messages, what="sink got the message")
    srv.wait_log(r"%s: removed" % qid, since=since)
    # nothing is left: the node is still allowed (transport) and says so
    assert etrn(srv, "remote.test") == (251, "OK, no messages waiting for node remote.test")


def test_etrn_subdomains_form(tern_factory, flaky_sink):
    srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % flaky_sink.port})
    assert etrn(srv, "@remote.test") == (251, "OK, no messages waiting for node @remote.test")


def test_etrn_replies(tern):
    assert etrn(tern, "unknown.example") == (459, "Node unknown.example not allowed: unknown domain")
    assert etrn(tern, "#outq") == (458, "Unable to queue messages for node #outq")
    assert etrn(tern, "bad..domain")[0] == 501
    assert etrn(tern, "-x.example")[0] == 501
    assert etrn(tern, None) == (500, "Syntax Error")
    # not on the submission port, and not advertised there
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=15) as s:
        s.ehlo("client.test")
        assert not s.has_extn("etrn")
    assert etrn(tern, "remote.test", port="submission")[0] == 502
    with smtplib.SMTP(tern.host, tern.ports["smtp"], timeout=15) as s:
        assert s.docmd("ETRN", "remote.test")[0] == 503  # before EHLO
        s.ehlo("client.test")
        assert s.has_extn("etrn")
        assert s.docmd("MAIL", "FROM:<x@remote.test>")[0] == 250
        assert s.docmd("ETRN", "remote.test")[0] == 503  # inside a transaction
        assert s.docmd("RSET")[0] == 250
        assert s.docmd("ETRN", "unknown.example")[0] == 459


def test_etrn_with_swaks(tern):
    r = subprocess.run(["swaks", "--server", "%s:%d" % (tern.host, tern.ports["smtp"]),
                        "--ehlo", "client.test", "--quit-after", "EHLO"],
                       capture_output=True, text=True, timeout=30)
    assert "250-ETRN" in r.stdout, r.stdout
