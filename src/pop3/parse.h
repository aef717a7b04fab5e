/*
 * parse.h - POP3 wire parsing as pure functions over bytes (no I/O, no allocation):
 * line framing with a hard length cap, the command verb table, arguments, message numbers,
 * and the RETR/TOP converter that turns a stored message (LF line ends) into what goes on
 * the wire (CRLF line ends, byte-stuffed, RFC 1939 §3).
 *
 * Everything here is used by the session code and fuzzed by tests/fuzz/fuzz_pop3_command.c.
 *
 * Size accounting (RFC 1939 §5 and §11): LIST, STAT and RETR's "+OK n octets" report
 * the size of the message as RETR delivers it once the client has removed the
 * byte-stuffing: CRLF line ends, plus the CRLF added when the stored message does not end
 * with a line end. §11: lines beginning with '.' "need not (and must not) be counted
 * twice". That is the Maildir W= size (the size with CRLF line ends) Dovecot lists, and
 * what poplib and fetchmail count. The converter counts both the octets it sends
 * (out_total, for the log's retr=/top= counters) and the stuffing among them, and the
 * size scan is the same state machine with a NULL output, so LIST and RETR cannot
 * disagree.
 *
 * Thread rules: none (pure); the size scan runs on workpool threads.
 */
#ifndef TERN_POP3_PARSE_H
#define TERN_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 2449 §4: a command line is at most 255 octets including the terminating CRLF. */
#define POP3_LINE_MAX 255
/* RFC 5034 §4: AUTH continuation lines are not bound by the 255-octet limit; SCRAM and
 * PLAIN with long passwords need more. Still capped. */
#define POP3_SASL_LINE_MAX 8192

/* ---- line framing --------------------------------------------------------------- */

/* State kept between calls while an over-long line is being skipped. */
struct pop3_lines {
    bool is_discarding; /* inside a line longer than the cap: dropping bytes until LF */
};

enum pop3_line_result {
    POP3_LINE_NEED_MORE, /* no complete line yet (consumed bytes, if any, were dropped) */
    POP3_LINE_OK,        /* *line_len_r bytes at buf are a line (CR/LF stripped) */
    POP3_LINE_TOO_LONG,  /* an over-long line ended: reply -ERR, session goes on */
};

/*
 * Find the next line in buf[0..len). max is the cap including CRLF. *consumed_r bytes must
 * be dropped from the input by the caller (always, whatever the result). A line ends at LF;
 * one CR before it is stripped (bare LF is accepted, as every POP3 server does for telnet).
 * Callers need to present at most max bytes to decide; while discarding, any amount.
 */
enum pop3_line_result pop3_line_next(struct pop3_lines *st, const char *buf, size_t len, size_t max,
                                     size_t *line_len_r, size_t *consumed_r);

/* ---- commands -------------------------------------------------------------------- */

enum pop3_verb {
    POP3_VERB_UNKNOWN = 0,
    POP3_VERB_USER,
    POP3_VERB_PASS,
    POP3_VERB_APOP,
    POP3_VERB_AUTH,
    POP3_VERB_STLS,
    POP3_VERB_CAPA,
    POP3_VERB_QUIT,
    POP3_VERB_STAT,
    POP3_VERB_LIST,
    POP3_VERB_RETR,
    POP3_VERB_DELE,
    POP3_VERB_NOOP,
    POP3_VERB_RSET,
    POP3_VERB_TOP,
    POP3_VERB_UIDL,
    POP3_VERB_COUNT_
};

struct pop3_command {
    enum pop3_verb verb;
    const char *args; /* points into the line: text after the verb and one space */
    size_t args_len;  /* 0 when there are no arguments */
};

/* Split a command line (without CRLF) into verb (case-insensitive, RFC 1939 §3) and
 * arguments. Returns false for an empty line or one holding NUL or other control bytes
 * except TAB (cmd_r->verb is then UNKNOWN). Unknown verbs return true with VERB_UNKNOWN. */
bool pop3_command_parse(const char *line, size_t len, struct pop3_command *cmd_r);

/* Upper-case name of a verb ("RETR"), "" for UNKNOWN. */
const char *pop3_verb_name(enum pop3_verb verb);

/* A space-separated argument list, borrowed from the line. */
#define POP3_ARGS_MAX 4
struct pop3_args {
    const char *v[POP3_ARGS_MAX];
    size_t len[POP3_ARGS_MAX];
    size_t n;
};
/* Split args on runs of spaces. Returns false when there are more than POP3_ARGS_MAX
 * words or an argument is longer than 40 octets (RFC 1939 §3) unless allow_long. */
bool pop3_args_split(const char *args, size_t len, bool allow_long, struct pop3_args *a_r);

/* A message number or line count: ASCII digits only, value fits uint64_t.
 * (RFC 1939: "msg" is a decimal number; no sign, no spaces.) */
bool pop3_number_parse(const char *s, size_t len, uint64_t *n_r);

/* ---- RETR / TOP converter --------------------------------------------------------- */

struct pop3_msg {
    bool is_line_start; /* next input byte begins a line */
    bool was_cr;        /* last byte emitted was CR */
    bool is_top;        /* TOP: stop after the header and top_lines body lines */
    bool is_in_header;  /* TOP: still in the header */
    bool has_line_text; /* current line has bytes other than CR */
    bool is_done;       /* TOP limit reached: ignore further input */
    uint64_t top_lines; /* TOP: body lines still to send */
    uint64_t out_total; /* octets produced so far, byte-stuffing included */
    uint64_t stuffed;   /* of those, the '.' added by byte-stuffing (RFC 1939 §3) */
};

/* Start converting a whole message (RETR / size scan). */
void pop3_msg_init(struct pop3_msg *m);
/* Start converting for TOP msg n: header, blank line, then n body lines (RFC 1939 §7). */
void pop3_msg_init_top(struct pop3_msg *m, uint64_t lines);

/*
 * Convert in[0..len). Writes at most 2 * len bytes to out (may be NULL to only count) and
 * returns the number written; out_total grows by that number. Once a TOP limit is hit,
 * is_done is set and the rest of the input is ignored.
 */
size_t pop3_msg_feed(struct pop3_msg *m, const char *in, size_t len, char *out);

/* Finish: write the CRLF that closes a last line without line end (0 or 2 bytes, counted
 * in out_total), then ".\r\n" (3 bytes, not counted). out must hold 5 bytes (NULL: count). */
size_t pop3_msg_finish(struct pop3_msg *m, char *out);

/* The message size so far as LIST/STAT count it: out_total less the byte-stuffing. */
uint64_t pop3_msg_size(const struct pop3_msg *m);

/* The size LIST/STAT report for a stored message (pop3_msg_size of a whole RETR),
 * scanning fd from offset 0 (BLOCKING: reads the file once). Returns 0 and *size_r, or
 * -1 on a read error. */
int pop3_msg_size_fd(int fd, uint64_t *size_r);

#endif
