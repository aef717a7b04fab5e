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
 * Ownership: every parse fills a caller's struct import_kv that owns its strings;
 * import_kv_free releases it. Thread rules: none (pure).
 */
#ifndef TERN_CLI_IMPORT_H
#define TERN_CLI_IMPORT_H

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

/* Split a Postfix list value ("a, b c" — commas and/or white space) into words:
 * malloc'd vector, NULL-terminated; *n_r gets the count. */
char **import_split_list(const char *value, size_t *n_r);
void import_list_free(char **list);

#endif
