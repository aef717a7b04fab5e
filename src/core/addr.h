/*
 * addr.h - e-mail addresses: parse SMTP paths, split, normalise.
 *
 * RFC 5321 §4.1.2 path syntax with the leniency real senders need: MAIL FROM:addr
 * without angle brackets (seeds 000/004), spaces after the colon, source routes
 * (@a,@b:user@dom, RFC 5321 §4.1.2 says accept and ignore). Quoted local parts are kept
 * as sent. The domain is lower-cased; the local part keeps its case (RFC 5321 §2.4) but
 * directory lookups compare it case-insensitively.
 *
 * Pure functions over bytes: no I/O, fuzzable. Thread rules: any thread.
 */
#ifndef TERN_CORE_ADDR_H
#define TERN_CORE_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define ADDR_MAX_LOCAL  64  /* RFC 5321 §4.5.3.1.1 */
#define ADDR_MAX_DOMAIN 255 /* RFC 5321 §4.5.3.1.2 */
#define ADDR_MAX_PATH   256 /* RFC 5321 §4.5.3.1.3 */

struct addr {
    char local[ADDR_MAX_LOCAL * 2 + 1]; /* as sent (quoted form kept), NUL-terminated */
    char domain[ADDR_MAX_DOMAIN + 1];   /* lower-cased; "" for the null path */
    bool is_null;                       /* "<>" */
};

/*
 * Parse the argument after "MAIL FROM:" / "RCPT TO:" (text points just past the colon).
 * On success fills *a and sets *params_r to the start of ESMTP parameters (or end).
 * allow_null: "<>" allowed (MAIL FROM). Returns false on syntax error.
 */
bool addr_parse_path(const char *text, size_t len, bool allow_null, struct addr *a,
                     size_t *params_offset_r);

/* Parse a plain "local@domain" (login names, CLI input). false on syntax error. */
bool addr_parse_plain(const char *text, struct addr *a);

/* "local@domain" into out (size >= ADDR_MAX_PATH + 1); "" for null path. */
void addr_format(const struct addr *a, char *out, size_t size);

/* Strip a "+tag" from the local part into out ("user+x" -> "user"). false if no tag. */
bool addr_strip_tag(const char *local, char *out, size_t size);

#endif
