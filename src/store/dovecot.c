/*
 * dovecot.c - parsers for the files Dovecot keeps in a Maildir (dovecot-uidlist,
 * dovecot-keywords, subscriptions): contract and formats in dovecot.h.
 *
 * Each parser copies the input once, walks it line by line with memchr (no line is
 * looked at twice), checks a budget before every allocation, and refuses or skips what
 * Dovecot itself would refuse or skip, so a file Dovecot served from gives clients the
 * same UIDs here and a file Dovecot would have rebuilt gives fresh ones.
 */
#include "store/dovecot.h"

#include "store/store-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A copy of data with a NUL after it (lines are cut in place); NULL when out of memory. */
static char *text_copy(const char *data, size_t len)
{
    char *t = malloc(len + 1);
    if (t) {
        memcpy(t, data, len);
        t[len] = '\0';
    }
    return t;
}

/* Next line of [*pos, end): NUL-terminated in place (the '\n' and a '\r' before it are
 * overwritten), *len_r its length. NULL at the end. The final line may lack its '\n'. */
static char *line_next(char **pos, char *end, size_t *len_r)
{
    char *p = *pos;
    if (p >= end)
        return NULL;
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *stop = nl ? nl : end;
    *pos = nl ? nl + 1 : end;
    *stop = '\0';
    if (stop > p && stop[-1] == '\r')
        *--stop = '\0';
    *len_r = (size_t)(stop - p);
    return p;
}

/* Decimal uint32 of [p, p+len), all digits, no sign; false on anything else or overflow. */
static bool parse_u32(const char *p, size_t len, uint32_t *v_r)
{
    if (len == 0 || len > 10)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > UINT32_MAX)
        return false;
    *v_r = (uint32_t)v;
    return true;
}

/* ---- dovecot-uidlist ----------------------------------------------------------------- */

/* Header line (after the version digit and its space). */
static int uidlist_header(struct dovecot_uidlist *l, char *p, char **error_r)
{
    if (l->version == 1) {
        /* "1 <uidvalidity> <nextuid>" */
        char *sp = strchr(p, ' ');
        if (!sp || !parse_u32(p, (size_t)(sp - p), &l->uidvalidity) ||
            !parse_u32(sp + 1, strlen(sp + 1), &l->uidnext)) {
            store_error(error_r, "corrupted header (version 1)");
            return -1;
        }
    } else {
        /* "3 V<uidvalidity> N<nextuid> G<guid> ...": unknown keys are kept by Dovecot,
         * ignored here */
        while (*p != '\0') {
            char *sp = strchr(p, ' ');
            size_t tlen = sp ? (size_t)(sp - p) : strlen(p);
            if ((p[0] == 'V' && !parse_u32(p + 1, tlen - 1, &l->uidvalidity)) ||
                (p[0] == 'N' && !parse_u32(p + 1, tlen - 1, &l->uidnext))) {
                store_error(error_r, "invalid %s in header", p[0] == 'V' ? "UIDVALIDITY" : "next UID");
                return -1;
            }
            p += tlen;
            while (*p == ' ')
                p++;
        }
    }
    if (l->uidvalidity == 0 || l->uidnext == 0) {
        store_error(error_r, "broken header (uidvalidity=%u, next uid=%u)", l->uidvalidity,
                      l->uidnext);
        return -1;
    }
    return 0;
}

/* One record line; prev_uid is the UID of the line before (UIDs ascend). */
static int uidlist_record(struct dovecot_uidlist *l, char *p, uint32_t prev_uid,
                          size_t line_no, char **error_r)
{
    struct dovecot_uidlist_rec *r = &l->recs[l->n];
    memset(r, 0, sizeof *r);
    char *sp = strchr(p, ' ');
    if (!sp || !parse_u32(p, (size_t)(sp - p), &r->uid) || r->uid == 0) {
        store_error(error_r, "invalid data at line %zu", line_no);
        return -1;
    }
    if (r->uid <= prev_uid) {
        store_error(error_r, "UIDs not ordered at line %zu (%u after %u)", line_no, r->uid,
                      prev_uid);
        return -1;
    }
    if (r->uid == UINT32_MAX || (l->version == 1 && r->uid >= l->uidnext)) {
        store_error(error_r, "UID %u too high at line %zu", r->uid, line_no);
        return -1;
    }
    p = sp;
    while (*p == ' ')
        p++;
    if (l->version == 3) {
        /* extension fields up to ':' then the file name */
        while (*p != '\0' && *p != ':') {
            char *field = p;
            while (*p != ' ' && *p != '\0')
                p++;
            if (*p == ' ')
                *p++ = '\0';
            /* keys are 'A'-'Z'; Dovecot drops other fields (and so do we) */
            if (field[0] == 'G')
                r->guid = field + 1;
            else if (field[0] == 'P')
                r->pop3_uidl = field + 1;
            while (*p == ' ')
                p++;
        }
        if (*p == ':')
            p++;
    }
    if (*p == '\0' || *p == ':' || strchr(p, '/') != NULL) {
        store_error(error_r, "broken file name at line %zu", line_no);
        return -1;
    }
    char *colon = strchr(p, ':');
    if (colon)
        *colon = '\0'; /* a v1 name may carry its ":2,<flags>": the base is the key */
    r->name = p;
    if (r->guid && r->guid[0] == '\0')
        r->guid = NULL; /* Dovecot: an empty GUID is corruption it clears */
    l->n++;
    return 0;
}

static int rec_name_cmp(const void *a, const void *b)
{
    const struct dovecot_uidlist_rec *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return x->uid < y->uid ? -1 : x->uid > y->uid;
}

int dovecot_uidlist_parse(const char *data, size_t len, struct dovecot_uidlist *out,
                          char **error_r)
{
    memset(out, 0, sizeof *out);
    if (len > DOVECOT_UIDLIST_MAX_BYTES) {
        store_error(error_r, "file too large (%zu bytes)", len);
        return -1;
    }
    if (memchr(data, '\0', len)) {
        store_error(error_r, "NUL byte in file");
        return -1;
    }
    /* a record needs at least "1 x\n": at most len / 4 + 1 of them */
    size_t max_recs = len / 4 + 1;
    out->text = text_copy(data, len);
    out->recs = malloc(max_recs * sizeof *out->recs);
    if (!out->text || !out->recs) {
        store_error(error_r, "out of memory");
        goto fail;
    }
    char *pos = out->text, *end = out->text + len, *line;
    size_t line_len, line_no = 1;
    line = line_next(&pos, end, &line_len);
    if (!line || line_len < 2 || (line[0] != '1' && line[0] != '3') || line[1] != ' ') {
        if (!line || line_len < 2 || line[1] != ' ')
            store_error(error_r, "corrupted header (no version number)");
        else
            store_error(error_r, "unsupported version %c", line[0]);
        goto fail;
    }
    if (line_len > DOVECOT_UIDLIST_MAX_LINE) {
        store_error(error_r, "header line too long");
        goto fail;
    }
    out->version = (unsigned)(line[0] - '0');
    if (uidlist_header(out, line + 2, error_r) < 0)
        goto fail;
    uint32_t prev_uid = 0;
    while ((line = line_next(&pos, end, &line_len)) != NULL) {
        line_no++;
        if (line_len > DOVECOT_UIDLIST_MAX_LINE) {
            store_error(error_r, "line %zu too long", line_no);
            goto fail;
        }
        if (out->n >= max_recs) { /* cannot happen with the bound above; kept as a guard */
            store_error(error_r, "too many records");
            goto fail;
        }
        if (uidlist_record(out, line, prev_uid, line_no, error_r) < 0)
            goto fail;
        prev_uid = out->recs[out->n - 1].uid;
    }
    if (prev_uid != 0 && prev_uid + 1 > out->uidnext)
        out->uidnext = prev_uid + 1;
    /* by name; a name listed twice keeps its highest (= last) UID */
    if (out->n > 1)
        qsort(out->recs, out->n, sizeof *out->recs, rec_name_cmp);
    size_t kept = 0;
    for (size_t i = 0; i < out->n; i++) {
        if (i + 1 < out->n && strcmp(out->recs[i].name, out->recs[i + 1].name) == 0)
            continue;
        out->recs[kept++] = out->recs[i];
    }
    out->n = kept;
    return 0;
fail:
    dovecot_uidlist_free(out);
    return -1;
}

const struct dovecot_uidlist_rec *dovecot_uidlist_find(const struct dovecot_uidlist *l,
                                                       const char *base, size_t len)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *name = l->recs[mid].name;
        int c = strncmp(name, base, len);
        if (c == 0 && name[len] != '\0')
            c = 1; /* name is longer than base */
        if (c == 0)
            return &l->recs[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void dovecot_uidlist_free(struct dovecot_uidlist *l)
{
    free(l->recs);
    free(l->text);
    memset(l, 0, sizeof *l);
}

/* ---- dovecot-keywords ---------------------------------------------------------------- */

/* RFC 3501 §9: flag-keyword = atom; atom-specials are ( ) { SP CTL % * " \ ] */
static bool is_flag_keyword(const char *s, size_t len)
{
    if (len == 0 || len > DOVECOT_KEYWORD_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c))
            return false;
    }
    return true;
}

int dovecot_keywords_parse(const char *data, size_t len, struct dovecot_keywords *out,
                           char **error_r)
{
    memset(out, 0, sizeof *out);
    if (len > DOVECOT_KEYWORDS_MAX_BYTES) {
        store_error(error_r, "file too large (%zu bytes)", len);
        return -1;
    }
    char *text = text_copy(data, len);
    if (!text) {
        store_error(error_r, "out of memory");
        return -1;
    }
    char *pos = text, *end = text + len, *line;
    size_t line_len;
    while ((line = line_next(&pos, end, &line_len)) != NULL) {
        char *sp = memchr(line, ' ', line_len);
        if (!sp) {
            if (line_len > 0)
                out->n_skipped++;
            continue;
        }
        uint32_t idx;
        const char *name = sp + 1;
        size_t name_len = line_len - (size_t)(name - line);
        bool is_dup = false;
        for (size_t k = 0; k < DOVECOT_KEYWORDS_MAX && !is_dup; k++)
            is_dup = out->names[k] && strlen(out->names[k]) == name_len &&
                     memcmp(out->names[k], name, name_len) == 0;
        if (!parse_u32(line, (size_t)(sp - line), &idx) || idx >= DOVECOT_KEYWORDS_MAX ||
            out->names[idx] || is_dup || memchr(name, '\0', name_len) ||
            !is_flag_keyword(name, name_len)) {
            out->n_skipped++;
            continue;
        }
        out->names[idx] = strndup(name, name_len);
        if (!out->names[idx]) {
            free(text);
            dovecot_keywords_free(out);
            store_error(error_r, "out of memory");
            return -1;
        }
    }
    free(text);
    return 0;
}

bool dovecot_keywords_of_info(const struct dovecot_keywords *kw, const char *info, char *out,
                              size_t size)
{
    if (size == 0)
        return false;
    out[0] = '\0';
    if (!info || strncmp(info, "2,", 2) != 0)
        return true;
    bool seen[DOVECOT_KEYWORDS_MAX] = {false};
    for (const char *p = info + 2; *p; p++)
        if (*p >= 'a' && *p < 'a' + DOVECOT_KEYWORDS_MAX)
            seen[*p - 'a'] = true;
    size_t used = 0;
    for (size_t k = 0; k < DOVECOT_KEYWORDS_MAX; k++) {
        if (!seen[k] || !kw->names[k])
            continue;
        size_t n = strlen(kw->names[k]);
        if (used + (used > 0) + n + 1 > size)
            return false;
        if (used > 0)
            out[used++] = ' ';
        memcpy(out + used, kw->names[k], n);
        used += n;
        out[used] = '\0';
    }
    return true;
}

void dovecot_keywords_free(struct dovecot_keywords *kw)
{
    for (size_t k = 0; k < DOVECOT_KEYWORDS_MAX; k++)
        free(kw->names[k]);
    memset(kw, 0, sizeof *kw);
}

/* ---- subscriptions ------------------------------------------------------------------- */

static const char mutf7_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* Decode one UTF-8 sequence at s[0..len): code point, or -1 when invalid (overlong,
 * surrogate, beyond U+10FFFF, truncated). *n_r gets its length. */
static long utf8_decode(const unsigned char *s, size_t len, size_t *n_r)
{
    unsigned char c = s[0];
    size_t n;
    long cp, min;
    if (c < 0x80) {
        *n_r = 1;
        return c;
    } else if ((c & 0xe0) == 0xc0) {
        n = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    if (n > len)
        return -1;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *n_r = n;
    return cp;
}

bool dovecot_utf8_to_mutf7(const char *in, size_t len, char *out, size_t size)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;
#define PUT(ch)                                                                              \
    do {                                                                                     \
        if (o + 1 >= size)                                                                   \
            return false;                                                                    \
        out[o++] = (char)(ch);                                                               \
    } while (0)
    while (i < len) {
        if (s[i] >= 0x20 && s[i] <= 0x7e) {
            /* RFC 3501 §5.1.3: printable ASCII stands for itself, '&' is "&-" */
            PUT(s[i]);
            if (s[i] == '&')
                PUT('-');
            i++;
            continue;
        }
        /* a run of other characters: UTF-16 in modified base64 between '&' and '-' */
        PUT('&');
        uint32_t bits = 0;
        unsigned n_bits = 0;
        while (i < len && !(s[i] >= 0x20 && s[i] <= 0x7e)) {
            size_t n;
            long cp = utf8_decode(s + i, len - i, &n);
            if (cp < 0)
                return false;
            i += n;
            uint16_t units[2];
            size_t n_units = 1;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                units[0] = (uint16_t)(0xd800 | (cp >> 10));
                units[1] = (uint16_t)(0xdc00 | (cp & 0x3ff));
                n_units = 2;
            } else {
                units[0] = (uint16_t)cp;
            }
            for (size_t u = 0; u < n_units; u++) {
                bits = (bits << 16) | units[u];
                n_bits += 16;
                while (n_bits >= 6) {
                    n_bits -= 6;
                    PUT(mutf7_alphabet[(bits >> n_bits) & 0x3f]);
                }
                bits &= (1u << n_bits) - 1;
            }
        }
        if (n_bits > 0)
            PUT(mutf7_alphabet[(bits << (6 - n_bits)) & 0x3f]);
        PUT('-');
    }
#undef PUT
    if (o >= size)
        return false;
    out[o] = '\0';
    return true;
}

/* v2: undo Dovecot's tab escaping of one level (\001 followed by 0, 1, t, r, n or the
 * byte itself) into out; false when the level is empty, holds '/' or a NUL, or is long. */
static bool level_unescape(const char *p, size_t len, char *out, size_t size, size_t *n_r)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '\001' && i + 1 < len) {
            c = p[++i];
            c = c == '0' ? '\0' : c == '1' ? '\001' : c == 't' ? '\t' : c == 'r' ? '\r' : c == 'n' ? '\n' : c;
        }
        if (c == '\0' || c == '/' || o + 1 >= size)
            return false;
        out[o++] = c;
    }
    *n_r = o;
    return o > 0;
}

/* One subscription line to a Tern name in out; false when it cannot be one. */
static bool subscription_name(unsigned version, const char *line, size_t len, char *out, size_t size)
{
    char utf8[DOVECOT_MAILBOX_NAME_MAX * 4 + 1];
    size_t n = 0;
    if (version == 2) {
        /* levels separated by TAB, each escaped; UTF-8 */
        const char *p = line, *end = line + len;
        while (p <= end) {
            const char *tab = memchr(p, '\t', (size_t)(end - p));
            const char *stop = tab ? tab : end;
            size_t level_len;
            if (n > 0) {
                if (n + 1 >= sizeof utf8)
                    return false;
                utf8[n++] = '/';
            }
            if (!level_unescape(p, (size_t)(stop - p), utf8 + n, sizeof utf8 - n, &level_len))
                return false;
            n += level_len;
            if (!tab)
                break;
            p = tab + 1;
        }
        utf8[n] = '\0';
        if (!dovecot_utf8_to_mutf7(utf8, n, out, size))
            return false;
    } else {
        /* v1: the name as the client sent it (modified UTF-7); Courier's "INBOX." prefix
         * is its namespace; '.' separates levels unless the namespace used '/' */
        if (len >= 6 && strncasecmp(line, "INBOX.", 6) == 0) {
            line += 6;
            len -= 6;
        }
        if (len == 0 || len + 1 > size || memchr(line, '\0', len))
            return false;
        bool has_slash = memchr(line, '/', len) != NULL;
        for (size_t i = 0; i < len; i++) {
            char c = line[i];
            if ((unsigned char)c < 0x20 || c == 0x7f)
                return false;
            out[i] = (!has_slash && c == '.') ? '/' : c;
        }
        out[len] = '\0';
        if (strstr(out, "//") || out[0] == '/' || out[len - 1] == '/')
            return false; /* empty level */
    }
    if (strlen(out) > DOVECOT_MAILBOX_NAME_MAX)
        return false;
    /* RFC 3501 §5.1: INBOX is case-insensitive, also as the first level */
    if (strncasecmp(out, "INBOX", 5) == 0 && (out[5] == '\0' || out[5] == '/'))
        memcpy(out, "INBOX", 5);
    return true;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int dovecot_subscriptions_parse(const char *data, size_t len, struct dovecot_subscriptions *out,
                                char **error_r)
{
    memset(out, 0, sizeof *out);
    if (len > DOVECOT_SUBSCRIPTIONS_MAX_BYTES) {
        store_error(error_r, "file too large (%zu bytes)", len);
        return -1;
    }
    static const char v2_header[] = "V\t2\n\n";
    out->version = 1;
    if (len >= sizeof v2_header - 1 && memcmp(data, v2_header, sizeof v2_header - 1) == 0) {
        out->version = 2;
        data += sizeof v2_header - 1;
        len -= sizeof v2_header - 1;
    }
    char *text = text_copy(data, len);
    /* every name takes at least two bytes ("x\n") */
    size_t cap = len / 2 + 1 < DOVECOT_SUBSCRIPTIONS_MAX ? len / 2 + 1 : DOVECOT_SUBSCRIPTIONS_MAX;
    out->names = calloc(cap, sizeof *out->names);
    if (!text || !out->names) {
        free(text);
        dovecot_subscriptions_free(out);
        store_error(error_r, "out of memory");
        return -1;
    }
    char *pos = text, *end = text + len, *line;
    size_t line_len;
    while ((line = line_next(&pos, end, &line_len)) != NULL) {
        if (line_len == 0)
            continue;
        char name[DOVECOT_MAILBOX_NAME_MAX + 1];
        if (out->n >= cap || !subscription_name(out->version, line, line_len, name, sizeof name)) {
            out->n_skipped++;
            continue;
        }
        if (!(out->names[out->n] = strdup(name))) {
            free(text);
            dovecot_subscriptions_free(out);
            store_error(error_r, "out of memory");
            return -1;
        }
        out->n++;
    }
    free(text);
    /* sorted, duplicates removed (Dovecot writes each once; a hand-edited file may not) */
    if (out->n > 1)
        qsort(out->names, out->n, sizeof *out->names, name_cmp);
    size_t kept = 0;
    for (size_t i = 0; i < out->n; i++) {
        if (kept > 0 && strcmp(out->names[kept - 1], out->names[i]) == 0) {
            free(out->names[i]);
            continue;
        }
        out->names[kept++] = out->names[i];
    }
    out->n = kept;
    return 0;
}

void dovecot_subscriptions_free(struct dovecot_subscriptions *s)
{
    for (size_t i = 0; s->names && i < s->n; i++)
        free(s->names[i]);
    free(s->names);
    memset(s, 0, sizeof *s);
}
