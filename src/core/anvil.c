/*
 * anvil.c - shared connection counts (anvil.h).
 *
 * Each slot holds a worker's counters and an open-addressing table of (address, count).
 * Only the owner writes a slot. A lookup probes ANVIL_PROBE positions from the address's
 * hash and does not stop at an empty one: the owner reuses entries whose count fell to 0
 * for any address, so there are no tombstones and a reader simply scans the window.
 */
#include "core/anvil.h"

#include <arpa/inet.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define ANVIL_PROBE 32

struct anvil_entry {
    uint8_t addr[16];      /* IPv6, or IPv4 as ::ffff:a.b.c.d */
    _Atomic uint32_t count;
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
    struct anvil_entry addrs[ANVIL_ADDRS];
};

struct anvil {
    struct anvil_slot slots[ANVIL_SLOTS];
};

static struct anvil *anvil_self;
static struct anvil_slot *anvil_mine;

struct anvil *anvil_create(void)
{
    void *p = mmap(NULL, sizeof(struct anvil), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void anvil_slot_reset(struct anvil *a, unsigned slot, pid_t pid, unsigned generation,
                      unsigned kind)
{
    if (slot >= ANVIL_SLOTS)
        return;
    struct anvil_slot *s = &a->slots[slot];
    memset(s->addrs, 0, sizeof s->addrs);
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
