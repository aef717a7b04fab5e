/*
 * import_plan.c - the SQL directory `tern import` carries over (contract in import.h):
 * Postfix's mysql:/pgsql: maps and Dovecot's dovecot-sql.conf.ext become one database
 * connection, directory.default_pass_scheme, and either directory.schema = postfixadmin
 * (every query reads postfixadmin's tables: Tern's built-in queries replace them, and the
 * CLI can write) or directory.schema = custom with the queries that schema needs
 * (password_query, user_query, domain_query required; alias_query, iterate_query).
 *
 * Which source fills a role: user_query from Dovecot's userdb when it has one (it says
 * where the mail is), else Postfix's virtual_mailbox_maps; the first map of a list
 * otherwise (Tern runs one query per role; the others are noted). Every custom query is
 * compiled as `tern config check` would, so what import writes passes the check or says
 * why not.
 */
#include "auth/auth.h"
#include "cli/import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_keys[IMPORT_ROLE_N] = {
    [IMPORT_ROLE_PASSWORD] = "directory.password_query",
    [IMPORT_ROLE_USER] = "directory.user_query",
    [IMPORT_ROLE_ITERATE] = "directory.iterate_query",
    [IMPORT_ROLE_DOMAIN] = "directory.domain_query",
    [IMPORT_ROLE_ALIAS] = "directory.alias_query",
};
/* the order of the written keys */
static const enum import_role role_order[IMPORT_ROLE_N] = {IMPORT_ROLE_PASSWORD, IMPORT_ROLE_USER,
                                                           IMPORT_ROLE_DOMAIN, IMPORT_ROLE_ALIAS,
                                                           IMPORT_ROLE_ITERATE};

void import_plan_init(struct import_plan *p)
{
    memset(p, 0, sizeof *p);
    buf_init(&p->notes, 0);
}

void import_plan_free(struct import_plan *p)
{
    import_db_free(&p->db);
    free(p->db_from);
    free(p->default_pass_scheme);
    free(p->scheme_from);
    for (size_t i = 0; i < p->n_queries; i++) {
        free(p->queries[i].original);
        free(p->queries[i].text);
        free(p->queries[i].from);
    }
    free(p->queries);
    free(p->why_custom);
    free(p->made_domain_query);
    buf_free(&p->notes);
    memset(p, 0, sizeof *p);
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* "user@host:port/dbname" (or the socket) for notes. */
static void db_describe(const struct import_db *db, char *out, size_t size)
{
    snprintf(out, size, "%s%s%s%s%s/%s", db->user ? db->user : "", db->user ? "@" : "",
             db->socket ? db->socket
             : db->host ? db->host
                        : "localhost",
             db->port && !db->socket ? ":" : "", db->port && !db->socket ? db->port : "",
             db->dbname ? db->dbname : "");
}

/* Fill what mine leaves out from theirs, a source of the same database (Postfix's map
 * without TLS settings, Dovecot's connect with them). false when they log in as
 * different users (then only TLS settings are taken). */
static bool merge_db(struct import_db *mine, struct import_db *theirs)
{
    char **fields[] = {&mine->tls, &mine->tls_ca, &mine->tls_cert, &mine->tls_key};
    char **from[] = {&theirs->tls, &theirs->tls_ca, &theirs->tls_cert, &theirs->tls_key};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!*fields[i] && *from[i]) {
            *fields[i] = *from[i];
            *from[i] = NULL;
        }
    if (!same(mine->user, theirs->user))
        return false;
    if (!mine->password && theirs->password) {
        mine->password = theirs->password;
        theirs->password = NULL;
    }
    return true;
}

/* The first source's database is Tern's; later ones are compared with it. Takes db. */
static void plan_use_db(struct import_plan *p, const char *driver, struct import_db *db,
                        const char *from)
{
    if (db->other)
        import_note(&p->notes,
                  "%s: %s: not carried over (Tern connects to one database server, with "
                  "the directory.* settings)",
                  from, db->other);
    if (!p->driver) {
        p->driver = driver;
        p->db = *db;
        memset(db, 0, sizeof *db);
        p->db_from = strdup(from);
        return;
    }
    char mine[600], theirs[600];
    db_describe(&p->db, mine, sizeof mine);
    db_describe(db, theirs, sizeof theirs);
    if (strcmp(p->driver, driver) != 0)
        import_note(&p->notes,
                  "%s: a %s database; Tern reads one directory, the %s database %s (from "
                  "%s)",
                  from, driver, p->driver, mine, p->db_from);
    else if (!same(p->db.host, db->host) || !same(p->db.port, db->port) ||
             !same(p->db.socket, db->socket) || !same(p->db.dbname, db->dbname))
        import_note(&p->notes, "%s: database %s; Tern reads one database, %s (from %s)", from, theirs, mine,
                  p->db_from);
    else if (!merge_db(&p->db, db))
        import_note(&p->notes,
                  "%s: connects as %s; Tern uses one database user for every lookup, %s "
                  "(from %s): it must be able to read every table the queries read (and "
                  "write postfixadmin's tables for `tern domain/user/alias`)",
                  from, db->user ? db->user : "(none)", p->db.user ? p->db.user : "(none)",
                  p->db_from);
    import_db_free(db);
}

static void plan_add(struct import_plan *p, enum import_role role, bool is_dovecot,
                     const char *original, char *text, const char *from)
{
    struct import_query *grown = realloc(p->queries, (p->n_queries + 1) * sizeof *grown);
    if (!grown) {
        free(text);
        return;
    }
    p->queries = grown;
    p->queries[p->n_queries++] = (struct import_query){.role = role,
                                                       .is_dovecot = is_dovecot,
                                                       .original = strdup(original),
                                                       .text = text,
                                                       .from = strdup(from)};
}

void import_plan_postfix_map(struct import_plan *p, const char *param, const char *type,
                             const char *path, const struct import_kv *kv)
{
    bool is_pgsql = strcmp(type, "pgsql") == 0;
    char from[4400];
    snprintf(from, sizeof from, "%s (%s)", path, param);
    struct import_db db;
    if (import_postfix_db(kv, is_pgsql, &db) < 0)
        return;
    plan_use_db(p, is_pgsql ? "postgresql" : "mysql", &db, from);
    enum import_role role = strcmp(param, "virtual_alias_maps") == 0        ? IMPORT_ROLE_ALIAS
                            : strcmp(param, "virtual_mailbox_domains") == 0 ? IMPORT_ROLE_DOMAIN
                                                                            : IMPORT_ROLE_USER;
    const char *query = import_kv_get(kv, "query");
    char legacy[IMPORT_MAX_VALUE];
    if (!query) {
        /* before Postfix 2.2: table, select_field, where_field, additional_conditions */
        const char *table = import_kv_get(kv, "table"), *select = import_kv_get(kv, "select_field"),
                   *where = import_kv_get(kv, "where_field"),
                   *more = import_kv_get(kv, "additional_conditions");
        if (!table || !select || !where) {
            import_note(&p->notes,
                      "%s: no query (nor table, select_field and where_field): not "
                      "carried over",
                      from);
            return;
        }
        snprintf(legacy, sizeof legacy, "SELECT %s FROM %s WHERE %s = '%%s'%s%s", select, table,
                 where, more ? " " : "", more ? more : "");
        query = legacy;
    }
    const char *v = import_kv_get(kv, "result_format");
    if (v && strcmp(v, "%s") != 0)
        import_note(&p->notes,
                  "%s: result_format = %s: not carried over (Tern reads the column the "
                  "query returns)",
                  from, v);
    if ((v = import_kv_get(kv, "domain")))
        import_note(&p->notes,
                  "%s: domain = %s (Postfix asks this map for those domains only): Tern "
                  "asks it for every domain",
                  from, v);
    char *err = NULL;
    char *text = import_postfix_query(query, role == IMPORT_ROLE_DOMAIN, &err);
    if (!text)
        import_note(&p->notes, "%s: query not carried over: %s", from, err ? err : "unreadable");
    free(err);
    plan_add(p, role, false, query, text, from);
}

void import_plan_dovecot(struct import_plan *p, const char *path, const struct import_kv *kv,
                         bool is_passdb, bool is_userdb)
{
    const char *driver = import_kv_get(kv, "driver");
    if (!driver || (strcmp(driver, "mysql") != 0 && strcmp(driver, "pgsql") != 0)) {
        import_note(&p->notes,
                  "%s: driver = %s: not carried over (Tern's SQL directory reads MySQL/"
                  "MariaDB or PostgreSQL)",
                  path, driver ? driver : "(none)");
        return;
    }
    bool is_pgsql = strcmp(driver, "pgsql") == 0;
    char from[4400];
    snprintf(from, sizeof from, "%s (Dovecot connect)", path);
    const char *connect = import_kv_get(kv, "connect");
    struct import_db db;
    if (import_dovecot_db(connect ? connect : "", is_pgsql, &db) < 0)
        return;
    plan_use_db(p, is_pgsql ? "postgresql" : "mysql", &db, from);
    const char *scheme = import_kv_get(kv, "default_pass_scheme");
    if (is_passdb && scheme && !p->default_pass_scheme) {
        p->default_pass_scheme = strdup(scheme);
        snprintf(from, sizeof from, "%s (Dovecot default_pass_scheme)", path);
        p->scheme_from = strdup(from);
    }
    static const struct {
        const char *key;
        enum import_role role;
        bool is_userdb;
    } keys[] = {{"password_query", IMPORT_ROLE_PASSWORD, false},
                {"user_query", IMPORT_ROLE_USER, true},
                {"iterate_query", IMPORT_ROLE_ITERATE, true}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *query = import_kv_get(kv, keys[i].key);
        if (!query || !(keys[i].is_userdb ? is_userdb : is_passdb))
            continue;
        snprintf(from, sizeof from, "%s (Dovecot %s)", path, keys[i].key);
        char *err = NULL;
        char *text = import_dovecot_query(query, &err);
        if (!text)
            import_note(&p->notes, "%s: not carried over: %s", from, err ? err : "unreadable");
        free(err);
        plan_add(p, keys[i].role, true, query, text, from);
    }
}

/* The query that fills role: Dovecot's user_query before Postfix's mailbox map, else the
 * first one Tern can run. */
static const struct import_query *plan_pick(const struct import_plan *p, enum import_role role)
{
    for (int pass = role == IMPORT_ROLE_USER ? 0 : 1; pass < 2; pass++)
        for (size_t i = 0; i < p->n_queries; i++) {
            const struct import_query *q = &p->queries[i];
            if (q->role == role && q->text && (pass == 1 || q->is_dovecot))
                return q;
        }
    return NULL;
}

/* A domain query over the domains main.cf lists, for a custom schema whose domains are
 * not in the database: "SELECT 1 [FROM DUAL] WHERE '%d' IN ('a', 'b')". NULL when a name
 * is not a plain domain name or the query would be too long. */
static char *domain_list_query(bool is_pgsql, char *const *domains, size_t n)
{
    struct buf b;
    buf_init(&b, 8000); /* below SQL_TEMPLATE_MAX_LEN */
    bool ok = buf_printf(&b, "SELECT 1%s WHERE '%%d' IN (", is_pgsql ? "" : " FROM DUAL");
    for (size_t i = 0; ok && i < n; i++) {
        ok = domains[i][0] &&
             strspn(domains[i], "abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == strlen(domains[i]);
        ok = ok && buf_printf(&b, "%s'%s'", i ? ", " : "", domains[i]);
    }
    ok = ok && buf_append_str(&b, ")");
    if (!ok) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

void import_plan_decide(struct import_plan *p, char *const *domains, size_t n_domains)
{
    if (!p->driver)
        return;
    /* postfixadmin when every query reads postfixadmin's tables, mailbox among them */
    unsigned all_tables = 0;
    p->is_postfixadmin = p->n_queries > 0;
    for (size_t i = 0; i < p->n_queries; i++) {
        unsigned tables = 0;
        char *why = NULL;
        if (!import_sql_is_postfixadmin(p->queries[i].original, &tables, &why)) {
            if (p->is_postfixadmin &&
                asprintf(&p->why_custom, "%s: %s", p->queries[i].from, why ? why : "?") < 0)
                p->why_custom = NULL;
            p->is_postfixadmin = false;
        }
        free(why);
        all_tables |= tables;
    }
    if (p->is_postfixadmin && !(all_tables & IMPORT_PFA_MAILBOX)) {
        p->is_postfixadmin = false;
        p->why_custom = strdup("no query reads postfixadmin's mailbox table");
    }
    if (p->n_queries == 0)
        p->why_custom = strdup("no queries to recognise a schema by");
    if (p->default_pass_scheme && !auth_password_scheme_is_known(p->default_pass_scheme)) {
        import_note(&p->notes,
                  "%s: default_pass_scheme = %s: a scheme Tern does not read; set "
                  "directory.default_pass_scheme by hand",
                  p->scheme_from, p->default_pass_scheme);
        free(p->default_pass_scheme);
        p->default_pass_scheme = NULL;
    }
    bool is_pgsql = strcmp(p->driver, "postgresql") == 0;
    for (size_t r = 0; r < IMPORT_ROLE_N; r++) {
        const struct import_query *q = plan_pick(p, (enum import_role)r);
        char *err = NULL;
        if (q && auth_sql_query_check(is_pgsql, q->text, &err) < 0) {
            if (!p->is_postfixadmin)
                import_note(&p->notes, "%s: %s: `tern config check` would refuse it: %s", q->from,
                          role_keys[r], err ? err : "?");
            q = NULL;
        }
        free(err);
        p->chosen[r] = q;
    }
    if (p->is_postfixadmin)
        return; /* the built-in queries replace every one of them */
    for (size_t i = 0; i < p->n_queries; i++) {
        const struct import_query *q = &p->queries[i];
        const struct import_query *c = p->chosen[q->role];
        if (q->text && c && c != q)
            import_note(&p->notes, "%s: not carried over: Tern runs one %s, %s's (%s)", q->from,
                      role_keys[q->role], c->from, c->original);
    }
    if (!p->chosen[IMPORT_ROLE_DOMAIN] && n_domains > 0)
        p->made_domain_query = domain_list_query(is_pgsql, domains, n_domains);
    static const struct {
        enum import_role role;
        const char *what;
    } required[] = {
        {IMPORT_ROLE_PASSWORD, "Dovecot's password_query (passdb sql)"},
        {IMPORT_ROLE_USER, "Dovecot's user_query (userdb sql) or Postfix's virtual_mailbox_maps"},
        {IMPORT_ROLE_DOMAIN, "Postfix's virtual_mailbox_domains"},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!p->chosen[required[i].role] &&
            !(required[i].role == IMPORT_ROLE_DOMAIN && p->made_domain_query))
            import_note(&p->notes,
                      "%s: nothing to carry it over from (%s in SQL); the custom schema "
                      "needs it: write it before `tern config check`",
                      role_keys[required[i].role], required[i].what);
}

static void write_line(struct buf *out, const char *key, const char *value)
{
    if (value)
        buf_printf(out, "%s = %s\n", key, value);
}

void import_plan_write(const struct import_plan *p, bool is_secret_shown, struct buf *out)
{
    if (!p->driver)
        return;
    buf_printf(out, "directory.driver = %s\n#   from %s\n", p->driver, p->db_from);
    write_line(out, "directory.host", p->db.host);
    write_line(out, "directory.port", p->db.port);
    write_line(out, "directory.socket", p->db.socket);
    write_line(out, "directory.dbname", p->db.dbname);
    write_line(out, "directory.user", p->db.user);
    if (p->db.password && is_secret_shown)
        write_line(out, "directory.password", p->db.password);
    else if (p->db.password)
        buf_printf(out, "# directory.password = (not shown; --write writes it)\n");
    write_line(out, "directory.tls", p->db.tls);
    write_line(out, "directory.tls_ca", p->db.tls_ca);
    write_line(out, "directory.tls_cert", p->db.tls_cert);
    write_line(out, "directory.tls_key", p->db.tls_key);
    if (p->default_pass_scheme)
        buf_printf(out, "directory.default_pass_scheme = %s\n#   from %s\n", p->default_pass_scheme,
                   p->scheme_from);
    if (p->is_postfixadmin) {
        buf_printf(out, "directory.schema = postfixadmin\n"
                        "#   every query reads postfixadmin's tables: Tern's own queries for "
                        "them replace\n#   these (if this is not postfixadmin's schema, use "
                        "directory.schema = custom and them):\n");
        for (size_t i = 0; i < IMPORT_ROLE_N; i++)
            if (p->chosen[role_order[i]])
                buf_printf(out, "#   %s = %s\n", role_keys[role_order[i]],
                           p->chosen[role_order[i]]->text);
        return;
    }
    buf_printf(out, "directory.schema = custom\n#   %s (not postfixadmin's schema)\n",
               p->why_custom ? p->why_custom : "?");
    for (size_t i = 0; i < IMPORT_ROLE_N; i++) {
        enum import_role r = role_order[i];
        if (p->chosen[r])
            buf_printf(out, "%s = %s\n#   from %s\n", role_keys[r], p->chosen[r]->text,
                       p->chosen[r]->from);
        else if (r == IMPORT_ROLE_DOMAIN && p->made_domain_query)
            buf_printf(out,
                       "%s = %s\n#   from the domains of virtual_mailbox_domains (main.cf "
                       "or its text maps)\n",
                       role_keys[r], p->made_domain_query);
    }
}
