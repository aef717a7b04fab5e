/*
 * urlauth.c - reading what an IMAP URL names (url.h: imap_url_fetch, for CATENATE, URLFETCH
 * and BURL) and the URLAUTH commands (RFC 4467): GENURLAUTH, RESETKEY, URLFETCH.
 *
 * Access (RFC 4467 §3, §6.3): a URL without ;URLAUTH= is read only by its owner and only
 * where that is allowed (CATENATE); one with it is checked, in this order: the mechanism
 * is INTERNAL, the token is HMAC-SHA1 of the rump URL under the owner's access key for
 * that mailbox (compared in constant time), it has not expired, and the access identifier
 * admits the reader ("user+<reader>" for an IMAP session, "submit+<reader>" for BURL on
 * the submission service, "authuser" and "anonymous" for any logged-in reader). Every
 * refusal looks the same to the reader (invalid URL): which check failed is not told.
 */
#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth/auth.h"
#include "imap/msgmap.h"
#include "imap/session.h"
#include "imap/url.h"
#include "store/mime.h"
#include "store/store.h"

#define IMAP_URLAUTH_MAX_URLS 100 /* URLs in one GENURLAUTH or URLFETCH */

static int url_fail(char **error_r, int rc, const char *why)
{
    free(*error_r);
    *error_r = strdup(why);
    return rc;
}

/* The message with uid in the mailbox view, as a view index; false when absent. */
static bool url_find_uid(struct store_mailbox *box, uint32_t uid, size_t *i_r)
{
    size_t lo = 0, hi = store_mailbox_count(box);
    while (lo < hi) { /* UIDs ascend in a view */
        size_t mid = lo + (hi - lo) / 2;
        uint32_t v = store_mailbox_message(box, mid)->uid;
        if (v == uid) {
            *i_r = mid;
            return true;
        }
        if (v < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Does the user a URL names (its iuserinfo or access identifier) stand for canonical?
 * The same text, or a login the directory resolves to it (a bare name in the default
 * domain, an alias domain's login). */
/* A user name without a domain in an absolute URL is qualified with the URL's host:
 * imap://it@example.test/... names it@example.test (our logins are addresses, and an '@'
 * in the user part would have to be written %40, which clients such as imaptest do not). */
static void url_qualify(struct imap_url *u)
{
    char *names[] = {u->user, u->access_user};
    size_t sizes[] = {sizeof u->user, sizeof u->access_user};
    for (size_t i = 0; u->host[0] && i < 2; i++) {
        size_t ul = strlen(names[i]), hl = strlen(u->host);
        if (ul && !strchr(names[i], '@') && ul + 1 + hl < sizes[i]) {
            names[i][ul] = '@';
            memcpy(names[i] + ul + 1, u->host, hl + 1);
        }
    }
}

static bool url_user_is(struct auth_service *auth, const char *given, const char *canonical)
{
    if (strcasecmp(given, canonical) == 0)
        return true;
    struct auth_user au;
    if (!auth || !given[0] || auth_user_lookup(auth, given, &au) != 1)
        return false;
    bool is_same = strcasecmp(au.address, canonical) == 0;
    auth_user_free(&au);
    return is_same;
}

/* May reader r use URL u (URLAUTH parts only; the token is checked apart)? */
static bool url_access_allows(const struct imap_url_reader *r, const struct imap_url *u)
{
    switch (u->access) {
    case IMAP_URL_ACCESS_SUBMIT:
        return r->is_submit && url_user_is(r->auth, u->access_user, r->username);
    case IMAP_URL_ACCESS_USER:
        return !r->is_submit && url_user_is(r->auth, u->access_user, r->username);
    case IMAP_URL_ACCESS_AUTHUSER:
    case IMAP_URL_ACCESS_ANONYMOUS:
        return true; /* every reader here has logged in */
    case IMAP_URL_ACCESS_NONE:
        break;
    }
    return false;
}

/* The message's octets (the section, the partial range) into out, within max. */
static int url_read_message(struct store_user *owner, const struct imap_url *u, uint64_t max,
                            struct buf *out, char **error_r)
{
    struct store_mailbox *box = NULL;
    char *err = NULL;
    if (store_mailbox_open(owner, u->mailbox, true, &box, &err) < 0) {
        free(err);
        return url_fail(error_r, IMAP_URL_BAD, "No such mailbox");
    }
    int rc = IMAP_URL_OK;
    size_t i = 0;
    struct imap_message_map map = {0};
    struct buf data;
    buf_init(&data, 0);
    if ((u->uidvalidity && u->uidvalidity != store_mailbox_uidvalidity(box)) ||
        !url_find_uid(box, u->uid, &i)) {
        rc = url_fail(error_r, IMAP_URL_BAD, "No such message");
    } else if (!imap_message_map(box, i, &map)) {
        rc = url_fail(error_r, IMAP_URL_BAD, "The message cannot be read");
    } else if (!imap_section_extract(map.bytes, map.len, u->section, &data)) {
        rc = url_fail(error_r, IMAP_URL_BAD, "No such section");
    } else {
        /* RFC 5092 §6: ;PARTIAL=offset[.length] of the section's octets */
        size_t from = u->partial_offset < data.len ? (size_t)u->partial_offset : data.len;
        size_t n = data.len - from;
        if (u->has_partial && u->partial_length && u->partial_length < n)
            n = (size_t)u->partial_length;
        if (n > max || out->len > max - n)
            rc = url_fail(error_r, IMAP_URL_TOOBIG, "Too large");
        else if (n && !buf_append(out, data.data + from, n))
            rc = url_fail(error_r, IMAP_URL_TEMP, "Out of memory");
    }
    buf_free(&data);
    imap_message_unmap(&map);
    store_mailbox_close(box);
    return rc;
}

int imap_url_fetch(const struct imap_url_reader *r, const char *url, size_t url_len, uint64_t max,
                   struct buf *out, char **error_r)
{
    struct imap_url u;
    const char *why = NULL;
    if (!imap_url_parse(url, url_len, &u, &why))
        return url_fail(error_r, IMAP_URL_BAD, why);
    url_qualify(&u);
    const char *owner = r->username;
    if (u.access == IMAP_URL_ACCESS_NONE) {
        /* RFC 4469 §5: a plain URL names one of the session's own messages */
        if (r->needs_urlauth)
            return url_fail(error_r, IMAP_URL_BAD, "The URL carries no URLAUTH");
        if (u.is_absolute && !url_user_is(r->auth, u.user, r->username))
            return url_fail(error_r, IMAP_URL_BAD, "Not a URL of this user's mailboxes");
    } else {
        if (!u.mechanism[0] || strcasecmp(u.mechanism, "INTERNAL") != 0 || !u.user[0])
            return url_fail(error_r, IMAP_URL_BAD, "Invalid URLAUTH");
        if ((u.has_expire && r->now >= u.expire) || !url_access_allows(r, &u))
            return url_fail(error_r, IMAP_URL_BAD, "Invalid URLAUTH");
        owner = u.user;
    }
    /* the owner's store: the reader's own when it has one open, else from the directory */
    struct store_user *su = NULL, *opened = NULL;
    if (r->user && strcasecmp(owner, r->username) == 0) {
        su = r->user;
    } else {
        struct auth_user au;
        int lrc = auth_user_lookup(r->auth, owner, &au);
        if (lrc < 0)
            return url_fail(error_r, IMAP_URL_TEMP, "Directory lookup failed");
        if (lrc == 0)
            return url_fail(error_r, IMAP_URL_BAD, "Invalid URLAUTH");
        char *err = NULL;
        int orc = store_user_open(au.home, au.address, &opened, &err);
        auth_user_free(&au);
        free(err);
        if (orc < 0)
            return url_fail(error_r, IMAP_URL_TEMP, "Cannot open the mailboxes");
        su = opened;
    }
    int rc = IMAP_URL_OK;
    if (u.access != IMAP_URL_ACCESS_NONE) {
        unsigned char key[STORE_URLAUTH_KEY_SIZE];
        uint32_t uidvalidity = 0;
        char *err = NULL;
        char want[IMAP_URL_TOKEN_HEX + 1], given[sizeof u.token];
        int krc = store_urlauth_key(su, u.mailbox, false, key, &uidvalidity, &err);
        free(err);
        for (size_t k = 0; k < sizeof given; k++)
            given[k] = (char)tolower((unsigned char)u.token[k]);
        if (krc == 1)
            imap_urlauth_token(key, sizeof key, url, u.rump_len, want);
        OPENSSL_cleanse(key, sizeof key);
        /* RFC 4467 §7: the token must be the one the key gives (constant-time compare) */
        if (krc != 1 || strlen(given) != IMAP_URL_TOKEN_HEX || !want[0] ||
            CRYPTO_memcmp(want, given, IMAP_URL_TOKEN_HEX) != 0)
            rc = url_fail(error_r, IMAP_URL_BAD, "Invalid URLAUTH");
    }
    if (rc == IMAP_URL_OK)
        rc = url_read_message(su, &u, max, out, error_r);
    if (opened)
        store_user_close(opened);
    return rc;
}

void imap_write_badurl(struct buf *out, const char *url)
{
    /* RFC 4469 §6: url-resp-text is TEXT-CHARs except "]"; the URL is cut where it
     * would break that (or grows past a reasonable reply line) */
    buf_append_str(out, "[BADURL ");
    size_t n = 0;
    for (const char *p = url; *p && n < 1024; p++, n++) {
        if (*p == ']' || (unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            break;
        buf_append_byte(out, *p);
    }
    buf_append_byte(out, ']');
}

/* ---- GENURLAUTH ------------------------------------------------------------------------ */

struct imap_urls_job {
    struct imap_job base;
    char **urls; /* GENURLAUTH, URLFETCH: the URLs; RESETKEY: the mailbox (or none) */
    size_t n;
};

static void imap_urls_cleanup(struct imap_job *j)
{
    struct imap_urls_job *uj = IMAP_JOB(imap_urls_job, j);
    for (size_t i = 0; i < uj->n; i++)
        free(uj->urls[i]);
    free(uj->urls);
}

/* A job for the string arguments args[first], args[first + step], ... (NULL: "NO"/"BAD"
 * answered). */
static struct imap_job *imap_urls_job_new(struct imap_session *s, const char *tag,
                                          struct imap_arg *args, size_t n, size_t step,
                                          imap_job_fn *work)
{
    size_t count = (n + step - 1) / step;
    if (count > IMAP_URLAUTH_MAX_URLS) {
        imap_reply(s, tag, "NO [LIMIT] Too many URLs in one command.");
        return NULL;
    }
    struct imap_job *j =
        imap_job_new(s, tag, sizeof(struct imap_urls_job), work, NULL, imap_urls_cleanup);
    if (!j)
        return NULL;
    struct imap_urls_job *uj = IMAP_JOB(imap_urls_job, j);
    uj->urls = calloc(count ? count : 1, sizeof *uj->urls);
    for (size_t i = 0; uj->urls && i < n; i += step) {
        if (!(uj->urls[uj->n] = strndup(args[i].str, args[i].len)))
            break;
        uj->n++;
    }
    if (uj->n != count) {
        imap_job_discard(s, j);
        return NULL;
    }
    return j;
}

/* Pool thread: RFC 4467 §6.2, each rump URL with its token. */
static void imap_genurlauth_work(struct imap_job *j)
{
    struct imap_urls_job *uj = IMAP_JOB(imap_urls_job, j);
    struct buf line;
    buf_init(&line, 0);
    buf_append_str(&line, "* GENURLAUTH");
    for (size_t i = 0; i < uj->n; i++) {
        const char *url = uj->urls[i];
        struct imap_url u;
        const char *why = NULL;
        /* an absolute URL of one of the user's own messages, ending in ;URLAUTH=<access> */
        bool is_parsed = imap_url_parse(url, strlen(url), &u, &why);
        if (is_parsed)
            url_qualify(&u);
        if (!is_parsed || !u.is_absolute ||
            u.access == IMAP_URL_ACCESS_NONE || u.mechanism[0] ||
            !url_user_is(j->ctx.auth, u.user, j->ctx.username)) {
            buf_free(&line);
            struct buf code;
            buf_init(&code, 0);
            imap_write_badurl(&code, url);
            imap_job_err(j, "%s Invalid URL for GENURLAUTH", buf_steal(&code));
            buf_free(&code);
            return;
        }
        unsigned char key[STORE_URLAUTH_KEY_SIZE];
        uint32_t uidvalidity = 0;
        char *err = NULL;
        if (store_urlauth_key(j->ctx.user, u.mailbox, true, key, &uidvalidity, &err) != 1) {
            buf_free(&line);
            imap_job_err(j, "GENURLAUTH failed: %s", err);
            return;
        }
        if (u.uidvalidity && u.uidvalidity != uidvalidity) {
            OPENSSL_cleanse(key, sizeof key);
            buf_free(&line);
            imap_job_err(j, "GENURLAUTH failed: %s", strdup("UIDVALIDITY has changed"));
            return;
        }
        char token[IMAP_URL_TOKEN_HEX + 1];
        imap_urlauth_token(key, sizeof key, url, u.rump_len, token);
        OPENSSL_cleanse(key, sizeof key);
        struct buf full;
        buf_init(&full, 0);
        buf_printf(&full, "%s:internal:%s", url, token);
        buf_append_byte(&line, ' ');
        mime_write_nstring(&line, full.data, full.len, false);
        buf_free(&full);
    }
    buf_append_str(&line, "\r\n");
    buf_append(&j->out, line.data, line.len);
    buf_free(&line);
    imap_job_ok(j, "GENURLAUTH completed.");
}

void imap_cmd_genurlauth(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                         bool is_uid)
{
    /* GENURLAUTH url mechanism *(SP url mechanism) */
    bool ok = n >= 2 && n % 2 == 0;
    for (size_t i = 0; ok && i < n; i += 2) {
        ok = imap_arg_is_string(&args[i]) && imap_arg_is_string(&args[i + 1]);
        if (ok && strcasecmp(args[i + 1].str, "INTERNAL") != 0) {
            imap_reply(s, tag, "NO Unknown URLAUTH mechanism.");
            return;
        }
    }
    if (!ok) {
        imap_reply(s, tag, "BAD Usage: GENURLAUTH url mechanism [url mechanism ...]");
        return;
    }
    struct imap_job *j = imap_urls_job_new(s, tag, args, n, 2, imap_genurlauth_work);
    if (j)
        imap_job_submit(s, j);
}

/* ---- RESETKEY ------------------------------------------------------------------------------ */

/* Pool thread: RFC 4467 §6.1, forget one mailbox's key or all of them. */
static void imap_resetkey_work(struct imap_job *j)
{
    struct imap_urls_job *uj = IMAP_JOB(imap_urls_job, j);
    char *err = NULL;
    if (store_urlauth_reset(j->ctx.user, uj->n ? uj->urls[0] : NULL, &err) < 0) {
        imap_job_err(j, "RESETKEY failed: %s", err);
        return;
    }
    imap_job_ok(j, uj->n ? "[URLMECH INTERNAL] Key removed." : "All keys removed.");
}

void imap_cmd_resetkey(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                       bool is_uid)
{
    /* RESETKEY [mailbox *(SP mechanism)] */
    for (size_t i = 0; i < n; i++) {
        if (!imap_arg_is_string(&args[i])) {
            imap_reply(s, tag, "BAD Usage: RESETKEY [mailbox [mechanism ...]]");
            return;
        }
        if (i > 0 && strcasecmp(args[i].str, "INTERNAL") != 0) {
            imap_reply(s, tag, "NO Unknown URLAUTH mechanism.");
            return;
        }
    }
    /* a UTF-8 session (IMAP4rev2, UTF8=ACCEPT) names it in UTF-8 */
    char *name = n ? imap_session_mailbox_name(s, &args[0]) : NULL;
    if (n && !name) {
        imap_reply(s, tag, "BAD Invalid mailbox name.");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_urls_job), imap_resetkey_work,
                                      NULL, imap_urls_cleanup);
    if (!j) {
        free(name);
        return;
    }
    struct imap_urls_job *uj = IMAP_JOB(imap_urls_job, j);
    if (name) {
        uj->urls = malloc(sizeof *uj->urls);
        if (!uj->urls) {
            free(name);
            imap_job_discard(s, j);
            return;
        }
        uj->urls[0] = name;
        uj->n = 1;
    }
    imap_job_submit(s, j);
}

/* ---- URLFETCH ------------------------------------------------------------------------------ */

/* Pool thread: RFC 4467 §6.3, each URL's data or NIL. */
static void imap_urlfetch_work(struct imap_job *j)
{
    struct imap_urls_job *uj = IMAP_JOB(imap_urls_job, j);
    struct imap_url_reader r = {.auth = j->ctx.auth,
                                .user = j->ctx.user,
                                .username = j->ctx.username,
                                .needs_urlauth = true,
                                .now = time(NULL)};
    /* each URL within the message size limit, all of them within a few messages (as
     * MULTIAPPEND's literals) */
    uint64_t max = j->ctx.max_append, total = max * IMAP_APPEND_TOTAL_FACTOR, sent = 0;
    struct buf data;
    buf_init(&data, 0);
    for (size_t i = 0; i < uj->n; i++) {
        const char *url = uj->urls[i];
        char *err = NULL;
        buf_reset(&data);
        int rc = imap_url_fetch(&r, url, strlen(url), max, &data, &err);
        free(err);
        if (rc == IMAP_URL_TEMP) {
            buf_free(&data);
            imap_job_err(j, "URLFETCH failed: %s", strdup("temporary failure, try again"));
            return;
        }
        if (rc == IMAP_URL_OK && data.len > total - sent) {
            buf_free(&data);
            imap_job_err(j, "[LIMIT] %s", strdup("URLFETCH data too large"));
            return;
        }
        buf_append_str(&j->out, "* URLFETCH ");
        mime_write_nstring(&j->out, url, strlen(url), false);
        buf_append_byte(&j->out, ' ');
        if (rc == IMAP_URL_OK) {
            buf_printf(&j->out, "{%zu}\r\n", data.len);
            buf_append(&j->out, data.data ? data.data : "", data.len);
            sent += data.len;
        } else {
            buf_append_str(&j->out, "NIL"); /* RFC 4467 §6.3: invalid URL */
        }
        buf_append_str(&j->out, "\r\n");
    }
    buf_free(&data);
    imap_job_ok(j, "URLFETCH completed.");
}

void imap_cmd_urlfetch(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                       bool is_uid)
{
    bool ok = n >= 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = imap_arg_is_string(&args[i]);
    if (!ok) {
        imap_reply(s, tag, "BAD Usage: URLFETCH url [url ...]");
        return;
    }
    struct imap_job *j = imap_urls_job_new(s, tag, args, n, 1, imap_urlfetch_work);
    if (j)
        imap_job_submit(s, j);
}
