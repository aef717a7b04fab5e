"""
test_imap_condstore.py - CONDSTORE basics (RFC 7162 §3.1) on the wire: the capability,
ENABLE, HIGHESTMODSEQ on SELECT/EXAMINE and in STATUS, FETCH MODSEQ and (CHANGEDSINCE),
STORE (UNCHANGEDSINCE) with [MODIFIED], SEARCH MODSEQ, and MODSEQ in unsolicited and
.SILENT flag updates. Mod-sequences only grow; tests compare them, never guess values.
"""

import re

import pytest

from test_imap_lib import converse, fresh_user, imap_client, imaplib_login, sample_message


def modseqs(text):
    return {int(n): int(v) for n, v in
            re.findall(r"^\* (\d+) FETCH \(.*MODSEQ \((\d+)\)", text, re.M)}


def test_condstore_basics(tern):
    user, pw = fresh_user(tern, "cs", [sample_message(i) for i in range(1, 4)])
    c = imap_client(tern)
    got = converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])[0]
    caps = converse(c, [("b CAPABILITY", r"^b OK")])[0]
    assert " CONDSTORE" in caps
    got = converse(c, [("c SELECT INBOX (CONDSTORE)", r"^c OK \[READ-WRITE\]")])[0]
    highest = int(re.search(r"^\* OK \[HIGHESTMODSEQ (\d+)\]", got, re.M).group(1))
    got = converse(c, [("d FETCH 1:* (MODSEQ FLAGS)", r"^d OK")])[0]
    before = modseqs(got)
    assert set(before) == {1, 2, 3} and max(before.values()) <= highest

    got = converse(c, [("e STORE 1 +FLAGS (\\Flagged)", r"^e OK")])[0]
    after1 = modseqs(got)[1]
    assert after1 > highest and "\\Flagged" in got

    # only message 1 changed since `highest`
    got = converse(c, [(f"f FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})", r"^f OK")])[0]
    assert modseqs(got) == {1: after1}

    # conditional STORE: message 1 changed after `highest`, so only 2 is stored
    got = converse(c, [(f"g STORE 1:2 (UNCHANGEDSINCE {highest}) +FLAGS (\\Seen)",
                        r"^g OK \[MODIFIED 1\] ")])[0]
    assert set(modseqs(got)) == {2}
    got = converse(c, [("h FETCH 1:2 (FLAGS)", r"^h OK")])[0]
    assert re.search(r"^\* 1 FETCH \(FLAGS \(\\Flagged[ )]", got, re.M)
    assert re.search(r"^\* 2 FETCH \(FLAGS \(\\Seen[ )]", got, re.M)
    uids = converse(c, [("i UID SEARCH ALL", r"^i OK")])[0]
    uids = re.search(r"^\* SEARCH (.*)\r$", uids, re.M).group(1).split()
    got = converse(c, [(f"j UID STORE {uids[0]}:{uids[1]} (UNCHANGEDSINCE {after1}) "
                        "FLAGS.SILENT (\\Answered)", r"^j OK")])[0]
    assert f"[MODIFIED {uids[1]}]" in got  # 2 changed after after1 (by g)
    # .SILENT still reports MODSEQ to a CONDSTORE client
    assert re.search(rf"^\* 1 FETCH \(UID {uids[0]} MODSEQ \(\d+\)\)\r$", got, re.M)

    # SEARCH MODSEQ: the messages changed at or after after1, with the highest modseq
    got = converse(c, [(f"k SEARCH MODSEQ {after1}", r"^k OK")])[0]
    m = re.search(r"^\* SEARCH 1 2 \(MODSEQ (\d+)\)\r$", got, re.M)
    assert m and int(m.group(1)) > after1
    got = converse(c, [(f'l SEARCH MODSEQ "/flags/\\\\seen" all {after1} NOT 1', r"^l OK")])[0]
    assert re.search(r"^\* SEARCH 2 \(MODSEQ \d+\)\r$", got, re.M)
    got = converse(c, [("m SEARCH MODSEQ 999999999", r"^m OK")])[0]
    assert "* SEARCH\r\n" in got

    got = converse(c, [("n STATUS INBOX (HIGHESTMODSEQ MESSAGES)", r"^n OK")])[0]
    st = int(re.search(r"HIGHESTMODSEQ (\d+)", got).group(1))
    assert st >= int(m.group(1))

    # another session changes a flag: NOOP reports it with its MODSEQ
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    other.store("3", "+FLAGS", "(\\Deleted)")
    other.logout()
    got = converse(c, [("o NOOP", r"^o OK")])[0]
    assert re.search(r"^\* 3 FETCH \(UID \d+ FLAGS \([^)]*\\Deleted[^)]*\) MODSEQ \((\d+)\)\)\r$", got,
                     re.M), got
    converse(c, [("p LOGOUT", r"^p OK")])


def test_enable_and_plain_select(tern):
    user, pw = fresh_user(tern, "cs2", [sample_message(1)])
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    got = converse(c, [("b ENABLE CONDSTORE", r"^b OK")])[0]
    assert "* ENABLED CONDSTORE\r\n" in got
    got = converse(c, [("c EXAMINE INBOX", r"^c OK \[READ-ONLY\]")])[0]
    assert re.search(r"^\* OK \[HIGHESTMODSEQ \d+\]", got, re.M)
    converse(c, [("d SELECT INBOX (BOGUS)", r"^d BAD "),
                 ("e SELECT INBOX", r"^e OK"),
                 ("f FETCH 1 (FLAGS) (CHANGEDSINCE x)", r"^f BAD "),
                 ("g STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)", r"^g BAD "),
                 ("h SEARCH MODSEQ", r"^h BAD "),
                 ("i LOGOUT", r"^i OK")])


@pytest.mark.threads  # a loop/workpool hand-off: the TSan stage (-m threads) runs it
def test_store_from_a_stale_session_keeps_the_others_flags(tern):
    """Two imaplib sessions on one mailbox. B changes flags without having synced since
    A's change: B's +FLAGS builds on the flags as they are now (A's \\Flagged and keyword
    survive), and B's UNCHANGEDSINCE with the mod-sequence it saw before A's change is
    refused with [MODIFIED] (RFC 7162 §3.1.3 compares with the current mod-sequence)."""
    user, pw = fresh_user(tern, "stale", [sample_message(1)])
    a = imaplib_login(tern, user, pw)
    b = imaplib_login(tern, user, pw)
    a.select("INBOX")
    b.select("INBOX")
    typ, data = b.fetch("1", "(MODSEQ)")
    seen_by_b = int(re.search(rb"MODSEQ \((\d+)\)", data[0]).group(1))
    typ, _ = a.store("1", "+FLAGS", "(\\Flagged $Label1)")
    assert typ == "OK"
    # B has run no command since: its STORE must not undo A's change
    typ, data = b._simple_command("STORE", "1", f"(UNCHANGEDSINCE {seen_by_b})",
                                  "+FLAGS", "(\\Answered)")
    assert typ == "OK" and data[-1].startswith(b"[MODIFIED 1]"), data
    typ, data = b.store("1", "+FLAGS", "(\\Seen)")
    assert typ == "OK"
    text = b" ".join(x if isinstance(x, bytes) else b" ".join(x) for x in data)
    for flag in (b"\\Seen", b"\\Flagged", b"$Label1"):
        assert flag in text, text
    assert b"\\Answered" not in text
    a.noop()  # A learns of B's change
    typ, data = a.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[-1] and b"\\Flagged" in data[-1] and b"$Label1" in data[-1], data
    maildir = tern.maildir(user)
    names = [p.name for p in (maildir / "cur").iterdir()]
    assert len(names) == 1 and names[0].endswith(":2,FS"), names
    a.logout()
    b.logout()


@pytest.mark.threads  # a loop/workpool hand-off: the TSan stage (-m threads) runs it
def test_store_on_a_message_another_session_expunged(tern):
    """A's view still lists message 1 after B expunged it: STORE 1:2 stores 2, skips 1
    and answers OK as Dovecot does (RFC 2180 §4.2.1: the view's promise holds until A is
    told of the EXPUNGE; a NO here is what the issue 9 stress tester counted as errors)."""
    user, pw = fresh_user(tern, "gone", [sample_message(1), sample_message(2)])
    a = imaplib_login(tern, user, pw)
    b = imaplib_login(tern, user, pw)
    a.select("INBOX")
    b.select("INBOX")
    b.store("1", "+FLAGS", "(\\Deleted)")
    typ, _ = b.expunge()
    assert typ == "OK"
    typ, data = a.store("1:2", "+FLAGS", "(\\Flagged)")
    assert typ == "OK", data
    assert data == [b"2 (FLAGS (\\Flagged \\Recent))"], data  # no FETCH for the gone one
    b.noop()
    typ, data = b.fetch("1", "(FLAGS)")
    assert b"\\Flagged" in data[-1], data
    a.noop()  # A hears the EXPUNGE now
    a.untagged_responses.clear()  # (imaplib keeps the STORE's untagged FETCH)
    typ, data = a.fetch("1:*", "(FLAGS)")
    assert len(data) == 1 and data[0].startswith(b"1 (FLAGS") and b"\\Flagged" in data[0], data
    a.logout()
    b.logout()
