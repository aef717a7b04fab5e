/*
 * client.c - the outbound SMTP client: one session to one address delivering one
 * message (RFC 5321), with EHLO (HELO fallback), opportunistic or required STARTTLS
 * (RFC 3207), AUTH PLAIN/LOGIN to a smarthost (RFC 4954), PIPELINING (RFC 2920),
 * SIZE (RFC 1870) and 8BITMIME (RFC 6152), and per-recipient results.
 *
 * Blocking with timeouts, run in a delivery thread (see outbound.h for why). Every wait
 * is a poll() of at most one second so a server shutdown interrupts a slow peer at once.
 * Replies are parsed by a pure function (outbound_reply_parse) over a bounded buffer.
 */
/* Log and reply texts are deliberately cut to their fixed buffers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "mailauth/mailauth.h"
#include "queue/outbound.h"
#include "queue/queue.h"

#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CLIENT_MAX_LINE      2048 /* longer reply lines are a protocol error */
#define CLIENT_MAX_LINES     100  /* lines per reply */
#define CLIENT_CONNECT_LIMIT 30   /* seconds for the TCP connect */

/* ---- reply parsing (pure) ------------------------------------------------------------ */

/* RFC 3463: "class.subject.detail" at the start of text, class 2/4/5 matching the code. */
static void reply_enhanced(const char *t, size_t len, int code, char *out, size_t size)
{
    out[0] = '\0';
    if (len < 5 || t[0] != '0' + code / 100 || t[1] != '.')
        return;
    size_t i = 2, digits = 0;
    while (i < len && t[i] >= '0' && t[i] <= '9' && digits < 3)
        i++, digits++;
    if (digits == 0 || i >= len || t[i] != '.')
        return;
    i++;
    digits = 0;
    while (i < len && t[i] >= '0' && t[i] <= '9' && digits < 3)
        i++, digits++;
    if (digits == 0 || (i < len && t[i] != ' '))
        return;
    if (i >= size)
        return;
    memcpy(out, t, i);
    out[i] = '\0';
}

int outbound_reply_parse(const char *data, size_t len, struct outbound_reply *r, size_t *consumed_r)
{
    memset(r, 0, sizeof *r);
    size_t pos = 0, tlen = 0, lines = 0;
    for (;;) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        if (!nl)
            return len - pos > CLIENT_MAX_LINE ? -1 : 0;
        size_t llen = (size_t)(nl - (data + pos));
        const char *line = data + pos;
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        if (llen > CLIENT_MAX_LINE || ++lines > CLIENT_MAX_LINES)
            return -1;
        if (llen < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
            line[2] < '0' || line[2] > '9' || (llen > 3 && line[3] != ' ' && line[3] != '-'))
            return -1;
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (r->code && code != r->code)
            return -1;
        r->code = code;
        const char *text = llen > 4 ? line + 4 : "";
        size_t textlen = llen > 4 ? llen - 4 : 0;
        /* keep what fits; the reply is still parsed in full */
        if (tlen + textlen + 2 < sizeof r->text) {
            if (tlen)
                r->text[tlen++] = '\n';
            memcpy(r->text + tlen, text, textlen);
            tlen += textlen;
            r->text[tlen] = '\0';
        }
        bool is_last = llen == 3 || line[3] == ' ';
        pos = (size_t)(nl - data) + 1;
        if (is_last) {
            size_t n = llen < sizeof r->last - 1 ? llen : sizeof r->last - 1;
            memcpy(r->last, line, n);
            r->last[n] = '\0';
            reply_enhanced(text, textlen, code, r->enh, sizeof r->enh);
            *consumed_r = pos;
            return 1;
        }
    }
}

void outbound_ehlo_parse(const struct outbound_reply *r, struct outbound_ehlo *e)
{
    memset(e, 0, sizeof *e);
    const char *p = strchr(r->text, '\n'); /* the first line is the greeting text */
    while (p) {
        p++;
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char line[256];
        if (n >= sizeof line)
            n = sizeof line - 1;
        memcpy(line, p, n);
        line[n] = '\0';
        char *kw = line, *args = strchr(line, ' ');
        if (args)
            *args++ = '\0';
        if (strcasecmp(kw, "STARTTLS") == 0) {
            e->has_starttls = true;
        } else if (strcasecmp(kw, "PIPELINING") == 0) {
            e->has_pipelining = true;
        } else if (strcasecmp(kw, "8BITMIME") == 0) {
            e->has_8bitmime = true;
        } else if (strcasecmp(kw, "SMTPUTF8") == 0) {
            e->has_smtputf8 = true;
        } else if (strcasecmp(kw, "DSN") == 0) {
            e->has_dsn = true;
        } else if (strcasecmp(kw, "SIZE") == 0) {
            e->has_size = true;
            e->size_limit = args ? strtoull(args, NULL, 10) : 0;
        } else if (strcasecmp(kw, "AUTH") == 0 || strncasecmp(kw, "AUTH=", 5) == 0) {
            const char *m = strncasecmp(kw, "AUTH=", 5) == 0 ? kw + 5 : args;
            char mechs[256];
            snprintf(mechs, sizeof mechs, "%s %s", m ? m : "",
                     strncasecmp(kw, "AUTH=", 5) == 0 && args ? args : "");
            for (char *save = NULL, *t = strtok_r(mechs, " ", &save); t;
                 t = strtok_r(NULL, " ", &save)) {
                if (strcasecmp(t, "PLAIN") == 0)
                    e->has_auth_plain = true;
                else if (strcasecmp(t, "LOGIN") == 0)
                    e->has_auth_login = true;
            }
        }
        p = end;
    }
}

/* ---- I/O with timeouts ----------------------------------------------------------------- */

struct client {
    const struct outbound_client_opts *o;
    const struct outbound_addr *addr;
    int fd;
    SSL *ssl;
    char in[8192];
    size_t in_len;
    char err[256]; /* local reason when an I/O step failed */
};

/* Wait until fd is ready for events; 0 ready, -1 timeout/stop/error (c->err set). */
static int client_wait(struct client *c, short events)
{
    for (unsigned waited = 0; waited < c->o->timeout; waited++) {
        if (c->o->is_stopping && atomic_load(c->o->is_stopping)) {
            snprintf(c->err, sizeof c->err, "mail system is shutting down");
            return -1;
        }
        struct pollfd p = {.fd = c->fd, .events = events};
        int n = poll(&p, 1, 1000);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            snprintf(c->err, sizeof c->err, "poll: %s", strerror(errno));
            return -1;
        }
    }
    snprintf(c->err, sizeof c->err, "conversation with %s[%s] timed out", c->addr->host,
             c->addr->ip);
    return -1;
}

/* Run one SSL call until it stops wanting I/O. Returns its result (>0 ok). */
#define SSL_RETRY(c, call)                                                                         \
    ({                                                                                             \
        int _r;                                                                                    \
        for (;;) {                                                                                 \
            _r = (call);                                                                           \
            if (_r > 0)                                                                            \
                break;                                                                             \
            int _e = SSL_get_error((c)->ssl, _r);                                                  \
            if (_e == SSL_ERROR_WANT_READ && client_wait((c), POLLIN) == 0)                        \
                continue;                                                                          \
            if (_e == SSL_ERROR_WANT_WRITE && client_wait((c), POLLOUT) == 0)                      \
                continue;                                                                          \
            break;                                                                                 \
        }                                                                                          \
        _r;                                                                                        \
    })

static int client_write(struct client *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n;
        if (c->ssl) {
            int chunk = len > 65536 ? 65536 : (int)len;
            n = SSL_RETRY(c, SSL_write(c->ssl, p, chunk));
            if (n <= 0) {
                if (!c->err[0])
                    snprintf(c->err, sizeof c->err, "lost connection with %s[%s] while writing",
                             c->addr->host, c->addr->ip);
                return -1;
            }
        } else {
            n = send(c->fd, p, len, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (client_wait(c, POLLOUT) < 0)
                    return -1;
                continue;
            }
            if (n <= 0) {
                snprintf(c->err, sizeof c->err, "lost connection with %s[%s]: %s", c->addr->host,
                         c->addr->ip, strerror(errno));
                return -1;
            }
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int client_printf(struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int client_printf(struct client *c, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) {
        snprintf(c->err, sizeof c->err, "command too long");
        return -1;
    }
    return client_write(c, line, (size_t)n);
}

/* Read one complete reply. 0 or -1 (c->err). */
static int client_reply(struct client *c, struct outbound_reply *r)
{
    for (;;) {
        size_t used = 0;
        int pr = outbound_reply_parse(c->in, c->in_len, r, &used);
        if (pr == 1) {
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
            return 0;
        }
        if (pr < 0 || c->in_len == sizeof c->in) {
            snprintf(c->err, sizeof c->err, "malformed reply from %s[%s]", c->addr->host,
                     c->addr->ip);
            return -1;
        }
        ssize_t n;
        if (c->ssl) {
            n = SSL_RETRY(c, SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof c->in - c->in_len)));
        } else {
            n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (client_wait(c, POLLIN) < 0)
                    return -1;
                continue;
            }
        }
        if (n <= 0) {
            if (!c->err[0])
                snprintf(c->err, sizeof c->err, "lost connection with %s[%s]", c->addr->host,
                         c->addr->ip);
            return -1;
        }
        c->in_len += (size_t)n;
    }
}

/* ---- session steps ------------------------------------------------------------------- */

static void result_set(struct outbound_result *res, int code, const char *dsn, bool is_remote,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void result_set(struct outbound_result *res, int code, const char *dsn, bool is_remote,
                       const char *fmt, ...)
{
    res->code = code;
    snprintf(res->dsn, sizeof res->dsn, "%s", dsn);
    res->is_remote_reply = is_remote;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->text, sizeof res->text, fmt, ap);
    va_end(ap);
    for (char *p = res->text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* A server reply as a result: the DSN code from the reply, else derived from the class. */
static void result_from_reply(struct outbound_result *res, const struct outbound_reply *r,
                              const struct client *c, const char *when)
{
    const char *dsn = r->enh[0]        ? r->enh
                      : r->code >= 500 ? "5.0.0"
                      : r->code >= 400 ? "4.0.0"
                                       : "2.0.0";
    if (r->code < 400)
        result_set(res, r->code, dsn, true, "%s", r->last);
    else
        result_set(res, r->code, dsn, true, "host %s[%s] said: %d %s (%s)", c->addr->host,
                   c->addr->ip, r->code, r->text, when);
    snprintf(res->reply, sizeof res->reply, "%d %s", r->code, r->text);
    for (char *p = res->reply; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

static void results_all(struct outbound_result *res, size_t n, const struct outbound_result *one)
{
    for (size_t i = 0; i < n; i++)
        res[i] = *one;
}

static int client_connect(struct client *c)
{
    const struct outbound_addr *a = c->addr;
    c->fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        snprintf(c->err, sizeof c->err, "socket: %s", strerror(errno));
        return -1;
    }
    /* commands and replies are request/response: Nagle would only add delayed-ACK waits */
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)&a->sa, a->sa_len) == 0)
        return 0;
    if (errno != EINPROGRESS) {
        snprintf(c->err, sizeof c->err, "connect to %s[%s]:%u: %s", a->host, a->ip, a->port,
                 strerror(errno));
        return -1;
    }
    const struct outbound_client_opts *saved = c->o;
    struct outbound_client_opts o = *saved;
    o.timeout = o.timeout < CLIENT_CONNECT_LIMIT ? o.timeout : CLIENT_CONNECT_LIMIT;
    c->o = &o;
    int w = client_wait(c, POLLOUT);
    c->o = saved;
    if (w < 0) {
        snprintf(c->err, sizeof c->err, "connect to %s[%s]:%u: Connection timed out", a->host,
                 a->ip, a->port);
        return -1;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        snprintf(c->err, sizeof c->err, "connect to %s[%s]:%u: %s", a->host, a->ip, a->port,
                 strerror(soerr));
        return -1;
    }
    return 0;
}

/* TLS-RPT (RFC 8460): note how TLS went with this MX under the session's policy. */
static void client_tlsrpt(const struct client *c, const char *result_type)
{
    const struct outbound_client_opts *o = c->o;
    if (!o->tlsrpt_domain || !o->data_dir || o->auth == OUTBOUND_AUTH_NONE)
        return;
    mailauth_tlsrpt_record(o->data_dir, (int64_t)time(NULL), o->tlsrpt_domain,
                           o->auth == OUTBOUND_AUTH_DANE ? "tlsa" : "sts", result_type,
                           c->addr->host, c->addr->ip);
}

/* The RFC 8460 §4.3.2 result type of a certificate the verification refused. */
static const char *tlsrpt_cert_failure(const struct client *c, long vr)
{
    if (c->o->auth == OUTBOUND_AUTH_DANE)
        return "validation-failure";
    if (vr == X509_V_ERR_HOSTNAME_MISMATCH)
        return "certificate-host-mismatch";
    if (vr == X509_V_ERR_CERT_HAS_EXPIRED)
        return "certificate-expired";
    return "certificate-not-trusted";
}

static int client_starttls(struct client *c)
{
    c->ssl = SSL_new(c->o->ssl_ctx);
    if (!c->ssl) {
        snprintf(c->err, sizeof c->err, "cannot create TLS session");
        return -1;
    }
    SSL_set_fd(c->ssl, c->fd);
    /* SNI: the MX host name, unless we connect to an address literal */
    if (c->addr->host[0] && strcmp(c->addr->host, c->addr->ip) != 0)
        SSL_set_tlsext_host_name(c->ssl, c->addr->host);
    /* MTA-STS (RFC 8461 §4.2): the certificate must chain to a trusted CA and name the MX
     * host; "testing" checks the same but only logs */
    if (c->o->auth == OUTBOUND_AUTH_DANE) {
        /* RFC 7672 §3: OpenSSL matches the chain against the TLSA records; DANE-TA
         * certificates must name the MX host (§3.2.2), DANE-EE ones need not (§3.1.1) */
        SSL_dane_enable(c->ssl, c->addr->host);
        SSL_dane_set_flags(c->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
        for (size_t i = 0; i < c->o->n_tlsa; i++) {
            const struct outbound_tlsa *t = &c->o->tlsa[i];
            SSL_dane_tlsa_add(c->ssl, t->usage, t->selector, t->mtype, t->data, t->len);
        }
        SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    } else if (c->o->auth != OUTBOUND_AUTH_NONE) {
        SSL_set1_host(c->ssl, c->addr->host);
        if (c->o->auth == OUTBOUND_AUTH_PKIX)
            SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    }
    c->in_len = 0; /* RFC 3207 §4.2: discard anything received before the handshake */
    if (SSL_RETRY(c, SSL_connect(c->ssl)) <= 0) {
        unsigned long e = ERR_get_error();
        long vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK && (c->o->auth == OUTBOUND_AUTH_DANE || c->o->auth == OUTBOUND_AUTH_PKIX))
            client_tlsrpt(c, tlsrpt_cert_failure(c, vr));
        if (!c->err[0] && c->o->auth == OUTBOUND_AUTH_DANE && vr != X509_V_OK)
            snprintf(c->err, sizeof c->err,
                     "TLS certificate of %s[%s] does not match its DANE TLSA records: %s",
                     c->addr->host, c->addr->ip, X509_verify_cert_error_string(vr));
        else if (!c->err[0] && c->o->auth == OUTBOUND_AUTH_PKIX && vr != X509_V_OK)
            snprintf(c->err, sizeof c->err,
                     "TLS certificate verification of %s[%s] failed (%s): %s", c->addr->host,
                     c->addr->ip, c->o->auth_policy ? c->o->auth_policy : "required",
                     X509_verify_cert_error_string(vr));
        else if (!c->err[0])
            snprintf(c->err, sizeof c->err, "TLS handshake with %s[%s] failed: %s", c->addr->host,
                     c->addr->ip, e ? ERR_reason_error_string(e) : "lost connection");
        ERR_clear_error();
        return -1;
    }
    long vr = SSL_get_verify_result(c->ssl);
    bool is_trusted = c->o->auth != OUTBOUND_AUTH_NONE && vr == X509_V_OK;
    client_tlsrpt(c, c->o->auth == OUTBOUND_AUTH_PKIX_TESTING && vr != X509_V_OK
                         ? tlsrpt_cert_failure(c, vr)
                         : "success");
    if (c->o->auth == OUTBOUND_AUTH_PKIX_TESTING && vr != X509_V_OK)
        log_warning("smtp", "%s (mode testing): certificate of %s[%s] would not be accepted: %s",
                    c->o->auth_policy ? c->o->auth_policy : "TLS policy", c->addr->host,
                    c->addr->ip, X509_verify_cert_error_string(vr));
    const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
    int alg = 0;
    int bits = ci ? SSL_CIPHER_get_bits(ci, &alg) : 0;
    /* Postfix's words: Verified (DANE), Trusted (a CA), Untrusted (opportunistic) */
    log_info("smtp",
             "%s TLS connection established to %s[%s]:%u: %s with cipher %s "
             "(%d/%d bits)",
             !is_trusted ? "Untrusted" : c->o->auth == OUTBOUND_AUTH_DANE ? "Verified" : "Trusted",
             c->addr->host, c->addr->ip, c->addr->port,
             SSL_get_version(c->ssl),
             ci ? SSL_CIPHER_get_name(ci) : "?", bits, alg);
    return 0;
}

/* RFC 4954 AUTH PLAIN (initial response) or LOGIN. 0 ok, -1 failed (res set). */
static int client_auth(struct client *c, const struct outbound_ehlo *e, struct outbound_result *res)
{
    struct outbound_reply r;
    struct buf b64;
    buf_init(&b64, 4096);
    const char *user = c->o->username, *pass = c->o->password ? c->o->password : "";
    int ret = -1;
    if (e->has_auth_plain) {
        struct buf raw;
        buf_init(&raw, 2048);
        bool ok = buf_append_byte(&raw, '\0') && buf_append_str(&raw, user) &&
                  buf_append_byte(&raw, '\0') && buf_append_str(&raw, pass) &&
                  util_base64_encode(raw.data, raw.len, &b64);
        buf_free(&raw);
        if (!ok || client_printf(c, "AUTH PLAIN %s\r\n", b64.data) < 0 || client_reply(c, &r) < 0)
            goto io_fail;
    } else if (e->has_auth_login) {
        if (client_printf(c, "AUTH LOGIN\r\n") < 0 || client_reply(c, &r) < 0)
            goto io_fail;
        for (int step = 0; step < 2 && r.code == 334; step++) {
            buf_reset(&b64);
            const char *v = step == 0 ? user : pass;
            if (!util_base64_encode(v, strlen(v), &b64) ||
                client_printf(c, "%s\r\n", b64.data ? b64.data : "") < 0 || client_reply(c, &r) < 0)
                goto io_fail;
        }
    } else {
        result_set(res, 450, "4.7.0", false,
                   "SASL authentication failed: server %s[%s] offered no PLAIN or LOGIN",
                   c->addr->host, c->addr->ip);
        goto out;
    }
    if (r.code == 235) {
        ret = 0;
        goto out;
    }
    /* Postfix defers on SASL failure: a credentials problem is the admin's to fix */
    result_set(res, 450, "4.7.0", true, "SASL authentication failed; server %s[%s] said: %s",
               c->addr->host, c->addr->ip, r.last);
    goto out;
io_fail:
    result_set(res, 450, "4.4.2", false, "%s", c->err);
out:
    buf_free(&b64);
    return ret;
}

/* Send the message (DATA content): dot-stuffed (RFC 5321 §4.5.2), ending in CRLF.CRLF.
 * The end-of-data marker goes out in the same write as the last chunk: a separate small
 * write after a large one waits for the peer's delayed ACK under Nagle (~40 ms per
 * message, which was the whole delivery time on loopback). Lines are copied with memchr,
 * not byte by byte. */
static int client_send_body(struct client *c, const struct outbound_message *m)
{
    char in[32768];
    struct buf out;
    buf_init(&out, 0);
    bool at_bol = true;
    char last[2] = {'\r', '\n'};
    uint64_t done = 0;
    int ret = -1;
    do {
        size_t want = m->size - done < sizeof in ? (size_t)(m->size - done) : sizeof in;
        ssize_t n = want ? pread(m->fd, in, want, (off_t)(m->offset + done)) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (want && n <= 0) {
            snprintf(c->err, sizeof c->err, "cannot read queue file: %s",
                     n < 0 ? strerror(errno) : "short file");
            goto out;
        }
        buf_reset(&out);
        const char *p = in, *end = in + n;
        while (p < end) {
            if (at_bol && *p == '.' && !buf_append_byte(&out, '.'))
                goto oom;
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *stop = nl ? nl + 1 : end;
            if (!buf_append(&out, p, (size_t)(stop - p)))
                goto oom;
            at_bol = nl != NULL;
            p = stop;
        }
        if (n >= 2) {
            last[0] = in[n - 2];
            last[1] = in[n - 1];
        } else if (n == 1) {
            last[0] = last[1];
            last[1] = in[0];
        }
        done += (uint64_t)n;
        if (done == m->size) {
            /* RFC 5321 §4.1.1.4: the message ends with CRLF before the "." line */
            if (m->size > 0 && (last[0] != '\r' || last[1] != '\n') && !buf_append(&out, "\r\n", 2))
                goto oom;
            if (!buf_append(&out, ".\r\n", 3))
                goto oom;
        }
        if (out.len && client_write(c, out.data, out.len) < 0)
            goto out;
    } while (done < m->size);
    ret = 0;
    goto out;
oom:
    snprintf(c->err, sizeof c->err, "out of memory");
out:
    buf_free(&out);
    return ret;
}

/* EHLO, falling back to HELO on 5xx (RFC 5321 §3.2). 0 ok (*e filled), -1 failed. */
static int client_hello(struct client *c, struct outbound_ehlo *e, struct outbound_reply *r)
{
    if (client_printf(c, "EHLO %s\r\n", c->o->helo_name) < 0 || client_reply(c, r) < 0)
        return -1;
    if (r->code == 250) {
        outbound_ehlo_parse(r, e);
        return 0;
    }
    if (r->code >= 500) {
        memset(e, 0, sizeof *e);
        if (client_printf(c, "HELO %s\r\n", c->o->helo_name) < 0 || client_reply(c, r) < 0)
            return -1;
        if (r->code == 250)
            return 0;
    }
    return 1; /* reply in r */
}

/* ---- connection cache -------------------------------------------------------------------
 * After a complete transaction the session is parked here instead of QUIT, so the next
 * message to the same address (and credentials) skips connect, greeting, EHLO, STARTTLS and
 * AUTH. It is checked with RSET before reuse; parked sessions older than CACHE_IDLE_MS are
 * closed. Shared by the delivery threads under a mutex. */

#define CACHE_SLOTS   64
#define CACHE_IDLE_MS 5000

struct cached_conn {
    bool is_used;
    int fd;
    SSL *ssl;
    struct outbound_ehlo e;
    char ip[64];
    uint16_t port;
    char user[256];
    int auth; /* enum outbound_tls_auth the session was set up with */
    uint64_t parked_ms;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cached_conn cache[CACHE_SLOTS];

static void cache_close(struct cached_conn *cc, bool is_polite)
{
    if (is_polite) {
        /* best effort, no wait: the peer may already have closed */
        if (cc->ssl)
            (void)SSL_write(cc->ssl, "QUIT\r\n", 6);
        else
            (void)send(cc->fd, "QUIT\r\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (cc->ssl)
        SSL_free(cc->ssl);
    close(cc->fd);
    cc->is_used = false;
}

/* Under the lock: close parked sessions that idled too long. */
static void cache_sweep(uint64_t now)
{
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (cache[i].is_used && now - cache[i].parked_ms > CACHE_IDLE_MS)
            cache_close(&cache[i], true);
}

static bool cache_take(struct client *c, struct outbound_ehlo *e)
{
    bool found = false;
    uint64_t now = util_now_ms();
    const char *user = c->o->username ? c->o->username : "";
    pthread_mutex_lock(&cache_lock);
    cache_sweep(now);
    for (size_t i = 0; i < CACHE_SLOTS && !found; i++) {
        struct cached_conn *cc = &cache[i];
        /* a session set up without certificate checks never serves a policy that wants them */
        if (!cc->is_used || cc->port != c->addr->port || strcmp(cc->ip, c->addr->ip) != 0 ||
            strcmp(cc->user, user) != 0 || cc->auth != (int)c->o->auth)
            continue;
        c->fd = cc->fd;
        c->ssl = cc->ssl;
        *e = cc->e;
        cc->is_used = false;
        found = true;
    }
    pthread_mutex_unlock(&cache_lock);
    return found;
}

/* Park the session; false (caller QUITs) when the cache is full. */
static bool cache_put(struct client *c, const struct outbound_ehlo *e)
{
    bool parked = false;
    uint64_t now = util_now_ms();
    pthread_mutex_lock(&cache_lock);
    cache_sweep(now);
    for (size_t i = 0; i < CACHE_SLOTS && !parked; i++) {
        struct cached_conn *cc = &cache[i];
        if (cc->is_used)
            continue;
        cc->is_used = true;
        cc->fd = c->fd;
        cc->ssl = c->ssl;
        cc->e = *e;
        snprintf(cc->ip, sizeof cc->ip, "%s", c->addr->ip);
        cc->port = c->addr->port;
        snprintf(cc->user, sizeof cc->user, "%s", c->o->username ? c->o->username : "");
        cc->auth = (int)c->o->auth;
        cc->parked_ms = now;
        parked = true;
    }
    pthread_mutex_unlock(&cache_lock);
    if (parked) {
        c->fd = -1;
        c->ssl = NULL;
    }
    return parked;
}

void outbound_conn_cache_close_all(void)
{
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (cache[i].is_used)
            cache_close(&cache[i], true);
    pthread_mutex_unlock(&cache_lock);
}

/* A parked session still answers? RSET (RFC 5321 §4.1.1.5) costs one round trip, so with
 * PIPELINING it is not sent here but in front of MAIL FROM, in the same write (RFC 2920
 * §3.1 allows RSET anywhere in a group); *is_probe_pending_r tells the caller to do so and
 * to fall back to a new connection if that RSET gets no 250. */
static bool client_reuse(struct client *c, struct outbound_ehlo *e, bool *is_probe_pending_r)
{
    *is_probe_pending_r = false;
    while (cache_take(c, e)) {
        if (e->has_pipelining) {
            *is_probe_pending_r = true;
            return true;
        }
        struct outbound_reply r;
        if (client_printf(c, "RSET\r\n") == 0 && client_reply(c, &r) == 0 && r.code == 250)
            return true;
        if (c->ssl)
            SSL_free(c->ssl);
        close(c->fd);
        c->fd = -1;
        c->ssl = NULL;
        c->err[0] = '\0';
        c->in_len = 0;
    }
    return false;
}

/* RFC 3461 §4.3, §4.4 (dsn helper): " RET=HDRS ENVID=xtext" appended to MAIL params. */
static void client_dsn_mail_params(const struct outbound_message *m, char *params, size_t size)
{
    size_t pl = strlen(params);
    if (m->env->dsn_ret == QUEUE_RET_FULL || m->env->dsn_ret == QUEUE_RET_HDRS)
        snprintf(params + pl, size - pl, " RET=%s",
                 m->env->dsn_ret == QUEUE_RET_FULL ? "FULL" : "HDRS");
    char x[3 * QUEUE_ENVID_MAX + 1];
    pl = strlen(params);
    if (m->env->envid && queue_xtext_encode(m->env->envid, x, sizeof x))
        snprintf(params + pl, size - pl, " ENVID=%s", x);
}

/* RFC 3461 §4.1, §4.2 (dsn helper): " NOTIFY=... ORCPT=type;xtext" for recipient k, or
 * "" (static buffer: the caller formats it at once). Marks the result as passed on. */
static const char *client_dsn_rcpt_params(const struct outbound_message *m,
                                          const struct outbound_ehlo *e, size_t k,
                                          struct outbound_result *results)
{
    static _Thread_local char out[32 + 3 * QUEUE_ORCPT_MAX + 16];
    out[0] = '\0';
    if (!e->has_dsn || !m->env || !m->env_index || m->env_index[k] >= m->env->n_recipients)
        return out;
    size_t i = m->env_index[k];
    unsigned notify = m->env->notify ? m->env->notify[i] : 0;
    const char *orcpt = m->env->orcpt ? m->env->orcpt[i] : NULL;
    char nf[40];
    if (notify) {
        queue_notify_format(notify, nf, sizeof nf);
        snprintf(out, sizeof out, " NOTIFY=%s", nf);
    }
    const char *semi = orcpt ? strchr(orcpt, ';') : NULL;
    char x[3 * QUEUE_ORCPT_MAX + 1];
    if (semi && queue_xtext_encode(semi + 1, x, sizeof x)) {
        size_t ol = strlen(out);
        snprintf(out + ol, sizeof out - ol, " ORCPT=%.*s;%s", (int)(semi - orcpt), orcpt, x);
    }
    results[k].is_dsn_passed = true;
    return out;
}

enum outbound_session_status outbound_smtp_deliver(const struct outbound_client_opts *o,
                                                   const struct outbound_addr *addr,
                                                   const struct outbound_message *m,
                                                   struct outbound_result *results,
                                                   uint64_t *conn_ms_r)
{
    struct client *c = calloc(1, sizeof *c);
    struct outbound_result res = {0};
    enum outbound_session_status st = OUTBOUND_SESSION_TRY_NEXT;
    uint64_t t0 = util_now_ms();
    bool *accepted = calloc(m->n_recipients ? m->n_recipients : 1, sizeof *accepted);
    *conn_ms_r = 0;
    if (!c || !accepted) {
        result_set(&res, 451, "4.3.0", false, "out of memory");
        results_all(results, m->n_recipients, &res);
        free(c);
        free(accepted);
        return OUTBOUND_SESSION_DONE;
    }
    c->o = o;
    c->addr = addr;
    c->fd = -1;
    struct outbound_reply r;
    struct outbound_ehlo e;
    bool is_complete = false;      /* a whole transaction went through: the session can be reused */
    bool is_probe_pending = false; /* reused session: RSET goes in front of MAIL */
    if (client_reuse(c, &e, &is_probe_pending)) {
        st = OUTBOUND_SESSION_DONE;
        goto ready;
    }
fresh:
    if (client_connect(c) < 0 || client_reply(c, &r) < 0)
        goto io_fail;
    if (r.code != 220) {
        result_from_reply(&res, &r, c, "in reply to the greeting");
        results_all(results, m->n_recipients, &res);
        goto quit; /* RFC 5321 §5.1: try the next MX */
    }
    int h = client_hello(c, &e, &r);
    if (h < 0)
        goto io_fail;
    if (h > 0) {
        result_from_reply(&res, &r, c, "in reply to EHLO/HELO command");
        results_all(results, m->n_recipients, &res);
        goto quit;
    }
    bool need_tls = o->tls == OUTBOUND_TLS_ENCRYPT || o->username ||
                    o->auth == OUTBOUND_AUTH_PKIX || o->auth == OUTBOUND_AUTH_DANE;
    if (e.has_starttls && (o->tls != OUTBOUND_TLS_NONE || need_tls) && o->ssl_ctx) {
        if (client_printf(c, "STARTTLS\r\n") < 0 || client_reply(c, &r) < 0)
            goto io_fail;
        if (r.code == 220) {
            if (client_starttls(c) < 0)
                goto io_fail;
            h = client_hello(c, &e, &r);
            if (h < 0)
                goto io_fail;
            if (h > 0) {
                result_from_reply(&res, &r, c, "in reply to EHLO command");
                results_all(results, m->n_recipients, &res);
                goto quit;
            }
        } else if (need_tls) {
            result_from_reply(&res, &r, c, "in reply to STARTTLS command");
            res.code = 450;
            results_all(results, m->n_recipients, &res);
            goto quit;
        }
    }
    if (!c->ssl && !e.has_starttls)
        client_tlsrpt(c, "starttls-not-supported");
    if (need_tls && !c->ssl) {
        result_set(&res, 450, "4.7.4", false,
                   "TLS is required%s%s, but was not offered by host %s[%s]",
                   o->auth == OUTBOUND_AUTH_PKIX   ? " by the "
                   : o->auth == OUTBOUND_AUTH_DANE ? " (DANE TLSA records)"
                                                   : "",
                   o->auth == OUTBOUND_AUTH_PKIX && o->auth_policy ? o->auth_policy : "",
                   addr->host, addr->ip);
        results_all(results, m->n_recipients, &res);
        goto quit;
    }
    if (o->username) {
        if (client_auth(c, &e, &res) < 0) {
            results_all(results, m->n_recipients, &res);
            goto quit;
        }
    }
    st = OUTBOUND_SESSION_DONE;
ready:
    *conn_ms_r = util_now_ms() - t0;
    /* RFC 1870: a message over the advertised limit is a permanent failure */
    if (e.has_size && e.size_limit > 0 && m->size > e.size_limit) {
        result_set(
            &res, 552, "5.3.4", false, "message size %llu exceeds size limit %llu of server %s[%s]",
            (unsigned long long)m->size, (unsigned long long)e.size_limit, addr->host, addr->ip);
        results_all(results, m->n_recipients, &res);
        goto quit;
    }
    char params[96] = "";
    if (e.has_size)
        snprintf(params, sizeof params, " SIZE=%llu", (unsigned long long)m->size);
    if (m->has_8bit && e.has_8bitmime) {
        size_t pl = strlen(params);
        snprintf(params + pl, sizeof params - pl, " BODY=8BITMIME");
    }
    /* RFC 3461 §4: pass RET/ENVID and each NOTIFY/ORCPT on to a server that takes them */
    if (e.has_dsn && m->env)
        client_dsn_mail_params(m, params, sizeof params);
    /* RFC 2920: with PIPELINING, MAIL, every RCPT and DATA go out in one write */
    size_t n = m->n_recipients;
    if (e.has_pipelining) {
        struct buf cmds;
        buf_init(&cmds, 0);
        bool ok = !is_probe_pending || buf_append_str(&cmds, "RSET\r\n");
        ok = ok && buf_printf(&cmds, "MAIL FROM:<%s>%s\r\n", m->sender, params);
        for (size_t i = 0; ok && i < n; i++)
            ok = buf_printf(&cmds, "RCPT TO:<%s>%s\r\n", m->recipients[i],
                            client_dsn_rcpt_params(m, &e, i, results));
        ok = ok && buf_append_str(&cmds, "DATA\r\n");
        int w = ok ? client_write(c, cmds.data, cmds.len) : -1;
        buf_free(&cmds);
        if (is_probe_pending) {
            /* the parked session went stale (peer timeout, closed): nothing of this
             * message was accepted before RSET's 250, so start over on a new connection */
            is_probe_pending = false;
            if (w < 0 || client_reply(c, &r) < 0 || r.code != 250) {
                if (c->ssl)
                    SSL_free(c->ssl);
                c->ssl = NULL;
                close(c->fd);
                c->fd = -1;
                c->err[0] = '\0';
                c->in_len = 0;
                st = OUTBOUND_SESSION_TRY_NEXT;
                t0 = util_now_ms();
                goto fresh;
            }
        }
        if (w < 0)
            goto io_fail_done;
    } else if (client_printf(c, "MAIL FROM:<%s>%s\r\n", m->sender, params) < 0) {
        goto io_fail_done;
    }
    if (client_reply(c, &r) < 0)
        goto io_fail_done;
    bool mail_ok = r.code == 250;
    if (!mail_ok) {
        result_from_reply(&res, &r, c, "in reply to MAIL FROM command");
        results_all(results, n, &res);
        if (!e.has_pipelining)
            goto quit;
    }
    size_t n_accepted = 0;
    for (size_t i = 0; i < n; i++) {
        if (!e.has_pipelining && client_printf(c, "RCPT TO:<%s>%s\r\n", m->recipients[i],
                                               client_dsn_rcpt_params(m, &e, i, results)) < 0)
            goto io_fail_done;
        if (client_reply(c, &r) < 0)
            goto io_fail_done;
        if (!mail_ok)
            continue;
        if (r.code == 250 || r.code == 251) {
            accepted[i] = true;
            n_accepted++;
        } else {
            result_from_reply(&results[i], &r, c, "in reply to RCPT TO command");
        }
    }
    if (e.has_pipelining) {
        if (client_reply(c, &r) < 0) /* DATA */
            goto io_fail_done;
        if (r.code != 354) {
            if (n_accepted)
                for (size_t i = 0; i < n; i++)
                    if (accepted[i])
                        result_from_reply(&results[i], &r, c, "in reply to DATA command");
            goto quit;
        }
        if (n_accepted == 0) {
            /* the server took DATA although every RCPT failed: end it empty */
            (void)client_write(c, ".\r\n", 3);
            (void)client_reply(c, &r);
            goto quit;
        }
    } else {
        if (n_accepted == 0)
            goto quit;
        if (client_printf(c, "DATA\r\n") < 0 || client_reply(c, &r) < 0)
            goto io_fail_done;
        if (r.code != 354) {
            for (size_t i = 0; i < n; i++)
                if (accepted[i])
                    result_from_reply(&results[i], &r, c, "in reply to DATA command");
            goto quit;
        }
    }
    if (client_send_body(c, m) < 0 || client_reply(c, &r) < 0)
        goto io_fail_done;
    for (size_t i = 0; i < n; i++)
        if (accepted[i])
            result_from_reply(&results[i], &r, c, "in reply to end of DATA command");
    is_complete = r.code == 250 && c->in_len == 0;
quit:
    if (is_complete && !(o->is_stopping && atomic_load(o->is_stopping)) && cache_put(c, &e))
        goto out;
    if (c->fd >= 0 && !c->err[0]) {
        struct outbound_client_opts q = *o;
        q.timeout = 5; /* QUIT is a courtesy; don't wait long for it */
        c->o = &q;
        if (client_printf(c, "QUIT\r\n") == 0)
            (void)client_reply(c, &r);
        c->o = o;
    }
    goto out;
io_fail_done:
    /* after MAIL: a lost connection defers whatever has no final answer yet */
    result_set(&res, 451, "4.4.2", false, "%s", c->err[0] ? c->err : "lost connection");
    for (size_t i = 0; i < m->n_recipients; i++)
        if (results[i].code == 0 || results[i].code < 300)
            results[i] = res;
    goto out;
io_fail:
    result_set(&res, 451, "4.4.1", false, "%s", c->err[0] ? c->err : "lost connection");
    results_all(results, m->n_recipients, &res);
out:
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    free(accepted);
    return st;
}

SSL_CTX *outbound_ssl_ctx_create(const char *ca_file, char **error_r)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        *error_r = strdup("cannot create the TLS client context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* opportunistic TLS (RFC 7435): encrypt without authenticating the peer; a session
     * under an MTA-STS policy turns verification on for itself (client_starttls) */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    int ok = ca_file && ca_file[0] ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                   : SSL_CTX_set_default_verify_paths(ctx);
    /* DANE (RFC 7672) sessions enable it per connection */
    if (ok == 1)
        ok = SSL_CTX_dane_enable(ctx) > 0 ? 1 : 0;
    if (ok != 1) {
        char msg[600];
        snprintf(msg, sizeof msg, "cannot load the CA certificates%s%s", ca_file ? " of " : "",
                 ca_file ? ca_file : "");
        *error_r = strdup(msg);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
