/*
 * dnsbl_site.h - one DNS list site as postscreen_dnsbl_sites writes it:
 *   domain[=filter]*weight      e.g. zen.spamhaus.org*3, bl.example=127.0.0.2*2,
 *                                    list.dnswl.example=127.0.[0..255].[2..3]*-2
 * The filter is four dot-separated octet patterns: a number, or brackets holding numbers
 * and ranges a..b separated by ';' ("[2;4..6]"). Without a filter any answer in
 * 127.0.0.0/8 counts (RFC 5782 §2.1: list answers are in 127/8; others are errors or
 * wildcards). The weight (default 1) may be negative for allow lists.
 * Pure functions (config.c validates with them; the SMTP screen scores with them).
 */
#ifndef TERN_CORE_DNSBL_SITE_H
#define TERN_CORE_DNSBL_SITE_H

#include <stdbool.h>
#include <stdint.h>

struct dnsbl_site {
    char domain[256];
    bool has_filter;
    uint8_t octet[4][32]; /* per octet, a bitmap of the values the filter accepts */
    int weight;
};

/* false if text is not of that syntax (or the domain is not a plausible name). */
bool dnsbl_site_parse(const char *text, struct dnsbl_site *site_r);
/* Does the IPv4 answer ip (dotted text) count for this site? */
bool dnsbl_site_matches(const struct dnsbl_site *site, const char *ip);

#endif
