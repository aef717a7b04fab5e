/*
 * backend.h - the channels between the login processes and the mail workers (privilege
 * separation, DESIGN §2, docs/SECURITY.md).
 *
 * A login process owns the listeners, TLS and every session before login (SMTP and LMTP
 * whole), but may read no mailbox, no password hash and no spool. What needs those it
 * asks a mail worker over these channels: adopt a session whose client has logged in
 * (conn_handoff: the socket, or one end of a TLS relay, passed with SCM_RIGHTS), deliver
 * a received message, tell a user's usage, flush the queue for a domain. The master makes
 * one SOCK_SEQPACKET socketpair for every (login process, mail worker) pair and hands the
 * ends out (SERVER_MSG_BACKEND_CHANNEL, SERVER_MSG_BACKEND_CLIENT); a restarted process
 * gets new ones. The master carries no request itself.
 *
 * Wire: a request is one datagram (core/channel.h): the type byte (BACKEND_MSG_*), a
 * 4-byte request id (host order), the request's plain data, optionally one descriptor.
 * The answer carries the same type and id, a 4-byte return code, then its data. What the
 * data of each type is, its owner says (conn.c for HANDOFF, smtp/remote.c for the rest).
 * Both sides treat the other's bytes as hostile: a mail worker checks every request as it
 * would a client's (a login process may have been taken over).
 *
 * Login side: backend_call() blocks a pool thread until the answer, a timeout, or the
 * mail worker's death (its channel closes: the call fails at once), like the auth
 * process's clients (auth/remote.c). Calls are spread over the live mail workers (the
 * one with the fewest calls in flight); a worker the master retired (a reload drains it)
 * gets none while another is there.
 *
 * Worker side: requests arrive on the loop and go to the handler registered for their
 * type; each is answered exactly once with backend_reply(), from any thread (a pool
 * thread after blocking work), or dropped with backend_request_free() (the caller then
 * times out).
 *
 * Thread rules: backend_client_* and backend_server_* on the loop thread of the process;
 * backend_call() on pool threads only (it blocks); backend_reply() on any thread.
 */
#ifndef TERN_CORE_BACKEND_H
#define TERN_CORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct channel_msg;

enum backend_msg {
    BACKEND_MSG_HANDOFF = 1, /* a logged-in session (conn.c) */
    BACKEND_MSG_DELIVER,     /* an SMTP/LMTP message to deliver (smtp/remote.c) */
    BACKEND_MSG_USAGE,       /* is a user's mailbox full (RCPT) */
    BACKEND_MSG_ETRN,        /* flush the queue for a domain */
    BACKEND_MSG_GREYLIST,    /* a greylisting triplet at RCPT (the SQLite file is here) */
    BACKEND_MSG_BURL,        /* RFC 4468 BURL: the octets an IMAP URL names (smtp/burl.c) */
    BACKEND_MSG_COUNT
};

/* ---- login side ------------------------------------------------------------------------- */

/* Start the client (its reader thread). 0 or -1. */
int backend_client_start(void);
/* Stop it: calls waiting fail; the channels are closed. */
void backend_client_stop(void);
/* A channel to the mail worker worker_pid (owned from now on). */
void backend_client_add(int sock, pid_t worker_pid);
/* The master drains worker_pid (reload): send it nothing new while another worker lives. */
void backend_client_retire(pid_t worker_pid);
/* Pool thread: send request type with data (and fd when >= 0; the caller keeps its own
 * copy) to a mail worker, and wait up to timeout_s for the answer. 0 answered (*rc_r, and
 * the answer's data from reply->payload + *data_off_r, reply->len - *data_off_r), -1 no
 * answer (no mail worker, it died, timeout, request too large). reply is the caller's.
 * A request that reached no worker (it had left) or that a draining worker refused goes to
 * another, each worker once; a session whose worker left without a word, to up to
 * BACKEND_FD_LOST_TRIES others; with no worker to ask the call waits once for a new one
 * (BACKEND_NEW_WORKER_WAIT_MS). */
int backend_call(uint8_t type, const void *data, size_t len, int fd, unsigned timeout_s,
                 struct channel_msg *reply, int32_t *rc_r, size_t *data_off_r);
/* The answer (rc) of a worker that did not receive the request's descriptor (it is out of
 * descriptors) and did nothing: backend_call asks up to BACKEND_FD_LOST_TRIES others
 * before it returns this. */
#define BACKEND_RC_FD_LOST    (-1000)
#define BACKEND_FD_LOST_TRIES 3
/* The answer of a worker that drains or stops (a reload) and took nothing: a login process
 * whose request crossed the worker's retirement asks another the same way. */
#define BACKEND_RC_NOT_TAKEN  (-1001)
/* When no worker is left to ask (each refused so, or none is there), how long backend_call
 * waits for the channel of a new one (the master hands them over as it starts them). */
#define BACKEND_NEW_WORKER_WAIT_MS 3000

/* ---- worker side -------------------------------------------------------------------------- */

struct backend_request;
/* Loop thread: a request of the handler's type. The handler owns req and answers it once
 * (backend_reply) or drops it (backend_request_free), now or later. */
typedef void backend_handler_fn(struct backend_request *req, void *arg);

/* Serve requests of type with fn (loop thread, before channels arrive). */
void backend_server_handle(uint8_t type, backend_handler_fn *fn, void *arg);
/* A channel from the login process login_pid (owned from now on); requests are read on
 * base's loop. 0 or -1. */
int backend_server_add(struct event_base *base, int sock, pid_t login_pid);
/* Close every channel (shutdown); requests in flight can still be answered (dropped). */
void backend_server_stop(void);
/* Requests received and not yet answered or dropped (a draining worker waits for them). */
size_t backend_server_in_flight(void);

/* The request's data (after the id), its length, and its descriptor (-1 none; taking it
 * sets it to -1: the caller then owns it, else backend_reply/free closes it). */
const char *backend_request_data(const struct backend_request *req, size_t *len_r);
int backend_request_take_fd(struct backend_request *req);
pid_t backend_request_login_pid(const struct backend_request *req);
/* Answer with rc and data, and free req. Any thread. */
void backend_reply(struct backend_request *req, int32_t rc, const void *data, size_t len);
/* Free req without an answer. Any thread. */
void backend_request_free(struct backend_request *req);

#endif
