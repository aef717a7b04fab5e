/*
 * mime_decode.c - MIME text decoding for IMAP SEARCH (RFC 3501 §6.4.4): RFC 2047
 * encoded-words in header values, Content-Transfer-Encoding (RFC 2045 §6.7 quoted-printable,
 * §6.8 base64) and charset conversion to UTF-8, and a case-insensitive substring matcher.
 *
 * Everything streams: a part body goes through a CTE decoder and a charset converter in
 * small fixed-size chunks into the matcher (Knuth-Morris-Pratt over code points mapped by
 * the comparator: i;unicode-casemap, RFC 5051, by default; i;ascii-casemap, RFC 4790), so the work is linear in the message size and the memory is bounded by the
 * needle, whatever the message. Charsets: UTF-8 and US-ASCII pass through, ISO-8859-1 is
 * converted here, anything else through iconv(3) (unknown charsets pass through raw).
 * Bytes that are not valid UTF-8 stand for themselves (mapped to U+DC80..U+DCFF, like
 * Python's surrogateescape), so an 8-bit needle still finds the same 8-bit bytes.
 *
 * Thread rules: none; a matcher is used by one thread at a time.
 */
#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unicase.h>
#include <uninorm.h>

#include "core/buf.h"
#include "core/util.h"
#include "store/mime.h"

#define MIME_CHUNK 4096

/* ---- case folding and the matcher -------------------------------------------------- */

/* RFC 5051 §2 (i;unicode-casemap) on one code point: its titlecase mapping (Unicode simple
 * titlecase, libunistring's uc_totitle), then every decomposition (canonical and
 * compatibility, as NFKD) applied recursively: at most MIME_FOLD_MAX code points. Applied
 * per code point, without NFKD's reordering of combining marks, so that the matcher can
 * fold a stream; needle and text go through the same mapping. i;ascii-casemap (RFC 4790
 * §9.2) maps a-z to A-Z only. Invalid-byte stand-ins (U+DC80..U+DCFF) stay as they are. */
#define MIME_FOLD_MAX UC_DECOMPOSITION_MAX_LENGTH
static size_t mime_fold(enum mime_comparator cmp, uint32_t c, uint32_t out[MIME_FOLD_MAX])
{
    if (c < 0x80 || cmp == MIME_CMP_ASCII_CASEMAP || (c >= 0xD800 && c <= 0xDFFF) ||
        c > 0x10FFFF) {
        out[0] = c >= 'a' && c <= 'z' ? c - 32 : c;
        return 1;
    }
    ucs4_t stack[MIME_FOLD_MAX];
    size_t sp = 0, n = 0;
    stack[sp++] = uc_totitle(c);
    while (sp > 0) {
        ucs4_t x = stack[--sp], d[UC_DECOMPOSITION_MAX_LENGTH];
        int tag;
        int k = uc_decomposition(x, &tag, d);
        if (k <= 0) {
            if (n < MIME_FOLD_MAX)
                out[n++] = x;
            continue;
        }
        for (int i = k - 1; i >= 0; i--) /* the first one comes out first */
            if (sp < MIME_FOLD_MAX)
                stack[sp++] = d[i];
    }
    return n;
}

struct mime_utf8 {
    uint32_t cp;
    unsigned need; /* continuation bytes still expected */
    unsigned have;
    unsigned char bytes[4];
};

struct mime_matcher {
    enum mime_comparator cmp;
    uint32_t *needle; /* folded code points */
    size_t *fail;     /* KMP failure function */
    size_t n;
    size_t state;
    bool is_found;
    bool is_lead[256]; /* bytes that may start a match: US-ASCII ones folding to
                        * needle[0], and every byte >= 0x80 (decoded the long way) */
    struct mime_utf8 u;
};

static void mime_matcher_cp(void *arg, uint32_t cp);

/* UTF-8 decoder step: feeds whole code points to fn; invalid bytes map to U+DC80+byte. */
static void mime_utf8_byte(struct mime_utf8 *u, unsigned char b, void (*fn)(void *, uint32_t),
                           void *m)
{
    if (u->need > 0) {
        if ((b & 0xC0) == 0x80) {
            u->cp = (u->cp << 6) | (b & 0x3F);
            u->bytes[u->have++] = b;
            if (--u->need == 0)
                fn(m, u->cp);
            return;
        }
        for (unsigned i = 0; i < u->have; i++)
            fn(m, 0xDC00u + u->bytes[i]);
        u->need = 0;
    }
    if (b < 0x80) {
        fn(m, b);
        return;
    }
    unsigned need = (b & 0xE0) == 0xC0 ? 1 : (b & 0xF0) == 0xE0 ? 2 : (b & 0xF8) == 0xF0 ? 3 : 0;
    if (need == 0 || b == 0xC0 || b == 0xC1) {
        fn(m, 0xDC00u + b);
        return;
    }
    u->need = need;
    u->have = 1;
    u->bytes[0] = b;
    u->cp = b & (0x3F >> need);
}

/* Collects code points into a growing array (for the needle). */
struct mime_cp_list {
    enum mime_comparator cmp;
    uint32_t *v;
    size_t n, cap;
    bool is_oom;
};

static void mime_list_cp(void *arg, uint32_t cp)
{
    struct mime_cp_list *l = arg;
    uint32_t f[MIME_FOLD_MAX];
    size_t nf = mime_fold(l->cmp, cp, f);
    for (size_t i = 0; i < nf; i++) {
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 64;
            uint32_t *v = realloc(l->v, cap * sizeof *v);
            if (!v) {
                l->is_oom = true;
                return;
            }
            l->v = v;
            l->cap = cap;
        }
        l->v[l->n++] = f[i];
    }
}

struct mime_matcher *mime_matcher_new(const char *needle, size_t len)
{
    return mime_matcher_new_cmp(needle, len, MIME_CMP_UNICODE_CASEMAP);
}

struct mime_matcher *mime_matcher_new_cmp(const char *needle, size_t len,
                                          enum mime_comparator cmp)
{
    struct mime_matcher *m = calloc(1, sizeof *m);
    struct mime_cp_list l = {.cmp = cmp};
    struct mime_utf8 u = {0};
    if (!m)
        return NULL;
    for (size_t i = 0; i < len; i++)
        mime_utf8_byte(&u, (unsigned char)needle[i], mime_list_cp, &l);
    for (unsigned i = 0; u.need > 0 && i < u.have; i++)
        mime_list_cp(&l, 0xDC00u + u.bytes[i]);
    m->cmp = cmp;
    m->needle = l.v;
    m->n = l.n;
    m->fail = calloc(l.n ? l.n : 1, sizeof *m->fail);
    if (l.is_oom || !m->fail) {
        mime_matcher_free(m);
        return NULL;
    }
    for (unsigned b = 0; b < 256; b++) {
        uint32_t folded = b >= 'a' && b <= 'z' ? b - 32 : b;
        m->is_lead[b] = b >= 0x80 || (m->n > 0 && m->needle[0] == folded);
    }
    /* KMP: fail[i] = length of the longest proper border of needle[0..i]. */
    for (size_t i = 1, k = 0; i < m->n; i++) {
        while (k > 0 && m->needle[i] != m->needle[k])
            k = m->fail[k - 1];
        if (m->needle[i] == m->needle[k])
            k++;
        m->fail[i] = k;
    }
    mime_matcher_reset(m);
    return m;
}

void mime_matcher_free(struct mime_matcher *m)
{
    if (!m)
        return;
    free(m->needle);
    free(m->fail);
    free(m);
}

void mime_matcher_reset(struct mime_matcher *m)
{
    m->state = 0;
    m->is_found = m->n == 0;
    memset(&m->u, 0, sizeof m->u);
}

bool mime_matcher_is_empty(const struct mime_matcher *m)
{
    return m->n == 0;
}

static void mime_matcher_cp(void *arg, uint32_t cp)
{
    struct mime_matcher *m = arg;
    uint32_t f[MIME_FOLD_MAX];
    size_t nf = mime_fold(m->cmp, cp, f);
    for (size_t i = 0; i < nf && !m->is_found; i++) {
        while (m->state > 0 && m->needle[m->state] != f[i])
            m->state = m->fail[m->state - 1];
        if (m->needle[m->state] == f[i])
            m->state++;
        if (m->state == m->n)
            m->is_found = true;
    }
}

/* End a text unit (bytes of an incomplete UTF-8 sequence count as themselves) and start
 * a new one: a match never spans two units. */
void mime_matcher_break(struct mime_matcher *m)
{
    if (m->u.need > 0) {
        for (unsigned i = 0; i < m->u.have; i++)
            mime_matcher_cp(m, 0xDC00u + m->u.bytes[i]);
    }
    memset(&m->u, 0, sizeof m->u);
    m->state = 0;
}

bool mime_matcher_feed(struct mime_matcher *m, const char *s, size_t len)
{
    const uint32_t *needle = m->needle;
    size_t i = 0;
    while (i < len && !m->is_found) {
        if (m->state == 0 && m->u.need == 0) {
            /* Nothing matched yet: skip the US-ASCII bytes that cannot start a match. */
            while (i < len && !m->is_lead[(unsigned char)s[i]])
                i++;
            if (i == len)
                break;
        }
        unsigned char b = (unsigned char)s[i];
        if (b >= 0x80 || m->u.need > 0) {
            mime_utf8_byte(&m->u, b, mime_matcher_cp, m);
            i++;
            continue;
        }
        /* US-ASCII outside a UTF-8 sequence: fold and step the automaton here, as
         * mime_fold and mime_matcher_cp would, without a call per byte (SEARCH BODY and
         * TEXT read every message of a mailbox through this). */
        size_t state = m->state;
        do {
            uint32_t c = (unsigned char)s[i++];
            if (c >= 'a' && c <= 'z')
                c -= 32;
            while (state > 0 && needle[state] != c)
                state = m->fail[state - 1];
            if (needle[state] == c && ++state == m->n)
                m->is_found = true;
        } while (!m->is_found && state > 0 && i < len && (unsigned char)s[i] < 0x80);
        m->state = state;
    }
    return m->is_found;
}

bool mime_matcher_found(const struct mime_matcher *m)
{
    return m->is_found;
}

/* ---- charset conversion ------------------------------------------------------------- */

typedef bool mime_sink(void *arg, const char *s, size_t len);

enum mime_conv_kind { MIME_CONV_RAW, MIME_CONV_LATIN1, MIME_CONV_ICONV };

struct mime_conv {
    enum mime_conv_kind kind;
    iconv_t cd;
    char pend[16]; /* an incomplete multi-byte sequence carried to the next chunk */
    size_t n_pend;
    mime_sink *sink;
    void *arg;
};

static void mime_conv_init(struct mime_conv *c, const char *charset, mime_sink *sink, void *arg)
{
    memset(c, 0, sizeof *c);
    c->sink = sink;
    c->arg = arg;
    c->kind = MIME_CONV_RAW;
    if (!charset || !*charset || strcasecmp(charset, "utf-8") == 0 ||
        strcasecmp(charset, "utf8") == 0 || strcasecmp(charset, "us-ascii") == 0 ||
        strcasecmp(charset, "ascii") == 0)
        return;
    if (strcasecmp(charset, "iso-8859-1") == 0 || strcasecmp(charset, "latin1") == 0 ||
        strcasecmp(charset, "iso_8859-1") == 0) {
        c->kind = MIME_CONV_LATIN1;
        return;
    }
    c->cd = iconv_open("UTF-8", charset);
    if (c->cd != (iconv_t)-1)
        c->kind = MIME_CONV_ICONV;
}

static void mime_conv_done(struct mime_conv *c)
{
    if (c->kind == MIME_CONV_ICONV)
        iconv_close(c->cd);
    c->kind = MIME_CONV_RAW;
}

/* Convert and pass on; false when the sink wants no more. */
static bool mime_conv_feed(struct mime_conv *c, const char *s, size_t len)
{
    if (c->kind == MIME_CONV_RAW)
        return c->sink(c->arg, s, len);
    char out[MIME_CHUNK * 4];
    if (c->kind == MIME_CONV_LATIN1) {
        while (len > 0) {
            size_t o = 0;
            for (; len > 0 && o + 2 <= sizeof out; s++, len--) {
                unsigned char b = (unsigned char)*s;
                if (b < 0x80) {
                    out[o++] = (char)b;
                } else {
                    out[o++] = (char)(0xC0 | (b >> 6));
                    out[o++] = (char)(0x80 | (b & 0x3F));
                }
            }
            if (!c->sink(c->arg, out, o))
                return false;
        }
        return true;
    }
    char in[MIME_CHUNK + sizeof c->pend];
    while (len > 0) {
        size_t take = len < MIME_CHUNK ? len : MIME_CHUNK;
        memcpy(in, c->pend, c->n_pend);
        memcpy(in + c->n_pend, s, take);
        s += take;
        len -= take;
        char *ip = in;
        size_t il = c->n_pend + take;
        c->n_pend = 0;
        while (il > 0) {
            char *op = out;
            size_t ol = sizeof out;
            size_t r = iconv(c->cd, &ip, &il, &op, &ol);
            int e = r == (size_t)-1 ? errno : 0;
            if (op > out && !c->sink(c->arg, out, (size_t)(op - out)))
                return false;
            if (e == EILSEQ) {
                /* An invalid byte: U+FFFD in its place, go on after it. */
                if (!c->sink(c->arg, "\xEF\xBF\xBD", 3))
                    return false;
                ip++;
                il--;
            } else if (e == EINVAL) {
                if (il <= sizeof c->pend) {
                    memcpy(c->pend, ip, il);
                    c->n_pend = il;
                } else {
                    ip++, il--; /* cannot happen for real charsets; never loop */
                    continue;
                }
                break;
            } else if (e != 0 && e != E2BIG) {
                return c->sink(c->arg, ip, il);
            }
        }
    }
    return true;
}

/* ---- RFC 2047 encoded-words ------------------------------------------------------------ */

static int mime_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool mime_buf_sink(void *arg, const char *s, size_t len)
{
    (void)buf_append(arg, s, len); /* a full buffer truncates the value, nothing worse */
    return true;
}

/* Decode one encoded-word's text (B or Q) into raw bytes appended to raw. */
static void mime_word_decode(char enc, const char *t, size_t n, struct buf *raw)
{
    if (enc == 'Q' || enc == 'q') {
        for (size_t i = 0; i < n; i++) {
            if (t[i] == '_') {
                buf_append_byte(raw, ' ');
            } else if (t[i] == '=' && i + 2 < n && mime_hex((unsigned char)t[i + 1]) >= 0 &&
                       mime_hex((unsigned char)t[i + 2]) >= 0) {
                buf_append_byte(raw, (char)(mime_hex((unsigned char)t[i + 1]) * 16 +
                                            mime_hex((unsigned char)t[i + 2])));
                i += 2;
            } else {
                buf_append_byte(raw, t[i]);
            }
        }
        return;
    }
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = util_base64_value((unsigned char)t[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf_append_byte(raw, (char)((acc >> bits) & 0xFF));
        }
    }
}

/* Parse an encoded-word "=?charset?E?text?=" at s; its length, or 0 if it is not one. */
static size_t mime_word_parse(const char *s, size_t len, const char **cs, size_t *cs_len, char *enc,
                              const char **text, size_t *text_len)
{
    if (len < 8 || s[0] != '=' || s[1] != '?')
        return 0;
    const char *q1 = memchr(s + 2, '?', len - 2);
    if (!q1 || q1 == s + 2 || (size_t)(q1 - s) + 3 >= len || q1[2] != '?')
        return 0;
    char e = q1[1];
    if (e != 'B' && e != 'b' && e != 'Q' && e != 'q')
        return 0;
    const char *t = q1 + 3;
    const char *end = s + len;
    for (const char *p = t; p + 1 < end; p++) {
        if (*p == ' ' || *p == '\t')
            return 0;
        if (p[0] == '?' && p[1] == '=') {
            *cs = s + 2;
            *cs_len = (size_t)(q1 - (s + 2));
            *enc = e;
            *text = t;
            *text_len = (size_t)(p - t);
            return (size_t)(p + 2 - s);
        }
    }
    return 0;
}

bool mime_header_decode(const char *in, size_t len, struct buf *out)
{
    struct buf raw;
    buf_init(&raw, MIME_MAX_VALUE);
    size_t pos = 0;
    bool prev_word = false;
    while (pos < len) {
        const char *cs, *text;
        size_t cs_len, text_len;
        char enc;
        size_t wl = mime_word_parse(in + pos, len - pos, &cs, &cs_len, &enc, &text, &text_len);
        if (wl == 0) {
            /* RFC 2047 §6.2: white space between adjacent encoded-words is dropped. */
            size_t ws = pos;
            while (ws < len &&
                   (in[ws] == ' ' || in[ws] == '\t' || in[ws] == '\r' || in[ws] == '\n'))
                ws++;
            if (prev_word && ws > pos && ws < len &&
                mime_word_parse(in + ws, len - ws, &cs, &cs_len, &enc, &text, &text_len) > 0) {
                pos = ws;
                continue;
            }
            buf_append_byte(out, in[pos]);
            prev_word = false;
            pos++;
            continue;
        }
        char charset[64];
        size_t cl = cs_len < sizeof charset - 1 ? cs_len : sizeof charset - 1;
        memcpy(charset, cs, cl);
        charset[cl] = '\0';
        char *star = strchr(charset, '*'); /* RFC 2231 §5: charset*language */
        if (star)
            *star = '\0';
        buf_reset(&raw);
        mime_word_decode(enc, text, text_len, &raw);
        struct mime_conv c;
        mime_conv_init(&c, charset, mime_buf_sink, out);
        mime_conv_feed(&c, raw.data ? raw.data : "", raw.len);
        mime_conv_done(&c);
        prev_word = true;
        pos += wl;
    }
    buf_free(&raw);
    return true;
}

/* ---- header fields --------------------------------------------------------------------- */

/* mime_header_search, and with is_address the value matched in its display form. */
static bool mime_header_search_value(const char *hdr, size_t len, const char *field,
                                     struct mime_matcher *m, bool with_names, bool is_address);

bool mime_header_search(const char *hdr, size_t len, const char *field, struct mime_matcher *m,
                        bool with_names)
{
    return mime_header_search_value(hdr, len, field, m, with_names, false);
}

bool mime_address_header_search(const char *hdr, size_t len, const char *field,
                                struct mime_matcher *m)
{
    return mime_header_search_value(hdr, len, field, m, false, true);
}

static bool mime_header_search_value(const char *hdr, size_t len, const char *field,
                                     struct mime_matcher *m, bool with_names, bool is_address)
{
    struct buf value, dec;
    buf_init(&value, MIME_MAX_VALUE);
    buf_init(&dec, MIME_MAX_VALUE * 2);
    size_t flen = field ? strlen(field) : 0;
    bool has_field = false;
    size_t pos = 0;
    while (pos < len && !(has_field && mime_matcher_found(m))) {
        const char *nl = memchr(hdr + pos, '\n', len - pos);
        size_t le = nl ? (size_t)(nl - hdr) + 1 : len;
        size_t ce = le;
        while (ce > pos && (hdr[ce - 1] == '\n' || hdr[ce - 1] == '\r'))
            ce--;
        if (ce == pos)
            break; /* the empty line ends the header */
        const char *line = hdr + pos;
        const char *colon = memchr(line, ':', ce - pos);
        size_t next = le;
        /* the field's continuation lines */
        while (next < len && (hdr[next] == ' ' || hdr[next] == '\t')) {
            const char *cnl = memchr(hdr + next, '\n', len - next);
            next = cnl ? (size_t)(cnl - hdr) + 1 : len;
        }
        if (line[0] == ' ' || line[0] == '\t' || !colon) {
            pos = next;
            continue;
        }
        size_t nlen = (size_t)(colon - line);
        while (nlen > 0 && (line[nlen - 1] == ' ' || line[nlen - 1] == '\t'))
            nlen--;
        if (field && !(nlen == flen && strncasecmp(line, field, flen) == 0)) {
            pos = next;
            continue;
        }
        has_field = true;
        /* RFC 5322 §2.2.3: unfold (drop the line breaks, keep the white space). */
        buf_reset(&value);
        size_t vs = (size_t)(colon + 1 - hdr);
        while (vs < next && (hdr[vs] == ' ' || hdr[vs] == '\t'))
            vs++;
        for (size_t k = vs; k < next; k++)
            if (hdr[k] != '\r' && hdr[k] != '\n')
                buf_append_byte(&value, hdr[k]);
        buf_reset(&dec);
        if (with_names) {
            buf_append(&dec, line, nlen);
            buf_append(&dec, ": ", 2);
        }
        if (is_address) {
            /* RFC 3501 §6.4.4 FROM "user@host" must find "<user (c)@ (c) host>": match the
             * parsed addresses as "Name <box@host>" (comments dropped), as Dovecot does */
            struct buf disp;
            buf_init(&disp, MIME_MAX_VALUE);
            mime_address_list_display(buf_cstr(&value), &disp);
            mime_header_decode(disp.data ? disp.data : "", disp.len, &dec);
            buf_free(&disp);
        } else {
            mime_header_decode(value.data ? value.data : "", value.len, &dec);
        }
        mime_matcher_break(m);
        mime_matcher_feed(m, dec.data ? dec.data : "", dec.len);
        mime_matcher_break(m);
        pos = next;
    }
    buf_free(&value);
    buf_free(&dec);
    return has_field && mime_matcher_found(m);
}

/* ---- body text ------------------------------------------------------------------------- */

enum mime_cte { MIME_CTE_IDENTITY, MIME_CTE_QP, MIME_CTE_BASE64 };

struct mime_body_ctx {
    struct mime_matcher *m;
    uint64_t budget; /* decoded bytes still allowed for this message */
};

static bool mime_match_sink(void *arg, const char *s, size_t len)
{
    struct mime_body_ctx *ctx = arg;
    if (len > ctx->budget)
        len = (size_t)ctx->budget;
    ctx->budget -= len;
    return !mime_matcher_feed(ctx->m, s, len) && ctx->budget > 0;
}

/* Decode a part body's Content-Transfer-Encoding and charset (to UTF-8) into sink; false
 * when the sink said stop. */
static bool mime_part_decode(const char *d, size_t len, const char *encoding, const char *charset,
                             mime_sink *sink, void *arg)
{
    enum mime_cte cte = MIME_CTE_IDENTITY;
    if (encoding && strcasecmp(encoding, "quoted-printable") == 0)
        cte = MIME_CTE_QP;
    else if (encoding && strcasecmp(encoding, "base64") == 0)
        cte = MIME_CTE_BASE64;
    struct mime_conv c;
    mime_conv_init(&c, charset, sink, arg);
    bool more = true;
    if (cte == MIME_CTE_IDENTITY) {
        more = mime_conv_feed(&c, d, len);
        mime_conv_done(&c);
        return more;
    }
    char out[MIME_CHUNK];
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && more; i++) {
        unsigned char b = (unsigned char)d[i];
        if (cte == MIME_CTE_BASE64) {
            int v = util_base64_value(b);
            if (v < 0)
                continue; /* line breaks, padding, junk */
            acc = (acc << 6) | (uint32_t)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                out[o++] = (char)((acc >> bits) & 0xFF);
            }
        } else if (b == '=') {
            /* RFC 2045 §6.7: "=XX" is a byte, "=" at the end of a line a soft break. */
            int h1 = i + 1 < len ? mime_hex((unsigned char)d[i + 1]) : -1;
            int h2 = i + 2 < len ? mime_hex((unsigned char)d[i + 2]) : -1;
            if (h1 >= 0 && h2 >= 0) {
                out[o++] = (char)(h1 * 16 + h2);
                i += 2;
            } else {
                size_t k = i + 1;
                while (k < len && (d[k] == ' ' || d[k] == '\t'))
                    k++;
                if (k < len && d[k] == '\r')
                    k++;
                if (k >= len || d[k] == '\n')
                    i = k; /* soft line break */
                else
                    out[o++] = '=';
            }
        } else if (b == ' ' || b == '\t') {
            /* RFC 2045 §6.7 (3): white space at the end of an encoded line is padding
             * that the decoder removes (a run of it, up to the line break) */
            size_t k = i;
            while (k < len && (d[k] == ' ' || d[k] == '\t'))
                k++;
            bool is_trailing = k >= len || d[k] == '\n' || (d[k] == '\r' && k + 1 < len &&
                                                             d[k + 1] == '\n');
            for (size_t q = i; q < k && !is_trailing; q++) {
                out[o++] = d[q];
                if (o == sizeof out) {
                    more = mime_conv_feed(&c, out, o);
                    o = 0;
                }
            }
            i = k - 1;
        } else {
            out[o++] = (char)b;
        }
        if (o == sizeof out) {
            more = mime_conv_feed(&c, out, o);
            o = 0;
        }
    }
    if (more && o > 0)
        more = mime_conv_feed(&c, out, o);
    mime_conv_done(&c);
    return more;
}

/* Decode a part body into the matcher, a text unit of its own. */
static bool mime_body_feed(struct mime_body_ctx *ctx, const char *d, size_t len,
                           const char *encoding, const char *charset)
{
    mime_matcher_break(ctx->m);
    bool more = mime_part_decode(d, len, encoding, charset, mime_match_sink, ctx);
    mime_matcher_break(ctx->m);
    return more;
}

static const char *mime_part_param(const struct mime_part *p, const char *name)
{
    for (size_t i = 0; i < p->n_params; i++)
        if (strcmp(p->params[i].name, name) == 0)
            return p->params[i].value;
    return NULL;
}

/* Walk the body of part p: text leaves decoded, nested messages' headers and bodies. */
static bool mime_body_walk(struct mime_body_ctx *ctx, const char *data, size_t len,
                           const struct mime_part *p, unsigned depth)
{
    if (depth > MIME_MAX_DEPTH)
        return true;
    if (p->is_multipart) {
        for (const struct mime_part *k = p->children; k; k = k->next)
            if (!mime_body_walk(ctx, data, len, k, depth + 1))
                return false;
        return true;
    }
    if (p->body_offset > len || p->body_size > len - p->body_offset)
        return true;
    if (p->is_message && p->message) {
        const struct mime_part *msg = p->message;
        if (msg->header_offset <= len && msg->header_size <= len - msg->header_offset &&
            mime_header_search(data + msg->header_offset, msg->header_size, NULL, ctx->m, true))
            return false;
        return mime_body_walk(ctx, data, len, msg, depth + 1);
    }
    /* RFC 3501 leaves the choice; like Dovecot, only text parts are searched as text. */
    if (p->type && strcasecmp(p->type, "text") != 0)
        return true;
    return mime_body_feed(ctx, data + p->body_offset, (size_t)p->body_size, p->encoding,
                          mime_part_param(p, "charset"));
}

bool mime_body_search(const char *data, size_t len, const struct mime_part *root,
                      struct mime_matcher *m, uint64_t max_bytes)
{
    struct mime_body_ctx ctx = {.m = m, .budget = max_bytes};
    mime_matcher_reset(m);
    if (mime_matcher_found(m))
        return true;
    mime_body_walk(&ctx, data, len, root, 0);
    return mime_matcher_found(m);
}

/* ---- PREVIEW (RFC 8970) ------------------------------------------------------------------ */

/* Decoded text kept to make a preview from (the first part of the body is enough). */
#define MIME_PREVIEW_SOURCE 8192

static bool mime_preview_sink(void *arg, const char *s, size_t len)
{
    struct buf *b = arg;
    size_t room = MIME_PREVIEW_SOURCE - b->len;
    buf_append(b, s, len < room ? len : room);
    return b->len < MIME_PREVIEW_SOURCE;
}

static bool mime_is_attachment(const struct mime_part *p)
{
    return p->disposition && strcasecmp(p->disposition, "attachment") == 0;
}

/* The first inline text part of the wanted subtype (depth-first, bounded). */
static const struct mime_part *mime_preview_part(const struct mime_part *p, const char *subtype,
                                                 unsigned depth)
{
    if (depth > MIME_MAX_DEPTH || mime_is_attachment(p))
        return NULL;
    if (p->is_multipart) {
        for (const struct mime_part *k = p->children; k; k = k->next) {
            const struct mime_part *hit = mime_preview_part(k, subtype, depth + 1);
            if (hit)
                return hit;
        }
        return NULL;
    }
    if (p->is_message)
        return NULL; /* a forwarded message is not this message's text */
    bool is_text = !p->type || strcasecmp(p->type, "text") == 0;
    bool is_sub = !p->subtype ? strcasecmp(subtype, "plain") == 0
                              : strcasecmp(p->subtype, subtype) == 0;
    return is_text && is_sub ? p : NULL;
}

/* HTML to text, roughly: tags and the contents of <style>/<script> dropped, the common
 * entities decoded. */
static void mime_html_strip(const char *s, size_t len, struct buf *out)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] == '<') {
            bool is_hidden = len - i > 6 && (strncasecmp(s + i, "<style", 6) == 0 ||
                                              strncasecmp(s + i, "<scrip", 6) == 0);
            const char *end = memchr(s + i, '>', len - i);
            i = end ? (size_t)(end - s) + 1 : len;
            if (is_hidden) { /* to the closing tag */
                while (i < len && !(s[i] == '<' && i + 1 < len && s[i + 1] == '/'))
                    i++;
            }
            buf_append_byte(out, ' ');
            continue;
        }
        if (s[i] == '&') {
            static const struct {
                const char *name, *text;
            } ents[] = {{"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""},
                        {"&#39;", "'"}, {"&apos;", "'"}, {"&nbsp;", " "}};
            size_t k = 0;
            while (k < sizeof ents / sizeof ents[0] &&
                   !(len - i >= strlen(ents[k].name) &&
                     strncasecmp(s + i, ents[k].name, strlen(ents[k].name)) == 0))
                k++;
            if (k < sizeof ents / sizeof ents[0]) {
                buf_append_str(out, ents[k].text);
                i += strlen(ents[k].name);
                continue;
            }
        }
        buf_append_byte(out, s[i++]);
    }
}

bool mime_preview(const char *data, size_t len, const struct mime_part *root, struct buf *out)
{
    /* RFC 8970 §2: a plain-text summary of the message's text, at most 256 characters:
     * the first inline text/plain part (else text/html, tags removed), white space
     * collapsed */
    const struct mime_part *p = mime_preview_part(root, "plain", 0);
    bool is_html = false;
    if (!p) {
        p = mime_preview_part(root, "html", 0);
        is_html = p != NULL;
    }
    if (!p || p->body_offset > len || p->body_size > len - p->body_offset)
        return true;
    struct buf text, plain;
    buf_init(&text, MIME_PREVIEW_SOURCE * 4);
    buf_init(&plain, MIME_PREVIEW_SOURCE * 4);
    (void)mime_part_decode(data + p->body_offset, (size_t)p->body_size, p->encoding,
                           mime_part_param(p, "charset"), mime_preview_sink, &text);
    const char *src = text.data ? text.data : "";
    size_t n = text.len;
    if (is_html) {
        mime_html_strip(src, n, &plain);
        src = plain.data ? plain.data : "";
        n = plain.len;
    }
    size_t chars = 0;
    bool need_space = false;
    for (size_t i = 0; i < n && chars < 256;) {
        unsigned char c = (unsigned char)src[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c < 0x20) {
            need_space = out->len > 0;
            i++;
            continue;
        }
        if (need_space) {
            buf_append_byte(out, ' ');
            chars++;
            need_space = false;
            if (chars >= 256)
                break;
        }
        /* one UTF-8 character (lead byte and its continuation bytes) */
        size_t k = i + 1;
        while (k < n && ((unsigned char)src[k] & 0xC0) == 0x80)
            k++;
        buf_append(out, src + i, k - i);
        chars++;
        i = k;
    }
    buf_free(&text);
    buf_free(&plain);
    return true;
}

/* ---- BINARY (RFC 3516) ---------------------------------------------------------------- */

static bool mime_raw_sink(void *arg, const char *s, size_t len)
{
    return buf_append(arg, s, len);
}

bool mime_decode_body(const char *d, size_t len, const char *encoding, struct buf *out)
{
    /* RFC 3516 §4.3: a transfer encoding we cannot undo is [UNKNOWN-CTE] */
    static const char *const known[] = {"7bit", "8bit", "binary", "base64",
                                        "quoted-printable"};
    bool is_known = !encoding || !*encoding;
    for (size_t i = 0; !is_known && i < sizeof known / sizeof known[0]; i++)
        is_known = strcasecmp(encoding, known[i]) == 0;
    if (!is_known)
        return false;
    /* no charset: the bytes as they were before the transfer encoding */
    (void)mime_part_decode(d, len, encoding, NULL, mime_raw_sink, out);
    return true;
}
