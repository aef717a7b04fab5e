"""
test_privsep.py - issue 10: the pre-authentication boundary (docs/SECURITY.md).

  - every process runs as its own user: the login processes as login_user inside an
    empty root (login_chroot), the mail workers and the queue process as run_user, the
    auth process as auth_user; read from /proc/PID/status and /proc/PID/root;
  - with exactly a process's credentials (a forked child takes its uid, gid and groups,
    and for a login process its root too) opening a mailbox file, reading tern.db (the
    password hashes) and writing the spool fail for a login process; reading tern.db
    fails for a mail worker; reading mail fails for the auth process. Each check also
    runs the other way where it must succeed (a worker reads mail, the auth process reads
    tern.db), so the test cannot pass by failing to try;
  - a login process killed with SIGSEGV (SIGABRT under ASan) under SMTP load drops only its own connections
    (before login, SMTP, and the TLS sessions it relays), plain sessions handed to mail
    workers live on, the master starts another login process, and no acknowledged
    message is lost or doubled.
No test asserts on time.
"""

import errno
import imaplib
import os
import pwd
import re
import signal
import smtplib
import socket
import ssl

import pytest

from test_imap_lib import add_user, imaplib_login
from tern_util import SmtpLoad, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: users and a chroot")

# The crash inflicted (as test_process_model.py): under ASan the sanitizer turns a SIGSEGV
# into a report and an abort, so there the crash is a SIGABRT, which it leaves alone.
CRASH = (signal.SIGABRT if os.environ.get("TERN_SANITIZED", "") not in ("", "0")
         else signal.SIGSEGV)


def _status(srv):
    return srv.cli("status").stdout


def _pids(srv, kind):
    return [int(p) for p in re.findall(rf"^{kind}: pid (\d+)", _status(srv), re.M)]


def _creds(pid):
    """(uid, gid, groups, root) of a process, from /proc."""
    text = open(f"/proc/{pid}/status").read()
    uids = [int(x) for x in re.search(r"^Uid:\s+(.*)$", text, re.M).group(1).split()]
    gids = [int(x) for x in re.search(r"^Gid:\s+(.*)$", text, re.M).group(1).split()]
    groups = [int(x) for x in re.search(r"^Groups:\s*(.*)$", text, re.M).group(1).split()]
    assert len(set(uids)) == 1 and len(set(gids)) == 1, (pid, uids, gids)  # real = saved
    return uids[0], gids[0], groups, os.readlink(f"/proc/{pid}/root")


def _try_as(creds, action, path):
    """Run one file operation in a child with exactly these credentials (and root
    directory); returns 0 on success or the errno."""
    uid, gid, groups, root = creds
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 255
        try:
            os.close(rfd)
            if root != "/":
                os.chroot(root)
                os.chdir("/")
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            try:
                if action == "read":
                    os.close(os.open(path, os.O_RDONLY))
                elif action == "create":
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    os.unlink(path)
                elif action == "list":
                    os.listdir(path)
                code = 0
            except OSError as e:
                code = e.errno
            os.write(wfd, str(code).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    out = os.read(rfd, 64)
    os.close(rfd)
    os.waitpid(pid, 0)
    return int(out)


def test_each_process_can_touch_only_its_own(tern_factory):
    # The default root even in sanitizer runs (conftest sets "/" there for LeakSanitizer).
    srv = tern_factory({"worker_processes": "2", "login_chroot": None})
    s = smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=30)
    s.sendmail("a@example.org", ["alice@example.test"], "Subject: secret\r\n\r\nbody\r\n")
    s.quit()
    box = srv.maildir("alice@example.test")
    mail = next(p for sub in ("new", "cur") for p in (box / sub).iterdir())
    tern_db = srv.data_dir / "tern.db"
    spool = srv.data_dir / "queue" / "incoming"
    assert spool.is_dir() and tern_db.exists()
    login_root = os.path.realpath(srv.data_dir / "run" / "login-root")

    users = {k: pwd.getpwnam(v) for k, v in (("run", srv.run_user), ("login", srv.login_user),
                                             ("auth", srv.auth_user))}
    assert len({u.pw_uid for u in users.values()}) == 3, "three distinct users"
    login = [_creds(p) for p in _pids(srv, "login")]
    workers = [_creds(p) for p in _pids(srv, "worker")]
    (auth,) = [_creds(p) for p in _pids(srv, "auth")]
    (queue,) = [_creds(p) for p in _pids(srv, "queue")]
    assert len(login) == 2 and len(workers) == 2
    for c in login:
        assert c[0] == users["login"].pw_uid and c[1] == users["login"].pw_gid, c
        assert c[3] == login_root, f"login process not chrooted: root {c[3]}"
        assert users["run"].pw_gid not in c[2] and users["auth"].pw_gid not in c[2], c
    for c in workers + [queue]:
        assert c[0] == users["run"].pw_uid and c[3] == "/", c
    assert auth[0] == users["auth"].pw_uid and auth[3] == "/", auth
    assert os.listdir(login_root) == [], "the login processes' root is empty"
    st = os.stat(login_root)
    assert st.st_uid == 0 and not st.st_mode & 0o022

    lg = login[0]
    # a login process, as it runs (inside its root): none of it even exists there
    for path in (str(mail), str(tern_db)):
        assert _try_as(lg, "read", path) == errno.ENOENT, path
    assert _try_as(lg, "create", str(spool / "x")) == errno.ENOENT
    # and with its user alone (had it left the chroot): the permissions refuse it
    unrooted = lg[:3] + ("/",)
    assert _try_as(unrooted, "read", str(mail)) == errno.EACCES
    assert _try_as(unrooted, "read", str(tern_db)) == errno.EACCES
    assert _try_as(unrooted, "create", str(spool / "x")) == errno.EACCES
    # a mail worker reads mail but not the password hashes
    assert _try_as(workers[0], "read", str(mail)) == 0
    assert _try_as(workers[0], "read", str(tern_db)) == errno.EACCES
    assert _try_as(workers[0], "create", str(spool / "x")) == 0
    # the auth process reads the hashes but no mail and no spool
    assert _try_as(auth, "read", str(tern_db)) == 0
    assert _try_as(auth, "read", str(mail)) == errno.EACCES
    assert _try_as(auth, "list", str(box / "new")) == errno.EACCES
    assert _try_as(auth, "create", str(spool / "x")) == errno.EACCES
    assert oct(tern_db.stat().st_mode & 0o777) == oct(0o600)


def _tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _login_counts(srv):
    """{pid: (connections, imap, imaps)} of the login processes, from tern status."""
    out = {}
    for m in re.finditer(r"^login: pid (\d+),.*connections (\d+) \((.*?)\)", _status(srv), re.M):
        roles = dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+)", m.group(3)))
        out[int(m.group(1))] = (int(m.group(2)), roles["imap"], roles["imaps"])
    return out


def _alive(c):
    try:
        return c.noop()[0] == "OK"
    except (imaplib.IMAP4.abort, OSError, EOFError):
        return False


def test_login_process_killed_under_load(tern_factory):
    srv = tern_factory({"worker_processes": "2", "login_processes": "2"})
    plain, relayed, waiting = [], [], []
    for k in range(6):
        user = f"lp{k}@example.test"
        add_user(srv, user, "pw")
        c = imaplib_login(srv, user, "pw")
        c.select("INBOX")
        plain.append(c)
        t = imaplib.IMAP4_SSL(srv.host, srv.ports["imaps"], ssl_context=_tls_context())
        t.login(user, "pw")
        t.select("INBOX")
        relayed.append(t)
    for _ in range(4):  # before login: greeted, nothing sent
        w = socket.create_connection((srv.host, srv.ports["imap"]), timeout=30)
        assert w.recv(1024).startswith(b"* OK")
        waiting.append(w)
    counts = _login_counts(srv)
    victim = max(counts, key=lambda p: counts[p][2])  # the one relaying the most
    _, victim_waiting, victim_relayed = counts[victim]
    assert victim_relayed > 0 and sum(v[2] for v in counts.values()) == 6, counts
    assert sum(v[1] for v in counts.values()) == 4, counts  # plain ones moved on

    add_user(srv, "lpload@example.test", "pw")
    load = SmtpLoad(srv, "lpload@example.test", "lpkill")
    load.wait_acked(40, "deliveries under way")
    since = srv.log_offset()
    os.kill(victim, CRASH)
    srv.wait_log(rf"warning: process tern/login pid {victim} killed by signal {int(CRASH)}",
                 since=since)
    srv.wait_log(r"process tern/login pid \d+ started", since=since, timeout=30)
    # every plain session lives on in its mail worker
    for c in plain:
        assert _alive(c)
    # exactly the victim's relayed TLS sessions and waiting connections are gone
    dead = [t for t in relayed if not _alive(t)]
    assert len(dead) == victim_relayed, (len(dead), counts)
    gone = 0
    for w in waiting:
        w.settimeout(5)
        try:
            gone += w.recv(1) == b""
        except socket.timeout:
            pass
        except OSError:
            gone += 1
    assert gone == victim_waiting, (gone, counts)
    # new connections are served, over TLS too
    t = imaplib.IMAP4_SSL(srv.host, srv.ports["imaps"], ssl_context=_tls_context())
    t.login("lp0@example.test", "pw")
    assert t.select("INBOX")[0] == "OK"
    t.logout()
    load.wait_acked(80, "deliveries after the restart")
    load.stop()
    assert len(_pids(srv, "login")) == 2
    load.check_each_once()
    for c in plain + [t for t in relayed if t not in dead]:
        c.logout()
    for w in waiting:
        w.close()
