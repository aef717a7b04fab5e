/*
 * envelope.c - MAIL FROM and RCPT TO: syntax (parse.c), then policy.
 *
 * MAIL: submission roles need AUTH first (RFC 6409 §4.3, "530 5.7.0"); an authenticated
 * sender may only use its own addresses or aliases (auth_sender_allowed, "553 5.7.1").
 * RCPT: a local domain is resolved through the directory (aliases, catch-all, +tags):
 * unknown -> 550 5.1.1, directory error -> 451 4.3.0, full mailbox -> 452 4.2.2;
 * a foreign domain is relayed only for authenticated clients or relay_networks, else
 * 554 5.7.1 Relay access denied (DESIGN §6: no open relay, not even for loopback).
 */
#include "auth/auth.h"
#include "core/config.h"
#include "core/log.h"
#include "policy/ratelimit.h"
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
    if (s->auth_user && s->ctx->auth && !from.is_null &&
        !auth_sender_allowed(s->ctx->auth, s->auth_user, from_text)) {
        snprintf(reply, sizeof reply,
                 "553 5.7.1 <%s>: Sender address rejected: not owned by user %s", from_text,
                 s->auth_user);
        log_info("smtpd", "NOQUEUE: reject: MAIL from %s: %s; from=<%s> proto=ESMTP helo=<%s>",
                 s->peer, reply, from_text, s->helo);
        smtp_reply(s, "%s", reply);
        return;
    }
    if (!smtp_rate_allowed(s, RATELIMIT_MESSAGE))
        return;
    if (smtp_screen_mail(s, &from, from_text, &params))
        return; /* RHSBL / sender domain lookups; they answer */
    smtp_mail_accept(s, &from, from_text, &params);
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
    smtp_reply(s, "250 2.1.0 Ok");
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

/* Is one of the local targets of this recipient at or over quota? */
static bool user_is_full(const struct auth_user *u)
{
    if (u->quota == 0 || !u->home)
        return false;
    int64_t used = store_user_usage(u->home);
    return used >= 0 && (uint64_t)used >= u->quota;
}

/* Resolve a recipient in one of our domains. Returns 1 accepted, 0 rejected (replied). */
static int rcpt_local(struct smtp_session *s, const char *rcpt, const struct smtp_rcpt_params *rp)
{
    struct auth_targets t = {0};
    int rc = auth_resolve(s->ctx->auth, rcpt, &t);
    if (rc < 0) {
        rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
        return 0;
    }
    if (rc == 0) {
        rcpt_reject(s, rcpt,
                    "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual "
                    "mailbox table",
                    rcpt);
        return 0;
    }
    /* Look every local target up first, so a rejection leaves the transaction as it was. */
    struct auth_user *users = calloc(t.n_local ? t.n_local : 1, sizeof *users);
    int result = 1;
    size_t n_found = 0;
    if (!users) {
        rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
        auth_targets_free(&t);
        return 0;
    }
    for (size_t i = 0; i < t.n_local && result == 1; i++) {
        int r = auth_user_lookup(s->ctx->auth, t.local[i], &users[n_found]);
        if (r < 0) {
            rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
            result = 0;
        } else if (r == 0 || !users[n_found].enabled) {
            if (r > 0)
                auth_user_free(&users[n_found]);
            if (t.n_local == 1 && t.n_remote == 0) {
                rcpt_reject(s, rcpt,
                            "550 5.1.1 <%s>: Recipient address rejected: User unknown in "
                            "virtual mailbox table",
                            rcpt);
                result = 0;
            }
        } else if (user_is_full(&users[n_found])) {
            n_found++;
            rcpt_reject(s, rcpt, "452 4.2.2 <%s>: Recipient address rejected: Mailbox full", rcpt);
            result = 0;
        } else {
            n_found++;
        }
    }
    if (result == 1 && n_found == 0 && t.n_remote == 0) {
        rcpt_reject(s, rcpt,
                    "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual "
                    "mailbox table",
                    rcpt);
        result = 0;
    }
    if (result == 1) {
        for (size_t i = 0; i < n_found; i++)
            if (!txn_add_local(&s->txn, &users[i], rcpt, rp))
                result = -1;
        for (size_t i = 0; i < t.n_remote; i++)
            if (!txn_add_remote(&s->txn, t.remote[i], rp))
                result = -1;
        if (result < 0) {
            rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary failure: out of memory", rcpt);
            result = 0;
        }
    }
    for (size_t i = 0; i < n_found; i++)
        auth_user_free(&users[i]);
    free(users);
    auth_targets_free(&t);
    return result;
}

static bool has_non_ascii(const char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    return false;
}

/* RFC 5321 §4.1.1.3: a bare "postmaster" is ours. Route it via auth.default_domain,
 * else the parent domain of our hostname when that is local, else the hostname. */
static void postmaster_domain(struct smtp_session *s, char *out, size_t size)
{
    const char *host = smtp_hostname(s);
    const char *dot = strchr(host, '.');
    if (s->cfg->default_domain && s->cfg->default_domain[0])
        snprintf(out, size, "%s", s->cfg->default_domain);
    else if (dot && s->ctx->auth && auth_domain_is_local(s->ctx->auth, dot + 1) == 1)
        snprintf(out, size, "%s", dot + 1);
    else
        snprintf(out, size, "%s", host);
}

static void rcpt_accepted(struct smtp_session *s, const char *rcpt);

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
    if (to.domain[0] == '\0')
        postmaster_domain(s, to.domain, sizeof to.domain);
    char rcpt[ADDR_MAX_PATH + 1];
    addr_format(&to, rcpt, sizeof rcpt);
    if (!s->ctx->auth) {
        rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
        return;
    }
    int is_local = auth_domain_is_local(s->ctx->auth, to.domain);
    if (is_local < 0) {
        rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
        return;
    }
    if (is_local == 1) {
        if (smtp_screen_rcpt(s, rcpt, &rp))
            return; /* greylisting runs; it continues with smtp_rcpt_accept_local */
        smtp_rcpt_accept_local(s, rcpt, &rp);
        return;
    } else {
        /* DESIGN §6: relaying needs SASL auth or a client in relay_networks. */
        bool may_relay =
            s->auth_user != NULL || conn_peer_in_networks(s->c, &s->cfg->relay_networks);
        if (!may_relay) {
            rcpt_reject(s, rcpt, "554 5.7.1 <%s>: Relay access denied", rcpt);
            return;
        }
        if (!txn_add_remote(&s->txn, rcpt, &rp)) {
            rcpt_reject(s, rcpt, "451 4.3.0 <%s>: Temporary failure: out of memory", rcpt);
            return;
        }
    }
    rcpt_accepted(s, rcpt);
}

void smtp_rcpt_accept_local(struct smtp_session *s, const char *rcpt,
                            const struct smtp_rcpt_params *rp)
{
    if (rcpt_local(s, rcpt, rp) == 1)
        rcpt_accepted(s, rcpt);
}

/* A recipient was added to the transaction: the queue id, the log line, 250. */
static void rcpt_accepted(struct smtp_session *s, const char *rcpt)
{
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
        s->txn.first_rcpt = strdup(rcpt);
    s->txn.n_rcpt++;
    smtp_reply(s, "250 2.1.5 Ok");
}
