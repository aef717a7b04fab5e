/*
 * test_store_util.h - helpers shared by the store unit tests (test_store*.c): count a
 * folder's files, open a user below tmp_root, deliver sample messages, and the write/fsync
 * fault hooks for the "every failure point" tests. Header-only (static inline); include
 * after cmocka.h, store-private.h and test_tmpdir.h.
 */
#ifndef TERN_TEST_STORE_UTIL_H
#define TERN_TEST_STORE_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The sample message deliver_n stores (CRLF, as SMTP hands it over). */
#define TEST_STORE_MSG_CRLF "Subject: hi\r\n\r\nline one\r\nline two\r\n"

/* Number of regular entries in a directory (0 if absent). */
static inline size_t count_files(const char *dir)
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

/* Open <name>@example.test with its home below tmp_root (home gets the path). */
static inline struct store_user *open_user(const char *name, char *home, size_t size)
{
    snprintf(home, size, "%s/mail/example.test/%s", tmp_root, name);
    struct store_user *u = NULL;
    char *error = NULL;
    char user[128];
    snprintf(user, sizeof user, "%s@example.test", name);
    assert_int_equal(store_user_open(home, user, &u, &error), 0);
    assert_non_null(u);
    return u;
}

/* Deliver n copies of TEST_STORE_MSG_CRLF to the INBOX at home. */
static inline void deliver_n(const char *home, size_t n)
{
    static const char msg[] = TEST_STORE_MSG_CRLF;
    struct store_source src = {.data = msg, .len = sizeof msg - 1, .fd = -1};
    for (size_t i = 0; i < n; i++) {
        struct store_target t = {.user = "x@example.test", .home = home};
        assert_int_equal(store_deliver(&src, &t, 1, NULL), 0);
    }
}

/* Fault hooks: the call after fail_after more calls fails (EIO / ENOSPC). */
static int fail_after;

static inline int fault_fsync(int fd)
{
    if (fail_after-- <= 0) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static inline ssize_t fault_write(int fd, const void *p, size_t n)
{
    if (fail_after-- <= 0) {
        errno = ENOSPC;
        return -1;
    }
    return write(fd, p, n);
}

#endif
