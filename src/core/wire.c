/*
 * wire.c - NUL-separated plain-data records between processes (wire.h).
 */
#include "core/wire.h"
#include "core/buf.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void wire_reader_init(struct wire_reader *r, const char *data, size_t len)
{
    r->data = data;
    r->len = len;
    r->pos = 0;
    r->is_bad = false;
}

const char *wire_str(struct wire_reader *r, size_t max_len)
{
    if (r->is_bad || r->pos >= r->len)
        goto bad;
    const char *s = r->data + r->pos;
    const char *end = memchr(s, '\0', r->len - r->pos);
    if (!end || (size_t)(end - s) >= max_len)
        goto bad;
    r->pos += (size_t)(end - s) + 1;
    return s;
bad:
    r->is_bad = true;
    return "";
}

uint64_t wire_num(struct wire_reader *r, uint64_t max)
{
    const char *s = wire_str(r, 21);
    /* canonical decimal only (no leading zero), as wire_put_num writes it: one number has
     * one spelling, so a record that decodes encodes back to the same bytes */
    if (r->is_bad || !*s || (s[0] == '0' && s[1]))
        goto bad;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            goto bad;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            goto bad;
        v = v * 10 + d;
    }
    if (v > max)
        goto bad;
    return v;
bad:
    r->is_bad = true;
    return 0;
}

const char *wire_rest(const struct wire_reader *r, size_t *len_r)
{
    *len_r = r->len - r->pos;
    return r->data + r->pos;
}

bool wire_put_str(struct buf *b, const char *s)
{
    const char *text = s ? s : "";
    return buf_append(b, text, strlen(text) + 1);
}

bool wire_put_num(struct buf *b, uint64_t v)
{
    char text[24];
    int n = snprintf(text, sizeof text, "%" PRIu64, v);
    return n > 0 && buf_append(b, text, (size_t)n + 1);
}
