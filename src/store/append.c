/*
 * append.c - MULTIAPPEND (RFC 3502): several messages into one mailbox, all or none.
 *
 * Three phases, so that the OK the client gets means every message is durable and a
 * failure leaves nothing behind (RFC 3502 §6.3.11: "If the server is unable to append
 * any of the messages, none of the messages are appended"):
 *   1. each message is written to tmp/ and fsync'd (nothing visible yet);
 *   2. under the index's write lock, all are renamed into cur/ and indexed in one SQLite
 *      transaction (UIDs handed out in order), which also checks the quota: two APPENDs
 *      racing each other cannot both pass it, and no other session's sync can index a
 *      file before its row is ours (issue 9);
 *   3. cur/ is fsync'd once, before the caller acknowledges.
 * Any failure unlinks every file made so far (and fsyncs cur/ if something reached it);
 * the transaction is rolled back, so no UID is ever shown for a message that is gone.
 * APPEND of one message is this with n = 1 (store_mailbox_append).
 */
#include "store/store-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One message on its way in: where it is, and what the index will record. */
struct append_file {
    char unique[400]; /* the Maildir base name without S=/W= */
    char fname[700];  /* the name in cur/ */
    uint64_t size, vsize;
    time_t internaldate;
    unsigned flags;
    bool is_written; /* tmp_path exists */
    bool is_renamed; /* final_path exists */
};

/* Paths are rebuilt when needed: 1000 messages must not cost 1000 * 10 KB of buffers. */
static void append_tmp_path(const char *path, const struct append_file *f, char *out, size_t size)
{
    snprintf(out, size, "%s/tmp/%s", path, f->unique);
}

static void append_final_path(const char *path, const struct append_file *f, char *out, size_t size)
{
    snprintf(out, size, "%s/cur/%s", path, f->fname);
}

static void append_base(const struct append_file *f, char *out, size_t size)
{
    snprintf(out, size, "%s,S=%llu,W=%llu", f->unique, (unsigned long long)f->size,
             (unsigned long long)f->vsize);
}

/* Phase 1: write message m to tmp/ and fsync it; f describes the result. */
static int append_write_tmp(const char *path, const struct store_append_message *m,
                            struct append_file *f, char **error_r)
{
    char tmp_path[4700], base[600];
    store_maildir_unique_name(f->unique, sizeof f->unique);
    append_tmp_path(path, f, tmp_path, sizeof tmp_path);
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        store_error(error_r, "create %s: %s", tmp_path, strerror(errno));
        return -1;
    }
    f->is_written = true;
    if (store_io_write_message(fd, NULL, &m->src, &f->size, &f->vsize, error_r) < 0) {
        close(fd);
        return -1;
    }
    /* RFC 3501 §6.3.11: the internal date; Maildir keeps it as the file's mtime. */
    f->internaldate = m->internaldate;
    if (f->internaldate > 0) {
        struct timespec ts[2] = {{f->internaldate, 0}, {f->internaldate, 0}};
        (void)futimens(fd, ts);
    } else {
        f->internaldate = time(NULL);
    }
    if (store_io_fsync(fd) < 0) {
        store_error(error_r, "fsync %s: %s", tmp_path, strerror(errno));
        close(fd);
        return -1;
    }
    if (close(fd) < 0) {
        store_error(error_r, "close %s: %s", tmp_path, strerror(errno));
        return -1;
    }
    f->flags = m->flags & ~(unsigned)STORE_FLAG_RECENT;
    append_base(f, base, sizeof base);
    if (store_maildir_name_with_flags(base, f->flags, NULL, f->fname, sizeof f->fname) < 0) {
        store_error(error_r, "file name too long");
        return -1;
    }
    return 0;
}

/* Would adding add_bytes to the usage read with row pass quota (bytes, 0 none)? The usage
 * is the index's (all mailboxes); the sum itself only when the usage row is missing. */
static bool append_quota_allows(struct store_user *u, const struct store_mbox_row *row,
                                uint64_t quota, uint64_t add_bytes, char **error_r)
{
    if (quota == 0)
        return true;
    int64_t usage = row->user_bytes >= 0 ? row->user_bytes : store_index_usage(u->db);
    if (usage < 0) {
        store_error(error_r, "cannot read the quota usage");
        return false;
    }
    if (add_bytes > quota || (uint64_t)usage > quota - add_bytes) {
        /* Dovecot's wording, which clients show to users (RFC 9208 §4.3, RFC 5530) */
        store_error(error_r, "[OVERQUOTA] Quota exceeded (mailbox for user is full)");
        return false;
    }
    return true;
}

/* Phases 2 and 3, under the index's write lock: rename every file into cur/ and index it
 * in one transaction, the quota checked inside it. Renaming under the lock means no other
 * session's sync can find a file before its row is ours: it used to give the file a UID
 * of its own, a client could expunge that, and APPENDUID then named a UID that never
 * had a message (issue 9's stress tester: "acknowledged APPEND lost"). The renames are
 * cheap; the folder's fsync comes after the commit, before the caller acknowledges. */
static int append_commit(struct store_user *u, const char *canon, const char *path,
                         const struct store_append_message *msgs, struct append_file *files,
                         size_t n, uint64_t quota, uint32_t *uidvalidity_r, uint32_t *uids_r,
                         char **error_r)
{
    struct store_mbox_row row;
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    if (store_index_mailbox_get(u->db, canon, &row, error_r) != 0) {
        if (!error_r || !*error_r)
            store_error(error_r, "Mailbox doesn't exist: %s", canon); /* deleted meanwhile */
        store_index_rollback(u->db);
        return -1;
    }
    uint64_t add_bytes = 0;
    for (size_t k = 0; k < n; k++)
        add_bytes += files[k].size;
    if (!append_quota_allows(u, &row, quota, add_bytes, error_r)) {
        store_index_rollback(u->db);
        return -1;
    }
    char cur_dir[4300];
    snprintf(cur_dir, sizeof cur_dir, "%s/cur", path);
    int64_t mtime_before = store_sync_dir_mtime(cur_dir);
    for (size_t k = 0; k < n; k++) {
        char tmp_path[4700], final_path[5000];
        append_tmp_path(path, &files[k], tmp_path, sizeof tmp_path);
        append_final_path(path, &files[k], final_path, sizeof final_path);
        if (rename(tmp_path, final_path) < 0) {
            store_error(error_r, "rename %s: %s", tmp_path, strerror(errno));
            store_index_rollback(u->db);
            return -1;
        }
        files[k].is_written = false;
        files[k].is_renamed = true;
    }
    store_sync_own_change(&row.cur_mtime, mtime_before, store_sync_dir_mtime(cur_dir));
    for (size_t k = 0; k < n; k++) {
        char base[600], loc[800];
        append_base(&files[k], base, sizeof base);
        snprintf(loc, sizeof loc, "cur/%s", files[k].fname);
        char *kw = store_keywords_join(msgs[k].keywords);
        int r = store_index_message_add(u->db, &row, base, loc, files[k].flags, kw, files[k].size,
                                        files[k].vsize, files[k].internaldate, &uids_r[k], error_r);
        free(kw);
        if (r < 0) {
            store_index_rollback(u->db);
            return -1;
        }
    }
    if (store_index_mailbox_save(u->db, &row, error_r) < 0) {
        store_index_rollback(u->db);
        return -1;
    }
    if (store_index_commit(u->db, error_r) < 0)
        return -1;
    *uidvalidity_r = row.uidvalidity;
    return 0;
}

int store_mailbox_append_many(struct store_user *u, const char *name,
                              const struct store_append_message *msgs, size_t n, uint64_t quota,
                              uint32_t *uidvalidity_r, uint32_t *uids_r, char **error_r)
{
    if (n == 0) {
        store_error(error_r, "no messages");
        return -1;
    }
    /* a pooled index connection for this call (store_user_idle gives it back) */
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char canon[300], path[4200];
    struct store_mbox_row row;
    if (store_mailbox_lookup(u, name, canon, sizeof canon, path, sizeof path, &row, error_r) < 0) {
        /* RFC 3501 §6.3.11: a missing mailbox answers NO [TRYCREATE] */
        if (error_r && *error_r && strncmp(*error_r, "Mailbox doesn't exist", 21) == 0) {
            char *old = *error_r;
            *error_r = NULL;
            store_error(error_r, "[TRYCREATE] %s", old);
            free(old);
        }
        return -1;
    }
    /* Already over quota: refuse before writing anything (the check that counts is the
     * one inside the transaction; this one only saves the writes). */
    uint64_t add_bytes = 0;
    for (size_t k = 0; k < n; k++)
        add_bytes += store_source_size(&msgs[k].src);
    if (!append_quota_allows(u, &row, quota, add_bytes, error_r))
        return -1;
    struct append_file *files = calloc(n, sizeof *files);
    if (!files) {
        store_error(error_r, "out of memory");
        return -1;
    }
    int ret = -1;
    char cur_dir[4300];
    snprintf(cur_dir, sizeof cur_dir, "%s/cur", path);
    for (size_t k = 0; k < n; k++)
        if (append_write_tmp(path, &msgs[k], &files[k], error_r) < 0)
            goto undo;
    if (append_commit(u, canon, path, msgs, files, n, quota, uidvalidity_r, uids_r, error_r) < 0)
        goto undo;
    /* Durable before the caller acknowledges. Should the fsync fail, the files go again:
     * the rows committed a moment ago vanish at the next sync (never acknowledged). */
    if (store_io_fsync_dir(cur_dir) < 0) {
        store_error(error_r, "fsync %s: %s", cur_dir, strerror(errno));
        goto undo;
    }
    store_notify_publish_any_thread(u->user, canon);
    ret = 0;
    goto out;
undo:
    /* Not acknowledged, so not kept: a retry by the client must not make duplicates. */
    {
        bool has_renamed = false;
        for (size_t k = 0; k < n; k++) {
            char file[5000];
            if (files[k].is_written) {
                append_tmp_path(path, &files[k], file, sizeof file);
                (void)unlink(file);
            }
            if (files[k].is_renamed) {
                append_final_path(path, &files[k], file, sizeof file);
                (void)unlink(file);
                has_renamed = true;
            }
        }
        if (has_renamed)
            (void)store_io_fsync_dir(cur_dir);
    }
out:
    free(files);
    return ret;
}
