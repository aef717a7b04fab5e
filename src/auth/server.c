/*
 * server.c - the auth process's side of auth_wire.h: it owns the directory (tern.db and
 * the password hashes: no other process opens it), the failed-login policy's table
 * (policy/penalty.h; `tern auth blocks` reaches it through auth/control.c, served here
 * too) and the POP3 login times for every worker, and answers the requests of its
 * clients (the workers and the queue process, one SEQPACKET channel each, handed over by
 * the master).
 *
 * A request is read on the event loop, copied into a job and answered from a workpool
 * thread (directory lookups and password hashes block); the answer is sent from there
 * under the client's send lock. The failed-login policy's requests are answered on the
 * loop at once (a table look-up under its lock), so a flood of slow hashes queued on the
 * pool does not delay them. A client whose channel closes is dropped once the jobs that
 * hold it are done (reference count), with the SASL exchanges it had open.
 *
 * SASL exchanges live here between steps, keyed by a number the client sends back; an
 * exchange belongs to the client that started it (another client's number is refused),
 * runs one step at a time, ends with its final status, and is dropped when idle for
 * AUTH_SERVER_SASL_IDLE_S (a client that never finishes cannot pile them up).
 *
 * Every AUTH_SERVER_MECHS_S the mechanism flags are read again (an admin may have added
 * the first CRAM-MD5 credential) and announced to all clients when they changed.
 *
 * Clients have a kind (the master says which when it hands the channel over): a login
 * process's successful login that names its connection gets a one-time token with the
 * answer (token.c), and only a mail worker may redeem one (auth.h, privilege separation).
 *
 * A reload that replaces the auth process hands its state over (issue 10): the master
 * starts the new process only after the old one has exited, and the old one, once its
 * loop has stopped reading and its pool has answered every request it read, passes its
 * live tokens on (auth_server_hand_over: a memfd sent to the master, which holds it
 * unread and gives it to the new process before any client channel) and tells every
 * client AUTH_MSG_GOODBYE, so a request still unanswered is known to be unread and is
 * asked again of the new process (remote.c). The failed-login table takes the same path
 * through its file: the old process's last save is made before it exits, and the new one
 * reads the file at start. So a token is at every moment in exactly one process that will
 * answer for it, and a token spent in the old one is not in the new one's table. Why a
 * memfd through the master and not a file: the tokens never touch a file system (no mode,
 * owner, clean-up or stale copy after a crash to get right), the master only moves a
 * descriptor and reads nothing, and the memory goes with the last descriptor.
 */
#include "auth/auth_internal.h"
#include "auth/auth_wire.h"
#include "core/channel.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/util.h"
#include "core/workpool.h"
#include "policy/penalty.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AUTH_SERVER_SASL_MAX    10000 /* exchanges open at once, all clients together */
#define AUTH_SERVER_SASL_IDLE_S 600
#define AUTH_SERVER_MECHS_S     2

struct auth_client {
    struct auth_server *srv;
    int sock;
    unsigned kind; /* SERVER_PROC_* of the process at the other end */
    pthread_mutex_t send_lock;
    atomic_int refs; /* the loop's one while open, plus one per job in flight */
    struct channel_reader *reader;
    struct auth_client *next;
};

struct auth_sasl_entry {
    uint64_t id; /* 0: free */
    struct auth_client *owner;
    struct auth_sasl *sasl;
    time_t last;
    bool is_busy; /* a step runs */
};

struct auth_server {
    struct auth_service *svc;
    struct event_base *base;
    struct workpool *pool;
    struct auth_client *clients;
    pthread_mutex_t sasl_lock;
    struct auth_sasl_entry *sasl; /* AUTH_SERVER_SASL_MAX */
    uint64_t next_sasl_id;
    struct event *timer;
    char mechs[4]; /* last announced "CSA" flags, "" none yet */
    bool is_mechs_job;
    struct auth_tokens *tokens; /* issued to login processes, redeemed by mail workers */
};

static void client_release(struct auth_client *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    close(c->sock);
    pthread_mutex_destroy(&c->send_lock);
    free(c);
}

/* Send one answer (pool thread or loop). A client that does not read for seconds is
 * broken: the answer is dropped and its caller times out. */
static void client_send(struct auth_client *c, uint8_t type, const char *payload, size_t len)
{
    pthread_mutex_lock(&c->send_lock);
    (void)channel_send_patiently(c->sock, type, payload, len, 100);
    pthread_mutex_unlock(&c->send_lock);
}

/* ---- answers ---------------------------------------------------------------------------- */

/* A request queued for the pool: the message as it came, its payload at its own size.
 * Not a whole struct channel_msg (64 KB): a burst of logins queues one per login, and
 * the heap those left behind stayed with the process (issue 10: 1-4 KB of RSS per
 * connection in the memory bench, every byte of it free). */
struct auth_request {
    struct auth_client *client;
    uint8_t type;
    int fd;
    bool is_fd_lost;
    size_t len;
    char payload[]; /* len bytes and a NUL */
};

/* An answer being built: id, rc, then strings. */
struct answer {
    char *buf;
    size_t len;
    bool is_full;
};

static void answer_begin(struct answer *a, uint32_t id, int32_t rc)
{
    a->buf = malloc(CHANNEL_MAX_PAYLOAD);
    a->len = 8;
    a->is_full = a->buf == NULL;
    if (a->buf) {
        memcpy(a->buf, &id, 4);
        memcpy(a->buf + 4, &rc, 4);
    }
}

static void answer_str(struct answer *a, const char *s)
{
    if (!a->is_full && !channel_put_str(a->buf, &a->len, s))
        a->is_full = true;
}

static void answer_rc(struct answer *a, int32_t rc)
{
    if (a->buf)
        memcpy(a->buf + 4, &rc, 4);
}

static void answer_send(struct auth_client *c, uint8_t type, struct answer *a)
{
    if (a->is_full && a->buf) {
        /* too much to answer in one message (an alias with thousands of targets) */
        log_error("auth", "answer too large for the channel: answered as a temporary error");
        a->len = 8;
        answer_rc(a, -1);
    }
    if (a->buf) {
        client_send(c, type, a->buf, a->len);
        explicit_bzero(a->buf, a->len);
    }
    free(a->buf);
}

/* ---- SASL table --------------------------------------------------------------------------- */

/* Take exchange id of client c for one step (NULL: unknown, not c's, or busy). */
static struct auth_sasl_entry *sasl_take(struct auth_server *srv, uint64_t id, struct auth_client *c)
{
    struct auth_sasl_entry *e = NULL;
    pthread_mutex_lock(&srv->sasl_lock);
    for (size_t i = 0; i < AUTH_SERVER_SASL_MAX && !e; i++)
        if (srv->sasl[i].id == id && srv->sasl[i].owner == c && !srv->sasl[i].is_busy)
            e = &srv->sasl[i];
    if (e)
        e->is_busy = true;
    pthread_mutex_unlock(&srv->sasl_lock);
    return e;
}

/* A new exchange for c holding sasl; NULL when the table is full. */
static struct auth_sasl_entry *sasl_add(struct auth_server *srv, struct auth_client *c,
                                        struct auth_sasl *sasl)
{
    struct auth_sasl_entry *e = NULL;
    pthread_mutex_lock(&srv->sasl_lock);
    for (size_t i = 0; i < AUTH_SERVER_SASL_MAX && !e; i++)
        if (srv->sasl[i].id == 0)
            e = &srv->sasl[i];
    if (e) {
        e->id = ++srv->next_sasl_id;
        e->owner = c;
        e->sasl = sasl;
        e->is_busy = true;
        e->last = time(NULL);
    }
    pthread_mutex_unlock(&srv->sasl_lock);
    return e;
}

/* The step is over: keep the exchange for the next one, or end it. */
static void sasl_put(struct auth_server *srv, struct auth_sasl_entry *e, bool is_over)
{
    struct auth_sasl *done = NULL;
    pthread_mutex_lock(&srv->sasl_lock);
    e->is_busy = false;
    e->last = time(NULL);
    if (is_over) {
        done = e->sasl;
        memset(e, 0, sizeof *e);
    }
    pthread_mutex_unlock(&srv->sasl_lock);
    auth_sasl_free(done);
}

/* Drop the exchanges of a client (gone) or the idle ones (owner NULL). Loop thread. */
static void sasl_drop(struct auth_server *srv, struct auth_client *owner, time_t idle_before)
{
    pthread_mutex_lock(&srv->sasl_lock);
    for (size_t i = 0; i < AUTH_SERVER_SASL_MAX; i++) {
        struct auth_sasl_entry *e = &srv->sasl[i];
        if (!e->id || e->is_busy)
            continue;
        if ((owner && e->owner == owner) || (!owner && e->last < idle_before)) {
            auth_sasl_free(e->sasl);
            memset(e, 0, sizeof *e);
        }
    }
    pthread_mutex_unlock(&srv->sasl_lock);
}

/* ---- tokens ------------------------------------------------------------------------------ */

/* The binding a request carries, when its client is a login process (whose successful
 * logins get a token); NULL otherwise. */
static const char *client_binding(const struct auth_client *c, const char *binding)
{
    return c->kind == SERVER_PROC_LOGIN && binding && binding[0] ? binding : NULL;
}

/* A token for user on binding, as the answer's last string ("" when none could be made:
 * the mail worker then refuses the session with a temporary error). */
static void answer_token(struct auth_server *srv, struct answer *a, const char *user,
                         const char *binding)
{
    char token[AUTH_TOKEN_SIZE];
    if (!user || !auth_tokens_issue(srv->tokens, user, binding, token))
        token[0] = '\0';
    answer_str(a, token);
    explicit_bzero(token, sizeof token);
}

static void sasl_step(struct auth_server *srv, struct auth_client *c, const struct channel_msg *m,
                      uint32_t id)
{
    size_t pos = 4;
    const char *f[9];
    for (int i = 0; i < 9; i++)
        if (!(f[i] = channel_get_str(m, &pos)))
            return; /* malformed: no answer (the caller times out) */
    const char *binding = client_binding(c, channel_get_str(m, &pos));
    uint64_t sid = strtoull(f[0], NULL, 10);
    struct auth_peer peer = {.service = f[3],
                             .ip = f[4],
                             .is_tls = strcmp(f[5], "1") == 0,
                             .is_loopback = strcmp(f[6], "1") == 0};
    const char *response = strcmp(f[7], "1") == 0 ? f[8] : NULL;
    struct answer a;
    struct auth_sasl_entry *e = NULL;
    if (sid == 0) {
        struct auth_sasl *sasl = auth_sasl_start(srv->svc, f[1], &peer, f[2]);
        if (sasl && !(e = sasl_add(srv, c, sasl)))
            auth_sasl_free(sasl);
    } else {
        e = sasl_take(srv, sid, c);
    }
    if (!e) {
        answer_begin(&a, id, AUTH_SASL_TEMPFAIL);
        answer_str(&a, "0");
        answer_str(&a, "0");
        answer_str(&a, "");
        answer_str(&a, "");
        answer_str(&a, "");
        answer_send(c, AUTH_MSG_SASL_STEP, &a);
        return;
    }
    char *challenge = NULL;
    enum auth_sasl_status st = auth_sasl_step(e->sasl, response, &challenge);
    char sid_text[24];
    snprintf(sid_text, sizeof sid_text, "%llu", (unsigned long long)e->id);
    answer_begin(&a, id, (int32_t)st);
    answer_str(&a, sid_text);
    answer_str(&a, challenge ? "1" : "0");
    answer_str(&a, challenge ? challenge : "");
    answer_str(&a, st == AUTH_SASL_OK && auth_sasl_user(e->sasl) ? auth_sasl_user(e->sasl) : "");
    answer_str(&a, auth_sasl_attempted_login(e->sasl) ? auth_sasl_attempted_login(e->sasl) : "");
    if (st == AUTH_SASL_OK && binding)
        answer_token(srv, &a, auth_sasl_user(e->sasl), binding);
    free(challenge);
    sasl_put(srv, e, st != AUTH_SASL_CONTINUE);
    answer_send(c, AUTH_MSG_SASL_STEP, &a);
}

/* ---- the requests --------------------------------------------------------------------- */

static void domain_list_cb(const char *domain, void *arg)
{
    answer_str(arg, domain);
}

static void request_answer(struct auth_server *srv, struct auth_client *c, struct channel_msg *m)
{
    if (m->len < 4)
        return;
    uint32_t id;
    memcpy(&id, m->payload, 4);
    size_t pos = 4;
    const char *s1 = channel_get_str(m, &pos);
    const char *s2 = channel_get_str(m, &pos);
    const char *s3 = channel_get_str(m, &pos);
    const char *s4 = channel_get_str(m, &pos);
    struct auth_service *svc = srv->svc;
    struct answer a;
    switch (m->type) {
    case AUTH_MSG_DOMAIN_IS_LOCAL:
        if (!s1)
            return;
        answer_begin(&a, id, auth_domain_is_local(svc, s1));
        break;
    case AUTH_MSG_RESOLVE: {
        if (!s1)
            return;
        struct auth_targets t;
        int rc = auth_resolve(svc, s1, &t);
        answer_begin(&a, id, rc);
        if (rc == 1) {
            char n[24];
            snprintf(n, sizeof n, "%zu", t.n_local);
            answer_str(&a, n);
            for (size_t i = 0; i < t.n_local; i++)
                answer_str(&a, t.local[i]);
            for (size_t i = 0; i < t.n_remote; i++)
                answer_str(&a, t.remote[i]);
            auth_targets_free(&t);
        }
        break;
    }
    case AUTH_MSG_USER_LOOKUP: {
        if (!s1)
            return;
        struct auth_user u;
        int rc = auth_user_lookup(svc, s1, &u);
        answer_begin(&a, id, rc);
        if (rc == 1) {
            char q[24];
            snprintf(q, sizeof q, "%llu", (unsigned long long)u.quota);
            answer_str(&a, u.address);
            answer_str(&a, u.home);
            answer_str(&a, q);
            answer_str(&a, u.enabled ? "1" : "0");
            auth_user_free(&u);
        }
        break;
    }
    case AUTH_MSG_RCPT_LOOKUP: {
        if (!s1 || !s2)
            return;
        struct auth_rcpt r;
        auth_rcpt_lookup(svc, s1, s2, &r);
        answer_begin(&a, id, r.is_local);
        if (r.is_local == 1) {
            char n[24];
            snprintf(n, sizeof n, "%d", r.resolved);
            answer_str(&a, n);
        }
        if (r.is_local == 1 && r.resolved == 1) {
            char n[48];
            snprintf(n, sizeof n, "%zu %zu", r.t.n_local, r.t.n_remote);
            answer_str(&a, n);
            for (size_t i = 0; i < r.t.n_local; i++)
                answer_str(&a, r.t.local[i]);
            for (size_t i = 0; i < r.t.n_remote; i++)
                answer_str(&a, r.t.remote[i]);
            for (size_t i = 0; i < r.t.n_local; i++) {
                snprintf(n, sizeof n, "%d", r.found[i]);
                answer_str(&a, n);
                if (r.found[i] != 1)
                    continue;
                char q[24];
                snprintf(q, sizeof q, "%llu", (unsigned long long)r.users[i].quota);
                answer_str(&a, r.users[i].address);
                answer_str(&a, r.users[i].home);
                answer_str(&a, q);
                answer_str(&a, r.users[i].enabled ? "1" : "0");
            }
        }
        auth_rcpt_free(&r);
        break;
    }
    case AUTH_MSG_SENDER_ALLOWED:
        if (!s1 || !s2)
            return;
        answer_begin(&a, id, auth_sender_allowed(svc, s1, s2) ? 1 : 0);
        break;
    case AUTH_MSG_LOGIN_PASSWORD:
    case AUTH_MSG_LOGIN_APOP: {
        if (!s1 || !s2 || (m->type == AUTH_MSG_LOGIN_APOP && !s3))
            return;
        char *user = NULL;
        int rc = m->type == AUTH_MSG_LOGIN_PASSWORD ? auth_login_password(svc, s1, s2, &user)
                                                    : auth_login_apop(svc, s1, s2, s3, &user);
        const char *binding =
            client_binding(c, m->type == AUTH_MSG_LOGIN_PASSWORD ? s3 : s4);
        answer_begin(&a, id, rc);
        if (rc == 1)
            answer_str(&a, user ? user : "");
        if (rc == 1 && binding)
            answer_token(srv, &a, user, binding);
        free(user);
        break;
    }
    case AUTH_MSG_TOKEN_REDEEM:
        if (!s1 || !s2 || !s3 || c->kind != SERVER_PROC_WORKER)
            return; /* a login process may not redeem: no answer (it times out) */
        answer_begin(&a, id, auth_tokens_redeem(srv->tokens, s1, s2, s3) ? 1 : 0);
        break;
    case AUTH_MSG_PENALTY_CHECK:
    case AUTH_MSG_PENALTY_REPORT: {
        const char *s5 = channel_get_str(m, &pos); /* (s1-s4 were read above) */
        if (!s1 || !s2 || !s3 || !s4 || (m->type == AUTH_MSG_PENALTY_REPORT && !s5))
            return;
        /* the table keeps the account's first PENALTY_ACCOUNT_SIZE - 1 octets */
        struct penalty_query q = {.ip = s1,
                                  .account = s2,
                                  .is_trusted = strcmp(s3, "1") == 0,
                                  .service = s4,
                                  .now_ms = penalty_now_ms()};
        struct penalty_answer pa;
        if (m->type == AUTH_MSG_PENALTY_CHECK)
            auth_penalty_check(svc, &q, &pa);
        else
            auth_penalty_report(svc, &q, strcmp(s5, "1") == 0, &pa);
        char delay[24];
        snprintf(delay, sizeof delay, "%llu", (unsigned long long)pa.delay_ms);
        answer_begin(&a, id, (int32_t)pa.verdict);
        answer_str(&a, delay);
        break;
    }
    case AUTH_MSG_LOGIN_TOO_SOON:
        if (!s1 || !s2)
            return;
        answer_begin(&a, id, auth_login_too_soon(svc, s1, (unsigned)strtoul(s2, NULL, 10)) ? 1 : 0);
        break;
    case AUTH_MSG_SASL_STEP:
        sasl_step(srv, c, m, id);
        return;
    case AUTH_MSG_DOMAIN_LIST:
        answer_begin(&a, id, 0);
        answer_rc(&a, auth_domain_list(svc, domain_list_cb, &a) < 0 ? -1 : 0);
        break;
    default:
        return; /* unknown: ignored */
    }
    answer_send(c, m->type, &a);
}

static void request_work(void *arg)
{
    struct auth_request *r = arg;
    /* the message again, on this thread (its heap: one such buffer per pool thread) */
    struct channel_msg *m = malloc(sizeof *m);
    if (m) {
        m->type = r->type;
        m->len = r->len;
        memcpy(m->payload, r->payload, r->len + 1);
        m->fd = r->fd;
        m->is_fd_lost = r->is_fd_lost;
        request_answer(r->client->srv, r->client, m);
        explicit_bzero(m->payload, m->len); /* passwords */
        free(m);
    } /* else no answer: the caller times out (a temporary error) */
    explicit_bzero(r->payload, r->len);
}

static void request_done(void *arg)
{
    struct auth_request *r = arg;
    client_release(r->client);
    free(r);
}

/* Loop thread: a datagram from client c. */
static void client_on_msg(void *arg, struct channel_msg *m)
{
    struct auth_client *c = arg;
    if (m->type == AUTH_MSG_SASL_FREE) {
        size_t pos = 4;
        const char *id = channel_get_str(m, &pos);
        if (id) {
            struct auth_sasl_entry *e = sasl_take(c->srv, strtoull(id, NULL, 10), c);
            if (e)
                sasl_put(c->srv, e, true);
        }
        return;
    }
    if (m->type == AUTH_MSG_PENALTY_CHECK || m->type == AUTH_MSG_PENALTY_REPORT) {
        /* a look-up in the failed-login table (no hash, no directory): answered here, not
         * queued on the pool behind the password hashes of a login flood */
        request_answer(c->srv, c, m);
        return;
    }
    struct auth_request *r = malloc(sizeof *r + m->len + 1);
    if (!r)
        return; /* the caller times out: a temporary error */
    r->client = c;
    r->type = m->type;
    r->fd = m->fd;
    r->is_fd_lost = m->is_fd_lost;
    r->len = m->len;
    memcpy(r->payload, m->payload, m->len + 1);
    atomic_fetch_add(&c->refs, 1);
    workpool_submit(c->srv->pool, request_work, request_done, r);
}

static void client_on_closed(void *arg)
{
    struct auth_client *c = arg;
    struct auth_server *srv = c->srv;
    for (struct auth_client **pp = &srv->clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    sasl_drop(srv, c, 0);
    channel_reader_free(c->reader);
    c->reader = NULL;
    client_release(c);
}

/* ---- mechanism announcements ------------------------------------------------------------ */

struct mechs_job {
    struct auth_server *srv;
    char flags[4];
};

static void mechs_work(void *arg)
{
    struct mechs_job *j = arg;
    bool cram, scram, apop;
    auth_mechanism_flags(j->srv->svc, &cram, &scram, &apop);
    j->flags[0] = cram ? '1' : '0';
    j->flags[1] = scram ? '1' : '0';
    j->flags[2] = apop ? '1' : '0';
    j->flags[3] = '\0';
}

static void mechs_announce(struct auth_client *c, const char *flags)
{
    char payload[16];
    uint32_t zero = 0;
    memcpy(payload, &zero, 4);
    size_t len = 4;
    channel_put_str(payload, &len, flags);
    client_send(c, AUTH_MSG_MECHS, payload, len);
}

static void mechs_done(void *arg)
{
    struct mechs_job *j = arg;
    struct auth_server *srv = j->srv;
    srv->is_mechs_job = false;
    if (strcmp(srv->mechs, j->flags) != 0) {
        memcpy(srv->mechs, j->flags, sizeof srv->mechs);
        for (struct auth_client *c = srv->clients; c; c = c->next)
            mechs_announce(c, srv->mechs);
    }
    free(j);
}

static void server_tick(evutil_socket_t fd, short what, void *arg)
{
    struct auth_server *srv = arg;
    sasl_drop(srv, NULL, time(NULL) - AUTH_SERVER_SASL_IDLE_S);
    if (srv->is_mechs_job)
        return;
    struct mechs_job *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->srv = srv;
    srv->is_mechs_job = true;
    workpool_submit(srv->pool, mechs_work, mechs_done, j);
}

/* ---- handing over to the next auth process (a reload that replaces it) ------------------ */

/* The live tokens in a memfd (read from its start), or -1 when there are none or it could
 * not be made (logged). */
static int handover_tokens_fd(struct auth_server *srv, size_t *n_r)
{
    char *buf = NULL;
    size_t len = 0;
    *n_r = auth_tokens_export(srv->tokens, &buf, &len);
    if (*n_r == SIZE_MAX) {
        log_error("auth", "hand-over: out of memory: the live login tokens are not passed on");
        return -1;
    }
    int fd = -1;
    if (*n_r > 0) {
        fd = memfd_create("tern-auth-tokens", MFD_CLOEXEC);
        if (fd < 0 || util_write_all(fd, buf, len) < 0 || lseek(fd, 0, SEEK_SET) != 0) {
            log_error("auth", "hand-over: cannot write the live login tokens: %s",
                      strerror(errno));
            if (fd >= 0)
                close(fd);
            fd = -1;
        }
    }
    explicit_bzero(buf, len);
    free(buf);
    return fd;
}

int auth_server_hand_over(struct auth_server *srv)
{
    size_t n;
    int fd = handover_tokens_fd(srv, &n);
    if (fd >= 0)
        log_info("auth", "hand-over: %zu live login tokens passed to the next auth process", n);
    /* every request read has been answered (the pool has drained): tell each client that
     * what it still waits for was never read, so it may ask the next process (remote.c) */
    char payload[4] = {0, 0, 0, 0};
    for (struct auth_client *c = srv->clients; c; c = c->next)
        client_send(c, AUTH_MSG_GOODBYE, payload, sizeof payload);
    return fd;
}

size_t auth_server_take_over(struct auth_server *srv, int fd)
{
    /* the bytes are taken as hostile (token.c checks every record); one bounded read into
     * our own memory, then the memfd is emptied and closed: its pages go now */
    struct stat st;
    size_t kept = 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size > AUTH_TOKENS_EXPORT_MAX) {
        log_warning("auth", "hand-over: the previous auth process's tokens are not a file of "
                            "at most %zu bytes: ignored", (size_t)AUTH_TOKENS_EXPORT_MAX);
        close(fd);
        return 0;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    ssize_t got = buf ? pread(fd, buf, size + 1, 0) : -1;
    if (got >= 0 && (size_t)got <= size)
        kept = auth_tokens_import(srv->tokens, buf, (size_t)got);
    else
        log_warning("auth", "hand-over: cannot read the previous auth process's tokens");
    if (buf) {
        explicit_bzero(buf, size);
        free(buf);
    }
    (void)ftruncate(fd, 0);
    close(fd);
    log_info("auth", "hand-over: %zu live login tokens taken over from the previous auth "
                     "process", kept);
    return kept;
}

/* ---- the server ----------------------------------------------------------------------- */

struct auth_server *auth_server_new(struct auth_service *svc, struct event_base *base,
                                    struct workpool *pool)
{
    struct auth_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->svc = svc;
    srv->base = base;
    srv->pool = pool;
    pthread_mutex_init(&srv->sasl_lock, NULL);
    srv->sasl = calloc(AUTH_SERVER_SASL_MAX, sizeof *srv->sasl);
    srv->tokens = auth_tokens_new();
    srv->timer = event_new(base, -1, EV_PERSIST, server_tick, srv);
    struct timeval tv = {.tv_sec = AUTH_SERVER_MECHS_S};
    if (!srv->sasl || !srv->tokens || !srv->timer || event_add(srv->timer, &tv) < 0) {
        auth_server_free(srv);
        return NULL;
    }
    /* the flags, before the first client asks for them */
    struct mechs_job j = {.srv = srv};
    mechs_work(&j);
    memcpy(srv->mechs, j.flags, sizeof srv->mechs);
    return srv;
}

int auth_server_add_client(struct auth_server *srv, int sock, unsigned kind)
{
    struct auth_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(sock);
        return -1;
    }
    c->srv = srv;
    c->sock = sock;
    c->kind = kind;
    pthread_mutex_init(&c->send_lock, NULL);
    atomic_init(&c->refs, 1);
    c->reader = channel_reader_new(srv->base, sock, client_on_msg, client_on_closed, c);
    if (!c->reader) {
        client_release(c);
        return -1;
    }
    c->next = srv->clients;
    srv->clients = c;
    mechs_announce(c, srv->mechs);
    return 0;
}

void auth_server_free(struct auth_server *srv)
{
    if (!srv)
        return;
    while (srv->clients)
        client_on_closed(srv->clients);
    if (srv->timer)
        event_free(srv->timer);
    if (srv->sasl) {
        for (size_t i = 0; i < AUTH_SERVER_SASL_MAX; i++)
            if (srv->sasl[i].id)
                auth_sasl_free(srv->sasl[i].sasl);
        free(srv->sasl);
    }
    pthread_mutex_destroy(&srv->sasl_lock);
    auth_tokens_free(srv->tokens);
    free(srv);
}
