"""
test_imap_context.py - CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): RETURN (UPDATE) with
the unsolicited "* ESEARCH (TAG ..) [UID] ADDTO/REMOVEFROM" (UIDs for UID SEARCH/SORT,
sequence numbers ordered around the EXPUNGEs for SEARCH/SORT) while the mailbox changes (new
mail, flag changes by this and other sessions, expunges, IDLE), NOUPDATE refusals and the
per-session limit, tag reuse, CANCELUPDATE, PARTIAL, with the RFC's examples replayed on
a small mailbox. Each update stream is applied to the client's copy of the result by the
RFC's rules and compared with the same search run afresh.
"""

import imaplib
import re

from test_imap_lib import converse, fresh_user, imap_client, imaplib_login, sample_message

CONTEXT_LIMIT = 4  # IMAP_MAX_UPDATES in src/imap/session.h


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def parse_set(text):
    """An IMAP sequence-set in the order written ("5,3:4" -> [5, 3, 4])."""
    out = []
    for part in text.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out += list(range(min(a, b), max(a, b) + 1))
        else:
            out.append(int(part))
    return out


def apply_updates(result, text, tag, is_sort):
    """Apply every ADDTO/REMOVEFROM for tag in text to result (RFC 5267 §4.3.2-4.3.4)."""
    for line in text.splitlines():
        m = re.match(rf'^\* ESEARCH \(TAG "{re.escape(tag)}"\) UID (.*)$', line.strip())
        if not m:
            continue
        for item, payload in re.findall(r"(ADDTO|REMOVEFROM) \(([^)]*)\)", m.group(1)):
            words = payload.split()
            for pos, values in zip(words[0::2], words[1::2]):
                pos, values = int(pos), parse_set(values)
                if is_sort:
                    assert pos >= 1, line  # a SORT context always has positions
                if item == "REMOVEFROM":
                    if pos == 0:
                        result = [u for u in result if u not in values]
                    else:
                        assert result[pos - 1:pos - 1 + len(values)] == values, (line, result)
                        del result[pos - 1:pos - 1 + len(values)]
                elif pos == 0:
                    result = sorted(set(result) | set(values))
                else:
                    result[pos - 1:pos - 1] = values
    return result


def esearch_all(text, tag):
    m = re.search(rf'^\* ESEARCH \(TAG "{tag}"\) UID(?: ALL (\S+))?', text, re.M)
    assert m, text
    return parse_set(m.group(1)) if m.group(1) else []


def messages(n, subject=lambda k: f"message {k}"):
    return [sample_message(k, subject=subject(k)) for k in range(1, n + 1)]


def test_capabilities_announced(tern):
    user, pw = fresh_user(tern, "ctxcap")
    m = imaplib_login(tern, user, pw)
    caps = m.capability()[1][0].decode().split()
    assert "CONTEXT=SEARCH" in caps and "CONTEXT=SORT" in caps, caps
    m.logout()


def test_rfc_b01_update_count_with_other_sessions(tern):
    """RFC 5267 §4.3 B01 and §4.3.4: UID SEARCH RETURN (UPDATE COUNT) DELETED KEYWORD
    $Junk; another session flags and expunges; this one hears ADDTO and REMOVEFROM."""
    user, pw = fresh_user(tern, "ctxb01", messages=messages(5))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "B01", "UID SEARCH RETURN (UPDATE COUNT) DELETED KEYWORD $Junk")
    assert re.search(r'^\* ESEARCH \(TAG "B01"\) UID COUNT 0\r$', got, re.M), got
    assert re.search(r"^B01 OK", got, re.M), got
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    other.uid("STORE", "2,4", "+FLAGS", r"(\Deleted $Junk)")
    other.uid("STORE", "3", "+FLAGS", r"(\Deleted)")  # only one of the two: no match
    got = cmd(c, "n1", "NOOP")
    assert re.search(r'^\* ESEARCH \(TAG "B01"\) UID ADDTO \(0 2,4\)\r$', got, re.M), got
    assert apply_updates([], got, "B01", False) == [2, 4]
    other.expunge()
    got = cmd(c, "n2", "NOOP")
    # UIDs stay valid across the EXPUNGEs: their order is free (§4.3.4 orders the
    # REMOVEFROM of sequence numbers; this server sends every REMOVEFROM first)
    assert re.search(r'^\* ESEARCH \(TAG "B01"\) UID REMOVEFROM \(0 2,4\)\r$', got, re.M), got
    assert len(re.findall(r"^\* 2 EXPUNGE\r$", got, re.M)) == 3, got
    other.logout()
    c.close()


def test_own_store_and_append_update_search(tern):
    """This session's own STORE and an APPEND of a matching message change the result."""
    user, pw = fresh_user(tern, "ctxown", messages=messages(4))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "C01", "UID SEARCH RETURN (UPDATE ALL) FLAGGED")
    assert esearch_all(got, "C01") == []
    result = []
    got = cmd(c, "f1", r"UID STORE 1:3 +FLAGS (\Flagged)")
    result = apply_updates(result, got, "C01", False)
    assert result == [1, 2, 3], got
    got = cmd(c, "f2", r"UID STORE 2 -FLAGS (\Flagged)")
    result = apply_updates(result, got, "C01", False)
    assert result == [1, 3], got
    msg = sample_message(9).replace("\n", "\r\n").encode()
    got = converse(c, [(f"ap APPEND INBOX (\\Flagged) {{{len(msg)}+}}", None)])
    c.send_raw(msg + b"\r\n")
    got = c.read_until(r"^ap (OK|NO|BAD)")
    got += cmd(c, "n", "NOOP")
    result = apply_updates(result, got, "C01", False)
    fresh = cmd(c, "chk", "UID SEARCH RETURN (ALL) FLAGGED")
    assert result == esearch_all(fresh, "chk"), (got, fresh)
    assert len(result) == 3
    c.close()


def test_other_change_synced_after_own_store(tern):
    """Mail another session committed before this session's own STORE (a lower
    mod-sequence, synced only later by NOOP) still reaches the context."""
    user, pw = fresh_user(tern, "ctxrace", messages=messages(2))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    cmd(c, "R01", "UID SEARCH RETURN (UPDATE) SUBJECT urgent")
    other = imaplib_login(tern, user, pw)
    other.append("INBOX", None, None, sample_message(3, subject="urgent: late").encode())
    got = cmd(c, "st", r"STORE 1 +FLAGS (\Seen)")  # sequence form: no sync here
    assert "EXISTS" not in got, got
    got = cmd(c, "n", "NOOP")
    assert "3 EXISTS" in got, got
    assert re.search(r'^\* ESEARCH \(TAG "R01"\) UID ADDTO \(0 3\)\r$', got, re.M), got
    other.logout()
    c.close()


def test_sort_context_positions(tern):
    """CONTEXT=SORT (§4.3.3 C01): positions keep the client's copy in sort order through
    new mail, flag changes and expunges."""
    subjects = ["delta", "bravo", "foxtrot", "alpha", "echo"]
    user, pw = fresh_user(tern, "ctxsort",
                          messages=messages(5, subject=lambda k: subjects[k - 1]))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "C01", "UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN")
    result = esearch_all(got, "C01")
    assert result == [4, 2, 1, 5, 3], got  # alpha bravo delta echo foxtrot
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    for subj in ("charlie", "golf", "aardvark"):
        other.append("INBOX", None, None, sample_message(7, subject=subj).encode())
    other.uid("STORE", "2,5", "+FLAGS", r"(\Seen)")  # bravo and echo leave
    got = cmd(c, "n1", "NOOP")
    result = apply_updates(result, got, "C01", True)
    fresh = cmd(c, "chk", "UID SORT RETURN (ALL) (SUBJECT) UTF-8 UNSEEN")
    assert result == esearch_all(fresh, "chk"), (got, fresh)
    assert result == [8, 4, 6, 1, 3, 7], result
    other.uid("STORE", "1,8", "+FLAGS", r"(\Deleted)")
    other.expunge()
    other.uid("STORE", "5", "-FLAGS", r"(\Seen)")  # echo comes back
    got = cmd(c, "n2", "NOOP")
    result = apply_updates(result, got, "C01", True)
    fresh = cmd(c, "chk2", "UID SORT RETURN (ALL) (SUBJECT) UTF-8 UNSEEN")
    assert result == esearch_all(fresh, "chk2"), (got, fresh)
    assert result == [4, 6, 5, 3, 7], result
    other.logout()
    c.close()


def test_updates_during_idle(tern):
    """§4.3.2: ADDTO may come at any time, also while the client IDLEs; two IDLE sessions
    of the mailbox sync in one batch (the second takes the first one's round) and each
    hears about its own context."""
    user, pw = fresh_user(tern, "ctxidle", messages=messages(2))
    clients = []
    for tag in ("D01", "D02"):
        c = login(tern, user, pw)
        cmd(c, "s", "SELECT INBOX")
        cmd(c, tag, "UID SEARCH RETURN (UPDATE) SUBJECT urgent")
        converse(c, [("i IDLE", r"^\+ ")])
        clients.append((c, tag))
    other = imaplib_login(tern, user, pw)
    other.append("INBOX", None, None, sample_message(3, subject="urgent: read").encode())
    for c, tag in clients:
        got = c.read_until(rf'^\* ESEARCH \(TAG "{tag}"\) UID ADDTO \(0 3\)\r$')
        assert "EXISTS" in got
        converse(c, [("DONE", r"^i OK")])
        c.close()
    other.logout()


def test_refusals_limit_and_tag_reuse(tern):
    """§4.3.1: NOUPDATE beyond the limit (the other options still answered, OK), for the
    sequence-number forms and for volatile criteria; §4.3: a reused tag is BAD."""
    user, pw = fresh_user(tern, "ctxlim", messages=messages(3))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    for k in range(CONTEXT_LIMIT):
        got = cmd(c, f"B{k}", "UID SEARCH RETURN (UPDATE COUNT) ALL")
        assert "NOUPDATE" not in got, got
    got = cmd(c, "B9", "UID SORT RETURN (UPDATE COUNT) (ARRIVAL) UTF-8 ALL")
    assert re.search(r'^\* NO \[NOUPDATE "B9"\]', got, re.M), got
    assert re.search(r'^\* ESEARCH \(TAG "B9"\) UID COUNT 3\r$', got, re.M), got
    assert re.search(r"^B9 OK", got, re.M), got
    got = cmd(c, "B0", "UID SEARCH RETURN (UPDATE) ALL")
    assert re.search(r"^B0 BAD", got, re.M), got
    got = cmd(c, "x1", "CANCELUPDATE \"B0\" \"B1\"")
    assert re.search(r"^x1 OK", got, re.M), got
    got = cmd(c, "S1", "SEARCH RETURN (UPDATE COUNT) ALL")  # sequence numbers: updated
    assert "NOUPDATE" not in got, got
    assert re.search(r'^\* ESEARCH \(TAG "S1"\) COUNT 3\r$', got, re.M), got
    got = cmd(c, "S2", "UID SEARCH RETURN (UPDATE) 1:2")
    assert re.search(r'^\* NO \[NOUPDATE "S2"\]', got, re.M), got
    got = cmd(c, "S3", "UID SEARCH RETURN (UPDATE) YOUNGER 3600")
    assert re.search(r'^\* NO \[NOUPDATE "S3"\]', got, re.M), got
    got = cmd(c, "S4", "UID SEARCH RETURN (UPDATE) UID 1:2")
    assert "NOUPDATE" not in got, got
    got = cmd(c, "S5", "UID SEARCH RETURN (UPDATE) UID 2:*")
    assert re.search(r'^\* NO \[NOUPDATE "S5"\]', got, re.M), got
    got = cmd(c, "S6", "SEARCH RETURN (UPDATE) ALL")  # B2, B3, S1, S4 hold the limit
    assert re.search(r'^\* NO \[NOUPDATE "S6"\]', got, re.M), got
    c.close()


def test_cancelupdate_stops_updates(tern):
    """§4.3.5: after CANCELUPDATE nothing more is said about the context; unknown tags
    and a bad argument list are BAD; a new SELECT drops every context."""
    user, pw = fresh_user(tern, "ctxcan", messages=messages(2))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    cmd(c, "B01", "UID SEARCH RETURN (UPDATE) SEEN")
    cmd(c, "B02", "UID SEARCH RETURN (UPDATE) FLAGGED")
    got = cmd(c, "B04", 'CANCELUPDATE "B01"')
    assert re.search(r"^B04 OK", got, re.M), got
    got = cmd(c, "st", r"UID STORE 1 +FLAGS (\Seen \Flagged)")
    assert 'TAG "B01"' not in got and 'TAG "B02") UID ADDTO (0 1)' in got, got
    assert re.search(r"^b1 BAD", cmd(c, "b1", 'CANCELUPDATE "B01"'), re.M)
    assert re.search(r"^b2 BAD", cmd(c, "b2", "CANCELUPDATE"), re.M)
    assert re.search(r"^b3 BAD", cmd(c, "b3", "CANCELUPDATE B02"), re.M)
    cmd(c, "s2", "SELECT INBOX")
    got = cmd(c, "st2", r"UID STORE 2 +FLAGS (\Flagged)")
    assert "ESEARCH" not in got, got
    assert re.search(r"^b4 BAD", cmd(c, "b4", 'CANCELUPDATE "B02"'), re.M)
    c.close()


def test_partial_with_update(tern):
    """§4.4 A02-A04 shapes: PARTIAL windows (the original range echoed, NIL past the end)
    and UPDATE on the same program notifying about every match (§4.3)."""
    user, pw = fresh_user(tern, "ctxpart", messages=messages(6))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "A02", "UID SEARCH RETURN (PARTIAL 1:4) UNDELETED")
    assert re.search(r'^\* ESEARCH \(TAG "A02"\) UID PARTIAL \(1:4 1:4\)\r$', got, re.M), got
    got = cmd(c, "A03", "UID SEARCH RETURN (PARTIAL 5:9 UPDATE) UNDELETED")
    assert re.search(r'^\* ESEARCH \(TAG "A03"\) UID PARTIAL \(5:9 5:6\)\r$', got, re.M), got
    got = cmd(c, "A04", "UID SEARCH RETURN (PARTIAL 24000:24500) UNDELETED")
    assert re.search(r'^\* ESEARCH \(TAG "A04"\) UID PARTIAL \(24000:24500 NIL\)\r$', got,
                     re.M), got
    got = cmd(c, "d", r"UID STORE 1 +FLAGS (\Deleted)")
    assert re.search(r'^\* ESEARCH \(TAG "A03"\) UID REMOVEFROM \(0 1\)\r$', got, re.M), got
    got = cmd(c, "A05", "UID SORT RETURN (PARTIAL 1:2) (REVERSE SUBJECT) UTF-8 UNDELETED")
    assert re.search(r'^\* ESEARCH \(TAG "A05"\) UID PARTIAL \(1:2 6,5\)\r$', got, re.M), got
    c.close()


def test_imaplib_update_search(tern):
    """A stock client library sends the command and reads the untagged ESEARCH data."""
    user, pw = fresh_user(tern, "ctxlib", messages=messages(3))
    m = imaplib_login(tern, user, pw)
    m.select("INBOX")
    typ, _ = m.uid("SEARCH", "RETURN", "(UPDATE COUNT)", "UNSEEN")
    assert typ == "OK"
    m.uid("STORE", "2", "+FLAGS", r"(\Seen)")
    m.noop()
    data = [d.decode() for d in m.untagged_responses.get("ESEARCH", [])]
    assert any("REMOVEFROM (0 2)" in d for d in data), data
    try:
        m.uid("SEARCH", "RETURN", "(UPDATE COUNT)", "UNSEEN")  # the tag differs: fine
    except imaplib.IMAP4.error as e:
        raise AssertionError(e)
    m.logout()


# ---- sequence-number contexts (SEARCH / SORT RETURN (UPDATE), no UID) ----------------

def apply_seq_updates(result, text, tag, is_sort):
    """Apply, in the order received, the ADDTO/REMOVEFROM (sequence numbers) for tag and
    every EXPUNGE (renumbering the copy, RFC 3501 §7.4.1) to result. A message of the
    copy must have had its REMOVEFROM before its EXPUNGE (RFC 5267 §4.3.4)."""
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^\* (\d+) EXPUNGE$", line)
        if m:
            n = int(m.group(1))
            assert n not in result, ("EXPUNGE before its REMOVEFROM", line, result)
            result = [v - 1 if v > n else v for v in result]
            continue
        m = re.match(rf'^\* ESEARCH \(TAG "{re.escape(tag)}"\) (ADDTO|REMOVEFROM) .*$', line)
        if m:
            assert " UID " not in line, line
            result = apply_updates(result, line.replace(f'"{tag}")', f'"{tag}") UID', 1),
                                   tag, is_sort)
    return result


def esearch_all_seq(text, tag):
    m = re.search(rf'^\* ESEARCH \(TAG "{tag}"\)(?: ALL (\S+))?\r$', text, re.M)
    assert m, text
    return parse_set(m.group(1)) if m.group(1) else []


def test_seq_search_update_flags_and_own_expunge(tern):
    """SEARCH RETURN (UPDATE) names sequence numbers: this session's STORE adds and
    removes; its EXPUNGE sends the REMOVEFROM first, with the numbers before the
    EXPUNGEs renumber them (imaptest search-context-update)."""
    user, pw = fresh_user(tern, "ctxseq", messages=messages(5))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "Q01", "SEARCH RETURN (UPDATE) SEEN")
    assert "NOUPDATE" not in got, got
    assert re.search(r'^\* ESEARCH \(TAG "Q01"\)\r$', got, re.M), got
    got = cmd(c, "f1", r"STORE 1,2,4 +FLAGS (\Seen)")
    assert re.search(r'^\* ESEARCH \(TAG "Q01"\) ADDTO \(0 1:2,4\)\r$', got, re.M), got
    result = apply_seq_updates([], got, "Q01", False)
    got = cmd(c, "f2", r"STORE 1,2 -FLAGS (\Seen)")
    assert re.search(r'^\* ESEARCH \(TAG "Q01"\) REMOVEFROM \(0 1:2\)\r$', got, re.M), got
    result = apply_seq_updates(result, got, "Q01", False)
    assert result == [4]
    cmd(c, "f3", r"STORE 3:5 +FLAGS (\Deleted)")
    got = cmd(c, "x", "EXPUNGE")
    lines = got.splitlines()
    rm = [k for k, ln in enumerate(lines) if 'REMOVEFROM (0 4)' in ln]
    ex = [k for k, ln in enumerate(lines) if ln.endswith(" EXPUNGE")]
    assert len(rm) == 1 and len(ex) == 3 and rm[0] < ex[0], got
    result = apply_seq_updates(result, got, "Q01", False)
    assert result == []
    got = cmd(c, "f4", r"STORE 2 +FLAGS (\Seen)")
    assert re.search(r'^\* ESEARCH \(TAG "Q01"\) ADDTO \(0 2\)\r$', got, re.M), got
    c.close()


def flagged_context(tern, name, n, flagged, tag):
    """A user with n messages, those of the set flagged \\Flagged by a session that then
    opens "SEARCH RETURN (UPDATE ALL) FLAGGED" as tag: (session, user, password, result)."""
    user, pw = fresh_user(tern, name, messages=messages(n))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    cmd(c, "f", rf"STORE {flagged} +FLAGS (\Flagged)")
    got = cmd(c, tag, "SEARCH RETURN (UPDATE ALL) FLAGGED")
    return c, user, pw, esearch_all_seq(got, tag)


def test_seq_search_update_expunge_by_other_session(tern):
    """Expunges another session made reach this one at its NOOP: the REMOVEFROM for the
    ones of the result comes before the EXPUNGEs, in the numbers they had; the copy kept
    by these rules equals a fresh SEARCH."""
    c, user, pw, result = flagged_context(tern, "ctxseqx", 8, "2:7", "Q02")
    assert result == [2, 3, 4, 5, 6, 7]
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    other.uid("STORE", "1,3,6,8", "+FLAGS", r"(\Deleted)")
    other.expunge()
    other.uid("STORE", "4", "-FLAGS", r"(\Flagged)")
    got = cmd(c, "n", "NOOP")
    assert re.search(r'^\* ESEARCH \(TAG "Q02"\) REMOVEFROM \(0 3,6\)\r$', got, re.M), got
    result = apply_seq_updates(result, got, "Q02", False)
    fresh = cmd(c, "chk", "SEARCH RETURN (ALL) FLAGGED")
    assert result == esearch_all_seq(fresh, "chk") == [1, 3, 4], (got, fresh)
    other.logout()
    c.close()


def test_seq_search_update_expunge_during_idle(tern):
    """An expunge reaching an IDLE session: the REMOVEFROM comes before the EXPUNGE, in
    the number the message had (the IDLE sync goes the same way as a command's)."""
    c, user, pw, result = flagged_context(tern, "ctxseqi", 3, "2:3", "Q05")
    assert result == [2, 3]
    converse(c, [("i IDLE", r"^\+ ")])
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    other.uid("STORE", "2", "+FLAGS", r"(\Deleted)")
    other.expunge()
    got = c.read_until(r"^\* 2 EXPUNGE\r$")
    assert re.search(r'^\* ESEARCH \(TAG "Q05"\) REMOVEFROM \(0 2\)\r$', got, re.M), got
    result = apply_seq_updates(result, got, "Q05", False)
    assert result == [2], result
    converse(c, [("DONE", r"^i OK")])
    other.logout()
    c.close()


def test_seq_search_update_append_and_cancel(tern):
    """An APPEND of a matching message: "* 3 EXISTS" first, then the ADDTO naming 3
    (imaptest search-context-update); CANCELUPDATE ends the context (§4.3.5)."""
    user, pw = fresh_user(tern, "ctxseqa", messages=messages(2))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    cmd(c, "Q03", "SEARCH RETURN (UPDATE) SEEN")
    msg = sample_message(9).replace("\n", "\r\n").encode()
    converse(c, [(f"ap APPEND INBOX (\\Seen) {{{len(msg)}+}}", None)])
    c.send_raw(msg + b"\r\n")
    got = c.read_until(r"^ap (OK|NO|BAD)")
    exists = got.find("* 3 EXISTS\r\n")
    addto = got.find('* ESEARCH (TAG "Q03") ADDTO (0 3)\r\n')
    assert 0 <= exists < addto, got
    got = cmd(c, "cu", 'CANCELUPDATE "Q03"')
    assert re.search(r"^cu OK", got, re.M), got
    got = cmd(c, "f", r"STORE 1 +FLAGS (\Seen)")
    assert "ESEARCH" not in got, got
    assert re.search(r"^cu2 BAD", cmd(c, "cu2", 'CANCELUPDATE "Q03"'), re.M)
    c.close()


def test_seq_sort_context_positions(tern):
    """SORT RETURN (UPDATE) without UID: positions as for UID SORT, messages by sequence
    number; an expunge in the middle is removed at its position before the EXPUNGEs."""
    subjects = ["delta", "bravo", "foxtrot", "alpha", "echo", "charlie"]
    user, pw = fresh_user(tern, "ctxseqs",
                          messages=messages(6, subject=lambda k: subjects[k - 1]))
    c = login(tern, user, pw)
    cmd(c, "s", "SELECT INBOX")
    got = cmd(c, "Q04", "SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN")
    result = esearch_all_seq(got, "Q04")
    assert result == [4, 2, 6, 1, 5, 3], got  # alpha bravo charlie delta echo foxtrot
    other = imaplib_login(tern, user, pw)
    other.select("INBOX")
    other.uid("STORE", "2,6", "+FLAGS", r"(\Deleted)")  # bravo, charlie
    other.expunge()
    other.append("INBOX", None, None, sample_message(7, subject="beta").encode())
    got = cmd(c, "n1", "NOOP")
    assert re.search(r'^\* ESEARCH \(TAG "Q04"\) REMOVEFROM \(2 2,6\)\r$', got, re.M), got
    result = apply_seq_updates(result, got, "Q04", True)
    fresh = cmd(c, "chk", "SORT RETURN (ALL) (SUBJECT) UTF-8 UNSEEN")
    assert result == esearch_all_seq(fresh, "chk"), (got, fresh)
    assert result == [3, 5, 1, 4, 2], result  # alpha beta delta echo foxtrot
    got = cmd(c, "f", r"STORE 1 +FLAGS (\Seen)")  # delta leaves (no sync: numbers stay)
    assert re.search(r'^\* ESEARCH \(TAG "Q04"\) REMOVEFROM \(3 1\)\r$', got, re.M), got
    other.logout()
    c.close()
