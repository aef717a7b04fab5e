/*
 * test_session_replay.c - replays every seed of the session fuzz targets
 * (tests/fuzz/corpus/fuzz_imap_session/ and fuzz_pop3_session/) through the same harness
 * (session_script.h: the real IMAP/POP3 sessions, directory and store over the fake core),
 * so the unit stage runs the harness without clang, and checks that each seed still gets
 * where it was written to go: the replies listed for it below appear in order in its
 * transcript ("!text": never appears). A seed without a row here fails: a seed that no
 * longer logs in or selects would quietly stop being a useful fuzzing start.
 *
 * Usage: test_session_replay CORPUS_DIR (meson passes tests/fuzz/corpus).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake_core.h"
#include "imap/imap.h"
#include "pop3/pop3.h"
#include "session_script.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct seed_expectation {
    const char *target, *seed;
    int peer; /* whose transcript */
    const char *replies[14];
};

static const struct seed_expectation expectations[] = {
    /* IMAP */
    {"fuzz_imap_session", "telnet_basic", 0,
     {"a OK [CAPABILITY", "b OK Capability", "* LIST (\\HasNoChildren) \"/\" \"Work\"", "* 4 EXISTS",
      "d OK [READ-WRITE]", "* 2 FETCH (FLAGS (\\Answered \\Flagged $Label1))",
      "* 1 FETCH (BODY[TEXT] {45}", "f OK", "* BYE", "g OK Logout"}},
    {"fuzz_imap_session", "fetch_items", 0,
     {"b OK [READ-ONLY]", "* 1 FETCH (ENVELOPE (\"Mon, 7 Feb 1994", "BODYSTRUCTURE", "c OK",
      "BODY[1.1] {44}", "d OK", "BODY[2]<0> {10}", "e OK", "(\"message\" \"rfc822\"",
      "RFC822.SIZE 69678", "g OK", "* 3 FETCH (BODY[]<1000> {200}", "l OK"}},
    {"fuzz_imap_session", "search_store", 0,
     {"* SEARCH 1 2 3 4", "* SEARCH 2 4", "* SEARCH 3", "* ESEARCH (TAG \"i\") MIN 1 MAX 3 COUNT 3",
      "* 1 FETCH (FLAGS (\\Seen \\Deleted))", "m OK", "* ENABLED CONDSTORE",
      "o OK [MODIFIED 2]", "MODSEQ", "* 1 EXPUNGE", "q OK", "r OK", "s OK"}},
    {"fuzz_imap_session", "mailboxes_copy_move", 0,
     {"c OK [COPYUID", "d OK [COPYUID", "* 4 EXPUNGE", "e OK Move", "f NO [TRYCREATE]",
      "* STATUS \"Work\" (MESSAGES 3", "h OK Close", "i OK [READ-ONLY]", "k OK [MAILBOXID (M",
      "* STATUS \"Archive\" (MESSAGES 1", "* NAMESPACE", "t2 OK Move", "u OK"}},
    {"fuzz_imap_session", "append_literals", 0,
     {"+ Ready for literal data", "b OK [APPENDUID", "c OK [APPENDUID", "d OK [APPENDUID",
      "e NO [TRYCREATE]", "* 4 EXISTS", "INTERNALDATE \"08-Feb-1994 05:52:25 +0000\"",
      "g OK", "h OK [APPENDUID", "i OK"}},
    {"fuzz_imap_session", "authenticate_plain_ir", 0,
     {"a OK [CAPABILITY", "b OK [READ-WRITE]", "* 1 FETCH (BODY[HEADER] {140}", "d OK"}},
    {"fuzz_imap_session", "authenticate_continuation", 0,
     {"+ \r\n", "a BAD Authentication aborted", "+ VXNlcm5hbWU6", "+ UGFzc3dvcmQ6",
      "b NO [AUTHENTICATIONFAILED]", "c OK [CAPABILITY", "d OK", "e OK"}},
    {"fuzz_imap_session", "authenticate_continuation", 1,
     {"+ \r\n", "a OK [CAPABILITY", "* LIST (\\HasNoChildren) \"/\" \"INBOX\"", "c OK"}},
    /* RFC 3501 §6.2.1: d (pipelined behind STARTTLS) is never answered */
    {"fuzz_imap_session", "starttls_pipelined", 0,
     {"LOGINDISABLED", "b NO [PRIVACYREQUIRED]", "c OK Begin TLS", "!d OK", "!d NO",
      "!d BAD", "e OK Capability", "f OK [CAPABILITY", "g OK [READ-WRITE]",
      "h BAD Already logged in.", "i OK"}},
    {"fuzz_imap_session", "rev2_notify", 0,
     {"* ENABLED IMAP4rev2 UTF8=ACCEPT", "* STATUS \"Work\" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY",
      "c OK NOTIFY completed.", "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\"",
      "!RECENT", "* ESEARCH (TAG \"e\") ALL 2,4", "DELETED 0)", "h OK [APPENDUID",
      "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Projects\"",
      "* METADATA \"INBOX\" /private/comment", "* STATUS \"Work\" (MESSAGES 2 UIDNEXT 3",
      "(\"OLDNAME\" (\"Projects\"))", "* 6 FETCH (UID 6 FLAGS ())",
      "* LIST (\\HasNoChildren) \"/\" \"Entw\xc3\xbcrfe\""}},
    {"fuzz_imap_session", "idle_new_mail", 0,
     {"+ idling", "* 5 EXISTS", "* 2 RECENT", "* OK Still here", "c OK Idle completed.",
      "d OK", "e BAD Expected DONE.", "* 5 FETCH (FLAGS (\\Recent) ENVELOPE (NIL \"new mail\"",
      "g OK"}},
    {"fuzz_imap_session", "two_sessions", 0,
     {"b OK [READ-WRITE]", "* 1 EXPUNGE", "$Seen2", "c OK NOOP", "+ idling", "* 4 EXISTS",
      "d OK Idle completed.", "e OK"}},
    {"fuzz_imap_session", "two_sessions", 1,
     {"b OK [READ-WRITE]", "c OK Store", "* 1 EXPUNGE", "d OK Expunge", "e OK Store",
      "f OK [APPENDUID", "g OK"}},
    {"fuzz_imap_session", "context_comparator", 0,
     {"* ESEARCH (TAG \"c\") UID COUNT 0", "c OK", "* ESEARCH (TAG \"d\") UID ALL", "d OK",
      "* COMPARATOR i;unicode-casemap", "* COMPARATOR i;unicode-casemap (i;unicode-casemap "
      "i;ascii-casemap)", "* NO [NOUPDATE \"g\"]", "* ESEARCH (TAG \"c\") UID ADDTO (0 1)",
      "* ESEARCH (TAG \"d\") UID ADDTO (", "h OK", "i OK Updates cancelled.",
      "j BAD Unknown tag.", "* 1 FETCH (THREADID", "l OK"}},
    {"fuzz_imap_session", "context_seq", 0,
     {"* ESEARCH (TAG \"c\")\r", "c OK", "* ESEARCH (TAG \"d\") ALL ", "d OK",
      "* ESEARCH (TAG \"c\") ADDTO (0 2)", "h OK", "* ESEARCH (TAG \"c\") REMOVEFROM (0 2)",
      "* ESEARCH (TAG \"d\") REMOVEFROM (", "* 2 EXPUNGE", "i OK", "j OK Updates cancelled.",
      "* NO [NOUPDATE \"k\"]", "k OK"}},
    {"fuzz_imap_session", "disconnect_during_jobs", 1, {"a OK [CAPABILITY", "!b OK"}},
    {"fuzz_imap_session", "disconnect_during_jobs", 2,
     {"b OK [READ-WRITE]", "* 3 FETCH (FLAGS (\\Seen) BODY[] {69678}", "c OK Fetch",
      "* 4 FETCH (FLAGS (\\Seen \\Recent))", "d OK Store"}},
    {"fuzz_imap_session", "disconnect_during_jobs", 3,
     {"a OK [CAPABILITY", "b OK [READ-WRITE]"}},
    {"fuzz_imap_session", "fetch_backpressure", 0,
     {"b OK [READ-WRITE]", "* 3 FETCH (BODY[] {69678}", "line 01023", " BODY[TEXT] {69632}",
      "line 01023", " BODY[1] {69632}", " RFC822 {69678}", "line 01023", "c OK Fetch",
      "* 4 FETCH (BODY[] {399}", "d OK Fetch", "* 3 FETCH (BODY[TEXT] {69632}"}},
    {"fuzz_imap_session", "catenate_urlauth", 0,
     {"b OK [APPENDUID", "c OK [APPENDUID", "d NO [BADURL /INBOX/;UID=99]",
      "* GENURLAUTH \"imap://alice%40example.test@mail/INBOX/;UID=1;URLAUTH=authuser:internal:",
      "e OK", "* URLFETCH \"imap://alice%40example.test@mail/INBOX/;UID=1;URLAUTH=authuser"
      ":internal:0000000000000000000000000000000000000000\" NIL",
      "g OK [URLMECH INTERNAL]", "h OK All keys removed.", "i OK"}},
    {"fuzz_imap_session", "bob_quota", 0,
     {"* QUOTA \"User quota\" (STORAGE 1 2)", "c NO [OVERQUOTA]", "d OK [APPENDUID",
      "e NO [NOPERM]", "* STATUS \"INBOX\" (MESSAGES 2", "g OK"}},
    {"fuzz_imap_session", "imaps_logins", 0,
     {"a NO [AUTHENTICATIONFAILED]", "b NO [AUTHENTICATIONFAILED]", "c NO [AUTHENTICATIONFAILED]",
      "d NO [UNAVAILABLE] Too many failed logins", "e NO [UNAVAILABLE]",
      "f BAD TLS is already active", "* ID NIL", "h OK"}},
    {"fuzz_imap_session", "shutdown_while_idle", 0,
     {"b OK [READ-WRITE]", "+ idling", "* BYE Server shutting down."}},
    {"fuzz_imap_session", "bad_syntax", 0,
     {"* BAD Error in IMAP command received by server", "a BAD Unknown command.",
      "a NO Not logged in.", "a BAD Usage: LOGIN", "a NO [TOOBIG]", "a OK [CAPABILITY",
      "b BAD Usage: UID", "d BAD No mailbox selected.", "e BAD Error in IMAP command",
      "g OK [READ-WRITE]", "h BAD Invalid message set.", "n OK"}},
    {"fuzz_imap_session", "append_spill_eof", 0, {"a OK [CAPABILITY", "!b OK", "!b NO"}},
    {"fuzz_imap_session", "reset_mid_literal", 0, {"+ Ready for literal data", "!b OK"}},
    /* message files deleted behind the store's back: nothing to copy is a NO */
    {"fuzz_imap_session", "vanished_messages", 0,
     {"b OK [READ-WRITE]", "c OK [EXPUNGEISSUED]", "d OK Store", "e NO [EXPUNGEISSUED]",
      "* 1 EXPUNGE", "f OK NOOP", "g OK", "h OK", "!COPYUID"}},
    /* RFC 4315: COPYUID pairs only what was copied (the message expunged elsewhere is
     * left out, never paired with UID 0) */
    {"fuzz_imap_session", "copy_after_expunge_elsewhere", 1, {"* 2 EXPUNGE", "d OK Expunge"}},
    {"fuzz_imap_session", "copy_after_expunge_elsewhere", 0,
     {"b OK [READ-WRITE]", " 1,3 2:3] Copy completed.", "* 2 EXPUNGE", " 1,3 1:2] Moved UIDs.",
      "d OK Move", "e OK", "f OK", "!,0", "! 0,"}},
    /* new mail during the IDLE's own sync: one more sync follows */
    {"fuzz_imap_session", "idle_mail_during_sync", 0,
     {"+ idling", "* 6 EXISTS", "c OK Idle completed.", "d OK"}},
    {"fuzz_imap_session", "volume", 0,
     {"b OK [APPENDUID", "* STATUS \"INBOX\" (MESSAGES 5", "* BYE Too many messages."}},
    {"fuzz_imap_session", "volume", 1, {"a OK [CAPABILITY", "* BYE Line too long.", "!c OK"}},
    {"fuzz_imap_session", "fault_append", 0,
     {"b NO Append failed", "c OK [READ-WRITE]", "d OK [COPYUID", "e NO", "f OK"}},
    /* POP3. Sizes leave out the byte-stuffing (RFC 1939 §11): msg_plain lists as 185
     * octets, 187 on the wire with its two dot-lines stuffed. */
    {"fuzz_pop3_session", "telnet_basic", 0,
     {"+OK POP3 ready <", "+OK Logged in.", "+OK 4 71239", "+OK 4 messages:", "3 69678",
      "+OK 185 octets", "\r\n..\r\n...a dotted line\r\n.\r\n", "+OK Marked to be deleted.",
      "+OK Logging out, messages deleted."}},
    {"fuzz_pop3_session", "top_uidl_rset", 0,
     {"1 00000001", "+OK 2 00000002", "Subject: big\r\n\r\n.\r\n",
      "+OK 3 69678", "+OK Marked to be deleted.", "-ERR Message is deleted.",
      "-ERR There's no message 9.", "+OK 399 octets", "+OK Logging out."}},
    {"fuzz_pop3_session", "apop", 0,
     {"-ERR [AUTH] Authentication failed.", "+OK Logged in.", "+OK 4 71239", "+OK Logging out."}},
    {"fuzz_pop3_session", "auth_mechanisms", 0,
     {"SASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256", "CRAM-MD5\r\nSCRAM-SHA-256\r\n.\r\n",
      "+ VXNlcm5hbWU6", "-ERR [AUTH] Authentication failed.", "+OK Logged in.",
      "+OK 4 71239", "+OK Logging out."}},
    {"fuzz_pop3_session", "auth_mechanisms", 1, {"+OK Logged in.", "+OK 4 messages:"}},
    {"fuzz_pop3_session", "auth_mechanisms", 2,
     {"-ERR Authentication aborted.", "+OK Logged in.", "\r\n1 00000001"}},
    /* RFC 2595 §4: the USER/PASS pipelined behind STLS are never answered */
    {"fuzz_pop3_session", "stls_pipelined", 0,
     {"STLS\r\n", "-ERR [AUTH] Plaintext authentication disallowed",
      "+OK Begin TLS negotiation now.\r\n+OK\r\nCAPA", "USER\r\n", "+OK\r\n+OK Logged in.",
      "+OK 4 71239", "-ERR Command not valid in this state.", "+OK Logging out."}},
    {"fuzz_pop3_session", "retr_backpressure", 0,
     {"+OK 69678 octets", "line 01023: the quick brown fox jumps over the lazy dog 0123456789\r\n.\r\n",
      "+OK 185 octets", "+OK 977 octets", "+OK 4 messages:"}},
    /* the deletions of a QUIT whose client left still happen (is_essential) */
    {"fuzz_pop3_session", "quit_then_leave", 1,
     {"-ERR [IN-USE]", "+OK Logged in.", "+OK 2 70077", "+OK Logging out."}},
    {"fuzz_pop3_session", "maildrop_in_use", 1,
     {"-ERR [IN-USE] Mailbox is locked by another POP3 session.", "+OK Logged in.", "+OK 1 55"}},
    {"fuzz_pop3_session", "maildrop_in_use", 2, {"+OK Logged in.", "+OK 4 71239"}},
    {"fuzz_pop3_session", "bad_commands", 0,
     {"-ERR [AUTH] Not logged in.", "-ERR Line too long.", "-ERR [AUTH] Authentication failed.",
      "+OK Logged in.", "-ERR Too many invalid commands."}},
    {"fuzz_pop3_session", "bad_commands", 1,
     {"-ERR There's no message 0.", "-ERR Invalid number of lines.",
      "-ERR There's no message 99.", "+OK 4 71239"}},
    {"fuzz_pop3_session", "pop3s_bob", 0,
     {"USER\r\n", "+OK Logged in.", "+OK 1 55", "Hi Bob.\r\n.\r\n",
      "+OK Logging out, messages deleted."}},
    /* the maildrop is a snapshot: new mail shows in the next session */
    {"fuzz_pop3_session", "new_mail_during_session", 0, {"+OK 4 71239", "+OK Logging out."}},
    {"fuzz_pop3_session", "new_mail_during_session", 1, {"+OK 5 71328"}},
    {"fuzz_pop3_session", "fault_quit", 0,
     {"+OK Marked to be deleted.", "-ERR [SYS/TEMP] Some deleted messages were not removed."}},
    {"fuzz_pop3_session", "fault_quit", 1, {"+OK Logged in.", "+OK 3 71054"}},
    /* message files deleted behind the store's back */
    {"fuzz_pop3_session", "vanished_messages", 0,
     {"+OK 4 messages:", "-ERR Message has been removed from the server.", "+OK 69678 octets",
      "+OK Marked to be deleted.", "+OK Logging out, messages deleted."}},
    {"fuzz_pop3_session", "vanished_messages", 1, {"+OK Logged in.", "+OK 2 70077"}},
    /* 4097 CAPA replies wait for the client to read; all are answered, in order */
    {"fuzz_pop3_session", "unread_output", 0,
     {"+OK Logged in.", "EXPIRE NEVER\r\n.\r\n+OK 4 71239\r\n",
      "-ERR Command not valid in this state.",
      "+OK Logging out."}},
    {"fuzz_pop3_session", "sasl_line_too_long", 0,
     {"+ \r\n", "-ERR Line too long.", "+ VXNlcm5hbWU6"}},
    {"fuzz_pop3_session", "timeout_mid_retr", 0,
     {"+OK 69678 octets", "!-ERR Disconnected for inactivity."}},
};

static const char *corpus_dir;

static const struct seed_expectation *expectation_of(const char *target, const char *seed)
{
    for (size_t i = 0; i < sizeof expectations / sizeof expectations[0]; i++)
        if (strcmp(expectations[i].target, target) == 0 && strcmp(expectations[i].seed, seed) == 0)
            return &expectations[i];
    return NULL;
}

static void check_transcript(const struct seed_expectation *e)
{
    const char *out = fake_output(e->peer);
    const char *p = out;
    for (size_t i = 0; i < sizeof e->replies / sizeof e->replies[0] && e->replies[i]; i++) {
        const char *want = e->replies[i];
        if (want[0] == '!') {
            if (strstr(out, want + 1))
                fail_msg("%s/%s: unexpected \"%s\" in:\n%s", e->target, e->seed, want + 1, out);
            continue;
        }
        const char *hit = strstr(p, want);
        if (!hit)
            fail_msg("%s/%s: missing \"%s\" (in order) in:\n%s", e->target, e->seed, want, out);
        p = hit + strlen(want);
    }
}

static void replay_dir(const char *target, const struct script_protocol *sp)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", corpus_dir, target);
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n_seeds = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static uint8_t data[SCRIPT_MAX_INPUT];
        size_t len = fread(data, 1, sizeof data, f);
        fclose(f);
        const struct seed_expectation *e = expectation_of(target, de->d_name);
        script_run(sp, data, len);
        n_seeds++;
        if (getenv("TERN_REPLAY_SHOW")) { /* for writing a new seed's row: show, check nothing */
            for (int p = 0; p < FAKE_MAX_PEERS; p++)
                if (fake_output(p)[0])
                    printf("==== %s/%s peer %d\n%s\n", target, de->d_name, p, fake_output(p));
            continue;
        }
        if (!e)
            fail_msg("%s/%s: no row in test_session_replay.c", target, de->d_name);
        check_transcript(e);
    }
    closedir(d);
    assert_true(n_seeds >= 5);
    /* every row names a seed that exists */
    for (size_t i = 0; i < sizeof expectations / sizeof expectations[0]; i++) {
        if (strcmp(expectations[i].target, target) != 0)
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, expectations[i].seed);
        if (access(path, R_OK) != 0)
            fail_msg("%s: no seed file for the row %s", target, expectations[i].seed);
    }
}

static void test_imap_seeds(void **state)
{
    static const struct script_protocol imap = {&imap_protocol, CONN_ROLE_IMAP, CONN_ROLE_IMAPS};
    replay_dir("fuzz_imap_session", &imap);
}

static void test_pop3_seeds(void **state)
{
    static const struct script_protocol pop3 = {&pop3_protocol, CONN_ROLE_POP3, CONN_ROLE_POP3S};
    replay_dir("fuzz_pop3_session", &pop3);
}

int main(int argc, char **argv)
{
    corpus_dir = argc > 1 ? argv[1] : "tests/fuzz/corpus";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_imap_seeds),
        cmocka_unit_test(test_pop3_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
