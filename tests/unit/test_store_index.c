/*
 * test_store_index.c - the store's index internals: the prepared-statement cache (stmt.c)
 * and the first index build of a large folder (sync.c). The store's behaviour as IMAP and
 * POP3 see it is tested in test_store.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "store/store-private.h"
#include "store/store.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_tmpdir.h"

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tern-test-store-index-XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_index_pool_flush();
    rm_rf(tmp_root, 0);
    return 0;
}

static size_t count_stmts(sqlite3 *db)
{
    size_t n = 0;
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st; st = sqlite3_next_stmt(db, st))
        n++;
    return n;
}

static uint32_t uidnext_of(sqlite3 *db)
{
    struct store_mbox_row row;
    char *error = NULL;
    assert_int_equal(store_index_mailbox_get(db, "INBOX", &row, &error), 0);
    return row.uidnext;
}

static const char get_sql[] = "SELECT id, uidvalidity, uidnext, highestmodseq, first_recent_uid,"
                              " cur_mtime, new_mtime FROM mailboxes WHERE name = ?";

/* A cached statement is reused, and reusing it shows another connection's commits: it was
 * reset, so it holds no old snapshot and no WAL reader mark. The held-statement control
 * shows the test would notice one that was not reset. */
static void test_stmt_cache_fresh_after_reuse(void **state)
{
    (void)state;
    char *error = NULL;
    sqlite3 *db1 = store_index_open(tmp_root, &error);
    sqlite3 *db2 = store_index_open(tmp_root, &error);
    assert_non_null(db1);
    assert_non_null(db2);
    sqlite3_busy_handler(db2, NULL, NULL); /* a blocked checkpoint answers BUSY at once */
    struct store_mbox_row row;
    assert_int_equal(store_index_mailbox_ensure(db1, tmp_root, "INBOX", &row, &error), 0);

    assert_int_equal(uidnext_of(db1), 1);
    size_t n_stmts = count_stmts(db1);
    assert_int_equal(uidnext_of(db1), 1);
    assert_int_equal(count_stmts(db1), n_stmts); /* reused, not prepared again */

    assert_int_equal(store_index_exec(db2, "UPDATE mailboxes SET uidnext = 42", &error), 0);
    assert_int_equal(uidnext_of(db1), 42); /* the reused statement reads the new state */
    int n_log = -1, n_ckpt = -1;
    assert_int_equal(
        sqlite3_wal_checkpoint_v2(db2, NULL, SQLITE_CHECKPOINT_TRUNCATE, &n_log, &n_ckpt),
        SQLITE_OK);

    /* control: a statement stepped and not given back keeps db1 on an old snapshot */
    sqlite3_stmt *held = NULL;
    assert_int_equal(store_index_prepare(db1, get_sql, &held), SQLITE_OK);
    sqlite3_bind_text(held, 1, "INBOX", -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(held), SQLITE_ROW);
    assert_int_equal(store_index_exec(db2, "UPDATE mailboxes SET uidnext = 43", &error), 0);
    assert_int_equal(uidnext_of(db1), 42); /* stale: the read transaction is still open */
    assert_int_equal(
        sqlite3_wal_checkpoint_v2(db2, NULL, SQLITE_CHECKPOINT_TRUNCATE, &n_log, &n_ckpt),
        SQLITE_BUSY);
    store_index_done(held);
    assert_int_equal(uidnext_of(db1), 43);
    assert_int_equal(
        sqlite3_wal_checkpoint_v2(db2, NULL, SQLITE_CHECKPOINT_TRUNCATE, &n_log, &n_ckpt),
        SQLITE_OK);

    store_index_close(db1); /* with its cached statements (LeakSanitizer checks) */
    store_index_close(db2);
}

/* A statement handed out and not stepped yet (or stepped to its end) is not "busy" to
 * SQLite, yet must not be handed to a second user until given back. */
static void test_stmt_cache_nested_same_text(void **state)
{
    (void)state;
    char *error = NULL;
    sqlite3 *db = store_index_open(tmp_root, &error);
    assert_non_null(db);
    sqlite3_stmt *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(store_index_prepare(db, get_sql, &a), SQLITE_OK);
    assert_int_equal(store_index_prepare(db, get_sql, &b), SQLITE_OK);
    assert_ptr_not_equal(a, b);
    sqlite3_bind_text(a, 1, "INBOX", -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(a), SQLITE_DONE); /* no row yet: done, not busy */
    assert_int_equal(store_index_prepare(db, get_sql, &c), SQLITE_OK);
    assert_ptr_not_equal(c, a);
    assert_ptr_not_equal(c, b);
    store_index_done(b);
    sqlite3_stmt *d = NULL;
    assert_int_equal(store_index_prepare(db, get_sql, &d), SQLITE_OK);
    assert_ptr_equal(d, b); /* given back: handed out again */
    store_index_done(a);
    store_index_done(c);
    store_index_done(d);
    store_index_done(NULL);
    /* bad SQL is an error, not a cached statement */
    sqlite3_stmt *bad = NULL;
    size_t n = count_stmts(db);
    assert_int_not_equal(store_index_prepare(db, "SELEC nothing", &bad), SQLITE_OK);
    assert_null(bad);
    assert_int_equal(count_stmts(db), n);
    store_index_close(db);
}

/* ---- first index build of a large folder ---------------------------------------------- */

#define BUILD_N 3000 /* above the threshold where helper threads read the files */

struct expect {
    char base[128];
    uint64_t size, vsize;
    time_t mtime;
    unsigned flags;
};

static int expect_cmp(const void *x, const void *y)
{
    return strcmp(((const struct expect *)x)->base, ((const struct expect *)y)->base);
}

static void write_bytes(const char *path, const char *data, size_t len, time_t mtime)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    struct timeval tv[2] = {{mtime, 0}, {mtime, 0}};
    assert_int_equal(utimes(path, tv), 0);
}

/* usage(bytes, messages) and what the messages rows add up to, read directly. */
static void usage_and_rows(const char *home, int64_t *bytes_r, int64_t *sum_r, int64_t *msgs_r,
                           int64_t *count_r)
{
    sqlite3 *db = store_index_open(home, NULL);
    assert_non_null(db);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT bytes FROM usage), (SELECT SUM(size) FROM"
                                        " messages), (SELECT messages FROM usage),"
                                        " (SELECT COUNT(*) FROM messages)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    *bytes_r = sqlite3_column_int64(st, 0);
    *sum_r = sqlite3_column_int64(st, 1);
    *msgs_r = sqlite3_column_int64(st, 2);
    *count_r = sqlite3_column_int64(st, 3);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Files written straight into cur/ and new/ by another program get UIDs in name order,
 * exact sizes (read and counted, or from ,S=/W=) and their mtime as INTERNALDATE; a base
 * name present in both new/ and cur/ is one message. */
static void test_build_large_folder(void **state)
{
    (void)state;
    char home[512], md[700], path[1200];
    snprintf(home, sizeof home, "%s/home", tmp_root);
    snprintf(md, sizeof md, "%s/Maildir", home);
    static const char *const subs[] = {"", "/cur", "/new", "/tmp"};
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s%s", md, subs[k]);
        assert_int_equal(store_io_mkdir_p(path), 0);
    }
    size_t big_len = 200000; /* several reads */
    char *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = i % 61 == 60 ? '\n' : (char)('a' + i % 26);
    struct expect *ex = calloc(BUILD_N, sizeof *ex);
    assert_non_null(ex);
    uint64_t total_vsize = 0;
    for (size_t i = 0; i < BUILD_N; i++) {
        struct expect *e = &ex[i];
        /* names not in creation order, so the build must sort them */
        size_t id = (i * 7919) % BUILD_N;
        e->mtime = 1600000000 + (time_t)id;
        const char *data = big;
        size_t len = 0;
        char text[300];
        if (id % 500 == 7) {
            len = big_len - id; /* large file */
        } else if (id % 250 == 3) {
            len = 0; /* empty */
        } else {
            snprintf(text, sizeof text, "Subject: m%zu\n\n%.*s\n", id, (int)(id % 97), big);
            data = text;
            len = strlen(text);
        }
        uint64_t lines = 0;
        for (size_t k = 0; k < len; k++)
            lines += data[k] == '\n';
        bool has_sizes = id % 5 == 0, in_new = id % 11 == 0;
        if (has_sizes)
            snprintf(e->base, sizeof e->base, "%lld.M%zuP1.ext,S=%zu,W=%llu", (long long)e->mtime,
                     id, len, (unsigned long long)(len + lines));
        else
            snprintf(e->base, sizeof e->base, "%lld.M%zuP1.ext", (long long)e->mtime, id);
        e->size = len;
        e->vsize = len + lines;
        e->flags = !in_new && id % 3 == 0 ? STORE_FLAG_SEEN | STORE_FLAG_FLAGGED : 0;
        if (in_new)
            snprintf(path, sizeof path, "%s/new/%s", md, e->base);
        else
            snprintf(path, sizeof path, "%s/cur/%s:2,%s", md, e->base, e->flags ? "FS" : "");
        write_bytes(path, data, len, e->mtime);
        total_vsize += e->vsize;
    }
    /* the same message in new/ and cur/ (another program between link and unlink): its
     * sizes come from its name, its flags are none in either place */
    assert_true(ex[0].flags == 0 && strstr(ex[0].base, ",S="));
    snprintf(path, sizeof path, "%s/cur/%s:2,", md, ex[0].base);
    write_bytes(path, "x", 1, ex[0].mtime);
    qsort(ex, BUILD_N, sizeof *ex, expect_cmp);

    struct store_user *u = NULL;
    char *error = NULL;
    assert_int_equal(store_user_open(home, "builder@example.test", &u, &error), 0);
    for (int pass = 0; pass < 2; pass++) { /* SELECT, then the same again (warm) */
        struct store_mailbox *box = NULL;
        assert_int_equal(store_mailbox_open(u, "INBOX", false, &box, &error), 0);
        assert_int_equal(store_mailbox_count(box), BUILD_N);
        for (size_t i = 0; i < BUILD_N; i++) {
            const struct store_message *m = store_mailbox_message(box, i);
            assert_int_equal(m->uid, i + 1);
            assert_string_equal(m->filename, ex[i].base);
            assert_int_equal(m->size, ex[i].size);
            assert_int_equal(m->vsize, ex[i].vsize);
            assert_int_equal(m->internaldate, ex[i].mtime);
            assert_int_equal(m->flags & ~(unsigned)STORE_FLAG_RECENT, ex[i].flags);
        }
        store_mailbox_close(box);
    }
    struct store_status status;
    assert_int_equal(store_mailbox_status(u, "INBOX", &status, &error), 0);
    assert_int_equal(status.messages, BUILD_N);
    assert_int_equal(status.size, total_vsize);
    assert_int_equal(status.uidnext, BUILD_N + 1);
    /* usage (quota) matches the rows, though the build added it in one sum, and the
     * per-insert trigger is back for what comes next */
    int64_t bytes = -1, sum = -2, msgs = -1, count = -2;
    usage_and_rows(home, &bytes, &sum, &msgs, &count);
    assert_int_equal(bytes, sum);
    assert_int_equal(msgs, count);
    assert_int_equal(count, BUILD_N);
    assert_int_equal(store_user_usage(home), bytes);
    uint32_t uidv = 0, uid = 0;
    static const char more[] = "Subject: one more\r\n\r\nhi\r\n";
    struct store_source src = {.data = more, .len = sizeof more - 1, .fd = -1};
    src.size = src.len;
    assert_int_equal(
        store_mailbox_append(u, "INBOX", &src, 0, NULL, 1700000000, &uidv, &uid, &error), 0);
    assert_int_equal(uid, BUILD_N + 1);
    int64_t bytes2 = -1;
    usage_and_rows(home, &bytes2, &sum, &msgs, &count);
    assert_int_equal(bytes2, bytes + (int64_t)sizeof more - 1 - 3); /* stored with LF ends */
    assert_int_equal(bytes2, sum);
    assert_int_equal(msgs, BUILD_N + 1);
    assert_int_equal(count, BUILD_N + 1);
    /* new/ was moved to cur/ by the SELECT */
    snprintf(path, sizeof path, "%s/new", md);
    DIR *d = opendir(path);
    assert_non_null(d);
    size_t n_new = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        n_new += de->d_name[0] != '.';
    closedir(d);
    assert_int_equal(n_new, 0);
    store_user_close(u);
    free(ex);
    free(big);
}

/* Several processes (the workers) open a new user's index at the same moment: every one
 * gets a usable index. Before, a connection could meet another's half-made file (its
 * rollback journal while it switched to WAL) and fail with a disk I/O error. */
static void test_first_open_from_many_processes(void **state)
{
    (void)state;
    enum { ROUNDS = 50, PROCS = 6 };
    for (int round = 0; round < ROUNDS; round++) {
        char home[600];
        snprintf(home, sizeof home, "%s/user%d", tmp_root, round);
        pid_t kids[PROCS];
        for (int k = 0; k < PROCS; k++) {
            kids[k] = fork();
            assert_true(kids[k] >= 0);
            if (kids[k] == 0) {
                char *error = NULL;
                sqlite3 *db = store_index_open(home, &error);
                struct store_mbox_row row;
                int rc = db && store_index_mailbox_get(db, "INBOX", &row, &error) >= 0 ? 0 : 1;
                if (rc)
                    fprintf(stderr, "round %d: %s\n", round, error ? error : "?");
                store_index_close(db);
                _exit(rc);
            }
        }
        int failures = 0;
        for (int k = 0; k < PROCS; k++) {
            int status = 0;
            assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
            failures += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        assert_int_equal(failures, 0);
    }
}

/* RFC 4467 access keys: made once per mailbox (random, stable), none without create,
 * different per mailbox, new after a reset (one or all), bound to UIDVALIDITY (a mailbox
 * deleted and made again has a new key), none for a missing mailbox. */
static void test_urlauth_keys(void **state)
{
    char home[4200];
    snprintf(home, sizeof home, "%s/keys", tmp_root);
    struct store_user *u = NULL;
    char *error = NULL;
    assert_int_equal(store_user_open(home, "keys@example.test", &u, &error), 0);
    unsigned char k1[STORE_URLAUTH_KEY_SIZE], k2[STORE_URLAUTH_KEY_SIZE],
        k3[STORE_URLAUTH_KEY_SIZE];
    uint32_t v1, v2;
    assert_int_equal(store_urlauth_key(u, "INBOX", false, k1, &v1, &error), 0);
    assert_int_equal(store_urlauth_key(u, "INBOX", true, k1, &v1, &error), 1);
    assert_int_equal(store_urlauth_key(u, "inbox", false, k2, &v2, &error), 1);
    assert_memory_equal(k1, k2, sizeof k1);
    assert_int_equal(v1, v2);
    static const unsigned char zero[STORE_URLAUTH_KEY_SIZE];
    assert_memory_not_equal(k1, zero, sizeof k1);
    assert_int_equal(store_mailbox_create(u, "Drafts2", &error), 0);
    assert_int_equal(store_urlauth_key(u, "Drafts2", true, k3, &v2, &error), 1);
    assert_memory_not_equal(k1, k3, sizeof k1);
    /* reset one: INBOX keeps its key, Drafts2 gets a new one */
    assert_int_equal(store_urlauth_reset(u, "Drafts2", &error), 0);
    assert_int_equal(store_urlauth_key(u, "Drafts2", false, k2, &v2, &error), 0);
    assert_int_equal(store_urlauth_key(u, "INBOX", false, k2, &v2, &error), 1);
    assert_int_equal(store_urlauth_key(u, "Drafts2", true, k2, &v2, &error), 1);
    assert_memory_not_equal(k2, k3, sizeof k2);
    /* a mailbox made again under the same name: another UIDVALIDITY, no old key */
    assert_int_equal(store_mailbox_delete(u, "Drafts2", &error), 0);
    assert_int_equal(store_mailbox_create(u, "Drafts2", &error), 0);
    assert_int_equal(store_urlauth_key(u, "Drafts2", false, k3, &v1, &error), 0);
    assert_int_not_equal(v1, v2);
    /* reset all */
    assert_int_equal(store_urlauth_reset(u, NULL, &error), 0);
    assert_int_equal(store_urlauth_key(u, "INBOX", false, k2, &v2, &error), 0);
    /* no such mailbox */
    assert_int_equal(store_urlauth_key(u, "Nope", true, k2, &v2, &error), -1);
    assert_non_null(error);
    free(error);
    store_user_close(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stmt_cache_fresh_after_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stmt_cache_nested_same_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_large_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_open_from_many_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_urlauth_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
