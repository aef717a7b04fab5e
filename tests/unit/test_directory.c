/*
 * test_directory.c - the SQLite directory: schema, domains, users, credentials,
 * alias expansion (one-to-many, catch-all, +tag, loops, depth), sender rules,
 * mechanism advertising and APOP. Each test gets a fresh
 * data dir under /tmp.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth/auth.h"
#include "auth/auth_internal.h"
#include "core/config.h"

#include <openssl/md5.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    struct config cfg;
    struct auth_service *svc;
};

static int setup_with(void **state, const char *schemes, const char *default_domain)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/tern-test-dir-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->cfg.data_dir = f->dir;
    f->cfg.default_domain = (char *)default_domain;
    f->cfg.password_schemes = (char *)schemes;
    f->cfg.allow_plaintext = PLAINTEXT_LOOPBACK_TLS;
    f->cfg.quota_default = 1000;
    char *err = NULL;
    f->svc = auth_service_open(&f->cfg, &err);
    if (!f->svc) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, "SHA512-CRYPT CRAM-MD5 PLAIN", "");
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    auth_service_close(f->svc);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void ok(int rc, char *err)
{
    if (rc != 0)
        fail_msg("unexpected error: %s", err ? err : "?");
}

static void add_domain(struct auth_service *svc, const char *d)
{
    char *err = NULL;
    ok(auth_domain_add(svc, d, &err), err);
}

static void add_user(struct auth_service *svc, const char *a, const char *pw)
{
    char *err = NULL;
    ok(auth_user_add(svc, a, pw, 0, &err), err);
}

static void add_alias(struct auth_service *svc, const char *s, const char *t)
{
    char *err = NULL;
    ok(auth_alias_add(svc, s, t, &err), err);
}

/* errp, not err: the argument list would read err before the call under test sets it. */
static void expect_error(int rc, char **errp, const char *substring)
{
    char *err = *errp;
    *errp = NULL;
    assert_int_equal(rc, -1);
    assert_non_null(err);
    if (!strstr(err, substring))
        fail_msg("error '%s' lacks '%s'", err, substring);
    free(err);
}

/* ---- schema and domains ---------------------------------------------------------- */

static void test_schema(void **state)
{
    struct fixture *f = *state;
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "test \"$(sqlite3 %s/tern.db 'PRAGMA user_version; PRAGMA "
             "journal_mode;' | tr '\\n' ' ')\" = '1 wal '",
             f->dir);
    assert_int_equal(system(cmd), 0);
    /* Reopening an existing directory keeps its content. */
    add_domain(f->svc, "Example.TEST");
    char *err = NULL;
    struct auth_service *again = auth_service_open(&f->cfg, &err);
    assert_non_null(again);
    assert_int_equal(auth_domain_is_local(again, "example.test"), 1);
    auth_service_close(again);
}

/* The lookups keep their statements prepared on the connection: what another process
 * (the CLI) changes in tern.db between two lookups is seen by the next one, found and
 * gone alike, and a lookup holds no read transaction that would pin an old state. */
static void test_kept_statements_see_other_writers(void **state)
{
    struct fixture *f = *state;
    add_domain(f->svc, "example.test");
    char *err = NULL;
    struct auth_service *cli = auth_service_open(&f->cfg, &err);
    assert_non_null(cli);
    struct auth_user u;
    for (int round = 0; round < 3; round++) {
        assert_int_equal(auth_user_lookup(f->svc, "kept@example.test", &u), 0);
        assert_int_equal(auth_domain_is_local(f->svc, "other.test"), 0);
        ok(auth_user_add(cli, "kept@example.test", "pw", 0, &err), err);
        ok(auth_domain_add(cli, "other.test", &err), err);
        assert_int_equal(auth_user_lookup(f->svc, "kept@example.test", &u), 1);
        assert_string_equal(u.address, "kept@example.test");
        auth_user_free(&u);
        assert_int_equal(auth_domain_is_local(f->svc, "other.test"), 1);
        struct auth_targets t;
        assert_int_equal(auth_resolve(f->svc, "kept@example.test", &t), 1);
        assert_int_equal(t.n_local, 1);
        auth_targets_free(&t);
        ok(auth_user_del(cli, "kept@example.test", &err), err);
        ok(auth_domain_del(cli, "other.test", &err), err);
    }
    assert_int_equal(auth_user_lookup(f->svc, "kept@example.test", &u), 0);
    auth_service_close(cli);
}

static void count_cb(const char *d, void *arg)
{
    (void)d;
    (*(int *)arg)++;
}

static void test_domains(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    add_domain(f->svc, "example.test");
    add_domain(f->svc, "other.test");
    expect_error(auth_domain_add(f->svc, "EXAMPLE.test", &err), &err, "already exists");
    err = NULL;
    expect_error(auth_domain_add(f->svc, "bad domain", &err), &err, "invalid");
    err = NULL;
    expect_error(auth_domain_add(f->svc, "", &err), &err, "invalid");
    assert_int_equal(auth_domain_is_local(f->svc, "EXAMPLE.TEST"), 1);
    assert_int_equal(auth_domain_is_local(f->svc, "nope.test"), 0);
    int n = 0;
    assert_int_equal(auth_domain_list(f->svc, count_cb, &n), 0);
    assert_int_equal(n, 2);
    add_user(f->svc, "a@other.test", "pw");
    err = NULL;
    expect_error(auth_domain_del(f->svc, "other.test", &err), &err, "user");
    err = NULL;
    ok(auth_user_del(f->svc, "a@other.test", &err), err);
    add_alias(f->svc, "x@other.test", "a@example.test");
    ok(auth_domain_del(f->svc, "other.test", &err), err);
    assert_int_equal(auth_domain_is_local(f->svc, "other.test"), 0);
    err = NULL;
    expect_error(auth_domain_del(f->svc, "other.test", &err), &err, "no such domain");
}

/* ---- users ----------------------------------------------------------------------- */

static void test_users(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    expect_error(auth_user_add(f->svc, "alice@example.test", "pw", 0, &err), &err,
                 "unknown domain");
    add_domain(f->svc, "example.test");
    ok(auth_user_add(f->svc, "Alice@Example.Test", "alicepw", 0, &err), err);
    err = NULL;
    expect_error(auth_user_add(f->svc, "alice@example.test", "x", 0, &err), &err, "already exists");
    err = NULL;
    expect_error(auth_user_add(f->svc, "noatsign", "x", 0, &err), &err, "invalid address");
    ok(auth_user_add(f->svc, "bob@example.test", "bobpw", 5000, &err), err);

    struct auth_user u;
    assert_int_equal(auth_user_lookup(f->svc, "ALICE@example.test", &u), 1);
    assert_string_equal(u.address, "alice@example.test");
    char home[256];
    snprintf(home, sizeof home, "%s/mail/example.test/alice", f->dir);
    assert_string_equal(u.home, home);
    assert_int_equal(u.quota, 1000); /* quota.default */
    assert_true(u.enabled);
    auth_user_free(&u);
    /* A bare login maps to the only domain. */
    assert_int_equal(auth_user_lookup(f->svc, "bob", &u), 1);
    assert_string_equal(u.address, "bob@example.test");
    assert_int_equal(u.quota, 5000);
    auth_user_free(&u);
    assert_int_equal(auth_user_lookup(f->svc, "carol@example.test", &u), 0);
    assert_int_equal(auth_user_lookup(f->svc, "", &u), 0);

    char *schemes = auth_user_schemes(f->svc, "alice@example.test");
    assert_string_equal(schemes, "SHA512-CRYPT CRAM-MD5 PLAIN");
    free(schemes);

    /* Logins. */
    char *user = NULL;
    assert_int_equal(auth_login_password(f->svc, "alice@EXAMPLE.test", "alicepw", &user), 1);
    assert_string_equal(user, "alice@example.test");
    free(user);
    assert_int_equal(auth_login_password(f->svc, "alice", "alicepw", &user), 1);
    free(user);
    assert_int_equal(auth_login_password(f->svc, "alice", "wrong", &user), 0);
    assert_null(user);
    assert_int_equal(auth_login_password(f->svc, "nobody", "alicepw", &user), 0);
    assert_int_equal(auth_login_password(f->svc, "alice", "", &user), 0);

    ok(auth_user_set_password(f->svc, "alice@example.test", "newpw", &err), err);
    assert_int_equal(auth_login_password(f->svc, "alice", "alicepw", &user), 0);
    assert_int_equal(auth_login_password(f->svc, "alice", "newpw", &user), 1);
    free(user);
    ok(auth_user_set_enabled(f->svc, "alice@example.test", false, &err), err);
    assert_int_equal(auth_login_password(f->svc, "alice", "newpw", &user), 0);
    ok(auth_user_set_enabled(f->svc, "alice@example.test", true, &err), err);
    ok(auth_user_set_quota(f->svc, "alice@example.test", 77, &err), err);
    assert_int_equal(auth_user_lookup(f->svc, "alice", &u), 1);
    assert_int_equal(u.quota, 77);
    auth_user_free(&u);
    err = NULL;
    expect_error(auth_user_set_password(f->svc, "zed@example.test", "x", &err), &err,
                 "no such user");
    err = NULL;
    expect_error(auth_user_del(f->svc, "zed@example.test", &err), &err, "no such user");

    /* Two domains and no default: a bare login is ambiguous. */
    add_domain(f->svc, "second.test");
    assert_int_equal(auth_user_lookup(f->svc, "bob", &u), 0);
    assert_int_equal(auth_login_password(f->svc, "bob", "bobpw", &user), 0);

    ok(auth_user_del(f->svc, "bob@example.test", &err), err);
    assert_int_equal(auth_user_lookup(f->svc, "bob@example.test", &u), 0);
    assert_int_equal(auth_login_password(f->svc, "bob@example.test", "bobpw", &user), 0);
}

static void test_default_domain(void **state)
{
    (void)state;
    void *st = NULL;
    assert_int_equal(setup_with(&st, "PLAIN", "Two.Test"), 0);
    struct fixture *f = st;
    add_domain(f->svc, "one.test");
    add_domain(f->svc, "two.test");
    add_user(f->svc, "carol@two.test", "pw");
    char *user = NULL;
    assert_int_equal(auth_login_password(f->svc, "Carol", "pw", &user), 1);
    assert_string_equal(user, "carol@two.test");
    free(user);
    teardown(&st);
}

static void user_cb(const struct auth_user *u, void *arg)
{
    struct buf *b = arg;
    buf_printf(b, "%s;", u->address);
}

static void test_user_list(void **state)
{
    struct fixture *f = *state;
    add_domain(f->svc, "b.test");
    add_domain(f->svc, "a.test");
    add_user(f->svc, "z@a.test", "x");
    add_user(f->svc, "y@b.test", "x");
    add_user(f->svc, "m@a.test", "x");
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(auth_user_list(f->svc, NULL, user_cb, &b), 0);
    assert_string_equal(b.data, "m@a.test;z@a.test;y@b.test;");
    buf_reset(&b);
    assert_int_equal(auth_user_list(f->svc, "B.TEST", user_cb, &b), 0);
    assert_string_equal(b.data, "y@b.test;");
    buf_free(&b);
}

/* Run SQL on the fixture's tern.db through a second connection (as another process). */
static int exec_tern_db(const struct fixture *f, const char *sql)
{
    char path[128];
    snprintf(path, sizeof path, "%s/tern.db", f->dir);
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

/* A malformed stored credential is skipped; the others still verify the password. */
static void test_malformed_credential_skipped(void **state)
{
    struct fixture *f = *state;
    add_domain(f->svc, "example.test");
    add_user(f->svc, "alice@example.test", "alicepw");
    assert_int_equal(exec_tern_db(f,
                                  "UPDATE credentials SET value = '{PLAIN-MD5}zz' "
                                  "WHERE scheme = 'CRAM-MD5';"
                                  "UPDATE credentials SET value = '{BOGUS}x' "
                                  "WHERE scheme = 'PLAIN'"),
                     SQLITE_OK);
    char *user = NULL;
    assert_int_equal(auth_login_password(f->svc, "alice", "alicepw", &user), 1);
    free(user);
    assert_int_equal(auth_login_password(f->svc, "alice", "wrong", &user), 0);
    /* Nothing usable at all: a failed login, not a server error. */
    assert_int_equal(exec_tern_db(f, "UPDATE credentials SET value = '{BOGUS}x'"), SQLITE_OK);
    assert_int_equal(auth_login_password(f->svc, "alice", "alicepw", &user), 0);
}

/* ---- routing --------------------------------------------------------------------- */

static void expect_targets(struct auth_service *svc, const char *addr, int want_rc,
                           const char *want_local, const char *want_remote)
{
    struct auth_targets t;
    int rc = auth_resolve(svc, addr, &t);
    if (rc != want_rc)
        fail_msg("resolve %s: rc %d, want %d", addr, rc, want_rc);
    struct buf l, r;
    buf_init(&l, 0);
    buf_init(&r, 0);
    for (size_t i = 0; i < t.n_local; i++)
        buf_printf(&l, "%s%s", i ? " " : "", t.local[i]);
    for (size_t i = 0; i < t.n_remote; i++)
        buf_printf(&r, "%s%s", i ? " " : "", t.remote[i]);
    if (strcmp(buf_cstr(&l), want_local) != 0 || strcmp(buf_cstr(&r), want_remote) != 0)
        fail_msg("resolve %s: local '%s' remote '%s', want '%s' / '%s'", addr, buf_cstr(&l),
                 buf_cstr(&r), want_local, want_remote);
    buf_free(&l);
    buf_free(&r);
    auth_targets_free(&t);
}

/* auth_rcpt_lookup gives what the three lookups it stands for give, one step. */
static void test_rcpt_lookup(void **state)
{
    struct fixture *f = *state;
    add_domain(f->svc, "example.test");
    add_user(f->svc, "alice@example.test", "x");
    add_user(f->svc, "bob@example.test", "x");
    char *err = NULL;
    ok(auth_alias_add(f->svc, "team@example.test", "alice@example.test", &err), err);
    ok(auth_alias_add(f->svc, "team@example.test", "bob@example.test", &err), err);
    ok(auth_alias_add(f->svc, "team@example.test", "far@remote.test", &err), err);
    ok(auth_user_set_enabled(f->svc, "bob@example.test", false, &err), err);
    struct auth_rcpt r;
    auth_rcpt_lookup(f->svc, "example.test", "team@example.test", &r);
    assert_int_equal(r.is_local, 1);
    assert_int_equal(r.resolved, 1);
    assert_int_equal(r.t.n_local, 2);
    assert_int_equal(r.t.n_remote, 1);
    assert_string_equal(r.t.remote[0], "far@remote.test");
    for (size_t i = 0; i < 2; i++) {
        struct auth_user u;
        assert_int_equal(auth_user_lookup(f->svc, r.t.local[i], &u), 1);
        assert_int_equal(r.found[i], 1);
        assert_string_equal(r.users[i].address, u.address);
        assert_string_equal(r.users[i].home, u.home);
        assert_int_equal(r.users[i].quota, u.quota);
        assert_int_equal(r.users[i].enabled, u.enabled);
        auth_user_free(&u);
    }
    auth_rcpt_free(&r);
    auth_rcpt_lookup(f->svc, "example.test", "nobody@example.test", &r);
    assert_int_equal(r.is_local, 1);
    assert_int_equal(r.resolved, 0);
    assert_null(r.found);
    auth_rcpt_free(&r);
    auth_rcpt_lookup(f->svc, "elsewhere.test", "someone@elsewhere.test", &r);
    assert_int_equal(r.is_local, 0);
    assert_int_equal(r.resolved, 0);
    auth_rcpt_free(&r);
}

static void test_resolve(void **state)
{
    struct fixture *f = *state;
    add_domain(f->svc, "example.test");
    add_domain(f->svc, "catch.test");
    add_user(f->svc, "alice@example.test", "x");
    add_user(f->svc, "bob@example.test", "x");
    add_user(f->svc, "admin@catch.test", "x");
    add_user(f->svc, "real@catch.test", "x");

    expect_targets(f->svc, "alice@example.test", 1, "alice@example.test", "");
    expect_targets(f->svc, "ALICE@Example.Test", 1, "alice@example.test", "");
    expect_targets(f->svc, "alice+lists@example.test", 1, "alice@example.test", "");
    expect_targets(f->svc, "carol@example.test", 0, "", "");
    expect_targets(f->svc, "+x@example.test", 0, "", "");

    /* One-to-many with a remote target and a duplicate. */
    add_alias(f->svc, "team@example.test", "alice@example.test");
    add_alias(f->svc, "team@example.test", "bob@example.test");
    add_alias(f->svc, "team@example.test", "friend@remote.test");
    add_alias(f->svc, "team@example.test", "alice+dup@example.test");
    expect_targets(f->svc, "team@example.test", 1, "alice@example.test bob@example.test",
                   "friend@remote.test");
    expect_targets(f->svc, "team+x@example.test", 1, "alice@example.test bob@example.test",
                   "friend@remote.test");

    /* Nested aliases. */
    add_alias(f->svc, "all@example.test", "team@example.test");
    add_alias(f->svc, "all@example.test", "bob@example.test");
    expect_targets(f->svc, "all@example.test", 1, "alice@example.test bob@example.test",
                   "friend@remote.test");

    /* Loops terminate. */
    add_alias(f->svc, "loop1@example.test", "loop2@example.test");
    add_alias(f->svc, "loop2@example.test", "loop1@example.test");
    expect_targets(f->svc, "loop1@example.test", 0, "", "");
    add_alias(f->svc, "loop2@example.test", "bob@example.test");
    expect_targets(f->svc, "loop1@example.test", 1, "bob@example.test", "");

    /* An alias to oneself keeps a copy (forward plus keep). */
    add_user(f->svc, "carl@example.test", "x");
    add_alias(f->svc, "carl@example.test", "carl@example.test");
    add_alias(f->svc, "carl@example.test", "carl@remote.test");
    expect_targets(f->svc, "carl@example.test", 1, "carl@example.test", "carl@remote.test");

    /* Catch-all: exact users still win; unknown names go to the catch-all. */
    add_alias(f->svc, "@catch.test", "admin@catch.test");
    expect_targets(f->svc, "real@catch.test", 1, "real@catch.test", "");
    expect_targets(f->svc, "whatever@catch.test", 1, "admin@catch.test", "");
    expect_targets(f->svc, "real+tag@catch.test", 1, "real@catch.test", "");
    /* A catch-all pointing at a missing user of its own domain does not loop. */
    add_alias(f->svc, "@example.test", "ghost@example.test");
    expect_targets(f->svc, "nobody@example.test", 0, "", "");

    /* A dangling alias delivers nowhere: unknown. */
    add_alias(f->svc, "gone@catch.test", "deleted@example.test");
    expect_targets(f->svc, "gone@catch.test", 0, "", "");

    /* Depth limit: a chain of 15 aliases stops at 10. */
    char src[64], dst[64];
    for (int i = 0; i < 15; i++) {
        snprintf(src, sizeof src, "c%d@example.test", i);
        snprintf(dst, sizeof dst, "c%d@example.test", i + 1);
        add_alias(f->svc, src, dst);
    }
    add_alias(f->svc, "c15@example.test", "bob@example.test");
    add_alias(f->svc, "c5@example.test", "c5copy@remote.test");
    expect_targets(f->svc, "c0@example.test", 1, "", "c5copy@remote.test");
    expect_targets(f->svc, "c8@example.test", 1, "bob@example.test", "");

    /* Alias list and deletion. */
    char *err = NULL;
    ok(auth_alias_del(f->svc, "team@example.test", "friend@remote.test", &err), err);
    expect_targets(f->svc, "team@example.test", 1, "alice@example.test bob@example.test", "");
    ok(auth_alias_del(f->svc, "team@example.test", NULL, &err), err);
    /* With its own aliases gone, team@ falls to the catch-all, whose target is missing. */
    expect_targets(f->svc, "team@example.test", 0, "", "");
}

static void test_alias_errors(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    add_domain(f->svc, "example.test");
    expect_error(auth_alias_add(f->svc, "x@foreign.test", "a@example.test", &err), &err,
                 "not a local domain");
    err = NULL;
    expect_error(auth_alias_add(f->svc, "x@example.test", "nonsense", &err), &err, "invalid");
    err = NULL;
    expect_error(auth_alias_add(f->svc, "bad", "a@example.test", &err), &err, "invalid");
    add_alias(f->svc, "x@example.test", "a@example.test");
    err = NULL;
    expect_error(auth_alias_add(f->svc, "X@example.test", "A@example.test", &err), &err,
                 "already exists");
    err = NULL;
    expect_error(auth_alias_del(f->svc, "y@example.test", NULL, &err), &err, "no such alias");
}

static void test_sender_allowed(void **state)
{
    struct fixture *f = *state;
    add_domain(f->svc, "example.test");
    add_user(f->svc, "alice@example.test", "x");
    add_user(f->svc, "bob@example.test", "x");
    add_alias(f->svc, "info@example.test", "alice@example.test");
    add_alias(f->svc, "sales@example.test", "info@example.test");
    add_alias(f->svc, "@example.test", "alice@example.test");
    const char *u = "alice@example.test";
    assert_true(auth_sender_allowed(f->svc, u, ""));
    assert_true(auth_sender_allowed(f->svc, u, NULL));
    assert_true(auth_sender_allowed(f->svc, u, "Alice@Example.test"));
    assert_true(auth_sender_allowed(f->svc, u, "alice+x@example.test"));
    assert_true(auth_sender_allowed(f->svc, u, "info@example.test"));
    assert_true(auth_sender_allowed(f->svc, u, "sales@example.test"));
    assert_false(auth_sender_allowed(f->svc, u, "bob@example.test"));
    assert_false(auth_sender_allowed(f->svc, u, "random@example.test")); /* catch-all */
    assert_false(auth_sender_allowed(f->svc, u, "alice@elsewhere.test"));
    assert_false(auth_sender_allowed(f->svc, "bob@example.test", "info@example.test"));
}

/* ---- mechanisms, APOP ----------------------------------------------------------- */

/* The rule: a mechanism is accepted exactly when it is advertised to that peer. */
static void assert_accepted_iff_advertised(struct auth_service *svc, const struct auth_peer *peer)
{
    static const char *const names[] = {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256",
                                        "DIGEST-MD5", "GSSAPI", "plain", "cram-md5"};
    char *list = auth_mechanisms(svc, peer);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        bool is_advertised = false;
        char *copy = strdup(list), *save = NULL;
        for (char *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save))
            is_advertised |= strcasecmp(w, names[i]) == 0;
        free(copy);
        struct auth_sasl *s = auth_sasl_start(svc, names[i], peer, "h");
        assert_int_equal(s != NULL, is_advertised);
        assert_int_equal(auth_mechanism_status(svc, names[i], peer) == AUTH_MECH_OK,
                         is_advertised);
        auth_sasl_free(s);
    }
    free(list);
}

static void test_mechanisms(void **state)
{
    struct fixture *f = *state;
    struct auth_peer plain = {"smtp", "192.0.2.1", false, false};
    struct auth_peer lo = {"smtp", "127.0.0.1", false, true};
    struct auth_peer tls = {"smtp", "192.0.2.1", true, false};
    char *m = auth_mechanisms(f->svc, &plain);
    assert_string_equal(m, ""); /* nobody has CRAM/SCRAM credentials yet */
    free(m);
    assert_false(auth_apop_available(f->svc));
    /* not advertised, so not accepted either */
    assert_int_equal(auth_mechanism_status(f->svc, "CRAM-MD5", &lo), AUTH_MECH_UNAVAILABLE);
    assert_int_equal(auth_mechanism_status(f->svc, "SCRAM-SHA-256", &tls), AUTH_MECH_UNAVAILABLE);
    assert_null(auth_sasl_start(f->svc, "CRAM-MD5", &lo, "h"));
    assert_int_equal(auth_mechanism_status(f->svc, "PLAIN", &plain), AUTH_MECH_NEEDS_TLS);
    assert_int_equal(auth_mechanism_status(f->svc, "login", &lo), AUTH_MECH_OK);
    assert_int_equal(auth_mechanism_status(f->svc, "DIGEST-MD5", &tls), AUTH_MECH_UNKNOWN);
    assert_int_equal(auth_mechanism_status(f->svc, NULL, &tls), AUTH_MECH_UNKNOWN);
    assert_accepted_iff_advertised(f->svc, &plain);
    assert_accepted_iff_advertised(f->svc, &lo);
    assert_accepted_iff_advertised(f->svc, &tls);
    add_domain(f->svc, "example.test");
    add_user(f->svc, "alice@example.test", "x"); /* SHA512-CRYPT CRAM-MD5 PLAIN */
    m = auth_mechanisms(f->svc, &plain);
    assert_string_equal(m, "CRAM-MD5 SCRAM-SHA-256");
    free(m);
    m = auth_mechanisms(f->svc, &lo);
    assert_string_equal(m, "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256");
    free(m);
    assert_true(auth_plaintext_allowed(f->svc, &tls));
    assert_false(auth_plaintext_allowed(f->svc, &plain));
    assert_true(auth_apop_available(f->svc));
    assert_null(auth_sasl_start(f->svc, "PLAIN", &plain, "h"));
    assert_null(auth_sasl_start(f->svc, "DIGEST-MD5", &lo, "h"));
    assert_accepted_iff_advertised(f->svc, &plain);
    assert_accepted_iff_advertised(f->svc, &lo);
    assert_accepted_iff_advertised(f->svc, &tls);
}

static void test_mechanisms_strong_only(void **state)
{
    (void)state;
    void *st = NULL;
    assert_int_equal(setup_with(&st, "SHA512-CRYPT", ""), 0);
    struct fixture *f = st;
    add_domain(f->svc, "example.test");
    add_user(f->svc, "alice@example.test", "x");
    struct auth_peer tls = {"imap", "192.0.2.1", true, false};
    char *m = auth_mechanisms(f->svc, &tls);
    assert_string_equal(m, "PLAIN LOGIN");
    free(m);
    assert_false(auth_apop_available(f->svc));
    /* only hashes stored: CRAM-MD5 and SCRAM cannot be answered, so they are refused */
    assert_int_equal(auth_mechanism_status(f->svc, "CRAM-MD5", &tls), AUTH_MECH_UNAVAILABLE);
    assert_null(auth_sasl_start(f->svc, "CRAM-MD5", &tls, "h"));
    assert_null(auth_sasl_start(f->svc, "SCRAM-SHA-256", &tls, "h"));
    assert_accepted_iff_advertised(f->svc, &tls);
    teardown(&st);
}

static void test_apop(void **state)
{
    struct fixture *f = *state;
    add_domain(f->svc, "example.test");
    add_user(f->svc, "alice@example.test", "gEhEiM!");
    /* The seed's example: MD5("<19622.1205709759@mp050>gEhEiM!"). */
    const char *ts = "<19622.1205709759@mp050>";
    char *user = NULL;
    assert_int_equal(
        auth_login_apop(f->svc, "alice", ts, "20376e3ca8d030b31e1fda962a4dfcfb", &user), 1);
    assert_string_equal(user, "alice@example.test");
    free(user);
    assert_int_equal(
        auth_login_apop(f->svc, "alice", ts, "20376E3CA8D030B31E1FDA962A4DFCFB", &user), 1);
    free(user);
    assert_int_equal(
        auth_login_apop(f->svc, "alice", ts, "00376e3ca8d030b31e1fda962a4dfcfb", &user), 0);
    assert_int_equal(auth_login_apop(f->svc, "alice", ts, "short", &user), 0);
    assert_int_equal(
        auth_login_apop(f->svc, "nobody", ts, "20376e3ca8d030b31e1fda962a4dfcfb", &user), 0);
}

/* ---- threads ----------------------------------------------------------------------- */

static void *reader(void *arg)
{
    struct auth_service *svc = arg;
    for (int i = 0; i < 200; i++) {
        struct auth_targets t;
        if (auth_resolve(svc, "team@example.test", &t) != 1 || t.n_local != 2)
            return (void *)1;
        auth_targets_free(&t);
        struct auth_user u;
        if (auth_user_lookup(svc, "alice@example.test", &u) != 1)
            return (void *)1;
        auth_user_free(&u);
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct fixture *f = *state;
    add_domain(f->svc, "example.test");
    add_user(f->svc, "alice@example.test", "x");
    add_user(f->svc, "bob@example.test", "x");
    add_alias(f->svc, "team@example.test", "alice@example.test");
    add_alias(f->svc, "team@example.test", "bob@example.test");
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, reader, f->svc);
    char *err = NULL;
    for (int i = 0; i < 20; i++) {
        char a[64];
        snprintf(a, sizeof a, "u%d@example.test", i);
        ok(auth_user_add(f->svc, a, "pw", 0, &err), err);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        assert_null(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_statements_see_other_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_users, setup, teardown),
        cmocka_unit_test(test_default_domain),
        cmocka_unit_test_setup_teardown(test_user_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_credential_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rcpt_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alias_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sender_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mechanisms, setup, teardown),
        cmocka_unit_test(test_mechanisms_strong_only),
        cmocka_unit_test_setup_teardown(test_apop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
