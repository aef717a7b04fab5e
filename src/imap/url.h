/*
 * url.h - IMAP URLs (RFC 5092) naming one message or part, with the URLAUTH parts
 * (RFC 4467 §3), as CATENATE (RFC 4469), GENURLAUTH/URLFETCH (RFC 4467) and BURL
 * (RFC 4468) use them; and what such a URL gives its reader.
 *
 * Parsing (url.c) is a pure function over bytes, linear, with every field bounded
 * (IMAP_URL_MAX and the field sizes below); tests/unit/test_imap_url.c and
 * tests/fuzz/fuzz_imap_url.c reach it directly. Accepted forms:
 *   imap://[enc-user[;AUTH=..]@]host[:port]/mailbox[;UIDVALIDITY=n]/;UID=n
 *       [/;SECTION=s][/;PARTIAL=o[.l]][;EXPIRE=date-time][;URLAUTH=access[:mech:token]]
 *   /mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]   (relative to the
 *       session's own server and user: RFC 4469 §5)
 * Keys are case-insensitive; %XX escapes are decoded (a NUL or control octet is refused).
 * A mailbox name with 8-bit octets is UTF-8 (RFC 5092) and becomes modified UTF-7, the
 * form IMAP names take here; an ASCII one is used as it is (RFC 2192's "&AOk-" form).
 *
 * Resolving (urlauth.c, BLOCKING, pool threads only): imap_url_fetch opens the owner's
 * mailbox, checks UIDVALIDITY, the URLAUTH token (HMAC-SHA1 with the mailbox's access
 * key, store_urlauth_key), the expiry and the access identifier against who asks, and
 * returns the bytes (CRLF line ends), at most a given size. Thread rules: none for the
 * parser; imap_url_fetch uses only what its arguments give it.
 */
#ifndef TERN_IMAP_URL_H
#define TERN_IMAP_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"

#define IMAP_URL_MAX         4096 /* octets of one URL */
#define IMAP_URL_MAX_USER    320  /* a decoded user (user@domain) */
#define IMAP_URL_MAX_MAILBOX 300  /* a decoded mailbox name (store's canonical limit) */
#define IMAP_URL_MAX_SECTION 512
#define IMAP_URL_TOKEN_HEX   40 /* HMAC-SHA1 in hex: the INTERNAL mechanism's token */

enum imap_url_access {
    IMAP_URL_ACCESS_NONE,      /* no ;URLAUTH= */
    IMAP_URL_ACCESS_SUBMIT,    /* "submit+user": the submission server acting for user */
    IMAP_URL_ACCESS_USER,      /* "user+user": that user only */
    IMAP_URL_ACCESS_AUTHUSER,  /* any authenticated user of this server */
    IMAP_URL_ACCESS_ANONYMOUS, /* anyone */
};

struct imap_url {
    bool is_absolute;                 /* "imap://..." (else "/mailbox...") */
    char user[IMAP_URL_MAX_USER + 1]; /* decoded; "" when absent */
    char host[256];                   /* "" for a relative URL */
    char mailbox[IMAP_URL_MAX_MAILBOX + 1];
    uint32_t uidvalidity; /* 0: not given */
    uint32_t uid;
    char section[IMAP_URL_MAX_SECTION + 1]; /* decoded, "" the whole message */
    bool has_partial;
    uint64_t partial_offset, partial_length; /* length 0: to the end */
    bool has_expire;
    time_t expire;
    enum imap_url_access access;
    char access_user[IMAP_URL_MAX_USER + 1]; /* SUBMIT/USER: decoded */
    char mechanism[32];                      /* "" for a rump URL (no verifier) */
    char token[2 * IMAP_URL_TOKEN_HEX + 1];  /* enc-urlauth as given, "" none */
    size_t rump_len;                         /* octets of the URL up to and including the
                                                access identifier (RFC 4467 §3: what is
                                                signed); 0 when no ;URLAUTH= */
};

/* Parse len octets of s. false with a reason in *error_r (static text). */
bool imap_url_parse(const char *s, size_t len, struct imap_url *u, const char **error_r);

/* RFC 3339 date-time ("2006-02-28T09:00:00Z", "...+01:00", fractions allowed) as
 * ;EXPIRE= takes it. false on bad syntax. */
bool imap_url_datetime_parse(const char *s, size_t len, time_t *t_r);

/* HMAC-SHA1 of the rump URL with key (key_len octets) in lower-case hex (RFC 4467 §7
 * "INTERNAL" mechanism). */
void imap_urlauth_token(const unsigned char *key, size_t key_len, const char *rump, size_t rump_len,
                        char hex_r[IMAP_URL_TOKEN_HEX + 1]);

/* ---- resolving (urlauth.c) ---- */
struct auth_service;
struct store_user;

/* Who reads a URL: the session's own user and store, how it asks. */
struct imap_url_reader {
    struct auth_service *auth; /* finds another owner's home (a URLAUTH URL) */
    struct store_user *user;   /* the reader's own store, or NULL (BURL: opened when the
                                  reader owns the URL) */
    const char *username;      /* canonical user@domain of the reader */
    bool is_submit;            /* BURL: "submit+<username>" grants access */
    bool needs_urlauth;        /* URLFETCH, BURL: only a URLAUTH-authorized URL */
    time_t now;
};

enum {
    IMAP_URL_OK = 0,
    IMAP_URL_BAD = 1,    /* the URL is invalid, refused or names nothing: [BADURL] */
    IMAP_URL_TOOBIG = 2, /* more than max octets: [TOOBIG] */
    IMAP_URL_TEMP = -1,  /* could not read it now (I/O, directory) */
};
/* BLOCKING. Append the octets url names to out (at most max octets in all of out).
 * IMAP_URL_* with a reason in *error_r (malloc'd) when not OK. */
int imap_url_fetch(const struct imap_url_reader *r, const char *url, size_t url_len, uint64_t max,
                   struct buf *out, char **error_r);

/* fetch.c: the octets of a message's BODY[section] (section as in a FETCH, without the
 * brackets, "" the whole message) with CRLF line ends; msg is the stored file (LF).
 * false when the section is malformed or names no part. */
bool imap_section_extract(const char *msg, size_t len, const char *section, struct buf *out);

#endif
