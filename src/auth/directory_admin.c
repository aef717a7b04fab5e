/*
 * directory_admin.c - changes to the directory for the CLI: domains, users, their
 * credentials (one row per scheme of auth.password_schemes), aliases.
 *
 * Every change is one SQLite transaction, so a server reading concurrently sees a user
 * either with all of its credentials or not at all. Slow hashing happens before the
 * lock is taken. Errors come back as one readable line in *error_r.
 */
#include "auth/auth_internal.h"
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* One readable line into *error_r (if wanted). */
__attribute__((format(printf, 2, 3))) static void set_err(char **error_r, const char *fmt, ...)
{
    if (!error_r)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error_r, fmt, ap) < 0)
        *error_r = NULL;
    va_end(ap);
}

static void set_db_err(struct auth_service *svc, char **error_r)
{
    set_err(error_r, "tern.db: %s", sqlite3_errmsg(svc->db));
}

/* Run one statement. types names the parameters that follow: 's' text, 'I' int64_t,
 * 'N' NULL (no argument consumed). Returns the number of changed rows, or -1. Lock held. */
static int db_run(struct auth_service *svc, char **error_r, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(svc->db, sql, -1, &st, NULL) != SQLITE_OK) {
        set_db_err(svc, error_r);
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
        set_db_err(svc, error_r);
        return -1;
    }
    return sqlite3_changes(svc->db);
}

static int tx_begin(struct auth_service *svc, char **error_r)
{
    return db_run(svc, error_r, "BEGIN IMMEDIATE", "") < 0 ? -1 : 0;
}

static int tx_end(struct auth_service *svc, bool commit, char **error_r)
{
    if (!commit) {
        sqlite3_exec(svc->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (db_run(svc, error_r, "COMMIT", "") < 0) {
        sqlite3_exec(svc->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static bool domain_norm(const char *domain, char *out, size_t size)
{
    char probe[AUTH_MAX_LOGIN + 2];
    if (!domain || snprintf(probe, sizeof probe, "x@%s", domain) >= (int)sizeof probe)
        return false;
    if (!auth_addr_normalize(probe, probe, sizeof probe))
        return false;
    size_t len = strlen(probe + 2);
    if (len >= size)
        return false;
    memcpy(out, probe + 2, len + 1);
    return true;
}

/* ---- domains ---------------------------------------------------------------------- */

int auth_domain_add(struct auth_service *svc, const char *domain, char **error_r)
{
    char d[256];
    if (!domain_norm(domain, d, sizeof d)) {
        set_err(error_r, "invalid domain name '%s'", domain);
        return -1;
    }
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&svc->db_lock);
    int rc = auth_db_domain_exists(svc, d);
    if (rc == 1) {
        set_err(error_r, "domain %s already exists", d);
        rc = -1;
    } else if (rc == 0) {
        rc = db_run(svc, error_r, "INSERT INTO domains(name, created) VALUES (?, ?)", "sI", d,
                    now) < 0
                 ? -1
                 : 0;
    } else {
        set_db_err(svc, error_r);
    }
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}

/* A domain with users is not deleted: that would orphan mailboxes silently. Its aliases
 * go with it. */
int auth_domain_del(struct auth_service *svc, const char *domain, char **error_r)
{
    char d[256];
    if (!domain_norm(domain, d, sizeof d)) {
        set_err(error_r, "invalid domain name '%s'", domain);
        return -1;
    }
    pthread_mutex_lock(&svc->db_lock);
    int rc = -1;
    int exists = auth_db_domain_exists(svc, d);
    if (exists == 0) {
        set_err(error_r, "no such domain: %s", d);
    } else if (exists == 1 && tx_begin(svc, error_r) == 0) {
        sqlite3_stmt *st = NULL;
        int users = -1;
        if (sqlite3_prepare_v2(svc->db, "SELECT count(*) FROM users WHERE domain = ?", -1, &st,
                               NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, d, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                users = sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
        bool ok = false;
        if (users < 0) {
            set_db_err(svc, error_r);
        } else if (users > 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "domain %s still has %d user(s); delete them first", d,
                     users);
            set_err(error_r, "%s", msg);
        } else {
            ok = db_run(svc, error_r, "DELETE FROM aliases WHERE domain = ?", "s", d) >= 0 &&
                 db_run(svc, error_r, "DELETE FROM domains WHERE name = ?", "s", d) >= 0;
        }
        rc = tx_end(svc, ok, error_r);
    } else if (exists < 0) {
        set_db_err(svc, error_r);
    }
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}

int auth_domain_list(struct auth_service *svc, void (*cb)(const char *domain, void *arg), void *arg)
{
    if (svc->remote)
        return auth_remote_domain_list(svc, cb, arg);
    pthread_mutex_lock(&svc->db_lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(svc->db, "SELECT name FROM domains ORDER BY name", -1, &st, NULL) ==
        SQLITE_OK) {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW)
            cb((const char *)sqlite3_column_text(st, 0), arg);
        rc = s == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}

/* ---- users ------------------------------------------------------------------------ */

struct hashed {
    size_t n;
    char *scheme[16];
    char *value[16];
};

static void hashed_free(struct hashed *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->scheme[i]);
        if (h->value[i])
            memset(h->value[i], 0, strlen(h->value[i]));
        free(h->value[i]);
    }
    h->n = 0;
}

/* BLOCKING. Hash password in every configured scheme (deduplicated, upper case). */
static int hash_all(struct auth_service *svc, const char *password, struct hashed *h,
                    char **error_r)
{
    memset(h, 0, sizeof *h);
    if (!password) {
        set_err(error_r, "no password given%s", "");
        return -1;
    }
    if (strlen(password) > AUTH_MAX_PASSWORD) {
        set_err(error_r, "password too long%s", "");
        return -1;
    }
    char *list = strdup(svc->password_schemes);
    if (!list) {
        set_err(error_r, "out of memory%s", "");
        return -1;
    }
    char *save = NULL;
    int rc = 0;
    for (char *s = strtok_r(list, " ,\t", &save); s && rc == 0; s = strtok_r(NULL, " ,\t", &save)) {
        for (char *p = s; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
        bool dup = false;
        for (size_t i = 0; i < h->n; i++)
            dup = dup || strcmp(h->scheme[i], s) == 0;
        if (dup || h->n >= 16)
            continue;
        char *value = NULL, *err = NULL;
        if (auth_password_hash(s, password, &value, &err) < 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "scheme %s: %s", s, err ? err : "hashing failed");
            set_err(error_r, "%s", msg);
            free(err);
            rc = -1;
            break;
        }
        h->scheme[h->n] = strdup(s);
        h->value[h->n] = value;
        h->n++;
    }
    free(list);
    if (rc == 0 && h->n == 0) {
        set_err(error_r, "auth.password_schemes is empty%s", "");
        rc = -1;
    }
    if (rc < 0)
        hashed_free(h);
    return rc;
}

static int creds_store(struct auth_service *svc, const char *addr, const struct hashed *h,
                       char **error_r)
{
    if (db_run(svc, error_r, "DELETE FROM credentials WHERE address = ?", "s", addr) < 0)
        return -1;
    for (size_t i = 0; i < h->n; i++)
        if (db_run(svc, error_r, "INSERT INTO credentials(address, scheme, value) VALUES (?, ?, ?)",
                   "sss", addr, h->scheme[i], h->value[i]) < 0)
            return -1;
    return 0;
}

static bool user_norm(const char *address, char *out, size_t size, char **error_r)
{
    if (!address || !strchr(address, '@') || !auth_addr_normalize(address, out, size)) {
        set_err(error_r, "invalid address '%s' (want user@domain)", address);
        return false;
    }
    return true;
}

int auth_user_add(struct auth_service *svc, const char *address, const char *password,
                  uint64_t quota, char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (!user_norm(address, addr, sizeof addr, error_r))
        return -1;
    const char *domain = strrchr(addr, '@') + 1;
    if (quota > INT64_MAX) {
        set_err(error_r, "quota too large%s", "");
        return -1;
    }
    /* Fail fast on the cheap checks before spending a slow hash. */
    pthread_mutex_lock(&svc->db_lock);
    int d = auth_db_domain_exists(svc, domain), u = auth_db_user_exists(svc, addr);
    pthread_mutex_unlock(&svc->db_lock);
    if (d < 0 || u < 0) {
        set_err(error_r, "tern.db: lookup failed%s", "");
        return -1;
    }
    if (d == 0) {
        set_err(error_r, "unknown domain %s (add it with `tern domain add`)", domain);
        return -1;
    }
    if (u == 1) {
        set_err(error_r, "user %s already exists", addr);
        return -1;
    }
    struct hashed h;
    if (hash_all(svc, password, &h, error_r) < 0)
        return -1;

    int64_t now = (int64_t)time(NULL), q = (int64_t)quota;
    pthread_mutex_lock(&svc->db_lock);
    int rc = -1;
    if (tx_begin(svc, error_r) == 0) {
        bool ok = false;
        u = auth_db_user_exists(svc, addr);
        if (u == 1) {
            set_err(error_r, "user %s already exists", addr);
        } else if (u == 0) {
            /* quota 0 stores NULL: the user follows quota.default. */
            const char *sql = "INSERT INTO users(address, domain, quota, enabled, created) "
                              "VALUES (?, ?, ?, 1, ?)";
            int n = quota ? db_run(svc, error_r, sql, "ssII", addr, domain, q, now)
                          : db_run(svc, error_r, sql, "ssNI", addr, domain, now);
            ok = n >= 0 && creds_store(svc, addr, &h, error_r) == 0;
        }
        rc = tx_end(svc, ok, error_r);
    }
    pthread_mutex_unlock(&svc->db_lock);
    hashed_free(&h);
    return rc;
}

/* Run a one-user UPDATE/DELETE; "no such user" when nothing matched. */
static int user_change(struct auth_service *svc, const char *address, const char *sql,
                       const char *types, int64_t n, char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (!user_norm(address, addr, sizeof addr, error_r))
        return -1;
    pthread_mutex_lock(&svc->db_lock);
    int changed = types[0] == 'I' ? db_run(svc, error_r, sql, "Is", n, addr)
                                  : db_run(svc, error_r, sql, "s", addr);
    pthread_mutex_unlock(&svc->db_lock);
    if (changed == 0)
        set_err(error_r, "no such user: %s", addr);
    return changed > 0 ? 0 : -1;
}

int auth_user_del(struct auth_service *svc, const char *address, char **error_r)
{
    /* Credentials go by ON DELETE CASCADE; the Maildir stays on disk (admins delete mail
     * deliberately, not as a side effect). */
    return user_change(svc, address, "DELETE FROM users WHERE address = ?", "s", 0, error_r);
}

int auth_user_set_quota(struct auth_service *svc, const char *address, uint64_t quota,
                        char **error_r)
{
    if (quota > INT64_MAX) {
        set_err(error_r, "quota too large%s", "");
        return -1;
    }
    if (quota == 0)
        return user_change(svc, address, "UPDATE users SET quota = NULL WHERE address = ?", "s", 0,
                           error_r);
    return user_change(svc, address, "UPDATE users SET quota = ? WHERE address = ?", "Is",
                       (int64_t)quota, error_r);
}

int auth_user_set_enabled(struct auth_service *svc, const char *address, bool enabled,
                          char **error_r)
{
    return user_change(svc, address, "UPDATE users SET enabled = ? WHERE address = ?", "Is",
                       enabled ? 1 : 0, error_r);
}

int auth_user_set_password(struct auth_service *svc, const char *address, const char *password,
                           char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (!user_norm(address, addr, sizeof addr, error_r))
        return -1;
    pthread_mutex_lock(&svc->db_lock);
    int u = auth_db_user_exists(svc, addr);
    pthread_mutex_unlock(&svc->db_lock);
    if (u <= 0) {
        set_err(error_r, u == 0 ? "no such user: %s" : "tern.db: lookup failed for %s", addr);
        return -1;
    }
    struct hashed h;
    if (hash_all(svc, password, &h, error_r) < 0)
        return -1;
    pthread_mutex_lock(&svc->db_lock);
    int rc = -1;
    if (tx_begin(svc, error_r) == 0) {
        bool ok = false;
        u = auth_db_user_exists(svc, addr);
        if (u == 0)
            set_err(error_r, "no such user: %s", addr);
        else if (u == 1)
            ok = creds_store(svc, addr, &h, error_r) == 0;
        rc = tx_end(svc, ok, error_r);
    }
    pthread_mutex_unlock(&svc->db_lock);
    hashed_free(&h);
    return rc;
}

char *auth_user_schemes(struct auth_service *svc, const char *address)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (!auth_addr_normalize(address, addr, sizeof addr))
        return NULL;
    struct buf out;
    buf_init(&out, 4096);
    pthread_mutex_lock(&svc->db_lock);
    sqlite3_stmt *st = NULL;
    bool ok = false;
    if (sqlite3_prepare_v2(svc->db,
                           "SELECT scheme FROM credentials WHERE address = ? ORDER BY rowid", -1,
                           &st, NULL) == SQLITE_OK) {
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
    pthread_mutex_unlock(&svc->db_lock);
    if (!ok) {
        buf_free(&out);
        return NULL;
    }
    if (!out.data)
        return strdup("");
    return buf_steal(&out);
}

/* ---- aliases ---------------------------------------------------------------------- */

/* Alias source: "local@domain" or "@domain" (catch-all); lower case into out. */
static bool alias_source_norm(const char *source, char *out, size_t size)
{
    if (source && source[0] == '@') {
        char d[256];
        if (!domain_norm(source + 1, d, sizeof d))
            return false;
        return (size_t)snprintf(out, size, "@%s", d) < size;
    }
    return source && strchr(source, '@') && auth_addr_normalize(source, out, size);
}

int auth_alias_add(struct auth_service *svc, const char *source, const char *target, char **error_r)
{
    char src[AUTH_MAX_LOGIN + 2], dst[AUTH_MAX_LOGIN + 1];
    if (!alias_source_norm(source, src, sizeof src)) {
        set_err(error_r, "invalid alias source '%s' (want user@domain or @domain)", source);
        return -1;
    }
    if (!target || !strchr(target, '@') || !auth_addr_normalize(target, dst, sizeof dst)) {
        set_err(error_r, "invalid alias target '%s' (want user@domain)", target);
        return -1;
    }
    const char *domain = strrchr(src, '@') + 1;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&svc->db_lock);
    int rc = -1;
    int d = auth_db_domain_exists(svc, domain);
    if (d == 0) {
        set_err(error_r, "alias source domain %s is not a local domain", domain);
    } else if (d == 1) {
        sqlite3_stmt *st = NULL;
        int dup = -1;
        if (sqlite3_prepare_v2(svc->db, "SELECT 1 FROM aliases WHERE source = ? AND target = ?", -1,
                               &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, src, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, dst, -1, SQLITE_STATIC);
            int s = sqlite3_step(st);
            dup = s == SQLITE_ROW ? 1 : s == SQLITE_DONE ? 0 : -1;
        }
        sqlite3_finalize(st);
        if (dup == 1) {
            char msg[700];
            snprintf(msg, sizeof msg, "alias %s -> %s already exists", src, dst);
            set_err(error_r, "%s", msg);
        } else if (dup == 0) {
            rc = db_run(svc, error_r,
                        "INSERT INTO aliases(source, target, domain, created) VALUES (?, ?, ?, ?)",
                        "sssI", src, dst, domain, now) < 0
                     ? -1
                     : 0;
        } else {
            set_db_err(svc, error_r);
        }
    } else {
        set_db_err(svc, error_r);
    }
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}

int auth_alias_del(struct auth_service *svc, const char *source, const char *target_or_null,
                   char **error_r)
{
    char src[AUTH_MAX_LOGIN + 2], dst[AUTH_MAX_LOGIN + 1];
    if (!alias_source_norm(source, src, sizeof src)) {
        set_err(error_r, "invalid alias source '%s'", source);
        return -1;
    }
    if (target_or_null && !auth_addr_normalize(target_or_null, dst, sizeof dst)) {
        set_err(error_r, "invalid alias target '%s'", target_or_null);
        return -1;
    }
    pthread_mutex_lock(&svc->db_lock);
    int n = target_or_null
                ? db_run(svc, error_r, "DELETE FROM aliases WHERE source = ? AND target = ?", "ss",
                         src, dst)
                : db_run(svc, error_r, "DELETE FROM aliases WHERE source = ?", "s", src);
    pthread_mutex_unlock(&svc->db_lock);
    if (n == 0) {
        set_err(error_r, "no such alias: %s", src);
        return -1;
    }
    return n > 0 ? 0 : -1;
}

int auth_alias_list(struct auth_service *svc,
                    void (*cb)(const char *source, const char *target, void *arg), void *arg)
{
    pthread_mutex_lock(&svc->db_lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(svc->db,
                           "SELECT source, target FROM aliases ORDER BY domain, source, rowid", -1,
                           &st, NULL) == SQLITE_OK) {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW)
            cb((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
               arg);
        rc = s == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}
