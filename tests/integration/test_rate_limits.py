"""Rate limits per client address and per authenticated user (issue 13; Postfix's anvil):
connections answered 421 4.7.0, messages and recipients 450 4.7.1, each logged; a refused
event is not counted; relay_networks are exempt. The window is left at 60 s and the
limits are small, so nothing here depends on time passing."""
import smtplib
import subprocess

from tern_util import sasl_plain


def swaks(srv, *args):
    return subprocess.run(["swaks", "--server", f"{srv.host}:{srv.ports['smtp']}",
                           "--from", "sender@remote.example", "--to", "alice@example.test",
                           "--timeout", "30", *args], capture_output=True, text=True, timeout=60)


def test_connection_rate_limit(tern_factory):
    srv = tern_factory({"ratelimit.connections": 2})
    for _ in range(2):
        r = swaks(srv)
        assert r.returncode == 0, r.stdout
    r = swaks(srv)
    assert "421 4.7.0 mail.example.test Error: too many connections from 127.0.0.1" in r.stdout
    srv.wait_log(r"warning: Connection rate limit exceeded: 3 from localhost\[127\.0\.0\.1\] "
                 r"for service smtp")


def test_message_and_recipient_rate_limits(tern_factory):
    srv = tern_factory({"ratelimit.messages": 2, "ratelimit.recipients": 3})
    with smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example")
        for i in range(2):
            assert s.mail("sender@remote.example")[0] == 250
            assert s.rcpt("alice@example.test")[0] == 250
            assert s.data(b"Subject: %d\r\n\r\nhi\r\n" % i)[0] == 250
        code, text = s.mail("sender@remote.example")
        assert (code, text) == (450, b"4.7.1 Error: too much mail from 127.0.0.1")
    srv.wait_log(r"warning: Message delivery request rate limit exceeded: 3 from "
                 r"localhost\[127\.0\.0\.1\] for service smtp")
    srv2 = tern_factory({"ratelimit.recipients": 3})
    with smtplib.SMTP(srv2.host, srv2.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example")
        s.mail("sender@remote.example")
        codes = [s.rcpt(r)[0] for r in ("alice@example.test", "bob@example.test",
                                        "nobody@example.test", "alice@example.test")]
        # the unknown user counts too (Postfix: "regardless of whether ... accepts")
        assert codes == [250, 250, 550, 450], codes
        code, text = s.rcpt("bob@example.test")
        assert (code, text) == (450, b"4.7.1 Error: too many recipients from 127.0.0.1")
        # the message still goes to the accepted recipients
        assert s.data(b"Subject: x\r\n\r\nhi\r\n")[0] == 250


def test_user_limit_and_exemption(tern_factory):
    srv = tern_factory({"ratelimit.user_messages": 1})
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        s.login("alice@example.test", "alicepw")
        assert s.mail("alice@example.test")[0] == 250
        s.rset()
        assert s.mail("alice@example.test") == (450, b"4.7.1 Error: too much mail from "
                                                      b"alice@example.test")
    srv.wait_log(r"Message delivery request rate limit exceeded: 2 from localhost\[127\.0\.0\.1\]"
                 r" for user alice@example\.test, service submission")
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        s.docmd("AUTH", "PLAIN " + sasl_plain("bob@example.test", "bobpw"))
        assert s.mail("bob@example.test")[0] == 250
    # relay_networks are exempt
    srv3 = tern_factory({"ratelimit.connections": 1, "relay_networks": "127.0.0.0/8"})
    for _ in range(3):
        assert swaks(srv3).returncode == 0
