"""
test_imap_conformance.py - the cases an independent IMAP compliance run (Dovecot's
imaptest scripts) found Tern getting wrong, each replayed on the wire against the real
binary: '[' as an atom char (RFC 3501 §9), UID 4294967295 in a set, ENVELOPE sender and
reply-to defaults (§7.4.2), SEARCH FROM on parsed addresses, LSUB \\Noselect parents
(§6.3.9), LIST (SUBSCRIBED) with \\NonExistent and RECURSIVEMATCH/CHILDINFO (RFC 5258 §4),
and the CONDSTORE MODSEQ values of FETCH and ESEARCH (RFC 7162 §3.1, §3.1.5).
"""

import re

from test_imap_lib import converse, fresh_user, imap_client, imaplib_login

ODD_NAME = "!#$&'+,-.0123456789:;<=>?@^_`|[}"


def login(tern, user, pw):
    c = imap_client(tern)
    converse(c, [(f"a LOGIN {user} {pw}", r"^a OK")])
    return c


def cmd(c, tag, line):
    return converse(c, [(f"{tag} {line}", rf"^{tag} (OK|NO|BAD)")])[0]


def tagged(text, tag):
    return re.search(rf"^{tag} (OK|NO|BAD)", text, re.M).group(1)


def msg(headers, body="body\n"):
    return "".join(f"{h}\n" for h in headers) + "\n" + body


# ---- parser ------------------------------------------------------------------------------

def test_open_bracket_is_an_atom_char(tern):
    user, pw = fresh_user(tern, "cfatom")
    c = login(tern, user, pw)
    got = cmd(c, "b", f"SELECT {ODD_NAME}")
    assert tagged(got, "b") == "NO", got
    got = cmd(c, "c", f'LIST "" {ODD_NAME}%*')
    assert tagged(got, "c") == "OK", got
    # such a name can be created and selected like any other ('.' is not allowed in a
    # Maildir++ name, as in Dovecot)
    assert tagged(cmd(c, "d", "CREATE x[y}"), "d") == "OK"
    got = cmd(c, "e", 'LIST "" x[*')
    assert re.search(r'^\* LIST \(.*\) "/" "?x\[y\}"?\r$', got, re.M), got
    assert tagged(cmd(c, "f", "SELECT x[y}"), "f") == "OK"
    # FETCH sections keep their brackets (spaces and parens inside)
    got = cmd(c, "g", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM)])")
    assert tagged(got, "g") == "OK", got
    got = cmd(c, "h", "FETCH 1 BODY[HEADER.FIELDS (FROM)")
    assert tagged(got, "h") == "BAD", got


def test_uid_search_up_to_the_largest_uid(tern):
    user, pw = fresh_user(tern, "cfuid", messages=[msg(["Subject: a"]), msg(["Subject: b"])])
    c = login(tern, user, pw)
    cmd(c, "b", "SELECT INBOX")
    got = cmd(c, "c", "UID SEARCH UID 1:4294967295")
    assert tagged(got, "c") == "OK", got
    assert re.search(r"^\* SEARCH 1 2\r$", got, re.M), got
    got = cmd(c, "d", "UID SEARCH UID 4294967295")
    assert re.search(r"^\* SEARCH\r$", got, re.M), got
    got = cmd(c, "e", "UID FETCH 1:4294967295 UID")
    assert got.count("FETCH (UID") == 2, got


# ---- ENVELOPE ----------------------------------------------------------------------------

def test_envelope_sender_and_reply_to_default_to_from(tern):
    base = ["Date: Thu, 15 Feb 2007 01:02:03 +0200"]
    user, pw = fresh_user(tern, "cfenv", messages=[
        msg(base + ["From: user@domain (Real Name)"]),
        msg(base + ["From: user@domain (Real Name)", "Sender: ", "Reply-To: "]),
        msg(base + ["From: <@route:user@domain>"]),
    ])
    m = imaplib_login(tern, user, pw)
    m.select("INBOX")
    typ, data = m.fetch("1:3", "ENVELOPE")
    assert typ == "OK"
    real = '(("Real Name" NIL "user" "domain"))'
    for line in data[:2]:
        env = line.decode()
        assert env.count(real) == 3, env  # from, sender, reply-to
        assert env.endswith("NIL NIL NIL NIL NIL))"), env
    assert data[2].decode().count('((NIL "@route" "user" "domain"))') == 3, data[2]
    m.logout()


# ---- SEARCH on addresses -----------------------------------------------------------------

def test_search_from_matches_parsed_addresses(tern):
    user, pw = fresh_user(tern, "cfaddr", messages=[
        msg(["From: user-from@domain.org"]),
        msg(["From: RealFrom <user-from@domain.org>"]),
        msg(["From: <user-from (comment)@ (comment) domain.org>"]),
        msg(["From: user-from@domain.org (RealFrom)"]),
        msg(["From: user-from1@domain.org, user-from2@domain.org"]),
        msg(["From: x@y", "To: groupname: groupuser1@domain.org, groupuser2@domain.org;,",
             "  groupname2: groupuser3@domain.org;"]),
        msg(["From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>"]),
    ])
    m = imaplib_login(tern, user, pw)
    m.select("INBOX")

    def search(*crit):
        typ, data = m.search(None, *crit)
        assert typ == "OK"
        return data[0].decode().split()

    assert search("FROM", "user-from@domain.org") == ["1", "2", "3", "4"]
    assert search("FROM", "realfrom") == ["2", "4"]
    assert search("FROM", "ser-fro") == ["1", "2", "3", "4", "5"]
    assert search("FROM", "user-from2") == ["5"]
    assert search("TO", "groupname") == ["6"]
    assert search("TO", "groupuser3") == ["6"]
    assert search("TO", "groupuser4") == []
    # the display name is matched after RFC 2047 decoding
    m.literal = "jürgen".encode()
    assert m.search("UTF-8", "FROM")[1][0].decode().split() == ["7"]
    m.logout()


# ---- LSUB and LIST (SUBSCRIBED) ----------------------------------------------------------

def test_lsub_lists_unsubscribed_parents_as_noselect(tern):
    user, pw = fresh_user(tern, "cflsub")
    c = login(tern, user, pw)
    for box in ("t", "t/a", "t/b/", "t/b/x", "t/c/", "t/c/y"):
        cmd(c, "b", f"CREATE {box}")
    for box in ("t/a", "t/b/x", "t/c/y"):
        cmd(c, "c", f"SUBSCRIBE {box}")
    got = cmd(c, "d", 'LSUB "" t/%')
    lines = sorted(re.findall(r'^\* LSUB \(([^)]*)\) "/" "?([^"\r]+)"?\r$', got, re.M),
                   key=lambda x: x[1])
    names = [n.strip('"') for _, n in lines]
    assert names == ["t/a", "t/b", "t/c"], got
    attrs = {n.strip('"'): a for a, n in lines}
    assert "\\Noselect" not in attrs["t/a"]
    assert "\\Noselect" in attrs["t/b"] and "\\Noselect" in attrs["t/c"]
    got = cmd(c, "e", 'LSUB "" *x')
    assert re.findall(r'^\* LSUB .* "?([^" ]+)"?\r$', got, re.M) == ["t/b/x"], got


def test_list_subscribed_keeps_deleted_names_as_nonexistent(tern):
    user, pw = fresh_user(tern, "cfsub")
    c = login(tern, user, pw)
    for box in ("m/one", "m/gone"):
        cmd(c, "b", f"CREATE {box}")
        cmd(c, "c", f"SUBSCRIBE {box}")
    cmd(c, "d", "DELETE m/gone")
    got = cmd(c, "e", 'LIST (SUBSCRIBED) "" m/*')
    assert re.search(r'^\* LIST \(\\Subscribed\) "/" "m/one"\r$', got, re.M), got
    gone = re.search(r'^\* LIST \(([^)]*)\) "/" "m/gone"\r$', got, re.M)
    assert gone and set(gone.group(1).split()) == {"\\Subscribed", "\\NonExistent"}, got
    # the plain LIST does not show a name without a mailbox; LSUB does; it can be
    # unsubscribed although it no longer exists
    assert "m/gone" not in cmd(c, "f", 'LIST "" m/*')
    assert "m/gone" in cmd(c, "g", 'LSUB "" m/*')
    assert tagged(cmd(c, "h", "UNSUBSCRIBE m/gone"), "h") == "OK"
    assert "m/gone" not in cmd(c, "i", 'LIST (SUBSCRIBED) "" m/*')
    # a rename carries the subscription along
    cmd(c, "j", "RENAME m/one m/two")
    got = cmd(c, "k", 'LSUB "" m/*')
    assert "m/two" in got and "m/one" not in got, got


def test_recursivematch_childinfo_only_for_unlisted_children(tern):
    user, pw = fresh_user(tern, "cfrec")
    c = login(tern, user, pw)
    for box in ("r/t2/", "r/t2/t1", "r/t8/t8", "r/t8/t9"):
        cmd(c, "b", f"CREATE {box}")
    for box in ("r/t2/t1", "r/t8/t8", "r/t8/t9"):
        cmd(c, "c", f"SUBSCRIBE {box}")
    got = cmd(c, "d", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" (r/t2)')
    assert re.search(r'^\* LIST \(\) "/" "r/t2" \("CHILDINFO" \("SUBSCRIBED"\)\)\r$', got, re.M), got
    got = cmd(c, "e", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" (r/t2 r/t2/t1)')
    assert '"r/t2" ' not in got and "CHILDINFO" not in got, got
    assert re.search(r'^\* LIST \(\\Subscribed\) "/" "r/t2/t1"\r$', got, re.M), got
    got = cmd(c, "f", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" r*t8')
    assert re.search(r'"/" "r/t8" \("CHILDINFO" \("SUBSCRIBED"\)\)\r$', got, re.M), got
    assert re.search(r'^\* LIST \(\\Subscribed\) "/" "r/t8/t8"\r$', got, re.M), got


# ---- CONDSTORE -----------------------------------------------------------------------------

def test_condstore_modseq_of_fetch_and_esearch(tern):
    user, pw = fresh_user(tern, "cfmod", messages=[msg([f"Subject: {i}"]) for i in range(4)])
    c = login(tern, user, pw)
    cmd(c, "b", "SELECT INBOX")
    # the first CONDSTORE-enabling command tells HIGHESTMODSEQ
    got = cmd(c, "c", "FETCH 1 MODSEQ")
    hms = int(re.search(r"^\* OK \[HIGHESTMODSEQ (\d+)\]", got, re.M).group(1))
    assert int(re.search(r"MODSEQ \((\d+)\)", got).group(1)) <= hms
    modseq = {}
    for seq in (1, 3, 2, 4):
        got = cmd(c, "d", f"STORE {seq} +FLAGS \\Seen")
        modseq[seq] = int(re.search(rf"^\* {seq} FETCH \(.*MODSEQ \((\d+)\)", got, re.M).group(1))
    assert modseq[1] < modseq[3] < modseq[2] < modseq[4]
    got = cmd(c, "e", "FETCH 1:4 MODSEQ")
    for seq in range(1, 5):
        assert re.search(rf"^\* {seq} FETCH \(MODSEQ \({modseq[seq]}\)\)", got, re.M), got

    def esearch(ret, crit):
        got = cmd(c, "f", f'SEARCH RETURN ({ret}) {crit}')
        return re.search(r"^\* ESEARCH \(TAG \"f\"\)(.*)\r$", got, re.M).group(1)

    assert esearch("MIN", "1:3 MODSEQ 1") == f" MIN 1 MODSEQ {modseq[1]}"
    assert esearch("MAX", "1:3 MODSEQ 1") == f" MAX 3 MODSEQ {modseq[3]}"
    assert esearch("", "1:3 MODSEQ 1") == f" ALL 1:3 MODSEQ {modseq[2]}"
    assert esearch("MIN MAX", "2:3 MODSEQ 1") == f" MIN 2 MAX 3 MODSEQ {modseq[2]}"
    assert esearch("ALL", f"2:3 MODSEQ {modseq[2]}") == f" ALL 2 MODSEQ {modseq[2]}"
    assert esearch("ALL", f"2:3 MODSEQ {modseq[4]}") == ""
