/*
 * test_mailauth.c - unit tests of the mailauth module's DKIM part: canonicalization
 * (RFC 6376 §3.4.5's example, chunk boundaries, empty bodies), tag lists, the
 * DKIM-Signature and key record parsers, RFC 8463 Appendix A (Ed25519 and RSA signatures
 * of one message), our own signatures round-tripping, altered messages failing, the RSA
 * key floor, DNS failures giving temperror, the From domain, and the key store (keygen,
 * rotation, retire).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "core/util.h"
#include "mailauth/mailauth-private.h"
#include "mailauth/mailauth.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_mailauth_util.h"
#include "test_tmpdir.h"

static int setup(void **state)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tern-test-mailauth-XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown(void **state)
{
    rm_rf(tmp_root, 0);
    return 0;
}

static void collect(void *arg, const char *data, size_t len)
{
    buf_append(arg, data, len);
}

/* Canonical body of text, fed in pieces of `piece` octets (0 = at once). */
static char *body_canon(const char *text, bool is_relaxed, size_t piece)
{
    struct buf out;
    buf_init(&out, 0);
    struct mailauth_body_canon c;
    mailauth_body_canon_init(&c, is_relaxed, false, 0, collect, &out);
    size_t len = strlen(text);
    if (piece == 0)
        piece = len ? len : 1;
    for (size_t i = 0; i < len; i += piece)
        mailauth_body_canon_feed(&c, text + i, len - i < piece ? len - i : piece);
    mailauth_body_canon_finish(&c);
    buf_append(&out, "", 0);
    char *s = buf_steal(&out);
    return s ? s : strdup("");
}

/* RFC 6376 §3.4.5: the example of both canonicalizations. */
static void test_canon_rfc6376_example(void **state)
{
    const char *body = " C \r\nD \t E\r\n\r\n\r\n";
    for (size_t piece = 0; piece < 8; piece++) {
        char *r = body_canon(body, true, piece);
        assert_string_equal(r, " C\r\nD E\r\n");
        free(r);
        char *s = body_canon(body, false, piece);
        assert_string_equal(s, " C \r\nD \t E\r\n");
        free(s);
    }
    struct buf h;
    buf_init(&h, 0);
    assert_true(mailauth_canon_header("A: X\r\n", 6, true, true, &h));
    const char *b = "B : Y\t\r\n\tZ  \r\n";
    assert_true(mailauth_canon_header(b, strlen(b), true, true, &h));
    assert_string_equal(h.data, "a:X\r\nb:Y Z\r\n");
    buf_reset(&h);
    assert_true(mailauth_canon_header(b, strlen(b), false, true, &h));
    assert_string_equal(h.data, b);
    buf_free(&h);
}

static void test_canon_edges(void **state)
{
    /* §3.4.3: an empty body is one CRLF in simple, nothing in relaxed */
    char *s = body_canon("", false, 0);
    assert_string_equal(s, "\r\n");
    free(s);
    s = body_canon("", true, 0);
    assert_string_equal(s, "");
    free(s);
    s = body_canon("\r\n\r\n", true, 0);
    assert_string_equal(s, "");
    free(s);
    /* a missing final CRLF is added; a bare CR is text; CRLF split over chunks */
    s = body_canon("abc", true, 0);
    assert_string_equal(s, "abc\r\n");
    free(s);
    for (size_t piece = 1; piece < 5; piece++) {
        s = body_canon("a\rb  \r\n \r\n\r\nc\t\r\n", true, piece);
        assert_string_equal(s, "a\rb\r\n\r\n\r\nc\r\n");
        free(s);
    }
    /* l= keeps only the first octets */
    struct buf out;
    buf_init(&out, 0);
    struct mailauth_body_canon c;
    mailauth_body_canon_init(&c, false, true, 4, collect, &out);
    mailauth_body_canon_feed(&c, "hello\r\nworld\r\n", 14);
    mailauth_body_canon_finish(&c);
    assert_int_equal(out.len, 4);
    assert_int_equal(c.total, 14);
    buf_free(&out);
}

static void test_tags(void **state)
{
    struct mailauth_tag t[MAILAUTH_TAGS_MAX];
    size_t n;
    const char *ok = " v=1; a = rsa-sha256 ;\r\n\tb=ab\r\n cd; ";
    assert_int_equal(mailauth_tags_parse(ok, strlen(ok), t, &n), 0);
    assert_int_equal(n, 3);
    const struct mailauth_tag *a = mailauth_tags_find(t, n, "a");
    assert_non_null(a);
    assert_int_equal(a->value_len, 10);
    assert_memory_equal(a->value, "rsa-sha256", 10);
    assert_int_equal(mailauth_tags_parse("a=1; a=2", 8, t, &n), -1); /* duplicate */
    assert_int_equal(mailauth_tags_parse("novalue", 7, t, &n), -1);
    assert_int_equal(mailauth_tags_parse("1a=x", 4, t, &n), -1);
    assert_int_equal(mailauth_tags_parse("=x", 2, t, &n), -1);
}

static const char RFC8463_MESSAGE[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    " date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

static const struct table_row RFC8463_DNS[] = {
    {"brisbane._domainkey.football.example.com", MAILAUTH_DNS_TXT,
     "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
    {"test._domainkey.football.example.com", MAILAUTH_DNS_TXT,
     "v=DKIM1; k=rsa; "
     "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/"
     "J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+"
     "2kryOTIKT+l/K4w3QIDAQAB"},
};

static size_t verify_text(const char *msg, size_t len, const struct table_row *rows, size_t n_rows,
                          struct mailauth_dkim_result *r)
{
    struct table_dns t = {.rows = rows, .n = n_rows};
    struct mailauth_dns dns = table_dns(&t);
    struct mailauth_message m = {.data = msg, .len = len, .fd = -1};
    size_t n = 0;
    assert_int_equal(mailauth_dkim_verify(&m, &dns, 1600000000, r, &n), 0);
    return n;
}

/* RFC 8463 Appendix A: one message, an Ed25519 and an RSA signature, both pass. */
static void test_rfc8463_example(void **state)
{
    struct mailauth_dkim_result r[MAILAUTH_DKIM_SIGS_MAX];
    size_t n = verify_text(RFC8463_MESSAGE, sizeof RFC8463_MESSAGE - 1, RFC8463_DNS, 2, r);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].result, MAILAUTH_PASS);
    assert_string_equal(r[0].algorithm, "ed25519-sha256");
    assert_string_equal(r[0].selector, "brisbane");
    assert_int_equal(r[1].result, MAILAUTH_PASS);
    assert_string_equal(r[1].algorithm, "rsa-sha256");
    assert_int_equal(r[1].key_bits, 1024);
    assert_string_equal(r[0].domain, "football.example.com");

    /* one changed body octet: both fail on the body hash */
    char *alt = strdup(RFC8463_MESSAGE);
    char *p = strstr(alt, "hungry");
    p[0] = 'H';
    n = verify_text(alt, strlen(alt), RFC8463_DNS, 2, r);
    assert_int_equal(r[0].result, MAILAUTH_FAIL);
    assert_int_equal(r[1].result, MAILAUTH_FAIL);
    assert_non_null(strstr(r[0].reason, "body hash"));
    free(alt);
    /* a changed signed header: the signature itself fails */
    alt = strdup(RFC8463_MESSAGE);
    p = strstr(alt, "dinner");
    p[0] = 'D';
    n = verify_text(alt, strlen(alt), RFC8463_DNS, 2, r);
    assert_int_equal(r[0].result, MAILAUTH_FAIL);
    assert_int_equal(r[1].result, MAILAUTH_FAIL);
    assert_non_null(strstr(r[1].reason, "signature"));
    free(alt);
    /* an added second From (oversigned in h=): fails */
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "From: Mallory <m@evil.example>\r\n");
    buf_append_str(&b, RFC8463_MESSAGE);
    n = verify_text(b.data, b.len, RFC8463_DNS, 2, r);
    assert_int_equal(r[0].result, MAILAUTH_FAIL);
    buf_free(&b);
    /* relaxed: refolding a header and blanks at line ends do not matter */
    alt = strdup(RFC8463_MESSAGE);
    p = strstr(alt, "Subject: Is dinner");
    memcpy(p, "subject:Is  dinner", 18);
    n = verify_text(alt, strlen(alt), RFC8463_DNS, 2, r);
    (void)n;
    assert_int_equal(r[0].result, MAILAUTH_PASS);
    free(alt);
}

static void test_dns_outcomes(void **state)
{
    struct mailauth_dkim_result r[MAILAUTH_DKIM_SIGS_MAX];
    /* no key at all: permerror; SERVFAIL/timeout: temperror, never a pass */
    size_t n = verify_text(RFC8463_MESSAGE, sizeof RFC8463_MESSAGE - 1, NULL, 0, r);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].result, MAILAUTH_PERMERROR);
    static const struct table_row fail[] = {
        {"brisbane._domainkey.football.example.com", MAILAUTH_DNS_TXT, NULL},
        {"test._domainkey.football.example.com", MAILAUTH_DNS_TXT, "v=DKIM1; k=rsa; p="},
    };
    n = verify_text(RFC8463_MESSAGE, sizeof RFC8463_MESSAGE - 1, fail, 2, r);
    assert_int_equal(r[0].result, MAILAUTH_TEMPERROR);
    assert_int_equal(r[1].result, MAILAUTH_PERMERROR); /* revoked */
    assert_non_null(strstr(r[1].reason, "revoked"));
    /* a key of the wrong type */
    static const struct table_row wrong[] = {
        {"brisbane._domainkey.football.example.com", MAILAUTH_DNS_TXT,
         "v=DKIM1; k=rsa; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
    };
    n = verify_text(RFC8463_MESSAGE, sizeof RFC8463_MESSAGE - 1, wrong, 1, r);
    assert_int_equal(r[0].result, MAILAUTH_PERMERROR);
    /* a message without signatures */
    const char *plain = "From: a@b.example\r\n\r\nhi\r\n";
    n = verify_text(plain, strlen(plain), NULL, 0, r);
    assert_int_equal(n, 0);
}

static void test_sig_parse(void **state)
{
    struct mailauth_dkim_sig sig;
    const char *err;
    const char *good = "v=1; a=rsa-sha256; d=example.org; s=s1; h=From:To; bh=YWJj; b=YWJj; "
                       "l=10; i=user@sub.example.org; t=5; x=10";
    assert_int_equal(mailauth_dkim_sig_parse(good, strlen(good), &sig, &err), 0);
    assert_true(sig.has_limit);
    assert_int_equal(sig.limit, 10);
    assert_false(sig.is_header_relaxed); /* c= absent: simple/simple */
    static const char *const bad[] = {
        "v=2; a=rsa-sha256; d=example.org; s=s1; h=From; bh=YWJj; b=YWJj",
        "v=1; a=rsa-sha256; d=example.org; s=s1; h=To; bh=YWJj; b=YWJj",   /* no From */
        "v=1; a=rsa-md5; d=example.org; s=s1; h=From; bh=YWJj; b=YWJj",
        "v=1; a=rsa-sha256; d=example.org; s=s1; h=From; bh=YWJj",         /* no b= */
        "v=1; a=rsa-sha256; d=example.org; s=s1; h=From; bh=YWJj; b=YWJj; i=u@other.example",
        "v=1; a=rsa-sha256; d=example.org; s=s1; h=From; bh=YWJj; b=YWJj; c=odd/relaxed",
        "v=1; a=rsa-sha256; d=example.org; s=s1; h=From; bh=YWJj; b=YWJj; l=x",
        "v=1; a=rsa-sha256; d=example.org; s=s1; h=From; bh=YWJj; b=Y!Jj",
        "v=1; a=rsa-sha256; d=example.org; s=s1; h=From; bh=YWJj; b=YWJj; t=10; x=5",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mailauth_dkim_sig_parse(bad[i], strlen(bad[i]), &sig, &err), -1);

    struct mailauth_dkim_key key;
    assert_int_equal(mailauth_dkim_key_parse("p=YWJj; t=y:s", 13, &key, &err), 0);
    assert_true(key.is_rsa && key.is_testing && key.is_strict);
    assert_int_equal(mailauth_dkim_key_parse("k=dsa; p=YWJj", 13, &key, &err), -1);
    assert_int_equal(mailauth_dkim_key_parse("p=YWJj; v=DKIM1", 15, &key, &err), -1);
    assert_int_equal(mailauth_dkim_key_parse("v=DKIM1; s=other; p=YWJj", 25, &key, &err), -1);
}

/* Generate a key into the test store; it must work. */
static void keygen_ok(const char *domain, const char *selector, enum mailauth_dkim_alg alg)
{
    char *err = NULL;
    assert_int_equal(mailauth_keys_generate(tmp_root, domain, selector, alg, NULL, &err), 0);
}

/* The published records of example.org's keys in the store, as table DNS rows. */
struct key_zone {
    struct mailauth_key_info *list;
    size_t nl, n;
    struct table_row rows[8];
    char names[8][128];
};

static void key_zone_load(struct key_zone *z)
{
    char *err = NULL;
    assert_int_equal(mailauth_keys_list(tmp_root, "example.org", &z->list, &z->nl, &err), 0);
    z->n = z->nl < 8 ? z->nl : 8;
    for (size_t i = 0; i < z->n; i++) {
        snprintf(z->names[i], sizeof z->names[i], "%s._domainkey.example.org", z->list[i].selector);
        z->rows[i] = (struct table_row){z->names[i], MAILAUTH_DNS_TXT, z->list[i].txt};
    }
}

/* Sign with the keys of the store, verify with their published records. */
static void sign_and_verify(const char *msg, struct mailauth_dkim_result *r, size_t *n_r,
                            const char *alter_from, const char *alter_to)
{
    struct mailauth_signing_key keys[2];
    size_t nk = 0;
    char *err = NULL;
    assert_int_equal(mailauth_keys_load_signing(tmp_root, "example.org", keys, &nk, &err), 0);
    assert_int_equal(nk, 2);
    struct buf out;
    buf_init(&out, 0);
    const char *serr = NULL;
    struct mailauth_message m = {.data = msg, .len = strlen(msg), .fd = -1};
    assert_int_equal(mailauth_dkim_sign(&m, keys, nk, 1700000000, &out, &serr), 0);
    buf_append_str(&out, msg);
    if (alter_from) {
        char *p = strstr(out.data, alter_from);
        assert_non_null(p);
        memcpy(p, alter_to, strlen(alter_to));
    }
    struct key_zone z;
    key_zone_load(&z);
    *n_r = verify_text(out.data, out.len, z.rows, z.n, r);
    mailauth_keys_list_free(z.list, z.nl);
    for (size_t i = 0; i < nk; i++)
        mailauth_signing_key_free(&keys[i]);
    buf_free(&out);
}

static void test_sign_roundtrip(void **state)
{
    char *err = NULL;
    struct mailauth_key_info info;
    assert_int_equal(mailauth_keys_generate(tmp_root, "example.org", "s1-rsa",
                                            MAILAUTH_DKIM_RSA_SHA256, &info, &err),
                     0);
    assert_int_equal(info.bits, 2048);
    assert_non_null(strstr(info.txt, "k=rsa; p=MIIBIjAN"));
    free(info.txt);
    keygen_ok("example.org", "s1-ed", MAILAUTH_DKIM_ED25519_SHA256);
    /* the key file is private */
    char path[512];
    snprintf(path, sizeof path, "%s/dkim/example.org/s1-rsa.pem", tmp_root);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* an existing selector is never overwritten */
    assert_int_equal(mailauth_keys_generate(tmp_root, "example.org", "s1-rsa",
                                            MAILAUTH_DKIM_RSA_SHA256, NULL, &err),
                     -1);
    free(err);
    err = NULL;

    const char *msg = "From: Alice <alice@example.org>\r\n"
                      "To: bob@example.net\r\n"
                      "Subject: hello   there\r\n"
                      "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                      "Message-ID: <1@example.org>\r\n"
                      "\r\n"
                      "Body line  \r\n\r\n\r\n";
    struct mailauth_dkim_result r[MAILAUTH_DKIM_SIGS_MAX];
    size_t n;
    sign_and_verify(msg, r, &n, NULL, NULL);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].result, MAILAUTH_PASS);
    assert_int_equal(r[1].result, MAILAUTH_PASS);
    assert_string_equal(r[0].algorithm, "rsa-sha256");
    assert_string_equal(r[1].algorithm, "ed25519-sha256");
    sign_and_verify(msg, r, &n, "Body line", "Body LINE");
    assert_int_equal(r[0].result, MAILAUTH_FAIL);
    assert_int_equal(r[1].result, MAILAUTH_FAIL);
    sign_and_verify(msg, r, &n, "bob@example.net", "eve@example.net");
    assert_int_equal(r[0].result, MAILAUTH_FAIL);
    assert_int_equal(r[1].result, MAILAUTH_FAIL);

    /* a message without From is not signed */
    struct mailauth_signing_key keys[2];
    size_t nk;
    assert_int_equal(mailauth_keys_load_signing(tmp_root, "example.org", keys, &nk, &err), 0);
    struct buf out;
    buf_init(&out, 0);
    const char *serr = NULL;
    struct mailauth_message m = {.data = "To: x@y\r\n\r\nhi\r\n", .len = 15, .fd = -1};
    assert_int_equal(mailauth_dkim_sign(&m, keys, nk, 1, &out, &serr), -1);
    for (size_t i = 0; i < nk; i++)
        mailauth_signing_key_free(&keys[i]);
    buf_free(&out);
}

/* A message in a file, with prefix lines, signs and verifies like one in memory. */
static void test_sign_file_and_prefix(void **state)
{
    char *err = NULL;
    keygen_ok("example.org", "f-rsa", MAILAUTH_DKIM_RSA_SHA256);
    keygen_ok("example.org", "f-ed", MAILAUTH_DKIM_ED25519_SHA256);
    char path[512];
    snprintf(path, sizeof path, "%s/msg", tmp_root);
    FILE *f = fopen(path, "w+");
    assert_non_null(f);
    fputs("From: a@example.org\r\nSubject: big\r\n\r\n", f);
    for (int i = 0; i < 20000; i++)
        fputs("line of text in a large message   \r\n", f);
    fflush(f);
    long size = ftell(f);
    struct mailauth_signing_key keys[2];
    size_t nk;
    assert_int_equal(mailauth_keys_load_signing(tmp_root, "example.org", keys, &nk, &err), 0);
    struct buf out;
    buf_init(&out, 0);
    const char *serr = NULL;
    const char *prefix = "Message-ID: <p@example.org>\r\n";
    struct mailauth_message m = {.prefix = prefix, .prefix_len = strlen(prefix), .fd = fileno(f),
                                 .fd_size = (uint64_t)size};
    assert_int_equal(mailauth_dkim_sign(&m, keys, nk, 1, &out, &serr), 0);
    assert_non_null(strstr(out.data, "Message-ID:Message-ID"));
    /* verify: signatures + prefix as the new prefix, the file as the message */
    buf_append_str(&out, prefix);
    struct key_zone z;
    key_zone_load(&z);
    struct table_dns t = {.rows = z.rows, .n = z.n};
    struct mailauth_dns dns = table_dns(&t);
    struct mailauth_message v = {.prefix = out.data, .prefix_len = out.len, .fd = fileno(f),
                                 .fd_size = (uint64_t)size};
    struct mailauth_dkim_result r[MAILAUTH_DKIM_SIGS_MAX];
    size_t n;
    assert_int_equal(mailauth_dkim_verify(&v, &dns, 2, r, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(r[0].result, MAILAUTH_PASS);
    assert_int_equal(r[1].result, MAILAUTH_PASS);
    mailauth_keys_list_free(z.list, z.nl);
    for (size_t i = 0; i < nk; i++)
        mailauth_signing_key_free(&keys[i]);
    buf_free(&out);
    fclose(f);
}

/* RFC 8301 §3.2: RSA keys under 1024 bits are not valid. */
static void test_rsa_floor(void **state)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)768);
    assert_non_null(pk);
    struct mailauth_signing_key key = {.domain = "weak.example", .selector = "w",
                                       .alg = MAILAUTH_DKIM_RSA_SHA256, .pkey = pk};
    const char *msg = "From: a@weak.example\r\n\r\nhi\r\n";
    struct mailauth_message m = {.data = msg, .len = strlen(msg), .fd = -1};
    struct buf out;
    buf_init(&out, 0);
    const char *serr;
    assert_int_equal(mailauth_dkim_sign(&m, &key, 1, 1, &out, &serr), 0);
    buf_append_str(&out, msg);
    unsigned char *der = NULL;
    int dl = i2d_PUBKEY(pk, &der);
    struct buf txt;
    buf_init(&txt, 0);
    buf_append_str(&txt, "v=DKIM1; p=");
    util_base64_encode(der, (size_t)dl, &txt);
    OPENSSL_free(der);
    struct table_row rows[] = {{"w._domainkey.weak.example", MAILAUTH_DNS_TXT, txt.data}};
    struct mailauth_dkim_result r[MAILAUTH_DKIM_SIGS_MAX];
    size_t n = verify_text(out.data, out.len, rows, 1, r);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].result, MAILAUTH_PERMERROR);
    assert_non_null(strstr(r[0].reason, "1024"));
    mailauth_signing_key_free(&key);
    buf_free(&out);
    buf_free(&txt);
}

static void test_rotation(void **state)
{
    char *err = NULL;
    keygen_ok("rot.example", "old", MAILAUTH_DKIM_RSA_SHA256);
    /* make "new" clearly younger */
    keygen_ok("rot.example", "new", MAILAUTH_DKIM_RSA_SHA256);
    char path[512];
    snprintf(path, sizeof path, "%s/dkim/rot.example/old.pem", tmp_root);
    /* rewrite old's created= stamp to an older time */
    FILE *f = fopen(path, "r");
    char text[8192];
    size_t tl = fread(text, 1, sizeof text - 1, f);
    text[tl] = '\0';
    fclose(f);
    char *pem = strstr(text, "-----BEGIN");
    f = fopen(path, "w");
    fprintf(f, "# created=1000\n%s", pem);
    fclose(f);
    struct mailauth_signing_key keys[2];
    size_t nk;
    assert_int_equal(mailauth_keys_load_signing(tmp_root, "rot.example", keys, &nk, &err), 0);
    assert_int_equal(nk, 1);
    assert_string_equal(keys[0].selector, "old"); /* both published: the old one signs */
    mailauth_signing_key_free(&keys[0]);
    assert_int_equal(mailauth_keys_retire(tmp_root, "rot.example", "old", &err), 0);
    assert_int_equal(mailauth_keys_load_signing(tmp_root, "rot.example", keys, &nk, &err), 0);
    assert_int_equal(nk, 1);
    assert_string_equal(keys[0].selector, "new");
    mailauth_signing_key_free(&keys[0]);
    struct mailauth_key_info *list;
    size_t nl;
    assert_int_equal(mailauth_keys_list(tmp_root, "rot.example", &list, &nl, &err), 0);
    assert_int_equal(nl, 2);
    assert_true(list[0].is_retired);
    assert_true(list[1].is_signing);
    mailauth_keys_list_free(list, nl);
    /* a retired selector is never reused, and retiring twice fails */
    assert_int_equal(mailauth_keys_generate(tmp_root, "rot.example", "old",
                                            MAILAUTH_DKIM_RSA_SHA256, NULL, &err),
                     -1);
    free(err);
    err = NULL;
    assert_int_equal(mailauth_keys_retire(tmp_root, "rot.example", "old", &err), -1);
    free(err);
    err = NULL;
    assert_int_equal(mailauth_keys_generate(tmp_root, "../x", "s", MAILAUTH_DKIM_RSA_SHA256, NULL,
                                            &err),
                     -1);
    free(err);
}

static bool from_of(const char *h, char *out, size_t size)
{
    struct mailauth_header f[16];
    size_t body;
    bool tr;
    size_t n = mailauth_headers_parse(h, strlen(h), f, 16, &body, &tr);
    return mailauth_from_domain(h, f, n, out, size);
}

static void test_from_domain(void **state)
{
    char d[256];
    assert_true(from_of("From: Joe <Joe@Example.ORG>\r\n\r\n", d, sizeof d));
    assert_string_equal(d, "example.org");
    assert_true(from_of("From: joe@example.org (Joe, \"x\" <y@z.example>)\r\n\r\n", d, sizeof d));
    assert_string_equal(d, "example.org");
    assert_true(from_of("From: \"a@b.example, c\" <joe@sub.example.org>\r\n\r\n", d, sizeof d));
    assert_string_equal(d, "sub.example.org");
    assert_true(from_of("Subject: x\r\nFrom:\r\n <joe@folded.example>\r\n\r\n", d, sizeof d));
    assert_string_equal(d, "folded.example");
    assert_false(from_of("From: a@x.example, b@y.example\r\n\r\n", d, sizeof d));
    assert_false(from_of("From: a@x.example\r\nFrom: b@y.example\r\n\r\n", d, sizeof d));
    assert_false(from_of("To: a@x.example\r\n\r\n", d, sizeof d));
    assert_false(from_of("From: undisclosed:;\r\n\r\n", d, sizeof d));
    assert_false(from_of("From: <>\r\n\r\n", d, sizeof d));
}

static void test_headers_parse(void **state)
{
    const char *h = "A: 1\r\n cont\r\nbogus line\r\nB:2\r\n\r\nbody";
    struct mailauth_header f[4];
    size_t body;
    bool tr;
    size_t n = mailauth_headers_parse(h, strlen(h), f, 4, &body, &tr);
    assert_int_equal(n, 2);
    assert_int_equal(f[0].len, 13);
    assert_int_equal(f[1].start, 25);
    assert_string_equal(h + body, "body");
    n = mailauth_headers_parse(h, strlen(h), f, 1, &body, &tr);
    assert_int_equal(n, 1);
    assert_true(tr);
}

/* ---- SPF ------------------------------------------------------------------------------ */

static enum mailauth_result spf_of(const struct table_row *rows, size_t n, const char *ip,
                                   const char *from, struct table_dns *t_out)
{
    struct table_dns t = {.rows = rows, .n = n};
    struct mailauth_dns dns = table_dns(&t);
    struct mailauth_spf_result r;
    assert_int_equal(mailauth_spf_check(&dns, ip, "mail.example.com", from, "mx.example.net",
                                        1000, &r),
                     0);
    if (t_out)
        *t_out = t;
    return r.result;
}

/* RFC 7208 §7.4's macro examples, through an explanation (exp=) that uses them all. */
static void test_spf_macros(void **state)
{
    static const struct table_row rows[] = {
        {"email.example.com", MAILAUTH_DNS_TXT, "v=spf1 -all exp=why.%{d2}"},
        {"why.example.com", MAILAUTH_DNS_TXT,
         "%{o} %{d4} %{d2} %{d1} %{dr} %{d2r} %{l} %{l-} %{lr} %{lr-} %{l1r-} "
         "%{ir}.%{v}._spf.%{d2} %{c} %{r} %{t} %%%_%-%{L}"},
    };
    struct table_dns t = {.rows = rows, .n = 2};
    struct mailauth_dns dns = table_dns(&t);
    struct mailauth_spf_result r;
    assert_int_equal(mailauth_spf_check(&dns, "192.0.2.3", "mail.example.com",
                                        "strong-bad@email.example.com", "mx.example.net", 1000,
                                        &r),
                     0);
    assert_int_equal(r.result, MAILAUTH_FAIL);
    assert_string_equal(r.explanation,
                        "email.example.com email.example.com example.com com com.example.email "
                        "example.email "
                        "strong-bad strong.bad strong-bad bad.strong strong "
                        "3.2.0.192.in-addr._spf.example.com 192.0.2.3 mx.example.net 1000 "
                        "% %20strong-bad");
    assert_string_equal(r.mechanism, "-all");
    /* the IPv6 form of %{ir} (nibbles) as an exists: name */
    static const struct table_row rows6[] = {
        {"email.example.com", MAILAUTH_DNS_TXT, "v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all"},
        {"1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com",
         MAILAUTH_DNS_A, "127.0.0.2"},
    };
    struct table_dns t6 = {.rows = rows6, .n = 2};
    dns = table_dns(&t6);
    assert_int_equal(mailauth_spf_check(&dns, "2001:db8::cb01", "h", "strong-bad@email.example.com",
                                        "r", 1, &r),
                     0);
    assert_int_equal(r.result, MAILAUTH_PASS);
}

/* RFC 7208 §4.6.4: 10 DNS-querying terms, 2 void lookups. */
static void test_spf_limits(void **state)
{
    static const struct table_row ten[] = {
        {"x.example", MAILAUTH_DNS_TXT,
         "v=spf1 a a a a a a a a a a ip4:192.0.2.9 -all"},
        {"x.example", MAILAUTH_DNS_A, "198.51.100.1"},
    };
    assert_int_equal(spf_of(ten, 2, "192.0.2.9", "u@x.example", NULL), MAILAUTH_PASS);
    static const struct table_row eleven[] = {
        {"x.example", MAILAUTH_DNS_TXT, "v=spf1 a a a a a a a a a a a ip4:192.0.2.9 -all"},
        {"x.example", MAILAUTH_DNS_A, "198.51.100.1"},
    };
    assert_int_equal(spf_of(eleven, 2, "192.0.2.9", "u@x.example", NULL), MAILAUTH_PERMERROR);
    static const struct table_row voids[] = {
        {"x.example", MAILAUTH_DNS_TXT, "v=spf1 a:n1.x.example a:n2.x.example a:n3.x.example -all"},
    };
    assert_int_equal(spf_of(voids, 1, "192.0.2.9", "u@x.example", NULL), MAILAUTH_PERMERROR);
    static const struct table_row two_voids[] = {
        {"x.example", MAILAUTH_DNS_TXT, "v=spf1 a:n1.x.example a:n2.x.example -all"},
    };
    assert_int_equal(spf_of(two_voids, 1, "192.0.2.9", "u@x.example", NULL), MAILAUTH_FAIL);
    /* an include loop ends in the term limit */
    static const struct table_row loop[] = {
        {"x.example", MAILAUTH_DNS_TXT, "v=spf1 include:x.example -all"},
    };
    assert_int_equal(spf_of(loop, 1, "192.0.2.9", "u@x.example", NULL), MAILAUTH_PERMERROR);
    /* DNS failure: temperror; no record: none; two records: permerror */
    static const struct table_row tf[] = {{"x.example", MAILAUTH_DNS_TXT, NULL}};
    assert_int_equal(spf_of(tf, 1, "192.0.2.9", "u@x.example", NULL), MAILAUTH_TEMPERROR);
    assert_int_equal(spf_of(NULL, 0, "192.0.2.9", "u@x.example", NULL), MAILAUTH_NONE);
    static const struct table_row two[] = {
        {"x.example", MAILAUTH_DNS_TXT, "v=spf1 -all"},
        {"x.example", MAILAUTH_DNS_TXT, "v=spf1 +all"},
    };
    assert_int_equal(spf_of(two, 2, "192.0.2.9", "u@x.example", NULL), MAILAUTH_PERMERROR);
    /* the null sender: postmaster@HELO is checked */
    static const struct table_row helo[] = {
        {"mail.example.com", MAILAUTH_DNS_TXT, "v=spf1 ip4:192.0.2.0/24 -all"},
    };
    assert_int_equal(spf_of(helo, 1, "192.0.2.9", "", NULL), MAILAUTH_PASS);
    assert_int_equal(spf_of(helo, 1, "192.0.3.9", "", NULL), MAILAUTH_FAIL);
}

static void test_spf_syntax(void **state)
{
    static const char *const ok[] = {"v=spf1", "v=spf1 -all", "v=spf1 ip4:1.2.3.4/32 ip6:::1/128",
                                     "v=spf1 a/24//64 mx:x.example/30 ptr exists:%{i}.x.example",
                                     "v=spf1 redirect=x.example exp=e.%{d} foo=bar"};
    static const char *const bad[] = {"v=spf10", "v=spf1 ip4:1.2.3.4/33", "v=spf1 a:foo",
                                      "v=spf1 -nothing", "v=spf1 redirect=a.example redirect=b.example",
                                      "v=spf1 ip6:::1//64", "v=spf1 exists:%{z}.x.example",
                                      "v=spf1 a:%{d0}.x.example", "v=spf1 ip4:01.2.3.4"};
    size_t n;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(mailauth_spf_record_parse(ok[i], strlen(ok[i]), &n), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mailauth_spf_record_parse(bad[i], strlen(bad[i]), &n), -1);
}

/* ---- DMARC and Authentication-Results --------------------------------------------------- */

static void test_dmarc_record(void **state)
{
    struct mailauth_dmarc_record r;
    const char *t = "v=DMARC1; p=quarantine; sp=reject; adkim=s; pct=20; rua=mailto:a@b";
    assert_int_equal(mailauth_dmarc_record_parse(t, strlen(t), &r), 0);
    assert_int_equal(r.policy, MAILAUTH_DMARC_POLICY_QUARANTINE);
    assert_int_equal(r.subdomain_policy, MAILAUTH_DMARC_POLICY_REJECT);
    assert_true(r.is_dkim_strict && !r.is_spf_strict);
    assert_int_equal(r.pct, 20);
    /* §6.6.3: a bad p= with rua= is p=none; without rua= no policy at all */
    t = "v=DMARC1; p=bogus; rua=mailto:a@b";
    assert_int_equal(mailauth_dmarc_record_parse(t, strlen(t), &r), 0);
    assert_int_equal(r.policy, MAILAUTH_DMARC_POLICY_NONE);
    t = "v=DMARC1; p=bogus";
    assert_int_equal(mailauth_dmarc_record_parse(t, strlen(t), &r), -1);
    t = "p=reject; v=DMARC1";
    assert_int_equal(mailauth_dmarc_record_parse(t, strlen(t), &r), -1);
    t = "v=DMARC1; p=reject; pct=101";
    assert_int_equal(mailauth_dmarc_record_parse(t, strlen(t), &r), -1);
    char org[254];
    mailauth_org_domain("Mail.Sub.Example.CO.UK", org, sizeof org);
    assert_string_equal(org, "example.co.uk");
    mailauth_org_domain("a.b.example.com", org, sizeof org);
    assert_string_equal(org, "example.com");
}

static void test_dmarc_check(void **state)
{
    static const struct table_row rows[] = {
        {"_dmarc.example.org", MAILAUTH_DNS_TXT, "v=DMARC1; p=reject; sp=quarantine"},
        {"_dmarc.zero.example", MAILAUTH_DNS_TXT, "v=DMARC1; p=reject; pct=0"},
        {"_dmarc.tf.example", MAILAUTH_DNS_TXT, NULL},
    };
    struct table_dns t = {.rows = rows, .n = 3};
    struct mailauth_dns dns = table_dns(&t);
    struct mailauth_spf_result spf = {.result = MAILAUTH_PASS, .domain = "bounce.example.org"};
    struct mailauth_dkim_result dk = {.result = MAILAUTH_PASS, .domain = "other.example"};
    struct mailauth_dmarc_result d;
    /* SPF of a subdomain aligns in relaxed mode */
    mailauth_dmarc_check(&dns, "example.org", &spf, &dk, 1, &d);
    assert_int_equal(d.result, MAILAUTH_PASS);
    assert_true(d.is_spf_aligned && !d.is_dkim_aligned);
    /* nothing aligned: fail; the subdomain takes sp= from the org domain's record */
    spf.result = MAILAUTH_FAIL;
    mailauth_dmarc_check(&dns, "news.example.org", &spf, &dk, 1, &d);
    assert_int_equal(d.result, MAILAUTH_FAIL);
    assert_int_equal(d.policy, MAILAUTH_DMARC_POLICY_QUARANTINE);
    assert_int_equal(d.disposition, MAILAUTH_DMARC_POLICY_QUARANTINE);
    /* pct=0: the policy applies to no message, reject becomes quarantine */
    mailauth_dmarc_check(&dns, "zero.example", &spf, &dk, 1, &d);
    assert_int_equal(d.result, MAILAUTH_FAIL);
    assert_true(d.is_sampled_out);
    assert_int_equal(d.disposition, MAILAUTH_DMARC_POLICY_QUARANTINE);
    /* DNS failure: temperror; no record: none; no From: none */
    mailauth_dmarc_check(&dns, "tf.example", &spf, &dk, 1, &d);
    assert_int_equal(d.result, MAILAUTH_TEMPERROR);
    mailauth_dmarc_check(&dns, "none.example", &spf, &dk, 1, &d);
    assert_int_equal(d.result, MAILAUTH_NONE);
    mailauth_dmarc_check(&dns, "", &spf, &dk, 1, &d);
    assert_int_equal(d.result, MAILAUTH_NONE);
    /* DKIM temperror with nothing aligned: temperror, not fail */
    dk.result = MAILAUTH_TEMPERROR;
    mailauth_dmarc_check(&dns, "example.org", &spf, &dk, 1, &d);
    assert_int_equal(d.result, MAILAUTH_TEMPERROR);
}

static void test_auth_results(void **state)
{
    struct mailauth_verdict v;
    memset(&v, 0, sizeof v);
    v.has_spf = v.has_dmarc = true;
    v.spf.result = MAILAUTH_PASS;
    snprintf(v.spf.domain, sizeof v.spf.domain, "example.org");
    snprintf(v.mail_from, sizeof v.mail_from, "a b@example.org");
    v.n_dkim = 1;
    v.dkim[0].result = MAILAUTH_FAIL;
    snprintf(v.dkim[0].domain, sizeof v.dkim[0].domain, "example.org");
    snprintf(v.dkim[0].selector, sizeof v.dkim[0].selector, "s1");
    snprintf(v.dkim[0].reason, sizeof v.dkim[0].reason, "body (hash) did not verify");
    v.dkim[0].algorithm = "rsa-sha256";
    v.dmarc.result = MAILAUTH_PASS;
    snprintf(v.dmarc.header_from, sizeof v.dmarc.header_from, "example.org");
    struct buf b;
    buf_init(&b, 0);
    assert_true(mailauth_ar_format("mx.example.net", &v, &b));
    assert_string_equal(b.data, "Authentication-Results: mx.example.net;\r\n"
                                "\tdkim=fail (body ?hash? did not verify) header.d=example.org "
                                "header.s=s1 header.a=rsa-sha256;\r\n"
                                "\tspf=pass (example.org) smtp.mailfrom=\"a b@example.org\";\r\n"
                                "\tarc=none;\r\n"
                                "\tdmarc=pass header.from=example.org\r\n");
    /* and it parses back */
    struct mailauth_ar ar;
    const char *colon = strchr(b.data, ':');
    assert_int_equal(mailauth_ar_parse(colon + 1, b.len - (size_t)(colon + 1 - b.data), &ar), 0);
    assert_string_equal(ar.authserv_id, "mx.example.net");
    assert_int_equal(ar.n, 4);
    assert_string_equal(ar.methods[1].method, "spf");
    assert_string_equal(ar.methods[1].props[0].value, "a b@example.org");
    buf_free(&b);
    const char *bad = " ; dkim=pass";
    assert_int_equal(mailauth_ar_parse(bad, strlen(bad), &ar), -1);
    const char *none = " example.org 1; none";
    assert_int_equal(mailauth_ar_parse(none, strlen(none), &ar), 0);
    assert_true(ar.is_none);
    /* forged fields with our id go, others stay */
    const char *h = "Authentication-Results: MX.example.net; dkim=pass\r\n"
                    "Subject: x\r\n"
                    "Authentication-Results: (comment) mx.example.net;\r\n spf=pass\r\n"
                    "Authentication-Results: other.example; spf=pass\r\n\r\n";
    struct mailauth_header f[8];
    size_t body;
    bool tr;
    size_t n = mailauth_headers_parse(h, strlen(h), f, 8, &body, &tr);
    buf_init(&b, 0);
    assert_int_equal(mailauth_ar_remove_ours(h, body, f, n, "mx.example.net", &b), 2);
    assert_string_equal(b.data, "Subject: x\r\nAuthentication-Results: other.example; "
                                "spf=pass\r\n\r\n");
    buf_free(&b);
}

/* ---- ARC ------------------------------------------------------------------------------ */

static void test_arc_seal_and_verify(void **state)
{
    char *err = NULL;
    keygen_ok("fwd.example", "arc", MAILAUTH_DKIM_RSA_SHA256);
    keygen_ok("hop2.example", "arc2", MAILAUTH_DKIM_ED25519_SHA256);
    struct mailauth_key_info *l1, *l2;
    size_t n1, n2;
    assert_int_equal(mailauth_keys_list(tmp_root, "fwd.example", &l1, &n1, &err), 0);
    assert_int_equal(mailauth_keys_list(tmp_root, "hop2.example", &l2, &n2, &err), 0);
    struct table_row rows[] = {
        {"arc._domainkey.fwd.example", MAILAUTH_DNS_TXT, l1[0].txt},
        {"arc2._domainkey.hop2.example", MAILAUTH_DNS_TXT, l2[0].txt},
    };
    struct table_dns t = {.rows = rows, .n = 2};
    struct mailauth_dns dns = table_dns(&t);
    struct mailauth_signing_key k1[2], k2[2];
    size_t nk1, nk2;
    assert_int_equal(mailauth_keys_load_signing(tmp_root, "fwd.example", k1, &nk1, &err), 0);
    assert_int_equal(mailauth_keys_load_signing(tmp_root, "hop2.example", k2, &nk2, &err), 0);

    const char *msg = "From: a@origin.example\r\nTo: list@fwd.example\r\nSubject: arc\r\n\r\n"
                      "hello\r\n";
    struct mailauth_message m = {.data = msg, .len = strlen(msg), .fd = -1};
    struct mailauth_arc_result chain;
    assert_int_equal(mailauth_arc_verify(&m, &dns, &chain), 0);
    assert_int_equal(chain.result, MAILAUTH_NONE);
    /* first hop */
    struct buf set1;
    buf_init(&set1, 0);
    const char *serr = NULL;
    assert_int_equal(mailauth_arc_seal(&m, &k1[0], "Authentication-Results: mx.fwd.example;\r\n"
                                                   "\tspf=pass smtp.mailfrom=a@origin.example\r\n",
                                       &chain, 1700000000, &set1, &serr),
                     0);
    assert_non_null(strstr(set1.data, "ARC-Seal: i=1; a=rsa-sha256; t=1700000000; cv=none;"));
    assert_non_null(strstr(set1.data, "ARC-Authentication-Results: i=1; mx.fwd.example;"));
    struct mailauth_message m1 = {.prefix = set1.data, .prefix_len = set1.len, .data = msg,
                                  .len = strlen(msg), .fd = -1};
    assert_int_equal(mailauth_arc_verify(&m1, &dns, &chain), 0);
    assert_int_equal(chain.result, MAILAUTH_PASS);
    assert_int_equal(chain.n_sets, 1);
    assert_string_equal(chain.domain, "fwd.example");
    /* second hop, Ed25519, on top of the first */
    struct buf set2;
    buf_init(&set2, 0);
    assert_int_equal(mailauth_arc_seal(&m1, &k2[0], "Authentication-Results: hop2.example; "
                                                    "arc=pass\r\n",
                                       &chain, 1700000001, &set2, &serr),
                     0);
    assert_non_null(strstr(set2.data, "i=2; a=ed25519-sha256; t=1700000001; cv=pass;"));
    buf_append(&set2, set1.data, set1.len);
    struct mailauth_message m2 = {.prefix = set2.data, .prefix_len = set2.len, .data = msg,
                                  .len = strlen(msg), .fd = -1};
    assert_int_equal(mailauth_arc_verify(&m2, &dns, &chain), 0);
    assert_int_equal(chain.result, MAILAUTH_PASS);
    assert_int_equal(chain.n_sets, 2);
    /* a changed body breaks the newest AMS; a changed older AAR breaks the seals */
    struct mailauth_message bad = m2;
    bad.data = "From: a@origin.example\r\nTo: list@fwd.example\r\nSubject: arc\r\n\r\nHELLO\r\n";
    bad.len = strlen(bad.data);
    assert_int_equal(mailauth_arc_verify(&bad, &dns, &chain), 0);
    assert_int_equal(chain.result, MAILAUTH_FAIL);
    char *tampered = strdup(set2.data);
    char *p = strstr(tampered, "spf=pass smtp.mailfrom");
    memcpy(p, "spf=fail", 8);
    struct mailauth_message m3 = {.prefix = tampered, .prefix_len = strlen(tampered),
                                  .data = msg, .len = strlen(msg), .fd = -1};
    assert_int_equal(mailauth_arc_verify(&m3, &dns, &chain), 0);
    assert_int_equal(chain.result, MAILAUTH_FAIL);
    assert_non_null(strstr(chain.reason, "ARC-Seal"));
    free(tampered);
    /* a missing set member is a broken structure */
    struct mailauth_message m4 = {.prefix = set1.data, .prefix_len = strstr(set1.data,
                                  "ARC-Authentication-Results") - set1.data,
                                  .data = msg, .len = strlen(msg), .fd = -1};
    assert_int_equal(mailauth_arc_verify(&m4, &dns, &chain), 0);
    assert_int_equal(chain.result, MAILAUTH_FAIL);
    /* a failed chain is not sealed further */
    assert_int_equal(mailauth_arc_seal(&m4, &k1[0], "Authentication-Results: x; none\r\n",
                                       &chain, 1, &set1, &serr),
                     -1);
    struct mailauth_arc_seal seal;
    const char *perr;
    static const char *const seals[] = {
        "i=1; a=rsa-sha256; cv=none; d=x.example; s=s; b=YWJj",
        "i=51; a=rsa-sha256; cv=none; d=x.example; s=s; b=YWJj",
        "i=1; a=rsa-sha256; cv=maybe; d=x.example; s=s; b=YWJj",
        "i=1; a=rsa-sha256; cv=none; d=x.example; s=s; b=YWJj; h=from",
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(mailauth_arc_seal_parse(seals[i], strlen(seals[i]), &seal, &perr),
                         i == 0 ? 0 : -1);
    buf_free(&set1);
    buf_free(&set2);
    mailauth_signing_key_free(&k1[0]);
    mailauth_signing_key_free(&k2[0]);
    mailauth_keys_list_free(l1, n1);
    mailauth_keys_list_free(l2, n2);
}

/* ---- MTA-STS --------------------------------------------------------------------------- */

/* TLS-RPT https: rua (RFC 8460 §5.3.1): only https URIs are posted to; a name without an
 * address fails before any connection. No network: the table answers nothing. */
static void test_tlsrpt_post_refusals(void **state)
{
    struct table_dns t = {.rows = NULL, .n = 0};
    struct mailauth_dns dns = table_dns(&t);
    long status = -1;
    char err[200];
    static const char *const not_https[] = {"http://reports.example/v1", "mailto:a@example",
                                            "ftp://reports.example/", "not a uri", ""};
    for (size_t i = 0; i < sizeof not_https / sizeof not_https[0]; i++) {
        assert_int_equal(mailauth_tlsrpt_post(&dns, not_https[i], NULL, "x", 1, &status, err,
                                              sizeof err),
                         -1);
        assert_string_equal(err, "not an https URI");
        assert_int_equal(status, 0);
    }
    assert_int_equal(mailauth_tlsrpt_post(&dns, "https://reports.example:8443/v1", NULL, "x", 1,
                                          &status, err, sizeof err),
                     -1);
    assert_string_equal(err, "no address for reports.example");
}


static void test_mta_sts_parsers(void **state)
{
    char id[40];
    const char *rec = "v=STSv1; id=20160831085700Z;";
    assert_int_equal(mailauth_sts_record_parse(rec, strlen(rec), id, sizeof id), 0);
    assert_string_equal(id, "20160831085700Z");
    static const char *const bad_recs[] = {"v=STSv2; id=1", "id=1; v=STSv1", "v=STSv1",
                                           "v=STSv1; id=a-b",
                                           "v=STSv1; id=123456789012345678901234567890123"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(mailauth_sts_record_parse(bad_recs[i], strlen(bad_recs[i]), id, sizeof id),
                         -1);
    /* RFC 8461 §3.2's example */
    const char *pol = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                      "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";
    struct mailauth_sts_policy p;
    assert_int_equal(mailauth_sts_policy_parse(pol, strlen(pol), &p), 0);
    assert_int_equal(p.mode, MAILAUTH_STS_ENFORCE);
    assert_int_equal(p.n_mx, 3);
    assert_int_equal(p.max_age, 604800);
    assert_true(mailauth_sts_mx_matches(&p, "Mail.Example.com."));
    assert_true(mailauth_sts_mx_matches(&p, "mx1.example.net"));
    assert_false(mailauth_sts_mx_matches(&p, "a.b.example.net")); /* one label only */
    assert_false(mailauth_sts_mx_matches(&p, "example.net"));
    assert_false(mailauth_sts_mx_matches(&p, "evil.com"));
    static const char *const bad[] = {
        "version: STSv1\nmode: enforce\nmax_age: 10\n",                 /* no mx */
        "version: STSv1\nmode: sometimes\nmx: a.example\nmax_age: 10\n", /* mode */
        "mode: enforce\nmx: a.example\nmax_age: 10\n",                  /* no version */
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: ten\n",
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(mailauth_sts_policy_parse(bad[i], strlen(bad[i]), &p), -1);
    const char *none = "version: STSv1\nmode: none\nmax_age: 99999999999\n";
    assert_int_equal(mailauth_sts_policy_parse(none, strlen(none), &p), -1); /* 11 digits */
    none = "version: STSv1\nmode: none\nmax_age: 99999999\nunknown: x\n";
    assert_int_equal(mailauth_sts_policy_parse(none, strlen(none), &p), 0);
    assert_int_equal(p.max_age, 31557600); /* capped at a year */
}

/* ---- TLS-RPT ----------------------------------------------------------------------------- */

static void test_tlsrpt(void **state)
{
    char rua[256];
    const char *r = "v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/v1";
    assert_int_equal(mailauth_tlsrpt_record_parse(r, strlen(r), rua, sizeof rua), 0);
    assert_string_equal(rua, "mailto:tls@example.com,https://r.example.com/v1");
    assert_int_equal(mailauth_tlsrpt_record_parse("v=TLSRPTv2; rua=x", 17, rua, sizeof rua), -1);
    assert_int_equal(mailauth_tlsrpt_record_parse("v=TLSRPTv1", 10, rua, sizeof rua), -1);
    int64_t t = 1765000000; /* 2025-12-06 */
    char day[16];
    mailauth_tlsrpt_day(t, day, sizeof day);
    assert_string_equal(day, "2025-12-06");
    assert_int_equal(mailauth_tlsrpt_record(tmp_root, t, "a.example", "sts", "success", "mx.a.example",
                                            "192.0.2.1"),
                     0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(mailauth_tlsrpt_record(tmp_root, t, "a.example", "sts",
                                                "certificate-expired", "mx.a.example", "192.0.2.1"),
                         0);
    assert_int_equal(mailauth_tlsrpt_record(tmp_root, t, "b.example", "tlsa", "validation-failure",
                                            "mx.b.example", "192.0.2.2"),
                     0);
    /* fields that would break the record are refused */
    assert_int_equal(mailauth_tlsrpt_record(tmp_root, t, "a\texample", "sts", "success", "m", "i"),
                     -1);
    char **domains;
    size_t n;
    assert_int_equal(mailauth_tlsrpt_domains(tmp_root, day, &domains, &n), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++)
        free(domains[i]);
    free(domains);
    struct buf j;
    buf_init(&j, 0);
    assert_int_equal(mailauth_tlsrpt_report(tmp_root, day, "a.example", "mx.\"us\"", "pm@us", &j),
                     0);
    assert_non_null(strstr(j.data, "\"organization-name\":\"mx.\\\"us\\\"\""));
    assert_non_null(strstr(j.data, "\"date-range\":{\"start-datetime\":\"2025-12-06T00:00:00Z\""));
    assert_non_null(strstr(j.data, "\"total-successful-session-count\":1,"
                                   "\"total-failure-session-count\":3"));
    assert_non_null(strstr(j.data, "{\"result-type\":\"certificate-expired\",\"receiving-ip\":"
                                   "\"192.0.2.1\",\"receiving-mx-hostname\":\"mx.a.example\","
                                   "\"failed-session-count\":3}"));
    assert_null(strstr(j.data, "tlsa"));
    buf_free(&j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canon_rfc6376_example),
        cmocka_unit_test(test_canon_edges),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_rfc8463_example),
        cmocka_unit_test(test_dns_outcomes),
        cmocka_unit_test(test_sig_parse),
        cmocka_unit_test_setup_teardown(test_sign_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sign_file_and_prefix, setup, teardown),
        cmocka_unit_test(test_rsa_floor),
        cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
        cmocka_unit_test(test_from_domain),
        cmocka_unit_test(test_headers_parse),
        cmocka_unit_test(test_spf_macros),
        cmocka_unit_test(test_spf_limits),
        cmocka_unit_test(test_spf_syntax),
        cmocka_unit_test(test_dmarc_record),
        cmocka_unit_test(test_dmarc_check),
        cmocka_unit_test(test_auth_results),
        cmocka_unit_test_setup_teardown(test_arc_seal_and_verify, setup, teardown),
        cmocka_unit_test(test_mta_sts_parsers),
        cmocka_unit_test(test_tlsrpt_post_refusals),
        cmocka_unit_test_setup_teardown(test_tlsrpt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
