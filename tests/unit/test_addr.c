/*
 * test_addr.c - SMTP path parsing (RFC 5321 §4.1.2) with the leniency of addr.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/addr.h"

/* Parse text as MAIL FROM (allow_null) or RCPT TO; returns ok, fills formatted + params. */
static bool parse(const char *text, bool allow_null, char *out, size_t size, const char **params)
{
    struct addr a;
    size_t off = 12345;
    if (!addr_parse_path(text, strlen(text), allow_null, &a, &off))
        return false;
    assert_true(off <= strlen(text));
    addr_format(&a, out, size);
    if (params)
        *params = text + off;
    return true;
}

static void test_basic(void **state)
{
    char out[300];
    const char *p;
    assert_true(parse("<alice@Example.TEST>", true, out, sizeof out, &p));
    assert_string_equal(out, "alice@example.test"); /* domain lower-cased */
    assert_string_equal(p, "");
    assert_true(parse("<Alice@example.test>", false, out, sizeof out, &p));
    assert_string_equal(out, "Alice@example.test"); /* local part keeps its case */
}

static void test_spaces_and_no_brackets(void **state)
{
    char out[300];
    const char *p;
    /* seeds 000 and 004: no angle brackets, a space after the colon */
    assert_true(parse(" od.koho.ten@email.je", true, out, sizeof out, &p));
    assert_string_equal(out, "od.koho.ten@email.je");
    assert_true(parse("sample@gmail.com", false, out, sizeof out, &p));
    assert_string_equal(out, "sample@gmail.com");
    assert_true(parse("  <a@b.example>", true, out, sizeof out, &p));
    assert_string_equal(out, "a@b.example");
}

static void test_null_path(void **state)
{
    struct addr a;
    size_t off;
    assert_true(addr_parse_path("<>", 2, true, &a, &off));
    assert_true(a.is_null);
    assert_string_equal(a.domain, "");
    char out[300] = "x";
    addr_format(&a, out, sizeof out);
    assert_string_equal(out, "");
    assert_false(addr_parse_path("<>", 2, false, &a, &off)); /* not for RCPT */
    assert_true(addr_parse_path("<> SIZE=100", 11, true, &a, &off));
    assert_int_equal(off, 3);
}

static void test_params(void **state)
{
    char out[300];
    const char *p;
    assert_true(parse("<a@b.example> SIZE=1000 BODY=8BITMIME", true, out, sizeof out, &p));
    assert_string_equal(p, "SIZE=1000 BODY=8BITMIME");
    assert_true(parse("a@b.example   SIZE=1", true, out, sizeof out, &p));
    assert_string_equal(p, "SIZE=1");
    assert_false(parse("<a@b.example>SIZE=1", true, out, sizeof out, &p));
}

static void test_source_route(void **state)
{
    char out[300];
    const char *p;
    assert_true(parse("<@relay1.example,@relay2.example:user@dest.example> NOTIFY=NEVER", false,
                      out, sizeof out, &p));
    assert_string_equal(out, "user@dest.example");
    assert_string_equal(p, "NOTIFY=NEVER");
    assert_false(parse("<@relay1.example:>", false, out, sizeof out, NULL));
    assert_false(parse("<@:user@dest.example>", false, out, sizeof out, NULL));
    assert_false(parse("<@relay1.example user@dest.example>", false, out, sizeof out, NULL));
}

static void test_quoted_local(void **state)
{
    char out[300];
    assert_true(parse("<\"john smith\"@example.org>", false, out, sizeof out, NULL));
    assert_string_equal(out, "\"john smith\"@example.org");
    assert_true(parse("<\"a\\\"b\"@example.org>", false, out, sizeof out, NULL));
    assert_string_equal(out, "\"a\\\"b\"@example.org");
    assert_false(parse("<\"unterminated@example.org>", false, out, sizeof out, NULL));
    assert_false(parse("<\"a\rb\"@example.org>", false, out, sizeof out, NULL));
}

static void test_literals(void **state)
{
    char out[300];
    assert_true(parse("<user@[192.0.2.1]>", false, out, sizeof out, NULL));
    assert_string_equal(out, "user@[192.0.2.1]");
    assert_true(parse("<user@[IPv6:2001:db8::1]>", false, out, sizeof out, NULL));
    assert_false(parse("<user@[300.1.1.1]>", false, out, sizeof out, NULL));
    assert_false(parse("<user@[IPv6:zz::1]>", false, out, sizeof out, NULL));
    assert_false(parse("<user@[]>", false, out, sizeof out, NULL));
}

static void test_bad_syntax(void **state)
{
    char out[300];
    static const char *const bad[] = {
        "",
        "   ",
        "<",
        "<a@b.example",
        "a@b.example>",
        "<@>",
        "<a@>",
        "<@b.example>",
        "<a@b..example>",
        "<a@.b.example>",
        "<a@b.example.>",
        "<a b@c.example>",
        "<a@b_c!.example>",
        "<a@b.example>>",
        "<a<b@c.example>",
        "<a@b@c.example>",
        "<a@b.example",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], true, out, sizeof out, NULL))
            fail_msg("accepted bad path '%s'", bad[i]);
    }
    struct addr a;
    size_t off;
    assert_false(addr_parse_path("<a@b\0c.example>", 15, true, &a, &off)); /* NUL byte */
}

static void test_postmaster(void **state)
{
    char out[300];
    /* RFC 5321 §4.1.1.3: RCPT TO:<Postmaster> without a domain */
    assert_true(parse("<Postmaster>", false, out, sizeof out, NULL));
    assert_string_equal(out, "Postmaster");
    assert_false(parse("<bob>", false, out, sizeof out, NULL));
}

static void test_limits(void **state)
{
    char text[700], out[300];
    /* 64-octet local part: the RFC 5321 §4.5.3.1.1 maximum */
    memset(text, 0, sizeof text);
    text[0] = '<';
    memset(text + 1, 'l', 64);
    strcat(text, "@example.org>");
    assert_true(parse(text, false, out, sizeof out, NULL));
    /* 65 octets */
    memset(text, 0, sizeof text);
    text[0] = '<';
    memset(text + 1, 'l', 65);
    strcat(text, "@example.org>");
    assert_false(parse(text, false, out, sizeof out, NULL));
    /* a 64-octet label is too long (RFC 1035) */
    memset(text, 0, sizeof text);
    strcpy(text, "<a@");
    memset(text + 3, 'd', 64);
    strcat(text, ".org>");
    assert_false(parse(text, false, out, sizeof out, NULL));
    /* a 256+ octet path is too long (RFC 5321 §4.5.3.1.3) */
    memset(text, 0, sizeof text);
    strcpy(text, "<a@");
    for (int i = 0; i < 5; i++)
        strcat(text, "ddddddddddddddddddddddddddddddddddddddddddddddddddd.");
    strcat(text, "org>");
    assert_false(parse(text, false, out, sizeof out, NULL));
}

static void test_plain(void **state)
{
    struct addr a;
    assert_true(addr_parse_plain("bob@Example.Test", &a));
    assert_string_equal(a.local, "bob");
    assert_string_equal(a.domain, "example.test");
    assert_false(addr_parse_plain("bob", &a));
    assert_false(addr_parse_plain("<bob@example.test>", &a));
    assert_false(addr_parse_plain("bob@example.test ", &a));
    assert_false(addr_parse_plain("", &a));
}

static void test_strip_tag(void **state)
{
    char out[130];
    assert_true(addr_strip_tag("user+lists", out, sizeof out));
    assert_string_equal(out, "user");
    assert_false(addr_strip_tag("user", out, sizeof out));
    assert_string_equal(out, "user");
    assert_false(addr_strip_tag("+tag", out, sizeof out));
    assert_false(addr_strip_tag("\"a+b\"", out, sizeof out));
    assert_true(addr_strip_tag("a+b+c", out, sizeof out));
    assert_string_equal(out, "a");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),        cmocka_unit_test(test_spaces_and_no_brackets),
        cmocka_unit_test(test_null_path),    cmocka_unit_test(test_params),
        cmocka_unit_test(test_source_route), cmocka_unit_test(test_quoted_local),
        cmocka_unit_test(test_literals),     cmocka_unit_test(test_bad_syntax),
        cmocka_unit_test(test_postmaster),   cmocka_unit_test(test_limits),
        cmocka_unit_test(test_plain),        cmocka_unit_test(test_strip_tag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
