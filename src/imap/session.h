/*
 * session.h - internals shared by the IMAP session files (not a public contract):
 *   session.c  connection callbacks, input loop, command table, auth commands, IDLE
 *   mailbox.c  SELECT/EXAMINE, CREATE/DELETE/RENAME/(UN)SUBSCRIBE, STATUS,
 *              CLOSE/UNSELECT/CHECK, EXPUNGE, COPY/MOVE, untagged updates
 *   list.c     LIST/LSUB (RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS)
 *   append.c   APPEND (RFC 3502 MULTIAPPEND)
 *   args.c     what LIST/APPEND/STATUS arguments mean (pure, see args.h)
 *   fetch.c    FETCH and STORE
 *   search.c   SEARCH
 *
 * Blocking work: a command handler (loop thread) fills a struct imap_job and submits it;
 * job->work runs on a workpool thread and does the store/auth calls, writing the whole
 * reply into job->out; job->finish (loop thread, optional) updates the session; then the
 * reply is written and reading resumes. While a job is in flight the session reads nothing,
 * so the store handles (user, box) are used by one thread at a time.
 */
#ifndef TERN_IMAP_SESSION_H
#define TERN_IMAP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "imap/parse.h"

struct conn;
struct store_user;
struct store_mailbox;
struct auth_sasl;
struct event;

enum imap_state {
    IMAP_STATE_NOT_AUTH = 1 << 0,
    IMAP_STATE_AUTH = 1 << 1,
    IMAP_STATE_SELECTED = 1 << 2,
    IMAP_STATE_LOGOUT = 1 << 3,
};

struct imap_fetch;

struct imap_session {
    struct conn *c;
    enum imap_state state;
    struct imap_parser parser;
    bool is_in_literal;
    /* slowloris deadline: monotonic time the pending command (or SASL/IDLE line) began,
     * 0 none, and the literal octets of that command read so far */
    uint64_t input_started_ms;
    uint64_t input_literal_octets;
    /* APPEND literals too big for memory go to one unlinked file per command, one after
     * the other (MULTIAPPEND: several); each literal argument records its offset. */
    int spill_fd;             /* the command's spill file, or -1 */
    uint64_t spill_end;       /* bytes written to it */
    bool is_spilling;         /* the literal being read goes to the file */
    uint64_t spill_remaining; /* bytes of that literal still to come */
    uint64_t literal_memory;  /* bytes of this command's APPEND literals kept in memory */
    bool is_job_in_flight;
    bool is_dead;       /* connection closed while a job was in flight */
    bool is_closing;    /* LOGOUT/BYE sent */
    bool is_logged_out; /* the client said LOGOUT (for the log) */

    /* the client address a trusted proxy passed (ID x-originating-ip); "" none */
    char client_ip[64];

    /* authenticated user */
    char *username;
    struct store_user *user;
    void *notify_sub;
    bool has_pending_changes; /* a store notification arrived */

    /* AUTHENTICATE in progress */
    struct auth_sasl *sasl;
    char *sasl_tag;
    /* authenticated, waiting for the client's answer to the server's final SASL data */
    struct store_user *sasl_pending_user;
    char *sasl_pending_name;

    /* selected mailbox */
    struct store_mailbox *box;
    char *box_name;
    bool is_readonly;

    /* IDLE */
    bool is_condstore; /* RFC 7162 CONDSTORE enabled: flag changes carry MODSEQ */
    bool is_idling;
    char *idle_tag;
    struct event *idle_timer; /* "* OK Still here" keepalives while idling */
    uint64_t idle_start_ms;   /* monotonic start of the IDLE (RFC 2177 time limit) */

    /* FETCH continuing across batches (backpressure) */
    struct imap_fetch *fetch;
    bool is_fetch_waiting_drain;
};

struct imap_job;
typedef void imap_job_fn(struct imap_job *j);

struct imap_job {
    struct imap_session *s;
    char *tag;
    imap_job_fn *work;   /* pool thread */
    imap_job_fn *finish; /* loop thread, before the reply is written (may be NULL) */
    struct buf out;      /* untagged reply lines */
    struct buf tagged;   /* the tagged completion, written after out */
    bool do_sync;        /* may report mailbox changes (never for FETCH/STORE/SEARCH,
                            whose sequence numbers must stay put: RFC 3501 §7.4.1; their
                            UID forms may, after their own responses) */
    bool is_sync_forced; /* sync even without a notification (NOOP, CHECK, IDLE) */
    bool keep_paused;    /* set by finish: another job follows (FETCH batches) */
    bool is_ok;          /* set by work */
    unsigned delay_ms;   /* hold the job this long before it runs (failed-login delay) */
    /* command payload */
    char *arg1, *arg2;
    struct buf data; /* APPEND message (in memory) */
    int fd;          /* APPEND message in a spill file (-1 none); closed with the job */
    uint64_t fd_size;
    unsigned flags;
    char **keywords;
    int64_t number;
    bool is_uid;
    void *ptr;
    void (*ptr_free)(void *ptr);
    /* results for finish */
    struct store_mailbox *new_box;
    struct store_user *new_user;
    char *new_name;
};

/* ---- session.c ---- */
struct imap_job *imap_job_new(struct imap_session *s, const char *tag, imap_job_fn *work,
                              imap_job_fn *finish);
void imap_job_submit(struct imap_job *j);
void imap_reply(struct imap_session *s, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* CAPABILITY list for the current state, without "* CAPABILITY ". */
void imap_capability_string(struct imap_session *s, struct buf *out);
void imap_session_start_idle_sync(struct imap_session *s);

/* ---- mailbox.c ---- */
typedef void imap_handler(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                          bool is_uid);
imap_handler imap_cmd_select, imap_cmd_examine, imap_cmd_create, imap_cmd_delete, imap_cmd_rename,
    imap_cmd_subscribe, imap_cmd_unsubscribe, imap_cmd_status, imap_cmd_namespace, imap_cmd_check,
    imap_cmd_close, imap_cmd_unselect, imap_cmd_expunge, imap_cmd_copy, imap_cmd_move,
    imap_cmd_noop;
/* Work step: sync the selected view and append untagged EXPUNGE/EXISTS/RECENT/FETCH. */
void imap_job_sync(struct imap_job *j);
/* "tag NO <fmt with err>" into the job's tagged reply; frees err. */
void imap_job_err(struct imap_job *j, const char *fmt, char *err);
/* Flags of a message as an IMAP list "(\Seen ...)". */
void imap_write_flags(struct buf *out, unsigned flags, char *const *keywords);
/* Parse a flag list (or single flag) argument into bits and keywords; false on bad flag. */
bool imap_parse_flags(const struct imap_arg *a, unsigned *flags_r, char ***keywords_r);
void imap_keywords_free(char **k);
/* Mailbox name from an astring argument ("inbox" -> "INBOX"); malloc'd or NULL. */
char *imap_mailbox_name(const struct imap_arg *a);
/* 0-based indexes of the view matching a sequence or UID set, malloc'd. */
bool imap_resolve_set(struct store_mailbox *box, const char *set, bool is_uid, size_t **idx_r,
                      size_t *n_r);

/* "* STATUS name (items)" for the IMAP_ST_* items (args.h) of st. */
struct store_status;
void imap_status_write(struct buf *out, const char *name, unsigned items,
                       const struct store_status *st);
/* "tag OK text" into the job's tagged reply. */
void imap_job_ok(struct imap_job *j, const char *text);
/* Append "a:b,c" for a list of UIDs (in the order given, runs compressed). */
void imap_write_uid_set(struct buf *out, const uint32_t *uids, size_t n);

/* ---- list.c ---- */
imap_handler imap_cmd_list, imap_cmd_lsub;

/* ---- append.c ---- */
imap_handler imap_cmd_append;

/* ---- fetch.c ---- */
imap_handler imap_cmd_fetch, imap_cmd_store;
void imap_fetch_free(struct imap_fetch *f);
/* on_drained: continue a FETCH that waits for the output to drain. */
void imap_fetch_resume(struct imap_session *s);

/* ---- search.c ---- */
imap_handler imap_cmd_search;
/* ---- quota.c ---- */
imap_handler imap_cmd_getquotaroot, imap_cmd_getquota, imap_cmd_setquota;
/* Work step (BLOCKING): may add_bytes more be stored for this user? If not, writes the
 * tagged NO ([OVERQUOTA], or [UNAVAILABLE] when the lookup failed) and returns false. */
bool imap_quota_allows(struct imap_job *j, uint64_t add_bytes);

#endif
