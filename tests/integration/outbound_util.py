"""
outbound_util.py - helpers for the outbound (queue runner) integration tests:

  SmtpSink(behaviour=None)   a tiny threaded SMTP server on loopback that records what it
                             receives and can answer 4xx/5xx per recipient, drop or stall.
                             .port .messages (list of dicts: mail_from, rcpts, data bytes,
                             ehlo) .connections .close()
                             behaviour(cmd_line, state) -> None (default answer) or a reply
                             string, or "DROP" to close the connection.
  DnsServer(records)         a minimal authoritative DNS server (UDP+TCP) on loopback for
                             dns.resolver: records = {("name", "MX"): [(pref, "host")],
                             ("host", "A"): ["127.0.0.1"]}; unknown name -> NXDOMAIN unless
                             the name has some record (then NODATA).

Every socket has a timeout; servers run in daemon threads and stop on close().
"""

import socket
import socketserver
import struct
import threading


class _SinkHandler(socketserver.StreamRequestHandler):
    timeout = 30

    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        sink = self.server.sink
        sink.connections += 1
        state = {"mail_from": None, "rcpts": [], "ehlo": None, "n": sink.connections}
        self.reply("220 sink.test ESMTP ready")
        while True:
            try:
                line = self.rfile.readline(4096)
            except OSError:
                return
            if not line:
                return
            cmd = line.decode("latin-1").rstrip("\r\n")
            sink.commands.append(cmd)
            verb = cmd.split(" ", 1)[0].upper()
            custom = sink.behaviour(cmd, state) if sink.behaviour else None
            if custom == "DROP":
                return
            if custom is not None and verb != "DATA":
                self.reply(custom)
                if verb == "RCPT" and custom.startswith("2"):
                    state["rcpts"].append(cmd.split(":", 1)[1].strip().strip("<>"))
                continue
            if verb == "EHLO":
                state["ehlo"] = cmd[5:]
                self.reply("250-sink.test\r\n250-PIPELINING\r\n250-SIZE %d\r\n250-8BITMIME\r\n"
                           "250 ENHANCEDSTATUSCODES" % sink.size_limit)
            elif verb == "HELO":
                self.reply("250 sink.test")
            elif verb == "MAIL":
                state["mail_from"] = cmd.split(":", 1)[1].split(">")[0].strip().lstrip("<")
                state["rcpts"] = []
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                state["rcpts"].append(cmd.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if custom is not None and not custom.startswith("3"):
                    self.reply(custom)
                    continue
                if not state["rcpts"]:
                    self.reply("554 5.5.1 Error: no valid recipients")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = []
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    data.append(l[1:] if l.startswith(b".") else l)
                msg = {"mail_from": state["mail_from"], "rcpts": list(state["rcpts"]),
                       "data": b"".join(data), "ehlo": state["ehlo"], "mail_cmd": None}
                for c in reversed(sink.commands):
                    if c.upper().startswith("MAIL FROM"):
                        msg["mail_cmd"] = c
                        break
                end = sink.behaviour("END-OF-DATA", state) if sink.behaviour else None
                if end == "DROP":
                    return
                if end:
                    self.reply(end)
                else:
                    sink.messages.append(msg)
                    self.reply("250 2.0.0 Ok: queued as SINK%d" % len(sink.messages))
            elif verb == "RSET":
                state["rcpts"] = []
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            elif verb == "NOOP":
                self.reply("250 2.0.0 Ok")
            else:
                self.reply("502 5.5.2 Error: command not recognized")


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SmtpSink:
    def __init__(self, behaviour=None, size_limit=10240000):
        self.behaviour = behaviour
        self.size_limit = size_limit
        self.messages = []
        self.commands = []
        self.connections = 0
        self.server = _Server(("127.0.0.1", 0), _SinkHandler)
        self.server.sink = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- DNS ---------------------------------------------------------------------------------

TYPES = {"A": 1, "MX": 15, "AAAA": 28, "TXT": 16, "PTR": 12, "CNAME": 5, "SRV": 33}

# A record value that makes the server answer SERVFAIL for that name and type (mailauth
# tests: a DNS failure must give a temporary result).
SERVFAIL = object()


def _txt_rdata(text):
    """TXT RDATA: the text as character-strings of at most 255 octets (a list or tuple
    gives the strings one by one)."""
    if isinstance(text, (list, tuple)):
        return b"".join(bytes([len(p.encode()[:255])]) + p.encode()[:255] for p in text)
    raw = text.encode() if isinstance(text, str) else text
    out = b""
    for i in range(0, max(len(raw), 1), 255):
        chunk = raw[i:i + 255]
        out += bytes([len(chunk)]) + chunk
    return out


def _encode_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _decode_name(data, pos):
    labels = []
    while True:
        n = data[pos]
        if n == 0:
            return ".".join(labels), pos + 1
        if n & 0xC0:
            raise ValueError("compressed query name")
        labels.append(data[pos + 1:pos + 1 + n].decode("latin-1"))
        pos += 1 + n


class DnsServer:
    """Answers from a dict; enough for libunbound in forward mode."""

    def __init__(self, records, port=0):
        self.records = {(k[0].lower().rstrip("."), k[1]): v for k, v in records.items()}
        self.queries = []
        # the UDP port the kernel picks may be busy on TCP (an outgoing connection of a
        # parallel test or benchmark uses it as its local port): pick again (bounded)
        for attempt in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", port))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
                if attempt == 49:
                    raise
        self.tcp.listen(16)
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.running = True
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self.threads:
            t.start()

    def answer(self, query):
        qid, flags, qd = struct.unpack("!HHH", query[:6])
        name, pos = _decode_name(query, 12)
        qtype, qclass = struct.unpack("!HH", query[pos:pos + 4])
        question = query[12:pos + 4]
        lname = name.lower().rstrip(".")
        self.queries.append((lname, qtype))
        tname = {v: k for k, v in TYPES.items()}.get(qtype)
        rrs = self.records.get((lname, tname), [])
        known = any(k[0] == lname for k in self.records)
        rcode = 0 if (rrs or known) else 3
        if any(rr is SERVFAIL for rr in rrs):
            rrs, rcode = [], 2
        answers = b""
        cname = self.records.get((lname, "CNAME")) if not rrs and tname != "CNAME" else None
        if cname:
            # one level of CNAME, with the target's records of the type asked for
            target = cname[0]
            answers += b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, len(_encode_name(target))) + \
                _encode_name(target)
            extra = self.records.get((target.lower().rstrip("."), tname), [])
            n_extra = 0
            for rr in extra:
                if rr is SERVFAIL:
                    continue
                rdata = self._rdata(tname, rr)
                if rdata is None:
                    continue
                answers += _encode_name(target) + struct.pack("!HHIH", qtype, 1, 60,
                                                               len(rdata)) + rdata
                n_extra += 1
            rflags = 0x8400 | (flags & 0x0100) | 0x0080
            head = struct.pack("!HHHHHH", qid, rflags, 1, 1 + n_extra, 0, 0)
            return head + question + answers
        for rr in rrs:
            if tname == "A":
                rdata = socket.inet_aton(rr)
            elif tname == "AAAA":
                rdata = socket.inet_pton(socket.AF_INET6, rr)
            elif tname == "MX":
                rdata = struct.pack("!H", rr[0]) + _encode_name(rr[1])
            elif tname == "TXT":
                rdata = _txt_rdata(rr)
            elif tname == "SRV":
                rdata = struct.pack("!HHH", rr[0], rr[1], rr[2]) + _encode_name(rr[3])
            elif tname == "PTR":
                rdata = _encode_name(rr)
            else:
                continue
            answers += b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(rdata)) + rdata
        # QR, AA, RD copied, RA
        rflags = 0x8400 | (flags & 0x0100) | 0x0080 | rcode
        head = struct.pack("!HHHHHH", qid, rflags, 1, len(rrs), 0, 0)
        return head + question + answers

    @staticmethod
    def _rdata(tname, rr):
        if tname == "A":
            return socket.inet_aton(rr)
        if tname == "AAAA":
            return socket.inet_pton(socket.AF_INET6, rr)
        if tname == "MX":
            return struct.pack("!H", rr[0]) + _encode_name(rr[1])
        if tname == "TXT":
            return _txt_rdata(rr)
        if tname in ("PTR", "CNAME"):
            return _encode_name(rr)
        return None

    def _serve_udp(self):
        while self.running:
            try:
                data, addr = self.udp.recvfrom(4096)
            except OSError:
                continue
            try:
                self.udp.sendto(self.answer(data), addr)
            except (ValueError, struct.error, OSError):
                pass

    def _serve_tcp(self):
        while self.running:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                n = struct.unpack("!H", conn.recv(2))[0]
                q = b""
                while len(q) < n:
                    chunk = conn.recv(n - len(q))
                    if not chunk:
                        break
                    q += chunk
                a = self.answer(q)
                conn.sendall(struct.pack("!H", len(a)) + a)
            except (OSError, ValueError, struct.error):
                pass
            finally:
                conn.close()

    def close(self):
        self.running = False
        self.udp.close()
        self.tcp.close()
