/*
 * test_imap_rev2.c - unit tests for the IMAP4rev2 / UTF8=ACCEPT / LITERAL- / NOTIFY
 * grammar: mailbox names between UTF-8 and modified UTF-7 (src/imap/mailname.c), the
 * parser's UTF-8 check of quoted strings, LITERAL-'s limit and literal8 marking
 * (src/imap/parse.c), APPEND's UTF8 data item and STATUS DELETED (src/imap/args.c), and
 * the NOTIFY command (src/imap/notify.c, imap_notify_parse).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/args.h"
#include "imap/mailname.h"
#include "imap/notify.h"
#include "imap/parse.h"

static enum imap_parse_result feed(struct imap_parser *p, const char *line)
{
    return imap_parser_feed_line(p, line, strlen(line));
}

/* ---- mailbox names ---------------------------------------------------------------------- */

static void check_import(const char *utf8, const char *want)
{
    char *got = imap_mailname_import(utf8, strlen(utf8));
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    /* and back: the export of the store's name is the (NFC) UTF-8 name */
    char *back = imap_mailname_export(got);
    assert_non_null(back);
    assert_true(imap_mailname_is_mutf7(got));
    free(back);
    free(got);
}

static void test_mailname_import(void **state)
{
    (void)state;
    check_import("INBOX", "INBOX");
    check_import("Entwürfe", "Entw&APw-rfe");
    check_import("A&B", "A&-B"); /* "&" is ASCII in UTF-8 names */
    /* RFC 9051 Appendix A.1's example */
    check_import("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    check_import("😀", "&2D3eAA-"); /* a surrogate pair */
    /* NFC: "e" + COMBINING ACUTE ACCENT is é */
    check_import("Cafe\xcc\x81", "Caf&AOk-");
    /* RFC 6855 §3: not UTF-8, or controls, DEL, C1, LS, PS */
    check_import("bad\xff", NULL);
    check_import("\xc0\xaf", NULL);     /* overlong "/" */
    check_import("\xed\xa0\x80", NULL); /* a surrogate */
    check_import("tab\there", NULL);
    check_import("del\x7f", NULL);
    check_import("c1\xc2\x85", NULL);     /* U+0085 */
    check_import("ls\xe2\x80\xa8", NULL); /* U+2028 */
    char long_name[IMAP_MAILNAME_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    check_import(long_name, NULL);
}

static void check_export(const char *stored, const char *want, bool is_mutf7)
{
    char *got = imap_mailname_export(stored);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(imap_mailname_is_mutf7(stored), is_mutf7);
    free(got);
}

static void test_mailname_export(void **state)
{
    (void)state;
    check_export("Entw&APw-rfe", "Entwürfe", true);
    check_export("&U,BTF2XlZyyKng-", "台北日本語", true);
    check_export("A&-B", "A&B", true);
    check_export("&2D3eAA-", "😀", true);
    /* RFC 9051 A.1: not modified UTF-7: sent as they are */
    check_export("&Jjo!", "&Jjo!", false);                           /* no shift back */
    check_export("&U,BTFw-&ZeVnLIqe-", "&U,BTFw-&ZeVnLIqe-", false); /* superfluous shift */
    check_export("&AGE-", "&AGE-", false);                           /* "a" encoded */
    check_export("&-", "&", true);
    check_export("a&b", "a&b", false);
    check_export("&2D0-", "&2D0-", false);             /* lone high surrogate */
    check_export("&3gA-", "&3gA-", false);             /* lone low surrogate */
    check_export("&AAA-", "&AAA-", false);             /* NUL */
    check_export("&AOkA-", "&AOkA-", false);           /* leftover bits */
    check_export("raw\xc3\xa9", "raw\xc3\xa9", false); /* 8-bit: not mUTF-7 */
    check_export("", "", true);
}

/* ---- the parser ------------------------------------------------------------------------- */

static void test_quoted_utf8(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    /* rev1 sessions: lenient as before */
    assert_int_equal(feed(&p, "a CREATE \"x\xff\""), IMAP_PARSE_DONE);
    imap_parser_reset(&p);
    p.is_utf8 = true;
    imap_parser_reset(&p); /* kept across commands */
    assert_true(p.is_utf8);
    assert_int_equal(feed(&p, "a CREATE \"Entwürfe\""), IMAP_PARSE_DONE);
    assert_string_equal(p.args.list[0].str, "Entwürfe");
    imap_parser_reset(&p);
    /* RFC 6855 §3: 8-bit octets that are not UTF-8 are BAD */
    assert_int_equal(feed(&p, "a CREATE \"x\xff\""), IMAP_PARSE_ERROR);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a CREATE \"\xc3\""), IMAP_PARSE_ERROR);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a CREATE \"\xe0\x80\xaf\""), IMAP_PARSE_ERROR); /* overlong */
    imap_parser_free(&p);
}

static void test_literal_minus(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1 << 20);
    p.max_nonsync = IMAP_LITERAL_MINUS_MAX;
    /* RFC 7888 §5: up to 4096 octets, {n+} is fine */
    assert_int_equal(feed(&p, "a APPEND INBOX {4096+}"), IMAP_PARSE_LITERAL);
    assert_true(p.is_literal_nonsync);
    imap_parser_reset(&p);
    assert_int_equal(p.max_nonsync, IMAP_LITERAL_MINUS_MAX);
    assert_int_equal(feed(&p, "a APPEND INBOX {4097+}"), IMAP_PARSE_ERROR);
    assert_true(p.is_nonsync_too_big);
    assert_int_equal(p.literal_size, 4097);
    imap_parser_reset(&p);
    assert_false(p.is_nonsync_too_big);
    /* a synchronizing literal of any allowed size */
    assert_int_equal(feed(&p, "a APPEND INBOX {100000}"), IMAP_PARSE_LITERAL);
    imap_parser_reset(&p);
    /* LITERAL+: no such limit */
    p.max_nonsync = 0;
    assert_int_equal(feed(&p, "a APPEND INBOX {100000+}"), IMAP_PARSE_LITERAL);
    imap_parser_free(&p);
}

static void test_literal8_and_utf8_append(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1 << 20);
    const char *msg = "Subject: Grüße\r\n\r\nx\r\n";
    char line[128];
    snprintf(line, sizeof line, "A1 APPEND INBOX (\\Seen) UTF8 (~{%zu+}", strlen(msg));
    assert_int_equal(feed(&p, line), IMAP_PARSE_LITERAL);
    assert_true(imap_parser_feed_literal(&p, msg, strlen(msg)));
    assert_int_equal(feed(&p, ")"), IMAP_PARSE_DONE);
    struct imap_append_request r;
    const char *why = NULL;
    assert_true(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    assert_int_equal(r.n_parts, 1);
    assert_true(r.parts[0].is_utf8);
    assert_true(r.parts[0].data->is_literal8);
    assert_int_equal(r.parts[0].data->len, strlen(msg));
    imap_append_request_free(&r);
    imap_parser_reset(&p);
    /* RFC 6855 §4: the UTF8 item holds one literal8, nothing else */
    assert_int_equal(feed(&p, "A2 APPEND INBOX UTF8 (\"x\")"), IMAP_PARSE_DONE);
    assert_false(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "A3 APPEND INBOX UTF8 ({1+}"), IMAP_PARSE_LITERAL);
    assert_true(imap_parser_feed_literal(&p, "x", 1));
    assert_int_equal(feed(&p, ")"), IMAP_PARSE_DONE);
    assert_false(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    imap_parser_reset(&p);
    /* MULTIAPPEND mixing both forms */
    assert_int_equal(feed(&p, "A4 APPEND INBOX {1+}"), IMAP_PARSE_LITERAL);
    assert_true(imap_parser_feed_literal(&p, "a", 1));
    assert_int_equal(feed(&p, " UTF8 (~{1+}"), IMAP_PARSE_LITERAL);
    assert_true(imap_parser_feed_literal(&p, "b", 1));
    assert_int_equal(feed(&p, ")"), IMAP_PARSE_DONE);
    assert_true(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    assert_int_equal(r.n_parts, 2);
    assert_false(r.parts[0].is_utf8);
    assert_true(r.parts[1].is_utf8);
    imap_append_request_free(&r);
    imap_parser_free(&p);
}

static void test_status_deleted(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    assert_int_equal(feed(&p, "a STATUS INBOX (MESSAGES DELETED SIZE)"), IMAP_PARSE_DONE);
    unsigned items = 0;
    assert_true(imap_status_items_parse(&p.args.list[1], &items));
    assert_int_equal(items, IMAP_ST_MESSAGES | IMAP_ST_DELETED | IMAP_ST_SIZE);
    imap_parser_free(&p);
}

/* ---- NOTIFY ----------------------------------------------------------------------------- */

static enum imap_notify_parse_result notify(const char *line, struct imap_notify_request *r,
                                            struct imap_parser *p)
{
    imap_parser_reset(p);
    assert_int_equal(feed(p, line), IMAP_PARSE_DONE);
    const char *why = NULL;
    return imap_notify_parse(p->args.list, p->args.n, r, &why);
}

static void test_notify_parse(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    struct imap_notify_request r;
    assert_int_equal(notify("n NOTIFY NONE", &r, &p), IMAP_NOTIFY_PARSE_OK);
    assert_true(r.is_none);
    /* RFC 5465 §3.1's example, corrected to its own §5 rule */
    assert_int_equal(notify("b notify set status (selected MessageNew (uid "
                            "body.peek[header.fields (from to subject)]) MessageExpunge) "
                            "(subtree Lists MessageNew)",
                            &r, &p),
                     IMAP_NOTIFY_PARSE_BAD);
    assert_int_equal(notify("b notify set status (selected (MessageNew (uid "
                            "body.peek[header.fields (from to subject)]) MessageExpunge)) "
                            "(subtree Lists (MessageNew MessageExpunge))",
                            &r, &p),
                     IMAP_NOTIFY_PARSE_OK);
    assert_true(r.has_status);
    assert_int_equal(r.n_groups, 2);
    assert_int_equal(r.groups[0].filter, IMAP_NOTIFY_SELECTED);
    assert_int_equal(r.groups[0].events, IMAP_NOTIFY_MESSAGE_NEW | IMAP_NOTIFY_MESSAGE_EXPUNGE);
    assert_non_null(r.groups[0].fetch_att);
    assert_int_equal(r.groups[0].fetch_att->n, 2);
    assert_int_equal(r.groups[1].filter, IMAP_NOTIFY_SUBTREE);
    assert_int_equal(r.groups[1].n_names, 1);
    assert_string_equal(r.groups[1].names[0]->str, "Lists");
    /* §6 example: several groups, names as a list */
    assert_int_equal(notify("a notify set (mailboxes (INBOX \"Sent Items\") (Messagenew "
                            "messageExpunge)) (personal (SubscriptionChange))",
                            &r, &p),
                     IMAP_NOTIFY_PARSE_OK);
    assert_int_equal(r.groups[0].n_names, 2);
    assert_int_equal(r.groups[1].events, IMAP_NOTIFY_SUBSCRIPTION_CHANGE);
    assert_int_equal(notify("a NOTIFY SET (inboxes NONE) (subscribed (MailboxName "
                            "MailboxMetadataChange ServerMetadataChange))",
                            &r, &p),
                     IMAP_NOTIFY_PARSE_OK);
    assert_int_equal(r.groups[0].events, 0);
    /* outside the selected mailbox (STATUS), message events may come alone (the RFC's
     * own example watches a subtree for MessageNew; imaptest and Dovecot agree) */
    assert_int_equal(notify("a NOTIFY SET (personal (FlagChange))", &r, &p), IMAP_NOTIFY_PARSE_OK);
    assert_int_equal(notify("a NOTIFY SET (mailboxes INBOX (MessageExpunge))", &r, &p),
                     IMAP_NOTIFY_PARSE_OK);
    /* the rules of §5, §6.1 and §8 */
    static const char *const bad[] = {
        "a NOTIFY",
        "a NOTIFY SET",
        "a NOTIFY SET STATUS",
        "a NOTIFY NONE x",
        "a NOTIFY SET (selected (MessageNew))",
        "a NOTIFY SET (selected (MessageExpunge FlagChange))",
        "a NOTIFY SET (selected (MailboxName))",
        "a NOTIFY SET (selected NONE) (selected-delayed NONE)",
        "a NOTIFY SET (personal (MessageNew (uid) MessageExpunge))",
        "a NOTIFY SET (subtree (MailboxName))",
        "a NOTIFY SET (mailboxes () (MailboxName))",
        "a NOTIFY SET (personal INBOX (MailboxName))",
        "a NOTIFY SET (elsewhere (MailboxName))",
        "a NOTIFY SET (personal ())",
        "a NOTIFY SET (personal ((MailboxName)))",
        "a NOTIFY SET personal",
        "a NOTIFY SET (selected (MessageNew (uid) (flags) MessageExpunge))",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(notify(bad[i], &r, &p), IMAP_NOTIFY_PARSE_BAD);
    /* unsupported events: NO [BADEVENT] */
    assert_int_equal(notify("a NOTIFY SET (personal (AnnotationChange))", &r, &p),
                     IMAP_NOTIFY_PARSE_BADEVENT);
    assert_int_equal(notify("a NOTIFY SET (personal (MailboxName X-Future))", &r, &p),
                     IMAP_NOTIFY_PARSE_BADEVENT);
    /* bounds */
    char line[4096];
    size_t len = (size_t)snprintf(line, sizeof line, "a NOTIFY SET");
    for (int i = 0; i <= IMAP_NOTIFY_MAX_GROUPS; i++)
        len += (size_t)snprintf(line + len, sizeof line - len, " (personal NONE)");
    assert_int_equal(notify(line, &r, &p), IMAP_NOTIFY_PARSE_BAD);
    len = (size_t)snprintf(line, sizeof line, "a NOTIFY SET (mailboxes (");
    for (int i = 0; i <= IMAP_NOTIFY_MAX_NAMES; i++)
        len += (size_t)snprintf(line + len, sizeof line - len, "m ");
    snprintf(line + len, sizeof line - len, ") (MailboxName))");
    assert_int_equal(notify(line, &r, &p), IMAP_NOTIFY_PARSE_BAD);
    imap_parser_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mailname_import),
        cmocka_unit_test(test_mailname_export),
        cmocka_unit_test(test_quoted_utf8),
        cmocka_unit_test(test_literal_minus),
        cmocka_unit_test(test_literal8_and_utf8_append),
        cmocka_unit_test(test_status_deleted),
        cmocka_unit_test(test_notify_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
