"""
msggen.py - the stress tester's messages: each one is a pure function of its token.

Every message the tester creates (IMAP APPEND, SMTP delivery) carries a unique token in
an `X-Stress-Id:` header, its Subject and its Message-ID. Everything else (shape, size,
body text, lines that start with a dot) is derived from the token, so any session that
learns a message's token (from BODY.PEEK[HEADER.FIELDS (X-STRESS-ID)], APPENDUID or POP3
TOP) can check every byte the server serves for it without shared state.

  token_for(run, client, n) -> str          e.g. "r1a2b.c3.17"
  message_for(token) -> Message             cached; .raw .header .body .parts .shape ...

Shapes: plain text/plain; multipart/mixed (text + base64 attachment); multipart/
alternative (text + html). Some bodies hold lines that start with "." or are a lone "."
(SMTP and POP3 dot-stuffing, RFC 5321 §4.5.2, RFC 1939 §3) and some are ~30 KB.
"""

import base64
import functools
import hashlib
import random
from dataclasses import dataclass, field

STRESS_HEADER = "X-Stress-Id"
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
         "zulu").split()


@dataclass
class Part:
    """One MIME body part: its header block (ends with the blank line) and content (the
    bytes between that blank line and the CRLF that belongs to the next boundary)."""
    mime: bytes
    content: bytes
    ctype: str
    subtype: str


@dataclass
class Message:
    token: str
    raw: bytes
    header: bytes          # header block including the blank line (BODY[HEADER])
    body: bytes            # BODY[TEXT]
    shape: str             # "plain" | "mixed" | "alternative"
    subject: str
    message_id: str
    parts: list = field(default_factory=list)   # [Part]; one part for "plain"

    @property
    def ctype(self):
        return ("TEXT", "PLAIN") if self.shape == "plain" else ("MULTIPART", self.shape.upper())


def token_for(run, client, n):
    """A token unique within the run: run id, client ("a3": APPENDs of client 3, "s3":
    its SMTP deliveries), per-client counter."""
    return f"{run}.{client}.{n}"


def _text_lines(rng, count):
    lines = []
    for _ in range(count):
        r = rng.random()
        if r < 0.04:
            lines.append(".")                       # a lone dot: stuffed on the wire
        elif r < 0.10:
            lines.append("." + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))))
        elif r < 0.13:
            lines.append("")
        else:
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))))
    return lines


def _crlf(lines):
    return "".join(line + "\r\n" for line in lines).encode()


@functools.lru_cache(maxsize=4096)
def message_for(token):
    """The message named by token (deterministic: same token, same bytes)."""
    # The shape depends on the token without its run id: the same seed gives the same
    # messages in every run, while tokens stay unique on a server used for many runs.
    stem = token.split(".", 1)[-1]
    seed = int.from_bytes(hashlib.sha256(stem.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    shape = rng.choice(("plain", "plain", "mixed", "alternative"))
    nlines = rng.randint(2, 40) if rng.random() < 0.9 else rng.randint(300, 500)
    subject = f"stress {token}"
    message_id = f"<{token}@stress.example.test>"
    head = [
        "From: Stress Tester <stress@example.org>",
        "To: Stress List <stress-list@example.test>",
        f"Subject: {subject}",
        "Date: Mon, 07 Dec 2026 10:00:00 +0000",
        f"Message-ID: {message_id}",
        f"{STRESS_HEADER}: {token}",
        "MIME-Version: 1.0",
    ]
    text = _crlf(_text_lines(rng, nlines))
    if shape == "plain":
        head.append("Content-Type: text/plain; charset=us-ascii")
        header = _crlf(head + [""])
        body = text
        parts = [Part(b"", body, "TEXT", "PLAIN")]
    else:
        boundary = f"=_b_{token}"
        head.append(f'Content-Type: multipart/{shape}; boundary="{boundary}"')
        header = _crlf(head + [""])
        if shape == "mixed":
            blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(10, 600)))
            b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n").rstrip(b"\r\n")
            parts = [
                Part(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n", text.rstrip(b"\r\n"),
                     "TEXT", "PLAIN"),
                Part(b"Content-Type: application/octet-stream\r\n"
                     b"Content-Transfer-Encoding: base64\r\n"
                     b"Content-Disposition: attachment; filename=\"blob.bin\"\r\n\r\n",
                     b64, "APPLICATION", "OCTET-STREAM"),
            ]
        else:
            html = b"<html><body><p>" + text.replace(b"\r\n", b"<br>\r\n") + b"</p></body></html>"
            parts = [
                Part(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n", text.rstrip(b"\r\n"),
                     "TEXT", "PLAIN"),
                Part(b"Content-Type: text/html; charset=us-ascii\r\n\r\n", html, "TEXT", "HTML"),
            ]
        # RFC 2046 §5.1.1: the CRLF before a boundary line belongs to the boundary.
        chunks = [b"This is a multi-part message in MIME format.\r\n"]
        for p in parts:
            chunks.append(f"--{boundary}\r\n".encode() + p.mime + p.content + b"\r\n")
        chunks.append(f"--{boundary}--\r\n".encode())
        body = b"".join(chunks)
    return Message(token=token, raw=header + body, header=header, body=body, shape=shape,
                   subject=subject, message_id=message_id, parts=parts)


def section_bytes(msg, section):
    """Expected bytes of BODY[section] (upper-case section text, e.g. "TEXT", "1",
    "2.MIME", "HEADER") of a message as the tester appended it; None if not derivable."""
    if section == "":
        return msg.raw
    if section == "HEADER":
        return msg.header
    if section == "TEXT":
        return msg.body
    if section.startswith("HEADER.FIELDS"):
        return None
    num, _, rest = section.partition(".")
    if not num.isdigit():
        return None
    i = int(num) - 1
    if not 0 <= i < len(msg.parts):
        return None
    if msg.shape == "plain":
        # RFC 3501 §6.4.5: a non-multipart message has part 1 = its body.
        return msg.body if rest == "" else None
    part = msg.parts[i]
    if rest == "":
        return part.content
    if rest == "MIME":
        return part.mime
    return None
