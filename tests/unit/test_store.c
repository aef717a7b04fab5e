/*
 * test_store.c - unit tests of the store: delivery (multi-target, CRLF -> LF, sizes,
 * quota, fault injection, group commit of fsyncs and index rows), and the mailbox API (sync, flags, expunge, append, copy, move,
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
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <event2/event.h>
#include <pthread.h>
#include <unistd.h>

#include "test_tmpdir.h"
#include "test_store_util.h"

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
    store_index_open_hook = NULL;
    store_index_pool_flush();
    rm_rf(tmp_root, 0);
    return 0;
}

static void home_of(const char *user, char *out, size_t size)
{
    snprintf(out, size, "%s/mail/example.test/%s", tmp_root, user);
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

static const char msg_crlf[] = TEST_STORE_MSG_CRLF;
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
    /* mail and its index are private to the user */
    struct stat st;
    snprintf(dir, sizeof dir, "%s/index.db", home_a);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0077, 0);
    snprintf(dir, sizeof dir, "%s/Maildir/new", home_a);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0077, 0);

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

/* Every possible fsync or write failure point: -1, and nothing visible anywhere. */
static void test_deliver_faults(void **state)
{
    char home_a[512], home_b[512], dir[600];
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    for (int kind = 0; kind < 2; kind++) {
        int n_ok = 0;
        for (int k = 0; k < 40; k++) {
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
        /* the loop reached past the last I/O step */
        assert_true(n_ok >= 1);
    }
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

/* ---- mailbox API ------------------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static time_t clock_in_40_hours(void)
{
    return time(NULL) + 40 * 3600;
}

static void test_user_open_specials(void **state)
{
    char home[512], path[700];
    struct store_user *u = open_user("alice", home, sizeof home);
    struct store_mailbox_info *list = NULL;
    size_t n = 0;
    char *error = NULL;
    assert_int_equal(store_mailbox_list(u, &list, &n, &error), 0);
    assert_int_equal(n, 6);
    assert_string_equal(list[0].name, "INBOX");
    bool has_sent = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, "Sent") == 0) {
            has_sent = true;
            assert_string_equal(list[i].special_use, "\\Sent");
            assert_true(list[i].subscribed);
        }
    assert_true(has_sent);
    store_mailbox_info_free(list, n);
    snprintf(path, sizeof path, "%s/Maildir/.Trash/maildirfolder", home);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/Maildir/.Junk/cur", home);
    assert_int_equal(access(path, F_OK), 0);
    store_user_close(u);
    /* A file in tmp/ whose mtime is years old but which was just written is an APPEND
     * in progress (the mtime is its internal date, set before the rename): kept (issue 9:
     * a login's cleanup removed it under the APPEND). A fresh one is kept too. */
    snprintf(path, sizeof path, "%s/Maildir/tmp/old", home);
    write_file(path, "x");
    struct timespec old_ts[2] = {{1000000000, 0}, {1000000000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, old_ts, 0), 0);
    snprintf(path, sizeof path, "%s/Maildir/.Sent/tmp/fresh", home);
    write_file(path, "x");
    snprintf(path, sizeof path, "%s/Maildir/..deleted-x/cur", home);
    assert_int_equal(store_io_mkdir_p(path), 0);
    u = open_user("alice", home, sizeof home);
    snprintf(path, sizeof path, "%s/Maildir/tmp/old", home);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/Maildir/.Sent/tmp/fresh", home);
    assert_int_equal(access(path, F_OK), 0);
    /* a half-deleted folder is removed at once */
    snprintf(path, sizeof path, "%s/Maildir/..deleted-x", home);
    assert_int_not_equal(access(path, F_OK), 0);
    store_user_close(u);
    /* 40 hours later both tmp/ files are debris of a crash (Maildir: 36 hours) */
    store_clock_hook = clock_in_40_hours;
    u = open_user("alice", home, sizeof home);
    store_clock_hook = NULL;
    snprintf(path, sizeof path, "%s/Maildir/tmp/old", home);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/Maildir/.Sent/tmp/fresh", home);
    assert_int_not_equal(access(path, F_OK), 0);
    store_user_close(u);
    /* re-opening does not re-create a deleted special mailbox */
    u = open_user("alice", home, sizeof home);
    assert_int_equal(store_mailbox_delete(u, "Junk", &error), 0);
    store_user_close(u);
    u = open_user("alice", home, sizeof home);
    snprintf(path, sizeof path, "%s/Maildir/.Junk", home);
    assert_int_not_equal(access(path, F_OK), 0);
    store_user_close(u);
}

static void test_sync_external_changes(void **state)
{
    char home[512], path[1200];
    struct store_user *u = open_user("bob", home, sizeof home);
    deliver_n(home, 2);
    struct store_mailbox *box = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "inbox", false, &box, &error), 0);
    assert_int_equal(store_mailbox_count(box), 2);
    assert_true(store_mailbox_message(box, 0)->flags & STORE_FLAG_RECENT);
    assert_int_equal(store_mailbox_uidnext(box), 3);
    /* SELECT moved new/ to cur/ */
    snprintf(path, sizeof path, "%s/Maildir/new", home);
    assert_int_equal(count_files(path), 0);
    snprintf(path, sizeof path, "%s/Maildir/cur", home);
    assert_int_equal(count_files(path), 2);

    /* message content comes back with LF line ends */
    int fd = -1;
    assert_int_equal(store_message_open(box, 1, &fd, &error), 0);
    char buf[200] = "";
    assert_int_equal(read(fd, buf, sizeof buf - 1), (ssize_t)strlen(msg_lf));
    assert_string_equal(buf, msg_lf);
    close(fd);

    /* another program drops a file into new/ (no S=/W= in its name) */
    snprintf(path, sizeof path, "%s/Maildir/new/1700000000.external.host", home);
    write_file(path, "Subject: ext\n\nbody\n");
    /* and marks message 1 as seen by renaming it */
    const struct store_message *m0 = store_mailbox_message(box, 0);
    char from[1200], to[1200];
    snprintf(from, sizeof from, "%s/Maildir/cur/%s:2,", home, m0->filename);
    snprintf(to, sizeof to, "%s/Maildir/cur/%s:2,S", home, m0->filename);
    assert_int_equal(rename(from, to), 0);

    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_new, 1);
    assert_int_equal(ch.n_expunged, 0);
    assert_int_equal(ch.n_flag_changed, 1);
    assert_int_equal(ch.flag_changed[0], 0);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(box), 3);
    const struct store_message *m2 = store_mailbox_message(box, 2);
    assert_int_equal(m2->uid, 3);
    assert_int_equal(m2->size, 19);
    assert_int_equal(m2->vsize, 22);
    assert_true(m2->flags & STORE_FLAG_RECENT);
    assert_true(store_mailbox_message(box, 0)->flags & STORE_FLAG_SEEN);

    /* a second, read-only view does not steal \Recent, and sees the same UIDs */
    struct store_mailbox *ro = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", true, &ro, &error), 0);
    assert_int_equal(store_mailbox_count(ro), 3);
    assert_int_equal(store_mailbox_message(ro, 2)->uid, 3);
    assert_false(store_mailbox_message(ro, 2)->flags & STORE_FLAG_RECENT);
    store_mailbox_close(ro);
    /* EXAMINE shows unclaimed \Recent without taking it from the next SELECT */
    deliver_n(home, 1);
    assert_int_equal(store_mailbox_open(u, "INBOX", true, &ro, &error), 0);
    assert_true(store_mailbox_message(ro, 3)->flags & STORE_FLAG_RECENT);
    store_mailbox_close(ro);
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    store_sync_changes_free(&ch);
    assert_true(store_mailbox_message(box, 3)->flags & STORE_FLAG_RECENT);

    struct store_status st;
    assert_int_equal(store_mailbox_status(u, "INBOX", &st, &error), 0);
    assert_int_equal(st.messages, 4);
    assert_int_equal(st.unseen, 3);
    assert_int_equal(st.uidnext, 5);
    store_mailbox_close(box);
    store_user_close(u);
}

/* Folders whose mtime is old and unchanged are not re-read; any change to them is seen. */
static void test_sync_mtime_cache(void **state)
{
    char home[512], path[1200];
    struct store_user *u = open_user("nina", home, sizeof home);
    deliver_n(home, 2);
    struct store_mailbox *box = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    struct timespec old_ts[2] = {{1000000000, 0}, {1000000000, 0}};
    static const char *const subs[] = {"new", "cur"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/Maildir/%s", home, subs[i]);
        assert_int_equal(utimensat(AT_FDCWD, path, old_ts, 0), 0);
    }
    struct store_sync_changes ch;
    for (int round = 0; round < 2; round++) { /* records the old mtimes, then skips */
        assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
        assert_int_equal(ch.n_new + ch.n_expunged + ch.n_flag_changed, 0);
        store_sync_changes_free(&ch);
    }
    snprintf(path, sizeof path, "%s/Maildir/new/1700000002.ext.host", home);
    write_file(path, "x\n");
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_new, 1);
    store_sync_changes_free(&ch);
    /* an external expunge in cur/ */
    const struct store_message *m = store_mailbox_message(box, 0);
    snprintf(path, sizeof path, "%s/Maildir/cur/%s:2,", home, m->filename);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_expunged, 1);
    assert_int_equal(ch.expunged_seqs[0], 1);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(box), 2);
    store_mailbox_close(box);
    store_user_close(u);
}

/* Our own STORE/EXPUNGE/APPEND do not make the next sync re-read cur/ (issue 4), while
 * another program's change made after them is still seen. */
static void test_sync_own_changes(void **state)
{
    char home[512], path[1200], cur[600];
    struct store_user *u = open_user("olga", home, sizeof home);
    deliver_n(home, 3);
    struct store_mailbox *box = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    assert_int_equal(store_mailbox_count(box), 3);
    snprintf(cur, sizeof cur, "%s/Maildir/cur", home);
    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    assert_int_equal(store_message_set_flags(box, 0, 1, STORE_FLAG_SEEN, NULL, &error), 0);
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_new + ch.n_expunged + ch.n_flag_changed, 0);
    store_sync_changes_free(&ch);

    /* White box: a file slipped in under the mtime our own change left is not looked for
     * while that mtime is young (the skip works) ... */
    struct stat st;
    assert_int_equal(stat(cur, &st), 0);
    snprintf(path, sizeof path, "%s/1700000003.hidden.host:2,S", cur);
    write_file(path, "x\n");
    struct timespec keep[2] = {st.st_mtim, st.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, cur, keep, 0), 0);
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    struct timespec t1;
    clock_gettime(CLOCK_REALTIME, &t1);
    if (t1.tv_sec - t0.tv_sec < 2) /* else the mark aged and cur/ was rightly re-read */
        assert_int_equal(ch.n_new, 0);
    store_sync_changes_free(&ch);
    /* ... and any other mtime makes the next sync read it */
    struct timespec old_ts[2] = {{1000000000, 0}, {1000000000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, cur, old_ts, 0), 0);
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_new, 1);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(box), 4);

    /* own expunge, then (a timestamp tick later) another program renames flags in cur/ */
    uint32_t uid1 = store_mailbox_message(box, 0)->uid;
    assert_int_equal(store_mailbox_expunge_uids(box, &uid1, 1, &error), 0);
    struct timespec tick = {0, 20 * 1000 * 1000};
    nanosleep(&tick, NULL);
    const struct store_message *m = store_mailbox_message(box, 1);
    char from[1200], to[1200];
    snprintf(from, sizeof from, "%s/%s:2,", cur, m->filename);
    snprintf(to, sizeof to, "%s/%s:2,F", cur, m->filename);
    assert_int_equal(rename(from, to), 0);
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_expunged, 1);
    assert_int_equal(ch.n_flag_changed, 1);
    store_sync_changes_free(&ch);
    assert_true(store_mailbox_message(box, 0)->flags & STORE_FLAG_FLAGGED);

    /* own APPEND, then another program drops a file into cur/ */
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    uint32_t uidv = 0, auid = 0;
    assert_int_equal(store_mailbox_append(u, "INBOX", &src, 0, NULL, 0, &uidv, &auid, &error), 0);
    nanosleep(&tick, NULL);
    snprintf(path, sizeof path, "%s/1700000004.ext.host:2,", cur);
    write_file(path, "y\n");
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_new, 2);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(box), 5);
    store_mailbox_close(box);
    store_user_close(u);
}

static void test_expunge_numbering(void **state)
{
    char home[512];
    struct store_user *u = open_user("carol", home, sizeof home);
    deliver_n(home, 5);
    struct store_mailbox *a = NULL, *b = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &a, &error), 0);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &b, &error), 0);
    uint32_t uids[] = {2, 3, 5};
    assert_int_equal(store_mailbox_expunge_uids(b, uids, 3, &error), 0);
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(a, &ch, &error), 0);
    /* RFC 3501 §7.4.1: seqs as of the time each EXPUNGE is sent: 2, 2, 3 */
    assert_int_equal(ch.n_expunged, 3);
    assert_int_equal(ch.expunged_seqs[0], 2);
    assert_int_equal(ch.expunged_seqs[1], 2);
    assert_int_equal(ch.expunged_seqs[2], 3);
    assert_int_equal(ch.n_new, 0);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(a), 2);
    assert_int_equal(store_mailbox_message(a, 0)->uid, 1);
    assert_int_equal(store_mailbox_message(a, 1)->uid, 4);
    /* the expunging view itself learns of them at its next sync too */
    assert_int_equal(store_mailbox_count(b), 5);
    assert_int_equal(store_mailbox_sync(b, &ch, &error), 0);
    assert_int_equal(ch.n_expunged, 3);
    store_sync_changes_free(&ch);
    assert_int_equal(store_user_usage(home), 2 * (int64_t)strlen(msg_lf));
    store_mailbox_close(a);
    store_mailbox_close(b);
    store_user_close(u);
}

static void test_uid_never_reused(void **state)
{
    char home[512], path[1200];
    struct store_user *u = open_user("dave", home, sizeof home);
    deliver_n(home, 3);
    struct store_mailbox *box = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    uint32_t uid3 = 3;
    assert_int_equal(store_mailbox_expunge_uids(box, &uid3, 1, &error), 0);
    /* a file removed behind our back, too */
    const struct store_message *m1 = store_mailbox_message(box, 1);
    snprintf(path, sizeof path, "%s/Maildir/cur/%s:2,", home, m1->filename);
    assert_int_equal(unlink(path), 0);
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    assert_int_equal(ch.n_expunged, 2);
    store_sync_changes_free(&ch);
    store_mailbox_close(box);
    store_user_close(u);
    /* re-open, drop a new file: it gets UID 4, never 2 or 3 */
    u = open_user("dave", home, sizeof home);
    snprintf(path, sizeof path, "%s/Maildir/cur/1700000001.ext.host:2,S", home);
    write_file(path, "a\n");
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    assert_int_equal(store_mailbox_count(box), 2);
    assert_int_equal(store_mailbox_message(box, 1)->uid, 4);
    assert_true(store_mailbox_message(box, 1)->flags & STORE_FLAG_SEEN);
    store_mailbox_close(box);
    deliver_n(home, 1);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    assert_int_equal(store_mailbox_message(box, 2)->uid, 5);
    store_mailbox_close(box);
    store_user_close(u);
}

/* Two views of one mailbox: a flag change made through a view that has not synced since
 * another view's change builds on the index's current flags (no lost update), and
 * UNCHANGEDSINCE compares with the current modseq, not with the stale view's. */
static void test_set_flags_stale_view(void **state)
{
    (void)state;
    char home[512], path[1200];
    struct store_user *u = open_user("stale", home, sizeof home);
    deliver_n(home, 1);
    struct store_mailbox *a = NULL, *b = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &a, &error), 0);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &b, &error), 0);
    uint64_t seen_by_b = store_mailbox_message(b, 0)->modseq;
    const char *kw_a[] = {"$Label1", NULL}, *kw_b[] = {"$Label2", NULL};
    assert_int_equal(store_message_set_flags(a, 0, 1, STORE_FLAG_FLAGGED, kw_a, &error), 0);
    /* b has not synced: its view still says no flags */
    assert_int_equal(
        store_message_store_flags(b, 0, 1, STORE_FLAG_ANSWERED, NULL, seen_by_b, &error), 1);
    assert_int_equal(store_message_set_flags(b, 0, 1, STORE_FLAG_SEEN, kw_b, &error), 0);
    const struct store_message *m = store_mailbox_message(b, 0);
    assert_int_equal(m->flags & ~(unsigned)STORE_FLAG_RECENT, STORE_FLAG_SEEN | STORE_FLAG_FLAGGED);
    assert_non_null(m->keywords);
    assert_string_equal(m->keywords[0], "$Label1");
    assert_non_null(m->keywords[1]);
    assert_string_equal(m->keywords[1], "$Label2");
    snprintf(path, sizeof path, "%s/Maildir/cur/%s:2,FS", home, m->filename);
    assert_int_equal(access(path, F_OK), 0);
    /* with the current modseq the conditional store goes through */
    assert_int_equal(
        store_message_store_flags(b, 0, -1, STORE_FLAG_FLAGGED, NULL, m->modseq, &error), 0);
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(a, &ch, &error), 0);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_message(a, 0)->flags & ~(unsigned)STORE_FLAG_RECENT,
                     STORE_FLAG_SEEN);
    store_mailbox_close(a);
    store_mailbox_close(b);
    store_user_close(u);
    free(error);
}

static void test_set_flags(void **state)
{
    char home[512], path[1200];
    struct store_user *u = open_user("erin", home, sizeof home);
    deliver_n(home, 1);
    struct store_mailbox *box = NULL, *other = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &other, &error), 0);
    uint64_t ms0 = store_mailbox_message(box, 0)->modseq;
    const char *kw[] = {"$Junk", NULL};
    assert_int_equal(
        store_message_set_flags(box, 0, 1, STORE_FLAG_SEEN | STORE_FLAG_FLAGGED, kw, &error), 0);
    const struct store_message *m = store_mailbox_message(box, 0);
    assert_true(m->modseq > ms0);
    assert_int_equal(m->flags & ~(unsigned)STORE_FLAG_RECENT, STORE_FLAG_SEEN | STORE_FLAG_FLAGGED);
    assert_string_equal(m->keywords[0], "$Junk");
    snprintf(path, sizeof path, "%s/Maildir/cur/%s:2,FS", home, m->filename);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(store_message_set_flags(box, 0, -1, STORE_FLAG_SEEN, NULL, &error), 0);
    snprintf(path, sizeof path, "%s/Maildir/cur/%s:2,F", home, m->filename);
    assert_int_equal(access(path, F_OK), 0);
    /* the other view sees the change as a flag change */
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(other, &ch, &error), 0);
    assert_int_equal(ch.n_flag_changed, 1);
    store_sync_changes_free(&ch);
    const struct store_message *om = store_mailbox_message(other, 0);
    assert_int_equal(om->flags & ~(unsigned)STORE_FLAG_RECENT, STORE_FLAG_FLAGGED);
    assert_non_null(om->keywords);
    assert_string_equal(om->keywords[0], "$Junk");
    /* and can still open the renamed file */
    int fd = -1;
    assert_int_equal(store_message_open(other, 0, &fd, &error), 0);
    close(fd);
    /* a client cannot pile up keywords without bound */
    char kwbuf[80][16];
    const char *many[81];
    for (int k = 0; k < 80; k++) {
        snprintf(kwbuf[k], sizeof kwbuf[k], "kw%d", k);
        many[k] = kwbuf[k];
    }
    many[80] = NULL;
    assert_int_equal(store_message_set_flags(box, 0, 1, 0, many, &error), -1);
    free(error);
    error = NULL;
    /* cache */
    assert_null(store_message_get_cache(box, 0, "envelope"));
    assert_int_equal(store_message_set_cache(box, 0, "envelope", "(NIL)"), 0);
    assert_int_equal(store_message_set_cache(box, 0, "body", "(B)"), 0);
    char *v = store_message_get_cache(other, 0, "envelope");
    assert_string_equal(v, "(NIL)");
    free(v);
    v = store_message_get_cache(other, 0, "body");
    assert_string_equal(v, "(B)");
    free(v);
    store_mailbox_close(box);
    store_mailbox_close(other);
    store_user_close(u);
}

static void test_append_copy_move(void **state)
{
    char home[512], path[1200];
    struct store_user *u = open_user("fred", home, sizeof home);
    deliver_n(home, 2);
    char *error = NULL;
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    uint32_t uidv = 0, uid = 0;
    assert_int_equal(store_mailbox_append(u, "Sent", &src, STORE_FLAG_SEEN, NULL, 1600000000, &uidv,
                                          &uid, &error),
                     0);
    assert_int_equal(uid, 1);
    assert_int_not_equal(uidv, 0);
    assert_int_equal(store_mailbox_append(u, "Sent", &src, 0, NULL, 0, &uidv, &uid, &error), 0);
    assert_int_equal(uid, 2);
    assert_int_equal(store_mailbox_append(u, "Nope", &src, 0, NULL, 0, &uidv, &uid, &error), -1);
    assert_non_null(strstr(error, "TRYCREATE"));
    free(error);
    error = NULL;
    struct store_mailbox *sent = NULL;
    assert_int_equal(store_mailbox_open(u, "Sent", false, &sent, &error), 0);
    const struct store_message *m = store_mailbox_message(sent, 0);
    assert_int_equal(m->internaldate, 1600000000);
    assert_int_equal(m->vsize, strlen(msg_crlf));
    snprintf(path, sizeof path, "%s/Maildir/.Sent/cur/%s:2,S", home, m->filename);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mtime, 1600000000);
    store_mailbox_close(sent);

    struct store_mailbox *inbox = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &inbox, &error), 0);
    uint32_t uids[] = {1, 2, 99};
    uint32_t *dest = NULL;
    assert_int_equal(
        store_mailbox_copy_uids(inbox, uids, 3, "Archive", false, &uidv, &dest, &error), 0);
    assert_int_equal(dest[0], 1);
    assert_int_equal(dest[1], 2);
    assert_int_equal(dest[2], 0);
    free(dest);
    assert_int_equal(store_mailbox_copy_uids(inbox, uids, 2, "Archive", true, &uidv, &dest, &error),
                     0);
    assert_int_equal(dest[0], 3);
    assert_int_equal(dest[1], 4);
    free(dest);
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(inbox, &ch, &error), 0);
    assert_int_equal(ch.n_expunged, 2);
    store_sync_changes_free(&ch);
    assert_int_equal(store_mailbox_count(inbox), 0);
    store_mailbox_close(inbox);
    struct store_status s;
    assert_int_equal(store_mailbox_status(u, "Archive", &s, &error), 0);
    assert_int_equal(s.messages, 4);
    assert_int_equal(s.uidnext, 5);
    store_user_close(u);
}

static void test_rename_inbox(void **state)
{
    char home[512];
    struct store_user *u = open_user("gina", home, sizeof home);
    deliver_n(home, 2);
    char *error = NULL;
    assert_int_equal(store_mailbox_rename(u, "INBOX", "Old", &error), 0);
    struct store_status s;
    assert_int_equal(store_mailbox_status(u, "INBOX", &s, &error), 0);
    assert_int_equal(s.messages, 0);
    assert_int_equal(s.uidnext, 3);
    assert_int_equal(store_mailbox_status(u, "Old", &s, &error), 0);
    assert_int_equal(s.messages, 2);
    struct store_mailbox *box = NULL;
    assert_int_equal(store_mailbox_open(u, "Old", false, &box, &error), 0);
    assert_int_equal(store_mailbox_message(box, 1)->uid, 2);
    int fd = -1;
    assert_int_equal(store_message_open(box, 1, &fd, &error), 0);
    close(fd);
    store_mailbox_close(box);
    deliver_n(home, 1);
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    assert_int_equal(store_mailbox_count(box), 1);
    assert_int_equal(store_mailbox_message(box, 0)->uid, 3);
    store_mailbox_close(box);
    store_user_close(u);
}

static void test_mailbox_tree(void **state)
{
    char home[512], path[1200];
    struct store_user *u = open_user("hank", home, sizeof home);
    char *error = NULL;
    assert_int_equal(store_mailbox_create(u, "Work/Projects", &error), 0);
    assert_int_equal(store_mailbox_create(u, "Work/Projects", &error), -1);
    free(error);
    error = NULL;
    assert_int_equal(store_mailbox_create(u, "inbox", &error), -1);
    free(error);
    error = NULL;
    assert_int_equal(store_mailbox_create(u, "bad.name", &error), -1);
    free(error);
    error = NULL;
    snprintf(path, sizeof path, "%s/Maildir/.Work.Projects/maildirfolder", home);
    assert_int_equal(access(path, F_OK), 0);
    struct store_mailbox_info *list = NULL;
    size_t n = 0;
    assert_int_equal(store_mailbox_list(u, &list, &n, &error), 0);
    bool has_work = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, "Work") == 0) {
            has_work = true;
            assert_true(list[i].noselect);
            assert_true(list[i].has_children);
        }
    assert_true(has_work);
    store_mailbox_info_free(list, n);
    /* deliver into it, rename it with its UIDs */
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    struct store_target t = {.user = "hank@example.test", .home = home, .mailbox = "Work/Projects"};
    assert_int_equal(store_deliver(&src, &t, 1, &error), 0);
    assert_int_equal(store_mailbox_create(u, "Work/Projects/Sub", &error), 0);
    assert_int_equal(store_mailbox_rename(u, "Work/Projects", "Done", &error), 0);
    snprintf(path, sizeof path, "%s/Maildir/.Done.Sub/cur", home);
    assert_int_equal(access(path, F_OK), 0);
    struct store_status s;
    assert_int_equal(store_mailbox_status(u, "Done", &s, &error), 0);
    assert_int_equal(s.messages, 1);
    struct store_mailbox *box = NULL;
    assert_int_equal(store_mailbox_open(u, "Done", true, &box, &error), 0);
    assert_int_equal(store_mailbox_message(box, 0)->uid, t.uid); /* kept its UID */
    store_mailbox_close(box);
    assert_int_equal(store_mailbox_status(u, "Done/Sub", &s, &error), 0);
    assert_int_equal(store_mailbox_status(u, "Work/Projects", &s, &error), -1);
    free(error);
    error = NULL;
    assert_int_equal(store_mailbox_subscribe(u, "Done", true, &error), 0);
    assert_int_equal(store_mailbox_delete(u, "INBOX", &error), -1);
    free(error);
    error = NULL;
    uint32_t uv1 = 0;
    assert_int_equal(store_mailbox_status(u, "Done", &s, &error), 0);
    uv1 = s.uidvalidity;
    assert_int_equal(store_mailbox_delete(u, "Done", &error), 0);
    assert_int_equal(store_mailbox_create(u, "Done", &error), 0);
    assert_int_equal(store_mailbox_status(u, "Done", &s, &error), 0);
    assert_int_equal(s.messages, 0);
    assert_true(s.uidvalidity > uv1); /* never reused */
    assert_true(store_user_usage(home) == 0);
    store_user_close(u);
}

static void test_pop3_lock(void **state)
{
    char home[512];
    struct store_user *a = open_user("ivan", home, sizeof home);
    struct store_user *b = open_user("ivan", home, sizeof home);
    assert_int_equal(store_pop3_lock(a), 0);
    assert_int_equal(store_pop3_lock(b), 1);
    store_pop3_unlock(a);
    assert_int_equal(store_pop3_lock(b), 0);
    store_user_close(b); /* closing releases */
    assert_int_equal(store_pop3_lock(a), 0);
    store_user_close(a);
}

/* Many threads delivering to one user while a view syncs: every message indexed once,
 * UIDs unique and dense. */
#define CONC_THREADS    8
#define CONC_PER_THREAD 40
static char conc_home[512];
static void *conc_deliver(void *arg)
{
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    for (int i = 0; i < CONC_PER_THREAD; i++) {
        struct store_target t = {.user = "kim@example.test", .home = conc_home};
        if (store_deliver(&src, &t, 1, NULL) != 0 || t.uid == 0)
            return (void *)1;
    }
    return NULL;
}

static void test_concurrent_delivery(void **state)
{
    struct store_user *u = open_user("kim", conc_home, sizeof conc_home);
    struct store_mailbox *box = NULL;
    char *error = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    pthread_t th[CONC_THREADS];
    for (int i = 0; i < CONC_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, conc_deliver, NULL), 0);
    size_t seen_new = 0;
    for (int k = 0; k < 20; k++) {
        struct store_sync_changes ch;
        assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
        seen_new += ch.n_new;
        store_sync_changes_free(&ch);
    }
    for (int i = 0; i < CONC_THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    struct store_sync_changes ch;
    assert_int_equal(store_mailbox_sync(box, &ch, &error), 0);
    seen_new += ch.n_new;
    store_sync_changes_free(&ch);
    size_t total = CONC_THREADS * CONC_PER_THREAD;
    assert_int_equal(seen_new, total);
    assert_int_equal(store_mailbox_count(box), total);
    for (size_t i = 0; i < total; i++)
        assert_int_equal(store_mailbox_message(box, i)->uid, i + 1);
    assert_int_equal(store_mailbox_uidnext(box), total + 1);
    store_mailbox_close(box);
    store_user_close(u);
}

/* ---- group commit: deliveries at the same moment share fsyncs and index commits ---- */

#define GC_THREADS 8
static char gc_home[512];
static atomic_int gc_file_syncs, gc_dir_syncs, gc_dir_failures_left;
static atomic_ulong gc_commits;

/* fsync hook: counts file and directory fsyncs; a directory fsync waits (bounded) until
 * every thread has written its file, as a slow disk flush would, so that the others
 * renamed meanwhile and can share the next one. gc_dir_failures_left fail with EIO. */
static int gc_fsync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        atomic_fetch_add(&gc_dir_syncs, 1);
        for (int i = 0; i < 5000 && atomic_load(&gc_file_syncs) < GC_THREADS; i++)
            usleep(1000);
        usleep(50 * 1000);
        if (atomic_fetch_sub(&gc_dir_failures_left, 1) > 0) {
            errno = EIO;
            return -1;
        }
    } else {
        atomic_fetch_add(&gc_file_syncs, 1);
    }
    return fsync(fd);
}

static int gc_count_commit(unsigned type, void *ctx, void *p, void *x)
{
    (void)type, (void)ctx, (void)x;
    const char *sql = sqlite3_sql((sqlite3_stmt *)p);
    if (sql && strncmp(sql, "COMMIT", 6) == 0) {
        atomic_fetch_add(&gc_commits, 1);
        usleep(30 * 1000); /* a slow commit: the deliveries arriving meanwhile queue up */
    }
    return 0;
}

static void gc_trace(sqlite3 *db)
{
    sqlite3_trace_v2(db, SQLITE_TRACE_STMT, gc_count_commit, NULL);
}

static void *gc_deliver(void *arg)
{
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    struct store_target *t = arg;
    char *error = NULL;
    int r = store_deliver(&src, t, 1, &error);
    free(error);
    return r == 0 ? NULL : (void *)1;
}

/* Run GC_THREADS deliveries to one user at once; how many failed. */
static int gc_run(struct store_target *t)
{
    atomic_store(&gc_file_syncs, 0);
    atomic_store(&gc_dir_syncs, 0);
    atomic_store(&gc_commits, 0);
    store_io_fsync_hook = gc_fsync;
    pthread_t th[GC_THREADS];
    for (int i = 0; i < GC_THREADS; i++) {
        t[i] = (struct store_target){.user = "gc@example.test", .home = gc_home};
        assert_int_equal(pthread_create(&th[i], NULL, gc_deliver, &t[i]), 0);
    }
    int n_failed = 0;
    for (int i = 0; i < GC_THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        n_failed += ret != NULL;
    }
    store_io_fsync_hook = NULL;
    return n_failed;
}

/* Deliveries that rename into new/ while its fsync runs are covered by one next fsync
 * (not one each), and their index rows share transactions; every message still gets its
 * own UID, and a failed directory fsync fails every delivery it covered. */
static void test_deliver_group_commit(void **state)
{
    home_of("gc", gc_home, sizeof gc_home);
    store_index_pool_flush(); /* every connection from here on is traced */
    store_index_open_hook = gc_trace;
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    struct store_target first = {.user = "gc@example.test", .home = gc_home};
    assert_int_equal(store_deliver(&src, &first, 1, NULL), 0); /* folder and index made */
    assert_int_equal(first.uid, 1);

    struct store_target t[GC_THREADS];
    atomic_store(&gc_dir_failures_left, 0);
    assert_int_equal(gc_run(t), 0);
    print_message("%d deliveries at once: %d directory fsyncs, %lu index commits\n", GC_THREADS,
                  atomic_load(&gc_dir_syncs), (unsigned long)atomic_load(&gc_commits));
    assert_int_equal(atomic_load(&gc_file_syncs), GC_THREADS); /* each file its own */
    assert_true(atomic_load(&gc_dir_syncs) < GC_THREADS);     /* one each before */
    assert_true(atomic_load(&gc_commits) < GC_THREADS);
    bool seen[GC_THREADS + 2] = {false};
    for (int i = 0; i < GC_THREADS; i++) {
        assert_true(t[i].uid >= 2 && t[i].uid <= GC_THREADS + 1);
        assert_false(seen[t[i].uid]);
        seen[t[i].uid] = true;
    }
    char dir[600];
    snprintf(dir, sizeof dir, "%s/Maildir/new", gc_home);
    assert_int_equal(count_files(dir), GC_THREADS + 1);

    /* the first directory fsync fails: the deliveries it covered fail and leave nothing
     * in new/; the ones that waited for a later fsync may succeed; none is lost */
    atomic_store(&gc_dir_failures_left, 1);
    int n_failed = gc_run(t);
    assert_true(n_failed >= 1);
    assert_int_equal(count_files(dir), GC_THREADS + 1 + (GC_THREADS - n_failed));
    for (int i = 0; i < GC_THREADS; i++)
        assert_int_equal(t[i].status != STORE_OK, t[i].uid == 0);
    store_index_open_hook = NULL;
}

static int notified;
static void on_notify(const char *user, const char *mailbox, void *arg)
{
    notified++;
}

/* Subscriptions a callback changes while their event is dispatched (IMAP sessions that
 * close, or log in, on a wake-up). */
static void *churn_victim, *churn_added;
static int churn_calls[3];

static void on_churn(const char *user, const char *mailbox, void *arg)
{
    (void)user, (void)mailbox;
    int k = (int)(intptr_t)arg;
    churn_calls[k]++;
    if (k == 0 && churn_victim) {
        store_notify_unsubscribe(churn_victim); /* another one of the same user */
        churn_victim = NULL;
        churn_added = store_notify_subscribe("churn@example.test", on_churn, (void *)2);
        assert_non_null(churn_added);
    }
}

static void test_notify_churn(void **state)
{
    (void)state;
    /* many users, so that buckets are shared: only the user's own are called */
    void *others[300];
    char name[64];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "other%d@example.test", i);
        others[i] = store_notify_subscribe(name, on_churn, (void *)2);
        assert_non_null(others[i]);
    }
    churn_victim = store_notify_subscribe("Churn@Example.test", on_churn, (void *)1);
    void *first = store_notify_subscribe("churn@example.test", on_churn, (void *)0);
    memset(churn_calls, 0, sizeof churn_calls);
    store_notify_publish("CHURN@example.test", "INBOX");
    /* first (newest, visited first) removed the victim before its turn and added one
     * that this dispatch does not visit */
    assert_int_equal(churn_calls[0], 1);
    assert_int_equal(churn_calls[1], 0);
    assert_int_equal(churn_calls[2], 0);
    store_notify_publish("churn@example.test", "INBOX");
    assert_int_equal(churn_calls[0], 2);
    assert_int_equal(churn_calls[2], 1); /* the one added during the first dispatch */
    store_notify_unsubscribe(first);
    store_notify_unsubscribe(churn_added);
    for (int i = 0; i < 300; i++)
        store_notify_unsubscribe(others[i]);
    memset(churn_calls, 0, sizeof churn_calls);
    store_notify_publish("other7@example.test", "INBOX");
    assert_int_equal(churn_calls[2], 0);
}

static void test_notify(void **state)
{
    void *sub = store_notify_subscribe("jo@example.test", on_notify, NULL);
    assert_non_null(sub);
    notified = 0;
    store_notify_publish("JO@example.test", "INBOX");
    store_notify_publish("other@example.test", "INBOX");
    assert_int_equal(notified, 1);
    /* a delivery on this (loop) thread publishes at once */
    char home[512];
    home_of("jo", home, sizeof home);
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    struct store_target t = {.user = "jo@example.test", .home = home};
    assert_int_equal(store_deliver(&src, &t, 1, NULL), 0);
    assert_int_equal(notified, 2);
    store_notify_unsubscribe(sub);
    store_notify_publish("jo@example.test", "INBOX");
    assert_int_equal(notified, 2);
}

/* A delivery on a worker thread wakes the loop through store_notify_init's pipe. */
static void *notify_worker(void *arg)
{
    struct store_source src = {.data = msg_crlf, .len = strlen(msg_crlf), .fd = -1};
    struct store_target t = {.user = "lu@example.test", .home = arg};
    return store_deliver(&src, &t, 1, NULL) == 0 ? NULL : (void *)1;
}

static void test_notify_cross_thread(void **state)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    assert_int_equal(store_notify_init(base), 0);
    void *sub = store_notify_subscribe("lu@example.test", on_notify, NULL);
    notified = 0;
    char home[512];
    home_of("lu", home, sizeof home);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, notify_worker, home), 0);
    void *ret;
    pthread_join(th, &ret);
    assert_null(ret);
    assert_int_equal(notified, 0); /* not on the worker thread */
    for (int i = 0; i < 100 && notified == 0; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(notified, 1);
    store_notify_unsubscribe(sub);
    store_notify_init(NULL);
    event_base_free(base);
}

/* Descriptors of this process open on some index.db (or its -wal). */
static int count_index_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char link[300], target[4200];
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (strstr(target, "/index.db"))
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

/* store_user_idle gives the connection back: handles of one user share one pooled
 * connection between calls, and an idle handle works again on its next call. */
static void test_user_idle_shares_connection(void **state)
{
    (void)state;
    char home[512];
    home_of("sharer", home, sizeof home);
    struct store_user *a = NULL, *b = NULL;
    char *err = NULL;
    assert_int_equal(store_user_open(home, "sharer@example.test", &a, &err), 0);
    int held = count_index_fds(); /* a's connection: db + wal */
    assert_true(held >= 1);
    store_user_idle(a);
    assert_int_equal(store_user_open(home, "sharer@example.test", &b, &err), 0);
    assert_int_equal(count_index_fds(), held); /* b took a's pooled connection */
    store_user_idle(b);
    assert_int_equal(count_index_fds(), held); /* pooled, not closed, not doubled */
    /* both idle handles still work (each takes the pooled connection in turn) */
    assert_int_equal(store_mailbox_create(a, "Lists", &err), 0);
    store_user_idle(a);
    struct store_status st;
    assert_int_equal(store_mailbox_status(b, "Lists", &st, &err), 0);
    assert_int_equal(st.messages, 0);
    store_user_idle(b);
    assert_int_equal(count_index_fds(), held);
    store_user_close(a);
    store_user_close(b);
    store_index_pool_flush();
    assert_int_equal(count_index_fds(), 0);
    free(err);
}

/* An index of schema version 1 (no usage table) is upgraded with the right usage. */
static void test_index_migration(void **state)
{
    char home[512], path[600];
    home_of("mig", home, sizeof home);
    deliver_n(home, 2);
    store_index_pool_flush();
    snprintf(path, sizeof path, "%s/index.db", home);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "DROP TRIGGER usage_add; DROP TRIGGER usage_del;"
                                  " DROP TABLE usage; PRAGMA user_version = 1;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_user_usage(home), 2 * (int64_t)strlen(msg_lf));
    deliver_n(home, 1);
    assert_int_equal(store_user_usage(home), 3 * (int64_t)strlen(msg_lf));
}

/* kill -9 in the middle of deliveries: every visible file is whole (its S= matches), the
 * next open indexes each exactly once, and UIDs stay unique. */
static void test_kill9_during_delivery(void **state)
{
    char home[512], dir[700];
    home_of("oscar", home, sizeof home);
    snprintf(dir, sizeof dir, "%s/Maildir/new", home);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static char big[300000];
        memset(big, 'x', sizeof big);
        for (size_t i = 79; i < sizeof big; i += 80)
            big[i] = '\n';
        struct store_source src = {.data = big, .len = sizeof big, .fd = -1};
        for (int i = 0; i < 100000; i++) {
            struct store_target t = {.user = "oscar@example.test", .home = home};
            store_deliver(&src, &t, 1, NULL);
        }
        _exit(0);
    }
    /* wait (bounded) until some deliveries are visible, then kill without warning */
    for (int i = 0; i < 20000 && count_files(dir) < 20; i++)
        usleep(1000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    size_t n_files = count_files(dir);
    assert_true(n_files >= 20);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        uint64_t size = 0;
        assert_true(store_maildir_name_size(de->d_name, 'S', &size));
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal((uint64_t)st.st_size, size);
    }
    closedir(d);
    char *error = NULL;
    struct store_user *u = NULL;
    assert_int_equal(store_user_open(home, "oscar@example.test", &u, &error), 0);
    struct store_mailbox *box = NULL;
    assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
    assert_int_equal(store_mailbox_count(box), n_files);
    for (size_t i = 1; i < n_files; i++)
        assert_true(store_mailbox_message(box, i)->uid > store_mailbox_message(box, i - 1)->uid);
    store_mailbox_close(box);
    store_user_close(u);
}

/* Several processes open a new user's store at the same moment (with one master and
 * several workers: logins in two workers and a delivery in the queue process). The first
 * switches the index to WAL and creates its schema; before issue 10's fix the others
 * could fail with "database is locked" or "disk I/O error" (3 of 600 opens here). */
static void test_user_open_racing_processes(void **state)
{
    (void)state;
    store_index_pool_flush();
    int fails = 0;
    for (int round = 0; round < 30; round++) {
        char home[512];
        snprintf(home, sizeof home, "%s/race%d", tmp_root, round);
        pid_t kids[6];
        for (int k = 0; k < 6; k++) {
            kids[k] = fork();
            if (kids[k] == 0) {
                struct store_user *u = NULL;
                char *err = NULL;
                _exit(store_user_open(home, "race@example.test", &u, &err) == 0 ? 0 : 1);
            }
        }
        for (int k = 0; k < 6; k++) {
            int st = 0;
            waitpid(kids[k], &st, 0);
            fails += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        }
    }
    assert_int_equal(fails, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_user_open_racing_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_two_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_from_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_open_specials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_external_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_mtime_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_own_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expunge_numbering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uid_never_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_copy_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_inbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pop3_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_churn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_cross_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_idle_shares_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_flags_stale_view, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_delivery, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
