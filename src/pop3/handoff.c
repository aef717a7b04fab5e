/*
 * handoff.c - POP3 sessions moving from a login process to a mail worker after login
 * (privilege separation, DESIGN §2, docs/SECURITY.md; the core's part is conn_handoff).
 *
 * Login process: PASS, APOP or AUTH succeeded at the auth process, which answered with a
 * one-time token bound to the user and this connection (cmd_auth.c). The maildrop is not
 * opened here: pop3_handoff() hands the connection, the token, the mechanism and any SASL
 * data with success to a mail worker and forgets the session.
 *
 * Mail worker: pop3_adopt() makes a session in AUTHORIZATION whose first step redeems
 * the token and opens (and locks) the maildrop, then answers as a single process would:
 * "+OK Logged in." (after the final "+ " challenge for SCRAM), "-ERR [IN-USE] ..." and
 * the others. A token the auth process does not confirm ends the connection (a mail
 * worker serves no client that has not logged in); a maildrop in use leaves the session
 * in AUTHORIZATION here, as in one process: its client has logged in once and may retry.
 */
#include "core/conn.h"
#include "pop3/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool pop3_handoff(struct pop3_session *s, const char *user, const char *token,
                  const char *method, const char *sasl_final)
{
    if (sasl_final && strlen(sasl_final) > CONN_HANDOFF_SASL_MAX)
        return false;
    struct conn_handoff *h = calloc(1, sizeof *h);
    if (h == NULL)
        return false;
    snprintf(h->user, sizeof h->user, "%s", user);
    snprintf(h->token, sizeof h->token, "%s", token);
    snprintf(h->method, sizeof h->method, "%s", method != NULL ? method : "PLAIN");
    snprintf(h->sasl_final, sizeof h->sasl_final, "%s", sasl_final != NULL ? sasl_final : "");
    h->errors = s->errors;
    s->has_job = true; /* nothing more is read here: the session is on its way */
    conn_handoff(s->conn, h); /* close("handoff") or on_handoff_failed follows */
    return true;
}

void pop3_on_handoff_failed(void *session, struct conn *c)
{
    struct pop3_session *s = session;
    s->has_job = false;
    /* the credentials were good; the session could not move: as an auth outage */
    pop3_reply(s, "-ERR [SYS/TEMP] Temporary authentication failure.");
    pop3_resume(s);
}

void *pop3_adopt(struct conn *c, const struct conn_handoff *h)
{
    struct pop3_session *s = pop3_session_new(c);
    if (s == NULL)
        return NULL;
    s->errors = h->errors;
    if (!pop3_login_token_start(s, h)) {
        job_session_remove(s->handle);
        pop3_session_free(s);
        return NULL;
    }
    return s;
}
