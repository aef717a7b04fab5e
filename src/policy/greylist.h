/*
 * greylist.h - greylisting (RFC 6647): a (client network, sender, recipient) triplet seen
 * for the first time is deferred; the same triplet retried after greylist.delay and within
 * greylist.retry_window passes, and keeps passing while it is seen within
 * greylist.max_age. A client network whose triplets passed greylist.auto_pass times is put
 * on a pass list: its new triplets pass at once (postgrey's auto-whitelist).
 *
 * The client network is the IPv4 /24 or IPv6 /64 (postgrey's default: a sending farm
 * retries from a neighbouring address). Senders and recipients are compared
 * case-insensitively. State lives in SQLite (<data_dir>/greylist.db, WAL), so it survives
 * restarts and is one for every worker process (each opens the file; a check is one
 * BEGIN IMMEDIATE transaction, with a busy timeout); calls are plain-data requests with
 * the time passed in.
 *
 * Ownership: greylist_open() returns a handle freed with greylist_close(). Thread rules:
 * greylist_check() is BLOCKING (SQLite): call it from the workpool; the handle is
 * thread-safe (one connection behind a mutex).
 */
#ifndef TERN_POLICY_GREYLIST_H
#define TERN_POLICY_GREYLIST_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct config;

struct greylist_limits {
    unsigned delay;        /* seconds before a retry passes */
    unsigned retry_window; /* seconds after the first attempt within which it must come */
    unsigned max_age;      /* seconds a passed triplet (or a pass-listed client) is kept */
    unsigned auto_pass;    /* passes after which the client network skips greylisting; 0 off */
};

struct greylist;

void greylist_limits_from_config(const struct config *cfg, struct greylist_limits *l_r);
struct greylist *greylist_open(const char *path, const struct greylist_limits *limits,
                               char **error_r);
void greylist_close(struct greylist *g);

enum greylist_verdict {
    GREYLIST_PASS,       /* a known triplet, or a pass-listed client */
    GREYLIST_DEFER,      /* new, or retried too early: 450 */
    GREYLIST_ERROR,      /* the database failed: let the mail through (never lose it) */
};

struct greylist_answer {
    enum greylist_verdict verdict;
    unsigned retry_in; /* DEFER: seconds until a retry would pass */
    bool is_pass_listed;
};

/* BLOCKING. Look up and update the triplet (ip, sender, rcpt) at now. */
void greylist_check(struct greylist *g, const char *ip, const char *sender, const char *rcpt,
                    time_t now, struct greylist_answer *a_r);

/* The client network of ip ("192.0.2.0/24", "2001:db8::/64"); false if not an address. */
bool greylist_network(const char *ip, char *out, size_t size);

#endif
