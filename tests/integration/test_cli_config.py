"""
test_cli_config.py - `tern config check|show`, `-o key=value` overrides, errors that name
file:line, and the `tern serve` readiness/shutdown contract the other tests rely on.

DESIGN §1: an empty or missing config is valid; `tern config check` says what is wrong;
`tern config show [-n]` prints effective (or only non-default) settings, like `postconf -n`.
"""

import os
import re
import signal
import socket
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tern_util import tls_context, wait_for

PORT_NAMES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")


def run(tern, *args, config=None, input=""):
    """Run the binary with an arbitrary config path (not the fixture's)."""
    cmd = [str(tern.bin)]
    if config is not None:
        cmd += ["-c", str(config)]
    cmd += [str(a) for a in args]
    return subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=60)


def show(cp):
    """Parse `config show` output into a dict."""
    out = {}
    for line in cp.stdout.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        k, sep, v = line.partition("=")
        assert sep, f"config show line without '=': {line!r}"
        out[k.strip()] = v.strip()
    return out


# --- check / show on a good config ---------------------------------------------------


def test_config_check_accepts_fixture_config(tern):
    cp = tern.cli("config", "check")
    assert cp.returncode == 0


def test_config_show_prints_effective_settings(tern):
    s = show(tern.cli("config", "show"))
    assert s["hostname"] == "mail.example.test"
    assert s["data_dir"] == str(tern.data_dir)
    for name in PORT_NAMES:
        assert s[f"{name}.listen"] == f"127.0.0.1:{tern.ports[name]}"
    assert s["auth.password_schemes"] == "ARGON2ID SCRAM-SHA-256 CRAM-MD5 PLAIN"
    # Keys not in the file show their defaults.
    assert s["smtp.max_recipients"] == "1000"
    assert s["auth.allow_plaintext"] == "loopback+tls"
    # Paths derived from data_dir.
    assert s["tls.cert"] == str(tern.data_dir / "tls" / "cert.pem")


def test_config_show_n_prints_only_non_defaults(tern):
    s = show(tern.cli("config", "show", "-n"))
    assert s["hostname"] == "mail.example.test"
    assert s["smtp.listen"] == f"127.0.0.1:{tern.ports['smtp']}"
    assert "smtp.max_recipients" not in s
    assert "smtp.timeout" not in s
    # A default written explicitly in the file is still a default.
    assert "auth.allow_plaintext" not in s


def test_config_show_output_is_a_valid_config(tern, tmp_path):
    """What `config show` prints can be fed back in (round trip)."""
    text = tern.cli("config", "show").stdout
    p = tmp_path / "roundtrip.conf"
    p.write_text(text)
    assert run(tern, "config", "check", config=p).returncode == 0
    assert show(run(tern, "config", "show", config=p)) == show(tern.cli("config", "show"))


def test_override_wins_over_file(tern):
    s = show(tern.cli("-o", "smtp.max_recipients=5", "-o", "hostname=mx.other.test",
                      "config", "show"))
    assert s["smtp.max_recipients"] == "5"
    assert s["hostname"] == "mx.other.test"
    # The last -o for a key wins.
    s = show(tern.cli("-o", "smtp.max_recipients=5", "-o", "smtp.max_recipients=7",
                      "config", "show"))
    assert s["smtp.max_recipients"] == "7"


def test_override_shows_as_non_default(tern):
    s = show(tern.cli("-o", "smtp.max_recipients=5", "config", "show", "-n"))
    assert s["smtp.max_recipients"] == "5"


def test_config_show_hides_the_relayhost_password(tern):
    cp = tern.cli("-o", "relayhost.password=s3cret-pw", "config", "show")
    assert "s3cret-pw" not in cp.stdout
    assert show(cp)["relayhost.password"] == "(hidden)"


def test_size_suffix(tern):
    s = show(tern.cli("-o", "smtp.max_message_size=10M", "config", "show"))
    assert s["smtp.max_message_size"] == str(10 * 1024 * 1024)


@pytest.mark.parametrize("content", ["", "# only a comment\n\n   \n"])
def test_empty_config_is_valid(tern, tmp_path, content):
    p = tmp_path / "empty.conf"
    p.write_text(content)
    cp = run(tern, "config", "check", config=p)
    assert cp.returncode == 0, cp.stderr
    s = show(run(tern, "config", "show", config=p))
    assert "smtp.listen" in s and s["smtp.listen"]


def test_missing_config_file_is_the_embedded_default(tern, tmp_path):
    cp = run(tern, "config", "check", config=tmp_path / "does-not-exist.conf")
    assert cp.returncode == 0, cp.stderr


def test_comments_and_whitespace(tern, tmp_path):
    p = tmp_path / "c.conf"
    p.write_text("# a comment\n   hostname   =   mx.example.test   \n\n"
                 "smtp.max_recipients=12\n")
    s = show(run(tern, "config", "show", config=p))
    assert s["hostname"] == "mx.example.test"
    assert s["smtp.max_recipients"] == "12"


# --- errors name file:line ----------------------------------------------------------

BAD_LINES = [
    ("no.such.key = 1", r"unknown key"),
    ("smtp.max_recipients = lots", r"bad number"),
    ("log.debug = perhaps", r"bad boolean"),
    ("auth.allow_plaintext = sometimes", r"tls, loopback\+tls or always"),
    ("log.target = carrier-pigeon", r"stderr, syslog or file"),
    ("just some words", r"missing '='"),
    ("smtp.listen = 127.0.0.1:99999", r"smtp\.listen"),
    ("auth.argon2_memory = 4k", r"bad size '4k' for auth\.argon2_memory \(0 for the scheme's own, "
                                r"or 8k to 4G\)"),
    ("auth.argon2_rounds = 65", r"bad number '65' for auth\.argon2_rounds"),
]


@pytest.mark.parametrize("line,reason", BAD_LINES, ids=[b[0].split()[0] for b in BAD_LINES])
def test_bad_config_names_file_and_line(tern, tmp_path, line, reason):
    p = tmp_path / "bad.conf"
    p.write_text("# line 1\nhostname = mail.example.test\n\n" + line + "\n")
    cp = run(tern, "config", "check", config=p)
    assert cp.returncode != 0
    assert re.search(re.escape(str(p)) + r":4: ", cp.stderr), cp.stderr
    assert re.search(reason, cp.stderr), cp.stderr


def test_bad_override_is_reported(tern):
    cp = tern.cli("-o", "no.such.key=1", "config", "check", check=False)
    assert cp.returncode != 0
    assert "-o" in cp.stderr and "unknown key" in cp.stderr, cp.stderr


def test_serve_refuses_bad_config(tern, tmp_path):
    p = tmp_path / "bad.conf"
    p.write_text(f"data_dir = {tmp_path}/data\nsmtp.max_errors = many\n")
    cp = run(tern, "serve", "-f", config=p)
    assert cp.returncode != 0
    assert re.search(re.escape(str(p)) + r":2: .*bad number", cp.stderr), cp.stderr
    assert "daemon started" not in cp.stderr


def test_unknown_subcommand_is_usage_error(tern):
    cp = tern.cli("config", "frobnicate", check=False)
    assert cp.returncode == 2
    cp = tern.cli("no-such-command", check=False)
    assert cp.returncode == 2


# --- serve: readiness, listeners, shutdown ---------------------------------------------


def test_readiness_line_lists_every_listener(tern):
    m = tern.wait_log(r"daemon started -- listening on (.*)$")
    listeners = m.group(1)
    for name in PORT_NAMES:
        assert re.search(rf"\b{tern.ports[name]}\b", listeners), (name, listeners)


def test_every_port_accepts_connections(tern):
    for name in PORT_NAMES:
        with socket.create_connection((tern.host, tern.ports[name]), timeout=10):
            pass


def test_log_lines_are_postfix_style(tern):
    m = tern.wait_log(r"^.*daemon started.*$")
    assert re.search(r"tern/[a-z0-9_-]+\[\d+\]: ", m.group(0)), m.group(0)


def test_sigterm_stops_cleanly_and_restart_keeps_ports(tern_factory):
    srv = tern_factory()
    pid = srv.pid
    assert srv.stop() == 0
    for name in ("smtp", "imap"):
        with pytest.raises(OSError):
            socket.create_connection((srv.host, srv.ports[name]), timeout=5).close()
    srv.start()
    assert srv.pid != pid
    with socket.create_connection((srv.host, srv.ports["smtp"]), timeout=10) as s:
        s.settimeout(10)
        assert s.recv(512).startswith(b"220 ")


def test_port_in_use_fails_fast(tern_factory, tern):
    """A listener that cannot bind is a start-up error with a clear message, not a hang."""
    srv = tern_factory({"imap.listen": f"127.0.0.1:{tern.ports['imap']}"}, start=False)
    cp = srv.cli("serve", "-f", check=False, timeout=60)
    assert cp.returncode != 0
    assert str(tern.ports["imap"]) in cp.stderr, cp.stderr
    assert "daemon started" not in cp.stderr


def test_override_applies_to_serve(tern_factory):
    """-o reaches `serve` too: the SMTP banner shows the overridden hostname."""
    srv = tern_factory(start=False)
    since = srv.log_offset()
    with open(srv.log_path, "ab") as log:
        proc = subprocess.Popen([str(srv.bin), "-c", str(srv.config_path),
                                 "-o", "hostname=mx9.example.test", "serve", "-f"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        srv.wait_log(r"daemon started -- listening on", timeout=30, since=since)
        with socket.create_connection((srv.host, srv.ports["smtp"]), timeout=10) as s:
            s.settimeout(10)
            banner = s.recv(512).decode()
        assert banner.startswith("220 mx9.example.test"), banner
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_tls_key_is_private(tern):
    """The generated key is readable by its owner only (DESIGN §6)."""
    key = tern.data_dir / "tls" / "key.pem"
    wait_for(key.exists, what="generated TLS key")
    assert key.stat().st_mode & 0o077 == 0, oct(key.stat().st_mode)


def test_sighup_reload_keeps_serving(tern_factory):
    """SIGHUP reloads the certificate (after the privilege drop) without stopping."""
    srv = tern_factory()
    since = srv.log_offset()
    os.kill(srv.pid, signal.SIGHUP)
    ctx = tls_context()

    def tls_banner():
        with socket.create_connection((srv.host, srv.ports["imaps"]), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="mail.example.test") as s:
                s.settimeout(10)
                return s.recv(512)

    assert tls_banner().startswith(b"* OK")
    assert srv.is_running()
    log = srv.log_text()[since:]
    assert not re.search(r"(?i)(error|fatal|cannot|failed).*(cert|key|tls)", log), log


def test_directory_is_private(tern):
    """tern.db holds password hashes (and, for CRAM-MD5/PLAIN, password equivalents):
    other local users must not be able to read it (docs/SECURITY.md threat model)."""
    for name in ("tern.db", "tern.db-wal", "tern.db-shm"):
        p = tern.data_dir / name
        if p.exists():
            assert p.stat().st_mode & 0o077 == 0, f"{name} mode {oct(p.stat().st_mode)}"


EXPECTED_PORTS = {
    "smtp": (25, 2525), "submission": (587, 2587), "submissions": (465, 2465),
    "pop3": (110, 2110), "pop3s": (995, 2995), "imap": (143, 2143), "imaps": (993, 2993),
}


def as_nobody(cmd, cwd, **kw):
    """Run cmd as user nobody (only possible when we are root)."""
    return subprocess.run(["runuser", "-u", "nobody", "--"] + cmd, cwd=cwd, text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL, **kw)


def require_nobody_can_run(tern):
    """Skip unless we are root and user nobody can execute the binary (a checkout under
    /root, mode 0700, is out of its reach)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user")
    cp = as_nobody(["test", "-x", str(tern.bin)], cwd="/")
    if cp.returncode != 0:
        pytest.skip(f"user nobody cannot execute {tern.bin}")


def test_embedded_defaults_depend_on_uid(tern, tmp_path):
    """DESIGN §1: standard ports and /var/lib/tern as root, high ports and ./var otherwise."""
    missing = tmp_path / "missing.conf"
    if os.geteuid() == 0:
        s = show(run(tern, "config", "show", config=missing))
        assert s["data_dir"] == "/var/lib/tern"
        for name, (root_port, _) in EXPECTED_PORTS.items():
            assert s[f"{name}.listen"] == f"*:{root_port}"
        require_nobody_can_run(tern)
        work = Path(tempfile.mkdtemp(prefix="tern-nobody-"))
        try:
            os.chmod(work, 0o777)
            cp = as_nobody([str(tern.bin), "-c", str(work / "missing.conf"), "config", "show"],
                           cwd=work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        assert cp.returncode == 0, cp.stderr
        s = show(cp)
        assert s["data_dir"] == str(work / "var")
        for name, (_, user_port) in EXPECTED_PORTS.items():
            assert s[f"{name}.listen"] == f"*:{user_port}"
    else:
        s = show(run(tern, "config", "show", config=missing))
        for name, (_, user_port) in EXPECTED_PORTS.items():
            assert s[f"{name}.listen"] == f"*:{user_port}"


def test_serve_as_unprivileged_user(tern_factory):
    """Started by a normal user, the server runs as that user (no privilege drop) and
    serves mail; run_user only matters when started as root."""
    if os.geteuid() != 0:
        pytest.skip("the whole suite already runs unprivileged")
    srv = tern_factory({"run_user": None}, start=False)
    require_nobody_can_run(srv)
    nobody = __import__("pwd").getpwnam("nobody")
    for root, dirs, files in os.walk(srv.root):
        for n in [root] + [os.path.join(root, x) for x in dirs + files]:
            os.lchown(n, nobody.pw_uid, nobody.pw_gid)
    log = open(srv.log_path, "ab")
    proc = subprocess.Popen(["runuser", "-u", "nobody", "--", str(srv.bin), "-c",
                             str(srv.config_path), "serve", "-f"], cwd=str(srv.root),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        srv.wait_log(r"daemon started -- listening on", timeout=30)
        with socket.create_connection((srv.host, srv.ports["smtp"]), timeout=10) as s:
            s.settimeout(10)
            assert s.recv(512).startswith(b"220 ")
        key = srv.data_dir / "tls" / "key.pem"
        assert key.stat().st_uid == nobody.pw_uid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_start_up_warns_when_max_connections_exceeds_the_descriptor_limit(tern_factory):
    # more connections than any kernel lets one process open descriptors for
    srv = tern_factory({"max_connections": "2000000000"})
    srv.wait_log(r"warning: open files limit is \d+: max_connections = 2000000000 needs "
                 r"about 2000001024")
