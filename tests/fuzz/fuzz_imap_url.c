/*
 * fuzz_imap_url.c - libFuzzer target for the IMAP URL / URLAUTH parser (src/imap/url.c,
 * RFC 5092 + RFC 4467) as CATENATE, URLFETCH, GENURLAUTH and BURL feed it, and for what a
 * parsed URL leads to without a store: the section it names extracted from a fixed
 * multipart message (imap_section_extract), the ;PARTIAL= range applied, the rump URL
 * signed (imap_urlauth_token), and the RFC 3339 expiry parser on the raw input.
 */
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "imap/url.h"

static const char message[] =
    "From: a@example.test\nSubject: s\nMIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhello\n"
    "--b\nContent-Type: message/rfc822\n\nFrom: c@example.test\nSubject: inner\n\nbody\n"
    "--b--\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    time_t t;
    (void)imap_url_datetime_parse((const char *)data, size, &t);
    struct imap_url u;
    const char *why = NULL;
    if (!imap_url_parse((const char *)data, size, &u, &why))
        return 0;
    struct buf out;
    buf_init(&out, 1 << 20);
    if (imap_section_extract(message, sizeof message - 1, u.section, &out) && u.has_partial) {
        size_t from = u.partial_offset < out.len ? (size_t)u.partial_offset : out.len;
        size_t n = out.len - from;
        if (u.partial_length && u.partial_length < n)
            n = (size_t)u.partial_length;
        if (from + n > out.len)
            __builtin_trap();
    }
    buf_free(&out);
    if (u.rump_len) {
        if (u.rump_len > size)
            __builtin_trap();
        char hex[IMAP_URL_TOKEN_HEX + 1];
        imap_urlauth_token((const unsigned char *)"key", 3, (const char *)data, u.rump_len, hex);
    }
    return 0;
}
