"""
test_imap_clients.py - tern's IMAP server driven by real clients: Python imaplib (login,
select, fetch, store, search, append, copy, move, expunge, IDLE over a raw socket with
delivery by SMTP), curl imap:// and imaps://, and mbsync (sync both ways, then a resync
that changes nothing).
"""

import imaplib
import os
import re
import shutil
import subprocess
import time

import pytest

from test_imap_lib import (Client, converse, deliver_file, fresh_user, imap_client,
                           imaplib_login, read_literal_reply, sample_message, wire)
from tern_util import IO_TIMEOUT, send_mail

MULTIPART = (
    "From: \"Ann Example\" <ann@example.org>\n"
    "To: alice@example.test, Group: g1@example.org, g2@example.org;\n"
    "Subject: report\n"
    "Date: Wed, 25 Nov 2026 08:00:00 +0000\n"
    "Message-ID: <mp1@example.org>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
    "\n"
    "preamble\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "plain text\n"
    "--inner\n"
    "Content-Type: text/html; charset=utf-8\n"
    "\n"
    "<b>html</b>\n"
    "--inner--\n"
    "--outer\n"
    "Content-Type: application/octet-stream; name=\"data.bin\"\n"
    "Content-Disposition: attachment; filename=\"data.bin\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAECAw==\n"
    "--outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: inner@example.org\n"
    "Subject: forwarded\n"
    "\n"
    "inner body\n"
    "--outer--\n")


def test_imaplib_select_fetch_store_search_expunge(tern):
    msgs = [sample_message(1, "alpha"), sample_message(2, "beta"), sample_message(3, "gamma")]
    user, pw = fresh_user(tern, "lib", msgs)
    m = imaplib_login(tern, user, pw)
    typ, data = m.select("INBOX")
    assert typ == "OK" and data == [b"3"]
    typ, data = m.fetch("1:3", "(UID FLAGS RFC822.SIZE)")
    assert typ == "OK" and len(data) == 3
    for i, d in enumerate(data):
        assert re.search(rb"RFC822\.SIZE %d" % len(wire(msgs[i])), d), d
    typ, data = m.fetch("2", "(RFC822)")
    assert data[0][1] == wire(msgs[1])
    typ, data = m.fetch("3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"Subject: gamma\r\n\r\n"
    typ, data = m.search(None, "SUBJECT", "beta")
    assert data == [b"2"]
    typ, data = m.search(None, "SEEN")
    assert data == [b"2"]  # the RFC822 fetch set \Seen
    typ, data = m.search(None, "OR", "SUBJECT", "alpha", "SUBJECT", "gamma")
    assert data == [b"1 3"]
    typ, data = m.search(None, "NOT", "SEEN", "LARGER", "10")
    assert data == [b"1 3"]
    assert m.search(None, "SENTON", "25-Nov-2026")[1] == [b"1 2 3"]
    assert m.search(None, "SENTBEFORE", "25-Nov-2026")[1] == [b""]
    assert m.search(None, "SENTSINCE", "26-Nov-2026")[1] == [b""]
    assert m.search(None, "SINCE", "1-Jan-2020")[1] == [b"1 2 3"]
    assert m.search(None, "BEFORE", "1-Jan-2020")[1] == [b""]
    assert m.search(None, "2:3", "NOT", "UID", "1")[1] == [b"2 3"]
    assert m.search(None, "HEADER", "Message-Id", "example.org", "BODY", "second")[1] == [
        b"1 2 3"]
    assert m.search(None, "TEXT", "gamma")[1] == [b"3"]
    assert m.search(None, "CHARSET", "UTF-8", "FROM", "sender")[1] == [b"1 2 3"]
    typ, data = m.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    assert len(uids) == 3
    typ, data = m.store("1", "+FLAGS", "(\\Deleted \\Flagged)")
    assert typ == "OK" and b"\\Deleted" in data[0] and b"\\Flagged" in data[0]
    typ, data = m.expunge()
    assert typ == "OK" and data == [b"1"]
    typ, data = m.search(None, "ALL")
    assert data == [b"1 2"]
    typ, data = m.uid("FETCH", uids[2].decode(), "(BODY.PEEK[TEXT])")
    assert data[0][1] == b"Hello 3.\r\nsecond line\r\n"
    m.close()
    m.logout()


def test_imaplib_append_copy_move_status_list(tern):
    user, pw = fresh_user(tern, "app")
    m = imaplib_login(tern, user, pw)
    msg = wire(sample_message(7, "appended"))
    typ, data = m.append("INBOX", "(\\Seen $Label1)", imaplib.Time2Internaldate(time.time()), msg)
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", data[0]), data
    typ, data = m.create("Work/Projects")
    assert typ == "OK"
    typ, data = m.list()
    names = b"\n".join(data)
    assert b'"Work/Projects"' in names and b'"INBOX"' in names
    assert re.search(rb'\([^)]*\\HasChildren[^)]*\) "/" "Work"', names), names
    typ, data = m.select("INBOX")
    assert data == [b"1"]
    typ, data = m.fetch("1", "(FLAGS BODY[])")
    assert b"$Label1" in data[0][0] and b"\\Seen" in data[0][0]
    assert data[0][1] == msg
    typ, data = m.copy("1", "Work/Projects")
    assert typ == "OK" and re.match(rb"\[COPYUID \d+ 1 1\]", data[0]), data
    typ, data = m.status("Work/Projects", "(MESSAGES UIDNEXT UNSEEN)")
    assert re.search(rb"MESSAGES 1 UIDNEXT 2 UNSEEN 0", data[0]), data
    typ, data = m._simple_command("MOVE", "1", "Archive")
    assert typ == "OK"
    typ, data = m.status("Archive", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0]
    typ, data = m.search(None, "ALL")
    assert data == [b""]
    typ, data = m.append("Nope", None, None, msg)
    assert typ == "NO"
    typ, data = m.rename("Work/Projects", "Done")
    assert typ == "OK"
    typ, data = m.delete("Done")
    assert typ == "OK"
    typ, data = m.subscribe("Archive")
    typ, data = m.lsub()
    assert any(b'"Archive"' in d for d in data if d)
    m.logout()


def test_fetch_bodystructure_envelope_and_sections(tern):
    user, pw = fresh_user(tern, "mime", [MULTIPART])
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK"), ("b SELECT INBOX", r"^b OK")])
    c.send("c FETCH 1 (BODYSTRUCTURE ENVELOPE)")
    got = read_literal_reply(c, "c").decode()
    assert '(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 0 NIL NIL NIL NIL)' in got
    assert '"alternative" ("boundary" "inner") NIL NIL NIL)' in got
    assert ('("application" "octet-stream" ("name" "data.bin") NIL NIL "base64" 8 NIL '
            '("attachment" ("filename" "data.bin")) NIL NIL)') in got
    assert '("message" "rfc822" NIL NIL NIL "7bit"' in got
    assert '"mixed" ("boundary" "outer") NIL NIL NIL)' in got
    assert ('ENVELOPE ("Wed, 25 Nov 2026 08:00:00 +0000" "report" (("Ann Example" NIL "ann" '
            '"example.org"))') in got
    assert ('((NIL NIL "alice" "example.test")(NIL NIL "Group" NIL)(NIL NIL "g1" '
            '"example.org")(NIL NIL "g2" "example.org")(NIL NIL NIL NIL))') in got
    assert got.rstrip().endswith("c OK Fetch completed.")
    # the cached copy answers the second time the same way
    c.send("c2 FETCH 1 (BODYSTRUCTURE ENVELOPE)")
    assert read_literal_reply(c, "c2").decode().replace("c2 OK", "c OK") == got
    c.send("d FETCH 1 (BODY.PEEK[1.2] BODY.PEEK[2.MIME] BODY.PEEK[3.HEADER] BODY.PEEK[3.1] "
           "BODY.PEEK[1.1]<2.3>)")
    got = read_literal_reply(c, "d")
    assert b"BODY[1.2] {11}\r\n<b>html</b>" in got
    assert (b'BODY[2.MIME] {%d}\r\n' % len(wire(
        'Content-Type: application/octet-stream; name="data.bin"\nContent-Disposition: '
        'attachment; filename="data.bin"\nContent-Transfer-Encoding: base64\n\n'))) in got
    assert b"BODY[3.HEADER] {47}\r\nFrom: inner@example.org\r\nSubject: forwarded\r\n\r\n" in got
    assert b"BODY[3.1] {10}\r\ninner body" in got
    assert b"BODY[1.1]<2> {3}\r\nain" in got
    c.send("e FETCH 1 (BODY[9] FLAGS)")
    got = read_literal_reply(c, "e")
    assert b"BODY[9] NIL" in got and b"\\Seen" in got
    converse(c, [("f LOGOUT", r"^f OK")])


def test_idle_sees_smtp_delivery(tern):
    user, pw = fresh_user(tern, "idle")
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK"),
                 ("b SELECT INBOX", r"^b OK"),
                 ("c IDLE", r"^\+ ")])
    code, _ = send_mail(tern, "sender@example.org", user, "hello idle")
    assert code == 250
    converse(c, [(None, r"^\* 1 EXISTS\r$")])
    converse(c, [("DONE", r"^c OK Idle completed\.\r$")])
    # a flag change by another session shows up at NOOP
    m = imaplib_login(tern, user, pw)
    m.select("INBOX")
    m.store("1", "+FLAGS", "(\\Flagged)")
    m.logout()
    got = converse(c, [("d NOOP", r"^d OK")])[0]
    assert re.search(r"^\* 1 FETCH \(.*\\Flagged", got, re.M), got
    converse(c, [("e LOGOUT", r"^e OK")])


def test_login_disabled_without_tls_for_remote_policy(tern_factory):
    srv = tern_factory({"auth.allow_plaintext": "tls"})
    c = imap_client(srv)
    caps = converse(c, [("a CAPABILITY", r"^a OK")])[0]
    assert "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
    converse(c, [("b LOGIN alice@example.test alicepw", r"^b NO \[PRIVACYREQUIRED\]")])
    c.close()
    m = imaplib_login(srv, "alice@example.test", "alicepw", tls=True)
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_curl_imap_and_imaps(tern):
    user, pw = fresh_user(tern, "curl", [sample_message(1, "via curl")])
    base = f"imap://{tern.host}:{tern.ports['imap']}"
    r = subprocess.run(["curl", "-s", "--max-time", "30", "-u", f"{user}:{pw}", f"{base}/"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and '"INBOX"' in r.stdout, r
    r = subprocess.run(["curl", "-s", "--max-time", "30", "-u", f"{user}:{pw}",
                        f"{base}/INBOX;UID=1"], capture_output=True, timeout=60)
    assert r.returncode == 0 and b"Subject: via curl" in r.stdout, r
    r = subprocess.run(["curl", "-s", "-k", "--max-time", "30", "-u", f"{user}:{pw}",
                        f"imaps://{tern.host}:{tern.ports['imaps']}/INBOX?SUBJECT%20curl"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SEARCH 1" in r.stdout, r
    r = subprocess.run(["curl", "-s", "--ssl-reqd", "-k", "--max-time", "30", "-u",
                        f"{user}:{pw}", f"{base}/INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and b"Subject: via curl" in r.stdout, r


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")
def test_mbsync_both_ways_and_noop_resync(tern, tmp_path):
    user, pw = fresh_user(tern, "mbs", [sample_message(1, "server one"),
                                         sample_message(2, "server two")])
    local = tmp_path / "local"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""IMAPAccount tern
Host {tern.host}
Port {tern.ports['imap']}
User {user}
Pass {pw}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account tern

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel c
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
SyncState *
""")

    def run():
        r = subprocess.run(["mbsync", "-c", str(rc), "-V", "c"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    run()
    pulled = list((local / "INBOX" / "cur").iterdir()) + list((local / "INBOX" / "new").iterdir())
    assert len(pulled) == 2
    # a local message goes up
    (local / "INBOX" / "new" / "1.local.test").write_bytes(
        wire(sample_message(3, "from local")))
    run()
    m = imaplib_login(tern, user, pw)
    m.select("INBOX")
    typ, data = m.search(None, "SUBJECT", '"from local"')
    assert data == [b"3"]
    m.logout()
    out = run()
    # the resync changes nothing: three messages on each side, no duplicates
    assert "near side: 3 messages" in out and "far side: 3 messages" in out, out
    local_files = list((local / "INBOX" / "cur").iterdir()) + list(
        (local / "INBOX" / "new").iterdir())
    assert len(local_files) == 3
    m = imaplib_login(tern, user, pw)
    assert m.select("INBOX") == ("OK", [b"3"])
    m.logout()


def test_append_big_message_round_trip(tern):
    """A big APPEND goes to a spill file, not memory; the stored message is byte-exact."""
    user, pw = fresh_user(tern, "bigapp")
    body = b"".join(b"line %06d of a big appended message\r\n" % i for i in range(80000))
    msg = b"From: a@example.org\r\nSubject: big append\r\n\r\n" + body
    m = imaplib_login(tern, user, pw)
    typ, data = m.append("INBOX", None, None, msg)
    assert typ == "OK", data
    m.select("INBOX")
    typ, data = m.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
    assert data[0][1] == msg
    assert b"RFC822.SIZE %d" % len(msg) in data[0][0]
    m.logout()
