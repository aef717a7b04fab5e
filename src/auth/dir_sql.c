/*
 * dir_sql.c - the directory in MariaDB/MySQL or PostgreSQL (dir_backend.h over sql.h):
 * settings and their checks, the statement set of each schema, and the lookups.
 *
 * directory.schema = postfixadmin reads postfixadmin's tables as postfixadmin 3.3 creates
 * them (tests/integration/sql/postfixadmin-3.3-*.sql):
 *   domain(domain, active, backupmx)      local domains: active and not a backup MX
 *   alias_domain(alias_domain, target_domain, active)
 *   alias(address, goto, active)          goto is a comma-separated list; every mailbox
 *                                         has a row delivering to itself; "@d" catch-all
 *   mailbox(username, password, maildir, quota, active, domain)
 * A user is enabled when its mailbox and its domain are active. Its home is
 * <directory.mail_root>/<maildir> (maildir "example.org/alice/", as postfixadmin writes
 * it, gives Tern's own layout). Its quota is mailbox.quota in bytes, 0 unlimited. The
 * password column is read as Dovecot does: "{SCHEME}..." as marked, anything else in
 * directory.default_pass_scheme (CRYPT by default: $1$ md5crypt, $5$, $6$, $2y$, DES).
 *
 * directory.schema = custom (the default when queries are given) runs the administrator's
 * queries in Dovecot's style (password_query: columns password [, user]; user_query:
 * home (or maildir), quota_rule or quota [, user]; iterate_query: user; domain_query: any
 * row = ours; alias_query: targets; alias_domain_query: the target domain; instead of
 * user, Dovecot's username and domain columns). Such a directory is read-only for the
 * CLI.
 *
 * Every statement is prepared with bound parameters (sql_template.h): names from
 * clients never become SQL text. Lookups may block on the network (is_network); the
 * pool bounds, times out and retries them (sql.h).
 */
#include "auth/dir_sql.h"
#include "core/config.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct dir_sql *ds(struct dir_backend *be)
{
    return (struct dir_sql *)be;
}

/* ---- statement sets --------------------------------------------------------------- */

struct dir_sql_builtin {
    enum dir_sql_query id;
    const char *vars;    /* letters the statement uses */
    const char *untyped; /* letters bound without a declared type (numbers, booleans) */
    const char *sql;
};

/* postfixadmin 3.3's tables. "active = '1'" reads the same in MySQL (tinyint) and
 * PostgreSQL (boolean), as in postfixadmin's own Postfix and Dovecot examples. */
#define PFA_USER_COLUMNS                                                                           \
    "SELECT m.username, m.maildir, m.quota, m.active, d.active AS domain_active "                   \
    "FROM mailbox m JOIN domain d ON d.domain = m.domain "
static const struct dir_sql_builtin postfixadmin_statements[] = {
    {DQ_DOMAIN, "d", NULL,
     "SELECT '' AS target FROM domain WHERE domain = %d AND active = '1' AND backupmx = '0' "
     "UNION ALL SELECT ad.target_domain FROM alias_domain ad "
     "JOIN domain t ON t.domain = ad.target_domain "
     "WHERE ad.alias_domain = %d AND ad.active = '1' AND t.active = '1'"},
    {DQ_DOMAIN_SINGLE, "", NULL,
     "SELECT domain FROM domain WHERE active = '1' AND backupmx = '0' AND domain <> 'ALL' "
     "ORDER BY domain LIMIT 2"},
    {DQ_ALIAS, "u", NULL, "SELECT goto FROM alias WHERE address = %u AND active = '1'"},
    {DQ_USER, "u", NULL, PFA_USER_COLUMNS "WHERE m.username = %u"},
    {DQ_PASSWORD, "u", NULL,
     "SELECT m.username, m.password, m.active, d.active AS domain_active "
     "FROM mailbox m JOIN domain d ON d.domain = m.domain WHERE m.username = %u"},
    {DQ_ITERATE, "", NULL, PFA_USER_COLUMNS "ORDER BY m.domain, m.username"},
    {DQ_ITERATE_DOMAIN, "d", NULL, PFA_USER_COLUMNS "WHERE m.domain = %d ORDER BY m.username"},
    /* administration, as postfixadmin's DomainHandler / MailboxHandler / AliasHandler */
    {DQ_DOMAIN_EXISTS, "d", NULL, "SELECT domain FROM domain WHERE domain = %d"},
    {DQ_DOMAIN_INSERT, "d", NULL,
     "INSERT INTO domain (domain, description, aliases, mailboxes, maxquota, quota, transport, "
     "backupmx, created, modified, active) "
     "VALUES (%d, '', 0, 0, 0, 0, 'virtual', '0', NOW(), NOW(), '1')"},
    {DQ_DOMAIN_USERS, "d", NULL, "SELECT COUNT(*) FROM mailbox WHERE domain = %d"},
    {DQ_DOMAIN_IS_TARGET, "d", NULL,
     "SELECT alias_domain FROM alias_domain WHERE target_domain = %d"},
    {DQ_DOMAIN_DEL_ADMINS, "d", NULL, "DELETE FROM domain_admins WHERE domain = %d"},
    {DQ_DOMAIN_DEL_ALIASES, "d", NULL, "DELETE FROM alias WHERE domain = %d"},
    {DQ_DOMAIN_DEL_ALIAS_DOMAINS, "d", NULL, "DELETE FROM alias_domain WHERE alias_domain = %d"},
    {DQ_DOMAIN_DELETE, "d", NULL, "DELETE FROM domain WHERE domain = %d"},
    {DQ_DOMAIN_LIST, "", NULL, "SELECT domain FROM domain WHERE domain <> 'ALL' ORDER BY domain"},
    {DQ_MAILBOX_INSERT, "undwqm", "q",
     "INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain, "
     "created, modified, active) VALUES (%u, %w, '', %m, %q, %n, %d, NOW(), NOW(), '1')"},
    {DQ_MAILBOX_DELETE, "u", NULL, "DELETE FROM mailbox WHERE username = %u"},
    {DQ_USER_DEL_FETCHMAIL, "u", NULL, "DELETE FROM fetchmail WHERE mailbox = %u"},
    {DQ_USER_DEL_VACATION, "u", NULL, "DELETE FROM vacation WHERE email = %u"},
    {DQ_USER_DEL_VACATION_NOTIFICATION, "u", NULL,
     "DELETE FROM vacation_notification WHERE on_vacation = %u"},
    {DQ_USER_DEL_QUOTA, "u", NULL, "DELETE FROM quota WHERE username = %u"},
    {DQ_USER_DEL_QUOTA2, "u", NULL, "DELETE FROM quota2 WHERE username = %u"},
    {DQ_MAILBOX_SET_PASSWORD, "uw", NULL,
     "UPDATE mailbox SET password = %w, modified = NOW() WHERE username = %u"},
    {DQ_MAILBOX_SET_QUOTA, "uq", "q",
     "UPDATE mailbox SET quota = %q, modified = NOW() WHERE username = %u"},
    {DQ_MAILBOX_SET_ACTIVE, "ua", "a",
     "UPDATE mailbox SET active = %a, modified = NOW() WHERE username = %u"},
    {DQ_ALIAS_SET_ACTIVE, "ua", "a",
     "UPDATE alias SET active = %a, modified = NOW() WHERE address = %u"},
    {DQ_MAILBOX_PASSWORD, "u", NULL, "SELECT password FROM mailbox WHERE username = %u"},
    {DQ_IS_MAILBOX, "u", NULL, "SELECT username FROM mailbox WHERE username = %u"},
    {DQ_ALIAS_GET, "u", NULL, "SELECT goto FROM alias WHERE address = %u FOR UPDATE"},
    {DQ_ALIAS_INSERT, "udg", NULL,
     "INSERT INTO alias (address, goto, domain, created, modified, active) "
     "VALUES (%u, %g, %d, NOW(), NOW(), '1')"},
    {DQ_ALIAS_UPDATE, "ug", NULL,
     "UPDATE alias SET goto = %g, modified = NOW() WHERE address = %u"},
    {DQ_ALIAS_DELETE, "u", NULL, "DELETE FROM alias WHERE address = %u"},
    {DQ_ALIAS_LIST, "", NULL, "SELECT address, goto FROM alias ORDER BY domain, address"},
};

/* The custom schema: which key fills which statement. */
static const struct {
    enum dir_sql_query id;
    const char *key;
    size_t offset;
    bool is_required;
} custom_statements[] = {
    {DQ_PASSWORD, "directory.password_query", offsetof(struct config, directory_password_query),
     true},
    {DQ_USER, "directory.user_query", offsetof(struct config, directory_user_query), true},
    {DQ_DOMAIN, "directory.domain_query", offsetof(struct config, directory_domain_query), true},
    {DQ_ALIAS, "directory.alias_query", offsetof(struct config, directory_alias_query), false},
    {DQ_ALIAS_DOMAIN, "directory.alias_domain_query",
     offsetof(struct config, directory_alias_domain_query), false},
    {DQ_ITERATE, "directory.iterate_query", offsetof(struct config, directory_iterate_query),
     false},
};
#define N_CUSTOM (sizeof custom_statements / sizeof custom_statements[0])
/* Dovecot's %u %n %d, and Postfix's %s (the whole key looked up: what %u is here). */
#define CUSTOM_VARS "unds"

static const char *custom_value(const struct config *cfg, size_t i)
{
    const char *v = *(char *const *)((const char *)cfg + custom_statements[i].offset);
    return v ? v : "";
}

/* directory.schema, or when it is not given: custom when queries are (they came from a
 * Dovecot or Postfix setup), else postfixadmin. */
static bool is_custom_schema(const struct config *cfg)
{
    if (config_key_is_set(cfg, "directory.schema"))
        return cfg->directory_schema == DIRECTORY_SCHEMA_CUSTOM;
    for (size_t i = 0; i < N_CUSTOM; i++)
        if (custom_value(cfg, i)[0])
            return true;
    return false;
}

/* The key that made the schema custom: directory.schema, or the first query given. */
static const char *custom_origin_key(const struct config *cfg)
{
    if (config_key_is_set(cfg, "directory.schema"))
        return "directory.schema";
    for (size_t i = 0; i < N_CUSTOM; i++)
        if (custom_value(cfg, i)[0])
            return custom_statements[i].key;
    return "directory.schema";
}

static int stmt_compile(struct dir_sql_stmt *q, enum dir_sql_query id, const char *text,
                        enum sql_dialect dialect, const char *vars, const char *untyped,
                        char **error_r)
{
    if (sql_template_compile(text, dialect, vars, untyped, &q->t, error_r) < 0)
        return -1;
    for (size_t i = 0; i < q->t.n_params; i++)
        q->is_typed_text[i] = q->t.params[i].is_typed_text;
    q->stmt = (struct sql_stmt){.sql = q->t.sql,
                                .n_params = q->t.n_params,
                                .is_typed_text = q->is_typed_text,
                                .slot = (unsigned)id + 1};
    q->is_set = true;
    return 0;
}

/* ---- settings and their checks ---------------------------------------------------- */

/* "file:line: key: reason", the line being where origin_key was set (the key itself, or,
 * for a key that is missing, the one that made it necessary). */
__attribute__((format(printf, 5, 6))) static int key_error_at(const struct config *cfg,
                                                              const char *origin_key,
                                                              const char *key, char **error_r,
                                                              const char *fmt, ...)
{
    char *origin = config_key_origin(cfg, origin_key), *reason = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&reason, fmt, ap) < 0)
        reason = NULL;
    va_end(ap);
    auth_set_error(error_r, "%s: %s: %s", origin ? origin : "?", key, reason ? reason : "?");
    free(origin);
    free(reason);
    return -1;
}
#define key_error(cfg, key, ...) key_error_at(cfg, key, key, __VA_ARGS__)

static enum sql_driver_kind driver_kind(const struct config *cfg)
{
    return cfg->directory_driver == DIRECTORY_MYSQL ? SQL_DRIVER_MYSQL : SQL_DRIVER_PGSQL;
}

/* The password from directory.password or the first line of directory.password_file. */
static int read_password(const struct config *cfg, char **password_r, char **error_r)
{
    *password_r = NULL;
    const char *file = cfg->directory_password_file;
    if (!file || !file[0]) {
        *password_r = strdup(cfg->directory_password ? cfg->directory_password : "");
        return *password_r ? 0 : -1;
    }
    FILE *f = fopen(file, "r");
    if (!f)
        return key_error(cfg, "directory.password_file", error_r, "cannot read %s: %s", file,
                         strerror(errno));
    char line[1100];
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    size_t n = strcspn(line, "\r\n");
    if (n > 1024)
        return key_error(cfg, "directory.password_file", error_r, "password longer than 1024 bytes");
    line[n] = '\0';
    *password_r = strdup(line);
    memset(line, 0, sizeof line);
    return *password_r ? 0 : -1;
}

static bool is_plain_scheme(const char *scheme)
{
    return strcasecmp(scheme, "PLAIN") == 0 || strcasecmp(scheme, "CLEAR") == 0 ||
           strcasecmp(scheme, "CLEARTEXT") == 0;
}

int dir_sql_config_check(const struct config *cfg, char **error_r)
{
    enum sql_driver_kind kind = driver_kind(cfg);
    if (!sql_driver_available(kind))
        return key_error(cfg, "directory.driver", error_r,
                         "this Tern was built without %s support (install %s and rebuild)",
                         kind == SQL_DRIVER_MYSQL ? "MariaDB/MySQL" : "PostgreSQL",
                         kind == SQL_DRIVER_MYSQL ? "libmariadb-dev" : "libpq-dev");
    if (!cfg->directory_dbname || !cfg->directory_dbname[0])
        return key_error_at(cfg, "directory.driver", "directory.dbname", error_r,
                            "must be set for directory.driver = %s",
                         kind == SQL_DRIVER_MYSQL ? "mysql" : "postgresql");
    if (cfg->directory_password && cfg->directory_password[0] && cfg->directory_password_file &&
        cfg->directory_password_file[0])
        return key_error(cfg, "directory.password_file", error_r,
                         "give directory.password or directory.password_file, not both");
    if (cfg->directory_pool_size < 1 || cfg->directory_pool_size > SQL_MAX_POOL)
        return key_error(cfg, "directory.pool_size", error_r, "must be 1..%d", SQL_MAX_POOL);
    if (cfg->directory_connect_timeout < 1 || cfg->directory_connect_timeout > 3600)
        return key_error(cfg, "directory.connect_timeout", error_r, "must be 1..3600 seconds");
    if (cfg->directory_query_timeout < 1 || cfg->directory_query_timeout > 3600)
        return key_error(cfg, "directory.query_timeout", error_r, "must be 1..3600 seconds");
    if (cfg->directory_port > 65535)
        return key_error(cfg, "directory.port", error_r, "must be 0..65535");
    if (cfg->directory_tls == DIRECTORY_TLS_VERIFY &&
        (!cfg->directory_tls_ca || !cfg->directory_tls_ca[0]))
        return key_error(cfg, "directory.tls", error_r,
                         "verify needs directory.tls_ca (the CA that signed the server's "
                         "certificate)");
    if (!auth_password_scheme_is_known(cfg->directory_default_pass_scheme))
        return key_error(cfg, "directory.default_pass_scheme", error_r,
                         "unknown password scheme '%s'", cfg->directory_default_pass_scheme);
    char *probe = NULL, *err = NULL;
    if (auth_password_hash(cfg->directory_password_scheme, "probe", NULL, &probe, &err) < 0) {
        int rc = key_error(cfg, "directory.password_scheme", error_r, "'%s': %s",
                           cfg->directory_password_scheme, err ? err : "cannot hash");
        free(err);
        return rc;
    }
    free(probe);
    char *password = NULL;
    if (read_password(cfg, &password, error_r) < 0)
        return -1;
    free(password);
    bool is_custom = is_custom_schema(cfg);
    enum sql_dialect dialect = sql_driver_dialect(kind);
    for (size_t i = 0; i < N_CUSTOM; i++) {
        const char *text = custom_value(cfg, i);
        const char *key = custom_statements[i].key;
        if (!is_custom && text[0])
            return key_error(cfg, key, error_r,
                             "is used only with directory.schema = custom (postfixadmin's "
                             "queries are built in)");
        if (!is_custom)
            continue;
        if (!text[0]) {
            if (custom_statements[i].is_required)
                return key_error_at(cfg, custom_origin_key(cfg), key, error_r,
                                    "must be set for directory.schema = custom (or, on "
                                    "postfixadmin's tables, directory.schema = postfixadmin "
                                    "and no queries)");
            continue;
        }
        struct sql_template t;
        if (sql_template_compile(text, dialect, CUSTOM_VARS, NULL, &t, &err) < 0) {
            int rc = key_error(cfg, key, error_r, "%s", err ? err : "bad query");
            free(err);
            return rc;
        }
        sql_template_free(&t);
    }
    return 0;
}

int auth_sql_query_check(bool is_pgsql, const char *query, char **error_r)
{
    struct sql_template t;
    enum sql_dialect dialect = is_pgsql ? SQL_DIALECT_PGSQL : SQL_DIALECT_MYSQL;
    if (sql_template_compile(query, dialect, CUSTOM_VARS, NULL, &t, error_r) < 0)
        return -1;
    sql_template_free(&t);
    return 0;
}

/* ---- rows ------------------------------------------------------------------------- */

bool dir_sql_row_copy(void *arg, const struct sql_row *row)
{
    struct dir_sql_row *r = arg;
    if (r->has_row)
        return false;
    r->has_row = true;
    r->n = row->n;
    for (size_t i = 0; i < row->n; i++) {
        r->names[i] = strdup(row->names[i] ? row->names[i] : "");
        r->values[i] = row->values[i] ? strdup(row->values[i]) : NULL;
        if (!r->names[i] || (row->values[i] && !r->values[i]))
            r->is_oom = true;
    }
    return false; /* the first row is all we want */
}

void dir_sql_row_free(struct dir_sql_row *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->names[i]);
        if (r->values[i])
            memset(r->values[i], 0, strlen(r->values[i]));
        free(r->values[i]);
    }
    memset(r, 0, sizeof *r);
}

const char *dir_sql_row_get(const struct dir_sql_row *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->names[i] && strcasecmp(r->names[i], name) == 0)
            return r->values[i];
    return NULL;
}

bool dir_sql_bool(const char *v)
{
    if (!v)
        return false;
    static const char *const yes[] = {"1", "t", "true", "y", "yes", "on"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(v, yes[i]) == 0)
            return true;
    return false;
}

/* ---- running statements ----------------------------------------------------------- */

void dir_sql_vars_name(struct dir_sql_vars *v, const char *name, bool is_domain)
{
    memset(v->v, 0, sizeof v->v);
    const char *at = is_domain ? NULL : strrchr(name, '@');
    if (is_domain) {
        snprintf(v->domain, sizeof v->domain, "%s", name);
        v->local[0] = '\0';
    } else if (at) {
        snprintf(v->local, sizeof v->local, "%.*s", (int)(at - name), name);
        snprintf(v->domain, sizeof v->domain, "%s", at + 1);
    } else {
        snprintf(v->local, sizeof v->local, "%s", name);
        v->domain[0] = '\0';
    }
    v->v['u' - 'a'] = name;
    v->v['s' - 'a'] = name;
    v->v['n' - 'a'] = v->local;
    v->v['d' - 'a'] = v->domain;
}

int dir_sql_run(struct dir_sql *d, struct sql_conn *c, enum dir_sql_query id,
                const struct dir_sql_vars *vars, sql_row_fn *cb, void *arg, uint64_t *affected_r,
                char **error_r)
{
    const struct dir_sql_stmt *q = &d->q[id];
    if (!q->is_set) {
        auth_set_error(error_r, "%s: no query configured for this", d->be.name);
        return -1;
    }
    char **params = NULL;
    static const char *const none[26];
    if (sql_template_expand(&q->t, vars ? vars->v : none, &params, error_r) < 0)
        return -1;
    int rc = c ? sql_conn_query(c, &q->stmt, (const char *const *)params, cb, arg, affected_r,
                                error_r)
               : sql_query(d->pool, &q->stmt, (const char *const *)params, cb, arg, affected_r,
                           error_r);
    sql_template_params_free(params, q->t.n_params);
    return rc;
}

/* Run a lookup for its first row. 1 row, 0 none, -1 error. */
static int lookup_row(struct dir_sql *d, enum dir_sql_query id, const struct dir_sql_vars *vars,
                      struct dir_sql_row *row)
{
    memset(row, 0, sizeof *row);
    if (dir_sql_run(d, NULL, id, vars, dir_sql_row_copy, row, NULL, NULL) < 0 || row->is_oom) {
        dir_sql_row_free(row);
        return -1;
    }
    return row->has_row ? 1 : 0;
}

/* ---- lookups ---------------------------------------------------------------------- */

struct domain_rows {
    bool is_local;
    char target[256];
};

static bool domain_row(void *arg, const struct sql_row *row)
{
    struct domain_rows *r = arg;
    const char *v = row->n > 0 && row->values[0] ? row->values[0] : "";
    if (v[0] == '\0' || row->n == 0)
        r->is_local = true;
    else if (!r->target[0])
        snprintf(r->target, sizeof r->target, "%s", v);
    return true;
}

static int sql_domain_lookup(struct dir_backend *be, const char *domain, char *target_r,
                             size_t size)
{
    struct dir_sql *d = ds(be);
    struct dir_sql_vars v;
    dir_sql_vars_name(&v, domain, true);
    v.v['u' - 'a'] = domain; /* Postfix's %s: the key itself */
    struct domain_rows r = {0};
    if (d->is_postfixadmin) {
        if (dir_sql_run(d, NULL, DQ_DOMAIN, &v, domain_row, &r, NULL, NULL) < 0)
            return -1;
    } else {
        struct dir_sql_row row;
        int rc = lookup_row(d, DQ_DOMAIN, &v, &row);
        dir_sql_row_free(&row);
        if (rc < 0)
            return -1;
        r.is_local = rc == 1;
        if (d->q[DQ_ALIAS_DOMAIN].is_set) {
            rc = lookup_row(d, DQ_ALIAS_DOMAIN, &v, &row);
            if (rc == 1 && row.n > 0 && row.values[0])
                snprintf(r.target, sizeof r.target, "%s", row.values[0]);
            dir_sql_row_free(&row);
            if (rc < 0)
                return -1;
        }
    }
    /* postfixadmin keeps an alias domain in the domain table too: the alias_domain row
     * decides what its addresses are */
    char t[256];
    if (r.target[0] && auth_domain_normalize(r.target, t, sizeof t) && strcmp(t, domain) != 0) {
        snprintf(target_r, size, "%s", t);
        return DIR_DOMAIN_ALIAS;
    }
    return r.is_local ? DIR_DOMAIN_LOCAL : DIR_DOMAIN_NONE;
}

struct single_rows {
    size_t n;
    char first[256];
};

static bool single_row(void *arg, const struct sql_row *row)
{
    struct single_rows *r = arg;
    if (r->n++ == 0 && row->n > 0 && row->values[0])
        snprintf(r->first, sizeof r->first, "%s", row->values[0]);
    return r->n < 2;
}

static int sql_domain_single(struct dir_backend *be, char *out, size_t size)
{
    struct dir_sql *d = ds(be);
    if (!d->q[DQ_DOMAIN_SINGLE].is_set)
        return 0; /* custom queries: bare logins need auth.default_domain */
    struct single_rows r = {0};
    if (dir_sql_run(d, NULL, DQ_DOMAIN_SINGLE, NULL, single_row, &r, NULL, NULL) < 0)
        return -1;
    if (r.n != 1 || !auth_domain_normalize(r.first, out, size))
        return 0;
    return 1;
}

struct alias_rows {
    char ***list;
    size_t *n;
    bool is_oom;
};

/* Split "a@x, b@y,c@z" onto the list (postfixadmin's goto; a custom query's rows). */
static bool targets_add(struct alias_rows *r, const char *text)
{
    const char *p = text;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            p++;
        size_t len = (size_t)(p - start);
        if (len == 0 || len > AUTH_MAX_LOGIN)
            continue;
        char one[AUTH_MAX_LOGIN + 1];
        memcpy(one, start, len);
        one[len] = '\0';
        if (!dir_list_add(r->list, r->n, one))
            return false;
    }
    return true;
}

static bool alias_row(void *arg, const struct sql_row *row)
{
    struct alias_rows *r = arg;
    if (row->n > 0 && row->values[0] && !targets_add(r, row->values[0]))
        r->is_oom = true;
    return !r->is_oom;
}

static int sql_alias_targets(struct dir_backend *be, const char *source, char ***out, size_t *n)
{
    struct dir_sql *d = ds(be);
    *out = NULL;
    *n = 0;
    if (!d->q[DQ_ALIAS].is_set)
        return 0; /* custom queries without an alias_query: no aliases */
    struct dir_sql_vars v;
    dir_sql_vars_name(&v, source, false);
    struct alias_rows r = {out, n, false};
    if (dir_sql_run(d, NULL, DQ_ALIAS, &v, alias_row, &r, NULL, NULL) < 0 || r.is_oom) {
        dir_list_free(*out, *n);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

/* A home from a maildir/home column: absolute as given, relative under mail_root,
 * trailing '/' dropped. NULL (logged) for ".." components or an empty value. */
static char *home_from(struct dir_sql *d, const char *user, const char *value)
{
    size_t len = value ? strlen(value) : 0;
    while (len > 1 && value[len - 1] == '/')
        len--;
    if (len == 0)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        bool at_start = i == 0 || value[i - 1] == '/';
        if (at_start && value[i] == '.' && i + 1 < len && value[i + 1] == '.' &&
            (i + 2 == len || value[i + 2] == '/')) {
            log_error("auth", "directory: %s: the home/maildir of %s contains '..'; refused",
                      d->be.name, user);
            return NULL;
        }
    }
    char *home = NULL;
    if (value[0] == '/') {
        home = strndup(value, len);
    } else if (asprintf(&home, "%s/%.*s", d->mail_root, (int)len, value) < 0) {
        home = NULL;
    }
    return home;
}

/* Dovecot's quota_rule "*:bytes=N" / "*:storage=N[kMGT]" in bytes; false if not one. */
static bool quota_rule_bytes(const char *rule, uint64_t *bytes_r)
{
    const char *p = strchr(rule, ':');
    p = p ? p + 1 : rule;
    const char *eq = strchr(p, '=');
    if (!eq || !((eq - p == 5 && strncasecmp(p, "bytes", 5) == 0) ||
                 (eq - p == 7 && strncasecmp(p, "storage", 7) == 0)))
        return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(eq + 1, &end, 10);
    if (errno || end == eq + 1)
        return false;
    uint64_t mult = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mult = 1024ull;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1024ull * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1024ull * 1024 * 1024;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1024ull * 1024 * 1024 * 1024;
        end++;
        break;
    }
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end || n > UINT64_MAX / mult)
        return false;
    *bytes_r = (uint64_t)n * mult;
    return true;
}

/* The name a row gives the user, into out (size AUTH_MAX_LOGIN + 1): postfixadmin's
 * username; for a custom query Dovecot's fields, applied to looked_up (NULL for an
 * iterate row) in Dovecot's order: "user" replaces the name, "username" its local part,
 * "domain" its domain (Dovecot's "user, or username and domain"). false: none given. */
static bool row_user_name(const struct dir_sql *d, const struct dir_sql_row *row,
                          const char *looked_up, char *out, size_t size)
{
    if (d->is_postfixadmin) {
        const char *name = dir_sql_row_get(row, "username");
        return name && snprintf(out, size, "%s", name) < (int)size;
    }
    const char *user = dir_sql_row_get(row, "user"), *username = dir_sql_row_get(row, "username"),
               *domain = dir_sql_row_get(row, "domain");
    char name[2 * AUTH_MAX_LOGIN + 2];
    snprintf(name, sizeof name, "%s", user ? user : looked_up ? looked_up : "");
    if (username) {
        const char *at = strrchr(name, '@');
        char rest[AUTH_MAX_LOGIN + 1];
        snprintf(rest, sizeof rest, "%s", at ? at : "");
        snprintf(name, sizeof name, "%s%s", username, rest);
    }
    if (domain && domain[0]) {
        char *at = strrchr(name, '@');
        if (at)
            *at = '\0';
        size_t n = strlen(name);
        snprintf(name + n, sizeof name - n, "@%s", domain);
    }
    if (!name[0] || (!user && !username && !domain) || strlen(name) >= size)
        return false;
    snprintf(out, size, "%s", name);
    return true;
}

/* A user from a DQ_USER / DQ_ITERATE row. -1 when the row is unusable. */
static int user_from_row(struct dir_sql *d, const struct dir_sql_row *row, const char *address,
                         struct dir_user_info *u)
{
    memset(u, 0, sizeof *u);
    char canonical[AUTH_MAX_LOGIN + 1], name[AUTH_MAX_LOGIN + 1];
    if (!row_user_name(d, row, address, name, sizeof name) ||
        !auth_addr_normalize(name, canonical, sizeof canonical))
        snprintf(canonical, sizeof canonical, "%s", address);
    u->address = strdup(canonical);
    if (!u->address)
        return -1;
    /* postfixadmin's maildir; a custom query's home, else a maildir column (a Postfix
     * virtual_mailbox_maps query), both relative to mail_root unless absolute */
    const char *home = d->is_postfixadmin ? dir_sql_row_get(row, "maildir")
                                          : dir_sql_row_get(row, "home");
    if (!home && !d->is_postfixadmin)
        home = dir_sql_row_get(row, "maildir");
    if (home && home[0] && !(u->home = home_from(d, canonical, home))) {
        dir_user_info_free(u);
        return -1;
    }
    const char *quota = dir_sql_row_get(row, "quota");
    const char *rule = dir_sql_row_get(row, "quota_rule");
    uint64_t bytes = 0;
    if (rule && quota_rule_bytes(rule, &bytes)) {
        u->has_quota = true;
        u->quota = bytes;
    } else if (quota && *quota >= '0' && *quota <= '9') {
        u->has_quota = true;
        u->quota = strtoull(quota, NULL, 10);
    }
    if (d->is_postfixadmin) {
        u->has_quota = true; /* postfixadmin: 0 is unlimited, not "the default" */
        u->enabled = dir_sql_bool(dir_sql_row_get(row, "active")) &&
                     dir_sql_bool(dir_sql_row_get(row, "domain_active"));
    } else {
        u->enabled = true; /* a custom user_query leaves inactive users out */
    }
    return 0;
}

static int sql_user_get(struct dir_backend *be, const char *address, struct dir_user_info *u_r)
{
    struct dir_sql *d = ds(be);
    struct dir_sql_vars v;
    dir_sql_vars_name(&v, address, false);
    struct dir_sql_row row;
    memset(u_r, 0, sizeof *u_r);
    int rc = lookup_row(d, DQ_USER, &v, &row);
    if (rc == 1 && user_from_row(d, &row, address, u_r) < 0)
        rc = -1;
    dir_sql_row_free(&row);
    return rc;
}

/* "{SCHEME}data" as stored, or the value marked with directory.default_pass_scheme. */
static bool cred_add(struct dir_sql *d, struct auth_cred_set *cs, const char *stored)
{
    char scheme[64];
    if (auth_password_scheme_of(stored, scheme, sizeof scheme))
        return auth_creds_add(cs, scheme, stored);
    struct buf b;
    buf_init(&b, 2 * AUTH_MAX_CRED);
    bool ok = buf_printf(&b, "{%s}%s", d->default_scheme, stored) &&
              auth_creds_add(cs, d->default_scheme, buf_cstr(&b));
    if (b.data)
        memset(b.data, 0, b.len);
    buf_free(&b);
    return ok;
}

static int sql_creds_load(struct dir_backend *be, const char *address, struct auth_cred_set *cs)
{
    struct dir_sql *d = ds(be);
    struct dir_sql_vars v;
    dir_sql_vars_name(&v, address, false);
    struct dir_sql_row row;
    int rc = lookup_row(d, DQ_PASSWORD, &v, &row);
    if (rc == 1) {
        char canonical[AUTH_MAX_LOGIN + 1], name[AUTH_MAX_LOGIN + 1];
        if (!row_user_name(d, &row, address, name, sizeof name) ||
            !auth_addr_normalize(name, canonical, sizeof canonical))
            snprintf(canonical, sizeof canonical, "%s", address);
        const char *password = dir_sql_row_get(&row, "password");
        cs->address = strdup(canonical);
        cs->enabled = !d->is_postfixadmin || (dir_sql_bool(dir_sql_row_get(&row, "active")) &&
                                              dir_sql_bool(dir_sql_row_get(&row, "domain_active")));
        if (!cs->address || (password && password[0] && !cred_add(d, cs, password)))
            rc = -1;
        if (!password && !d->is_postfixadmin)
            log_error("auth", "directory: %s: directory.password_query returned no 'password' "
                              "column",
                      d->be.name);
    }
    dir_sql_row_free(&row);
    if (rc != 1)
        auth_creds_free(cs);
    return rc;
}

/* Answered from the configuration, never from the network: EHLO and CAPA ask this on
 * the event loop. Every stored value without {SCHEME} is in default_pass_scheme, so a
 * plaintext default means CRAM-MD5, SCRAM and APOP can be served. */
static bool sql_creds_any(struct dir_backend *be, const char *const *schemes)
{
    struct dir_sql *d = ds(be);
    for (size_t i = 0; schemes[i]; i++)
        if (strcasecmp(schemes[i], d->default_scheme) == 0)
            return true;
    return false;
}

struct iterate_rows {
    struct dir_sql *d;
    struct dir_user_info *users;
    size_t n, cap;
    bool is_failed;
};

static bool iterate_row(void *arg, const struct sql_row *row)
{
    struct iterate_rows *r = arg;
    struct dir_sql_row copy = {0};
    dir_sql_row_copy(&copy, row);
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct dir_user_info *grown = realloc(r->users, cap * sizeof *grown);
        if (!grown) {
            r->is_failed = true;
            dir_sql_row_free(&copy);
            return false;
        }
        r->users = grown;
        r->cap = cap;
    }
    char given[AUTH_MAX_LOGIN + 1];
    const char *name = row_user_name(r->d, &copy, NULL, given, sizeof given) ? given : NULL;
    if (!name && copy.n > 0)
        name = copy.values[0];
    if (name && !copy.is_oom && user_from_row(r->d, &copy, name, &r->users[r->n]) == 0)
        r->n++;
    dir_sql_row_free(&copy);
    return true;
}

static int sql_user_list(struct dir_backend *be, const char *domain_or_null,
                         void (*cb)(const struct dir_user_info *u, void *arg), void *arg)
{
    struct dir_sql *d = ds(be);
    enum dir_sql_query id = domain_or_null && d->is_postfixadmin ? DQ_ITERATE_DOMAIN : DQ_ITERATE;
    if (!d->q[id].is_set)
        return -1;
    struct dir_sql_vars v;
    dir_sql_vars_name(&v, domain_or_null ? domain_or_null : "", true);
    struct iterate_rows r = {.d = d};
    int rc = dir_sql_run(d, NULL, id, &v, iterate_row, &r, NULL, NULL);
    if (r.is_failed)
        rc = -1;
    for (size_t i = 0; i < r.n; i++) {
        /* custom iterate_query gives names only: the user_query has the rest (run after
         * the iteration: with one pooled connection, nesting would wait on itself) */
        struct dir_user_info full = {0};
        const char *at = strrchr(r.users[i].address, '@');
        bool is_wanted = !domain_or_null || (at && strcmp(at + 1, domain_or_null) == 0);
        if (rc == 0 && is_wanted) {
            if (!d->is_postfixadmin && sql_user_get(be, r.users[i].address, &full) == 1)
                cb(&full, arg);
            else if (d->is_postfixadmin)
                cb(&r.users[i], arg);
        }
        dir_user_info_free(&full);
        dir_user_info_free(&r.users[i]);
    }
    free(r.users);
    return rc;
}

/* ---- open / close ----------------------------------------------------------------- */

static void sql_close(struct dir_backend *be)
{
    struct dir_sql *d = ds(be);
    sql_pool_close(d->pool);
    for (size_t i = 0; i < DQ_COUNT; i++)
        if (d->q[i].is_set)
            sql_template_free(&d->q[i].t);
    free(d->mail_root);
    free(d->default_scheme);
    free(d->password_scheme);
    free((char *)d->be.name);
    free(d);
}

static char *upper_dup(const char *s)
{
    char *u = strdup(s ? s : "");
    for (char *p = u; p && *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    return u;
}

static struct dir_backend_ops sql_ops = {
    .close = sql_close,
    .domain_lookup = sql_domain_lookup,
    .domain_single = sql_domain_single,
    .alias_targets = sql_alias_targets,
    .user_get = sql_user_get,
    .creds_load = sql_creds_load,
    .creds_any = sql_creds_any,
    .user_list = sql_user_list,
};
static struct dir_backend_ops sql_postfixadmin_ops;
static pthread_once_t postfixadmin_ops_once = PTHREAD_ONCE_INIT;

static void postfixadmin_ops_init(void)
{
    sql_postfixadmin_ops = sql_ops;
    dir_sql_admin_install(&sql_postfixadmin_ops);
}

/* Compile the statement set of the configured schema. */
static int statements_compile(struct dir_sql *d, const struct config *cfg, enum sql_dialect dialect,
                              char **error_r)
{
    char *err = NULL;
    if (d->is_postfixadmin) {
        for (size_t i = 0; i < sizeof postfixadmin_statements / sizeof postfixadmin_statements[0];
             i++) {
            const struct dir_sql_builtin *b = &postfixadmin_statements[i];
            if (stmt_compile(&d->q[b->id], b->id, b->sql, dialect, b->vars, b->untyped, &err) <
                0) {
                auth_set_error(error_r, "internal: postfixadmin statement %d: %s", (int)b->id,
                               err ? err : "?");
                free(err);
                return -1;
            }
        }
        return 0;
    }
    for (size_t i = 0; i < N_CUSTOM; i++) {
        const char *text = custom_value(cfg, i);
        if (!text[0])
            continue;
        if (stmt_compile(&d->q[custom_statements[i].id], custom_statements[i].id, text, dialect,
                         CUSTOM_VARS, NULL, &err) < 0) {
            key_error(cfg, custom_statements[i].key, error_r, "%s", err ? err : "bad query");
            free(err);
            return -1;
        }
    }
    return 0;
}

struct dir_backend *dir_sql_open(const struct config *cfg, char **error_r)
{
    if (dir_sql_config_check(cfg, error_r) < 0)
        return NULL;
    struct dir_sql *d = calloc(1, sizeof *d);
    char *password = NULL;
    if (!d) {
        auth_set_error(error_r, "out of memory");
        return NULL;
    }
    d->is_postfixadmin = !is_custom_schema(cfg);
    d->default_scheme = upper_dup(cfg->directory_default_pass_scheme);
    d->password_scheme = upper_dup(cfg->directory_password_scheme);
    if (cfg->directory_mail_root && cfg->directory_mail_root[0])
        d->mail_root = strdup(cfg->directory_mail_root);
    else if (asprintf(&d->mail_root, "%s/mail", cfg->data_dir ? cfg->data_dir : ".") < 0)
        d->mail_root = NULL;
    if (!d->default_scheme || !d->password_scheme || !d->mail_root) {
        auth_set_error(error_r, "out of memory");
        goto fail;
    }
    d->is_default_plain = is_plain_scheme(d->default_scheme);
    if (read_password(cfg, &password, error_r) < 0)
        goto fail;
    enum sql_driver_kind kind = driver_kind(cfg);
    struct sql_settings s = {
        .driver = kind,
        .host = cfg->directory_host,
        .port = cfg->directory_port,
        .socket = cfg->directory_socket,
        .dbname = cfg->directory_dbname,
        .user = cfg->directory_user,
        .password = password,
        .pool_size = cfg->directory_pool_size,
        .connect_timeout = cfg->directory_connect_timeout,
        .query_timeout = cfg->directory_query_timeout,
        .tls = cfg->directory_tls == DIRECTORY_TLS_VERIFY ? SQL_TLS_VERIFY
               : cfg->directory_tls == DIRECTORY_TLS_YES  ? SQL_TLS_YES
                                                          : SQL_TLS_NO,
        .tls_ca = cfg->directory_tls_ca,
        .tls_cert = cfg->directory_tls_cert,
        .tls_key = cfg->directory_tls_key,
    };
    d->pool = sql_pool_open(&s, error_r);
    memset(password, 0, strlen(password));
    free(password);
    password = NULL;
    if (!d->pool || statements_compile(d, cfg, sql_driver_dialect(kind), error_r) < 0)
        goto fail;
    d->be.name = strdup(sql_pool_describe(d->pool));
    if (!d->be.name) {
        auth_set_error(error_r, "out of memory");
        goto fail;
    }
    d->be.is_network = true;
    d->be.write_schemes = d->password_scheme;
    d->be.has_quota_default = false;
    if (d->is_postfixadmin) {
        pthread_once(&postfixadmin_ops_once, postfixadmin_ops_init);
        d->be.ops = &sql_postfixadmin_ops;
    } else {
        d->be.ops = &sql_ops;
        d->be.read_only_reason = "directory.schema = custom runs your queries and has none "
                                 "that write; manage users in your database";
    }
    return &d->be;
fail:
    free(password);
    d->be.ops = &sql_ops;
    sql_close(&d->be);
    return NULL;
}
