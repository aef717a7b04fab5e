/*
 * test_dir_sql.c - the SQL directory above a scripted driver (no server): how
 * postfixadmin's rows become answers (active flags, alias domains, goto lists, maildir
 * homes, quota, passwords marked with default_pass_scheme), what Tern writes, custom
 * query columns, and the failure rules: a database error is -1 / TEMPFAIL from every
 * auth_* call and never "no such user" or "wrong password"; one log line per outage,
 * fast failure during it, back-off probes, recovery; a stale pooled connection is
 * retried once on a fresh one. The real servers are in test_directory_sql.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth/auth.h"
#include "auth/dir_sql.h"
#include "auth/sql_driver.h"
#include "core/config.h"
#include "core/log.h"

#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the scripted driver ---------------------------------------------------------- */

#define MAX_COLS 6
struct fake_row {
    enum dir_sql_query id;
    const char *key; /* first parameter it answers, NULL for any */
    const char *names[MAX_COLS];
    const char *values[MAX_COLS];
};

static struct {
    const struct fake_row *rows;
    size_t n_rows;
    bool is_down;         /* connect fails */
    enum sql_rc fail_rc;  /* every query fails with this (SQL_RC_OK: no failure) */
    unsigned generation;  /* "server restarts": older handles are stale */
    unsigned connects, queries;
    time_t now;
    /* the last statement of each kind, with its parameters */
    char params[DQ_COUNT][8][512];
    size_t n_params[DQ_COUNT];
    unsigned runs[DQ_COUNT];
} fake;

struct fake_handle {
    unsigned generation;
};

static void *fake_connect(const struct sql_settings *s, char *err, size_t size)
{
    fake.connects++;
    if (fake.is_down) {
        snprintf(err, size, "Connection refused");
        return NULL;
    }
    struct fake_handle *h = calloc(1, sizeof *h);
    h->generation = fake.generation;
    return h;
}

static void fake_disconnect(void *h)
{
    free(h);
}

static enum sql_rc fake_query(void *handle, const struct sql_settings *s, const struct sql_stmt *st,
                              const char *const *params, sql_row_fn *cb, void *arg,
                              uint64_t *affected_r, bool *has_rows_r, char *err, size_t size)
{
    struct fake_handle *h = handle;
    fake.queries++;
    *affected_r = 0;
    if (h->generation != fake.generation) {
        snprintf(err, size, "server has gone away");
        return SQL_RC_CONN;
    }
    if (fake.fail_rc != SQL_RC_OK) {
        snprintf(err, size, "injected failure");
        return fake.fail_rc;
    }
    if (st->slot == 0) /* BEGIN / COMMIT / ROLLBACK */
        return SQL_RC_OK;
    enum dir_sql_query id = (enum dir_sql_query)(st->slot - 1);
    fake.runs[id]++;
    fake.n_params[id] = st->n_params;
    for (size_t i = 0; i < st->n_params && i < 8; i++)
        snprintf(fake.params[id][i], sizeof fake.params[id][i], "%s", params[i]);
    *affected_r = 1;
    for (size_t r = 0; r < fake.n_rows; r++) {
        const struct fake_row *row = &fake.rows[r];
        if (row->id != id || (row->key && (st->n_params == 0 || strcmp(row->key, params[0]) != 0)))
            continue;
        size_t n = 0;
        while (n < MAX_COLS && row->names[n])
            n++;
        struct sql_row out = {.n = n, .names = row->names, .values = row->values};
        *has_rows_r = true;
        if (!cb(arg, &out))
            break;
    }
    return SQL_RC_OK;
}

static const struct sql_driver fake_driver = {
    .name = "mysql",
    .dialect = SQL_DIALECT_MYSQL,
    .default_port = 3306,
    .connect = fake_connect,
    .disconnect = fake_disconnect,
    .query = fake_query,
};

static time_t fake_clock(void)
{
    return fake.now;
}

/* ---- fixture ---------------------------------------------------------------------- */

struct fixture {
    char dir[64];
    struct config *cfg;
    struct auth_service *svc;
    char log_path[128];
};

static char md5crypt_pw[128]; /* md5crypt of "pw", postfixadmin's default form */

static const struct fake_row pfa_rows[] = {
    {DQ_DOMAIN, "example.org", {"target"}, {""}},
    /* postfixadmin keeps an alias domain in the domain table too */
    {DQ_DOMAIN, "alias.example", {"target"}, {""}},
    {DQ_DOMAIN, "alias.example", {"target"}, {"example.org"}},
    {DQ_DOMAIN_SINGLE, NULL, {"domain"}, {"example.org"}},
    {DQ_USER, "alice@example.org",
     {"username", "maildir", "quota", "active", "domain_active"},
     {"alice@example.org", "example.org/alice/", "0", "1", "1"}},
    {DQ_USER, "dave@example.org",
     {"username", "maildir", "quota", "active", "domain_active"},
     {"dave@example.org", "example.org/dave/", "2048", "1", "1"}},
    {DQ_USER, "bob@example.org",
     {"username", "maildir", "quota", "active", "domain_active"},
     {"bob@example.org", "example.org/bob/", "0", "0", "1"}},
    {DQ_USER, "carol@example.org", /* PostgreSQL's booleans: the domain is inactive */
     {"username", "maildir", "quota", "active", "domain_active"},
     {"carol@example.org", "example.org/carol/", "0", "t", "f"}},
    {DQ_USER, "evil@example.org",
     {"username", "maildir", "quota", "active", "domain_active"},
     {"evil@example.org", "example.org/../../etc/", "0", "1", "1"}},
    {DQ_PASSWORD, "alice@example.org", {"username", "password", "active", "domain_active"},
     {"alice@example.org", md5crypt_pw, "1", "1"}},
    {DQ_PASSWORD, "bob@example.org", {"username", "password", "active", "domain_active"},
     {"bob@example.org", md5crypt_pw, "0", "1"}},
    {DQ_PASSWORD, "marked@example.org", {"username", "password", "active", "domain_active"},
     {"marked@example.org", "{PLAIN-MD5}8fe4c11451281c094a6578e6ddbf5eed", "1", "1"}},
    {DQ_ALIAS, "alice@example.org", {"goto"}, {"alice@example.org"}},
    {DQ_ALIAS, "info@example.org", {"goto"},
     {"alice@example.org, bob@remote.example,alice@example.org"}},
    {DQ_DOMAIN_EXISTS, "example.org", {"domain"}, {"example.org"}},
};

static int setup_cfg(void **state, const char *extra, const struct fake_row *rows, size_t n)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/tern-test-dirsql-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->log_path, sizeof f->log_path, "%s/log", f->dir);
    log_open(LOG_TARGET_FILE, f->log_path);
    memset(&fake, 0, sizeof fake);
    fake.rows = rows;
    fake.n_rows = n;
    fake.now = 1000;
    sql_driver_override(&fake_driver);
    sql_clock_override(fake_clock);
    struct crypt_data cd = {0};
    snprintf(md5crypt_pw, sizeof md5crypt_pw, "%s", crypt_r("pw", "$1$abcdefgh$", &cd));
    char text[4096];
    snprintf(text, sizeof text,
             "data_dir = %s\ndirectory.driver = mysql\ndirectory.dbname = postfix\n"
             "directory.pool_size = 2\nauth.allow_plaintext = always\n%s",
             f->dir, extra);
    char *err = NULL;
    f->cfg = config_parse_buffer("test.conf", text, strlen(text), NULL, 0, false, &err);
    if (!f->cfg) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    f->svc = auth_service_open(f->cfg, &err);
    if (!f->svc) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_cfg(state, "", pfa_rows, sizeof pfa_rows / sizeof pfa_rows[0]);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    auth_service_close(f->svc);
    config_free(f->cfg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", f->dir);
    log_open(LOG_TARGET_STDERR, NULL);
    sql_driver_override(NULL);
    sql_clock_override(NULL);
    free(f);
    return 0;
}

/* How many times a text occurs in the log so far. */
static int log_count(const struct fixture *f, const char *needle)
{
    FILE *fp = fopen(f->log_path, "r");
    if (!fp)
        return 0;
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, fp))
        n += strstr(line, needle) != NULL;
    fclose(fp);
    return n;
}

/* ---- postfixadmin rows ------------------------------------------------------------ */

static void test_users_from_postfixadmin_rows(void **state)
{
    struct fixture *f = *state;
    struct auth_user u;
    char want_home[256];
    snprintf(want_home, sizeof want_home, "%s/mail/example.org/alice", f->dir);
    assert_int_equal(auth_user_lookup(f->svc, "Alice@Example.ORG", &u), 1);
    assert_string_equal(u.address, "alice@example.org");
    assert_string_equal(u.home, want_home); /* maildir under the mail root: Tern's layout */
    assert_int_equal(u.quota, 0);           /* 0: unlimited, not quota.default */
    assert_true(u.enabled);
    auth_user_free(&u);
    /* the name went to the server as a bound parameter, lower-cased */
    assert_int_equal(fake.n_params[DQ_USER], 1);
    assert_string_equal(fake.params[DQ_USER][0], "alice@example.org");

    assert_int_equal(auth_user_lookup(f->svc, "dave@example.org", &u), 1);
    assert_int_equal(u.quota, 2048);
    auth_user_free(&u);
    assert_int_equal(auth_user_lookup(f->svc, "bob@example.org", &u), 1);
    assert_false(u.enabled); /* mailbox.active = 0 */
    auth_user_free(&u);
    assert_int_equal(auth_user_lookup(f->svc, "carol@example.org", &u), 1);
    assert_false(u.enabled); /* domain.active = f */
    auth_user_free(&u);
    /* a maildir climbing out of the mail root is refused (an error, not "no user") */
    assert_int_equal(auth_user_lookup(f->svc, "evil@example.org", &u), -1);
    assert_int_equal(auth_user_lookup(f->svc, "nobody@example.org", &u), 0);
    /* bare login: the only domain */
    assert_int_equal(auth_user_lookup(f->svc, "alice", &u), 1);
    assert_string_equal(u.address, "alice@example.org");
    auth_user_free(&u);
    /* an alias domain's address is the user of the target domain */
    assert_int_equal(auth_user_lookup(f->svc, "alice@alias.example", &u), 1);
    assert_string_equal(u.address, "alice@example.org");
    auth_user_free(&u);
}

static void test_routing_from_postfixadmin_rows(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(auth_domain_is_local(f->svc, "EXAMPLE.org"), 1);
    assert_int_equal(auth_domain_is_local(f->svc, "alias.example"), 1);
    assert_int_equal(auth_domain_is_local(f->svc, "other.example"), 0);
    /* the loop's variant never waits on the network: "ask later" */
    assert_int_equal(auth_domain_is_local_nonblocking(f->svc, "example.org"), -1);
    assert_true(auth_directory_may_block(f->svc));

    struct auth_targets t;
    assert_int_equal(auth_resolve(f->svc, "info@example.org", &t), 1);
    assert_int_equal(t.n_local, 1); /* goto list split, spaces dropped, duplicate once */
    assert_string_equal(t.local[0], "alice@example.org");
    assert_int_equal(t.n_remote, 1);
    assert_string_equal(t.remote[0], "bob@remote.example");
    auth_targets_free(&t);
    assert_int_equal(auth_resolve(f->svc, "alice@alias.example", &t), 1);
    assert_int_equal(t.n_local, 1);
    assert_string_equal(t.local[0], "alice@example.org");
    auth_targets_free(&t);
    assert_int_equal(auth_resolve(f->svc, "nobody@example.org", &t), 0);
    assert_true(auth_sender_allowed(f->svc, "alice@example.org", "info@example.org"));
    assert_true(auth_sender_allowed(f->svc, "alice@example.org", "alice@alias.example"));
    assert_false(auth_sender_allowed(f->svc, "dave@example.org", "info@example.org"));
}

static void test_passwords_from_postfixadmin_rows(void **state)
{
    struct fixture *f = *state;
    char *user = NULL;
    /* "$1$..." without a scheme: read in default_pass_scheme (CRYPT) */
    assert_int_equal(auth_login_password(f->svc, "alice@example.org", "pw", &user), 1);
    assert_string_equal(user, "alice@example.org");
    free(user);
    assert_int_equal(auth_login_password(f->svc, "alice@example.org", "wrong", &user), 0);
    assert_int_equal(auth_login_password(f->svc, "alice@alias.example", "pw", &user), 1);
    assert_string_equal(user, "alice@example.org");
    free(user);
    assert_int_equal(auth_login_password(f->svc, "bob@example.org", "pw", &user), 0); /* inactive */
    assert_int_equal(auth_login_password(f->svc, "nobody@example.org", "pw", &user), 0);
    /* "{PLAIN-MD5}..." is read as marked, not as CRYPT */
    assert_int_equal(auth_login_password(f->svc, "marked@example.org", "pw", &user), 1);
    free(user);
    assert_int_equal(auth_login_password(f->svc, "marked@example.org", "px", &user), 0);
    /* EHLO/CAPA ask which mechanisms without a query: CRYPT cannot serve CRAM-MD5 */
    unsigned before = fake.queries;
    struct auth_peer peer = {.service = "imap", .ip = "127.0.0.1", .is_tls = true};
    char *mechs = auth_mechanisms(f->svc, &peer);
    assert_string_equal(mechs, "PLAIN LOGIN");
    free(mechs);
    assert_false(auth_apop_available(f->svc));
    assert_int_equal(fake.queries, before);
}

/* ---- failures --------------------------------------------------------------------- */

static void expect_all_temporary(struct fixture *f)
{
    char *user = NULL;
    struct auth_user u;
    struct auth_targets t;
    assert_int_equal(auth_login_password(f->svc, "alice@example.org", "pw", &user), -1);
    assert_int_equal(auth_login_password(f->svc, "alice@example.org", "wrong", &user), -1);
    assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), -1);
    assert_int_equal(auth_resolve(f->svc, "alice@example.org", &t), -1);
    assert_int_equal(auth_domain_is_local(f->svc, "example.org"), -1);
    assert_int_equal(auth_user_lookup(f->svc, "alice", &u), -1); /* bare: the domain query */
    assert_false(auth_sender_allowed(f->svc, "alice@example.org", "info@example.org"));
    struct auth_peer peer = {.service = "smtp", .ip = "127.0.0.1", .is_tls = true};
    struct auth_sasl *s = auth_sasl_start(f->svc, "PLAIN", &peer, "mail.example.org");
    char *challenge = NULL;
    /* "\0alice@example.org\0pw" */
    assert_int_equal(auth_sasl_step(s, "AGFsaWNlQGV4YW1wbGUub3JnAHB3", &challenge),
                     AUTH_SASL_TEMPFAIL);
    free(challenge);
    auth_sasl_free(s);
}

static void test_database_errors_are_temporary(void **state)
{
    struct fixture *f = *state;
    static const enum sql_rc kinds[] = {SQL_RC_QUERY, SQL_RC_CONN, SQL_RC_TIMEOUT};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        fake.fail_rc = kinds[i];
        expect_all_temporary(f);
        fake.fail_rc = SQL_RC_OK;
        fake.now += 60; /* past any back-off */
        struct auth_user u;
        assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), 1);
        auth_user_free(&u);
    }
}

static void test_outage_logged_once_then_recovery(void **state)
{
    struct fixture *f = *state;
    fake.is_down = true;
    expect_all_temporary(f);
    expect_all_temporary(f);
    /* one connect attempt, then fast failures until the back-off ends; one log line */
    assert_int_equal(fake.connects, 1);
    assert_int_equal(log_count(f, "is unavailable: Connection refused"), 1);
    fake.now += 1; /* back-off 1 s: one probe, still down, back-off 2 s */
    struct auth_user u;
    assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), -1);
    assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), -1);
    assert_int_equal(fake.connects, 2);
    assert_int_equal(log_count(f, "is unavailable"), 1);
    fake.is_down = false;
    fake.now += 1; /* within the 2 s back-off: still failing fast, no connect */
    assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), -1);
    assert_int_equal(fake.connects, 2);
    fake.now += 1;
    assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), 1);
    auth_user_free(&u);
    assert_int_equal(log_count(f, "is available again after 3s"), 1);
}

static void test_stale_connection_retried(void **state)
{
    struct fixture *f = *state;
    struct auth_user u;
    assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), 1);
    auth_user_free(&u);
    unsigned connects = fake.connects;
    fake.generation++; /* the server restarted: pooled connections are gone */
    assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), 1);
    auth_user_free(&u);
    assert_int_equal(fake.connects, connects + 1);
    assert_int_equal(log_count(f, "is unavailable"), 0); /* not an outage */
}

/* ---- writes ----------------------------------------------------------------------- */

static void test_user_add_writes_postfixadmin_rows(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    assert_int_equal(auth_user_add(f->svc, "New@Example.org", "pw", 0, &err), 0);
    /* INSERT INTO mailbox (...) VALUES (%u, %w, '', %m, %q, %n, %d, ...) */
    assert_int_equal(fake.runs[DQ_MAILBOX_INSERT], 1);
    char (*p)[512] = fake.params[DQ_MAILBOX_INSERT];
    assert_string_equal(p[0], "new@example.org");
    assert_memory_equal(p[1], "$6$", 3); /* SHA512-CRYPT, bare: CRYPT reads it */
    assert_int_equal(auth_password_verify(p[1], "pw"), 1);
    assert_string_equal(p[2], "example.org/new/");
    assert_string_equal(p[3], "0"); /* unlimited */
    assert_string_equal(p[4], "new");
    assert_string_equal(p[5], "example.org");
    /* and the mailbox's own alias row */
    assert_int_equal(fake.runs[DQ_ALIAS_INSERT], 1);
    assert_string_equal(fake.params[DQ_ALIAS_INSERT][0], "new@example.org");
    assert_string_equal(fake.params[DQ_ALIAS_INSERT][1], "new@example.org");
    assert_string_equal(fake.params[DQ_ALIAS_INSERT][2], "example.org");
    assert_int_equal(auth_user_add(f->svc, "x@other.example", "pw", 0, &err), -1);
    assert_non_null(strstr(err, "unknown domain"));
    free(err);
    err = NULL;
    /* an existing user */
    assert_int_equal(auth_user_add(f->svc, "alice@example.org", "pw", 0, &err), -1);
    assert_non_null(strstr(err, "already exists"));
    free(err);
}

static int setup_argon2(void **state)
{
    return setup_cfg(state, "directory.password_scheme = ARGON2ID\n", pfa_rows,
                     sizeof pfa_rows / sizeof pfa_rows[0]);
}

static void test_password_prefix_when_default_differs(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    assert_int_equal(auth_user_set_password(f->svc, "alice@example.org", "pw2", &err), 0);
    /* UPDATE mailbox SET password = %w ... WHERE username = %u */
    const char *stored = fake.params[DQ_MAILBOX_SET_PASSWORD][0];
    assert_memory_equal(stored, "{ARGON2ID}$argon2id$", 20);
    assert_string_equal(fake.params[DQ_MAILBOX_SET_PASSWORD][1], "alice@example.org");
    assert_int_equal(auth_password_verify(stored, "pw2"), 1);
}

/* ---- custom queries --------------------------------------------------------------- */

static const struct fake_row custom_rows[] = {
    {DQ_DOMAIN, "example.org", {"domain"}, {"example.org"}},
    {DQ_USER, "alice@example.org", {"home", "quota_rule", "uid"},
     {"/var/vmail/example.org/alice/", "*:storage=1G", "901"}},
    {DQ_USER, "dave@example.org", {"home", "quota_rule"}, {"example.org/dave", "*:bytes=1000"}},
    {DQ_USER, "erin@example.org", {"user", "quota"}, {"Erin@Example.org", "5"}},
    /* a Postfix virtual_mailbox_maps query: a maildir relative to mail_root */
    {DQ_USER, "fred@example.org", {"maildir"}, {"example.org/fred/"}},
    {DQ_PASSWORD, "alice@example.org", {"user", "password"}, {"alice@example.org", "{PLAIN}pw"}},
};

static int setup_custom(void **state)
{
    /* no directory.schema: queries make it custom */
    return setup_cfg(state,
                     "directory.password_query = SELECT username AS user, password FROM mailbox "
                     "WHERE username = '%u'\n"
                     "directory.user_query = SELECT home FROM u WHERE u = '%u'\n"
                     "directory.domain_query = SELECT 1 FROM d WHERE d = '%d'\n"
                     "directory.default_pass_scheme = PLAIN\n"
                     "quota.default = 77\n",
                     custom_rows, sizeof custom_rows / sizeof custom_rows[0]);
}

static void test_custom_query_columns(void **state)
{
    struct fixture *f = *state;
    struct auth_user u;
    assert_int_equal(auth_user_lookup(f->svc, "alice@example.org", &u), 1);
    assert_string_equal(u.home, "/var/vmail/example.org/alice");
    assert_int_equal(u.quota, 1024ull * 1024 * 1024);
    auth_user_free(&u);
    assert_int_equal(auth_user_lookup(f->svc, "dave@example.org", &u), 1);
    char want[256];
    snprintf(want, sizeof want, "%s/mail/example.org/dave", f->dir);
    assert_string_equal(u.home, want);
    assert_int_equal(u.quota, 1000);
    auth_user_free(&u);
    assert_int_equal(auth_user_lookup(f->svc, "erin@example.org", &u), 1);
    assert_string_equal(u.address, "erin@example.org"); /* the "user" column, normalised */
    assert_int_equal(u.quota, 5);
    auth_user_free(&u);
    assert_int_equal(auth_user_lookup(f->svc, "fred@example.org", &u), 1);
    snprintf(want, sizeof want, "%s/mail/example.org/fred", f->dir);
    assert_string_equal(u.home, want);
    assert_int_equal(u.quota, 77); /* no quota column: quota.default */
    auth_user_free(&u);
    char *user = NULL;
    assert_int_equal(auth_login_password(f->svc, "alice@example.org", "pw", &user), 1);
    free(user);
    /* no alias_query: no aliases, not an error */
    struct auth_targets t;
    assert_int_equal(auth_resolve(f->svc, "alice@example.org", &t), 1);
    auth_targets_free(&t);
    /* a plaintext default lets CRAM-MD5 and APOP be offered (decided without a query) */
    struct auth_peer peer = {.service = "pop3", .ip = "127.0.0.1", .is_tls = true};
    char *mechs = auth_mechanisms(f->svc, &peer);
    assert_non_null(strstr(mechs, "CRAM-MD5"));
    free(mechs);
    /* the CLI cannot write here */
    char *err = NULL;
    assert_int_equal(auth_domain_add(f->svc, "new.example", &err), -1);
    assert_non_null(strstr(err, "read-only"));
    free(err);
    assert_non_null(auth_directory_read_only_reason(f->svc));
}

/* ---- settings --------------------------------------------------------------------- */

static void expect_config_error(const char *text, const char *want)
{
    char *err = NULL;
    struct config *cfg = config_parse_buffer("tern.conf", text, strlen(text), NULL, 0, false, &err);
    assert_non_null(cfg);
    if (auth_config_check(cfg, &err) == 0)
        fail_msg("accepted:\n%s", text);
    if (!strstr(err, want))
        fail_msg("error '%s', want '%s'", err, want);
    free(err);
    config_free(cfg);
}

static void test_config_checks(void **state)
{
    (void)state;
    sql_driver_override(&fake_driver);
    expect_config_error("directory.driver = mysql\n",
                        "tern.conf:1: directory.dbname: must be set for directory.driver = mysql");
    expect_config_error("directory.driver = postgresql\ndirectory.dbname = x\n"
                        "directory.schema = custom\n",
                        "tern.conf:3: directory.password_query: must be set");
    expect_config_error("directory.driver = mysql\ndirectory.dbname = x\n"
                        "directory.schema = custom\n"
                        "directory.password_query = SELECT password FROM m WHERE u = '%z'\n",
                        "tern.conf:4: directory.password_query: at offset 34: unknown variable %z");
    expect_config_error("directory.driver = mysql\ndirectory.dbname = x\n"
                        "directory.user_query = SELECT 1\n",
                        "tern.conf:3: directory.password_query: must be set");
    expect_config_error("directory.driver = mysql\ndirectory.dbname = x\n"
                        "directory.default_pass_scheme = ROT13\n",
                        "tern.conf:3: directory.default_pass_scheme: unknown password scheme");
    expect_config_error("directory.driver = mysql\ndirectory.dbname = x\ndirectory.tls = verify\n",
                        "tern.conf:3: directory.tls: verify needs directory.tls_ca");
    expect_config_error("directory.driver = mysql\ndirectory.dbname = x\n"
                        "directory.password_file = /nonexistent/pw\n",
                        "tern.conf:3: directory.password_file: cannot read /nonexistent/pw");
    /* queries without directory.schema: custom, which needs its three queries; Postfix's
     * %s is understood; pgsql is Dovecot's name of the driver */
    expect_config_error("directory.driver = pgsql\ndirectory.dbname = x\n"
                        "directory.alias_query = SELECT goto FROM alias WHERE address='%s'\n",
                        "directory.password_query: must be set for directory.schema = custom");
    expect_config_error("directory.driver = mysql\ndirectory.dbname = x\ndirectory.schema = "
                        "postfixadmin\ndirectory.user_query = SELECT 1\n",
                        "tern.conf:4: directory.user_query: is used only with directory.schema "
                        "= custom");
    expect_config_error("directory.dbname = postfix\n",
                        "tern.conf:1: directory.dbname: is used only with directory.driver = mysql");
    char *err = NULL;
    const char *bad = "directory.driver = oracle\n";
    assert_null(config_parse_buffer("tern.conf", bad, strlen(bad), NULL, 0, false, &err));
    assert_string_equal(err, "tern.conf:1: bad value 'oracle' for directory.driver (use sqlite, "
                             "mysql or postgresql)");
    free(err);
    sql_driver_override(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_users_from_postfixadmin_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routing_from_postfixadmin_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_passwords_from_postfixadmin_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_errors_are_temporary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outage_logged_once_then_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_connection_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_add_writes_postfixadmin_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_prefix_when_default_differs, setup_argon2,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_custom_query_columns, setup_custom, teardown),
        cmocka_unit_test(test_config_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
