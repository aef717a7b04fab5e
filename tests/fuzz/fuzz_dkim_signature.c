/*
 * fuzz_dkim_signature.c - libFuzzer target for DKIM verification of a hostile message:
 * header splitting, the DKIM-Signature parser, canonicalization of headers and body, the
 * header hash input (b= removal) and the key fetch, against a table DNS holding RFC 8463's
 * keys. No crash, no over-read, results within their enums and array.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/test_mailauth_util.h"
#include "mailauth/mailauth.h"

static const struct table_row rows[] = {
    {"brisbane._domainkey.football.example.com", MAILAUTH_DNS_TXT,
     "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
    {"test._domainkey.football.example.com", MAILAUTH_DNS_TXT,
     "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/"
     "J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+"
     "2kryOTIKT+l/K4w3QIDAQAB"},
    {"x._domainkey.e.example", MAILAUTH_DNS_TXT, NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct table_dns t = {.rows = rows, .n = sizeof rows / sizeof rows[0]};
    struct mailauth_dns dns = table_dns(&t);
    struct mailauth_message m = {.data = (const char *)data, .len = size, .fd = -1};
    struct mailauth_dkim_result r[MAILAUTH_DKIM_SIGS_MAX];
    size_t n = 0;
    (void)mailauth_dkim_verify(&m, &dns, 1600000000, r, &n);
    if (n > MAILAUTH_DKIM_SIGS_MAX || t.n_lookups > MAILAUTH_DKIM_SIGS_MAX)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned)r[i].result > MAILAUTH_PERMERROR || !memchr(r[i].reason, 0, sizeof r[i].reason))
            abort();
    /* the signature parser alone, on the raw input */
    struct mailauth_dkim_sig sig;
    const char *err;
    if (mailauth_dkim_sig_parse((const char *)data, size, &sig, &err) == 0 &&
        (sig.bh_len > sizeof sig.bh || sig.b_len > sizeof sig.b || !sig.domain[0]))
        abort();
    return 0;
}
