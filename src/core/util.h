/*
 * util.h - small helpers every module needs: base64, random ids, dates, strings.
 *
 * All functions are pure or use only thread-safe libc/OpenSSL calls: any thread.
 * Functions that return char * return malloc'd memory the caller frees.
 */
#ifndef TERN_CORE_UTIL_H
#define TERN_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct buf;

/* Base64 (RFC 4648 §4, no line breaks). encode appends the text to out; encode_str
 * returns it as a malloc'd string (NULL when out of memory). */
bool util_base64_encode(const void *data, size_t len, struct buf *out);
char *util_base64_encode_str(const void *data, size_t len);
/* Decode, appending the bytes to out (NUL-terminated, not counted); false on bad input,
 * out unchanged. Strict (RFC 4648 §3.3, §3.5): alphabet only, no whitespace, padding
 * complete and last, unused trailing bits zero.
 * _lenient is the same except that input with no '=' at all may end mid-quantum
 * ("Zg", "Zm8"): some SASL clients and stored hashes leave the padding out. Partial
 * padding ("Zg=") is still refused. */
bool util_base64_decode(const char *text, size_t len, struct buf *out);
bool util_base64_decode_lenient(const char *text, size_t len, struct buf *out);
/* The RFC 4648 §4 alphabet value of c (0..63), or -1 for anything else ('=' and
 * whitespace included): for decoders with other rules (MIME's RFC 2045 §6.8 skips
 * characters outside the alphabet). */
int util_base64_value(unsigned char c);

/* Cryptographically random bytes (OpenSSL RAND_bytes). */
void util_random_bytes(void *out, size_t len);

/* A Postfix-like queue id: 10-12 upper-case hex chars, unique per process and time.
 * out must hold at least UTIL_QUEUE_ID_SIZE bytes. */
#define UTIL_QUEUE_ID_SIZE 16
void util_queue_id(char out[UTIL_QUEUE_ID_SIZE]);

/* RFC 5322 date: "Wed, 25 Nov 2026 09:00:03 +0000 (UTC)". out >= 64 bytes. */
void util_rfc5322_date(time_t t, char *out, size_t size);

/* ASCII lowercase in place; returns s. */
char *util_ascii_lower(char *s);
/* Case-insensitive ASCII prefix test over a length-counted string. */
bool util_has_prefix_ci(const char *s, size_t len, const char *prefix);

/* Write all of len bytes, retrying on EINTR/short writes. 0 or -1 (errno set). */
int util_write_all(int fd, const void *data, size_t len);
/* fsync the directory holding path (after create/rename/unlink). 0 or -1. */
int util_fsync_dir_of(const char *path);
int util_fsync_dir(const char *dir);
/* mkdir -p with mode; 0 or -1. */
int util_mkdir_p(const char *path, unsigned mode);

/* Monotonic clock in milliseconds. */
uint64_t util_now_ms(void);

/* A filter's socket address as Postfix writes it: "inet:HOST:PORT", "inet6:[HOST]:PORT"
 * (HOST numeric: no DNS lookup) or "unix:/absolute/path" (short enough for sun_path).
 * Fills *family_r (AF_INET for both inet forms, AF_UNIX), host (or the path) and port.
 * false if malformed. */
bool util_socket_address_parse(const char *address, int *family_r, char *host, size_t hsize,
                               char *port, size_t psize);

#endif
