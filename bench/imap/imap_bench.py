#!/usr/bin/env python3
"""
imap_bench.py - IMAP side-by-side measurements, Tern vs Dovecot (dovecot-imapd), same
machine, same run, same client code (bench/README.md rules). Run by hand, as root
(Dovecot switches to the mail user); loopback only. Subcommands:

  mem     memory per idle authenticated IMAP connection (DESIGN §7: <= 1/20 of Dovecot's,
          aim < 64 KB). Opens N connections that LOGIN (plain, loopback) and then sit idle
          (optionally SELECT INBOX too), then N more, and reads the servers' memory
          before, after N and after 2N: for both servers the sum of VmRSS and the sum of
          Pss (smaps_rollup, shared pages split between sharers) over the master and all
          its descendants (tern: master, workers, auth, queue; Dovecot: one imap process
          per connection, plus its imap-login proxy over TLS). Per connection = growth / N
          from the warm baseline, and (2N - N) / N, the cost of one more connection.
          --tls: implicit TLS (imaps) on both, with the same RSA 2048 certificate;
          --workers: tern's worker_processes; --rounds: alternating, medians printed.
  idle    Tern only: N concurrent connections LOGIN + SELECT INBOX + IDLE; then one
          message is delivered over SMTP and every connection must see "* n EXISTS";
          counts connect/login/IDLE/notification errors; latency per connection from the
          SMTP 250 of its user's message to its EXISTS (median, p99, max, within 2 s);
          RSS/PSS of all tern processes. --procs client processes (asyncio each),
          --sources 127.0.x.y source addresses (more than 64K connections to one port),
          --workers, --tls. Raises RLIMIT_NOFILE (hard too, as root) before tern starts.
          Bounded by --timeout.
  fetch   SELECT INBOX + "UID FETCH 1:* (UID FLAGS RFC822.SIZE)" on a mailbox of N
          messages written directly as Maildir files (the same copy for both servers):
          the first (cold: index build) and then --runs warm timings, median reported.
  sort    SORT (DATE, SUBJECT, FROM, REVERSE ARRIVAL, DISPLAYFROM) and THREAD (REFERENCES,
          ORDEREDSUBJECT, REFS) of a whole mailbox of N list-like messages (topics with
          replies, References, dates in several zones): the first after SELECT (cold: keys
          not cached) and the warm median of --runs.
  search  SEARCH BODY/TEXT of a whole mailbox of N text messages (~4 KB, one in four
          quoted-printable; no full-text index on either side): misses that read every
          message and hits; cold and warm median of --runs, wall and server CPU.
  compress  FETCH 1:* (BODY.PEEK[]) of N list-like messages, plain and after COMPRESS
          DEFLATE (RFC 4978; Dovecot with imap_zlib): bytes on the wire and seconds.
  mixed   issue 4: N concurrent clients, each its own user with its own copy of the same
          Maildir, each doing a fixed number of loops of SELECT INBOX, FETCH
          BODY.PEEK[HEADER] of 10 random messages, FETCH BODY.PEEK[] of one, STORE +FLAGS
          (\\Seen) on 3, APPEND 10 KB, STORE +FLAGS (\\Deleted) on one, EXPUNGE (7 commands);
          tern then Dovecot, same seeds; commands/s of each and tern/Dovecot.

  imap_bench.py mem   [--conns 1000] [--users 100] [--select] [--no-login] [--tls]
                      [--workers 2] [--rounds 3] [--set key=value]
  imap_bench.py idle  [--conns 10000] [--timeout 600] [--procs 4] [--sources 16]
                      [--workers 2] [--tls]
  imap_bench.py fetch [--messages 100000] [--size 2000] [--runs 3] [--perf]
  imap_bench.py mixed [--clients 20] [--loops 50] [--messages 500] [--procs]
  imap_bench.py sort  [--messages 100000] [--runs 3]
  imap_bench.py search [--messages 20000] [--runs 3]
  imap_bench.py compress [--messages 100000] [--runs 3]

Results are appended to bench/results/imap-<subcommand>.jsonl. Numbers are measurements,
never test assertions.
"""

import argparse
import asyncio
import os
import pwd
import re
import resource
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import benchlib  # noqa: E402

PASSWORD = "benchpw"
DOVECOT = "/usr/sbin/dovecot"
DOMAIN = "example.test"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def chown_tree(path, uid, gid):
    for r, dirs, files in os.walk(path):
        os.chown(r, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(r, name), uid, gid)


def proc_field(pid, name, fname="status"):
    """A kB field (VmRSS, Pss) of /proc/<pid>/<fname>; 0 if gone."""
    try:
        with open(f"/proc/{pid}/{fname}") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root_pid):
    """root_pid and all its descendant pids (walks /proc ppid links)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root_pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory(root_pid):
    """(process count, sum VmRSS kB, sum Pss kB) over root_pid and its descendants."""
    pids = descendants(root_pid)
    rss = sum(proc_field(p, "VmRSS") for p in pids)
    pss = sum(proc_field(p, "Pss", "smaps_rollup") for p in pids)
    return len(pids), rss, pss


def memory_by_process(root_pid):
    """{pid: (VmRSS kB, Pss kB)} of root_pid and its descendants (tern: master, workers,
    auth and queue processes; where the growth of the sum lands)."""
    return {p: (proc_field(p, "VmRSS"), proc_field(p, "Pss", "smaps_rollup"))
            for p in descendants(root_pid)}


def process_growth(before, after):
    """'pid:+rss/+pss' for the processes whose RSS changed by more than 1 MB."""
    out = []
    for p, (rss, pss) in sorted(after.items()):
        r0, p0 = before.get(p, (0, 0))
        if abs(rss - r0) > 1024:
            out.append(f"{p}:{rss - r0:+d}/{pss - p0:+d}kB")
    return " ".join(out)


# ---- servers ------------------------------------------------------------------------------

def tern_start(overrides, users, workers=None):
    """A tern from the integration fixtures, with bench users u0000.. added; workers:
    worker_processes (None: the default, one per core)."""
    cfg = {"max_connections": 0, "max_connections_per_ip": 0}
    if workers is not None:
        cfg["worker_processes"] = workers
    cfg.update(overrides)
    srv = benchlib.start_tern(cfg)
    for u in users:
        srv.cli("user", "add", u, "--password-stdin", input=PASSWORD + "\n")
    return srv


def dovecot_start(root, port, uid, gid, users, pop3_port=None, zlib=False, auth=None,
                  tls=None, extra=""):
    """A private Dovecot (imap, and pop3 when pop3_port is given) on loopback ports;
    users in a passwd-file (bench/stress/reference.py uses the pop3 listener too), or the
    passdb/userdb blocks given as auth (bench/directory: sql on a database).
    tls = (cert_path, key_path, imaps_port, pop3s_port): ssl = yes with that certificate
    and the implicit-TLS listeners on those ports (0: off). extra: more config text."""
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    (root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{PASSWORD}::::::\n" for u in users))
    cert, key, imaps_port, pop3s_port = tls or (None, None, 0, 0)
    pop3 = ("" if pop3_port is None else
            benchlib.dovecot_login_service("pop3", pop3_port, pop3s_port))
    ssl_conf = (f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n" if tls else "ssl = no\n")
    if auth is None:
        auth = f"""
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
"""
    (root / "dovecot.conf").write_text(f"""
protocols = imap{' pop3' if pop3_port else ''}
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
{ssl_conf}disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
default_internal_user = dovecot
default_login_user = dovenull
default_process_limit = 20000
default_client_limit = 40000
{auth}
service imap {{
  process_limit = 100000
}}
protocol imap {{
  mail_max_userip_connections = 100000
{"  mail_plugins = $mail_plugins imap_zlib" if zlib else ""}
}}
{benchlib.dovecot_login_service("imap", port, imaps_port)}{pop3}{extra}""")
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"* OK"):
                    return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
    raise RuntimeError(f"dovecot did not start:\n{log[-3000:]}")


def dovecot_log_tail(root, lines=8):
    """The last error lines of a private Dovecot's log (why connections were refused)."""
    try:
        text = (root / "dovecot.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no dovecot.log)"
    bad = [ln for ln in text if re.search(r"error|fatal|warning", ln, re.I)]
    return "dovecot.log:\n  " + "\n  ".join((bad or text)[-lines:])


def dovecot_stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- async client ---------------------------------------------------------------------------

class Imap:
    """One IMAP connection: tagged commands, replies read until the tagged line."""

    def __init__(self, reader, writer):
        self.r, self.w, self.n, self.user = reader, writer, 0, None

    @classmethod
    async def open(cls, port, timeout, ssl=None, local_addr=None):
        # short bounds for connect and greeting: a server out of descriptors leaves
        # connections in the listen queue, never greeted; fail those fast.
        # ssl: a client SSLContext (implicit TLS); local_addr: (source ip, 0).
        r, w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ssl, local_addr=local_addr),
            min(timeout, 15))
        c = cls(r, w)
        line = await asyncio.wait_for(r.readline(), min(timeout, 15))
        if not line.startswith(b"* OK"):
            raise RuntimeError(f"greeting {line!r}")
        return c

    async def cmd(self, text, timeout):
        self.n += 1
        tag = f"a{self.n}".encode()
        self.w.write(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = await asyncio.wait_for(self.r.readline(), timeout)
            if not line:
                raise ConnectionError("closed")
            lines.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace").strip())
                return lines

    async def cmd_bulk(self, text, timeout):
        """Like cmd, but reads the reply in large chunks (the client must not be what is
        measured on 100,000-line replies); returns the number of untagged lines."""
        self.n += 1
        tag = f"a{self.n}".encode()
        self.w.write(tag + b" " + text.encode() + b"\r\n")
        buf = bytearray()
        needle = b"\r\n" + tag + b" "
        deadline = time.monotonic() + timeout
        while True:
            chunk = await asyncio.wait_for(self.r.read(1 << 20), deadline - time.monotonic())
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
            i = buf.find(needle, max(0, len(buf) - len(chunk) - len(needle)))
            if i >= 0 and buf.endswith(b"\r\n"):
                if not buf[i + len(needle):].startswith(b"OK"):
                    raise RuntimeError(bytes(buf[i:i + 200]).decode(errors="replace"))
                return buf[:i + 2].count(b"\r\n")

    def close(self):
        self.w.close()


async def open_many(port, users, n, select, idle, timeout, parallel=64, login=True,
                    ssl=None, sources=None, first=0):
    """n logged-in connections (round-robin over users); returns (conns, errors).
    login=False: connections that only got the greeting (the cost before any login).
    ssl: a client SSLContext (implicit TLS). sources: source addresses used round-robin
    (many 127.x addresses give more than 64K connections to one port). first: the index
    of the first connection (client processes each open their own slice)."""
    sem = asyncio.Semaphore(parallel)
    errors = {}

    async def one(i):
        async with sem:
            try:
                src = (sources[i % len(sources)], 0) if sources else None
                c = await Imap.open(port, timeout, ssl=ssl, local_addr=src)
                if not login:
                    return c
                c.user = users[i % len(users)]
                await c.cmd(f'LOGIN {c.user} "{PASSWORD}"', timeout)
                if select or idle:
                    await c.cmd("SELECT INBOX", timeout)
                if idle:
                    c.n += 1
                    c.w.write(f"a{c.n} IDLE\r\n".encode())
                    line = await asyncio.wait_for(c.r.readline(), timeout)
                    if not line.startswith(b"+"):
                        raise RuntimeError(f"IDLE {line!r}")
                return c
            except Exception as e:  # counted, first kinds kept
                key = type(e).__name__ + ": " + str(e)[:80]
                errors[key] = errors.get(key, 0) + 1
                return None

    conns = await asyncio.gather(*(one(first + i) for i in range(n)))
    return [c for c in conns if c], errors


async def close_all(conns):
    for c in conns:
        c.close()
    await asyncio.sleep(0.5)


# ---- mem ------------------------------------------------------------------------------------

def settle():
    time.sleep(2)


async def mem_one(name, port, pid, users, conns_n, select, timeout, login=True, ssl=None):
    """Memory of conns_n idle connections, then of 2 x conns_n (bench/README.md): per
    connection = growth / n from the warm baseline, and (RSS(2N) - RSS(N)) / N, which
    leaves out what is paid once per user or per process (pooled index connections,
    caches) and keeps only what each further connection costs."""
    # warm up: one login per user so per-user caches exist before the baseline.
    warm, err = await open_many(port, users, len(users), select, False, timeout, ssl=ssl)
    await close_all(warm)
    settle()
    p0, rss0, pss0 = memory(pid)
    by0 = memory_by_process(pid)
    load = benchlib.load_average()
    t0 = time.monotonic()
    conns, errors = await open_many(port, users, conns_n, select, False, timeout,
                                    login=login, ssl=ssl)
    t_open = time.monotonic() - t0
    settle()
    p1, rss1, pss1 = memory(pid)
    by1 = memory_by_process(pid)
    more, errors2 = await open_many(port, users, conns_n, select, False, timeout,
                                    login=login, ssl=ssl, first=conns_n)
    settle()
    p2, rss2, pss2 = memory(pid)
    for k, v in errors2.items():
        errors[k] = errors.get(k, 0) + v
    n, n2 = len(conns), len(more)
    tls = None
    if ssl is not None and conns:
        sslobj = conns[0].w.get_extra_info("ssl_object")
        tls = f"{sslobj.version()} {sslobj.cipher()[0]}" if sslobj else None
    res = {
        "server": name, "conns": n, "conns_2n": n + n2, "errors": errors,
        "open_s": round(t_open, 2), "procs_before": p0, "procs_after": p1,
        "procs_2n": p2, "loadavg": load, "tls": tls,
        "rss_before_kb": rss0, "rss_after_kb": rss1, "rss_2n_kb": rss2,
        "pss_before_kb": pss0, "pss_after_kb": pss1, "pss_2n_kb": pss2,
        "rss_per_conn_kb": round((rss1 - rss0) / n, 2) if n else None,
        "pss_per_conn_kb": round((pss1 - pss0) / n, 2) if n else None,
        "rss_marginal_kb": round((rss2 - rss1) / n2, 2) if n2 else None,
        "pss_marginal_kb": round((pss2 - pss1) / n2, 2) if n2 else None,
        "growth_by_process": process_growth(by0, by1) if p1 < 20 else None,
    }
    await close_all(conns + more)
    return res


def tern_settings(pairs):
    """{key: value} from --set key=value arguments (extra tern.conf lines)."""
    out = {}
    for kv in pairs or []:
        k, sep, v = kv.partition("=")
        if not sep:
            sys.exit(f"--set {kv!r}: expected key=value")
        out[k.strip()] = v.strip()
    return out


def tls_files(srv):
    """The certificate and key tern generated on its first start (RSA 2048, self-signed):
    the reference servers are given the same pair, so both sides do the same handshake."""
    return srv.data_dir / "tls" / "cert.pem", srv.data_dir / "tls" / "key.pem"


def cmd_mem(a):
    users = [f"u{i:04d}@{DOMAIN}" for i in range(a.users)]
    work = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    os.chmod(work, 0o755)
    srv = dv = None
    ssl = benchlib.tls_client_context() if a.tls else None
    try:
        srv = tern_start(tern_settings(a.set), users, workers=a.workers)
        run_user = srv.run_user or "root"
        uid, gid = pwd.getpwnam(run_user).pw_uid, pwd.getpwnam(run_user).pw_gid
        dv_port, dv_tls_port = free_port(), free_port()
        (work / "dv" / "home").mkdir(parents=True)
        chown_tree(work / "dv" / "home", uid, gid)
        cert, key = tls_files(srv)
        dv = dovecot_start(work / "dv", dv_port, uid, gid, users,
                           tls=(cert, key, dv_tls_port, 0) if a.tls else None)
        servers = [("tern", srv.ports["imaps" if a.tls else "imap"], srv.pid),
                   ("dovecot", dv_tls_port if a.tls else dv_port, dv.pid)]
        runs = {"tern": [], "dovecot": []}
        for rnd in range(a.rounds):
            for name, port, pid in (servers if rnd % 2 == 0 else servers[::-1]):
                if name == "tern" and rnd > 0:
                    # a fresh tern: the heap a round freed stays with the processes
                    # (malloc keeps it), and the next round would reuse it unseen
                    srv.stop()
                    srv.start()
                    pid = srv.pid
                r = asyncio.run(mem_one(name, port, pid, users, a.conns, a.select, a.timeout,
                                        login=not a.no_login, ssl=ssl))
                r.update({"users": a.users, "select": a.select, "login": not a.no_login,
                          "workers": a.workers, "round": rnd + 1})
                print(f"{name:8s} {r['conns']}+{r['conns_2n'] - r['conns']} conns"
                      f"{' TLS ' + r['tls'] if r['tls'] else ''} "
                      f"({r['open_s']}s, errors {r['errors']}, load {r['loadavg']}): "
                      f"procs {r['procs_before']}->{r['procs_after']}->{r['procs_2n']}, RSS "
                      f"{r['rss_before_kb']}->{r['rss_after_kb']}->{r['rss_2n_kb']} kB = "
                      f"{r['rss_per_conn_kb']} kB/conn (N), {r['rss_marginal_kb']} (2N-N); "
                      f"PSS {r['pss_before_kb']}->{r['pss_after_kb']}->{r['pss_2n_kb']} kB = "
                      f"{r['pss_per_conn_kb']} (N), {r['pss_marginal_kb']} (2N-N)"
                      + (f"; by process {r['growth_by_process']}" if r["growth_by_process"]
                         else ""), flush=True)
                benchlib.report("imap-mem", r)
                runs[name].append(r)
                if r["errors"] and name == "dovecot":
                    print(dovecot_log_tail(work / "dv"), flush=True)
        med = {n: {k: statistics.median(r[k] for r in rs if r[k] is not None)
                   for k in ("rss_per_conn_kb", "pss_per_conn_kb", "rss_marginal_kb",
                             "pss_marginal_kb")} for n, rs in runs.items()}
        t, d = med["tern"], med["dovecot"]
        for label, m in (("tern", t), ("dovecot", d)):
            print(f"median of {a.rounds}: {label} kB/conn RSS {m['rss_per_conn_kb']} (N) "
                  f"{m['rss_marginal_kb']} (2N-N), PSS {m['pss_per_conn_kb']} (N) "
                  f"{m['pss_marginal_kb']} (2N-N)", flush=True)
        if t["rss_per_conn_kb"] and t["pss_per_conn_kb"]:
            print(f"ratio dovecot/tern: RSS {d['rss_per_conn_kb'] / t['rss_per_conn_kb']:.1f}x, "
                  f"PSS {d['pss_per_conn_kb'] / t['pss_per_conn_kb']:.1f}x (target >= 20x)")
    finally:
        if dv is not None:
            dovecot_stop(dv)
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


# ---- idle -----------------------------------------------------------------------------------

async def idle_client(port, users, first, n, sources, tls, timeout, conn):
    """One client process's share: connections first..first+n-1 (users round-robin,
    source addresses round-robin) LOGIN + SELECT INBOX + IDLE; reports ("ready", count,
    errors) on conn, waits for "go", then records the arrival time of each connection's
    first "* n EXISTS" until all have one or `timeout`; reports ("done", [(user index,
    arrival time)], errors)."""
    ssl = benchlib.tls_client_context() if tls else None
    conns, errors = await open_many(port, users, n, False, True, timeout, parallel=32,
                                    ssl=ssl, sources=sources, first=first)
    arrivals, notify_err = [], {}

    async def wait_exists(c):
        try:
            while True:
                line = await asyncio.wait_for(c.r.readline(), timeout)
                if not line:
                    raise ConnectionError("closed")
                if re.match(rb"\* \d+ EXISTS", line):
                    arrivals.append((c.user, time.time()))
                    return
        except Exception as e:  # counted, never raised
            k = type(e).__name__ + ": " + str(e)[:80]
            notify_err[k] = notify_err.get(k, 0) + 1

    # the readers wait before "ready": making 16,000 tasks after "go" took this process
    # a second or more, counted as latency
    waiting = asyncio.gather(*(wait_exists(c) for c in conns))
    await asyncio.sleep(0)
    conn.send(("ready", len(conns), errors))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # "go"
    cpu0 = time.process_time()
    await waiting
    conn.send(("done", arrivals, notify_err, time.process_time() - cpu0))
    await loop.run_in_executor(None, conn.recv)  # "close"
    await close_all(conns)


def idle_client_process(args):
    asyncio.run(idle_client(*args))


def idle_run(srv, users, a):
    """a.conns IDLE connections over a.procs client processes; one message to every user
    over SMTP; per connection the time from the SMTP acknowledgement of its user's message
    to its EXISTS."""
    import multiprocessing as mp
    port = srv.ports["imaps" if a.tls else "imap"]
    sources = [f"127.0.{1 + k // 250}.{1 + k % 250}" for k in range(a.sources)] \
        if a.sources else None
    _, rss0, pss0 = memory(srv.pid)
    per = [a.conns // a.procs + (1 if k < a.conns % a.procs else 0) for k in range(a.procs)]
    ctx = mp.get_context("fork")
    pipes, procs, first = [], [], 0
    t0 = time.monotonic()
    for k in range(a.procs):
        here, there = ctx.Pipe()
        pr = ctx.Process(target=idle_client_process,
                         args=((port, users, first, per[k], sources, a.tls, a.timeout, there),))
        pr.start()
        pipes.append(here)
        procs.append(pr)
        first += per[k]
    idling, errors = 0, {}
    for pp in pipes:
        _, n, e = pp.recv()
        idling += n
        for k, v in e.items():
            errors[k] = errors.get(k, 0) + v
    t_open = time.monotonic() - t0
    time.sleep(2)
    nprocs, rss1, pss1 = memory(srv.pid)
    by = memory_by_process(srv.pid)
    load = benchlib.load_average()
    print(f"{idling} of {a.conns} idling after {t_open:.1f}s (open errors {errors}); "
          f"tern RSS {rss0} -> {rss1} kB, PSS {pss0} -> {pss1} kB; load {load}", flush=True)
    prof = None
    if a.perf:
        # every tern process, during the notifications only (software clock: VMs)
        prof = subprocess.Popen(["perf", "record", "-q", "-g", "-e", "cpu-clock", "-F", "999",
                                 "-p", ",".join(str(p) for p in by), "-o", a.perf],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    for pp in pipes:
        pp.send("go")
    # One message to every user (50 recipients per transaction); each user's message is
    # on disk when its transaction's 250 arrives: that is the start of its latency.
    acked = {}
    t_smtp = time.time()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=120) as smtp:
        for i in range(0, len(users), 50):
            smtp.sendmail("bench@example.org", users[i:i + 50],
                          b"From: <bench@example.org>\r\nSubject: idle\r\n\r\nhello\r\n")
            t = time.time()
            for u in users[i:i + 50]:
                acked[u] = t
    lat, notify_err, client_cpu = [], {}, 0.0
    for pp in pipes:
        _, arrivals, e, cpu = pp.recv()
        client_cpu += cpu
        lat += [t - acked[u] for u, t in arrivals]
        for k, v in e.items():
            notify_err[k] = notify_err.get(k, 0) + v
    if prof is not None:
        prof.send_signal(2)
        prof.wait(timeout=60)
        rep = subprocess.run(["perf", "report", "-i", a.perf, "--no-children",
                              "--sort", "comm,dso,symbol", "--stdio", "-g", "none"],
                             capture_output=True, text=True)
        top = [ln for ln in rep.stdout.splitlines() if ln.strip() and
               not ln.startswith("#")][:30]
        print("tern profile during the notifications (self time):\n" + "\n".join(top))
    alive = srv.is_running()
    for pp in pipes:
        pp.send("close")
    for pr in procs:
        pr.join(timeout=120)
    lat.sort()

    def q(f):
        return round(lat[min(len(lat) - 1, int(f * len(lat)))], 3) if lat else None
    return {"requested": a.conns, "idling": idling, "open_errors": errors,
            "open_s": round(t_open, 1), "notified": len(lat), "notify_errors": notify_err,
            "within_2s": sum(1 for x in lat if x <= 2.0),
            "latency_median_s": q(0.5), "latency_p99_s": q(0.99), "latency_max_s": q(1.0),
            "smtp_s": round(max(acked.values()) - t_smtp, 2),
            "client_cpu_s": round(client_cpu, 2),
            "rss_before_kb": rss0, "rss_idle_kb": rss1, "pss_before_kb": pss0,
            "pss_idle_kb": pss1, "processes": nprocs,
            "rss_by_process_kb": {p: v[0] for p, v in by.items()},
            "rss_per_conn_kb": round((rss1 - rss0) / max(1, idling), 2),
            "pss_per_conn_kb": round((pss1 - pss0) / max(1, idling), 2),
            "loadavg": load, "server_alive": alive}


def cmd_idle(a):
    need = a.conns + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < need:  # root: raise the hard limit; tern (started after) inherits it
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
        except (ValueError, OSError) as e:
            # no CAP_SYS_RESOURCE (a container): every process, each tern worker and
            # each client process, stays under the old hard limit
            print(f"RLIMIT_NOFILE hard limit {hard} < {need} and cannot be raised ({e}): "
                  f"each tern worker and each client process is limited to {hard} "
                  f"descriptors", flush=True)
            if a.conns / a.procs > hard - 200:
                sys.exit(f"{a.conns} connections over {a.procs} client processes: more "
                         f"than {hard - 200} each; raise --procs")
    raise_nofile()
    if a.sources and a.conns / a.sources > 25000:
        sys.exit(f"{a.conns} connections over {a.sources} source addresses: more than "
                 f"25,000 ephemeral ports per address (ip_local_port_range); raise --sources")
    users = [f"u{i:04d}@{DOMAIN}" for i in range(a.users)]
    srv = None
    try:
        cfg = {"max_connections": 0}
        if a.tls:
            cfg["imap.timeout"] = 3600
        srv = tern_start(cfg, users, workers=a.workers)
        r = idle_run(srv, users, a)
        r.update({"users": a.users, "workers": a.workers, "procs": a.procs,
                  "sources": a.sources, "tls": a.tls})
        errs = [ln for ln in srv.log_text().splitlines()
                if re.search(r"error|warning|fatal|panic", ln, re.I)]
        r["server_log_errors"] = len(errs)
        r["server_log_sample"] = errs[:5]
        print(r, flush=True)
        benchlib.report("imap-idle", r)
    finally:
        if srv is not None:
            srv.cleanup()


# ---- fetch ----------------------------------------------------------------------------------

def make_maildir(md, n, size):
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    line = "x" * 74 + "\n"
    now = int(time.time()) - n
    pid = os.getpid()
    for i in range(n):
        head = (f"From: <bench@example.org>\nTo: <bench@{DOMAIN}>\nSubject: fetch {i}\n"
                f"Message-ID: <fetch-{i}@example.org>\n\n")
        body = line * max(1, (size - len(head)) // len(line))
        flags = "S" if i % 3 else ""
        p = md / "cur" / f"{now + i}.M{i:08d}P{pid}.bench:2,{flags}"
        with open(p, "w") as f:
            f.write(head + body)
        os.utime(p, (now + i, now + i))


async def fetch_once(port, user, timeout):
    c = await Imap.open(port, timeout)
    await c.cmd(f'LOGIN {user} "{PASSWORD}"', timeout)
    t0 = time.monotonic()
    sel = await c.cmd("SELECT INBOX", timeout)
    t1 = time.monotonic()
    fetched = await c.cmd_bulk("UID FETCH 1:* (UID FLAGS RFC822.SIZE)", timeout)
    t2 = time.monotonic()
    c.close()
    exists = [int(m.group(1)) for ln in sel if (m := re.match(rb"\* (\d+) EXISTS", ln))]
    return {"select_s": t1 - t0, "fetch_s": t2 - t1, "total_s": t2 - t0,
            "exists": exists[0] if exists else None, "fetched": fetched}


def cmd_fetch(a):
    user = f"bench@{DOMAIN}"
    work = Path(tempfile.mkdtemp(prefix="imap-fetch-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    srv = dv = None
    try:
        print(f"writing {a.messages} messages of ~{a.size} B ...", flush=True)
        template = work / "template" / "Maildir"
        make_maildir(template, a.messages, a.size)
        srv = tern_start({}, [user])
        run_user = srv.run_user or "root"
        uid, gid = pwd.getpwnam(run_user).pw_uid, pwd.getpwnam(run_user).pw_gid
        tmd = srv.maildir(user)
        if tmd.exists():
            shutil.rmtree(tmd)
        tmd.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template, tmd)
        chown_tree(srv.data_dir / "mail", uid, gid)
        dhome = work / "dv" / "home" / user
        dhome.mkdir(parents=True)
        shutil.copytree(template, dhome / "Maildir")
        chown_tree(work / "dv" / "home", uid, gid)
        dv_port = free_port()
        dv = dovecot_start(work / "dv", dv_port, uid, gid, [user])
        subprocess.run(["sync"], check=False)
        servers = {"tern": srv.ports["imap"], "dovecot": dv_port}
        res = {n: {"cold": None, "warm": []} for n in servers}
        for name, port in servers.items():
            prof = None
            if a.perf and name == "tern":
                # software clock: works in VMs without hardware counters
                prof = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999",
                                         "-p", str(srv.pid), "-o", str(work / "perf.data")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            r = asyncio.run(fetch_once(port, user, a.timeout))
            if prof is not None:
                prof.send_signal(2)
                prof.wait(timeout=60)
                rep = subprocess.run(["perf", "report", "-i", str(work / "perf.data"),
                                      "--no-children", "--sort", "dso,symbol", "--stdio"],
                                     capture_output=True, text=True)
                top = [ln for ln in rep.stdout.splitlines() if ln.strip() and
                       not ln.startswith("#")][:25]
                print("tern cold SELECT+FETCH profile (self time):\n" + "\n".join(top))
            res[name]["cold"] = r
            print(f"cold {name:8s} exists {r['exists']} fetched {r['fetched']} "
                  f"select {r['select_s']:.3f}s fetch {r['fetch_s']:.3f}s "
                  f"total {r['total_s']:.3f}s", flush=True)
        for run in range(a.runs):
            for name, port in servers.items():
                r = asyncio.run(fetch_once(port, user, a.timeout))
                res[name]["warm"].append(r)
                print(f"warm {run + 1} {name:8s} fetched {r['fetched']} select "
                      f"{r['select_s']:.3f}s fetch {r['fetch_s']:.3f}s total "
                      f"{r['total_s']:.3f}s", flush=True)
        med = {n: statistics.median(x["total_s"] for x in v["warm"]) for n, v in res.items()}
        cold = {n: v["cold"]["total_s"] for n, v in res.items()}
        print(f"\nSELECT + UID FETCH 1:* (UID FLAGS RFC822.SIZE), {a.messages} messages: "
              f"warm median tern {med['tern']:.3f}s dovecot {med['dovecot']:.3f}s "
              f"(dovecot/tern {med['dovecot'] / med['tern']:.2f}x); cold tern "
              f"{cold['tern']:.3f}s dovecot {cold['dovecot']:.3f}s "
              f"({cold['dovecot'] / cold['tern']:.2f}x)")
        benchlib.report("imap-fetch", {
            "messages": a.messages, "size": a.size, "runs": a.runs,
            "tern_warm_s": [round(x["total_s"], 4) for x in res["tern"]["warm"]],
            "dovecot_warm_s": [round(x["total_s"], 4) for x in res["dovecot"]["warm"]],
            "tern_cold_s": round(cold["tern"], 4), "dovecot_cold_s": round(cold["dovecot"], 4),
            "tern_fetched": res["tern"]["cold"]["fetched"],
            "dovecot_fetched": res["dovecot"]["cold"]["fetched"],
        })
    finally:
        if dv is not None:
            dovecot_stop(dv)
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


# ---- sort / thread ---------------------------------------------------------------------------

SORT_CMDS = ["SORT (DATE) UTF-8 ALL", "SORT (SUBJECT) UTF-8 ALL", "SORT (FROM) UTF-8 ALL",
             "SORT (REVERSE ARRIVAL) UTF-8 ALL", "SORT (DISPLAYFROM) UTF-8 ALL",
             "THREAD REFERENCES UTF-8 ALL", "THREAD ORDEREDSUBJECT UTF-8 ALL",
             "THREAD REFS UTF-8 ALL"]


def make_sort_maildir(md, n, seed=1):
    """n messages of list-like mail: topics with replies (Re:, [list] tags, References),
    500 senders with display names, dates over a year in several zones."""
    import random
    rnd = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    now = int(time.time()) - n
    pid = os.getpid()
    topics = max(1, n // 8)
    last_in_topic = {}
    zones = ["+0000", "-0500", "+0100", "+0530", "-0800"]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    for i in range(n):
        t = rnd.randrange(topics)
        refs = last_in_topic.get(t, [])
        subj = f"topic number {t} about things"
        if refs:
            subj = rnd.choice(["Re: ", "RE: ", "Re: [list] ", "Fwd: "]) + subj
        elif rnd.random() < 0.3:
            subj = "[list] " + subj
        who = rnd.randrange(500)
        hdr = [f"From: Sender {who:03d} <user{who}@example{who % 7}.org>",
               f"To: <bench@{DOMAIN}>", f"Subject: {subj}",
               f"Date: {rnd.randrange(1, 29)} {rnd.choice(months)} 2025 "
               f"{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d} "
               f"{rnd.choice(zones)}",
               f"Message-ID: <m{i}@example.org>"]
        if refs:
            hdr.append("In-Reply-To: " + refs[-1])
            hdr.append("References: " + " ".join(refs[-10:]))
        last_in_topic[t] = refs + [f"<m{i}@example.org>"]
        text = "\n".join(hdr) + "\n\n" + ("body line\n" * rnd.randrange(2, 40))
        p = md / "cur" / f"{now + i}.M{i:08d}P{pid}.bench:2,S"
        with open(p, "w") as f:
            f.write(text)
        os.utime(p, (now + i, now + i))


async def commands_once(port, user, cmds, timeout):
    """LOGIN, SELECT INBOX, then each command timed; {cmd: seconds}, lines per command."""
    c = await Imap.open(port, timeout)
    await c.cmd(f'LOGIN {user} "{PASSWORD}"', timeout)
    await c.cmd("SELECT INBOX", timeout)
    out, lines = {}, {}
    for cmd in cmds:
        t0 = time.monotonic()
        # cmd_bulk finds the tagged line after an untagged one; NOOP may have none
        lines[cmd] = await (c.cmd(cmd, timeout) if cmd == "NOOP" else c.cmd_bulk(cmd, timeout))
        out[cmd] = time.monotonic() - t0
    await c.cmd("LOGOUT", timeout)
    c.close()
    return out, lines


def command_cpu(port, pid, user, cmd, timeout):
    """(wall seconds of cmd, server CPU seconds of a session doing only cmd, less the CPU
    of a session doing NOOP): CPU is what a loaded machine does not distort."""
    def session_cpu(cmds):
        c0 = cpu_seconds(pid)
        r, _ = asyncio.run(commands_once(port, user, cmds, timeout))
        time.sleep(0.3)  # let Dovecot's master reap the imap process (cutime)
        return r, cpu_seconds(pid) - c0
    _, base = session_cpu(["NOOP"])
    r, used = session_cpu([cmd])
    return r[cmd], max(0.0, used - base)


def two_servers(a, template, user, dovecot_zlib=False):
    """tern and a private Dovecot, each with its own copy of the template Maildir."""
    srv = tern_start({}, [user])
    run_user = srv.run_user or "root"
    uid, gid = pwd.getpwnam(run_user).pw_uid, pwd.getpwnam(run_user).pw_gid
    tmd = srv.maildir(user)
    if tmd.exists():
        shutil.rmtree(tmd)
    tmd.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, tmd)
    chown_tree(srv.data_dir / "mail", uid, gid)
    work = template.parent.parent
    dhome = work / "dv" / "home" / user
    dhome.mkdir(parents=True)
    shutil.copytree(template, dhome / "Maildir")
    chown_tree(work / "dv" / "home", uid, gid)
    dv_port = free_port()
    dv = dovecot_start(work / "dv", dv_port, uid, gid, [user], zlib=dovecot_zlib)
    subprocess.run(["sync"], check=False)
    return srv, dv, dv_port


def commands_bench(a, label, cmds, make):
    """Each of cmds on a whole mailbox of a.messages written by make(md, n), tern and
    Dovecot: the first after SELECT (cold) and the warm median of a.runs, wall and
    server CPU."""
    user = f"bench@{DOMAIN}"
    work = Path(tempfile.mkdtemp(prefix=f"imap-{label}-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    srv = dv = None
    try:
        print(f"writing {a.messages} messages ...", flush=True)
        template = work / "template" / "Maildir"
        make(template, a.messages)
        srv, dv, dv_port = two_servers(a, template, user)
        servers = {"tern": srv.ports["imap"], "dovecot": dv_port}
        # SELECT once first so the index build is not what the first SORT measures
        for port in servers.values():
            asyncio.run(commands_once(port, user, ["NOOP"], a.timeout))
        res = {n: {"cold": None, "warm": []} for n in servers}
        for name, port in servers.items():
            res[name]["cold"], lines = asyncio.run(commands_once(port, user, cmds,
                                                                 a.timeout))
            print(f"cold {name:8s} " + ", ".join(f"{k.split(' UTF-8')[0]} {v:.3f}s"
                                                   for k, v in res[name]["cold"].items()),
                  flush=True)
        pids = {"tern": srv.pid, "dovecot": dv.pid}
        cpu = {n: {c: [] for c in cmds} for n in servers}
        for run in range(a.runs):
            for name, port in servers.items():
                r = {}
                for cmd in cmds:
                    r[cmd], used = command_cpu(port, pids[name], user, cmd, a.timeout)
                    cpu[name][cmd].append(used)
                res[name]["warm"].append(r)
        load = os.getloadavg()[0]
        print(f"\n{a.messages} messages, warm median of {a.runs} (cold = first after SELECT); "
              f"load average {load:.1f} on {os.cpu_count()} cores:")
        summary = {}
        for cmd in cmds:
            t = statistics.median(r[cmd] for r in res["tern"]["warm"])
            d = statistics.median(r[cmd] for r in res["dovecot"]["warm"])
            tcpu = statistics.median(cpu["tern"][cmd])
            dcpu = statistics.median(cpu["dovecot"][cmd])
            tc, dc = res["tern"]["cold"][cmd], res["dovecot"]["cold"][cmd]
            summary[cmd] = {"tern_warm_s": round(t, 4), "dovecot_warm_s": round(d, 4),
                            "tern_cpu_s": round(tcpu, 3), "dovecot_cpu_s": round(dcpu, 3),
                            "tern_cold_s": round(tc, 4), "dovecot_cold_s": round(dc, 4)}
            print(f"  {cmd:36s} wall tern {t:.3f}s dovecot {d:.3f}s; server CPU tern "
                  f"{tcpu:.3f}s dovecot {dcpu:.3f}s; cold wall tern {tc:.3f}s dovecot {dc:.3f}s",
                  flush=True)
        benchlib.report(f"imap-{label}", {"messages": a.messages, "runs": a.runs,
                                         "loadavg": load, "results": summary})
    finally:
        if dv is not None:
            dovecot_stop(dv)
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def cmd_sort(a):
    commands_bench(a, "sort", SORT_CMDS, make_sort_maildir)


SEARCH_WORDS = ("the of and to in is that for it with as was on be by at this from or have "
                "an they which one you were all we there can been has more if will would "
                "about meeting report budget server mail quarter release draft notes").split()
SEARCH_CMDS = ['SEARCH BODY "zebra crossing"', 'SEARCH TEXT "zebra crossing"',
               'SEARCH BODY "quarter release"', 'SEARCH OR BODY budget BODY zebra']


def make_search_maildir(md, n, seed=1, size=4000):
    """n messages of about size bytes of plain text (words, 72-column lines); one in four
    quoted-printable; "zebra crossing" in none, "zebra" alone in one in a hundred."""
    import random
    rnd = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    now = int(time.time()) - n
    pid = os.getpid()
    for i in range(n):
        lines, line = [], ""
        while sum(map(len, lines)) < size:
            w = rnd.choice(SEARCH_WORDS)
            if len(line) + len(w) + 1 > 72:
                lines.append(line + "\n")
                line = ""
            line += (" " if line else "") + w
        if i % 100 == 0:
            lines.append("a zebra was seen\n")
        qp = i % 4 == 0
        hdr = (f"From: Sender {i % 50} <s{i % 50}@example.org>\nTo: <bench@{DOMAIN}>\n"
               f"Subject: search {i}\nMessage-ID: <search-{i}@example.org>\n"
               "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
               f"Content-Transfer-Encoding: {'quoted-printable' if qp else '7bit'}\n\n")
        text = "".join(lines)
        if qp:
            text = text.replace("the ", "th=65 ")
        p = md / "cur" / f"{now + i}.M{i:08d}P{pid}.bench:2,S"
        with open(p, "w") as f:
            f.write(hdr + text)
        os.utime(p, (now + i, now + i))


def cmd_search(a):
    commands_bench(a, "search", SEARCH_CMDS, make_search_maildir)


# ---- compress ---------------------------------------------------------------------------------

def fetch_wire(port, user, compress, timeout):
    """LOGIN, [COMPRESS DEFLATE], SELECT, FETCH 1:* (BODY.PEEK[]): bytes on the wire of the
    FETCH reply, its inflated size and seconds (blocking socket, zlib in the client)."""
    import zlib
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    state = {"z": None, "buf": b"", "wire": 0}

    def send(line):
        data = line.encode() + b"\r\n"
        if state["z"]:
            data = state["z"][0].compress(data) + state["z"][0].flush(zlib.Z_SYNC_FLUSH)
        s.sendall(data)

    def until(tag):
        """Read until the tagged line; returns plain bytes read."""
        needle = b"\r\n" + tag + b" "
        out = bytearray(state["buf"])
        state["buf"] = b""
        scanned = 0
        while True:
            # look only at what arrived since the last look (a 100 MB reply)
            i = out.find(needle, max(0, scanned - len(needle)))
            if i < 0 and out.startswith(tag + b" "):  # the tagged line came first
                i = -2
            scanned = len(out)
            if i != -1 and out.endswith(b"\r\n") and out.find(b"\r\n", i + 2) == len(out) - 2:
                return bytes(out)
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            state["wire"] += len(chunk)
            out += state["z"][1].decompress(chunk) if state["z"] else chunk

    s.recv(1000)  # greeting
    send(f'a1 LOGIN {user} "{PASSWORD}"')
    until(b"a1")
    if compress:
        send("a2 COMPRESS DEFLATE")
        got = until(b"a2")
        assert b"a2 OK" in got, got
        state["z"] = (zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15))
    send("a3 SELECT INBOX")
    until(b"a3")
    wire0 = state["wire"]
    t0 = time.monotonic()
    send("a4 FETCH 1:* (BODY.PEEK[])")
    plain = until(b"a4")
    dt = time.monotonic() - t0
    s.close()
    return {"wire_bytes": state["wire"] - wire0, "plain_bytes": len(plain), "seconds": dt}


def cmd_compress(a):
    user = f"bench@{DOMAIN}"
    work = Path(tempfile.mkdtemp(prefix="imap-compress-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    srv = dv = None
    try:
        print(f"writing {a.messages} messages ...", flush=True)
        template = work / "template" / "Maildir"
        make_sort_maildir(template, a.messages)
        srv, dv, dv_port = two_servers(a, template, user, dovecot_zlib=True)
        servers = {"tern": srv.ports["imap"], "dovecot": dv_port}
        for port in servers.values():  # index build, not measured
            asyncio.run(commands_once(port, user, ["NOOP"], a.timeout))
        res = {}
        for name, port in servers.items():
            for compress in (False, True):
                runs = [fetch_wire(port, user, compress, a.timeout) for _ in range(a.runs)]
                r = {"wire_bytes": runs[0]["wire_bytes"], "plain_bytes": runs[0]["plain_bytes"],
                     "seconds": round(statistics.median(x["seconds"] for x in runs), 3)}
                res[f"{name}{'+deflate' if compress else ''}"] = r
                print(f"{name:8s} {'COMPRESS' if compress else 'plain   '} wire "
                      f"{r['wire_bytes']:>12,} B (reply {r['plain_bytes']:,} B) "
                      f"{r['seconds']:.3f}s", flush=True)
        benchlib.report("imap-compress", {"messages": a.messages, "runs": a.runs, "results": res})
    finally:
        if dv is not None:
            dovecot_stop(dv)
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


# ---- mixed ----------------------------------------------------------------------------------

MIXED_CMDS = 7  # IMAP commands per loop (see mixed_client)


def mixed_client(port, user, loops, seed, deadline, timeout):
    """One client (its own user): LOGIN, then `loops` times SELECT INBOX; FETCH
    BODY.PEEK[HEADER] of 10 random messages (one command); FETCH BODY.PEEK[] of one;
    STORE +FLAGS (\\Seen) on 3; APPEND a 10 KB message; STORE +FLAGS (\\Deleted) on one;
    EXPUNGE. Runs in a thread or a process (module-level, picklable arguments). Stops
    early at `deadline` (time.time()). Returns counts and its own start/end times."""
    import imaplib
    import random
    rnd = random.Random(seed)
    msg = benchlib.make_message(10240, seed, rcpt=user)
    out = {"user": user, "loops": 0, "cmds": 0, "error": None, "t0": None, "t1": None}
    try:
        c = imaplib.IMAP4("127.0.0.1", port, timeout=timeout)
        c.login(user, PASSWORD)
        out["t0"] = time.time()

        def ok(r):
            if r[0] != "OK":
                raise RuntimeError(repr(r)[:200])
            out["cmds"] += 1
            return r

        for _ in range(loops):
            if time.time() > deadline:
                out["error"] = "deadline"
                break
            n = int(ok(c.select("INBOX"))[1][0])
            if n < 10:
                raise RuntimeError(f"only {n} messages")
            hdr = ",".join(str(x) for x in rnd.sample(range(1, n + 1), 10))
            ok(c.fetch(hdr, "(BODY.PEEK[HEADER])"))
            ok(c.fetch(str(rnd.randint(1, n)), "(BODY.PEEK[])"))
            seen = ",".join(str(x) for x in rnd.sample(range(1, n + 1), 3))
            ok(c.store(seen, "+FLAGS", "(\\Seen)"))
            ok(c.append("INBOX", None, None, msg))
            ok(c.store(str(rnd.randint(1, n)), "+FLAGS", "(\\Deleted)"))
            ok(c.expunge())
            out["loops"] += 1
        out["t1"] = time.time()
        c.logout()
    except Exception as e:  # counted and reported, never raised
        out["error"] = type(e).__name__ + ": " + str(e)[:150]
        out["t1"] = time.time()
    return out


def cpu_seconds(root_pid):
    """CPU seconds (user + system) used by root_pid and its descendants, counting exited
    children that were reaped (cutime/cstime): Dovecot's imap processes end at LOGOUT."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in descendants(root_pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            total += int(v[11]) + int(v[12]) + int(v[13]) + int(v[14])
        except (OSError, IndexError, ValueError):
            pass
    return total / tck


def client_cpu():
    """CPU seconds of this process (threads) and its reaped children (client processes)."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def mixed_run(port, server_pid, users, loops, seed, timeout, procs):
    """All clients at once (threads, or processes with procs=True); ops/s over the span
    from the first client's start (after LOGIN) to the last one's end; CPU used by the
    server and by the client side during the run."""
    import concurrent.futures as cf
    ex_cls = cf.ProcessPoolExecutor if procs else cf.ThreadPoolExecutor
    deadline = time.time() + timeout
    s_cpu0, c_cpu0 = cpu_seconds(server_pid), client_cpu()
    with ex_cls(max_workers=len(users)) as ex:
        futs = [ex.submit(mixed_client, port, u, loops, seed + i, deadline, 30)
                for i, u in enumerate(users)]
        res = [f.result() for f in futs]
    time.sleep(1)  # let Dovecot reap its imap processes (their CPU lands in cutime)
    s_cpu, c_cpu = cpu_seconds(server_pid) - s_cpu0, client_cpu() - c_cpu0
    t0 = min(r["t0"] for r in res if r["t0"]) if any(r["t0"] for r in res) else 0
    t1 = max(r["t1"] for r in res if r["t1"]) if any(r["t1"] for r in res) else 0
    cmds = sum(r["cmds"] for r in res)
    done = sum(r["loops"] for r in res)
    errors = {}
    for r in res:
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    span = t1 - t0
    return {"seconds": round(span, 3), "cmds": cmds, "loops": done,
            "ops_per_s": round(cmds / span, 1) if span > 0 else 0.0,
            "loops_per_s": round(done / span, 2) if span > 0 else 0.0,
            "server_cpu_s": round(s_cpu, 2), "client_cpu_s": round(c_cpu, 2),
            "server_cpu_ms_per_loop": round(1000 * s_cpu / done, 3) if done else None,
            "errors": errors}


def cmd_mixed(a):
    users = [f"m{i:03d}@{DOMAIN}" for i in range(a.clients)]
    work = Path(tempfile.mkdtemp(prefix="imap-mixed-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    srv = dv = None
    load = open("/proc/loadavg").read().split()[:3]
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime: {up}", flush=True)
    try:
        template = work / "template" / "Maildir"
        make_maildir(template, a.messages, a.size)
        srv = tern_start({}, users)
        run_user = srv.run_user or "root"
        uid, gid = pwd.getpwnam(run_user).pw_uid, pwd.getpwnam(run_user).pw_gid
        for u in users:
            tmd = srv.maildir(u)
            if tmd.exists():
                shutil.rmtree(tmd)
            tmd.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(template, tmd)
            dhome = work / "dv" / "home" / u
            dhome.mkdir(parents=True)
            shutil.copytree(template, dhome / "Maildir")
        chown_tree(srv.data_dir / "mail", uid, gid)
        chown_tree(work / "dv" / "home", uid, gid)
        dv_port = free_port()
        dv = dovecot_start(work / "dv", dv_port, uid, gid, users)
        subprocess.run(["sync"], check=False)
        servers = [("tern", srv.ports["imap"], srv.pid), ("dovecot", dv_port, dv.pid)]
        if a.dovecot_first:
            servers.reverse()
        res = {}
        for name, port, pid in servers:
            prof = None
            if a.perf and name == "tern":
                prof = subprocess.Popen(["perf", "record", "-q", "-g", "-e", "cpu-clock",
                                         "-F", "999", "-p", str(pid), "-o",
                                         str(work / "perf.data")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            r = mixed_run(port, pid, users, a.loops, a.seed, a.timeout, a.procs)
            if prof is not None:
                prof.send_signal(2)
                prof.wait(timeout=60)
                rep = subprocess.run(["perf", "report", "-i", str(work / "perf.data"),
                                      "--no-children", "--sort", "dso,symbol", "--stdio",
                                      "-g", "none"],
                                     capture_output=True, text=True)
                top = [ln for ln in rep.stdout.splitlines() if ln.strip() and
                       not ln.startswith("#")][:30]
                print("tern profile during the mixed load (self time):\n" + "\n".join(top))
            res[name] = r
            print(f"{name:8s} {a.clients} clients x {a.loops} loops: {r['cmds']} commands "
                  f"({r['loops']} loops) in {r['seconds']}s = {r['ops_per_s']} ops/s "
                  f"({r['loops_per_s']} loops/s); CPU server {r['server_cpu_s']}s = "
                  f"{r['server_cpu_ms_per_loop']} ms/loop, client {r['client_cpu_s']}s; "
                  f"errors {r['errors']}", flush=True)
        t, d = res["tern"], res["dovecot"]
        ratio = t["ops_per_s"] / d["ops_per_s"] if d["ops_per_s"] else float("nan")
        cpu_ratio = (d["server_cpu_ms_per_loop"] / t["server_cpu_ms_per_loop"]
                     if t["server_cpu_ms_per_loop"] and d["server_cpu_ms_per_loop"]
                     else float("nan"))
        print(f"ratio tern/dovecot = {ratio:.2f}x ops/s (target >= 1.5x); server CPU per "
              f"loop dovecot/tern = {cpu_ratio:.2f}x", flush=True)
        errs = [ln for ln in srv.log_text().splitlines()
                if re.search(r"error|fatal|panic", ln, re.I)]
        if errs:
            print(f"tern log: {len(errs)} error lines, first: {errs[:3]}")
        benchlib.report("imap-mixed", {
            "clients": a.clients, "loops": a.loops, "messages": a.messages, "size": a.size,
            "procs": a.procs, "loadavg": load, "uptime": up,
            "tern": t, "dovecot": d, "ratio": round(ratio, 3),
            "cpu_ratio": round(cpu_ratio, 3),
            "tern_log_errors": len(errs)})
    finally:
        if dv is not None:
            dovecot_stop(dv)
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("mem")
    m.add_argument("--conns", type=int, default=1000)
    m.add_argument("--users", type=int, default=100)
    m.add_argument("--select", action="store_true")
    m.add_argument("--no-login", action="store_true",
                   help="connections that only read the greeting (pre-login cost)")
    m.add_argument("--timeout", type=float, default=120)
    m.add_argument("--tls", action="store_true",
                   help="implicit TLS (tern imaps, Dovecot imaps with tern's certificate)")
    m.add_argument("--workers", type=int, default=None,
                   help="tern worker_processes (default: one per core)")
    m.add_argument("--rounds", type=int, default=1,
                   help="measurements per server, alternating which goes first")
    m.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="an extra tern.conf setting (repeatable)")
    i = sub.add_parser("idle")
    i.add_argument("--conns", type=int, default=10000)
    i.add_argument("--users", type=int, default=100)
    i.add_argument("--timeout", type=float, default=600)
    i.add_argument("--procs", type=int, default=1, help="client processes")
    i.add_argument("--sources", type=int, default=0,
                   help="source addresses 127.0.x.y to spread over (0: the kernel's choice)")
    i.add_argument("--workers", type=int, default=None,
                   help="tern worker_processes (default: one per core)")
    i.add_argument("--tls", action="store_true", help="implicit TLS (imaps)")
    i.add_argument("--perf", metavar="FILE",
                   help="perf record every tern process during the notifications into FILE "
                        "and print the top of its report")
    f = sub.add_parser("fetch")
    f.add_argument("--messages", type=int, default=100000)
    f.add_argument("--size", type=int, default=2000)
    f.add_argument("--runs", type=int, default=3)
    f.add_argument("--perf", action="store_true",
                   help="profile tern's cold SELECT+FETCH with perf (cpu-clock)")
    f.add_argument("--timeout", type=float, default=600)
    so = sub.add_parser("sort")
    so.add_argument("--messages", type=int, default=100000)
    so.add_argument("--runs", type=int, default=3)
    so.add_argument("--timeout", type=float, default=900)
    se = sub.add_parser("search")
    se.add_argument("--messages", type=int, default=20000)
    se.add_argument("--runs", type=int, default=3)
    se.add_argument("--timeout", type=float, default=900)
    z = sub.add_parser("compress")
    z.add_argument("--messages", type=int, default=100000)
    z.add_argument("--runs", type=int, default=3)
    z.add_argument("--timeout", type=float, default=900)
    x = sub.add_parser("mixed")
    x.add_argument("--clients", type=int, default=20, help="concurrent clients, one user each")
    x.add_argument("--loops", type=int, default=50, help="loops per client (7 commands each)")
    x.add_argument("--messages", type=int, default=500, help="messages in each INBOX")
    x.add_argument("--size", type=int, default=4000)
    x.add_argument("--seed", type=int, default=1)
    x.add_argument("--procs", action="store_true",
                   help="one process per client instead of threads (no GIL limit)")
    x.add_argument("--dovecot-first", action="store_true")
    x.add_argument("--perf", action="store_true",
                   help="profile tern during its run with perf (cpu-clock)")
    x.add_argument("--timeout", type=float, default=300, help="bound per server, seconds")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("imap_bench: run as root (Dovecot switches to the mail user)")
    if not Path("/usr/lib/dovecot/imap").exists() and a.what != "idle":
        sys.exit("imap_bench: dovecot-imapd is missing (apt-get install dovecot-imapd)")
    raise_nofile()
    {"mem": cmd_mem, "idle": cmd_idle, "fetch": cmd_fetch, "mixed": cmd_mixed,
     "sort": cmd_sort, "search": cmd_search, "compress": cmd_compress}[a.what](a)


if __name__ == "__main__":
    main()
