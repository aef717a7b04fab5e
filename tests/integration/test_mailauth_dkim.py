"""
test_mailauth_dkim.py - DKIM signing of our users' outgoing mail (issue 12): `tern dkim
keygen/list/retire`, RSA + Ed25519 signatures added at queue time, checked by independent
verifiers (dkimpy, and OpenDKIM's opendkim-testmsg reading DNS in a private network
namespace), altered copies failing, and rotation.
"""

import smtplib
import subprocess

import pytest

from mailauth_util import (dkimpy_verify_all, has_netns, keygen, run_with_private_dns,
                           zone_txt_records)
from outbound_util import SmtpSink
from tern_util import wait_for


@pytest.fixture
def sink():
    s = SmtpSink()
    yield s
    s.close()


@pytest.fixture
def srv(tern_factory, sink):
    return tern_factory({"transport.remote.test": "[127.0.0.1]:%d" % sink.port})


def submit(srv, body="Subject: hi\r\n\r\nhello\r\n", sender="alice@example.test",
           rcpts=("carol@remote.test",)):
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=15) as s:
        s.ehlo("client.test")
        s.login("alice@example.test", "alicepw")
        msg = "From: Alice <%s>\r\nTo: %s\r\n%s" % (sender, ", ".join(rcpts), body)
        s.sendmail(sender, list(rcpts), msg.encode())


def test_keygen_list_retire(srv):
    recs = keygen(srv, "example.test", "s1")
    assert set(recs) == {"s1-rsa._domainkey.example.test", "s1-ed25519._domainkey.example.test"}
    assert recs["s1-rsa._domainkey.example.test"].startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    assert recs["s1-ed25519._domainkey.example.test"].startswith("v=DKIM1; k=ed25519; p=")
    key = srv.data_dir / "dkim" / "example.test" / "s1-rsa.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    out = srv.cli("dkim", "list").stdout.splitlines()
    assert any(l.startswith("example.test s1-rsa rsa 2048 ") and l.endswith(" signing")
               for l in out), out
    assert any(l.startswith("example.test s1-ed25519 ed25519 ") for l in out), out
    # the selector exists: refused, nothing overwritten
    cp = srv.cli("dkim", "keygen", "example.test", "s1", check=False)
    assert cp.returncode == 1 and "exists" in cp.stderr
    # rotation: a second selector is published next to the first; s1 still signs
    keygen(srv, "example.test", "s2", "--rsa")
    out = srv.cli("dkim", "list", "example.test").stdout
    assert "s2 rsa 2048" in out and "s2 rsa 2048" in out.split("published")[0] + "published"
    srv.cli("dkim", "retire", "example.test", "s1-rsa")
    out = srv.cli("dkim", "list", "example.test").stdout
    assert "s1-rsa rsa 2048" in out and "retired" in out
    assert [l for l in out.splitlines() if l.startswith("example.test s2 ")][0].endswith("signing")
    assert srv.cli("dkim", "keygen", "../etc", check=False).returncode != 0
    assert srv.cli("dkim", "retire", "example.test", "nope", check=False).returncode == 1


def test_outgoing_mail_signed_and_verified_by_dkimpy(srv, sink):
    recs = keygen(srv, "example.test", "t1")
    submit(srv, body="Subject: signed\r\nMessage-ID: <m1@example.test>\r\n\r\n"
                     "Hello   world \r\n\r\n\r\n")
    wait_for(lambda: sink.messages, what="the signed message at the sink")
    data = sink.messages[0]["data"]
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"DKIM-Signature:") == 2
    assert b"a=rsa-sha256" in head and b"a=ed25519-sha256" in head
    assert b"d=example.test" in head and b"c=relaxed/relaxed" in head
    # oversigned: From, Subject, To, Date, Message-ID appear once more than in the message
    assert b"From:From" in head.replace(b"\r\n\t", b"")
    assert dkimpy_verify_all(data, recs) == [True, True]
    srv.wait_log(r"tern/dkim\[\d+\]: [0-9A-F]+: DKIM-Signature field added \(d=example\.test\)")
    # altered copies fail
    assert dkimpy_verify_all(data.replace(b"Hello", b"Jello"), recs) == [False, False]
    assert dkimpy_verify_all(data.replace(b"Subject: signed", b"Subject: signeD"),
                             recs) == [False, False]
    assert dkimpy_verify_all(b"Subject: added\r\n" + data, recs) == [False, False]


def test_large_message_signed(srv, sink):
    """Over 1 MiB the body is spilled to a file: signed from the file."""
    recs = keygen(srv, "example.test", "big")
    body = "Subject: big\r\n\r\n" + ("0123456789abcdef " * 4 + "\r\n") * 20000
    submit(srv, body=body)
    wait_for(lambda: sink.messages, what="the large message", timeout=30)
    assert dkimpy_verify_all(sink.messages[0]["data"], recs) == [True, True]


def test_no_key_no_signature_and_port25_not_signed(srv, sink):
    submit(srv)
    wait_for(lambda: sink.messages, what="the unsigned message")
    assert b"DKIM-Signature" not in sink.messages[0]["data"]
    # a stranger's mail arriving on port 25 for a local user is not signed by us either
    keygen(srv, "example.test", "k")
    with smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=15) as s:
        s.sendmail("x@elsewhere.test", ["bob@example.test"],
                   b"From: alice@example.test\r\nSubject: spoof\r\n\r\nx\r\n")
    srv.wait_log(r"to=<bob@example\.test>.*status=sent")
    assert "DKIM-Signature field added" not in srv.log_text()


def test_sendmail_signed(srv, sink):
    recs = keygen(srv, "example.test", "sm")
    cp = srv.cli("sendmail", "-f", "alice@example.test", "carol@remote.test",
                 input="From: alice@example.test\nTo: carol@remote.test\nSubject: cli\n\nbody\n")
    assert cp.returncode == 0
    wait_for(lambda: sink.messages, what="the sendmail message")
    assert dkimpy_verify_all(sink.messages[0]["data"], recs) == [True, True]


@pytest.mark.skipif(not has_netns(), reason="needs root and network namespaces")
def test_opendkim_verifies_our_signatures(srv, sink):
    recs = keygen(srv, "example.test", "od", "--rsa")
    recs.update(keygen(srv, "example.test", "oded", "--ed25519"))
    submit(srv, body="Subject: for opendkim\r\n\r\nsome text\r\n")
    wait_for(lambda: sink.messages, what="the message")
    data = sink.messages[0]["data"]
    records = {(name, "TXT"): [value] for name, value in recs.items()}
    cp = run_with_private_dns(records, ["opendkim-testmsg"], stdin=data)
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")
    cp = run_with_private_dns(records, ["opendkim-testmsg"],
                              stdin=data.replace(b"some text", b"Some text"))
    assert cp.returncode != 0
