/*
 * test_auth_token.c - the auth process's one-time login tokens (auth/token.c): issued for
 * a user and a connection, redeemed once and only for both, spent by a wrong attempt,
 * expired after AUTH_TOKEN_LIFETIME_S, and a full table evicts the oldest; the live,
 * unspent ones pass to the next auth process (export/import), which reads the hand-over
 * as hostile bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_internal.h"

static time_t fake_now = 1000000;
static time_t fake_clock(void)
{
    return fake_now;
}

#define BINDING "imap 192.0.2.7 50123 192.0.2.1 143"

static void test_issue_redeem_once(void **state)
{
    struct auth_tokens *t = auth_tokens_new();
    assert_non_null(t);
    char token[AUTH_TOKEN_SIZE];
    assert_true(auth_tokens_issue(t, "alice@example.org", BINDING, token));
    assert_int_equal(strlen(token), 64);
    assert_true(auth_tokens_redeem(t, token, "alice@example.org", BINDING));
    /* one time only */
    assert_false(auth_tokens_redeem(t, token, "alice@example.org", BINDING));
    auth_tokens_free(t);
}

static void test_wrong_user_or_binding_spends(void **state)
{
    struct auth_tokens *t = auth_tokens_new();
    char token[AUTH_TOKEN_SIZE];
    assert_true(auth_tokens_issue(t, "alice@example.org", BINDING, token));
    /* another user's mailbox with alice's token: refused, and the token is gone */
    assert_false(auth_tokens_redeem(t, token, "bob@example.org", BINDING));
    assert_false(auth_tokens_redeem(t, token, "alice@example.org", BINDING));
    assert_true(auth_tokens_issue(t, "alice@example.org", BINDING, token));
    assert_false(auth_tokens_redeem(t, token, "alice@example.org",
                                    "imap 192.0.2.8 50123 192.0.2.1 143"));
    assert_false(auth_tokens_redeem(t, token, "alice@example.org", BINDING));
    auth_tokens_free(t);
}

static void test_malformed_and_unknown(void **state)
{
    struct auth_tokens *t = auth_tokens_new();
    char token[AUTH_TOKEN_SIZE];
    assert_true(auth_tokens_issue(t, "alice@example.org", BINDING, token));
    char other[AUTH_TOKEN_SIZE];
    memcpy(other, token, sizeof other);
    other[10] = other[10] == 'a' ? 'b' : 'a'; /* a guess one digit off */
    assert_false(auth_tokens_redeem(t, other, "alice@example.org", BINDING));
    assert_false(auth_tokens_redeem(t, "", "alice@example.org", BINDING));
    assert_false(auth_tokens_redeem(t, "zz", "alice@example.org", BINDING));
    other[10] = 'G'; /* not hex */
    assert_false(auth_tokens_redeem(t, other, "alice@example.org", BINDING));
    assert_false(auth_tokens_redeem(t, token, NULL, BINDING));
    /* the real one still works: guesses did not spend it */
    assert_true(auth_tokens_redeem(t, token, "alice@example.org", BINDING));
    /* arguments too long are not issued */
    char long_user[400];
    memset(long_user, 'a', sizeof long_user - 1);
    long_user[sizeof long_user - 1] = '\0';
    assert_false(auth_tokens_issue(t, long_user, BINDING, token));
    assert_string_equal(token, "");
    auth_tokens_free(t);
}

static void test_expiry(void **state)
{
    struct auth_tokens *t = auth_tokens_new();
    auth_tokens_set_clock(t, fake_clock);
    char token[AUTH_TOKEN_SIZE];
    assert_true(auth_tokens_issue(t, "alice@example.org", BINDING, token));
    fake_now += AUTH_TOKEN_LIFETIME_S;
    assert_false(auth_tokens_redeem(t, token, "alice@example.org", BINDING));
    assert_true(auth_tokens_issue(t, "alice@example.org", BINDING, token));
    fake_now += AUTH_TOKEN_LIFETIME_S - 1;
    assert_true(auth_tokens_redeem(t, token, "alice@example.org", BINDING));
    auth_tokens_free(t);
}

static void test_full_table_evicts(void **state)
{
    /* far more tokens than slots, never redeemed: issuing never fails, and the newest
     * ones are still there */
    struct auth_tokens *t = auth_tokens_new();
    auth_tokens_set_clock(t, fake_clock);
    char token[AUTH_TOKEN_SIZE], last[AUTH_TOKEN_SIZE] = "";
    for (int i = 0; i < 20000; i++) {
        if (i % 1000 == 0)
            fake_now++;
        assert_true(auth_tokens_issue(t, "alice@example.org", BINDING, token));
        memcpy(last, token, sizeof last);
    }
    assert_true(auth_tokens_redeem(t, last, "alice@example.org", BINDING));
    auth_tokens_free(t);
}

/* A hand-over record as token.c writes it. */
static size_t put_record(unsigned char *out, unsigned char fill, uint64_t expires,
                         const char *user, const char *binding)
{
    size_t n = 0;
    memset(out, fill, 32);
    n += 32;
    for (int k = 0; k < 8; k++)
        out[n++] = (unsigned char)(expires >> (8 * k));
    memcpy(out + n, user, strlen(user) + 1);
    n += strlen(user) + 1;
    memcpy(out + n, binding, strlen(binding) + 1);
    n += strlen(binding) + 1;
    return n;
}

/* The token text of a record made by put_record. */
static void fill_text(char *text, unsigned char fill)
{
    for (int i = 0; i < 32; i++)
        snprintf(text + 2 * i, 3, "%02x", fill);
}

static void test_export_import_hands_over_live_tokens(void **state)
{
    /* the old process: three tokens, one spent, one expired by the hand-over */
    struct auth_tokens *old = auth_tokens_new();
    auth_tokens_set_clock(old, fake_clock);
    char a[AUTH_TOKEN_SIZE], b[AUTH_TOKEN_SIZE], c[AUTH_TOKEN_SIZE];
    assert_true(auth_tokens_issue(old, "carol@example.org", BINDING, c));
    fake_now += AUTH_TOKEN_LIFETIME_S - 5;
    assert_true(auth_tokens_issue(old, "alice@example.org", BINDING, a));
    assert_true(auth_tokens_issue(old, "bob@example.org", BINDING, b));
    assert_true(auth_tokens_redeem(old, b, "bob@example.org", BINDING)); /* spent */
    fake_now += 5;                                                         /* c expired */
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(auth_tokens_export(old, &buf, &len), 1);
    assert_true(len > 8 && len <= AUTH_TOKENS_EXPORT_MAX);
    auth_tokens_free(old);
    /* the new process knows exactly the live, unspent one */
    struct auth_tokens *new = auth_tokens_new();
    auth_tokens_set_clock(new, fake_clock);
    assert_int_equal(auth_tokens_import(new, buf, len), 1);
    /* importing the same hand-over twice adds nothing (a token is never doubled) */
    assert_int_equal(auth_tokens_import(new, buf, len), 0);
    free(buf);
    assert_false(auth_tokens_redeem(new, b, "bob@example.org", BINDING));
    assert_false(auth_tokens_redeem(new, c, "carol@example.org", BINDING));
    assert_true(auth_tokens_redeem(new, a, "alice@example.org", BINDING));
    assert_false(auth_tokens_redeem(new, a, "alice@example.org", BINDING)); /* once */
    /* an empty table exports the magic alone, which imports as nothing */
    assert_int_equal(auth_tokens_export(new, &buf, &len), 0);
    assert_int_equal(len, 8);
    assert_int_equal(auth_tokens_import(new, buf, len), 0);
    free(buf);
    auth_tokens_free(new);
}

static void test_import_hostile(void **state)
{
    /* every record below but the marked ones is refused; the parse goes on after a bad
     * record whose strings end, and stops at a string without its end in reach */
    static unsigned char in[8192];
    uint64_t now = (uint64_t)fake_now;
    size_t n = 0;
    memcpy(in, "TERNTOK1", 8);
    n += 8;
    n += put_record(in + n, 0x11, now + 30, "ok@example.org", BINDING); /* kept */
    n += put_record(in + n, 0x12, now, "at-expiry@example.org", BINDING);
    n += put_record(in + n, 0x13, now + AUTH_TOKEN_LIFETIME_S + 1, "too-long-lived", BINDING);
    n += put_record(in + n, 0x14, UINT64_MAX, "negative-time", BINDING);
    n += put_record(in + n, 0x15, now + 30, "", BINDING);            /* empty user */
    n += put_record(in + n, 0x16, now + 30, "ctl\r\nuser", BINDING); /* control octets */
    n += put_record(in + n, 0x17, now + 30, "nobinding", "");
    n += put_record(in + n, 0x11, now + 40, "dup@example.org", BINDING); /* a known token */
    n += put_record(in + n, 0x18, now + 30, "also-ok@example.org", BINDING); /* kept */
    /* a user longer than AUTH_MAX_LOGIN: no record boundary can be trusted after it */
    char long_user[AUTH_MAX_LOGIN + 2];
    memset(long_user, 'u', sizeof long_user - 1);
    long_user[sizeof long_user - 1] = '\0';
    n += put_record(in + n, 0x19, now + 30, long_user, BINDING);
    n += put_record(in + n, 0x1a, now + 30, "after@example.org", BINDING);
    struct auth_tokens *t = auth_tokens_new();
    auth_tokens_set_clock(t, fake_clock);
    assert_int_equal(auth_tokens_import(t, in, n), 2);
    char text[AUTH_TOKEN_SIZE];
    fill_text(text, 0x11);
    assert_false(auth_tokens_redeem(t, text, "dup@example.org", BINDING)); /* spends it */
    assert_false(auth_tokens_redeem(t, text, "ok@example.org", BINDING));
    fill_text(text, 0x18);
    assert_true(auth_tokens_redeem(t, text, "also-ok@example.org", BINDING));
    fill_text(text, 0x1a);
    assert_false(auth_tokens_redeem(t, text, "after@example.org", BINDING));
    fill_text(text, 0x13);
    assert_false(auth_tokens_redeem(t, text, "too-long-lived", BINDING));
    /* a wrong magic, a cut record, nothing at all */
    assert_int_equal(auth_tokens_import(t, "TERNTOK2", 8), 0);
    in[0] = 'X';
    assert_int_equal(auth_tokens_import(t, in, n), 0);
    in[0] = 'T';
    size_t first = 8 + 32 + 8 + strlen("ok@example.org") + 1 + strlen(BINDING) + 1;
    auth_tokens_free(t);
    t = auth_tokens_new();
    auth_tokens_set_clock(t, fake_clock);
    assert_int_equal(auth_tokens_import(t, in, first - 1), 0);
    assert_int_equal(auth_tokens_import(t, in, 0), 0);
    assert_int_equal(auth_tokens_import(t, in, first), 1);
    auth_tokens_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_redeem_once),
        cmocka_unit_test(test_wrong_user_or_binding_spends),
        cmocka_unit_test(test_malformed_and_unknown),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_full_table_evicts),
        cmocka_unit_test(test_export_import_hands_over_live_tokens),
        cmocka_unit_test(test_import_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
