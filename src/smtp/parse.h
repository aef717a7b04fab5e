/*
 * parse.h - SMTP command-line parsing (RFC 5321 §4.1, ESMTP parameters of RFC 1870,
 * RFC 6152, RFC 6531, RFC 3030, RFC 4954 §5).
 *
 * Pure functions over bytes: no I/O, no allocation, fuzzed by tests/fuzz/fuzz_smtp_command.c.
 * A command line is handed in without its line end. The verb is matched case-insensitively
 * against a fixed table; the argument is returned as a pointer into the line.
 *
 * Errors are reported as a complete SMTP reply line (without CRLF) written into a
 * caller-provided buffer, so the session sends exactly what the parser decided.
 *
 * Thread rules: any thread.
 */
#ifndef TERN_SMTP_PARSE_H
#define TERN_SMTP_PARSE_H

#include "core/addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF. */
#define SMTP_COMMAND_LINE_MAX 512
/* RFC 4954 §4: AUTH command lines and SASL responses may be up to 12288 octets. */
#define SMTP_AUTH_LINE_MAX 12288
/* Room for any reply the parser produces. */
#define SMTP_REPLY_MAX 512

enum smtp_verb {
    SMTP_VERB_UNKNOWN = 0,
    SMTP_VERB_HELO,
    SMTP_VERB_EHLO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_BDAT,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_VRFY,
    SMTP_VERB_EXPN,
    SMTP_VERB_HELP,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
    SMTP_VERB_ETRN,
    SMTP_VERB_XCLIENT,
    SMTP_VERB_LHLO,     /* RFC 2033 §4.1: LMTP's greeting (LMTP role only) */
    SMTP_VERB_BURL,     /* RFC 4468: message text from an IMAP URL (submission) */
    SMTP_VERB_NON_SMTP, /* "GET /", "POST /", "CONNECT": a web client or proxy probe */
    SMTP_VERB_COUNT
};

struct smtp_command {
    enum smtp_verb verb;
    const char *name; /* canonical upper-case verb ("" for unknown) */
    const char *arg;  /* argument after the verb and its spaces; may be empty */
    size_t arg_len;   /* trailing spaces removed */
};

/* Split a command line. Returns false for an empty (or all-blank) line.
 * An unknown verb gives true with verb SMTP_VERB_UNKNOWN. */
bool smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd_r);

/* Canonical upper-case name of a verb ("RCPT"), "UNKNOWN" for others. */
const char *smtp_verb_name(enum smtp_verb verb);

/* Lower-case verb name for the "disconnect from ..." statistics ("ehlo", "mail", ...). */
const char *smtp_verb_stat_name(enum smtp_verb verb);

#define SMTP_DSN_ENVID_MAX 100 /* RFC 3461 §4.4 */
#define SMTP_DSN_ORCPT_MAX 500 /* RFC 3461 §4.2 */

/* ESMTP parameters of MAIL FROM that we understand. */
enum smtp_body { SMTP_BODY_7BIT = 0, SMTP_BODY_8BITMIME };
struct smtp_mail_params {
    bool has_size;
    uint64_t size;       /* RFC 1870 SIZE=, when has_size */
    enum smtp_body body; /* RFC 6152 BODY= */
    bool is_smtputf8;    /* RFC 6531 SMTPUTF8 */
    /* RFC 3461 DSN: RET= (0 not given, 1 FULL, 2 HDRS: queue.h QUEUE_RET_*), ENVID= decoded */
    int dsn_ret;
    char envid[SMTP_DSN_ENVID_MAX + 1]; /* "" when not given */
};

/* RFC 3461 RCPT parameters. */
struct smtp_rcpt_params {
    unsigned notify;                    /* queue.h QUEUE_NOTIFY_* bits, 0 = not given */
    char orcpt[SMTP_DSN_ORCPT_MAX + 1]; /* "rfc822;bob@example.org" (xtext decoded) or "" */
};

/* "FROM:<path> [params]" (the argument of MAIL). max_size: our SIZE limit (0 = none),
 * checked here so the reply is 552 5.3.4 before any data is sent (RFC 1870 §6.1). */
bool smtp_parse_mail(const char *arg, size_t len, uint64_t max_size, struct addr *from_r,
                     struct smtp_mail_params *params_r, char *reply_r, size_t reply_size);

/* "TO:<path>" (the argument of RCPT) without parameters: any is "555 Unsupported". */
bool smtp_parse_rcpt(const char *arg, size_t len, struct addr *to_r, char *reply_r,
                     size_t reply_size);
/* "TO:<path> [NOTIFY=...] [ORCPT=type;xtext]" (RFC 3461 §4.1, §4.2). */
bool smtp_parse_rcpt_dsn(const char *arg, size_t len, struct addr *to_r,
                         struct smtp_rcpt_params *params_r, char *reply_r, size_t reply_size);

/* RFC 3030 §2: "BDAT <chunk-size> [LAST]"; chunk-size is 1*DIGIT. */
bool smtp_parse_bdat(const char *arg, size_t len, uint64_t *size_r, bool *is_last_r);
/* RFC 4468 §3: "BURL <absolute-URI> [LAST]": the URL (not copied) and LAST. */
bool smtp_parse_burl(const char *arg, size_t len, const char **url_r, size_t *url_len_r,
                     bool *is_last_r);

/* Split "MECHANISM [initial-response]" of AUTH. mech_r gets the upper-cased name
 * (<= 20 chars, RFC 4422 §3.1), *initial_r/initial_len_r the response or NULL. */
bool smtp_parse_auth(const char *arg, size_t len, char mech_r[21], const char **initial_r,
                     size_t *initial_len_r);

/* The HELO/EHLO argument: one domain or address literal, printable ASCII, <= 255 octets.
 * Copies it into out (size >= 256). */
bool smtp_parse_helo(const char *arg, size_t len, char *out, size_t size);

/* Postfix's XCLIENT (XCLIENT_README): "attr=xtext ..." with attr one of NAME, ADDR, PORT,
 * PROTO, HELO, LOGIN, DESTADDR, DESTPORT (case-insensitive). A value "[UNAVAILABLE]" or
 * "[TEMPUNAVAIL]" means unknown (left ""). ADDR is an IPv4 or IPv6 address ("IPV6:" prefix
 * allowed), PROTO is SMTP or ESMTP, HELO a HELO argument, LOGIN a login name of at most
 * 320 octets. Unknown attributes are ignored (Postfix refuses them; we only must not trust
 * them). false with a 501 reply in reply_r on a syntax error. */
struct smtp_xclient {
    char addr[64];  /* "" unless given */
    char name[256];
    char helo[256];
    char login[321];
    int proto; /* 0 not given, 1 SMTP, 2 ESMTP */
};
bool smtp_parse_xclient(const char *arg, size_t len, struct smtp_xclient *x_r, char *reply_r,
                        size_t reply_size);

#endif
