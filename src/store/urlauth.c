/*
 * urlauth.c - RFC 4467 URLAUTH mailbox access keys of a user (store.h): one secret random
 * key per mailbox, kept in the user's index.db (table urlauth_keys, made on first use),
 * from which the "INTERNAL" mechanism's tokens are computed (imap/urlauth.c).
 *
 * A key is bound to the mailbox's name and UIDVALIDITY: a mailbox deleted and made again
 * (new UIDVALIDITY) or renamed gets a new key, so no URL generated for the old one works
 * for the new one. RESETKEY deletes keys; the next GENURLAUTH makes a new one, and every
 * URL made with the old key stops working (RFC 4467 §6.1).
 *
 * The keys never leave the store: the index file is the user's (mode 0600, run_user) and
 * no command shows them.
 */
#include "store/store-private.h"

#include <openssl/rand.h>
#include <string.h>

static const char urlauth_schema[] =
    "CREATE TABLE IF NOT EXISTS urlauth_keys(mailbox TEXT NOT NULL,"
    " uidvalidity INTEGER NOT NULL, key BLOB NOT NULL,"
    " PRIMARY KEY(mailbox, uidvalidity)) WITHOUT ROWID;";

int store_urlauth_key(struct store_user *u, const char *mailbox, bool create,
                      unsigned char key_r[STORE_URLAUTH_KEY_SIZE], uint32_t *uidvalidity_r,
                      char **error_r)
{
    char canon[300], path[4200];
    struct store_mbox_row row;
    if (store_mailbox_lookup(u, mailbox, canon, sizeof canon, path, sizeof path, &row, error_r) < 0)
        return -1;
    *uidvalidity_r = row.uidvalidity;
    /* reading takes no write lock (URLFETCH, BURL); making a key is one transaction, so
     * two sessions making one at once agree on it */
    if (store_index_step_static(u->db, urlauth_schema, error_r) < 0 ||
        (create && store_index_begin(u->db, error_r) < 0))
        return -1;
    int found = -1;
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(u->db,
                            "SELECT key FROM urlauth_keys WHERE mailbox = ? AND uidvalidity = ?",
                            &st) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, row.uidvalidity);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == STORE_URLAUTH_KEY_SIZE) {
            memcpy(key_r, sqlite3_column_blob(st, 0), STORE_URLAUTH_KEY_SIZE);
            found = 1;
        } else if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
            found = 0; /* none (a row of another size is not one of ours: replaced) */
        }
    }
    store_index_done(st);
    st = NULL;
    if (found == 0 && create) {
        /* RFC 4467 §7: the key is secret and unpredictable: the CSPRNG's bytes */
        if (RAND_bytes(key_r, STORE_URLAUTH_KEY_SIZE) != 1) {
            store_error(error_r, "no random bytes for a URLAUTH key");
            found = -1;
        } else if (store_index_prepare(u->db,
                                       "INSERT OR REPLACE INTO urlauth_keys(mailbox, uidvalidity,"
                                       " key) VALUES(?, ?, ?)",
                                       &st) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, row.uidvalidity);
            sqlite3_bind_blob(st, 3, key_r, STORE_URLAUTH_KEY_SIZE, SQLITE_STATIC);
            found = sqlite3_step(st) == SQLITE_DONE ? 1 : -1;
        }
        store_index_done(st);
    }
    if (found < 0) {
        if (!*error_r)
            store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        if (create)
            store_index_rollback(u->db);
        return -1;
    }
    if (create && store_index_commit(u->db, error_r) < 0)
        return -1;
    return found;
}

int store_urlauth_reset(struct store_user *u, const char *mailbox, char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char canon[300], path[4200];
    struct store_mbox_row row;
    if (mailbox &&
        store_mailbox_lookup(u, mailbox, canon, sizeof canon, path, sizeof path, &row, error_r) < 0)
        return -1;
    if (store_index_step_static(u->db, urlauth_schema, error_r) < 0)
        return -1;
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_ERROR;
    if (store_index_prepare(u->db,
                            mailbox ? "DELETE FROM urlauth_keys WHERE mailbox = ?"
                                    : "DELETE FROM urlauth_keys",
                            &st) == SQLITE_OK) {
        if (mailbox)
            sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    store_index_done(st);
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        return -1;
    }
    return 0;
}
