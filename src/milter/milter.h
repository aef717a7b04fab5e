/*
 * milter.h - the Sendmail milter protocol, version 6 as Postfix speaks it (milter8.c), as
 * a client: rspamd, OpenDKIM, clamav-milter and every other filter speak it.
 *
 * A list of milters is asked one after the other, each in its own conversation: for an
 * SMTP session stage by stage (milter_session below), for a local submission all at once
 * (milter_run). A conversation: option negotiation (SMFIC_OPTNEG: actions and protocol
 * flags, the macros a milter asks for), then every stage the milter did not switch off
 * (SMFIP_NO*): connect, helo, mail, rcpt (each), data, header (each), end of headers,
 * body (65535-octet chunks), end of message, quit; a stage marked no-reply (SMFIP_NR_*)
 * is not waited for. Macros sent: j, _, {daemon_name}, {client_addr}, {client_name},
 * {client_port}, {if_addr}... at connect; {tls_version} at helo; {i}, {mail_addr},
 * {auth_authen}, {auth_type} at mail; {rcpt_addr} at rcpt.
 * The answers: accept (stop asking this milter), continue, reject, tempfail, discard,
 * replycode ("5xx"/"4xx" with text), skip (no more body), progress (the timeout starts
 * again); at end of message, before its verdict, the modifications: add, insert and
 * change (or delete) a header, replace the body, change the sender, add or delete a
 * recipient, quarantine. A later milter sees the message as the earlier ones left it.
 *
 * Postfix's rules, kept: a reject or tempfail ends the run (later milters are asked
 * nothing); discard ends it and the message is dropped silently; a milter that cannot be
 * reached, times out, or breaks the protocol gets its default action (tempfail or accept,
 * milter.default_action), and is logged; nothing a milter sends can make us allocate more
 * than MILTER_MAX_PACKET per packet or keep more than MILTER_MAX_CHANGES modifications.
 *
 * Thread rules: milter_run() is BLOCKING (sockets with poll() timeouts): run it on a
 * workpool thread. Everything it reads and writes is the plain data passed in; nothing
 * here touches a session. Ownership: milter_outcome_free() releases what a run filled in.
 */
#ifndef TERN_MILTER_MILTER_H
#define TERN_MILTER_MILTER_H

#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config_list;

#define MILTER_MAX_PACKET  (1024 * 1024) /* larger packets end the conversation */
#define MILTER_MAX_CHANGES 1000          /* modifications kept per message */
#define MILTER_CHUNK       65535         /* body chunk size (libmilter MILTER_CHUNK_SIZE) */

/* Stages a milter can be asked for macros at (SMFIM_*, in SETSYMLIST order). */
enum milter_stage {
    MILTER_STAGE_CONNECT,
    MILTER_STAGE_HELO,
    MILTER_STAGE_MAIL,
    MILTER_STAGE_RCPT,
    MILTER_STAGE_DATA,
    MILTER_STAGE_EOM,
    MILTER_STAGE_EOH,
    MILTER_STAGE_COUNT,
};

enum milter_default { MILTER_DEFAULT_TEMPFAIL, MILTER_DEFAULT_ACCEPT };

/* One configured milter. */
struct milter_spec {
    char address[256]; /* "inet:host:port", "inet6:[addr]:port" or "unix:/path" */
    unsigned connect_timeout_ms, command_timeout_ms, content_timeout_ms;
    enum milter_default default_action;
};

/* "inet:127.0.0.1:11332", "inet6:[::1]:11332", "unix:/run/x.sock": well formed? */
bool milter_address_is_valid(const char *address);
struct config;
/* The specs of a list of addresses (smtp.milters, ...) with the milter.* timeouts and
 * default action of cfg. Returns how many; *specs_r is malloc'd (NULL when none or out of
 * memory: then *is_oom_r). */
size_t milter_specs_from_config(const struct config *cfg, const struct config_list *list,
                                struct milter_spec **specs_r, bool *is_oom_r);

/* The message and its envelope, as plain data. */
struct milter_message {
    const char *client_name; /* "localhost", "unknown" */
    const char *client_addr; /* "192.0.2.1"; NULL for a local submission */
    unsigned client_port;
    const char *local_addr; /* {if_addr} */
    const char *helo;       /* "" when none */
    const char *hostname;   /* macro j and {daemon_name}'s host */
    const char *daemon_name;
    const char *queue_id;  /* {i} */
    const char *auth_user; /* {auth_authen}, NULL when not authenticated */
    const char *auth_mech; /* {auth_type} */
    const char *tls_version; /* {tls_version}, NULL without TLS */
    const char *sender;    /* "" for the null sender */
    const char *const *rcpts;
    size_t n_rcpts;
    const char *data; /* the message as received: header fields, empty line, body */
    size_t len;
};

enum milter_verdict {
    MILTER_ACCEPT,   /* deliver (with the modifications) */
    MILTER_REJECT,   /* refuse with reply (5xx) */
    MILTER_TEMPFAIL, /* refuse with reply (4xx) */
    MILTER_DISCARD,  /* accept and drop silently */
};

enum milter_change_kind {
    MILTER_ADD_HEADER,    /* name, value: append */
    MILTER_INSERT_HEADER, /* index (0 = first field), name, value */
    MILTER_CHANGE_HEADER, /* index (1-based occurrence of name), name, value ("" deletes) */
    MILTER_ADD_RCPT,      /* name = address (args in value, may be NULL) */
    MILTER_DEL_RCPT,      /* name = address */
    MILTER_CHANGE_FROM,   /* name = address (args in value) */
};

struct milter_change {
    enum milter_change_kind kind;
    uint32_t index;
    char *name;
    char *value;
};

struct milter_outcome {
    enum milter_verdict verdict;
    char reply[512];   /* for REJECT/TEMPFAIL: "550 5.7.1 ..." */
    char *quarantine;  /* the reason a milter quarantined the message, or NULL */
    struct milter_change *changes;
    size_t n_changes;
    bool has_new_body;
    struct buf new_body; /* the replaced body, when has_new_body */
    char why[256];       /* for the log: which milter decided what */
};

/* BLOCKING. Run msg through milters[0..n) in order, every stage in one go (a local
 * submission: Postfix's non_smtpd_milters); fills *o (free with milter_outcome_free).
 * Never fails as a call: trouble becomes a verdict. */
void milter_run(const struct milter_spec *milters, size_t n, const struct milter_message *msg,
                struct milter_outcome *o);
void milter_outcome_free(struct milter_outcome *o);

/* ---- a conversation that follows an SMTP session, stage by stage (Postfix smtpd) -------
 *
 * One milter_session holds the connections to every milter of a listener for one SMTP
 * session. Each stage is asked at its command: connect when the client connects, helo at
 * HELO/EHLO, mail at MAIL FROM, rcpt at each RCPT TO, then data, headers, body and end of
 * message when the message has arrived. Each call fills *o (ACCEPT, or the verdict of the
 * first milter that did not continue, with its reply; free with milter_outcome_free).
 *
 * Per milter, what it said is remembered as Postfix's milter8 does: "accept" at connect or
 * helo skips it for the rest of the session, at a message stage for the rest of the
 * message; a reject or tempfail at connect or helo is repeated at every later stage; one
 * that cannot be reached, times out or breaks the protocol is closed and from then on
 * gives its default action (tempfail: every later stage is refused with 451 4.7.1;
 * accept: it is skipped). A mail stage aborts (SMFIC_ABORT) a message still open, and the
 * message stage aborts the milters it did not reach, so each transaction starts clean.
 *
 * Thread rules: the stage calls BLOCK (poll() with the milter's timeouts): a session moves
 * its milter_session into a job and the pool thread calls them; milter_session_abort
 * with is_nowait and milter_session_free never wait (one non-blocking send each) and may
 * run on the loop. One thread at a time per milter_session. */
struct milter_session;
/* The connections-to-be (nothing is opened yet) for milters[0..n), with the connect-level
 * macros copied from info (client_name, client_addr, client_port, local_addr, hostname,
 * daemon_name; client_addr NULL for a local submission). NULL when out of memory. */
struct milter_session *milter_session_new(const struct milter_spec *milters, size_t n,
                                          const struct milter_message *info);
/* Connect, negotiate and send the connect stage. */
void milter_session_connect(struct milter_session *ms, struct milter_outcome *o);
/* HELO/EHLO: m->helo, m->tls_version. A DISCARD at connect or helo is a protocol error. */
void milter_session_helo(struct milter_session *ms, const struct milter_message *m,
                         struct milter_outcome *o);
/* MAIL FROM: m->sender, m->queue_id (may be NULL), m->auth_user, m->auth_mech. */
void milter_session_mail(struct milter_session *ms, const struct milter_message *m,
                         struct milter_outcome *o);
/* One RCPT TO: a reject or tempfail refuses this recipient only; DISCARD the message. */
void milter_session_rcpt(struct milter_session *ms, const char *rcpt, struct milter_outcome *o);
/* DATA, header fields, end of headers, body, end of message over m->data: the verdict
 * and the modifications (a later milter sees the message as the earlier ones left it). */
void milter_session_message(struct milter_session *ms, const struct milter_message *m,
                            struct milter_outcome *o);
/* RSET, or a transaction that ended before its message: SMFIC_ABORT to every milter in a
 * message. is_nowait: one non-blocking send each (a milter whose socket is full counts as
 * broken). */
void milter_session_abort(struct milter_session *ms, bool is_nowait);
/* Is any milter still to be asked (not every one accepted the session or is gone with
 * default accept)? */
bool milter_session_is_active(const struct milter_session *ms);
/* QUIT to every open milter (non-blocking) and close. NULL is ignored. */
void milter_session_free(struct milter_session *ms);

/* The message with the outcome's header changes and new body applied (header values as
 * milters send them: LF between folded lines, becoming CRLF). 0, or -1 when out of memory
 * or the result would pass max_size. */
int milter_message_rewrite(const char *data, size_t len, const struct milter_outcome *o,
                           uint64_t max_size, struct buf *out);

/* ---- the wire, exposed for the unit tests and the fuzzer ---------------------------- */

/* One reply packet a milter sent (after the 4-octet length): cmd and what it carries,
 * pointing into the packet. */
struct milter_reply {
    char cmd;
    uint32_t index;    /* 'i', 'm' */
    const char *str1;  /* 'y' text, 'q' reason, '+', '-', 'e', '2' address, 'h'/'i'/'m' name */
    const char *str2;  /* 'h'/'i'/'m' value, '2'/'e' args (may be NULL) */
    const char *data;  /* 'b' body chunk */
    size_t data_len;
    /* 'O' (option negotiation) */
    uint32_t version, actions, protocol;
    const char *macros[MILTER_STAGE_COUNT]; /* SETSYMLIST lists, NULL when not sent */
};
/* Parse one packet payload (command octet first). false if malformed: a string without
 * its NUL, a short 'O', an index missing, an unknown command. */
bool milter_reply_parse(const char *pkt, size_t len, struct milter_reply *r_r);

#endif
