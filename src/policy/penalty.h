/*
 * penalty.h - the failed-login policy, shared by SMTP AUTH, POP3 and IMAP.
 *
 * Three rules, none of which can lock an innocent user out on behalf of someone else:
 *   1. a growing delay per client address (Dovecot's auth penalty): after f failures from
 *      an address, its next attempt is held for min(initial * 2^(f-1), max) milliseconds
 *      counted from the last failure, then verified as usual: a correct password is still
 *      accepted, only later;
 *   2. a lock per (address, account) pair after auth.account_max_failures failures in the
 *      window: that account refuses every password from that address for auth.block_time,
 *      while its owner elsewhere, and other accounts behind the same address, log in;
 *   3. a hard limit per address for plain floods (auth.max_failures, much higher than 2):
 *      the address is refused outright for auth.block_time.
 * Failures older than auth.failure_window are forgotten. An IPv4 client is counted per
 * address, an IPv6 client per /64 (one link, RFC 4291 §2.5.4; the least a customer gets,
 * RFC 6177: counting per IPv6 address would let an attacker walk 2^64 of them).
 *
 * A client in auth.trusted_networks (a webmail, an IMAP proxy) speaks for many users:
 * when it passes the real client address (IMAP ID x-originating-ip, SMTP XCLIENT ADDR)
 * that address is penalised; when it passes none, rule 1 and 3 are skipped for it and
 * only the pairs are counted (query.is_trusted).
 *
 * Each call is a request of plain data answered with plain data, no pointers into
 * sessions, and time is passed in (now_ms, monotonic): that is what lets the table live in
 * the auth process for every worker (auth_wire.h PENALTY_*). Blocks are logged here under
 * the query's service name, unblocks as "auth", once each: an expired block is logged
 * when it is next looked at.
 *
 * Memory: fixed tables (PENALTY_ADDRESS_SLOTS addresses, PENALTY_PAIR_SLOTS pairs); a
 * flood of distinct keys evicts the entry whose last failure is oldest, preferring
 * entries that hold no block.
 *
 * The table belongs to the directory (auth.h auth_penalty_*, one per struct auth_service):
 * sessions ask through those from their login jobs (struct penalty_gate below), so where
 * the directory is served (the auth process) the failed-login state is one for every
 * worker.
 *
 * Ownership: penalty_table_new() returns a table the caller frees with
 * penalty_table_free(). Thread rules: not thread-safe; the auth service serialises calls.
 */
#ifndef TERN_POLICY_PENALTY_H
#define TERN_POLICY_PENALTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

#define PENALTY_ADDRESS_SLOTS 4096
#define PENALTY_PAIR_SLOTS    4096
#define PENALTY_KEY_SIZE      48  /* POLICY_KEY_SIZE (policy/address.h) */
#define PENALTY_ACCOUNT_SIZE  256 /* longer login names are compared on their first 255 */
#define PENALTY_DELAY_MAX_MS  600000 /* a delay is never longer, whatever the config says */

struct penalty_limits {
    uint64_t delay_initial_ms;     /* auth.failure_delay; 0 = no delays */
    uint64_t delay_max_ms;         /* auth.failure_delay_max */
    uint64_t window_ms;            /* auth.failure_window */
    unsigned account_max_failures; /* auth.account_max_failures; 0 = no pair locks */
    unsigned address_max_failures; /* auth.max_failures; 0 = no address blocks */
    uint64_t block_ms;             /* auth.block_time */
};

struct penalty_table;

/* The limits of a loaded config (auth.* keys). */
void penalty_limits_from_config(const struct config *cfg, struct penalty_limits *l_r);
struct penalty_table *penalty_table_new(const struct penalty_limits *limits);
void penalty_table_free(struct penalty_table *t);

/* A monotonic clock in milliseconds, for now_ms. */
uint64_t penalty_now_ms(void);

/* One login attempt, as plain data. */
struct penalty_query {
    const char *ip;      /* the address to penalise: the real client behind a trusted proxy */
    const char *account; /* login name as given (any case), NULL or "" when not yet known */
    bool is_trusted;     /* a trusted proxy that passed no client address */
    const char *service; /* "imap", "pop3", "smtp": for the log lines */
    uint64_t now_ms;
};

/* Fill a query for a login now: peer_ip is the connection's address, is_peer_trusted
 * whether it lies in auth.trusted_networks, passed_ip the client address such a peer
 * passed (NULL or "": none; ignored from an untrusted peer). */
void penalty_query_init(struct penalty_query *q_r, const char *service, const char *peer_ip,
                        bool is_peer_trusted, const char *passed_ip, const char *account);

/* What a login job carries for the policy (plain data copied on the loop, the thread
 * rule) and what the policy answered it; auth.h's auth_penalty_gate_* use it on the
 * job's pool thread, beside the credential check. */
struct penalty_gate {
    char peer_ip[64];     /* the connection's address */
    char passed_ip[64];   /* the client address a trusted proxy passed ("" none) */
    bool is_peer_trusted; /* the peer lies in auth.trusted_networks */
    const char *service;  /* static: "imap", "pop3", "smtpd" */
    bool is_checked;      /* the check before verifying has run */
    /* answers */
    bool is_blocked;   /* refused: not verified (check), or a success refused (report) */
    unsigned delay_ms; /* hold the attempt this long first: the loop runs the job again */
};

/* Fill a gate on the loop (arguments as penalty_query_init's). */
void penalty_gate_init(struct penalty_gate *g, const char *service, const char *peer_ip,
                       bool is_peer_trusted, const char *passed_ip);
/* The query of the gate's client for account (NULL: not known yet), now. */
void penalty_gate_query(const struct penalty_gate *g, const char *account,
                        struct penalty_query *q_r);

enum penalty_verdict {
    PENALTY_ALLOW,   /* go ahead (after delay_ms) */
    PENALTY_BLOCKED, /* refuse without verifying (check) / despite success (report) */
};

struct penalty_answer {
    enum penalty_verdict verdict;
    uint64_t delay_ms; /* check: hold the attempt this long before verifying it */
};

/* Before verifying credentials: blocked, or allowed after a delay. An unknown account
 * (SASL before its first step) is checked against the address rules only. */
void penalty_check(struct penalty_table *t, const struct penalty_query *q,
                   struct penalty_answer *a_r);
/* After verifying: count a failure (may start a block, logged) or forget the pair's
 * failures on success. PENALTY_BLOCKED on a success means the pair or address is blocked:
 * the caller must refuse the login as if the password were wrong. */
void penalty_report(struct penalty_table *t, const struct penalty_query *q, bool is_success,
                    struct penalty_answer *a_r);

/* A block, as `tern auth blocks` lists it. account is "" for an address block. */
struct penalty_block {
    char ip[PENALTY_KEY_SIZE];
    char account[PENALTY_ACCOUNT_SIZE];
    unsigned failures;
    uint64_t remaining_ms;
};
/* Call cb for each active block (addresses first, then pairs); returns how many. */
size_t penalty_blocks_list(struct penalty_table *t, uint64_t now_ms,
                           void (*cb)(const struct penalty_block *b, void *arg), void *arg);
/* Lift blocks: ip NULL = every block; account NULL = the address and all its pairs,
 * "" = the address block only, else that pair. Also forgets their failure counts.
 * Each lifted block is logged with who asked (by). Returns how many were lifted. */
size_t penalty_blocks_clear(struct penalty_table *t, const char *ip, const char *account,
                            const char *by, uint64_t now_ms);

/* ---- persistence: the table survives a restart of the process that holds it ------------
 *
 * The entries that still count (blocked, or failures inside auth.failure_window) as
 * records with wall-clock times, so they mean the same after the process (or the machine)
 * restarted; penalty_store.c keeps them in SQLite. Expired entries are never exported, so
 * the file holds at most PENALTY_ADDRESS_SLOTS + PENALTY_PAIR_SLOTS rows. */
struct penalty_record {
    char key[PENALTY_KEY_SIZE];         /* policy_address_key form */
    char account[PENALTY_ACCOUNT_SIZE]; /* "" for an address entry */
    unsigned failures;
    int64_t last_failure_unix_ms;
    int64_t blocked_until_unix_ms; /* 0: not blocked */
};
/* A counter bumped by every change of the table, and one bumped only when a block starts
 * or is lifted (worth saving at once). */
uint64_t penalty_table_generation(const struct penalty_table *t);
uint64_t penalty_table_block_generation(const struct penalty_table *t);
/* The live entries into *records_r (malloc'd; NULL when none). Returns how many, or
 * SIZE_MAX when out of memory. */
size_t penalty_table_export(const struct penalty_table *t, uint64_t now_ms, int64_t now_unix_ms,
                            struct penalty_record **records_r);
/* Put saved entries back: malformed ones and those that no longer count are skipped, a
 * block never lasts longer than auth.block_time from now. Returns how many were kept. */
size_t penalty_table_import(struct penalty_table *t, const struct penalty_record *records,
                            size_t n, uint64_t now_ms, int64_t now_unix_ms);

/* penalty_store.c: the records in SQLite (<data_dir>/penalty.db). BLOCKING (file I/O):
 * never on an event loop. One store is used by one thread at a time. */
struct penalty_store;
/* Open (create, mode 0600) the file and claim it: from then on a store opened earlier by
 * another process (the auth process a reload replaces) saves nothing more. NULL with
 * *error_r (malloc'd) on failure. */
struct penalty_store *penalty_store_open(const char *path, char **error_r);
void penalty_store_close(struct penalty_store *ps);
/* Replace what the file holds with records[0..n), in one transaction. 0, -1 on failure,
 * 1 when a newer process claimed the file (nothing written; stop saving). */
int penalty_store_save(struct penalty_store *ps, const struct penalty_record *records, size_t n);
/* Read at most max records (malloc'd into *records_r). Returns how many, -1 on failure. */
long penalty_store_load(struct penalty_store *ps, size_t max, struct penalty_record **records_r);

#endif
