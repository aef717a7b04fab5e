/*
 * workpool.h - a small thread pool for blocking work (fsync, password hashing, SQLite
 * writes), whose completions run back on the event loop thread.
 *
 * workpool_submit(pool, work, done, arg): work(arg) runs on a pool thread; afterwards
 * done(arg) runs on the loop thread. The caller owns arg throughout and frees it in done.
 * A session waiting for a job pauses its reads (conn_pause_read) and must stay alive until
 * done runs: if the peer disconnects meanwhile, the session marks itself closed and frees
 * itself in done instead (the close callback must not free a session with a job in flight).
 *
 * Many threads doing fsync at once lets the filesystem journal commit them together
 * (group commit), which is how durable delivery stays fast.
 *
 * Thread rules: submit from the loop thread only.
 */
#ifndef TERN_CORE_WORKPOOL_H
#define TERN_CORE_WORKPOOL_H

#include <stddef.h>

struct event_base;
struct workpool;

typedef void workpool_fn(void *arg);

struct workpool *workpool_create(struct event_base *base, unsigned threads);
/* Wait for queued jobs to finish, join threads, run pending done callbacks, free. */
void workpool_destroy(struct workpool *pool);
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
