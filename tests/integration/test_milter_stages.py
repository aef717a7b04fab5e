"""Milter stages at their SMTP commands (issue 13), as Postfix's smtpd asks them: connect
before the banner, helo at EHLO, mail at MAIL FROM, rcpt at each RCPT TO, the message
stages after DATA, all over one conversation per milter and session.

The milter is ScriptedMilter (milter_util.py): a small milter written for the tests that
records what it received and answers each stage as told, so a test can see that a stage
reached the milter before the SMTP reply to its command, and that a refusal is the reply
to that command. Real rspamd and OpenDKIM run over the same code in test_milter.py.
"""
import smtplib
import threading

import pytest

from milter_util import ScriptedMilter
from tern_util import maildir_messages, wait_for

MSG = b"From: sender@remote.example\r\nTo: alice@example.test\r\nSubject: stages\r\n\r\nhello\r\n"


@pytest.fixture
def milter_factory():
    made = []

    def make(actions=None):
        m = ScriptedMilter(actions)
        made.append(m)
        return m
    yield make
    for m in made:
        m.close()


def _smtp(srv):
    return smtplib.SMTP(srv.host, srv.ports["smtp"], local_hostname="client.example",
                        timeout=60)


@pytest.mark.parametrize("master_process", ["yes", "no"])
def test_each_stage_at_its_command(tern_factory, milter_factory, master_process):
    m = milter_factory()
    srv = tern_factory({"smtp.milters": m.address, "master_process": master_process})
    with _smtp(srv) as s:
        # the connect stage ran before the banner, with the client's macros
        (conn_ev,) = m.find("connect")
        assert conn_ev[3].get("{client_addr}") == "127.0.0.1", conn_ev
        assert m.stages() == ["connect"]
        s.ehlo()
        assert m.find("helo", "client.example")
        s.mail("sender@remote.example")
        (mail_ev,) = m.find("mail")
        assert mail_ev[2] == "<sender@remote.example>"
        assert mail_ev[3].get("{mail_addr}") == "sender@remote.example", mail_ev
        assert "data" not in m.stages()
        s.rcpt("alice@example.test")
        (rcpt_ev,) = m.find("rcpt")
        assert rcpt_ev[3].get("{rcpt_addr}") == "alice@example.test", rcpt_ev
        assert "data" not in m.stages()
        code, _ = s.data(MSG)
        assert code == 250
        stages = m.stages()
        assert stages[:4] == ["connect", "helo", "mail", "rcpt"], stages
        assert stages[4:] == ["data", "header", "header", "header", "eoh", "body", "eom"], stages
        # a second transaction in the same session: the same conversation goes on
        s.mail("other@remote.example")
        s.rcpt("alice@example.test")
        code, _ = s.data(MSG)
        assert code == 250
    wait_for(lambda: "quit" in m.stages(), what="QUIT to the milter")
    assert m.n == 1, "one conversation per session"
    assert {e[0] for e in m.events} == {1}
    assert m.stages().count("mail") == 2 and m.stages().count("eom") == 2
    wait_for(lambda: len(maildir_messages(srv.maildir("alice@example.test"))) == 2,
             what="two messages delivered")


def test_reject_at_connect_refuses_the_session(tern_factory, milter_factory):
    m = milter_factory({"connect": "reject"})
    srv = tern_factory({"smtp.milters": m.address})
    s = smtplib.SMTP(timeout=60)
    code, text = s.connect(srv.host, srv.ports["smtp"])
    assert code == 554 and text.startswith(b"5.7.1"), (code, text)
    # RFC 5321 §3.1: every command but QUIT gets 503
    assert s.ehlo("client.example")[0] == 503
    assert s.docmd("MAIL", "FROM:<sender@remote.example>")[0] == 503
    assert s.docmd("RCPT", "TO:<alice@example.test>")[0] == 503
    assert s.quit()[0] == 221
    srv.wait_log(r"NOQUEUE: milter-reject: CONNECT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1")
    assert m.stages(1) == ["connect", "quit"] or m.stages(1) == ["connect"]


def test_tempfail_at_connect_is_421(tern_factory, milter_factory):
    m = milter_factory({"connect": "tempfail"})
    srv = tern_factory({"smtp.milters": m.address})
    with pytest.raises(smtplib.SMTPConnectError) as e:
        _smtp(srv)
    assert e.value.smtp_code == 421 and e.value.smtp_error.startswith(b"4.7.1"), e.value


def test_helo_refusal_is_the_helo_reply(tern_factory, milter_factory):
    m = milter_factory({"helo": "550 5.7.1 not with that name"})
    srv = tern_factory({"smtp.milters": m.address})
    with _smtp(srv) as s:
        code, text = s.ehlo("bad.example")
        assert (code, text) == (550, b"5.7.1 not with that name")
        # the milter refused the session at helo: it repeats its refusal at MAIL
        s.helo("bad.example")
        code, text = s.docmd("MAIL", "FROM:<sender@remote.example>")
        assert code in (503, 550), (code, text)
    srv.wait_log(r"milter-reject: EHLO from localhost\[127\.0\.0\.1\]: 550 5\.7\.1 not with "
                 r"that name")


def test_mail_refusal_then_a_new_transaction(tern_factory, milter_factory):
    m = milter_factory({"mail:<spam@remote.example>": "reject"})
    srv = tern_factory({"smtp.milters": m.address})
    with _smtp(srv) as s:
        s.ehlo()
        code, text = s.mail("spam@remote.example")
        assert (code, text) == (550, b"5.7.1 Command rejected")
        assert s.rcpt("alice@example.test")[0] == 503  # no transaction
        assert s.mail("ham@remote.example")[0] == 250
        # the refused message was closed before the new MAIL
        stages = m.stages()
        assert stages[stages.index("mail"):] == ["mail", "abort", "mail"], stages
        assert s.rcpt("alice@example.test")[0] == 250
        assert s.rset()[0] == 250
        wait_for(lambda: m.stages()[-1] == "abort", what="RSET aborts the milter's message")
    srv.wait_log(r"NOQUEUE: milter-reject: MAIL from localhost\[127\.0\.0\.1\]: 550 5\.7\.1 "
                 r"Command rejected; from=<spam@remote\.example>")


def test_rcpt_refusal_answers_that_recipient_only(tern_factory, milter_factory):
    m = milter_factory({"rcpt:<bob@example.test>": "550 5.7.1 bob takes no mail today",
                        "rcpt:<info@example.test>": "tempfail"})
    srv = tern_factory({"smtp.milters": m.address})
    with _smtp(srv) as s:
        s.ehlo()
        s.mail("sender@remote.example")
        assert s.rcpt("bob@example.test") == (550, b"5.7.1 bob takes no mail today")
        code, text = s.rcpt("info@example.test")
        assert code == 451 and text.startswith(b"4.7.1"), (code, text)
        assert s.rcpt("alice@example.test")[0] == 250
        code, _ = s.data(MSG)
        assert code == 250
    wait_for(lambda: maildir_messages(srv.maildir("alice@example.test")), what="alice's copy")
    assert maildir_messages(srv.maildir("bob@example.test")) == []
    srv.wait_log(r"milter-reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.7\.1 bob takes no "
                 r"mail today; from=<sender@remote\.example> to=<bob@example\.test>")


def test_discard_at_rcpt_drops_the_message(tern_factory, milter_factory):
    m = milter_factory({"rcpt:<bob@example.test>": "discard"})
    srv = tern_factory({"smtp.milters": m.address})
    with _smtp(srv) as s:
        s.ehlo()
        s.mail("sender@remote.example")
        assert s.rcpt("bob@example.test")[0] == 250
        assert s.rcpt("alice@example.test")[0] == 250
        code, _ = s.data(MSG)
        assert code == 250
    srv.wait_log(r"milter-discard: RCPT from localhost\[127\.0\.0\.1\]")
    srv.wait_log(r"discard: milter discarded it at MAIL or RCPT")
    assert maildir_messages(srv.maildir("alice@example.test")) == []
    assert maildir_messages(srv.maildir("bob@example.test")) == []


def test_milters_in_order(tern_factory, milter_factory):
    """The second milter is asked only what the first let through."""
    first = milter_factory({"rcpt:<bob@example.test>": "reject"})
    second = milter_factory()
    srv = tern_factory({"smtp.milters": f"{first.address}, {second.address}"})
    with _smtp(srv) as s:
        s.ehlo()
        s.mail("sender@remote.example")
        assert s.rcpt("bob@example.test")[0] == 550
        assert s.rcpt("alice@example.test")[0] == 250
        assert s.data(MSG)[0] == 250
    assert [e[2] for e in first.find("rcpt")] == ["<bob@example.test>", "<alice@example.test>"]
    assert [e[2] for e in second.find("rcpt")] == ["<alice@example.test>"]
    assert second.find("eom") and first.find("eom")


@pytest.mark.threads
def test_silent_milter_times_out_without_stopping_other_sessions(tern_factory, milter_factory):
    """A milter that never answers MAIL: its default action after milter.command_timeout,
    and meanwhile the server serves other clients (nothing waits on the event loop)."""
    m = milter_factory({"mail:<slow@remote.example>": "hang"})
    srv = tern_factory({"smtp.milters": m.address, "milter.command_timeout": "3",
                        "milter.default_action": "tempfail"})
    result = {}
    started = threading.Event()

    def slow_client():
        with _smtp(srv) as s:
            s.ehlo()
            started.set()
            result["mail"] = s.mail("slow@remote.example")
            result["rset"] = s.rset()
    t = threading.Thread(target=slow_client)
    t.start()
    try:
        started.wait(30)
        wait_for(lambda: m.find("mail", "<slow@remote.example>"), what="the slow MAIL")
        # while that MAIL waits for its milter, another client is served in full
        with _smtp(srv) as s:
            s.ehlo()
            assert s.mail("quick@remote.example")[0] == 250
            assert s.rcpt("alice@example.test")[0] == 250
            assert s.data(MSG)[0] == 250
        assert "mail" not in result, "the quick client finished first"
    finally:
        t.join(60)
    code, text = result["mail"]
    assert code == 451 and text.startswith(b"4.7.1"), result
    srv.wait_log(rf"milter inet:127\.0\.0\.1:{m.port}: timeout; default action tempfail")


def test_macros_of_an_authenticated_submission(tern_factory, milter_factory):
    """submission.milters: {auth_authen} and {auth_type} at MAIL, as Postfix sends them."""
    m = milter_factory()
    srv = tern_factory({"submission.milters": m.address})
    with smtplib.SMTP(srv.host, srv.ports["submission"], local_hostname="client.example",
                      timeout=60) as s:
        s.ehlo()
        s.login("alice@example.test", "alicepw")
        s.mail("alice@example.test")
        (mail_ev,) = m.find("mail")
        assert mail_ev[3].get("{auth_authen}") == "alice@example.test", mail_ev
        assert mail_ev[3].get("{auth_type}") in ("PLAIN", "LOGIN", "CRAM-MD5"), mail_ev
        assert s.rcpt("bob@example.test")[0] == 250
        assert s.data(MSG)[0] == 250


def test_xclient_starts_a_new_conversation(tern_factory, milter_factory):
    """XCLIENT (from auth.trusted_networks) names another client: the milters meet it
    with a new connect stage, its address in the macros, before XCLIENT's 220."""
    m = milter_factory({"connect:client.example": "reject"})
    srv = tern_factory({"smtp.milters": m.address, "auth.trusted_networks": "127.0.0.0/8"})
    with _smtp(srv) as s:
        s.ehlo()
        code, text = s.docmd("XCLIENT", "ADDR=192.0.2.9 NAME=client.example HELO=client.example")
        assert code == 554, (code, text)  # the milter refuses the client XCLIENT named
        assert s.docmd("MAIL", "FROM:<a@remote.example>")[0] == 503
    connects = m.find("connect")
    assert [e[2] for e in connects] == ["localhost", "client.example"], connects
    assert connects[1][3].get("{client_addr}") == "192.0.2.9", connects[1]
    assert connects[0][0] != connects[1][0], "a new connection for the new client"
