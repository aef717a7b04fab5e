/*
 * backend.c - the login processes' channels to the mail workers (backend.h).
 *
 * Login side: one process-wide client. Pool threads send under its lock (the channels
 * are non-blocking; a full one is waited on briefly with the lock released) and wait on
 * its condition variable; one reader thread polls every channel (and a pipe that wakes it
 * when a channel is added) and hands each answer to the call waiting for its id. Only the
 * reader closes a channel (when its mail worker has gone), under the lock, so no sender
 * ever writes to a closed or reused descriptor.
 *
 * Worker side: a channel_reader per login process on the loop; a request is copied (its
 * data only) into a struct backend_request that holds a reference on its channel, so an
 * answer from a pool thread after the login process has gone goes nowhere harmlessly.
 */
#include "core/anvil.h"
#include "core/backend.h"
#include "core/channel.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BACKEND_CHANNELS 64  /* mail workers, two generations at a reload */
#define BACKEND_PENDING  512 /* calls waiting at once in one login process */
#define BACKEND_SEND_TRIES 100 /* x 50 ms: a worker that reads nothing for 5 s is stuck */

/* ---- login side ------------------------------------------------------------------------- */

struct backend_chan {
    int sock; /* -1: free */
    pid_t pid;
    bool is_retired;
    unsigned in_flight;
    unsigned generation; /* bumped when the slot is reused */
};

struct backend_pending {
    uint32_t id; /* 0: free */
    size_t chan;
    unsigned generation;
    struct channel_msg *reply;
    bool is_done;
    bool is_failed;
};

static struct backend_client {
    pthread_mutex_t lock;
    struct backend_chan chans[BACKEND_CHANNELS];
    struct backend_pending pending[BACKEND_PENDING];
    /* the call in pending[k] waits on pending_cond[k], so an answer wakes its caller
     * alone (one shared condition woke every waiting pool thread per answer) */
    pthread_cond_t pending_cond[BACKEND_PENDING];
    pthread_cond_t chan_cond; /* a channel was added (backend_client_add) */
    uint32_t next_id;
    size_t next_rr; /* round robin among equally busy workers */
    int wake[2];
    pthread_t reader;
    bool is_running, is_stopping;
} cl = {.lock = PTHREAD_MUTEX_INITIALIZER,
        .pending_cond = {[0 ... BACKEND_PENDING - 1] = PTHREAD_COND_INITIALIZER},
        .chan_cond = PTHREAD_COND_INITIALIZER,
        .wake = {-1, -1}};

/* Under the lock: the calls waiting on channel i fail; the channel is closed. Their
 * number. */
static unsigned client_chan_drop(size_t i)
{
    struct backend_chan *ch = &cl.chans[i];
    unsigned n = 0;
    for (size_t k = 0; k < BACKEND_PENDING; k++) {
        struct backend_pending *p = &cl.pending[k];
        if (p->id && !p->is_done && p->chan == i && p->generation == ch->generation) {
            p->is_done = true;
            p->is_failed = true;
            pthread_cond_signal(&cl.pending_cond[k]);
            n++;
        }
    }
    close(ch->sock);
    ch->sock = -1;
    ch->in_flight = 0;
    ch->generation++;
    return n;
}

/* Under the lock: an answer for the call waiting with its id on channel i. */
static void client_on_answer(size_t i, struct channel_msg *m)
{
    uint32_t id;
    if (m->len < 8)
        return;
    memcpy(&id, m->payload, 4);
    for (size_t k = 0; k < BACKEND_PENDING; k++) {
        struct backend_pending *p = &cl.pending[k];
        if (p->id != id || p->is_done || p->chan != i ||
            p->generation != cl.chans[i].generation)
            continue;
        p->reply->type = m->type;
        p->reply->len = m->len;
        memcpy(p->reply->payload, m->payload, m->len + 1);
        p->is_done = true;
        pthread_cond_signal(&cl.pending_cond[k]);
        return;
    }
    /* a call that timed out meanwhile: nobody waits */
}

static void *client_reader(void *arg)
{
    (void)arg;
    struct channel_msg *m = malloc(sizeof *m);
    if (!m)
        return NULL;
    for (;;) {
        struct pollfd pfd[BACKEND_CHANNELS + 1];
        size_t idx[BACKEND_CHANNELS];
        nfds_t n = 0;
        pthread_mutex_lock(&cl.lock);
        if (cl.is_stopping) {
            pthread_mutex_unlock(&cl.lock);
            break;
        }
        pfd[n++] = (struct pollfd){.fd = cl.wake[0], .events = POLLIN};
        for (size_t i = 0; i < BACKEND_CHANNELS; i++) {
            if (cl.chans[i].sock < 0)
                continue;
            idx[n - 1] = i;
            pfd[n++] = (struct pollfd){.fd = cl.chans[i].sock, .events = POLLIN};
        }
        pthread_mutex_unlock(&cl.lock);
        if (poll(pfd, n, 1000) <= 0)
            continue;
        if (pfd[0].revents) {
            char drain[64];
            while (read(cl.wake[0], drain, sizeof drain) > 0)
                ;
        }
        for (nfds_t k = 1; k < n; k++) {
            if (!pfd[k].revents)
                continue;
            size_t i = idx[k - 1];
            /* bounded per wake-up, like channel_reader */
            for (int round = 0; round < 64; round++) {
                int got = channel_recv(pfd[k].fd, m);
                if (got == 0)
                    break;
                pthread_mutex_lock(&cl.lock);
                if (cl.chans[i].sock != pfd[k].fd) {
                    pthread_mutex_unlock(&cl.lock);
                    break;
                }
                if (got < 0) {
                    /* the worker exited (a reload, a stop) or died */
                    pid_t pid = cl.chans[i].pid;
                    unsigned n = client_chan_drop(i);
                    if (n)
                        log_warning("master",
                                    "mail worker pid %d is gone with %u requests "
                                    "unanswered (sessions among them go to another)",
                                    (int)pid, n);
                    pthread_mutex_unlock(&cl.lock);
                    break;
                }
                client_on_answer(i, m);
                pthread_mutex_unlock(&cl.lock);
                if (m->fd >= 0)
                    close(m->fd); /* answers carry none */
            }
        }
    }
    free(m);
    return NULL;
}

int backend_client_start(void)
{
    if (cl.is_running)
        return 0;
    for (size_t i = 0; i < BACKEND_CHANNELS; i++)
        cl.chans[i].sock = -1;
    if (pipe2(cl.wake, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    cl.is_stopping = false;
    if (pthread_create(&cl.reader, NULL, client_reader, NULL) != 0) {
        close(cl.wake[0]);
        close(cl.wake[1]);
        cl.wake[0] = cl.wake[1] = -1;
        return -1;
    }
    cl.is_running = true;
    return 0;
}

static void client_wake(void)
{
    if (cl.wake[1] >= 0)
        (void)!write(cl.wake[1], "", 1);
}

void backend_client_stop(void)
{
    if (!cl.is_running)
        return;
    pthread_mutex_lock(&cl.lock);
    cl.is_stopping = true;
    pthread_mutex_unlock(&cl.lock);
    client_wake();
    pthread_join(cl.reader, NULL);
    pthread_mutex_lock(&cl.lock);
    for (size_t i = 0; i < BACKEND_CHANNELS; i++)
        if (cl.chans[i].sock >= 0)
            client_chan_drop(i);
    pthread_mutex_unlock(&cl.lock);
    close(cl.wake[0]);
    close(cl.wake[1]);
    cl.wake[0] = cl.wake[1] = -1;
    cl.is_running = false;
}

void backend_client_add(int sock, pid_t worker_pid)
{
    pthread_mutex_lock(&cl.lock);
    size_t i = 0;
    while (i < BACKEND_CHANNELS && cl.chans[i].sock >= 0)
        i++;
    if (!cl.is_running || i == BACKEND_CHANNELS) {
        pthread_mutex_unlock(&cl.lock);
        log_error("master", "no room for a channel to mail worker pid %d", (int)worker_pid);
        close(sock);
        return;
    }
    cl.chans[i].sock = sock;
    cl.chans[i].pid = worker_pid;
    cl.chans[i].is_retired = false;
    cl.chans[i].in_flight = 0;
    pthread_cond_broadcast(&cl.chan_cond);
    pthread_mutex_unlock(&cl.lock);
    client_wake();
}

void backend_client_retire(pid_t worker_pid)
{
    pthread_mutex_lock(&cl.lock);
    for (size_t i = 0; i < BACKEND_CHANNELS; i++)
        if (cl.chans[i].sock >= 0 && cl.chans[i].pid == worker_pid)
            cl.chans[i].is_retired = true;
    pthread_mutex_unlock(&cl.lock);
}

/* Under the lock: the channel for the next call (fewest in flight, plus for a session
 * handoff the sessions each worker holds; current ones before retired ones; none of the
 * excluded bits), or BACKEND_CHANNELS when there is none. */
static size_t client_choose(uint64_t excluded, bool is_session)
{
    uint32_t load[BACKEND_CHANNELS];
    size_t best = BACKEND_CHANNELS;
    for (size_t k = 0; k < BACKEND_CHANNELS; k++) {
        size_t i = (cl.next_rr + k) % BACKEND_CHANNELS;
        const struct backend_chan *ch = &cl.chans[i];
        if (ch->sock < 0 || (excluded & ((uint64_t)1 << i)))
            continue;
        /* a session stays for hours: count the ones the worker holds (the anvil), not
         * only the calls in flight, or a worker that answers faster gets more and more */
        load[i] = ch->in_flight + (is_session ? anvil_sessions_of(ch->pid) : 0);
        if (best == BACKEND_CHANNELS) {
            best = i;
            continue;
        }
        const struct backend_chan *b = &cl.chans[best];
        if (ch->is_retired != b->is_retired ? !ch->is_retired : load[i] < load[best])
            best = i;
    }
    cl.next_rr = (cl.next_rr + 1) % BACKEND_CHANNELS;
    return best;
}

/* How a call on one channel went without an answer (backend_call_on). */
enum backend_miss {
    BACKEND_MISS_NONE,       /* answered, or failed for good (too large, stopping, full) */
    BACKEND_MISS_NO_CHANNEL, /* no channel to send on: nothing was sent */
    BACKEND_MISS_UNSENT,     /* its worker left (the channel closed) before the send */
    BACKEND_MISS_LOST,       /* sent; the worker left (its channel closed) without a word */
    BACKEND_MISS_TIMEOUT,    /* sent; no answer within the time (the worker may act on it) */
};

/* One backend_call on a channel not in excluded; *chan_r gets the channel used, *miss_r
 * how it went when unanswered. */
static int backend_call_on(uint8_t type, const void *data, size_t len, int fd, unsigned timeout_s,
                           struct channel_msg *reply, int32_t *rc_r, size_t *data_off_r,
                           uint64_t excluded, size_t *chan_r, enum backend_miss *miss_r)
{
    *rc_r = -1;
    *data_off_r = 8;
    *miss_r = BACKEND_MISS_NONE;
    if (len + 4 > CHANNEL_MAX_PAYLOAD)
        return -1;
    char *payload = malloc(len + 4);
    if (!payload)
        return -1;
    if (len)
        memcpy(payload + 4, data, len);
    pthread_mutex_lock(&cl.lock);
    struct backend_pending *p = NULL;
    for (size_t k = 0; k < BACKEND_PENDING && !p; k++)
        if (cl.pending[k].id == 0)
            p = &cl.pending[k];
    size_t i = client_choose(excluded, type == BACKEND_MSG_HANDOFF);
    *chan_r = i;
    if (!p || i == BACKEND_CHANNELS || cl.is_stopping) {
        if (p && i == BACKEND_CHANNELS && !cl.is_stopping)
            *miss_r = BACKEND_MISS_NO_CHANNEL;
        pthread_mutex_unlock(&cl.lock);
        free(payload);
        return -1;
    }
    uint32_t id = ++cl.next_id;
    if (id == 0)
        id = ++cl.next_id;
    unsigned gen = cl.chans[i].generation;
    *p = (struct backend_pending){.id = id, .chan = i, .generation = gen, .reply = reply};
    memcpy(payload, &id, 4);
    cl.chans[i].in_flight++;
    int sent = -1;
    bool is_peer_gone = false; /* the worker closed its end: nothing went out */
    for (int tries = 0; tries < BACKEND_SEND_TRIES; tries++) {
        if (cl.chans[i].sock < 0 || cl.chans[i].generation != gen) {
            is_peer_gone = true;
            break;
        }
        sent = channel_send(cl.chans[i].sock, type, payload, len + 4, fd);
        if (sent != 0)
            is_peer_gone = errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN;
        if (sent == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            break;
        /* the worker is behind: wait for room without holding the lock */
        int sock = cl.chans[i].sock;
        pthread_mutex_unlock(&cl.lock);
        channel_wait_room(sock, 50);
        pthread_mutex_lock(&cl.lock);
    }
    free(payload);
    if (sent == 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout_s;
        while (!p->is_done)
            if (pthread_cond_timedwait(&cl.pending_cond[p - cl.pending], &cl.lock, &until) ==
                ETIMEDOUT)
                break;
        if (!p->is_done)
            log_warning("master", "no answer from mail worker pid %d in %u s",
                        (int)cl.chans[i].pid, timeout_s);
    }
    int rc = -1;
    if (sent == 0 && p->is_done && !p->is_failed && reply->len >= 8) {
        int32_t v;
        memcpy(&v, reply->payload + 4, 4);
        *rc_r = v;
        rc = 0;
    } else if (sent != 0) {
        *miss_r = is_peer_gone ? BACKEND_MISS_UNSENT : BACKEND_MISS_NONE;
    } else {
        *miss_r = p->is_failed ? BACKEND_MISS_LOST : BACKEND_MISS_TIMEOUT;
    }
    if (cl.chans[i].generation == gen && cl.chans[i].in_flight > 0)
        cl.chans[i].in_flight--;
    memset(p, 0, sizeof *p);
    pthread_mutex_unlock(&cl.lock);
    return rc;
}

/* Wait up to ms for a channel that is not in excluded and not retired (a reload's new
 * workers, whose channels the master is handing over); true when there is one. */
static bool client_wait_channel(uint64_t excluded, unsigned ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&cl.lock);
    bool has = false;
    for (;;) {
        for (size_t i = 0; i < BACKEND_CHANNELS && !has; i++)
            has = cl.chans[i].sock >= 0 && !cl.chans[i].is_retired &&
                  !(excluded & ((uint64_t)1 << i));
        if (has || cl.is_stopping ||
            pthread_cond_timedwait(&cl.chan_cond, &cl.lock, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&cl.lock);
    return has;
}

int backend_call(uint8_t type, const void *data, size_t len, int fd, unsigned timeout_s,
                 struct channel_msg *reply, int32_t *rc_r, size_t *data_off_r)
{
    uint64_t tried = 0;
    bool has_waited = false;
    for (int attempt = 0;; attempt++) {
        size_t chan = BACKEND_CHANNELS;
        enum backend_miss miss;
        int rc = backend_call_on(type, data, len, fd, timeout_s, reply, rc_r, data_off_r, tried,
                                 &chan, &miss);
        /* Another worker may take what this one did nothing with: it refused because it
         * drains (a reload), or it had left before the request went out; each channel
         * is tried once, so these end. A worker out of descriptors did nothing either,
         * and a session whose worker left without a word had only been started there (a
         * draining worker exits with what it has not read unanswered; one that died
         * after reading it spent its one-time token, and the next worker answers a
         * temporary failure): those go to BACKEND_FD_LOST_TRIES others at most, so
         * that a session that kills its worker does not kill them all. Never a
         * delivery without an answer: the worker may have stored the message. */
        bool is_limited = attempt < BACKEND_FD_LOST_TRIES;
        bool is_elsewhere =
            rc == 0 ? *rc_r == BACKEND_RC_NOT_TAKEN || (*rc_r == BACKEND_RC_FD_LOST && is_limited)
                    : miss == BACKEND_MISS_UNSENT ||
                          (miss == BACKEND_MISS_LOST && type == BACKEND_MSG_HANDOFF && is_limited);
        if (is_elsewhere && chan < BACKEND_CHANNELS) {
            tried |= (uint64_t)1 << chan;
            continue;
        }
        /* No worker left to ask (a reload's old generation gone or refusing, or every
         * worker restarting): the master hands the new ones' channels over; wait once. */
        if (rc < 0 && miss == BACKEND_MISS_NO_CHANNEL && !has_waited &&
            client_wait_channel(tried, BACKEND_NEW_WORKER_WAIT_MS)) {
            has_waited = true;
            continue;
        }
        return rc;
    }
}

/* ---- worker side ------------------------------------------------------------------------ */

struct backend_conn {
    int sock;
    pid_t login_pid;
    pthread_mutex_t send_lock;
    atomic_int refs; /* the loop's one while open, plus one per request */
    struct channel_reader *reader;
    struct backend_conn *next;
};

struct backend_request {
    struct backend_conn *bc;
    uint8_t type;
    uint32_t id;
    int fd;
    size_t len;
    char data[]; /* len bytes and a NUL */
};

static struct {
    backend_handler_fn *fn[BACKEND_MSG_COUNT];
    void *arg[BACKEND_MSG_COUNT];
    struct backend_conn *conns;
    atomic_size_t in_flight;
} sv;

static void backend_conn_release(struct backend_conn *bc)
{
    if (atomic_fetch_sub(&bc->refs, 1) != 1)
        return;
    close(bc->sock);
    pthread_mutex_destroy(&bc->send_lock);
    free(bc);
}

void backend_server_handle(uint8_t type, backend_handler_fn *fn, void *arg)
{
    if (type < BACKEND_MSG_COUNT) {
        sv.fn[type] = fn;
        sv.arg[type] = arg;
    }
}

static void server_on_msg(void *arg, struct channel_msg *m)
{
    struct backend_conn *bc = arg;
    if (m->type >= BACKEND_MSG_COUNT || !sv.fn[m->type] || m->len < 4)
        return; /* unknown or malformed: ignored (a descriptor is closed by the reader) */
    struct backend_request *r = malloc(sizeof *r + m->len - 4 + 1);
    if (!r)
        return; /* the login process times out: a temporary failure */
    r->bc = bc;
    r->type = m->type;
    memcpy(&r->id, m->payload, 4);
    r->len = m->len - 4;
    memcpy(r->data, m->payload + 4, r->len);
    r->data[r->len] = '\0';
    r->fd = m->fd;
    m->fd = -1;
    atomic_fetch_add(&bc->refs, 1);
    atomic_fetch_add(&sv.in_flight, 1);
    if (m->is_fd_lost) {
        /* The kernel could not give us the request's descriptor (this process is at its
         * RLIMIT_NOFILE): say so at once, so the login process asks another worker
         * instead of waiting out its timeout. Logged at most every 10 s. */
        static time_t last_log;
        time_t now = time(NULL);
        if (now - last_log >= 10) {
            last_log = now;
            log_warning("master", "a request from login process pid %d came without its "
                                  "descriptor: this mail worker is out of descriptors "
                                  "(RLIMIT_NOFILE); refused so another worker takes it",
                        (int)bc->login_pid);
        }
        backend_reply(r, BACKEND_RC_FD_LOST, NULL, 0);
        return;
    }
    sv.fn[r->type](r, sv.arg[r->type]);
}

static void server_on_closed(void *arg)
{
    struct backend_conn *bc = arg;
    for (struct backend_conn **pp = &sv.conns; *pp; pp = &(*pp)->next)
        if (*pp == bc) {
            *pp = bc->next;
            break;
        }
    channel_reader_free(bc->reader);
    bc->reader = NULL;
    backend_conn_release(bc);
}

int backend_server_add(struct event_base *base, int sock, pid_t login_pid)
{
    struct backend_conn *bc = calloc(1, sizeof *bc);
    if (!bc) {
        close(sock);
        return -1;
    }
    bc->sock = sock;
    bc->login_pid = login_pid;
    pthread_mutex_init(&bc->send_lock, NULL);
    atomic_init(&bc->refs, 1);
    bc->reader = channel_reader_new(base, sock, server_on_msg, server_on_closed, bc);
    if (!bc->reader) {
        backend_conn_release(bc);
        return -1;
    }
    bc->next = sv.conns;
    sv.conns = bc;
    return 0;
}

void backend_server_stop(void)
{
    while (sv.conns)
        server_on_closed(sv.conns);
}

size_t backend_server_in_flight(void)
{
    return atomic_load(&sv.in_flight);
}

const char *backend_request_data(const struct backend_request *req, size_t *len_r)
{
    *len_r = req->len;
    return req->data;
}

int backend_request_take_fd(struct backend_request *req)
{
    int fd = req->fd;
    req->fd = -1;
    return fd;
}

pid_t backend_request_login_pid(const struct backend_request *req)
{
    return req->bc->login_pid;
}

void backend_request_free(struct backend_request *req)
{
    if (!req)
        return;
    if (req->fd >= 0)
        close(req->fd);
    backend_conn_release(req->bc);
    explicit_bzero(req->data, req->len);
    free(req);
    atomic_fetch_sub(&sv.in_flight, 1);
}

void backend_reply(struct backend_request *req, int32_t rc, const void *data, size_t len)
{
    if (len + 8 > CHANNEL_MAX_PAYLOAD)
        len = 0; /* (callers keep answers small; this is the last guard) */
    char *payload = malloc(len + 8);
    if (payload) {
        memcpy(payload, &req->id, 4);
        memcpy(payload + 4, &rc, 4);
        if (len)
            memcpy(payload + 8, data, len);
        struct backend_conn *bc = req->bc;
        pthread_mutex_lock(&bc->send_lock);
        (void)channel_send_patiently(bc->sock, req->type, payload, len + 8, BACKEND_SEND_TRIES);
        pthread_mutex_unlock(&bc->send_lock);
        free(payload);
    }
    backend_request_free(req);
}
