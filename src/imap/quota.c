/*
 * quota.c - QUOTA (RFC 9208): GETQUOTAROOT and GETQUOTA report the user's storage quota,
 * SETQUOTA is refused (quotas are set by the admin: `tern user quota`), and APPEND and COPY
 * check the quota before storing (NO [OVERQUOTA], RFC 9208 §4.3 / RFC 5530), as SMTP
 * delivery already does.
 *
 * One quota root per user, named "User quota" (Dovecot's default name, so clients that
 * moved from Dovecot see the same thing), covering every mailbox, with the STORAGE
 * resource in units of 1024 octets (RFC 9208 §5.1). A user without a limit has no quota
 * root: GETQUOTAROOT lists none.
 *
 * Usage and limit are read in the workpool (directory and index lookups block), for every
 * command, so a quota changed by the admin applies at once.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "imap/session.h"
#include "store/mime.h"
#include "store/store.h"

#define IMAP_QUOTA_ROOT "User quota"

/* BLOCKING. The user's limit (0 = none) and usage in bytes (left 0 without a limit).
 * 0, or -1 on a lookup error. */
static int imap_quota_read(const struct imap_job_ctx *ctx, uint64_t *limit_r, uint64_t *usage_r)
{
    struct auth_user u;
    if (!ctx->auth || auth_user_lookup(ctx->auth, ctx->username, &u) != 1)
        return -1;
    *limit_r = u.quota;
    *usage_r = 0;
    int64_t usage = u.quota != 0 ? store_user_usage(u.home) : 0;
    auth_user_free(&u);
    if (usage < 0)
        return -1;
    *usage_r = (uint64_t)usage;
    return 0;
}

/* "* QUOTA "User quota" (STORAGE <used KiB> <limit KiB>)" */
static void imap_quota_write(struct buf *out, uint64_t limit, uint64_t usage)
{
    /* RFC 9208 §5.1: STORAGE counts units of 1024 octets; usage rounds up so a nearly
     * full mailbox never shows room it does not have */
    buf_printf(out, "* QUOTA \"%s\" (STORAGE %" PRIu64 " %" PRIu64 ")\r\n", IMAP_QUOTA_ROOT,
               (usage + 1023) / 1024, limit / 1024);
}

bool imap_quota_limit(struct imap_job *j, uint64_t *limit_r)
{
    struct auth_user u;
    if (!j->ctx.auth || auth_user_lookup(j->ctx.auth, j->ctx.username, &u) != 1) {
        buf_printf(&j->tagged, "%s NO [UNAVAILABLE] Quota lookup failed, try again later.\r\n",
                   j->tag);
        return false;
    }
    *limit_r = u.quota;
    auth_user_free(&u);
    return true;
}

bool imap_quota_allows(struct imap_job *j, uint64_t add_bytes)
{
    uint64_t limit = 0, usage = 0;
    if (imap_quota_read(&j->ctx, &limit, &usage) < 0) {
        buf_printf(&j->tagged, "%s NO [UNAVAILABLE] Quota lookup failed, try again later.\r\n",
                   j->tag);
        return false;
    }
    if (limit != 0 && (add_bytes > limit || usage > limit - add_bytes)) {
        /* Dovecot's wording, which clients show to users */
        buf_printf(&j->tagged, "%s NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n",
                   j->tag);
        return false;
    }
    return true;
}

/* An astring as an atom when it can be one (RFC 3501 §9 ASTRING-CHAR), else quoted or a
 * literal: "* QUOTAROOT INBOX ..." as Dovecot writes it. */
static void imap_quota_write_astring(struct buf *out, const char *s)
{
    bool is_atom = *s != '\0';
    for (const unsigned char *p = (const unsigned char *)s; *p && is_atom; p++)
        is_atom = *p > ' ' && *p < 127 && !strchr("(){%*\"\\", *p);
    if (is_atom)
        buf_append_str(out, s);
    else
        mime_write_string(out, s);
}

struct imap_quota_job {
    struct imap_job base;
    char *name; /* GETQUOTAROOT's mailbox or GETQUOTA's root */
};

static void imap_quota_cleanup(struct imap_job *j)
{
    free(IMAP_JOB(imap_quota_job, j)->name);
}

static void imap_getquotaroot_work(struct imap_job *j)
{
    const char *name = IMAP_JOB(imap_quota_job, j)->name;
    struct store_status st;
    char *err = NULL;
    /* RFC 9208 §4.3.2: the mailbox must exist */
    if (store_mailbox_status(j->ctx.user, name, &st, &err) < 0) {
        imap_job_err(j, "%s", err);
        return;
    }
    uint64_t limit = 0, usage = 0;
    if (imap_quota_read(&j->ctx, &limit, &usage) < 0) {
        buf_printf(&j->tagged, "%s NO [UNAVAILABLE] Quota lookup failed.\r\n", j->tag);
        return;
    }
    buf_append_str(&j->out, "* QUOTAROOT ");
    if (j->ctx.is_utf8)
        imap_write_mailbox(&j->out, name, true); /* RFC 6855 §3 */
    else
        imap_quota_write_astring(&j->out, name);
    if (limit != 0)
        buf_append_str(&j->out, " \"" IMAP_QUOTA_ROOT "\"");
    buf_append_str(&j->out, "\r\n");
    if (limit != 0)
        imap_quota_write(&j->out, limit, usage);
    buf_printf(&j->tagged, "%s OK Getquotaroot completed.\r\n", j->tag);
    j->is_ok = true;
}

static void imap_getquota_work(struct imap_job *j)
{
    uint64_t limit = 0, usage = 0;
    if (imap_quota_read(&j->ctx, &limit, &usage) < 0) {
        buf_printf(&j->tagged, "%s NO [UNAVAILABLE] Quota lookup failed.\r\n", j->tag);
        return;
    }
    if (limit == 0 || strcmp(IMAP_JOB(imap_quota_job, j)->name, IMAP_QUOTA_ROOT) != 0) {
        buf_printf(&j->tagged, "%s NO Quota root doesn't exist.\r\n", j->tag);
        return;
    }
    imap_quota_write(&j->out, limit, usage);
    buf_printf(&j->tagged, "%s OK Getquota completed.\r\n", j->tag);
    j->is_ok = true;
}

void imap_cmd_getquotaroot(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                           bool is_uid)
{
    (void)is_uid;
    char *name = n == 1 ? imap_session_mailbox_name(s, &args[0]) : NULL;
    if (!name) {
        imap_reply(s, tag, "BAD Usage: GETQUOTAROOT mailbox");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_quota_job),
                                      imap_getquotaroot_work, NULL, imap_quota_cleanup);
    if (!j) {
        free(name);
        return;
    }
    IMAP_JOB(imap_quota_job, j)->name = name;
    imap_job_submit(s, j);
}

void imap_cmd_getquota(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                       bool is_uid)
{
    (void)is_uid;
    if (n != 1 || !imap_arg_is_string(&args[0])) {
        imap_reply(s, tag, "BAD Usage: GETQUOTA root");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_quota_job), imap_getquota_work,
                                      NULL, imap_quota_cleanup);
    if (!j)
        return;
    if (!(IMAP_JOB(imap_quota_job, j)->name = strdup(args[0].str))) {
        imap_job_discard(s, j);
        return;
    }
    imap_job_submit(s, j);
}

void imap_cmd_setquota(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                       bool is_uid)
{
    (void)args;
    (void)n;
    (void)is_uid;
    /* RFC 9208 §4.1.3: only with QUOTASET, which we do not offer: the admin sets quotas */
    imap_reply(s, tag, "NO [NOPERM] Quotas are set by the administrator.");
}
