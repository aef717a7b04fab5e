"""
clients.py - the stress tester's clients: real imaplib/poplib/smtplib sessions whose every
reply goes through the model (model.py).

  ImapConn           imaplib.IMAP4 that keeps the raw bytes of every server response in
                     order (a thin readline/read wrapper) and a transcript tail
  ImapClient         one IMAP session: LOGIN, a seeded random mix of commands, LOGOUT
  pop3_session()     one POP3 session: USER/PASS, STAT/LIST/UIDL, RETR/TOP/DELE/RSET, QUIT
  smtp_session()     one SMTP connection delivering 1-3 messages to local users
  worker()           one client: sessions of the three kinds until the deadline, then
                     (if it holds a selected IMAP session) the convergence snapshot

Every socket has a timeout (ctx.io_timeout): a reply that does not come is a "timeout"
violation (a hang), never a wait for ever.
"""

import imaplib
import poplib
import random
import select
import smtplib
import socket
import ssl
import struct
import threading
import time
import traceback
from collections import deque

from imapwire import WireError, format_set, parse_response
from model import (SESSION, TOKEN_ITEM, Cmd, ImapModel, Ledger, Pop3Model, Violations, now)
from msggen import message_for, token_for

imaplib.Commands.setdefault("IDLE", ("SELECTED",))

TRANSCRIPT_LINES = 30
KEYWORDS = ["$Forwarded", "$MDNSent", "$Junk", "$NotJunk", "$Label1", "Work", "Todo", "Urgent"]
SYSTEM = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft"]
GENERIC_ITEMS = [
    ("FLAGS", "FLAGS"), ("UID", "UID"), ("RFC822.SIZE", "RFC822.SIZE"),
    ("INTERNALDATE", "INTERNALDATE"), ("ENVELOPE", "ENVELOPE"),
    ("BODYSTRUCTURE", "BODYSTRUCTURE"), ("BODY", "BODY"),
    ("BODY.PEEK[HEADER]", "BODY[HEADER]"), ("BODY.PEEK[TEXT]", "BODY[TEXT]"),
    ("BODY.PEEK[]", "BODY[]"), ("BODY.PEEK[1]", "BODY[1]"),
    ("BODY.PEEK[TEXT]<0.64>", "BODY[TEXT]<0>"),
    ("BODY.PEEK[HEADER.FIELDS (X-STRESS-ID)]", TOKEN_ITEM),
]
SYNC_ITEMS = "(UID FLAGS BODY.PEEK[HEADER.FIELDS (X-STRESS-ID)])"


def abort_socket(sock):
    """Close with SO_LINGER 0: an RST, the way a client that crashes or loses its network
    leaves, so the server's read fails at once, possibly while a job of that session runs."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class SessionOver(Exception):
    """The connection is unusable (violation already recorded)."""


class ImapConn(imaplib.IMAP4):
    """imaplib.IMAP4 that records the raw bytes of every response it reads."""

    def __init__(self, host, port, timeout, ssl_context=None):
        self.transcript = deque(maxlen=TRANSCRIPT_LINES)
        self._pieces = None
        self.captured = []
        self._rbuf = bytearray()
        self.ssl_context = ssl_context       # implicit TLS (port 993 role) when set
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        sock = super()._create_socket(timeout)
        if self.ssl_context is None:
            return sock
        return self.ssl_context.wrap_socket(sock, server_hostname="mail.example.test")

    def open(self, host="", port=imaplib.IMAP4_PORT, timeout=None):
        super().open(host, port, timeout)
        self._rbuf = bytearray()

    def _note(self, who, data):
        text = data.decode("utf-8", "replace").rstrip("\r\n")
        if len(text) > 200:
            text = text[:200] + f"... ({len(data)} bytes)"
        self.transcript.append(f"{who}: {text}")

    def readline(self):
        while True:
            i = self._rbuf.find(b"\n")
            if i >= 0:
                line = bytes(self._rbuf[:i + 1])
                del self._rbuf[:i + 1]
                break
            if len(self._rbuf) > imaplib._MAXLINE:
                raise self.error("got more than %d bytes" % imaplib._MAXLINE)
            chunk = self.sock.recv(65536)
            if not chunk:
                line = bytes(self._rbuf)
                self._rbuf.clear()
                break
            self._rbuf += chunk
        if self._pieces is not None:
            self._pieces.append(line)
        self._note("S", line)
        return line

    def read(self, size):
        while len(self._rbuf) < size:
            chunk = self.sock.recv(max(65536, size - len(self._rbuf)))
            if not chunk:
                break
            self._rbuf += chunk
        data = bytes(self._rbuf[:size])
        del self._rbuf[:size]
        if self._pieces is not None:
            self._pieces.append(data)
        self.transcript.append(f"S: {{literal {len(data)} bytes}}")
        return data

    def send(self, data):
        self._note("C", data[:300])
        super().send(data)

    def _get_response(self):
        outer = self._pieces is None
        if outer:
            self._pieces = []
        try:
            return super()._get_response()
        finally:
            if outer:
                raw = b"".join(self._pieces)
                self._pieces = None
                if raw:
                    self.captured.append(raw)

    def take(self):
        out, self.captured = self.captured, []
        return out

    def has_buffered(self):
        pending = getattr(self.sock, "pending", None)      # TLS: decrypted, not read
        return bool(self._rbuf) or bool(pending and pending())

    def tail(self):
        return "\n".join(self.transcript)


class Ctx:
    """What every client shares: where the server is, users, limits, the deadline."""

    def __init__(self, args, users, run_id, deadline, barrier):
        self.host = args.host
        self.imap_port = args.imap_port
        self.pop3_port = args.pop3_port
        self.smtp_port = args.smtp_port
        self.users = users                 # [(address, password)]
        self.mailboxes = ["INBOX"] + [f"Box{i}" for i in range(1, args.mailboxes)]
        self.io_timeout = args.io_timeout
        self.seed = args.seed
        self.run_id = run_id
        self.deadline = deadline
        self.max_ops = args.max_ops
        self.barrier = barrier
        self.settle = args.settle
        self.min_msgs, self.max_msgs = args.min_messages, args.max_messages
        self.initial = args.initial
        self.self_copy = args.self_copy
        self.session_length = args.session_length
        self.delete_share = args.delete_share
        self.wrong_logins = not args.external         # our own server only
        self.imap_ops = set(args.imap_ops.split(",")) if args.imap_ops else None
        self.examine_share = 0.0 if self.imap_ops and "reselect" not in self.imap_ops \
            else 0.15
        self.mix = args.mix                 # {"imap": w, "pop3": w, "smtp": w}
        self.imaps_port = args.imaps_port
        self.pop3s_port = args.pop3s_port
        self.tls_share = args.tls if (args.imaps_port and args.pop3s_port) else 0.0
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE       # the test server's self-signed cert


def use_tls(ctx, rng):
    return ctx.tls_share > 0 and rng.random() < ctx.tls_share


# ------------------------------------------------------------------------------------
# IMAP
# ------------------------------------------------------------------------------------

class ImapClient:
    """One IMAP session with a model; every command goes through run()."""

    def __init__(self, ctx, cid, user, password, rng, v, ledger, tokens):
        self.ctx = ctx
        self.cid = cid
        self.user = user
        self.password = password
        self.rng = rng
        self.v = v
        self.ledger = ledger
        self.tokens = tokens                  # per-client counter for new tokens
        self.who = f"client {cid} ({user}, imap)"
        self.conn = None
        self.model = ImapModel(user, v, ledger, who=self.who)
        self.model.context = self.tail

    def tail(self):
        return self.conn.tail() if self.conn else ""

    def connect(self):
        tls = use_tls(self.ctx, self.rng)
        if tls:
            self.who += " tls"
            self.ledger.ops["session:imap over TLS"] += 1
        try:
            if tls:
                self.conn = ImapConn(self.ctx.host, self.ctx.imaps_port, self.ctx.io_timeout,
                                     self.ctx.tls)
            else:
                self.conn = ImapConn(self.ctx.host, self.ctx.imap_port, self.ctx.io_timeout)
        except (OSError, imaplib.IMAP4.error) as e:
            self.v.add("connect", f"{self.who}: IMAP connect: {e!r}")
            raise SessionOver() from None
        self.conn.take()
        r = self.rng.random()
        if r < 0.04:
            # leave while the password is being checked (a workpool job); a wrong one
            # takes the failure path (only on our own server: it would count as an attack)
            wrong = r < 0.02 and self.ctx.wrong_logins
            self.op("drop after LOGIN" + (" (wrong password)" if wrong else ""))
            try:
                self.conn.send(f"L1 LOGIN {self.user} {'wrong' if wrong else ''}"
                               f"{self.password}\r\n".encode())
            except OSError:
                pass
            self.close(abort=True)
            raise SessionOver()
        cmd = Cmd("LOGIN", line=f"LOGIN {self.user} ***")
        self.run(cmd, self.conn.login, self.user, self.password)
        if self.conn.state != "AUTH":
            raise SessionOver()

    def op(self, label):
        self.ledger.ops["imap:" + label] += 1

    def run(self, cmd, fn, *args, label=None):
        """Send one command through imaplib, feed every response to the model. Returns
        the tagged status ("OK"/"NO"/"BAD") or raises SessionOver."""
        self.op(label or (("UID " if cmd.uid else "") + cmd.name))
        conn = self.conn
        conn.untagged_responses.clear()
        conn.take()
        cmd.sent = now()
        failure = None
        try:
            fn(*args)
        except (TimeoutError, socket.timeout):
            failure = ("timeout", f"no reply within {self.ctx.io_timeout}s to {cmd.line!r}")
        except imaplib.IMAP4.abort as e:
            failure = ("disconnect", f"connection lost during {cmd.line!r}: {e}")
        except imaplib.IMAP4.error:
            pass                                   # BAD: the model reports it
        except OSError as e:
            failure = ("disconnect", f"socket error during {cmd.line!r}: {e!r}")
        responses = []
        for raw in conn.take():
            try:
                responses.append(parse_response(raw))
            except (WireError, ValueError, UnicodeError) as e:
                self.v.add("protocol", f"{self.who} unparsable response to {cmd.line!r}: "
                           f"{raw[:200]!r} ({e})", self.tail())
        tagged = self.model.apply(cmd, responses)
        if failure:
            bye = any(r.name == "BYE" for r in responses)
            if not bye:
                self.v.add(failure[0], f"{self.who} {failure[1]}", self.tail())
            self.close()
            raise SessionOver()
        if tagged is None and cmd.name == "LOGOUT" and any(r.name == "BYE" for r in responses):
            return "OK"                    # imaplib stops reading at the BYE
        if tagged is None:
            self.v.add("protocol", f"{self.who} no tagged reply to {cmd.line!r}", self.tail())
            self.close()
            raise SessionOver()
        return tagged.name

    def close(self, abort=False):
        if self.conn:
            if abort:
                abort_socket(self.conn.sock)
            try:
                self.conn.shutdown()
            except OSError:
                pass

    # --- helpers ----------------------------------------------------------------------
    def new_token(self, kind="a"):
        self.tokens[0] += 1
        return token_for(self.ctx.run_id, f"{kind}{self.cid}", self.tokens[0])

    def pick(self, max_n):
        """1..max_n messages of the view with known UIDs, as [(seq, uid)]."""
        known = self.model.known()
        if not known:
            return []
        k = self.rng.randint(1, min(max_n, len(known)))
        if self.rng.random() < 0.3:
            start = self.rng.randrange(len(known) - k + 1)
            return known[start:start + k]
        return sorted(self.rng.sample(known, k))

    def p_delete(self):
        if self.ctx.delete_share is not None:
            return self.ctx.delete_share
        n = self.model.count()
        if n < self.ctx.min_msgs:
            return 0.02
        return 0.5 if n > self.ctx.max_msgs else 0.12

    def pick_flags(self, p_del):
        pool = SYSTEM + KEYWORDS
        flags = self.rng.sample(pool, self.rng.randint(1, 3))
        if self.rng.random() < p_del:
            flags.append("\\Deleted")
        return flags

    def other_mailbox(self, allow_same):
        boxes = [b for b in self.ctx.mailboxes if allow_same or b != self.model.mailbox]
        return self.rng.choice(boxes) if boxes else None

    def target_cmd(self, name, chosen, use_uid, **kw):
        targets = [u for _, u in chosen] if use_uid else [s for s, _ in chosen]
        cmd = Cmd(name, uid=use_uid, targets=targets, **kw)
        cmd.target_uids = {s: u for s, u in chosen}
        return cmd, format_set(targets)

    # --- commands -----------------------------------------------------------------------
    def select(self, mailbox=None, readonly=None):
        mailbox = mailbox or (self.rng.choice(self.ctx.mailboxes) if self.rng.random() < 0.5
                              else "INBOX")
        if readonly is None:
            readonly = self.rng.random() < self.ctx.examine_share
        name = "EXAMINE" if readonly else "SELECT"
        self.run(Cmd(name, mailbox=mailbox, line=f"{name} {mailbox}"),
                 self.conn.select, mailbox, readonly)

    def sync(self):
        """Learn UID, flags and token of every message of the view (what a mail client
        does when EXISTS grows)."""
        seqs = self.model.unknown_seqs()
        if not seqs or self.model.state != "selected":
            return
        s = format_set(seqs)
        cmd = Cmd("FETCH", targets=seqs, items=["UID", "FLAGS", TOKEN_ITEM],
                  line=f"FETCH {s} {SYNC_ITEMS}")
        cmd.target_uids = {}
        self.run(cmd, self.conn.fetch, s, SYNC_ITEMS, label="FETCH (sync)")

    def do_fetch(self):
        chosen = self.pick(5)
        if not chosen:
            return
        use_uid = self.rng.random() < 0.4
        menu = list(GENERIC_ITEMS)
        if len(chosen) == 1:
            tok = self.model.tokens.get(chosen[0][1])
            if tok and message_for(tok).shape != "plain":
                menu += [("BODY.PEEK[2]", "BODY[2]"), ("BODY.PEEK[1.MIME]", "BODY[1.MIME]")]
        picked = self.rng.sample(menu, self.rng.randint(1, 4))
        if not self.model.readonly and self.rng.random() < 0.05:
            picked.append(("BODY[]", "BODY[]"))            # sets \Seen (RFC 3501 §6.4.5)
        req = "(" + " ".join(p for p, _ in picked) + ")"
        exp = [e for _, e in picked]
        if self.rng.random() < 0.1:
            # a macro stands alone, without parentheses (RFC 3501 §6.4.5)
            req, exp = "FAST", ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
        cmd, s = self.target_cmd("FETCH", chosen, use_uid, items=exp)
        cmd.line = f"{'UID ' if use_uid else ''}FETCH {s} {req}"
        if use_uid:
            self.run(cmd, self.conn.uid, "FETCH", s, req)
        else:
            self.run(cmd, self.conn.fetch, s, req)

    def do_store(self, chosen=None, flags=None, mode=None, silent=None, use_uid=None):
        chosen = chosen or self.pick(3)
        if not chosen:
            return
        use_uid = self.rng.random() < 0.4 if use_uid is None else use_uid
        mode = self.rng.choice(["+", "+", "-", ""]) if mode is None else mode
        silent = self.rng.random() < 0.3 if silent is None else silent
        flags = self.pick_flags(self.p_delete()) if flags is None else flags
        item = f"{mode}FLAGS{'.SILENT' if silent else ''}"
        fl = "(" + " ".join(flags) + ")"
        if "\\Deleted" in flags and mode != "-":
            for _, u in chosen:
                self.ledger.intents.add((self.model.mbox, u))
        cmd, s = self.target_cmd("STORE", chosen, use_uid, flags=flags, silent=silent)
        cmd.line = f"{'UID ' if use_uid else ''}STORE {s} {item} {fl}"
        if use_uid:
            self.run(cmd, self.conn.uid, "STORE", s, item, fl)
        else:
            self.run(cmd, self.conn.store, s, item, fl)

    def do_append(self):
        if self.model.state == "selected" and self.rng.random() < 0.7:
            mailbox = self.model.mailbox
        else:
            mailbox = self.rng.choice(self.ctx.mailboxes)
        token = self.new_token()
        flags = [] if self.rng.random() < 0.5 else self.pick_flags(0.03)
        self.ledger.attempts[(self.user, token)] += 1
        date = None
        if self.rng.random() < 0.2:
            date = imaplib.Time2Internaldate(1796000000 + self.rng.randrange(10 ** 6))
        fl = "(" + " ".join(flags) + ")" if flags else None
        cmd = Cmd("APPEND", mailbox=mailbox, token=token, flags=flags,
                  line=f"APPEND {mailbox} {fl or ''} {date or ''} {{...}} ({token})")
        self.run(cmd, self.conn.append, mailbox, fl, date, message_for(token).raw)

    def do_copy(self, move=False):
        chosen = self.pick(3)
        if not chosen:
            return
        dest = self.other_mailbox(allow_same=not move and self.ctx.self_copy)
        if dest is None:
            return
        use_uid = self.rng.random() < 0.4
        for _, u in chosen:
            tok = self.model.tokens.get(u)
            if tok:
                self.ledger.attempts[(self.user, tok)] += 1
            else:
                self.ledger.attempts[(self.user, None)] += 1      # a copy of "something"
            if move:
                self.ledger.intents.add((self.model.mbox, u))
        name = "MOVE" if move else "COPY"
        cmd, s = self.target_cmd(name, chosen, use_uid, mailbox=dest)
        cmd.line = f"{'UID ' if use_uid else ''}{name} {s} {dest}"
        if use_uid:
            self.run(cmd, self.conn.uid, name, s, dest)
        elif move:
            self.run(cmd, self.conn._simple_command, "MOVE", s, dest)
        else:
            self.run(cmd, self.conn.copy, s, dest)

    def do_expunge(self):
        self.run(Cmd("EXPUNGE", line="EXPUNGE"), self.conn.expunge)

    def do_uid_expunge(self):
        chosen = self.pick(2)
        if not chosen:
            return
        self.do_store(chosen, ["\\Deleted"], "+", True, True)
        if self.model.state != "selected":
            return
        s = format_set([u for _, u in chosen])
        self.run(Cmd("EXPUNGE", uid=True, line=f"UID EXPUNGE {s}"), self.conn.uid, "EXPUNGE", s)

    def do_search(self):
        use_uid = self.rng.random() < 0.5
        known = self.model.known()
        r = self.rng.random()
        expect = []
        if r < 0.3:
            crit = ["ALL"]                        # every message of the view expected
            expect = [u for _, u in known]
        elif r < 0.5 and known:
            seq, uid = self.rng.choice(known)
            tok = self.model.tokens.get(uid)
            if tok:
                crit = ["HEADER", "X-Stress-Id", f'"{tok}"']
                expect = [uid]
            else:
                crit = ["UNSEEN"]
        else:
            crit = self.rng.choice([["UNSEEN"], ["DELETED"], ["FLAGGED"], ["SEEN", "UNDELETED"],
                                    ["KEYWORD", self.rng.choice(KEYWORDS)],
                                    ["SUBJECT", "stress"], ["LARGER", "2000"],
                                    ["OR", "ANSWERED", "DRAFT"]])
        cmd = Cmd("SEARCH", uid=use_uid, expect_uids=expect,
                  line=f"{'UID ' if use_uid else ''}SEARCH {' '.join(crit)}")
        if use_uid:
            self.run(cmd, self.conn.uid, "SEARCH", *crit)
        else:
            self.run(cmd, self.conn.search, None, *crit)

    def do_status(self):
        mailbox = self.rng.choice(self.ctx.mailboxes)
        items = "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"
        self.run(Cmd("STATUS", mailbox=mailbox, line=f"STATUS {mailbox} {items}"),
                 self.conn.status, mailbox, items)

    def do_noop(self):
        self.run(Cmd("NOOP", line="NOOP"), self.conn.noop)

    def do_idle(self, seconds=None):
        seconds = self.rng.uniform(0.05, 0.8) if seconds is None else seconds
        self.run(Cmd("IDLE", line=f"IDLE ({seconds:.2f}s) DONE"), self._idle, seconds)

    def _idle(self, seconds):
        """IDLE (RFC 2177): wait for '+', read what comes for a while, DONE, tagged."""
        c = self.conn
        tag = c._command("IDLE")
        while c._get_response() is not None:
            if c.tagged_commands.get(tag):
                return c._command_complete("IDLE", tag)
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not c.has_buffered():
                ready, _, _ = select.select([c.sock], [], [], left)
                if not ready:
                    break
            c._get_response()
        c.send(b"DONE\r\n")
        return c._command_complete("IDLE", tag)

    def do_close(self):
        self.run(Cmd("CLOSE", line="CLOSE"), self.conn.close)

    def do_unselect(self):
        self.run(Cmd("UNSELECT", line="UNSELECT"), self.conn.unselect)

    def logout(self):
        self.run(Cmd("LOGOUT", line="LOGOUT"), self.conn.logout)

    def drop(self):
        """Leave abruptly right after sending a command (the connection-lifetime case):
        the server must cope with a client gone while its job runs."""
        c = self.conn
        kind = self.rng.choice(["fetch", "fetch", "append", "append-half", "expunge", "idle",
                                "store", "select", "none"])
        self.op(f"drop after {kind}")
        try:
            tag = c._new_tag().decode()
            if kind == "fetch" and self.model.state == "selected" and self.model.count():
                c.send(f"{tag} FETCH 1:* (BODY.PEEK[] FLAGS)\r\n".encode())
            elif kind == "append":
                token = self.new_token()
                self.ledger.attempts[(self.user, token)] += 1
                raw = message_for(token).raw
                box = self.rng.choice(self.ctx.mailboxes)
                c.send(f"{tag} APPEND {box} {{{len(raw)}+}}\r\n".encode() + raw + b"\r\n")
            elif kind == "append-half":
                raw = message_for(self.new_token()).raw
                c.send(f"{tag} APPEND INBOX {{{len(raw)}+}}\r\n".encode() + raw[:len(raw) // 2])
            elif kind == "store" and self.model.known() and not self.model.readonly:
                seq, uid = self.rng.choice(self.model.known())
                c.send(f"{tag} STORE {seq} +FLAGS (\\Seen $Label1)\r\n".encode())
            elif kind == "expunge" and self.model.state == "selected" and not self.model.readonly:
                c.send(f"{tag} EXPUNGE\r\n".encode())
            elif kind == "select":
                c.send(f"{tag} SELECT {self.rng.choice(self.ctx.mailboxes)}\r\n".encode())
            elif kind == "idle" and self.model.state == "selected":
                c.send(f"{tag} IDLE\r\n".encode())
        except OSError:
            pass
        self.close(abort=self.rng.random() < 0.7)

    # --- the session ----------------------------------------------------------------------
    def weights(self):
        m = self.model
        n = m.count()
        multi = len(self.ctx.mailboxes) > 1
        if m.readonly:
            return self.only({"fetch": 30, "search": 8, "noop": 4, "idle": 3, "status": 3,
                              "copy": 3, "reselect": 6, "close": 2, "unselect": 1, "append": 4})
        w = {"fetch": 25, "store": 18, "append": 10, "search": 6, "noop": 4, "idle": 2,
             "expunge": 4, "uid_expunge": 3, "copy": 4, "move": 3 if multi else 0,
             "status": 3, "reselect": 3, "close": 1.5, "unselect": 0.5}
        if n > self.ctx.max_msgs:
            w.update(append=1, copy=0.5, expunge=10, uid_expunge=6)
        elif n < self.ctx.min_msgs:
            w.update(append=25, expunge=1, uid_expunge=1, move=1 if multi else 0)
        return self.only(w)

    def only(self, w):
        """--imap-ops: keep only the listed commands (to narrow a bug down)."""
        if not self.ctx.imap_ops:
            return w
        kept = {k: x for k, x in w.items() if k in self.ctx.imap_ops}
        return kept if any(kept.values()) else {"noop": 1}

    def step(self):
        if self.model.state != "selected":
            self.select()
            self.sync()
            return
        w = self.weights()
        name = self.rng.choices(list(w), weights=list(w.values()))[0]
        if name == "reselect":
            self.select()
        elif name == "copy":
            self.do_copy()
        elif name == "move":
            self.do_copy(move=True)
        else:
            getattr(self, "do_" + name)()
        self.sync()

    def session(self, stopping):
        """LOGIN, random commands, then LOGOUT (or an abrupt drop). Returns True if the
        session is still open and selected when the run stopped (kept for the snapshot)."""
        self.connect()
        for _ in range(self.rng.randint(*self.ctx.session_length)):
            if stopping():
                if self.model.state != "selected":
                    self.select("INBOX", readonly=False)
                self.sync()
                return True
            self.step()
        if self.rng.random() < 0.15:
            self.drop()
        else:
            self.logout()
            self.close()
        return False

    def snapshot(self):
        """After every client stopped: NOOP, learn the whole view, record its flags."""
        if self.ctx.settle:
            time.sleep(self.ctx.settle)
        self.do_noop()
        self.sync()
        n = self.model.count()
        if n:
            seqs = list(range(1, n + 1))
            cmd = Cmd("FETCH", targets=seqs, items=["UID", "FLAGS"], line="FETCH 1:* (UID FLAGS)")
            cmd.target_uids = {}
            self.run(cmd, self.conn.fetch, "1:*", "(UID FLAGS)", label="FETCH (final)")
        if len(self.model.known()) == n:
            self.ledger.snapshots.append((self.model.mbox, self.who, self.model.snapshot(),
                                          self.tail()))
        self.logout()
        self.close()


# ------------------------------------------------------------------------------------
# POP3
# ------------------------------------------------------------------------------------

def _pop_ok(resp):
    return resp.startswith(b"+OK")


def pop3_session(ctx, cid, user, password, rng, v, ledger):
    """One POP3 session with a random mix of commands (RFC 1939)."""
    who = f"client {cid} ({user}, pop3)"
    model = Pop3Model(user, v, ledger, who=who)
    trail = deque(maxlen=TRANSCRIPT_LINES)
    model.context = lambda: "\n".join(trail)

    def op(name):
        ledger.ops["pop3:" + name] += 1
        trail.append(f"C: {name}")

    try:
        if use_tls(ctx, rng):
            who += " tls"
            ledger.ops["session:pop3 over TLS"] += 1
            p = poplib.POP3_SSL(ctx.host, ctx.pop3s_port, timeout=ctx.io_timeout,
                                context=ctx.tls)
        else:
            p = poplib.POP3(ctx.host, ctx.pop3_port, timeout=ctx.io_timeout)
    except OSError as e:
        v.add("connect", f"{who}: POP3 connect: {e!r}")
        return
    try:
        op("USER")
        p.user(user)
        op("PASS")
        t = now()
        if rng.random() < 0.04:
            op("(drop after PASS)")             # leave while PASS is being checked
            p._putcmd(f"PASS {password}")
            abort_socket(p.sock)
            return
        try:
            p.pass_(password)
        except poplib.error_proto as e:
            if b"[IN-USE]" in e.args[0]:
                ledger.ops["pop3:PASS -ERR [IN-USE] (allowed)"] += 1
                p.quit()
                return
            raise
        model.on_login(t)
        op("LIST")
        resp, lines, _ = p.list()
        sizes = {int(a): int(b) for a, b in (ln.split()[:2] for ln in lines)}
        model.on_list(sizes)
        op("STAT")
        model.on_stat(*p.stat())
        op("UIDL")
        resp, lines, _ = p.uidl()
        model.on_uidl({int(a): b.decode() for a, b in (ln.split()[:2] for ln in lines)})
        nums = sorted(sizes)
        many = len(nums) > ctx.max_msgs
        for _ in range(rng.randint(2, 15)):
            live = [n for n in nums if n not in model.deleted]
            choice = rng.choices(["retr", "top", "dele", "rset", "noop", "stat", "list", "uidl1",
                                  "drop"],
                                 weights=[30, 15, 20 if many else 6, 3, 3, 5, 4, 4, 1])[0]
            if not live and choice in ("retr", "top", "dele", "uidl1", "drop"):
                choice = "stat"
            n = rng.choice(live) if live else None
            try:
                if choice == "drop":
                    op("(drop after RETR)")       # leave while RETR streams the message
                    p._putcmd(f"RETR {n}")
                    abort_socket(p.sock)
                    return
                if choice == "retr":
                    op("RETR")
                    resp, lines, octets = p.retr(n)
                    model.on_retr(n, lines, octets)
                elif choice == "top":
                    k = rng.randint(0, 5)
                    op("TOP")
                    resp, lines, octets = p.top(n, k)
                    model.on_retr(n, lines, octets, top=k)
                elif choice == "dele":
                    if n not in model.tokens:
                        op("TOP")
                        resp, lines, octets = p.top(n, 0)
                        model.on_retr(n, lines, octets, top=0)
                    op("DELE")
                    p.dele(n)
                    model.on_dele(n)
                elif choice == "rset":
                    op("RSET")
                    p.rset()
                    model.on_rset()
                elif choice == "noop":
                    op("NOOP")
                    p.noop()
                elif choice == "stat":
                    op("STAT")
                    model.on_stat(*p.stat())
                elif choice == "list":
                    op("LIST")
                    resp, lines, _ = p.list()
                    model.on_list({int(a): int(b) for a, b in (ln.split()[:2] for ln in lines)})
                else:
                    op("UIDL n")
                    resp = p.uidl(n)
                    parts = resp.split()
                    model.on_uidl({int(parts[1]): parts[2].decode()})
            except poplib.error_proto as e:
                if e.args[0] in ("-ERR EOF", b"-ERR EOF"):
                    raise EOFError(f"{choice.upper()}: poplib's -ERR EOF") from None
                if choice in ("retr", "top", "uidl1", "dele"):
                    model.on_err(choice.upper().rstrip("1"), n, e.args[0])
                else:
                    model.bad("pop3-err", f"{choice.upper()} {n or ''} -> {e.args[0]!r}")
        r = rng.random()
        if r < 0.1:
            op("(drop without QUIT)")
            p.close()
            return
        if r < 0.15:
            op("RSET")
            p.rset()
            model.on_rset()
        op("QUIT")
        model.on_quit_sent()
        resp = p.quit()
        if _pop_ok(resp):
            model.on_quit_ok(now())
        else:
            model.bad("pop3-err", f"QUIT -> {resp!r}")
    except (TimeoutError, socket.timeout):
        v.add("timeout", f"{who}: no POP3 reply within {ctx.io_timeout}s", model.context())
    except poplib.error_proto as e:
        if e.args[0] in ("-ERR EOF", b"-ERR EOF"):
            # poplib's name for a connection closed by the server
            v.add("disconnect", f"{who}: POP3 connection closed: {e.args[0]!r}",
                  model.context())
        else:
            v.add("pop3-err", f"{who}: {e.args[0]!r}", model.context())
    except (OSError, EOFError) as e:
        v.add("disconnect", f"{who}: POP3 connection lost: {e!r}", model.context())
    finally:
        try:
            p.close()
        except OSError:
            pass


# ------------------------------------------------------------------------------------
# SMTP
# ------------------------------------------------------------------------------------

def smtp_session(ctx, cid, rng, v, ledger, tokens):
    """One SMTP connection (port 25 role) delivering 1-3 messages to local users."""
    who = f"client {cid} (smtp)"
    try:
        with smtplib.SMTP(ctx.host, ctx.smtp_port, local_hostname="stress.example.org",
                          timeout=ctx.io_timeout) as s:
            s.ehlo()
            if use_tls(ctx, rng):
                ledger.ops["session:smtp over TLS (STARTTLS)"] += 1
                s.starttls(context=ctx.tls)
                s.ehlo()
            for _ in range(rng.randint(1, 3)):
                tokens[0] += 1
                token = token_for(ctx.run_id, f"s{cid}", tokens[0])
                rcpts = rng.sample([u for u, _ in ctx.users],
                                   rng.randint(1, min(3, len(ctx.users))))
                ledger.ops["smtp:message"] += 1
                code, text = s.mail("stress@example.org")
                if code != 250:
                    v.add("smtp", f"{who}: MAIL FROM -> {code} {text!r}")
                    s.rset()
                    continue
                accepted = []
                for r in rcpts:
                    code, text = s.rcpt(r)
                    if code in (250, 251):
                        accepted.append(r)
                    else:
                        v.add("smtp", f"{who}: RCPT TO:<{r}> -> {code} {text!r}")
                if not accepted:
                    s.rset()
                    continue
                for r in accepted:
                    ledger.attempts[(r, token)] += 1
                if rng.random() < 0.04:
                    # leave after the final dot, before the reply (delivery job running):
                    # the message may or may not be delivered, never twice
                    ledger.ops["smtp:(drop after DATA)"] += 1
                    s.putcmd("data")
                    if s.getreply()[0] == 354:
                        s.send(smtplib._quote_periods(message_for(token).raw) + b".\r\n")
                    abort_socket(s.sock)
                    s.sock = None
                    return
                code, text = s.data(message_for(token).raw)
                if code == 250:
                    ledger.acked_smtp += [(r, token) for r in accepted]
                else:
                    v.add("smtp", f"{who}: DATA ({token}) -> {code} {text!r}")
            s.quit()
    except (TimeoutError, socket.timeout):
        v.add("timeout", f"{who}: no SMTP reply within {ctx.io_timeout}s")
    except ConnectionRefusedError as e:
        v.add("connect", f"{who}: SMTP connect: {e!r}")
    except (smtplib.SMTPException, OSError) as e:
        v.add("disconnect", f"{who}: SMTP: {e!r}")


# ------------------------------------------------------------------------------------
# vandals: pipeline commands, read nothing, leave with an RST
# ------------------------------------------------------------------------------------

def vandal_session(ctx, cid, user, password, rng, ledger, tokens):
    """A client that sends a burst of commands without reading a reply and resets the
    connection, often while the server runs one of its jobs (password check, SELECT,
    APPEND, FETCH of every body, RETR, delivery): the connection-lifetime case of issue 9.
    Nothing it does may remove mail; what it may add is counted as attempts."""
    kinds = [k for k in ("imap", "pop3", "smtp") if ctx.mix.get(k)]
    kind = rng.choice(kinds)
    wrong = kind != "smtp" and ctx.wrong_logins and rng.random() < 0.3
    pw = ("wrong" + password) if wrong else password
    ledger.ops[f"vandal:{kind}{' (wrong password)' if wrong else ''}"] += 1
    port = {"imap": ctx.imap_port, "pop3": ctx.pop3_port, "smtp": ctx.smtp_port}[kind]
    lines = []
    if kind == "imap":
        lines.append(f"a LOGIN {user} {pw}\r\n".encode())
        for _ in range(rng.randint(0, 3)):
            r = rng.random()
            if r < 0.3:
                lines.append(f"b SELECT {rng.choice(ctx.mailboxes)}\r\n".encode())
            elif r < 0.5:
                lines.append(b"c FETCH 1:* (FLAGS BODY.PEEK[] BODYSTRUCTURE ENVELOPE)\r\n")
            elif r < 0.75:
                tokens[0] += 1
                token = token_for(ctx.run_id, f"a{cid}", tokens[0])
                ledger.attempts[(user, token)] += 1
                raw = message_for(token).raw
                lines.append(f"d APPEND INBOX (\\Seen $Vandal) {{{len(raw)}+}}\r\n".encode()
                             + raw + b"\r\n")
            elif r < 0.85:
                lines.append(b"e UID STORE 1:* +FLAGS (\\Seen)\r\n")
            elif r < 0.95:
                lines.append(b"f IDLE\r\n")
            else:
                lines.append(b"g STATUS INBOX (MESSAGES UIDNEXT)\r\n")
    elif kind == "pop3":
        lines += [f"USER {user}\r\n".encode(), f"PASS {pw}\r\n".encode()]
        lines += rng.sample([b"STAT\r\n", b"LIST\r\n", b"UIDL\r\n", b"RETR 1\r\n",
                             b"TOP 2 3\r\n", b"RETR 3\r\n"], rng.randint(0, 3))
    else:
        tokens[0] += 1
        token = token_for(ctx.run_id, f"s{cid}", tokens[0])
        ledger.attempts[(user, token)] += 1
        lines += [b"EHLO vandal.example.org\r\n", b"MAIL FROM:<vandal@example.org>\r\n",
                  f"RCPT TO:<{user}>\r\n".encode(), b"DATA\r\n",
                  smtplib._quote_periods(message_for(token).raw) + b".\r\n"]
        if rng.random() < 0.5:
            lines = lines[:rng.randint(1, len(lines))]
    try:
        sock = socket.create_connection((ctx.host, port), timeout=ctx.io_timeout)
    except OSError:
        return
    try:
        sock.recv(4096)                       # the greeting
        for line in lines:
            sock.sendall(line)
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.02))  # let the server start the job
    except OSError:
        pass
    abort_socket(sock)


# ------------------------------------------------------------------------------------
# one client
# ------------------------------------------------------------------------------------

def worker(ctx, cid, result):
    """Client cid: sessions until the deadline, then the snapshot. result: list to which
    (violations, ledger) is appended."""
    rng = random.Random(f"{ctx.seed}/{cid}")
    v = Violations()
    ledger = Ledger()
    user, password = ctx.users[(cid - 1) % len(ctx.users)]
    tokens = [0]
    kept = None

    def stopping():
        return time.monotonic() >= ctx.deadline or \
            (ctx.max_ops and sum(ledger.ops.values()) >= ctx.max_ops)

    kinds = list(ctx.mix)
    weights = [ctx.mix[k] for k in kinds]
    try:
        while not stopping():
            refused = v.counts["connect"]
            kind = rng.choices(kinds, weights=weights)[0]
            ledger.ops[f"session:{kind}"] += 1
            SESSION.start = time.monotonic()
            if kind == "imap":
                client = ImapClient(ctx, cid, user, password, rng, v, ledger, tokens)
                try:
                    if client.session(stopping):
                        kept = client
                except SessionOver:
                    client.close()
            elif kind == "pop3":
                pop3_session(ctx, cid, user, password, rng, v, ledger)
            elif kind == "vandal":
                vandal_session(ctx, cid, user, password, rng, ledger, tokens)
            else:
                smtp_session(ctx, cid, rng, v, ledger, tokens)
            if v.counts["connect"] > refused:
                # the server refused us (down?): do not spin, the first ones tell it all
                time.sleep(max(0.0, min(0.5, ctx.deadline - time.monotonic())))
    except Exception:                              # noqa: BLE001 - a tester bug
        v.add("tester-error", f"client {cid}: {traceback.format_exc()}")
    finally:
        try:
            ctx.barrier.wait(timeout=ctx.io_timeout * 3 + 30)
        except threading.BrokenBarrierError:
            v.add("hang", f"client {cid}: not every client reached the end of the run")
        if kept is not None:
            try:
                kept.snapshot()
            except SessionOver:
                kept.close()
        result.append((v, ledger))
