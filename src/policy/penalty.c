/*
 * penalty.c - the failed-login policy tables: delays per address, locks per (address,
 * account) pair, blocks per address (penalty.h).
 *
 * Two fixed arrays searched linearly: a login costs a password hash (milliseconds), so
 * scanning a few thousand small entries is noise next to it, and the memory is bounded
 * whatever a flood of distinct addresses does.
 */
#include "policy/penalty.h"

#include "core/config.h"
#include "core/log.h"
#include "policy/address.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One counted key: an address (account "") or an (address, account) pair. */
struct penalty_slot {
    char key[PENALTY_KEY_SIZE]; /* the address key; "" = free slot */
    char account[PENALTY_ACCOUNT_SIZE];
    unsigned failures; /* in the current window */
    uint64_t last_failure_ms;
    uint64_t blocked_until_ms; /* 0 = not blocked */
};

struct penalty_table {
    struct penalty_limits limits;
    uint64_t generation;       /* bumped by every change (the saver compares it) */
    uint64_t block_generation; /* bumped when a block starts or is lifted */
    struct penalty_slot addresses[PENALTY_ADDRESS_SLOTS];
    struct penalty_slot pairs[PENALTY_PAIR_SLOTS];
};

void penalty_limits_from_config(const struct config *cfg, struct penalty_limits *l_r)
{
    l_r->delay_initial_ms = cfg->auth_failure_delay;
    l_r->delay_max_ms = cfg->auth_failure_delay_max;
    l_r->window_ms = (uint64_t)cfg->auth_failure_window * 1000;
    l_r->account_max_failures = cfg->auth_account_max_failures;
    l_r->address_max_failures = cfg->auth_max_failures;
    l_r->block_ms = (uint64_t)cfg->auth_block_time * 1000;
}

struct penalty_table *penalty_table_new(const struct penalty_limits *limits)
{
    struct penalty_table *t = calloc(1, sizeof *t);
    if (t)
        t->limits = *limits;
    return t;
}

void penalty_table_free(struct penalty_table *t)
{
    free(t);
}

uint64_t penalty_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void penalty_query_init(struct penalty_query *q_r, const char *service, const char *peer_ip,
                        bool is_peer_trusted, const char *passed_ip, const char *account)
{
    bool is_passed = is_peer_trusted && passed_ip && passed_ip[0];
    q_r->ip = is_passed ? passed_ip : peer_ip;
    q_r->is_trusted = is_peer_trusted && !is_passed;
    q_r->account = account;
    q_r->service = service;
    q_r->now_ms = penalty_now_ms();
}

void penalty_gate_init(struct penalty_gate *g, const char *service, const char *peer_ip,
                       bool is_peer_trusted, const char *passed_ip)
{
    memset(g, 0, sizeof *g);
    snprintf(g->peer_ip, sizeof g->peer_ip, "%s", peer_ip ? peer_ip : "");
    snprintf(g->passed_ip, sizeof g->passed_ip, "%s", passed_ip ? passed_ip : "");
    g->is_peer_trusted = is_peer_trusted;
    g->service = service;
}

void penalty_gate_query(const struct penalty_gate *g, const char *account,
                        struct penalty_query *q_r)
{
    penalty_query_init(q_r, g->service, g->peer_ip, g->is_peer_trusted, g->passed_ip, account);
}

/* ---- keys ------------------------------------------------------------------------------ */

/* Lower-case, cut to PENALTY_ACCOUNT_SIZE - 1, control bytes made '?' (it is logged). */
static void penalty_account_key(const char *account, char out[PENALTY_ACCOUNT_SIZE])
{
    size_t i = 0;
    for (; account && account[i] && i + 1 < PENALTY_ACCOUNT_SIZE; i++) {
        unsigned char ch = (unsigned char)account[i];
        out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)tolower(ch);
    }
    out[i] = '\0';
}

/* ---- slots ----------------------------------------------------------------------------- */

/* The slot of (key, account) in slots[0..n), or NULL. */
static struct penalty_slot *slot_find(struct penalty_slot *slots, size_t n, const char *key,
                                      const char *account)
{
    for (size_t i = 0; i < n; i++)
        if (slots[i].key[0] && strcmp(slots[i].key, key) == 0 &&
            strcmp(slots[i].account, account) == 0)
            return &slots[i];
    return NULL;
}

/* A slot for (key, account): a free one, else the oldest unblocked, else the oldest. */
static struct penalty_slot *slot_take(struct penalty_slot *slots, size_t n, const char *key,
                                      const char *account, uint64_t now)
{
    struct penalty_slot *best = NULL;
    for (size_t i = 0; i < n; i++) {
        struct penalty_slot *p = &slots[i];
        if (!p->key[0]) {
            best = p;
            break;
        }
        bool is_blocked = p->blocked_until_ms > now;
        bool best_blocked = best && best->blocked_until_ms > now;
        if (!best || (is_blocked != best_blocked ? !is_blocked
                                                 : p->last_failure_ms < best->last_failure_ms))
            best = p;
    }
    memset(best, 0, sizeof *best);
    memcpy(best->key, key, PENALTY_KEY_SIZE);
    snprintf(best->account, sizeof best->account, "%s", account);
    return best;
}

/* A block that ran out is lifted (and logged) when next looked at. */
static void slot_expire(struct penalty_table *t, struct penalty_slot *p, uint64_t now)
{
    if (p->blocked_until_ms && p->blocked_until_ms <= now) {
        t->generation++;
        t->block_generation++;
        if (p->account[0])
            log_info("auth", "unblock: rip=%s, user=<%s> (block expired)", p->key, p->account);
        else
            log_info("auth", "unblock: rip=%s (block expired)", p->key);
        p->blocked_until_ms = 0;
        p->failures = 0;
    }
}

/* Failures older than the window are forgotten before a new one is counted. */
static void count_failure(const struct penalty_limits *l, unsigned *failures, uint64_t *last,
                          uint64_t now)
{
    if (*failures && now - *last >= l->window_ms)
        *failures = 0;
    if (*failures < UINT32_MAX)
        (*failures)++;
    *last = now;
}

/* min(initial * 2^(f-1), max) */
static uint64_t delay_for(const struct penalty_limits *l, unsigned failures)
{
    if (failures == 0 || l->delay_initial_ms == 0)
        return 0;
    uint64_t d = l->delay_initial_ms;
    for (unsigned i = 1; i < failures && d < l->delay_max_ms; i++)
        d *= 2;
    return d < l->delay_max_ms ? d : l->delay_max_ms;
}

/* ---- requests -------------------------------------------------------------------------- */

void penalty_check(struct penalty_table *t, const struct penalty_query *q,
                   struct penalty_answer *a_r)
{
    a_r->verdict = PENALTY_ALLOW;
    a_r->delay_ms = 0;
    char key[PENALTY_KEY_SIZE];
    if (!q->ip || !policy_address_key(q->ip, key))
        return;
    uint64_t now = q->now_ms;
    if (!q->is_trusted) {
        struct penalty_slot *a = slot_find(t->addresses, PENALTY_ADDRESS_SLOTS, key, "");
        if (a) {
            slot_expire(t, a, now);
            if (a->blocked_until_ms) {
                a_r->verdict = PENALTY_BLOCKED;
                return;
            }
            if (a->failures && now - a->last_failure_ms < t->limits.window_ms) {
                uint64_t until = a->last_failure_ms + delay_for(&t->limits, a->failures);
                a_r->delay_ms = until > now ? until - now : 0;
            }
        }
    }
    if (q->account && q->account[0]) {
        char account[PENALTY_ACCOUNT_SIZE];
        penalty_account_key(q->account, account);
        struct penalty_slot *p = slot_find(t->pairs, PENALTY_PAIR_SLOTS, key, account);
        if (p) {
            slot_expire(t, p, now);
            if (p->blocked_until_ms) {
                a_r->verdict = PENALTY_BLOCKED;
                a_r->delay_ms = 0;
            }
        }
    }
}

void penalty_report(struct penalty_table *t, const struct penalty_query *q, bool is_success,
                    struct penalty_answer *a_r)
{
    a_r->verdict = PENALTY_ALLOW;
    a_r->delay_ms = 0;
    char key[PENALTY_KEY_SIZE];
    if (!q->ip || !policy_address_key(q->ip, key))
        return;
    uint64_t now = q->now_ms;
    const struct penalty_limits *l = &t->limits;
    char account[PENALTY_ACCOUNT_SIZE];
    penalty_account_key(q->account, account);
    const char *service = q->service ? q->service : "auth";

    struct penalty_slot *a =
        q->is_trusted ? NULL : slot_find(t->addresses, PENALTY_ADDRESS_SLOTS, key, "");
    if (a)
        slot_expire(t, a, now);
    struct penalty_slot *p =
        account[0] ? slot_find(t->pairs, PENALTY_PAIR_SLOTS, key, account) : NULL;
    if (p)
        slot_expire(t, p, now);
    t->generation++;

    if (is_success) {
        /* the right password for a blocked pair or address is refused all the same:
         * otherwise a block would only stop the guesses that fail */
        if ((a && a->blocked_until_ms) || (p && p->blocked_until_ms)) {
            a_r->verdict = PENALTY_BLOCKED;
            return;
        }
        if (p)
            memset(p, 0, sizeof *p);
        return;
    }

    if (!q->is_trusted) {
        if (!a)
            a = slot_take(t->addresses, PENALTY_ADDRESS_SLOTS, key, "", now);
        count_failure(l, &a->failures, &a->last_failure_ms, now);
        if (!a->blocked_until_ms && l->address_max_failures &&
            a->failures >= l->address_max_failures) {
            a->blocked_until_ms = now + l->block_ms;
            t->block_generation++;
            log_warning(service, "block: rip=%s, %u failed logins, blocked for %llu s", key,
                        a->failures, (unsigned long long)(l->block_ms / 1000));
        }
        if (a->blocked_until_ms)
            a_r->verdict = PENALTY_BLOCKED;
    }
    if (account[0]) {
        if (!p)
            p = slot_take(t->pairs, PENALTY_PAIR_SLOTS, key, account, now);
        count_failure(l, &p->failures, &p->last_failure_ms, now);
        if (!p->blocked_until_ms && l->account_max_failures &&
            p->failures >= l->account_max_failures) {
            p->blocked_until_ms = now + l->block_ms;
            t->block_generation++;
            log_warning(service,
                        "block: rip=%s, user=<%s>, %u failed logins, blocked for %llu s", key,
                        account, p->failures, (unsigned long long)(l->block_ms / 1000));
        }
        if (p->blocked_until_ms)
            a_r->verdict = PENALTY_BLOCKED;
    }
}

/* ---- administration -------------------------------------------------------------------- */

size_t penalty_blocks_list(struct penalty_table *t, uint64_t now_ms,
                           void (*cb)(const struct penalty_block *b, void *arg), void *arg)
{
    size_t n = 0;
    struct penalty_block b;
    for (size_t i = 0; i < PENALTY_ADDRESS_SLOTS; i++) {
        struct penalty_slot *a = &t->addresses[i];
        if (!a->key[0])
            continue;
        slot_expire(t, a, now_ms);
        if (!a->blocked_until_ms)
            continue;
        memset(&b, 0, sizeof b);
        memcpy(b.ip, a->key, sizeof b.ip);
        b.failures = a->failures;
        b.remaining_ms = a->blocked_until_ms - now_ms;
        cb(&b, arg);
        n++;
    }
    for (size_t i = 0; i < PENALTY_PAIR_SLOTS; i++) {
        struct penalty_slot *p = &t->pairs[i];
        if (!p->key[0])
            continue;
        slot_expire(t, p, now_ms);
        if (!p->blocked_until_ms)
            continue;
        memcpy(b.ip, p->key, sizeof b.ip);
        memcpy(b.account, p->account, sizeof b.account);
        b.failures = p->failures;
        b.remaining_ms = p->blocked_until_ms - now_ms;
        cb(&b, arg);
        n++;
    }
    return n;
}

size_t penalty_blocks_clear(struct penalty_table *t, const char *ip, const char *account,
                            const char *by, uint64_t now_ms)
{
    char key[PENALTY_KEY_SIZE];
    if (ip && !policy_address_key(ip, key))
        return 0;
    char acct[PENALTY_ACCOUNT_SIZE] = "";
    if (account)
        penalty_account_key(account, acct);
    size_t n = 0;
    if (!account || !account[0]) {
        for (size_t i = 0; i < PENALTY_ADDRESS_SLOTS; i++) {
            struct penalty_slot *a = &t->addresses[i];
            if (!a->key[0] || (ip && strcmp(a->key, key) != 0))
                continue;
            if (a->blocked_until_ms > now_ms) {
                log_info("auth", "unblock: rip=%s (cleared by %s)", a->key, by);
                n++;
            }
            memset(a, 0, sizeof *a);
            t->generation++;
        }
    }
    if (!account || account[0]) {
        for (size_t i = 0; i < PENALTY_PAIR_SLOTS; i++) {
            struct penalty_slot *p = &t->pairs[i];
            if (!p->key[0] || (ip && strcmp(p->key, key) != 0) ||
                (account && strcmp(p->account, acct) != 0))
                continue;
            if (p->blocked_until_ms > now_ms) {
                log_info("auth", "unblock: rip=%s, user=<%s> (cleared by %s)", p->key, p->account,
                         by);
                n++;
            }
            memset(p, 0, sizeof *p);
            t->generation++;
        }
    }
    if (n)
        t->block_generation++;
    return n;
}

/* ---- persistence (penalty_store.c writes and reads the records) ------------------------ */

uint64_t penalty_table_generation(const struct penalty_table *t)
{
    return t->generation;
}

uint64_t penalty_table_block_generation(const struct penalty_table *t)
{
    return t->block_generation;
}

/* Does the slot still count: blocked, or failures inside the window? */
static bool slot_is_live(const struct penalty_table *t, const struct penalty_slot *p, uint64_t now)
{
    if (!p->key[0])
        return false;
    if (p->blocked_until_ms > now)
        return true;
    return p->failures && now - p->last_failure_ms < t->limits.window_ms;
}

/* A monotonic instant as wall-clock milliseconds. */
static int64_t to_unix(uint64_t at, uint64_t now, int64_t now_unix)
{
    return at >= now ? now_unix + (int64_t)(at - now) : now_unix - (int64_t)(now - at);
}

size_t penalty_table_export(const struct penalty_table *t, uint64_t now_ms, int64_t now_unix_ms,
                            struct penalty_record **records_r)
{
    *records_r = NULL;
    size_t n = 0;
    for (size_t i = 0; i < PENALTY_ADDRESS_SLOTS; i++)
        n += slot_is_live(t, &t->addresses[i], now_ms);
    for (size_t i = 0; i < PENALTY_PAIR_SLOTS; i++)
        n += slot_is_live(t, &t->pairs[i], now_ms);
    if (n == 0)
        return 0;
    struct penalty_record *r = calloc(n, sizeof *r);
    if (!r)
        return SIZE_MAX;
    size_t k = 0;
    for (size_t which = 0; which < 2; which++) {
        const struct penalty_slot *slots = which ? t->pairs : t->addresses;
        size_t count = which ? PENALTY_PAIR_SLOTS : PENALTY_ADDRESS_SLOTS;
        for (size_t i = 0; i < count && k < n; i++) {
            const struct penalty_slot *p = &slots[i];
            if (!slot_is_live(t, p, now_ms))
                continue;
            memcpy(r[k].key, p->key, sizeof r[k].key);
            memcpy(r[k].account, p->account, sizeof r[k].account);
            r[k].failures = p->failures;
            r[k].last_failure_unix_ms = to_unix(p->last_failure_ms, now_ms, now_unix_ms);
            r[k].blocked_until_unix_ms =
                p->blocked_until_ms > now_ms ? to_unix(p->blocked_until_ms, now_ms, now_unix_ms)
                                             : 0;
            k++;
        }
    }
    *records_r = r;
    return k;
}

size_t penalty_table_import(struct penalty_table *t, const struct penalty_record *records,
                            size_t n, uint64_t now_ms, int64_t now_unix_ms)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        const struct penalty_record *r = &records[i];
        char key[PENALTY_KEY_SIZE], account[PENALTY_ACCOUNT_SIZE];
        /* the file is only ours to write, but read as if anyone had: keys as the policy
         * makes them, bounded strings, times that make sense */
        if (!memchr(r->key, '\0', sizeof r->key) || !memchr(r->account, '\0', sizeof r->account) ||
            !policy_address_key(r->key, key) || strcmp(key, r->key) != 0 || r->failures == 0)
            continue;
        penalty_account_key(r->account, account);
        if (strcmp(account, r->account) != 0)
            continue;
        /* a time before 1970 is no time of ours (and would overflow the age below) */
        if (r->last_failure_unix_ms < 0 || r->blocked_until_unix_ms < 0 || now_unix_ms < 0)
            continue;
        int64_t age = now_unix_ms - r->last_failure_unix_ms;
        bool is_blocked = r->blocked_until_unix_ms > now_unix_ms;
        if (!is_blocked && (age < 0 || (uint64_t)age >= t->limits.window_ms))
            continue;
        uint64_t left = is_blocked ? (uint64_t)(r->blocked_until_unix_ms - now_unix_ms) : 0;
        if (left > t->limits.block_ms)
            left = t->limits.block_ms; /* never longer than the configured block */
        bool is_pair = account[0] != '\0';
        struct penalty_slot *slots = is_pair ? t->pairs : t->addresses;
        size_t count = is_pair ? PENALTY_PAIR_SLOTS : PENALTY_ADDRESS_SLOTS;
        struct penalty_slot *p = slot_find(slots, count, key, account);
        if (!p)
            p = slot_take(slots, count, key, account, now_ms);
        p->failures = r->failures;
        /* after a reboot the monotonic clock may be younger than the failure: then it
         * counts from the clock's start (a little longer, never shorter) */
        p->last_failure_ms = age > 0 && (uint64_t)age < now_ms ? now_ms - (uint64_t)age : 0;
        p->blocked_until_ms = is_blocked ? now_ms + (left ? left : 1) : 0;
        kept++;
    }
    if (kept)
        t->generation++;
    return kept;
}
