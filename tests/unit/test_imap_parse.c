/*
 * test_imap_parse.c - unit tests for the IMAP command parser (src/imap/parse.c):
 * tags, atoms, quoted strings, literals and LITERAL+, limits, sequence sets; and the
 * argument meaning of src/imap/args.c: LIST-EXTENDED/LIST-STATUS requests and MULTIAPPEND
 * (message count and total size bounds included).
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
#include "store/mime.h"
#include "imap/parse.h"
#include "store/store.h"

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
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a fetch 2 (BINARY.PEEK[1] BODY[HEADER"), IMAP_PARSE_ERROR);
    imap_parser_free(&p);
}

/* RFC 3501 §9: '[' is an ATOM-CHAR; only section atoms pair brackets. */
static void test_bracket_atoms(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    assert_int_equal(feed(&p, "a SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}"), IMAP_PARSE_DONE);
    assert_int_equal(p.args.n, 1);
    assert_string_equal(p.args.list[0].str, "!#$&'+,-.0123456789:;<=>?@^_`|[}");
    imap_parser_reset(&p);
    assert_int_equal(feed(&p, "a LIST \"\" a[b%* (x)"), IMAP_PARSE_DONE);
    assert_int_equal(p.args.n, 3);
    assert_string_equal(p.args.list[1].str, "a[b%*");
    assert_int_equal(p.args.list[2].type, IMAP_ARG_LIST);
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
    /* 4294967295 is a number (the largest UID), not '*' */
    assert_true(imap_seqset_parse("1:4294967295", &s));
    assert_true(imap_seqset_contains(&s, 4294967295u, 10));
    assert_true(imap_seqset_contains(&s, 20, 10));
    imap_seqset_free(&s);
    assert_true(imap_seqset_parse("4294967295", &s));
    assert_false(imap_seqset_contains(&s, 10, 10));
    imap_seqset_free(&s);
    assert_false(imap_seqset_parse("", &s));
}

/* Parse one whole command line (no literals) into p; DONE expected. */
static void parse_line(struct imap_parser *p, const char *line)
{
    imap_parser_reset(p);
    assert_int_equal(feed(p, line), IMAP_PARSE_DONE);
}

/* RFC 2971 ID: the address a proxy passes, validated; a broken list passes none. */
static void test_id_originating_ip(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    char ip[64];
    parse_line(&p, "a ID (\"name\" \"Roundcube\" \"x-originating-ip\" \"192.0.2.7\")");
    assert_true(imap_id_originating_ip(p.args.list, p.args.n, ip, sizeof ip));
    assert_string_equal(ip, "192.0.2.7");
    parse_line(&p, "a ID (\"X-Originating-IP\" \"2001:db8::5\")");
    assert_true(imap_id_originating_ip(p.args.list, p.args.n, ip, sizeof ip));
    assert_string_equal(ip, "2001:db8::5");
    const char *bad[] = {
        "a ID NIL",
        "a ID (\"name\" \"x\")",
        "a ID (\"x-originating-ip\" \"not-an-ip\")",
        "a ID (\"x-originating-ip\" \"192.0.2.7 \")",
        "a ID (\"x-originating-ip\")",
        "a ID (\"x-originating-ip\" (\"192.0.2.7\"))",
        "a ID (\"a-field-name-longer-than-thirty-octets\" \"v\" \"x-originating-ip\" \"192.0.2.7\")",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_line(&p, bad[i]);
        assert_false(imap_id_originating_ip(p.args.list, p.args.n, ip, sizeof ip));
    }
    imap_parser_free(&p);
}

static void test_list_request(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    struct imap_list_request r;
    const char *why = NULL;
    parse_line(&p, "a LIST \"\" *");
    assert_true(imap_list_request_parse(p.args.list, p.args.n, &r, &why));
    assert_false(r.is_extended);
    assert_int_equal(r.n_patterns, 1);
    parse_line(&p, "a LIST (SUBSCRIBED RECURSIVEMATCH remote) \"Ref/\" (\"a\" b \"\") "
                   "RETURN (CHILDREN STATUS (MESSAGES UNSEEN))");
    assert_true(imap_list_request_parse(p.args.list, p.args.n, &r, &why));
    assert_true(r.is_extended && r.is_pattern_list);
    assert_int_equal(r.select, IMAP_LIST_SEL_SUBSCRIBED | IMAP_LIST_SEL_RECURSIVEMATCH |
                                   IMAP_LIST_SEL_REMOTE);
    /* SUBSCRIBED selection implies the SUBSCRIBED return option (RFC 5258 §3) */
    assert_int_equal(r.ret,
                     IMAP_LIST_RET_SUBSCRIBED | IMAP_LIST_RET_CHILDREN | IMAP_LIST_RET_STATUS);
    assert_int_equal(r.status_items, IMAP_ST_MESSAGES | IMAP_ST_UNSEEN);
    assert_string_equal(r.reference, "Ref/");
    assert_int_equal(r.n_patterns, 3);
    assert_string_equal(r.patterns[1], "b");
    parse_line(&p, "a LIST (SPECIAL-USE) \"\" *");
    assert_true(imap_list_request_parse(p.args.list, p.args.n, &r, &why));
    assert_int_equal(r.ret, IMAP_LIST_RET_SPECIAL_USE); /* RFC 6154 §5.1 */
    /* refused: RECURSIVEMATCH alone, unknown options, bad RETURN, empty pattern list */
    static const char *const bad[] = {
        "a LIST (RECURSIVEMATCH) \"\" *",
        "a LIST (REMOTE RECURSIVEMATCH) \"\" *",
        "a LIST (FOO) \"\" *",
        "a LIST \"\" * RETURN (FOO)",
        "a LIST \"\" * RETURN",
        "a LIST \"\" * RETURN (STATUS)",
        "a LIST \"\" * RETURN (STATUS ())",
        "a LIST \"\" ()",
        "a LIST \"\" * RETURN () x",
        "a LIST () \"\"",
        "a LIST \"\" (\"a\" (b))",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_line(&p, bad[i]);
        assert_false(imap_list_request_parse(p.args.list, p.args.n, &r, &why));
        assert_true(r.is_extended);
        assert_non_null(why);
    }
    /* not extended at all: the basic LIST's usage error applies */
    parse_line(&p, "a LIST \"\" * FOO");
    assert_false(imap_list_request_parse(p.args.list, p.args.n, &r, &why));
    assert_false(r.is_extended);
    /* bounded lists: IMAP_LIST_MAX_PATTERNS patterns, IMAP_LIST_MAX_OPTIONS options */
    char line[4096];
    for (size_t extra = 0; extra < 2; extra++) {
        size_t o = (size_t)snprintf(line, sizeof line, "a LIST \"\" (");
        for (size_t i = 0; i < IMAP_LIST_MAX_PATTERNS + extra; i++)
            o += (size_t)snprintf(line + o, sizeof line - o, "p%zu ", i);
        snprintf(line + o, sizeof line - o, ")");
        parse_line(&p, line);
        assert_int_equal(imap_list_request_parse(p.args.list, p.args.n, &r, &why), extra == 0);
        o = (size_t)snprintf(line, sizeof line, "a LIST (");
        for (size_t i = 0; i < IMAP_LIST_MAX_OPTIONS + extra; i++)
            o += (size_t)snprintf(line + o, sizeof line - o, "REMOTE ");
        snprintf(line + o, sizeof line - o, ") \"\" *");
        parse_line(&p, line);
        assert_int_equal(imap_list_request_parse(p.args.list, p.args.n, &r, &why), extra == 0);
    }
    imap_parser_free(&p);
}

static void test_search_return(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    struct imap_search_return r;
    parse_line(&p, "a SEARCH RETURN (min MAX COUNT ALL) ALL");
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX | IMAP_SEARCH_RET_COUNT |
                                 IMAP_SEARCH_RET_ALL);
    parse_line(&p, "a SEARCH RETURN () ALL");
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_ALL); /* RFC 4731 §3.1 */
    parse_line(&p, "a SEARCH RETURN (SAVE) ALL"); /* RFC 5182: saves, returns nothing */
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_SAVE);
    parse_line(&p, "a SEARCH RETURN (PARTIAL 10:1 COUNT) ALL"); /* RFC 5267 §4.4 */
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_PARTIAL | IMAP_SEARCH_RET_COUNT);
    assert_int_equal(r.partial_lo, 1);
    assert_int_equal(r.partial_hi, 10);
    assert_false(r.is_from_end);
    parse_line(&p, "a SEARCH RETURN (PARTIAL -1:-100) ALL"); /* RFC 9394 */
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_true(r.is_from_end);
    assert_int_equal(r.partial_hi, 100);
    /* RFC 5267 §4.2-4.3: UPDATE and CONTEXT ask for no data: alone they mean ALL too */
    parse_line(&p, "a SEARCH RETURN (update) ALL");
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_UPDATE | IMAP_SEARCH_RET_ALL);
    parse_line(&p, "a SEARCH RETURN (CONTEXT UPDATE) ALL");
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_HINTS | IMAP_SEARCH_RET_ALL);
    parse_line(&p, "a SEARCH RETURN (UPDATE COUNT) ALL");
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_UPDATE | IMAP_SEARCH_RET_COUNT);
    parse_line(&p, "a SEARCH RETURN (PARTIAL 1:5 UPDATE) ALL");
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_UPDATE | IMAP_SEARCH_RET_PARTIAL);
    parse_line(&p, "a SEARCH RETURN (SAVE UPDATE) ALL");
    assert_true(imap_search_return_parse(&p.args.list[1], &r));
    assert_int_equal(r.opts, IMAP_SEARCH_RET_UPDATE | IMAP_SEARCH_RET_SAVE);
    static const char *const bad[] = {
        "a SEARCH RETURN (PARTIAL 1:10 ALL) ALL", "a SEARCH RETURN (PARTIAL 0:10) ALL",
        "a SEARCH RETURN (PARTIAL 1:-10) ALL",    "a SEARCH RETURN (PARTIAL) ALL",
        "a SEARCH RETURN (PARTIAL 1:4294967296) ALL", "a SEARCH RETURN (FOO) ALL",
        "a SEARCH RETURN MIN ALL", "a SEARCH RETURN (UPDATE 1) ALL",
        "a SEARCH RETURN ((UPDATE)) ALL",
        ("a SEARCH RETURN (MIN MIN MIN MIN MIN MIN MIN MIN MIN MIN MIN MIN MIN MIN MIN MIN MIN) "
         "ALL"), /* bounded */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_line(&p, bad[i]);
        assert_false(imap_search_return_parse(&p.args.list[1], &r));
    }
    imap_parser_free(&p);
}

/* RFC 5255 §4.7: the first argument that matches anything wins; wildcards; "default". */
static void test_comparator_choose(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    unsigned m;
    parse_line(&p, "a COMPARATOR i;ascii-casemap");
    assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), MIME_CMP_ASCII_CASEMAP);
    assert_int_equal(m, 2u);
    parse_line(&p, "a COMPARATOR \"cz;*\" \"I;UNICODE-CASEMAP\" i;ascii-casemap");
    assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), MIME_CMP_UNICODE_CASEMAP);
    assert_int_equal(m, 1u);
    parse_line(&p, "a COMPARATOR \"i;*\"");
    assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), MIME_CMP_UNICODE_CASEMAP);
    assert_int_equal(m, 3u); /* both matched: the response lists them */
    parse_line(&p, "a COMPARATOR \"*ascii*\" default");
    assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), MIME_CMP_ASCII_CASEMAP);
    parse_line(&p, "a COMPARATOR default i;ascii-casemap");
    assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), MIME_CMP_UNICODE_CASEMAP);
    parse_line(&p, "a COMPARATOR i;octet \"en;*\" \"*x\"");
    assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), -1);
    parse_line(&p, "a COMPARATOR \"**a*s*c*i*i**\"");
    assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), MIME_CMP_ASCII_CASEMAP);
    static const char *const bad[] = {"a COMPARATOR (i;octet)", "a COMPARATOR NIL x (y)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_line(&p, bad[i]);
        assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), -2);
    }
    char line[512];
    snprintf(line, sizeof line, "a COMPARATOR %0300d", 7); /* too long a name */
    parse_line(&p, line);
    assert_int_equal(imap_comparator_choose(p.args.list, p.args.n, &m), -2);
    imap_parser_free(&p);
}

static void test_sort_criteria(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    struct imap_sort_criterion c[IMAP_SORT_MAX_CRITERIA];
    size_t n;
    parse_line(&p, "a SORT (REVERSE date subject displayFROM) UTF-8 ALL");
    assert_true(imap_sort_criteria_parse(&p.args.list[0], c, &n));
    assert_int_equal(n, 3);
    assert_int_equal(c[0].key, IMAP_SORT_DATE);
    assert_true(c[0].is_reverse);
    assert_int_equal(c[1].key, IMAP_SORT_SUBJECT);
    assert_false(c[1].is_reverse);
    assert_int_equal(c[2].key, IMAP_SORT_DISPLAYFROM);
    static const char *const bad[] = {"a SORT () UTF-8 ALL", "a SORT (REVERSE) UTF-8 ALL",
                                      "a SORT (DATE REVERSE) UTF-8 ALL",
                                      "a SORT (REVERSE REVERSE DATE) UTF-8 ALL",
                                      "a SORT (BOGUS) UTF-8 ALL", "a SORT DATE UTF-8 ALL",
                                      ("a SORT (DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE "
                                       "DATE DATE DATE DATE DATE DATE DATE) UTF-8 ALL")};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_line(&p, bad[i]);
        assert_false(imap_sort_criteria_parse(&p.args.list[0], c, &n));
    }
    enum imap_thread_algorithm alg;
    parse_line(&p, "a THREAD refs UTF-8 ALL");
    assert_true(imap_thread_algorithm_parse(&p.args.list[0], &alg));
    assert_int_equal(alg, IMAP_THREAD_REFS);
    parse_line(&p, "a THREAD (REFERENCES) UTF-8 ALL");
    assert_false(imap_thread_algorithm_parse(&p.args.list[0], &alg));
    imap_parser_free(&p);
}

static void test_metadata_args(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1024);
    struct imap_getmetadata_request g;
    parse_line(&p, "a GETMETADATA (MAXSIZE 1024 DEPTH infinity) \"\" (/Shared/Comment /private/x)");
    assert_true(imap_getmetadata_parse(p.args.list, p.args.n, &g));
    assert_true(g.has_maxsize);
    assert_int_equal(g.maxsize, 1024);
    assert_int_equal(g.depth, -1);
    assert_int_equal(g.n_entries, 2);
    assert_string_equal(g.entries[0], "/shared/comment"); /* case-insensitive names */
    parse_line(&p, "a GETMETADATA INBOX /private/comment");
    assert_true(imap_getmetadata_parse(p.args.list, p.args.n, &g));
    assert_int_equal(g.depth, 0);
    struct imap_setmetadata_request sr;
    parse_line(&p, "a SETMETADATA INBOX (/private/a \"x\" /shared/b NIL /private/c \"NIL\")");
    assert_true(imap_setmetadata_parse(p.args.list, p.args.n, &sr));
    assert_int_equal(sr.n, 3);
    assert_non_null(sr.values[0]);
    assert_null(sr.values[1]);    /* the atom NIL removes */
    assert_non_null(sr.values[2]); /* a quoted "NIL" is a value */
    static const char *const bad[] = {
        "a SETMETADATA INBOX (/comment \"x\")", "a SETMETADATA INBOX (/private/ \"x\")",
        "a SETMETADATA INBOX (/private/a/ \"x\")", "a SETMETADATA INBOX (/private/a%b \"x\")",
        "a SETMETADATA INBOX (/private/a)", "a SETMETADATA INBOX ()",
        "a GETMETADATA (DEPTH 2) INBOX /private/a", "a GETMETADATA (MAXSIZE x) INBOX /private/a",
        "a GETMETADATA INBOX", "a GETMETADATA INBOX ()"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_line(&p, bad[i]);
        bool ok = strstr(bad[i], "GET") ? imap_getmetadata_parse(p.args.list, p.args.n, &g)
                                        : imap_setmetadata_parse(p.args.list, p.args.n, &sr);
        if (ok)
            fail_msg("accepted: %s", bad[i]);
    }
    imap_parser_free(&p);
}

/* Feed "a APPEND Box" followed by n messages "{1+}x" with optional per-message prefix. */
static enum imap_parse_result feed_append(struct imap_parser *p, size_t n, const char *prefix)
{
    imap_parser_reset(p);
    char first[200];
    snprintf(first, sizeof first, "a APPEND Box %s{1+}", prefix);
    enum imap_parse_result r = feed(p, first);
    for (size_t i = 0; i < n && r == IMAP_PARSE_LITERAL; i++) {
        assert_true(imap_parser_feed_literal(p, "x", 1));
        char next[200];
        snprintf(next, sizeof next, " %s{1+}", prefix);
        r = feed(p, i + 1 < n ? next : "");
    }
    return r;
}

static void test_append_request(void **state)
{
    (void)state;
    struct imap_parser p;
    imap_parser_init(&p, 1000);
    struct imap_append_request r;
    const char *why = NULL;
    /* one message, quoted data still accepted as before */
    parse_line(&p, "a APPEND INBOX (\\Seen) \"01-Feb-2020 10:11:12 +0100\" \"hello\"");
    assert_true(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    assert_int_equal(r.n_parts, 1);
    assert_int_equal(r.parts[0].flags, STORE_FLAG_SEEN);
    assert_int_equal(r.parts[0].internaldate, 1580548272);
    assert_string_equal(r.parts[0].data->str, "hello");
    imap_append_request_free(&r);
    /* several: each with its own flags and date */
    assert_int_equal(feed_append(&p, 3, "(\\Flagged $K) "), IMAP_PARSE_DONE);
    assert_true(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    assert_int_equal(r.n_parts, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(r.parts[i].flags, STORE_FLAG_FLAGGED);
        assert_string_equal(r.parts[i].keywords[0], "$K");
        assert_int_equal(r.parts[i].data->type, IMAP_ARG_LITERAL);
    }
    imap_append_request_free(&r);
    /* bad flag or date on a later message; a later message that is not a literal */
    assert_int_equal(feed_append(&p, 2, "(\\Bogus) "), IMAP_PARSE_DONE);
    assert_false(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    assert_int_equal(r.n_parts, 0);
    assert_int_equal(feed_append(&p, 2, "\"32-Foo-2020 10:00:00 +0000\" "), IMAP_PARSE_DONE);
    assert_false(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    parse_line(&p, "a APPEND INBOX \"x\" \"y\"");
    assert_false(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    parse_line(&p, "a APPEND INBOX (\\Seen)");
    assert_false(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    /* IMAP_MAX_APPEND_MESSAGES literals pass the parser; one more is [LIMIT] */
    assert_int_equal(feed_append(&p, IMAP_MAX_APPEND_MESSAGES, ""), IMAP_PARSE_DONE);
    assert_true(imap_append_request_parse(p.args.list, p.args.n, &r, &why));
    assert_int_equal(r.n_parts, IMAP_MAX_APPEND_MESSAGES);
    imap_append_request_free(&r);
    assert_int_equal(feed_append(&p, IMAP_MAX_APPEND_MESSAGES + 1, ""), IMAP_PARSE_ERROR);
    assert_true(p.is_over_limit);
    assert_false(p.is_literal_too_big);
    /* the total: IMAP_APPEND_TOTAL_FACTOR messages of the largest size, not one more */
    struct imap_parser q;
    imap_parser_init(&q, 100000);
    assert_int_equal(feed(&q, "a APPEND Box {100000+}"), IMAP_PARSE_LITERAL);
    char *big = malloc(100000);
    assert_non_null(big);
    memset(big, 'y', 100000);
    for (int i = 1; i < IMAP_APPEND_TOTAL_FACTOR; i++) {
        assert_true(imap_parser_feed_literal(&q, big, 100000));
        assert_int_equal(feed(&q, " {100000+}"), IMAP_PARSE_LITERAL);
    }
    assert_true(imap_parser_feed_literal(&q, big, 100000));
    assert_int_equal(feed(&q, " {1}"), IMAP_PARSE_ERROR);
    assert_true(q.is_literal_too_big);
    free(big);
    imap_parser_free(&q);
    imap_parser_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),          cmocka_unit_test(test_missing_tag),
        cmocka_unit_test(test_fetch_items),     cmocka_unit_test(test_literals),
        cmocka_unit_test(test_bracket_atoms),
        cmocka_unit_test(test_literal_too_big), cmocka_unit_test(test_quoted_and_nesting),
        cmocka_unit_test(test_seqset),          cmocka_unit_test(test_id_originating_ip),
        cmocka_unit_test(test_list_request),
        cmocka_unit_test(test_append_request),  cmocka_unit_test(test_search_return),
        cmocka_unit_test(test_sort_criteria),   cmocka_unit_test(test_comparator_choose),
        cmocka_unit_test(test_metadata_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
