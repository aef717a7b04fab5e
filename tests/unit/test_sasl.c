/*
 * test_sasl.c - server-side SASL exchanges: PLAIN and LOGIN exactly as in the seeds
 * (001: "AUTH PLAIN dGVzdAB0ZXN0AHRlc3RwYXNz", LOGIN prompts VXNlcm5hbWU6 /
 * UGFzc3dvcmQ6), CRAM-MD5 computed like the seed's Perl script, and SCRAM-SHA-256
 * against GNU SASL's client as an independent implementation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth/auth.h"
#include "auth/auth_internal.h"
#include "core/config.h"
#include "core/util.h"

#include <gsasl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
    char dir[64];
    struct config cfg;
    struct auth_service *svc;
};

static const struct auth_peer loopback = {"smtp", "127.0.0.1", false, true};

static int setup_schemes(void **state, const char *schemes)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/tern-test-sasl-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->cfg.data_dir = f->dir;
    f->cfg.default_domain = "";
    f->cfg.password_schemes = (char *)schemes;
    f->cfg.allow_plaintext = PLAINTEXT_LOOPBACK_TLS;
    char *err = NULL;
    f->svc = auth_service_open(&f->cfg, &err);
    if (!f->svc)
        return -1;
    if (auth_domain_add(f->svc, "example.test", &err) != 0 ||
        auth_user_add(f->svc, "test@example.test", "testpass", 0, &err) != 0 ||
        auth_user_add(f->svc, "benutzername@example.test", "passwort", 0, &err) != 0)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_schemes(state, "SHA256-CRYPT CRAM-MD5 SCRAM-SHA-256");
}

static int setup_plain_only(void **state)
{
    return setup_schemes(state, "PLAIN");
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

/* Run one step and check status and challenge (NULL: don't care). */
static void step(struct auth_sasl *s, const char *in, enum auth_sasl_status want,
                 const char *want_challenge)
{
    char *ch = NULL;
    enum auth_sasl_status st = auth_sasl_step(s, in, &ch);
    if (st != want)
        fail_msg("step '%s': status %d, want %d", in ? in : "(null)", st, want);
    if (want_challenge) {
        assert_non_null(ch);
        assert_string_equal(ch, want_challenge);
    }
    free(ch);
}

static void test_plain_seed(void **state)
{
    struct fixture *f = *state;
    /* Seed 001: AUTH PLAIN with initial response "test\0test\0testpass". */
    struct auth_sasl *s = auth_sasl_start(f->svc, "plain", &loopback, "mail.example.test");
    assert_non_null(s);
    assert_string_equal(auth_sasl_mechanism(s), "PLAIN");
    step(s, "dGVzdAB0ZXN0AHRlc3RwYXNz", AUTH_SASL_OK, NULL);
    assert_string_equal(auth_sasl_user(s), "test@example.test");
    assert_string_equal(auth_sasl_attempted_login(s), "test");
    auth_sasl_free(s);

    /* Empty authzid, full address, no initial response (empty challenge first). */
    s = auth_sasl_start(f->svc, "PLAIN", &loopback, "h");
    step(s, NULL, AUTH_SASL_CONTINUE, "");
    char *b64 = util_base64_encode_str("\0test@example.test\0testpass", 27);
    step(s, b64, AUTH_SASL_OK, NULL);
    free(b64);
    auth_sasl_free(s);

    /* Seed 002 form: authzid == authcid. */
    s = auth_sasl_start(f->svc, "PLAIN", &loopback, "h");
    step(s, "YmVudXR6ZXJuYW1lAGJlbnV0emVybmFtZQBwYXNzd29ydA==", AUTH_SASL_OK, NULL);
    auth_sasl_free(s);
}

static void expect_plain_fail(struct fixture *f, const char *raw, size_t len,
                              enum auth_sasl_status want)
{
    struct auth_sasl *s = auth_sasl_start(f->svc, "PLAIN", &loopback, "h");
    char *b64 = util_base64_encode_str(raw, len);
    step(s, b64, want, NULL);
    assert_string_equal(auth_sasl_user(s), "");
    free(b64);
    auth_sasl_free(s);
}

static void test_plain_bad(void **state)
{
    struct fixture *f = *state;
    expect_plain_fail(f, "\0test\0wrong", 11, AUTH_SASL_FAIL);
    expect_plain_fail(f, "other\0test\0testpass", 19, AUTH_SASL_FAIL); /* proxy authz */
    expect_plain_fail(f, "test\0testpass", 13, AUTH_SASL_FAIL);        /* one NUL */
    expect_plain_fail(f, "\0test\0testpass\0", 15, AUTH_SASL_FAIL);    /* three NULs */
    expect_plain_fail(f, "\0\0testpass", 10, AUTH_SASL_FAIL);          /* empty authcid */
    expect_plain_fail(f, "\0test\0", 6, AUTH_SASL_FAIL);               /* empty passwd */
    struct auth_sasl *s = auth_sasl_start(f->svc, "PLAIN", &loopback, "h");
    step(s, "not base64!", AUTH_SASL_FAIL, NULL);
    auth_sasl_free(s);
    s = auth_sasl_start(f->svc, "PLAIN", &loopback, "h");
    step(s, "=", AUTH_SASL_FAIL, NULL);
    auth_sasl_free(s);
    s = auth_sasl_start(f->svc, "PLAIN", &loopback, "h");
    step(s, NULL, AUTH_SASL_CONTINUE, "");
    step(s, "*", AUTH_SASL_FAIL, NULL); /* cancelled */
    auth_sasl_free(s);
}

static void test_login_seed(void **state)
{
    struct fixture *f = *state;
    /* Seed 001: AUTH LOGIN, 334 VXNlcm5hbWU6, dGVzdA==, 334 UGFzc3dvcmQ6, dGVzdHBhc3M=. */
    struct auth_sasl *s = auth_sasl_start(f->svc, "LOGIN", &loopback, "h");
    step(s, NULL, AUTH_SASL_CONTINUE, "VXNlcm5hbWU6");
    step(s, "dGVzdA==", AUTH_SASL_CONTINUE, "UGFzc3dvcmQ6");
    assert_string_equal(auth_sasl_attempted_login(s), "test");
    step(s, "dGVzdHBhc3M=", AUTH_SASL_OK, NULL);
    assert_string_equal(auth_sasl_user(s), "test@example.test");
    auth_sasl_free(s);

    /* Seed 002: AUTH LOGIN with the user name as initial response. */
    s = auth_sasl_start(f->svc, "login", &loopback, "h");
    step(s, "YmVudXR6ZXJuYW1l", AUTH_SASL_CONTINUE, "UGFzc3dvcmQ6");
    step(s, "cGFzc3dvcnQ=", AUTH_SASL_OK, NULL);
    auth_sasl_free(s);

    s = auth_sasl_start(f->svc, "LOGIN", &loopback, "h");
    step(s, NULL, AUTH_SASL_CONTINUE, "VXNlcm5hbWU6");
    step(s, "dGVzdA==", AUTH_SASL_CONTINUE, "UGFzc3dvcmQ6");
    step(s, "d3Jvbmc=", AUTH_SASL_FAIL, NULL);
    assert_string_equal(auth_sasl_user(s), "");
    step(s, "dGVzdHBhc3M=", AUTH_SASL_FAIL, NULL); /* no retry inside one exchange */
    auth_sasl_free(s);

    /* Plaintext mechanisms are refused on a non-TLS, non-loopback connection. */
    struct auth_peer remote = {"smtp", "192.0.2.1", false, false};
    assert_null(auth_sasl_start(f->svc, "LOGIN", &remote, "h"));
    remote.is_tls = true;
    s = auth_sasl_start(f->svc, "LOGIN", &remote, "h");
    assert_non_null(s);
    auth_sasl_free(s);
}

/* The seed's md5cram.pl: base64("user " . hmac_md5_hex(challenge, password)). */
static char *cram_response(const char *challenge_b64, const char *user, const char *pw)
{
    struct buf ch;
    buf_init(&ch, 0);
    assert_true(util_base64_decode_lenient(challenge_b64, strlen(challenge_b64), &ch));
    unsigned char mac[16];
    unsigned int n = 0;
    HMAC(EVP_md5(), pw, (int)strlen(pw), (unsigned char *)ch.data, ch.len, mac, &n);
    char line[400];
    int off = snprintf(line, sizeof line, "%s ", user);
    for (int i = 0; i < 16; i++)
        off += snprintf(line + off, sizeof line - (size_t)off, "%02x", mac[i]);
    buf_free(&ch);
    return util_base64_encode_str(line, strlen(line));
}

static void run_cram(struct fixture *f, const char *user, const char *pw,
                     enum auth_sasl_status want)
{
    struct auth_peer remote = {"imap", "192.0.2.1", false, false};
    struct auth_sasl *s = auth_sasl_start(f->svc, "CRAM-MD5", &remote, "mail.example.test");
    assert_non_null(s);
    char *ch = NULL;
    assert_int_equal(auth_sasl_step(s, NULL, &ch), AUTH_SASL_CONTINUE);
    struct buf dec;
    buf_init(&dec, 0);
    assert_true(util_base64_decode_lenient(ch, strlen(ch), &dec));
    /* <random.time@hostname> */
    assert_int_equal(dec.data[0], '<');
    assert_non_null(strstr(dec.data, "@mail.example.test>"));
    assert_non_null(strchr(dec.data, '.'));
    buf_free(&dec);
    char *resp = cram_response(ch, user, pw);
    step(s, resp, want, NULL);
    if (want == AUTH_SASL_OK)
        assert_string_equal(auth_sasl_user(s), "test@example.test");
    free(resp);
    free(ch);
    auth_sasl_free(s);
}

static void test_cram_md5(void **state)
{
    struct fixture *f = *state;
    run_cram(f, "test", "testpass", AUTH_SASL_OK);
    run_cram(f, "test@example.test", "testpass", AUTH_SASL_OK);
    run_cram(f, "test", "wrong", AUTH_SASL_FAIL);
    run_cram(f, "nobody", "testpass", AUTH_SASL_FAIL);
    /* An initial response is not allowed for a server-first mechanism. */
    struct auth_sasl *s = auth_sasl_start(f->svc, "CRAM-MD5", &loopback, "h");
    step(s, "dGVzdA==", AUTH_SASL_FAIL, NULL);
    auth_sasl_free(s);
    s = auth_sasl_start(f->svc, "CRAM-MD5", &loopback, "h");
    step(s, NULL, AUTH_SASL_CONTINUE, NULL);
    step(s, "dGVzdCB4eXo=", AUTH_SASL_FAIL, NULL); /* "test xyz" */
    auth_sasl_free(s);
}

static void test_cram_md5_from_plain(void **state)
{
    struct fixture *f = *state; /* password_schemes = PLAIN */
    run_cram(f, "test", "testpass", AUTH_SASL_OK);
    run_cram(f, "test", "testpasS", AUTH_SASL_FAIL);
}

/* SCRAM-SHA-256 with GNU SASL as the client. */
static enum auth_sasl_status run_scram(struct fixture *f, const char *authid, const char *pw,
                                       bool initial_response)
{
    Gsasl *ctx = NULL;
    Gsasl_session *cs = NULL;
    assert_int_equal(gsasl_init(&ctx), GSASL_OK);
    assert_int_equal(gsasl_client_start(ctx, "SCRAM-SHA-256", &cs), GSASL_OK);
    gsasl_property_set(cs, GSASL_AUTHID, authid);
    gsasl_property_set(cs, GSASL_PASSWORD, pw);

    struct auth_sasl *s = auth_sasl_start(f->svc, "scram-sha-256", &loopback, "h");
    assert_non_null(s);
    char *server = NULL, *client = NULL;
    enum auth_sasl_status st;
    if (!initial_response) {
        st = auth_sasl_step(s, NULL, &server);
        assert_int_equal(st, AUTH_SASL_CONTINUE);
        assert_string_equal(server, "");
    } else {
        server = strdup("");
    }
    /* client-first, client-final, then the empty answer to the server-final message
     * (which GNU SASL only gives after checking the server signature). */
    for (int rounds = 0; rounds < 5; rounds++) {
        int grc = gsasl_step64(cs, server, &client);
        free(server);
        server = NULL;
        if (grc != GSASL_NEEDS_MORE && grc != GSASL_OK)
            fail_msg("GNU SASL client rejected the server: %s", gsasl_strerror(grc));
        st = auth_sasl_step(s, client, &server);
        gsasl_free(client);
        client = NULL;
        if (st != AUTH_SASL_CONTINUE)
            break;
    }
    if (st == AUTH_SASL_OK)
        assert_string_equal(auth_sasl_user(s), "test@example.test");
    free(server);
    auth_sasl_free(s);
    gsasl_finish(cs);
    gsasl_done(ctx);
    return st;
}

static void test_scram(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(run_scram(f, "test", "testpass", false), AUTH_SASL_OK);
    assert_int_equal(run_scram(f, "test@example.test", "testpass", true), AUTH_SASL_OK);
    assert_int_equal(run_scram(f, "test", "wrong", false), AUTH_SASL_FAIL);
    assert_int_equal(run_scram(f, "nobody", "testpass", false), AUTH_SASL_FAIL);
}

static void test_scram_from_plain(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(run_scram(f, "test", "testpass", false), AUTH_SASL_OK);
    assert_int_equal(run_scram(f, "test", "nope", false), AUTH_SASL_FAIL);
}

static void test_scram_malformed(void **state)
{
    struct fixture *f = *state;
    static const char *const bad_first[] = {
        "p=tls-unique,,n=test,r=abc", /* channel binding we do not offer */
        "n,,m=ext,n=test,r=abc",      /* mandatory extension */
        "n,,n=te=5Xst,r=abc",         /* bad saslname escape */
        "n,,n=test",                  /* no nonce */
        "n,a=other,n=test,r=abc",     /* proxy authzid */
        "x,,n=test,r=abc",
        "",
    };
    for (size_t i = 0; i < sizeof bad_first / sizeof bad_first[0]; i++) {
        struct auth_sasl *s = auth_sasl_start(f->svc, "SCRAM-SHA-256", &loopback, "h");
        char *b64 = util_base64_encode_str(bad_first[i], strlen(bad_first[i]));
        char *ch = NULL;
        if (auth_sasl_step(s, strcmp(b64, "") ? b64 : "=", &ch) != AUTH_SASL_FAIL)
            fail_msg("client-first '%s' accepted", bad_first[i]);
        free(ch);
        free(b64);
        auth_sasl_free(s);
    }
    /* A wrong nonce in client-final fails. */
    struct auth_sasl *s = auth_sasl_start(f->svc, "SCRAM-SHA-256", &loopback, "h");
    const char *first = "n,,n=test,r=clientnonce";
    char *b64 = util_base64_encode_str(first, strlen(first));
    char *ch = NULL;
    assert_int_equal(auth_sasl_step(s, b64, &ch), AUTH_SASL_CONTINUE);
    free(b64);
    free(ch);
    const char *fin = "c=biws,r=clientnonceXXXX,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    b64 = util_base64_encode_str(fin, strlen(fin));
    assert_int_equal(auth_sasl_step(s, b64, &ch), AUTH_SASL_FAIL);
    free(b64);
    auth_sasl_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plain_seed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_seed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cram_md5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cram_md5_from_plain, setup_plain_only, teardown),
        cmocka_unit_test_setup_teardown(test_scram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_from_plain, setup_plain_only, teardown),
        cmocka_unit_test_setup_teardown(test_scram_malformed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
