"""
test_imap_notify.py - NOTIFY (RFC 5465) against the real binary, with raw sessions: the
command's grammar and its errors (BAD for broken rules, NO [BADEVENT] for unsupported
events), the RFC's §3.1 example (corrected: its "(subtree Lists MessageNew)" breaks the
RFC's own §5 rule and §8 grammar), STATUS for other mailboxes' new, expunged and flagged
messages, EXISTS + FETCH (MessageNew's items) and EXPUNGE for the selected mailbox without
a command, LIST for MailboxName and SubscriptionChange (OLDNAME, \\NonExistent), METADATA
for the metadata events, nothing for the session's own changes, NOTIFY NONE, IDLE, and
all of it across two mail worker processes.
"""

import re

import pytest

from test_imap_lib import add_user, converse, fresh_user, imap_client, read_literal_reply


def msg(i, subject=None):
    return f"Subject: {subject or f'n{i}'}\nFrom: alice@example.org\nTo: bob@example.org\n" \
           f"Message-ID: <n{i}@x>\n\nbody {i}\n"


def login(srv, user, pw):
    c = imap_client(srv)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def status(text, tag):
    return re.search(rf"^{tag} (OK|NO|BAD)", text, re.M).group(1)


def append(c, tag, box, text):
    data = text.replace("\n", "\r\n").encode()
    c.send_raw(f"{tag} APPEND {box} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    got = c.read_until(rf"^{tag} (OK|NO|BAD)")
    assert status(got, tag) == "OK", got
    return got


def quiet(c, tag="q"):
    """What arrives up to a NOOP's completion (unsolicited lines included)."""
    return cmd(c, tag, "NOOP")


def test_capability_and_errors(tern):
    user, pw = fresh_user(tern, "nferr")
    c = login(tern, user, pw)
    assert " NOTIFY" in cmd(c, "c", "CAPABILITY")
    bad = [
        "NOTIFY",
        "NOTIFY SET",
        "NOTIFY SET (selected (MessageNew))",                  # §5: both or neither
        "NOTIFY SET (selected (FlagChange MessageNew))",
        "NOTIFY SET (selected (MailboxName))",                 # §6.1: message events only
        "NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed NONE)",
        "NOTIFY SET (personal (MessageNew (UID) MessageExpunge))",  # fetch-att: selected only
        "NOTIFY SET (selected (MessageNew (NOSUCHITEM) MessageExpunge))",
        "NOTIFY SET (mailboxes (MessageNew MessageExpunge))",  # names missing
        "NOTIFY SET (personal INBOX (MailboxName))",           # names where none go
        "NOTIFY SET (nowhere (MailboxName))",
        "NOTIFY SET personal",
    ]
    for line in bad:
        assert status(cmd(c, "b", line), "b") == "BAD", line
    # §3.1: an unsupported event is NO [BADEVENT (every event supported)]
    for line in ("NOTIFY SET (personal (MessageNew MessageExpunge AnnotationChange))",
                 "NOTIFY SET (personal (SomethingNew))"):
        got = cmd(c, "e", line)
        assert re.search(r"^e NO \[BADEVENT \(MessageNew MessageExpunge FlagChange MailboxName "
                         r"SubscriptionChange MailboxMetadataChange ServerMetadataChange\)\]",
                         got, re.M), got
    assert status(cmd(c, "n", "NOTIFY NONE"), "n") == "OK"
    assert status(cmd(c, "s", "NOTIFY SET (personal NONE)"), "s") == "OK"
    pre = imap_client(tern)
    assert status(cmd(pre, "p", "NOTIFY NONE"), "p") == "NO"  # authenticated state only


def test_rfc_example_status_and_selected_fetch(tern):
    user, pw = fresh_user(tern, "nfex")
    a = login(tern, user, pw)
    other = login(tern, user, pw)
    for box in ("Lists/Lemonade", "Lists/Im2000", "misc"):
        assert status(cmd(other, "c", f"CREATE {box}"), "c") == "OK"
    append(other, "ap", "Lists/Lemonade", msg(1))
    append(other, "ap", "Lists/Lemonade", msg(2))
    got = cmd(a, "b", "notify set status (selected (MessageNew (uid body.peek[header.fields "
                      "(from to subject)]) MessageExpunge)) (subtree Lists (MessageNew "
                      "MessageExpunge))")
    assert status(got, "b") == "OK", got
    assert re.search(r'^\* STATUS "Lists/Lemonade" \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+\)\r$',
                     got, re.M), got
    assert re.search(r'^\* STATUS "Lists/Im2000" \(MESSAGES 0 UIDNEXT 1 UIDVALIDITY \d+\)\r$',
                     got, re.M), got
    assert "misc" not in got and "INBOX" not in got, got
    got = cmd(a, "c", "select inbox")
    assert status(got, "c") == "OK"
    # a new message in Lists/Lemonade: STATUS (UIDNEXT MESSAGES) with no command sent
    append(other, "ap2", "Lists/Lemonade", msg(3))
    got = a.read_until(r'^\* STATUS "Lists/Lemonade"')
    assert re.search(r'^\* STATUS "Lists/Lemonade" \(MESSAGES 3 UIDNEXT 4\)\r$', got, re.M), got
    # a new message in the selected INBOX: EXISTS, then FETCH with the asked items
    append(other, "ap3", "INBOX", msg(4, "Re: good morning"))
    got = a.read_until(r"^\* 1 EXISTS\r$")
    raw = a.read_until(r"^\)\r$")
    assert re.search(r"^\* 1 FETCH \(UID 1 BODY\[HEADER\.FIELDS \(FROM TO SUBJECT\)\] \{75\}\r$",
                     raw, re.M), raw  # the RFC's own 75 octets
    assert "Subject: Re: good morning" in raw and "From: alice@example.org" in raw, raw
    assert "\\Seen" not in cmd(a, "f", "FETCH 1 FLAGS")  # BODY.PEEK set nothing
    # an expunge in the selected mailbox: EXPUNGE with no command sent (SELECTED)
    cmd(other, "s", "SELECT INBOX")
    cmd(other, "d", "STORE 1 +FLAGS (\\Deleted)")
    cmd(other, "x", "EXPUNGE")
    got = a.read_until(r"^\* 1 EXPUNGE\r$")
    # mailboxes not watched stay silent; NOTIFY SET without STATUS sends none
    append(other, "ap4", "misc", msg(5))
    got = cmd(a, "e", "notify set (selected (MessageNew (uid body.peek[header.fields (from to "
                      "subject)]) MessageExpunge)) (subtree Lists (MessageNew MessageExpunge)) "
                      "(mailboxes misc (MessageNew MessageExpunge))")
    assert status(got, "e") == "OK" and "* STATUS" not in got, got
    append(other, "ap5", "misc", msg(6))
    got = a.read_until(r'^\* STATUS "misc"')
    assert re.search(r'^\* STATUS "misc" \(MESSAGES 2 UIDNEXT 3\)\r$', got, re.M), got


def test_other_mailbox_expunge_and_flags(tern):
    user, pw = fresh_user(tern, "nfflag")
    a = login(tern, user, pw)
    b = login(tern, user, pw)
    cmd(b, "c", "CREATE Work")
    for i in range(3):
        append(b, "ap", "Work", msg(i))
    got = cmd(a, "n", "NOTIFY SET STATUS (personal (MessageNew MessageExpunge FlagChange))")
    # FlagChange: UIDVALIDITY and HIGHESTMODSEQ in the first STATUS, before any CONDSTORE
    assert re.search(r'^\* STATUS "Work" \(MESSAGES 3 UIDNEXT 4 UIDVALIDITY \d+ UNSEEN 3 '
                     r'HIGHESTMODSEQ \d+\)\r$', got, re.M), got
    cmd(b, "s", "SELECT Work")
    cmd(b, "f", "STORE 1 +FLAGS (\\Seen)")
    got = a.read_until(r'^\* STATUS "Work"')
    assert re.search(r'^\* STATUS "Work" \(UNSEEN 2\)\r$', got, re.M), got  # §5.1
    cmd(b, "d", "STORE 2 +FLAGS (\\Deleted)")
    got = a.read_until(r'^\* STATUS "Work"')
    # \Deleted is a flag change too: the mod-sequence moved, UNSEEN is what is told
    assert re.search(r'^\* STATUS "Work" \(UNSEEN 2\)\r$', got, re.M), got
    cmd(b, "x", "EXPUNGE")
    got = a.read_until(r'^\* STATUS "Work" \(MESSAGES')
    assert re.search(r'^\* STATUS "Work" \(MESSAGES 2[ )]', got, re.M), got  # §5.3
    # with CONDSTORE: HIGHESTMODSEQ and UIDVALIDITY (§5.1)
    cmd(a, "en", "ENABLE CONDSTORE")
    cmd(b, "f2", "STORE 1 -FLAGS (\\Seen)")
    got = a.read_until(r'^\* STATUS "Work"')
    assert re.search(r'^\* STATUS "Work" \(UIDVALIDITY \d+ UNSEEN 2 HIGHESTMODSEQ \d+\)\r$',
                     got, re.M), got


def test_mailbox_and_subscription_events(tern):
    user, pw = fresh_user(tern, "nfname")
    a = login(tern, user, pw)
    b = login(tern, user, pw)
    got = cmd(a, "n", "NOTIFY SET (personal (MailboxName SubscriptionChange))")
    assert status(got, "n") == "OK"
    # the session's own changes are not told (§5)
    got = cmd(a, "own", "CREATE Mine")
    assert "* LIST" not in got, got
    assert "* LIST" not in quiet(a)
    # another session's: LIST with accurate attributes (§5.4)
    cmd(b, "c", "CREATE Projects")
    got = a.read_until(r'^\* LIST .*"Projects"')
    assert re.search(r'^\* LIST \(\\HasNoChildren( \\Subscribed)?\) "/" "Projects"\r$', got,
                     re.M), got
    cmd(b, "c2", "CREATE Projects/Alpha")
    got = a.read_until(r'^\* LIST .*"Projects/Alpha"')
    got += a.read_until(r'^\* LIST \(\\HasChildren[^)]*\) "/" "Projects"\r$')  # the parent
    cmd(b, "r", "RENAME Projects/Alpha Projects/Beta")
    got = a.read_until(r'"Projects/Beta"')
    assert re.search(r'^\* LIST \([^)]*\) "/" "Projects/Beta" \("OLDNAME" \("Projects/Alpha"\)\)'
                     r'\r$', got, re.M), got
    cmd(b, "d", "DELETE Projects/Beta")
    got = a.read_until(r'^\* LIST \(\\NonExistent[^)]*\) "/" "Projects/Beta"\r$')
    got = a.read_until(r'"Projects"\r$')  # its parent is affected too, childless now
    assert re.search(r'^\* LIST \(\\HasNoChildren\) "/" "Projects"\r$', got, re.M), got
    # SubscriptionChange (§5.5): \Subscribed if and only if subscribed after it
    cmd(b, "s", "SUBSCRIBE Projects")
    got = a.read_until(r'"Projects"\r$')
    assert re.search(r'^\* LIST \(\\HasNoChildren \\Subscribed\) "/" "Projects"\r$', got,
                     re.M), got
    cmd(b, "u", "UNSUBSCRIBE Projects")
    got = a.read_until(r'"Projects"\r$')
    assert re.search(r'^\* LIST \(\\HasNoChildren\) "/" "Projects"\r$', got, re.M), got
    # NOTIFY NONE: nothing more
    assert status(cmd(a, "none", "NOTIFY NONE"), "none") == "OK"
    cmd(b, "c3", "CREATE Later")
    cmd(b, "n", "NOOP")
    assert "Later" not in quiet(a)


def test_metadata_events(tern):
    user, pw = fresh_user(tern, "nfmeta")
    a = login(tern, user, pw)
    b = login(tern, user, pw)
    got = cmd(a, "n", "NOTIFY SET (mailboxes INBOX (MailboxMetadataChange)) "
                      "(personal (ServerMetadataChange))")
    assert status(got, "n") == "OK", got
    cmd(b, "m", 'SETMETADATA INBOX (/private/comment "hello" /shared/comment "x")')
    got = a.read_until(r"^\* METADATA")
    assert re.search(r'^\* METADATA "INBOX" /private/comment /shared/comment\r$', got, re.M), got
    cmd(b, "m2", 'SETMETADATA "" (/private/vendor/x "1")')
    got = a.read_until(r"^\* METADATA")
    assert re.search(r'^\* METADATA "" /private/vendor/x\r$', got, re.M), got
    # a mailbox not named stays silent
    cmd(b, "c", "CREATE Other")
    cmd(b, "m3", 'SETMETADATA Other (/private/comment "y")')
    cmd(b, "m4", 'SETMETADATA INBOX (/private/comment NIL)')  # a removal is told too
    got = a.read_until(r"^\* METADATA")
    assert "Other" not in got and '"INBOX" /private/comment' in got, got


def test_idle_gets_notify_events(tern):
    user, pw = fresh_user(tern, "nfidle")
    a = login(tern, user, pw)
    b = login(tern, user, pw)
    cmd(b, "c", "CREATE Box")
    cmd(a, "n", "NOTIFY SET (selected (MessageNew MessageExpunge)) "
                "(personal (MessageNew MessageExpunge MailboxName))")
    cmd(a, "s", "SELECT INBOX")
    a.send("i IDLE")
    a.read_until(r"^\+ ")
    append(b, "ap", "Box", msg(1))
    got = a.read_until(r'^\* STATUS "Box"')
    cmd(b, "c2", "CREATE Box2")
    got = a.read_until(r'"Box2"')
    append(b, "ap2", "INBOX", msg(2))
    got = a.read_until(r"^\* 1 EXISTS\r$")
    a.send("DONE")
    assert status(a.read_until(r"^i (OK|NO|BAD)"), "i") == "OK"


def _login_pid(srv, user, since):
    m = srv.wait_log(rf"tern/imap\[(\d+)\]: Login: user=<{re.escape(user)}>", since=since)
    return int(m.group(1))


def test_notify_across_worker_processes(tern_factory):
    """The change is made in one mail worker; the NOTIFY session lives in another."""
    srv = tern_factory({"worker_processes": "2"})
    user, pw = "nfw@example.test", "pw-nfw"
    add_user(srv, user, pw)
    sessions = []
    for _ in range(12):  # bound: which worker takes a session is the kernel's choice
        since = srv.log_offset()
        c = login(srv, user, pw)
        sessions.append((c, _login_pid(srv, user, since)))
        if len({pid for _, pid in sessions}) >= 2:
            break
    pids = {pid for _, pid in sessions}
    assert len(pids) >= 2, "every session landed in one worker: the test proves nothing"
    a, a_pid = sessions[0]
    b = next(c for c, pid in sessions if pid != a_pid)
    cmd(b, "c", "CREATE Shared")
    got = cmd(a, "n", "NOTIFY SET STATUS (personal (MessageNew MessageExpunge MailboxName "
                      "SubscriptionChange MailboxMetadataChange))")
    assert re.search(r'^\* STATUS "Shared" \(MESSAGES 0 UIDNEXT 1 UIDVALIDITY \d+\)', got,
                     re.M), got
    append(b, "ap", "Shared", msg(1))
    got = a.read_until(r'^\* STATUS "Shared"')
    assert re.search(r'^\* STATUS "Shared" \(MESSAGES 1 UIDNEXT 2\)\r$', got, re.M), got
    cmd(b, "c2", "CREATE Elsewhere")
    got = a.read_until(r'"Elsewhere"')
    assert re.search(r'^\* LIST \([^)]*\) "/" "Elsewhere"\r$', got, re.M), got
    cmd(b, "r", "RENAME Elsewhere Moved")
    got = a.read_until(r'"Moved"')
    assert '("OLDNAME" ("Elsewhere"))' in got, got
    cmd(b, "m", 'SETMETADATA Shared (/private/comment "x")')
    got = a.read_until(r"^\* METADATA")
    assert re.search(r'^\* METADATA "Shared" /private/comment\r$', got, re.M), got
    for c, _ in sessions:
        c.close()


def test_utf8_names_in_notify(tern):
    user, pw = fresh_user(tern, "nfutf")
    a = login(tern, user, pw)
    b = login(tern, user, pw)
    cmd(a, "e", "ENABLE UTF8=ACCEPT")
    cmd(b, "c", "CREATE Entw&APw-rfe")
    got = cmd(a, "n", 'NOTIFY SET STATUS (mailboxes "Entwürfe" (MessageNew MessageExpunge))')
    assert re.search(r'^\* STATUS "Entwürfe" \(MESSAGES 0 UIDNEXT 1 UIDVALIDITY \d+\)', got,
                     re.M), got
    append(b, "ap", "Entw&APw-rfe", msg(1))
    got = a.read_until(r"^\* STATUS")
    assert '* STATUS "Entwürfe" (MESSAGES 1 UIDNEXT 2)' in got, got


def test_selected_delayed_waits_for_a_command(tern):
    user, pw = fresh_user(tern, "nfdel", messages=[msg(1), msg(2)])
    a = login(tern, user, pw)
    b = login(tern, user, pw)
    cmd(a, "n", "NOTIFY SET (selected-delayed (MessageNew MessageExpunge)) "
                "(personal (MailboxName))")
    cmd(a, "s", "SELECT INBOX")
    cmd(b, "s", "SELECT INBOX")
    cmd(b, "d", "STORE 1 +FLAGS (\\Deleted)")
    cmd(b, "x", "EXPUNGE")
    # a mailbox event comes at once; the expunge waits for a command that may report it
    cmd(b, "c", "CREATE Marker")
    got = a.read_until(r'"Marker"')
    assert "EXPUNGE" not in got, got
    got = quiet(a)
    assert re.search(r"^\* 1 EXPUNGE\r$", got, re.M), got
    # the FETCH of a partial header keeps its literal intact (read_literal_reply)
    a.send("f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: n" in read_literal_reply(a, "f")


@pytest.mark.slow
def test_overflow_while_output_is_blocked(tern):
    """§5.8: a client that does not read while its FETCH output is stuck cannot be sent
    its notifications; past the bound it is told NOTIFICATIONOVERFLOW and NOTIFY is off."""
    body = "x" * 1022 + "\n"
    big = "Subject: big\nFrom: a@x\n\n" + body * 1024  # ~1 MB each
    user, pw = fresh_user(tern, "nfover", messages=[big] * 24)
    a = login(tern, user, pw)
    b = login(tern, user, pw)
    cmd(a, "n", "NOTIFY SET (personal (MailboxName))")
    cmd(a, "s", "SELECT INBOX")
    a.send("f FETCH 1:* BODY.PEEK[]")  # ~24 MB the client does not read for now
    for i in range(70):
        cmd(b, "c", f"CREATE Flood{i:02d}")
    raw = read_literal_reply(a, "f")  # literal by literal: nothing inside them but mail
    assert raw.count(b" FETCH (BODY[] {") == 24
    assert b"NOTIFICATIONOVERFLOW" not in raw  # told after the FETCH, never inside it
    got = raw[-4000:].decode(errors="replace") + quiet(a)
    assert "* OK [NOTIFICATIONOVERFLOW]" in got, got[-2000:]
    # NOTIFY is off now: a later change is not told
    cmd(b, "c2", "CREATE AfterOverflow")
    assert "AfterOverflow" not in quiet(a, "q2")
