/*
 * dnscache.h - answers of DNS list and sender-domain lookups, kept for their TTL (at least
 * DNSCACHE_MIN_TTL, at most DNSCACHE_MAX_TTL seconds), so a client that reconnects, or a
 * flood from one address, asks the DNS once. Failures (SERVFAIL, timeouts) are not kept.
 *
 * Plain data in and out (name, type, status, addresses). One cache for the whole server:
 * its slots live in the anvil's shared mapping (core/anvil.h, made by the master before
 * it forks), so an answer one login process got serves the connections every other login
 * process takes (a client's connections land in any of them). Any process may write any
 * slot, so every read is checked as hostile input (dnscache.c). Without an anvil (tools,
 * tests) a cache is private. Memory: DNSCACHE_SLOTS entries in all, the least recently
 * used of a probe sequence reused.
 *
 * Thread rules: one thread per process (the loop); across processes the slots are
 * seqlocks (a reader never sees half a write, a writer never blocks).
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

/* A private cache (its own memory). */
struct dns_cache *dns_cache_new(void);
/* The cache of every process: its slots in the anvil's area (anvil_dns_area); a private
 * one when this process has no anvil. NULL when out of memory. */
struct dns_cache *dns_cache_new_shared(void);
bool dns_cache_is_shared(const struct dns_cache *c);
void dns_cache_free(struct dns_cache *c);
/* true and *e_r filled when (name, rrtype) is cached and fresh at now_ms. */
bool dns_cache_get(struct dns_cache *c, const char *name, int rrtype, uint64_t now_ms,
                   struct dns_cache_entry *e_r);
void dns_cache_put(struct dns_cache *c, const char *name, int rrtype, unsigned ttl,
                   const struct dns_cache_entry *e, uint64_t now_ms);

#endif
