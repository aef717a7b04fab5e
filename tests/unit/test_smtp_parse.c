/*
 * test_smtp_parse.c - unit tests for the SMTP command parser (smtp/parse.c) and the
 * DATA/BDAT reader (smtp/data.c), including the SMTP smuggling end-of-data cases.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "smtp/data.h"
#include "queue/queue.h"
#include "smtp/parse.h"

static struct smtp_command parse_line(const char *s)
{
    struct smtp_command c;
    assert_true(smtp_command_parse(s, strlen(s), &c));
    return c;
}

static void test_verbs_case_insensitive(void **state)
{
    (void)state;
    struct smtp_command c = parse_line("ehlo vodik.locnet");
    assert_int_equal(c.verb, SMTP_VERB_EHLO);
    assert_int_equal(c.arg_len, strlen("vodik.locnet"));
    assert_memory_equal(c.arg, "vodik.locnet", c.arg_len);
    assert_int_equal(parse_line("MaIl FROM:<a@b>").verb, SMTP_VERB_MAIL);
    assert_int_equal(parse_line("StartTLS").verb, SMTP_VERB_STARTTLS);
    assert_int_equal(parse_line("QUIT   ").verb, SMTP_VERB_QUIT);
    assert_int_equal(parse_line("QUIT").arg_len, 0);
    assert_int_equal(parse_line("XTARTTLS").verb, SMTP_VERB_UNKNOWN);
    assert_int_equal(parse_line("MAILX FROM:<a@b>").verb, SMTP_VERB_UNKNOWN);
    assert_int_equal(parse_line("GET / HTTP/1.0").verb, SMTP_VERB_NON_SMTP);
    struct smtp_command c2;
    assert_false(smtp_command_parse("", 0, &c2));
    assert_false(smtp_command_parse("   ", 3, &c2));
    assert_string_equal(smtp_verb_stat_name(SMTP_VERB_RCPT), "rcpt");
}

static bool mail(const char *arg, uint64_t max, struct addr *a, struct smtp_mail_params *p,
                 char *reply)
{
    return smtp_parse_mail(arg, strlen(arg), max, a, p, reply, SMTP_REPLY_MAX);
}

static void test_mail_paths(void **state)
{
    (void)state;
    struct addr a;
    struct smtp_mail_params p;
    char reply[SMTP_REPLY_MAX];
    /* seed 000: space after the colon, no brackets */
    assert_true(mail("FROM: od.koho.ten@email.je", 0, &a, &p, reply));
    assert_string_equal(a.local, "od.koho.ten");
    assert_string_equal(a.domain, "email.je");
    /* seed 004: no space, no brackets */
    assert_true(mail("FROM:sample@example.com", 0, &a, &p, reply));
    /* seed 001: null sender */
    assert_true(mail("FROM:<>", 0, &a, &p, reply));
    assert_true(a.is_null);
    assert_true(mail("from:<Alice@Example.TEST>", 0, &a, &p, reply));
    assert_string_equal(a.local, "Alice");
    assert_string_equal(a.domain, "example.test");
    assert_false(mail("FROM <a@b.c>", 0, &a, &p, reply));
    assert_string_equal(reply, "501 5.5.4 Syntax: MAIL FROM:<address>");
    assert_false(mail("TO:<a@b.c>", 0, &a, &p, reply));
    assert_false(mail("FROM:<a@b.c", 0, &a, &p, reply));
    assert_string_equal(reply, "501 5.1.7 Bad sender address syntax");
}

static void test_mail_params(void **state)
{
    (void)state;
    struct addr a;
    struct smtp_mail_params p;
    char reply[SMTP_REPLY_MAX];
    assert_true(mail("FROM:<a@b.c> SIZE=1000 BODY=8BITMIME SMTPUTF8", 5000, &a, &p, reply));
    assert_true(p.has_size);
    assert_int_equal(p.size, 1000);
    assert_int_equal(p.body, SMTP_BODY_8BITMIME);
    assert_true(p.is_smtputf8);
    assert_true(mail("FROM:<a@b.c> body=7bit", 0, &a, &p, reply));
    assert_int_equal(p.body, SMTP_BODY_7BIT);
    assert_true(mail("FROM:<a@b.c> AUTH=<>", 0, &a, &p, reply));
    assert_false(mail("FROM:<a@b.c> SIZE=5001", 5000, &a, &p, reply));
    assert_string_equal(reply, "552 5.3.4 Message size exceeds fixed limit");
    assert_false(mail("FROM:<a@b.c> SIZE=99999999999999999999999", 0, &a, &p, reply));
    assert_string_equal(reply, "501 5.5.4 Bad message size syntax");
    assert_false(mail("FROM:<a@b.c> SIZE=12x", 0, &a, &p, reply));
    assert_false(mail("FROM:<a@b.c> BODY=BINARYMIME", 0, &a, &p, reply));
    assert_false(mail("FROM:<a@b.c> RETX=HDRS", 0, &a, &p, reply));
    assert_string_equal(reply, "555 5.5.4 Unsupported option: RETX");
    assert_false(mail("FROM:<a@b.c> =x", 0, &a, &p, reply));
    assert_false(mail("FROM:<a@b.c> SMTPUTF8=yes", 0, &a, &p, reply));
}

static void test_rcpt(void **state)
{
    (void)state;
    struct addr a;
    char reply[SMTP_REPLY_MAX];
    const char *s = "TO: tsunami@tsunami.locnet";
    assert_true(smtp_parse_rcpt(s, strlen(s), &a, reply, sizeof reply));
    assert_string_equal(a.domain, "tsunami.locnet");
    s = "To:<bob@example.test>";
    assert_true(smtp_parse_rcpt(s, strlen(s), &a, reply, sizeof reply));
    s = "TO:<>";
    assert_false(smtp_parse_rcpt(s, strlen(s), &a, reply, sizeof reply));
    assert_string_equal(reply, "501 5.1.3 Bad recipient address syntax");
    s = "TO:<bob@example.test> NOTIFY=NEVER";
    assert_false(smtp_parse_rcpt(s, strlen(s), &a, reply, sizeof reply));
    assert_string_equal(reply, "555 5.5.4 Unsupported option: NOTIFY");
    s = "TO:<postmaster>"; /* RFC 5321 §4.1.1.3 */
    assert_true(smtp_parse_rcpt(s, strlen(s), &a, reply, sizeof reply));
    s = "FROM:<bob@example.test>";
    assert_false(smtp_parse_rcpt(s, strlen(s), &a, reply, sizeof reply));
    assert_string_equal(reply, "501 5.5.4 Syntax: RCPT TO:<address>");
}

/* RFC 3461 parameters of MAIL and RCPT, and xtext. */
static void test_dsn_params(void **state)
{
    (void)state;
    struct addr a;
    struct smtp_mail_params p;
    struct smtp_rcpt_params rp;
    char reply[SMTP_REPLY_MAX];
    assert_true(mail("FROM:<a@b.c> RET=HDRS ENVID=QQ+2B314", 0, &a, &p, reply));
    assert_int_equal(p.dsn_ret, QUEUE_RET_HDRS);
    assert_string_equal(p.envid, "QQ+314");
    assert_true(mail("FROM:<a@b.c> ret=full", 0, &a, &p, reply));
    assert_int_equal(p.dsn_ret, QUEUE_RET_FULL);
    assert_string_equal(p.envid, "");
    assert_false(mail("FROM:<a@b.c> RET=HDRS RET=FULL", 0, &a, &p, reply));
    assert_false(mail("FROM:<a@b.c> RET=BODY", 0, &a, &p, reply));
    assert_string_equal(reply, "501 5.5.4 Bad RET parameter syntax");
    assert_false(mail("FROM:<a@b.c> ENVID=a+2", 0, &a, &p, reply));  /* short hexchar */
    assert_false(mail("FROM:<a@b.c> ENVID=a+0A", 0, &a, &p, reply)); /* control */
    assert_false(mail("FROM:<a@b.c> ENVID=a+2b", 0, &a, &p, reply)); /* lower-case hex */
    char long_envid[200] = "FROM:<a@b.c> ENVID=";
    memset(long_envid + strlen(long_envid), 'x', 101);
    assert_false(mail(long_envid, 0, &a, &p, reply));
    assert_string_equal(reply, "501 5.5.4 Bad ENVID parameter syntax");

    const char *s = "TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.org";
    assert_true(smtp_parse_rcpt_dsn(s, strlen(s), &a, &rp, reply, sizeof reply));
    assert_int_equal(rp.notify, QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE);
    assert_string_equal(rp.orcpt, "rfc822;bob+x@example.org");
    s = "TO:<bob@example.org> notify=never";
    assert_true(smtp_parse_rcpt_dsn(s, strlen(s), &a, &rp, reply, sizeof reply));
    assert_int_equal(rp.notify, QUEUE_NOTIFY_NEVER);
    assert_string_equal(rp.orcpt, "");
    const char *bad[] = {
        "TO:<b@e.org> NOTIFY=NEVER,SUCCESS", "TO:<b@e.org> NOTIFY=SOMETIMES",
        "TO:<b@e.org> NOTIFY=SUCCESS,",      "TO:<b@e.org> NOTIFY=DELAY NOTIFY=DELAY",
        "TO:<b@e.org> ORCPT=bob@e.org",      "TO:<b@e.org> ORCPT=;bob",
        "TO:<b@e.org> ORCPT=rfc822;",        "TO:<b@e.org> ORCPT=rf/c;b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(smtp_parse_rcpt_dsn(bad[i], strlen(bad[i]), &a, &rp, reply, sizeof reply));
    s = "TO:<b@e.org> FOO=1";
    assert_false(smtp_parse_rcpt_dsn(s, strlen(s), &a, &rp, reply, sizeof reply));
    assert_string_equal(reply, "555 5.5.4 Unsupported option: FOO");

    char out[64];
    assert_true(queue_xtext_encode("a+b=c d\x7f", out, sizeof out));
    assert_string_equal(out, "a+2Bb+3Dc+20d+7F");
    char dec[64];
    assert_true(queue_xtext_decode(out, strlen(out) - 3, dec, sizeof dec));
    assert_string_equal(dec, "a+b=c d");
    assert_false(queue_xtext_decode("abc", 3, dec, 3)); /* no room for the NUL */
    char nf[40];
    queue_notify_format(QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_DELAY, nf, sizeof nf);
    assert_string_equal(nf, "SUCCESS,DELAY");
    queue_notify_format(QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY, nf, sizeof nf);
    assert_string_equal(nf, "FAILURE,DELAY");
    assert_true(queue_notify_wants(0, QUEUE_NOTIFY_FAILURE));
    assert_false(queue_notify_wants(0, QUEUE_NOTIFY_SUCCESS));
    assert_false(queue_notify_wants(QUEUE_NOTIFY_NEVER, QUEUE_NOTIFY_FAILURE));
}

static void test_bdat_auth_helo(void **state)
{
    (void)state;
    uint64_t n;
    bool last;
    assert_true(smtp_parse_bdat("100", 3, &n, &last));
    assert_int_equal(n, 100);
    assert_false(last);
    assert_true(smtp_parse_bdat("0 LAST", 6, &n, &last));
    assert_int_equal(n, 0);
    assert_true(last);
    assert_true(smtp_parse_bdat("7 last", 6, &n, &last));
    assert_false(smtp_parse_bdat("", 0, &n, &last));
    assert_false(smtp_parse_bdat("10LAST", 6, &n, &last));
    assert_false(smtp_parse_bdat("-1", 2, &n, &last));
    assert_false(smtp_parse_bdat("1 FIRST", 7, &n, &last));
    assert_false(smtp_parse_bdat("999999999999999999999", 21, &n, &last));

    /* RFC 4468 §3: BURL absolute-URI [LAST] */
    const char *url;
    size_t url_len;
    const char *b = "imap://a@h/INBOX/;UID=1;URLAUTH=anonymous:internal:00 LAST";
    assert_true(smtp_parse_burl(b, strlen(b), &url, &url_len, &last));
    assert_true(last);
    assert_int_equal(url_len, strlen(b) - 5);
    assert_true(smtp_parse_burl("imap://x", 8, &url, &url_len, &last));
    assert_false(last);
    assert_int_equal(url_len, 8);
    assert_true(smtp_parse_burl("imap://x  last", 14, &url, &url_len, &last));
    assert_true(last);
    assert_false(smtp_parse_burl("", 0, &url, &url_len, &last));
    assert_false(smtp_parse_burl(" imap://x", 9, &url, &url_len, &last));
    assert_false(smtp_parse_burl("imap://x LAST now", 17, &url, &url_len, &last));
    assert_false(smtp_parse_burl("imap://x FIRST", 14, &url, &url_len, &last));

    char mech[21];
    const char *ir;
    size_t irlen;
    const char *s = "plain AHNhbXBsZQBwYXNzd29yZA==";
    assert_true(smtp_parse_auth(s, strlen(s), mech, &ir, &irlen));
    assert_string_equal(mech, "PLAIN");
    assert_int_equal(irlen, strlen("AHNhbXBsZQBwYXNzd29yZA=="));
    s = "LOGIN";
    assert_true(smtp_parse_auth(s, strlen(s), mech, &ir, &irlen));
    assert_null(ir);
    s = "CRAM-MD5";
    assert_true(smtp_parse_auth(s, strlen(s), mech, &ir, &irlen));
    assert_string_equal(mech, "CRAM-MD5");
    s = "THIS-MECHANISM-NAME-IS-TOO-LONG";
    assert_false(smtp_parse_auth(s, strlen(s), mech, &ir, &irlen));
    s = "PLAIN a b";
    assert_false(smtp_parse_auth(s, strlen(s), mech, &ir, &irlen));

    char helo[256];
    s = "localhost.localdomain";
    assert_true(smtp_parse_helo(s, strlen(s), helo, sizeof helo));
    assert_string_equal(helo, "localhost.localdomain");
    s = "[127.0.0.1]";
    assert_true(smtp_parse_helo(s, strlen(s), helo, sizeof helo));
    assert_false(smtp_parse_helo("", 0, helo, sizeof helo));
}

/* Feed the whole input at once and in 1-byte pieces; both must agree. */
struct fed {
    struct buf out;
    size_t consumed;
    bool is_done;
    struct smtp_data_reader r;
};

static void feed_all(const char *in, size_t len, uint64_t max, struct fed *f)
{
    smtp_data_init(&f->r, max);
    buf_init(&f->out, 0);
    f->consumed = smtp_data_feed(&f->r, in, len, &f->out, &f->is_done);

    struct smtp_data_reader r2;
    struct buf out2;
    smtp_data_init(&r2, max);
    buf_init(&out2, 0);
    size_t consumed2 = 0;
    bool done2 = false;
    for (size_t i = 0; i < len && !done2; i++)
        consumed2 += smtp_data_feed(&r2, in + i, 1, &out2, &done2);
    assert_int_equal(consumed2, f->consumed);
    assert_int_equal(done2, f->is_done);
    assert_int_equal(out2.len, f->out.len);
    if (out2.len)
        assert_memory_equal(out2.data, f->out.data, out2.len);
    buf_free(&out2);
}

static void test_data_basic(void **state)
{
    (void)state;
    struct fed f;
    const char *in = "Subject: x\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n";
    feed_all(in, strlen(in), 0, &f);
    assert_true(f.is_done);
    assert_int_equal(f.consumed, strlen(in) - strlen("QUIT\r\n"));
    assert_string_equal(buf_cstr(&f.out), "Subject: x\r\n\r\nhello\r\n.dot\r\n");
    buf_free(&f.out);

    /* empty message: the CRLF of the DATA line counts (RFC 5321 §4.1.1.4) */
    feed_all(".\r\n", 3, 0, &f);
    assert_true(f.is_done);
    assert_int_equal(f.out.len, 0);
    buf_free(&f.out);

    /* a lone dot-stuffed dot line */
    in = "a\r\n..\r\n.\r\n";
    feed_all(in, strlen(in), 0, &f);
    assert_true(f.is_done);
    assert_string_equal(buf_cstr(&f.out), "a\r\n.\r\n");
    buf_free(&f.out);

    /* not finished yet */
    in = "a\r\n.\r";
    feed_all(in, strlen(in), 0, &f);
    assert_false(f.is_done);
    assert_int_equal(f.consumed, strlen(in));
    buf_free(&f.out);
}

/* The 2023 SMTP smuggling class: none of these may end the message. */
static void test_data_smuggling(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "x\n.\nMAIL FROM:<evil@x>\r\n",
        "x\r.\rMAIL FROM:<evil@x>\r\n",
        "x\n.\r\nMAIL FROM:<evil@x>\r\n",
        "x\r\n.\nMAIL FROM:<evil@x>\r\n",
        "x\r.\r\nMAIL FROM:<evil@x>\r\n",
        "x\r\n.\r\rMAIL FROM:<evil@x>\r\n",
        "x\r\n\n.\r\nMAIL FROM:<evil@x>\r\n",
        "\n.\r\n",
        ".\n",
        ".\r.\r\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fed f;
        feed_all(cases[i], strlen(cases[i]), 0, &f);
        if (f.is_done)
            fail_msg("case %zu ended the message", i);
        assert_int_equal(f.consumed, strlen(cases[i]));
        buf_free(&f.out);
    }
    /* and the real end after them is still found */
    const char *in = "x\n.\nMAIL FROM:<evil@x>\r\n.\r\n";
    struct fed f;
    feed_all(in, strlen(in), 0, &f);
    assert_true(f.is_done);
    /* bare LF normalised to CRLF, the dot after it NOT unstuffed as a line start */
    assert_string_equal(buf_cstr(&f.out), "x\r\n.\r\nMAIL FROM:<evil@x>\r\n");
    assert_int_equal(f.r.n_bare_lf, 2);
    buf_free(&f.out);

    in = "a\rb\r\n.\r\n";
    feed_all(in, strlen(in), 0, &f);
    assert_true(f.is_done);
    assert_int_equal(f.r.n_bare_cr, 1);
    assert_string_equal(buf_cstr(&f.out), "a\rb\r\n");
    buf_free(&f.out);
}

static void test_data_size_nul_long_lines(void **state)
{
    (void)state;
    struct fed f;
    const char in[] = "abc\0def\r\n.\r\n";
    feed_all(in, sizeof in - 1, 0, &f);
    assert_true(f.is_done);
    assert_int_equal(f.out.len, 9);
    assert_memory_equal(f.out.data, "abc\0def\r\n", 9);
    assert_int_equal(f.r.n_nul, 1);
    buf_free(&f.out);

    const char *big = "0123456789\r\n0123456789\r\n.\r\nNOOP\r\n";
    feed_all(big, strlen(big), 15, &f);
    assert_true(f.is_done);
    assert_true(f.r.is_too_big);
    assert_int_equal(f.out.len, 0);
    assert_int_equal(f.r.size, 24);
    assert_int_equal(f.consumed, strlen(big) - 6);
    buf_free(&f.out);

    size_t n = 2000;
    char *longline = malloc(n + 6);
    memset(longline, 'x', n);
    memcpy(longline + n, "\r\n.\r\n", 5);
    feed_all(longline, n + 5, 0, &f);
    assert_true(f.is_done);
    assert_int_equal(f.r.n_long_lines, 1);
    assert_int_equal(f.out.len, n + 2);
    buf_free(&f.out);
    free(longline);
}

static void test_data_header_scan(void **state)
{
    (void)state;
    struct fed f;
    const char *in = "Received: from a\r\nreceived: from b\r\n\tby c\r\nMessage-ID:  <1@x>\r\n"
                     "Date: now\r\n\r\nMessage-ID: <body@x>\r\nReceived: no\r\n.\r\n";
    feed_all(in, strlen(in), 0, &f);
    assert_true(f.is_done);
    assert_int_equal(f.r.n_received, 2);
    assert_true(f.r.has_message_id);
    assert_true(f.r.has_date);
    assert_string_equal(f.r.message_id, "<1@x>");
    buf_free(&f.out);

    /* Delivered-To values are remembered as address hashes (loop detection) */
    in = "Delivered-To: Alice@Example.TEST\r\nDelivered-To:  <bob@example.test> \r\n"
         "Subject: x\r\n\r\nDelivered-To: carol@example.test\r\n.\r\n";
    feed_all(in, strlen(in), 0, &f);
    assert_int_equal(f.r.n_delivered_to, 2);
    assert_true(f.r.delivered_to[0] == smtp_data_address_hash("alice@example.test"));
    assert_true(f.r.delivered_to[1] == smtp_data_address_hash("bob@example.test"));
    assert_true(f.r.delivered_to[1] != smtp_data_address_hash("carol@example.test"));
    buf_free(&f.out);

    /* seed 004: a first line without a colon means no header section at all */
    in = "SUBJECT this is test\r\nMessage-ID: <x@y>\r\n.\r\n";
    feed_all(in, strlen(in), 0, &f);
    assert_false(f.r.has_message_id);
    buf_free(&f.out);
}

static void test_bdat_chunk(void **state)
{
    (void)state;
    struct smtp_data_reader r;
    struct buf out;
    smtp_data_init(&r, 20);
    buf_init(&out, 0);
    smtp_data_feed_chunk(&r, "Date: x\r\n\r\n.\r\n", 14, &out);
    assert_int_equal(out.len, 14);
    assert_true(r.has_date);
    assert_false(r.is_too_big);
    smtp_data_feed_chunk(&r, "0123456789", 10, &out);
    assert_true(r.is_too_big);
    assert_int_equal(out.len, 0);
    assert_int_equal(r.size, 24);
    buf_free(&out);
}

/* Postfix's XCLIENT attributes: xtext values, [UNAVAILABLE], checked addresses. */
static void test_xclient(void **state)
{
    struct smtp_xclient x;
    char reply[SMTP_REPLY_MAX];
    const char *ok = "ADDR=192.0.2.9 NAME=client.example HELO=[192.0.2.9] PROTO=ESMTP "
                     "LOGIN=bob+2Bx@example.test PORT=4711";
    assert_true(smtp_parse_xclient(ok, strlen(ok), &x, reply, sizeof reply));
    assert_string_equal(x.addr, "192.0.2.9");
    assert_string_equal(x.name, "client.example");
    assert_string_equal(x.helo, "[192.0.2.9]");
    assert_string_equal(x.login, "bob+x@example.test");
    assert_int_equal(x.proto, 2);
    const char *v6 = "addr=IPV6:2001:db8::1 name=[UNAVAILABLE]";
    assert_true(smtp_parse_xclient(v6, strlen(v6), &x, reply, sizeof reply));
    assert_string_equal(x.addr, "2001:db8::1");
    assert_string_equal(x.name, "");
    const char *bad[] = {"", "ADDR", "=x", "ADDR=999.1.1.1", "ADDR=bogus", "PROTO=HTTP",
                         "NAME=a+0Db", "LOGIN=+zz"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(smtp_parse_xclient(bad[i], strlen(bad[i]), &x, reply, sizeof reply));
        assert_int_equal(reply[0], '5');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs_case_insensitive),
        cmocka_unit_test(test_mail_paths),
        cmocka_unit_test(test_mail_params),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_bdat_auth_helo),
        cmocka_unit_test(test_dsn_params),
        cmocka_unit_test(test_xclient),
        cmocka_unit_test(test_data_basic),
        cmocka_unit_test(test_data_smuggling),
        cmocka_unit_test(test_data_size_nul_long_lines),
        cmocka_unit_test(test_data_header_scan),
        cmocka_unit_test(test_bdat_chunk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
