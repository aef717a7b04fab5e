/*
 * dnsbl_site.c - parsing and matching DNS list site specifications (dnsbl_site.h).
 */
#include "core/dnsbl_site.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* A decimal 0..max at *p; advances. */
static bool parse_number(const char **p, unsigned max, unsigned *v)
{
    const char *s = *p;
    unsigned n = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (unsigned)(*s - '0');
        if (n > max)
            return false;
    }
    *p = s;
    *v = n;
    return true;
}

static void bitmap_set(uint8_t map[32], unsigned from, unsigned to)
{
    for (unsigned i = from; i <= to; i++)
        map[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* One octet pattern: N or [N;A..B;...]. */
static bool parse_octet(const char **p, uint8_t map[32])
{
    unsigned a, b;
    if (**p != '[') {
        if (!parse_number(p, 255, &a))
            return false;
        bitmap_set(map, a, a);
        return true;
    }
    (*p)++;
    for (;;) {
        if (!parse_number(p, 255, &a))
            return false;
        b = a;
        if ((*p)[0] == '.' && (*p)[1] == '.') {
            *p += 2;
            if (!parse_number(p, 255, &b) || b < a)
                return false;
        }
        bitmap_set(map, a, b);
        if (**p == ';') {
            (*p)++;
            continue;
        }
        if (**p != ']')
            return false;
        (*p)++;
        return true;
    }
}

static bool domain_is_plausible(const char *d, size_t len)
{
    if (len == 0 || len > 253 || d[0] == '.' || d[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = d[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || (c == '.' && d[i + 1] != '.');
        if (!ok)
            return false;
    }
    return true;
}

bool dnsbl_site_parse(const char *text, struct dnsbl_site *site_r)
{
    memset(site_r, 0, sizeof *site_r);
    site_r->weight = 1;
    size_t dlen = strcspn(text, "=*");
    if (!domain_is_plausible(text, dlen))
        return false;
    memcpy(site_r->domain, text, dlen);
    const char *p = text + dlen;
    if (*p == '=') {
        p++;
        site_r->has_filter = true;
        for (int i = 0; i < 4; i++) {
            if (i > 0 && *p++ != '.')
                return false;
            if (!parse_octet(&p, site_r->octet[i]))
                return false;
        }
    }
    if (*p == '*') {
        p++;
        bool is_negative = *p == '-';
        if (is_negative)
            p++;
        unsigned w;
        if (!parse_number(&p, 1000000, &w))
            return false;
        site_r->weight = is_negative ? -(int)w : (int)w;
    }
    return *p == '\0';
}

bool dnsbl_site_matches(const struct dnsbl_site *site, const char *ip)
{
    unsigned char a[4];
    if (inet_pton(AF_INET, ip, a) != 1)
        return false;
    if (!site->has_filter)
        return a[0] == 127; /* RFC 5782 §2.1 */
    for (int i = 0; i < 4; i++)
        if (!(site->octet[i][a[i] / 8] & (1u << (a[i] % 8))))
            return false;
    return true;
}
