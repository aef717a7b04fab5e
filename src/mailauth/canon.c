/*
 * canon.c - the byte-level pieces every mail authentication method shares: splitting a
 * header section into fields, DKIM canonicalization of header fields and bodies (RFC 6376
 * §3.4), tag=value lists (RFC 6376 §3.2), the From domain (RFC 7489 §3.1) and result
 * names (RFC 8601 §2.7). Pure functions over bytes; linear time.
 */
#include "mailauth/mailauth.h"

#include "core/buf.h"

#include <string.h>
#include <strings.h>

const char *mailauth_result_name(enum mailauth_result r)
{
    static const char *const names[] = {"none",   "pass",   "fail",      "softfail",
                                        "neutral", "policy", "temperror", "permerror"};
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "permerror";
}

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

size_t mailauth_headers_parse(const char *h, size_t len, struct mailauth_header *out, size_t max,
                              size_t *body_r, bool *is_truncated_r)
{
    size_t n = 0, pos = 0;
    *is_truncated_r = false;
    *body_r = len;
    bool is_current = false; /* out[n-1] is the field continuation lines belong to */
    while (pos < len) {
        const char *nl = memchr(h + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - h) + 1 : len; /* one past this line */
        size_t line_len = end - pos;
        /* RFC 5322 §2.1: the empty line (CRLF, or a bare LF) ends the header section */
        if ((line_len == 2 && h[pos] == '\r' && h[pos + 1] == '\n') ||
            (line_len == 1 && h[pos] == '\n')) {
            *body_r = end;
            return n;
        }
        if (is_wsp(h[pos])) {
            /* RFC 5322 §2.2.3: a continuation line of the field above */
            if (is_current)
                out[n - 1].len = end - out[n - 1].start;
        } else {
            const char *colon = memchr(h + pos, ':', line_len);
            is_current = false;
            if (colon && colon > h + pos) {
                size_t name_len = (size_t)(colon - (h + pos));
                while (name_len > 0 && is_wsp(h[pos + name_len - 1]))
                    name_len--;
                bool is_name = name_len > 0;
                for (size_t i = 0; i < name_len && is_name; i++) {
                    unsigned char c = (unsigned char)h[pos + i];
                    is_name = c > 32 && c < 127; /* RFC 5322 §3.6.8 ftext */
                }
                if (is_name) {
                    if (n < max) {
                        out[n++] = (struct mailauth_header){pos, name_len, line_len};
                        is_current = true;
                    } else {
                        *is_truncated_r = true;
                    }
                }
            }
        }
        pos = end;
    }
    return n;
}

bool mailauth_canon_header(const char *field, size_t len, bool is_relaxed, bool with_crlf,
                           struct buf *out)
{
    if (!is_relaxed) {
        /* RFC 6376 §3.4.1: simple: the field exactly as it is */
        size_t l = len;
        if (!with_crlf && l >= 2 && field[l - 2] == '\r' && field[l - 1] == '\n')
            l -= 2;
        return buf_append(out, field, l);
    }
    /* RFC 6376 §3.4.2: lower-case name, unfold, WSP runs to one SP, no WSP at the end of
     * the value nor around the colon */
    const char *colon = memchr(field, ':', len);
    if (!colon)
        return false;
    size_t name_len = (size_t)(colon - field);
    while (name_len > 0 && is_wsp(field[name_len - 1]))
        name_len--;
    if (!buf_reserve(out, len + 2))
        return false;
    for (size_t i = 0; i < name_len; i++) {
        char c = field[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        buf_append_byte(out, c);
    }
    buf_append_byte(out, ':');
    bool pending_wsp = false, has_value = false;
    for (size_t i = (size_t)(colon - field) + 1; i < len; i++) {
        char c = field[i];
        if (c == '\r' || c == '\n')
            continue; /* unfold */
        if (is_wsp(c)) {
            pending_wsp = true;
            continue;
        }
        if (pending_wsp && has_value)
            buf_append_byte(out, ' ');
        pending_wsp = false;
        has_value = true;
        buf_append_byte(out, c);
    }
    if (with_crlf)
        buf_append(out, "\r\n", 2);
    return true;
}

void mailauth_body_canon_init(struct mailauth_body_canon *c, bool is_relaxed, bool has_limit,
                              uint64_t limit, void (*emit)(void *, const char *, size_t), void *arg)
{
    memset(c, 0, sizeof *c);
    c->is_relaxed = is_relaxed;
    c->has_limit = has_limit;
    c->limit = limit;
    c->emit = emit;
    c->arg = arg;
}

/* Pass canonical bytes on, honouring l= (RFC 6376 §3.4.5). */
static void canon_out(struct mailauth_body_canon *c, const char *data, size_t len)
{
    c->total += len;
    if (c->has_limit) {
        if (c->emitted >= c->limit)
            return;
        if (len > c->limit - c->emitted)
            len = (size_t)(c->limit - c->emitted);
    }
    c->emitted += len;
    if (len)
        c->emit(c->arg, data, len);
}

/* Empty lines are held back until text follows: trailing ones are dropped (§3.4.3). */
static void canon_flush_lines(struct mailauth_body_canon *c)
{
    static const char crlfs[] = "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";
    while (c->pending_crlf > 0) {
        uint64_t k = c->pending_crlf < 8 ? c->pending_crlf : 8;
        canon_out(c, crlfs, (size_t)k * 2);
        c->pending_crlf -= k;
    }
}

/* A run of line text (no CR/LF) in the input. */
static void canon_text(struct mailauth_body_canon *c, const char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (c->is_relaxed && is_wsp(p[i])) {
            /* §3.4.4: a WSP run becomes one SP; at the end of a line it goes */
            c->pending_wsp = true;
            i++;
            continue;
        }
        size_t j = i;
        while (j < len && !(c->is_relaxed && is_wsp(p[j])))
            j++;
        canon_flush_lines(c);
        if (c->pending_wsp) {
            canon_out(c, " ", 1);
            c->pending_wsp = false;
        }
        canon_out(c, p + i, j - i);
        c->line_has_text = c->has_text = true;
        i = j;
    }
}

static void canon_line_end(struct mailauth_body_canon *c)
{
    c->pending_wsp = false;
    if (c->line_has_text) {
        canon_out(c, "\r\n", 2);
        c->line_has_text = false;
    } else {
        c->pending_crlf++;
    }
}

void mailauth_body_canon_feed(struct mailauth_body_canon *c, const char *data, size_t len)
{
    size_t i = 0;
    if (c->pending_cr && len > 0) {
        c->pending_cr = false;
        if (data[0] == '\n') {
            canon_line_end(c);
            i = 1;
        } else {
            canon_text(c, "\r", 1); /* a bare CR is text */
        }
    }
    while (i < len) {
        size_t j = i;
        while (j < len && data[j] != '\r' && data[j] != '\n')
            j++;
        canon_text(c, data + i, j - i);
        if (j >= len)
            break;
        if (data[j] == '\n') {
            canon_line_end(c); /* a bare LF ends a line as the data reader made it CRLF */
            i = j + 1;
        } else if (j + 1 >= len) {
            c->pending_cr = true;
            i = j + 1;
        } else if (data[j + 1] == '\n') {
            canon_line_end(c);
            i = j + 2;
        } else {
            canon_text(c, "\r", 1);
            i = j + 1;
        }
    }
}

void mailauth_body_canon_finish(struct mailauth_body_canon *c)
{
    if (c->pending_cr) {
        c->pending_cr = false;
        canon_text(c, "\r", 1);
    }
    /* a last line without CRLF gets one (§3.4.3, §3.4.4) */
    if (c->line_has_text)
        canon_line_end(c);
    /* §3.4.3: the simple canonical form of an empty body is one CRLF; §3.4.4: relaxed
     * leaves it empty */
    if (!c->has_text && !c->is_relaxed)
        canon_out(c, "\r\n", 2);
}

/* ---- tag lists ----------------------------------------------------------------------- */

static bool is_fws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int mailauth_tags_parse(const char *text, size_t len, struct mailauth_tag *out, size_t *n_r)
{
    size_t n = 0, pos = 0;
    *n_r = 0;
    while (pos < len) {
        const char *semi = memchr(text + pos, ';', len - pos);
        size_t end = semi ? (size_t)(semi - text) : len;
        size_t a = pos, b = end;
        while (a < b && is_fws(text[a]))
            a++;
        while (b > a && is_fws(text[b - 1]))
            b--;
        pos = semi ? end + 1 : len;
        if (a == b) {
            if (semi || n == 0)
                continue; /* RFC 6376 §3.2: a trailing ';' is allowed */
            continue;
        }
        const char *eq = memchr(text + a, '=', b - a);
        if (!eq)
            return -1;
        size_t name_end = (size_t)(eq - text), va = name_end + 1;
        while (name_end > a && is_fws(text[name_end - 1]))
            name_end--;
        while (va < b && is_fws(text[va]))
            va++;
        size_t name_len = name_end - a;
        if (name_len == 0 || name_len > 15 || n >= MAILAUTH_TAGS_MAX)
            return -1;
        /* tag-name = ALPHA *ALNUMPUNC */
        for (size_t i = 0; i < name_len; i++) {
            char c = text[a + i];
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (i > 0 && ((c >= '0' && c <= '9') || c == '_'));
            if (!ok)
                return -1;
        }
        struct mailauth_tag *t = &out[n];
        memcpy(t->name, text + a, name_len);
        t->name[name_len] = '\0';
        for (size_t k = 0; k < n; k++)
            if (strcmp(out[k].name, t->name) == 0)
                return -1; /* §3.2: duplicate tags are an error */
        t->value = text + va;
        t->value_len = b - va;
        n++;
    }
    *n_r = n;
    return 0;
}

bool mailauth_tags_version_is(const struct mailauth_tag *t, size_t n, const char *version)
{
    size_t l = strlen(version);
    return n > 0 && strcmp(t[0].name, "v") == 0 && t[0].value_len == l &&
           strncmp(t[0].value, version, l) == 0;
}

const struct mailauth_tag *mailauth_tags_find(const struct mailauth_tag *t, size_t n,
                                              const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

/* ---- the From domain ------------------------------------------------------------------ */

/* The domain of the single address in a From value (RFC 5322 §3.4), skipping comments
 * and quoted strings. false when there is not exactly one address. */
static bool from_value_domain(const char *v, size_t len, char *out, size_t size)
{
    int depth = 0;
    bool in_quote = false, in_angle = false, has_angle = false;
    size_t at = (size_t)-1, start = 0, end = 0, n_addr = 0;
    size_t dom_start = 0, dom_end = 0;
    bool has_domain = false;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? v[i] : ',';
        if (in_quote) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_quote = false;
            continue;
        }
        if (depth > 0) {
            if (c == '\\')
                i++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
            continue;
        }
        if (c == '"') {
            in_quote = true;
        } else if (c == '(') {
            depth = 1;
        } else if (c == '<') {
            in_angle = has_angle = true;
            start = i + 1;
            at = (size_t)-1;
        } else if (c == '>' && in_angle) {
            in_angle = false;
            end = i;
            if (at != (size_t)-1 && at >= start && at < end) {
                dom_start = at + 1;
                dom_end = end;
                has_domain = true;
            }
        } else if (c == '@' && (in_angle || !has_angle)) {
            at = i;
            if (!has_angle) {
                dom_start = i + 1;
                dom_end = dom_start;
                while (dom_end < len && v[dom_end] != ',' && v[dom_end] != '(' &&
                       v[dom_end] != ' ' && v[dom_end] != '\t' && v[dom_end] != '\r' &&
                       v[dom_end] != '\n' && v[dom_end] != '>' && v[dom_end] != ';')
                    dom_end++;
                has_domain = true;
            }
        } else if (c == ',' && !in_angle) {
            if (has_domain)
                n_addr++;
            else if (i < len)
                return false; /* a group or an empty element: not one address */
            if (i < len)
                has_angle = false;
        } else if (c == ':' && !in_angle) {
            return false; /* RFC 5322 group syntax */
        }
    }
    if (n_addr != 1 || !has_domain)
        return false;
    /* trim a trailing dot and blanks */
    while (dom_end > dom_start && (v[dom_end - 1] == '.' || is_fws(v[dom_end - 1])))
        dom_end--;
    while (dom_start < dom_end && is_fws(v[dom_start]))
        dom_start++;
    size_t l = dom_end - dom_start;
    if (l == 0 || l >= size || l > 253)
        return false;
    for (size_t i = 0; i < l; i++) {
        char c = v[dom_start + i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
              c == '_' || (unsigned char)c >= 0x80))
            return false;
        out[i] = c;
    }
    out[l] = '\0';
    return true;
}

bool mailauth_from_domain(const char *h, const struct mailauth_header *fields, size_t n,
                          char *out, size_t size)
{
    const struct mailauth_header *f = NULL;
    size_t n_from = 0;
    for (size_t i = 0; i < n; i++) {
        if (fields[i].name_len == 4 && strncasecmp(h + fields[i].start, "from", 4) == 0) {
            f = &fields[i];
            n_from++;
        }
    }
    if (n_from != 1)
        return false;
    const char *v = h + f->start + f->name_len;
    size_t vl = f->len - f->name_len;
    const char *colon = memchr(v, ':', vl);
    if (!colon)
        return false;
    vl -= (size_t)(colon - v) + 1;
    return from_value_domain(colon + 1, vl, out, size);
}
