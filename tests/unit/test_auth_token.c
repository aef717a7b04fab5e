/*
 * test_auth_token.c - the auth process's one-time login tokens (auth/token.c): issued for
 * a user and a connection, redeemed once and only for both, spent by a wrong attempt,
 * expired after AUTH_TOKEN_LIFETIME_S, and a full table evicts the oldest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_redeem_once),
        cmocka_unit_test(test_wrong_user_or_binding_spends),
        cmocka_unit_test(test_malformed_and_unknown),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_full_table_evicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
