/*
 * test_outbound.c - unit tests of the pure parts of outbound delivery: SMTP reply parsing
 * (multi-line, enhanced codes, hostile input), EHLO capabilities, the retry schedule,
 * route strings, MX RDATA (null MX), DSN building and queue flush.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/config.h"
#include "queue/outbound.h"
#include "queue/queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int parse(const char *s, struct outbound_reply *r, size_t *used)
{
    return outbound_reply_parse(s, strlen(s), r, used);
}

static void test_reply_single(void **state)
{
    struct outbound_reply r;
    size_t used = 0;
    assert_int_equal(parse("250 2.1.5 Ok\r\nEXTRA", &r, &used), 1);
    assert_int_equal(r.code, 250);
    assert_string_equal(r.enh, "2.1.5");
    assert_string_equal(r.text, "2.1.5 Ok");
    assert_string_equal(r.last, "250 2.1.5 Ok");
    assert_int_equal(used, 14);
    /* bare code, LF only */
    assert_int_equal(parse("354\n", &r, &used), 1);
    assert_int_equal(r.code, 354);
    assert_string_equal(r.enh, "");
}

static void test_reply_multiline(void **state)
{
    struct outbound_reply r;
    size_t used = 0;
    const char *s = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 AUTH PLAIN LOGIN\r\n";
    assert_int_equal(parse(s, &r, &used), 1);
    assert_int_equal(used, strlen(s));
    assert_string_equal(r.text, "mx.test\nPIPELINING\nSIZE 1000\nAUTH PLAIN LOGIN");
    struct outbound_ehlo e;
    outbound_ehlo_parse(&r, &e);
    assert_true(e.has_pipelining);
    assert_true(e.has_size);
    assert_int_equal(e.size_limit, 1000);
    assert_true(e.has_auth_plain);
    assert_true(e.has_auth_login);
    assert_false(e.has_starttls);
    assert_false(e.has_8bitmime);
    /* the greeting line's text is never taken for a keyword */
    assert_int_equal(parse("250-STARTTLS\r\n250 8BITMIME\r\n", &r, &used), 1);
    outbound_ehlo_parse(&r, &e);
    assert_false(e.has_starttls);
    assert_true(e.has_8bitmime);
}

static void test_reply_incomplete_and_bad(void **state)
{
    struct outbound_reply r;
    size_t used = 0;
    assert_int_equal(parse("250-first\r\n250 sec", &r, &used), 0);
    assert_int_equal(parse("", &r, &used), 0);
    assert_int_equal(parse("25\r\n", &r, &used), -1);
    assert_int_equal(parse("abc hello\r\n", &r, &used), -1);
    assert_int_equal(parse("250-a\r\n251 b\r\n", &r, &used), -1); /* mixed codes */
    assert_int_equal(parse("250xfoo\r\n", &r, &used), -1);
    assert_int_equal(parse("650 nope\r\n", &r, &used), -1);
    /* enhanced code must match the class */
    assert_int_equal(parse("550 4.1.1 odd\r\n", &r, &used), 1);
    assert_string_equal(r.enh, "");
    /* an endless line without LF is an error once it is too long */
    char *big = malloc(5000);
    memset(big, 'a', 4999);
    big[4999] = '\0';
    memcpy(big, "250 ", 4);
    assert_int_equal(parse(big, &r, &used), -1);
    /* too many lines */
    char *many = malloc(200 * 8 + 16);
    size_t n = 0;
    for (int i = 0; i < 200; i++)
        n += (size_t)sprintf(many + n, "250-x\r\n");
    assert_int_equal(outbound_reply_parse(many, n, &r, &used), -1);
    free(many);
    free(big);
}

static void test_retry_schedule(void **state)
{
    assert_int_equal(outbound_retry_delay(1, 300, 14400), 300);
    assert_int_equal(outbound_retry_delay(2, 300, 14400), 600);
    assert_int_equal(outbound_retry_delay(3, 300, 14400), 1200);
    assert_int_equal(outbound_retry_delay(4, 300, 14400), 2400);
    assert_int_equal(outbound_retry_delay(6, 300, 14400), 9600);
    assert_int_equal(outbound_retry_delay(7, 300, 14400), 14400);
    assert_int_equal(outbound_retry_delay(1000000, 300, 14400), 14400);
    assert_int_equal(outbound_retry_delay(0, 300, 14400), 300);
    assert_int_equal(outbound_retry_delay(3, 0, 0), 1);
    assert_int_equal(outbound_retry_delay(40, 4000000000u, 4294967295u), 4294967295u);
}

static void test_route_parse(void **state)
{
    struct outbound_route r;
    assert_int_equal(outbound_route_parse("[127.0.0.1]:2525", 25, &r), 0);
    assert_string_equal(r.host, "127.0.0.1");
    assert_int_equal(r.port, 2525);
    assert_true(r.is_literal);
    assert_int_equal(outbound_route_parse("[smtp.example.org]", 25, &r), 0);
    assert_int_equal(r.port, 25);
    assert_true(r.is_literal);
    assert_int_equal(outbound_route_parse("example.org:587", 25, &r), 0);
    assert_false(r.is_literal);
    assert_int_equal(r.port, 587);
    assert_int_equal(outbound_route_parse("[::1]:26", 25, &r), 0);
    assert_string_equal(r.host, "::1");
    assert_int_equal(outbound_route_parse("[x]:0", 25, &r), -1);
    assert_int_equal(outbound_route_parse("[x]:70000", 25, &r), -1);
    assert_int_equal(outbound_route_parse("[x", 25, &r), -1);
    assert_int_equal(outbound_route_parse("[]:25", 25, &r), -1);
    assert_int_equal(outbound_route_parse("[x]y", 25, &r), -1);
    assert_int_equal(outbound_route_parse("x:", 25, &r), -1);
}

static void test_mx_rdata(void **state)
{
    uint16_t pref;
    char name[256];
    const unsigned char mx[] = {0, 10, 3, 'm', 'x', '1', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0};
    assert_int_equal(outbound_dns_parse_mx(mx, sizeof mx, &pref, name, sizeof name), 0);
    assert_int_equal(pref, 10);
    assert_string_equal(name, "mx1.example");
    const unsigned char nullmx[] = {0, 0, 0};
    assert_int_equal(outbound_dns_parse_mx(nullmx, sizeof nullmx, &pref, name, sizeof name), 0);
    assert_string_equal(name, ".");
    const unsigned char trunc[] = {0, 10, 5, 'a', 'b'};
    assert_int_equal(outbound_dns_parse_mx(trunc, sizeof trunc, &pref, name, sizeof name), -1);
    const unsigned char ptr[] = {0, 10, 0xc0, 0x0c};
    assert_int_equal(outbound_dns_parse_mx(ptr, sizeof ptr, &pref, name, sizeof name), -1);
    const unsigned char dot[] = {0, 10, 3, 'a', '.', 'b', 0};
    assert_int_equal(outbound_dns_parse_mx(dot, sizeof dot, &pref, name, sizeof name), -1);
    const unsigned char trailing[] = {0, 10, 1, 'a', 0, 'x'};
    assert_int_equal(outbound_dns_parse_mx(trailing, sizeof trailing, &pref, name, sizeof name),
                     -1);
    assert_int_equal(outbound_dns_parse_mx(mx, sizeof mx, &pref, name, 5), -1);
}

static void test_dsn(void **state)
{
    const char *msg = "From: a@x.test\r\nSubject: s\r\n\r\nbody text\r\n";
    size_t hl = bounce_header_length(msg, strlen(msg));
    assert_int_equal(hl, strlen("From: a@x.test\r\nSubject: s\r\n\r\n"));
    assert_int_equal(bounce_header_length("no end", 6), 6);
    assert_int_equal(bounce_header_length("A: b\n\nbody", 10), 6);
    struct bounce_rcpt r[2] = {
        {.address = "u@r.test",
         .dsn = "5.1.1",
         .diagnostic = "host mx[1.2.3.4] said: 550 5.1.1 no\r\nsuch user",
         .remote_mta = "mx.r.test",
         .smtp_reply = "550 5.1.1 no such user"},
        {.address = "v@r.test",
         .dsn = "5.1.10",
         .diagnostic = "Domain r.test does not "
                       "accept mail (nullMX)"},
    };
    struct bounce_info info = {.hostname = "mail.example.test",
                               .queue_id = "ABC123",
                               .arrival = 1795597200,
                               .now = 1795597300,
                               .to = "a@x.test",
                               .headers = msg,
                               .headers_len = hl,
                               .boundary = "B.1/x"};
    struct buf b;
    buf_init(&b, 0);
    assert_true(bounce_build(&b, &info, r, 2));
    const char *t = b.data;
    assert_non_null(strstr(t, "To: <a@x.test>\r\n"));
    assert_non_null(strstr(t, "Subject: Undelivered Mail Returned to Sender\r\n"));
    assert_non_null(strstr(t, "Auto-Submitted: auto-replied\r\n"));
    assert_non_null(strstr(t, "Content-Type: multipart/report; report-type=delivery-status;"
                              "\r\n\tboundary=\"B.1/x\"\r\n"));
    assert_non_null(strstr(t, "Reporting-MTA: dns; mail.example.test\r\n"));
    assert_non_null(strstr(t, "Final-Recipient: rfc822; u@r.test\r\nAction: failed\r\n"
                              "Status: 5.1.1\r\nRemote-MTA: dns; mx.r.test\r\n"
                              "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
    assert_non_null(strstr(t, "Final-Recipient: rfc822; v@r.test\r\nAction: failed\r\n"
                              "Status: 5.1.10\r\nDiagnostic-Code: X-Tern; Domain r.test"));
    /* a multi-line diagnostic stays on one line in the human part */
    assert_non_null(strstr(t, "<u@r.test>: host mx[1.2.3.4] said: 550 5.1.1 no  such user\r\n"));
    assert_non_null(strstr(t, "Content-Type: text/rfc822-headers\r\n\r\nFrom: a@x.test\r\n"));
    assert_null(strstr(t, "body text"));
    assert_non_null(strstr(t, "\r\n--B.1/x--\r\n"));
    /* every line ends in CRLF */
    for (size_t i = 0; i < b.len; i++)
        if (t[i] == '\n')
            assert_true(i > 0 && t[i - 1] == '\r');
    buf_free(&b);
    /* delay warnings say so */
    r[0].is_delayed = r[1].is_delayed = true;
    buf_init(&b, 0);
    assert_true(bounce_build(&b, &info, r, 2));
    assert_non_null(strstr(b.data, "Action: delayed"));
    assert_non_null(strstr(b.data, "Subject: Delayed Mail"));
    buf_free(&b);
    /* a size-capped buffer fails cleanly */
    buf_init(&b, 100);
    assert_false(bounce_build(&b, &info, r, 2));
    buf_free(&b);
}

static void test_flush(void **state)
{
    char root[] = "/tmp/test_outbound.XXXXXX";
    assert_non_null(mkdtemp(root));
    char path[512];
    snprintf(path, sizeof path, "%s/queue", root);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/queue/deferred", root);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/queue/active", root);
    mkdir(path, 0700);
    const char *body = "Subject: x\r\n\r\nx\r\n";
    const char *ids[2] = {"AAA1", "BBB2"};
    const char *rcpts[2] = {"u@one.test", "u@two.test"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/queue/deferred/%s", root, ids[i]);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f,
                "TERNQ1\nid=%s\narrival=1\nattempts=1\nsender=a%%40x.test\nrcpt=%s\n"
                "size=%zu\n\n%s",
                ids[i], rcpts[i], strlen(body), body);
        fclose(f);
    }
    char *err = NULL;
    assert_int_equal(queue_flush(root, "TWO.test", &err), 1);
    snprintf(path, sizeof path, "%s/queue/active/BBB2", root);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(queue_flush_domain(root, "none.test"), 0);
    assert_int_equal(queue_flush(root, NULL, &err), 1);
    snprintf(path, sizeof path, "%s/queue/active/AAA1", root);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(queue_flush("/nonexistent/x", NULL, &err), 0);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/queue/active/%s", root, ids[i]);
        unlink(path);
    }
    const char *dirs[] = {"queue/deferred", "queue/active", "queue", ""};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        rmdir(path);
    }
    free(err);
}

static void test_config_keys(void **state)
{
    const char *text = "transport.Remote.test = [127.0.0.1]:2525\n"
                       "transport.other.test = mx.other.test\n"
                       "transport.remote.TEST = [127.0.0.1]:2626\n"
                       "queue.retry_min = 60\nrelayhost = [smtp.example]:587\n";
    char *err = NULL;
    struct config *cfg = config_parse_buffer("t", text, strlen(text), NULL, 0, false, &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->transports.n, 2); /* a later line for a domain replaces it */
    assert_string_equal(cfg->transports.items[0], "remote.TEST [127.0.0.1]:2626");
    assert_int_equal(cfg->queue_retry_min, 60);
    assert_int_equal(cfg->queue_retry_max, 14400);
    assert_int_equal(cfg->queue_lifetime, 432000);
    struct outbound_route r;
    bool is_relay;
    assert_int_equal(outbound_route_for(cfg, "remote.test", &r, &is_relay), 0);
    assert_false(is_relay);
    assert_int_equal(r.port, 2626);
    assert_int_equal(outbound_route_for(cfg, "other.test", &r, &is_relay), 0);
    assert_false(r.is_literal);
    assert_string_equal(r.host, "mx.other.test");
    assert_int_equal(outbound_route_for(cfg, "else.test", &r, &is_relay), 0);
    assert_true(is_relay);
    assert_string_equal(r.host, "smtp.example");
    assert_int_equal(r.port, 587);
    config_free(cfg);
    /* address literals skip the MX lookup */
    cfg = config_parse_buffer("t", "", 0, NULL, 0, false, &err);
    assert_non_null(cfg);
    assert_int_equal(outbound_route_for(cfg, "[192.0.2.1]", &r, &is_relay), 0);
    assert_true(r.is_literal);
    assert_string_equal(r.host, "192.0.2.1");
    assert_int_equal(r.port, 25);
    assert_int_equal(outbound_route_for(cfg, "[IPv6:2001:db8::1]", &r, &is_relay), 0);
    assert_string_equal(r.host, "2001:db8::1");
    assert_int_equal(outbound_route_for(cfg, "example.org", &r, &is_relay), 0);
    assert_false(r.is_literal);
    config_free(cfg);
    const char *bad[] = {"transport. = x\n", "transport.a.test =\n", "transport.a = b c\n"};
    for (size_t i = 0; i < 3; i++) {
        err = NULL;
        assert_null(config_parse_buffer("t", bad[i], strlen(bad[i]), NULL, 0, false, &err));
        assert_non_null(err);
        free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_single),
        cmocka_unit_test(test_reply_multiline),
        cmocka_unit_test(test_reply_incomplete_and_bad),
        cmocka_unit_test(test_retry_schedule),
        cmocka_unit_test(test_route_parse),
        cmocka_unit_test(test_mx_rdata),
        cmocka_unit_test(test_dsn),
        cmocka_unit_test(test_flush),
        cmocka_unit_test(test_config_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
