/*
 * tlsrpt.c - sending the daily TLS-RPT aggregate reports (RFC 8460 §5.3): for each domain
 * whose MX hosts we talked to under an MTA-STS or DANE policy on a day (mailauth/tlsrpt.c
 * noted the sessions), look up _smtp._tls.<domain>, build the JSON report, gzip it and
 * queue it as a multipart/report; report-type="tlsrpt" message to every mailto: address
 * of the record, DKIM-signed like our users' mail when the sender domain has keys. HTTPS
 * report URIs are not used (a known gap). A day is marked sent (<day>.sent) once done.
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

int outbound_tlsrpt_send(const struct config *cfg, const struct mailauth_dns *dns,
                         const char *day, unsigned *n_sent_r, char **error_r)
{
    *n_sent_r = 0;
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
    struct mailauth_dns_answer *a = calloc(1, sizeof *a);
    int rc = a ? 0 : -1;
    char contact[300];
    snprintf(contact, sizeof contact, "postmaster@%s", cfg->hostname);
    for (size_t i = 0; a && i < n; i++) {
        char name[300], rua[1024] = "";
        snprintf(name, sizeof name, "_smtp._tls.%s", domains[i]);
        if (dns->lookup(dns->ctx, name, MAILAUTH_DNS_TXT, a) != MAILAUTH_DNS_OK)
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
        /* rua: URIs separated by commas; mailto: ones are ours to use (§3) */
        char *save = NULL;
        for (char *u = strtok_r(rua, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
            if (strncasecmp(u, "mailto:", 7) != 0)
                continue;
            char to[320];
            snprintf(to, sizeof to, "%s", u + 7);
            char *q = strchr(to, '?');
            if (q)
                *q = '\0';
            if (!strchr(to, '@'))
                continue;
            char *err = NULL;
            if (tlsrpt_queue(cfg, day, domains[i], to, &gz, &err) == 0)
                (*n_sent_r)++;
            else
                log_warning("tlsrpt", "cannot queue the TLS report for %s: %s", domains[i],
                            err ? err : "?");
            free(err);
        }
        buf_free(&json);
        buf_free(&gz);
    }
    free(a);
    for (size_t i = 0; i < n; i++)
        free(domains[i]);
    free(domains);
    if (rc == 0) {
        int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    } else {
        *error_r = strdup("out of memory");
    }
    return rc;
}
