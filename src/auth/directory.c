/*
 * directory.c - the SQLite directory (<data_dir>/tern.db): open and schema, name rules,
 * routing (local domains, alias expansion, users) and credential loading.
 *
 * Schema (PRAGMA user_version = 1):
 *   domains(name)                         local domains, lower case
 *   users(address, domain, quota, enabled, created)
 *   credentials(address, scheme, value)   one row per scheme in auth.password_schemes
 *   aliases(source, target)               one-to-many; source "@domain" is a catch-all
 * Every address is stored lower case: local parts match case-insensitively, so the
 * lower-case form is the canonical one.
 *
 * Thread rules: one connection, every access under svc->db_lock. WAL mode and a busy
 * timeout let `tern user add` (another process) write while the server reads.
 */
#include "auth/auth_internal.h"
#include "policy/penalty.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <stdarg.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

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

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

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

/* ---- names ------------------------------------------------------------------------ */

/* A character allowed in a stored address: printable ASCII or UTF-8 (SMTPUTF8), no
 * whitespace, no address delimiters. */
static bool addr_char_ok(unsigned char c)
{
    if (c >= 0x80)
        return true;
    if (c <= 0x20 || c == 0x7f)
        return false;
    return strchr("<>()[],;:\\\"", c) == NULL;
}

static bool domain_ok(const char *d, size_t len)
{
    if (len == 0 || len > 255 || d[0] == '.' || d[len - 1] == '.' || d[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];
        if (!(c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
        if (c == '.' && d[i + 1] == '.')
            return false;
    }
    return true;
}

static void lower_in_place(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

bool auth_addr_normalize(const char *addr, char *out, size_t size)
{
    if (!addr)
        return false;
    size_t len = strlen(addr);
    const char *at = strrchr(addr, '@');
    if (!at || at == addr || len >= size || len > AUTH_MAX_LOGIN)
        return false;
    size_t local_len = (size_t)(at - addr);
    if (local_len > 64 || !domain_ok(at + 1, len - local_len - 1))
        return false;
    for (size_t i = 0; i < local_len; i++)
        if (!addr_char_ok((unsigned char)addr[i]) || addr[i] == '@')
            return false;
    memcpy(out, addr, len + 1);
    lower_in_place(out);
    return true;
}

/* Normalise a domain name into out (lower case). */
static bool domain_normalize(const char *d, char *out, size_t size)
{
    size_t len = d ? strlen(d) : 0;
    if (!domain_ok(d, len) || len >= size)
        return false;
    memcpy(out, d, len + 1);
    lower_in_place(out);
    return true;
}

int auth_name_canonical(struct auth_service *svc, const char *login, char *out, size_t size)
{
    if (!login || !*login || strlen(login) > AUTH_MAX_LOGIN)
        return 0;
    if (strchr(login, '@'))
        return auth_addr_normalize(login, out, size) ? 1 : 0;
    /* A bare name: auth.default_domain, else the only domain there is. */
    char domain[256] = "";
    if (svc->default_domain[0]) {
        snprintf(domain, sizeof domain, "%s", svc->default_domain);
    } else {
        sqlite3_stmt *st = NULL;
        int n = 0;
        if (sqlite3_prepare_v2(svc->db, "SELECT name FROM domains LIMIT 2", -1, &st, NULL) !=
            SQLITE_OK)
            return -1;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (n++ == 0)
                snprintf(domain, sizeof domain, "%s", (const char *)sqlite3_column_text(st, 0));
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return -1;
        if (n != 1)
            return 0;
    }
    char full[AUTH_MAX_LOGIN * 2 + 2];
    snprintf(full, sizeof full, "%s@%s", login, domain);
    return auth_addr_normalize(full, out, size) ? 1 : 0;
}

/* ---- open / close ----------------------------------------------------------------- */

static int exec_sql(sqlite3 *db, const char *sql, char **error_r)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        set_err(error_r, "tern.db: %s", msg ? msg : sqlite3_errmsg(db));
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
        set_err(error_r, "tern.db: cannot read schema version: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (version > SCHEMA_VERSION) {
        set_err(error_r, "tern.db: schema version is newer than this Tern%s", "");
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

struct auth_service *auth_service_open(const struct config *cfg, char **error_r)
{
    struct auth_service *svc = calloc(1, sizeof *svc);
    if (!svc) {
        set_err(error_r, "out of memory%s", "");
        return NULL;
    }
    svc->data_dir = xstrdup(cfg->data_dir ? cfg->data_dir : ".");
    svc->default_domain = xstrdup(cfg->default_domain ? cfg->default_domain : "");
    svc->password_schemes =
        xstrdup(cfg->password_schemes ? cfg->password_schemes : "ARGON2ID SCRAM-SHA-256");
    svc->allow_plaintext = cfg->allow_plaintext;
    svc->quota_default = cfg->quota_default;
    pthread_mutex_init(&svc->db_lock, NULL);
    pthread_mutex_init(&svc->penalty_lock, NULL);
    struct penalty_limits limits;
    penalty_limits_from_config(cfg, &limits);
    svc->penalty = penalty_table_new(&limits);
    if (!svc->data_dir || !svc->default_domain || !svc->password_schemes || !svc->penalty) {
        set_err(error_r, "out of memory%s", "");
        goto fail;
    }
    lower_in_place(svc->default_domain);
    RAND_bytes(svc->fake_secret, sizeof svc->fake_secret);

    if (util_mkdir_p(svc->data_dir, 0750) < 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", svc->data_dir, strerror(errno));
        set_err(error_r, "%s", msg);
        goto fail;
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/tern.db", svc->data_dir) >= sizeof path) {
        set_err(error_r, "data_dir path too long%s", "");
        goto fail;
    }
    if (sqlite3_open_v2(path, &svc->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        char msg[4200];
        snprintf(msg, sizeof msg, "%s: %s", path,
                 svc->db ? sqlite3_errmsg(svc->db) : "cannot open");
        set_err(error_r, "%s", msg);
        goto fail;
    }
    sqlite3_busy_timeout(svc->db, 5000);
    if (exec_sql(svc->db,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                 error_r) < 0 ||
        schema_init(svc->db, error_r) < 0)
        goto fail;
    return svc;
fail:
    auth_service_close(svc);
    return NULL;
}

void auth_service_close(struct auth_service *svc)
{
    if (!svc)
        return;
    if (svc->db)
        sqlite3_close(svc->db);
    pthread_mutex_destroy(&svc->db_lock);
    pthread_mutex_destroy(&svc->penalty_lock);
    penalty_table_free(svc->penalty);
    free(svc->data_dir);
    free(svc->default_domain);
    free(svc->password_schemes);
    free(svc);
}

/* ---- lookups (db_lock held) ------------------------------------------------------- */

/* 1 if a row exists for the query with one text parameter, 0 if not, -1 on error. */
static int db_exists(struct auth_service *svc, const char *sql, const char *arg)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(svc->db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("auth", "tern.db: %s", sqlite3_errmsg(svc->db));
        return -1;
    }
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    log_error("auth", "tern.db: %s", sqlite3_errmsg(svc->db));
    return -1;
}

int auth_db_domain_exists(struct auth_service *svc, const char *domain)
{
    return db_exists(svc, "SELECT 1 FROM domains WHERE name = ?", domain);
}

int auth_db_user_exists(struct auth_service *svc, const char *address)
{
    return db_exists(svc, "SELECT 1 FROM users WHERE address = ?", address);
}

int auth_domain_is_local(struct auth_service *svc, const char *domain)
{
    char d[256];
    if (!domain_normalize(domain, d, sizeof d))
        return 0;
    pthread_mutex_lock(&svc->db_lock);
    int rc = auth_db_domain_exists(svc, d);
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}

/* ---- alias expansion -------------------------------------------------------------- */

struct resolve {
    struct auth_targets *t;
    char **visited;
    size_t n_visited;
    bool use_catchall;
    bool failed; /* a database error: the whole answer is -1 */
};

static bool list_has(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

static bool list_add(char ***list, size_t *n, const char *s)
{
    if (list_has(*list, *n, s))
        return true;
    if (*n >= AUTH_ALIAS_MAX_OUT)
        return false;
    char **grown = realloc(*list, (*n + 1) * sizeof **list);
    if (!grown)
        return false;
    *list = grown;
    if (!(grown[*n] = strdup(s)))
        return false;
    (*n)++;
    return true;
}

/* Targets of one alias source (exact "a@d" or catch-all "@d"); NULL-safe list. */
static int alias_targets(struct auth_service *svc, const char *source, char ***out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(svc->db, "SELECT target FROM aliases WHERE source = ? ORDER BY rowid",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (!list_add(out, n, (const char *)sqlite3_column_text(st, 0)))
            break;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

static void list_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static int expand(struct auth_service *svc, struct resolve *r, const char *addr, int depth);

/* Expand each target of an alias source; 1 if the source had targets, 0 if none. */
static int expand_alias(struct auth_service *svc, struct resolve *r, const char *source,
                        const char *self, int depth)
{
    char **targets;
    size_t n;
    if (alias_targets(svc, source, &targets, &n) < 0) {
        r->failed = true;
        return -1;
    }
    for (size_t i = 0; i < n && !r->failed; i++) {
        if (strcmp(targets[i], self) == 0) {
            /* An alias to itself keeps a copy for the user of that name. */
            int u = auth_db_user_exists(svc, self);
            if (u < 0)
                r->failed = true;
            else if (u > 0 && !list_add(&r->t->local, &r->t->n_local, self))
                r->failed = true;
        } else {
            expand(svc, r, targets[i], depth + 1);
        }
    }
    list_free(targets, n);
    return n > 0 ? 1 : 0;
}

/* Alias or user for exactly this address (no tag stripping, no catch-all). */
static int expand_exact(struct auth_service *svc, struct resolve *r, const char *addr, int depth)
{
    int a = expand_alias(svc, r, addr, addr, depth);
    if (a != 0)
        return a;
    int u = auth_db_user_exists(svc, addr);
    if (u < 0) {
        r->failed = true;
        return -1;
    }
    if (u > 0 && !list_add(&r->t->local, &r->t->n_local, addr))
        r->failed = true;
    return u;
}

/* Resolve one address into r. Order: exact alias, exact user, user+tag -> user, then the
 * domain's catch-all (so an exact user always beats a catch-all). */
static int expand(struct auth_service *svc, struct resolve *r, const char *addr, int depth)
{
    if (r->failed)
        return -1;
    if (depth > AUTH_ALIAS_DEPTH) {
        log_warning("auth", "alias expansion too deep at %s; branch dropped", addr);
        return 0;
    }
    if (list_has(r->visited, r->n_visited, addr))
        return 0; /* loop: this address is already being expanded */
    if (!list_add(&r->visited, &r->n_visited, addr)) {
        r->failed = true;
        return -1;
    }
    const char *at = strrchr(addr, '@');
    if (!at)
        return 0;
    int local = auth_db_domain_exists(svc, at + 1);
    if (local < 0) {
        r->failed = true;
        return -1;
    }
    if (!local) {
        if (!list_add(&r->t->remote, &r->t->n_remote, addr))
            r->failed = true;
        return 1;
    }
    int rc = expand_exact(svc, r, addr, depth);
    if (rc != 0)
        return rc;
    /* user+tag@domain -> user@domain (Postfix recipient_delimiter "+"). */
    const char *plus = memchr(addr, '+', (size_t)(at - addr));
    if (plus && plus != addr) {
        char base[AUTH_MAX_LOGIN + 1];
        snprintf(base, sizeof base, "%.*s%s", (int)(plus - addr), addr, at);
        if (!list_has(r->visited, r->n_visited, base)) {
            if (!list_add(&r->visited, &r->n_visited, base)) {
                r->failed = true;
                return -1;
            }
            rc = expand_exact(svc, r, base, depth);
            if (rc != 0)
                return rc;
        }
    }
    if (r->use_catchall)
        return expand_alias(svc, r, at, addr, depth);
    return 0;
}

/* Resolve with the lock held. */
static int resolve_locked(struct auth_service *svc, const char *addr, bool use_catchall,
                          struct auth_targets *t)
{
    struct resolve r = {.t = t, .use_catchall = use_catchall};
    memset(t, 0, sizeof *t);
    expand(svc, &r, addr, 0);
    list_free(r.visited, r.n_visited);
    if (r.failed) {
        auth_targets_free(t);
        return -1;
    }
    /* An alias whose every target is gone delivers nowhere: report unknown (550) rather
     * than accept mail we would drop. */
    return t->n_local + t->n_remote > 0 ? 1 : 0;
}

int auth_resolve(struct auth_service *svc, const char *address, struct auth_targets *t)
{
    char addr[AUTH_MAX_LOGIN + 1];
    memset(t, 0, sizeof *t);
    if (!auth_addr_normalize(address, addr, sizeof addr))
        return 0;
    pthread_mutex_lock(&svc->db_lock);
    int rc = resolve_locked(svc, addr, true, t);
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}

void auth_targets_free(struct auth_targets *t)
{
    if (!t)
        return;
    list_free(t->local, t->n_local);
    list_free(t->remote, t->n_remote);
    memset(t, 0, sizeof *t);
}

/* ---- users ------------------------------------------------------------------------ */

/* Fill u from a users row (address, quota, enabled). */
static int user_fill(struct auth_service *svc, sqlite3_stmt *st, struct auth_user *u)
{
    const char *address = (const char *)sqlite3_column_text(st, 0);
    const char *at = address ? strrchr(address, '@') : NULL;
    memset(u, 0, sizeof *u);
    if (!at)
        return -1;
    size_t hl = strlen(svc->data_dir) + strlen(address) + 16;
    u->address = strdup(address);
    u->home = malloc(hl);
    if (!u->address || !u->home) {
        auth_user_free(u);
        return -1;
    }
    /* <data_dir>/mail/<domain>/<localpart>: addresses are stored lower case. */
    snprintf(u->home, hl, "%s/mail/%s/%.*s", svc->data_dir, at + 1, (int)(at - address), address);
    u->quota = sqlite3_column_type(st, 1) == SQLITE_NULL ? svc->quota_default
                                                         : (uint64_t)sqlite3_column_int64(st, 1);
    u->enabled = sqlite3_column_int(st, 2) != 0;
    return 0;
}

int auth_user_lookup(struct auth_service *svc, const char *login, struct auth_user *u_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    memset(u_r, 0, sizeof *u_r);
    pthread_mutex_lock(&svc->db_lock);
    int rc = auth_name_canonical(svc, login, addr, sizeof addr);
    if (rc == 1) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(svc->db,
                               "SELECT address, quota, enabled FROM users WHERE address = ?", -1,
                               &st, NULL) != SQLITE_OK) {
            rc = -1;
        } else {
            sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
            int s = sqlite3_step(st);
            if (s == SQLITE_ROW)
                rc = user_fill(svc, st, u_r) == 0 ? 1 : -1;
            else
                rc = s == SQLITE_DONE ? 0 : -1;
        }
        sqlite3_finalize(st);
    }
    if (rc < 0)
        log_error("auth", "tern.db: user lookup failed: %s", sqlite3_errmsg(svc->db));
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}

void auth_user_free(struct auth_user *u)
{
    if (!u)
        return;
    free(u->address);
    free(u->home);
    memset(u, 0, sizeof *u);
}

int auth_user_list(struct auth_service *svc, const char *domain_or_null,
                   void (*cb)(const struct auth_user *u, void *arg), void *arg)
{
    char d[256];
    if (domain_or_null && !domain_normalize(domain_or_null, d, sizeof d))
        return -1;
    pthread_mutex_lock(&svc->db_lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    const char *sql = domain_or_null ? "SELECT address, quota, enabled FROM users WHERE domain = "
                                       "? ORDER BY domain, address"
                                     : "SELECT address, quota, enabled FROM users "
                                       "ORDER BY domain, address";
    if (sqlite3_prepare_v2(svc->db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (domain_or_null)
            sqlite3_bind_text(st, 1, d, -1, SQLITE_STATIC);
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            struct auth_user u;
            if (user_fill(svc, st, &u) == 0) {
                cb(&u, arg);
                auth_user_free(&u);
            }
        }
        rc = s == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&svc->db_lock);
    return rc;
}

/* ---- senders ---------------------------------------------------------------------- */

bool auth_sender_allowed(struct auth_service *svc, const char *user, const char *mail_from)
{
    if (!mail_from || !*mail_from)
        return true; /* the null sender (bounces) */
    char u[AUTH_MAX_LOGIN + 1], from[AUTH_MAX_LOGIN + 1];
    if (!auth_addr_normalize(user, u, sizeof u) ||
        !auth_addr_normalize(mail_from, from, sizeof from))
        return false;
    if (strcmp(u, from) == 0)
        return true;
    /* Own address with a +tag. */
    const char *at = strrchr(from, '@');
    const char *plus = memchr(from, '+', (size_t)(at - from));
    if (plus) {
        char base[AUTH_MAX_LOGIN + 1];
        snprintf(base, sizeof base, "%.*s%s", (int)(plus - from), from, at);
        if (strcmp(base, u) == 0)
            return true;
    }
    /* An alias that resolves to this user; a catch-all does not count, or one catch-all
     * would let its owner send as any address of the domain. */
    struct auth_targets t;
    bool allowed = false;
    pthread_mutex_lock(&svc->db_lock);
    if (auth_db_domain_exists(svc, at + 1) == 1 && resolve_locked(svc, from, false, &t) == 1) {
        allowed = list_has(t.local, t.n_local, u);
        auth_targets_free(&t);
    }
    pthread_mutex_unlock(&svc->db_lock);
    return allowed;
}

/* ---- credentials ------------------------------------------------------------------ */

int auth_creds_load(struct auth_service *svc, const char *address, struct auth_cred_set *cs)
{
    memset(cs, 0, sizeof *cs);
    pthread_mutex_lock(&svc->db_lock);
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(svc->db,
                           "SELECT u.address, u.enabled, c.scheme, c.value FROM users u "
                           "LEFT JOIN credentials c ON c.address = u.address "
                           "WHERE u.address = ? ORDER BY c.rowid",
                           -1, &st, NULL) != SQLITE_OK)
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
        if (sqlite3_column_type(st, 2) == SQLITE_NULL || cs->n >= 16)
            continue;
        cs->scheme[cs->n] = strdup((const char *)sqlite3_column_text(st, 2));
        cs->value[cs->n] = strdup((const char *)sqlite3_column_text(st, 3));
        cs->n++;
        if (!cs->scheme[cs->n - 1] || !cs->value[cs->n - 1])
            rc = -1;
    }
    if (s != SQLITE_DONE)
        rc = -1;
out:
    if (rc < 0)
        log_error("auth", "tern.db: credential lookup failed: %s", sqlite3_errmsg(svc->db));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&svc->db_lock);
    if (rc != 1)
        auth_creds_free(cs);
    return rc;
}

void auth_creds_free(struct auth_cred_set *cs)
{
    free(cs->address);
    for (size_t i = 0; i < cs->n; i++) {
        free(cs->scheme[i]);
        if (cs->value[i]) {
            memset(cs->value[i], 0, strlen(cs->value[i]));
            free(cs->value[i]);
        }
    }
    memset(cs, 0, sizeof *cs);
}

const char *auth_creds_find(const struct auth_cred_set *cs, const char *scheme)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->scheme[i] && strcasecmp(cs->scheme[i], scheme) == 0)
            return cs->value[i];
    return NULL;
}

bool auth_creds_any(struct auth_service *svc, const char *const *schemes)
{
    bool found = false;
    pthread_mutex_lock(&svc->db_lock);
    for (size_t i = 0; schemes[i] && !found; i++)
        found = db_exists(svc,
                          "SELECT 1 FROM credentials c JOIN users u ON u.address = c.address "
                          "WHERE c.scheme = ? AND u.enabled LIMIT 1",
                          schemes[i]) == 1;
    pthread_mutex_unlock(&svc->db_lock);
    return found;
}
