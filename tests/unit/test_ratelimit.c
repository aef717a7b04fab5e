/*
 * test_ratelimit.c - rate limits (policy/ratelimit.c): per address and per user, windows
 * from the first event, refused events not counted, IPv6 /64 keys, limits off, a flood of
 * keys stays bounded; the counts live in the anvil (core/anvil.c) and add up over the
 * worker processes' slots, a dead worker's going with it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "core/anvil.h"
#include "core/conn.h"
#include "policy/ratelimit.h"

static bool event(struct ratelimit *a, enum ratelimit_event ev, const char *ip, const char *user,
                  uint64_t now)
{
    struct ratelimit_query q = {.event = ev, .ip = ip, .user = user, .now_ms = now};
    struct ratelimit_answer r;
    ratelimit_event(a, &q, &r);
    return r.is_allowed;
}

/* A fresh anvil with workers in slots 0 and 1 (pids made up), this process in slot 0. */
static struct anvil *fresh_anvil(void)
{
    struct anvil *a = anvil_create();
    assert_non_null(a);
    anvil_slot_reset(a, 0, 1000, 1, SERVER_PROC_LOGIN);
    anvil_slot_reset(a, 1, 1001, 1, SERVER_PROC_LOGIN);
    anvil_attach(a, 0);
    return a;
}

static void test_address_limits_and_window(void **state)
{
    fresh_anvil();
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
    fresh_anvil();
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
    fresh_anvil();
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
/* Worker processes share the counts: events counted in one slot refuse the next in
 * another; a worker that dies (its slot cleared by the master) takes its counts along. */
static void test_workers_share_the_counts(void **state)
{
    struct anvil *an = fresh_anvil();
    struct ratelimit_limits l = {.address = {4, 0, 0}, .user = {0, 3, 0}, .window_ms = 60000};
    struct ratelimit *a = ratelimit_new(&l);
    anvil_attach(an, 0);
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 10));
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 11));
    assert_true(event(a, RATELIMIT_MESSAGE, "192.0.2.9", "alice@example.test", 11));
    anvil_attach(an, 1); /* the second worker */
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 12));
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 13));
    struct ratelimit_query q = {.event = RATELIMIT_CONNECTION, .ip = "192.0.2.1", .now_ms = 14};
    struct ratelimit_answer r;
    ratelimit_event(a, &q, &r);
    assert_false(r.is_allowed);
    assert_int_equal(r.count, 4); /* two from each worker */
    /* the user's limit counts over workers too */
    assert_true(event(a, RATELIMIT_MESSAGE, "198.51.100.1", "ALICE@example.test", 15));
    assert_true(event(a, RATELIMIT_MESSAGE, "203.0.113.5", "alice@example.test", 16));
    assert_false(event(a, RATELIMIT_MESSAGE, "203.0.113.6", "alice@example.test", 17));
    /* worker 0 dies: its two connections are forgotten, worker 1's two count on */
    anvil_slot_clear(an, 0);
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 18));
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 19));
    assert_false(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 20));
    /* each worker's window starts with its own first event */
    assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 60012));
    ratelimit_free(a);
}

/* Without an anvil nothing is counted and nothing refused. */
static void test_no_anvil_counts_nothing(void **state)
{
    anvil_attach(NULL, 0);
    struct ratelimit_limits l = {.address = {1, 1, 1}, .window_ms = 60000};
    struct ratelimit *a = ratelimit_new(&l);
    for (int i = 0; i < 3; i++)
        assert_true(event(a, RATELIMIT_CONNECTION, "192.0.2.1", NULL, 1));
    ratelimit_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_limits_and_window),
        cmocka_unit_test(test_user_limits),
        cmocka_unit_test(test_flood_of_keys_is_bounded),
        cmocka_unit_test(test_workers_share_the_counts),
        cmocka_unit_test(test_no_anvil_counts_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
