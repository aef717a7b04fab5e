/*
 * deliver.c - local delivery: one message to many mailboxes, all or nothing, durable
 * before we return (SMTP answers 250 only after this). Also the quota usage lookup.
 *
 * Order of operations (each step only once the previous succeeded for every copy):
 *   1. quota: index usage + this copy must fit, for every target;
 *   2. write each copy (header + body, CRLF -> LF, streamed) to <mailbox>/tmp/, fsync;
 *   3. rename every copy into new/, fsync every new/ directory (one fsync shared by the
 *      deliveries that renamed into it meanwhile: store_io_fsync_dir_shared);
 *   4. index each copy (uid = uidnext++), in one transaction with the copies of the same
 *      home other threads index at the same moment (deliver_index: group commit).
 * A failure in 1-3 removes every file written so far, so no copy is visible. A failure
 * in 4 does not undo the delivery: the file is durable in new/ and the next sync of the
 * mailbox indexes it (with a fresh UID), so the message still counts as delivered.
 */
#include "store/store-private.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct copy {
    char mbox_path[4200];
    char canon[300];
    char tmp_path[4400];
    char new_path[4400];
    char basename[512];
    uint64_t size, vsize;
    bool has_tmp, is_renamed;
};

int64_t store_user_usage(const char *home)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/index.db", home);
    struct stat st;
    if (stat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    sqlite3 *db = store_index_acquire(home, NULL);
    if (!db)
        return -1;
    int64_t v = store_index_usage(db);
    store_index_release(home, db);
    return v;
}

/* Write one copy into tmp/ and fsync it. */
static int deliver_write_tmp(struct copy *c, const struct store_target *t,
                             const struct store_source *src, char **error_r)
{
    char unique[400];
    store_maildir_unique_name(unique, sizeof unique);
    snprintf(c->tmp_path, sizeof c->tmp_path, "%s/tmp/%s", c->mbox_path, unique);
    int fd = open(c->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) {
        /* first delivery to this mailbox: create the folder */
        if (store_maildir_create(c->mbox_path, strcmp(c->canon, "INBOX") == 0) == 0)
            fd = open(c->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        store_error(error_r, "create %s: %s", c->tmp_path, strerror(errno));
        return -1;
    }
    c->has_tmp = true;
    if (store_io_write_message(fd, t->header, src, &c->size, &c->vsize, error_r) < 0) {
        close(fd);
        return -1;
    }
    if (store_io_fsync(fd) < 0) {
        store_error(error_r, "fsync %s: %s", c->tmp_path, strerror(errno));
        close(fd);
        return -1;
    }
    if (close(fd) < 0) {
        store_error(error_r, "close %s: %s", c->tmp_path, strerror(errno));
        return -1;
    }
    snprintf(c->basename, sizeof c->basename, "%s,S=%llu,W=%llu", unique,
             (unsigned long long)c->size, (unsigned long long)c->vsize);
    snprintf(c->new_path, sizeof c->new_path, "%s/new/%s", c->mbox_path, c->basename);
    return 0;
}

/* Remove every trace of the copies (tmp files, renamed files) after a failure. */
static void deliver_undo(struct copy *copies, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct copy *c = &copies[i];
        if (c->is_renamed) {
            if (unlink(c->new_path) == 0) {
                char dir[4300];
                snprintf(dir, sizeof dir, "%s/new", c->mbox_path);
                (void)store_io_fsync_dir(dir);
            }
        } else if (c->has_tmp) {
            (void)unlink(c->tmp_path);
        }
    }
}

/* Inside a transaction: add one delivered copy to the index (its mailbox made if need
 * be); t->uid set. 0, or -1 with *error_r (the caller rolls back). */
static int deliver_index_add(sqlite3 *db, const struct copy *c, struct store_target *t,
                             char **error_r)
{
    struct store_mbox_row row;
    char location[600];
    snprintf(location, sizeof location, "new/%s", c->basename);
    int r = store_index_mailbox_get(db, c->canon, &row, error_r);
    if (r == 1)
        r = store_index_mailbox_add(db, c->canon, NULL, &row, error_r);
    /* the first message of a folder moved in from Dovecot: its old messages keep their
     * UIDs and this one comes after them */
    if (r == 0 && store_sync_import_dovecot(db, c->mbox_path, &row, error_r) < 0)
        r = -1;
    if (r < 0 ||
        store_index_message_add(db, &row, c->basename, location, 0, NULL, c->size, c->vsize,
                                time(NULL), &t->uid, error_r) < 0 ||
        store_index_mailbox_save(db, &row, error_r) < 0)
        return -1;
    return 0;
}

/* One delivered copy waiting for its index row (deliver_index_shared). */
struct index_item {
    const struct copy *c;
    struct store_target *t;
    struct index_item *next;
    bool is_done;
};

/* One transaction for the n items from first on: 0, or -1 with *error_r, nothing
 * written and their UIDs 0. */
static int deliver_index_txn(sqlite3 *db, struct index_item *first, size_t n, char **error_r)
{
    struct index_item *it = first;
    if (store_index_begin(db, error_r) < 0)
        goto fail;
    for (size_t i = 0; i < n; i++, it = it->next)
        if (deliver_index_add(db, it->c, it->t, error_r) < 0)
            goto fail;
    if (store_index_commit(db, error_r) == 0)
        return 0;
fail:
    if (!sqlite3_get_autocommit(db))
        store_index_rollback(db);
    it = first;
    for (size_t i = 0; i < n; i++, it = it->next)
        it->t->uid = 0;
    return -1;
}

/* Index the copies on the list items (all of one home) in one transaction; when that
 * fails, copy by copy, so one bad row costs only its own UID. A copy left unindexed is
 * logged (uid 0): the next sync of its mailbox indexes it (see the top). */
static void deliver_index_batch(const char *home, struct index_item *items)
{
    size_t n = 0;
    for (struct index_item *it = items; it; it = it->next)
        n++;
    char *error = NULL;
    sqlite3 *db = store_index_acquire(home, &error);
    bool is_done = db && deliver_index_txn(db, items, n, &error) == 0;
    for (struct index_item *it = items; !is_done && it; it = it->next) {
        if (db && n > 1) {
            free(error);
            error = NULL;
            if (deliver_index_txn(db, it, 1, &error) == 0)
                continue;
        }
        log_warning("local",
                    "%s: delivered to maildir but index update failed (next sync indexes it): %s",
                    it->t->user, error ? error : "unknown error");
    }
    free(error);
    store_index_release(home, db);
}

/*
 * Group commit of index rows. Deliveries to one user from many pool threads each made
 * their own write transaction on index.db: they met on SQLite's write lock, slept in the
 * busy handler (20 sleeps per message in a worker under the SMTP bench) and, past the two
 * pooled connections per user, opened and closed a connection per message. Now the copies
 * of one home queue here; a thread that finds no batch running takes the whole queue and
 * indexes it in one transaction while the others wait, then the next waiter takes what
 * gathered meanwhile. The maildir files are durable before this step, so batching adds no
 * risk: it only decides how many rows one commit carries. Slots are per home path hash; a
 * slot busy with another home makes the caller index on its own (a batch of one).
 */
#define INDEX_BATCH_SLOTS 64

struct index_batch {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a batch ended */
    char *home;          /* the home this slot serves now (NULL: none yet) */
    unsigned n_users;    /* threads with an item queued or running */
    bool is_running;
    struct index_item *head, *tail; /* waiting for the next batch */
};

static struct index_batch index_batches[INDEX_BATCH_SLOTS] = {
    [0 ... INDEX_BATCH_SLOTS - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER,
                                     .cond = PTHREAD_COND_INITIALIZER}};

/* Step 4 for one copy: its row, in a batch with the other copies of the same home that
 * wait at the same time. Failures are logged, not returned (see the top). */
static void deliver_index(const struct copy *c, struct store_target *t)
{
    struct index_item item = {.c = c, .t = t};
    t->uid = 0;
    struct index_batch *b = &index_batches[store_path_hash(t->home) % INDEX_BATCH_SLOTS];
    pthread_mutex_lock(&b->lock);
    if (!b->home || strcmp(b->home, t->home) != 0) {
        char *copy = b->n_users == 0 ? strdup(t->home) : NULL;
        if (!copy) { /* the slot serves another home now (or no memory): alone */
            pthread_mutex_unlock(&b->lock);
            deliver_index_batch(t->home, &item);
            return;
        }
        free(b->home);
        b->home = copy;
    }
    b->n_users++;
    if (b->tail)
        b->tail->next = &item;
    else
        b->head = &item;
    b->tail = &item;
    while (!item.is_done) {
        if (b->is_running) {
            pthread_cond_wait(&b->cond, &b->lock);
            continue;
        }
        struct index_item *batch = b->head;
        b->head = b->tail = NULL;
        b->is_running = true;
        pthread_mutex_unlock(&b->lock);
        deliver_index_batch(t->home, batch);
        pthread_mutex_lock(&b->lock);
        /* (next read before is_done: a waiter may return and free its item at once) */
        for (struct index_item *it = batch, *next; it; it = next) {
            next = it->next;
            it->is_done = true;
        }
        b->is_running = false;
        pthread_cond_broadcast(&b->cond);
    }
    b->n_users--;
    pthread_mutex_unlock(&b->lock);
}

int store_deliver(const struct store_source *src, struct store_target *targets, size_t n,
                  char **error_r)
{
    if (n == 0)
        return 0;
    struct copy *copies = calloc(n, sizeof *copies);
    if (!copies) {
        store_error(error_r, "out of memory");
        for (size_t i = 0; i < n; i++)
            targets[i].status = STORE_ERR_TEMP;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        targets[i].status = STORE_OK;
        targets[i].uid = 0;
    }
    int failed_status = 0;
    size_t failed_at = n;
    uint64_t src_size = store_source_size(src);

    /* 1. quota (index usage, plus copies for the same home earlier in this call) */
    for (size_t i = 0; i < n && !failed_status; i++) {
        struct store_target *t = &targets[i];
        struct copy *c = &copies[i];
        char dir[300];
        if (store_mailbox_name_to_dir(t->mailbox ? t->mailbox : "INBOX", dir, sizeof dir, c->canon,
                                      sizeof c->canon, error_r) < 0 ||
            snprintf(c->mbox_path, sizeof c->mbox_path, "%s/Maildir%s%s", t->home,
                     dir[0] ? "/" : "", dir) >= (int)sizeof c->mbox_path) {
            failed_status = STORE_ERR_TEMP;
            failed_at = i;
            break;
        }
        if (t->quota == 0)
            continue;
        int64_t usage = store_user_usage(t->home);
        if (usage < 0) {
            store_error(error_r, "%s: cannot read quota usage", t->user);
            failed_status = STORE_ERR_TEMP;
            failed_at = i;
            break;
        }
        uint64_t need = (uint64_t)usage + src_size + (t->header ? strlen(t->header) : 0);
        for (size_t j = 0; j < i; j++)
            if (strcmp(targets[j].home, t->home) == 0)
                need += src_size;
        if (need > t->quota) {
            store_error(error_r, "%s: mailbox full (quota exceeded)", t->user);
            failed_status = STORE_ERR_QUOTA;
            failed_at = i;
        }
    }
    /* 2. write and fsync every copy in tmp/ */
    for (size_t i = 0; i < n && !failed_status; i++) {
        if (deliver_write_tmp(&copies[i], &targets[i], src, error_r) < 0) {
            failed_status = STORE_ERR_TEMP;
            failed_at = i;
        }
    }
    /* 3. rename all into new/, then fsync each distinct new/ directory once */
    for (size_t i = 0; i < n && !failed_status; i++) {
        if (rename(copies[i].tmp_path, copies[i].new_path) < 0) {
            store_error(error_r, "rename %s: %s", copies[i].tmp_path, strerror(errno));
            failed_status = STORE_ERR_TEMP;
            failed_at = i;
            break;
        }
        copies[i].is_renamed = true;
    }
    for (size_t i = 0; i < n && !failed_status; i++) {
        bool is_seen = false;
        for (size_t j = 0; j < i && !is_seen; j++)
            is_seen = strcmp(copies[j].mbox_path, copies[i].mbox_path) == 0;
        if (is_seen)
            continue;
        char dir[4300];
        snprintf(dir, sizeof dir, "%s/new", copies[i].mbox_path);
        if (store_io_fsync_dir_shared(dir) < 0) {
            store_error(error_r, "fsync %s: %s", dir, strerror(errno));
            failed_status = STORE_ERR_TEMP;
            failed_at = i;
        }
    }
    if (failed_status) {
        deliver_undo(copies, n);
        /* The target that failed gets the reason; the others were not delivered only
         * because delivery is all or nothing: a temporary failure for them. */
        for (size_t i = 0; i < n; i++)
            targets[i].status = i == failed_at ? failed_status : STORE_ERR_TEMP;
        free(copies);
        return -1;
    }
    /* 4. index (failures here do not undo the delivery, see the top of the file) */
    for (size_t i = 0; i < n; i++) {
        deliver_index(&copies[i], &targets[i]);
        store_notify_publish_any_thread(targets[i].user, copies[i].canon);
    }
    free(copies);
    return 0;
}
