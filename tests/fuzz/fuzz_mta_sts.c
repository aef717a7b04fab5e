/*
 * fuzz_mta_sts.c - libFuzzer target for the MTA-STS policy file and TXT record parsers
 * (RFC 8461 §3.1, §3.2), MX pattern matching, and the TLS-RPT record parser (RFC 8460
 * §3): no crash, values in range.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/mailauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mailauth_sts_policy p;
    if (mailauth_sts_policy_parse((const char *)data, size, &p) == 0) {
        if (p.n_mx > MAILAUTH_STS_MX_MAX || p.max_age < 0 || p.max_age > 31557600)
            abort();
        (void)mailauth_sts_mx_matches(&p, "mx1.example.net");
        (void)mailauth_sts_mx_matches(&p, "");
    }
    char id[40];
    if (mailauth_sts_record_parse((const char *)data, size, id, sizeof id) == 0 &&
        (strlen(id) == 0 || strlen(id) > 32))
        abort();
    char rua[256];
    if (mailauth_tlsrpt_record_parse((const char *)data, size, rua, sizeof rua) == 0 &&
        (!rua[0] || strlen(rua) >= sizeof rua))
        abort();
    return 0;
}
