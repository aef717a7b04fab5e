"""
test_mailauth_mtasts.py - MTA-STS (RFC 8461) in the outbound client (issue 12): a test CA,
a policy served over HTTPS on loopback (mta-sts.sts.test), a receiving Tern as the MX
(mx.sts.test) with a certificate from that CA (or one for the wrong name), and the DNS
records on a loopback DNS server. Modes enforce, testing and none, and the failures
enforce must cause: a certificate that does not name the MX, an MX the policy does not
list, no STARTTLS is covered by the client unit of the same code path.
"""

import http.server
import os
import re
import shutil
import smtplib
import ssl
import tempfile
import threading
from pathlib import Path

import pytest

from mailauth_util import make_test_pki
from outbound_util import DnsServer
from tern_util import maildir_messages, wait_for


@pytest.fixture(scope="module")
def pki():
    """A CA and leaf certificates for the policy host and the MX (and a wrong one), in a
    folder the servers' run user can read."""
    d = Path(tempfile.mkdtemp(prefix="tern-pki-"))
    os.chmod(d, 0o755)
    make_test_pki(d, ("mta-sts.sts.test", "mx.sts.test", "wrong.test", "reports.sts.test"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class PolicyServer:
    """HTTPS on loopback serving /.well-known/mta-sts.txt from self.policy."""

    def __init__(self, pki):
        self.policy = ""
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                body = outer.policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki / "mta-sts.sts.test.pem"), str(pki / "mta-sts.sts.test.key"))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def policy_server(pki):
    s = PolicyServer(pki)
    yield s
    s.close()


def make_mx(tern_factory, pki, cert_name):
    """A receiving Tern for sts.test whose certificate is cert_name's."""
    mx = tern_factory({"hostname": "mx.sts.test",
                       "tls.cert": str(pki / (cert_name + ".pem")),
                       "tls.key": str(pki / (cert_name + ".key"))}, start=False)
    mx.cli("domain", "add", "sts.test")
    mx.cli("user", "add", "carol@sts.test", "--password-stdin", input="carolpw\n")
    mx.start()
    return mx


def make_sender(tern_factory, pki, dns, mx, policy_server):
    return tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port,
                         "outbound.port": str(mx.ports["smtp"]),
                         "outbound.mta_sts_port": str(policy_server.port),
                         "outbound.ca_file": str(pki / "ca.pem")})


def zone(mx_name="mx.sts.test", sts_id="1"):
    recs = {("sts.test", "MX"): [(10, mx_name)],
            (mx_name, "A"): ["127.0.0.1"],
            ("mta-sts.sts.test", "A"): ["127.0.0.1"],
            # TLS-RPT (RFC 8460): reports to a local mailbox of the sender's own server
            ("_smtp._tls.sts.test", "TXT"): ["v=TLSRPTv1; rua=mailto:alice@example.test"]}
    if sts_id:
        recs[("_mta-sts.sts.test", "TXT")] = ["v=STSv1; id=%s" % sts_id]
    return recs


def submit(srv):
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=15) as s:
        s.login("alice@example.test", "alicepw")
        s.sendmail("alice@example.test", ["carol@sts.test"],
                   b"From: alice@example.test\r\nTo: carol@sts.test\r\nSubject: sts\r\n\r\nhi\r\n")


POLICY = "version: STSv1\r\nmode: %s\r\nmx: %s\r\nmax_age: 86400\r\n"


@pytest.fixture
def run(tern_factory, pki, policy_server):
    """run(mode, mx_cert, policy_mx="mx.sts.test", sts_id="1") -> (sender, mx)."""
    made = []

    def go(mode, mx_cert, policy_mx="mx.sts.test", sts_id="1"):
        policy_server.policy = POLICY % (mode, policy_mx)
        dns = DnsServer(zone(sts_id=sts_id))
        made.append(dns)
        mx = make_mx(tern_factory, pki, mx_cert)
        sender = make_sender(tern_factory, pki, dns, mx, policy_server)
        submit(sender)
        return sender, mx

    yield go
    for d in made:
        d.close()


def delivered(mx):
    box = mx.maildir("carol@sts.test")
    wait_for(lambda: maildir_messages(box), what="delivery to the MX")


def test_enforce_valid_certificate(run, policy_server):
    before = policy_server.requests
    sender, mx = run("enforce", "mx.sts.test")
    sender.wait_log(r"Trusted TLS connection established to mx\.sts\.test\[127\.0\.0\.1\]")
    sender.wait_log(r"to=<carol@sts\.test>, relay=mx\.sts\.test\[127\.0\.0\.1\]:\d+, .*status=sent")
    delivered(mx)
    assert policy_server.requests == before + 1


def test_enforce_wrong_certificate_defers(run):
    sender, mx = run("enforce", "wrong.test")
    sender.wait_log(r"to=<carol@sts\.test>, .*status=deferred \(.*TLS certificate verification of "
                    r"mx\.sts\.test\[127\.0\.0\.1\] failed \(MTA-STS policy of sts\.test\)")
    assert maildir_messages(mx.maildir("carol@sts.test")) == []


def test_enforce_mx_not_in_policy_defers(run):
    sender, mx = run("enforce", "mx.sts.test", policy_mx="other.sts.test")
    sender.wait_log(r"MX host mx\.sts\.test is not in the policy: skipped")
    sender.wait_log(r"to=<carol@sts\.test>, relay=none, .*dsn=4\.7\.5, status=deferred \(no MX "
                    r"host of this domain matches its MTA-STS policy\)")


def test_testing_mode_delivers_and_logs(run):
    sender, mx = run("testing", "wrong.test", policy_mx="*.sts.test")
    sender.wait_log(r"MTA-STS policy of sts\.test \(mode testing\): certificate of "
                    r"mx\.sts\.test\[127\.0\.0\.1\] would not be accepted")
    sender.wait_log(r"to=<carol@sts\.test>, .*status=sent")
    delivered(mx)


def test_none_mode_and_no_record_are_opportunistic(run):
    sender, mx = run("none", "wrong.test")
    sender.wait_log(r"Untrusted TLS connection established to mx\.sts\.test")
    sender.wait_log(r"to=<carol@sts\.test>, .*status=sent")
    sender2, mx2 = run("enforce", "wrong.test", sts_id=None)  # no _mta-sts record
    sender2.wait_log(r"to=<carol@sts\.test>, .*status=sent")
    assert "MTA-STS" not in sender2.log_text()


def test_tls_reports(run):
    """The failed and the successful sessions of the day end up in an RFC 8460 report."""
    import base64
    import datetime
    import email
    import gzip
    import json
    sender, mx = run("enforce", "wrong.test")
    sender.wait_log(r"to=<carol@sts\.test>, .*status=deferred \(.*TLS certificate verification")
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = sender.cli("tlsrpt", "send", day).stdout
    assert out.startswith("1 TLS report(s) of %s queued" % day), out
    # sent once only
    assert sender.cli("tlsrpt", "send", day).stdout.startswith("0 TLS report(s)")
    box = sender.maildir("alice@example.test")
    wait_for(lambda: maildir_messages(box), what="the TLS report in alice's mailbox")
    msg = email.message_from_bytes(open(maildir_messages(box)[0], "rb").read())
    assert msg["TLS-Report-Domain"] == "sts.test"
    assert msg["Subject"].startswith("Report Domain: sts.test Submitter: mail.example.test")
    assert 'report-type="tlsrpt"' in msg["Content-Type"]
    part = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"][0]
    assert part.get_filename().startswith("mail.example.test!sts.test!")
    report = json.loads(gzip.decompress(part.get_payload(decode=True)))
    assert report["organization-name"] == "mail.example.test"
    assert report["date-range"]["start-datetime"] == day + "T00:00:00Z"
    pol = report["policies"][0]
    assert pol["policy"] == {"policy-type": "sts", "policy-domain": "sts.test"}
    assert pol["summary"]["total-failure-session-count"] >= 1
    detail = pol["failure-details"][0]
    assert detail["result-type"] == "certificate-host-mismatch"
    assert detail["receiving-mx-hostname"] == "mx.sts.test"
    assert detail["receiving-ip"] == "127.0.0.1"


def test_policy_cache_survives_restart(run, policy_server):
    """RFC 8461 §5.1: a cached policy stays in force across a restart, without a fetch."""
    sender, mx = run("enforce", "mx.sts.test")
    sender.wait_log(r"to=<carol@sts\.test>, .*status=sent")
    assert (sender.data_dir / "mta-sts" / "sts.test").exists()
    fetched = policy_server.requests
    policy_server.policy = "not a policy"  # a fetch now would fail
    sender.stop()
    sender.start()
    offset = sender.log_offset()
    submit(sender)
    sender.wait_log(r"Trusted TLS connection established to mx\.sts\.test", since=offset)
    sender.wait_log(r"to=<carol@sts\.test>, .*status=sent", since=offset)
    assert policy_server.requests == fetched


class ReportServer:
    """HTTPS on loopback taking TLS-RPT reports by POST (RFC 8460 §5.3.1): answers
    self.status and keeps (content type, decoded report) of each POST."""

    def __init__(self, pki):
        import gzip
        import json
        self.status = 200
        self.posts = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((self.path, self.headers["Content-Type"],
                                    json.loads(gzip.decompress(body))))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki / "reports.sts.test.pem"), str(pki / "reports.sts.test.key"))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_tls_reports_https(tern_factory, pki):
    """RFC 8460 §5.3.1: the report POSTed gzip'd to an https: rua, besides the mailto: one;
    a failed POST is tried again by the next run, which sends nothing else twice."""
    day = "2026-01-15"
    reports = ReportServer(pki)
    url = "https://reports.sts.test:%d/tlsrpt/v1" % reports.port
    dns = DnsServer({("_smtp._tls.sts.test", "TXT"):
                     ["v=TLSRPTv1; rua=%s,mailto:alice@example.test" % url],
                     ("reports.sts.test", "A"): ["127.0.0.1"]})
    try:
        sender = tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port,
                               "outbound.ca_file": str(pki / "ca.pem")})
        (sender.data_dir / "tlsrpt").mkdir(exist_ok=True)
        (sender.data_dir / "tlsrpt" / day).write_text(
            "sts.test\tsts\tsuccess\tmx.sts.test\t127.0.0.1\n"
            "sts.test\tsts\tcertificate-host-mismatch\tmx.sts.test\t127.0.0.1\n")
        reports.status = 503
        p = sender.cli("tlsrpt", "send", day)
        assert p.stdout.startswith("1 TLS report(s) of %s queued, 0 posted, 1 to try again" % day)
        assert re.search(r"TLS report for sts\.test \(%s\) to %s not delivered: HTTP status "
                         r"503; tried again later" % (day, re.escape(url)), p.stderr), p.stderr
        assert len(reports.posts) == 1
        reports.status = 200
        p = sender.cli("tlsrpt", "send", day)
        assert p.stdout.startswith("0 TLS report(s) of %s queued, 1 posted, 0 to try again" % day)
        assert re.search(r"TLS report for sts\.test \(%s\) posted to %s: HTTP 200"
                         % (day, re.escape(url)), p.stderr), p.stderr
        path, ctype, report = reports.posts[-1]
        assert path == "/tlsrpt/v1" and ctype == "application/tlsrpt+gzip"
        assert report["organization-name"] == "mail.example.test"
        assert report["date-range"]["start-datetime"] == day + "T00:00:00Z"
        pol = report["policies"][0]
        assert pol["policy"] == {"policy-type": "sts", "policy-domain": "sts.test"}
        assert pol["summary"] == {"total-successful-session-count": 1,
                                  "total-failure-session-count": 1}
        assert pol["failure-details"][0]["result-type"] == "certificate-host-mismatch"
        # done: a third run sends nothing
        assert sender.cli("tlsrpt", "send", day).stdout.startswith(
            "0 TLS report(s) of %s queued, 0 posted, 0 to try again" % day)
        assert len(reports.posts) == 2
        # the mailto: copy was queued once and reaches alice
        box = sender.maildir("alice@example.test")
        wait_for(lambda: maildir_messages(box), what="the TLS report by mail")
        assert len(maildir_messages(box)) == 1
    finally:
        dns.close()
        reports.close()


def test_tls_reports_https_retried_by_the_runner(tern_factory, pki):
    """The queue runner sends yesterday's reports at start; an https: receiver that fails
    gets the report again on the queue's retry schedule (queue.retry_min, doubling)."""
    import datetime
    day = (datetime.datetime.now(datetime.timezone.utc)
           - datetime.timedelta(days=1)).strftime("%Y-%m-%d")
    reports = ReportServer(pki)
    reports.status = 503
    url = "https://reports.sts.test:%d/v1" % reports.port
    dns = DnsServer({("_smtp._tls.sts.test", "TXT"): ["v=TLSRPTv1; rua=%s" % url],
                     ("reports.sts.test", "A"): ["127.0.0.1"]})
    try:
        sender = tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port,
                               "outbound.ca_file": str(pki / "ca.pem"),
                               "queue.retry_min": "1"}, start=False)
        (sender.data_dir / "tlsrpt").mkdir(exist_ok=True)
        (sender.data_dir / "tlsrpt" / day).write_text(
            "sts.test\tsts\tstarttls-not-supported\tmx.sts.test\t127.0.0.1\n")
        sender.chown_data()
        sender.start()
        sender.wait_log(r"tern/tlsrpt\[\d+\]: warning: TLS report for sts\.test \(%s\) to %s not "
                        r"delivered: HTTP status 503; tried again later" % (day, re.escape(url)),
                        timeout=30)
        reports.status = 200
        sender.wait_log(r"tern/tlsrpt\[\d+\]: TLS report for sts\.test \(%s\) posted to %s: "
                        r"HTTP 200" % (day, re.escape(url)), timeout=30)
        wait_for(lambda: (sender.data_dir / "tlsrpt" / (day + ".sent")).exists(),
                 what="the day marked sent")
        ok = [p for p in reports.posts]
        assert len(ok) >= 2 and ok[-1][2]["policies"][0]["failure-details"][0]["result-type"] \
            == "starttls-not-supported"
    finally:
        dns.close()
        reports.close()
