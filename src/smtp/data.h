/*
 * data.h - incremental reader for the message of DATA (RFC 5321 §4.1.1.4, §4.5.2) and
 * BDAT (RFC 3030), as a pure function over bytes (fuzzed by tests/fuzz/fuzz_smtp_data.c).
 *
 * DATA: bytes arrive in arbitrary pieces; smtp_data_feed() removes dot-stuffing and stops
 * right after the end-of-data marker, which is exactly CRLF "." CRLF (the CRLF before the
 * dot may be the one that ended the DATA command). A bare LF or a bare CR never ends a
 * line for this purpose, so it can neither end nor split the message (the 2023 "SMTP
 * smuggling" class: "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n" are message content).
 *
 * Output: the message with CRLF line ends. A bare LF is written as CRLF (like Postfix's
 * smtpd_forbid_bare_newline=normalize), so a stored or relayed copy never carries a lone
 * LF that a downstream parser could read as a line end; a bare CR is kept as it is.
 * NUL bytes are kept (length-counted all the way to the store) and counted.
 *
 * Limits: output beyond max_size is not stored (is_too_big is set) but the input is still
 * read to the end marker, so the reply (552 5.3.4) comes at the right point in the stream.
 * Text lines longer than 998 octets (RFC 5321 §4.5.3.1.6) are accepted and counted: the
 * RFC asks servers to avoid such limits "to the maximum extent possible" (§4.5.3.1), and
 * Postfix/Dovecot accept them too; the size cap bounds memory, not the line length.
 *
 * The reader also scans the header section of its output (bounded state, no buffering)
 * for Message-ID, Date, the number of Received lines (hop count, RFC 5321 §6.3) and the
 * Delivered-To addresses (mail forwarding loops, RFC 9228).
 *
 * Thread rules: any thread; one reader per message.
 */
#ifndef TERN_SMTP_DATA_H
#define TERN_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define SMTP_DATA_TEXT_LINE_MAX  998 /* RFC 5321 §4.5.3.1.6, without CRLF */
#define SMTP_DATA_MESSAGE_ID_MAX 250 /* longest Message-ID value we remember */

enum smtp_data_state {
    SMTP_DATA_LINE_START, /* after CRLF (or at the start): a dot here is special */
    SMTP_DATA_DOT,        /* "." at line start */
    SMTP_DATA_DOT_CR,     /* ".\r" at line start */
    SMTP_DATA_TEXT,       /* inside a line */
    SMTP_DATA_TEXT_CR,    /* "\r" inside a line (not yet known to be CRLF) */
    SMTP_DATA_DONE,       /* end marker consumed */
};

struct smtp_data_reader {
    enum smtp_data_state state;
    uint64_t max_size;     /* 0 = no limit */
    uint64_t size;         /* output octets, counted even past max_size */
    bool is_too_big;       /* size exceeded max_size: output was not stored */
    uint64_t n_nul;        /* NUL octets seen */
    uint64_t n_bare_lf;    /* bare LFs normalised to CRLF */
    uint64_t n_bare_cr;    /* bare CRs kept */
    uint64_t n_long_lines; /* lines over SMTP_DATA_TEXT_LINE_MAX */
    size_t line_len;       /* length of the current output line */

    /* header scan over the output */
    bool in_header; /* still in the header section */
    bool at_line_start;
    int hdr_mode; /* 0 = reading a field name, 1 = in a value, 2 = skipping */
    char hdr_name[32];
    size_t hdr_name_len;
    bool is_capturing_msgid;
    bool has_message_id;
    bool has_date;
    bool has_from;
    unsigned n_received;
    char message_id[SMTP_DATA_MESSAGE_ID_MAX + 1];
    size_t message_id_len;
    /* Delivered-To values seen (hashes, RFC 9228 loop detection), at most 16 */
    bool is_capturing_delivered_to;
    uint64_t delivered_to_hash;
    uint64_t delivered_to[16];
    unsigned n_delivered_to;
};

#define SMTP_DATA_DELIVERED_TO_MAX 16

/* Hash of an address as the Delivered-To scan computes it: ASCII lower-case, blanks and
 * angle brackets ignored. Compare with smtp_data_reader.delivered_to[]. */
uint64_t smtp_data_address_hash(const char *address);

void smtp_data_init(struct smtp_data_reader *r, uint64_t max_size);

/* DATA: consume wire bytes from in. Output is appended to out (unless too big). Returns
 * the number of input bytes consumed: all of len, or fewer when the end marker was found
 * (the rest is the next pipelined command). *is_done_r is set when the marker was read. */
size_t smtp_data_feed(struct smtp_data_reader *r, const char *in, size_t len, struct buf *out,
                      bool *is_done_r);

/* BDAT: a chunk's octets are message content as they are (RFC 3030 §2: no dot
 * transparency, no end marker); account them and append to out (unless too big). */
void smtp_data_feed_chunk(struct smtp_data_reader *r, const char *in, size_t len, struct buf *out);

#endif
