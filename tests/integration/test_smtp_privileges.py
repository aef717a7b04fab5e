"""
test_smtp_privileges.py - DESIGN §2 privileges: started as root, `tern serve` binds its
listeners (a port below 1024 included) as the master, which stays root and parses nothing
from the network; every other process runs as its own unprivileged user only (the mail
workers and the queue process as run_user, the login processes as login_user, the auth
process as auth_user: docs/SECURITY.md): every Uid/Gid field in /proc/<pid>/status is
that user's, no supplementary root group, setuid(0) impossible, and everything they
create in the data folder belongs to the run user, except tern.db and its WAL files
(auth_user's) and run/ (the master's control socket and the login processes' root).
"""

import os
import pwd
import re
import socket

import pytest

from tern_util import Client, child_pids, converse, send_mail, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the privilege drop")


def free_low_port():
    """A loopback port below 1024 nobody listens on (only root can bind it)."""
    for port in range(870, 1000):
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024")


def proc_ids(pid, field):
    text = open(f"/proc/{pid}/status").read()
    return [int(x) for x in re.search(rf"^{field}:\s*(.*)$", text, re.M).group(1).split()]


def test_serve_binds_low_port_then_runs_as_run_user(tern_factory):
    low = free_low_port()
    srv = tern_factory(start=False)
    srv.ports["smtp"] = low
    srv.write_config({"smtp.listen": f"127.0.0.1:{low}"})
    srv.start()
    assert srv.run_user, "the suite runs as root: the fixture sets run_user"
    pw = pwd.getpwnam(srv.run_user)
    kids = child_pids(srv.pid)
    assert len(kids) >= 2, f"a master with workers and a queue process: {kids}"
    assert proc_ids(srv.pid, "Uid")[0] == 0  # the master keeps root (binding, restarts)
    status = srv.cli("status").stdout
    kinds = {int(pid): kind for kind, pid in re.findall(r"^(\w+): pid (\d+)", status, re.M)}
    user_of = {"worker": srv.run_user, "queue": srv.run_user, "login": srv.login_user,
               "auth": srv.auth_user}
    assert set(kids) <= set(kinds) and {kinds[k] for k in kids} == set(user_of), status
    # every process that touches network input or mail, and its threads: its own user
    for pid in kids:
        pw = pwd.getpwnam(user_of[kinds[pid]])
        for tid in os.listdir(f"/proc/{pid}/task"):
            uids = proc_ids(f"{pid}/task/{tid}", "Uid")
            gids = proc_ids(f"{pid}/task/{tid}", "Gid")
            assert uids == [pw.pw_uid] * 4, f"process {pid} task {tid} Uid {uids}"
            assert gids == [pw.pw_gid] * 4, f"process {pid} task {tid} Gid {gids}"
            assert 0 not in proc_ids(f"{pid}/task/{tid}", "Groups")
    # the low port is served (bound before the drop)
    c = Client(srv.host, low)
    c.read_until(r"^220 ")
    converse(c, [("EHLO client.test", r"^250 "), ("QUIT", r"^221 ")])
    # deliver once so the store, the index and the spool are created after the drop
    code, _ = send_mail(srv, "a@remote.example", ["alice@example.test"], "privs test")
    assert code == 250
    wait_for(lambda: any((srv.maildir("alice@example.test") / "new").iterdir()),
             what="the delivered message")
    pw = pwd.getpwnam(srv.run_user)
    auth_uid = pwd.getpwnam(srv.auth_user).pw_uid
    bad = []
    for root, dirs, files in os.walk(srv.data_dir):
        if root == str(srv.data_dir):
            dirs[:] = [d for d in dirs if d != "run"]  # the master's control socket
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            # the auth process's: the directory, the failed-login table, its control socket
            is_db = root == str(srv.data_dir) and (name.startswith(("tern.db", "penalty.db"))
                                                   or name == "control.sock")
            if st.st_uid != (auth_uid if is_db else pw.pw_uid):
                bad.append(f"{os.path.join(root, name)} uid={st.st_uid}")
    assert os.stat(srv.data_dir).st_uid == pw.pw_uid
    assert not bad, ("not owned by the run user (tern.db, penalty.db, control.sock: the auth "
                     "user):\n" + "\n".join(bad[:20]))
