/*
 * dir_sqlite.c - the default directory backend: <data_dir>/tern.db, SQLite in WAL mode
 * (dir_backend.h).
 *
 * Schema (PRAGMA user_version = 1):
 *   domains(name)                         local domains, lower case
 *   users(address, domain, quota, enabled, created)
 *   credentials(address, scheme, value)   one row per scheme in auth.password_schemes
 *   aliases(source, target)               one-to-many; source "@domain" is a catch-all
 *
 * Every change is one SQLite transaction, so a server reading concurrently sees a user
 * either with all of its credentials or not at all.
 *
 * Thread rules: one connection, every access under the backend's lock. WAL mode and a
 * busy timeout let `tern user add` (another process) write while the server reads. The
 * file is local: lookups never wait on a network (is_network is false).
 */
#include "auth/auth_internal.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SCHEMA_VERSION 1

static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS domains ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users ("
    "  address TEXT PRIMARY KEY NOT NULL,"
    "  domain TEXT NOT NULL REFERENCES domains(name),"
    "  quota INTEGER," /* NULL: quota.default */
    "  enabled INTEGER NOT NULL DEFAULT 1,"
    "  created INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS users_domain ON users(domain);"
    "CREATE TABLE IF NOT EXISTS credentials ("
    "  address TEXT NOT NULL REFERENCES users(address) ON DELETE CASCADE,"
    "  scheme TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (address, scheme));"
    "CREATE INDEX IF NOT EXISTS credentials_scheme ON credentials(scheme);"
    "CREATE TABLE IF NOT EXISTS aliases ("
    "  source TEXT NOT NULL," /* "local@domain" or "@domain" (catch-all) */
    "  target TEXT NOT NULL,"
    "  domain TEXT NOT NULL," /* the source's domain, for listing and domain del */
    "  created INTEGER NOT NULL,"
    "  PRIMARY KEY (source, target));"
    "CREATE INDEX IF NOT EXISTS aliases_domain ON aliases(domain);";

/* Lookup statements kept prepared on the connection (db_stmt): a delivered message takes
 * three or four directory lookups, and parsing their SQL every time was a fifth of the
 * auth process's CPU under the SMTP bench (docs/PERFORMANCE.md §12.8). */
#define DIR_SQLITE_STMTS 8

struct dir_sqlite {
    struct dir_backend be; /* first: a struct dir_backend * is a struct dir_sqlite * */
    pthread_mutex_t lock;
    sqlite3 *db;
    char *password_schemes;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } stmts[DIR_SQLITE_STMTS]; /* (lock held) */
    size_t n_stmts;
};

static struct dir_sqlite *sq(struct dir_backend *be)
{
    return (struct dir_sqlite *)be;
}

static void set_db_err(struct dir_sqlite *d, char **error_r)
{
    auth_set_error(error_r, "tern.db: %s", sqlite3_errmsg(d->db));
}

/* ---- statements (lock held) ------------------------------------------------------- */

/* The prepared statement for sql, kept on the connection for the next call (the first
 * DIR_SQLITE_STMTS texts asked for; any further one is prepared each time). Give it back
 * with db_stmt_done. NULL on error (sqlite3_errmsg says why). */
static sqlite3_stmt *db_stmt(struct dir_sqlite *d, const char *sql)
{
    for (size_t i = 0; i < d->n_stmts; i++)
        if (strcmp(d->stmts[i].sql, sql) == 0)
            return d->stmts[i].st;
    bool is_kept = d->n_stmts < DIR_SQLITE_STMTS;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(d->db, sql, -1, is_kept ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL) !=
        SQLITE_OK)
        return NULL;
    if (is_kept) {
        d->stmts[d->n_stmts].sql = sql;
        d->stmts[d->n_stmts++].st = st;
    }
    return st;
}

/* Done with a statement from db_stmt: a kept one is reset (its read transaction ends, its
 * text parameters are dropped), another one finalized. */
static void db_stmt_done(struct dir_sqlite *d, sqlite3_stmt *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < d->n_stmts; i++)
        if (d->stmts[i].st == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    sqlite3_finalize(st);
}

/* Run one statement. types names the parameters that follow: 's' text, 'I' int64_t,
 * 'N' NULL (no argument consumed). Returns the number of changed rows, or -1. */
static int db_run(struct dir_sqlite *d, char **error_r, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK) {
        set_db_err(d, error_r);
        return -1;
    }
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 's')
            sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        else if (types[i] == 'I')
            sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        else
            sqlite3_bind_null(st, i + 1);
    }
    va_end(ap);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        set_db_err(d, error_r);
        return -1;
    }
    return sqlite3_changes(d->db);
}

/* 1 if a row exists for the query with one text parameter, 0 if not, -1 on error. */
static int db_exists(struct dir_sqlite *d, const char *sql, const char *arg)
{
    sqlite3_stmt *st = db_stmt(d, sql);
    if (!st) {
        log_error("auth", "tern.db: %s", sqlite3_errmsg(d->db));
        return -1;
    }
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    db_stmt_done(d, st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    log_error("auth", "tern.db: %s", sqlite3_errmsg(d->db));
    return -1;
}

static int domain_exists(struct dir_sqlite *d, const char *domain)
{
    return db_exists(d, "SELECT 1 FROM domains WHERE name = ?", domain);
}

static int user_exists(struct dir_sqlite *d, const char *address)
{
    return db_exists(d, "SELECT 1 FROM users WHERE address = ?", address);
}

static int tx_begin(struct dir_sqlite *d, char **error_r)
{
    return db_run(d, error_r, "BEGIN IMMEDIATE", "") < 0 ? -1 : 0;
}

static int tx_end(struct dir_sqlite *d, bool commit, char **error_r)
{
    if (!commit) {
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (db_run(d, error_r, "COMMIT", "") < 0) {
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

/* ---- lookups ---------------------------------------------------------------------- */

static int sq_domain_lookup(struct dir_backend *be, const char *domain, char *target_r,
                            size_t size)
{
    struct dir_sqlite *d = sq(be);
    pthread_mutex_lock(&d->lock);
    int rc = domain_exists(d, domain);
    pthread_mutex_unlock(&d->lock);
    return rc < 0 ? -1 : rc ? DIR_DOMAIN_LOCAL : DIR_DOMAIN_NONE;
}

static int sq_domain_single(struct dir_backend *be, char *out, size_t size)
{
    struct dir_sqlite *d = sq(be);
    sqlite3_stmt *st = NULL;
    int n = 0, rc;
    pthread_mutex_lock(&d->lock);
    if (sqlite3_prepare_v2(d->db, "SELECT name FROM domains LIMIT 2", -1, &st, NULL) !=
        SQLITE_OK) {
        pthread_mutex_unlock(&d->lock);
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (n++ == 0)
            snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&d->lock);
    if (rc != SQLITE_DONE)
        return -1;
    return n == 1 ? 1 : 0;
}

static int sq_alias_targets(struct dir_backend *be, const char *source, char ***out, size_t *n)
{
    struct dir_sqlite *d = sq(be);
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&d->lock);
    if (!(st = db_stmt(d, "SELECT target FROM aliases WHERE source = ? ORDER BY rowid"))) {
        pthread_mutex_unlock(&d->lock);
        return -1;
    }
    sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (!dir_list_add(out, n, (const char *)sqlite3_column_text(st, 0)))
            break;
    db_stmt_done(d, st);
    pthread_mutex_unlock(&d->lock);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

/* A dir_user_info from a users row (address, quota, enabled). */
static int user_row(sqlite3_stmt *st, struct dir_user_info *u)
{
    memset(u, 0, sizeof *u);
    const char *address = (const char *)sqlite3_column_text(st, 0);
    if (!address || !(u->address = strdup(address)))
        return -1;
    u->has_quota = sqlite3_column_type(st, 1) != SQLITE_NULL;
    u->quota = u->has_quota ? (uint64_t)sqlite3_column_int64(st, 1) : 0;
    u->enabled = sqlite3_column_int(st, 2) != 0;
    return 0;
}

static int sq_user_get(struct dir_backend *be, const char *address, struct dir_user_info *u_r)
{
    struct dir_sqlite *d = sq(be);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    memset(u_r, 0, sizeof *u_r);
    pthread_mutex_lock(&d->lock);
    if ((st = db_stmt(d, "SELECT address, quota, enabled FROM users WHERE address = ?"))) {
        sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW)
            rc = user_row(st, u_r) == 0 ? 1 : -1;
        else
            rc = s == SQLITE_DONE ? 0 : -1;
    }
    if (rc < 0)
        log_error("auth", "tern.db: user lookup failed: %s", sqlite3_errmsg(d->db));
    db_stmt_done(d, st);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int sq_creds_load(struct dir_backend *be, const char *address, struct auth_cred_set *cs)
{
    struct dir_sqlite *d = sq(be);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    pthread_mutex_lock(&d->lock);
    if (!(st = db_stmt(d, "SELECT u.address, u.enabled, c.scheme, c.value FROM users u "
                          "LEFT JOIN credentials c ON c.address = u.address "
                          "WHERE u.address = ? ORDER BY c.rowid")))
        goto out;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    int s;
    rc = 0;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (!cs->address) {
            cs->address = strdup((const char *)sqlite3_column_text(st, 0));
            cs->enabled = sqlite3_column_int(st, 1) != 0;
            rc = cs->address ? 1 : -1;
        }
        if (sqlite3_column_type(st, 2) == SQLITE_NULL || cs->n >= DIR_MAX_SCHEMES)
            continue;
        if (!auth_creds_add(cs, (const char *)sqlite3_column_text(st, 2),
                            (const char *)sqlite3_column_text(st, 3)))
            rc = -1;
    }
    if (s != SQLITE_DONE)
        rc = -1;
out:
    if (rc < 0)
        log_error("auth", "tern.db: credential lookup failed: %s", sqlite3_errmsg(d->db));
    db_stmt_done(d, st);
    pthread_mutex_unlock(&d->lock);
    if (rc != 1)
        auth_creds_free(cs);
    return rc;
}

static bool sq_creds_any(struct dir_backend *be, const char *const *schemes)
{
    struct dir_sqlite *d = sq(be);
    bool found = false;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; schemes[i] && !found; i++)
        found = db_exists(d,
                          "SELECT 1 FROM credentials c JOIN users u ON u.address = c.address "
                          "WHERE c.scheme = ? AND u.enabled LIMIT 1",
                          schemes[i]) == 1;
    pthread_mutex_unlock(&d->lock);
    return found;
}

/* ---- administration: domains ------------------------------------------------------ */

static int sq_domain_add(struct dir_backend *be, const char *domain, char **error_r)
{
    struct dir_sqlite *d = sq(be);
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&d->lock);
    int rc = domain_exists(d, domain);
    if (rc == 1) {
        auth_set_error(error_r, "domain %s already exists", domain);
        rc = -1;
    } else if (rc == 0) {
        rc = db_run(d, error_r, "INSERT INTO domains(name, created) VALUES (?, ?)", "sI", domain,
                    now) < 0
                 ? -1
                 : 0;
    } else {
        set_db_err(d, error_r);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

/* A domain with users is not deleted: that would orphan mailboxes silently. Its aliases
 * go with it. */
static int sq_domain_del(struct dir_backend *be, const char *domain, char **error_r)
{
    struct dir_sqlite *d = sq(be);
    pthread_mutex_lock(&d->lock);
    int rc = -1;
    int exists = domain_exists(d, domain);
    if (exists == 0) {
        auth_set_error(error_r, "no such domain: %s", domain);
    } else if (exists == 1 && tx_begin(d, error_r) == 0) {
        sqlite3_stmt *st = NULL;
        int users = -1;
        if (sqlite3_prepare_v2(d->db, "SELECT count(*) FROM users WHERE domain = ?", -1, &st,
                               NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                users = sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
        bool ok = false;
        if (users < 0)
            set_db_err(d, error_r);
        else if (users > 0)
            auth_set_error(error_r, "domain %s still has %d user(s); delete them first", domain,
                           users);
        else
            ok = db_run(d, error_r, "DELETE FROM aliases WHERE domain = ?", "s", domain) >= 0 &&
                 db_run(d, error_r, "DELETE FROM domains WHERE name = ?", "s", domain) >= 0;
        rc = tx_end(d, ok, error_r);
    } else if (exists < 0) {
        set_db_err(d, error_r);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int sq_domain_list(struct dir_backend *be, void (*cb)(const char *domain, void *arg),
                          void *arg)
{
    struct dir_sqlite *d = sq(be);
    pthread_mutex_lock(&d->lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(d->db, "SELECT name FROM domains ORDER BY name", -1, &st, NULL) ==
        SQLITE_OK) {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW)
            cb((const char *)sqlite3_column_text(st, 0), arg);
        rc = s == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

/* ---- administration: users -------------------------------------------------------- */

static int creds_store(struct dir_sqlite *d, const char *addr, const struct dir_hashed *h,
                       char **error_r)
{
    if (db_run(d, error_r, "DELETE FROM credentials WHERE address = ?", "s", addr) < 0)
        return -1;
    for (size_t i = 0; i < h->n; i++)
        if (db_run(d, error_r, "INSERT INTO credentials(address, scheme, value) VALUES (?, ?, ?)",
                   "sss", addr, h->scheme[i], h->value[i]) < 0)
            return -1;
    return 0;
}

static int sq_user_add(struct dir_backend *be, const char *addr, const struct dir_hashed *h,
                       bool has_quota, uint64_t quota, char **error_r)
{
    struct dir_sqlite *d = sq(be);
    const char *domain = strrchr(addr, '@') + 1;
    int64_t now = (int64_t)time(NULL), q = (int64_t)quota;
    pthread_mutex_lock(&d->lock);
    int rc = -1;
    if (tx_begin(d, error_r) == 0) {
        bool ok = false;
        int dom = domain_exists(d, domain), u = user_exists(d, addr);
        if (dom == 0) {
            auth_set_error(error_r, "unknown domain %s (add it with `tern domain add`)", domain);
        } else if (u == 1) {
            auth_set_error(error_r, "user %s already exists", addr);
        } else if (u == 0 && dom == 1) {
            /* no quota of its own: NULL, the user follows quota.default */
            const char *sql = "INSERT INTO users(address, domain, quota, enabled, created) "
                              "VALUES (?, ?, ?, 1, ?)";
            int n = has_quota ? db_run(d, error_r, sql, "ssII", addr, domain, q, now)
                              : db_run(d, error_r, sql, "ssNI", addr, domain, now);
            ok = n >= 0 && creds_store(d, addr, h, error_r) == 0;
        } else {
            set_db_err(d, error_r);
        }
        rc = tx_end(d, ok, error_r);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

/* Run a one-user UPDATE/DELETE; "no such user" when nothing matched. */
static int user_change(struct dir_sqlite *d, const char *addr, const char *sql, const char *types,
                       int64_t n, char **error_r)
{
    pthread_mutex_lock(&d->lock);
    int changed = types[0] == 'I' ? db_run(d, error_r, sql, "Is", n, addr)
                                  : db_run(d, error_r, sql, "s", addr);
    pthread_mutex_unlock(&d->lock);
    if (changed == 0)
        auth_set_error(error_r, "no such user: %s", addr);
    return changed > 0 ? 0 : -1;
}

static int sq_user_del(struct dir_backend *be, const char *addr, char **error_r)
{
    /* Credentials go by ON DELETE CASCADE; the Maildir stays on disk (admins delete mail
     * deliberately, not as a side effect). */
    return user_change(sq(be), addr, "DELETE FROM users WHERE address = ?", "s", 0, error_r);
}

static int sq_user_set_quota(struct dir_backend *be, const char *addr, bool has_quota,
                             uint64_t quota, char **error_r)
{
    if (!has_quota)
        return user_change(sq(be), addr, "UPDATE users SET quota = NULL WHERE address = ?", "s",
                           0, error_r);
    return user_change(sq(be), addr, "UPDATE users SET quota = ? WHERE address = ?", "Is",
                       (int64_t)quota, error_r);
}

static int sq_user_set_enabled(struct dir_backend *be, const char *addr, bool enabled,
                               char **error_r)
{
    return user_change(sq(be), addr, "UPDATE users SET enabled = ? WHERE address = ?", "Is",
                       enabled ? 1 : 0, error_r);
}

static int sq_user_set_password(struct dir_backend *be, const char *addr,
                                const struct dir_hashed *h, char **error_r)
{
    struct dir_sqlite *d = sq(be);
    pthread_mutex_lock(&d->lock);
    int rc = -1;
    if (tx_begin(d, error_r) == 0) {
        bool ok = false;
        int u = user_exists(d, addr);
        if (u == 0)
            auth_set_error(error_r, "no such user: %s", addr);
        else if (u == 1)
            ok = creds_store(d, addr, h, error_r) == 0;
        else
            set_db_err(d, error_r);
        rc = tx_end(d, ok, error_r);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int sq_user_list(struct dir_backend *be, const char *domain_or_null,
                        void (*cb)(const struct dir_user_info *u, void *arg), void *arg)
{
    struct dir_sqlite *d = sq(be);
    pthread_mutex_lock(&d->lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    const char *sql = domain_or_null ? "SELECT address, quota, enabled FROM users WHERE domain = "
                                       "? ORDER BY domain, address"
                                     : "SELECT address, quota, enabled FROM users "
                                       "ORDER BY domain, address";
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (domain_or_null)
            sqlite3_bind_text(st, 1, domain_or_null, -1, SQLITE_STATIC);
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            struct dir_user_info u;
            if (user_row(st, &u) == 0)
                cb(&u, arg);
            dir_user_info_free(&u);
        }
        rc = s == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static char *sq_user_schemes(struct dir_backend *be, const char *addr)
{
    struct dir_sqlite *d = sq(be);
    struct buf out;
    buf_init(&out, 4096);
    pthread_mutex_lock(&d->lock);
    sqlite3_stmt *st = NULL;
    bool ok = false;
    if (sqlite3_prepare_v2(d->db, "SELECT scheme FROM credentials WHERE address = ? ORDER BY rowid",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            if (out.len)
                buf_append_byte(&out, ' ');
            buf_append_str(&out, (const char *)sqlite3_column_text(st, 0));
        }
        ok = s == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&d->lock);
    if (!ok) {
        buf_free(&out);
        return NULL;
    }
    return out.data ? buf_steal(&out) : strdup("");
}

/* ---- administration: aliases ------------------------------------------------------ */

static int sq_alias_add(struct dir_backend *be, const char *src, const char *dst, char **error_r)
{
    struct dir_sqlite *d = sq(be);
    const char *domain = strrchr(src, '@') + 1;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&d->lock);
    int rc = -1;
    int dom = domain_exists(d, domain);
    if (dom == 0) {
        auth_set_error(error_r, "alias source domain %s is not a local domain", domain);
    } else if (dom == 1) {
        sqlite3_stmt *st = NULL;
        int dup = -1;
        if (sqlite3_prepare_v2(d->db, "SELECT 1 FROM aliases WHERE source = ? AND target = ?", -1,
                               &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, src, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, dst, -1, SQLITE_STATIC);
            int s = sqlite3_step(st);
            dup = s == SQLITE_ROW ? 1 : s == SQLITE_DONE ? 0 : -1;
        }
        sqlite3_finalize(st);
        if (dup == 1)
            auth_set_error(error_r, "alias %s -> %s already exists", src, dst);
        else if (dup == 0)
            rc = db_run(d, error_r,
                        "INSERT INTO aliases(source, target, domain, created) VALUES (?, ?, ?, ?)",
                        "sssI", src, dst, domain, now) < 0
                     ? -1
                     : 0;
        else
            set_db_err(d, error_r);
    } else {
        set_db_err(d, error_r);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int sq_alias_del(struct dir_backend *be, const char *src, const char *dst_or_null,
                        char **error_r)
{
    struct dir_sqlite *d = sq(be);
    pthread_mutex_lock(&d->lock);
    int n = dst_or_null ? db_run(d, error_r, "DELETE FROM aliases WHERE source = ? AND target = ?",
                                 "ss", src, dst_or_null)
                        : db_run(d, error_r, "DELETE FROM aliases WHERE source = ?", "s", src);
    pthread_mutex_unlock(&d->lock);
    if (n == 0) {
        auth_set_error(error_r, "no such alias: %s", src);
        return -1;
    }
    return n > 0 ? 0 : -1;
}

static int sq_alias_list(struct dir_backend *be,
                         void (*cb)(const char *source, const char *target, void *arg), void *arg)
{
    struct dir_sqlite *d = sq(be);
    pthread_mutex_lock(&d->lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(d->db, "SELECT source, target FROM aliases ORDER BY domain, source, rowid",
                           -1, &st, NULL) == SQLITE_OK) {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW)
            cb((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
               arg);
        rc = s == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

/* ---- open / close ----------------------------------------------------------------- */

static int exec_sql(sqlite3 *db, const char *sql, char **error_r)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        auth_set_error(error_r, "tern.db: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Create the schema on a new database, refuse one from a newer Tern. */
static int schema_init(sqlite3 *db, char **error_r)
{
    sqlite3_stmt *st = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < 0) {
        auth_set_error(error_r, "tern.db: cannot read schema version: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (version > SCHEMA_VERSION) {
        auth_set_error(error_r, "tern.db: schema version is newer than this Tern");
        return -1;
    }
    if (version == SCHEMA_VERSION)
        return 0;
    char sql[sizeof schema_v1 + 128];
    snprintf(sql, sizeof sql, "BEGIN IMMEDIATE;%sPRAGMA user_version = %d;COMMIT;", schema_v1,
             SCHEMA_VERSION);
    if (exec_sql(db, sql, error_r) < 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static void sq_close(struct dir_backend *be)
{
    struct dir_sqlite *d = sq(be);
    for (size_t i = 0; i < d->n_stmts; i++)
        sqlite3_finalize(d->stmts[i].st);
    if (d->db)
        sqlite3_close(d->db);
    pthread_mutex_destroy(&d->lock);
    free(d->password_schemes);
    free(d);
}

static const struct dir_backend_ops sqlite_ops = {
    .close = sq_close,
    .domain_lookup = sq_domain_lookup,
    .domain_single = sq_domain_single,
    .alias_targets = sq_alias_targets,
    .user_get = sq_user_get,
    .creds_load = sq_creds_load,
    .creds_any = sq_creds_any,
    .domain_add = sq_domain_add,
    .domain_del = sq_domain_del,
    .domain_list = sq_domain_list,
    .user_add = sq_user_add,
    .user_del = sq_user_del,
    .user_set_password = sq_user_set_password,
    .user_set_quota = sq_user_set_quota,
    .user_set_enabled = sq_user_set_enabled,
    .user_list = sq_user_list,
    .user_schemes = sq_user_schemes,
    .alias_add = sq_alias_add,
    .alias_del = sq_alias_del,
    .alias_list = sq_alias_list,
};

struct dir_backend *dir_sqlite_open(const struct config *cfg, char **error_r)
{
    struct dir_sqlite *d = calloc(1, sizeof *d);
    if (!d) {
        auth_set_error(error_r, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&d->lock, NULL);
    d->be.ops = &sqlite_ops;
    d->be.name = "tern.db";
    d->be.has_quota_default = true;
    d->password_schemes = strdup(cfg->password_schemes ? cfg->password_schemes
                                                       : "ARGON2ID SCRAM-SHA-256");
    d->be.write_schemes = d->password_schemes;
    const char *data_dir = cfg->data_dir ? cfg->data_dir : ".";
    char path[4096];
    if (!d->password_schemes) {
        auth_set_error(error_r, "out of memory");
        goto fail;
    }
    if (util_mkdir_p(data_dir, 0750) < 0) {
        auth_set_error(error_r, "%s: %s", data_dir, strerror(errno));
        goto fail;
    }
    if ((size_t)snprintf(path, sizeof path, "%s/tern.db", data_dir) >= sizeof path) {
        auth_set_error(error_r, "data_dir path too long");
        goto fail;
    }
    if (sqlite3_open_v2(path, &d->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        auth_set_error(error_r, "%s: %s", path, d->db ? sqlite3_errmsg(d->db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(d->db, 5000);
    if (exec_sql(d->db,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                 error_r) < 0 ||
        schema_init(d->db, error_r) < 0)
        goto fail;
    return &d->be;
fail:
    sq_close(&d->be);
    return NULL;
}
