/*
 * dir_sql_admin.c - `tern domain/user/alias` on a postfixadmin database: rows written
 * the way postfixadmin 3.3 writes them (model/DomainHandler.php, MailboxHandler.php,
 * AliasHandler.php), so that postfixadmin keeps managing the same users:
 *   - a domain: one domain row (description '', no limits, transport 'virtual', active);
 *   - a user: a mailbox row (maildir "<domain>/<local>/", quota in bytes, 0 unlimited)
 *     and the alias row delivering the address to itself; deleting one removes its
 *     mailbox, alias, quota, quota2, vacation and fetchmail rows;
 *   - enable/disable: mailbox.active and the user's own alias row together;
 *   - an alias: one row per source address with goto a comma-separated list; adding a
 *     target to an existing source extends the list;
 *   - passwords in directory.password_scheme, written without the {SCHEME} prefix when
 *     directory.default_pass_scheme would read them back that way (as postfixadmin's
 *     md5crypt/php_crypt settings store them), with it otherwise (its dovecot:X ones).
 * Each change is one transaction on one pooled connection.
 */
#include "auth/dir_sql.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct dir_sql *ds(struct dir_backend *be)
{
    return (struct dir_sql *)be;
}

/* ---- transactions ----------------------------------------------------------------- */

static const struct sql_stmt stmt_begin = {.sql = "START TRANSACTION"};
static const struct sql_stmt stmt_commit = {.sql = "COMMIT"};
static const struct sql_stmt stmt_rollback = {.sql = "ROLLBACK"};

static struct sql_conn *tx_begin(struct dir_sql *d, char **error_r)
{
    struct sql_conn *c = sql_conn_acquire(d->pool, error_r);
    if (c && sql_conn_query(c, &stmt_begin, NULL, NULL, NULL, NULL, error_r) < 0) {
        sql_conn_release(c);
        return NULL;
    }
    return c;
}

/* Commit when ok (0), else roll back (-1); the connection goes back to the pool. */
static int tx_end(struct sql_conn *c, bool ok, char **error_r)
{
    int rc = -1;
    if (ok && sql_conn_query(c, &stmt_commit, NULL, NULL, NULL, NULL, error_r) == 0)
        rc = 0;
    else
        sql_conn_query(c, &stmt_rollback, NULL, NULL, NULL, NULL, NULL);
    sql_conn_release(c);
    return rc;
}

/* Run statement id on the transaction's connection with %u/%n/%d from name. */
static int tx_run(struct dir_sql *d, struct sql_conn *c, enum dir_sql_query id, const char *name,
                  bool is_domain, struct dir_sql_vars *extra, uint64_t *affected_r,
                  char **error_r)
{
    struct dir_sql_vars v;
    dir_sql_vars_name(&v, name, is_domain);
    if (extra)
        for (int i = 0; i < 26; i++)
            if (extra->v[i] && !v.v[i])
                v.v[i] = extra->v[i];
    return dir_sql_run(d, c, id, &v, NULL, NULL, affected_r, error_r);
}

/* Run a query on the transaction's connection for its first row: 1 / 0 / -1. */
static int tx_row(struct dir_sql *d, struct sql_conn *c, enum dir_sql_query id, const char *name,
                  bool is_domain, struct dir_sql_row *row, char **error_r)
{
    struct dir_sql_vars v;
    dir_sql_vars_name(&v, name, is_domain);
    memset(row, 0, sizeof *row);
    if (dir_sql_run(d, c, id, &v, dir_sql_row_copy, row, NULL, error_r) < 0 || row->is_oom) {
        dir_sql_row_free(row);
        return -1;
    }
    return row->has_row ? 1 : 0;
}

static int tx_exists(struct dir_sql *d, struct sql_conn *c, enum dir_sql_query id,
                     const char *name, bool is_domain, char **error_r)
{
    struct dir_sql_row row;
    int rc = tx_row(d, c, id, name, is_domain, &row, error_r);
    dir_sql_row_free(&row);
    return rc;
}

/* ---- domains ---------------------------------------------------------------------- */

static int pfa_domain_add(struct dir_backend *be, const char *domain, char **error_r)
{
    struct dir_sql *d = ds(be);
    struct sql_conn *c = tx_begin(d, error_r);
    if (!c)
        return -1;
    bool ok = false;
    int e = tx_exists(d, c, DQ_DOMAIN_EXISTS, domain, true, error_r);
    if (e == 1)
        auth_set_error(error_r, "domain %s already exists", domain);
    else if (e == 0)
        ok = tx_run(d, c, DQ_DOMAIN_INSERT, domain, true, NULL, NULL, error_r) == 0;
    return tx_end(c, ok, error_r);
}

/* As in tern.db: a domain with mailboxes is not deleted (postfixadmin would delete them
 * all; an admin who wants that uses postfixadmin). A target of alias domains is refused,
 * as postfixadmin does. */
static int pfa_domain_del(struct dir_backend *be, const char *domain, char **error_r)
{
    struct dir_sql *d = ds(be);
    struct sql_conn *c = tx_begin(d, error_r);
    if (!c)
        return -1;
    bool ok = false;
    struct dir_sql_row row;
    int e = tx_exists(d, c, DQ_DOMAIN_EXISTS, domain, true, error_r);
    if (e == 0)
        auth_set_error(error_r, "no such domain: %s", domain);
    if (e != 1)
        return tx_end(c, false, error_r);
    int r = tx_row(d, c, DQ_DOMAIN_USERS, domain, true, &row, error_r);
    long users = r == 1 && row.n > 0 && row.values[0] ? strtol(row.values[0], NULL, 10) : -1;
    dir_sql_row_free(&row);
    if (users > 0) {
        auth_set_error(error_r, "domain %s still has %ld user(s); delete them first", domain,
                       users);
    } else if (users == 0) {
        r = tx_row(d, c, DQ_DOMAIN_IS_TARGET, domain, true, &row, error_r);
        if (r == 1)
            auth_set_error(error_r, "domain %s is the target of alias domain %s; delete that first",
                           domain, row.n > 0 && row.values[0] ? row.values[0] : "?");
        dir_sql_row_free(&row);
        ok = r == 0 && tx_run(d, c, DQ_DOMAIN_DEL_ADMINS, domain, true, NULL, NULL, error_r) == 0 &&
             tx_run(d, c, DQ_DOMAIN_DEL_ALIASES, domain, true, NULL, NULL, error_r) == 0 &&
             tx_run(d, c, DQ_DOMAIN_DEL_ALIAS_DOMAINS, domain, true, NULL, NULL, error_r) == 0 &&
             tx_run(d, c, DQ_DOMAIN_DELETE, domain, true, NULL, NULL, error_r) == 0;
    }
    return tx_end(c, ok, error_r);
}

struct domain_list_ctx {
    void (*cb)(const char *domain, void *arg);
    void *arg;
};

static bool domain_list_row(void *arg, const struct sql_row *row)
{
    struct domain_list_ctx *ctx = arg;
    if (row->n > 0 && row->values[0])
        ctx->cb(row->values[0], ctx->arg);
    return true;
}

static int pfa_domain_list(struct dir_backend *be, void (*cb)(const char *domain, void *arg),
                           void *arg)
{
    struct domain_list_ctx ctx = {cb, arg};
    return dir_sql_run(ds(be), NULL, DQ_DOMAIN_LIST, NULL, domain_list_row, &ctx, NULL, NULL);
}

/* ---- users ------------------------------------------------------------------------ */

static bool is_crypt_family(const char *scheme)
{
    static const char *const crypts[] = {"CRYPT", "MD5-CRYPT", "SHA256-CRYPT", "SHA512-CRYPT",
                                         "BLF-CRYPT", NULL};
    for (size_t i = 0; crypts[i]; i++)
        if (strcasecmp(scheme, crypts[i]) == 0)
            return true;
    return false;
}

/* The column value for a hashed password: without "{SCHEME}" when default_pass_scheme
 * reads it back as it is (the same scheme, or CRYPT and any crypt(3) string). */
static const char *stored_password(struct dir_sql *d, const struct dir_hashed *h)
{
    const char *value = h->value[0];
    const char *close = value[0] == '{' ? strchr(value, '}') : NULL;
    bool is_bare = strcasecmp(h->scheme[0], d->default_scheme) == 0 ||
                   (strcasecmp(d->default_scheme, "CRYPT") == 0 && is_crypt_family(h->scheme[0]));
    return is_bare && close ? close + 1 : value;
}

static int pfa_user_add(struct dir_backend *be, const char *addr, const struct dir_hashed *h,
                        bool has_quota, uint64_t quota, char **error_r)
{
    struct dir_sql *d = ds(be);
    const char *at = strrchr(addr, '@');
    char quota_text[24], maildir[AUTH_MAX_LOGIN + 4];
    snprintf(quota_text, sizeof quota_text, "%llu", (unsigned long long)(has_quota ? quota : 0));
    /* postfixadmin's default layout (domain_path YES, domain_in_mailbox NO) */
    snprintf(maildir, sizeof maildir, "%s/%.*s/", at + 1, (int)(at - addr), addr);
    struct sql_conn *c = tx_begin(d, error_r);
    if (!c)
        return -1;
    bool ok = false;
    int dom = tx_exists(d, c, DQ_DOMAIN_EXISTS, at + 1, true, error_r);
    int box = dom == 1 ? tx_exists(d, c, DQ_IS_MAILBOX, addr, false, error_r) : -1;
    int alias = box == 0 ? tx_exists(d, c, DQ_ALIAS_GET, addr, false, error_r) : -1;
    if (dom == 0) {
        auth_set_error(error_r, "unknown domain %s (add it with `tern domain add`)", at + 1);
    } else if (box == 1) {
        auth_set_error(error_r, "user %s already exists", addr);
    } else if (alias == 1) {
        auth_set_error(error_r, "%s is an alias; delete it first (`tern alias del %s`)", addr, addr);
    } else if (alias == 0) {
        struct dir_sql_vars extra = {0};
        extra.v['w' - 'a'] = stored_password(d, h);
        extra.v['q' - 'a'] = quota_text;
        extra.v['m' - 'a'] = maildir;
        extra.v['g' - 'a'] = addr;
        ok = tx_run(d, c, DQ_MAILBOX_INSERT, addr, false, &extra, NULL, error_r) == 0 &&
             tx_run(d, c, DQ_ALIAS_INSERT, addr, false, &extra, NULL, error_r) == 0;
    }
    return tx_end(c, ok, error_r);
}

static int pfa_user_del(struct dir_backend *be, const char *addr, char **error_r)
{
    struct dir_sql *d = ds(be);
    struct sql_conn *c = tx_begin(d, error_r);
    if (!c)
        return -1;
    uint64_t n = 0;
    bool ok = tx_run(d, c, DQ_MAILBOX_DELETE, addr, false, NULL, &n, error_r) == 0;
    if (ok && n == 0) {
        auth_set_error(error_r, "no such user: %s", addr);
        ok = false;
    }
    /* the Maildir stays on disk: admins delete mail deliberately */
    ok = ok && tx_run(d, c, DQ_USER_DEL_FETCHMAIL, addr, false, NULL, NULL, error_r) == 0 &&
         tx_run(d, c, DQ_USER_DEL_VACATION_NOTIFICATION, addr, false, NULL, NULL, error_r) == 0 &&
         tx_run(d, c, DQ_USER_DEL_VACATION, addr, false, NULL, NULL, error_r) == 0 &&
         tx_run(d, c, DQ_USER_DEL_QUOTA, addr, false, NULL, NULL, error_r) == 0 &&
         tx_run(d, c, DQ_USER_DEL_QUOTA2, addr, false, NULL, NULL, error_r) == 0 &&
         tx_run(d, c, DQ_ALIAS_DELETE, addr, false, NULL, NULL, error_r) == 0;
    return tx_end(c, ok, error_r);
}

/* One UPDATE of the user's mailbox row (and, for active, its own alias row). */
static int mailbox_update(struct dir_sql *d, const char *addr, enum dir_sql_query id,
                          enum dir_sql_query alias_id, char letter, const char *value,
                          char **error_r)
{
    struct sql_conn *c = tx_begin(d, error_r);
    if (!c)
        return -1;
    struct dir_sql_vars extra = {0};
    extra.v[letter - 'a'] = value;
    uint64_t n = 0;
    bool ok = tx_run(d, c, id, addr, false, &extra, &n, error_r) == 0;
    if (ok && n == 0) {
        auth_set_error(error_r, "no such user: %s", addr);
        ok = false;
    }
    if (ok && alias_id != DQ_COUNT)
        ok = tx_run(d, c, alias_id, addr, false, &extra, NULL, error_r) == 0;
    return tx_end(c, ok, error_r);
}

static int pfa_user_set_password(struct dir_backend *be, const char *addr,
                                 const struct dir_hashed *h, char **error_r)
{
    return mailbox_update(ds(be), addr, DQ_MAILBOX_SET_PASSWORD, DQ_COUNT, 'w',
                          stored_password(ds(be), h), error_r);
}

static int pfa_user_set_quota(struct dir_backend *be, const char *addr, bool has_quota,
                              uint64_t quota, char **error_r)
{
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)(has_quota ? quota : 0));
    return mailbox_update(ds(be), addr, DQ_MAILBOX_SET_QUOTA, DQ_COUNT, 'q', text, error_r);
}

static int pfa_user_set_enabled(struct dir_backend *be, const char *addr, bool enabled,
                                char **error_r)
{
    return mailbox_update(ds(be), addr, DQ_MAILBOX_SET_ACTIVE, DQ_ALIAS_SET_ACTIVE, 'a',
                          enabled ? "1" : "0", error_r);
}

static char *pfa_user_schemes(struct dir_backend *be, const char *addr)
{
    struct dir_sql *d = ds(be);
    struct dir_sql_vars v;
    dir_sql_vars_name(&v, addr, false);
    struct dir_sql_row row = {0};
    if (dir_sql_run(d, NULL, DQ_MAILBOX_PASSWORD, &v, dir_sql_row_copy, &row, NULL, NULL) < 0 ||
        row.is_oom) {
        dir_sql_row_free(&row);
        return NULL;
    }
    char scheme[64] = "";
    if (row.has_row && row.n > 0 && row.values[0] &&
        !auth_password_scheme_of(row.values[0], scheme, sizeof scheme))
        snprintf(scheme, sizeof scheme, "%s", d->default_scheme);
    dir_sql_row_free(&row);
    return strdup(scheme);
}

/* ---- aliases ---------------------------------------------------------------------- */

/* goto text <-> list. */
static bool goto_split(const char *text, char ***list, size_t *n)
{
    *list = NULL;
    *n = 0;
    for (const char *p = text ? text : ""; *p;) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            p++;
        if (p > start) {
            char *one = strndup(start, (size_t)(p - start));
            bool ok = one && dir_list_add(list, n, one);
            free(one);
            if (!ok)
                return false;
        }
    }
    return true;
}

static char *goto_join(char **list, size_t n)
{
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < n; i++)
        if (!buf_printf(&b, "%s%s", i ? "," : "", list[i])) {
            buf_free(&b);
            return NULL;
        }
    return b.data ? buf_steal(&b) : strdup("");
}

static int list_index(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(list[i], s) == 0)
            return (int)i;
    return -1;
}

/* Write the source's goto list: UPDATE, INSERT (is_new) or DELETE (empty). */
static bool goto_store(struct dir_sql *d, struct sql_conn *c, const char *src, char **list,
                       size_t n, bool is_new, char **error_r)
{
    if (n == 0)
        return tx_run(d, c, DQ_ALIAS_DELETE, src, false, NULL, NULL, error_r) == 0;
    char *joined = goto_join(list, n);
    if (!joined) {
        auth_set_error(error_r, "out of memory");
        return false;
    }
    struct dir_sql_vars extra = {0};
    extra.v['g' - 'a'] = joined;
    bool ok = tx_run(d, c, is_new ? DQ_ALIAS_INSERT : DQ_ALIAS_UPDATE, src, false, &extra, NULL,
                     error_r) == 0;
    free(joined);
    return ok;
}

static int pfa_alias_add(struct dir_backend *be, const char *src, const char *dst, char **error_r)
{
    struct dir_sql *d = ds(be);
    const char *domain = strrchr(src, '@') + 1;
    struct sql_conn *c = tx_begin(d, error_r);
    if (!c)
        return -1;
    bool ok = false;
    struct dir_sql_row row;
    int dom = tx_exists(d, c, DQ_DOMAIN_EXISTS, domain, true, error_r);
    int r = dom == 1 ? tx_row(d, c, DQ_ALIAS_GET, src, false, &row, error_r) : -1;
    if (dom == 0)
        auth_set_error(error_r, "alias source domain %s is not a local domain", domain);
    if (r >= 0) {
        char **list = NULL;
        size_t n = 0;
        if (!goto_split(r == 1 && row.n > 0 ? row.values[0] : "", &list, &n)) {
            auth_set_error(error_r, "out of memory");
        } else if (list_index(list, n, dst) >= 0) {
            auth_set_error(error_r, "alias %s -> %s already exists", src, dst);
        } else if (!dir_list_add(&list, &n, dst)) {
            auth_set_error(error_r, "too many targets for %s", src);
        } else {
            ok = goto_store(d, c, src, list, n, r == 0, error_r);
        }
        dir_list_free(list, n);
        dir_sql_row_free(&row);
    }
    return tx_end(c, ok, error_r);
}

/* A mailbox's own alias row keeps the mailbox's address as a target: without it
 * Postfix (and postfixadmin) would stop delivering to the mailbox. */
static int pfa_alias_del(struct dir_backend *be, const char *src, const char *dst_or_null,
                         char **error_r)
{
    struct dir_sql *d = ds(be);
    struct sql_conn *c = tx_begin(d, error_r);
    if (!c)
        return -1;
    bool ok = false;
    struct dir_sql_row row;
    int r = tx_row(d, c, DQ_ALIAS_GET, src, false, &row, error_r);
    int box = r == 1 ? tx_exists(d, c, DQ_IS_MAILBOX, src, false, error_r) : -1;
    char **list = NULL;
    size_t n = 0;
    if (r == 0) {
        auth_set_error(error_r, "no such alias: %s", src);
    } else if (box >= 0 && !goto_split(row.n > 0 ? row.values[0] : "", &list, &n)) {
        auth_set_error(error_r, "out of memory");
    } else if (box >= 0 && dst_or_null) {
        int i = list_index(list, n, dst_or_null);
        if (i < 0) {
            auth_set_error(error_r, "no such alias: %s -> %s", src, dst_or_null);
        } else if (box == 1 && strcasecmp(dst_or_null, src) == 0) {
            auth_set_error(error_r, "%s is a mailbox: its own delivery is not an alias (delete "
                                    "the user instead)",
                           src);
        } else {
            free(list[i]);
            memmove(&list[i], &list[i + 1], (n - (size_t)i - 1) * sizeof *list);
            n--;
            ok = goto_store(d, c, src, list, n, false, error_r);
        }
    } else if (box == 1) {
        /* all forwards of a mailbox go, its own delivery stays */
        char *self = strdup(src);
        if (!self) {
            auth_set_error(error_r, "out of memory");
        } else if (n == 1 && strcasecmp(list[0], src) == 0) {
            auth_set_error(error_r, "no such alias: %s (it is a mailbox without forwards)", src);
            free(self);
        } else {
            ok = goto_store(d, c, src, &self, 1, false, error_r);
            free(self);
        }
    } else if (box == 0) {
        ok = tx_run(d, c, DQ_ALIAS_DELETE, src, false, NULL, NULL, error_r) == 0;
    }
    dir_list_free(list, n);
    dir_sql_row_free(&row);
    return tx_end(c, ok, error_r);
}

struct alias_list_ctx {
    void (*cb)(const char *source, const char *target, void *arg);
    void *arg;
};

/* Every target but a mailbox's delivery to itself (that row is the mailbox). */
static bool alias_list_row(void *arg, const struct sql_row *row)
{
    struct alias_list_ctx *ctx = arg;
    if (row->n < 2 || !row->values[0] || !row->values[1])
        return true;
    char **list = NULL;
    size_t n = 0;
    if (goto_split(row->values[1], &list, &n))
        for (size_t i = 0; i < n; i++)
            if (strcasecmp(list[i], row->values[0]) != 0)
                ctx->cb(row->values[0], list[i], ctx->arg);
    dir_list_free(list, n);
    return true;
}

static int pfa_alias_list(struct dir_backend *be,
                          void (*cb)(const char *source, const char *target, void *arg), void *arg)
{
    struct alias_list_ctx ctx = {cb, arg};
    return dir_sql_run(ds(be), NULL, DQ_ALIAS_LIST, NULL, alias_list_row, &ctx, NULL, NULL);
}

void dir_sql_admin_install(struct dir_backend_ops *ops)
{
    ops->domain_add = pfa_domain_add;
    ops->domain_del = pfa_domain_del;
    ops->domain_list = pfa_domain_list;
    ops->user_add = pfa_user_add;
    ops->user_del = pfa_user_del;
    ops->user_set_password = pfa_user_set_password;
    ops->user_set_quota = pfa_user_set_quota;
    ops->user_set_enabled = pfa_user_set_enabled;
    ops->user_schemes = pfa_user_schemes;
    ops->alias_add = pfa_alias_add;
    ops->alias_del = pfa_alias_del;
    ops->alias_list = pfa_alias_list;
}
