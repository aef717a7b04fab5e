/*
 * args.h - what the arguments of LIST (RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS,
 * RFC 6154 SPECIAL-USE), APPEND (RFC 3502 MULTIAPPEND), STATUS and SEARCH RETURN
 * (RFC 4731 ESEARCH) mean, taken from the
 * parser's argument tree. Pure functions over struct imap_arg (no I/O, no session), so the
 * unit tests and the fuzz target (tests/fuzz/fuzz_imap_command.c) reach them directly.
 *
 * Every list a client controls is bounded here: LIST patterns (IMAP_LIST_MAX_PATTERNS),
 * LIST options (IMAP_LIST_MAX_OPTIONS), APPEND messages (IMAP_MAX_APPEND_MESSAGES),
 * SEARCH return options (IMAP_SEARCH_MAX_RETURN).
 *
 * Ownership: a request points into the argument tree (valid until imap_parser_reset) except
 * what its *_free function releases. Thread rules: none.
 */
#ifndef TERN_IMAP_ARGS_H
#define TERN_IMAP_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "imap/parse.h"

/* ---- STATUS items (RFC 3501 §6.3.10, RFC 7162 §3.1.10, RFC 8438 SIZE) ---- */
enum {
    IMAP_ST_MESSAGES = 1,
    IMAP_ST_RECENT = 2,
    IMAP_ST_UIDNEXT = 4,
    IMAP_ST_UIDVALIDITY = 8,
    IMAP_ST_UNSEEN = 16,
    IMAP_ST_SIZE = 32,
    IMAP_ST_HIGHESTMODSEQ = 64,
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

/* ---- SEARCH RETURN (RFC 4731 ESEARCH) ---- */
#define IMAP_SEARCH_MAX_RETURN 16
enum {
    IMAP_SEARCH_RET_MIN = 1,
    IMAP_SEARCH_RET_MAX = 2,
    IMAP_SEARCH_RET_ALL = 4,
    IMAP_SEARCH_RET_COUNT = 8,
};
/* "(MIN MAX COUNT ALL)" -> IMAP_SEARCH_RET_* bits; "()" means ALL (RFC 4731 §3.1).
 * false on an unknown option, a non-list or more than IMAP_SEARCH_MAX_RETURN options. */
bool imap_search_return_parse(const struct imap_arg *list, unsigned *opts_r);

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
    const struct imap_arg *data; /* the message: a literal (or string) argument */
};

struct imap_append_request {
    const struct imap_arg *mailbox;
    struct imap_append_part *parts; /* owned */
    size_t n_parts;
};

/* APPEND mailbox 1*([(flags)] [date-time] literal) (RFC 3502 §6.3.11). false with a reason
 * in *error_r; the request is then empty. */
bool imap_append_request_parse(const struct imap_arg *args, size_t n, struct imap_append_request *r,
                               const char **error_r);
void imap_append_request_free(struct imap_append_request *r);

/* RFC 3501 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be space-padded). */
bool imap_date_time_parse(const char *s, time_t *t_r);

#endif
