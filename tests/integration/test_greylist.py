"""Greylisting (issue 13): off by default; when on, a new (client network, sender,
recipient) triplet gets 450 4.7.1 and the retry passes (greylist.delay = 0 here, so the
test waits for nothing); the client network joins the pass list after greylist.auto_pass
passes; authenticated and trusted clients are never greylisted; the state is in SQLite
and survives a restart."""
import smtplib


def attempt(srv, sender, rcpt, port="smtp"):
    with smtplib.SMTP(srv.host, srv.ports[port], timeout=30) as s:
        s.ehlo("client.example")
        s.mail(sender)
        code, text = s.rcpt(rcpt)
        if code == 250:
            assert s.data(b"Subject: grey\r\n\r\nhello\r\n")[0] == 250
        return code, text.decode()


def test_off_by_default(tern):
    assert attempt(tern, "a@remote.example", "alice@example.test")[0] == 250


def test_new_triplet_deferred_retry_passes(tern_factory):
    srv = tern_factory({"greylist.enabled": "yes", "greylist.delay": 0,
                        "greylist.auto_pass": 2})
    code, text = attempt(srv, "a@remote.example", "alice@example.test")
    assert code == 450 and text.startswith("4.7.1 <alice@example.test>: Recipient address "
                                           "rejected: Greylisted"), (code, text)
    srv.wait_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 450 4\.7\.1 "
                 r"<alice@example\.test>: Recipient address rejected: Greylisted")
    assert attempt(srv, "a@remote.example", "alice@example.test")[0] == 250
    assert attempt(srv, "a@remote.example", "alice@example.test")[0] == 250
    # another triplet is greylisted; once it passes, the network has two passes
    assert attempt(srv, "b@remote.example", "bob@example.test")[0] == 450
    assert attempt(srv, "b@remote.example", "bob@example.test")[0] == 250
    # ... and is on the pass list: a brand-new triplet passes at once
    assert attempt(srv, "c@elsewhere.example", "alice@example.test")[0] == 250
    # the state survives a restart
    srv.stop()
    srv.start()
    assert attempt(srv, "d@new.example", "bob@example.test")[0] == 250


def test_authenticated_and_trusted_are_exempt(tern_factory):
    srv = tern_factory({"greylist.enabled": "yes", "greylist.delay": 0})
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        s.login("bob@example.test", "bobpw")
        s.mail("bob@example.test")
        assert s.rcpt("alice@example.test")[0] == 250
    srv2 = tern_factory({"greylist.enabled": "yes", "relay_networks": "127.0.0.0/8"})
    assert attempt(srv2, "a@remote.example", "alice@example.test")[0] == 250
