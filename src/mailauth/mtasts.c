/*
 * mtasts.c - SMTP MTA Strict Transport Security, RFC 8461, for the outbound client: the
 * _mta-sts TXT record (§3.1), the policy file and its parser (§3.2), MX pattern matching
 * (§4.1), the policy fetch over HTTPS with libcurl (§3.3: validated certificate, no
 * redirects, a size cap, a timeout) and a process-wide policy cache (§5.1).
 *
 * Budgets: policy files of at most 64 KiB (§3.2), 32 mx patterns, fetches of at most
 * 60 s in all (RFC 8461 §3.3 suggests one minute), at most 256 cached domains.
 * The cache is kept in memory and, when a folder is given, on disk (<dir>/<domain>: "id=",
 * "expires=" lines, then the policy text), so that a restart does not open the window a
 * missing policy gives an attacker who blocks the policy fetch (§5.1, §10.2).
 */
/* Log texts and errors are deliberately cut to their fixed buffers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "mailauth/mailauth-private.h"

#include "core/util.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STS_POLICY_MAX   65536
#define STS_FETCH_TIMEOUT 60
#define STS_CACHE_SIZE   256

int mailauth_sts_record_parse(const char *text, size_t len, char *id_r, size_t id_size)
{
    struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
    size_t n;
    /* §3.1: "v=STSv1" first, then id= (1*32 alphanumerics); other tags are ignored */
    if (mailauth_tags_parse(text, len, tags, &n) < 0 || !mailauth_tags_version_is(tags, n, "STSv1"))
        return -1;
    const struct mailauth_tag *id = mailauth_tags_find(tags, n, "id");
    if (!id || id->value_len == 0 || id->value_len > 32 || id->value_len >= id_size)
        return -1;
    for (size_t i = 0; i < id->value_len; i++) {
        char c = id->value[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return -1;
    }
    memcpy(id_r, id->value, id->value_len);
    id_r[id->value_len] = '\0';
    return 0;
}

int mailauth_sts_policy_parse(const char *text, size_t len, struct mailauth_sts_policy *p)
{
    memset(p, 0, sizeof *p);
    bool has_version = false, has_mode = false, has_age = false;
    size_t pos = 0;
    if (len > STS_POLICY_MAX)
        return -1;
    /* §3.2: "key: value" lines, CRLF or LF; unknown keys are ignored */
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t a = pos, b = end;
        pos = nl ? end + 1 : len;
        if (b > a && text[b - 1] == '\r')
            b--;
        const char *colon = memchr(text + a, ':', b - a);
        if (!colon)
            continue;
        size_t kl = (size_t)(colon - (text + a));
        const char *v = colon + 1;
        size_t vl = (size_t)(text + b - v);
        while (vl && (*v == ' ' || *v == '\t')) {
            v++;
            vl--;
        }
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        if (kl == 7 && strncmp(text + a, "version", 7) == 0) {
            if (vl != 5 || strncmp(v, "STSv1", 5) != 0)
                return -1;
            has_version = true;
        } else if (kl == 4 && strncmp(text + a, "mode", 4) == 0) {
            if (vl == 7 && strncmp(v, "enforce", 7) == 0)
                p->mode = MAILAUTH_STS_ENFORCE;
            else if (vl == 7 && strncmp(v, "testing", 7) == 0)
                p->mode = MAILAUTH_STS_TESTING;
            else if (vl == 4 && strncmp(v, "none", 4) == 0)
                p->mode = MAILAUTH_STS_NONE;
            else
                return -1;
            has_mode = true;
        } else if (kl == 7 && strncmp(text + a, "max_age", 7) == 0) {
            uint64_t age = 0;
            if (vl == 0 || vl > 10)
                return -1;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return -1;
                age = age * 10 + (uint64_t)(v[i] - '0');
            }
            /* §3.2: at most 31557600 seconds (a year) */
            p->max_age = age > 31557600 ? 31557600 : (int64_t)age;
            has_age = true;
        } else if (kl == 2 && strncmp(text + a, "mx", 2) == 0) {
            if (p->n_mx >= MAILAUTH_STS_MX_MAX || vl == 0 || vl >= sizeof p->mx[0])
                return -1;
            memcpy(p->mx[p->n_mx], v, vl);
            p->mx[p->n_mx][vl] = '\0';
            util_ascii_lower(p->mx[p->n_mx]);
            p->n_mx++;
        }
    }
    /* §3.2: version, mode and max_age are required; mx at least once unless mode none */
    if (!has_version || !has_mode || !has_age || (p->mode != MAILAUTH_STS_NONE && p->n_mx == 0))
        return -1;
    return 0;
}

bool mailauth_sts_mx_matches(const struct mailauth_sts_policy *p, const char *mx)
{
    char host[256];
    snprintf(host, sizeof host, "%s", mx);
    util_ascii_lower(host);
    size_t hl = strlen(host);
    if (hl && host[hl - 1] == '.')
        host[--hl] = '\0';
    for (size_t i = 0; i < p->n_mx; i++) {
        const char *pat = p->mx[i];
        if (pat[0] == '*' && pat[1] == '.') {
            /* §4.1: a wildcard matches exactly one leftmost label */
            const char *dot = strchr(host, '.');
            if (dot && dot != host && strcmp(dot + 1, pat + 2) == 0)
                return true;
        } else if (strcmp(host, pat) == 0) {
            return true;
        }
    }
    return false;
}

/* ---- the fetch --------------------------------------------------------------------------- */

struct fetch_buf {
    char *data;
    size_t len;
    bool is_too_big;
};

static size_t fetch_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct fetch_buf *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > STS_POLICY_MAX) {
        b->is_too_big = true;
        return 0; /* aborts the transfer */
    }
    char *d = realloc(b->data, b->len + n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, ptr, n);
    b->data = d;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void *mailauth_curl_new(const struct mailauth_dns *dns, const char *host, unsigned port,
                        struct curl_slist **resolve_r, char *err, size_t err_size)
{
    pthread_once(&curl_once, curl_init_once);
    *resolve_r = NULL;
    struct mailauth_dns_answer *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    char ip[64] = "";
    unsigned char literal[16];
    /* an address literal ("192.0.2.1", "[2001:db8::1]") needs no lookup */
    bool is_literal = host[0] == '[' || inet_pton(AF_INET, host, literal) == 1;
    if (is_literal)
        snprintf(ip, sizeof ip, "%s", host);
    for (int t = 0; t < 2 && !ip[0]; t++) {
        int type = t == 0 ? MAILAUTH_DNS_A : MAILAUTH_DNS_AAAA;
        if (dns->lookup(dns->ctx, host, type, a) == MAILAUTH_DNS_OK && a->n > 0)
            inet_ntop(type == MAILAUTH_DNS_A ? AF_INET : AF_INET6, a->rr[0].data, ip, sizeof ip);
    }
    free(a);
    if (!ip[0]) {
        snprintf(err, err_size, "no address for %s", host);
        return NULL;
    }
    char resolve[400];
    snprintf(resolve, sizeof resolve, strchr(ip, ':') ? "%s:%u:[%s]" : "%s:%u:%s", host, port, ip);
    CURL *curl = curl_easy_init();
    *resolve_r = curl_slist_append(NULL, resolve);
    if (!curl || !*resolve_r) {
        snprintf(err, err_size, "out of memory");
        if (curl)
            curl_easy_cleanup(curl);
        curl_slist_free_all(*resolve_r);
        *resolve_r = NULL;
        return NULL;
    }
    if (!is_literal)
        curl_easy_setopt(curl, CURLOPT_RESOLVE, *resolve_r);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    return curl;
}

int mailauth_sts_fetch(const struct mailauth_dns *dns, const struct mailauth_sts_opts *o,
                       const char *domain, struct mailauth_sts_policy *p, char *err,
                       size_t err_size)
{
    char host[300];
    snprintf(host, sizeof host, "mta-sts.%s", domain);
    unsigned port = o->https_port ? o->https_port : 443;
    char url[400];
    snprintf(url, sizeof url, "https://%s:%u/.well-known/mta-sts.txt", host, port);
    struct curl_slist *res;
    CURL *curl = mailauth_curl_new(dns, host, port, &res, err, err_size);
    struct fetch_buf body = {0};
    int rc = -1;
    if (!curl)
        goto out;
    /* §3.3: no redirects (mailauth_curl_new), a validated certificate */
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (o->ca_file && o->ca_file[0])
        curl_easy_setopt(curl, CURLOPT_CAINFO, o->ca_file);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)STS_FETCH_TIMEOUT);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "Tern MTA-STS");
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    char *ctype = NULL;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ctype);
    if (cc != CURLE_OK) {
        snprintf(err, err_size, "%s", body.is_too_big ? "policy larger than 64 KiB"
                                                      : curl_easy_strerror(cc));
    } else if (status != 200) {
        snprintf(err, err_size, "HTTP status %ld", status);
    } else if (!ctype || strncasecmp(ctype, "text/plain", 10) != 0) {
        /* §3.3: the media type is text/plain */
        snprintf(err, err_size, "policy served as %s, not text/plain", ctype ? ctype : "?");
    } else if (mailauth_sts_policy_parse(body.data ? body.data : "", body.len, p) < 0) {
        snprintf(err, err_size, "invalid policy");
    } else {
        rc = 0;
    }
out:
    curl_slist_free_all(res);
    if (curl)
        curl_easy_cleanup(curl);
    free(body.data);
    return rc;
}

/* ---- the cache (§5.1) ------------------------------------------------------------------- */

struct sts_entry {
    char domain[254];
    char id[33];
    struct mailauth_sts_policy policy;
    int64_t expires;
    uint64_t used;
};
static struct sts_entry sts_cache[STS_CACHE_SIZE];
static uint64_t sts_clock;
static pthread_mutex_t sts_lock = PTHREAD_MUTEX_INITIALIZER;

/* The policy as its file text (what sts_disk_put stores and the parser reads back). */
static void sts_policy_text(const struct mailauth_sts_policy *p, struct buf *out)
{
    static const char *const modes[] = {"none", "testing", "enforce"};
    buf_printf(out, "version: STSv1\nmode: %s\n", modes[p->mode]);
    for (size_t i = 0; i < p->n_mx; i++)
        buf_printf(out, "mx: %s\n", p->mx[i]);
    buf_printf(out, "max_age: %lld\n", (long long)p->max_age);
}

/* Store an entry on disk: a temporary file renamed over the old one. Best effort. */
static void sts_disk_put(const char *dir, const struct sts_entry *e)
{
    if (!dir || !dir[0] || !mailauth_keys_is_valid_name(e->domain, sizeof e->domain))
        return;
    char path[4400], tmp[4500];
    snprintf(path, sizeof path, "%s/%s", dir, e->domain);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "id=%s\nexpires=%lld\n", e->id, (long long)e->expires);
    sts_policy_text(&e->policy, &b);
    if (!b.data || util_mkdir_p(dir, 0700) < 0) {
        buf_free(&b);
        return;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        bool ok = util_write_all(fd, b.data, b.len) == 0;
        close(fd);
        if (!ok || rename(tmp, path) < 0)
            unlink(tmp);
    }
    buf_free(&b);
}

/* Read domain's entry from disk into *e: true when there is a valid one. */
static bool sts_disk_get(const char *dir, const char *domain, struct sts_entry *e)
{
    if (!dir || !dir[0] || !mailauth_keys_is_valid_name(domain, 254))
        return false;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, domain);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char text[STS_POLICY_MAX + 200];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return false;
    text[n] = '\0';
    memset(e, 0, sizeof *e);
    char *nl1 = strchr(text, '\n');
    char *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
    if (!nl2 || strncmp(text, "id=", 3) != 0 || strncmp(nl1 + 1, "expires=", 8) != 0)
        return false;
    *nl1 = '\0';
    snprintf(e->id, sizeof e->id, "%s", text + 3);
    e->expires = strtoll(nl1 + 9, NULL, 10);
    snprintf(e->domain, sizeof e->domain, "%s", domain);
    return mailauth_sts_policy_parse(nl2 + 1, (size_t)(text + n - (nl2 + 1)), &e->policy) == 0;
}

static bool sts_cache_get(const char *domain, int64_t now, struct sts_entry *out)
{
    bool found = false;
    pthread_mutex_lock(&sts_lock);
    for (size_t i = 0; i < STS_CACHE_SIZE; i++) {
        struct sts_entry *e = &sts_cache[i];
        if (e->domain[0] && strcasecmp(e->domain, domain) == 0) {
            if (e->expires > now) {
                e->used = ++sts_clock;
                *out = *e;
                found = true;
            } else {
                e->domain[0] = '\0'; /* expired */
            }
            break;
        }
    }
    pthread_mutex_unlock(&sts_lock);
    return found;
}

static void sts_cache_put(const char *domain, const char *id,
                          const struct mailauth_sts_policy *p, int64_t expires)
{
    pthread_mutex_lock(&sts_lock);
    struct sts_entry *slot = &sts_cache[0];
    for (size_t i = 0; i < STS_CACHE_SIZE; i++) {
        struct sts_entry *e = &sts_cache[i];
        if (e->domain[0] && strcasecmp(e->domain, domain) == 0) {
            slot = e;
            break;
        }
        if (!e->domain[0] || e->used < slot->used)
            slot = e;
    }
    snprintf(slot->domain, sizeof slot->domain, "%s", domain);
    snprintf(slot->id, sizeof slot->id, "%s", id);
    slot->policy = *p;
    slot->expires = expires;
    slot->used = ++sts_clock;
    pthread_mutex_unlock(&sts_lock);
}

void mailauth_sts_cache_clear(void)
{
    pthread_mutex_lock(&sts_lock);
    memset(sts_cache, 0, sizeof sts_cache);
    pthread_mutex_unlock(&sts_lock);
}

enum mailauth_sts_status mailauth_sts_get(const struct mailauth_dns *dns,
                                          const struct mailauth_sts_opts *o, const char *domain,
                                          int64_t now, struct mailauth_sts_policy *p, char *err,
                                          size_t err_size)
{
    err[0] = '\0';
    struct sts_entry cached;
    bool has_cached = sts_cache_get(domain, now, &cached);
    if (!has_cached && sts_disk_get(o->cache_dir, domain, &cached) && cached.expires > now) {
        /* a policy from before a restart */
        has_cached = true;
        sts_cache_put(domain, cached.id, &cached.policy, cached.expires);
    }
    char name[300];
    snprintf(name, sizeof name, "_mta-sts.%s", domain);
    struct mailauth_dns_answer *a = calloc(1, sizeof *a);
    if (!a)
        return has_cached ? (*p = cached.policy, MAILAUTH_STS_FOUND) : MAILAUTH_STS_NO_POLICY;
    enum mailauth_dns_status st = dns->lookup(dns->ctx, name, MAILAUTH_DNS_TXT, a);
    char id[33] = "";
    size_t n_records = 0;
    for (size_t i = 0; st == MAILAUTH_DNS_OK && i < a->n; i++) {
        const char *t = (const char *)a->rr[i].data;
        if (a->rr[i].len >= 7 && strncmp(t, "v=STSv1", 7) == 0) {
            n_records++;
            if (mailauth_sts_record_parse(t, a->rr[i].len, id, sizeof id) < 0)
                id[0] = '\0';
        }
    }
    free(a);
    /* §3.1: several records, or a broken one, count as no record */
    if (st != MAILAUTH_DNS_OK || n_records != 1 || !id[0]) {
        if (has_cached) {
            /* §5.1: a cached policy stays in force until it expires (a DNS failure or a
             * removed record is what an attacker would produce) */
            *p = cached.policy;
            return MAILAUTH_STS_FOUND;
        }
        if (st == MAILAUTH_DNS_TEMPFAIL)
            snprintf(err, err_size, "_mta-sts lookup failed");
        return MAILAUTH_STS_NO_POLICY;
    }
    if (has_cached && strcmp(cached.id, id) == 0) {
        *p = cached.policy;
        return MAILAUTH_STS_FOUND;
    }
    if (mailauth_sts_fetch(dns, o, domain, p, err, err_size) < 0) {
        if (has_cached) {
            *p = cached.policy; /* §5.1: keep the old policy when the new one cannot be had */
            return MAILAUTH_STS_FOUND;
        }
        return MAILAUTH_STS_FETCH_FAILED;
    }
    sts_cache_put(domain, id, p, now + p->max_age);
    struct sts_entry e = {.expires = now + p->max_age, .policy = *p};
    snprintf(e.domain, sizeof e.domain, "%s", domain);
    snprintf(e.id, sizeof e.id, "%s", id);
    sts_disk_put(o->cache_dir, &e);
    return MAILAUTH_STS_FOUND;
}
