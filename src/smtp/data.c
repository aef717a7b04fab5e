/*
 * data.c - incremental DATA/BDAT reader: dot-unstuffing, the exact CRLF.CRLF end marker,
 * size cap, bare CR/LF and NUL accounting, and a bounded header scan (see data.h).
 *
 * The state machine looks at each input octet at most once and keeps O(1) state, so a
 * hostile client cannot make it slow or make it buffer: runs of ordinary text are found
 * with a tight loop and appended in one piece.
 */
#include "smtp/data.h"

#include "core/buf.h"

#include <string.h>

void smtp_data_init(struct smtp_data_reader *r, uint64_t max_size)
{
    memset(r, 0, sizeof *r);
    r->state = SMTP_DATA_LINE_START;
    r->max_size = max_size;
    r->in_header = true;
    r->at_line_start = true;
}

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

#define FNV_OFFSET 1469598103934665603ULL
#define FNV_PRIME  1099511628211ULL

/* One address octet into the running hash (see smtp_data_address_hash). */
static uint64_t address_hash_step(uint64_t h, char c)
{
    if (c == ' ' || c == '\t' || c == '<' || c == '>')
        return h;
    return (h ^ (unsigned char)lower(c)) * FNV_PRIME;
}

uint64_t smtp_data_address_hash(const char *address)
{
    uint64_t h = FNV_OFFSET;
    for (const char *p = address; *p; p++)
        h = address_hash_step(h, *p);
    return h;
}

/* End of a header line: keep a completed Delivered-To value. */
static void header_line_end(struct smtp_data_reader *r)
{
    if (r->is_capturing_delivered_to && r->n_delivered_to < SMTP_DATA_DELIVERED_TO_MAX)
        r->delivered_to[r->n_delivered_to++] = r->delivered_to_hash;
    r->is_capturing_delivered_to = false;
}

/* A header field name is complete: note the fields the session cares about. */
static void header_classify(struct smtp_data_reader *r)
{
    if (r->hdr_name_len >= sizeof r->hdr_name)
        return; /* overlong name: none of ours */
    r->hdr_name[r->hdr_name_len] = '\0';
    if (strcmp(r->hdr_name, "received") == 0) {
        if (r->n_received < 100000)
            r->n_received++;
    } else if (strcmp(r->hdr_name, "message-id") == 0) {
        r->has_message_id = true;
        r->is_capturing_msgid = r->message_id_len == 0;
    } else if (strcmp(r->hdr_name, "date") == 0) {
        r->has_date = true;
    } else if (strcmp(r->hdr_name, "from") == 0) {
        r->has_from = true;
    } else if (strcmp(r->hdr_name, "delivered-to") == 0) {
        r->is_capturing_delivered_to = true;
        r->delivered_to_hash = FNV_OFFSET;
    }
}

/* Scan output octets for header fields until the empty line that ends the header
 * section (RFC 5322 §2.1). A line that is neither a field nor a continuation ends the
 * scan too: what follows is treated as body, as every MTA does with such input. */
static void header_scan(struct smtp_data_reader *r, const char *p, size_t n)
{
    for (size_t i = 0; i < n && r->in_header; i++) {
        char c = p[i];
        if (r->at_line_start) {
            r->at_line_start = false;
            if (c == '\r' || c == '\n') {
                r->in_header = false;
                return;
            }
            if (is_wsp(c)) {
                r->hdr_mode = 1; /* folded continuation of the previous field */
                continue;
            }
            r->hdr_mode = 0;
            r->hdr_name_len = 0;
            r->is_capturing_msgid = false;
        }
        if (c == '\n') {
            header_line_end(r);
            r->at_line_start = true;
            continue;
        }
        if (r->hdr_mode == 0) {
            if (c == ':') {
                header_classify(r);
                r->hdr_mode = 1;
            } else if (is_wsp(c)) {
                r->hdr_mode = 2; /* obsolete "Name :" form: only blanks may follow */
            } else if ((unsigned char)c < 33 || (unsigned char)c > 126) {
                r->in_header = false;
            } else if (r->hdr_name_len < sizeof r->hdr_name) {
                r->hdr_name[r->hdr_name_len++] = lower(c);
            }
        } else if (r->hdr_mode == 2) {
            if (c == ':') {
                header_classify(r);
                r->hdr_mode = 1;
            } else if (!is_wsp(c)) {
                r->in_header = false;
            }
        } else if (r->is_capturing_delivered_to) {
            if (c != '\r')
                r->delivered_to_hash = address_hash_step(r->delivered_to_hash, c);
        } else if (r->is_capturing_msgid && c != '\r') {
            if (r->message_id_len == 0 && is_wsp(c))
                continue;
            if (r->message_id_len < SMTP_DATA_MESSAGE_ID_MAX)
                r->message_id[r->message_id_len++] = c;
            r->message_id[r->message_id_len] = '\0';
        }
    }
}

/* Append output octets: size accounting, the cap, the header scan. */
static void out_bytes(struct smtp_data_reader *r, struct buf *out, const char *p, size_t n)
{
    if (n == 0)
        return;
    /* Overflow reasoning: size only grows by input lengths, far below UINT64_MAX. */
    r->size += n;
    if (r->max_size && r->size > r->max_size && !r->is_too_big) {
        r->is_too_big = true;
        buf_reset(out); /* nothing of an oversized message is kept */
    }
    if (r->in_header)
        header_scan(r, p, n);
    if (!r->is_too_big && out && !buf_append(out, p, n)) {
        r->is_too_big = true; /* memory exhausted: treat like the size cap */
        buf_reset(out);
    }
}

/* Text octets inside a line (no LF among them). */
static void out_text(struct smtp_data_reader *r, struct buf *out, const char *p, size_t n)
{
    r->line_len += n;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\0')
            r->n_nul++;
    out_bytes(r, out, p, n);
}

/* End of an output line. */
static void out_crlf(struct smtp_data_reader *r, struct buf *out)
{
    if (r->line_len > SMTP_DATA_TEXT_LINE_MAX)
        r->n_long_lines++;
    r->line_len = 0;
    out_bytes(r, out, "\r\n", 2);
}

/* A bare LF inside a line: written as CRLF (see data.h), but it does NOT start a new
 * line for dot handling, so "\n.\r\n" can never end the message. */
static void out_bare_lf(struct smtp_data_reader *r, struct buf *out)
{
    r->n_bare_lf++;
    out_crlf(r, out);
}

static void out_bare_cr(struct smtp_data_reader *r, struct buf *out)
{
    r->n_bare_cr++;
    out_text(r, out, "\r", 1);
}

size_t smtp_data_feed(struct smtp_data_reader *r, const char *in, size_t len, struct buf *out,
                      bool *is_done_r)
{
    size_t i = 0;
    *is_done_r = r->state == SMTP_DATA_DONE;
    while (i < len && r->state != SMTP_DATA_DONE) {
        char c = in[i];
        switch (r->state) {
        case SMTP_DATA_LINE_START:
            i++;
            if (c == '.') {
                r->state = SMTP_DATA_DOT;
            } else if (c == '\r') {
                r->state = SMTP_DATA_TEXT_CR;
            } else if (c == '\n') {
                out_bare_lf(r, out);
                r->state = SMTP_DATA_TEXT;
            } else {
                out_text(r, out, &c, 1);
                r->state = SMTP_DATA_TEXT;
            }
            break;
        case SMTP_DATA_DOT:
            /* RFC 5321 §4.5.2: the leading dot of a line is removed; ".\r\n" alone
             * is the end marker, decided in SMTP_DATA_DOT_CR. */
            i++;
            if (c == '\r') {
                r->state = SMTP_DATA_DOT_CR;
            } else if (c == '\n') {
                out_bare_lf(r, out); /* ".\n": content, never the end */
                r->state = SMTP_DATA_TEXT;
            } else {
                out_text(r, out, &c, 1);
                r->state = SMTP_DATA_TEXT;
            }
            break;
        case SMTP_DATA_DOT_CR:
            i++;
            if (c == '\n') {
                r->state = SMTP_DATA_DONE;
            } else {
                /* ".\r<x>": the CR was bare; the dot stays removed. */
                out_bare_cr(r, out);
                if (c == '\r') {
                    r->state = SMTP_DATA_TEXT_CR;
                } else {
                    out_text(r, out, &c, 1);
                    r->state = SMTP_DATA_TEXT;
                }
            }
            break;
        case SMTP_DATA_TEXT: {
            /* Fast path: copy the run up to the next CR or LF in one piece. */
            size_t j = i;
            while (j < len && in[j] != '\r' && in[j] != '\n')
                j++;
            out_text(r, out, in + i, j - i);
            i = j;
            if (i < len) {
                if (in[i] == '\r') {
                    r->state = SMTP_DATA_TEXT_CR;
                } else {
                    out_bare_lf(r, out);
                }
                i++;
            }
            break;
        }
        case SMTP_DATA_TEXT_CR:
            i++;
            if (c == '\n') {
                out_crlf(r, out);
                r->state = SMTP_DATA_LINE_START;
            } else if (c == '\r') {
                out_bare_cr(r, out); /* the earlier CR was bare; this one is pending */
            } else {
                out_bare_cr(r, out);
                out_text(r, out, &c, 1);
                r->state = SMTP_DATA_TEXT;
            }
            break;
        case SMTP_DATA_DONE:
            break;
        }
    }
    *is_done_r = r->state == SMTP_DATA_DONE;
    return i;
}

void smtp_data_feed_chunk(struct smtp_data_reader *r, const char *in, size_t len, struct buf *out)
{
    /* Line accounting only (for the long-line count); the octets go out unchanged. */
    size_t i = 0;
    while (i < len) {
        const char *lf = memchr(in + i, '\n', len - i);
        size_t end = lf ? (size_t)(lf - in) + 1 : len;
        size_t text = end - i;
        for (size_t k = i; k < end; k++)
            if (in[k] == '\0')
                r->n_nul++;
        if (lf) {
            size_t content = text - 1;
            if (content > 0 && in[end - 2] == '\r')
                content--;
            r->line_len += content;
            if (r->line_len > SMTP_DATA_TEXT_LINE_MAX)
                r->n_long_lines++;
            r->line_len = 0;
        } else {
            r->line_len += text;
        }
        out_bytes(r, out, in + i, text);
        i = end;
    }
}
