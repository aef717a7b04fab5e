/*
 * fuzz_auth_results.c - libFuzzer target for the Authentication-Results parser (RFC 8601
 * §2.2, also ARC-Authentication-Results' "i=" form) and for removing forged fields from a
 * header section: no crash, and the output is never longer than the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "mailauth/mailauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mailauth_ar ar;
    if (mailauth_ar_parse((const char *)data, size, &ar) == 0 && ar.n > MAILAUTH_AR_METHODS_MAX)
        abort();
    static struct mailauth_header f[MAILAUTH_HEADERS_MAX];
    size_t body;
    bool tr;
    size_t n = mailauth_headers_parse((const char *)data, size, f, MAILAUTH_HEADERS_MAX, &body,
                                      &tr);
    struct buf out;
    buf_init(&out, 0);
    int removed = mailauth_ar_remove_ours((const char *)data, body, f, n, "mx.example.org", &out);
    if (out.len > body || (removed == 0 && out.len != body))
        abort();
    buf_free(&out);
    return 0;
}
