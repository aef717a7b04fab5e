"""
model.py - what the stress tester accepts from the server: every reply is checked here.

Three layers, all pure (no sockets, so tests/stress/test_model.py can feed canned
transcripts):

  Violations        counts per kind + the first few examples (with a transcript tail)
  ImapModel         one IMAP session's view of its selected mailbox (RFC 3501 §2.3.1,
                    §7.4.1, RFC 2180, RFC 5530, RFC 4315 UIDPLUS, RFC 6851 MOVE); fed
                    with apply(cmd, responses) after each command
  Pop3Model         one POP3 session (RFC 1939): STAT/LIST/UIDL/RETR/TOP/DELE arithmetic
  Ledger            facts a session cannot check alone (which UIDs existed, which a client
                    asked to delete, acknowledged APPENDs/deliveries, claims that "one of
                    these messages was expunged by someone else") - merged over all
                    sessions (and processes) and settled by check_final() against the
                    mailboxes' final contents

What is accepted where RFCs leave a choice (README.md "Decisions"):
  - FETCH of messages still in the session's view: tagged OK, with data for every
    requested message. The one exception, as Dovecot does: a tagged
    OK [EXPUNGEISSUED] may omit messages that another session expunged - checked at the
    end (such a message must really be gone). FETCH NO is never accepted (RFC 2180 §4.1.2
    allows it, but Dovecot never does and the issue asks for Dovecot's promise).
  - STORE/COPY/MOVE on such messages: OK, or NO [EXPUNGEISSUED] (RFC 5530, RFC 2180
    §4.2.1/§4.4.1) when at least one target was really expunged (checked at the end).
  - SEARCH: tagged OK; SEARCH ALL may leave out only messages that were really expunged.
  - POP3 -ERR [IN-USE] at PASS (RFC 2449 / RFC 1939 §8 maildrop lock); RETR/TOP -ERR only
    for a message that is gone at the end (expunged over IMAP meanwhile).
"""

import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from imapwire import WireError, flag_list, parse_set
from msggen import STRESS_HEADER, message_for, section_bytes

SYSTEM_FLAGS = {"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft", "\\recent"}
TOKEN_RE = re.compile(rb"^" + STRESS_HEADER.encode() + rb":[ \t]*(\S+)", re.I | re.M)
TOKEN_ITEM = "BODY[HEADER.FIELDS]"       # normalized key of BODY[HEADER.FIELDS (X-STRESS-ID)]
MAX_EXAMPLES = 3


def now():
    return time.monotonic()


# The session the current client thread runs: its start (monotonic), set by the client
# loop; a report made during chaos carries it (chaos.py decides whether an event
# explains it).
SESSION = threading.local()


class Violations:
    """Violation counts per kind, with the first MAX_EXAMPLES examples of each."""

    # With --chaos: kind -> True if a report of that kind may be explained by a chaos
    # event; such reports wait in .pending until chaos.classify() sorts them.
    defer = None

    def __init__(self):
        self.counts = Counter()
        self.examples = defaultdict(list)
        self.pending = []        # (kind, time, session start, detail, context)

    def add(self, kind, detail, context=None):
        if Violations.defer is not None and Violations.defer(kind):
            self.pending.append((kind, time.monotonic(), getattr(SESSION, "start", None),
                                 detail, context or ""))
            return
        self.counts[kind] += 1
        if len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append({"detail": detail, "context": context or ""})

    def merge(self, other):
        self.counts.update(other.counts)
        self.pending.extend(other.pending)
        for k, v in other.examples.items():
            room = MAX_EXAMPLES - len(self.examples[k])
            self.examples[k].extend(v[:max(0, room)])

    def total(self):
        return sum(self.counts.values())

    def __bool__(self):
        return self.total() > 0


def token_of_header(value):
    """The X-Stress-Id token in a header block (bytes), or None."""
    if not isinstance(value, (bytes, bytearray)):
        return None
    m = TOKEN_RE.search(value)
    return m.group(1).decode() if m else None


def is_delivered(token):
    """Tokens of SMTP deliveries carry ".s" (the server prepends trace headers)."""
    parts = token.split(".")
    return len(parts) >= 3 and parts[1].startswith("s")


def is_keyword(flag):
    return not flag.startswith("\\")


def norm_mailbox(name):
    return "INBOX" if name.upper() == "INBOX" else name


# --------------------------------------------------------------------------------------
# Ledger: facts for the end-of-run accounting, mergeable across sessions and processes
# --------------------------------------------------------------------------------------

class Ledger:
    """What the sessions learned; keys: mbox = (user, mailbox), (mbox, uid)."""

    def __init__(self):
        self.ops = Counter()
        self.uidvalidity = defaultdict(set)       # mbox -> {uidvalidity}
        self.tokens = defaultdict(set)            # (mbox, uid) -> {token}
        self.seen = {}                            # (mbox, uid) -> latest view-entry birth time
        self.expunged = {}                        # (mbox, uid) -> first EXPUNGE seen (time)
        self.intents = set()                      # (mbox, uid) someone may have removed
        self.pop_intents = set()                  # (user, token) DELE'd, QUIT sent
        self.attempts = Counter()                 # (user, token) -> creations attempted
        self.acked_smtp = []                      # (user, token) 250 after DATA
        self.acked_append = 0
        self.claims = []                          # (kind, [(mbox, uid)], example)
        self.sizes = defaultdict(set)             # (user, token) -> {octets}
        self.structures = defaultdict(set)        # token -> {repr(bodystructure)}
        self.snapshots = []                       # (mbox, who, {uid: flags}, context)
        self.pop_sessions = []                    # (user, login time, {uidl})
        self.pop_deleted = {}                     # (user, uidl) -> QUIT +OK time
        self.pop_uidl_tokens = defaultdict(set)   # (user, uidl) -> {token}
        self.pop_claims = []                      # (user, uidl, example)
        self.pop_deleted_tokens = set()           # (user, token) QUIT +OK acknowledged
        self.origin = {}                          # (mbox, uid) -> how it was first learned
        self.last_flags = {}                      # (mbox, uid) -> (who, flags) last seen

    def note_uid(self, mbox, uid, token=None, since=None, origin=None):
        key = (mbox, uid)
        if origin and key not in self.origin:
            self.origin[key] = origin
        if token:
            self.tokens[key].add(token)
        elif key not in self.tokens:
            self.tokens[key] = set()
        if since is not None and since > self.seen.get(key, -1.0):
            self.seen[key] = since

    def merge(self, o):
        self.ops.update(o.ops)
        for k, v in o.uidvalidity.items():
            self.uidvalidity[k] |= v
        for k, v in o.tokens.items():
            self.tokens[k] |= v
        for k, t in o.origin.items():
            self.origin.setdefault(k, t)
        self.last_flags.update(o.last_flags)
        for k, t in o.seen.items():
            if t > self.seen.get(k, -1.0):
                self.seen[k] = t
        for k, t in o.expunged.items():
            if k not in self.expunged or t < self.expunged[k]:
                self.expunged[k] = t
        self.intents |= o.intents
        self.pop_intents |= o.pop_intents
        self.attempts.update(o.attempts)
        self.acked_smtp += o.acked_smtp
        self.acked_append += o.acked_append
        self.claims += o.claims
        for k, v in o.sizes.items():
            self.sizes[k] |= v
        for k, v in o.structures.items():
            self.structures[k] |= v
        self.snapshots += o.snapshots
        self.pop_sessions += o.pop_sessions
        for k, t in o.pop_deleted.items():
            if k not in self.pop_deleted or t < self.pop_deleted[k]:
                self.pop_deleted[k] = t
        for k, v in o.pop_uidl_tokens.items():
            self.pop_uidl_tokens[k] |= v
        self.pop_claims += o.pop_claims
        self.pop_deleted_tokens |= o.pop_deleted_tokens


# --------------------------------------------------------------------------------------
# IMAP
# --------------------------------------------------------------------------------------

@dataclass
class Cmd:
    """One IMAP command as the model needs to know it (filled by the client)."""
    name: str                        # FETCH STORE SEARCH COPY MOVE EXPUNGE SELECT ...
    uid: bool = False                # UID FETCH / UID STORE / ...
    line: str = ""                   # what was sent (for examples)
    targets: list = field(default_factory=list)   # seqs (uid=False) or uids (uid=True)
    items: list = field(default_factory=list)     # FETCH: expected response item keys
    mailbox: str = None              # SELECT/EXAMINE/STATUS/APPEND/COPY/MOVE destination
    token: str = None                # APPEND
    flags: list = field(default_factory=list)     # STORE/APPEND flags
    silent: bool = False             # STORE .SILENT
    expect_uids: list = field(default_factory=list)  # SEARCH: these UIDs expected
    sent: float = 0.0                # time the command was sent


class Entry:
    """One message of the view: its UID once known, the lowest UID it may have (new
    messages get UIDs above every UID the view held: RFC 3501 §2.3.1.1) and the highest
    (UIDNEXT at SELECT), and when it entered the view."""
    __slots__ = ("uid", "floor", "ceiling", "since", "claimed")

    def __init__(self, floor, ceiling, since):
        self.uid = None
        self.claimed = None          # FETCH left it out with EXPUNGEISSUED before its UID
                                     # was known: that text, checked once the UID is
        self.floor = floor
        self.ceiling = ceiling
        self.since = since


class SessionModel:
    """What the IMAP and POP3 session models share: who they are and how they report."""

    def __init__(self, user, violations, ledger, who="", clock=now):
        self.user = user
        self.v = violations
        self.ledger = ledger
        self.who = who
        self.clock = clock
        self.context = lambda: ""          # the client sets a transcript-tail provider

    def bad(self, kind, detail):
        self.v.add(kind, f"{self.who} {detail}", self.context())


class ImapModel(SessionModel):
    """The client-side model of one IMAP session (one connection)."""

    def __init__(self, user, violations, ledger, who="", clock=now):
        super().__init__(user, violations, ledger, who, clock)
        self.state = "auth"
        self.mailbox = None
        self.readonly = False
        self.uidvalidity_known = {}        # mailbox -> uidvalidity (this session)
        self.max_uid_ever = Counter()      # mailbox -> highest UID this session learned
        self._reset_view()

    # --- view -----------------------------------------------------------------------
    def _reset_view(self):
        self.view = []
        self.flags = {}                    # uid -> frozenset(lower-case flags)
        self.tokens = {}                   # uid -> token
        self.gone = set()                  # UIDs expunged from this view
        self.max_view_uid = 0
        self.announced = None              # keywords (lower) of the last * FLAGS
        self.permanent = None              # (set, has_star) of PERMANENTFLAGS
        self.uidnext = None
        self.uidvalidity = None

    @property
    def mbox(self):
        return (self.user, self.mailbox)

    def count(self):
        return len(self.view)

    def known(self):
        """[(seq, uid)] of view entries whose UID is known."""
        return [(i + 1, e.uid) for i, e in enumerate(self.view) if e.uid is not None]

    def unknown_seqs(self):
        return [i + 1 for i, e in enumerate(self.view) if e.uid is None]

    def seq_of(self, uid):
        for i, e in enumerate(self.view):
            if e.uid == uid:
                return i + 1
        return None

    # --- applying a command's responses ----------------------------------------------
    def apply(self, cmd, responses):
        """Check and apply the responses read during cmd (untagged ones, then the tagged
        one; a missing tagged reply means the connection broke: untagged are applied)."""
        self.cur = cmd
        self.got = defaultdict(set)        # seq (or uid for UID cmds) -> item keys seen
        self.copyuid = None
        self.search_results = None
        self.in_select = cmd.name in ("SELECT", "EXAMINE")
        if self.in_select:
            self._reset_view()
            self.mailbox = norm_mailbox(cmd.mailbox)
            self.readonly = cmd.name == "EXAMINE"
            self.state = "auth"
            self.select_seen = set()
        tagged = None
        self.recent = None
        for r in responses:
            if r.kind == "continuation":
                continue
            if r.kind == "tagged":
                tagged = r
                continue
            try:
                self._untagged(r)
            except (WireError, ValueError, TypeError, IndexError) as e:
                self.bad("protocol", f"{cmd.line!r}: cannot use {r.raw[:200]!r}: {e}")
        if self.recent is not None and self.recent > len(self.view):
            self.bad("recent-range", f"* {self.recent} RECENT with {len(self.view)} messages "
                     f"in the view after {cmd.line!r}")
        if tagged is not None:
            self._tagged(cmd, tagged)
        return tagged

    def _untagged(self, r):
        name = r.name
        if name == "EXISTS":
            self._exists(r.number)
        elif name == "RECENT":
            # checked when the command ends: RECENT may come before its EXISTS
            self.recent = r.number
        elif name == "EXPUNGE":
            self._expunge(r.number)
        elif name == "FETCH":
            self._fetch(r.number, r.data)
        elif name == "FLAGS":
            flags = flag_list(r.data)
            self.announced = {f.lower() for f in flags if is_keyword(f)}
            if self.in_select:
                self.select_seen.add("FLAGS")
        elif name in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
            self._untagged_status(r)
        elif name == "SEARCH":
            self._search(r.data)
        elif name == "STATUS":
            self._status(*r.data)

    def _exists(self, n):
        if self.in_select:
            self.select_seen.add("EXISTS")
            if self.view:
                self.bad("exists-select", f"second EXISTS {n} during SELECT")
            self.view = [Entry(0, None, self.cur.sent) for _ in range(n)]
            return
        if self.state != "selected":
            self.bad("exists-unselected", f"* {n} EXISTS with no mailbox selected")
            return
        if n < len(self.view):
            self.bad("exists-decrease", f"* {n} EXISTS after {len(self.view)} (EXISTS may "
                     f"only grow; RFC 3501 §7.3.1)")
            return
        floor = self.max_view_uid
        while len(self.view) < n:
            # no birth time: a server may announce a message (EXISTS) and its expunge
            # later; only a fresh SELECT must never list an expunged message
            self.view.append(Entry(floor, None, None))

    def _expunge(self, n):
        if self.state != "selected":
            self.bad("expunge-unselected", f"* {n} EXPUNGE with no mailbox selected")
            return
        c = self.cur
        if c.name in ("FETCH", "STORE", "SEARCH") and not c.uid:
            self.bad("expunge-during-" + c.name.lower(),
                     f"* {n} EXPUNGE during {c.line!r} (RFC 3501 §7.4.1 forbids it)")
        if not 1 <= n <= len(self.view):
            self.bad("expunge-range", f"* {n} EXPUNGE with {len(self.view)} messages")
            return
        e = self.view.pop(n - 1)
        if e.uid is not None:
            self.gone.add(e.uid)
            key = (self.mbox, e.uid)
            if key not in self.ledger.expunged:
                self.ledger.expunged[key] = self.clock()
                self.ledger.origin.setdefault(("expunged",) + key, f"{self.who}: {c.line}")

    def _learn_uid(self, seq, uid):
        """Give view entry seq its UID, checking order, reuse and bounds."""
        e = self.view[seq - 1]
        if e.uid is not None:
            if e.uid != uid:
                self.bad("uid-changed", f"message {seq} had UID {e.uid}, now UID {uid}")
            return
        if uid in self.gone:
            self.bad("uid-reused", f"UID {uid} was expunged from this view and is back "
                     f"as message {seq}")
        if uid <= e.floor:
            self.bad("uid-order", f"new message {seq} got UID {uid}, not above the UIDs "
                     f"this view already held (max {e.floor}; RFC 3501 §2.3.1.1)")
        if e.ceiling is not None and uid >= e.ceiling:
            self.bad("uid-order", f"message {seq} present at SELECT has UID {uid} >= "
                     f"UIDNEXT {e.ceiling}")
        for j in range(seq - 2, -1, -1):
            if self.view[j].uid is not None:
                if self.view[j].uid >= uid:
                    self.bad("uid-order", f"message {seq} UID {uid} not above message "
                             f"{j + 1} UID {self.view[j].uid}")
                break
        for j in range(seq, len(self.view)):
            if self.view[j].uid is not None:
                if self.view[j].uid <= uid:
                    self.bad("uid-order", f"message {seq} UID {uid} not below message "
                             f"{j + 1} UID {self.view[j].uid}")
                break
        e.uid = uid
        if e.claimed:
            self._claim("fetch-missing", [uid], e.claimed)
        self.max_view_uid = max(self.max_view_uid, uid)
        self.max_uid_ever[self.mailbox] = max(self.max_uid_ever[self.mailbox], uid)
        self.ledger.note_uid(self.mbox, uid, self.tokens.get(uid), since=e.since,
                             origin=f"{self.who}: {self.cur.line}")

    def _fetch(self, seq, items):
        if self.state != "selected":
            self.bad("fetch-unselected", f"* {seq} FETCH with no mailbox selected")
            return
        if not 1 <= seq <= len(self.view):
            self.bad("fetch-range", f"* {seq} FETCH with {len(self.view)} messages in the "
                     f"view (RFC 3501 §7.4.2)")
            return
        for k in list(items):
            if k.startswith("BODY[HEADER.FIELDS"):
                items[TOKEN_ITEM] = items.pop(k)
        if "UID" in items:
            uid = items["UID"]
            if not (isinstance(uid, str) and uid.isdigit()):
                raise WireError(f"UID {uid!r}")
            self._learn_uid(seq, int(uid))
        uid = self.view[seq - 1].uid
        c = self.cur
        if c.uid:
            if uid is not None:
                self.got[uid] |= set(items)
        else:
            self.got[seq] |= set(items)
        token = None
        if TOKEN_ITEM in items:
            token = token_of_header(items[TOKEN_ITEM])
            if token and uid is not None:
                known = self.tokens.get(uid)
                if known and known != token:
                    self.bad("uid-reused", f"UID {uid} was message {known}, now {token}")
                self.tokens[uid] = token
                self.ledger.note_uid(self.mbox, uid, token)
        if token is None and uid is not None:
            token = self.tokens.get(uid)
        if "FLAGS" in items:
            self._check_flags(seq, uid, flag_list(items["FLAGS"]))
        if token:
            self._check_content(seq, uid, token, items)

    def _check_flags(self, seq, uid, flags):
        for f in flags:
            fl = f.lower()
            if fl.startswith("\\"):
                if fl not in SYSTEM_FLAGS:
                    self.bad("flag-invalid", f"message {seq} has unknown system flag {f}")
                continue
            if self.announced is None or fl not in self.announced:
                self.bad("keyword-unannounced",
                         f"message {seq} (UID {uid}) has keyword {f} not in the last * FLAGS "
                         f"({sorted(self.announced or [])}) (RFC 3501 §7.2.6)")
            if not self.readonly and self.permanent is not None:
                perm, star = self.permanent
                if not star and fl not in perm:
                    self.bad("keyword-not-permanent",
                             f"keyword {f} is neither in PERMANENTFLAGS nor allowed by \\*")
        fs = frozenset(f.lower() for f in flags)
        if uid is not None:
            self.flags[uid] = fs
            self.ledger.last_flags[(self.mbox, uid)] = (f"{self.who}: {self.cur.line}",
                                                        sorted(fs))
            if "\\deleted" in fs:
                self.ledger.intents.add((self.mbox, uid))

    def _check_content(self, seq, uid, token, items):
        """Compare what FETCH returned with the message the token names. Data that does
        not match (NIL sections, zero sizes, empty envelopes) is what Dovecot serves for
        a message another session expunged: accepted only if it is really gone at the end
        (a claim); malformed syntax (ENVELOPE/BODYSTRUCTURE not a list) never is."""
        try:
            msg = message_for(token)
        except Exception:                                # noqa: BLE001 - foreign token
            return
        delivered = is_delivered(token)
        where = f"message {seq} (UID {uid}, {token})"
        problems = []
        full = None
        for key, val in items.items():
            if not key.startswith("BODY["):
                continue
            section, _, origin = key[5:].partition("]")
            if section.startswith("HEADER.FIELDS"):
                continue
            if val is None:
                problems.append(f"{key} is NIL")
                continue
            if isinstance(val, str):
                val = val.encode()
            exp = section_bytes(msg, section)
            if exp is None:
                continue
            if origin:
                # a partial of BODY[]/HEADER of a delivered message is shifted by the
                # trace headers the server added; other sections are exact
                start = int(origin.strip("<>"))
                ok = (delivered and section in ("", "HEADER")) or \
                    exp[start:start + len(val)] == val
            elif delivered and section in ("", "HEADER"):
                ok = val.endswith(exp)
            else:
                ok = val == exp
            if not ok:
                problems.append(f"{key} differs from what was stored (got {len(val)} bytes "
                                f"{val[:60]!r}, expected {len(exp)} bytes {exp[:60]!r})")
            if section == "" and not origin:
                full = len(val)
        size = int(items["RFC822.SIZE"]) if "RFC822.SIZE" in items else full
        if size == 0 or (full is not None and full != size):
            problems.append(f"RFC822.SIZE {size}, BODY[] {full} bytes")
        if "ENVELOPE" in items:
            env = items["ENVELOPE"]
            if not isinstance(env, list) or len(env) != 10:
                self.bad("fetch-syntax", f"{where}: ENVELOPE {env!r} is not an envelope "
                         f"(RFC 3501 §9: envelope = \"(\" env-date SP ... \")\")")
            else:
                subj = env[1].decode() if isinstance(env[1], bytes) else env[1]
                mid = env[9].decode() if isinstance(env[9], bytes) else env[9]
                if subj != msg.subject or mid != msg.message_id:
                    problems.append(f"ENVELOPE subject/message-id {subj!r}/{mid!r}")
        structures = []
        for key in ("BODYSTRUCTURE", "BODY"):
            if key not in items:
                continue
            if not isinstance(items[key], list):
                self.bad("fetch-syntax", f"{where}: {key} {items[key]!r} is not a body "
                         f"structure (RFC 3501 §9: body = \"(\" ... \")\")")
            elif not self._structure_ok(msg, items[key]):
                problems.append(f"{key} {str(items[key])[:200]} does not describe the "
                                f"stored {msg.shape} message")
            else:
                structures.append(("BS" if key == "BODYSTRUCTURE" else "") + repr(items[key]))
        if problems:
            self._claim("content", [uid], f"{where}: " + "; ".join(problems) +
                        f" (after {self.cur.line!r}), yet the message was not expunged")
            return
        if size is not None:
            self.ledger.sizes[(self.user, token)].add(size)
        self.ledger.structures[token].update(structures)

    def _structure_ok(self, msg, bs):
        """Does BODYSTRUCTURE/BODY bs describe msg (types, part count, octet sizes)?"""
        def part_ok(p, exp):
            return (isinstance(p, list) and len(p) >= 7 and str(p[0]).upper() == exp.ctype
                    and str(p[1]).upper() == exp.subtype and str(p[6]).isdigit()
                    and int(p[6]) == len(exp.content))
        if msg.shape == "plain":
            return part_ok(bs, msg.parts[0])
        subparts, subtype = [], None
        for p in bs:
            if not isinstance(p, list):          # parts, then the subtype, then
                subtype = p                      # extension data
                break
            subparts.append(p)
        return (len(subparts) == len(msg.parts) and str(subtype).upper() == msg.shape.upper()
                and all(part_ok(p, e) for p, e in zip(subparts, msg.parts)))

    def _untagged_status(self, r):
        if r.name == "BYE":
            if self.cur.name != "LOGOUT":
                self.bad("bye", f"* BYE during {self.cur.line!r}: {r.text}")
            return
        if r.name == "BAD":
            self.bad("bad-untagged", f"* BAD during {self.cur.line!r}: {r.text}")
            return
        code = r.code_name()
        if code is None:
            return
        args = r.code[1]
        if code == "PERMANENTFLAGS":
            flags = flag_list(args[0]) if args else []
            self.permanent = ({f.lower() for f in flags if is_keyword(f)}, "\\*" in flags)
            if self.in_select:
                self.select_seen.add("PERMANENTFLAGS")
        elif code == "UIDVALIDITY":
            self._uidvalidity(self.mailbox, int(args[0]))
            self.uidvalidity = int(args[0])
            if self.in_select:
                self.select_seen.add("UIDVALIDITY")
        elif code == "UIDNEXT":
            self.uidnext = int(args[0])
            if self.in_select:
                for e in self.view:
                    e.ceiling = self.uidnext
        elif code == "COPYUID":
            self.copyuid = args
        elif code == "CLOSED":
            if not self.in_select:
                self.bad("protocol", f"[CLOSED] outside SELECT/EXAMINE: {r.raw[:100]!r}")

    def _uidvalidity(self, mailbox, value):
        mailbox = norm_mailbox(mailbox)
        old = self.uidvalidity_known.get(mailbox)
        if old is not None and old != value:
            self.bad("uidvalidity-changed", f"{mailbox}: UIDVALIDITY {old} then {value}")
        self.uidvalidity_known[mailbox] = value
        self.ledger.uidvalidity[(self.user, mailbox)].add(value)

    def _search(self, nums):
        c = self.cur
        self.search_results = set(nums)
        if c.uid:
            for u in nums:
                if u in self.gone:
                    self.bad("search-range", f"UID SEARCH returned UID {u}, expunged from "
                             f"this view earlier")
            return
        for n in nums:
            if not 1 <= n <= len(self.view):
                self.bad("search-range", f"SEARCH returned {n} with {len(self.view)} messages "
                         f"in the view")

    def _status(self, mailbox, items):
        mailbox = norm_mailbox(mailbox)
        if "UIDVALIDITY" in items:
            self._uidvalidity(mailbox, items["UIDVALIDITY"])
        if "UIDNEXT" in items and items["UIDNEXT"] <= self.max_uid_ever[mailbox]:
            self.bad("status-uidnext", f"STATUS {mailbox} UIDNEXT {items['UIDNEXT']} but UID "
                     f"{self.max_uid_ever[mailbox]} was already assigned")

    # --- tagged reply -----------------------------------------------------------------
    def _claim(self, kind, uids, detail):
        """At least one of uids must be gone at the end (checked by check_final)."""
        keys = [(self.mbox, u) for u in uids if u is not None]
        if keys:
            self.ledger.claims.append((kind, keys, {"detail": f"{self.who} {detail}",
                                                    "context": self.context()}))
        else:
            self.bad(kind, detail)

    def _target_uids(self, cmd):
        return list(cmd.targets) if cmd.uid else \
            [getattr(cmd, "target_uids", {}).get(s) for s in cmd.targets]

    def _tagged(self, cmd, t):
        status = t.name
        code = t.code_name()
        expunge_issued = code == "EXPUNGEISSUED"
        what = f"{cmd.line!r} -> {t.tag} {status} {('[' + code + '] ') if code else ''}{t.text}"
        if status == "BAD":
            self.bad("bad", f"{what}")
            if self.in_select:
                self._reset_view()
            return
        name = cmd.name
        if status == "NO":
            if name in ("STORE", "COPY", "MOVE") and expunge_issued:
                self._claim(f"no-{name.lower()}", self._target_uids(cmd),
                            f"{what}: none of the targets was expunged")
            else:
                self.bad(f"no-{name.lower()}", what)
            if self.in_select:
                self._reset_view()
                self.state = "auth"
                self.mailbox = None
            return
        # status == OK
        if self.in_select:
            missing = {"FLAGS", "EXISTS", "UIDVALIDITY"} - self.select_seen
            if missing:
                self.bad("select-incomplete", f"{what}: no {sorted(missing)} before OK")
            want = "READ-ONLY" if name == "EXAMINE" else "READ-WRITE"
            if code != want:
                self.bad("select-mode", f"{what}: expected [{want}]")
            if name == "SELECT" and self.permanent is not None and not self.permanent[1]:
                self.bad("permanentflags", f"{what}: PERMANENTFLAGS without \\* (keywords "
                         f"could not be created)")
            self.state = "selected"
            self.in_select = False
            return
        if name in ("CLOSE", "UNSELECT"):
            self.state = "auth"
            self.mailbox = None
            self._reset_view()
        elif name == "FETCH":
            self._fetch_done(cmd, what, expunge_issued)
        elif name == "APPEND":
            self._append_done(cmd, t, what)
        elif name in ("COPY", "MOVE"):
            self._copy_done(cmd, t, what)
        elif name == "SEARCH":
            self._search_done(cmd, what)

    def _fetch_done(self, cmd, what, expunge_issued):
        need = set(cmd.items)
        if cmd.uid:
            need.add("UID")
        for target in cmd.targets:
            if cmd.uid:
                if target in self.gone:
                    continue                      # expunged (and announced) meanwhile
                uid = target
                got = self.got.get(target, set())
            else:
                uid = getattr(cmd, "target_uids", {}).get(target)
                got = self.got.get(target, set())
            lacking = need - got
            if not lacking:
                continue
            kind = "fetch-missing"
            detail = (f"{what}: no {sorted(lacking)} for "
                      f"{'UID' if cmd.uid else 'message'} {target}")
            if expunge_issued and uid is None and not cmd.uid:
                # a message whose UID this session never learned (the sync FETCH after
                # EXISTS): fine if it was expunged; checked once its UID shows up
                if target <= len(self.view) and self.view[target - 1].uid is None:
                    self.view[target - 1].claimed = detail + " though it was not expunged"
            elif expunge_issued:
                self._claim(kind, [uid], detail + " though it was not expunged")
            else:
                self.bad(kind, detail + " (it is in this session's view)")

    def _append_done(self, cmd, t, what):
        mailbox = norm_mailbox(cmd.mailbox)
        mbox = (self.user, mailbox)
        if t.code_name() != "APPENDUID" or len(t.code[1]) != 2:
            self.bad("appenduid", f"{what}: no [APPENDUID v uid] (UIDPLUS, RFC 4315 §3)")
            return
        v, uid = int(t.code[1][0]), int(t.code[1][1])
        if uid == 0:
            self.bad("appenduid", f"{what}: APPENDUID names UID 0 (RFC 3501 §2.3.1.1: "
                     f"UIDs are non-zero)")
            return
        self._uidvalidity(mailbox, v)
        if uid <= self.max_uid_ever[mailbox]:
            self.bad("uid-order", f"{what}: APPENDUID {uid} not above UID "
                     f"{self.max_uid_ever[mailbox]} this session already saw in {mailbox}")
        self.max_uid_ever[mailbox] = max(self.max_uid_ever[mailbox], uid)
        self.ledger.acked_append += 1
        self.ledger.note_uid(mbox, uid, cmd.token, origin=f"{self.who}: {what}")
        if any(f.lower() == "\\deleted" for f in cmd.flags):
            self.ledger.intents.add((mbox, uid))
        if self.state == "selected" and mailbox == self.mailbox:
            self.tokens[uid] = cmd.token

    def _copy_done(self, cmd, t, what):
        cu = self.copyuid
        if t.code_name() == "COPYUID":
            cu = t.code[1]
        src_uids = [u for u in self._target_uids(cmd) if u is not None]
        if cu is None:
            # RFC 4315 §3: COPYUID unless nothing was copied (all targets gone).
            self._claim("copyuid", src_uids, f"{what}: no COPYUID, yet the targets exist")
            return
        try:
            v, src, dst = int(cu[0]), parse_set(cu[1]), parse_set(cu[2])
        except (ValueError, IndexError, TypeError):
            self.bad("copyuid", f"{what}: malformed COPYUID {cu!r}")
            return
        mailbox = norm_mailbox(cmd.mailbox)
        self._uidvalidity(mailbox, v)
        if 0 in src or 0 in dst or len(src) != len(dst) or not set(src) <= set(src_uids):
            self.bad("copyuid", f"{what}: COPYUID {cu!r} does not match the targets "
                     f"{src_uids}")
            return
        for s, d in zip(src, dst):
            if d <= self.max_uid_ever[mailbox]:
                self.bad("uid-order", f"{what}: new UID {d} not above UID "
                         f"{self.max_uid_ever[mailbox]} already seen in {mailbox}")
            self.ledger.note_uid((self.user, mailbox), d, self.tokens.get(s),
                                 origin=f"{self.who}: {what}")
        self.max_uid_ever[mailbox] = max([self.max_uid_ever[mailbox]] + dst)
        if len(src) < len(src_uids):
            missing = sorted(set(src_uids) - set(src))
            for u in missing:
                self._claim("copyuid", [u], f"{what}: UID {u} not copied, yet it exists")

    def _search_done(self, cmd, what):
        res = self.search_results
        if res is None:
            self.bad("search-missing", f"{what}: no * SEARCH response")
            return
        for uid in cmd.expect_uids:
            key = uid if cmd.uid else self.seq_of(uid)
            if key is not None and key not in res and uid not in self.gone:
                self._claim("search-missing", [uid], f"{what}: UID {uid} not found though "
                            f"it matches and is still in the mailbox")

    # --- for the end of the run -------------------------------------------------------
    def snapshot(self):
        """{uid: flags without \\recent} of the view (all UIDs must be known)."""
        return {e.uid: frozenset(self.flags.get(e.uid, frozenset()) - {"\\recent"})
                for e in self.view if e.uid is not None}


# --------------------------------------------------------------------------------------
# POP3
# --------------------------------------------------------------------------------------

class Pop3Model(SessionModel):
    """Checks of one POP3 session (RFC 1939); the client calls on_* after each reply."""

    def __init__(self, user, violations, ledger, who="", clock=now):
        super().__init__(user, violations, ledger, who, clock)
        self.sizes = {}          # msg number -> size (from LIST)
        self.uidls = {}          # msg number -> uidl
        self.tokens = {}         # msg number -> token
        self.deleted = set()
        self.login_time = None

    def on_login(self, t):
        self.login_time = t

    def on_list(self, sizes):
        """Full LIST (after DELEs it lists only undeleted messages)."""
        if self.sizes:
            for n, s in sizes.items():
                if self.sizes.get(n) != s:
                    self.bad("pop3-list", f"LIST {n} size {s}, earlier {self.sizes.get(n)}")
            expected = set(self.sizes) - self.deleted
            if set(sizes) != expected:
                self.bad("pop3-list", f"LIST numbers {sorted(sizes)[:20]} != "
                         f"{sorted(expected)[:20]} (deleted {sorted(self.deleted)[:20]})")
        else:
            self.sizes = dict(sizes)

    def on_stat(self, count, total):
        if not self.sizes:
            return
        live = [n for n in self.sizes if n not in self.deleted]
        want = (len(live), sum(self.sizes[n] for n in live))
        if (count, total) != want:
            self.bad("pop3-stat", f"STAT {count} {total}, LIST says {want[0]} {want[1]}")

    def on_uidl(self, uidls):
        for n, u in uidls.items():
            old = self.uidls.get(n)
            if old is not None and old != u:
                self.bad("pop3-uidl", f"UIDL {n} was {old}, now {u}")
            self.uidls[n] = u
        if self.login_time is not None and len(uidls) > 1 and not self.deleted:
            self.ledger.pop_sessions.append((self.user, self.login_time, set(uidls.values())))
        if len(set(uidls.values())) != len(uidls):
            self.bad("pop3-uidl", "two messages share a UIDL")

    def on_retr(self, n, lines, octets, top=None):
        """RETR n (top None) or TOP n top: lines unstuffed, octets as poplib counts them."""
        data = b"".join(line + b"\r\n" for line in lines)
        head, sep, _ = data.partition(b"\r\n\r\n")
        token = token_of_header(head + b"\r\n")
        if token is None:
            return
        uidl = self.uidls.get(n)
        if uidl:
            self.ledger.pop_uidl_tokens[(self.user, uidl)].add(token)
        old = self.tokens.get(n)
        if old and old != token:
            self.bad("pop3-content", f"message {n} was {old}, now {token}")
        self.tokens[n] = token
        try:
            msg = message_for(token)
        except Exception:                                # noqa: BLE001
            return
        exp = msg.raw
        if top is None:
            size = self.sizes.get(n)
            if size is not None and size != len(data):
                self.bad("pop3-size", f"LIST {n} said {size} octets, RETR gave {len(data)} "
                         f"(RFC 1939 §11: exact size)")
            self.ledger.sizes[(self.user, token)].add(len(data))
            ok = data.endswith(exp) if is_delivered(token) else data == exp
        else:
            real = msg.body.split(b"\r\n")[:-1]       # bodies end with CRLF
            want = msg.header + b"".join(line + b"\r\n" for line in real[:top])
            ok = data.endswith(want) if is_delivered(token) else data == want
        if not ok:
            self.bad("pop3-content", f"{'RETR' if top is None else 'TOP'} {n} "
                     f"{'' if top is None else top} "
                     f"({token}) differs from the stored message ({len(data)} bytes)")

    def on_err(self, cmd, n, reply):
        """-ERR to RETR/TOP/LIST n/UIDL n of a message not deleted here: allowed only if
        the message is gone at the end (expunged over IMAP meanwhile)."""
        uidl = self.uidls.get(n)
        if uidl is None or n in self.deleted:
            self.bad("pop3-err", f"{cmd} {n} -> {reply!r}")
            return
        self.ledger.pop_claims.append((self.user, uidl, {
            "detail": f"{self.who} {cmd} {n} -> {reply!r} but the message is still there",
            "context": self.context()}))

    def on_dele(self, n):
        self.deleted.add(n)
        tok = self.tokens.get(n)
        if tok:
            self.ledger.origin.setdefault(("dele", self.user, tok), f"{self.who} DELE {n}")

    def on_rset(self):
        self.deleted.clear()

    def on_quit_sent(self):
        for n in self.deleted:
            tok = self.tokens.get(n)
            if tok:
                self.ledger.pop_intents.add((self.user, tok))

    def on_quit_ok(self, t):
        for n in self.deleted:
            uidl = self.uidls.get(n)
            if uidl:
                self.ledger.pop_deleted.setdefault((self.user, uidl), t)
            tok = self.tokens.get(n)
            if tok:
                self.ledger.pop_deleted_tokens.add((self.user, tok))


# --------------------------------------------------------------------------------------
# End of run
# --------------------------------------------------------------------------------------

@dataclass
class FinalState:
    """The mailboxes' contents after the run, read by a fresh session."""
    mailboxes: dict = field(default_factory=dict)   # mbox -> {uid: (flags, token)}
    uidvalidity: dict = field(default_factory=dict)  # mbox -> value
    pop3: dict = field(default_factory=dict)        # user -> {uidl} (None: not read)
    run_id: str = None                               # tokens of this run start with it


def check_final(ledger, final, v):
    """Settle the ledger against the final contents; add violations to v."""
    mb = final.mailboxes

    def present(mbox, uid):
        return mbox in mb and uid in mb[mbox]

    # UIDVALIDITY never changes (no mailbox is deleted or recreated in a run).
    for mbox, vals in ledger.uidvalidity.items():
        if mbox in final.uidvalidity:
            vals = vals | {final.uidvalidity[mbox]}
        if len(vals) > 1:
            v.add("uidvalidity-changed", f"{mbox}: UIDVALIDITY values {sorted(vals)}")

    # A UID names one message for ever (RFC 3501 §2.3.1.1).
    for (mbox, uid), toks in ledger.tokens.items():
        toks = set(toks)
        if present(mbox, uid) and mb[mbox][uid][1]:
            toks.add(mb[mbox][uid][1])
        if len(toks) > 1:
            v.add("uid-reused", f"{mbox} UID {uid} named several messages: {sorted(toks)}")

    # Expunged stays expunged.
    for (mbox, uid), t in ledger.expunged.items():
        if present(mbox, uid):
            v.add("uid-resurrected", f"{mbox} UID {uid} was expunged (EXPUNGE sent to a "
                  f"session) but is in the mailbox at the end")
        elif ledger.seen.get((mbox, uid), -1.0) > t:
            v.add("uid-resurrected", f"{mbox} UID {uid} was expunged, then a later view "
                  f"listed it again")

    # Nothing disappears unless a client asked for it (\Deleted, MOVE, POP3 DELE).
    token_at = {}
    for (mbox, uid), toks in ledger.tokens.items():
        if toks:
            token_at[(mbox, uid)] = next(iter(toks))
    final_tokens = Counter()
    for mbox, msgs in mb.items():
        for uid, (flags, tok) in msgs.items():
            if tok:
                final_tokens[(mbox[0], tok)] += 1
    def now_at(user, tok):
        return [(m[1], u, ledger.origin.get((m, u))) for m, msgs in mb.items() if m[0] == user
                for u, (_, t) in msgs.items() if t == tok]

    for (mbox, uid) in ledger.tokens:
        if mbox not in mb or present(mbox, uid):
            continue
        if (mbox, uid) in ledger.intents:
            continue
        tok = token_at.get((mbox, uid))
        if mbox[1] == "INBOX" and tok and (mbox[0], tok) in ledger.pop_intents:
            continue
        history = (f"first known from {ledger.origin.get((mbox, uid))}; last flags seen "
                   f"{ledger.last_flags.get((mbox, uid))}; EXPUNGE seen by "
                   f"{ledger.origin.get(('expunged', mbox, uid))}; POP3 DELE by "
                   f"{ledger.origin.get(('dele', mbox[0], tok))}; the message is now at "
                   f"{now_at(mbox[0], tok) if tok else '?'}")
        higher = [u for u, (_, t) in mb[mbox].items() if tok and t == tok and u > uid]
        if (mbox, uid) in ledger.last_flags and higher:
            # A view held it, then its UID was expunged without a request and the message
            # came back under a new UID (clients lose its flags and fetch it again).
            # Dovecot's Maildir does this in a rename race ("Expunged message reappeared").
            v.add("uid-renumbered", f"{mbox} UID {uid} ({tok}) vanished without a "
                  f"request and is back as UID {higher}; {history}")
            continue
        # Otherwise mail is gone: a message some view held, or a UID an acknowledged
        # APPEND/COPY/MOVE named (APPENDUID/COPYUID) that never appeared.
        v.add("lost", f"{mbox} UID {uid} ({tok}) existed or was acknowledged and is not "
              f"there, though no client set \\Deleted on it, moved it or DELE'd it; "
              f"{history}")

    # Acknowledged deliveries arrived (and acknowledged APPENDs: covered above via UIDs).
    observed = {(mbox[0], t) for (mbox, _), toks in ledger.tokens.items() for t in toks}
    for user, tok in ledger.acked_smtp:
        if not any(mbox[0] == user for mbox in mb):
            continue
        if (user, tok) in ledger.pop_intents:
            continue  # a POP3 session read it (TOP) and DELE'd it before any IMAP view saw it
        if (user, tok) not in observed and final_tokens[(user, tok)] == 0:
            v.add("lost", f"SMTP delivery {tok} to {user} was acknowledged (250) but never "
                  f"appeared")

    # No duplicates: never more copies than creations attempted (APPEND/RCPT/COPY/MOVE).
    # (COPY/MOVE of a message whose token the session did not know count under None: a
    # pool of copies that may belong to any token.)
    excess = defaultdict(list)
    for (user, tok), n in final_tokens.items():
        limit = ledger.attempts.get((user, tok), 0)
        ours = final.run_id and tok.startswith(final.run_id + ".")
        if (limit or ours) and n > limit:
            # (a token of this run with no attempt at all: e.g. an APPEND whose literal
            # was cut off half-way by a client that left must not be stored)
            excess[user].append((tok, n, limit))
    for user, items in excess.items():
        if sum(n - limit for _, n, limit in items) <= ledger.attempts.get((user, None), 0):
            continue
        for tok, n, limit in items:
            where = [(mbox[1], uid, ledger.origin.get((mbox, uid)))
                     for mbox, msgs in mb.items() if mbox[0] == user
                     for uid, (_, t) in msgs.items() if t == tok]
            v.add("duplicate", f"{tok} is {n} times in {user}'s mailboxes, at most {limit} "
                  f"creations were attempted: {where}")

    # Claims: "one of these was expunged by someone else".
    for kind, keys, ex in ledger.claims:
        if all(k[0] in mb for k in keys) and all(present(*k) for k in keys):
            v.add(kind, ex["detail"], ex["context"])

    # Sizes and structures of one message never vary.
    for (user, tok), sizes in ledger.sizes.items():
        if len(sizes) > 1:
            v.add("size-mismatch", f"{tok} ({user}): sizes {sorted(sizes)} (RFC822.SIZE, "
                  f"BODY[] length, POP3 LIST/RETR)")
    for tok, reprs in ledger.structures.items():
        kinds = defaultdict(set)
        for r in reprs:
            kinds[r[:2] == "BS"].add(r)
        if any(len(s) > 1 for s in kinds.values()):
            v.add("bodystructure-unstable", f"{tok}: {len(reprs)} different structures: "
                  f"{sorted(reprs)}"[:1500])

    # Convergence: after quiescing, every session's view equals the final mailbox.
    for mbox, who, snap, ctx in ledger.snapshots:
        if mbox not in mb:
            continue
        truth = {u: fl for u, (fl, _) in mb[mbox].items()}
        if set(snap) != set(truth):
            extra = sorted(set(snap) - set(truth))[:10]
            lacking = sorted(set(truth) - set(snap))[:10]
            v.add("view-diverge", f"{who} {mbox}: after NOOP its view has extra UIDs {extra}, "
                  f"lacks {lacking}", ctx)
            continue
        diff = [u for u in snap if snap[u] != truth[u]]
        if diff:
            u = diff[0]
            v.add("flags-diverge", f"{who} {mbox}: {len(diff)} messages' flags differ after "
                  f"NOOP, e.g. UID {u}: session {sorted(snap[u])}, mailbox {sorted(truth[u])}",
                  ctx)

    # POP3: deletions stick, errors only for messages that are really gone.
    for user, t0, uidls in ledger.pop_sessions:
        for u in uidls:
            t = ledger.pop_deleted.get((user, u))
            if t is not None and t < t0:
                v.add("pop3-dele", f"{user}: UIDL {u} deleted by an acknowledged QUIT, "
                      f"listed by a session that logged in later")
    for (user, u), toks in ledger.pop_uidl_tokens.items():
        if len(toks) > 1:
            v.add("pop3-uidl", f"{user}: UIDL {u} named several messages {sorted(toks)}")
    for user, listing in final.pop3.items():
        if listing is None:
            continue
        for (u_user, u), t in ledger.pop_deleted.items():
            if u_user == user and u in listing:
                v.add("pop3-dele", f"{user}: UIDL {u} deleted by an acknowledged QUIT but "
                      f"still listed at the end")
        for c_user, u, ex in ledger.pop_claims:
            if c_user == user and u in listing:
                v.add("pop3-err", ex["detail"], ex["context"])
        inbox = mb.get((user, "INBOX"))
        if inbox is not None and len(inbox) != len(listing):
            v.add("pop3-count", f"{user}: POP3 lists {len(listing)} messages, IMAP INBOX "
                  f"holds {len(inbox)}")
