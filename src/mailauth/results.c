/*
 * results.c - putting the methods together for one received message, and the
 * Authentication-Results header field (RFC 8601): writing ours, parsing others' (the
 * authserv-id and the method=result list, §2.2), and removing fields that claim to be
 * ours (§5: a forged A-R with our authserv-id must not reach the user).
 */
#include "mailauth/mailauth-private.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- parsing (RFC 8601 §2.2) ---------------------------------------------------------- */

/* Skip CFWS (blanks, folds and nested comments, depth-limited) from *pos. */
static void ar_skip_cfws(const char *v, size_t len, size_t *pos)
{
    size_t i = *pos;
    while (i < len) {
        char c = v[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            i++;
        } else if (c == '(') {
            int depth = 0;
            while (i < len) {
                if (v[i] == '\\' && i + 1 < len) {
                    i += 2;
                    continue;
                }
                if (v[i] == '(' && depth < 64)
                    depth++;
                else if (v[i] == ')' && --depth == 0) {
                    i++;
                    break;
                }
                i++;
            }
        } else {
            break;
        }
    }
    *pos = i;
}

/* A token or quoted-string value at *pos into out (quotes removed). false if none. */
static bool ar_value(const char *v, size_t len, size_t *pos, char *out, size_t size,
                     const char *stops)
{
    size_t i = *pos, o = 0;
    if (i < len && v[i] == '"') {
        i++;
        while (i < len && v[i] != '"') {
            if (v[i] == '\\' && i + 1 < len)
                i++;
            if (o + 1 < size)
                out[o++] = v[i];
            i++;
        }
        if (i >= len)
            return false;
        i++;
    } else {
        while (i < len && !strchr(stops, v[i]) && (unsigned char)v[i] > 32 && v[i] != '(') {
            if (o + 1 < size)
                out[o++] = v[i];
            i++;
        }
        if (i == *pos)
            return false;
    }
    out[o] = '\0';
    *pos = i;
    return true;
}

int mailauth_ar_parse(const char *value, size_t len, struct mailauth_ar *ar)
{
    memset(ar, 0, sizeof *ar);
    size_t pos = 0;
    ar_skip_cfws(value, len, &pos);
    /* ARC-Authentication-Results starts with "i=N;" (RFC 8617 §4.1.1) */
    if (pos + 2 < len && (value[pos] == 'i' || value[pos] == 'I') && value[pos + 1] == '=') {
        pos += 2;
        unsigned inst = 0;
        size_t start = pos;
        while (pos < len && isdigit((unsigned char)value[pos]) && inst < 1000)
            inst = inst * 10 + (unsigned)(value[pos++] - '0');
        if (pos == start)
            return -1;
        ar->instance = inst;
        ar_skip_cfws(value, len, &pos);
        if (pos >= len || value[pos] != ';')
            return -1;
        pos++;
        ar_skip_cfws(value, len, &pos);
    }
    if (!ar_value(value, len, &pos, ar->authserv_id, sizeof ar->authserv_id, ";"))
        return -1;
    ar_skip_cfws(value, len, &pos);
    /* an optional authres-version number */
    if (pos < len && isdigit((unsigned char)value[pos])) {
        while (pos < len && isdigit((unsigned char)value[pos]))
            pos++;
        ar_skip_cfws(value, len, &pos);
    }
    while (pos < len) {
        if (value[pos] != ';')
            return ar->n > 0 || ar->is_none ? 0 : -1; /* trailing junk after the last one */
        pos++;
        ar_skip_cfws(value, len, &pos);
        if (pos >= len)
            break;
        char method[64], result[32];
        if (!ar_value(value, len, &pos, method, sizeof method, "=;/"))
            return -1;
        if (pos < len && value[pos] == '/') { /* method version */
            pos++;
            while (pos < len && isdigit((unsigned char)value[pos]))
                pos++;
        }
        ar_skip_cfws(value, len, &pos);
        if (strcasecmp(method, "none") == 0 && (pos >= len || value[pos] == ';')) {
            ar->is_none = true;
            continue;
        }
        if (pos >= len || value[pos] != '=')
            return -1;
        pos++;
        ar_skip_cfws(value, len, &pos);
        if (!ar_value(value, len, &pos, result, sizeof result, ";"))
            return -1;
        ar_skip_cfws(value, len, &pos);
        struct mailauth_ar_method *m = ar->n < MAILAUTH_AR_METHODS_MAX ? &ar->methods[ar->n] : NULL;
        if (m) {
            snprintf(m->method, sizeof m->method, "%s", method);
            snprintf(m->result, sizeof m->result, "%s", result);
        }
        /* reason= and ptype.property=value pairs */
        while (pos < len && value[pos] != ';') {
            char name[64], val[256];
            if (!ar_value(value, len, &pos, name, sizeof name, "=;"))
                return -1;
            ar_skip_cfws(value, len, &pos);
            if (pos >= len || value[pos] != '=')
                return -1;
            pos++;
            ar_skip_cfws(value, len, &pos);
            if (!ar_value(value, len, &pos, val, sizeof val, ";"))
                return -1;
            ar_skip_cfws(value, len, &pos);
            if (m && m->n_props < MAILAUTH_AR_PROPS_MAX) {
                snprintf(m->props[m->n_props].name, sizeof m->props[0].name, "%s", name);
                snprintf(m->props[m->n_props].value, sizeof m->props[0].value, "%s", val);
                m->n_props++;
            }
        }
        if (m)
            ar->n++;
    }
    return 0;
}

/* ---- forged fields --------------------------------------------------------------------- */

int mailauth_ar_remove_ours(const char *h, size_t len, const struct mailauth_header *fields,
                            size_t n, const char *authserv_id, struct buf *out)
{
    int removed = 0;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const struct mailauth_header *f = &fields[i];
        if (f->name_len != 22 || strncasecmp(h + f->start, "Authentication-Results", 22) != 0)
            continue;
        const char *colon = memchr(h + f->start, ':', f->len);
        size_t vl = f->len - (size_t)(colon + 1 - (h + f->start));
        char id[256] = "";
        struct mailauth_ar *ar = malloc(sizeof *ar);
        bool is_ours = false;
        if (ar) {
            /* an unparsable field is kept: only a field that names us is ours to judge */
            if (mailauth_ar_parse(colon + 1, vl, ar) == 0)
                snprintf(id, sizeof id, "%s", ar->authserv_id);
            free(ar);
        }
        is_ours = id[0] && strcasecmp(id, authserv_id) == 0;
        if (!is_ours)
            continue;
        buf_append(out, h + pos, f->start - pos);
        pos = f->start + f->len;
        removed++;
    }
    buf_append(out, h + pos, len - pos);
    return removed;
}

/* ---- writing (RFC 8601 §2.2) ----------------------------------------------------------- */

/* Append a pvalue: as it is when it is a plain token or local@domain, else quoted. */
static void ar_put_value(struct buf *b, const char *v)
{
    bool is_plain = v[0] != '\0';
    for (const char *p = v; *p && is_plain; p++) {
        unsigned char c = (unsigned char)*p;
        is_plain = c > 32 && c < 127 && !strchr("()<>,;:\\\"[]= ", c);
    }
    if (is_plain) {
        buf_append_str(b, v);
        return;
    }
    buf_append_byte(b, '"');
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            buf_append_byte(b, '\\');
        buf_append_byte(b, c < 32 || c == 127 ? '?' : (char)c);
    }
    buf_append_byte(b, '"');
}

/* Append " (text)" as a comment, with anything that could end or nest it removed. */
static void ar_put_comment(struct buf *b, const char *text)
{
    if (!text || !text[0])
        return;
    buf_append_str(b, " (");
    for (const char *p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        buf_append_byte(b, c < 32 || c > 126 || c == '(' || c == ')' || c == '\\' ? '?' : (char)c);
    }
    buf_append_byte(b, ')');
}

bool mailauth_ar_format(const char *authserv_id, const struct mailauth_verdict *v,
                        struct buf *out)
{
    buf_append_str(out, "Authentication-Results: ");
    buf_append_str(out, authserv_id);
    /* dkim: one resinfo per signature (RFC 8601 §2.7.1, header.b from RFC 6008) */
    if (v->n_dkim == 0)
        buf_append_str(out, ";\r\n\tdkim=none");
    for (size_t i = 0; i < v->n_dkim; i++) {
        const struct mailauth_dkim_result *d = &v->dkim[i];
        buf_printf(out, ";\r\n\tdkim=%s", mailauth_result_name(d->result));
        if (d->result == MAILAUTH_PASS && d->key_bits)
            buf_printf(out, " (%u-bit key%s)", d->key_bits, d->reason[0] ? "; testing" : "");
        else if (d->result != MAILAUTH_PASS)
            ar_put_comment(out, d->reason);
        if (d->domain[0]) {
            buf_append_str(out, " header.d=");
            ar_put_value(out, d->domain);
        }
        if (d->identity[0]) {
            buf_append_str(out, " header.i=");
            ar_put_value(out, d->identity);
        }
        if (d->selector[0]) {
            buf_append_str(out, " header.s=");
            ar_put_value(out, d->selector);
        }
        if (d->algorithm && d->selector[0])
            buf_printf(out, " header.a=%s", d->algorithm);
        if (d->b_text[0]) {
            buf_append_str(out, " header.b=");
            ar_put_value(out, d->b_text);
        }
    }
    if (v->has_spf) {
        const struct mailauth_spf_result *s = &v->spf;
        buf_printf(out, ";\r\n\tspf=%s", mailauth_result_name(s->result));
        char comment[400];
        if (s->result == MAILAUTH_TEMPERROR || s->result == MAILAUTH_PERMERROR)
            snprintf(comment, sizeof comment, "%s", s->reason);
        else
            snprintf(comment, sizeof comment, "%s%s%.64s", s->domain,
                     s->mechanism[0] ? ": matched " : "", s->mechanism);
        ar_put_comment(out, comment);
        if (s->is_helo) {
            buf_append_str(out, " smtp.helo=");
            ar_put_value(out, v->helo[0] ? v->helo : s->domain);
        } else {
            buf_append_str(out, " smtp.mailfrom=");
            ar_put_value(out, v->mail_from);
        }
    }
    /* RFC 8617 §10.1: the "arc" method */
    buf_printf(out, ";\r\n\tarc=%s", mailauth_result_name(v->arc.result));
    if (v->arc.result == MAILAUTH_PASS)
        buf_printf(out, " (i=%u, d=%s)", v->arc.n_sets, v->arc.domain);
    else if (v->arc.result != MAILAUTH_NONE)
        ar_put_comment(out, v->arc.reason);
    if (v->has_dmarc) {
        const struct mailauth_dmarc_result *d = &v->dmarc;
        buf_printf(out, ";\r\n\tdmarc=%s", mailauth_result_name(d->result));
        if (d->has_record)
            buf_printf(out, " (p=%s dis=%s%s)", mailauth_dmarc_policy_name(d->policy),
                       mailauth_dmarc_policy_name(d->disposition),
                       d->is_sampled_out ? " pct" : "");
        else
            ar_put_comment(out, d->reason);
        if (d->header_from[0]) {
            buf_append_str(out, " header.from=");
            ar_put_value(out, d->header_from);
        }
    }
    return buf_append_str(out, "\r\n");
}

/* ---- the whole check ------------------------------------------------------------------- */

int mailauth_check_message(const struct mailauth_dns *dns, const struct mailauth_message *m,
                           const struct mailauth_check_args *a, struct mailauth_verdict *v)
{
    memset(v, 0, sizeof *v);
    snprintf(v->helo, sizeof v->helo, "%s", a->helo ? a->helo : "");
    snprintf(v->mail_from, sizeof v->mail_from, "%s", a->mail_from ? a->mail_from : "");
    if (a->spf) {
        v->spf = *a->spf;
        v->has_spf = true;
    } else if (a->ip) {
        if (mailauth_spf_check(dns, a->ip, a->helo, a->mail_from, a->receiver, a->now, &v->spf) < 0)
            return -1;
        v->has_spf = true;
    }
    if (mailauth_dkim_verify(m, dns, a->now, v->dkim, &v->n_dkim) < 0)
        return -1;
    if (mailauth_arc_verify(m, dns, &v->arc) < 0)
        return -1;
    struct mailauth_parsed p;
    const char *err;
    if (mailauth_parsed_read(m, &p, &err) < 0) {
        mailauth_parsed_free(&p);
        return -1;
    }
    char from[254] = "";
    if (!mailauth_from_domain(p.header.data, p.fields, p.n_fields, from, sizeof from))
        from[0] = '\0';
    mailauth_parsed_free(&p);
    mailauth_dmarc_check(dns, from, v->has_spf ? &v->spf : NULL, v->dkim, v->n_dkim, &v->dmarc);
    v->has_dmarc = true;
    return 0;
}
