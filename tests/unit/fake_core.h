/*
 * fake_core.h - the server core (src/core/conn.c and workpool.c) replaced by an in-memory
 * one that a unit test or a fuzz target drives step by step, so that the REAL protocol
 * sessions (smtp/, pop3/, imap/, unchanged) run without sockets, TLS or a thread pool.
 *
 * fake_core.c defines every conn_* function and workpool_submit(); link it (as a source,
 * before the libraries) into the test executable and the linker takes these instead of
 * the core's objects. It keeps the real core's rules, so that what is legal there is
 * legal here and what breaks there breaks here:
 *   - callbacks (open, on_read, on_drained, on_tls, on_timeout, on_shutdown, close) are
 *     only ever called from the driver level, never from inside a conn_* call;
 *     conn_close() and conn_resume_read() only "kick" the connection (conn.c's rule);
 *   - a connection is freed right after its close() callback: a session or a job that
 *     touches it later is a use-after-free ASan reports;
 *   - every conn_* call asserts the loop thread (job_assert_loop_thread), and work()
 *     runs on a separate worker thread, so a work function that reaches a session or a
 *     connection aborts at once (the thread rule, core/job.h);
 *   - conn_starttls() discards the buffered input; bytes that arrive before the
 *     handshake completes are the handshake (discarded); a session that writes anything
 *     between conn_starttls() and on_tls() aborts (a reply to pipelined input);
 *   - output is counted as queued until the peer "reads" it (fake_drain); on_drained
 *     fires as libevent's write callback does (output written and now at or below
 *     CONN_OUTPUT_LOW_WATER); a closing connection finishes once its output is read;
 *   - EOF (half-close), timeouts and shutdown follow conn.c's conn_on_event/close_all.
 * Jobs (workpool_submit) wait until the driver runs them: fake_job_work(k) runs work()
 * of the k-th queued job on the worker thread, fake_job_done() runs the oldest completed
 * job's done() on the loop (the pool's completion order); with auto_jobs set, fake_settle()
 * runs them in FIFO order as a pool would when idle.
 *
 * Connections are "peers" 0..FAKE_MAX_PEERS-1; a peer's transcript (what the session
 * wrote, capped: the tail is kept) stays readable after its connection is gone, until
 * the slot is reused or fake_core_reset().
 *
 * Thread rules: everything here runs on the thread that called fake_core_init() (the
 * loop thread), except work functions, which run on the worker thread.
 */
#ifndef TERN_TEST_FAKE_CORE_H
#define TERN_TEST_FAKE_CORE_H

#include "core/buf.h"
#include "core/conn.h"

#include <stdbool.h>
#include <stddef.h>

#define FAKE_MAX_PEERS 4
#define FAKE_MAX_JOBS  64 /* queued + completed; more is a runaway (abort) */

struct event_base;

/* Driver policy: what fake_settle() does by itself. */
struct fake_policy {
    bool auto_jobs;      /* run queued jobs (work then done, FIFO) */
    bool auto_drain;     /* the peers read all output */
    bool auto_handshake; /* a STARTTLS handshake completes once its go-ahead was read */
    size_t output_cap;   /* transcript bytes kept per peer (0: 1 MiB) */
    bool (*is_spent)(void); /* when set and true, fake_settle() returns at once: the
                             * caller's time is up (it ends the run) */
};

/* Once per process: the loop thread is the caller; starts the worker thread and an
 * event base (for session timers and store notifications). */
void fake_core_init(void);
/* The context conn_server() returns: tests set cfg and auth (pool is set here). */
struct server_context *fake_core_context(void);
struct event_base *fake_core_base(void);
struct fake_policy *fake_core_policy(void);
/* Forget every peer's transcript and the stopping flag; every connection must be gone
 * and every job finished (aborts otherwise: a leaked session or job). */
void fake_core_reset(void);

/* Accept a connection in slot peer (its previous connection must be gone) and call
 * open() as conn.c does (then reads whatever is buffered). false when the server is
 * stopping (no new connections). */
bool fake_open(int peer, const struct conn_protocol *proto, enum conn_role role, bool is_tls,
               bool is_loopback);
/* The client sent bytes (one read). Discarded when the connection is closing or gone,
 * or while a TLS handshake is in progress (those bytes are the handshake). */
void fake_feed(int peer, const void *data, size_t len);
/* The client read up to max bytes of queued output (SIZE_MAX: all). */
void fake_drain(int peer, size_t max);
/* The client half-closed (EOF): what it sent is answered, then the connection closes. */
void fake_eof(int peer);
/* The connection broke (reset): close() at once, whatever is in flight. */
void fake_drop(int peer, const char *reason);
/* The idle timer fired: a read timeout (ignored while output is still being sent) or,
 * with is_writing, the write timeout of a peer that stopped reading. */
void fake_timeout(int peer, bool is_writing);
/* Finish a pending STARTTLS handshake (is_ok) or fail it (the connection drops). */
void fake_handshake(int peer, bool is_ok);
/* SIGTERM: no new commands or connections; on_shutdown and close for every connection. */
void fake_shutdown(void);

/* Jobs: queued (work not run) and completed (done not run). */
size_t fake_jobs_queued(void);
size_t fake_jobs_completed(void);
/* work() calls run since the start (a script touched the store if this moved). */
size_t fake_jobs_worked(void);
/* Run work() of queued job k % queued on the worker thread; false if none. */
bool fake_job_work(size_t k);
/* Run the oldest completed job's done() on the loop; false if none. */
bool fake_job_done(void);
/* Run every job to the end, FIFO (work, then done), including jobs the dones submit. */
void fake_jobs_run_all(void);
/* Run fn(arg) on the worker thread and wait (blocking work outside a session). */
void fake_run_on_worker(void (*fn)(void *), void *arg);

/* The loop turns once: pending events (store notifications) run; with fire_timers, every
 * pending timer (IMAP IDLE keepalives) fires first. */
void fake_loop_once(bool fire_timers);
/* Let the loop run what is due: kicks (deferred reads, closes), then per policy jobs,
 * drains and handshakes, until nothing moves (bounded). */
void fake_settle(void);

/* ---- looking at a peer ---------------------------------------------------------------- */
bool fake_is_open(int peer);    /* a connection is there (not yet closed) */
bool fake_is_closing(int peer); /* the session asked to close, or it has closed */
bool fake_is_paused(int peer);
bool fake_is_handshaking(int peer);
size_t fake_input_length(int peer); /* bytes received and not consumed */
size_t fake_queued(int peer);       /* output the peer has not read */
/* What the session wrote (the tail, when over the cap), NUL-terminated. */
const char *fake_output(int peer);
/* The first line the session wrote (its greeting), without CRLF. */
const char *fake_greeting(int peer);

#endif
