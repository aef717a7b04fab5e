/*
 * reply.c - SMTP replies and the Postfix-style log lines that go with them
 * (DESIGN §5): reject lines, the per-verb statistics of "disconnect from ...".
 */
#include "core/config.h"
#include "core/log.h"
#include "smtp/session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *smtp_hostname(const struct smtp_session *s)
{
    return s->cfg && s->cfg->hostname ? s->cfg->hostname : "localhost";
}

void smtp_log_safe(const char *in, char *out, size_t size)
{
    size_t n = 0;
    if (size == 0)
        return;
    for (; in && *in && n + 1 < size; in++)
        out[n++] = ((unsigned char)*in < 32 || *in == 127) ? '?' : *in;
    out[n] = '\0';
}

void smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
    char line[SMTP_REPLY_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line - 2 ? (size_t)n : sizeof line - 3;
    /* RFC 5321 §4.2: the reply code decides; the counters feed max_errors and stats. */
    int code = atoi(line);
    if (code >= 400)
        s->n_errors++;
    else if (code >= 200 && code < 300 && s->cur_verb < SMTP_VERB_COUNT)
        s->stat_ok[s->cur_verb]++;
    line[len++] = '\r';
    line[len++] = '\n';
    conn_write(s->c, line, len);
}

void smtp_reply_message(struct smtp_session *s, unsigned n_rcpt, const char *fmt, ...)
{
    char line[SMTP_REPLY_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    unsigned n = s->role == CONN_ROLE_LMTP && n_rcpt > 0 ? n_rcpt : 1;
    for (unsigned i = 0; i < n; i++)
        smtp_reply(s, "%s", line);
}

/* "<id>: <what>: <cmd> from ..." for our own refusals and the milters'. */
static void log_reject(struct smtp_session *s, const char *what, const char *cmd,
                       const char *reply, const char *to)
{
    const char *id = s->txn.has_queue_id ? s->txn.queue_id : "NOQUEUE";
    char from[ADDR_MAX_PATH + 16] = "";
    if (s->txn.is_active)
        snprintf(from, sizeof from, " from=<%s>", s->txn.from_text);
    char tobuf[ADDR_MAX_PATH + 16] = "";
    if (to)
        snprintf(tobuf, sizeof tobuf, " to=<%s>", to);
    log_info("smtpd", "%s: %s: %s from %s: %s;%s%s proto=%s helo=<%s>", id, what, cmd, s->peer,
             reply, from, tobuf, s->is_esmtp ? "ESMTP" : "SMTP", s->helo);
}

void smtp_log_reject(struct smtp_session *s, const char *cmd, const char *reply, const char *to)
{
    log_reject(s, "reject", cmd, reply, to);
}

void smtp_log_milter_reject(struct smtp_session *s, const char *cmd, const char *reply,
                            const char *to)
{
    log_reject(s, "milter-reject", cmd, reply, to);
}

/* Postfix's order for the disconnect statistics. */
static const enum smtp_verb stat_order[] = {
    SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_STARTTLS, SMTP_VERB_AUTH,
    SMTP_VERB_MAIL, SMTP_VERB_RCPT, SMTP_VERB_DATA,     SMTP_VERB_BDAT, SMTP_VERB_BURL,
    SMTP_VERB_RSET, SMTP_VERB_NOOP, SMTP_VERB_VRFY,     SMTP_VERB_ETRN,
    SMTP_VERB_QUIT, SMTP_VERB_HELP, SMTP_VERB_EXPN,     SMTP_VERB_UNKNOWN,
};

void smtp_stats_format(const struct smtp_session *s, struct buf *out)
{
    unsigned total = 0, ok = 0;
    for (size_t i = 0; i < sizeof stat_order / sizeof stat_order[0]; i++) {
        enum smtp_verb v = stat_order[i];
        unsigned t = s->stat_total[v], k = s->stat_ok[v];
        if (k > t)
            k = t;
        if (t == 0)
            continue;
        total += t;
        ok += k;
        if (k == t)
            buf_printf(out, " %s=%u", smtp_verb_stat_name(v), t);
        else
            buf_printf(out, " %s=%u/%u", smtp_verb_stat_name(v), k, t);
    }
    total += s->stat_total[SMTP_VERB_NON_SMTP];
    if (ok == total)
        buf_printf(out, " commands=%u", total);
    else
        buf_printf(out, " commands=%u/%u", ok, total);
}
