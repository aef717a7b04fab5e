/*
 * spf.c - Sender Policy Framework, RFC 7208: check_host() over the DNS interface.
 *
 * Budgets (§4.6.4, §11.1): at most 10 terms that cause DNS lookups (include, a, mx, ptr,
 * exists, redirect), at most 2 void lookups, at most 10 address lookups per mx and 10
 * names per ptr, 10 levels of include/redirect (implied by the term limit), records of at
 * most MAILAUTH_DNS_RR_MAX octets, 64 terms per record, and an overall deadline of 20 s
 * (then temperror). The whole record is parsed before any term is evaluated, so a syntax
 * error anywhere is a permerror (§4.6).
 */
/* Explanations and log texts are deliberately cut to their fixed buffers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "mailauth/mailauth-private.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SPF_TERMS_MAX     64
#define SPF_DNS_TERMS_MAX 10 /* §4.6.4 */
#define SPF_VOID_MAX      2  /* §4.6.4 */
#define SPF_ADDRS_MAX     10 /* per mx, §4.6.4 */
#define SPF_PTR_MAX       10 /* names per ptr, §4.6.4 */
#define SPF_DEADLINE_MS   20000
#define SPF_EXPAND_MAX    1024
/* Every query of one check, %{p} and exp= included: the term limit bounds the mechanisms,
 * this bounds the rest (10 mx mechanisms of 10 hosts with 2 lookups each stay below). */
#define SPF_QUERIES_MAX   250

struct spf_ctx {
    const struct mailauth_dns *dns;
    int family; /* 4 or 6 */
    unsigned char ip[16];
    char ip_text[64];
    char sender[512]; /* local@domain (local "postmaster" when empty) */
    char local[256];
    char sender_domain[254];
    const char *helo;
    const char *receiver;
    int64_t now;
    int n_dns_terms, n_void;
    unsigned n_queries; /* every lookup, whatever caused it (SPF_QUERIES_MAX) */
    bool has_ptr_names; /* the validated PTR names below were looked up (once per check) */
    size_t n_ptr_names;
    char ptr_names[SPF_PTR_MAX][256];
    uint64_t deadline;
    bool is_timed_out;
    struct mailauth_dns_answer *ans; /* scratch for one lookup at a time */
    char explanation[256];
    char mechanism[64];
};

/* ---- small helpers ------------------------------------------------------------------- */

/* DNS lookup with the deadline; the answer lands in c->ans. */
static enum mailauth_dns_status spf_lookup(struct spf_ctx *c, const char *name, int type)
{
    if (util_now_ms() > c->deadline || ++c->n_queries > SPF_QUERIES_MAX) {
        c->is_timed_out = true;
        return MAILAUTH_DNS_TEMPFAIL;
    }
    return c->dns->lookup(c->dns->ctx, name, type, c->ans);
}

/* RFC 7208 §4.3 / §7.3: a usable domain name: labels of 1..63 octets, at most 253 in all,
 * at least two labels. */
static bool spf_domain_is_valid(const char *d)
{
    size_t len = strlen(d);
    if (len == 0 || len > 253)
        return false;
    size_t label = 0, labels = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || d[i] == '.') {
            if (label == 0)
                return i == len && i > 0 && labels > 0; /* a trailing dot is fine */
            if (label > 63)
                return false;
            labels++;
            label = 0;
        } else {
            label++;
        }
    }
    return labels >= 2;
}

/* alphanum toplabel of §4.6.1 (domain-end): not all digits, no leading/trailing '-'. */
static bool spf_is_toplabel(const char *s, size_t len)
{
    if (len == 0 || s[0] == '-' || s[len - 1] == '-')
        return false;
    bool has_alpha = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isalpha(ch))
            has_alpha = true;
        else if (!isdigit(ch) && ch != '-')
            return false;
    }
    return has_alpha;
}

/* ---- macros (§7) ---------------------------------------------------------------------- */

static bool is_macro_letter(char ch, bool is_exp)
{
    ch = (char)tolower((unsigned char)ch);
    if (strchr("slodiphv", ch))
        return true;
    return is_exp && strchr("crt", ch);
}

/* Syntax check of a macro-string (domain-spec or explain-string). */
static bool spf_macro_syntax(const char *s, size_t len, bool is_exp)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch != '%') {
            if (ch < 0x21 || ch > 0x7e)
                return is_exp && ch == ' '; /* explain strings may hold spaces */
            continue;
        }
        if (++i >= len)
            return false;
        if (s[i] == '%' || s[i] == '_' || s[i] == '-')
            continue;
        if (s[i] != '{' || ++i >= len || !is_macro_letter(s[i], is_exp))
            return false;
        i++;
        size_t digits = 0;
        unsigned value = 0;
        while (i < len && isdigit((unsigned char)s[i])) {
            value = value * 10 + (unsigned)(s[i] - '0');
            digits++;
            i++;
        }
        if (digits > 3 || (digits > 0 && value == 0))
            return false; /* §7.1: keeping zero parts makes no name */
        if (i < len && (s[i] == 'r' || s[i] == 'R'))
            i++;
        while (i < len && strchr(".-+,/_=", s[i]))
            i++;
        if (i >= len || s[i] != '}')
            return false;
    }
    return true;
}

/* A domain-spec (§4.6.1): macro-string ending in a macro-expand or "." toplabel. */
static bool spf_domain_spec_syntax(const char *s, size_t len)
{
    if (len == 0 || !spf_macro_syntax(s, len, false))
        return false;
    if (s[len - 1] == '.')
        len--; /* a trailing dot is allowed */
    if (len == 0)
        return false;
    if (s[len - 1] == '}')
        return true;
    if (len >= 2 && s[len - 2] == '%')
        return true; /* "%%", "%_", "%-" end in a macro-expand too */
    const char *dot = NULL;
    for (size_t i = len; i-- > 0;)
        if (s[i] == '.') {
            dot = s + i;
            break;
        }
    if (!dot)
        return false;
    return spf_is_toplabel(dot + 1, (size_t)(s + len - (dot + 1)));
}

/* The %{p} value: a validated name of the client IP (§5.5), or "unknown". */
static void spf_validated_ptr(struct spf_ctx *c, const char *target, char *out, size_t size);

/* The value of macro letter ch (lower case) for domain d. */
static void spf_macro_value(struct spf_ctx *c, char ch, const char *d, char *out, size_t size)
{
    switch (ch) {
    case 's':
        snprintf(out, size, "%s", c->sender);
        break;
    case 'l':
        snprintf(out, size, "%s", c->local);
        break;
    case 'o':
        snprintf(out, size, "%s", c->sender_domain);
        break;
    case 'd':
        snprintf(out, size, "%s", d);
        break;
    case 'i':
        if (c->family == 4) {
            snprintf(out, size, "%s", c->ip_text);
        } else {
            /* §7.3: IPv6 as dot-separated nibbles (upper-case hex digits, as the
             * RFC 7208 test suite and pyspf write them; DNS ignores the case) */
            size_t o = 0;
            for (int k = 0; k < 16 && o + 4 < size; k++) {
                o += (size_t)snprintf(out + o, size - o, "%s%X.%X", k ? "." : "", c->ip[k] >> 4,
                                      c->ip[k] & 15);
            }
        }
        break;
    case 'p':
        spf_validated_ptr(c, d, out, size);
        break;
    case 'v':
        snprintf(out, size, "%s", c->family == 4 ? "in-addr" : "ip6");
        break;
    case 'h':
        snprintf(out, size, "%s", c->helo && c->helo[0] ? c->helo : "unknown");
        break;
    case 'c':
        snprintf(out, size, "%s", c->ip_text);
        break;
    case 'r':
        snprintf(out, size, "%s", c->receiver && c->receiver[0] ? c->receiver : "unknown");
        break;
    case 't':
        snprintf(out, size, "%lld", (long long)c->now);
        break;
    default:
        out[0] = '\0';
    }
}

/* Expand macro-string s[len] for domain d into out (§7.3). false if it does not fit or
 * has bad syntax. */
static bool spf_expand(struct spf_ctx *c, const char *s, size_t len, const char *d, bool is_exp,
                       char *out, size_t size)
{
    size_t o = 0;
#define PUT(ch)                                                                            \
    do {                                                                                   \
        if (o + 1 >= size)                                                                 \
            return false;                                                                  \
        out[o++] = (ch);                                                                   \
    } while (0)
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            PUT(s[i]);
            continue;
        }
        if (++i >= len)
            return false;
        if (s[i] == '%') {
            PUT('%');
            continue;
        }
        if (s[i] == '_') {
            PUT(' ');
            continue;
        }
        if (s[i] == '-') {
            PUT('%');
            PUT('2');
            PUT('0');
            continue;
        }
        if (s[i] != '{' || ++i >= len || !is_macro_letter(s[i], is_exp))
            return false;
        char letter = s[i++];
        bool is_upper = isupper((unsigned char)letter);
        unsigned keep = 0;
        bool has_digits = false;
        while (i < len && isdigit((unsigned char)s[i])) {
            keep = keep * 10 + (unsigned)(s[i++] - '0');
            has_digits = true;
            if (keep > 999)
                return false;
        }
        if (has_digits && keep == 0)
            return false; /* §7.1: zero parts is a syntax error */
        bool is_reverse = false;
        if (i < len && (s[i] == 'r' || s[i] == 'R')) {
            is_reverse = true;
            i++;
        }
        char delims[16] = "";
        size_t nd = 0;
        while (i < len && strchr(".-+,/_=", s[i]) && nd + 1 < sizeof delims)
            delims[nd++] = s[i++];
        delims[nd] = '\0';
        if (nd == 0)
            snprintf(delims, sizeof delims, ".");
        if (i >= len || s[i] != '}')
            return false;
        char value[SPF_EXPAND_MAX];
        spf_macro_value(c, (char)tolower((unsigned char)letter), d, value, sizeof value);
        /* split into parts on the delimiters */
        const char *parts[256];
        size_t plen[256], np = 0;
        size_t start = 0, vl = strlen(value);
        for (size_t k = 0; k <= vl && np < 256; k++) {
            if (k == vl || strchr(delims, value[k])) {
                parts[np] = value + start;
                plen[np++] = k - start;
                start = k + 1;
            }
        }
        if (is_reverse)
            for (size_t a = 0, b = np ? np - 1 : 0; a < b; a++, b--) {
                const char *tp = parts[a];
                parts[a] = parts[b];
                parts[b] = tp;
                size_t tl = plen[a];
                plen[a] = plen[b];
                plen[b] = tl;
            }
        size_t first = has_digits && keep < np ? np - keep : 0;
        for (size_t k = first; k < np; k++) {
            if (k > first)
                PUT('.');
            for (size_t m = 0; m < plen[k]; m++) {
                unsigned char ch = (unsigned char)parts[k][m];
                /* §7.3: upper-case macro letters URL-escape the value */
                if (is_upper && !(isalnum(ch) || strchr("-._~", ch))) {
                    static const char hex[] = "0123456789ABCDEF";
                    PUT('%');
                    PUT(hex[ch >> 4]);
                    PUT(hex[ch & 15]);
                } else {
                    PUT((char)ch);
                }
            }
        }
    }
#undef PUT
    out[o] = '\0';
    return true;
}

/* Expand a domain-spec and bring it under 253 octets by dropping labels on the left
 * (§7.3). false: no usable name (the mechanism does not match). */
static bool spf_target(struct spf_ctx *c, const char *spec, size_t len, const char *d, char *out,
                       size_t size)
{
    if (!spec) {
        snprintf(out, size, "%s", d);
        return true;
    }
    char tmp[SPF_EXPAND_MAX];
    if (!spf_expand(c, spec, len, d, false, tmp, sizeof tmp))
        return false;
    size_t tl = strlen(tmp);
    if (tl && tmp[tl - 1] == '.')
        tmp[--tl] = '\0';
    const char *p = tmp;
    while (strlen(p) > 253) {
        const char *dot = strchr(p, '.');
        if (!dot)
            return false;
        p = dot + 1;
    }
    snprintf(out, size, "%s", p);
    return true;
}

/* ---- terms ---------------------------------------------------------------------------- */

enum spf_mech { MECH_ALL, MECH_INCLUDE, MECH_A, MECH_MX, MECH_PTR, MECH_IP4, MECH_IP6,
                MECH_EXISTS };

struct spf_term {
    bool is_modifier;
    char qualifier; /* '+', '-', '~', '?' */
    enum spf_mech mech;
    const char *text; /* the whole term, for logs */
    size_t text_len;
    const char *spec; /* domain-spec or address, NULL if none */
    size_t spec_len;
    int cidr4, cidr6; /* -1: none */
    unsigned char addr[16];
};

struct spf_record {
    struct spf_term terms[SPF_TERMS_MAX];
    size_t n;
    const char *redirect, *exp;
    size_t redirect_len, exp_len;
};

enum spf_cidr_mode { CIDR_DUAL, CIDR_IP4, CIDR_IP6 };

/* Parse the CIDR suffix at the end of s[*len] and trim it off: "/n" and/or "//m" for a and
 * mx (dual-cidr-length, §5.6), "/n" for ip4 and ip6. false on bad syntax or range. */
static bool spf_parse_cidr(const char *s, size_t *len, enum spf_cidr_mode mode, int *c4, int *c6)
{
    *c4 = *c6 = -1;
    size_t l = *len;
    for (int pass = 0; pass < 2; pass++) {
        size_t k = l;
        while (k > 0 && isdigit((unsigned char)s[k - 1]))
            k--;
        if (k == l || k == 0 || s[k - 1] != '/')
            break;
        if (l - k > 3 || (l - k > 1 && s[k] == '0'))
            return false; /* leading zeros are not in the grammar */
        int v = 0; /* the digits s[k..l): s is not NUL-terminated */
        for (size_t d = k; d < l; d++)
            v = v * 10 + (s[d] - '0');
        bool is_double = k >= 2 && s[k - 2] == '/';
        if (is_double) {
            /* "//m" only in dual-cidr-length, and only last */
            if (mode != CIDR_DUAL || pass > 0 || v > 128)
                return false;
            *c6 = v;
            l = k - 2;
            continue;
        }
        if (mode == CIDR_IP6) {
            if (v > 128)
                return false;
            *c6 = v;
        } else if (v > 32) {
            return false;
        } else {
            *c4 = v;
        }
        l = k - 1;
        break;
    }
    *len = l;
    return true;
}

static bool name_is(const char *s, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(s, name, len) == 0;
}

/* §4.6: parse the whole record (after "v=spf1"). false: permerror. */
static bool spf_record_parse(const char *text, size_t len, struct spf_record *r)
{
    memset(r, 0, sizeof *r);
    size_t pos = 0;
    while (pos < len) {
        while (pos < len && text[pos] == ' ')
            pos++;
        if (pos >= len)
            break;
        size_t end = pos;
        while (end < len && text[end] != ' ')
            end++;
        const char *t = text + pos;
        size_t tl = end - pos;
        pos = end;
        if (r->n >= SPF_TERMS_MAX)
            return false;
        /* modifier: name "=" macro-string, name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) */
        size_t nl = 0;
        while (nl < tl && (isalnum((unsigned char)t[nl]) || t[nl] == '-' || t[nl] == '_' ||
                           t[nl] == '.'))
            nl++;
        if (nl > 0 && nl < tl && t[nl] == '=' && isalpha((unsigned char)t[0])) {
            const char *v = t + nl + 1;
            size_t vl = tl - nl - 1;
            if (name_is(t, nl, "redirect")) {
                if (r->redirect || !spf_domain_spec_syntax(v, vl))
                    return false;
                r->redirect = v;
                r->redirect_len = vl;
            } else if (name_is(t, nl, "exp")) {
                if (r->exp || !spf_domain_spec_syntax(v, vl))
                    return false;
                r->exp = v;
                r->exp_len = vl;
            } else if (!spf_macro_syntax(v, vl, false)) {
                return false; /* unknown modifiers are ignored, but must parse */
            }
            continue;
        }
        struct spf_term *m = &r->terms[r->n];
        memset(m, 0, sizeof *m);
        m->text = t;
        m->text_len = tl;
        m->qualifier = '+';
        if (tl && strchr("+-~?", t[0])) {
            m->qualifier = t[0];
            t++;
            tl--;
        }
        size_t ml = 0;
        while (ml < tl && t[ml] != ':' && t[ml] != '/')
            ml++;
        const char *arg = ml < tl && t[ml] == ':' ? t + ml + 1 : NULL;
        size_t arg_len = arg ? tl - ml - 1 : 0;
        const char *cidr = !arg && ml < tl ? t + ml : NULL;
        size_t cidr_len = cidr ? tl - ml : 0;
        m->cidr4 = m->cidr6 = -1;
        if (name_is(t, ml, "all")) {
            m->mech = MECH_ALL;
            if (arg || cidr)
                return false;
        } else if (name_is(t, ml, "include") || name_is(t, ml, "exists")) {
            m->mech = name_is(t, ml, "include") ? MECH_INCLUDE : MECH_EXISTS;
            if (!arg || !spf_domain_spec_syntax(arg, arg_len))
                return false;
            m->spec = arg;
            m->spec_len = arg_len;
        } else if (name_is(t, ml, "a") || name_is(t, ml, "mx")) {
            m->mech = name_is(t, ml, "a") ? MECH_A : MECH_MX;
            const char *s = arg ? arg : cidr;
            size_t sl = arg ? arg_len : cidr_len;
            if (s && !spf_parse_cidr(s, &sl, CIDR_DUAL, &m->cidr4, &m->cidr6))
                return false;
            if (arg) {
                if (!spf_domain_spec_syntax(arg, sl))
                    return false;
                m->spec = arg;
                m->spec_len = sl;
            } else if (cidr && sl != 0) {
                return false;
            }
        } else if (name_is(t, ml, "ptr")) {
            m->mech = MECH_PTR;
            if (cidr || (arg && !spf_domain_spec_syntax(arg, arg_len)))
                return false;
            m->spec = arg;
            m->spec_len = arg_len;
        } else if (name_is(t, ml, "ip4") || name_is(t, ml, "ip6")) {
            bool is4 = name_is(t, ml, "ip4");
            m->mech = is4 ? MECH_IP4 : MECH_IP6;
            if (!arg)
                return false;
            size_t sl = arg_len;
            int c4, c6;
            if (!spf_parse_cidr(arg, &sl, is4 ? CIDR_IP4 : CIDR_IP6, &c4, &c6))
                return false;
            m->cidr4 = c4;
            m->cidr6 = is4 ? -1 : c6;
            char a[64];
            if (sl == 0 || sl >= sizeof a)
                return false;
            memcpy(a, arg, sl);
            a[sl] = '\0';
            if (inet_pton(is4 ? AF_INET : AF_INET6, a, m->addr) != 1)
                return false;
        } else {
            return false; /* §4.6.1: an unknown mechanism is a permerror */
        }
        r->n++;
    }
    return true;
}

/* Does addr (family's length) match the client IP under prefix bits? */
static bool spf_ip_match(const struct spf_ctx *c, const unsigned char *addr, int family,
                         int prefix)
{
    if (family != c->family)
        return false;
    int bits = family == 4 ? 32 : 128;
    if (prefix < 0 || prefix > bits)
        prefix = bits;
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(addr, c->ip, (size_t)full) != 0)
        return false;
    if (rest) {
        unsigned char mask = (unsigned char)(0xff << (8 - rest));
        if ((addr[full] & mask) != (c->ip[full] & mask))
            return false;
    }
    return true;
}

/* A/AAAA of name (the client's family) against the client IP. 1 match, 0 none, -1
 * temperror, -2 permerror (void limit). *is_void_r when the lookup found nothing. */
static int spf_match_host(struct spf_ctx *c, const char *name, int prefix, bool *is_void_r)
{
    int type = c->family == 4 ? MAILAUTH_DNS_A : MAILAUTH_DNS_AAAA;
    enum mailauth_dns_status st = spf_lookup(c, name, type);
    *is_void_r = false;
    if (st == MAILAUTH_DNS_TEMPFAIL)
        return -1;
    if (st == MAILAUTH_DNS_NXDOMAIN || c->ans->n == 0) {
        *is_void_r = true;
        return 0;
    }
    for (size_t i = 0; i < c->ans->n; i++)
        if (spf_ip_match(c, c->ans->rr[i].data, c->family, prefix))
            return 1;
    return 0;
}

/* Count a void lookup (§4.6.4); false once over the limit. */
static bool spf_void(struct spf_ctx *c)
{
    return ++c->n_void <= SPF_VOID_MAX;
}

/* The client's PTR names whose A/AAAA include the client (§5.5), looked up once per
 * check however many ptr terms and %{p} macros the records hold. */
static void spf_ptr_names(struct spf_ctx *c)
{
    if (c->has_ptr_names)
        return;
    c->has_ptr_names = true;
    char rev[128];
    size_t o = 0;
    if (c->family == 4) {
        snprintf(rev, sizeof rev, "%u.%u.%u.%u.in-addr.arpa", c->ip[3], c->ip[2], c->ip[1],
                 c->ip[0]);
    } else {
        for (int k = 15; k >= 0; k--)
            o += (size_t)snprintf(rev + o, sizeof rev - o, "%x.%x.", c->ip[k] & 15, c->ip[k] >> 4);
        snprintf(rev + o, sizeof rev - o, "ip6.arpa");
    }
    if (spf_lookup(c, rev, MAILAUTH_DNS_PTR) != MAILAUTH_DNS_OK)
        return;
    size_t n = c->ans->n < SPF_PTR_MAX ? c->ans->n : SPF_PTR_MAX; /* §4.6.4: at most 10 */
    char names[SPF_PTR_MAX][256];
    for (size_t i = 0; i < n; i++)
        snprintf(names[i], sizeof names[i], "%s", (const char *)c->ans->rr[i].data);
    for (size_t i = 0; i < n; i++) {
        bool is_void;
        if (spf_match_host(c, names[i], -1, &is_void) == 1)
            snprintf(c->ptr_names[c->n_ptr_names++], sizeof c->ptr_names[0], "%s", names[i]);
    }
}

static void spf_validated_ptr(struct spf_ctx *c, const char *target, char *out, size_t size)
{
    spf_ptr_names(c);
    snprintf(out, size, "unknown");
    for (size_t i = 0; i < c->n_ptr_names; i++) {
        /* prefer a name within the target domain (§5.5), else the first validated one */
        if (target && mailauth_domain_is_within(c->ptr_names[i], target)) {
            snprintf(out, size, "%s", c->ptr_names[i]);
            return;
        }
    }
    if (c->n_ptr_names)
        snprintf(out, size, "%s", c->ptr_names[0]);
}

static enum mailauth_result spf_check_host(struct spf_ctx *c, const char *domain, int depth,
                                           bool is_top);

/* Evaluate one mechanism: 1 match, 0 no match, or a final result via *res_r (-1). */
static int spf_mechanism(struct spf_ctx *c, const struct spf_term *m, const char *domain,
                         int depth, enum mailauth_result *res_r)
{
    char target[SPF_EXPAND_MAX];
    if (m->mech == MECH_INCLUDE || m->mech == MECH_A || m->mech == MECH_MX ||
        m->mech == MECH_PTR || m->mech == MECH_EXISTS) {
        /* §4.6.4: more than 10 DNS-querying terms is a permerror */
        if (++c->n_dns_terms > SPF_DNS_TERMS_MAX) {
            *res_r = MAILAUTH_PERMERROR;
            return -1;
        }
        if (!spf_target(c, m->spec, m->spec_len, domain, target, sizeof target)) {
            *res_r = MAILAUTH_PERMERROR;
            return -1;
        }
    }
    bool is_void = false;
    int rc = 0;
    switch (m->mech) {
    case MECH_ALL:
        return 1;
    case MECH_IP4:
        return spf_ip_match(c, m->addr, 4, m->cidr4);
    case MECH_IP6:
        return spf_ip_match(c, m->addr, 6, m->cidr6);
    case MECH_A:
        if (!spf_domain_is_valid(target))
            return 0;
        rc = spf_match_host(c, target, c->family == 4 ? m->cidr4 : m->cidr6, &is_void);
        break;
    case MECH_MX: {
        if (!spf_domain_is_valid(target))
            return 0;
        enum mailauth_dns_status st = spf_lookup(c, target, MAILAUTH_DNS_MX);
        if (st == MAILAUTH_DNS_TEMPFAIL) {
            rc = -1;
            break;
        }
        if (st == MAILAUTH_DNS_NXDOMAIN || c->ans->n == 0) {
            is_void = true;
            break;
        }
        /* §4.6.4: more than 10 exchangers to look up is a permerror */
        if (c->ans->n > SPF_ADDRS_MAX) {
            *res_r = MAILAUTH_PERMERROR;
            return -1;
        }
        size_t n = c->ans->n;
        char (*names)[256] = calloc(n, sizeof *names);
        if (!names) {
            rc = -1;
            break;
        }
        for (size_t i = 0; i < n; i++)
            snprintf(names[i], sizeof names[i], "%s", (const char *)c->ans->rr[i].data);
        for (size_t i = 0; i < n && rc == 0; i++) {
            bool v;
            if (!names[i][0] || strcmp(names[i], ".") == 0)
                continue; /* null MX */
            int r = spf_match_host(c, names[i], c->family == 4 ? m->cidr4 : m->cidr6, &v);
            if (r != 0)
                rc = r;
        }
        free(names);
        break;
    }
    case MECH_PTR: {
        char name[256];
        spf_validated_ptr(c, target, name, sizeof name);
        if (c->is_timed_out)
            rc = -1;
        else
            rc = strcmp(name, "unknown") != 0 && mailauth_domain_is_within(name, target);
        break;
    }
    case MECH_EXISTS: {
        if (!spf_domain_is_valid(target))
            return 0;
        enum mailauth_dns_status st = spf_lookup(c, target, MAILAUTH_DNS_A);
        if (st == MAILAUTH_DNS_TEMPFAIL)
            rc = -1;
        else if (st == MAILAUTH_DNS_NXDOMAIN || c->ans->n == 0)
            is_void = true;
        else
            rc = 1;
        break;
    }
    case MECH_INCLUDE: {
        if (!spf_domain_is_valid(target)) {
            *res_r = MAILAUTH_PERMERROR;
            return -1;
        }
        /* §5.2: pass matches; fail, softfail, neutral do not; errors propagate; none is a
         * permerror */
        enum mailauth_result r = spf_check_host(c, target, depth + 1, false);
        if (r == MAILAUTH_PASS)
            return 1;
        if (r == MAILAUTH_FAIL || r == MAILAUTH_SOFTFAIL || r == MAILAUTH_NEUTRAL)
            return 0;
        *res_r = r == MAILAUTH_TEMPERROR ? MAILAUTH_TEMPERROR : MAILAUTH_PERMERROR;
        return -1;
    }
    }
    if (rc < 0) {
        *res_r = MAILAUTH_TEMPERROR;
        return -1;
    }
    if (is_void && !spf_void(c)) {
        *res_r = MAILAUTH_PERMERROR;
        return -1;
    }
    return rc;
}

/* §6.2: the explanation for a fail, from exp=; empty on any problem. */
static void spf_explain(struct spf_ctx *c, const struct spf_record *r, const char *domain)
{
    char target[SPF_EXPAND_MAX];
    if (!r->exp || !spf_target(c, r->exp, r->exp_len, domain, target, sizeof target) ||
        !spf_domain_is_valid(target))
        return;
    if (spf_lookup(c, target, MAILAUTH_DNS_TXT) != MAILAUTH_DNS_OK || c->ans->n != 1)
        return;
    char text[MAILAUTH_DNS_RR_MAX];
    snprintf(text, sizeof text, "%s", (const char *)c->ans->rr[0].data);
    char out[SPF_EXPAND_MAX];
    if (!spf_macro_syntax(text, strlen(text), true) ||
        !spf_expand(c, text, strlen(text), domain, true, out, sizeof out))
        return;
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    snprintf(c->explanation, sizeof c->explanation, "%s", out);
}

static enum mailauth_result qualifier_result(char q)
{
    return q == '-' ? MAILAUTH_FAIL
           : q == '~' ? MAILAUTH_SOFTFAIL
           : q == '?' ? MAILAUTH_NEUTRAL
                      : MAILAUTH_PASS;
}

/* check_host() of §4 for domain. */
static enum mailauth_result spf_check_host(struct spf_ctx *c, const char *domain, int depth,
                                           bool is_top)
{
    if (depth > SPF_DNS_TERMS_MAX + 1)
        return MAILAUTH_PERMERROR;
    /* §4.4: the record */
    enum mailauth_dns_status st = spf_lookup(c, domain, MAILAUTH_DNS_TXT);
    if (st == MAILAUTH_DNS_TEMPFAIL)
        return MAILAUTH_TEMPERROR;
    if (st == MAILAUTH_DNS_NXDOMAIN)
        return MAILAUTH_NONE;
    /* §4.5: the one record that starts with "v=spf1" followed by a space or its end */
    char *text = NULL;
    size_t n_found = 0;
    for (size_t i = 0; i < c->ans->n; i++) {
        const char *t = (const char *)c->ans->rr[i].data;
        size_t l = c->ans->rr[i].len;
        if (l >= 6 && strncasecmp(t, "v=spf1", 6) == 0 && (l == 6 || t[6] == ' ')) {
            n_found++;
            /* a NUL cannot be in any term (§4.6.1: visible characters): permerror */
            if (!text && memchr(t, '\0', l))
                n_found++;
            if (!text)
                text = strndup(t + 6, l - 6);
        }
    }
    if (n_found == 0) {
        free(text);
        return MAILAUTH_NONE;
    }
    if (n_found > 1 || !text) {
        free(text);
        return MAILAUTH_PERMERROR;
    }
    struct spf_record *r = malloc(sizeof *r);
    if (!r || !spf_record_parse(text, strlen(text), r)) {
        free(r);
        free(text);
        return MAILAUTH_PERMERROR;
    }
    enum mailauth_result res = MAILAUTH_NEUTRAL;
    bool is_decided = false;
    for (size_t i = 0; i < r->n && !is_decided; i++) {
        enum mailauth_result err;
        int m = spf_mechanism(c, &r->terms[i], domain, depth, &err);
        if (m < 0) {
            res = err;
            is_decided = true;
        } else if (m == 1) {
            res = qualifier_result(r->terms[i].qualifier);
            is_decided = true;
            if (is_top || depth >= 0)
                snprintf(c->mechanism, sizeof c->mechanism, "%.*s", (int)r->terms[i].text_len,
                         r->terms[i].text);
            if (res == MAILAUTH_FAIL && is_top)
                spf_explain(c, r, domain);
        }
    }
    if (!is_decided && r->redirect) {
        /* §6.1: redirect when no mechanism matched */
        char target[SPF_EXPAND_MAX];
        if (++c->n_dns_terms > SPF_DNS_TERMS_MAX ||
            !spf_target(c, r->redirect, r->redirect_len, domain, target, sizeof target) ||
            !spf_domain_is_valid(target)) {
            res = MAILAUTH_PERMERROR;
        } else {
            res = spf_check_host(c, target, depth + 1, is_top);
            if (res == MAILAUTH_NONE)
                res = MAILAUTH_PERMERROR;
        }
    }
    if (c->is_timed_out && res != MAILAUTH_PASS)
        res = MAILAUTH_TEMPERROR;
    free(r);
    free(text);
    return res;
}

int mailauth_spf_check(const struct mailauth_dns *dns, const char *ip, const char *helo,
                       const char *mail_from, const char *receiver, int64_t now,
                       struct mailauth_spf_result *out)
{
    memset(out, 0, sizeof *out);
    struct spf_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->ans = calloc(1, sizeof *c->ans);
    if (!c->ans) {
        free(c);
        return -1;
    }
    c->dns = dns;
    c->helo = helo;
    c->receiver = receiver;
    c->now = now;
    c->deadline = util_now_ms() + SPF_DEADLINE_MS;
    int rc = 0;
    unsigned char a6[16];
    if (inet_pton(AF_INET, ip, c->ip) == 1) {
        c->family = 4;
    } else if (inet_pton(AF_INET6, ip, a6) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6, mapped, 12) == 0) {
            c->family = 4; /* an IPv4-mapped address is the IPv4 client it stands for */
            memcpy(c->ip, a6 + 12, 4);
        } else {
            c->family = 6;
            memcpy(c->ip, a6, 16);
        }
    } else {
        out->result = MAILAUTH_PERMERROR;
        snprintf(out->reason, sizeof out->reason, "bad client address");
        goto done;
    }
    inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->ip, c->ip_text, sizeof c->ip_text);
    /* §2.4: the MAIL FROM identity; the null sender uses postmaster@HELO (§2.3) */
    const char *at = mail_from ? strrchr(mail_from, '@') : NULL;
    if (mail_from && mail_from[0] && at) {
        snprintf(c->local, sizeof c->local, "%.*s", (int)(at - mail_from), mail_from);
        snprintf(c->sender_domain, sizeof c->sender_domain, "%s", at + 1);
    } else {
        out->is_helo = true;
        snprintf(c->sender_domain, sizeof c->sender_domain, "%s", helo ? helo : "");
    }
    if (!c->local[0])
        snprintf(c->local, sizeof c->local, "postmaster"); /* §4.3 */
    snprintf(c->sender, sizeof c->sender, "%s@%s", c->local, c->sender_domain);
    size_t dl = strlen(c->sender_domain);
    if (dl && c->sender_domain[dl - 1] == '.')
        c->sender_domain[dl - 1] = '\0';
    snprintf(out->domain, sizeof out->domain, "%s", c->sender_domain);
    /* §4.3: a malformed or non-FQDN domain gives none */
    if (!spf_domain_is_valid(c->sender_domain) || c->sender_domain[0] == '[') {
        out->result = MAILAUTH_NONE;
        snprintf(out->reason, sizeof out->reason, "no usable domain");
        goto done;
    }
    out->result = spf_check_host(c, c->sender_domain, 0, true);
    snprintf(out->mechanism, sizeof out->mechanism, "%s", c->mechanism);
    snprintf(out->explanation, sizeof out->explanation, "%s", c->explanation);
    if (out->result == MAILAUTH_TEMPERROR)
        snprintf(out->reason, sizeof out->reason, "%s",
                 c->is_timed_out ? "lookups took too long" : "DNS lookup failed");
    else if (out->result == MAILAUTH_PERMERROR)
        snprintf(out->reason, sizeof out->reason, "%s",
                 c->n_dns_terms > SPF_DNS_TERMS_MAX ? "too many DNS lookups"
                 : c->n_void > SPF_VOID_MAX         ? "too many void lookups"
                                                    : "bad SPF record");
done:
    free(c->ans);
    free(c);
    return rc;
}

int mailauth_spf_record_parse(const char *text, size_t len, size_t *n_terms_r)
{
    /* §4.5: "v=spf1" then a space or the end */
    if (len < 6 || strncasecmp(text, "v=spf1", 6) != 0 || (len > 6 && text[6] != ' ') ||
        memchr(text, '\0', len))
        return -1;
    struct spf_record *r = malloc(sizeof *r);
    if (!r)
        return -1;
    int rc = spf_record_parse(text + 6, len - 6, r) ? 0 : -1;
    if (n_terms_r)
        *n_terms_r = r->n;
    free(r);
    return rc;
}
