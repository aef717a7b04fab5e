/*
 * fuzz_smtp_data.c - libFuzzer target for the DATA reader (smtp/data.c).
 *
 * The first byte picks a split size; the rest is fed whole and in pieces of that size,
 * and both runs must agree. Invariants: the end is found only right after CRLF "." CRLF
 * (with the virtual CRLF of the DATA line in front), the output never contains a bare LF,
 * the size cap holds.
 */
#include "core/buf.h"
#include "smtp/data.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] % 16 + 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    uint64_t max = (data[0] & 0x80) ? 64 : 0;

    struct smtp_data_reader r1, r2;
    struct buf o1, o2;
    bool done1, done2 = false;
    smtp_data_init(&r1, max);
    smtp_data_init(&r2, max);
    buf_init(&o1, 0);
    buf_init(&o2, 0);
    size_t c1 = smtp_data_feed(&r1, in, len, &o1, &done1);
    size_t c2 = 0;
    while (c2 < len && !done2) {
        size_t n = len - c2 < step ? len - c2 : step;
        c2 += smtp_data_feed(&r2, in + c2, n, &o2, &done2);
    }
    assert(c1 == c2 && done1 == done2);
    assert(o1.len == o2.len && (o1.len == 0 || memcmp(o1.data, o2.data, o1.len) == 0));
    assert(r1.size == r2.size);
    if (done1) {
        /* "\r\n" + input[0..c1) must end with "\r\n.\r\n" */
        assert(c1 >= 3 && memcmp(in + c1 - 3, ".\r\n", 3) == 0);
        assert(c1 == 3 || (c1 >= 5 && memcmp(in + c1 - 5, "\r\n", 2) == 0));
    } else {
        assert(c1 == len);
    }
    if (max)
        assert(o1.len <= max);
    for (size_t i = 0; i < o1.len; i++)
        if (o1.data[i] == '\n')
            assert(i > 0 && o1.data[i - 1] == '\r');
    buf_free(&o1);
    buf_free(&o2);

    /* BDAT accounting over the same bytes */
    struct smtp_data_reader r3;
    struct buf o3;
    smtp_data_init(&r3, max);
    buf_init(&o3, 0);
    smtp_data_feed_chunk(&r3, in, len, &o3);
    assert(r3.size == len);
    assert(r3.is_too_big || o3.len == len);
    buf_free(&o3);
    return 0;
}
