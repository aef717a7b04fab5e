/*
 * smtp_session_harness.h - runs the real SMTP session (src/smtp/session.c and friends)
 * without sockets, threads or disks, for tests/unit/test_smtp_session.c and
 * tests/fuzz/fuzz_smtp_session.c. Include it in exactly one .c file.
 *
 * The core (conn_*, workpool_submit) is tests/unit/fake_core.c, linked beside; this
 * header defines the auth_*, store_* and queue_* functions the smtp module calls, so the
 * linker takes these instead of the real objects:
 *   - the session is peer 0 of the fake core; jobs run and output drains as a loop with
 *     a reading client would (fake_core_policy() can hold either back);
 *   - directory: example.test with alice, bob (quota 100 bytes), disabled "off",
 *     alias "fwd" -> remote@remote.example; SASL PLAIN/LOGIN accept password "pw";
 *   - the failed-login policy: the real one (policy/penalty.h) on a table of the harness
 *     (auth_penalty_check/report; the job's steps are auth/gate.c's);
 *   - store/queue: succeed, or fail when harness.fail_store / fail_queue is set.
 */
#ifndef TERN_TEST_SMTP_SESSION_HARNESS_H
#define TERN_TEST_SMTP_SESSION_HARNESS_H

#include "auth/auth.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "fake_core.h"
#include "policy/penalty.h"
#include "queue/outbound.h"
#include "queue/queue.h"
#include "smtp/smtp.h"
#include "store/store.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The SMTP side of the harness: config and injected failures (the core is fake_core.h). */
static struct {
    struct config cfg;
    bool fail_store, fail_queue;
    struct penalty_table *penalty; /* the directory's failed-login table */
} harness;

/* ---- directory and SASL ----------------------------------------------------------- */

static bool local_is(const char *address, const char *local)
{
    size_t n = strlen(local);
    return strncasecmp(address, local, n) == 0 && strcasecmp(address + n, "@example.test") == 0;
}

int auth_domain_is_local(struct auth_service *svc, const char *domain)
{
    return strcasecmp(domain, "example.test") == 0;
}

static char **one(const char *s)
{
    char **v = calloc(1, sizeof *v);
    v[0] = strdup(s);
    return v;
}

int auth_resolve(struct auth_service *svc, const char *address, struct auth_targets *t)
{
    memset(t, 0, sizeof *t);
    if (local_is(address, "alice") || local_is(address, "info")) {
        t->local = one("alice@example.test");
        t->n_local = 1;
    } else if (local_is(address, "bob")) {
        t->local = one("bob@example.test");
        t->n_local = 1;
    } else if (local_is(address, "off")) {
        t->local = one("off@example.test");
        t->n_local = 1;
    } else if (local_is(address, "fwd")) {
        t->remote = one("remote@remote.example");
        t->n_remote = 1;
    } else if (local_is(address, "broken")) {
        return -1;
    } else {
        return 0;
    }
    return 1;
}

void auth_targets_free(struct auth_targets *t)
{
    for (size_t i = 0; i < t->n_local; i++)
        free(t->local[i]);
    for (size_t i = 0; i < t->n_remote; i++)
        free(t->remote[i]);
    free(t->local);
    free(t->remote);
}

int auth_user_lookup(struct auth_service *svc, const char *login, struct auth_user *u_r)
{
    memset(u_r, 0, sizeof *u_r);
    u_r->address = strdup(login);
    u_r->home = strdup("/nonexistent/home");
    u_r->quota = strncmp(login, "bob", 3) == 0 ? 100 : 0;
    u_r->enabled = strncmp(login, "off", 3) != 0;
    return 1;
}

void auth_user_free(struct auth_user *u)
{
    free(u->address);
    free(u->home);
}

/* The recipient lookups in one step, made of the fakes above (as directory.c does for a
 * local directory); users past the first one are left to the caller (found 2), so the
 * session's own lookup path is exercised too. */
void auth_rcpt_lookup(struct auth_service *svc, const char *domain, const char *address,
                      struct auth_rcpt *r)
{
    memset(r, 0, sizeof *r);
    r->is_local = auth_domain_is_local(svc, domain);
    if (r->is_local != 1 || (r->resolved = auth_resolve(svc, address, &r->t)) != 1)
        return;
    r->found = calloc(r->t.n_local + 1, sizeof *r->found);
    r->users = calloc(r->t.n_local + 1, sizeof *r->users);
    for (size_t i = 0; i < r->t.n_local; i++)
        r->found[i] = i == 0 ? auth_user_lookup(svc, r->t.local[i], &r->users[i]) : 2;
}

void auth_rcpt_free(struct auth_rcpt *r)
{
    for (size_t i = 0; r->users && i < r->t.n_local; i++)
        if (r->users[i].address)
            auth_user_free(&r->users[i]);
    free(r->users);
    free(r->found);
    auth_targets_free(&r->t);
    memset(r, 0, sizeof *r);
}

bool auth_sender_allowed(struct auth_service *svc, const char *user, const char *mail_from)
{
    return strcasecmp(user, mail_from) == 0;
}

bool auth_plaintext_allowed(struct auth_service *svc, const struct auth_peer *peer)
{
    return peer->is_tls;
}

char *auth_mechanisms(struct auth_service *svc, const struct auth_peer *peer)
{
    return strdup(peer->is_tls ? "PLAIN LOGIN CRAM-MD5" : "CRAM-MD5");
}

/* The same rule as auth_mechanisms() above. */
enum auth_mech_status auth_mechanism_status(struct auth_service *svc, const char *mechanism,
                                            const struct auth_peer *peer)
{
    if (strcasecmp(mechanism, "PLAIN") == 0 || strcasecmp(mechanism, "LOGIN") == 0)
        return peer->is_tls ? AUTH_MECH_OK : AUTH_MECH_NEEDS_TLS;
    return strcasecmp(mechanism, "CRAM-MD5") == 0 ? AUTH_MECH_OK : AUTH_MECH_UNKNOWN;
}

void auth_penalty_check(struct auth_service *svc, const struct penalty_query *q,
                        struct penalty_answer *a_r)
{
    penalty_check(harness.penalty, q, a_r);
}

void auth_penalty_report(struct auth_service *svc, const struct penalty_query *q,
                         bool is_success, struct penalty_answer *a_r)
{
    penalty_report(harness.penalty, q, is_success, a_r);
}

struct auth_sasl {
    char mech[21];
    int step;
    char login[64];
};

struct auth_sasl *auth_sasl_start(struct auth_service *svc, const char *mechanism,
                                  const struct auth_peer *peer, const char *hostname)
{
    if (strcasecmp(mechanism, "PLAIN") != 0 && strcasecmp(mechanism, "LOGIN") != 0 &&
        strcasecmp(mechanism, "CRAM-MD5") != 0)
        return NULL;
    struct auth_sasl *s = calloc(1, sizeof *s);
    snprintf(s->mech, sizeof s->mech, "%s", mechanism);
    return s;
}

/* Toy exchanges: LOGIN asks for the user name (unless it came as the initial response)
 * and the password; the others take one answer. The answer "cHc=" (base64 "pw")
 * succeeds, "dGVtcA==" is a temporary failure, anything else fails. */
enum auth_sasl_status auth_sasl_step(struct auth_sasl *s, const char *response_b64,
                                     char **challenge_r)
{
    *challenge_r = NULL;
    bool is_login = strcasecmp(s->mech, "LOGIN") == 0;
    if (!response_b64) {
        *challenge_r = strdup(is_login ? "VXNlcm5hbWU6" : "");
        return AUTH_SASL_CONTINUE;
    }
    if (is_login && s->step++ == 0) {
        snprintf(s->login, sizeof s->login, "%.20s", response_b64);
        *challenge_r = strdup("UGFzc3dvcmQ6");
        return AUTH_SASL_CONTINUE;
    }
    if (strcmp(response_b64, "cHc=") == 0)
        return AUTH_SASL_OK;
    if (strcmp(response_b64, "dGVtcA==") == 0)
        return AUTH_SASL_TEMPFAIL;
    return AUTH_SASL_FAIL;
}

const char *auth_sasl_mechanism(const struct auth_sasl *s)
{
    return s->mech;
}
const char *auth_sasl_user(const struct auth_sasl *s)
{
    return "alice@example.test";
}
const char *auth_sasl_attempted_login(const struct auth_sasl *s)
{
    return s->login;
}
void auth_sasl_free(struct auth_sasl *s)
{
    free(s);
}

/* ---- store and queue -------------------------------------------------------------- */

int store_deliver(const struct store_source *src, struct store_target *targets, size_t n,
                  char **error_r)
{
    for (size_t i = 0; i < n; i++)
        targets[i].status = harness.fail_store ? STORE_ERR_TEMP : STORE_OK;
    if (harness.fail_store) {
        *error_r = strdup("injected store failure");
        return -1;
    }
    /* read the source like the store does */
    if (src->fd >= 0) {
        char b[4096];
        uint64_t off = 0;
        while (off < src->size) {
            ssize_t r = pread(src->fd, b, sizeof b, (off_t)off);
            if (r <= 0)
                abort(); /* the spill file must hold size bytes */
            off += (uint64_t)r;
        }
    }
    return 0;
}

int64_t store_user_usage(const char *home)
{
    return 150; /* bob (quota 100) is full */
}

int queue_enqueue_staged_dsn(const char *data_dir, const char *queue_id, const char *sender,
                             const char *const *recipients, size_t n_recipients,
                             const char *header, const struct store_source *src,
                             const struct queue_dsn *dsn, char **error_r)
{
    if (harness.fail_queue) {
        *error_r = strdup("injected queue failure");
        return -1;
    }
    return 0;
}

int queue_commit(const char *data_dir, const char *id, char **error_r)
{
    return 0;
}

int queue_commit_held(const char *data_dir, const char *id, char **error_r)
{
    return 0;
}

void queue_abort(const char *data_dir, const char *id)
{
}

/* ETRN (etrn.c): an empty queue; DSN notices (delivery.c): accepted and dropped. */
int queue_list(const char *data_dir, void (*cb)(const struct queue_entry *e, void *arg),
               void *arg, char **error_r)
{
    return 0;
}

int queue_flush_domain(const char *data_dir, const char *domain)
{
    return 0;
}

void outbound_runner_notify(const char *queue_id, const char *const *recipients,
                            size_t n_recipients)
{
}

size_t bounce_header_length(const char *msg, size_t len)
{
    return len;
}

int bounce_queue_notice(const char *data_dir, const struct bounce_info *info,
                        const struct bounce_rcpt *r, size_t n, char *new_id_r, char **error_r)
{
    if (new_id_r)
        snprintf(new_id_r, 32, "NOTICE");
    return 0;
}

/* ---- driving ---------------------------------------------------------------------- */

/* A new connection on role (peer 0); greeting in the output. */
static inline void harness_open(enum conn_role role, const char *data_dir)
{
    static bool is_log_open;
    if (!is_log_open) {
        log_open(LOG_TARGET_FILE, "/dev/null");
        is_log_open = true;
    }
    fake_core_init();
    fake_core_reset();
    *fake_core_policy() = (struct fake_policy){.auto_jobs = true, .auto_drain = true,
                                               .auto_handshake = true};
    memset(&harness.cfg, 0, sizeof harness.cfg);
    harness.cfg.hostname = "mail.example.test";
    harness.cfg.data_dir = (char *)data_dir;
    harness.cfg.smtp_max_message_size = 4 * 1024 * 1024;
    harness.cfg.smtp_max_recipients = 5;
    harness.cfg.smtp_max_errors = 20;
    harness.cfg.smtp_timeout = 300;
    harness.cfg.default_domain = "";
    struct server_context *ctx = fake_core_context();
    ctx->cfg = &harness.cfg;
    ctx->auth = (struct auth_service *)&harness; /* opaque, never dereferenced */
    harness.fail_store = harness.fail_queue = false;
    /* the real failed-login policy: a flood of 5 failures blocks the address */
    static const struct penalty_limits limits = {
        .window_ms = 300000, .address_max_failures = 5, .block_ms = 900000};
    penalty_table_free(harness.penalty);
    harness.penalty = penalty_table_new(&limits);
    fake_open(0, &smtp_protocol, role, role == CONN_ROLE_SUBMISSIONS, false);
    fake_settle();
}

/* The client sends bytes (one read); the loop then runs what is due. */
static inline void harness_feed(const void *data, size_t len)
{
    fake_feed(0, data, len);
    fake_settle();
}

/* The client reads everything queued (on_drained as the core calls it). */
static inline void harness_drain(void)
{
    fake_drain(0, SIZE_MAX);
    fake_settle();
}

/* The peer no longer reads our output (or reads it again). */
static inline void harness_hold_output(bool is_held)
{
    fake_core_policy()->auto_drain = !is_held;
}

static inline void harness_timeout(void)
{
    fake_timeout(0, false);
    fake_settle();
}

/* The connection ends (peer gone, or after the session closed it): close(), then
 * pending jobs run (the session must survive them when it was busy). */
static inline void harness_finish(const char *reason)
{
    fake_drop(0, reason);
    fake_jobs_run_all();
}

static inline const char *harness_output(void)
{
    return fake_output(0);
}

#endif
