/*
 * test_import.c - the `tern import` parsers (cli/import.h): Postfix main.cf (continuation
 * lines, comments, last definition wins, $name expansion with loops bounded), lookup
 * table sources (folded keys, continued values), Dovecot config (sections flattened,
 * includes, quotes, backslash continuation, unbalanced braces), list splitting, budgets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cli/import.h"

static void test_postconf(void **state)
{
    (void)state;
    const char text[] = "# comment\n"
                        "myhostname = mail.example.com\n"
                        "mydomain=example.com\n"
                        "mynetworks = 127.0.0.0/8\n"
                        "    10.0.0.0/8,\n"
                        "\t192.168.0.0/16\n"
                        "  # an indented comment does not continue\n"
                        "myorigin = $mydomain\n"
                        "mydestination = ${myhostname}, localhost.$(mydomain), $unknown\n"
                        "loop = $loop\n"
                        "no equals sign here\n"
                        "myhostname = later.example.com\n";
    struct import_kv kv;
    assert_int_equal(import_postconf_parse(text, sizeof text - 1, &kv, NULL), 0);
    assert_string_equal(import_kv_get(&kv, "myhostname"), "later.example.com");
    assert_string_equal(import_kv_get(&kv, "mydomain"), "example.com");
    assert_string_equal(import_kv_get(&kv, "mynetworks"), "127.0.0.0/8 10.0.0.0/8, 192.168.0.0/16");
    char *v = import_postconf_expand(&kv, import_kv_get(&kv, "mydestination"));
    assert_string_equal(v, "later.example.com, localhost.example.com, $unknown");
    free(v);
    assert_null(import_postconf_expand(&kv, "$loop")); /* bounded, refused */
    size_t n;
    char **list = import_split_list(import_kv_get(&kv, "mynetworks"), &n);
    assert_int_equal(n, 3);
    assert_string_equal(list[2], "192.168.0.0/16");
    assert_null(list[3]);
    import_list_free(list);
    import_kv_free(&kv);
}

static void test_postmap(void **state)
{
    (void)state;
    const char text[] = "Info@Example.COM   alice@example.com,\n"
                        "                   bob@example.com\n"
                        "# comment\n\n"
                        "@example.org catchall@example.org\n"
                        "lonely\n";
    struct import_kv kv;
    assert_int_equal(import_postmap_parse(text, sizeof text - 1, &kv, NULL), 0);
    assert_int_equal(kv.n, 3);
    assert_string_equal(kv.keys[0], "info@example.com");
    assert_string_equal(kv.values[0], "alice@example.com, bob@example.com");
    assert_string_equal(import_kv_get(&kv, "@example.org"), "catchall@example.org");
    assert_string_equal(import_kv_get(&kv, "lonely"), "");
    import_kv_free(&kv);
}

static void test_doveconf(void **state)
{
    (void)state;
    const char text[] = "protocols = imap pop3\n"
                        "!include conf.d/*.conf\n"
                        "!include_try \"local.conf\"\n"
                        "passdb {\n  driver = sql\n  args = /etc/dovecot/dovecot-sql.conf.ext\n}\n"
                        "protocol   pop3 {\n  pop3_uidl_format = \"%08Xu%08Xv\"\n"
                        "  namespace inbox { # nested\n    separator = /\n  }\n}\n"
                        "password_query = \\\n  SELECT a \\\n  FROM b\n";
    struct import_kv kv;
    char *err = NULL;
    assert_int_equal(import_doveconf_parse(text, sizeof text - 1, &kv, &err), 0);
    assert_string_equal(import_kv_get(&kv, "protocols"), "imap pop3");
    assert_string_equal(import_kv_get(&kv, "passdb/driver"), "sql");
    assert_string_equal(import_kv_get(&kv, "protocol pop3/pop3_uidl_format"), "%08Xu%08Xv");
    assert_string_equal(import_kv_get(&kv, "protocol pop3/namespace inbox/separator"), "/");
    assert_string_equal(import_kv_get(&kv, "password_query"), "SELECT a FROM b");
    assert_int_equal(kv.n_includes, 2);
    assert_string_equal(kv.includes[0], "conf.d/*.conf");
    assert_string_equal(kv.includes[1], "?local.conf");
    import_kv_free(&kv);
    assert_int_equal(import_doveconf_parse("}\n", 2, &kv, &err), -1);
    free(err);
    err = NULL;
    assert_int_equal(import_doveconf_parse("a {\n", 4, &kv, &err), -1);
    free(err);
    /* nesting past the budget */
    char deep[IMPORT_MAX_DEPTH * 4 + 8];
    size_t o = 0;
    for (int i = 0; i <= IMPORT_MAX_DEPTH; i++) {
        memcpy(deep + o, "a {\n", 4);
        o += 4;
    }
    assert_int_equal(import_doveconf_parse(deep, o, &kv, NULL), -1);
}

static void test_budgets(void **state)
{
    (void)state;
    struct import_kv kv;
    char *err = NULL;
    assert_int_equal(import_postconf_parse("x", IMPORT_MAX_FILE + 1, &kv, &err), -1);
    assert_non_null(err);
    free(err);
    size_t n = IMPORT_MAX_VALUE + 16;
    char *big = malloc(n);
    memset(big, 'a', n);
    memcpy(big, "k = ", 4);
    assert_int_equal(import_postconf_parse(big, n, &kv, NULL), -1);
    assert_int_equal(import_doveconf_parse(big, n, &kv, NULL), -1);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postconf),
        cmocka_unit_test(test_postmap),
        cmocka_unit_test(test_doveconf),
        cmocka_unit_test(test_budgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
