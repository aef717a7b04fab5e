/*
 * mime.h - MIME structure of a message (RFC 2045/2046/2231, RFC 5322) for IMAP
 * BODYSTRUCTURE, BODY, ENVELOPE and BODY[section] (RFC 3501 §6.4.5, §7.4.2).
 *
 * mime_parse() makes one linear pass over the message bytes (LF or CRLF line ends) and
 * returns a tree of parts with the exact byte offsets of each part's header and body,
 * their sizes as IMAP counts them (every bare LF counts as CRLF: the store keeps LF on
 * disk, IMAP sizes are CRLF sizes) and line counts. The parser is a pure function over
 * bytes: no I/O, bounded work per byte (boundary checks are bounded by the depth limit).
 *
 * Limits: MIME_MAX_DEPTH nesting levels (a deeper multipart or message/rfc822 is a leaf of
 * type application/octet-stream), MIME_MAX_PARTS parts per message, MIME_MAX_FIELDS header
 * fields looked at per part, MIME_MAX_VALUE bytes kept of one field's value.
 *
 * Ownership: mime_parse() returns a tree owned by the caller, freed with mime_part_free().
 * Output functions append to a caller's struct buf. Thread rules: none (pure).
 */
#ifndef TERN_STORE_MIME_H
#define TERN_STORE_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define MIME_MAX_DEPTH  100
#define MIME_MAX_PARTS  10000
#define MIME_MAX_FIELDS 1000
#define MIME_MAX_VALUE  (64 * 1024)
#define MIME_MAX_PARAMS 64

/* Header fields ENVELOPE needs, in RFC 3501 §7.4.2 order. */
enum mime_env_field {
    MIME_ENV_DATE,
    MIME_ENV_SUBJECT,
    MIME_ENV_FROM,
    MIME_ENV_SENDER,
    MIME_ENV_REPLY_TO,
    MIME_ENV_TO,
    MIME_ENV_CC,
    MIME_ENV_BCC,
    MIME_ENV_IN_REPLY_TO,
    MIME_ENV_MESSAGE_ID,
    MIME_ENV_COUNT
};

struct mime_param {
    char *name; /* lower-case; "name*" when RFC 2231 extended (value keeps charset'lang') */
    char *value;
};

struct mime_part {
    struct mime_part *parent;
    struct mime_part *children; /* multipart: first sub-part */
    struct mime_part *next;     /* next sibling inside the same multipart */
    size_t n_children;
    struct mime_part *message; /* message/rfc822: the encapsulated message */

    /* Byte offsets into the parsed data; *_vsize count bare LF as two octets. The header
     * includes the empty line that ends it. */
    uint64_t header_offset, header_size, header_vsize;
    uint64_t body_offset, body_size, body_vsize, body_lines;

    char *type, *subtype; /* as written; "text" "plain" by default */
    struct mime_param *params;
    size_t n_params;
    char *id, *description, *encoding, *md5, *location, *language; /* NULL = absent */
    char *disposition;
    struct mime_param *disp_params;
    size_t n_disp_params;
    bool is_multipart; /* has children */
    bool is_message;   /* message/rfc822 with an encapsulated message */

    char *env[MIME_ENV_COUNT]; /* unfolded raw header values, NULL = absent */
};

/* Parse a whole message. Never fails on bad input (malformed parts become leaves);
 * NULL only when out of memory. */
struct mime_part *mime_parse(const char *data, size_t len);
void mime_part_free(struct mime_part *p);

/* RFC 3501 §7.4.2 BODYSTRUCTURE (extended = true) or BODY (false) of a message. */
bool mime_write_bodystructure(const struct mime_part *root, bool extended, struct buf *out);
/* RFC 3501 §7.4.2 ENVELOPE of a message (root, or part->message of message/rfc822). */
bool mime_write_envelope(const struct mime_part *msg, struct buf *out);

/* IMAP nstring: NIL for NULL, a quoted string when safe, else a literal {n}\r\n... */
bool mime_write_nstring(struct buf *out, const char *s, size_t len, bool is_null);
bool mime_write_string(struct buf *out, const char *s);

/* Resolve a section part path (RFC 3501 §6.4.5: "1.2.3" given as numbers). NULL when the
 * part does not exist. An empty path is the message itself. */
const struct mime_part *mime_part_find(const struct mime_part *root, const uint32_t *path,
                                       size_t n);

/* One mailbox of an address list (strings valid during the callback only). name is the
 * display name (or a comment standing for it), NULL when none; adl the obsolete route;
 * host NULL when the address has no '@'. */
struct mime_address {
    const char *name, *adl, *mailbox, *host;
};
/* Callbacks of mime_address_list_parse (any may be NULL); returning false stops it. */
struct mime_address_visitor {
    bool (*group_start)(void *arg, const char *name);
    bool (*address)(void *arg, const struct mime_address *a);
    bool (*group_end)(void *arg);
    void *arg;
};
/* Parse an RFC 5322 address list value (unfolded or not), tolerant of broken input. */
void mime_address_list_parse(const char *value, const struct mime_address_visitor *v);
/* Append "Name <box@host>, other@host, group: a@b;" for the list (SEARCH FROM/TO...). */
bool mime_address_list_display(const char *value, struct buf *out);

/* ---- SORT and THREAD keys (mime_sort.c, RFC 5256, RFC 5957, RFC 5051) ---------------- */

/* At most this many ids of a References field are kept for threading. */
#define MIME_MAX_REFERENCES 1000

/* RFC 5051 i;unicode-casemap: append the comparison form of UTF-8 text (titlecase, then
 * NFKD; invalid octets as U+FFFD): two strings compare as their forms' octets. */
bool mime_casemap(const char *s, size_t len, struct buf *out);
/* RFC 5256 §2.1 base subject of a subject already RFC 2047-decoded (steps 2-7), appended
 * to out (not casemapped). *is_reply_r (may be NULL): a reply/forward marker ("Re:",
 * "Fwd:", "(fwd)", "[fwd: ...]") was removed (RFC 5256 §3 REFERENCES step 5). */
bool mime_base_subject(const char *subject, size_t len, struct buf *out, bool *is_reply_r);
/* RFC 5322 §3.3 date-time (and the obsolete §4.3 forms) to seconds since the epoch in
 * UTC; false when it cannot be parsed. */
bool mime_date_parse(const char *s, int64_t *t_r);
/* Call fn for each msg-id "<left@right>" of a field value (white space and comments
 * dropped), at most max of them; returns how many. value may be NULL. */
typedef void mime_msgid_fn(void *arg, const char *id, size_t len);
size_t mime_msgids(const char *value, size_t max, mime_msgid_fn *fn, void *arg);

/* RFC 4790 comparators (RFC 5255 COMPARATOR): how SEARCH and SORT compare strings. */
enum mime_comparator {
    MIME_CMP_UNICODE_CASEMAP = 0, /* RFC 5051: titlecase + NFKD; the default (RFC 5255) */
    MIME_CMP_ASCII_CASEMAP,       /* RFC 4790 §9.2: a-z as A-Z, everything else as is */
};

/* What SORT and THREAD compare of one message. Strings are owned, never NULL after a
 * successful parse except message_id. */
struct mime_sort_keys {
    int64_t sent;          /* Date: in UTC, -1 when absent or unparsable (RFC 5256 §2.2:
                              the caller uses the internal date then) */
    bool is_reply;         /* the subject marks a reply or forward */
    char *subject;         /* casemapped base subject (by the comparator's mapping) */
    char *from, *to, *cc;  /* casemapped addr-mailbox of the first address (RFC 5256) */
    char *display_from, *display_to; /* casemapped RFC 5957 display form */
    char *message_id;      /* "<a@b>" or NULL */
    char *references;      /* space-separated ids: References, else In-Reply-To's first */
};
/* Fill k from a header block (LF or CRLF). false only when out of memory (k is then
 * partly filled: free it). */
bool mime_sort_keys_parse(const char *hdr, size_t len, struct mime_sort_keys *k);
/* The same with the strings mapped for another comparator than i;unicode-casemap. */
bool mime_sort_keys_parse_cmp(const char *hdr, size_t len, enum mime_comparator cmp,
                              struct mime_sort_keys *k);
void mime_sort_keys_free(struct mime_sort_keys *k);
/* The msg-id of the first message of msg's thread (a message, or its header block): the
 * first id of References, else of In-Reply-To, else its own Message-ID; malloc'd "<a@b>",
 * NULL when it has none (or out of memory). */
char *mime_thread_root(const char *msg, size_t len);

/* Size of data when every bare LF is sent as CRLF. */
uint64_t mime_crlf_size(const char *data, size_t len);

/* Append to out the header fields of hdr (a header block) whose names are (is_not=false)
 * or are not (is_not=true) in names, followed by the empty line, with CRLF line ends. */
bool mime_header_filter(const char *hdr, size_t len, const char *const *names, size_t n_names,
                        bool is_not, struct buf *out);

/* ---- text decoding for SEARCH (mime_decode.c) ---------------------------------------- */

/* Case-insensitive substring matcher over UTF-8 text fed in pieces: KMP over code points
 * mapped by the comparator (i;unicode-casemap for mime_matcher_new).
 * Linear time; memory proportional to the needle only. An empty needle matches anything. */
struct mime_matcher;
struct mime_matcher *mime_matcher_new(const char *needle, size_t len);
struct mime_matcher *mime_matcher_new_cmp(const char *needle, size_t len,
                                          enum mime_comparator cmp);
void mime_matcher_free(struct mime_matcher *m);
/* Forget any match and partial state (a new message). */
void mime_matcher_reset(struct mime_matcher *m);
/* Start a new text unit: partial matches do not continue across it. */
void mime_matcher_break(struct mime_matcher *m);
/* Feed text; true once the needle was seen (sticky until reset). */
bool mime_matcher_feed(struct mime_matcher *m, const char *s, size_t len);
bool mime_matcher_found(const struct mime_matcher *m);
bool mime_matcher_is_empty(const struct mime_matcher *m);

/* RFC 2047: append the unfolded header value in[0..len) to out with encoded-words (B and Q;
 * UTF-8, US-ASCII, ISO-8859-1 and whatever iconv knows) decoded to UTF-8. */
bool mime_header_decode(const char *in, size_t len, struct buf *out);

/* Does a field of header block hdr named field (any field when NULL) contain the needle of
 * m in its RFC 2047-decoded value ("Name: value" when with_names)? The matcher is not
 * reset first (callers reset it per message). False when no such field exists. */
bool mime_header_search(const char *hdr, size_t len, const char *field, struct mime_matcher *m,
                        bool with_names);

/* RFC 3516 BINARY: append the body d[0..len) with its Content-Transfer-Encoding (base64,
 * quoted-printable; identity for 7bit/8bit/binary/none) undone. false for an encoding it
 * does not know (nothing appended). */
bool mime_decode_body(const char *d, size_t len, const char *encoding, struct buf *out);

/* RFC 3516 §4.4: when a message holds NUL octets in leaf parts (binary transfer
 * encoding), append a copy to out where those parts are base64 with their
 * Content-Transfer-Encoding changed, and return true; false (out untouched) when there is
 * nothing to convert. */
bool mime_binary_to_base64(const char *data, size_t len, struct buf *out);

/* RFC 8970 PREVIEW of a message (data parsed as root): up to 256 characters of UTF-8 plain
 * text from its first inline text part (text/plain, else text/html without tags), white
 * space collapsed, appended to out (nothing when it has no text). */
bool mime_preview(const char *data, size_t len, const struct mime_part *root, struct buf *out);

/* The same for an address field (From, To, Cc, Bcc...): the value is matched in its parsed
 * display form "Name <box@host>, ..." (mime_address_list_display), then RFC 2047-decoded. */
bool mime_address_header_search(const char *hdr, size_t len, const char *field,
                                struct mime_matcher *m);

/* Does the body of the message (data, parsed as root) contain the needle of m? Text parts
 * are decoded (Content-Transfer-Encoding base64/quoted-printable, charset to UTF-8),
 * encapsulated messages' headers and bodies are searched, other parts skipped. At most
 * max_bytes decoded bytes are looked at. Resets the matcher first. */
bool mime_body_search(const char *data, size_t len, const struct mime_part *root,
                      struct mime_matcher *m, uint64_t max_bytes);

#endif
