/*
 * fuzz_http_request.c - libFuzzer target for the HTTP/1.1 request-head parser of the
 * MTA-STS listener (src/http/parse.c): no crash, a result in range, a parse that agrees
 * with the incremental end-of-head search however the input is split.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct http_request r;
    enum http_parse_status st = http_request_parse(text, size, &r);
    if (st == HTTP_PARSE_DONE) {
        if (r.head_len < 4 || r.head_len > size || r.head_len > HTTP_HEAD_MAX ||
            memcmp(text + r.head_len - 4, "\r\n\r\n", 4) != 0 || r.method[0] == '\0' ||
            r.path[0] != '/' || strlen(r.path) > HTTP_TARGET_MAX || r.version_minor > 1 ||
            r.content_length != 0 || r.has_transfer_encoding)
            abort();
        for (const char *h = r.host; *h; h++)
            if (*h >= 'A' && *h <= 'Z')
                abort();
    } else if (st == HTTP_PARSE_ERROR) {
        if (r.status < 400 || r.status > 599 || !r.reason)
            abort();
    } else if (size >= HTTP_HEAD_MAX) {
        abort(); /* a full-size input is always decided */
    }
    /* the session searches in steps: the end it finds must be the one found at once */
    bool bare_whole, bare_step = false;
    size_t n = size < HTTP_HEAD_MAX ? size : HTTP_HEAD_MAX;
    size_t whole = http_head_end(text, n, 0, &bare_whole);
    size_t step = size ? (size_t)data[0] % 7 + 1 : 1, searched = 0, found = 0;
    for (size_t have = step; !found && !bare_step; have += step) {
        size_t k = have < n ? have : n;
        found = http_head_end(text, k, searched, &bare_step);
        searched = k;
        if (k == n)
            break;
    }
    if (found != whole || bare_step != bare_whole)
        abort();
    return 0;
}
