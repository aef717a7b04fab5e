/*
 * mailname.h - mailbox names between a UTF-8 session and the store (RFC 9051 §5.1 and
 * Appendix A.1, RFC 6855 §3), pure.
 *
 * The store keeps every mailbox name as IMAP4rev1 clients send it: modified UTF-7
 * (RFC 3501 §5.1.3), which is also what Dovecot's Maildir++ folders are named in. A
 * session that enabled IMAP4rev2 or UTF8=ACCEPT speaks UTF-8 instead: a name it sends is
 * checked (valid UTF-8, Net-Unicode without controls, RFC 6855 §3), put in Unicode
 * Normalization Form C (RFC 9051 §5.1: a denormalized name opens the same mailbox) and
 * encoded to modified UTF-7 ("&" becomes "&-"); a name the store holds is decoded back to
 * UTF-8 before it is sent. A stored name that is not valid modified UTF-7 (an 8-bit name
 * an old client made, "a&b") is sent as it is.
 *
 * Ownership: returned strings are malloc'd, the caller frees them. Thread rules: none.
 */
#ifndef TERN_IMAP_MAILNAME_H
#define TERN_IMAP_MAILNAME_H

#include <stdbool.h>
#include <stddef.h>

/* Names longer than this (in either form, octets) are refused: the store's own limit is
 * lower. */
#define IMAP_MAILNAME_MAX 1024

/* Is s[0..len) a mailbox name RFC 6855 §3 allows: valid UTF-8 (no overlong form, no
 * surrogate) without U+0000-U+001F, U+007F-U+009F, U+2028 or U+2029? */
bool imap_mailname_utf8_ok(const char *s, size_t len);
/* A UTF-8 session's name -> the store's (NFC, modified UTF-7); NULL when the name is not
 * allowed (see above), too long, or memory ran out. */
char *imap_mailname_import(const char *utf8, size_t len);
/* The store's name -> UTF-8 for a UTF-8 session (a copy of it when it is not valid
 * modified UTF-7); NULL only when out of memory. */
char *imap_mailname_export(const char *stored);
/* Is s valid modified UTF-7 (RFC 3501 §5.1.3: printable ASCII, base64 runs of UTF-16
 * between "&" and "-", no superfluous shift, nothing printable encoded)? */
bool imap_mailname_is_mutf7(const char *s);

#endif
