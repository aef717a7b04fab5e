/*
 * fake_core.c - the in-memory server core of fake_core.h: conn_* and workpool_submit()
 * for tests and fuzz targets, following src/core/conn.c's callback rules and workpool.c's
 * completion order, with work() on a real second thread so the thread rule is checked.
 */
#include "fake_core.h"

#include "core/job.h"
#include "core/workpool.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every conn_* call must come from the loop thread (conn.c's CONN_ON_LOOP). */
#define FAKE_ON_LOOP() job_assert_loop_thread(__func__)

struct conn {
    const struct conn_protocol *proto;
    void *session;
    int peer;
    struct evbuffer *in;
    enum conn_role role;
    unsigned timeout;
    unsigned deadline; /* conn_set_deadline (recorded only) */
    size_t queued; /* written, not yet read by the peer */
    const char *close_reason;
    bool is_tls, is_loopback, is_handshaking, is_paused, is_closing, is_finished, has_eof;
    bool is_compressed; /* COMPRESS=DEFLATE accepted (the fake keeps the bytes plain) */
    bool is_kicked; /* a deferred dispatch is due (conn.c's kick event) */
};

struct fake_peer {
    struct conn *c; /* NULL when no connection (never opened, or closed and freed) */
    struct buf out;
    char greeting[512];
    size_t greeting_len;
    bool has_greeting;
};

struct fake_job {
    workpool_fn *work, *done;
    void *arg;
};

static struct {
    bool is_init;
    struct server_context ctx;
    struct event_base *base;
    struct fake_policy policy;
    struct fake_peer peers[FAKE_MAX_PEERS];
    struct fake_job queued[FAKE_MAX_JOBS], completed[FAKE_MAX_JOBS];
    size_t n_queued, n_completed;
    size_t n_worked; /* work() calls since start */
    bool is_stopping;
    /* the worker thread: one task at a time, handed over under lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    void (*task)(void *);
    void *task_arg;
    bool has_task;
} fake = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* ---- set-up ----------------------------------------------------------------------------- */

/* The worker thread: runs each task handed to it, then says so. */
static void *fake_worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&fake.lock);
    for (;;) {
        while (!fake.has_task)
            pthread_cond_wait(&fake.cond, &fake.lock);
        void (*fn)(void *) = fake.task;
        void *task_arg = fake.task_arg;
        pthread_mutex_unlock(&fake.lock);
        fn(task_arg);
        pthread_mutex_lock(&fake.lock);
        fake.has_task = false;
        pthread_cond_broadcast(&fake.cond);
    }
    return NULL;
}

void fake_core_init(void)
{
    if (fake.is_init)
        return;
    fake.is_init = true;
    job_loop_thread_set();
    fake.base = event_base_new();
    pthread_t worker;
    if (!fake.base || pthread_create(&worker, NULL, fake_worker_main, NULL) != 0) {
        fprintf(stderr, "fake core: cannot start (event base or worker thread)\n");
        abort();
    }
    pthread_detach(worker);
    fake.ctx.base = fake.base;
    fake.ctx.pool = (struct workpool *)&fake; /* opaque to sessions, never dereferenced */
    for (int p = 0; p < FAKE_MAX_PEERS; p++)
        buf_init(&fake.peers[p].out, 0);
    fake.policy = (struct fake_policy){.auto_jobs = true, .auto_drain = true,
                                       .auto_handshake = true};
}

struct server_context *fake_core_context(void)
{
    return &fake.ctx;
}

struct event_base *fake_core_base(void)
{
    return fake.base;
}

struct fake_policy *fake_core_policy(void)
{
    return &fake.policy;
}

/* Forget a peer's transcript (the allocation stays for the next connection). */
static void fake_peer_clear(struct fake_peer *pr)
{
    buf_reset(&pr->out);
    pr->has_greeting = false;
    pr->greeting_len = 0;
    pr->greeting[0] = '\0';
}

void fake_core_reset(void)
{
    for (int p = 0; p < FAKE_MAX_PEERS; p++) {
        if (fake.peers[p].c) {
            fprintf(stderr, "fake core: reset with connection %d still open\n", p);
            abort();
        }
        fake_peer_clear(&fake.peers[p]);
    }
    if (fake.n_queued || fake.n_completed) {
        fprintf(stderr, "fake core: reset with %zu jobs unfinished\n",
                fake.n_queued + fake.n_completed);
        abort();
    }
    fake.is_stopping = false;
}

static struct conn *fake_conn_of(int peer)
{
    return peer >= 0 && peer < FAKE_MAX_PEERS ? fake.peers[peer].c : NULL;
}

/* Keep what the session wrote: the tail past the cap, and the first line apart. */
static void fake_record(struct fake_peer *pr, const char *data, size_t len)
{
    for (size_t i = 0; !pr->has_greeting && i < len; i++) {
        if (data[i] == '\n' || pr->greeting_len + 1 >= sizeof pr->greeting) {
            pr->has_greeting = true;
            while (pr->greeting_len > 0 && pr->greeting[pr->greeting_len - 1] == '\r')
                pr->greeting_len--;
            pr->greeting[pr->greeting_len] = '\0';
        } else {
            pr->greeting[pr->greeting_len++] = data[i];
        }
    }
    size_t cap = fake.policy.output_cap ? fake.policy.output_cap : 1024 * 1024;
    if (pr->out.len + len > cap) {
        buf_reset(&pr->out); /* tests look at the last replies */
        if (len > cap) {
            data += len - cap;
            len = cap;
        }
    }
    if (!buf_append(&pr->out, data, len)) {
        fprintf(stderr, "fake core: out of memory for the transcript\n");
        abort();
    }
}

/* ---- conn_* for the sessions (conn.h) ------------------------------------------------- */

const struct server_context *conn_server(const struct conn *c)
{
    FAKE_ON_LOOP();
    return &fake.ctx;
}

enum conn_role conn_role(const struct conn *c)
{
    FAKE_ON_LOOP();
    return c->role;
}

struct evbuffer *conn_input(struct conn *c)
{
    FAKE_ON_LOOP();
    return c->in;
}

void conn_write(struct conn *c, const void *data, size_t len)
{
    FAKE_ON_LOOP();
    if (c->is_finished || len == 0)
        return;
    if (c->is_handshaking) {
        /* Only pipelined input could have made this reply: the CVE-2011-0411 class. */
        fprintf(stderr, "fake core: the session wrote during the STARTTLS handshake: %.*s\n",
                (int)(len < 200 ? len : 200), (const char *)data);
        abort();
    }
    c->queued += len;
    fake_record(&fake.peers[c->peer], data, len);
}

void conn_write_str(struct conn *c, const char *s)
{
    conn_write(c, s, strlen(s));
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
    FAKE_ON_LOOP();
    struct buf b;
    buf_init(&b, 0);
    va_list ap;
    va_start(ap, fmt);
    bool is_ok = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (is_ok)
        conn_write(c, b.data, b.len);
    buf_free(&b);
}

size_t conn_output_length(struct conn *c)
{
    FAKE_ON_LOOP();
    return c->queued;
}

void conn_ack_now(struct conn *c)
{
    FAKE_ON_LOOP();
}

int conn_starttls(struct conn *c)
{
    FAKE_ON_LOOP();
    if (c->is_tls || c->is_handshaking || c->is_closing || c->is_finished)
        return -1;
    evbuffer_drain(c->in, evbuffer_get_length(c->in)); /* RFC 3207 §4 */
    c->is_handshaking = true;
    return 0;
}

bool conn_is_tls(const struct conn *c)
{
    FAKE_ON_LOOP();
    return c->is_tls;
}

const char *conn_tls_description(const struct conn *c)
{
    FAKE_ON_LOOP();
    return c->is_tls ? "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" : "";
}

/* RFC 4978: the session's state changes as in conn.c; the fake keeps both directions
 * plain so that the scripts and the replay checks stay readable. */
int conn_compress(struct conn *c)
{
    FAKE_ON_LOOP();
    if (c->is_compressed)
        return -1;
    c->is_compressed = true;
    return 0;
}

bool conn_is_compressed(const struct conn *c)
{
    FAKE_ON_LOOP();
    return c->is_compressed;
}

bool conn_tls_available(const struct conn *c)
{
    FAKE_ON_LOOP();
    return !c->is_tls && !c->is_handshaking;
}

const char *conn_peer_ip(const struct conn *c)
{
    FAKE_ON_LOOP();
    return c->is_loopback ? "127.0.0.1" : "192.0.2.7";
}

const char *conn_local_ip(const struct conn *c)
{
    FAKE_ON_LOOP();
    return c->is_loopback ? "127.0.0.1" : "192.0.2.1";
}

uint16_t conn_local_port(const struct conn *c)
{
    FAKE_ON_LOOP();
    static const uint16_t ports[CONN_ROLE_COUNT] = {
        [CONN_ROLE_SMTP] = 25,  [CONN_ROLE_SUBMISSION] = 587, [CONN_ROLE_SUBMISSIONS] = 465,
        [CONN_ROLE_POP3] = 110, [CONN_ROLE_POP3S] = 995,      [CONN_ROLE_IMAP] = 143,
        [CONN_ROLE_IMAPS] = 993, [CONN_ROLE_LMTP] = 24,
    };
    return ports[c->role];
}

uint16_t conn_peer_port(const struct conn *c)
{
    FAKE_ON_LOOP();
    return 4711;
}

bool conn_peer_is_loopback(const struct conn *c)
{
    FAKE_ON_LOOP();
    return c->is_loopback;
}

bool conn_peer_is_local(const struct conn *c)
{
    FAKE_ON_LOOP();
    return false; /* the fake peers come over TCP, never a unix socket */
}

const char *conn_peer_name(const struct conn *c)
{
    FAKE_ON_LOOP();
    return c->is_loopback ? "localhost" : "unknown";
}

bool conn_peer_in_networks(const struct conn *c, const struct config_list *nets)
{
    FAKE_ON_LOOP();
    return false; /* the fake peers are in no configured network */
}

/* The fake core is a single process: sessions are never handed over (conn.h). */
bool conn_is_login_process(const struct conn *c)
{
    FAKE_ON_LOOP();
    return false;
}

bool conn_is_handed_over(const struct conn *c)
{
    FAKE_ON_LOOP();
    return false;
}

void conn_handoff(struct conn *c, struct conn_handoff *h)
{
    /* never called: conn_is_login_process() is false here */
    (void)c;
    free(h);
    abort();
}

void conn_login_binding(const struct conn *c, const char *service, char *out, size_t size)
{
    FAKE_ON_LOOP();
    snprintf(out, size, "%s %s 0 %s %u", service, conn_peer_ip(c), conn_local_ip(c),
             (unsigned)conn_local_port(c));
}

bool conn_is_stopping(const struct conn *c)
{
    FAKE_ON_LOOP();
    return fake.is_stopping;
}

void conn_pause_read(struct conn *c)
{
    FAKE_ON_LOOP();
    if (!c->is_finished)
        c->is_paused = true;
}

void conn_resume_read(struct conn *c)
{
    FAKE_ON_LOOP();
    if (!c->is_paused || c->is_finished)
        return;
    c->is_paused = false;
    if (c->is_closing)
        return;
    if (c->has_eof || evbuffer_get_length(c->in) > 0)
        c->is_kicked = true;
}

void conn_set_timeout(struct conn *c, unsigned seconds)
{
    FAKE_ON_LOOP();
    c->timeout = seconds;
}

void conn_set_deadline(struct conn *c, unsigned seconds)
{
    FAKE_ON_LOOP();
    c->deadline = seconds; /* recorded only: the fake core has no clock (fake_timeout) */
}

void conn_close(struct conn *c)
{
    FAKE_ON_LOOP();
    if (c->is_closing || c->is_finished)
        return;
    c->is_closing = true;
    if (!c->close_reason)
        c->close_reason = "disconnect";
    c->is_kicked = true;
}

/* ---- the loop's side (conn.c's callbacks) --------------------------------------------- */

/* The end: close() once, then the connection is freed (conn_finish). */
static void fake_finish(struct conn *c, const char *reason)
{
    if (c->is_finished)
        return;
    c->is_finished = true;
    if (c->session && c->proto->close)
        c->proto->close(c->session, reason);
    fake.peers[c->peer].c = NULL;
    evbuffer_free(c->in);
    free(c);
}

static void fake_finish_if_flushed(struct conn *c)
{
    if (c->is_closing && c->queued == 0)
        fake_finish(c, c->close_reason ? c->close_reason : "disconnect");
}

/* conn_dispatch_read: hand input to the protocol while it takes it. */
static void fake_dispatch_read(struct conn *c)
{
    if (c->is_paused || c->is_closing || c->is_finished || c->is_handshaking || !c->session)
        return;
    if (fake.is_stopping)
        return;
    if (evbuffer_get_length(c->in) > 0)
        c->proto->on_read(c->session, c);
    if (c->has_eof && !c->is_paused && !c->is_closing && !c->is_finished) {
        c->close_reason = "lost connection";
        conn_close(c);
    }
}

/* conn_on_kick */
static void fake_on_kick(struct conn *c)
{
    c->is_kicked = false;
    if (c->is_closing) {
        fake_finish_if_flushed(c);
        return;
    }
    fake_dispatch_read(c);
    fake_finish_if_flushed(c);
}

bool fake_open(int peer, const struct conn_protocol *proto, enum conn_role role, bool is_tls,
               bool is_loopback)
{
    if (peer < 0 || peer >= FAKE_MAX_PEERS || fake.peers[peer].c) {
        fprintf(stderr, "fake core: peer %d is not free\n", peer);
        abort();
    }
    if (fake.is_stopping)
        return false;
    struct fake_peer *pr = &fake.peers[peer];
    fake_peer_clear(pr);
    struct conn *c = calloc(1, sizeof *c);
    if (!c || !(c->in = evbuffer_new())) {
        fprintf(stderr, "fake core: out of memory\n");
        abort();
    }
    c->proto = proto;
    c->peer = peer;
    c->role = role;
    c->is_tls = is_tls;
    c->is_loopback = is_loopback;
    pr->c = c;
    c->session = proto->open(c);
    if (!c->session) {
        c->close_reason = "refused";
        conn_close(c);
    } else {
        fake_dispatch_read(c);
    }
    fake_finish_if_flushed(c);
    return true;
}

void fake_feed(int peer, const void *data, size_t len)
{
    struct conn *c = fake_conn_of(peer);
    /* closing: the core reads no more; handshaking: these bytes are the handshake */
    if (!c || len == 0 || c->is_closing || c->has_eof || c->is_handshaking)
        return;
    evbuffer_add(c->in, data, len);
    fake_dispatch_read(c);
    fake_finish_if_flushed(c);
}

void fake_drain(int peer, size_t max)
{
    struct conn *c = fake_conn_of(peer);
    if (!c || c->queued == 0)
        return;
    c->queued -= max < c->queued ? max : c->queued;
    if (c->queued > CONN_OUTPUT_LOW_WATER)
        return; /* libevent calls back at the low-water mark */
    if (c->is_closing) {
        fake_finish_if_flushed(c);
        return;
    }
    if (c->session && c->proto->on_drained && !c->is_handshaking)
        c->proto->on_drained(c->session, c);
    fake_finish_if_flushed(c);
}

void fake_eof(int peer)
{
    struct conn *c = fake_conn_of(peer);
    if (!c || c->has_eof)
        return;
    if (!c->is_handshaking && c->session && !c->is_closing &&
        (c->is_paused || c->queued > 0 || evbuffer_get_length(c->in) > 0)) {
        /* answer what was sent before the end of input, then close */
        c->has_eof = true;
        fake_dispatch_read(c);
        return;
    }
    fake_finish(c, "lost connection");
}

void fake_drop(int peer, const char *reason)
{
    struct conn *c = fake_conn_of(peer);
    if (c)
        fake_finish(c, reason ? reason : "connection error");
}

void fake_timeout(int peer, bool is_writing)
{
    struct conn *c = fake_conn_of(peer);
    if (!c)
        return;
    if (c->is_closing) {
        fake_finish(c, "timeout while flushing");
        return;
    }
    if (c->is_handshaking) {
        fake_finish(c, "timeout");
        return;
    }
    if (!is_writing && c->queued > 0)
        return; /* not idle: still sending to a slow reader */
    if (c->session && c->proto->on_timeout)
        c->proto->on_timeout(c->session, c);
    c->close_reason = "timeout";
    conn_close(c);
}

void fake_handshake(int peer, bool is_ok)
{
    struct conn *c = fake_conn_of(peer);
    if (!c || !c->is_handshaking)
        return;
    if (!is_ok) {
        fake_finish(c, "connection error");
        return;
    }
    c->is_handshaking = false;
    c->is_tls = true;
    if (c->proto->on_tls)
        c->proto->on_tls(c->session, c);
    fake_dispatch_read(c);
    fake_finish_if_flushed(c);
}

void fake_shutdown(void)
{
    fake.is_stopping = true;
    for (int p = 0; p < FAKE_MAX_PEERS; p++) {
        struct conn *c = fake.peers[p].c;
        if (!c || c->is_closing)
            continue;
        if (!c->close_reason)
            c->close_reason = "shutdown";
        if (c->session && c->proto->on_shutdown && !c->is_handshaking && !c->is_paused)
            c->proto->on_shutdown(c->session, c);
        conn_close(c);
    }
}

/* ---- the pool ------------------------------------------------------------------------- */

void workpool_submit(struct workpool *pool, workpool_fn *work, workpool_fn *done, void *arg)
{
    job_assert_loop_thread("workpool_submit");
    if (fake.n_queued + fake.n_completed >= FAKE_MAX_JOBS) {
        fprintf(stderr, "fake core: %d jobs in flight: runaway submissions\n", FAKE_MAX_JOBS);
        abort();
    }
    fake.queued[fake.n_queued++] = (struct fake_job){work, done, arg};
}

/* The fake core has no clock: a delayed job (the failed-login delay) is queued at once,
 * so the paths that hold a job are run without the wait. */
void workpool_submit_delayed(struct workpool *pool, unsigned delay_ms, workpool_fn *work,
                             workpool_fn *done, void *arg)
{
    (void)delay_ms;
    workpool_submit(pool, work, done, arg);
}

void fake_run_on_worker(void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&fake.lock);
    fake.task = fn;
    fake.task_arg = arg;
    fake.has_task = true;
    pthread_cond_broadcast(&fake.cond);
    while (fake.has_task)
        pthread_cond_wait(&fake.cond, &fake.lock);
    pthread_mutex_unlock(&fake.lock);
}

static void fake_job_run_work(void *arg)
{
    struct fake_job *j = arg;
    j->work(j->arg);
}

size_t fake_jobs_queued(void)
{
    return fake.n_queued;
}

size_t fake_jobs_completed(void)
{
    return fake.n_completed;
}

size_t fake_jobs_worked(void)
{
    return fake.n_worked;
}

bool fake_job_work(size_t k)
{
    if (fake.n_queued == 0)
        return false;
    size_t i = k % fake.n_queued;
    struct fake_job j = fake.queued[i];
    memmove(&fake.queued[i], &fake.queued[i + 1], (fake.n_queued - i - 1) * sizeof j);
    fake.n_queued--;
    fake_run_on_worker(fake_job_run_work, &j);
    fake.n_worked++;
    fake.completed[fake.n_completed++] = j;
    return true;
}

bool fake_job_done(void)
{
    if (fake.n_completed == 0)
        return false;
    struct fake_job j = fake.completed[0];
    memmove(&fake.completed[0], &fake.completed[1], (fake.n_completed - 1) * sizeof j);
    fake.n_completed--;
    j.done(j.arg);
    return true;
}

void fake_jobs_run_all(void)
{
    for (unsigned guard = 0; guard < 100000; guard++)
        if (!fake_job_done() && !fake_job_work(0))
            return;
    fprintf(stderr, "fake core: jobs keep submitting jobs\n");
    abort();
}

/* ---- the loop --------------------------------------------------------------------------- */

struct fake_timers {
    struct event *ev[16];
    size_t n;
};

static int fake_collect_timer(const struct event_base *base, const struct event *ev, void *arg)
{
    struct fake_timers *t = arg;
    if (event_get_fd(ev) < 0 && t->n < sizeof t->ev / sizeof t->ev[0])
        t->ev[t->n++] = (struct event *)ev;
    return 0;
}

void fake_loop_once(bool fire_timers)
{
    if (fire_timers) {
        /* collected first: the callback may not change the base */
        struct fake_timers t = {.n = 0};
        event_base_foreach_event(fake.base, fake_collect_timer, &t);
        for (size_t i = 0; i < t.n; i++)
            event_active(t.ev[i], EV_TIMEOUT, 1);
    }
    event_base_loop(fake.base, EVLOOP_NONBLOCK);
}

/* Is anything due that the loop would run by itself? */
static bool fake_has_pending(void)
{
    for (int p = 0; p < FAKE_MAX_PEERS; p++)
        if (fake.peers[p].c && fake.peers[p].c->is_kicked)
            return true;
    return fake.policy.auto_jobs && (fake.n_queued || fake.n_completed);
}

void fake_settle(void)
{
    for (unsigned round = 0; round < 1000000; round++) {
        if (fake.policy.is_spent && fake.policy.is_spent())
            return;
        bool has_moved = false;
        for (int p = 0; p < FAKE_MAX_PEERS; p++) {
            struct conn *c = fake.peers[p].c;
            if (c && c->is_kicked) {
                fake_on_kick(c);
                has_moved = true;
            }
            c = fake.peers[p].c;
            if (c && fake.policy.auto_drain && c->queued > 0) {
                fake_drain(p, SIZE_MAX);
                has_moved = true;
            }
            c = fake.peers[p].c;
            if (c && fake.policy.auto_handshake && c->is_handshaking && c->queued == 0) {
                fake_handshake(p, true);
                has_moved = true;
            }
        }
        if (has_moved)
            continue;
        if (fake.policy.auto_jobs) {
            if (fake_job_done() || fake_job_work(0))
                continue;
            fake_loop_once(false); /* store notifications from the worker */
            if (fake_has_pending())
                continue;
        }
        return;
    }
    fprintf(stderr, "fake core: the loop does not settle\n");
    abort();
}

/* ---- looking at a peer ---------------------------------------------------------------- */

bool fake_is_open(int peer)
{
    return fake_conn_of(peer) != NULL;
}

bool fake_is_closing(int peer)
{
    struct conn *c = fake_conn_of(peer);
    return !c || c->is_closing;
}

bool fake_is_paused(int peer)
{
    struct conn *c = fake_conn_of(peer);
    return c && c->is_paused;
}

bool fake_is_handshaking(int peer)
{
    struct conn *c = fake_conn_of(peer);
    return c && c->is_handshaking;
}

size_t fake_input_length(int peer)
{
    struct conn *c = fake_conn_of(peer);
    return c ? evbuffer_get_length(c->in) : 0;
}

size_t fake_queued(int peer)
{
    struct conn *c = fake_conn_of(peer);
    return c ? c->queued : 0;
}

const char *fake_output(int peer)
{
    return peer >= 0 && peer < FAKE_MAX_PEERS ? buf_cstr(&fake.peers[peer].out) : "";
}

const char *fake_greeting(int peer)
{
    return peer >= 0 && peer < FAKE_MAX_PEERS ? fake.peers[peer].greeting : "";
}
