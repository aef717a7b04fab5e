/*
 * test_store.c - unit tests of the store: delivery (multi-target, CRLF -> LF, sizes,
 * quota, fault injection), and the mailbox API (sync, flags, expunge, append, copy, move,
 * rename, POP3 lock).
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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_root[256];

/* rm -rf of the test directory (bounded depth, only our own temp dir). */
static void rm_rf(const char *path, int depth)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        if (depth < 10)
            rm_rf(p, depth + 1);
    }
    closedir(d);
    rmdir(path);
}

static int setup(void **state)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tern-test-store-XXXXXX");
    if (!mkdtemp(tmp_root))
        return -1;
    store_io_write_hook = NULL;
    store_io_fsync_hook = NULL;
    return 0;
}

static int teardown(void **state)
{
    store_io_write_hook = NULL;
    store_io_fsync_hook = NULL;
    rm_rf(tmp_root, 0);
    return 0;
}

static void home_of(const char *user, char *out, size_t size)
{
    snprintf(out, size, "%s/mail/example.test/%s", tmp_root, user);
}

/* Number of regular entries in a directory (0 if absent). */
static size_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Read the single file in dir into a malloc'd string; its name into name_r. */
static char *read_only_file(const char *dir, char *name_r, size_t name_size)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    char path[4096] = "";
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            if (name_r)
                snprintf(name_r, name_size, "%s", de->d_name);
        }
    closedir(d);
    assert_true(path[0]);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static const char msg_crlf[] = "Subject: hi\r\n\r\nline one\r\nline two\r\n";
static const char msg_lf[] = "Subject: hi\n\nline one\nline two\n";

static void test_deliver_two_users(void **state)
{
    char home_a[512], home_b[512], dir[600];
    home_of("alice", home_a, sizeof home_a);
    home_of("bob", home_b, sizeof home_b);
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    struct store_target t[2] = {
        {.user = "alice@example.test", .home = home_a, .header = "Delivered-To: alice\r\n"},
        {.user = "bob@example.test", .home = home_b, .header = NULL},
    };
    char *error = NULL;
    assert_int_equal(store_deliver(&src, t, 2, &error), 0);
    assert_null(error);
    assert_int_equal(t[0].status, 0);
    assert_int_equal(t[1].status, 0);
    assert_int_equal(t[0].uid, 1);
    assert_int_equal(t[1].uid, 1);

    char name[512];
    snprintf(dir, sizeof dir, "%s/Maildir/new", home_b);
    char *body = read_only_file(dir, name, sizeof name);
    assert_string_equal(body, msg_lf);
    /* S= is the LF size on disk, W= the CRLF size */
    char expect[64];
    snprintf(expect, sizeof expect, ",S=%zu,W=%zu", strlen(msg_lf), strlen(msg_crlf));
    assert_non_null(strstr(name, expect));
    free(body);

    snprintf(dir, sizeof dir, "%s/Maildir/new", home_a);
    body = read_only_file(dir, NULL, 0);
    assert_string_equal(body, "Delivered-To: alice\nSubject: hi\n\nline one\nline two\n");
    free(body);
    snprintf(dir, sizeof dir, "%s/Maildir/tmp", home_a);
    assert_int_equal(count_files(dir), 0);

    assert_int_equal(store_user_usage(home_a), (int64_t)strlen(msg_lf) + 20);
    assert_int_equal(store_user_usage(home_b), (int64_t)strlen(msg_lf));

    /* a second delivery gets the next UID */
    assert_int_equal(store_deliver(&src, t + 1, 1, &error), 0);
    assert_int_equal(t[1].uid, 2);
}

/* A message from a file, larger than one chunk, with a CR LF split across chunks. */
static void test_deliver_from_file(void **state)
{
    char home[512], path[600], dir[600];
    home_of("carol", home, sizeof home);
    snprintf(path, sizeof path, "%s/spool", tmp_root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    size_t n_lines = 20000;
    uint64_t size = 0;
    for (size_t i = 0; i < n_lines; i++) {
        /* 13 bytes per line: CR lands at varying chunk offsets */
        assert_int_equal(write(fd, "0123456789a\r\n", 13), 13);
        size += 13;
    }
    assert_int_equal(write(fd, "bare\rcr\r", 8), 8);
    size += 8;
    struct store_source src = {.fd = fd, .size = size};
    struct store_target t = {.user = "carol@example.test", .home = home};
    char *error = NULL;
    assert_int_equal(store_deliver(&src, &t, 1, &error), 0);
    close(fd);
    snprintf(dir, sizeof dir, "%s/Maildir/new", home);
    char name[512];
    char *body = read_only_file(dir, name, sizeof name);
    size_t expect_size = n_lines * 12 + 8;
    assert_int_equal(strlen(body), expect_size);
    assert_memory_equal(body, "0123456789a\n0123456789a\n", 24);
    assert_string_equal(body + expect_size - 8, "bare\rcr\r");
    char expect[64];
    snprintf(expect, sizeof expect, ",S=%zu,W=%zu", expect_size, expect_size + n_lines);
    assert_non_null(strstr(name, expect));
    free(body);
}

static void test_deliver_quota(void **state)
{
    char home_a[512], home_b[512], dir[600];
    home_of("alice", home_a, sizeof home_a);
    home_of("bob", home_b, sizeof home_b);
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    struct store_target t1 = {.user = "alice@example.test", .home = home_a, .quota = 90};
    char *error = NULL;
    assert_int_equal(store_deliver(&src, &t1, 1, &error), 0);
    assert_int_equal(store_deliver(&src, &t1, 1, &error), 0);
    /* usage 64 + this copy 36 > 90: refused, and the other target gets nothing */
    struct store_target t[2] = {
        {.user = "bob@example.test", .home = home_b},
        {.user = "alice@example.test", .home = home_a, .quota = 90},
    };
    assert_int_equal(store_deliver(&src, t, 2, &error), -1);
    assert_non_null(error);
    free(error);
    assert_int_equal(t[1].status, STORE_ERR_QUOTA);
    assert_int_equal(t[0].status, STORE_ERR_TEMP);
    snprintf(dir, sizeof dir, "%s/Maildir/new", home_b);
    assert_int_equal(count_files(dir), 0);
    snprintf(dir, sizeof dir, "%s/Maildir/new", home_a);
    assert_int_equal(count_files(dir), 2);
}

static int fail_after;
static int fault_fsync(int fd)
{
    if (fail_after-- <= 0) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}
static ssize_t fault_write(int fd, const void *p, size_t n)
{
    if (fail_after-- <= 0) {
        errno = ENOSPC;
        return -1;
    }
    return write(fd, p, n);
}

/* Every possible fsync or write failure point: -1, and nothing visible anywhere. */
static void test_deliver_faults(void **state)
{
    char home_a[512], home_b[512], dir[600];
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    int n_ok = 0;
    for (int kind = 0; kind < 2; kind++) {
        for (int k = 0; k < 8; k++) {
            char name[32];
            snprintf(name, sizeof name, "a%d%d", kind, k);
            home_of(name, home_a, sizeof home_a);
            snprintf(name, sizeof name, "b%d%d", kind, k);
            home_of(name, home_b, sizeof home_b);
            struct store_target t[2] = {
                {.user = "alice@example.test", .home = home_a},
                {.user = "bob@example.test", .home = home_b},
            };
            fail_after = k;
            if (kind == 0)
                store_io_fsync_hook = fault_fsync;
            else
                store_io_write_hook = fault_write;
            char *error = NULL;
            int r = store_deliver(&src, t, 2, &error);
            store_io_fsync_hook = NULL;
            store_io_write_hook = NULL;
            if (r == 0) {
                /* the fault came after every I/O step: it must have succeeded fully */
                assert_true(fail_after >= 0);
                n_ok++;
                continue;
            }
            assert_int_equal(r, -1);
            assert_non_null(error);
            free(error);
            assert_int_not_equal(t[0].status, 0);
            assert_int_not_equal(t[1].status, 0);
            const char *homes[2] = {home_a, home_b};
            for (int h = 0; h < 2; h++) {
                static const char *const subs[] = {"new", "cur", "tmp"};
                for (int s = 0; s < 3; s++) {
                    snprintf(dir, sizeof dir, "%s/Maildir/%s", homes[h], subs[s]);
                    assert_int_equal(count_files(dir), 0);
                }
            }
            assert_true(store_user_usage(home_a) <= 0);
        }
    }
    /* the loop reached past the last I/O step at least once per kind */
    assert_true(n_ok >= 2);
}

static void test_deliver_folder(void **state)
{
    char home[512], dir[600];
    home_of("dave", home, sizeof home);
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    struct store_target t = {.user = "dave@example.test", .home = home, .mailbox = "Lists/Tern"};
    char *error = NULL;
    assert_int_equal(store_deliver(&src, &t, 1, &error), 0);
    snprintf(dir, sizeof dir, "%s/Maildir/.Lists.Tern/new", home);
    assert_int_equal(count_files(dir), 1);
    snprintf(dir, sizeof dir, "%s/Maildir/.Lists.Tern/maildirfolder", home);
    assert_int_equal(access(dir, F_OK), 0);
}

/* MAILBOX TESTS */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deliver_two_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_from_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_folder, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
