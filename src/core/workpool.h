/*
 * workpool.h - a small thread pool for blocking work (fsync, password hashing, SQLite
 * writes), whose completions run back on the event loop thread.
 *
 * workpool_submit(pool, work, done, arg): work(arg) runs on a pool thread; afterwards
 * done(arg) runs on the loop thread. The caller owns arg throughout and frees it in done.
 * Sessions do not call this directly: they submit typed jobs through core/job.h, which
 * finds the session again by handle when the job is done (a client may leave at any
 * moment) and keeps work() away from every session and connection object.
 *
 * Many threads doing fsync at once lets the filesystem journal commit them together
 * (group commit), which is how durable delivery stays fast.
 *
 * Thread rules: submit from the loop thread only.
 */
#ifndef TERN_CORE_WORKPOOL_H
#define TERN_CORE_WORKPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct workpool;

typedef void workpool_fn(void *arg);

struct workpool *workpool_create(struct event_base *base, unsigned threads);
/* Wait for queued jobs to finish, join threads, run pending done callbacks, free. */
void workpool_destroy(struct workpool *pool);
/* The same, but wait only until deadline_ms (util_now_ms() clock): true when done and
 * freed; false when threads were still busy then (the pool is left alone, not freed: its
 * threads still use it; the caller logs and exits the process). Graceful shutdown. */
bool workpool_destroy_by(struct workpool *pool, uint64_t deadline_ms);
/* Jobs running or queued on pool threads right now (any thread). */
size_t workpool_busy(struct workpool *pool);
void workpool_submit(struct workpool *pool, workpool_fn *work, workpool_fn *done, void *arg);
/* Like workpool_submit, but the job enters the queue only after delay_ms (a timer on the
 * loop; no thread waits). The failed-login delay holds a password check this way. It
 * counts as pending from now; workpool_expedite() and workpool_destroy() queue waiting
 * jobs at once, so a shutdown never waits out a delay. */
void workpool_submit_delayed(struct workpool *pool, unsigned delay_ms, workpool_fn *work,
                             workpool_fn *done, void *arg);
/* Queue every delayed job now (graceful stop). */
void workpool_expedite(struct workpool *pool);
/* Jobs submitted whose done() has not run yet (loop thread; used for a graceful stop). */
size_t workpool_pending(const struct workpool *pool);

#endif
