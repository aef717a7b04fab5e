/*
 * test_imap_url.c - unit tests for src/imap/url.c: IMAP URLs (RFC 5092) as CATENATE,
 * URLAUTH and BURL take them (the RFC 4467 §9, RFC 4468 §7 and RFC 4469 §6 URLs), the
 * URLAUTH parts and the rump URL, RFC 3339 expiry times, refusals (bad escapes, control
 * octets, missing UID, verifier without URLAUTH, overlong fields), and the INTERNAL
 * token against an HMAC-SHA1 test vector (RFC 2202 case 2).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "imap/url.h"

static bool parse(const char *s, struct imap_url *u)
{
    const char *why = NULL;
    bool ok = imap_url_parse(s, strlen(s), u, &why);
    assert_true(ok ? why == NULL : why != NULL);
    return ok;
}

static void test_rfc4469_relative(void **state)
{
    struct imap_url u;
    assert_true(parse("/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME", &u));
    assert_false(u.is_absolute);
    assert_string_equal(u.mailbox, "Drafts");
    assert_int_equal(u.uidvalidity, 385759045);
    assert_int_equal(u.uid, 20);
    assert_string_equal(u.section, "1.MIME");
    assert_int_equal(u.access, IMAP_URL_ACCESS_NONE);
    assert_int_equal(u.rump_len, 0);
    /* no UIDVALIDITY: the mailbox ends in "/" before ";UID=" */
    assert_true(parse("/a/b/c/;UID=7", &u));
    assert_string_equal(u.mailbox, "a/b/c");
    assert_int_equal(u.uidvalidity, 0);
    assert_string_equal(u.section, "");
    /* RFC 5092: UTF-8 names become modified UTF-7; ASCII ones stay as written */
    assert_true(parse("/Entw%C3%BCrfe/;UID=1", &u));
    assert_string_equal(u.mailbox, "Entw&APw-rfe");
    assert_true(parse("/Entw&APw-rfe/;UID=1", &u));
    assert_string_equal(u.mailbox, "Entw&APw-rfe");
}

static void test_rfc4467_urls(void **state)
{
    struct imap_url u;
    const char *url = "imap://joe@example.com/INBOX/;uid=20/;section=1.2;urlauth="
                      "submit+fred:internal:91354a473744909de610943775f92038";
    assert_true(parse(url, &u));
    assert_true(u.is_absolute);
    assert_string_equal(u.user, "joe");
    assert_string_equal(u.host, "example.com");
    assert_string_equal(u.mailbox, "INBOX");
    assert_int_equal(u.uid, 20);
    assert_string_equal(u.section, "1.2");
    assert_int_equal(u.access, IMAP_URL_ACCESS_SUBMIT);
    assert_string_equal(u.access_user, "fred");
    assert_string_equal(u.mechanism, "internal");
    assert_string_equal(u.token, "91354a473744909de610943775f92038");
    assert_int_equal(u.rump_len,
                     strlen(url) - strlen(":internal:91354a473744909de610943775f92038"));
    /* an access user with a bare '@' (enc-user wants %40; imaptest and Dovecot write it
     * bare), rump and full */
    assert_true(parse("imap://it@example.test/INBOX/;uid=1;urlauth=user+it@example.test", &u));
    assert_string_equal(u.access_user, "it@example.test");
    assert_true(parse("imap://it@example.test/INBOX/;uid=1;urlauth=submit+it@example.test"
                      ":internal:91354a473744909de610943775f92038",
                      &u));
    assert_string_equal(u.access_user, "it@example.test");
    assert_string_equal(u.token, "91354a473744909de610943775f92038");
    assert_false(parse("imap://it@example.test/INBOX/;uid=1;urlauth=user+@", &u));
    /* a rump URL, as GENURLAUTH takes it */
    assert_true(parse("imap://joe@example.com/INBOX/;uid=20/;section=1.2;urlauth=user+fred", &u));
    assert_int_equal(u.access, IMAP_URL_ACCESS_USER);
    assert_string_equal(u.mechanism, "");
    assert_int_equal(u.rump_len, strlen("imap://joe@example.com/INBOX/;uid=20/;section=1.2;"
                                        "urlauth=user+fred"));
    /* RFC 4468 §7: %-encoded user names, ;AUTH=*, a port */
    assert_true(parse("imap://fred%40example.org;AUTH=*@imap.example.org:143/Sent;"
                      "UIDVALIDITY=1/;UID=3;URLAUTH=anonymous",
                      &u));
    assert_string_equal(u.user, "fred@example.org");
    assert_string_equal(u.host, "imap.example.org");
    assert_int_equal(u.access, IMAP_URL_ACCESS_ANONYMOUS);
    assert_true(parse("imap://a@[::1]/INBOX/;UID=1;URLAUTH=authuser", &u));
    assert_string_equal(u.host, "[::1]");
    assert_int_equal(u.access, IMAP_URL_ACCESS_AUTHUSER);
}

static void test_partial_and_expire(void **state)
{
    struct imap_url u;
    assert_true(parse("imap://a@h/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(TO%20FROM)/;PARTIAL=0.1024"
                      ";EXPIRE=2006-02-28T09:00:00Z;URLAUTH=authuser:INTERNAL:"
                      "0123456789abcdef0123456789abcdef01234567",
                      &u));
    assert_string_equal(u.section, "HEADER.FIELDS (TO FROM)");
    assert_true(u.has_partial);
    assert_int_equal(u.partial_offset, 0);
    assert_int_equal(u.partial_length, 1024);
    assert_true(u.has_expire);
    assert_int_equal(u.expire, 1141117200);
    assert_true(parse("/INBOX/;UID=1/;PARTIAL=10", &u));
    assert_int_equal(u.partial_offset, 10);
    assert_int_equal(u.partial_length, 0);
    time_t t;
    assert_true(imap_url_datetime_parse("2006-02-28T10:00:00.25+01:00", 28, &t));
    assert_int_equal(t, 1141117200);
    assert_false(imap_url_datetime_parse("2006-02-28 10:00:00Z", 20, &t));
    assert_false(imap_url_datetime_parse("2006-13-28T10:00:00Z", 20, &t));
    assert_false(imap_url_datetime_parse("2006-02-28T10:00:00", 19, &t));
}

static void test_refusals(void **state)
{
    struct imap_url u;
    static const char *const bad[] = {
        "",
        "INBOX/;UID=1", /* neither absolute nor "/" */
        "http://h/INBOX/;UID=1",
        "imap://h",               /* no message */
        "imap://h/INBOX",         /* no UID */
        "/INBOX/;UID=0",          /* nz-number */
        "/INBOX/;UID=4294967296", /* past 2^32-1 */
        "/INBOX;UIDVALIDITY=x/;UID=1",
        "/IN%0ABOX/;UID=1",               /* a control octet, escaped */
        "/IN%C3/;UID=1",                  /* 8-bit, not UTF-8 */
        "/IN%4/;UID=1",                   /* a broken escape */
        "/INBOX/;UID=1;URLAUTH=authuser", /* URLAUTH needs an absolute URL */
        "imap://a@h/INBOX/;UID=1;URLAUTH=somebody",
        "imap://a@h/INBOX/;UID=1;URLAUTH=user+",
        "imap://a@h/INBOX/;UID=1;URLAUTH=authuser:internal:abc", /* token too short */
        ("imap://a@h/INBOX/;UID=1;URLAUTH=authuser:internal:"
         "0123456789abcdef0123456789abcdef01234567x"), /* not hex */
        "imap://a@h/INBOX/;UID=1;EXPIRE=2006-02-28T09:00:00Z", /* no URLAUTH after */
        "imap://a@h/INBOX/;UID=1/;PARTIAL=1.0",
        "imap://a;b@h/INBOX/;UID=1",
        "imap://a@/INBOX/;UID=1",
        "/INBOX/;UID=1 trailing",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], &u))
            fail_msg("accepted: %s", bad[i]);
    }
    /* overlong: the whole URL, and a mailbox past its field */
    char *big = malloc(IMAP_URL_MAX + 2);
    memset(big, 'a', IMAP_URL_MAX + 1);
    big[0] = '/';
    big[IMAP_URL_MAX + 1] = '\0';
    assert_false(parse(big, &u));
    big[IMAP_URL_MAX_MAILBOX + 10] = '\0';
    assert_false(parse(big, &u));
    free(big);
}

static void test_token(void **state)
{
    /* RFC 2202 §3 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?") */
    char hex[IMAP_URL_TOKEN_HEX + 1];
    const char *data = "what do ya want for nothing?";
    imap_urlauth_token((const unsigned char *)"Jefe", 4, data, strlen(data), hex);
    assert_string_equal(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4469_relative),
        cmocka_unit_test(test_rfc4467_urls),
        cmocka_unit_test(test_partial_and_expire),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
