/*
 * anvil.c - shared connection counts (anvil.h).
 *
 * Each slot holds a worker's counters and an open-addressing table of (address, count).
 * Only the owner writes a slot. A lookup probes ANVIL_PROBE positions from the address's
 * hash and does not stop at an empty one: the owner reuses entries whose count fell to 0
 * for any address, so there are no tombstones and a reader simply scans the window.
 *
 * Rate counters (anvil_rate_*) are a second table per slot, probed the same way from a
 * keyed hash (the seed is drawn when the mapping is made, so a client cannot choose keys
 * that crowd one probe window). The owner claims an entry by clearing its count and
 * start before it writes the key: a reader that races it sees no count, or a moment-old
 * one, never a count under another key for long.
 */
#include "core/anvil.h"

#include <arpa/inet.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#define ANVIL_PROBE      32
#define ANVIL_RATE_PROBE 16

struct anvil_entry {
    uint8_t addr[16];      /* IPv6, or IPv4 as ::ffff:a.b.c.d */
    _Atomic uint32_t count;
};

struct anvil_rate {
    uint8_t key[ANVIL_RATE_KEY];
    _Atomic uint64_t start_ms; /* the window's first event; 0: free */
    _Atomic uint64_t last_ms;  /* the last event: the least recently used makes room */
    _Atomic uint32_t count;    /* events in the window */
};

struct anvil_slot {
    _Atomic pid_t pid;
    unsigned kind;
    unsigned generation;
    _Atomic bool is_draining;
    _Atomic uint32_t sessions;
    uint64_t started;
    _Atomic uint32_t conns;
    _Atomic uint32_t by_role[ANVIL_ROLES];
    _Atomic uint64_t accepted;
    _Atomic uint64_t heap_bytes;
    struct anvil_entry addrs[ANVIL_ADDRS];
    struct anvil_rate rates[ANVIL_RATES];
};

struct anvil {
    uint64_t seed; /* of the rate counters' hash, drawn by anvil_create */
    struct anvil_slot slots[ANVIL_SLOTS];
    _Alignas(64) unsigned char dns_area[ANVIL_DNS_AREA]; /* policy/dnscache.c's */
};

static struct anvil *anvil_self;
static struct anvil_slot *anvil_mine;

struct anvil *anvil_create(void)
{
    void *p = mmap(NULL, sizeof(struct anvil), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    struct anvil *a = p;
    if (getrandom(&a->seed, sizeof a->seed, 0) != (ssize_t)sizeof a->seed)
        a->seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)p;
    return a;
}

void anvil_slot_reset(struct anvil *a, unsigned slot, pid_t pid, unsigned generation,
                      unsigned kind)
{
    if (slot >= ANVIL_SLOTS)
        return;
    struct anvil_slot *s = &a->slots[slot];
    memset(s->addrs, 0, sizeof s->addrs);
    memset(s->rates, 0, sizeof s->rates);
    atomic_store(&s->conns, 0);
    atomic_store(&s->sessions, 0);
    atomic_store(&s->is_draining, false);
    s->kind = kind;
    for (int i = 0; i < ANVIL_ROLES; i++)
        atomic_store(&s->by_role[i], 0);
    atomic_store(&s->accepted, 0);
    s->generation = generation;
    s->started = (uint64_t)time(NULL);
    atomic_store(&s->pid, pid);
}

void anvil_slot_clear(struct anvil *a, unsigned slot)
{
    if (slot < ANVIL_SLOTS) {
        anvil_slot_reset(a, slot, 0, 0, 0);
        a->slots[slot].started = 0;
    }
}

void anvil_slot_set_draining(struct anvil *a, unsigned slot)
{
    if (slot < ANVIL_SLOTS)
        atomic_store(&a->slots[slot].is_draining, true);
}

void anvil_slot_info(const struct anvil *a, unsigned slot, struct anvil_slot_info *info_r)
{
    memset(info_r, 0, sizeof *info_r);
    if (slot >= ANVIL_SLOTS)
        return;
    struct anvil_slot *s = (struct anvil_slot *)&a->slots[slot];
    info_r->pid = atomic_load(&s->pid);
    info_r->kind = s->kind;
    info_r->generation = s->generation;
    info_r->is_draining = atomic_load(&s->is_draining);
    info_r->sessions = atomic_load(&s->sessions);
    info_r->started = s->started;
    info_r->conns = atomic_load(&s->conns);
    for (int i = 0; i < ANVIL_ROLES; i++)
        info_r->by_role[i] = atomic_load(&s->by_role[i]);
    info_r->accepted = atomic_load(&s->accepted);
    info_r->heap_bytes = atomic_load(&s->heap_bytes);
}

void anvil_heap_set(uint64_t bytes)
{
    if (anvil_mine)
        atomic_store(&anvil_mine->heap_bytes, bytes);
}

void *anvil_dns_area(size_t *size_r, uint64_t *seed_r)
{
    if (!anvil_self)
        return NULL;
    *size_r = sizeof anvil_self->dns_area;
    *seed_r = anvil_self->seed ^ 0x5bd1e9955bd1e995ull; /* not the rate counters' own */
    return anvil_self->dns_area;
}

void anvil_attach(struct anvil *a, unsigned slot)
{
    anvil_self = a;
    anvil_mine = a && slot < ANVIL_SLOTS ? &a->slots[slot] : NULL;
}

/* addr text -> 16 bytes; false when it is no address (then it is not limited). */
static bool anvil_key(const char *text, uint8_t key[16])
{
    memset(key, 0, 16);
    struct in_addr v4;
    if (inet_pton(AF_INET, text, &v4) == 1) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &v4, 4);
        return true;
    }
    return inet_pton(AF_INET6, text, key) == 1;
}

static uint32_t anvil_hash(const uint8_t key[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

/* Connections from key in slot s (any writer's view, a moment old at worst). */
static uint32_t anvil_count_in(struct anvil_slot *s, const uint8_t key[16], uint32_t h)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < ANVIL_PROBE; i++) {
        struct anvil_entry *e = &s->addrs[(h + i) % ANVIL_ADDRS];
        if (memcmp(e->addr, key, 16) == 0)
            n += atomic_load(&e->count);
    }
    return n;
}

/* ---- rate counters ------------------------------------------------------------------- */

bool anvil_is_attached(void)
{
    return anvil_self != NULL && anvil_mine != NULL;
}

/* Where key's probe window starts: FNV-1a over the key from the mapping's seed, mixed. */
static uint32_t anvil_rate_hash(const uint8_t key[ANVIL_RATE_KEY])
{
    uint64_t h = 14695981039346656037ull ^ anvil_self->seed;
    for (int i = 0; i < ANVIL_RATE_KEY; i++)
        h = (h ^ key[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (uint32_t)h;
}

/* Is entry e a live counter of key at now? Its count then, else 0. */
static uint32_t anvil_rate_live(struct anvil_rate *e, const uint8_t key[ANVIL_RATE_KEY],
                                uint64_t now_ms, uint64_t window_ms)
{
    uint64_t start = atomic_load(&e->start_ms);
    if (start == 0 || now_ms - start >= window_ms || memcmp(e->key, key, ANVIL_RATE_KEY) != 0)
        return 0;
    return atomic_load(&e->count);
}

uint32_t anvil_rate_count(const uint8_t key[ANVIL_RATE_KEY], uint64_t now_ms, uint64_t window_ms)
{
    if (!anvil_is_attached())
        return 0;
    uint32_t h = anvil_rate_hash(key), n = 0;
    for (unsigned i = 0; i < ANVIL_SLOTS; i++) {
        struct anvil_slot *s = &anvil_self->slots[i];
        if (s != anvil_mine && !atomic_load(&s->pid))
            continue;
        for (unsigned k = 0; k < ANVIL_RATE_PROBE; k++)
            n += anvil_rate_live(&s->rates[(h + k) % ANVIL_RATES], key, now_ms, window_ms);
    }
    return n;
}

void anvil_rate_add(const uint8_t key[ANVIL_RATE_KEY], uint64_t now_ms, uint64_t window_ms)
{
    if (!anvil_is_attached())
        return;
    if (now_ms == 0)
        now_ms = 1; /* start 0 means a free entry */
    uint32_t h = anvil_rate_hash(key);
    struct anvil_rate *e = NULL, *free_e = NULL, *lru = NULL;
    for (unsigned k = 0; k < ANVIL_RATE_PROBE && !e; k++) {
        struct anvil_rate *c = &anvil_mine->rates[(h + k) % ANVIL_RATES];
        uint64_t start = atomic_load(&c->start_ms);
        if (start != 0 && memcmp(c->key, key, ANVIL_RATE_KEY) == 0)
            e = c;
        else if (start == 0 || now_ms - start >= window_ms)
            free_e = free_e ? free_e : c;
        else if (!lru || atomic_load(&c->last_ms) < atomic_load(&lru->last_ms))
            lru = c;
    }
    if (e && now_ms - atomic_load(&e->start_ms) >= window_ms) {
        /* the key's window is over: a new one starts with this event */
        atomic_store(&e->count, 0);
        atomic_store(&e->start_ms, now_ms);
    } else if (!e) {
        e = free_e ? free_e : lru;
        atomic_store(&e->count, 0);
        atomic_store(&e->start_ms, 0);
        memcpy(e->key, key, ANVIL_RATE_KEY);
        atomic_store(&e->start_ms, now_ms);
    }
    atomic_store(&e->last_ms, now_ms);
    atomic_fetch_add(&e->count, 1);
}

uint32_t anvil_total(void)
{
    if (!anvil_self)
        return 0;
    uint32_t n = 0;
    for (unsigned i = 0; i < ANVIL_SLOTS; i++)
        if (atomic_load(&anvil_self->slots[i].pid))
            n += atomic_load(&anvil_self->slots[i].conns);
    return n;
}

void anvil_balance(uint32_t *mine_r, uint32_t *fewest_other_r)
{
    *mine_r = 0;
    *fewest_other_r = UINT32_MAX;
    if (!anvil_self || !anvil_mine)
        return;
    *mine_r = atomic_load(&anvil_mine->conns);
    for (unsigned i = 0; i < ANVIL_SLOTS; i++) {
        struct anvil_slot *s = &anvil_self->slots[i];
        if (s == anvil_mine || !atomic_load(&s->pid) || s->generation != anvil_mine->generation ||
            s->kind != anvil_mine->kind || atomic_load(&s->is_draining))
            continue;
        uint32_t n = atomic_load(&s->conns);
        if (n < *fewest_other_r)
            *fewest_other_r = n;
    }
}

bool anvil_admit(const char *addr, unsigned role, unsigned max_total, unsigned max_per_ip,
                 const char **why_r)
{
    *why_r = NULL;
    if (!anvil_self || !anvil_mine)
        return true;
    if (max_total && anvil_total() >= max_total) {
        *why_r = "total";
        return false;
    }
    uint8_t key[16];
    bool is_addr = anvil_key(addr, key);
    uint32_t h = is_addr ? anvil_hash(key) : 0;
    if (is_addr && max_per_ip) {
        uint32_t n = 0;
        for (unsigned i = 0; i < ANVIL_SLOTS; i++)
            if (atomic_load(&anvil_self->slots[i].pid))
                n += anvil_count_in(&anvil_self->slots[i], key, h);
        if (n >= max_per_ip) {
            *why_r = "per_ip";
            return false;
        }
    }
    if (is_addr) {
        /* our own table: the entry of this address, else a free one in the window */
        struct anvil_entry *free_e = NULL, *e = NULL;
        for (unsigned i = 0; i < ANVIL_PROBE && !e; i++) {
            struct anvil_entry *c = &anvil_mine->addrs[(h + i) % ANVIL_ADDRS];
            if (memcmp(c->addr, key, 16) == 0)
                e = c;
            else if (!free_e && atomic_load(&c->count) == 0)
                free_e = c;
        }
        if (!e && free_e) {
            e = free_e;
            memcpy(e->addr, key, 16);
        }
        /* no room in the window (thousands of addresses on one hash): counted in the
         * totals only, the per-address limit is not applied to it */
        if (e)
            atomic_fetch_add(&e->count, 1);
    }
    atomic_fetch_add(&anvil_mine->conns, 1);
    if (role < ANVIL_ROLES)
        atomic_fetch_add(&anvil_mine->by_role[role], 1);
    atomic_fetch_add(&anvil_mine->accepted, 1);
    return true;
}

void anvil_release(const char *addr, unsigned role)
{
    if (!anvil_mine)
        return;
    uint8_t key[16];
    if (anvil_key(addr, key)) {
        uint32_t h = anvil_hash(key);
        for (unsigned i = 0; i < ANVIL_PROBE; i++) {
            struct anvil_entry *e = &anvil_mine->addrs[(h + i) % ANVIL_ADDRS];
            if (memcmp(e->addr, key, 16) == 0 && atomic_load(&e->count) > 0) {
                atomic_fetch_sub(&e->count, 1);
                break;
            }
        }
    }
    if (atomic_load(&anvil_mine->conns) > 0)
        atomic_fetch_sub(&anvil_mine->conns, 1);
    if (role < ANVIL_ROLES && atomic_load(&anvil_mine->by_role[role]) > 0)
        atomic_fetch_sub(&anvil_mine->by_role[role], 1);
}

uint32_t anvil_sessions_of(pid_t pid)
{
    if (!anvil_self || pid <= 0)
        return 0;
    for (unsigned i = 0; i < ANVIL_SLOTS; i++)
        if (atomic_load(&anvil_self->slots[i].pid) == pid)
            return atomic_load(&anvil_self->slots[i].sessions);
    return 0;
}

void anvil_session_add(void)
{
    if (anvil_mine)
        atomic_fetch_add(&anvil_mine->sessions, 1);
}

void anvil_session_release(void)
{
    if (anvil_mine && atomic_load(&anvil_mine->sessions) > 0)
        atomic_fetch_sub(&anvil_mine->sessions, 1);
}
