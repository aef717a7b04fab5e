/*
 * dmarc.c - DMARC, RFC 7489: the record parser (§6.3, §6.4), policy discovery at the
 * From domain and then its organizational domain (§6.6.3; the organizational domain
 * comes from the Public Suffix List through libpsl, Debian's `publicsuffix` data),
 * identifier alignment of SPF and DKIM results (§3.1, strict or relaxed), p/sp/pct.
 */
#include "mailauth/mailauth-private.h"

#include "core/util.h"

#include <libpsl.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const psl_ctx_t *dmarc_psl;
static pthread_once_t dmarc_psl_once = PTHREAD_ONCE_INIT;

/* Load the newest list on the system (the publicsuffix package), else libpsl's built-in
 * copy. A psl_ctx_t is read-only once loaded: any thread may use it. */
static void dmarc_psl_load(void)
{
    dmarc_psl = psl_latest(NULL);
    if (!dmarc_psl)
        dmarc_psl = psl_builtin();
}

void mailauth_org_domain(const char *domain, char *out, size_t size)
{
    pthread_once(&dmarc_psl_once, dmarc_psl_load);
    char lower[254];
    snprintf(lower, sizeof lower, "%s", domain);
    util_ascii_lower(lower);
    size_t l = strlen(lower);
    if (l && lower[l - 1] == '.')
        lower[l - 1] = '\0';
    const char *reg = dmarc_psl ? psl_registrable_domain(dmarc_psl, lower) : NULL;
    /* §3.2: a name that is itself a public suffix is its own organizational domain */
    snprintf(out, size, "%s", reg ? reg : lower);
}

static bool value_is(const struct mailauth_tag *t, const char *v)
{
    size_t l = strlen(v);
    size_t tl = t->value_len;
    while (tl > 0 && (t->value[tl - 1] == ' ' || t->value[tl - 1] == '\t'))
        tl--;
    return tl == l && strncasecmp(t->value, v, l) == 0;
}

static int parse_policy(const struct mailauth_tag *t)
{
    if (value_is(t, "none"))
        return MAILAUTH_DMARC_POLICY_NONE;
    if (value_is(t, "quarantine"))
        return MAILAUTH_DMARC_POLICY_QUARANTINE;
    if (value_is(t, "reject"))
        return MAILAUTH_DMARC_POLICY_REJECT;
    return -1;
}

int mailauth_dmarc_record_parse(const char *text, size_t len, struct mailauth_dmarc_record *r)
{
    struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
    size_t n;
    memset(r, 0, sizeof *r);
    r->pct = 100;
    r->subdomain_policy = -1;
    if (mailauth_tags_parse(text, len, tags, &n) < 0 || n == 0)
        return -1;
    /* §6.4: v=DMARC1 must be the first tag */
    if (strcmp(tags[0].name, "v") != 0 || !value_is(&tags[0], "DMARC1"))
        return -1;
    const struct mailauth_tag *p = mailauth_tags_find(tags, n, "p"),
                              *sp = mailauth_tags_find(tags, n, "sp"),
                              *adkim = mailauth_tags_find(tags, n, "adkim"),
                              *aspf = mailauth_tags_find(tags, n, "aspf"),
                              *pct = mailauth_tags_find(tags, n, "pct"),
                              *rua = mailauth_tags_find(tags, n, "rua");
    r->has_rua = rua && rua->value_len > 0;
    if (rua)
        mailauth_copy_nofws(rua->value, rua->value_len, r->rua, sizeof r->rua);
    int pol = p ? parse_policy(p) : -1;
    int spol = sp ? parse_policy(sp) : MAILAUTH_DMARC_POLICY_NONE;
    if (pol < 0 || (sp && spol < 0)) {
        /* §6.6.3: a bad p= or sp= with a reporting address is p=none; without, no DMARC */
        if (!r->has_rua)
            return -1;
        pol = MAILAUTH_DMARC_POLICY_NONE;
        spol = -1;
    }
    r->policy = pol;
    r->subdomain_policy = sp && spol >= 0 ? spol : -1;
    if (adkim) {
        if (value_is(adkim, "s"))
            r->is_dkim_strict = true;
        else if (!value_is(adkim, "r"))
            return -1;
    }
    if (aspf) {
        if (value_is(aspf, "s"))
            r->is_spf_strict = true;
        else if (!value_is(aspf, "r"))
            return -1;
    }
    if (pct) {
        unsigned v = 0;
        size_t i = 0;
        for (; i < pct->value_len && pct->value[i] >= '0' && pct->value[i] <= '9' && v <= 100; i++)
            v = v * 10 + (unsigned)(pct->value[i] - '0');
        if (i == 0 || i != pct->value_len || v > 100)
            return -1;
        r->pct = v;
    }
    return 0;
}

/* §3.1: are a and b aligned (strict: equal; relaxed: same organizational domain)? */
static bool dmarc_is_aligned(const char *a, const char *b, bool is_strict)
{
    if (strcasecmp(a, b) == 0)
        return true;
    if (is_strict)
        return false;
    char oa[254], ob[254];
    mailauth_org_domain(a, oa, sizeof oa);
    mailauth_org_domain(b, ob, sizeof ob);
    return strcasecmp(oa, ob) == 0;
}

/* Fetch the DMARC record at _dmarc.<domain>: 1 found, 0 none, -1 temperror. */
static int dmarc_fetch(const struct mailauth_dns *dns, const char *domain,
                       struct mailauth_dns_answer *ans, struct mailauth_dmarc_record *rec)
{
    char name[300];
    snprintf(name, sizeof name, "_dmarc.%s", domain);
    enum mailauth_dns_status st = dns->lookup(dns->ctx, name, MAILAUTH_DNS_TXT, ans);
    if (st == MAILAUTH_DNS_TEMPFAIL)
        return -1;
    if (st == MAILAUTH_DNS_NXDOMAIN)
        return 0;
    /* §6.6.3: records not starting with "v=DMARC1" are discarded; more than one left is
     * no policy at all */
    size_t found = 0;
    for (size_t i = 0; i < ans->n; i++) {
        const char *t = (const char *)ans->rr[i].data;
        if (ans->rr[i].len < 8 || strncasecmp(t, "v=DMARC1", 8) != 0)
            continue;
        struct mailauth_dmarc_record r;
        if (mailauth_dmarc_record_parse(t, ans->rr[i].len, &r) == 0) {
            if (found++ == 0)
                *rec = r;
        } else {
            found += 2; /* a broken v=DMARC1 record also stops discovery */
        }
    }
    return found == 1 ? 1 : 0;
}

void mailauth_dmarc_check(const struct mailauth_dns *dns, const char *from_domain,
                          const struct mailauth_spf_result *spf,
                          const struct mailauth_dkim_result *dkim, size_t n_dkim,
                          struct mailauth_dmarc_result *out)
{
    memset(out, 0, sizeof *out);
    out->policy = MAILAUTH_DMARC_POLICY_NONE;
    out->disposition = MAILAUTH_DMARC_POLICY_NONE;
    if (!from_domain || !from_domain[0]) {
        out->result = MAILAUTH_NONE;
        snprintf(out->reason, sizeof out->reason, "no single From domain");
        return;
    }
    snprintf(out->header_from, sizeof out->header_from, "%s", from_domain);
    char org[254];
    mailauth_org_domain(from_domain, org, sizeof org);
    struct mailauth_dns_answer *ans = calloc(1, sizeof *ans);
    if (!ans) {
        out->result = MAILAUTH_TEMPERROR;
        return;
    }
    struct mailauth_dmarc_record rec;
    int rc = dmarc_fetch(dns, from_domain, ans, &rec);
    bool is_org_record = false;
    if (rc == 0 && strcasecmp(org, from_domain) != 0) {
        rc = dmarc_fetch(dns, org, ans, &rec); /* §6.6.3 step 3 */
        is_org_record = rc == 1;
    }
    free(ans);
    if (rc < 0) {
        out->result = MAILAUTH_TEMPERROR;
        snprintf(out->reason, sizeof out->reason, "DNS lookup failed");
        return;
    }
    if (rc == 0) {
        out->result = MAILAUTH_NONE;
        return;
    }
    out->has_record = true;
    out->record = rec;
    /* §6.6.2: pass when an authenticated identifier is aligned */
    for (size_t i = 0; i < n_dkim; i++) {
        if (dkim[i].result == MAILAUTH_PASS &&
            dmarc_is_aligned(dkim[i].domain, from_domain, rec.is_dkim_strict)) {
            out->is_dkim_aligned = true;
            break;
        }
    }
    if (spf && spf->result == MAILAUTH_PASS && spf->domain[0] &&
        dmarc_is_aligned(spf->domain, from_domain, rec.is_spf_strict))
        out->is_spf_aligned = true;
    /* §6.6.3: the subdomain policy applies when the record came from the org domain */
    out->policy = is_org_record && rec.subdomain_policy >= 0 ? rec.subdomain_policy : rec.policy;
    if (out->is_dkim_aligned || out->is_spf_aligned) {
        out->result = MAILAUTH_PASS;
        return;
    }
    /* a temporary failure of either method makes the verdict temporary, not a fail */
    bool is_temp = spf && spf->result == MAILAUTH_TEMPERROR;
    for (size_t i = 0; i < n_dkim; i++)
        if (dkim[i].result == MAILAUTH_TEMPERROR)
            is_temp = true;
    if (is_temp) {
        out->result = MAILAUTH_TEMPERROR;
        snprintf(out->reason, sizeof out->reason, "SPF or DKIM lookup failed");
        return;
    }
    out->result = MAILAUTH_FAIL;
    out->disposition = out->policy;
    /* §6.6.4 pct: the policy applies to that share of failing mail, the rest is handled
     * one step milder */
    if (rec.pct < 100) {
        uint32_t roll;
        util_random_bytes(&roll, sizeof roll);
        if (roll % 100 >= rec.pct) {
            out->is_sampled_out = true;
            if (out->disposition == MAILAUTH_DMARC_POLICY_REJECT)
                out->disposition = MAILAUTH_DMARC_POLICY_QUARANTINE;
            else
                out->disposition = MAILAUTH_DMARC_POLICY_NONE;
        }
    }
}

const char *mailauth_dmarc_policy_name(int policy)
{
    return policy == MAILAUTH_DMARC_POLICY_REJECT       ? "reject"
           : policy == MAILAUTH_DMARC_POLICY_QUARANTINE ? "quarantine"
                                                        : "none";
}
