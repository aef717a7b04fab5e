/*
 * sortkeys.c - the SORT/THREAD keys of a view's messages (store.h), cached in the index.
 *
 * The keys of a message (mime_sort.c: casemapped base subject, sent date, first
 * addresses, message ids) never change once it is delivered, so they are computed once
 * from its header and kept in the index table sortkeys (rows go with their message:
 * triggers in index.c). A SORT over 100,000 cached messages is one table scan and no
 * file is opened; a message not cached yet costs one read of its header (at most
 * STORE_SORT_MAX_HEADER bytes), and the new rows are written in one transaction.
 */
#include "store/store-private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "store/mime.h"

/* Bytes of a message's header read for its keys (a longer header is cut there). */
#define STORE_SORT_MAX_HEADER (256 * 1024)

/* Read the header block of message i (up to the empty line, at most
 * STORE_SORT_MAX_HEADER bytes) into out. false when the file cannot be read. */
static bool sortkeys_read_header(struct store_mailbox *box, size_t i, struct buf *out)
{
    int fd;
    char *err = NULL;
    if (store_message_open(box, i, &fd, &err) < 0) {
        free(err);
        return false;
    }
    char chunk[8192];
    size_t scanned = 0;
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || !buf_append(out, chunk, (size_t)r))
            break;
        /* the header ends at the first empty line ("\n\n" or "\n\r\n") */
        const char *d = out->data;
        size_t from = scanned > 2 ? scanned - 2 : 0;
        bool is_done = false;
        for (size_t k = from; k + 1 < out->len && !is_done; k++)
            is_done = d[k] == '\n' && (d[k + 1] == '\n' ||
                                       (d[k + 1] == '\r' && k + 2 < out->len && d[k + 2] == '\n'));
        scanned = out->len;
        if (is_done || out->len >= STORE_SORT_MAX_HEADER)
            break;
    }
    close(fd);
    return true;
}

static char *sortkeys_column(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    return t ? strdup(t) : NULL;
}

/* Rows of the mailbox's cached keys into keys[] by view index; have[i] set for each. Only
 * the wanted messages' strings are copied (want NULL: all). */
static int sortkeys_load(struct store_mailbox *box, sqlite3 *db, const bool *want,
                         struct mime_sort_keys *keys, bool *have, char **error_r)
{
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(db,
                            "SELECT uid, sent, is_reply, subject, from_, to_, cc, dfrom, dto,"
                            " msgid, refs FROM sortkeys WHERE mailbox = ?",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, store_view_mailbox_id(box));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        size_t i = store_view_find_uid(box, (uint32_t)sqlite3_column_int64(st, 0));
        if (i == SIZE_MAX || have[i] || (want && !want[i]))
            continue;
        struct mime_sort_keys *k = &keys[i];
        k->sent = sqlite3_column_int64(st, 1);
        k->is_reply = sqlite3_column_int(st, 2) != 0;
        k->subject = sortkeys_column(st, 3);
        k->from = sortkeys_column(st, 4);
        k->to = sortkeys_column(st, 5);
        k->cc = sortkeys_column(st, 6);
        k->display_from = sortkeys_column(st, 7);
        k->display_to = sortkeys_column(st, 8);
        k->message_id = sortkeys_column(st, 9);
        k->references = sortkeys_column(st, 10);
        have[i] = true;
    }
    store_index_done(st);
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

/* Cache the keys of the messages in todo[0..n) (one transaction). A failure only costs
 * the next SORT the same work again: it is logged by the caller's error, not fatal. */
static int sortkeys_save(struct store_mailbox *box, sqlite3 *db, const struct mime_sort_keys *keys,
                         const size_t *todo, size_t n, char **error_r)
{
    if (store_index_begin(db, error_r) < 0)
        return -1;
    for (size_t q = 0; q < n; q++) {
        const struct mime_sort_keys *k = &keys[todo[q]];
        sqlite3_stmt *st = NULL;
        int rc = SQLITE_ERROR;
        /* only while the message is still indexed (another session may have expunged it) */
        if (store_index_prepare(db,
                                "INSERT OR REPLACE INTO sortkeys(mailbox, uid, sent, is_reply,"
                                " subject, from_, to_, cc, dfrom, dto, msgid, refs)"
                                " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12"
                                " WHERE EXISTS (SELECT 1 FROM messages"
                                " WHERE mailbox = ?1 AND uid = ?2)",
                                &st) == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, store_view_mailbox_id(box));
            sqlite3_bind_int64(st, 2, store_mailbox_message(box, todo[q])->uid);
            sqlite3_bind_int64(st, 3, k->sent);
            sqlite3_bind_int(st, 4, k->is_reply ? 1 : 0);
            const char *texts[] = {k->subject,      k->from,       k->to,
                                   k->cc,           k->display_from, k->display_to,
                                   k->message_id,   k->references};
            for (int c = 0; c < 8; c++) {
                if (texts[c])
                    sqlite3_bind_text(st, 5 + c, texts[c], -1, SQLITE_STATIC);
                else
                    sqlite3_bind_null(st, 5 + c);
            }
            rc = sqlite3_step(st);
        }
        store_index_done(st);
        if (rc != SQLITE_DONE) {
            store_error(error_r, "index: %s", sqlite3_errmsg(db));
            store_index_rollback(db);
            return -1;
        }
    }
    return store_index_commit(db, error_r);
}

int store_mailbox_sort_keys(struct store_mailbox *box, const bool *want,
                            struct mime_sort_keys **keys_r, char **error_r)
{
    return store_mailbox_sort_keys_cmp(box, want, MIME_CMP_UNICODE_CASEMAP, keys_r, error_r);
}

int store_mailbox_sort_keys_cmp(struct store_mailbox *box, const bool *want,
                                enum mime_comparator cmp, struct mime_sort_keys **keys_r,
                                char **error_r)
{
    /* the cache holds i;unicode-casemap keys: another comparator reads the headers */
    bool is_cached = cmp == MIME_CMP_UNICODE_CASEMAP;
    struct store_user *u = store_view_user(box);
    size_t n = store_mailbox_count(box);
    struct mime_sort_keys *keys = calloc(n ? n : 1, sizeof *keys);
    bool *have = calloc(n ? n : 1, sizeof *have);
    size_t *todo = calloc(n ? n : 1, sizeof *todo);
    size_t n_todo = 0;
    if (!keys || !have || !todo) {
        store_error(error_r, "out of memory");
        goto fail;
    }
    if (store_user_attach(u, error_r) < 0 ||
        (is_cached && sortkeys_load(box, u->db, want, keys, have, error_r) < 0))
        goto fail;
    struct buf hdr;
    buf_init(&hdr, STORE_SORT_MAX_HEADER + 8192);
    for (size_t i = 0; i < n; i++) {
        if (have[i] || (want && !want[i]))
            continue;
        buf_reset(&hdr);
        /* an expunged file leaves empty keys: the message sorts as having no headers */
        (void)sortkeys_read_header(box, i, &hdr);
        if (!mime_sort_keys_parse_cmp(hdr.data ? hdr.data : "", hdr.len, cmp, &keys[i])) {
            buf_free(&hdr);
            store_error(error_r, "out of memory");
            goto fail;
        }
        todo[n_todo++] = i;
    }
    buf_free(&hdr);
    if (is_cached && n_todo > 0) {
        char *err = NULL;
        if (sortkeys_save(box, u->db, keys, todo, n_todo, &err) < 0)
            log_warning("store", "%s: sort keys not cached (computed again next time): %s",
                        store_view_name(box), err ? err : "?");
        free(err);
    }
    /* RFC 5256 §2.2: without a usable Date: the internal date is the sent date */
    for (size_t i = 0; i < n; i++)
        if (keys[i].sent < 0)
            keys[i].sent = (int64_t)store_mailbox_message(box, i)->internaldate;
    free(have);
    free(todo);
    *keys_r = keys;
    return 0;
fail:
    store_sort_keys_free(keys, n);
    free(have);
    free(todo);
    return -1;
}

void store_sort_keys_free(struct mime_sort_keys *keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++)
        mime_sort_keys_free(&keys[i]);
    free(keys);
}
