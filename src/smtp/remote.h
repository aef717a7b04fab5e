/*
 * remote.h - internal to the smtp module: what an SMTP/LMTP session in a login process
 * (no mailbox, no spool: privilege separation, docs/SECURITY.md) has a mail worker do,
 * over core/backend.h, and the mail worker's side of it:
 *
 *   DELIVER  the received message (a sealed memfd: the body, then the envelope) is
 *            delivered by the worker exactly as delivery.c would here; the worker answers
 *            once the copies are durable, so the 250 still means "on stable storage";
 *   USAGE    is a local user's mailbox full (RCPT, 452 4.2.2);
 *   ETRN     flush the deferred mail of a node (etrn.c);
 *   GREYLIST check and record a (client, sender, recipient) triplet at RCPT
 *            (policy/greylist.h: the SQLite file a chrooted login process cannot open);
 *   BURL     the octets an IMAP URL names (RFC 4468, smtp/burl.c): the worker checks the
 *            URLAUTH for "submit+<user>" itself (imap_url_fetch) and writes the octets
 *            into the login process's empty memfd, which it then seals.
 *
 * A mail worker checks a login process's request as it would a client's: the envelope is
 * parsed with bounds (smtp_remote_envelope_decode, fuzzed), the queue id and every
 * address that reaches the spool's text envelope are checked, and each local user's home
 * and quota are looked up again in the directory (never taken from the login process).
 *
 * Thread rules: smtp_remote_deliver/usage/etrn/greylist on pool threads (they block);
 * smtp_remote_serve on the loop of a mail worker, once, after the auth service is open.
 */
#ifndef TERN_SMTP_REMOTE_H
#define TERN_SMTP_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp/smtp.h"

struct smtp_delivery_job;
struct server_context;
struct buf;

/* ---- login side (pool threads) ---- */
/* Deliver job's message in a mail worker; the results land in job as smtp_delivery_work's
 * would (a worker that could not be asked or did not answer: queue_rc -1, "451"). */
void smtp_remote_deliver(struct smtp_delivery_job *job);
/* Is the mailbox of user (canonical) full? 1 yes, 0 no or unknown (as store usage). */
int smtp_remote_user_is_full(const char *user);
/* ETRN in a mail worker: *n_queued_r messages for the node, *moved_r made due (-1 on
 * failure, as smtp_etrn_flush). */
void smtp_remote_etrn(const char *node, bool is_subdomains, size_t *n_queued_r, int *moved_r);

/* Greylisting in a mail worker: a_r as greylist_check's (GREYLIST_ERROR when no worker
 * answered: the recipient passes, as with a database failure). */
struct greylist_answer;
void smtp_remote_greylist(const char *ip, const char *sender, const char *rcpt,
                          struct greylist_answer *a_r);

/* BURL in a mail worker: the octets url names for the authenticated user, at most max,
 * in a sealed memfd (*fd_r, the caller closes it; *len_r octets). IMAP_URL_* (imap/url.h);
 * IMAP_URL_TEMP when no worker answered or the answer was not a sealed memfd of the size
 * it said. error gets the worker's reason. */
int smtp_remote_burl(const char *user, const char *url, uint64_t max, int *fd_r,
                     uint64_t *len_r, char *error, size_t error_size);

/* ---- mail worker side ---- */
/* Serve the login processes' DELIVER, USAGE, ETRN, GREYLIST and BURL requests with ctx's directory, pool
 * and configuration (which stay valid until the process ends). */
void smtp_remote_serve(const struct server_context *ctx);

/* The envelope of a message a login process hands over (wire fields, smtp/remote.c):
 * encoded from a delivery job on the login side; decoded into a new job (NULL: malformed,
 * over a limit, or out of memory) on the worker side, which then looks the users up. */
bool smtp_remote_envelope_encode(const struct smtp_delivery_job *job, struct buf *out);
struct smtp_delivery_job *smtp_remote_envelope_decode(const char *data, size_t len);

/* etrn.c: flush node's deferred mail in the spool under data_dir (BLOCKING). */
void smtp_etrn_flush(const char *data_dir, const char *node, bool is_subdomains,
                     size_t *n_queued_r, int *moved_r);

#endif
