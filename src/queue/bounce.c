/*
 * bounce.c - RFC 3464 delivery status notifications (multipart/report, RFC 6522) for
 * messages the queue runner cannot deliver: a human-readable part, the machine-readable
 * message/delivery-status part, and the original headers (text/rfc822-headers), in the
 * shape Postfix's bounce daemon produces so admins recognise them.
 *
 * Pure functions: the caller decides where the DSN goes (never to the null sender).
 */
#include "queue/outbound.h"

#include "core/util.h"
#include "queue/queue.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Length of the header block, including the empty line that ends it. */
size_t bounce_header_length(const char *msg, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (msg[i] != '\n')
            continue;
        if (msg[i + 1] == '\n')
            return i + 2;
        if (msg[i + 1] == '\r' && i + 2 < len && msg[i + 2] == '\n')
            return i + 3;
    }
    return len;
}

/* Append text converting bare LF to CRLF and dropping NULs (the part is 7bit-safe-ish). */
static bool append_crlf(struct buf *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\0')
            continue;
        if (c == '\n' && (i == 0 || s[i - 1] != '\r')) {
            if (!buf_append(out, "\r\n", 2))
                return false;
            continue;
        }
        if (!buf_append_byte(out, c))
            return false;
    }
    return true;
}

/* A diagnostic on one line: CR/LF of multi-line replies become spaces. */
static bool append_oneline(struct buf *out, const char *s)
{
    for (const char *p = s; *p; p++)
        if (!buf_append_byte(out, (*p == '\r' || *p == '\n' || *p == '\t') ? ' ' : *p))
            return false;
    return true;
}

bool bounce_build(struct buf *out, const struct bounce_info *info, const struct bounce_rcpt *r,
                  size_t n)
{
    char date[64], arrival[64];
    util_rfc5322_date(info->now, date, sizeof date);
    util_rfc5322_date(info->arrival, arrival, sizeof arrival);
    bool is_delay = n > 0, is_success = n > 0;
    for (size_t i = 0; i < n; i++) {
        is_delay = is_delay && r[i].is_delayed;
        /* RFC 3464 §2.3.3: success notices say "delivered" or "relayed" */
        is_success = is_success && r[i].action &&
                     (strcmp(r[i].action, "delivered") == 0 || strcmp(r[i].action, "relayed") == 0);
    }
    bool ok = true;
    ok = ok && buf_printf(out, "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n", info->hostname);
    ok = ok && buf_printf(out, "To: <%s>\r\n", info->to);
    ok = ok && buf_printf(out, "Subject: %s\r\n",
                          is_success ? "Successful Mail Delivery Report"
                          : is_delay ? "Delayed Mail (still being retried)"
                                     : "Undelivered Mail Returned to Sender");
    ok = ok && buf_printf(out, "Date: %s\r\n", date);
    ok = ok && buf_printf(out, "Message-ID: <%s.%s@%s>\r\n", info->boundary, info->queue_id,
                          info->hostname);
    /* RFC 3834 §5: machine-generated, so auto-responders stay quiet */
    ok = ok && buf_printf(out, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    ok = ok && buf_printf(out,
                          "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                          "\tboundary=\"%s\"\r\n\r\n",
                          info->boundary);
    ok = ok && buf_printf(out, "This is a MIME-encapsulated message.\r\n\r\n");

    /* 1: for humans */
    ok = ok && buf_printf(out,
                          "--%s\r\nContent-Description: Notification\r\n"
                          "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
                          info->boundary);
    ok = ok && buf_printf(out, "This is the mail system at host %s.\r\n\r\n", info->hostname);
    if (is_success)
        ok = ok &&
             buf_printf(out, "Your message was successfully delivered to the destination(s)\r\n"
                             "listed below. If the message was delivered to mailbox you will\r\n"
                             "receive no further notifications. Otherwise you may still\r\n"
                             "receive notifications of mail delivery errors from other\r\n"
                             "systems.\r\n\r\n"
                             "                   The mail system\r\n\r\n");
    else if (is_delay)
        ok = ok && buf_printf(out, "####################################################\r\n"
                                   "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND #\r\n"
                                   "####################################################\r\n\r\n"
                                   "Your message could not be delivered yet. The mail system\r\n"
                                   "will keep trying.\r\n\r\n");
    else
        ok = ok &&
             buf_printf(out, "I'm sorry to have to inform you that your message could not\r\n"
                             "be delivered to one or more recipients. It's attached below.\r\n\r\n"
                             "                   The mail system\r\n\r\n");
    for (size_t i = 0; ok && i < n; i++) {
        ok = buf_printf(out, "<%s>: ", r[i].address) && append_oneline(out, r[i].diagnostic) &&
             buf_append_str(out, "\r\n\r\n");
    }

    /* 2: RFC 3464 §2.2 per-message fields, §2.3 per-recipient fields */
    ok = ok && buf_printf(out,
                          "--%s\r\nContent-Description: Delivery report\r\n"
                          "Content-Type: message/delivery-status\r\n\r\n",
                          info->boundary);
    /* RFC 3461 §4.4 / RFC 3464 §2.2.1: the sender's ENVID comes back first */
    if (ok && info->envid && info->envid[0])
        ok = buf_append_str(out, "Original-Envelope-Id: ") && append_oneline(out, info->envid) &&
             buf_append_str(out, "\r\n");
    ok = ok && buf_printf(out,
                          "Reporting-MTA: dns; %s\r\nX-Tern-Queue-ID: %s\r\n"
                          "Arrival-Date: %s\r\n",
                          info->hostname, info->queue_id, arrival);
    for (size_t i = 0; ok && i < n; i++) {
        ok = buf_append_str(out, "\r\n");
        /* RFC 3464 §2.3.1: the ORCPT as the client gave it */
        if (ok && r[i].orcpt && r[i].orcpt[0])
            ok = buf_append_str(out, "Original-Recipient: ") && append_oneline(out, r[i].orcpt) &&
                 buf_append_str(out, "\r\n");
        const char *action = r[i].action ? r[i].action : r[i].is_delayed ? "delayed" : "failed";
        ok = ok && buf_printf(out, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n",
                              r[i].address, action, r[i].dsn);
        if (ok && r[i].remote_mta && r[i].remote_mta[0])
            ok = buf_printf(out, "Remote-MTA: dns; %s\r\n", r[i].remote_mta);
        if (ok) {
            /* "smtp;" for what a server said (RFC 3464 §2.3.6), our own reasons as
             * "X-Tern;" */
            bool is_smtp = r[i].smtp_reply && r[i].smtp_reply[0];
            ok = buf_printf(out, "Diagnostic-Code: %s; ", is_smtp ? "smtp" : "X-Tern") &&
                 append_oneline(out, is_smtp ? r[i].smtp_reply : r[i].diagnostic) &&
                 buf_append_str(out, "\r\n");
        }
    }

    /* 3: the original headers (RFC 6522 allows text/rfc822-headers instead of the body) */
    ok = ok && buf_printf(out,
                          "\r\n--%s\r\nContent-Description: %s Message%s\r\n"
                          "Content-Type: %s\r\n\r\n",
                          info->boundary, is_success ? "Delivered" : "Undelivered",
                          info->is_full_message ? "" : " Headers",
                          /* RFC 3461 §4.3 RET=FULL: the message itself (RFC 3464 §2.1) */
                          info->is_full_message ? "message/rfc822" : "text/rfc822-headers");
    if (ok && info->headers && info->headers_len)
        ok = append_crlf(out, info->headers, info->headers_len);
    if (ok && out->len >= 2 && memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
        ok = buf_append_str(out, "\r\n");
    ok = ok && buf_printf(out, "\r\n--%s--\r\n", info->boundary);
    return ok;
}

int bounce_queue_notice(const char *data_dir, const struct bounce_info *info,
                        const struct bounce_rcpt *r, size_t n, char *new_id_r, char **error_r)
{
    char new_id[UTIL_QUEUE_ID_SIZE], boundary[96];
    util_queue_id(new_id);
    snprintf(boundary, sizeof boundary, "%s.%lld/%s", new_id, (long long)time(NULL),
             info->hostname);
    struct bounce_info bi = *info;
    if (!bi.boundary)
        bi.boundary = boundary;
    struct buf dsn;
    buf_init(&dsn, 0);
    if (!bounce_build(&dsn, &bi, r, n)) {
        buf_free(&dsn);
        if (error_r)
            *error_r = strdup("cannot build the notification");
        return -1;
    }
    struct store_source src = {.data = dsn.data, .len = dsn.len, .fd = -1, .size = dsn.len};
    const char *rcpt[1] = {info->to};
    int ret = queue_enqueue(data_dir, new_id, "", rcpt, 1, NULL, &src, error_r);
    buf_free(&dsn);
    if (ret == 0 && new_id_r)
        snprintf(new_id_r, 32, "%s", new_id);
    return ret;
}
