/*
 * fuzz_mime.c - libFuzzer target for the MIME structure parser and its IMAP output:
 * any bytes must parse without crashing, offsets must stay inside the input, and every
 * part path must resolve or fail cleanly. The SEARCH decoders (RFC 2047 header words,
 * base64/quoted-printable bodies, charset conversion, the matcher), the SORT/THREAD keys
 * (base subject, i;unicode-casemap, dates, message ids, addresses), PREVIEW, BINARY
 * decoding and the binary-to-base64 rewrite run over the same input.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/buf.h"
#include "store/mime.h"

static void check(const struct mime_part *p, size_t len)
{
    for (; p; p = p->next) {
        assert(p->header_offset + p->header_size == p->body_offset);
        assert(p->body_offset + p->body_size <= len);
        assert(p->body_vsize >= p->body_size);
        check(p->children, len);
        if (p->message)
            check(p->message, len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mime_part *p = mime_parse((const char *)data, size);
    if (!p)
        return 0;
    check(p, size);
    struct buf b;
    buf_init(&b, 0);
    mime_write_bodystructure(p, true, &b);
    buf_reset(&b);
    mime_write_bodystructure(p, false, &b);
    buf_reset(&b);
    mime_write_envelope(p, &b);
    buf_free(&b);
    uint32_t path[3] = {1, 2, 1};
    if (size > 2) {
        path[0] = data[0] % 4;
        path[1] = data[1] % 4;
    }
    (void)mime_part_find(p, path, 3);
    /* SEARCH: a needle taken from the input itself, so matches happen too */
    size_t nlen = size > 0 ? data[0] % 8 : 0;
    if (nlen > size)
        nlen = size;
    /* both comparators (RFC 5255): i;unicode-casemap folds one code point into many */
    enum mime_comparator cmp = size > 1 && (data[1] & 1) ? MIME_CMP_ASCII_CASEMAP
                                                          : MIME_CMP_UNICODE_CASEMAP;
    struct mime_matcher *m = mime_matcher_new_cmp((const char *)data + size - nlen, nlen, cmp);
    if (m) {
        (void)mime_body_search((const char *)data, size, p, m, 1 << 20);
        mime_matcher_reset(m);
        (void)mime_header_search((const char *)data, size, NULL, m, true);
        mime_matcher_free(m);
    }
    buf_init(&b, 0);
    mime_header_decode((const char *)data, size, &b);
    buf_reset(&b);
    /* SORT/THREAD keys of the header, the base subject and casemap of the raw input */
    struct mime_sort_keys k;
    (void)mime_sort_keys_parse_cmp((const char *)data, size, cmp, &k);
    mime_sort_keys_free(&k);
    free(mime_thread_root((const char *)data, size)); /* RFC 8474 THREADID */
    bool is_reply;
    (void)mime_base_subject((const char *)data, size, &b, &is_reply);
    buf_reset(&b);
    (void)mime_casemap((const char *)data, size, &b);
    buf_reset(&b);
    (void)mime_preview((const char *)data, size, p, &b);
    buf_reset(&b);
    (void)mime_decode_body((const char *)data, size, size > 0 && data[0] & 1 ? "base64"
                                                                             : "quoted-printable",
                           &b);
    buf_reset(&b);
    (void)mime_binary_to_base64((const char *)data, size, &b);
    buf_free(&b);
    mime_part_free(p);
    return 0;
}
