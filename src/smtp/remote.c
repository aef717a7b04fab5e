/*
 * remote.c - SMTP work a login process has a mail worker do (remote.h), both sides.
 *
 * DELIVER: the login process puts the message into a memfd (the one it spilled a large
 * body into, or a new one), appends the envelope after the body, seals the file (no
 * write, shrink or grow any more: the worker may map it and read it while the login
 * process lives on) and passes it; the request's data is "<body length>\0<envelope
 * length>\0". The worker maps the file, checks the seals and the sizes, decodes the
 * envelope, looks up each local user's home and quota in the directory, runs the same
 * delivery as a single process would (smtp_delivery_work: queue copy, mailbox copies,
 * fsyncs, success notices), and answers only then, so "250" keeps meaning durable.
 *
 * Envelope fields (core/wire.h), in order:
 *   "tern-envelope-1", queue_id, sender, nrcpt, dsn_ret, envid, hostname, arrival,
 *   is_our_mail, is_lmtp,
 *   n_local, then per local copy: user, orig_rcpt, notify, orcpt, rcpt_index, header
 *   n_remote, then per remote recipient: address, notify, orcpt; then remote_header
 *   has_mailauth, then if 1: ip, helo, from, receiver, authserv_id, peer, seal_domain,
 *   dmarc_rank, has_spf, spf result, is_helo, domain, mechanism, explanation, reason
 * ("" stands for an absent envid, orcpt.) The answer: queue_failed, store_failed, error,
 * the local copies' statuses as one digit each, has_mailauth, then action, reply,
 * summary, n_forged, is_sealed.
 *
 * USAGE: data = the user; answer rc 1 full, 0 not (or unknown). ETRN: data = node,
 * is_subdomains; answer rc 0 with n_queued, moved, or rc -1.
 *
 * BURL: data = user, url, max (wire fields) and an empty memfd; the worker reads the URL
 * as that user's submission (imap_url_fetch: the URLAUTH must grant "submit+user"),
 * writes the octets into the memfd and seals it; answer rc IMAP_URL_*, then length and a
 * reason. What a login process gains by lying about the user is nothing it does not see
 * anyway: a URL is only read with its token, and the tokens pass through it.
 */
#include "auth/auth.h"
#include "core/backend.h"
#include "core/channel.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/wire.h"
#include "imap/url.h"
#include "policy/greylist.h"
#include "queue/outbound.h"
#include "smtp/delivery.h"
#include "smtp/mailauth_hook.h"
#include "smtp/remote.h"
#include "smtp/session.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REMOTE_ENVELOPE_MAGIC   "tern-envelope-1"
#define REMOTE_DELIVER_TIMEOUT  600 /* s: RFC 5321 §4.5.3.2.6 gives the client 10 min */
#define REMOTE_SHORT_TIMEOUT    60
#define REMOTE_MAX_COPIES       50000 /* local copies or remote recipients of one message */
#define REMOTE_HEADER_MAX       (256 * 1024) /* one copy's trace header */
#define REMOTE_ENVELOPE_MAX     (64ull * 1024 * 1024)
#define REMOTE_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

/* ---- the envelope ------------------------------------------------------------------------ */

bool smtp_remote_envelope_encode(const struct smtp_delivery_job *job, struct buf *b)
{
    bool ok = wire_put_str(b, REMOTE_ENVELOPE_MAGIC) && wire_put_str(b, job->queue_id) &&
              wire_put_str(b, job->sender) && wire_put_num(b, job->nrcpt) &&
              wire_put_num(b, (uint64_t)job->dsn_ret) && wire_put_str(b, job->envid) &&
              wire_put_str(b, job->hostname) && wire_put_num(b, (uint64_t)job->arrival) &&
              wire_put_num(b, job->is_our_mail) && wire_put_num(b, job->is_lmtp) &&
              wire_put_num(b, job->n_local);
    for (size_t i = 0; ok && i < job->n_local; i++) {
        const struct smtp_local_target *t = &job->local[i];
        ok = wire_put_str(b, t->user) && wire_put_str(b, t->orig_rcpt) &&
             wire_put_num(b, t->notify) && wire_put_str(b, t->orcpt) &&
             wire_put_num(b, t->rcpt_index) && wire_put_str(b, job->headers[i]);
    }
    ok = ok && wire_put_num(b, job->n_remote);
    for (size_t i = 0; ok && i < job->n_remote; i++)
        ok = wire_put_str(b, job->remote[i]) && wire_put_num(b, job->remote_notify[i]) &&
             wire_put_str(b, job->remote_orcpt ? job->remote_orcpt[i] : NULL);
    /* the milters ran in the login process: what they decided for the copies */
    ok = ok && wire_put_str(b, job->remote_header) && wire_put_num(b, job->is_held) &&
         wire_put_num(b, job->is_junk) && wire_put_num(b, job->mailauth != NULL);
    const struct smtp_mailauth_job *m = job->mailauth;
    if (ok && m)
        ok = wire_put_str(b, m->ip) && wire_put_str(b, m->helo) && wire_put_str(b, m->from) &&
             wire_put_str(b, m->receiver) && wire_put_str(b, m->authserv_id) &&
             wire_put_str(b, m->peer) && wire_put_str(b, m->seal_domain) &&
             wire_put_num(b, (uint64_t)m->dmarc_rank) && wire_put_num(b, m->has_spf) &&
             wire_put_num(b, (uint64_t)m->spf.result) && wire_put_num(b, m->spf.is_helo) &&
             wire_put_str(b, m->spf.domain) && wire_put_str(b, m->spf.mechanism) &&
             wire_put_str(b, m->spf.explanation) && wire_put_str(b, m->spf.reason);
    return ok;
}

/* Text that reaches the spool's line-based envelope or a log line: no control octets. */
static bool is_line_safe(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* A queue id as util_queue_id makes them: letters and digits (it names spool files). */
static bool is_queue_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 6 || n >= UTIL_QUEUE_ID_SIZE)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= 'a' && s[i] <= 'z')))
            return false;
    return true;
}

/* A checked copy of the next string (NULL when "" and empty_is_null; "" on error, with
 * r->is_bad set). */
static char *dup_field(struct wire_reader *r, size_t max, bool empty_is_null, bool *is_oom)
{
    const char *s = wire_str(r, max);
    if (r->is_bad)
        return NULL;
    if (!*s && empty_is_null)
        return NULL;
    char *c = strdup(s);
    if (!c)
        *is_oom = true;
    return c;
}

/* Copy the next string into a fixed field, printable only. */
static void fixed_field(struct wire_reader *r, char *dst, size_t size)
{
    const char *s = wire_str(r, size);
    if (!r->is_bad && !is_line_safe(s))
        r->is_bad = true;
    snprintf(dst, size, "%s", r->is_bad ? "" : s);
}

struct smtp_delivery_job *smtp_remote_envelope_decode(const char *data, size_t len)
{
    struct wire_reader r;
    wire_reader_init(&r, data, len);
    struct smtp_delivery_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->fd = -1;
    bool is_oom = false;
    if (strcmp(wire_str(&r, 32), REMOTE_ENVELOPE_MAGIC) != 0)
        goto bad;
    const char *id = wire_str(&r, UTIL_QUEUE_ID_SIZE);
    if (r.is_bad || !is_queue_id(id))
        goto bad;
    memcpy(job->queue_id, id, strlen(id) + 1);
    job->sender = dup_field(&r, ADDR_MAX_PATH + 1, false, &is_oom);
    job->nrcpt = (unsigned)wire_num(&r, 1000000);
    job->dsn_ret = (int)wire_num(&r, 16);
    job->envid = dup_field(&r, 512, true, &is_oom);
    job->hostname = dup_field(&r, 256, false, &is_oom);
    job->arrival = (time_t)wire_num(&r, INT64_MAX);
    job->is_our_mail = wire_num(&r, 1) == 1;
    job->is_lmtp = wire_num(&r, 1) == 1;
    size_t n_local = (size_t)wire_num(&r, REMOTE_MAX_COPIES);
    if (r.is_bad || is_oom || !is_line_safe(job->sender) || !is_line_safe(job->hostname) ||
        (job->envid && !is_line_safe(job->envid)))
        goto bad;
    job->local = calloc(n_local ? n_local : 1, sizeof *job->local);
    job->headers = calloc(n_local ? n_local : 1, sizeof *job->headers);
    job->targets = calloc(n_local ? n_local : 1, sizeof *job->targets);
    if (!job->local || !job->headers || !job->targets)
        goto bad;
    for (size_t i = 0; i < n_local; i++) {
        struct smtp_local_target *t = &job->local[i];
        job->n_local = i + 1; /* (freed with the job from here on) */
        t->user = dup_field(&r, ADDR_MAX_PATH + 1, false, &is_oom);
        t->orig_rcpt = dup_field(&r, ADDR_MAX_PATH + 1, false, &is_oom);
        t->notify = (unsigned)wire_num(&r, 0xffff);
        t->orcpt = dup_field(&r, 1024, true, &is_oom);
        t->rcpt_index = (unsigned)wire_num(&r, 1000000);
        job->headers[i] = dup_field(&r, REMOTE_HEADER_MAX, false, &is_oom);
        if (r.is_bad || is_oom || !t->user[0] || !is_line_safe(t->user) ||
            !is_line_safe(t->orig_rcpt) || (t->orcpt && !is_line_safe(t->orcpt)) ||
            t->rcpt_index >= job->nrcpt)
            goto bad;
    }
    size_t n_remote = (size_t)wire_num(&r, REMOTE_MAX_COPIES);
    if (r.is_bad)
        goto bad;
    job->remote = calloc(n_remote ? n_remote : 1, sizeof *job->remote);
    job->remote_notify = calloc(n_remote ? n_remote : 1, sizeof *job->remote_notify);
    job->remote_orcpt = calloc(n_remote ? n_remote : 1, sizeof *job->remote_orcpt);
    if (!job->remote || !job->remote_notify || !job->remote_orcpt)
        goto bad;
    for (size_t i = 0; i < n_remote; i++) {
        job->n_remote = i + 1;
        job->remote[i] = dup_field(&r, ADDR_MAX_PATH + 1, false, &is_oom);
        job->remote_notify[i] = (unsigned)wire_num(&r, 0xffff);
        job->remote_orcpt[i] = dup_field(&r, 1024, true, &is_oom);
        if (r.is_bad || is_oom || !job->remote[i][0] || !is_line_safe(job->remote[i]) ||
            (job->remote_orcpt[i] && !is_line_safe(job->remote_orcpt[i])))
            goto bad;
    }
    job->remote_header = dup_field(&r, REMOTE_HEADER_MAX, true, &is_oom);
    job->is_held = wire_num(&r, 1) == 1;
    job->is_junk = wire_num(&r, 1) == 1;
    job->is_filtered = true; /* (the milters ran in the login process) */
    bool has_mailauth = wire_num(&r, 1) == 1;
    if (r.is_bad || is_oom || ((n_remote || job->is_held) && !job->remote_header))
        goto bad;
    if (has_mailauth) {
        struct smtp_mailauth_job *m = calloc(1, sizeof *m);
        if (!m)
            goto bad;
        job->mailauth = m;
        fixed_field(&r, m->ip, sizeof m->ip);
        fixed_field(&r, m->helo, sizeof m->helo);
        fixed_field(&r, m->from, sizeof m->from);
        fixed_field(&r, m->receiver, sizeof m->receiver);
        fixed_field(&r, m->authserv_id, sizeof m->authserv_id);
        fixed_field(&r, m->peer, sizeof m->peer);
        fixed_field(&r, m->seal_domain, sizeof m->seal_domain);
        m->dmarc_rank = (int)wire_num(&r, 2);
        m->has_spf = wire_num(&r, 1) == 1;
        m->spf.result = (enum mailauth_result)wire_num(&r, MAILAUTH_PERMERROR);
        m->spf.is_helo = wire_num(&r, 1) == 1;
        fixed_field(&r, m->spf.domain, sizeof m->spf.domain);
        fixed_field(&r, m->spf.mechanism, sizeof m->spf.mechanism);
        fixed_field(&r, m->spf.explanation, sizeof m->spf.explanation);
        fixed_field(&r, m->spf.reason, sizeof m->spf.reason);
    }
    size_t rest;
    (void)wire_rest(&r, &rest);
    if (r.is_bad || rest != 0)
        goto bad;
    return job;
bad:
    smtp_delivery_job_free(job);
    return NULL;
}

/* ---- login side ---------------------------------------------------------------------------- */

/* The message and its envelope in one sealed memfd; -1 (logged) on failure. The spill
 * file, when the body went to one, is that memfd already (body.c). */
static int remote_message_fd(struct smtp_delivery_job *job, const struct buf *env)
{
    /* the spill file, unless the milters rewrote the message into memory */
    int fd = job->src.fd >= 0 ? job->fd : -1;
    uint64_t body_len = job->src.fd >= 0 ? job->src.size : job->src.len;
    if (fd < 0) {
        fd = memfd_create("tern-message", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0 || util_write_all(fd, job->src.data, job->src.len) < 0) {
            log_error("smtpd", "%s: cannot pass the message on: %s", job->queue_id,
                      strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        if (job->fd >= 0)
            close(job->fd); /* the original the milters replaced */
        job->fd = fd;       /* closed with the job */
    }
    if (pwrite(fd, env->data, env->len, (off_t)body_len) != (ssize_t)env->len ||
        fcntl(fd, F_ADD_SEALS, REMOTE_SEALS | F_SEAL_SEAL) < 0) {
        log_error("smtpd", "%s: cannot pass the message on: %s", job->queue_id, strerror(errno));
        return -1;
    }
    return fd;
}

/* Every copy failed for a temporary reason (no worker answered). */
static void remote_deliver_failed(struct smtp_delivery_job *job, const char *why)
{
    job->queue_rc = 0;
    job->store_rc = -1;
    for (size_t i = 0; i < job->n_local; i++)
        job->targets[i].status = STORE_ERR_TEMP;
    if (!job->error)
        job->error = strdup(why);
}

void smtp_remote_deliver(struct smtp_delivery_job *job)
{
    struct buf env;
    buf_init(&env, REMOTE_ENVELOPE_MAX);
    struct channel_msg *reply = malloc(sizeof *reply);
    uint64_t body_len = job->src.fd >= 0 ? job->src.size : job->src.len;
    int fd = -1;
    int32_t rc = -1;
    size_t off;
    char data[64];
    if (!reply || !smtp_remote_envelope_encode(job, &env) || env.len == 0 ||
        (fd = remote_message_fd(job, &env)) < 0) {
        remote_deliver_failed(job, "cannot pass the message to a mail worker");
        goto out;
    }
    int n = snprintf(data, sizeof data, "%llu%c%zu%c", (unsigned long long)body_len, 0, env.len, 0);
    if (backend_call(BACKEND_MSG_DELIVER, data, (size_t)n, fd, REMOTE_DELIVER_TIMEOUT, reply, &rc,
                     &off) < 0 ||
        rc != 0) {
        remote_deliver_failed(job, "no mail worker delivered the message");
        goto out;
    }
    struct wire_reader r;
    wire_reader_init(&r, reply->payload + off, reply->len - off);
    bool is_queue_failed = wire_num(&r, 1) == 1, is_store_failed = wire_num(&r, 1) == 1;
    const char *error = wire_str(&r, 1024);
    const char *statuses = wire_str(&r, REMOTE_MAX_COPIES + 1);
    bool has_mailauth = wire_num(&r, 1) == 1;
    if (r.is_bad || strlen(statuses) != job->n_local) {
        remote_deliver_failed(job, "a mail worker's answer was malformed");
        goto out;
    }
    job->queue_rc = is_queue_failed ? -1 : 0;
    job->store_rc = is_store_failed ? -1 : 0;
    if (error[0] && !job->error)
        job->error = strdup(error);
    for (size_t i = 0; i < job->n_local; i++)
        job->targets[i].status = statuses[i] - '0';
    struct smtp_mailauth_job *m = job->mailauth;
    if (has_mailauth && m) {
        m->action = (enum smtp_mailauth_action)wire_num(&r, SMTP_MAILAUTH_TEMPFAIL);
        snprintf(m->reply, sizeof m->reply, "%s", wire_str(&r, sizeof m->reply));
        snprintf(m->summary, sizeof m->summary, "%s", wire_str(&r, sizeof m->summary));
        m->n_forged = (int)wire_num(&r, 100000);
        m->is_sealed = wire_num(&r, 1) == 1;
        if (r.is_bad) {
            m->action = SMTP_MAILAUTH_TEMPFAIL;
            snprintf(m->reply, sizeof m->reply, "451 4.3.0 Error: queue file write error");
        }
    }
out:
    free(reply);
    buf_free(&env);
}

int smtp_remote_user_is_full(const char *user)
{
    struct channel_msg *reply = malloc(sizeof *reply);
    int32_t rc = 0;
    size_t off;
    if (!reply || backend_call(BACKEND_MSG_USAGE, user, strlen(user) + 1, -1,
                               REMOTE_SHORT_TIMEOUT, reply, &rc, &off) < 0)
        rc = 0; /* unknown: as a failed usage lookup, not full */
    free(reply);
    return rc == 1;
}

void smtp_remote_etrn(const char *node, bool is_subdomains, size_t *n_queued_r, int *moved_r)
{
    *n_queued_r = 0;
    *moved_r = -1;
    struct buf req;
    buf_init(&req, 1024);
    struct channel_msg *reply = malloc(sizeof *reply);
    int32_t rc = -1;
    size_t off;
    if (reply && wire_put_str(&req, node) && wire_put_num(&req, is_subdomains) &&
        backend_call(BACKEND_MSG_ETRN, req.data, req.len, -1, REMOTE_SHORT_TIMEOUT, reply, &rc,
                     &off) == 0 &&
        rc == 0) {
        struct wire_reader r;
        wire_reader_init(&r, reply->payload + off, reply->len - off);
        size_t n = (size_t)wire_num(&r, UINT32_MAX);
        int moved = (int)wire_num(&r, INT32_MAX);
        if (!r.is_bad) {
            *n_queued_r = n;
            *moved_r = moved;
        }
    }
    free(reply);
    buf_free(&req);
}

void smtp_remote_greylist(const char *ip, const char *sender, const char *rcpt,
                          struct greylist_answer *a_r)
{
    *a_r = (struct greylist_answer){.verdict = GREYLIST_ERROR};
    struct buf req;
    buf_init(&req, 1024);
    struct channel_msg *reply = malloc(sizeof *reply);
    int32_t rc = -1;
    size_t off;
    if (reply && wire_put_str(&req, ip) && wire_put_str(&req, sender) &&
        wire_put_str(&req, rcpt) &&
        backend_call(BACKEND_MSG_GREYLIST, req.data, req.len, -1, REMOTE_SHORT_TIMEOUT, reply, &rc,
                     &off) == 0 &&
        (rc == GREYLIST_PASS || rc == GREYLIST_DEFER)) {
        struct wire_reader r;
        wire_reader_init(&r, reply->payload + off, reply->len - off);
        unsigned retry_in = (unsigned)wire_num(&r, UINT32_MAX);
        bool is_pass_listed = wire_num(&r, 1) == 1;
        if (!r.is_bad)
            *a_r = (struct greylist_answer){.verdict = (enum greylist_verdict)rc,
                                            .retry_in = retry_in,
                                            .is_pass_listed = is_pass_listed};
    }
    free(reply);
    buf_free(&req);
}

int smtp_remote_burl(const char *user, const char *url, uint64_t max, int *fd_r,
                     uint64_t *len_r, char *error, size_t error_size)
{
    *fd_r = -1;
    *len_r = 0;
    snprintf(error, error_size, "no mail worker answered");
    struct buf req;
    buf_init(&req, IMAP_URL_MAX + ADDR_MAX_PATH + 64);
    struct channel_msg *reply = malloc(sizeof *reply);
    int fd = memfd_create("tern-burl", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int32_t rc = IMAP_URL_TEMP;
    size_t off;
    if (!reply || fd < 0 || !wire_put_str(&req, user) || !wire_put_str(&req, url) ||
        !wire_put_num(&req, max) ||
        backend_call(BACKEND_MSG_BURL, req.data, req.len, fd, REMOTE_SHORT_TIMEOUT, reply, &rc,
                     &off) < 0)
        rc = IMAP_URL_TEMP;
    if (rc != IMAP_URL_TEMP) {
        struct wire_reader r;
        wire_reader_init(&r, reply->payload + off, reply->len - off);
        uint64_t len = wire_num(&r, max);
        snprintf(error, error_size, "%s", wire_str(&r, 256));
        struct stat sb;
        int seals = fcntl(fd, F_GET_SEALS);
        if (r.is_bad || (rc != IMAP_URL_OK && rc != IMAP_URL_BAD && rc != IMAP_URL_TOOBIG)) {
            rc = IMAP_URL_TEMP;
            snprintf(error, error_size, "a mail worker's answer was malformed");
        } else if (rc == IMAP_URL_OK &&
                   (fstat(fd, &sb) < 0 || (uint64_t)sb.st_size != len || seals < 0 ||
                    (seals & REMOTE_SEALS) != REMOTE_SEALS)) {
            /* sealed: the size read now is the size for good */
            rc = IMAP_URL_TEMP;
            snprintf(error, error_size, "a mail worker passed octets that are not sealed");
        } else if (rc == IMAP_URL_OK) {
            *fd_r = fd;
            *len_r = len;
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
    free(reply);
    buf_free(&req);
    return rc;
}

/* ---- mail worker side ------------------------------------------------------------------------ */

static const struct server_context *remote_ctx;

struct remote_job {
    struct job job; /* first (core/job.h); no owner: always runs */
    struct backend_request *req;
    int fd;
    uint64_t body_len, env_len;
    char *data; /* USAGE: the user; ETRN: the request */
    size_t data_len;
    struct smtp_delivery_job *delivery; /* DELIVER: what was delivered, for done */
    bool is_delivered;
};

static void remote_job_free(struct remote_job *j)
{
    if (j->req)
        backend_request_free(j->req);
    if (j->fd >= 0)
        close(j->fd);
    if (j->delivery)
        smtp_delivery_job_free(j->delivery);
    free(j->data);
    free(j);
}

/* Loop thread: the request goes to the pool as a job (it blocks). */
static void remote_submit(struct backend_request *req, job_work_fn *work, job_done_fn *done)
{
    struct remote_job *j = calloc(1, sizeof *j);
    size_t len;
    const char *data = backend_request_data(req, &len);
    if (!j || !(j->data = malloc(len + 1))) {
        free(j);
        backend_request_free(req); /* the login process times out: a temporary failure */
        return;
    }
    memcpy(j->data, data, len + 1);
    j->data_len = len;
    j->req = req;
    j->fd = backend_request_take_fd(req);
    job_init(&j->job, 0, work, done);
    job_submit(remote_ctx->pool, &j->job);
}

/* Pool thread: map the login process's message; false (logged) when it is not a sealed
 * file of exactly the announced sizes. */
static bool remote_map(struct remote_job *j, struct smtp_delivery_job **job_r)
{
    struct wire_reader r;
    wire_reader_init(&r, j->data, j->data_len);
    uint64_t max_body = remote_ctx->cfg->smtp_max_message_size
                            ? remote_ctx->cfg->smtp_max_message_size + 1024 * 1024
                            : UINT32_MAX;
    j->body_len = wire_num(&r, max_body);
    j->env_len = wire_num(&r, REMOTE_ENVELOPE_MAX);
    struct stat sb;
    int seals = j->fd >= 0 ? fcntl(j->fd, F_GET_SEALS) : -1;
    if (r.is_bad || j->env_len == 0 || j->fd < 0 || fstat(j->fd, &sb) < 0 ||
        !S_ISREG(sb.st_mode) || seals < 0 || (seals & REMOTE_SEALS) != REMOTE_SEALS ||
        (uint64_t)sb.st_size != j->body_len + j->env_len) {
        log_warning("smtpd", "a login process (pid %d) passed a message that is not a sealed "
                             "file of the size it said: refused",
                    (int)backend_request_login_pid(j->req));
        return false;
    }
    size_t map_len = (size_t)(j->body_len + j->env_len);
    void *map = mmap(NULL, map_len, PROT_READ, MAP_SHARED, j->fd, 0);
    if (map == MAP_FAILED) {
        log_error("smtpd", "cannot map a message from a login process: %s", strerror(errno));
        return false;
    }
    struct smtp_delivery_job *job =
        smtp_remote_envelope_decode((const char *)map + j->body_len, (size_t)j->env_len);
    if (!job) {
        munmap(map, map_len);
        log_warning("smtpd", "a login process (pid %d) passed a malformed envelope: refused",
                    (int)backend_request_login_pid(j->req));
        return false;
    }
    job->map = map;
    job->map_len = map_len;
    job->src = (struct store_source){
        .data = map, .len = (size_t)j->body_len, .fd = -1, .size = j->body_len};
    *job_r = job;
    return true;
}

/* Pool thread: the homes and quotas of the local users, from the directory (never from
 * the login process). false: a lookup failed (the message is not delivered, 451). */
static bool remote_lookup_users(struct smtp_delivery_job *job)
{
    for (size_t i = 0; i < job->n_local; i++) {
        struct smtp_local_target *t = &job->local[i];
        struct auth_user u;
        int rc = auth_user_lookup(remote_ctx->auth, t->user, &u);
        if (rc != 1 || strcmp(u.address, t->user) != 0) {
            if (rc == 1)
                auth_user_free(&u);
            job->error = strdup(rc < 0 ? "directory lookup failed" : "no such user");
            return false;
        }
        t->home = u.home;
        t->quota = u.quota;
        u.home = NULL;
        auth_user_free(&u);
        /* spam (junk.*): the mailbox is this worker's setting, never the login's word */
        const char *junk = remote_ctx->cfg->junk_mailbox && remote_ctx->cfg->junk_mailbox[0]
                               ? remote_ctx->cfg->junk_mailbox
                               : "Junk";
        job->targets[i] = (struct store_target){.user = t->user,
                                                .home = t->home,
                                                .quota = t->quota,
                                                .header = job->headers[i],
                                                .mailbox = job->is_junk ? junk : NULL};
    }
    return true;
}

/* Pool thread: deliver, then answer (after the copies are durable). */
static void remote_deliver_work(struct job *jb)
{
    struct remote_job *j = (struct remote_job *)jb;
    struct smtp_delivery_job *job = NULL;
    if (!remote_map(j, &job)) {
        backend_reply(j->req, -1, NULL, 0);
        j->req = NULL;
        return;
    }
    j->delivery = job;
    job->data_dir = strdup(remote_ctx->cfg->data_dir ? remote_ctx->cfg->data_dir : ".");
    if (job->mailauth)
        snprintf(job->mailauth->data_dir, sizeof job->mailauth->data_dir, "%s",
                 job->data_dir ? job->data_dir : ".");
    if (!job->data_dir || !remote_lookup_users(job)) {
        job->queue_rc = 0;
        job->store_rc = -1;
        for (size_t i = 0; i < job->n_local; i++)
            job->targets[i].status = STORE_ERR_TEMP;
    } else {
        smtp_delivery_work(job);
    }
    struct smtp_mailauth_job *m = job->mailauth;
    j->is_delivered = job->queue_rc == 0 && job->store_rc == 0 &&
                      !(m && (m->action == SMTP_MAILAUTH_REJECT ||
                              m->action == SMTP_MAILAUTH_TEMPFAIL));
    struct buf b;
    buf_init(&b, CHANNEL_MAX_PAYLOAD - 16);
    char *st = calloc(job->n_local + 1, 1);
    bool ok = st != NULL;
    for (size_t i = 0; ok && i < job->n_local; i++)
        st[i] = (char)('0' + (job->targets[i].status >= 0 && job->targets[i].status <= 9
                                  ? job->targets[i].status
                                  : STORE_ERR_TEMP));
    char error[1024];
    snprintf(error, sizeof error, "%s", job->error ? job->error : "");
    ok = ok && wire_put_num(&b, job->queue_rc < 0) && wire_put_num(&b, job->store_rc < 0) &&
         wire_put_str(&b, error) && wire_put_str(&b, st) && wire_put_num(&b, m != NULL);
    if (ok && m)
        ok = wire_put_num(&b, m->action) && wire_put_str(&b, m->reply) &&
             wire_put_str(&b, m->summary) && wire_put_num(&b, (uint64_t)m->n_forged) &&
             wire_put_num(&b, m->is_sealed);
    free(st);
    /* a delivered message whose answer cannot be built is still delivered: the login
     * process answers 451 and the client's retry makes a duplicate, never a loss */
    backend_reply(j->req, ok ? 0 : -1, b.data, ok ? b.len : 0);
    j->req = NULL;
    buf_free(&b);
}

/* Loop thread: the queue runner hears of a message queued for remote recipients. */
static void remote_deliver_done(void *owner, struct job *jb)
{
    struct remote_job *j = (struct remote_job *)jb;
    struct smtp_delivery_job *job = j->delivery;
    if (j->is_delivered && job && job->n_remote)
        outbound_runner_notify(job->queue_id, (const char *const *)job->remote, job->n_remote);
    remote_job_free(j);
}

static void remote_on_deliver(struct backend_request *req, void *arg)
{
    remote_submit(req, remote_deliver_work, remote_deliver_done);
}

/* Pool thread: is the user's mailbox full (as envelope.c's check)? */
static void remote_usage_work(struct job *jb)
{
    struct remote_job *j = (struct remote_job *)jb;
    int32_t rc = 0;
    struct auth_user u;
    if (j->data_len > 0 && j->data_len <= ADDR_MAX_PATH + 1 && memchr(j->data, '\0', j->data_len) &&
        auth_user_lookup(remote_ctx->auth, j->data, &u) == 1) {
        if (u.quota && u.home) {
            int64_t used = store_user_usage(u.home);
            rc = used >= 0 && (uint64_t)used >= u.quota;
        }
        auth_user_free(&u);
    }
    backend_reply(j->req, rc, NULL, 0);
    j->req = NULL;
}

/* Pool thread: ETRN for a node. */
static void remote_etrn_work(struct job *jb)
{
    struct remote_job *j = (struct remote_job *)jb;
    struct wire_reader r;
    wire_reader_init(&r, j->data, j->data_len);
    const char *node = wire_str(&r, 256);
    bool is_subdomains = wire_num(&r, 1) == 1;
    if (r.is_bad || !node[0] || !is_line_safe(node) || strchr(node, '/')) {
        backend_reply(j->req, -1, NULL, 0);
        j->req = NULL;
        return;
    }
    size_t n_queued;
    int moved;
    smtp_etrn_flush(remote_ctx->cfg->data_dir ? remote_ctx->cfg->data_dir : ".", node,
                    is_subdomains, &n_queued, &moved);
    struct buf b;
    buf_init(&b, 256);
    bool ok = moved >= 0 && wire_put_num(&b, n_queued) && wire_put_num(&b, (uint64_t)moved);
    backend_reply(j->req, ok ? 0 : -1, b.data, ok ? b.len : 0);
    j->req = NULL;
    buf_free(&b);
}

/* Pool thread: a login process's greylisting triplet, checked in this worker's file. */
static void remote_greylist_work(struct job *jb)
{
    struct remote_job *j = (struct remote_job *)jb;
    struct wire_reader r;
    wire_reader_init(&r, j->data, j->data_len);
    const char *ip = wire_str(&r, 64);
    const char *sender = wire_str(&r, ADDR_MAX_PATH + 1);
    const char *rcpt = wire_str(&r, ADDR_MAX_PATH + 1);
    size_t rest;
    (void)wire_rest(&r, &rest);
    struct greylist_answer a = {.verdict = GREYLIST_ERROR};
    if (!r.is_bad && rest == 0 && ip[0] && rcpt[0] && remote_ctx->greylist)
        greylist_check(remote_ctx->greylist, ip, sender, rcpt, time(NULL), &a);
    struct buf b;
    buf_init(&b, 64);
    bool ok = wire_put_num(&b, a.retry_in) && wire_put_num(&b, a.is_pass_listed);
    backend_reply(j->req, ok ? (int32_t)a.verdict : GREYLIST_ERROR, b.data, ok ? b.len : 0);
    j->req = NULL;
    buf_free(&b);
}

/* Pool thread: a login process's BURL (RFC 4468), read as the submission of its user. */
static void remote_burl_work(struct job *jb)
{
    struct remote_job *j = (struct remote_job *)jb;
    struct wire_reader r;
    wire_reader_init(&r, j->data, j->data_len);
    const char *user = wire_str(&r, ADDR_MAX_PATH + 1);
    const char *url = wire_str(&r, IMAP_URL_MAX + 1);
    uint64_t limit = remote_ctx->cfg->smtp_max_message_size
                         ? remote_ctx->cfg->smtp_max_message_size
                         : 50ull * 1024 * 1024;
    uint64_t max = wire_num(&r, limit);
    size_t rest;
    (void)wire_rest(&r, &rest);
    /* the descriptor must be an empty, writable memfd (sealable, nothing sealed yet): a
     * pipe or another file of the login process's would be written to or block */
    struct stat sb;
    int seals = j->fd >= 0 ? fcntl(j->fd, F_GET_SEALS) : -1;
    if (r.is_bad || rest != 0 || !user[0] || !is_line_safe(user) || !url[0] || seals != 0 ||
        fstat(j->fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size != 0) {
        log_warning("smtpd", "a login process (pid %d) sent a malformed BURL request: refused",
                    (int)backend_request_login_pid(j->req));
        backend_reply(j->req, IMAP_URL_TEMP, NULL, 0);
        j->req = NULL;
        return;
    }
    struct imap_url_reader reader = {.auth = remote_ctx->auth,
                                     .username = user,
                                     .is_submit = true,
                                     .needs_urlauth = true,
                                     .now = time(NULL)};
    struct buf data;
    buf_init(&data, (size_t)max + 1);
    char *err = NULL;
    int rc = smtp_burl_fetch(&reader, url, strlen(url), max, &data, &err);
    if (rc == IMAP_URL_OK &&
        ((data.len && util_write_all(j->fd, data.data, data.len) < 0) ||
         fcntl(j->fd, F_ADD_SEALS, REMOTE_SEALS | F_SEAL_SEAL) < 0)) {
        free(err);
        err = strdup("cannot pass the octets on");
        rc = IMAP_URL_TEMP;
    }
    struct buf b;
    buf_init(&b, 512);
    char why[256];
    snprintf(why, sizeof why, "%s", err ? err : "");
    bool ok = wire_put_num(&b, rc == IMAP_URL_OK ? data.len : 0) && wire_put_str(&b, why);
    backend_reply(j->req, ok ? rc : IMAP_URL_TEMP, b.data, ok ? b.len : 0);
    j->req = NULL;
    free(err);
    buf_free(&b);
    buf_free(&data);
}

static void remote_plain_done(void *owner, struct job *jb)
{
    remote_job_free((struct remote_job *)jb);
}

static void remote_on_usage(struct backend_request *req, void *arg)
{
    remote_submit(req, remote_usage_work, remote_plain_done);
}

static void remote_on_etrn(struct backend_request *req, void *arg)
{
    remote_submit(req, remote_etrn_work, remote_plain_done);
}

static void remote_on_greylist(struct backend_request *req, void *arg)
{
    remote_submit(req, remote_greylist_work, remote_plain_done);
}

static void remote_on_burl(struct backend_request *req, void *arg)
{
    remote_submit(req, remote_burl_work, remote_plain_done);
}

void smtp_remote_serve(const struct server_context *ctx)
{
    remote_ctx = ctx;
    backend_server_handle(BACKEND_MSG_DELIVER, remote_on_deliver, NULL);
    backend_server_handle(BACKEND_MSG_USAGE, remote_on_usage, NULL);
    backend_server_handle(BACKEND_MSG_ETRN, remote_on_etrn, NULL);
    backend_server_handle(BACKEND_MSG_GREYLIST, remote_on_greylist, NULL);
    backend_server_handle(BACKEND_MSG_BURL, remote_on_burl, NULL);
}
