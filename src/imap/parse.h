/*
 * parse.h - IMAP4rev1 command parser (RFC 3501 §9 grammar, RFC 7888 LITERAL+), pure.
 *
 * The session cuts its input into lines (without CRLF) and literal bytes; the parser turns
 * them into tag, command name and an argument tree. A command may span several lines when
 * it carries literals: imap_parser_feed_line() then returns IMAP_PARSE_LITERAL with
 * literal_size/is_literal_nonsync set; the session (for a synchronising literal) sends
 * "+ ..." and feeds exactly literal_size bytes with imap_parser_feed_literal(), then the
 * next line. Sizes are checked before anything is allocated: a {4294967295} literal is an
 * error, not an allocation.
 *
 * LITERAL- (RFC 7888 §5, RFC 9051 §4.3): with max_nonsync set, a "{n+}" literal larger
 * than it is an error (is_nonsync_too_big) whose octets the session skips. With is_utf8
 * (RFC 6855 §3), a quoted string with 8-bit octets that are not UTF-8 is an error.
 *
 * Arguments: atoms (also "1:*", "\Seen", "BODY[HEADER.FIELDS (A B)]<0.10>": a BODY/BINARY
 * section atom runs from '[' to the matching ']', spaces and parens included; elsewhere '['
 * is an ordinary atom char), quoted strings, literals, and
 * parenthesised lists (nesting limited to IMAP_MAX_LIST_DEPTH).
 *
 * Ownership: the parser owns the tree; it lives until imap_parser_reset(). Thread rules:
 * none.
 */
#ifndef TERN_IMAP_PARSE_H
#define TERN_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAP_MAX_LINE       (64 * 1024)
#define IMAP_MAX_LIST_DEPTH 32
#define IMAP_MAX_ARGS       100000
#define IMAP_MAX_TAG        64
/* RFC 7888 §5, RFC 9051 §4.3: the largest non-synchronizing literal under LITERAL- */
#define IMAP_LITERAL_MINUS_MAX 4096
/* MULTIAPPEND (RFC 3502): at most this many messages in one APPEND, and all their
 * literals together at most IMAP_APPEND_TOTAL_FACTOR times the largest message. */
#define IMAP_MAX_APPEND_MESSAGES 1000
#define IMAP_APPEND_TOTAL_FACTOR 4

enum imap_arg_type {
    IMAP_ARG_ATOM,
    IMAP_ARG_QUOTED,
    IMAP_ARG_LITERAL,
    IMAP_ARG_LIST,
};

struct imap_arg {
    enum imap_arg_type type;
    char *str; /* atom/quoted/literal bytes, NUL-terminated (len is the truth) */
    size_t len;
    struct imap_arg *list;    /* IMAP_ARG_LIST: the elements */
    size_t n, cap;            /* elements / allocated (for a literal: bytes allocated) */
    bool is_external;         /* literal bytes went to the session's spill file (len = size) */
    bool is_literal8;         /* RFC 3516 "~{n}": may hold any octet (RFC 6855 UTF8 APPEND) */
    uint64_t external_offset; /* ... starting at this offset of the file */
};

enum imap_parse_result {
    IMAP_PARSE_DONE,    /* a whole command: tag, name, args */
    IMAP_PARSE_LITERAL, /* feed literal_size bytes, then the next line */
    IMAP_PARSE_ERROR,   /* error says why; tag may be NULL (no valid tag: untagged BAD) */
};

struct imap_parser {
    size_t max_literal;   /* largest literal accepted */
    /* kept across commands (imap_parser_reset), set by the session: */
    size_t max_nonsync; /* RFC 7888 §5 LITERAL-: largest {n+} literal, 0 no own limit */
    bool is_utf8;       /* RFC 6855 §3: 8-bit in quoted strings must be valid UTF-8 */
    char *tag;            /* valid once the first line was parsed */
    char *name;           /* upper-case command name */
    struct imap_arg args; /* IMAP_ARG_LIST of the arguments */
    const char *error;
    bool is_literal_too_big; /* the error is an oversized literal (NO [TOOBIG]) */
    bool is_over_limit;      /* the error is too many messages in one APPEND (NO [LIMIT]) */
    bool is_nonsync_too_big; /* LITERAL-: a {n+} literal over max_nonsync (BAD [TOOBIG]);
                                literal_size octets of it follow and are to be skipped */
    /* Literal in progress */
    uint64_t literal_size;
    bool is_literal_nonsync;
    size_t literal_have;
    uint64_t literal_total; /* bytes of all literals of this command */
    size_t n_literals;      /* literals of this command */
    /* Open lists while parsing: stack[0] is &args */
    struct imap_arg *stack[IMAP_MAX_LIST_DEPTH + 1];
    size_t depth;
    size_t n_args;
    bool has_first_line;
    bool is_out_of_memory; /* a literal could not grow: the command cannot continue */
};

void imap_parser_init(struct imap_parser *p, size_t max_literal);
/* Forget the current command (frees the tree); ready for a new command. */
void imap_parser_reset(struct imap_parser *p);
void imap_parser_free(struct imap_parser *p);
/* Feed one line without its CRLF/LF. */
enum imap_parse_result imap_parser_feed_line(struct imap_parser *p, const char *line, size_t len);
/* Feed literal bytes (at most literal_size - literal_have); true when the literal is complete
 * and the next line should be fed. */
bool imap_parser_feed_literal(struct imap_parser *p, const char *data, size_t len);
/* The session stored the whole current literal elsewhere (APPEND spill file, from offset):
 * mark it complete with len = literal_size and no bytes; the next line follows. */
void imap_parser_literal_external(struct imap_parser *p, uint64_t offset);
/* Does the command being parsed carry messages in its literals (APPEND, REPLACE, UID
 * REPLACE)? Those literals may be message-sized; others are bounded by the line limit. */
bool imap_parser_carries_message(const struct imap_parser *p);
/* Bytes of the literal still to come. */
uint64_t imap_parser_literal_remaining(const struct imap_parser *p);

/* Helpers for handlers: is the argument a string (atom/quoted/literal)? */
bool imap_arg_is_string(const struct imap_arg *a);
bool imap_arg_is_atom(const struct imap_arg *a, const char *upper);

/* Sequence sets (RFC 3501 §9 sequence-set): ranges as written ("5:2" stays 5:2), '*'
 * marked apart from the number 4294967295 (a valid UID). */
struct imap_seq_range {
    uint32_t lo, hi;
    bool is_lo_star, is_hi_star;
};
struct imap_seqset {
    struct imap_seq_range *r;
    size_t n;
};
/* Parse "1:3,5,7:*"; false on bad syntax. */
bool imap_seqset_parse(const char *s, struct imap_seqset *set_r);
void imap_seqset_free(struct imap_seqset *set);
/* Is v in the set, with '*' meaning star (the largest number in use)? */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t v, uint32_t star);

#endif
