"""
test_smtp_dsn.py - RFC 3461 delivery status notifications end to end (issue 5): MAIL
RET=/ENVID=, RCPT NOTIFY=/ORCPT= from real clients (smtplib mail_options/rcpt_options,
swaks), kept in the spool, honoured by the queue runner and passed on to a DSN-capable
next hop (the SmtpSink of outbound_util.py):
  NOTIFY=SUCCESS local -> "delivered" DSN in the sender's Maildir, produced at DATA time;
  NOTIFY=SUCCESS remote, next hop without DSN -> "relayed" DSN;
  NOTIFY=NEVER on a 5xx from the next hop -> no bounce;
  RET=HDRS bounce -> headers only; ENVID/ORCPT come back as Original-Envelope-Id and
  Original-Recipient; queue.delay_warning_time -> exactly one "delayed" DSN.
"""

import re
import smtplib
import subprocess

import pytest

from outbound_util import SmtpSink
from tern_util import maildir_messages, wait_for

ALICE = "alice@example.test"


def submission(srv):
    s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=15)
    s.ehlo("client.test")
    s.login(ALICE, "alicepw")
    return s


def message(rcpt, subject="dsn test", body="secret-body-line\r\n"):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\n%s" % (ALICE, rcpt, subject, body)).encode()


def read_all(box):
    return [open(p, encoding="latin-1").read() for p in maildir_messages(box)]


def wait_dsn(srv, what, count=1):
    """The DSNs (multipart/report) in alice's Maildir, once there are count of them."""
    box = srv.maildir(ALICE)

    def dsns():
        found = [m for m in read_all(box) if "report-type=delivery-status" in m]
        return found if len(found) >= count else None
    return wait_for(dsns, timeout=15, what=what)


@pytest.fixture
def sink():
    s = SmtpSink()
    yield s
    s.close()


def test_ehlo_advertises_dsn(tern):
    with smtplib.SMTP(tern.host, tern.ports["smtp"], timeout=15) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=15) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")


def test_bad_dsn_parameters(tern):
    with smtplib.SMTP(tern.host, tern.ports["smtp"], timeout=15) as s:
        s.ehlo("client.test")
        assert s.docmd("MAIL", "FROM:<x@remote.test> RET=BODY")[0] == 501
        assert s.docmd("MAIL", "FROM:<x@remote.test> ENVID=bad+zz")[0] == 501
        assert s.docmd("MAIL", "FROM:<x@remote.test> ENVID=" + "x" * 101)[0] == 501
        assert s.docmd("MAIL", "FROM:<x@remote.test> RET=HDRS ENVID=ok+2B1")[0] == 250
        assert s.docmd("RCPT", "TO:<bob@example.test> NOTIFY=NEVER,SUCCESS")[0] == 501
        assert s.docmd("RCPT", "TO:<bob@example.test> NOTIFY=SOMETIMES")[0] == 501
        assert s.docmd("RCPT", "TO:<bob@example.test> ORCPT=bob@example.test")[0] == 501
        assert s.docmd("RCPT", "TO:<bob@example.test> NOTIFY=failure,delay "
                               "ORCPT=rfc822;bob@example.test")[0] == 250


def test_success_dsn_for_local_delivery(tern):
    """NOTIFY=SUCCESS to a local mailbox: the server itself reports "delivered"."""
    with submission(tern) as s:
        s.sendmail(ALICE, ["bob@example.test"], message("bob@example.test", "local success"),
                   mail_options=["RET=HDRS", "ENVID=env+2Blocal1"],
                   rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Bob+2Bx@example.test"])
    wait_for(lambda: maildir_messages(tern.maildir("bob@example.test")), what="bob's copy")
    dsn = [m for m in wait_dsn(tern, "success DSN") if "Subject: local success" in m][0]
    assert "Subject: Successful Mail Delivery Report" in dsn
    assert "Original-Envelope-Id: env+local1" in dsn
    assert "Original-Recipient: rfc822;Bob+x@example.test" in dsn
    assert "Final-Recipient: rfc822; bob@example.test" in dsn
    assert "Action: delivered" in dsn
    assert "Status: 2.0.0" in dsn
    assert "secret-body-line" not in dsn  # notices carry headers only
    # RFC 3461 §6: the notice has the null sender
    assert re.search(r"^Return-Path: <>$", dsn, re.M)


def test_no_success_dsn_without_notify(tern_factory):
    srv = tern_factory({})
    with submission(srv) as s:
        s.sendmail(ALICE, ["bob@example.test"], message("bob@example.test"))
    m = srv.wait_log(r"([0-9A-F]+): to=<bob@example.test>, relay=local")
    assert "delivery status notification: " not in srv.log_text()
    assert not read_all(srv.maildir(ALICE)), m.group(1)


def test_notify_never_suppresses_bounce(tern_factory):
    def behaviour(cmd, state):
        if cmd.upper().startswith("RCPT") and "never" in cmd:
            return "550 5.1.1 <never@remote.test>: Recipient address rejected"
        return None
    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        with submission(srv) as s:
            s.sendmail(ALICE, ["never@remote.test"], message("never@remote.test"),
                       rcpt_options=["NOTIFY=NEVER"])
        m = srv.wait_log(r"([0-9A-F]+): to=<never@remote.test>, .*status=bounced")
        srv.wait_log(r"%s: removed" % m.group(1))
        # the DSN would have been queued before the removal: there is none
        assert "%s: sender non-delivery notification" % m.group(1) not in srv.log_text()
        assert not read_all(srv.maildir(ALICE))
    finally:
        sink.close()


def test_ret_hdrs_bounce_with_envid_and_orcpt(tern_factory):
    def behaviour(cmd, state):
        if cmd.upper().startswith("RCPT"):
            return "550 5.1.1 <gone@remote.test>: Recipient address rejected"
        return None
    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        with submission(srv) as s:
            s.sendmail(ALICE, ["gone@remote.test"], message("gone@remote.test", "hdrs only"),
                       mail_options=["RET=HDRS", "ENVID=QQ314159"],
                       rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;gone+2Balias@remote.test"])
        srv.wait_log(r"sender non-delivery notification: [0-9A-F]+")
        dsn = wait_dsn(srv, "bounce")[0]
        assert "Subject: Undelivered Mail Returned to Sender" in dsn
        assert "Original-Envelope-Id: QQ314159" in dsn
        assert "Original-Recipient: rfc822;gone+alias@remote.test" in dsn
        assert "Action: failed" in dsn
        assert "Subject: hdrs only" in dsn  # the returned headers
        assert "secret-body-line" not in dsn  # RET=HDRS: no body
    finally:
        sink.close()


def test_ret_full_bounce_returns_the_message(tern_factory):
    sink = SmtpSink(lambda cmd, st: "550 5.1.1 no such user" if cmd.upper().startswith("RCPT")
                    else None)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        with submission(srv) as s:
            s.sendmail(ALICE, ["full@remote.test"], message("full@remote.test", "full one"),
                       mail_options=["RET=FULL"])
        dsn = wait_dsn(srv, "bounce")[0]
        assert "Content-Type: message/rfc822" in dsn
        assert "Subject: full one" in dsn and "secret-body-line" in dsn
    finally:
        sink.close()


def test_relayed_success_dsn(tern_factory, sink):
    """The sink does not advertise DSN: Tern reports "relayed" itself."""
    srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
    with submission(srv) as s:
        s.sendmail(ALICE, ["carol@remote.test"], message("carol@remote.test", "relay me"),
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    wait_for(lambda: sink.messages, what="sink got the message")
    assert "NOTIFY" not in " ".join(sink.commands)  # never sent to a non-DSN server
    dsn = wait_dsn(srv, "relayed DSN")[0]
    assert "Action: relayed" in dsn
    assert "Final-Recipient: rfc822; carol@remote.test" in dsn
    assert "Remote-MTA: dns; 127.0.0.1" in dsn


def test_dsn_parameters_passed_to_dsn_peer(tern_factory):
    def behaviour(cmd, state):
        if cmd.upper().startswith("EHLO"):
            return "250-sink.test\r\n250-PIPELINING\r\n250-DSN\r\n250 8BITMIME"
        return None
    sink = SmtpSink(behaviour)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})
        with submission(srv) as s:
            s.sendmail(ALICE, ["dave@remote.test"], message("dave@remote.test"),
                       mail_options=["RET=HDRS", "ENVID=a+2Bb"],
                       rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;Dave+2B1@remote.test"])
        m = srv.wait_log(r"([0-9A-F]+): to=<dave@remote.test>, .*status=sent")
        srv.wait_log(r"%s: removed" % m.group(1))
        mail = [c for c in sink.commands if c.upper().startswith("MAIL")][0]
        rcpt = [c for c in sink.commands if c.upper().startswith("RCPT")][0]
        assert " RET=HDRS" in mail and " ENVID=a+2Bb" in mail
        assert rcpt == "RCPT TO:<dave@remote.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Dave+2B1@remote.test"
        # the next hop reports success now, not us
        assert "%s: sender delivery status notification" % m.group(1) not in srv.log_text()
    finally:
        sink.close()


def test_delay_warning_once(tern_factory):
    sink = SmtpSink(lambda cmd, st: "451 4.3.0 try again later" if cmd.upper().startswith("RCPT")
                    else None)
    try:
        srv = tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port,
                            "queue.delay_warning_time": "1", "queue.retry_min": "1",
                            "queue.retry_max": "1"})
        with submission(srv) as s:
            s.sendmail(ALICE, ["slow@remote.test"], message("slow@remote.test", "slow one"),
                       rcpt_options=["NOTIFY=DELAY,FAILURE"])
        m = srv.wait_log(r"([0-9A-F]+): sender delay notification: [0-9A-F]+", timeout=20)
        qid = m.group(1)
        dsn = wait_dsn(srv, "delay DSN")[0]
        assert "Subject: Delayed Mail (still being retried)" in dsn
        assert "Action: delayed" in dsn
        # two more attempts after the warning: still exactly one warning
        since = srv.log_offset()
        srv.wait_log(r"%s: to=<slow@remote.test>, .*status=deferred" % qid, since=since, timeout=20)
        since = srv.log_offset()
        srv.wait_log(r"%s: to=<slow@remote.test>, .*status=deferred" % qid, since=since, timeout=20)
        assert srv.log_text().count("%s: sender delay notification" % qid) == 1
        srv.cli("queue", "delete", qid)
    finally:
        sink.close()


def test_swaks_dsn_options(tern):
    """swaks sees DSN and ETRN in the port-25 EHLO reply."""
    r = subprocess.run(["swaks", "--server", "%s:%d" % (tern.host, tern.ports["smtp"]),
                        "--ehlo", "client.test", "--from", "x@remote.test",
                        "--to", "bob@example.test", "--quit-after", "EHLO"],
                       capture_output=True, text=True, timeout=30)
    assert "250-DSN" in r.stdout and "250-ETRN" in r.stdout, r.stdout
