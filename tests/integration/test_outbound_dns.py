"""
test_outbound_dns.py - MX routing through libunbound pointed (dns.resolver) at a tiny DNS
server on loopback (outbound_util.DnsServer): preference order with the first MX down,
implicit MX (A record only), RFC 7505 null MX and NXDOMAIN bounces. outbound.port points
MX-routed delivery at the sink's port instead of 25.
"""

import socket

import pytest

from outbound_util import DnsServer, SmtpSink
from tern_util import maildir_messages, wait_for

from test_outbound_relay import submit


@pytest.fixture
def sink():
    s = SmtpSink()
    yield s
    s.close()


def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def dns(sink):
    d = DnsServer({
        # mx1 (preferred) is down, mx2 answers
        ("mx.test", "MX"): [(20, "mx2.mx.test"), (10, "mx1.mx.test")],
        ("mx1.mx.test", "A"): ["127.0.0.2"],
        ("mx2.mx.test", "A"): ["127.0.0.1"],
        ("implicit.test", "A"): ["127.0.0.1"],
        ("null.test", "MX"): [(0, ".")],
    })
    yield d
    d.close()


@pytest.fixture
def srv(tern_factory, sink, dns):
    return tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port,
                         "outbound.port": str(sink.port)})


def test_mx_preference_and_fallback(srv, sink, dns):
    submit(srv, ["u@mx.test"])
    srv.wait_log(r"to=<u@mx.test>, relay=mx2\.mx\.test\[127\.0\.0\.1\]:%d, .*status=sent"
                 % sink.port)
    # mx1 was tried first (preference 10) and refused the connection
    log = srv.log_text()
    assert "connect to mx1.mx.test[127.0.0.2]:%d: Connection refused" % sink.port in log
    assert ("mx.test", 15) in dns.queries


def test_implicit_mx(srv, sink):
    submit(srv, ["u@implicit.test"])
    srv.wait_log(r"to=<u@implicit.test>, relay=implicit\.test\[127\.0\.0\.1\]:%d, "
                 r".*status=sent" % sink.port)


def test_null_mx_bounces(srv, sink):
    submit(srv, ["u@null.test"])
    srv.wait_log(r"to=<u@null.test>, relay=none, .*dsn=5\.1\.10, status=bounced \(Domain "
                 r"null\.test does not accept mail \(nullMX\)\)")
    box = srv.maildir("alice@example.test")
    wait_for(lambda: maildir_messages(box), what="bounce for the null MX")
    dsn = open(maildir_messages(box)[0]).read()
    assert "Status: 5.1.10" in dsn
    assert "Diagnostic-Code: X-Tern; Domain null.test does not accept mail" in dsn
    assert sink.connections == 0


def test_nxdomain_bounces(srv, sink):
    submit(srv, ["u@nowhere.test"])
    srv.wait_log(r"to=<u@nowhere.test>, relay=none, .*dsn=5\.4\.4, status=bounced \(Host or "
                 r"domain name not found")
