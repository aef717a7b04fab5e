/*
 * copy.c - COPY and MOVE (durable before return, UIDs for UIDPLUS), APPEND of one message
 * (the one-message case of append.c), and the ENVELOPE/BODYSTRUCTURE cache.
 */
#include "store/store-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* RFC 3501 §6.3.11/§6.4.7: APPEND/COPY to a missing mailbox answer NO [TRYCREATE]. */
static void store_error_trycreate(char **error_r)
{
    if (error_r && *error_r && strncmp(*error_r, "Mailbox doesn't exist", 21) == 0) {
        char *old = *error_r;
        *error_r = NULL;
        store_error(error_r, "[TRYCREATE] %s", old);
        free(old);
    }
}

int store_mailbox_append(struct store_user *u, const char *name, const struct store_source *src,
                         unsigned flags, const char *const *keywords, time_t internaldate,
                         uint32_t *uidvalidity_r, uint32_t *uid_r, char **error_r)
{
    /* one message is the one-message case of MULTIAPPEND (append.c): one code path */
    struct store_append_message m = {
        .src = *src, .flags = flags, .keywords = keywords, .internaldate = internaldate};
    return store_mailbox_append_many(u, name, &m, 1, 0, uidvalidity_r, uid_r, error_r);
}

/* Make tmp (a name in the destination's tmp/) a copy of src: a hard link when possible,
 * else a byte copy (fsync'd). The caller renames it into cur/ under the index lock.
 * 0 done, 1 the source is gone (expunged by another session meanwhile), -1 error. */
static int copy_file(const char *src, const char *tmp, char **error_r)
{
    if (link(src, tmp) == 0)
        return 0;
    if (errno == ENOENT)
        return 1;
    if (errno != EXDEV && errno != EPERM && errno != EMLINK && errno != ENOTSUP) {
        store_error(error_r, "link %s: %s", src, strerror(errno));
        return -1;
    }
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        store_error(error_r, "open %s: %s", src, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(in, &st) < 0) {
        close(in);
        return -1;
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        store_error(error_r, "create %s: %s", tmp, strerror(errno));
        close(in);
        return -1;
    }
    struct store_source s = {.fd = in, .size = (uint64_t)st.st_size};
    uint64_t written;
    int ret = -1;
    if (store_io_write_raw(out, NULL, &s, &written, error_r) == 0 && store_io_fsync(out) == 0 &&
        close(out) == 0) {
        out = -1;
        ret = 0;
    }
    if (out >= 0)
        close(out);
    close(in);
    if (ret < 0) {
        store_error(error_r, "copy %s: %s", src, strerror(errno));
        (void)unlink(tmp);
    }
    return ret;
}

int store_mailbox_copy_uids(struct store_mailbox *box, const uint32_t *uids, size_t n,
                            const char *dest, bool move, uint32_t *dest_uidvalidity_r,
                            uint32_t **dest_uids_r, char **error_r)
{
    if (store_user_attach(store_view_user(box), error_r) < 0)
        return -1;
    struct store_user *u = store_view_user(box);
    char canon[300], path[4200];
    struct store_mbox_row row;
    *dest_uids_r = NULL;
    if (store_mailbox_lookup(u, dest, canon, sizeof canon, path, sizeof path, &row, error_r) < 0) {
        store_error_trycreate(error_r);
        return -1;
    }
    uint32_t *out = calloc(n + 1, sizeof *out);
    char **made = calloc(n + 1, sizeof *made);      /* created file paths, for undo */
    char **tmps = calloc(n + 1, sizeof *tmps);      /* the copies in tmp/, before the rename */
    char **bases = calloc(n + 1, sizeof *bases);    /* their base names */
    char **locs = calloc(n + 1, sizeof *locs);      /* their locations */
    size_t *idx = calloc(n + 1, sizeof *idx);       /* view index of each uid */
    uint32_t *moved = calloc(n + 1, sizeof *moved); /* source uids copied */
    size_t n_made = 0;
    int ret = -1;
    if (!out || !made || !tmps || !bases || !locs || !idx || !moved) {
        store_error(error_r, "out of memory");
        goto out;
    }
    /* 1. the files: one new name per copy, linked (or copied) into tmp/ */
    char cur_dir[4300];
    snprintf(cur_dir, sizeof cur_dir, "%s/cur", path);
    for (size_t k = 0; k < n; k++) {
        size_t i = store_view_find_uid(box, uids[k]);
        idx[k] = i;
        if (i == SIZE_MAX)
            continue; /* RFC 3501: UIDs that do not exist are ignored (dest uid 0) */
        const struct store_message *m = store_mailbox_message(box, i);
        char src_path[5000], unique[400], base[600], fname[700], dst[5000], tmp[5000];
        if (store_view_file_path(box, i, src_path, sizeof src_path) < 0) {
            idx[k] = SIZE_MAX; /* expunged meanwhile */
            continue;
        }
        store_maildir_unique_name(unique, sizeof unique);
        snprintf(base, sizeof base, "%s,S=%llu,W=%llu", unique, (unsigned long long)m->size,
                 (unsigned long long)m->vsize);
        if (store_maildir_name_with_flags(base, m->flags & ~(unsigned)STORE_FLAG_RECENT, NULL,
                                          fname, sizeof fname) < 0) {
            store_error(error_r, "file name too long");
            goto undo;
        }
        snprintf(dst, sizeof dst, "%s/cur/%s", path, fname);
        snprintf(tmp, sizeof tmp, "%s/tmp/%s", path, unique);
        int cr = copy_file(src_path, tmp, error_r);
        if (cr < 0)
            goto undo;
        if (cr > 0) {
            idx[k] = SIZE_MAX; /* expunged meanwhile: not copied (dest uid 0) */
            continue;
        }
        tmps[n_made] = strdup(tmp);
        made[n_made] = strdup(dst);
        bases[n_made] = strdup(base);
        char loc[800];
        snprintf(loc, sizeof loc, "cur/%s", fname);
        locs[n_made] = strdup(loc);
        n_made++;
        if (!tmps[n_made - 1] || !made[n_made - 1] || !bases[n_made - 1] || !locs[n_made - 1]) {
            store_error(error_r, "out of memory");
            goto undo;
        }
    }
    /* 2. under the index's write lock: the copies into cur/, and their rows, one
     * transaction for all. Renamed under the lock so that no other session's sync finds a
     * copy before its row is ours (it would give it a UID of its own, and COPYUID would
     * name another: append.c has the same rule). */
    if (store_index_begin(u->db, error_r) < 0)
        goto undo;
    if (store_index_mailbox_get(u->db, canon, &row, error_r) != 0)
        goto undo_txn;
    int64_t mtime_before = store_sync_dir_mtime(cur_dir);
    for (size_t k = 0; k < n_made; k++) {
        if (rename(tmps[k], made[k]) < 0) {
            store_error(error_r, "rename %s: %s", tmps[k], strerror(errno));
            goto undo_txn;
        }
        free(tmps[k]);
        tmps[k] = NULL; /* now in cur/: made[k] */
    }
    if (n_made > 0)
        store_sync_own_change(&row.cur_mtime, mtime_before, store_sync_dir_mtime(cur_dir));
    size_t j = 0, n_moved = 0;
    for (size_t k = 0; k < n; k++) {
        if (idx[k] == SIZE_MAX)
            continue;
        const struct store_message *m = store_mailbox_message(box, idx[k]);
        char *kw = store_keywords_join((const char *const *)m->keywords);
        int r = store_index_message_add(u->db, &row, bases[j], locs[j],
                                        m->flags & ~(unsigned)STORE_FLAG_RECENT, kw, m->size,
                                        m->vsize, m->internaldate, &out[k], error_r);
        free(kw);
        if (r < 0)
            goto undo_txn;
        moved[n_moved++] = uids[k];
        j++;
    }
    if (store_index_mailbox_save(u->db, &row, error_r) < 0)
        goto undo_txn;
    if (store_index_commit(u->db, error_r) < 0)
        goto undo;
    /* durable before the caller acknowledges (the rows vanish at the next sync if not) */
    if (n_made > 0 && store_io_fsync_dir(cur_dir) < 0) {
        store_error(error_r, "fsync %s: %s", cur_dir, strerror(errno));
        goto undo;
    }
    *dest_uidvalidity_r = row.uidvalidity;
    store_notify_publish_any_thread(u->user, canon);
    /* 3. MOVE (RFC 6851): the copies are durable; now expunge the originals */
    if (move && n_moved > 0 && store_mailbox_expunge_uids(box, moved, n_moved, error_r) < 0)
        goto out_keep;
    *dest_uids_r = out;
    out = NULL;
    ret = 0;
    goto out;
undo_txn:
    store_index_rollback(u->db);
undo:
    for (size_t k = 0; k < n_made; k++) {
        if (tmps[k])
            (void)unlink(tmps[k]); /* not renamed yet */
        else if (made[k])
            (void)unlink(made[k]);
    }
    if (n_made > 0) {
        char d[4300];
        snprintf(d, sizeof d, "%s/cur", path);
        (void)store_io_fsync_dir(d);
    }
    goto out;
out_keep:
    /* MOVE: the copies stand even though removing the originals failed; -1 with the
     * reason (RFC 6851 §3.3 allows a partial MOVE), no UIDs returned. */
out:
    for (size_t k = 0; k < n_made; k++) {
        free(tmps[k]);
        free(made[k]);
        free(bases[k]);
        free(locs[k]);
    }
    free(tmps);
    free(made);
    free(bases);
    free(locs);
    free(idx);
    free(moved);
    free(out);
    return ret;
}

/* ENVELOPE and BODYSTRUCTURE live in the messages row; other fields in cache(). */
static bool cache_is_column(const char *field)
{
    return strcmp(field, "envelope") == 0 || strcmp(field, "bodystructure") == 0;
}

char *store_message_get_cache(struct store_mailbox *box, size_t i, const char *field)
{
    const struct store_message *m = store_mailbox_message(box, i);
    if (!m || !field || store_user_attach(store_view_user(box), NULL) < 0)
        return NULL;
    sqlite3 *db = store_view_user(box)->db;
    sqlite3_stmt *st = NULL;
    char sql[200];
    if (cache_is_column(field))
        snprintf(sql, sizeof sql, "SELECT %s FROM messages WHERE mailbox = ? AND uid = ?", field);
    else
        snprintf(sql, sizeof sql,
                 "SELECT value FROM cache WHERE mailbox = ? AND uid = ? AND field = ?");
    char *v = NULL;
    /* sql is one of three texts (two columns or the cache table): cacheable */
    if (store_index_prepare(db, sql, &st) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, store_view_mailbox_id(box));
        sqlite3_bind_int64(st, 2, m->uid);
        if (!cache_is_column(field))
            sqlite3_bind_text(st, 3, field, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
            const char *t = (const char *)sqlite3_column_text(st, 0);
            v = t ? strdup(t) : NULL;
        }
    }
    store_index_done(st);
    return v;
}

int store_message_set_cache(struct store_mailbox *box, size_t i, const char *field,
                            const char *value)
{
    const struct store_message *m = store_mailbox_message(box, i);
    if (!m || !field || !value || store_user_attach(store_view_user(box), NULL) < 0)
        return -1;
    sqlite3 *db = store_view_user(box)->db;
    sqlite3_stmt *st = NULL;
    char sql[200];
    if (cache_is_column(field))
        snprintf(sql, sizeof sql, "UPDATE messages SET %s = ?3 WHERE mailbox = ?1 AND uid = ?2",
                 field);
    else
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO cache(mailbox, uid, field, value)"
                 " SELECT ?1, ?2, ?4, ?3 WHERE EXISTS"
                 " (SELECT 1 FROM messages WHERE mailbox = ?1 AND uid = ?2)");
    int rc = SQLITE_ERROR;
    /* sql is one of three texts: cacheable */
    if (store_index_prepare(db, sql, &st) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, store_view_mailbox_id(box));
        sqlite3_bind_int64(st, 2, m->uid);
        sqlite3_bind_text(st, 3, value, -1, SQLITE_STATIC);
        if (!cache_is_column(field))
            sqlite3_bind_text(st, 4, field, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    store_index_done(st);
    return rc == SQLITE_DONE ? 0 : -1;
}
