/*
 * mailauth_hook.h - internal to the smtp module: the hook points of mail authentication
 * (issue 12) in the session (MAIL, RCPT) and the delivery job. See mailauth_hook.c.
 *
 * Ownership: a struct smtp_mailauth_job is made on the loop (plain copies of what the
 * checks need), run on a workpool thread, read back on the loop, freed by the delivery
 * job that owns it.
 */
#ifndef TERN_SMTP_MAILAUTH_HOOK_H
#define TERN_SMTP_MAILAUTH_HOOK_H

#include "core/addr.h"
#include "mailauth/mailauth.h"

#include <stdbool.h>

struct smtp_session;
struct buf;
struct store_source;

/* Does port-25 authentication apply to this session (role, not ours, enabled)? */
bool smtp_mailauth_applies(const struct smtp_session *s);
/* MAIL was accepted: check SPF in the workpool, then reply 250 (loop thread). */
void smtp_mailauth_mail_start(struct smtp_session *s);
/* RCPT to rcpt (one of ours): false when the SPF policy refuses it (reply sent). */
bool smtp_mailauth_rcpt_allowed(struct smtp_session *s, const char *rcpt);

enum smtp_mailauth_action {
    SMTP_MAILAUTH_ACCEPT,
    SMTP_MAILAUTH_JUNK,     /* deliver local copies into Junk */
    SMTP_MAILAUTH_REJECT,   /* reply (5xx), deliver nothing */
    SMTP_MAILAUTH_TEMPFAIL, /* reply (4xx), deliver nothing */
};

struct smtp_mailauth_job {
    /* in (copied on the loop) */
    char ip[64], helo[256], from[ADDR_MAX_PATH + 1], receiver[256], authserv_id[256];
    char peer[320], data_dir[4096];
    bool has_spf;
    struct mailauth_spf_result spf;
    int dmarc_rank; /* the strictest mailauth.dmarc_policy of the recipients' domains */
    char seal_domain[254]; /* ours, whose keys ARC-seal forwarded copies (first RCPT) */
    /* out (thread) */
    enum smtp_mailauth_action action;
    char *header;      /* "Authentication-Results: ..." CRLF, malloc'd, or NULL */
    char reply[512];   /* for REJECT / TEMPFAIL */
    char summary[400]; /* for the log line */
    int n_forged;      /* A-R fields with our id removed */
    struct mailauth_arc_result arc; /* the chain as received */
    bool is_sealed;
};

/* Loop thread, at end of DATA: the job for this message, or NULL (not applicable). */
struct smtp_mailauth_job *smtp_mailauth_job_new(const struct smtp_session *s);
/* Workpool thread: remove forged A-R fields (rewriting the message held in body / *fd,
 * src updated to match), run DKIM and DMARC, build the header, decide the action. */
void smtp_mailauth_job_run(struct smtp_mailauth_job *j, struct buf *body, int *fd,
                           struct store_source *src);
void smtp_mailauth_job_free(struct smtp_mailauth_job *j);
/* Workpool thread, after job_run, for a copy forwarded to remote recipients: add our ARC
 * set (RFC 8617) with the keys of seal_domain, prepended to *remote_header (replaced). */
void smtp_mailauth_job_seal(struct smtp_mailauth_job *j, char **remote_header,
                            const struct store_source *src);

#endif
