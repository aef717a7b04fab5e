/*
 * gate.c - the failed-login policy's two steps of a login job (auth.h
 * auth_penalty_gate_*): ask before the credentials are verified (a block, or a delay
 * that holds the job), tell the outcome after. Both are plain-data requests through
 * auth_penalty_check/report, so with the auth process they reach its one table for
 * every worker. In a file of its own so that test harnesses that stand in for the
 * directory (auth_penalty_check/report) keep the real steps.
 *
 * Thread rules: any thread (BLOCKING with a remote directory: a login job's pool thread).
 */
#include "auth/auth.h"
#include "policy/penalty.h"

bool auth_penalty_gate_enter(struct auth_service *svc, struct penalty_gate *g,
                             const char *account)
{
    if (g->is_checked)
        return !g->is_blocked; /* held already: verify now */
    g->is_checked = true;
    struct penalty_query q;
    struct penalty_answer a;
    penalty_gate_query(g, account, &q);
    auth_penalty_check(svc, &q, &a);
    g->is_blocked = a.verdict == PENALTY_BLOCKED;
    g->delay_ms = 0;
    if (!g->is_blocked && a.delay_ms > 0)
        g->delay_ms = a.delay_ms > PENALTY_DELAY_MAX_MS ? PENALTY_DELAY_MAX_MS
                                                        : (unsigned)a.delay_ms;
    return !g->is_blocked && g->delay_ms == 0;
}

bool auth_penalty_gate_report(struct auth_service *svc, struct penalty_gate *g,
                              const char *account, int rc)
{
    if (rc < 0)
        return false; /* the directory could not answer: nobody's fault */
    struct penalty_query q;
    struct penalty_answer a;
    penalty_gate_query(g, account, &q);
    auth_penalty_report(svc, &q, rc == 1, &a);
    g->is_blocked = rc == 1 && a.verdict == PENALTY_BLOCKED;
    return g->is_blocked;
}

