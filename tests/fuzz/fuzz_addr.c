/*
 * fuzz_addr.c - libFuzzer target for SMTP path parsing (addr_parse_path, addr_parse_plain,
 * addr_strip_tag): no crash, no over-read, and the invariants of addr.h hold.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* first byte picks MAIL FROM (null path allowed) or RCPT TO */
    bool allow_null = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    struct addr a;
    size_t off = 0;
    if (addr_parse_path(text, len, allow_null, &a, &off)) {
        if (off > len)
            abort();
        if (strlen(a.local) > ADDR_MAX_LOCAL * 2 || strlen(a.domain) > ADDR_MAX_DOMAIN)
            abort();
        if (a.is_null && (!allow_null || a.local[0] || a.domain[0]))
            abort();
        for (const char *p = a.domain; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                abort(); /* the domain is lower-cased */
        char out[ADDR_MAX_PATH + 1];
        addr_format(&a, out, sizeof out);
        char tag[ADDR_MAX_LOCAL * 2 + 1];
        addr_strip_tag(a.local, tag, sizeof tag);
        /* a formatted plain address parses again to the same thing */
        struct addr b;
        if (!a.is_null && a.domain[0] && addr_parse_plain(out, &b)) {
            if (strcmp(a.local, b.local) != 0 || strcmp(a.domain, b.domain) != 0)
                abort();
        }
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return 0;
    memcpy(copy, text, len);
    copy[len] = '\0';
    addr_parse_plain(copy, &a);
    free(copy);
    return 0;
}
