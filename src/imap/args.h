/*
 * args.h - what the arguments of LIST (RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS,
 * RFC 6154 SPECIAL-USE), APPEND (RFC 3502 MULTIAPPEND), STATUS and SEARCH RETURN
 * (RFC 4731 ESEARCH) mean, taken from the
 * parser's argument tree. Pure functions over struct imap_arg (no I/O, no session), so the
 * unit tests and the fuzz target (tests/fuzz/fuzz_imap_command.c) reach them directly.
 *
 * Every list a client controls is bounded here: LIST patterns (IMAP_LIST_MAX_PATTERNS),
 * LIST options (IMAP_LIST_MAX_OPTIONS), APPEND messages (IMAP_MAX_APPEND_MESSAGES),
 * SEARCH return options (IMAP_SEARCH_MAX_RETURN), SORT criteria (IMAP_SORT_MAX_CRITERIA).
 *
 * Ownership: a request points into the argument tree (valid until imap_parser_reset) except
 * what its *_free function releases. Thread rules: none.
 */
#ifndef TERN_IMAP_ARGS_H
#define TERN_IMAP_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "imap/parse.h"

/* ---- STATUS items (RFC 3501 §6.3.10, RFC 7162 §3.1.10, RFC 8438 SIZE, RFC 7889
 * APPENDLIMIT, RFC 8474 MAILBOXID) ---- */
enum {
    IMAP_ST_MESSAGES = 1,
    IMAP_ST_RECENT = 2,
    IMAP_ST_UIDNEXT = 4,
    IMAP_ST_UIDVALIDITY = 8,
    IMAP_ST_UNSEEN = 16,
    IMAP_ST_SIZE = 32,
    IMAP_ST_HIGHESTMODSEQ = 64,
    IMAP_ST_APPENDLIMIT = 128, /* RFC 7889 */
    IMAP_ST_MAILBOXID = 256,   /* RFC 8474 */
};
/* "(MESSAGES UNSEEN)" -> IMAP_ST_* bits; false on an unknown item, a non-list or an
 * empty list. */
bool imap_status_items_parse(const struct imap_arg *list, unsigned *items_r);

/* ---- ID (RFC 2971) ---- */
#define IMAP_ID_MAX_FIELDS 30 /* RFC 2971 §3.3: at most 30 field-value pairs */
/* The client address a proxy passes in ID ("x-originating-ip", as Dovecot and Roundcube
 * send it) into ip_r, checked to be an IPv4 or IPv6 address. false when absent, malformed,
 * or the list breaks RFC 2971 §3.3 (odd count, a field over 30 octets, over 30 pairs). */
bool imap_id_originating_ip(const struct imap_arg *args, size_t n, char *ip_r, size_t size);

/* ---- SEARCH RETURN (RFC 4731 ESEARCH, RFC 5182 SAVE, RFC 5267/9394 PARTIAL) ---- */
#define IMAP_SEARCH_MAX_RETURN 16
enum {
    IMAP_SEARCH_RET_MIN = 1,
    IMAP_SEARCH_RET_MAX = 2,
    IMAP_SEARCH_RET_ALL = 4,
    IMAP_SEARCH_RET_COUNT = 8,
    IMAP_SEARCH_RET_SAVE = 16,    /* RFC 5182 SEARCHRES */
    IMAP_SEARCH_RET_PARTIAL = 32, /* RFC 5267 §4.4 */
};
struct imap_search_return {
    unsigned opts; /* IMAP_SEARCH_RET_* */
    /* PARTIAL lo:hi, 1-based positions in the result; is_from_end: "-lo:-hi" counts from
     * the last result (RFC 9394) */
    uint32_t partial_lo, partial_hi;
    bool is_from_end;
};
/* "(MIN MAX COUNT ALL SAVE PARTIAL 1:10)" -> r; "()" means ALL (RFC 4731 §3.1), "(SAVE)"
 * alone returns nothing (RFC 5182 §2.4). false on an unknown option, a bad range, PARTIAL
 * with ALL, a non-list or more than IMAP_SEARCH_MAX_RETURN options. */
bool imap_search_return_parse(const struct imap_arg *list, struct imap_search_return *r);

/* ---- SORT criteria (RFC 5256 §3, RFC 5957 DISPLAYFROM/DISPLAYTO) ---- */
#define IMAP_SORT_MAX_CRITERIA 16
enum imap_sort_key {
    IMAP_SORT_ARRIVAL,
    IMAP_SORT_CC,
    IMAP_SORT_DATE,
    IMAP_SORT_FROM,
    IMAP_SORT_SIZE,
    IMAP_SORT_SUBJECT,
    IMAP_SORT_TO,
    IMAP_SORT_DISPLAYFROM,
    IMAP_SORT_DISPLAYTO,
};
struct imap_sort_criterion {
    enum imap_sort_key key;
    bool is_reverse;
};
/* "(REVERSE DATE SUBJECT)" -> criteria (at most IMAP_SORT_MAX_CRITERIA); false on an
 * unknown key, a REVERSE without a key after it, an empty list or a non-list. */
bool imap_sort_criteria_parse(const struct imap_arg *list, struct imap_sort_criterion *c,
                              size_t *n_r);

/* ---- THREAD algorithms (RFC 5256 §3, THREAD=REFS) ---- */
enum imap_thread_algorithm {
    IMAP_THREAD_ORDEREDSUBJECT,
    IMAP_THREAD_REFERENCES,
    IMAP_THREAD_REFS,
};
bool imap_thread_algorithm_parse(const struct imap_arg *a, enum imap_thread_algorithm *alg_r);

/* ---- METADATA (RFC 5464) ---- */
#define IMAP_METADATA_MAX_ENTRIES 100 /* entries one command names */
#define IMAP_METADATA_MAX_NAME    1024
/* An entry name "/private/..." or "/shared/..." (RFC 5464 §3.2: no '*' or '%', no "//",
 * not ending in '/', printable ASCII); the name is lower-cased in place when valid. */
bool imap_metadata_name_ok(char *name);
struct imap_getmetadata_request {
    const struct imap_arg *mailbox;
    bool has_maxsize;
    uint64_t maxsize;
    int depth; /* 0, 1, or -1 for infinity */
    char *entries[IMAP_METADATA_MAX_ENTRIES]; /* point into the (lower-cased) arguments */
    size_t n_entries;
};
/* GETMETADATA [(options)] mailbox (entry *(SP entry)) | entry. */
bool imap_getmetadata_parse(struct imap_arg *args, size_t n, struct imap_getmetadata_request *r);
struct imap_setmetadata_request {
    const struct imap_arg *mailbox;
    char *names[IMAP_METADATA_MAX_ENTRIES];
    const struct imap_arg *values[IMAP_METADATA_MAX_ENTRIES]; /* NULL: NIL, remove it */
    size_t n;
};
/* SETMETADATA mailbox (entry value *(SP entry value)). */
bool imap_setmetadata_parse(struct imap_arg *args, size_t n, struct imap_setmetadata_request *r);

/* ---- LIST ---- */
#define IMAP_LIST_MAX_PATTERNS 64
#define IMAP_LIST_MAX_OPTIONS  32

enum {
    IMAP_LIST_SEL_SUBSCRIBED = 1,     /* RFC 5258 §3.1 */
    IMAP_LIST_SEL_REMOTE = 2,         /* no remote mailboxes here: no effect */
    IMAP_LIST_SEL_RECURSIVEMATCH = 4, /* CHILDINFO for parents of matches */
    IMAP_LIST_SEL_SPECIAL_USE = 8,    /* RFC 6154 §5.1 */
};
enum {
    IMAP_LIST_RET_SUBSCRIBED = 1,
    IMAP_LIST_RET_CHILDREN = 2,
    IMAP_LIST_RET_SPECIAL_USE = 4,
    IMAP_LIST_RET_STATUS = 8, /* RFC 5819 */
};

struct imap_list_request {
    bool is_extended; /* selection options, a pattern list or RETURN were given */
    unsigned select;  /* IMAP_LIST_SEL_* */
    unsigned ret;     /* IMAP_LIST_RET_*, implied ones included */
    unsigned status_items;
    const char *reference;
    const char *patterns[IMAP_LIST_MAX_PATTERNS];
    size_t n_patterns;
    bool is_pattern_list; /* patterns came as "(a b)": empty ones are ignored */
};

/* LIST [(select-opts)] reference (pattern | (patterns)) [RETURN (return-opts)].
 * false with a reason in *error_r (and r->is_extended telling whether the command tried
 * the extended syntax). */
bool imap_list_request_parse(const struct imap_arg *args, size_t n, struct imap_list_request *r,
                             const char **error_r);

/* ---- APPEND ---- */
struct imap_append_part {
    unsigned flags;
    char **keywords;             /* owned */
    time_t internaldate;         /* 0 when not given */
    const struct imap_arg *data; /* the message: a literal (or string) argument, or NULL
                                    for a CATENATE */
    const struct imap_arg *catenate; /* RFC 4469: the list of (TEXT literal | URL url) */
};
#define IMAP_CATENATE_MAX_PARTS 256 /* parts of one CATENATE message */

struct imap_append_request {
    const struct imap_arg *mailbox;
    struct imap_append_part *parts; /* owned */
    size_t n_parts;
};

/* APPEND mailbox 1*([(flags)] [date-time] (literal | CATENATE (cat-part *(SP cat-part))))
 * (RFC 3502 §6.3.11, RFC 4469 §5: cat-part = "TEXT" SP literal / "URL" SP astring). false with a reason
 * in *error_r; the request is then empty. */
bool imap_append_request_parse(const struct imap_arg *args, size_t n, struct imap_append_request *r,
                               const char **error_r);
void imap_append_request_free(struct imap_append_request *r);

/* RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded). */
bool imap_date_time_parse(const char *s, time_t *t_r);

#endif
