/*
 * deliver.c - one delivery attempt of one queued message, in a delivery thread:
 * local recipients (mail from `tern sendmail`, bounces to local senders) go to the store,
 * remote ones are grouped by domain, routed (transport.<domain>, relayhost, MX) and sent
 * over SMTP. Then the queue file is settled:
 *   - every recipient done (sent or bounced): the file is removed;
 *   - some deferred: the file is rewritten with only those recipients, attempts+1, and
 *     its mtime set to the next retry time (as Postfix does), then renamed into deferred/;
 *   - past queue.lifetime, deferred recipients are bounced instead.
 * Permanent failures produce an RFC 3464 DSN to the sender (bounce.c), queued as a new
 * message with the null sender; a failed null-sender message is never bounced to its
 * sender: it goes to postmaster of the first local domain, or is dropped with a log line.
 *
 * Log lines follow Postfix's: "ID: to=<x>, relay=host[ip]:port, delay=..., delays=a/b/c/d,
 * dsn=2.0.0, status=sent (250 ...)".
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
#include "core/log.h"
#include "core/util.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DELIVER_MAX_ENVELOPE (4u * 1024 * 1024)
#define DELIVER_MAX_HEADERS  (64u * 1024)

enum rcpt_status { RCPT_PENDING, RCPT_SENT, RCPT_DEFER, RCPT_BOUNCE };

struct rcpt {
    char *address;
    bool is_local;
    enum rcpt_status status;
    struct outbound_result res;
    char relay[400]; /* "host[ip]:port" or "local" or "none" */
};

struct attempt {
    struct outbound_job *job;
    const struct config *cfg;
    struct queue_entry e;
    unsigned attempts;
    int fd;
    uint64_t offset;
    char path[4200];
    struct rcpt *rcpts;
    size_t n_rcpts, cap_rcpts;
    uint64_t t_start_ms;
    time_t t_start;
};

int outbound_route_parse(const char *s, uint16_t default_port, struct outbound_route *r)
{
    memset(r, 0, sizeof *r);
    r->port = default_port;
    const char *host = s, *port = NULL;
    size_t hlen;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end)
            return -1;
        host = s + 1;
        hlen = (size_t)(end - host);
        r->is_literal = true;
        if (end[1] == ':')
            port = end + 2;
        else if (end[1] != '\0')
            return -1;
    } else {
        const char *colon = strchr(s, ':');
        hlen = colon ? (size_t)(colon - s) : strlen(s);
        if (colon)
            port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof r->host)
        return -1;
    memcpy(r->host, host, hlen);
    r->host[hlen] = '\0';
    if (port) {
        char *end;
        unsigned long p = strtoul(port, &end, 10);
        if (*port == '\0' || *end != '\0' || p == 0 || p > 65535)
            return -1;
        r->port = (uint16_t)p;
    }
    return 0;
}

static const char *addr_domain(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

static bool rcpt_add(struct attempt *a, const char *address, bool is_local)
{
    if (a->n_rcpts == a->cap_rcpts) {
        size_t ncap = a->cap_rcpts ? a->cap_rcpts * 2 : 8;
        struct rcpt *n = realloc(a->rcpts, ncap * sizeof *n);
        if (!n)
            return false;
        a->rcpts = n;
        a->cap_rcpts = ncap;
    }
    struct rcpt *r = &a->rcpts[a->n_rcpts];
    memset(r, 0, sizeof *r);
    r->address = strdup(address);
    if (!r->address)
        return false;
    r->is_local = is_local;
    a->n_rcpts++;
    return true;
}

static void rcpt_set(struct rcpt *r, enum rcpt_status st, int code, const char *dsn,
                     const char *relay, const char *text)
{
    r->status = st;
    r->res.code = code;
    snprintf(r->res.dsn, sizeof r->res.dsn, "%s", dsn);
    snprintf(r->res.text, sizeof r->res.text, "%s", text);
    snprintf(r->relay, sizeof r->relay, "%s", relay);
}

/* Log one recipient's outcome the Postfix way. */
static void rcpt_log(const struct attempt *a, const struct rcpt *r, const char *service,
                     uint64_t conn_ms, uint64_t xfer_ms, bool is_expired)
{
    double delay = difftime(time(NULL), a->e.arrival);
    double da = difftime(a->t_start, a->e.arrival);
    if (delay < 0)
        delay = 0;
    if (da < 0)
        da = 0;
    const char *status = r->status == RCPT_SENT    ? "sent"
                         : r->status == RCPT_DEFER ? "deferred"
                         : is_expired              ? "expired, returned to sender"
                                                   : "bounced";
    log_info(service,
             "%s: to=<%s>, relay=%s, delay=%.1f, delays=%.2g/0/%.2g/%.2g, dsn=%s, "
             "status=%s (%s)",
             a->e.id, r->address, r->relay, delay, da, conn_ms / 1000.0, xfer_ms / 1000.0,
             r->res.dsn, status, r->res.text);
}

/* Read the queue file the runner found (exactly that path: it may have moved since). */
static int attempt_load(struct attempt *a, char **error_r)
{
    const char *dir = queue_states[a->job->state];
    snprintf(a->path, sizeof a->path, "%s/queue/%s/%s", a->cfg->data_dir, dir, a->job->id);
    a->fd = open(a->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (a->fd < 0)
        return 1; /* already delivered, deleted or moved: nothing to do */
    struct stat st;
    if (fstat(a->fd, &st) < 0 || !S_ISREG(st.st_mode))
        return 1;
    /* a deferred file rewritten since the scan carries its new retry time */
    if (a->job->state == QUEUE_STATE_DEFERRED && st.st_mtime > time(NULL))
        return 1;
    size_t want =
        (uint64_t)st.st_size < DELIVER_MAX_ENVELOPE ? (size_t)st.st_size : DELIVER_MAX_ENVELOPE;
    char *data = malloc(want + 1);
    if (!data)
        return -1;
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(a->fd, data + got, want - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    int r = queue_parse_envelope(data, got, &a->e, &a->offset, &a->attempts, error_r);
    free(data);
    if (r < 0)
        return -1;
    if (a->offset + a->e.size != (uint64_t)st.st_size) {
        queue_entry_free(&a->e);
        *error_r = strdup("size field does not match the file");
        return -1;
    }
    return 0;
}

/* ---- local recipients ----------------------------------------------------------------- */

static void deliver_local(struct attempt *a, size_t idx)
{
    struct auth_service *auth = a->job->shared->auth;
    struct auth_targets t = {0};
    char *address = a->rcpts[idx].address;
    int rr = auth_resolve(auth, address, &t);
    if (rr < 0) {
        rcpt_set(&a->rcpts[idx], RCPT_DEFER, 451, "4.3.0", "local",
                 "temporary directory lookup failure");
        return;
    }
    if (rr == 0) {
        rcpt_set(&a->rcpts[idx], RCPT_BOUNCE, 550, "5.1.1", "local",
                 "unknown user: no such user or alias here");
        return;
    }
    /* remote targets of an alias become remote recipients of this same attempt */
    for (size_t i = 0; i < t.n_remote; i++)
        if (!rcpt_add(a, t.remote[i], false))
            log_error("queue", "%s: out of memory adding alias target", a->e.id);
    address = a->rcpts[idx].address; /* rcpts may have moved */
    if (t.n_local == 0) {
        rcpt_set(&a->rcpts[idx], RCPT_SENT, 250, "2.0.0", "local", "forwarded");
        auth_targets_free(&t);
        return;
    }
    struct auth_user *users = calloc(t.n_local, sizeof *users);
    struct store_target *targets = calloc(t.n_local, sizeof *targets);
    char **headers = calloc(t.n_local, sizeof *headers);
    size_t n = 0;
    bool is_temp = !users || !targets || !headers;
    for (size_t i = 0; !is_temp && i < t.n_local; i++) {
        int ur = auth_user_lookup(auth, t.local[i], &users[n]);
        if (ur <= 0) {
            is_temp = ur < 0;
            continue;
        }
        struct buf h;
        buf_init(&h, 8192);
        buf_printf(&h, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", a->e.sender, users[n].address);
        headers[n] = buf_steal(&h);
        targets[n].user = users[n].address;
        targets[n].home = users[n].home;
        targets[n].quota = users[n].quota;
        targets[n].header = headers[n];
        n++;
    }
    struct rcpt *r = &a->rcpts[idx];
    if (is_temp) {
        rcpt_set(r, RCPT_DEFER, 451, "4.3.0", "local", "temporary local delivery failure");
    } else if (n == 0) {
        rcpt_set(r, RCPT_BOUNCE, 550, "5.1.1", "local", "unknown user: no such user here");
    } else {
        struct store_source src = {.fd = a->fd, .size = a->e.size, .data = NULL, .len = 0};
        char *err = NULL;
        int sr = -1;
        /* store_source has no offset (the store preads from 0) and the body follows the
         * envelope in the queue file: hand it over in memory (bounded) */
        char *body = NULL;
        if (a->e.size < (64u << 20))
            body = malloc(a->e.size ? a->e.size : 1);
        if (body) {
            uint64_t got = 0;
            while (got < a->e.size) {
                ssize_t k = pread(a->fd, body + got, a->e.size - got, (off_t)(a->offset + got));
                if (k < 0 && errno == EINTR)
                    continue;
                if (k <= 0)
                    break;
                got += (uint64_t)k;
            }
            if (got == a->e.size) {
                src.data = body;
                src.len = a->e.size;
                src.fd = -1;
                src.size = a->e.size;
                sr = store_deliver(&src, targets, n, &err);
            } else {
                err = strdup("short queue file");
            }
        } else {
            err = strdup("message too large for local delivery from the queue");
        }
        free(body);
        if (sr == 0) {
            rcpt_set(r, RCPT_SENT, 250, "2.0.0", "local", "delivered to maildir");
        } else {
            bool is_quota = false;
            for (size_t i = 0; i < n; i++)
                is_quota = is_quota || targets[i].status == STORE_ERR_QUOTA;
            char text[400];
            snprintf(text, sizeof text, "%s", err ? err : "local delivery failed");
            if (is_quota)
                rcpt_set(r, RCPT_BOUNCE, 552, "5.2.2", "local", "mailbox full: over quota");
            else
                rcpt_set(r, RCPT_DEFER, 451, "4.3.0", "local", text);
        }
        free(err);
    }
    for (size_t i = 0; i < n; i++) {
        auth_user_free(&users[i]);
        free(headers[i]);
    }
    free(users);
    free(targets);
    free(headers);
    auth_targets_free(&t);
}

/* ---- remote recipients ----------------------------------------------------------------- */

/* Does the message body have 8-bit bytes (for BODY=8BITMIME)? */
static bool message_has_8bit(int fd, uint64_t offset, uint64_t size)
{
    char buf[32768];
    uint64_t done = 0;
    while (done < size) {
        size_t want = size - done < sizeof buf ? (size_t)(size - done) : sizeof buf;
        ssize_t n = pread(fd, buf, want, (off_t)(offset + done));
        if (n <= 0)
            return false;
        for (ssize_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] & 0x80)
                return true;
        done += (uint64_t)n;
    }
    return false;
}

/* ---- mailauth hook: DANE (RFC 7672) --------------------------------------------------- */

/* DANE for one exchanger whose MX RRset was DNSSEC-validated: the TLSA records at
 * _port._tcp.host. 1: usable secure records, o->auth = DANE with tlsa[*n]; 0: no DANE for
 * this host (insecure, none); -1: the lookup failed or was bogus, the host must not be
 * used (§2.2). Secure but unusable records make TLS mandatory without authentication. */
static int deliver_dane(const struct outbound_shared *sh, const struct outbound_addr *addr,
                        struct outbound_client_opts *o, struct outbound_tlsa *tlsa, size_t *n)
{
    *n = 0;
    if (!sh->cfg->outbound_dane || !sh->cfg->dns_trust_anchor[0] || !sh->mailauth_dns ||
        !addr->is_dnssec)
        return 0;
    struct mailauth_dns dns = mailauth_resolver_dns(sh->mailauth_dns);
    char name[300];
    snprintf(name, sizeof name, "_%u._tcp.%s", addr->port, addr->host);
    struct mailauth_dns_answer *a = calloc(1, sizeof *a);
    if (!a)
        return -1;
    enum mailauth_dns_status st = dns.lookup(dns.ctx, name, 52 /* TLSA */, a);
    int rc = 0;
    if (st == MAILAUTH_DNS_TEMPFAIL) {
        rc = -1;
        mailauth_tlsrpt_record(sh->cfg->data_dir, (int64_t)time(NULL), o->tlsrpt_domain,
                               "tlsa", "dnssec-invalid", addr->host, addr->ip);
    } else if (st == MAILAUTH_DNS_OK && a->is_secure && a->n > 0) {
        for (size_t i = 0; i < a->n && *n < OUTBOUND_TLSA_MAX; i++) {
            const unsigned char *d = a->rr[i].data;
            size_t len = a->rr[i].len;
            if (len < 4)
                continue;
            /* §3.1.3: PKIX-TA(0) and PKIX-EE(1) are not for SMTP; selector 0/1; matching
             * 0 (full), 1 (SHA-256, 32 octets), 2 (SHA-512, 64 octets) */
            size_t dl = len - 3;
            if ((d[0] != 2 && d[0] != 3) || d[1] > 1 || d[2] > 2 ||
                (d[2] == 1 && dl != 32) || (d[2] == 2 && dl != 64) || dl > sizeof tlsa->data)
                continue;
            struct outbound_tlsa *t = &tlsa[(*n)++];
            t->usage = d[0];
            t->selector = d[1];
            t->mtype = d[2];
            memcpy(t->data, d + 3, dl);
            t->len = dl;
        }
        if (*n > 0) {
            o->auth = OUTBOUND_AUTH_DANE; /* RFC 8461 §2: DANE takes precedence over MTA-STS */
            o->tlsa = tlsa;
            o->n_tlsa = *n;
        } else {
            o->tls = OUTBOUND_TLS_ENCRYPT; /* §2.2: unusable records still mean "use TLS" */
        }
        rc = 1;
    }
    free(a);
    return rc;
}

/* ---- mailauth hook: MTA-STS (RFC 8461) ------------------------------------------------- */

/* The MTA-STS policy of an MX-routed domain applied to its exchangers: with mode enforce
 * only exchangers the policy names are kept (*n_addr may become 0) and certificates must
 * validate; with testing they are checked and failures only logged. Fills o->auth and
 * the policy name for log lines (policy_name, owned by the caller). */
static void deliver_mta_sts(const struct outbound_shared *sh, const char *id, const char *domain,
                            struct outbound_addr *alist, size_t *n_addr,
                            struct outbound_client_opts *o, char *policy_name, size_t size)
{
    if (!sh->mailauth_dns)
        return;
    struct mailauth_dns dns = mailauth_resolver_dns(sh->mailauth_dns);
    char cache_dir[4200];
    snprintf(cache_dir, sizeof cache_dir, "%s/mta-sts", sh->cfg->data_dir);
    struct mailauth_sts_opts so = {.ca_file = sh->cfg->outbound_ca_file,
                                   .https_port = sh->cfg->outbound_mta_sts_port,
                                   .cache_dir = cache_dir};
    struct mailauth_sts_policy *p = malloc(sizeof *p);
    char err[256];
    if (!p)
        return;
    enum mailauth_sts_status st = mailauth_sts_get(&dns, &so, domain, (int64_t)time(NULL), p, err,
                                                   sizeof err);
    if (st == MAILAUTH_STS_FETCH_FAILED) {
        log_warning("smtp", "%s: MTA-STS policy of %s could not be fetched (%s): delivering "
                            "without it",
                    id, domain, err);
        mailauth_tlsrpt_record(sh->cfg->data_dir, (int64_t)time(NULL), domain, "sts",
                               "sts-policy-fetch-error", "-", "-");
    }
    if (st != MAILAUTH_STS_FOUND || p->mode == MAILAUTH_STS_NONE) {
        free(p);
        return;
    }
    snprintf(policy_name, size, "MTA-STS policy of %s", domain);
    o->auth_policy = policy_name;
    bool is_enforce = p->mode == MAILAUTH_STS_ENFORCE;
    o->auth = is_enforce ? OUTBOUND_AUTH_PKIX : OUTBOUND_AUTH_PKIX_TESTING;
    size_t kept = 0;
    for (size_t k = 0; k < *n_addr; k++) {
        if (mailauth_sts_mx_matches(p, alist[k].host)) {
            alist[kept++] = alist[k];
        } else if (is_enforce) {
            log_info("smtp", "%s: %s: MX host %s is not in the policy: skipped", id, policy_name,
                     alist[k].host);
        } else {
            log_warning("smtp", "%s: %s (mode testing): MX host %s is not in the policy", id,
                        policy_name, alist[k].host);
            alist[kept++] = alist[k];
        }
    }
    *n_addr = kept;
    free(p);
}

/* The route for a domain: transport.<domain>, else relayhost, else MX. *is_relay_r when
 * the relayhost (with its credentials) is used. */
int outbound_route_for(const struct config *cfg, const char *domain, struct outbound_route *r,
                       bool *is_relay_r)
{
    *is_relay_r = false;
    size_t dn = strlen(domain);
    for (size_t i = 0; i < cfg->transports.n; i++) {
        const char *item = cfg->transports.items[i];
        if (strncasecmp(item, domain, dn) == 0 && item[dn] == ' ')
            return outbound_route_parse(item + dn + 1, 25, r);
    }
    if (cfg->relayhost && cfg->relayhost[0]) {
        *is_relay_r = true;
        return outbound_route_parse(cfg->relayhost, 25, r);
    }
    memset(r, 0, sizeof *r);
    if (dn == 0 || dn >= sizeof r->host)
        return -1;
    uint16_t port = (uint16_t)(cfg->outbound_port ? cfg->outbound_port : 25);
    /* RFC 5321 §4.1.3 address literal "[192.0.2.1]" / "[IPv6:2001:db8::1]": no MX lookup */
    if (domain[0] == '[' && domain[dn - 1] == ']') {
        char lit[300];
        const char *ip = strncasecmp(domain + 1, "IPv6:", 5) == 0 ? domain + 6 : domain + 1;
        snprintf(lit, sizeof lit, "[%.*s]", (int)(dn - 1 - (size_t)(ip - domain)), ip);
        return outbound_route_parse(lit, port, r);
    }
    memcpy(r->host, domain, dn + 1);
    r->port = port;
    return 0;
}

static void deliver_remote_domain(struct attempt *a, const char *domain, bool has_8bit)
{
    struct outbound_shared *sh = a->job->shared;
    const struct config *cfg = a->cfg;
    size_t *idx = calloc(a->n_rcpts, sizeof *idx);
    const char **addrs = calloc(a->n_rcpts, sizeof *addrs);
    struct outbound_result *res = calloc(a->n_rcpts, sizeof *res);
    size_t n = 0;
    if (!idx || !addrs || !res)
        goto out;
    for (size_t i = 0; i < a->n_rcpts; i++) {
        struct rcpt *r = &a->rcpts[i];
        if (!r->is_local && r->status == RCPT_PENDING &&
            strcasecmp(addr_domain(r->address), domain) == 0) {
            idx[n] = i;
            addrs[n++] = r->address;
        }
    }
    struct outbound_route route;
    bool is_relay;
    if (outbound_route_for(cfg, domain, &route, &is_relay) < 0) {
        for (size_t k = 0; k < n; k++)
            rcpt_set(&a->rcpts[idx[k]], RCPT_DEFER, 451, "4.3.5", "none",
                     "mail transport unavailable: bad route in configuration");
        goto log;
    }
    struct outbound_addr *alist = NULL;
    size_t n_addr = 0;
    char *err = NULL;
    /* resolved on the loop before this job started, unless it is a domain found only now
     * (a local alias pointing outside): then resolve here */
    const struct outbound_resolved *pre = NULL;
    for (size_t k = 0; k < a->job->n_domains; k++)
        if (a->job->resolved && a->job->resolved[k].is_done &&
            strcasecmp(a->job->domains[k], domain) == 0)
            pre = &a->job->resolved[k];
    enum outbound_dns_status ds;
    if (pre) {
        ds = pre->status;
        if (pre->n) {
            alist = malloc(pre->n * sizeof *alist);
            if (alist)
                memcpy(alist, pre->addrs, pre->n * sizeof *alist);
            n_addr = alist ? pre->n : 0;
        }
        if (ds != OUTBOUND_DNS_OK)
            err = strdup(pre->error);
        else if (!alist)
            ds = OUTBOUND_DNS_TEMPFAIL;
    } else {
        log_debug("smtp", "%s: resolving %s in the delivery thread", a->e.id, domain);
        ds = outbound_dns_route(sh->dns, &route, &alist, &n_addr, &err);
    }
    if (ds != OUTBOUND_DNS_OK) {
        enum rcpt_status st = ds == OUTBOUND_DNS_TEMPFAIL ? RCPT_DEFER : RCPT_BOUNCE;
        const char *dsn = ds == OUTBOUND_DNS_NULLMX     ? "5.1.10"
                          : ds == OUTBOUND_DNS_NOTFOUND ? "5.4.4"
                                                        : "4.4.3";
        for (size_t k = 0; k < n; k++)
            rcpt_set(&a->rcpts[idx[k]], st, st == RCPT_DEFER ? 451 : 550, dsn, "none",
                     err ? err : "lookup failed");
        free(err);
        free(alist);
        goto log;
    }
    free(err);
    char sts_name[300];
    struct outbound_client_opts o = {
        .helo_name = cfg->hostname,
        .tls = strcasecmp(cfg->outbound_tls, "encrypt") == 0 ? OUTBOUND_TLS_ENCRYPT
               : strcasecmp(cfg->outbound_tls, "none") == 0  ? OUTBOUND_TLS_NONE
                                                             : OUTBOUND_TLS_MAY,
        .timeout = cfg->outbound_timeout ? cfg->outbound_timeout : 300,
        .username = is_relay && cfg->relayhost_username[0] ? cfg->relayhost_username : NULL,
        .password = sh->relay_password,
        .ssl_ctx = sh->ssl_ctx,
        .is_stopping = &sh->is_stopping,
        .tlsrpt_domain = domain,
        .data_dir = cfg->data_dir,
    };
    /* mailauth hook: MTA-STS for MX-routed mail (not relayhost, transport or literals) */
    if (!is_relay && !route.is_literal && strcasecmp(route.host, domain) == 0) {
        deliver_mta_sts(sh, a->e.id, domain, alist, &n_addr, &o, sts_name, sizeof sts_name);
        if (n_addr == 0) {
            for (size_t k = 0; k < n; k++)
                rcpt_set(&a->rcpts[idx[k]], RCPT_DEFER, 451, "4.7.5", "none",
                         "no MX host of this domain matches its MTA-STS policy");
            free(alist);
            goto log;
        }
    }
    struct outbound_message m = {
        .sender = a->e.sender,
        .recipients = addrs,
        .n_recipients = n,
        .fd = a->fd,
        .offset = a->offset,
        .size = a->e.size,
        .has_8bit = has_8bit,
        .env = &a->e,     /* RFC 3461 parameters for a DSN-capable next hop */
        .env_index = idx, /* idx[k] < e.n_recipients: the envelope's recipient */
    };
    uint64_t conn_ms = 0, t0 = util_now_ms();
    const struct outbound_addr *used = NULL;
    for (size_t k = 0; k < n_addr; k++) {
        memset(res, 0, n * sizeof *res);
        used = &alist[k];
        t0 = util_now_ms();
        /* mailauth hook: DANE for this exchanger, when its MX RRset was validated */
        struct outbound_client_opts ok = o;
        struct outbound_tlsa tlsa[OUTBOUND_TLSA_MAX];
        size_t n_tlsa;
        if (deliver_dane(sh, used, &ok, tlsa, &n_tlsa) < 0) {
            for (size_t j = 0; j < n; j++) {
                res[j].code = 451;
                snprintf(res[j].dsn, sizeof res[j].dsn, "4.7.5");
                snprintf(res[j].text, sizeof res[j].text,
                         "TLSA lookup for %s failed (DNSSEC): host not used", used->host);
            }
            if (k + 1 < n_addr)
                log_info("smtp", "%s: %s", a->e.id, res[0].text);
            continue;
        }
        if (outbound_smtp_deliver(&ok, used, &m, res, &conn_ms) == OUTBOUND_SESSION_DONE)
            break;
        if (atomic_load(&sh->is_stopping))
            break;
        if (k + 1 < n_addr)
            log_info("smtp", "%s: %s", a->e.id, res[0].text);
    }
    uint64_t total_ms = util_now_ms() - t0;
    char relay[400];
    if (used)
        snprintf(relay, sizeof relay, "%s[%s]:%u", used->host, used->ip, used->port);
    else
        snprintf(relay, sizeof relay, "none");
    for (size_t k = 0; k < n; k++) {
        struct rcpt *r = &a->rcpts[idx[k]];
        r->res = res[k];
        snprintf(r->relay, sizeof r->relay, "%s", relay);
        r->status = res[k].code >= 200 && res[k].code < 300 ? RCPT_SENT
                    : res[k].code >= 500                    ? RCPT_BOUNCE
                                                            : RCPT_DEFER;
        if (r->res.code == 0) {
            rcpt_set(r, RCPT_DEFER, 451, "4.4.1", relay, "no answer for this recipient");
        }
        rcpt_log(a, r, "smtp", conn_ms, total_ms > conn_ms ? total_ms - conn_ms : 0, false);
    }
    free(alist);
    goto out;
log:
    for (size_t k = 0; k < n; k++)
        rcpt_log(a, &a->rcpts[idx[k]], "smtp", 0, 0, false);
out:
    free(idx);
    free(addrs);
    free(res);
}

/* ---- settling the queue file ---------------------------------------------------------- */

static bool env_escape(struct buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool ok = *p > 0x20 && *p < 0x7f && *p != '%' && *p != '=';
        if (!(ok ? buf_append_byte(b, (char)*p) : buf_printf(b, "%%%02X", *p)))
            return false;
    }
    return true;
}

/* Rewrite the message into deferred/ with the deferred recipients, attempts+1 and the
 * next retry time as mtime. Durable before return. 0 or -1. */
static int attempt_defer(struct attempt *a, time_t next_retry)
{
    const char *dd = a->cfg->data_dir;
    char tmp[4200], dest[4200], ddir[4200];
    snprintf(tmp, sizeof tmp, "%s/queue/incoming/%s", dd, a->e.id);
    snprintf(ddir, sizeof ddir, "%s/queue/deferred", dd);
    snprintf(dest, sizeof dest, "%s/%s", ddir, a->e.id);
    struct stat st;
    if (lstat(a->path, &st) < 0 && errno == ENOENT) {
        /* deleted or put on hold (tern queue delete/hold) while we were delivering:
         * the admin's decision wins, don't bring it back */
        log_info("queue", "%s: removed from %s during delivery; not requeued", a->e.id,
                 queue_states[a->job->state]);
        return 0;
    }
    struct buf env;
    buf_init(&env, DELIVER_MAX_ENVELOPE);
    bool ok = buf_printf(&env, "TERNQ1\nid=%s\narrival=%lld\nattempts=%u\nsender=", a->e.id,
                         (long long)a->e.arrival, a->attempts + 1) &&
              env_escape(&env, a->e.sender) && buf_append_byte(&env, '\n');
    /* RFC 3461 parameters stay with the message (dsn helper) */
    ok = ok && queue_envelope_dsn_message(&env, a->e.dsn_ret, a->e.envid, a->e.is_delay_warned);
    for (size_t i = 0; ok && i < a->n_rcpts; i++)
        if (a->rcpts[i].status == RCPT_DEFER)
            ok = buf_append_str(&env, "rcpt=") && env_escape(&env, a->rcpts[i].address) &&
                 buf_append_byte(&env, '\n') &&
                 queue_envelope_dsn_rcpt(&env,
                                         i < a->e.n_recipients && a->e.notify ? a->e.notify[i] : 0,
                                         queue_entry_orcpt(&a->e, i));
    ok = ok && buf_printf(&env, "size=%llu\n\n", (unsigned long long)a->e.size);
    if (!ok) {
        buf_free(&env);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ret = -1;
    if (fd < 0)
        goto out;
    if (util_write_all(fd, env.data, env.len) < 0)
        goto out;
    char chunk[65536];
    uint64_t done = 0;
    while (done < a->e.size) {
        size_t want = a->e.size - done < sizeof chunk ? (size_t)(a->e.size - done) : sizeof chunk;
        ssize_t n = pread(a->fd, chunk, want, (off_t)(a->offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || util_write_all(fd, chunk, (size_t)n) < 0)
            goto out;
        done += (uint64_t)n;
    }
    /* Postfix's convention: a deferred file's mtime is when to try it next */
    struct timespec ts[2] = {{.tv_sec = next_retry}, {.tv_sec = next_retry}};
    if (futimens(fd, ts) < 0 || fsync(fd) < 0)
        goto out;
    if (close(fd) < 0) {
        fd = -1;
        goto out;
    }
    fd = -1;
    if (rename(tmp, dest) < 0 || util_fsync_dir(ddir) < 0)
        goto out;
    if (a->job->state != QUEUE_STATE_DEFERRED) {
        /* a crash before this unlink leaves both copies: the next attempt may then repeat
         * deliveries already made (at-least-once), never lose one */
        if (unlink(a->path) < 0 || util_fsync_dir_of(a->path) < 0)
            log_warning("queue", "%s: cannot remove %s: %s", a->e.id, a->path, strerror(errno));
    }
    ret = 0;
out:
    if (fd >= 0)
        close(fd);
    if (ret < 0) {
        log_error("queue", "%s: cannot rewrite queue file: %s", a->e.id, strerror(errno));
        (void)unlink(tmp);
    }
    buf_free(&env);
    return ret;
}

/* First local domain's postmaster, if it resolves (for double bounces). */
struct first_domain {
    char name[256];
};
static void first_domain_cb(const char *domain, void *arg)
{
    struct first_domain *f = arg;
    if (!f->name[0])
        snprintf(f->name, sizeof f->name, "%s", domain);
}

/* Queue a DSN for the bounced recipients. 0 (or nothing to do) / -1 (retry later). */
static int attempt_bounce(struct attempt *a, bool is_expired)
{
    size_t nb = 0;
    /* RFC 3461 §4.1: no failure DSN for NOTIFY=NEVER (or a NOTIFY without FAILURE) */
    for (size_t i = 0; i < a->n_rcpts; i++)
        nb += a->rcpts[i].status == RCPT_BOUNCE &&
              queue_entry_notify_wants(&a->e, i, QUEUE_NOTIFY_FAILURE);
    if (nb == 0)
        return 0;
    struct outbound_shared *sh = a->job->shared;
    char to[512];
    if (a->e.sender[0]) {
        snprintf(to, sizeof to, "%s", a->e.sender);
    } else {
        /* RFC 5321 §4.5.5: never bounce a bounce to its (null) sender */
        struct first_domain f = {""};
        auth_domain_list(sh->auth, first_domain_cb, &f);
        snprintf(to, sizeof to, "postmaster@%s", f.name);
        struct auth_targets t = {0};
        bool is_to_postmaster = false;
        for (size_t i = 0; i < a->n_rcpts; i++)
            is_to_postmaster = is_to_postmaster || strcasecmp(a->rcpts[i].address, to) == 0;
        if (!f.name[0] || is_to_postmaster || auth_resolve(sh->auth, to, &t) != 1) {
            auth_targets_free(&t);
            log_info("bounce",
                     "%s: undeliverable null-sender message discarded (no postmaster "
                     "to send a double bounce to)",
                     a->e.id);
            return 0;
        }
        auth_targets_free(&t);
    }
    struct bounce_rcpt *br = calloc(nb, sizeof *br);
    char(*diag)[700] = calloc(nb, sizeof *diag);
    if (!br || !diag) {
        free(br);
        free(diag);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < a->n_rcpts; i++) {
        struct rcpt *r = &a->rcpts[i];
        if (r->status != RCPT_BOUNCE || !queue_entry_notify_wants(&a->e, i, QUEUE_NOTIFY_FAILURE))
            continue;
        br[k].orcpt = queue_entry_orcpt(&a->e, i);
        if (is_expired && r->res.code < 500)
            snprintf(diag[k], sizeof diag[k],
                     "delivery temporarily suspended: %s; message "
                     "expired after %u s in the queue",
                     r->res.text, a->cfg->queue_lifetime);
        else
            snprintf(diag[k], sizeof diag[k], "%s", r->res.text);
        br[k].address = r->address;
        br[k].dsn = r->res.dsn[0] ? r->res.dsn : "5.0.0";
        br[k].diagnostic = diag[k];
        br[k].smtp_reply = r->res.reply[0] ? r->res.reply : NULL;
        const char *bracket = strchr(r->relay, '[');
        br[k].remote_mta = NULL;
        if (bracket && strncmp(r->relay, "local", 5) != 0)
            br[k].remote_mta = strndup(r->relay, (size_t)(bracket - r->relay)); /* the host */
        k++;
    }
    char hdr[DELIVER_MAX_HEADERS];
    size_t want = a->e.size < sizeof hdr ? (size_t)a->e.size : sizeof hdr;
    ssize_t got = pread(a->fd, hdr, want, (off_t)a->offset);
    size_t hl = got > 0 ? bounce_header_length(hdr, (size_t)got) : 0;
    /* RFC 3461 §4.3: RET=FULL gets the whole message back when it is small enough */
    bool is_full =
        a->e.dsn_ret == QUEUE_RET_FULL && a->e.size <= BOUNCE_FULL_MAX && got == (ssize_t)a->e.size;
    if (is_full)
        hl = (size_t)got;
    char new_id[UTIL_QUEUE_ID_SIZE], boundary[64];
    util_queue_id(new_id);
    snprintf(boundary, sizeof boundary, "%s.%lld/%s", new_id, (long long)time(NULL), "tern");
    struct bounce_info info = {
        .hostname = a->cfg->hostname,
        .queue_id = a->e.id,
        .arrival = a->e.arrival,
        .now = time(NULL),
        .to = to,
        .headers = hdr,
        .headers_len = hl,
        .boundary = boundary,
        .envid = a->e.envid,
        .is_full_message = is_full,
    };
    struct buf dsn;
    buf_init(&dsn, 0);
    int ret = -1;
    if (bounce_build(&dsn, &info, br, nb)) {
        struct store_source src = {.data = dsn.data, .len = dsn.len, .fd = -1, .size = dsn.len};
        const char *rcpt[1] = {to};
        char *err = NULL;
        ret = queue_enqueue(a->cfg->data_dir, new_id, "", rcpt, 1, NULL, &src, &err);
        if (ret == 0)
            log_info("bounce", "%s: sender non-delivery notification: %s", a->e.id, new_id);
        else
            log_error("bounce", "%s: cannot queue the non-delivery notification: %s", a->e.id,
                      err ? err : "?");
        free(err);
    }
    buf_free(&dsn);
    for (size_t i = 0; i < nb; i++)
        free((char *)br[i].remote_mta);
    free(br);
    free(diag);
    return ret;
}

/* RFC 3461 notices other than failures (dsn helper), to a non-null sender:
 * - success: NOTIFY=SUCCESS recipients delivered here ("delivered") or handed to a next hop
 *   that does not do DSN ("relayed", §5.2.2.1); one that does got NOTIFY passed on;
 * - delay: once per message (warned=1 in the envelope) after queue.delay_warning_time,
 *   for deferred recipients whose NOTIFY allows DELAY. */
static void attempt_dsn_notices(struct attempt *a)
{
    if (!a->e.sender[0] || a->n_rcpts == 0)
        return;
    bool is_due = a->cfg->queue_delay_warning_time > 0 && !a->e.is_delay_warned &&
                  difftime(time(NULL), a->e.arrival) >= (double)a->cfg->queue_delay_warning_time;
    struct bounce_rcpt *br = calloc(a->n_rcpts, sizeof *br);
    char(*mta)[256] = calloc(a->n_rcpts, sizeof *mta);
    char hdr[DELIVER_MAX_HEADERS];
    size_t want = a->e.size < sizeof hdr ? (size_t)a->e.size : sizeof hdr;
    ssize_t got = br && mta ? pread(a->fd, hdr, want, (off_t)a->offset) : -1;
    size_t hl = got > 0 ? bounce_header_length(hdr, (size_t)got) : 0;
    struct bounce_info info = {.hostname = a->cfg->hostname,
                               .queue_id = a->e.id,
                               .arrival = a->e.arrival,
                               .now = time(NULL),
                               .to = a->e.sender,
                               .headers = hdr,
                               .headers_len = hl,
                               .envid = a->e.envid};
    for (int kind = 0; got >= 0 && kind < 2; kind++) {
        size_t n = 0;
        for (size_t i = 0; i < a->n_rcpts; i++) {
            struct rcpt *r = &a->rcpts[i];
            bool is_wanted = kind == 0
                                 ? r->status == RCPT_SENT && !r->res.is_dsn_passed &&
                                       queue_entry_notify_wants(&a->e, i, QUEUE_NOTIFY_SUCCESS)
                                 : is_due && r->status == RCPT_DEFER &&
                                       queue_entry_notify_wants(&a->e, i, QUEUE_NOTIFY_DELAY);
            if (!is_wanted)
                continue;
            const char *bracket = strchr(r->relay, '[');
            size_t ml = bracket ? (size_t)(bracket - r->relay) : 0;
            snprintf(mta[n], sizeof mta[n], "%.*s", (int)(ml < 255 ? ml : 255), r->relay);
            br[n] = (struct bounce_rcpt){.address = r->address,
                                         .dsn = r->res.dsn[0] ? r->res.dsn
                                                : kind == 0   ? "2.0.0"
                                                              : "4.0.0",
                                         .diagnostic = r->res.text,
                                         .remote_mta = mta[n][0] ? mta[n] : NULL,
                                         .smtp_reply = r->res.reply[0] ? r->res.reply : NULL,
                                         .is_delayed = kind == 1,
                                         .orcpt = queue_entry_orcpt(&a->e, i),
                                         .action = kind == 1     ? NULL
                                                   : r->is_local ? "delivered"
                                                                 : "relayed"};
            n++;
        }
        char new_id[32], *err = NULL;
        if (n > 0 && bounce_queue_notice(a->cfg->data_dir, &info, br, n, new_id, &err) == 0)
            log_info("bounce", "%s: sender %s notification: %s", a->e.id,
                     kind == 0 ? "delivery status" : "delay", new_id);
        else if (n > 0)
            log_error("bounce", "%s: cannot queue the %s notification: %s", a->e.id,
                      kind == 0 ? "delivery status" : "delay", err ? err : "?");
        if (kind == 1 && is_due && (n == 0 || !err))
            a->e.is_delay_warned = true; /* sent (or nobody wanted it): never again */
        free(err);
    }
    free(br);
    free(mta);
}

void outbound_deliver(struct outbound_job *job)
{
    struct attempt a = {.job = job, .cfg = job->shared->cfg, .fd = -1};
    a.t_start_ms = util_now_ms();
    a.t_start = time(NULL);
    char *err = NULL;
    int lr = attempt_load(&a, &err);
    if (lr != 0) {
        if (lr < 0)
            log_warning("queue", "%s: skipping unreadable queue file %s: %s", job->id, a.path,
                        err ? err : "?");
        free(err);
        if (a.fd >= 0)
            close(a.fd);
        return;
    }
    log_info("qmgr", "%s: from=<%s>, size=%llu, nrcpt=%zu (queue %s)", a.e.id, a.e.sender,
             (unsigned long long)a.e.size, a.e.n_recipients, queue_states[job->state]);
    struct auth_service *auth = job->shared->auth;
    for (size_t i = 0; i < a.e.n_recipients; i++) {
        const char *dom = addr_domain(a.e.recipients[i]);
        int is_local = auth ? auth_domain_is_local(auth, dom) : 0;
        if (!rcpt_add(&a, a.e.recipients[i], is_local == 1))
            goto out;
        if (is_local < 0)
            rcpt_set(&a.rcpts[a.n_rcpts - 1], RCPT_DEFER, 451, "4.3.0", "none",
                     "temporary directory lookup failure");
    }
    size_t n_env = a.n_rcpts;
    for (size_t i = 0; i < n_env; i++) {
        if (a.rcpts[i].is_local && a.rcpts[i].status == RCPT_PENDING) {
            deliver_local(&a, i);
            rcpt_log(&a, &a.rcpts[i], "local", 0, 0, false);
        }
    }
    bool has_8bit = message_has_8bit(a.fd, a.offset, a.e.size);
    for (size_t i = 0; i < a.n_rcpts; i++) {
        struct rcpt *r = &a.rcpts[i];
        if (r->is_local || r->status != RCPT_PENDING)
            continue;
        char domain[256];
        snprintf(domain, sizeof domain, "%s", addr_domain(r->address));
        deliver_remote_domain(&a, domain, has_8bit);
    }
    /* RFC 5321 §4.5.4.1: give up after queue.lifetime */
    bool is_expired = difftime(time(NULL), a.e.arrival) >= (double)a.cfg->queue_lifetime;
    size_t n_defer = 0;
    for (size_t i = 0; i < a.n_rcpts; i++) {
        if (a.rcpts[i].status == RCPT_DEFER && is_expired) {
            a.rcpts[i].status = RCPT_BOUNCE;
            if (a.rcpts[i].res.dsn[0] == '4')
                a.rcpts[i].res.dsn[0] = '5';
            rcpt_log(&a, &a.rcpts[i], a.rcpts[i].is_local ? "local" : "smtp", 0, 0, true);
        }
        n_defer += a.rcpts[i].status == RCPT_DEFER;
    }
    if (atomic_load(&job->shared->is_stopping) && n_defer) {
        /* interrupted by shutdown: leave the file as it is, to be retried at once */
        size_t n_done = 0;
        for (size_t i = 0; i < a.n_rcpts; i++)
            n_done += a.rcpts[i].status == RCPT_SENT || a.rcpts[i].status == RCPT_BOUNCE;
        if (n_done == 0)
            goto out;
    }
    for (size_t i = 0; i < a.n_rcpts; i++)
        job->may_have_queued = job->may_have_queued || a.rcpts[i].status != RCPT_SENT;
    if (attempt_bounce(&a, is_expired) < 0) {
        /* cannot queue the DSN: keep the bounced recipients to try again later */
        for (size_t i = 0; i < a.n_rcpts; i++)
            if (a.rcpts[i].status == RCPT_BOUNCE) {
                a.rcpts[i].status = RCPT_DEFER;
                n_defer++;
            }
    }
    /* RFC 3461: "relayed" notices for NOTIFY=SUCCESS, the one "delayed" warning */
    attempt_dsn_notices(&a);
    if (n_defer) {
        unsigned delay =
            outbound_retry_delay(a.attempts + 1, a.cfg->queue_retry_min, a.cfg->queue_retry_max);
        attempt_defer(&a, time(NULL) + (time_t)delay);
    } else {
        /* no directory fsync for a removal (as Postfix): if a crash undoes the unlink the
         * message is delivered once more - a duplicate, never a loss */
        if (unlink(a.path) < 0)
            log_error("queue", "%s: cannot remove %s: %s", a.e.id, a.path, strerror(errno));
        else
            log_info("qmgr", "%s: removed", a.e.id);
    }
out:
    for (size_t i = 0; i < a.n_rcpts; i++)
        free(a.rcpts[i].address);
    free(a.rcpts);
    queue_entry_free(&a.e);
    if (a.fd >= 0)
        close(a.fd);
}
