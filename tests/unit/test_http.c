/*
 * test_http.c - the MTA-STS listener's HTTP/1.1 request-head parser (src/http/parse.c):
 * good requests (origin-form, absolute-form, HTTP/1.0, ports and trailing dots in Host),
 * every error and its status, the budgets, the incremental end-of-head search; and the
 * policy text built from the configuration (http_mtasts_policy).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"
#include "http/http.h"

static enum http_parse_status parse(const char *text, struct http_request *r)
{
    return http_request_parse(text, strlen(text), r);
}

/* text must fail with status. */
static void expect_status(const char *text, int status)
{
    struct http_request r;
    enum http_parse_status st = parse(text, &r);
    if (st != HTTP_PARSE_ERROR || r.status != status)
        fail_msg("\"%.60s\": want %d, got parse %d status %d", text, status, (int)st, r.status);
    assert_non_null(r.reason);
}

static void test_good_requests(void **state)
{
    struct http_request r;
    const char *get = "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: MTA-STS.Example.ORG\r\n"
                      "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\nGET / HTTP/1.1\r\n";
    assert_int_equal(parse(get, &r), HTTP_PARSE_DONE);
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.path, HTTP_MTA_STS_PATH);
    assert_string_equal(r.host, "mta-sts.example.org"); /* lower case */
    assert_int_equal(r.version_minor, 1);
    /* the head only: a pipelined request after it is not part of it */
    assert_int_equal(r.head_len, strstr(get, "\r\n\r\n") + 4 - get);

    assert_int_equal(parse("HEAD /x?y=1 HTTP/1.1\r\nhost:mta-sts.example.org.:8443  \r\n\r\n", &r),
                     HTTP_PARSE_DONE);
    assert_string_equal(r.method, "HEAD");
    assert_string_equal(r.path, "/x?y=1");
    assert_string_equal(r.host, "mta-sts.example.org"); /* no port, no trailing dot */

    /* RFC 9112 §3.2.2: an absolute-form target's host wins over the Host field */
    assert_int_equal(parse("GET https://mta-sts.a.example/.well-known/mta-sts.txt HTTP/1.1\r\n"
                           "Host: other.example\r\n\r\n",
                           &r),
                     HTTP_PARSE_DONE);
    assert_string_equal(r.host, "mta-sts.a.example");
    assert_string_equal(r.path, HTTP_MTA_STS_PATH);
    assert_int_equal(parse("GET http://h.example HTTP/1.1\r\nHost: h.example\r\n\r\n", &r),
                     HTTP_PARSE_DONE);
    assert_string_equal(r.path, "/");

    /* HTTP/1.0 needs no Host; 1.x later than 1.1 is 1.1 (RFC 9112 §2.5) */
    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &r), HTTP_PARSE_DONE);
    assert_int_equal(r.version_minor, 0);
    assert_string_equal(r.host, "");
    assert_int_equal(parse("GET / HTTP/1.2\r\nHost: a\r\n\r\n", &r), HTTP_PARSE_DONE);
    assert_int_equal(r.version_minor, 1);
    /* an empty Host is allowed; Content-Length: 0 is no content */
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost:\r\nContent-Length: 0\r\n\r\n", &r),
                     HTTP_PARSE_DONE);
    assert_string_equal(r.host, "");
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", &r), HTTP_PARSE_DONE);
    assert_string_equal(r.host, "[::1]");
    /* obs-text in a value is allowed (RFC 9110 §5.5) */
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nX-T: caf\xc3\xa9\t!\r\n\r\n", &r),
                     HTTP_PARSE_DONE);
}

static void test_incomplete(void **state)
{
    struct http_request r;
    assert_int_equal(parse("", &r), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\n", &r), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\n\r", &r), HTTP_PARSE_INCOMPLETE);
}

static void test_errors(void **state)
{
    /* line ends: CRLF only (RFC 9112 §2.2) */
    expect_status("GET / HTTP/1.1\nHost: a\n\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\nHost: a", 400); /* answered before the head ends */
    /* the request line */
    expect_status("\r\n\r\n", 400);
    expect_status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_status("GET /\r\nHost: a\r\n\r\n", 400);
    expect_status("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_status("VERYLONGMETHODNAME / HTTP/1.1\r\nHost: a\r\n\r\n", 501);
    expect_status("GET / http/1.1\r\nHost: a\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
    expect_status("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    expect_status("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505);
    expect_status("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_status("GET example.org:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_status("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_status("GET https://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_status("GET https://h_x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    /* fields (RFC 9112 §5) */
    expect_status("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", 400);
    {
        static const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
        struct http_request r;
        assert_int_equal(http_request_parse(nul, sizeof nul - 1, &r), HTTP_PARSE_ERROR);
        assert_int_equal(r.status, 400);
    }
    /* Host (RFC 9112 §3.2) */
    expect_status("GET / HTTP/1.1\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a:1234567\r\n\r\n", 400);
    /* content: none accepted; smuggling shapes refused (RFC 9112 §6) */
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", 413);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                  400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
    expect_status("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                  "Content-Length: 3\r\n\r\n",
                  400);
    expect_status("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

static void test_budgets(void **state)
{
    struct http_request r;
    char *big = malloc(HTTP_HEAD_MAX * 2);
    assert_non_null(big);
    /* a request line that does not end within HTTP_LINE_MAX: 414 before the head ends */
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', HTTP_LINE_MAX);
    assert_int_equal(http_request_parse(big, HTTP_LINE_MAX + 5, &r), HTTP_PARSE_ERROR);
    assert_int_equal(r.status, 414);
    /* a target over HTTP_TARGET_MAX in a complete head: 414 */
    int n = snprintf(big, HTTP_HEAD_MAX, "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n",
                     HTTP_TARGET_MAX, 0);
    assert_int_equal(http_request_parse(big, (size_t)n, &r), HTTP_PARSE_ERROR);
    assert_int_equal(r.status, 414);
    n = snprintf(big, HTTP_HEAD_MAX, "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n",
                 HTTP_TARGET_MAX - 1, 0);
    assert_int_equal(http_request_parse(big, (size_t)n, &r), HTTP_PARSE_DONE);
    /* a head that has not ended by HTTP_HEAD_MAX: 431 */
    size_t len = (size_t)snprintf(big, HTTP_HEAD_MAX, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(big + len, 'b', HTTP_HEAD_MAX * 2 - len);
    assert_int_equal(http_request_parse(big, HTTP_HEAD_MAX * 2, &r), HTTP_PARSE_ERROR);
    assert_int_equal(r.status, 431);
    assert_int_equal(http_request_parse(big, HTTP_HEAD_MAX - 1, &r), HTTP_PARSE_INCOMPLETE);
    /* more than HTTP_FIELDS_MAX fields: 431 */
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < HTTP_FIELDS_MAX; i++)
        buf_printf(&b, "X-%d: y\r\n", i);
    buf_printf(&b, "\r\n");
    assert_int_equal(http_request_parse(b.data, b.len, &r), HTTP_PARSE_ERROR);
    assert_int_equal(r.status, 431);
    buf_free(&b);
    free(big);
}

static void test_head_end_incremental(void **state)
{
    const char *t = "GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
    size_t end = strstr(t, "\r\n\r\n") + 4 - t;
    bool bare;
    assert_int_equal(http_head_end(t, strlen(t), 0, &bare), end);
    assert_false(bare);
    /* fed one octet at a time, searching only what is new, it ends at the same place */
    size_t searched = 0, found = 0;
    for (size_t have = 1; have <= strlen(t) && !found; have++) {
        found = http_head_end(t, have, searched, &bare);
        assert_false(bare);
        searched = have;
    }
    assert_int_equal(found, end);
    assert_int_equal(http_head_end("GET / HTTP/1.1\r\n\n", 17, 0, &bare), 0);
    assert_true(bare);
    assert_int_equal(http_head_end("\n", 1, 0, &bare), 0);
    assert_true(bare);
}

static void test_policy_from_config(void **state)
{
    char *err = NULL;
    const char *text = "hostname = mx1.example.org\n";
    struct config *cfg = config_parse_buffer("t.conf", text, strlen(text), NULL, 0, false, &err);
    assert_non_null(cfg);
    struct buf b;
    buf_init(&b, 0);
    http_mtasts_policy(cfg, &b);
    assert_string_equal(b.data, "version: STSv1\r\nmode: testing\r\nmx: mx1.example.org\r\n"
                                "max_age: 604800\r\n");
    buf_free(&b);
    config_free(cfg);

    text = "hostname = mx1.example.org\nmta_sts.mode = enforce\n"
           "mta_sts.mx = mx1.example.org, *.mx.Example.org\nmta_sts.max_age = 31557600\n"
           "mta_sts.listen = 127.0.0.1:8443\n";
    cfg = config_parse_buffer("t.conf", text, strlen(text), NULL, 0, false, &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->mta_sts_listen.n, 1);
    buf_init(&b, 0);
    http_mtasts_policy(cfg, &b);
    assert_string_equal(b.data, "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\n"
                                "mx: *.mx.Example.org\r\nmax_age: 31557600\r\n");
    buf_free(&b);
    config_free(cfg);

    static const char *const bad[] = {
        "mta_sts.mode = strict\n",          "mta_sts.max_age = 0\n",
        "mta_sts.max_age = 31557601\n",     "mta_sts.mx = mx..example.org\n",
        "mta_sts.mx = *example.org\n",      "mta_sts.mx = -mx.example.org\n",
        "mta_sts.mx = mx_1.example.org\n",  "mta_sts.listen = nowhere\n",
        "tls.sni_certs = :k.pem\n",         "tls.sni_certs = c.pem:\n",
        "tls.sni_certs = c.pem:k.pem:x\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = NULL;
        cfg = config_parse_buffer("t.conf", bad[i], strlen(bad[i]), NULL, 0, false, &err);
        if (cfg)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(strstr(err, "t.conf:1: "));
        free(err);
    }
    /* tls.sni_certs: both parts made absolute under data_dir, as tls.cert */
    text = "data_dir = /srv/tern\ntls.sni_certs = sts.pem, /etc/a.pem:k/a.key\n";
    cfg = config_parse_buffer("t.conf", text, strlen(text), NULL, 0, false, &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->tls_sni_certs.n, 2);
    assert_string_equal(cfg->tls_sni_certs.items[0], "/srv/tern/sts.pem");
    assert_string_equal(cfg->tls_sni_certs.items[1], "/etc/a.pem:/srv/tern/k/a.key");
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_requests),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_head_end_incremental),
        cmocka_unit_test(test_policy_from_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
