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
 * Abuse defences (issue 13) on the way: MAIL and RCPT count against the rate limits
 * (smtp_rate_allowed; refused there with 450 4.7.1), MAIL goes through the port-25
 * screens (RHSBL, unknown sender domains: screen.c, which continues with
 * smtp_mail_accept), and a local recipient of a port-25 stranger is greylisted in the
 * RCPT job, after its lookups (policy/greylist.h: the triplets are in SQLite, shared by
 * every worker).
 */
#include "auth/auth.h"
#include "core/config.h"
#include "core/log.h"
#include "policy/greylist.h"
#include "policy/ratelimit.h"
#include "smtp/mailauth_hook.h"
#include "smtp/remote.h"
#include "smtp/session.h"
#include "store/store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
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
    for (size_t i = 0; t->lmtp_rcpts && i < t->n_rcpt; i++)
        free(t->lmtp_rcpts[i]);
    free(t->lmtp_rcpts);
    free(t->spf);
    if (t->body_fd >= 0)
        close(t->body_fd);
    /* Free the body too: an idle session should not keep a megabyte it once needed. */
    buf_free(&t->body);
    memset(t, 0, sizeof *t);
    buf_init(&t->body, 0);
    t->body_fd = -1;
}

void smtp_mail_accept(struct smtp_session *s, const struct addr *from, const char *from_text,
                      const struct smtp_mail_params *params)
{
    smtp_txn_reset(&s->txn);
    s->txn.is_active = true;
    s->txn.from = *from;
    snprintf(s->txn.from_text, sizeof s->txn.from_text, "%s", from_text);
    s->txn.params = *params;
    s->txn.start_ms = util_now_ms();
    /* mailauth hook: SPF in its own job, then the 250. Never from mail_done: that path is
     * for authenticated senders, which smtp_mailauth_applies() leaves out. */
    if (smtp_mailauth_applies(s)) {
        smtp_mailauth_mail_start(s);
        return;
    }
    smtp_mail_accepted(s);
}

/* The milters' answer to MAIL: their refusal ends the transaction, else 250. */
static void mail_milter_next(struct smtp_session *s, void *arg, const struct milter_outcome *o)
{
    if (smtp_milter_refuses(s, "MAIL", o, NULL)) {
        smtp_txn_reset(&s->txn);
        smtp_milter_abort(s);
        return;
    }
    smtp_reply(s, "250 2.1.0 Ok");
}

void smtp_mail_accepted(struct smtp_session *s)
{
    if (smtp_milter_mail(s, mail_milter_next))
        return;
    smtp_reply(s, "250 2.1.0 Ok");
}

/* MAIL with a sender the client may use: the rate limit, then the port-25 screens (their
 * lookups continue with smtp_mail_accept), else accepted now. From mail_done only for
 * authenticated senders, which the screens leave out: the only job that may start there
 * is the milters' MAIL stage. */
static void mail_checked(struct smtp_session *s, const struct addr *from,
                         const struct smtp_mail_params *params, const char *from_text)
{
    if (!smtp_rate_allowed(s, RATELIMIT_MESSAGE))
        return;
    if (smtp_screen_mail(s, from, from_text, params))
        return;
    smtp_mail_accept(s, from, from_text, params);
}

/* An authenticated sender's MAIL FROM, checked against its addresses in the directory
 * on a pool thread (the directory may be another process or a database). */
struct mail_job {
    struct job job; /* first (core/job.h) */
    struct auth_service *auth;
    char user[ADDR_MAX_PATH + 1];
    char from_text[ADDR_MAX_PATH + 1];
    struct addr from;
    struct smtp_mail_params params;
    bool is_allowed; /* result */
};

static void mail_work(struct job *j)
{
    struct mail_job *mj = (struct mail_job *)j;
    mj->is_allowed = auth_sender_allowed(mj->auth, mj->user, mj->from_text);
}

static void mail_done(void *session, struct job *j)
{
    struct mail_job *mj = (struct mail_job *)j;
    struct smtp_session *s = session;
    if (s) {
        s->is_busy = false; /* the milters' MAIL stage may start a job of its own */
        if (mj->is_allowed) {
            mail_checked(s, &mj->from, &mj->params, mj->from_text);
        } else {
            char reply[SMTP_REPLY_MAX + 2 * (ADDR_MAX_PATH + 1)];
            snprintf(reply, sizeof reply,
                     "553 5.7.1 <%s>: Sender address rejected: not owned by user %s",
                     mj->from_text, mj->user);
            log_info("smtpd",
                     "NOQUEUE: reject: MAIL from %s: %s; from=<%s> proto=ESMTP helo=<%s>",
                     s->peer, reply, mj->from_text, s->helo);
            smtp_reply(s, "%s", reply);
        }
        if (!s->is_busy)
            smtp_session_job_done(s);
    }
    free(mj);
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
        mail_checked(s, &from, &params, from_text);
        return;
    }
    struct mail_job *mj = calloc(1, sizeof *mj);
    if (!mj) {
        smtp_reply(s, "451 4.3.0 Error: out of memory");
        return;
    }
    job_init(&mj->job, s->handle, mail_work, mail_done);
    mj->auth = s->ctx->auth;
    snprintf(mj->user, sizeof mj->user, "%s", s->auth_user);
    snprintf(mj->from_text, sizeof mj->from_text, "%s", from_text);
    mj->from = from;
    mj->params = params;
    smtp_session_job_start(s, &mj->job);
}

/* Append a local target unless that user already gets a copy (in LMTP: a copy for this
 * same RCPT; each RCPT has its own copies and its own reply, RFC 2033 §4.2). */
static bool txn_add_local(struct smtp_txn *t, const struct auth_user *u, const char *orig,
                          const struct smtp_rcpt_params *rp, bool is_lmtp)
{
    for (size_t i = 0; i < t->n_local; i++)
        if (strcasecmp(t->local[i].user, u->address) == 0 &&
            (!is_lmtp || t->local[i].rcpt_index == t->n_rcpt))
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
    lt->rcpt_index = t->n_rcpt;
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

static bool lmtp_rcpt_reserve(struct smtp_txn *t);
struct rcpt_job;
static void rcpt_commit(struct smtp_session *s, struct rcpt_job *rj);
static void rcpt_milter_next(struct smtp_session *s, void *arg, const struct milter_outcome *o);

/* Is one of the local targets of this recipient at or over quota? (BLOCKING: index) */
static bool user_is_full(const struct auth_user *u)
{
    if (u->quota == 0 || !u->home)
        return false;
    int64_t used = store_user_usage(u->home);
    return used >= 0 && (uint64_t)used >= u->quota;
}

/* A recipient's lookups, on a pool thread: is the domain ours, who gets the mail, is a
 * mailbox full. The loop then applies the verdict to the transaction (rcpt_done). */
struct rcpt_job {
    struct job job; /* first (core/job.h) */
    struct auth_service *auth;
    const struct config *cfg; /* process lifetime */
    struct addr to;           /* as parsed; a bare "postmaster" gets our domain */
    char host[256];           /* our hostname (postmaster's domain) */
    struct smtp_rcpt_params rp;
    bool may_relay; /* authenticated, or in relay_networks (decided on the loop) */
    bool is_lmtp;   /* LMTP: final delivery only (RFC 2033), one reply per recipient */
    bool is_remote; /* a login process: a mail worker tells whether a mailbox is full */
    /* greylisting of a local recipient: here (greylist, the only process) or asked of a
     * mail worker (is_greylist_remote, a login process); neither: not for this session */
    struct greylist *greylist; /* thread-safe service handle */
    bool is_greylist_remote;
    char client_ip[64];
    char sender[ADDR_MAX_PATH + 1];
    bool is_greylist_error; /* result: the database failed, the recipient passed */
    /* results */
    char rcpt[ADDR_MAX_PATH + 1];
    char reply[SMTP_REPLY_MAX]; /* a rejection ("" when accepted) */
    struct auth_user *users;    /* local targets found */
    size_t n_users;
    struct auth_targets t; /* t.remote: foreign addresses an alias points to */
    bool is_foreign;       /* not our domain: relay to rcpt itself */
};

static void rcpt_job_free(struct rcpt_job *rj)
{
    for (size_t i = 0; i < rj->n_users; i++)
        auth_user_free(&rj->users[i]);
    free(rj->users);
    auth_targets_free(&rj->t);
    free(rj);
}

static void rcpt_job_free_arg(void *rj)
{
    rcpt_job_free(rj);
}

#define RCPT_UNKNOWN                                                                               \
    "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table"

/* Resolve a recipient in one of our domains: users (and remote alias targets) found, or
 * the rejection in rj->reply. Every local target is looked up before anything counts, so a
 * rejection leaves the transaction as it was. ar: the lookups auth_rcpt_lookup made (its
 * targets and users move into rj). */
static void rcpt_local(struct rcpt_job *rj, struct auth_rcpt *ar)
{
    const char *rcpt = rj->rcpt;
    if (ar->resolved < 0) {
        snprintf(rj->reply, sizeof rj->reply, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
        return;
    }
    if (ar->resolved == 0) {
        snprintf(rj->reply, sizeof rj->reply, RCPT_UNKNOWN, rcpt);
        return;
    }
    rj->t = ar->t;
    memset(&ar->t, 0, sizeof ar->t);
    struct auth_targets *t = &rj->t;
    rj->users = calloc(t->n_local ? t->n_local : 1, sizeof *rj->users);
    if (!rj->users) {
        snprintf(rj->reply, sizeof rj->reply, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
        goto out;
    }
    for (size_t i = 0; i < t->n_local; i++) {
        struct auth_user *u = &rj->users[rj->n_users];
        int r = ar->found[i];
        if (r == 2) { /* not in the answer (a long alias): ask now */
            r = auth_user_lookup(rj->auth, t->local[i], u);
        } else if (r == 1) {
            *u = ar->users[i];
            memset(&ar->users[i], 0, sizeof ar->users[i]);
        }
        if (r < 0) {
            snprintf(rj->reply, sizeof rj->reply, "451 4.3.0 <%s>: Temporary lookup failure",
                     rcpt);
            goto out;
        }
        if (r == 0 || !u->enabled) {
            if (r > 0)
                auth_user_free(u);
            if (t->n_local == 1 && t->n_remote == 0) {
                snprintf(rj->reply, sizeof rj->reply, RCPT_UNKNOWN, rcpt);
                goto out;
            }
            continue;
        }
        rj->n_users++;
        /* without a quota nothing can be full: no index to read, and from a login process
         * no round trip to a mail worker (and from there to the auth process) per RCPT */
        if (u->quota != 0 &&
            (rj->is_remote ? smtp_remote_user_is_full(u->address) == 1 : user_is_full(u))) {
            snprintf(rj->reply, sizeof rj->reply,
                     "452 4.2.2 <%s>: Recipient address rejected: Mailbox full", rcpt);
            goto out;
        }
    }
    if (rj->n_users == 0 && t->n_remote == 0)
        snprintf(rj->reply, sizeof rj->reply, RCPT_UNKNOWN, rcpt);
out:
    /* (the users not moved into rj: a rejection stopped the loop early) */
    for (size_t i = 0; ar->users && i < t->n_local; i++)
        auth_user_free(&ar->users[i]);
}

/* RFC 5321 §4.1.1.3: a bare "postmaster" is ours. Route it via auth.default_domain,
 * else the parent domain of our hostname when that is local, else the hostname. */
static void postmaster_domain(struct rcpt_job *rj, char *out, size_t size)
{
    const char *dot = strchr(rj->host, '.');
    if (rj->cfg->default_domain && rj->cfg->default_domain[0])
        snprintf(out, size, "%s", rj->cfg->default_domain);
    else if (dot && auth_domain_is_local(rj->auth, dot + 1) == 1)
        snprintf(out, size, "%s", dot + 1);
    else
        snprintf(out, size, "%s", rj->host);
}

/* A found local recipient of a port-25 stranger: greylisting (RFC 6647) defers a new
 * triplet. After the lookups, so unknown users are refused at once and never fill the
 * table. A database failure lets the recipient pass (never lose mail to it). */
static void rcpt_greylist(struct rcpt_job *rj)
{
    struct greylist_answer a;
    if (rj->is_greylist_remote)
        smtp_remote_greylist(rj->client_ip, rj->sender, rj->rcpt, &a);
    else
        greylist_check(rj->greylist, rj->client_ip, rj->sender, rj->rcpt, time(NULL), &a);
    if (a.verdict == GREYLIST_DEFER)
        snprintf(rj->reply, sizeof rj->reply,
                 "450 4.7.1 <%s>: Recipient address rejected: Greylisted, try again in %u "
                 "seconds",
                 rj->rcpt, a.retry_in);
    rj->is_greylist_error = a.verdict == GREYLIST_ERROR;
}

/* Pool thread: the recipient's address and lookups. */
static void rcpt_work(struct job *j)
{
    struct rcpt_job *rj = (struct rcpt_job *)j;
    if (rj->to.domain[0] == '\0')
        postmaster_domain(rj, rj->to.domain, sizeof rj->to.domain);
    addr_format(&rj->to, rj->rcpt, sizeof rj->rcpt);
    struct auth_rcpt ar;
    auth_rcpt_lookup(rj->auth, rj->to.domain, rj->rcpt, &ar);
    int is_local = ar.is_local;
    if (is_local < 0) {
        snprintf(rj->reply, sizeof rj->reply, "451 4.3.0 <%s>: Temporary lookup failure",
                 rj->rcpt);
    } else if (is_local == 1) {
        rcpt_local(rj, &ar);
        if (!rj->reply[0] && rj->is_lmtp && rj->t.n_remote > 0)
            /* LMTP is final delivery: an address forwarded off this host has no mailbox
             * here (resolve such aliases in the MTA in front) */
            snprintf(rj->reply, sizeof rj->reply,
                     "550 5.1.1 <%s>: Recipient address rejected: forwarded off this host, "
                     "not deliverable over LMTP",
                     rj->rcpt);
        if (!rj->reply[0] && (rj->greylist || rj->is_greylist_remote))
            rcpt_greylist(rj);
    } else if (rj->is_lmtp) {
        /* LMTP never relays (RFC 2033 §1: delivery to local mailboxes) */
        snprintf(rj->reply, sizeof rj->reply,
                 "550 5.1.1 <%s>: Recipient address rejected: not a local address", rj->rcpt);
    } else if (!rj->may_relay) {
        /* DESIGN §6: relaying needs SASL auth or a client in relay_networks. */
        snprintf(rj->reply, sizeof rj->reply, "554 5.7.1 <%s>: Relay access denied", rj->rcpt);
    } else {
        rj->is_foreign = true;
    }
    auth_rcpt_free(&ar);
}

/* Loop thread: the recipient counts (250) or is refused. */
static void rcpt_done(void *session, struct job *j)
{
    struct rcpt_job *rj = (struct rcpt_job *)j;
    struct smtp_session *s = session;
    if (!s) {
        rcpt_job_free(rj);
        return;
    }
    const char *rcpt = rj->rcpt;
    if (rj->is_greylist_error)
        log_warning("smtpd", "%s: greylisting failed: <%s> accepted", s->peer, rcpt);
    /* mailauth hook: the SPF policy of our recipient's domain (it replies on refusal) */
    if (!rj->reply[0] && !rj->is_foreign && !rj->is_lmtp && !smtp_mailauth_rcpt_allowed(s, rcpt)) {
        rcpt_job_free(rj);
        smtp_session_job_done(s);
        return;
    }
    /* the milters' RCPT stage: their answer decides (rcpt_milter_next) */
    if (!rj->reply[0] && smtp_milter_rcpt(s, rcpt, rcpt_milter_next, rj, rcpt_job_free_arg))
        return;
    rcpt_commit(s, rj);
    rcpt_job_free(rj);
    smtp_session_job_done(s);
}

/* The milters' answer to a recipient: their refusal is this RCPT's reply. */
static void rcpt_milter_next(struct smtp_session *s, void *arg, const struct milter_outcome *o)
{
    struct rcpt_job *rj = arg;
    if (!smtp_milter_refuses(s, "RCPT", o, rj->rcpt))
        rcpt_commit(s, rj);
    rcpt_job_free(rj);
}

/* The recipient passed every check: into the transaction (250), or refused (rj->reply). */
static void rcpt_commit(struct smtp_session *s, struct rcpt_job *rj)
{
    const char *rcpt = rj->rcpt;
    if (!rj->reply[0] && rj->is_lmtp && !lmtp_rcpt_reserve(&s->txn))
        snprintf(rj->reply, sizeof rj->reply, "451 4.3.0 <%s>: Temporary failure: out of memory",
                 rcpt);
    if (!rj->reply[0]) {
        bool ok = true;
        if (rj->is_foreign) {
            ok = txn_add_remote(&s->txn, rcpt, &rj->rp);
        } else {
            for (size_t i = 0; i < rj->n_users && ok; i++)
                ok = txn_add_local(&s->txn, &rj->users[i], rcpt, &rj->rp, rj->is_lmtp);
            for (size_t i = 0; i < rj->t.n_remote && ok; i++)
                ok = txn_add_remote(&s->txn, rj->t.remote[i], &rj->rp);
        }
        if (ok && rj->is_lmtp && !(s->txn.lmtp_rcpts[s->txn.n_rcpt] = strdup(rcpt))) {
            /* its copies are in the transaction: it must have its reply slot */
            smtp_reply(s, "451 4.3.0 <%s>: Temporary failure: out of memory", rcpt);
            smtp_txn_reset(&s->txn);
            return;
        }
        if (!ok)
            snprintf(rj->reply, sizeof rj->reply,
                     "451 4.3.0 <%s>: Temporary failure: out of memory", rcpt);
    }
    if (rj->reply[0]) {
        rcpt_reject(s, rcpt, "%s", rj->reply);
    } else {
        if (!s->txn.has_queue_id) {
            util_queue_id(s->txn.queue_id);
            s->txn.has_queue_id = true;
            if (s->auth_user)
                log_info("smtpd", "%s: client=%s, sasl_method=%s, sasl_username=%s",
                         s->txn.queue_id, s->peer, s->auth_mech, s->auth_user);
            else
                log_info("smtpd", "%s: client=%s", s->txn.queue_id, s->peer);
        }
        if (!s->txn.first_rcpt)
            s->txn.first_rcpt = strdup(rcpt);
        s->txn.n_rcpt++;
        smtp_reply(s, "250 2.1.5 Ok");
    }
}

/* Room in lmtp_rcpts for one more RCPT. */
static bool lmtp_rcpt_reserve(struct smtp_txn *t)
{
    if (t->n_rcpt < t->cap_lmtp_rcpts)
        return true;
    size_t cap = t->cap_lmtp_rcpts ? t->cap_lmtp_rcpts * 2 : 8;
    char **p = realloc(t->lmtp_rcpts, cap * sizeof *p);
    if (!p)
        return false;
    t->lmtp_rcpts = p;
    t->cap_lmtp_rcpts = cap;
    return true;
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
    if (!smtp_rate_allowed(s, RATELIMIT_RECIPIENT))
        return;
    if (!s->ctx->auth) {
        char rcpt[ADDR_MAX_PATH + 1];
        addr_format(&to, rcpt, sizeof rcpt);
        rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
        return;
    }
    struct rcpt_job *rj = calloc(1, sizeof *rj);
    if (!rj) {
        smtp_reply(s, "451 4.3.0 Error: out of memory");
        return;
    }
    job_init(&rj->job, s->handle, rcpt_work, rcpt_done);
    rj->auth = s->ctx->auth;
    rj->cfg = s->cfg;
    rj->to = to;
    snprintf(rj->host, sizeof rj->host, "%s", smtp_hostname(s));
    rj->rp = rp;
    rj->is_lmtp = s->role == CONN_ROLE_LMTP;
    rj->is_remote = conn_is_login_process(s->c);
    rj->may_relay = !rj->is_lmtp && (s->auth_user != NULL ||
                                     conn_peer_in_networks(s->c, &s->cfg->relay_networks));
    rj->greylist = smtp_screen_greylist(s);
    rj->is_greylist_remote = rj->is_remote && smtp_screen_is_greylisted(s);
    if (rj->greylist || rj->is_greylist_remote) {
        snprintf(rj->client_ip, sizeof rj->client_ip, "%s", smtp_screen_client_ip(s));
        snprintf(rj->sender, sizeof rj->sender, "%s", s->txn.from_text);
    }
    smtp_session_job_start(s, &rj->job);
}
