/*
 * fuzz_arc.c - libFuzzer target for ARC (RFC 8617) on a hostile message: collecting the
 * sets (instances, duplicates, gaps), the ARC-Seal and ARC-Message-Signature parsers,
 * the seal hash input, against a table DNS with one RSA key. Also the ARC-Seal parser
 * alone on the raw input. No crash, results in range.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/test_mailauth_util.h"
#include "mailauth/mailauth.h"

static const struct table_row rows[] = {
    {"test._domainkey.football.example.com", MAILAUTH_DNS_TXT,
     "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/"
     "J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+"
     "2kryOTIKT+l/K4w3QIDAQAB"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct table_dns t = {.rows = rows, .n = 1};
    struct mailauth_dns dns = table_dns(&t);
    struct mailauth_message m = {.data = (const char *)data, .len = size, .fd = -1};
    struct mailauth_arc_result r;
    if (mailauth_arc_verify(&m, &dns, &r) == 0) {
        if ((unsigned)r.result > MAILAUTH_PERMERROR || r.n_sets > MAILAUTH_ARC_MAX)
            abort();
        /* one key lookup per seal and one for the newest AMS at most */
        if (t.n_lookups > MAILAUTH_ARC_MAX + 1)
            abort();
    }
    struct mailauth_arc_seal seal;
    const char *err;
    if (mailauth_arc_seal_parse((const char *)data, size, &seal, &err) == 0 &&
        (seal.instance < 1 || seal.instance > MAILAUTH_ARC_MAX || seal.b_len > sizeof seal.b))
        abort();
    return 0;
}
