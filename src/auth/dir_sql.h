/*
 * dir_sql.h - what the two files of the SQL directory backend share (internal):
 * dir_sql.c (settings, the query set, lookups) and dir_sql_admin.c (postfixadmin writes).
 *
 * The backend runs a fixed set of statements, each compiled from a template
 * (sql_template.h) at open: the postfixadmin schema's built-in ones, or the custom
 * directory.*_query keys. Variables: %u (and Postfix's %s) the full name looked up
 * ("user@domain", an alias source "@domain", or a domain in domain queries), %n its local
 * part, %d its domain;
 * administration adds %w (password value), %q (quota bytes), %a (active 1/0), %g (an
 * alias's goto list), %m (maildir).
 */
#ifndef TERN_AUTH_DIR_SQL_H
#define TERN_AUTH_DIR_SQL_H

#include "auth/auth_internal.h"
#include "auth/dir_backend.h"
#include "auth/sql.h"

enum dir_sql_query {
    /* lookups (both schemas) */
    DQ_DOMAIN,       /* rows: first column "" = local, else the alias domain's target */
    DQ_ALIAS_DOMAIN, /* custom: target domain of an alias domain */
    DQ_DOMAIN_SINGLE,
    DQ_ALIAS,    /* rows of targets (comma lists allowed) */
    DQ_USER,     /* postfixadmin: username, maildir, quota, active; custom: Dovecot names */
    DQ_PASSWORD, /* postfixadmin: username, password, active; custom: password [, user] */
    DQ_ITERATE,
    DQ_ITERATE_DOMAIN,
    /* postfixadmin administration */
    DQ_DOMAIN_EXISTS,
    DQ_DOMAIN_INSERT,
    DQ_DOMAIN_USERS,
    DQ_DOMAIN_IS_TARGET,
    DQ_DOMAIN_DEL_ADMINS,
    DQ_DOMAIN_DEL_ALIASES,
    DQ_DOMAIN_DEL_ALIAS_DOMAINS,
    DQ_DOMAIN_DELETE,
    DQ_DOMAIN_LIST,
    DQ_MAILBOX_INSERT,
    DQ_MAILBOX_DELETE,
    DQ_USER_DEL_FETCHMAIL,
    DQ_USER_DEL_VACATION,
    DQ_USER_DEL_VACATION_NOTIFICATION,
    DQ_USER_DEL_QUOTA,
    DQ_USER_DEL_QUOTA2,
    DQ_MAILBOX_SET_PASSWORD,
    DQ_MAILBOX_SET_QUOTA,
    DQ_MAILBOX_SET_ACTIVE,
    DQ_ALIAS_SET_ACTIVE,
    DQ_MAILBOX_PASSWORD,
    DQ_IS_MAILBOX,
    DQ_ALIAS_GET,
    DQ_ALIAS_INSERT,
    DQ_ALIAS_UPDATE,
    DQ_ALIAS_DELETE,
    DQ_ALIAS_LIST,
    DQ_COUNT
};

struct dir_sql_stmt {
    bool is_set;
    struct sql_template t;
    bool is_typed_text[SQL_TEMPLATE_MAX_PARAMS];
    struct sql_stmt stmt;
};

struct dir_sql {
    struct dir_backend be; /* first: a struct dir_backend * is a struct dir_sql * */
    struct sql_pool *pool;
    bool is_postfixadmin;
    char *mail_root;          /* base of relative maildir/home values */
    char *default_scheme;     /* upper case: the scheme of values without {SCHEME} */
    char *password_scheme;    /* upper case: the scheme Tern writes */
    bool is_default_plain;    /* default_scheme holds the password itself */
    struct dir_sql_stmt q[DQ_COUNT];
};

/* Variables of a statement, by letter. */
struct dir_sql_vars {
    const char *v[26];
    char local[AUTH_MAX_LOGIN + 2]; /* storage for %n and %d of an address */
    char domain[AUTH_MAX_LOGIN + 2];
};

/* Set %u, %n, %d from a name ("a@d", "@d", or a bare domain when is_domain). */
void dir_sql_vars_name(struct dir_sql_vars *v, const char *name, bool is_domain);

/* Run statement id on the pool (c NULL) or on a held connection. 0 or -1 (*error_r). */
int dir_sql_run(struct dir_sql *d, struct sql_conn *c, enum dir_sql_query id,
                const struct dir_sql_vars *vars, sql_row_fn *cb, void *arg, uint64_t *affected_r,
                char **error_r);

/* The first row of a result, copied (names and values). */
struct dir_sql_row {
    bool has_row;
    size_t n;
    char *names[SQL_MAX_COLUMNS];
    char *values[SQL_MAX_COLUMNS];
    bool is_oom;
};
bool dir_sql_row_copy(void *arg, const struct sql_row *row);
void dir_sql_row_free(struct dir_sql_row *r);
/* Column by name (case-insensitive) or NULL. */
const char *dir_sql_row_get(const struct dir_sql_row *r, const char *name);

/* Is this SQL boolean text true ("1", "t", "true", "y", "yes", "on")? */
bool dir_sql_bool(const char *v);

/* Administration ops (dir_sql_admin.c) installed by dir_sql_open for postfixadmin. */
void dir_sql_admin_install(struct dir_backend_ops *ops);

#endif
