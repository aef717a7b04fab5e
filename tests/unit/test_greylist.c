/*
 * test_greylist.c - greylisting (policy/greylist.c) with the time passed in: first attempt
 * deferred, an early retry deferred with the rest of the delay, a retry in the window
 * passes and keeps passing, a retry after the window starts again, the pass list after
 * auto_pass passes, networks (/24, /64), case-insensitive triplets, state on disk.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/greylist.h"

static const struct greylist_limits limits = {
    .delay = 300, .retry_window = 3600, .max_age = 86400, .auto_pass = 2};

static char path[64];

static int setup(void **state)
{
    snprintf(path, sizeof path, "/tmp/tern-greylist-%d.db", (int)getpid());
    unlink(path);
    return 0;
}

static int teardown(void **state)
{
    char p[80];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    return 0;
}

static enum greylist_verdict check(struct greylist *g, const char *ip, const char *from,
                                   const char *to, time_t now, unsigned *retry_in)
{
    struct greylist_answer a;
    greylist_check(g, ip, from, to, now, &a);
    if (retry_in)
        *retry_in = a.retry_in;
    return a.verdict;
}

/* Every mail worker opens the file at start at the same moment: each must succeed (the
 * schema met another's lock with SQLITE_BUSY and a worker failed to start). */
static void test_concurrent_open(void **state)
{
    (void)state;
    enum { N = 8 };
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) < 0)
                _exit(3);
            char *err = NULL;
            struct greylist *g = greylist_open(path, &limits, &err);
            if (!g) {
                fprintf(stderr, "greylist_open: %s\n", err ? err : "?");
                _exit(1);
            }
            greylist_close(g);
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]); /* every child starts at once */
    for (int i = 0; i < N; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
}

static void test_triplet_life(void **state)
{
    char *err = NULL;
    struct greylist *g = greylist_open(path, &limits, &err);
    assert_non_null(g);
    unsigned retry;
    assert_int_equal(check(g, "192.0.2.10", "a@x.example", "bob@example.test", 1000, &retry),
                     GREYLIST_DEFER);
    assert_int_equal(retry, 300);
    assert_int_equal(check(g, "192.0.2.10", "a@x.example", "bob@example.test", 1100, &retry),
                     GREYLIST_DEFER);
    assert_int_equal(retry, 200);
    /* a neighbour in the /24, another spelling of the triplet: the same triplet */
    assert_int_equal(check(g, "192.0.2.77", "A@X.example", "Bob@example.test", 1300, NULL),
                     GREYLIST_PASS);
    assert_int_equal(check(g, "192.0.2.10", "a@x.example", "bob@example.test", 50000, NULL),
                     GREYLIST_PASS);
    /* another recipient is another triplet */
    assert_int_equal(check(g, "192.0.2.10", "a@x.example", "alice@example.test", 50000, NULL),
                     GREYLIST_DEFER);
    /* a retry after the window starts over */
    assert_int_equal(check(g, "198.51.100.1", "s@y.example", "bob@example.test", 1000, NULL),
                     GREYLIST_DEFER);
    assert_int_equal(check(g, "198.51.100.1", "s@y.example", "bob@example.test", 1000 + 300 +
                                                                                   3601, NULL),
                     GREYLIST_DEFER);
    /* the passed triplet survives a restart; it expires after max_age unseen */
    greylist_close(g);
    g = greylist_open(path, &limits, &err);
    assert_non_null(g);
    assert_int_equal(check(g, "192.0.2.10", "a@x.example", "bob@example.test", 60000, NULL),
                     GREYLIST_PASS);
    assert_int_equal(check(g, "192.0.2.10", "a@x.example", "bob@example.test",
                           60000 + 86400, NULL),
                     GREYLIST_DEFER);
    greylist_close(g);
}

static void test_pass_list_and_networks(void **state)
{
    char *err = NULL;
    struct greylist *g = greylist_open(path, &limits, &err);
    assert_non_null(g);
    /* two triplets pass (auto_pass = 2): the /64 is on the pass list */
    for (int i = 0; i < 2; i++) {
        char to[32];
        snprintf(to, sizeof to, "u%d@example.test", i);
        assert_int_equal(check(g, "2001:db8:1:2::5", "s@z.example", to, 10, NULL),
                         GREYLIST_DEFER);
        assert_int_equal(check(g, "2001:db8:1:2::9", "s@z.example", to, 400, NULL),
                         GREYLIST_PASS);
    }
    struct greylist_answer a;
    greylist_check(g, "2001:db8:1:2:abcd::1", "new@w.example", "new@example.test", 500, &a);
    assert_int_equal(a.verdict, GREYLIST_PASS);
    assert_true(a.is_pass_listed);
    /* a different /64 is not */
    assert_int_equal(check(g, "2001:db8:1:3::1", "new@w.example", "new@example.test", 500, NULL),
                     GREYLIST_DEFER);
    /* not an address: nothing to key on */
    assert_int_equal(check(g, "unknown", "a@b", "c@d", 500, NULL), GREYLIST_PASS);
    char net[64];
    assert_true(greylist_network("::ffff:192.0.2.200", net, sizeof net));
    assert_string_equal(net, "192.0.2.0/24");
    greylist_close(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_concurrent_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_triplet_life, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pass_list_and_networks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
