"""
test_imap_mailbox_ops.py - mailbox operations on the wire: STATUS (SIZE) (RFC 8438),
LIST "" % over a hierarchy (RFC 3501 §6.3.8), RENAME of a mailbox with children
(RFC 3501 §6.3.5: inferior names are renamed too), and when untagged EXPUNGE may be sent:
never during FETCH/STORE/SEARCH, allowed during UID FETCH/STORE/SEARCH (RFC 3501 §7.4.1).
"""

import re

from test_imap_lib import (converse, fresh_user, imap_client, imaplib_login, sample_message,
                           wire)


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def list_names(c, cmd):
    got = converse(c, [(cmd, r"^z OK")])[0]
    return {name: attrs for attrs, name in
            re.findall(r'^\* LIST \(([^)]*)\) "/" "?([^"\r]*)"?\r$', got, re.M)}


def test_status_size(tern):
    msgs = [sample_message(1), sample_message(2)]
    user, pw = fresh_user(tern, "stsize", msgs)
    c = login(tern, user, pw)
    got = converse(c, [("b STATUS INBOX (MESSAGES SIZE)", r"^b OK")])[0]
    size = sum(len(wire(m)) for m in msgs)
    assert f'* STATUS "INBOX" (MESSAGES 2 SIZE {size})\r\n' in got or \
        f"* STATUS INBOX (MESSAGES 2 SIZE {size})\r\n" in got, got


def test_list_percent_hierarchy(tern):
    user, pw = fresh_user(tern, "listh")
    c = login(tern, user, pw)
    converse(c, [("b CREATE Top/Mid/Leaf", r"^b OK"), ("c CREATE Flat", r"^c OK")])
    top = list_names(c, 'z LIST "" %')
    assert "Top" in top and "Flat" in top and "INBOX" in top
    assert not any("/" in n for n in top)
    assert "\\HasChildren" in top["Top"] and "\\HasNoChildren" in top["Flat"]
    mid = list_names(c, 'z LIST "" Top/%')
    assert list(mid) == ["Top/Mid"] and "\\HasChildren" in mid["Top/Mid"]
    leaf = list_names(c, 'z LIST Top/Mid/ %')
    assert list(leaf) == ["Top/Mid/Leaf"] and "\\HasNoChildren" in leaf["Top/Mid/Leaf"]
    every = list_names(c, 'z LIST "" Top*')
    assert set(every) == {"Top", "Top/Mid", "Top/Mid/Leaf"}


def test_rename_with_children(tern):
    user, pw = fresh_user(tern, "renc")
    m = imaplib_login(tern, user, pw)
    for box in ("Work", "Work/A", "Work/A/B", "Workshop"):
        assert m.create(box)[0] == "OK"
    assert m.append("Work/A/B", None, None, wire(sample_message(7)))[0] == "OK"
    assert m.append("Work", None, None, wire(sample_message(8)))[0] == "OK"
    typ, data = m.rename("Work", "Done")
    assert typ == "OK", data
    typ, data = m.list()
    names = sorted(re.search(rb'"/" "?([^"]*)"?$', d).group(1).decode() for d in data)
    assert "Done" in names and "Done/A" in names and "Done/A/B" in names
    assert "Work" not in names and "Work/A" not in names and "Workshop" in names
    assert b"MESSAGES 1" in m.status("Done/A/B", "(MESSAGES)")[1][0]
    assert b"MESSAGES 1" in m.status("Done", "(MESSAGES)")[1][0]
    typ, data = m.select("Done/A/B")
    assert typ == "OK"
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"message 7" in data[0][1]
    # renaming onto an existing name fails and changes nothing
    assert m.rename("Done", "Workshop")[0] == "NO"
    m.logout()


def expunge_behind(tern, user, pw, seq):
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    other.store(str(seq), "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.logout()


def test_uid_commands_may_report_expunge(tern):
    user, pw = fresh_user(tern, "uidexp", [sample_message(i) for i in range(1, 6)])
    c = login(tern, user, pw)
    converse(c, [("b SELECT INBOX", r"^b OK")])
    uids = converse(c, [("u UID SEARCH ALL", r"^u OK")])[0]
    uids = re.search(r"^\* SEARCH (.*)\r$", uids, re.M).group(1).split()

    expunge_behind(tern, user, pw, 2)
    # plain FETCH, STORE, SEARCH: no EXPUNGE, the numbers stay put
    got = converse(c, [("c FETCH 1:* (UID)", r"^c (OK|NO)")])[0]
    assert "EXPUNGE" not in got
    got = converse(c, [("d STORE 1 +FLAGS (\\Flagged)", r"^d (OK|NO)")])[0]
    assert "EXPUNGE" not in got
    got = converse(c, [("e SEARCH ALL", r"^e OK")])[0]
    assert "EXPUNGE" not in got and "* SEARCH 1 2 3 4 5\r\n" in got
    # UID FETCH reports it (after its FETCH responses, before the tagged OK)
    got = converse(c, [("f UID FETCH 1:* (FLAGS)", r"^f OK")])[0]
    assert "* 2 EXPUNGE\r\n" in got
    assert got.index("* 2 EXPUNGE") > got.index("FETCH")
    got = converse(c, [("g SEARCH ALL", r"^g OK")])[0]
    assert "* SEARCH 1 2 3 4\r\n" in got

    expunge_behind(tern, user, pw, 1)
    got = converse(c, [(f"h UID STORE {uids[2]} +FLAGS (\\Seen)", r"^h OK")])[0]
    assert "* 1 EXPUNGE\r\n" in got
    # the FETCH for the stored message used the numbers before the EXPUNGE
    assert got.index("* 2 FETCH") < got.index("* 1 EXPUNGE")

    expunge_behind(tern, user, pw, 1)
    got = converse(c, [("i UID SEARCH ALL", r"^i OK")])[0]
    assert "* 1 EXPUNGE\r\n" in got
    # the search ran on the view before the EXPUNGE that follows it
    assert f"* SEARCH {uids[2]} {uids[3]} {uids[4]}\r\n" in got
    assert got.index("* SEARCH") < got.index("* 1 EXPUNGE")
    converse(c, [("j LOGOUT", r"^j OK")])
