/*
 * fuzz_dnsbl_site.c - libFuzzer target for DNS list site specifications
 * (core/dnsbl_site.c): the input is one smtp.dnsbl_sites item; a parsed site is matched
 * against a few answers.
 */
#include "core/dnsbl_site.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[600];
    if (size >= sizeof text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct dnsbl_site site;
    if (dnsbl_site_parse(text, &site)) {
        assert(site.domain[0] && strlen(site.domain) < sizeof site.domain);
        (void)dnsbl_site_matches(&site, "127.0.0.2");
        (void)dnsbl_site_matches(&site, "127.0.255.255");
        (void)dnsbl_site_matches(&site, "10.1.2.3");
    }
    return 0;
}
