/*
 * resolver.c - the DNS interface of mailauth over libunbound, for workpool threads and
 * the CLI: each lookup is started with ub_resolve_async on the module's own context and
 * waited for with poll(ub_fd) + ub_process, at most timeout_ms, then cancelled
 * (TEMPFAIL). The context is separate from the outbound one (queue/dns.c), whose
 * callbacks run on the event loop: callbacks here only fill a query record and wake its
 * waiter, whichever thread happens to run ub_process.
 *
 * Why not ub_resolve: it has no timeout of its own (an unreachable forwarder holds a
 * thread for minutes), and RFC 7208 §4.6.4 wants a bounded evaluation.
 */
#include "mailauth/mailauth-private.h"

#include "core/log.h"
#include "core/util.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>

struct mailauth_resolver {
    struct ub_ctx *ub;
    unsigned timeout_ms;
    pthread_mutex_t lock; /* guards the is_done/err/res of every query */
};

struct query {
    struct mailauth_resolver *r;
    bool is_done;
    int err;
    struct ub_result *res;
};

int mailauth_unbound_setup(struct ub_ctx *ub, const char *resolver, const char *trust_anchor,
                           char **error_r)
{
    /* async queries are answered by a libunbound thread (not a forked process) */
    int rc = ub_ctx_async(ub, 1);
    if (rc == 0 && resolver && resolver[0]) {
        rc = ub_ctx_set_fwd(ub, resolver);
        /* a test resolver on loopback speaks plain UDP/TCP; keep the queries simple */
        if (rc == 0)
            (void)ub_ctx_set_option(ub, "do-ip6:", strchr(resolver, ':') ? "yes" : "no");
        /* a configured (lab, test) resolver answers RFC 6761 names and the reverse zones
         * unbound would otherwise answer itself (private and documentation ranges, which
         * SPF's ptr mechanism and %{p} look up) */
        static const char *const zones[] = {"test. transparent", "d.0.1.0.0.2.ip6.arpa. nodefault",
                                            "2.0.192.in-addr.arpa. nodefault",
                                            "100.51.198.in-addr.arpa. nodefault",
                                            "113.0.203.in-addr.arpa. nodefault"};
        for (size_t i = 0; rc == 0 && i < sizeof zones / sizeof zones[0]; i++)
            (void)ub_ctx_set_option(ub, "local-zone:", zones[i]);
        if (rc == 0)
            (void)ub_ctx_set_option(ub, "unblock-lan-zones:", "yes");
        if (rc == 0)
            (void)ub_ctx_set_option(ub, "insecure-lan-zones:", "yes");
    } else if (rc == 0) {
        /* no usable /etc/resolv.conf (a bare container) must not stop local mail:
         * libunbound then resolves from the root servers itself */
        if (ub_ctx_resolvconf(ub, NULL) != 0)
            log_warning("smtp", "cannot read /etc/resolv.conf; resolving without forwarders");
        (void)ub_ctx_hosts(ub, NULL);
    }
    if (rc != 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "dns.resolver '%s': %s", resolver ? resolver : "",
                 ub_strerror(rc));
        *error_r = strdup(msg);
        return -1;
    }
    /* DNSSEC: answers are validated from this anchor (DS or DNSKEY records, zone-file
     * format); is_secure in answers means exactly that */
    if (trust_anchor && trust_anchor[0] && ub_ctx_add_ta_file(ub, trust_anchor) != 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "dns.trust_anchor '%s': cannot be read", trust_anchor);
        *error_r = strdup(msg);
        return -1;
    }
    return 0;
}

struct mailauth_resolver *mailauth_resolver_create(const char *resolver, unsigned timeout_ms,
                                                   const char *trust_anchor, char **error_r)
{
    struct mailauth_resolver *r = calloc(1, sizeof *r);
    if (!r || !(r->ub = ub_ctx_create())) {
        free(r);
        *error_r = strdup("cannot create the DNS resolver");
        return NULL;
    }
    r->timeout_ms = timeout_ms ? timeout_ms : 5000;
    pthread_mutex_init(&r->lock, NULL);
    if (mailauth_unbound_setup(r->ub, resolver, trust_anchor, error_r) < 0) {
        mailauth_resolver_free(r);
        return NULL;
    }
    return r;
}

void mailauth_resolver_free(struct mailauth_resolver *r)
{
    if (!r)
        return;
    ub_ctx_delete(r->ub);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static void query_cb(void *arg, int err, struct ub_result *res)
{
    struct query *q = arg;
    pthread_mutex_lock(&q->r->lock);
    q->err = err;
    q->res = res;
    q->is_done = true;
    pthread_mutex_unlock(&q->r->lock);
}

/* Decode a TXT RDATA (character-strings) into one joined string. */
static bool txt_join(const unsigned char *d, size_t len, unsigned char *out, size_t *out_len)
{
    size_t pos = 0, o = 0;
    while (pos < len) {
        size_t l = d[pos++];
        if (pos + l > len || o + l > MAILAUTH_DNS_RR_MAX - 1)
            return false;
        memcpy(out + o, d + pos, l);
        o += l;
        pos += l;
    }
    out[o] = '\0';
    *out_len = o;
    return true;
}

/* Uncompressed wire name (what libunbound hands out) to dotted text. */
static bool name_text(const unsigned char *d, size_t len, unsigned char *out, size_t *out_len)
{
    size_t pos = 0, o = 0;
    while (pos < len && d[pos] != 0) {
        size_t l = d[pos++];
        if (l > 63 || pos + l > len || o + l + 2 > MAILAUTH_DNS_RR_MAX)
            return false;
        if (o)
            out[o++] = '.';
        memcpy(out + o, d + pos, l);
        o += l;
        pos += l;
    }
    out[o] = '\0';
    *out_len = o;
    return true;
}

static void answer_fill(const struct ub_result *res, int type, struct mailauth_dns_answer *a)
{
    for (int i = 0; res->havedata && res->data[i] && a->n < MAILAUTH_DNS_RRS_MAX; i++) {
        const unsigned char *d = (const unsigned char *)res->data[i];
        size_t len = (size_t)res->len[i];
        bool ok = false;
        size_t out_len = 0;
        unsigned char *out = a->rr[a->n].data;
        if (type == MAILAUTH_DNS_TXT) {
            ok = txt_join(d, len, out, &out_len);
        } else if (type == MAILAUTH_DNS_A || type == MAILAUTH_DNS_AAAA) {
            ok = len == (type == MAILAUTH_DNS_A ? 4u : 16u);
            if (ok) {
                memcpy(out, d, len);
                out_len = len;
            }
        } else if (type == MAILAUTH_DNS_MX) {
            ok = len > 2 && name_text(d + 2, len - 2, out, &out_len);
        } else if (type == MAILAUTH_DNS_PTR) {
            ok = name_text(d, len, out, &out_len);
        } else {
            ok = len <= MAILAUTH_DNS_RR_MAX;
            if (ok) {
                memcpy(out, d, len);
                out_len = len;
            }
        }
        if (ok)
            a->rr[a->n++].len = out_len;
    }
    a->is_secure = res->secure != 0;
}

static enum mailauth_dns_status resolver_lookup(void *ctx, const char *name, int type,
                                                struct mailauth_dns_answer *answer)
{
    struct mailauth_resolver *r = ctx;
    answer->n = 0;
    answer->is_secure = false;
    struct query *q = calloc(1, sizeof *q);
    if (!q)
        return MAILAUTH_DNS_TEMPFAIL;
    q->r = r;
    int async_id = 0;
    if (ub_resolve_async(r->ub, name, type, 1 /* IN */, q, query_cb, &async_id) != 0) {
        free(q);
        return MAILAUTH_DNS_TEMPFAIL;
    }
    uint64_t deadline = util_now_ms() + r->timeout_ms;
    int fd = ub_fd(r->ub);
    bool is_cancelled = false;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        bool done = q->is_done;
        pthread_mutex_unlock(&r->lock);
        if (done)
            break;
        uint64_t now = util_now_ms();
        if (now >= deadline && !is_cancelled) {
            /* ub_cancel succeeds while the answer has not been delivered: then the
             * callback never runs and q is ours to free */
            if (ub_cancel(r->ub, async_id) == 0) {
                free(q);
                return MAILAUTH_DNS_TEMPFAIL;
            }
            is_cancelled = true; /* being delivered: wait for it below */
            deadline = now + 1000;
        } else if (now >= deadline) {
            /* the answer should have been processed by now; leak q rather than risk
             * freeing memory a late callback writes (bounded: never seen in tests) */
            return MAILAUTH_DNS_TEMPFAIL;
        }
        /* another thread may be running ub_process for us: wake at least every 20 ms */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int wait = (int)(deadline - now < 20 ? deadline - now : 20);
        if (poll(&pfd, 1, wait) > 0)
            (void)ub_process(r->ub);
    }
    enum mailauth_dns_status st;
    if (q->err != 0 || !q->res || q->res->rcode == 2 /* SERVFAIL */ || q->res->bogus) {
        st = MAILAUTH_DNS_TEMPFAIL;
    } else if (q->res->nxdomain) {
        st = MAILAUTH_DNS_NXDOMAIN;
    } else if (q->res->rcode != 0) {
        st = MAILAUTH_DNS_TEMPFAIL; /* REFUSED, NOTIMP... */
    } else {
        answer_fill(q->res, type, answer);
        st = MAILAUTH_DNS_OK;
    }
    if (q->res)
        ub_resolve_free(q->res);
    free(q);
    return st;
}

struct mailauth_dns mailauth_resolver_dns(struct mailauth_resolver *r)
{
    return (struct mailauth_dns){.lookup = resolver_lookup, .ctx = r};
}
