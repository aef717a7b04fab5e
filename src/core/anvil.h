/*
 * anvil.h - connection counts shared by the processes that hold client connections (the
 * login processes, which accept, and the mail workers, which hold the plain sessions
 * handed to them): per client address (for max_connections_per_ip) and in total
 * (max_connections), plus the per-process counters `tern status` shows. A connection is
 * counted once, where its socket is: a TLS session relayed by a login process for a mail
 * worker counts in the login process and shows as a session of the worker. Named after Postfix's anvil, which keeps such counts for all smtpd
 * processes; ours is a shared memory mapping rather than a server, so an accept costs a
 * few memory reads and no message.
 *
 * The master creates the mapping before forking and gives each worker process a slot.
 * A worker writes only its own slot (its loop thread), so there are no locks: readers
 * (other workers' admission checks, the master's status) may see a count a moment old,
 * which only makes a limit a little soft at the edge. When a worker dies the master
 * clears its slot before handing it to the replacement, so a crash leaks no counts.
 *
 * The rate limits' counters (policy/ratelimit.h, issue 13) live here too, in the same
 * way: each worker counts its own events per key in its slot, and a check adds up every
 * live worker's count of the key in its current window. So a client gets a limit once,
 * not once per worker; two workers deciding at the same instant may each let one event
 * more through, and a worker that dies takes its counts along.
 *
 * The DNS list answers of the SMTP screen are cached in an area of the same mapping
 * (anvil_dns_area), so one lookup serves every login process.
 *
 * Thread rules: anvil_* on a worker's loop thread (its slot) or in the master.
 */
#ifndef TERN_CORE_ANVIL_H
#define TERN_CORE_ANVIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ANVIL_SLOTS     64 /* login and worker processes alive at once (two generations at
                              a reload) */
#define ANVIL_ADDRS     8192 /* distinct client addresses one worker can count */
#define ANVIL_ROLES     9  /* CONN_ROLE_COUNT */
#define ANVIL_RATES     8192 /* rate counters one worker keeps (keys of its recent events) */
#define ANVIL_RATE_KEY  20   /* a rate counter's key: opaque bytes (policy/ratelimit.c) */
#define ANVIL_DNS_AREA  (2u * 1024 * 1024) /* the DNS answer cache (policy/dnscache.c) */

struct anvil;

/* What a worker publishes about itself (read by `tern status` through the master). */
struct anvil_slot_info {
    pid_t pid;        /* 0: slot unused */
    unsigned kind;    /* SERVER_PROC_WORKER or SERVER_PROC_LOGIN */
    unsigned generation;
    bool is_draining; /* an old generation: accepts nothing */
    uint32_t sessions; /* mail worker: sessions handed over to it (plain and relayed) */
    uint64_t started; /* unix time */
    uint32_t conns;   /* open connections */
    uint32_t by_role[ANVIL_ROLES];
    uint64_t accepted; /* connections accepted since start */
    uint64_t heap_bytes; /* malloc'd bytes in use when last published (0: not yet) */
};

/* Master: the shared mapping (MAP_SHARED | MAP_ANONYMOUS), NULL on failure. */
struct anvil *anvil_create(void);
/* Master: forget everything slot counted (its process is gone) and mark it for pid, a
 * process of kind (SERVER_PROC_*). */
void anvil_slot_reset(struct anvil *a, unsigned slot, pid_t pid, unsigned generation,
                      unsigned kind);
/* Master: the slot's process drains (a reload): the others no longer balance with it. */
void anvil_slot_set_draining(struct anvil *a, unsigned slot);
/* Master: mark the slot unused. */
void anvil_slot_clear(struct anvil *a, unsigned slot);
/* Anyone: a copy of slot's published counters. */
void anvil_slot_info(const struct anvil *a, unsigned slot, struct anvil_slot_info *info_r);

/* Worker: the area of the mapping where the DNS answer cache of every process lives
 * (policy/dnscache.c lays it out; opaque here, and written by any process: its readers
 * check what they read), with a secret seed for its hash. NULL when not attached. */
void *anvil_dns_area(size_t *size_r, uint64_t *seed_r);
/* Worker: the slot this process writes (set once after fork). */
void anvil_attach(struct anvil *a, unsigned slot);
/* Worker: may one more connection from addr (text, IPv4 or IPv6) be accepted under the
 * limits (0 = none)? Counts every worker's connections. When true it is counted. */
bool anvil_admit(const char *addr, unsigned role, unsigned max_total, unsigned max_per_ip,
                 const char **why_r);
/* Worker: a connection counted by anvil_admit has gone. */
void anvil_release(const char *addr, unsigned role);
/* Worker: how many events of key every live worker counted in its current window (a
 * window is window_ms from a worker's first event of the key; an older one counts 0). */
uint32_t anvil_rate_count(const uint8_t key[ANVIL_RATE_KEY], uint64_t now_ms, uint64_t window_ms);
/* Worker: one more event of key, counted in this process's slot. When its table is full
 * around the key, the counter used least recently makes room. */
void anvil_rate_add(const uint8_t key[ANVIL_RATE_KEY], uint64_t now_ms, uint64_t window_ms);
/* Is a mapping attached (the rate limits have somewhere to count)? */
bool anvil_is_attached(void);

/* Worker: connections open in all workers together. */
uint32_t anvil_total(void);
/* Worker: this process's connections, and the fewest any other live process of the same
 * kind and generation that is not draining has (UINT32_MAX when there is no other). For
 * balancing the accepts. */
void anvil_balance(uint32_t *mine_r, uint32_t *fewest_other_r);
/* Anyone: the sessions the mail worker pid holds (0 when unknown): a login process
 * hands a session to the worker with the fewest. */
uint32_t anvil_sessions_of(pid_t pid);
/* Worker: publish the bytes this process has allocated and not freed (live heap, as
 * opposed to its RSS, which keeps pages malloc holds for reuse). */
void anvil_heap_set(uint64_t bytes);
/* Mail worker: a session handed over to this process arrived / is gone. */
void anvil_session_add(void);
void anvil_session_release(void);

#endif
