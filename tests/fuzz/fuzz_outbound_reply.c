/*
 * fuzz_outbound_reply.c - what a remote SMTP server says is hostile input: feed random
 * bytes to the outbound client's reply parser (replies parsed back to back, as the client
 * does with a pipelined batch), the EHLO capability parser, and the MX RDATA parser.
 */
#include "queue/outbound.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t left = size;
    for (int i = 0; i < 1000 && left > 0; i++) {
        struct outbound_reply r;
        size_t used = 0;
        int rc = outbound_reply_parse(p, left, &r, &used);
        if (rc != 1)
            break;
        if (used == 0 || used > left)
            __builtin_trap(); /* must always make progress within the buffer */
        if (strlen(r.text) >= sizeof r.text || strlen(r.last) >= sizeof r.last)
            __builtin_trap();
        struct outbound_ehlo e;
        outbound_ehlo_parse(&r, &e);
        p += used;
        left -= used;
    }
    uint16_t pref;
    char name[256];
    if (outbound_dns_parse_mx(data, size, &pref, name, sizeof name) == 0 &&
        strlen(name) >= sizeof name)
        __builtin_trap();
    return 0;
}
