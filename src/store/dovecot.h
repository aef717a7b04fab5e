/*
 * dovecot.h - what Dovecot leaves in a Maildir, read so that a mailbox moved in from
 * Dovecot keeps what its clients cached (issue 14): UIDVALIDITY, UIDNEXT and every UID
 * from dovecot-uidlist, keyword letters from dovecot-keywords, subscriptions from the
 * subscriptions file, and the POP3 UIDL and GUID extension fields of dovecot-uidlist.
 *
 * Pure parsers over bytes (no I/O, no logging), each with a budget (bytes, lines, items)
 * and linear in its input apart from one sort; a malformed or hostile file is refused
 * with a reason (the store then logs one line and hands out fresh UIDs). Unit tests:
 * tests/unit/test_dovecot.c; fuzz targets: tests/fuzz/fuzz_dovecot_*.c.
 *
 * Formats (Dovecot 2.3, src/lib-storage/index/maildir/ and src/lib-storage/list/):
 *   dovecot-uidlist v1  "1 <uidvalidity> <nextuid>" then "<uid> <filename>" lines
 *   dovecot-uidlist v3  "3 V<uidvalidity> N<nextuid> [G<guid> ...]" then
 *                       "<uid> [<K><value> ...] :<filename>" lines; record keys are
 *                       'A'-'Z' (G guid, P POP3 UIDL, S size, W vsize, O POP3 order...)
 *   dovecot-keywords    "<0..25> <keyword>" lines: keyword n is letter 'a'+n in ":2,"
 *   subscriptions v1    one mailbox name a line
 *   subscriptions v2    "V\t2\n\n" then one name a line, hierarchy levels separated by
 *                       TAB, each level escaped with \001 (\0011 = \001, \001t = TAB...),
 *                       names in UTF-8
 *
 * Ownership: every *_parse fills a caller's struct that owns its memory; the matching
 * *_free releases it (safe on a zeroed or failed struct). Thread rules: none (pure).
 */
#ifndef TERN_STORE_DOVECOT_H
#define TERN_STORE_DOVECOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DOVECOT_UIDLIST_NAME       "dovecot-uidlist"
#define DOVECOT_KEYWORDS_NAME      "dovecot-keywords"
#define DOVECOT_SUBSCRIPTIONS_NAME "subscriptions"

/* Budgets. A uidlist line is a UID, a few short fields and a file name (<= 255 bytes on
 * every Linux file system), so 8 KiB is generous; 256 MiB holds ~2.5 million records. */
#define DOVECOT_UIDLIST_MAX_BYTES       (256u * 1024 * 1024)
#define DOVECOT_UIDLIST_MAX_LINE        8192
#define DOVECOT_KEYWORDS_MAX_BYTES      (64u * 1024)
#define DOVECOT_KEYWORDS_MAX            26 /* letters a-z */
#define DOVECOT_KEYWORD_MAX_LEN         256
#define DOVECOT_SUBSCRIPTIONS_MAX_BYTES (4u * 1024 * 1024)
#define DOVECOT_SUBSCRIPTIONS_MAX       10000 /* = STORE_MAX_MAILBOXES */
#define DOVECOT_MAILBOX_NAME_MAX        255   /* Tern's limit on an IMAP name */

/* ---- dovecot-uidlist ----------------------------------------------------------------- */

struct dovecot_uidlist_rec {
    uint32_t uid;
    const char *name;      /* base name: the file name up to ':' */
    const char *guid;      /* G field, or NULL */
    const char *pop3_uidl; /* P field, or NULL; "" means "the base name" (Dovecot) */
};

struct dovecot_uidlist {
    unsigned version;                /* 1 or 3 */
    uint32_t uidvalidity;            /* never 0 */
    uint32_t uidnext;                /* max(header's next uid, last UID + 1) */
    struct dovecot_uidlist_rec *recs; /* sorted by name, one per name */
    size_t n;
    char *text; /* owned copy of the file the records point into */
};

/* Parse a whole dovecot-uidlist. UIDs must ascend and be below the v1 next uid (as
 * Dovecot requires); a name listed twice keeps its last UID (Dovecot's rule). 0, or -1
 * with a malloc'd reason in *error_r (which may be NULL). */
int dovecot_uidlist_parse(const char *data, size_t len, struct dovecot_uidlist *out,
                          char **error_r);
/* The record of a base name (len bytes, no ':' part), or NULL. */
const struct dovecot_uidlist_rec *dovecot_uidlist_find(const struct dovecot_uidlist *l,
                                                       const char *base, size_t len);
void dovecot_uidlist_free(struct dovecot_uidlist *l);

/* ---- dovecot-keywords ---------------------------------------------------------------- */

struct dovecot_keywords {
    char *names[DOVECOT_KEYWORDS_MAX]; /* index = letter - 'a'; NULL when unused */
    size_t n_skipped;                  /* lines ignored (bad index, name or duplicate) */
};

/* Parse dovecot-keywords. Lines Dovecot itself would ignore are skipped and counted, as
 * are names that are not IMAP flag-keywords (RFC 3501 §9 atom, no '\\'). -1 only when
 * the file is over its budget. */
int dovecot_keywords_parse(const char *data, size_t len, struct dovecot_keywords *out,
                           char **error_r);
/* The keywords of a Maildir info part ("2,<letters>", the text after ':'): names of the
 * letters a-z, space separated in letter order, into out ("" when none). Letters without
 * a name are dropped. false when out is too small. */
bool dovecot_keywords_of_info(const struct dovecot_keywords *kw, const char *info, char *out,
                              size_t size);
void dovecot_keywords_free(struct dovecot_keywords *kw);

/* ---- subscriptions ------------------------------------------------------------------- */

struct dovecot_subscriptions {
    unsigned version;  /* 1 or 2 */
    char **names;      /* IMAP names as Tern keeps them: '/' separated, modified UTF-7,
                          "INBOX" in upper case; no duplicates */
    size_t n;
    size_t n_skipped;  /* names that cannot be a Tern mailbox name (too long, a level
                          holding '/', bad UTF-8, empty level) or over the count budget */
};

/* Parse a subscriptions file. v1 names: a leading "INBOX." (Courier's namespace) is
 * dropped, and '.' is the hierarchy separator unless the name holds a '/'. -1 only when
 * the file is over its byte budget. */
int dovecot_subscriptions_parse(const char *data, size_t len, struct dovecot_subscriptions *out,
                                char **error_r);
void dovecot_subscriptions_free(struct dovecot_subscriptions *s);

/* UTF-8 to IMAP modified UTF-7 (RFC 3501 §5.1.3). false on invalid UTF-8 or when out
 * (size bytes, NUL included) is too small. */
bool dovecot_utf8_to_mutf7(const char *in, size_t len, char *out, size_t size);

#endif
