#!/usr/bin/env python3
"""
handshake_bench.py - implicit-TLS handshake + login per second on the three implicit-TLS
ports, Tern versus Postfix / Dovecot, same machine, same run, same client code, same
certificate (bench/README.md rules; issue 10).

  465 (submissions): TLS handshake, 220, EHLO, AUTH PLAIN, 235, QUIT
                     Tern submissions vs Postfix smtpd in wrapper mode
                     (smtpd_tls_wrappermode=yes) with Dovecot SASL (smtpd_sasl_type =
                     dovecot, over a loopback inet socket to the private Dovecot's auth)
  993 (imaps):       TLS handshake, greeting, LOGIN, LOGOUT      Tern vs Dovecot imap-login
  995 (pop3s):       TLS handshake, greeting, USER, PASS, QUIT   Tern vs Dovecot pop3-login

Every session is a new TCP connection and a full handshake (no session resumption: each
connection is a fresh SSL object, no session is offered). Both sides use the RSA 2048
self-signed certificate Tern generates on its first start (tls/cert.pem, tls/key.pem);
TLS version and cipher are whatever client and server agree (printed). Passwords are
stored as PLAIN on both sides (Tern: auth.password_schemes = PLAIN; Dovecot passwd-file
{PLAIN}), so the hash does not weigh in: what is measured is the handshake, the protocol
and the login path. Tern runs --workers worker processes (default 2); Dovecot and Postfix
run as shipped (Dovecot's high-security login processes, one per connection; Postfix's
default_process_limit 100). Load: --clients concurrent clients (asyncio tasks over --procs
client processes), for --seconds after a warm-up, --rounds measurements per server
alternating which goes first; medians reported. The load average is printed with every
figure, and the CPU seconds of each server (all its processes, reaped ones included) and
of the client processes.

    /usr/bin/python3 bench/tls/handshake_bench.py [--clients 32] [--procs 2] [--seconds 8]
        [--rounds 3] [--workers 2] [--protocols smtp,imap,pop3]

Run as root (Dovecot and Postfix switch users); loopback only; needs postfix,
dovecot-imapd, dovecot-pop3d. Results are appended to bench/results/tls-handshake.jsonl.
Numbers are measurements, never test assertions.
"""

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "lib"))
sys.path.insert(0, str(HERE.parents[1] / "imap"))
import benchlib  # noqa: E402
import imap_bench  # noqa: E402  (Dovecot start/stop, CPU of a process tree, tern_start)

PASSWORD = imap_bench.PASSWORD
DOMAIN = imap_bench.DOMAIN
TIMEOUT = 30


# ---- one session per protocol ---------------------------------------------------------------

async def _expect(r, prefix, what):
    """Read reply lines until the final one, which must start with prefix: SMTP
    continuation lines ("250-") and IMAP untagged lines before a tagged reply are
    skipped."""
    while True:
        line = await asyncio.wait_for(r.readline(), TIMEOUT)
        if not line:
            raise ConnectionError(f"closed after {what}")
        if line[3:4] == b"-" and line[:3].isdigit():
            continue
        if line.startswith(b"* ") and not prefix.startswith(b"*"):
            continue
        if not line.startswith(prefix):
            raise RuntimeError(f"{what}: {line[:80].decode(errors='replace').strip()}")
        return line


async def session_smtp(r, w, user):
    await _expect(r, b"220", "greeting")
    w.write(b"EHLO bench.example.org\r\n")
    await _expect(r, b"250", "EHLO")
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    w.write(f"AUTH PLAIN {token}\r\n".encode())
    await _expect(r, b"235", "AUTH PLAIN")
    w.write(b"QUIT\r\n")
    await _expect(r, b"221", "QUIT")


async def session_imap(r, w, user):
    await _expect(r, b"* OK", "greeting")
    w.write(f'a1 LOGIN {user} "{PASSWORD}"\r\n'.encode())
    await _expect(r, b"a1 OK", "LOGIN")
    w.write(b"a2 LOGOUT\r\n")
    await _expect(r, b"a2 OK", "LOGOUT")


async def session_pop3(r, w, user):
    await _expect(r, b"+OK", "greeting")
    w.write(f"USER {user}\r\n".encode())
    await _expect(r, b"+OK", "USER")
    w.write(f"PASS {PASSWORD}\r\n".encode())
    await _expect(r, b"+OK", "PASS")
    w.write(b"QUIT\r\n")
    await _expect(r, b"+OK", "QUIT")


SESSIONS = {"smtp": session_smtp, "imap": session_imap, "pop3": session_pop3}


async def one_session(proto, port, user, ctx):
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), TIMEOUT)
    try:
        await SESSIONS[proto](r, w, user)
        return w.get_extra_info("ssl_object")
    finally:
        w.close()


# ---- load -----------------------------------------------------------------------------------

async def client_tasks(proto, port, users, tasks, start_at, stop_at, offset):
    ctx = benchlib.tls_client_context()
    ok, errors, tls = 0, {}, None

    async def one(k):
        nonlocal ok, tls
        i = offset + k
        while time.time() < stop_at:
            user = users[i % len(users)]
            i += tasks * 97  # spread over the users
            try:
                sslobj = await one_session(proto, port, user, ctx)
                if tls is None and sslobj is not None:
                    tls = f"{sslobj.version()} {sslobj.cipher()[0]}"
                if time.time() >= start_at:
                    ok += 1
            except Exception as e:  # counted, never raised
                key = type(e).__name__ + ": " + str(e)[:70]
                errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(one(k) for k in range(tasks)))
    return ok, errors, tls


def client_process(args):
    return asyncio.run(client_tasks(*args))


def run_load(proto, port, users, clients, procs, seconds, warmup=2.0):
    """Sessions/s over `seconds` after `warmup` (sessions in the warm-up not counted)."""
    per = max(1, clients // procs)
    start_at = time.time() + warmup + 0.5
    stop_at = start_at + seconds
    with mp.Pool(procs) as pool:
        res = pool.map(client_process, [(proto, port, users, per, start_at, stop_at, p * per)
                                        for p in range(procs)])
    errors = {}
    for _, e, _ in res:
        for k, v in e.items():
            errors[k] = errors.get(k, 0) + v
    return sum(r[0] for r in res), errors, next((r[2] for r in res if r[2]), None)


def measure(name, proto, port, server_pids, users, a):
    """One measurement; server CPU summed over every process tree in server_pids."""
    load = benchlib.load_average()
    s0 = sum(imap_bench.cpu_seconds(p) for p in server_pids)
    c0 = imap_bench.client_cpu()
    ok, errors, tls = run_load(proto, port, users, a.clients, a.procs, a.seconds)
    time.sleep(1)  # let the servers reap their per-connection processes
    s_cpu = sum(imap_bench.cpu_seconds(p) for p in server_pids) - s0
    c_cpu = imap_bench.client_cpu() - c0
    r = {"server": name, "protocol": proto, "sessions": ok, "seconds": a.seconds,
         "per_s": round(ok / a.seconds, 1), "errors": errors, "tls": tls, "loadavg": load,
         "server_cpu_s": round(s_cpu, 2), "client_cpu_s": round(c_cpu, 2),
         "server_cpu_ms_per_session": round(1000 * s_cpu / ok, 2) if ok else None}
    print(f"  {proto:4s} {name:8s} {r['per_s']:8.1f}/s ({ok} in {a.seconds}s, {a.clients} "
          f"clients, {tls}); CPU server {r['server_cpu_s']}s "
          f"({r['server_cpu_ms_per_session']} ms/session), clients {r['client_cpu_s']}s; "
          f"load {load}; errors {errors}", flush=True)
    return r


# ---- the reference: Postfix smtps with Dovecot SASL -----------------------------------------

def postfix_start(root, port, auth_port, cert, key):
    """A private Postfix (own config, queue and data directories; chroot off) whose only
    listener is smtpd in wrapper mode on 127.0.0.1:port, SASL from Dovecot over inet."""
    root.mkdir(parents=True)
    (root / "spool").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", "postfix", "postfix")
    (root / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = ref.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {root}/maillog
biff = no
alias_maps =
alias_database =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = encrypt
smtpd_tls_wrappermode = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{auth_port}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
""")
    master = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        f = line.split()
        if not f or line[0] in "# \t":
            master.append(line)
        elif f[1] == "inet":
            continue  # every network listener of the shipped file off
        else:
            if len(f) >= 8:
                f[4] = "n"  # chroot off (our directories are not in a chroot)
            master.append(" ".join(f))
    master.append(f"127.0.0.1:{port} inet n - n - - smtpd")
    if not any(ln.startswith("postlog") for ln in master):
        master.append("postlog unix-dgram n - n - 1 postlogd")
    (root / "master.cf").write_text("\n".join(master) + "\n")
    subprocess.run(["postfix", "-c", str(root), "check"], capture_output=True)
    cp = subprocess.run(["postfix", "-c", str(root), "start"], capture_output=True, text=True)
    if cp.returncode != 0:
        raise RuntimeError(f"postfix did not start: {cp.stderr}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return int((root / "spool" / "pid" / "master.pid").read_text().strip())


def postfix_stop(root):
    subprocess.run(["postfix", "-c", str(root), "stop"], capture_output=True)


# ---- main -----------------------------------------------------------------------------------

def prime(proto, name, port, users):
    """One session per user before measuring (a user's first login creates its mailbox)."""
    async def run():
        sem, errors = asyncio.Semaphore(16), {}
        ctx = benchlib.tls_client_context()

        async def one(u):
            async with sem:
                try:
                    await one_session(proto, port, u, ctx)
                except Exception as e:
                    k = type(e).__name__ + ": " + str(e)[:70]
                    errors[k] = errors.get(k, 0) + 1
        await asyncio.gather(*(one(u) for u in users))
        return errors
    errors = asyncio.run(run())
    if errors:
        print(f"  {proto} {name}: priming errors {errors}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1000,
                    help="users, round-robin (many: two POP3 sessions of one user collide)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="measurements per server")
    ap.add_argument("--workers", type=int, default=2, help="tern worker_processes")
    ap.add_argument("--protocols", default="smtp,imap,pop3")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("handshake_bench: run as root (Dovecot and Postfix switch users)")
    missing = [p for p, f in (("dovecot-imapd", "/usr/lib/dovecot/imap"),
                              ("dovecot-pop3d", "/usr/lib/dovecot/pop3"),
                              ("postfix", "/usr/sbin/postfix")) if not Path(f).exists()]
    if missing:
        sys.exit(f"handshake_bench: missing {' '.join(missing)} (apt-get install -y "
                 f"--no-install-recommends {' '.join(missing)}; do not start the services)")
    imap_bench.raise_nofile()
    print(f"load average before: {benchlib.load_average()}; {os.cpu_count()} CPUs", flush=True)
    users = [f"t{i:04d}@{DOMAIN}" for i in range(a.users)]
    work = Path(tempfile.mkdtemp(prefix="tls-bench-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    srv = dv = None
    pf_root = work / "postfix"
    pf_pid = None
    try:
        srv = imap_bench.tern_start({"auth.password_schemes": "PLAIN", "auth.max_failures": 0},
                                    users, workers=a.workers)
        cert, key = imap_bench.tls_files(srv)
        run_user = srv.run_user or "root"
        uid, gid = pwd.getpwnam(run_user).pw_uid, pwd.getpwnam(run_user).pw_gid
        (work / "dv" / "home").mkdir(parents=True)
        imap_bench.chown_tree(work / "dv" / "home", uid, gid)
        dv_imap, dv_imaps, dv_pop3, dv_pop3s, dv_auth, pf_port = (
            imap_bench.free_port() for _ in range(6))
        auth_listener = (f"service auth {{\n  inet_listener {{\n    address = 127.0.0.1\n"
                         f"    port = {dv_auth}\n  }}\n}}\nservice pop3 {{\n"
                         f"  process_limit = 100000\n}}\n")
        dv = imap_bench.dovecot_start(work / "dv", dv_imap, uid, gid, users, pop3_port=dv_pop3,
                                      tls=(cert, key, dv_imaps, dv_pop3s), extra=auth_listener)
        if "smtp" in a.protocols:
            pf_pid = postfix_start(pf_root, pf_port, dv_auth, cert, key)
        targets = {"smtp": (("tern", srv.ports["submissions"], [srv.pid]),
                            ("postfix", pf_port, [pf_pid or 0, dv.pid])),
                   "imap": (("tern", srv.ports["imaps"], [srv.pid]),
                            ("dovecot", dv_imaps, [dv.pid])),
                   "pop3": (("tern", srv.ports["pop3s"], [srv.pid]),
                            ("dovecot", dv_pop3s, [dv.pid]))}
        summary = {}
        for proto in a.protocols.split(","):
            print(f"{proto}: implicit TLS, {a.clients} clients over {a.procs} processes, "
                  f"{a.seconds}s x {a.rounds} rounds", flush=True)
            order = list(targets[proto])
            for name, port, _ in order:
                prime(proto, name, port, users)
            runs = {name: [] for name, _, _ in order}
            for rnd in range(a.rounds):
                for name, port, pids in (order if rnd % 2 == 0 else order[::-1]):
                    r = measure(name, proto, port, pids, users, a)
                    r["round"] = rnd + 1
                    runs[name].append(r)
            med = {n: statistics.median(r["per_s"] for r in rs) for n, rs in runs.items()}
            (tn, _, _), (rn, _, _) = order
            ratio = med[tn] / med[rn] if med[rn] else float("nan")
            print(f"  {proto}: median tern {med[tn]}/s vs {rn} {med[rn]}/s = {ratio:.2f}x",
                  flush=True)
            summary[proto] = {"tern_median": med[tn], "reference": rn,
                              "reference_median": med[rn], "ratio": round(ratio, 3),
                              "runs": runs}
        benchlib.report("tls-handshake", {"clients": a.clients, "procs": a.procs,
                                          "seconds": a.seconds, "rounds": a.rounds,
                                          "workers": a.workers, "users": a.users,
                                          "certificate": "RSA 2048 (tern's self-signed)",
                                          "results": summary})
        errs = [ln for ln in srv.log_text().splitlines()
                if re.search(r"\b(error|fatal|panic)\b", ln, re.I)]
        if errs:
            print(f"tern log: {len(errs)} error lines, first: {errs[:3]}")
    finally:
        if pf_pid:
            postfix_stop(pf_root)
        if dv is not None:
            imap_bench.dovecot_stop(dv)
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
