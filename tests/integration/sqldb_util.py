"""
sqldb_util.py - private MariaDB and PostgreSQL servers for the SQL directory tests and
the login benchmark (bench/directory/), loaded with postfixadmin 3.3's schema.

Each server is an unprivileged instance with its own data folder under a temp dir, on a
free loopback port and a Unix socket in that folder: `mariadb-install-db` + `mariadbd`,
or `initdb` + `postgres`, run as the packages' `mysql` / `postgres` users when we are
root (as ourselves otherwise). Never the system services; every process is one we
started, stopped by its PID.

    db = make_server("mysql", root_dir)      # or "postgresql"; None if not installed
    db.start(); db.load_postfixadmin("postfix")
    db.sql("postfix", "INSERT INTO domain ...")
    db.tern_keys("postfix")                   # directory.* keys for tern.conf
    db = module_server("mysql", load)         # started and loaded, or the test skips
    db.stop(); db.start()                     # an outage and its end
    db.cleanup()

Waits are bounded; nothing sleeps on a fixed time.
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import _chown_tree

SQL_DIR = Path(__file__).resolve().parent / "sql"
START_TIMEOUT = 60.0
TERN_DB_USER = "tern"
TERN_DB_PASSWORD = "tern-db-pw"
TLS_DB_USER = "terntls"  # a user the server accepts over TLS only


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _run_as(name):
    """The account to run a server as: the package's user when we are root, else us."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        return "nobody"


def _wait(predicate, timeout, what, proc=None, log=None):
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: server exited {proc.returncode}\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout}s\n{_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _tail(path):
    try:
        return Path(path).read_text(errors="replace")[-3000:] if path else ""
    except OSError:
        return ""


def make_tls_files(folder):
    """A CA and a server certificate for 127.0.0.1/localhost (openssl CLI), readable by
    the database user. Returns dict(ca=, cert=, key=)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key",
                                                       "server.csr", "server.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca), "-days", "2", "-subj", "/CN=tern test CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
        str(csr), "-subj", "/CN=localhost")
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    os.chmod(key, 0o600)
    return {"ca": str(ca), "cert": str(cert), "key": str(key)}


class SqlServer:
    """What both servers share: folder, port, process, TLS files."""

    driver = None
    stop_signal = signal.SIGTERM

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.proc = None
        self.tls = None

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        """Stop our server process (its clean, fast shutdown) and wait for it."""
        if not self.is_running():
            return
        os.kill(self.proc.pid, self.stop_signal)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)

    def _tree(self):
        """Our server process and its children (PostgreSQL's backends)."""
        pids, children = [self.proc.pid], {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        i = 0
        while i < len(pids):
            pids += children.get(pids[i], [])
            i += 1
        return pids

    def freeze(self):
        """SIGSTOP the server (and its children): a database that hangs, not one that
        refuses. thaw() resumes it."""
        for pid in self._tree():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self):
        for pid in self._tree():
            os.kill(pid, signal.SIGCONT)

    def cleanup(self):
        try:
            self.stop()
        finally:
            if not os.environ.get("TERN_KEEP_DATA"):
                shutil.rmtree(self.root, ignore_errors=True)

    def tern_keys(self, dbname, user=TERN_DB_USER, password=TERN_DB_PASSWORD, tls=None):
        """directory.* keys pointing Tern at this server over loopback TCP."""
        keys = {
            "directory.driver": self.driver,
            "directory.host": "127.0.0.1",
            "directory.port": self.port,
            "directory.dbname": dbname,
            "directory.user": user,
            "directory.password": password,
            "directory.connect_timeout": 3,
            "directory.query_timeout": 5,
        }
        if tls:
            keys["directory.tls"] = tls
            keys["directory.tls_ca"] = self.tls["ca"]
        return keys


class MariaDB(SqlServer):
    driver = "mysql"

    def __init__(self, root):
        super().__init__(root)
        self.user = _run_as("mysql")
        self.datadir = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.log = self.root / "mysqld.log"
        self.tls = make_tls_files(self.root / "tls")
        _chown_tree(self.root, self.user)
        env = dict(os.environ)
        cmd = [find_binary("mariadb-install-db", "mysql_install_db"), "--no-defaults",
               f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
               "--skip-test-db", "--skip-name-resolve"]
        if self.user:
            cmd.append(f"--user={self.user}")
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                            cwd=str(self.root))
        if cp.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{cp.stdout}\n{cp.stderr}")

    def start(self):
        cmd = [find_binary("mariadbd", "mysqld"), "--no-defaults", f"--datadir={self.datadir}",
               f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.socket}",
               f"--pid-file={self.root / 'mysqld.pid'}", f"--log-error={self.log}",
               "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
               "--innodb-log-file-size=8M", "--performance-schema=off",
               "--max-connections=400",
               f"--ssl-ca={self.tls['ca']}", f"--ssl-cert={self.tls['cert']}",
               f"--ssl-key={self.tls['key']}"]
        if os.geteuid() == 0 and self.user:
            cmd.append(f"--user={self.user}")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: self._ping(), START_TIMEOUT, "mariadbd", self.proc, self.log)
        return self

    def _ping(self):
        if not self.socket.exists():
            return False
        cp = subprocess.run(self._client() + ["-e", "SELECT 1"], capture_output=True,
                            timeout=30)
        return cp.returncode == 0

    def _client(self, db=None):
        cmd = [find_binary("mariadb", "mysql"), "--no-defaults", f"--socket={self.socket}",
               "-u", "root", "--batch", "--skip-column-names"]
        if db:
            cmd.append(db)
        return cmd

    def sql(self, db, text):
        """Run SQL as the server's root (over its socket); returns stdout rows."""
        cp = subprocess.run(self._client(db), input=text, capture_output=True, text=True,
                            timeout=120)
        if cp.returncode != 0:
            raise RuntimeError(f"mariadb: {cp.stderr}\n--- SQL ---\n{text[:2000]}")
        return [line.split("\t") for line in cp.stdout.splitlines()]

    def load_postfixadmin(self, db):
        """A database with postfixadmin 3.3's tables and Tern's users: tern (password,
        over TCP) and terntls (password, TLS required), both with postfixadmin's rights."""
        self.sql(None, f"CREATE DATABASE {db}")
        self.sql(db, (SQL_DIR / "postfixadmin-3.3-mysql.sql").read_text())
        self.sql(None, f"""
            CREATE USER '{TERN_DB_USER}'@'127.0.0.1' IDENTIFIED BY '{TERN_DB_PASSWORD}';
            CREATE USER '{TERN_DB_USER}'@'localhost' IDENTIFIED BY '{TERN_DB_PASSWORD}';
            CREATE USER '{TLS_DB_USER}'@'127.0.0.1' IDENTIFIED BY '{TERN_DB_PASSWORD}' REQUIRE SSL;
            GRANT ALL ON {db}.* TO '{TERN_DB_USER}'@'127.0.0.1';
            GRANT ALL ON {db}.* TO '{TERN_DB_USER}'@'localhost';
            GRANT ALL ON {db}.* TO '{TLS_DB_USER}'@'127.0.0.1';
        """)

    def true(self):
        return "1"

    def false(self):
        return "0"


class PostgreSQL(SqlServer):
    driver = "postgresql"
    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for Tern's sessions

    def __init__(self, root):
        super().__init__(root)
        self.user = _run_as("postgres")
        self.bindir = Path(find_binary("postgres")).resolve().parent
        self.datadir = self.root / "data"
        self.log = self.root / "postgres.log"
        self.tls = make_tls_files(self.root / "tls")
        pwfile = self.root / "pw"
        pwfile.write_text("root-pw\n")
        _chown_tree(self.root, self.user)
        cp = subprocess.run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U",
                             "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
                             "--no-sync"], capture_output=True, text=True, timeout=120,
                            user=self.user, cwd=str(self.root))
        if cp.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{cp.stdout}\n{cp.stderr}")
        # local socket: trust (the tests' admin connection); TCP: passwords (scram), and
        # the TLS user over TLS only
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"hostnossl all {TLS_DB_USER} 127.0.0.1/32 reject\n"
            f"hostssl all {TLS_DB_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        _chown_tree(self.datadir, self.user)

    def start(self):
        cmd = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
               "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
               "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
               "-c", "max_connections=400", "-c", "shared_buffers=32MB",
               "-c", "ssl=on", "-c", f"ssl_cert_file={self.tls['cert']}",
               "-c", f"ssl_key_file={self.tls['key']}"]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True, user=self.user,
                                     cwd=str(self.root))
        log.close()
        _wait(lambda: self._ping(), START_TIMEOUT, "postgres", self.proc, self.log)
        return self

    def _client(self, db=None):
        return [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t",
                "-F", "\t", "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
                db or "postgres"]

    def _ping(self):
        sock = self.root / f".s.PGSQL.{self.port}"
        if not sock.exists():
            return False
        cp = subprocess.run(self._client() + ["-c", "SELECT 1"], capture_output=True,
                            timeout=30)
        return cp.returncode == 0

    def sql(self, db, text):
        cp = subprocess.run(self._client(db), input=text, capture_output=True, text=True,
                            timeout=120)
        if cp.returncode != 0:
            raise RuntimeError(f"psql: {cp.stderr}\n--- SQL ---\n{text[:2000]}")
        return [line.split("\t") for line in cp.stdout.splitlines() if line]

    def load_postfixadmin(self, db):
        self.sql(None, f"CREATE USER {TERN_DB_USER} PASSWORD '{TERN_DB_PASSWORD}';"
                       f"CREATE USER {TLS_DB_USER} PASSWORD '{TERN_DB_PASSWORD}';"
                       f"CREATE DATABASE {db} OWNER {TERN_DB_USER};")
        self.sql(db, f"SET ROLE {TERN_DB_USER};\n" +
                 (SQL_DIR / "postfixadmin-3.3-pgsql.sql").read_text())
        self.sql(db, f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {TLS_DB_USER};"
                     f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {TLS_DB_USER};")

    def true(self):
        return "t"  # psql's text form of a boolean

    def false(self):
        return "f"


def find_binary(*names):
    """Path of the first of names found in PATH, /usr/sbin or PostgreSQL's bin dirs."""
    for name in names:
        hit = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if hit:
            return hit
        for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
    raise FileNotFoundError(" / ".join(names))


def available(driver):
    """Are this driver's server binaries installed?"""
    names = {"mysql": (("mariadb-install-db", "mysql_install_db"), ("mariadbd", "mysqld"),
                       ("mariadb", "mysql")),
             "postgresql": (("postgres",), ("initdb",), ("psql",))}[driver]
    try:
        for alternatives in names:
            find_binary(*alternatives)
        return True
    except FileNotFoundError:
        return False


def make_server(driver, root):
    """A fresh, initialised (not started) server, or None if its binaries are absent."""
    if not available(driver):
        return None
    return MariaDB(root) if driver == "mysql" else PostgreSQL(root)


def module_server(driver, load):
    """For a module fixture: a started server of driver in a fresh folder the database's
    own account can reach (pytest's tmp_path is 0700 root), after load(db) filled it;
    skips the test when the binaries are absent. The caller cleans it up (db.cleanup())."""
    import pytest
    import tempfile
    if not available(driver):
        pytest.skip(f"{driver} server binaries not installed (scripts/install-deps.sh)")
    db = make_server(driver, tempfile.mkdtemp(prefix=f"sqldir-{driver}-"))
    try:
        db.start()
        load(db)
    except BaseException:
        db.cleanup()
        raise
    return db
