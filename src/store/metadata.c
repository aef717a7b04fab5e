/*
 * metadata.c - RFC 5464 METADATA entries of a user's mailboxes and of the server (store.h):
 * rows of the index table metadata(mailbox, name, value), mailbox "" for the server's.
 * Entries go with their mailbox (DELETE removes them, RENAME carries them: user.c).
 *
 * Limits are checked inside the transaction that writes (two sessions cannot both pass
 * them): a value of at most STORE_METADATA_MAX_VALUE bytes, at most
 * STORE_METADATA_MAX_ENTRIES entries per user.
 */
#include "store/store-private.h"

#include <stdlib.h>
#include <string.h>

/* Canonical name of an existing mailbox (or "" for the server) into canon. */
static int metadata_mailbox(struct store_user *u, const char *mailbox, char *canon, size_t size,
                            char **error_r)
{
    if (!mailbox[0]) {
        canon[0] = '\0';
        return 0;
    }
    char path[4200];
    struct store_mbox_row row;
    return store_mailbox_lookup(u, mailbox, canon, size, path, sizeof path, &row, error_r);
}

int store_metadata_set(struct store_user *u, const char *mailbox, const char *name,
                       const char *value, size_t len, char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char canon[300];
    if (metadata_mailbox(u, mailbox, canon, sizeof canon, error_r) < 0)
        return -1;
    if (value && len > STORE_METADATA_MAX_VALUE) {
        store_error(error_r, "[METADATA MAXSIZE %u] Value too long", STORE_METADATA_MAX_VALUE);
        return 1;
    }
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_ERROR;
    if (value) {
        /* a new entry must stay within the per-user count */
        int64_t count = -1;
        bool exists = false;
        if (store_index_prepare(u->db,
                                "SELECT count(*), (SELECT count(*) FROM metadata"
                                " WHERE mailbox = ?1 AND name = ?2) FROM metadata",
                                &st) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) {
                count = sqlite3_column_int64(st, 0);
                exists = sqlite3_column_int64(st, 1) > 0;
            }
        }
        store_index_done(st);
        st = NULL;
        if (count < 0) {
            store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
            store_index_rollback(u->db);
            return -1;
        }
        if (!exists && count >= STORE_METADATA_MAX_ENTRIES) {
            store_index_rollback(u->db);
            store_error(error_r, "[METADATA TOOMANY] Too many entries");
            return 1;
        }
        if (store_index_prepare(u->db,
                                "INSERT OR REPLACE INTO metadata(mailbox, name, value)"
                                " VALUES(?, ?, ?)",
                                &st) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
            sqlite3_bind_blob(st, 3, value, (int)len, SQLITE_STATIC);
            rc = sqlite3_step(st);
        }
    } else if (store_index_prepare(u->db, "DELETE FROM metadata WHERE mailbox = ? AND name = ?",
                                   &st) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    store_index_done(st);
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        store_index_rollback(u->db);
        return -1;
    }
    return store_index_commit(u->db, error_r);
}

int store_metadata_get(struct store_user *u, const char *mailbox, const char *name,
                       struct store_metadata **entries_r, size_t *n_r, char **error_r)
{
    *entries_r = NULL;
    *n_r = 0;
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char canon[300];
    if (metadata_mailbox(u, mailbox, canon, sizeof canon, error_r) < 0)
        return -1;
    sqlite3_stmt *st = NULL;
    /* the entry and its descendants ("name/..."), in name order */
    if (store_index_prepare(u->db,
                            "SELECT name, value FROM metadata WHERE mailbox = ?1 AND"
                            " (name = ?2 OR substr(name, 1, length(?2) + 1) = ?2 || '/')"
                            " ORDER BY name",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        return -1;
    }
    sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    struct store_metadata *v = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct store_metadata *nv = realloc(v, ncap * sizeof *nv);
            if (!nv)
                break;
            v = nv;
            cap = ncap;
        }
        const char *nm = (const char *)sqlite3_column_text(st, 0);
        const void *val = sqlite3_column_blob(st, 1);
        size_t len = (size_t)sqlite3_column_bytes(st, 1);
        v[n].name = strdup(nm ? nm : "");
        v[n].value = malloc(len + 1);
        v[n].len = len;
        if (!v[n].name || !v[n].value) {
            free(v[n].name);
            free(v[n].value);
            break;
        }
        if (len)
            memcpy(v[n].value, val, len);
        v[n].value[len] = '\0';
        n++;
    }
    store_index_done(st);
    if (rc != SQLITE_DONE) {
        store_metadata_free(v, n);
        store_error(error_r, rc == SQLITE_ROW ? "out of memory" : "index error");
        return -1;
    }
    *entries_r = v;
    *n_r = n;
    return 0;
}

void store_metadata_free(struct store_metadata *entries, size_t n)
{
    for (size_t i = 0; entries && i < n; i++) {
        free(entries[i].name);
        free(entries[i].value);
    }
    free(entries);
}
