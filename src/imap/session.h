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
 *   context.c  RFC 5267 updating contexts (SEARCH/SORT RETURN (UPDATE)), CANCELUPDATE
 *
 * Blocking work (core/job.h, the thread rule): a command handler (loop thread) fills a
 * typed job, a struct embedding struct imap_job first, with its request (copied strings,
 * plain values) and submits it. The session's store handles and any FETCH or AUTHENTICATE
 * state in progress are MOVED into the job's ctx at submit (the session's fields are NULL
 * meanwhile) together with plain copies of what the work may need to know (user name,
 * peer address, read-only, CONDSTORE). job->work runs on a workpool thread and sees only
 * the job: it does the store/auth calls and writes the whole reply into job->out and
 * job->tagged. Back on the loop the session is found again by its handle: the handles
 * move back, job->finish (optional) updates the session, the reply is written and
 * reading resumes. When the session has gone, the job closes the handles itself. While
 * a job is in flight the session reads nothing, so handles are used by one thread at a
 * time.
 */
#ifndef TERN_IMAP_SESSION_H
#define TERN_IMAP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"
#include "core/job.h"
#include "imap/args.h"
#include "imap/parse.h"
#include "store/mime.h"

struct conn;
struct store_user;
struct store_mailbox;
struct auth_sasl;
struct auth_service;
struct event;
struct conn_handoff;

enum imap_state {
    IMAP_STATE_NOT_AUTH = 1 << 0,
    IMAP_STATE_AUTH = 1 << 1,
    IMAP_STATE_SELECTED = 1 << 2,
    IMAP_STATE_LOGOUT = 1 << 3,
};

struct imap_fetch;
struct imap_keywords;
struct imap_updates;

/* What a login's work gives back: the user's store, opened on the pool thread; in a login
 * process instead the auth process's token for the handover (no store). */
struct imap_login_result {
    int rc; /* 1 logged in, 0 bad credentials, -1 temporary failure */
    struct store_user *user;
    char *name;     /* canonical user@domain */
    uint64_t quota; /* bytes, 0 none */
    char token[65]; /* login process: AUTH_TOKEN_SIZE, "" none */
};

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
    /* LITERAL- (RFC 7888 §5): a refused command's {n+} literal octets still to skip, and
     * whether the rest of that command (its following lines) is being skipped */
    uint64_t skip_remaining;
    bool is_skipping;
    uint64_t handle;    /* core/job.h: jobs find the session again by it */
    bool is_job_in_flight;
    bool is_closing;    /* LOGOUT/BYE sent */
    bool is_logged_out; /* the client said LOGOUT (for the log) */

    /* the client address a trusted proxy passed (ID x-originating-ip); "" none */
    char client_ip[64];

    /* authenticated user (user, box, fetch and sasl are NULL while moved into a job) */
    char *username;
    uint64_t quota; /* storage limit in bytes from the directory at login, 0 none */
    struct store_user *user;
    void *notify_sub;
    bool has_pending_changes; /* a store notification arrived */

    /* AUTHENTICATE in progress */
    struct auth_sasl *sasl;
    char *sasl_tag;
    /* authenticated, waiting for the client's answer to the server's final SASL data */
    struct imap_login_result sasl_pending;
    char sasl_method[32]; /* its mechanism (a handed-over session has no exchange here) */

    /* privilege separation (imap/handoff.c) */
    char *handoff_tag; /* login process: the login command being handed over */
    char handoff_method[32];

    /* selected mailbox */
    struct store_mailbox *box;
    struct imap_keywords *keywords; /* announced in FLAGS (keywords.c); moves with box */
    char *box_name;
    bool is_readonly;

    /* IDLE */
    bool is_condstore; /* RFC 7162 CONDSTORE enabled: flag changes carry MODSEQ */
    bool is_qresync;   /* RFC 7162 §3.2 QRESYNC enabled: VANISHED instead of EXPUNGE */
    bool is_rev2;        /* RFC 9051 Appendix A: ENABLE IMAP4rev2 (imap_is_utf8 too) */
    bool is_utf8_accept; /* RFC 6855 §3: ENABLE UTF8=ACCEPT */
    bool is_idling;
    char *idle_tag;
    struct event *idle_timer; /* "* OK Still here" keepalives while idling */
    uint64_t idle_start_ms;   /* monotonic start of the IDLE (RFC 2177 time limit) */

    /* RFC 5255 COMPARATOR: how SEARCH and SORT compare strings (session lifetime) */
    enum mime_comparator comparator;

    /* RFC 5267 updating contexts of the selected mailbox (context.c); moves with box */
    struct imap_updates *updates;

    /* RFC 5182 SEARCHRES: the saved search result "$" as ascending UIDs */
    uint32_t *searchres;
    size_t n_searchres;

    /* FETCH continuing across batches (backpressure) */
    struct imap_fetch *fetch;
    bool is_fetch_waiting_drain;
    bool is_in_fetch_literal; /* the output so far ends inside a streamed literal */
    bool is_fetch_internal;   /* imap_fetch_internal is starting a FETCH */

    /* RFC 5465 NOTIFY (notify.c); NULL until NOTIFY SET */
    struct imap_notify *notify;
    bool is_notify_sync_pending; /* NOTIFY SELECTED: the selected mailbox changed */
    bool is_notify_overflowed;   /* RFC 5465 §5.8: NOTIFY was turned off, not told yet */
};

struct imap_job;
/* Pool thread: the job and nothing else (never a session or a connection). */
typedef void imap_job_fn(struct imap_job *j);
/* Loop thread, session alive: apply the result to the session before the reply goes. */
typedef void imap_finish_fn(struct imap_session *s, struct imap_job *j);
/* Loop thread: free the command's own request and result fields (not the base). */
typedef void imap_cleanup_fn(struct imap_job *j);

/* What a command's work may use besides its own request: the session's handles, moved
 * in at submit and moved back on the loop when the job is done (closed if the session
 * has gone), and plain copies of the session facts the work needs. */
struct imap_job_ctx {
    struct auth_service *auth;  /* process lifetime */
    struct store_user *user;    /* the session's store (NULL before login) */
    struct store_mailbox *box;  /* the selected mailbox; work may replace or close it */
    struct imap_fetch *fetch;   /* a FETCH continuing across batches */
    struct auth_sasl *sasl;     /* an AUTHENTICATE exchange */
    struct imap_keywords *keywords; /* keywords the client was told of (keywords.c) */
    struct imap_updates *updates;   /* RFC 5267 updating contexts (context.c) */
    char *username;             /* copy of the logged-in user ("" before login) */
    char peer_ip[46];           /* copy of the client's address */
    uint64_t quota;             /* the user's storage limit in bytes, 0 none (at login) */
    bool is_readonly;           /* the selected mailbox was EXAMINEd */
    bool is_condstore;          /* CONDSTORE enabled: flag changes carry MODSEQ */
    bool is_qresync;            /* QRESYNC enabled: expunges are reported as VANISHED */
    bool is_rev2;               /* IMAP4rev2 enabled: no \Recent, ESEARCH, LIST in SELECT */
    bool is_utf8;               /* mailbox names in UTF-8 (imap_is_utf8) */
    uint64_t max_append;        /* the largest message APPEND takes (RFC 7889 APPENDLIMIT) */
    bool is_login_process;      /* logins are handed over (conn_is_login_process) */
    char binding[161];          /* login process: the connection (conn_login_binding) */
    struct store_sync_share *sync_share; /* borrowed: a batch of IDLE syncs (session.c) */
    bool is_utf8_append_strict; /* imap.utf8_append_strict (append.c) */
};

/* The base of every IMAP job; a command's job struct starts with it. */
struct imap_job {
    struct job job; /* first: core/job.h */
    char *tag;
    imap_job_fn *work;       /* pool thread */
    imap_finish_fn *finish;  /* loop thread, before the reply is written (may be NULL) */
    imap_cleanup_fn *cleanup; /* frees the command's fields (may be NULL) */
    struct imap_job_ctx ctx;
    struct buf out;      /* untagged reply lines */
    struct buf tagged;   /* the tagged completion, written after out */
    bool do_sync;        /* may report mailbox changes (never for FETCH/STORE/SEARCH,
                            whose sequence numbers must stay put: RFC 3501 §7.4.1; their
                            UID forms may, after their own responses) */
    bool is_sync_forced; /* sync even without a notification (NOOP, CHECK, IDLE) */
    bool keep_paused;    /* set by finish: another job follows (FETCH batches) */
    bool is_idle_sync;   /* an IDLE session's sync: reading stays on meanwhile */
    bool is_ok;          /* set by work */
    unsigned hold_ms;    /* set by work: run it again after this delay (the failed-login
                            delay), nothing else done with it until then */
};

/* The typed job of a command: struct T { struct imap_job base; ... }. */
#define IMAP_JOB(type, j) ((struct type *)(void *)(j))

/* Does the session speak UTF-8 mailbox names and quoted strings (RFC 9051 §5.1 after
 * ENABLE IMAP4rev2, RFC 6855 §3 after ENABLE UTF8=ACCEPT)? */
static inline bool imap_is_utf8(const struct imap_session *s)
{
    return s->is_rev2 || s->is_utf8_accept;
}

/* ---- session.c ---- */
/* A job of `size` bytes (the command's struct, zeroed) for s, or NULL (out of memory:
 * "NO" already answered). */
struct imap_job *imap_job_new(struct imap_session *s, const char *tag, size_t size,
                              imap_job_fn *work, imap_finish_fn *finish, imap_cleanup_fn *cleanup);
/* Move the session's handles in, pause reading and queue the job. */
void imap_job_submit(struct imap_session *s, struct imap_job *j);
void imap_reply(struct imap_session *s, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* CAPABILITY list for the current state, without "* CAPABILITY ". */
void imap_capability_string(struct imap_session *s, struct buf *out);
void imap_session_start_idle_sync(struct imap_session *s);
/* A CONDSTORE-enabling command (RFC 7162 §3.1): enable it, telling HIGHESTMODSEQ the first
 * time while a mailbox is selected. Loop thread, no job in flight. */
void imap_condstore_enable(struct imap_session *s);

/* Free a job that was never submitted (filling it ran out of memory): "NO" to the tag. */
void imap_job_discard(struct imap_session *s, struct imap_job *j);
/* Free a job that was never submitted, without a reply (the caller answers). */
void imap_job_discard_quiet(struct imap_session *s, struct imap_job *j);

/* ---- session.c, for handoff.c ---- */
/* Work: after credentials are good, open the user's store into r. */
void imap_login_open_store(const struct imap_job_ctx *ctx, const char *user,
                           struct imap_login_result *r);
void imap_login_result_free(struct imap_login_result *r);
/* The reply to a finished login attempt: OK and authenticated, or NO. */
void imap_login_finish_common(struct imap_session *s, struct imap_job *j,
                              struct imap_login_result *r, const char *login, const char *method);
/* A new session for c (NOT_AUTH), without the greeting; NULL when out of memory. */
struct imap_session *imap_session_new(struct conn *c);
/* Free a session and what it holds (after job_session_remove of its handle). */
void imap_session_free(struct imap_session *s);

/* ---- handoff.c (privilege separation: conn_handoff) ---- */
/* Login process: the client logged in; hand the session to a mail worker, which answers
 * tag (after writing sasl_final as a last challenge, when not NULL or ""). false when it
 * could not even start (nothing written: the caller answers with a temporary failure). */
bool imap_handoff(struct imap_session *s, const char *tag, struct imap_login_result *r,
                  const char *method, const char *sasl_final);
void imap_on_handoff_failed(void *session, struct conn *c);
/* Mail worker: a session a login process handed over (conn_protocol.adopt). */
void *imap_adopt(struct conn *c, const struct conn_handoff *h);

/* ---- keywords.c ---- */
/* SELECT/EXAMINE: the set becomes the view's keywords; writes FLAGS and PERMANENTFLAGS. */
void imap_keywords_select(struct imap_job_ctx *ctx, bool is_readonly, struct buf *out);
/* Before a FETCH line with these flags: announce keywords the client has not seen. */
void imap_keywords_announce(struct imap_job_ctx *ctx, char *const *keywords, struct buf *out);
void imap_keywords_set_free(struct imap_keywords *k);

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
/* The same for a command of s: a UTF-8 session's name becomes the store's modified UTF-7
 * (mailname.h); NULL also when that name is not allowed. */
char *imap_session_mailbox_name(const struct imap_session *s, const struct imap_arg *a);
/* A stored mailbox name as the client reads it: UTF-8 (quoted) for a UTF-8 session. */
void imap_write_mailbox(struct buf *out, const char *stored, bool is_utf8);
/* A name already in the client's form (UTF-8 for a UTF-8 session). */
void imap_write_mailbox_shown(struct buf *out, const char *shown, bool is_utf8);
/* The flags a message shows this session (IMAP4rev2: without \Recent). */
unsigned imap_flags_shown(const struct imap_job_ctx *ctx, unsigned flags);
/* 0-based indexes of the view matching a sequence or UID set, malloc'd. */
bool imap_resolve_set(struct store_mailbox *box, const char *set, bool is_uid, size_t **idx_r,
                      size_t *n_r);

/* "* STATUS name (items)" for the IMAP_ST_* items (args.h) of st. */
struct store_status;
void imap_status_write(struct buf *out, const char *name, unsigned items,
                       const struct store_status *st, uint64_t appendlimit, bool is_utf8);
/* RFC 8474 OBJECTID: a mailbox's MAILBOXID and a message's EMAILID. */
void imap_write_mailboxid(struct buf *out, uint32_t uidvalidity);
void imap_write_emailid(struct buf *out, uint32_t uidvalidity, uint32_t uid);
/* RFC 8474 THREADID of the message msg[0..len) (its header is enough); false when it has
 * no Message-ID, References or In-Reply-To (no thread: NIL). */
bool imap_write_threadid(struct buf *out, const char *msg, size_t len);
/* RFC 8514 SAVEDATE of a message (seconds), 0 when unknown. */
struct store_message;
time_t imap_message_savedate(const struct store_message *m);
/* Expunges of n messages: "* VANISHED uids" with QRESYNC (RFC 7162 §3.2.10), else one
 * "* seq EXPUNGE" per message in the order given (RFC 3501 §7.4.1 numbering). */
void imap_write_expunges(struct imap_job *j, const uint32_t *seqs, const uint32_t *uids, size_t n);
/* "tag OK text" into the job's tagged reply. */
void imap_job_ok(struct imap_job *j, const char *text);
/* Append "a:b,c" for a list of UIDs (in the order given, runs compressed). */
void imap_write_uid_set(struct buf *out, const uint32_t *uids, size_t n);

/* ---- list.c ---- */
imap_handler imap_cmd_list, imap_cmd_lsub;

/* ---- append.c ---- */
imap_handler imap_cmd_append, imap_cmd_replace;

/* ---- urlauth.c (RFC 4467) ---- */
imap_handler imap_cmd_genurlauth, imap_cmd_resetkey, imap_cmd_urlfetch;
/* "[BADURL url]" (RFC 4469 §6), the URL cut before anything a response code cannot hold. */
void imap_write_badurl(struct buf *out, const char *url);

/* ---- fetch.c ---- */
imap_handler imap_cmd_fetch, imap_cmd_store;
void imap_fetch_free(struct imap_fetch *f);
/* Are these FETCH items (an attribute or a list) valid? (RFC 5465 MessageNew's list) */
bool imap_fetch_items_ok(const struct imap_arg *items);
/* RFC 5465 §5.2: UID FETCH uid_lo:uid_hi items without a command of the client's: the
 * FETCH lines go out unsolicited, with no completion. Loop thread, no job in flight. */
void imap_fetch_internal(struct imap_session *s, uint32_t uid_lo, uint32_t uid_hi,
                         struct imap_arg *items);
/* on_drained: continue a FETCH that waits for the output to drain. */
void imap_fetch_resume(struct imap_session *s);

/* ---- search.c ---- */
imap_handler imap_cmd_search;
/* SEARCH criteria (RFC 3501 §6.4.4, RFC 7162 MODSEQ, RFC 5032 WITHIN, RFC 5182 "$"):
 * parsed on the loop (saved: the session's saved result, copied), evaluated in work. */
struct skey;
struct imap_search_return;
struct skey *imap_search_parse(struct imap_arg *args, size_t n, const uint32_t *saved,
                               size_t n_saved, bool *has_modseq_r);
void imap_search_free(struct skey *root);
/* Work step (BLOCKING): match[i] for every message i of box; returns how many match. */
size_t imap_search_match(const struct skey *root, struct store_mailbox *box, bool *match);
/* Does message i of the view match (the view is not empty)? */
bool imap_search_match_one(const struct skey *root, struct store_mailbox *box, size_t i);
/* Can the result of the program be kept up to date from the messages' changes alone (no
 * sequence numbers, no UID "*", no time-relative keys)? */
bool imap_search_is_updatable(const struct skey *root);
/* The same with text keys compared by cmp (RFC 5255 COMPARATOR; the function above: the
 * default, i;unicode-casemap). */
struct skey *imap_search_parse_cmp(struct imap_arg *args, size_t n, const uint32_t *saved,
                                   size_t n_saved, enum mime_comparator cmp, bool *has_modseq_r);
/* "CHARSET"/SORT/THREAD charset argument: true for UTF-8 and US-ASCII, else NO
 * [BADCHARSET] answered. */
bool imap_search_charset_ok(struct imap_session *s, const char *tag, const struct imap_arg *cs);
/* "* ESEARCH ..." of results v[0..n) in result order (RFC 4731, RFC 5267); modseq 0: none. */
void imap_esearch_write(struct buf *out, const char *tag, bool is_uid,
                        const struct imap_search_return *ret, const uint32_t *v, size_t n,
                        uint64_t modseq);
/* RFC 5182: the UIDs to save for RETURN (SAVE) from the results' UIDs (result order);
 * malloc'd, ascending. false when out of memory. */
bool imap_searchres_make(const struct imap_search_return *ret, const uint32_t *uids, size_t n,
                         uint32_t **saved_r, size_t *n_saved_r);
/* finish step: the job's saved result becomes the session's (empty when the job failed). */
void imap_searchres_finish(struct imap_session *s, struct imap_job *j, uint32_t **saved,
                           size_t *n_saved);
void imap_searchres_clear(struct imap_session *s);
/* A command's set argument with "$" replaced by the saved result as a UID set (*is_uid
 * then true; "" when empty); malloc'd copy, NULL when out of memory. */
char *imap_searchres_expand(struct imap_session *s, const char *set, bool *is_uid);

/* ---- context.c (RFC 5267 §4.3 CONTEXT=SEARCH / CONTEXT=SORT updates) ----
 * A context keeps its search program and the result as last told (UIDs). After every
 * command's work (pool thread, the contexts moved in with the mailbox) the messages whose
 * mod-sequence passed the one last seen are evaluated again and the messages gone from
 * the view are dropped; the differences go out as "* ESEARCH (TAG "t") [UID] REMOVEFROM"
 * and "ADDTO" lines, naming UIDs for UID SEARCH / UID SORT and sequence numbers for
 * SEARCH / SORT. Whoever writes EXPUNGE or VANISHED responses calls
 * imap_updates_expunged() first: the REMOVEFROM of the messages going must name them by
 * the sequence numbers they have before the EXPUNGEs renumber the rest (§4.3.4). */
#define IMAP_MAX_UPDATES 4 /* contexts one session may hold (RFC 5267 §4.3.1: >= 1) */
/* What a searching command's RETURN (UPDATE) asks for, decided on the loop. */
struct imap_update_request {
    const char *refusal; /* NULL: start a context; else the text of "* NO [NOUPDATE]" */
    bool is_uid;         /* the UID form: updates name UIDs, else sequence numbers */
    bool is_sort;
    enum mime_comparator cmp; /* the SORT's comparator */
    struct imap_sort_criterion crit[IMAP_SORT_MAX_CRITERIA];
    size_t n_crit;
};
/* Loop: fill r for a searching command (crit NULL for SEARCH). */
void imap_update_request_init(struct imap_session *s, const struct skey *root, bool is_uid,
                              const struct imap_sort_criterion *crit, size_t n_crit,
                              struct imap_update_request *r);
/* Has a context this tag (RFC 5267 §4.3: reusing it is BAD)? u may be NULL. */
bool imap_update_find(const struct imap_updates *u, const char *tag);
/* Work: start the context of the job's command with its result (UIDs in result order),
 * taking *root; or write the untagged NO [NOUPDATE]. */
void imap_update_start(struct imap_job *j, const struct imap_update_request *r,
                       struct skey **root, const uint32_t *uids, size_t n);
/* Work (after the command and its sync): write the changes of every context. */
void imap_updates_check(struct imap_job *j);
/* Work, just before the EXPUNGE/VANISHED responses for the messages uids[0..n) (gone
 * from the job's view already, not yet reported): write each context's REMOVEFROM for
 * those of its result, sequence numbers as the client has them now. */
void imap_updates_expunged(struct imap_job *j, const uint32_t *uids, size_t n);
void imap_updates_free(struct imap_updates *u);
/* Loop: forget the session's contexts (the mailbox is left). */
void imap_updates_clear(struct imap_session *s);
imap_handler imap_cmd_cancelupdate;

/* ---- metadata.c ---- */
imap_handler imap_cmd_getmetadata, imap_cmd_setmetadata;

/* ---- notify.c (RFC 5465) ---- */
imap_handler imap_cmd_notify;
struct store_change_event;
/* A change of the user's mailboxes (store_notify_subscribe_changes): queue what NOTIFY
 * asked for. Loop thread. */
void imap_notify_event(struct imap_session *s, const struct store_change_event *ev);
/* Between commands (no job in flight): send what NOTIFY has waiting, by starting a job.
 * true when one was started (the caller then waits for it). */
bool imap_notify_kick(struct imap_session *s);
void imap_notify_free(struct imap_notify *n);
/* Work step: publish a mailbox-level change this session made (origin: its handle). */
void imap_notify_publish(const struct imap_job *j, int kind, const char *mailbox,
                         const char *detail);

/* ---- sort.c ---- */
imap_handler imap_cmd_sort, imap_cmd_thread;
/* BLOCKING. Sort idx[0..n) (indexes of the view; match: the same messages as flags, for
 * the keys) by the criteria, the sequence number breaking ties (RFC 5256 §3). */
int imap_sort_order(struct store_mailbox *box, enum mime_comparator cmp,
                    const struct imap_sort_criterion *crit, size_t n_crit, const bool *match,
                    size_t *idx, size_t n, char **error_r);
/* ---- COMPARATOR (RFC 5255 §4.7), in sort.c ---- */
imap_handler imap_cmd_comparator;
/* ---- quota.c ---- */
imap_handler imap_cmd_getquotaroot, imap_cmd_getquota, imap_cmd_setquota;
/* Work step (BLOCKING): may add_bytes more be stored for this user? If not, writes the
 * tagged NO ([OVERQUOTA], or [UNAVAILABLE] when the lookup failed) and returns false. */
bool imap_quota_allows(struct imap_job *j, uint64_t add_bytes);
/* Work step (BLOCKING): the user's storage limit from the directory now (an admin's change
 * applies at once), 0 none. false: the tagged NO [UNAVAILABLE] is written. */
bool imap_quota_limit(struct imap_job *j, uint64_t *limit_r);

#endif
