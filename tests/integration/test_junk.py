"""Junk delivery (issue 13): a message marked as spam goes to the user's Junk mailbox
(special-use \\Junk) instead of INBOX: by a header (junk.header, "X-Spam: Yes" as rspamd's
milter adds it), or by a milter's quarantine decision with junk.quarantine = yes (else
the message goes to the hold queue). Checked over IMAP with imaplib."""
import imaplib
import re

import pytest

from milter_util import Rspamd
from tern_util import maildir_messages, send_mail, wait_for

GTUBE_ADD_HEADER = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_REJECT = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def counts(srv, user, pw):
    m = imaplib.IMAP4(srv.host, srv.ports["imap"])
    m.login(user, pw)
    typ, lines = m.list()
    listing = b"\n".join(lines)
    out = {}
    for box in ("INBOX", "Junk"):
        typ, data = m.status(box, "(MESSAGES)")
        out[box] = int(data[0].split(b"MESSAGES ")[1].rstrip(b")")) if typ == "OK" else None
    m.logout()
    return out, listing


def test_spam_header_goes_to_junk(tern_factory):
    srv = tern_factory()
    assert send_mail(srv, "a@remote.example", "alice@example.test", "normal mail\n")[0] == 250
    msg_spam = ("From: s@remote.example\r\nTo: alice@example.test\r\nSubject: buy\r\n"
                "X-Spam: yes\r\n\r\ncheap stuff\r\n")
    import smtplib
    with smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=30) as s:
        s.sendmail("s@remote.example", ["alice@example.test"], msg_spam.encode())
    srv.wait_log(r"spam \(X-Spam: Yes\): local copies go to Junk")
    got, listing = counts(srv, "alice@example.test", "alicepw")
    assert got == {"INBOX": 1, "Junk": 1}, got
    assert b"\\Junk" in listing and b"Junk" in listing, listing


@pytest.fixture(scope="module")
def rspamd_quarantine():
    r = Rspamd(quarantine_on_reject=True)
    yield r
    r.close()


def test_rspamd_add_header_and_quarantine(tern_factory, rspamd_quarantine):
    srv = tern_factory({"smtp.milters": rspamd_quarantine.address, "junk.quarantine": "yes"})
    # rspamd's "add header" action: X-Spam: Yes, so Junk
    assert send_mail(srv, "a@remote.example", "alice@example.test",
                     f"{GTUBE_ADD_HEADER}\n")[0] == 250
    # its reject, turned into a quarantine (quarantine_on_reject): Junk as well
    assert send_mail(srv, "a@remote.example", "alice@example.test",
                     f"{GTUBE_REJECT}\n")[0] == 250
    srv.wait_log(r"spam \(milter quarantine\): local copies go to Junk")
    assert send_mail(srv, "a@remote.example", "alice@example.test", "just a note\n")[0] == 250
    wait_for(lambda: counts(srv, "alice@example.test", "alicepw")[0] == {"INBOX": 1, "Junk": 2},
             what="two in Junk, one in INBOX")
    # without junk.quarantine, a quarantine is the hold queue
    srv2 = tern_factory({"smtp.milters": rspamd_quarantine.address})
    assert send_mail(srv2, "a@remote.example", "bob@example.test", f"{GTUBE_REJECT}\n")[0] == 250
    srv2.wait_log(r"milter: hold: ")
    out = srv2.cli("queue", "list").stdout
    assert "bob@example.test" in out and re.search(r"^[0-9A-F]+!", out, re.M), out  # ! = hold
    assert maildir_messages(srv2.maildir("bob@example.test")) == []
