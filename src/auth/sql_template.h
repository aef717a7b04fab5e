/*
 * sql_template.h - Dovecot-style query templates ("... WHERE username = '%u'") turned into
 * prepared statements with bound parameters, so that no byte of a login name, address or
 * domain is ever spliced into SQL text.
 *
 * Compiling walks the template once (linear, budgeted) and understands just enough SQL
 * lexing to know where a variable is: outside any literal, inside a '...' string, or in a
 * place where it cannot be bound (a quoted identifier, a comment, a prefixed or dollar-
 * quoted string). Then:
 *   - a variable outside a string becomes one placeholder ("?" for MySQL, "$n" for
 *     PostgreSQL) bound to its value;
 *   - a '...' string holding variables ('%u', '%n@%d', 'x-%Ld') becomes ONE placeholder
 *     bound to the string's expanded text (quotes removed, '' unescaped): WHERE
 *     username = '%u' runs as WHERE username = ? with the parameter "alice@example.org";
 *   - %% is a literal '%' (outside and inside strings);
 *   - everything else is passed through verbatim.
 * Refused with a reason (the caller reports it with file:line): unknown variables or
 * modifiers, a variable where it cannot be bound, backslashes in a MySQL string that holds
 * a variable (their meaning depends on sql_mode), the driver's own placeholder syntax ("?"
 * in MySQL, "$1" in PostgreSQL), more than one statement (";"), unterminated strings.
 *
 * Variables: %x for a letter the caller allows; %Lx / %Ux give the value in lower / upper
 * case (Dovecot's modifiers); %{user}, %{username}, %{domain} are %u, %n, %d. Which letters
 * mean what is the caller's business (auth/dir_sql.c: %u user@domain, %n user, %d domain).
 *
 * Ownership: sql_template_compile fills a caller-owned struct; sql_template_free releases
 * it. Expanded parameters are malloc'd; sql_template_params_free. Thread rules: a compiled
 * template is read-only and may be expanded by any number of threads at once.
 */
#ifndef TERN_AUTH_SQL_TEMPLATE_H
#define TERN_AUTH_SQL_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#define SQL_TEMPLATE_MAX_LEN    8192 /* bytes of template text */
#define SQL_TEMPLATE_MAX_PARAMS 32   /* placeholders per statement */
#define SQL_TEMPLATE_MAX_PARTS  256  /* literal pieces and variables in all parameters */
#define SQL_TEMPLATE_MAX_VALUE  4096 /* bytes of one expanded parameter */

enum sql_dialect { SQL_DIALECT_MYSQL, SQL_DIALECT_PGSQL };

/* A piece of a parameter: literal bytes of the template, or a variable. */
struct sql_template_part {
    char var;      /* 'a'..'z', or 0 for literal text */
    char modifier; /* 'L', 'U' or 0 */
    size_t off;    /* literal: offset into struct sql_template.literals */
    size_t len;
};

/* One placeholder: the concatenation of its parts. */
struct sql_template_param {
    size_t first_part;
    size_t n_parts;
    bool is_typed_text; /* PostgreSQL: declare the parameter as text (see sql_stmt) */
};

struct sql_template {
    char *sql;      /* the statement in the driver's syntax, placeholders in place */
    char *literals; /* literal pieces of parameters, unescaped */
    struct sql_template_part parts[SQL_TEMPLATE_MAX_PARTS];
    size_t n_parts;
    struct sql_template_param params[SQL_TEMPLATE_MAX_PARAMS];
    size_t n_params;
};

/*
 * Compile text for dialect. vars: the letters allowed as variables (e.g. "und").
 * untyped_vars: letters whose bare (unquoted) placeholders take their type from the
 * statement (numbers, booleans in internal statements); every other parameter is text.
 * 0, or -1 with a malloc'd reason in *error_r ("at offset 12: unknown variable %x").
 */
int sql_template_compile(const char *text, enum sql_dialect dialect, const char *vars,
                         const char *untyped_vars, struct sql_template *t, char **error_r);
void sql_template_free(struct sql_template *t);

/*
 * Expand the parameters: values[c - 'a'] is the value of variable c (NULL counts as "").
 * *params_r: t->n_params malloc'd strings. 0, or -1 (*error_r) when a value is too long.
 */
int sql_template_expand(const struct sql_template *t, const char *const values[26],
                        char ***params_r, char **error_r);
void sql_template_params_free(char **params, size_t n);

#endif
