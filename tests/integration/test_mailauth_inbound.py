"""
test_mailauth_inbound.py - mail from strangers on port 25 (issue 12): SPF at MAIL/RCPT,
DKIM verification of signatures made by independent signers (dkimpy, OpenDKIM's
opendkim-testmsg), DMARC (alignment, p/sp, the organizational domain from the PSL), our
Authentication-Results on every accepted message with forged ones removed, the policies
(550 5.7.1, Junk, 550 5.7.23 at RCPT) and DNS failures giving 451, never a silent pass.
"""

import smtplib
import subprocess

import pytest

from outbound_util import SERVFAIL, DnsServer
from tern_util import maildir_messages, wait_for

dkim = pytest.importorskip("dkim")


def rsa_key(tmp_path, name):
    path = tmp_path / (name + ".pem")
    subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    return path, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    import base64
    import nacl.signing
    d = tmp_path_factory.mktemp("keys")
    sk = nacl.signing.SigningKey.generate()
    ed = (base64.b64encode(bytes(sk)),
          "v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(sk.verify_key)).decode())
    return {"good": rsa_key(d, "good"), "ed25519": ed}


def message(frm, subject="hello", extra=""):
    return ("From: %s\r\nTo: bob@example.test\r\nSubject: %s\r\nDate: Mon, 1 Jan 2024 "
            "00:00:00 +0000\r\nMessage-ID: <%s@x>\r\n%s\r\nThe body text.\r\n"
            % (frm, subject, subject.replace(" ", "."), extra)).encode()


def dkimpy_sign(msg, selector, domain, key_path):
    sig = dkim.sign(msg, selector.encode(), domain.encode(), key_path.read_bytes(),
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + msg


@pytest.fixture
def dns(keys):
    d = DnsServer({
        # signer.test: DKIM key, SPF allows loopback, DMARC reject
        ("sel._domainkey.signer.test", "TXT"): [keys["good"][1]],
        ("ed._domainkey.signer.test", "TXT"): [keys["ed25519"][1]],
        ("signer.test", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        ("_dmarc.signer.test", "TXT"): ["v=DMARC1; p=reject; rua=mailto:d@signer.test"],
        # strict.test: SPF -all, DMARC reject
        ("strict.test", "TXT"): ["v=spf1 -all"],
        ("_dmarc.strict.test", "TXT"): ["v=DMARC1; p=reject"],
        # quar.test: no SPF, DMARC quarantine
        ("quar.test", "TXT"): ["v=spf1 ?all"],
        ("_dmarc.quar.test", "TXT"): ["v=DMARC1; p=quarantine"],
        # broken.test: the DMARC lookup fails (SERVFAIL)
        ("broken.test", "TXT"): ["v=spf1 ?all"],
        ("_dmarc.broken.test", "TXT"): [SERVFAIL],
        # the org domain of sub.org.co.uk is org.co.uk (co.uk is a public suffix)
        ("_dmarc.org.co.uk", "TXT"): ["v=DMARC1; p=none; sp=reject; adkim=r"],
        ("sel._domainkey.org.co.uk", "TXT"): [keys["good"][1]],
        ("_dmarc.strictorg.test", "TXT"): ["v=DMARC1; p=reject; adkim=s; aspf=s"],
        ("sel._domainkey.strictorg.test", "TXT"): [keys["good"][1]],
    })
    yield d
    d.close()


@pytest.fixture
def srv(tern_factory, dns):
    return tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port, "mailauth.verify": "yes"})


def send(srv, frm, data, rcpts=("bob@example.test",)):
    with smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example")
        s.sendmail(frm, list(rcpts), data)


def delivered(srv, user="bob@example.test", folder=None):
    box = srv.maildir(user)
    if folder:
        box = box / ("." + folder)
    wait_for(lambda: maildir_messages(box), what="a delivered message")
    return open(maildir_messages(box)[-1], "rb").read()


def ar_of(data):
    """The Authentication-Results fields of a message (Maildir files have LF line ends),
    unfolded."""
    data = data.replace(b"\r\n", b"\n")
    head = data.split(b"\n\n", 1)[0].replace(b"\n\t", b" ").replace(b"\n ", b" ")
    return [l.decode() for l in head.split(b"\n") if l.startswith(b"Authentication-Results:")]


def test_dkimpy_signed_passes_and_forged_ar_removed(srv, keys):
    forged = ("Authentication-Results: mail.example.test; dkim=pass header.d=paypal.example\r\n"
              "Authentication-Results: other.example; spf=pass smtp.mailfrom=a@b.example\r\n")
    msg = dkimpy_sign(message("Alice <alice@signer.test>", "signed"), "sel", "signer.test",
                      keys["good"][0])
    msg = forged.encode() + msg
    send(srv, "alice@signer.test", msg)
    data = delivered(srv)
    ars = ar_of(data)
    assert len(ars) == 2, ars  # ours, and the foreign one kept
    ours = ars[0]
    assert ours.startswith("Authentication-Results: mail.example.test;")
    assert "dkim=pass (2048-bit key) header.d=signer.test" in ours
    assert "header.s=sel header.a=rsa-sha256 header.b=" in ours
    assert "spf=pass" in ours and "smtp.mailfrom=alice@signer.test" in ours
    assert "dmarc=pass (p=reject dis=none) header.from=signer.test" in ours
    assert "paypal" not in data.decode(errors="replace")
    assert "other.example; spf=pass" in ars[1]
    srv.wait_log(r"tern/mailauth\[\d+\]: [0-9A-F]+: spf=pass dkim=pass \(1 of 1 signatures\) "
                 r"arc=none dmarc=pass header\.from=signer\.test p=reject")
    srv.wait_log(r"removed 1 forged Authentication-Results field")
    # dkimpy agrees: the stored copy (trace headers and our A-R added) still verifies
    assert dkim.verify(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
                       dnsfunc=lambda n, timeout=5: keys["good"][1].encode()) is True


def test_altered_signed_message_fails_dkim_and_dmarc_rejects(srv, keys):
    msg = dkimpy_sign(message("alice@signer.test", "altered"), "sel", "signer.test",
                      keys["good"][0]).replace(b"The body", b"A body")
    # sent from a stranger's domain in MAIL FROM: SPF does not align, DKIM fails
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, "x@quar.test", msg)
    assert e.value.smtp_code == 550
    assert b"5.7.1" in e.value.smtp_error and b"DMARC" in e.value.smtp_error
    srv.wait_log(r"reject: END-OF-MESSAGE from .*: 550 5\.7\.1 .*; from=<x@quar\.test>")
    srv.wait_log(r"dkim=fail \(0 of 1 signatures\) arc=none dmarc=fail header\.from=signer\.test")


def test_quarantine_goes_to_junk(srv):
    send(srv, "x@quar.test", message("x@quar.test", "junk me"))
    data = delivered(srv, folder="Junk")
    ar = ar_of(data)[0]
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=quar.test" in ar
    assert "spf=neutral" in ar and "dkim=none" in ar
    srv.wait_log(r"filed to Junk")


def test_dns_failure_defers(srv):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, "x@broken.test", message("x@broken.test", "tempfail"))
    assert e.value.smtp_code == 451 and b"4.7.5" in e.value.smtp_error
    assert maildir_messages(srv.maildir("bob@example.test")) == []


def test_subdomain_policy_and_psl(srv, keys):
    # sub.org.co.uk has no record; org.co.uk (the PSL's organizational domain) says sp=reject
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, "x@quar.test", message("x@sub.org.co.uk", "sub"))
    assert e.value.smtp_code == 550
    # a DKIM signature of the organizational domain aligns (relaxed) with the subdomain
    msg = dkimpy_sign(message("x@sub.org.co.uk", "aligned"), "sel", "org.co.uk", keys["good"][0])
    send(srv, "x@quar.test", msg)
    ar = ar_of(delivered(srv))[0]
    assert "dmarc=pass (p=reject dis=none) header.from=sub.org.co.uk" in ar


def test_strict_alignment(srv, keys):
    msg = dkimpy_sign(message("x@mail.strictorg.test", "strict"), "sel", "strictorg.test",
                      keys["good"][0])
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(srv, "x@quar.test", msg)
    assert e.value.smtp_code == 550  # adkim=s: d=strictorg.test does not align


def test_spf_reject_policy_at_rcpt(tern_factory, dns):
    srv = tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port, "mailauth.verify": "yes",
                        "mailauth.spf_policy.example.test": "reject"})
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send(srv, "x@strict.test", message("x@strict.test", "spf"))
    code, text = e.value.recipients["bob@example.test"]
    assert code == 550 and b"5.7.23" in text
    srv.wait_log(r"NOQUEUE: reject: RCPT from .*: 550 5\.7\.23 <bob@example\.test>: Recipient "
                 r"address rejected: SPF fail")
    srv.wait_log(r"tern/policy-spf\[\d+\]: NOQUEUE: SPF fail \(strict\.test: -all\)")


def test_mark_policy_and_authenticated_mail_unchecked(tern_factory, dns):
    srv = tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port, "mailauth.verify": "yes",
                        "mailauth.dmarc_policy": "mark"})
    send(srv, "x@strict.test", message("x@strict.test", "marked"))
    ar = ar_of(delivered(srv))[0]
    assert "spf=fail" in ar and "dmarc=fail (p=reject dis=reject)" in ar
    # mail our users submit gets no A-R from us (they authenticated)
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=15) as s:
        s.login("alice@example.test", "alicepw")
        s.sendmail("alice@example.test", ["alice@example.test"],
                   message("alice@example.test", "own"))
    data = delivered(srv, "alice@example.test")
    assert ar_of(data) == []


@pytest.mark.skipif(subprocess.run(["which", "opendkim-testmsg"], capture_output=True).returncode,
                    reason="opendkim-tools not installed")
def test_opendkim_testmsg_signature(srv, keys):
    """opendkim-testmsg can only sign with rsa-sha1 (c=relaxed/simple), which RFC 8301 §3.1
    forbids verifiers to accept: Tern must say permerror with that reason, not pass, and
    still decide DMARC from SPF."""
    msg = message("Alice <alice@signer.test>", "from opendkim")
    cp = subprocess.run(["opendkim-testmsg", "-C", "-d", "signer.test", "-s", "sel", "-k",
                         str(keys["good"][0])], input=msg, capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    signed = cp.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"a=rsa-sha1" in signed
    send(srv, "alice@signer.test", signed)
    ar = ar_of(delivered(srv))[0]
    assert "dkim=permerror (rsa-sha1 is not accepted ?RFC 8301?) header.d=signer.test" in ar
    assert "dmarc=pass" in ar  # SPF aligned


def test_dkimpy_ed25519_and_simple_canonicalization(srv, keys):
    """Two signatures by dkimpy, Ed25519 (RFC 8463) and RSA, both simple/simple."""
    msg = message("Alice <alice@signer.test>", "ed25519 and simple")
    ed = dkim.sign(msg, b"ed", b"signer.test", keys["ed25519"][0],
                   canonicalize=(b"simple", b"simple"), signature_algorithm=b"ed25519-sha256",
                   include_headers=[b"from", b"to", b"subject"])
    rsa = dkim.sign(msg, b"sel", b"signer.test", keys["good"][0].read_bytes(),
                    canonicalize=(b"simple", b"simple"),
                    include_headers=[b"from", b"to", b"subject"])
    crlf = lambda b: b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    send(srv, "alice@signer.test", crlf(ed) + crlf(rsa) + msg)
    ar = ar_of(delivered(srv))[0]
    assert "dkim=pass (256-bit key) header.d=signer.test header.i=@signer.test header.s=ed " \
           "header.a=ed25519-sha256" in ar, ar
    assert "header.s=sel header.a=rsa-sha256" in ar
    assert ar.count("dkim=pass") == 2


def test_auth_check_cli(srv, keys):
    msg = dkimpy_sign(message("alice@signer.test", "cli"), "sel", "signer.test", keys["good"][0])
    cp = srv.cli("auth", "check", "--ip", "127.0.0.1", "--helo", "client.example",
                 "--mail-from", "alice@signer.test", input=msg.decode())
    out = cp.stdout.replace("\r\n\t", " ")
    assert out.startswith("Authentication-Results: mail.example.test;")
    assert "dkim=pass" in out and "spf=pass" in out and "dmarc=pass" in out
    cp = srv.cli("auth", "check", "--ip", "192.0.2.9", "--mail-from", "x@strict.test",
                 input=message("x@strict.test", "cli2").decode())
    assert "spf=fail" in cp.stdout and "dmarc=fail (p=reject dis=reject)" in cp.stdout


@pytest.fixture
def fwd(tern_factory, dns):
    """A server whose alias fwd@example.test forwards to a remote sink."""
    from outbound_util import SmtpSink
    sink = SmtpSink()
    srv = tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port, "mailauth.verify": "yes",
                        "transport.remote.test": "[127.0.0.1]:%d" % sink.port})
    srv.cli("alias", "add", "fwd@example.test", "carol@remote.test")
    yield srv, sink
    sink.close()


def test_forward_is_arc_sealed_and_dkimpy_validates(fwd, keys):
    from mailauth_util import keygen
    srv, sink = fwd
    recs = keygen(srv, "example.test", "arc", "--rsa")
    msg = dkimpy_sign(message("Alice <alice@signer.test>", "forwarded").replace(
        b"To: bob@example.test", b"To: fwd@example.test"), "sel", "signer.test", keys["good"][0])
    send(srv, "alice@signer.test", msg, rcpts=("fwd@example.test",))
    wait_for(lambda: sink.messages, what="the forwarded copy")
    data = sink.messages[0]["data"]
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"ARC-Seal: i=1; a=rsa-sha256;")
    assert b"cv=none" in head and b"ARC-Message-Signature: i=1;" in head
    assert b"ARC-Authentication-Results: i=1; mail.example.test;" in head
    srv.wait_log(r"dmarc=pass header\.from=signer\.test p=reject, ARC-sealed")

    def dnsfunc(name, timeout=5):
        name = name.decode().rstrip(".")
        table = {"arc._domainkey.example.test": recs["arc._domainkey.example.test"],
                 "sel._domainkey.signer.test": keys["good"][1]}
        return table.get(name, "").encode() or None

    cv, results, comment = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv == b"pass", (cv, results, comment)
    # the original DKIM signature survived the forward too
    assert dkim.verify(data, dnsfunc=dnsfunc)


def test_dkimpy_arc_chain_passes_in_tern(srv, keys):
    msg = message("Alice <alice@signer.test>", "arc from dkimpy")
    msg = b"Authentication-Results: lists.signer.test; spf=pass smtp.mailfrom=a@signer.test\r\n" + msg
    lines = dkim.arc_sign(msg, b"sel", b"signer.test", keys["good"][0].read_bytes(),
                          b"lists.signer.test", include_headers=[b"from", b"to", b"subject"])
    sealed = b"".join(l.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for l in lines) + msg
    send(srv, "alice@signer.test", sealed)
    ar = ar_of(delivered(srv))[0]
    assert "arc=pass (i=1, d=signer.test)" in ar, ar
    # and a modified body breaks it
    send(srv, "alice@signer.test", sealed.replace(b"The body", b"Their body"))
    wait_for(lambda: len(maildir_messages(srv.maildir("bob@example.test"))) == 2,
             what="the second message")
    ars = [ar_of(open(p, "rb").read())[0] for p in maildir_messages(srv.maildir("bob@example.test"))]
    assert any("arc=fail" in a for a in ars), ars
