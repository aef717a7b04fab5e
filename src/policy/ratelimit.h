/*
 * ratelimit.h - rate limits per client address and per authenticated user (Postfix's anvil:
 * smtpd_client_connection_rate_limit, _message_rate_limit, _recipient_rate_limit).
 *
 * Each limit counts events in windows of ratelimit.window seconds (Postfix's
 * anvil_rate_time_unit, 60 s) that start with a client's first event: connections and
 * messages (MAIL) and recipients (RCPT) per client address (an IPv4 address, an IPv6
 * /64), and messages and recipients per authenticated user wherever they connect from. An
 * event over a limit is refused (the caller answers 421 4.7.0 for a connection, 450 4.7.1
 * for MAIL or RCPT) and is not counted, so a client that waits gets through in the next
 * window. A limit of 0 is off.
 *
 * The counts live in the anvil (core/anvil.h), shared by every worker process: each
 * worker adds its own events, a check adds up all of them, so a limit holds for the whole
 * server, not per worker. Without an attached anvil nothing is counted (and nothing
 * refused): `tern serve` attaches one in both process models.
 *
 * Ownership: ratelimit_new() returns limits the caller frees with ratelimit_free().
 * Thread rules: ratelimit_event() on a worker's loop thread (anvil.h).
 */
#ifndef TERN_POLICY_RATELIMIT_H
#define TERN_POLICY_RATELIMIT_H

#include "core/anvil.h"

#include <stdbool.h>
#include <stdint.h>

struct config;

#define RATELIMIT_SLOTS ANVIL_RATES /* counters one worker keeps */

enum ratelimit_event { RATELIMIT_CONNECTION, RATELIMIT_MESSAGE, RATELIMIT_RECIPIENT, RATELIMIT_EVENT_COUNT };

struct ratelimit_limits {
    unsigned address[RATELIMIT_EVENT_COUNT]; /* per client address per window; 0 = no limit */
    unsigned user[RATELIMIT_EVENT_COUNT];    /* per authenticated user (connections unused) */
    uint64_t window_ms;
};

struct ratelimit;

void ratelimit_limits_from_config(const struct config *cfg, struct ratelimit_limits *l_r);
struct ratelimit *ratelimit_new(const struct ratelimit_limits *limits);
void ratelimit_free(struct ratelimit *a);

/* One event, as plain data. */
struct ratelimit_query {
    enum ratelimit_event event;
    const char *ip;   /* client address */
    const char *user; /* authenticated user, NULL when none */
    uint64_t now_ms;
};

struct ratelimit_answer {
    bool is_allowed;
    bool is_user_limit; /* the refusal came from the user's limit, not the address's */
    unsigned count;     /* events in this window, this one included when allowed */
};

/* Count the event if it is within the limits; else refuse it (not counted). */
void ratelimit_event(struct ratelimit *a, const struct ratelimit_query *q, struct ratelimit_answer *a_r);

#endif
