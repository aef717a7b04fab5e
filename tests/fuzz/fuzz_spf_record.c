/*
 * fuzz_spf_record.c - libFuzzer target for SPF (RFC 7208): the record parser, then a whole
 * check_host() where the input is the record of the sender's domain and of every name it
 * points to (include, redirect, exp, a, mx, exists all land on records built from the
 * input), so macros, CIDRs, recursion and the lookup limits all get hostile data. The DNS
 * lookup count must stay within the limits whatever the record says.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/mailauth.h"

static const char *record;
static size_t record_len;
static unsigned n_lookups;

static enum mailauth_dns_status fuzz_lookup(void *ctx, const char *name, int type,
                                            struct mailauth_dns_answer *a)
{
    n_lookups++;
    a->n = 0;
    if (strncmp(name, "nx.", 3) == 0)
        return MAILAUTH_DNS_NXDOMAIN;
    if (strncmp(name, "tf.", 3) == 0)
        return MAILAUTH_DNS_TEMPFAIL;
    size_t l = record_len < MAILAUTH_DNS_RR_MAX - 1 ? record_len : MAILAUTH_DNS_RR_MAX - 1;
    if (type == MAILAUTH_DNS_TXT) {
        memcpy(a->rr[0].data, record, l);
        a->rr[0].data[l] = 0;
        a->rr[0].len = l;
        a->n = 1;
    } else if (type == MAILAUTH_DNS_A) {
        memcpy(a->rr[0].data, "\x7f\x00\x00\x01", 4);
        a->rr[0].len = 4;
        a->n = 1;
    } else if (type == MAILAUTH_DNS_MX || type == MAILAUTH_DNS_PTR) {
        for (size_t i = 0; i < 12; i++) {
            memcpy(a->rr[i].data, "mx.example.org", 15);
            a->rr[i].len = 14;
        }
        a->n = 12;
    }
    return MAILAUTH_DNS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n_terms;
    (void)mailauth_spf_record_parse((const char *)data, size, &n_terms);
    record = (const char *)data;
    record_len = size;
    n_lookups = 0;
    struct mailauth_dns dns = {.lookup = fuzz_lookup, .ctx = NULL};
    struct mailauth_spf_result r;
    const char *ip = size && (data[0] & 1) ? "2001:db8::1" : "192.0.2.1";
    mailauth_spf_check(&dns, ip, "helo.example.org", "user@example.org", "mx.example.net", 1, &r);
    if ((unsigned)r.result > MAILAUTH_PERMERROR)
        abort();
    /* 10 terms + their exp/ptr/mx follow-ups: far below this */
    if (n_lookups > 400)
        abort();
    return 0;
}
