/*
 * fuzz_mime.c - libFuzzer target for the MIME structure parser and its IMAP output:
 * any bytes must parse without crashing, offsets must stay inside the input, and every
 * part path must resolve or fail cleanly.
 */
#include <assert.h>
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
    mime_part_free(p);
    return 0;
}
