/*
 * test_mime_sort.c - unit tests for src/store/mime_sort.c: RFC 5256 §2.1 base subject
 * (every step, the reply/forward flag), the RFC 5051 i;unicode-casemap comparator,
 * RFC 5322 dates with zones and obsolete forms, message ids, and the sort keys of a header
 * (first address, groups, RFC 5957 display form).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "store/mime.h"

/* Base subject of s; *is_reply_r set. Returns a static copy. */
static const char *base(const char *s, bool *is_reply_r)
{
    static char out[512];
    struct buf b;
    buf_init(&b, 0);
    bool is_reply = false;
    assert_true(mime_base_subject(s, strlen(s), &b, &is_reply));
    snprintf(out, sizeof out, "%s", b.data ? b.data : "");
    buf_free(&b);
    if (is_reply_r)
        *is_reply_r = is_reply;
    return out;
}

static void test_base_subject(void **state)
{
    (void)state;
    bool r;
    static const struct {
        const char *in, *out;
        bool is_reply;
    } cases[] = {
        {"foo", "foo", false},
        {"", "", false},
        {"  foo  \t bar  ", "foo bar", false},           /* (1) white space */
        {"Re: foo", "foo", true},                         /* (3) subj-refwd */
        {"RE:foo", "foo", true},
        {"re : foo", "foo", true},                        /* *WSP before ":" */
        {"Fwd: foo", "foo", true},
        {"FW: foo", "foo", true},
        {"Re: Re: Fwd: foo", "foo", true},                /* (5) repeated */
        {"Re[2]: foo", "foo", true},                      /* blob inside subj-refwd */
        {"[list] Re: foo", "foo", true},                  /* *subj-blob subj-refwd */
        {"[list] foo", "foo", false},                     /* (4) a blob alone */
        {"[list]", "[list]", false},                      /* (4) not when nothing remains */
        {"[a][b] foo", "foo", false},                     /* (4) repeated via (5) */
        {"foo (fwd)", "foo", true},                       /* (2) subj-trailer */
        {"foo (FWD) (fwd) ", "foo", true},
        {"[fwd: foo]", "foo", true},                      /* (6) */
        {"[Fwd: Re: foo (fwd)]", "foo", true},            /* (6) then (2)-(5) again */
        {"[fwd: foo", "[fwd: foo", false},                /* no trailer: kept */
        {"Research: foo", "Research: foo", false},        /* "re" must be followed by ':' */
        {"Re: [fwd: foo]", "foo", true},
        {"Re:", "", true},
        {"[x] [y]", "[y]", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = base(cases[i].in, &r);
        if (strcmp(got, cases[i].out) != 0 || r != cases[i].is_reply)
            fail_msg("base subject of \"%s\": \"%s\" reply=%d, want \"%s\" reply=%d",
                     cases[i].in, got, r, cases[i].out, cases[i].is_reply);
    }
}

/* The casemapped form of s as a static string. */
static const char *cm(const char *s)
{
    static char out[512];
    struct buf b;
    buf_init(&b, 0);
    assert_true(mime_casemap(s, strlen(s), &b));
    snprintf(out, sizeof out, "%s", b.data ? b.data : "");
    buf_free(&b);
    return out;
}

static void test_casemap(void **state)
{
    (void)state;
    /* RFC 5051 §2: titlecase, then NFKD */
    assert_string_equal(cm("abc"), "ABC");
    assert_string_equal(cm("ABC"), "ABC");
    char a[512]; /* as cm()'s own buffer */
    snprintf(a, sizeof a, "%s", cm("\xc3\xa9")); /* é -> É -> E + U+0301 */
    assert_string_equal(a, "E\xcc\x81");
    assert_string_equal(cm("E\xcc\x81"), a);       /* already decomposed: same key */
    /* U+FB01 (ﬁ) has no simple titlecase mapping; NFKD makes it "fi" */
    assert_string_equal(cm("\xef\xac\x81"), "fi");
    /* titlecase, not uppercase: U+01C6 and U+01C4 both become U+01C5 ("Dž"), then NFKD */
    assert_string_equal(cm("\xc7\x86"), "Dz\xcc\x8c");
    assert_string_equal(cm("\xc7\x84"), "Dz\xcc\x8c");
    assert_string_equal(cm("\xce\xb1"), "\xce\x91"); /* α -> Α */
    snprintf(a, sizeof a, "%s", cm("stra\xc3\x9f" "e"));
    assert_string_equal(a, cm("STRA\xc3\x9f" "E"));
    /* an invalid octet is U+FFFD */
    assert_string_equal(cm("a\xff"), "A\xef\xbf\xbd");
    /* ordering: case does not matter, the octets of the forms decide */
    char apple[512];
    snprintf(apple, sizeof apple, "%s", cm("apple"));
    assert_true(strcmp(apple, cm("Banana")) < 0);
}

static void test_date(void **state)
{
    (void)state;
    int64_t t;
    assert_true(mime_date_parse("Thu, 15 Feb 2007 01:02:03 +0200", &t));
    assert_int_equal(t, 1171494123); /* 2007-02-14 23:02:03 UTC */
    assert_true(mime_date_parse("15 Feb 2007 01:02 +0200", &t)); /* no seconds */
    assert_int_equal(t, 1171494120);
    assert_true(mime_date_parse(" (c) 1 jan 70 00:00:00 GMT", &t)); /* 2-digit year */
    assert_int_equal(t, 0);
    assert_true(mime_date_parse("1 Jan 2000 00:00:00 EST", &t)); /* obsolete zone */
    assert_int_equal(t, 946684800 + 5 * 3600);
    assert_true(mime_date_parse("1 Jan 49 00:00:00 -0000", &t));
    assert_int_equal(t, 2493072000); /* 2049 */
    assert_false(mime_date_parse("", &t));
    assert_false(mime_date_parse("yesterday", &t));
    assert_false(mime_date_parse("32 Jan 2000 00:00:00", &t));
    assert_false(mime_date_parse("1 Foo 2000 00:00:00", &t));
}

static void collect(void *arg, const char *id, size_t len)
{
    struct buf *b = arg;
    buf_append(b, id, len);
    buf_append_byte(b, '|');
}

static void test_msgids(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(mime_msgids(" <a@b> (c) <c@d>\t<no-at> < e @ f >", 10, collect, &b), 3);
    assert_string_equal(b.data, "<a@b>|<c@d>|<e@f>|");
    buf_reset(&b);
    assert_int_equal(mime_msgids("<<x@y>", 10, collect, &b), 1);
    assert_string_equal(b.data, "<x@y>|");
    buf_reset(&b);
    assert_int_equal(mime_msgids("<a@b> <c@d>", 1, collect, &b), 1);
    assert_int_equal(mime_msgids(NULL, 1, collect, &b), 0);
    assert_int_equal(mime_msgids("<unterminated@x", 1, collect, &b), 0);
    buf_free(&b);
}

static void test_sort_keys(void **state)
{
    (void)state;
    const char *hdr = "Date: Thu, 15 Feb 2007 01:02:03 +0200\n"
                      "Subject: =?utf-8?q?Re:_=C3=A9t=C3=A9?= (fwd)\n"
                      "From: \"Zed\" <Zed@Example.org>, other@x\n"
                      "To: undisclosed: a@b, c@d;\n"
                      "Cc: c (Comment Name)\n"
                      "Message-ID: <m1@x>\n"
                      "In-Reply-To: <r0@x>\n"
                      "\n"
                      "Subject: not this one\n";
    struct mime_sort_keys k;
    assert_true(mime_sort_keys_parse(hdr, strlen(hdr), &k));
    assert_int_equal(k.sent, 1171494123);
    assert_true(k.is_reply);
    assert_string_equal(k.subject, cm("\xc3\xa9t\xc3\xa9"));
    assert_string_equal(k.from, "ZED");
    assert_string_equal(k.display_from, "ZED");
    assert_string_equal(k.to, "UNDISCLOSED"); /* a group comes first: its name */
    assert_string_equal(k.cc, "C");
    assert_string_equal(k.message_id, "<m1@x>");
    assert_string_equal(k.references, "<r0@x>"); /* no References: In-Reply-To */
    mime_sort_keys_free(&k);

    const char *h2 = "References: <a@x>\n <b@x>\nIn-Reply-To: <z@x>\nTo: bob@example.org\n\n";
    assert_true(mime_sort_keys_parse(h2, strlen(h2), &k));
    assert_int_equal(k.sent, -1);
    assert_string_equal(k.references, "<a@x> <b@x>");
    assert_string_equal(k.display_to, "BOB@EXAMPLE.ORG"); /* RFC 5957: no name: addr-spec */
    assert_string_equal(k.subject, "");
    assert_string_equal(k.from, "");
    assert_null(k.message_id);
    mime_sort_keys_free(&k);

    assert_true(mime_sort_keys_parse("", 0, &k)); /* no header at all */
    assert_string_equal(k.subject, "");
    mime_sort_keys_free(&k);

    /* RFC 5255 COMPARATOR i;ascii-casemap: only a-z are mapped, the rest stays as is */
    const char *h3 = "Subject: Re: =?utf-8?q?=C3=A9clair?= au caf\xc3\xa9\n"
                     "From: =?utf-8?q?=C3=89mile?= <Emile@Example.org>\n\n";
    assert_true(mime_sort_keys_parse_cmp(h3, strlen(h3), MIME_CMP_ASCII_CASEMAP, &k));
    assert_string_equal(k.subject, "\xc3\xa9" "CLAIR AU CAF\xc3\xa9");
    assert_string_equal(k.display_from, "\xc3\x89MILE");
    assert_string_equal(k.from, "EMILE"); /* RFC 5256: the addr-mailbox */
    mime_sort_keys_free(&k);
    assert_true(mime_sort_keys_parse(h3, strlen(h3), &k));
    assert_string_equal(k.subject, "E\xcc\x81" "CLAIR AU CAFE\xcc\x81");
    mime_sort_keys_free(&k);
}

/* RFC 8474 THREADID's input: the first message of the thread a message names. */
static void test_thread_root(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *root;
    } cases[] = {
        {"Message-ID: <m@x>\nReferences: <r@x>\n <p@x>\nIn-Reply-To: <p@x>\n\n", "<r@x>"},
        {"Message-ID: <m@x>\nIn-Reply-To: <p@x> (comment)\n\n", "<p@x>"},
        {"Message-ID: <m@x>\r\n\r\nReferences: <body@x>\n", "<m@x>"}, /* header only */
        {"Message-ID:\n <m@x>\nReferences: garbage\n\n", "<m@x>"},
        {"Subject: none\n\n", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *r = mime_thread_root(cases[i].msg, strlen(cases[i].msg));
        if (cases[i].root)
            assert_string_equal(r, cases[i].root);
        else
            assert_null(r);
        free(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thread_root),
        cmocka_unit_test(test_base_subject), cmocka_unit_test(test_casemap),
        cmocka_unit_test(test_date),         cmocka_unit_test(test_msgids),
        cmocka_unit_test(test_sort_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
