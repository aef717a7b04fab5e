/*
 * session.c - the SMTP server session (RFC 5321): connection lifecycle, input framing,
 * the command table, and the simple commands (HELO, EHLO, RSET, NOOP, QUIT, VRFY, HELP,
 * STARTTLS). MAIL/RCPT live in envelope.c, DATA/BDAT in body.c, AUTH in sasl.c.
 *
 * Input: command lines end in LF (CRLF or a bare LF, as telnet/nc users send); a line
 * longer than its limit is discarded up to the next LF and answered with
 * "500 5.5.2 Error: line too long", so the connection stays usable. The message text of
 * DATA is framed only by the exact CRLF.CRLF (data.c).
 *
 * Pipelining (RFC 2920): commands are executed in order from the input buffer; replies
 * are queued in order. When a command needs blocking work (AUTH step, delivery) reading
 * pauses; buffered commands wait until the job's reply is written.
 */
#include "smtp/smtp.h"

#include "auth/auth.h"
#include "core/config.h"
#include "core/log.h"
#include "policy/ratelimit.h"
#include "smtp/session.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Stop executing pipelined commands while this much output is queued for the peer: a
 * client that sends EHLO (or any command) in a loop and never reads its replies would
 * otherwise grow our output buffer without bound (each 8-octet "EHLO a" queues ~250).
 * With commands no longer consumed, the core's input cap stops reading the socket and
 * TCP pushes back on the client; on_drained resumes. */
#define SMTP_OUTPUT_HIGH_WATER (4 * CONN_OUTPUT_LOW_WATER)

/* Command flags. */
#define CMD_NEEDS_HELO 0x1 /* "503 5.5.1 Error: send HELO/EHLO first" before HELO */
#define CMD_JUNK       0x2 /* makes no progress: counted against SMTP_JUNK_COMMAND_LIMIT */

struct smtp_command_def {
    enum smtp_verb verb;
    void (*handler)(struct smtp_session *s, const struct smtp_command *cmd);
    unsigned flags;
};

static void cmd_helo(struct smtp_session *s, const struct smtp_command *cmd);
static void ehlo_capabilities(struct smtp_session *s, struct buf *b);
static void lhlo_capabilities(struct smtp_session *s, struct buf *b);
static void cmd_ehlo(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_lhlo(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_rset(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_noop(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_quit(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_vrfy(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_help(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_starttls(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_not_implemented(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_non_smtp(struct smtp_session *s, const struct smtp_command *cmd);
static void cmd_xclient(struct smtp_session *s, const struct smtp_command *cmd);

/* The command table: verb -> handler and flags. State rules that depend on the
 * transaction (need MAIL, need RCPT, nested MAIL) are checked in the handlers, each
 * with Postfix's wording. */
static const struct smtp_command_def command_table[] = {
    {SMTP_VERB_HELO, cmd_helo, 0},
    {SMTP_VERB_EHLO, cmd_ehlo, 0},
    {SMTP_VERB_LHLO, cmd_lhlo, 0},
    {SMTP_VERB_MAIL, smtp_cmd_mail, CMD_NEEDS_HELO},
    {SMTP_VERB_RCPT, smtp_cmd_rcpt, CMD_NEEDS_HELO},
    {SMTP_VERB_DATA, smtp_cmd_data, CMD_NEEDS_HELO},
    {SMTP_VERB_BDAT, smtp_cmd_bdat, 0}, /* checks itself: the chunk must be consumed */
    {SMTP_VERB_BURL, smtp_cmd_burl, CMD_NEEDS_HELO},
    {SMTP_VERB_RSET, cmd_rset, CMD_JUNK},
    {SMTP_VERB_NOOP, cmd_noop, CMD_JUNK},
    {SMTP_VERB_QUIT, cmd_quit, 0},
    {SMTP_VERB_VRFY, cmd_vrfy, CMD_JUNK},
    {SMTP_VERB_EXPN, cmd_not_implemented, CMD_JUNK},
    {SMTP_VERB_ETRN, smtp_cmd_etrn, CMD_NEEDS_HELO | CMD_JUNK},
    {SMTP_VERB_HELP, cmd_help, CMD_JUNK},
    {SMTP_VERB_STARTTLS, cmd_starttls, CMD_NEEDS_HELO},
    {SMTP_VERB_AUTH, smtp_cmd_auth, CMD_NEEDS_HELO},
    {SMTP_VERB_XCLIENT, cmd_xclient, 0},
    {SMTP_VERB_NON_SMTP, cmd_non_smtp, 0},
};

static void session_close_with(struct smtp_session *s, const char *reply)
{
    smtp_reply(s, "%s", reply);
    s->input = SMTP_INPUT_CLOSED;
    conn_close(s->c);
}

static void hello_accept(struct smtp_session *s);

/* The milters' answer to HELO/EHLO: refused (the name is forgotten) or accepted. */
static void hello_milter_next(struct smtp_session *s, void *arg, const struct milter_outcome *o)
{
    if (smtp_milter_refuses(s, smtp_verb_name(s->cur_verb), o, NULL)) {
        s->helo[0] = '\0';
        return;
    }
    hello_accept(s);
}

/* HELO, EHLO, LHLO: take the client's name, run the HELO checks and ask the milters.
 * true: accept it now (hello_accept); false: refused (replied) or the milters answer
 * later. */
static bool hello_begin(struct smtp_session *s, const struct smtp_command *cmd,
                        const char *syntax_reply)
{
    if (!smtp_parse_helo(cmd->arg, cmd->arg_len, s->helo, sizeof s->helo)) {
        smtp_reply(s, "%s", syntax_reply);
        return false;
    }
    if (!smtp_screen_helo(s, s->helo)) {
        s->helo[0] = '\0';
        return false;
    }
    return !smtp_milter_helo(s, hello_milter_next);
}

static void cmd_helo(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (hello_begin(s, cmd, "501 Syntax: HELO hostname"))
        hello_accept(s);
}

/* EHLO capability predicates: advertise only what works on this connection. */
static bool can_starttls(const struct smtp_session *s)
{
    return !conn_is_tls(s->c) && conn_tls_available(s->c);
}

/* XCLIENT only from auth.trusted_networks (Postfix: smtpd_authorized_xclient_hosts). */
static bool can_xclient(const struct smtp_session *s)
{
    return conn_peer_in_networks(s->c, &s->cfg->auth_trusted_networks);
}

/* The name passed every check: reset the transaction (RFC 5321 §4.1.4) and reply (for
 * EHLO and LHLO with the capabilities). */
static void hello_accept(struct smtp_session *s)
{
    smtp_txn_reset(&s->txn);
    s->has_helo = true;
    s->is_esmtp = s->cur_verb != SMTP_VERB_HELO;
    if (!s->is_esmtp) {
        smtp_reply(s, "250 %s", smtp_hostname(s));
        return;
    }
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "250-%s\r\n250-PIPELINING\r\n", smtp_hostname(s));
    buf_printf(&b, "250-SIZE %llu\r\n", (unsigned long long)s->cfg->smtp_max_message_size);
    if (s->cur_verb == SMTP_VERB_LHLO)
        lhlo_capabilities(s, &b);
    else
        ehlo_capabilities(s, &b);
    conn_write(s->c, b.data, b.len);
    buf_free(&b);
    if (s->cur_verb == SMTP_VERB_EHLO)
        s->has_pipelining = true; /* RFC 2920: from now on the client may pipeline */
    s->stat_ok[s->cur_verb]++;
}

static void cmd_ehlo(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (hello_begin(s, cmd, "501 Syntax: EHLO hostname"))
        hello_accept(s);
}

/* The rest of the EHLO reply: what works on this connection. */
static void ehlo_capabilities(struct smtp_session *s, struct buf *b)
{
    buf_append_str(b, "250-VRFY\r\n");
    if (s->role == CONN_ROLE_SMTP)
        buf_append_str(b, "250-ETRN\r\n"); /* RFC 1985 */
    if (can_starttls(s))
        buf_append_str(b, "250-STARTTLS\r\n");
    char *mechs = smtp_auth_mechanisms(s);
    if (mechs && mechs[0]) {
        /* "AUTH=" is the pre-RFC 4954 form some old clients (Outlook) look for. */
        buf_printf(b, "250-AUTH %s\r\n250-AUTH=%s\r\n", mechs, mechs);
    }
    free(mechs);
    if (can_xclient(s))
        buf_append_str(b, "250-XCLIENT NAME ADDR PROTO HELO LOGIN\r\n");
    if (smtp_burl_is_offered(s))
        buf_append_str(b, "250-BURL imap\r\n"); /* RFC 4468 §3 */
    buf_append_str(b, "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
                      "250 CHUNKING\r\n");
}

/* RFC 2033 §4.1: LHLO is EHLO for LMTP. Offered: what final delivery needs, no TLS or
 * AUTH (the socket's permissions or the trusted network are the authentication), no
 * CHUNKING (BDAT would need per-recipient replies after LAST). */
static void cmd_lhlo(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (hello_begin(s, cmd, "501 5.5.4 Syntax: LHLO hostname"))
        hello_accept(s);
}

static void lhlo_capabilities(struct smtp_session *s, struct buf *b)
{
    buf_append_str(b, "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n");
}

/* Which verbs a role takes: LMTP (RFC 2033 §4.1) has LHLO instead of HELO/EHLO and
 * none of SMTP's TLS, AUTH, BDAT, ETRN; SMTP roles have no LHLO. */
static bool role_takes_verb(const struct smtp_session *s, enum smtp_verb verb)
{
    if (s->role != CONN_ROLE_LMTP)
        return verb != SMTP_VERB_LHLO;
    return verb != SMTP_VERB_HELO && verb != SMTP_VERB_EHLO && verb != SMTP_VERB_STARTTLS &&
           verb != SMTP_VERB_AUTH && verb != SMTP_VERB_BDAT && verb != SMTP_VERB_ETRN &&
           verb != SMTP_VERB_BURL &&
           verb != SMTP_VERB_XCLIENT;
}

static void cmd_rset(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (cmd->arg_len) {
        smtp_reply(s, "501 5.5.4 Syntax: RSET");
        return;
    }
    smtp_txn_reset(&s->txn);
    smtp_milter_abort(s);
    smtp_reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtp_session *s, const struct smtp_command *cmd)
{
    smtp_reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct smtp_session *s, const struct smtp_command *cmd)
{
    session_close_with(s, "221 2.0.0 Bye");
}

/* RFC 5321 §3.5.3: 252 = "cannot VRFY user, but will accept message and attempt
 * delivery". We never confirm or deny mailboxes (no user enumeration). */
static void cmd_vrfy(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (cmd->arg_len == 0) {
        smtp_reply(s, "501 5.5.4 Syntax: VRFY address");
        return;
    }
    struct addr a;
    size_t off;
    if (!addr_parse_path(cmd->arg, cmd->arg_len, false, &a, &off)) {
        smtp_reply(s, "501 5.1.3 Bad recipient address syntax");
        return;
    }
    char text[ADDR_MAX_PATH + 1];
    addr_format(&a, text, sizeof text);
    smtp_reply(s, "252 2.0.0 %s", text);
}

static void cmd_help(struct smtp_session *s, const struct smtp_command *cmd)
{
    conn_write_str(s->c, "214-2.0.0 Commands supported:\r\n"
                         "214-2.0.0   HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT\r\n"
                         "214-2.0.0   VRFY HELP STARTTLS AUTH\r\n"
                         "214 2.0.0 See RFC 5321\r\n");
    s->stat_ok[s->cur_verb]++;
}

static void cmd_not_implemented(struct smtp_session *s, const struct smtp_command *cmd)
{
    smtp_reply(s, "502 5.5.1 Error: command not implemented");
}

/* A web browser or proxy talking to the mail port (cross-protocol attack): Postfix's
 * answer, and hang up. */
static void cmd_non_smtp(struct smtp_session *s, const struct smtp_command *cmd)
{
    log_warning("smtpd", "non-SMTP command from %s: %.*s", s->peer,
                (int)(cmd->arg_len > 100 ? 100 : cmd->arg_len), cmd->arg);
    session_close_with(s, "221 2.7.0 Error: I can break rules, too. Goodbye.");
}

/* Postfix's XCLIENT: a trusted proxy passes the real client's address, name, HELO,
 * protocol and login; the session starts over as that client's, with a new greeting. The
 * address is the one failed logins are counted against and the one logged; relaying
 * decisions keep the connection's own address. */
static void cmd_xclient(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (!can_xclient(s)) {
        smtp_reply(s, "550 5.7.0 Error: insufficient authorization");
        return;
    }
    if (s->txn.is_active) {
        smtp_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    struct smtp_xclient x;
    char reply[SMTP_REPLY_MAX];
    if (!smtp_parse_xclient(cmd->arg, cmd->arg_len, &x, reply, sizeof reply)) {
        smtp_reply(s, "%s", reply);
        return;
    }
    char old_peer[sizeof s->peer];
    memcpy(old_peer, s->peer, sizeof old_peer);
    if (x.addr[0])
        memcpy(s->client_ip, x.addr, sizeof x.addr);
    const char *ip = s->client_ip[0] ? s->client_ip : conn_peer_ip(s->c);
    snprintf(s->peer, sizeof s->peer, "%.200s[%s]", x.name[0] ? x.name : "unknown", ip);
    log_info("smtpd", "client=%s, xclient from %s", s->peer, old_peer);
    smtp_txn_reset(&s->txn);
    s->has_helo = x.helo[0] != '\0';
    s->is_esmtp = x.proto == 2;
    s->has_pipelining = false;
    memcpy(s->helo, x.helo, sizeof s->helo);
    if (x.login[0]) {
        free(s->auth_user);
        s->auth_user = strdup(x.login);
        snprintf(s->auth_mech, sizeof s->auth_mech, "XCLIENT");
    }
    smtp_milter_greet(s, true); /* the milters meet the new client, then the 220 */
}

static void cmd_starttls(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (cmd->arg_len) {
        smtp_reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (conn_is_tls(s->c)) {
        smtp_reply(s, "554 5.5.1 Error: TLS already active");
        return;
    }
    if (!conn_tls_available(s->c)) {
        smtp_reply(s, "502 5.5.1 Error: command not implemented");
        return;
    }
    smtp_reply(s, "220 2.0.0 Ready to start TLS");
    /* The core flushes the reply, discards buffered input (RFC 3207 §4, CVE-2011-0411)
     * and calls on_tls after the handshake. */
    if (conn_starttls(s->c) < 0) {
        log_warning("smtpd", "STARTTLS failed to start for %s", s->peer);
        s->input = SMTP_INPUT_CLOSED;
        conn_close(s->c);
        return;
    }
    s->input = SMTP_INPUT_TLS_WAIT;
}

/* Dispatch one command line (CR/LF removed). */
static void session_command(struct smtp_session *s, const char *line, size_t len)
{
    struct smtp_command cmd;
    if (memchr(line, '\0', len) || !smtp_command_parse(line, len, &cmd)) {
        s->cur_verb = SMTP_VERB_UNKNOWN;
        s->stat_total[SMTP_VERB_UNKNOWN]++;
        smtp_reply(s, "500 5.5.2 Error: bad syntax");
        return;
    }
    s->cur_verb = cmd.verb;
    s->stat_total[cmd.verb]++;
    size_t limit = SMTP_COMMAND_LINE_MAX - 2;
    if (cmd.verb == SMTP_VERB_MAIL || cmd.verb == SMTP_VERB_RCPT)
        limit = SMTP_MAIL_LINE_MAX - 2;
    else if (cmd.verb == SMTP_VERB_AUTH || cmd.verb == SMTP_VERB_BURL)
        limit = SMTP_AUTH_LINE_MAX - 2; /* BURL: an IMAP URL (RFC 4468 §3) */
    if (len > limit) {
        smtp_reply(s, "500 5.5.2 Error: line too long");
        return;
    }
    const struct smtp_command_def *def = NULL;
    for (size_t i = 0; i < sizeof command_table / sizeof command_table[0]; i++) {
        if (command_table[i].verb == cmd.verb) {
            def = &command_table[i];
            break;
        }
    }
    if (!def || !role_takes_verb(s, cmd.verb)) {
        smtp_reply(s, "502 5.5.2 Error: command not recognized");
        return;
    }
    if (smtp_milter_is_denied(s) && cmd.verb != SMTP_VERB_QUIT) {
        /* RFC 5321 §3.1: after a 554 greeting, 503 to everything but QUIT */
        smtp_reply(s, "503 5.7.0 Error: access denied for %s", s->peer);
        return;
    }
    if ((def->flags & CMD_NEEDS_HELO) && !s->has_helo) {
        smtp_reply(s, s->role == CONN_ROLE_LMTP ? "503 5.5.1 Error: send LHLO first"
                                                : "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (cmd.verb == SMTP_VERB_MAIL || cmd.verb == SMTP_VERB_DATA)
        s->body_started_ms = 0; /* a new message text: its data-rate clock starts anew */
    if (def->flags & CMD_JUNK) {
        /* Commands that make no progress (Postfix smtpd_junk_command_limit): past the
         * limit each one counts as an error, so max_errors ends an endless NOOP loop. */
        if (++s->n_junk > SMTP_JUNK_COMMAND_LIMIT)
            s->n_errors++;
    }
    def->handler(s, &cmd);
}

static void session_timeout(struct smtp_session *s);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Slowloris: the idle timeout is re-armed by every read, so a peer dribbling one octet
 * of a command line just inside it would hold the session forever. A command line must
 * be complete within the same timeout, counted from its first octet. Returns true when
 * the session was ended. */
static bool session_line_deadline(struct smtp_session *s, size_t avail)
{
    if (avail == 0) {
        s->line_started_ms = 0;
        return false;
    }
    uint64_t now = now_ms();
    if (s->line_started_ms == 0) {
        s->line_started_ms = now;
        return false;
    }
    uint64_t limit = (uint64_t)(s->cfg->smtp_timeout ? s->cfg->smtp_timeout : 300) * 1000;
    if (now - s->line_started_ms < limit)
        return false;
    session_timeout(s);
    conn_close(s->c);
    return true;
}

/* Slowloris in DATA/BDAT: message text dribbled one line (or octet) at a time re-arms
 * the idle timer forever. Like Postfix's smtpd_min_data_rate with per-record deadlines,
 * the text must arrive within smtp.timeout plus 1 s per SMTP_MIN_DATA_RATE octets read,
 * counted from its first octet (for BDAT, over all chunks of the message: MAIL and DATA
 * restart the clock). A 20 MB message may take 11 hours; a trickle is cut after the
 * timeout. Called after each read of message text; true when the session was ended. */
#define SMTP_MIN_DATA_RATE 500 /* octets per second, Postfix's default */
static bool session_body_deadline(struct smtp_session *s, size_t octets)
{
    uint64_t now = now_ms();
    if (s->body_started_ms == 0) {
        s->body_started_ms = now;
        s->body_octets = 0;
    }
    s->body_octets += octets;
    uint64_t limit = (uint64_t)(s->cfg->smtp_timeout ? s->cfg->smtp_timeout : 300) * 1000 +
                     s->body_octets * 1000 / SMTP_MIN_DATA_RATE;
    if (now - s->body_started_ms < limit)
        return false;
    session_timeout(s);
    conn_close(s->c);
    return true;
}

/* Read and execute command or SASL lines until input runs out or a mode change. */
static bool session_read_line(struct smtp_session *s, struct evbuffer *in)
{
    size_t eol_len = 0;
    struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
    size_t avail = evbuffer_get_length(in);
    if (p.pos < 0) {
        if (session_line_deadline(s, avail))
            return false;
        if (avail > SMTP_AUTH_LINE_MAX) {
            /* Hostile or broken: drop what we have and skip to the next LF. */
            evbuffer_drain(in, avail);
            s->is_discarding_line = true;
        }
        return false;
    }
    size_t line_len = (size_t)p.pos;
    s->line_started_ms = 0; /* a whole line: the next one's clock starts at its first octet */
    if (s->is_discarding_line || line_len > SMTP_AUTH_LINE_MAX) {
        evbuffer_drain(in, line_len + eol_len);
        s->is_discarding_line = false;
        if (s->input == SMTP_INPUT_AUTH) {
            smtp_auth_abort(s, "500 5.5.6 Authentication Exchange line is too long");
            return true;
        }
        s->cur_verb = SMTP_VERB_UNKNOWN;
        s->stat_total[SMTP_VERB_UNKNOWN]++;
        smtp_reply(s, "500 5.5.2 Error: line too long");
        return true;
    }
    char line[SMTP_AUTH_LINE_MAX + 2];
    evbuffer_remove(in, line, line_len);
    evbuffer_drain(in, eol_len);
    if (line_len > 0 && line[line_len - 1] == '\r')
        line_len--;
    line[line_len] = '\0';
    if (s->input == SMTP_INPUT_AUTH)
        smtp_auth_response(s, line, line_len);
    else if (smtp_screen_pipelining(s, line, evbuffer_get_length(in)))
        session_command(s, line, line_len);
    return true;
}

static void session_check_errors(struct smtp_session *s)
{
    unsigned max = s->cfg->smtp_max_errors ? s->cfg->smtp_max_errors : 20;
    if (s->input != SMTP_INPUT_CLOSED && s->n_errors >= max) {
        log_info("smtpd", "too many errors after %s from %s",
                 s->cur_verb == SMTP_VERB_UNKNOWN ? "UNKNOWN" : smtp_verb_stat_name(s->cur_verb),
                 s->peer);
        char reply[SMTP_REPLY_MAX];
        snprintf(reply, sizeof reply, "421 4.7.0 %s Error: too many errors", smtp_hostname(s));
        session_close_with(s, reply);
    }
}

static void smtp_on_read(void *session, struct conn *c)
{
    struct smtp_session *s = session;
    struct evbuffer *in;
    /* Bounded: every round consumes input or returns. conn_input() is fetched anew each
     * round because STARTTLS replaces the connection's buffers. */
    while (!s->is_busy && !conn_is_stopping(c) && evbuffer_get_length(in = conn_input(c)) > 0) {
        if (s->input != SMTP_INPUT_CLOSED && conn_output_length(c) >= SMTP_OUTPUT_HIGH_WATER) {
            /* Paused (not merely returning), so a peer that half-closes after its last
             * command still gets every pipelined command answered. */
            s->is_output_paused = true;
            conn_pause_read(c);
            return; /* smtp_on_drained resumes */
        }
        bool progressed = false;
        switch (s->input) {
        case SMTP_INPUT_COMMAND:
        case SMTP_INPUT_AUTH:
            progressed = session_read_line(s, in);
            break;
        case SMTP_INPUT_DATA:
        case SMTP_INPUT_BDAT: {
            size_t before = evbuffer_get_length(in);
            progressed = smtp_body_read(s);
            /* checked after the last chunk too: a BDAT message is one budget */
            if (session_body_deadline(s, before - evbuffer_get_length(in)))
                return;
            break;
        }
        case SMTP_INPUT_TLS_WAIT:
            return; /* the core discards this input when the handshake starts */
        case SMTP_INPUT_CLOSED:
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
        session_check_errors(s);
        if (!progressed)
            break;
    }
}

/* Queued output fell below the low-water mark: run the commands that waited for it. */
static void smtp_on_drained(void *session, struct conn *c)
{
    struct smtp_session *s = session;
    if (!s->is_output_paused)
        return;
    s->is_output_paused = false;
    conn_resume_read(c); /* the core calls on_read again for the buffered commands */
}

void smtp_txn_init(struct smtp_txn *t)
{
    memset(t, 0, sizeof *t);
    t->body_fd = -1;
    buf_init(&t->body, 0);
}

bool smtp_rate_allowed(struct smtp_session *s, int event)
{
    if (!s->ctx->ratelimit || conn_peer_in_networks(s->c, &s->cfg->relay_networks) ||
        conn_peer_in_networks(s->c, &s->cfg->auth_trusted_networks))
        return true;
    const char *ip = s->client_ip[0] ? s->client_ip : conn_peer_ip(s->c);
    struct ratelimit_query q = {.event = (enum ratelimit_event)event,
                            .ip = ip,
                            .user = s->auth_user,
                            .now_ms = util_now_ms()};
    struct ratelimit_answer a;
    ratelimit_event(s->ctx->ratelimit, &q, &a);
    if (a.is_allowed)
        return true;
    static const char *const what[] = {"Connection rate", "Message delivery request rate",
                                       "Recipient address rate"};
    const char *service = s->role == CONN_ROLE_SMTP ? "smtp" : "submission";
    if (a.is_user_limit)
        log_warning("smtpd", "%s limit exceeded: %u from %s for user %s, service %s",
                    what[event], a.count + 1, s->peer, s->auth_user, service);
    else
        log_warning("smtpd", "%s limit exceeded: %u from %s for service %s", what[event],
                    a.count + 1, s->peer, service);
    const char *who = a.is_user_limit ? s->auth_user : ip;
    if (event == RATELIMIT_CONNECTION)
        smtp_reply(s, "421 4.7.0 %s Error: too many connections from %s", smtp_hostname(s), ip);
    else if (event == RATELIMIT_MESSAGE)
        smtp_reply(s, "450 4.7.1 Error: too much mail from %s", who);
    else
        smtp_reply(s, "450 4.7.1 Error: too many recipients from %s", who);
    return false;
}

static void *smtp_open(struct conn *c)
{
    struct smtp_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->c = c;
    s->handle = job_session_add(s);
    s->ctx = conn_server(c);
    s->cfg = s->ctx->cfg;
    s->role = conn_role(c);
    s->input = SMTP_INPUT_COMMAND;
    smtp_txn_init(&s->txn);
    const char *ip = conn_peer_ip(c);
    snprintf(s->peer, sizeof s->peer, "%s[%s]", conn_peer_name(c), ip ? ip : "unknown");
    log_info("smtpd", "connect from %s", s->peer);
    conn_set_timeout(c, s->cfg->smtp_timeout ? s->cfg->smtp_timeout : 300);
    if (s->role == CONN_ROLE_LMTP) {
        /* Unauthenticated delivery into any mailbox: only from the unix socket (its file
         * permissions decide) or a loopback / lmtp.trusted_networks TCP peer. */
        if (!conn_peer_is_local(c) && !conn_peer_is_loopback(c) &&
            !conn_peer_in_networks(c, &s->cfg->lmtp_trusted_networks)) {
            log_warning("smtpd", "LMTP from untrusted %s refused (lmtp.trusted_networks)",
                        s->peer);
            conn_printf(c, "421 4.7.0 %s LMTP not available to you\r\n", smtp_hostname(s));
            s->input = SMTP_INPUT_CLOSED;
            conn_close(c);
            return s;
        }
        conn_printf(c, "220 %s LMTP\r\n", smtp_hostname(s));
        return s;
    }
    if (!smtp_rate_allowed(s, RATELIMIT_CONNECTION)) {
        s->input = SMTP_INPUT_CLOSED;
        conn_close(c);
        return s;
    }
    if (smtp_screen_greet(s))
        return s; /* the banner follows the pause and the DNS list lookups */
    smtp_milter_greet(s, false); /* the banner, after the milters' connect stage */
    return s;
}

static void smtp_on_tls(void *session, struct conn *c)
{
    struct smtp_session *s = session;
    /* RFC 3207 §4.2: forget everything learnt before TLS; the client must EHLO again. */
    smtp_txn_reset(&s->txn);
    s->has_helo = false;
    s->is_esmtp = false;
    s->has_pipelining = false;
    s->helo[0] = '\0';
    free(s->auth_user);
    s->auth_user = NULL;
    s->input = SMTP_INPUT_COMMAND;
    s->is_discarding_line = false;
}

/* Upper-case verb name for "... after RCPT from ..." log lines. */
static const char *smtp_verb_upper(enum smtp_verb verb)
{
    for (size_t i = 0; i < sizeof command_table / sizeof command_table[0]; i++)
        if (command_table[i].verb == verb && verb != SMTP_VERB_NON_SMTP)
            return verb == SMTP_VERB_UNKNOWN ? "UNKNOWN" : smtp_verb_name(verb);
    return "UNKNOWN";
}

static void smtp_on_timeout(void *session, struct conn *c)
{
    session_timeout(session);
}

static void smtp_on_shutdown(void *session, struct conn *c)
{
    struct smtp_session *s = session;
    /* RFC 5321 §3.8: 421 may be sent at any time when the service must shut down; a
     * message not yet answered with 250 is the client's to send again. */
    log_info("smtpd", "disconnect: server shutting down, %s", s->peer);
    smtp_reply(s, "421 4.3.2 Service shutting down, closing transmission channel");
    s->input = SMTP_INPUT_CLOSED;
}

/* "421 timeout" and the Postfix log line; the caller (or the core) closes. */
static void session_timeout(struct smtp_session *s)
{
    struct conn *c = s->c;
    const char *after = s->input == SMTP_INPUT_DATA   ? "DATA"
                        : s->input == SMTP_INPUT_BDAT ? "BDAT"
                        : s->input == SMTP_INPUT_AUTH ? "AUTH"
                        : s->stat_total[s->cur_verb]  ? smtp_verb_upper(s->cur_verb)
                                                      : "CONNECT";
    log_info("smtpd", "timeout after %s from %s", after, s->peer);
    conn_printf(c, "421 4.4.2 %s Error: timeout exceeded\r\n", smtp_hostname(s));
    s->input = SMTP_INPUT_CLOSED;
}

void smtp_session_free(struct smtp_session *s)
{
    smtp_screen_free(s);
    smtp_milter_free(s);
    smtp_txn_reset(&s->txn);
    buf_free(&s->txn.body);
    if (s->sasl)
        auth_sasl_free(s->sasl);
    free(s->auth_user);
    free(s);
}

static void smtp_close(void *session, const char *reason)
{
    struct smtp_session *s = session;
    if (s->input != SMTP_INPUT_CLOSED && reason &&
        (strcmp(reason, "lost connection") == 0 || strcmp(reason, "connection error") == 0)) {
        /* Postfix: "lost connection after DATA from name[ip]" (DESIGN §5). */
        const char *after = s->input == SMTP_INPUT_DATA   ? "DATA"
                            : s->input == SMTP_INPUT_BDAT ? "BDAT"
                            : s->input == SMTP_INPUT_AUTH ? "AUTH"
                            : s->stat_total[s->cur_verb]  ? smtp_verb_upper(s->cur_verb)
                                                          : "CONNECT";
        log_info("smtpd", "%s after %s from %s", reason, after, s->peer);
    }
    struct buf b;
    buf_init(&b, 0);
    smtp_stats_format(s, &b);
    log_info("smtpd", "disconnect from %s%s", s->peer, buf_cstr(&b));
    buf_free(&b);
    /* A job in flight holds what it needs and finds no session when it is done; one not
     * started yet is cancelled (core/job.h). */
    job_session_remove(s->handle);
    smtp_session_free(s);
}

void smtp_session_job_start(struct smtp_session *s, struct job *job)
{
    smtp_session_job_start_delayed(s, job, 0);
}

void smtp_session_job_start_delayed(struct smtp_session *s, struct job *job, unsigned delay_ms)
{
    s->is_busy = true;
    conn_pause_read(s->c);
    job_submit_delayed(s->ctx->pool, job, delay_ms);
}

void smtp_session_job_start_on(struct smtp_session *s, struct job *job, struct workpool *pool)
{
    s->is_busy = true;
    conn_pause_read(s->c);
    job_submit(pool, job);
}

void smtp_session_job_done(struct smtp_session *s)
{
    s->is_busy = false;
    session_check_errors(s);
    conn_resume_read(s->c);
}

const struct conn_protocol smtp_protocol = {
    .log_name = "smtpd",
    .open = smtp_open,
    .on_read = smtp_on_read,
    .on_drained = smtp_on_drained,
    .on_tls = smtp_on_tls,
    .on_timeout = smtp_on_timeout,
    .on_shutdown = smtp_on_shutdown,
    .close = smtp_close,
};
