/*
 * url.c - the IMAP URL parser (RFC 5092 with RFC 4467 URLAUTH), see url.h. Pure, one pass
 * over the octets, every field copied into a fixed-size member.
 */
#include "imap/url.h"
#include "store/dovecot.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Cursor over the URL text. */
struct url_cursor {
    const char *s;
    size_t len, i;
};

/* Does the text at the cursor start with key (case-insensitive)? Consumes it if so. */
static bool url_take(struct url_cursor *c, const char *key)
{
    size_t n = strlen(key);
    if (c->len - c->i < n || strncasecmp(c->s + c->i, key, n) != 0)
        return false;
    c->i += n;
    return true;
}

static int url_hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* RFC 5092 §11 achar/bchar: unreserved, sub-delims but ';' (a parameter separator), ':'
 * '@' (bchar only) and '/' (bchar only); everything else must be %-escaped. */
static bool url_is_char(unsigned char ch, bool is_bchar)
{
    if (isalnum(ch) || strchr("-._~!$&'()*+,=", ch))
        return ch != 0;
    return is_bchar && (ch == ':' || ch == '@' || ch == '/');
}

/* Decode the run of (b)chars at the cursor, up to a stop character, into out (size
 * octets with the NUL). Refuses control octets, overlong text and (unless is_8bit)
 * octets above 127. */
static bool url_decode_run_8bit(struct url_cursor *c, bool is_bchar, bool is_8bit, char *out,
                                size_t size, size_t *n_r)
{
    size_t n = 0;
    while (c->i < c->len) {
        unsigned char ch = (unsigned char)c->s[c->i];
        int v;
        if (ch == '%') {
            int hi = c->i + 2 < c->len ? url_hex(c->s[c->i + 1]) : -1;
            int lo = hi >= 0 ? url_hex(c->s[c->i + 2]) : -1;
            if (lo < 0)
                return false;
            v = hi * 16 + lo;
            c->i += 3;
        } else if (url_is_char(ch, is_bchar)) {
            v = ch;
            c->i++;
        } else {
            break;
        }
        if (v < 0x20 || v == 0x7f || (v > 0x7f && !is_8bit) || n + 1 >= size)
            return false;
        out[n++] = (char)v;
    }
    out[n] = '\0';
    *n_r = n;
    return true;
}

static bool url_decode_run(struct url_cursor *c, bool is_bchar, char *out, size_t size, size_t *n_r)
{
    return url_decode_run_8bit(c, is_bchar, false, out, size, n_r);
}

/* RFC 5092 §3.3: a mailbox name in a URL is UTF-8; IMAP names here are modified UTF-7
 * (RFC 3501 §5.1.3). An ASCII name is taken as it is (RFC 2192 URLs carried the modified
 * UTF-7 form itself, "&AOk-"); one with 8-bit octets is converted. */
static bool url_mailbox_decode(struct url_cursor *c, char *out, size_t size, size_t *n_r)
{
    char raw[IMAP_URL_MAX_MAILBOX + 1];
    size_t n;
    if (!url_decode_run_8bit(c, true, true, raw, sizeof raw, &n))
        return false;
    bool is_ascii = true;
    for (size_t i = 0; i < n && is_ascii; i++)
        is_ascii = (unsigned char)raw[i] < 0x80;
    if (is_ascii) {
        memcpy(out, raw, n + 1);
    } else if (!dovecot_utf8_to_mutf7(raw, n, out, size)) {
        return false;
    }
    *n_r = strlen(out);
    return true;
}

/* number (RFC 3501: up to 2^32-1; zero allowed). */
static bool url_number(struct url_cursor *c, uint64_t *v_r)
{
    if (c->i >= c->len || !isdigit((unsigned char)c->s[c->i]))
        return false;
    uint64_t v = 0;
    while (c->i < c->len && isdigit((unsigned char)c->s[c->i])) {
        v = v * 10 + (uint64_t)(c->s[c->i++] - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *v_r = v;
    return true;
}

/* RFC 5092: nz-number (up to 2^32-1): a number not starting with 0. */
static bool url_nz_number(struct url_cursor *c, uint32_t *v_r)
{
    uint64_t v;
    if (c->i >= c->len || c->s[c->i] == '0' || !url_number(c, &v))
        return false;
    *v_r = (uint32_t)v;
    return true;
}

/* Two digits, a range-checked field of a date-time. */
static bool dt_digits(const char *s, size_t n, int *v_r)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *v_r = v;
    return true;
}

bool imap_url_datetime_parse(const char *s, size_t len, time_t *t_r)
{
    /* RFC 3339 §5.6: full-date "T" full-time; time-secfrac; time-offset "Z" / +-hh:mm */
    int y, mo, d, h, mi, sec;
    if (len < 20 || !dt_digits(s, 4, &y) || s[4] != '-' || !dt_digits(s + 5, 2, &mo) ||
        s[7] != '-' || !dt_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !dt_digits(s + 11, 2, &h) || s[13] != ':' || !dt_digits(s + 14, 2, &mi) || s[16] != ':' ||
        !dt_digits(s + 17, 2, &sec))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    size_t i = 19;
    if (i < len && s[i] == '.') {
        i++;
        size_t st = i;
        while (i < len && isdigit((unsigned char)s[i]))
            i++;
        if (i == st)
            return false;
    }
    long offset = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (!dt_digits(s + i + 1, 2, &oh) || !dt_digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        offset = (long)(oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return false;
    }
    if (i != len)
        return false;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *t_r = timegm(&tm) - offset;
    return true;
}

/* The server part after "imap://": [enc-user[;AUTH=x]@]host[:port], up to '/'. */
static bool url_server(struct url_cursor *c, struct imap_url *u)
{
    const char *at = NULL;
    for (size_t k = c->i; k < c->len && c->s[k] != '/'; k++)
        if (c->s[k] == '@') {
            at = c->s + k;
            break;
        }
    if (at) {
        size_t n;
        if (!url_decode_run(c, false, u->user, sizeof u->user, &n))
            return false;
        if (url_take(c, ";AUTH=")) { /* RFC 5092 iauth: authentication, not ours to use */
            if (c->i < c->len && c->s[c->i] == '*')
                c->i++;
            else {
                char auth[64];
                if (!url_decode_run(c, false, auth, sizeof auth, &n) || n == 0)
                    return false;
            }
        }
        if (c->s + c->i != at)
            return false;
        c->i++;
    }
    size_t n = 0;
    if (c->i < c->len && c->s[c->i] == '[') { /* IP-literal */
        while (c->i < c->len && c->s[c->i] != ']' && n + 2 < sizeof u->host)
            u->host[n++] = c->s[c->i++];
        if (c->i >= c->len || c->s[c->i] != ']')
            return false;
        u->host[n++] = c->s[c->i++];
    } else {
        while (c->i < c->len &&
               (isalnum((unsigned char)c->s[c->i]) || c->s[c->i] == '-' || c->s[c->i] == '.')) {
            if (n + 1 >= sizeof u->host)
                return false;
            u->host[n++] = c->s[c->i++];
        }
    }
    u->host[n] = '\0';
    if (n == 0)
        return false;
    if (c->i < c->len && c->s[c->i] == ':') {
        c->i++;
        size_t st = c->i;
        while (c->i < c->len && isdigit((unsigned char)c->s[c->i]) && c->i - st < 5)
            c->i++;
        if (c->i == st)
            return false;
    }
    return true;
}

/* The access identifier after ";URLAUTH=" (RFC 4467 §3). */
static bool url_access(struct url_cursor *c, struct imap_url *u)
{
    size_t n;
    if (url_take(c, "submit+"))
        u->access = IMAP_URL_ACCESS_SUBMIT;
    else if (url_take(c, "user+"))
        u->access = IMAP_URL_ACCESS_USER;
    else if (url_take(c, "authuser"))
        u->access = IMAP_URL_ACCESS_AUTHUSER;
    else if (url_take(c, "anonymous"))
        u->access = IMAP_URL_ACCESS_ANONYMOUS;
    else
        return false;
    if (u->access == IMAP_URL_ACCESS_SUBMIT || u->access == IMAP_URL_ACCESS_USER) {
        /* enc-user strictly writes '@' as %40; a bare '@' (user+alice@example.test, as
         * imaptest and Dovecot write it) is taken too: the name ends at ':' or the end */
        size_t total = 0;
        for (;;) {
            if (!url_decode_run(c, false, u->access_user + total, sizeof u->access_user - total,
                                &n))
                return false;
            if (n == 0 && total > 0)
                return false; /* "a@" or "a@@b": an empty part */
            total += n;
            if (c->i >= c->len || c->s[c->i] != '@' || total + 2 >= sizeof u->access_user)
                break;
            if (n == 0)
                return false; /* "@b" */
            u->access_user[total++] = '@';
            u->access_user[total] = '\0';
            c->i++;
        }
        if (total == 0)
            return false;
    }
    u->rump_len = c->i;
    if (c->i == c->len)
        return true; /* a rump URL (GENURLAUTH's argument) */
    /* iua-verifier = ":" uauth-mechanism ":" enc-urlauth */
    if (c->s[c->i++] != ':')
        return false;
    size_t m = 0;
    while (c->i < c->len &&
           (isalnum((unsigned char)c->s[c->i]) || c->s[c->i] == '-' || c->s[c->i] == '.')) {
        if (m + 1 >= sizeof u->mechanism)
            return false;
        u->mechanism[m++] = c->s[c->i++];
    }
    u->mechanism[m] = '\0';
    if (m == 0 || c->i >= c->len || c->s[c->i++] != ':')
        return false;
    size_t t = 0;
    while (c->i < c->len && url_hex(c->s[c->i]) >= 0) {
        if (t + 1 >= sizeof u->token)
            return false;
        u->token[t++] = c->s[c->i++];
    }
    u->token[t] = '\0';
    return t >= 32 && c->i == c->len; /* enc-urlauth = 32*HEXDIG */
}

bool imap_url_parse(const char *s, size_t len, struct imap_url *u, const char **error_r)
{
    memset(u, 0, sizeof *u);
    *error_r = "Invalid IMAP URL";
    if (len == 0 || len > IMAP_URL_MAX)
        return false;
    struct url_cursor c = {s, len, 0};
    if (url_take(&c, "imap://")) {
        u->is_absolute = true;
        if (!url_server(&c, u)) {
            *error_r = "Invalid server in IMAP URL";
            return false;
        }
    }
    if (c.i >= len || s[c.i] != '/') {
        *error_r = "IMAP URL must name a message";
        return false;
    }
    c.i++;
    /* enc-mailbox [uidvalidity] "/;UID=": the mailbox may hold '/', it ends at the
     * first ";" (bchar has none) */
    size_t n;
    if (!url_mailbox_decode(&c, u->mailbox, sizeof u->mailbox, &n) || n == 0) {
        *error_r = "Invalid mailbox in IMAP URL";
        return false;
    }
    if (u->mailbox[n - 1] != '/') {
        /* ";UIDVALIDITY=n" then "/;UID=" */
        if (!url_take(&c, ";UIDVALIDITY=") || !url_nz_number(&c, &u->uidvalidity) ||
            !url_take(&c, "/")) {
            *error_r = "IMAP URL must name a message by UID";
            return false;
        }
    } else {
        u->mailbox[--n] = '\0'; /* the "/" before ";UID=" */
        if (n == 0) {
            *error_r = "Invalid mailbox in IMAP URL";
            return false;
        }
    }
    if (!url_take(&c, ";UID=") || !url_nz_number(&c, &u->uid)) {
        *error_r = "IMAP URL must name a message by UID";
        return false;
    }
    if (url_take(&c, "/;SECTION=")) {
        if (!url_decode_run(&c, true, u->section, sizeof u->section, &n) || n == 0) {
            *error_r = "Invalid section in IMAP URL";
            return false;
        }
        /* a trailing "/" belongs to the "/;PARTIAL=" that follows */
        if (u->section[n - 1] == '/') {
            u->section[--n] = '\0';
            c.i--;
        }
    }
    if (url_take(&c, "/;PARTIAL=")) {
        uint32_t l;
        if (!url_number(&c, &u->partial_offset)) {
            *error_r = "Invalid partial range in IMAP URL";
            return false;
        }
        u->has_partial = true;
        if (url_take(&c, ".")) {
            if (!url_nz_number(&c, &l)) {
                *error_r = "Invalid partial range in IMAP URL";
                return false;
            }
            u->partial_length = l;
        }
    }
    if (url_take(&c, ";EXPIRE=")) {
        size_t st = c.i;
        while (c.i < len && s[c.i] != ';')
            c.i++;
        if (!imap_url_datetime_parse(s + st, c.i - st, &u->expire)) {
            *error_r = "Invalid expiry in IMAP URL";
            return false;
        }
        u->has_expire = true;
        if (c.i == len) {
            *error_r = ";EXPIRE= needs ;URLAUTH=";
            return false;
        }
    }
    if (url_take(&c, ";URLAUTH=")) {
        if (!u->is_absolute || !url_access(&c, u)) {
            *error_r = "Invalid URLAUTH in IMAP URL";
            return false;
        }
    }
    if (c.i != len) {
        *error_r = "Invalid IMAP URL";
        return false;
    }
    *error_r = NULL;
    return true;
}

void imap_urlauth_token(const unsigned char *key, size_t key_len, const char *rump, size_t rump_len,
                        char hex_r[IMAP_URL_TOKEN_HEX + 1])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!HMAC(EVP_sha1(), key, (int)key_len, (const unsigned char *)rump, rump_len, mac,
              &mac_len) ||
        mac_len * 2 != IMAP_URL_TOKEN_HEX) {
        hex_r[0] = '\0'; /* no token: nothing verifies against it */
        return;
    }
    static const char digits[] = "0123456789abcdef";
    for (unsigned k = 0; k < mac_len; k++) {
        hex_r[2 * k] = digits[mac[k] >> 4];
        hex_r[2 * k + 1] = digits[mac[k] & 15];
    }
    hex_r[IMAP_URL_TOKEN_HEX] = '\0';
}
