"""
imapwire.py - parse IMAP server responses (RFC 3501 §9 response syntax) for the model.

A response arrives as the raw bytes of one server response: its first line, and for
each literal {n} the n bytes and the line that follows, exactly as on the wire (CRLFs
included). parse_response() turns it into a Response:

  Response(kind, tag, number, name, data, code, text, raw)
    kind   "untagged" | "tagged" | "continuation"
    number "* 3 EXISTS" -> 3 (None when the response has no number)
    name   upper-case response name: EXISTS EXPUNGE FETCH FLAGS OK NO BAD BYE SEARCH ...
    data   parsed data: FETCH -> dict item -> value; FLAGS -> list; SEARCH -> [int];
           STATUS -> (mailbox, dict)
    code   status responses: (CODE, args) of the [bracketed] response code, args parsed
    text   status responses: the human-readable text after the code

Values: atoms and quoted strings are str, literals are bytes, NIL is None, lists are
Python lists. Atoms with a [section] keep it (BODY[HEADER.FIELDS (X-STRESS-ID)]<0>).
Malformed input raises WireError (the model reports it as a protocol violation).
"""

from dataclasses import dataclass, field

STATUS_NAMES = ("OK", "NO", "BAD", "BYE", "PREAUTH")


class WireError(ValueError):
    pass


@dataclass
class Response:
    kind: str
    tag: str = None
    number: int = None
    name: str = ""
    data: object = None
    code: tuple = None
    text: str = ""
    raw: bytes = b""
    extra: dict = field(default_factory=dict)

    def code_name(self):
        return self.code[0] if self.code else None


class _Reader:
    """Cursor over one response's bytes."""

    def __init__(self, data):
        self.s = data
        self.i = 0

    def peek(self):
        return self.s[self.i:self.i + 1]

    def at_end(self):
        return self.i >= len(self.s) or self.s[self.i:] in (b"\r\n", b"\n")

    def skip_spaces(self):
        while self.s[self.i:self.i + 1] == b" ":
            self.i += 1

    def expect(self, b):
        if self.s[self.i:self.i + len(b)] != b:
            raise WireError(f"expected {b!r} at {self.i}: {self.s[self.i:self.i + 40]!r}")
        self.i += len(b)

    def rest_of_line(self):
        j = self.s.find(b"\r\n", self.i)
        if j < 0:
            j = len(self.s)
        out = self.s[self.i:j]
        self.i = j
        return out.decode("utf-8", "replace")

    def values_until(self, close, what):
        """Values up to and including the byte close (")" of a list, "]" of a code)."""
        items = []
        while True:
            self.skip_spaces()
            c = self.peek()
            if c == close:
                self.i += 1
                return items
            if c in (b"", b"\r", b"\n"):
                raise WireError(f"unterminated {what}")
            items.append(self.value())

    def value(self):
        """One value: list, quoted string, literal, NIL or atom (with [section])."""
        self.skip_spaces()
        c = self.peek()
        if c == b"":
            raise WireError("unexpected end of response")
        if c == b"(":
            self.i += 1
            return self.values_until(b")", "list")
        if c == b'"':
            self.i += 1
            out = bytearray()
            while True:
                c = self.s[self.i:self.i + 1]
                if c == b"":
                    raise WireError("unterminated quoted string")
                self.i += 1
                if c == b"\\":
                    out += self.s[self.i:self.i + 1]
                    self.i += 1
                elif c == b'"':
                    return out.decode("utf-8", "replace")
                elif c in (b"\r", b"\n"):
                    raise WireError("CR/LF in quoted string")
                else:
                    out += c
        if c == b"{":
            j = self.s.find(b"}", self.i)
            if j < 0:
                raise WireError("bad literal")
            num = self.s[self.i + 1:j].rstrip(b"+")
            if not num.isdigit():
                raise WireError(f"bad literal length {num!r}")
            n = int(num)
            self.i = j + 1
            self.expect(b"\r\n")
            if self.i + n > len(self.s):
                raise WireError("short literal")
            data = self.s[self.i:self.i + n]
            self.i += n
            return data
        return self.atom()

    def atom(self):
        start = self.i
        depth = 0
        while self.i < len(self.s):
            c = self.s[self.i:self.i + 1]
            if c == b"[":
                depth += 1
            elif c == b"]":
                if depth == 0:
                    break                  # the end of a response code: [UIDNEXT 5]
                depth -= 1
            elif depth == 0 and c in (b" ", b"(", b")", b"\r", b"\n", b"{", b'"'):
                break
            self.i += 1
        if self.i == start:
            raise WireError(f"empty atom at {self.i}: {self.s[self.i:self.i + 40]!r}")
        a = self.s[start:self.i].decode("utf-8", "replace")
        return None if a.upper() == "NIL" else a


def _status(r, resp):
    """Optional [CODE args] then text, for OK/NO/BAD/BYE/PREAUTH."""
    r.skip_spaces()
    if r.peek() == b"[":
        r.i += 1
        name = []
        while r.peek() not in (b" ", b"]", b""):
            name.append(r.peek())
            r.i += 1
        args = r.values_until(b"]", "response code")
        resp.code = (b"".join(name).decode().upper(), args)
    resp.text = r.rest_of_line().strip()


def _fetch_items(lst):
    if not isinstance(lst, list) or len(lst) % 2:
        raise WireError(f"FETCH data is not an item list: {lst!r}")
    out = {}
    for k, v in zip(lst[::2], lst[1::2]):
        if not isinstance(k, str):
            raise WireError(f"FETCH item name {k!r}")
        out[k.upper()] = v
    return out


def parse_response(raw):
    """Parse the raw bytes of one server response into a Response."""
    r = _Reader(raw)
    resp = Response(kind="untagged", raw=raw)
    if raw.startswith(b"+"):
        resp.kind = "continuation"
        r.i = 1
        resp.text = r.rest_of_line().strip()
        return resp
    if raw.startswith(b"* "):
        r.i = 2
    else:
        resp.kind = "tagged"
        sp = raw.find(b" ")
        if sp <= 0:
            raise WireError(f"bad tagged line {raw[:60]!r}")
        resp.tag = raw[:sp].decode()
        r.i = sp + 1
    first = r.atom()
    if first is None:
        raise WireError("NIL response name")
    if first.isdigit():
        resp.number = int(first)
        r.skip_spaces()
        resp.name = r.atom().upper()
        if resp.name == "FETCH":
            r.skip_spaces()
            resp.data = _fetch_items(r.value())
        return resp
    resp.name = first.upper()
    if resp.name in STATUS_NAMES:
        _status(r, resp)
        return resp
    if resp.kind == "tagged":
        raise WireError(f"tagged response {resp.name!r} is not OK/NO/BAD")
    if resp.name == "FLAGS":
        resp.data = r.value()
    elif resp.name == "SEARCH":
        nums = []
        while not r.at_end():
            v = r.value()
            if isinstance(v, list):        # (MODSEQ n) with CONDSTORE
                continue
            if not (isinstance(v, str) and v.isdigit()):
                raise WireError(f"SEARCH result {v!r}")
            nums.append(int(v))
        resp.data = nums
    elif resp.name == "STATUS":
        mbox = r.value()
        if isinstance(mbox, bytes):
            mbox = mbox.decode("utf-8", "replace")
        items = r.value()
        if not isinstance(items, list) or len(items) % 2:
            raise WireError(f"STATUS items {items!r}")
        resp.data = (mbox, {str(k).upper(): int(v) for k, v in zip(items[::2], items[1::2])})
    else:
        resp.data = r.rest_of_line()
    return resp


def flag_list(value):
    """A FLAGS value as a list of str (raises WireError on a non-list)."""
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise WireError(f"FLAGS is not a list of atoms: {value!r}")
    return value


def parse_set(text):
    """An IMAP sequence/UID set "1,3:5" -> list of ints in the order written (COPYUID
    pairs its source and destination sets element by element, RFC 4315 §3). No '*'."""
    out = []
    for part in str(text).split(","):
        a, _, b = part.partition(":")
        lo, hi = int(a), int(b or a)
        out.extend(range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1))
    return out


def format_set(nums):
    """Sorted ints -> compact IMAP set text "1,3:5"."""
    nums = sorted(set(nums))
    out = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}:{nums[j]}")
        i = j + 1
    return ",".join(out)
