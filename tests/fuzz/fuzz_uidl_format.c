/*
 * fuzz_uidl_format.c - libFuzzer target for the POP3 UIDL formats (core/uidl.h): the
 * input is a format (as pop3.uidl_format holds). Besides no crash and no over-read: only
 * a format uidl_format_check() accepts expands, and what it expands to is a non-empty
 * UIDL of printable bytes (0x21-0x7e) that fits UIDL_MAX.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/uidl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char fmt[UIDL_FORMAT_MAX + 2];
    if (size > UIDL_FORMAT_MAX + 1)
        size = UIDL_FORMAT_MAX + 1;
    memcpy(fmt, data, size);
    fmt[size] = '\0';
    char *error = NULL;
    bool is_ok = uidl_format_check(fmt, &error);
    free(error);
    struct uidl_vars v = {.uid = 4294967294u, .uidvalidity = 1796562460u,
                          .filename = "1700000000.M1P1.host,S=10,W=11", .guid = NULL};
    char out[UIDL_MAX];
    bool is_expanded = uidl_format(fmt, &v, out, sizeof out);
    if (is_expanded && !is_ok)
        abort();
    if (is_expanded) {
        size_t len = strlen(out);
        if (len == 0 || len >= UIDL_MAX)
            abort();
        for (size_t i = 0; i < len; i++)
            if (out[i] < 0x21 || out[i] > 0x7e)
                abort();
    }
    return 0;
}
