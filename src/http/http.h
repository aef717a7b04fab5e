/*
 * http.h - the smallest HTTPS server that serves our MTA-STS policy file (RFC 8461 §3.3),
 * so that an admin needs no separate web server for it (Postfix and Dovecot do).
 *
 * Two parts:
 * - http_request_parse(): a strict HTTP/1.1 request-head parser (RFC 9112 §2-§5) over a
 *   byte range, pure, linear in its input, bounded (HTTP_HEAD_MAX octets, HTTP_FIELDS_MAX
 *   fields, HTTP_TARGET_MAX octets of target). It accepts only what a conforming client
 *   sends: CRLF line ends (a bare CR or LF is an error), no white space before a field's
 *   colon, no obsolete line folding, exactly one Host for HTTP/1.1, one Content-Length at
 *   most, no control octets. Errors carry the status to answer.
 * - http_mtasts_protocol: the conn protocol of the mta_sts.listen role (implicit TLS,
 *   core/conn.h). One request per connection: GET or HEAD of
 *   /.well-known/mta-sts.txt for Host mta-sts.<domain>, where <domain> is a domain of the
 *   directory (asked in a job: auth_domain_is_local), answered with the policy text
 *   (http_mtasts_policy: mta_sts.mode, mta_sts.mx, mta_sts.max_age) as text/plain;
 *   anything else gets 404, 405, 4xx or 5xx. The connection closes after the answer
 *   ("Connection: close"; pipelined requests are never read), so one client cannot keep
 *   a slot with keep-alive; a request must arrive within HTTP_READ_TIMEOUT of the last
 *   octet and the whole exchange within HTTP_CONN_DEADLINE (core/conn.c arms both).
 *
 * Where it runs: in the processes that own the listeners (the login processes, chrooted
 * and unprivileged, or the only process with master_process = no). It needs nothing a
 * login process lacks: the policy comes from the configuration, the certificate from
 * the TLS context (SNI, core/tls.h), the domain check from the auth process.
 *
 * Thread rules: the protocol callbacks run on the loop thread; the domain check's work
 * function sees only its job (core/job.h). The parser and http_mtasts_policy() are pure
 * and may run anywhere.
 */
#ifndef TERN_HTTP_HTTP_H
#define TERN_HTTP_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct buf;
struct config;
struct conn_protocol;

#define HTTP_HEAD_MAX     8192 /* request line and header section, CRLFs included */
#define HTTP_LINE_MAX     2048 /* the request line */
#define HTTP_TARGET_MAX   1024 /* the request target (RFC 9112 §3: 8000 recommended; we
                                  serve one short path) */
#define HTTP_FIELDS_MAX   64   /* header fields */
#define HTTP_READ_TIMEOUT  10  /* seconds of silence before 408 and close */
#define HTTP_CONN_DEADLINE 30  /* seconds for handshake, request and answer in all */

#define HTTP_MTA_STS_PATH "/.well-known/mta-sts.txt"

enum http_parse_status {
    HTTP_PARSE_INCOMPLETE, /* the head has not ended yet and is below HTTP_HEAD_MAX */
    HTTP_PARSE_DONE,       /* *r holds the request; r->head_len octets were its head */
    HTTP_PARSE_ERROR,      /* r->status is the answer (400, 413, 414, 431, 501, 505) */
};

struct http_request {
    char method[16];                  /* as sent (methods are case-sensitive) */
    char path[HTTP_TARGET_MAX + 1];   /* origin-form path and query, or the path of an
                                         absolute-form target */
    char host[256];                   /* lower case, without port or trailing dot; "" none */
    unsigned version_minor;           /* HTTP/1.<minor>: 0 or 1 */
    unsigned long long content_length; /* 0 when absent */
    bool has_transfer_encoding;
    size_t head_len;                  /* DONE: octets of the head, final CRLF included */
    int status;                       /* ERROR: the status code to answer */
    const char *reason;               /* ERROR: why, for the log (static) */
};

/* Where the head ends in data (the offset just past its CRLF CRLF), searching from
 * `from` on (a caller that got more input passes what it searched before), or 0 when it
 * has not ended. *has_bare_lf_r is set when a line so far ends in LF without CR (the
 * head can never end well: answer 400 at once). Linear. */
size_t http_head_end(const char *data, size_t len, size_t from, bool *has_bare_lf_r);

/* Parse one request head from data[0..len). Pure; reads at most HTTP_HEAD_MAX octets. */
enum http_parse_status http_request_parse(const char *data, size_t len, struct http_request *r);

/* The reason phrase of a status code we send. */
const char *http_status_text(int status);

/* Append our MTA-STS policy file (RFC 8461 §3.2: CRLF-separated "key: value" lines) as
 * the configuration gives it: mta_sts.mode, one mx line per mta_sts.mx item (the host
 * name when empty), mta_sts.max_age. `tern dns records` prints the same text and derives
 * the _mta-sts id from it. */
void http_mtasts_policy(const struct config *cfg, struct buf *out);

/* The conn protocol of the mta_sts.listen role. */
extern const struct conn_protocol http_mtasts_protocol;

#endif
