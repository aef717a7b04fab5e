/*
 * envelope.c - MAIL FROM and RCPT TO: syntax (parse.c), then policy.
 *
 * MAIL: submission roles need AUTH first (RFC 6409 §4.3, "530 5.7.0"); an authenticated
 * sender may only use its own addresses or aliases (auth_sender_allowed, "553 5.7.1").
 * RCPT: a local domain is resolved through the directory (aliases, catch-all, +tags):
 * unknown -> 550 5.1.1, directory error -> 451 4.3.0, full mailbox -> 452 4.2.2;
 * a foreign domain is relayed only for authenticated clients or relay_networks, else
 * 554 5.7.1 Relay access denied (DESIGN §6: no open relay, not even for loopback).
 *
 * Every directory question (is the domain ours, who receives this address, is the
 * mailbox full, may this user send as this address) is a job: a typed request (copies of
 * the address and parameters) and its result. With a directory that may wait on a
 * network (auth_directory_may_block: an SQL directory) it is a core/job.h job: the work
 * runs in the workpool while the session's reads pause, and done() on the loop applies
 * the answer to the transaction and replies, or just frees the job when the client has
 * gone (THE THREAD RULE: the work function never touches the session); pipelined
 * commands wait their turn in the input buffer. With the local
 * tern.db the same work function runs inline, as before SQL directories existed.
 */
#include "auth/auth.h"
#include "core/config.h"
#include "core/job.h"
#include "core/log.h"
#include "smtp/session.h"
#include "store/store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void smtp_txn_reset(struct smtp_txn *t)
{
    for (size_t i = 0; i < t->n_local; i++) {
        free(t->local[i].user);
        free(t->local[i].home);
        free(t->local[i].orig_rcpt);
        free(t->local[i].orcpt);
    }
    free(t->local);
    for (size_t i = 0; i < t->n_remote; i++) {
        free(t->remote[i]);
        if (t->remote_orcpt)
            free(t->remote_orcpt[i]);
    }
    free(t->remote);
    free(t->remote_notify);
    free(t->remote_orcpt);
    free(t->first_rcpt);
    if (t->body_fd >= 0)
        close(t->body_fd);
    /* Free the body too: an idle session should not keep a megabyte it once needed. */
    buf_free(&t->body);
    memset(t, 0, sizeof *t);
    buf_init(&t->body, 0);
    t->body_fd = -1;
}

/* Start the transaction (MAIL accepted). */
static void mail_accept(struct smtp_session *s, const struct addr *from,
                        const struct smtp_mail_params *params, const char *from_text)
{
    smtp_txn_reset(&s->txn);
    s->txn.is_active = true;
    s->txn.from = *from;
    snprintf(s->txn.from_text, sizeof s->txn.from_text, "%s", from_text);
    s->txn.params = *params;
    s->txn.start_ms = util_now_ms();
    smtp_reply(s, "250 2.1.0 Ok");
}

/* MAIL of an authenticated client: may it use this sender? A core/job.h job. */
struct sender_job {
    struct job job; /* first */
    struct auth_service *auth;
    char user[ADDR_MAX_PATH + 1];
    char from_text[ADDR_MAX_PATH + 1];
    struct addr from;
    struct smtp_mail_params params;
    bool is_allowed; /* result */
};

static void sender_work(struct job *job)
{
    struct sender_job *j = (struct sender_job *)job;
    j->is_allowed = auth_sender_allowed(j->auth, j->user, j->from_text);
}

/* Loop: apply the answer. */
static void sender_finish(struct smtp_session *s, struct sender_job *j)
{
    if (j->is_allowed) {
        mail_accept(s, &j->from, &j->params, j->from_text);
        return;
    }
    char reply[2 * SMTP_REPLY_MAX];
    snprintf(reply, sizeof reply, "553 5.7.1 <%s>: Sender address rejected: not owned by user %s",
             j->from_text, j->user);
    log_info("smtpd", "NOQUEUE: reject: MAIL from %s: %s; from=<%s> proto=ESMTP helo=<%s>",
             s->peer, reply, j->from_text, s->helo);
    smtp_reply(s, "%s", reply);
}

static void sender_done(void *session, struct job *job)
{
    struct sender_job *j = (struct sender_job *)job;
    struct smtp_session *s = session; /* NULL: the client has gone */
    if (s)
        sender_finish(s, j);
    free(j);
    if (s)
        smtp_session_job_done(s);
}

void smtp_cmd_mail(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (s->txn.is_active) {
        smtp_reply(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    bool is_submission = s->role == CONN_ROLE_SUBMISSION || s->role == CONN_ROLE_SUBMISSIONS;
    if (is_submission && !s->auth_user) {
        smtp_reply(s, "530 5.7.0 Authentication required");
        return;
    }
    struct addr from;
    struct smtp_mail_params params;
    char reply[SMTP_REPLY_MAX];
    if (!smtp_parse_mail(cmd->arg, cmd->arg_len, s->cfg->smtp_max_message_size, &from, &params,
                         reply, sizeof reply)) {
        smtp_reply(s, "%s", reply);
        return;
    }
    char from_text[ADDR_MAX_PATH + 1];
    addr_format(&from, from_text, sizeof from_text);
    if (!s->auth_user || !s->ctx->auth || from.is_null) {
        mail_accept(s, &from, &params, from_text);
        return;
    }
    struct sender_job *j = calloc(1, sizeof *j);
    if (!j) {
        smtp_reply(s, "451 4.3.0 Temporary failure: out of memory");
        return;
    }
    j->auth = s->ctx->auth;
    snprintf(j->user, sizeof j->user, "%s", s->auth_user);
    snprintf(j->from_text, sizeof j->from_text, "%s", from_text);
    j->from = from;
    j->params = params;
    if (!auth_directory_may_block(s->ctx->auth)) {
        sender_work(&j->job);
        sender_finish(s, j);
        free(j);
        return;
    }
    job_init(&j->job, s->handle, sender_work, sender_done);
    smtp_session_job_start(s, &j->job);
}

/* Append a local target unless that user already gets a copy. */
static bool txn_add_local(struct smtp_txn *t, const struct auth_user *u, const char *orig,
                          const struct smtp_rcpt_params *rp)
{
    for (size_t i = 0; i < t->n_local; i++)
        if (strcasecmp(t->local[i].user, u->address) == 0)
            return true;
    if (t->n_local == t->cap_local) {
        size_t cap = t->cap_local ? t->cap_local * 2 : 8;
        struct smtp_local_target *p = realloc(t->local, cap * sizeof *p);
        if (!p)
            return false;
        t->local = p;
        t->cap_local = cap;
    }
    struct smtp_local_target *lt = &t->local[t->n_local];
    lt->user = strdup(u->address);
    lt->home = strdup(u->home ? u->home : "");
    lt->orig_rcpt = strdup(orig);
    lt->quota = u->quota;
    lt->notify = rp->notify;
    lt->orcpt = rp->orcpt[0] ? strdup(rp->orcpt) : NULL;
    if (!lt->user || !lt->home || !lt->orig_rcpt || (rp->orcpt[0] && !lt->orcpt)) {
        free(lt->user);
        free(lt->home);
        free(lt->orig_rcpt);
        free(lt->orcpt);
        return false;
    }
    t->n_local++;
    return true;
}

static bool txn_add_remote(struct smtp_txn *t, const char *address,
                           const struct smtp_rcpt_params *rp)
{
    for (size_t i = 0; i < t->n_remote; i++)
        if (strcasecmp(t->remote[i], address) == 0)
            return true; /* the first RCPT's DSN parameters win */
    if (t->n_remote == t->cap_remote) {
        size_t cap = t->cap_remote ? t->cap_remote * 2 : 8;
        char **p = realloc(t->remote, cap * sizeof *p);
        if (p)
            t->remote = p;
        unsigned *nt = p ? realloc(t->remote_notify, cap * sizeof *nt) : NULL;
        if (nt)
            t->remote_notify = nt;
        char **oc = nt ? realloc(t->remote_orcpt, cap * sizeof *oc) : NULL;
        if (!oc)
            return false;
        t->remote_orcpt = oc;
        t->cap_remote = cap;
    }
    t->remote[t->n_remote] = strdup(address);
    t->remote_notify[t->n_remote] = rp->notify;
    t->remote_orcpt[t->n_remote] = rp->orcpt[0] ? strdup(rp->orcpt) : NULL;
    if (!t->remote[t->n_remote] || (rp->orcpt[0] && !t->remote_orcpt[t->n_remote])) {
        free(t->remote[t->n_remote]);
        free(t->remote_orcpt[t->n_remote]);
        return false;
    }
    t->n_remote++;
    return true;
}

static void rcpt_reject(struct smtp_session *s, const char *rcpt, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void rcpt_reject(struct smtp_session *s, const char *rcpt, const char *fmt, ...)
{
    char reply[SMTP_REPLY_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reply, sizeof reply, fmt, ap);
    va_end(ap);
    smtp_log_reject(s, "RCPT", reply, rcpt);
    smtp_reply(s, "%s", reply);
}

/* ---- RCPT: the directory's answer is worked out in the workpool --------------------- */

struct rcpt_job {
    struct job job; /* first: a core/job.h job */
    struct auth_service *auth;
    struct addr to;
    struct smtp_rcpt_params rp;
    bool is_bare_postmaster; /* "RCPT TO:<postmaster>": the domain is found in the work */
    bool may_relay;          /* authenticated or in relay_networks */
    char default_domain[256];
    char hostname[256];
    /* results */
    char rcpt[ADDR_MAX_PATH + 1];
    char reply[SMTP_REPLY_MAX]; /* non-empty: the rejection to send */
    struct auth_user *users;    /* local mailboxes, looked up */
    size_t n_users;
    struct auth_targets t; /* the resolved targets (remote ones are relayed) */
    bool is_remote;        /* a foreign recipient we relay */
};

__attribute__((format(printf, 2, 3))) static void rcpt_job_reject(struct rcpt_job *j,
                                                                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->reply, sizeof j->reply, fmt, ap);
    va_end(ap);
}

/* Work: is one of the local targets of this recipient at or over quota? */
static bool user_is_full(const struct auth_user *u)
{
    if (u->quota == 0 || !u->home)
        return false;
    int64_t used = store_user_usage(u->home);
    return used >= 0 && (uint64_t)used >= u->quota;
}

/* Work: resolve a recipient in one of our domains into j->users and j->t, or set
 * j->reply. Every local target is looked up first, so a rejection leaves the
 * transaction as it was. */
static void rcpt_resolve(struct rcpt_job *j)
{
    static const char unknown[] =
        "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table";
    int rc = auth_resolve(j->auth, j->rcpt, &j->t);
    if (rc < 0) {
        rcpt_job_reject(j, "451 4.3.0 <%s>: Temporary lookup failure", j->rcpt);
        return;
    }
    if (rc == 0) {
        rcpt_job_reject(j, unknown, j->rcpt);
        return;
    }
    j->users = calloc(j->t.n_local ? j->t.n_local : 1, sizeof *j->users);
    if (!j->users) {
        rcpt_job_reject(j, "451 4.3.0 <%s>: Temporary lookup failure", j->rcpt);
        return;
    }
    for (size_t i = 0; i < j->t.n_local && !j->reply[0]; i++) {
        struct auth_user *u = &j->users[j->n_users];
        int r = auth_user_lookup(j->auth, j->t.local[i], u);
        if (r < 0) {
            rcpt_job_reject(j, "451 4.3.0 <%s>: Temporary lookup failure", j->rcpt);
        } else if (r == 0 || !u->enabled) {
            if (r > 0)
                auth_user_free(u);
            if (j->t.n_local == 1 && j->t.n_remote == 0)
                rcpt_job_reject(j, unknown, j->rcpt);
        } else if (user_is_full(u)) {
            j->n_users++;
            rcpt_job_reject(j, "452 4.2.2 <%s>: Recipient address rejected: Mailbox full",
                            j->rcpt);
        } else {
            j->n_users++;
        }
    }
    if (!j->reply[0] && j->n_users == 0 && j->t.n_remote == 0)
        rcpt_job_reject(j, unknown, j->rcpt);
}

/* Work: RFC 5321 §4.1.1.3: a bare "postmaster" is ours. Route it via auth.default_domain,
 * else the parent domain of our hostname when that is local, else the hostname. */
static void postmaster_domain(struct rcpt_job *j)
{
    const char *dot = strchr(j->hostname, '.');
    char *out = j->to.domain;
    size_t size = sizeof j->to.domain;
    if (j->default_domain[0])
        snprintf(out, size, "%s", j->default_domain);
    else if (dot && auth_domain_is_local(j->auth, dot + 1) == 1)
        snprintf(out, size, "%s", dot + 1);
    else
        snprintf(out, size, "%s", j->hostname);
}

static void rcpt_work(struct job *job)
{
    struct rcpt_job *j = (struct rcpt_job *)job;
    if (j->is_bare_postmaster)
        postmaster_domain(j);
    addr_format(&j->to, j->rcpt, sizeof j->rcpt);
    int is_local = auth_domain_is_local(j->auth, j->to.domain);
    if (is_local < 0)
        rcpt_job_reject(j, "451 4.3.0 <%s>: Temporary lookup failure", j->rcpt);
    else if (is_local == 1)
        rcpt_resolve(j);
    else if (!j->may_relay) /* DESIGN §6: relaying needs SASL auth or relay_networks */
        rcpt_job_reject(j, "554 5.7.1 <%s>: Relay access denied", j->rcpt);
    else
        j->is_remote = true;
}

static void rcpt_job_free(struct rcpt_job *j)
{
    for (size_t i = 0; i < j->n_users; i++)
        auth_user_free(&j->users[i]);
    free(j->users);
    auth_targets_free(&j->t);
    free(j);
}

/* Loop: the recipient is accepted; add its targets to the transaction and say 250. */
static void rcpt_accept(struct smtp_session *s, struct rcpt_job *j)
{
    bool ok = true;
    if (j->is_remote) {
        ok = txn_add_remote(&s->txn, j->rcpt, &j->rp);
    } else {
        for (size_t i = 0; i < j->n_users && ok; i++)
            ok = txn_add_local(&s->txn, &j->users[i], j->rcpt, &j->rp);
        for (size_t i = 0; i < j->t.n_remote && ok; i++)
            ok = txn_add_remote(&s->txn, j->t.remote[i], &j->rp);
    }
    if (!ok) {
        rcpt_reject(s, j->rcpt, "451 4.3.0 <%s>: Temporary failure: out of memory", j->rcpt);
        return;
    }
    if (!s->txn.has_queue_id) {
        util_queue_id(s->txn.queue_id);
        s->txn.has_queue_id = true;
        if (s->auth_user)
            log_info("smtpd", "%s: client=%s, sasl_method=%s, sasl_username=%s", s->txn.queue_id,
                     s->peer, s->auth_mech, s->auth_user);
        else
            log_info("smtpd", "%s: client=%s", s->txn.queue_id, s->peer);
    }
    if (!s->txn.first_rcpt)
        s->txn.first_rcpt = strdup(j->rcpt);
    s->txn.n_rcpt++;
    smtp_reply(s, "250 2.1.5 Ok");
}

/* Loop: apply the answer. */
static void rcpt_finish(struct smtp_session *s, struct rcpt_job *j)
{
    if (j->reply[0])
        rcpt_reject(s, j->rcpt, "%s", j->reply);
    else
        rcpt_accept(s, j);
}

static void rcpt_done(void *session, struct job *job)
{
    struct rcpt_job *j = (struct rcpt_job *)job;
    struct smtp_session *s = session; /* NULL: the client has gone */
    if (s)
        rcpt_finish(s, j);
    rcpt_job_free(j);
    if (s)
        smtp_session_job_done(s);
}

static bool has_non_ascii(const char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    return false;
}

void smtp_cmd_rcpt(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (!s->txn.is_active) {
        smtp_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    struct addr to;
    struct smtp_rcpt_params rp;
    char reply[SMTP_REPLY_MAX];
    if (!smtp_parse_rcpt_dsn(cmd->arg, cmd->arg_len, &to, &rp, reply, sizeof reply)) {
        smtp_reply(s, "%s", reply);
        return;
    }
    if (!s->txn.params.is_smtputf8 && (has_non_ascii(to.local) || has_non_ascii(to.domain))) {
        /* RFC 6531 §3.4: internationalised addresses only with MAIL ... SMTPUTF8. */
        smtp_reply(s, "553 5.6.7 Recipient address requires SMTPUTF8");
        return;
    }
    unsigned max = s->cfg->smtp_max_recipients ? s->cfg->smtp_max_recipients : 1000;
    if (s->txn.n_rcpt >= max) {
        /* RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client retries later. */
        smtp_reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
    struct rcpt_job *j = s->ctx->auth ? calloc(1, sizeof *j) : NULL;
    if (!j) {
        char rcpt[ADDR_MAX_PATH + 1];
        addr_format(&to, rcpt, sizeof rcpt);
        rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
        return;
    }
    j->auth = s->ctx->auth;
    j->to = to;
    j->rp = rp;
    j->is_bare_postmaster = to.domain[0] == '\0';
    j->may_relay = s->auth_user != NULL || conn_peer_in_networks(s->c, &s->cfg->relay_networks);
    snprintf(j->default_domain, sizeof j->default_domain, "%s",
             s->cfg->default_domain ? s->cfg->default_domain : "");
    snprintf(j->hostname, sizeof j->hostname, "%s", smtp_hostname(s));
    if (!auth_directory_may_block(s->ctx->auth)) {
        rcpt_work(&j->job);
        rcpt_finish(s, j);
        rcpt_job_free(j);
        return;
    }
    job_init(&j->job, s->handle, rcpt_work, rcpt_done);
    smtp_session_job_start(s, &j->job);
}
