/*
 * test_ratelimit.c - rate limits (policy/ratelimit.c): per address and per user, fixed windows,
 * refused events not counted, IPv6 /64 keys, limits off, a flood of keys stays bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "policy/ratelimit.h"

static bool event(struct ratelimit *a, enum ratelimit_event ev, const char *ip, const char *user,
                  uint64_t now)
{
    struct ratelimit_query q = {.event = ev, .ip = ip, .user = user, .now_ms = now};
    struct ratelimit_answer r;
    ratelimit_event(a, &q, &r);
    return r.is_allowed;
}

static void test_address_limits_and_window(void **state)
{
    struct ratelimit_limits l = {.address = {3, 2, 5}, .window_ms = 60000};
    struct ratelimit *a = ratelimit_new(&l);
    for (int i = 0; i < 3; i++)
        assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 1000));
    assert_false(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 1000));
    assert_false(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 60999)); /* still the window */
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.2", NULL, 1000));  /* other client */
    /* events of different kinds count apart */
    assert_true(event(a, RATELIMIT_MESSAGE, "192.0.2.1", NULL, 1000));
    assert_true(event(a, RATELIMIT_MESSAGE, "192.0.2.1", NULL, 1000));
    assert_false(event(a, RATELIMIT_MESSAGE, "192.0.2.1", NULL, 1000));
    /* the next window starts afresh; refusals were not counted */
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 61000));
    assert_true(event(a, RATELIMIT_MESSAGE, "192.0.2.1", NULL, 61000));
    /* IPv6 per /64 */
    for (int i = 0; i < 3; i++)
        assert_true(event(a, RATELIMIT_CONNECTION, i ? "2001:db8::1" : "2001:db8::ffff", NULL, 5));
    assert_false(event(a, RATELIMIT_CONNECTION, "2001:db8::abcd", NULL, 5));
    assert_true(event(a, RATELIMIT_CONNECTION, "2001:db8:0:1::1", NULL, 5));
    ratelimit_free(a);
}

static void test_user_limits(void **state)
{
    struct ratelimit_limits l = {.user = {0, 2, 0}, .window_ms = 60000};
    struct ratelimit *a = ratelimit_new(&l);
    assert_true(event(a, RATELIMIT_MESSAGE, "192.0.2.1", "Alice@example.test", 1));
    assert_true(event(a, RATELIMIT_MESSAGE, "198.51.100.1", "alice@example.test", 1));
    struct ratelimit_query q = {.event = RATELIMIT_MESSAGE, .ip = "203.0.113.1",
                            .user = "alice@example.test", .now_ms = 2};
    struct ratelimit_answer r;
    ratelimit_event(a, &q, &r);
    assert_false(r.is_allowed);
    assert_true(r.is_user_limit);
    /* others, and unauthenticated mail, are not limited */
    assert_true(event(a, RATELIMIT_MESSAGE, "203.0.113.1", "bob@example.test", 2));
    for (int i = 0; i < 10; i++)
        assert_true(event(a, RATELIMIT_MESSAGE, "203.0.113.1", NULL, 2));
    ratelimit_free(a);
}

static void test_flood_of_keys_is_bounded(void **state)
{
    struct ratelimit_limits l = {.address = {1, 0, 0}, .window_ms = 60000};
    struct ratelimit *a = ratelimit_new(&l);
    char ip[32];
    for (int i = 0; i < RATELIMIT_SLOTS * 3; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
        assert_true(event(a, RATELIMIT_CONNECTION, ip, NULL, (uint64_t)i));
    }
    /* the most recent keys are still counted */
    assert_false(event(a, RATELIMIT_CONNECTION, ip, NULL, RATELIMIT_SLOTS * 3));
    ratelimit_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_limits_and_window),
        cmocka_unit_test(test_user_limits),
        cmocka_unit_test(test_flood_of_keys_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
