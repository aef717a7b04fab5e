"""
test_imap_urlauth.py - CATENATE (RFC 4469) and URLAUTH (RFC 4467) on the wire, against the
real binary: the RFC examples replayed with our names (RFC 4469 §6, RFC 4467 §9), BADURL
and TOOBIG, MULTIAPPEND's all-or-nothing with a bad URL, URL parts in the user's own
mailboxes only, GENURLAUTH/URLFETCH/RESETKEY with every access identifier, expiry,
a forged token, and imaplib driving the same commands.
"""

import imaplib
import re
from urllib.parse import quote

import pytest

from test_imap_lib import (converse, fresh_user, imap_client, imaplib_login, read_literal_reply,
                           wire)

DRAFT = wire(
    "From: Joe <joe@example.test>\n"
    "To: Fred <fred@example.test>\n"
    "Subject: draft with attachment\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="------------030308070208000400050907"\n'
    "\n"
    "--------------030308070208000400050907\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "Si vis pacem, para bellum.\n"
    "\n"
    "--------------030308070208000400050907\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAECAwQFBgcICQ==\n"
    "--------------030308070208000400050907--\n")


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def append_draft(c, box="Drafts", data=DRAFT):
    """APPEND data to box; (uidvalidity, uid) from APPENDUID."""
    c.send(f"ap APPEND {box} (\\Draft) {{{len(data)}+}}")
    c.send_raw(data + b"\r\n")
    got = c.expect(r"^ap (OK|NO|BAD)")
    m = re.search(r"\[APPENDUID (\d+) (\d+)\]", got)
    assert m, got
    return int(m.group(1)), int(m.group(2))


def fetch_body(c, box, uid, section=""):
    cmd(c, "sx", f"EXAMINE {box}")
    c.send(f"fb UID FETCH {uid} BODY.PEEK[{section}]")
    raw = read_literal_reply(c, "fb")
    assert b"fb OK" in raw, raw
    m = re.search(rb"\{(\d+)\}\r\n", raw)
    return raw[m.end():m.end() + int(m.group(1))]


def catenate(c, tag, box, parts, flags="(\\Seen \\Draft $MDNSent)"):
    """APPEND box flags CATENATE (parts) with synchronising literals for TEXT, as RFC 4469
    §6 shows; returns the tagged reply text."""
    head = f"{tag} APPEND {box} {flags} CATENATE ("
    pending = head
    for kind, value in parts:
        if kind == "URL":
            pending += f'URL "{value}" '
        else:
            c.send(pending + f"TEXT {{{len(value)}}}")
            got = c.expect(rf"^(\+ |{tag} (NO|BAD))")
            if not got.startswith("+"):
                return got
            c.send_raw(value)
            pending = " "
    c.send(pending.rstrip() + ")")
    return c.expect(rf"^{tag} (OK|NO|BAD)")


def test_capabilities_and_urlmech(tern):
    user, pw = fresh_user(tern, "ucap")
    c = login(tern, user, pw)
    caps = re.search(r"^\* CAPABILITY (.*)\r$", cmd(c, "b", "CAPABILITY"), re.M).group(1)
    assert "CATENATE" in caps.split() and "URLAUTH" in caps.split(), caps
    # RFC 4467 §6.1: a URLAUTH server tells its mechanisms when a mailbox is selected
    assert "* OK [URLMECH INTERNAL]" in cmd(c, "s", "SELECT INBOX")


# ---- CATENATE (RFC 4469) --------------------------------------------------------------------

def test_rfc4469_example(tern):
    """RFC 4469 §6: a forwarded draft made from the old draft's header and first part, new
    text, and the attachment by URL; the result is exactly those octets joined."""
    user, pw = fresh_user(tern, "ucat")
    c = login(tern, user, pw)
    uidv, uid = append_draft(c)
    base = f"/Drafts;UIDVALIDITY={uidv}/;UID={uid}"
    boundary = b"\r\n--------------030308070208000400050907\r\n"
    new_text = b"\r\n--------------030308070208000400050907\r\nContent-Type: text/plain\r\n\r\nmy own words\r\n"
    got = catenate(c, "A003", "Drafts", [
        ("URL", f"{base}/;section=HEADER"),
        ("TEXT", new_text),
        ("URL", f"{base}/;section=1.MIME"),
        ("URL", f"{base}/;section=1"),
        ("TEXT", boundary),
        ("URL", f"{base}/;section=2.MIME"),
        ("URL", f"{base}/;section=2"),
        ("TEXT", b"\r\n--------------030308070208000400050907--\r\n"),
    ])
    m = re.search(r"^A003 OK \[APPENDUID (\d+) (\d+)\]", got, re.M)
    assert m, got
    new_uid = int(m.group(2))
    header = fetch_body(c, "Drafts", uid, "HEADER")
    part1_mime = fetch_body(c, "Drafts", uid, "1.MIME")
    part1 = fetch_body(c, "Drafts", uid, "1")
    part2_mime = fetch_body(c, "Drafts", uid, "2.MIME")
    part2 = fetch_body(c, "Drafts", uid, "2")
    expected = (header + new_text + part1_mime + part1 + boundary + part2_mime + part2 +
                b"\r\n--------------030308070208000400050907--\r\n")
    assert fetch_body(c, "Drafts", new_uid) == expected
    # the flags of the command apply
    got = cmd(c, "f", f"UID FETCH {new_uid} FLAGS")
    assert "$MDNSent" in got and "\\Draft" in got, got


def test_catenate_absolute_url_and_partial(tern):
    user, pw = fresh_user(tern, "ucab")
    c = login(tern, user, pw)
    _, uid = append_draft(c, "INBOX")
    url = f"imap://{quote(user, safe='')}@mail.example.test/INBOX/;UID={uid}/;PARTIAL=0.4"
    got = catenate(c, "b", "INBOX", [("URL", url), ("TEXT", b": tail\r\n\r\nbody\r\n")])
    new_uid = re.search(r"APPENDUID \d+ (\d+)", got).group(1)
    assert fetch_body(c, "INBOX", new_uid) == b"From: tail\r\n\r\nbody\r\n"
    # RFC 5092: a UTF-8 mailbox name in a URL is the modified UTF-7 name IMAP uses
    cmd(c, "cr", 'CREATE "Entw&APw-rfe"')
    _, duid = append_draft(c, '"Entw&APw-rfe"')
    got = catenate(c, "u", "INBOX", [("URL", f"/Entw%C3%BCrfe/;UID={duid}/;section=1")])
    new_uid = re.search(r"APPENDUID \d+ (\d+)", got).group(1)
    assert fetch_body(c, "INBOX", new_uid) == fetch_body(c, '"Entw&APw-rfe"', duid, "1")


def test_catenate_spilled_text(tern):
    """A TEXT literal too big for memory goes to the spill file and is joined from there."""
    user, pw = fresh_user(tern, "uspl")
    c = login(tern, user, pw)
    _, uid = append_draft(c, "INBOX")
    big = b"".join(b"line %06d of a long text part\r\n" % i for i in range(12000))
    got = catenate(c, "s", "INBOX", [("URL", f"/INBOX/;UID={uid}/;section=HEADER"),
                                     ("TEXT", big)])
    new_uid = re.search(r"APPENDUID \d+ (\d+)", got).group(1)
    assert fetch_body(c, "INBOX", new_uid) == fetch_body(c, "INBOX", uid, "HEADER") + big


def test_catenate_badurl(tern):
    user, pw = fresh_user(tern, "ubad")
    other, opw = fresh_user(tern, "uoth")
    c = login(tern, user, pw)
    _, uid = append_draft(c, "INBOX")
    before = cmd(c, "s1", "STATUS INBOX (MESSAGES)")
    for url in (f"/INBOX/;UID={uid + 50}",                 # no such message
                f"/NoSuchBox/;UID={uid}",                  # no such mailbox
                f"/INBOX;UIDVALIDITY=1/;UID={uid}",         # UIDVALIDITY changed
                f"/INBOX/;UID={uid}/;section=9.9",          # no such part
                "http://example.test/x",                    # not an IMAP URL
                # another user's mailbox, without URLAUTH: never
                f"imap://{quote(other, safe='')}@mail.example.test/INBOX/;UID=1"):
        got = catenate(c, "c", "INBOX", [("TEXT", b"x\r\n"), ("URL", url)])
        assert re.search(r"^c NO \[BADURL [^\]]*\]", got, re.M), (url, got)
        assert url.split("]")[0][:40] in got
    assert cmd(c, "s2", "STATUS INBOX (MESSAGES)") == before.replace("s1 ", "s2 ")
    # a missing target mailbox answers [TRYCREATE] before any URL is looked at (RFC 3501
    # §6.3.11; the client creates it and retries with the same parts)
    got = catenate(c, "t", "NoSuchTarget", [("URL", f"/INBOX/;UID={uid + 50}")])
    assert re.search(r"^t NO \[TRYCREATE\]", got, re.M), got


def test_catenate_multiappend_all_or_nothing(tern):
    user, pw = fresh_user(tern, "umul")
    c = login(tern, user, pw)
    _, uid = append_draft(c, "INBOX")
    cmd(c, "cr", "CREATE Out")
    c.send(f'd APPEND Out CATENATE (URL "/INBOX/;UID={uid}/;section=HEADER" TEXT {{6+}}')
    c.send_raw(b"\r\nok\r\n")
    c.send(f') CATENATE (URL "/INBOX/;UID={uid + 9}")')
    got = c.expect(r"^d (OK|NO|BAD)")
    assert re.search(r"^d NO \[BADURL /INBOX/;UID=\d+\]", got, re.M), got
    assert "MESSAGES 0" in cmd(c, "st", "STATUS Out (MESSAGES)")
    # the same with a good second URL stores both, plain and CATENATE mixed
    c.send("e APPEND Out {3+}")
    c.send_raw(b"a\r\n")
    c.send(f' CATENATE (URL "/INBOX/;UID={uid}/;section=1")')
    got = c.expect(r"^e (OK|NO|BAD)")
    assert re.search(r"^e OK \[APPENDUID \d+ 1:2\]", got, re.M), got
    assert fetch_body(c, "Out", 2) == fetch_body(c, "INBOX", uid, "1")


def test_catenate_toobig_and_syntax(tern_factory):
    srv = tern_factory({"smtp.max_message_size": "2000"})
    user, pw = fresh_user(srv, "ubig")
    c = login(srv, user, pw)
    _, uid = append_draft(c, "INBOX")
    urls = [("URL", f"/INBOX/;UID={uid}")] * (2000 // len(DRAFT) + 1)
    got = catenate(c, "f", "INBOX", urls + [("TEXT", b"x" * 10)])
    assert re.search(r"^f NO \[TOOBIG\]", got, re.M), got
    got = catenate(c, "g", "INBOX", [("TEXT", b"y" * 1500), ("TEXT", b"z" * 1000)])
    assert re.search(r"^g NO \[TOOBIG\]", got, re.M), got
    # RFC 4469 §5 grammar: TEXT takes a literal; an empty list or unknown part is BAD
    assert re.search(r"^h BAD", cmd(c, "h", 'APPEND INBOX CATENATE (TEXT "quoted")'), re.M)
    assert re.search(r"^i BAD", cmd(c, "i", "APPEND INBOX CATENATE ()"), re.M)
    assert re.search(r"^j BAD", cmd(c, "j", 'APPEND INBOX CATENATE (FOO "x")'), re.M)


# ---- URLAUTH (RFC 4467) -------------------------------------------------------------------

def genurlauth(c, tag, *rumps):
    args = " ".join(f'"{r}" INTERNAL' for r in rumps)
    got = cmd(c, tag, f"GENURLAUTH {args}")
    assert re.search(rf"^{tag} OK", got, re.M), got
    line = re.search(r"^\* GENURLAUTH (.*)\r$", got, re.M).group(1)
    return re.findall(r'"([^"]*)"', line)


def urlfetch(c, tag, url):
    """The data of one URL, or None for NIL."""
    c.send(f'{tag} URLFETCH "{url}"')
    raw = read_literal_reply(c, tag)
    assert re.search(rb"^" + tag.encode() + rb" OK", raw, re.M), raw
    m = re.search(rb"^\* URLFETCH \"[^\"]*\" (NIL|\{(\d+)\}\r\n)", raw, re.M)
    assert m, raw
    if m.group(1) == b"NIL":
        return None
    return raw[m.end():m.end() + int(m.group(2))]


@pytest.fixture(scope="module")
def joe_fred(tern):
    """RFC 4467 §9's cast: joe owns a message, fred reads it."""
    joe, jpw = fresh_user(tern, "joe")
    fred, fpw = fresh_user(tern, "fred")
    c = login(tern, joe, jpw)
    uidv, uid = append_draft(c, "INBOX")
    c.close()
    return joe, jpw, fred, fpw, uidv, uid


def test_rfc4467_example(tern, joe_fred):
    joe, jpw, fred, fpw, uidv, uid = joe_fred
    qj, qf = quote(joe, safe=""), quote(fred, safe="")
    # (the RFC's section=1.2 is part 1 of our two-part draft: its text)
    base = f"imap://{qj}@mail.example.test/INBOX/;uid={uid}/;section=1"
    j = login(tern, joe, jpw)
    submit_url, user_url = genurlauth(j, "a775", f"{base};urlauth=submit+{qf}",
                                      f"{base};urlauth=user+{qf}")
    assert re.fullmatch(re.escape(f"{base};urlauth=submit+{qf}") + r":internal:[0-9a-f]{40}",
                        submit_url), submit_url
    assert re.fullmatch(re.escape(f"{base};urlauth=user+{qf}") + r":internal:[0-9a-f]{40}",
                        user_url), user_url
    # the same rump gives the same token while the key lives
    assert genurlauth(j, "a776", f"{base};urlauth=user+{qf}") == [user_url]
    f = login(tern, fred, fpw)
    assert urlfetch(f, "b5", user_url) == b"Si vis pacem, para bellum.\r\n"
    # "submit+fred" is for the submission server acting for fred, not fred's IMAP session
    assert urlfetch(f, "b6", submit_url) is None
    # joe is not fred: user+fred is fred's alone
    assert urlfetch(j, "b7", user_url) is None
    # a forged token, another section under the same token: NIL
    forged = user_url[:-1] + ("0" if user_url[-1] != "0" else "1")
    assert urlfetch(f, "b8", forged) is None
    assert urlfetch(f, "b9", user_url.replace("section=1;", "section=2;")) is None
    # RESETKEY INBOX: every URL made with the old key stops working
    got = cmd(j, "a31", "RESETKEY INBOX")
    assert re.search(r"^a31 OK \[URLMECH INTERNAL\]", got, re.M), got
    assert urlfetch(f, "b10", user_url) is None
    new_url = genurlauth(j, "a32", f"{base};urlauth=user+{qf}")[0]
    assert new_url != user_url
    assert urlfetch(f, "b11", new_url) == b"Si vis pacem, para bellum.\r\n"
    got = cmd(j, "a33", "RESETKEY")
    assert re.search(r"^a33 OK", got, re.M), got
    assert urlfetch(f, "b12", new_url) is None


def test_urlauth_access_and_expiry(tern, joe_fred):
    joe, jpw, fred, fpw, uidv, uid = joe_fred
    qj = quote(joe, safe="")
    base = f"imap://{qj}@mail.example.test/INBOX;UIDVALIDITY={uidv}/;UID={uid}"
    j = login(tern, joe, jpw)
    authuser, anon, expired, future = genurlauth(
        j, "g1", f"{base}/;SECTION=HEADER;URLAUTH=authuser", f"{base};URLAUTH=anonymous",
        f"{base};EXPIRE=2001-01-01T00:00:00Z;URLAUTH=authuser",
        f"{base};EXPIRE=2999-01-01T00:00:00+01:00;URLAUTH=authuser")
    f = login(tern, fred, fpw)
    assert urlfetch(f, "h1", authuser).startswith(b"From: Joe")
    assert urlfetch(f, "h2", anon) == fetch_body(j, "INBOX", uid)
    assert urlfetch(f, "h3", expired) is None
    assert urlfetch(f, "h4", future) == fetch_body(j, "INBOX", uid)
    # a URL without URLAUTH is never fetched by URLFETCH
    assert urlfetch(f, "h5", base) is None
    # GENURLAUTH: only for the user's own mailboxes, only rump URLs, INTERNAL only
    other = base.replace(qj, quote(fred, safe=""))
    got = cmd(j, "g2", f'GENURLAUTH "{other};URLAUTH=authuser" INTERNAL')
    assert re.search(r"^g2 NO \[BADURL ", got, re.M), got
    got = cmd(j, "g3", f'GENURLAUTH "{authuser}" INTERNAL')
    assert re.search(r"^g3 NO \[BADURL ", got, re.M), got
    got = cmd(j, "g4", f'GENURLAUTH "{base};URLAUTH=authuser" XSAMPLE')
    assert re.search(r"^g4 NO", got, re.M), got
    got = cmd(j, "g5", f'GENURLAUTH "{base.replace("INBOX", "Nope")};URLAUTH=authuser" INTERNAL')
    assert re.search(r"^g5 NO", got, re.M), got
    # CATENATE takes a URLAUTH URL of another user's message (RFC 4469 §5)
    got = catenate(f, "c1", "INBOX", [("URL", authuser), ("TEXT", b"\r\nhello\r\n")])
    assert re.search(r"^c1 OK", got, re.M), got


def test_urlauth_with_imaplib(tern, joe_fred):
    """imaplib has no URLAUTH methods; its generic command path carries them."""
    joe, jpw, fred, fpw, uidv, uid = joe_fred
    base = f"imap://{quote(joe, safe='')}@mail.example.test/INBOX/;UID={uid}/;SECTION=1"
    for name in ("GENURLAUTH", "URLFETCH", "RESETKEY"):
        imaplib.Commands.setdefault(name, ("AUTH", "SELECTED"))
    m = imaplib_login(tern, joe, jpw)
    typ, data = m._simple_command("GENURLAUTH", f'"{base};URLAUTH=authuser"', "INTERNAL")
    assert typ == "OK", data
    url = m.untagged_responses["GENURLAUTH"][-1].decode().strip('"')
    m.logout()
    m = imaplib_login(tern, fred, fpw)
    typ, data = m._simple_command("URLFETCH", f'"{url}"')
    assert typ == "OK", data
    got = m.untagged_responses["URLFETCH"]
    assert got[0][1] == b"Si vis pacem, para bellum.\r\n", got
    m.logout()
