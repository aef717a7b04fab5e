/*
 * buf.h - length-counted, binary-safe, capped byte buffer.
 *
 * A struct buf owns its bytes (heap). Every buffer has a hard cap: an append that
 * would grow it past the cap fails and leaves the buffer unchanged, so no peer can make
 * us allocate without bound. The data is always NUL-terminated (not counted in len),
 * so text can be handed to C string functions, but len is the truth.
 *
 * Ownership: the caller owns the struct; buf_free() releases the bytes.
 * Thread rules: none; a buffer is used by one thread at a time.
 */
#ifndef TERN_CORE_BUF_H
#define TERN_CORE_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct buf {
    char *data;  /* NUL-terminated; NULL while empty and never grown */
    size_t len;  /* bytes used, excluding the terminating NUL */
    size_t size; /* bytes allocated */
    size_t cap;  /* maximum len; 0 means SIZE_MAX/2 */
};

/* Initialise an empty buffer that may hold at most cap bytes (0: practically unlimited). */
void buf_init(struct buf *b, size_t cap);
void buf_free(struct buf *b);
/* Forget the contents, keep the allocation. */
void buf_reset(struct buf *b);
/* Append; false (buffer unchanged) when the cap would be exceeded or memory is out. */
bool buf_append(struct buf *b, const void *data, size_t len);
bool buf_append_str(struct buf *b, const char *s);
bool buf_append_byte(struct buf *b, char c);
bool buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Remove the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Ensure room for `extra` more bytes; false past the cap. */
bool buf_reserve(struct buf *b, size_t extra);
/* Return a C string always (empty string for an unused buffer). */
const char *buf_cstr(const struct buf *b);
/* Hand the bytes to the caller (free() them); the buffer becomes empty. */
char *buf_steal(struct buf *b);

#endif
