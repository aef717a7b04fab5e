/*
 * test_sql_template.c - Dovecot-style query templates compiled into statements with
 * bound parameters (src/auth/sql_template.h): placeholders per dialect, strings holding
 * variables bound whole, %% and modifiers, what is refused and why, and that values are
 * handed over raw (a quote in a name is a byte of a parameter, never SQL).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth/sql_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Compile (must succeed) and expand with u/n/d of "Alice@Example.org". */
static void expect_sql(enum sql_dialect d, const char *tmpl, const char *want_sql,
                       const char *const *want_params)
{
    struct sql_template t;
    char *err = NULL;
    if (sql_template_compile(tmpl, d, "und", NULL, &t, &err) < 0)
        fail_msg("compile '%s': %s", tmpl, err);
    assert_string_equal(t.sql, want_sql);
    const char *values[26] = {0};
    values['u' - 'a'] = "Alice@Example.org";
    values['n' - 'a'] = "Alice";
    values['d' - 'a'] = "Example.org";
    char **params = NULL;
    assert_int_equal(sql_template_expand(&t, values, &params, &err), 0);
    size_t n = 0;
    while (want_params[n])
        n++;
    assert_int_equal(t.n_params, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(params[i], want_params[i]);
    sql_template_params_free(params, t.n_params);
    sql_template_free(&t);
}

/* Compile must fail with a reason containing want. */
static void expect_refused(enum sql_dialect d, const char *tmpl, const char *want)
{
    struct sql_template t;
    char *err = NULL;
    if (sql_template_compile(tmpl, d, "und", NULL, &t, &err) == 0)
        fail_msg("'%s' compiled to '%s'", tmpl, t.sql);
    if (!err || !strstr(err, want))
        fail_msg("'%s': reason '%s', want '%s'", tmpl, err ? err : "(none)", want);
    free(err);
}

static void test_dovecot_queries(void **state)
{
    (void)state;
    /* seed 003's Dovecot queries, as an admin would paste them */
    expect_sql(SQL_DIALECT_MYSQL,
               "SELECT password FROM mailbox WHERE username = '%u' AND active = '1'",
               "SELECT password FROM mailbox WHERE username = ? AND active = '1'",
               (const char *const[]){"Alice@Example.org", NULL});
    expect_sql(SQL_DIALECT_PGSQL,
               "SELECT maildir, 901 AS uid, 901 AS gid FROM mailbox WHERE username = '%u' AND "
               "active = '1'",
               "SELECT maildir, 901 AS uid, 901 AS gid FROM mailbox WHERE username = $1 AND "
               "active = '1'",
               (const char *const[]){"Alice@Example.org", NULL});
    /* several variables, bare and quoted; a string with text around them is one value */
    expect_sql(SQL_DIALECT_PGSQL,
               "SELECT 1 FROM m WHERE local_part = %n AND domain = '%d' AND x = '%n@%d!'",
               "SELECT 1 FROM m WHERE local_part = $1 AND domain = $2 AND x = $3",
               (const char *const[]){"Alice", "Example.org", "Alice@Example.org!", NULL});
    expect_sql(SQL_DIALECT_MYSQL, "SELECT CONCAT('/var/vmail/', '%d', '/', '%n') AS home",
               "SELECT CONCAT('/var/vmail/', ?, '/', ?) AS home",
               (const char *const[]){"Example.org", "Alice", NULL});
    /* MySQL's "..." strings take variables like '...' */
    expect_sql(SQL_DIALECT_MYSQL, "SELECT 1 WHERE u = \"%u\"", "SELECT 1 WHERE u = ?",
               (const char *const[]){"Alice@Example.org", NULL});
}

static void test_modifiers_long_names_and_percent(void **state)
{
    (void)state;
    expect_sql(SQL_DIALECT_MYSQL, "WHERE u = '%Lu' AND d = %Ud AND n = %{username}",
               "WHERE u = ? AND d = ? AND n = ?",
               (const char *const[]){"alice@example.org", "EXAMPLE.ORG", "Alice", NULL});
    expect_sql(SQL_DIALECT_PGSQL, "WHERE u = %{user} AND d = '%{domain}'", "WHERE u = $1 AND d = $2",
               (const char *const[]){"Alice@Example.org", "Example.org", NULL});
    /* %% is a literal percent, outside and inside strings, with or without variables */
    expect_sql(SQL_DIALECT_MYSQL, "SELECT 5 %% 2, 'a%%b' FROM t WHERE x LIKE '%%%u%%'",
               "SELECT 5 % 2, 'a%b' FROM t WHERE x LIKE ?",
               (const char *const[]){"%Alice@Example.org%", NULL});
    /* doubled quotes inside a string holding a variable are unescaped into the value */
    expect_sql(SQL_DIALECT_PGSQL, "SELECT 'it''s %n'", "SELECT $1",
               (const char *const[]){"it's Alice", NULL});
}

static void test_verbatim_parts(void **state)
{
    (void)state;
    /* comments, identifiers and strings without variables pass through untouched */
    expect_sql(SQL_DIALECT_MYSQL, "SELECT `password` FROM t -- note\nWHERE u = %u # c\n",
               "SELECT `password` FROM t -- note\nWHERE u = ? # c\n",
               (const char *const[]){"Alice@Example.org", NULL});
    expect_sql(SQL_DIALECT_PGSQL, "SELECT \"password\" /* c */ FROM t WHERE u = %u AND x ? 'k'",
               "SELECT \"password\" /* c */ FROM t WHERE u = $1 AND x ? 'k'",
               (const char *const[]){"Alice@Example.org", NULL});
    expect_sql(SQL_DIALECT_PGSQL, "SELECT $$ a 'b' $$, u FROM t WHERE u = %u",
               "SELECT $$ a 'b' $$, u FROM t WHERE u = $1",
               (const char *const[]){"Alice@Example.org", NULL});
    /* a trailing ';' is dropped (prepared statements take none) */
    expect_sql(SQL_DIALECT_MYSQL, "SELECT 1 WHERE u = %u ;\n", "SELECT 1 WHERE u = ? ",
               (const char *const[]){"Alice@Example.org", NULL});
}

static void test_refused(void **state)
{
    (void)state;
    expect_refused(SQL_DIALECT_MYSQL, "WHERE u = '%x'", "unknown variable %x");
    expect_refused(SQL_DIALECT_MYSQL, "WHERE u = '%{uid}'", "unknown variable %{uid}");
    expect_refused(SQL_DIALECT_MYSQL, "WHERE u = 50%", "at the end");
    expect_refused(SQL_DIALECT_MYSQL, "WHERE u = ?", "'?' outside a string");
    expect_refused(SQL_DIALECT_PGSQL, "WHERE u = $1", "positional parameter");
    expect_refused(SQL_DIALECT_PGSQL, "SELECT \"%u\" FROM t", "quoted identifier");
    expect_refused(SQL_DIALECT_MYSQL, "SELECT `%u` FROM t", "quoted identifier");
    expect_refused(SQL_DIALECT_PGSQL, "SELECT $q$%u$q$", "dollar-quoted");
    expect_refused(SQL_DIALECT_PGSQL, "SELECT E'%u'", "prefixed string");
    expect_refused(SQL_DIALECT_MYSQL, "SELECT 'a\\'%u'", "backslash");
    expect_refused(SQL_DIALECT_MYSQL, "SELECT 1; DROP TABLE mailbox", "one statement only");
    expect_refused(SQL_DIALECT_MYSQL, "SELECT 'abc", "unterminated");
    expect_refused(SQL_DIALECT_PGSQL, "SELECT $x$ abc", "unterminated dollar");
    expect_refused(SQL_DIALECT_MYSQL, "SELECT 1\x01", "control character");
    expect_refused(SQL_DIALECT_MYSQL, "", "empty query");
}

/* Values go to the server as they are: no escaping, no SQL. */
static void test_hostile_values_stay_parameters(void **state)
{
    (void)state;
    struct sql_template t;
    char *err = NULL;
    assert_int_equal(sql_template_compile("SELECT p FROM m WHERE u = '%u' AND d = %d",
                                          SQL_DIALECT_MYSQL, "und", NULL, &t, &err),
                     0);
    assert_string_equal(t.sql, "SELECT p FROM m WHERE u = ? AND d = ?");
    const char *values[26] = {0};
    values['u' - 'a'] = "x' OR '1'='1";
    values['d' - 'a'] = "a\\'; DROP TABLE m; --";
    char **params = NULL;
    assert_int_equal(sql_template_expand(&t, values, &params, &err), 0);
    assert_string_equal(params[0], "x' OR '1'='1");
    assert_string_equal(params[1], "a\\'; DROP TABLE m; --");
    sql_template_params_free(params, t.n_params);
    /* too long a value is an error, not a truncation */
    char *big = malloc(SQL_TEMPLATE_MAX_VALUE + 2);
    memset(big, 'a', SQL_TEMPLATE_MAX_VALUE + 1);
    big[SQL_TEMPLATE_MAX_VALUE + 1] = '\0';
    values['u' - 'a'] = big;
    assert_int_equal(sql_template_expand(&t, values, &params, &err), -1);
    free(err);
    free(big);
    sql_template_free(&t);
}

static void test_types_and_limits(void **state)
{
    (void)state;
    struct sql_template t;
    char *err = NULL;
    /* bare untyped letters take their type from the statement; strings are text */
    assert_int_equal(sql_template_compile("UPDATE m SET quota = %q, name = '%q' WHERE u = %u",
                                          SQL_DIALECT_PGSQL, "uq", "q", &t, &err),
                     0);
    assert_int_equal(t.n_params, 3);
    assert_false(t.params[0].is_typed_text);
    assert_true(t.params[1].is_typed_text);
    assert_true(t.params[2].is_typed_text);
    sql_template_free(&t);
    /* a letter the caller did not allow */
    assert_int_equal(sql_template_compile("SELECT %w", SQL_DIALECT_PGSQL, "und", NULL, &t, &err),
                     -1);
    free(err);
    /* more placeholders than a statement may have */
    char many[SQL_TEMPLATE_MAX_PARAMS * 4 + 16];
    size_t off = (size_t)snprintf(many, sizeof many, "SELECT ");
    for (int i = 0; i <= SQL_TEMPLATE_MAX_PARAMS; i++)
        off += (size_t)snprintf(many + off, sizeof many - off, "%%u,");
    snprintf(many + off, sizeof many - off, "1");
    assert_int_equal(sql_template_compile(many, SQL_DIALECT_MYSQL, "und", NULL, &t, &err), -1);
    assert_non_null(strstr(err, "too many"));
    free(err);
    /* a template past the size limit */
    char *huge = malloc(SQL_TEMPLATE_MAX_LEN + 10);
    memset(huge, 'x', SQL_TEMPLATE_MAX_LEN + 9);
    huge[SQL_TEMPLATE_MAX_LEN + 9] = '\0';
    assert_int_equal(sql_template_compile(huge, SQL_DIALECT_MYSQL, "und", NULL, &t, &err), -1);
    free(err);
    free(huge);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dovecot_queries),
        cmocka_unit_test(test_modifiers_long_names_and_percent),
        cmocka_unit_test(test_verbatim_parts),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_hostile_values_stay_parameters),
        cmocka_unit_test(test_types_and_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
