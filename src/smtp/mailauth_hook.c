/*
 * mailauth_hook.c - the SMTP side of mail authentication (issue 12), in one file so that
 * the session plumbing can change around it: everything here is called from three marked
 * places (MAIL in envelope.c, RCPT in envelope.c, the delivery job in delivery.c).
 *
 * On port 25, for clients that are not ours (not authenticated, not in relay_networks):
 * - MAIL: SPF runs in a workpool job (DNS may take seconds); the 250 follows its result.
 * - RCPT: with mailauth.spf_policy = reject for the recipient's domain, an SPF fail is
 *   refused (550 5.7.23, RFC 7372) and a temporary SPF error deferred (451 4.7.24).
 * - end of DATA, in the delivery job: DKIM and DMARC, our Authentication-Results field
 *   (RFC 8601) on every copy, forged fields with our authserv-id removed, and the DMARC
 *   policy: p=reject refused with 550 5.7.1 (or filed to Junk), p=quarantine filed to Junk,
 *   a DNS failure that leaves DMARC undecided for an enforcing domain deferred (451 4.7.5).
 *
 * Thread rules: the jobs carry plain copies (strings, the SPF result); the resolver is
 * thread-safe and lives from smtp_mailauth_start() to smtp_mailauth_stop().
 */
/* Replies and log texts are deliberately cut to their fixed buffers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "core/job.h"
#include "mailauth/mailauth.h"
#include "smtp/mailauth_hook.h"
#include "smtp/session.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct mailauth_resolver *hook_resolver;

int smtp_mailauth_start(const struct config *cfg, char **error_r)
{
    if (!cfg->mailauth_verify)
        return 0;
    hook_resolver =
        mailauth_resolver_create(cfg->dns_resolver, cfg->mailauth_dns_timeout * 1000, NULL, error_r);
    return hook_resolver ? 0 : -1;
}

void smtp_mailauth_stop(void)
{
    mailauth_resolver_free(hook_resolver);
    hook_resolver = NULL;
}

bool smtp_mailauth_applies(const struct smtp_session *s)
{
    return hook_resolver && s->role == CONN_ROLE_SMTP && !s->auth_user &&
           !conn_peer_in_networks(s->c, &s->cfg->relay_networks);
}

static const char *hook_authserv_id(const struct config *cfg)
{
    return cfg->mailauth_authserv_id && cfg->mailauth_authserv_id[0] ? cfg->mailauth_authserv_id
                                                                     : cfg->hostname;
}

/* ---- MAIL: SPF ------------------------------------------------------------------------ */

struct spf_job {
    struct job job; /* core/job.h: first member */
    char ip[64];
    char helo[256];
    char from[ADDR_MAX_PATH + 1];
    char receiver[256];
    struct mailauth_spf_result result;
    bool is_failed;
};

static void spf_work(struct job *j)
{
    struct spf_job *job = (struct spf_job *)j;
    struct mailauth_dns dns = mailauth_resolver_dns(hook_resolver);
    job->is_failed = mailauth_spf_check(&dns, job->ip, job->helo, job->from, job->receiver,
                                        (int64_t)time(NULL), &job->result) < 0;
}

/* Loop thread: s is NULL when the client has gone. */
static void spf_done(void *session, struct job *j)
{
    struct spf_job *job = (struct spf_job *)j;
    struct smtp_session *s = session;
    if (s) {
        s->is_busy = false; /* the milters' MAIL stage may start a job of its own */
        if (job->is_failed) {
            smtp_reply(s, "451 4.3.0 Error: out of memory");
            smtp_txn_reset(&s->txn);
        } else {
            s->txn.spf = malloc(sizeof *s->txn.spf);
            if (s->txn.spf)
                *s->txn.spf = job->result;
            log_info("policy-spf", "%s: SPF %s (%s%s%s): client=%s, helo=%s, envelope-from=<%s>",
                     "NOQUEUE", mailauth_result_name(job->result.result), job->result.domain,
                     job->result.mechanism[0] ? ": " : "", job->result.mechanism, s->peer,
                     job->helo, job->from);
            smtp_mail_accepted(s);
        }
    }
    free(job);
    if (s && !s->is_busy)
        smtp_session_job_done(s);
}

void smtp_mailauth_mail_start(struct smtp_session *s)
{
    struct spf_job *job = calloc(1, sizeof *job);
    const char *ip = conn_peer_ip(s->c);
    if (!job || !ip) {
        free(job);
        smtp_mail_accepted(s); /* no SPF: A-R will say spf=none */
        return;
    }
    job_init(&job->job, s->handle, spf_work, spf_done);
    snprintf(job->ip, sizeof job->ip, "%s", ip);
    smtp_log_safe(s->helo, job->helo, sizeof job->helo);
    snprintf(job->from, sizeof job->from, "%s", s->txn.from_text);
    snprintf(job->receiver, sizeof job->receiver, "%s", smtp_hostname(s));
    smtp_session_job_start(s, &job->job);
}

/* ---- RCPT: the SPF policy ------------------------------------------------------------- */

bool smtp_mailauth_rcpt_allowed(struct smtp_session *s, const char *rcpt)
{
    const struct mailauth_spf_result *spf = s->txn.spf;
    if (!spf || (spf->result != MAILAUTH_FAIL && spf->result != MAILAUTH_TEMPERROR))
        return true;
    const char *at = strrchr(rcpt, '@');
    if (strcmp(config_mailauth_policy(s->cfg, "mailauth.spf_policy", at ? at + 1 : NULL),
               "reject") != 0)
        return true;
    char reply[SMTP_REPLY_MAX];
    if (spf->result == MAILAUTH_FAIL)
        /* RFC 7372 §3.2: 5.7.23 SPF validation failed */
        snprintf(reply, sizeof reply,
                 "550 5.7.23 <%s>: Recipient address rejected: SPF fail: %s does not designate "
                 "%s as permitted sender%s%.200s",
                 rcpt, spf->domain, conn_peer_ip(s->c) ? conn_peer_ip(s->c) : "this host",
                 spf->explanation[0] ? ": " : "", spf->explanation);
    else
        /* RFC 7372 §3.2: 4.7.24 SPF validation error (temporary) */
        snprintf(reply, sizeof reply,
                 "451 4.7.24 <%s>: Recipient address rejected: SPF temporary error for %s, try "
                 "again later",
                 rcpt, spf->domain);
    smtp_log_reject(s, "RCPT", reply, rcpt);
    smtp_reply(s, "%s", reply);
    return false;
}

/* ---- end of DATA: DKIM, DMARC, Authentication-Results ---------------------------------- */

enum { DMARC_MARK, DMARC_JUNK, DMARC_ENFORCE };

static int dmarc_policy_rank(const char *v)
{
    return strcmp(v, "enforce") == 0 ? DMARC_ENFORCE : strcmp(v, "junk") == 0 ? DMARC_JUNK
                                                                              : DMARC_MARK;
}

struct smtp_mailauth_job *smtp_mailauth_job_new(const struct smtp_session *s)
{
    if (!smtp_mailauth_applies(s))
        return NULL;
    struct smtp_mailauth_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    const char *ip = conn_peer_ip(s->c);
    snprintf(j->ip, sizeof j->ip, "%s", ip ? ip : "");
    smtp_log_safe(s->helo, j->helo, sizeof j->helo);
    snprintf(j->from, sizeof j->from, "%s", s->txn.from_text);
    snprintf(j->receiver, sizeof j->receiver, "%s", smtp_hostname(s));
    snprintf(j->authserv_id, sizeof j->authserv_id, "%s", hook_authserv_id(s->cfg));
    snprintf(j->peer, sizeof j->peer, "%s", s->peer);
    snprintf(j->data_dir, sizeof j->data_dir, "%s", s->cfg->data_dir ? s->cfg->data_dir : ".");
    const char *at = s->txn.first_rcpt ? strrchr(s->txn.first_rcpt, '@') : NULL;
    snprintf(j->seal_domain, sizeof j->seal_domain, "%s", at ? at + 1 : "");
    if (s->txn.spf) {
        j->spf = *s->txn.spf;
        j->has_spf = true;
    }
    /* the strictest DMARC policy among the domains of our recipients applies */
    int rank = s->txn.n_local ? DMARC_MARK
                              : dmarc_policy_rank(config_mailauth_policy(s->cfg,
                                                                         "mailauth.dmarc_policy",
                                                                         NULL));
    for (size_t i = 0; i < s->txn.n_local; i++) {
        const char *at = strrchr(s->txn.local[i].orig_rcpt, '@');
        int r = dmarc_policy_rank(
            config_mailauth_policy(s->cfg, "mailauth.dmarc_policy", at ? at + 1 : NULL));
        if (r > rank)
            rank = r;
    }
    j->dmarc_rank = rank;
    return j;
}

void smtp_mailauth_job_free(struct smtp_mailauth_job *j)
{
    if (!j)
        return;
    free(j->header);
    free(j);
}

/* Remove Authentication-Results fields that carry our authserv-id (RFC 8601 §5): the
 * message is rewritten (in memory, or into a new spill file). 0, or -1 on I/O error. */
static int hook_remove_forged(struct smtp_mailauth_job *j, struct buf *body, int *fd,
                              struct store_source *src)
{
    struct mailauth_header *fields = calloc(MAILAUTH_HEADERS_MAX, sizeof *fields);
    char *head = NULL;
    size_t head_len = 0;
    bool is_head_copied = src->fd >= 0;
    int rc = 0;
    if (!fields)
        return -1;
    if (src->fd < 0) {
        head = (char *)src->data;
        head_len = src->len;
    } else {
        size_t want = src->size < MAILAUTH_HEADER_MAX ? (size_t)src->size : MAILAUTH_HEADER_MAX;
        head = malloc(want + 1);
        ssize_t got = head ? pread(src->fd, head, want, 0) : -1;
        if (got < 0) {
            free(head);
            free(fields);
            return -1;
        }
        head_len = (size_t)got;
    }
    size_t body_off;
    bool is_truncated;
    size_t n = mailauth_headers_parse(head, head_len, fields, MAILAUTH_HEADERS_MAX, &body_off,
                                      &is_truncated);
    struct buf clean;
    buf_init(&clean, 0);
    int removed = mailauth_ar_remove_ours(head, body_off, fields, n, j->authserv_id, &clean);
    if (removed > 0) {
        j->n_forged = removed;
        if (src->fd < 0) {
            /* in memory: header without the forged fields, then the rest as it was */
            if (!buf_append(&clean, src->data + body_off, src->len - body_off)) {
                rc = -1;
            } else {
                buf_free(body);
                *body = clean;
                buf_init(&clean, 0);
                src->data = body->data;
                src->len = src->size = body->len;
            }
        } else {
            int nfd = smtp_spill_file_open(j->data_dir);
            bool ok = nfd >= 0 && util_write_all(nfd, clean.data, clean.len) == 0;
            char *chunk = ok ? malloc(65536) : NULL;
            uint64_t off = body_off, total = clean.len;
            ok = ok && chunk;
            while (ok && off < src->size) {
                ssize_t r = pread(src->fd, chunk, 65536, (off_t)off);
                if (r <= 0) {
                    ok = r == 0;
                    break;
                }
                ok = util_write_all(nfd, chunk, (size_t)r) == 0;
                off += (uint64_t)r;
                total += (uint64_t)r;
            }
            free(chunk);
            if (!ok) {
                if (nfd >= 0)
                    close(nfd);
                rc = -1;
            } else {
                close(*fd);
                *fd = nfd;
                src->fd = nfd;
                src->size = total;
            }
        }
    }
    buf_free(&clean);
    if (is_head_copied)
        free(head);
    free(fields);
    return rc;
}

void smtp_mailauth_job_run(struct smtp_mailauth_job *j, struct buf *body, int *fd,
                           struct store_source *src)
{
    j->action = SMTP_MAILAUTH_ACCEPT;
    if (hook_remove_forged(j, body, fd, src) < 0) {
        j->action = SMTP_MAILAUTH_TEMPFAIL;
        snprintf(j->reply, sizeof j->reply, "451 4.3.0 Error: queue file write error");
        return;
    }
    struct mailauth_dns dns = mailauth_resolver_dns(hook_resolver);
    struct mailauth_message m = {.data = src->data, .len = src->len, .fd = src->fd,
                                 .fd_size = src->size};
    struct mailauth_check_args a = {.ip = j->ip[0] ? j->ip : NULL,
                                    .helo = j->helo,
                                    .mail_from = j->from,
                                    .receiver = j->receiver,
                                    .now = (int64_t)time(NULL),
                                    .spf = j->has_spf ? &j->spf : NULL};
    struct mailauth_verdict *v = calloc(1, sizeof *v);
    if (!v || mailauth_check_message(&dns, &m, &a, v) < 0) {
        /* unreadable or over the header budget: say so, accept as we would without */
        free(v);
        struct buf h;
        buf_init(&h, 0);
        buf_printf(&h, "Authentication-Results: %s; none (message not checked)\r\n",
                   j->authserv_id);
        j->header = buf_steal(&h);
        snprintf(j->summary, sizeof j->summary, "not checked (header too large or unreadable)");
        return;
    }
    struct buf h;
    buf_init(&h, 0);
    mailauth_ar_format(j->authserv_id, v, &h);
    j->header = buf_steal(&h);
    j->arc = v->arc;
    const struct mailauth_dmarc_result *d = &v->dmarc;
    size_t n_pass = 0;
    for (size_t i = 0; i < v->n_dkim; i++)
        n_pass += v->dkim[i].result == MAILAUTH_PASS;
    snprintf(j->summary, sizeof j->summary,
             "spf=%s dkim=%s (%zu of %zu signatures) arc=%s dmarc=%s header.from=%s%s%s",
             v->has_spf ? mailauth_result_name(v->spf.result) : "none",
             v->n_dkim == 0 ? "none" : n_pass ? "pass" : "fail", n_pass, v->n_dkim,
             mailauth_result_name(v->arc.result),
             mailauth_result_name(d->result), d->header_from[0] ? d->header_from : "-",
             d->has_record ? " p=" : "", d->has_record ? mailauth_dmarc_policy_name(d->policy) : "");
    if (j->dmarc_rank == DMARC_MARK) {
        /* mailauth.dmarc_policy = mark: the header says it all, nothing is refused */
    } else if (d->result == MAILAUTH_FAIL && d->disposition == MAILAUTH_DMARC_POLICY_REJECT &&
               j->dmarc_rank == DMARC_ENFORCE) {
        j->action = SMTP_MAILAUTH_REJECT;
        /* RFC 7489 §10.3 suggests 5.7.1 with a reason the sender can act on */
        snprintf(j->reply, sizeof j->reply,
                 "550 5.7.1 Message rejected: DMARC policy of %s (p=reject): not aligned with "
                 "SPF or DKIM",
                 d->header_from);
    } else if (d->result == MAILAUTH_FAIL && d->disposition != MAILAUTH_DMARC_POLICY_NONE) {
        j->action = SMTP_MAILAUTH_JUNK;
    } else if (d->result == MAILAUTH_TEMPERROR && j->dmarc_rank == DMARC_ENFORCE) {
        /* never a silent pass on a DNS failure: the sender retries later */
        j->action = SMTP_MAILAUTH_TEMPFAIL;
        snprintf(j->reply, sizeof j->reply,
                 "451 4.7.5 Message deferred: DMARC check of %s failed temporarily (DNS), try "
                 "again later",
                 d->header_from[0] ? d->header_from : "the From domain");
    }
    free(v);
}

void smtp_mailauth_job_seal(struct smtp_mailauth_job *j, char **remote_header,
                            const struct store_source *src)
{
    if (!j->header || !j->seal_domain[0])
        return;
    struct mailauth_signing_key keys[2];
    size_t n = 0;
    char *err = NULL;
    if (mailauth_keys_load_signing(j->data_dir, j->seal_domain, keys, &n, &err) < 0 || n == 0) {
        free(err);
        return; /* no key for our domain: forwarded without a seal */
    }
    /* RSA first (keys[0] when there is one): what ARC validators support everywhere */
    struct mailauth_message m = {.prefix = *remote_header,
                                 .prefix_len = strlen(*remote_header),
                                 .data = src->data,
                                 .len = src->len,
                                 .fd = src->fd,
                                 .fd_size = src->size};
    struct buf out;
    buf_init(&out, 0);
    const char *serr = NULL;
    if (mailauth_arc_seal(&m, &keys[0], j->header, &j->arc, (int64_t)time(NULL), &out, &serr) ==
            0 &&
        buf_append_str(&out, *remote_header)) {
        free(*remote_header);
        *remote_header = buf_steal(&out);
        j->is_sealed = true;
    } else {
        snprintf(j->reply, sizeof j->reply, "%s", serr ? serr : "out of memory");
    }
    buf_free(&out);
    for (size_t i = 0; i < n; i++)
        mailauth_signing_key_free(&keys[i]);
}
