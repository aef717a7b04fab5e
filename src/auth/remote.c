/*
 * remote.c - the directory as a client of the auth process (DESIGN §2: the auth process
 * alone reads the password hashes). A worker or the queue process opens its auth_service
 * with auth_service_open_remote(); then every auth_* call of auth.h that needs the
 * directory becomes a request on a SOCK_SEQPACKET channel to the auth process (server.c)
 * and waits for the answer. The wire format (auth_wire.h) is plain data: a request id,
 * then NUL-terminated strings; no pointer crosses.
 *
 * Threads: the calls come from workpool threads (they were BLOCKING before too) and wait
 * on the condition variable of their own pending slot; one reader thread per process
 * receives the answers and wakes the caller whose id it is, and only it (one shared
 * condition woke every waiting thread per answer: with 16 pool threads waiting that was
 * ~16 context switches per lookup, docs/PERFORMANCE.md §12.8). A call that gets no answer within AUTH_REMOTE_TIMEOUT_S
 * (the auth process died or hangs) fails as a temporary error, never as "wrong password"
 * or "no such user". When the master starts a new auth process it hands us a new channel
 * (auth_service_set_channel, loop thread): calls waiting on the old one fail (temporary),
 * new ones use the new one; a call made while there is none waits up to
 * AUTH_REMOTE_RECONNECT_S for it. A reload that replaces the auth process is orderly: the
 * old one answers what it read, hands its one-time tokens to the new one and says
 * goodbye (AUTH_MSG_GOODBYE) before it closes, so what it left unanswered is asked again
 * of the new one, logins and token redemptions included (remote_call says when).
 *
 * Calls made on the event loop must not wait for another process: the SASL mechanism
 * list and APOP availability are kept here from the auth process's announcements
 * (AUTH_MSG_MECHS, sent when a client joins and whenever they change); auth_sasl_start
 * builds the exchange locally (sasl.c) and its first step carries the start.
 */
#include "auth/auth_internal.h"
#include "auth/auth_wire.h"
#include "core/channel.h"
#include "core/log.h"
#include "policy/penalty.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define AUTH_REMOTE_TIMEOUT_S 30 /* a slow hash under load takes a fraction of that */
#define AUTH_REMOTE_PENDING   1024 /* calls waiting at once (workpool threads: far fewer) */
#define AUTH_REMOTE_RECONNECT_S 3 /* a call waits this long for a new auth process's channel */

struct auth_pending {
    uint32_t id; /* 0: free */
    bool is_done;
    struct channel_msg *reply; /* owned by the caller, filled by the reader */
};

struct auth_remote {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the channel changed, the mechanisms came (reader, opening) */
    pthread_cond_t pending_cond[AUTH_REMOTE_PENDING]; /* that slot's answer came, or the
                                                       * channel changed (remote_wake_all) */
    int sock;            /* -1 while there is no auth process */
    unsigned generation; /* bumped by every new channel: stale waits fail */
    /* the channel of this generation said AUTH_MSG_GOODBYE: what it left unanswered was
     * never read (so any request may be asked again of the next auth process) */
    unsigned goodbye_generation;
    bool has_goodbye;
    uint32_t next_id;
    struct auth_pending pending[AUTH_REMOTE_PENDING];
    pthread_t reader;
    bool has_reader, is_stopping;
    /* announced by the auth process (AUTH_MSG_MECHS) */
    bool has_mechs, has_cram, has_scram, has_apop;
};

/* ---- the reader thread ---------------------------------------------------------------- */

/* Under the lock: the channel changed or we stop; every waiting call looks again. */
static void remote_wake_all(struct auth_remote *r)
{
    pthread_cond_broadcast(&r->cond);
    for (size_t i = 0; i < AUTH_REMOTE_PENDING; i++)
        if (r->pending[i].id != 0)
            pthread_cond_signal(&r->pending_cond[i]);
}

static void remote_on_msg(struct auth_remote *r, struct channel_msg *m)
{
    uint32_t id;
    if (m->len < 4)
        return;
    memcpy(&id, m->payload, 4);
    if (id == 0 && m->type == AUTH_MSG_GOODBYE) {
        /* (after every answer the process sent: the channel keeps their order) */
        pthread_mutex_lock(&r->lock);
        r->goodbye_generation = r->generation;
        r->has_goodbye = true;
        pthread_mutex_unlock(&r->lock);
        return;
    }
    if (id == 0 && m->type == AUTH_MSG_MECHS) {
        size_t pos = 4;
        const char *flags = channel_get_str(m, &pos);
        if (!flags || strlen(flags) < 3)
            return;
        pthread_mutex_lock(&r->lock);
        r->has_cram = flags[0] == '1';
        r->has_scram = flags[1] == '1';
        r->has_apop = flags[2] == '1';
        r->has_mechs = true;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        return;
    }
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < AUTH_REMOTE_PENDING; i++) {
        struct auth_pending *p = &r->pending[i];
        if (p->id == id && !p->is_done) {
            memcpy(p->reply, m, sizeof *m);
            m->fd = -1; /* (answers carry none; if one came, the caller closes it) */
            p->is_done = true;
            pthread_cond_signal(&r->pending_cond[i]);
            break;
        }
    }
    pthread_mutex_unlock(&r->lock);
}

static void *remote_reader(void *arg)
{
    struct auth_remote *r = arg;
    struct channel_msg *m = malloc(sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_lock(&r->lock);
    while (!r->is_stopping) {
        int sock = r->sock;
        unsigned gen = r->generation;
        if (sock < 0) {
            pthread_cond_wait(&r->cond, &r->lock);
            continue;
        }
        pthread_mutex_unlock(&r->lock);
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        int pr = poll(&pfd, 1, 500); /* wakes to notice a new channel or the stop */
        /* (an auth process that closed with requests of ours unread: channel_recv still
         * returns what it sent before, its goodbye among them, then the close) */
        int got = pr > 0 ? channel_recv(sock, m) : 0;
        if (got > 0)
            remote_on_msg(r, m);
        if (got > 0 && m->fd >= 0)
            close(m->fd);
        pthread_mutex_lock(&r->lock);
        if (got < 0 && r->generation == gen) {
            /* the auth process is gone: every call waiting on it fails (temporary);
             * the master starts another and hands us its channel. After its goodbye
             * (a reload replacing it) that is the plan, not news for the admin. */
            if (!(r->has_goodbye && r->goodbye_generation == gen))
                log_warning("auth", "the auth process closed its channel");
            close(r->sock);
            r->sock = -1;
            r->generation++;
            remote_wake_all(r);
        }
    }
    pthread_mutex_unlock(&r->lock);
    free(m);
    return NULL;
}

/* ---- calls ---------------------------------------------------------------------------- */

/* One try of remote_call; *is_lost_r tells that the channel went away (the auth process
 * ended or was replaced) with the request unanswered, *is_unread_r that the process had
 * said goodbye first (so it never read the request). */
static int remote_call_once(struct auth_service *svc, uint8_t type, const char *const *args,
                            size_t n, struct channel_msg *reply, bool *is_lost_r,
                            bool *is_unread_r)
{
    *is_lost_r = false;
    *is_unread_r = false;
    struct auth_remote *r = svc->remote;
    char *payload = malloc(CHANNEL_MAX_PAYLOAD);
    if (!payload)
        return -1;
    size_t len = 4;
    for (size_t i = 0; i < n; i++)
        if (!channel_put_str(payload, &len, args[i])) {
            log_error("auth", "request to the auth process too long: refused");
            free(payload);
            return -1;
        }
    pthread_mutex_lock(&r->lock);
    /* between the end of one auth process and the channel to the next (a restart, or a
     * reload that replaces it: the master hands the new channel over within moments) a
     * call waits a little for it rather than failing at once; nothing was sent yet */
    if (r->sock < 0 && !r->is_stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += AUTH_REMOTE_RECONNECT_S;
        while (r->sock < 0 && !r->is_stopping)
            if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
                break;
    }
    struct auth_pending *p = NULL;
    for (size_t i = 0; i < AUTH_REMOTE_PENDING && !p; i++)
        if (r->pending[i].id == 0)
            p = &r->pending[i];
    if (!p || r->sock < 0) {
        pthread_mutex_unlock(&r->lock);
        free(payload);
        return -1;
    }
    uint32_t id = ++r->next_id;
    if (id == 0)
        id = ++r->next_id;
    *p = (struct auth_pending){.id = id, .reply = reply};
    memcpy(payload, &id, 4);
    int sock = r->sock;
    unsigned gen = r->generation;
    /* SEQPACKET keeps each request whole; a full socket buffer (the auth process is
     * behind) waits a little for room rather than failing at once */
    int sent = -1, send_errno = 0;
    for (int tries = 0; tries < 100 && sent < 0; tries++) {
        sent = channel_send(sock, type, payload, len, -1);
        send_errno = sent < 0 ? errno : 0;
        if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            break;
        if (sent < 0) {
            pthread_mutex_unlock(&r->lock);
            channel_wait_room(sock, 50);
            pthread_mutex_lock(&r->lock);
            if (r->generation != gen)
                break;
        }
    }
    free(payload);
    int rc = -1;
    if (sent < 0 && send_errno != EAGAIN && send_errno != EWOULDBLOCK && r->generation == gen) {
        /* the auth process has closed its end (EPIPE, ECONNREFUSED...) and the reader has
         * not read the end of the channel yet: give it a moment (it reads the goodbye, if
         * one came, before the end). The request never left, so nobody read it: it is
         * asked again of the next process (remote_call) */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        while (r->generation == gen)
            if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
                break;
        *is_lost_r = *is_unread_r = r->generation != gen;
    }
    if (sent == 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += AUTH_REMOTE_TIMEOUT_S;
        while (!p->is_done && r->generation == gen)
            if (pthread_cond_timedwait(&r->pending_cond[p - r->pending], &r->lock, &until) ==
                ETIMEDOUT)
                break;
        rc = p->is_done ? 0 : -1;
        if (rc < 0 && r->generation == gen)
            log_warning("auth", "no answer from the auth process in %d s", AUTH_REMOTE_TIMEOUT_S);
        *is_lost_r = rc < 0 && r->generation != gen;
        *is_unread_r = *is_lost_r && r->has_goodbye && r->goodbye_generation == gen;
    }
    memset(p, 0, sizeof *p);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* Requests that only read: asking again cannot count anything twice. */
static bool remote_is_lookup(uint8_t type)
{
    return type == AUTH_MSG_DOMAIN_IS_LOCAL || type == AUTH_MSG_RESOLVE ||
           type == AUTH_MSG_USER_LOOKUP || type == AUTH_MSG_SENDER_ALLOWED ||
           type == AUTH_MSG_PENALTY_CHECK || type == AUTH_MSG_DOMAIN_LIST ||
           type == AUTH_MSG_RCPT_LOOKUP;
}

/* Send a request of type with the given strings and wait for its answer in *reply.
 * 0 answered, -1 no auth process, no answer in time, or the request did not fit. A
 * request whose auth process went away unanswered is asked once more of the next one
 * when that cannot count or spend anything twice:
 *   - a lookup, always (it only reads);
 *   - any request, a login, a failed-login report or a token redemption too, when the
 *     process said goodbye first (a reload replacing it, server.c): it had answered
 *     every request it read, so this one was never read: no login was counted, and the
 *     token was not spent and is in the new process's table (it was handed over). A
 *     token redemption lost without a goodbye (a crash) is not asked again: the old
 *     process may have spent it, and the new one does not know it anyway. */
static int remote_call(struct auth_service *svc, uint8_t type, const char *const *args, size_t n,
                       struct channel_msg *reply)
{
    bool is_lost, is_unread;
    int rc = remote_call_once(svc, type, args, n, reply, &is_lost, &is_unread);
    if (rc < 0 && is_lost && (is_unread || remote_is_lookup(type)))
        rc = remote_call_once(svc, type, args, n, reply, &is_lost, &is_unread);
    return rc;
}

/* The answer's return code and the position of its first string. */
static int reply_rc(const struct channel_msg *m, size_t *pos)
{
    int32_t rc;
    if (m->len < 8)
        return -1;
    memcpy(&rc, m->payload + 4, 4);
    *pos = 8;
    return rc;
}

static struct channel_msg *reply_new(void)
{
    struct channel_msg *m = malloc(sizeof *m);
    if (m) {
        m->fd = -1;
        m->len = 0; /* a failed call leaves it so: remote_login wipes m->len bytes */
    }
    return m;
}

static void reply_free(struct channel_msg *m)
{
    if (m && m->fd >= 0)
        close(m->fd);
    free(m);
}

/* A call whose answer is just the code (and -1 when there is none). */
static int remote_rc(struct auth_service *svc, uint8_t type, const char *const *args, size_t n)
{
    struct channel_msg *m = reply_new();
    size_t pos;
    int rc = m && remote_call(svc, type, args, n, m) == 0 ? reply_rc(m, &pos) : -1;
    reply_free(m);
    return rc;
}

/* ---- the auth_* calls ----------------------------------------------------------------- */

int auth_remote_domain_is_local(struct auth_service *svc, const char *domain)
{
    const char *a[] = {domain};
    return remote_rc(svc, AUTH_MSG_DOMAIN_IS_LOCAL, a, 1);
}

int auth_remote_resolve(struct auth_service *svc, const char *address, struct auth_targets *t)
{
    memset(t, 0, sizeof *t);
    const char *a[] = {address};
    struct channel_msg *m = reply_new();
    size_t pos = 0;
    int rc = m && remote_call(svc, AUTH_MSG_RESOLVE, a, 1, m) == 0 ? reply_rc(m, &pos) : -1;
    if (rc == 1) {
        /* "n_local", the local addresses, then the remote ones */
        const char *count = channel_get_str(m, &pos);
        size_t n_local = count ? strtoul(count, NULL, 10) : 0;
        size_t cap = m->len / 2 + 1; /* every address takes at least two bytes */
        t->local = calloc(n_local < cap ? n_local + 1 : 1, sizeof *t->local);
        t->remote = calloc(cap, sizeof *t->remote);
        const char *s;
        while (t->local && t->remote && (s = channel_get_str(m, &pos)) != NULL) {
            char *copy = strdup(s);
            if (!copy)
                break;
            if (t->n_local < n_local && t->n_local < cap)
                t->local[t->n_local++] = copy;
            else
                t->remote[t->n_remote++] = copy;
        }
        if (!t->local || !t->remote || t->n_local != n_local) {
            auth_targets_free(t);
            rc = -1;
        }
    }
    reply_free(m);
    return rc;
}

int auth_remote_user_lookup(struct auth_service *svc, const char *login, struct auth_user *u_r)
{
    memset(u_r, 0, sizeof *u_r);
    const char *a[] = {login};
    struct channel_msg *m = reply_new();
    size_t pos = 0;
    int rc = m && remote_call(svc, AUTH_MSG_USER_LOOKUP, a, 1, m) == 0 ? reply_rc(m, &pos) : -1;
    if (rc == 1) {
        const char *address = channel_get_str(m, &pos), *home = channel_get_str(m, &pos);
        const char *quota = channel_get_str(m, &pos), *enabled = channel_get_str(m, &pos);
        if (!address || !home || !quota || !enabled) {
            rc = -1;
        } else {
            u_r->address = strdup(address);
            u_r->home = strdup(home);
            u_r->quota = strtoull(quota, NULL, 10);
            u_r->enabled = strcmp(enabled, "1") == 0;
            if (!u_r->address || !u_r->home) {
                auth_user_free(u_r);
                rc = -1;
            }
        }
    }
    reply_free(m);
    return rc;
}

/* Copy the next string of m, or NULL (and *is_bad) when it is missing or memory is out. */
static char *reply_dup(const struct channel_msg *m, size_t *pos, bool *is_bad)
{
    const char *s = channel_get_str(m, pos);
    char *copy = s ? strdup(s) : NULL;
    if (!copy)
        *is_bad = true;
    return copy;
}

/* The answer to AUTH_MSG_RCPT_LOOKUP: rc is_local; when 1, "resolved"; when that is 1,
 * "n_local n_remote", the local then the remote addresses, then per local address its
 * lookup result and, when 1, address, home, quota, enabled (server.c). */
void auth_remote_rcpt_lookup(struct auth_service *svc, const char *domain, const char *address,
                             struct auth_rcpt *r)
{
    memset(r, 0, sizeof *r);
    const char *a[] = {domain, address};
    struct channel_msg *m = reply_new();
    size_t pos = 0;
    r->is_local = m && remote_call(svc, AUTH_MSG_RCPT_LOOKUP, a, 2, m) == 0 ? reply_rc(m, &pos) : -1;
    bool is_bad = false;
    if (r->is_local == 1) {
        const char *resolved = channel_get_str(m, &pos);
        r->resolved = resolved ? atoi(resolved) : -1;
        is_bad = !resolved;
    }
    if (!is_bad && r->is_local == 1 && r->resolved == 1) {
        const char *counts = channel_get_str(m, &pos);
        size_t cap = m->len / 2 + 1; /* every string takes at least two bytes */
        unsigned long n_local = 0, n_remote = 0;
        if (!counts || sscanf(counts, "%lu %lu", &n_local, &n_remote) != 2 || n_local > cap ||
            n_remote > cap)
            is_bad = true;
        if (!is_bad) {
            r->t.local = calloc(n_local + 1, sizeof *r->t.local);
            r->t.remote = calloc(n_remote + 1, sizeof *r->t.remote);
            r->found = calloc(n_local + 1, sizeof *r->found);
            r->users = calloc(n_local + 1, sizeof *r->users);
            is_bad = !r->t.local || !r->t.remote || !r->found || !r->users;
        }
        for (size_t i = 0; !is_bad && i < n_local; i++)
            if ((r->t.local[i] = reply_dup(m, &pos, &is_bad)))
                r->t.n_local++;
        for (size_t i = 0; !is_bad && i < n_remote; i++)
            if ((r->t.remote[i] = reply_dup(m, &pos, &is_bad)))
                r->t.n_remote++;
        for (size_t i = 0; !is_bad && i < n_local; i++) {
            const char *found = channel_get_str(m, &pos);
            r->found[i] = found ? atoi(found) : -1;
            if (!found || r->found[i] < -1 || r->found[i] > 2) {
                is_bad = true;
            } else if (r->found[i] == 1) {
                struct auth_user *u = &r->users[i];
                u->address = reply_dup(m, &pos, &is_bad);
                u->home = reply_dup(m, &pos, &is_bad);
                const char *quota = channel_get_str(m, &pos), *enabled = channel_get_str(m, &pos);
                is_bad = is_bad || !quota || !enabled;
                u->quota = quota ? strtoull(quota, NULL, 10) : 0;
                u->enabled = enabled && strcmp(enabled, "1") == 0;
            }
        }
    }
    if (is_bad) { /* malformed or out of memory: as a directory error */
        auth_rcpt_free(r);
        r->is_local = -1;
    }
    reply_free(m);
}

bool auth_remote_sender_allowed(struct auth_service *svc, const char *user, const char *from)
{
    const char *a[] = {user, from};
    return remote_rc(svc, AUTH_MSG_SENDER_ALLOWED, a, 2) == 1;
}

/* A login answer: rc, the canonical user and, when asked (binding), the token. */
static int remote_login(struct auth_service *svc, uint8_t type, const char *const *a, size_t n,
                        char **user_r, char *token_r)
{
    *user_r = NULL;
    struct channel_msg *m = reply_new();
    size_t pos = 0;
    int rc = m && remote_call(svc, type, a, n, m) == 0 ? reply_rc(m, &pos) : -1;
    if (rc == 1) {
        const char *user = channel_get_str(m, &pos);
        if (!user || !(*user_r = strdup(user)))
            rc = -1;
        const char *token = token_r ? channel_get_str(m, &pos) : NULL;
        if (token_r && token && strlen(token) < AUTH_TOKEN_SIZE)
            memcpy(token_r, token, strlen(token) + 1);
    }
    if (m)
        explicit_bzero(m->payload, m->len);
    reply_free(m);
    return rc;
}

int auth_remote_login_password(struct auth_service *svc, const char *login, const char *password,
                               const char *binding, char **user_r, char *token_r)
{
    const char *a[] = {login, password, binding};
    return remote_login(svc, AUTH_MSG_LOGIN_PASSWORD, a, binding ? 3 : 2, user_r,
                        binding ? token_r : NULL);
}

int auth_remote_login_apop(struct auth_service *svc, const char *login, const char *timestamp,
                           const char *digest_hex, const char *binding, char **user_r,
                           char *token_r)
{
    const char *a[] = {login, timestamp, digest_hex, binding};
    return remote_login(svc, AUTH_MSG_LOGIN_APOP, a, binding ? 4 : 3, user_r,
                        binding ? token_r : NULL);
}

int auth_remote_login_redeem(struct auth_service *svc, const char *token, const char *user,
                             const char *binding)
{
    const char *a[] = {token, user, binding};
    return remote_rc(svc, AUTH_MSG_TOKEN_REDEEM, a, 3);
}

int auth_remote_domain_list(struct auth_service *svc, void (*cb)(const char *domain, void *arg),
                            void *arg)
{
    struct channel_msg *m = reply_new();
    size_t pos = 0;
    int rc = m && remote_call(svc, AUTH_MSG_DOMAIN_LIST, NULL, 0, m) == 0 ? reply_rc(m, &pos) : -1;
    const char *d;
    while (rc == 0 && (d = channel_get_str(m, &pos)) != NULL)
        cb(d, arg);
    reply_free(m);
    return rc;
}

/* The query's strings, in PENALTY_* order (auth_wire.h). */
static size_t penalty_args(const struct penalty_query *q, const char *a[5], bool is_success)
{
    a[0] = q->ip ? q->ip : "";
    a[1] = q->account ? q->account : "";
    a[2] = q->is_trusted ? "1" : "0";
    a[3] = q->service ? q->service : "";
    a[4] = is_success ? "1" : "0";
    return 5;
}

void auth_remote_penalty_check(struct auth_service *svc, const struct penalty_query *q,
                               struct penalty_answer *a_r)
{
    *a_r = (struct penalty_answer){.verdict = PENALTY_ALLOW};
    const char *a[5];
    (void)penalty_args(q, a, false);
    struct channel_msg *m = reply_new();
    size_t pos = 0;
    int rc = m && remote_call(svc, AUTH_MSG_PENALTY_CHECK, a, 4, m) == 0 ? reply_rc(m, &pos) : -1;
    if (rc == PENALTY_BLOCKED) {
        a_r->verdict = PENALTY_BLOCKED;
    } else if (rc == PENALTY_ALLOW) {
        const char *delay = channel_get_str(m, &pos);
        a_r->delay_ms = delay ? strtoull(delay, NULL, 10) : 0;
    }
    reply_free(m);
}

void auth_remote_penalty_report(struct auth_service *svc, const struct penalty_query *q,
                                bool is_success, struct penalty_answer *a_r)
{
    *a_r = (struct penalty_answer){.verdict = PENALTY_ALLOW};
    const char *a[5];
    int rc = remote_rc(svc, AUTH_MSG_PENALTY_REPORT, a, penalty_args(q, a, is_success));
    if (rc == PENALTY_BLOCKED)
        a_r->verdict = PENALTY_BLOCKED;
}

int auth_remote_login_too_soon(struct auth_service *svc, const char *user, unsigned delay)
{
    char d[16];
    snprintf(d, sizeof d, "%u", delay);
    const char *a[] = {user, d};
    return remote_rc(svc, AUTH_MSG_LOGIN_TOO_SOON, a, 2);
}

bool auth_remote_mechanism_flags(struct auth_service *svc, bool *has_cram_r, bool *has_scram_r,
                                 bool *has_apop_r)
{
    struct auth_remote *r = svc->remote;
    pthread_mutex_lock(&r->lock);
    bool has = r->has_mechs;
    *has_cram_r = r->has_cram;
    *has_scram_r = r->has_scram;
    *has_apop_r = r->has_apop;
    pthread_mutex_unlock(&r->lock);
    return has;
}

enum auth_sasl_status auth_remote_sasl_step(struct auth_service *svc, uint64_t *sasl_id,
                                            const char *mech, const char *hostname,
                                            const struct auth_peer *peer, const char *binding,
                                            const char *response, char **challenge_r,
                                            char *user, size_t user_size, char *attempted,
                                            size_t attempted_size, char *token)
{
    *challenge_r = NULL;
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)*sasl_id);
    const char *a[] = {id,
                       mech,
                       hostname,
                       peer->service ? peer->service : "",
                       peer->ip ? peer->ip : "",
                       peer->is_tls ? "1" : "0",
                       peer->is_loopback ? "1" : "0",
                       response ? "1" : "0",
                       response ? response : "",
                       binding};
    struct channel_msg *m = reply_new();
    size_t pos = 0;
    int rc = m && remote_call(svc, AUTH_MSG_SASL_STEP, a, binding ? 10 : 9, m) == 0
                 ? reply_rc(m, &pos)
                 : -1;
    enum auth_sasl_status st = AUTH_SASL_TEMPFAIL;
    if (rc >= 0) {
        const char *new_id = channel_get_str(m, &pos), *has_ch = channel_get_str(m, &pos);
        const char *ch = channel_get_str(m, &pos), *u = channel_get_str(m, &pos);
        const char *att = channel_get_str(m, &pos);
        if (new_id && has_ch && ch && u && att) {
            st = (enum auth_sasl_status)rc;
            *sasl_id = strtoull(new_id, NULL, 10);
            if (strcmp(has_ch, "1") == 0)
                *challenge_r = strdup(ch);
            snprintf(user, user_size, "%s", u);
            snprintf(attempted, attempted_size, "%s", att);
            /* a login process's exchange: the token comes with the success */
            const char *tok = channel_get_str(m, &pos);
            if (tok && st == AUTH_SASL_OK && strlen(tok) < AUTH_TOKEN_SIZE)
                memcpy(token, tok, strlen(tok) + 1);
        }
    }
    if (m)
        explicit_bzero(m->payload, m->len);
    reply_free(m);
    return st;
}

void auth_remote_sasl_free(struct auth_service *svc, uint64_t sasl_id)
{
    struct auth_remote *r = svc->remote;
    char payload[64];
    size_t len = 4;
    uint32_t zero = 0;
    memcpy(payload, &zero, 4);
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)sasl_id);
    channel_put_str(payload, &len, id);
    pthread_mutex_lock(&r->lock);
    if (r->sock >= 0)
        (void)channel_send(r->sock, AUTH_MSG_SASL_FREE, payload, len, -1); /* no answer */
    pthread_mutex_unlock(&r->lock);
}

/* ---- opening ---------------------------------------------------------------------------- */

struct auth_service *auth_service_open_remote(const struct config *cfg, int sock, char **error_r)
{
    struct auth_service *svc = calloc(1, sizeof *svc);
    struct auth_remote *r = calloc(1, sizeof *r);
    if (!svc || !r) {
        free(svc);
        free(r);
        *error_r = strdup("out of memory");
        return NULL;
    }
    svc->allow_plaintext = cfg->allow_plaintext;
    svc->remote = r;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    for (size_t i = 0; i < AUTH_REMOTE_PENDING; i++)
        pthread_cond_init(&r->pending_cond[i], NULL);
    r->sock = sock;
    if (pthread_create(&r->reader, NULL, remote_reader, r) != 0) {
        *error_r = strdup("cannot start the auth reader thread");
        auth_service_close(svc);
        return NULL;
    }
    r->has_reader = true;
    /* the mechanism list the auth process announces first: wait a moment for it so the
     * first greeting advertises the right SASL mechanisms */
    pthread_mutex_lock(&r->lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    while (!r->has_mechs)
        if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
            break;
    bool has = r->has_mechs;
    pthread_mutex_unlock(&r->lock);
    if (!has)
        log_warning("auth", "the auth process has not announced its mechanisms yet");
    return svc;
}

void auth_service_set_channel(struct auth_service *svc, int sock)
{
    struct auth_remote *r = svc->remote;
    if (!r) {
        close(sock);
        return;
    }
    pthread_mutex_lock(&r->lock);
    if (r->sock >= 0)
        close(r->sock);
    r->sock = sock;
    r->generation++;
    remote_wake_all(r);
    pthread_mutex_unlock(&r->lock);
}

void auth_remote_close(struct auth_service *svc)
{
    struct auth_remote *r = svc->remote;
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->is_stopping = true;
    remote_wake_all(r);
    pthread_mutex_unlock(&r->lock);
    if (r->has_reader)
        pthread_join(r->reader, NULL);
    if (r->sock >= 0)
        close(r->sock);
    pthread_cond_destroy(&r->cond);
    for (size_t i = 0; i < AUTH_REMOTE_PENDING; i++)
        pthread_cond_destroy(&r->pending_cond[i]);
    pthread_mutex_destroy(&r->lock);
    free(r);
    svc->remote = NULL;
}
