/*
 * addr.c - SMTP path parsing (RFC 5321 §4.1.2) and small address helpers (see addr.h).
 *
 * Leniency, on purpose and like Postfix: the angle brackets may be missing (seeds 000
 * and 004 type "MAIL FROM: user@host"), spaces may follow the colon, a source route is
 * accepted and dropped (RFC 5321 §4.1.2, Appendix C), dots in an unquoted local part are
 * not policed (real senders use "first.@dom" and "a..b@dom"), and 8-bit bytes are allowed
 * in local parts and domain labels (RFC 6531 SMTPUTF8). What is checked: the lengths of
 * RFC 5321 §4.5.3.1, the characters of each part, and that nothing but ESMTP parameters
 * follows the path.
 *
 * RCPT TO:<Postmaster> without a domain (RFC 5321 §4.1.1.3: MUST be accepted) parses with
 * an empty domain when allow_null is false (i.e. for RCPT); the caller supplies its own
 * domain.
 *
 * Pure functions over bytes; no allocation, no I/O.
 */
#include "core/addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 5322 §3.2.3 atext, plus 8-bit for SMTPUTF8. */
static bool addr_is_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80)
        return true;
    return strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL && c != '\0';
}

static bool addr_is_label_char(unsigned char c)
{
    /* RFC 5321 §4.1.2 Let-dig / Ldh-str; '_' tolerated as DNS does in practice. */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c >= 0x80;
}

/* Length of the local part at text[0..len), or 0 on syntax error. Stops before '@'. */
static size_t addr_scan_local(const char *text, size_t len)
{
    size_t i = 0;
    if (len > 0 && text[0] == '"') {
        /* RFC 5321 §4.1.2 Quoted-string: qtextSMTP / quoted-pairSMTP */
        i = 1;
        while (i < len && text[i] != '"') {
            unsigned char c = (unsigned char)text[i];
            if (c == '\\') {
                if (i + 1 >= len)
                    return 0;
                unsigned char q = (unsigned char)text[i + 1];
                if (q < 32 || q == 127)
                    return 0;
                i += 2;
                continue;
            }
            if ((c < 32 || c == 127))
                return 0;
            i++;
        }
        if (i >= len)
            return 0; /* unterminated quote */
        return i + 1;
    }
    while (i < len && (addr_is_atext((unsigned char)text[i]) || text[i] == '.'))
        i++;
    return i;
}

/* Length of the domain at text[0..len) (a name or an address literal), 0 on error. */
static size_t addr_scan_domain(const char *text, size_t len)
{
    if (len > 0 && text[0] == '[') {
        /* RFC 5321 §4.1.3 address literal */
        size_t i = 1;
        while (i < len && text[i] != ']') {
            unsigned char c = (unsigned char)text[i];
            if (c < 33 || c > 126 || c == '[' || c == '\\')
                return 0;
            i++;
        }
        if (i >= len || i == 1)
            return 0;
        size_t inner = i - 1;
        char lit[ADDR_MAX_DOMAIN + 1];
        if (inner >= sizeof lit)
            return 0;
        memcpy(lit, text + 1, inner);
        lit[inner] = '\0';
        unsigned char tmp[16];
        if (strncasecmp(lit, "IPv6:", 5) == 0) {
            if (inet_pton(AF_INET6, lit + 5, tmp) != 1)
                return 0;
        } else if (strchr(lit, ':') == NULL) {
            if (inet_pton(AF_INET, lit, tmp) != 1)
                return 0;
        }
        /* General-address-literal (Standardized-tag ":" dcontent) is accepted as is. */
        return i + 1;
    }
    size_t i = 0, label = 0;
    while (i < len) {
        unsigned char c = (unsigned char)text[i];
        if (c == '.') {
            if (label == 0)
                return 0; /* empty label: leading or double dot */
            label = 0;
        } else if (addr_is_label_char(c)) {
            if (++label > 63)
                return 0; /* RFC 1035 §2.3.4 */
        } else {
            break;
        }
        i++;
    }
    if (i == 0 || label == 0)
        return 0; /* empty, or a trailing dot */
    return i;
}

/* Parse "local@domain" (or bare postmaster when allowed) at text[0..len); returns the
 * number of bytes used or 0 on error. Stops at the first byte that cannot continue. */
static size_t addr_scan_mailbox(const char *text, size_t len, bool allow_bare_postmaster,
                                struct addr *a)
{
    size_t local_len = addr_scan_local(text, len);
    if (local_len == 0)
        return 0;
    bool is_quoted = text[0] == '"';
    if (local_len > (is_quoted ? ADDR_MAX_LOCAL * 2 : ADDR_MAX_LOCAL))
        return 0;
    memcpy(a->local, text, local_len);
    a->local[local_len] = '\0';
    a->domain[0] = '\0';
    a->is_null = false;

    if (local_len >= len || text[local_len] != '@') {
        /* RFC 5321 §4.1.1.3: "Postmaster" without a domain */
        if (allow_bare_postmaster && strcasecmp(a->local, "postmaster") == 0)
            return local_len;
        return 0;
    }
    size_t d = local_len + 1;
    size_t domain_len = addr_scan_domain(text + d, len - d);
    if (domain_len == 0 || domain_len > ADDR_MAX_DOMAIN)
        return 0;
    /* RFC 5321 §4.5.3.1.3: the path, with its brackets, fits in 256 octets */
    if (local_len + 1 + domain_len + 2 > ADDR_MAX_PATH)
        return 0;
    memcpy(a->domain, text + d, domain_len);
    a->domain[domain_len] = '\0';
    for (char *p = a->domain; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d + domain_len;
}

/* Skip an RFC 5321 source route "@a,@b:" at text[0..len); bytes used or 0 on error. */
static size_t addr_skip_route(const char *text, size_t len)
{
    size_t i = 0;
    for (;;) {
        if (i >= len || text[i] != '@')
            return 0;
        i++;
        size_t d = addr_scan_domain(text + i, len - i);
        if (d == 0)
            return 0;
        i += d;
        if (i < len && text[i] == ',') {
            i++;
            continue;
        }
        if (i < len && text[i] == ':')
            return i + 1;
        return 0;
    }
}

bool addr_parse_path(const char *text, size_t len, bool allow_null, struct addr *a,
                     size_t *params_offset_r)
{
    struct addr tmp;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t'))
        i++;
    if (i >= len)
        return false;
    if (len - i > 4096)
        len = i + 4096; /* nothing valid is longer; keep the work bounded */

    if (text[i] == '<') {
        i++;
        if (i < len && text[i] == '>') {
            if (!allow_null)
                return false;
            i++;
            memset(&tmp, 0, sizeof tmp);
            tmp.is_null = true;
        } else {
            if (i < len && text[i] == '@') {
                size_t r = addr_skip_route(text + i, len - i);
                if (r == 0)
                    return false;
                i += r;
            }
            size_t m = addr_scan_mailbox(text + i, len - i, !allow_null, &tmp);
            if (m == 0)
                return false;
            i += m;
            if (i >= len || text[i] != '>')
                return false;
            i++;
        }
    } else {
        /* No brackets (seen in the wild): the mailbox ends at a space or the end. */
        size_t m = addr_scan_mailbox(text + i, len - i, !allow_null, &tmp);
        if (m == 0)
            return false;
        i += m;
    }
    /* Only ESMTP parameters, separated by spaces, may follow (RFC 5321 §4.1.2). */
    if (i < len && text[i] != ' ' && text[i] != '\t')
        return false;
    while (i < len && (text[i] == ' ' || text[i] == '\t'))
        i++;
    *a = tmp;
    if (params_offset_r)
        *params_offset_r = i;
    return true;
}

bool addr_parse_plain(const char *text, struct addr *a)
{
    struct addr tmp;
    size_t len = strnlen(text, ADDR_MAX_PATH + 1);
    if (len > ADDR_MAX_PATH)
        return false;
    size_t m = addr_scan_mailbox(text, len, false, &tmp);
    if (m == 0 || m != len)
        return false;
    *a = tmp;
    return true;
}

void addr_format(const struct addr *a, char *out, size_t size)
{
    if (size == 0)
        return;
    if (a->is_null)
        out[0] = '\0';
    else if (a->domain[0] == '\0')
        snprintf(out, size, "%s", a->local);
    else
        snprintf(out, size, "%s@%s", a->local, a->domain);
}

bool addr_strip_tag(const char *local, char *out, size_t size)
{
    if (size == 0)
        return false;
    snprintf(out, size, "%s", local);
    if (local[0] == '"')
        return false; /* a quoted local part is taken literally */
    const char *plus = strchr(local, '+');
    if (!plus || plus == local)
        return false;
    size_t n = (size_t)(plus - local);
    if (n >= size)
        return false;
    out[n] = '\0';
    return true;
}
