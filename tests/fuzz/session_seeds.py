#!/usr/bin/python3
"""session_seeds.py - writes the seed corpora of fuzz_imap_session and fuzz_pop3_session
(tests/fuzz/corpus/fuzz_{imap,pop3}_session/) from the realistic sessions below.

The script format is in tests/unit/session_script.h: byte 0 flags, byte 1 split mode,
then client bytes with 0xFF-prefixed operations. The sessions follow what the admins of
the user's seed documents (outside this repository) type in telnet and openssl s_client
sessions, plus the orderings a real client and server produce (pipelining, literals
across reads, slow readers, disconnects while a job runs).
tests/unit/test_session_replay.c replays every file and
checks the replies each one must reach; add a row there for a new seed.

Usage: tests/fuzz/session_seeds.py   (rewrites the two corpus folders' seed files)
"""
import base64
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# flags (byte 0)
LOOPBACK, IMPLICIT_TLS, MANUAL_JOBS, MANUAL_READS = 0x01, 0x02, 0x04, 0x08
END_EOF, END_RESET, END_TIMEOUT, END_SHUTDOWN = 0x00, 0x10, 0x20, 0x30
MANUAL_HANDSHAKE = 0x40
# split (byte 1)
WHOLE, PER_LINE = 0, 128


def op(name, arg=None):
    """An operation: 0xFF, its letter and its argument byte, if it takes one."""
    out = b"\xff" + name.encode()
    if arg is not None:
        out += bytes([arg])
    return out


CUT = b"\xff|"  # ends a segment (what 'X' repeats) and does nothing else


def script(flags, split, *parts):
    body = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
    return bytes([flags, split]) + body


def plain_ir(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


def literal_message(subject, size=0):
    text = "From: alice@example.test\r\nSubject: %s\r\n\r\nBody text.\r\n" % subject
    if size > len(text):
        text += "x" * (size - len(text) - 2) + "\r\n"
    return text


def imap_seeds():
    login = "a LOGIN alice@example.test pw\r\n"
    m1 = literal_message("appended")
    m2 = literal_message("second")
    m3 = literal_message("third")
    big = literal_message("too big for bob", 4000)
    utf8_msg = "From: J\u00f6ran <j@example.test>\r\nSubject: Gr\u00fc\u00dfe\r\n\r\nx\r\n"
    return {
        # seed 000: LOGIN, CAPABILITY, LIST, SELECT, FETCH FLAGS, FETCH body[text], LOGOUT
        "telnet_basic": script(LOOPBACK, PER_LINE,
            login,
            "b CAPABILITY\r\n",
            'c LIST "" "*"\r\n',
            "d SELECT INBOX\r\n",
            "e FETCH 1:* FLAGS\r\n",
            "f FETCH 1 body[text]\r\n",
            "g LOGOUT\r\n"),
        # seed 001: body[header], body, body[] and the rest of FETCH's items
        "fetch_items": script(LOOPBACK, WHOLE,
            login, "b EXAMINE INBOX\r\n",
            "c FETCH 1 (ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE UID FLAGS)\r\n",
            "d FETCH 2 (BODY BODY.PEEK[HEADER.FIELDS (Subject From)] BODY[1.1] BODY[1.2.MIME])\r\n",
            "e FETCH 2 (BODY[2]<0.10> BODY.PEEK[1.1]<5.20> BODY.PEEK[TEXT]<0.1>)\r\n",
            "f FETCH 4 (BODYSTRUCTURE BODY[2.HEADER] BODY[2.TEXT] RFC822.HEADER)\r\n",
            "g UID FETCH 1:* (UID FLAGS RFC822.SIZE) (CHANGEDSINCE 1)\r\n",
            "h FETCH 1 FAST\r\nh2 FETCH 1:2 ALL\r\nh3 FETCH 3 FULL\r\n",
            "i FETCH 1 body[]\r\nj FETCH 3 BODY[]<1000.200>\r\n",
            "k FETCH 1 RFC822\r\nl LOGOUT\r\n"),
        "search_store": script(LOOPBACK, PER_LINE,
            login, "b SELECT INBOX\r\n",
            "c SEARCH ALL\r\n",
            "d SEARCH UNSEEN NOT DELETED\r\n",
            'e SEARCH FROM bob SINCE 1-Jan-2020 SUBJECT "report"\r\n',
            "f SEARCH OR FLAGGED SEEN LARGER 1000\r\n",
            "g UID SEARCH BODY fox KEYWORD $Label1\r\n",
            'h SEARCH CHARSET UTF-8 HEADER Subject lunch TEXT "noon"\r\n',
            "i SEARCH RETURN (MIN MAX COUNT) 1:* UID 1:3\r\n",
            "j STORE 1 +FLAGS (\\Deleted)\r\n",
            "k STORE 2 -FLAGS.SILENT (\\Flagged)\r\n",
            "l STORE 3 FLAGS ($Label2 \\Seen)\r\n",
            "m UID STORE 4 +FLAGS (Keyword1 \\Answered)\r\n",
            "n ENABLE CONDSTORE\r\n",
            "o STORE 2 (UNCHANGEDSINCE 1) +FLAGS (\\Draft)\r\n",
            "p FETCH 1:* (FLAGS MODSEQ)\r\n",
            "q EXPUNGE\r\n",
            "r UID EXPUNGE 1:10\r\n",
            "s LOGOUT\r\n"),
        "mailboxes_copy_move": script(LOOPBACK, WHOLE,
            login, "b SELECT INBOX\r\n",
            "c COPY 1:2 Work\r\n",
            "d UID COPY 3 Trash\r\n",
            "e MOVE 4 Archive\r\n",
            "f COPY 1 Nowhere\r\n",
            "g STATUS Work (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT SIZE HIGHESTMODSEQ)\r\n",
            "h CLOSE\r\n",
            "i EXAMINE Work\r\ni2 FETCH 1:* (UID FLAGS)\r\n",
            "j UNSELECT\r\n",
            "k CREATE Projects/2026\r\n",
            "l RENAME Projects Old\r\n",
            "m DELETE Old/2026\r\n",
            "n SUBSCRIBE Work\r\no UNSUBSCRIBE Trash\r\n",
            'p LSUB "" "*"\r\n',
            'q LIST (SUBSCRIBED) "" "*" RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n',
            'q2 LIST "" "%"\r\nq3 LIST (SPECIAL-USE) "" "*"\r\n',
            "r NAMESPACE\r\n",
            "s GETQUOTAROOT INBOX\r\ns2 GETQUOTA \"\"\r\n",
            "t SELECT Work\r\nt2 UID MOVE 1:* INBOX\r\n",
            "u LOGOUT\r\n"),
        # literals: synchronising (waits for "+"), split over reads; LITERAL+; MULTIAPPEND
        "append_literals": script(LOOPBACK, 7,
            login,
            "b APPEND INBOX (\\Seen) {%d}\r\n" % len(m1), m1, "\r\n",
            'c APPEND Work (\\Flagged $Work) "07-Feb-1994 21:52:25 -0800" {%d+}\r\n' % len(m2),
            m2, "\r\n",
            "d APPEND Work {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(m1), m1, len(m3), m3),
            "e APPEND Nowhere {%d+}\r\n%s\r\n" % (len(m1), m1),
            "f SELECT Work\r\ng FETCH 1:* (FLAGS INTERNALDATE ENVELOPE)\r\n",
            "h APPEND INBOX {0}\r\n\r\n",
            "i LOGOUT\r\n"),
        "authenticate_plain_ir": script(LOOPBACK, PER_LINE,
            "a AUTHENTICATE PLAIN %s\r\n" % plain_ir("alice@example.test", "pw"),
            "b SELECT INBOX\r\n",
            "c FETCH 1 BODY.PEEK[HEADER]\r\n",
            "d LOGOUT\r\n"),
        # continuations: PLAIN and LOGIN answer "+ " lines; a cancel; CRAM-MD5 answered
        "authenticate_continuation": script(LOOPBACK, PER_LINE,
            "a AUTHENTICATE PLAIN\r\n",
            "*\r\n",
            "b AUTHENTICATE LOGIN\r\n",
            base64.b64encode(b"alice@example.test").decode() + "\r\n",
            base64.b64encode(b"wrong").decode() + "\r\n",
            "c AUTHENTICATE CRAM-MD5\r\n", op("M"),
            "d CAPABILITY\r\n",
            "e LOGOUT\r\n",
            op("c", ord("1")),
            "a AUTHENTICATE PLAIN\r\n",
            plain_ir("alice@example.test", "pw") + "\r\n",
            "b LIST \"\" INBOX\r\n",
            "c LOGOUT\r\n"),
        # seed 002 / RFC 3501 §6.2.1: commands pipelined behind STARTTLS are discarded
        "starttls_pipelined": script(0, WHOLE,
            "a CAPABILITY\r\n",
            op("o"),
            "b LOGIN alice@example.test pw\r\n",
            op("o"),
            "c STARTTLS\r\nd LOGIN alice@example.test pw\r\n",
            op("o"),
            "e CAPABILITY\r\nf LOGIN alice@example.test pw\r\ng SELECT INBOX\r\n",
            "h STARTTLS\r\ni LOGOUT\r\n"),
        "idle_new_mail": script(LOOPBACK, PER_LINE,
            login, "b SELECT INBOX\r\n",
            "c IDLE\r\n",
            op("n", 0), op("l"),
            op("T"),
            "DONE\r\n",
            "d NOOP\r\n",
            "e IDLE\r\n",
            "NOT DONE\r\n",
            "f FETCH 5 (FLAGS ENVELOPE)\r\n",
            "g LOGOUT\r\n"),
        # two sessions on one mailbox: expunges and flags reach the other one
        "two_sessions": script(LOOPBACK, PER_LINE,
            login, "b SELECT INBOX\r\n",
            op("c", ord("1")),
            login, "b SELECT INBOX\r\n",
            "c STORE 1 +FLAGS (\\Deleted)\r\n",
            "d EXPUNGE\r\n",
            "e STORE 1 +FLAGS ($Seen2)\r\n",
            op("c", ord("0")),
            "c NOOP\r\n",
            "d IDLE\r\n",
            op("c", ord("1")),
            "f APPEND INBOX {%d+}\r\n%s\r\n" % (len(m1), m1),
            op("c", ord("0")),
            "DONE\r\n",
            "e LOGOUT\r\n",
            op("c", ord("1")),
            "g LOGOUT\r\n"),
        # IMAP4rev2 + UTF8=ACCEPT + NOTIFY (RFC 9051, 6855, 5465): connection 1 changes
        # what connection 0 watches; the loop turns deliver the notifications
        "rev2_notify": script(LOOPBACK, PER_LINE,
            login,
            "b ENABLE IMAP4rev2 UTF8=ACCEPT\r\n",
            "c NOTIFY SET STATUS (selected (MessageNew (UID FLAGS) MessageExpunge)) "
            "(personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange "
            "MailboxMetadataChange ServerMetadataChange))\r\n",
            "d SELECT INBOX\r\n",
            "e SEARCH UNSEEN\r\n",
            "f STATUS Work (MESSAGES DELETED SIZE)\r\n",
            'g CREATE "Entwürfe"\r\n',
            "h APPEND INBOX UTF8 (~{%d+}\r\n%s)\r\n" % (len(utf8_msg.encode()), utf8_msg),
            op("c", ord("1")),
            login,
            "b CREATE Projects\r\nc SUBSCRIBE Projects\r\n",
            'd SETMETADATA INBOX (/private/comment "x")\r\n',
            "e APPEND Work {%d+}\r\n%s\r\n" % (len(m2), m2),
            "f RENAME Projects Archive/Projects\r\n",
            op("l"),
            op("c", ord("0")),
            op("n", 0), op("l"),
            "i NOOP\r\n",
            "j NOTIFY NONE\r\n",
            "k LIST \"\" \"Entw*\"\r\n",
            "l LOGOUT\r\n",
            op("c", ord("1")),
            "g LOGOUT\r\n"),
        # RFC 5267 contexts fed by another session, CANCELUPDATE, RFC 5255 COMPARATOR,
        # RFC 8474 THREADID
        "context_comparator": script(LOOPBACK, PER_LINE,
            login, "b SELECT INBOX\r\n",
            "c UID SEARCH RETURN (UPDATE COUNT) KEYWORD $Ctx\r\n",
            "d UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 ALL\r\n",
            "e COMPARATOR\r\n",
            'f COMPARATOR "cz;*" "i;*"\r\n',
            "g UID SEARCH RETURN (UPDATE) 1:2\r\n",
            op("c", ord("1")),
            login, "b SELECT INBOX\r\n",
            "c STORE 1 +FLAGS ($Ctx)\r\n",
            "d APPEND INBOX {%d+}\r\n%s\r\n" % (len(m2), m2),
            op("c", ord("0")),
            "h NOOP\r\n",
            'i CANCELUPDATE "c" "d"\r\n',
            'j CANCELUPDATE "c"\r\n',
            "k FETCH 1:* (THREADID)\r\n",
            "l LOGOUT\r\n",
            op("c", ord("1")),
            "e LOGOUT\r\n"),
        # RFC 5267 contexts in sequence numbers: another session's flag change and
        # EXPUNGE reach them, the REMOVEFROMs before the EXPUNGE that renumbers
        "context_seq": script(LOOPBACK, PER_LINE,
            login, "b SELECT INBOX\r\n",
            "c SEARCH RETURN (UPDATE) KEYWORD $Gone\r\n",
            "d SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN\r\n",
            op("c", ord("1")),
            login, "b SELECT INBOX\r\n",
            "c STORE 2 +FLAGS ($Gone \\Deleted)\r\n",
            op("c", ord("0")),
            "h NOOP\r\n",
            op("c", ord("1")),
            "d EXPUNGE\r\n",
            op("c", ord("0")),
            "i NOOP\r\n",
            'j CANCELUPDATE "c"\r\n',
            "k SEARCH RETURN (UPDATE) 1:2\r\n",
            "l LOGOUT\r\n",
            op("c", ord("1")),
            "e LOGOUT\r\n"),
        # the client leaves while its job waits or runs (job.h: done() gets no session)
        "disconnect_during_jobs": script(LOOPBACK | MANUAL_JOBS, PER_LINE,
            login,
            op("w", 0), op("x"),
            op("c", ord("1")),
            login, op("j"),
            "b SELECT INBOX\r\n", op("x"),
            op("c", ord("2")),
            login, op("j"),
            "b SELECT INBOX\r\nc FETCH 1:* (FLAGS BODY.PEEK[])\r\n", op("j"),
            "d STORE 1:* +FLAGS (\\Seen)\r\n", op("w", 0), op("e"),
            op("c", ord("3")),
            "a AUTHENTICATE PLAIN %s\r\n" % plain_ir("alice@example.test", "pw"),
            op("j"),
            "b SELECT INBOX\r\n", op("w", 0), op("d"),
            "c APPEND INBOX {%d+}\r\n%s\r\n" % (len(m2), m2), op("s")),
        # a slow reader: FETCH batches continue only as the output drains
        "fetch_backpressure": script(LOOPBACK | MANUAL_READS, PER_LINE,
            login, op("o"),
            "b SELECT INBOX\r\n", op("o"),
            "c FETCH 3 (BODY[] BODY.PEEK[TEXT] BODY.PEEK[1] RFC822)\r\n",
            op("p", 3), op("p", 15), op("o"), op("o"),
            "d FETCH 1:2,4 (BODY.PEEK[] FLAGS)\r\n",
            op("p", 0), op("o"),
            "e FETCH 3 (BODY.PEEK[TEXT])\r\n",
            op("p", 1),
            "f NOOP\r\n",
            op("W")),
        # RFC 4469 CATENATE (a URL part, a text part, a bad URL) and RFC 4467 URLAUTH
        "catenate_urlauth": script(LOOPBACK, 11,
            login,
            "b APPEND INBOX {%d+}\r\n%s\r\n" % (len(m1), m1),
            'c APPEND INBOX CATENATE (URL "/INBOX/;UID=1/;section=HEADER" TEXT {10+}\r\n'
            "new body\r\n)\r\n",
            'd APPEND INBOX CATENATE (URL "/INBOX/;UID=99")\r\n',
            'e GENURLAUTH "imap://alice%40example.test@mail/INBOX/;UID=1;URLAUTH=authuser"'
            " INTERNAL\r\n",
            'f URLFETCH "imap://alice%40example.test@mail/INBOX/;UID=1;URLAUTH=authuser:internal:'
            + "0" * 40 + '"\r\n',
            "g RESETKEY INBOX\r\nh RESETKEY\r\n",
            "i LOGOUT\r\n"),
        "bob_quota": script(LOOPBACK, 16,
            "a LOGIN bob@example.test pw\r\n",
            "b GETQUOTAROOT INBOX\r\n",
            "c APPEND INBOX {%d}\r\n" % len(big), big, "\r\n",
            "d APPEND INBOX {%d+}\r\n%s\r\n" % (len(m1), m1),
            'e SETQUOTA "" (STORAGE 1)\r\n',
            "f STATUS INBOX (MESSAGES SIZE)\r\n",
            "g LOGOUT\r\n"),
        # seed 000 / 003: imaps (openssl s_client -connect :993); failed logins throttle
        "imaps_logins": script(IMPLICIT_TLS, PER_LINE,
            "a LOGIN off@example.test pw\r\n",
            "b LOGIN alice@example.test wrong\r\n",
            "c LOGIN nobody@example.test pw\r\n",
            "d LOGIN alice@example.test wrong\r\n",
            "e LOGIN alice@example.test pw\r\n",
            "f STARTTLS\r\n",
            "g ID (\"name\" \"s_client\")\r\n",
            "h LOGOUT\r\n"),
        "shutdown_while_idle": script(LOOPBACK | END_SHUTDOWN, PER_LINE,
            login, "b SELECT INBOX\r\n",
            "c IDLE\r\n"),
        "bad_syntax": script(LOOPBACK, WHOLE,
            "garbage\r\n",
            "a\r\n",
            "a NOSUCHCOMMAND\r\n",
            "a SELECT INBOX\r\n",
            "a LOGIN\r\n",
            "a LOGIN {3}\r\n",
            "a APPEND INBOX {99999999}\r\n",
            login,
            "b UID\r\nc UID NOOP\r\nd FETCH 1 FLAGS\r\n",
            "e SELECT \"unterminated\r\n",
            "f STORE 1 FLAGS (\\Bogus\r\n",
            "g SELECT INBOX\r\nh FETCH 0:* FLAGS\r\ni FETCH 1 BODY[99]\r\n",
            "j SEARCH NOT\r\nk COPY\r\nl FETCH 1 (BODY[HEADER.FIELDS ()])\r\n",
            "m ", CUT, "x" * 1125, op("X", 1), "\r\n",
            "n LOGOUT\r\n"),
        "append_spill_eof": script(LOOPBACK | END_EOF, 200,
            login,
            "b APPEND INBOX {300000+}\r\n", "y" * 2000),
        "reset_mid_literal": script(LOOPBACK | END_RESET, PER_LINE,
            login,
            "b APPEND INBOX {100}\r\n", "partial literal\r\n"),
        # another program deletes message files behind the store's back
        "vanished_messages": script(LOOPBACK, PER_LINE,
            login, "b SELECT INBOX\r\n",
            op("r", 0), op("r", 0), op("r", 0), op("r", 0),
            "c FETCH 1:* (FLAGS BODY.PEEK[])\r\n",
            "d STORE 1:* +FLAGS (\\Seen)\r\n",
            "e COPY 1:* Work\r\n",
            "f NOOP\r\n",
            "g FETCH 1:* (UID FLAGS)\r\n",
            "h LOGOUT\r\n"),
        # COPY of messages another session expunged after this one's last sync
        "copy_after_expunge_elsewhere": script(LOOPBACK, PER_LINE,
            login, "b SELECT INBOX\r\n",
            op("c", ord("1")),
            login, "b SELECT INBOX\r\nc STORE 2 +FLAGS (\\Deleted)\r\nd EXPUNGE\r\n",
            op("c", ord("0")),
            "c COPY 1:3 Work\r\n", "d MOVE 1:2 Trash\r\n", "e NOOP\r\n", "f LOGOUT\r\n"),
        # IDLE: new mail arrives while the IDLE's sync job is still running
        "idle_mail_during_sync": script(LOOPBACK | MANUAL_JOBS, PER_LINE,
            login, op("j"), "b SELECT INBOX\r\n", op("j"),
            "c IDLE\r\n",
            op("n", 0), op("l"), op("n", 0), op("l"),
            op("w", 0), op("d"), op("j"),
            "DONE\r\n", op("j"),
            "d LOGOUT\r\n", op("j")),
        # volume made by repeating ('X'): a literal big enough to go to a spill file, a
        # MULTIAPPEND over the message limit, a line over the 64 KiB limit
        "volume": script(LOOPBACK, WHOLE,
            login,
            "b APPEND INBOX {301000+}\r\n", CUT, "x" * 998 + "\r\n", op("X", 74), "\r\n",
            "c STATUS INBOX (MESSAGES SIZE)\r\n",
            "d APPEND Work {1+}\r\nx", CUT, " {1+}\r\nx", op("X", 255), "\r\n",
            op("c", ord("1")),
            login, "b NOOP ", CUT, "y" * 1000, op("X", 16), "\r\n",
            "c LOGOUT\r\n"),
        "fault_append": script(LOOPBACK, PER_LINE,
            login,
            op("F", 0),
            "b APPEND INBOX {%d+}\r\n%s\r\n" % (len(m1), m1),
            op("F", 1),
            "c SELECT INBOX\r\nd COPY 1 Work\r\n",
            op("F", 0),
            "e MOVE 2 Trash\r\n",
            "f LOGOUT\r\n"),
    }


def pop3_seeds():
    user = "USER alice@example.test\r\nPASS pw\r\n"
    return {
        # seed 000: USER/PASS, STAT, LIST, RETR, DELE, QUIT deleting
        "telnet_basic": script(LOOPBACK, PER_LINE,
            user, "STAT\r\n", "LIST\r\n", "RETR 1\r\n", "DELE 1\r\n", "QUIT\r\n"),
        # seed 001 / 002: TOP, UIDL, RSET
        "top_uidl_rset": script(LOOPBACK, WHOLE,
            user, "UIDL\r\n", "UIDL 2\r\n", "TOP 2 5\r\n", "TOP 3 0\r\n", "LIST 3\r\n",
            "DELE 2\r\n", "DELE 2\r\n", "RETR 2\r\n", "RSET\r\n", "STAT\r\n", "NOOP\r\n",
            "LIST 9\r\n", "TOP 4 1\r\n", "RETR 4\r\n", "QUIT\r\n"),
        # seed 002: APOP with the MD5 of the greeting's timestamp and the password
        "apop": script(LOOPBACK, PER_LINE,
            "APOP alice@example.test 0123456789abcdef0123456789abcdef\r\n",
            op("A"),
            "STAT\r\n", "QUIT\r\n"),
        # seed 001 / 002: CAPA, AUTH listing, AUTH PLAIN / LOGIN / CRAM-MD5
        "auth_mechanisms": script(LOOPBACK, PER_LINE,
            "CAPA\r\n", "AUTH\r\n",
            "AUTH LOGIN\r\n",
            base64.b64encode(b"alice@example.test").decode() + "\r\n",
            base64.b64encode(b"wrong").decode() + "\r\n",
            "AUTH CRAM-MD5\r\n", op("M"),
            "STAT\r\n", "QUIT\r\n",
            op("c", ord("1")),
            "AUTH PLAIN %s\r\n" % plain_ir("alice@example.test", "pw"),
            "CAPA\r\nLIST\r\nQUIT\r\n",
            op("c", ord("2")),
            "AUTH PLAIN\r\n", "*\r\n",
            "AUTH PLAIN\r\n", plain_ir("bob@example.test", "pw") + "\r\n",
            "UIDL\r\nQUIT\r\n"),
        # RFC 2595 §4: commands pipelined behind STLS are discarded
        "stls_pipelined": script(0, WHOLE,
            "CAPA\r\n", op("o"),
            "USER alice@example.test\r\n", op("o"),
            "STLS\r\nUSER alice@example.test\r\nPASS pw\r\n", op("o"),
            "CAPA\r\n", user, "STAT\r\nSTLS\r\nQUIT\r\n"),
        # a slow reader: RETR streams as the output drains; pipelined RETRs are prefetched
        "retr_backpressure": script(LOOPBACK | MANUAL_READS, WHOLE,
            user, op("o"),
            "RETR 3\r\nRETR 1\r\nRETR 2\r\nTOP 3 10\r\nLIST\r\n",
            op("p", 3), op("p", 15), op("o"), op("o"), op("o"), op("o"),
            "RETR 3\r\n", op("p", 0),
            op("W")),
        # the client leaves while QUIT's deletions wait; they run anyway (is_essential),
        # then a new session sees the result
        "quit_then_leave": script(LOOPBACK | MANUAL_JOBS, PER_LINE,
            user, op("j"),
            "DELE 1\r\nDELE 2\r\nQUIT\r\n", op("x"),
            op("c", ord("1")),
            user, op("w", 1), op("j"),
            user, op("j"),
            "STAT\r\n", op("j"),
            "QUIT\r\n", op("j")),
        # RFC 1939 §8: one POP3 session per maildrop
        "maildrop_in_use": script(LOOPBACK, PER_LINE,
            user, "STAT\r\n",
            op("c", ord("1")),
            user, "USER bob@example.test\r\nPASS pw\r\nSTAT\r\n",
            op("c", ord("0")),
            "QUIT\r\n",
            op("c", ord("2")),
            user, "STAT\r\nQUIT\r\n"),
        "bad_commands": script(LOOPBACK, WHOLE,
            "STAT\r\n", "PASS pw\r\n", "RETR 1\r\n", "XYZZY\r\n",
            "USER " + "a" * 300 + "\r\n", "\r\n", "USER alice@example.test\r\n",
            "PASS wrong\r\n", "USER off@example.test\r\nPASS pw\r\n",
            user, "RETR\r\nRETR x\r\nQUIT\r\n",
            op("c", ord("1")),
            user, "RETR 0\r\nTOP 1\r\nTOP 1 -1\r\nDELE 99\r\nLIST 1 2\r\n",
            "UIDL 0\r\nSTLS\r\nUSER x\r\nNOOP 1\r\nXYZZY\r\nXYZZY\r\nXYZZY\r\nSTAT\r\n"),
        # seed 000 / 004: pop3s (openssl s_client -connect :995)
        "pop3s_bob": script(IMPLICIT_TLS, PER_LINE,
            "CAPA\r\n", "USER bob@example.test\r\n", "PASS pw\r\n",
            "STAT\r\n", "RETR 1\r\n", "DELE 1\r\n", "QUIT\r\n"),
        "new_mail_during_session": script(LOOPBACK, PER_LINE,
            user, op("n", 0), op("l"), "STAT\r\n", "LIST\r\n",
            "QUIT\r\n", op("c", ord("1")), user, "STAT\r\n", "QUIT\r\n"),
        "fault_quit": script(LOOPBACK, PER_LINE,
            user, "DELE 1\r\n", op("F", 0), "QUIT\r\n",
            op("c", ord("1")), user, "STAT\r\n", "QUIT\r\n"),
        # another program deletes message files behind the store's back
        "vanished_messages": script(LOOPBACK, PER_LINE,
            user, op("r", 0), op("r", 0),
            "LIST\r\n", "RETR 1\r\n", "RETR 2\r\n", "RETR 3\r\n", "TOP 4 0\r\n",
            "DELE 1\r\n", "QUIT\r\n",
            op("c", ord("1")), user, "STAT\r\n", "QUIT\r\n"),
        # a client that pipelines and never reads: commands wait until it does
        "unread_output": script(LOOPBACK | MANUAL_READS, WHOLE,
            user, op("o"),
            CUT, "CAPA\r\n", op("X", 255), op("X", 255), op("X", 255), op("X", 255),
            "STAT\r\n", op("o"), op("o"), op("o"), op("o"),
            "AUTH\r\n", op("o"), "QUIT\r\n"),
        "sasl_line_too_long": script(LOOPBACK, WHOLE,
            "AUTH PLAIN\r\n", CUT, "A" * 1000, op("X", 3), "\r\n",
            "AUTH LOGIN\r\n", "QUIT\r\n"),
        "timeout_mid_retr": script(LOOPBACK | MANUAL_READS | END_TIMEOUT, PER_LINE,
            user, op("o"), "RETR 3\r\n", op("p", 2)),
    }


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("fuzz_imap_session", imap_seeds())
    write("fuzz_pop3_session", pop3_seeds())
