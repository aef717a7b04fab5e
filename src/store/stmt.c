/*
 * stmt.c - the index's prepared-statement cache.
 *
 * Parsing SQL showed up in every profile (sqlite3Parser on the delivery path and on every
 * IMAP command): each store function prepared its text anew. A connection now keeps the
 * statements it prepared with static SQL text and hands them out again:
 *
 *     sqlite3_stmt *st;
 *     if (store_index_prepare(db, "SELECT ... WHERE id = ?", &st) != SQLITE_OK) ...
 *     sqlite3_bind_...(st, ...); sqlite3_step(st); ...
 *     store_index_done(st);      (instead of sqlite3_finalize)
 *
 * No table of our own: SQLite already lists a connection's statements (sqlite3_next_stmt)
 * with their text (sqlite3_sql). The statements live as long as the connection, so
 * connections must be closed with store_index_close (sqlite3_close refuses a connection
 * with live statements). Only static SQL text may go through the cache, so the number of
 * statements per connection stays bounded; SQL built at run time keeps
 * sqlite3_prepare_v2/sqlite3_finalize.
 *
 * store_index_done must be reached on every path: a statement that is not reset keeps its
 * read transaction, i.e. an old snapshot of the index (stale data for the next use outside
 * a transaction) and a WAL reader mark that blocks checkpoints.
 */
#include "store/store-private.h"

#include <string.h>

/* Statements handed out and not yet given back, per thread (a connection is used by one
 * thread at a time). A statement that was handed out but not stepped yet is not "busy" to
 * SQLite (nor is one stepped to SQLITE_DONE), so without this list a nested prepare of the
 * same text could hand one statement to two users. Bounded: past it, new statements are
 * prepared and still tracked by SQLite, only not protected (nesting is never this deep). */
#define STMT_OUT_MAX 16
static _Thread_local sqlite3_stmt *stmt_out[STMT_OUT_MAX];
static _Thread_local size_t stmt_n_out;

static bool stmt_is_out(const sqlite3_stmt *st)
{
    for (size_t i = 0; i < stmt_n_out; i++)
        if (stmt_out[i] == st)
            return true;
    return false;
}

static void stmt_mark_out(sqlite3_stmt *st)
{
    if (stmt_n_out < STMT_OUT_MAX)
        stmt_out[stmt_n_out++] = st;
}

static void stmt_mark_back(const sqlite3_stmt *st)
{
    for (size_t i = 0; i < stmt_n_out; i++)
        if (stmt_out[i] == st) {
            stmt_out[i] = stmt_out[--stmt_n_out];
            return;
        }
}

int store_index_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st_r)
{
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st; st = sqlite3_next_stmt(db, st)) {
        const char *text = sqlite3_sql(st);
        if (text && strcmp(text, sql) == 0 && !sqlite3_stmt_busy(st) && !stmt_is_out(st)) {
            stmt_mark_out(st);
            *st_r = st;
            return SQLITE_OK;
        }
    }
    /* PERSISTENT: the statement stays for the connection's life (SQLite allocates it
     * outside its short-lived lookaside memory). */
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        *st_r = NULL;
        return rc;
    }
    if (!st) { /* only a comment or white space: not something we would cache */
        *st_r = NULL;
        return SQLITE_MISUSE;
    }
    stmt_mark_out(st);
    *st_r = st;
    return SQLITE_OK;
}

void store_index_done(sqlite3_stmt *st)
{
    if (!st)
        return;
    sqlite3_reset(st);          /* ends its read transaction (outside an explicit one) */
    sqlite3_clear_bindings(st); /* no pointer into the caller's memory stays behind */
    stmt_mark_back(st);
}

void store_index_close(sqlite3 *db)
{
    if (!db)
        return;
    sqlite3_stmt *st;
    while ((st = sqlite3_next_stmt(db, NULL)) != NULL) {
        stmt_mark_back(st);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
}

int store_index_step_static(sqlite3 *db, const char *sql, char **error_r)
{
    sqlite3_stmt *st = NULL;
    int rc = store_index_prepare(db, sql, &st);
    if (rc == SQLITE_OK) {
        do
            rc = sqlite3_step(st);
        while (rc == SQLITE_ROW);
    }
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        store_index_done(st);
        return -1;
    }
    store_index_done(st);
    return 0;
}
