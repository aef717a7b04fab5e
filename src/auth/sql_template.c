/*
 * sql_template.c - compile Dovecot-style query templates into statements with bound
 * parameters (see sql_template.h for the rules).
 *
 * One pass over the template with a small lexer: plain SQL, '...' strings, "..." (a
 * string in MySQL, an identifier in PostgreSQL), `...` identifiers (MySQL), "--" and
 * C-style block comments, "#" comments (MySQL), $tag$...$tag$ strings (PostgreSQL). Each byte is looked at
 * a bounded number of times, so the work is linear in the template's length.
 */
#include "auth/sql_template.h"
#include "core/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct compiler {
    const char *text;
    size_t len;
    enum sql_dialect dialect;
    const char *vars;
    const char *untyped_vars;
    struct sql_template *t;
    struct buf sql;
    struct buf literals;
    char *error;
};

__attribute__((format(printf, 3, 4))) static int fail_at(struct compiler *c, size_t pos,
                                                         const char *fmt, ...)
{
    if (c->error)
        return -1;
    struct buf b;
    buf_init(&b, 1024);
    buf_printf(&b, "at offset %zu: ", pos);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    c->error = b.data ? buf_steal(&b) : strdup("bad query template");
    return -1;
}

static bool is_ident_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || (unsigned char)ch >= 0x80;
}

/* A variable reference at text[pos] == '%' (not "%%"): its letter and modifier, and its
 * length in *len_r. -1 (error set) when it is not a variable this template allows. */
static int var_parse(struct compiler *c, size_t pos, size_t end, char *var_r, char *mod_r,
                     size_t *len_r)
{
    size_t i = pos + 1;
    char mod = 0;
    if (i < end && c->text[i] == '{') {
        static const struct {
            const char *name;
            char var;
        } long_names[] = {{"user", 'u'}, {"username", 'n'}, {"domain", 'd'}};
        const char *close = memchr(c->text + i, '}', end - i);
        if (!close)
            return fail_at(c, pos, "unterminated %%{...}");
        size_t n = (size_t)(close - (c->text + i + 1));
        for (size_t k = 0; k < sizeof long_names / sizeof long_names[0]; k++) {
            if (strlen(long_names[k].name) == n &&
                memcmp(long_names[k].name, c->text + i + 1, n) == 0 &&
                strchr(c->vars, long_names[k].var)) {
                *var_r = long_names[k].var;
                *mod_r = 0;
                *len_r = (size_t)(close - (c->text + pos)) + 1;
                return 0;
            }
        }
        return fail_at(c, pos, "unknown variable %%{%.*s}", (int)(n > 40 ? 40 : n),
                       c->text + i + 1);
    }
    if (i < end && (c->text[i] == 'L' || c->text[i] == 'U')) {
        mod = c->text[i];
        i++;
    }
    if (i >= end)
        return fail_at(c, pos, "'%%' at the end (write %%%% for a literal %%)");
    char v = c->text[i];
    if (v < 'a' || v > 'z' || !strchr(c->vars, v)) {
        if ((unsigned char)v < 0x20 || (unsigned char)v >= 0x7f)
            return fail_at(c, pos, "unknown variable (write %%%% for a literal %%)");
        return fail_at(c, pos, "unknown variable %%%c (allowed here: %s; write %%%% for a "
                               "literal %%)",
                       v, c->vars);
    }
    *var_r = v;
    *mod_r = mod;
    *len_r = i + 1 - pos;
    return 0;
}

static int part_add(struct compiler *c, size_t pos, char var, char mod, size_t off, size_t len)
{
    struct sql_template *t = c->t;
    if (t->n_parts >= SQL_TEMPLATE_MAX_PARTS)
        return fail_at(c, pos, "too many variables (at most %d pieces)", SQL_TEMPLATE_MAX_PARTS);
    t->parts[t->n_parts++] = (struct sql_template_part){var, mod, off, len};
    return 0;
}

/* Write the next placeholder into the SQL text and open a parameter. */
static int param_open(struct compiler *c, size_t pos, bool is_typed_text)
{
    struct sql_template *t = c->t;
    if (t->n_params >= SQL_TEMPLATE_MAX_PARAMS)
        return fail_at(c, pos, "too many variables (at most %d per query)",
                       SQL_TEMPLATE_MAX_PARAMS);
    t->params[t->n_params] =
        (struct sql_template_param){.first_part = t->n_parts, .is_typed_text = is_typed_text};
    t->n_params++;
    bool ok = c->dialect == SQL_DIALECT_MYSQL ? buf_append_byte(&c->sql, '?')
                                              : buf_printf(&c->sql, "$%zu", t->n_params);
    return ok ? 0 : fail_at(c, pos, "query too long");
}

static void param_close(struct compiler *c)
{
    struct sql_template_param *p = &c->t->params[c->t->n_params - 1];
    p->n_parts = c->t->n_parts - p->first_part;
}

/* A variable outside any string: one placeholder. */
static int bare_var(struct compiler *c, size_t pos, size_t *next_r)
{
    char var, mod;
    size_t vlen;
    if (var_parse(c, pos, c->len, &var, &mod, &vlen) < 0)
        return -1;
    bool is_untyped = mod == 0 && c->untyped_vars && strchr(c->untyped_vars, var);
    if (param_open(c, pos, !is_untyped) < 0 || part_add(c, pos, var, mod, 0, 0) < 0)
        return -1;
    param_close(c);
    *next_r = pos + vlen;
    return 0;
}

/* End of the string literal opening at text[pos] (quote q): the index of the closing
 * quote. Doubled quotes escape; MySQL strings also take backslash escapes. */
static int string_end(struct compiler *c, size_t pos, char q, bool has_backslash_escapes,
                      size_t *end_r)
{
    for (size_t i = pos + 1; i < c->len; i++) {
        if (has_backslash_escapes && c->text[i] == '\\') {
            i++;
            continue;
        }
        if (c->text[i] == q) {
            if (i + 1 < c->len && c->text[i + 1] == q) {
                i++;
                continue;
            }
            *end_r = i;
            return 0;
        }
    }
    return fail_at(c, pos, "unterminated %c...%c", q, q);
}

/* Append literal bytes to the pending parameter (unescaping doubled quotes). */
static int literal_piece(struct compiler *c, size_t pos, const char *p, size_t n, char q)
{
    size_t off = c->literals.len;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == q && i + 1 < n && p[i + 1] == q)
            i++;
        if (!buf_append_byte(&c->literals, p[i]))
            return fail_at(c, pos, "query too long");
    }
    return c->literals.len > off ? part_add(c, pos, 0, 0, off, c->literals.len - off) : 0;
}

/* A quoted string ('...' or, in MySQL, "..."): verbatim when it holds no variable (%%
 * becomes %), else one placeholder for its expanded text. */
static int quoted_string(struct compiler *c, size_t pos, char q, size_t *next_r)
{
    bool is_mysql = c->dialect == SQL_DIALECT_MYSQL;
    size_t end = 0; /* set by string_end; gcc -O3 cannot see it (maybe-uninitialized) */
    if (string_end(c, pos, q, is_mysql, &end) < 0)
        return -1;
    const char *body = c->text + pos + 1;
    size_t blen = end - pos - 1;
    bool has_var = false, has_backslash = false;
    for (size_t i = 0; i < blen; i++) {
        if (body[i] == '\\')
            has_backslash = true;
        if (body[i] == '%') {
            if (i + 1 < blen && body[i + 1] == '%')
                i++;
            else
                has_var = true;
        }
    }
    *next_r = end + 1;
    if (!has_var) {
        /* verbatim, but %% is a literal % as everywhere in a template */
        for (size_t i = pos; i <= end; i++) {
            if (c->text[i] == '%' && c->text[i + 1] == '%')
                i++;
            if (!buf_append_byte(&c->sql, c->text[i]))
                return fail_at(c, pos, "query too long");
        }
        return 0;
    }
    if (pos > 0 && is_ident_char(c->text[pos - 1]))
        return fail_at(c, pos, "a variable cannot be bound inside a prefixed string (E'', N'', "
                               "_charset'')");
    if (is_mysql && has_backslash)
        return fail_at(c, pos, "a string holding a variable cannot contain a backslash");
    if (param_open(c, pos, true) < 0)
        return -1;
    size_t lit = 0;
    for (size_t i = 0; i < blen;) {
        if (body[i] != '%') {
            i++;
            continue;
        }
        if (i + 1 < blen && body[i + 1] == '%') {
            /* the literal so far plus one '%' */
            if (literal_piece(c, pos, body + lit, i + 1 - lit, q) < 0)
                return -1;
            i += 2;
            lit = i;
            continue;
        }
        if (literal_piece(c, pos, body + lit, i - lit, q) < 0)
            return -1;
        char var, mod;
        size_t vlen;
        if (var_parse(c, pos + 1 + i, end, &var, &mod, &vlen) < 0 ||
            part_add(c, pos + 1 + i, var, mod, 0, 0) < 0)
            return -1;
        i += vlen;
        lit = i;
    }
    if (literal_piece(c, pos, body + lit, blen - lit, q) < 0)
        return -1;
    param_close(c);
    return 0;
}

/* Copy text[from, to) verbatim, refusing variables in it (what holds them is not a place
 * a value can be bound: identifiers, dollar-quoted strings). */
static int verbatim_no_vars(struct compiler *c, size_t from, size_t to, const char *what)
{
    for (size_t i = from; i < to; i++)
        if (c->text[i] == '%')
            return fail_at(c, i, "a variable cannot be bound inside %s", what);
    return buf_append(&c->sql, c->text + from, to - from) ? 0 : fail_at(c, from, "query too long");
}

/* Copy a comment verbatim up to (excluding) stop, or to the end. */
static size_t comment(struct compiler *c, size_t pos, const char *stop)
{
    const char *p = c->text + pos;
    const char *e = stop ? strstr(p, stop) : NULL;
    size_t end = e ? (size_t)(e - c->text) + strlen(stop) : c->len;
    if (!buf_append(&c->sql, p, end - pos))
        fail_at(c, pos, "query too long");
    return end;
}

/* PostgreSQL $tag$...$tag$ at pos: the index after it, or 0 when this '$' does not open a
 * dollar-quoted string. */
static size_t dollar_quote_end(struct compiler *c, size_t pos)
{
    size_t i = pos + 1;
    while (i < c->len && (is_ident_char(c->text[i]) && !(c->text[i] >= '0' && c->text[i] <= '9')))
        i++;
    if (i >= c->len || c->text[i] != '$')
        return 0;
    size_t tag_len = i + 1 - pos;
    for (size_t k = i + 1; k + tag_len <= c->len; k++)
        if (memcmp(c->text + k, c->text + pos, tag_len) == 0)
            return k + tag_len;
    return SIZE_MAX; /* unterminated */
}

static int compile_loop(struct compiler *c)
{
    bool is_mysql = c->dialect == SQL_DIALECT_MYSQL;
    size_t i = 0;
    while (i < c->len && !c->error) {
        char ch = c->text[i];
        size_t next = i + 1;
        if ((unsigned char)ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r')
            return fail_at(c, i, "control character in query");
        if (ch == '%' && i + 1 < c->len && c->text[i + 1] == '%') {
            if (!buf_append_byte(&c->sql, '%'))
                return fail_at(c, i, "query too long");
            next = i + 2;
        } else if (ch == '%') {
            if (bare_var(c, i, &next) < 0)
                return -1;
        } else if (ch == '\'' || (ch == '"' && is_mysql)) {
            if (quoted_string(c, i, ch, &next) < 0)
                return -1;
        } else if (ch == '"' || (ch == '`' && is_mysql)) {
            size_t end = 0; /* as in quoted_string */
            if (string_end(c, i, ch, false, &end) < 0 ||
                verbatim_no_vars(c, i, end + 1, "a quoted identifier") < 0)
                return -1;
            next = end + 1;
        } else if (ch == '-' && i + 1 < c->len && c->text[i + 1] == '-') {
            next = comment(c, i, "\n");
        } else if (ch == '#' && is_mysql) {
            next = comment(c, i, "\n");
        } else if (ch == '/' && i + 1 < c->len && c->text[i + 1] == '*') {
            next = comment(c, i, "*/");
        } else if (ch == '?' && is_mysql) {
            return fail_at(c, i, "'?' outside a string: use the variables (%%u, %%n, %%d)");
        } else if (ch == '$' && !is_mysql && (i == 0 || !is_ident_char(c->text[i - 1]))) {
            if (i + 1 < c->len && c->text[i + 1] >= '0' && c->text[i + 1] <= '9')
                return fail_at(c, i, "positional parameter: use the variables (%%u, %%n, %%d)");
            size_t end = dollar_quote_end(c, i);
            if (end == SIZE_MAX)
                return fail_at(c, i, "unterminated dollar-quoted string");
            if (end > 0) {
                if (verbatim_no_vars(c, i, end, "a dollar-quoted string") < 0)
                    return -1;
                next = end;
            } else if (!buf_append_byte(&c->sql, ch)) {
                return fail_at(c, i, "query too long");
            }
        } else if (ch == ';') {
            for (size_t k = i + 1; k < c->len; k++)
                if (c->text[k] != ' ' && c->text[k] != '\t' && c->text[k] != '\n' &&
                    c->text[k] != '\r')
                    return fail_at(c, i, "one statement only (';' inside a query)");
            next = c->len; /* a trailing ';' is dropped: prepared statements take none */
        } else if (!buf_append_byte(&c->sql, ch)) {
            return fail_at(c, i, "query too long");
        }
        i = next;
    }
    return c->error ? -1 : 0;
}

int sql_template_compile(const char *text, enum sql_dialect dialect, const char *vars,
                         const char *untyped_vars, struct sql_template *t, char **error_r)
{
    memset(t, 0, sizeof *t);
    *error_r = NULL;
    size_t len = text ? strnlen(text, SQL_TEMPLATE_MAX_LEN + 1) : 0;
    if (len == 0) {
        *error_r = strdup("empty query");
        return -1;
    }
    if (len > SQL_TEMPLATE_MAX_LEN) {
        *error_r = strdup("query too long");
        return -1;
    }
    struct compiler c = {.text = text,
                         .len = len,
                         .dialect = dialect,
                         .vars = vars ? vars : "",
                         .untyped_vars = untyped_vars,
                         .t = t};
    buf_init(&c.sql, 4 * SQL_TEMPLATE_MAX_LEN);
    buf_init(&c.literals, SQL_TEMPLATE_MAX_LEN);
    if (compile_loop(&c) < 0) {
        buf_free(&c.sql);
        buf_free(&c.literals);
        memset(t, 0, sizeof *t);
        *error_r = c.error ? c.error : strdup("bad query template");
        return -1;
    }
    t->sql = c.sql.data ? buf_steal(&c.sql) : strdup("");
    t->literals = c.literals.data ? buf_steal(&c.literals) : strdup("");
    if (!t->sql || !t->literals) {
        sql_template_free(t);
        *error_r = strdup("out of memory");
        return -1;
    }
    return 0;
}

void sql_template_free(struct sql_template *t)
{
    if (!t)
        return;
    free(t->sql);
    free(t->literals);
    memset(t, 0, sizeof *t);
}

static bool append_value(struct buf *b, const char *v, char modifier)
{
    for (const char *p = v; *p; p++) {
        char ch = *p;
        if (modifier == 'L' && ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        else if (modifier == 'U' && ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        if (!buf_append_byte(b, ch))
            return false;
    }
    return true;
}

int sql_template_expand(const struct sql_template *t, const char *const values[26],
                        char ***params_r, char **error_r)
{
    *params_r = NULL;
    char **params = calloc(t->n_params ? t->n_params : 1, sizeof *params);
    if (!params) {
        *error_r = strdup("out of memory");
        return -1;
    }
    for (size_t i = 0; i < t->n_params; i++) {
        const struct sql_template_param *p = &t->params[i];
        struct buf b;
        buf_init(&b, SQL_TEMPLATE_MAX_VALUE);
        bool ok = true;
        for (size_t k = 0; k < p->n_parts && ok; k++) {
            const struct sql_template_part *part = &t->parts[p->first_part + k];
            if (part->var == 0) {
                ok = buf_append(&b, t->literals + part->off, part->len);
            } else {
                const char *v = values[part->var - 'a'];
                ok = append_value(&b, v ? v : "", part->modifier);
            }
        }
        params[i] = ok ? (b.data ? buf_steal(&b) : strdup("")) : NULL;
        buf_free(&b);
        if (!params[i]) {
            sql_template_params_free(params, i);
            *error_r = strdup(ok ? "out of memory" : "query parameter too long");
            return -1;
        }
    }
    *params_r = params;
    return 0;
}

void sql_template_params_free(char **params, size_t n)
{
    if (!params)
        return;
    for (size_t i = 0; i < n; i++)
        free(params[i]);
    free(params);
}
