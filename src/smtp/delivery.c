/*
 * delivery.c - hand a received message to the store (local mailboxes) and the queue
 * (foreign recipients) in the workpool, and reply 250 only after both are durable.
 *
 * Trace headers (RFC 5321 §4.4, RFC 3848, RFC 6531 §3.7.3), prepended per local copy:
 *   Return-Path: <sender>
 *   X-Original-To: <address as given in RCPT TO>        (Postfix virtual(8) habit)
 *   Delivered-To: <canonical user>                      (loop detection, RFC 9228 style)
 *   Received: from HELO (name [ip])
 *           (using TLS...) (Authenticated sender: u)
 *           by hostname (Tern) with ESMTP|ESMTPS|ESMTPA|ESMTPSA|SMTP|UTF8SMTP... id QUEUEID
 *           for <rcpt>; date
 * The queued copy for remote recipients gets the Received line only (Return-Path and
 * Delivered-To belong to final delivery). On submission (authenticated or ports
 * 587/465) a missing Message-ID and Date are added (RFC 6409 §8.2, §8.3).
 *
 * Order and atomicity: the queue copy is written first, then the local copies (store
 * delivery is all-or-nothing). If the store fails, the queue copy is deleted again, so a
 * 4xx/5xx reply means "nothing was accepted" and the client's retry cannot duplicate.
 */
#include "auth/auth.h"
#include "core/config.h"
#include "core/log.h"
#include "core/workpool.h"
#include "mailauth/mailauth.h"
#include "queue/outbound.h"
#include "queue/queue.h"
#include "smtp/delivery.h"
#include "smtp/mailauth_hook.h"
#include "smtp/remote.h"
#include "smtp/session.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

/* RFC 3848 / RFC 6531 §3.7.3 "with" keyword for the Received header. */
static const char *received_protocol(const struct smtp_session *s, bool is_utf8)
{
    if (s->role == CONN_ROLE_LMTP)
        return "LMTP"; /* RFC 3848 */
    if (!s->is_esmtp)
        return "SMTP";
    bool tls = conn_is_tls(s->c), auth = s->auth_user != NULL;
    if (is_utf8)
        return tls && auth ? "UTF8SMTPSA" : tls ? "UTF8SMTPS" : auth ? "UTF8SMTPA" : "UTF8SMTP";
    return tls && auth ? "ESMTPSA" : tls ? "ESMTPS" : auth ? "ESMTPA" : "ESMTP";
}

static void received_header(struct buf *b, const struct smtp_session *s, const char *id,
                            const char *for_rcpt, const char *date)
{
    const char *ip = conn_peer_ip(s->c);
    if (!ip)
        ip = "unknown";
    bool is_v6 = strchr(ip, ':') != NULL;
    buf_printf(b, "Received: from %s (%s [%s%s])\r\n", s->helo[0] ? s->helo : "unknown",
               conn_peer_name(s->c), is_v6 ? "IPv6:" : "", ip);
    if (conn_is_tls(s->c)) {
        const char *d = conn_tls_description(s->c);
        if (d && d[0])
            buf_printf(b, "\t(using %s)\r\n", d);
    }
    if (s->auth_user)
        buf_printf(b, "\t(Authenticated sender: %s)\r\n", s->auth_user);
    buf_printf(b, "\tby %s (Tern) with %s id %s", smtp_hostname(s),
               received_protocol(s, s->txn.params.is_smtputf8), id);
    if (for_rcpt)
        buf_printf(b, "\r\n\tfor <%s>", for_rcpt);
    buf_printf(b, "; %s\r\n", date);
}

void smtp_delivery_job_free(struct smtp_delivery_job *job)
{
    for (size_t i = 0; i < job->n_local; i++) {
        free(job->local[i].user);
        free(job->local[i].home);
        free(job->local[i].orig_rcpt);
        free(job->local[i].orcpt);
        if (job->headers)
            free(job->headers[i]);
    }
    free(job->local);
    free(job->headers);
    free(job->targets);
    for (size_t i = 0; i < job->n_remote; i++) {
        free(job->remote[i]);
        if (job->remote_orcpt)
            free(job->remote_orcpt[i]);
    }
    free(job->remote);
    free(job->remote_notify);
    free(job->remote_orcpt);
    free(job->envid);
    free(job->hostname);
    free(job->remote_header);
    free(job->data_dir);
    free(job->sender);
    free(job->message_id);
    free(job->error);
    free(job->junk_header);
    free(job->junk_mailbox);
    smtp_filter_free(job->filter);
    smtp_mailauth_job_free(job->mailauth);
    for (size_t i = 0; job->lmtp_rcpts && i < job->nrcpt; i++)
        free(job->lmtp_rcpts[i]);
    free(job->lmtp_rcpts);
    buf_free(&job->body);
    if (job->fd >= 0)
        close(job->fd);
    if (job->map)
        munmap(job->map, job->map_len);
    free(job);
}

/* Workpool thread, after the local copies are durable: RFC 3461 §5.2.2 success DSNs
 * ("delivered") for local recipients that asked with NOTIFY=SUCCESS, queued to the
 * sender through the normal path. A failure here is logged only: the message itself is
 * delivered and will be acknowledged. */
static void delivery_success_notices(struct smtp_delivery_job *job)
{
    if (!job->sender[0])
        return; /* RFC 3461 §6: never to the null sender */
    size_t n = 0;
    /* (an LMTP copy that failed on its own has no success to report) */
    for (size_t i = 0; i < job->n_local; i++)
        n += queue_notify_wants(job->local[i].notify, QUEUE_NOTIFY_SUCCESS) &&
             job->targets[i].status == STORE_OK;
    if (n == 0)
        return;
    struct bounce_rcpt *br = calloc(n, sizeof *br);
    if (!br)
        return;
    size_t k = 0;
    for (size_t i = 0; i < job->n_local; i++) {
        const struct smtp_local_target *lt = &job->local[i];
        if (!queue_notify_wants(lt->notify, QUEUE_NOTIFY_SUCCESS) ||
            job->targets[i].status != STORE_OK)
            continue;
        br[k++] = (struct bounce_rcpt){.address = lt->orig_rcpt,
                                       .dsn = "2.0.0",
                                       .diagnostic = "delivered to mailbox",
                                       .orcpt = lt->orcpt,
                                       .action = "delivered"};
    }
    /* the returned headers: RFC 3461 §4.3 success notices never carry the body */
    char hdr[64 * 1024];
    size_t hl = 0;
    if (job->src.fd >= 0) {
        ssize_t got = pread(job->src.fd, hdr, sizeof hdr, 0);
        hl = got > 0 ? bounce_header_length(hdr, (size_t)got) : 0;
    } else {
        size_t want = job->src.len < sizeof hdr ? job->src.len : sizeof hdr;
        memcpy(hdr, job->src.data, want);
        hl = bounce_header_length(hdr, want);
    }
    struct bounce_info info = {.hostname = job->hostname,
                               .queue_id = job->queue_id,
                               .arrival = job->arrival,
                               .now = time(NULL),
                               .to = job->sender,
                               .headers = hdr,
                               .headers_len = hl,
                               .envid = job->envid};
    char new_id[32], *err = NULL;
    if (bounce_queue_notice(job->data_dir, &info, br, k, new_id, &err) == 0)
        log_info("bounce", "%s: sender delivery status notification: %s", job->queue_id, new_id);
    else
        log_error("bounce", "%s: cannot queue the delivery status notification: %s", job->queue_id,
                  err ? err : "?");
    free(err);
    free(br);
}

/* ---- mailauth hook (issue 12) ------------------------------------------------------- */
/* Workpool thread: DKIM-sign the copy queued for remote recipients, after every header
 * we add (Received, Message-ID, Date: they are in remote_header), with the keys of the
 * From domain. A signing failure is logged and the message goes out unsigned: losing or
 * delaying a user's mail over a key problem would be worse (the log says which key). */
static void delivery_dkim_sign(struct smtp_delivery_job *job)
{
    struct mailauth_message m = {.prefix = job->remote_header,
                                 .prefix_len = strlen(job->remote_header),
                                 .data = job->src.data,
                                 .len = job->src.len,
                                 .fd = job->src.fd,
                                 .fd_size = job->src.size};
    struct buf sigs;
    buf_init(&sigs, 0);
    char domain[254], *err = NULL;
    int rc = mailauth_sign_for_author(job->data_dir, &m, (int64_t)time(NULL), &sigs, domain,
                                      sizeof domain, &err);
    if (rc < 0) {
        log_warning("dkim", "%s: not signed: %s", job->queue_id, err ? err : "error");
    } else if (rc > 0 && buf_append_str(&sigs, job->remote_header)) {
        log_info("dkim", "%s: DKIM-Signature field added (d=%s)", job->queue_id, domain);
        free(job->remote_header);
        job->remote_header = buf_steal(&sigs);
    }
    free(err);
    buf_free(&sigs);
}

/* Workpool thread: authenticate mail from strangers (SPF from MAIL, DKIM, DMARC), put our
 * Authentication-Results on every copy, file DMARC failures to Junk. false when the
 * message must not be delivered (job->mailauth->reply says why). */
static bool delivery_mailauth(struct smtp_delivery_job *job)
{
    struct smtp_mailauth_job *mj = job->mailauth;
    smtp_mailauth_job_run(mj, &job->body, &job->fd, &job->src);
    if (mj->action == SMTP_MAILAUTH_REJECT || mj->action == SMTP_MAILAUTH_TEMPFAIL)
        return false;
    for (size_t i = 0; mj->header && i < job->n_local; i++) {
        /* after Return-Path, X-Original-To and Delivered-To (which stay first), above
         * our Received: where a milter's A-R lands in Postfix */
        const char *rcvd = strstr(job->headers[i], "Received: ");
        size_t at = rcvd ? (size_t)(rcvd - job->headers[i]) : 0;
        struct buf h;
        buf_init(&h, 0);
        if (buf_append(&h, job->headers[i], at) && buf_append_str(&h, mj->header) &&
            buf_append_str(&h, job->headers[i] + at)) {
            free(job->headers[i]);
            job->headers[i] = buf_steal(&h);
            job->targets[i].header = job->headers[i];
        }
        buf_free(&h);
        if (mj->action == SMTP_MAILAUTH_JUNK)
            job->targets[i].mailbox = "Junk";
    }
    if (mj->header && job->n_remote) {
        struct buf h;
        buf_init(&h, 0);
        if (buf_append_str(&h, mj->header) && buf_append_str(&h, job->remote_header)) {
            free(job->remote_header);
            job->remote_header = buf_steal(&h);
        }
        buf_free(&h);
        /* a forward (alias to a remote address): our ARC set on top (RFC 8617) */
        smtp_mailauth_job_seal(mj, &job->remote_header, &job->src);
    }
    return true;
}

/* ---- milters and junk (issue 13) ------------------------------------------------------ */

/* A message the milters quarantined: every recipient, local ones too, into the hold
 * queue (Postfix's quarantine); `tern queue release` lets the runner deliver it. */
static void delivery_hold(struct smtp_delivery_job *job)
{
    size_t n = job->n_local + job->n_remote;
    const char **rcpts = calloc(n, sizeof *rcpts);
    if (!rcpts) {
        job->queue_rc = -1;
        return;
    }
    for (size_t i = 0; i < job->n_local; i++)
        rcpts[i] = job->local[i].orig_rcpt;
    for (size_t i = 0; i < job->n_remote; i++)
        rcpts[job->n_local + i] = job->remote[i];
    job->queue_rc = queue_enqueue_staged_dsn(job->data_dir, job->queue_id, job->sender, rcpts, n,
                                             job->remote_header, &job->src, NULL, &job->error);
    free(rcpts);
    if (job->queue_rc == 0 &&
        (job->queue_rc = queue_commit_held(job->data_dir, job->queue_id, &job->error)) < 0)
        queue_abort(job->data_dir, job->queue_id);
}

/* The milters and the spam verdict (filter.c); false when the milters refused or
 * discarded the message (the done callback answers). */
static bool delivery_filter(struct smtp_delivery_job *job)
{
    if (job->filter && !smtp_filter_run(job)) {
        job->is_filtered_out = true;
        return false;
    }
    smtp_filter_junk(job); /* (a quarantine with junk.quarantine = yes is no hold) */
    job->is_held = smtp_filter_is_held(job->filter);
    job->is_filtered = true;
    return true;
}

/* Workpool thread: the milters (unless they ran on their own pool already), then mail
 * authentication; stage the queue copy (durable, invisible to the runner), deliver the
 * local copies, then commit the queue copy — or drop it if the store failed, so that a
 * 451 never leaves a remote copy behind that the client's retry would duplicate. A
 * message the milters quarantined goes to the hold queue whole. */
void smtp_delivery_work(struct smtp_delivery_job *job)
{
    if (!job->is_filtered && !delivery_filter(job))
        return;
    if (job->mailauth && !delivery_mailauth(job)) /* mailauth hook */
        return;
    if (job->is_held) {
        delivery_hold(job);
        return;
    }
    if (job->n_remote && job->is_our_mail)
        delivery_dkim_sign(job); /* mailauth hook */
    if (job->n_remote) {
        struct queue_dsn dsn = {.ret = job->dsn_ret,
                                .envid = job->envid,
                                .notify = job->remote_notify,
                                .orcpt = (const char *const *)job->remote_orcpt};
        job->queue_rc = queue_enqueue_staged_dsn(job->data_dir, job->queue_id, job->sender,
                                                 (const char *const *)job->remote, job->n_remote,
                                                 job->remote_header, &job->src, &dsn, &job->error);
        if (job->queue_rc < 0)
            return;
    }
    if (job->n_local) {
        job->store_rc = store_deliver(&job->src, job->targets, job->n_local, &job->error);
        if (job->store_rc < 0 && job->is_lmtp && job->n_local > 1) {
            /* all or nothing failed: in LMTP each recipient stands alone (one full mailbox
             * must not refuse the others), so deliver copy by copy for their own status */
            for (size_t i = 0; i < job->n_local; i++) {
                char *err = NULL;
                (void)store_deliver(&job->src, &job->targets[i], 1, &err);
                free(err);
            }
            delivery_success_notices(job);
            return;
        }
        if (job->store_rc < 0) {
            if (job->n_remote)
                queue_abort(job->data_dir, job->queue_id);
            return;
        }
    }
    if (job->n_remote) {
        /* The local copies are visible now; if the commit fails we still answer 451 and
         * log it: a duplicate local copy on the client's retry beats a lost remote one. */
        job->queue_rc = queue_commit(job->data_dir, job->queue_id, &job->error);
        if (job->queue_rc < 0) {
            log_error("smtpd", "%s: cannot commit the queued copy: %s", job->queue_id,
                      job->error ? job->error : "unknown error");
            queue_abort(job->data_dir, job->queue_id);
            return;
        }
    }
    if (job->n_local)
        delivery_success_notices(job);
}

/* Workpool thread: deliver here, or (a login process) run the milters here, then have a
 * mail worker deliver what they left (docs/ARCHITECTURE.md §1). */
static void delivery_work(struct job *j)
{
    struct smtp_delivery_job *job = (struct smtp_delivery_job *)j;
    if (!job->is_remote)
        smtp_delivery_work(job);
    else if (job->is_filtered || delivery_filter(job))
        smtp_remote_deliver(job);
}

/* LMTP: the reply for accepted RCPT k from the status of its copies (RFC 2033 §4.2);
 * s is NULL when the client has gone (the log lines are still written). */
static void lmtp_reply_rcpt(struct smtp_session *s, struct smtp_delivery_job *job, unsigned k,
                            double delay)
{
    const char *rcpt = job->lmtp_rcpts && job->lmtp_rcpts[k] ? job->lmtp_rcpts[k] : "";
    int status = STORE_OK;
    for (size_t i = 0; i < job->n_local; i++) {
        if (job->local[i].rcpt_index != k)
            continue;
        int st = job->store_rc == 0 ? STORE_OK : job->targets[i].status;
        if (st != STORE_OK && status != STORE_ERR_TEMP)
            status = st;
        const char *text = st == STORE_OK      ? "status=sent (delivered to maildir)"
                           : st == STORE_ERR_QUOTA ? "status=bounced (mailbox full)"
                                                   : "status=deferred (delivery failed)";
        log_info("local", "%s: to=<%s>, orig_to=<%s>, relay=local, delay=%.2f, dsn=%s, %s",
                 job->queue_id, job->local[i].user, rcpt, delay,
                 st == STORE_OK ? "2.0.0" : st == STORE_ERR_QUOTA ? "5.2.2" : "4.3.0", text);
    }
    if (!s)
        return;
    if (status == STORE_OK)
        smtp_reply(s, "250 2.0.0 <%s> %s Saved", rcpt, job->queue_id);
    else if (status == STORE_ERR_QUOTA)
        smtp_reply(s, "552 5.2.2 <%s> Mailbox full", rcpt);
    else
        smtp_reply(s, "451 4.3.0 <%s> Temporary failure, try again later", rcpt);
}

/* The Postfix-style lines of a delivered message (DESIGN §5). */
static void delivery_log_sent(const struct smtp_delivery_job *job)
{
    double delay = (double)(util_now_ms() - job->start_ms) / 1000.0;
    const char *id = job->queue_id;
    if (job->message_id) {
        char mid[SMTP_DATA_MESSAGE_ID_MAX + 1];
        smtp_log_safe(job->message_id, mid, sizeof mid);
        log_info("cleanup", "%s: message-id=%s", id, mid);
    }
    log_info("qmgr", "%s: from=<%s>, size=%llu, nrcpt=%u (queue active)", id, job->sender,
             (unsigned long long)job->src.size, job->nrcpt);
    for (size_t i = 0; i < job->n_local; i++) {
        const struct smtp_local_target *t = &job->local[i];
        if (strcasecmp(t->orig_rcpt, t->user) != 0)
            log_info("local",
                     "%s: to=<%s>, orig_to=<%s>, relay=local, delay=%.2f, dsn=2.0.0, "
                     "status=sent (delivered to maildir)",
                     id, t->user, t->orig_rcpt, delay);
        else
            log_info("local",
                     "%s: to=<%s>, relay=local, delay=%.2f, dsn=2.0.0, status=sent "
                     "(delivered to maildir)",
                     id, t->user, delay);
    }
    for (size_t i = 0; i < job->n_remote; i++)
        log_info("qmgr",
                 "%s: to=<%s>, relay=none, delay=%.2f, dsn=4.0.0, status=deferred (queued "
                 "for delivery)",
                 id, job->remote[i], delay);
}

/* Loop thread: the delivery's verdict; s is NULL when the client has gone. */
static void delivery_done(void *session, struct job *j)
{
    struct smtp_delivery_job *job = (struct smtp_delivery_job *)j;
    struct smtp_session *s = session;
    const char *id = job->queue_id;
    smtp_filter_give_back(job->filter, s);
    if (job->job.was_cancelled) {
        /* The client left before the delivery started: it never got a 250 and will send
         * the message again, so nothing was done for nobody (core/job.h). */
        log_info("smtpd", "%s: client gone before delivery: not delivered", id);
        smtp_delivery_job_free(job);
        return;
    }
    if (job->is_lmtp) {
        double delay = (double)(util_now_ms() - job->start_ms) / 1000.0;
        log_info("qmgr", "%s: from=<%s>, size=%llu, nrcpt=%u (queue active)", id, job->sender,
                 (unsigned long long)job->src.size, job->nrcpt);
        if (job->store_rc < 0)
            log_warning("lmtp", "%s: delivered copy by copy after: %s", id,
                        job->error ? job->error : "unknown error");
        if (s)
            s->n_junk = 0;
        for (unsigned k = 0; k < job->nrcpt; k++)
            lmtp_reply_rcpt(s, job, k, delay);
        smtp_delivery_job_free(job);
        if (s)
            smtp_session_job_done(s);
        return;
    }
    if (job->is_filtered_out) {
        /* a milter refused or discarded the message: Postfix's log line and its reply */
        const char *why = smtp_filter_why(job->filter);
        if (smtp_filter_is_discarded(job->filter)) {
            log_info("cleanup", "%s: discard: %s; from=<%s>", id, why, job->sender);
            if (s)
                smtp_reply(s, "250 2.0.0 Ok: queued as %s", id);
        } else {
            log_info("cleanup", "%s: milter-reject: END-OF-MESSAGE from %s: %s; from=<%s>", id,
                     s ? s->peer : "a client that left", why, job->sender);
            if (s)
                smtp_reply(s, "%s", smtp_filter_reply(job->filter));
        }
        smtp_delivery_job_free(job);
        if (s)
            smtp_session_job_done(s);
        return;
    }
    /* mailauth hook: the verdict, and a refusal in Postfix's milter-reject style */
    struct smtp_mailauth_job *mj = job->mailauth;
    if (mj) {
        log_info("mailauth", "%s: %s%s%s", id, mj->summary,
                 mj->action == SMTP_MAILAUTH_JUNK ? ", filed to Junk" : "",
                 mj->is_sealed ? ", ARC-sealed" : "");
        if (mj->n_forged)
            log_warning("mailauth", "%s: removed %d forged Authentication-Results field(s) "
                                    "claiming to be ours",
                        id, mj->n_forged);
    }
    if (mj && (mj->action == SMTP_MAILAUTH_REJECT || mj->action == SMTP_MAILAUTH_TEMPFAIL)) {
        log_info("smtpd", "%s: reject: END-OF-MESSAGE from %s: %s; from=<%s> proto=ESMTP helo=<%s>",
                 id, mj->peer, mj->reply, job->sender, mj->helo);
        if (s)
            smtp_reply(s, "%s", mj->reply);
    } else if (smtp_filter_is_held(job->filter) && job->queue_rc == 0) {
        log_info("qmgr", "%s: from=<%s>, size=%llu, nrcpt=%u (queue hold)", id, job->sender,
                 (unsigned long long)job->src.size, job->nrcpt);
        if (s)
            smtp_reply(s, "250 2.0.0 Ok: queued as %s", id);
    } else if (job->queue_rc == 0 && job->store_rc == 0) {
        /* Durable: logged and handed to the queue runner even if the client left
         * meanwhile (a duplicate on its retry beats a lost message). */
        delivery_log_sent(job);
        if (!job->is_remote) /* (a mail worker that delivered told the queue runner) */
            outbound_runner_notify(id, (const char *const *)job->remote, job->n_remote);
        if (s) {
            s->n_junk = 0;
            smtp_reply(s, "250 2.0.0 Ok: queued as %s", id);
        } else {
            log_info("smtpd", "%s: client gone before the reply: delivered anyway", id);
        }
    } else {
        bool is_quota = false, is_only_quota = job->store_rc < 0;
        for (size_t i = 0; job->store_rc < 0 && i < job->n_local; i++) {
            if (job->targets[i].status == STORE_ERR_QUOTA)
                is_quota = true;
            else if (job->targets[i].status != STORE_OK)
                is_only_quota = false;
        }
        log_warning("smtpd", "%s: %s failed: %s", id,
                    job->queue_rc < 0 ? "queue file write" : "local delivery",
                    job->error ? job->error : "unknown error");
        if (!s) {
            /* nothing to answer */
        } else if (job->queue_rc == 0 && is_quota && is_only_quota) {
            /* store.h: 552 5.2.2, or 452 4.2.2 when other recipients share the message
             * (the retry then gets 452 at RCPT for the full mailbox only). */
            if (job->n_local == 1 && job->n_remote == 0)
                smtp_reply(s, "552 5.2.2 <%s>: Mailbox full", job->local[0].orig_rcpt);
            else
                smtp_reply(s, "452 4.2.2 Error: mailbox full, try again later");
        } else {
            smtp_reply(s, "451 4.3.0 Error: queue file write error");
        }
    }
    smtp_delivery_job_free(job);
    if (s)
        smtp_session_job_done(s);
}

/* Milter pool thread: the conversations with the milters (mostly waiting on sockets, so
 * they run on their own pool, milter.concurrency threads, not on the fsync pool). */
static void delivery_filter_work(struct job *j)
{
    (void)delivery_filter((struct smtp_delivery_job *)j);
}

/* Loop thread: the milters are done; deliver on the main pool, or answer now. */
static void delivery_filter_done(void *session, struct job *j)
{
    struct smtp_delivery_job *job = (struct smtp_delivery_job *)j;
    struct smtp_session *s = session;
    smtp_filter_give_back(job->filter, s); /* ready for the next transaction */
    if (!s || job->job.was_cancelled || job->is_filtered_out) {
        delivery_done(session, j);
        return;
    }
    job_init(&job->job, s->handle, delivery_work, delivery_done);
    job_submit(s->ctx->pool, &job->job); /* the session stays busy, its reads paused */
}

void smtp_delivery_start(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    unsigned n_rcpt = t->n_rcpt; /* for the replies after the transaction is reset */
    smtp_body_finalize(s);
    if (t->has_body_error) {
        smtp_reply_message(s, n_rcpt, "451 4.3.0 Error: queue file write error");
        smtp_txn_reset(t);
        return;
    }
    /* RFC 9228 / Postfix: a copy for a user whose Delivered-To is already in the message
     * means a forwarding loop. The whole message is refused (a per-recipient bounce would
     * need a DSN; loops are single-recipient in practice). */
    for (size_t i = 0; i < t->n_local; i++) {
        uint64_t h = smtp_data_address_hash(t->local[i].user);
        for (unsigned k = 0; k < t->reader.n_delivered_to; k++) {
            if (t->reader.delivered_to[k] == h) {
                log_info("smtpd", "%s: reject: mail forwarding loop for %s from %s",
                         t->has_queue_id ? t->queue_id : "NOQUEUE", t->local[i].user, s->peer);
                smtp_reply_message(s, n_rcpt, "554 5.4.6 Error: mail forwarding loop for <%s>",
                                   t->local[i].user);
                smtp_txn_reset(t);
                return;
            }
        }
    }
    struct smtp_delivery_job *job = calloc(1, sizeof *job);
    if (!job)
        goto oom;
    job->fd = -1;
    job_init(&job->job, s->handle, delivery_work, delivery_done);
    job->is_remote = conn_is_login_process(s->c);
    memcpy(job->queue_id, t->queue_id, sizeof job->queue_id);
    job->data_dir = strdup(s->cfg->data_dir ? s->cfg->data_dir : ".");
    job->sender = strdup(t->from_text);
    job->nrcpt = t->n_rcpt;
    job->start_ms = t->start_ms;
    if (!job->data_dir || !job->sender)
        goto oom;

    /* Move the message and the recipients out of the transaction. */
    job->body = t->body;
    buf_init(&t->body, 0);
    job->fd = t->body_fd;
    t->body_fd = -1;
    if (job->fd >= 0) {
        job->src =
            (struct store_source){.data = NULL, .len = 0, .fd = job->fd, .size = t->body_fd_size};
    } else {
        job->src = (struct store_source){.data = job->body.data ? job->body.data : "",
                                         .len = job->body.len,
                                         .fd = -1,
                                         .size = job->body.len};
    }
    job->local = t->local;
    job->n_local = t->n_local;
    t->local = NULL;
    t->n_local = t->cap_local = 0;
    job->remote = t->remote;
    job->n_remote = t->n_remote;
    job->remote_notify = t->remote_notify;
    job->remote_orcpt = t->remote_orcpt;
    t->remote = NULL;
    t->remote_notify = NULL;
    t->remote_orcpt = NULL;
    t->n_remote = t->cap_remote = 0;
    job->is_lmtp = s->role == CONN_ROLE_LMTP;
    job->lmtp_rcpts = t->lmtp_rcpts;
    t->lmtp_rcpts = NULL;
    t->cap_lmtp_rcpts = 0;
    job->dsn_ret = t->params.dsn_ret;
    job->envid = t->params.envid[0] ? strdup(t->params.envid) : NULL;
    job->hostname = strdup(smtp_hostname(s));
    job->arrival = time(NULL);
    if (!job->hostname || (t->params.envid[0] && !job->envid))
        goto oom;

    /* Headers the submission service adds (RFC 6409 §8). */
    char date[64];
    time_t now = time(NULL);
    util_rfc5322_date(now, date, sizeof date);
    struct buf extra;
    buf_init(&extra, 0);
    bool is_submission =
        s->auth_user || s->role == CONN_ROLE_SUBMISSION || s->role == CONN_ROLE_SUBMISSIONS;
    /* mailauth hook: mail our users send out is DKIM-signed (delivery_dkim_sign) */
    job->is_our_mail = is_submission || conn_peer_in_networks(s->c, &s->cfg->relay_networks);
    if (t->reader.has_message_id) {
        job->message_id = strdup(t->reader.message_id);
    } else if (is_submission) {
        struct tm tm;
        gmtime_r(&now, &tm);
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
        buf_printf(&extra, "Message-ID: <%s.%s@%s>\r\n", stamp, job->queue_id, smtp_hostname(s));
        char *mid = malloc(ADDR_MAX_PATH + 64);
        if (mid)
            snprintf(mid, ADDR_MAX_PATH + 64, "<%s.%s@%s>", stamp, job->queue_id, smtp_hostname(s));
        job->message_id = mid;
    }
    if (is_submission && !t->reader.has_date)
        buf_printf(&extra, "Date: %s\r\n", date);

    bool ok = true;
    if (job->n_local) {
        job->targets = calloc(job->n_local, sizeof *job->targets);
        job->headers = calloc(job->n_local, sizeof *job->headers);
        ok = job->targets && job->headers;
        for (size_t i = 0; ok && i < job->n_local; i++) {
            const struct smtp_local_target *lt = &job->local[i];
            struct buf h;
            buf_init(&h, 0);
            buf_printf(&h, "Return-Path: <%s>\r\nX-Original-To: %s\r\nDelivered-To: %s\r\n",
                       job->sender, lt->orig_rcpt, lt->user);
            received_header(&h, s, job->queue_id, lt->orig_rcpt, date);
            buf_append(&h, extra.data ? extra.data : "", extra.len);
            job->headers[i] = buf_steal(&h);
            job->targets[i] = (struct store_target){
                .user = lt->user,
                .home = lt->home,
                .quota = lt->quota,
                .header = job->headers[i],
                .mailbox = NULL,
            };
        }
    }
    bool is_oom = false;
    job->filter = ok ? smtp_filter_prepare(s, job, &is_oom) : NULL;
    job->junk_header = strdup(s->cfg->junk_header ? s->cfg->junk_header : "");
    job->junk_mailbox = strdup(s->cfg->junk_mailbox && s->cfg->junk_mailbox[0]
                                   ? s->cfg->junk_mailbox
                                   : "Junk");
    job->is_junk_quarantine = s->cfg->junk_quarantine;
    if (!job->junk_header || !job->junk_mailbox)
        is_oom = true;
    if (is_oom)
        ok = false;
    /* the milters' quarantine queues a copy with the Received line as the remote one */
    if (ok && (job->n_remote || job->filter)) {
        struct buf h;
        buf_init(&h, 0);
        received_header(&h, s, job->queue_id, job->n_remote == 1 ? job->remote[0] : NULL, date);
        buf_append(&h, extra.data ? extra.data : "", extra.len);
        job->remote_header = buf_steal(&h);
    }
    buf_free(&extra);
    if (!ok)
        goto oom;

    job->mailauth = smtp_mailauth_job_new(s); /* mailauth hook (NULL: not applicable) */
    smtp_txn_reset(t);
    if (job->filter && s->ctx->milter_pool)
        job_init(&job->job, s->handle, delivery_filter_work, delivery_filter_done);
    smtp_session_job_start_on(s, &job->job,
                              job->filter && s->ctx->milter_pool ? s->ctx->milter_pool
                                                                 : s->ctx->pool);
    return;

oom:
    if (job)
        smtp_delivery_job_free(job);
    smtp_txn_reset(t);
    smtp_reply_message(s, n_rcpt, "451 4.3.0 Error: out of memory");
}
