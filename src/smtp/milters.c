/*
 * milters.c - the listener's milters asked at each SMTP command, as Postfix's smtpd does
 * (issue 13): the connect stage before the banner, helo at HELO/EHLO, mail at MAIL FROM
 * (after our own checks passed), rcpt at each RCPT TO (after the recipient was found);
 * data, headers, body and end of message follow in the delivery job (filter.c) over the
 * same connections. So a milter's reject or tempfail answers the command it was asked
 * about: a recipient it refuses is refused alone, with its reply.
 *
 * What the answers do (Postfix's rules):
 *   - connect: a reject replaces the banner with 554 (RFC 5321 §3.1: the server then
 *     answers every command but QUIT with 503); a tempfail, or a milter that cannot be
 *     reached under milter.default_action = tempfail, is 421 and the connection ends;
 *   - helo, mail, rcpt: a reject or tempfail is the command's reply (a refusal at
 *     connect or helo is repeated by that milter at every later stage); a discard at
 *     mail or rcpt accepts the transaction and drops its message at end of data;
 *   - RSET aborts the milters' message (SMFIC_ABORT, without waiting); a new MAIL aborts
 *     one still open first (milter/milter.h).
 *
 * Thread rule (core/job.h): the session owns its milter_session. A stage moves it into a
 * job on the milter pool (ctx->milter_pool) together with copies of the stage's strings;
 * the done callback finds the session again by its handle and moves it back, or, when the
 * client has left, closes it (QUIT without waiting). While a stage runs the session is
 * busy (its reading paused): one stage at a time, never two threads on one conversation.
 */
#include "core/config.h"
#include "core/log.h"
#include "milter/milter.h"
#include "smtp/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct smtp_milters {
    struct milter_session *ms; /* NULL while a job holds it */
    bool is_denied;            /* the connect stage refused: 503 to all but QUIT */
    bool is_discarded;         /* a milter discarded this transaction at MAIL or RCPT */
};

enum smtp_milter_stage { STAGE_CONNECT, STAGE_HELO, STAGE_MAIL, STAGE_RCPT };

/* One stage's request (copies) and answer. */
struct milter_job {
    struct job job;            /* first (core/job.h) */
    struct milter_session *ms; /* moved in at submit, moved back in done */
    enum smtp_milter_stage stage;
    bool is_xclient; /* connect after XCLIENT: the 220 is XCLIENT's reply */
    char helo[256];
    char tls_version[32];
    bool has_tls;
    char sender[ADDR_MAX_PATH + 1];
    char auth_user[ADDR_MAX_PATH + 1];
    char auth_mech[21];
    bool has_auth;
    char rcpt[ADDR_MAX_PATH + 1];
    struct milter_outcome o; /* result */
    smtp_milter_next_fn *next;
    void *arg;
    void (*arg_free)(void *arg);
};

const struct config_list *smtp_milter_list(const struct smtp_session *s)
{
    /* LMTP is final delivery from an MTA that ran its own filters (RFC 2033): none here */
    static const struct config_list none;
    if (s->role == CONN_ROLE_LMTP)
        return &none;
    return s->role == CONN_ROLE_SMTP ? &s->cfg->smtp_milters : &s->cfg->submission_milters;
}

/* Pool thread: the stage, over the job's copies only. */
static void milter_work(struct job *j)
{
    struct milter_job *mj = (struct milter_job *)j;
    struct milter_message m = {
        .helo = mj->helo,
        .tls_version = mj->has_tls ? mj->tls_version : NULL,
        .sender = mj->sender,
        .auth_user = mj->has_auth ? mj->auth_user : NULL,
        .auth_mech = mj->has_auth ? mj->auth_mech : NULL,
    };
    switch (mj->stage) {
    case STAGE_CONNECT:
        milter_session_connect(mj->ms, &mj->o);
        break;
    case STAGE_HELO:
        milter_session_helo(mj->ms, &m, &mj->o);
        break;
    case STAGE_MAIL:
        milter_session_mail(mj->ms, &m, &mj->o);
        break;
    case STAGE_RCPT:
        milter_session_rcpt(mj->ms, mj->rcpt, &mj->o);
        break;
    }
}

static void milter_job_free(struct milter_job *mj)
{
    milter_outcome_free(&mj->o);
    free(mj);
}

/* Loop thread: the conversation back to its session (or closed), then what follows. */
static void milter_done(void *session, struct job *j)
{
    struct milter_job *mj = (struct milter_job *)j;
    struct smtp_session *s = session;
    if (!s) { /* the client left (a queued stage was cancelled: work() did not run) */
        milter_session_free(mj->ms);
        if (mj->arg_free)
            mj->arg_free(mj->arg);
        milter_job_free(mj);
        return;
    }
    s->milters->ms = mj->ms;
    if ((mj->stage == STAGE_MAIL || mj->stage == STAGE_RCPT) && mj->o.verdict == MILTER_DISCARD) {
        /* Postfix: "milter-discard": the transaction goes on; its message is dropped */
        log_info("smtpd", "%s: milter-discard: %s from %s: %s",
                 s->txn.has_queue_id ? s->txn.queue_id : "NOQUEUE",
                 mj->stage == STAGE_MAIL ? "MAIL" : "RCPT", s->peer, mj->o.why);
        s->milters->is_discarded = true;
        mj->o.verdict = MILTER_ACCEPT;
    }
    s->is_busy = false; /* what follows may start the next job */
    mj->next(s, mj->arg, &mj->o);
    milter_job_free(mj);
    if (!s->is_busy)
        smtp_session_job_done(s);
}

/* Start a stage when there is a milter to ask: true (next follows), false (go on now). */
static bool stage_start(struct smtp_session *s, struct milter_job *mj)
{
    mj->ms = s->milters->ms;
    s->milters->ms = NULL;
    job_init(&mj->job, s->handle, milter_work, milter_done);
    smtp_session_job_start_on(s, &mj->job,
                              s->ctx->milter_pool ? s->ctx->milter_pool : s->ctx->pool);
    return true;
}

/* A new stage job, or NULL when no milter is to be asked now (or out of memory: then the
 * milters are passed over, logged). */
static struct milter_job *stage_new(struct smtp_session *s, enum smtp_milter_stage stage,
                                    smtp_milter_next_fn *next, void *arg, void (*arg_free)(void *))
{
    if (!s->milters || !s->milters->ms || !milter_session_is_active(s->milters->ms))
        return NULL;
    struct milter_job *mj = calloc(1, sizeof *mj);
    if (!mj) {
        log_warning("smtpd", "%s: out of memory: milters not asked", s->peer);
        return NULL;
    }
    mj->stage = stage;
    mj->next = next;
    mj->arg = arg;
    mj->arg_free = arg_free;
    return mj;
}

/* ---- connect ------------------------------------------------------------------------ */

/* The banner (or XCLIENT's 220: counted as its reply). */
static void greet_ok(struct smtp_session *s, bool is_xclient)
{
    if (is_xclient)
        smtp_reply(s, "220 %s ESMTP", smtp_hostname(s));
    else /* RFC 5321 §4.3.1 greeting; no software name or version (DESIGN §6) */
        conn_printf(s->c, "220 %s ESMTP\r\n", smtp_hostname(s));
}

/* A reply with its code replaced: "550 5.7.1 x" -> "554 5.7.1 x". */
static void reply_recode(const char *reply, const char *code, char *out, size_t size)
{
    const char *rest = strlen(reply) > 3 ? reply + 3 : " 5.7.1 Command rejected";
    snprintf(out, size, "%s%s", code, rest);
}

static void connect_next(struct smtp_session *s, void *arg, const struct milter_outcome *o)
{
    bool is_xclient = arg != NULL;
    char reply[600];
    switch (o->verdict) {
    case MILTER_REJECT:
        /* RFC 5321 §3.1: 554 instead of the banner; every command but QUIT gets 503 */
        reply_recode(o->reply, "554", reply, sizeof reply);
        log_info("smtpd", "NOQUEUE: milter-reject: CONNECT from %s: %s; proto=SMTP", s->peer,
                 reply);
        s->milters->is_denied = true;
        smtp_reply(s, "%s", reply);
        break;
    case MILTER_TEMPFAIL:
        reply_recode(o->reply, "421", reply, sizeof reply);
        log_info("smtpd", "NOQUEUE: milter-reject: CONNECT from %s: %s; proto=SMTP", s->peer,
                 reply);
        smtp_reply(s, "%s", reply);
        s->input = SMTP_INPUT_CLOSED;
        conn_close(s->c);
        break;
    default:
        greet_ok(s, is_xclient);
        break;
    }
}

void smtp_milter_greet(struct smtp_session *s, bool is_xclient)
{
    const struct config_list *list = smtp_milter_list(s);
    if (s->milters) { /* XCLIENT: a new client, a new conversation */
        milter_session_free(s->milters->ms);
        memset(s->milters, 0, sizeof *s->milters);
    }
    if (list->n == 0) {
        greet_ok(s, is_xclient);
        return;
    }
    struct milter_spec *specs = NULL;
    bool is_oom = false;
    size_t n = milter_specs_from_config(s->cfg, list, &specs, &is_oom);
    if (!s->milters)
        s->milters = calloc(1, sizeof *s->milters);
    const char *ip = s->client_ip[0] ? s->client_ip : conn_peer_ip(s->c);
    const char *bracket = strchr(s->peer, '[');
    char name[320];
    snprintf(name, sizeof name, "%.*s", bracket ? (int)(bracket - s->peer) : (int)strlen(s->peer),
             s->peer);
    struct milter_message info = {
        .client_name = name,
        .client_addr = ip ? ip : "unknown",
        .client_port = conn_peer_port(s->c),
        .local_addr = conn_local_ip(s->c),
        .hostname = smtp_hostname(s),
        .daemon_name = smtp_hostname(s),
    };
    if (s->milters && n)
        s->milters->ms = milter_session_new(specs, n, &info);
    free(specs);
    struct milter_job *mj = s->milters && s->milters->ms ? calloc(1, sizeof *mj) : NULL;
    if (!mj) {
        log_warning("smtpd", "%s: out of memory for the milters", s->peer);
        smtp_reply(s, "421 4.3.0 %s Error: out of memory", smtp_hostname(s));
        s->input = SMTP_INPUT_CLOSED;
        conn_close(s->c);
        return;
    }
    mj->stage = STAGE_CONNECT;
    mj->next = connect_next;
    static char xclient_tag;
    mj->arg = is_xclient ? &xclient_tag : NULL;
    stage_start(s, mj);
}

bool smtp_milter_is_denied(const struct smtp_session *s)
{
    return s->milters && s->milters->is_denied;
}

/* ---- helo, mail, rcpt ------------------------------------------------------------------ */

bool smtp_milter_helo(struct smtp_session *s, smtp_milter_next_fn *next)
{
    struct milter_job *mj = stage_new(s, STAGE_HELO, next, NULL, NULL);
    if (!mj)
        return false;
    snprintf(mj->helo, sizeof mj->helo, "%s", s->helo);
    if (conn_is_tls(s->c)) {
        /* "TLSv1.3 with cipher ..." -> "TLSv1.3" */
        const char *d = conn_tls_description(s->c);
        size_t len = strcspn(d, " ");
        snprintf(mj->tls_version, sizeof mj->tls_version, "%.*s", (int)len, d);
        mj->has_tls = true;
    }
    return stage_start(s, mj);
}

bool smtp_milter_mail(struct smtp_session *s, smtp_milter_next_fn *next)
{
    if (s->milters)
        s->milters->is_discarded = false; /* a new transaction */
    struct milter_job *mj = stage_new(s, STAGE_MAIL, next, NULL, NULL);
    if (!mj)
        return false;
    snprintf(mj->sender, sizeof mj->sender, "%s", s->txn.from_text);
    if (s->auth_user) {
        snprintf(mj->auth_user, sizeof mj->auth_user, "%s", s->auth_user);
        snprintf(mj->auth_mech, sizeof mj->auth_mech, "%s", s->auth_mech);
        mj->has_auth = true;
    }
    return stage_start(s, mj);
}

bool smtp_milter_rcpt(struct smtp_session *s, const char *rcpt, smtp_milter_next_fn *next,
                      void *arg, void (*arg_free)(void *))
{
    if (s->milters && s->milters->is_discarded)
        return false; /* the message is dropped anyway: nothing more to ask */
    struct milter_job *mj = stage_new(s, STAGE_RCPT, next, arg, arg_free);
    if (!mj)
        return false;
    snprintf(mj->rcpt, sizeof mj->rcpt, "%s", rcpt);
    return stage_start(s, mj);
}

bool smtp_milter_refuses(struct smtp_session *s, const char *cmd, const struct milter_outcome *o,
                         const char *to)
{
    if (o->verdict != MILTER_REJECT && o->verdict != MILTER_TEMPFAIL)
        return false;
    smtp_log_milter_reject(s, cmd, o->reply, to);
    smtp_reply(s, "%s", o->reply);
    return true;
}

void smtp_milter_abort(struct smtp_session *s)
{
    if (!s->milters)
        return;
    s->milters->is_discarded = false;
    milter_session_abort(s->milters->ms, true);
}

/* ---- the message stages (filter.c) ------------------------------------------------------ */

bool smtp_milter_is_discarded(const struct smtp_session *s)
{
    return s->milters && s->milters->is_discarded;
}

struct milter_session *smtp_milter_take(struct smtp_session *s)
{
    if (!s->milters || !milter_session_is_active(s->milters->ms))
        return NULL;
    struct milter_session *ms = s->milters->ms;
    s->milters->ms = NULL;
    return ms;
}

void smtp_milter_give_back(struct smtp_session *s, struct milter_session *ms)
{
    if (s && s->milters && !s->milters->ms) {
        s->milters->ms = ms;
        return;
    }
    milter_session_free(ms);
}

void smtp_milter_free(struct smtp_session *s)
{
    if (!s->milters)
        return;
    milter_session_free(s->milters->ms);
    free(s->milters);
    s->milters = NULL;
}
