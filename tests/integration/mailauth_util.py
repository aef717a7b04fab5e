"""
mailauth_util.py - helpers for the mail authentication tests (issue 12): DKIM records from
`tern dkim keygen` output, dkimpy verification against those records, and a DNS server in
a private network namespace on port 53 for tools that only read /etc/resolv.conf
(OpenDKIM's opendkim-testmsg, pyspf).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def zone_txt_records(text):
    """{name: value} from zone-file TXT lines ('name. 3600 IN TXT ( "a" "b" )')."""
    out = {}
    for m in re.finditer(r'^(\S+)\.\s+\d+\s+IN\s+TXT\s+\((.*?)\)\s*$', text, re.M):
        out[m.group(1).lower()] = "".join(re.findall(r'"([^"]*)"', m.group(2)))
    return out


def keygen(srv, domain, selector=None, *flags):
    args = ["dkim", "keygen", domain] + ([selector] if selector else []) + list(flags)
    return zone_txt_records(srv.cli(*args).stdout)


def dkimpy_verify_all(message, records):
    """dkimpy's verdict for every DKIM-Signature of message (bytes), top first."""
    import dkim

    def dnsfunc(name, timeout=5):
        key = name.decode() if isinstance(name, bytes) else name
        val = records.get(key.rstrip(".").lower())
        return val.encode() if val else None

    n = len(re.findall(rb"^DKIM-Signature:", message, re.M | re.I))
    out = []
    for i in range(n):
        try:
            out.append(bool(dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc)))
        except dkim.DKIMException:
            out.append(False)
    return out


def has_netns():
    """Can this machine make a private network namespace (root, unshare, ip)?"""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    cp = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True)
    return cp.returncode == 0


def run_with_private_dns(records, argv, stdin=b"", timeout=60):
    """Run argv in a new network + mount namespace where /etc/resolv.conf names a DNS
    server on 127.0.0.1:53 answering records ({(name, type): [values]}). Only loopback
    exists in there. Returns the CompletedProcess."""
    tmp = Path(tempfile.mkdtemp(prefix="tern-netns-"))
    try:
        (tmp / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
        (tmp / "records.json").write_text(json.dumps(
            [[k[0], k[1], v] for k, v in records.items()]))
        (tmp / "stdin").write_bytes(stdin)
        script = (
            "set -e; ip link set lo up; mount --bind %(t)s/resolv.conf /etc/resolv.conf; "
            "%(py)s %(here)s/mailauth_util.py serve-dns %(t)s/records.json & dns=$!; "
            "for i in $(seq 100); do [ -e %(t)s/records.json.ready ] && break; sleep 0.05; done; "
            "set +e; \"$@\" < %(t)s/stdin; rc=$?; kill $dns; wait $dns; exit $rc"
        ) % {"t": tmp, "py": sys.executable, "here": HERE}
        return subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script, "sh"] + argv,
                              capture_output=True, timeout=timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _serve_dns(path):
    """Inside the namespace: DnsServer on 127.0.0.1:53 until killed."""
    import socket
    import threading
    sys.path.insert(0, str(HERE))
    import outbound_util
    rows = json.loads(Path(path).read_text())
    records = {}
    for name, rtype, values in rows:
        records[(name, rtype)] = [tuple(v) if isinstance(v, list) else v for v in values]
    srv = outbound_util.DnsServer.__new__(outbound_util.DnsServer)
    srv.records = {(k[0].lower().rstrip("."), k[1]): v for k, v in records.items()}
    srv.queries = []
    srv.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.udp.bind(("127.0.0.1", 53))
    srv.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.tcp.bind(("127.0.0.1", 53))
    srv.tcp.listen(16)
    srv.udp.settimeout(0.2)
    srv.tcp.settimeout(0.2)
    srv.running = True
    threads = [threading.Thread(target=srv._serve_udp, daemon=True),
               threading.Thread(target=srv._serve_tcp, daemon=True)]
    for t in threads:
        t.start()
    Path(path + ".ready").write_text("1")
    for t in threads:
        t.join()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "serve-dns":
    _serve_dns(sys.argv[2])


def make_test_pki(d, names):
    """A test CA (d/ca.pem) and a leaf certificate d/<name>.pem with key d/<name>.key for
    each name (subjectAltName DNS:<name>), all readable by the servers' users."""
    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=Tern test CA")
    for name in names:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
                name + ".csr", "-subj", "/CN=" + name)
        (Path(d) / (name + ".ext")).write_text("subjectAltName=DNS:%s\n" % name)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile",
                name + ".ext")
    for f in Path(d).iterdir():
        os.chmod(f, 0o644)
