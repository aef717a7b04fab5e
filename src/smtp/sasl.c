/*
 * sasl.c - SMTP AUTH (RFC 4954) over the shared SASL service (auth_sasl_* in auth.h).
 *
 * Each auth_sasl_step() may hash a password, so it runs in the workpool while the
 * session's reads are paused; the reply (334 challenge, 235, 535, 454) is written in the
 * done callback on the loop thread. Policy: one successful AUTH per session, not inside
 * a mail transaction; plaintext mechanisms only where auth.allow_plaintext allows
 * (538 5.7.11 otherwise, RFC 4954 §6); "*" cancels (501 5.7.0); failures are logged
 * Postfix-style and counted by the failed-login policy (policy/penalty.h, the auth
 * process's table for every worker): the job of the first step asks it (a block, or a
 * delay that holds the step), every ending step reports to it. The client address is
 * the one a trusted proxy passed with XCLIENT.
 */
#include "auth/auth.h"
#include "core/config.h"
#include "core/log.h"
#include "core/workpool.h"
#include "policy/penalty.h"
#include "smtp/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct smtp_auth_job {
    struct job job;         /* first (core/job.h) */
    struct auth_sasl *sasl; /* moved in from the session, back in auth_job_done */
    struct auth_service *auth;
    struct penalty_gate gate; /* the failed-login policy (copied: the thread rule) */
    char *response; /* NULL: no initial response */
    char *challenge;
    enum auth_sasl_status status;
};

static struct auth_peer session_peer(const struct smtp_session *s)
{
    struct auth_peer p = {
        .service = "smtp",
        .ip = conn_peer_ip(s->c),
        .is_tls = conn_is_tls(s->c),
        .is_loopback = conn_peer_is_loopback(s->c),
    };
    return p;
}

char *smtp_auth_mechanisms(struct smtp_session *s)
{
    if (!s->ctx->auth || s->auth_user)
        return NULL;
    struct auth_peer peer = session_peer(s);
    return auth_mechanisms(s->ctx->auth, &peer);
}

#define SMTP_BLOCKED_REPLY                                                                         \
    "454 4.7.0 Error: too many failed authentication attempts, try again later"

/* The policy is the auth process's: asked and told here, not on the loop. */
static void auth_job_work(struct job *j)
{
    struct smtp_auth_job *job = (struct smtp_auth_job *)j;
    if (!auth_penalty_gate_enter(job->auth, &job->gate, NULL))
        return; /* blocked, or held first (auth_job_done) */
    job->status = auth_sasl_step(job->sasl, job->response, &job->challenge);
    if (job->status != AUTH_SASL_CONTINUE)
        (void)auth_penalty_gate_report(job->auth, &job->gate,
                                       auth_sasl_attempted_login(job->sasl),
                                       job->status == AUTH_SASL_OK     ? 1
                                       : job->status == AUTH_SASL_FAIL ? 0
                                                                       : -1);
}

static void auth_end_exchange(struct smtp_session *s)
{
    if (s->sasl)
        auth_sasl_free(s->sasl);
    s->sasl = NULL;
    s->input = SMTP_INPUT_COMMAND;
}

static void auth_job_done(void *session, struct job *j)
{
    struct smtp_auth_job *job = (struct smtp_auth_job *)j;
    struct smtp_session *s = session;
    if (!s) {
        auth_sasl_free(job->sasl); /* the client has gone */
        goto out;
    }
    if (job->gate.delay_ms) {
        /* the failed-login delay: the step runs once it is over (a timer, no thread waits) */
        unsigned delay = job->gate.delay_ms;
        job->gate.delay_ms = 0;
        smtp_session_job_start_delayed(s, &job->job, delay);
        return;
    }
    s->sasl = job->sasl;
    if (job->gate.is_blocked && job->status != AUTH_SASL_OK) {
        log_warning("smtpd", "%s: too many failed authentication attempts, AUTH refused", s->peer);
        auth_end_exchange(s);
        smtp_reply(s, SMTP_BLOCKED_REPLY);
        smtp_session_job_done(s);
        goto out;
    }
    switch (job->status) {
    case AUTH_SASL_CONTINUE:
        s->input = SMTP_INPUT_AUTH;
        smtp_reply(s, "334 %s", job->challenge ? job->challenge : "");
        break;
    case AUTH_SASL_OK: {
        if (job->gate.is_blocked) {
            log_warning("smtpd",
                        "%s: SASL %s authentication refused: blocked after failed logins",
                        s->peer, auth_sasl_mechanism(s->sasl));
            auth_end_exchange(s);
            smtp_reply(s, SMTP_BLOCKED_REPLY);
            break;
        }
        const char *user = auth_sasl_user(s->sasl);
        free(s->auth_user);
        s->auth_user = strdup(user ? user : "");
        snprintf(s->auth_mech, sizeof s->auth_mech, "%s", auth_sasl_mechanism(s->sasl));
        auth_end_exchange(s);
        if (!s->auth_user) {
            smtp_reply(s, "454 4.7.0 Temporary authentication failure: out of memory");
            break;
        }
        smtp_reply(s, "235 2.7.0 Authentication successful");
        break;
    }
    case AUTH_SASL_FAIL: {
        char login[128];
        smtp_log_safe(auth_sasl_attempted_login(s->sasl), login, sizeof login);
        log_warning("smtpd", "%s: SASL %s authentication failed: authentication failure%s%s",
                    s->peer, auth_sasl_mechanism(s->sasl), login[0] ? ", sasl_username=" : "",
                    login);
        auth_end_exchange(s);
        smtp_reply(s, "535 5.7.8 Error: authentication failed: authentication failure");
        break;
    }
    case AUTH_SASL_TEMPFAIL:
        log_warning("smtpd", "%s: SASL %s authentication: temporary failure", s->peer,
                    auth_sasl_mechanism(s->sasl));
        auth_end_exchange(s);
        smtp_reply(s, "454 4.7.0 Temporary authentication failure");
        break;
    }
    smtp_session_job_done(s);
out:
    free(job->response);
    free(job->challenge);
    free(job);
}

/* Run one SASL step in the workpool (the first one asks the failed-login policy first).
 * response: as the client sent it, or NULL. */
static void auth_step_submit(struct smtp_session *s, const char *response, size_t len,
                             bool is_first)
{
    struct smtp_auth_job *job = calloc(1, sizeof *job);
    if (!job || (response && !(job->response = strndup(response, len)))) {
        free(job);
        auth_end_exchange(s);
        smtp_reply(s, "454 4.7.0 Temporary authentication failure: out of memory");
        return;
    }
    job_init(&job->job, s->handle, auth_job_work, auth_job_done);
    job->auth = s->ctx->auth;
    penalty_gate_init(&job->gate, "smtpd", conn_peer_ip(s->c),
                      conn_peer_in_networks(s->c, &s->cfg->auth_trusted_networks), s->client_ip);
    job->gate.is_checked = !is_first;
    job->sasl = s->sasl;
    s->sasl = NULL;
    smtp_session_job_start(s, &job->job);
}

void smtp_cmd_auth(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (!s->ctx->auth || !s->ctx->pool) {
        smtp_reply(s, "503 5.5.1 Error: authentication not enabled");
        return;
    }
    if (s->auth_user) {
        smtp_reply(s, "503 5.5.1 Error: already authenticated");
        return;
    }
    if (s->txn.is_active) {
        smtp_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    char mech[21];
    const char *initial;
    size_t initial_len;
    if (!smtp_parse_auth(cmd->arg, cmd->arg_len, mech, &initial, &initial_len)) {
        smtp_reply(s, "501 5.5.4 Syntax: AUTH mechanism");
        return;
    }
    struct auth_peer peer = session_peer(s);
    switch (auth_mechanism_status(s->ctx->auth, mech, &peer)) {
    case AUTH_MECH_OK:
        break;
    case AUTH_MECH_NEEDS_TLS:
        /* RFC 4954 §6 */
        smtp_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    case AUTH_MECH_UNKNOWN:
    case AUTH_MECH_UNAVAILABLE:
        /* RFC 4954 §4: a mechanism not offered in EHLO is rejected with 504 */
        smtp_reply(s, "504 5.5.4 Unsupported authentication mechanism");
        return;
    }
    s->sasl = auth_sasl_start(s->ctx->auth, mech, &peer, smtp_hostname(s));
    if (!s->sasl) {
        smtp_reply(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
    auth_step_submit(s, initial, initial_len, true);
}

void smtp_auth_abort(struct smtp_session *s, const char *reply)
{
    auth_end_exchange(s);
    smtp_reply(s, "%s", reply);
}

void smtp_auth_response(struct smtp_session *s, const char *line, size_t len)
{
    if (!s->sasl) {
        s->input = SMTP_INPUT_COMMAND;
        return;
    }
    /* RFC 4954 §4: "*" cancels the exchange. */
    if (len == 1 && line[0] == '*') {
        auth_end_exchange(s);
        smtp_reply(s, "501 5.7.0 Authentication aborted");
        return;
    }
    if (len + 2 > SMTP_AUTH_LINE_MAX) {
        auth_end_exchange(s);
        smtp_reply(s, "500 5.5.6 Authentication Exchange line is too long");
        return;
    }
    s->input = SMTP_INPUT_COMMAND; /* until the step says CONTINUE */
    auth_step_submit(s, line, len, false);
}
