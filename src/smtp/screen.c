/*
 * screen.c - screening of port-25 clients before they may send mail (issue 13), the
 * checks Postfix spreads over postscreen and smtpd_*_restrictions:
 *
 *   - before the banner: a pause (smtp.greet_pause) and DNS list lookups of the client
 *     address (smtp.dnsbl_sites, postscreen's weighted model); a client that talks
 *     before the banner is an early talker (PREGREET) and is dropped with 521; a score
 *     at or over smtp.dnsbl_threshold gets 554 instead of the banner;
 *   - commands pipelined before PIPELINING was announced (RFC 2920 §3.1; Postfix's
 *     smtpd_forbid_unauth_pipelining): 554 5.5.0 and the connection ends;
 *   - HELO/EHLO: a hostname or address literal of valid syntax, optionally fully
 *     qualified, and not our own name or address;
 *   - MAIL: RHSBL lookups of the sender and HELO domains (smtp.rhsbl_sites) and,
 *     optionally, a sender domain that has no MX, A or AAAA record;
 *   - RCPT: greylisting of local recipients (greylist.enabled), in the RCPT job
 *     (envelope.c asks smtp_screen_greylist whether it applies).
 * Clients in relay_networks or auth.trusted_networks, and authenticated ones, skip the
 * checks. A DNS failure never rejects: only answers count. Lookups go through this
 * process's own libunbound resolver on the event loop (smtp_screen_start: every worker
 * has one, like the queue runner); answers are cached per process (policy/dnscache.h).
 *
 * Lifetime: while lookups or the pause run the session is busy (s->is_busy, its commands
 * unprocessed). The checks end when every answer is in, or at smtp.dns_timeout (lookups
 * not answered by then count as not listed). The timers belong to the session and go
 * with it; answers find the session through a ticket shared with their queries, which
 * the end of the checks or the session's end detaches: a late answer only frees its
 * query.
 */
#include "core/config.h"
#include "core/dnsbl_site.h"
#include "core/log.h"
#include "core/job.h"
#include "policy/dnscache.h"
#include "queue/outbound.h"
#include "smtp/session.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SCREEN_MAX_SITES 32

enum screen_phase { SCREEN_GREET, SCREEN_MAIL };

/* What a lookup was for. */
enum screen_kind {
    SCREEN_DNSBL,       /* client address at smtp.dnsbl_sites[site] */
    SCREEN_RHSBL_FROM,  /* sender domain at smtp.rhsbl_sites[site] */
    SCREEN_RHSBL_HELO,  /* HELO domain at smtp.rhsbl_sites[site] */
    SCREEN_SENDER_MX,   /* sender domain MX / A / AAAA */
    SCREEN_SENDER_A,
    SCREEN_SENDER_AAAA,
};

/* What the queries of one screening phase share with it. */
struct screen_ticket {
    struct smtp_session *s; /* NULL once the phase ended */
    unsigned refs;          /* queries in flight + the phase's own reference */
};

struct smtp_screen {
    enum screen_phase phase;
    unsigned pending;   /* lookups and the pause still running, plus a guard while starting */
    struct event *pause;
    struct event *deadline; /* smtp.dns_timeout */
    struct screen_ticket *ticket;
    uint64_t started_ms;
    int score;          /* DNSBL or RHSBL weights of the sites that listed */
    char listed_by[256]; /* their names, for the reply and the log */
    bool is_sender_found;
    unsigned sender_notfound; /* of the sender domain's MX, A, AAAA: how many said no */
    bool is_rhsbl_helo; /* the HELO domain (not the sender) was listed */
    /* the MAIL waiting for the checks */
    struct addr from;
    char from_text[ADDR_MAX_PATH + 1];
    struct smtp_mail_params params;
};

struct screen_query {
    struct screen_ticket *ticket;
    enum screen_kind kind;
    unsigned site;
    int rrtype;
    char name[320];
};

/* The resolver of the lookups (smtp_screen_start), NULL when no check needs DNS. */
static struct outbound_dns *screen_dns;

/* Does any configured check need DNS? */
static bool screen_needs_dns(const struct config *cfg)
{
    return cfg->smtp_dnsbl_sites.n || cfg->smtp_rhsbl_sites.n ||
           cfg->smtp_reject_unknown_sender_domain;
}

int smtp_screen_prepare(const struct config *cfg, char **error_r)
{
    if (!screen_needs_dns(cfg) || screen_dns)
        return 0;
    /* no trust anchor: the lists' answers are taken as they come (no DNSSEC here), and
     * libunbound would read the anchor file only at the first query, inside the chroot */
    screen_dns = outbound_dns_create(cfg->dns_resolver, NULL, error_r);
    return screen_dns ? 0 : -1;
}

int smtp_screen_start(const struct config *cfg, struct event_base *base, char **error_r)
{
    if (!screen_needs_dns(cfg))
        return 0;
    if (smtp_screen_prepare(cfg, error_r) < 0)
        return -1;
    if (outbound_dns_attach(screen_dns, base) < 0) {
        outbound_dns_free(screen_dns);
        screen_dns = NULL;
        *error_r = strdup("cannot watch the screening resolver");
    }
    return screen_dns ? 0 : -1;
}

void smtp_screen_stop(void)
{
    outbound_dns_free(screen_dns); /* queries still in flight are answered TEMPFAIL */
    screen_dns = NULL;
}

static bool screen_is_exempt(const struct smtp_session *s)
{
    return s->role != CONN_ROLE_SMTP || s->auth_user ||
           conn_peer_in_networks(s->c, &s->cfg->relay_networks) ||
           conn_peer_in_networks(s->c, &s->cfg->auth_trusted_networks);
}

static const char *screen_ip(const struct smtp_session *s)
{
    return s->client_ip[0] ? s->client_ip : conn_peer_ip(s->c);
}

static void ticket_release(struct screen_ticket *t)
{
    if (t && --t->refs == 0)
        free(t);
}

/* End a phase's timers and detach its ticket (late answers are dropped). */
static void screen_phase_end(struct smtp_screen *sc)
{
    if (sc->pause)
        event_free(sc->pause);
    if (sc->deadline)
        event_free(sc->deadline);
    sc->pause = sc->deadline = NULL;
    if (sc->ticket) {
        sc->ticket->s = NULL;
        ticket_release(sc->ticket);
        sc->ticket = NULL;
    }
}

void smtp_screen_free(struct smtp_session *s)
{
    if (!s->screen)
        return;
    screen_phase_end(s->screen);
    free(s->screen);
    s->screen = NULL;
}

static struct smtp_screen *screen_get(struct smtp_session *s)
{
    if (!s->screen)
        s->screen = calloc(1, sizeof *s->screen);
    return s->screen;
}

/* ---- answers ------------------------------------------------------------------------- */

static void screen_listed(struct smtp_screen *sc, const char *site, int weight)
{
    sc->score += weight;
    size_t n = strlen(sc->listed_by);
    if (weight > 0 && n + strlen(site) + 2 < sizeof sc->listed_by)
        snprintf(sc->listed_by + n, sizeof sc->listed_by - n, "%s%s", n ? ", " : "", site);
}

static void screen_finish(struct smtp_session *s);

/* One answer (fresh or cached) for query q. */
static void screen_answer(struct screen_query *q, const struct dns_cache_entry *e,
                          bool is_tempfail)
{
    struct smtp_session *s = q->ticket->s;
    if (!s) { /* the phase ended (timeout): nobody waits for this answer */
        ticket_release(q->ticket);
        free(q);
        return;
    }
    ticket_release(q->ticket);
    struct smtp_screen *sc = s->screen;
    if (!is_tempfail) {
        const struct config_list *sites = q->kind == SCREEN_DNSBL ? &s->cfg->smtp_dnsbl_sites
                                                                  : &s->cfg->smtp_rhsbl_sites;
        struct dnsbl_site site;
        switch (q->kind) {
        case SCREEN_DNSBL:
        case SCREEN_RHSBL_FROM:
        case SCREEN_RHSBL_HELO:
            if (q->site < sites->n && dnsbl_site_parse(sites->items[q->site], &site) &&
                e->is_found) {
                for (size_t i = 0; i < e->n_a; i++) {
                    if (dnsbl_site_matches(&site, e->a[i])) {
                        screen_listed(sc, site.domain, site.weight);
                        if (q->kind == SCREEN_RHSBL_HELO && site.weight > 0)
                            sc->is_rhsbl_helo = true;
                        break;
                    }
                }
            }
            break;
        case SCREEN_SENDER_MX:
        case SCREEN_SENDER_A:
        case SCREEN_SENDER_AAAA:
            if (e->is_found)
                sc->is_sender_found = true;
            else
                sc->sender_notfound++;
            break;
        }
    }
    free(q);
    if (--sc->pending == 0)
        screen_finish(s);
}

static void screen_dns_cb(void *arg, const struct outbound_dns_answer *a)
{
    struct screen_query *q = arg;
    struct smtp_session *s = q->ticket->s;
    struct dns_cache_entry e = {.is_found = a->status == OUTBOUND_DNS_OK};
    for (size_t i = 0; i < a->n_a && i < DNSCACHE_MAX_A; i++, e.n_a++)
        memcpy(e.a[i], a->a[i], sizeof e.a[i]);
    bool is_tempfail = a->status == OUTBOUND_DNS_TEMPFAIL;
    if (s && !is_tempfail && s->ctx->dnscache)
        dns_cache_put(s->ctx->dnscache, q->name, q->rrtype, a->ttl, &e, util_now_ms());
    if (s && is_tempfail)
        log_warning("smtpd", "%s: DNS lookup of %s failed: not counted", s->peer, q->name);
    screen_answer(q, &e, is_tempfail);
}

/* Ask (or answer from the cache). The guard in pending keeps a cached answer from
 * finishing the screen while queries are still being started. */
static void screen_query(struct smtp_session *s, enum screen_kind kind, unsigned site,
                         const char *name, int rrtype)
{
    struct screen_query *q = calloc(1, sizeof *q);
    if (!q || snprintf(q->name, sizeof q->name, "%s", name) >= (int)sizeof q->name) {
        free(q);
        return;
    }
    q->ticket = s->screen->ticket;
    q->ticket->refs++;
    q->kind = kind;
    q->site = site;
    q->rrtype = rrtype;
    s->screen->pending++;
    struct dns_cache_entry e;
    if (dns_cache_get(s->ctx->dnscache, name, rrtype, util_now_ms(), &e)) {
        screen_answer(q, &e, false);
        return;
    }
    if (outbound_dns_query_async(screen_dns, name, rrtype, screen_dns_cb, q) < 0) {
        struct dns_cache_entry none = {0};
        screen_answer(q, &none, true); /* no resolver: not counted */
    }
}

/* ---- before the banner -------------------------------------------------------------- */

/* The DNS name of ip at a DNS list: reversed octets (IPv4) or nibbles (IPv6, RFC 5782
 * §2.4) followed by the list's domain. false for anything else. */
static bool dnsbl_name(const char *ip, const char *domain, char *out, size_t size)
{
    unsigned char a[16];
    int n;
    if (inet_pton(AF_INET, ip, a) == 1) {
        n = snprintf(out, size, "%u.%u.%u.%u.%s", a[3], a[2], a[1], a[0], domain);
    } else if (inet_pton(AF_INET6, ip, a) == 1) {
        char nib[64];
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 16; i++) {
            nib[4 * i] = hex[a[15 - i] & 15];
            nib[4 * i + 1] = '.';
            nib[4 * i + 2] = hex[a[15 - i] >> 4];
            nib[4 * i + 3] = '.';
        }
        n = snprintf(out, size, "%.64s%s", nib, domain);
    } else {
        return false;
    }
    return n > 0 && (size_t)n < size;
}

/* smtp.dns_timeout passed: what has not answered counts as not listed. */
static void screen_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_session *s = arg;
    struct smtp_screen *sc = s->screen;
    log_warning("smtpd", "%s: DNS lookups not answered in %u ms: not counted", s->peer,
                s->cfg->smtp_dns_timeout);
    if (sc->pause) {
        /* the pause still runs: the checks end with it */
        sc->pending = 1;
        return;
    }
    sc->pending = 0;
    screen_finish(s);
}

/* Begin a phase: the guard, a ticket for its queries, the DNS deadline. false: no memory. */
static bool screen_phase_begin(struct smtp_session *s, enum screen_phase phase)
{
    struct smtp_screen *sc = s->screen;
    screen_phase_end(sc);
    memset(sc, 0, sizeof *sc);
    sc->phase = phase;
    sc->started_ms = util_now_ms();
    sc->pending = 1; /* the guard */
    sc->ticket = calloc(1, sizeof *sc->ticket);
    if (!sc->ticket)
        return false;
    sc->ticket->s = s;
    sc->ticket->refs = 1;
    unsigned ms = s->cfg->smtp_dns_timeout ? s->cfg->smtp_dns_timeout : 10000;
    sc->deadline = evtimer_new(s->ctx->base, screen_on_deadline, s);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (sc->deadline)
        evtimer_add(sc->deadline, &tv);
    s->is_busy = true;
    return true;
}

static void screen_on_pause(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_session *s = arg;
    if (--s->screen->pending == 0)
        screen_finish(s);
}

bool smtp_screen_greet(struct smtp_session *s)
{
    const struct config *cfg = s->cfg;
    if (screen_is_exempt(s) || (cfg->smtp_greet_pause == 0 && cfg->smtp_dnsbl_sites.n == 0))
        return false;
    struct smtp_screen *sc = screen_get(s);
    if (!sc || !screen_phase_begin(s, SCREEN_GREET))
        return false;
    if (cfg->smtp_greet_pause) {
        sc->pause = evtimer_new(s->ctx->base, screen_on_pause, s);
        struct timeval tv = {.tv_sec = cfg->smtp_greet_pause / 1000,
                             .tv_usec = (cfg->smtp_greet_pause % 1000) * 1000};
        if (sc->pause && evtimer_add(sc->pause, &tv) == 0)
            sc->pending++;
    }
    char name[320];
    for (size_t i = 0; i < cfg->smtp_dnsbl_sites.n && i < SCREEN_MAX_SITES; i++) {
        struct dnsbl_site site;
        if (dnsbl_site_parse(cfg->smtp_dnsbl_sites.items[i], &site) &&
            dnsbl_name(screen_ip(s), site.domain, name, sizeof name))
            screen_query(s, SCREEN_DNSBL, (unsigned)i, name, 1);
    }
    if (--sc->pending == 0)
        screen_finish(s);
    return true;
}

/* The pause and the lookups are over: early talker, listed, or the banner. */
static void screen_greet_finish(struct smtp_session *s)
{
    struct smtp_screen *sc = s->screen;
    struct evbuffer *in = conn_input(s->c);
    size_t early = evbuffer_get_length(in);
    double after = (double)(util_now_ms() - sc->started_ms) / 1000.0;
    if (early) {
        /* postscreen: "PREGREET 11 after 0.01 from [192.0.2.1]:4711: EHLO x\r\n" */
        char first[80];
        size_t n = evbuffer_copyout(in, first, sizeof first - 1);
        first[n] = '\0';
        char safe[80];
        smtp_log_safe(first, safe, sizeof safe);
        log_info("smtpd", "PREGREET %zu after %.2f from [%s]: %s", early, after, screen_ip(s),
                 safe);
        evbuffer_drain(in, early);
        smtp_reply(s, "521 5.5.1 Protocol error");
        s->input = SMTP_INPUT_CLOSED;
        conn_close(s->c);
        return;
    }
    if (s->cfg->smtp_dnsbl_sites.n && sc->score >= (int)s->cfg->smtp_dnsbl_threshold &&
        sc->score > 0) {
        log_info("smtpd", "NOQUEUE: reject: CONNECT from %s: 554 5.7.1 Service unavailable; "
                          "client [%s] blocked using %s (score %d); proto=SMTP",
                 s->peer, screen_ip(s), sc->listed_by, sc->score);
        smtp_reply(s, "554 5.7.1 Service unavailable; client [%s] blocked using %s",
                   screen_ip(s), sc->listed_by);
        s->input = SMTP_INPUT_CLOSED;
        conn_close(s->c);
        return;
    }
    if (sc->score != 0)
        log_info("smtpd", "DNSBL rank %d for [%s] (under threshold %u)", sc->score, screen_ip(s),
                 s->cfg->smtp_dnsbl_threshold);
    smtp_milter_greet(s, false); /* the banner, after the milters' connect stage */
}

/* ---- MAIL ------------------------------------------------------------------------------- */

bool smtp_screen_mail(struct smtp_session *s, const struct addr *from, const char *from_text,
                      const struct smtp_mail_params *params)
{
    const struct config *cfg = s->cfg;
    bool has_domain = !from->is_null && from->domain[0] && from->domain[0] != '[';
    bool wants_rhsbl = cfg->smtp_rhsbl_sites.n > 0;
    bool wants_domain = cfg->smtp_reject_unknown_sender_domain && has_domain;
    if (screen_is_exempt(s) || (!wants_rhsbl && !wants_domain) || !screen_dns)
        return false;
    bool is_helo_name = s->helo[0] && s->helo[0] != '[' && strchr(s->helo, '.');
    if (!has_domain && !is_helo_name)
        return false;
    struct smtp_screen *sc = screen_get(s);
    if (!sc || !screen_phase_begin(s, SCREEN_MAIL)) {
        s->is_busy = false;
        return false;
    }
    sc->from = *from;
    snprintf(sc->from_text, sizeof sc->from_text, "%s", from_text);
    sc->params = *params;
    conn_pause_read(s->c);
    char name[320];
    for (size_t i = 0; wants_rhsbl && i < cfg->smtp_rhsbl_sites.n && i < SCREEN_MAX_SITES; i++) {
        struct dnsbl_site site;
        if (!dnsbl_site_parse(cfg->smtp_rhsbl_sites.items[i], &site))
            continue;
        if (has_domain && snprintf(name, sizeof name, "%s.%s", from->domain, site.domain) <
                              (int)sizeof name)
            screen_query(s, SCREEN_RHSBL_FROM, (unsigned)i, name, 1);
        if (is_helo_name && strcasecmp(s->helo, from->domain) != 0 &&
            snprintf(name, sizeof name, "%s.%s", s->helo, site.domain) < (int)sizeof name)
            screen_query(s, SCREEN_RHSBL_HELO, (unsigned)i, name, 1);
    }
    if (wants_domain) {
        screen_query(s, SCREEN_SENDER_MX, 0, from->domain, 15);
        screen_query(s, SCREEN_SENDER_A, 0, from->domain, 1);
        screen_query(s, SCREEN_SENDER_AAAA, 0, from->domain, 28);
    }
    if (--sc->pending == 0)
        screen_finish(s);
    return true;
}

static void screen_mail_finish(struct smtp_session *s)
{
    struct smtp_screen *sc = s->screen;
    char reply[SMTP_REPLY_MAX];
    reply[0] = '\0';
    if (s->cfg->smtp_rhsbl_sites.n && sc->score >= (int)s->cfg->smtp_rhsbl_threshold &&
        sc->score > 0) {
        if (sc->is_rhsbl_helo)
            snprintf(reply, sizeof reply,
                     "554 5.7.1 Service unavailable; Helo command [%.200s] blocked using %.200s",
                     s->helo, sc->listed_by);
        else
            snprintf(reply, sizeof reply,
                     "554 5.7.1 Service unavailable; Sender address [%.300s] blocked using "
                     "%.150s",
                     sc->from_text, sc->listed_by);
    } else if (s->cfg->smtp_reject_unknown_sender_domain && !sc->is_sender_found &&
               sc->sender_notfound == 3) {
        /* every answer said "no such record": a failure to ask never rejects */
        snprintf(reply, sizeof reply, "550 5.1.8 <%.300s>: Sender address rejected: Domain not "
                                      "found", sc->from_text);
    }
    if (reply[0]) {
        log_info("smtpd", "NOQUEUE: reject: MAIL from %s: %s; from=<%s> proto=%s helo=<%s>",
                 s->peer, reply, sc->from_text, s->is_esmtp ? "ESMTP" : "SMTP", s->helo);
        smtp_reply(s, "%s", reply);
        return;
    }
    smtp_mail_accept(s, &sc->from, sc->from_text, &sc->params);
}

static void screen_finish(struct smtp_session *s)
{
    struct smtp_screen *sc = s->screen;
    /* end the phase first: what follows may close the connection */
    enum screen_phase phase = sc->phase;
    screen_phase_end(sc);
    s->is_busy = false;
    if (phase == SCREEN_GREET)
        screen_greet_finish(s);
    else
        screen_mail_finish(s);
    if (!s->is_busy) /* smtp_mail_accept may have started the SPF job: it resumes then */
        smtp_session_job_done(s);
}

/* ---- pipelining and HELO -------------------------------------------------------------- */

bool smtp_screen_pipelining(struct smtp_session *s, const char *line, size_t pending)
{
    if (!s->cfg->smtp_reject_unauth_pipelining || s->has_pipelining || pending == 0 ||
        screen_is_exempt(s))
        return true;
    char safe[100];
    smtp_log_safe(line, safe, sizeof safe);
    log_info("smtpd", "improper command pipelining after %s from %s: %s",
             s->stat_total[s->cur_verb] ? smtp_verb_name(s->cur_verb) : "CONNECT", s->peer,
             safe);
    smtp_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
    s->input = SMTP_INPUT_CLOSED;
    conn_close(s->c);
    return false;
}

/* RFC 5321 §4.1.3 address literal, or a hostname of letters, digits, '-' (and '_',
 * which Postfix tolerates) in labels of 1-63 octets. */
static bool helo_is_valid(const char *h)
{
    size_t len = strlen(h);
    if (h[0] == '[') {
        if (len < 3 || h[len - 1] != ']')
            return false;
        char ip[64];
        unsigned char bin[16];
        if (len - 2 >= sizeof ip)
            return false;
        memcpy(ip, h + 1, len - 2);
        ip[len - 2] = '\0';
        if (strncasecmp(ip, "IPv6:", 5) == 0)
            return inet_pton(AF_INET6, ip + 5, bin) == 1;
        return inet_pton(AF_INET, ip, bin) == 1;
    }
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || ++label > 63)
            return false;
    }
    return len > 0 && len <= 255;
}

/* Is h our own name or address, which no outside client can honestly say? A client on
 * this host (its address is the one it connected to) may. */
static bool helo_is_us(const struct smtp_session *s, const char *h)
{
    const char *local = conn_local_ip(s->c);
    if (strcmp(conn_peer_ip(s->c), local) == 0)
        return false;
    if (strcasecmp(h, smtp_hostname(s)) == 0)
        return true;
    size_t len = strlen(h);
    if (h[0] == '[' && len > 2) {
        const char *ip = h + 1;
        size_t n = len - 2;
        if (n > 5 && strncasecmp(ip, "IPv6:", 5) == 0)
            ip += 5, n -= 5;
        return strlen(local) == n && strncasecmp(ip, local, n) == 0;
    }
    return strcasecmp(h, local) == 0;
}

bool smtp_screen_helo(struct smtp_session *s, const char *helo)
{
    if (!s->cfg->smtp_helo_checks || screen_is_exempt(s))
        return true;
    char reply[SMTP_REPLY_MAX];
    char safe[260];
    smtp_log_safe(helo, safe, sizeof safe);
    if (!helo_is_valid(helo))
        snprintf(reply, sizeof reply, "501 5.5.2 <%s>: Helo command rejected: Invalid name",
                 safe);
    else if (s->cfg->smtp_helo_require_fqdn && helo[0] != '[' && !strchr(helo, '.'))
        snprintf(reply, sizeof reply,
                 "504 5.5.2 <%s>: Helo command rejected: need fully-qualified hostname", safe);
    else if (helo_is_us(s, helo))
        snprintf(reply, sizeof reply,
                 "550 5.7.1 <%s>: Helo command rejected: that is my name, not yours", safe);
    else
        return true;
    log_info("smtpd", "NOQUEUE: reject: HELO from %s: %s; proto=SMTP helo=<%s>", s->peer, reply,
             safe);
    smtp_reply(s, "%s", reply);
    return false;
}

/* ---- RCPT: greylisting -------------------------------------------------------------- */

struct greylist *smtp_screen_greylist(const struct smtp_session *s)
{
    return screen_is_exempt(s) ? NULL : s->ctx->greylist;
}

bool smtp_screen_is_greylisted(const struct smtp_session *s)
{
    return s->cfg->greylist_enabled && !screen_is_exempt(s);
}

const char *smtp_screen_client_ip(const struct smtp_session *s)
{
    return screen_ip(s);
}
