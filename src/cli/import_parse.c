/*
 * import_parse.c - parsers for Postfix and Dovecot configuration files (contract and
 * formats in import.h). Each walks its input once, line by line; logical lines (joined
 * continuations) are built in a buffer capped at IMPORT_MAX_VALUE.
 */
#include "cli/import.h"

#include "core/buf.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void import_note(struct buf *notes, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_append_str(notes, "  - ");
    buf_vprintf(notes, fmt, ap);
    buf_append_str(notes, "\n");
    va_end(ap);
}

void import_error(char **error_r, const char *fmt, ...)
{
    if (!error_r)
        return;
    char text[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    *error_r = strdup(text);
}

/* Append a copy of [k, k+klen) = [v, v+vlen); false when out of memory or budget. */
static bool kv_add(struct import_kv *kv, const char *k, size_t klen, const char *v, size_t vlen)
{
    if (kv->n >= IMPORT_MAX_ENTRIES)
        return false;
    if (kv->n == kv->cap) {
        size_t cap = kv->cap ? kv->cap * 2 : 32;
        char **nk = realloc(kv->keys, cap * sizeof *nk);
        if (!nk)
            return false;
        kv->keys = nk;
        char **nv = realloc(kv->values, cap * sizeof *nv);
        if (!nv)
            return false;
        kv->values = nv;
        kv->cap = cap;
    }
    char *key = strndup(k, klen), *value = strndup(v, vlen);
    if (!key || !value) {
        free(key);
        free(value);
        return false;
    }
    kv->keys[kv->n] = key;
    kv->values[kv->n] = value;
    kv->n++;
    return true;
}

void import_kv_free(struct import_kv *kv)
{
    for (size_t i = 0; i < kv->n; i++) {
        free(kv->keys[i]);
        free(kv->values[i]);
    }
    free(kv->keys);
    free(kv->values);
    for (size_t i = 0; i < kv->n_includes; i++)
        free(kv->includes[i]);
    free(kv->includes);
    memset(kv, 0, sizeof *kv);
}

const char *import_kv_get(const struct import_kv *kv, const char *name)
{
    for (size_t i = kv->n; i > 0; i--)
        if (strcmp(kv->keys[i - 1], name) == 0)
            return kv->values[i - 1];
    return NULL;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Trim white space (and CR) on both sides of [*p, *p + *len). */
static void trim(const char **p, size_t *len)
{
    while (*len > 0 && (is_blank(**p) || **p == '\r')) {
        (*p)++;
        (*len)--;
    }
    while (*len > 0 && (is_blank((*p)[*len - 1]) || (*p)[*len - 1] == '\r'))
        (*len)--;
}

/* ---- Postfix ------------------------------------------------------------------------ */

/* Postfix logical lines: a line starting with white space continues the one before;
 * '#' lines (first non-blank) and blank lines are skipped. Calls fn per logical line
 * (joined with single spaces). 0, -1 on budget or fn failure. */
static int postfix_lines(const char *data, size_t len, bool (*fn)(void *, const char *, size_t),
                         void *arg, char **error_r)
{
    if (len > IMPORT_MAX_FILE) {
        import_error(error_r, "file too large (%zu bytes)", len);
        return -1;
    }
    struct buf logical;
    buf_init(&logical, 0);
    bool has_line = false;
    const char *p = data, *end = data + len;
    while (p <= end) {
        const char *nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        const char *stop = nl ? nl : end;
        const char *line = p;
        size_t line_len = (size_t)(stop - p);
        p = stop + 1;
        const char *t = line;
        size_t tlen = line_len;
        trim(&t, &tlen);
        bool is_comment = tlen > 0 && t[0] == '#';
        bool is_continuation = line_len > 0 && is_blank(line[0]) && tlen > 0 && !is_comment;
        if (is_continuation && has_line) {
            if (logical.len + 1 + tlen > IMPORT_MAX_VALUE)
                goto too_long;
            buf_append(&logical, " ", 1);
            buf_append(&logical, t, tlen);
            continue;
        }
        if (tlen == 0 || is_comment || is_continuation)
            continue; /* (a continuation of nothing is ignored, as postconf warns) */
        if (has_line && !fn(arg, logical.data, logical.len))
            goto fail;
        buf_reset(&logical);
        if (tlen > IMPORT_MAX_VALUE)
            goto too_long;
        buf_append(&logical, t, tlen);
        has_line = true;
        if (!nl)
            break;
    }
    if (has_line && !fn(arg, logical.data, logical.len))
        goto fail;
    buf_free(&logical);
    return 0;
too_long:
    import_error(error_r, "a value is longer than %u bytes", IMPORT_MAX_VALUE);
    buf_free(&logical);
    return -1;
fail:
    import_error(error_r, "too many entries (or out of memory)");
    buf_free(&logical);
    return -1;
}

/* "name = value": lines without '=' are ignored (postconf warns about them). */
static bool postconf_line(void *arg, const char *line, size_t len)
{
    const char *eq = memchr(line, '=', len);
    if (!eq)
        return true;
    const char *k = line, *v = eq + 1;
    size_t klen = (size_t)(eq - line), vlen = len - klen - 1;
    trim(&k, &klen);
    trim(&v, &vlen);
    if (klen == 0 || memchr(k, ' ', klen) || memchr(k, '\t', klen))
        return true;
    return kv_add(arg, k, klen, v, vlen);
}

int import_postconf_parse(const char *data, size_t len, struct import_kv *out, char **error_r)
{
    memset(out, 0, sizeof *out);
    int r = postfix_lines(data, len, postconf_line, out, error_r);
    if (r < 0)
        import_kv_free(out);
    return r;
}

/* "key value": key lower-cased (postmap -f is not the default: keys fold). */
static bool postmap_line(void *arg, const char *line, size_t len)
{
    size_t klen = 0;
    while (klen < len && !is_blank(line[klen]))
        klen++;
    const char *v = line + klen;
    size_t vlen = len - klen;
    trim(&v, &vlen);
    struct import_kv *kv = arg;
    if (!kv_add(kv, line, klen, v, vlen))
        return false;
    for (char *c = kv->keys[kv->n - 1]; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return true;
}

int import_postmap_parse(const char *data, size_t len, struct import_kv *out, char **error_r)
{
    memset(out, 0, sizeof *out);
    int r = postfix_lines(data, len, postmap_line, out, error_r);
    if (r < 0)
        import_kv_free(out);
    return r;
}

/* Expand value into b, depth levels deep; false when over budget. */
static bool expand_into(const struct import_kv *kv, const char *value, struct buf *b, int depth)
{
    if (depth > IMPORT_MAX_DEPTH)
        return false;
    for (const char *p = value; *p; p++) {
        if (b->len > IMPORT_MAX_VALUE)
            return false;
        if (*p != '$' || !p[1]) {
            buf_append(b, p, 1);
            continue;
        }
        const char *name = p + 1, *name_end;
        const char *resume;
        if (*name == '{' || *name == '(') {
            char close = *name == '{' ? '}' : ')';
            name_end = strchr(name + 1, close);
            if (!name_end) {
                buf_append(b, p, 1);
                continue;
            }
            resume = name_end;
            name++;
        } else {
            name_end = name;
            while (isalnum((unsigned char)*name_end) || *name_end == '_')
                name_end++;
            if (name_end == name) {
                buf_append(b, p, 1);
                continue;
            }
            resume = name_end - 1;
        }
        char key[128];
        size_t klen = (size_t)(name_end - name);
        const char *v = NULL;
        if (klen < sizeof key && memchr(name, ':', klen) == NULL) {
            memcpy(key, name, klen);
            key[klen] = '\0';
            v = import_kv_get(kv, key);
        }
        if (v) {
            if (!expand_into(kv, v, b, depth + 1))
                return false;
        } else {
            buf_append(b, p, (size_t)(resume - p) + 1); /* unknown: as written */
        }
        p = resume;
    }
    return b->len <= IMPORT_MAX_VALUE;
}

char *import_postconf_expand(const struct import_kv *kv, const char *value)
{
    struct buf b;
    buf_init(&b, 0);
    if (!expand_into(kv, value, &b, 0)) {
        buf_free(&b);
        return NULL;
    }
    return b.data ? buf_steal(&b) : strdup("");
}

char **import_split_list(const char *value, size_t *n_r)
{
    size_t cap = 8, n = 0;
    char **v = calloc(cap + 1, sizeof *v);
    if (!v)
        return NULL;
    const char *p = value;
    while (p && *p) {
        while (*p == ',' || is_blank(*p) || *p == '\r' || *p == '\n')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ',' && !is_blank(*p) && *p != '\r' && *p != '\n')
            p++;
        if (n == cap) {
            cap *= 2;
            char **nv = realloc(v, (cap + 1) * sizeof *nv);
            if (!nv) {
                import_list_free(v);
                return NULL;
            }
            v = nv;
        }
        if (!(v[n] = strndup(start, (size_t)(p - start)))) {
            import_list_free(v);
            return NULL;
        }
        v[++n] = NULL;
    }
    v[n] = NULL;
    if (n_r)
        *n_r = n;
    return v;
}

void import_list_free(char **list)
{
    for (size_t i = 0; list && list[i]; i++)
        free(list[i]);
    free(list);
}

/* ---- Dovecot ------------------------------------------------------------------------ */

int import_doveconf_parse(const char *data, size_t len, struct import_kv *out, char **error_r)
{
    memset(out, 0, sizeof *out);
    if (len > IMPORT_MAX_FILE) {
        import_error(error_r, "file too large (%zu bytes)", len);
        return -1;
    }
    /* the section path: "protocol pop3/passdb/" etc., with the length at each depth */
    struct buf prefix, logical;
    buf_init(&prefix, 0);
    buf_init(&logical, 0);
    size_t depth_len[IMPORT_MAX_DEPTH + 1];
    size_t depth = 0, line_no = 0;
    const char *p = data, *end = data + len;
    while (p < end) {
        /* one logical line: physical lines joined while they end in '\' */
        buf_reset(&logical);
        for (;;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *stop = nl ? nl : end;
            const char *t = p;
            size_t tlen = (size_t)(stop - p);
            p = nl ? nl + 1 : end;
            line_no++;
            trim(&t, &tlen);
            bool is_cont = tlen > 0 && t[tlen - 1] == '\\';
            if (is_cont)
                tlen--;
            trim(&t, &tlen); /* "mailbox \" joins as "mailbox WHERE" */
            if (logical.len + tlen + 1 > IMPORT_MAX_VALUE) {
                import_error(error_r, "line %zu: longer than %u bytes", line_no, IMPORT_MAX_VALUE);
                goto fail;
            }
            if (logical.len > 0 && tlen > 0)
                buf_append(&logical, " ", 1);
            buf_append(&logical, t, tlen);
            if (!is_cont || p >= end)
                break;
        }
        const char *l = logical.data ? logical.data : "";
        size_t llen = logical.len;
        trim(&l, &llen);
        if (llen == 0 || l[0] == '#')
            continue;
        /* doveconf: '#' outside quotes starts a comment anywhere on the line */
        for (size_t i = 0; i < llen; i++) {
            if (l[i] == '"' || l[i] == '\'') {
                char quote = l[i];
                for (i++; i < llen && l[i] != quote; i++)
                    if (l[i] == '\\' && i + 1 < llen)
                        i++;
            } else if (l[i] == '#') {
                llen = i;
                break;
            }
        }
        trim(&l, &llen);
        if (llen == 0)
            continue;
        if (memchr(l, '\0', llen)) {
            import_error(error_r, "line %zu: NUL byte", line_no);
            goto fail;
        }
        if (l[0] == '}') {
            if (depth == 0) {
                import_error(error_r, "line %zu: '}' without a section", line_no);
                goto fail;
            }
            prefix.len = depth_len[--depth];
            continue;
        }
        if (llen > 9 && strncmp(l, "!include", 8) == 0) {
            bool is_try = strncmp(l, "!include_try", 12) == 0;
            const char *path = l + (is_try ? 12 : 8);
            size_t plen = llen - (size_t)(path - l);
            trim(&path, &plen);
            if (plen >= 2 && path[0] == '"' && path[plen - 1] == '"') {
                path++;
                plen -= 2;
            }
            if (out->n_includes >= 256) {
                import_error(error_r, "line %zu: too many includes", line_no);
                goto fail;
            }
            char **ni = realloc(out->includes, (out->n_includes + 1) * sizeof *ni);
            if (!ni)
                goto oom;
            out->includes = ni;
            char *inc = malloc(plen + 2);
            if (!inc)
                goto oom;
            size_t o = 0;
            if (is_try)
                inc[o++] = '?';
            memcpy(inc + o, path, plen);
            inc[o + plen] = '\0';
            out->includes[out->n_includes++] = inc;
            continue;
        }
        if (l[llen - 1] == '{') {
            /* "name [arg] {": a section */
            const char *name = l;
            size_t nlen = llen - 1;
            trim(&name, &nlen);
            if (depth >= IMPORT_MAX_DEPTH) {
                import_error(error_r, "line %zu: sections nested too deep", line_no);
                goto fail;
            }
            depth_len[depth++] = prefix.len;
            /* collapse inner white space to one space: "protocol  pop3" -> "protocol pop3" */
            for (size_t i = 0; i < nlen; i++)
                if (!(is_blank(name[i]) && i > 0 && is_blank(name[i - 1])))
                    buf_append(&prefix, is_blank(name[i]) ? " " : &name[i], 1);
            buf_append(&prefix, "/", 1);
            if (prefix.len > IMPORT_MAX_VALUE) {
                import_error(error_r, "line %zu: section names too long", line_no);
                goto fail;
            }
            continue;
        }
        const char *eq = memchr(l, '=', llen);
        if (!eq)
            continue; /* not a setting (doveconf would refuse it; we only read) */
        const char *k = l, *v = eq + 1;
        size_t klen = (size_t)(eq - l), vlen = llen - klen - 1;
        trim(&k, &klen);
        trim(&v, &vlen);
        if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
            v++;
            vlen -= 2;
        }
        struct buf key;
        buf_init(&key, 0);
        if (prefix.len)
            buf_append(&key, prefix.data, prefix.len);
        buf_append(&key, k, klen);
        bool ok = key.data && kv_add(out, key.data, key.len, v, vlen);
        buf_free(&key);
        if (!ok) {
            import_error(error_r, "line %zu: too many settings (or out of memory)", line_no);
            goto fail;
        }
    }
    if (depth != 0) {
        import_error(error_r, "section not closed at the end of the file");
        goto fail;
    }
    buf_free(&prefix);
    buf_free(&logical);
    return 0;
oom:
    import_error(error_r, "out of memory");
fail:
    buf_free(&prefix);
    buf_free(&logical);
    import_kv_free(out);
    return -1;
}
