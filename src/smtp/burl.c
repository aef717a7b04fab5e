/*
 * burl.c - BURL (RFC 4468) on the submission services: "BURL <imap-url> [LAST]" adds the
 * octets an IMAP URL names to the message, mixed freely with BDAT chunks (RFC 4468 §3),
 * so a client can send a message it already saved (a draft, an attachment) without
 * uploading it again.
 *
 * Offered ("BURL imap" in EHLO) and accepted only on the submission roles (587, 465) and
 * only once the session has authenticated: the URL must carry a URLAUTH that grants
 * "submit+<the authenticated user>" (or "authuser"/"anonymous"), checked with the
 * owner's mailbox access key (imap/urlauth.c). A plain URL, even of the user's own
 * message, is refused (RFC 4468 §3: the submission server reads with URLAUTH only).
 *
 * Where the octets come from: the SMTP session of a login process runs chrooted and may
 * read no mailbox, so the job asks a mail worker (smtp/remote.c, BACKEND_MSG_BURL: a
 * bounded record of user, URL and size limit, and an empty memfd the worker fills, seals
 * and sizes); with master_process = no the job reads the URL in place. The octets come
 * back to the loop as the job's result (the sealed memfd, mapped and fed in pieces, so
 * no copy of them is made in this process's heap; or the buffer the job read them into)
 * and join the message as a BDAT chunk (body.c), within the message size limit.
 */
#include "auth/auth.h"
#include "core/config.h"
#include "core/log.h"
#include "imap/url.h"
#include "smtp/remote.h"
#include "smtp/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>
#include <time.h>

#define BURL_DEFAULT_MAX (50ull * 1024 * 1024) /* no smtp.max_message_size: this much */

struct burl_job {
    struct job job; /* first (core/job.h) */
    char url[IMAP_URL_MAX + 1];
    size_t url_len;
    char user[ADDR_MAX_PATH + 1];
    uint64_t max; /* octets the message may still grow by */
    bool is_last;
    bool is_remote; /* a login process: a mail worker reads the URL */
    struct auth_service *auth;
    /* results */
    int rc;          /* IMAP_URL_* */
    struct buf data; /* read in place */
    int fd;          /* or: a mail worker's sealed memfd of fd_len octets */
    uint64_t fd_len;
    char error[256];
};

static smtp_burl_fetch_fn *burl_fetch;

void smtp_burl_set_fetch(smtp_burl_fetch_fn *fn)
{
    burl_fetch = fn;
}

bool smtp_burl_has_fetch(void)
{
    return burl_fetch != NULL;
}

int smtp_burl_fetch(const struct imap_url_reader *r, const char *url, size_t url_len, uint64_t max,
                    struct buf *out, char **error_r)
{
    if (!burl_fetch) {
        *error_r = strdup("BURL is not available");
        return IMAP_URL_TEMP;
    }
    return burl_fetch(r, url, url_len, max, out, error_r);
}

bool smtp_burl_is_offered(const struct smtp_session *s)
{
    /* a login process asks a mail worker, which has the reader if this process has */
    return (s->role == CONN_ROLE_SUBMISSION || s->role == CONN_ROLE_SUBMISSIONS) &&
           s->auth_user != NULL && burl_fetch != NULL;
}

/* Pool thread: the URL's octets, from a mail worker or read here. */
static void burl_work(struct job *j)
{
    struct burl_job *job = (struct burl_job *)j;
    if (job->is_remote) {
        job->rc = smtp_remote_burl(job->user, job->url, job->max, &job->fd, &job->fd_len,
                                   job->error, sizeof job->error);
        return;
    }
    struct imap_url_reader r = {.auth = job->auth,
                                .username = job->user,
                                .is_submit = true,
                                .needs_urlauth = true,
                                .now = time(NULL)};
    char *err = NULL;
    job->rc = smtp_burl_fetch(&r, job->url, job->url_len, job->max, &job->data, &err);
    snprintf(job->error, sizeof job->error, "%s", err ? err : "");
    free(err);
}

/* Loop thread: the octets join the message (a memfd is memory: mapping it waits on no
 * disk). */
static void burl_add(struct smtp_session *s, struct burl_job *job)
{
    if (job->fd < 0) {
        smtp_body_add_chunk(s, job->data.data ? job->data.data : "", job->data.len, job->is_last);
        return;
    }
    void *map =
        job->fd_len ? mmap(NULL, (size_t)job->fd_len, PROT_READ, MAP_SHARED, job->fd, 0) : NULL;
    if (job->fd_len && map == MAP_FAILED) {
        log_error("smtpd", "%s: BURL: cannot map the octets: %s", s->txn.queue_id, strerror(errno));
        smtp_reply(s, "451 4.3.0 Error: queue file write error");
        smtp_txn_reset(&s->txn);
        return;
    }
    smtp_body_add_chunk(s, map ? map : "", (size_t)job->fd_len, job->is_last);
    if (map)
        munmap(map, (size_t)job->fd_len);
}

static void burl_done(void *session, struct job *j)
{
    struct burl_job *job = (struct burl_job *)j;
    struct smtp_session *s = session;
    if (s) {
        struct smtp_txn *t = &s->txn;
        char url[128];
        smtp_log_safe(job->url, url, sizeof url);
        s->is_busy = false; /* BURL ... LAST starts the delivery job: it resumes then */
        switch (job->rc) {
        case IMAP_URL_OK:
            burl_add(s, job);
            break;
        case IMAP_URL_TOOBIG:
            /* RFC 1870 §6.2: as BDAT past the limit; the transaction is over */
            smtp_reply(s, "552 5.3.4 Message size exceeds fixed limit");
            smtp_txn_reset(t);
            break;
        case IMAP_URL_BAD:
            log_info("smtpd", "%s: BURL from %s refused: %s: %s", t->queue_id, s->peer, url,
                     job->error);
            /* RFC 4468 §6: X.6.6 message content not available */
            smtp_reply(s, "554 5.6.6 IMAP URL resolution failed");
            smtp_txn_reset(t);
            break;
        default:
            log_warning("smtpd", "%s: BURL from %s: %s: %s", t->queue_id, s->peer, url,
                        job->error[0] ? job->error : "no answer");
            smtp_reply(s, "454 4.6.6 IMAP URL resolution failed, try again later");
            smtp_txn_reset(t);
            break;
        }
    }
    buf_free(&job->data);
    if (job->fd >= 0)
        close(job->fd);
    free(job);
    if (s && !s->is_busy)
        smtp_session_job_done(s);
}

void smtp_cmd_burl(struct smtp_session *s, const struct smtp_command *cmd)
{
    if ((s->role != CONN_ROLE_SUBMISSION && s->role != CONN_ROLE_SUBMISSIONS) ||
        !smtp_burl_has_fetch()) {
        smtp_reply(s, "502 5.5.1 Error: command not implemented");
        return;
    }
    if (!s->auth_user) { /* RFC 4468 §3: BURL needs an authenticated session */
        smtp_reply(s, "530 5.7.0 Authentication required");
        return;
    }
    const char *url;
    size_t url_len;
    bool is_last;
    if (!smtp_parse_burl(cmd->arg, cmd->arg_len, &url, &url_len, &is_last)) {
        smtp_reply(s, "501 5.5.4 Syntax: BURL imap-url [LAST]");
        return;
    }
    if (!s->txn.is_active) {
        smtp_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->txn.n_rcpt == 0) {
        smtp_reply(s, "503 5.5.1 Error: need RCPT command");
        return;
    }
    if (url_len < 7 || strncasecmp(url, "imap://", 7) != 0) {
        smtp_reply(s, "554 5.5.4 Error: only imap URLs are supported");
        return;
    }
    if (url_len > IMAP_URL_MAX) {
        smtp_reply(s, "554 5.6.6 IMAP URL resolution failed");
        return;
    }
    uint64_t limit =
        s->cfg->smtp_max_message_size ? s->cfg->smtp_max_message_size : BURL_DEFAULT_MAX;
    uint64_t used = s->txn.is_bdat ? s->txn.reader.size : 0;
    struct burl_job *job = calloc(1, sizeof *job);
    if (!job) {
        smtp_reply(s, "451 4.3.0 Error: out of memory");
        return;
    }
    job_init(&job->job, s->handle, burl_work, burl_done);
    job->fd = -1;
    memcpy(job->url, url, url_len);
    job->url[url_len] = '\0';
    job->url_len = url_len;
    snprintf(job->user, sizeof job->user, "%s", s->auth_user);
    job->max = used < limit ? limit - used : 0;
    job->is_last = is_last;
    job->is_remote = conn_is_login_process(s->c);
    job->auth = s->ctx->auth;
    buf_init(&job->data, (size_t)job->max + 1);
    smtp_session_job_start(s, &job->job);
}
