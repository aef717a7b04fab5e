/*
 * test_password.c - password schemes against vectors produced by Dovecot's
 * `doveadm pw` (2.3.19), plus hash/verify round trips of every scheme we write, and
 * SCRAM's SASLprep (RFC 5802 §2.2).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth/auth.h"
#include "auth/auth_internal.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

struct vector {
    const char *password;
    const char *stored;
};

/* Generated with: doveadm pw -s <SCHEME> -p '<password>' */
static const struct vector dovecot_vectors[] = {
    {"p@ss wörd", "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$8BGxiL9Lj0T5V6+XN/"
                  "kDyw$0UD3ZvywldVRn7t85F6hz4Yr/jXTLxjkQRRjDQS7ah8"},
    {"p@ss wörd", "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$ims5WVfKb7vI5tUWyCgnFg$"
                  "uJNiVNu0EzNC8gsiQ9eo/cJKye69KWYT1clQgaYfFJI"},
    {"p@ss wörd", "{SHA512-CRYPT}$6$IVyKZkLKuPlNo5px$B3scKMHARkctGBv6MD5T9pgTUzz057IkvFtHBE.7Rx6A/"
                  "792zXeNMdFq4.C6kCycKQoJ.ba6j9s72mVJ2l5/K0"},
    {"p@ss wörd", "{SHA256-CRYPT}$5$AKCPNkIlc7nXx1be$FN0kKktm1XtBgiQcB./Bjn55vDtcIo4Jxr0Kl9yKU5B"},
    {"p@ss wörd", "{BLF-CRYPT}$2y$05$m.unHE8xxbym6E8wvyQtDeGzOzi6rz7b4uGCLX9I9BMf9APvzpcSa"},
    {"p@ss wörd", "{CRYPT}$2y$05$nJSOR40Jfm8ATdIQJOUNm.vt6QyYblsgRUkBmXIN3xga83c3r1vtq"},
    {"p@ss wörd", "{SCRAM-SHA-256}4096,CsNUUwunvc+ezchcVGBTIQ==,7wuK1oikj1iiDU/C3ajqNu30IaW/"
                  "IYwUcqpai/BVTXk=,/3iNL2mxyvmP5EexaSlWd63cyLY1WFShfagjjVIdJeI="},
    {"p@ss wörd", "{SCRAM-SHA-1}4096,dAbpfbgI/M//"
                  "F1d3YZuaTQ==,TvIPOoJdWpJvGJsq+wTsNFsjF2k=,SehgxyRBBFO477v9SgeXQYcMbQI="},
    {"p@ss wörd", "{CRAM-MD5}284ec1ad66aa93d4297f8a133c96144525e3ddf644b18a2f61e6020c82d5dffb"},
    {"p@ss wörd", "{PLAIN}p@ss wörd"},
    {"p@ss wörd", "{CLEAR}p@ss wörd"},
    {"p@ss wörd", "{PLAIN-MD5}6874f2c432cc731b4240fa0e06adbee3"},
    {"p@ss wörd", "{SHA256}m1F8Gnvov+5Yk63ittrazNliQIHbEEeWKaUD9B3pRJk="},
    {"p@ss wörd", "{SSHA256}iZOI1VHRyHoSu8POQQaWmRCr5Z1+jv5ID+FeQVe7lHrCO4rn"},
    {"p@ss wörd", "{SHA512}MjGdq0Bc2JGUP4VxyRTtnSY4CUmEF0pVG6pVcW2uxw0UPpEgkWNZCPKtq/fc7YZNKVma/"
                  "BzdlepG2DXX5ibRXw=="},
    {"p@ss wörd", "{SSHA512}318qE4I3YFuxKo598eH2yAiClksaavnTQAsf6MKrQPFTy+"
                  "qjrzzFVPd3t1LDH88493woZtMNEQkBawglNq+ekueiMrY="},
    {"p@ss wörd", "{MD5-CRYPT}$1$Vncw9xNp$siVcN4W1ysc7Scr7pJMEN/"},
    {"p@ss wörd", "{SHA1}iFXrzdzW6SkQ4l5UHiG/hH6VbME="},
    {"p@ss wörd", "{SSHA}jN+vNlJTu4d0oh7UImEWOWB6O9yQ1I0m"},
    {"alicepw", "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$/e07VmKRRdb2IVJKo/"
                "ddpQ$3Kbd3hFK8Kb+khiyrVYjCastRtnhxoXhvi9cHlKVDTk"},
    {"alicepw", "{SHA512-CRYPT}$6$GHkNaNqH.ssKQWQK$tLGtxuaMbhDFR/p0jp/"
                "4NVFCGodwP2jw54jS2EgzjDn0lWUepLib2aN59eznI0UZeuUQqXZYbC5YOwNGucFEV1"},
    {"alicepw", "{CRAM-MD5}cc555c87d574d850a51aab29bad1a3c9024cd41497fe266a16d9e042a961db5f"},
    {"alicepw",
     "{SCRAM-SHA-256}4096,Bh7+59wkSrwAoc0osSgu4Q==,/"
     "9F1hyz6zdX6Ss4hfXiEyb0pt27XaafpvlhnN6Ha0ro=,YY9t2WhHusUZhUFfjFzZFIeLcJS+fljQKqjFLjceyqQ="},
    {"alicepw", "{PLAIN-MD5}15da1f78ad7d474862865bab1aab4d51"},
    {"alicepw", "{PLAIN-MD5.B64}FdofeK19R0hihlurGqtNUQ=="},
    {"alicepw", "{SHA256.HEX}6624974ea2baffac164422e4490376c1c31313cd97724ae8ce62fb3f0a0370f2"},
    {"alicepw", "{SSHA256}shpN/nQzUGnE7Hz+T6EpU9AIcKw4a8udsEqE2IxDmb+uhW9i"},
    {"alicepw", "{SSHA512}MTvVfhgq7Nv64unsfrOoxw6OOAoK8VpGMk3SnuiTJ6FlVo3+"
                "uYkIw11qUsVgO7UGFRbUgDKgF1M+jF0UbY+SJhTPxTA="},
    {"alicepw", "{SHA256-CRYPT}$5$Le344mvTrZBcqzLk$JlOewhVW0W6NjWauFrD5P5S8qfKvI4F1JCV3SbRVYFA"},
    {"alicepw", "{BLF-CRYPT}$2y$05$zK6A0CgK3DfnPCzw51iULO4a81cUBV5BU1glRcZ3w.ZMViEFnlnQG"},
    {"alicepw", "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$1sXuR4b9+aVCuw8qLk4gCg$s//0VQ/"
                "tS0xP1E1rH5cNOTe6DqZurKbCqd+BH/UdVpU"},
    {"alicepw", "{SCRAM-SHA-1}4096,iEpoVnaXrGGOGiFZSX2mPQ==,d60xWSlKt+nScJ4tUdex+B4Q1+0=,"
                "KKZqC3SWhd3tuOLXRzUKeantvSk="},
    /* A key longer than the HMAC block is hashed first (RFC 2104). */
    {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxx",
     "{CRAM-MD5}52197db948d0932512a61b183e7d05b04e94d60a3bb0d00f92d3df52a5d275ca"},
};

static void test_dovecot_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof dovecot_vectors / sizeof dovecot_vectors[0]; i++) {
        const struct vector *v = &dovecot_vectors[i];
        if (auth_password_verify(v->stored, v->password) != 1)
            fail_msg("vector %zu (%s) did not verify", i, v->stored);
        if (auth_password_verify(v->stored, "wrong password") != 0)
            fail_msg("vector %zu (%s) accepted a wrong password", i, v->stored);
    }
}

static const char *const written_schemes[] = {
    "ARGON2ID",      "ARGON2I",     "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT",  "CRYPT",
    "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5",     "PLAIN",        "CLEAR",      "PLAIN-MD5",
    "SHA256",        "SSHA256",     "SHA512",       "SSHA512",      "sha256.hex", "MD5-CRYPT",
};

static void test_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof written_schemes / sizeof written_schemes[0]; i++) {
        char *hash = NULL, *err = NULL;
        if (auth_password_hash(written_schemes[i], "s3cret pw", NULL, &hash, &err) != 0)
            fail_msg("hash %s failed: %s", written_schemes[i], err ? err : "?");
        assert_int_equal(hash[0], '{');
        assert_int_equal(auth_password_verify(hash, "s3cret pw"), 1);
        assert_int_equal(auth_password_verify(hash, "s3cret pW"), 0);
        assert_int_equal(auth_password_verify(hash, ""), 0);
        free(hash);
    }
}

static void test_scheme_prefix_upper(void **state)
{
    (void)state;
    char *hash = NULL, *err = NULL;
    assert_int_equal(auth_password_hash("sha512-crypt", "x", NULL, &hash, &err), 0);
    assert_true(strncmp(hash, "{SHA512-CRYPT}$6$", 17) == 0);
    free(hash);
    assert_int_equal(auth_password_hash("ARGON2ID", "x", NULL, &hash, &err), 0);
    assert_true(strncmp(hash, "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$", 41) == 0);
    free(hash);
    assert_int_equal(auth_password_hash("SCRAM-SHA-256", "x", NULL, &hash, &err), 0);
    assert_true(strncmp(hash, "{SCRAM-SHA-256}4096,", 20) == 0);
    free(hash);
}

/* auth.argon2_rounds/_memory: a new hash carries the configured cost, verifies, and an
 * ARGON2I hash gets the same; zero fields keep the scheme's own (Dovecot's). */
static void test_argon2_cost(void **state)
{
    (void)state;
    char *hash = NULL, *err = NULL;
    struct auth_hash_cost cost = {.argon2_rounds = 1, .argon2_memory_kib = 1024};
    assert_int_equal(auth_password_hash("ARGON2ID", "pw", &cost, &hash, &err), 0);
    assert_true(strncmp(hash, "{ARGON2ID}$argon2id$v=19$m=1024,t=1,p=1$", 40) == 0);
    assert_int_equal(auth_password_verify(hash, "pw"), 1);
    assert_int_equal(auth_password_verify(hash, "px"), 0);
    free(hash);
    assert_int_equal(auth_password_hash("ARGON2I", "pw", &cost, &hash, &err), 0);
    assert_true(strncmp(hash, "{ARGON2I}$argon2i$v=19$m=1024,t=1,p=1$", 38) == 0);
    assert_int_equal(auth_password_verify(hash, "pw"), 1);
    free(hash);
    struct auth_hash_cost rounds_only = {.argon2_rounds = 2};
    assert_int_equal(auth_password_hash("ARGON2I", "pw", &rounds_only, &hash, &err), 0);
    assert_true(strncmp(hash, "{ARGON2I}$argon2i$v=19$m=32768,t=2,p=1$", 39) == 0);
    free(hash);
    /* other schemes ignore it */
    assert_int_equal(auth_password_hash("SCRAM-SHA-256", "pw", &cost, &hash, &err), 0);
    assert_true(strncmp(hash, "{SCRAM-SHA-256}4096,", 20) == 0);
    free(hash);
}

static void test_malformed(void **state)
{
    (void)state;
    char *hash = NULL, *err = NULL;
    assert_int_equal(auth_password_hash("NOPE", "x", NULL, &hash, &err), -1);
    assert_non_null(err);
    free(err);
    assert_int_equal(auth_password_verify("{NOPE}abc", "x"), -1);
    assert_int_equal(auth_password_verify("{SHA256", "x"), -1);
    assert_int_equal(auth_password_verify("plainnoscheme", "x"), -1);
    assert_int_equal(auth_password_verify("{CRAM-MD5}abcd", "x"), -1);
    assert_int_equal(auth_password_verify("{SCRAM-SHA-256}4096,abc", "x"), -1);
    assert_int_equal(auth_password_verify("{SCRAM-SHA-256}0,AAAA,AAAA,AAAA", "x"), -1);
    assert_int_equal(auth_password_verify("{SHA256}!!!", "x"), -1);
    assert_int_equal(auth_password_verify("{ARGON2ID}$argon2i$v=19$garbage", "x"), -1);
    assert_int_equal(auth_password_verify("{ARGON2ID}$argon2id$v=19$garbage", "x"), -1);
    assert_int_equal(auth_password_verify("{SHA512-CRYPT}$6$", "x") == 1, 0);
    /* A bare crypt(3) string is accepted as CRYPT. */
    assert_int_equal(
        auth_password_verify("$5$AKCPNkIlc7nXx1be$FN0kKktm1XtBgiQcB./Bjn55vDtcIo4Jxr0Kl9yKU5B",
                             "p@ss wörd"),
        1);
}

static void test_cram_context(void **state)
{
    (void)state;
    /* RFC 2195 §2 example: tim / tanstaaftanstaaf. */
    const char *challenge = "<1896.697170952@postoffice.reston.mci.net>";
    unsigned char ctx[32], mac[16];
    auth_cram_md5_context("tanstaaftanstaaf", 16, ctx);
    auth_cram_md5_from_context(ctx, challenge, strlen(challenge), mac);
    static const unsigned char want[16] = {0xb9, 0x13, 0xa6, 0x02, 0xc7, 0xed, 0xa7, 0xa4,
                                           0x95, 0xb4, 0xe6, 0xe7, 0x33, 0x4d, 0x38, 0x90};
    assert_memory_equal(mac, want, 16);
}

/* ---- SCRAM and SASLprep (RFC 5802 §2.2, RFC 4013) ------------------------------------ */

/* The RFC 5802 §3 StoredKey of exactly these password bytes, computed here with OpenSSL,
 * independent of password.c. */
static void scram_stored_key_raw(const char *password, const struct auth_scram_keys *k,
                                 unsigned char stored_r[32])
{
    unsigned char salted[32], client_key[32];
    unsigned int n = 0;
    assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), k->salt, (int)k->salt_len,
                                       (int)k->iter, EVP_sha256(), 32, salted),
                     1);
    assert_non_null(
        HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, client_key, &n));
    assert_int_equal(EVP_Digest(client_key, 32, stored_r, &n, EVP_sha256(), NULL), 1);
}

/* Passwords SASLprep leaves alone, or refuses, make the keys of their own bytes: ASCII
 * (printable, or with a control character SASLprep prohibits), already-prepared UTF-8,
 * and bytes that are not UTF-8. */
static void test_scram_keys_of_unprepared_bytes(void **state)
{
    (void)state;
    static const char *const same[] = {"pencil", "p@ss wörd", "with\ttab",
                                       "\x7f",   "\xff\xfe",  "\xc3("};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        struct auth_scram_keys k = {.iter = 4096, .salt_len = 4};
        memcpy(k.salt, "salt", 4);
        unsigned char want[32];
        scram_stored_key_raw(same[i], &k, want);
        assert_true(auth_scram_derive(same[i], 32, &k));
        if (memcmp(k.stored_key, want, 32) != 0)
            fail_msg("password %zu: keys are not those of its own bytes", i);
    }
}

/* Passwords SASLprep changes make the keys of the prepared form. */
static void test_scram_saslprep(void **state)
{
    (void)state;
    static const struct {
        const char *password, *prepared;
    } cases[] = {
        {"I\xc2\xadX", "IX"},               /* RFC 4013 §3 #1: soft hyphen mapped to nothing */
        {"\xe2\x85\xa8", "IX"},             /* #4: U+2168 ROMAN NUMERAL NINE, NFKC */
        {"\xc2\xaa", "a"},                  /* #3: U+00AA, NFKC */
        {"a\xc2\xa0\x62", "a b"},           /* U+00A0, a non-ASCII space: SPACE */
        {"user\xe2\x80\x8bpw", "user pw"},  /* U+200B is in C.1.2 too: SPACE */
        {"p\x61\xcc\x88ss", "p\xc3\xa4ss"}, /* a + combining diaeresis: NFKC composes */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct auth_scram_keys k = {.iter = 4096, .salt_len = 4};
        memcpy(k.salt, "salt", 4);
        unsigned char want[32];
        scram_stored_key_raw(cases[i].prepared, &k, want);
        assert_true(auth_scram_derive(cases[i].password, 32, &k));
        if (memcmp(k.stored_key, want, 32) != 0)
            fail_msg("case %zu: keys are not those of the SASLprep'd password", i);

        /* What we store verifies with either spelling, and not with another password. */
        char *hash = NULL, *err = NULL;
        assert_int_equal(auth_password_hash("SCRAM-SHA-256", cases[i].password, NULL, &hash, &err), 0);
        assert_int_equal(auth_password_verify(hash, cases[i].password), 1);
        assert_int_equal(auth_password_verify(hash, cases[i].prepared), 1);
        assert_int_equal(auth_password_verify(hash, "IY"), 0);
        free(hash);
    }
}

/* `doveadm pw` hashes SCRAM passwords without SASLprep: its hashes of passwords SASLprep
 * changes must still verify with the password as typed (doveadm pw 2.3.19 output). */
/* The forms postfixadmin 3.3 writes into mailbox.password ($CONF['encrypt']): md5crypt
 * (its default) and php_crypt without a prefix, 'system' DES crypt, 'sha512.b64'
 * (doveadm's SHA512-CRYPT.B64 encoding: the crypt string in base64), 'md5' hex. A value
 * without {SCHEME} is read by the SQL directory as "{<default_pass_scheme>}value". */
static void test_postfixadmin_forms(void **state)
{
    (void)state;
    static const struct vector forms[] = {
        /* openssl passwd -1 -salt Xy7.aB12 (postfixadmin's own md5crypt, same format) */
        {"p@ss wörd", "$1$Xy7.aB12$/f4aio1EjKdhMCvk3L1NJ0"},
        {"p@ss wörd", "{CRYPT}$1$Xy7.aB12$/f4aio1EjKdhMCvk3L1NJ0"},
        {"p@ss wörd", "{MD5-CRYPT}$1$6FdZqGJ2$qFTpDRRXVcxlMq6H2JsZT1"},
        /* perl crypt(pw, "ab"): DES, 'system' (only 8 characters count) */
        {"p@ss wörd", "{CRYPT}abJ4ze/E06ywM"},
        {"p@ss wö", "{crypt}abJ4ze/E06ywM"}, /* courier authlib's lower-case marker */
        /* doveadm pw -s SHA512-CRYPT.B64 */
        {"p@ss wörd",
         "{SHA512-CRYPT.B64}JDYkSW8xZ1lRemVXU1dwemR6UyRYUDBpNU4yNTQ2SmwyVTVvblNBdkNBTEk1Q05zR1hXc"
         "DRrV1NFaTI1c3pSV2JUaVVPLmhOYzVWWmtjWVhRYWpmZVI3ZlNBamJucnEyb0pKc1BTek9lLg=="},
        /* md5 hex ('md5'), read with default_pass_scheme = PLAIN-MD5 */
        {"pw", "{PLAIN-MD5}8fe4c11451281c094a6578e6ddbf5eed"},
        {"p@ss wörd", "{SSHA256}HW2NATzPfstlqfJ60Hja0b9phASJEmeCmwcIkUa3Nt7OSHEW"},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        if (auth_password_verify(forms[i].stored, forms[i].password) != 1)
            fail_msg("%s does not verify", forms[i].stored);
        if (auth_password_verify(forms[i].stored, "Wrong-password") != 0)
            fail_msg("%s verifies a wrong password", forms[i].stored);
    }
    /* a .B64 value that is not base64 of a crypt string is malformed, not a mismatch */
    assert_int_equal(auth_password_verify("{SHA512-CRYPT.B64}!!!!", "x"), -1);
    assert_int_equal(auth_password_verify("{BLF-CRYPT.HEX}00", "x"), -1);
    /* we write .B64 crypt too, and read it back */
    char *hash = NULL, *err = NULL;
    assert_int_equal(auth_password_hash("SHA512-CRYPT.B64", "pw", NULL, &hash, &err), 0);
    assert_memory_equal(hash, "{SHA512-CRYPT.B64}JDYk", 22); /* base64("$6$") */
    assert_int_equal(auth_password_verify(hash, "pw"), 1);
    free(hash);
    /* which scheme a stored value is in (tern user show, the SQL directory) */
    char scheme[64];
    assert_true(auth_password_scheme_of("{sha512-crypt.b64}x", scheme, sizeof scheme));
    assert_string_equal(scheme, "SHA512-CRYPT.B64");
    assert_false(auth_password_scheme_of("$1$abc$def", scheme, sizeof scheme));
    assert_false(auth_password_scheme_of("{NOPE}x", scheme, sizeof scheme));
    assert_true(auth_password_scheme_is_known("PLAIN-MD5.HEX"));
    assert_true(auth_password_scheme_is_known("crypt"));
    assert_false(auth_password_scheme_is_known("ARGON2ID.HEX"));
    assert_false(auth_password_scheme_is_known(""));
}

static void test_scram_doveadm_unprepared(void **state)
{
    (void)state;
    const char *soft_hyphen = "{SCRAM-SHA-256}4096,CE+NwdijymSN8OOM3lZxkg==,"
                              "3gFpHjLDFoAoTIQgifsxGsCBkelELPE9Q7Y2jKgIAmo=,"
                              "Zkm6Z80Xw1G/VXjLSWx7rvYuGFf+U4eD8f1IbCbMLqE=";
    assert_int_equal(auth_password_verify(soft_hyphen, "I\xc2\xadX"), 1);
    assert_int_equal(auth_password_verify(soft_hyphen, "I\xc2\xadY"), 0);
    /* made from other bytes than "IX": a client that SASLpreps cannot log in with it */
    assert_int_equal(auth_password_verify(soft_hyphen, "IX"), 0);
    const char *nine = "{SCRAM-SHA-1}4096,fbvECyr4W2tIj5J4Yg7WhA==,+uywWBlnKYUh/mgZrtTkU7BWf2w=,"
                       "fQlok3kmwSKdSl/h/a+JkakTV0E=";
    assert_int_equal(auth_password_verify(nine, "\xe2\x85\xa8"), 1);
    assert_int_equal(auth_password_verify(nine, "IX"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dovecot_vectors),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_scheme_prefix_upper),
        cmocka_unit_test(test_argon2_cost),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_cram_context),
        cmocka_unit_test(test_scram_keys_of_unprepared_bytes),
        cmocka_unit_test(test_scram_saslprep),
        cmocka_unit_test(test_scram_doveadm_unprepared),
        cmocka_unit_test(test_postfixadmin_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
