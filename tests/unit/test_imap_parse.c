/*
 * test_imap_parse.c - unit tests for the IMAP command parser (src/imap/parse.c):
 * tags, atoms, quoted strings, literals and LITERAL+, limits, sequence sets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "imap/parse.h"

static enum imap_parse_result feed(struct imap_parser *p, const char *line)
{
    return imap_parser_feed_line(p, line, strlen(line));
}

static void test_simple(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    assert_int_equal(feed(&p, "IDENT01 capability"), IMAP_PARSE_DONE);
    assert_string_equal(p.tag, "IDENT01");
    assert_string_equal(p.name, "CAPABILITY");
    assert_int_equal(p.args.n, 0);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, ". LOGIN tsunami heslo"), IMAP_PARSE_DONE);
    assert_string_equal(p.tag, ".");
    assert_int_equal(p.args.n, 2);
    assert_string_equal(p.args.list[1].str, "heslo");
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "id01 LIST \"\" \"*\""), IMAP_PARSE_DONE);
    assert_int_equal(p.args.n, 2);
    assert_int_equal(p.args.list[0].type, IMAP_ARG_QUOTED);
    assert_int_equal(p.args.list[0].len, 0);
    assert_string_equal(p.args.list[1].str, "*");
    imap_parser_free(&p);
}

static void test_missing_tag(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    assert_int_equal(feed(&p, "logout"), IMAP_PARSE_ERROR);
    assert_null(p.tag);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "* CAPABILITY"), IMAP_PARSE_ERROR);
    assert_null(p.tag);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, ""), IMAP_PARSE_ERROR);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a+b NOOP"), IMAP_PARSE_ERROR);
    imap_parser_free(&p);
}

static void test_fetch_items(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    assert_int_equal(feed(&p, "a fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100> UID)"),
                     IMAP_PARSE_DONE);
    assert_int_equal(p.args.n, 2);
    assert_string_equal(p.args.list[0].str, "1:*");
    struct imap_arg *l = &p.args.list[1];
    assert_int_equal(l->type, IMAP_ARG_LIST);
    assert_int_equal(l->n, 3);
    assert_string_equal(l->list[1].str, "BODY.PEEK[HEADER.FIELDS (From To)]<0.100>");
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a fetch 2 body[text]"), IMAP_PARSE_DONE);
    assert_string_equal(p.args.list[1].str, "body[text]");
    imap_parser_free(&p);
}

static void test_literals(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    assert_int_equal(feed(&p, "A003 APPEND saved-messages (\\Seen) {10}"), IMAP_PARSE_LITERAL);
    assert_false(p.is_literal_nonsync);
    assert_int_equal(imap_parser_literal_remaining(&p), 10);
    assert_false(imap_parser_feed_literal(&p, "01234", 5));
    assert_true(imap_parser_feed_literal(&p, "56789", 5));
    assert_int_equal(feed(&p, ""), IMAP_PARSE_DONE);
    assert_int_equal(p.args.n, 3);
    assert_int_equal(p.args.list[2].type, IMAP_ARG_LITERAL);
    assert_memory_equal(p.args.list[2].str, "0123456789", 10);
    imap_parser_reset(&p);
    /* LITERAL+ and a literal inside a list, continued after */
    assert_int_equal(feed(&p, "b LOGIN {5+}"), IMAP_PARSE_LITERAL);
    assert_true(p.is_literal_nonsync);
    assert_true(imap_parser_feed_literal(&p, "alice", 5));
    assert_int_equal(feed(&p, " {2}"), IMAP_PARSE_LITERAL);
    assert_true(imap_parser_feed_literal(&p, "pw", 2));
    assert_int_equal(feed(&p, ""), IMAP_PARSE_DONE);
    assert_string_equal(p.args.list[0].str, "alice");
    assert_string_equal(p.args.list[1].str, "pw");
    imap_parser_free(&p);
}

static void test_literal_too_big(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    assert_int_equal(feed(&p, "a APPEND INBOX {4294967295}"), IMAP_PARSE_ERROR);
    assert_true(p.is_literal_too_big);
    assert_string_equal(p.tag, "a");
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a APPEND INBOX {99999999999999999999999999}"), IMAP_PARSE_ERROR);
    assert_true(p.is_literal_too_big);
    imap_parser_reset(&p);
    /* outside APPEND a literal is line-sized, and all literals of a command are capped */
    struct imap_parser q;
    imap_parser_init(&q, 1 << 20);
    assert_int_equal(feed(&q, "a LOGIN {70000}"), IMAP_PARSE_ERROR);
    assert_true(q.is_literal_too_big);
    imap_parser_reset(&q);
    assert_int_equal(feed(&q, "a SEARCH TEXT {60000}"), IMAP_PARSE_LITERAL);
    char big[60000];
    memset(big, 'x', sizeof big);
    for (int k = 0; k < 3; k++) {
        assert_true(imap_parser_feed_literal(&q, big, sizeof big));
        assert_int_equal(feed(&q, " TEXT {60000}"), IMAP_PARSE_LITERAL);
    }
    assert_true(imap_parser_feed_literal(&q, big, sizeof big));
    assert_int_equal(feed(&q, " TEXT {60000}"), IMAP_PARSE_ERROR);
    assert_true(q.is_literal_too_big);
    imap_parser_free(&q);
    assert_int_equal(feed(&p, "a APPEND INBOX {12} x"), IMAP_PARSE_ERROR);
    assert_false(p.is_literal_too_big);
    imap_parser_free(&p);
}

static void test_quoted_and_nesting(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    assert_int_equal(feed(&p, "a LOGIN \"al\\\"ice\" \"p w\\\\\""), IMAP_PARSE_DONE);
    assert_string_equal(p.args.list[0].str, "al\"ice");
    assert_string_equal(p.args.list[1].str, "p w\\");
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a LOGIN \"unterminated"), IMAP_PARSE_ERROR);
    imap_parser_reset(&p);
    char deep[200] = "a SEARCH ";
    for (int i = 0; i < 40; i++)
        strcat(deep, "(");
    assert_int_equal(feed(&p, deep), IMAP_PARSE_ERROR);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a SEARCH (OR (SEEN) (UNSEEN)"), IMAP_PARSE_ERROR);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a SEARCH (OR SEEN UNSEEN))"), IMAP_PARSE_ERROR);
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a SEARCH OR (SEEN) (FROM \"x\") NOT 1:3"), IMAP_PARSE_DONE);
    assert_int_equal(p.args.n, 5);
    imap_parser_free(&p);
}

static void test_seqset(void **state)
{
    (void)state;
    struct imap_seqset s;
    assert_true(imap_seqset_parse("1:3,5,7:*", &s));
    assert_int_equal(s.n, 3);
    assert_true(imap_seqset_contains(&s, 2, 10));
    assert_false(imap_seqset_contains(&s, 4, 10));
    assert_true(imap_seqset_contains(&s, 10, 10));
    assert_false(imap_seqset_contains(&s, 11, 10));
    imap_seqset_free(&s);
    assert_true(imap_seqset_parse("*:4", &s));
    assert_true(imap_seqset_contains(&s, 4, 2)); /* "*:4" with * = 2 is 2:4 */
    imap_seqset_free(&s);
    assert_false(imap_seqset_parse("0", &s));
    assert_false(imap_seqset_parse("1,", &s));
    assert_false(imap_seqset_parse("1:", &s));
    assert_false(imap_seqset_parse("4294967296", &s));
    assert_false(imap_seqset_parse("", &s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),          cmocka_unit_test(test_missing_tag),
        cmocka_unit_test(test_fetch_items),     cmocka_unit_test(test_literals),
        cmocka_unit_test(test_literal_too_big), cmocka_unit_test(test_quoted_and_nesting),
        cmocka_unit_test(test_seqset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
