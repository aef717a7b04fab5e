/*
 * parse.c - SMTP command-line parsing: verb table, MAIL/RCPT paths and ESMTP parameters,
 * BDAT and AUTH arguments (see parse.h).
 *
 * Everything here is a pure function over a length-counted line: no allocation, every
 * loop bounded by the line length, which the session caps at SMTP_AUTH_LINE_MAX.
 * Replies use the wording Postfix users know (seeds 000-004).
 */
#include "smtp/parse.h"
#include "queue/queue.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct verb_entry {
    const char *name;
    enum smtp_verb verb;
    const char *stat_name;
};

/* The verb table. Matching is case-insensitive (RFC 5321 §2.4: verbs are not case
 * sensitive; seed 003 notes lowercase works). */
static const struct verb_entry verb_table[] = {
    {"HELO", SMTP_VERB_HELO, "helo"},
    {"EHLO", SMTP_VERB_EHLO, "ehlo"},
    {"MAIL", SMTP_VERB_MAIL, "mail"},
    {"RCPT", SMTP_VERB_RCPT, "rcpt"},
    {"DATA", SMTP_VERB_DATA, "data"},
    {"BDAT", SMTP_VERB_BDAT, "bdat"},
    {"RSET", SMTP_VERB_RSET, "rset"},
    {"NOOP", SMTP_VERB_NOOP, "noop"},
    {"QUIT", SMTP_VERB_QUIT, "quit"},
    {"VRFY", SMTP_VERB_VRFY, "vrfy"},
    {"EXPN", SMTP_VERB_EXPN, "expn"},
    {"HELP", SMTP_VERB_HELP, "help"},
    {"STARTTLS", SMTP_VERB_STARTTLS, "starttls"},
    {"AUTH", SMTP_VERB_AUTH, "auth"},
    {"ETRN", SMTP_VERB_ETRN, "etrn"},
    {"XCLIENT", SMTP_VERB_XCLIENT, "xclient"},
    {"LHLO", SMTP_VERB_LHLO, "lhlo"},
    {"BURL", SMTP_VERB_BURL, "burl"},
    /* Postfix drops clients that speak HTTP to the mail port (cross-protocol attacks). */
    {"GET", SMTP_VERB_NON_SMTP, "unknown"},
    {"POST", SMTP_VERB_NON_SMTP, "unknown"},
    {"PUT", SMTP_VERB_NON_SMTP, "unknown"},
    {"HEAD", SMTP_VERB_NON_SMTP, "unknown"},
    {"CONNECT", SMTP_VERB_NON_SMTP, "unknown"},
};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static char ascii_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

/* Case-insensitive compare of a length-counted token with a NUL-terminated word. */
static bool token_equals_ci(const char *s, size_t len, const char *word)
{
    size_t wl = strlen(word);
    if (len != wl)
        return false;
    for (size_t i = 0; i < len; i++)
        if (ascii_upper(s[i]) != word[i])
            return false;
    return true;
}

static bool prefix_equals_ci(const char *s, size_t len, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (len < pl)
        return false;
    for (size_t i = 0; i < pl; i++)
        if (ascii_upper(s[i]) != prefix[i])
            return false;
    return true;
}

bool smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd_r)
{
    size_t i = 0;
    /* Leading blanks are tolerated (telnet users). */
    while (i < len && is_blank(line[i]))
        i++;
    if (i == len)
        return false;
    size_t vstart = i;
    while (i < len && !is_blank(line[i]))
        i++;
    size_t vlen = i - vstart;
    while (i < len && is_blank(line[i]))
        i++;
    size_t end = len;
    while (end > i && is_blank(line[end - 1]))
        end--;

    cmd_r->verb = SMTP_VERB_UNKNOWN;
    cmd_r->name = "";
    cmd_r->arg = line + i;
    cmd_r->arg_len = end - i;
    for (size_t k = 0; k < sizeof verb_table / sizeof verb_table[0]; k++) {
        if (token_equals_ci(line + vstart, vlen, verb_table[k].name)) {
            cmd_r->verb = verb_table[k].verb;
            cmd_r->name = verb_table[k].name;
            break;
        }
    }
    return true;
}

const char *smtp_verb_name(enum smtp_verb verb)
{
    for (size_t k = 0; k < sizeof verb_table / sizeof verb_table[0]; k++)
        if (verb_table[k].verb == verb)
            return verb_table[k].name;
    return "UNKNOWN";
}

const char *smtp_verb_stat_name(enum smtp_verb verb)
{
    for (size_t k = 0; k < sizeof verb_table / sizeof verb_table[0]; k++)
        if (verb_table[k].verb == verb)
            return verb_table[k].stat_name;
    return "unknown";
}

/* Parse a decimal number of at most 20 digits without overflow. */
static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* RFC 5321 §4.1.2 esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"),
 * esmtp-value = 1*(%d33-60 / %d62-126) (printable, no "=" and no space). */
static bool param_syntax_ok(const char *kw, size_t kwlen, const char *val, size_t vlen,
                            bool has_value)
{
    if (kwlen == 0 || kwlen > 64)
        return false;
    for (size_t i = 0; i < kwlen; i++) {
        char c = kw[i];
        bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && !(i > 0 && c == '-'))
            return false;
    }
    if (has_value) {
        if (vlen == 0)
            return false;
        for (size_t i = 0; i < vlen; i++) {
            unsigned char c = (unsigned char)val[i];
            /* RFC 6531 §3.3 widens esmtp-value to UTF-8; accept bytes >= 0x80 too. */
            if (c < 33 || c == '=' || c == 127)
                return false;
        }
    }
    return true;
}

/* Iterate "KEY[=VALUE]" words. Returns false at the end. */
static bool next_param(const char **p, const char *end, const char **kw, size_t *kwlen,
                       const char **val, size_t *vlen, bool *has_value)
{
    const char *s = *p;
    while (s < end && is_blank(*s))
        s++;
    if (s == end)
        return false;
    const char *w = s;
    while (s < end && !is_blank(*s))
        s++;
    *p = s;
    const char *eq = memchr(w, '=', (size_t)(s - w));
    *kw = w;
    if (eq) {
        *kwlen = (size_t)(eq - w);
        *val = eq + 1;
        *vlen = (size_t)(s - eq - 1);
        *has_value = true;
    } else {
        *kwlen = (size_t)(s - w);
        *val = s;
        *vlen = 0;
        *has_value = false;
    }
    return true;
}

/* Format "<code> <text>" into the caller's reply buffer. */
static bool reply(char *out, size_t size, const char *text)
{
    if (size)
        snprintf(out, size, "%s", text);
    return false;
}

/* Skip the "FROM:" / "TO:" keyword. Postfix also accepts a blank before the colon
 * ("MAIL FROM :<a>") which broken clients send; so do we. */
static bool skip_keyword(const char **s, size_t *len, const char *keyword)
{
    size_t kl = strlen(keyword);
    if (!prefix_equals_ci(*s, *len, keyword))
        return false;
    const char *p = *s + kl;
    size_t n = *len - kl;
    while (n > 0 && is_blank(*p)) {
        p++;
        n--;
    }
    if (n == 0 || *p != ':')
        return false;
    *s = p + 1;
    *len = n - 1;
    return true;
}

bool smtp_parse_mail(const char *arg, size_t len, uint64_t max_size, struct addr *from_r,
                     struct smtp_mail_params *params_r, char *reply_r, size_t reply_size)
{
    memset(params_r, 0, sizeof *params_r);
    const char *s = arg;
    size_t n = len;
    if (!skip_keyword(&s, &n, "FROM"))
        return reply(reply_r, reply_size, "501 5.5.4 Syntax: MAIL FROM:<address>");
    size_t params_off = 0;
    /* RFC 5321 §4.1.2 paths; addr_parse_path tolerates seeds 000/004 (no brackets). */
    if (!addr_parse_path(s, n, true, from_r, &params_off))
        return reply(reply_r, reply_size, "501 5.1.7 Bad sender address syntax");
    if (params_off > n)
        params_off = n;
    const char *p = s + params_off, *end = s + n;
    const char *kw, *val;
    size_t kwlen, vlen;
    bool has_value;
    while (next_param(&p, end, &kw, &kwlen, &val, &vlen, &has_value)) {
        if (!param_syntax_ok(kw, kwlen, val, vlen, has_value))
            return reply(reply_r, reply_size, "501 5.5.4 Bad MAIL parameter syntax");
        if (token_equals_ci(kw, kwlen, "SIZE") && has_value) {
            /* RFC 1870 §6: SIZE=<decimal octets>. */
            if (!parse_u64(val, vlen, &params_r->size))
                return reply(reply_r, reply_size, "501 5.5.4 Bad message size syntax");
            params_r->has_size = true;
            if (max_size && params_r->size > max_size)
                return reply(reply_r, reply_size, "552 5.3.4 Message size exceeds fixed limit");
        } else if (token_equals_ci(kw, kwlen, "BODY") && has_value) {
            /* RFC 6152: BODY=7BIT or BODY=8BITMIME. BINARYMIME is not advertised. */
            if (token_equals_ci(val, vlen, "8BITMIME"))
                params_r->body = SMTP_BODY_8BITMIME;
            else if (token_equals_ci(val, vlen, "7BIT"))
                params_r->body = SMTP_BODY_7BIT;
            else
                return reply(reply_r, reply_size, "501 5.5.4 Unsupported BODY parameter");
        } else if (token_equals_ci(kw, kwlen, "SMTPUTF8") && !has_value) {
            params_r->is_smtputf8 = true; /* RFC 6531 §3.4 */
        } else if (token_equals_ci(kw, kwlen, "RET") && has_value) {
            /* RFC 3461 §4.3: RET=FULL or RET=HDRS, at most once */
            if (params_r->dsn_ret)
                return reply(reply_r, reply_size, "501 5.5.4 Duplicate RET parameter");
            if (token_equals_ci(val, vlen, "FULL"))
                params_r->dsn_ret = 1;
            else if (token_equals_ci(val, vlen, "HDRS"))
                params_r->dsn_ret = 2;
            else
                return reply(reply_r, reply_size, "501 5.5.4 Bad RET parameter syntax");
        } else if (token_equals_ci(kw, kwlen, "ENVID") && has_value) {
            /* RFC 3461 §4.4: xtext, at most 100 characters (decoded, printable ASCII) */
            if (params_r->envid[0])
                return reply(reply_r, reply_size, "501 5.5.4 Duplicate ENVID parameter");
            if (vlen == 0 ||
                !queue_xtext_decode(val, vlen, params_r->envid, sizeof params_r->envid))
                return reply(reply_r, reply_size, "501 5.5.4 Bad ENVID parameter syntax");
        } else if (token_equals_ci(kw, kwlen, "AUTH") && has_value) {
            /* RFC 4954 §5: AUTH=<mailbox> from a trusted relay; we accept and ignore
             * it (we never relay the claim further), which the RFC permits. */
        } else {
            char buf[SMTP_REPLY_MAX];
            int kl = kwlen > 64 ? 64 : (int)kwlen;
            snprintf(buf, sizeof buf, "555 5.5.4 Unsupported option: %.*s", kl, kw);
            return reply(reply_r, reply_size, buf);
        }
    }
    /* RFC 6531 §3.4: a non-ASCII address needs SMTPUTF8. */
    if (!params_r->is_smtputf8) {
        for (const char *c = from_r->local; *c; c++)
            if ((unsigned char)*c >= 0x80)
                return reply(reply_r, reply_size, "553 5.6.7 Sender address requires SMTPUTF8");
        for (const char *c = from_r->domain; *c; c++)
            if ((unsigned char)*c >= 0x80)
                return reply(reply_r, reply_size, "553 5.6.7 Sender address requires SMTPUTF8");
    }
    return true;
}

/* RFC 3461 §4.2: ORCPT=addr-type ";" xtext; addr-type is an atom ("rfc822", "utf-8"). */
static bool parse_orcpt(const char *val, size_t vlen, char *out, size_t size)
{
    const char *semi = memchr(val, ';', vlen);
    if (!semi || semi == val)
        return false;
    size_t tl = (size_t)(semi - val);
    if (tl > 32 || tl + 2 > size)
        return false;
    for (size_t i = 0; i < tl; i++) {
        char c = val[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
        out[i] = c;
    }
    out[tl] = ';';
    size_t rest = vlen - tl - 1;
    if (rest == 0)
        return false;
    return queue_xtext_decode(semi + 1, rest, out + tl + 1, size - tl - 1);
}

bool smtp_parse_rcpt(const char *arg, size_t len, struct addr *to_r, char *reply_r,
                     size_t reply_size)
{
    return smtp_parse_rcpt_dsn(arg, len, to_r, NULL, reply_r, reply_size);
}

bool smtp_parse_rcpt_dsn(const char *arg, size_t len, struct addr *to_r,
                         struct smtp_rcpt_params *params_r, char *reply_r, size_t reply_size)
{
    if (params_r)
        memset(params_r, 0, sizeof *params_r);
    const char *s = arg;
    size_t n = len;
    if (!skip_keyword(&s, &n, "TO"))
        return reply(reply_r, reply_size, "501 5.5.4 Syntax: RCPT TO:<address>");
    size_t params_off = 0;
    if (!addr_parse_path(s, n, false, to_r, &params_off) || to_r->is_null)
        return reply(reply_r, reply_size, "501 5.1.3 Bad recipient address syntax");
    if (params_off > n)
        params_off = n;
    const char *p = s + params_off, *end = s + n;
    const char *kw, *val;
    size_t kwlen, vlen;
    bool has_value;
    bool has_notify = false;
    while (next_param(&p, end, &kw, &kwlen, &val, &vlen, &has_value)) {
        if (params_r && !param_syntax_ok(kw, kwlen, val, vlen, has_value))
            return reply(reply_r, reply_size, "501 5.5.4 Bad RCPT parameter syntax");
        if (params_r && token_equals_ci(kw, kwlen, "NOTIFY") && has_value) {
            /* RFC 3461 §4.1 */
            if (has_notify || !queue_notify_parse(val, vlen, &params_r->notify))
                return reply(reply_r, reply_size, "501 5.5.4 Bad NOTIFY parameter syntax");
            has_notify = true;
            continue;
        }
        if (params_r && token_equals_ci(kw, kwlen, "ORCPT") && has_value) {
            if (params_r->orcpt[0] ||
                !parse_orcpt(val, vlen, params_r->orcpt, sizeof params_r->orcpt))
                return reply(reply_r, reply_size, "501 5.5.4 Bad ORCPT parameter syntax");
            continue;
        }
        char buf[SMTP_REPLY_MAX];
        int kl = kwlen > 64 ? 64 : (int)kwlen;
        snprintf(buf, sizeof buf, "555 5.5.4 Unsupported option: %.*s", kl, kw);
        return reply(reply_r, reply_size, buf);
    }
    return true;
}

bool smtp_parse_bdat(const char *arg, size_t len, uint64_t *size_r, bool *is_last_r)
{
    size_t i = 0;
    while (i < len && arg[i] >= '0' && arg[i] <= '9')
        i++;
    if (!parse_u64(arg, i, size_r))
        return false;
    size_t j = i;
    while (j < len && is_blank(arg[j]))
        j++;
    if (j == len) {
        *is_last_r = false;
        return true;
    }
    if (j == i) /* "BDAT 10LAST" */
        return false;
    if (!token_equals_ci(arg + j, len - j, "LAST"))
        return false;
    *is_last_r = true;
    return true;
}

bool smtp_parse_burl(const char *arg, size_t len, const char **url_r, size_t *url_len_r,
                     bool *is_last_r)
{
    size_t i = 0;
    while (i < len && !is_blank(arg[i]))
        i++;
    if (i == 0)
        return false;
    *url_r = arg;
    *url_len_r = i;
    while (i < len && is_blank(arg[i]))
        i++;
    *is_last_r = false;
    if (i == len)
        return true;
    if (!token_equals_ci(arg + i, len - i, "LAST"))
        return false;
    *is_last_r = true;
    return true;
}

bool smtp_parse_auth(const char *arg, size_t len, char mech_r[21], const char **initial_r,
                     size_t *initial_len_r)
{
    size_t i = 0;
    while (i < len && !is_blank(arg[i]))
        i++;
    /* RFC 4422 §3.1: mechanism names are 1-20 of [A-Z0-9-_]. */
    if (i == 0 || i > 20)
        return false;
    for (size_t k = 0; k < i; k++) {
        char c = ascii_upper(arg[k]);
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
        mech_r[k] = c;
    }
    mech_r[i] = '\0';
    while (i < len && is_blank(arg[i]))
        i++;
    if (i == len) {
        *initial_r = NULL;
        *initial_len_r = 0;
        return true;
    }
    const char *ir = arg + i;
    size_t irlen = len - i;
    for (size_t k = 0; k < irlen; k++)
        if (is_blank(ir[k]))
            return false; /* one base64 word only */
    *initial_r = ir;
    *initial_len_r = irlen;
    return true;
}

bool smtp_parse_helo(const char *arg, size_t len, char *out, size_t size)
{
    size_t i = 0;
    while (i < len && !is_blank(arg[i]))
        i++;
    /* RFC 5321 §4.1.1.1: one domain or address literal; we take the first word and
     * accept any printable ASCII (clients send "localhost", "[1.2.3.4]", bare names). */
    if (i == 0 || i > 255 || i >= size)
        return false;
    for (size_t k = 0; k < i; k++) {
        unsigned char c = (unsigned char)arg[k];
        if (c < 33 || c > 126)
            return false;
    }
    memcpy(out, arg, i);
    out[i] = '\0';
    return true;
}

/* ---- XCLIENT ---------------------------------------------------------------------------- */

/* One attribute value: xtext-decoded into out, "[UNAVAILABLE]"/"[TEMPUNAVAIL]" as "". */
static bool xclient_value(const char *v, size_t vlen, char *out, size_t size)
{
    if ((vlen == 13 && memcmp(v, "[UNAVAILABLE]", 13) == 0) ||
        (vlen == 12 && memcmp(v, "[TEMPUNAVAIL]", 12) == 0)) {
        out[0] = '\0';
        return true;
    }
    if (!queue_xtext_decode(v, vlen, out, size))
        return false;
    for (const char *p = out; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

bool smtp_parse_xclient(const char *arg, size_t len, struct smtp_xclient *x_r, char *reply_r,
                        size_t reply_size)
{
    memset(x_r, 0, sizeof *x_r);
    size_t i = 0, n_attrs = 0;
    while (i < len) {
        while (i < len && is_blank(arg[i]))
            i++;
        if (i >= len)
            break;
        size_t start = i;
        while (i < len && !is_blank(arg[i]))
            i++;
        const char *tok = arg + start;
        size_t tlen = i - start;
        const char *eq = memchr(tok, '=', tlen);
        if (!eq || eq == tok || ++n_attrs > 16) {
            snprintf(reply_r, reply_size, "501 5.5.4 Bad XCLIENT attribute syntax");
            return false;
        }
        size_t klen = (size_t)(eq - tok);
        const char *v = eq + 1;
        size_t vlen = tlen - klen - 1;
        bool ok = true;
        char tmp[64];
        if (token_equals_ci(tok, klen, "ADDR")) {
            ok = xclient_value(v, vlen, tmp, sizeof tmp);
            const char *ip = tmp;
            if (ok && strncasecmp(ip, "IPV6:", 5) == 0)
                ip += 5;
            unsigned char bin[16];
            if (ok && ip[0])
                ok = inet_pton(AF_INET, ip, bin) == 1 || inet_pton(AF_INET6, ip, bin) == 1;
            if (ok)
                snprintf(x_r->addr, sizeof x_r->addr, "%s", ip);
        } else if (token_equals_ci(tok, klen, "NAME")) {
            ok = xclient_value(v, vlen, x_r->name, sizeof x_r->name);
        } else if (token_equals_ci(tok, klen, "HELO")) {
            ok = xclient_value(v, vlen, x_r->helo, sizeof x_r->helo);
        } else if (token_equals_ci(tok, klen, "LOGIN")) {
            ok = xclient_value(v, vlen, x_r->login, sizeof x_r->login);
        } else if (token_equals_ci(tok, klen, "PROTO")) {
            ok = xclient_value(v, vlen, tmp, sizeof tmp);
            if (ok && strcasecmp(tmp, "SMTP") == 0)
                x_r->proto = 1;
            else if (ok && strcasecmp(tmp, "ESMTP") == 0)
                x_r->proto = 2;
            else if (ok && tmp[0])
                ok = false;
        }
        if (!ok) {
            snprintf(reply_r, reply_size, "501 5.5.4 Bad %.*s syntax", (int)(klen > 16 ? 16 : klen),
                     tok);
            return false;
        }
    }
    if (n_attrs == 0) {
        snprintf(reply_r, reply_size, "501 5.5.4 Syntax: XCLIENT attribute=value...");
        return false;
    }
    return true;
}
