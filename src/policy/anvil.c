/*
 * anvil.c - rate limits per client address and per user in fixed windows (anvil.h).
 *
 * One open-addressed hash table of ANVIL_SLOTS entries keyed by "a:<address key>" or
 * "u:<user>"; a probe sequence of at most ANVIL_PROBE slots, and when all are taken the
 * least recently used of them is reused, so a flood of distinct keys costs a bounded
 * table and a bounded search.
 */
#include "policy/anvil.h"

#include "core/config.h"
#include "policy/address.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANVIL_KEY_SIZE 330 /* "u:" + a login of up to 320 octets */
#define ANVIL_PROBE    16

struct anvil_slot {
    char key[ANVIL_KEY_SIZE]; /* "" = free */
    uint64_t window_start_ms;
    uint64_t last_ms;
    unsigned count[ANVIL_EVENT_COUNT];
};

struct anvil {
    struct anvil_limits limits;
    struct anvil_slot slots[ANVIL_SLOTS];
};

void anvil_limits_from_config(const struct config *cfg, struct anvil_limits *l_r)
{
    l_r->address[ANVIL_CONNECTION] = cfg->ratelimit_connections;
    l_r->address[ANVIL_MESSAGE] = cfg->ratelimit_messages;
    l_r->address[ANVIL_RECIPIENT] = cfg->ratelimit_recipients;
    l_r->user[ANVIL_CONNECTION] = 0;
    l_r->user[ANVIL_MESSAGE] = cfg->ratelimit_user_messages;
    l_r->user[ANVIL_RECIPIENT] = cfg->ratelimit_user_recipients;
    l_r->window_ms = (uint64_t)(cfg->ratelimit_window ? cfg->ratelimit_window : 60) * 1000;
}

struct anvil *anvil_new(const struct anvil_limits *limits)
{
    struct anvil *a = calloc(1, sizeof *a);
    if (a)
        a->limits = *limits;
    return a;
}

void anvil_free(struct anvil *a)
{
    free(a);
}

/* FNV-1a */
static uint64_t anvil_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The slot of key, taken (and reset) when absent; never the slot keep. */
static struct anvil_slot *anvil_slot(struct anvil *a, const char *key, uint64_t now,
                                     const struct anvil_slot *keep)
{
    uint64_t h = anvil_hash(key);
    struct anvil_slot *victim = NULL;
    for (unsigned i = 0; i < ANVIL_PROBE; i++) {
        struct anvil_slot *s = &a->slots[(h + i) % ANVIL_SLOTS];
        if (s->key[0] && strcmp(s->key, key) == 0)
            return s;
        if (s == keep)
            continue;
        if (!s->key[0]) {
            if (!victim || victim->key[0])
                victim = s;
        } else if (!victim || (victim->key[0] && s->last_ms < victim->last_ms)) {
            victim = s;
        }
    }
    memset(victim, 0, sizeof *victim);
    snprintf(victim->key, sizeof victim->key, "%s", key);
    victim->window_start_ms = now;
    return victim;
}

/* The slot's counters for the current window. */
static void anvil_roll(const struct anvil *a, struct anvil_slot *s, uint64_t now)
{
    if (now - s->window_start_ms >= a->limits.window_ms) {
        memset(s->count, 0, sizeof s->count);
        s->window_start_ms = now;
    }
    s->last_ms = now;
}

void anvil_event(struct anvil *a, const struct anvil_query *q, struct anvil_answer *a_r)
{
    a_r->is_allowed = true;
    a_r->is_user_limit = false;
    a_r->count = 0;
    enum anvil_event ev = q->event;
    unsigned addr_limit = a->limits.address[ev];
    unsigned user_limit = q->user && q->user[0] ? a->limits.user[ev] : 0;
    if (!addr_limit && !user_limit)
        return;
    char key[ANVIL_KEY_SIZE];
    struct anvil_slot *as = NULL, *us = NULL;
    char ak[POLICY_KEY_SIZE];
    if (addr_limit && q->ip && policy_address_key(q->ip, ak)) {
        snprintf(key, sizeof key, "a:%s", ak);
        as = anvil_slot(a, key, q->now_ms, NULL);
        anvil_roll(a, as, q->now_ms);
    }
    if (user_limit) {
        size_t n = snprintf(key, sizeof key, "u:%s", q->user);
        for (size_t i = 2; i < n && i < sizeof key; i++)
            key[i] = (char)tolower((unsigned char)key[i]);
        us = anvil_slot(a, key, q->now_ms, as);
        anvil_roll(a, us, q->now_ms);
    }
    /* both must allow before either counts: a refused event is not counted */
    if (as && as->count[ev] >= addr_limit) {
        a_r->is_allowed = false;
        a_r->count = as->count[ev];
        return;
    }
    if (us && us->count[ev] >= user_limit) {
        a_r->is_allowed = false;
        a_r->is_user_limit = true;
        a_r->count = us->count[ev];
        return;
    }
    if (as)
        a_r->count = ++as->count[ev];
    if (us) {
        unsigned c = ++us->count[ev];
        if (!as)
            a_r->count = c;
    }
}
