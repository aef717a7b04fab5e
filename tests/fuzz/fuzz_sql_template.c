/*
 * fuzz_sql_template.c - libFuzzer target for the query template compiler
 * (src/auth/sql_template.c): any bytes, in either dialect, give a statement or a reason,
 * never a crash, a leak or an over-long result; a compiled statement expands with any
 * values into its parameters (each within SQL_TEMPLATE_MAX_VALUE, or a clean error).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sql_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > SQL_TEMPLATE_MAX_LEN + 16)
        return 0;
    enum sql_dialect dialect = (data[0] & 1) ? SQL_DIALECT_PGSQL : SQL_DIALECT_MYSQL;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    struct sql_template t;
    char *err = NULL;
    if (sql_template_compile(text, dialect, "und", (data[0] & 2) ? "n" : NULL, &t, &err) == 0) {
        if (err || t.n_params > SQL_TEMPLATE_MAX_PARAMS || strlen(t.sql) > 4 * SQL_TEMPLATE_MAX_LEN)
            abort();
        const char *values[26] = {0};
        values['u' - 'a'] = "MARKER'\"`$1?%u@x";
        values['n' - 'a'] = "MARKER'\"`$1?%u";
        values['d' - 'a'] = "x";
        char **params = NULL;
        if (sql_template_expand(&t, values, &params, &err) == 0) {
            for (size_t i = 0; i < t.n_params; i++)
                if (!params[i] || strlen(params[i]) > SQL_TEMPLATE_MAX_VALUE)
                    abort();
            sql_template_params_free(params, t.n_params);
        } else {
            free(err);
        }
        sql_template_free(&t);
    } else {
        if (!err)
            abort();
        free(err);
    }
    free(text);
    return 0;
}
