/*
 * cmd_auth.c - POP3 AUTHORIZATION state: greeting, CAPA (RFC 2449), STLS (RFC 2595),
 * USER/PASS and APOP (RFC 1939 §7), AUTH (RFC 5034, and RFC 1734's bare AUTH listing),
 * and the login job: credentials are checked, the maildrop locked and opened, and the
 * exact size of each message learnt, all on a workpool thread.
 *
 * Policy (DESIGN §6): plaintext USER/PASS, PLAIN and LOGIN only where
 * auth_plaintext_allowed() says so (TLS, or loopback by default); otherwise CAPA does not
 * list USER and USER gets a clear -ERR. Failures are "-ERR [AUTH]" (RFC 3206), counted
 * by the failed-login policy (policy/penalty.h, the auth process's table for every
 * worker: the login job asks it before the check, which it may block or hold for a
 * growing delay, and tells it the outcome) and logged at disconnect; a blocked attempt
 * gets the same reply without a password check, a correct password of a blocked account
 * too (and the maildrop stays closed).
 */
#include "pop3/session.h"

#include "auth/auth.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/uidl.h"
#include "core/util.h"
#include "policy/penalty.h"
#include "store/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static struct auth_service *session_auth(struct pop3_session *s)
{
    return conn_server(s->conn)->auth;
}

static const char *session_hostname(struct pop3_session *s)
{
    const struct config *cfg = conn_server(s->conn)->cfg;
    return cfg != NULL && cfg->hostname != NULL ? cfg->hostname : "localhost";
}

static bool is_plaintext_allowed(struct pop3_session *s)
{
    struct auth_peer peer;
    pop3_auth_peer(s, &peer);
    return auth_plaintext_allowed(session_auth(s), &peer);
}

void pop3_greeting(struct pop3_session *s)
{
    struct auth_service *auth = session_auth(s);
    s->apop_timestamp[0] = '\0';
    /* RFC 1939 §7: the APOP timestamp "<process-ID.clock@hostname>" must differ for every
     * greeting; random bits make it unguessable too (no replay of a captured digest). */
    if (auth != NULL && auth_apop_available(auth)) {
        uint32_t rnd;
        util_random_bytes(&rnd, sizeof rnd);
        snprintf(s->apop_timestamp, sizeof s->apop_timestamp, "<%ld.%08" PRIx32 ".%lld@%s>",
                 (long)getpid(), rnd, (long long)time(NULL), session_hostname(s));
        pop3_replyf(s, "+OK POP3 ready %s", s->apop_timestamp);
    } else {
        /* DESIGN §6: the banner does not name the software. */
        pop3_reply(s, "+OK POP3 ready.");
    }
}

/* ---- CAPA, STLS ---------------------------------------------------------------------- */

void pop3_cmd_capa(struct pop3_session *s, const char *args, size_t len)
{
    struct conn *c = s->conn;
    bool is_auth_state = s->state == POP3_STATE_AUTHORIZATION;

    /* RFC 2449 §5: one capability per line, ended by ".". No IMPLEMENTATION: the software
     * is not named (DESIGN §6). EXPIRE NEVER: we never delete mail on our own. */
    conn_write_str(c, "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n"
                      "AUTH-RESP-CODE\r\nEXPIRE NEVER\r\n");
    unsigned delay = conn_server(c)->cfg->pop3_login_delay;
    if (delay > 0)
        conn_printf(c, "LOGIN-DELAY %u\r\n", delay);
    if (is_auth_state) {
        if (conn_role(c) == CONN_ROLE_POP3 && !conn_is_tls(c) && conn_tls_available(c))
            conn_write_str(c, "STLS\r\n");
        if (is_plaintext_allowed(s))
            conn_write_str(c, "USER\r\n");
        struct auth_peer peer;
        pop3_auth_peer(s, &peer);
        char *mechs = auth_mechanisms(session_auth(s), &peer);
        if (mechs != NULL && mechs[0] != '\0')
            conn_printf(c, "SASL %s\r\n", mechs);
        free(mechs);
    }
    conn_write_str(c, ".\r\n");
}

void pop3_cmd_stls(struct pop3_session *s, const char *args, size_t len)
{
    struct conn *c = s->conn;
    if (conn_is_tls(c)) {
        pop3_error(s, "-ERR TLS is already active.");
        return;
    }
    if (conn_role(c) != CONN_ROLE_POP3 || !conn_tls_available(c)) {
        pop3_error(s, "-ERR TLS support isn't enabled.");
        return;
    }
    pop3_reply(s, "+OK Begin TLS negotiation now.");
    if (conn_starttls(c) < 0) {
        log_error("pop3", "STLS failed to start: rip=%s", conn_peer_ip(c));
        s->close_reason = "TLS start failed";
        pop3_close(s);
        return;
    }
    /* RFC 2595 §4: input pipelined behind STLS is discarded, never run. */
    s->is_tls_pending = true;
}

/* ---- the login job ------------------------------------------------------------------- */

/* LOGIN_TOKEN: a mail worker's first step of a session a login process handed over (the
 * auth process confirms the token, then the maildrop opens: pop3/handoff.c). */
enum login_kind { LOGIN_PASS, LOGIN_APOP, LOGIN_SASL, LOGIN_TOKEN };

/* A PASS, APOP or AUTH step: credentials in, an opened maildrop out (core/job.h). */
struct login_job {
    struct job job; /* first */
    struct auth_service *auth;
    struct penalty_gate gate; /* the failed-login policy (copied: the thread rule) */
    unsigned login_delay;   /* pop3.login_delay, 0 none */
    enum login_kind kind;
    char *login;  /* PASS, APOP */
    char *secret; /* PASS: password; APOP: digest (wiped before free) */
    char timestamp[320];
    struct auth_sasl *sasl; /* SASL: moved from the session into the job and back */
    char *response;         /* SASL: client response, NULL = none */
    /* results */
    int auth_rc; /* 1 ok, 0 bad credentials, -1 temporary failure */
    enum auth_sasl_status sasl_rc;
    char *challenge;
    char *user;
    int open_rc; /* 0 opened, 1 maildrop in use, 2 LOGIN-DELAY not over, -1 error */
    char *error;
    struct pop3_maildrop md;
    struct pop3_msginfo *msgs;
    size_t n_msgs;
    uint32_t uidvalidity;
    char uidl_format[UIDL_FORMAT_MAX + 1]; /* pop3.uidl_format, copied at submit */
    char *uidls;                           /* every message's UIDL, NUL-separated */
    /* privilege separation (pop3/handoff.c) */
    bool is_login_process; /* the credentials' token goes along with the session */
    char binding[AUTH_BINDING_MAX + 1];
    char token[AUTH_TOKEN_SIZE];
    char method[32]; /* LOGIN_TOKEN: how the client logged in */
    char sasl_final[POP3_SASL_FINAL_MAX + 1]; /* LOGIN_TOKEN: data with success, "" none */
};

static void wipe_free(char *p)
{
    if (p != NULL) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

static void pop3_login_job_free(struct login_job *j)
{
    explicit_bzero(j->token, sizeof j->token);
    pop3_maildrop_close(&j->md);
    if (j->sasl != NULL)
        auth_sasl_free(j->sasl);
    free(j->login);
    wipe_free(j->secret);
    wipe_free(j->response);
    free(j->challenge);
    free(j->user);
    free(j->error);
    free(j->msgs);
    free(j->uidls);
    free(j);
}

/* Index cache field of a message's POP3 size. (Older versions cached under "pop3size"
 * the size with the byte-stuffing counted; those values are left unread.) */
#define POP3_SIZE_CACHE_FIELD "pop3vsize"

/* The LIST size of message i (see parse.h): from the index cache, else by reading the
 * file once and caching it (so a 100,000-message maildrop is scanned only on its first
 * login). */
static uint64_t message_pop3_size(struct store_mailbox *box, size_t i,
                                  const struct store_message *m)
{
    char *cached = store_message_get_cache(box, i, POP3_SIZE_CACHE_FIELD);
    if (cached != NULL) {
        uint64_t v;
        bool is_ok = pop3_number_parse(cached, strlen(cached), &v);
        free(cached);
        if (is_ok)
            return v;
    }
    int fd = -1;
    char *error = NULL;
    uint64_t size = m->vsize; /* a file that vanished: RETR will say so */
    if (store_message_open(box, i, &fd, &error) == 0) {
        if (pop3_msg_size_fd(fd, &size) == 0) {
            char text[32];
            snprintf(text, sizeof text, "%" PRIu64, size);
            (void)store_message_set_cache(box, i, POP3_SIZE_CACHE_FIELD, text); /* best effort */
        } else {
            size = m->vsize;
        }
        close(fd);
    }
    free(error);
    return size;
}

/* The UIDL of message i as Dovecot served it: the POP3 UIDL Dovecot kept in
 * dovecot-uidlist (a P field; empty = the base name), else the format expanded with the
 * GUID Dovecot kept (G field) or the base name. */
static void message_uidl(struct login_job *j, size_t i, const struct store_message *m,
                         char *out, size_t size)
{
    char *kept = store_message_get_cache(j->md.box, i, "pop3_uidl");
    if (kept != NULL) {
        /* verbatim (a '%' in it is no format), one printable word (RFC 1939 §7) */
        const char *value = kept[0] != '\0' ? kept : m->filename;
        size_t n = 0;
        for (; value[n] != '\0' && n + 1 < size; n++)
            out[n] = value[n] > 0x20 && value[n] < 0x7f ? value[n] : '?';
        out[n] = '\0';
        free(kept);
        if (n > 0)
            return;
    }
    char *guid = strstr(j->uidl_format, "g") ? store_message_get_cache(j->md.box, i, "guid") : NULL;
    struct uidl_vars v = {
        .uid = m->uid, .uidvalidity = j->uidvalidity, .filename = m->filename, .guid = guid};
    if (!uidl_format(j->uidl_format, &v, out, size)) /* checked at start-up: cannot fail */
        snprintf(out, size, "%08x%08x", m->uid, j->uidvalidity);
    free(guid);
}

/* Every message's UIDL into one NUL-separated block (j->uidls, offsets in j->msgs). */
static int maildrop_uidls(struct login_job *j)
{
    size_t cap = j->n_msgs * 18 + 1, used = 0;
    j->uidls = malloc(cap);
    if (j->uidls == NULL)
        return -1;
    for (size_t i = 0; i < j->n_msgs; i++) {
        char uidl[UIDL_MAX];
        message_uidl(j, i, store_mailbox_message(j->md.box, i), uidl, sizeof uidl);
        size_t len = strlen(uidl) + 1;
        if (used + len > cap) {
            size_t ncap = (used + len) * 2;
            char *n = realloc(j->uidls, ncap);
            if (n == NULL)
                return -1;
            j->uidls = n;
            cap = ncap;
        }
        memcpy(j->uidls + used, uidl, len);
        j->msgs[i].uidl_offset = used;
        used += len;
    }
    return 0;
}

/* Lock and open the user's INBOX (RFC 1939 §8: the maildrop is locked for POP3). */
static void maildrop_open(struct login_job *j)
{
    struct auth_user u = {0};
    int rc = auth_user_lookup(j->auth, j->user, &u);
    if (rc != 1) {
        j->error = strdup(rc == 0 ? "user vanished from the directory" : "directory error");
        j->open_rc = -1;
        return;
    }
    rc = store_user_open(u.home, u.address, &j->md.store, &j->error);
    auth_user_free(&u);
    if (rc != 0) {
        j->md.store = NULL;
        j->open_rc = -1;
        return;
    }
    rc = store_pop3_lock(j->md.store);
    if (rc != 0) {
        j->open_rc = rc == 1 ? 1 : -1;
        if (rc < 0)
            j->error = strdup("maildrop lock failed");
        return;
    }
    j->md.is_locked = true;
    /* RFC 2449 §8.1.1 LOGIN-DELAY: the last login's time is the auth process's, shared by
     * every worker */
    if (j->login_delay > 0 && auth_login_too_soon(j->auth, j->user, j->login_delay)) {
        j->open_rc = 2;
        return;
    }
    struct store_mailbox *box = NULL;
    if (store_mailbox_open(j->md.store, "INBOX", false, &box, &j->error) != 0) {
        j->open_rc = -1;
        return;
    }
    j->md.box = box;
    size_t n = store_mailbox_count(box);
    j->msgs = calloc(n > 0 ? n : 1, sizeof *j->msgs);
    if (j->msgs == NULL) {
        j->error = strdup("out of memory");
        j->open_rc = -1;
        return;
    }
    j->n_msgs = n;
    j->uidvalidity = store_mailbox_uidvalidity(box);
    for (size_t i = 0; i < n; i++) {
        const struct store_message *m = store_mailbox_message(box, i);
        j->msgs[i].uid = m->uid;
        j->msgs[i].size = message_pop3_size(box, i, m);
    }
    if (maildrop_uidls(j) < 0) {
        j->error = strdup("out of memory");
        j->open_rc = -1;
        return;
    }
    /* The session needs the index again only at QUIT: give its connection back now. */
    store_user_idle(j->md.store);
    j->open_rc = 0;
}

/* Workpool thread: ask the failed-login policy (it lives in the auth process), check
 * credentials (slow hashes), tell the policy, then open the maildrop (a login process
 * opens none: the token goes along with the session instead). */
static void login_work(struct job *job)
{
    struct login_job *j = (struct login_job *)job;
    if (j->kind == LOGIN_TOKEN) {
        /* a mail worker: the session a login process handed over, as its PASS would (the
         * login process asked and told the policy already) */
        j->auth_rc = auth_login_redeem(j->auth, j->token, j->login, j->binding);
        if (j->auth_rc == 1 && (j->user = strdup(j->login)) != NULL)
            maildrop_open(j);
        else if (j->auth_rc == 1)
            j->auth_rc = -1;
        return;
    }
    if (!auth_penalty_gate_enter(j->auth, &j->gate, j->kind == LOGIN_SASL ? NULL : j->login)) {
        j->auth_rc = 0; /* blocked; or held first (the done callback runs us again) */
        if (j->kind == LOGIN_SASL)
            j->sasl_rc = AUTH_SASL_FAIL;
        return;
    }
    const char *binding = j->is_login_process ? j->binding : NULL;
    switch (j->kind) {
    case LOGIN_PASS:
        j->auth_rc = binding ? auth_login_password_token(j->auth, j->login, j->secret, binding,
                                                         &j->user, j->token)
                             : auth_login_password(j->auth, j->login, j->secret, &j->user);
        break;
    case LOGIN_APOP:
        j->auth_rc = binding ? auth_login_apop_token(j->auth, j->login, j->timestamp, j->secret,
                                                     binding, &j->user, j->token)
                             : auth_login_apop(j->auth, j->login, j->timestamp, j->secret,
                                               &j->user);
        break;
    case LOGIN_TOKEN:
        break;
    case LOGIN_SASL:
        j->sasl_rc = auth_sasl_step(j->sasl, j->response, &j->challenge);
        j->auth_rc = j->sasl_rc == AUTH_SASL_OK         ? 1
                     : j->sasl_rc == AUTH_SASL_FAIL     ? 0
                     : j->sasl_rc == AUTH_SASL_TEMPFAIL ? -1
                                                        : 0;
        if (j->sasl_rc == AUTH_SASL_OK) {
            const char *u = auth_sasl_user(j->sasl);
            j->user = u != NULL ? strdup(u) : NULL;
            if (j->user == NULL)
                j->auth_rc = -1;
            snprintf(j->token, sizeof j->token, "%s", auth_sasl_token(j->sasl));
        }
        break;
    }
    bool is_over = j->kind != LOGIN_SASL || j->sasl_rc != AUTH_SASL_CONTINUE;
    const char *account = j->kind == LOGIN_SASL ? auth_sasl_attempted_login(j->sasl) : j->login;
    if (is_over && auth_penalty_gate_report(j->auth, &j->gate, account, j->auth_rc)) {
        /* a correct password for a blocked account or address: refused like a wrong one,
         * the maildrop left alone */
        j->auth_rc = 0;
        if (j->kind == LOGIN_SASL)
            j->sasl_rc = AUTH_SASL_FAIL;
        free(j->user);
        j->user = NULL;
        free(j->challenge);
        j->challenge = NULL;
        explicit_bzero(j->token, sizeof j->token); /* never handed over: expires unspent */
    }
    if (j->auth_rc == 1 && j->user != NULL && j->is_login_process) {
        if (!j->token[0])
            j->auth_rc = -1; /* no token: the session cannot move (a temporary failure) */
    } else if (j->auth_rc == 1 && j->user != NULL) {
        maildrop_open(j);
    }
}

/* Loop thread: a login job the policy holds for its delay runs again once it is over
 * (a timer; no thread waits). true when it was resubmitted. */
static bool login_held(struct pop3_session *s, struct login_job *j)
{
    if (j->gate.delay_ms == 0)
        return false;
    unsigned delay = j->gate.delay_ms;
    j->gate.delay_ms = 0;
    pop3_job_start_delayed(s, &j->job, delay);
    return true;
}

/* Copy text for a log line, replacing control bytes (SASL names are peer-chosen). */
static void copy_for_log(char *dst, size_t size, const char *src)
{
    size_t i = 0;
    for (; src != NULL && src[i] != '\0' && i + 1 < size; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch == 0x7f || ch == '>') ? '?' : (char)ch;
    }
    dst[i] = '\0';
}

/* The failure was counted by the job (login_work). */
static void login_failed(struct pop3_session *s, const char *login, const char *method)
{
    s->auth_attempts++;
    copy_for_log(s->last_login, sizeof s->last_login, login);
    snprintf(s->last_method, sizeof s->last_method, "%s", method != NULL ? method : "");
    pop3_error(s, "-ERR [AUTH] Authentication failed.");
}

/* Move the opened maildrop into the session: TRANSACTION begins (RFC 1939 §6). */
static void login_adopt(struct pop3_session *s, struct login_job *j, const char *method)
{
    s->user = j->user;
    j->user = NULL;
    s->md = j->md;
    memset(&j->md, 0, sizeof j->md);
    s->msgs = j->msgs;
    s->n_msgs = j->n_msgs;
    s->uidvalidity = j->uidvalidity;
    s->uidls = j->uidls;
    j->uidls = NULL;
    j->msgs = NULL;
    snprintf(s->method, sizeof s->method, "%s", method != NULL ? method : "");
    s->total_size = 0;
    for (size_t i = 0; i < s->n_msgs; i++)
        s->total_size += s->msgs[i].size;
    s->n_live = s->n_msgs;
    s->live_size = s->total_size;
}

static void login_enter_transaction(struct pop3_session *s)
{
    s->state = POP3_STATE_TRANSACTION;
    conn_set_deadline(s->conn, 0); /* pop3.login_timeout no longer applies */
    free(s->user_arg);
    s->user_arg = NULL;
    log_info("pop3", "Login: user=<%s>, method=%s, rip=%s, lip=%s%s", s->user, s->method,
             conn_peer_ip(s->conn), conn_local_ip(s->conn), conn_is_tls(s->conn) ? ", TLS" : "");
    pop3_reply(s, "+OK Logged in.");
}

/* Reply for a login whose credentials were good: opened, in use, or broken store. (A
 * handed-over session stays in AUTHORIZATION too, in the mail worker: its client has
 * logged in once and may retry, RFC 2449 §8.1.2.) */
static void login_open_result(struct pop3_session *s, struct login_job *j, const char *method)
{
    if (j->open_rc == 0) {
        login_adopt(s, j, method);
        login_enter_transaction(s);
    } else if (j->open_rc == 2) {
        /* RFC 2449 §8.1.1: [LOGIN-DELAY]; we close: the lock goes with the job, nothing is
         * deleted */
        log_info("pop3", "Login delayed: user=<%s>, rip=%s, login_delay=%u", j->user,
                 conn_peer_ip(s->conn), j->login_delay);
        pop3_reply(s, "-ERR [LOGIN-DELAY] Minimum time between logins not reached.");
        conn_close(s->conn);
    } else if (j->open_rc == 1) {
        /* RFC 2449 §8.1.2 / RFC 1939 §8: one POP3 session per maildrop. */
        log_info("pop3", "Maildrop in use: user=<%s>, rip=%s", j->user, conn_peer_ip(s->conn));
        pop3_reply(s, "-ERR [IN-USE] Mailbox is locked by another POP3 session.");
    } else {
        log_error("pop3", "Cannot open maildrop: user=<%s>: %s", j->user,
                  j->error != NULL ? j->error : "unknown error");
        pop3_reply(s, "-ERR [SYS/TEMP] Cannot open the mailbox, try again later.");
    }
}

/* A mail worker: the verdict on a session a login process handed over. It serves no
 * client that has not logged in: a token the auth process did not confirm ends the
 * connection after the reply. */
static void pop3_adopt_done(struct pop3_session *s, struct login_job *j, const char *method)
{
    if (j->auth_rc == 1 && j->user != NULL) {
        if (j->open_rc == 0 && j->sasl_final[0] != '\0') {
            /* RFC 5034 §4: the final data, then +OK after the client's empty answer */
            login_adopt(s, j, method);
            s->is_sasl_final = true;
            pop3_replyf(s, "+ %s", j->sasl_final);
            return;
        }
        login_open_result(s, j, method);
        return;
    }
    /* temporary either way, as in IMAP (imap/handoff.c): the password was accepted */
    if (j->auth_rc == 0)
        log_warning("pop3", "handed-over session refused: the auth process did not confirm its "
                            "token: user=<%s>, rip=%s",
                    j->login, conn_peer_ip(s->conn));
    pop3_reply(s, "-ERR [SYS/TEMP] Temporary authentication failure.");
    s->close_reason = "login not confirmed";
    pop3_close(s);
}

static const char *login_method(struct login_job *j)
{
    switch (j->kind) {
    case LOGIN_PASS:
        return "PLAIN"; /* Dovecot logs USER/PASS as PLAIN (seed 003) */
    case LOGIN_APOP:
        return "APOP";
    case LOGIN_TOKEN:
        return j->method;
    case LOGIN_SASL:
        break;
    }
    return NULL;
}

/* Loop thread: the verdict of a PASS or APOP job (s NULL: the client has gone). */
static void login_done(void *session, struct job *job)
{
    struct login_job *j = (struct login_job *)job;
    struct pop3_session *s = session;
    if (s == NULL) {
        pop3_login_job_free(j);
        return;
    }
    pop3_job_finish(s);
    if (login_held(s, j))
        return;
    const char *method = login_method(j);
    if (j->gate.is_blocked)
        log_info("pop3", "Login throttled: rip=%s", conn_peer_ip(s->conn));
    if (j->kind == LOGIN_TOKEN) {
        pop3_adopt_done(s, j, method);
        pop3_login_job_free(j);
        pop3_resume(s);
        return;
    }
    if (j->auth_rc == 1 && j->user != NULL && j->is_login_process) {
        /* the mail worker opens the maildrop and says +OK (handoff.c) */
        if (pop3_handoff(s, j->user, j->token, method, NULL)) {
            pop3_login_job_free(j);
            return; /* stays paused: close("handoff") or on_handoff_failed follows */
        }
        pop3_reply(s, "-ERR [SYS/TEMP] Temporary authentication failure.");
    } else if (j->auth_rc == 1 && j->user != NULL) {
        login_open_result(s, j, method);
    } else if (j->auth_rc < 0) {
        log_error("pop3", "Temporary authentication failure: user=<%s>, rip=%s", j->login,
                  conn_peer_ip(s->conn));
        pop3_reply(s, "-ERR [SYS/TEMP] Temporary authentication failure.");
    } else {
        login_failed(s, j->login, method);
    }
    pop3_login_job_free(j);
    pop3_resume(s);
}

/* Loop thread: one SASL step finished (s NULL: the client has gone). */
static void sasl_done(void *session, struct job *job)
{
    struct login_job *j = (struct login_job *)job;
    struct pop3_session *s = session;
    if (s == NULL) {
        pop3_login_job_free(j);
        return;
    }
    pop3_job_finish(s);
    if (login_held(s, j))
        return;
    s->sasl = j->sasl; /* the exchange comes back to the session */
    j->sasl = NULL;
    char method[32];
    snprintf(method, sizeof method, "%s", auth_sasl_mechanism(s->sasl));
    if (j->gate.is_blocked)
        log_info("pop3", "Login throttled: rip=%s", conn_peer_ip(s->conn));
    switch (j->sasl_rc) {
    case AUTH_SASL_CONTINUE:
        /* RFC 5034 §4: "+ " and the base64 challenge (may be empty). */
        pop3_replyf(s, "+ %s", j->challenge != NULL ? j->challenge : "");
        break;
    case AUTH_SASL_OK:
        auth_sasl_free(s->sasl);
        s->sasl = NULL;
        if (j->is_login_process) {
            /* the mail worker opens the maildrop, sends the final data and +OK */
            if (j->auth_rc == 1 && pop3_handoff(s, j->user, j->token, method, j->challenge)) {
                pop3_login_job_free(j);
                return;
            }
            pop3_reply(s, "-ERR [SYS/TEMP] Temporary authentication failure.");
            break;
        }
        if (j->open_rc == 0 && j->challenge != NULL && j->challenge[0] != '\0') {
            /* RFC 5034 §4: additional data with success goes in a last challenge; the
             * client answers with an empty line, then we say +OK. */
            login_adopt(s, j, method);
            s->is_sasl_final = true;
            pop3_replyf(s, "+ %s", j->challenge);
        } else {
            login_open_result(s, j, method);
        }
        break;
    case AUTH_SASL_TEMPFAIL:
        auth_sasl_free(s->sasl);
        s->sasl = NULL;
        pop3_reply(s, "-ERR [SYS/TEMP] Temporary authentication failure.");
        break;
    case AUTH_SASL_FAIL:
    default: {
        char login[POP3_LOGIN_MAX];
        copy_for_log(login, sizeof login, auth_sasl_attempted_login(s->sasl));
        auth_sasl_free(s->sasl);
        s->sasl = NULL;
        login_failed(s, login, method);
        break;
    }
    }
    pop3_login_job_free(j);
    pop3_resume(s);
}

/* Start a login job (the job asks the failed-login policy first, unless it is a later
 * step of a SASL exchange: is_first false). POP3 cannot pass a client address: a trusted
 * proxy is only spared the address rules. */
static void login_submit(struct pop3_session *s, struct login_job *j, job_done_fn *done,
                         bool is_first)
{
    struct auth_service *auth = session_auth(s);
    if (auth == NULL) {
        if (j->kind == LOGIN_SASL) {
            auth_sasl_free(s->sasl);
            s->sasl = NULL;
        }
        pop3_reply(s, "-ERR [SYS/TEMP] Authentication is not available.");
        pop3_login_job_free(j);
        return;
    }
    job_init(&j->job, s->handle, login_work, done);
    j->auth = auth;
    j->is_login_process = conn_is_login_process(s->conn);
    if (j->is_login_process || j->kind == LOGIN_TOKEN)
        conn_login_binding(s->conn, "pop3", j->binding, sizeof j->binding);
    const struct config *cfg = conn_server(s->conn)->cfg;
    penalty_gate_init(&j->gate, "pop3", conn_peer_ip(s->conn),
                      conn_peer_in_networks(s->conn, &cfg->auth_trusted_networks), NULL);
    j->gate.is_checked = !is_first;
    j->login_delay = cfg->pop3_login_delay;
    snprintf(j->uidl_format, sizeof j->uidl_format, "%s",
             cfg != NULL && cfg->pop3_uidl_format != NULL ? cfg->pop3_uidl_format
                                                          : UIDL_DEFAULT_FORMAT);
    if (j->kind == LOGIN_SASL) {
        j->sasl = s->sasl; /* moved in: the session holds nothing a pool thread uses */
        s->sasl = NULL;
    }
    pop3_job_start(s, &j->job);
}

/* ---- USER / PASS / APOP ------------------------------------------------------------- */

static bool refuse_plaintext(struct pop3_session *s)
{
    if (is_plaintext_allowed(s))
        return false;
    pop3_error(s, "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) "
                  "connections.");
    return true;
}

void pop3_cmd_user(struct pop3_session *s, const char *args, size_t len)
{
    if (refuse_plaintext(s))
        return;
    if (len == 0 || len >= POP3_LOGIN_MAX) {
        pop3_error(s, "-ERR No username given.");
        return;
    }
    free(s->user_arg);
    s->user_arg = strndup(args, len);
    if (s->user_arg == NULL) {
        pop3_reply(s, "-ERR [SYS/TEMP] Out of memory.");
        return;
    }
    pop3_reply(s, "+OK");
}

void pop3_cmd_pass(struct pop3_session *s, const char *args, size_t len)
{
    if (refuse_plaintext(s))
        return;
    if (s->user_arg == NULL) {
        pop3_error(s, "-ERR No username given.");
        return;
    }
    struct login_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        pop3_reply(s, "-ERR [SYS/TEMP] Out of memory.");
        return;
    }
    j->kind = LOGIN_PASS;
    j->login = s->user_arg; /* RFC 1939 §7: a failed PASS needs a new USER */
    s->user_arg = NULL;
    j->secret = strndup(args, len);
    if (j->secret == NULL) {
        pop3_login_job_free(j);
        pop3_reply(s, "-ERR [SYS/TEMP] Out of memory.");
        return;
    }
    login_submit(s, j, login_done, true);
}

void pop3_cmd_apop(struct pop3_session *s, const char *args, size_t len)
{
    struct pop3_args a;
    if (s->apop_timestamp[0] == '\0') {
        pop3_error(s, "-ERR APOP is not available.");
        return;
    }
    /* RFC 1939 §7: APOP name digest; digest is 32 hex digits of MD5. */
    if (!pop3_args_split(args, len, true, &a) || a.n != 2 || a.len[1] != 32 ||
        a.len[0] >= POP3_LOGIN_MAX) {
        pop3_error(s, "-ERR Invalid APOP parameters.");
        return;
    }
    char digest[33];
    for (size_t i = 0; i < 32; i++) {
        char ch = a.v[1][i];
        if (ch >= 'A' && ch <= 'F')
            ch = (char)(ch - 'A' + 'a');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            pop3_error(s, "-ERR Invalid APOP parameters.");
            return;
        }
        digest[i] = ch;
    }
    digest[32] = '\0';
    struct login_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        pop3_reply(s, "-ERR [SYS/TEMP] Out of memory.");
        return;
    }
    j->kind = LOGIN_APOP;
    j->login = strndup(a.v[0], a.len[0]);
    j->secret = strdup(digest);
    snprintf(j->timestamp, sizeof j->timestamp, "%s", s->apop_timestamp);
    if (j->login == NULL || j->secret == NULL) {
        pop3_login_job_free(j);
        pop3_reply(s, "-ERR [SYS/TEMP] Out of memory.");
        return;
    }
    free(s->user_arg);
    s->user_arg = NULL;
    login_submit(s, j, login_done, true);
}

/* ---- AUTH (RFC 5034) ---------------------------------------------------------------- */

/* RFC 1734 style: bare AUTH lists the mechanisms, one per line. */
static void auth_list(struct pop3_session *s)
{
    struct auth_peer peer;
    pop3_auth_peer(s, &peer);
    char *mechs = auth_mechanisms(session_auth(s), &peer);
    conn_write_str(s->conn, "+OK\r\n");
    for (char *save = NULL, *m = mechs != NULL ? strtok_r(mechs, " ", &save) : NULL; m != NULL;
         m = strtok_r(NULL, " ", &save))
        conn_printf(s->conn, "%s\r\n", m);
    conn_write_str(s->conn, ".\r\n");
    free(mechs);
}

static void sasl_submit(struct pop3_session *s, const char *response, size_t len,
                        bool is_first)
{
    struct login_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        auth_sasl_free(s->sasl);
        s->sasl = NULL;
        pop3_reply(s, "-ERR [SYS/TEMP] Out of memory.");
        return;
    }
    j->kind = LOGIN_SASL;
    if (response != NULL) {
        j->response = strndup(response, len);
        if (j->response == NULL) {
            pop3_login_job_free(j);
            auth_sasl_free(s->sasl);
            s->sasl = NULL;
            pop3_reply(s, "-ERR [SYS/TEMP] Out of memory.");
            return;
        }
    }
    login_submit(s, j, sasl_done, is_first);
}

void pop3_cmd_auth(struct pop3_session *s, const char *args, size_t len)
{
    struct pop3_args a;
    if (!pop3_args_split(args, len, true, &a) || a.n > 2) {
        pop3_error(s, "-ERR Invalid AUTH parameters.");
        return;
    }
    if (a.n == 0) {
        auth_list(s);
        return;
    }
    char mech[41];
    if (a.len[0] >= sizeof mech) {
        pop3_error(s, "-ERR Unsupported authentication mechanism.");
        return;
    }
    memcpy(mech, a.v[0], a.len[0]);
    mech[a.len[0]] = '\0';
    struct auth_peer peer;
    pop3_auth_peer(s, &peer);
    switch (auth_mechanism_status(session_auth(s), mech, &peer)) {
    case AUTH_MECH_OK:
        break;
    case AUTH_MECH_NEEDS_TLS:
        pop3_error(s, "-ERR [AUTH] Plaintext authentication disallowed on non-secure "
                      "(SSL/TLS) connections.");
        return;
    case AUTH_MECH_UNKNOWN:
    case AUTH_MECH_UNAVAILABLE:
        /* RFC 5034 §4: a mechanism the server does not offer (CAPA SASL) gets -ERR */
        pop3_error(s, "-ERR Unsupported authentication mechanism.");
        return;
    }
    s->sasl = auth_sasl_start(session_auth(s), mech, &peer, session_hostname(s));
    if (s->sasl == NULL) {
        pop3_error(s, "-ERR [SYS/TEMP] Temporary authentication failure.");
        return;
    }
    free(s->user_arg);
    s->user_arg = NULL;
    if (conn_is_login_process(s->conn)) {
        char binding[AUTH_BINDING_MAX + 1];
        conn_login_binding(s->conn, "pop3", binding, sizeof binding);
        auth_sasl_set_binding(s->sasl, binding);
    }
    /* RFC 5034 §4: an optional initial response ("=" for an empty one). */
    if (a.n == 2)
        sasl_submit(s, a.v[1], a.len[1], true);
    else
        sasl_submit(s, NULL, 0, true);
}

void pop3_sasl_line(struct pop3_session *s, const char *line, size_t len)
{
    if (s->is_sasl_final) {
        /* The client acknowledged our final challenge (RFC 5034 §4). */
        s->is_sasl_final = false;
        if (len == 1 && line[0] == '*') {
            pop3_maildrop_release(s);
            free(s->user);
            s->user = NULL;
            pop3_reply(s, "-ERR Authentication aborted.");
            return;
        }
        login_enter_transaction(s);
        return;
    }
    if (len == 1 && line[0] == '*') {
        /* RFC 5034 §4: "*" cancels the exchange; the server rejects it with -ERR. */
        auth_sasl_free(s->sasl);
        s->sasl = NULL;
        pop3_reply(s, "-ERR Authentication aborted.");
        return;
    }
    sasl_submit(s, line, len, false);
}

/* ---- privilege separation (pop3/handoff.c) ------------------------------------------ */

bool pop3_login_token_start(struct pop3_session *s, const struct conn_handoff *h)
{
    struct login_job *j = calloc(1, sizeof *j);
    if (j == NULL || (j->login = strdup(h->user)) == NULL) {
        free(j);
        return false;
    }
    j->kind = LOGIN_TOKEN;
    snprintf(j->token, sizeof j->token, "%s", h->token);
    snprintf(j->method, sizeof j->method, "%s", h->method);
    snprintf(j->sasl_final, sizeof j->sasl_final, "%s", h->sasl_final);
    if (session_auth(s) == NULL) {
        pop3_login_job_free(j);
        return false;
    }
    login_submit(s, j, login_done, true);
    return true;
}
