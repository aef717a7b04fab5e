/*
 * mtasts.c - the mta_sts.listen role (see http.h): one HTTPS request per connection,
 * answered with our MTA-STS policy file for mta-sts.<one of our domains>, 404 otherwise.
 *
 * A session: read until the request head ends (http_head_end, remembering how far it
 * searched so a head that trickles in is not searched again from the start), parse it,
 * and either answer at once (an error, a method or path we do not serve) or ask the
 * directory in a job whether the Host's domain is ours, then answer; then close. Input
 * that follows the head (a pipelined second request, a body) is never read.
 *
 * Log: one line per request, `tern/mta-sts[pid]: GET /.well-known/mta-sts.txt
 * host=mta-sts.example.org client=[192.0.2.1]: 200`.
 */
#include "http/http.h"

#include "auth/auth.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/job.h"
#include "core/log.h"

#include <event2/buffer.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_NAME "mta-sts"

struct http_session {
    struct conn *c;
    uint64_t handle;  /* job.h: the domain check finds us again by it */
    size_t searched;  /* octets of input already searched for the head's end */
    bool is_answered; /* the answer is queued; the connection closes after it */
};

/* The domain check: is <domain> of "mta-sts.<domain>" in the directory? */
struct http_domain_job {
    struct job job;
    struct auth_service *auth;
    char domain[254];
    char method[16];
    bool is_head;
    int is_local; /* auth_domain_is_local: 1, 0, or -1 (could not answer) */
};

void http_mtasts_policy(const struct config *cfg, struct buf *out)
{
    /* RFC 8461 §3.2: "version" first; CRLF-separated lines */
    buf_printf(out, "version: STSv1\r\nmode: %s\r\n", cfg->mta_sts_mode);
    if (cfg->mta_sts_mx.n == 0)
        buf_printf(out, "mx: %s\r\n", cfg->hostname);
    for (size_t i = 0; i < cfg->mta_sts_mx.n; i++)
        buf_printf(out, "mx: %s\r\n", cfg->mta_sts_mx.items[i]);
    buf_printf(out, "max_age: %u\r\n", cfg->mta_sts_max_age);
}

/* Queue the answer and close after it. body may be NULL (error answers say their reason
 * phrase); is_head: the headers only (RFC 9110 §9.3.2). */
static void http_answer(struct http_session *s, int status, const char *body, size_t body_len,
                        bool is_head)
{
    char fallback[64];
    if (!body) {
        body_len = (size_t)snprintf(fallback, sizeof fallback, "%s\n", http_status_text(status));
        body = fallback;
    }
    /* RFC 9110 §6.6.1: an origin server with a clock sends Date (IMF-fixdate, UTC) */
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
             tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
    /* RFC 9112 §9.6: we close after this answer, and say so */
    conn_printf(s->c,
                "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                status, http_status_text(status), date, body_len,
                status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!is_head)
        conn_write(s->c, body, body_len);
    s->is_answered = true;
    conn_close(s->c);
}

/* The policy, or 404/503, once the directory said whether the domain is ours. */
static void http_answer_policy(struct http_session *s, const char *method, const char *host,
                               int is_local, bool is_head)
{
    const struct config *cfg = conn_server(s->c)->cfg;
    int status = is_local > 0 ? 200 : is_local == 0 ? 404 : 503;
    log_info(LOG_NAME, "%s " HTTP_MTA_STS_PATH " host=%s client=[%s]: %d%s", method, host,
             conn_peer_ip(s->c), status, is_local < 0 ? " (directory unavailable)" : "");
    if (status != 200) {
        http_answer(s, status, NULL, 0, is_head);
        return;
    }
    struct buf policy;
    buf_init(&policy, 0);
    http_mtasts_policy(cfg, &policy);
    if (!policy.data) {
        http_answer(s, 503, NULL, 0, is_head);
    } else {
        http_answer(s, 200, policy.data, policy.len, is_head);
    }
    buf_free(&policy);
}

static void http_domain_work(struct job *job)
{
    struct http_domain_job *j = (struct http_domain_job *)job;
    j->is_local = auth_domain_is_local(j->auth, j->domain);
}

static void http_domain_done(void *session, struct job *job)
{
    struct http_domain_job *j = (struct http_domain_job *)job;
    struct http_session *s = session;
    if (s) {
        char host[270];
        snprintf(host, sizeof host, "mta-sts.%s", j->domain);
        http_answer_policy(s, j->method, host, j->job.was_cancelled ? -1 : j->is_local, j->is_head);
    }
    free(j);
}

/* A complete, well-formed request: answer what is not ours at once, ask the directory
 * about the rest. */
static void http_serve(struct http_session *s, const struct http_request *r)
{
    bool is_head = strcmp(r->method, "HEAD") == 0;
    int status = 0;
    /* RFC 8461 §3.3: "https://mta-sts.<domain>/.well-known/mta-sts.txt"; no query */
    if (!is_head && strcmp(r->method, "GET") != 0)
        status = 405;
    else if (strcmp(r->path, HTTP_MTA_STS_PATH) != 0 || strncmp(r->host, "mta-sts.", 8) != 0 ||
             r->host[8] == '\0' || r->host[8] == '[')
        status = 404;
    const struct server_context *ctx = conn_server(s->c);
    if (status == 0 && !ctx->auth)
        status = 503;
    if (status) {
        log_info(LOG_NAME, "%s %.200s host=%s client=[%s]: %d", r->method, r->path,
                 r->host[0] ? r->host : "-", conn_peer_ip(s->c), status);
        http_answer(s, status, NULL, 0, is_head);
        return;
    }
    struct http_domain_job *j = calloc(1, sizeof *j);
    if (!j) {
        http_answer(s, 503, NULL, 0, is_head);
        return;
    }
    job_init(&j->job, s->handle, http_domain_work, http_domain_done);
    j->auth = ctx->auth;
    snprintf(j->domain, sizeof j->domain, "%s", r->host + 8);
    snprintf(j->method, sizeof j->method, "%s", r->method);
    j->is_head = is_head;
    conn_pause_read(s->c);
    job_submit(ctx->pool, &j->job);
}

static void *http_open(struct conn *c)
{
    struct http_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->c = c;
    s->handle = job_session_add(s);
    return s;
}

static void http_on_read(void *session, struct conn *c)
{
    struct http_session *s = session;
    struct evbuffer *in = conn_input(c);
    size_t len = evbuffer_get_length(in);
    if (s->is_answered) { /* what follows the request is never read */
        evbuffer_drain(in, len);
        return;
    }
    size_t n = len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX;
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    if (!data)
        return;
    bool is_line_too_long = n >= HTTP_LINE_MAX && !memchr(data, '\n', HTTP_LINE_MAX);
    bool has_bare_lf;
    if (n < HTTP_HEAD_MAX && !is_line_too_long &&
        http_head_end(data, n, s->searched, &has_bare_lf) == 0 && !has_bare_lf) {
        s->searched = n;
        return; /* wait for the rest of the head */
    }
    struct http_request r;
    enum http_parse_status st = http_request_parse(data, n, &r);
    if (st == HTTP_PARSE_INCOMPLETE) {
        s->searched = n;
        return;
    }
    evbuffer_drain(in, len);
    if (st == HTTP_PARSE_ERROR) {
        log_info(LOG_NAME, "bad request from [%s]: %s: %d", conn_peer_ip(c), r.reason, r.status);
        http_answer(s, r.status, NULL, 0, false);
        return;
    }
    http_serve(s, &r);
}

static void http_on_timeout(void *session, struct conn *c)
{
    struct http_session *s = session;
    if (s->is_answered)
        return;
    log_info(LOG_NAME, "timeout: no complete request from [%s]", conn_peer_ip(c));
    http_answer(s, 408, NULL, 0, false);
}

static void http_close(void *session, const char *reason)
{
    struct http_session *s = session;
    job_session_remove(s->handle);
    free(s);
}

const struct conn_protocol http_mtasts_protocol = {
    .log_name = LOG_NAME,
    .open = http_open,
    .on_read = http_on_read,
    .on_timeout = http_on_timeout,
    .close = http_close,
};
