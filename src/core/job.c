/*
 * job.c - session handles and typed jobs over the workpool (job.h).
 *
 * Handles: a slot table grown by doubling. A handle is (generation << 32) | (slot + 1);
 * removing a session bumps the slot's generation, so an old handle never finds the next
 * session that takes the slot. Each slot lists the jobs of its session that are in
 * flight, so that removing the session can cancel the ones not started yet.
 *
 * Everything here but job_run_work() runs on the loop thread.
 */
#include "core/job.h"
#include "core/log.h"
#include "core/workpool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct job_slot {
    void *session;      /* NULL when free */
    uint32_t gen;       /* bumped when the session is removed */
    uint32_t next_free; /* free list: index + 1, 0 = end */
    struct job *jobs;   /* jobs of this session in flight */
};

static struct job_slot *slots;
static uint32_t n_slots, free_head, n_sessions;
static size_t n_in_flight;

static pthread_t loop_thread;
static bool has_loop_thread;

void job_loop_thread_set(void)
{
    loop_thread = pthread_self();
    has_loop_thread = true;
}

bool job_on_loop_thread(void)
{
    return !has_loop_thread || pthread_equal(pthread_self(), loop_thread);
}

void job_assert_loop_thread(const char *what)
{
    if (job_on_loop_thread())
        return;
    /* A pool thread reached a loop-owned object: the use-after-free class of issue 9.
     * Die loudly here rather than corrupt memory later. */
    log_error("master", "BUG: %s called off the event loop thread (the thread rule)", what);
    fprintf(stderr, "tern: BUG: %s called off the event loop thread\n", what);
    abort();
}

/* ---- session handles ---------------------------------------------------------------- */

static struct job_slot *job_slot_of(uint64_t handle)
{
    uint32_t index = (uint32_t)(handle & 0xffffffffu);
    uint32_t gen = (uint32_t)(handle >> 32);
    if (index == 0 || index > n_slots)
        return NULL;
    struct job_slot *slot = &slots[index - 1];
    if (slot->gen != gen || !slot->session)
        return NULL;
    return slot;
}

uint64_t job_session_add(void *session)
{
    job_assert_loop_thread("job_session_add");
    if (!free_head) {
        uint32_t grown = n_slots ? n_slots * 2 : 64;
        if (grown <= n_slots)
            log_fatal("master", "session table: too many sessions");
        struct job_slot *s = realloc(slots, (size_t)grown * sizeof *s);
        if (!s)
            log_fatal("master", "session table: out of memory");
        slots = s;
        /* new slots join the free list in index order */
        for (uint32_t i = grown; i > n_slots; i--) {
            slots[i - 1] = (struct job_slot){.gen = 1, .next_free = free_head};
            free_head = i;
        }
        n_slots = grown;
    }
    uint32_t index = free_head;
    struct job_slot *slot = &slots[index - 1];
    free_head = slot->next_free;
    slot->next_free = 0;
    slot->session = session;
    slot->jobs = NULL;
    n_sessions++;
    return ((uint64_t)slot->gen << 32) | index;
}

void job_session_remove(uint64_t handle)
{
    job_assert_loop_thread("job_session_remove");
    struct job_slot *slot = job_slot_of(handle);
    if (!slot)
        return;
    /* Cancel what has not started; what runs finishes and finds no session. */
    for (struct job *j = slot->jobs, *next; j; j = next) {
        next = j->next_of_owner;
        if (!j->is_essential)
            atomic_store(&j->is_cancelled, true);
        j->next_of_owner = j->prev_of_owner = NULL;
    }
    slot->jobs = NULL;
    slot->session = NULL;
    slot->gen++;
    if (slot->gen == 0)
        slot->gen = 1;
    slot->next_free = free_head;
    free_head = (uint32_t)(slot - slots) + 1;
    n_sessions--;
}

void *job_session_find(uint64_t handle)
{
    job_assert_loop_thread("job_session_find");
    struct job_slot *slot = job_slot_of(handle);
    return slot ? slot->session : NULL;
}

size_t job_session_count(void)
{
    return n_sessions;
}

/* ---- jobs ----------------------------------------------------------------------------- */

void job_init(struct job *job, uint64_t owner, job_work_fn *work, job_done_fn *done)
{
    job->owner = owner;
    job->work = work;
    job->done = done;
    job->is_essential = false;
    atomic_init(&job->is_cancelled, false);
    job->was_cancelled = false;
    job->next_of_owner = job->prev_of_owner = NULL;
}

static void job_unlink(struct job *job)
{
    struct job_slot *slot = job_slot_of(job->owner);
    if (!slot)
        return; /* the owner went: remove() already detached the list */
    if (job->prev_of_owner)
        job->prev_of_owner->next_of_owner = job->next_of_owner;
    else if (slot->jobs == job)
        slot->jobs = job->next_of_owner;
    if (job->next_of_owner)
        job->next_of_owner->prev_of_owner = job->prev_of_owner;
    job->next_of_owner = job->prev_of_owner = NULL;
}

/* Pool thread: the job and nothing else. */
static void job_run_work(void *arg)
{
    struct job *job = arg;
    if (atomic_load(&job->is_cancelled)) {
        job->was_cancelled = true;
        return;
    }
    if (job->work)
        job->work(job);
}

/* Loop thread: find the owner again; NULL is normal. */
static void job_run_done(void *arg)
{
    struct job *job = arg;
    job_unlink(job);
    n_in_flight--;
    job->done(job_session_find(job->owner), job);
}

void job_submit(struct workpool *pool, struct job *job)
{
    job_submit_delayed(pool, job, 0);
}

void job_submit_delayed(struct workpool *pool, struct job *job, unsigned delay_ms)
{
    job_assert_loop_thread("job_submit");
    struct job_slot *slot = job_slot_of(job->owner);
    if (slot) {
        job->prev_of_owner = NULL;
        job->next_of_owner = slot->jobs;
        if (slot->jobs)
            slot->jobs->prev_of_owner = job;
        slot->jobs = job;
    }
    n_in_flight++;
    workpool_submit_delayed(pool, delay_ms, job_run_work, job_run_done, job);
}

size_t job_in_flight(void)
{
    return n_in_flight;
}
