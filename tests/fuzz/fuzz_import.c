/*
 * fuzz_import.c - libFuzzer target for the `tern import` parsers (cli/import.h). The
 * first byte picks the parser (0: main.cf, 1: lookup table source, 2: Dovecot config,
 * 3: an SQL query, 4: Dovecot's connect string, 5: a mysql_table(5) file's connection
 * settings), the rest is the input. Checked besides no crash, leak or over-read: every
 * parsed key is found again by import_kv_get (with its last value); map keys hold no
 * upper case; $name expansion of every main.cf value ends (bounded) and its result stays
 * within IMPORT_MAX_VALUE; list splitting gives words without separators; a Postfix
 * query rewritten for Tern holds only Tern's variables (import_dovecot_query takes it)
 * and is at most twice as long; the postfixadmin recogniser names tables exactly when it
 * says yes; a refusal always has a reason.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/import.h"

/* The SQL helpers over one NUL-free string. */
static int fuzz_sql(int kind, const char *d, size_t n)
{
    char *text = strndup(d, n);
    if (!text)
        return 0;
    if (kind == 3) {
        for (int is_domain = 0; is_domain < 2; is_domain++) {
            char *err = NULL;
            char *q = import_postfix_query(text, is_domain, &err);
            if (!q == !err)
                abort(); /* a result or a reason, never both or neither */
            if (q) {
                if (strlen(q) > 2 * strlen(text))
                    abort();
                char *again = import_dovecot_query(q, NULL);
                if (!again)
                    abort(); /* only %u %n %d %% left */
                free(again);
            }
            free(q);
            free(err);
        }
        char *err = NULL;
        char *q = import_dovecot_query(text, &err);
        if (!q == !err)
            abort();
        free(q);
        free(err);
        unsigned tables = 0;
        char *why = NULL;
        bool is_pfa = import_sql_is_postfixadmin(text, &tables, &why);
        if (is_pfa != (tables != 0) || is_pfa == (why != NULL))
            abort();
        free(why);
    } else if (kind == 4) {
        struct import_db db;
        for (int is_pgsql = 0; is_pgsql < 2; is_pgsql++)
            if (import_dovecot_db(text, is_pgsql, &db) == 0)
                import_db_free(&db);
    } else {
        struct import_kv kv;
        if (import_postconf_parse(d, n, &kv, NULL) == 0) {
            struct import_db db;
            for (int is_pgsql = 0; is_pgsql < 2; is_pgsql++)
                if (import_postfix_db(&kv, is_pgsql, &db) == 0)
                    import_db_free(&db);
            import_kv_free(&kv);
        }
    }
    free(text);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    int kind = data[0] % 6;
    if (kind >= 3)
        return fuzz_sql(kind, d, n);
    struct import_kv kv;
    int r = kind == 0   ? import_postconf_parse(d, n, &kv, NULL)
            : kind == 1 ? import_postmap_parse(d, n, &kv, NULL)
                        : import_doveconf_parse(d, n, &kv, NULL);
    if (r < 0)
        return 0;
    for (size_t i = 0; i < kv.n && i < 64; i++) {
        if (!import_kv_get(&kv, kv.keys[i]))
            abort();
        if (kind == 1)
            for (const char *c = kv.keys[i]; *c; c++)
                if (isupper((unsigned char)*c))
                    abort();
        if (kind == 0) {
            char *e = import_postconf_expand(&kv, kv.values[i]);
            if (e && strlen(e) > IMPORT_MAX_VALUE)
                abort();
            free(e);
        }
        char **words = import_split_list(kv.values[i], NULL);
        for (size_t w = 0; words && words[w]; w++)
            if (words[w][0] == '\0' || strpbrk(words[w], ", \t\r\n"))
                abort();
        import_list_free(words);
    }
    import_kv_free(&kv);
    return 0;
}
