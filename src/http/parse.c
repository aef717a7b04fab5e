/*
 * parse.c - a strict HTTP/1.1 request-head parser (see http.h), RFC 9112 and RFC 9110.
 *
 * One pass over the head, line by line: the request line (§3), then field lines (§5)
 * until the empty line. What we keep: the method, the target's path, the Host (from the
 * field, or from an absolute-form target, §3.2.2), the version, Content-Length and
 * whether Transfer-Encoding was sent. Everything else is checked for syntax and
 * skipped. Budgets: HTTP_HEAD_MAX octets, HTTP_LINE_MAX for the request line,
 * HTTP_TARGET_MAX for the target, HTTP_FIELDS_MAX fields.
 */
#include "http/http.h"

#include <string.h>
#include <strings.h>

/* RFC 9110 §5.6.2: tchar. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* RFC 9110 §5.5: field-vchar (VCHAR or obs-text), SP and HTAB. */
static bool is_field_octet(unsigned char c)
{
    return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f);
}

size_t http_head_end(const char *data, size_t len, size_t from, bool *has_bare_lf_r)
{
    *has_bare_lf_r = false;
    /* every LF must follow a CR; the head ends at the first LF that closes "\r\n\r\n" */
    for (size_t i = from; i < len;) {
        const char *lf = memchr(data + i, '\n', len - i);
        if (!lf)
            break;
        size_t at = (size_t)(lf - data);
        if (at == 0 || data[at - 1] != '\r') {
            *has_bare_lf_r = true;
            return 0;
        }
        if (at >= 3 && data[at - 2] == '\n' && data[at - 3] == '\r')
            return at + 1;
        i = at + 1;
    }
    return 0;
}

static enum http_parse_status http_fail(struct http_request *r, int status, const char *reason)
{
    r->status = status;
    r->reason = reason;
    return HTTP_PARSE_ERROR;
}

/* RFC 9110 §4.2.3 / RFC 3986 §3.2.2: uri-host [ ":" port ], into r->host (lower case, no
 * port, no trailing dot). We take a reg-name of letters, digits, '-' and '.' (what a
 * DNS name is) or an IP literal in brackets. false when malformed. */
static bool http_host_set(struct http_request *r, const char *v, size_t n)
{
    size_t host_len = n;
    if (n > 0 && v[0] == '[') {
        const char *end = memchr(v, ']', n);
        if (!end)
            return false;
        host_len = (size_t)(end - v) + 1;
        for (size_t i = 1; i + 1 < host_len; i++)
            if (!(is_tchar((unsigned char)v[i]) || v[i] == ':'))
                return false;
    } else {
        const char *colon = memchr(v, ':', n);
        if (colon)
            host_len = (size_t)(colon - v);
        for (size_t i = 0; i < host_len; i++) {
            char c = v[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.'))
                return false;
        }
    }
    if (host_len < n) { /* ":" port, the port digits only (may be empty, §4.2.3) */
        if (v[host_len] != ':' || n - host_len > 6)
            return false;
        for (size_t i = host_len + 1; i < n; i++)
            if (v[i] < '0' || v[i] > '9')
                return false;
    }
    if (host_len > 0 && v[host_len - 1] == '.' && v[0] != '[')
        host_len--; /* "mta-sts.example.org." is the same name */
    if (host_len == 0 || host_len >= sizeof r->host)
        return false;
    for (size_t i = 0; i < host_len; i++) {
        char c = v[i];
        r->host[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    r->host[host_len] = '\0';
    return true;
}

/* The request target (RFC 9112 §3.2): origin-form "/path?query", or absolute-form
 * "http(s)://authority/path" whose authority is the host. The path is kept as sent. */
static enum http_parse_status http_target_set(struct http_request *r, const char *t, size_t n,
                                              bool *has_target_host)
{
    if (n > HTTP_TARGET_MAX)
        return http_fail(r, 414, "request target too long");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return http_fail(r, 400, "bad octet in the request target");
    const char *path = t;
    size_t path_len = n;
    size_t scheme = n >= 7 && strncasecmp(t, "http://", 7) == 0    ? 7
                    : n >= 8 && strncasecmp(t, "https://", 8) == 0 ? 8
                                                                   : 0;
    if (scheme) {
        const char *slash = memchr(t + scheme, '/', n - scheme);
        size_t auth_len = (slash ? (size_t)(slash - t) : n) - scheme;
        if (memchr(t + scheme, '@', auth_len)) /* RFC 9110 §4.2.4: no userinfo */
            return http_fail(r, 400, "userinfo in the request target");
        if (!http_host_set(r, t + scheme, auth_len))
            return http_fail(r, 400, "bad host in the request target");
        *has_target_host = true;
        path = slash ? slash : "/";
        path_len = slash ? n - (size_t)(slash - t) : 1;
    } else if (n == 0 || t[0] != '/') {
        /* asterisk-form (OPTIONS *) and authority-form (CONNECT) are not for us */
        return http_fail(r, 400, "request target is not a path");
    }
    memcpy(r->path, path, path_len);
    r->path[path_len] = '\0';
    return HTTP_PARSE_DONE;
}

/* The request line (RFC 9112 §3): method SP request-target SP HTTP-version. */
static enum http_parse_status http_request_line(struct http_request *r, const char *line, size_t n,
                                                bool *has_target_host)
{
    const char *sp1 = memchr(line, ' ', n);
    if (!sp1 || sp1 == line)
        return http_fail(r, 400, "bad request line");
    size_t ml = (size_t)(sp1 - line);
    for (size_t i = 0; i < ml; i++)
        if (!is_tchar((unsigned char)line[i]))
            return http_fail(r, 400, "bad method");
    if (ml >= sizeof r->method)
        return http_fail(r, 501, "unknown method");
    memcpy(r->method, line, ml);
    r->method[ml] = '\0';
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', n - (size_t)(t - line));
    if (!sp2 || sp2 == t)
        return http_fail(r, 400, "bad request line");
    const char *v = sp2 + 1;
    size_t vl = n - (size_t)(v - line);
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (§2.3) */
    if (vl != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return http_fail(r, 400, "bad HTTP version");
    if (v[5] != '1')
        return http_fail(r, 505, "HTTP version not supported");
    r->version_minor = v[7] == '0' ? 0 : 1; /* 1.2 and later are 1.1 to us (§2.5) */
    return http_target_set(r, t, (size_t)(sp2 - t), has_target_host);
}

/* Content-Length (RFC 9110 §8.6): 1*DIGIT. */
static bool http_content_length(const char *v, size_t n, unsigned long long *out)
{
    if (n == 0 || n > 18)
        return false;
    unsigned long long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (unsigned)(v[i] - '0');
    }
    *out = x;
    return true;
}

enum http_parse_status http_request_parse(const char *data, size_t len, struct http_request *r)
{
    memset(r, 0, sizeof *r);
    if (len > HTTP_HEAD_MAX)
        len = HTTP_HEAD_MAX;
    bool has_bare_lf;
    size_t end = http_head_end(data, len, 0, &has_bare_lf);
    if (has_bare_lf)
        return http_fail(r, 400, "bare LF");
    if (end == 0) {
        const char *nl = memchr(data, '\n', len < HTTP_LINE_MAX ? len : HTTP_LINE_MAX);
        if (!nl && len >= HTTP_LINE_MAX)
            return http_fail(r, 414, "request line too long");
        if (len < HTTP_HEAD_MAX)
            return HTTP_PARSE_INCOMPLETE;
        return http_fail(r, 431, "request header section too large");
    }
    r->head_len = end;
    size_t pos = 0, n_fields = 0, n_host = 0, n_length = 0;
    bool has_target_host = false;
    /* the head is data[0 .. end - 2): lines ending in CRLF, the last one empty */
    while (pos < end - 2) {
        const char *line = data + pos;
        const char *cr = memchr(line, '\r', end - 2 - pos);
        /* every line ends in CR LF: a bare CR or a bare LF inside is an error (§2.2) */
        const char *lf = memchr(line, '\n', end - 2 - pos);
        if (!cr || cr[1] != '\n' || (lf && lf < cr))
            return http_fail(r, 400, "bare CR or LF");
        size_t n = (size_t)(cr - line);
        pos += n + 2;
        if (memchr(line, '\0', n))
            return http_fail(r, 400, "NUL in the request head");
        if (line == data) {
            if (n > HTTP_LINE_MAX)
                return http_fail(r, 414, "request line too long");
            enum http_parse_status st = http_request_line(r, line, n, &has_target_host);
            if (st == HTTP_PARSE_ERROR)
                return st;
            continue;
        }
        if (++n_fields > HTTP_FIELDS_MAX)
            return http_fail(r, 431, "too many header fields");
        /* §5.2: obs-fold may be rejected, and is */
        if (line[0] == ' ' || line[0] == '\t')
            return http_fail(r, 400, "obsolete line folding");
        const char *colon = memchr(line, ':', n);
        if (!colon || colon == line)
            return http_fail(r, 400, "bad header field");
        size_t nl = (size_t)(colon - line);
        for (size_t i = 0; i < nl; i++)
            if (!is_tchar((unsigned char)line[i])) /* §5.1: no white space before ':' */
                return http_fail(r, 400, "bad header field name");
        const char *v = colon + 1;
        size_t vl = n - nl - 1;
        for (size_t i = 0; i < vl; i++)
            if (!is_field_octet((unsigned char)v[i]))
                return http_fail(r, 400, "bad octet in a header field");
        while (vl && (*v == ' ' || *v == '\t')) {
            v++;
            vl--;
        }
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        if (nl == 4 && strncasecmp(line, "Host", 4) == 0) {
            /* RFC 9112 §3.2: one Host, valid; an absolute-form target's host wins */
            if (++n_host > 1)
                return http_fail(r, 400, "more than one Host");
            if (has_target_host)
                continue;
            if (vl == 0) /* an empty Host is allowed only without an authority */
                continue;
            if (!http_host_set(r, v, vl))
                return http_fail(r, 400, "bad Host");
        } else if (nl == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            /* RFC 9112 §6.3: several or invalid lengths are unrecoverable errors */
            if (++n_length > 1 || !http_content_length(v, vl, &r->content_length))
                return http_fail(r, 400, "bad Content-Length");
        } else if (nl == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            r->has_transfer_encoding = true;
        }
    }
    if (r->method[0] == '\0')
        return http_fail(r, 400, "no request line");
    if (r->version_minor == 1 && n_host == 0)
        return http_fail(r, 400, "no Host"); /* RFC 9112 §3.2 */
    if (r->has_transfer_encoding && (n_length || r->version_minor == 0))
        /* RFC 9112 §6.1, §6.3: a smuggling attempt, or not HTTP/1.1 */
        return http_fail(r, 400, "Transfer-Encoding with Content-Length or in HTTP/1.0");
    if (r->has_transfer_encoding)
        return http_fail(r, 501, "request content is not accepted"); /* §6.1 */
    if (r->content_length > 0)
        return http_fail(r, 413, "request content is not accepted");
    return HTTP_PARSE_DONE;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Error";
}
