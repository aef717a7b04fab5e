"""
test_imap_i18n.py - I18NLEVEL=1 (RFC 5255): i;unicode-casemap (RFC 5051) is the default
comparator of SEARCH and SORT; the COMPARATOR command (RFC 5255 §4.7-4.9) shows and
switches it (i;ascii-casemap), with its wildcards, "default" and [BADCOMPARATOR].
"""

import re

from test_imap_lib import converse, fresh_user, imap_client, imaplib_login


def msg(subject, body="body\n"):
    return (f"From: a@example.org\nTo: b@example.org\nSubject: {subject}\n"
            f"Date: Wed, 25 Nov 2026 09:00:00 +0000\nMIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            f"{body}")


# 1..4: accented capitals and small letters, a compatibility form (full-width), a digraph
MAILBOX = [
    msg("=?utf-8?q?=C3=89a?=", body="un \u00e9t\u00e9 chaud\n"),
    msg("=?utf-8?q?=C3=A9b?=", body="\uff41\uff42\uff43 full width\n"),
    msg("=?utf-8?q?=C3=89c?=", body="E\u0301TE\u0301 decomposed\n"),
    msg("plain", body="nothing here\n"),
]


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def literal_cmd(c, tag, head, text, tail=""):
    """A command with one UTF-8 literal argument (LITERAL+)."""
    data = text.encode()
    c.send(f"{tag} {head} {{{len(data)}+}}")
    c.send_raw(data + (tail.encode() if tail else b"") + b"\r\n")
    return c.read_until(rf"^{tag} (OK|NO|BAD)")


def search(c, tag, key, text):
    got = literal_cmd(c, tag, f"UID SEARCH CHARSET UTF-8 {key}", text)
    assert re.search(rf"^{tag} OK", got, re.M), got
    return [int(x) for x in re.search(r"^\* SEARCH(.*)\r$", got, re.M).group(1).split()]


def sort(c, tag):
    got = cmd(c, tag, "UID SORT (SUBJECT) UTF-8 ALL")
    assert re.search(rf"^{tag} OK", got, re.M), got
    return [int(x) for x in re.search(r"^\* SORT(.*)\r$", got, re.M).group(1).split()]


def test_capability_and_default(tern):
    user, pw = fresh_user(tern, "i18ncap")
    m = imaplib_login(tern, user, pw)
    assert "I18NLEVEL=1" in m.capability()[1][0].decode().split()
    m.logout()
    c = login(tern, user, pw)
    got = cmd(c, "c1", "COMPARATOR")
    assert re.search(r"^\* COMPARATOR i;unicode-casemap\r$", got, re.M), got
    c.close()
    c = imap_client(tern)
    got = cmd(c, "c0", "COMPARATOR")  # RFC 5255 §4.7: authenticated and selected states only
    assert re.search(r"^c0 (NO|BAD)", got, re.M), got
    c.close()


def test_unicode_casemap_search_and_sort(tern):
    """RFC 5255 §4.2: the comparator governs SUBJECT/BODY/... and SORT's string keys."""
    user, pw = fresh_user(tern, "i18nsrch", messages=MAILBOX)
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    assert search(c, "a1", "SUBJECT", "\u00e9") == [1, 2, 3]  # é, É alike
    assert search(c, "a2", "BODY", "\u00c9T\u00c9") == [1, 3]  # precomposed = decomposed
    assert search(c, "a3", "BODY", "ABC") == [2]  # full-width letters (NFKD)
    assert sort(c, "o1") == [1, 2, 3, 4]  # ÉA < ÉB < ÉC < PLAIN
    c.close()


def test_comparator_switch(tern):
    user, pw = fresh_user(tern, "i18nswitch", messages=MAILBOX)
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "c1", 'COMPARATOR "cz;*" i;ascii-casemap')
    assert re.search(r"^\* COMPARATOR i;ascii-casemap\r$", got, re.M), got
    assert re.search(r"^c1 OK", got, re.M), got
    assert search(c, "b1", "SUBJECT", "\u00e9") == [2]  # only a-z fold: É is not é
    assert search(c, "b2", "BODY", "\u00e9t\u00e9") == [1]
    assert search(c, "b3", "BODY", "ABC") == []
    assert search(c, "b4", "SUBJECT", "PLAIN") == [4]
    # octet order after a-z -> A-Z: "PLAIN" < "\xc3\x89A" < "\xc3\x89C" < "\xc3\xa9B"
    assert sort(c, "o2") == [4, 1, 3, 2]
    got = cmd(c, "c2", 'COMPARATOR "i;*"')
    assert re.search(r"^\* COMPARATOR i;unicode-casemap \(i;unicode-casemap i;ascii-casemap\)"
                     r"\r$", got, re.M), got
    assert sort(c, "o4") == [1, 2, 3, 4]
    got = cmd(c, "c3", "COMPARATOR i;octet en;*")
    assert re.search(r"^c3 NO \[BADCOMPARATOR\]", got, re.M), got
    got = cmd(c, "c4", "COMPARATOR")  # a refused change keeps the active one
    assert re.search(r"^\* COMPARATOR i;unicode-casemap\r$", got, re.M), got
    cmd(c, "c5", "COMPARATOR i;ascii-casemap")
    got = cmd(c, "c6", "COMPARATOR default")
    assert re.search(r"^\* COMPARATOR i;unicode-casemap\r$", got, re.M), got
    assert re.search(r"^c7 BAD", cmd(c, "c7", "COMPARATOR (i;octet)"), re.M)
    c.close()
