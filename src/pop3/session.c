/*
 * session.c - the POP3 session on a connection: the conn_protocol callbacks, input framing
 * (RFC 2449 §4 255-octet lines, PIPELINING), the command table, replies, error limit,
 * idle timeout, workpool jobs and the Dovecot-style log lines (DESIGN §5).
 *
 * Flow: on_read frames lines and runs commands in order. A command that needs blocking
 * work (login, opening a message, QUIT's expunge) pauses reads and runs a workpool job;
 * a long reply (LIST, UIDL, RETR, TOP) is written in pieces from on_drained. Either way no
 * further pipelined command runs until it has finished, so replies stay in order
 * (RFC 2449 §6.6 PIPELINING).
 */
#include "pop3/pop3.h"
#include "pop3/session.h"

#include "auth/auth.h"
#include "core/config.h"
#include "core/workpool.h"
#include "core/log.h"
#include "store/store.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- replies and errors ------------------------------------------------------------ */

void pop3_reply(struct pop3_session *s, const char *line)
{
    conn_write_str(s->conn, line);
    conn_write(s->conn, "\r\n", 2);
}

void pop3_replyf(struct pop3_session *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    size_t len = (size_t)n < sizeof line - 2 ? (size_t)n : sizeof line - 3;
    line[len++] = '\r';
    line[len++] = '\n';
    conn_write(s->conn, line, len);
}

bool pop3_error(struct pop3_session *s, const char *reply)
{
    s->errors++;
    if (s->errors >= POP3_MAX_ERRORS) {
        /* A client that keeps sending garbage is not a mail client: hang up. */
        pop3_reply(s, "-ERR Too many invalid commands.");
        s->close_reason = "Too many invalid commands";
        pop3_close(s);
        return true;
    }
    pop3_reply(s, reply);
    return false;
}

void pop3_close(struct pop3_session *s)
{
    s->is_quitting = true;
    conn_close(s->conn);
}

void pop3_auth_peer(struct pop3_session *s, struct auth_peer *peer_r)
{
    peer_r->service = "pop3";
    peer_r->ip = conn_peer_ip(s->conn);
    peer_r->is_tls = conn_is_tls(s->conn);
    peer_r->is_loopback = conn_peer_is_loopback(s->conn);
}

/* ---- lifetime ---------------------------------------------------------------------- */

void pop3_maildrop_release(struct pop3_session *s)
{
    /* A dropped connection deletes nothing (RFC 1939 §6: only QUIT enters UPDATE). These
     * calls are quick (lock release, closing handles) and run on the loop. */
    pop3_maildrop_close(&s->md);
    free(s->msgs);
    free(s->uidls);
    s->msgs = NULL;
    s->n_msgs = 0;
}

void pop3_maildrop_close(struct pop3_maildrop *md)
{
    if (md->is_locked && md->store != NULL)
        store_pop3_unlock(md->store);
    md->is_locked = false;
    if (md->box != NULL)
        store_mailbox_close(md->box);
    md->box = NULL;
    if (md->store != NULL)
        store_user_close(md->store);
    md->store = NULL;
}

void pop3_session_free(struct pop3_session *s)
{
    pop3_stream_abort(s);
    pop3_prefetch_clear(s);
    pop3_maildrop_release(s);
    if (s->sasl != NULL)
        auth_sasl_free(s->sasl);
    free(s->user_arg);
    free(s->user);
    free(s);
}

void pop3_job_start(struct pop3_session *s, struct job *job)
{
    pop3_job_start_delayed(s, job, 0);
}

void pop3_job_start_delayed(struct pop3_session *s, struct job *job, unsigned delay_ms)
{
    s->has_job = true;
    conn_pause_read(s->conn);
    job_submit_delayed(conn_server(s->conn)->pool, job, delay_ms);
}

void pop3_job_finish(struct pop3_session *s)
{
    s->has_job = false;
}

/* ---- command table ----------------------------------------------------------------- */

#define IN_AUTH  (1u << POP3_STATE_AUTHORIZATION)
#define IN_TRANS (1u << POP3_STATE_TRANSACTION)

typedef void pop3_handler(struct pop3_session *s, const char *args, size_t len);

struct pop3_command_def {
    pop3_handler *handler;
    unsigned states; /* IN_* bits where the command is valid (RFC 1939 §4-§6) */
};

static const struct pop3_command_def commands[POP3_VERB_COUNT_] = {
    [POP3_VERB_CAPA] = {pop3_cmd_capa, IN_AUTH | IN_TRANS}, /* RFC 2449 §5 */
    [POP3_VERB_QUIT] = {pop3_cmd_quit, IN_AUTH | IN_TRANS},
    [POP3_VERB_STLS] = {pop3_cmd_stls, IN_AUTH}, /* RFC 2595 §4 */
    [POP3_VERB_USER] = {pop3_cmd_user, IN_AUTH},
    [POP3_VERB_PASS] = {pop3_cmd_pass, IN_AUTH},
    [POP3_VERB_APOP] = {pop3_cmd_apop, IN_AUTH},
    [POP3_VERB_AUTH] = {pop3_cmd_auth, IN_AUTH}, /* RFC 5034 */
    [POP3_VERB_STAT] = {pop3_cmd_stat, IN_TRANS},
    [POP3_VERB_LIST] = {pop3_cmd_list, IN_TRANS},
    [POP3_VERB_RETR] = {pop3_cmd_retr, IN_TRANS},
    [POP3_VERB_DELE] = {pop3_cmd_dele, IN_TRANS},
    [POP3_VERB_NOOP] = {pop3_cmd_noop, IN_TRANS},
    [POP3_VERB_RSET] = {pop3_cmd_rset, IN_TRANS},
    [POP3_VERB_TOP] = {pop3_cmd_top, IN_TRANS},
    [POP3_VERB_UIDL] = {pop3_cmd_uidl, IN_TRANS},
};

static void run_line(struct pop3_session *s, const char *line, size_t len)
{
    if (s->sasl != NULL || s->is_sasl_final) {
        pop3_sasl_line(s, line, len); /* RFC 5034 §4: a response, not a command */
        return;
    }
    struct pop3_command cmd;
    if (!pop3_command_parse(line, len, &cmd) || cmd.verb == POP3_VERB_UNKNOWN) {
        pop3_error(s, "-ERR Unknown command.");
        return;
    }
    const struct pop3_command_def *def = &commands[cmd.verb];
    if (def->handler == NULL || (def->states & (1u << s->state)) == 0) {
        pop3_error(s, s->state == POP3_STATE_AUTHORIZATION
                          ? "-ERR [AUTH] Not logged in."
                          : "-ERR Command not valid in this state.");
        return;
    }
    def->handler(s, cmd.args, cmd.args_len);
}

/* Is the session waiting for something other than the next command? */
static bool is_busy(const struct pop3_session *s)
{
    return s->has_job || s->stream.kind != POP3_STREAM_NONE || s->is_quitting ||
           conn_is_stopping(s->conn) ||
           s->is_tls_pending;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Slowloris: the idle timeout is re-armed by every read, so a peer dribbling one octet
 * of a line just inside it would hold the session forever. A line must be complete
 * within the same timeout, counted from its first octet. True when the session ended. */
static bool line_deadline_passed(struct pop3_session *s)
{
    uint64_t now = now_ms();
    if (s->line_started_ms == 0) {
        s->line_started_ms = now;
        return false;
    }
    const struct config *cfg = conn_server(s->conn)->cfg;
    uint64_t limit = (uint64_t)(cfg != NULL && cfg->pop3_timeout ? cfg->pop3_timeout : 600) * 1000;
    if (now - s->line_started_ms < limit)
        return false;
    pop3_reply(s, "-ERR Disconnected for inactivity.");
    s->close_reason = "Disconnected for inactivity";
    pop3_close(s);
    return true;
}

/* Queued output above which no further command is taken (see process_input). */
#define POP3_OUTPUT_HIGH_WATER (4 * CONN_OUTPUT_LOW_WATER)

/* Run every complete command line already received, in order, until one must wait. */
static void process_input(struct pop3_session *s)
{
    /* Bounded: each turn consumes input or stops; the input is capped by the core. */
    while (!is_busy(s)) {
        if (conn_output_length(s->conn) >= POP3_OUTPUT_HIGH_WATER) {
            /* A client that pipelines CAPA or STAT forever and never reads would grow
             * our output without bound: stop taking commands (the core then stops
             * reading the socket) until on_drained. Paused, so a half-close still gets
             * every pipelined command answered. */
            s->is_output_paused = true;
            conn_pause_read(s->conn);
            return;
        }
        /* Fetched each turn: STLS swaps the connection's buffers (and drops what was
         * pipelined behind it, RFC 2595 §4 / CVE-2011-0411). */
        struct evbuffer *in = conn_input(s->conn);
        size_t avail = evbuffer_get_length(in);
        if (avail == 0) {
            if (!s->lines.is_discarding)
                s->line_started_ms = 0; /* no partial line pending */
            else
                (void)line_deadline_passed(s); /* an over-long line still being dropped */
            return;
        }
        bool is_sasl = s->sasl != NULL || s->is_sasl_final;
        size_t max = is_sasl ? POP3_SASL_LINE_MAX : POP3_LINE_MAX;
        size_t window = s->lines.is_discarding ? 64 * 1024 : max;
        size_t n = avail < window ? avail : window;
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
        if (p == NULL)
            return;
        size_t line_len = 0, consumed = 0;
        enum pop3_line_result r = pop3_line_next(&s->lines, p, n, max, &line_len, &consumed);
        if (r != POP3_LINE_NEED_MORE)
            s->line_started_ms = 0; /* a line ended: the next one's clock starts anew */
        if (r == POP3_LINE_OK) {
            char line[POP3_SASL_LINE_MAX + 1];
            memcpy(line, p, line_len);
            line[line_len] = '\0';
            evbuffer_drain(in, consumed);
            run_line(s, line, line_len);
            explicit_bzero(line, line_len); /* may have held a password */
            continue;
        }
        evbuffer_drain(in, consumed);
        if (r == POP3_LINE_TOO_LONG) {
            if (is_sasl) {
                /* An over-long SASL response ends the exchange like a malformed one. */
                if (s->sasl != NULL)
                    auth_sasl_free(s->sasl);
                s->sasl = NULL;
                if (s->is_sasl_final) {
                    pop3_maildrop_release(s);
                    free(s->user);
                    s->user = NULL;
                    s->is_sasl_final = false;
                }
            }
            pop3_error(s, "-ERR Line too long.");
            continue;
        }
        if (consumed == 0) {
            (void)line_deadline_passed(s);
            return; /* wait for the rest of the line */
        }
    }
}

void pop3_resume(struct pop3_session *s)
{
    conn_resume_read(s->conn);
    process_input(s);
}

/* ---- conn_protocol callbacks --------------------------------------------------------- */

struct pop3_session *pop3_session_new(struct conn *c)
{
    struct pop3_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->conn = c;
    s->handle = job_session_add(s);
    s->state = POP3_STATE_AUTHORIZATION;
    s->stream.fd = -1;
    const struct config *cfg = conn_server(c)->cfg;
    conn_set_timeout(c, cfg != NULL ? cfg->pop3_timeout : 600);
    return s;
}

static void *pop3_open(struct conn *c)
{
    struct pop3_session *s = pop3_session_new(c);
    if (s != NULL)
        pop3_greeting(s);
    return s;
}

static void pop3_on_read(void *session, struct conn *c)
{
    process_input(session);
}

static void pop3_on_drained(void *session, struct conn *c)
{
    struct pop3_session *s = session;
    if (s->is_output_paused && s->stream.kind == POP3_STREAM_NONE) {
        s->is_output_paused = false;
        pop3_resume(s);
        return;
    }
    if (s->stream.kind == POP3_STREAM_NONE)
        return;
    if (pop3_stream_continue(s))
        pop3_resume(s);
}

static void pop3_on_tls(void *session, struct conn *c)
{
    struct pop3_session *s = session;
    /* RFC 2595 §4: the client must forget what it learnt before; so do we (a USER name
     * given in clear is dropped). The APOP timestamp of the greeting stays valid. */
    s->is_tls_pending = false;
    free(s->user_arg);
    s->user_arg = NULL;
    pop3_resume(s);
}

static void pop3_on_timeout(void *session, struct conn *c)
{
    struct pop3_session *s = session;
    /* Never inside a multi-line reply: the farewell would read as message text. */
    if (s->stream.kind == POP3_STREAM_NONE)
        pop3_reply(s, "-ERR Disconnected for inactivity.");
    s->close_reason = "Disconnected for inactivity";
}

/* The Dovecot-style line that closes every session's story in the log. */
static void log_disconnect(struct pop3_session *s, const char *reason)
{
    const char *rip = conn_peer_ip(s->conn);
    const char *lip = conn_local_ip(s->conn);
    const char *tls = conn_is_tls(s->conn) ? ", TLS" : "";
    if (s->close_reason != NULL)
        reason = s->close_reason;
    else if (s->is_quitting)
        reason = "Logged out";
    else if (reason == NULL || reason[0] == '\0')
        reason = "Connection closed";

    if (s->user != NULL) {
        size_t n_del = 0;
        for (size_t i = 0; i < s->n_msgs; i++)
            n_del += s->msgs[i].is_deleted ? 1 : 0;
        if (!s->has_deleted_on_quit)
            n_del = 0; /* marks not committed: nothing was deleted */
        log_info("pop3",
                 "Disconnected: %s top=%u/%llu, retr=%u/%llu, del=%zu/%zu, size=%llu, "
                 "user=<%s>, rip=%s",
                 reason, s->n_top, (unsigned long long)s->top_bytes, s->n_retr,
                 (unsigned long long)s->retr_bytes, n_del, s->n_msgs,
                 (unsigned long long)s->total_size, s->user, rip);
    } else if (s->auth_attempts > 0) {
        log_info("pop3",
                 "Disconnected (auth failed, %u attempts): user=<%s>, method=%s, rip=%s, "
                 "lip=%s%s",
                 s->auth_attempts, s->last_login,
                 s->last_method[0] != '\0' ? s->last_method : "PLAIN", rip, lip, tls);
    } else {
        log_info("pop3", "Disconnected (no auth attempts): %s, rip=%s, lip=%s%s", reason, rip, lip,
                 tls);
    }
}

static void pop3_on_close(void *session, const char *reason)
{
    struct pop3_session *s = session;
    /* a session handed to a mail worker goes on there: it logs its own end */
    if (reason == NULL || strcmp(reason, "handoff") != 0)
        log_disconnect(s, reason);
    /* A job in flight holds what it needs (core/job.h) and releases it when it finds the
     * session gone; one not started yet is cancelled (not QUIT's: it is essential). */
    job_session_remove(s->handle);
    pop3_session_free(s);
}

const struct conn_protocol pop3_protocol = {
    .log_name = "pop3",
    .open = pop3_open,
    .on_read = pop3_on_read,
    .on_drained = pop3_on_drained,
    .on_tls = pop3_on_tls,
    .on_timeout = pop3_on_timeout,
    .close = pop3_on_close,
    .adopt = pop3_adopt,
    .on_handoff_failed = pop3_on_handoff_failed,
};
