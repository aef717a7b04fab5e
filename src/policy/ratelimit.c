/*
 * ratelimit.c - rate limits per client address and per user (ratelimit.h), counted in the
 * anvil (core/anvil.h) so that every worker process sees every other's events.
 *
 * A counter's key is ANVIL_RATE_KEY bytes: the kind ('a' a client address, 'u' a user),
 * the event, then 16 bytes naming the client: an IPv4 address as ::ffff:a.b.c.d, an IPv6
 * address cut to its /64 (policy/address.h says why), or, for a user name (lower case)
 * and anything that is no address, the first 16 bytes of its SHA-256.
 */
#include "policy/ratelimit.h"

#include "core/anvil.h"
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#define RATELIMIT_NAME_MAX 330 /* a login of up to 320 octets, lower-cased for the digest */

struct ratelimit {
    struct ratelimit_limits limits;
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

/* The 16 bytes of a name: its SHA-256's first half, lower-cased first when asked. */
static void ratelimit_digest(const char *name, bool is_lower, uint8_t out[16])
{
    char buf[RATELIMIT_NAME_MAX];
    size_t n = 0;
    for (; name[n] && n < sizeof buf; n++)
        buf[n] = is_lower ? (char)tolower((unsigned char)name[n]) : name[n];
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)buf, n, md);
    memcpy(out, md, 16);
}

/* The counter key of event for an address (kind 'a') or a user (kind 'u'). */
static void ratelimit_key(char kind, enum ratelimit_event ev, const char *who,
                          uint8_t key[ANVIL_RATE_KEY])
{
    memset(key, 0, ANVIL_RATE_KEY);
    key[0] = (uint8_t)kind;
    key[1] = (uint8_t)ev;
    uint8_t *id = key + ANVIL_RATE_KEY - 16;
    struct in_addr v4;
    if (kind == 'a' && inet_pton(AF_INET, who, &v4) == 1) {
        id[10] = id[11] = 0xff;
        memcpy(id + 12, &v4, 4);
    } else if (kind == 'a' && inet_pton(AF_INET6, who, id) == 1) {
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(id, v4mapped, 12) != 0)
            memset(id + 8, 0, 8); /* the /64 */
    } else {
        ratelimit_digest(who, kind == 'u', id);
    }
}

void ratelimit_event(struct ratelimit *a, const struct ratelimit_query *q,
                     struct ratelimit_answer *a_r)
{
    a_r->is_allowed = true;
    a_r->is_user_limit = false;
    a_r->count = 0;
    enum ratelimit_event ev = q->event;
    if (ev >= RATELIMIT_EVENT_COUNT)
        return;
    unsigned addr_limit = q->ip ? a->limits.address[ev] : 0;
    unsigned user_limit = q->user && q->user[0] ? a->limits.user[ev] : 0;
    uint64_t window = a->limits.window_ms ? a->limits.window_ms : 60000;
    uint8_t ak[ANVIL_RATE_KEY], uk[ANVIL_RATE_KEY];
    uint32_t an = 0, un = 0;
    if (addr_limit) {
        ratelimit_key('a', ev, q->ip, ak);
        an = anvil_rate_count(ak, q->now_ms, window);
    }
    if (user_limit) {
        ratelimit_key('u', ev, q->user, uk);
        un = anvil_rate_count(uk, q->now_ms, window);
    }
    /* both must allow before either counts: a refused event is not counted */
    if (addr_limit && an >= addr_limit) {
        a_r->is_allowed = false;
        a_r->count = an;
        return;
    }
    if (user_limit && un >= user_limit) {
        a_r->is_allowed = false;
        a_r->is_user_limit = true;
        a_r->count = un;
        return;
    }
    if (addr_limit)
        anvil_rate_add(ak, q->now_ms, window);
    if (user_limit)
        anvil_rate_add(uk, q->now_ms, window);
    a_r->count = addr_limit ? an + 1 : user_limit ? un + 1 : 0;
}
