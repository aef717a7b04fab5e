/*
 * test_queue.c - unit tests of the spool: enqueue (durable, fault injection), list,
 * delete, hold, release, and reading corrupt or hostile queue files safely.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "queue/queue-private.h"
#include "queue/queue.h"
#include "store/store-private.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_tmpdir.h"

static int setup(void **state)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tern-test-queue-XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown(void **state)
{
    store_io_write_hook = NULL;
    store_io_fsync_hook = NULL;
    rm_rf(tmp_root, 0);
    return 0;
}

struct collected {
    char ids[16][32];
    char states[16][16];
    char senders[16][256];
    size_t n_rcpt[16];
    uint64_t sizes[16];
    size_t n;
};

static void collect(const struct queue_entry *e, void *arg)
{
    struct collected *c = arg;
    if (c->n >= 16)
        return;
    snprintf(c->ids[c->n], 32, "%s", e->id);
    snprintf(c->states[c->n], 16, "%s", e->state);
    snprintf(c->senders[c->n], 256, "%s", e->sender);
    c->n_rcpt[c->n] = e->n_recipients;
    c->sizes[c->n] = e->size;
    c->n++;
}

static const char body[] = "Subject: x\r\n\r\nhello\r\n";

static void enqueue(const char *id, const char *sender)
{
    const char *rcpts[] = {"bob@example.org", "we ird%=\xc3\xa9@example.net"};
    struct store_source src = {.data = body, .len = strlen(body), .fd = -1};
    char *error = NULL;
    assert_int_equal(queue_enqueue(tmp_root, id, sender, rcpts, 2, "Received: x\r\n", &src, &error),
                     0);
    assert_null(error);
}

static void test_queue_cycle(void **state)
{
    enqueue("AAAA1", "alice@example.test");
    enqueue("BBBB2", "");
    struct collected c = {0};
    char *error = NULL;
    assert_int_equal(queue_list(tmp_root, collect, &c, &error), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.states[0], "active");
    assert_int_equal(c.n_rcpt[0], 2);
    assert_int_equal(c.sizes[0], strlen(body) + strlen("Received: x\r\n"));

    /* the escaped recipient comes back byte for byte */
    struct queue_entry e;
    int fd = -1;
    uint64_t off = 0;
    assert_int_equal(queue_read(tmp_root, "AAAA1", &e, &fd, &off, &error), 0);
    assert_string_equal(e.recipients[1], "we ird%=\xc3\xa9@example.net");
    assert_string_equal(e.sender, "alice@example.test");
    char head[14];
    assert_int_equal(pread(fd, head, 13, (off_t)off), 13);
    assert_memory_equal(head, "Received: x\r\n", 13);
    queue_entry_free(&e);
    close(fd);

    assert_int_equal(queue_hold(tmp_root, "AAAA1", &error), 0);
    memset(&c, 0, sizeof c);
    assert_int_equal(queue_list(tmp_root, collect, &c, &error), 0);
    int held = strcmp(c.ids[0], "AAAA1") == 0 ? 0 : 1;
    assert_string_equal(c.states[held], "hold");
    assert_int_equal(queue_release(tmp_root, "AAAA1", &error), 0);
    assert_int_equal(queue_read(tmp_root, "AAAA1", &e, NULL, NULL, &error), 0);
    assert_string_equal(e.state, "active");
    queue_entry_free(&e);

    assert_int_equal(queue_delete(tmp_root, "AAAA1", &error), 0);
    assert_int_equal(queue_delete(tmp_root, "AAAA1", &error), 1);
    free(error);
    error = NULL;
    assert_int_equal(queue_hold(tmp_root, "NOPE", &error), 1);
    free(error);
    error = NULL;
    assert_int_equal(queue_delete(tmp_root, "../x", &error), 1);
    free(error);
    error = NULL;
    assert_int_equal(queue_delete(tmp_root, "ALL", &error), 0);
    memset(&c, 0, sizeof c);
    assert_int_equal(queue_list(tmp_root, collect, &c, &error), 0);
    assert_int_equal(c.n, 0);
}

/* A deferral writes deferred/<id> before it removes active/<id>: a listing in between
 * sees two copies of one message and must show it once, as deferred. */
static void test_queue_list_shows_a_message_once(void **state)
{
    enqueue("EEEE5", "alice@example.test");
    enqueue("FFFF6", "bob@example.test");
    char from[4200], dir[4200], to[4300];
    snprintf(from, sizeof from, "%s/queue/active/EEEE5", tmp_root);
    snprintf(dir, sizeof dir, "%s/queue/deferred", tmp_root);
    snprintf(to, sizeof to, "%s/EEEE5", dir);
    (void)mkdir(dir, 0700);
    assert_int_equal(link(from, to), 0); /* the deferred copy, the active one not yet gone */
    struct collected c = {0};
    char *error = NULL;
    assert_int_equal(queue_list(tmp_root, collect, &c, &error), 0);
    assert_int_equal(c.n, 2);
    int i = strcmp(c.ids[0], "EEEE5") == 0 ? 0 : 1;
    assert_string_equal(c.ids[i], "EEEE5");
    assert_string_equal(c.states[i], "deferred");
    assert_string_equal(c.ids[1 - i], "FFFF6");
    assert_string_equal(c.states[1 - i], "active");
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

/* A staged message is invisible until committed; an aborted one is gone; stale staged
 * files are removed at start-up. */
static void test_queue_staged(void **state)
{
    const char *rcpts[] = {"bob@example.org"};
    struct store_source src = {.data = body, .len = strlen(body), .fd = -1};
    char *error = NULL;
    struct collected c = {0};
    assert_int_equal(
        queue_enqueue_staged(tmp_root, "CCCC3", "a@example.test", rcpts, 1, NULL, &src, &error), 0);
    assert_int_equal(queue_list(tmp_root, collect, &c, &error), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(queue_commit(tmp_root, "CCCC3", &error), 0);
    assert_int_equal(queue_list(tmp_root, collect, &c, &error), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.ids[0], "CCCC3");

    assert_int_equal(
        queue_enqueue_staged(tmp_root, "DDDD4", "a@example.test", rcpts, 1, NULL, &src, &error), 0);
    queue_abort(tmp_root, "DDDD4");
    assert_int_equal(queue_commit(tmp_root, "DDDD4", &error), -1);
    free(error);
    error = NULL;

    assert_int_equal(
        queue_enqueue_staged(tmp_root, "EEEE5", "a@example.test", rcpts, 1, NULL, &src, &error), 0);
    assert_int_equal(queue_incoming_cleanup(tmp_root, 3600), 0); /* too young to be stale */
    char path[4200];
    snprintf(path, sizeof path, "%s/queue/incoming/EEEE5", tmp_root);
    struct timespec old[2] = {{.tv_sec = time(NULL) - 7200}, {.tv_sec = time(NULL) - 7200}};
    assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);
    assert_int_equal(queue_incoming_cleanup(tmp_root, 3600), 1);
    assert_int_equal(access(path, F_OK), -1);
}

/* RFC 3461 parameters survive the spool; files from before them still parse; the new
 * lines are checked as strictly as the old ones. */
static void test_queue_dsn_round_trip(void **state)
{
    const char *rcpts[] = {"bob@example.org", "carol@example.org", "dave@example.org"};
    unsigned notify[] = {QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_DELAY, QUEUE_NOTIFY_NEVER, 0};
    const char *orcpt[] = {"rfc822;Bob+x=y@example.org", NULL, NULL};
    struct queue_dsn dsn = {
        .ret = QUEUE_RET_HDRS, .envid = "ENV 42%", .notify = notify, .orcpt = orcpt};
    struct store_source src = {.data = body, .len = strlen(body), .fd = -1};
    char *error = NULL;
    assert_int_equal(queue_enqueue_staged_dsn(tmp_root, "FFFF6", "a@example.test", rcpts, 3, NULL,
                                              &src, &dsn, &error),
                     0);
    assert_int_equal(queue_commit(tmp_root, "FFFF6", &error), 0);
    struct queue_entry e;
    int fd = -1;
    uint64_t off;
    assert_int_equal(queue_read(tmp_root, "FFFF6", &e, &fd, &off, &error), 0);
    close(fd);
    assert_int_equal(e.n_recipients, 3);
    assert_int_equal(e.dsn_ret, QUEUE_RET_HDRS);
    assert_string_equal(e.envid, "ENV 42%");
    assert_int_equal(e.notify[0], QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_DELAY);
    assert_int_equal(e.notify[1], QUEUE_NOTIFY_NEVER);
    assert_int_equal(e.notify[2], 0);
    assert_string_equal(e.orcpt[0], "rfc822;Bob+x=y@example.org");
    assert_null(e.orcpt[1]);
    assert_false(queue_entry_notify_wants(&e, 1, QUEUE_NOTIFY_FAILURE));
    assert_true(queue_entry_notify_wants(&e, 2, QUEUE_NOTIFY_FAILURE));
    assert_true(queue_entry_notify_wants(&e, 0, QUEUE_NOTIFY_SUCCESS));
    assert_false(e.is_delay_warned);
    queue_entry_free(&e);

    /* an old-format envelope: no DSN fields at all */
    const char old[] = "TERNQ1\nid=OLD1\narrival=1795597200\nattempts=2\nsender=a%40b.c\n"
                       "rcpt=x%40y.z\nsize=0\n\n";
    unsigned attempts = 0;
    assert_int_equal(queue_parse_envelope(old, strlen(old), &e, &off, &attempts, &error), 0);
    assert_int_equal(attempts, 2);
    assert_int_equal(e.dsn_ret, QUEUE_RET_DEFAULT);
    assert_null(e.envid);
    assert_true(queue_entry_notify_wants(&e, 0, QUEUE_NOTIFY_FAILURE));
    assert_null(queue_entry_orcpt(&e, 0));
    queue_entry_free(&e);

    const char ok[] = "TERNQ1\nid=N1\narrival=1\nsender=\nwarned=1\nret=FULL\nrcpt=x%40y.z\n"
                      "notify=SF\norcpt=rfc822;x%40y.z\nrcpt=w%40y.z\nnotify=N\nsize=0\n\n";
    assert_int_equal(queue_parse_envelope(ok, strlen(ok), &e, &off, NULL, &error), 0);
    assert_true(e.is_delay_warned);
    assert_int_equal(e.dsn_ret, QUEUE_RET_FULL);
    assert_int_equal(e.notify[0], QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE);
    assert_string_equal(e.orcpt[0], "rfc822;x@y.z");
    assert_int_equal(e.notify[1], QUEUE_NOTIFY_NEVER);
    assert_null(e.orcpt[1]);
    queue_entry_free(&e);

    /* hostile variants: each must be rejected, not half-trusted */
    const char *bad[] = {
        "TERNQ1\nid=N1\narrival=1\nsender=\nnotify=S\nrcpt=x%40y.z\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nrcpt=x%40y.z\nnotify=S\nnotify=F\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nrcpt=x%40y.z\nnotify=NS\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nrcpt=x%40y.z\nnotify=SS\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nrcpt=x%40y.z\nnotify=X\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nrcpt=x%40y.z\norcpt=a%0Ab\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nret=HDRS\nret=FULL\nrcpt=x%40y.z\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nret=BODY\nrcpt=x%40y.z\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nwarned=2\nrcpt=x%40y.z\nsize=0\n\n",
        "TERNQ1\nid=N1\narrival=1\nsender=\nenvid=a\nenvid=b\nrcpt=x%40y.z\nsize=0\n\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(queue_parse_envelope(bad[i], strlen(bad[i]), &e, &off, NULL, &error), -1);
        free(error);
        error = NULL;
    }
}

static void test_queue_fsync_fault(void **state)
{
    const char *rcpts[] = {"bob@example.org"};
    struct store_source src = {.data = body, .len = strlen(body), .fd = -1};
    for (int k = 0; k < 2; k++) {
        fail_after = k;
        store_io_fsync_hook = fault_fsync;
        char *error = NULL;
        char id[16];
        snprintf(id, sizeof id, "F%d", k);
        assert_int_equal(queue_enqueue(tmp_root, id, "a@b", rcpts, 1, NULL, &src, &error), -1);
        store_io_fsync_hook = NULL;
        assert_non_null(error);
        free(error);
        struct collected c = {0};
        assert_int_equal(queue_list(tmp_root, collect, &c, NULL), 0);
        assert_int_equal(c.n, 0);
        char dir[512];
        snprintf(dir, sizeof dir, "%s/queue/incoming", tmp_root);
        DIR *d = opendir(dir);
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            assert_true(de->d_name[0] == '.');
        closedir(d);
    }
}

/* Hostile queue files are skipped by list and refused by read, never trusted. */
static void test_queue_corrupt(void **state)
{
    static const char *const bad[] = {
        "",
        "garbage",
        "TERNQ1\nid=C1\n",
        "TERNQ1\nid=C1\narrival=1\nsender=a\nrcpt=b\nsize=99\n\nshort",
        "TERNQ1\nid=C1\narrival=1\nsender=a\nrcpt=b\nsize=5\nsize=5\n\nhello",
        "TERNQ1\nid=C1\narrival=1\nsender=a\nsize=5\n\nhello",
        "TERNQ1\nid=C1\narrival=1\nsender=a%0Ab\nrcpt=b\nsize=5\n\nhello",
        "TERNQ1\nid=C1\narrival=1\nsender=a%4\nrcpt=b\nsize=5\n\nhello",
        "TERNQ1\nid=XX\narrival=1\nsender=a\nrcpt=b\nsize=5\n\nhello",
        "TERNQ1\nid=C1\narrival=99999999999999999999999\nsender=a\nrcpt=b\nsize=5\n\nhello",
        "TERNQ1\nid=C1\narrival=1\nsender=a\nrcpt=b\nsize=18446744073709551615\n\nhello",
        "TERNQ1\nid=C1\narrival=1\nsender=a b\nrcpt=b\nsize=5\n\nhello",
        "TERNQ1\nid=C1\nevil=1\nsender=a\nrcpt=b\nsize=5\n\nhello",
    };
    char *error = NULL;
    assert_int_equal(queue_dirs_create(tmp_root, &error), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/queue/active/C1", tmp_root);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fwrite(bad[i], 1, strlen(bad[i]), f);
        fclose(f);
        struct collected c = {0};
        assert_int_equal(queue_list(tmp_root, collect, &c, NULL), 0);
        assert_int_equal(c.n, 0);
        struct queue_entry e;
        assert_int_equal(queue_read(tmp_root, "C1", &e, NULL, NULL, &error), -1);
        free(error);
        error = NULL;
    }
    /* and the good form of the same file is accepted */
    FILE *f = fopen(path, "wb");
    fputs("TERNQ1\nid=C1\narrival=1\nsender=a%20b\nrcpt=b\nsize=5\n\nhello", f);
    fclose(f);
    struct queue_entry e;
    assert_int_equal(queue_read(tmp_root, "C1", &e, NULL, NULL, &error), 0);
    assert_string_equal(e.sender, "a b");
    queue_entry_free(&e);
}

/* Random mutations of a valid envelope: the parser refuses or accepts, never reads out
 * of bounds (run under ASan: meson -Db_sanitize=address,undefined). */
static void test_queue_parse_mutations(void **state)
{
    static const char good[] = "TERNQ1\nid=M1\narrival=12\nattempts=3\nsender=a%40b\n"
                               "rcpt=c%40d\nrcpt=e\nsize=5\n\nhello";
    char buf[sizeof good + 8];
    unsigned seed = 12345;
    size_t n_ok = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len = sizeof good - 1;
        memcpy(buf, good, len);
        int n_mut = 1 + (int)((seed = seed * 1103515245 + 12345) >> 16) % 4;
        for (int m = 0; m < n_mut; m++) {
            seed = seed * 1103515245 + 12345;
            size_t pos = (seed >> 16) % len;
            seed = seed * 1103515245 + 12345;
            switch ((seed >> 16) % 3) {
            case 0:
                buf[pos] = (char)(seed >> 8);
                break;
            case 1:
                len = pos; /* truncate */
                break;
            default:
                buf[pos] = "=%\n0F"[(seed >> 20) % 5];
            }
            if (len == 0)
                break;
        }
        /* an exact-size heap copy so ASan sees any overread */
        char *copy = malloc(len ? len : 1);
        memcpy(copy, buf, len);
        struct queue_entry e;
        uint64_t off = 0;
        char *error = NULL;
        if (queue_parse_envelope(copy, len, &e, &off, NULL, &error) == 0) {
            assert_true(off <= len);
            assert_true(e.n_recipients > 0);
            queue_entry_free(&e);
            n_ok++;
        } else {
            free(error);
        }
        free(copy);
    }
    assert_true(n_ok > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_queue_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_list_shows_a_message_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_staged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_fsync_fault, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_dsn_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_corrupt, setup, teardown),
        cmocka_unit_test(test_queue_parse_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
