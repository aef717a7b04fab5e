"""Milters (issue 13) against real filters: rspamd in milter-proxy mode and OpenDKIM, both
started by the tests on loopback in temporary folders (milter_util.py).

rspamd rejects the GTUBE test message with its reply, passes a normal one with its
headers added, and when it is down the milter default action applies (tempfail, or
accept when configured). OpenDKIM signs mail submitted on 587 and through `tern
sendmail`; opendkim-testmsg verifies the signature of the delivered copy.
"""
import os
import re
import smtplib
import tempfile

import pytest

from conftest import free_ports
from milter_util import OpenDkim, Rspamd, opendkim_testmsg_verify
from tern_util import maildir_messages, send_mail, wait_for

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def rspamd():
    r = Rspamd()
    yield r
    r.close()


@pytest.fixture(scope="module")
def opendkim():
    d = OpenDkim()
    yield d
    d.close()


def _delivered(srv, user, n=1):
    return wait_for(lambda: len(maildir_messages(srv.maildir(user))) >= n and
                    maildir_messages(srv.maildir(user)), what=f"{n} message(s) for {user}")


def test_rspamd_rejects_gtube_and_passes_normal_mail(tern_factory, rspamd):
    srv = tern_factory({"smtp.milters": rspamd.address})
    with smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=60) as s:
        s.ehlo("client.example")
        s.mail("sender@remote.example")
        s.rcpt("alice@example.test")
        code, text = s.data(f"From: sender@remote.example\r\nTo: alice@example.test\r\n"
                            f"Subject: gtube\r\n\r\n{GTUBE}\r\n".encode())
    assert code == 554 and b"Gtube pattern" in text, (code, text)
    srv.wait_log(r"milter-reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: milter "
                 r"inet:127\.0\.0\.1:\d+: 554 5\.7\.1 Gtube pattern")
    assert maildir_messages(srv.maildir("alice@example.test")) == []

    code, _ = send_mail(srv, "sender@remote.example", "alice@example.test",
                        "A perfectly normal message about lunch.\n")
    assert code == 250
    text = open(_delivered(srv, "alice@example.test")[0], "rb").read().decode()
    head = text.split("\r\n\r\n", 1)[0]
    assert "X-Spamd-Result: default: False" in head, head
    assert "X-Rspamd-Queue-Id:" in head and "X-Spam-Status: No" in head, head
    assert "A perfectly normal message about lunch." in text


def test_rspamd_on_local_submission(tern_factory, rspamd):
    """sendmail.milters (non_smtpd_milters): GTUBE through `tern sendmail` exits 69."""
    srv = tern_factory({"sendmail.milters": rspamd.address})
    r = srv.cli("sendmail", "-f", "alice@example.test", "bob@example.test",
                input=f"Subject: gtube\n\n{GTUBE}\n", check=False)
    assert r.returncode == 69 and "Gtube pattern" in r.stderr, (r.returncode, r.stderr)
    r = srv.cli("sendmail", "-f", "alice@example.test", "bob@example.test",
                input="Subject: hello\n\nJust a note.\n", check=False)
    assert r.returncode == 0, r.stderr
    text = open(_delivered(srv, "bob@example.test")[0], "rb").read().decode()
    assert "X-Spamd-Result:" in text


@pytest.mark.parametrize("default_action", ["tempfail", "accept"])
def test_milter_down_gives_default_action(tern_factory, default_action):
    dead = free_ports(1)[0]  # nothing listens there
    srv = tern_factory({"smtp.milters": f"inet:127.0.0.1:{dead}",
                        "milter.default_action": default_action})
    if default_action == "tempfail":
        # the milter is asked at connect (as Postfix does): the session is refused there
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=60)
        assert e.value.smtp_code == 421 and e.value.smtp_error.startswith(b"4.7.1"), e.value
    else:
        with smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=60) as s:
            s.ehlo("client.example")
            s.mail("sender@remote.example")
            s.rcpt("alice@example.test")
            code, text = s.data(b"Subject: x\r\n\r\nbody\r\n")
        assert code == 250
        _delivered(srv, "alice@example.test")
    srv.wait_log(rf"milter inet:127\.0\.0\.1:{dead}: cannot connect; default action "
                 rf"{default_action}")
    if default_action == "tempfail":
        assert maildir_messages(srv.maildir("alice@example.test")) == []


def test_milter_settings_of_its_own(tern_factory):
    """A milter's own settings in its list item replace the milter.* ones for it alone
    (Postfix's per-milter overrides): a dead milter marked default_action=accept is
    skipped while the global default stays tempfail."""
    dead = free_ports(1)[0]
    srv = tern_factory({"smtp.milters": f"inet:127.0.0.1:{dead};default_action=accept;"
                                        f"connect_timeout=5;command_timeout=7",
                        "milter.default_action": "tempfail"})
    with smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=60) as s:
        s.ehlo("client.example")
        s.mail("sender@remote.example")
        s.rcpt("alice@example.test")
        code, _ = s.data(b"Subject: x\r\n\r\nbody\r\n")
    assert code == 250
    _delivered(srv, "alice@example.test")
    srv.wait_log(rf"milter inet:127\.0\.0\.1:{dead}: cannot connect; default action accept")
    # a bad setting stops start-up with the file, line and reason
    bad = tern_factory({"smtp.milters": f"inet:127.0.0.1:{dead};default_action=maybe"},
                       provision=False, start=False)
    r = bad.cli("config", "check", check=False)
    assert r.returncode != 0, r
    assert re.search(r"tern\.conf:\d+: bad milter address .*default_action=maybe", r.stderr), r.stderr


def test_opendkim_signs_submission_and_sendmail(tern_factory, opendkim):
    if os.geteuid() != 0:
        pytest.skip("the DKIM check runs opendkim-testmsg in a private network namespace")
    srv = tern_factory({"submission.milters": opendkim.address,
                        "sendmail.milters": opendkim.address})
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=60) as s:
        s.ehlo("client.example")
        s.login("alice@example.test", "alicepw")
        s.sendmail("alice@example.test", ["bob@example.test"],
                   b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
                   b"Subject: signed\r\nDate: Sun, 06 Dec 2026 12:00:00 +0000\r\n"
                   b"Message-ID: <signed.1@example.test>\r\n\r\nSigned by OpenDKIM.\r\n")
    r = srv.cli("sendmail", "-f", "alice@example.test", "bob@example.test",
                input="From: alice@example.test\nTo: bob@example.test\nSubject: local\n\n"
                      "Signed on the way out of tern sendmail.\n", check=False)
    assert r.returncode == 0, r.stderr
    files = _delivered(srv, "bob@example.test", 2)
    for path in files:
        text = open(path, "rb").read().decode()
        assert "DKIM-Signature:" in text and "d=example.test" in text and "s=test" in text, text
        code, out = opendkim_testmsg_verify(path, opendkim.public_txt)
        assert code == 0, out
    # the check can fail: a changed body no longer verifies
    with tempfile.TemporaryDirectory() as tmp:
        tampered = os.path.join(tmp, "tampered.eml")
        with open(files[0], "rb") as f, open(tampered, "wb") as g:
            g.write(f.read().replace(b"Signed by OpenDKIM.", b"Signed by someone else."))
        code, out = opendkim_testmsg_verify(tampered, opendkim.public_txt)
    assert code != 0, out
