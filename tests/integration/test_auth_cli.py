"""
test_auth_cli.py - the directory CLI (`tern domain|user|alias|hash-password`) and the
password schemes against Dovecot itself: hashes made by `doveadm pw` at test time must
verify with `tern hash-password -t`, and hashes made by tern must verify with
`doveadm pw -t` (skipped when doveadm is not installed).

The CLI tests need only the binary and a config (no server). The last tests use the
`tern` server fixture: SCRAM-SHA-256 and CRAM-MD5 over SMTP AUTH with Python clients,
and a user added while the server runs can log in at once.
"""

import base64
import hashlib
import hmac
import imaplib
import os
import pwd
import re
import secrets
import shutil
import smtplib
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import _system_user, tern_bin

DOVEADM = shutil.which("doveadm")
needs_doveadm = pytest.mark.skipif(DOVEADM is None, reason="doveadm (dovecot-core) not installed")

# Every scheme both Dovecot and tern understand.
SCHEMES = ["ARGON2ID", "ARGON2I", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "CRYPT",
           "MD5-CRYPT", "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "CLEAR",
           "PLAIN-MD5", "SHA", "SHA1", "SHA256", "SSHA", "SSHA256", "SHA512", "SSHA512"]
PASSWORDS = ["secret", "p@ss wörd", "x" * 80, "with:colon,and=equals"]


class Cli:
    """A config + data dir and a way to run `tern -c CONFIG ...` against them."""

    def __init__(self, root):
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.config_path = self.root / "tern.conf"
        self.config_path.write_text(
            f"data_dir = {self.data_dir}\n"
            "auth.password_schemes = SHA512-CRYPT SCRAM-SHA-256 CRAM-MD5 PLAIN\n")

    def run(self, *args, input="", config=True):
        cmd = [str(tern_bin())]
        if config:
            cmd += ["-c", str(self.config_path)]
        cmd += [str(a) for a in args]
        return subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=120)

    def ok(self, *args, input=""):
        cp = self.run(*args, input=input)
        assert cp.returncode == 0, f"{args}: exit {cp.returncode}\n{cp.stderr}"
        return cp


@pytest.fixture
def cli():
    if not tern_bin().exists():
        pytest.skip(f"tern binary not built at {tern_bin()}")
    root = tempfile.mkdtemp(prefix="tern-auth-cli-")
    os.chmod(root, 0o755)
    yield Cli(root)
    shutil.rmtree(root, ignore_errors=True)


def doveadm_hash(scheme, password):
    cp = subprocess.run([DOVEADM, "pw", "-s", scheme, "-p", password], text=True,
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.strip()


# ---- password schemes vs Dovecot ----------------------------------------------------

@needs_doveadm
@pytest.mark.parametrize("scheme", SCHEMES)
def test_doveadm_hashes_verify(cli, scheme):
    for password in PASSWORDS:
        stored = doveadm_hash(scheme, password)
        assert stored.startswith("{")
        cp = cli.run("hash-password", "-t", stored, "-p", password, config=False)
        assert cp.returncode == 0, f"{stored} / {password!r}: {cp.stderr}"
        assert "(verified)" in cp.stdout
        # Change the first byte: bcrypt only reads the first 72 bytes of a password.
        cp = cli.run("hash-password", "-t", stored, "-p", "X" + password[1:], config=False)
        assert cp.returncode == 1, f"{stored} accepted a wrong password"
        assert cp.stderr.startswith("tern: ")


@needs_doveadm
@pytest.mark.parametrize("scheme", ["ARGON2ID", "ARGON2I", "SHA512-CRYPT", "SHA256-CRYPT",
                                    "BLF-CRYPT", "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5",
                                    "PLAIN", "PLAIN-MD5", "SHA256", "SSHA256", "SHA512",
                                    "SSHA512"])
def test_tern_hashes_verify_in_doveadm(cli, scheme):
    password = "p@ss wörd"
    cp = cli.run("hash-password", "-s", scheme, "-p", password, config=False)
    assert cp.returncode == 0, cp.stderr
    stored = cp.stdout.strip()
    assert stored.startswith("{" + scheme + "}")
    check = subprocess.run([DOVEADM, "pw", "-t", stored, "-p", password], text=True,
                           capture_output=True, timeout=60)
    assert check.returncode == 0, f"doveadm rejected {stored}: {check.stderr}"
    bad = subprocess.run([DOVEADM, "pw", "-t", stored, "-p", "nope"], text=True,
                         capture_output=True, timeout=60)
    assert bad.returncode != 0


# RFC 5802 §2.2: SCRAM keys come from the SASLprep'd password (RFC 4013 §3 example: the
# soft hyphen in "I\u00adX" is mapped to nothing). `doveadm pw` does not SASLprep.
SOFT_HYPHEN_PW = "I\u00adX"


def test_scram_hashes_are_of_the_saslprepped_password(cli):
    for scheme in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        cp = cli.run("hash-password", "-s", scheme, "-p", SOFT_HYPHEN_PW, config=False)
        assert cp.returncode == 0, cp.stderr
        stored = cp.stdout.strip()
        for same in (SOFT_HYPHEN_PW, "IX", "\u2168"):  # U+2168 ROMAN NUMERAL NINE: NFKC "IX"
            cp = cli.run("hash-password", "-t", stored, "-p", same, config=False)
            assert cp.returncode == 0, f"{stored} / {same!r}: {cp.stderr}"
        cp = cli.run("hash-password", "-t", stored, "-p", "IY", config=False)
        assert cp.returncode == 1


@needs_doveadm
@pytest.mark.parametrize("scheme", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_doveadm_scram_of_unprepared_password_verifies(cli, scheme):
    """doveadm hashes the bytes as typed; tern must still accept its hash of a password
    that SASLprep would change."""
    stored = doveadm_hash(scheme, SOFT_HYPHEN_PW)
    cp = cli.run("hash-password", "-t", stored, "-p", SOFT_HYPHEN_PW, config=False)
    assert cp.returncode == 0, f"{stored}: {cp.stderr}"
    cp = cli.run("hash-password", "-t", stored, "-p", "I\u00adY", config=False)
    assert cp.returncode == 1


def test_hash_password_defaults_and_errors(cli):
    cp = cli.run("hash-password", "-p", "pw", config=False)
    assert cp.returncode == 0
    assert re.fullmatch(r"\{ARGON2ID\}\$argon2id\$v=19\$m=65536,t=3,p=1\$\S+\n", cp.stdout)
    # Without -p and without a terminal: one line from stdin.
    cp = cli.run("hash-password", "-s", "PLAIN", input="from stdin\n", config=False)
    assert cp.stdout == "{PLAIN}from stdin\n"
    cp = cli.run("hash-password", "-s", "NOPE", "-p", "x", config=False)
    assert cp.returncode == 1 and cp.stderr.startswith("tern: ")
    assert cli.run("hash-password", "--bogus", config=False).returncode == 2
    cp = cli.run("hash-password", "-t", "{NOPE}x", "-p", "x", config=False)
    assert cp.returncode == 1


# ---- directory administration -------------------------------------------------------

def test_domain_user_alias_lifecycle(cli):
    cli.ok("domain", "add", "Example.TEST")
    cli.ok("domain", "add", "other.test")
    assert cli.ok("domain", "list").stdout == "example.test\nother.test\n"
    cp = cli.run("domain", "add", "example.test")
    assert cp.returncode == 1 and "already exists" in cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1

    cli.ok("user", "add", "Alice@example.test", "--password-stdin", input="alicepw\n")
    cli.ok("user", "add", "bob@example.test", "--password-stdin", "--quota", "1048576",
           input="bobpw\n")
    cp = cli.run("user", "add", "carol@unknown.test", "--password-stdin", input="x\n")
    assert cp.returncode == 1 and "unknown domain" in cp.stderr
    cp = cli.run("user", "add", "alice@example.test", "--password-stdin", input="x\n")
    assert cp.returncode == 1 and "already exists" in cp.stderr
    assert cli.ok("user", "list").stdout == "alice@example.test\nbob@example.test\n"
    assert cli.ok("user", "list", "other.test").stdout == ""

    show = cli.ok("user", "show", "bob@example.test").stdout
    fields = dict(line.split(": ", 1) for line in show.splitlines())
    assert fields["address"] == "bob@example.test"
    assert fields["home"] == str(cli.data_dir / "mail" / "example.test" / "bob")
    assert fields["quota"] == "1048576"
    assert fields["enabled"] == "yes"
    assert fields["schemes"] == "SHA512-CRYPT SCRAM-SHA-256 CRAM-MD5 PLAIN"
    assert cli.run("user", "show", "nobody@example.test").returncode == 1

    cli.ok("user", "passwd", "bob@example.test", "--password-stdin", input="newpw\n")
    cli.ok("alias", "add", "info@example.test", "alice@example.test")
    cli.ok("alias", "add", "info@example.test", "friend@remote.test")
    cli.ok("alias", "add", "@other.test", "bob@example.test")
    listing = cli.ok("alias", "list").stdout.splitlines()
    assert listing == ["info@example.test -> alice@example.test",
                       "info@example.test -> friend@remote.test",
                       "@other.test -> bob@example.test"]
    cp = cli.run("alias", "add", "x@foreign.test", "alice@example.test")
    assert cp.returncode == 1 and "local domain" in cp.stderr
    cli.ok("alias", "del", "info@example.test", "friend@remote.test")
    cli.ok("alias", "del", "@other.test")
    assert cli.ok("alias", "list").stdout == "info@example.test -> alice@example.test\n"
    assert cli.run("alias", "del", "none@example.test").returncode == 1

    cp = cli.run("domain", "del", "example.test")
    assert cp.returncode == 1 and "user" in cp.stderr
    cli.ok("user", "del", "bob@example.test")
    assert cli.run("user", "del", "bob@example.test").returncode == 1
    cli.ok("domain", "del", "other.test")
    assert cli.ok("domain", "list").stdout == "example.test\n"


def test_user_enable_disable_quota(cli):
    cli.ok("domain", "add", "example.test")
    cli.ok("user", "add", "a@example.test", "--password-stdin", input="pw\n")
    cli.ok("user", "disable", "a@example.test")
    assert cli.ok("user", "list").stdout == "a@example.test\tdisabled\n"
    assert "enabled: no" in cli.ok("user", "show", "a@example.test").stdout
    cli.ok("user", "enable", "A@Example.Test")
    assert cli.ok("user", "list").stdout == "a@example.test\n"
    cli.ok("user", "quota", "a@example.test", "10M")
    assert "quota: 10485760" in cli.ok("user", "show", "a@example.test").stdout
    cli.ok("user", "quota", "a@example.test", "0")
    assert "quota: unlimited" in cli.ok("user", "show", "a@example.test").stdout
    assert cli.run("user", "disable", "zz@example.test").returncode == 1


def test_usage_errors_exit_2(cli):
    for args in (["domain"], ["domain", "frob"], ["domain", "add"], ["user"],
                 ["user", "add"], ["user", "add", "a@b.test", "--bogus"],
                 ["user", "add", "a@b.test", "--quota", "lots"], ["alias", "add", "x"],
                 ["user", "show"], ["alias"]):
        cp = cli.run(*args)
        assert cp.returncode == 2, f"{args}: exit {cp.returncode}"
        assert cp.stderr.startswith(("usage: tern ", "tern: "))
        assert cp.stdout == ""


def test_user_add_without_password_source_fails(cli):
    cli.ok("domain", "add", "example.test")
    # No terminal (subprocess) and no --password-stdin: a clear error, nothing created.
    cp = subprocess.run([str(tern_bin()), "-c", str(cli.config_path), "user", "add",
                         "a@example.test"], stdin=subprocess.DEVNULL, text=True,
                        capture_output=True, timeout=60, start_new_session=True)
    assert cp.returncode == 1 and "--password-stdin" in cp.stderr
    assert cli.ok("user", "list").stdout == ""


def _auth_owner():
    """The user tern.db must belong to (auth_user's default, docs/SECURITY.md)."""
    name = _system_user("tern-auth")
    assert name, "cannot create the auth user tern-auth"
    return pwd.getpwnam(name)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the file owners")
def test_root_keeps_the_owners(cli):
    """As root, the CLI leaves what it writes to the users that will read it: tern.db to
    the auth process's user (mode 0600), everything else to the data folder's owner."""
    owner = pwd.getpwnam("nobody")
    db_owner = _auth_owner()
    cli.data_dir.mkdir()
    os.chown(cli.data_dir, owner.pw_uid, owner.pw_gid)
    cli.ok("domain", "add", "example.test")
    cli.ok("user", "add", "a@example.test", "--password-stdin", input="pw\n")
    for name in os.listdir(cli.data_dir):
        st = os.stat(cli.data_dir / name)
        want = db_owner.pw_uid if name.startswith("tern.db") else owner.pw_uid
        assert st.st_uid == want, f"{name} owned by uid {st.st_uid}, not {want}"
    assert os.stat(cli.data_dir / "tern.db").st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the file owners")
def test_root_creates_missing_data_dir_for_run_user(cli):
    owner = pwd.getpwnam("nobody")
    db_owner = _auth_owner()
    with open(cli.config_path, "a") as f:
        f.write("run_user = nobody\n")
    assert not cli.data_dir.exists()
    cli.ok("domain", "add", "example.test")
    assert os.stat(cli.data_dir).st_uid == owner.pw_uid
    assert os.stat(cli.data_dir / "tern.db").st_uid == db_owner.pw_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the file owners")
def test_root_single_process_gives_the_directory_to_run_user(cli):
    """Without separated processes (master_process = no) one process reads tern.db: it
    belongs to run_user."""
    owner = pwd.getpwnam("nobody")
    with open(cli.config_path, "a") as f:
        f.write("run_user = nobody\nmaster_process = no\n")
    cli.ok("domain", "add", "example.test")
    assert os.stat(cli.data_dir / "tern.db").st_uid == owner.pw_uid


# ---- against the running server -----------------------------------------------------

def scram_sha256_client(smtp, user, password):
    """RFC 5802/7677 client over SMTP AUTH; returns the final reply code."""
    cnonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n={user},r={cnonce}"
    code, resp = smtp.docmd("AUTH", "SCRAM-SHA-256 " +
                            base64.b64encode(("n,," + first_bare).encode()).decode())
    assert code == 334, (code, resp)
    server_first = base64.b64decode(resp).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(cnonce)
    salt = base64.b64decode(attrs["s"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    final_wo_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_wo_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    final = f"{final_wo_proof},p={base64.b64encode(proof).decode()}"
    code, resp = smtp.docmd(base64.b64encode(final.encode()).decode())
    if code == 334:
        # Server-final "v=ServerSignature": check it, then finish with an empty response.
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        want = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        got = base64.b64decode(resp).decode()
        assert got == "v=" + base64.b64encode(want).decode()
        code, resp = smtp.docmd("")
    return code


def test_scram_sha256_over_smtp(tern):
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        assert "SCRAM-SHA-256" in s.esmtp_features.get("auth", "")
        assert scram_sha256_client(s, "alice@example.test", "alicepw") == 235
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        assert scram_sha256_client(s, "alice@example.test", "wrong") == 535


def test_scram_sha256_over_smtp_uses_the_saslprepped_password(tern):
    """A user whose password SASLprep changes: an RFC 5802 client sends proofs made from
    SASLprep(password) = "IX"; the stored SCRAM keys must be those too."""
    tern.cli("user", "add", "dave@example.test", "--password-stdin",
             input=SOFT_HYPHEN_PW + "\n")
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        assert scram_sha256_client(s, "dave@example.test", "IX") == 235
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        assert scram_sha256_client(s, "dave@example.test", "IY") == 535


def test_cram_md5_over_smtp(tern):
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        assert "CRAM-MD5" in s.esmtp_features.get("auth", "")
        code, challenge = s.docmd("AUTH", "CRAM-MD5")
        assert code == 334
        decoded = base64.b64decode(challenge).decode()
        assert re.fullmatch(r"<\d+\.\d+@mail\.example\.test>", decoded), decoded
        digest = hmac.new(b"bobpw", base64.b64decode(challenge), hashlib.md5).hexdigest()
        code, _ = s.docmd(base64.b64encode(f"bob {digest}".encode()).decode())
        assert code == 235


def test_argon2_cost_settings_reach_the_stored_hash(tern_factory):
    """auth.argon2_memory / auth.argon2_rounds: `tern user add` stores ARGON2ID at that
    cost, the hash names it, and the user logs in with a real client (IMAP and SMTP AUTH);
    doveadm verifies the same hash when it is installed."""
    srv = tern_factory({"auth.password_schemes": "ARGON2ID",
                        "auth.argon2_memory": "2M", "auth.argon2_rounds": "2"})
    srv.cli("user", "add", "cost@example.test", "--password-stdin", input="costpw\n")
    db = sqlite3.connect(f"file:{srv.data_dir / 'tern.db'}?mode=ro", uri=True)
    try:
        (stored,) = db.execute("SELECT value FROM credentials WHERE address = ? AND "
                               "scheme = 'ARGON2ID'", ("cost@example.test",)).fetchone()
    finally:
        db.close()
    assert re.match(r"\{ARGON2ID\}\$argon2id\$v=19\$m=2048,t=2,p=1\$", stored), stored
    c = imaplib.IMAP4(srv.host, srv.ports["imap"], timeout=30)
    assert c.login("cost@example.test", "costpw")[0] == "OK"
    c.logout()
    with smtplib.SMTP(srv.host, srv.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        s.login("cost@example.test", "costpw")
    if DOVEADM:
        cp = subprocess.run([DOVEADM, "pw", "-t", stored, "-p", "costpw"], text=True,
                            capture_output=True, timeout=60)
        assert cp.returncode == 0 and "(verified)" in cp.stdout, cp.stdout + cp.stderr


def test_user_added_while_running_can_log_in(tern):
    tern.cli("user", "add", "carol@example.test", "--password-stdin", input="carolpw\n")
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        s.login("carol@example.test", "carolpw")
    tern.cli("user", "del", "carol@example.test")
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=30) as s:
        s.ehlo("client.example")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("carol@example.test", "carolpw")
