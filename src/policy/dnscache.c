/*
 * dnscache.c - the DNS answer cache of the SMTP screen (dnscache.h), in memory every
 * process with SMTP sessions shares (the anvil's DNS area) or, without one, its own.
 *
 * Sharing rules. Any login process may write any slot, and a login process is where
 * hostile bytes are parsed: a reader therefore trusts nothing it reads. Each slot is a
 * seqlock: a writer takes it by turning its even sequence number odd (compare-and-swap,
 * so two writers never mix their bytes), writes, and makes it even again; a reader copies
 * the slot and keeps the copy only when the number was even and unchanged around the
 * copy, then checks it (the key NUL-terminated and the one it asked for, at most
 * DNSCACHE_MAX_A addresses, each an IPv4 address in text, an expiry no further than
 * DNSCACHE_MAX_TTL away). A slot left odd by a writer that died is taken over after
 * DNSCACHE_LOCK_MS. Nothing is ever followed as a pointer: the worst a forged slot can do
 * is answer "listed" or "not listed" for a name, for at most DNSCACHE_MAX_TTL seconds,
 * which a compromised login process could decide for its own clients anyway.
 */
#include "policy/dnscache.h"

#include "core/anvil.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DNSCACHE_PROBE    8
#define DNSCACHE_KEY_SIZE 272
#define DNSCACHE_LOCK_MS  1000 /* a writer holds a slot for a few hundred octets' copy */

struct dns_cache_slot {
    _Atomic uint32_t seq;       /* even: stable; odd: being written */
    _Atomic uint64_t locked_ms; /* when the current writer took it */
    _Atomic uint64_t used_ms;   /* last hit, for the choice of a victim */
    uint64_t expires_ms;
    char key[DNSCACHE_KEY_SIZE]; /* "<type>:<name>" lower case; "" = free */
    uint8_t is_found;
    uint8_t n_a;
    char a[DNSCACHE_MAX_A][16];
};

_Static_assert(sizeof(struct dns_cache_slot) * DNSCACHE_SLOTS <= ANVIL_DNS_AREA,
               "the shared DNS cache does not fit the anvil's area");

struct dns_cache {
    struct dns_cache_slot *slots; /* DNSCACHE_SLOTS */
    uint64_t seed;                /* of the hash: names are chosen by clients */
    bool is_private;              /* slots allocated here */
};

struct dns_cache *dns_cache_new(void)
{
    struct dns_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->slots = calloc(DNSCACHE_SLOTS, sizeof *c->slots);
    if (!c->slots) {
        free(c);
        return NULL;
    }
    c->is_private = true;
    c->seed = (uint64_t)(uintptr_t)c->slots * 0x9e3779b97f4a7c15ull;
    return c;
}

struct dns_cache *dns_cache_new_shared(void)
{
    size_t size;
    uint64_t seed;
    void *area = anvil_dns_area(&size, &seed);
    if (!area || size < sizeof(struct dns_cache_slot) * DNSCACHE_SLOTS)
        return dns_cache_new();
    struct dns_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->slots = area;
    c->seed = seed;
    return c;
}

bool dns_cache_is_shared(const struct dns_cache *c)
{
    return c && !c->is_private;
}

void dns_cache_free(struct dns_cache *c)
{
    if (!c)
        return;
    if (c->is_private)
        free(c->slots);
    free(c);
}

static bool cache_key(const char *name, int rrtype, char key[DNSCACHE_KEY_SIZE])
{
    int n = snprintf(key, DNSCACHE_KEY_SIZE, "%d:%s", rrtype, name);
    if (n < 0 || n >= DNSCACHE_KEY_SIZE)
        return false;
    for (int i = 0; i < n; i++)
        key[i] = (char)tolower((unsigned char)key[i]);
    return true;
}

static uint64_t cache_hash(uint64_t seed, const char *s)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* A consistent copy of slot s, or false (being written, or changed during the copy). */
static bool slot_read(struct dns_cache_slot *s, struct dns_cache_slot *copy)
{
    uint32_t before = atomic_load_explicit(&s->seq, memory_order_acquire);
    if (before & 1)
        return false;
    copy->expires_ms = s->expires_ms;
    memcpy(copy->key, s->key, sizeof copy->key);
    copy->is_found = s->is_found;
    copy->n_a = s->n_a;
    memcpy(copy->a, s->a, sizeof copy->a);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->seq, memory_order_relaxed) != before)
        return false;
    copy->key[sizeof copy->key - 1] = '\0';
    return true;
}

/* The copy as an answer, if every part of it is what a writer could have put there. */
static bool slot_entry(const struct dns_cache_slot *copy, struct dns_cache_entry *e_r)
{
    if (copy->n_a > DNSCACHE_MAX_A || copy->is_found > 1)
        return false;
    memset(e_r, 0, sizeof *e_r);
    e_r->is_found = copy->is_found;
    e_r->n_a = copy->n_a;
    for (size_t i = 0; i < copy->n_a; i++) {
        struct in_addr ia;
        if (!memchr(copy->a[i], '\0', sizeof copy->a[i]) ||
            inet_pton(AF_INET, copy->a[i], &ia) != 1)
            return false;
        memcpy(e_r->a[i], copy->a[i], sizeof e_r->a[i]);
    }
    return true;
}

bool dns_cache_get(struct dns_cache *c, const char *name, int rrtype, uint64_t now_ms,
                   struct dns_cache_entry *e_r)
{
    char key[DNSCACHE_KEY_SIZE];
    if (!c || !cache_key(name, rrtype, key))
        return false;
    uint64_t h = cache_hash(c->seed, key);
    for (unsigned i = 0; i < DNSCACHE_PROBE; i++) {
        struct dns_cache_slot *s = &c->slots[(h + i) % DNSCACHE_SLOTS];
        struct dns_cache_slot copy;
        if (!slot_read(s, &copy) || strcmp(copy.key, key) != 0)
            continue;
        if (copy.expires_ms <= now_ms ||
            copy.expires_ms - now_ms > (uint64_t)DNSCACHE_MAX_TTL * 1000)
            return false;
        if (!slot_entry(&copy, e_r))
            return false;
        atomic_store_explicit(&s->used_ms, now_ms, memory_order_relaxed);
        return true;
    }
    return false;
}

void dns_cache_put(struct dns_cache *c, const char *name, int rrtype, unsigned ttl,
                   const struct dns_cache_entry *e, uint64_t now_ms)
{
    char key[DNSCACHE_KEY_SIZE];
    if (!c || !cache_key(name, rrtype, key) || e->n_a > DNSCACHE_MAX_A)
        return;
    if (ttl < DNSCACHE_MIN_TTL)
        ttl = DNSCACHE_MIN_TTL;
    if (ttl > DNSCACHE_MAX_TTL)
        ttl = DNSCACHE_MAX_TTL;
    /* the victim: the slot of the key, a free or expired one, else the least used */
    uint64_t h = cache_hash(c->seed, key);
    struct dns_cache_slot *victim = NULL;
    uint64_t victim_used = UINT64_MAX;
    for (unsigned i = 0; i < DNSCACHE_PROBE; i++) {
        struct dns_cache_slot *s = &c->slots[(h + i) % DNSCACHE_SLOTS];
        struct dns_cache_slot copy;
        if (!slot_read(s, &copy)) {
            if (!victim)
                victim = s; /* busy (or a dead writer's): only if nothing better */
            continue;
        }
        if (!copy.key[0] || strcmp(copy.key, key) == 0 || copy.expires_ms <= now_ms) {
            victim = s;
            break;
        }
        uint64_t used = atomic_load_explicit(&s->used_ms, memory_order_relaxed);
        if (!victim || used < victim_used) { /* (!victim: even a forged maximum) */
            victim = s;
            victim_used = used;
        }
    }

    /* take it: even -> odd; a slot odd for longer than a writer needs is a dead one's */
    uint32_t seq = atomic_load_explicit(&victim->seq, memory_order_relaxed);
    uint32_t mine = seq + 1;
    if (seq & 1) {
        uint64_t since = atomic_load_explicit(&victim->locked_ms, memory_order_relaxed);
        if (now_ms >= since && now_ms - since < DNSCACHE_LOCK_MS)
            return; /* another writer is at work: a cache may skip a write */
        mine = seq + 2;
    }
    if (!atomic_compare_exchange_strong_explicit(&victim->seq, &seq, mine, memory_order_acquire,
                                                 memory_order_relaxed))
        return;
    atomic_store_explicit(&victim->locked_ms, now_ms, memory_order_relaxed);
    memcpy(victim->key, key, sizeof key);
    victim->is_found = e->is_found ? 1 : 0;
    victim->n_a = (uint8_t)e->n_a;
    memset(victim->a, 0, sizeof victim->a);
    for (size_t i = 0; i < e->n_a; i++)
        snprintf(victim->a[i], sizeof victim->a[i], "%s", e->a[i]);
    victim->expires_ms = now_ms + (uint64_t)ttl * 1000;
    atomic_store_explicit(&victim->used_ms, now_ms, memory_order_relaxed);
    /* release: the bytes above are visible before the even number; a CAS, so a writer
     * whose stale lock was taken over leaves the slot to its new owner */
    uint32_t expect = mine;
    atomic_compare_exchange_strong_explicit(&victim->seq, &expect, mine + 1, memory_order_release,
                                            memory_order_relaxed);
}
