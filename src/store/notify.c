/*
 * notify.c - in-process change notifications (new mail, flags, expunges) so IDLE and
 * NOOP sessions learn of changes at once.
 *
 * Subscriptions live on the loop thread. Store functions run on workpool threads, so
 * they call store_notify_publish_any_thread(): on the loop thread it dispatches at once;
 * elsewhere it queues the event and wakes the loop through a pipe registered by
 * store_notify_init(). Without store_notify_init() (CLI, tests) events from other
 * threads are delivered at the next loop-thread publish/subscribe.
 *
 * Across processes (one master, several workers): every event that starts in this
 * process is also handed to the forward function (store_notify_set_forward), which sends
 * it to the master for the other processes; one that arrives from another process is
 * injected with store_notify_publish_remote() and not forwarded again.
 */
#include "store/store-private.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define NOTIFY_MAX_PENDING 4096

/* Subscriptions hash by user (case-folded), so an event visits only its user's bucket:
 * with 18,000 IDLE sessions in a worker a scan of them all per event was half the
 * worker's CPU for a round of notifications. */
#define NOTIFY_BUCKETS 4096

struct notify_sub {
    struct notify_sub *next, *prev; /* in its bucket */
    struct notify_sub *next_dead;   /* unsubscribed during a dispatch: freed after it */
    unsigned bucket;
    char *user;
    store_notify_fn *fn;
    void *arg;
    bool is_dead;
};

struct notify_event {
    char *user, *mailbox;
};

static pthread_mutex_t notify_lock = PTHREAD_MUTEX_INITIALIZER;
static struct notify_sub *notify_buckets[NOTIFY_BUCKETS];
static struct notify_sub *notify_graveyard;
static unsigned notify_dispatch_depth;
static _Atomic bool notify_has_loop_thread; /* read by worker threads */
static pthread_t notify_loop_thread;
static struct notify_event notify_pending[NOTIFY_MAX_PENDING];
static size_t notify_n_pending;
static int notify_pipe[2] = {-1, -1};
static struct event *notify_event;
static store_notify_forward_fn *notify_forward;

static bool notify_on_loop_thread(void)
{
    return notify_has_loop_thread && pthread_equal(pthread_self(), notify_loop_thread);
}

static void notify_claim_loop_thread(void)
{
    if (!notify_has_loop_thread) {
        notify_loop_thread = pthread_self();
        notify_has_loop_thread = true;
    }
}

/* FNV-1a of the case-folded user: its bucket. */
static unsigned notify_bucket(const char *user)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)user; *p; p++) {
        h ^= (uint32_t)(*p >= 'A' && *p <= 'Z' ? *p + ('a' - 'A') : *p);
        h *= 16777619u;
    }
    return h % NOTIFY_BUCKETS;
}

static void notify_unlink(struct notify_sub *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        notify_buckets[s->bucket] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s->user);
    free(s);
}

/* Free the subscriptions unsubscribed during a dispatch. */
static void notify_sweep(void)
{
    while (notify_graveyard) {
        struct notify_sub *s = notify_graveyard;
        notify_graveyard = s->next_dead;
        notify_unlink(s);
    }
}

static void notify_dispatch(const char *user, const char *mailbox, bool is_local)
{
    if (is_local && notify_forward)
        notify_forward(user, mailbox);
    notify_dispatch_depth++;
    /* a callback may subscribe (at the bucket's head: not visited) or unsubscribe (only
     * marked until the dispatch is over), never unlink what this walk stands on */
    for (struct notify_sub *s = notify_buckets[notify_bucket(user)]; s; s = s->next)
        if (!s->is_dead && strcasecmp(s->user, user) == 0)
            s->fn(user, mailbox, s->arg);
    if (--notify_dispatch_depth == 0)
        notify_sweep();
}

/* Deliver events queued by other threads (loop thread). */
static void notify_drain(void)
{
    for (;;) {
        pthread_mutex_lock(&notify_lock);
        if (notify_n_pending == 0) {
            pthread_mutex_unlock(&notify_lock);
            return;
        }
        struct notify_event ev = notify_pending[--notify_n_pending];
        pthread_mutex_unlock(&notify_lock);
        notify_dispatch(ev.user, ev.mailbox, true);
        free(ev.user);
        free(ev.mailbox);
    }
}

static void notify_pipe_cb(evutil_socket_t fd, short what, void *arg)
{
    char drain[256];
    while (read(fd, drain, sizeof drain) > 0)
        ;
    notify_drain();
}

/* Call once from the loop thread with its event base (cli serve); NULL detaches. */
int store_notify_init(struct event_base *base)
{
    if (!base) {
        /* shutdown: detach from the loop before its base is freed */
        if (notify_event)
            event_free(notify_event);
        notify_event = NULL;
        for (int i = 0; i < 2; i++)
            if (notify_pipe[i] >= 0)
                close(notify_pipe[i]);
        notify_pipe[0] = notify_pipe[1] = -1;
        return 0;
    }
    notify_has_loop_thread = false;
    notify_claim_loop_thread();
    if (notify_pipe[0] >= 0)
        return 0;
    if (pipe2(notify_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    notify_event = event_new(base, notify_pipe[0], EV_READ | EV_PERSIST, notify_pipe_cb, NULL);
    if (!notify_event || event_add(notify_event, NULL) < 0)
        return -1;
    return 0;
}

void *store_notify_subscribe(const char *user, store_notify_fn *fn, void *arg)
{
    notify_claim_loop_thread();
    notify_drain();
    struct notify_sub *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->user = strdup(user);
    if (!s->user) {
        free(s);
        return NULL;
    }
    s->fn = fn;
    s->arg = arg;
    s->bucket = notify_bucket(user);
    s->next = notify_buckets[s->bucket];
    if (s->next)
        s->next->prev = s;
    notify_buckets[s->bucket] = s;
    return s;
}

void store_notify_unsubscribe(void *subscription)
{
    struct notify_sub *s = subscription;
    if (!s || s->is_dead)
        return;
    if (notify_dispatch_depth == 0) {
        notify_unlink(s);
        return;
    }
    s->is_dead = true;
    s->next_dead = notify_graveyard;
    notify_graveyard = s;
}

void store_notify_publish(const char *user, const char *mailbox)
{
    if (!notify_on_loop_thread() && notify_has_loop_thread) {
        store_notify_publish_any_thread(user, mailbox);
        return;
    }
    notify_claim_loop_thread();
    notify_drain();
    notify_dispatch(user, mailbox, true);
}

void store_notify_set_forward(store_notify_forward_fn *fn)
{
    notify_forward = fn;
}

void store_notify_publish_remote(const char *user, const char *mailbox)
{
    if (!user || !mailbox)
        return;
    notify_claim_loop_thread();
    notify_drain();
    notify_dispatch(user, mailbox, false);
}

void store_notify_publish_any_thread(const char *user, const char *mailbox)
{
    if (!user || !mailbox || !notify_has_loop_thread)
        return; /* nobody subscribed yet in this process */
    if (notify_on_loop_thread()) {
        notify_drain();
        notify_dispatch(user, mailbox, true);
        return;
    }
    pthread_mutex_lock(&notify_lock);
    bool is_dup = false;
    for (size_t i = 0; i < notify_n_pending && !is_dup; i++)
        is_dup = strcasecmp(notify_pending[i].user, user) == 0 &&
                 strcmp(notify_pending[i].mailbox, mailbox) == 0;
    /* When the queue is full the event is dropped: sessions also re-sync on their
     * NOOP/IDLE tick, so a lost wake-up only delays, never loses, a change. */
    if (!is_dup && notify_n_pending < NOTIFY_MAX_PENDING) {
        char *u = strdup(user), *m = strdup(mailbox);
        if (u && m) {
            notify_pending[notify_n_pending].user = u;
            notify_pending[notify_n_pending].mailbox = m;
            notify_n_pending++;
        } else {
            free(u);
            free(m);
        }
    }
    pthread_mutex_unlock(&notify_lock);
    if (notify_pipe[1] >= 0) {
        char one = 1;
        ssize_t r = write(notify_pipe[1], &one, 1);
        (void)r; /* a full pipe already means a wake-up is pending */
    }
}
