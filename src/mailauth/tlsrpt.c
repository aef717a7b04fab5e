/*
 * tlsrpt.c - SMTP TLS Reporting, RFC 8460: the sending side's record of how TLS went with
 * the MX hosts of domains that have an MTA-STS or DANE policy, the _smtp._tls record
 * parser (§3), and the daily aggregate report in the JSON format of §4.
 *
 * The record is one line per session appended to <data_dir>/tlsrpt/<YYYY-MM-DD> (UTC day)
 * with O_APPEND, so the delivery threads need no lock: "domain TAB policy-type TAB
 * result-type TAB mx-host TAB ip" (result-type "success" or an RFC 8460 §4.3 failure
 * type). Reports are best effort: the file is not fsync'd.
 *
 * Budgets: lines of at most 1 KiB, 4096 distinct (domain, result, mx, ip) groups a day.
 *
 * mailauth_tlsrpt_post() submits a report to an https: rua URI (§5.3.1) with libcurl:
 * POST, application/tlsrpt+gzip, the certificate verified, no redirects, 15 s to
 * connect and 60 s in all, the answer's body discarded (at most 64 KiB read).
 */
#include "mailauth/mailauth-private.h"

#include "core/util.h"

#include <curl/curl.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TLSRPT_GROUPS_MAX 4096
#define TLSRPT_POST_TIMEOUT 60
#define TLSRPT_ANSWER_MAX (64 * 1024)

/* Is s safe in a line of the record (no tabs, newlines or control octets)? */
static bool tlsrpt_field_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x21 || *p == 0x7f)
            return false;
    return s[0] != '\0';
}

void mailauth_tlsrpt_day(int64_t when, char *out, size_t size)
{
    time_t t = (time_t)when;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%d", &tm);
}

int mailauth_tlsrpt_record(const char *data_dir, int64_t when, const char *domain,
                           const char *policy_type, const char *result_type, const char *mx,
                           const char *ip)
{
    if (!tlsrpt_field_ok(domain) || !tlsrpt_field_ok(policy_type) ||
        !tlsrpt_field_ok(result_type) || !tlsrpt_field_ok(mx) || !tlsrpt_field_ok(ip))
        return -1;
    char dir[4200], path[4300], day[16];
    snprintf(dir, sizeof dir, "%s/tlsrpt", data_dir);
    mailauth_tlsrpt_day(when, day, sizeof day);
    snprintf(path, sizeof path, "%s/%s", dir, day);
    char line[1100];
    int n = snprintf(line, sizeof line, "%s\t%s\t%s\t%s\t%s\n", domain, policy_type, result_type,
                     mx, ip);
    if (n < 0 || (size_t)n >= sizeof line)
        return -1;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT && util_mkdir_p(dir, 0700) == 0)
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    /* one write of less than PIPE_BUF octets: appended whole even with other threads */
    int rc = write(fd, line, (size_t)n) == n ? 0 : -1;
    close(fd);
    return rc;
}

int mailauth_tlsrpt_record_parse(const char *text, size_t len, char *rua, size_t rua_size)
{
    struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
    size_t n;
    /* §3: "v=TLSRPTv1" first, then rua= (one or more URIs, comma separated) */
    if (mailauth_tags_parse(text, len, tags, &n) < 0 ||
        !mailauth_tags_version_is(tags, n, "TLSRPTv1"))
        return -1;
    const struct mailauth_tag *r = mailauth_tags_find(tags, n, "rua");
    if (!r || r->value_len == 0 || !mailauth_copy_nofws(r->value, r->value_len, rua, rua_size))
        return -1;
    return 0;
}

struct tlsrpt_group {
    char domain[254], policy[16], result[64], mx[256], ip[64];
    unsigned count;
};

/* Append s as a JSON string (quotes added, escapes as RFC 8259 §7). */
static void json_string(struct buf *b, const char *s)
{
    buf_append_byte(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            buf_printf(b, "\\u%04x", *p);
        else
            buf_append_byte(b, (char)*p);
    }
    buf_append_byte(b, '"');
}

int mailauth_tlsrpt_domains(const char *data_dir, const char *day, char ***domains_r, size_t *n_r)
{
    *domains_r = NULL;
    *n_r = 0;
    char path[4300];
    snprintf(path, sizeof path, "%s/tlsrpt/%s", data_dir, day);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    char line[1200];
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        *tab = '\0';
        bool seen = false;
        for (size_t i = 0; i < *n_r && !seen; i++)
            seen = strcasecmp((*domains_r)[i], line) == 0;
        if (seen || *n_r >= TLSRPT_GROUPS_MAX)
            continue;
        if (*n_r == cap) {
            cap = cap ? cap * 2 : 16;
            char **nd = realloc(*domains_r, cap * sizeof *nd);
            if (!nd)
                break;
            *domains_r = nd;
        }
        (*domains_r)[(*n_r)++] = strdup(line);
    }
    fclose(f);
    return 0;
}

int mailauth_tlsrpt_report(const char *data_dir, const char *day, const char *domain,
                           const char *organization, const char *contact, struct buf *json)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/tlsrpt/%s", data_dir, day);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    struct tlsrpt_group *g = calloc(TLSRPT_GROUPS_MAX, sizeof *g);
    size_t n = 0;
    unsigned ok_sts = 0, ok_tlsa = 0, fail_sts = 0, fail_tlsa = 0;
    char line[1200];
    while (g && fgets(line, sizeof line, f)) {
        char *fields[5];
        size_t nf = 0;
        char *save = NULL;
        for (char *t = strtok_r(line, "\t\n", &save); t && nf < 5; t = strtok_r(NULL, "\t\n", &save))
            fields[nf++] = t;
        if (nf != 5 || strcasecmp(fields[0], domain) != 0)
            continue;
        bool is_sts = strcmp(fields[1], "sts") == 0;
        if (strcmp(fields[2], "success") == 0) {
            (*(is_sts ? &ok_sts : &ok_tlsa))++;
            continue;
        }
        (*(is_sts ? &fail_sts : &fail_tlsa))++;
        size_t i = 0;
        for (; i < n; i++)
            if (strcmp(g[i].policy, fields[1]) == 0 && strcmp(g[i].result, fields[2]) == 0 &&
                strcmp(g[i].mx, fields[3]) == 0 && strcmp(g[i].ip, fields[4]) == 0)
                break;
        if (i == n) {
            if (n >= TLSRPT_GROUPS_MAX)
                continue;
            snprintf(g[n].domain, sizeof g[n].domain, "%s", fields[0]);
            snprintf(g[n].policy, sizeof g[n].policy, "%s", fields[1]);
            snprintf(g[n].result, sizeof g[n].result, "%s", fields[2]);
            snprintf(g[n].mx, sizeof g[n].mx, "%s", fields[3]);
            snprintf(g[n].ip, sizeof g[n].ip, "%s", fields[4]);
            n++;
        }
        g[i].count++;
    }
    fclose(f);
    if (!g)
        return -1;
    /* RFC 8460 §4.4 */
    buf_append_str(json, "{\"organization-name\":");
    json_string(json, organization);
    buf_printf(json, ",\"date-range\":{\"start-datetime\":\"%sT00:00:00Z\",\"end-datetime\":"
                     "\"%sT23:59:59Z\"},\"contact-info\":",
               day, day);
    json_string(json, contact);
    buf_append_str(json, ",\"report-id\":");
    char id[600];
    snprintf(id, sizeof id, "%s_%s@%s", day, domain, organization);
    json_string(json, id);
    buf_append_str(json, ",\"policies\":[");
    bool first = true;
    for (int k = 0; k < 2; k++) {
        const char *type = k == 0 ? "sts" : "tlsa";
        unsigned ok = k == 0 ? ok_sts : ok_tlsa, fail = k == 0 ? fail_sts : fail_tlsa;
        if (ok + fail == 0)
            continue;
        buf_printf(json, "%s{\"policy\":{\"policy-type\":\"%s\",\"policy-domain\":", first ? "" : ",",
                   type);
        first = false;
        json_string(json, domain);
        buf_printf(json, "},\"summary\":{\"total-successful-session-count\":%u,"
                         "\"total-failure-session-count\":%u},\"failure-details\":[",
                   ok, fail);
        bool first_d = true;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(g[i].policy, type) != 0)
                continue;
            buf_append_str(json, first_d ? "{\"result-type\":" : ",{\"result-type\":");
            first_d = false;
            json_string(json, g[i].result);
            if (strcmp(g[i].ip, "-") != 0) { /* "-": a failure before any session */
                buf_append_str(json, ",\"receiving-ip\":");
                json_string(json, g[i].ip);
            }
            if (strcmp(g[i].mx, "-") != 0) {
                buf_append_str(json, ",\"receiving-mx-hostname\":");
                json_string(json, g[i].mx);
            }
            buf_printf(json, ",\"failed-session-count\":%u}", g[i].count);
        }
        buf_append_str(json, "]}");
    }
    buf_append_str(json, "]}");
    free(g);
    return 0;
}

/* The receiver's answer body: counted, not kept; past TLSRPT_ANSWER_MAX the transfer
 * stops (the status line is what counts). */
static size_t tlsrpt_discard(char *ptr, size_t size, size_t nmemb, void *arg)
{
    size_t *total = arg;
    *total += size * nmemb;
    return *total > TLSRPT_ANSWER_MAX ? 0 : size * nmemb;
}

int mailauth_tlsrpt_post(const struct mailauth_dns *dns, const char *url, const char *ca_file,
                         const char *body, size_t len, long *status_r, char *err,
                         size_t err_size)
{
    *status_r = 0;
    err[0] = '\0';
    /* §3: the URI's host and port; only https (a plain http: rua is not used) */
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = -1;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        strcasecmp(scheme, "https") != 0) {
        snprintf(err, err_size, "not an https URI");
        curl_free(scheme);
        curl_free(host);
        curl_free(port);
        curl_url_cleanup(u);
        return -1;
    }
    char name[256];
    snprintf(name, sizeof name, "%s", host);
    unsigned p = (unsigned)strtoul(port, NULL, 10);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    struct curl_slist *resolve = NULL, *headers = NULL;
    CURL *curl = mailauth_curl_new(dns, name, p, &resolve, err, err_size);
    if (!curl)
        return -1;
    headers = curl_slist_append(NULL, "Content-Type: application/tlsrpt+gzip");
    size_t answered = 0;
    if (!headers) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (ca_file && ca_file[0])
        curl_easy_setopt(curl, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)TLSRPT_POST_TIMEOUT);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, tlsrpt_discard);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answered);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "Tern TLS-RPT");
    CURLcode cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status_r);
    if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && *status_r >= 200 && *status_r < 300))
        snprintf(err, err_size, "%s", curl_easy_strerror(cc));
    else if (*status_r < 200 || *status_r > 299) /* §5.3.1: success is a 2xx answer */
        snprintf(err, err_size, "HTTP status %ld", *status_r);
    else
        rc = 0;
out:
    curl_slist_free_all(headers);
    curl_slist_free_all(resolve);
    curl_easy_cleanup(curl);
    return rc;
}

