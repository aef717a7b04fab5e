/*
 * queue.h - the outbound spool: mail accepted for foreign recipients waits here, durably,
 * until the queue runner (issue 5) delivers or bounces it.
 *
 * Layout: <data_dir>/queue/{incoming,active,deferred,hold}/<QUEUEID> - one file per message:
 * an envelope header (sender, recipients, arrival time, attempt count, flags) followed by
 * the message bytes (CRLF, with our trace headers). Written to incoming/, fsync'd, renamed
 * into active/, directory fsync'd: a message is either wholly in the queue or absent.
 *
 * Ownership: strings passed in are copied. Thread rules: queue_enqueue is BLOCKING and
 * thread-safe (run it from the workpool). Listing functions may run anywhere.
 */
#ifndef TERN_QUEUE_QUEUE_H
#define TERN_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct store_source;

/* BLOCKING. Spool a message for remote recipients. header: trace headers to prepend
 * (may be NULL). queue_id is the id already used in the logs for this message.
 * Returns 0 once durable, -1 with *error_r. */
int queue_enqueue(const char *data_dir, const char *queue_id, const char *sender,
                  const char *const *recipients, size_t n_recipients, const char *header,
                  const struct store_source *src, char **error_r);

/* Two-phase enqueue, for a message that also goes to local mailboxes: stage it durably in
 * incoming/ (invisible to the runner), deliver locally, then queue_commit() moves it into
 * active/ — or queue_abort() drops it when the local delivery failed. This way the runner
 * can never send a copy the client was told (451) to send again. BLOCKING. */
int queue_enqueue_staged(const char *data_dir, const char *queue_id, const char *sender,
                         const char *const *recipients, size_t n_recipients, const char *header,
                         const struct store_source *src, char **error_r);
int queue_commit(const char *data_dir, const char *queue_id, char **error_r);
/* Like queue_commit, into hold/ (a milter quarantined it: `tern queue release` sends it). */
int queue_commit_held(const char *data_dir, const char *queue_id, char **error_r);
void queue_abort(const char *data_dir, const char *queue_id);
/* At start-up: remove staged files older than max_age seconds (their process died before
 * commit, so they were never acknowledged). Returns how many were removed. */
int queue_incoming_cleanup(const char *data_dir, unsigned max_age);

struct queue_entry {
    char id[32];
    char state[16]; /* "active", "deferred", "hold" */
    char *sender;
    char **recipients;
    size_t n_recipients;
    uint64_t size;
    time_t arrival;
    /* Added by the dsn helper (RFC 3461), all optional in the file (old files parse):
     * dsn_ret QUEUE_RET_*, envid decoded or NULL, notify[i] / orcpt[i] parallel to
     * recipients (0 / NULL when the client gave none; the arrays may be NULL). */
    int dsn_ret;
    char *envid;
    unsigned *notify;
    char **orcpt;
    bool is_delay_warned; /* the one "delayed" DSN went out already */
};
/* Call cb for each queued message (sorted by arrival). 0 or -1. */
int queue_list(const char *data_dir, void (*cb)(const struct queue_entry *e, void *arg), void *arg,
               char **error_r);
/* Remove a message by id ("ALL" for every message). 0, 1 not found, -1 error. */
int queue_delete(const char *data_dir, const char *id, char **error_r);
/* Move between active/deferred and hold. */
int queue_hold(const char *data_dir, const char *id, char **error_r);
int queue_release(const char *data_dir, const char *id, char **error_r);

/* Added by the store helper (for `tern queue show` and the queue runner): read and
 * validate message id. 0 ok: *e_r filled (free with queue_entry_free), *fd_r open on the
 * file (caller closes; may pass NULL), message bytes start at *offset_r. 1 not found,
 * -1 corrupt or I/O error (*error_r). */
int queue_read(const char *data_dir, const char *id, struct queue_entry *e_r, int *fd_r,
               uint64_t *offset_r, char **error_r);
void queue_entry_free(struct queue_entry *e);

/* Added by the outbound helper (issue 5): make deferred mail due now by moving it from
 * deferred/ to active/ (durably); the running server's queue runner picks it up within
 * queue.scan_interval. domain NULL = every message (`tern queue flush`); otherwise only
 * messages with a recipient in domain (ETRN, RFC 1985). Returns how many messages were
 * moved, or -1 with *error_r. hold/ is left alone. */
int queue_flush(const char *data_dir, const char *domain, char **error_r);
/* ETRN convenience: queue_flush for one domain; messages moved or -1. */
int queue_flush_domain(const char *data_dir, const char *domain);

/* ---- DSN (RFC 3461), added by the dsn helper ----------------------------------------- */

/* NOTIFY= bits; 0 = not given (RFC 3461 §4.1: then FAILURE, and DELAY at our choice). */
enum {
    QUEUE_NOTIFY_SUCCESS = 1,
    QUEUE_NOTIFY_FAILURE = 2,
    QUEUE_NOTIFY_DELAY = 4,
    QUEUE_NOTIFY_NEVER = 8,
};
enum { QUEUE_RET_DEFAULT = 0, QUEUE_RET_FULL, QUEUE_RET_HDRS };
#define QUEUE_ENVID_MAX 100 /* RFC 3461 §4.4 */
#define QUEUE_ORCPT_MAX 500 /* RFC 3461 §4.2 */

/* What MAIL/RCPT said about DSNs, for queue_enqueue_staged_dsn. */
struct queue_dsn {
    int ret;                  /* QUEUE_RET_* */
    const char *envid;        /* decoded, or NULL */
    const unsigned *notify;   /* [n_recipients] or NULL */
    const char *const *orcpt; /* [n_recipients] "rfc822;bob@example.org" (decoded), or NULL */
};
/* queue_enqueue_staged with DSN parameters (dsn may be NULL). */
int queue_enqueue_staged_dsn(const char *data_dir, const char *queue_id, const char *sender,
                             const char *const *recipients, size_t n_recipients, const char *header,
                             const struct store_source *src, const struct queue_dsn *dsn,
                             char **error_r);

/* RFC 3461 §4 xtext: decode in[len] into out (NUL-terminated, at most size-1 octets).
 * Decoded octets must be printable ASCII (or space). false on bad syntax or too long. */
bool queue_xtext_decode(const char *in, size_t len, char *out, size_t size);
/* Encode s as xtext into out; false if it does not fit. */
bool queue_xtext_encode(const char *s, char *out, size_t size);
/* Parse a NOTIFY= value ("NEVER" or a list of SUCCESS, FAILURE, DELAY); false if bad. */
bool queue_notify_parse(const char *s, size_t len, unsigned *notify_r);
/* "NEVER" or "SUCCESS,FAILURE,DELAY" (what was given) into out. */
void queue_notify_format(unsigned notify, char *out, size_t size);
/* Does a recipient with these NOTIFY bits want a DSN of kind what (one QUEUE_NOTIFY_*)?
 * Not given: failures and delays yes, success no. */
bool queue_notify_wants(unsigned notify, unsigned what);
/* The same for recipient i of e (beyond the envelope's recipients: the default). */
bool queue_entry_notify_wants(const struct queue_entry *e, size_t i, unsigned what);
/* ORCPT of recipient i of e, or NULL. */
const char *queue_entry_orcpt(const struct queue_entry *e, size_t i);

#endif
