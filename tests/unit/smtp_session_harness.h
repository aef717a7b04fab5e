/*
 * smtp_session_harness.h - runs the real SMTP session (src/smtp/session.c and friends)
 * without sockets, threads or disks, for tests/unit/test_smtp_session.c and
 * tests/fuzz/fuzz_smtp_session.c. Include it in exactly one .c file.
 *
 * It defines the conn_*, workpool_*, auth_*, store_* and queue_* functions the smtp
 * module calls, so the linker takes these instead of the real objects:
 *   - conn: input is an evbuffer the harness fills; output is collected (capped);
 *     conn_starttls() discards buffered input like the core and on_tls() follows;
 *   - workpool: jobs are queued and run after on_read returns (the loop's order);
 *   - directory: example.test with alice, bob (quota 100 bytes), disabled "off",
 *     alias "fwd" -> remote@remote.example; SASL PLAIN/LOGIN accept password "pw";
 *   - store/queue: succeed, or fail when harness.fail_store / fail_queue is set.
 */
#ifndef TERN_TEST_SMTP_SESSION_HARNESS_H
#define TERN_TEST_SMTP_SESSION_HARNESS_H

#include "auth/auth.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/workpool.h"
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

#define HARNESS_OUTPUT_MAX (256 * 1024)
#define HARNESS_MAX_JOBS   8

struct conn {
    struct evbuffer *in;
    struct buf out;
    enum conn_role role;
    bool is_tls, is_closing, is_paused, is_tls_pending, is_finished;
    size_t queued; /* output not yet taken by the peer (only while hold_output is set) */
    void *session;
};

struct harness_job {
    workpool_fn *work, *done;
    void *arg;
};

static struct {
    struct conn conn;
    struct config cfg;
    struct server_context ctx;
    struct harness_job jobs[HARNESS_MAX_JOBS];
    size_t n_jobs;
    bool fail_store, fail_queue;
    bool hold_output; /* the peer does not read: conn_output_length() grows */
} harness;

/* ---- conn ------------------------------------------------------------------------- */

const struct server_context *conn_server(const struct conn *c)
{
    return &harness.ctx;
}
enum conn_role conn_role(const struct conn *c)
{
    return c->role;
}
struct evbuffer *conn_input(struct conn *c)
{
    return c->in;
}
void conn_write(struct conn *c, const void *data, size_t len)
{
    if (c->is_finished)
        return;
    if (harness.hold_output)
        c->queued += len;
    if (c->out.len + len > HARNESS_OUTPUT_MAX)
        buf_reset(&c->out); /* keep the tail: tests look at the last replies */
    buf_append(&c->out, data, len);
}
void conn_write_str(struct conn *c, const char *s)
{
    conn_write(c, s, strlen(s));
}
void conn_printf(struct conn *c, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        conn_write(c, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}
size_t conn_output_length(struct conn *c)
{
    return c->queued;
}
int conn_starttls(struct conn *c)
{
    if (c->is_tls)
        return -1;
    evbuffer_drain(c->in, evbuffer_get_length(c->in)); /* RFC 3207 §4 */
    c->is_tls_pending = true;
    return 0;
}
bool conn_is_tls(const struct conn *c)
{
    return c->is_tls;
}
bool conn_is_stopping(const struct conn *c)
{
    (void)c;
    return false;
}
const char *conn_tls_description(const struct conn *c)
{
    return "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)";
}
bool conn_tls_available(const struct conn *c)
{
    return true;
}
const char *conn_peer_ip(const struct conn *c)
{
    return "192.0.2.7";
}
const char *conn_local_ip(const struct conn *c)
{
    return "192.0.2.1";
}
uint16_t conn_peer_port(const struct conn *c)
{
    return 4711;
}
bool conn_peer_is_loopback(const struct conn *c)
{
    return false;
}
const char *conn_peer_name(const struct conn *c)
{
    return "unknown";
}
bool conn_peer_in_networks(const struct conn *c, const struct config_list *nets)
{
    return false;
}
void conn_pause_read(struct conn *c)
{
    c->is_paused = true;
}
void conn_resume_read(struct conn *c)
{
    c->is_paused = false;
}
void conn_set_timeout(struct conn *c, unsigned seconds)
{
}
void conn_close(struct conn *c)
{
    c->is_closing = true;
}

/* ---- workpool --------------------------------------------------------------------- */

void workpool_submit(struct workpool *pool, workpool_fn *work, workpool_fn *done, void *arg)
{
    if (harness.n_jobs == HARNESS_MAX_JOBS)
        abort(); /* a session never has more than one job in flight */
    harness.jobs[harness.n_jobs++] = (struct harness_job){work, done, arg};
}

void workpool_submit_delayed(struct workpool *pool, unsigned delay_ms, workpool_fn *work,
                             workpool_fn *done, void *arg)
{
    workpool_submit(pool, work, done, arg);
}

static inline void harness_run_jobs(void)
{
    while (harness.n_jobs) {
        struct harness_job j = harness.jobs[0];
        memmove(harness.jobs, harness.jobs + 1, --harness.n_jobs * sizeof harness.jobs[0]);
        j.work(j.arg);
        j.done(j.arg);
    }
}

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

/* The directory's failed-login table (auth.h auth_penalty_*): the real policy on a
 * table of the harness. */
static struct penalty_table *harness_penalty;

void auth_penalty_check(struct auth_service *svc, const struct penalty_query *q,
                        struct penalty_answer *a_r)
{
    penalty_check(harness_penalty, q, a_r);
}

void auth_penalty_report(struct auth_service *svc, const struct penalty_query *q,
                         bool is_success, struct penalty_answer *a_r)
{
    penalty_report(harness_penalty, q, is_success, a_r);
}

/* No resolver in the harness: the screen's DNS checks never run. */
struct outbound_dns *outbound_runner_dns(void)
{
    return NULL;
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

/* A new connection on role; greeting in the output. */
static inline void harness_open(enum conn_role role, const char *data_dir)
{
    static bool is_log_open;
    if (!is_log_open) {
        log_open(LOG_TARGET_FILE, "/dev/null");
        is_log_open = true;
    }
    memset(&harness.cfg, 0, sizeof harness.cfg);
    harness.cfg.hostname = "mail.example.test";
    harness.cfg.data_dir = (char *)data_dir;
    harness.cfg.smtp_max_message_size = 4 * 1024 * 1024;
    harness.cfg.smtp_max_recipients = 5;
    harness.cfg.smtp_max_errors = 20;
    harness.cfg.smtp_timeout = 300;
    harness.cfg.default_domain = "";
    harness.ctx.cfg = &harness.cfg;
    harness.ctx.auth = (struct auth_service *)&harness; /* opaque, never dereferenced */
    harness.ctx.pool = (struct workpool *)&harness;
    /* the real failed-login policy: a flood of 5 failures blocks the address */
    static const struct penalty_limits limits = {
        .window_ms = 300000, .address_max_failures = 5, .block_ms = 900000};
    harness_penalty = penalty_table_new(&limits);
    harness.n_jobs = 0;
    harness.fail_store = harness.fail_queue = false;
    harness.hold_output = false;
    struct conn *c = &harness.conn;
    memset(c, 0, sizeof *c);
    c->in = evbuffer_new();
    buf_init(&c->out, 0);
    c->role = role;
    c->is_tls = role == CONN_ROLE_SUBMISSIONS;
    c->session = smtp_protocol.open(c);
}

/* Deliver input as the core would: on_read while input is there and reading is on;
 * jobs run between reads; STARTTLS completes after the read that asked for it. */
static inline void harness_feed(const void *data, size_t len)
{
    struct conn *c = &harness.conn;
    if (c->is_finished || c->is_closing)
        return;
    evbuffer_add(c->in, data, len);
    for (int round = 0; round < 100000; round++) {
        if (!c->is_paused && !c->is_closing && evbuffer_get_length(c->in) > 0) {
            size_t before = evbuffer_get_length(c->in);
            smtp_protocol.on_read(c->session, c);
            if (c->is_tls_pending) {
                c->is_tls_pending = false;
                c->is_tls = true;
                smtp_protocol.on_tls(c->session, c);
            }
            if (harness.n_jobs == 0 && evbuffer_get_length(c->in) == before)
                break; /* waiting for more input */
        }
        if (harness.n_jobs == 0)
            break;
        harness_run_jobs();
    }
}

/* The peer reads everything queued: on_drained (as the core calls it), then any input
 * that waited is delivered again. */
static inline void harness_drain(void)
{
    struct conn *c = &harness.conn;
    c->queued = 0;
    if (c->is_finished || c->is_closing)
        return;
    if (smtp_protocol.on_drained)
        smtp_protocol.on_drained(c->session, c);
    harness_feed("", 0);
}

static inline void harness_timeout(void)
{
    struct conn *c = &harness.conn;
    if (!c->is_finished && !c->is_closing) {
        smtp_protocol.on_timeout(c->session, c);
        c->is_closing = true;
    }
}

/* The connection ends (peer gone or after conn_close): close(), then pending jobs run
 * (the session must survive them when it was busy). */
static inline void harness_finish(const char *reason)
{
    struct conn *c = &harness.conn;
    if (!c->is_finished) {
        c->is_finished = true;
        smtp_protocol.close(c->session, reason);
        harness_run_jobs();
    }
    evbuffer_free(c->in);
    buf_free(&c->out);
    penalty_table_free(harness_penalty);
    harness_penalty = NULL;
}

static inline const char *harness_output(void)
{
    return buf_cstr(&harness.conn.out);
}

#endif
