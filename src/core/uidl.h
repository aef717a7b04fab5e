/*
 * uidl.h - POP3 UIDLs built from a format as Dovecot's pop3_uidl_format does, so a
 * maildrop moved in from Dovecot lists the same UIDLs and no "leave mail on server"
 * client downloads it again (issue 14).
 *
 * The format is Dovecot 2.3's var-expand subset that UIDL formats use:
 *   %u uid, %v uidvalidity, %f file base name (up to ':'), %g GUID (the dovecot-uidlist
 *   G field, else the base name, as Dovecot's Maildir does), %% a '%';
 *   long forms %{uid} %{uidvalidity} %{filename} %{guid};
 *   before the variable: [<offset>.][0]<width> (zero padding, or truncation without '0';
 *   negative offset: from the end) and modifiers X (decimal -> lower-case hex: Dovecot's
 *   X is "%llx", so the default "%08Xu%08Xv" gives 0000001a65f2c81c), L, U, R.
 * %m (header MD5) is refused: Dovecot serves it only from mbox, never from a Maildir.
 *
 * Pure functions; no allocation except *error_r. Thread rules: none.
 */
#ifndef TERN_CORE_UIDL_H
#define TERN_CORE_UIDL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UIDL_DEFAULT_FORMAT "%08Xu%08Xv" /* Dovecot's default pop3_uidl_format */
#define UIDL_FORMAT_MAX     256          /* bytes of a format */
#define UIDL_MAX            256          /* bytes of a UIDL, NUL included */

struct uidl_vars {
    uint32_t uid, uidvalidity;
    const char *filename; /* base name; NULL = "" */
    const char *guid;     /* NULL = filename */
};

/* Is fmt a format uidl_format() can expand (non-empty, known variables and modifiers)?
 * false with a malloc'd reason. A valid format can still give an empty UIDL for some
 * values (a negative width eating a short name): uidl_format() then returns false. */
bool uidl_format_check(const char *fmt, char **error_r);
/* Expand fmt into out (size bytes, NUL included). Bytes outside 0x21-0x7e become '?'
 * (a UIDL is one printable word, RFC 1939 §7); the result is cut at size - 1 bytes.
 * false when fmt is invalid (uidl_format_check) or the result is empty. */
bool uidl_format(const char *fmt, const struct uidl_vars *v, char *out, size_t size);

#endif
