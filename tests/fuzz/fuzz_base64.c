/*
 * fuzz_base64.c - libFuzzer target for the base64 decoders (util_base64_decode, strict,
 * and util_base64_decode_lenient, padding optional): no crash, no over-read, and the
 * invariants of util.h hold:
 *   - whatever either mode accepts is the canonical encoding of its bytes: encoding them
 *     again gives the input back (the lenient mode: possibly without its '=' padding);
 *   - the strict mode accepts nothing the lenient mode refuses, and both agree on bytes;
 *   - a refused input leaves the buffer as it was.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct buf strict, lenient, again;
    buf_init(&strict, 0);
    buf_init(&lenient, 0);
    buf_init(&again, 0);
    if (!buf_append(&strict, "p", 1) || !buf_append(&lenient, "p", 1))
        abort();
    bool is_strict_ok = util_base64_decode(text, size, &strict);
    bool is_lenient_ok = util_base64_decode_lenient(text, size, &lenient);
    if (is_strict_ok && !is_lenient_ok)
        abort();
    if (!is_strict_ok && (strict.len != 1 || strict.data[1] != '\0'))
        abort(); /* a refusal changed the buffer */
    if (!is_lenient_ok && (lenient.len != 1 || lenient.data[1] != '\0'))
        abort();
    if (is_strict_ok &&
        (strict.len != lenient.len || memcmp(strict.data, lenient.data, strict.len)))
        abort();
    if (is_lenient_ok) {
        if (!util_base64_encode(lenient.data + 1, lenient.len - 1, &again))
            abort();
        /* the input is the encoding, or the encoding without its trailing '=' */
        if (again.len < size || memcmp(again.data, text, size) != 0)
            abort();
        for (size_t i = size; i < again.len; i++)
            if (again.data[i] != '=' || is_strict_ok)
                abort();
    }
    buf_free(&strict);
    buf_free(&lenient);
    buf_free(&again);
    return 0;
}
