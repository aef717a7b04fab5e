"""
test_mailauth_dns.py - `tern dns records DOMAIN` (every record the domain should publish:
MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, SRV) and `tern dns check DOMAIN` against a DNS
server on loopback that has some of them right, some wrong and some missing, and the
MTA-STS policy fetched from the Tern that serves it (mta_sts.listen).
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import free_ports
from mailauth_util import keygen, make_test_pki, zone_txt_records
from outbound_util import DnsServer


@pytest.fixture(scope="module")
def pki():
    d = Path(tempfile.mkdtemp(prefix="tern-pki-"))
    os.chmod(d, 0o755)
    make_test_pki(d, ("mta-sts.example.test",))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def parse_records(text):
    """(name, type) -> [value] from `tern dns records` output."""
    out = {}
    for name, value in zone_txt_records(text).items():
        out.setdefault((name, "TXT"), []).append(value)
    for m in re.finditer(r"^(\S+)\.\s+\d+\s+IN\s+MX\s+(\d+)\s+(\S+)\.$", text, re.M):
        out.setdefault((m.group(1), "MX"), []).append((int(m.group(2)), m.group(3)))
    for m in re.finditer(r"^(\S+)\.\s+\d+\s+IN\s+SRV\s+(\d+) (\d+) (\d+) (\S+)$", text, re.M):
        target = m.group(5).rstrip(".") or "."
        out.setdefault((m.group(1), "SRV"), []).append(
            (int(m.group(2)), int(m.group(3)), int(m.group(4)), target))
    return out


def test_records_and_check(tern_factory, pki):
    sts_port = free_ports(1)[0]
    sts = {"mta_sts.listen": "127.0.0.1:%d" % sts_port,
           "tls.sni_certs": "%s:%s" % (pki / "mta-sts.example.test.pem",
                                       pki / "mta-sts.example.test.key"),
           "outbound.mta_sts_port": str(sts_port), "outbound.ca_file": str(pki / "ca.pem")}
    srv = tern_factory(sts, start=False)
    keygen(srv, "example.test", "s1")
    keygen(srv, "example.test", "old", "--rsa")
    srv.cli("dkim", "retire", "example.test", "old")
    text = srv.cli("dns", "records", "example.test").stdout
    recs = parse_records(text)
    assert recs[("example.test", "MX")] == [(10, "mail.example.test")]
    assert recs[("example.test", "TXT")] == ["v=spf1 mx -all"]
    assert recs[("_dmarc.example.test", "TXT")][0].startswith("v=DMARC1; p=reject")
    assert recs[("_mta-sts.example.test", "TXT")][0].startswith("v=STSv1; id=")
    assert recs[("_smtp._tls.example.test", "TXT")][0].startswith("v=TLSRPTv1; rua=mailto:")
    assert ("s1-rsa._domainkey.example.test", "TXT") in recs
    assert ("s1-ed25519._domainkey.example.test", "TXT") in recs
    assert ("old._domainkey.example.test", "TXT") not in recs  # retired: not published
    sub = recs[("_submissions._tcp.example.test", "SRV")][0]
    assert sub[0] == 0 and sub[2] == srv.ports["submissions"] and sub[3] == "mail.example.test"
    assert "version: STSv1" in text and "mx: mail.example.test" in text
    srv.start()  # it serves the MTA-STS policy that dns check fetches
    recs[("mta-sts.example.test", "A")] = ["127.0.0.1"]

    # a zone with everything right
    dns = DnsServer(dict(recs))
    try:
        srv.write_config(dict(sts, **{"dns.resolver": "127.0.0.1@%d" % dns.port}))
        cp = srv.cli("dns", "check", "example.test")
        assert cp.returncode == 0, cp.stdout
        assert all(l.startswith("OK") for l in cp.stdout.splitlines()), cp.stdout
        assert re.search(r"^OK +MTA-STS +https://mta-sts\.example\.test/\.well-known/mta-sts\.txt$",
                         cp.stdout, re.M), cp.stdout
        # the server still serves mode testing; the configuration now says enforce
        srv.write_config(dict(sts, **{"dns.resolver": "127.0.0.1@%d" % dns.port,
                                      "mta_sts.mode": "enforce"}))
        cp = srv.cli("dns", "check", "example.test", check=False)
        assert cp.returncode == 1
        assert re.search(r"^DIFFERENT +MTA-STS +https://mta-sts\.example\.test/\S+ \(serves mode "
                         r"testing, 1 mx, max_age 604800; ours: mode enforce", cp.stdout, re.M)
        # (and the _mta-sts id, a hash of the policy text, differs too)
        assert re.search(r"^DIFFERENT +MTA-STS +_mta-sts\.example\.test", cp.stdout, re.M)
    finally:
        dns.close()

    # one wrong, one missing, one extra TXT of another kind at the SPF name
    bad = dict(recs)
    bad[("example.test", "TXT")] = ["google-site-verification=abc", "v=spf1 a -all"]
    del bad[("s1-ed25519._domainkey.example.test", "TXT")]
    bad[("example.test", "MX")] = [(10, "elsewhere.example.net")]
    del bad[("mta-sts.example.test", "A")]
    dns = DnsServer(bad)
    try:
        srv.write_config(dict(sts, **{"dns.resolver": "127.0.0.1@%d" % dns.port}))
        cp = srv.cli("dns", "check", "example.test", check=False)
        assert cp.returncode == 1
        lines = cp.stdout.splitlines()
        assert any(re.match(r"DIFFERENT +SPF +example\.test .*\(DNS has: v=spf1 a -all\)", l)
                   for l in lines), lines
        assert any(re.match(r"MISSING +DKIM +s1-ed25519\._domainkey\.example\.test", l)
                   for l in lines), lines
        assert any(re.match(r"DIFFERENT +MX +example\.test MX 10 mail\.example\.test "
                            r"\(DNS has: elsewhere\.example\.net\)", l) for l in lines), lines
        assert any(re.match(r"OK +DMARC", l) for l in lines), lines
        assert any(re.match(r"MISSING +MTA-STS +https://mta-sts\.example\.test/\S+ \(no address "
                            r"for mta-sts\.example\.test\)", l) for l in lines), lines
    finally:
        dns.close()
    assert srv.cli("dns", "records", "not a domain", check=False).returncode == 2
