/*
 * dns.c - where mail for a domain goes (RFC 5321 §5.1): MX records in preference order,
 * the implicit MX (the domain's own A/AAAA) when there is none, RFC 7505 null MX, and the
 * addresses of each exchanger. Uses libunbound, pointed at dns.resolver (IP[@port], so
 * tests can run a DNS server on loopback) or at /etc/resolv.conf.
 *
 * Lookups are synchronous (ub_resolve) and run in the delivery threads, which block on
 * the SMTP dialogue anyway; a libunbound context is thread-safe once configured.
 */
/* Log and reply texts are deliberately cut to their fixed buffers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "mailauth/mailauth.h"
#include "queue/outbound.h"

#include "core/log.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include <unbound.h>

#define DNS_MAX_MX    16
#define DNS_MAX_ADDRS 32

struct dns_lookup;
struct dns_single;

struct outbound_dns {
    struct ub_ctx *ub;
    struct event *ev;           /* ub_fd readable: ub_process on the loop */
    struct dns_lookup *pending; /* async lookups in progress (freed on shutdown) */
    struct dns_single *queries; /* single queries in progress (answered TEMPFAIL on shutdown) */
};

/* One outbound_dns_query_async() in flight. */
struct dns_single {
    struct outbound_dns *d;
    int rrtype;
    outbound_dns_query_cb *cb;
    void *arg;
    struct dns_single *next, *prev;
};

static void dns_single_unlink(struct dns_single *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        q->d->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
}

struct outbound_dns *outbound_dns_create(const char *resolver, const char *trust_anchor,
                                         char **error_r)
{
    struct outbound_dns *d = calloc(1, sizeof *d);
    if (!d || !(d->ub = ub_ctx_create())) {
        free(d);
        *error_r = strdup("cannot create the DNS resolver");
        return NULL;
    }
    if (mailauth_unbound_setup(d->ub, resolver, trust_anchor, error_r) < 0) {
        ub_ctx_delete(d->ub);
        free(d);
        return NULL;
    }
    return d;
}

static struct dns_lookup *dns_lookup_next(struct dns_lookup *l);
static void dns_lookup_free(struct dns_lookup *l);

void outbound_dns_free(struct outbound_dns *d)
{
    if (!d)
        return;
    if (d->ev)
        event_free(d->ev);
    ub_ctx_delete(d->ub); /* outstanding async callbacks are never called after this */
    /* a session waiting for a query learns it will not come (it may then free itself) */
    while (d->queries) {
        struct dns_single *q = d->queries;
        dns_single_unlink(q);
        struct outbound_dns_answer a = {.status = OUTBOUND_DNS_TEMPFAIL};
        q->cb(q->arg, &a);
        free(q);
    }
    while (d->pending) {
        struct dns_lookup *l = d->pending;
        d->pending = dns_lookup_next(l);
        dns_lookup_free(l);
    }
    free(d);
}

int outbound_dns_parse_mx(const unsigned char *rdata, size_t len, uint16_t *pref_r, char *name_r,
                          size_t size)
{
    if (len < 3 || size < 2)
        return -1;
    *pref_r = (uint16_t)(rdata[0] << 8 | rdata[1]);
    size_t pos = 2, out = 0;
    if (rdata[pos] == 0) {
        if (pos + 1 != len)
            return -1;
        snprintf(name_r, size, ".");
        return 0;
    }
    while (pos < len && rdata[pos] != 0) {
        size_t l = rdata[pos];
        if (l > 63 || pos + 1 + l > len || out + l + 1 >= size)
            return -1; /* compression pointers cannot appear: libunbound decompresses */
        for (size_t i = 0; i < l; i++) {
            unsigned char ch = rdata[pos + 1 + i];
            if (ch <= 0x20 || ch >= 0x7f || ch == '.')
                return -1;
            name_r[out++] = (char)ch;
        }
        name_r[out++] = '.';
        pos += 1 + l;
    }
    if (pos + 1 != len)
        return -1;
    name_r[out - 1] = '\0'; /* drop the trailing dot */
    return 0;
}

/* A and AAAA of host appended to addrs. Returns OK if any was found. */
static enum outbound_dns_status dns_addresses(struct outbound_dns *d, const char *host,
                                              uint16_t port, struct outbound_addr *addrs, size_t *n,
                                              size_t max, char **error_r)
{
    /* an address literal needs no lookup */
    struct outbound_addr a = {0};
    struct sockaddr_in *s4 = (struct sockaddr_in *)&a.sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a.sa;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1 ||
        inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        if (*n >= max)
            return OUTBOUND_DNS_OK;
        if (strchr(host, ':')) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons(port);
            a.sa_len = sizeof *s6;
        } else {
            s4->sin_family = AF_INET;
            s4->sin_port = htons(port);
            a.sa_len = sizeof *s4;
        }
        snprintf(a.host, sizeof a.host, "%s", host);
        snprintf(a.ip, sizeof a.ip, "%s", host);
        a.port = port;
        addrs[(*n)++] = a;
        return OUTBOUND_DNS_OK;
    }
    bool found = false, tempfail = false;
    static const int types[2] = {1 /* A */, 28 /* AAAA */};
    for (int t = 0; t < 2; t++) {
        struct ub_result *res = NULL;
        int r = ub_resolve(d->ub, host, types[t], 1 /* IN */, &res);
        if (r != 0 || !res) {
            tempfail = true;
            if (error_r && !*error_r) {
                char msg[300];
                snprintf(msg, sizeof msg, "Host or domain name lookup failed: %s", ub_strerror(r));
                *error_r = strdup(msg);
            }
            continue;
        }
        if (res->rcode == 2 /* SERVFAIL */)
            tempfail = true;
        for (int i = 0; res->havedata && res->data[i] && *n < max; i++) {
            memset(&a, 0, sizeof a);
            if (types[t] == 1 && res->len[i] == 4) {
                s4->sin_family = AF_INET;
                s4->sin_port = htons(port);
                memcpy(&s4->sin_addr, res->data[i], 4);
                a.sa_len = sizeof *s4;
                inet_ntop(AF_INET, &s4->sin_addr, a.ip, sizeof a.ip);
            } else if (types[t] == 28 && res->len[i] == 16) {
                s6->sin6_family = AF_INET6;
                s6->sin6_port = htons(port);
                memcpy(&s6->sin6_addr, res->data[i], 16);
                a.sa_len = sizeof *s6;
                inet_ntop(AF_INET6, &s6->sin6_addr, a.ip, sizeof a.ip);
            } else {
                continue;
            }
            snprintf(a.host, sizeof a.host, "%s", host);
            a.port = port;
            addrs[(*n)++] = a;
            found = true;
        }
        ub_resolve_free(res);
    }
    if (found)
        return OUTBOUND_DNS_OK;
    return tempfail ? OUTBOUND_DNS_TEMPFAIL : OUTBOUND_DNS_NOTFOUND;
}

struct mx {
    uint16_t pref;
    uint32_t shuffle;
    char name[256];
};

static int mx_cmp(const void *a, const void *b)
{
    const struct mx *x = a, *y = b;
    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    return x->shuffle < y->shuffle ? -1 : x->shuffle > y->shuffle;
}

static void dns_error(char **error_r, const char *fmt, const char *arg)
{
    if (!error_r || *error_r)
        return;
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    *error_r = strdup(msg);
}

/* The addresses of a route whose MX answer (or its secure absence) was validated may use
 * DANE: the same rule on the blocking path (a domain first met in a delivery thread) as
 * on the loop's. */
static void dns_mark_secure(struct outbound_addr *addrs, size_t n, bool is_mx_secure)
{
    for (size_t i = 0; i < n; i++)
        addrs[i].is_dnssec = is_mx_secure;
}

enum outbound_dns_status outbound_dns_route(struct outbound_dns *d,
                                            const struct outbound_route *route,
                                            struct outbound_addr **addrs_r, size_t *n_r,
                                            char **error_r)
{
    *addrs_r = calloc(DNS_MAX_ADDRS, sizeof **addrs_r);
    *n_r = 0;
    if (!*addrs_r) {
        dns_error(error_r, "%s", "out of memory");
        return OUTBOUND_DNS_TEMPFAIL;
    }
    if (route->is_literal) {
        enum outbound_dns_status s =
            dns_addresses(d, route->host, route->port, *addrs_r, n_r, DNS_MAX_ADDRS, error_r);
        if (s == OUTBOUND_DNS_NOTFOUND)
            dns_error(error_r, "Host or domain name not found. Name service error for name=%s",
                      route->host);
        return s;
    }
    struct ub_result *res = NULL;
    int r = ub_resolve(d->ub, route->host, 15 /* MX */, 1, &res);
    if (r != 0 || !res) {
        char msg[300];
        snprintf(msg, sizeof msg, "Host or domain name lookup failed: %s", ub_strerror(r));
        dns_error(error_r, "%s", msg);
        return OUTBOUND_DNS_TEMPFAIL;
    }
    if (res->rcode == 2) {
        ub_resolve_free(res);
        dns_error(error_r, "Host or domain name lookup failed (SERVFAIL) for name=%s", route->host);
        return OUTBOUND_DNS_TEMPFAIL;
    }
    if (res->nxdomain) {
        ub_resolve_free(res);
        dns_error(error_r, "Host or domain name not found. Name service error for name=%s",
                  route->host);
        return OUTBOUND_DNS_NOTFOUND;
    }
    struct mx mxs[DNS_MAX_MX];
    size_t n_mx = 0;
    bool is_null = false;
    bool is_mx_secure = res->secure != 0; /* RFC 7672 §2.2: DANE needs a validated MX RRset */
    for (int i = 0; res->havedata && res->data[i] && n_mx < DNS_MAX_MX; i++) {
        struct mx m;
        if (outbound_dns_parse_mx((const unsigned char *)res->data[i], (size_t)res->len[i], &m.pref,
                                  m.name, sizeof m.name) < 0)
            continue;
        if (strcmp(m.name, ".") == 0) {
            is_null = true; /* RFC 7505 §3: the domain accepts no mail */
            continue;
        }
        util_random_bytes(&m.shuffle, sizeof m.shuffle);
        mxs[n_mx++] = m;
    }
    ub_resolve_free(res);
    if (is_null) {
        dns_error(error_r, "Domain %s does not accept mail (nullMX)", route->host);
        return OUTBOUND_DNS_NULLMX;
    }
    if (n_mx == 0) {
        /* RFC 5321 §5.1: no MX, so the domain itself is the implicit MX */
        enum outbound_dns_status s =
            dns_addresses(d, route->host, route->port, *addrs_r, n_r, DNS_MAX_ADDRS, error_r);
        if (s == OUTBOUND_DNS_NOTFOUND)
            dns_error(error_r, "Host or domain name not found. Name service error for name=%s",
                      route->host);
        dns_mark_secure(*addrs_r, *n_r, is_mx_secure);
        return s;
    }
    qsort(mxs, n_mx, sizeof mxs[0], mx_cmp);
    bool tempfail = false;
    for (size_t i = 0; i < n_mx && *n_r < DNS_MAX_ADDRS; i++) {
        char *err = NULL;
        if (dns_addresses(d, mxs[i].name, route->port, *addrs_r, n_r, DNS_MAX_ADDRS, &err) ==
            OUTBOUND_DNS_TEMPFAIL)
            tempfail = true;
        free(err);
    }
    if (*n_r > 0) {
        dns_mark_secure(*addrs_r, *n_r, is_mx_secure);
        return OUTBOUND_DNS_OK;
    }
    dns_error(error_r, "Host or domain name lookup failed for the MX hosts of %s", route->host);
    return tempfail ? OUTBOUND_DNS_TEMPFAIL : OUTBOUND_DNS_NOTFOUND;
}

/* ---- asynchronous routing on the event loop (ub_resolve_async + ub_fd) ---------------- */

/* Results of one ub_result as addresses for host (A or AAAA records only). */
static size_t dns_result_addrs(const struct ub_result *res, int type, const char *host,
                               uint16_t port, struct outbound_addr *out, size_t max)
{
    size_t n = 0;
    for (int i = 0; res->havedata && res->data[i] && n < max; i++) {
        struct outbound_addr a = {0};
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a.sa;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a.sa;
        if (type == 1 && res->len[i] == 4) {
            s4->sin_family = AF_INET;
            s4->sin_port = htons(port);
            memcpy(&s4->sin_addr, res->data[i], 4);
            a.sa_len = sizeof *s4;
            inet_ntop(AF_INET, &s4->sin_addr, a.ip, sizeof a.ip);
        } else if (type == 28 && res->len[i] == 16) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons(port);
            memcpy(&s6->sin6_addr, res->data[i], 16);
            a.sa_len = sizeof *s6;
            inet_ntop(AF_INET6, &s6->sin6_addr, a.ip, sizeof a.ip);
        } else {
            continue;
        }
        snprintf(a.host, sizeof a.host, "%s", host);
        a.port = port;
        out[n++] = a;
    }
    return n;
}

#define DNS_PER_HOST 8 /* addresses kept per host and family */

struct dns_query {
    struct dns_lookup *l;
    int host, type;
};

struct dns_lookup {
    struct outbound_dns *d;
    struct dns_lookup *next;
    struct outbound_route route;
    outbound_dns_cb *cb;
    void *arg;
    int pending;
    bool is_tempfail;
    bool is_mx_secure; /* the MX answer (or its secure absence) was DNSSEC-validated */
    struct mx mxs[DNS_MAX_MX];
    size_t n_mx;
    struct dns_query q[DNS_MAX_MX][2];
    struct outbound_addr found[DNS_MAX_MX][2][DNS_PER_HOST];
    size_t n_found[DNS_MAX_MX][2];
};

static struct dns_lookup *dns_lookup_next(struct dns_lookup *l)
{
    return l->next;
}

static void dns_lookup_free(struct dns_lookup *l)
{
    free(l);
}

/* Deliver the outcome to the caller and forget the lookup. */
static void dns_lookup_finish(struct dns_lookup *l, enum outbound_dns_status st, const char *err)
{
    struct outbound_dns *d = l->d;
    for (struct dns_lookup **pp = &d->pending; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    struct outbound_addr *addrs = NULL;
    size_t n = 0;
    if (st == OUTBOUND_DNS_OK) {
        addrs = calloc(DNS_MAX_ADDRS, sizeof *addrs);
        /* MX order; within a host IPv4 first, then IPv6 */
        for (size_t h = 0; addrs && h < l->n_mx; h++)
            for (int t = 0; t < 2; t++)
                for (size_t k = 0; k < l->n_found[h][t] && n < DNS_MAX_ADDRS; k++) {
                    addrs[n] = l->found[h][t][k];
                    addrs[n++].is_dnssec = l->is_mx_secure && !l->route.is_literal;
                }
        if (n == 0) {
            free(addrs);
            addrs = NULL;
            st = l->is_tempfail ? OUTBOUND_DNS_TEMPFAIL : OUTBOUND_DNS_NOTFOUND;
        }
    }
    char msg[512];
    if (st != OUTBOUND_DNS_OK && !err) {
        if (st == OUTBOUND_DNS_TEMPFAIL)
            snprintf(msg, sizeof msg, "Host or domain name lookup failed for name=%s",
                     l->route.host);
        else
            snprintf(msg, sizeof msg,
                     "Host or domain name not found. Name service error for name=%s",
                     l->route.host);
        err = msg;
    }
    l->cb(l->arg, st, addrs, n, st == OUTBOUND_DNS_OK ? NULL : err);
    free(l);
}

static void dns_addr_cb(void *arg, int err, struct ub_result *res)
{
    struct dns_query *q = arg;
    struct dns_lookup *l = q->l;
    int t = q->type == 1 ? 0 : 1;
    if (err != 0 || !res || res->rcode == 2)
        l->is_tempfail = true;
    else
        l->n_found[q->host][t] = dns_result_addrs(res, q->type, l->mxs[q->host].name, l->route.port,
                                                  l->found[q->host][t], DNS_PER_HOST);
    if (res)
        ub_resolve_free(res);
    if (--l->pending == 0)
        dns_lookup_finish(l, OUTBOUND_DNS_OK, NULL);
}

/* Second stage: A and AAAA of every exchanger (or of the domain: implicit MX). */
static void dns_lookup_addresses(struct dns_lookup *l)
{
    l->pending = 1; /* held while queries are started, so none can finish the lookup */
    for (size_t h = 0; h < l->n_mx; h++) {
        struct outbound_addr lit[1];
        size_t nl = 0;
        char *err = NULL;
        /* an address literal needs no query */
        struct in6_addr tmp;
        if (inet_pton(AF_INET, l->mxs[h].name, &tmp) == 1 ||
            inet_pton(AF_INET6, l->mxs[h].name, &tmp) == 1) {
            dns_addresses(l->d, l->mxs[h].name, l->route.port, lit, &nl, 1, &err);
            free(err);
            if (nl) {
                l->found[h][0][0] = lit[0];
                l->n_found[h][0] = 1;
            }
            continue;
        }
        static const int types[2] = {1, 28};
        for (int t = 0; t < 2; t++) {
            l->q[h][t] = (struct dns_query){.l = l, .host = (int)h, .type = types[t]};
            l->pending++;
            if (ub_resolve_async(l->d->ub, l->mxs[h].name, types[t], 1, &l->q[h][t], dns_addr_cb,
                                 NULL) != 0) {
                l->pending--;
                l->is_tempfail = true;
            }
        }
    }
    if (--l->pending == 0)
        dns_lookup_finish(l, OUTBOUND_DNS_OK, NULL);
}

static void dns_mx_cb(void *arg, int err, struct ub_result *res)
{
    struct dns_lookup *l = arg;
    char msg[512];
    if (err != 0 || !res || res->rcode == 2) {
        snprintf(msg, sizeof msg, "Host or domain name lookup failed (%s) for name=%s",
                 err ? ub_strerror(err) : "SERVFAIL", l->route.host);
        if (res)
            ub_resolve_free(res);
        dns_lookup_finish(l, OUTBOUND_DNS_TEMPFAIL, msg);
        return;
    }
    if (res->nxdomain) {
        ub_resolve_free(res);
        dns_lookup_finish(l, OUTBOUND_DNS_NOTFOUND, NULL);
        return;
    }
    bool is_null = false;
    l->is_mx_secure = res->secure != 0; /* RFC 7672 §2.2: DANE needs a validated MX RRset */
    for (int i = 0; res->havedata && res->data[i] && l->n_mx < DNS_MAX_MX; i++) {
        struct mx m;
        if (outbound_dns_parse_mx((const unsigned char *)res->data[i], (size_t)res->len[i], &m.pref,
                                  m.name, sizeof m.name) < 0)
            continue;
        if (strcmp(m.name, ".") == 0) {
            is_null = true; /* RFC 7505 §3 */
            continue;
        }
        util_random_bytes(&m.shuffle, sizeof m.shuffle);
        l->mxs[l->n_mx++] = m;
    }
    ub_resolve_free(res);
    if (is_null) {
        snprintf(msg, sizeof msg, "Domain %s does not accept mail (nullMX)", l->route.host);
        dns_lookup_finish(l, OUTBOUND_DNS_NULLMX, msg);
        return;
    }
    if (l->n_mx == 0) {
        /* RFC 5321 §5.1: the implicit MX */
        snprintf(l->mxs[0].name, sizeof l->mxs[0].name, "%s", l->route.host);
        l->n_mx = 1;
    } else {
        qsort(l->mxs, l->n_mx, sizeof l->mxs[0], mx_cmp);
    }
    dns_lookup_addresses(l);
}

static void dns_on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct outbound_dns *d = arg;
    (void)ub_process(d->ub); /* runs the callbacks of answered queries */
}

int outbound_dns_attach(struct outbound_dns *d, struct event_base *base)
{
    int fd = ub_fd(d->ub);
    if (fd < 0)
        return -1;
    d->ev = event_new(base, fd, EV_READ | EV_PERSIST, dns_on_readable, d);
    if (!d->ev || event_add(d->ev, NULL) < 0)
        return -1;
    return 0;
}

static void dns_single_cb(void *arg, int err, struct ub_result *res)
{
    struct dns_single *q = arg;
    dns_single_unlink(q);
    struct outbound_dns_answer a = {.status = OUTBOUND_DNS_TEMPFAIL};
    if (err == 0 && res) {
        if (res->rcode == 3 /* NXDOMAIN */ || (res->rcode == 0 && !res->havedata))
            a.status = OUTBOUND_DNS_NOTFOUND;
        else if (res->rcode == 0 && res->havedata)
            a.status = OUTBOUND_DNS_OK;
        a.ttl = res->ttl > 0 ? (unsigned)res->ttl : 0;
        for (int i = 0; q->rrtype == 1 && res->havedata && res->data[i] &&
                        a.n_a < OUTBOUND_DNS_MAX_A;
             i++) {
            if (res->len[i] == 4 &&
                inet_ntop(AF_INET, res->data[i], a.a[a.n_a], sizeof a.a[0]))
                a.n_a++;
        }
    }
    if (res)
        ub_resolve_free(res);
    q->cb(q->arg, &a);
    free(q);
}

int outbound_dns_query_async(struct outbound_dns *d, const char *name, int rrtype,
                             outbound_dns_query_cb *cb, void *arg)
{
    if (!d || !d->ev)
        return -1;
    struct dns_single *q = calloc(1, sizeof *q);
    if (!q)
        return -1;
    q->d = d;
    q->rrtype = rrtype;
    q->cb = cb;
    q->arg = arg;
    q->next = d->queries;
    if (d->queries)
        d->queries->prev = q;
    d->queries = q;
    if (ub_resolve_async(d->ub, name, rrtype, 1, q, dns_single_cb, NULL) != 0) {
        dns_single_unlink(q);
        free(q);
        return -1;
    }
    return 0;
}

int outbound_dns_route_async(struct outbound_dns *d, const struct outbound_route *route,
                             outbound_dns_cb *cb, void *arg)
{
    if (!d->ev)
        return -1;
    struct dns_lookup *l = calloc(1, sizeof *l);
    if (!l)
        return -1;
    l->d = d;
    l->route = *route;
    l->cb = cb;
    l->arg = arg;
    l->next = d->pending;
    d->pending = l;
    if (route->is_literal) {
        snprintf(l->mxs[0].name, sizeof l->mxs[0].name, "%s", route->host);
        l->n_mx = 1;
        dns_lookup_addresses(l); /* may finish (and call cb) at once for an IP literal */
        return 0;
    }
    if (ub_resolve_async(d->ub, route->host, 15 /* MX */, 1, l, dns_mx_cb, NULL) != 0) {
        dns_lookup_finish(l, OUTBOUND_DNS_TEMPFAIL, "cannot start the DNS query");
        return 0;
    }
    return 0;
}
