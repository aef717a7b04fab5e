/*
 * message.c - reading a struct mailauth_message: the header section (our prefix lines and
 * the message's own) into memory with a budget, the body in chunks (memory or pread), and
 * small string helpers shared by the methods.
 */
#include "mailauth/mailauth-private.h"

#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define READ_CHUNK 65536

/* Read up to len bytes of the message (not the prefix) at off. -1 on error. */
static ssize_t message_read(const struct mailauth_message *m, uint64_t off, char *out, size_t len)
{
    if (m->fd < 0) {
        if (off >= m->len)
            return 0;
        size_t n = m->len - (size_t)off < len ? m->len - (size_t)off : len;
        memcpy(out, m->data + off, n);
        return (ssize_t)n;
    }
    if (off >= m->fd_size)
        return 0;
    if (len > m->fd_size - off)
        len = (size_t)(m->fd_size - off);
    for (;;) {
        ssize_t r = pread(m->fd, out, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

/* Offset just past the empty line ending the header section in h[len] (looking at line
 * starts from `from` on), or 0 when it is not there yet. */
static size_t header_end(const char *h, size_t len, size_t from)
{
    for (size_t i = from; i < len; i++) {
        if (i > 0 && h[i - 1] != '\n')
            continue; /* not a line start */
        if (h[i] == '\n')
            return i + 1;
        if (h[i] == '\r' && i + 1 < len && h[i + 1] == '\n')
            return i + 2;
    }
    return 0;
}

int mailauth_parsed_read(const struct mailauth_message *m, struct mailauth_parsed *p,
                         const char **error_r)
{
    memset(p, 0, sizeof *p);
    buf_init(&p->header, MAILAUTH_HEADER_MAX + READ_CHUNK);
    if (m->prefix_len && !buf_append(&p->header, m->prefix, m->prefix_len)) {
        *error_r = "out of memory";
        return -1;
    }
    size_t base = p->header.len;
    uint64_t off = 0;
    size_t end = 0;
    char chunk[4096];
    for (;;) {
        ssize_t r = message_read(m, off, chunk, sizeof chunk);
        if (r < 0) {
            *error_r = "cannot read the message";
            return -1;
        }
        if (r == 0)
            break;
        /* a line start may lie up to 2 bytes back (CR LF split across chunks) */
        size_t from = p->header.len >= base + 2 ? p->header.len - 2 : base;
        if (!buf_append(&p->header, chunk, (size_t)r)) {
            *error_r = "out of memory";
            return -1;
        }
        off += (uint64_t)r;
        end = header_end(p->header.data, p->header.len, from);
        if (end)
            break;
        if (p->header.len - base > MAILAUTH_HEADER_MAX) {
            *error_r = "header section too large";
            return -1;
        }
    }
    if (!end)
        end = p->header.len; /* no body */
    p->body_offset = end - base;
    p->header.len = end;
    p->fields = calloc(MAILAUTH_HEADERS_MAX, sizeof *p->fields);
    if (!p->fields) {
        *error_r = "out of memory";
        return -1;
    }
    size_t body;
    bool is_truncated;
    p->n_fields = mailauth_headers_parse(p->header.data ? p->header.data : "", p->header.len,
                                         p->fields, MAILAUTH_HEADERS_MAX, &body, &is_truncated);
    if (is_truncated) {
        *error_r = "too many header fields";
        return -1;
    }
    return 0;
}

void mailauth_parsed_free(struct mailauth_parsed *p)
{
    buf_free(&p->header);
    free(p->fields);
    p->fields = NULL;
}

int mailauth_body_each(const struct mailauth_message *m, uint64_t body_offset,
                       void (*fn)(void *arg, const char *data, size_t len), void *arg)
{
    if (m->fd < 0) {
        if (body_offset < m->len)
            fn(arg, m->data + body_offset, m->len - (size_t)body_offset);
        return 0;
    }
    char *chunk = malloc(READ_CHUNK);
    if (!chunk)
        return -1;
    uint64_t off = body_offset;
    for (;;) {
        ssize_t r = message_read(m, off, chunk, READ_CHUNK);
        if (r < 0) {
            free(chunk);
            return -1;
        }
        if (r == 0)
            break;
        fn(arg, chunk, (size_t)r);
        off += (uint64_t)r;
    }
    free(chunk);
    return 0;
}

bool mailauth_field_is(const struct mailauth_parsed *p, size_t i, const char *name)
{
    size_t l = strlen(name);
    return p->fields[i].name_len == l &&
           strncasecmp(p->header.data + p->fields[i].start, name, l) == 0;
}

void mailauth_field_value(const struct mailauth_parsed *p, size_t i, const char **v_r,
                          size_t *len_r)
{
    const char *f = p->header.data + p->fields[i].start;
    const char *colon = memchr(f, ':', p->fields[i].len);
    *v_r = colon + 1;
    *len_r = p->fields[i].len - (size_t)(colon + 1 - f);
}

bool mailauth_copy_nofws(const char *text, size_t len, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '\0' || o + 1 >= size)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

int mailauth_base64_decode(const char *text, size_t len, unsigned char *out, size_t max,
                           size_t *len_r)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = util_base64_value(c);
        if (v < 0 || pad > 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= max)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (pad > 2)
        return -1;
    *len_r = o;
    return 0;
}

bool mailauth_domain_is_within(const char *d, const char *parent)
{
    size_t dl = strlen(d), pl = strlen(parent);
    if (dl < pl)
        return false;
    if (strcasecmp(d + dl - pl, parent) != 0)
        return false;
    return dl == pl || d[dl - pl - 1] == '.';
}
