/*
 * delivery.h - internal to the smtp module: the delivery job of a received message
 * (delivery.c), shared with smtp/remote.c, which carries it between a login process and
 * the mail worker that delivers it (privilege separation: the login process may write
 * neither mailboxes nor the spool), and the milter step (filter.c) that runs first in the
 * same job (in the login process: docs/ARCHITECTURE.md §1).
 *
 * Ownership: the job owns every string and array below (smtp_delivery_job_free). On a
 * login process it is filled on the loop from the session and the transaction; on a mail
 * worker from the envelope a login process sent (smtp/remote.c), the homes and quotas
 * looked up again in the directory. Thread rules: core/job.h (the work sees the job only,
 * never the session).
 */
#ifndef TERN_SMTP_DELIVERY_H
#define TERN_SMTP_DELIVERY_H

#include "core/buf.h"
#include "core/job.h"
#include "core/util.h"
#include "smtp/session.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct smtp_filter;
struct smtp_mailauth_job;

struct smtp_delivery_job {
    struct job job; /* first (core/job.h) */
    char queue_id[UTIL_QUEUE_ID_SIZE];
    char *data_dir;
    char *sender;
    unsigned nrcpt;
    uint64_t start_ms;
    char *message_id; /* for the log line, may be NULL */

    struct buf body; /* message in memory, or the tail already flushed */
    int fd;          /* spill file or -1 */
    struct store_source src;

    struct smtp_local_target *local; /* moved from the transaction */
    size_t n_local;
    struct store_target *targets;
    char **headers; /* per local target */
    char **remote;  /* moved from the transaction */
    size_t n_remote;
    char *remote_header;
    unsigned *remote_notify; /* moved from the transaction (RFC 3461) */
    char **remote_orcpt;
    int dsn_ret;
    char *envid;    /* ENVID or NULL */
    char *hostname; /* for the success DSN's Reporting-MTA */
    time_t arrival;

    int queue_rc, store_rc;
    char *error;

    bool is_our_mail; /* mailauth hook: from our users (authenticated / relay_networks) */
    struct smtp_mailauth_job *mailauth; /* mailauth hook: port-25 checks, or NULL */
    /* LMTP (RFC 2033 §4.2): one reply per accepted RCPT, each from its own copies */
    bool is_lmtp;
    char **lmtp_rcpts; /* moved from the transaction, nrcpt entries */

    struct smtp_filter *filter; /* the milters' run (filter.c), NULL when none */
    char *junk_header;          /* junk.header ("" off), junk.mailbox, junk.quarantine */
    char *junk_mailbox;
    bool is_junk_quarantine;
    bool is_junk;               /* set by the work: local copies went to junk_mailbox */
    bool is_held;               /* set by the work: a milter quarantined the message */
    bool is_filtered_out;       /* the milters refused or discarded the message */
    bool is_filtered;           /* the milters and the spam verdict are done */

    /* privilege separation (smtp/remote.c) */
    bool is_remote; /* a login process: a mail worker delivers, the results come back */
    void *map;      /* a mail worker: the login process's sealed message, mapped */
    size_t map_len;
};

/* Workpool thread: deliver the message here (the milters first unless they ran already,
 * then the queue copy, local copies, success DSNs); the results go into the job
 * (queue_rc, store_rc, targets[].status, error, mailauth, is_filtered_out). */
void smtp_delivery_work(struct smtp_delivery_job *job);
/* Free the job and everything it holds. Any thread that owns it. */
void smtp_delivery_job_free(struct smtp_delivery_job *job);

/* filter.c */
/* Loop thread: move the session's milter conversations (milters.c) into a new filter
 * for the message stages, or NULL when no milter is to be asked (or out of memory:
 * *is_oom_r). A transaction a milter discarded at MAIL or RCPT gets a filter that
 * discards without asking. */
struct smtp_filter *smtp_filter_prepare(struct smtp_session *s, const struct smtp_delivery_job *job,
                                        bool *is_oom_r);
/* Workpool thread: run the milters over the job's message and apply what they decided
 * to the job (headers, body, sender, recipients). true: deliver (perhaps to hold, see
 * smtp_filter_is_held); false: do not deliver, smtp_filter_reply() says what to answer. */
bool smtp_filter_run(struct smtp_delivery_job *job);
/* After smtp_filter_run: a milter quarantined the message (it goes to the hold queue). */
bool smtp_filter_is_held(const struct smtp_filter *f);
/* The reply for a message the milters refused or discarded, and the log reason. */
const char *smtp_filter_reply(const struct smtp_filter *f);
const char *smtp_filter_why(const struct smtp_filter *f);
bool smtp_filter_is_discarded(const struct smtp_filter *f);
/* Workpool thread, after smtp_filter_run: is the message spam (a milter quarantined it
 * with junk.quarantine on, or its header holds junk.header)? Then every local copy goes
 * to junk.mailbox (job->is_junk). */
void smtp_filter_junk(struct smtp_delivery_job *job);
/* Does the header section of data[0..len) hold the field "Name: value" (name and value
 * compared without case, the value as a prefix, white space around it ignored)? */
bool smtp_header_has_field(const char *data, size_t len, const char *field);
/* Loop thread, in the job's done callbacks: the conversations back to the session (or
 * closed when it has gone: s NULL), ready for its next transaction. */
void smtp_filter_give_back(struct smtp_filter *f, struct smtp_session *s);
void smtp_filter_free(struct smtp_filter *f);

#endif
