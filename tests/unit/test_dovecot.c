/*
 * test_dovecot.c - the Dovecot file parsers (store/dovecot.h): dovecot-uidlist v1 and v3
 * (extension fields, duplicates, disorder, hostile input), dovecot-keywords, subscriptions
 * v1 and v2 with modified UTF-7; the POP3 UIDL formats (core/uidl.h) against values a
 * real Dovecot 2.3 served; and the first index build of a Dovecot Maildir (the store keeps
 * UIDVALIDITY, UIDs, keywords, POP3 UIDL fields; a broken uidlist gives fresh UIDs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/uidl.h"
#include "store/dovecot.h"
#include "store/store-private.h"
#include "test_tmpdir.h"

#define PARSE_UIDLIST(text, l, err) dovecot_uidlist_parse(text, strlen(text), l, err)

static void test_uidlist_v3(void **state)
{
    (void)state;
    const char *text = "3 V1796562460 N8 G2d3f7b1e9c1c2b65a20000004a7f8a1d\n"
                       "1 G0123456789abcdef0123456789abcdef W1200 S1150 :1700000000.M1P1.host,S=1150,W=1200\n"
                       "3 P :1700000001.M2P1.host,S=10,W=11\n"
                       "5 Pold-uidl-5 XYZ :1700000002.M3P1.host\n"
                       "6 :1700000003.M4P1.host:2,S\n";
    struct dovecot_uidlist l;
    char *err = NULL;
    assert_int_equal(PARSE_UIDLIST(text, &l, &err), 0);
    assert_int_equal(l.version, 3);
    assert_int_equal(l.uidvalidity, 1796562460u);
    assert_int_equal(l.uidnext, 8);
    assert_int_equal(l.n, 4);
    const char *b = "1700000000.M1P1.host,S=1150,W=1200";
    const struct dovecot_uidlist_rec *r = dovecot_uidlist_find(&l, b, strlen(b));
    assert_non_null(r);
    assert_int_equal(r->uid, 1);
    assert_string_equal(r->guid, "0123456789abcdef0123456789abcdef");
    assert_null(r->pop3_uidl);
    b = "1700000001.M2P1.host,S=10,W=11";
    r = dovecot_uidlist_find(&l, b, strlen(b));
    assert_int_equal(r->uid, 3);
    assert_string_equal(r->pop3_uidl, ""); /* "use the base name" */
    b = "1700000002.M3P1.host";
    r = dovecot_uidlist_find(&l, b, strlen(b));
    assert_int_equal(r->uid, 5);
    assert_string_equal(r->pop3_uidl, "old-uidl-5");
    /* the name is keyed by its base: a ":2,S" in the list is dropped */
    b = "1700000003.M4P1.host";
    assert_int_equal(dovecot_uidlist_find(&l, b, strlen(b))->uid, 6);
    /* a prefix or a longer name is no match */
    assert_null(dovecot_uidlist_find(&l, "1700000003.M4P1.hos", 19));
    assert_null(dovecot_uidlist_find(&l, "1700000003.M4P1.hostX", 21));
    dovecot_uidlist_free(&l);
    assert_null(err);
}

static void test_uidlist_v1_and_next(void **state)
{
    (void)state;
    struct dovecot_uidlist l;
    char *err = NULL;
    /* v1 (Dovecot 1.0, Courier's courierimapuiddb): "<uid> <filename>" */
    assert_int_equal(PARSE_UIDLIST("1 1234 10\n2 a.b.c\n9 d e f\n", &l, &err), 0);
    assert_int_equal(l.version, 1);
    assert_int_equal(l.uidvalidity, 1234);
    assert_int_equal(l.uidnext, 10);
    assert_int_equal(dovecot_uidlist_find(&l, "d e f", 5)->uid, 9);
    dovecot_uidlist_free(&l);
    /* v3 lets a record pass the header's next uid: uidnext is then last + 1 */
    assert_int_equal(PARSE_UIDLIST("3 V7 N2\n5 :x\n", &l, &err), 0);
    assert_int_equal(l.uidnext, 6);
    dovecot_uidlist_free(&l);
    /* a name listed twice keeps its last UID (Dovecot's rule) */
    assert_int_equal(PARSE_UIDLIST("3 V7 N9\n1 :x\n2 :y\n4 :x\n", &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(dovecot_uidlist_find(&l, "x", 1)->uid, 4);
    dovecot_uidlist_free(&l);
    /* an empty list (a new mailbox) is valid; CRLF lines too */
    assert_int_equal(PARSE_UIDLIST("3 V42 N1\r\n", &l, &err), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(l.uidnext, 1);
    dovecot_uidlist_free(&l);
    assert_null(err);
}

static void test_uidlist_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",                              /* empty */
        "2 V1 N1\n",                     /* version 2: Dovecot refuses it too */
        "3V1 N1\n",                      /* no space after the version */
        "3 V0 N5\n",                     /* UIDVALIDITY 0 */
        "3 V1\n",                        /* no next uid */
        "3 V99999999999 N2\n",           /* overflow */
        "3 V1 N2 Vx\n",                  /* bad value */
        "1 5 6\n7 x\n",                  /* v1: UID at/after next uid */
        "1 5\n",                         /* v1: short header */
        "3 V1 N5\n2 :a\n2 :b\n",         /* UIDs not ascending */
        "3 V1 N5\n3 :a\n2 :b\n",         /* descending */
        "3 V1 N5\n0 :a\n",               /* UID 0 */
        "3 V1 N5\n4294967295 :a\n",      /* UID 2^32-1 */
        "3 V1 N5\n1 :a/b\n",             /* '/' in a name */
        "3 V1 N5\n1 :\n",                /* empty name */
        "3 V1 N5\n1 W12\n",              /* v3 without ':' */
        "3 V1 N5\n1\n",                  /* no name */
        "3 V1 N5\n\n",                   /* empty line */
        "3 V1 N5\nx :a\n",               /* not a number */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct dovecot_uidlist l;
        char *err = NULL;
        assert_int_equal(PARSE_UIDLIST(bad[i], &l, &err), -1);
        assert_non_null(err);
        assert_null(l.recs);
        free(err);
    }
    /* a NUL byte */
    struct dovecot_uidlist l;
    assert_int_equal(dovecot_uidlist_parse("3 V1 N5\n1 :a\0b\n", 15, &l, NULL), -1);
    /* a line over the budget */
    size_t n = DOVECOT_UIDLIST_MAX_LINE + 64;
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    memcpy(big, "3 V1 N5\n1 :", 11);
    big[n - 1] = '\n';
    big[n] = '\0';
    assert_int_equal(PARSE_UIDLIST(big, &l, NULL), -1);
    free(big);
}

static void test_keywords(void **state)
{
    (void)state;
    const char *text = "0 $Label1\n1 project\n3 $Forwarded\n"
                       "2 project\n"     /* duplicate name: skipped */
                       "1 other\n"       /* index already used */
                       "26 toohigh\n"    /* only a-z */
                       "x bad\n4 \n"     /* not a number; empty name */
                       "5 two words\n"   /* not an atom */
                       "6 bad\\flag\n"   /* backslash */
                       "customflags\n";  /* no space: Dovecot ignores it */
    struct dovecot_keywords kw;
    assert_int_equal(dovecot_keywords_parse(text, strlen(text), &kw, NULL), 0);
    assert_string_equal(kw.names[0], "$Label1");
    assert_string_equal(kw.names[1], "project");
    assert_null(kw.names[2]);
    assert_string_equal(kw.names[3], "$Forwarded");
    assert_int_equal(kw.n_skipped, 8);
    char out[256];
    assert_true(dovecot_keywords_of_info(&kw, "2,Sdba", out, sizeof out));
    assert_string_equal(out, "$Label1 project $Forwarded");
    assert_true(dovecot_keywords_of_info(&kw, "2,FSc", out, sizeof out)); /* c has no name */
    assert_string_equal(out, "");
    assert_true(dovecot_keywords_of_info(&kw, "1,ab", out, sizeof out)); /* not ":2," */
    assert_string_equal(out, "");
    assert_false(dovecot_keywords_of_info(&kw, "2,ab", out, 8)); /* too small */
    dovecot_keywords_free(&kw);
    /* over the budget */
    char *big = calloc(1, DOVECOT_KEYWORDS_MAX_BYTES + 2);
    memset(big, 'a', DOVECOT_KEYWORDS_MAX_BYTES + 1);
    char *err = NULL;
    assert_int_equal(dovecot_keywords_parse(big, strlen(big), &kw, &err), -1);
    assert_non_null(err);
    free(err);
    free(big);
}

static void test_mutf7(void **state)
{
    (void)state;
    char out[128];
    /* RFC 3501 §5.1.3 example: "~peter/mail/台北/日本語" */
    const char *in = "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e";
    assert_true(dovecot_utf8_to_mutf7(in, strlen(in), out, sizeof out));
    assert_string_equal(out, "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    assert_true(dovecot_utf8_to_mutf7("A&B", 3, out, sizeof out));
    assert_string_equal(out, "A&-B");
    assert_true(dovecot_utf8_to_mutf7("Entw\xc3\xbcrfe", 9, out, sizeof out));
    assert_string_equal(out, "Entw&APw-rfe");
    /* a character outside the BMP: a surrogate pair */
    assert_true(dovecot_utf8_to_mutf7("\xf0\x9f\x98\x80", 4, out, sizeof out));
    assert_string_equal(out, "&2D3eAA-");
    assert_false(dovecot_utf8_to_mutf7("\xc0\xaf", 2, out, sizeof out));         /* overlong */
    assert_false(dovecot_utf8_to_mutf7("\xed\xa0\x80", 3, out, sizeof out));     /* surrogate */
    assert_false(dovecot_utf8_to_mutf7("\xe6\x97", 2, out, sizeof out));         /* truncated */
    assert_false(dovecot_utf8_to_mutf7("abcdef", 6, out, 4));                    /* too small */
}

static void test_subscriptions(void **state)
{
    (void)state;
    struct dovecot_subscriptions s;
    /* v2: TAB separates levels, \001 escapes, UTF-8 names */
    const char v2[] = "V\t2\n\nINBOX\nWork\nLists\tdovecot\nEntw\xc3\xbcrfe\n"
                      "a\001tb\n"  /* a level holding a TAB */
                      "x/y\n"       /* a level holding '/': not a Tern name */
                      "Work\n"      /* duplicate */
                      "Lists\t\n";  /* empty level */
    assert_int_equal(dovecot_subscriptions_parse(v2, sizeof v2 - 1, &s, NULL), 0);
    assert_int_equal(s.version, 2);
    assert_int_equal(s.n, 5);
    assert_string_equal(s.names[0], "Entw&APw-rfe");
    assert_string_equal(s.names[1], "INBOX");
    assert_string_equal(s.names[2], "Lists/dovecot");
    assert_string_equal(s.names[3], "Work");
    assert_string_equal(s.names[4], "a&AAk-b");
    assert_int_equal(s.n_skipped, 2);
    dovecot_subscriptions_free(&s);
    /* v1: '.' separates levels (Maildir++), Courier's INBOX. prefix dropped */
    const char v1[] = "inbox\nINBOX.Sent\nLists.dovecot\nA/B.c\n..x\n";
    assert_int_equal(dovecot_subscriptions_parse(v1, sizeof v1 - 1, &s, NULL), 0);
    assert_int_equal(s.version, 1);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.names[0], "A/B.c");
    assert_string_equal(s.names[1], "INBOX");
    assert_string_equal(s.names[2], "Lists/dovecot");
    assert_string_equal(s.names[3], "Sent");
    assert_int_equal(s.n_skipped, 1);
    dovecot_subscriptions_free(&s);
    /* too large */
    char *err = NULL;
    assert_int_equal(dovecot_subscriptions_parse("x", DOVECOT_SUBSCRIPTIONS_MAX_BYTES + 1, &s,
                                                 &err),
                     -1);
    assert_non_null(err);
    free(err);
}

static void test_uidl_formats(void **state)
{
    (void)state;
    char out[UIDL_MAX];
    /* what Dovecot 2.3.19 served for UID 1 / UIDVALIDITY 1796562460 with its default */
    struct uidl_vars v = {.uid = 1, .uidvalidity = 1796562460u,
                          .filename = "1700000000.M1P1.host,S=10,W=11"};
    assert_true(uidl_format(UIDL_DEFAULT_FORMAT, &v, out, sizeof out));
    assert_string_equal(out, "000000016b155e1c");
    assert_true(uidl_format("%u-%v", &v, out, sizeof out));
    assert_string_equal(out, "1-1796562460");
    assert_true(uidl_format("%f", &v, out, sizeof out));
    assert_string_equal(out, v.filename);
    assert_true(uidl_format("%g", &v, out, sizeof out)); /* no GUID: the base name */
    assert_string_equal(out, v.filename);
    v.guid = "0123456789abcdef";
    assert_true(uidl_format("%{guid}%%", &v, out, sizeof out));
    assert_string_equal(out, "0123456789abcdef%");
    /* modifiers apply in order (Dovecot): U then X is lower case, X then U upper */
    assert_true(uidl_format("%UXv", &v, out, sizeof out));
    assert_string_equal(out, "6b155e1c");
    assert_true(uidl_format("%XUv", &v, out, sizeof out));
    assert_string_equal(out, "6B155E1C");
    assert_true(uidl_format("%4f|%.4f|%-4.f|%R{uid}", &v, out, sizeof out));
    assert_string_equal(out, "1700|1700|W=11|1"); /* width, offset, offset from the end */
    assert_true(uidl_format("%08u", &v, out, sizeof out));
    assert_string_equal(out, "00000001");
    char *err = NULL;
    assert_true(uidl_format_check("%08Xu%08Xv", NULL));
    assert_false(uidl_format_check("%m", &err)); /* Dovecot serves no %m from a Maildir */
    assert_non_null(strstr(err, "mbox"));
    free(err);
    assert_false(uidl_format_check("%x", NULL));
    assert_false(uidl_format_check("%Hu", NULL));
    assert_false(uidl_format_check("%{uid", NULL));
    assert_false(uidl_format_check("abc%", NULL));
    assert_false(uidl_format_check("%999999u", NULL));
    assert_false(uidl_format_check("", NULL));
    /* bytes outside 0x21-0x7e never reach the wire */
    struct uidl_vars w = {.uid = 1, .uidvalidity = 2, .filename = "a b\r\n"};
    assert_true(uidl_format("%f", &w, out, sizeof out));
    assert_string_equal(out, "a?b??");
}

/* ---- the first index build of a Dovecot Maildir ------------------------------------ */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[4200];
    assert_true((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) < sizeof path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void make_dovecot_maildir(const char *home, const char *uidlist)
{
    char md[4200], d[4300];
    snprintf(md, sizeof md, "%s/Maildir", home);
    static const char *const subs[] = {"", "/cur", "/new", "/tmp"};
    for (int i = 0; i < 4; i++) {
        snprintf(d, sizeof d, "%s%s", md, subs[i]);
        assert_int_equal(store_io_mkdir_p(d), 0);
    }
    snprintf(d, sizeof d, "%s/cur", md);
    write_file(d, "1700000001.M1P1.old,S=20,W=21:2,Sa", "Subject: one\n\nbody\n");
    write_file(d, "1700000002.M2P1.old,S=20,W=21:2,bc", "Subject: two\n\nbody\n");
    write_file(d, "1700000009.M9P1.new,S=20,W=21:2,", "Subject: new\n\nbody\n");
    snprintf(d, sizeof d, "%s/new", md);
    write_file(d, "1700000003.M3P1.old,S=20,W=21", "Subject: three\n\nbody\n");
    if (uidlist)
        write_file(md, "dovecot-uidlist", uidlist);
    write_file(md, "dovecot-keywords", "0 $Label1\n1 project\n");
}

static void test_import_first_build(void **state)
{
    (void)state;
    char home[4096];
    snprintf(home, sizeof home, "%s/dovecot-import", tmp_root);
    make_dovecot_maildir(home, "3 V1234567 N40\n"
                               "7 :1700000001.M1P1.old,S=20,W=21\n"
                               "12 Pkept-uidl :1700000002.M2P1.old,S=20,W=21\n"
                               "30 G00112233445566778899aabbccddeeff :1700000003.M3P1.old,S=20,W=21\n"
                               "35 :1700000004.M4P1.gone\n");
    struct store_user *u = NULL;
    char *err = NULL;
    assert_int_equal(store_user_open(home, "dc@example.test", &u, &err), 0);
    struct store_mailbox *box = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", true, &box, &err), 0);
    assert_int_equal(store_mailbox_uidvalidity(box), 1234567);
    assert_int_equal(store_mailbox_uidnext(box), 41); /* the unlisted file got 40 */
    assert_int_equal(store_mailbox_count(box), 4);
    static const uint32_t uids[] = {7, 12, 30, 40};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(store_mailbox_message(box, i)->uid, uids[i]);
    const struct store_message *m = store_mailbox_message(box, 0);
    assert_true(m->flags & 1); /* \Seen from ":2,S" */
    assert_non_null(m->keywords);
    assert_string_equal(m->keywords[0], "$Label1");
    assert_null(m->keywords[1]);
    m = store_mailbox_message(box, 1);
    assert_string_equal(m->keywords[0], "project"); /* 'c' has no name: dropped */
    assert_null(m->keywords[1]);
    char *v = store_message_get_cache(box, 1, "pop3_uidl");
    assert_string_equal(v, "kept-uidl");
    free(v);
    v = store_message_get_cache(box, 2, "guid");
    assert_string_equal(v, "00112233445566778899aabbccddeeff");
    free(v);
    assert_null(store_message_get_cache(box, 0, "pop3_uidl"));
    store_mailbox_close(box);
    store_user_close(u);
    store_index_pool_flush();
}

static void test_import_broken_uidlist(void **state)
{
    (void)state;
    char home[4096];
    snprintf(home, sizeof home, "%s/dovecot-broken", tmp_root);
    make_dovecot_maildir(home, "3 V1234567 N40\n9 :a\n8 :b\n"); /* disorder */
    struct store_user *u = NULL;
    char *err = NULL;
    assert_int_equal(store_user_open(home, "dc@example.test", &u, &err), 0);
    struct store_mailbox *box = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", true, &box, &err), 0);
    /* fresh UIDs 1..n in name order, a fresh UIDVALIDITY */
    assert_int_not_equal(store_mailbox_uidvalidity(box), 1234567);
    assert_int_equal(store_mailbox_count(box), 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(store_mailbox_message(box, i)->uid, i + 1);
    store_mailbox_close(box);
    store_user_close(u);
    store_index_pool_flush();
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tern-test-dovecot-XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    store_index_pool_flush();
    rm_rf(tmp_root, 0);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uidlist_v3),       cmocka_unit_test(test_uidlist_v1_and_next),
        cmocka_unit_test(test_uidlist_malformed), cmocka_unit_test(test_keywords),
        cmocka_unit_test(test_mutf7),            cmocka_unit_test(test_subscriptions),
        cmocka_unit_test(test_uidl_formats),     cmocka_unit_test(test_import_first_build),
        cmocka_unit_test(test_import_broken_uidlist),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
