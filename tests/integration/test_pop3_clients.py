"""
test_pop3_clients.py - real POP3 clients against the real tern: Python poplib (plain, STLS,
implicit TLS on the pop3s port), curl pop3:// and pop3s://, fetchmail fetching and deleting
(keep / nokeep, SSL and STLS), openssl s_client -starttls pop3 and on the pop3s port.
"""

import os
import re
import shutil
import smtplib
import subprocess
import tempfile
from pathlib import Path

import pytest

from tern_util import IO_TIMEOUT, openssl_s_client, tls_context
from test_pop3_lib import deliver_file, fresh_user, list_size, pop3, sample_message

CURL = shutil.which("curl")
FETCHMAIL = shutil.which("fetchmail")


def test_poplib_plain(tern):
    msgs = [sample_message(i) for i in range(3)]
    user, pw = fresh_user(tern, "pl", msgs)
    p = pop3(tern, user, pw)
    count, total = p.stat()
    assert count == 3 and total == sum(list_size(m) for m in msgs)
    resp, listing, _ = p.list()
    assert resp.startswith(b"+OK")
    assert [int(x.split()[1]) for x in listing] == [list_size(m) for m in msgs]
    resp, lines, octets = p.retr(2)
    # poplib strips CRLF and un-stuffs: the lines are the stored message's lines
    assert lines == [ln.encode() for ln in msgs[1].rstrip("\n").split("\n")]
    # the reply announces the size LIST gave: the octets less byte-stuffing (RFC 1939
    # §11), which is also poplib's own count
    assert resp == f"+OK {list_size(msgs[1])} octets".encode()
    assert octets == list_size(msgs[1])
    resp, uidls, _ = p.uidl()
    ids = [x.split()[1] for x in uidls]
    assert len(set(ids)) == 3 and all(0x21 <= b <= 0x7e for i in ids for b in i)
    p.dele(1)
    assert p.stat()[0] == 2
    p.rset()
    assert p.stat()[0] == 3
    p.dele(3)
    assert p.quit().startswith(b"+OK Logging out, messages deleted")
    p = pop3(tern, user, pw)
    assert p.stat()[0] == 2
    # UIDL values survive sessions
    assert [x.split()[1] for x in p.uidl()[1]] == ids[:2]
    p.quit()


# Stored forms a maildrop holds: tern's own LF files, and what other programs leave.
QUIRKY_MESSAGES = (
    "Subject: dots\n\n.\n..\n.leading dot\n...three\nplain\n",  # LF, dot-lines
    "Subject: crlf\r\n\r\n.dot\r\nline\r\n",  # CRLF file
    "Subject: cr only\r\r.not a line start\rlast\r",  # CR-only line ends
    "Subject: mixed\n\r\n.a\r\nb\rc\n.\n",
    "Subject: open end\n\n.last line without newline",
)


def test_poplib_list_size_is_retr_size_unstuffed(tern):
    """RFC 1939 §11: LIST/STAT count a message as RETR delivers it once unstuffed; lines
    starting with '.' are not counted twice. poplib's RETR octet count is exactly that."""
    msgs = list(QUIRKY_MESSAGES)
    user, pw = fresh_user(tern, "sz", msgs)
    # and one through SMTP: the size is then the Maildir W= size, as Dovecot lists it
    body = "Subject: via smtp\r\n\r\n.one\r\n..two\r\nthree\r\n"
    with smtplib.SMTP(tern.host, tern.ports["smtp"], timeout=IO_TIMEOUT) as s:
        s.sendmail("a@example.org", [user], body.encode())
    maildir = tern.maildir(user)
    names = [f.name for f in (maildir / "new").iterdir() if ",W=" in f.name]
    assert len(names) == 1, names
    w_size = int(re.search(r",W=(\d+)", names[0]).group(1))
    want = {m.split("\n")[0].split("\r")[0]: list_size(m) for m in msgs}
    want["Subject: via smtp"] = w_size
    p = pop3(tern, user, pw)
    listing = {int(n): int(size) for n, size in (x.split() for x in p.list()[1])}
    assert len(listing) == len(want)
    for i, size in listing.items():
        resp, lines, octets = p.retr(i)
        assert resp == f"+OK {size} octets".encode()
        assert octets == size, (i, lines)  # poplib's count of the unstuffed octets
        subject = next(ln for ln in lines if ln.startswith(b"Subject:")).decode()
        assert size == want.pop(subject.split("\r")[0]), (i, lines)
    assert not want
    assert p.stat() == (len(listing), sum(listing.values()))
    p.quit()


def test_poplib_stls_and_capa(tern):
    user, pw = fresh_user(tern, "st", [sample_message(1)])
    p = pop3(tern)
    caps = p.capa()
    assert "STLS" in caps and "USER" in caps  # loopback: plaintext allowed
    p.stls(context=tls_context())
    caps = p.capa()
    assert "STLS" not in caps  # RFC 2595: not offered once TLS is active
    p.user(user)
    p.pass_(pw)
    assert p.stat()[0] == 1
    p.quit()
    tern.wait_log(rf"Login: user=<{user}>, method=PLAIN, rip=127\.0\.0\.1, lip=127\.0\.0\.1, TLS")


def test_poplib_pop3s(tern):
    user, pw = fresh_user(tern, "ps", [sample_message(1), sample_message(2)])
    p = pop3(tern, user, pw, port="pop3s", tls=True)
    assert p.stat()[0] == 2
    assert "STLS" not in p.capa()
    resp, lines, octets = p.top(1, 0)
    assert lines[-1] == b""  # header, then the blank line
    p.quit()


def test_poplib_apop_and_sasl_plain(tern):
    user, pw = fresh_user(tern, "ap", [sample_message(1)])
    p = pop3(tern)
    p.apop(user, pw)
    assert p.stat()[0] == 1
    p.quit()
    p = pop3(tern)
    # poplib has no AUTH; drive AUTH PLAIN through its command helpers
    from tern_util import sasl_plain
    assert p._shortcmd(f"AUTH PLAIN {sasl_plain(user, pw)}").startswith(b"+OK Logged in")
    p.quit()


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_curl_pop3_and_pop3s(tern):
    msgs = [sample_message(1), sample_message(2)]
    user, pw = fresh_user(tern, "cu", msgs)
    base = ["curl", "-sS", "--max-time", "30", "-u", f"{user}:{pw}"]
    out = subprocess.run(base + [f"pop3://{tern.host}:{tern.ports['pop3']}/"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    sizes = [list_size(m) for m in msgs]
    assert out.stdout.replace(b"\r\n", b"\n") == f"1 {sizes[0]}\n2 {sizes[1]}\n".encode()
    out = subprocess.run(base + [f"pop3://{tern.host}:{tern.ports['pop3']}/2"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.replace(b"\r\n", b"\n") == msgs[1].encode()
    out = subprocess.run(base + ["-k", f"pop3s://{tern.host}:{tern.ports['pop3s']}/1"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.replace(b"\r\n", b"\n") == msgs[0].encode()
    # STLS required by the client (--ssl-reqd) on the plain port
    out = subprocess.run(base + ["-k", "--ssl-reqd",
                                 f"pop3://{tern.host}:{tern.ports['pop3']}/1"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.replace(b"\r\n", b"\n") == msgs[0].encode()
    # curl DELE via a custom request
    out = subprocess.run(base + ["-X", "DELE", "-I",
                                 f"pop3://{tern.host}:{tern.ports['pop3']}/1"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    p = pop3(tern, user, pw)
    assert p.stat()[0] == 1
    p.quit()


def _fetchmail(tern, user, pw, port, opts, keep):
    """Run fetchmail once with a generated rc file; the mda appends each message to a
    file followed by a marker line. Returns (CompletedProcess, delivered text)."""
    home = Path(tempfile.mkdtemp(prefix="fetchmail-"))
    out_file = home / "mbox"
    mda = home / "mda.sh"
    mda.write_text(f"#!/bin/sh\ncat >> {out_file}\necho '--END--' >> {out_file}\n")
    mda.chmod(0o755)
    rc = home / "fetchmailrc"
    rc.write_text(
        f"set no syslog\n"
        f"poll {tern.host} service {port} protocol pop3 uidl timeout 60\n"
        f"  user \"{user}\" password \"{pw}\" is root here\n"
        f"  {'keep' if keep else 'nokeep'} fetchall {opts} mda \"{mda}\"\n")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    cp = subprocess.run([FETCHMAIL, "-f", str(rc), "-v", "--nodetach", "--nosyslog"],
                        capture_output=True, text=True, timeout=120, env=env)
    text = out_file.read_text() if out_file.exists() else ""
    shutil.rmtree(home, ignore_errors=True)
    return cp, text


@pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail not installed (apt-get install fetchmail)")
@pytest.mark.parametrize("mode", ["plain", "stls", "ssl"])
def test_fetchmail_fetch_keep_then_delete(tern, mode):
    msgs = [sample_message(i, body=f"body {i}\n.dot line\n") for i in range(3)]
    user, pw = fresh_user(tern, "fm", msgs)
    port, opts = {
        "plain": (tern.ports["pop3"], "sslproto ''"),  # no opportunistic STLS
        # fetchmail: sslproto without ssl = STLS on the plain port, required
        "stls": (tern.ports["pop3"], "sslproto tls1.2+ no sslcertck"),
        "ssl": (tern.ports["pop3s"], "ssl no sslcertck"),
    }[mode]
    cp, text = _fetchmail(tern, user, pw, port, opts, keep=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert text.count("--END--") == 3, cp.stdout + cp.stderr
    # fetchmail announces the STAT total and each message's LIST size: no byte-stuffing
    out = cp.stdout + cp.stderr
    assert re.search(rf"3 messages for .* \({sum(list_size(m) for m in msgs)} octets\)", out), out
    announced = [int(n) for n in re.findall(r"of 3 \((\d+) octets\)", out)]
    assert announced == [list_size(m) for m in msgs], out
    for i in range(3):
        assert f"body {i}\n.dot line\n" in text  # un-stuffed by fetchmail
    if mode == "stls":
        assert "STLS" in cp.stdout + cp.stderr
    p = pop3(tern, user, pw)
    assert p.stat()[0] == 3  # keep
    p.quit()
    cp, text = _fetchmail(tern, user, pw, port, opts, keep=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert text.count("--END--") == 3
    p = pop3(tern, user, pw)
    assert p.stat() == (0, 0)  # nokeep: fetched and deleted
    p.quit()


def test_openssl_starttls_pop3(tern):
    user, pw = fresh_user(tern, "os", [sample_message(1)])
    out = openssl_s_client(tern.ports["pop3"], [
        (None, r"^\+OK"),
        (f"USER {user}", r"^\+OK"),
        (f"PASS {pw}", r"^\+OK Logged in\."),
        ("STAT", r"^\+OK 1 \d+"),
        ("QUIT", r"^\+OK Logging out\."),
    ], starttls="pop3")
    assert "+OK Logged in." in out


def test_openssl_pop3s(tern):
    user, pw = fresh_user(tern, "o9", [sample_message(1)])
    out = openssl_s_client(tern.ports["pop3s"], [
        (None, r"^\+OK POP3 ready"),
        (f"USER {user}", r"^\+OK"),
        (f"PASS {pw}", r"^\+OK Logged in\."),
        ("RETR 1", r"^\.\r?$"),
        ("QUIT", r"^\+OK Logging out\."),
    ])
    assert "Hello 1." in out


def test_sasl_scram_sha_256(tern):
    """AUTH SCRAM-SHA-256 (RFC 5802/7677) with a client written here; the server-final
    message comes as a last '+' challenge answered by an empty line (RFC 5034 §4)."""
    import base64
    import hashlib
    import hmac
    import secrets

    from tern_util import Client, converse
    user, pw = fresh_user(tern, "sc", [sample_message(1)])
    c = Client(tern.host, tern.ports["pop3"])
    c.read_line()
    cnonce = secrets.token_hex(12)
    first_bare = f"n={user},r={cnonce}"
    c.send("AUTH SCRAM-SHA-256 " + base64.b64encode(("n,," + first_bare).encode()).decode())
    line = c.read_line()
    assert line.startswith("+ "), line
    server_first = base64.b64decode(line[2:].strip()).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(cnonce)
    salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    final_wo_proof = f"c=biws,r={attrs['r']}"
    auth_msg = f"{first_bare},{server_first},{final_wo_proof}".encode()
    signature = hmac.new(stored_key, auth_msg, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    c.send(base64.b64encode(
        f"{final_wo_proof},p={base64.b64encode(proof).decode()}".encode()).decode())
    line = c.read_line()
    assert line.startswith("+ "), line
    server_final = base64.b64decode(line[2:].strip()).decode()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    want = base64.b64encode(hmac.new(server_key, auth_msg, hashlib.sha256).digest()).decode()
    assert server_final == f"v={want}"
    converse(c, [("", r"^\+OK Logged in\."), ("STAT", r"^\+OK 1 "), ("QUIT", r"^\+OK")])
    c.close()
    tern.wait_log(rf"Login: user=<{user}>, method=SCRAM-SHA-256")
