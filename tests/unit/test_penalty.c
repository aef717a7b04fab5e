/*
 * test_penalty.c - the failed-login policy (policy/penalty.c): growing delays that still
 * let a correct password in, pair locks that spare other accounts and other addresses,
 * the per-address flood limit, trusted proxies, IPv6 /64 keys, expiry, eviction, and the
 * list/clear administration. Time is passed in, so nothing here sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/penalty.h"

static const struct penalty_limits limits = {
    .delay_initial_ms = 1000,
    .delay_max_ms = 8000,
    .window_ms = 300000,
    .account_max_failures = 3,
    .address_max_failures = 20,
    .block_ms = 900000,
};

static struct penalty_query query(const char *ip, const char *account, uint64_t now)
{
    struct penalty_query q = {.ip = ip, .account = account, .service = "imap", .now_ms = now};
    return q;
}

static struct penalty_answer check(struct penalty_table *t, const char *ip, const char *account,
                                   uint64_t now)
{
    struct penalty_query q = query(ip, account, now);
    struct penalty_answer a;
    penalty_check(t, &q, &a);
    return a;
}

static struct penalty_answer report(struct penalty_table *t, const char *ip, const char *account,
                                    bool ok, uint64_t now)
{
    struct penalty_query q = query(ip, account, now);
    struct penalty_answer a;
    penalty_report(t, &q, ok, &a);
    return a;
}

/* The delay doubles per failure up to the cap, counts from the last failure, and a
 * correct password after it is accepted. */
static void test_delay_grows_and_correct_password_passes(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    uint64_t now = 10000;
    struct penalty_answer a = check(t, "192.0.2.1", "alice", now);
    assert_int_equal(a.verdict, PENALTY_ALLOW);
    assert_int_equal(a.delay_ms, 0);
    /* mallory guesses bob's password four times: 1 s, 2 s, 4 s, 8 s (the cap) */
    uint64_t expect[] = {1000, 2000, 4000, 8000, 8000};
    for (int i = 0; i < 5; i++) {
        report(t, "192.0.2.1", i < 2 ? "bob" : "carol", false, now);
        a = check(t, "192.0.2.1", "alice", now);
        assert_int_equal(a.verdict, PENALTY_ALLOW);
        assert_int_equal(a.delay_ms, expect[i]);
    }
    /* half-way through the delay the rest remains */
    a = check(t, "192.0.2.1", "alice", now + 3000);
    assert_int_equal(a.delay_ms, 5000);
    /* after it, alice (same NAT) logs in: her success is not refused */
    a = check(t, "192.0.2.1", "alice", now + 8000);
    assert_int_equal(a.delay_ms, 0);
    a = report(t, "192.0.2.1", "alice", true, now + 8000);
    assert_int_equal(a.verdict, PENALTY_ALLOW);
    /* other addresses never waited */
    assert_int_equal(check(t, "192.0.2.2", "alice", now).delay_ms, 0);
    penalty_table_free(t);
}

/* A pair lock stops even the right password for that account from that address, and
 * nothing else. */
static void test_pair_lock_spares_others(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    uint64_t now = 1;
    for (int i = 0; i < 2; i++)
        assert_int_equal(report(t, "192.0.2.1", "Bob", false, now).verdict, PENALTY_ALLOW);
    assert_int_equal(report(t, "192.0.2.1", "bob", false, now).verdict, PENALTY_BLOCKED);
    assert_int_equal(check(t, "192.0.2.1", "BOB", now + 60000).verdict, PENALTY_BLOCKED);
    assert_int_equal(report(t, "192.0.2.1", "bob", true, now + 60000).verdict, PENALTY_BLOCKED);
    /* bob elsewhere, alice here */
    assert_int_equal(check(t, "198.51.100.9", "bob", now).verdict, PENALTY_ALLOW);
    assert_int_equal(report(t, "198.51.100.9", "bob", true, now).verdict, PENALTY_ALLOW);
    assert_int_equal(check(t, "192.0.2.1", "alice", now + 60000).verdict, PENALTY_ALLOW);
    assert_int_equal(report(t, "192.0.2.1", "alice", true, now + 60000).verdict, PENALTY_ALLOW);
    /* the block ends after block_time */
    assert_int_equal(check(t, "192.0.2.1", "bob", now + 900000).verdict, PENALTY_ALLOW);
    assert_int_equal(report(t, "192.0.2.1", "bob", true, now + 900000).verdict, PENALTY_ALLOW);
    penalty_table_free(t);
}

/* A success forgets the pair's failures; failures older than the window are forgotten. */
static void test_success_and_window_reset_pair(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    report(t, "192.0.2.1", "bob", false, 1);
    report(t, "192.0.2.1", "bob", false, 2);
    report(t, "192.0.2.1", "bob", true, 3);
    report(t, "192.0.2.1", "bob", false, 4);
    assert_int_equal(report(t, "192.0.2.1", "bob", false, 5).verdict, PENALTY_ALLOW);
    /* the window passes: two more are not three */
    assert_int_equal(report(t, "192.0.2.1", "bob", false, 400000).verdict, PENALTY_ALLOW);
    assert_int_equal(report(t, "192.0.2.1", "bob", false, 400001).verdict, PENALTY_ALLOW);
    assert_int_equal(report(t, "192.0.2.1", "bob", false, 400002).verdict, PENALTY_BLOCKED);
    penalty_table_free(t);
}

/* A flood of distinct accounts from one address hits the address limit. */
static void test_address_flood_block(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    char name[32];
    struct penalty_answer a = {0};
    for (int i = 0; i < 19; i++) {
        snprintf(name, sizeof name, "user%d", i);
        a = report(t, "203.0.113.5", name, false, (uint64_t)i);
        assert_int_equal(a.verdict, PENALTY_ALLOW);
    }
    a = report(t, "203.0.113.5", "user19", false, 19);
    assert_int_equal(a.verdict, PENALTY_BLOCKED);
    assert_int_equal(check(t, "203.0.113.5", "someone", 20).verdict, PENALTY_BLOCKED);
    assert_int_equal(check(t, "203.0.113.5", NULL, 20).verdict, PENALTY_BLOCKED);
    assert_int_equal(check(t, "203.0.113.6", "someone", 20).verdict, PENALTY_ALLOW);
    penalty_table_free(t);
}

/* A trusted proxy without a passed address: no address delay or block, pairs still. */
static void test_trusted_proxy(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    struct penalty_query q = query("127.0.0.1", "bob", 1);
    q.is_trusted = true;
    struct penalty_answer a;
    for (int i = 0; i < 2; i++) {
        penalty_report(t, &q, false, &a);
        assert_int_equal(a.verdict, PENALTY_ALLOW);
    }
    penalty_report(t, &q, false, &a);
    assert_int_equal(a.verdict, PENALTY_BLOCKED);
    q.account = "alice";
    penalty_check(t, &q, &a);
    assert_int_equal(a.verdict, PENALTY_ALLOW);
    assert_int_equal(a.delay_ms, 0);
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%d", i);
        q.account = name;
        penalty_report(t, &q, false, &a);
    }
    q.account = "alice";
    penalty_check(t, &q, &a);
    assert_int_equal(a.verdict, PENALTY_ALLOW);
    assert_int_equal(a.delay_ms, 0);
    penalty_table_free(t);
}

/* IPv6 per /64, IPv4-mapped as IPv4, "unknown" as itself. */
static void test_address_keys(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    report(t, "2001:db8:1:2::1", "a", false, 1);
    assert_int_equal(check(t, "2001:DB8:1:2:ffff::9", "b", 1).delay_ms, 1000);
    assert_int_equal(check(t, "2001:db8:1:3::1", "b", 1).delay_ms, 0);
    report(t, "::ffff:198.51.100.1", "a", false, 1);
    assert_int_equal(check(t, "198.51.100.1", "b", 1).delay_ms, 1000);
    assert_int_equal(check(t, "198.51.100.2", "b", 1).delay_ms, 0);
    report(t, "unknown", "a", false, 1);
    assert_int_equal(check(t, "unknown", "b", 1).delay_ms, 1000);
    penalty_table_free(t);
}

struct listing {
    int n;
    char text[1024];
};

static void collect(const struct penalty_block *b, void *arg)
{
    struct listing *l = arg;
    size_t len = strlen(l->text);
    snprintf(l->text + len, sizeof l->text - len, "%s|%s|%u;", b->ip, b->account, b->failures);
    l->n++;
}

/* list shows address and pair blocks; clear lifts them selectively. */
static void test_list_and_clear(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    for (int i = 0; i < 3; i++)
        report(t, "192.0.2.1", "bob", false, 1);
    for (int i = 0; i < 3; i++)
        report(t, "192.0.2.1", "carol", false, 1);
    for (int i = 0; i < 20; i++)
        report(t, "203.0.113.5", "x", false, 1);
    struct listing l = {0};
    assert_int_equal(penalty_blocks_list(t, 2, collect, &l), 4);
    assert_string_equal(l.text, "203.0.113.5||20;192.0.2.1|bob|3;192.0.2.1|carol|3;"
                                "203.0.113.5|x|20;");
    assert_int_equal(penalty_blocks_clear(t, "192.0.2.1", "BOB", "test", 2), 1);
    assert_int_equal(check(t, "192.0.2.1", "bob", 2).verdict, PENALTY_ALLOW);
    assert_int_equal(check(t, "192.0.2.1", "carol", 2).verdict, PENALTY_BLOCKED);
    assert_int_equal(penalty_blocks_clear(t, "203.0.113.5", "", "test", 2), 1);
    assert_int_equal(check(t, "203.0.113.5", "y", 2).verdict, PENALTY_ALLOW);
    assert_int_equal(check(t, "203.0.113.5", "x", 2).verdict, PENALTY_BLOCKED);
    assert_int_equal(penalty_blocks_clear(t, NULL, NULL, "test", 2), 2);
    memset(&l, 0, sizeof l);
    assert_int_equal(penalty_blocks_list(t, 2, collect, &l), 0);
    /* expired blocks are not listed */
    for (int i = 0; i < 3; i++)
        report(t, "192.0.2.1", "bob", false, 10);
    assert_int_equal(penalty_blocks_list(t, 10 + 900000, collect, &l), 0);
    penalty_table_free(t);
}

/* The table is bounded: a flood of addresses evicts unblocked entries before blocks. */
static void test_eviction_keeps_blocks(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    for (int i = 0; i < 20; i++)
        report(t, "192.0.2.1", NULL, false, 1);
    report(t, "192.0.2.2", NULL, false, 1);
    char ip[48];
    for (int i = 0; i < PENALTY_ADDRESS_SLOTS + 10; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
        report(t, ip, NULL, false, (uint64_t)(2 + i));
    }
    assert_int_equal(check(t, "192.0.2.1", NULL, 100000).verdict, PENALTY_BLOCKED);
    assert_int_equal(check(t, "192.0.2.2", NULL, 2).delay_ms, 0);
    penalty_table_free(t);
}

/* The live entries go out with wall-clock times and come back into a new table (a new
 * process, a clock started elsewhere) meaning the same: a block stays, its time left
 * kept; what no longer counts, and malformed records, are dropped. */
static void test_export_import(void **state)
{
    struct penalty_table *t = penalty_table_new(&limits);
    uint64_t gen = penalty_table_generation(t), blocks = penalty_table_block_generation(t);
    for (int i = 0; i < 3; i++)
        report(t, "192.0.2.1", "bob", false, 20000);
    report(t, "198.51.100.7", "old", false, 1); /* outside the window by export time */
    assert_true(penalty_table_generation(t) > gen);
    assert_true(penalty_table_block_generation(t) > blocks);
    uint64_t now = 300010; /* the 198.51.100.7 failure is 300 s old, bob's 280 s */
    int64_t now_unix = 1700000000000;
    struct penalty_record *r;
    size_t n = penalty_table_export(t, now, now_unix, &r);
    /* the pair (blocked) and the address entry (failures in the window) */
    assert_int_equal(n, 2);
    penalty_table_free(t);

    struct penalty_record *all = calloc(n + 4, sizeof *all);
    memcpy(all, r, n * sizeof *r);
    struct penalty_record *all_copy = r; /* (the same records, for a second import) */
    /* hostile rows: a key the policy would not make, an account in capitals, no failures */
    snprintf(all[n].key, sizeof all[n].key, "not an address");
    all[n].failures = 5;
    all[n].blocked_until_unix_ms = now_unix + 1000;
    snprintf(all[n + 1].key, sizeof all[n + 1].key, "192.0.2.9");
    snprintf(all[n + 1].account, sizeof all[n + 1].account, "BOB");
    all[n + 1].failures = 5;
    all[n + 1].blocked_until_unix_ms = now_unix + 1000;
    snprintf(all[n + 2].key, sizeof all[n + 2].key, "192.0.2.9");
    all[n + 2].last_failure_unix_ms = now_unix;
    /* a time before 1970 (the fuzzer's: its age overflowed) */
    snprintf(all[n + 3].key, sizeof all[n + 3].key, "192.0.2.10");
    all[n + 3].failures = 5;
    all[n + 3].last_failure_unix_ms = INT64_MIN + 2048;
    all[n + 3].blocked_until_unix_ms = now_unix + 1000;
    /* a new process: its monotonic clock reads 50 s, the wall clock 10 s later */
    struct penalty_table *u = penalty_table_new(&limits);
    uint64_t later = 50000;
    assert_int_equal(penalty_table_import(u, all, n + 4, later, now_unix + 10000), 2);
    free(all);
    assert_int_equal(check(u, "192.0.2.1", "bob", later).verdict, PENALTY_BLOCKED);
    assert_int_equal(check(u, "192.0.2.1", "alice", later).verdict, PENALTY_ALLOW);
    assert_int_equal(check(u, "192.0.2.9", "bob", later).verdict, PENALTY_ALLOW);
    /* the address's 3 failures came along: 17 more reach its limit of 20 */
    struct penalty_table *v = penalty_table_new(&limits);
    assert_int_equal(penalty_table_import(v, all_copy, n, later, now_unix + 10000), 2);
    for (int i = 0; i < 16; i++)
        assert_int_equal(report(v, "192.0.2.1", NULL, false, later).verdict, PENALTY_ALLOW);
    assert_int_equal(report(v, "192.0.2.1", NULL, false, later).verdict, PENALTY_BLOCKED);
    penalty_table_free(v);
    free(all_copy);
    /* the block had 900 - 280.01 - 10 s left: still there 609 s on, gone after 611 s */
    assert_int_equal(check(u, "192.0.2.1", "bob", later + 609000).verdict, PENALTY_BLOCKED);
    assert_int_equal(check(u, "192.0.2.1", "bob", later + 611000).verdict, PENALTY_ALLOW);
    penalty_table_free(u);
}

/* The records through SQLite and back. */
static void test_store_round_trip(void **state)
{
    char path[] = "/tmp/tern-penalty-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char *err = NULL;
    struct penalty_store *ps = penalty_store_open(path, &err);
    assert_non_null(ps);
    struct penalty_record r[2] = {{.key = "192.0.2.1", .account = "bob", .failures = 3,
                                   .last_failure_unix_ms = 5, .blocked_until_unix_ms = 9},
                                  {.key = "192.0.2.1", .failures = 4,
                                   .last_failure_unix_ms = 6}};
    assert_int_equal(penalty_store_save(ps, r, 2), 0);
    assert_int_equal(penalty_store_save(ps, r, 1), 0); /* rewritten whole */
    penalty_store_close(ps);
    ps = penalty_store_open(path, &err);
    struct penalty_record *back;
    assert_int_equal(penalty_store_load(ps, 100, &back), 1);
    assert_string_equal(back[0].key, "192.0.2.1");
    assert_string_equal(back[0].account, "bob");
    assert_int_equal(back[0].failures, 3);
    assert_int_equal(back[0].blocked_until_unix_ms, 9);
    free(back);
    /* a newer process claims the file (a reload): the old one writes no more */
    struct penalty_store *newer = penalty_store_open(path, &err);
    assert_non_null(newer);
    assert_int_equal(penalty_store_save(ps, r, 2), 1);
    assert_int_equal(penalty_store_save(newer, r, 2), 0);
    assert_int_equal(penalty_store_load(ps, 100, &back), 2);
    free(back);
    penalty_store_close(newer);
    penalty_store_close(ps);
    unlink(path);
    char wal[64];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path);
    unlink(wal);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delay_grows_and_correct_password_passes),
        cmocka_unit_test(test_pair_lock_spares_others),
        cmocka_unit_test(test_success_and_window_reset_pair),
        cmocka_unit_test(test_address_flood_block),
        cmocka_unit_test(test_trusted_proxy),
        cmocka_unit_test(test_address_keys),
        cmocka_unit_test(test_list_and_clear),
        cmocka_unit_test(test_eviction_keeps_blocks),
        cmocka_unit_test(test_export_import),
        cmocka_unit_test(test_store_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
