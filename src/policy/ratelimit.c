/*
 * ratelimit.c - rate limits per client address and per user in fixed windows (ratelimit.h).
 *
 * One open-addressed hash table of RATELIMIT_SLOTS entries keyed by "a:<address key>" or
 * "u:<user>"; a probe sequence of at most RATELIMIT_PROBE slots, and when all are taken the
 * least recently used of them is reused, so a flood of distinct keys costs a bounded
 * table and a bounded search.
 */
#include "policy/ratelimit.h"

#include "core/config.h"
#include "policy/address.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATELIMIT_KEY_SIZE 330 /* "u:" + a login of up to 320 octets */
#define RATELIMIT_PROBE    16

struct ratelimit_slot {
    char key[RATELIMIT_KEY_SIZE]; /* "" = free */
    uint64_t window_start_ms;
    uint64_t last_ms;
    unsigned count[RATELIMIT_EVENT_COUNT];
};

struct ratelimit {
    struct ratelimit_limits limits;
    struct ratelimit_slot slots[RATELIMIT_SLOTS];
};

void ratelimit_limits_from_config(const struct config *cfg, struct ratelimit_limits *l_r)
{
    l_r->address[RATELIMIT_CONNECTION] = cfg->ratelimit_connections;
    l_r->address[RATELIMIT_MESSAGE] = cfg->ratelimit_messages;
    l_r->address[RATELIMIT_RECIPIENT] = cfg->ratelimit_recipients;
    l_r->user[RATELIMIT_CONNECTION] = 0;
    l_r->user[RATELIMIT_MESSAGE] = cfg->ratelimit_user_messages;
    l_r->user[RATELIMIT_RECIPIENT] = cfg->ratelimit_user_recipients;
    l_r->window_ms = (uint64_t)(cfg->ratelimit_window ? cfg->ratelimit_window : 60) * 1000;
}

struct ratelimit *ratelimit_new(const struct ratelimit_limits *limits)
{
    struct ratelimit *a = calloc(1, sizeof *a);
    if (a)
        a->limits = *limits;
    return a;
}

void ratelimit_free(struct ratelimit *a)
{
    free(a);
}

/* FNV-1a */
static uint64_t ratelimit_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The slot of key, taken (and reset) when absent; never the slot keep. */
static struct ratelimit_slot *ratelimit_slot(struct ratelimit *a, const char *key, uint64_t now,
                                     const struct ratelimit_slot *keep)
{
    uint64_t h = ratelimit_hash(key);
    struct ratelimit_slot *victim = NULL;
    for (unsigned i = 0; i < RATELIMIT_PROBE; i++) {
        struct ratelimit_slot *s = &a->slots[(h + i) % RATELIMIT_SLOTS];
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
static void ratelimit_roll(const struct ratelimit *a, struct ratelimit_slot *s, uint64_t now)
{
    if (now - s->window_start_ms >= a->limits.window_ms) {
        memset(s->count, 0, sizeof s->count);
        s->window_start_ms = now;
    }
    s->last_ms = now;
}

void ratelimit_event(struct ratelimit *a, const struct ratelimit_query *q, struct ratelimit_answer *a_r)
{
    a_r->is_allowed = true;
    a_r->is_user_limit = false;
    a_r->count = 0;
    enum ratelimit_event ev = q->event;
    unsigned addr_limit = a->limits.address[ev];
    unsigned user_limit = q->user && q->user[0] ? a->limits.user[ev] : 0;
    if (!addr_limit && !user_limit)
        return;
    char key[RATELIMIT_KEY_SIZE];
    struct ratelimit_slot *as = NULL, *us = NULL;
    char ak[POLICY_KEY_SIZE];
    if (addr_limit && q->ip && policy_address_key(q->ip, ak)) {
        snprintf(key, sizeof key, "a:%s", ak);
        as = ratelimit_slot(a, key, q->now_ms, NULL);
        ratelimit_roll(a, as, q->now_ms);
    }
    if (user_limit) {
        size_t n = snprintf(key, sizeof key, "u:%s", q->user);
        for (size_t i = 2; i < n && i < sizeof key; i++)
            key[i] = (char)tolower((unsigned char)key[i]);
        us = ratelimit_slot(a, key, q->now_ms, as);
        ratelimit_roll(a, us, q->now_ms);
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
