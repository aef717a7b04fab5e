"""
test_imap_session.py - IMAP session rules checked on the wire: ID, NAMESPACE, ENABLE,
EXAMINE is read-only, UID EXPUNGE, UNSELECT, and when untagged EXPUNGE/EXISTS/FETCH may
reach a client (RFC 3501 §7.4.1: not during FETCH/STORE/SEARCH; at NOOP and in IDLE).
"""

import re

import pytest

from test_imap_lib import (converse, fresh_user, imap_client, imaplib_login,
                           read_literal_reply, sample_message)


def login_select(tern, user, pw, box="INBOX"):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK"), (f"b SELECT {box}", r"^b OK")])
    return c


def test_id_namespace_enable_unselect(tern):
    user, pw = fresh_user(tern, "misc", [sample_message(1)])
    c = imap_client(tern)
    got = converse(c, [('a ID ("name" "test")', r"^a OK")])[0]
    assert got.startswith("* ID NIL\r\n")
    converse(c, [(f"b LOGIN {user} {pw}", r"^b OK")])
    got = converse(c, [("c NAMESPACE", r"^c OK")])[0]
    assert got.startswith('* NAMESPACE (("" "/")) NIL NIL\r\n')
    converse(c, [("d ENABLE CONDSTORE", r"^d OK"),
                 ("e SELECT INBOX", r"^e OK"),
                 ("f UNSELECT", r"^f OK Unselect completed"),
                 ("g FETCH 1 FLAGS", r"^g BAD "),
                 ("h LOGOUT", r"^h OK")])


def test_examine_is_read_only(tern):
    user, pw = fresh_user(tern, "ro", [sample_message(1)])
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    got = converse(c, [("b EXAMINE INBOX", r"^b OK \[READ-ONLY\] Examine completed")])[0]
    assert "[PERMANENTFLAGS ()]" in got
    converse(c, [("c STORE 1 +FLAGS (\\Seen)", r"^c NO "),
                 ("d EXPUNGE", r"^d NO ")])
    c.send("e FETCH 1 BODY[TEXT]")
    got = read_literal_reply(c, "e")
    assert b"\\Seen" not in got  # no \Seen side effect in a read-only mailbox
    got = converse(c, [("f FETCH 1 FLAGS", r"^f OK")])[0]
    assert "\\Seen" not in got


def test_uid_expunge_only_given_uids(tern):
    user, pw = fresh_user(tern, "uidx", [sample_message(i) for i in range(1, 5)])
    c = login_select(tern, user, pw)
    converse(c, [("c STORE 1:4 +FLAGS.SILENT (\\Deleted)", r"^c OK")])
    uids = converse(c, [("d UID SEARCH ALL", r"^d OK")])[0]
    u = re.search(r"^\* SEARCH (.*)\r$", uids, re.M).group(1).split()
    got = converse(c, [(f"e UID EXPUNGE {u[1]}:{u[2]}", r"^e OK")])[0]
    assert re.findall(r"^\* (\d+) EXPUNGE\r$", got, re.M) in (["3", "2"], ["2", "2"])
    got = converse(c, [("f SEARCH DELETED", r"^f OK")])[0]
    assert "* SEARCH 1 2\r\n" in got


def test_expunge_by_other_session_waits_for_noop(tern):
    user, pw = fresh_user(tern, "two", [sample_message(i) for i in range(1, 4)])
    c = login_select(tern, user, pw)
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    other.store("2", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.logout()
    # FETCH must not report the expunge; the sequence numbers stay put
    got = converse(c, [("c FETCH 1:3 (FLAGS)", r"^c (OK|NO)")])[0]
    assert "EXPUNGE" not in got
    got = converse(c, [("d NOOP", r"^d OK")])[0]
    assert "* 2 EXPUNGE\r\n" in got
    got = converse(c, [("e SEARCH ALL", r"^e OK")])[0]
    assert "* SEARCH 1 2\r\n" in got


@pytest.mark.threads  # a loop/workpool hand-off: the TSan stage (-m threads) runs it
def test_idle_reports_expunge_and_new_mail_from_other_session(tern):
    user, pw = fresh_user(tern, "idle2", [sample_message(1), sample_message(2)])
    c = login_select(tern, user, pw)
    converse(c, [("c IDLE", r"^\+ ")])
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Deleted)")
    other.expunge()
    converse(c, [(None, r"^\* 1 EXPUNGE\r$")])
    other.append("INBOX", None, None, b"Subject: new\r\n\r\nnew\r\n")
    converse(c, [(None, r"^\* 2 EXISTS\r$")])
    other.logout()
    converse(c, [("DONE", r"^c OK Idle completed")])


def test_list_wildcards(tern):
    user, pw = fresh_user(tern, "listw")
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK"),
                 ("b CREATE Work/Projects/Tern", r"^b OK"),
                 ("c CREATE Work/Misc", r"^c OK")])

    def names(cmd):
        got = converse(c, [(cmd, r"^z OK")])[0]
        return sorted(re.findall(r'^\* L(?:IST|SUB) \([^)]*\) "/" "([^"]*)"\r$', got, re.M))

    top = names('z LIST "" "%"')
    assert "INBOX" in top and "Work" in top and "Work/Misc" not in top
    assert names('z LIST "" "Work/%"') == ["Work/Misc", "Work/Projects"]
    assert names('z LIST "Work/" "%"') == ["Work/Misc", "Work/Projects"]
    assert names('z LIST "" "*/%"') == ["Work/Misc", "Work/Projects", "Work/Projects/Tern"]
    assert names('z LIST "" "w*"') == []
    assert names('z LIST "" "inbox"') == ["INBOX"]
    got = converse(c, [('z LIST "" ""', r"^z OK")])[0]
    assert '* LIST (\\Noselect) "/" ""\r\n' in got
    converse(c, [("d SUBSCRIBE Work/Misc", r"^d OK")])
    assert "Work/Misc" in names('z LSUB "" "*"')
