"""
test_auth_mechanisms.py - a SASL mechanism is accepted exactly when it is advertised to
that client in that state (EHLO AUTH, POP3 CAPA SASL, IMAP CAPABILITY AUTH=), with
Python's smtplib, poplib and imaplib (swaks only ever tries advertised mechanisms).

Refusals: SMTP 504 5.5.4 (RFC 4954 §4) or 538 5.7.11 when TLS would allow a plaintext
mechanism (§6); POP3 -ERR (RFC 5034 §4); IMAP tagged NO (RFC 3501 / RFC 9051 §6.2.2).

Two servers: one whose users have only ARGON2ID hashes (so CRAM-MD5 and SCRAM-SHA-256
cannot be answered and are not advertised), and one with auth.allow_plaintext = tls
(PLAIN and LOGIN advertised and accepted only after STARTTLS).
"""

import imaplib
import poplib
import smtplib

import pytest

from tern_util import IO_TIMEOUT, tls_context

CANDIDATES = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "DIGEST-MD5", "XOAUTH2")


@pytest.fixture(scope="module")
def hashes_only(tern_module_factory):
    return tern_module_factory({"auth.password_schemes": "ARGON2ID"})


@pytest.fixture(scope="module")
def tls_only(tern_module_factory):
    return tern_module_factory({"auth.allow_plaintext": "tls"})


# ---- one probe per protocol: what is advertised, and what AUTH X answers -------------

def smtp_probe(srv, port="submission", starttls=False):
    """(advertised mechanisms, {mechanism: reply code to AUTH mechanism})."""
    with smtplib.SMTP(srv.host, srv.ports[port], timeout=IO_TIMEOUT) as s:
        s.ehlo()
        if starttls:
            s.starttls(context=tls_context())
            s.ehlo()
        advertised = set(s.esmtp_features.get("auth", "").split())
        replies = {}
        for mech in CANDIDATES:
            code, text = s.docmd("AUTH", mech)
            replies[mech] = (code, text.decode())
            if code == 334:
                assert s.docmd("*")[0] == 501  # cancel the exchange
        return advertised, replies


def pop3_probe(srv, starttls=False):
    p = poplib.POP3(srv.host, srv.ports["pop3"], timeout=IO_TIMEOUT)
    try:
        if starttls:
            p.stls(context=tls_context())
        advertised = set(p.capa().get("SASL", []))
        replies = {}
        for mech in CANDIDATES:
            try:
                replies[mech] = p._shortcmd(f"AUTH {mech}").decode()  # "+ challenge"
            except poplib.error_proto as e:
                replies[mech] = e.args[0].decode()
                continue
            with pytest.raises(poplib.error_proto, match="aborted"):
                p._shortcmd("*")
        return advertised, replies
    finally:
        p.quit()


def imap_probe(srv, starttls=False):
    m = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=IO_TIMEOUT)
    try:
        if starttls:
            m.starttls(ssl_context=tls_context())
        caps = m.capability()[1][0].decode().split()
        advertised = {c[5:] for c in caps if c.startswith("AUTH=")}
        replies = {}
        for mech in CANDIDATES:
            # imaplib answers a continuation with "*" when the callable returns None:
            # an accepted mechanism ends "BAD ... aborted", a refused one "NO ...".
            # (imaplib raises "AUTHENTICATE command error: BAD ..." for BAD and the bare
            # text for NO.)
            try:
                m.authenticate(mech, lambda challenge: None)
                replies[mech] = "OK?!"
            except imaplib.IMAP4.error as e:
                is_bad = "command error: BAD" in str(e)
                replies[mech] = f"{'BAD' if is_bad else 'NO'} {e}"
        return advertised, replies
    finally:
        m.logout()


def assert_accepted_iff_advertised(advertised, replies, accepted):
    for mech, reply in replies.items():
        assert accepted(reply) == (mech in advertised), (mech, reply, advertised)


def smtp_accepted(reply):
    return reply[0] == 334


def pop3_accepted(reply):
    return reply.startswith("+")


def imap_accepted(reply):
    return reply.startswith("BAD") and "aborted" in reply


# What each protocol answers: (probe, accepted(reply), the refusal of an unsupported
# mechanism, the refusal of PLAIN where TLS is required)
PROTOCOLS = {
    "smtp-25": (lambda srv, **kw: smtp_probe(srv, "smtp", **kw), smtp_accepted,
                (504, "5.5.4 Unsupported authentication mechanism"),
                (538, "5.7.11 Encryption required for requested authentication mechanism")),
    "smtp-587": (smtp_probe, smtp_accepted,
                 (504, "5.5.4 Unsupported authentication mechanism"),
                 (538, "5.7.11 Encryption required for requested authentication mechanism")),
    "pop3": (pop3_probe, pop3_accepted, "-ERR Unsupported authentication mechanism.",
             "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) "
             "connections."),
    "imap": (imap_probe, imap_accepted, "NO Unsupported authentication mechanism.",
             "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
             "connections."),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_refuses_what_is_not_offered(hashes_only, protocol):
    """Only hashes stored: CRAM-MD5 and SCRAM-SHA-256 cannot be answered, are not
    advertised, and are refused like mechanisms we do not implement."""
    probe, accepted, unsupported, _ = PROTOCOLS[protocol]
    advertised, replies = probe(hashes_only)
    assert advertised == {"PLAIN", "LOGIN"}  # loopback: plaintext allowed
    assert_accepted_iff_advertised(advertised, replies, accepted)
    for mech in ("CRAM-MD5", "SCRAM-SHA-256", "DIGEST-MD5", "XOAUTH2"):
        assert replies[mech] == unsupported, mech


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_advertised_challenge_mechanisms_still_work(tern, protocol):
    """With CRAM-MD5 and SCRAM credentials stored (the default fixture) both are
    advertised and accepted."""
    probe, accepted, _, _ = PROTOCOLS[protocol]
    advertised, replies = probe(tern)
    assert {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"} <= advertised
    assert_accepted_iff_advertised(advertised, replies, accepted)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plaintext_only_after_starttls(tls_only, protocol):
    """auth.allow_plaintext = tls: PLAIN and LOGIN neither offered nor accepted in clear,
    both after STARTTLS/STLS."""
    probe, accepted, _, needs_tls = PROTOCOLS[protocol]
    advertised, replies = probe(tls_only)
    assert not advertised & {"PLAIN", "LOGIN"}
    assert_accepted_iff_advertised(advertised, replies, accepted)
    assert replies["PLAIN"] == needs_tls
    advertised, replies = probe(tls_only, starttls=True)
    assert {"PLAIN", "LOGIN"} <= advertised
    assert_accepted_iff_advertised(advertised, replies, accepted)


def test_smtp_login_after_starttls(tls_only):
    with smtplib.SMTP(tls_only.host, tls_only.ports["submission"], timeout=IO_TIMEOUT) as s:
        s.starttls(context=tls_context())
        assert s.login("alice@example.test", "alicepw")[0] == 235
