/*
 * wire.h - plain-data records between Tern's processes: NUL-terminated fields (strings,
 * and numbers in decimal) one after the other, as core/channel.h's payloads are, for the
 * records too long or too varied for fixed structs (a handed-over session, a message's
 * envelope).
 *
 * The reader is for hostile bytes (another process may have been taken over): a field
 * must end inside the record and respect its size; a number is digits only and within its
 * bound. The first failure sticks (is_bad), so a decoder reads every field and checks
 * once at the end.
 *
 * Ownership: the reader borrows the record; its strings point into it. The writer appends
 * to the caller's struct buf. Thread rules: none (plain data).
 */
#ifndef TERN_CORE_WIRE_H
#define TERN_CORE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

struct wire_reader {
    const char *data;
    size_t len, pos;
    bool is_bad; /* a field was missing, too long or malformed */
};

void wire_reader_init(struct wire_reader *r, const char *data, size_t len);
/* The next string (shorter than max_len bytes; "" is allowed), or "" with is_bad set. */
const char *wire_str(struct wire_reader *r, size_t max_len);
/* The next number, at most max (1-20 digits, no leading zero), or 0 with is_bad set. */
uint64_t wire_num(struct wire_reader *r, uint64_t max);
/* The bytes after the last field read (not NUL-separated). */
const char *wire_rest(const struct wire_reader *r, size_t *len_r);

/* Append a string (without NUL bytes of its own) / a number as a field. false when the
 * buffer's cap or memory is reached (the record is then incomplete: do not send it). */
bool wire_put_str(struct buf *b, const char *s);
bool wire_put_num(struct buf *b, uint64_t v);

#endif
