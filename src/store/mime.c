/*
 * mime.c - MIME structure parser: one pass over a message's bytes builds the part tree
 * with exact offsets and CRLF sizes (see mime.h). Output of BODYSTRUCTURE/ENVELOPE is in
 * mime_imap.c.
 *
 * Shape of the work: parse_entity() reads one header block, then, for multipart, scans the
 * body once for its own delimiter lines and recurses into each sub-range; for
 * message/rfc822 it recurses into the body. Each level scans its range once, so the total
 * work is bounded by MIME_MAX_DEPTH passes over the bytes, in practice one or two.
 */
#include "store/mime.h"

#include "core/buf.h"
#include "core/util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mime_ctx {
    const char *data;
    size_t len;
    size_t n_parts;
};

static char *mime_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* memchr finds the line ends: every message a FETCH or SEARCH reads is parsed, so these
 * scans run over whole mailboxes. */
uint64_t mime_crlf_size(const char *data, size_t len)
{
    uint64_t n = len;
    const char *p = data, *end = data + len, *lf;
    while (p < end && (lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        /* The store keeps LF on disk; IMAP counts CRLF. A LF already after CR is fine. */
        if (lf == data || lf[-1] != '\r')
            n++;
        p = lf + 1;
    }
    return n;
}

/* Lines as IMAP counts them: the line ends in the body (as Dovecot counts: a last line
 * without a line end, e.g. before a boundary, is not counted). */
static uint64_t mime_count_lines(const char *data, size_t len)
{
    uint64_t n = 0;
    const char *p = data, *end = data + len, *lf;
    while (p < end && (lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        n++;
        p = lf + 1;
    }
    return n;
}

static void mime_params_free(struct mime_param *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
}

void mime_part_free(struct mime_part *p)
{
    while (p) {
        struct mime_part *next = p->next;
        mime_part_free(p->children);
        mime_part_free(p->message);
        free(p->type);
        free(p->subtype);
        mime_params_free(p->params, p->n_params);
        mime_params_free(p->disp_params, p->n_disp_params);
        free(p->id);
        free(p->description);
        free(p->encoding);
        free(p->md5);
        free(p->location);
        free(p->language);
        free(p->disposition);
        for (int i = 0; i < MIME_ENV_COUNT; i++)
            free(p->env[i]);
        free(p);
        p = next;
    }
}

/* ---- RFC 2045 tokens inside structured field values -------------------------------- */

/* Skip white space and (nested) comments. */
static const char *mime_skip_cfws(const char *s)
{
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
            s++;
        if (*s != '(')
            return s;
        int depth = 0;
        while (*s) {
            if (*s == '\\' && s[1]) {
                s += 2;
                continue;
            }
            if (*s == '(')
                depth++;
            else if (*s == ')' && --depth == 0) {
                s++;
                break;
            }
            s++;
        }
    }
}

/* RFC 2045 §5.1 tspecials plus controls and space end a token. */
static bool mime_is_token_char(unsigned char c)
{
    return c > ' ' && c < 127 && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* Read a token or quoted-string at *sp into a new string; NULL when there is neither. */
static char *mime_read_value(const char **sp)
{
    const char *s = *sp;
    if (*s == '"') {
        s++;
        /* Size the copy by the quoted string itself, not the rest of the field: a field
         * of many quoted parameters stays linear. */
        size_t cap = 1;
        for (const char *q = s; *q && *q != '"'; q++, cap++)
            if (*q == '\\' && q[1])
                q++;
        char *out = malloc(cap);
        if (!out)
            return NULL;
        size_t n = 0;
        while (*s && *s != '"') {
            if (*s == '\\' && s[1])
                s++;
            out[n++] = *s++;
        }
        if (*s == '"')
            s++;
        out[n] = '\0';
        *sp = s;
        return out;
    }
    const char *start = s;
    while (mime_is_token_char((unsigned char)*s))
        s++;
    if (s == start)
        return NULL;
    *sp = s;
    return mime_strndup(start, (size_t)(s - start));
}

static void mime_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* One "name*N*" parameter piece of RFC 2231. */
struct mime_raw_param {
    char *base;   /* name without the section/extended markers */
    long section; /* -1 when not continued */
    bool is_ext;  /* value is charset'lang'%XX-encoded (or a continuation of it) */
    char *value;
};

static bool mime_append_pct(struct buf *b, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
        if (mime_is_token_char(*s) && *s != '%' && *s != '\'' && *s != '*') {
            if (!buf_append_byte(b, (char)*s))
                return false;
        } else {
            char e[3] = {'%', hex[*s >> 4], hex[*s & 15]};
            if (!buf_append(b, e, 3))
                return false;
        }
    }
    return true;
}

/* RFC 2231 §3-4: join "name*0", "name*1*"... into one parameter. When any piece is
 * extended the result is "name*" = "charset'lang'pct-encoded" so clients can decode it;
 * otherwise "name" = the plain concatenation. */
static int mime_params_merge(struct mime_raw_param *raw, size_t n_raw, struct mime_param **out_r,
                             size_t *n_out_r)
{
    struct mime_param *out = calloc(n_raw ? n_raw : 1, sizeof *out);
    if (!out)
        return -1;
    size_t n_out = 0;
    bool *used = calloc(n_raw ? n_raw : 1, sizeof *used);
    if (!used) {
        free(out);
        return -1;
    }
    for (size_t i = 0; i < n_raw; i++) {
        if (used[i])
            continue;
        struct buf v;
        buf_init(&v, MIME_MAX_VALUE);
        bool any_ext = false;
        bool dup_name = false;
        for (size_t k = 0; k < n_out; k++)
            if (strcmp(out[k].name, raw[i].base) == 0 ||
                (strncmp(out[k].name, raw[i].base, strlen(raw[i].base)) == 0 &&
                 strcmp(out[k].name + strlen(raw[i].base), "*") == 0))
                dup_name = true;
        if (raw[i].section < 0) {
            used[i] = true;
            if (dup_name) {
                buf_free(&v);
                continue;
            }
            any_ext = raw[i].is_ext;
            buf_append_str(&v, raw[i].value);
        } else {
            for (size_t k = i; k < n_raw; k++)
                if (!used[k] && raw[k].section >= 0 && strcmp(raw[k].base, raw[i].base) == 0 &&
                    raw[k].is_ext)
                    any_ext = true;
            /* Sections in numeric order, stopping at the first gap (RFC 2231 §3). */
            for (long want = 0;; want++) {
                size_t found = n_raw;
                for (size_t k = i; k < n_raw; k++)
                    if (!used[k] && raw[k].section == want &&
                        strcmp(raw[k].base, raw[i].base) == 0) {
                        found = k;
                        break;
                    }
                if (found == n_raw)
                    break;
                used[found] = true;
                if (!any_ext || raw[found].is_ext) {
                    if (any_ext && want == 0 && !raw[found].is_ext)
                        buf_append_str(&v, "''");
                    buf_append_str(&v, raw[found].value);
                } else {
                    if (want == 0)
                        buf_append_str(&v, "''");
                    mime_append_pct(&v, raw[found].value);
                }
            }
            for (size_t k = i; k < n_raw; k++)
                if (raw[k].section >= 0 && strcmp(raw[k].base, raw[i].base) == 0)
                    used[k] = true;
            if (dup_name) {
                buf_free(&v);
                continue;
            }
        }
        size_t bl = strlen(raw[i].base);
        char *name = malloc(bl + 2);
        if (!name) {
            buf_free(&v);
            break;
        }
        memcpy(name, raw[i].base, bl);
        if (any_ext)
            name[bl++] = '*';
        name[bl] = '\0';
        out[n_out].name = name;
        out[n_out].value = v.data ? buf_steal(&v) : mime_strndup("", 0);
        buf_free(&v);
        n_out++;
    }
    free(used);
    *out_r = out;
    *n_out_r = n_out;
    return 0;
}

/* Parse ";" attribute "=" value pairs from s into a merged parameter list. */
static void mime_parse_params(const char *s, struct mime_param **params_r, size_t *n_r)
{
    struct mime_raw_param raw[MIME_MAX_PARAMS];
    size_t n_raw = 0;
    for (;;) {
        s = mime_skip_cfws(s);
        if (*s != ';') {
            /* Tolerate junk: skip to the next ';' */
            while (*s && *s != ';')
                s++;
            if (!*s)
                break;
        }
        s++;
        s = mime_skip_cfws(s);
        const char *name_start = s;
        while (mime_is_token_char((unsigned char)*s) || *s == '*')
            s++;
        if (s == name_start)
            continue;
        size_t name_len = (size_t)(s - name_start);
        s = mime_skip_cfws(s);
        if (*s != '=')
            continue;
        s++;
        s = mime_skip_cfws(s);
        char *value = mime_read_value(&s);
        if (!value)
            continue;
        if (n_raw == MIME_MAX_PARAMS) {
            free(value);
            continue;
        }
        char *name = mime_strndup(name_start, name_len);
        if (!name) {
            free(value);
            break;
        }
        mime_lower(name);
        struct mime_raw_param *r = &raw[n_raw];
        r->section = -1;
        r->is_ext = false;
        char *star = strchr(name, '*');
        if (star) {
            char *p = star + 1;
            if (*p == '\0') {
                r->is_ext = true;
            } else if (isdigit((unsigned char)*p)) {
                long sec = 0;
                while (isdigit((unsigned char)*p) && sec < 10000)
                    sec = sec * 10 + (*p++ - '0');
                if (*p == '*') {
                    r->is_ext = true;
                    p++;
                }
                r->section = *p == '\0' ? sec : -1;
            }
            *star = '\0';
        }
        r->base = name;
        r->value = value;
        n_raw++;
    }
    *params_r = NULL;
    *n_r = 0;
    if (n_raw > 0)
        (void)mime_params_merge(raw, n_raw, params_r, n_r);
    for (size_t i = 0; i < n_raw; i++) {
        free(raw[i].base);
        free(raw[i].value);
    }
}

/* RFC 2045 §5.1 Content-Type; syntax errors leave the default (RFC 2045 §5.2). */
static void mime_parse_content_type(struct mime_part *p, const char *v)
{
    const char *s = mime_skip_cfws(v);
    char *type = mime_read_value(&s);
    if (!type)
        return;
    s = mime_skip_cfws(s);
    if (*s != '/') {
        free(type);
        return;
    }
    s = mime_skip_cfws(s + 1);
    char *subtype = mime_read_value(&s);
    if (!subtype) {
        free(type);
        return;
    }
    free(p->type);
    free(p->subtype);
    p->type = type;
    p->subtype = subtype;
    mime_params_free(p->params, p->n_params);
    mime_parse_params(s, &p->params, &p->n_params);
}

/* RFC 2183 Content-Disposition: disposition-type *(";" parameter). */
static void mime_parse_disposition(struct mime_part *p, const char *v)
{
    const char *s = mime_skip_cfws(v);
    char *d = mime_read_value(&s);
    if (!d)
        return;
    free(p->disposition);
    p->disposition = d;
    mime_params_free(p->disp_params, p->n_disp_params);
    mime_parse_params(s, &p->disp_params, &p->n_disp_params);
}

/* A single token value (Content-Transfer-Encoding), comments removed. */
static char *mime_parse_token_field(const char *v)
{
    const char *s = mime_skip_cfws(v);
    return mime_read_value(&s);
}

static char *mime_trim_dup(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
        n--;
    return mime_strndup(v, n);
}

static const char *const mime_env_names[MIME_ENV_COUNT] = {
    "date", "subject", "from", "sender",      "reply-to",
    "to",   "cc",      "bcc",  "in-reply-to", "message-id"};

/* Record one header field (name, unfolded value) on the part. */
static void mime_header_field(struct mime_part *p, const char *name, size_t nlen, const char *value)
{
#define IS(n) (nlen == sizeof(n) - 1 && strncasecmp(name, n, nlen) == 0)
    if (IS("content-type")) {
        mime_parse_content_type(p, value);
    } else if (IS("content-transfer-encoding")) {
        if (!p->encoding)
            p->encoding = mime_parse_token_field(value);
    } else if (IS("content-disposition")) {
        if (!p->disposition)
            mime_parse_disposition(p, value);
    } else if (IS("content-id")) {
        if (!p->id)
            p->id = mime_trim_dup(value);
    } else if (IS("content-description")) {
        if (!p->description)
            p->description = mime_trim_dup(value);
    } else if (IS("content-language")) {
        if (!p->language)
            p->language = mime_trim_dup(value);
    } else if (IS("content-location")) {
        if (!p->location)
            p->location = mime_trim_dup(value);
    } else if (IS("content-md5")) {
        if (!p->md5)
            p->md5 = mime_trim_dup(value);
    } else {
        for (int i = 0; i < MIME_ENV_COUNT; i++) {
            size_t l = strlen(mime_env_names[i]);
            if (nlen == l && strncasecmp(name, mime_env_names[i], nlen) == 0) {
                if (!p->env[i])
                    p->env[i] = mime_trim_dup(value);
                break;
            }
        }
    }
#undef IS
}

/* Is this header field one we record? Saves unfolding values nobody reads. */
static bool mime_field_is_wanted(const char *name, size_t nlen)
{
    if (nlen > 8 && strncasecmp(name, "content-", 8) == 0)
        return true;
    for (int i = 0; i < MIME_ENV_COUNT; i++)
        if (strlen(mime_env_names[i]) == nlen && strncasecmp(name, mime_env_names[i], nlen) == 0)
            return true;
    return false;
}

/* End of the line starting at pos (index after its LF, or end). */
static size_t mime_line_end(const char *d, size_t pos, size_t end)
{
    const char *nl = memchr(d + pos, '\n', end - pos);
    return nl ? (size_t)(nl - d) + 1 : end;
}

/* Parse the header block at [start, end): fill p's fields; return the body offset. */
static size_t mime_parse_header(const struct mime_ctx *ctx, struct mime_part *p, size_t start,
                                size_t end)
{
    const char *d = ctx->data;
    size_t pos = start;
    size_t n_fields = 0;
    struct buf value;
    buf_init(&value, MIME_MAX_VALUE);
    while (pos < end) {
        size_t le = mime_line_end(d, pos, end);
        size_t content_end = le;
        if (content_end > pos && d[content_end - 1] == '\n')
            content_end--;
        if (content_end > pos && d[content_end - 1] == '\r')
            content_end--;
        if (content_end == pos) {
            pos = le; /* the empty line ends the header and belongs to it */
            break;
        }
        const char *line = d + pos;
        size_t line_len = content_end - pos;
        const char *colon = memchr(line, ':', line_len);
        size_t next = le;
        if (line[0] != ' ' && line[0] != '\t' && colon && n_fields < MIME_MAX_FIELDS) {
            n_fields++;
            size_t nlen = (size_t)(colon - line);
            while (nlen > 0 && (line[nlen - 1] == ' ' || line[nlen - 1] == '\t'))
                nlen--;
            bool wanted = mime_field_is_wanted(line, nlen);
            buf_reset(&value);
            if (wanted)
                buf_append(&value, colon + 1, (size_t)(content_end - (colon + 1 - d)));
            /* RFC 5322 §2.2.3: unfold continuation lines (CRLF removed, WSP kept). */
            while (next < end && (d[next] == ' ' || d[next] == '\t')) {
                size_t cle = mime_line_end(d, next, end);
                size_t cce = cle;
                if (cce > next && d[cce - 1] == '\n')
                    cce--;
                if (cce > next && d[cce - 1] == '\r')
                    cce--;
                if (wanted)
                    buf_append(&value, d + next, cce - next);
                next = cle;
            }
            if (wanted && memchr(line, '\0', nlen) == NULL) {
                /* NUL bytes in a value would cut it short; replace them. */
                for (size_t i = 0; i < value.len; i++)
                    if (value.data[i] == '\0')
                        value.data[i] = ' ';
                mime_header_field(p, line, nlen, buf_cstr(&value));
            }
        }
        pos = next;
    }
    buf_free(&value);
    return pos;
}

static const char *mime_param_get(const struct mime_part *p, const char *name)
{
    for (size_t i = 0; i < p->n_params; i++)
        if (strcmp(p->params[i].name, name) == 0)
            return p->params[i].value;
    return NULL;
}

/* Is the line at pos a delimiter "--boundary" (with optional "--" and trailing white
 * space)? Returns 0 no, 1 delimiter, 2 close delimiter (RFC 2046 §5.1.1). */
static int mime_is_delimiter(const char *d, size_t pos, size_t le, const char *b, size_t blen)
{
    size_t n = le - pos;
    if (n < 2 + blen || d[pos] != '-' || d[pos + 1] != '-' || memcmp(d + pos + 2, b, blen) != 0)
        return 0;
    size_t i = pos + 2 + blen;
    int kind = 1;
    if (i + 1 < le && d[i] == '-' && d[i + 1] == '-') {
        kind = 2;
        i += 2;
    }
    for (; i < le; i++)
        if (d[i] != ' ' && d[i] != '\t' && d[i] != '\r' && d[i] != '\n')
            return 0;
    return kind;
}

static struct mime_part *mime_parse_entity(struct mime_ctx *ctx, struct mime_part *parent,
                                           size_t start, size_t end, unsigned depth,
                                           bool default_message);

static void mime_set_type(struct mime_part *p, const char *type, const char *subtype)
{
    free(p->type);
    free(p->subtype);
    p->type = mime_strndup(type, strlen(type));
    p->subtype = mime_strndup(subtype, strlen(subtype));
    mime_params_free(p->params, p->n_params);
    p->params = NULL;
    p->n_params = 0;
}

/* Split a multipart body at its delimiters and parse each sub-part. */
static void mime_parse_multipart(struct mime_ctx *ctx, struct mime_part *p, const char *boundary,
                                 size_t end, unsigned depth)
{
    const char *d = ctx->data;
    size_t blen = strlen(boundary);
    bool is_digest = strcasecmp(p->subtype, "digest") == 0;
    size_t pos = p->body_offset;
    size_t part_start = 0;
    bool in_part = false;
    struct mime_part **tail = &p->children;
    while (pos < end) {
        size_t le = mime_line_end(d, pos, end);
        int kind = mime_is_delimiter(d, pos, le, boundary, blen);
        if (kind) {
            if (in_part) {
                /* RFC 2046 §5.1.1: the line end before a delimiter belongs to it. */
                size_t part_end = pos;
                if (part_end > part_start && d[part_end - 1] == '\n')
                    part_end--;
                if (part_end > part_start && d[part_end - 1] == '\r')
                    part_end--;
                if (part_end < part_start)
                    part_end = part_start;
                struct mime_part *c =
                    mime_parse_entity(ctx, p, part_start, part_end, depth + 1, is_digest);
                if (c) {
                    *tail = c;
                    tail = &c->next;
                    p->n_children++;
                }
            }
            if (kind == 2) {
                in_part = false;
                break;
            }
            in_part = true;
            part_start = le;
        }
        pos = le;
    }
    if (in_part) {
        /* Missing close delimiter: the last part runs to the end. */
        struct mime_part *c = mime_parse_entity(ctx, p, part_start, end, depth + 1, is_digest);
        if (c) {
            *tail = c;
            p->n_children++;
        }
    }
    if (p->n_children == 0) {
        /* IMAP needs at least one part: an empty text/plain at the end of the body. */
        struct mime_part *c = mime_parse_entity(ctx, p, end, end, depth + 1, false);
        if (c) {
            p->children = c;
            p->n_children = 1;
        }
    }
}

/* Parse one entity (header + body) in [start, end). */
static struct mime_part *mime_parse_entity(struct mime_ctx *ctx, struct mime_part *parent,
                                           size_t start, size_t end, unsigned depth,
                                           bool default_message)
{
    struct mime_part *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    ctx->n_parts++;
    p->parent = parent;
    p->header_offset = start;
    size_t body = mime_parse_header(ctx, p, start, end);
    p->header_size = body - start;
    p->header_vsize = mime_crlf_size(ctx->data + start, body - start);
    p->body_offset = body;
    p->body_size = end - body;
    p->body_vsize = mime_crlf_size(ctx->data + body, end - body);
    p->body_lines = mime_count_lines(ctx->data + body, end - body);
    if (!p->type) {
        /* RFC 2046 §5.1.5: in multipart/digest the default is message/rfc822. */
        if (default_message)
            mime_set_type(p, "message", "rfc822");
        else
            mime_set_type(p, "text", "plain");
    }
    if (!p->type || !p->subtype) {
        mime_part_free(p);
        return NULL;
    }
    bool too_deep = depth >= MIME_MAX_DEPTH || ctx->n_parts >= MIME_MAX_PARTS;
    if (strcasecmp(p->type, "multipart") == 0) {
        const char *boundary = mime_param_get(p, "boundary");
        if (too_deep) {
            mime_set_type(p, "application", "octet-stream");
        } else if (!boundary || !*boundary) {
            /* Without a boundary nothing can be split: show it as text. */
            mime_set_type(p, "text", "plain");
        } else {
            char *b = mime_strndup(boundary, strlen(boundary));
            if (b) {
                p->is_multipart = true;
                mime_parse_multipart(ctx, p, b, end, depth);
                free(b);
            }
        }
    } else if (strcasecmp(p->type, "message") == 0 && strcasecmp(p->subtype, "rfc822") == 0) {
        if (too_deep) {
            mime_set_type(p, "application", "octet-stream");
        } else {
            p->message = mime_parse_entity(ctx, p, body, end, depth + 1, false);
            p->is_message = p->message != NULL;
        }
    }
    return p;
}

struct mime_part *mime_parse(const char *data, size_t len)
{
    struct mime_ctx ctx = {.data = data, .len = len, .n_parts = 0};
    return mime_parse_entity(&ctx, NULL, 0, len, 0, false);
}

const struct mime_part *mime_part_find(const struct mime_part *root, const uint32_t *path, size_t n)
{
    const struct mime_part *cur = root;
    /* RFC 3501 §6.4.5: numbers index the parts of a multipart; a non-multipart message
     * has one part, number 1: its body. A message/rfc822 part's numbers apply to the
     * encapsulated message. */
    bool cur_is_message = true;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = path[i];
        if (k == 0)
            return NULL;
        if (!cur_is_message && cur->is_message) {
            cur = cur->message;
            cur_is_message = true;
        }
        if (cur->is_multipart) {
            const struct mime_part *c = cur->children;
            for (uint32_t j = 1; c && j < k; j++)
                c = c->next;
            if (!c)
                return NULL;
            cur = c;
        } else if (cur_is_message && k == 1) {
            /* the body of a single-part message: same node */
        } else {
            return NULL;
        }
        cur_is_message = false;
    }
    return cur;
}

/* ---- IMAP output: strings, BODYSTRUCTURE, ENVELOPE (RFC 3501 §4.3, §7.4.2) ---------- */

bool mime_write_nstring(struct buf *out, const char *s, size_t len, bool is_null)
{
    if (is_null)
        return buf_append_str(out, "NIL");
    bool needs_literal = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* RFC 3501 §4.3: quoted strings carry 7-bit text without CR/LF; anything else
         * (8-bit, NUL, line ends) must go as a literal. */
        if (c == '\r' || c == '\n' || c == 0 || c >= 0x80) {
            needs_literal = true;
            break;
        }
    }
    if (needs_literal)
        return buf_printf(out, "{%zu}\r\n", len) && buf_append(out, s, len);
    if (!buf_append_byte(out, '"'))
        return false;
    for (size_t i = 0; i < len; i++) {
        if ((s[i] == '"' || s[i] == '\\') && !buf_append_byte(out, '\\'))
            return false;
        if (!buf_append_byte(out, s[i]))
            return false;
    }
    return buf_append_byte(out, '"');
}

bool mime_write_string(struct buf *out, const char *s)
{
    return mime_write_nstring(out, s, s ? strlen(s) : 0, s == NULL);
}

static bool mime_write_params(struct buf *out, const struct mime_param *p, size_t n)
{
    if (n == 0)
        return buf_append_str(out, "NIL");
    bool ok = buf_append_byte(out, '(');
    for (size_t i = 0; i < n && ok; i++) {
        if (i > 0)
            ok = buf_append_byte(out, ' ');
        ok = ok && mime_write_string(out, p[i].name) && buf_append_byte(out, ' ') &&
             mime_write_string(out, p[i].value);
    }
    return ok && buf_append_byte(out, ')');
}

/* body-fld-lang: NIL, one string, or a list of the comma-separated tags. */
static bool mime_write_language(struct buf *out, const char *lang)
{
    if (!lang)
        return buf_append_str(out, "NIL");
    const char *tags[32];
    size_t lens[32];
    size_t n = 0;
    const char *s = lang;
    while (*s && n < 32) {
        s = mime_skip_cfws(s);
        const char *st = s;
        while (*s && *s != ',' && *s != ' ' && *s != '\t' && *s != '(')
            s++;
        if (s > st) {
            tags[n] = st;
            lens[n] = (size_t)(s - st);
            n++;
        }
        s = mime_skip_cfws(s);
        if (*s == ',')
            s++;
        else if (*s && s == st)
            s++;
    }
    if (n == 0)
        return buf_append_str(out, "NIL");
    if (n == 1)
        return mime_write_nstring(out, tags[0], lens[0], false);
    bool ok = buf_append_byte(out, '(');
    for (size_t i = 0; i < n && ok; i++)
        ok = (i == 0 || buf_append_byte(out, ' ')) &&
             mime_write_nstring(out, tags[i], lens[i], false);
    return ok && buf_append_byte(out, ')');
}

/* body-ext-1part / body-ext-mpart tail: disposition, language, location. */
static bool mime_write_ext_tail(struct buf *out, const struct mime_part *p)
{
    bool ok = buf_append_byte(out, ' ');
    if (p->disposition) {
        ok = ok && buf_append_byte(out, '(') && mime_write_string(out, p->disposition) &&
             buf_append_byte(out, ' ') &&
             mime_write_params(out, p->disp_params, p->n_disp_params) && buf_append_byte(out, ')');
    } else {
        ok = ok && buf_append_str(out, "NIL");
    }
    return ok && buf_append_byte(out, ' ') && mime_write_language(out, p->language) &&
           buf_append_byte(out, ' ') && mime_write_string(out, p->location);
}

static bool mime_write_part(struct buf *out, const struct mime_part *p, bool ext)
{
    bool ok = buf_append_byte(out, '(');
    if (p->is_multipart) {
        /* body-type-mpart: parts then the subtype, no space between the parts. */
        for (const struct mime_part *c = p->children; c && ok; c = c->next)
            ok = mime_write_part(out, c, ext);
        ok = ok && buf_append_byte(out, ' ') && mime_write_string(out, p->subtype);
        if (ext) {
            ok = ok && buf_append_byte(out, ' ') &&
                 mime_write_params(out, p->params, p->n_params) && mime_write_ext_tail(out, p);
        }
        return ok && buf_append_byte(out, ')');
    }
    bool is_text = strcasecmp(p->type, "text") == 0;
    ok = ok && mime_write_string(out, p->type) && buf_append_byte(out, ' ') &&
         mime_write_string(out, p->subtype) && buf_append_byte(out, ' ');
    if (p->n_params == 0 && is_text) {
        /* RFC 2045 §5.2: text defaults to charset us-ascii. */
        ok = ok && buf_append_str(out, "(\"charset\" \"us-ascii\")");
    } else {
        ok = ok && mime_write_params(out, p->params, p->n_params);
    }
    ok = ok && buf_append_byte(out, ' ') && mime_write_string(out, p->id) &&
         buf_append_byte(out, ' ') && mime_write_string(out, p->description) &&
         buf_append_byte(out, ' ') && mime_write_string(out, p->encoding ? p->encoding : "7bit") &&
         buf_printf(out, " %llu", (unsigned long long)p->body_vsize);
    if (p->is_message) {
        /* body-type-msg: envelope, body, lines */
        ok = ok && buf_append_byte(out, ' ') && mime_write_envelope(p->message, out) &&
             buf_append_byte(out, ' ') && mime_write_part(out, p->message, ext) &&
             buf_printf(out, " %llu", (unsigned long long)p->body_lines);
    } else if (is_text) {
        ok = ok && buf_printf(out, " %llu", (unsigned long long)p->body_lines);
    }
    if (ext) {
        ok = ok && buf_append_byte(out, ' ') && mime_write_string(out, p->md5) &&
             mime_write_ext_tail(out, p);
    }
    return ok && buf_append_byte(out, ')');
}

bool mime_write_bodystructure(const struct mime_part *root, bool extended, struct buf *out)
{
    return mime_write_part(out, root, extended);
}

/* ---- RFC 5322 address lists for ENVELOPE ------------------------------------------- */

struct mime_addr_scan {
    const char *s;
    struct buf *out;
    size_t n_written;
};

/* Read a word (atom or quoted-string, decoded) or one special char; append decoded text to
 * w. Returns the kind: 'a' atom/quoted, a special char, or 0 at end. */
static int mime_addr_token(const char **sp, struct buf *w, struct buf *comment)
{
    const char *s = *sp;
    /* Skip white space and comments, keeping the text of a comment: "a@b (Name)" gives
     * the address a display name when it has no phrase (as Dovecot does). */
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
            s++;
        if (*s != '(')
            break;
        const char *end = mime_skip_cfws(s);
        const char *st = s + 1, *en = end;
        while (en > st && (en[-1] == ' ' || en[-1] == '\t' || en[-1] == '\r' || en[-1] == '\n'))
            en--;
        if (en > st && en[-1] == ')')
            en--;
        if (comment && en > st) {
            buf_reset(comment);
            buf_append(comment, st, (size_t)(en - st));
        }
        if (end == s)
            break;
        s = end;
    }
    if (!*s) {
        *sp = s;
        return 0;
    }
    if (*s == '"') {
        s++;
        while (*s && *s != '"') {
            if (*s == '\\' && s[1])
                s++;
            buf_append_byte(w, *s++);
        }
        if (*s == '"')
            s++;
        *sp = s;
        return 'a';
    }
    if (strchr("<>@,;:.[]", *s)) {
        if (*s == '[') {
            /* domain-literal: keep it whole */
            const char *st = s;
            while (*s && *s != ']')
                s++;
            if (*s == ']')
                s++;
            buf_append(w, st, (size_t)(s - st));
            *sp = s;
            return 'a';
        }
        *sp = s + 1;
        return *s;
    }
    const char *st = s;
    while (*s && !strchr("<>@,;:.[]\"() \t\r\n", *s))
        s++;
    if (s == st) {
        /* a stray ')' or similar: skip it */
        *sp = s + 1;
        return ' ';
    }
    buf_append(w, st, (size_t)(s - st));
    *sp = s;
    return 'a';
}

/* Parse an RFC 5322 address list, calling back per group start, mailbox and group end
 * (mime.h). Tolerant like Dovecot: a mailbox without '@' has a NULL host, a comment stands
 * for the display name
 * of a mailbox that has none, an obsolete route "<@a,@b:x@y>" is kept as its adl.
 * At most 10,000 entries. */
void mime_address_list_parse(const char *value, const struct mime_address_visitor *v)
{
    if (!value)
        return;
    struct buf phrase, local, domain, w, comment, route;
    buf_init(&route, MIME_MAX_VALUE);
    buf_init(&comment, 256);
    buf_init(&phrase, MIME_MAX_VALUE);
    buf_init(&local, MIME_MAX_VALUE);
    buf_init(&domain, MIME_MAX_VALUE);
    buf_init(&w, MIME_MAX_VALUE);
    const char *s = value;
    bool in_group = false, is_stopped = false;
    size_t n_addr = 0;
    /* One mailbox (or group start) per iteration; a tolerant state machine:
     * words before '<' or ':' form the phrase; after '<' local@domain up to '>';
     * without angle brackets the words are local-part '@' domain. */
    while (!is_stopped && *mime_skip_cfws(s) && n_addr < 10000) {
        buf_reset(&phrase);
        buf_reset(&local);
        buf_reset(&domain);
        buf_reset(&comment);
        buf_reset(&route);
        bool in_angle = false, seen_at = false, done_angle = false;
        int t;
        for (;;) {
            buf_reset(&w);
            t = mime_addr_token(&s, &w, &comment);
            if (t == 0 || ((t == ',' || t == ';') && !in_angle))
                break;
            if (t == 'a') {
                struct buf *dst = in_angle || !done_angle ? (seen_at ? &domain : &local) : NULL;
                if (done_angle)
                    continue;
                if (!in_angle && !seen_at && local.len > 0) {
                    /* more words before any '@': they were a phrase */
                    if (phrase.len)
                        buf_append_byte(&phrase, ' ');
                    buf_append(&phrase, local.data, local.len);
                    buf_reset(&local);
                }
                if (dst)
                    buf_append(dst, w.data, w.len);
            } else if (t == '.') {
                if (seen_at)
                    buf_append_byte(&domain, '.');
                else
                    buf_append_byte(&local, '.');
            } else if (t == '@') {
                if (in_angle && !seen_at && local.len == 0) {
                    /* obsolete route "<@a,@b:x@y>": kept as the address's adl "@a,@b" */
                    const char *st = s - 1;
                    while (*s && *s != ':' && *s != '>')
                        s++;
                    buf_reset(&route);
                    for (const char *c = st; c < s; c++)
                        if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n')
                            buf_append_byte(&route, *c);
                    if (*s == ':')
                        s++;
                    continue;
                }
                seen_at = true;
            } else if (t == '<') {
                if (local.len) {
                    if (phrase.len)
                        buf_append_byte(&phrase, ' ');
                    buf_append(&phrase, local.data, local.len);
                }
                buf_reset(&local);
                buf_reset(&domain);
                seen_at = false;
                in_angle = true;
            } else if (t == '>') {
                in_angle = false;
                done_angle = true;
            } else if (t == ':' && !in_angle && !in_group) {
                /* group start "name:" */
                if (local.len) {
                    if (phrase.len)
                        buf_append_byte(&phrase, ' ');
                    buf_append(&phrase, local.data, local.len);
                }
                if (v->group_start && !v->group_start(v->arg, buf_cstr(&phrase)))
                    is_stopped = true;
                buf_reset(&phrase);
                buf_reset(&local);
                in_group = true;
                n_addr++;
                if (is_stopped)
                    break;
            }
        }
        if (!is_stopped && (local.len || domain.len)) {
            const struct buf *name = phrase.len ? &phrase : &comment;
            struct mime_address a = {
                .name = name->len ? buf_cstr(name) : NULL,
                .adl = route.len ? buf_cstr(&route) : NULL,
                .mailbox = buf_cstr(&local),
                .host = seen_at && domain.len ? buf_cstr(&domain) : NULL,
            };
            if (v->address && !v->address(v->arg, &a))
                is_stopped = true;
            n_addr++;
        }
        if (!is_stopped && t == ';' && in_group) {
            if (v->group_end && !v->group_end(v->arg))
                is_stopped = true;
            in_group = false;
        }
        if (t == 0)
            break;
    }
    if (!is_stopped && in_group && v->group_end)
        (void)v->group_end(v->arg);
    buf_free(&phrase);
    buf_free(&local);
    buf_free(&domain);
    buf_free(&w);
    buf_free(&comment);
    buf_free(&route);
}

/* ENVELOPE form: "((name adl mailbox host)...)" with groups as (NIL NIL name NIL) ...
 * (NIL NIL NIL NIL) (RFC 3501 §7.4.2). */
static bool mime_env_group_start(void *arg, const char *name)
{
    struct buf *list = arg;
    return buf_append_str(list, list->len ? "(NIL NIL " : "((NIL NIL ") &&
           mime_write_string(list, name) && buf_append_str(list, " NIL)");
}

static bool mime_env_address(void *arg, const struct mime_address *a)
{
    struct buf *list = arg;
    return (list->len || buf_append_byte(list, '(')) && buf_append_byte(list, '(') &&
           mime_write_nstring(list, a->name, a->name ? strlen(a->name) : 0, !a->name) &&
           buf_append_byte(list, ' ') &&
           mime_write_nstring(list, a->adl, a->adl ? strlen(a->adl) : 0, !a->adl) &&
           buf_append_byte(list, ' ') && mime_write_string(list, a->mailbox) &&
           buf_append_byte(list, ' ') &&
           /* RFC 3501 §7.4.2 allows no NIL host for a mailbox: Dovecot's placeholder */
           mime_write_string(list, a->host ? a->host : "MISSING_DOMAIN") &&
           buf_append_byte(list, ')');
}

static bool mime_env_group_end(void *arg)
{
    struct buf *list = arg;
    return buf_append_str(list, "(NIL NIL NIL NIL)");
}

/* Parse an address list and write its ENVELOPE form "((...)(...))" or NIL if empty. */
static bool mime_write_address_list(struct buf *out, const char *value)
{
    struct buf list;
    buf_init(&list, 0);
    const struct mime_address_visitor v = {mime_env_group_start, mime_env_address,
                                           mime_env_group_end, &list};
    mime_address_list_parse(value, &v);
    bool ok;
    if (list.len == 0)
        ok = buf_append_str(out, "NIL");
    else
        ok = buf_append(out, list.data, list.len) && buf_append_byte(out, ')');
    buf_free(&list);
    return ok;
}

/* Display form for SEARCH (as Dovecot matches address headers): "Name <box@host>, ...",
 * groups as "name: ...;". */
static bool mime_disp_sep(struct buf *out, bool *is_first)
{
    bool ok = *is_first || buf_append_str(out, ", ");
    *is_first = false;
    return ok;
}

struct mime_disp {
    struct buf *out;
    bool is_first;
};

static bool mime_disp_group_start(void *arg, const char *name)
{
    struct mime_disp *d = arg;
    bool ok = mime_disp_sep(d->out, &d->is_first) && buf_append_str(d->out, name) &&
              buf_append_str(d->out, ": ");
    d->is_first = true;
    return ok;
}

static bool mime_disp_address(void *arg, const struct mime_address *a)
{
    struct mime_disp *d = arg;
    bool ok = mime_disp_sep(d->out, &d->is_first);
    if (a->name)
        ok = ok && buf_append_str(d->out, a->name) && buf_append_str(d->out, " <");
    ok = ok && buf_append_str(d->out, a->mailbox) &&
         (!a->host || (buf_append_byte(d->out, '@') && buf_append_str(d->out, a->host)));
    return ok && (!a->name || buf_append_byte(d->out, '>'));
}

static bool mime_disp_group_end(void *arg)
{
    struct mime_disp *d = arg;
    d->is_first = false;
    return buf_append_byte(d->out, ';');
}

bool mime_address_list_display(const char *value, struct buf *out)
{
    struct mime_disp d = {out, true};
    const struct mime_address_visitor v = {mime_disp_group_start, mime_disp_address,
                                           mime_disp_group_end, &d};
    mime_address_list_parse(value, &v);
    return true;
}

/* Does an address header value hold no address at all ("Sender: " or only a comment)? */
static bool mime_address_list_is_empty(const char *value)
{
    if (!value)
        return true;
    struct buf b;
    buf_init(&b, 0);
    (void)mime_write_address_list(&b, value);
    bool is_empty = b.len == 0 || strcmp(buf_cstr(&b), "NIL") == 0;
    buf_free(&b);
    return is_empty;
}

bool mime_write_envelope(const struct mime_part *msg, struct buf *out)
{
    char *const *e = msg->env;
    bool ok = buf_append_byte(out, '(') && mime_write_string(out, e[MIME_ENV_DATE]) &&
              buf_append_byte(out, ' ') && mime_write_string(out, e[MIME_ENV_SUBJECT]) &&
              buf_append_byte(out, ' ') && mime_write_address_list(out, e[MIME_ENV_FROM]) &&
              buf_append_byte(out, ' ');
    /* RFC 3501 §7.4.2: Sender and Reply-To default to From when absent; an empty field
     * ("Sender: ") counts as absent, as in Dovecot. */
    const char *sender =
        !mime_address_list_is_empty(e[MIME_ENV_SENDER]) ? e[MIME_ENV_SENDER] : e[MIME_ENV_FROM];
    const char *reply_to = !mime_address_list_is_empty(e[MIME_ENV_REPLY_TO])
                               ? e[MIME_ENV_REPLY_TO]
                               : e[MIME_ENV_FROM];
    ok = ok && mime_write_address_list(out, sender) && buf_append_byte(out, ' ') &&
         mime_write_address_list(out, reply_to) && buf_append_byte(out, ' ') &&
         mime_write_address_list(out, e[MIME_ENV_TO]) && buf_append_byte(out, ' ') &&
         mime_write_address_list(out, e[MIME_ENV_CC]) && buf_append_byte(out, ' ') &&
         mime_write_address_list(out, e[MIME_ENV_BCC]) && buf_append_byte(out, ' ') &&
         mime_write_string(out, e[MIME_ENV_IN_REPLY_TO]) && buf_append_byte(out, ' ') &&
         mime_write_string(out, e[MIME_ENV_MESSAGE_ID]) && buf_append_byte(out, ')');
    return ok;
}

/* ---- HEADER.FIELDS ----------------------------------------------------------------- */

static bool mime_name_in(const char *name, size_t nlen, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) == nlen && strncasecmp(names[i], name, nlen) == 0)
            return true;
    return false;
}

/* Append [s, s+len) converting bare LF to CRLF. */
static bool mime_append_crlf(struct buf *out, const char *s, size_t len)
{
    size_t from = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) {
            if (!buf_append(out, s + from, i - from) || !buf_append(out, "\r\n", 2))
                return false;
            from = i + 1;
        }
    }
    return buf_append(out, s + from, len - from);
}

bool mime_header_filter(const char *hdr, size_t len, const char *const *names, size_t n_names,
                        bool is_not, struct buf *out)
{
    size_t pos = 0;
    bool keep = false;
    while (pos < len) {
        const char *nl = memchr(hdr + pos, '\n', len - pos);
        size_t le = nl ? (size_t)(nl - hdr) + 1 : len;
        size_t ce = le;
        if (ce > pos && hdr[ce - 1] == '\n')
            ce--;
        if (ce > pos && hdr[ce - 1] == '\r')
            ce--;
        if (ce == pos)
            break; /* the empty line */
        if (hdr[pos] != ' ' && hdr[pos] != '\t') {
            const char *colon = memchr(hdr + pos, ':', ce - pos);
            if (colon) {
                size_t nlen = (size_t)(colon - (hdr + pos));
                while (nlen > 0 && (hdr[pos + nlen - 1] == ' ' || hdr[pos + nlen - 1] == '\t'))
                    nlen--;
                keep = mime_name_in(hdr + pos, nlen, names, n_names) != is_not;
            } else {
                keep = false;
            }
        }
        if (keep) {
            if (!mime_append_crlf(out, hdr + pos, ce - pos) || !buf_append(out, "\r\n", 2))
                return false;
        }
        pos = le;
    }
    /* RFC 3501 §6.4.5: the result ends with the blank line that ends a header. */
    return buf_append(out, "\r\n", 2);
}

/* ---- binary parts to base64 (RFC 3516 §4.4) ----------------------------------------------- */

/* Append part p's header with its Content-Transfer-Encoding set to base64. */
static void mime_header_cte_base64(const char *h, size_t len, struct buf *out)
{
    size_t pos = 0;
    bool done = false;
    while (pos < len) {
        const char *nl = memchr(h + pos, '\n', len - pos);
        size_t le = nl ? (size_t)(nl - h) + 1 : len;
        size_t next = le; /* with continuation lines */
        while (next < len && (h[next] == ' ' || h[next] == '\t')) {
            const char *cnl = memchr(h + next, '\n', len - next);
            next = cnl ? (size_t)(cnl - h) + 1 : len;
        }
        if (!done && le - pos > 26 && strncasecmp(h + pos, "Content-Transfer-Encoding:", 26) == 0) {
            buf_append_str(out, "Content-Transfer-Encoding: base64\r\n");
            done = true;
        } else {
            buf_append(out, h + pos, next - pos);
        }
        pos = next;
    }
}

/* Copy data[*copied..] up to the parts that need it, converting each binary leaf that
 * holds a NUL; depth-first in byte order. */
static void mime_binary_walk(const char *data, size_t len, const struct mime_part *p,
                             size_t *copied, struct buf *out, bool *changed, unsigned depth)
{
    if (depth > MIME_MAX_DEPTH)
        return;
    if (p->is_multipart) {
        for (const struct mime_part *k = p->children; k; k = k->next)
            mime_binary_walk(data, len, k, copied, out, changed, depth + 1);
        return;
    }
    if (p->is_message && p->message) {
        mime_binary_walk(data, len, p->message, copied, out, changed, depth + 1);
        return;
    }
    if (p->header_offset < *copied || p->body_offset > len || p->body_size > len - p->body_offset ||
        !memchr(data + p->body_offset, '\0', (size_t)p->body_size))
        return;
    /* the bytes before this part, its header with the new encoding, the body in base64 */
    buf_append(out, data + *copied, (size_t)p->header_offset - *copied);
    mime_header_cte_base64(data + p->header_offset, (size_t)(p->body_offset - p->header_offset),
                           out);
    struct buf b64;
    buf_init(&b64, 0);
    util_base64_encode(data + p->body_offset, (size_t)p->body_size, &b64);
    for (size_t i = 0; i < b64.len; i += 76) { /* RFC 2045 §6.8: lines of 76 */
        size_t n = b64.len - i < 76 ? b64.len - i : 76;
        buf_append(out, b64.data + i, n);
        buf_append_str(out, "\r\n");
    }
    buf_free(&b64);
    *copied = (size_t)(p->body_offset + p->body_size);
    *changed = true;
}

bool mime_binary_to_base64(const char *data, size_t len, struct buf *out)
{
    /* RFC 3516 §4.4: a message APPENDed with binary content must still be sendable as
     * BODY[] (a literal has no NUL): binary parts holding NUL are stored in base64 */
    if (!memchr(data, '\0', len))
        return false;
    struct mime_part *root = mime_parse(data, len);
    if (!root)
        return false;
    size_t copied = 0;
    bool changed = false;
    mime_binary_walk(data, len, root, &copied, out, &changed, 0);
    if (changed)
        buf_append(out, data + copied, len - copied);
    mime_part_free(root);
    return changed;
}
