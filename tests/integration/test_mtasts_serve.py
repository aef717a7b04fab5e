"""
test_mtasts_serve.py - Tern serving its own MTA-STS policy over HTTPS (issue 12,
mta_sts.listen, src/http/): curl with the test CA and SNI, the policy text `tern dns
records` prints, 404/405/400 answers, one request per connection, the SNI certificate
choice, the single-process mode, and Tern's own MTA-STS client fetching the policy from a
Tern that serves it (and enforcing it).
"""

import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import free_ports
from mailauth_util import make_test_pki
from outbound_util import DnsServer
from tern_util import maildir_messages, wait_for

HOST = "mta-sts.example.test"
PATH = "/.well-known/mta-sts.txt"
POLICY = (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\n"
          b"mx: *.backup.example.test\r\nmax_age: 86400\r\n")


@pytest.fixture(scope="module")
def pki():
    d = Path(tempfile.mkdtemp(prefix="tern-pki-"))
    os.chmod(d, 0o755)
    make_test_pki(d, (HOST, "mta-sts.sts.test", "mx.sts.test"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def sts_config(pki, port, host=HOST, **extra):
    cfg = {"mta_sts.listen": "127.0.0.1:%d" % port,
           "tls.sni_certs": "%s:%s" % (pki / (host + ".pem"), pki / (host + ".key"))}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def server(tern_module_factory, pki):
    port = free_ports(1)[0]
    srv = tern_module_factory(sts_config(pki, port, **{
        "mta_sts.mode": "enforce", "mta_sts.mx": "mail.example.test, *.backup.example.test",
        "mta_sts.max_age": "86400"}))
    srv.sts_port = port
    return srv


def curl(srv, pki, *args, host=HOST, path=PATH):
    """curl over HTTPS with SNI and the test CA; (status, headers, body)."""
    url = "https://%s:%d%s" % (host, srv.sts_port, path)
    p = subprocess.run(["curl", "-sS", "--max-time", "20", "-D", "-", "--resolve",
                        "%s:%d:127.0.0.1" % (host, srv.sts_port), "--cacert",
                        str(pki / "ca.pem")] + list(args) + [url],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def raw(srv, request, server_hostname=HOST, timeout=20):
    """Send request bytes over TLS and read until the server closes: the answer."""
    ctx = ssl.create_default_context(cafile=None)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", srv.sts_port), timeout=timeout) as s:
        with ctx.wrap_socket(s, server_hostname=server_hostname) as t:
            if request:
                t.sendall(request)
            out = b""
            while True:
                try:
                    chunk = t.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not chunk:
                    break
                out += chunk
    return out


def policy_lines(text):
    return [ln for ln in text.splitlines() if ln]


def test_curl_gets_the_policy(server, pki):
    status, headers, body = curl(server, pki)
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert headers["connection"] == "close"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers["date"])
    assert int(headers["content-length"]) == len(body)
    assert body == POLICY
    server.wait_log(r"tern/mta-sts\[\d+\]: GET /\.well-known/mta-sts\.txt "
                    r"host=mta-sts\.example\.test client=\[127\.0\.0\.1\]: 200")
    # the same text `tern dns records` tells the admin to publish, and its id hashes it
    out = server.cli("dns", "records", "example.test").stdout
    printed = re.findall(r"^;   (\S.*)$", out, re.M)
    assert printed == policy_lines(body.decode())


def test_head_and_wrong_requests(server, pki):
    answer = raw(server, b"HEAD " + PATH.encode() + b" HTTP/1.1\r\nHost: " + HOST.encode() +
                 b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: %d\r\n" % len(POLICY) in head
    assert body == b""  # RFC 9110 §9.3.2: the headers of GET, no content
    assert curl(server, pki, path="/other.txt")[0] == 404
    assert curl(server, pki, path=PATH + "?x=1")[0] == 404
    status, headers, _ = curl(server, pki, "-X", "DELETE")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert curl(server, pki, "--data", "x")[0] == 413  # no request content accepted
    # a name that is not mta-sts.<one of our domains>: the default certificate, 404
    status, _, _ = curl(server, pki, "-k", host="mta-sts.other.test")
    assert status == 404
    status, _, _ = curl(server, pki, "-k", host="www.example.test")
    assert status == 404


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET " + PATH.encode() + b" HTTP/1.1\nHost: " + HOST.encode() + b"\n\n", 400),  # bare LF
    (b"GET " + PATH.encode() + b" HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost : " + HOST.encode() + b"\r\n\r\n", 400),
    (b"GET " + PATH.encode() + b" HTTP/2.0\r\nHost: " + HOST.encode() + b"\r\n\r\n", 505),
    (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: " + HOST.encode() +
     b"\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
])
def test_malformed_requests(server, request_bytes, status):
    answer = raw(server, request_bytes)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:100]


def test_one_request_per_connection(server):
    """A pipelined second request is never answered: one answer, then the close."""
    one = b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
    answer = raw(server, one + one + one)
    assert answer.count(b"HTTP/1.1 ") == 1
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"max_age: 86400\r\n")


def test_silent_client_is_closed(server):
    """A client that sends nothing after the handshake gets 408 and the close (within the
    server's read timeout; the bound here only stops a hang)."""
    answer = raw(server, b"", timeout=40)
    assert answer.startswith(b"HTTP/1.1 408 ")
    server.wait_log(r"tern/mta-sts\[\d+\]: timeout: no complete request from \[127\.0\.0\.1\]")


def test_sni_picks_the_certificate(server, pki):
    def subject(name):
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % server.sts_port,
                            "-servername", name], input=b"", capture_output=True, timeout=30)
        m = re.search(rb"subject=\s*/?CN\s*=\s*(\S+)", p.stdout)
        return m.group(1).decode() if m else p.stdout.decode()[:300]
    assert subject(HOST) == HOST
    assert subject("mail.example.test") == "mail.example.test"  # the default (generated)


def test_single_process_mode(tern_factory, pki):
    port = free_ports(1)[0]
    srv = tern_factory(sts_config(pki, port, master_process="no"))
    srv.sts_port = port
    status, _, body = curl(srv, pki)
    assert status == 200
    assert body == b"version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"


def test_reload_adds_listener_and_certificate(tern_factory, pki):
    """SIGHUP with a configuration that turns the listener on and names its certificate:
    the new generation serves the policy with the mta-sts.<domain> certificate."""
    srv = tern_factory()
    port = free_ports(1)[0]
    srv.sts_port = port
    srv.write_config(sts_config(pki, port, **{"mta_sts.mode": "none"}))
    since = srv.log_offset()
    os.kill(srv.pid, signal.SIGHUP)
    srv.wait_log(r"reload: configuration reloaded, generation 1", since=since)
    status, _, body = curl(srv, pki)  # verified against the test CA: the SNI certificate
    assert status == 200 and b"mode: none\r\n" in body


def test_bad_config_stops_start(tern_factory):
    srv = tern_factory(start=False)
    for key, value in (("mta_sts.mode", "strict"), ("mta_sts.max_age", "31557601"),
                       ("mta_sts.mx", "mx..example.test"), ("tls.sni_certs", ":key.pem")):
        p = srv.cli("-o", "%s=%s" % (key, value), "config", "check", check=False)
        assert p.returncode != 0 and key in p.stderr, (key, p.stderr)


# ---- Tern's own MTA-STS client against a Tern that serves the policy -------------------

def submit(srv):
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=15) as s:
        s.login("alice@example.test", "alicepw")
        s.sendmail("alice@example.test", ["carol@sts.test"],
                   b"From: alice@example.test\r\nTo: carol@sts.test\r\nSubject: sts\r\n\r\nhi\r\n")


@pytest.mark.parametrize("policy_mx, is_delivered", [("mx.sts.test", True),
                                                     ("other.sts.test", False)])
def test_tern_fetches_policy_from_tern(tern_factory, pki, policy_mx, is_delivered):
    port = free_ports(1)[0]
    mx = tern_factory(dict(sts_config(pki, port, host="mta-sts.sts.test"), **{
        "hostname": "mx.sts.test", "tls.cert": str(pki / "mx.sts.test.pem"),
        "tls.key": str(pki / "mx.sts.test.key"), "mta_sts.mode": "enforce",
        "mta_sts.mx": policy_mx}), start=False)
    mx.cli("domain", "add", "sts.test")
    mx.cli("user", "add", "carol@sts.test", "--password-stdin", input="carolpw\n")
    mx.start()
    dns = DnsServer({("sts.test", "MX"): [(10, "mx.sts.test")],
                     ("mx.sts.test", "A"): ["127.0.0.1"],
                     ("mta-sts.sts.test", "A"): ["127.0.0.1"],
                     ("_mta-sts.sts.test", "TXT"): ["v=STSv1; id=20261206"]})
    try:
        sender = tern_factory({"dns.resolver": "127.0.0.1@%d" % dns.port,
                               "outbound.port": str(mx.ports["smtp"]),
                               "outbound.mta_sts_port": str(port),
                               "outbound.ca_file": str(pki / "ca.pem")})
        submit(sender)
        mx.wait_log(r"tern/mta-sts\[\d+\]: GET /\.well-known/mta-sts\.txt "
                    r"host=mta-sts\.sts\.test client=\[127\.0\.0\.1\]: 200")
        if is_delivered:
            sender.wait_log(r"Trusted TLS connection established to mx\.sts\.test\[127\.0\.0\.1\]")
            sender.wait_log(r"to=<carol@sts\.test>, relay=mx\.sts\.test\[127\.0\.0\.1\]:\d+, "
                            r".*status=sent")
            wait_for(lambda: maildir_messages(mx.maildir("carol@sts.test")),
                     what="delivery to the MX")
        else:
            sender.wait_log(r"to=<carol@sts\.test>, relay=none, .*dsn=4\.7\.5, status=deferred "
                            r"\(no MX host of this domain matches its MTA-STS policy\)")
            assert maildir_messages(mx.maildir("carol@sts.test")) == []
        assert (sender.data_dir / "mta-sts" / "sts.test").exists()
    finally:
        dns.close()
