/*
 * fetch.c - FETCH and STORE (RFC 3501 §6.4.5, §6.4.6, §7.4.2).
 *
 * FETCH runs in batches: each batch is one pool job that formats messages until about
 * IMAP_FETCH_BATCH bytes of output are ready; the next batch is submitted once the
 * connection's queued output has drained (on_drained), so a FETCH 1:* over a large
 * mailbox never holds more than a batch (plus one message) in memory.
 * Message bytes are read from the file (LF on disk) and sent with CRLF line ends; sizes
 * and partial offsets count the CRLF form. Byte ranges (BODY[], TEXT, and BODY[1.2],
 * BODY[1.2.MIME], BODY[1.HEADER]...) stream from the file with pread in chunks, located by
 * the MIME part offsets; the MIME parse and HEADER.FIELDS read the file through a
 * read-only mapping, so no message is copied into the heap. BODYSTRUCTURE/BODY/ENVELOPE are cached
 * in the index (store_message_get_cache/set_cache) after the first MIME parse.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/conn.h"
#include "imap/session.h"
#include "imap/msgmap.h"
#include "imap/url.h"
#include "store/mime.h"
#include "store/store.h"

#define IMAP_FETCH_BATCH (256 * 1024)
#define IMAP_MAX_PATH    32
#define IMAP_MAX_FIELDS  64

enum imap_fetch_kind {
    FI_FLAGS,
    FI_UID,
    FI_INTERNALDATE,
    FI_RFC822_SIZE,
    FI_ENVELOPE,
    FI_BODY,
    FI_BODYSTRUCTURE,
    FI_SECTION,
    FI_MODSEQ,
    FI_EMAILID,  /* RFC 8474 OBJECTID */
    FI_THREADID, /* RFC 8474: the thread's first message, hashed (mailbox.c) */
    FI_SAVEDATE, /* RFC 8514 */
    FI_PREVIEW,  /* RFC 8970 */
    FI_BINARY,      /* RFC 3516 BINARY[part]<partial>, BINARY.PEEK */
    FI_BINARY_SIZE, /* RFC 3516 BINARY.SIZE[part] */
};

enum imap_section_spec { SEC_ALL, SEC_HEADER, SEC_FIELDS, SEC_FIELDS_NOT, SEC_MIME, SEC_TEXT };

struct imap_fetch_item {
    enum imap_fetch_kind kind;
    char *label; /* response item name, e.g. "BODY[HEADER]<0>" or "RFC822.TEXT" */
    bool is_peek;
    uint32_t path[IMAP_MAX_PATH];
    size_t n_path;
    enum imap_section_spec spec;
    char *fields[IMAP_MAX_FIELDS];
    size_t n_fields;
    bool has_partial;
    uint64_t start, len;
    bool is_streamed; /* a byte range of the file: sent from the file in chunks */
};

struct imap_fetch {
    char *tag;
    bool is_uid;
    bool is_internal; /* NOTIFY's FETCH of new messages (imap_fetch_internal): no tagged line */
    struct imap_fetch_item items[64];
    size_t n_items;
    size_t *idx;
    size_t n_idx, next;
    bool needs_file, needs_fd, sets_seen, has_flags;
    bool has_modseq;   /* a MODSEQ item was asked for (or CHANGEDSINCE) */
    bool is_condstore; /* the session enabled CONDSTORE: flag changes carry MODSEQ */
    /* RFC 7162 §3.2.6 UID FETCH ... (CHANGEDSINCE m VANISHED): VANISHED (EARLIER) for
     * the UIDs of the set expunged after m, before the first FETCH line */
    char *vanished_set; /* the UID set; NULL: no VANISHED modifier (or already written) */
    uint64_t vanished_since;
    bool had_errors;    /* a message could not be read (I/O error): NO */
    bool had_unknown_cte; /* RFC 3516 §4.3: a BINARY part's encoding is unknown: NO */
    size_t n_expunged;  /* messages skipped because another session expunged them */
    /* The message being written (kept across batches while a literal streams). */
    struct imap_msg_data *msg;
    size_t msg_index;     /* view index */
    size_t msg_next_item; /* next item to write once the literal is done */
    bool msg_add_flags;
    bool msg_need_sp;        /* an item was written: the next one needs a space */
    int msg_fd;              /* open file of the message, -1 when none */
    uint64_t msg_size;       /* its size on disk */
    uint64_t msg_header_end; /* offset after the header's empty line, UINT64_MAX unknown */
    /* Literal in progress: raw range [pos, end) of msg_fd, converted LF -> CRLF; skip the
     * first `skip` converted octets (partial), send `remaining` more. */
    bool is_streaming;
    uint64_t st_pos, st_end, st_skip, st_remaining;
    bool st_prev_cr;
};

static void imap_fetch_msg_end(struct imap_fetch *f);

void imap_fetch_free(struct imap_fetch *f)
{
    if (!f)
        return;
    free(f->vanished_set);
    for (size_t i = 0; i < f->n_items; i++) {
        free(f->items[i].label);
        for (size_t k = 0; k < f->items[i].n_fields; k++)
            free(f->items[i].fields[k]);
    }
    free(f->idx);
    free(f->tag);
    imap_fetch_msg_end(f);
    free(f);
}

/* ---- item parsing ------------------------------------------------------------------- */

/* Parse "BODY[<section>]<partial>" after the '['; s points at the section text. */
static bool imap_fetch_parse_section(struct imap_fetch_item *it, const char *s)
{
    const char *close = strrchr(s, ']');
    if (!close)
        return false;
    size_t sec_len = (size_t)(close - s);
    char sec[1024];
    if (sec_len >= sizeof sec)
        return false;
    memcpy(sec, s, sec_len);
    sec[sec_len] = '\0';
    /* part numbers */
    const char *p = sec;
    while (isdigit((unsigned char)*p)) {
        unsigned long v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (unsigned long)(*p - '0');
            if (v > 1000000)
                return false;
            p++;
        }
        if (v == 0 || it->n_path >= IMAP_MAX_PATH)
            return false;
        it->path[it->n_path++] = (uint32_t)v;
        if (*p == '.')
            p++;
        else if (*p != '\0')
            return false;
    }
    if (*p == '\0') {
        it->spec = SEC_ALL;
    } else if (strcasecmp(p, "HEADER") == 0) {
        it->spec = SEC_HEADER;
    } else if (strcasecmp(p, "TEXT") == 0) {
        it->spec = SEC_TEXT;
    } else if (strcasecmp(p, "MIME") == 0) {
        if (it->n_path == 0)
            return false; /* RFC 3501 §6.4.5: MIME needs a part number */
        it->spec = SEC_MIME;
    } else if (strncasecmp(p, "HEADER.FIELDS", 13) == 0) {
        const char *q = p + 13;
        it->spec = SEC_FIELDS;
        if (strncasecmp(q, ".NOT", 4) == 0) {
            it->spec = SEC_FIELDS_NOT;
            q += 4;
        }
        while (*q == ' ')
            q++;
        if (*q != '(')
            return false;
        q++;
        for (;;) {
            while (*q == ' ')
                q++;
            if (*q == ')')
                break;
            const char *st = q;
            if (*q == '"') {
                st = ++q;
                while (*q && *q != '"')
                    q++;
            } else {
                while (*q && *q != ' ' && *q != ')')
                    q++;
            }
            if (!*q || q == st || it->n_fields >= IMAP_MAX_FIELDS)
                return false;
            it->fields[it->n_fields++] = strndup(st, (size_t)(q - st));
            if (*q == '"')
                q++;
        }
        if (q[1] != '\0' || it->n_fields == 0)
            return false;
    } else {
        return false;
    }
    /* partial: "<start.len>" */
    const char *t = close + 1;
    if (*t == '<') {
        char *end;
        unsigned long long a = strtoull(t + 1, &end, 10);
        if (end == t + 1 || *end != '.')
            return false;
        const char *b = end + 1;
        unsigned long long l = strtoull(b, &end, 10);
        if (end == b || *end != '>' || end[1] != '\0' || l == 0)
            return false;
        it->has_partial = true;
        it->start = a;
        it->len = l;
    } else if (*t != '\0') {
        return false;
    }
    /* label: BODY[<section upper-cased>]<start> */
    struct buf lb;
    buf_init(&lb, 0);
    buf_append_str(&lb, "BODY[");
    for (size_t i = 0; i < sec_len; i++)
        buf_append_byte(&lb, (char)toupper((unsigned char)sec[i]));
    buf_append_byte(&lb, ']');
    if (it->has_partial)
        buf_printf(&lb, "<%llu>", (unsigned long long)it->start);
    it->label = buf_steal(&lb);
    buf_free(&lb);
    return true;
}

static bool imap_fetch_add(struct imap_fetch *f, const char *s)
{
    if (f->n_items >= sizeof f->items / sizeof f->items[0])
        return false;
    struct imap_fetch_item *it = &f->items[f->n_items];
    memset(it, 0, sizeof *it);
    if (strcasecmp(s, "FLAGS") == 0) {
        it->kind = FI_FLAGS;
        f->has_flags = true;
    } else if (strcasecmp(s, "UID") == 0) {
        it->kind = FI_UID;
    } else if (strcasecmp(s, "INTERNALDATE") == 0) {
        it->kind = FI_INTERNALDATE;
    } else if (strcasecmp(s, "RFC822.SIZE") == 0) {
        it->kind = FI_RFC822_SIZE;
    } else if (strcasecmp(s, "ENVELOPE") == 0) {
        it->kind = FI_ENVELOPE;
    } else if (strcasecmp(s, "BODY") == 0) {
        it->kind = FI_BODY;
    } else if (strcasecmp(s, "BODYSTRUCTURE") == 0) {
        it->kind = FI_BODYSTRUCTURE;
    } else if (strcasecmp(s, "MODSEQ") == 0) {
        it->kind = FI_MODSEQ; /* RFC 7162 §3.1.4 */
        f->has_modseq = true;
    } else if (strcasecmp(s, "EMAILID") == 0) {
        it->kind = FI_EMAILID;
    } else if (strcasecmp(s, "THREADID") == 0) {
        it->kind = FI_THREADID;
    } else if (strcasecmp(s, "SAVEDATE") == 0) {
        it->kind = FI_SAVEDATE;
    } else if (strcasecmp(s, "PREVIEW") == 0) {
        it->kind = FI_PREVIEW; /* computed once, then cached with the message */
    } else if (strcasecmp(s, "RFC822") == 0 || strcasecmp(s, "RFC822.HEADER") == 0 ||
               strcasecmp(s, "RFC822.TEXT") == 0) {
        /* RFC 3501 §6.4.5: RFC822 = BODY[], .HEADER = BODY.PEEK[HEADER], .TEXT = BODY[TEXT] */
        it->kind = FI_SECTION;
        it->spec = strcasecmp(s, "RFC822") == 0          ? SEC_ALL
                   : strcasecmp(s, "RFC822.HEADER") == 0 ? SEC_HEADER
                                                         : SEC_TEXT;
        it->is_peek = it->spec == SEC_HEADER;
        it->label = strdup(it->spec == SEC_ALL      ? "RFC822"
                           : it->spec == SEC_HEADER ? "RFC822.HEADER"
                                                    : "RFC822.TEXT");
    } else if (strncasecmp(s, "BINARY[", 7) == 0 || strncasecmp(s, "BINARY.PEEK[", 12) == 0 ||
               strncasecmp(s, "BINARY.SIZE[", 12) == 0) {
        /* RFC 3516 §4.1: section-binary = "[" [section-part] "]": part numbers only */
        bool is_size = toupper((unsigned char)s[7]) == 'S';
        it->kind = is_size ? FI_BINARY_SIZE : FI_BINARY;
        it->is_peek = is_size || toupper((unsigned char)s[6]) == '.';
        const char *sec = strchr(s, '[') + 1;
        bool ok = imap_fetch_parse_section(it, sec) && it->spec == SEC_ALL &&
                  !(is_size && it->has_partial);
        free(it->label);
        it->label = NULL;
        if (ok) {
            struct buf lb;
            buf_init(&lb, 0);
            buf_append_str(&lb, is_size ? "BINARY.SIZE[" : "BINARY[");
            for (size_t k = 0; k < it->n_path; k++)
                buf_printf(&lb, "%s%u", k ? "." : "", it->path[k]);
            buf_append_byte(&lb, ']');
            if (it->has_partial)
                buf_printf(&lb, "<%llu>", (unsigned long long)it->start);
            it->label = buf_steal(&lb);
        }
        if (!it->label)
            return false;
        f->needs_file = true;
        if (!it->is_peek)
            f->sets_seen = true;
    } else if (strncasecmp(s, "BODY[", 5) == 0 || strncasecmp(s, "BODY.PEEK[", 10) == 0) {
        it->kind = FI_SECTION;
        it->is_peek = toupper((unsigned char)s[4]) == '.';
        if (!imap_fetch_parse_section(it, s + (it->is_peek ? 10 : 5))) {
            for (size_t k = 0; k < it->n_fields; k++)
                free(it->fields[k]);
            return false;
        }
    } else {
        return false;
    }
    if (it->kind == FI_SECTION) {
        /* Byte ranges of the file (the message, its TEXT, a part's body, MIME header or
         * HEADER) are streamed from the file; a part number needs the MIME tree too. */
        it->is_streamed = it->spec == SEC_ALL || it->spec == SEC_TEXT ||
                          (it->n_path > 0 && (it->spec == SEC_MIME || it->spec == SEC_HEADER));
        if (it->is_streamed)
            f->needs_fd = true;
        if (!it->is_streamed || it->n_path > 0)
            f->needs_file = true;
    }
    if (it->kind == FI_SECTION && !it->is_peek)
        f->sets_seen = true;
    f->n_items++;
    return true;
}

/* The fetch-att list: one item, a macro (ALL/FAST/FULL) or a parenthesised list. */
static bool imap_fetch_parse_items(struct imap_fetch *f, const struct imap_arg *a)
{
    if (a->type == IMAP_ARG_LIST) {
        if (a->n == 0)
            return false;
        for (size_t i = 0; i < a->n; i++) {
            if (a->list[i].type != IMAP_ARG_ATOM || !imap_fetch_add(f, a->list[i].str))
                return false;
            /* RFC 8970 §3: PREVIEW (LAZY): the preview is always at hand, LAZY changes
             * nothing here */
            if (strcasecmp(a->list[i].str, "PREVIEW") == 0 && i + 1 < a->n &&
                a->list[i + 1].type == IMAP_ARG_LIST) {
                const struct imap_arg *mods = &a->list[++i];
                for (size_t k = 0; k < mods->n; k++)
                    if (!imap_arg_is_atom(&mods->list[k], "LAZY"))
                        return false;
            }
        }
        return true;
    }
    if (a->type != IMAP_ARG_ATOM)
        return false;
    /* RFC 3501 §6.4.5 macros */
    if (strcasecmp(a->str, "ALL") == 0)
        return imap_fetch_add(f, "FLAGS") && imap_fetch_add(f, "INTERNALDATE") &&
               imap_fetch_add(f, "RFC822.SIZE") && imap_fetch_add(f, "ENVELOPE");
    if (strcasecmp(a->str, "FAST") == 0)
        return imap_fetch_add(f, "FLAGS") && imap_fetch_add(f, "INTERNALDATE") &&
               imap_fetch_add(f, "RFC822.SIZE");
    if (strcasecmp(a->str, "FULL") == 0)
        return imap_fetch_add(f, "FLAGS") && imap_fetch_add(f, "INTERNALDATE") &&
               imap_fetch_add(f, "RFC822.SIZE") && imap_fetch_add(f, "ENVELOPE") &&
               imap_fetch_add(f, "BODY");
    return imap_fetch_add(f, a->str);
}

/* ---- per-message output ------------------------------------------------------------- */

/* The cached structure fields of imap_write_cached, by index. */
static const char *const imap_structure_fields[3] = {"envelope", "body", "bodystructure"};

struct imap_msg_data {
    const char *bytes; /* the file mapped read-only (LF line ends), "" when empty */
    size_t len;
    bool is_mapped;
    struct mime_part *mime;
    char *cached[3]; /* imap_structure_fields read from the index cache, NULL none */
};

/* Map a message file (pool thread). Mapping instead of reading keeps message bytes out of
 * the heap: the page cache holds them, only the pages a FETCH touches are read, and one
 * message per session is mapped at a time. Maildir files never change once delivered; an
 * expunge only unlinks, which leaves the mapping valid. */
static bool imap_msg_load(struct store_mailbox *box, size_t i, struct imap_msg_data *d)
{
    struct imap_message_map map;
    if (!imap_message_map(box, i, &map))
        return false;
    d->bytes = map.bytes;
    d->len = map.len;
    d->is_mapped = map.is_mapped;
    return true;
}

static void imap_msg_unload(struct imap_msg_data *d)
{
    struct imap_message_map map = {d->bytes, d->len, d->is_mapped};
    imap_message_unmap(&map);
    d->bytes = NULL;
    d->is_mapped = false;
    mime_part_free(d->mime);
    d->mime = NULL;
    for (size_t k = 0; k < 3; k++) {
        free(d->cached[k]);
        d->cached[k] = NULL;
    }
}

static struct mime_part *imap_msg_mime(struct imap_msg_data *d)
{
    if (!d->mime && d->bytes)
        d->mime = mime_parse(d->bytes, d->len);
    return d->mime;
}

/* Append bytes converting bare LF to CRLF. */
static void imap_append_crlf(struct buf *out, const char *s, size_t len)
{
    size_t from = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) {
            buf_append(out, s + from, i - from);
            buf_append(out, "\r\n", 2);
            from = i + 1;
        }
    }
    buf_append(out, s + from, len - from);
}

/* Cached BODYSTRUCTURE/BODY/ENVELOPE, computing and storing it when missing. */
static void imap_write_cached(struct imap_job *j, size_t i, const char *field,
                              struct imap_msg_data *d, bool *loaded)
{
    struct store_mailbox *box = j->ctx.box;
    for (size_t k = 0; k < 3; k++)
        if (strcmp(field, imap_structure_fields[k]) == 0 && d->cached[k]) {
            buf_append_str(&j->out, d->cached[k]); /* read by imap_fetch_begin */
            return;
        }
    if (!*loaded) {
        *loaded = imap_msg_load(box, i, d);
    }
    struct mime_part *m = *loaded ? imap_msg_mime(d) : NULL;
    struct buf b;
    buf_init(&b, 0);
    if (!m) {
        buf_append_str(&b, "NIL");
    } else if (strcmp(field, "envelope") == 0) {
        mime_write_envelope(m, &b);
    } else if (strcmp(field, "preview") == 0) {
        struct buf text;
        buf_init(&text, 4096);
        mime_preview(d->bytes, d->len, m, &text);
        mime_write_nstring(&b, text.data ? text.data : "", text.len, false);
        buf_free(&text);
    } else {
        mime_write_bodystructure(m, strcmp(field, "bodystructure") == 0, &b);
    }
    buf_append(&j->out, b.data, b.len);
    if (m)
        (void)store_message_set_cache(box, i, field, buf_cstr(&b));
    buf_free(&b);
}

/* RFC 3501 §6.4.5: the <start.len> of a partial fetch, in octets of what is sent (the
 * CRLF form, or the decoded bytes for BINARY): the slice [*from_r, *from_r + *n_r). */
static void fetch_partial_range(const struct imap_fetch_item *it, size_t len, size_t *from_r,
                                size_t *n_r)
{
    size_t from = 0, n = len;
    if (it->has_partial) {
        from = it->start < len ? (size_t)it->start : len;
        n = len - from;
        if (n > it->len)
            n = (size_t)it->len;
    }
    *from_r = from;
    *n_r = n;
}

/* The octets of BODY[section] of the message d (CRLF line ends) into data; false when the
 * section names no part. */
static bool imap_section_data(const struct imap_fetch_item *it, struct imap_msg_data *d,
                              struct buf *data)
{
    const char *src = d->bytes;
    if (it->spec == SEC_ALL && it->n_path == 0) {
        imap_append_crlf(data, src, d->len);
        return true;
    }
    struct mime_part *root = imap_msg_mime(d);
    const struct mime_part *p = root ? mime_part_find(root, it->path, it->n_path) : NULL;
    if (!p)
        return false;
    /* HEADER/TEXT of a message/rfc822 part mean the encapsulated message's. */
    const struct mime_part *msg = it->n_path > 0 && p->is_message ? p->message : p;
    switch (it->spec) {
    case SEC_ALL:
        imap_append_crlf(data, src + p->body_offset, p->body_size);
        break;
    case SEC_MIME:
        imap_append_crlf(data, src + p->header_offset, p->header_size);
        break;
    case SEC_HEADER:
        imap_append_crlf(data, src + msg->header_offset, msg->header_size);
        break;
    case SEC_TEXT:
        imap_append_crlf(data, src + msg->body_offset, msg->body_size);
        break;
    case SEC_FIELDS:
    case SEC_FIELDS_NOT:
        mime_header_filter(src + msg->header_offset, msg->header_size,
                           (const char *const *)it->fields, it->n_fields,
                           it->spec == SEC_FIELDS_NOT, data);
        break;
    }
    return true;
}

static void imap_write_section(struct imap_job *j, const struct imap_fetch_item *it,
                               struct imap_msg_data *d)
{
    struct buf data;
    buf_init(&data, 0);
    bool found = imap_section_data(it, d, &data);
    buf_printf(&j->out, "%s ", it->label);
    if (!found) {
        buf_append_str(&j->out, "NIL");
    } else {
        size_t from, n;
        fetch_partial_range(it, data.len, &from, &n);
        buf_printf(&j->out, "{%zu}\r\n", n);
        buf_append(&j->out, data.data ? data.data + from : "", n);
    }
    buf_free(&data);
}

bool imap_section_extract(const char *msg, size_t len, const char *section, struct buf *out)
{
    /* the FETCH section grammar, as "section]" (imap_fetch_parse_section's input) */
    char text[IMAP_URL_MAX_SECTION + 2];
    struct imap_fetch_item it;
    memset(&it, 0, sizeof it);
    int n = snprintf(text, sizeof text, "%s]", section);
    bool ok = n > 0 && (size_t)n < sizeof text && imap_fetch_parse_section(&it, text);
    if (ok) {
        struct imap_msg_data d = {.bytes = msg, .len = len};
        ok = imap_section_data(&it, &d, out);
        mime_part_free(d.mime);
    }
    free(it.label);
    for (size_t k = 0; k < it.n_fields; k++)
        free(it.fields[k]);
    return ok;
}

/* RFC 3516 §4.2: BINARY[part] is the part's body with its transfer encoding undone
 * (BINARY[] the whole message); BINARY.SIZE its size. A literal8 ("~{n}") when the
 * bytes hold a NUL. */
static void imap_write_binary(struct imap_job *j, struct imap_fetch *f,
                              const struct imap_fetch_item *it, struct imap_msg_data *d)
{
    struct buf raw, data;
    buf_init(&raw, 0);
    buf_init(&data, 0);
    bool found = true, is_known = true;
    if (it->n_path == 0) {
        imap_append_crlf(&data, d->bytes, d->len);
    } else {
        struct mime_part *root = imap_msg_mime(d);
        const struct mime_part *p = root ? mime_part_find(root, it->path, it->n_path) : NULL;
        if (!p || p->body_offset > d->len || p->body_size > d->len - p->body_offset) {
            found = false;
        } else {
            /* decoded from the CRLF form, as a client would decode BODY[part] */
            imap_append_crlf(&raw, d->bytes + p->body_offset, p->body_size);
            if (p->is_multipart || p->is_message) /* containers are not encoded */
                buf_append(&data, raw.data ? raw.data : "", raw.len);
            else
                is_known = mime_decode_body(raw.data ? raw.data : "", raw.len, p->encoding,
                                            &data);
        }
    }
    buf_free(&raw);
    if (!is_known) {
        f->had_unknown_cte = true;
        buf_printf(&j->out, "%s NIL", it->label);
    } else if (it->kind == FI_BINARY_SIZE) {
        buf_printf(&j->out, "%s %zu", it->label, found ? data.len : 0);
    } else if (!found) {
        buf_printf(&j->out, "%s NIL", it->label);
    } else {
        size_t from, n;
        fetch_partial_range(it, data.len, &from, &n);
        const char *bytes = data.data ? data.data + from : "";
        bool has_nul = memchr(bytes, '\0', n) != NULL;
        buf_printf(&j->out, "%s %s{%zu}\r\n", it->label, has_nul ? "~" : "", n);
        buf_append(&j->out, bytes, n);
    }
    buf_free(&data);
}

/* ---- streamed literals ------------------------------------------------------------ */

#define IMAP_STREAM_CHUNK (64 * 1024)

/* CRLF size of raw range [pos, end) of fd; prev_cr: the byte before pos was CR. */
static bool imap_file_crlf_size(int fd, uint64_t pos, uint64_t end, uint64_t *size_r)
{
    char chunk[IMAP_STREAM_CHUNK];
    uint64_t n = 0;
    bool prev_cr = false;
    while (pos < end) {
        size_t want = end - pos < sizeof chunk ? (size_t)(end - pos) : sizeof chunk;
        ssize_t r = pread(fd, chunk, want, (off_t)pos);
        if (r <= 0)
            return false;
        /* mime_crlf_size counts a LF at the start as bare: here a CR may end the last chunk */
        n += mime_crlf_size(chunk, (size_t)r) - (prev_cr && chunk[0] == '\n');
        prev_cr = chunk[r - 1] == '\r';
        pos += (uint64_t)r;
    }
    *size_r = n;
    return true;
}

/* Offset just after the empty line that ends the header (or the file size). */
static uint64_t imap_file_header_end(struct imap_fetch *f)
{
    if (f->msg_header_end != UINT64_MAX)
        return f->msg_header_end;
    char chunk[IMAP_STREAM_CHUNK];
    uint64_t pos = 0;
    int state = 1; /* 1: at a line start, 2: at a line start after CR, 0: inside a line */
    f->msg_header_end = f->msg_size;
    while (pos < f->msg_size) {
        size_t want = f->msg_size - pos < sizeof chunk ? (size_t)(f->msg_size - pos) : sizeof chunk;
        ssize_t r = pread(f->msg_fd, chunk, want, (off_t)pos);
        if (r <= 0)
            break;
        for (ssize_t k = 0; k < r; k++) {
            char c = chunk[k];
            if (c == '\n') {
                if (state != 0) {
                    f->msg_header_end = pos + (uint64_t)k + 1;
                    return f->msg_header_end;
                }
                state = 1;
            } else if (c == '\r' && state == 1) {
                state = 2;
            } else {
                state = 0;
            }
        }
        pos += (uint64_t)r;
    }
    return f->msg_header_end;
}

/* Raw byte range [from, end) of a streamed item; false when its part does not exist. */
static bool imap_stream_range(struct imap_fetch *f, const struct imap_fetch_item *it,
                              uint64_t *from_r, uint64_t *end_r)
{
    if (it->n_path == 0) {
        *from_r = it->spec == SEC_TEXT ? imap_file_header_end(f) : 0;
        *end_r = f->msg_size;
        return true;
    }
    struct mime_part *root = f->msg ? imap_msg_mime(f->msg) : NULL;
    const struct mime_part *p = root ? mime_part_find(root, it->path, it->n_path) : NULL;
    if (!p)
        return false;
    /* HEADER/TEXT of a message/rfc822 part mean the encapsulated message's. */
    const struct mime_part *msg = p->is_message ? p->message : p;
    uint64_t off, size;
    switch (it->spec) {
    case SEC_MIME:
        off = p->header_offset, size = p->header_size;
        break;
    case SEC_HEADER:
        off = msg->header_offset, size = msg->header_size;
        break;
    case SEC_TEXT:
        off = msg->body_offset, size = msg->body_size;
        break;
    default:
        off = p->body_offset, size = p->body_size;
        break;
    }
    if (off > f->msg_size || size > f->msg_size - off)
        return false;
    *from_r = off;
    *end_r = off + size;
    return true;
}

/* Start the literal of a streamed item: "{n}\r\n" now, the bytes from later batches. */
static void imap_stream_begin(struct imap_job *j, struct imap_fetch *f,
                              const struct imap_fetch_item *it)
{
    uint64_t from = 0, end = 0;
    if (!imap_stream_range(f, it, &from, &end)) {
        buf_printf(&j->out, "%s NIL", it->label);
        f->is_streaming = false;
        return;
    }
    uint64_t total = 0;
    if (!imap_file_crlf_size(f->msg_fd, from, end, &total))
        total = 0; /* unreadable now: an empty literal keeps the protocol intact */
    uint64_t skip = 0, n = total;
    if (it->has_partial) {
        /* RFC 3501 §6.4.5: <start.len> in octets of the CRLF form */
        skip = it->start < total ? it->start : total;
        n = total - skip;
        if (n > it->len)
            n = it->len;
    }
    buf_printf(&j->out, "%s {%llu}\r\n", it->label, (unsigned long long)n);
    f->is_streaming = n > 0;
    f->st_pos = from;
    f->st_end = end;
    f->st_skip = skip;
    f->st_remaining = n;
    f->st_prev_cr = false;
}

/* Append the literal's next n converted bytes, after the skipped ones and up to its end. */
static void imap_stream_put(struct imap_job *j, struct imap_fetch *f, const char *s, size_t n)
{
    size_t skip = f->st_skip < n ? (size_t)f->st_skip : n;
    f->st_skip -= skip;
    s += skip;
    n -= skip;
    if (n > f->st_remaining)
        n = (size_t)f->st_remaining;
    buf_append(&j->out, s, n);
    f->st_remaining -= n;
}

/* Send more of the literal; false when the batch is full before it ends. */
static bool imap_stream_continue(struct imap_job *j, struct imap_fetch *f)
{
    char chunk[IMAP_STREAM_CHUNK];
    while (f->st_remaining > 0) {
        if (j->out.len >= IMAP_FETCH_BATCH)
            return false;
        ssize_t r = -1;
        if (f->st_pos < f->st_end) {
            size_t want = f->st_end - f->st_pos < sizeof chunk ? (size_t)(f->st_end - f->st_pos)
                                                               : sizeof chunk;
            r = pread(f->msg_fd, chunk, want, (off_t)f->st_pos);
        }
        if (r <= 0) {
            /* The file shrank under us: pad so the announced literal length holds. */
            while (f->st_remaining > 0) {
                buf_append_byte(&j->out, ' ');
                f->st_remaining--;
            }
            break;
        }
        f->st_pos += (uint64_t)r;
        /* Copy runs up to each LF (memchr finds them), adding the CR a bare LF lacks. */
        const char *p = chunk, *end = chunk + r;
        while (p < end && f->st_remaining > 0) {
            const char *lf = memchr(p, '\n', (size_t)(end - p));
            const char *stop = lf ? lf : end;
            if (stop > p) {
                imap_stream_put(j, f, p, (size_t)(stop - p));
                f->st_prev_cr = stop[-1] == '\r';
            }
            p = stop;
            if (lf) {
                if (!f->st_prev_cr)
                    imap_stream_put(j, f, "\r", 1);
                imap_stream_put(j, f, "\n", 1);
                f->st_prev_cr = false;
                p = lf + 1;
            }
        }
    }
    f->is_streaming = false;
    return true;
}

/* ---- one message -------------------------------------------------------------------- */

static void imap_fetch_msg_end(struct imap_fetch *f)
{
    if (f->msg) {
        imap_msg_unload(f->msg);
        free(f->msg);
        f->msg = NULL;
    }
    if (f->msg_fd >= 0)
        close(f->msg_fd);
    f->msg_fd = -1;
    f->is_streaming = false;
}

/* Write items from f->msg_next_item on; stops early when an item starts streaming. */
static void imap_fetch_items(struct imap_job *j, struct imap_fetch *f)
{
    size_t i = f->msg_index;
    const struct store_message *m = store_mailbox_message(j->ctx.box, i);
    struct imap_msg_data *d = f->msg;
    bool loaded = d->bytes != NULL;
    while (f->msg_next_item < f->n_items) {
        const struct imap_fetch_item *it = &f->items[f->msg_next_item++];
        if (f->msg_need_sp)
            buf_append_byte(&j->out, ' ');
        f->msg_need_sp = true;
        switch (it->kind) {
        case FI_FLAGS:
            buf_append_str(&j->out, "FLAGS ");
            imap_write_flags(&j->out, imap_flags_shown(&j->ctx, m->flags), m->keywords);
            break;
        case FI_UID:
            buf_printf(&j->out, "UID %u", m->uid);
            break;
        case FI_INTERNALDATE: {
            struct tm tm;
            time_t t = m->internaldate;
            gmtime_r(&t, &tm);
            char date[64];
            strftime(date, sizeof date, "%d-%b-%Y %H:%M:%S +0000", &tm);
            buf_printf(&j->out, "INTERNALDATE \"%s\"", date);
            break;
        }
        case FI_RFC822_SIZE:
            buf_printf(&j->out, "RFC822.SIZE %llu", (unsigned long long)m->vsize);
            break;
        case FI_ENVELOPE:
            buf_append_str(&j->out, "ENVELOPE ");
            imap_write_cached(j, i, "envelope", d, &loaded);
            break;
        case FI_BODY:
            buf_append_str(&j->out, "BODY ");
            imap_write_cached(j, i, "body", d, &loaded);
            break;
        case FI_BODYSTRUCTURE:
            buf_append_str(&j->out, "BODYSTRUCTURE ");
            imap_write_cached(j, i, "bodystructure", d, &loaded);
            break;
        case FI_MODSEQ:
            buf_printf(&j->out, "MODSEQ (%llu)", (unsigned long long)m->modseq);
            break;
        case FI_EMAILID:
            buf_append_str(&j->out, "EMAILID (");
            imap_write_emailid(&j->out, store_mailbox_uidvalidity(j->ctx.box), m->uid);
            buf_append_byte(&j->out, ')');
            break;
        case FI_THREADID: {
            /* RFC 8474 §5.2: "(" objectid ")" / NIL; from the header (mailbox.c) */
            if (!loaded)
                loaded = imap_msg_load(j->ctx.box, i, d);
            struct buf id;
            buf_init(&id, 32);
            if (loaded && imap_write_threadid(&id, d->bytes, d->len))
                buf_printf(&j->out, "THREADID (%s)", buf_cstr(&id));
            else
                buf_append_str(&j->out, "THREADID NIL");
            buf_free(&id);
            break;
        }
        case FI_PREVIEW:
            buf_append_str(&j->out, "PREVIEW ");
            imap_write_cached(j, i, "preview", d, &loaded);
            break;
        case FI_BINARY:
        case FI_BINARY_SIZE:
            imap_write_binary(j, f, it, d);
            break;
        case FI_SAVEDATE: {
            time_t t = imap_message_savedate(m);
            if (t == 0) {
                buf_append_str(&j->out, "SAVEDATE NIL");
                break;
            }
            struct tm tm;
            gmtime_r(&t, &tm);
            char date[64];
            strftime(date, sizeof date, "%d-%b-%Y %H:%M:%S +0000", &tm);
            buf_printf(&j->out, "SAVEDATE \"%s\"", date);
            break;
        }
        case FI_SECTION:
            if (it->is_streamed) {
                imap_stream_begin(j, f, it);
                if (f->is_streaming)
                    return;
            } else {
                imap_write_section(j, it, d);
            }
            break;
        }
    }
    if (f->msg_add_flags) {
        buf_append_str(&j->out, " FLAGS ");
        imap_write_flags(&j->out, imap_flags_shown(&j->ctx, m->flags), m->keywords);
        /* RFC 7162 §3.1.4.1: a flag change reported to a CONDSTORE client has its MODSEQ */
        if (f->is_condstore && !f->has_modseq)
            buf_printf(&j->out, " MODSEQ (%llu)", (unsigned long long)m->modseq);
    }
    buf_append_str(&j->out, ")\r\n");
    imap_fetch_msg_end(f);
}

/* Message f->msg_index cannot be read: gone (another session or program expunged it:
 * skipped, the view's promise per RFC 2180 §4.1.3) or an I/O error. */
static void imap_fetch_skip(struct imap_fetch *f, int error)
{
    if (error == ENOENT)
        f->n_expunged++;
    else
        f->had_errors = true;
    imap_fetch_msg_end(f);
}

/* Start message i: load what the items need, set \Seen, write "* n FETCH (". */
static void imap_fetch_begin(struct imap_job *j, struct imap_fetch *f, size_t i)
{
    struct store_mailbox *box = j->ctx.box;
    f->msg = calloc(1, sizeof *f->msg);
    if (!f->msg) {
        f->had_errors = true;
        return;
    }
    f->msg_index = i;
    f->msg_next_item = 0;
    f->msg_add_flags = false;
    f->msg_need_sp = false;
    f->msg_header_end = UINT64_MAX;
    if (f->needs_file && !imap_msg_load(box, i, f->msg)) {
        /* expunged behind our back, or unreadable: skip, report at the end */
        imap_fetch_skip(f, errno);
        return;
    }
    if (f->needs_fd) {
        char *err = NULL;
        struct stat st;
        if (store_message_open(box, i, &f->msg_fd, &err) < 0) {
            int e = errno;
            free(err);
            imap_fetch_skip(f, e);
            return;
        }
        if (fstat(f->msg_fd, &st) < 0) {
            imap_fetch_skip(f, errno);
            return;
        }
        f->msg_size = (uint64_t)st.st_size;
    }
    /* ENVELOPE, BODY and BODYSTRUCTURE come from the index cache, else from the file: both
     * are read before the FETCH line starts, so that a message whose file another session
     * expunged meanwhile is skipped whole, never answered with NIL there (not valid: RFC
     * 3501 §9; the issue 9 stress tester saw it) */
    bool needs_load = false;
    for (size_t k = 0; k < f->n_items; k++) {
        enum imap_fetch_kind kind = f->items[k].kind;
        size_t slot = kind == FI_ENVELOPE ? 0 : kind == FI_BODY ? 1 : kind == FI_BODYSTRUCTURE ? 2 : 3;
        if (slot == 3 || f->msg->cached[slot])
            continue;
        f->msg->cached[slot] = store_message_get_cache(box, i, imap_structure_fields[slot]);
        needs_load |= f->msg->cached[slot] == NULL;
    }
    if (needs_load && !f->msg->bytes && !imap_msg_load(box, i, f->msg)) {
        imap_fetch_skip(f, errno);
        return;
    }
    const struct store_message *m = store_mailbox_message(box, i);
    if (f->sets_seen && !j->ctx.is_readonly && !(m->flags & STORE_FLAG_SEEN)) {
        /* RFC 3501 §6.4.5: BODY[...] sets \Seen; the new flags are reported too. */
        char *err = NULL;
        if (store_message_set_flags(box, i, 1, STORE_FLAG_SEEN, NULL, &err) == 0)
            f->msg_add_flags = !f->has_flags;
        free(err);
        m = store_mailbox_message(box, i);
    }
    /* RFC 3501 §7.2.6: no keyword in FLAGS the client has not been told of */
    if (f->has_flags || f->msg_add_flags)
        imap_keywords_announce(&j->ctx, m->keywords, &j->out);
    buf_printf(&j->out, "* %zu FETCH (", i + 1);
    if (f->is_uid) {
        /* RFC 3501 §6.4.8: UID FETCH always returns the UID */
        bool has_uid = false;
        for (size_t k = 0; k < f->n_items; k++)
            has_uid |= f->items[k].kind == FI_UID;
        if (!has_uid) {
            buf_printf(&j->out, "UID %u", m->uid);
            f->msg_need_sp = true;
        }
    }
    imap_fetch_items(j, f);
}

/* The VANISHED (EARLIER) line of a UID FETCH with the VANISHED modifier (first batch). */
static void imap_fetch_vanished(struct imap_job *j, struct imap_fetch *f)
{
    struct store_mailbox *box = j->ctx.box;
    struct imap_seqset set;
    uint32_t *gone = NULL;
    size_t n_gone = 0;
    char *err = NULL;
    if (imap_seqset_parse(f->vanished_set, &set) &&
        store_mailbox_vanished(box, f->vanished_since, &gone, &n_gone, &err) == 0) {
        uint32_t star = store_mailbox_uidnext(box) - 1;
        size_t k = 0;
        for (size_t i = 0; i < n_gone; i++)
            if (imap_seqset_contains(&set, gone[i], star))
                gone[k++] = gone[i];
        if (k > 0) {
            buf_append_str(&j->out, "* VANISHED (EARLIER) ");
            imap_write_uid_set(&j->out, gone, k);
            buf_append_str(&j->out, "\r\n");
        }
    }
    imap_seqset_free(&set);
    free(err);
    free(gone);
    free(f->vanished_set);
    f->vanished_set = NULL;
}

static void imap_fetch_work_batch(struct imap_job *j)
{
    struct imap_fetch *f = j->ctx.fetch;
    if (f->vanished_set)
        imap_fetch_vanished(j, f);
    while (j->out.len < IMAP_FETCH_BATCH) {
        if (f->is_streaming) {
            if (!imap_stream_continue(j, f))
                return; /* batch full: the next batch continues the literal */
            imap_fetch_items(j, f);
            continue;
        }
        if (f->next >= f->n_idx)
            return;
        imap_fetch_begin(j, f, f->idx[f->next++]);
    }
}

/* One batch. UID FETCH may report expunges (RFC 3501 §7.4.1), but only after its last
 * batch: a sync in between would renumber the view the remaining batches index. */
struct imap_fetch_job {
    struct imap_job base;
    bool has_deferred_sync; /* result: the sync waits for the last batch */
};

static void imap_fetch_work(struct imap_job *j)
{
    struct imap_fetch *f = j->ctx.fetch;
    imap_fetch_work_batch(j);
    if (j->do_sync && (f->next < f->n_idx || f->is_streaming)) {
        j->do_sync = false;
        IMAP_JOB(imap_fetch_job, j)->has_deferred_sync = true;
    }
}

static void imap_fetch_finish(struct imap_session *s, struct imap_job *j)
{
    struct imap_fetch *f = s->fetch;
    if (IMAP_JOB(imap_fetch_job, j)->has_deferred_sync)
        s->has_pending_changes = true;
    /* a batch ends at a message boundary or inside a literal (imap_fetch_work_batch) */
    s->is_in_fetch_literal = f->is_streaming;
    if (f->next < f->n_idx || f->is_streaming) {
        j->keep_paused = true;
        s->is_fetch_waiting_drain = true;
        return;
    }
    if (f->is_internal)
        ; /* RFC 5465 §5.2: NOTIFY's FETCH of new messages has no completion of its own */
    else if (f->had_errors)
        buf_printf(&j->tagged, "%s NO Some messages could not be fetched.\r\n", j->tag);
    else if (f->had_unknown_cte)
        buf_printf(&j->tagged, "%s NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding.\r\n",
                   j->tag);
    else if (f->n_expunged > 0)
        /* RFC 2180 §4.1.3, RFC 5530: what the view still holds was sent; messages another
         * session expunged (not yet reported to this one) are skipped. Dovecot's reply. */
        buf_printf(&j->tagged, "%s OK [EXPUNGEISSUED] Some messages were already expunged.\r\n",
                   j->tag);
    else
        buf_printf(&j->tagged, "%s OK Fetch completed.\r\n", j->tag);
    imap_fetch_free(f);
    s->fetch = NULL;
    s->is_fetch_waiting_drain = false;
}

void imap_fetch_resume(struct imap_session *s)
{
    s->is_fetch_waiting_drain = false;
    struct imap_job *j = imap_job_new(s, s->fetch->tag, sizeof(struct imap_fetch_job),
                                      imap_fetch_work, imap_fetch_finish, NULL);
    if (!j)
        return;
    j->do_sync = s->fetch->is_uid;
    imap_job_submit(s, j);
}

bool imap_fetch_items_ok(const struct imap_arg *items)
{
    struct imap_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return false;
    f->msg_fd = -1;
    bool ok = imap_fetch_parse_items(f, items);
    imap_fetch_free(f);
    return ok;
}

void imap_fetch_internal(struct imap_session *s, uint32_t uid_lo, uint32_t uid_hi,
                         struct imap_arg *items)
{
    char set[32];
    snprintf(set, sizeof set, "%u:%u", uid_lo, uid_hi);
    struct imap_arg args[2] = {{.type = IMAP_ARG_ATOM, .str = set, .len = strlen(set)}, *items};
    s->is_fetch_internal = true;
    imap_cmd_fetch(s, "*", args, 2, true);
    s->is_fetch_internal = false;
}

void imap_cmd_fetch(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                    bool is_uid)
{
    uint64_t changedsince = 0;
    bool has_changedsince = false, has_vanished = false;
    if (n == 3) {
        /* RFC 7162 §3.1.4.1: FETCH set items (CHANGEDSINCE modseq); §3.2.6: and VANISHED
         * (UID FETCH, QRESYNC enabled, only with CHANGEDSINCE) */
        const struct imap_arg *mod = &args[2];
        bool ok = mod->type == IMAP_ARG_LIST && mod->n >= 1 && mod->n <= 3;
        for (size_t i = 0; ok && i < mod->n; i++) {
            char *end = NULL;
            if (imap_arg_is_atom(&mod->list[i], "VANISHED") && !has_vanished) {
                has_vanished = true;
            } else if (imap_arg_is_atom(&mod->list[i], "CHANGEDSINCE") && !has_changedsince &&
                       i + 1 < mod->n && mod->list[i + 1].type == IMAP_ARG_ATOM &&
                       isdigit((unsigned char)mod->list[i + 1].str[0])) {
                changedsince = strtoull(mod->list[++i].str, &end, 10);
                ok = *end == '\0';
                has_changedsince = true;
            } else {
                ok = false;
            }
        }
        if (!ok || (has_vanished && (!has_changedsince || !is_uid || !s->is_qresync))) {
            imap_reply(s, tag, "BAD Invalid FETCH modifier.");
            return;
        }
        n = 2;
    }
    if (n != 2 || args[0].type != IMAP_ARG_ATOM) {
        imap_reply(s, tag, "BAD Usage: FETCH set items");
        return;
    }
    struct imap_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return;
    f->is_uid = is_uid;
    f->is_internal = s->is_fetch_internal;
    f->msg_fd = -1;
    f->tag = strdup(tag);
    if (!imap_fetch_parse_items(f, &args[1])) {
        imap_fetch_free(f);
        imap_reply(s, tag, "BAD Invalid fetch items.");
        return;
    }
    if (has_changedsince && !f->has_modseq && !imap_fetch_add(f, "MODSEQ")) {
        imap_fetch_free(f);
        imap_reply(s, tag, "BAD Too many fetch items.");
        return;
    }
    /* RFC 5182: "$" is the saved search result (UIDs; the replies keep their form) */
    bool is_set_uid = is_uid;
    char *set = imap_searchres_expand(s, args[0].str, &is_set_uid);
    bool is_resolved = set && imap_resolve_set(s->box, set, is_set_uid, &f->idx, &f->n_idx);
    free(set);
    if (!is_resolved) {
        imap_fetch_free(f);
        imap_reply(s, tag, "BAD Invalid message set.");
        return;
    }
    if (has_changedsince) {
        /* only messages changed after the given mod-sequence (the view, loop thread: no
         * job is in flight while a command is handled) */
        size_t k = 0;
        for (size_t q = 0; q < f->n_idx; q++)
            if (store_mailbox_message(s->box, f->idx[q])->modseq > changedsince)
                f->idx[k++] = f->idx[q];
        f->n_idx = k;
    }
    /* RFC 7162 §3.1: MODSEQ and CHANGEDSINCE enable CONDSTORE for the session */
    if (f->has_modseq)
        imap_condstore_enable(s);
    f->is_condstore = s->is_condstore;
    if (has_vanished) {
        f->vanished_since = changedsince;
        if (!(f->vanished_set = strdup(args[0].str))) {
            imap_fetch_free(f);
            imap_reply(s, tag, "NO [SERVERBUG] Out of memory.");
            return;
        }
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_fetch_job), imap_fetch_work,
                                      imap_fetch_finish, NULL);
    if (!j) {
        imap_fetch_free(f);
        return;
    }
    s->fetch = f;
    j->do_sync = is_uid;
    imap_job_submit(s, j);
}

/* ---- STORE -------------------------------------------------------------------------- */

struct imap_store_job {
    struct imap_job base;
    size_t *idx; /* view indexes, resolved on the loop */
    size_t n;
    int mode; /* store.h: 0 replace, 1 add, -1 remove */
    unsigned flags;
    char **keywords;
    uint64_t unchangedsince; /* UINT64_MAX: no UNCHANGEDSINCE */
    bool is_uid, is_silent, is_condstore;
};

static void imap_store_cleanup(struct imap_job *j)
{
    struct imap_store_job *sj = IMAP_JOB(imap_store_job, j);
    free(sj->idx);
    imap_keywords_free(sj->keywords);
}

static void imap_store_work(struct imap_job *j)
{
    struct imap_store_job *sj = IMAP_JOB(imap_store_job, j);
    struct store_mailbox *box = j->ctx.box;
    bool silent = sj->is_silent;
    bool condstore = sj->is_condstore;
    struct buf modified;
    buf_init(&modified, 0);
    for (size_t k = 0; k < sj->n; k++) {
        char *err = NULL;
        size_t i = sj->idx[k];
        const struct store_message *m = store_mailbox_message(box, i);
        /* the store compares UNCHANGEDSINCE with the modseq the index has now, not with
         * this session's view: another session's change counts too */
        int r = store_message_store_flags(box, i, sj->mode, sj->flags,
                                          (const char *const *)sj->keywords, sj->unchangedsince,
                                          &err);
        if (r == 2) {
            /* expunged by another session since our last sync: nothing to store and no
             * FETCH for it; the EXPUNGE reaches the client at its next sync. The command
             * still succeeds (RFC 2180 §4.2.1; Dovecot answers OK the same way). */
            free(err);
            continue;
        }
        if (r < 0) {
            buf_free(&modified);
            imap_job_err(j, "Store failed: %s", err);
            return;
        }
        if (r == 1) {
            /* RFC 7162 §3.1.3: changed since the client looked: not stored, reported in
             * [MODIFIED] (UIDs for UID STORE, else sequence numbers) */
            buf_printf(&modified, "%s%u", modified.len ? "," : "",
                       sj->is_uid ? m->uid : (unsigned)(i + 1));
            continue;
        }
        m = store_mailbox_message(box, i);
        /* RFC 7162 §3.1.3: a CONDSTORE client hears MODSEQ even with .SILENT */
        if (!silent || condstore) {
            if (!silent) /* RFC 3501 §7.2.6: FLAGS announces keywords first */
                imap_keywords_announce(&j->ctx, m->keywords, &j->out);
            buf_printf(&j->out, "* %zu FETCH (", i + 1);
            /* QRESYNC clients key their cache by UID: they get it with every change */
            if (sj->is_uid || j->ctx.is_qresync)
                buf_printf(&j->out, "UID %u ", m->uid);
            if (!silent) {
                buf_append_str(&j->out, "FLAGS ");
                imap_write_flags(&j->out, imap_flags_shown(&j->ctx, m->flags), m->keywords);
            }
            if (condstore)
                buf_printf(&j->out, "%sMODSEQ (%llu)", silent ? "" : " ",
                           (unsigned long long)m->modseq);
            buf_append_str(&j->out, ")\r\n");
        }
    }
    if (modified.len)
        buf_printf(&j->tagged, "%s OK [MODIFIED %s] Conditional STORE failed.\r\n", j->tag,
                   modified.data);
    else
        buf_printf(&j->tagged, "%s OK Store completed.\r\n", j->tag);
    buf_free(&modified);
    j->is_ok = true;
}

void imap_cmd_store(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                    bool is_uid)
{
    uint64_t unchangedsince = UINT64_MAX;
    struct imap_arg *set_arg = n >= 1 ? &args[0] : NULL;
    if (n == 4 && args[1].type == IMAP_ARG_LIST) {
        /* RFC 7162 §3.1.3: STORE set (UNCHANGEDSINCE modseq) item value */
        const struct imap_arg *mod = &args[1];
        char *end = NULL;
        if (mod->n != 2 || !imap_arg_is_atom(&mod->list[0], "UNCHANGEDSINCE") ||
            mod->list[1].type != IMAP_ARG_ATOM || !isdigit((unsigned char)mod->list[1].str[0]) ||
            (unchangedsince = strtoull(mod->list[1].str, &end, 10), *end != '\0')) {
            imap_reply(s, tag, "BAD Invalid STORE modifier.");
            return;
        }
        args++;
        n--;
        imap_condstore_enable(s);
    }
    if (n != 3 || set_arg->type != IMAP_ARG_ATOM || args[1].type != IMAP_ARG_ATOM) {
        imap_reply(s, tag, "BAD Usage: STORE set [+-]FLAGS[.SILENT] (flags)");
        return;
    }
    if (s->is_readonly) {
        imap_reply(s, tag, "NO Mailbox is read-only.");
        return;
    }
    const char *op = args[1].str;
    int mode = 0; /* store.h: 0 replace, 1 add, -1 remove */
    if (*op == '+') {
        mode = 1;
        op++;
    } else if (*op == '-') {
        mode = -1;
        op++;
    }
    bool silent = false;
    if (strcasecmp(op, "FLAGS.SILENT") == 0)
        silent = true;
    else if (strcasecmp(op, "FLAGS") != 0) {
        imap_reply(s, tag, "BAD Invalid STORE item.");
        return;
    }
    unsigned flags = 0;
    char **kw = NULL;
    if (!imap_parse_flags(&args[2], &flags, &kw)) {
        imap_reply(s, tag, "BAD Invalid flags.");
        return;
    }
    size_t *idx = NULL, cnt = 0;
    bool is_set_uid = is_uid;
    char *set = imap_searchres_expand(s, set_arg->str, &is_set_uid);
    bool is_resolved = set && imap_resolve_set(s->box, set, is_set_uid, &idx, &cnt);
    free(set);
    if (!is_resolved) {
        imap_keywords_free(kw);
        imap_reply(s, tag, "BAD Invalid message set.");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_store_job), imap_store_work, NULL,
                                      imap_store_cleanup);
    if (!j) {
        free(idx);
        imap_keywords_free(kw);
        return;
    }
    struct imap_store_job *sj = IMAP_JOB(imap_store_job, j);
    sj->idx = idx;
    sj->n = cnt;
    sj->mode = mode;
    sj->flags = flags;
    sj->keywords = kw;
    sj->unchangedsince = unchangedsince;
    sj->is_uid = is_uid;
    sj->is_silent = silent;
    sj->is_condstore = s->is_condstore;
    /* RFC 3501 §7.4.1: UID STORE may report expunges (after its FETCH responses). */
    j->do_sync = is_uid;
    imap_job_submit(s, j);
}
