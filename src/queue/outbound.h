/*
 * outbound.h - internals of outbound delivery (issue 5), shared by the queue runner
 * (runner.c, loop side), the delivery job (deliver.c, thread side), the SMTP client
 * (client.c), MX routing (dns.c) and bounces (bounce.c).
 *
 * Threading: the runner lives on the event loop (one timer). Scanning the spool and
 * delivering messages run on a dedicated workpool ("delivery pool") so that slow remote
 * servers never hold up the server's own workpool (fsync for SMTP receive). The SMTP
 * client is blocking-with-timeouts in those threads (poll() slices of 1 s, so shutdown is
 * prompt): a delivery is a long sequential dialogue and reads much more simply as straight
 * code than as a state machine; the cost is one thread per concurrent delivery, bounded by
 * queue.max_deliveries.
 */
#ifndef TERN_QUEUE_OUTBOUND_H
#define TERN_QUEUE_OUTBOUND_H

#include "core/buf.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

struct server_context;
struct queue_entry;
struct config;
struct auth_service;
typedef struct ssl_ctx_st SSL_CTX;

/* ---- retry schedule (runner.c) ------------------------------------------------------ */

/* Seconds to wait after the attempts-th failed attempt (1-based): min, 2*min, 4*min, ...
 * capped at max. */
unsigned outbound_retry_delay(unsigned attempts, unsigned min, unsigned max);

/* ---- routes (deliver.c) ------------------------------------------------------------- */

struct outbound_route {
    char host[256];
    uint16_t port;
    bool is_literal; /* "[host]": no MX lookup, connect to host's addresses */
};
/* Parse "[host]:port", "[host]", "host:port" or "host" (port defaults to default_port). */
int outbound_route_parse(const char *s, uint16_t default_port, struct outbound_route *r);

/* ---- DNS (dns.c) -------------------------------------------------------------------- */

struct outbound_addr {
    struct sockaddr_storage sa;
    socklen_t sa_len;
    char host[256]; /* MX host name (or the literal) */
    char ip[64];
    uint16_t port;
    bool is_dnssec; /* the MX RRset that named host was DNSSEC-validated (DANE, RFC 7672 §2.2) */
};

enum outbound_dns_status {
    OUTBOUND_DNS_OK,
    OUTBOUND_DNS_TEMPFAIL, /* SERVFAIL, timeout: defer */
    OUTBOUND_DNS_NOTFOUND, /* NXDOMAIN or no address at all: bounce 5.1.2 / 5.4.4 */
    OUTBOUND_DNS_NULLMX,   /* RFC 7505 null MX: bounce 5.1.10 */
};

struct outbound_dns;
/* resolver: "" for /etc/resolv.conf, else "IP" or "IP@port". trust_anchor: "" or NULL, or a
 * file of DS/DNSKEY records that turns DNSSEC validation on (is_dnssec in addresses). */
struct outbound_dns *outbound_dns_create(const char *resolver, const char *trust_anchor,
                                         char **error_r);
void outbound_dns_free(struct outbound_dns *d);
/* BLOCKING (thread). Addresses to try for a route, in order: MX preference order (equal
 * preferences shuffled), implicit MX (A/AAAA of the domain) when there is no MX. At most
 * max addresses. *addrs_r is malloc'd. */
enum outbound_dns_status outbound_dns_route(struct outbound_dns *d,
                                            const struct outbound_route *route,
                                            struct outbound_addr **addrs_r, size_t *n_r,
                                            char **error_r);
/* Loop side (issue 5: the DNS wait happens on the loop, not in a thread). Attach the
 * resolver's ub_fd to the loop once; then outbound_dns_route_async() runs the same routing
 * as outbound_dns_route() with ub_resolve_async and calls cb on the loop thread with a
 * malloc'd address list (caller frees) and, on failure, a reason (valid during cb). cb may
 * run before outbound_dns_route_async returns (address literals). 0 or -1 (not started). */
typedef void outbound_dns_cb(void *arg, enum outbound_dns_status st, struct outbound_addr *addrs,
                             size_t n, const char *error);
struct event_base;
int outbound_dns_attach(struct outbound_dns *d, struct event_base *base);
int outbound_dns_route_async(struct outbound_dns *d, const struct outbound_route *route,
                             outbound_dns_cb *cb, void *arg);
/* Loop side (issue 13: DNSBL, RHSBL, sender domains): one query of rrtype (1 A, 28 AAAA,
 * 15 MX, 16 TXT) for name. cb runs later on the loop thread (never inside this call) with
 * the status (OK: records exist; NOTFOUND: NXDOMAIN or no record of that type; TEMPFAIL:
 * SERVFAIL, timeout, or the resolver shut down) and, for A, up to OUTBOUND_DNS_MAX_A
 * addresses as text. 0, or -1 (not started: cb will not run). */
#define OUTBOUND_DNS_MAX_A 16
struct outbound_dns_answer {
    enum outbound_dns_status status;
    size_t n_a;
    char a[OUTBOUND_DNS_MAX_A][16];
    unsigned ttl; /* seconds, of the answer (0 when none) */
};
typedef void outbound_dns_query_cb(void *arg, const struct outbound_dns_answer *answer);
int outbound_dns_query_async(struct outbound_dns *d, const char *name, int rrtype,
                             outbound_dns_query_cb *cb, void *arg);

/* Pure: parse an MX RDATA (preference + uncompressed wire name) into pref and dotted name
 * ("." for the root, i.e. null MX). 0 or -1. */
int outbound_dns_parse_mx(const unsigned char *rdata, size_t len, uint16_t *pref_r, char *name_r,
                          size_t size);

/* ---- SMTP client (client.c) --------------------------------------------------------- */

/* A parsed SMTP reply: code, enhanced status (RFC 3463) if any, the whole text. */
struct outbound_reply {
    int code;
    char enh[16];    /* "2.0.0", or "" */
    char text[1024]; /* lines joined with "\n", without the codes' separators trimmed */
    char last[512];  /* last line as received: "250 2.0.0 Ok: queued as X" */
};
/* Pure parser over a receive buffer: 1 a complete reply was parsed (*consumed_r bytes),
 * 0 more data needed, -1 malformed (not "ddd[ -]text", mixed codes, line too long). */
int outbound_reply_parse(const char *data, size_t len, struct outbound_reply *r,
                         size_t *consumed_r);

struct outbound_ehlo {
    bool has_starttls, has_pipelining, has_8bitmime, has_smtputf8, has_auth_plain, has_auth_login,
        has_size;
    uint64_t size_limit; /* 0 = no limit advertised */
    bool has_dsn;        /* RFC 3461 (dsn helper) */
};
/* Pure: capabilities from an EHLO reply's text. */
void outbound_ehlo_parse(const struct outbound_reply *r, struct outbound_ehlo *e);

enum outbound_tls_policy { OUTBOUND_TLS_NONE, OUTBOUND_TLS_MAY, OUTBOUND_TLS_ENCRYPT };

/* How the peer's certificate is checked (issue 12, MTA-STS): not at all (opportunistic,
 * RFC 7435), checked and only logged (MTA-STS "testing"), or required: PKIX chain to a
 * trusted CA and the MX host name (RFC 8461 §4.2). Required implies TLS is required. */
enum outbound_tls_auth { OUTBOUND_AUTH_NONE, OUTBOUND_AUTH_PKIX_TESTING, OUTBOUND_AUTH_PKIX,
                         OUTBOUND_AUTH_DANE };

/* A usable TLSA record (RFC 6698 §2.1; RFC 7672 §3.1: usages 2 DANE-TA and 3 DANE-EE). */
#define OUTBOUND_TLSA_MAX 8
struct outbound_tlsa {
    uint8_t usage, selector, mtype;
    unsigned char data[256];
    size_t len;
};

struct outbound_client_opts {
    const char *helo_name;
    enum outbound_tls_policy tls;
    unsigned timeout;     /* seconds per read/write */
    const char *username; /* SASL; NULL = no AUTH */
    const char *password;
    SSL_CTX *ssl_ctx;
    const atomic_bool *is_stopping;
    enum outbound_tls_auth auth; /* mailauth hook: MTA-STS (RFC 8461), DANE (RFC 7672) */
    const char *auth_policy;     /* for log lines: "MTA-STS policy of example.org" */
    const struct outbound_tlsa *tlsa; /* OUTBOUND_AUTH_DANE: the host's records */
    size_t n_tlsa;
    /* TLS-RPT (RFC 8460): sessions under a policy are noted for this domain (NULL: not) */
    const char *tlsrpt_domain;
    const char *data_dir;
};

/* Outcome for one recipient (or for all, when the session failed before RCPT). */
struct outbound_result {
    int code;             /* SMTP code; 4xx/5xx invented for local conditions */
    char dsn[16];         /* "2.0.0", "4.4.1", "5.1.1" */
    char text[512];       /* "250 2.0.0 Ok: queued as X" or "connect to ...: Connection refused" */
    bool is_remote_reply; /* text is what the server said ("host said:") */
    char reply[512];      /* the server's reply "550 5.1.1 ..." (one line), or "" */
    bool is_dsn_passed;   /* the next hop took NOTIFY/ORCPT (it advertised DSN): its job now */
};

/* The message to send: fd positioned by offset, size bytes, CRLF lines. */
struct outbound_message {
    const char *sender;
    const char *const *recipients;
    size_t n_recipients;
    int fd;
    uint64_t offset, size;
    bool has_8bit;
    /* RFC 3461 parameters to pass on when the server advertises DSN (dsn helper): recipient
     * k is env->recipients[env_index[k]] when env_index[k] < env->n_recipients. NULL: none. */
    const struct queue_entry *env;
    const size_t *env_index;
};

enum outbound_session_status {
    OUTBOUND_SESSION_DONE,     /* per-recipient results are final for this attempt */
    OUTBOUND_SESSION_TRY_NEXT, /* connection-level failure: try the next address;
                                  results hold the reason for every recipient */
};
/* BLOCKING (thread). One SMTP session to addr delivering msg. results[n_recipients].
 * *conn_ms_r: time spent setting up (connect, greeting, EHLO, TLS, AUTH). */
enum outbound_session_status outbound_smtp_deliver(const struct outbound_client_opts *o,
                                                   const struct outbound_addr *addr,
                                                   const struct outbound_message *msg,
                                                   struct outbound_result *results,
                                                   uint64_t *conn_ms_r);
/* Close the SMTP sessions parked for reuse (at shutdown). */
void outbound_conn_cache_close_all(void);
/* A client SSL_CTX (TLS 1.2+; verification off unless a session asks for it, with the CAs
 * of ca_file, or the system's when NULL or ""). */
SSL_CTX *outbound_ssl_ctx_create(const char *ca_file, char **error_r);

/* ---- bounces (bounce.c) ------------------------------------------------------------- */

struct bounce_rcpt {
    const char *address;
    const char *dsn;        /* "5.1.1" */
    const char *diagnostic; /* "550 5.1.1 <x>: Recipient address rejected" */
    const char *remote_mta; /* host name or NULL */
    const char *smtp_reply; /* "550 5.1.1 ..." for Diagnostic-Code: smtp; or NULL */
    bool is_delayed;        /* Action: delayed (warning) instead of failed */
    /* added by the dsn helper (RFC 3461/3464): */
    const char *orcpt;  /* Original-Recipient "rfc822;x" (decoded ORCPT), or NULL */
    const char *action; /* "delivered", "relayed" (success DSN); NULL = failed/delayed */
};
struct bounce_info {
    const char *hostname; /* Reporting-MTA */
    const char *queue_id; /* of the original message */
    time_t arrival, now;
    const char *to;      /* where the DSN goes (original sender or postmaster) */
    const char *headers; /* original message headers (CRLF), may be NULL */
    size_t headers_len;
    const char *boundary; /* unique MIME boundary */
    const char *envid;    /* Original-Envelope-Id (RFC 3461 ENVID), or NULL (dsn helper) */
    bool is_full_message; /* headers[headers_len] is the whole message: return it as
                             message/rfc822 (RET=FULL, small enough; dsn helper) */
};
/* RET=FULL returns messages up to this size whole (Postfix's bounce_size_limit). */
#define BOUNCE_FULL_MAX 50000
/* Pure: an RFC 3464 multipart/report DSN (CRLF line ends) appended to out. */
bool bounce_build(struct buf *out, const struct bounce_info *info, const struct bounce_rcpt *r,
                  size_t n);
/* BLOCKING (dsn helper). Build a DSN for r[n] and queue it with the null sender to `to`
 * (RFC 3461 §6: notices never go to <>; the caller checks). new_id_r (>= 32 bytes) gets
 * the notice's queue id. 0 or -1 with *error_r. */
int bounce_queue_notice(const char *data_dir, const struct bounce_info *info,
                        const struct bounce_rcpt *r, size_t n, char *new_id_r, char **error_r);
/* Length of the header block at the start of a message (up to and including the empty
 * line, or all of it if none within len). */
size_t bounce_header_length(const char *msg, size_t len);

/* ---- TLS-RPT reports (tlsrpt.c, issue 12) ------------------------------------------- */

struct mailauth_dns;
struct outbound_tlsrpt_counts {
    unsigned queued;  /* reports queued as mail (mailto:) */
    unsigned posted;  /* reports POSTed (https:, answered 2xx) */
    unsigned pending; /* deliveries that failed and are tried again by a later call */
};
/* BLOCKING. Send the RFC 8460 aggregate reports of day ("YYYY-MM-DD") to the domains that
 * ask for them (mailto: and https: rua); what was delivered by an earlier call is not
 * sent again, and nothing once the day is done. 0 with *counts, or -1 with *error_r. */
int outbound_tlsrpt_send(const struct config *cfg, const struct mailauth_dns *dns,
                         const char *day, struct outbound_tlsrpt_counts *counts,
                         char **error_r);

/* ---- runner (runner.c) / delivery (deliver.c) --------------------------------------- */

/* What delivery threads share (read-only after start, except the flag). */
struct outbound_shared {
    const struct config *cfg;
    struct auth_service *auth;
    struct outbound_dns *dns;
    SSL_CTX *ssl_ctx;
    atomic_bool is_stopping;
    char *relay_password; /* relayhost.password or the file's first line */
    struct mailauth_resolver *mailauth_dns; /* mailauth hook: MTA-STS lookups (thread-safe) */
};

/* One queued message to attempt (thread side). */
/* Where one remote domain of a job goes, resolved on the loop before the job runs. */
struct outbound_job;
struct outbound_resolved {
    struct outbound_job *job; /* back-pointer for the DNS callback */
    bool is_done;
    enum outbound_dns_status status;
    struct outbound_addr *addrs;
    size_t n;
    char error[512];
};

struct outbound_job {
    struct outbound_shared *shared;
    char id[32];
    int state;      /* QUEUE_STATE_ACTIVE / DEFERRED: the directory it was found in */
    char **domains; /* distinct recipient domains (per-destination limit), lower case */
    size_t n_domains;
    struct outbound_resolved *resolved; /* [n_domains]; not done = resolve in the thread */
    unsigned dns_pending;
    struct outbound_job *next_waiting; /* runner's list of jobs waiting for DNS */
    /* set by the delivery thread when the attempt may have queued new mail (a bounce or
     * other notice): the runner then rescans at once instead of at the next tick */
    bool may_have_queued;
};
/* The route for a domain: transport.<domain>, else relayhost (*is_relay_r), else MX. */
int outbound_route_for(const struct config *cfg, const char *domain, struct outbound_route *r,
                       bool *is_relay_r);
/* BLOCKING (thread). Attempt delivery of job->id: local recipients via the store, remote
 * ones via SMTP; then delete, defer (rewrite with attempts+1 and next-retry mtime) or
 * bounce. */
void outbound_deliver(struct outbound_job *job);

struct outbound_runner;
/* Loop thread: start the runner (timer + delivery pool). NULL with *error_r. */
struct outbound_runner *outbound_runner_start(struct server_context *ctx, char **error_r);
/* Loop thread: stop; waits for deliveries in flight (they notice the stop within ~1 s),
 * but not past deadline_ms (util_now_ms clock, UINT64_MAX: no limit). true when stopped
 * and freed; false when deliveries still ran then (nothing freed: exit the process). */
bool outbound_runner_stop(struct outbound_runner *r, uint64_t deadline_ms);
/* In a process without the runner (a worker): outbound_runner_notify hands the message to
 * fn, which sends it to the queue process (loop thread). */
typedef void outbound_notify_fn(const char *queue_id, const char *const *recipients,
                                size_t n_recipients);
void outbound_runner_set_remote(outbound_notify_fn *fn);
/* Loop thread (added by relay-perf): queue_id was just committed to active/ by this
 * process with these recipients: deliver it now instead of at the next scan. A no-op when
 * no runner runs (e.g. unit tests) or n_recipients is 0; if it cannot queue the message
 * (out of memory) the next scan finds it, so calling it is never required for safety. */
void outbound_runner_notify(const char *queue_id, const char *const *recipients,
                            size_t n_recipients);

#endif
