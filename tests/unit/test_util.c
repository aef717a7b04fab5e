/*
 * test_util.c - base64 (RFC 4648 §10 vectors, strict and lenient decoding), queue ids, RFC 5322
 * dates, helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/util.h"

/* RFC 4648 §10 test vectors */
static const char *const b64_plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const b64_coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};

static void test_base64_vectors(void **state)
{
    for (size_t i = 0; i < 7; i++) {
        struct buf b;
        buf_init(&b, 0);
        assert_true(util_base64_encode(b64_plain[i], strlen(b64_plain[i]), &b));
        assert_string_equal(buf_cstr(&b), b64_coded[i]);
        buf_reset(&b);
        assert_true(util_base64_decode(b64_coded[i], strlen(b64_coded[i]), &b));
        assert_int_equal(b.len, strlen(b64_plain[i]));
        assert_memory_equal(buf_cstr(&b), b64_plain[i], b.len);
        buf_free(&b);
    }
}

static void test_base64_bad(void **state)
{
    static const char *const bad[] = {"Zg=",      "Z===", "Zm9v YmFy", "Zm9v\n",
                                      "Zg==Zg==", "Z!==", "=Zm8",      "Zm=v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct buf b;
        buf_init(&b, 0);
        assert_false(util_base64_decode(bad[i], strlen(bad[i]), &b));
        buf_free(&b);
    }
}

/* Both decoders on the same inputs: want_strict / want_lenient say which accepts it. */
static void test_base64_modes(void **state)
{
    static const struct {
        const char *text;
        bool want_strict, want_lenient;
        const char *plain; /* when accepted */
        size_t plain_len;
    } cases[] = {
        {"", true, true, "", 0},
        {"Zg==", true, true, "f", 1},
        {"Zm8=", true, true, "fo", 2},
        {"dGVzdAB0ZXN0AHRlc3RwYXNz", true, true, "test\0test\0testpass", 18},
        /* padding left out entirely: only the lenient mode (SASL clients, stored hashes) */
        {"Zg", false, true, "f", 1},
        {"Zm8", false, true, "fo", 2},
        {"Zm9vYg", false, true, "foob", 4},
        {"Zm9vYmE", false, true, "fooba", 5},
        /* partial or misplaced padding: neither */
        {"Zg=", false, false, NULL, 0},
        {"Zm8==", false, false, NULL, 0},
        {"Zm9v=", false, false, NULL, 0},
        {"Zm9v==", false, false, NULL, 0},
        {"Z===", false, false, NULL, 0},
        {"==", false, false, NULL, 0},
        {"Zg==Zg==", false, false, NULL, 0},
        {"Zm=v", false, false, NULL, 0},
        /* a lone sextet carries no byte */
        {"A", false, false, NULL, 0},
        {"Zm9vY", false, false, NULL, 0},
        /* RFC 4648 §3.5: non-zero leftover bits are not the canonical encoding */
        {"Zh==", false, false, NULL, 0},
        {"Zh", false, false, NULL, 0},
        {"Zm9=", false, false, NULL, 0},
        /* whitespace and foreign characters, RFC 4648 §3.3 */
        {"VXNlc m5hbWU6", false, false, NULL, 0},
        {"Zm9v\r\n", false, false, NULL, 0},
        {"Zm-_", false, false, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int mode = 0; mode < 2; mode++) {
            bool want = mode == 0 ? cases[i].want_strict : cases[i].want_lenient;
            struct buf b;
            buf_init(&b, 0);
            /* decoding appends: a failure must leave what was there */
            assert_true(buf_append_str(&b, "x"));
            const char *t = cases[i].text;
            bool got = mode == 0 ? util_base64_decode(t, strlen(t), &b)
                                 : util_base64_decode_lenient(t, strlen(t), &b);
            if (got != want)
                fail_msg("\"%s\" %s: got %d", t, mode == 0 ? "strict" : "lenient", got);
            if (want) {
                assert_int_equal(b.len, 1 + cases[i].plain_len);
                assert_memory_equal(b.data + 1, cases[i].plain, cases[i].plain_len);
            } else {
                assert_int_equal(b.len, 1);
                assert_string_equal(b.data, "x");
            }
            buf_free(&b);
        }
    }
}

static void test_base64_value(void **state)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int c = 0; c < 256; c++) {
        const char *p = c ? strchr(alphabet, c) : NULL;
        int want = p ? (int)(p - alphabet) : -1;
        assert_int_equal(util_base64_value((unsigned char)c), want);
    }
}

/* Decoding into a capped buffer needs exactly the decoded size, no slack. */
static void test_base64_decode_cap(void **state)
{
    struct buf b;
    buf_init(&b, 6);
    assert_true(util_base64_decode("Zm9vYmFy", 8, &b));
    assert_string_equal(b.data, "foobar");
    buf_reset(&b);
    assert_true(util_base64_decode_lenient("Zm9vYg", 6, &b));
    assert_string_equal(b.data, "foob");
    buf_free(&b);
    buf_init(&b, 5);
    assert_false(util_base64_decode("Zm9vYmFy", 8, &b));
    buf_free(&b);
}

static void test_base64_encode_str(void **state)
{
    char *e = util_base64_encode_str("Password:", 9);
    assert_string_equal(e, "UGFzc3dvcmQ6");
    free(e);
    e = util_base64_encode_str("", 0);
    assert_string_equal(e, "");
    free(e);
    e = util_base64_encode_str("\0f", 2);
    assert_string_equal(e, "AGY=");
    free(e);
}

static void test_base64_binary_roundtrip(void **state)
{
    unsigned char data[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 7);
    struct buf e, d;
    buf_init(&e, 0);
    buf_init(&d, 0);
    assert_true(util_base64_encode(data, sizeof data, &e));
    assert_true(util_base64_decode(e.data, e.len, &d));
    assert_int_equal(d.len, sizeof data);
    assert_memory_equal(d.data, data, sizeof data);
    buf_free(&e);
    buf_free(&d);
}

static void test_base64_cap(void **state)
{
    struct buf b;
    buf_init(&b, 4);
    assert_false(util_base64_encode("foobar", 6, &b)); /* needs 8 */
    buf_free(&b);
}

static void test_queue_id(void **state)
{
    char ids[2000][UTIL_QUEUE_ID_SIZE];
    for (size_t i = 0; i < 2000; i++) {
        util_queue_id(ids[i]);
        size_t n = strlen(ids[i]);
        assert_true(n >= 10 && n <= 12);
        for (size_t k = 0; k < n; k++)
            assert_true((ids[i][k] >= '0' && ids[i][k] <= '9') ||
                        (ids[i][k] >= 'A' && ids[i][k] <= 'F'));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(ids[i], ids[j]);
    }
}

static void test_rfc5322_date(void **state)
{
    setenv("TZ", "UTC", 1);
    tzset();
    char d[64];
    util_rfc5322_date(1795597203, d, sizeof d); /* 2026-11-25 09:00:03 UTC */
    assert_string_equal(d, "Wed, 25 Nov 2026 09:00:03 +0000 (UTC)");
    setenv("TZ", "CET-1", 1);
    tzset();
    util_rfc5322_date(0, d, sizeof d);
    assert_string_equal(d, "Thu, 1 Jan 1970 01:00:00 +0100 (CET)");
    setenv("TZ", "UTC", 1);
    tzset();
}

static void test_strings(void **state)
{
    char s[] = "HeLLo@Example.ORG";
    assert_string_equal(util_ascii_lower(s), "hello@example.org");
    assert_true(util_has_prefix_ci("MAIL FROM:<a>", 13, "mail from:"));
    assert_false(util_has_prefix_ci("MAIL", 4, "mail from:"));
    assert_false(util_has_prefix_ci("RCPT TO:", 8, "mail"));
}

static void test_files(void **state)
{
    char dir[] = "/tmp/tern-test-util-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    assert_int_equal(util_mkdir_p(path, 0755), 0);
    assert_int_equal(util_mkdir_p(path, 0755), 0); /* exists: fine */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    char file[300];
    snprintf(file, sizeof file, "%s/f", path);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(util_write_all(fileno(f), "hello", 5), 0);
    fclose(f);
    assert_int_equal(util_fsync_dir_of(file), 0);
    assert_int_equal(util_fsync_dir(path), 0);
    assert_int_equal(util_mkdir_p(file, 0755), -1); /* a file is in the way */
    unlink(file);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_random_and_clock(void **state)
{
    unsigned char a[32], b[32];
    util_random_bytes(a, sizeof a);
    util_random_bytes(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
    uint64_t t1 = util_now_ms(), t2 = util_now_ms();
    assert_true(t2 >= t1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_bad),
        cmocka_unit_test(test_base64_modes),
        cmocka_unit_test(test_base64_value),
        cmocka_unit_test(test_base64_decode_cap),
        cmocka_unit_test(test_base64_encode_str),
        cmocka_unit_test(test_base64_binary_roundtrip),
        cmocka_unit_test(test_base64_cap),
        cmocka_unit_test(test_queue_id),
        cmocka_unit_test(test_rfc5322_date),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_random_and_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
