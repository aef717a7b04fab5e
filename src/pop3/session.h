/*
 * session.h - internals shared by the POP3 session files (not a module contract):
 *   session.c   connection callbacks, input framing, the command table, replies, logs
 *   cmd_auth.c  AUTHORIZATION state: CAPA, STLS, USER/PASS, APOP, AUTH (SASL), and the
 *               workpool job that verifies credentials and opens the maildrop
 *   cmd_mail.c  TRANSACTION state: STAT, LIST, UIDL, RETR, TOP, DELE, NOOP, RSET, QUIT
 *               (UPDATE state), with LIST/UIDL/RETR streamed under backpressure
 *
 * Ownership: struct pop3_session is owned by the pop3 module: created in open(), freed by
 * the close callback at once. Blocking work runs as typed jobs (core/job.h): a job holds
 * copies of what it needs and the handles moved into it (struct pop3_maildrop); its done
 * callback finds the session again by handle, or closes the handles when it has gone.
 */
#ifndef TERN_POP3_SESSION_H
#define TERN_POP3_SESSION_H

#include "core/job.h"
#include "pop3/parse.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct conn_handoff;
struct auth_sasl;
struct store_user;
struct store_mailbox;

/* RFC 1939 §3 states; UPDATE is entered by QUIT in TRANSACTION. */
enum pop3_state {
    POP3_STATE_AUTHORIZATION,
    POP3_STATE_TRANSACTION,
    POP3_STATE_UPDATE,
};

/* Bad commands (unknown, syntax, wrong state, too long, failed logins) before we hang up. */
#define POP3_MAX_ERRORS 10
/* Longest login name we keep from USER / APOP / SASL (RFC 5321 path limit). */
#define POP3_LOGIN_MAX 256
/* SASL data with success a handed-over session sends (CONN_HANDOFF_SASL_MAX). */
#define POP3_SASL_FINAL_MAX 512

/* A long reply written in pieces from on_drained (natural backpressure). */
enum pop3_stream_kind {
    POP3_STREAM_NONE,
    POP3_STREAM_LIST, /* LIST without argument */
    POP3_STREAM_UIDL, /* UIDL without argument */
    POP3_STREAM_MSG,  /* RETR or TOP */
};

struct pop3_stream {
    enum pop3_stream_kind kind;
    size_t next;      /* LIST/UIDL: next message index */
    int fd;           /* MSG: the message file, -1 when none */
    size_t msg_index; /* MSG: which message (for the retr counters) */
    bool is_top;
    struct pop3_msg conv;
};

/* What we know about one message of the maildrop snapshot (RFC 1939: numbers are fixed
 * for the session). Bodies are never held: only sizes and marks. */
struct pop3_msginfo {
    uint64_t size;      /* LIST size: RETR octets less byte-stuffing (see parse.h) */
    size_t uidl_offset; /* its UIDL in pop3_session.uidls */
    uint32_t uid;
    bool is_deleted;
    bool is_retrieved;
};

/* Message files opened ahead for RETR commands already pipelined behind the current one:
 * one workpool job opens them all, so a pipelining client pays one round trip per batch. */
#define POP3_PREFETCH_MAX 16
struct pop3_prefetch {
    size_t index;
    int fd;
};

/* The locked, opened INBOX of a logged-in session: handles that move together into a job
 * and back (a view needs its user, the lock lives in the user). */
struct pop3_maildrop {
    struct store_user *store;
    struct store_mailbox *box;
    bool is_locked; /* we hold the POP3 maildrop lock */
};

struct pop3_session {
    struct conn *conn;
    uint64_t handle; /* core/job.h: jobs find the session again by it */
    enum pop3_state state;
    bool has_job;             /* a job is in flight (the maildrop may be in it) */
    bool is_tls_pending;      /* STLS accepted: ignore input until on_tls */
    bool is_quitting;         /* QUIT answered (or closing): ignore further input */
    bool is_output_paused;    /* reading paused until queued output drains */
    uint64_t line_started_ms; /* monotonic time the pending partial line began, 0 none */
    const char *close_reason; /* static text for the disconnect log line, or NULL */
    unsigned errors;          /* bad commands so far */
    struct pop3_lines lines;

    /* AUTHORIZATION */
    char apop_timestamp[320];        /* "<pid.rand.time@host>" or "" when APOP is not offered */
    char *user_arg;                  /* USER argument awaiting PASS */
    struct auth_sasl *sasl;          /* AUTH exchange in progress */
    bool is_sasl_final;              /* waiting for the empty reply to a final challenge */
    unsigned auth_attempts;          /* failed logins in this session */
    char last_login[POP3_LOGIN_MAX]; /* for the failure log line */
    char last_method[32];            /* "PLAIN", "APOP", "CRAM-MD5"... */

    /* TRANSACTION */
    char *user;      /* canonical "user@domain" */
    char method[32]; /* mechanism used to log in */
    struct pop3_maildrop md; /* empty while a job holds it */
    struct pop3_msginfo *msgs;
    size_t n_msgs;
    uint32_t uidvalidity;
    char *uidls;              /* UIDLs of the snapshot, NUL-separated (pop3.uidl_format) */
    uint64_t total_size;      /* all messages, deleted or not */
    size_t n_live;            /* messages not marked deleted (STAT) */
    uint64_t live_size;       /* their octets (STAT) */
    bool has_deleted_on_quit; /* QUIT committed the deletions */
    struct pop3_stream stream;
    struct pop3_prefetch prefetch[POP3_PREFETCH_MAX];
    size_t n_prefetch;

    /* counters for the "Disconnected: Logged out top=..., retr=..." line */
    unsigned n_top, n_retr, n_del;
    uint64_t top_bytes, retr_bytes;
};

/* ---- session.c ----------------------------------------------------------------- */
/* Reply helpers; every reply ends in CRLF. */
void pop3_reply(struct pop3_session *s, const char *line);
void pop3_replyf(struct pop3_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Count a bad command; true when the limit closed the session. */
bool pop3_error(struct pop3_session *s, const char *reply);
/* Pause reads and submit job (job_init done by the caller with s->handle); its done
 * callback gets the session or NULL (gone: release the job's own data and handles). */
void pop3_job_start(struct pop3_session *s, struct job *job);
/* The same after delay_ms (the failed-login delay). */
void pop3_job_start_delayed(struct pop3_session *s, struct job *job, unsigned delay_ms);
/* Called first by every done callback whose session is alive. */
void pop3_job_finish(struct pop3_session *s);
/* Close the handles of a maildrop (unlock, view, user); any thread that owns it. */
void pop3_maildrop_close(struct pop3_maildrop *md);
/* Resume reading commands after a job or stream. */
void pop3_resume(struct pop3_session *s);
/* Close after queued output (QUIT, too many errors). */
void pop3_close(struct pop3_session *s);
/* Release maildrop, lock and session memory. */
void pop3_session_free(struct pop3_session *s);
/* Give back the maildrop without deleting anything (unlock, close). */
void pop3_maildrop_release(struct pop3_session *s);
/* Peer description for auth calls. */
struct auth_peer;
void pop3_auth_peer(struct pop3_session *s, struct auth_peer *peer_r);

/* ---- cmd_auth.c ---------------------------------------------------------------- */
void pop3_cmd_capa(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_stls(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_user(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_pass(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_apop(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_auth(struct pop3_session *s, const char *args, size_t len);
/* A line typed during an AUTH exchange. */
void pop3_sasl_line(struct pop3_session *s, const char *line, size_t len);
/* Build the greeting (with the APOP timestamp when offered). */
void pop3_greeting(struct pop3_session *s);

/* A mail worker: start the session a login process handed over (redeem its token, open
 * the maildrop, answer the login command); false when out of memory. */
bool pop3_login_token_start(struct pop3_session *s, const struct conn_handoff *h);

/* ---- session.c, for handoff.c --------------------------------------------------- */
/* A new session for c in AUTHORIZATION, without the greeting; NULL when out of memory. */
struct pop3_session *pop3_session_new(struct conn *c);

/* ---- handoff.c (privilege separation: conn_handoff) ----------------------------- */
/* Login process: the client logged in; hand the session to a mail worker, which opens
 * the maildrop and answers (after sasl_final as a last challenge, when not NULL/""). false
 * when it could not even start (the caller answers). */
bool pop3_handoff(struct pop3_session *s, const char *user, const char *token,
                  const char *method, const char *sasl_final);
void pop3_on_handoff_failed(void *session, struct conn *c);
/* Mail worker: conn_protocol.adopt. */
void *pop3_adopt(struct conn *c, const struct conn_handoff *h);

/* ---- cmd_mail.c ---------------------------------------------------------------- */
void pop3_cmd_stat(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_list(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_uidl(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_retr(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_top(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_dele(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_noop(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_rset(struct pop3_session *s, const char *args, size_t len);
void pop3_cmd_quit(struct pop3_session *s, const char *args, size_t len);
/* Continue a LIST/UIDL/RETR/TOP stream; true when it has finished. */
bool pop3_stream_continue(struct pop3_session *s);
/* Drop a stream in progress (connection closed). */
void pop3_stream_abort(struct pop3_session *s);
/* Close files opened ahead and not used. */
void pop3_prefetch_clear(struct pop3_session *s);

#endif
