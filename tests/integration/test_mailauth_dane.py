"""
test_mailauth_dane.py - DANE (RFC 7672) in the outbound client (issue 12): a DNSSEC-signed
zone dane.test (ldns-keygen + ldns-signzone) served by NSD on loopback, the sender's
libunbound validating from that zone's DS as trust anchor (dns.trust_anchor), a receiving
Tern as mx.dane.test, and TLSA records at _PORT._tcp.mx.dane.test: a matching DANE-EE
record (delivered, "Verified TLS"), a wrong one (deferred), a bogus signature (deferred:
the host is not used), and an unsigned zone (no DANE: opportunistic TLS).
"""

import hashlib
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tern_util import maildir_messages, wait_for

pytestmark = pytest.mark.skipif(not (shutil.which("nsd") and shutil.which("ldns-signzone")),
                                reason="needs nsd and ldnsutils")


def spki_sha256(cert_pem):
    pub = subprocess.run(["openssl", "x509", "-noout", "-pubkey"], input=cert_pem,
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         capture_output=True, check=True).stdout
    return hashlib.sha256(der).hexdigest()


def free_udp_tcp_port():
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            pass
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


class SignedZone:
    """dane.test signed with a fresh KSK/ZSK and served by NSD on a loopback port."""

    def __init__(self, records, sign=True, break_signature=False):
        self.dir = Path(tempfile.mkdtemp(prefix="tern-dane-"))
        os.chmod(self.dir, 0o755)
        d = self.dir
        zone = ["$ORIGIN dane.test.", "$TTL 60",
                "@ IN SOA ns.dane.test. admin.dane.test. 1 3600 600 86400 60",
                "@ IN NS ns.dane.test.", "ns IN A 127.0.0.1"] + records
        (d / "dane.test.zone").write_text("\n".join(zone) + "\n")
        self.anchor = d / "anchor.ds"
        zonefile = "dane.test.zone"
        if sign:
            ksk = subprocess.run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", "dane.test"],
                                 cwd=d, capture_output=True, text=True, check=True).stdout.strip()
            zsk = subprocess.run(["ldns-keygen", "-a", "ECDSAP256SHA256", "dane.test"],
                                 cwd=d, capture_output=True, text=True, check=True).stdout.strip()
            subprocess.run(["ldns-signzone", "dane.test.zone", zsk, ksk], cwd=d,
                           capture_output=True, check=True)
            zonefile = "dane.test.zone.signed"
            self.anchor.write_text((d / (ksk + ".ds")).read_text())
            if break_signature:
                # change the TLSA data after signing: its RRSIG no longer matches (bogus)
                lines = (d / zonefile).read_text().split("\n")
                for i, l in enumerate(lines):
                    if "\tTLSA\t" in l:
                        lines[i] = l[:-2] + ("00" if not l.endswith("00") else "11")
                (d / zonefile).write_text("\n".join(lines))
        else:
            # an anchor for a key the zone does not have: the zone is simply unsigned
            self.anchor.write_text("")
        self.port = free_udp_tcp_port()
        (d / "nsd.conf").write_text(
            "server:\n  ip-address: 127.0.0.1@%d\n  username: \"\"\n  chroot: \"\"\n"
            "  zonesdir: \"%s\"\n  pidfile: \"%s/nsd.pid\"\n  database: \"\"\n"
            "  zonelistfile: \"%s/zone.list\"\n  xfrdfile: \"%s/xfrd.state\"\n"
            "  xfrdir: \"%s\"\n  logfile: \"%s/nsd.log\"\n  verbosity: 1\n"
            "remote-control:\n  control-enable: no\n"
            "zone:\n  name: dane.test\n  zonefile: \"%s\"\n"
            % (self.port, d, d, d, d, d, d, zonefile))
        self.proc = subprocess.Popen(["nsd", "-d", "-c", str(d / "nsd.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        for f in d.iterdir():
            os.chmod(f, 0o644)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def dane(tern_factory):
    made = []

    def go(tlsa_hex=None, sign=True, break_signature=False):
        mx = tern_factory({"hostname": "mx.dane.test"}, start=False)
        mx.cli("domain", "add", "dane.test")
        mx.cli("user", "add", "dan@dane.test", "--password-stdin", input="danpw\n")
        mx.start()
        cert = (mx.data_dir / "tls" / "cert.pem").read_bytes()
        digest = tlsa_hex or spki_sha256(cert)
        port = mx.ports["smtp"]
        zone = SignedZone(["@ IN MX 10 mx.dane.test.", "mx IN A 127.0.0.1",
                           "_%d._tcp.mx IN TLSA 3 1 1 %s" % (port, digest)],
                          sign=sign, break_signature=break_signature)
        made.append(zone)
        sender = tern_factory({"dns.resolver": "127.0.0.1@%d" % zone.port,
                               "dns.trust_anchor": str(zone.anchor),
                               "outbound.port": str(port),
                               "outbound.mta_sts": "no"})
        with smtplib.SMTP(sender.host, sender.ports["submission"], timeout=15) as s:
            s.login("alice@example.test", "alicepw")
            s.sendmail("alice@example.test", ["dan@dane.test"],
                       b"From: alice@example.test\r\nTo: dan@dane.test\r\nSubject: dane\r\n\r\nx\r\n")
        return sender, mx

    yield go
    for z in made:
        z.close()


def test_matching_tlsa_verified(dane):
    sender, mx = dane()
    sender.wait_log(r"Verified TLS connection established to mx\.dane\.test\[127\.0\.0\.1\]",
                    timeout=20)
    sender.wait_log(r"to=<dan@dane\.test>, relay=mx\.dane\.test\[127\.0\.0\.1\]:\d+, .*status=sent")
    wait_for(lambda: maildir_messages(mx.maildir("dan@dane.test")), what="delivery")


def test_wrong_tlsa_defers(dane):
    sender, mx = dane(tlsa_hex="00" * 32)
    sender.wait_log(r"to=<dan@dane\.test>, .*status=deferred \(.*does not match its DANE TLSA "
                    r"records", timeout=20)
    assert maildir_messages(mx.maildir("dan@dane.test")) == []


def test_bogus_tlsa_host_not_used(dane):
    sender, mx = dane(break_signature=True)
    sender.wait_log(r"to=<dan@dane\.test>, .*status=deferred \(TLSA lookup for mx\.dane\.test "
                    r"failed \(DNSSEC\): host not used\)", timeout=30)
    assert maildir_messages(mx.maildir("dan@dane.test")) == []


def test_unsigned_zone_is_opportunistic(dane):
    sender, mx = dane(tlsa_hex="00" * 32, sign=False)
    sender.wait_log(r"Untrusted TLS connection established to mx\.dane\.test", timeout=20)
    sender.wait_log(r"to=<dan@dane\.test>, .*status=sent")
