/*
 * test_store_append.c - unit tests of store_mailbox_append_many (MULTIAPPEND, RFC 3502):
 * UIDs in order, flags/keywords/dates kept, a missing mailbox is [TRYCREATE], and every
 * write or fsync failure point leaves nothing: no file in tmp/ cur/ new/, no index row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store-private.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_tmpdir.h"
#include "test_store_util.h"

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tern-test-append-XXXXXX");
    if (!mkdtemp(tmp_root))
        return -1;
    store_io_write_hook = NULL;
    store_io_fsync_hook = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    store_io_write_hook = NULL;
    store_io_fsync_hook = NULL;
    store_index_pool_flush();
    rm_rf(tmp_root, 0);
    return 0;
}

static const char *const kw_work[] = {"$Work", NULL};

static void fill(struct store_append_message *m, const char **bodies, size_t n)
{
    memset(m, 0, n * sizeof *m);
    for (size_t i = 0; i < n; i++) {
        m[i].src.data = bodies[i];
        m[i].src.len = strlen(bodies[i]);
        m[i].src.size = m[i].src.len;
        m[i].src.fd = -1;
    }
}

static void test_append_many_ok(void **state)
{
    (void)state;
    char home[512];
    struct store_user *u = open_user("ok", home, sizeof home);
    char *error = NULL;
    assert_int_equal(store_mailbox_create(u, "Box", &error), 0);
    const char *bodies[3] = {"Subject: a\r\n\r\none\r\n", "Subject: b\r\n\r\ntwo\r\n",
                             "Subject: c\r\n\r\nthree\r\n"};
    struct store_append_message m[3];
    fill(m, bodies, 3);
    m[0].flags = STORE_FLAG_SEEN | STORE_FLAG_RECENT; /* \Recent is never stored */
    m[1].keywords = kw_work;
    m[2].internaldate = 1580000000;
    uint32_t uidv = 0, uids[3] = {0};
    store_user_idle(u); /* the call takes a pooled connection by itself */
    assert_int_equal(store_mailbox_append_many(u, "Box", m, 3, &uidv, uids, &error), 0);
    assert_int_equal(uids[1], uids[0] + 1);
    assert_int_equal(uids[2], uids[0] + 2);
    struct store_status st;
    assert_int_equal(store_mailbox_status(u, "Box", &st, &error), 0);
    assert_int_equal(st.messages, 3);
    assert_int_equal(st.uidvalidity, uidv);
    assert_int_equal(st.unseen, 2);
    struct store_mailbox *box = NULL;
    assert_int_equal(store_mailbox_open(u, "Box", true, &box, &error), 0);
    assert_int_equal(store_mailbox_count(box), 3);
    const struct store_message *m1 = store_mailbox_message(box, 1);
    assert_non_null(m1->keywords);
    assert_string_equal(m1->keywords[0], "$Work");
    assert_int_equal(store_mailbox_message(box, 2)->internaldate, 1580000000);
    /* LF on disk, CRLF size as vsize */
    assert_int_equal(store_mailbox_message(box, 0)->vsize, strlen(bodies[0]));
    assert_int_equal(store_mailbox_message(box, 0)->size, strlen(bodies[0]) - 3);
    store_mailbox_close(box);
    char dir[700];
    snprintf(dir, sizeof dir, "%s/Maildir/.Box/tmp", home);
    assert_int_equal(count_files(dir), 0);
    /* a missing mailbox */
    assert_int_equal(store_mailbox_append_many(u, "Nope", m, 3, &uidv, uids, &error), -1);
    assert_non_null(error);
    assert_non_null(strstr(error, "[TRYCREATE]"));
    free(error);
    store_user_close(u);
}

/* Every fsync/write failure point: -1 and nothing left, or (past the last) success. */
static void test_append_many_faults(void **state)
{
    (void)state;
    const char *bodies[4] = {"Subject: a\n\none\n", "Subject: b\n\ntwo\n", "Subject: c\n\nx\n",
                             "Subject: d\n\ny\n"};
    struct store_append_message m[4];
    fill(m, bodies, 4);
    for (int kind = 0; kind < 2; kind++) {
        int n_ok = 0;
        for (int k = 0; k < 20; k++) {
            char name[32], home[512];
            snprintf(name, sizeof name, "f%d_%d", kind, k);
            struct store_user *u = open_user(name, home, sizeof home);
            char *error = NULL;
            assert_int_equal(store_mailbox_create(u, "Box", &error), 0);
            fail_after = k;
            if (kind == 0)
                store_io_fsync_hook = fault_fsync;
            else
                store_io_write_hook = fault_write;
            uint32_t uidv = 0, uids[4] = {0};
            int r = store_mailbox_append_many(u, "Box", m, 4, &uidv, uids, &error);
            store_io_fsync_hook = NULL;
            store_io_write_hook = NULL;
            struct store_status st;
            char *err2 = NULL;
            assert_int_equal(store_mailbox_status(u, "Box", &st, &err2), 0);
            if (r == 0) {
                assert_true(fail_after >= 0);
                assert_int_equal(st.messages, 4);
                n_ok++;
            } else {
                assert_int_equal(r, -1);
                assert_non_null(error);
                free(error);
                assert_int_equal(st.messages, 0);
                static const char *const subs[] = {"new", "cur", "tmp"};
                for (int s = 0; s < 3; s++) {
                    char dir[700];
                    snprintf(dir, sizeof dir, "%s/Maildir/.Box/%s", home, subs[s]);
                    assert_int_equal(count_files(dir), 0);
                }
            }
            store_user_close(u);
        }
        assert_true(n_ok > 0); /* the loop reached past the last I/O step */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_many_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_many_faults, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
