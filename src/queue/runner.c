/*
 * runner.c - the queue runner inside `tern serve` (issue 5): one libevent timer on the
 * loop fires every queue.scan_interval seconds; a scan (in the delivery pool: readdir and
 * envelope reads are blocking) lists active/ and the deferred/ files whose retry time
 * (their mtime) has come; back on the loop, messages are handed to delivery threads,
 * at most queue.max_deliveries at once and queue.destination_concurrency per recipient
 * domain. hold/ is never touched. A message in flight is never scanned twice: the loop
 * keeps the set of ids in flight.
 *
 * New mail does not wait for a scan: SMTP receive calls outbound_runner_notify() on the
 * loop as soon as a message is committed, which appends it to the backlog and dispatches
 * it at once (the scan remains for mail from other processes, bounces, flushes and retry
 * times). Scans skip the ids the loop already knows (in flight or in the backlog), so a
 * long queue is not re-read file by file on every scan.
 *
 * The delivery pool is the runner's own workpool, separate from the server's, because a
 * delivery can wait minutes on a slow peer and must not starve SMTP receive's fsyncs.
 */
/* Log and reply texts are deliberately cut to their fixed buffers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "mailauth/mailauth.h"
#include "queue/outbound.h"
#include "queue/queue-private.h"
#include "queue/queue.h"

#include "auth/auth.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/util.h"
#include "core/workpool.h"

#include <ctype.h>
#include <time.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define RUNNER_MAX_SCAN 10000 /* messages considered per scan */

unsigned outbound_retry_delay(unsigned attempts, unsigned min, unsigned max)
{
    if (min == 0)
        min = 1;
    if (max < min)
        max = min;
    unsigned d = min;
    for (unsigned i = 1; i < attempts && d < max; i++)
        d = d > max / 2 ? max : d * 2;
    return d < max ? d : max;
}

struct runner_dest {
    char domain[256];
    unsigned active;
};

struct scan_item {
    char id[32];
    int state;
    char **domains;
    size_t n_domains;
};

struct outbound_runner {
    struct server_context *ctx;
    struct outbound_shared shared;
    struct workpool *pool;
    struct event *timer;
    bool is_scanning, is_stopping;
    char (*inflight)[32];
    size_t n_inflight;
    struct runner_dest *dests;
    size_t n_dests, cap_dests;
    unsigned max_deliveries, per_dest;
    struct outbound_job *waiting; /* dispatched, waiting for DNS answers */
    struct scan_item *backlog;    /* due messages not yet dispatched (scans, notifications) */
    size_t n_backlog, cap_backlog;
    bool is_scan_useful; /* the last scan found unknown mail: rescan when drained */
    char tlsrpt_day[16];  /* mailauth hook: the UTC day whose TLS reports were looked at */
    bool is_tlsrpt_running;
    /* reports that could not be delivered (an https: receiver down): that day again at
     * tlsrpt_retry_at (util_now_ms clock), the wait doubling as the queue's retries do */
    char tlsrpt_retry_day[16];
    uint64_t tlsrpt_retry_at;
    uint64_t tlsrpt_retry_wait;
};

/* ---- mailauth hook: the daily TLS-RPT reports (RFC 8460) ----------------------------- */

/* RFC 8460 §5.4: retries with exponential back-off, for up to a day (tlsrpt.c gives up
 * 24 hours after the first attempt): the schedule of the queue's own retries,
 * queue.retry_min (5 minutes) doubling to queue.retry_max (4 hours) */

struct tlsrpt_job {
    struct outbound_runner *r; /* the runner outlives its pool's jobs (stop waits) */
    const struct config *cfg;
    struct mailauth_resolver *dns;
    char day[16];
    struct outbound_tlsrpt_counts counts; /* the result, read in tlsrpt_done */
    bool has_failed;
};

static void tlsrpt_work(void *arg)
{
    struct tlsrpt_job *j = arg;
    struct mailauth_dns dns = mailauth_resolver_dns(j->dns);
    char *err = NULL;
    if (outbound_tlsrpt_send(j->cfg, &dns, j->day, &j->counts, &err) < 0) {
        log_warning("tlsrpt", "TLS reports of %s: %s", j->day, err ? err : "failed");
        j->has_failed = true;
    }
    free(err);
}

static void tlsrpt_done(void *arg)
{
    struct tlsrpt_job *j = arg;
    struct outbound_runner *r = j->r;
    r->is_tlsrpt_running = false;
    if (j->counts.pending || j->has_failed) {
        /* the same day again later, waiting twice as long each time */
        uint64_t first = (uint64_t)j->cfg->queue_retry_min * 1000,
                 most = (uint64_t)j->cfg->queue_retry_max * 1000;
        bool is_same_day = strcmp(r->tlsrpt_retry_day, j->day) == 0 && r->tlsrpt_retry_wait;
        uint64_t wait = is_same_day ? r->tlsrpt_retry_wait * 2 : first;
        r->tlsrpt_retry_wait = wait > most ? most : wait < 1000 ? 1000 : wait;
        snprintf(r->tlsrpt_retry_day, sizeof r->tlsrpt_retry_day, "%s", j->day);
        r->tlsrpt_retry_at = util_now_ms() + r->tlsrpt_retry_wait;
    } else if (strcmp(r->tlsrpt_retry_day, j->day) == 0) {
        r->tlsrpt_retry_day[0] = '\0';
        r->tlsrpt_retry_at = r->tlsrpt_retry_wait = 0;
    }
    free(j);
}

/* Send day's reports on a delivery thread. */
static void runner_tlsrpt_start(struct outbound_runner *r, const char *day)
{
    struct tlsrpt_job *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->r = r;
    j->cfg = r->shared.cfg;
    j->dns = r->shared.mailauth_dns;
    snprintf(j->day, sizeof j->day, "%s", day);
    r->is_tlsrpt_running = true;
    workpool_submit(r->pool, tlsrpt_work, tlsrpt_done, j);
}

/* Loop thread, every tick: once a UTC day has ended, send its reports; retry a day whose
 * reports could not all be delivered when its time has come. */
static void runner_tlsrpt_check(struct outbound_runner *r)
{
    if (r->is_tlsrpt_running || !r->shared.mailauth_dns)
        return;
    char today[16];
    mailauth_tlsrpt_day((int64_t)time(NULL), today, sizeof today);
    if (strcmp(today, r->tlsrpt_day) != 0) {
        snprintf(r->tlsrpt_day, sizeof r->tlsrpt_day, "%s", today);
        char yesterday[16];
        mailauth_tlsrpt_day((int64_t)time(NULL) - 86400, yesterday, sizeof yesterday);
        runner_tlsrpt_start(r, yesterday);
    } else if (r->tlsrpt_retry_day[0] && util_now_ms() >= r->tlsrpt_retry_at) {
        runner_tlsrpt_start(r, r->tlsrpt_retry_day);
    }
}

struct scan_job {
    struct outbound_runner *r;
    struct scan_item *items;
    size_t n, cap;
    char (*known)[32]; /* sorted ids in flight or in the backlog: no need to read them */
    size_t n_known;
    bool is_truncated; /* stopped at RUNNER_MAX_SCAN */
};

/* The running runner, for outbound_runner_notify() (loop thread only; one per process). */
static struct outbound_runner *runner_current;

static int id_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void domains_free(char **d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(d[i]);
    free(d);
}

/* Distinct lower-case domains of a recipient list. */
static char **rcpt_domains(const char *const *rcpts, size_t n_rcpts, size_t *n_r)
{
    char **d = calloc(n_rcpts ? n_rcpts : 1, sizeof *d);
    size_t n = 0;
    if (!d)
        return NULL;
    for (size_t i = 0; i < n_rcpts; i++) {
        const char *at = strrchr(rcpts[i], '@');
        const char *dom = at ? at + 1 : "";
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = strcasecmp(d[k], dom) == 0;
        if (seen)
            continue;
        d[n] = strdup(dom);
        if (!d[n])
            break;
        for (char *p = d[n]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        n++;
    }
    *n_r = n;
    return d;
}

/* Delivery pool thread: list what is due. */
static void scan_work(void *arg)
{
    struct scan_job *job = arg;
    const char *data_dir = job->r->shared.cfg->data_dir;
    time_t now = time(NULL);
    static const int states[2] = {QUEUE_STATE_ACTIVE, QUEUE_STATE_DEFERRED};
    for (int s = 0; s < 2 && job->n < RUNNER_MAX_SCAN; s++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/queue/%s", data_dir, queue_states[states[s]]);
        DIR *d = opendir(dir);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d)) != NULL && job->n < RUNNER_MAX_SCAN) {
            if (!queue_id_is_valid(de->d_name))
                continue;
            char path[4600];
            snprintf(path, sizeof path, "%s/%.255s", dir, de->d_name);
            struct stat st;
            if (states[s] == QUEUE_STATE_DEFERRED && (stat(path, &st) < 0 || st.st_mtime > now))
                continue;
            /* already known to the loop (in flight or queued by a notification): reading
             * it again would cost a file read per message per scan under load */
            if (states[s] == QUEUE_STATE_ACTIVE && job->n_known &&
                bsearch(de->d_name, job->known, job->n_known, sizeof *job->known, id_cmp))
                continue;
            struct queue_entry e;
            char *err = NULL;
            if (queue_file_read(path, &e, NULL, NULL, &err) != 0) {
                free(err);
                continue; /* spool.c's listing reports broken files */
            }
            if (job->n == job->cap) {
                size_t ncap = job->cap ? job->cap * 2 : 64;
                struct scan_item *ni = realloc(job->items, ncap * sizeof *ni);
                if (!ni) {
                    queue_entry_free(&e);
                    break;
                }
                job->items = ni;
                job->cap = ncap;
            }
            struct scan_item *it = &job->items[job->n];
            snprintf(it->id, sizeof it->id, "%s", e.id);
            it->state = states[s];
            it->domains =
                rcpt_domains((const char *const *)e.recipients, e.n_recipients, &it->n_domains);
            queue_entry_free(&e);
            if (it->domains)
                job->n++;
        }
        closedir(d);
    }
    job->is_truncated = job->n >= RUNNER_MAX_SCAN;
}

static bool runner_is_inflight(const struct outbound_runner *r, const char *id)
{
    for (size_t i = 0; i < r->n_inflight; i++)
        if (strcmp(r->inflight[i], id) == 0)
            return true;
    return false;
}

static struct runner_dest *runner_dest(struct outbound_runner *r, const char *domain)
{
    for (size_t i = 0; i < r->n_dests; i++)
        if (strcmp(r->dests[i].domain, domain) == 0)
            return &r->dests[i];
    /* reuse an idle slot before growing */
    for (size_t i = 0; i < r->n_dests; i++)
        if (r->dests[i].active == 0) {
            snprintf(r->dests[i].domain, sizeof r->dests[i].domain, "%s", domain);
            return &r->dests[i];
        }
    if (r->n_dests == r->cap_dests) {
        size_t ncap = r->cap_dests ? r->cap_dests * 2 : 16;
        struct runner_dest *nd = realloc(r->dests, ncap * sizeof *nd);
        if (!nd)
            return NULL;
        r->dests = nd;
        r->cap_dests = ncap;
    }
    struct runner_dest *d = &r->dests[r->n_dests++];
    snprintf(d->domain, sizeof d->domain, "%s", domain);
    d->active = 0;
    return d;
}

static void job_free(struct outbound_job *job)
{
    domains_free(job->domains, job->n_domains);
    for (size_t i = 0; job->resolved && i < job->n_domains; i++)
        free(job->resolved[i].addrs);
    free(job->resolved);
    free(job);
}

static void deliver_work(void *arg);
static void deliver_done(void *arg);
static void runner_dispatch(struct outbound_runner *r);
static void runner_tick(evutil_socket_t fd, short what, void *arg);

static struct outbound_runner *job_runner(struct outbound_job *job)
{
    return (struct outbound_runner *)((char *)job->shared -
                                      offsetof(struct outbound_runner, shared));
}

/* One DNS answer less to wait for; at zero the job goes to a delivery thread. */
static void job_dns_release(struct outbound_job *job)
{
    if (--job->dns_pending > 0)
        return;
    struct outbound_runner *r = job_runner(job);
    for (struct outbound_job **pp = &r->waiting; *pp; pp = &(*pp)->next_waiting) {
        if (*pp == job) {
            *pp = job->next_waiting;
            break;
        }
    }
    workpool_submit(r->pool, deliver_work, deliver_done, job);
}

/* Loop thread: the route of one remote domain is known. */
static void job_dns_done(void *arg, enum outbound_dns_status st, struct outbound_addr *addrs,
                         size_t n, const char *error)
{
    struct outbound_resolved *res = arg;
    res->is_done = true;
    res->status = st;
    res->addrs = addrs;
    res->n = n;
    snprintf(res->error, sizeof res->error, "%s", error ? error : "");
    job_dns_release(res->job);
}

/* Loop thread: resolve the job's remote domains asynchronously (the DNS wait stays on the
 * loop, issue 5), then submit it. Local domains need no lookup. */
static void job_start(struct outbound_runner *r, struct outbound_job *job)
{
    job->dns_pending = 1; /* held until every lookup is started */
    job->next_waiting = r->waiting;
    r->waiting = job;
    job->resolved = calloc(job->n_domains ? job->n_domains : 1, sizeof *job->resolved);
    for (size_t i = 0; job->resolved && i < job->n_domains; i++) {
        job->resolved[i].job = job;
        /* never a round trip to the auth process or an SQL server on the loop: "unknown"
         * (-1) there. An unknown domain is resolved anyway (the DNS wait stays on the
         * loop); the delivery thread decides local or remote, and a local one (rare in
         * the queue: a retry) only wasted a query. */
        if (r->shared.auth && auth_domain_is_local_nonblocking(r->shared.auth, job->domains[i]) == 1)
            continue;
        struct outbound_route route;
        bool is_relay;
        if (outbound_route_for(r->shared.cfg, job->domains[i], &route, &is_relay) < 0)
            continue;
        job->dns_pending++;
        if (outbound_dns_route_async(r->shared.dns, &route, job_dns_done, &job->resolved[i]) < 0)
            job->dns_pending--; /* the thread resolves it itself */
    }
    job_dns_release(job);
}

static void deliver_work(void *arg)
{
    outbound_deliver(arg);
}

/* Loop thread: a delivery finished; free its slots. */
static void deliver_done(void *arg)
{
    struct outbound_job *job = arg;
    struct outbound_runner *r = job_runner(job);
    for (size_t i = 0; i < r->n_inflight; i++) {
        if (strcmp(r->inflight[i], job->id) == 0) {
            memcpy(r->inflight[i], r->inflight[r->n_inflight - 1], sizeof r->inflight[i]);
            r->n_inflight--;
            break;
        }
    }
    for (size_t i = 0; i < job->n_domains; i++) {
        struct runner_dest *d = runner_dest(r, job->domains[i]);
        if (d && d->active)
            d->active--;
    }
    bool is_rescan = r->is_scan_useful || job->may_have_queued;
    job_free(job);
    /* keep the pipeline full: next from the backlog; when it ran dry, look for more mail
     * at once only if the last scan found mail nobody told us about (sendmail, bounces,
     * flush, a big queue) or this delivery may have queued a bounce - SMTP receive
     * notifies directly, and a busy relay must not rescan after every delivery */
    runner_dispatch(r);
    if (r->n_backlog == 0 && is_rescan && !r->is_stopping)
        runner_tick(-1, 0, r);
}

/* Loop thread: hand due messages to delivery threads within the limits. */
/* Loop thread: hand backlog messages to delivery threads within the limits; what cannot
 * go now stays in the backlog for the next free slot. */
static void runner_dispatch(struct outbound_runner *r)
{
    size_t keep = 0, i = 0;
    for (; i < r->n_backlog; i++) {
        struct scan_item *it = &r->backlog[i];
        if (r->n_inflight >= r->max_deliveries && !r->is_stopping)
            break; /* no slot: the rest waits as it is (no O(backlog) walk per delivery) */
        if (r->is_stopping || runner_is_inflight(r, it->id)) {
            domains_free(it->domains, it->n_domains);
            continue;
        }
        bool ok = r->n_inflight < r->max_deliveries;
        for (size_t k = 0; ok && k < it->n_domains; k++) {
            struct runner_dest *d = runner_dest(r, it->domains[k]);
            ok = d && d->active < r->per_dest;
        }
        struct outbound_job *job = ok ? calloc(1, sizeof *job) : NULL;
        if (!job) {
            r->backlog[keep++] = *it; /* a slot frees up later */
            continue;
        }
        job->shared = &r->shared;
        snprintf(job->id, sizeof job->id, "%s", it->id);
        job->state = it->state;
        job->domains = it->domains;
        job->n_domains = it->n_domains;
        for (size_t k = 0; k < it->n_domains; k++)
            runner_dest(r, it->domains[k])->active++;
        memcpy(r->inflight[r->n_inflight++], job->id, sizeof job->id);
        job_start(r, job);
    }
    if (i < r->n_backlog && keep < i)
        memmove(&r->backlog[keep], &r->backlog[i], (r->n_backlog - i) * sizeof *r->backlog);
    r->n_backlog = keep + (r->n_backlog - i);
}

static void runner_backlog_clear(struct outbound_runner *r)
{
    for (size_t i = 0; i < r->n_backlog; i++)
        domains_free(r->backlog[i].domains, r->backlog[i].n_domains);
    free(r->backlog);
    r->backlog = NULL;
    r->n_backlog = r->cap_backlog = 0;
}

/* Loop thread: room for one more backlog item. */
static bool runner_backlog_grow(struct outbound_runner *r)
{
    if (r->n_backlog < r->cap_backlog)
        return true;
    size_t ncap = r->cap_backlog ? r->cap_backlog * 2 : 64;
    struct scan_item *nb = realloc(r->backlog, ncap * sizeof *nb);
    if (!nb)
        return false;
    r->backlog = nb;
    r->cap_backlog = ncap;
    return true;
}

/* Loop thread: a scan finished; what it found that the backlog does not hold yet (the scan
 * skipped what was known when it started, but notifications may have arrived meanwhile)
 * is appended. A duplicate would be harmless anyway: dispatch skips ids in flight and a
 * delivery of a file that is gone does nothing. */
static void scan_done(void *arg)
{
    struct scan_job *sj = arg;
    struct outbound_runner *r = sj->r;
    r->is_scanning = false;
    char(*ids)[32] = r->n_backlog ? calloc(r->n_backlog, sizeof *ids) : NULL;
    size_t n_ids = ids ? r->n_backlog : 0;
    for (size_t i = 0; i < n_ids; i++)
        memcpy(ids[i], r->backlog[i].id, sizeof ids[i]);
    if (ids)
        qsort(ids, n_ids, sizeof *ids, id_cmp);
    size_t n_new = 0;
    for (size_t i = 0; i < sj->n; i++) {
        struct scan_item *it = &sj->items[i];
        if ((n_ids && bsearch(it->id, ids, n_ids, sizeof *ids, id_cmp)) ||
            runner_is_inflight(r, it->id) || !runner_backlog_grow(r)) {
            domains_free(it->domains, it->n_domains);
            continue;
        }
        r->backlog[r->n_backlog++] = *it;
        n_new++;
    }
    r->is_scan_useful = n_new > 0 || sj->is_truncated;
    free(ids);
    free(sj->items);
    free(sj->known);
    free(sj);
    runner_dispatch(r);
}

static outbound_notify_fn *runner_remote;

void outbound_runner_set_remote(outbound_notify_fn *fn)
{
    runner_remote = fn;
}

void outbound_runner_notify(const char *queue_id, const char *const *recipients,
                            size_t n_recipients)
{
    struct outbound_runner *r = runner_current;
    if (!r && runner_remote && n_recipients > 0) {
        runner_remote(queue_id, recipients, n_recipients); /* the queue process's runner */
        return;
    }
    if (!r || r->is_stopping || n_recipients == 0 || !queue_id_is_valid(queue_id) ||
        !runner_backlog_grow(r))
        return; /* the next scan finds it */
    struct scan_item *it = &r->backlog[r->n_backlog];
    snprintf(it->id, sizeof it->id, "%s", queue_id);
    it->state = QUEUE_STATE_ACTIVE;
    it->domains = rcpt_domains(recipients, n_recipients, &it->n_domains);
    if (!it->domains)
        return;
    r->n_backlog++;
    runner_dispatch(r);
}

static void runner_tick(evutil_socket_t fd, short what, void *arg)
{
    struct outbound_runner *r = arg;
    if (!r->is_stopping)
        runner_tlsrpt_check(r); /* mailauth hook */
    if (r->is_scanning || r->is_stopping || r->n_inflight >= r->max_deliveries)
        return;
    struct scan_job *sj = calloc(1, sizeof *sj);
    if (!sj)
        return;
    sj->r = r;
    size_t n_known = r->n_inflight + r->n_backlog;
    sj->known = n_known ? calloc(n_known, sizeof *sj->known) : NULL;
    if (sj->known) {
        for (size_t i = 0; i < r->n_inflight; i++)
            memcpy(sj->known[sj->n_known++], r->inflight[i], sizeof *sj->known);
        for (size_t i = 0; i < r->n_backlog; i++)
            memcpy(sj->known[sj->n_known++], r->backlog[i].id, sizeof *sj->known);
        qsort(sj->known, sj->n_known, sizeof *sj->known, id_cmp);
    }
    r->is_scanning = true;
    workpool_submit(r->pool, scan_work, scan_done, sj);
}

/* relayhost.password, or the first line of relayhost.password_file. */
static char *runner_relay_password(const struct config *cfg, char **error_r)
{
    if (cfg->relayhost_password_file && cfg->relayhost_password_file[0]) {
        FILE *f = fopen(cfg->relayhost_password_file, "r");
        char line[1024] = "";
        if (!f || !fgets(line, sizeof line, f)) {
            char msg[600];
            snprintf(msg, sizeof msg, "cannot read relayhost.password_file %s: %s",
                     cfg->relayhost_password_file, f ? "empty file" : strerror(errno));
            if (f)
                fclose(f);
            *error_r = strdup(msg);
            return NULL;
        }
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        return strdup(line);
    }
    return strdup(cfg->relayhost_password ? cfg->relayhost_password : "");
}

struct outbound_runner *outbound_runner_start(struct server_context *ctx, char **error_r)
{
    const struct config *cfg = ctx->cfg;
    struct outbound_runner *r = calloc(1, sizeof *r);
    if (!r) {
        *error_r = strdup("out of memory");
        return NULL;
    }
    r->ctx = ctx;
    r->shared.cfg = cfg;
    r->shared.auth = ctx->auth;
    atomic_init(&r->shared.is_stopping, false);
    r->max_deliveries = cfg->queue_max_deliveries ? cfg->queue_max_deliveries : 1;
    r->per_dest = cfg->queue_destination_concurrency ? cfg->queue_destination_concurrency : 1;
    r->inflight = calloc(r->max_deliveries, sizeof *r->inflight);
    if (!r->inflight || queue_dirs_create(cfg->data_dir, error_r) < 0)
        goto fail;
    r->shared.relay_password = runner_relay_password(cfg, error_r);
    if (!r->shared.relay_password)
        goto fail;
    r->shared.dns = outbound_dns_create(cfg->dns_resolver, cfg->dns_trust_anchor, error_r);
    if (!r->shared.dns)
        goto fail;
    if (outbound_dns_attach(r->shared.dns, ctx->base) < 0) {
        *error_r = strdup("cannot attach the DNS resolver to the event loop");
        goto fail;
    }
    r->shared.ssl_ctx = outbound_ssl_ctx_create(cfg->outbound_ca_file, error_r);
    if (!r->shared.ssl_ctx)
        goto fail;
    /* mailauth hook: MTA-STS discovery (RFC 8461) and DANE's TLSA lookups (RFC 7672,
     * validated from dns.trust_anchor) in the delivery threads */
    if (cfg->outbound_mta_sts || (cfg->outbound_dane && cfg->dns_trust_anchor[0])) {
        r->shared.mailauth_dns = mailauth_resolver_create(
            cfg->dns_resolver, cfg->mailauth_dns_timeout * 1000, cfg->dns_trust_anchor, error_r);
        if (!r->shared.mailauth_dns)
            goto fail;
    }
    /* one thread per delivery plus one for scans */
    r->pool = workpool_create(ctx->base, r->max_deliveries + 1);
    r->timer = event_new(ctx->base, -1, EV_PERSIST, runner_tick, r);
    if (!r->pool || !r->timer) {
        *error_r = strdup("cannot start the queue runner");
        goto fail;
    }
    struct timeval tv = {.tv_sec = cfg->queue_scan_interval ? cfg->queue_scan_interval : 1};
    event_add(r->timer, &tv);
    event_active(r->timer, EV_TIMEOUT, 0); /* first scan at once: mail may be waiting */
    runner_current = r;
    log_info("qmgr", "queue runner started (%u delivery threads%s%s)", r->max_deliveries,
             cfg->relayhost[0] ? ", relayhost " : "", cfg->relayhost);
    return r;
fail:
    outbound_runner_stop(r, UINT64_MAX);
    return NULL;
}

bool outbound_runner_stop(struct outbound_runner *r, uint64_t deadline_ms)
{
    if (!r)
        return true;
    r->is_stopping = true;
    if (runner_current == r)
        runner_current = NULL;
    atomic_store(&r->shared.is_stopping, true);
    if (r->timer)
        event_free(r->timer);
    /* waits for deliveries; runs their done callbacks */
    if (r->pool && !workpool_destroy_by(r->pool, deadline_ms))
        return false;
    outbound_conn_cache_close_all();
    outbound_dns_free(r->shared.dns); /* no DNS callbacks after this */
    while (r->waiting) {
        struct outbound_job *job = r->waiting;
        r->waiting = job->next_waiting;
        job_free(job);
    }
    if (r->shared.ssl_ctx)
        SSL_CTX_free(r->shared.ssl_ctx);
    mailauth_resolver_free(r->shared.mailauth_dns);
    free(r->shared.relay_password);
    runner_backlog_clear(r);
    free(r->inflight);
    free(r->dests);
    free(r);
    return true;
}
