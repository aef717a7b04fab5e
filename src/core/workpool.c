/*
 * workpool.c - a pthread pool for blocking work whose completions run on the event loop
 * thread (see workpool.h).
 *
 * Jobs go into a FIFO guarded by a mutex; worker threads take them, run work(), and put
 * them on a completion list. The first completion to land on an empty list writes to an
 * eventfd that the loop watches; the loop then runs every done() in completion order.
 * This needs no libevent threading support (evthread_use_pthreads) and costs one
 * write/read per batch of completions, not per job.
 */
#include "core/workpool.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct workpool_job {
    workpool_fn *work;
    workpool_fn *done;
    void *arg;
    struct workpool_job *next;
    /* a delayed job: its timer and its place in the pool's delayed list (loop thread) */
    struct workpool *pool;
    struct event *timer;
    struct workpool_job *delayed_prev, *delayed_next;
};

struct job_list {
    struct workpool_job *head, *tail;
};

struct workpool {
    struct event_base *base;
    pthread_mutex_t lock;
    pthread_cond_t has_work;
    pthread_cond_t has_exited; /* a thread left workpool_thread (shutdown) */
    unsigned n_alive;          /* threads not yet out of workpool_thread */
    size_t n_busy;             /* jobs queued or running (under lock) */
    struct job_list pending;   /* waiting for a thread */
    struct job_list completed; /* work done, done() not yet run */
    bool is_stopping;
    bool is_joined;
    int notify_fd;
    struct event *notify_ev;
    pthread_t *threads;
    unsigned n_threads;
    size_t n_pending; /* submitted, done() not yet run; loop thread only */
    struct workpool_job *delayed; /* waiting for their timer; loop thread only */
};

static void job_list_push(struct job_list *l, struct workpool_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct workpool_job *job_list_pop(struct job_list *l)
{
    struct workpool_job *j = l->head;
    if (j) {
        l->head = j->next;
        if (!l->head)
            l->tail = NULL;
    }
    return j;
}

static void *workpool_thread(void *p)
{
    struct workpool *pool = p;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        struct workpool_job *j = job_list_pop(&pool->pending);
        if (!j) {
            if (pool->is_stopping)
                break;
            pthread_cond_wait(&pool->has_work, &pool->lock);
            continue;
        }
        pthread_mutex_unlock(&pool->lock);
        if (j->work)
            j->work(j->arg);
        pthread_mutex_lock(&pool->lock);
        pool->n_busy--;
        bool was_empty = pool->completed.head == NULL;
        job_list_push(&pool->completed, j);
        if (was_empty) {
            uint64_t one = 1;
            ssize_t w = write(pool->notify_fd, &one, sizeof one);
            (void)w; /* an eventfd counter cannot overflow with our writes */
        }
    }
    pool->n_alive--;
    pthread_cond_broadcast(&pool->has_exited);
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Run done() for every finished job; on the loop thread. */
static void workpool_run_completions(struct workpool *pool)
{
    pthread_mutex_lock(&pool->lock);
    struct job_list done = pool->completed;
    pool->completed.head = pool->completed.tail = NULL;
    pthread_mutex_unlock(&pool->lock);
    struct workpool_job *j;
    while ((j = job_list_pop(&done)) != NULL) {
        pool->n_pending--;
        if (j->done)
            j->done(j->arg);
        free(j);
    }
}

static void workpool_on_notify(evutil_socket_t fd, short what, void *p)
{
    uint64_t n;
    ssize_t r = read(fd, &n, sizeof n);
    (void)r;
    workpool_run_completions(p);
}

struct workpool *workpool_create(struct event_base *base, unsigned threads)
{
    if (threads == 0)
        threads = 1;
    struct workpool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->base = base;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->has_work, NULL);
    pthread_cond_init(&pool->has_exited, NULL);
    pool->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (pool->notify_fd < 0)
        goto fail;
    pool->notify_ev =
        event_new(base, pool->notify_fd, EV_READ | EV_PERSIST, workpool_on_notify, pool);
    if (!pool->notify_ev || event_add(pool->notify_ev, NULL) < 0)
        goto fail;
    pool->threads = calloc(threads, sizeof *pool->threads);
    if (!pool->threads)
        goto fail;
    pthread_mutex_lock(&pool->lock);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&pool->threads[i], NULL, workpool_thread, pool) != 0)
            break;
        pool->n_threads++;
        pool->n_alive++;
    }
    pthread_mutex_unlock(&pool->lock);
    if (pool->n_threads == 0)
        goto fail;
    return pool;
fail:
    log_error("master", "workpool: cannot create: %m");
    if (pool->notify_ev)
        event_free(pool->notify_ev);
    if (pool->notify_fd >= 0)
        close(pool->notify_fd);
    free(pool->threads);
    pthread_cond_destroy(&pool->has_work);
    pthread_cond_destroy(&pool->has_exited);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    return NULL;
}

void workpool_submit(struct workpool *pool, workpool_fn *work, workpool_fn *done, void *arg)
{
    struct workpool_job *j = malloc(sizeof *j);
    if (!j)
        log_fatal("master", "workpool: out of memory");
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&pool->lock);
    if (pool->is_joined) {
        /* Shutting down and no threads left: a done() running in workpool_destroy
         * submitted more work. Run it here so nothing is lost or left dangling. */
        pthread_mutex_unlock(&pool->lock);
        if (work)
            work(arg);
        if (done)
            done(arg);
        free(j);
        return;
    }
    job_list_push(&pool->pending, j);
    pool->n_busy++;
    pthread_cond_signal(&pool->has_work);
    pthread_mutex_unlock(&pool->lock);
    pool->n_pending++;
}

/* Move a delayed job into the queue (its timer fired, or the pool is stopping). */
static void workpool_release_delayed(struct workpool_job *j)
{
    struct workpool *pool = j->pool;
    if (j->delayed_prev)
        j->delayed_prev->delayed_next = j->delayed_next;
    else
        pool->delayed = j->delayed_next;
    if (j->delayed_next)
        j->delayed_next->delayed_prev = j->delayed_prev;
    event_free(j->timer);
    j->timer = NULL;
    pool->n_pending--; /* workpool_submit counts it again */
    workpool_fn *work = j->work, *done = j->done;
    void *arg = j->arg;
    free(j);
    workpool_submit(pool, work, done, arg);
}

static void workpool_on_delay(evutil_socket_t fd, short what, void *arg)
{
    workpool_release_delayed(arg);
}

void workpool_submit_delayed(struct workpool *pool, unsigned delay_ms, workpool_fn *work,
                             workpool_fn *done, void *arg)
{
    if (delay_ms == 0) {
        workpool_submit(pool, work, done, arg);
        return;
    }
    struct workpool_job *j = calloc(1, sizeof *j);
    if (!j)
        log_fatal("master", "workpool: out of memory");
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->pool = pool;
    j->timer = evtimer_new(pool->base, workpool_on_delay, j);
    if (!j->timer)
        log_fatal("master", "workpool: out of memory");
    struct timeval tv = {.tv_sec = delay_ms / 1000, .tv_usec = (delay_ms % 1000) * 1000};
    evtimer_add(j->timer, &tv);
    j->delayed_next = pool->delayed;
    if (pool->delayed)
        pool->delayed->delayed_prev = j;
    pool->delayed = j;
    pool->n_pending++;
}

void workpool_expedite(struct workpool *pool)
{
    while (pool && pool->delayed)
        workpool_release_delayed(pool->delayed);
}

size_t workpool_pending(const struct workpool *pool)
{
    return pool ? pool->n_pending : 0;
}

size_t workpool_busy(struct workpool *pool)
{
    if (!pool)
        return 0;
    pthread_mutex_lock(&pool->lock);
    size_t n = pool->n_busy;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

void workpool_destroy(struct workpool *pool)
{
    (void)workpool_destroy_by(pool, UINT64_MAX);
}

bool workpool_destroy_by(struct workpool *pool, uint64_t deadline_ms)
{
    if (!pool)
        return true;
    workpool_expedite(pool); /* delayed jobs run now: nothing waits out a delay */
    pthread_mutex_lock(&pool->lock);
    pool->is_stopping = true;
    pthread_cond_broadcast(&pool->has_work);
    /* Threads drain the pending queue before they exit; wait for that, but not past the
     * deadline (a job stuck on a dead disk or peer must not hang the shutdown). */
    while (pool->n_alive > 0) {
        /* With nothing queued or running the threads are only leaving (nothing can block
         * them): wait for that whatever the deadline, so that a shutdown whose sessions
         * used up the time still ends cleanly instead of as "jobs still running". */
        if (deadline_ms == UINT64_MAX || pool->n_busy == 0) {
            pthread_cond_wait(&pool->has_exited, &pool->lock);
            continue;
        }
        uint64_t now = util_now_ms();
        if (now >= deadline_ms)
            break;
        /* has_exited uses CLOCK_REALTIME: wait in slices of the remaining time */
        uint64_t left = deadline_ms - now;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(left / 1000);
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&pool->has_exited, &pool->lock, &ts);
    }
    bool is_done = pool->n_alive == 0;
    pthread_mutex_unlock(&pool->lock);
    if (!is_done)
        return false;
    for (unsigned i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_mutex_lock(&pool->lock);
    pool->is_joined = true;
    pthread_mutex_unlock(&pool->lock);
    workpool_run_completions(pool);
    event_free(pool->notify_ev);
    close(pool->notify_fd);
    free(pool->threads);
    pthread_cond_destroy(&pool->has_work);
    pthread_cond_destroy(&pool->has_exited);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    return true;
}
