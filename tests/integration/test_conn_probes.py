"""
test_conn_probes.py - connections that end as soon as they begin must give back
everything they took: the socket descriptor and the admission counts (max_connections,
max_connections_per_ip).

TLS scanners and monitors probe a port with a handshake and an immediate close
(`openssl s_time -new`). libevent delivers the end of such a connection in the same
deferred event callback as the end of its handshake (BEV_EVENT_CONNECTED|EOF), and the
server once handled only the CONNECTED half: 3,003 probes left 3,030 descriptors open
until max_connections refused everyone (issue 9). Each test here probes every port
many times more than the admission limit in the ways real probes close (close_notify
then close, a bare close, a reset; after the implicit-TLS handshake, after STARTTLS, or
right after accept; `openssl s_time` makes thousands per port), then waits until the
server holds no more descriptors than before and can again admit max_connections
clients at once. A last test checks that replies still queued when a close_notify
arrives are sent (TLS half-close) instead of hanging the connection forever.
"""

import re
import shutil
import socket
import ssl
import struct
import subprocess

import pytest

from conftest import is_sanitized
from tern_util import (IO_TIMEOUT, Client, converse, fd_targets, send_mail, tls_context,
                       wait_for)

# Admission limits small enough that leaked connections would exhaust them within the
# probes below, and that the final check can open them all at once.
LIMIT = 40
TLS_PORTS = ("submissions", "pop3s", "imaps")
# (port, the steps up to the reply that says go ahead)
STARTTLS = (("smtp", [("EHLO probe.test", r"^250 "), ("STARTTLS", r"^220 ")]),
            ("submission", [("EHLO probe.test", r"^250 "), ("STARTTLS", r"^220 ")]),
            ("pop3", [("STLS", r"^\+OK")]),
            ("imap", [("a STARTTLS", r"^a OK")]))
GREETING = {"smtp": r"^220 ", "submission": r"^220 ", "submissions": r"^220 ",
            "pop3": r"^\+OK", "pop3s": r"^\+OK", "imap": r"^\* OK", "imaps": r"^\* OK"}
# Probes per port and way of closing: enough to exhaust LIMIT many times over.
ROUNDS = 50 if is_sanitized() else 120


@pytest.fixture(scope="module")
def server(tern_module_factory):
    return tern_module_factory({"max_connections": LIMIT, "max_connections_per_ip": LIMIT})


@pytest.fixture
def probed(server):
    """The module's server once it holds no client connection, with its descriptor
    count then as the baseline (the first test's warm-up sessions put whatever the
    server opens once and keeps, such as OpenSSL's random source, in it)."""
    for port in GREETING:
        with Client(server.host, server.ports[port], tls=port in TLS_PORTS) as c:
            c.read_until(GREETING[port])
    wait_for(lambda: tcp_sockets(server) == (0, 0), what="the warm-up connections to end")
    server.baseline_fds = fd_count(server)
    return server


def fd_count(srv):
    """The server's descriptors, less the per-user index connections its pool keeps
    open on purpose (docs/ARCHITECTURE.md §3) once a test has logged in."""
    return sum(not re.search(r"/index\.db(-wal|-shm)?$", t) for t in fd_targets(srv.pid))


def tcp_sockets(srv):
    """(client sockets the server's processes hold, connections still waiting in the
    accept queues of its listeners), from /proc/net/tcp{,6}."""
    inodes = {m.group(1) for t in fd_targets(srv.pid)
              if (m := re.fullmatch(r"socket:\[(\d+)\]", t))}
    held = queued = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[9] not in inodes:
                continue
            if f[3] != "0A":  # 0A: LISTEN
                held += 1
            else:  # a listener's rx_queue is its accept queue's length
                queued += int(f[4].split(":")[1], 16)
    return held, queued


def server_connections(srv):
    """The connection count every worker admits against (`tern status`)."""
    out = srv.cli("status").stdout
    m = re.search(r"^total: connections (\d+)", out, re.M)
    assert m, out
    return int(m.group(1))


def reset_on_close(sock):
    """SO_LINGER 0: close() sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class MemoryTLS:
    """A TLS client over a connected socket through memory BIOs, so that close_notify
    can be sent without waiting for the server's (what ssl.SSLSocket.unwrap() does)."""

    def __init__(self, sock, ctx):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="mail.example.test")
        self._run(self.tls.do_handshake)

    def _run(self, op, *args):
        while True:
            try:
                result = op(*args)
                self.sock.sendall(self.outgoing.read())
                return result
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()

    def send(self, data):
        self._run(self.tls.write, data)

    def recv(self):
        """Decrypted bytes; b'' once the server has closed."""
        try:
            return self._run(self.tls.read, 65536)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def send_close_notify(self):
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify is out; we do not wait for the server's
        self.sock.sendall(self.outgoing.read())


def handshake_and_close(sock, how, ctx):
    """Handshake, then close `how`: 'notify' (close_notify, FIN), 'fin' (FIN only) or
    'reset' (RST)."""
    tls = MemoryTLS(sock, ctx)
    if how == "notify":
        tls.send_close_notify()
    elif how == "reset":
        reset_on_close(sock)
    sock.close()


def connect(srv, port):
    return socket.create_connection((srv.host, srv.ports[port]), timeout=IO_TIMEOUT)


def assert_everything_released(srv):
    """Every probe accepted and ended, the descriptors and the connection count back
    where they were; then LIMIT clients can again be served at once."""
    def released():
        held, queued = tcp_sockets(srv)
        return (held == 0 and queued == 0 and fd_count(srv) <= srv.baseline_fds and
                server_connections(srv) == 0)
    try:
        wait_for(released, timeout=60, what="the server to release the probes")
    except AssertionError as e:
        held, queued = tcp_sockets(srv)
        raise AssertionError(f"{e}: {fd_count(srv)} descriptors (baseline {srv.baseline_fds}), "
                             f"{held} connections held, {queued} waiting to be accepted, "
                             f"{server_connections(srv)} counted") from None
    clients = []
    try:
        for i in range(LIMIT):
            port = list(GREETING)[i % len(GREETING)]
            c = Client(srv.host, srv.ports[port], tls=port in TLS_PORTS)
            clients.append(c)
            c.read_until(GREETING[port])
    finally:
        for c in clients:
            c.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_openssl_s_time_probes_release_everything(probed):
    # s_time probes for a second at a time: as many seconds as it takes (a loaded or
    # sanitized build makes fewer per second) until each port had more than LIMIT
    for port in TLS_PORTS:
        made = 0
        for _ in range(30):
            cp = subprocess.run(["openssl", "s_time", "-connect",
                                 f"{probed.host}:{probed.ports[port]}", "-new", "-time", "1"],
                                capture_output=True, text=True, timeout=60)
            m = re.search(r"(\d+) connections in", cp.stdout)
            assert m, f"openssl s_time on {port}:\n{cp.stdout}\n{cp.stderr}"
            made += int(m.group(1))
            if made > LIMIT:
                break
        assert made > LIMIT, f"only {made} probes were made on {port}"
    assert_everything_released(probed)


@pytest.mark.parametrize("how", ["notify", "fin", "reset"])
def test_implicit_tls_handshake_then_close(probed, how):
    ctx = tls_context()
    for port in TLS_PORTS:
        for _ in range(ROUNDS):
            handshake_and_close(connect(probed, port), how, ctx)
    assert_everything_released(probed)


@pytest.mark.parametrize("how", ["notify", "fin"])
def test_starttls_handshake_then_close(probed, how):
    ctx = tls_context()
    for port, steps in STARTTLS:
        for _ in range(ROUNDS // 2):
            c = Client(probed.host, probed.ports[port])
            c.read_until(GREETING[port])
            converse(c, steps)
            handshake_and_close(c.sock, how, ctx)
    assert_everything_released(probed)


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_plain_close_right_after_accept(probed, how):
    for port in GREETING:
        for _ in range(ROUNDS):
            s = connect(probed, port)
            if how == "reset":
                reset_on_close(s)
            s.close()
    assert_everything_released(probed)


def server_send_queue(srv, client_sock):
    """Bytes the server has written to client_sock's connection that the client has not
    read yet (tx_queue of the server's end in /proc/net/tcp)."""
    port = client_sock.getsockname()[1]
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        local_port, remote_port = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        if remote_port == port and local_port == srv.ports["imaps"]:
            return int(f[4].split(":")[0], 16)
    return 0


def test_replies_queued_at_close_notify_are_still_sent(probed):
    """TLS lets a client close its direction and read on (RFC 8446 §6.1). OpenSSL's
    bufferevent stops writing when the close_notify arrives; a reply then still queued
    (a FETCH far larger than the socket buffers) must still leave, then the server
    closes."""
    body = ("x" * 76 + "\r\n") * 20000
    assert send_mail(probed, "a@example.org", "alice@example.test", body)[0] == 250
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # a small window keeps the kernel from taking the whole reply off the server
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(IO_TIMEOUT)
    sock.connect((probed.host, probed.ports["imaps"]))
    tls = MemoryTLS(sock, tls_context())
    got = b""
    tls.send(b"a LOGIN alice@example.test alicepw\r\nb SELECT INBOX\r\n")
    while b"\r\nb OK" not in got:
        data = tls.recv()
        assert data, got
        got += data
    tls.send(b"c FETCH 1 BODY[]\r\n")
    wait_for(lambda: server_send_queue(probed, sock) > 0, what="the FETCH reply to queue up")
    tls.send_close_notify()
    while True:
        data = tls.recv()  # without the fix: hangs until IO_TIMEOUT
        if not data:
            break
        got += data
    sock.close()
    assert got.count(b"FETCH (BODY[] {") == 1 and b"\r\nc OK" in got, got[-300:]
    assert_everything_released(probed)
