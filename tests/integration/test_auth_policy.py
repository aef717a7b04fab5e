"""The failed-login policy and the pre-login timeouts (issue 13), with real clients.

Failures from one address delay that address's next attempts (a correct password still
gets in, only later), lock the (address, account) pair after auth.account_max_failures,
and block the address only past auth.max_failures; a trusted proxy's passed address (IMAP
ID x-originating-ip, SMTP XCLIENT ADDR) is the one penalised; `tern auth blocks` lists and
lifts blocks; idle strangers are dropped after imap/pop3.login_timeout and
tls.handshake_timeout. Other client addresses are 127.0.0.2 (loopback, bound as the
source). No assertion on durations: delays show up as the order replies arrive in.
"""
import imaplib
import poplib
import select
import smtplib
import socket

import pytest

from tern_util import OTHER_IP, Client, SourceAddressMixin, can_bind_source, sasl_plain

imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))  # RFC 2971


def _source_ok():
    return can_bind_source(OTHER_IP)


needs_other_ip = pytest.mark.skipif(not _source_ok(), reason="cannot bind 127.0.0.2")


class IMAP(SourceAddressMixin, imaplib.IMAP4):
    """imaplib from a chosen source address."""

    def __init__(self, host, port, source=None):
        self._source = source
        super().__init__(host, port, timeout=30)


class POP3(SourceAddressMixin, poplib.POP3):
    """poplib from a chosen source address."""

    def __init__(self, host, port, source=None):
        self._source = source
        super().__init__(host, port, timeout=30)


def imap_login(srv, user, pw, source=None, client_ip=None):
    """Log in (after ID x-originating-ip when given); 'OK' or the NO text."""
    m = IMAP(srv.host, srv.ports["imap"], source)
    try:
        if client_ip:
            m._simple_command("ID", f'("name" "webmail" "x-originating-ip" "{client_ip}")')
        m.login(user, pw)
        m.logout()
        return "OK"
    except imaplib.IMAP4.error as e:
        try:
            m.logout()
        except Exception:
            pass
        return str(e)


def test_pair_lock_spares_other_accounts_and_addresses(tern_factory):
    """A user mistyping (or an attacker guessing bob's password) behind one address locks
    only bob from that address; alice there, and bob elsewhere, still log in."""
    srv = tern_factory({"auth.account_max_failures": 3, "auth.max_failures": 100})
    for _ in range(3):
        assert "AUTHENTICATIONFAILED" in imap_login(srv, "bob@example.test", "guess")
    srv.wait_log(r"tern/imap\[\d+\]: warning: block: rip=127\.0\.0\.1, user=<bob@example\.test>, "
                 r"3 failed logins")
    # the right password for bob from here is refused now ...
    assert "UNAVAILABLE" in imap_login(srv, "bob@example.test", "bobpw")
    srv.wait_log(r"login refused \(blocked\): user=<bob@example\.test>")
    # ... but alice, behind the same address, gets in
    assert imap_login(srv, "alice@example.test", "alicepw") == "OK"
    if _source_ok():
        assert imap_login(srv, "bob@example.test", "bobpw", source=OTHER_IP) == "OK"
    # POP3 and SMTP ask the same table
    p = POP3(srv.host, srv.ports["pop3"])
    p.user("bob@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_("bobpw")
    p.quit()
    s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30)
    s.ehlo("client.test")
    code, _ = s.docmd("AUTH", "PLAIN " + sasl_plain("bob@example.test", "bobpw"))
    assert code == 454
    code, _ = s.docmd("AUTH", "PLAIN " + sasl_plain("alice@example.test", "alicepw"))
    assert code == 235
    s.quit()


@needs_other_ip
def test_delay_holds_the_address_not_the_password(tern_factory):
    """After a failure from 127.0.0.1, the next attempt from there waits; one from
    127.0.0.2 sent later is answered first; the waiting correct password then succeeds."""
    srv = tern_factory({"auth.failure_delay": 2000, "auth.failure_delay_max": 2000})
    assert "AUTHENTICATIONFAILED" in imap_login(srv, "bob@example.test", "guess")
    held = Client(srv.host, srv.ports["imap"])
    held.read_line()
    free = socket.create_connection((srv.host, srv.ports["imap"]), 30,
                                    source_address=(OTHER_IP, 0))
    free_reader = free.makefile("rb")
    free_reader.readline()
    held.send("h LOGIN alice@example.test alicepw")
    free.sendall(b"f LOGIN alice@example.test alicepw\r\n")
    order = []
    socks = {held.sock: "held", free: "free"}
    lines = {"held": b"", "free": b""}
    while len(order) < 2:
        ready, _, _ = select.select(list(socks), [], [], 30)
        assert ready, f"no reply; order so far {order}"
        for s in ready:
            name = socks[s]
            chunk = s.recv(4096)
            assert chunk, f"{name} closed"
            lines[name] += chunk
            tag = b"h OK" if name == "held" else b"f OK"
            if tag in lines[name] and name not in order:
                order.append(name)
    assert order == ["free", "held"], (order, lines)
    held.close()
    free.close()


def test_address_flood_block_and_tern_auth_blocks(tern_factory):
    """Past auth.max_failures the address is refused outright; `tern auth blocks` lists
    and lifts it; both are logged."""
    srv = tern_factory({"auth.max_failures": 4, "auth.account_max_failures": 100})
    for i in range(4):
        p = POP3(srv.host, srv.ports["pop3"])
        p.user(f"nobody{i}@example.test")
        with pytest.raises(poplib.error_proto):
            p.pass_("x")
        p.quit()
    srv.wait_log(r"tern/pop3\[\d+\]: warning: block: rip=127\.0\.0\.1, 4 failed logins")
    p = POP3(srv.host, srv.ports["pop3"])
    p.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_("alicepw")
    p.quit()
    if _source_ok():
        p = POP3(srv.host, srv.ports["pop3"], source=OTHER_IP)
        p.user("alice@example.test")
        assert p.pass_("alicepw").startswith(b"+OK")
        p.quit()
    out = srv.cli("auth", "blocks").stdout
    assert "127.0.0.1" in out and " - " in out, out
    out = srv.cli("auth", "blocks", "clear", "--all").stdout
    assert out.strip() == "cleared 1", out
    srv.wait_log(r"tern/auth\[\d+\]: unblock: rip=127\.0\.0\.1 \(cleared by tern auth blocks\)")
    assert "127.0.0.1" not in srv.cli("auth", "blocks").stdout
    p = POP3(srv.host, srv.ports["pop3"])
    p.user("alice@example.test")
    assert p.pass_("alicepw").startswith(b"+OK")
    p.quit()


def test_trusted_proxy_passes_the_client_address(tern_factory):
    """A webmail in auth.trusted_networks passes the real address in IMAP ID: that address
    is penalised, not the proxy's; an untrusted client's ID is ignored."""
    srv = tern_factory({"auth.trusted_networks": "127.0.0.1/32",
                        "auth.account_max_failures": 2})
    for _ in range(2):
        assert "AUTHENTICATIONFAILED" in imap_login(srv, "bob@example.test", "guess",
                                                    client_ip="192.0.2.7")
    srv.wait_log(r"warning: block: rip=192\.0\.2\.7, user=<bob@example\.test>")
    srv.wait_log(r"login failed: user=<bob@example\.test>, method=PLAIN, rip=192\.0\.2\.7")
    assert "UNAVAILABLE" in imap_login(srv, "bob@example.test", "bobpw", client_ip="192.0.2.7")
    # another end user of the webmail, and the webmail itself without an address
    assert imap_login(srv, "bob@example.test", "bobpw", client_ip="192.0.2.8") == "OK"
    assert imap_login(srv, "bob@example.test", "bobpw") == "OK"
    if _source_ok():
        # 127.0.0.2 is not trusted: its ID is ignored, it is not 192.0.2.7
        assert imap_login(srv, "bob@example.test", "bobpw", source=OTHER_IP,
                          client_ip="192.0.2.7") == "OK"
    out = srv.cli("auth", "blocks").stdout
    assert "192.0.2.7" in out and "bob@example.test" in out, out
    assert srv.cli("auth", "blocks", "clear", "192.0.2.7",
                   "bob@example.test").stdout.strip() == "cleared 1"
    srv.wait_log(r"unblock: rip=192\.0\.2\.7, user=<bob@example\.test> \(cleared by")
    assert imap_login(srv, "bob@example.test", "bobpw", client_ip="192.0.2.7") == "OK"


def test_smtp_xclient_from_trusted_networks_only(tern_factory):
    srv = tern_factory({"auth.trusted_networks": "127.0.0.1/32",
                        "auth.account_max_failures": 2})
    s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30)
    s.ehlo("proxy.test")
    assert s.has_extn("xclient")
    code, msg = s.docmd("XCLIENT", "ADDR=192.0.2.9 NAME=client.example HELO=client.example")
    assert code == 220, msg
    srv.wait_log(r"client=client\.example\[192\.0\.2\.9\], xclient from localhost\[127\.0\.0\.1\]")
    s.ehlo("client.example")
    for _ in range(2):
        code, _ = s.docmd("AUTH", "PLAIN " + sasl_plain("bob@example.test", "guess"))
        assert code == 535
    srv.wait_log(r"tern/smtpd\[\d+\]: warning: block: rip=192\.0\.2\.9, user=<bob@example\.test>")
    code, _ = s.docmd("AUTH", "PLAIN " + sasl_plain("bob@example.test", "bobpw"))
    assert code == 454
    s.quit()
    # the proxy's own address is not blocked for bob
    s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30)
    s.ehlo("proxy.test")
    code, _ = s.docmd("AUTH", "PLAIN " + sasl_plain("bob@example.test", "bobpw"))
    assert code == 235
    s.quit()
    s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30)
    code, _ = s.docmd("XCLIENT", "ADDR=bogus")
    assert code == 501
    s.quit()
    if _source_ok():
        s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30,
                         source_address=(OTHER_IP, 0))
        s.ehlo("stranger.test")
        assert not s.has_extn("xclient")
        code, _ = s.docmd("XCLIENT", "ADDR=192.0.2.10")
        assert code == 550
        s.quit()


def test_pre_login_timeouts(tern_factory):
    """A stranger who says nothing on 143, 110, or 993 without a TLS handshake is dropped
    after the short pre-login limits; a logged-in session opened earlier stays."""
    srv = tern_factory({"imap.login_timeout": 1, "pop3.login_timeout": 1,
                        "tls.handshake_timeout": 1})
    m = IMAP(srv.host, srv.ports["imap"])
    m.login("alice@example.test", "alicepw")
    # the three strangers wait out their limits together
    silent = Client(srv.host, srv.ports["imap"])
    pop = Client(srv.host, srv.ports["pop3"])
    raw = socket.create_connection((srv.host, srv.ports["imaps"]), 30)
    silent.read_line()
    pop.read_line()
    assert "* BYE Disconnected for inactivity." in silent.read_until(r"^\* BYE", timeout=20)
    assert silent.is_closed(timeout=20)
    assert "-ERR Disconnected for inactivity." in pop.read_until(r"^-ERR", timeout=20)
    assert pop.is_closed(timeout=20)
    raw.settimeout(20)
    assert raw.recv(100) == b""  # closed without a word: no TLS, nothing to say
    raw.close()
    srv.wait_log(r"tern/imap\[\d+\]: TLS handshake timeout from localhost\[127\.0\.0\.1\]")
    # the logged-in session, older than all of them, still answers
    assert m.noop()[0] == "OK"
    m.logout()
