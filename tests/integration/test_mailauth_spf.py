"""
test_mailauth_spf.py - SPF (RFC 7208) in `tern auth check`, against the openspf.org RFC 7208
test suite that Debian's python3-spf ships (/usr/share/doc/python3-spf/rfc7208-tests.yml.gz):
each scenario's zone is served by a DNS server on loopback (dns.resolver points Tern's
libunbound at it), and every case's result is compared with the suite's expectation and
with pyspf's own answer on the same zone data.
"""

import gzip
import re
import socket
import subprocess
from pathlib import Path

import pytest

from outbound_util import SERVFAIL, DnsServer

SUITE = Path("/usr/share/doc/python3-spf/rfc7208-tests.yml.gz")

yaml = pytest.importorskip("yaml")
spf = pytest.importorskip("spf")


def load_suite():
    if not SUITE.exists():
        return []
    return list(yaml.safe_load_all(gzip.open(SUITE).read()))


def zone_records(zonedata):
    """Suite zone data -> DnsServer records. SPF-type records stand in for TXT when a name
    has no TXT (as the suite's own driver does); TIMEOUT answers SERVFAIL."""
    recs = {}
    for name, rrs in zonedata.items():
        name = name.lower().rstrip(".")
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in rrs)
        for r in rrs:
            if r == "TIMEOUT":
                continue
            (t, v), = r.items()
            if t == "SPF":
                if has_txt:
                    continue
                t = "TXT"
            if v == "NONE" or v == ["NONE"]:
                continue
            if v == "TIMEOUT":
                recs[(name, t)] = [SERVFAIL]
                continue
            if t == "TXT" and v == []:
                v = [""]  # a TXT record without text: one empty string
            if t in ("A", "AAAA", "MX", "TXT", "PTR", "CNAME"):
                recs.setdefault((name, t), []).append(tuple(v) if t == "MX" else v)
        if "TIMEOUT" in rrs:
            # every type without data times out (the suite's driver does the same)
            for t in ("A", "AAAA", "MX", "TXT", "PTR"):
                recs.setdefault((name, t), [SERVFAIL])
    return recs


def pyspf_result(zonedata, host, mailfrom, helo):
    """pyspf's verdict with its DNS answered from the same zone data."""
    zone = {}
    for name, rrs in zonedata.items():
        zone[name.lower().rstrip(".")] = rrs

    def lookup(name, qtype, strict=True, timeout=None, level=0):
        name = ".".join(l for l in name.split(".") if l)
        if any(len(l) > 63 for l in name.split(".")):
            raise spf.TempError("DNS label too long")
        rrs = zone.get(name.lower())
        if rrs is None:
            return
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in rrs)
        found = False
        for r in rrs:
            if r == "TIMEOUT":
                # as the suite's driver: a timeout only for a type without data
                if not found:
                    raise spf.TempError("DNS timeout")
                return
            (t, v), = r.items()
            if (t == qtype or (t == "SPF" and qtype == "TXT" and not has_txt)) and \
                    v not in ("NONE", ["NONE"]):
                found = True
            if t == "SPF" and not has_txt:
                t = "TXT"
            if t != qtype and t != "CNAME":
                continue
            if v == "TIMEOUT":
                raise spf.TempError("DNS timeout")
            if v == "NONE" or v == ["NONE"]:
                continue
            if t == "AAAA":
                v = socket.inet_pton(socket.AF_INET6, v)
            elif t == "TXT":
                v = tuple(s.encode() for s in ([v] if isinstance(v, str) else v))
            elif t == "MX":
                v = tuple(v)
            yield ((name, t), v)
            if t == "CNAME" and not level:
                yield from lookup(v, qtype, strict, timeout, 1)

    saved = spf.DNSLookup
    spf.DNSLookup = lookup
    try:
        return spf.check2(i=host, s=mailfrom, h=helo, querytime=0)[0]
    except Exception:
        return "exception"
    finally:
        spf.DNSLookup = saved


def tern_result(tern_bin, conf, port, host, mailfrom, helo):
    cp = subprocess.run([str(tern_bin), "-c", str(conf), "-o", "dns.resolver=127.0.0.1@%d" % port,
                         "auth", "check", "--ip", host, "--helo", helo, "--mail-from", mailfrom],
                        input=b"From: x@example.invalid\r\n\r\nbody\r\n", capture_output=True,
                        timeout=60)
    out = cp.stdout.decode(errors="replace")
    m = re.search(r"spf=(\w+)", out)
    exp = re.search(r"^SPF explanation: (.*)$", out, re.M)
    return (m.group(1) if m else "no-result:" + cp.stderr.decode(errors="replace")), \
        (exp.group(1) if exp else None)


CASES = [(i, name, case) for i, sc in enumerate(load_suite())
         for name, case in sorted(sc["tests"].items())]


@pytest.fixture(scope="module")
def scenarios():
    return load_suite()


@pytest.fixture(scope="module")
def cli_conf(tmp_path_factory):
    d = tmp_path_factory.mktemp("spfsuite")
    conf = d / "tern.conf"
    conf.write_text("data_dir = %s\nhostname = receiver.example\nmailauth.dns_timeout = 2\n" % d)
    return conf


@pytest.mark.skipif(not SUITE.exists(), reason="python3-spf's RFC 7208 suite not installed")
def test_rfc7208_suite(scenarios, cli_conf):
    from conftest import tern_bin
    failures, disagreements, n = [], [], 0
    for sc in scenarios:
        dns = DnsServer(zone_records(sc.get("zonedata", {})))
        try:
            for name, case in sorted(sc["tests"].items()):
                expected = case["result"]
                expected = expected if isinstance(expected, list) else [expected]
                host, mailfrom, helo = case["host"], case.get("mailfrom", ""), case.get("helo", "")
                got, exp = tern_result(tern_bin(), cli_conf, dns.port, host, mailfrom, helo)
                n += 1
                if got not in expected:
                    failures.append("%s: got %s, expected %s (%s)" % (name, got, expected,
                                                                     case.get("spec")))
                elif ("explanation" in case and got == "fail" and
                      case["explanation"] != "DEFAULT" and exp != case["explanation"]):
                    failures.append("%s: explanation %r, expected %r" % (name, exp,
                                                                         case["explanation"]))
                py = pyspf_result(sc.get("zonedata", {}), host, mailfrom, helo)
                # where the suite allows several results (ptr order is random in live
                # DNS, and libunbound rotates answers), both implementations may differ
                if py != got and len(expected) == 1:
                    disagreements.append("%s: tern %s, pyspf %s" % (name, got, py))
        finally:
            dns.close()
    assert n > 150
    assert not failures, "%d of %d cases differ:\n%s" % (len(failures), n, "\n".join(failures))
    assert not disagreements, "\n".join(disagreements)
