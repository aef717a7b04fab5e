/*
 * tlsrpt.c - sending the daily TLS-RPT aggregate reports (RFC 8460 §5.3): for each domain
 * whose MX hosts we talked to under an MTA-STS or DANE policy on a day (mailauth/tlsrpt.c
 * noted the sessions), look up _smtp._tls.<domain>, build the JSON report, gzip it and
 * queue it as a multipart/report; report-type="tlsrpt" message to every mailto: address
 * of the record, DKIM-signed like our users' mail when the sender domain has keys, and
 * POST it to every https: address (§5.3.1, mailauth_tlsrpt_post). Each delivery is noted
 * in <day>.done, so a run after a failed POST (or a DNS failure) delivers only what is
 * missing; the day is marked sent (<day>.sent) once nothing is, or 24 hours after the
 * first attempt (§5.4).
 *
 * BLOCKING: run on a delivery-pool thread (the runner, once a day) or from the CLI.
 */
/* Texts are deliberately cut to their fixed buffers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "queue/outbound.h"

#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "mailauth/mailauth.h"
#include "queue/queue.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* gzip (RFC 1952) of data into out. */
static bool tlsrpt_gzip(const char *data, size_t len, struct buf *out)
{
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    size_t cap = deflateBound(&z, (uLong)len) + 64;
    if (!buf_reserve(out, cap)) {
        deflateEnd(&z);
        return false;
    }
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out->data + out->len;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    out->len += cap - z.avail_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END;
}

/* The epoch seconds of 00:00:00 UTC of day "YYYY-MM-DD". */
static int64_t tlsrpt_day_start(const char *day)
{
    struct tm tm = {0};
    if (sscanf(day, "%d-%d-%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

/* Queue one report for domain to address. 0 or -1. */
static int tlsrpt_queue(const struct config *cfg, const char *day, const char *domain,
                        const char *to, const struct buf *gz, char **error_r)
{
    const char *host = cfg->hostname;
    int64_t start = tlsrpt_day_start(day);
    char id[UTIL_QUEUE_ID_SIZE], date[64], from[320];
    util_queue_id(id);
    util_rfc5322_date(time(NULL), date, sizeof date);
    /* the report comes from postmaster of our host's domain (its DKIM keys sign it) */
    const char *dot = strchr(host, '.');
    snprintf(from, sizeof from, "postmaster@%s", dot ? dot + 1 : host);
    struct buf m;
    buf_init(&m, 0);
    buf_printf(&m,
               "From: TLS reports <%s>\r\nTo: <%s>\r\nDate: %s\r\n"
               "Message-ID: <%s.%s.tlsrpt@%s>\r\n"
               "Subject: Report Domain: %s Submitter: %s Report-ID: <%s_%s@%s>\r\n"
               "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n"
               "MIME-Version: 1.0\r\n"
               "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
               "\tboundary=\"tlsrpt-%s\"\r\n\r\n"
               "--tlsrpt-%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
               "This is an aggregate TLS report (RFC 8460) from %s for %s, %s.\r\n\r\n"
               "--tlsrpt-%s\r\nContent-Type: application/tlsrpt+gzip\r\n"
               "Content-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment;\r\n"
               "\tfilename=\"%s!%s!%lld!%lld.json.gz\"\r\n\r\n",
               from, to, date, day, domain, host, domain, host, day, domain, host, domain, host,
               id, id, host, domain, day, id, host, domain, (long long)start,
               (long long)(start + 86399));
    struct buf b64;
    buf_init(&b64, 0);
    util_base64_encode(gz->data, gz->len, &b64);
    for (size_t i = 0; i < b64.len; i += 76) {
        buf_append(&m, b64.data + i, b64.len - i < 76 ? b64.len - i : 76);
        buf_append(&m, "\r\n", 2);
    }
    buf_free(&b64);
    buf_printf(&m, "--tlsrpt-%s--\r\n", id);
    if (!m.data) {
        *error_r = strdup("out of memory");
        return -1;
    }
    struct buf sigs;
    buf_init(&sigs, 0);
    struct mailauth_message am = {.data = m.data, .len = m.len, .fd = -1};
    char signed_domain[254], *serr = NULL;
    if (mailauth_sign_for_author(cfg->data_dir, &am, (int64_t)time(NULL), &sigs, signed_domain,
                                 sizeof signed_domain, &serr) < 0)
        log_warning("tlsrpt", "report for %s not DKIM-signed: %s", domain, serr ? serr : "?");
    free(serr);
    struct store_source src = {.data = m.data, .len = m.len, .fd = -1, .size = m.len};
    const char *rcpts[1] = {to};
    int rc = queue_enqueue(cfg->data_dir, id, from, rcpts, 1, sigs.data, &src, error_r);
    if (rc == 0)
        log_info("tlsrpt", "%s: TLS report for %s (%s) to <%s>", id, domain, day, to);
    buf_free(&sigs);
    buf_free(&m);
    return rc;
}

/* <day>.done: "first=<epoch>" (the first attempt), then one "<domain> <uri>" line per
 * report delivered (queued for a mailto:, answered 2xx for an https:). */
struct tlsrpt_state {
    char path[4300];
    int64_t first;
    struct buf done; /* the lines after the first, each ending in \n */
};

static void tlsrpt_state_load(struct tlsrpt_state *st, const struct config *cfg, const char *day,
                              int64_t now)
{
    snprintf(st->path, sizeof st->path, "%s/tlsrpt/%s.done", cfg->data_dir, day);
    buf_init(&st->done, 1u << 20);
    st->first = now;
    FILE *f = fopen(st->path, "r");
    if (!f)
        return;
    char line[1400];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "first=", 6) == 0)
            st->first = strtoll(line + 6, NULL, 10);
        else if (strchr(line, '\n'))
            buf_append_str(&st->done, line);
    }
    fclose(f);
}

static bool tlsrpt_state_has(const struct tlsrpt_state *st, const char *domain, const char *uri)
{
    char line[1400];
    snprintf(line, sizeof line, "%s %s\n", domain, uri);
    size_t n = strlen(line);
    for (size_t pos = 0; pos < st->done.len;) {
        const char *nl = memchr(st->done.data + pos, '\n', st->done.len - pos);
        size_t end = nl ? (size_t)(nl - st->done.data) + 1 : st->done.len;
        if (end - pos == n && strncasecmp(st->done.data + pos, line, n) == 0)
            return true;
        pos = end;
    }
    return false;
}

/* Write the file whole (it is small): a temporary file renamed over it. Best effort. */
static void tlsrpt_state_write(const struct tlsrpt_state *st)
{
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp", st->path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "first=%lld\n", (long long)st->first);
    if (st->done.len)
        fwrite(st->done.data, 1, st->done.len, f);
    if (fclose(f) != 0 || rename(tmp, st->path) != 0)
        unlink(tmp);
}

/* Note one delivery. */
static void tlsrpt_state_add(struct tlsrpt_state *st, const char *domain, const char *uri)
{
    buf_printf(&st->done, "%s %s\n", domain, uri);
    tlsrpt_state_write(st);
}

/* Deliver one report to one rua URI: a mailto: is queued, an https: POSTed (§5.3). Returns
 * 1 delivered (queued or posted), 0 to try again on a later run, -1 an URI we do not use. */
static int tlsrpt_deliver(const struct config *cfg, const struct mailauth_dns *dns,
                          const char *day, const char *domain, const char *uri,
                          const struct buf *gz, bool *is_posted_r)
{
    *is_posted_r = false;
    for (const unsigned char *c = (const unsigned char *)uri; *c; c++)
        if (*c < 0x21 || *c >= 0x7f) /* from DNS: nothing that could break a log line or
                                        the .done file */
            return -1;
    if (strncasecmp(uri, "https:", 6) == 0) {
        long status = 0;
        char err[300];
        if (mailauth_tlsrpt_post(dns, uri, cfg->outbound_ca_file, gz->data, gz->len, &status,
                                 err, sizeof err) == 0) {
            log_info("tlsrpt", "TLS report for %s (%s) posted to %s: HTTP %ld", domain, day, uri,
                     status);
            *is_posted_r = true;
            return 1;
        }
        log_warning("tlsrpt", "TLS report for %s (%s) to %s not delivered: %s; tried again "
                              "later", domain, day, uri, err);
        return 0;
    }
    if (strncasecmp(uri, "mailto:", 7) != 0)
        return -1;
    char to[320];
    snprintf(to, sizeof to, "%s", uri + 7);
    char *q = strchr(to, '?');
    if (q)
        *q = '\0';
    if (!strchr(to, '@'))
        return -1;
    char *err = NULL;
    int rc = tlsrpt_queue(cfg, day, domain, to, gz, &err) == 0 ? 1 : 0;
    if (rc == 0)
        log_warning("tlsrpt", "cannot queue the TLS report for %s: %s; tried again later", domain,
                    err ? err : "?");
    free(err);
    return rc;
}

int outbound_tlsrpt_send(const struct config *cfg, const struct mailauth_dns *dns,
                         const char *day, struct outbound_tlsrpt_counts *counts, char **error_r)
{
    memset(counts, 0, sizeof *counts);
    char marker[4300];
    snprintf(marker, sizeof marker, "%s/tlsrpt/%s.sent", cfg->data_dir, day);
    if (access(marker, F_OK) == 0)
        return 0; /* sent before */
    char **domains;
    size_t n;
    if (mailauth_tlsrpt_domains(cfg->data_dir, day, &domains, &n) < 0) {
        *error_r = strdup("cannot read the TLS-RPT record");
        return -1;
    }
    int64_t now = (int64_t)time(NULL);
    struct tlsrpt_state st;
    tlsrpt_state_load(&st, cfg, day, now);
    struct mailauth_dns_answer *a = calloc(1, sizeof *a);
    int rc = a ? 0 : -1;
    char contact[300];
    snprintf(contact, sizeof contact, "postmaster@%s", cfg->hostname);
    for (size_t i = 0; a && i < n; i++) {
        char name[300], rua[1024] = "";
        snprintf(name, sizeof name, "_smtp._tls.%s", domains[i]);
        enum mailauth_dns_status ds = dns->lookup(dns->ctx, name, MAILAUTH_DNS_TXT, a);
        if (ds == MAILAUTH_DNS_TEMPFAIL) {
            counts->pending++; /* the record may be there: ask again on a later run */
            continue;
        }
        if (ds != MAILAUTH_DNS_OK)
            continue; /* no record: the domain asked for no reports */
        for (size_t k = 0; k < a->n && !rua[0]; k++)
            if (mailauth_tlsrpt_record_parse((const char *)a->rr[k].data, a->rr[k].len, rua,
                                             sizeof rua) < 0)
                rua[0] = '\0';
        if (!rua[0])
            continue;
        struct buf json, gz;
        buf_init(&json, 0);
        buf_init(&gz, 0);
        if (mailauth_tlsrpt_report(cfg->data_dir, day, domains[i], cfg->hostname, contact,
                                   &json) < 0 ||
            !json.data || !tlsrpt_gzip(json.data, json.len, &gz)) {
            buf_free(&json);
            buf_free(&gz);
            continue;
        }
        /* rua: URIs separated by commas (§3), each delivered once */
        char *save = NULL;
        for (char *u = strtok_r(rua, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
            if (tlsrpt_state_has(&st, domains[i], u))
                continue;
            bool is_posted;
            int d = tlsrpt_deliver(cfg, dns, day, domains[i], u, &gz, &is_posted);
            if (d == 1) {
                tlsrpt_state_add(&st, domains[i], u);
                (*(is_posted ? &counts->posted : &counts->queued))++;
            } else if (d == 0) {
                counts->pending++;
            }
        }
        buf_free(&json);
        buf_free(&gz);
    }
    free(a);
    for (size_t i = 0; i < n; i++)
        free(domains[i]);
    free(domains);
    /* RFC 8460 §5.4: retry for up to 24 hours after the first attempt, then give up */
    if (rc == 0 && counts->pending && now - st.first >= 86400) {
        log_warning("tlsrpt", "TLS reports of %s: %u not delivered within 24 hours of the first "
                              "attempt: given up", day, counts->pending);
        counts->pending = 0;
    }
    if (rc == 0 && counts->pending == 0) {
        int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    } else if (rc == 0 && st.done.len == 0) {
        tlsrpt_state_write(&st); /* remember when the first attempt was */
    } else if (rc < 0) {
        *error_r = strdup("out of memory");
    }
    buf_free(&st.done);
    return rc;
}
