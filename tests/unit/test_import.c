/*
 * test_import.c - the `tern import` parsers (cli/import.h): Postfix main.cf (continuation
 * lines, comments, last definition wins, $name expansion with loops bounded), lookup
 * table sources (folded keys, continued values), Dovecot config (sections flattened,
 * includes, quotes, backslash continuation, unbalanced braces), list splitting, budgets;
 * the SQL side: Postfix expansions rewritten for Tern, Dovecot variables checked, the
 * postfixadmin recogniser, Postfix "hosts" and Dovecot "connect" settings.
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

/* A query conversion's result is want (out NULL: refused, the reason contains want).
 * Frees out and err. */
static void converted_is(const char *in, char *out, char *err, const char *want)
{
    if (out) {
        assert_string_equal(out, want);
        assert_null(err);
    } else {
        assert_non_null(err);
        if (!strstr(err, want))
            fail_msg("'%s': reason '%s' lacks '%s'", in, err, want);
    }
    free(out);
    free(err);
}

/* Convert with import_postfix_query and compare. */
static void postfix_query_is(const char *in, bool is_domain, const char *want)
{
    char *err = NULL;
    char *out = import_postfix_query(in, is_domain, &err);
    converted_is(in, out, err, want);
}

static void test_postfix_query(void **state)
{
    (void)state;
    /* postfixadmin's maps: %s is the key (Tern's %u), a trailing ';' goes */
    postfix_query_is("SELECT goto FROM alias WHERE address='%s' AND active = '1';", false,
                     "SELECT goto FROM alias WHERE address='%u' AND active = '1'");
    /* Postfix's %u is the local part: Tern's %n */
    postfix_query_is("SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = "
                     "'%d' and alias.address = CONCAT('%u', '@', alias_domain.target_domain)",
                     false,
                     "SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = "
                     "'%d' and alias.address = CONCAT('%n', '@', alias_domain.target_domain)");
    postfix_query_is("SELECT 1 FROM users WHERE u = '%U' AND d = '%D' AND k = '%S' AND "
                     "p LIKE 'x%%'", false,
                     "SELECT 1 FROM users WHERE u = '%n' AND d = '%d' AND k = '%u' AND "
                     "p LIKE 'x%%'");
    /* a domain map: the key is a domain; %s and %u are all of it, %d never runs */
    postfix_query_is("SELECT domain FROM domain WHERE domain='%s'", true,
                     "SELECT domain FROM domain WHERE domain='%d'");
    postfix_query_is("SELECT 1 FROM d WHERE name='%u'", true, "SELECT 1 FROM d WHERE name='%d'");
    postfix_query_is("SELECT 1 FROM d WHERE name='%d'", true, "never runs this query");
    /* what Tern cannot express */
    postfix_query_is("SELECT 1 FROM d WHERE tld='%1'", false, "%1 (a label of the domain");
    postfix_query_is("SELECT 1 FROM d WHERE x='%x'", false, "%x is not a Postfix expansion");
    postfix_query_is("SELECT 1 FROM d WHERE x='%", false, "at the end");
    postfix_query_is("  ;  ", false, "empty query");
}

/* Convert with import_dovecot_query and compare. */
static void dovecot_query_is(const char *in, const char *want)
{
    char *err = NULL;
    char *out = import_dovecot_query(in, &err);
    converted_is(in, out, err, want);
}

static void test_dovecot_query(void **state)
{
    (void)state;
    dovecot_query_is("SELECT password FROM mailbox WHERE username = '%u' AND active = '1';",
                     "SELECT password FROM mailbox WHERE username = '%u' AND active = '1'");
    dovecot_query_is("SELECT 1 FROM a WHERE n = '%Ln' AND d = '%Ud' AND x = '%{user}' AND "
                     "y = '%{domain}' AND z LIKE '%%'",
                     "SELECT 1 FROM a WHERE n = '%Ln' AND d = '%Ud' AND x = '%{user}' AND "
                     "y = '%{domain}' AND z LIKE '%%'");
    dovecot_query_is("SELECT 1 FROM a WHERE allow_%s = 1", "service name");
    dovecot_query_is("SELECT 1 FROM a WHERE ip = '%r'", "%r: a Dovecot variable");
    dovecot_query_is("SELECT 1 FROM a WHERE ip = '%{rip}'", "%{rip}");
    dovecot_query_is("SELECT 1 FROM a WHERE x = '%Mu'", "%Mu");
}

static void pfa_is(const char *query, bool want, unsigned want_tables, const char *why)
{
    unsigned tables = 99;
    char *reason = NULL;
    bool is = import_sql_is_postfixadmin(query, &tables, &reason);
    if (is != want)
        fail_msg("'%s': %d (%s)", query, is, reason ? reason : "");
    if (want) {
        assert_int_equal(tables, want_tables);
        assert_null(reason);
    } else {
        assert_int_equal(tables, 0);
        if (!reason || !strstr(reason, why))
            fail_msg("'%s': reason '%s' lacks '%s'", query, reason ? reason : "", why);
    }
    free(reason);
}

static void test_postfixadmin_recogniser(void **state)
{
    (void)state;
    /* seed 003's Dovecot queries, postfixadmin's Postfix maps (MySQL and PostgreSQL) */
    pfa_is("SELECT password FROM mailbox WHERE username = '%u' AND active = '1'", true,
           IMPORT_PFA_MAILBOX, NULL);
    pfa_is("SELECT maildir, 901 AS uid, 901 AS gid FROM mailbox WHERE username = '%u'", true,
           IMPORT_PFA_MAILBOX, NULL);
    pfa_is("SELECT domain FROM domain WHERE domain='%s' and backupmx = false and active = true",
           true, IMPORT_PFA_DOMAIN, NULL);
    pfa_is("SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = '%d' and "
           "alias.address = CONCAT('%u', '@', alias_domain.target_domain) AND alias.active = 1",
           true, IMPORT_PFA_ALIAS | IMPORT_PFA_ALIAS_DOMAIN, NULL);
    pfa_is("SELECT '/var/vmail/' || maildir AS home FROM `postfix`.`mailbox` m "
           "JOIN domain AS d ON d.domain = m.domain WHERE m.username = '%u' -- FROM users\n",
           true, IMPORT_PFA_MAILBOX | IMPORT_PFA_DOMAIN, NULL);
    pfa_is("SELECT bytes FROM quota2 WHERE username = '%u'", true, IMPORT_PFA_QUOTA, NULL);
    /* other schemas */
    pfa_is("SELECT password FROM virtual_users WHERE email='%u'", false, 0,
           "reads table virtual_users");
    pfa_is("SELECT username AS user, password FROM accounts WHERE username = '%n' AND "
           "domain = '%d'", false, 0, "accounts");
    pfa_is("SELECT password FROM mailbox WHERE email = '%u'", false, 0,
           "without naming its column username");
    pfa_is("SELECT 1 FROM domain, users WHERE domain = '%d'", false, 0, "users");
    pfa_is("SELECT 1", false, 0, "reads no table");
    pfa_is("SELECT 'FROM users' AS x FROM mailbox WHERE username = '%u'", true,
           IMPORT_PFA_MAILBOX, NULL); /* strings are not SQL */
}

static void test_connection_settings(void **state)
{
    (void)state;
    static const char maps[] = "user = postfix\npassword = s3cret\n"
                               "hosts = inet:127.0.0.1:3307 db2.example.net\ndbname = mail\n"
                               "tls_CAfile = /etc/ssl/ca.pem\ntls_verify_cert = yes\n"
                               "option_group = client\n";
    struct import_kv kv;
    assert_int_equal(import_postconf_parse(maps, sizeof maps - 1, &kv, NULL), 0);
    struct import_db db;
    assert_int_equal(import_postfix_db(&kv, false, &db), 0);
    assert_string_equal(db.host, "127.0.0.1");
    assert_string_equal(db.port, "3307");
    assert_string_equal(db.user, "postfix");
    assert_string_equal(db.password, "s3cret");
    assert_string_equal(db.dbname, "mail");
    assert_string_equal(db.tls, "verify");
    assert_string_equal(db.tls_ca, "/etc/ssl/ca.pem");
    assert_string_equal(db.other, "hosts=db2.example.net option_group=client");
    import_db_free(&db);
    import_kv_free(&kv);

    static const char sock[] = "hosts = unix:/run/mysqld/mysqld.sock\n";
    assert_int_equal(import_postconf_parse(sock, sizeof sock - 1, &kv, NULL), 0);
    assert_int_equal(import_postfix_db(&kv, false, &db), 0);
    assert_string_equal(db.socket, "/run/mysqld/mysqld.sock");
    assert_null(db.host);
    import_db_free(&db);
    import_kv_free(&kv);

    static const char uri[] = "hosts = postgresql://pf:pw@[::1]:5433/postfix\n";
    assert_int_equal(import_postconf_parse(uri, sizeof uri - 1, &kv, NULL), 0);
    assert_int_equal(import_postfix_db(&kv, true, &db), 0);
    assert_string_equal(db.user, "pf");
    assert_string_equal(db.password, "pw");
    assert_string_equal(db.host, "::1");
    assert_string_equal(db.port, "5433");
    assert_string_equal(db.dbname, "postfix");
    import_db_free(&db);
    import_kv_free(&kv);

    assert_int_equal(import_dovecot_db("host=localhost dbname=mail user=dovecot "
                                       "password='p w\\'x' port=5432 sslmode=verify-full "
                                       "sslrootcert=/ca.pem connect_timeout=3",
                                       true, &db),
                     0);
    assert_string_equal(db.host, "localhost");
    assert_string_equal(db.password, "p w'x");
    assert_string_equal(db.port, "5432");
    assert_string_equal(db.tls, "verify");
    assert_string_equal(db.tls_ca, "/ca.pem");
    assert_string_equal(db.other, "connect_timeout=3");
    import_db_free(&db);
    assert_int_equal(import_dovecot_db("host=/var/run/mysqld/mysqld.sock host=b dbname=x "
                                       "ssl_ca=/ca.pem",
                                       false, &db),
                     0);
    assert_string_equal(db.socket, "/var/run/mysqld/mysqld.sock");
    assert_string_equal(db.host, "b");
    assert_string_equal(db.tls, "yes");
    import_db_free(&db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postconf),
        cmocka_unit_test(test_postmap),
        cmocka_unit_test(test_doveconf),
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_postfix_query),
        cmocka_unit_test(test_dovecot_query),
        cmocka_unit_test(test_postfixadmin_recogniser),
        cmocka_unit_test(test_connection_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
