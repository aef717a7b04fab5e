/*
 * delivery.h - internal to the smtp module: the delivery job of a received message
 * (delivery.c), shared with smtp/remote.c, which carries it between a login process and
 * the mail worker that delivers it (privilege separation: the login process may write
 * neither mailboxes nor the spool).
 *
 * Ownership: the job owns every string and array below (smtp_delivery_job_free). On a
 * login process it is filled on the loop from the session and the transaction; on a mail
 * worker from the envelope a login process sent (smtp/remote.c), the homes and quotas
 * looked up again in the directory. Thread rules: core/job.h (the work sees the job only).
 */
#ifndef TERN_SMTP_DELIVERY_H
#define TERN_SMTP_DELIVERY_H

#include "core/buf.h"
#include "core/job.h"
#include "core/util.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct smtp_local_target;
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

    /* privilege separation (smtp/remote.c) */
    bool is_remote; /* a login process: a mail worker delivers, the results come back */
    void *map;      /* a mail worker: the login process's sealed message, mapped */
    size_t map_len;
};

/* Workpool thread: deliver the message here (queue copy, local copies, success DSNs);
 * the results go into the job (queue_rc, store_rc, targets[].status, error, mailauth). */
void smtp_delivery_work(struct smtp_delivery_job *job);
/* Free the job and everything it holds. Any thread that owns it. */
void smtp_delivery_job_free(struct smtp_delivery_job *job);

#endif
