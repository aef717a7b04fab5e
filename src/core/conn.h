/*
 * conn.h - listeners and client connections on the event loop (libevent).
 *
 * The server core owns the event loop, the listening sockets and every struct conn.
 * A protocol (SMTP, POP3, IMAP) plugs in as a struct conn_protocol: it is told when a
 * connection opens, when input arrives, when queued output has drained, and when the
 * connection is gone. Sessions never call read()/write() on sockets: they read lines
 * from conn_input() and queue output with conn_write()/conn_printf().
 *
 * TLS: a listener is plain or implicit-TLS; conn_starttls() upgrades a plain connection
 * after the protocol has queued its "go ahead" reply. It discards every byte of input
 * already received (RFC 3207 §4, CVE-2011-0411 class): pipelined commands sent before the
 * handshake must never be executed as if they had been protected.
 *
 * Ownership: a struct conn is owned by the core. The protocol's session (the void * its
 * open() returns) is owned by the protocol and freed in its close() callback, which is
 * called exactly once. After conn_close() the session gets no more callbacks except close().
 *
 * Backpressure: conn_output_length() tells how much is queued; a long reply (RETR, FETCH)
 * writes a chunk, returns, and continues from on_drained(), which fires when the queued
 * output falls below CONN_OUTPUT_LOW_WATER. Input: the core stops reading from a socket
 * while its input buffer holds more than CONN_INPUT_HIGH_WATER unread bytes.
 *
 * Thread rules: every function here runs on the event loop thread only. Blocking work
 * goes through workpool.h and comes back to the loop.
 */
#ifndef TERN_CORE_CONN_H
#define TERN_CORE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct event_base;
struct config;
struct conn;
struct config_list;
struct workpool;

#define CONN_OUTPUT_LOW_WATER  (64 * 1024)
#define CONN_INPUT_HIGH_WATER  (256 * 1024)

/* What a listening socket is for; sessions use it to pick their rules. */
enum conn_role {
    CONN_ROLE_SMTP,        /* 25: incoming mail, STARTTLS offered */
    CONN_ROLE_SUBMISSION,  /* 587: AUTH required for MAIL, STARTTLS offered */
    CONN_ROLE_SUBMISSIONS, /* 465: implicit TLS, AUTH required */
    CONN_ROLE_POP3,        /* 110: STLS offered */
    CONN_ROLE_POP3S,       /* 995: implicit TLS */
    CONN_ROLE_IMAP,        /* 143: STARTTLS offered */
    CONN_ROLE_IMAPS,       /* 993: implicit TLS */
    CONN_ROLE_LMTP,        /* LMTP (RFC 2033) from the MTA in front: a unix socket (its
                              permissions decide who may deliver) or a trusted TCP peer */
    CONN_ROLE_MTA_STS,     /* HTTPS (implicit TLS): our MTA-STS policy file (RFC 8461 §3.3) */
};

/* A session moving from a login process to a mail worker after its client logged in
 * (privilege separation, DESIGN §2, docs/SECURITY.md): the connection's facts and the
 * protocol's state as plain data, sent with the socket (SCM_RIGHTS, core/backend.h): the
 * client's own socket for a plain connection, or one end of a socketpair when the login
 * process keeps the TLS and relays the plaintext. The mail worker treats every field as
 * hostile (the login process may have been taken over): conn_handoff_decode checks them,
 * and the session is served only once the auth process confirms the token. */
#define CONN_HANDOFF_INPUT_MAX (32 * 1024)
#define CONN_HANDOFF_SASL_MAX  512
struct conn_handoff {
    enum conn_role role;
    bool is_tls; /* the client's link is TLS (kept by the login process) */
    char peer_ip[46], local_ip[46];
    uint16_t peer_port, local_port;
    char tls_desc[160];
    /* the protocol's: who logged in, and the command to answer */
    char user[321];  /* canonical, as the auth process vouched */
    char token[65];  /* the auth process's one-time proof (auth_login_redeem) */
    char tag[65];    /* IMAP: the tag of the LOGIN/AUTHENTICATE to answer */
    char method[32]; /* for the Login log line: PLAIN, APOP, CRAM-MD5, ... */
    char sasl_final[CONN_HANDOFF_SASL_MAX + 1]; /* SASL data with success (SCRAM's "v="),
                                                   sent as a last challenge; "" none */
    unsigned errors; /* POP3: bad commands so far */
    /* what the client sent after the login command, not yet read by the session */
    size_t input_len;
    char input[CONN_HANDOFF_INPUT_MAX];
};

/* The record as one message's data: 0 and *len_r, or -1 when it does not fit size. */
int conn_handoff_encode(const struct conn_handoff *h, char *out, size_t size, size_t *len_r);
/* Parse a record (hostile bytes: every field checked, strings bounded and terminated,
 * role known). true when well-formed. */
bool conn_handoff_decode(const char *data, size_t len, struct conn_handoff *h_r);

struct conn_protocol {
    const char *log_name; /* "smtpd", "pop3", "imap": the log service name */
    /* A connection was accepted (and, for implicit TLS, the handshake finished).
     * Return the session (may queue a greeting) or NULL to refuse (core closes). */
    void *(*open)(struct conn *c);
    /* New input is in conn_input(c). Consume what can be handled; leave partial lines. */
    void (*on_read)(void *session, struct conn *c);
    /* Queued output fell below CONN_OUTPUT_LOW_WATER (optional, may be NULL). */
    void (*on_drained)(void *session, struct conn *c);
    /* STARTTLS handshake finished (optional); the session resets its state per protocol. */
    void (*on_tls)(void *session, struct conn *c);
    /* Idle timeout fired (optional); the session writes its farewell, core then closes. */
    void (*on_timeout)(void *session, struct conn *c);
    /* The server is shutting down (optional): write a farewell ("421 ...", "* BYE ..."),
     * core then flushes and closes. Not called while the session's job runs. */
    void (*on_shutdown)(void *session, struct conn *c);
    /* The connection is gone (peer closed, error, or conn_close()). Free the session. */
    void (*close)(void *session, const char *reason);
    /* Mail worker: a session handed over after login (optional; without it the role is
     * not handed over). Return the session, which answers the login command once the
     * token is redeemed, or NULL to refuse (the login process then answers). */
    void *(*adopt)(struct conn *c, const struct conn_handoff *h);
    /* Login process: conn_handoff() failed (no mail worker took the session); the session
     * answers the login command with a temporary failure and goes on (optional). */
    void (*on_handoff_failed)(void *session, struct conn *c);
};

/* The running server: loop, TLS context, listeners. One per process. */
struct server;

struct auth_service;
struct ratelimit;
struct dns_cache;
struct greylist;

#define CONN_ROLE_COUNT 9

/* Which parts of the server a process runs (server_context.processes). With
 * master_process = yes the master forks worker processes (listeners and sessions) and one
 * queue process; with no, one process runs everything. */
#define SERVER_PROC_WORKER 1u /* mail worker: sessions after login, deliveries */
#define SERVER_PROC_QUEUE  2u /* the outbound queue runner */
#define SERVER_PROC_AUTH   4u /* the directory, password hashes, failed-login table */
#define SERVER_PROC_LOGIN  8u /* listeners, TLS, SMTP/LMTP, IMAP and POP3 before login */
#define SERVER_PROC_ALL                                                                            \
    (SERVER_PROC_WORKER | SERVER_PROC_QUEUE | SERVER_PROC_AUTH | SERVER_PROC_LOGIN)

/* Message types between the processes (core/channel.h). The master routes by range
 * without reading payloads: TO_WORKERS goes to every other worker, TO_QUEUE to the queue
 * process. The core's own: */
#define SERVER_MSG_READY      1  /* child -> master: initialised and serving */
#define SERVER_MSG_FAILED     2  /* child -> master: start-up failed (payload: reason) */
#define SERVER_MSG_DRAIN      3  /* master -> worker: reload; stop accepting, finish */
#define SERVER_MSG_AUTH_CLIENT  4 /* master -> auth: serve this channel (fd); payload: the
                                     client's SERVER_PROC_* kind as decimal text */
#define SERVER_MSG_AUTH_CHANNEL 5 /* master -> worker/queue/login: a new auth process's channel */
#define SERVER_MSG_BACKEND_CLIENT  6 /* master -> worker: a login process's channel (fd);
                                        payload: its pid as decimal text (core/backend.h) */
#define SERVER_MSG_BACKEND_CHANNEL 7 /* master -> login: a mail worker's channel (fd);
                                        payload: its pid */
#define SERVER_MSG_BACKEND_RETIRE  8 /* master -> login: that worker drains (payload: pid) */
#define SERVER_MSG_AUTH_STATE      9 /* auth -> master at its stop, master -> the next auth
                                        process at its birth: a memfd with the live one-time
                                        tokens (the master holds it unread; auth/server.c) */
#define SERVER_MSG_TO_WORKERS 16 /* 16..31 */
#define SERVER_MSG_TO_QUEUE   32 /* 32..47 */

struct channel_msg;

struct server_context {
    struct event_base *base;
    const struct config *cfg;
    unsigned processes;    /* SERVER_PROC_* bits this process runs (all four: the
                              single-process mode, where no session is handed over) */
    int channel;           /* to the master, -1 in the single-process mode */
    int auth_channel;      /* to the auth process (workers, queue), -1 none */
    unsigned generation;   /* bumped by each reload (SIGHUP) */
    struct workpool *pool;     /* blocking work: fsync, hashing, SQLite writes */
    struct auth_service *auth; /* set by hooks.init after privileges are dropped */
    struct ratelimit *ratelimit;   /* rate limits (policy/ratelimit.h); may be NULL */
    struct dns_cache *dnscache;    /* DNS list answers (policy/dnscache.h); may be NULL */
    struct greylist *greylist;     /* greylisting (policy/greylist.h); NULL when off */
    struct workpool *milter_pool;  /* milter conversations (milter.concurrency); NULL none */
    void *app;                 /* reserved for the application (queue runner etc.) */
    uint64_t shutdown_deadline_ms; /* for hooks.fini: stop by then (util_now_ms clock) */
};

/* Shutdown took longer than shutdown_timeout with work still running that uses what a
 * normal exit frees: log it and _exit(0) at once (fini hooks call this when their own
 * threads do not stop in time). Never returns. */
void server_abandon_exit(const struct server_context *ctx, const char *what)
    __attribute__((noreturn));

/* What `tern serve` plugs into the core. protocols[role] may be NULL (role not served). */
struct server_hooks {
    const struct conn_protocol *protocols[CONN_ROLE_COUNT];
    /* Called once in a child (optional), as root when started as root, before it drops
     * privileges and (a login process) enters its chroot: open what cannot be reached
     * afterwards (the resolver's /etc/resolv.conf). Start no thread and take no input.
     * 0, or -1 with *error_r. */
    int (*prepare)(struct server_context *ctx, char **error_r);
    /* Called once after binding and dropping privileges, before accepting: open the
     * directory, the store, the queue. Return 0, or -1 with *error_r (start-up fails). */
    int (*init)(struct server_context *ctx, char **error_r);
    /* Called once on shutdown after every connection is closed. */
    void (*fini)(struct server_context *ctx);
    /* A message from another process (types SERVER_MSG_TO_*), loop thread (optional). */
    void (*on_message)(struct server_context *ctx, struct channel_msg *m);
    /* SIGHUP in the master: the configuration read again, or NULL with *error_r (the
     * old one stays). Optional: without it a reload only re-reads the certificate. */
    struct config *(*reload)(char **error_r);
};

/* Send a message to other processes through the master (type SERVER_MSG_TO_*). A no-op
 * returning -1 in the single-process mode; best effort otherwise (channel.h). */
int server_send(const struct server_context *ctx, uint8_t type, const void *payload, size_t len);

/* The context of the server this connection belongs to. */
const struct server_context *conn_server(const struct conn *c);

enum conn_role conn_role(const struct conn *c);
struct evbuffer *conn_input(struct conn *c);
void conn_write(struct conn *c, const void *data, size_t len);
void conn_write_str(struct conn *c, const char *s);
void conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t conn_output_length(struct conn *c);
/* The input ends inside a command that needs more bytes (the rest after a literal, a
 * partial line): have the kernel acknowledge the received data at once, so a client
 * whose Nagle algorithm holds back the command's last small segment sends it without
 * waiting for our delayed ACK. Cheap (one setsockopt); a no-op where unsupported. */
void conn_ack_now(struct conn *c);

/* Upgrade to TLS after the queued output has been flushed in clear; discards buffered
 * input. Returns -1 if TLS is not configured or already active. on_tls() follows. */
int conn_starttls(struct conn *c);
/* RFC 4978 COMPRESS=DEFLATE: after the protocol queued its "OK", compress everything
 * written from now on and inflate what is read. 0, or -1 (already compressed, out of
 * memory: the connection stays as it was). */
int conn_compress(struct conn *c);
bool conn_is_compressed(const struct conn *c);
bool conn_is_tls(const struct conn *c);
/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" style, for Received headers. */
const char *conn_tls_description(const struct conn *c);
bool conn_tls_available(const struct conn *c);

/* Peer and local addresses as text ("127.0.0.1", "::1"), and whether the peer is loopback.
 * A peer on a unix socket reads "local", counts as loopback, and conn_peer_is_local()
 * says so. */
const char *conn_peer_ip(const struct conn *c);
const char *conn_local_ip(const struct conn *c);
uint16_t conn_local_port(const struct conn *c);
/* The client's port (0 when not an IP connection): the milters' {client_port}. */
uint16_t conn_peer_port(const struct conn *c);
bool conn_peer_is_loopback(const struct conn *c);
bool conn_peer_is_local(const struct conn *c);
/* "localhost" for loopback peers, "unknown" otherwise (no blocking reverse DNS). */
const char *conn_peer_name(const struct conn *c);
/* Is the peer inside one of the CIDRs of the list (e.g. relay_networks)? */
bool conn_peer_in_networks(const struct conn *c, const struct config_list *nets);

/* The server is shutting down: take no new command (finish the one running, whose reply
 * still goes out; the core then closes the connection). */
bool conn_is_stopping(const struct conn *c);

/* Stop/resume delivering on_read while the session waits for blocking work.
 * conn_resume_read() calls on_read again soon if input is already buffered. */
void conn_pause_read(struct conn *c);
void conn_resume_read(struct conn *c);
/* Idle timeout in seconds for reads (0 = none); re-armed by every read. */
void conn_set_timeout(struct conn *c, unsigned seconds);
/* A deadline, seconds from now, that reads do not re-arm (0 = none): the pre-login
 * limit (imap.login_timeout, pop3.login_timeout), armed by the core at accept so that it
 * covers an implicit-TLS handshake too. When it passes, on_timeout() runs (if the session
 * is open) and the connection closes. A session clears it once the client logs in. */
void conn_set_deadline(struct conn *c, unsigned seconds);
/* Close once queued output is flushed; then close() is called. */
void conn_close(struct conn *c);

/* True in a login process: a session hands its client over to a mail worker after login
 * (conn_handoff) instead of opening the mailbox itself. False in a mail worker and in the
 * single-process mode. */
bool conn_is_login_process(const struct conn *c);
/* True for a session a mail worker adopted (conn_protocol.adopt). */
bool conn_is_handed_over(const struct conn *c);
/* Login process: hand the logged-in session to a mail worker. h (malloc'd, owned by the
 * core from now on) has the protocol's fields filled (user, token, tag, method,
 * sasl_final, errors); the core adds the connection's facts and the input the session
 * has not read (the caller must have consumed what belongs to the login command). Reading
 * pauses; later either close() is called with reason "handoff" (a mail worker has the
 * client; a TLS connection stays here as a relay of the plaintext, without a session) or
 * on_handoff_failed() (the session answers and goes on). */
void conn_handoff(struct conn *c, struct conn_handoff *h);
/* The binding of this connection for a login token (auth_login_binding). */
void conn_login_binding(const struct conn *c, const char *service, char *out, size_t size);

/* Serve: create data_dir, set up TLS, bind the listeners in cfg (as root), then either
 * (master_process = yes, the default) stay root as the master and fork the processes:
 * worker_processes workers (listeners and sessions, one per core by default) and one
 * queue process, each dropping privileges to run_user and calling hooks->init; restart a
 * child that dies; SIGHUP reloads the certificate and, with hooks->reload, the
 * configuration (a new generation of processes takes new connections, the old one
 * finishes its sessions); or (master_process = no) drop privileges and run everything in
 * this process. "daemon started -- listening on ..." is logged once every process is
 * serving (the readiness line tests wait for). Runs until SIGTERM/SIGINT, bounded by
 * shutdown_timeout. Returns the process exit code. cfg stays the caller's. */
int server_run(const struct config *cfg, const struct server_hooks *hooks);

#endif
