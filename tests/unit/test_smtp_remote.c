/*
 * test_smtp_remote.c - the envelope a login process sends with a message to the mail
 * worker that delivers it (smtp/remote.c): what it encodes decodes to the same job, and
 * what a taken-over login process could send instead is refused (a queue id that is a
 * path, control octets that would reach the spool's text envelope, a copy answering a
 * recipient that does not exist, trailing bytes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/delivery.h"
#include "smtp/mailauth_hook.h"
#include "smtp/remote.h"
#include "smtp/session.h"

static struct smtp_delivery_job *sample(void)
{
    struct smtp_delivery_job *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->fd = -1;
    strcpy(j->queue_id, "5E4A5BA2D4F1");
    j->sender = strdup("a@example.org");
    j->nrcpt = 2;
    j->dsn_ret = 1;
    j->envid = strdup("ENV1");
    j->hostname = strdup("mail.example.test");
    j->arrival = 1700000000;
    j->is_our_mail = true;
    j->n_local = 2;
    j->local = calloc(2, sizeof *j->local);
    j->headers = calloc(2, sizeof *j->headers);
    j->targets = calloc(2, sizeof *j->targets);
    for (int i = 0; i < 2; i++) {
        j->local[i].user = strdup(i ? "bob@example.test" : "alice@example.test");
        j->local[i].orig_rcpt = strdup("info@example.test");
        j->local[i].notify = 3;
        j->local[i].orcpt = i ? strdup("rfc822;info@example.test") : NULL;
        j->local[i].rcpt_index = (unsigned)i;
        j->headers[i] = strdup("Return-Path: <a@example.org>\r\nDelivered-To: x\r\n");
    }
    j->n_remote = 1;
    j->remote = calloc(1, sizeof *j->remote);
    j->remote_notify = calloc(1, sizeof *j->remote_notify);
    j->remote_orcpt = calloc(1, sizeof *j->remote_orcpt);
    j->remote[0] = strdup("far@example.net");
    j->remote_notify[0] = 1;
    j->remote_header = strdup("Received: from x\r\n");
    j->mailauth = calloc(1, sizeof *j->mailauth);
    strcpy(j->mailauth->ip, "192.0.2.7");
    strcpy(j->mailauth->helo, "client.example.org");
    strcpy(j->mailauth->from, "a@example.org");
    j->mailauth->has_spf = true;
    j->mailauth->spf.result = MAILAUTH_SOFTFAIL;
    strcpy(j->mailauth->spf.domain, "example.org");
    j->mailauth->dmarc_rank = 2;
    return j;
}

static struct smtp_delivery_job *roundtrip(const struct smtp_delivery_job *j)
{
    struct buf b;
    buf_init(&b, 0);
    assert_true(smtp_remote_envelope_encode(j, &b));
    struct smtp_delivery_job *back = smtp_remote_envelope_decode(b.data, b.len);
    buf_free(&b);
    return back;
}

static void test_roundtrip(void **state)
{
    struct smtp_delivery_job *j = sample();
    struct smtp_delivery_job *b = roundtrip(j);
    assert_non_null(b);
    assert_string_equal(b->queue_id, "5E4A5BA2D4F1");
    assert_string_equal(b->sender, "a@example.org");
    assert_int_equal(b->nrcpt, 2);
    assert_int_equal(b->dsn_ret, 1);
    assert_string_equal(b->envid, "ENV1");
    assert_int_equal(b->arrival, 1700000000);
    assert_true(b->is_our_mail);
    assert_false(b->is_lmtp);
    assert_int_equal(b->n_local, 2);
    assert_string_equal(b->local[1].user, "bob@example.test");
    assert_null(b->local[0].orcpt);
    assert_string_equal(b->local[1].orcpt, "rfc822;info@example.test");
    assert_int_equal(b->local[1].rcpt_index, 1);
    assert_null(b->local[1].home); /* never from the login process: looked up again */
    assert_string_equal(b->headers[0], j->headers[0]);
    assert_int_equal(b->n_remote, 1);
    assert_string_equal(b->remote[0], "far@example.net");
    assert_null(b->remote_orcpt[0]);
    assert_string_equal(b->remote_header, "Received: from x\r\n");
    assert_non_null(b->mailauth);
    assert_int_equal(b->mailauth->spf.result, MAILAUTH_SOFTFAIL);
    assert_string_equal(b->mailauth->spf.domain, "example.org");
    assert_int_equal(b->mailauth->dmarc_rank, 2);
    /* the milters ran in the login process: not again in the worker, nothing decided */
    assert_true(b->is_filtered);
    assert_false(b->is_held);
    assert_false(b->is_junk);
    smtp_delivery_job_free(b);
    smtp_delivery_job_free(j);
}

/* What the milters decided in the login process reaches the worker as two flags; a hold
 * without the Received line the hold queue needs is refused. */
static void test_milter_flags(void **state)
{
    struct smtp_delivery_job *j = sample();
    j->is_held = true;
    j->is_junk = true;
    struct smtp_delivery_job *b = roundtrip(j);
    assert_non_null(b);
    assert_true(b->is_held);
    assert_true(b->is_junk);
    assert_true(b->is_filtered);
    smtp_delivery_job_free(b);
    for (size_t i = 0; i < j->n_remote; i++)
        free(j->remote[i]);
    j->n_remote = 0;
    free(j->remote_header);
    j->remote_header = NULL;
    assert_null(roundtrip(j));
    smtp_delivery_job_free(j);
}

static void test_hostile(void **state)
{
    struct smtp_delivery_job *j = sample();
    strcpy(j->queue_id, "../../etc"); /* names spool files */
    assert_null(roundtrip(j));
    strcpy(j->queue_id, "5E4A5BA2D4F1");
    free(j->sender);
    j->sender = strdup("a@example.org\nrecipient=evil@example.net");
    assert_null(roundtrip(j));
    free(j->sender);
    j->sender = strdup("a@example.org");
    j->local[1].rcpt_index = 2; /* answers a recipient that was never accepted */
    assert_null(roundtrip(j));
    j->local[1].rcpt_index = 1;
    free(j->remote[0]);
    j->remote[0] = strdup("far@example.net\r");
    assert_null(roundtrip(j));
    free(j->remote[0]);
    j->remote[0] = strdup("far@example.net");
    struct smtp_delivery_job *ok = roundtrip(j);
    assert_non_null(ok);
    smtp_delivery_job_free(ok);
    /* a truncated or extended envelope */
    struct buf b;
    buf_init(&b, 0);
    assert_true(smtp_remote_envelope_encode(j, &b));
    for (size_t cut = 0; cut < b.len; cut += 7)
        assert_null(smtp_remote_envelope_decode(b.data, cut));
    assert_true(buf_append(&b, "x", 2));
    assert_null(smtp_remote_envelope_decode(b.data, b.len));
    buf_free(&b);
    smtp_delivery_job_free(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_milter_flags),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
