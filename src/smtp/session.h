/*
 * session.h - internal to the smtp module: the per-connection session and the functions
 * the module's files share (session.c: lifecycle, input, command table; envelope.c:
 * MAIL/RCPT policy; body.c: DATA/BDAT and the spill file; sasl.c: AUTH; delivery.c:
 * trace headers and the workpool delivery job; reply.c: replies and log helpers).
 *
 * Ownership: a session is created by smtp_protocol.open() and freed by close() at once.
 * Every field is used on the loop thread only; jobs (core/job.h) copy what they need or
 * have it moved in (the SASL exchange), and find the session again by its handle.
 */
#ifndef TERN_SMTP_SESSION_H
#define TERN_SMTP_SESSION_H

#include "core/addr.h"
#include "core/buf.h"
#include "core/conn.h"
#include "core/job.h"
#include "core/util.h"
#include "smtp/data.h"
#include "smtp/parse.h"

#include <stdbool.h>
#include <stdint.h>

struct auth_sasl;
struct smtp_screen;
struct greylist;
struct mailauth_spf_result;
struct milter_outcome;
struct milter_session;
struct smtp_milters;
struct config_list;

/* Message bodies up to this size stay in memory; larger ones go to an unlinked file. */
#define SMTP_BODY_MEMORY_MAX (1024 * 1024)
/* Hop count limit (RFC 5321 §6.3 loop detection; Postfix hopcount_limit). */
#define SMTP_MAX_HOPS 50
/* MAIL and RCPT lines may carry parameters; RFC 5321 §4.5.3.1.4 lets extensions raise
 * the 512-octet command-line limit (RFC 1870, 6152, 6531, 4954 §5 each add some). */
#define SMTP_MAIL_LINE_MAX 1024
/* NOOP, RSET, VRFY, HELP... allowed before each further one counts as an error. */
#define SMTP_JUNK_COMMAND_LIMIT 100

/* What the bytes arriving next are. */
enum smtp_input {
    SMTP_INPUT_COMMAND,  /* command lines */
    SMTP_INPUT_AUTH,     /* SASL response lines (RFC 4954 §4) */
    SMTP_INPUT_DATA,     /* message text after 354 */
    SMTP_INPUT_BDAT,     /* BDAT chunk octets */
    SMTP_INPUT_TLS_WAIT, /* STARTTLS accepted: nothing until the handshake is done */
    SMTP_INPUT_CLOSED,   /* QUIT or a fatal error: ignore everything */
};

/* A local mailbox the message goes to (after alias expansion, deduplicated). */
struct smtp_local_target {
    char *user;      /* canonical user@domain */
    char *home;      /* store folder */
    uint64_t quota;  /* bytes, 0 = unlimited */
    char *orig_rcpt; /* the RCPT TO address that led here (X-Original-To) */
    unsigned notify; /* RFC 3461 NOTIFY= of that RCPT (queue.h bits), 0 = not given */
    char *orcpt;     /* its ORCPT= ("rfc822;x", decoded) or NULL */
    unsigned rcpt_index; /* LMTP: which accepted RCPT (0-based) this copy answers for */
};

/* The mail transaction (RFC 5321 §3.3): MAIL, RCPTs, message. */
struct smtp_txn {
    bool is_active; /* MAIL accepted */
    struct addr from;
    char from_text[ADDR_MAX_PATH + 1]; /* "" for the null sender */
    struct smtp_mail_params params;
    char queue_id[UTIL_QUEUE_ID_SIZE]; /* assigned at the first accepted RCPT */
    bool has_queue_id;
    unsigned n_rcpt; /* accepted RCPT commands */
    struct smtp_local_target *local;
    size_t n_local, cap_local;
    char **remote; /* foreign recipients, deduplicated */
    size_t n_remote, cap_remote;
    unsigned *remote_notify; /* [cap_remote] RFC 3461 NOTIFY per remote recipient */
    char **remote_orcpt;     /* [cap_remote] ORCPT per remote recipient, or NULL */
    char *first_rcpt;        /* for the Received "for <...>" clause */
    char **lmtp_rcpts;       /* LMTP: the accepted RCPT addresses in order (n_rcpt), one
                                reply each after DATA (RFC 2033 §4.2) */
    size_t cap_lmtp_rcpts;

    /* message */
    bool is_bdat; /* BDAT used in this transaction */
    struct smtp_data_reader reader;
    struct buf body; /* in-memory part (the tail when spilled) */
    int body_fd;     /* spill file, -1 if none */
    uint64_t body_fd_size;
    bool has_body_error; /* spill write failed */
    uint64_t start_ms;   /* MAIL time, for delay= */
    struct mailauth_spf_result *spf; /* mailauth hook: SPF checked at MAIL, or NULL */
};

struct smtp_session {
    struct conn *c;
    const struct server_context *ctx;
    const struct config *cfg;
    enum conn_role role;
    char peer[320]; /* "name[ip]" for logs */
    char client_ip[64]; /* the client address XCLIENT passed ("" none): penalised logins */

    enum smtp_input input;
    bool has_helo;
    bool is_esmtp;
    bool has_pipelining;         /* PIPELINING was announced (EHLO reply sent) */
    struct smtp_screen *screen;  /* port-25 checks in progress (screen.c), or NULL */
    struct smtp_milters *milters; /* the listener's milters (milters.c), or NULL */
    char helo[256];

    char *auth_user; /* after AUTH: canonical user */
    char auth_mech[21];
    struct auth_sasl *sasl; /* during an AUTH exchange */

    uint64_t handle;         /* core/job.h: jobs find the session again by it */
    bool is_busy;            /* a workpool job is in flight */
    bool is_output_paused;   /* reading paused until queued output drains */
    uint64_t line_started_ms; /* monotonic time the pending partial line began, 0 none */
    uint64_t body_started_ms; /* monotonic time DATA text / a BDAT chunk began, 0 none */
    uint64_t body_octets;     /* octets read since body_started_ms */
    bool is_discarding_line; /* skipping an overlong line up to its LF */
    unsigned n_errors;
    unsigned n_junk; /* NOOP/RSET/VRFY/HELP... since the last delivered message */

    struct smtp_txn txn;

    /* BDAT chunk being read */
    uint64_t bdat_remaining;
    bool bdat_is_last;
    char bdat_error[SMTP_REPLY_MAX]; /* non-empty: discard the chunk, then send this */

    /* statistics for the "disconnect from" line */
    enum smtp_verb cur_verb;
    unsigned stat_total[SMTP_VERB_COUNT];
    unsigned stat_ok[SMTP_VERB_COUNT];
};

/* reply.c */
/* Queue one reply line (CRLF added). Replies >= 400 count as errors; a 2xx counts as
 * success of the current command in the statistics. */
void smtp_reply(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "NOQUEUE: reject: RCPT from name[ip]: <reply>; from=<a> to=<b> proto=ESMTP helo=<h>" */
void smtp_log_reject(struct smtp_session *s, const char *cmd, const char *reply, const char *to);
/* The same for a milter's refusal: "NOQUEUE: milter-reject: RCPT from ..." */
void smtp_log_milter_reject(struct smtp_session *s, const char *cmd, const char *reply,
                            const char *to);
/* Append "ehlo=1 mail=1 rcpt=0/1 ... commands=N" to out. */
void smtp_stats_format(const struct smtp_session *s, struct buf *out);
const char *smtp_hostname(const struct smtp_session *s);
/* Copy peer-supplied text for a log line: control octets become '?', capped to size. */
void smtp_log_safe(const char *in, char *out, size_t size);

/* session.c */
void smtp_session_free(struct smtp_session *s);
/* Rate limits (policy/ratelimit.h): count a connection, MAIL or RCPT (event: enum ratelimit_event)
 * for the client address and the authenticated user. false: over a limit, the reply
 * (421 for a connection, 450 4.7.1 otherwise) is written and the refusal logged.
 * relay_networks and auth.trusted_networks are exempt (Postfix:
 * smtpd_client_event_limit_exceptions = $mynetworks). */
bool smtp_rate_allowed(struct smtp_session *s, int event);
/* Pause reading and submit job (job_init'ed by the caller with s->handle). */
void smtp_session_job_start(struct smtp_session *s, struct job *job);
/* The same after delay_ms (the failed-login delay). */
void smtp_session_job_start_delayed(struct smtp_session *s, struct job *job, unsigned delay_ms);
/* The same on another pool (the milters' own, ctx->milter_pool). */
void smtp_session_job_start_on(struct smtp_session *s, struct job *job, struct workpool *pool);
/* A job's done callback found its session: resume reading. */
void smtp_session_job_done(struct smtp_session *s);

/* envelope.c */
void smtp_cmd_mail(struct smtp_session *s, const struct smtp_command *cmd);
/* MAIL passed every check: start the transaction and answer 250. */
void smtp_mail_accept(struct smtp_session *s, const struct addr *from, const char *from_text,
                      const struct smtp_mail_params *params);
/* MAIL started its transaction and passed our checks (SPF included): the milters' MAIL
 * stage, then 250 (or their refusal). May start a job: a done callback that calls it
 * clears s->is_busy first and resumes only when it is still clear. */
void smtp_mail_accepted(struct smtp_session *s);
void smtp_cmd_rcpt(struct smtp_session *s, const struct smtp_command *cmd);
void smtp_txn_reset(struct smtp_txn *t);
void smtp_txn_init(struct smtp_txn *t);

/* Reply to the end of a message that is refused whole: once in SMTP, once per accepted
 * recipient in LMTP (RFC 2033 §4.2). n_rcpt: the transaction's accepted RCPTs. */
void smtp_reply_message(struct smtp_session *s, unsigned n_rcpt, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* body.c */
void smtp_cmd_data(struct smtp_session *s, const struct smtp_command *cmd);
void smtp_cmd_bdat(struct smtp_session *s, const struct smtp_command *cmd);
/* BURL: len octets an IMAP URL named join the message as a BDAT chunk would, then the
 * chunk's reply (250, or the end of the message when is_last). */
void smtp_body_add_chunk(struct smtp_session *s, const char *data, size_t len, bool is_last);
/* Consume message input in DATA / BDAT mode; returns false when no more can be done now. */
bool smtp_body_read(struct smtp_session *s);
/* An unlinked file in <data_dir>/tmp for message text (O_TMPFILE, else mkostemp +
 * unlink). Any thread. -1 on failure. */
int smtp_spill_file_open(const char *data_dir);
/* Before delivery: if the body was spilled, append the in-memory tail to the file. */
void smtp_body_finalize(struct smtp_session *s);

/* sasl.c */
void smtp_cmd_auth(struct smtp_session *s, const struct smtp_command *cmd);
void smtp_auth_response(struct smtp_session *s, const char *line, size_t len);
/* End a SASL exchange with this reply (line too long, ...). */
void smtp_auth_abort(struct smtp_session *s, const char *reply);
/* Which SASL mechanisms to advertise now (malloc'd, "" when none) or NULL. */
char *smtp_auth_mechanisms(struct smtp_session *s);

/* screen.c: port-25 screening (greeting pause, early talkers, DNSBL, pipelining, HELO,
 * RHSBL and sender domains). Each returns what the caller should do next. */

/* At connect: true when the checks run and the banner (or refusal) comes later. */
bool smtp_screen_greet(struct smtp_session *s);
/* A command line was read and `pending` octets follow it: false when that is pipelining
 * before PIPELINING was announced (the reply is written, the connection closes). */
bool smtp_screen_pipelining(struct smtp_session *s, const char *line, size_t pending);
/* HELO/EHLO argument: false when refused (the reply is written). */
bool smtp_screen_helo(struct smtp_session *s, const char *helo);
/* MAIL: true when lookups run; the answer (a refusal, or smtp_mail_accept) comes later. */
bool smtp_screen_mail(struct smtp_session *s, const struct addr *from, const char *from_text,
                      const struct smtp_mail_params *params);
/* RCPT of a local recipient: the greylist its RCPT job checks (ctx->greylist), or NULL
 * when this session is exempt or greylisting is off. */
struct greylist *smtp_screen_greylist(const struct smtp_session *s);
/* RCPT of a local recipient in a login process (no greylist file here): does greylisting
 * apply to this session (the RCPT job then asks a mail worker, smtp/remote.h)? */
bool smtp_screen_is_greylisted(const struct smtp_session *s);
/* The client's address for the checks (XCLIENT's, else the connection's). */
const char *smtp_screen_client_ip(const struct smtp_session *s);
void smtp_screen_free(struct smtp_session *s);

/* milters.c: the listener's milters asked at each command (connect, HELO, MAIL, RCPT),
 * each stage in a job on the milter pool; the message stages run in the delivery job
 * (filter.c) over the same conversations. */

/* What follows a stage, on the loop with the session: o is the milters' answer (a discard
 * at MAIL or RCPT is already noted for the transaction and comes as ACCEPT). */
typedef void smtp_milter_next_fn(struct smtp_session *s, void *arg,
                                 const struct milter_outcome *o);
/* The milters of this session's listener (smtp.milters, submission.milters; none for LMTP). */
const struct config_list *smtp_milter_list(const struct smtp_session *s);
/* Send the banner: after the milters' connect stage when the listener has milters (a
 * refusal replaces it), else at once. is_xclient: XCLIENT's 220 (a new conversation for
 * the client it names). */
void smtp_milter_greet(struct smtp_session *s, bool is_xclient);
/* The connect stage refused: every command but QUIT gets 503 (RFC 5321 §3.1). */
bool smtp_milter_is_denied(const struct smtp_session *s);
/* Ask the HELO (s->helo), MAIL (s->txn) or RCPT stage; next follows. false: no milter is
 * to be asked, go on at once (next is not called). arg is freed with arg_free when the
 * session has gone before next could run. */
bool smtp_milter_helo(struct smtp_session *s, smtp_milter_next_fn *next);
bool smtp_milter_mail(struct smtp_session *s, smtp_milter_next_fn *next);
bool smtp_milter_rcpt(struct smtp_session *s, const char *rcpt, smtp_milter_next_fn *next,
                      void *arg, void (*arg_free)(void *));
/* A refusal in o: logged ("milter-reject") and replied; true. false: go on. */
bool smtp_milter_refuses(struct smtp_session *s, const char *cmd,
                         const struct milter_outcome *o, const char *to);
/* RSET: the milters' message is aborted (without waiting). */
void smtp_milter_abort(struct smtp_session *s);
/* A milter discarded this transaction at MAIL or RCPT: its message is dropped. */
bool smtp_milter_is_discarded(const struct smtp_session *s);
/* The conversations for the message stages (moved out; NULL when no milter is to be
 * asked), and back after them (closed when the session has gone: s NULL). */
struct milter_session *smtp_milter_take(struct smtp_session *s);
void smtp_milter_give_back(struct smtp_session *s, struct milter_session *ms);
void smtp_milter_free(struct smtp_session *s);

/* etrn.c */
/* ETRN (RFC 1985): flush the deferred mail of a domain in the workpool. */
void smtp_cmd_etrn(struct smtp_session *s, const struct smtp_command *cmd);

/* burl.c (RFC 4468) */
void smtp_cmd_burl(struct smtp_session *s, const struct smtp_command *cmd);
/* Does this session offer "BURL imap" (an authenticated submission session)? */
bool smtp_burl_is_offered(const struct smtp_session *s);

/* delivery.c */
/* The message is complete and checked: deliver it in the workpool; the reply follows. */
void smtp_delivery_start(struct smtp_session *s);

#endif
