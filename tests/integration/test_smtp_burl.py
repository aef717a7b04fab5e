"""
test_smtp_burl.py - BURL (RFC 4468) on the submission services, against the real binary,
with the process model on (the SMTP session runs in a chrooted login process and a mail
worker reads the URL) and off (master_process = no: read in place): RFC 4468 §7's
examples replayed with our names (a whole saved message by URL; new headers by BDAT and
the saved body by BURL), BURL mixed with BDAT, and every refusal: before AUTH, on port 25,
a URL without URLAUTH, for another access identifier, a forged or reset token, past the
message size limit. Driven with smtplib (docmd and raw BDAT: no client library knows
BURL) after a real AUTH, and imaplib/raw IMAP for the URLAUTH side.
"""

import imaplib
import re
import smtplib
from urllib.parse import quote

import pytest

from tern_util import IO_TIMEOUT
from test_imap_lib import converse, fresh_user, imap_client, imaplib_login, wire

DRAFT = wire(
    "From: Harry <harry@example.test>\n"
    "To: Ron <ron@example.test>\n"
    "Subject: Quidditch practice\n"
    "MIME-Version: 1.0\n"
    "\n"
    "Practice is at seven, bring your broom.\n")


@pytest.fixture(scope="module", params=["yes", "no"], ids=["master", "single"])
def srv(request, tern_module_factory):
    return tern_module_factory({"master_process": request.param,
                                "smtp.max_message_size": "100000"})


def imap_login(srv, user, pw):
    c = imap_client(srv)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def save_draft(srv, user, pw, data=DRAFT):
    """APPEND the draft to Outbox; the rump URL base of it (imap://user@host/Outbox;...)."""
    c = imap_login(srv, user, pw)
    converse(c, [("b CREATE Outbox", r"^b (OK|NO)")])
    c.send(f"c APPEND Outbox (\\Seen) {{{len(data)}+}}")
    c.send_raw(data + b"\r\n")
    got = c.expect(r"^c (OK|NO|BAD)")
    uidv, uid = re.search(r"\[APPENDUID (\d+) (\d+)\]", got).groups()
    c.close()
    return f"imap://{quote(user, safe='')}@mail.example.test/Outbox;uidvalidity={uidv}/;uid={uid}"


def genurlauth(srv, user, pw, *rumps):
    c = imap_login(srv, user, pw)
    args = " ".join(f'"{r}" INTERNAL' for r in rumps)
    got = converse(c, [(f"g GENURLAUTH {args}", r"^g (OK|NO|BAD)")])[0]
    assert re.search(r"^g OK", got, re.M), got
    c.close()
    return re.findall(r'"([^"]*)"', re.search(r"^\* GENURLAUTH (.*)\r$", got, re.M).group(1))


def submission(srv, user, pw, port="submission"):
    s = smtplib.SMTP(srv.host, srv.ports[port], local_hostname="potter.example.test",
                     timeout=IO_TIMEOUT)
    s.ehlo()
    s.login(user, pw)
    s.ehlo()  # RFC 4468 §3: BURL imap is offered once authenticated
    return s


def bdat(s, data, last=False):
    s.send(b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data)
    return s.getreply()


def inbox_bodies(srv, user, pw):
    m = imaplib_login(srv, user, pw)
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(BODY.PEEK[])")
    m.logout()
    return [item[1] for item in data if isinstance(item, tuple)]


def test_ehlo_offers_burl_after_auth(srv):
    harry, hpw = fresh_user(srv, "harry")
    s = smtplib.SMTP(srv.host, srv.ports["submission"], timeout=IO_TIMEOUT)
    s.ehlo()
    assert not s.has_extn("burl")
    code, text = s.docmd("BURL", "imap://x@h/INBOX/;UID=1 LAST")
    assert code == 530, (code, text)
    s.login(harry, hpw)
    s.ehlo()
    assert s.esmtp_features.get("burl", "").strip().lower() == "imap", s.esmtp_features
    s.quit()
    # port 25 has no BURL at all
    s = smtplib.SMTP(srv.host, srv.ports["smtp"], timeout=IO_TIMEOUT)
    s.ehlo()
    assert not s.has_extn("burl")
    assert s.docmd("BURL", "imap://x@h/INBOX/;UID=1 LAST")[0] == 502
    s.quit()


def test_rfc4468_whole_message(srv):
    """RFC 4468 §7, first example: the saved message is the whole message."""
    harry, hpw = fresh_user(srv, "harry")
    ron, rpw = fresh_user(srv, "ron")
    base = save_draft(srv, harry, hpw)
    (url,) = genurlauth(srv, harry, hpw, f"{base};urlauth=submit+{quote(harry, safe='')}")
    s = submission(srv, harry, hpw)
    assert s.mail(harry)[0] == 250
    assert s.rcpt(ron)[0] == 250
    code, text = s.docmd("BURL", f"{url} LAST")
    assert code == 250, (code, text)
    s.quit()
    (body,) = inbox_bodies(srv, ron, rpw)
    assert body.endswith(DRAFT), body  # after our trace headers


def test_rfc4468_bdat_then_burl(srv):
    """RFC 4468 §7, second example: new headers by BDAT, the saved body by BURL, with a
    BURL and a BDAT more to show they mix in any order."""
    harry, hpw = fresh_user(srv, "harry")
    ron, rpw = fresh_user(srv, "ron")
    base = save_draft(srv, harry, hpw)
    qh = quote(harry, safe="")
    text_url, hdr_url = genurlauth(srv, harry, hpw, f"{base}/;section=TEXT;urlauth=submit+{qh}",
                                   f"{base}/;section=HEADER.FIELDS%20(SUBJECT);urlauth=submit+{qh}")
    s = submission(srv, harry, hpw)
    assert s.mail(harry)[0] == 250
    assert s.rcpt(ron)[0] == 250
    head = f"From: Harry <{harry}>\r\nTo: Ron <{ron}>\r\n".encode()
    assert bdat(s, head)[0] == 250
    code, text = s.docmd("BURL", hdr_url)  # "Subject: ...\r\n\r\n"
    assert code == 250, (code, text)
    code, text = s.docmd("BURL", text_url)
    assert code == 250, (code, text)
    code, text = bdat(s, b"-- \r\nHarry\r\n", last=True)
    assert code == 250, (code, text)
    s.quit()
    (body,) = inbox_bodies(srv, ron, rpw)
    want = head + b"Subject: Quidditch practice\r\n\r\n" + \
        b"Practice is at seven, bring your broom.\r\n" + b"-- \r\nHarry\r\n"
    assert body.endswith(want), body


def test_burl_refusals(srv):
    harry, hpw = fresh_user(srv, "harry")
    ron, rpw = fresh_user(srv, "ron")
    base = save_draft(srv, harry, hpw)
    qh, qr = quote(harry, safe=""), quote(ron, safe="")
    good, user_url, ron_url = genurlauth(srv, harry, hpw, f"{base};urlauth=submit+{qh}",
                                         f"{base};urlauth=user+{qh}",
                                         f"{base};urlauth=submit+{qr}")
    forged = good[:-1] + ("0" if good[-1] != "0" else "1")
    refused = [base,                               # no URLAUTH: never, even one's own
               user_url,                           # user+ is for IMAP sessions
               ron_url,                            # submit+ron: harry is not ron
               forged,
               base.replace("uid=", "uid=9") + f";urlauth=submit+{qh}:internal:" + "0" * 40]
    s = submission(srv, harry, hpw)
    for url in refused:
        assert s.mail(harry)[0] == 250
        assert s.rcpt(ron)[0] == 250
        code, text = s.docmd("BURL", f"{url} LAST")
        assert (code, text[:5]) == (554, b"5.6.6"), (url, code, text)
        # the transaction is over: a BDAT now needs MAIL
        assert bdat(s, b"x", last=True)[0] == 503
    assert s.docmd("BURL", "http://example.test/x LAST")[0] == 503  # no MAIL yet
    assert s.mail(harry)[0] == 250
    assert s.rcpt(ron)[0] == 250
    assert s.docmd("BURL", "http://example.test/x LAST")[0] == 554
    assert s.docmd("BURL", f"{good} LAST NOW")[0] == 501
    s.rset()
    # ron's session may not spend harry's submit+harry URL either
    t = submission(srv, ron, rpw)
    assert t.mail(ron)[0] == 250
    assert t.rcpt(harry)[0] == 250
    assert t.docmd("BURL", f"{good} LAST")[0] == 554
    t.quit()
    # RESETKEY: the URL stops working at once
    c = imap_login(srv, harry, hpw)
    converse(c, [("r RESETKEY Outbox", r"^r OK")])
    c.close()
    assert s.mail(harry)[0] == 250
    assert s.rcpt(ron)[0] == 250
    assert s.docmd("BURL", f"{good} LAST")[0] == 554
    s.quit()
    assert inbox_bodies(srv, ron, rpw) == []


def test_burl_size_limit(srv):
    """The message size limit counts BURL octets with BDAT's (smtp.max_message_size =
    100000 here): over it, 552 and the transaction ends."""
    harry, hpw = fresh_user(srv, "harry")
    ron, rpw = fresh_user(srv, "ron")
    big = DRAFT + b"".join(b"%05d padding padding padding padding padding\r\n" % i
                           for i in range(1200))
    base = save_draft(srv, harry, hpw, big)
    (url,) = genurlauth(srv, harry, hpw, f"{base};urlauth=submit+{quote(harry, safe='')}")
    s = submission(srv, harry, hpw)
    assert s.mail(harry)[0] == 250
    assert s.rcpt(ron)[0] == 250
    code, text = s.docmd("BURL", url)  # ~58 KB: fits
    assert code == 250, (code, text)
    code, text = s.docmd("BURL", f"{url} LAST")  # twice does not
    assert (code, text[:5]) == (552, b"5.3.4"), (code, text)
    assert bdat(s, b"x", last=True)[0] == 503
    s.quit()
    assert inbox_bodies(srv, ron, rpw) == []
