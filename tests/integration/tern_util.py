"""
tern_util.py - helpers shared by the integration tests (import: `from tern_util import ...`;
conftest.py puts this folder on sys.path).

  Client(host, port, tls=False)      line-oriented TCP/TLS client; .send(line) .expect(regex)
                                     .starttls() .read_until(regex) .close()
  converse(client, steps)            replay a seed session: steps = [(send, expected_regex), ...]
                                     send None = just read; expected None = don't wait
  b64(s) / unb64(s)                  base64 of str/bytes -> str, and back -> str
  sasl_plain(user, pw), sasl_cram_md5(user, pw, challenge_b64), apop_digest(greeting, pw)
  openssl_s_client(port, steps, starttls=None, ...) -> full output text of a real
                                     `openssl s_client` session driven line by line
  send_mail(tern, from, to, body, ...) -> (code, text) of the DATA reply, via smtplib
  wait_for(predicate, timeout=10, what=...)  bounded poll on a condition
  tls_context()                      client TLS context that accepts the test certificate
  fd_targets(pid)                    what each open descriptor of a process (and of its
                                     children: workers, queue, auth) points to
  maildir_messages(path) -> sorted list of message files in new/ and cur/

Every read has a timeout (a bound, never something a test asserts on).
"""

import base64
import hashlib
import hmac
import os
import re
import select
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from email.utils import formatdate, make_msgid

IO_TIMEOUT = 15.0


def _to_bytes(s):
    return s if isinstance(s, bytes) else s.encode()


def b64(s):
    """Base64 of a str or bytes, as str."""
    return base64.b64encode(_to_bytes(s)).decode()


def unb64(s):
    """Decode base64 (str or bytes) to str."""
    return base64.b64decode(_to_bytes(s)).decode(errors="replace")


def sasl_plain(user, password, authzid=""):
    """RFC 4616 PLAIN initial response, base64."""
    return b64(f"{authzid}\0{user}\0{password}")


def sasl_cram_md5(user, password, challenge_b64):
    """RFC 2195 CRAM-MD5 response to a base64 challenge, base64."""
    challenge = base64.b64decode(_to_bytes(challenge_b64.strip()))
    digest = hmac.new(_to_bytes(password), challenge, hashlib.md5).hexdigest()
    return b64(f"{user} {digest}")


def apop_digest(greeting, password):
    """RFC 1939 APOP digest: MD5 of the <timestamp> in the greeting + password."""
    m = re.search(r"<[^>]*>", greeting)
    if not m:
        raise AssertionError(f"no APOP timestamp in greeting {greeting!r}")
    return hashlib.md5(_to_bytes(m.group(0)) + _to_bytes(password)).hexdigest()


class Client:
    """A line-oriented client over TCP (optionally implicit TLS), for seed replays."""

    def __init__(self, host, port, tls=False, timeout=IO_TIMEOUT):
        self.host = host
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.transcript = []
        if tls:
            self._wrap()

    def _wrap(self):
        self.sock = tls_context().wrap_socket(self.sock, server_hostname="mail.example.test")

    def starttls(self):
        """Upgrade after the server said go ahead; any buffered input is discarded."""
        self.buf = b""
        self._wrap()

    def send(self, line, crlf=True):
        data = _to_bytes(line)
        if crlf and not data.endswith(b"\r\n"):
            data += b"\r\n"
        self.transcript.append(b"C: " + data)
        self.sock.sendall(data)

    def send_raw(self, data):
        self.transcript.append(b"C: " + _to_bytes(data))
        self.sock.sendall(_to_bytes(data))

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server")
        self.buf += chunk

    def read_line(self, timeout=None):
        """One line including CRLF (bytes -> str)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\n")
        line += b"\n"
        self.transcript.append(b"S: " + line)
        return line.decode(errors="replace")

    def read_bytes(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        self.transcript.append(b"S: " + data)
        return data

    def read_until(self, regex, timeout=None):
        """Read whole lines until the text read so far matches regex (re.M); return it."""
        pat = re.compile(regex, re.M)
        deadline = time.monotonic() + (timeout or self.timeout)
        got = ""
        while True:
            try:
                got += self.read_line(timeout=max(0.001, deadline - time.monotonic()))
            except (socket.timeout, ConnectionError) as e:
                raise AssertionError(f"waiting for /{regex}/: {e!r}; got so far:\n{got}\n"
                                     f"--- transcript ---\n{self.dump()}") from None
            if pat.search(got):
                return got

    expect = read_until

    def is_closed(self, timeout=None):
        """True once the server has closed the connection (reads until EOF)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self._fill(deadline)
        except socket.timeout:
            return False
        except (ConnectionError, OSError):
            return True

    def dump(self):
        return b"".join(self.transcript).decode(errors="replace")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def converse(client, steps, timeout=None):
    """Replay a session: for each (send, expected_regex) send the line (None: send nothing),
    then read lines until the reply matches expected_regex (re.M; it should match the LAST
    line of the reply, e.g. r'^250 ' for a multi-line EHLO). Returns the replies.
    client: a Client, or a socket (wrapped in a Client)."""
    if isinstance(client, socket.socket):
        c = Client.__new__(Client)
        c.sock, c.buf, c.transcript, c.timeout = client, b"", [], IO_TIMEOUT
        client = c
    replies = []
    for step in steps:
        send, expected = step if isinstance(step, (tuple, list)) else (step, None)
        if send is not None:
            client.send(send)
        replies.append(client.read_until(expected, timeout) if expected else "")
    return replies


def openssl_s_client(port, steps, starttls=None, host="127.0.0.1", args=(), timeout=30,
                     exit_timeout=10):
    """Drive a real `openssl s_client -connect host:port -crlf -ign_eof` session.

    steps: list of (line, expected_regex) or plain lines; after sending a line we wait
    until the output so far (from that point) matches expected_regex. The first step may
    be (None, regex) to wait for the greeting. After the last step stdin is closed and we
    wait up to exit_timeout for s_client to exit (the server closes after QUIT/LOGOUT),
    then kill it; the output is returned either way.
    starttls: 'smtp' | 'pop3' | 'imap' for -starttls. Returns the whole output (stdout +
    stderr merged) as text; raises AssertionError if an expectation times out."""
    cmd = ["openssl", "s_client", "-connect", f"{host}:{port}", "-crlf", "-ign_eof",
           "-servername", "mail.example.test"]
    if starttls:
        cmd += ["-starttls", starttls]
    cmd += list(args)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = bytearray()
    lock = threading.Condition()

    def reader():
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            with lock:
                if not chunk:
                    lock.notify_all()
                    return
                out.extend(chunk)
                lock.notify_all()

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def wait_for_output(regex, since):
        pat = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        with lock:
            while not pat.search(out[since:].decode(errors="replace")):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not t.is_alive() and proc.poll() is not None):
                    text = out.decode(errors="replace")
                    raise AssertionError(f"openssl s_client: no /{regex}/ in output:\n{text}")
                lock.wait(min(remaining, 0.2))

    try:
        since = 0
        for step in steps:
            line, expected = step if isinstance(step, (tuple, list)) else (step, None)
            if line is not None:
                # A step with no line (the greeting) looks from where the previous one did:
                # the reader may already hold what it waits for.
                with lock:
                    since = len(out)
                proc.stdin.write(_to_bytes(line).rstrip(b"\r\n") + b"\n")
                proc.stdin.flush()
            if expected:
                wait_for_output(expected, since)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            proc.wait(timeout=exit_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        t.join(timeout=5)
    return out.decode(errors="replace")


def make_message(mail_from, rcpt_to, body, subject="test"):
    """A minimal RFC 5322 message (CRLF line ends) unless body already has headers."""
    if re.match(r"^[A-Za-z-]+:", body):
        text = body
    else:
        text = (f"From: <{mail_from}>\r\nTo: <{rcpt_to}>\r\nSubject: {subject}\r\n"
                f"Date: {formatdate()}\r\nMessage-ID: {make_msgid(domain='example.test')}\r\n"
                f"\r\n{body}")
    text = re.sub(r"(?<!\r)\n", "\r\n", text)
    if not text.endswith("\r\n"):
        text += "\r\n"
    return text


def send_mail(tern, mail_from, rcpt_to, body, subject="test", port=None, helo="client.test"):
    """Send one message over SMTP (port 25 role) with smtplib. rcpt_to: str or list.
    Returns (code, text) of the reply to DATA, e.g. (250, '2.0.0 Ok: queued as ...')."""
    rcpts = [rcpt_to] if isinstance(rcpt_to, str) else list(rcpt_to)
    msg = make_message(mail_from, rcpts[0], body, subject)
    with smtplib.SMTP(tern.host, port or tern.ports["smtp"], local_hostname=helo,
                      timeout=IO_TIMEOUT) as s:
        s.ehlo()
        code, text = s.mail(mail_from)
        if code != 250:
            raise AssertionError(f"MAIL FROM refused: {code} {text!r}")
        for r in rcpts:
            code, text = s.rcpt(r)
            if code not in (250, 251):
                raise AssertionError(f"RCPT TO:<{r}> refused: {code} {text!r}")
        code, text = s.data(msg.encode())
        return code, text.decode(errors="replace")


def wait_for(predicate, timeout=10, what="condition"):
    """Poll predicate() until truthy (returns its value) or raise after timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def tls_context():
    """A client TLS context that accepts the servers' self-signed test certificates."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fd_targets(pid, with_children=True):
    """readlink() of every open descriptor of process pid and (by default) its children,
    the master's workers, queue and auth processes ("socket:[123]", a path...);
    descriptors closed or processes gone while we look are left out."""
    targets = []
    for p in [pid] + (child_pids(pid) if with_children else []):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                targets.append(os.readlink(f"/proc/{p}/fd/{fd}"))
            except OSError:
                continue
    return targets


def maildir_messages(maildir):
    """Message files in new/ and cur/ of a Maildir path (sorted by name)."""
    files = []
    for sub in ("new", "cur"):
        d = os.path.join(str(maildir), sub)
        if os.path.isdir(d):
            files += [os.path.join(d, f) for f in os.listdir(d) if not f.startswith(".")]
    return sorted(files)


# --- other client addresses (added by the abuse helper) ------------------------------------

OTHER_IP = "127.0.0.2"  # a second loopback address: "another client" for per-address rules


def can_bind_source(ip=OTHER_IP):
    """Can this machine open connections from ip (a loopback alias)?"""
    try:
        s = socket.socket()
        s.bind((ip, 0))
        s.close()
        return True
    except OSError:
        return False


class SourceAddressMixin:
    """For imaplib/poplib classes: connect from self._source when set (before __init__)."""

    _source = None

    def _create_socket(self, timeout):
        src = (self._source, 0) if self._source else None
        return socket.create_connection((self.host, self.port), timeout, source_address=src)


def child_pids(pid):
    """Pids of the direct children of pid (the master's processes), from /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return sorted(kids)


class SmtpLoad:
    """SMTP deliveries to one recipient from `threads` clients until stop(): each message's
    Subject is a unique tag, recorded once the server answered 250 to its DATA. A session
    cut by a killed process is simply retried by its client. check_each_once() then proves
    that every acknowledged message is in the Maildir exactly once."""

    def __init__(self, srv, rcpt, prefix, threads=4, per_thread=2000):
        self.srv, self.rcpt, self.prefix = srv, rcpt, prefix
        self.acked, self.lock, self.stopping = [], threading.Lock(), threading.Event()
        self.failures = []  # what ended a session early (a killed process; none otherwise)
        self.threads = [threading.Thread(target=self._run, args=(k, per_thread))
                        for k in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, k, per_thread):
        for i in range(per_thread):
            if self.stopping.is_set():
                return
            tag = f"{self.prefix}-{k}-{i}"
            try:
                s = smtplib.SMTP(self.srv.host, self.srv.ports["smtp"], timeout=30)
                s.sendmail("a@example.org", [self.rcpt], f"Subject: {tag}\r\n\r\nbody\r\n")
                with self.lock:
                    self.acked.append(tag)
                s.quit()
            except (smtplib.SMTPException, OSError) as e:
                with self.lock:
                    self.failures.append(f"{tag}: {e!r}")
                continue  # a session in a killed process: the client retries

    def wait_acked(self, n, what):
        """Wait (bounded) until n messages in all were acknowledged."""
        wait_for(lambda: len(self.acked) >= n, timeout=120, what=what)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def check_each_once(self):
        """Every acknowledged message delivered, none twice."""
        seen = {}
        box = self.srv.maildir(self.rcpt)
        for sub in ("new", "cur"):
            for f in (box / sub).iterdir():
                m = re.search(rb"^Subject: (\S+)", f.read_bytes(), re.M)
                if m:
                    seen[m.group(1).decode()] = seen.get(m.group(1).decode(), 0) + 1
        with self.lock:
            lost = [t for t in self.acked if t not in seen]
            doubled = [t for t in self.acked if seen.get(t, 0) > 1]
        assert not lost, f"acknowledged but lost: {lost[:5]}"
        assert not doubled, f"acknowledged and doubled: {doubled[:5]}"
