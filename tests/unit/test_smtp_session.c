/*
 * test_smtp_session.c - the SMTP session state machine without sockets: scripted
 * exchanges through tests/unit/smtp_session_harness.h (stub core, directory, store),
 * checking replies, pipelining, STARTTLS reset, AUTH flow, BDAT and failure replies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "smtp_session_harness.h"

static void feed(const char *s)
{
    harness_feed(s, strlen(s));
}

/* The output so far must contain every given reply line, in this order. */
static void expect_in_order(const char *const *lines)
{
    const char *out = harness_output();
    const char *p = out;
    for (; *lines; lines++) {
        const char *hit = strstr(p, *lines);
        if (!hit)
            fail_msg("missing %s in:\n%s", *lines, out);
        p = hit + strlen(*lines);
    }
}

static void test_basic_transaction(void **state)
{
    harness_open(CONN_ROLE_SMTP, "/tmp");
    feed("EHLO client.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
         "RCPT TO:<nobody@example.test>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n"
         "Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n");
    const char *want[] = {"220 mail.example.test ESMTP\r\n",
                          "250-mail.example.test\r\n",
                          "250-STARTTLS\r\n",
                          "250-AUTH CRAM-MD5\r\n",
                          "250 CHUNKING\r\n",
                          "250 2.1.0 Ok\r\n",
                          "250 2.1.5 Ok\r\n",
                          "550 5.1.1 <nobody@example.test>: Recipient address rejected",
                          "554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n",
                          "354 End data with <CR><LF>.<CR><LF>\r\n",
                          "250 2.0.0 Ok: queued as ",
                          "221 2.0.0 Bye\r\n",
                          NULL};
    expect_in_order(want);
    harness_finish("disconnect");
}

static void test_state_and_limits(void **state)
{
    harness_open(CONN_ROLE_SMTP, "/tmp");
    feed("MAIL FROM:<a@b.example>\r\nHELO c\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
         "MAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n"
         "RCPT TO:<bob@example.test>\r\nRCPT TO:<off@example.test>\r\n"
         "RCPT TO:<broken@example.test>\r\n");
    for (int i = 0; i < 6; i++)
        feed("RCPT TO:<Alice@Example.TEST>\r\n");
    const char *want[] = {"503 5.5.1 Error: send HELO/EHLO first\r\n",
                          "250 mail.example.test\r\n",
                          "503 5.5.1 Error: need MAIL command\r\n",
                          "503 5.5.1 Error: need MAIL command\r\n",
                          "250 2.1.0 Ok\r\n",
                          "503 5.5.1 Error: nested MAIL command\r\n",
                          "503 5.5.1 Error: need RCPT command\r\n",
                          "452 4.2.2 <bob@example.test>: Recipient address rejected: Mailbox "
                          "full\r\n",
                          "550 5.1.1 <off@example.test>",
                          "451 4.3.0 <broken@example.test>: Temporary lookup failure\r\n",
                          "250 2.1.5 Ok\r\n",
                          "452 4.5.3 Error: too many recipients\r\n",
                          NULL};
    expect_in_order(want);
    harness_finish("disconnect");
}

static void test_starttls_resets_and_auth(void **state)
{
    harness_open(CONN_ROLE_SUBMISSION, "/tmp");
    feed("EHLO c\r\nMAIL FROM:<alice@example.test>\r\nAUTH PLAIN cHc=\r\n"
         "STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n");
    feed("MAIL FROM:<alice@example.test>\r\nEHLO c\r\nAUTH LOGIN\r\ndXNlcg==\r\ncHc=\r\n"
         "AUTH PLAIN cHc=\r\nMAIL FROM:<bob@example.test>\r\nMAIL FROM:<alice@example.test>\r\n"
         "RCPT TO:<fwd@example.test>\r\nBDAT 5\r\nab\r\nc");
    feed("BDAT 0 LAST\r\nQUIT\r\n");
    const char *want[] = {"250-STARTTLS\r\n",
                          "530 5.7.0 Authentication required\r\n",
                          "538 5.7.11 Encryption required",
                          "220 2.0.0 Ready to start TLS\r\n",
                          "503 5.5.1 Error: send HELO/EHLO first\r\n",
                          "250-AUTH PLAIN LOGIN CRAM-MD5\r\n",
                          "334 VXNlcm5hbWU6\r\n",
                          "334 UGFzc3dvcmQ6\r\n",
                          "235 2.7.0 Authentication successful\r\n",
                          "503 5.5.1 Error: already authenticated\r\n",
                          "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by "
                          "user alice@example.test\r\n",
                          "250 2.1.0 Ok\r\n",
                          "250 2.1.5 Ok\r\n",
                          "250 2.0.0 Ok: 5 bytes\r\n",
                          "250 2.0.0 Ok: queued as ",
                          "221 2.0.0 Bye\r\n",
                          NULL};
    expect_in_order(want);
    /* the evil MAIL pipelined behind STARTTLS never ran */
    assert_null(strstr(harness_output(), "evil"));
    harness_finish("disconnect");
}

static void test_auth_failures_and_cancel(void **state)
{
    harness_open(CONN_ROLE_SUBMISSIONS, "/tmp");
    feed("EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN bm9wZQ==\r\nAUTH PLAIN dGVtcA==\r\n"
         "AUTH DIGEST-MD5\r\nAUTH PLAIN a b\r\n");
    for (int i = 0; i < 5; i++)
        feed("AUTH PLAIN bm9wZQ==\r\n");
    const char *want[] = {"334 \r\n",
                          "501 5.7.0 Authentication aborted\r\n",
                          "535 5.7.8 Error: authentication failed: authentication failure\r\n",
                          "454 4.7.0 Temporary authentication failure\r\n",
                          "504 5.5.4 Unsupported authentication mechanism\r\n",
                          "501 5.5.4 Syntax: AUTH mechanism\r\n",
                          "454 4.7.0 Error: too many failed authentication attempts",
                          NULL};
    expect_in_order(want);
    harness_finish("disconnect");
}

static void test_delivery_failures_and_busy_close(void **state)
{
    harness_open(CONN_ROLE_SMTP, "/tmp");
    harness.fail_store = true;
    feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n");
    harness.fail_store = false;
    harness.fail_queue = true;
    feed("MAIL FROM:<>\r\nRCPT TO:<fwd@example.test>\r\nDATA\r\ny\r\n.\r\n");
    const char *want[] = {"354 ", "451 4.3.0 Error: queue file write error\r\n", "354 ",
                          "451 4.3.0 Error: queue file write error\r\n", NULL};
    expect_in_order(want);
    /* hang up while the delivery job is queued: close() first, then the job's done() */
    harness.fail_queue = false;
    fake_core_policy()->auto_jobs = false;
    feed("MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nz\r\n.\r\n");
    assert_int_equal(fake_jobs_queued(), 1);
    harness_finish("lost connection"); /* must not touch freed memory (ASan) */
}

static void test_big_message_spills_and_size_cap(void **state)
{
    harness_open(CONN_ROLE_SMTP, "/tmp");
    feed("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    char line[1002];
    memset(line, 'x', 998);
    memcpy(line + 998, "\r\n", 3);
    for (int i = 0; i < 3000; i++) /* 3 MB: over the 1 MiB memory part */
        feed(line);
    feed(".\r\nMAIL FROM:<> SIZE=5000000\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\n"
         "DATA\r\n");
    for (int i = 0; i < 5000; i++) /* 5 MB: over the 4 MiB cap */
        feed(line);
    feed(".\r\nNOOP\r\n");
    const char *want[] = {"354 ",
                          "250 2.0.0 Ok: queued as ",
                          "552 5.3.4 Message size exceeds fixed limit\r\n",
                          "250 2.1.0 Ok\r\n",
                          "354 ",
                          "552 5.3.4 Message size exceeds fixed limit\r\n",
                          "250 2.0.0 Ok\r\n",
                          NULL};
    expect_in_order(want);
    harness_finish("disconnect");
}

static void test_timeout_and_errors(void **state)
{
    harness_open(CONN_ROLE_SMTP, "/tmp");
    feed("EHLO c\r\n");
    harness_timeout();
    const char *want[] = {"421 4.4.2 mail.example.test Error: timeout exceeded\r\n", NULL};
    expect_in_order(want);
    harness_finish("timeout");

    harness_open(CONN_ROLE_SMTP, "/tmp");
    for (int i = 0; i < 25; i++)
        feed("XYZZY\r\n");
    const char *want2[] = {"502 5.5.2 Error: command not recognized\r\n",
                           "421 4.7.0 mail.example.test Error: too many errors\r\n", NULL};
    expect_in_order(want2);
    assert_true(fake_is_closing(0));
    harness_finish("disconnect");
}

/* A client that pipelines EHLO forever and never reads: the session stops taking
 * commands while its output is over the cap (so the core stops reading the socket),
 * and answers the rest, in order, once the peer reads again. */
static void test_unread_output_is_bounded(void **state)
{
    harness_open(CONN_ROLE_SMTP, "/tmp");
    harness_hold_output(true);
    enum { N = 20000 }; /* ~5 MB of EHLO replies if nothing stopped it */
    struct evbuffer *all = evbuffer_new();
    for (int i = 0; i < N; i++)
        evbuffer_add_printf(all, "EHLO c%d\r\n", i);
    evbuffer_add_printf(all, "QUIT\r\n");
    size_t len = evbuffer_get_length(all);
    harness_feed(evbuffer_pullup(all, -1), len);
    evbuffer_free(all);
    assert_true(fake_queued(0) < 1024 * 1024);
    assert_true(fake_is_paused(0));
    assert_true(fake_input_length(0) > 0); /* commands wait, unanswered */
    assert_false(fake_is_closing(0));
    /* the peer reads: everything is answered, up to QUIT */
    harness_hold_output(false);
    for (int i = 0; i < N && !fake_is_closing(0); i++)
        harness_drain();
    assert_true(fake_is_closing(0));
    assert_int_equal(fake_input_length(0), 0);
    const char *tail[] = {"250 CHUNKING\r\n221 2.0.0 Bye\r\n", NULL};
    expect_in_order(tail);
    assert_null(strstr(harness_output(), "421 "));
    harness_finish("disconnect");
}

/* Slowloris: every octet re-arms the core's idle timer, so a command line dribbled one
 * octet at a time must still be complete within smtp_timeout of its first octet. */
static void test_dribbled_line_times_out(void **state)
{
    harness_open(CONN_ROLE_SMTP, "/tmp");
    harness.cfg.smtp_timeout = 1;
    feed("EHLO c\r\nNO");
    assert_false(fake_is_closing(0));
    usleep(1100 * 1000); /* past the 1 s deadline of the partial line */
    feed("O");
    const char *want[] = {"421 4.4.2 mail.example.test Error: timeout exceeded\r\n", NULL};
    expect_in_order(want);
    assert_true(fake_is_closing(0));
    harness_finish("timeout");

    /* whole lines restart the clock: a slow but line-by-line client is served */
    harness_open(CONN_ROLE_SMTP, "/tmp");
    harness.cfg.smtp_timeout = 1;
    feed("NO");
    usleep(600 * 1000);
    feed("OP\r\nNO");
    usleep(600 * 1000);
    feed("OP\r\n");
    assert_false(fake_is_closing(0));
    assert_null(strstr(harness_output(), "421 "));
    harness_finish("disconnect");
}

/* Slowloris in DATA and BDAT: message text trickled in (each piece inside the idle
 * timeout) must still arrive at SMTP_MIN_DATA_RATE after smtp_timeout. */
static void test_trickled_message_text_times_out(void **state)
{
    const char *want[] = {"421 4.4.2 mail.example.test Error: timeout exceeded\r\n", NULL};
    harness_open(CONN_ROLE_SMTP, "/tmp");
    harness.cfg.smtp_timeout = 1;
    feed("EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
         "DATA\r\nSubject: x\r\n");
    assert_false(fake_is_closing(0));
    usleep(700 * 1000);
    feed("a\r\n"); /* whole lines, each inside the timeout */
    usleep(700 * 1000);
    feed("b\r\n");
    expect_in_order(want);
    assert_true(fake_is_closing(0));
    assert_null(strstr(harness_output(), "queued as"));
    harness_finish("timeout");

    /* BDAT: one budget over all chunks of the message */
    harness_open(CONN_ROLE_SMTP, "/tmp");
    harness.cfg.smtp_timeout = 1;
    feed("EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
         "BDAT 2\r\nab");
    usleep(700 * 1000);
    feed("BDAT 2\r\ncd");
    usleep(700 * 1000);
    feed("BDAT 2\r\nef");
    expect_in_order(want);
    assert_true(fake_is_closing(0));
    harness_finish("timeout");

    /* a message sent at once is unaffected, and the next one has its own clock */
    harness_open(CONN_ROLE_SMTP, "/tmp");
    harness.cfg.smtp_timeout = 1;
    feed("EHLO c\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
         "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
    usleep(1100 * 1000);
    feed("MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
         "DATA\r\nSubject: y\r\n\r\nhi\r\n.\r\n");
    assert_false(fake_is_closing(0));
    assert_null(strstr(harness_output(), "421 "));
    harness_finish("disconnect");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_transaction),
        cmocka_unit_test(test_state_and_limits),
        cmocka_unit_test(test_starttls_resets_and_auth),
        cmocka_unit_test(test_auth_failures_and_cancel),
        cmocka_unit_test(test_delivery_failures_and_busy_close),
        cmocka_unit_test(test_big_message_spills_and_size_cap),
        cmocka_unit_test(test_timeout_and_errors),
        cmocka_unit_test(test_unread_output_is_bounded),
        cmocka_unit_test(test_dribbled_line_times_out),
        cmocka_unit_test(test_trickled_message_text_times_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
