/*
 * index.c - the per-user SQLite index (schema in store-private.h): opening, transactions,
 * mailbox rows, UID/modseq allocation and usage.
 *
 * Durability note: the index runs WAL with synchronous=NORMAL. The Maildir is the truth
 * (bodies and flags are fsync'd before we acknowledge), and a process crash (kill -9)
 * never loses a committed transaction; only a power loss can roll back the last index
 * commits, after which the next sync re-indexes the files.
 */
#include "store/store-private.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STORE_INDEX_BUSY_MS     30000
#define STORE_INDEX_VERSION     3
#define STORE_INDEX_VERSION_STR "3"

static const char store_index_schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS mailboxes("
    " id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, uidvalidity INTEGER NOT NULL,"
    " uidnext INTEGER NOT NULL DEFAULT 1, highestmodseq INTEGER NOT NULL DEFAULT 1,"
    " special_use TEXT, subscribed INTEGER NOT NULL DEFAULT 0,"
    " first_recent_uid INTEGER NOT NULL DEFAULT 1,"
    " cur_mtime INTEGER NOT NULL DEFAULT 0, new_mtime INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS messages("
    " mailbox INTEGER NOT NULL, uid INTEGER NOT NULL, basename TEXT NOT NULL,"
    " location TEXT NOT NULL, flags INTEGER NOT NULL DEFAULT 0, keywords TEXT,"
    " size INTEGER NOT NULL, vsize INTEGER NOT NULL, internaldate INTEGER NOT NULL,"
    " modseq INTEGER NOT NULL, envelope TEXT, bodystructure TEXT,"
    " PRIMARY KEY(mailbox, uid), UNIQUE(mailbox, basename)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS cache(mailbox INTEGER NOT NULL, uid INTEGER NOT NULL,"
    " field TEXT NOT NULL, value TEXT, PRIMARY KEY(mailbox, uid, field)) WITHOUT ROWID;"
    /* Version 2: the user's usage kept by triggers, so a quota check (every RCPT and
     * delivery) reads one row instead of summing every message. */
    "CREATE TABLE IF NOT EXISTS usage(id INTEGER PRIMARY KEY CHECK (id = 1),"
    " bytes INTEGER NOT NULL, messages INTEGER NOT NULL);"
    "INSERT OR REPLACE INTO usage(id, bytes, messages)"
    " SELECT 1, COALESCE(SUM(size), 0), COUNT(*) FROM messages;"
    STORE_INDEX_USAGE_ADD_TRIGGER
    "CREATE TRIGGER IF NOT EXISTS usage_del AFTER DELETE ON messages BEGIN"
    " UPDATE usage SET bytes = bytes - OLD.size, messages = messages - 1 WHERE id = 1; END;"
    /* Version 3: subscriptions are names, apart from mailboxes (RFC 3501 §6.3.6: deleting
     * a mailbox leaves its name subscribed); mailboxes.subscribed is no longer used. */
    "CREATE TABLE IF NOT EXISTS subscriptions(name TEXT PRIMARY KEY) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO subscriptions(name) SELECT name FROM mailboxes WHERE subscribed = 1;"
    /* Version 3: SORT/THREAD keys of a message (sortkeys.c), gone with the message */
    "CREATE TABLE IF NOT EXISTS sortkeys(mailbox INTEGER NOT NULL, uid INTEGER NOT NULL,"
    " sent INTEGER NOT NULL, is_reply INTEGER NOT NULL, subject TEXT, from_ TEXT, to_ TEXT,"
    " cc TEXT, dfrom TEXT, dto TEXT, msgid TEXT, refs TEXT,"
    " PRIMARY KEY(mailbox, uid)) WITHOUT ROWID;"
    "CREATE TRIGGER IF NOT EXISTS sortkeys_del AFTER DELETE ON messages BEGIN"
    " DELETE FROM sortkeys WHERE mailbox = OLD.mailbox AND uid = OLD.uid; END;"
    "CREATE TRIGGER IF NOT EXISTS sortkeys_move AFTER UPDATE OF mailbox, uid ON messages BEGIN"
    " DELETE FROM sortkeys WHERE mailbox = OLD.mailbox AND uid = OLD.uid; END;"
    /* Version 3: expunged UIDs with the mod-sequence of their expunge (RFC 7162 QRESYNC
     * VANISHED); complete for expunges above mailboxes.vanished_since (the highest
     * mod-sequence when tracking began: mailboxes from before version 3 have older
     * expunges untracked) */
    "CREATE TABLE IF NOT EXISTS expunged(mailbox INTEGER NOT NULL, uid INTEGER NOT NULL,"
    " modseq INTEGER NOT NULL, PRIMARY KEY(mailbox, uid)) WITHOUT ROWID;"
    /* Version 3: RFC 5464 METADATA entries (metadata.c); mailbox "" is the server */
    "CREATE TABLE IF NOT EXISTS metadata(mailbox TEXT NOT NULL, name TEXT NOT NULL,"
    " value BLOB, PRIMARY KEY(mailbox, name)) WITHOUT ROWID;";

/* Version 3 column added to an existing mailboxes table (store_index_migrate). */
static const char store_index_add_vanished[] =
    "ALTER TABLE mailboxes ADD COLUMN vanished_since INTEGER NOT NULL DEFAULT 0;"
    "UPDATE mailboxes SET vanished_since = highestmodseq;";

/* Does the mailboxes table have the column vanished_since (version 3)? */
static bool store_index_has_vanished(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    bool has = false;
    if (sqlite3_prepare_v2(db, "PRAGMA table_info(mailboxes)", -1, &st, NULL) == SQLITE_OK)
        while (!has && sqlite3_step(st) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(st, 1);
            has = name && strcmp(name, "vanished_since") == 0;
        }
    sqlite3_finalize(st);
    return has;
}

int store_index_exec(sqlite3 *db, const char *sql, char **error_r)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        store_error(error_r, "index: %s", err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

/* Busy handler: SQLite's default backs off to 100 ms sleeps, which starves concurrent
 * deliveries to one user (each holds the write lock for well under a millisecond).
 * Retry quickly with a short growing pause instead, for at most STORE_INDEX_BUSY_MS. */
static int store_index_busy(void *arg, int count)
{
    (void)arg;
    static const unsigned delays_us[] = {50, 100, 200, 400, 800, 1000, 2000};
    size_t n = sizeof delays_us / sizeof delays_us[0];
    unsigned us = delays_us[(size_t)count < n ? (size_t)count : n - 1];
    /* total waited so far is at most count * 2 ms; give up past the limit */
    if ((uint64_t)count * 2 > STORE_INDEX_BUSY_MS)
        return 0;
    usleep(us);
    return 1;
}

/* Inside a transaction: bring the schema to STORE_INDEX_VERSION. 0 or -1. */
static int store_index_schema_apply(sqlite3 *db, char **error_r)
{
    if (store_index_exec(db, store_index_schema, error_r) < 0 ||
        (!store_index_has_vanished(db) &&
         store_index_exec(db, store_index_add_vanished, error_r) < 0) ||
        store_index_exec(db, "PRAGMA user_version = " STORE_INDEX_VERSION_STR, error_r) < 0)
        return -1;
    return 0;
}

/* Upgrade the schema of an index made by an older version, once, under the write lock
 * (several sessions may open it at the same moment). */
static int store_index_migrate(sqlite3 *db, char **error_r)
{
    if (store_index_exec(db, "PRAGMA journal_mode=WAL", error_r) < 0 ||
        store_index_begin(db, error_r) < 0)
        return -1;
    int version = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < STORE_INDEX_VERSION && store_index_schema_apply(db, error_r) < 0) {
        store_index_rollback(db);
        return -1;
    }
    return store_index_commit(db, error_r);
}

void (*store_index_open_hook)(sqlite3 *db);

/*
 * A new user's index is made whole in a private file, then linked into place: no other
 * connection ever meets a half-made database. When every session opened index.db and
 * created the schema in it, the processes that open a new user's index at the same
 * moment (the first deliveries, concurrent logins in two workers) met each other's
 * rollback journal while the first switched the file to WAL, and failed with "disk I/O
 * error" (SQLITE_IOERR_DELETE_NOENT) or "database is locked". The schema is written in
 * rollback mode and the switch to WAL comes last, so the private file is complete
 * without its -wal when closed. 0, or -1 with *error_r.
 */
static int store_index_create(const char *path, char **error_r)
{
    static atomic_uint n_created;
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.new.%ld.%u", path, (long)getpid(),
             atomic_fetch_add(&n_created, 1));
    /* The index holds subjects and addresses: private to the user (0600), which SQLite
     * then also gives the -wal and -shm files (it copies the database file's mode). */
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        store_error(error_r, "create %s: %s", tmp, strerror(errno));
        return -1;
    }
    close(fd);
    sqlite3 *db = NULL;
    int rc = -1;
    if (sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        store_error(error_r, "open %s: %s", tmp, db ? sqlite3_errmsg(db) : "out of memory");
    } else if (store_index_exec(db, "BEGIN", error_r) == 0) {
        if (store_index_schema_apply(db, error_r) == 0 &&
            store_index_exec(db, "COMMIT", error_r) == 0 &&
            store_index_exec(db, "PRAGMA journal_mode=WAL", error_r) == 0)
            rc = 0;
        else
            (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (db && sqlite3_close(db) != SQLITE_OK && rc == 0) {
        store_error(error_r, "close %s: %s", tmp, sqlite3_errmsg(db));
        rc = -1;
    }
    /* EEXIST: another session made it first; theirs is as good as ours */
    if (rc == 0 && link(tmp, path) < 0 && errno != EEXIST) {
        store_error(error_r, "link %s: %s", path, strerror(errno));
        rc = -1;
    }
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char leftover[4400];
        snprintf(leftover, sizeof leftover, "%s%s", tmp, suffixes[i]);
        (void)unlink(leftover);
    }
    return rc;
}

static sqlite3 *store_index_open_once(const char *home, int *code_r, char **error_r)
{
    char path[4200];
    if (snprintf(path, sizeof path, "%s/index.db", home) >= (int)sizeof path) {
        store_error(error_r, "home path too long");
        return NULL;
    }
    struct stat st_home;
    if (stat(home, &st_home) < 0 && store_io_mkdir_p(home) < 0) {
        store_error(error_r, "mkdir %s: %s", home, strerror(errno));
        return NULL;
    }
    if (access(path, F_OK) < 0) {
        if (errno != ENOENT) {
            store_error(error_r, "%s: %s", path, strerror(errno));
            return NULL;
        }
        if (store_index_create(path, error_r) < 0)
            return NULL;
    }
    sqlite3 *db = NULL;
    /* no SQLITE_OPEN_CREATE: an index is only ever made by store_index_create */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        store_error(error_r, "open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        store_index_close(db);
        return NULL;
    }
    sqlite3_busy_handler(db, store_index_busy, NULL);
    /* A connection's page cache is bounded (pooled connections keep theirs): 1 MB.
     * temp_store=MEMORY: statement journals (each INSERT/UPDATE inside our transactions
     * keeps one, for the statement's own rollback) stay in memory instead of a temp file
     * written page by page (a 100,000-message index build made 300,000 pwrite calls). */
    if (store_index_exec(db,
                         "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-1024;"
                         " PRAGMA temp_store=MEMORY",
                         error_r) < 0) {
        *code_r = sqlite3_extended_errcode(db);
        store_index_close(db);
        return NULL;
    }
    /* Every delivery opens the index: upgrade the schema of an index made by an older
     * version only (user_version marks it; journal_mode=WAL is persistent in the file). */
    int version = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < STORE_INDEX_VERSION && store_index_migrate(db, error_r) < 0) {
        *code_r = sqlite3_extended_errcode(db);
        store_index_close(db);
        return NULL;
    }
    if (store_index_open_hook)
        store_index_open_hook(db);
    return db;
}

/* Several processes may open a user's index at the same moment (a delivery in the
 * queue process, logins in two workers). A new index appears whole (store_index_create);
 * what is left is SQLITE_BUSY, or an I/O error while the shared-memory index is being
 * set up, where the busy handler is not consulted (and an upgrade of an old index by
 * several at once). Worth a few tries: up to STORE_INDEX_OPEN_TRIES, a few milliseconds
 * apart. */
#define STORE_INDEX_OPEN_TRIES 50

sqlite3 *store_index_open(const char *home, char **error_r)
{
    for (int attempt = 1;; attempt++) {
        int code = SQLITE_OK;
        char *err = NULL;
        sqlite3 *db = store_index_open_once(home, &code, &err);
        if (db) {
            free(err);
            return db;
        }
        int primary = code & 0xff;
        bool is_race = primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_IOERR;
        if (!is_race || attempt >= STORE_INDEX_OPEN_TRIES) {
            if (error_r)
                *error_r = err;
            else
                free(err);
            return NULL;
        }
        free(err);
        usleep((useconds_t)(2000 + (attempt % 8) * 1000));
    }
}

/* Transactions use cached statements too: sqlite3_exec would parse the text each time. */
int store_index_begin(sqlite3 *db, char **error_r)
{
    return store_index_step_static(db, "BEGIN IMMEDIATE", error_r);
}

int store_index_commit(sqlite3 *db, char **error_r)
{
    if (store_index_step_static(db, "COMMIT", error_r) < 0) {
        store_index_rollback(db);
        return -1;
    }
    return 0;
}

void store_index_rollback(sqlite3 *db)
{
    (void)store_index_step_static(db, "ROLLBACK", NULL);
}

int store_index_mailbox_get(sqlite3 *db, const char *name, struct store_mbox_row *row_r,
                            char **error_r)
{
    sqlite3_stmt *st = NULL;
    /* the usage row comes along: a quota check costs no statement of its own */
    if (store_index_prepare(db,
                            "SELECT id, uidvalidity, uidnext, highestmodseq, first_recent_uid,"
                            " cur_mtime, new_mtime, (SELECT bytes FROM usage WHERE id = 1)"
                            " FROM mailboxes WHERE name = ?",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret;
    if (rc == SQLITE_ROW) {
        row_r->id = sqlite3_column_int64(st, 0);
        row_r->uidvalidity = (uint32_t)sqlite3_column_int64(st, 1);
        row_r->uidnext = (uint32_t)sqlite3_column_int64(st, 2);
        row_r->highestmodseq = (uint64_t)sqlite3_column_int64(st, 3);
        row_r->first_recent_uid = (uint32_t)sqlite3_column_int64(st, 4);
        row_r->cur_mtime = sqlite3_column_int64(st, 5);
        row_r->new_mtime = sqlite3_column_int64(st, 6);
        row_r->user_bytes =
            sqlite3_column_type(st, 7) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 7);
        ret = 0;
    } else if (rc == SQLITE_DONE) {
        ret = 1;
    } else {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        ret = -1;
    }
    store_index_done(st);
    return ret;
}

/* A new UIDVALIDITY: the time, but always above every value handed out before, so a
 * mailbox deleted and re-created never repeats one (RFC 3501 §2.3.1.1). */
static int64_t store_index_next_uidvalidity(sqlite3 *db)
{
    int64_t last = 0;
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(db, "SELECT value FROM meta WHERE key = 'last_uidvalidity'", &st) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        last = sqlite3_column_int64(st, 0);
    store_index_done(st);
    int64_t v = (int64_t)time(NULL) & 0xffffffff;
    if (v <= last)
        v = last + 1;
    if (v > 0xffffffffLL || v <= 0)
        v = 1;
    st = NULL;
    if (store_index_prepare(db,
                            "INSERT OR REPLACE INTO meta(key, value) VALUES('last_uidvalidity', ?)",
                            &st) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, v);
        sqlite3_step(st);
    }
    store_index_done(st);
    return v;
}

int store_index_mailbox_add(sqlite3 *db, const char *name, const char *special_use,
                            struct store_mbox_row *row_r, char **error_r)
{
    int64_t uidvalidity = store_index_next_uidvalidity(db);
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(db,
                            "INSERT INTO mailboxes(name, uidvalidity, special_use, subscribed)"
                            " VALUES(?, ?, ?, ?)",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, uidvalidity);
    if (special_use)
        sqlite3_bind_text(st, 3, special_use, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    bool is_auto_subscribed = special_use || strcmp(name, "INBOX") == 0;
    sqlite3_bind_int(st, 4, is_auto_subscribed ? 1 : 0);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        store_index_done(st);
        return -1;
    }
    store_index_done(st);
    int64_t id = sqlite3_last_insert_rowid(db);
    if (is_auto_subscribed && store_index_subscription_set(db, name, true, error_r) < 0)
        return -1;
    memset(row_r, 0, sizeof *row_r);
    row_r->id = id;
    row_r->uidvalidity = (uint32_t)uidvalidity;
    row_r->uidnext = 1;
    row_r->highestmodseq = 1;
    row_r->user_bytes = -1;
    row_r->first_recent_uid = 1;
    return 0;
}

int store_index_mailbox_ensure(sqlite3 *db, const char *home, const char *name,
                               struct store_mbox_row *row_r, char **error_r)
{
    int r = store_index_mailbox_get(db, name, row_r, error_r);
    if (r <= 0)
        return r;
    char path[4200];
    if (store_mailbox_path(home, name, path, sizeof path) < 0) {
        store_error(error_r, "Invalid mailbox name");
        return -1;
    }
    if (store_maildir_create(path, strcmp(name, "INBOX") == 0) < 0) {
        store_error(error_r, "create %s: %s", path, strerror(errno));
        return -1;
    }
    if (store_index_begin(db, error_r) < 0)
        return -1;
    /* Another session may have added it meanwhile: look again under the lock. */
    r = store_index_mailbox_get(db, name, row_r, error_r);
    if (r == 1)
        r = store_index_mailbox_add(db, name, NULL, row_r, error_r);
    /* a folder moved in from Dovecot keeps its UIDs (before anything can take UID 1) */
    if (r == 0 && store_sync_import_dovecot(db, path, row_r, error_r) < 0)
        r = -1;
    if (r < 0) {
        store_index_rollback(db);
        return -1;
    }
    return store_index_commit(db, error_r);
}

int store_index_message_add(sqlite3 *db, struct store_mbox_row *row, const char *basename,
                            const char *location, unsigned flags, const char *keywords,
                            uint64_t size, uint64_t vsize, time_t internaldate, uint32_t *uid_r,
                            char **error_r)
{
    sqlite3_stmt *st = NULL;
    /* A sync may have indexed the file between its rename and this insert. */
    if (store_index_prepare(db, "SELECT uid FROM messages WHERE mailbox = ? AND basename = ?",
                            &st) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, row->id);
    sqlite3_bind_text(st, 2, basename, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *uid_r = (uint32_t)sqlite3_column_int64(st, 0);
        store_index_done(st);
        return 0;
    }
    store_index_done(st);
    st = NULL;
    if (row->uidnext == 0 || row->uidnext == UINT32_MAX) {
        store_error(error_r, "UID space exhausted");
        return -1;
    }
    uint32_t uid = row->uidnext;
    uint64_t modseq = row->highestmodseq + 1;
    if (store_index_prepare(db,
                            "INSERT INTO messages(mailbox, uid, basename, location, flags,"
                            " keywords, size, vsize, internaldate, modseq)"
                            " VALUES(?,?,?,?,?,?,?,?,?,?)",
                            &st) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, row->id);
    sqlite3_bind_int64(st, 2, uid);
    sqlite3_bind_text(st, 3, basename, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, location, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, (int)(flags & ~(unsigned)STORE_FLAG_RECENT));
    if (keywords && *keywords)
        sqlite3_bind_text(st, 6, keywords, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    sqlite3_bind_int64(st, 7, (int64_t)size);
    sqlite3_bind_int64(st, 8, (int64_t)vsize);
    sqlite3_bind_int64(st, 9, (int64_t)internaldate);
    sqlite3_bind_int64(st, 10, (int64_t)modseq);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    store_index_done(st);
    row->uidnext = uid + 1;
    row->highestmodseq = modseq;
    *uid_r = uid;
    return 0;
fail:
    store_error(error_r, "index: %s", sqlite3_errmsg(db));
    store_index_done(st);
    return -1;
}

int store_index_mailbox_save(sqlite3 *db, const struct store_mbox_row *row, char **error_r)
{
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(db,
                            "UPDATE mailboxes SET uidnext = ?, highestmodseq = ?,"
                            " first_recent_uid = ?, cur_mtime = ?, new_mtime = ? WHERE id = ?",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, row->uidnext);
    sqlite3_bind_int64(st, 2, (int64_t)row->highestmodseq);
    sqlite3_bind_int64(st, 3, row->first_recent_uid);
    sqlite3_bind_int64(st, 4, row->cur_mtime);
    sqlite3_bind_int64(st, 5, row->new_mtime);
    sqlite3_bind_int64(st, 6, row->id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        store_index_done(st);
        return -1;
    }
    store_index_done(st);
    return 0;
}

int64_t store_index_usage(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    /* the usage row, or (should it be missing) the sum itself */
    if (store_index_prepare(db,
                            "SELECT COALESCE((SELECT bytes FROM usage WHERE id = 1),"
                            " (SELECT COALESCE(SUM(size), 0) FROM messages))",
                            &st) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    store_index_done(st);
    return v;
}

/* ---- connection pool ----------------------------------------------------------------
 * Deliveries and sessions would otherwise open and close a user's index again and again:
 * closing the last connection checkpoints the WAL (several fsyncs) and the next open has
 * to rebuild the WAL index and re-read the schema. Idle connections are kept here, found
 * by home through a hash table, the least recently released closed first when the pool
 * is full. A session holds a connection only while a command runs (store_user_idle), so
 * all sessions of one user share the few connections its concurrent commands need, and an
 * idle session holds no SQLite memory and no descriptor. A connection is used by one
 * thread at a time; pooled connections keep their prepared statements. */
#define STORE_INDEX_POOL_MAX     256 /* idle connections kept (2 descriptors each) */
#define STORE_INDEX_POOL_BUCKETS 512
/* Idle connections kept per user: a burst (a delivery waking every IDLE session of a
 * user at once) opens one per busy worker thread; beyond this many they are closed on
 * release (not the last one, so no checkpoint). */
#define STORE_INDEX_POOL_PER_HOME 2

struct pooled_db {
    char *home;
    sqlite3 *db;
    dev_t dev; /* identity of index.db when pooled: a user deleted and re-created */
    ino_t ino; /* meanwhile must not get a connection to the old, unlinked file */
    struct pooled_db *bucket_next;         /* same hash bucket */
    struct pooled_db *lru_prev, *lru_next; /* lru_prev = more recently released */
};

/* dev/ino of <home>/index.db; false if absent. */
static bool index_file_id(const char *home, dev_t *dev_r, ino_t *ino_r)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/index.db", home);
    struct stat st;
    if (stat(path, &st) < 0)
        return false;
    *dev_r = st.st_dev;
    *ino_r = st.st_ino;
    return true;
}

static pthread_mutex_t index_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pooled_db *index_pool_buckets[STORE_INDEX_POOL_BUCKETS];
static struct pooled_db *index_pool_newest, *index_pool_oldest;
static size_t index_pool_n;

static size_t index_pool_hash(const char *home)
{
    return store_path_hash(home) % STORE_INDEX_POOL_BUCKETS;
}

/* Unlink p from its bucket and the LRU list (pool lock held). */
static void index_pool_unlink(struct pooled_db *p)
{
    struct pooled_db **pp = &index_pool_buckets[index_pool_hash(p->home)];
    while (*pp && *pp != p)
        pp = &(*pp)->bucket_next;
    if (*pp)
        *pp = p->bucket_next;
    if (p->lru_prev)
        p->lru_prev->lru_next = p->lru_next;
    else
        index_pool_newest = p->lru_next;
    if (p->lru_next)
        p->lru_next->lru_prev = p->lru_prev;
    else
        index_pool_oldest = p->lru_prev;
    index_pool_n--;
}

sqlite3 *store_index_acquire(const char *home, char **error_r)
{
    dev_t dev;
    ino_t ino;
    bool has_file = index_file_id(home, &dev, &ino);
    pthread_mutex_lock(&index_pool_lock);
    struct pooled_db *p = index_pool_buckets[index_pool_hash(home)];
    while (p && strcmp(p->home, home) != 0)
        p = p->bucket_next;
    if (p)
        index_pool_unlink(p);
    pthread_mutex_unlock(&index_pool_lock);
    if (!p)
        return store_index_open(home, error_r);
    sqlite3 *db = p->db;
    bool is_same_file = has_file && p->dev == dev && p->ino == ino;
    free(p->home);
    free(p);
    if (is_same_file)
        return db;
    store_index_close(db); /* the file was replaced: forget the old connection */
    return store_index_open(home, error_r);
}

void store_index_release(const char *home, sqlite3 *db)
{
    if (!db)
        return;
    /* never pool a connection left inside a transaction */
    if (!sqlite3_get_autocommit(db)) {
        store_index_close(db);
        return;
    }
    dev_t dev;
    ino_t ino;
    struct pooled_db *p = calloc(1, sizeof *p);
    if (!p || !(p->home = strdup(home)) || !index_file_id(home, &dev, &ino)) {
        if (p)
            free(p->home);
        free(p);
        store_index_close(db);
        return;
    }
    p->db = db;
    p->dev = dev;
    p->ino = ino;
    struct pooled_db *evict = NULL;
    pthread_mutex_lock(&index_pool_lock);
    size_t b = index_pool_hash(home), same_home = 0;
    for (struct pooled_db *q = index_pool_buckets[b]; q; q = q->bucket_next)
        if (strcmp(q->home, home) == 0)
            same_home++;
    if (same_home >= STORE_INDEX_POOL_PER_HOME) {
        pthread_mutex_unlock(&index_pool_lock);
        store_index_close(db);
        free(p->home);
        free(p);
        return;
    }
    if (index_pool_n >= STORE_INDEX_POOL_MAX) {
        evict = index_pool_oldest;
        index_pool_unlink(evict);
    }
    p->bucket_next = index_pool_buckets[b];
    index_pool_buckets[b] = p;
    p->lru_next = index_pool_newest;
    if (index_pool_newest)
        index_pool_newest->lru_prev = p;
    else
        index_pool_oldest = p;
    index_pool_newest = p;
    index_pool_n++;
    pthread_mutex_unlock(&index_pool_lock);
    if (evict) { /* outside the lock: closing may checkpoint (fsync) */
        store_index_close(evict->db);
        free(evict->home);
        free(evict);
    }
}

void store_index_pool_flush(void)
{
    pthread_mutex_lock(&index_pool_lock);
    while (index_pool_oldest) {
        struct pooled_db *p = index_pool_oldest;
        index_pool_unlink(p);
        store_index_close(p->db);
        free(p->home);
        free(p);
    }
    pthread_mutex_unlock(&index_pool_lock);
}

int store_index_subscription_set(sqlite3 *db, const char *name, bool subscribe, char **error_r)
{
    sqlite3_stmt *st = NULL;
    const char *sql = subscribe ? "INSERT OR IGNORE INTO subscriptions(name) VALUES(?)"
                                : "DELETE FROM subscriptions WHERE name = ?";
    int rc = SQLITE_ERROR;
    if (store_index_prepare(db, sql, &st) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE)
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
    store_index_done(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int store_index_tombstones_prune(sqlite3 *db, int64_t mailbox, size_t max, size_t keep,
                                 char **error_r)
{
    /* Counting stops past max rows (LIMIT/OFFSET), and the sort below runs only once per
     * max - keep new tombstones: between prunes an expunge costs one bounded scan. */
    sqlite3_stmt *st = NULL;
    bool is_over = false;
    int64_t cutoff = -1;
    int rc = store_index_prepare(
        db, "SELECT 1 FROM expunged WHERE mailbox = ? LIMIT 1 OFFSET ?", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, mailbox);
        sqlite3_bind_int64(st, 2, (int64_t)max);
        rc = sqlite3_step(st);
        is_over = rc == SQLITE_ROW;
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    store_index_done(st);
    st = NULL;
    if (rc == SQLITE_OK && is_over) {
        /* the newest `keep` stay; every row at or below the next one's mod-sequence goes
         * (a mod-sequence is never split: VANISHED (EARLIER) is exact above the floor) */
        rc = store_index_prepare(db,
                                 "SELECT modseq FROM expunged WHERE mailbox = ?"
                                 " ORDER BY modseq DESC LIMIT 1 OFFSET ?",
                                 &st);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, mailbox);
            sqlite3_bind_int64(st, 2, (int64_t)keep);
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW)
                cutoff = sqlite3_column_int64(st, 0);
            rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        store_index_done(st);
        st = NULL;
    }
    static const char *const prune[] = {
        "DELETE FROM expunged WHERE mailbox = ?1 AND modseq <= ?2",
        /* RFC 7162 §3.2.5.1: below the floor VANISHED (EARLIER) names every UID the
         * client may have had (store_mailbox_vanished) */
        "UPDATE mailboxes SET vanished_since = max(vanished_since, ?2) WHERE id = ?1",
    };
    for (size_t k = 0; rc == SQLITE_OK && cutoff >= 0 && k < 2; k++) {
        rc = store_index_prepare(db, prune[k], &st);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, mailbox);
            sqlite3_bind_int64(st, 2, cutoff);
            rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        }
        store_index_done(st);
        st = NULL;
    }
    if (rc != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

int store_index_tombstones_bound(sqlite3 *db, int64_t mailbox, uint64_t modseq, size_t n_added,
                                 char **error_r)
{
    if (n_added == 0 || (n_added < STORE_TOMBSTONES_CHECK && modseq % STORE_TOMBSTONES_CHECK != 0))
        return 0;
    return store_index_tombstones_prune(db, mailbox, STORE_TOMBSTONES_MAX, STORE_TOMBSTONES_KEEP,
                                        error_r);
}

int store_index_tombstone_add(sqlite3 *db, int64_t mailbox, uint32_t uid, uint64_t modseq,
                              char **error_r)
{
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_ERROR;
    if (store_index_prepare(db,
                            "INSERT OR REPLACE INTO expunged(mailbox, uid, modseq) VALUES(?, ?, ?)",
                            &st) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, mailbox);
        sqlite3_bind_int64(st, 2, uid);
        sqlite3_bind_int64(st, 3, (int64_t)modseq);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE)
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
    store_index_done(st);
    return rc == SQLITE_DONE ? 0 : -1;
}
