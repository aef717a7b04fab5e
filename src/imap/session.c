/*
 * session.c - the IMAP4rev1 session (RFC 3501): connection callbacks, the input loop
 * (lines, literals, AUTHENTICATE responses, IDLE's DONE), the command table, the
 * any-state and not-authenticated commands (CAPABILITY, NOOP, LOGOUT, ID, ENABLE,
 * STARTTLS, LOGIN, AUTHENTICATE) and IDLE (RFC 2177).
 *
 * Every blocking call (password checks, store access) runs in the workpool through
 * struct imap_job (session.h); the session pauses its reads meanwhile.
 */
#include "imap/imap.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "auth/auth.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/util.h"
#include "core/workpool.h"
#include "imap/args.h"
#include "imap/session.h"
#include "policy/penalty.h"
#include "store/store.h"

#define IMAP_MAX_APPEND_DEFAULT (64ull * 1024 * 1024)
/* RFC 2177 §3: a server may end an IDLE after 30 minutes of inactivity, and NAT boxes
 * forget silent connections much sooner: an idling client hears "* OK Still here" every
 * IMAP_IDLE_KEEPALIVE seconds (every imap.timeout/2 when that is shorter), and an IDLE
 * ends with "* BYE" after imap.timeout (1800 s by default, RFC 2177's 30 minutes), or
 * IMAP_IDLE_MAX without one. The limit is checked here, not left to the connection's read
 * timeout, which a keepalive still queued at that moment would postpone. */
#define IMAP_IDLE_MAX       1800
#define IMAP_IDLE_KEEPALIVE 120

/* ---- replies ------------------------------------------------------------------------ */

void imap_reply(struct imap_session *s, const char *tag, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    conn_printf(s->c, "%s %s\r\n", tag ? tag : "*", text);
}

void imap_condstore_enable(struct imap_session *s)
{
    if (s->is_condstore)
        return;
    s->is_condstore = true;
    /* RFC 7162 §3.1: the first CONDSTORE-enabling command issued while a mailbox is
     * selected gets an untagged OK [HIGHESTMODSEQ] before its tagged reply (the view is
     * the loop's: no job is in flight while a command is handled) */
    if (s->box)
        conn_printf(s->c, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
                    (unsigned long long)store_mailbox_highestmodseq(s->box));
}

static struct auth_peer imap_peer(struct imap_session *s)
{
    struct auth_peer p = {
        .service = "imap",
        .ip = conn_peer_ip(s->c),
        .is_tls = conn_is_tls(s->c),
        .is_loopback = conn_peer_is_loopback(s->c),
    };
    return p;
}

static struct auth_service *imap_auth(struct imap_session *s)
{
    return conn_server(s->c)->auth;
}

/* LOGIN, or AUTHENTICATE PLAIN/LOGIN, where auth.allow_plaintext refuses them. */
#define IMAP_NO_PRIVACY_REQUIRED                                                            \
    "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections."

static bool imap_plaintext_ok(struct imap_session *s)
{
    struct auth_peer p = imap_peer(s);
    return imap_auth(s) && auth_plaintext_allowed(imap_auth(s), &p);
}

/* RFC 7888 §5: LITERAL+ or LITERAL- (never both), imap.literal_plus */
static bool imap_has_literal_plus(const struct imap_session *s)
{
    const struct config *cfg = conn_server(s->c)->cfg;
    return !cfg || cfg->imap_literal_plus;
}

void imap_capability_string(struct imap_session *s, struct buf *out)
{
    /* RFC 9051 Appendix A: both revisions; IMAP4rev2 after ENABLE IMAP4rev2. The login
     * process and the mail worker build the list with this same function, so what a
     * client reads before and after login differs only by state (RFC 9051 §7.2.2). */
    buf_printf(out, "IMAP4rev1 IMAP4rev2 SASL-IR %s ID ENABLE IDLE CONDSTORE",
               imap_has_literal_plus(s) ? "LITERAL+" : "LITERAL-");
    if (s->state == IMAP_STATE_NOT_AUTH) {
        if (!conn_is_tls(s->c) && conn_tls_available(s->c))
            buf_append_str(out, " STARTTLS");
        if (imap_auth(s)) {
            struct auth_peer p = imap_peer(s);
            char *mechs = auth_mechanisms(imap_auth(s), &p);
            if (mechs) {
                /* "PLAIN LOGIN CRAM-MD5" -> " AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5" */
                char *save = NULL;
                for (char *m = strtok_r(mechs, " ", &save); m; m = strtok_r(NULL, " ", &save))
                    buf_printf(out, " AUTH=%s", m);
                free(mechs);
            }
        }
        /* RFC 3501 §6.2.3: LOGINDISABLED when LOGIN would be refused here. */
        if (!imap_plaintext_ok(s))
            buf_append_str(out, " LOGINDISABLED");
    } else {
        buf_append_str(out,
                       " NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE MULTIAPPEND ESEARCH"
                       " LIST-EXTENDED LIST-STATUS");
        /* RFC 5256, 5957, 5267 (ESORT), 5182, 5032 */
        buf_append_str(out, " SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES"
                            " THREAD=REFS ESORT SEARCHRES WITHIN QRESYNC");
        buf_append_str(out, " CONTEXT=SEARCH CONTEXT=SORT I18NLEVEL=1"); /* RFC 5267, 5255 */
        /* RFC 8438, 8474, 8514, 8437, 7889 (one limit for every mailbox) */
        buf_printf(out, " STATUS=SIZE OBJECTID SAVEDATE UNAUTHENTICATE REPLACE PREVIEW BINARY"
                        " METADATA APPENDLIMIT=%zu",
                   s->parser.max_literal);
        if (!conn_is_compressed(s->c))
            buf_append_str(out, " COMPRESS=DEFLATE"); /* RFC 4978 */
        /* RFC 9208: the STORAGE resource only (no message-count limits) */
        buf_append_str(out, " QUOTA QUOTA=RES-STORAGE");
        buf_append_str(out, " CATENATE URLAUTH"); /* RFC 4469, 4467 (imap/urlauth.c) */
        buf_append_str(out, " UTF8=ACCEPT NOTIFY"); /* RFC 6855, RFC 5465 */
    }
}

/* ---- jobs --------------------------------------------------------------------------- */

static void imap_job_work_run(struct job *job);
static void imap_job_done(void *session, struct job *job);

struct imap_job *imap_job_new(struct imap_session *s, const char *tag, size_t size,
                              imap_job_fn *work, imap_finish_fn *finish, imap_cleanup_fn *cleanup)
{
    struct imap_job *j = size >= sizeof *j ? calloc(1, size) : NULL;
    if (j)
        j->tag = strdup(tag ? tag : "*");
    if (!j || !j->tag) {
        free(j);
        imap_reply(s, tag, "NO [SERVERBUG] Out of memory.");
        return NULL;
    }
    job_init(&j->job, s->handle, imap_job_work_run, imap_job_done);
    j->work = work;
    j->finish = finish;
    j->cleanup = cleanup;
    buf_init(&j->out, 0);
    buf_init(&j->tagged, 0);
    return j;
}

/* Loop thread: free the job; handles still in it are closed (the session has gone). */
static void imap_job_free(struct imap_job *j)
{
    if (j->cleanup)
        j->cleanup(j);
    if (j->ctx.fetch)
        imap_fetch_free(j->ctx.fetch);
    if (j->ctx.sasl)
        auth_sasl_free(j->ctx.sasl);
    imap_keywords_set_free(j->ctx.keywords);
    imap_updates_free(j->ctx.updates);
    if (j->ctx.box)
        store_mailbox_close(j->ctx.box);
    if (j->ctx.user)
        store_user_close(j->ctx.user);
    free(j->ctx.username);
    free(j->tag);
    buf_free(&j->out);
    buf_free(&j->tagged);
    free(j);
}

static void imap_session_process(struct imap_session *s);

/* Pool thread: the command's work, then the sync its reply may carry. */
static void imap_job_work_run(struct job *job)
{
    struct imap_job *j = (struct imap_job *)job;
    j->work(j);
    if (j->do_sync && j->ctx.box)
        imap_job_sync(j);
    imap_updates_check(j); /* RFC 5267 §4.3: after the sync, in the numbers it left */
    /* Between commands a session holds no index connection (memory, descriptors): the
     * sessions of one user share the store's pooled ones. */
    store_user_idle(j->ctx.user);
}

/* Loop thread: the session found again (or NULL: it has gone, a normal case). */
static void imap_job_done(void *session, struct job *job)
{
    struct imap_job *j = (struct imap_job *)job;
    struct imap_session *s = session;
    if (!s) {
        imap_job_free(j);
        return;
    }
    if (j->hold_ms) {
        /* the failed-login delay: the job runs again once it is over (a timer, no thread
         * waits); it keeps what it holds and the session stays paused */
        unsigned delay = j->hold_ms;
        j->hold_ms = 0;
        job_submit_delayed(conn_server(s->c)->pool, &j->job, delay);
        return;
    }
    s->is_job_in_flight = false;
    /* The handles come back (the work may have replaced or closed box). */
    s->user = j->ctx.user;
    s->box = j->ctx.box;
    s->fetch = j->ctx.fetch;
    s->sasl = j->ctx.sasl;
    s->keywords = j->ctx.keywords;
    j->ctx.keywords = NULL;
    s->updates = j->ctx.updates;
    j->ctx.updates = NULL;
    j->ctx.user = NULL;
    j->ctx.box = NULL;
    j->ctx.fetch = NULL;
    j->ctx.sasl = NULL;
    if (j->finish)
        j->finish(s, j);
    if (j->out.len)
        conn_write(s->c, j->out.data, j->out.len);
    if (j->tagged.len)
        conn_write(s->c, j->tagged.data, j->tagged.len);
    bool keep = j->keep_paused;
    imap_job_free(j);
    if (s->fetch && s->is_fetch_waiting_drain && !s->is_job_in_flight &&
        conn_output_length(s->c) < CONN_OUTPUT_LOW_WATER) {
        imap_fetch_resume(s); /* little queued: no drain event will come */
        return;
    }
    if (keep || s->is_job_in_flight)
        return;
    if (s->is_closing) {
        conn_close(s->c);
        return;
    }
    if (s->is_idling && s->has_pending_changes) {
        imap_session_start_idle_sync(s);
        return;
    }
    if (imap_notify_kick(s)) /* RFC 5465: what NOTIFY has waiting goes out between commands */
        return;
    conn_resume_read(s->c);
    imap_session_process(s);
}

void imap_job_discard(struct imap_session *s, struct imap_job *j)
{
    imap_reply(s, j->tag, "NO [SERVERBUG] Out of memory.");
    imap_job_free(j);
}

void imap_job_discard_quiet(struct imap_session *s, struct imap_job *j)
{
    (void)s;
    imap_job_free(j);
}

/* Move the session's handles into j and pause reading: what imap_job_submit does before
 * it queues the job. */
static void imap_job_prepare(struct imap_session *s, struct imap_job *j)
{
    if (j->do_sync && !s->has_pending_changes && !j->is_sync_forced)
        j->do_sync = false;
    if (j->do_sync) {
        s->has_pending_changes = false;
        s->is_notify_sync_pending = false;
    }
    /* Move the handles in: nothing on the loop uses them until the job is done. */
    struct imap_job_ctx *ctx = &j->ctx;
    ctx->auth = imap_auth(s);
    ctx->user = s->user;
    ctx->box = s->box;
    ctx->fetch = s->fetch;
    ctx->sasl = s->sasl;
    ctx->keywords = s->keywords;
    s->keywords = NULL;
    ctx->updates = s->updates;
    s->updates = NULL;
    s->user = NULL;
    s->box = NULL;
    s->fetch = NULL;
    s->sasl = NULL;
    ctx->username = strdup(s->username ? s->username : "");
    snprintf(ctx->peer_ip, sizeof ctx->peer_ip, "%s", conn_peer_ip(s->c));
    ctx->quota = s->quota;
    ctx->is_readonly = s->is_readonly;
    ctx->is_condstore = s->is_condstore;
    ctx->is_qresync = s->is_qresync;
    ctx->is_rev2 = s->is_rev2;
    ctx->is_utf8 = imap_is_utf8(s);
    ctx->max_append = s->parser.max_literal;
    const struct config *cfg = conn_server(s->c)->cfg;
    ctx->is_utf8_append_strict = cfg && cfg->imap_utf8_append_strict;
    ctx->is_login_process = conn_is_login_process(s->c);
    if (ctx->is_login_process)
        conn_login_binding(s->c, "imap", ctx->binding, sizeof ctx->binding);
    s->is_job_in_flight = true;
    /* An IDLE sync keeps reading (two epoll changes less per woken session): the input
     * waits in its bounded buffer, since a session with a job in flight parses nothing,
     * and imap_job_done parses it. */
    if (!j->is_idle_sync)
        conn_pause_read(s->c);
}

void imap_job_submit(struct imap_session *s, struct imap_job *j)
{
    imap_job_prepare(s, j);
    job_submit(conn_server(s->c)->pool, &j->job);
}

/* ---- notifications and IDLE (RFC 2177) ---------------------------------------------- */

static void imap_idle_sync_work(struct imap_job *j)
{
    (void)j; /* the sync itself runs after work (do_sync) */
}

/*
 * IDLE syncs in batches. One change wakes every IDLE session of the mailbox in this
 * process; a thousand sessions of one user each ran a job that read the same rows from
 * the index (one write transaction each, one after the other) and each paid a thread hop,
 * so notifying 100,000 IDLE sessions took 19 s. Their sync jobs are gathered until the
 * loop comes round (every notification of one dispatch), grouped by mailbox folder and
 * mode, and a group runs as one job on one pool thread: the first view syncs and the
 * others take a copy of its changes (store_sync_share). Each member is an ordinary
 * imap_job (the handles moved in as for any job), finished by imap_job_done as if it had
 * run alone; a member whose session has gone is freed unrun. Loop thread only.
 */
#define IMAP_IDLE_BATCH_MAX 1024

struct imap_idle_pending {
    struct imap_job *j;
    struct workpool *pool;
};

struct imap_idle_batch {
    struct job job; /* no owner: the members' sessions are found one by one */
    size_t n;
    struct imap_job *m[];
};

static struct imap_idle_pending *idle_pending;
static size_t idle_n_pending, idle_cap_pending;
static bool idle_is_flush_armed;

/* Pool thread: the members' syncs, sharing one round per state. */
static void imap_idle_batch_work(struct job *job)
{
    struct imap_idle_batch *b = (struct imap_idle_batch *)job;
    struct store_sync_share *share = store_sync_share_new(); /* NULL: each syncs alone */
    for (size_t i = 0; i < b->n; i++) {
        b->m[i]->ctx.sync_share = share;
        imap_job_work_run(&b->m[i]->job);
        b->m[i]->ctx.sync_share = NULL;
    }
    store_sync_share_free(share);
}

/* Loop thread: every member finished with its session (or freed, the session gone). */
static void imap_idle_batch_done(void *session, struct job *job)
{
    (void)session;
    struct imap_idle_batch *b = (struct imap_idle_batch *)job;
    for (size_t i = 0; i < b->n; i++)
        imap_job_done(job_session_find(b->m[i]->job.owner), &b->m[i]->job);
    free(b);
}

/* Order of the pending syncs: by folder, then mode (a share holds for one of each). */
static int imap_idle_pending_cmp(const void *a, const void *b)
{
    const struct imap_job *x = ((const struct imap_idle_pending *)a)->j;
    const struct imap_job *y = ((const struct imap_idle_pending *)b)->j;
    int c = strcmp(x->ctx.box ? store_mailbox_folder(x->ctx.box) : "",
                   y->ctx.box ? store_mailbox_folder(y->ctx.box) : "");
    return c ? c : (int)x->ctx.is_readonly - (int)y->ctx.is_readonly;
}

static bool imap_idle_same_group(const struct imap_job *x, const struct imap_job *y)
{
    return imap_idle_pending_cmp(&(struct imap_idle_pending){.j = (struct imap_job *)x},
                                 &(struct imap_idle_pending){.j = (struct imap_job *)y}) == 0;
}

/* Submit members [from, to) of v as one batch (one member: as a plain job). */
static void imap_idle_submit_group(struct imap_idle_pending *v, size_t from, size_t to)
{
    struct imap_idle_batch *b =
        to - from > 1 ? malloc(sizeof *b + (to - from) * sizeof b->m[0]) : NULL;
    if (!b) {
        for (size_t i = from; i < to; i++)
            job_submit(v[i].pool, &v[i].j->job);
        return;
    }
    job_init(&b->job, 0, imap_idle_batch_work, imap_idle_batch_done);
    b->n = 0;
    for (size_t i = from; i < to; i++)
        b->m[b->n++] = v[i].j;
    job_submit(v[from].pool, &b->job);
}

/* Loop thread, once the notifications of this round have been dispatched. */
static void imap_idle_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    idle_is_flush_armed = false;
    struct imap_idle_pending *v = idle_pending;
    size_t n = 0;
    for (size_t i = 0; i < idle_n_pending; i++) {
        if (!job_session_find(idle_pending[i].j->job.owner))
            imap_job_done(NULL, &idle_pending[i].j->job); /* the client left meanwhile */
        else
            v[n++] = idle_pending[i];
    }
    idle_pending = NULL;
    idle_n_pending = idle_cap_pending = 0;
    if (n > 1)
        qsort(v, n, sizeof *v, imap_idle_pending_cmp);
    size_t from = 0;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || i - from == IMAP_IDLE_BATCH_MAX || !imap_idle_same_group(v[from].j, v[i].j)) {
            imap_idle_submit_group(v, from, i);
            from = i;
        }
    }
    free(v);
}

/* Queue j (prepared) for the next flush; false when it cannot be queued (run it alone). */
static bool imap_idle_pending_add(struct imap_session *s, struct imap_job *j)
{
    const struct server_context *srv = conn_server(s->c);
    if (idle_n_pending == idle_cap_pending) {
        size_t cap = idle_cap_pending ? idle_cap_pending * 2 : 64;
        struct imap_idle_pending *v = realloc(idle_pending, cap * sizeof *v);
        if (!v)
            return false;
        idle_pending = v;
        idle_cap_pending = cap;
    }
    if (!idle_is_flush_armed) {
        const struct timeval now = {0, 0};
        if (event_base_once(srv->base, -1, EV_TIMEOUT, imap_idle_flush, NULL, &now) < 0)
            return false;
        idle_is_flush_armed = true;
    }
    idle_pending[idle_n_pending++] = (struct imap_idle_pending){j, srv->pool};
    return true;
}

/* An IDLE session's sync job: queued for the next batch (is_batched: a notification woke
 * it, and every other session of the mailbox with it) or submitted at once (the sync at
 * the start of IDLE, or after the session's own command). */
static void imap_session_idle_sync(struct imap_session *s, bool is_batched)
{
    struct imap_job *j =
        imap_job_new(s, NULL, sizeof *j, imap_idle_sync_work, NULL, NULL);
    if (!j)
        return;
    j->do_sync = true;
    j->is_sync_forced = true;
    j->is_idle_sync = true;
    imap_job_prepare(s, j);
    if (!is_batched || !imap_idle_pending_add(s, j))
        job_submit(conn_server(s->c)->pool, &j->job);
}

void imap_session_start_idle_sync(struct imap_session *s)
{
    imap_session_idle_sync(s, false);
}

static void imap_notify(const char *user, const char *mailbox, void *arg)
{
    struct imap_session *s = arg;
    (void)user;
    if (!s->box_name)
        return;
    if (mailbox && strcasecmp(mailbox, s->box_name) != 0 &&
        !(strcasecmp(s->box_name, "INBOX") == 0 && strcasecmp(mailbox, "INBOX") == 0))
        return;
    s->has_pending_changes = true;
    /* An idling client hears about new mail at once. */
    if (s->is_idling && !s->is_job_in_flight)
        imap_session_idle_sync(s, true);
}

/* Every change of the user's mailboxes: the messages' ones as before, and whatever a
 * NOTIFY asked for (notify.c). */
static void imap_notify_change(const struct store_change_event *ev, void *arg)
{
    if (ev->kind == STORE_CHANGE_MESSAGES)
        imap_notify(ev->user, ev->mailbox, arg);
    imap_notify_event(arg, ev);
}

static uint64_t imap_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static unsigned imap_idle_limit(const struct imap_session *s)
{
    const struct config *cfg = conn_server(s->c)->cfg;
    return cfg && cfg->imap_timeout ? cfg->imap_timeout : IMAP_IDLE_MAX;
}

static void imap_idle_keepalive(evutil_socket_t fd, short what, void *arg)
{
    struct imap_session *s = arg;
    (void)fd, (void)what;
    if (!s->is_idling || s->is_closing)
        return;
    /* half a second of slack: the timer may fire a little before the limit */
    if (imap_now_ms() + 500 >= s->idle_start_ms + (uint64_t)imap_idle_limit(s) * 1000u) {
        event_del(s->idle_timer);
        conn_write_str(s->c, "* BYE IDLE time limit reached.\r\n");
        s->is_closing = true;
        if (!s->is_job_in_flight)
            conn_close(s->c); /* else the job's done callback closes (is_closing) */
        return;
    }
    conn_write_str(s->c, "* OK Still here\r\n");
}

/* Start (or stop) the keepalive timer of an IDLE. */
static void imap_idle_timer(struct imap_session *s, bool on)
{
    if (!on) {
        if (s->idle_timer)
            event_del(s->idle_timer);
        return;
    }
    if (!s->idle_timer) {
        s->idle_timer = event_new(conn_server(s->c)->base, -1, EV_PERSIST, imap_idle_keepalive, s);
        if (!s->idle_timer)
            return;
    }
    unsigned limit = imap_idle_limit(s);
    unsigned secs = IMAP_IDLE_KEEPALIVE;
    if (limit / 2 < secs)
        secs = limit / 2 ? limit / 2 : 1;
    s->idle_start_ms = imap_now_ms();
    struct timeval tv = {.tv_sec = secs, .tv_usec = 0};
    event_add(s->idle_timer, &tv);
}

static void imap_cmd_idle(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                          bool is_uid)
{
    s->is_idling = true;
    imap_idle_timer(s, true);
    free(s->idle_tag);
    s->idle_tag = strdup(tag);
    conn_write_str(s->c, "+ idling\r\n");
    if (s->box)
        imap_session_start_idle_sync(s);
}

static void imap_idle_line(struct imap_session *s, const char *line)
{
    s->is_idling = false;
    imap_idle_timer(s, false);
    if (strcasecmp(line, "DONE") == 0)
        imap_reply(s, s->idle_tag, "OK Idle completed.");
    else
        imap_reply(s, s->idle_tag, "BAD Expected DONE.");
    free(s->idle_tag);
    s->idle_tag = NULL;
}

/* ---- any state ---------------------------------------------------------------------- */

static void imap_cmd_capability(struct imap_session *s, const char *tag, struct imap_arg *args,
                                size_t n, bool is_uid)
{
    struct buf b;
    buf_init(&b, 0);
    imap_capability_string(s, &b);
    conn_printf(s->c, "* CAPABILITY %s\r\n", buf_cstr(&b));
    buf_free(&b);
    imap_reply(s, tag, "OK Capability completed.");
}

static void imap_cmd_logout(struct imap_session *s, const char *tag, struct imap_arg *args,
                            size_t n, bool is_uid)
{
    conn_write_str(s->c, "* BYE Logging out\r\n");
    imap_reply(s, tag, "OK Logout completed.");
    s->state = IMAP_STATE_LOGOUT;
    s->is_closing = true;
    s->is_logged_out = true;
    conn_close(s->c);
}

static void imap_cmd_id(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                        bool is_uid)
{
    /* A trusted proxy (webmail) passes the real client address, which the failed-login
     * policy then counts instead of the proxy's own (Dovecot's login_trusted_networks). */
    const struct config *cfg = conn_server(s->c)->cfg;
    char ip[sizeof s->client_ip];
    if (s->state == IMAP_STATE_NOT_AUTH && imap_id_originating_ip(args, n, ip, sizeof ip) &&
        conn_peer_in_networks(s->c, &cfg->auth_trusted_networks)) {
        memcpy(s->client_ip, ip, sizeof ip);
        log_debug("imap", "ID: client address %s passed by %s", ip, conn_peer_ip(s->c));
    }
    /* RFC 2971: we do not name the software (the greeting does not either). */
    conn_write_str(s->c, "* ID NIL\r\n");
    imap_reply(s, tag, "OK ID completed.");
}

/* A UTF-8 session's parser checks quoted strings (RFC 6855 §3). */
static void imap_session_utf8_update(struct imap_session *s)
{
    s->parser.is_utf8 = imap_is_utf8(s);
}

static void imap_cmd_enable(struct imap_session *s, const char *tag, struct imap_arg *args,
                            size_t n, bool is_uid)
{
    /* RFC 5161: CONDSTORE and QRESYNC (RFC 7162 §3.1, §3.2.3: QRESYNC implies CONDSTORE),
     * IMAP4rev2 (RFC 9051 Appendix A) and UTF8=ACCEPT (RFC 6855 §3) can be enabled;
     * ENABLED names those of the request, once each (RFC 9051 §6.3.1). */
    bool condstore = false, qresync = false, rev2 = false, utf8 = false;
    if (n == 0) {
        imap_reply(s, tag, "BAD Usage: ENABLE capability ...");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!imap_arg_is_string(&args[i]))
            continue;
        condstore |= strcasecmp(args[i].str, "CONDSTORE") == 0;
        qresync |= strcasecmp(args[i].str, "QRESYNC") == 0;
        rev2 |= strcasecmp(args[i].str, "IMAP4rev2") == 0;
        utf8 |= strcasecmp(args[i].str, "UTF8=ACCEPT") == 0;
    }
    if (condstore || qresync)
        imap_condstore_enable(s);
    if (qresync)
        s->is_qresync = true;
    /* a capability already on is not named again (§6.3.1: only what this command
     * enabled) */
    bool new_rev2 = rev2 && !s->is_rev2, new_utf8 = utf8 && !s->is_utf8_accept;
    s->is_rev2 |= rev2;
    s->is_utf8_accept |= utf8;
    imap_session_utf8_update(s);
    conn_printf(s->c, "* ENABLED%s%s%s%s\r\n", condstore ? " CONDSTORE" : "",
                qresync ? " QRESYNC" : "", new_rev2 ? " IMAP4rev2" : "",
                new_utf8 ? " UTF8=ACCEPT" : "");
    imap_reply(s, tag, "OK Enabled.");
}

static void imap_cmd_starttls(struct imap_session *s, const char *tag, struct imap_arg *args,
                              size_t n, bool is_uid)
{
    if (conn_is_tls(s->c) || !conn_tls_available(s->c)) {
        imap_reply(s, tag, "BAD TLS is already active or not available.");
        return;
    }
    imap_reply(s, tag, "OK Begin TLS negotiation now.");
    /* The core flushes this reply in clear, then discards pipelined input (RFC 3501
     * §6.2.1: the client must not send commands before the handshake). */
    if (conn_starttls(s->c) < 0)
        imap_reply(s, NULL, "BAD TLS negotiation failed.");
}

/* RFC 4978: COMPRESS DEFLATE (authenticated or selected state). */
static void imap_cmd_compress(struct imap_session *s, const char *tag, struct imap_arg *args,
                              size_t n, bool is_uid)
{
    if (n != 1 || !imap_arg_is_atom(&args[0], "DEFLATE")) {
        imap_reply(s, tag, "BAD Usage: COMPRESS DEFLATE");
        return;
    }
    if (conn_is_compressed(s->c)) {
        imap_reply(s, tag, "NO [COMPRESSIONACTIVE] DEFLATE active via COMPRESS.");
        return;
    }
    /* the OK goes out uncompressed, everything after it compressed (§3) */
    imap_reply(s, tag, "OK DEFLATE active.");
    if (conn_compress(s->c) < 0) {
        /* the client compresses from now on and we cannot: the session cannot go on */
        log_warning("imap", "COMPRESS failed for %s: out of memory", conn_peer_ip(s->c));
        conn_close(s->c);
    }
}

/* RFC 8437 UNAUTHENTICATE: back to the not-authenticated state as on a new connection
 * (TLS and COMPRESS stay; the selected mailbox is closed without expunge; what ENABLE
 * turned on and the saved search result are forgotten). No job is in flight here. */
static void imap_cmd_unauthenticate(struct imap_session *s, const char *tag,
                                    struct imap_arg *args, size_t n, bool is_uid)
{
    if (n != 0) {
        imap_reply(s, tag, "BAD Usage: UNAUTHENTICATE");
        return;
    }
    log_info("imap", "Unauthenticated: user=<%s>, rip=%s", s->username ? s->username : "",
             conn_peer_ip(s->c));
    if (s->notify_sub) {
        store_notify_unsubscribe(s->notify_sub);
        s->notify_sub = NULL;
    }
    if (s->box)
        store_mailbox_close(s->box);
    s->box = NULL;
    imap_keywords_set_free(s->keywords);
    s->keywords = NULL;
    if (s->user)
        store_user_close(s->user);
    s->user = NULL;
    free(s->box_name);
    s->box_name = NULL;
    free(s->username);
    s->username = NULL;
    imap_searchres_clear(s);
    imap_notify_free(s->notify);
    s->notify = NULL;
    s->is_notify_sync_pending = false;
    imap_updates_clear(s);
    s->comparator = MIME_CMP_UNICODE_CASEMAP;
    s->quota = 0;
    s->is_readonly = s->is_condstore = s->is_qresync = false;
    s->is_rev2 = s->is_utf8_accept = false;
    imap_session_utf8_update(s);
    s->has_pending_changes = false;
    s->state = IMAP_STATE_NOT_AUTH;
    /* a stranger again: the pre-login limit applies anew (imap.login_timeout) */
    conn_set_deadline(s->c, conn_server(s->c)->cfg->imap_login_timeout);
    imap_reply(s, tag, "OK Unauthenticate completed.");
}

/* ---- LOGIN and AUTHENTICATE --------------------------------------------------------- */

#define IMAP_BLOCKED_REPLY "NO [UNAVAILABLE] Too many failed logins; try again later."

/* The address logins are counted against: the client's, or the one a trusted proxy
 * passed in ID. */
static const char *imap_rip(struct imap_session *s)
{
    return s->client_ip[0] ? s->client_ip : conn_peer_ip(s->c);
}

/* The failed-login policy's view of this client, for a login job (plain data). */
static void imap_penalty_gate(struct imap_session *s, struct penalty_gate *g, bool is_first)
{
    const struct config *cfg = conn_server(s->c)->cfg;
    penalty_gate_init(g, "imap", conn_peer_ip(s->c),
                      conn_peer_in_networks(s->c, &cfg->auth_trusted_networks), s->client_ip);
    g->is_checked = !is_first;
}

/* A login the policy refused (blocked before the check, or a correct password of a
 * blocked account or address): answered like Dovecot's auth penalty. */
static void imap_login_refuse_blocked(struct imap_session *s, struct imap_job *j,
                                      const char *login, const char *method)
{
    char user[128] = "";
    for (size_t i = 0; login && login[i] && i + 1 < sizeof user; i++) {
        unsigned char ch = (unsigned char)login[i];
        user[i] = ch < 0x20 || ch == 0x7f || ch == '>' ? '?' : (char)ch;
        user[i + 1] = '\0';
    }
    log_info("imap", "login refused (blocked): user=<%s>, method=%s, rip=%s, lip=%s", user,
             method, imap_rip(s), conn_local_ip(s->c));
    buf_printf(&j->tagged, "%s " IMAP_BLOCKED_REPLY "\r\n", j->tag);
}

void imap_login_result_free(struct imap_login_result *r)
{
    if (r->user)
        store_user_close(r->user);
    r->user = NULL;
    free(r->name);
    r->name = NULL;
    explicit_bzero(r->token, sizeof r->token);
}

void imap_login_open_store(const struct imap_job_ctx *ctx, const char *user,
                           struct imap_login_result *r)
{
    struct auth_user u;
    r->rc = -1;
    if (!user || auth_user_lookup(ctx->auth, user, &u) != 1)
        return;
    char *err = NULL;
    if (store_user_open(u.home, u.address, &r->user, &err) < 0) {
        log_error("imap", "store open failed for %s: %s", u.address, err ? err : "?");
        free(err);
        r->user = NULL;
    } else if ((r->name = strdup(u.address)) != NULL) {
        r->quota = u.quota;
        r->rc = 1;
    }
    /* The opened store travels in r, not in ctx.user, so imap_job_work_run's
     * store_user_idle misses it: give its index connection back to the pool here, or
     * every session that only logged in keeps one (two descriptors, ~110 KB). */
    store_user_idle(r->user);
    auth_user_free(&u);
}

struct imap_login_job {
    struct imap_job base;
    char *user, *password;    /* request */
    struct penalty_gate gate; /* the failed-login policy (request and answers) */
    struct imap_login_result r;
};

static void imap_login_cleanup(struct imap_job *j)
{
    struct imap_login_job *lj = IMAP_JOB(imap_login_job, j);
    free(lj->user);
    if (lj->password) {
        explicit_bzero(lj->password, strlen(lj->password));
        free(lj->password);
    }
    imap_login_result_free(&lj->r);
}

/* The failed-login policy lives in the auth process: asked and told here, never on the
 * loop. A held attempt comes back with j->hold_ms set (imap_job_done runs it again). */
static void imap_login_work(struct imap_job *j)
{
    struct imap_login_job *lj = IMAP_JOB(imap_login_job, j);
    if (!auth_penalty_gate_enter(j->ctx.auth, &lj->gate, lj->user)) {
        j->hold_ms = lj->gate.delay_ms; /* held: it runs again; else blocked */
        lj->gate.delay_ms = 0;
        lj->r.rc = lj->gate.is_blocked ? -2 : 0;
        return;
    }
    char *user = NULL;
    int r;
    if (j->ctx.is_login_process) {
        /* a login process opens no mailbox: the auth process's token goes along with
         * the session to the mail worker that will (handoff.c) */
        r = auth_login_password_token(j->ctx.auth, lj->user, lj->password, j->ctx.binding, &user,
                                      lj->r.token);
        if (r == 1 && !lj->r.token[0])
            r = -1;
    } else {
        r = auth_login_password(j->ctx.auth, lj->user, lj->password, &user);
    }
    if (auth_penalty_gate_report(j->ctx.auth, &lj->gate, lj->user, r)) {
        lj->r.rc = -2; /* a correct password, refused: the store stays closed */
        lj->r.token[0] = '\0'; /* never handed over: it expires unspent */
    } else if (r == 1 && j->ctx.is_login_process) {
        lj->r.name = user;
        user = NULL;
        lj->r.rc = 1;
    } else if (r == 1) {
        imap_login_open_store(&j->ctx, user, &lj->r);
    } else {
        lj->r.rc = r; /* 0 bad credentials, -1 temporary */
    }
    free(user);
}

/* Become authenticated as name (owning user and name) and write the tagged OK to out. */
static void imap_login_success(struct imap_session *s, const char *tag,
                               struct imap_login_result *r, const char *method, struct buf *out)
{
    s->user = r->user;
    s->username = r->name;
    s->quota = r->quota;
    r->user = NULL;
    r->name = NULL;
    s->state = IMAP_STATE_AUTH;
    s->notify_sub = store_notify_subscribe_changes(s->username, imap_notify_change, s);
    conn_set_deadline(s->c, 0); /* imap.login_timeout no longer applies */
    log_info("imap", "Login: user=<%s>, method=%s, rip=%s, lip=%s%s", s->username, method,
             imap_rip(s), conn_local_ip(s->c), conn_is_tls(s->c) ? ", TLS" : "");
    struct buf caps;
    buf_init(&caps, 0);
    imap_capability_string(s, &caps);
    buf_printf(out, "%s OK [CAPABILITY %s] Logged in\r\n", tag, buf_cstr(&caps));
    buf_free(&caps);
}

void imap_login_finish_common(struct imap_session *s, struct imap_job *j,
                              struct imap_login_result *r, const char *login, const char *method)
{
    if (r->rc == 1 && conn_is_login_process(s->c)) {
        if (imap_handoff(s, j->tag, r, method, NULL)) {
            j->keep_paused = true; /* until the mail worker has the session, or it failed */
            return;
        }
        r->rc = -1;
    }
    if (r->rc == 1) {
        imap_login_success(s, j->tag, r, method, &j->tagged);
        return;
    }
    if (r->rc == -2) {
        imap_login_refuse_blocked(s, j, login, method);
        return;
    }
    if (r->rc == 0) {
        log_info("imap", "login failed: user=<%s>, method=%s, rip=%s, lip=%s%s",
                 login ? login : "", method, imap_rip(s), conn_local_ip(s->c),
                 conn_is_tls(s->c) ? ", TLS" : "");
        buf_printf(&j->tagged, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
                   j->tag);
    } else {
        buf_printf(&j->tagged, "%s NO [UNAVAILABLE] Temporary authentication failure.\r\n",
                   j->tag);
    }
}

static void imap_login_finish(struct imap_session *s, struct imap_job *j)
{
    struct imap_login_job *lj = IMAP_JOB(imap_login_job, j);
    /* Dovecot logs the LOGIN command as method=PLAIN; admins grep for that. */
    imap_login_finish_common(s, j, &lj->r, lj->user, "PLAIN");
}

static void imap_cmd_login(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                           bool is_uid)
{
    if (n != 2 || !imap_arg_is_string(&args[0]) || !imap_arg_is_string(&args[1])) {
        imap_reply(s, tag, "BAD Usage: LOGIN user password");
        return;
    }
    if (!imap_auth(s)) {
        imap_reply(s, tag, "NO [UNAVAILABLE] Authentication is not available.");
        return;
    }
    if (!imap_plaintext_ok(s)) {
        /* RFC 3501 §6.2.3 with LOGINDISABLED advertised */
        imap_reply(s, tag, IMAP_NO_PRIVACY_REQUIRED);
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_login_job), imap_login_work,
                                      imap_login_finish, imap_login_cleanup);
    if (!j)
        return;
    struct imap_login_job *lj = IMAP_JOB(imap_login_job, j);
    lj->user = strdup(args[0].str);
    lj->password = strdup(args[1].str);
    imap_penalty_gate(s, &lj->gate, true);
    imap_job_submit(s, j);
}

/* One SASL step in the pool; the exchange (ctx.sasl) is moved into the job. */
struct imap_sasl_job {
    struct imap_job base;
    char *response; /* request: the client's line, NULL for no initial response */
    enum auth_sasl_status status;
    char *challenge;
    struct penalty_gate gate; /* the failed-login policy (request and answers) */
    struct imap_login_result r;
};

static void imap_sasl_cleanup(struct imap_job *j)
{
    struct imap_sasl_job *sj = IMAP_JOB(imap_sasl_job, j);
    if (sj->response) {
        explicit_bzero(sj->response, strlen(sj->response));
        free(sj->response);
    }
    free(sj->challenge);
    imap_login_result_free(&sj->r);
}

static void imap_sasl_work(struct imap_job *j)
{
    struct imap_sasl_job *sj = IMAP_JOB(imap_sasl_job, j);
    if (!auth_penalty_gate_enter(j->ctx.auth, &sj->gate, NULL)) {
        j->hold_ms = sj->gate.delay_ms; /* held: it runs again; else blocked */
        sj->gate.delay_ms = 0;
        if (sj->gate.is_blocked) {
            sj->status = AUTH_SASL_FAIL;
            sj->r.rc = -2;
        }
        return;
    }
    sj->status = auth_sasl_step(j->ctx.sasl, sj->response, &sj->challenge);
    if (sj->status == AUTH_SASL_CONTINUE)
        return;
    int rc = sj->status == AUTH_SASL_OK ? 1 : sj->status == AUTH_SASL_FAIL ? 0 : -1;
    if (auth_penalty_gate_report(j->ctx.auth, &sj->gate, auth_sasl_attempted_login(j->ctx.sasl),
                                 rc)) {
        sj->status = AUTH_SASL_FAIL; /* a correct password, refused: the store stays closed */
        sj->r.rc = -2;
        return;
    }
    if (sj->status == AUTH_SASL_OK && j->ctx.is_login_process) {
        /* handed over with the auth process's token (handoff.c) */
        const char *token = auth_sasl_token(j->ctx.sasl);
        sj->r.rc = token[0] ? 1 : -1;
        snprintf(sj->r.token, sizeof sj->r.token, "%s", token);
        if (sj->r.rc == 1 && !(sj->r.name = strdup(auth_sasl_user(j->ctx.sasl))))
            sj->r.rc = -1;
    } else if (sj->status == AUTH_SASL_OK) {
        imap_login_open_store(&j->ctx, auth_sasl_user(j->ctx.sasl), &sj->r);
    }
}

static void imap_sasl_end(struct imap_session *s)
{
    auth_sasl_free(s->sasl);
    s->sasl = NULL;
    free(s->sasl_tag);
    s->sasl_tag = NULL;
}

static void imap_sasl_finish(struct imap_session *s, struct imap_job *j)
{
    struct imap_sasl_job *sj = IMAP_JOB(imap_sasl_job, j);
    if (sj->status == AUTH_SASL_CONTINUE) {
        /* RFC 3501 §7.5: "+ " base64 challenge; the next line is the response */
        buf_printf(&j->out, "+ %s\r\n", sj->challenge ? sj->challenge : "");
        return;
    }
    const char *mech = auth_sasl_mechanism(s->sasl);
    char method[32];
    snprintf(method, sizeof method, "%s", mech ? mech : "?");
    if (sj->status == AUTH_SASL_OK && sj->r.rc == 1 && conn_is_login_process(s->c) &&
        imap_handoff(s, j->tag, &sj->r, method, sj->challenge)) {
        /* the mail worker sends the final data (if any) and the OK */
        j->keep_paused = true;
        imap_sasl_end(s);
        return;
    }
    if (sj->status == AUTH_SASL_OK && sj->r.rc == 1 && conn_is_login_process(s->c))
        sj->r.rc = -1; /* (could not be handed over: a temporary failure) */
    if (sj->status == AUTH_SASL_OK && sj->r.rc == 1 && sj->challenge && *sj->challenge) {
        /* RFC 3501 §6.2.2 has no success data in OK: send the server's final message
         * (SCRAM's "v=...") as a challenge; the login completes after the client's
         * (empty) answer. */
        buf_printf(&j->out, "+ %s\r\n", sj->challenge);
        s->sasl_pending = sj->r;
        sj->r.user = NULL;
        sj->r.name = NULL;
        return;
    }
    if (sj->r.rc == -2) {
        imap_login_finish_common(s, j, &sj->r, auth_sasl_attempted_login(s->sasl), method);
    } else if (sj->status == AUTH_SASL_OK) {
        imap_login_finish_common(s, j, &sj->r, NULL, method);
    } else if (sj->status == AUTH_SASL_FAIL) {
        sj->r.rc = 0;
        imap_login_finish_common(s, j, &sj->r, auth_sasl_attempted_login(s->sasl), method);
    } else {
        sj->r.rc = -1;
        imap_login_finish_common(s, j, &sj->r, NULL, method);
    }
    imap_sasl_end(s);
}

/* One step of the exchange; the first one asks the failed-login policy first. */
static void imap_sasl_submit(struct imap_session *s, const char *response, bool is_first)
{
    struct imap_job *j = imap_job_new(s, s->sasl_tag, sizeof(struct imap_sasl_job),
                                      imap_sasl_work, imap_sasl_finish, imap_sasl_cleanup);
    if (!j) {
        imap_sasl_end(s);
        return;
    }
    IMAP_JOB(imap_sasl_job, j)->response = response ? strdup(response) : NULL;
    imap_penalty_gate(s, &IMAP_JOB(imap_sasl_job, j)->gate, is_first);
    imap_job_submit(s, j);
}

static void imap_cmd_authenticate(struct imap_session *s, const char *tag, struct imap_arg *args,
                                  size_t n, bool is_uid)
{
    if (n < 1 || n > 2 || args[0].type != IMAP_ARG_ATOM ||
        (n == 2 && !imap_arg_is_string(&args[1]))) {
        imap_reply(s, tag, "BAD Usage: AUTHENTICATE mechanism [initial-response]");
        return;
    }
    if (!imap_auth(s)) {
        imap_reply(s, tag, "NO [UNAVAILABLE] Authentication is not available.");
        return;
    }
    struct auth_peer peer = imap_peer(s);
    const struct config *cfg = conn_server(s->c)->cfg;
    switch (auth_mechanism_status(imap_auth(s), args[0].str, &peer)) {
    case AUTH_MECH_OK:
        break;
    case AUTH_MECH_NEEDS_TLS:
        imap_reply(s, tag, IMAP_NO_PRIVACY_REQUIRED);
        return;
    case AUTH_MECH_UNKNOWN:
    case AUTH_MECH_UNAVAILABLE:
        /* RFC 3501 §6.2.2 / RFC 9051 §6.2.2: NO for a mechanism not supported (not
         * listed as AUTH= in CAPABILITY for this connection) */
        imap_reply(s, tag, "NO Unsupported authentication mechanism.");
        return;
    }
    s->sasl = auth_sasl_start(imap_auth(s), args[0].str, &peer, cfg->hostname);
    if (!s->sasl) {
        imap_reply(s, tag, "NO [UNAVAILABLE] Temporary authentication failure.");
        return;
    }
    if (conn_is_login_process(s->c)) {
        char binding[AUTH_BINDING_MAX + 1];
        conn_login_binding(s->c, "imap", binding, sizeof binding);
        auth_sasl_set_binding(s->sasl, binding);
    }
    s->sasl_tag = strdup(tag);
    /* RFC 4959 SASL-IR: the initial response is the second argument ("=" = empty). */
    imap_sasl_submit(s, n == 2 ? args[1].str : NULL, true);
}

/* A client line while AUTHENTICATE waits for a response. */
static void imap_sasl_line(struct imap_session *s, const char *line)
{
    if (s->sasl_pending.name) {
        /* the answer to the server's final message: the exchange is over */
        struct imap_login_result r = s->sasl_pending;
        memset(&s->sasl_pending, 0, sizeof s->sasl_pending);
        if (strcmp(line, "*") == 0) {
            imap_reply(s, s->sasl_tag, "BAD Authentication aborted by client.");
            imap_login_result_free(&r);
            if (conn_is_handed_over(s->c)) {
                /* a mail worker serves no client before login */
                s->is_closing = true;
                conn_close(s->c);
            }
        } else {
            const char *mech = s->sasl ? auth_sasl_mechanism(s->sasl) : s->sasl_method;
            char method[32];
            snprintf(method, sizeof method, "%s", mech && *mech ? mech : "?");
            struct buf out;
            buf_init(&out, 0);
            imap_login_success(s, s->sasl_tag, &r, method, &out);
            conn_write(s->c, out.data, out.len);
            buf_free(&out);
        }
        imap_sasl_end(s);
        return;
    }
    if (strcmp(line, "*") == 0) {
        /* RFC 3501 §6.2.2: "*" cancels the exchange */
        imap_reply(s, s->sasl_tag, "BAD Authentication aborted by client.");
        imap_sasl_end(s);
        return;
    }
    imap_sasl_submit(s, line, false);
}

/* ---- the command table -------------------------------------------------------------- */

#define ANY    (IMAP_STATE_NOT_AUTH | IMAP_STATE_AUTH | IMAP_STATE_SELECTED)
#define AUTHED (IMAP_STATE_AUTH | IMAP_STATE_SELECTED)
#define SEL    IMAP_STATE_SELECTED

struct imap_command {
    const char *name;
    imap_handler *handler;
    unsigned states;
    bool has_uid_form; /* may follow "UID" */
};

static const struct imap_command imap_commands[] = {
    {"CAPABILITY", imap_cmd_capability, ANY, false},
    {"NOOP", imap_cmd_noop, ANY, false},
    {"LOGOUT", imap_cmd_logout, ANY, false},
    {"ID", imap_cmd_id, ANY, false},
    {"ENABLE", imap_cmd_enable, AUTHED, false},
    {"STARTTLS", imap_cmd_starttls, IMAP_STATE_NOT_AUTH, false},
    {"COMPRESS", imap_cmd_compress, AUTHED, false},
    {"UNAUTHENTICATE", imap_cmd_unauthenticate, AUTHED, false},
    {"GETMETADATA", imap_cmd_getmetadata, AUTHED, false},
    {"SETMETADATA", imap_cmd_setmetadata, AUTHED, false},
    {"NOTIFY", imap_cmd_notify, AUTHED, false},
    {"LOGIN", imap_cmd_login, IMAP_STATE_NOT_AUTH, false},
    {"AUTHENTICATE", imap_cmd_authenticate, IMAP_STATE_NOT_AUTH, false},
    {"SELECT", imap_cmd_select, AUTHED, false},
    {"EXAMINE", imap_cmd_examine, AUTHED, false},
    {"CREATE", imap_cmd_create, AUTHED, false},
    {"DELETE", imap_cmd_delete, AUTHED, false},
    {"RENAME", imap_cmd_rename, AUTHED, false},
    {"SUBSCRIBE", imap_cmd_subscribe, AUTHED, false},
    {"UNSUBSCRIBE", imap_cmd_unsubscribe, AUTHED, false},
    {"LIST", imap_cmd_list, AUTHED, false},
    {"LSUB", imap_cmd_lsub, AUTHED, false},
    {"STATUS", imap_cmd_status, AUTHED, false},
    {"APPEND", imap_cmd_append, AUTHED, false},
    {"GENURLAUTH", imap_cmd_genurlauth, AUTHED, false},
    {"RESETKEY", imap_cmd_resetkey, AUTHED, false},
    {"URLFETCH", imap_cmd_urlfetch, AUTHED, false},
    {"REPLACE", imap_cmd_replace, SEL, true},
    {"NAMESPACE", imap_cmd_namespace, AUTHED, false},
    {"IDLE", imap_cmd_idle, AUTHED, false},
    {"GETQUOTAROOT", imap_cmd_getquotaroot, AUTHED, false},
    {"GETQUOTA", imap_cmd_getquota, AUTHED, false},
    {"SETQUOTA", imap_cmd_setquota, AUTHED, false},
    {"CHECK", imap_cmd_check, SEL, false},
    {"CLOSE", imap_cmd_close, SEL, false},
    {"UNSELECT", imap_cmd_unselect, SEL, false},
    {"EXPUNGE", imap_cmd_expunge, SEL, true},
    {"SEARCH", imap_cmd_search, SEL, true},
    {"SORT", imap_cmd_sort, SEL, true},
    {"THREAD", imap_cmd_thread, SEL, true},
    {"CANCELUPDATE", imap_cmd_cancelupdate, SEL, false},
    {"COMPARATOR", imap_cmd_comparator, AUTHED, false},
    {"FETCH", imap_cmd_fetch, SEL, true},
    {"STORE", imap_cmd_store, SEL, true},
    {"COPY", imap_cmd_copy, SEL, true},
    {"MOVE", imap_cmd_move, SEL, true},
};

static const struct imap_command *imap_command_find(const char *name)
{
    for (size_t i = 0; i < sizeof imap_commands / sizeof imap_commands[0]; i++)
        if (strcasecmp(imap_commands[i].name, name) == 0)
            return &imap_commands[i];
    return NULL;
}

static void imap_dispatch(struct imap_session *s)
{
    struct imap_parser *p = &s->parser;
    const char *tag = p->tag;
    struct imap_arg *args = p->args.list;
    size_t n = p->args.n;
    bool is_uid = false;
    const char *name = p->name;
    if (strcmp(name, "UID") == 0) {
        if (n < 1 || args[0].type != IMAP_ARG_ATOM) {
            imap_reply(s, tag, "BAD Usage: UID FETCH|STORE|SEARCH|COPY|MOVE|EXPUNGE ...");
            return;
        }
        is_uid = true;
        name = args[0].str;
        args++;
        n--;
    }
    const struct imap_command *cmd = imap_command_find(name);
    if (!cmd || (is_uid && !cmd->has_uid_form)) {
        imap_reply(s, tag, "BAD Unknown command.");
        return;
    }
    if (!(cmd->states & s->state)) {
        if (s->state == IMAP_STATE_NOT_AUTH)
            imap_reply(s, tag, "NO Not logged in.");
        else if (cmd->states == IMAP_STATE_NOT_AUTH)
            imap_reply(s, tag, "BAD Already logged in.");
        else
            imap_reply(s, tag, "BAD No mailbox selected.");
        return;
    }
    cmd->handler(s, tag, args, n, is_uid);
}

/* ---- input -------------------------------------------------------------------------- */

static bool imap_session_busy(struct imap_session *s)
{
    /* A client that pipelines without reading our replies waits for them to drain. */
    return s->is_job_in_flight || s->is_closing || s->fetch || conn_is_stopping(s->c) ||
           conn_output_length(s->c) > 4 * CONN_OUTPUT_LOW_WATER;
}

/* Literals of APPEND above this size go to a file instead of memory, and so do all
 * of a MULTIAPPEND's once its literals in memory would pass IMAP_APPEND_MEMORY_MAX. */
#define IMAP_SPILL_THRESHOLD   (256 * 1024)
#define IMAP_APPEND_MEMORY_MAX (1024 * 1024)

/* An unlinked file in the data folder for a big APPEND literal; -1 on failure (the
 * literal then goes to memory, still bounded by the message size limit). */
static int imap_spill_open(struct imap_session *s)
{
    const struct config *cfg = conn_server(s->c)->cfg;
    const char *dir = cfg && cfg->data_dir ? cfg->data_dir : "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[4096];
    snprintf(path, sizeof path, "%s/.imap-append-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd >= 0)
        unlink(path);
    return fd;
}

/* The command is over (APPEND took the file if it wanted it). */
static void imap_spill_discard(struct imap_session *s)
{
    if (s->spill_fd >= 0)
        close(s->spill_fd);
    s->spill_fd = -1;
    s->spill_end = 0;
    s->is_spilling = false;
    s->spill_remaining = 0;
    s->literal_memory = 0;
}

/* A literal of APPEND was announced: decide whether it goes to the spill file. */
static void imap_spill_choose(struct imap_session *s)
{
    uint64_t size = s->parser.literal_size;
    if (!imap_parser_carries_message(&s->parser) || size == 0)
        return;
    if (size <= IMAP_SPILL_THRESHOLD && s->literal_memory + size <= IMAP_APPEND_MEMORY_MAX) {
        s->literal_memory += size;
        return;
    }
    if (s->spill_fd < 0) {
        s->spill_fd = imap_spill_open(s);
        s->spill_end = 0;
    }
    if (s->spill_fd < 0) {
        s->literal_memory += size; /* no file: memory, still bounded by the parser's limits */
        return;
    }
    s->is_spilling = true;
    s->spill_remaining = size;
}

/* Literal data must arrive at least this fast (octets per second), past imap.timeout;
 * Postfix's smtpd_min_data_rate default, as SMTP DATA uses. */
#define IMAP_MIN_LITERAL_RATE 500

/* Slowloris: the connection's idle timeout is re-armed by every read, so a peer dribbling
 * one octet just inside it would hold the session forever. A command (its lines and
 * literals together; or one AUTHENTICATE response or IDLE's DONE line) must be complete
 * within imap.timeout plus 1 s per IMAP_MIN_LITERAL_RATE literal octets read, counted from
 * the moment its first octet was seen. A 20 MB APPEND may take 11 hours; a trickle is cut
 * after the timeout. Called whenever the session waits for more of a started command; the
 * idle timer still covers a peer that stops. True when the session was ended. */
static bool imap_input_deadline(struct imap_session *s)
{
    uint64_t now = imap_now_ms();
    if (s->input_started_ms == 0) {
        s->input_started_ms = now;
        return false;
    }
    const struct config *cfg = conn_server(s->c)->cfg;
    uint64_t timeout = cfg && cfg->imap_timeout ? cfg->imap_timeout : IMAP_IDLE_MAX;
    uint64_t limit = timeout * 1000 + s->input_literal_octets * 1000 / IMAP_MIN_LITERAL_RATE;
    if (now - s->input_started_ms < limit)
        return false;
    conn_write_str(s->c, "* BYE Disconnected for inactivity.\r\n");
    s->is_closing = true;
    conn_close(s->c);
    return true;
}

/* A command (or SASL/IDLE line) ended: the next one's clock starts at its first octet. */
static void imap_input_done(struct imap_session *s)
{
    s->input_started_ms = 0;
    s->input_literal_octets = 0;
}

/* Does a line end with a non-synchronizing literal "{n+}" (RFC 7888 §3)? Its size. */
static bool imap_line_nonsync_literal(const char *line, size_t len, uint64_t *size_r)
{
    if (len < 4 || line[len - 1] != '}' || line[len - 2] != '+')
        return false;
    size_t i = len - 2;
    uint64_t n = 0, scale = 1;
    size_t digits = 0;
    while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9' && digits < 19) {
        n += (uint64_t)(line[i - 1] - '0') * scale;
        scale *= 10;
        digits++;
        i--;
    }
    if (digits == 0 || i == 0 || line[i - 1] != '{')
        return false;
    *size_r = n;
    return true;
}

/* Consume as much buffered input as the session can act on now. */
static void imap_session_process(struct imap_session *s)
{
    struct evbuffer *in = conn_input(s->c);
    while (!imap_session_busy(s)) {
        if (s->skip_remaining > 0) {
            /* LITERAL-: the octets of a refused {n+} literal (RFC 7888 §4, choice 1) */
            size_t avail = evbuffer_get_length(in);
            if (avail == 0) {
                if (!imap_input_deadline(s))
                    conn_ack_now(s->c);
                return;
            }
            size_t take = avail < s->skip_remaining ? avail : (size_t)s->skip_remaining;
            evbuffer_drain(in, take);
            s->skip_remaining -= take;
            s->input_literal_octets += take;
            continue;
        }
        if (s->is_in_literal) {
            size_t avail = evbuffer_get_length(in);
            if (avail == 0) {
                if (!imap_input_deadline(s)) /* the literal is incomplete */
                    conn_ack_now(s->c);
                return;
            }
            uint64_t want =
                s->is_spilling ? s->spill_remaining : imap_parser_literal_remaining(&s->parser);
            size_t take = avail < want ? avail : (size_t)want;
            char chunk[16384];
            if (take > sizeof chunk)
                take = sizeof chunk;
            evbuffer_remove(in, chunk, take);
            s->input_literal_octets += take;
            if (s->is_spilling) {
                /* v1: a write to a local file on the loop; it lands in the page cache. */
                if (util_write_all(s->spill_fd, chunk, take) < 0) {
                    conn_write_str(s->c, "* BYE Cannot store the message.\r\n");
                    s->is_closing = true;
                    conn_close(s->c);
                    return;
                }
                s->spill_remaining -= take;
                if (s->spill_remaining == 0) {
                    uint64_t size = s->parser.literal_size;
                    imap_parser_literal_external(&s->parser, s->spill_end);
                    s->spill_end += size;
                    s->is_spilling = false;
                    s->is_in_literal = false;
                }
                continue;
            }
            if (imap_parser_feed_literal(&s->parser, chunk, take))
                s->is_in_literal = false;
            if (s->parser.is_out_of_memory) {
                conn_write_str(s->c, "* BYE Out of memory.\r\n");
                s->is_closing = true;
                conn_close(s->c);
                return;
            }
            continue;
        }
        size_t len = 0;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
        if (!line) {
            size_t avail = evbuffer_get_length(in);
            if (avail > IMAP_MAX_LINE + 2) {
                conn_write_str(s->c, "* BYE Line too long.\r\n");
                s->is_closing = true;
                conn_close(s->c);
            } else if (avail > 0 || s->input_started_ms != 0) {
                /* a partial line, or the rest of a command after its literal (APPEND:
                 * the client's Nagle may hold the closing CRLF until we ACK) */
                if (!imap_input_deadline(s))
                    conn_ack_now(s->c);
            }
            return;
        }
        if (len > IMAP_MAX_LINE) {
            free(line);
            conn_write_str(s->c, "* BYE Line too long.\r\n");
            s->is_closing = true;
            conn_close(s->c);
            return;
        }
        if (s->sasl || s->sasl_pending.name) {
            imap_input_done(s);
            imap_sasl_line(s, line);
            free(line);
            continue;
        }
        if (s->is_idling) {
            imap_input_done(s);
            imap_idle_line(s, line);
            free(line);
            continue;
        }
        if (s->is_skipping) {
            /* the rest of a refused command; another {n+} literal of it is skipped too,
             * within the same limits as any literal */
            uint64_t size = 0;
            bool is_literal = imap_line_nonsync_literal(line, len, &size);
            free(line);
            if (is_literal && size > s->parser.max_literal) {
                /* its octets follow regardless and are no command: the session ends */
                conn_write_str(s->c, "* BYE [TOOBIG] Literal too large.\r\n");
                s->is_closing = true;
                conn_close(s->c);
                return;
            }
            if (is_literal) {
                s->skip_remaining = size;
            } else {
                s->is_skipping = false;
                imap_input_done(s);
            }
            continue;
        }
        enum imap_parse_result r = imap_parser_feed_line(&s->parser, line, len);
        free(line);
        if (r == IMAP_PARSE_LITERAL) {
            s->is_in_literal = true;
            if (s->input_started_ms == 0)
                s->input_started_ms = imap_now_ms(); /* the command's clock runs on */
            imap_spill_choose(s);
            /* RFC 3501 §7.5: a synchronising literal waits for our go-ahead. */
            if (!s->parser.is_literal_nonsync)
                conn_write_str(s->c, "+ Ready for literal data\r\n");
            continue;
        }
        if (r == IMAP_PARSE_ERROR) {
            struct imap_parser *p = &s->parser;
            if (p->is_nonsync_too_big) {
                /* RFC 7888 §5: LITERAL- and a larger {n+}: tagged BAD [TOOBIG] (sent
                 * before the octets are read, §4), then the octets and the rest of the
                 * command are skipped */
                imap_reply(s, p->tag, "BAD [TOOBIG] Non-synchronizing literal over %d octets.",
                           IMAP_LITERAL_MINUS_MAX);
                s->skip_remaining = p->literal_size;
                s->is_skipping = true;
                imap_parser_reset(p);
                imap_spill_discard(s);
                continue;
            }
            if ((p->is_literal_too_big || p->is_over_limit) && p->is_literal_nonsync) {
                /* RFC 7888 §4: the data follows regardless; we cannot resync. */
                conn_write_str(s->c, p->is_over_limit ? "* BYE Too many messages.\r\n"
                                                      : "* BYE Literal too large.\r\n");
                s->is_closing = true;
                conn_close(s->c);
            } else if (p->is_literal_too_big) {
                imap_reply(s, p->tag, "NO [TOOBIG] Literal too large.");
            } else if (p->is_over_limit) {
                /* RFC 5530 §3: [LIMIT], an operation beyond a server limit */
                imap_reply(s, p->tag, "NO [LIMIT] Too many messages in one APPEND.");
            } else if (p->tag && p->name) {
                imap_reply(s, p->tag, "BAD Error in IMAP command: %s", p->error);
            } else {
                /* RFC 3501 §7.1.3: a line we cannot tag gets an untagged BAD */
                imap_reply(s, NULL, "BAD Error in IMAP command received by server: %s", p->error);
            }
            imap_parser_reset(p);
            imap_spill_discard(s);
            imap_input_done(s);
            continue;
        }
        imap_input_done(s);
        imap_dispatch(s);
        imap_parser_reset(&s->parser);
        imap_spill_discard(s); /* APPEND took the file if it wanted it */
    }
}

/* ---- connection callbacks ----------------------------------------------------------- */

struct imap_session *imap_session_new(struct conn *c)
{
    struct imap_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->c = c;
    s->handle = job_session_add(s);
    s->state = IMAP_STATE_NOT_AUTH;
    s->spill_fd = -1;
    const struct config *cfg = conn_server(c)->cfg;
    uint64_t max =
        cfg && cfg->smtp_max_message_size ? cfg->smtp_max_message_size : IMAP_MAX_APPEND_DEFAULT;
    imap_parser_init(&s->parser, (size_t)max);
    /* RFC 7888 §5 / RFC 9051 §4.3: LITERAL- takes {n+} literals up to 4096 octets */
    if (!imap_has_literal_plus(s))
        s->parser.max_nonsync = IMAP_LITERAL_MINUS_MAX;
    if (cfg && cfg->imap_timeout)
        conn_set_timeout(c, cfg->imap_timeout);
    return s;
}

static void *imap_open(struct conn *c)
{
    struct imap_session *s = imap_session_new(c);
    if (!s)
        return NULL;
    struct buf caps;
    buf_init(&caps, 0);
    imap_capability_string(s, &caps);
    /* No software name in the greeting (DESIGN §6). */
    conn_printf(c, "* OK [CAPABILITY %s] IMAP4rev1 ready.\r\n", buf_cstr(&caps));
    buf_free(&caps);
    return s;
}

static void imap_on_read(void *session, struct conn *c)
{
    imap_session_process(session);
}

static void imap_on_drained(void *session, struct conn *c)
{
    struct imap_session *s = session;
    if (s->fetch && s->is_fetch_waiting_drain && !s->is_job_in_flight)
        imap_fetch_resume(s);
    else
        imap_session_process(s);
}

static void imap_on_tls(void *session, struct conn *c)
{
    struct imap_session *s = session;
    /* Anything parsed before the handshake is forgotten with the discarded input. */
    imap_parser_reset(&s->parser);
    imap_spill_discard(s);
    s->is_in_literal = false;
    s->skip_remaining = 0;
    s->is_skipping = false;
    imap_input_done(s);
}

static void imap_on_timeout(void *session, struct conn *c)
{
    struct imap_session *s = session;
    if (s->is_idling) {
        /* RFC 2177 §3: the IDLE lasted imap.timeout without a DONE */
        conn_write_str(c, "* BYE IDLE time limit reached.\r\n");
        return;
    }
    /* A write timeout in the middle of a streamed FETCH literal: the farewell would be
     * read as octets of the message (RFC 3501 §4.3), so the connection just closes. */
    if (s->is_in_fetch_literal)
        return;
    conn_write_str(c, "* BYE Disconnected for inactivity.\r\n");
}

static void imap_on_shutdown(void *session, struct conn *c)
{
    /* RFC 3501 §7.1.5: BYE, the server is closing the connection */
    conn_write_str(c, "* BYE Server shutting down.\r\n");
}

void imap_session_free(struct imap_session *s)
{
    if (s->notify_sub)
        store_notify_unsubscribe(s->notify_sub);
    if (s->fetch)
        imap_fetch_free(s->fetch);
    if (s->sasl)
        auth_sasl_free(s->sasl);
    free(s->sasl_tag);
    free(s->handoff_tag);
    imap_login_result_free(&s->sasl_pending);
    if (s->box)
        store_mailbox_close(s->box);
    imap_keywords_set_free(s->keywords);
    imap_updates_free(s->updates);
    if (s->user)
        store_user_close(s->user);
    free(s->box_name);
    free(s->searchres);
    imap_notify_free(s->notify);
    free(s->username);
    free(s->idle_tag);
    if (s->idle_timer)
        event_free(s->idle_timer);
    imap_spill_discard(s);
    imap_parser_free(&s->parser);
    free(s);
}

static void imap_close(void *session, const char *reason)
{
    struct imap_session *s = session;
    if (s->username)
        log_info("imap", "Disconnected: %s user=<%s>, rip=%s",
                 s->is_logged_out ? "Logged out"
                 : reason         ? reason
                                  : "closed",
                 s->username, conn_peer_ip(s->c));
    if (s->notify_sub) {
        store_notify_unsubscribe(s->notify_sub);
        s->notify_sub = NULL;
    }
    imap_idle_timer(s, false);
    /* A job in flight holds the session's handles and closes them itself when it finds
     * the session gone (job.h); one not started yet is cancelled. */
    job_session_remove(s->handle);
    imap_session_free(s);
}

const struct conn_protocol imap_protocol = {
    .log_name = "imap",
    .open = imap_open,
    .on_read = imap_on_read,
    .on_drained = imap_on_drained,
    .on_tls = imap_on_tls,
    .on_timeout = imap_on_timeout,
    .on_shutdown = imap_on_shutdown,
    .close = imap_close,
    .adopt = imap_adopt,
    .on_handoff_failed = imap_on_handoff_failed,
};
