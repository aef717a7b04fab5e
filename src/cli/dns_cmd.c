/*
 * dns_cmd.c - `tern dns records DOMAIN` prints every DNS record a mail domain served by
 * this Tern should publish (zone-file syntax); `tern dns check DOMAIN` looks each one up
 * (dns.resolver) and says OK, MISSING or DIFFERENT, and fetches the MTA-STS policy as a
 * sender would to compare it with ours; exit 0 only when all are OK.
 *
 * The records: MX (hostname), SPF ("v=spf1 mx -all"), DKIM (every key of the domain that
 * is not retired), DMARC (p=reject, reports to postmaster), MTA-STS (RFC 8461: the
 * _mta-sts TXT whose id is a hash of the policy, and the policy text to serve at
 * https://mta-sts.DOMAIN/.well-known/mta-sts.txt: http_mtasts_policy, what mta_sts.listen
 * serves), TLS-RPT (RFC 8460), and the SRV records
 * of RFC 6186 / RFC 8314 for client autoconfiguration, from the configured listeners.
 */
#include "cli/cli.h"
#include "core/buf.h"
#include "core/config.h"
#include "http/http.h"
#include "mailauth/mailauth.h"

#include <openssl/evp.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DNS_RECORDS_MAX 48

enum { RR_MX, RR_TXT, RR_SRV };

struct dns_record {
    char name[300];
    int type;
    char value[1200]; /* TXT text; MX "pref host"; SRV "prio weight port target" */
    const char *what; /* "MX", "SPF", "DKIM", ... */
    const char *prefix; /* TXT check: the record is this kind when it starts so */
};

static int dns_usage(void)
{
    fprintf(stderr, "usage: tern dns records DOMAIN\n       tern dns check DOMAIN\n");
    return 2;
}

/* The port of a listener list's first item ("*:465" -> 465), or 0 when disabled. */
static unsigned listen_port(const struct config_list *l)
{
    if (l->n == 0)
        return 0;
    const char *colon = strrchr(l->items[0], ':');
    return (unsigned)strtoul(colon ? colon + 1 : l->items[0], NULL, 10);
}

static void add(struct dns_record *r, size_t *n, const char *what, const char *name, int type,
                const char *prefix, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void add(struct dns_record *r, size_t *n, const char *what, const char *name, int type,
                const char *prefix, const char *fmt, ...)
{
    if (*n >= DNS_RECORDS_MAX)
        return;
    struct dns_record *d = &r[(*n)++];
    memset(d, 0, sizeof *d);
    d->what = what;
    d->type = type;
    d->prefix = prefix;
    snprintf(d->name, sizeof d->name, "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->value, sizeof d->value, fmt, ap);
    va_end(ap);
}

/* Every record domain should have. */
static size_t dns_expected(const struct config *cfg, const char *domain, struct dns_record *r)
{
    size_t n = 0;
    char name[300];
    add(r, &n, "MX", domain, RR_MX, NULL, "10 %s", cfg->hostname);
    add(r, &n, "SPF", domain, RR_TXT, "v=spf1", "v=spf1 mx -all");
    struct mailauth_key_info *keys = NULL;
    size_t nk = 0;
    char *err = NULL;
    if (mailauth_keys_list(cfg->data_dir, domain, &keys, &nk, &err) == 0) {
        for (size_t i = 0; i < nk; i++) {
            if (keys[i].is_retired || !keys[i].txt)
                continue;
            snprintf(name, sizeof name, "%s._domainkey.%s", keys[i].selector, domain);
            add(r, &n, "DKIM", name, RR_TXT, "v=DKIM1", "%s", keys[i].txt);
        }
        mailauth_keys_list_free(keys, nk);
    }
    free(err);
    snprintf(name, sizeof name, "_dmarc.%s", domain);
    add(r, &n, "DMARC", name, RR_TXT, "v=DMARC1", "v=DMARC1; p=reject; rua=mailto:postmaster@%s",
        domain);
    /* RFC 8461 §3.1: id changes whenever the policy does: a hash of its text */
    struct buf policy;
    buf_init(&policy, 0);
    http_mtasts_policy(cfg, &policy);
    unsigned char md[32];
    unsigned ml = 0;
    EVP_Digest(policy.data, policy.len, md, &ml, EVP_sha256(), NULL);
    buf_free(&policy);
    snprintf(name, sizeof name, "_mta-sts.%s", domain);
    add(r, &n, "MTA-STS", name, RR_TXT, "v=STSv1", "v=STSv1; id=%02x%02x%02x%02x%02x%02x%02x%02x",
        md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7]);
    snprintf(name, sizeof name, "_smtp._tls.%s", domain);
    add(r, &n, "TLS-RPT", name, RR_TXT, "v=TLSRPTv1", "v=TLSRPTv1; rua=mailto:postmaster@%s",
        domain);
    /* RFC 6186 + RFC 8314 §5.1: implicit TLS preferred (priority 0), STARTTLS after it */
    static const struct {
        const char *service;
        size_t offset;
        int priority;
    } srv[] = {
        {"_submissions._tcp", offsetof(struct config, submissions_listen), 0},
        {"_submission._tcp", offsetof(struct config, submission_listen), 10},
        {"_imaps._tcp", offsetof(struct config, imaps_listen), 0},
        {"_imap._tcp", offsetof(struct config, imap_listen), 10},
        {"_pop3s._tcp", offsetof(struct config, pop3s_listen), 20},
        {"_pop3._tcp", offsetof(struct config, pop3_listen), 30},
    };
    for (size_t i = 0; i < sizeof srv / sizeof srv[0]; i++) {
        unsigned port =
            listen_port((const struct config_list *)((const char *)cfg + srv[i].offset));
        snprintf(name, sizeof name, "%s.%s", srv[i].service, domain);
        if (port)
            add(r, &n, "SRV", name, RR_SRV, NULL, "%d 1 %u %s", srv[i].priority, port,
                cfg->hostname);
        else /* RFC 6186 §3.4: the service is not offered */
            add(r, &n, "SRV", name, RR_SRV, NULL, "0 0 0 .");
    }
    return n;
}

static void dns_print(const struct dns_record *d)
{
    if (d->type == RR_TXT) {
        cli_print_txt_record(d->name, d->value);
    } else if (d->type == RR_MX) {
        printf("%s. 3600 IN MX %s.\n", d->name, d->value);
    } else {
        const char *t = strrchr(d->value, ' ');
        printf("%s. 3600 IN SRV %s%s\n", d->name, d->value, t && strcmp(t, " .") ? "." : "");
    }
}

static int dns_records(const struct config *cfg, const char *domain)
{
    struct dns_record *r = calloc(DNS_RECORDS_MAX, sizeof *r);
    if (!r)
        return 1;
    size_t n = dns_expected(cfg, domain, r);
    printf("; records for %s (mail host %s)\n", domain, cfg->hostname);
    printf("; %s needs A/AAAA records of its public addresses, and a PTR record for each\n",
           cfg->hostname);
    const char *last = "";
    for (size_t i = 0; i < n; i++) {
        if (strcmp(last, r[i].what) != 0)
            printf(";\n; %s\n", r[i].what);
        last = r[i].what;
        dns_print(&r[i]);
    }
    struct buf policy;
    buf_init(&policy, 0);
    http_mtasts_policy(cfg, &policy);
    printf(";\n; MTA-STS policy: serve this text at https://mta-sts.%s/.well-known/mta-sts.txt\n"
           "; (mta-sts.%s needs an A/AAAA record and a certificate valid for that name;\n"
           "; Tern serves it itself with mta_sts.listen and tls.sni_certs)\n",
           domain, domain);
    for (char *line = policy.data, *nl; line && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        int n = (int)(nl ? nl - line : (long)strlen(line));
        if (n > 0 && line[n - 1] == '\r')
            n--;
        printf(";   %.*s\n", n, line);
        if (!nl)
            break;
    }
    buf_free(&policy);
    free(r);
    return 0;
}

/* Decode an SRV RDATA into "prio weight port target". */
static void srv_text(const unsigned char *d, size_t len, char *out, size_t size)
{
    out[0] = '\0';
    if (len < 7)
        return;
    unsigned prio = (unsigned)d[0] << 8 | d[1], weight = (unsigned)d[2] << 8 | d[3],
             port = (unsigned)d[4] << 8 | d[5];
    char target[256] = "";
    size_t pos = 6, o = 0;
    while (pos < len && d[pos] != 0 && o < sizeof target - 66) {
        size_t l = d[pos++];
        if (pos + l > len)
            return;
        if (o)
            target[o++] = '.';
        memcpy(target + o, d + pos, l);
        o += l;
        pos += l;
    }
    target[o] = '\0';
    snprintf(out, size, "%u %u %u %s", prio, weight, port, o ? target : ".");
}

/* Look one expected record up: 0 OK, 1 missing, 2 different (*have filled), -1 DNS error. */
static int dns_check_one(const struct mailauth_dns *dns, const struct dns_record *d,
                         struct mailauth_dns_answer *a, char *have, size_t have_size)
{
    int type = d->type == RR_MX ? MAILAUTH_DNS_MX : d->type == RR_TXT ? MAILAUTH_DNS_TXT : 33;
    have[0] = '\0';
    enum mailauth_dns_status st = dns->lookup(dns->ctx, d->name, type, a);
    if (st == MAILAUTH_DNS_TEMPFAIL)
        return -1;
    if (st == MAILAUTH_DNS_NXDOMAIN)
        return 1;
    bool has_kind = false;
    for (size_t i = 0; i < a->n; i++) {
        const char *v = (const char *)a->rr[i].data;
        char text[1200];
        if (d->type == RR_MX) {
            const char *host = strchr(d->value, ' ') + 1;
            if (strcasecmp(v, host) == 0)
                return 0;
            snprintf(text, sizeof text, "%s", v);
        } else if (d->type == RR_SRV) {
            srv_text(a->rr[i].data, a->rr[i].len, text, sizeof text);
            if (strcasecmp(text, d->value) == 0)
                return 0;
        } else {
            if (strncasecmp(v, d->prefix, strlen(d->prefix)) != 0)
                continue; /* another kind of TXT at the same name */
            has_kind = true;
            snprintf(text, sizeof text, "%s", v);
            if (strcmp(v, d->value) == 0)
                return 0;
            /* a DKIM record matches when its key does, whatever else it says */
            const char *p1 = strstr(v, "p="), *p2 = strstr(d->value, "p=");
            if (strcmp(d->what, "DKIM") == 0 && p1 && p2 && strcmp(p1, p2) == 0)
                return 0;
        }
        if (!have[0])
            snprintf(have, have_size, "%s", text);
        has_kind = true;
    }
    return has_kind ? 2 : 1;
}

/* Is the policy served the one we would serve (mode, max_age, the same mx patterns)? */
static bool sts_policy_is_same(const struct mailauth_sts_policy *a,
                               const struct mailauth_sts_policy *b)
{
    if (a->mode != b->mode || a->max_age != b->max_age || a->n_mx != b->n_mx)
        return false;
    for (size_t i = 0; i < a->n_mx; i++)
        if (strcmp(a->mx[i], b->mx[i]) != 0)
            return false;
    return true;
}

/* RFC 8461 §3.3: the policy host must serve the policy whose id the _mta-sts record
 * publishes: fetch it as a sender would (outbound.ca_file, outbound.mta_sts_port) and
 * compare. Prints one line; 0 OK, 1 otherwise. */
static int dns_check_sts_policy(const struct config *cfg, const struct mailauth_dns *dns,
                                const char *domain)
{
    struct buf text;
    buf_init(&text, 0);
    http_mtasts_policy(cfg, &text);
    struct mailauth_sts_policy *want = calloc(2, sizeof *want), *have = want ? want + 1 : NULL;
    int rc = 1;
    if (!want || !text.data || mailauth_sts_policy_parse(text.data, text.len, want) < 0) {
        printf("%-9s %-8s (cannot build our policy: check mta_sts.*)\n", "ERROR", "MTA-STS");
        goto out;
    }
    struct mailauth_sts_opts o = {.ca_file = cfg->outbound_ca_file,
                                  .https_port = cfg->outbound_mta_sts_port};
    char err[256];
    static const char *const modes[] = {"none", "testing", "enforce"};
    if (mailauth_sts_fetch(dns, &o, domain, have, err, sizeof err) < 0) {
        printf("%-9s %-8s https://mta-sts.%s/.well-known/mta-sts.txt (%s)\n", "MISSING",
               "MTA-STS", domain, err);
    } else if (!sts_policy_is_same(want, have)) {
        printf("%-9s %-8s https://mta-sts.%s/.well-known/mta-sts.txt (serves mode %s, %zu mx, "
               "max_age %lld; ours: mode %s, %zu mx, max_age %lld)\n",
               "DIFFERENT", "MTA-STS", domain, modes[have->mode], have->n_mx,
               (long long)have->max_age, modes[want->mode], want->n_mx, (long long)want->max_age);
    } else {
        printf("%-9s %-8s https://mta-sts.%s/.well-known/mta-sts.txt\n", "OK", "MTA-STS", domain);
        rc = 0;
    }
out:
    free(want);
    buf_free(&text);
    return rc;
}

static int dns_check(const struct config *cfg, const char *domain)
{
    char *err = NULL;
    struct mailauth_resolver *res =
        mailauth_resolver_create(cfg->dns_resolver, cfg->mailauth_dns_timeout * 1000, NULL, &err);
    if (!res) {
        fprintf(stderr, "tern: %s\n", err ? err : "no resolver");
        free(err);
        return 1;
    }
    struct mailauth_dns dns = mailauth_resolver_dns(res);
    struct dns_record *r = calloc(DNS_RECORDS_MAX, sizeof *r);
    struct mailauth_dns_answer *a = calloc(1, sizeof *a);
    int rc = 0;
    if (!r || !a) {
        rc = 1;
        goto out;
    }
    size_t n = dns_expected(cfg, domain, r);
    for (size_t i = 0; i < n; i++) {
        char have[1200];
        int c = dns_check_one(&dns, &r[i], a, have, sizeof have);
        static const char *const verdict[] = {"OK", "MISSING", "DIFFERENT"};
        const char *v = c < 0 ? "DNS-ERROR" : verdict[c];
        printf("%-9s %-8s %s", v, r[i].what, r[i].name);
        if (r[i].type == RR_TXT && c != 0)
            printf(" TXT \"%.120s%s\"", r[i].value, strlen(r[i].value) > 120 ? "..." : "");
        else if (r[i].type != RR_TXT)
            printf(" %s %s", r[i].type == RR_MX ? "MX" : "SRV", r[i].value);
        if (c == 2)
            printf(" (DNS has: %.120s)", have);
        printf("\n");
        if (c != 0)
            rc = 1;
    }
    if (dns_check_sts_policy(cfg, &dns, domain) != 0)
        rc = 1;
out:
    free(a);
    free(r);
    mailauth_resolver_free(res);
    return rc;
}

int cli_dns(const struct cli_options *o, int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "records") != 0 && strcmp(argv[1], "check") != 0))
        return dns_usage();
    const char *domain = argv[2];
    if (!mailauth_keys_is_valid_name(domain, 254) || !strchr(domain, '.')) {
        fprintf(stderr, "tern: invalid domain: %s\n", domain);
        return 2;
    }
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return 1;
    int rc = strcmp(argv[1], "records") == 0 ? dns_records(cfg, domain) : dns_check(cfg, domain);
    config_free(cfg);
    return rc;
}
