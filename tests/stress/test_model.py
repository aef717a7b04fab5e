"""
test_model.py - the stress tester's model on canned transcripts (no server): each rule
must accept a correct exchange and flag the broken one, so a tester that can never fail
is impossible. Run: /usr/bin/python3 -m pytest tests/stress/test_model.py -q
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imapwire import WireError, format_set, parse_response, parse_set  # noqa: E402
from model import (Cmd, FinalState, ImapModel, Ledger, Pop3Model, Violations,  # noqa: E402
                   check_final)
from msggen import message_for  # noqa: E402

USER = "u@example.test"
MBOX = (USER, "INBOX")
SYS_FLAGS = "\\Answered \\Flagged \\Deleted \\Seen \\Draft"


def R(text):
    """Raw response bytes from text; literals written as {n}\\r\\n<bytes> inline."""
    data = text.encode() if isinstance(text, str) else text
    return parse_response(data if data.endswith(b"\r\n") else data + b"\r\n")


class Session:
    """A model plus helpers to feed it one command and its responses."""

    def __init__(self):
        self.v = Violations()
        self.ledger = Ledger()
        self.t = 0.0
        self.m = ImapModel(USER, self.v, self.ledger, who="test", clock=self.clock)
        self.n = 0

    def clock(self):
        self.t += 1.0
        return self.t

    def cmd(self, cmd, *responses, status="OK"):
        self.n += 1
        cmd.sent = self.clock()
        rs = [R(r) for r in responses]
        if status:
            rs.append(R(f"A{self.n} {status}"))
        self.m.apply(cmd, rs)
        return self

    def select(self, n=3, uidnext=None, keywords="", start_uid=1):
        self.cmd(Cmd("SELECT", mailbox="INBOX", line="SELECT INBOX"),
                 f"* FLAGS ({SYS_FLAGS}{' ' + keywords if keywords else ''})",
                 f"* OK [PERMANENTFLAGS ({SYS_FLAGS} \\*)] ok",
                 f"* {n} EXISTS", "* 0 RECENT",
                 "* OK [UIDVALIDITY 77] ok", f"* OK [UIDNEXT {uidnext or start_uid + n}] ok",
                 status="OK [READ-WRITE] done")
        return self

    def sync(self, uids, tokens=None):
        """FETCH 1:n (UID FLAGS) giving the view these UIDs."""
        lines = []
        for i, u in enumerate(uids):
            tok = (tokens or {}).get(u)
            if tok:
                h = f"X-Stress-Id: {tok}\r\n\r\n"
                lines.append(f"* {i + 1} FETCH (UID {u} FLAGS () BODY[HEADER.FIELDS "
                             f"(X-STRESS-ID)] {{{len(h)}}}\r\n{h})")
            else:
                lines.append(f"* {i + 1} FETCH (UID {u} FLAGS ())")
        seqs = list(range(1, len(uids) + 1))
        c = Cmd("FETCH", targets=seqs, items=["UID", "FLAGS"], line="FETCH sync")
        c.target_uids = {}
        return self.cmd(c, *lines)

    def kinds(self):
        return dict(self.v.counts)


def fetch_cmd(seqs, items=("FLAGS",), uid=False, uids=None):
    c = Cmd("FETCH", uid=uid, targets=list(seqs), items=list(items), line="FETCH")
    c.target_uids = dict(zip(seqs, uids or [None] * len(seqs)))
    return c


# --- wire parser ----------------------------------------------------------------------

def test_parse_fetch_with_literal_and_section():
    r = R(b'* 2 FETCH (UID 7 BODY[HEADER.FIELDS (X-STRESS-ID)] {5}\r\nab\r\nc FLAGS (\\Seen kw))')
    assert r.number == 2 and r.name == "FETCH"
    assert r.data == {"UID": "7", "BODY[HEADER.FIELDS (X-STRESS-ID)]": b"ab\r\nc",
                      "FLAGS": ["\\Seen", "kw"]}


def test_parse_status_with_code_and_nil():
    r = R("A1 OK [COPYUID 5 1:3 10:12] Copy done")
    assert r.kind == "tagged" and r.code == ("COPYUID", ["5", "1:3", "10:12"])
    assert r.text == "Copy done"
    assert R('* 1 FETCH (ENVELOPE (NIL "s" NIL NIL NIL NIL NIL NIL NIL "<m>"))').data[
        "ENVELOPE"][0] is None


def test_parse_rejects_garbage():
    with pytest.raises(WireError):
        R("* 1 FETCH (UID 5")
    with pytest.raises(WireError):
        R("A1 FROB")


def test_sets_round_trip():
    assert parse_set("1,3:5,9") == [1, 3, 4, 5, 9]
    assert parse_set("7,2:1") == [7, 2, 1]
    assert format_set([9, 1, 3, 4, 5]) == "1,3:5,9"


# --- IMAP: the view ---------------------------------------------------------------------

def test_clean_session_has_no_violation():
    s = Session().select(3).sync([1, 2, 3])
    s.cmd(Cmd("NOOP", line="NOOP"), "* 4 EXISTS", "* 1 RECENT", "* 2 EXPUNGE")
    s.cmd(fetch_cmd([3], ("UID", "FLAGS")), "* 3 FETCH (UID 4 FLAGS (\\Recent))")
    s.cmd(Cmd("STORE", targets=[1], flags=["\\Seen"], line="STORE"),
          "* 1 FETCH (FLAGS (\\Seen))")
    assert s.kinds() == {}
    assert [e.uid for e in s.m.view] == [1, 3, 4]


def test_keyword_must_be_announced_by_flags_first():
    s = Session().select(2).sync([1, 2])
    s.cmd(Cmd("STORE", targets=[1], flags=["kw"], line="STORE 1 +FLAGS (kw)"),
          "* 1 FETCH (FLAGS (kw))")
    assert s.kinds() == {"keyword-unannounced": 1}
    ok = Session().select(2).sync([1, 2])
    ok.cmd(Cmd("STORE", targets=[1], flags=["kw"], line="STORE 1 +FLAGS (kw)"),
           f"* FLAGS ({SYS_FLAGS} kw)", "* 1 FETCH (FLAGS (kw))")
    assert ok.kinds() == {}


def test_keyword_needs_permanentflags_star_or_listing():
    s = Session()
    s.cmd(Cmd("SELECT", mailbox="INBOX", line="SELECT INBOX"),
          f"* FLAGS ({SYS_FLAGS} kw)", f"* OK [PERMANENTFLAGS ({SYS_FLAGS})] ok",
          "* 1 EXISTS", "* OK [UIDVALIDITY 1] ok", status="OK [READ-WRITE] ok")
    s.cmd(fetch_cmd([1]), "* 1 FETCH (FLAGS (kw))")
    assert s.kinds() == {"permanentflags": 1, "keyword-not-permanent": 1}


def test_expunge_and_exists_arithmetic():
    s = Session().select(2).sync([1, 2])
    s.cmd(Cmd("NOOP", line="NOOP"), "* 3 EXPUNGE", "* 1 EXISTS", "* 5 FETCH (FLAGS ())",
          "* 3 RECENT")
    assert s.kinds() == {"expunge-range": 1, "exists-decrease": 1, "fetch-range": 1,
                         "recent-range": 1}


def test_expunge_forbidden_during_fetch_store_search():
    s = Session().select(2).sync([1, 2])
    s.cmd(fetch_cmd([1]), "* 2 EXPUNGE", "* 1 FETCH (FLAGS ())")
    assert s.kinds() == {"expunge-during-fetch": 1}
    ok = Session().select(2).sync([1, 2])
    ok.cmd(fetch_cmd([1], uid=True), "* 2 EXPUNGE", "* 1 FETCH (UID 1 FLAGS ())")
    assert ok.kinds() == {}


def test_uids_strictly_ascending_and_never_reused():
    s = Session().select(3, uidnext=10).sync([1, 5, 3])
    assert s.kinds() == {"uid-order": 1}
    s = Session().select(2).sync([1, 2])
    s.cmd(Cmd("NOOP", line="NOOP"), "* 2 EXPUNGE", "* 2 EXISTS")
    s.cmd(fetch_cmd([2], ("UID",)), "* 2 FETCH (UID 2)")
    assert s.kinds() == {"uid-reused": 1, "uid-order": 1}


def test_uid_must_be_below_uidnext_at_select():
    s = Session().select(2, uidnext=3).sync([1, 3])
    assert s.kinds() == {"uid-order": 1}


def test_uid_of_a_message_cannot_change():
    s = Session().select(2).sync([1, 2])
    s.cmd(fetch_cmd([2], ("UID",)), "* 2 FETCH (UID 9)")
    assert s.kinds() == {"uid-changed": 1}


# --- IMAP: tagged replies ---------------------------------------------------------------

def test_bad_and_no_are_violations():
    s = Session().select(2).sync([1, 2])
    s.cmd(fetch_cmd([1]), status="BAD Invalid")
    s.cmd(fetch_cmd([2], uids=[2]), status="NO Some messages could not be fetched.")
    s.cmd(Cmd("STORE", targets=[1], flags=["\\Seen"], line="STORE"), status="NO oops")
    assert s.kinds() == {"bad": 1, "no-fetch": 1, "no-store": 1}


def test_fetch_must_answer_every_message_in_the_view():
    s = Session().select(2).sync([1, 2])
    s.cmd(fetch_cmd([1, 2], ("FLAGS",), uids=[1, 2]), "* 1 FETCH (FLAGS ())")
    assert s.kinds() == {"fetch-missing": 1}


def test_expungeissued_is_settled_at_the_end():
    """OK [EXPUNGEISSUED] may omit a message, NO [EXPUNGEISSUED] may refuse a STORE,
    only if that message really is gone when the run ends."""
    s = Session().select(2).sync([1, 2])
    s.cmd(fetch_cmd([1, 2], ("FLAGS",), uids=[1, 2]), "* 1 FETCH (FLAGS ())",
          status="OK [EXPUNGEISSUED] Some messages were already expunged.")
    st = Cmd("STORE", targets=[2], flags=["\\Seen"], line="STORE 2")
    st.target_uids = {2: 2}
    s.cmd(st, status="NO [EXPUNGEISSUED] Some of the requested messages no longer exist.")
    assert s.kinds() == {}
    assert len(s.ledger.claims) == 2
    s.ledger.intents.add((MBOX, 2))             # another session deleted it
    gone = Violations()
    check_final(s.ledger, FinalState(mailboxes={MBOX: {1: (frozenset(), None)}}), gone)
    assert dict(gone.counts) == {}
    still = Violations()
    check_final(s.ledger, FinalState(mailboxes={MBOX: {1: (frozenset(), None),
                                                       2: (frozenset(), None)}}), still)
    assert dict(still.counts) == {"fetch-missing": 1, "no-store": 1}


def test_select_must_be_complete_and_writable():
    s = Session()
    s.cmd(Cmd("SELECT", mailbox="INBOX", line="SELECT INBOX"), "* 0 EXISTS",
          f"* OK [PERMANENTFLAGS ({SYS_FLAGS})] ok", status="OK [READ-ONLY] done")
    assert s.kinds() == {"select-incomplete": 1, "select-mode": 1, "permanentflags": 1}


def test_append_needs_appenduid_above_known_uids():
    s = Session().select(2).sync([1, 2])
    s.cmd(Cmd("APPEND", mailbox="INBOX", token="r.a1.1", line="APPEND"), status="OK done")
    s.cmd(Cmd("APPEND", mailbox="INBOX", token="r.a1.2", line="APPEND"),
          status="OK [APPENDUID 77 2] done")
    s.cmd(Cmd("APPEND", mailbox="INBOX", token="r.a1.3", line="APPEND"),
          status="OK [APPENDUID 78 9] done")
    assert s.kinds() == {"appenduid": 1, "uid-order": 1, "uidvalidity-changed": 1}


def test_copyuid_must_match_the_targets():
    s = Session().select(2).sync([1, 2])
    c = Cmd("COPY", uid=True, targets=[1, 2], mailbox="Box1", line="UID COPY 1:2 Box1")
    s.cmd(c, status="OK [COPYUID 5 1:2 0,0] Copy completed.")
    assert s.kinds() == {"copyuid": 1}


def test_content_is_checked_against_the_stored_message():
    tok = "r.a1.7"
    msg = message_for(tok)
    s = Session().select(1).sync([1], tokens={1: tok})
    good = msg.body
    s.cmd(fetch_cmd([1], ("BODY[TEXT]",)), b"* 1 FETCH (BODY[TEXT] {%d}\r\n" % len(good)
          + good + b")")
    assert s.kinds() == {}
    bad = good[:-3] + b"XY\n"
    s.cmd(fetch_cmd([1], ("BODY[TEXT]", "RFC822.SIZE")), b"* 1 FETCH (BODY[TEXT] {%d}\r\n"
          % len(bad) + bad + b" RFC822.SIZE %d)" % len(msg.raw))
    s.cmd(fetch_cmd([1], ("BODY[]",)), "* 1 FETCH (BODY[] NIL)")
    s.cmd(fetch_cmd([1], ("ENVELOPE",)), "* 1 FETCH (ENVELOPE NIL)")
    assert s.kinds() == {"fetch-syntax": 1}     # NIL is not an envelope, ever
    # Wrong or NIL data is what a server may serve for a message another session
    # expunged (Dovecot does): a violation only if the message is still there.
    assert [c[0] for c in s.ledger.claims] == ["content", "content"]
    kept = Violations()
    check_final(s.ledger, FinalState(mailboxes={MBOX: {1: (frozenset(), tok)}}), kept)
    assert dict(kept.counts) == {"content": 2}
    s.ledger.intents.add((MBOX, 1))
    gone = Violations()
    check_final(s.ledger, FinalState(mailboxes={MBOX: {}}), gone)
    assert dict(gone.counts) == {}


# --- end of run -------------------------------------------------------------------------

def test_final_lost_duplicate_and_convergence():
    led = Ledger()
    led.note_uid(MBOX, 1, "r.a1.1")
    led.note_uid(MBOX, 2, "r.a1.2")
    led.note_uid(MBOX, 3, "r.a1.3")
    led.intents.add((MBOX, 3))                  # 3 was \Deleted: may be gone
    led.attempts[(USER, "r.a1.1")] = 1
    led.acked_smtp.append((USER, "r.s1.1"))    # acknowledged, never seen
    led.snapshots.append((MBOX, "c1", {1: frozenset({"\\seen"}), 4: frozenset()}, ""))
    led.snapshots.append((MBOX, "c2", {1: frozenset(), 4: frozenset()}, ""))
    led.note_uid(MBOX, 5, "r.a1.5")            # a view held it; gone, back as UID 6
    led.last_flags[(MBOX, 5)] = ("c1", [])
    led.note_uid(MBOX, 7, "r.a1.5")            # a COPYUID named it; it never came
    final = FinalState(mailboxes={MBOX: {1: (frozenset({"\\seen"}), "r.a1.1"),
                                         4: (frozenset(), "r.a1.1"),
                                         6: (frozenset(), "r.a1.5")}})
    for _, _, snap, _ in led.snapshots:
        snap[6] = frozenset()
    v = Violations()
    check_final(led, final, v)
    assert dict(v.counts) == {"lost": 3, "duplicate": 1, "flags-diverge": 1,
                              "uid-renumbered": 1}


def test_delivery_deleted_over_pop3_before_any_imap_view_is_not_lost():
    """An SMTP delivery no IMAP view ever saw, read (TOP) and DELE'd by a POP3 session that
    sent QUIT, is gone by request; one nobody deleted is still lost."""
    led = Ledger()
    v = Violations()
    p = Pop3Model(USER, v, led)
    p.on_login(1.0)
    p.on_uidl({1: "u1"})
    p.tokens[1] = "r.s1.1"
    p.on_dele(1)
    p.on_quit_sent()
    led.acked_smtp.append((USER, "r.s1.1"))
    led.acked_smtp.append((USER, "r.s1.2"))
    check_final(led, FinalState(mailboxes={MBOX: {}}), v)
    assert dict(v.counts) == {"lost": 1}
    assert "r.s1.2" in v.examples["lost"][0]["detail"]


def test_final_uid_reuse_and_resurrection():
    led = Ledger()
    led.note_uid(MBOX, 1, "r.a1.1")
    led.note_uid(MBOX, 2, "r.a1.2")
    led.expunged[(MBOX, 2)] = 5.0
    final = FinalState(mailboxes={MBOX: {1: (frozenset(), "r.a1.9"),
                                         2: (frozenset(), "r.a1.2")}})
    v = Violations()
    check_final(led, final, v)
    assert dict(v.counts) == {"uid-reused": 1, "uid-resurrected": 1}


# --- POP3 -------------------------------------------------------------------------------

def test_pop3_sizes_and_content():
    tok = "r.a1.3"
    raw = message_for(tok).raw
    lines = raw[:-2].split(b"\r\n")
    v, led = Violations(), Ledger()
    p = Pop3Model(USER, v, led)
    p.on_login(1.0)
    p.on_list({1: len(raw), 2: 10})
    p.on_stat(2, len(raw) + 10)
    p.on_uidl({1: "u1", 2: "u2"})
    p.on_retr(1, lines, len(raw))
    assert dict(v.counts) == {}
    p.on_list({1: len(raw) + 1, 2: 10})         # LIST changed within the session
    p.on_stat(2, 5)
    p2 = Pop3Model(USER, v, led)
    p2.on_list({1: len(raw) + 2})               # stuffed size reported (RFC 1939 §11)
    p2.on_uidl({1: "u1"})
    p2.on_retr(1, lines, len(raw))
    assert dict(v.counts) == {"pop3-list": 1, "pop3-stat": 1, "pop3-size": 1}


def test_pop3_deletions_stick():
    led = Ledger()
    v = Violations()
    p = Pop3Model(USER, v, led)
    p.on_login(1.0)
    p.on_uidl({1: "u1", 2: "u2"})
    p.tokens[1] = "r.a1.1"
    p.on_dele(1)
    p.on_quit_sent()
    p.on_quit_ok(2.0)
    later = Pop3Model(USER, v, led)
    later.on_login(3.0)
    later.on_uidl({1: "u1", 2: "u2"})           # u1 is back after an acknowledged QUIT
    final = FinalState(mailboxes={MBOX: {}}, pop3={USER: {"u1"}})
    check_final(led, final, v)
    assert dict(v.counts) == {"pop3-dele": 2, "pop3-count": 1}


def test_final_message_nobody_created_is_flagged():
    """A token of this run that no APPEND/RCPT/COPY attempted (e.g. half an APPEND
    literal from a client that left) must not be stored."""
    led = Ledger()
    led.attempts[(USER, "r.a1.1")] = 1
    final = FinalState(mailboxes={MBOX: {1: (frozenset(), "r.a1.1"), 2: (frozenset(), "r.a9.9"),
                                         3: (frozenset(), "old.a1.1")}}, run_id="r")
    v = Violations()
    check_final(led, final, v)
    assert dict(v.counts) == {"duplicate": 1}


def test_expungeissued_for_a_message_whose_uid_is_not_known_yet():
    """The sync FETCH after EXISTS may leave out a message expunged meanwhile; if that
    message shows up later with its UID, it must be gone at the end."""
    s = Session().select(1).sync([1])
    s.cmd(Cmd("NOOP", line="NOOP"), "* 3 EXISTS")
    c = Cmd("FETCH", targets=[2, 3], items=["UID", "FLAGS"], line="FETCH 2:3 sync")
    c.target_uids = {}
    s.cmd(c, "* 2 FETCH (UID 5 FLAGS ())", status="OK [EXPUNGEISSUED] Some were expunged")
    assert s.kinds() == {} and not s.ledger.claims
    s.cmd(fetch_cmd([3], ("UID",)), "* 3 FETCH (UID 6)")
    assert [c[0] for c in s.ledger.claims] == ["fetch-missing"]
    v = Violations()
    check_final(s.ledger, FinalState(mailboxes={MBOX: {1: (frozenset(), None),
                                                       5: (frozenset(), None),
                                                       6: (frozenset(), None)}}), v)
    assert dict(v.counts) == {"fetch-missing": 1}


# --- chaos: which client reports an event explains (chaos.classify) -------------------

def _chaos_event(action, t, end, pid=None):
    import chaos
    e = chaos.Event(t, action, action.split("-", 1)[-1] if pid else None, pid,
                    9 if pid else None)
    e.end = end
    return e


def _classify(pending, events):
    from collections import Counter
    import chaos
    v, counts = Violations(), Counter()
    chaos.classify(pending, events, v, counts, t0=0.0)
    return v, counts


def test_chaos_cut_needs_a_session_older_than_a_cutting_event():
    ev = [_chaos_event("kill-worker", 10.0, 11.0, pid=42)]
    ok = ("disconnect", 10.5, 9.0, "client 1 connection lost", "")
    young = ("disconnect", 10.5, 10.2, "client 2 connection lost", "")   # began after it
    late = ("disconnect", 20.0, 9.0, "client 3 connection lost", "")     # long after it
    v, counts = _classify([ok, young, late], ev)
    assert counts == {"cut (disconnect)": 1}
    assert v.counts == {"disconnect": 2}
    # the death of the queue process ends no client's session
    v, counts = _classify([ok], [_chaos_event("kill-queue", 10.0, 11.0, pid=43)])
    assert v.counts == {"disconnect": 1} and not counts
    # a refused connection is never a cut (the master holds the listeners)
    refused = ("connect", 10.5, 9.0, "IMAP connect: ConnectionRefusedError(111)", "")
    v, counts = _classify([refused], ev)
    assert v.counts == {"connect": 1}


def test_chaos_temporary_only_where_it_can_happen():
    auth = [_chaos_event("kill-auth", 5.0, 7.0, pid=44)]
    temp = ("no-login", 6.0, 5.5, "client 1 'LOGIN u ***' -> A1 NO [UNAVAILABLE] Temporary "
            "authentication failure.", "")
    wrong = ("no-login", 6.0, 5.5, "client 1 'LOGIN u ***' -> A1 NO [AUTHENTICATIONFAILED] "
             "Authentication failed.", "")
    smtp = ("smtp", 6.5, 6.4, "client 2 (smtp): RCPT TO:<u> -> 451 b'4.3.0 Temporary'", "")
    v, counts = _classify([temp, wrong, smtp], auth)
    assert counts == {"temporary (no-login)": 1, "temporary (smtp)": 1}
    # a right password refused is a wrong answer whatever happened to the auth process
    assert v.counts == {"no-login": 1}
    # the same replies with no event near, or after a login process died: violations
    for events in ([], [_chaos_event("kill-login", 5.0, 7.0, pid=45)]):
        v, counts = _classify([temp, wrong, smtp], events)
        assert v.counts == {"no-login": 2, "smtp": 1} and not counts, events
    # a NO that is not temporary is never excused
    other = ("no-select", 6.0, 5.5, "client 1 'SELECT INBOX' -> A2 NO Mailbox missing", "")
    v, counts = _classify([other], auth)
    assert v.counts == {"no-select": 1}
