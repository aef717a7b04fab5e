/*
 * import_sql.c - the SQL side of `tern import` (contract in import.h): queries of
 * Postfix's mysql:/pgsql: maps and of dovecot-sql.conf.ext rewritten for Tern's
 * directory, the postfixadmin recogniser, and the connection settings.
 *
 * Every function is one pass over its input (at most IMPORT_MAX_VALUE bytes; longer
 * input is refused), with no I/O. Postfix's expansions are documented in
 * mysql_table(5) / pgsql_table(5) ("query"), Dovecot's in its Variables page.
 */
#include "cli/import.h"

#include "core/buf.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* [p, p + *len) without white space around it and without trailing ';'s (one statement
 * written the way mysql(1) wants it: Tern prepares it, where ';' would be refused). */
static const char *statement_trim(const char *p, size_t *len)
{
    while (*len > 0 && isspace((unsigned char)*p)) {
        p++;
        (*len)--;
    }
    while (*len > 0 && (isspace((unsigned char)p[*len - 1]) || p[*len - 1] == ';'))
        (*len)--;
    return p;
}

/* ---- Postfix map queries ------------------------------------------------------------ */

char *import_postfix_query(const char *query, bool is_domain_key, char **error_r)
{
    size_t len = strlen(query);
    if (len > IMPORT_MAX_VALUE) {
        import_error(error_r, "query longer than %u bytes", IMPORT_MAX_VALUE);
        return NULL;
    }
    const char *p = statement_trim(query, &len);
    struct buf out;
    buf_init(&out, 2 * IMPORT_MAX_VALUE + 16);
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '%') {
            buf_append(&out, &p[i], 1);
            continue;
        }
        char c = i + 1 < len ? p[i + 1] : '\0';
        const char *tern = NULL;
        switch (c) {
        case '%':
            tern = "%%";
            break;
        case 's':
        case 'S': /* the key: an address, "@domain" (catch-all) or a domain */
            tern = is_domain_key ? "%d" : "%u";
            break;
        case 'u':
        case 'U': /* Postfix: the local part, or the whole key when it has no '@' */
            tern = is_domain_key ? "%d" : "%n";
            break;
        case 'd':
        case 'D':
            if (is_domain_key) {
                import_error(error_r,
                          "%%%c: Postfix has no domain part for a domain name and "
                          "never runs this query (use %%s)",
                          c);
                goto fail;
            }
            tern = "%d";
            break;
        case '\0':
            import_error(error_r, "'%%' at the end of the query");
            goto fail;
        default:
            if (c >= '1' && c <= '9')
                import_error(error_r,
                          "%%%c (a label of the domain, counted from the right) has "
                          "no Tern equivalent",
                          c);
            else if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
                import_error(error_r, "%%%c is not a Postfix expansion", c);
            else
                import_error(error_r, "'%%' followed by byte 0x%02x", (unsigned char)c);
            goto fail;
        }
        buf_append_str(&out, tern);
        i++;
    }
    if (!buf_append(&out, "", 0) || out.len == 0) {
        import_error(error_r, out.len == 0 ? "empty query" : "out of memory");
        goto fail;
    }
    return buf_steal(&out);
fail:
    buf_free(&out);
    return NULL;
}

/* ---- Dovecot queries ---------------------------------------------------------------- */

char *import_dovecot_query(const char *query, char **error_r)
{
    size_t len = strlen(query);
    if (len > IMPORT_MAX_VALUE) {
        import_error(error_r, "query longer than %u bytes", IMPORT_MAX_VALUE);
        return NULL;
    }
    const char *p = statement_trim(query, &len);
    if (len == 0) {
        import_error(error_r, "empty query");
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '%')
            continue;
        size_t k = i + 1;
        if (k < len && p[k] == '%') {
            i = k;
            continue;
        }
        if (k < len && p[k] == '{') {
            const char *close = memchr(p + k, '}', len - k);
            size_t n = close ? (size_t)(close - (p + k + 1)) : 0;
            bool is_known = close && ((n == 4 && memcmp(p + k + 1, "user", 4) == 0) ||
                                      (n == 8 && memcmp(p + k + 1, "username", 8) == 0) ||
                                      (n == 6 && memcmp(p + k + 1, "domain", 6) == 0));
            if (!is_known) {
                import_error(error_r,
                          "%%{%.*s}: a Dovecot variable Tern has not (Tern has %%u, "
                          "%%n, %%d, %%{user}, %%{username}, %%{domain})",
                          (int)(n > 40 ? 40 : n), p + k + 1);
                return NULL;
            }
            i = (size_t)(close - p);
            continue;
        }
        if (k < len && (p[k] == 'L' || p[k] == 'U'))
            k++;
        char c = k < len ? p[k] : '\0';
        if (c == 'u' || c == 'n' || c == 'd') {
            i = k;
            continue;
        }
        if (c == 's')
            import_error(error_r, "%%s: Dovecot's service name (imap, pop3, ...) has no Tern "
                               "equivalent (Tern would read it as the user name)");
        else if ((unsigned char)c > 0x20 && (unsigned char)c < 0x7f) {
            /* name the whole variable: modifiers, width and the letter ("%1Mu", "%r") */
            size_t end = i + 1;
            while (end < len && end - i < 12 &&
                   (isupper((unsigned char)p[end]) || isdigit((unsigned char)p[end]) ||
                    p[end] == '-' || p[end] == '.'))
                end++;
            import_error(error_r,
                      "%%%.*s: a Dovecot variable or modifier Tern has not (Tern has "
                      "%%u, %%n, %%d and the modifiers L and U)",
                      (int)(end - i), p + i + 1);
        } else
            import_error(error_r, "'%%' without a variable (write %%%% for a literal %%)");
        return NULL;
    }
    return strndup(p, len);
}

/* ---- the postfixadmin recogniser ---------------------------------------------------- */

#define SQL_MAX_TOKENS 4096

enum token_kind { TOK_WORD, TOK_PUNCT };

struct token {
    enum token_kind kind;
    const char *p; /* WORD: the identifier's bytes (quotes removed) */
    size_t len;
    char punct;
    bool is_table;
};

static bool word_is(const struct token *t, const char *w)
{
    return t->kind == TOK_WORD && strlen(w) == t->len && strncasecmp(t->p, w, t->len) == 0;
}

/* Words that end a FROM list instead of naming a table's alias. */
static bool is_clause_word(const struct token *t)
{
    static const char *const words[] = {
        "where",     "join",      "inner",         "left",      "right", "full",       "outer",
        "cross",     "natural",   "straight_join", "on",        "using", "group",      "order",
        "limit",     "union",     "having",        "window",    "for",   "lock",       "into",
        "offset",    "fetch",     "except",        "intersect", "use",   "force",      "ignore",
        "partition", "procedure", "and",           "or",        "as",    "tablesample"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (word_is(t, words[i]))
            return true;
    return false;
}

/* Lex query into words (identifiers and keywords; quoted identifiers unquoted) and
 * punctuation; strings, numbers and comments are left out. -1 when over budget. */
static int sql_lex(const char *q, size_t len, struct token *toks, size_t *n_r)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)q[i];
        if (isspace(c)) {
            i++;
        } else if (c == '\'') { /* string: '' and \' do not end it */
            for (i++; i < len && q[i] != '\''; i++)
                if (q[i] == '\\' && i + 1 < len)
                    i++;
            i++; /* ('' inside a string lexes as two strings: the same to us) */
        } else if (c == '-' && i + 1 < len && q[i + 1] == '-') {
            while (i < len && q[i] != '\n')
                i++;
        } else if (c == '#') {
            while (i < len && q[i] != '\n')
                i++;
        } else if (c == '/' && i + 1 < len && q[i + 1] == '*') {
            const char *end = NULL;
            for (size_t k = i + 2; k + 1 < len; k++)
                if (q[k] == '*' && q[k + 1] == '/') {
                    end = q + k + 2;
                    break;
                }
            i = end ? (size_t)(end - q) : len;
        } else {
            if (n == SQL_MAX_TOKENS)
                return -1;
            struct token *t = &toks[n++];
            memset(t, 0, sizeof *t);
            if (c == '`' || c == '"') {
                const char *close = memchr(q + i + 1, (char)c, len - i - 1);
                size_t end = close ? (size_t)(close - q) : len;
                *t = (struct token){.kind = TOK_WORD, .p = q + i + 1, .len = end - i - 1};
                i = end + 1;
            } else if (isalpha(c) || c == '_' || c >= 0x80) {
                size_t start = i;
                while (i < len && (isalnum((unsigned char)q[i]) || q[i] == '_' || q[i] == '$' ||
                                   (unsigned char)q[i] >= 0x80))
                    i++;
                *t = (struct token){.kind = TOK_WORD, .p = q + start, .len = i - start};
            } else if (isdigit(c)) {
                n--; /* numbers say nothing about tables */
                while (i < len && (isalnum((unsigned char)q[i]) || q[i] == '.'))
                    i++;
            } else {
                *t = (struct token){.kind = TOK_PUNCT, .punct = (char)c};
                i++;
            }
        }
    }
    *n_r = n;
    return 0;
}

static const struct {
    const char *table;
    unsigned bit;
    const char *key_columns[2]; /* one of these must be named */
} postfixadmin_tables[] = {
    {"mailbox", IMPORT_PFA_MAILBOX, {"username", NULL}},
    {"domain", IMPORT_PFA_DOMAIN, {"domain", NULL}},
    {"alias", IMPORT_PFA_ALIAS, {"address", "goto"}},
    {"alias_domain", IMPORT_PFA_ALIAS_DOMAIN, {"alias_domain", "target_domain"}},
    {"quota", IMPORT_PFA_QUOTA, {"username", NULL}},
    {"quota2", IMPORT_PFA_QUOTA, {"username", NULL}},
};
#define N_PFA_TABLES (sizeof postfixadmin_tables / sizeof postfixadmin_tables[0])

/* Does the query read postfixadmin_tables[k] by that name (quota and quota2 share a bit)? */
static bool word_is_table(const struct token *toks, size_t n, size_t k)
{
    for (size_t i = 0; i < n; i++)
        if (toks[i].is_table && word_is(&toks[i], postfixadmin_tables[k].table))
            return true;
    return false;
}

/* Is word named anywhere in the query other than as a table? */
static bool names_column(const struct token *toks, size_t n, const char *word)
{
    for (size_t i = 0; i < n; i++)
        if (!toks[i].is_table && word_is(&toks[i], word))
            return true;
    return false;
}

bool import_sql_is_postfixadmin(const char *query, unsigned *tables_r, char **why_r)
{
    *tables_r = 0;
    size_t len = strlen(query);
    struct token *toks = len <= IMPORT_MAX_VALUE ? malloc(SQL_MAX_TOKENS * sizeof *toks) : NULL;
    size_t n = 0;
    if (!toks || sql_lex(query, len, toks, &n) < 0) {
        import_error(why_r, "the query is too long to read");
        free(toks);
        return false;
    }
    unsigned tables = 0;
    bool is_ok = true;
    for (size_t i = 0; i < n && is_ok; i++) {
        if (!word_is(&toks[i], "from") && !word_is(&toks[i], "join"))
            continue;
        bool is_list = word_is(&toks[i], "from");
        size_t j = i + 1;
        while (j < n && toks[j].kind == TOK_WORD && !is_clause_word(&toks[j])) {
            /* db.table: the last part names the table */
            size_t name = j;
            while (j + 2 < n && toks[j + 1].kind == TOK_PUNCT && toks[j + 1].punct == '.' &&
                   toks[j + 2].kind == TOK_WORD) {
                toks[j].is_table = true;
                j += 2;
                name = j;
            }
            toks[name].is_table = true;
            size_t k = 0;
            while (k < N_PFA_TABLES && !word_is(&toks[name], postfixadmin_tables[k].table))
                k++;
            if (k == N_PFA_TABLES) {
                import_error(why_r, "reads table %.*s, not one of postfixadmin's",
                          (int)(toks[name].len > 64 ? 64 : toks[name].len), toks[name].p);
                is_ok = false;
                break;
            }
            tables |= postfixadmin_tables[k].bit;
            j++;
            if (j < n && word_is(&toks[j], "as"))
                j++;
            if (j < n && toks[j].kind == TOK_WORD && !is_clause_word(&toks[j]))
                j++; /* the table's alias */
            if (!is_list || j >= n || toks[j].kind != TOK_PUNCT || toks[j].punct != ',')
                break;
            j++;
        }
    }
    for (size_t k = 0; k < N_PFA_TABLES && is_ok; k++) {
        if (!(tables & postfixadmin_tables[k].bit) || !word_is_table(toks, n, k))
            continue;
        bool is_named = false;
        for (size_t c = 0; c < 2 && postfixadmin_tables[k].key_columns[c]; c++)
            is_named = is_named || names_column(toks, n, postfixadmin_tables[k].key_columns[c]);
        if (!is_named) {
            import_error(why_r, "reads table %s without naming its column %s",
                      postfixadmin_tables[k].table, postfixadmin_tables[k].key_columns[0]);
            is_ok = false;
        }
    }
    if (is_ok && tables == 0) {
        import_error(why_r, "reads no table");
        is_ok = false;
    }
    free(toks);
    if (is_ok)
        *tables_r = tables;
    return is_ok;
}

/* ---- connection settings ------------------------------------------------------------ */

void import_db_free(struct import_db *db)
{
    char **fields[] = {&db->host,     &db->port,    &db->socket, &db->user,
                       &db->password, &db->dbname,  &db->tls,    &db->tls_ca,
                       &db->tls_cert, &db->tls_key, &db->other};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (*fields[i] && fields[i] == &db->password)
            memset(*fields[i], 0, strlen(*fields[i]));
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

/* *field = copy of [v, v+len) unless already set (the first one given wins). */
static bool db_set(char **field, const char *v, size_t len)
{
    if (*field)
        return true;
    *field = strndup(v, len);
    return *field != NULL;
}

/* Add "name=value" to db->other. */
static bool db_other(struct import_db *db, const char *name, const char *v, size_t len)
{
    struct buf b;
    buf_init(&b, 2 * IMPORT_MAX_VALUE);
    if (db->other)
        buf_printf(&b, "%s ", db->other);
    bool ok = buf_printf(&b, "%s=%.*s", name, (int)len, v) && buf_append(&b, "", 0);
    if (!ok) {
        buf_free(&b);
        return false;
    }
    free(db->other);
    db->other = buf_steal(&b);
    return true;
}

/* "host", "host:port", "[v6]:port", "/socket" into db. */
static bool db_host_port(struct import_db *db, const char *w, size_t len)
{
    if (len > 0 && w[0] == '/')
        return db_set(&db->socket, w, len);
    const char *colon = NULL;
    if (len > 0 && w[0] == '[') {
        const char *close = memchr(w, ']', len);
        if (close) {
            if (!db_set(&db->host, w + 1, (size_t)(close - w - 1)))
                return false;
            colon = close + 1 < w + len && close[1] == ':' ? close + 1 : NULL;
            return !colon || db_set(&db->port, colon + 1, (size_t)(w + len - colon - 1));
        }
    }
    for (size_t i = len; i > 0; i--)
        if (w[i - 1] == ':') {
            colon = w + i - 1;
            break;
        }
    bool is_port = colon && colon + 1 < w + len;
    for (const char *d = colon ? colon + 1 : w + len; d < w + len; d++)
        is_port = is_port && *d >= '0' && *d <= '9';
    if (is_port)
        return db_set(&db->host, w, (size_t)(colon - w)) &&
               db_set(&db->port, colon + 1, (size_t)(w + len - colon - 1));
    return db_set(&db->host, w, len);
}

/* postgresql://[user[:password]@][host][:port][/dbname][?...] (libpq's URI form). */
static bool db_pg_uri(struct import_db *db, const char *w, size_t len)
{
    const char *p = memchr(w, '/', len) + 2, *end = w + len;
    const char *q = memchr(p, '?', (size_t)(end - p));
    if (q) {
        if (!db_other(db, "hosts", w, len))
            return false;
        end = q;
    }
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = memchr(p, '@', (size_t)((slash ? slash : end) - p));
    if (auth_end) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        if (!db_set(&db->user, p, (size_t)((colon ? colon : auth_end) - p)))
            return false;
        if (colon && !db_set(&db->password, colon + 1, (size_t)(auth_end - colon - 1)))
            return false;
        p = auth_end + 1;
    }
    const char *host_end = slash ? slash : end;
    if (host_end > p && !db_host_port(db, p, (size_t)(host_end - p)))
        return false;
    if (slash && slash + 1 < end && !db_set(&db->dbname, slash + 1, (size_t)(end - slash - 1)))
        return false;
    return true;
}

int import_postfix_db(const struct import_kv *kv, bool is_pgsql, struct import_db *db)
{
    memset(db, 0, sizeof *db);
    const char *hosts = import_kv_get(kv, "hosts");
    char **words = hosts ? import_split_list(hosts, NULL) : NULL;
    bool ok = !hosts || words;
    for (size_t i = 0; ok && words && words[i]; i++) {
        const char *w = words[i];
        size_t len = strlen(w);
        if (i > 0) {
            ok = db_other(db, "hosts", w, len); /* Tern connects to one server */
        } else if (strncmp(w, "unix:", 5) == 0) {
            ok = db_set(&db->socket, w + 5, len - 5);
        } else if (strncmp(w, "inet:", 5) == 0) {
            ok = db_host_port(db, w + 5, len - 5);
        } else if (is_pgsql &&
                   (strncmp(w, "postgresql://", 13) == 0 || strncmp(w, "postgres://", 11) == 0)) {
            ok = db_pg_uri(db, w, len);
        } else {
            ok = db_host_port(db, w, len);
        }
    }
    import_list_free(words);
    static const char *const same[] = {"user", "password", "dbname"};
    char **fields[] = {&db->user, &db->password, &db->dbname};
    for (size_t i = 0; ok && i < 3; i++) {
        const char *v = import_kv_get(kv, same[i]);
        if (v)
            ok = db_set(fields[i], v, strlen(v));
    }
    /* mysql_table(5) TLS settings */
    const char *v;
    if (ok && !is_pgsql && (v = import_kv_get(kv, "tls_CAfile")))
        ok = db_set(&db->tls_ca, v, strlen(v));
    if (ok && !is_pgsql && (v = import_kv_get(kv, "tls_cert_file")))
        ok = db_set(&db->tls_cert, v, strlen(v));
    if (ok && !is_pgsql && (v = import_kv_get(kv, "tls_key_file")))
        ok = db_set(&db->tls_key, v, strlen(v));
    if (ok && !is_pgsql && (db->tls_ca || db->tls_cert)) {
        v = import_kv_get(kv, "tls_verify_cert");
        const char *tls = v && (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0) ? "verify" : "yes";
        ok = db_set(&db->tls, tls, strlen(tls));
    }
    static const char *const unread[] = {"option_file", "option_group", "tls_CApath",
                                         "tls_ciphers"};
    for (size_t i = 0; ok && i < sizeof unread / sizeof unread[0]; i++)
        if ((v = import_kv_get(kv, unread[i])))
            ok = db_other(db, unread[i], v, strlen(v));
    if (!ok)
        import_db_free(db);
    return ok ? 0 : -1;
}

int import_dovecot_db(const char *connect, bool is_pgsql, struct import_db *db)
{
    memset(db, 0, sizeof *db);
    size_t len = strlen(connect);
    if (len > IMPORT_MAX_VALUE)
        return -1;
    struct buf value;
    buf_init(&value, IMPORT_MAX_VALUE + 1);
    bool ok = true;
    const char *tls_mode = NULL;
    size_t tls_mode_len = 0;
    bool is_verify = false;
    for (size_t i = 0; ok && i < len;) {
        while (i < len && isspace((unsigned char)connect[i]))
            i++;
        size_t key = i;
        while (i < len && connect[i] != '=' && !isspace((unsigned char)connect[i]))
            i++;
        size_t key_len = i - key;
        if (i >= len || connect[i] != '=') {
            if (key_len > 0)
                ok = db_other(db, "connect", connect + key, key_len);
            continue;
        }
        i++;
        buf_reset(&value);
        if (i < len && connect[i] == '\'') { /* libpq: 'a value', \' and \\ escaped */
            for (i++; i < len && connect[i] != '\''; i++) {
                if (connect[i] == '\\' && i + 1 < len)
                    i++;
                buf_append(&value, &connect[i], 1);
            }
            i++;
        } else {
            for (; i < len && !isspace((unsigned char)connect[i]); i++)
                buf_append(&value, &connect[i], 1);
        }
        const char *v = buf_cstr(&value);
        size_t vlen = value.len;
        char name[40];
        snprintf(name, sizeof name, "%.*s", (int)(key_len < 39 ? key_len : 39), connect + key);
        if (strcmp(name, "host") == 0)
            ok = vlen > 0 && v[0] == '/' ? db_set(&db->socket, v, vlen)
                 : db->host              ? db_other(db, name, v, vlen)
                                         : db_set(&db->host, v, vlen);
        else if (strcmp(name, "port") == 0)
            ok = db_set(&db->port, v, vlen);
        else if (strcmp(name, "dbname") == 0)
            ok = db_set(&db->dbname, v, vlen);
        else if (strcmp(name, "user") == 0)
            ok = db_set(&db->user, v, vlen);
        else if (strcmp(name, "password") == 0)
            ok = db_set(&db->password, v, vlen);
        else if (strcmp(name, is_pgsql ? "sslrootcert" : "ssl_ca") == 0)
            ok = db_set(&db->tls_ca, v, vlen);
        else if (strcmp(name, is_pgsql ? "sslcert" : "ssl_cert") == 0)
            ok = db_set(&db->tls_cert, v, vlen);
        else if (strcmp(name, is_pgsql ? "sslkey" : "ssl_key") == 0)
            ok = db_set(&db->tls_key, v, vlen);
        else if (is_pgsql && strcmp(name, "sslmode") == 0) {
            tls_mode = strcmp(v, "require") == 0                                      ? "yes"
                       : strcmp(v, "verify-ca") == 0 || strcmp(v, "verify-full") == 0 ? "verify"
                       : strcmp(v, "disable") == 0                                    ? "no"
                                                                                      : NULL;
            tls_mode_len = tls_mode ? strlen(tls_mode) : 0;
            if (!tls_mode)
                ok = db_other(db, name, v, vlen); /* allow, prefer: "maybe" */
        } else if (!is_pgsql && strcmp(name, "ssl_verify_server_cert") == 0) {
            is_verify = strcmp(v, "yes") == 0;
        } else {
            ok = db_other(db, name, v, vlen);
        }
    }
    buf_free(&value);
    if (ok && !tls_mode && !is_pgsql && (db->tls_ca || db->tls_cert)) {
        tls_mode = is_verify ? "verify" : "yes";
        tls_mode_len = strlen(tls_mode);
    }
    if (ok && tls_mode)
        ok = db_set(&db->tls, tls_mode, tls_mode_len);
    if (!ok)
        import_db_free(db);
    return ok ? 0 : -1;
}
