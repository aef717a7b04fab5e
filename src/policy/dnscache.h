/*
 * dnscache.h - answers of DNS list and sender-domain lookups, kept for their TTL (at least
 * DNSCACHE_MIN_TTL, at most DNSCACHE_MAX_TTL seconds), so a client that reconnects, or a
 * flood from one address, asks the DNS once. Failures (SERVFAIL, timeouts) are not kept.
 *
 * Plain data in and out (name, type, status, addresses). One cache per worker process
 * (it only saves lookups: a client whose connections land in several workers is looked
 * up once per worker). Memory: DNSCACHE_SLOTS entries, the least recently used of a probe
 * sequence reused. Thread rules: one owner thread (the loop).
 */
#ifndef TERN_POLICY_DNSCACHE_H
#define TERN_POLICY_DNSCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNSCACHE_SLOTS   4096
#define DNSCACHE_MIN_TTL 60
#define DNSCACHE_MAX_TTL 3600
#define DNSCACHE_MAX_A   8

struct dns_cache;

struct dns_cache_entry {
    bool is_found; /* records exist (else NXDOMAIN / no record of the type) */
    size_t n_a;
    char a[DNSCACHE_MAX_A][16];
};

struct dns_cache *dns_cache_new(void);
void dns_cache_free(struct dns_cache *c);
/* true and *e_r filled when (name, rrtype) is cached and fresh at now_ms. */
bool dns_cache_get(struct dns_cache *c, const char *name, int rrtype, uint64_t now_ms,
                   struct dns_cache_entry *e_r);
void dns_cache_put(struct dns_cache *c, const char *name, int rrtype, unsigned ttl,
                   const struct dns_cache_entry *e, uint64_t now_ms);

#endif
