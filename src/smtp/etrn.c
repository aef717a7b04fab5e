/*
 * etrn.c - ETRN (RFC 1985): a client (typically the secondary MX's customer coming
 * online) asks us to start delivering the mail queued for its domain now.
 *
 *   ETRN example.org     that domain
 *   ETRN @example.org    that domain and its subdomains (RFC 1985 §3: "@" prefix)
 *   ETRN #queue          named queues: we have none -> 458
 *
 * Policy: only on the port-25 role (it is advertised there only), outside a mail
 * transaction, after HELO/EHLO. A node is allowed when it has a transport.<domain> route
 * or when something is queued for it; any other name gets 459, so ETRN cannot be used
 * to probe or load the queue for arbitrary domains. No AUTH is needed (RFC 1985 §5: the
 * worst an attacker can do is make us deliver sooner); each ETRN counts as a "junk"
 * command (SMTP_JUNK_COMMAND_LIMIT) and a session runs one at a time.
 *
 * The flush renames files and fsyncs directories (BLOCKING), so it runs in the workpool
 * through queue_flush_domain(); the queue runner picks the mail up on its next scan.
 */
#include "core/config.h"
#include "core/log.h"
#include "core/workpool.h"
#include "queue/queue.h"
#include "smtp/remote.h"
#include "smtp/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ETRN_MAX_DOMAINS 1000 /* distinct domains flushed for one "@domain" */

/* The flush of one node (also run by a mail worker for a login process: smtp/remote.c). */
struct etrn_flush {
    const char *data_dir;
    const char *node;   /* the domain, lower case, without "@" */
    bool is_subdomains; /* "@domain" */
    /* results */
    size_t n_queued; /* messages in the queue with a recipient in the node */
    int moved;
    bool is_failed;
    char **domains; /* distinct matching recipient domains */
    size_t n_domains;
};

struct etrn_job {
    struct job job; /* first (core/job.h) */
    char *data_dir;
    char node[256];
    bool is_subdomains;
    bool has_transport;
    bool is_remote; /* a login process: a mail worker flushes */
    size_t n_queued;
    int moved;
    bool is_failed;
};

/* Does domain d belong to the node (itself, or a subdomain for "@node")? */
static bool etrn_matches(const struct etrn_flush *job, const char *d)
{
    if (strcasecmp(d, job->node) == 0)
        return true;
    size_t dl = strlen(d), nl = strlen(job->node);
    return job->is_subdomains && dl > nl + 1 && d[dl - nl - 1] == '.' &&
           strcasecmp(d + dl - nl, job->node) == 0;
}

/* RFC 1035 host name syntax (letters, digits, '-', '.'), 1..253 octets. */
static bool etrn_domain_ok(const char *d, size_t len)
{
    if (len == 0 || len > 253 || d[0] == '.' || d[0] == '-' || d[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = d[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || (c == '.' && d[i + 1] != '.');
        if (!ok)
            return false;
    }
    return true;
}

/* queue_list callback: count matching messages and collect their domains. */
static void etrn_collect(const struct queue_entry *e, void *arg)
{
    struct etrn_flush *job = arg;
    bool is_counted = false;
    for (size_t i = 0; i < e->n_recipients; i++) {
        const char *at = strrchr(e->recipients[i], '@');
        if (!at || !etrn_matches(job, at + 1))
            continue;
        if (!is_counted && strcmp(e->state, "hold") != 0) {
            job->n_queued++;
            is_counted = true;
        }
        bool is_known = false;
        for (size_t k = 0; k < job->n_domains && !is_known; k++)
            is_known = strcasecmp(job->domains[k], at + 1) == 0;
        if (is_known || job->n_domains >= ETRN_MAX_DOMAINS)
            continue;
        char **nd = realloc(job->domains, (job->n_domains + 1) * sizeof *nd);
        if (!nd)
            continue;
        job->domains = nd;
        if ((job->domains[job->n_domains] = strdup(at + 1)) != NULL)
            job->n_domains++;
    }
}

void smtp_etrn_flush(const char *data_dir, const char *node, bool is_subdomains,
                     size_t *n_queued_r, int *moved_r)
{
    struct etrn_flush f = {.data_dir = data_dir, .node = node, .is_subdomains = is_subdomains};
    char *err = NULL;
    if (queue_list(data_dir, etrn_collect, &f, &err) < 0) {
        log_warning("smtpd", "ETRN %s: cannot list the queue: %s", node, err ? err : "?");
        free(err);
        f.is_failed = true;
    }
    for (size_t i = 0; !f.is_failed && i < f.n_domains; i++) {
        int r = queue_flush_domain(data_dir, f.domains[i]);
        if (r < 0)
            f.is_failed = true;
        else
            f.moved += r;
    }
    for (size_t i = 0; i < f.n_domains; i++)
        free(f.domains[i]);
    free(f.domains);
    *n_queued_r = f.n_queued;
    *moved_r = f.is_failed ? -1 : f.moved;
}

/* Workpool thread: find the node's mail and flush it (renames, directory fsync), here or
 * (a login process) in a mail worker. */
static void etrn_work(struct job *j)
{
    struct etrn_job *job = (struct etrn_job *)j;
    if (job->is_remote)
        smtp_remote_etrn(job->node, job->is_subdomains, &job->n_queued, &job->moved);
    else
        smtp_etrn_flush(job->data_dir, job->node, job->is_subdomains, &job->n_queued,
                        &job->moved);
    job->is_failed = job->moved < 0;
}

static void etrn_job_free(struct etrn_job *job)
{
    free(job->data_dir);
    free(job);
}

static void etrn_done(void *session, struct job *j)
{
    struct etrn_job *job = (struct etrn_job *)j;
    struct smtp_session *s = session;
    if (s) {
        const char *at = job->is_subdomains ? "@" : "";
        /* RFC 1985 §5 reply codes */
        if (job->is_failed) {
            smtp_reply(s, "458 Unable to queue messages for node %s%s", at, job->node);
        } else if (job->n_queued == 0 && !job->has_transport) {
            smtp_reply(s, "459 Node %s%s not allowed: unknown domain", at, job->node);
        } else if (job->n_queued == 0) {
            smtp_reply(s, "251 OK, no messages waiting for node %s%s", at, job->node);
        } else {
            log_info("smtpd", "ETRN %s%s from %s: %d deferred message(s) made due", at, job->node,
                     s->peer, job->moved);
            smtp_reply(s, "250 Queuing for node %s%s started", at, job->node);
        }
    }
    etrn_job_free(job);
    if (s)
        smtp_session_job_done(s);
}

void smtp_cmd_etrn(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (s->role != CONN_ROLE_SMTP) {
        smtp_reply(s, "502 5.5.1 Error: command not implemented");
        return;
    }
    if (s->txn.is_active) {
        smtp_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    const char *arg = cmd->arg;
    size_t len = cmd->arg_len;
    if (len == 0) {
        smtp_reply(s, "500 Syntax Error");
        return;
    }
    if (arg[0] == '#') {
        /* RFC 1985 §3: queue names are ours to define; we have none */
        if (!etrn_domain_ok(arg + 1, len - 1)) {
            smtp_reply(s, "501 Syntax Error in Parameters");
            return;
        }
        smtp_reply(s, "458 Unable to queue messages for node %.*s", (int)len, arg);
        return;
    }
    bool is_subdomains = arg[0] == '@';
    if (is_subdomains) {
        arg++;
        len--;
    }
    if (!etrn_domain_ok(arg, len)) {
        smtp_reply(s, "501 Syntax Error in Parameters");
        return;
    }
    struct etrn_job *job = calloc(1, sizeof *job);
    if (!job || !(job->data_dir = strdup(s->cfg->data_dir ? s->cfg->data_dir : "."))) {
        free(job);
        smtp_reply(s, "458 Unable to queue messages for node %.*s", (int)len, arg);
        return;
    }
    job_init(&job->job, s->handle, etrn_work, etrn_done);
    job->is_subdomains = is_subdomains;
    job->is_remote = conn_is_login_process(s->c);
    for (size_t i = 0; i < len; i++)
        job->node[i] = (char)((arg[i] >= 'A' && arg[i] <= 'Z') ? arg[i] + 32 : arg[i]);
    job->node[len] = '\0';
    /* transport.<domain> items are "<domain> <route>" */
    for (size_t i = 0; i < s->cfg->transports.n && !job->has_transport; i++) {
        const char *item = s->cfg->transports.items[i];
        const char *sp = strchr(item, ' ');
        char d[256];
        size_t dl = sp ? (size_t)(sp - item) : strlen(item);
        if (dl >= sizeof d)
            continue;
        memcpy(d, item, dl);
        d[dl] = '\0';
        struct etrn_flush f = {.node = job->node, .is_subdomains = is_subdomains};
        job->has_transport = etrn_matches(&f, d);
    }
    smtp_session_job_start(s, &job->job);
}
