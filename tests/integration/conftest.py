"""
conftest.py - pytest fixtures that run the real `tern` binary for integration tests.

Every server gets its own temporary data folder, a tern.conf written here, and seven
free loopback ports (smtp, submission, submissions, pop3, pop3s, imap, imaps). The
directory (domain example.test, users alice/bob, alias info -> alice) is created with
the `tern` CLI BEFORE the server starts, exactly as an administrator would.

Fixtures:
  tern          one server per test module (module scope)
  tern_factory  tern_factory(overrides=None) -> a fresh server with extra/replaced config
                keys (value None drops a key); every server it made is stopped at teardown
  tern_module_factory  the same, module scope (for module fixtures with their own config)

Server object (TernServer): .host .ports .data_dir .config_path .pid .returncode
  .cli(*args, input=None, check=True)  -> subprocess.CompletedProcess (text mode)
  .log_text() .log_offset() .wait_log(regex, timeout=10, since=0) -> re.Match
  .maildir(address) -> Path   .stop() .start() .kill9() .is_running()

The binary is $TERN_BIN, else <repo>/build/tern. Tests wait on conditions (a reply, a
file, a log line), never on sleeps; every wait here is bounded.
"""

import atexit
import functools
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[2]
PORT_NAMES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")
READY_RE = r"daemon started -- listening on"
START_TIMEOUT = float(os.environ.get("TERN_START_TIMEOUT", "30"))
STOP_TIMEOUT = 20.0
CLI_TIMEOUT = 120.0
# Sanitizer reports in the server log fail the test during which they appeared (see
# _sanitizer_watch) and, failing that, the fixture that owned the server. ThreadSanitizer
# reports are WARNINGs (it goes on after each: halt_on_error=0).
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error: |"
                          r"WARNING: ThreadSanitizer:")
# ThreadSanitizer: report every race and go on (one test run lists them all); the
# suppressions file holds only reports in libraries, each with its reason.
TSAN_OPTIONS = (f"halt_on_error=0:second_deadlock_stack=1:history_size=4:"
                f"suppressions={REPO / 'tests' / 'tsan.supp'}")

USERS = {"alice@example.test": "alicepw", "bob@example.test": "bobpw"}
ALIASES = {"info@example.test": "alice@example.test"}
DOMAIN = "example.test"


# Servers started and not yet reaped: killed at exit or on SIGTERM/SIGINT so that a
# runner killing pytest (stage time limit) leaves no orphan server behind.
_LIVE = {}
# Every server object still referenced, for the per-test sanitizer check.
_SERVERS = weakref.WeakSet()


def _kill_live_servers():
    for pid in list(_LIVE):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _LIVE.pop(pid, None)


atexit.register(_kill_live_servers)


def _on_fatal_signal(signum, frame):
    _kill_live_servers()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def tern_bin():
    """Path of the binary under test: $TERN_BIN, else <repo>/build/tern."""
    return Path(os.environ.get("TERN_BIN") or REPO / "build" / "tern").resolve()


def _worker_port_range():
    """(first, end) of this pytest-xdist worker's own ports, or None when not under xdist.

    Between free_ports() and the server's bind the ports are free again, and bind(0) in
    another worker may hand out the same one. So each worker takes its ports from its own
    slice of 10000 up to the kernel's ephemeral range (where bind(0) and outgoing
    connections take theirs); None too when that leaves under 1000 ports a worker."""
    m = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    if not m:
        return None
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), int(m.group(1)) + 1)
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    size = (ephemeral_low - 10000) // workers
    if size < 1000:
        return None
    first = 10000 + int(m.group(1)) * size
    return first, first + size


_next_port = None  # this worker's cursor in its range: a port is not handed out twice soon


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1: bind each, hold all, then release
    (under pytest-xdist, from this worker's own range: _worker_port_range)."""
    global _next_port
    span = _worker_port_range()
    socks = []
    try:
        if span is None:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                socks.append(s)
        else:
            first, end = span
            if _next_port is None:
                _next_port = first + random.randrange(end - first)
            for _ in range(end - first):  # bound: one pass over the range
                if len(socks) == n:
                    break
                port, _next_port = _next_port, first + (_next_port + 1 - first) % (end - first)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind(("127.0.0.1", port))
                    socks.append(s)
                except OSError:
                    s.close()
            if len(socks) < n:
                raise TernError(f"no {n} free ports in {first}-{end - 1}")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@functools.cache
def _system_user(name):
    """A system user for the server to switch to (created when missing); None when that
    cannot be done."""
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        subprocess.run([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pass  # e.g. another pytest-xdist worker made it first (or holds the passwd lock)
    for _ in range(50):  # bound: 5 s for a concurrent useradd to finish
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            time.sleep(0.1)
    return None


@functools.cache
def _run_user():
    """The unprivileged user the server drops to when we run as root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    return _system_user("tern") or "nobody"


def _separated_users():
    """(login_user, auth_user): the login processes' and the auth process's users
    (privilege separation, docs/SECURITY.md), as scripts/install-deps.sh creates them;
    (None, None) when not root."""
    if os.geteuid() != 0:
        return None, None
    return _system_user("tern-login"), _system_user("tern-auth")


# The data folder's files that belong to auth_user (mode 0600), as the server sets them.
AUTH_FILES = ("tern.db", "tern.db-wal", "tern.db-shm",
              "penalty.db", "penalty.db-wal", "penalty.db-shm")


def _chown_tree(path, user, auth_user=None):
    """Give the data folder to the run user as the server does at start (the CLI ran as
    root before): everything to run_user, except tern.db, penalty.db (the failed-login
    table) and their WAL files, which belong to auth_user (mode 0600), the auth process's
    control.sock, and run/ (the master's, with the login processes' empty
    root), which stays root's. data_dir itself gets auth_user's group, writable, sticky
    (SQLite creates tern.db-wal and -shm next to the database)."""
    if user is None:
        return
    pw = pwd.getpwnam(user)
    path = str(path)
    run_dir = os.path.join(path, "run") if os.path.basename(path) == "data" else None
    # the auth user's files are never given to run_user, not even for a moment: an auth
    # process (re)starting then (a reload while a test runs `tern status`) could not open
    # tern.db
    auth_names = AUTH_FILES if auth_user is not None and run_dir else ()
    top_gid = pwd.getpwnam(auth_user).pw_gid if auth_names else pw.pw_gid
    for root, dirs, files in os.walk(path):
        if run_dir and root == os.path.dirname(run_dir) and "run" in dirs:
            dirs.remove("run")
        os.chown(root, pw.pw_uid, top_gid if root == path else pw.pw_gid)
        for name in dirs + files:
            if root == path and name in auth_names:
                continue
            try:
                os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
            except FileNotFoundError:
                pass
    if auth_user is None or os.path.basename(path) != "data":
        return
    apw = pwd.getpwnam(auth_user)
    for name in AUTH_FILES:
        f = os.path.join(path, name)
        try:
            os.chown(f, apw.pw_uid, apw.pw_gid)
            os.chmod(f, 0o600)
        except FileNotFoundError:
            pass
    try:  # the auth process's control socket (`tern auth blocks`): its own, left as it is
        os.lchown(os.path.join(path, "control.sock"), apw.pw_uid, apw.pw_gid)
    except FileNotFoundError:
        pass
    os.chown(path, pw.pw_uid, apw.pw_gid)
    os.chmod(path, (os.stat(path).st_mode & 0o777) | 0o1070)


def _config_value(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return str(v)


class TernError(AssertionError):
    pass


class TernServer:
    """One tern process (restartable) with its own data folder, config and ports."""

    def __init__(self, overrides=None, name="tern", base=None):
        # settings of the base that every write_config keeps unless it overrides them
        self.base_extra = dict(base or {})
        self.host = "127.0.0.1"
        self.bin = tern_bin()
        if not self.bin.exists():
            raise TernError(f"tern binary not found at {self.bin} (build it: meson setup build "
                            f"&& ninja -C build, or set TERN_BIN)")
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-it-"))
        # mkdtemp gives 0700; the run user must reach the data folder and config inside.
        os.chmod(self.root, 0o755)
        self.data_dir = self.root / "data"
        self.data_dir.mkdir()
        self.config_path = self.root / "tern.conf"
        self.log_path = self.root / "server.log"
        self.run_user = _run_user()
        self.login_user, self.auth_user = _separated_users()
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        self.users = dict(USERS)
        self.proc = None
        self.returncode = None
        self._log_file = None
        self.reported_upto = 0  # log offset up to which sanitizer reports were raised
        self.write_config(overrides or {})
        _chown_tree(self.root, self.run_user)
        self.chown_data()

    # --- config -------------------------------------------------------------------
    def base_config(self):
        cfg = {
            "hostname": "mail.example.test",
            "data_dir": str(self.data_dir),
            "log.target": "stderr",
            "auth.password_schemes": "ARGON2ID SCRAM-SHA-256 CRAM-MD5 PLAIN",
            "auth.allow_plaintext": "loopback+tls",
            # failed-login delays (2 s doubling to 15 s by default) in milliseconds here,
            # so tests that fail a login on purpose do not wait; policy tests raise them
            "auth.failure_delay": "5",
            "auth.failure_delay_max": "20",
            # many tests write several commands at once before EHLO's reply (on purpose:
            # the parser is what they test); test_smtp_screen.py turns the check on
            "smtp.reject_unauth_pipelining": "no",
            # Port-25 SPF/DKIM/DMARC need DNS: off unless a test brings its own DNS server
            # (tests/integration/test_mailauth_*.py turn it on with dns.resolver).
            "mailauth.verify": "no",
        }
        cfg.update(self.base_extra)
        for name in PORT_NAMES:
            cfg[f"{name}.listen"] = f"{self.host}:{self.ports[name]}"
        if self.run_user:
            cfg["run_user"] = self.run_user
        if self.login_user and self.auth_user:
            cfg["login_user"] = self.login_user
            cfg["auth_user"] = self.auth_user
            if is_sanitized():
                # LeakSanitizer reads /proc/<pid>/task at exit: inside an empty root it
                # cannot and aborts the login process. Sanitizer runs keep the login
                # processes outside a chroot so their leaks are checked; test_privsep
                # sets a real login_chroot (and its login processes skip the leak check).
                cfg["login_chroot"] = "/"
        return cfg

    def write_config(self, overrides):
        """(Re)write tern.conf from the base settings plus overrides (None drops a key)."""
        cfg = self.base_config()
        for k, v in overrides.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = _config_value(v)
        self.config = cfg
        lines = ["# written by tests/integration/conftest.py"]
        lines += [f"{k} = {v}" for k, v in cfg.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def chown_data(self):
        """Owners as the server sets them at start (tern.db to the auth user)."""
        _chown_tree(self.data_dir, self.run_user,
                    self.auth_user if self.config.get("master_process", "yes") != "no" else None)

    # --- CLI ----------------------------------------------------------------------
    def cli(self, *args, input=None, check=True, timeout=CLI_TIMEOUT, env=None):
        """Run `tern -c <config> args...`; text in/out. check=True raises with stderr."""
        cmd = [str(self.bin), "-c", str(self.config_path)] + [str(a) for a in args]
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        cp = subprocess.run(cmd, input=input if input is not None else "", text=True,
                            capture_output=True, timeout=timeout, env=full_env)
        self.chown_data()
        if check and cp.returncode != 0:
            raise TernError(f"{' '.join(cmd)} exited {cp.returncode}\n"
                            f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
        return cp

    def provision(self):
        """Create the demo directory with the CLI, as an admin would before start."""
        self.cli("domain", "add", DOMAIN)
        for user, pw in USERS.items():
            self.cli("user", "add", user, "--password-stdin", input=pw + "\n")
        for alias, target in ALIASES.items():
            self.cli("alias", "add", alias, target)

    # --- log ----------------------------------------------------------------------
    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_offset(self):
        """Current length of the log text, for wait_log(since=...)."""
        return len(self.log_text())

    def wait_log(self, regex, timeout=10, since=0):
        """Poll the server log until regex matches (searching from offset since)."""
        pat = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            m = pat.search(self.log_text(), since)
            if m:
                return m
            if time.monotonic() >= deadline:
                raise TernError(f"timed out after {timeout}s waiting for log /{regex}/\n"
                                f"--- log tail ---\n{self.log_text()[-4000:]}")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    # --- process ------------------------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=START_TIMEOUT):
        """Start `tern serve -f` on the same ports and data; wait for the readiness line."""
        if self.is_running():
            raise TernError("server already running")
        self.chown_data()
        since = self.log_offset()
        self._log_file = open(self.log_path, "ab", buffering=0)
        env = dict(os.environ)
        # Sanitized builds: stop at the first UBSan report so it cannot go unnoticed.
        env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        env.setdefault("TSAN_OPTIONS", TSAN_OPTIONS)
        self.proc = subprocess.Popen(
            [str(self.bin), "-c", str(self.config_path), "serve", "-f"],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            cwd=str(self.root), env=env, start_new_session=True)
        _LIVE[self.proc.pid] = self.proc
        _SERVERS.add(self)
        self.returncode = None
        pat = re.compile(READY_RE)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            if pat.search(self.log_text(), since):
                return self
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                _LIVE.pop(self.proc.pid, None)
                self._close_log()
                raise TernError(f"tern serve exited {rc} before it was ready\n"
                                f"--- log ---\n{self.log_text()[since:][-6000:]}")
            if time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL)
                raise TernError(f"tern serve not ready after {timeout}s\n"
                                f"--- log ---\n{self.log_text()[since:][-6000:]}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _close_log(self):
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def _terminate(self, sig):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.returncode = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.returncode = self.proc.wait(timeout=STOP_TIMEOUT)
        _LIVE.pop(self.proc.pid, None)
        self._close_log()
        return self.returncode

    def stop(self):
        """SIGTERM our pid and wait (SIGKILL after STOP_TIMEOUT). Returns the exit code."""
        return self._terminate(signal.SIGTERM)

    def kill9(self):
        """SIGKILL our pid (crash simulation) and reap it."""
        return self._terminate(signal.SIGKILL)

    def maildir(self, address):
        local, _, domain = address.partition("@")
        return self.data_dir / "mail" / domain.lower() / local / "Maildir"

    def sanitizer_report(self, since=0):
        """The first sanitizer report in the log after offset since that no check has
        raised yet (each report fails one test, once), or None."""
        text = self.log_text()
        since = max(since, self.reported_upto)
        m = SANITIZER_RE.search(text, since)
        if not m:
            return None
        self.reported_upto = len(text)
        return text[max(since, m.start() - 200):][:6000]

    def cleanup(self):
        """Stop, then remove the temp folder (kept when TERN_KEEP_DATA is set or the log
        holds a sanitizer report). Returns a report not raised by a test yet, or None."""
        try:
            self.stop()
        finally:
            report = self.sanitizer_report()
            is_clean = report is None and self.reported_upto == 0
            if not os.environ.get("TERN_KEEP_DATA") and is_clean:
                shutil.rmtree(self.root, ignore_errors=True)
        return report

    def __repr__(self):
        return f"<TernServer pid={self.pid} ports={self.ports} root={self.root}>"


# The fixtures' servers hash passwords at argon2's cost of 1 MiB and 1 round instead of
# the default 64 MiB x 3 (auth.argon2_*): each `user add` and each login's check took
# ~0.1-0.3 s of CPU, a large share of the suite's time. Tests that test the cost set the
# keys themselves; benchmarks (bench/, which call _make_server directly) keep the default.
# Part of the base (TernServer(base=)): a test's write_config keeps them.
FAST_HASHES = {"auth.argon2_memory": "1M", "auth.argon2_rounds": "1"}


def _make_server(overrides=None, name="tern", provision=True, start=True, base=None):
    srv = TernServer(overrides, name=name, base=base)
    try:
        if provision:
            srv.provision()
        if start:
            srv.start()
    except BaseException:
        srv.cleanup()
        raise
    return srv


def _finish(srv):
    report = srv.cleanup()
    if report:
        pytest.fail(f"sanitizer report in server log ({srv.root}):\n{report}", pytrace=False)


@pytest.fixture(scope="module")
def tern():
    """One provisioned, running server for the whole test module."""
    srv = _make_server(base=FAST_HASHES)
    yield srv
    _finish(srv)


def _factory():
    """A server factory and the teardown that stops what it made (failing the owner on
    a sanitizer report)."""
    made = []

    def factory(overrides=None, provision=True, start=True):
        srv = _make_server(overrides, provision=provision, start=start, base=FAST_HASHES)
        made.append(srv)
        return srv

    def finish():
        errors = []
        for srv in made:
            report = srv.cleanup()
            if report:
                errors.append(f"{srv.root}:\n{report}")
        if errors:
            pytest.fail("sanitizer report in server log:\n" + "\n".join(errors), pytrace=False)

    return factory, finish


@pytest.fixture
def tern_factory():
    """tern_factory(overrides=None, provision=True, start=True) -> a fresh server."""
    factory, finish = _factory()
    yield factory
    finish()


@pytest.fixture(scope="module")
def tern_module_factory():
    """The same, for servers shared by the tests of one module (module-scoped fixtures
    with their own config)."""
    factory, finish = _factory()
    yield factory
    finish()


@pytest.fixture(autouse=True)
def _sanitizer_watch():
    """Fail the test during which a server's log got a sanitizer report (a module's
    server is shared by many tests: the report belongs to the one that was running)."""
    offsets = {srv: srv.log_offset() for srv in list(_SERVERS)}
    yield
    reports = []
    for srv in list(_SERVERS):
        report = srv.sanitizer_report(since=offsets.get(srv, 0))
        if report:
            reports.append(f"{srv.root}:\n{report}")
    if reports:
        pytest.fail("sanitizer report in server log during this test:\n" + "\n".join(reports),
                    pytrace=False)


def is_sanitized():
    """True when the binary under test is an ASan/UBSan build (scripts/test.sh sets
    TERN_SANITIZED=1 for that stage): memory figures are meaningless and volume is slow."""
    return os.environ.get("TERN_SANITIZED", "") not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: volume test; runs in the normal build, skipped in the sanitized run")
    config.addinivalue_line(
        "markers", "no_sanitizer: asserts on memory use or speed-bound volume; skipped when "
        "TERN_SANITIZED=1")
    config.addinivalue_line(
        "markers", "threads: drives the hand-offs between the event loop and the workpool "
        "(jobs, clients leaving mid-job, notifications, shutdown); the ThreadSanitizer stage "
        "runs only these (scripts/test.sh tsan-integ: -m threads)")
    signal.signal(signal.SIGTERM, _on_fatal_signal)


def pytest_collection_modifyitems(config, items):
    """In the sanitized run, skip volume tests: the normal build runs them, and under ASan
    they take minutes and measure the sanitizer's memory, not ours."""
    if not is_sanitized():
        return
    skip = pytest.mark.skip(reason="volume/memory test: run by the normal build, not under "
                            "ASan (TERN_SANITIZED=1)")
    for item in items:
        if "slow" in item.keywords or "no_sanitizer" in item.keywords:
            item.add_marker(skip)
