/*
 * job.h - the one way a session runs blocking work (DESIGN §2, "the thread rule").
 *
 * A session (SMTP, POP3, IMAP) that must wait for the disk, the directory or a slow hash
 * fills a job: a typed request (copied strings, plain values, the service and store
 * handles the work needs, MOVED into the job) and room for its typed result. The job
 * embeds a struct job as its first member:
 *
 *     struct pop3_quit_job { struct job job; struct store_mailbox *box; ... int rc; };
 *
 * job_submit() runs work(job) on a workpool thread; then, on the loop thread, done(session,
 * job) where session is the owner found again by its handle, or NULL when the owner has
 * gone (the client left: a normal case, never an error). done() always owns the job: it
 * reads the result, moves handles back into the session (or closes them when session is
 * NULL) and frees the job.
 *
 * The work function sees the job and nothing else: never a session, a connection or their
 * buffers, which the loop may free at any moment. A session therefore never has to stay
 * alive for a job: its close() frees it at once and calls job_session_remove(), and a
 * job still queued for it (not started yet) is cancelled: work() is skipped and done()
 * gets NULL, so a client that left does not get its command executed for nobody.
 *
 * Session handles (OpenSMTPD's request ids, generation-checked): job_session_add() gives
 * a session a 64-bit handle that is never reused for another session in this process;
 * job_session_find() returns the session or NULL when it has been removed.
 *
 * Thread rules: job_session_* and job_submit() run on the loop thread (asserted); work()
 * on a pool thread; done() on the loop thread.
 */
#ifndef TERN_CORE_JOB_H
#define TERN_CORE_JOB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct workpool;
struct job;

/* Pool thread: do the blocking work; read the request, write the result. */
typedef void job_work_fn(struct job *job);
/* Loop thread: session is the owner or NULL (gone). Must free the job. */
typedef void job_done_fn(void *session, struct job *job);

struct job {
    uint64_t owner;     /* job_session_add() handle of the session, 0 = none */
    job_work_fn *work;  /* may be NULL (nothing blocking: done() only) */
    job_done_fn *done;  /* required */
    /* Runs even when its owner has gone before it started: work that a client asked for
     * and may consider done (POP3 QUIT's deletions after the client left without waiting
     * for +OK). Default false: a gone owner's queued job is skipped. */
    bool is_essential;
    atomic_bool is_cancelled; /* set on the loop, read by the pool: skip work() */
    bool was_cancelled;       /* for done(): work() did not run */
    struct job *next_of_owner, *prev_of_owner; /* the owner's jobs in flight */
};

/* Give a new session its handle (never 0). Loop thread. */
uint64_t job_session_add(void *session);
/* The session has gone: its handle finds nothing any more, and every job of it that has
 * not started is cancelled. Loop thread; a 0 handle is ignored. */
void job_session_remove(uint64_t handle);
/* The session of a handle, or NULL when it has been removed. Loop thread. */
void *job_session_find(uint64_t handle);
/* Live sessions (for tests and counters). */
size_t job_session_count(void);

/* Initialise the job header: owner handle, work (may be NULL) and done. */
void job_init(struct job *job, uint64_t owner, job_work_fn *work, job_done_fn *done);
/* Queue the job on pool; done() follows on the loop thread. */
void job_submit(struct workpool *pool, struct job *job);
/* The same after delay_ms (a timer on the loop, no thread waits): the failed-login delay
 * holds a password check this way. An owner that goes meanwhile cancels it as usual. */
void job_submit_delayed(struct workpool *pool, struct job *job, unsigned delay_ms);
/* Jobs submitted whose done() has not run yet, in this process. */
size_t job_in_flight(void);

/* The loop thread of this process (set by server_run, and by test harnesses); the
 * assertion below checks it in every build where assert() is active. */
void job_loop_thread_set(void);
bool job_on_loop_thread(void);
/* Abort with a clear message when called off the loop thread (thread-rule violations in
 * conn_* and session code surface at once in tests, not as a rare use-after-free). */
void job_assert_loop_thread(const char *what);

#endif
