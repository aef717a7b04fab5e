/*
 * import.h - `tern import`: read a Postfix + Dovecot host's configuration (main.cf, the
 * virtual maps, dovecot.conf with conf.d and dovecot-sql.conf.ext) and say which
 * tern.conf and directory settings carry it over, and what cannot be carried (issue 14).
 *
 * The parsers here are pure functions over bytes (no I/O), with budgets, unit-tested in
 * tests/unit/test_import.c and fuzzed by tests/fuzz/fuzz_import.c; import_cmd.c reads
 * the files, follows includes and prints or writes the result.
 *
 * Formats:
 *   Postfix main.cf (postconf(5)): "name = value"; a line starting with white space
 *     continues the previous one; '#' lines are comments; a later name wins; values
 *     refer to others as $name, ${name} or $(name).
 *   Postfix lookup table source (postmap(1), the text behind hash:, lmdb:, btree:,
 *     texthash:): "key<white space>value", continuation and comments as above; keys are
 *     case-insensitive (postmap folds them to lower case). Also mysql_table(5) /
 *     pgsql_table(5) files, which are main.cf-like "name = value" lines.
 *   Dovecot config (doveconf(1)): "key = value", "name [arg] {" ... "}" sections,
 *     "!include[_try] <path>" lines, '#' comments, values optionally in double quotes, a
 *     trailing '\' continues a line (dovecot-sql.conf.ext queries). Settings are
 *     flattened to "section/key" ("passdb/driver", "protocol pop3/pop3_uidl_format").
 *
 * SQL lookups (import_sql.c): the queries of mysql:/pgsql: maps and of
 * dovecot-sql.conf.ext rewritten for Tern's directory (Postfix's %s/%u/%d expansions to
 * Tern's %u/%n/%d), a recogniser for queries over postfixadmin's tables, and the
 * connection settings of both (Postfix "hosts", Dovecot "connect").
 *
 * Ownership: every parse fills a caller's struct import_kv that owns its strings;
 * import_kv_free releases it; the SQL helpers return malloc'd strings or fill a struct
 * import_db released by import_db_free. Thread rules: none (pure).
 */
#ifndef TERN_CLI_IMPORT_H
#define TERN_CLI_IMPORT_H

#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>

#define IMPORT_MAX_FILE    (16u * 1024 * 1024) /* one config or map file */
#define IMPORT_MAX_ENTRIES 200000              /* names, map keys, settings per file */
#define IMPORT_MAX_VALUE   (64u * 1024)        /* one value after continuation */
#define IMPORT_MAX_DEPTH   16                  /* Dovecot section nesting, $name expansion */

/* Ordered name -> value pairs (later duplicates are kept: lookups take the last). */
struct import_kv {
    char **keys, **values;
    size_t n, cap;
    char **includes;   /* Dovecot: "!include" paths in order ("?path" for !include_try) */
    size_t n_includes;
};

/* Postfix main.cf or a *_table(5) file. 0, or -1 with a malloc'd reason (budget). */
int import_postconf_parse(const char *data, size_t len, struct import_kv *out, char **error_r);
/* A Postfix lookup table source: keys folded to lower case. 0 or -1 (budget). */
int import_postmap_parse(const char *data, size_t len, struct import_kv *out, char **error_r);
/* A Dovecot config file (settings flattened; section names prefix the keys). 0 or -1
 * (budget, or a '}' without its section, or an unclosed section). */
int import_doveconf_parse(const char *data, size_t len, struct import_kv *out, char **error_r);

/* The last value of name, or NULL. */
const char *import_kv_get(const struct import_kv *kv, const char *name);
/* Postfix $name / ${name} / $(name) expansion against kv (main.cf); unknown names stay as
 * written. Malloc'd, NULL when out of budget (IMPORT_MAX_VALUE, IMPORT_MAX_DEPTH). */
char *import_postconf_expand(const struct import_kv *kv, const char *value);
void import_kv_free(struct import_kv *kv);

/* Append one "  - ...\n" line (what cannot be carried over, and why) to notes. */
void import_note(struct buf *notes, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* *error_r = a malloc'd reason (printf format, at most 300 bytes); nothing when error_r
 * is NULL. */
void import_error(char **error_r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Split a Postfix list value ("a, b c" — commas and/or white space) into words:
 * malloc'd vector, NULL-terminated; *n_r gets the count. */
char **import_split_list(const char *value, size_t *n_r);
void import_list_free(char **list);

/* ---- SQL lookups (import_sql.c) ---------------------------------------------------- */

/*
 * The query of a Postfix mysql_table(5) / pgsql_table(5) map as Tern's directory runs it.
 * Postfix expands %s to the key looked up, %u to its local part, %d to its domain (and
 * %S %U %D the same in a query); Tern's %u is the whole name, %n the local part, %d the
 * domain. So %s -> %u, %u -> %n, %d -> %d for maps looked up with addresses; for a map
 * looked up with domain names (is_domain_key: virtual_mailbox_domains) the key has no
 * '@', Postfix's %s and %u are the whole key (-> %d) and %d suppresses the query.
 * A trailing ';' is dropped. Malloc'd, or NULL with a malloc'd reason in *error_r for
 * what Tern cannot express: %1..%9 (domain labels), %d of a domain key, unknown ones.
 */
char *import_postfix_query(const char *query, bool is_domain_key, char **error_r);

/* A dovecot-sql.conf.ext query as Tern runs it (trailing ';' dropped; the variables are
 * the same), or NULL with a reason for variables Tern has not: Dovecot's %s is the
 * service name, %r/%l the addresses, %{rip} ...; Tern has %u %n %d, %L/%U, %{user},
 * %{username}, %{domain}. */
char *import_dovecot_query(const char *query, char **error_r);

/* postfixadmin's tables, as import_sql_is_postfixadmin reports them. */
#define IMPORT_PFA_MAILBOX      1u
#define IMPORT_PFA_DOMAIN       2u
#define IMPORT_PFA_ALIAS        4u
#define IMPORT_PFA_ALIAS_DOMAIN 8u
#define IMPORT_PFA_QUOTA        16u

/* Does query read postfixadmin's tables only (mailbox, domain, alias, alias_domain,
 * quota, quota2), each with its key column named (mailbox.username, alias.address or
 * goto, domain.domain, alias_domain.alias_domain or target_domain)? true with the tables
 * in *tables_r, or false with a malloc'd reason in *why_r ("reads table users"). */
bool import_sql_is_postfixadmin(const char *query, unsigned *tables_r, char **why_r);

/* Database connection settings, each malloc'd or NULL when not given. */
struct import_db {
    char *host, *port, *socket, *user, *password, *dbname;
    char *tls, *tls_ca, *tls_cert, *tls_key; /* Tern's directory.tls* values */
    char *other; /* settings with no Tern equivalent, "name=value ..." (for a note) */
};

/* Postfix's map settings: "hosts" (host, host:port, inet:host:port, unix:/path, and for
 * pgsql postgresql:// URIs; only the first host is taken, the rest go to db->other), user,
 * password, dbname from kv. 0, or -1 (out of memory). */
int import_postfix_db(const struct import_kv *kv, bool is_pgsql, struct import_db *db);
/* Dovecot's "connect" string ("host=... dbname=... user=... password=..."; values may be
 * single-quoted; a host starting with '/' is a socket). 0, or -1 (out of memory). */
int import_dovecot_db(const char *connect, bool is_pgsql, struct import_db *db);
void import_db_free(struct import_db *db);

/* ---- the SQL directory plan (import_plan.c) ------------------------------------------ */

/* What a query is for: the directory.*_query key it fills in the custom schema. */
enum import_role {
    IMPORT_ROLE_PASSWORD, /* Dovecot password_query */
    IMPORT_ROLE_USER,     /* Dovecot user_query, Postfix virtual_mailbox_maps */
    IMPORT_ROLE_ITERATE,  /* Dovecot iterate_query */
    IMPORT_ROLE_DOMAIN,   /* Postfix virtual_mailbox_domains */
    IMPORT_ROLE_ALIAS,    /* Postfix virtual_alias_maps */
    IMPORT_ROLE_N
};

struct import_query {
    enum import_role role;
    bool is_dovecot;
    char *original; /* as written */
    char *text;     /* as Tern runs it; NULL when it cannot (the reason is in the notes) */
    char *from;     /* "path (param)" */
};

/*
 * The SQL sources of a Postfix + Dovecot host, gathered in reading order, and the
 * directory.* settings they become: one database connection (the first source's; other
 * databases are noted), directory.schema = postfixadmin when every query reads
 * postfixadmin's tables (Tern's built-in queries replace them), else custom with a query
 * per role. Ownership: the plan owns everything in it; import_plan_free.
 */
struct import_plan {
    const char *driver; /* "mysql", "postgresql", or NULL: no SQL source */
    struct import_db db;
    char *db_from, *default_pass_scheme, *scheme_from;
    struct import_query *queries;
    size_t n_queries;
    struct buf notes; /* what cannot be carried over, "  - ...\n" lines */
    /* decided by import_plan_decide */
    bool is_postfixadmin;
    char *why_custom;                              /* what made the schema custom */
    const struct import_query *chosen[IMPORT_ROLE_N]; /* the query of each role */
    char *made_domain_query;                       /* from the domains main.cf lists */
};

void import_plan_init(struct import_plan *p);
void import_plan_free(struct import_plan *p);
/* A Postfix map "type:path" (type mysql or pgsql) given in main.cf's param
 * (virtual_mailbox_domains, virtual_mailbox_maps, virtual_alias_maps), its settings in kv. */
void import_plan_postfix_map(struct import_plan *p, const char *param, const char *type,
                             const char *path, const struct import_kv *kv);
/* A dovecot-sql.conf.ext read from path: its password_query counts when a passdb reads
 * it, its user_query and iterate_query when a userdb does. */
void import_plan_dovecot(struct import_plan *p, const char *path, const struct import_kv *kv,
                         bool is_passdb, bool is_userdb);
/* After every source: choose the schema and each role's query; what cannot be carried
 * over goes to p->notes. domains: the domains main.cf and its text maps name (a custom
 * schema without a domain query gets one made of them). */
void import_plan_decide(struct import_plan *p, char *const *domains, size_t n_domains);
/* Append the directory.* lines to out (nothing without an SQL source); the database
 * password only when is_secret_shown (the file --write writes), else a comment. */
void import_plan_write(const struct import_plan *p, bool is_secret_shown, struct buf *out);

#endif
