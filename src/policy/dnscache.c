/*
 * dnscache.c - the DNS answer cache of the SMTP screen (dnscache.h).
 */
#include "policy/dnscache.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DNSCACHE_PROBE 8

struct dns_cache_slot {
    char key[272]; /* "<type>:<name>" lower case; "" = free */
    uint64_t expires_ms, used_ms;
    struct dns_cache_entry entry;
};

struct dns_cache {
    struct dns_cache_slot slots[DNSCACHE_SLOTS];
};

struct dns_cache *dns_cache_new(void)
{
    return calloc(1, sizeof(struct dns_cache));
}

void dns_cache_free(struct dns_cache *c)
{
    free(c);
}

static bool cache_key(const char *name, int rrtype, char key[272])
{
    int n = snprintf(key, 272, "%d:%s", rrtype, name);
    if (n < 0 || n >= 272)
        return false;
    for (int i = 0; i < n; i++)
        key[i] = (char)tolower((unsigned char)key[i]);
    return true;
}

static uint64_t cache_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

bool dns_cache_get(struct dns_cache *c, const char *name, int rrtype, uint64_t now_ms,
                   struct dns_cache_entry *e_r)
{
    char key[272];
    if (!c || !cache_key(name, rrtype, key))
        return false;
    uint64_t h = cache_hash(key);
    for (unsigned i = 0; i < DNSCACHE_PROBE; i++) {
        struct dns_cache_slot *s = &c->slots[(h + i) % DNSCACHE_SLOTS];
        if (s->key[0] && strcmp(s->key, key) == 0) {
            if (s->expires_ms <= now_ms)
                return false;
            s->used_ms = now_ms;
            *e_r = s->entry;
            return true;
        }
    }
    return false;
}

void dns_cache_put(struct dns_cache *c, const char *name, int rrtype, unsigned ttl,
                   const struct dns_cache_entry *e, uint64_t now_ms)
{
    char key[272];
    if (!c || !cache_key(name, rrtype, key))
        return;
    if (ttl < DNSCACHE_MIN_TTL)
        ttl = DNSCACHE_MIN_TTL;
    if (ttl > DNSCACHE_MAX_TTL)
        ttl = DNSCACHE_MAX_TTL;
    uint64_t h = cache_hash(key);
    struct dns_cache_slot *victim = NULL;
    for (unsigned i = 0; i < DNSCACHE_PROBE; i++) {
        struct dns_cache_slot *s = &c->slots[(h + i) % DNSCACHE_SLOTS];
        if (!s->key[0] || strcmp(s->key, key) == 0 || s->expires_ms <= now_ms) {
            victim = s;
            break;
        }
        if (!victim || s->used_ms < victim->used_ms)
            victim = s;
    }
    memcpy(victim->key, key, sizeof key);
    victim->entry = *e;
    victim->used_ms = now_ms;
    victim->expires_ms = now_ms + (uint64_t)ttl * 1000;
}
