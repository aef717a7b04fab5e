#!/usr/bin/env python3
"""
login_bench.py - IMAP login rate with the directory in a database, Tern vs Dovecot on the
SAME database, same machine, same run, same client code (bench/README.md rules).

For each of MariaDB and PostgreSQL: a private server (tests/integration/sqldb_util.py)
loaded with postfixadmin 3.3's schema and --users mailboxes whose passwords are md5crypt
("$1$...", postfixadmin's default, read as CRYPT: seed 003's setup); then
  - Tern with directory.driver = mysql / postgresql, directory.schema = postfixadmin;
  - Dovecot 2.3 (dovecot-imapd) with passdb and userdb "sql" (dovecot-mysql /
    dovecot-pgsql) on the same database, seed 003's queries, default_pass_scheme = CRYPT,
    no auth cache (Dovecot's default, and Tern has none);
and --clients concurrent clients (asyncio tasks over --procs processes) each doing
LOGIN + LOGOUT on a fresh connection, round-robin over the users, for --seconds (after a
warm-up). Every user logs in once on both servers before anything is measured: a user's
first login creates its mailbox (Tern: Maildir and index, Dovecot: Maildir), which is not
what a login costs afterwards. --rounds measurements per server, alternating which server
goes first, median reported. Reported: logins/s, errors, CPU seconds of the mail server
(Dovecot: master and every child, reaped ones included) and of the database server.

    /usr/bin/python3 bench/directory/login_bench.py [--users 1000] [--clients 32]
        [--procs 2] [--seconds 10] [--rounds 3] [--db mysql,postgresql] [--pool-size 4]

Run as root (Dovecot switches to the mail user); loopback only. Needs dovecot-imapd,
dovecot-mysql, dovecot-pgsql, mariadb-server, postgresql. Results are appended to
bench/results/directory-login.jsonl; numbers are measurements, never test assertions.
"""

import argparse
import asyncio
import multiprocessing as mp
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "lib"))
sys.path.insert(0, str(HERE.parents[1] / "imap"))
sys.path.insert(0, str(HERE.parents[2] / "tests" / "integration"))
import benchlib  # noqa: E402
import imap_bench  # noqa: E402  (Dovecot process helpers: CPU, stop)
import sqldb_util  # noqa: E402

DB = "postfix"
PASSWORD = "bench-pw"
DOMAIN = "example.org"


# ---- the database -------------------------------------------------------------------------

def md5crypt_hashes(n):
    """n md5crypt hashes of PASSWORD with their own salts (openssl passwd -1 -stdin)."""
    out = subprocess.run(["openssl", "passwd", "-1", "-stdin"], input=(PASSWORD + "\n") * n,
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == n
    return out


def load_users(db, n):
    users = [f"u{i:05d}@{DOMAIN}" for i in range(n)]
    hashes = md5crypt_hashes(n)
    sql = ["INSERT INTO domain (domain, description, aliases, mailboxes, maxquota, quota, "
           f"transport, backupmx, active) VALUES ('{DOMAIN}', '', 0, 0, 0, 0, 'virtual', "
           "FALSE, TRUE);"]
    for u, h in zip(users, hashes):
        local = u.split("@")[0]
        sql.append("INSERT INTO mailbox (username, password, name, maildir, quota, local_part, "
                   f"domain, active) VALUES ('{u}', '{h}', '', '{DOMAIN}/{local}/', 0, "
                   f"'{local}', '{DOMAIN}', TRUE);")
        sql.append(f"INSERT INTO alias (address, goto, domain, active) VALUES ('{u}', '{u}', "
                   f"'{DOMAIN}', TRUE);")
    db.sql(DB, "\n".join(sql))
    return users


# ---- servers ------------------------------------------------------------------------------

def tern_start(db, pool_size):
    import conftest
    keys = db.tern_keys(DB)
    keys.update({"directory.pool_size": pool_size, "max_connections": 0,
                 "max_connections_per_ip": 0, "auth.max_failures": 0})
    srv = conftest.TernServer(keys, name="login-bench")
    srv.start()
    return srv


def dovecot_start(root, port, db, uid, gid):
    """A private Dovecot (imap only) with sql passdb/userdb on db (seed 003's queries)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run").mkdir(exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    os.chown(root / "home", uid, gid)
    driver = "mysql" if db.driver == "mysql" else "pgsql"
    (root / "dovecot-sql.conf.ext").write_text(f"""
driver = {driver}
connect = host=127.0.0.1 port={db.port} dbname={DB} user={sqldb_util.TERN_DB_USER} password={sqldb_util.TERN_DB_PASSWORD}
default_pass_scheme = CRYPT
password_query = SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = '1'
user_query = SELECT CONCAT('{root}/home/', maildir) AS home, {uid} AS uid, {gid} AS gid FROM mailbox WHERE username = '%u' AND active = '1'
""")
    os.chmod(root / "dovecot-sql.conf.ext", 0o600)
    auth = f"""
passdb {{
  driver = sql
  args = {root}/dovecot-sql.conf.ext
}}
userdb {{
  driver = sql
  args = {root}/dovecot-sql.conf.ext
}}
"""
    return imap_bench.dovecot_start(root, port, uid, gid, [], auth=auth)


# ---- clients ------------------------------------------------------------------------------

async def login_logout(port, user, timeout=30):
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        line = await asyncio.wait_for(r.readline(), timeout)
        if not line.startswith(b"* OK"):
            raise RuntimeError(f"greeting {line[:60]!r}")
        w.write(f'a1 LOGIN {user} "{PASSWORD}"\r\n'.encode())
        while True:
            line = await asyncio.wait_for(r.readline(), timeout)
            if not line:
                raise ConnectionError("closed after LOGIN")
            if line.startswith(b"a1 "):
                if not line.startswith(b"a1 OK"):
                    raise RuntimeError(line[:80].decode(errors="replace").strip())
                break
        w.write(b"a2 LOGOUT\r\n")
        while True:
            line = await asyncio.wait_for(r.readline(), timeout)
            if not line or line.startswith(b"a2 "):
                break
    finally:
        w.close()


async def client_tasks(port, users, tasks, start_at, stop_at, offset):
    ok, errors = 0, {}

    async def one(k):
        nonlocal ok
        i = offset + k
        while time.time() < stop_at:
            user = users[i % len(users)]
            i += tasks * 97  # spread over the users
            try:
                await login_logout(port, user)
                if time.time() >= start_at:
                    ok += 1
            except Exception as e:  # counted, never raised
                key = type(e).__name__ + ": " + str(e)[:60]
                errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(one(k) for k in range(tasks)))
    return ok, errors


def client_process(args):
    port, users, tasks, start_at, stop_at, offset = args
    return asyncio.run(client_tasks(port, users, tasks, start_at, stop_at, offset))


async def prime_async(port, users, parallel=16):
    sem = asyncio.Semaphore(parallel)
    errors = 0

    async def one(u):
        nonlocal errors
        async with sem:
            try:
                await login_logout(port, u, timeout=60)
            except Exception:
                errors += 1

    await asyncio.gather(*(one(u) for u in users))
    return errors


def prime(name, port, users):
    """One login per user (creates each mailbox) before measuring."""
    t0 = time.monotonic()
    errors = asyncio.run(prime_async(port, users))
    print(f"  {name:8s} first login of {len(users)} users: {time.monotonic() - t0:.1f}s, "
          f"errors {errors}", flush=True)


def run_load(port, users, clients, procs, seconds, warmup=2.0):
    """Logins/s over `seconds` after `warmup` (logins during warm-up are not counted)."""
    per = max(1, clients // procs)
    start_at = time.time() + warmup + 0.5
    stop_at = start_at + seconds
    with mp.Pool(procs) as pool:
        res = pool.map(client_process, [(port, users, per, start_at, stop_at, p * per)
                                        for p in range(procs)])
    ok = sum(r[0] for r in res)
    errors = {}
    for _, e in res:
        for k, v in e.items():
            errors[k] = errors.get(k, 0) + v
    return ok, errors


def measure(name, port, server_pid, db_pid, users, a):
    s0, d0 = imap_bench.cpu_seconds(server_pid), imap_bench.cpu_seconds(db_pid)
    t0 = time.monotonic()
    ok, errors = run_load(port, users, a.clients, a.procs, a.seconds)
    wall = time.monotonic() - t0
    time.sleep(1)  # let Dovecot reap its imap processes (their CPU lands in cutime)
    s_cpu = imap_bench.cpu_seconds(server_pid) - s0
    d_cpu = imap_bench.cpu_seconds(db_pid) - d0
    r = {"server": name, "logins": ok, "seconds": a.seconds,
         "logins_per_s": round(ok / a.seconds, 1), "errors": errors,
         "server_cpu_s": round(s_cpu, 2), "db_cpu_s": round(d_cpu, 2),
         "wall_incl_warmup_s": round(wall, 1),
         "server_cpu_ms_per_login": round(1000 * s_cpu / ok, 3) if ok else None}
    print(f"  {name:8s} {r['logins_per_s']:8.1f} logins/s ({ok} in {a.seconds}s, "
          f"{a.clients} clients); CPU: server {r['server_cpu_s']}s "
          f"({r['server_cpu_ms_per_login']} ms/login), database {r['db_cpu_s']}s; "
          f"errors {errors}", flush=True)
    return r


def bench_one(driver, a, work):
    db = sqldb_util.make_server(driver, work / driver)
    if db is None:
        print(f"{driver}: server binaries not installed; skipped")
        return None
    srv = dv = None
    try:
        db.start()
        db.load_postfixadmin(DB)
        users = load_users(db, a.users)
        srv = tern_start(db, a.pool_size)
        run_user = srv.run_user or "root"
        uid, gid = pwd.getpwnam(run_user).pw_uid, pwd.getpwnam(run_user).pw_gid
        dv_port = imap_bench.free_port()
        dv = dovecot_start(work / f"dv-{driver}", dv_port, db, uid, gid)
        print(f"{driver} ({a.users} users, md5crypt):", flush=True)
        order = [("tern", srv.ports["imap"], srv.pid), ("dovecot", dv_port, dv.pid)]
        for name, port, _ in order:
            prime(name, port, users)
        runs = {"tern": [], "dovecot": []}
        for rnd in range(a.rounds):
            for name, port, pid in (order if rnd % 2 == 0 else order[::-1]):
                runs[name].append(measure(name, port, pid, db.proc.pid, users, a))
        med = {n: statistics.median(r["logins_per_s"] for r in rs) for n, rs in runs.items()}
        ratio = med["tern"] / med["dovecot"] if med["dovecot"] else float("nan")
        print(f"  median over {a.rounds} rounds: tern {med['tern']} vs dovecot "
              f"{med['dovecot']} logins/s = {ratio:.2f}x", flush=True)
        return {"driver": driver, "users": a.users, "clients": a.clients, "procs": a.procs,
                "pool_size": a.pool_size, "rounds": a.rounds, "tern": runs["tern"],
                "dovecot": runs["dovecot"], "tern_median": med["tern"],
                "dovecot_median": med["dovecot"], "ratio": round(ratio, 3)}
    finally:
        if dv is not None:
            imap_bench.dovecot_stop(dv)
        if srv is not None:
            srv.cleanup()
        db.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="measurements per server")
    ap.add_argument("--db", default="mysql,postgresql")
    ap.add_argument("--pool-size", type=int, default=4, help="Tern's directory.pool_size")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("login_bench: run as root (Dovecot switches to the mail user)")
    missing = [p for p, f in (("dovecot-imapd", "/usr/lib/dovecot/imap"),
                              ("dovecot-mysql", "/usr/lib/dovecot/modules/auth/libdriver_mysql.so"),
                              ("dovecot-pgsql", "/usr/lib/dovecot/modules/auth/libdriver_pgsql.so"))
               if not Path(f).exists()]
    if missing:
        sys.exit(f"login_bench: missing {' '.join(missing)} (apt-get install -y "
                 f"--no-install-recommends {' '.join(missing)})")
    imap_bench.raise_nofile()
    load = open("/proc/loadavg").read().split()[:3]
    print(f"load average before: {' '.join(load)}; {os.cpu_count()} CPUs", flush=True)
    work = Path(tempfile.mkdtemp(prefix="login-bench-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    try:
        for driver in a.db.split(","):
            r = bench_one(driver, a, work)
            if r:
                r["loadavg_before"] = load
                benchlib.report("directory-login", r)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
