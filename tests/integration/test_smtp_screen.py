"""Port-25 screening (issue 13): early talkers before a greeting pause, pipelining before
PIPELINING, HELO checks, DNSBL/DNSWL scoring on connect, RHSBL on the sender and HELO
domains, unknown sender domains. DNS answers come from a test DNS server on loopback
(outbound_util.DnsServer, as in test_outbound_dns.py); a dead resolver shows that a DNS
failure never rejects. Other client addresses are 127.0.0.2 (bound as the source)."""
import os
import signal
import smtplib
import socket
import subprocess

import pytest

from conftest import free_ports
from outbound_util import DnsServer
from tern_util import OTHER_IP, Client, can_bind_source, converse, send_mail

def _can_bind_other():
    return can_bind_source(OTHER_IP)


def raw(srv, port="smtp", source=None):
    sock = socket.create_connection((srv.host, srv.ports[port]), 30,
                                    source_address=(source, 0) if source else None)
    c = Client.__new__(Client)
    c.host, c.timeout, c.sock, c.buf, c.transcript = srv.host, 30, sock, b"", []
    return c


@pytest.fixture
def dns():
    d = DnsServer({
        ("1.0.0.127.bl.test", "A"): ["127.0.0.2"],
        ("1.0.0.127.other.test", "A"): ["127.0.0.4"],
        ("1.0.0.127.wl.test", "A"): ["127.0.9.5"],
        ("spam.example.dbl.test", "A"): ["127.0.1.2"],
        ("bad.helo.example.dbl.test", "A"): ["127.0.1.2"],
        ("good.test", "MX"): [(10, "mx.good.test")],
        ("mx.good.test", "A"): ["127.0.0.1"],
        ("aonly.test", "A"): ["192.0.2.1"],
    })
    yield d
    d.close()


def test_early_talker_is_dropped_patient_client_served(tern_factory):
    srv = tern_factory({"smtp.greet_pause": 1500})
    c = raw(srv)
    c.send("EHLO impatient.example")  # before the banner
    assert c.read_line().startswith("521 5.5.1 Protocol error")
    assert c.is_closed()
    srv.wait_log(r"PREGREET 24 after [\d.]+ from \[127\.0\.0\.1\]: EHLO impatient\.example")
    # a client that waits for the banner gets through
    r = subprocess.run(["swaks", "--server", f"{srv.host}:{srv.ports['smtp']}", "--from",
                        "a@remote.example", "--to", "alice@example.test", "--timeout", "30"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "250 2.0.0 Ok: queued" in r.stdout, r.stdout
    # no pause on submission: an eager client is served
    c = raw(srv, "submission")
    c.send("EHLO eager.example")
    got = c.read_until(r"^250 ")
    assert got.startswith("220 ") and "250-PIPELINING" in got


def test_pipelining_before_pipelining_is_refused(tern_factory):
    srv = tern_factory({"smtp.reject_unauth_pipelining": "yes"})
    c = raw(srv)
    c.read_line()
    c.send_raw(b"HELO client.example\r\nMAIL FROM:<a@remote.example>\r\n")
    got = c.read_until(r"^554 ")
    assert "554 5.5.0 Error: SMTP protocol synchronization" in got
    assert c.is_closed()
    srv.wait_log(r"improper command pipelining after CONNECT from localhost\[127\.0\.0\.1\]: "
                 r"HELO client\.example")
    # after EHLO announced PIPELINING, a pipelined group is fine (swaks --pipeline)
    r = subprocess.run(["swaks", "--server", f"{srv.host}:{srv.ports['smtp']}", "--pipeline",
                        "--from", "a@remote.example", "--to", "alice@example.test",
                        "--timeout", "30"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "250 2.0.0 Ok: queued" in r.stdout, r.stdout


def test_helo_checks(tern_factory):
    srv = tern_factory({"smtp.helo_require_fqdn": "yes"})
    c = raw(srv)
    c.read_line()
    converse(c, [
        ("HELO bad!name", r"^501 5\.5\.2 <bad!name>: Helo command rejected: Invalid name"),
        ("HELO [999.1.1.1]", r"^501 5\.5\.2"),
        ("HELO shortname", r"^504 5\.5\.2 <shortname>: Helo command rejected: need fully"),
        ("MAIL FROM:<a@remote.example>", r"^503 "),  # no HELO was accepted
        # a client on this host may say our name and address: they are its own too
        ("HELO mail.example.test", r"^250 "),
        ("EHLO [127.0.0.1]", r"^250 "),
        ("MAIL FROM:<a@remote.example>", r"^250 "),
        ("QUIT", r"^221 "),
    ])
    srv.wait_log(r"NOQUEUE: reject: HELO from localhost\[127\.0\.0\.1\]: 501 5\.5\.2 "
                 r"<bad!name>")
    if _can_bind_other():
        c = raw(srv, source=OTHER_IP)
        c.read_line()
        converse(c, [
            ("HELO mail.example.test", r"^550 5\.7\.1 <mail\.example\.test>: Helo command "
                                       r"rejected: that is my name, not yours"),
            ("HELO [127.0.0.1]", r"^550 5\.7\.1 <\[127\.0\.0\.1\]>: Helo command rejected"),
            ("EHLO client.example", r"^250 "),
            ("QUIT", r"^221 "),
        ])
    # submission clients are not screened
    s = smtplib.SMTP(srv.host, srv.ports["submission"], local_hostname="shortname", timeout=30)
    assert s.ehlo()[0] == 250
    s.quit()


def test_dnsbl_weights_threshold_and_cache(tern_factory, dns):
    # the second connection is answered from the cache (shared by every process)
    srv = tern_factory({"dns.resolver": f"127.0.0.1@{dns.port}",
                        "smtp.dnsbl_sites": "bl.test=127.0.0.[2..3]*2, other.test*1",
                        "smtp.dnsbl_threshold": 3, "worker_processes": 1})
    c = raw(srv)
    got = c.read_line()
    assert got.startswith("554 5.7.1 Service unavailable; client [127.0.0.1] blocked using "
                          "bl.test, other.test"), got
    assert c.is_closed()
    srv.wait_log(r"NOQUEUE: reject: CONNECT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1 .* "
                 r"\(score 3\)")
    asked = len(dns.queries)
    c = raw(srv)
    assert c.read_line().startswith("554 ")
    assert len(dns.queries) == asked, "the second connection was answered from the cache"
    if _can_bind_other():
        c = raw(srv, source=OTHER_IP)  # 2.0.0.127.bl.test: NXDOMAIN
        assert c.read_line().startswith("220 ")
        c.close()


def test_dnsbl_cache_is_shared_by_the_login_processes(tern_factory, dns):
    """The answer one login process got serves the connections the others take (the
    cache lives in the master's shared mapping): the DNS server is not asked again."""
    srv = tern_factory({"dns.resolver": f"127.0.0.1@{dns.port}",
                        "smtp.dnsbl_sites": "bl.test*1", "smtp.dnsbl_threshold": 5,
                        "login_processes": 2, "worker_processes": 1})

    def connect_once():
        since = srv.log_offset()
        c = raw(srv)
        assert c.read_line().startswith("220 ")
        c.send("QUIT")
        c.read_line()
        hit = srv.wait_log(r"tern/smtpd\[(\d+)\]: DNSBL rank 1 for \[127\.0\.0\.1\]", since=since)
        return int(hit.group(1))
    first = connect_once()
    asked = [q for q in dns.queries if "bl.test" in str(q).lower()]
    assert asked, dns.queries
    n_before = len(dns.queries)
    # the first one stopped, the other login process takes the next connection (both
    # wait on the one listening socket; which one accepts is the kernel's and the
    # scheduler's choice otherwise: under ASan one of them took 30 in a row)
    os.kill(first, signal.SIGSTOP)
    try:
        other = connect_once()
    finally:
        os.kill(first, signal.SIGCONT)
    assert other != first
    assert len(dns.queries) == n_before, "another login process asked the DNS again"


def test_dnswl_offsets_and_dns_failure_never_rejects(tern_factory, dns):
    srv = tern_factory({"dns.resolver": f"127.0.0.1@{dns.port}",
                        "smtp.dnsbl_sites": "bl.test*2, wl.test=127.0.[0..255].[5;6]*-2",
                        "smtp.dnsbl_threshold": 2})
    c = raw(srv)
    assert c.read_line().startswith("220 ")  # listed (2) and allowed (-2): rank 0
    c.close()
    dead = free_ports(1)[0]
    srv2 = tern_factory({"dns.resolver": f"127.0.0.1@{dead}", "smtp.dnsbl_sites": "bl.test*5",
                         "smtp.dns_timeout": 300})
    c = raw(srv2)
    assert c.read_line(timeout=60).startswith("220 ")
    srv2.wait_log(r"DNS lookup of 1\.0\.0\.127\.bl\.test failed: not counted|DNS lookups not "
                  r"answered in 300 ms: not counted", timeout=60)


def test_rhsbl_and_unknown_sender_domain(tern_factory, dns):
    srv = tern_factory({"dns.resolver": f"127.0.0.1@{dns.port}",
                        "smtp.rhsbl_sites": "dbl.test=127.0.1.[2..99]",
                        "smtp.reject_unknown_sender_domain": "yes"})
    c = raw(srv)
    c.read_line()
    converse(c, [
        ("EHLO client.example", r"^250 "),
        ("MAIL FROM:<x@spam.example>", r"^554 5\.7\.1 Service unavailable; Sender address "
                                       r"\[x@spam\.example\] blocked using dbl\.test"),
        ("MAIL FROM:<x@nowhere.test>", r"^550 5\.1\.8 <x@nowhere\.test>: Sender address "
                                       r"rejected: Domain not found"),
        ("MAIL FROM:<x@good.test>", r"^250 "),
        ("RSET", r"^250 "),
        ("MAIL FROM:<x@aonly.test>", r"^250 "),  # no MX, an A record: fine
        ("RSET", r"^250 "),
        ("MAIL FROM:<>", r"^250 "),               # the null sender has no domain
        ("RSET", r"^250 "),
        ("EHLO bad.helo.example", r"^250 "),
        ("MAIL FROM:<x@good.test>", r"^554 5\.7\.1 Service unavailable; Helo command "
                                    r"\[bad\.helo\.example\] blocked using dbl\.test"),
        ("QUIT", r"^221 "),
    ])
    srv.wait_log(r"NOQUEUE: reject: MAIL from localhost\[127\.0\.0\.1\]: 554 5\.7\.1 Service "
                 r"unavailable; Sender address \[x@spam\.example\]")
    # a DNS failure never rejects the sender
    dead = free_ports(1)[0]
    srv2 = tern_factory({"dns.resolver": f"127.0.0.1@{dead}",
                         "smtp.reject_unknown_sender_domain": "yes", "smtp.dns_timeout": 300})
    code, _ = send_mail(srv2, "x@nowhere.test", "alice@example.test", "hello\n")
    assert code == 250
