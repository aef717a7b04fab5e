/*
 * penalty_store.c - the failed-login table's live entries in SQLite (penalty.h,
 * "persistence"), so that a restart of the auth process (a crash an attacker provoked,
 * or a wait for one) does not give the addresses it blocked a clean slate.
 *
 * One table, entry(address, account, failures, last_failure, blocked_until), rewritten
 * whole by each save in one transaction (at most PENALTY_ADDRESS_SLOTS +
 * PENALTY_PAIR_SLOTS rows: the table's own bound), so expired entries disappear from the
 * file as they disappear from memory. WAL with synchronous=NORMAL: a save survives the
 * process being killed (the pages are the kernel's), a power failure may lose the last
 * seconds of failures, which then only counts them again.
 */
#include "policy/penalty.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct penalty_store {
    sqlite3 *db;
    int64_t owner; /* this process's claim on the file (penalty_store_open) */
};

static const char penalty_schema[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS entry (address TEXT NOT NULL, account TEXT NOT NULL,"
    " failures INTEGER NOT NULL, last_failure INTEGER NOT NULL,"
    " blocked_until INTEGER NOT NULL, PRIMARY KEY (address, account)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS owner (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " token INTEGER NOT NULL);";

struct penalty_store *penalty_store_open(const char *path, char **error_r)
{
    *error_r = NULL;
    /* it names clients and accounts: readable by its owner only */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0)
        close(fd);
    struct penalty_store *ps = calloc(1, sizeof *ps);
    char *err = NULL;
    if (!ps || fd < 0 ||
        sqlite3_open_v2(path, &ps->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(ps->db, 5000) != SQLITE_OK ||
        sqlite3_exec(ps->db, penalty_schema, NULL, NULL, &err) != SQLITE_OK) {
        size_t n = strlen(path) + 160;
        *error_r = malloc(n);
        if (*error_r)
            snprintf(*error_r, n, "%s: %s", path,
                     err      ? err
                     : !ps    ? "out of memory"
                     : fd < 0 ? "cannot create"
                     : ps->db ? sqlite3_errmsg(ps->db)
                              : "cannot open");
        sqlite3_free(err);
        penalty_store_close(ps);
        return NULL;
    }
    /* the file is this process's from now on: a process it replaces (a reload starts the
     * new auth process while the old one stops) no longer writes over what we save */
    if (getrandom(&ps->owner, sizeof ps->owner, 0) != (ssize_t)sizeof ps->owner)
        ps->owner = (int64_t)getpid() * 1000003 ^ (int64_t)(uintptr_t)ps;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ps->db, "INSERT OR REPLACE INTO owner (id, token) VALUES (1, ?)", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, ps->owner);
        (void)sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return ps;
}

/* Is the file still ours (no newer process claimed it)? Inside the save's transaction. */
static bool store_is_owned(struct penalty_store *ps)
{
    sqlite3_stmt *st = NULL;
    bool is_owned = false;
    if (sqlite3_prepare_v2(ps->db, "SELECT token FROM owner WHERE id = 1", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        is_owned = sqlite3_column_int64(st, 0) == ps->owner;
    sqlite3_finalize(st);
    return is_owned;
}

void penalty_store_close(struct penalty_store *ps)
{
    if (!ps)
        return;
    if (ps->db)
        sqlite3_close(ps->db);
    free(ps);
}

int penalty_store_save(struct penalty_store *ps, const struct penalty_record *records, size_t n)
{
    if (sqlite3_exec(ps->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(ps->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (!store_is_owned(ps)) {
        sqlite3_exec(ps->db, "ROLLBACK", NULL, NULL, NULL);
        return 1;
    }
    if (sqlite3_exec(ps->db, "DELETE FROM entry", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(ps->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(ps->db,
                                "INSERT OR REPLACE INTO entry (address, account, failures,"
                                " last_failure, blocked_until) VALUES (?, ?, ?, ?, ?)",
                                -1, &st, NULL) == SQLITE_OK
                 ? 0
                 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct penalty_record *r = &records[i];
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->account, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, r->failures);
        sqlite3_bind_int64(st, 4, r->last_failure_unix_ms);
        sqlite3_bind_int64(st, 5, r->blocked_until_unix_ms);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = -1;
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(ps->db, rc == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(ps->db, "ROLLBACK", NULL, NULL, NULL);
        rc = -1;
    }
    return rc;
}

/* Copy a text column into out[size] if it fits; false otherwise (the row is skipped). */
static bool column_text(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    int len = sqlite3_column_bytes(st, col);
    if (!t || len < 0 || (size_t)len >= size || memchr(t, '\0', (size_t)len))
        return false;
    memcpy(out, t, (size_t)len);
    out[len] = '\0';
    return true;
}

long penalty_store_load(struct penalty_store *ps, size_t max, struct penalty_record **records_r)
{
    *records_r = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ps->db,
                           "SELECT address, account, failures, last_failure, blocked_until"
                           " FROM entry LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)max);
    struct penalty_record *r = calloc(max ? max : 1, sizeof *r);
    if (!r) {
        sqlite3_finalize(st);
        return -1;
    }
    size_t n = 0;
    int step;
    while (n < max && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct penalty_record *x = &r[n];
        memset(x, 0, sizeof *x);
        sqlite3_int64 failures = sqlite3_column_int64(st, 2);
        if (!column_text(st, 0, x->key, sizeof x->key) ||
            !column_text(st, 1, x->account, sizeof x->account) || failures <= 0 ||
            failures > UINT32_MAX)
            continue; /* (penalty_table_import checks the rest) */
        x->failures = (unsigned)failures;
        x->last_failure_unix_ms = sqlite3_column_int64(st, 3);
        x->blocked_until_unix_ms = sqlite3_column_int64(st, 4);
        n++;
    }
    sqlite3_finalize(st);
    *records_r = r;
    return (long)n;
}
