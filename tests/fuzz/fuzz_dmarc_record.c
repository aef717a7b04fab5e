/*
 * fuzz_dmarc_record.c - libFuzzer target for the DMARC record parser (RFC 7489 §6.3) and
 * the From-domain extraction DMARC starts from: no crash, values in range.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/mailauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mailauth_dmarc_record r;
    if (mailauth_dmarc_record_parse((const char *)data, size, &r) == 0) {
        if (r.pct > 100 || r.policy < 0 || r.policy > MAILAUTH_DMARC_POLICY_REJECT ||
            r.subdomain_policy > MAILAUTH_DMARC_POLICY_REJECT)
            abort();
    }
    struct mailauth_header f[64];
    size_t body;
    bool tr;
    size_t n = mailauth_headers_parse((const char *)data, size, f, 64, &body, &tr);
    char d[254];
    if (mailauth_from_domain((const char *)data, f, n, d, sizeof d) && (!d[0] || strlen(d) > 253))
        abort();
    char org[254];
    if (size > 0 && size < 250) {
        char name[256];
        memcpy(name, data, size);
        name[size] = 0;
        mailauth_org_domain(name, org, sizeof org);
    }
    return 0;
}
