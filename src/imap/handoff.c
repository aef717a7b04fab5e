/*
 * handoff.c - IMAP sessions moving from a login process to a mail worker after login
 * (privilege separation, DESIGN §2, docs/SECURITY.md; the core's part is conn_handoff).
 *
 * Login process: LOGIN or AUTHENTICATE succeeded at the auth process, which answered with
 * a one-time token bound to the user and this connection (session.c's login work). No
 * mailbox is opened here: imap_handoff() hands the connection, the tag to answer, the
 * token and any SASL data with success to a mail worker and forgets the session.
 *
 * Mail worker: imap_adopt() makes a session in the not-authenticated state and, before a
 * byte is read, redeems the token (the auth process confirms it was issued for exactly
 * this user and connection, once) and opens the store, as a local LOGIN would; then it
 * answers the login command exactly as a single process does ("tag OK [CAPABILITY ...]
 * Logged in", or the final "+ " challenge first). A token the auth process does not
 * confirm gets NO and the connection closes: a mail worker serves no client that has
 * not logged in (a client that logs out with UNAUTHENTICATE later has logged in once).
 */
#include "auth/auth.h"
#include "core/conn.h"
#include "core/log.h"
#include "imap/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool imap_handoff(struct imap_session *s, const char *tag, struct imap_login_result *r,
                  const char *method, const char *sasl_final)
{
    if (sasl_final && strlen(sasl_final) > CONN_HANDOFF_SASL_MAX)
        return false;
    struct conn_handoff *h = calloc(1, sizeof *h);
    char *tag_copy = strdup(tag);
    if (!h || !tag_copy) {
        free(h);
        free(tag_copy);
        return false;
    }
    snprintf(h->user, sizeof h->user, "%s", r->name);
    snprintf(h->token, sizeof h->token, "%s", r->token);
    snprintf(h->tag, sizeof h->tag, "%s", tag);
    snprintf(h->method, sizeof h->method, "%s", method);
    snprintf(h->sasl_final, sizeof h->sasl_final, "%s", sasl_final ? sasl_final : "");
    free(s->handoff_tag);
    s->handoff_tag = tag_copy;
    snprintf(s->handoff_method, sizeof s->handoff_method, "%s", method);
    imap_login_result_free(r);
    conn_handoff(s->c, h); /* close("handoff") or on_handoff_failed follows */
    return true;
}

void imap_on_handoff_failed(void *session, struct conn *c)
{
    struct imap_session *s = session;
    /* the credentials were good; the session could not move: as an auth outage */
    imap_reply(s, s->handoff_tag, "NO [UNAVAILABLE] Temporary authentication failure.");
    free(s->handoff_tag);
    s->handoff_tag = NULL;
    conn_resume_read(c);
}

/* ---- mail worker ----------------------------------------------------------------------- */

struct imap_adopt_job {
    struct imap_job base;
    char user[321], token[65], method[32], binding[161];
    char sasl_final[CONN_HANDOFF_SASL_MAX + 1];
    struct imap_login_result r;
};

static void imap_adopt_cleanup(struct imap_job *j)
{
    struct imap_adopt_job *aj = IMAP_JOB(imap_adopt_job, j);
    explicit_bzero(aj->token, sizeof aj->token);
    imap_login_result_free(&aj->r);
}

/* Pool thread: the auth process confirms the token, then the store opens. */
static void imap_adopt_work(struct imap_job *j)
{
    struct imap_adopt_job *aj = IMAP_JOB(imap_adopt_job, j);
    int rc = auth_login_redeem(j->ctx.auth, aj->token, aj->user, aj->binding);
    if (rc == 1)
        imap_login_open_store(&j->ctx, aj->user, &aj->r);
    else
        aj->r.rc = rc == 0 ? 0 : -1;
}

static void imap_adopt_finish(struct imap_session *s, struct imap_job *j)
{
    struct imap_adopt_job *aj = IMAP_JOB(imap_adopt_job, j);
    if (aj->r.rc == 1 && aj->sasl_final[0]) {
        /* RFC 3501 §6.2.2: SASL data with success goes in a last challenge; the OK
         * follows the client's (empty) answer (session.c, imap_sasl_line) */
        buf_printf(&j->out, "+ %s\r\n", aj->sasl_final);
        s->sasl_pending = aj->r;
        memset(&aj->r, 0, sizeof aj->r);
        free(s->sasl_tag);
        s->sasl_tag = strdup(j->tag);
        snprintf(s->sasl_method, sizeof s->sasl_method, "%s", aj->method);
        return;
    }
    if (aj->r.rc == 1) {
        imap_login_finish_common(s, j, &aj->r, aj->user, aj->method);
        return;
    }
    if (aj->r.rc == 0)
        log_warning("imap", "handed-over session refused: the auth process did not confirm its "
                            "token: user=<%s>, rip=%s",
                    aj->user, conn_peer_ip(s->c));
    /* Temporary either way: an honest login process hands a session over only after the
     * auth process accepted the password, so an unconfirmed token means that process died
     * (its tokens with it) or the hand-over outlived the token, and "authentication
     * failed" would make the client ask its user for a password that was right. A
     * taken-over login process owns the client connection anyway: the text protects
     * nothing; the refusal does. */
    buf_printf(&j->tagged, "%s NO [UNAVAILABLE] Temporary authentication failure.\r\n", j->tag);
    s->is_closing = true; /* (imap_job_done closes after the reply) */
}

void *imap_adopt(struct conn *c, const struct conn_handoff *h)
{
    if (!h->tag[0])
        return NULL;
    struct imap_session *s = imap_session_new(c);
    if (!s)
        return NULL;
    struct imap_job *j = imap_job_new(s, h->tag, sizeof(struct imap_adopt_job), imap_adopt_work,
                                      imap_adopt_finish, imap_adopt_cleanup);
    if (!j) {
        /* (imap_job_new wrote a NO: the conn is about to be refused, nothing goes out) */
        job_session_remove(s->handle);
        imap_session_free(s);
        return NULL;
    }
    struct imap_adopt_job *aj = IMAP_JOB(imap_adopt_job, j);
    snprintf(aj->user, sizeof aj->user, "%s", h->user);
    snprintf(aj->token, sizeof aj->token, "%s", h->token);
    snprintf(aj->method, sizeof aj->method, "%s", h->method);
    snprintf(aj->sasl_final, sizeof aj->sasl_final, "%s", h->sasl_final);
    conn_login_binding(c, "imap", aj->binding, sizeof aj->binding);
    imap_job_submit(s, j);
    return s;
}
