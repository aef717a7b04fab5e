"""
test_smtp_policy.py - SMTP policy with non-default settings: plaintext AUTH only over TLS,
relay_networks, aliases that point to foreign addresses, mixed local + remote recipients
(queue and store both written before the 250), and the disconnect statistics.
"""

import re
import uuid

from tern_util import Client, b64, converse, maildir_messages, sasl_plain, wait_for


def session(srv, port="smtp"):
    c = Client(srv.host, srv.ports[port])
    c.read_until(r"^220 ")
    return c


# remote.example is routed to a closed loopback port: its copy stays deferred in the spool
# where the tests look for it (an MX lookup could bounce and remove it first)
HELD_REMOTE = {"transport.remote.example": "[127.0.0.1]:9"}


def queued_bytes(srv, qid):
    """The spool file of qid, read. The queue process may be moving it from one queue
    folder to the next (a listing then misses it, or it is gone between the listing and
    the read): look again, for a bounded time."""
    def read():
        for p in (srv.data_dir / "queue").rglob(qid):
            try:
                return p.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue
        return None
    return wait_for(read, what=f"{qid} in the spool")


def test_plaintext_auth_needs_tls_when_configured(tern_factory):
    srv = tern_factory({"auth.allow_plaintext": "tls"})
    c = session(srv)
    r = converse(c, [("EHLO client.test", r"^250 ")])
    auth = [l for l in r[0].splitlines() if l.startswith("250-AUTH ")]
    assert not auth or ("PLAIN" not in auth[0] and "LOGIN" not in auth[0]), r[0]
    r = converse(c, [("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw"), r"^538 "),
                     ("AUTH LOGIN", r"^538 ")])
    assert r[0].startswith("538 5.7.11 Encryption required")
    converse(c, [("STARTTLS", r"^220 ")])
    c.starttls()
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw"), r"^235 "),
                     ("QUIT", r"^221 ")])
    assert re.search(r"^250-AUTH .*PLAIN", r[0], re.M)


def test_relay_networks_allow_unauthenticated_relay(tern_factory):
    srv = tern_factory({"relay_networks": "127.0.0.0/8", **HELD_REMOTE})
    c = session(srv)
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("MAIL FROM:<app@example.test>", r"^250 "),
                     ("RCPT TO:<someone@remote.example>", r"^250 "),
                     ("RCPT TO:<bob@example.test>", r"^250 "),
                     ("DATA", r"^354 "),
                     ("Subject: relay and local", None), ("", None), ("both", None),
                     (".", r"^250 2\.0\.0 Ok: queued as "),
                     ("QUIT", r"^221 ")])
    qid = re.search(r"queued as ([0-9A-F]+)", r[8]).group(1)
    data = queued_bytes(srv, qid)  # the remote copy, in the spool
    assert b"someone@remote.example" in data
    assert b"Delivered-To" not in data and b"Return-Path" not in data
    wait_for(lambda: [f for f in maildir_messages(srv.maildir("bob@example.test"))
                      if qid.encode() in open(f, "rb").read()], what="local copy")
    srv.wait_log(qid + r": to=<someone@remote\.example>, relay=none, delay=[\d.]+, "
                 r"dsn=4\.0\.0, status=deferred \(queued for delivery\)")
    srv.wait_log(qid + r": to=<bob@example\.test>, relay=local, .*status=sent")


def test_alias_to_foreign_address_is_queued_without_auth(tern_factory):
    srv = tern_factory(HELD_REMOTE)
    srv.cli("alias", "add", "fwd@example.test", "friend@remote.example")
    tok = uuid.uuid4().hex
    c = session(srv)
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("MAIL FROM:<x@other.example>", r"^250 "),
                     ("RCPT TO:<fwd@example.test>", r"^250 "),
                     ("DATA", r"^354 "),
                     (f"Subject: {tok}", None), ("", None), ("fwd", None),
                     (".", r"^250 2\.0\.0 Ok: queued as "),
                     ("QUIT", r"^221 ")])
    qid = re.search(r"queued as ([0-9A-F]+)", r[7]).group(1)
    assert tok.encode() in queued_bytes(srv, qid)


def test_disconnect_statistics_count_failures(tern):
    since = tern.log_offset()
    c = session(tern)
    converse(c, [("EHLO client.test", r"^250 "),
                 ("MAIL FROM:<a@remote.example>", r"^250 "),
                 ("RCPT TO:<x@elsewhere.example>", r"^554 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("BOGUS", r"^502 "),
                 ("QUIT", r"^221 ")])
    tern.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1/2 quit=1 "
                  r"unknown=0/1 commands=4/6", since=since)


def test_auth_login_on_465_with_wrong_password_then_right(tern):
    c = Client(tern.host, tern.ports["submissions"], tls=True)
    c.read_until(r"^220 ")
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("AUTH LOGIN " + b64("alice@example.test"), r"^334 UGFzc3dvcmQ6"),
                     (b64("wrong"), r"^535 "),
                     ("AUTH LOGIN " + b64("alice@example.test"), r"^334 "),
                     (b64("alicepw"), r"^235 "),
                     ("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw"), r"^503 "),
                     ("QUIT", r"^221 ")])
    assert "503 5.5.1 Error: already authenticated" in r[5]
    assert "STARTTLS" not in r[0]


def test_failed_local_delivery_is_not_acknowledged_and_withdraws_queue_copy(tern_factory):
    """A store failure (here: the Maildir's tmp/ not writable) gives 451 4.3.0, and the
    copy already spooled for a remote recipient is withdrawn: a 4xx means nothing was
    accepted, so the client's retry cannot duplicate anything."""
    import os
    srv = tern_factory()
    # first delivery creates the Maildir
    c = session(srv, "submission")
    converse(c, [("EHLO client.test", r"^250 "),
                 ("AUTH PLAIN " + sasl_plain("bob@example.test", "bobpw"), r"^235 "),
                 ("MAIL FROM:<bob@example.test>", r"^250 "),
                 ("RCPT TO:<alice@example.test>", r"^250 "),
                 ("DATA", r"^354 "), ("Subject: first", None), ("", None), ("x", None),
                 (".", r"^250 ")])
    tmp = srv.maildir("alice@example.test") / "tmp"
    wait_for(lambda: tmp.is_dir(), what="alice's Maildir")
    queue_before = set(p.name for p in (srv.data_dir / "queue").rglob("*") if p.is_file())
    os.chmod(tmp, 0)
    try:
        r = converse(c, [("MAIL FROM:<bob@example.test>", r"^250 "),
                         ("RCPT TO:<alice@example.test>", r"^250 "),
                         ("RCPT TO:<friend@remote.example>", r"^250 "),
                         ("DATA", r"^354 "), ("Subject: second", None), ("", None),
                         ("y", None), (".", r"^451 ")])
        assert r[-1].startswith("451 4.3.0")
        queue_after = set(p.name for p in (srv.data_dir / "queue").rglob("*") if p.is_file())
        assert queue_after == queue_before
    finally:
        os.chmod(tmp, 0o700)
    r = converse(c, [("MAIL FROM:<bob@example.test>", r"^250 "),
                     ("RCPT TO:<alice@example.test>", r"^250 "),
                     ("DATA", r"^354 "), ("Subject: third", None), ("", None), ("z", None),
                     (".", r"^250 "), ("QUIT", r"^221 ")])


def test_pipelined_auth_then_mail(tern):
    """AUTH with an initial response and the transaction pipelined behind it (RFC 4954
    §4 allows no pipelining of AUTH itself, but clients do it): the MAIL waits for the
    SASL step in the workpool and then runs as the authenticated user."""
    c = session(tern, "submission")
    converse(c, [("EHLO client.test", r"^250 ")])
    c.send_raw(("AUTH PLAIN " + sasl_plain("alice@example.test", "alicepw") + "\r\n"
                "MAIL FROM:<alice@example.test>\r\nRCPT TO:<someone@remote.example>\r\n"
                "RSET\r\nAUTH PLAIN =\r\nQUIT\r\n").encode())
    r = c.read_until(r"^221 ")
    codes = [l[:3] for l in r.splitlines()]
    assert codes == ["235", "250", "250", "250", "503", "221"], r


def test_auth_empty_initial_response(tern):
    c = session(tern)
    r = converse(c, [("EHLO client.test", r"^250 "),
                     ("AUTH PLAIN =", r"^(535|501) "),
                     ("NOOP", r"^250 ")])
    assert r[1][:3] in ("535", "501")
