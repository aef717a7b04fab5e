/*
 * serve.c - `tern serve [-f] [-o key=value]... [-c file]`: load the config, open the log,
 * plug the protocols into the core and run the server until SIGTERM.
 *
 * -o and -c are accepted after "serve" too (appended to / replacing the global ones), so
 * both `tern -o a=b serve` and `tern serve -o a=b` work. The server stays in the
 * foreground (a service manager supervises it); -f forces logging to stderr whatever
 * log.target says.
 */
#include "auth/auth.h"
#include "cli/cli.h"
#include "core/channel.h"
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/util.h"
#include "core/workpool.h"
#include "http/http.h"
#include "imap/imap.h"
#include "imap/url.h"
#include "policy/ratelimit.h"
#include "auth/control.h"
#include "policy/dnscache.h"
#include "policy/greylist.h"
#include "pop3/pop3.h"
#include "queue/outbound.h"
#include "smtp/smtp.h"
#include "queue/queue.h"
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The control socket `tern auth blocks` talks to (one server per process). */
static struct auth_control *serve_control;

/* The abuse defences of the processes with SMTP sessions (the login processes, or the
 * only process): rate limits (their counts shared by every process through the anvil),
 * the DNS list cache (one for every process, in the anvil too), the milter threads.
 * Nothing here opens a file: a login process is chrooted into an empty directory. */
static int serve_init_policy(struct server_context *ctx, char **error_r)
{
    struct ratelimit_limits rates;
    ratelimit_limits_from_config(ctx->cfg, &rates);
    ctx->ratelimit = ratelimit_new(&rates);
    ctx->dnscache = dns_cache_new_shared(); /* every process's, in the anvil */
    if (!ctx->ratelimit || !ctx->dnscache) {
        *error_r = strdup("out of memory");
        return -1;
    }
    /* a chrooted login process reaches no unix socket outside its empty root */
    const struct config_list *lists[] = {&ctx->cfg->smtp_milters, &ctx->cfg->submission_milters};
    for (size_t l = 0; ctx->processes == SERVER_PROC_LOGIN && l < 2; l++)
        for (size_t i = 0; i < lists[l]->n; i++)
            if (strncmp(lists[l]->items[i], "unix:", 5) == 0) /* (an item starts with its address) */
                log_warning("smtpd",
                            "milter %s: login processes are chrooted into %s; a unix socket "
                            "outside it cannot be reached (use inet:)",
                            lists[l]->items[i], ctx->cfg->login_chroot ? ctx->cfg->login_chroot : "login_chroot");
    if (ctx->cfg->smtp_milters.n || ctx->cfg->submission_milters.n) {
        /* milter conversations wait on sockets: their own threads, so they neither queue
         * behind fsyncs nor hold the fsync pool (milter.concurrency at once) */
        ctx->milter_pool = workpool_create(ctx->base, ctx->cfg->milter_concurrency
                                                          ? ctx->cfg->milter_concurrency
                                                          : 64);
        if (!ctx->milter_pool) {
            *error_r = strdup("cannot start the milter threads");
            return -1;
        }
    }
    return 0;
}

/* Greylisting (its triplets in <data_dir>/greylist.db, shared through SQLite) in the
 * processes that may open files: the mail workers, which answer the login processes'
 * GREYLIST requests (smtp/remote.h), or the only process. */
static int serve_init_greylist(struct server_context *ctx, char **error_r)
{
    if (!ctx->cfg->greylist_enabled)
        return 0;
    struct greylist_limits gl;
    greylist_limits_from_config(ctx->cfg, &gl);
    char path[4200];
    snprintf(path, sizeof path, "%s/greylist.db", ctx->cfg->data_dir);
    ctx->greylist = greylist_open(path, &gl, error_r);
    return ctx->greylist ? 0 : -1;
}

/* The control socket of `tern auth blocks`, in the process that holds the failed-login
 * table (the auth process, or the only one), and the table's file. Without either the
 * server still serves; only `tern auth blocks` cannot reach it (e.g. a data_dir longer
 * than a socket name allows) or the table starts empty after a restart. */
static void serve_start_control(struct server_context *ctx)
{
    char *err = NULL;
    serve_control = auth_control_start(ctx->base, ctx->cfg->data_dir, ctx->auth, &err);
    if (!serve_control)
        log_warning("auth", "control socket: %s; `tern auth blocks` will not reach this server",
                    err ? err : "unknown error");
    free(err);
    /* the table outlives this process: a restart (a crash an attacker caused, or one he
     * waited for) lifts no block */
    char path[4200];
    snprintf(path, sizeof path, "%s/penalty.db", ctx->cfg->data_dir);
    if (auth_penalty_persist_start(ctx->auth, path, &err) < 0)
        log_warning("auth", "failed-login table kept in memory only: %s",
                    err ? err : "unknown error");
    free(err);
}

/* The options `tern serve` was started with, for the master's reload (SIGHUP). */
static struct cli_options serve_options;

/* Message types between the processes (core/conn.h ranges). */
#define SERVE_MSG_NOTIFY (SERVER_MSG_TO_WORKERS + 0) /* user \0 mailbox \0 [kind \0 detail \0] */
#define SERVE_MSG_QUEUED (SERVER_MSG_TO_QUEUE + 0)   /* queue id \0 recipient \0 ... */

static const struct server_context *serve_ctx; /* this process's, for the forwarders */
static struct auth_server *serve_auth_server;  /* the auth process's */

/* A mailbox changed in this process: the other workers' IDLE sessions must hear of it. */
static void serve_forward_notify(const struct store_change_event *ev)
{
    char payload[CHANNEL_MAX_PAYLOAD];
    size_t len = 0;
    if (!channel_put_str(payload, &len, ev->user) || !channel_put_str(payload, &len, ev->mailbox))
        return;
    /* a mailbox-level change (NOTIFY) says which, and its detail (old name, entries) */
    if (ev->kind != STORE_CHANGE_MESSAGES) {
        char kind[2] = {(char)('0' + (int)ev->kind), '\0'}; /* one digit: 1..6 */
        if (!channel_put_str(payload, &len, kind) ||
            !channel_put_str(payload, &len, ev->detail ? ev->detail : ""))
            return; /* too long to travel: the other workers do not hear of it */
    }
    (void)server_send(serve_ctx, SERVE_MSG_NOTIFY, payload, len);
}

/* A message was just queued for remote recipients: the queue process delivers it now
 * (as many recipients as fit; a message without any is found by the next scan). */
static void serve_forward_queued(const char *queue_id, const char *const *recipients, size_t n)
{
    char payload[CHANNEL_MAX_PAYLOAD];
    size_t len = 0;
    if (!channel_put_str(payload, &len, queue_id))
        return;
    for (size_t i = 0; i < n; i++)
        if (!channel_put_str(payload, &len, recipients[i]))
            break;
    (void)server_send(serve_ctx, SERVE_MSG_QUEUED, payload, len);
}

static void serve_on_message(struct server_context *ctx, struct channel_msg *m)
{
    size_t pos = 0;
    if (m->type == SERVER_MSG_AUTH_STATE && serve_auth_server && m->fd >= 0) {
        /* the previous auth process's live tokens (a reload replaced it): the master
         * sends them before any client channel, so no redemption comes before them */
        (void)auth_server_take_over(serve_auth_server, m->fd);
        m->fd = -1;
    } else if (m->type == SERVER_MSG_AUTH_CLIENT && serve_auth_server && m->fd >= 0) {
        /* the master names the client's kind: what it may ask */
        (void)auth_server_add_client(serve_auth_server, m->fd,
                                     (unsigned)strtoul(m->payload, NULL, 10));
        m->fd = -1;
    } else if (m->type == SERVER_MSG_AUTH_CHANNEL && ctx->auth && m->fd >= 0) {
        auth_service_set_channel(ctx->auth, m->fd);
        m->fd = -1;
    } else if (m->type == SERVE_MSG_NOTIFY) {
        const char *user = channel_get_str(m, &pos), *mailbox = channel_get_str(m, &pos);
        const char *kind = user && mailbox ? channel_get_str(m, &pos) : NULL;
        const char *detail = kind ? channel_get_str(m, &pos) : NULL;
        unsigned k = kind && kind[0] >= '1' && kind[0] <= '9' && !kind[1] ? (unsigned)(kind[0] - '0')
                                                                        : 0;
        if (user && mailbox && k > 0 && k <= STORE_CHANGE_METADATA) {
            struct store_change_event ev = {.user = user, .mailbox = mailbox,
                                            .kind = (enum store_change)k,
                                            .detail = detail && *detail ? detail : NULL};
            store_notify_publish_remote_change(&ev);
        } else if (user && mailbox) {
            store_notify_publish_remote(user, mailbox);
        }
    } else if (m->type == SERVE_MSG_QUEUED && (ctx->processes & SERVER_PROC_QUEUE)) {
        const char *id = channel_get_str(m, &pos);
        const char *rcpts[64];
        size_t n = 0;
        const char *r;
        while (n < 64 && (r = channel_get_str(m, &pos)) != NULL)
            rcpts[n++] = r;
        if (id)
            outbound_runner_notify(id, rcpts, n);
    }
}

/* Before a child drops its privileges (as root): a login process creates the resolver of
 * the port-25 checks now, while /etc/resolv.conf is still in reach (its root will be an
 * empty directory). */
static int serve_prepare(struct server_context *ctx, char **error_r)
{
    if (ctx->processes == SERVER_PROC_LOGIN)
        return smtp_mailauth_start(ctx->cfg, error_r) < 0 ? -1
                                                           : smtp_screen_prepare(ctx->cfg, error_r);
    return 0;
}

/* Open the directory and the notification channel, after privileges are dropped; the
 * queue runner in the process that runs the queue. */
static int serve_init(struct server_context *ctx, char **error_r)
{
    if (store_notify_init(ctx->base) < 0) {
        *error_r = strdup("cannot set up mailbox change notifications");
        return -1;
    }
    serve_ctx = ctx;
    /* a login process changes no mailbox: it has nothing to tell the workers */
    if (ctx->channel >= 0 && ctx->processes != SERVER_PROC_LOGIN)
        store_notify_set_forward(serve_forward_notify);
    char *err = NULL;
    /* the auth process alone opens the directory; the others ask it (DESIGN §2) */
    bool is_local = ctx->auth_channel < 0;
    if (ctx->auth_channel >= 0) {
        ctx->auth = auth_service_open_remote(ctx->cfg, ctx->auth_channel, &err);
        ctx->auth_channel = -1; /* the service owns it now */
    } else {
        ctx->auth = auth_service_open(ctx->cfg, &err);
    }
    if (!ctx->auth) {
        size_t n = strlen(err ? err : "") + 64;
        *error_r = malloc(n);
        if (*error_r)
            snprintf(*error_r, n, "cannot open the directory: %s", err ? err : "unknown error");
        free(err);
        return -1;
    }
    if (is_local && auth_directory_may_block(ctx->auth)) {
        /* One lookup now, so a wrong host or password shows in the log at start (as the
         * outage line) rather than at the first client; start-up goes on either way. */
        log_info("auth", "directory: %s", auth_directory_name(ctx->auth));
        (void)auth_domain_is_local(ctx->auth, "startup-probe.invalid");
    }
    if (ctx->processes & SERVER_PROC_AUTH)
        serve_start_control(ctx); /* the failed-login table is this process's */
    if (ctx->processes == SERVER_PROC_AUTH) {
        serve_auth_server = auth_server_new(ctx->auth, ctx->base, ctx->pool);
        if (!serve_auth_server) {
            *error_r = strdup("cannot start the auth server");
            return -1;
        }
        return 0;
    }
    /* RFC 4468 BURL: submission reads IMAP URLs (in a mail worker for a login process) */
    smtp_burl_set_fetch(imap_url_fetch);
    /* issue 13, privilege separation (docs/ARCHITECTURE.md §1): the SMTP sessions, and
     * with them the rate limits, the DNS list cache, the screening and the milters, are in
     * the login processes (in the only process without a master); greylisting's SQLite
     * file is opened by the mail workers, which the login processes ask at RCPT */
    if ((ctx->processes & SERVER_PROC_WORKER) && serve_init_greylist(ctx, error_r) < 0)
        return -1;
    if ((ctx->processes & SERVER_PROC_LOGIN) && serve_init_policy(ctx, error_r) < 0)
        return -1;
    /* issue 12: the resolver of the port-25 checks, in the processes that run SMTP
     * sessions or deliver their messages (a login process made it in serve_prepare);
     * issue 13: the screening's own (made in serve_prepare too, attached to the loop now) */
    if ((ctx->processes & SERVER_PROC_WORKER) && smtp_mailauth_start(ctx->cfg, error_r) < 0)
        return -1;
    if ((ctx->processes & SERVER_PROC_LOGIN) && smtp_screen_start(ctx->cfg, ctx->base, error_r) < 0)
        return -1;
    if (ctx->processes == SERVER_PROC_LOGIN)
        return 0; /* it queues nothing: the mail workers tell the queue runner */
    /* a mail worker delivers what the login processes' SMTP sessions receive */
    if (ctx->processes == SERVER_PROC_WORKER)
        smtp_remote_serve(ctx);
    if (!(ctx->processes & SERVER_PROC_QUEUE)) {
        outbound_runner_set_remote(serve_forward_queued);
        return 0;
    }
    /* the queue runner (outbound delivery) needs the directory for local recipients */
    (void)queue_incoming_cleanup(ctx->cfg->data_dir, 60);
    ctx->app = outbound_runner_start(ctx, error_r);
    if (!ctx->app)
        return -1;
    return 0;
}

static void serve_fini(struct server_context *ctx)
{
    /* milter conversations end first: their done callbacks may hand deliveries to the
     * main pool, which the core destroys after fini */
    workpool_destroy(ctx->milter_pool);
    ctx->milter_pool = NULL;
    if (ctx->app &&
        !outbound_runner_stop(ctx->app, ctx->shutdown_deadline_ms ? ctx->shutdown_deadline_ms
                                                                   : UINT64_MAX))
        server_abandon_exit(ctx, "outbound deliveries");
    ctx->app = NULL;
    smtp_mailauth_stop();
    smtp_screen_stop();
    auth_control_stop(serve_control); /* it answers from the directory's blocks */
    serve_control = NULL;
    if (serve_auth_server) {
        /* the loop reads nothing any more and the pool has answered every request it
         * read: the live tokens go to the master for the next auth process, and the
         * clients hear that what they still wait for was never read */
        int fd = auth_server_hand_over(serve_auth_server);
        if (fd >= 0 && ctx->channel >= 0 &&
            channel_send(ctx->channel, SERVER_MSG_AUTH_STATE, NULL, 0, fd) < 0)
            log_error("auth", "hand-over: cannot pass the live login tokens to the master: %s",
                      strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    auth_server_free(serve_auth_server);
    serve_auth_server = NULL;
    outbound_runner_set_remote(NULL);
    store_notify_set_forward(NULL);
    if (ctx->auth)
        auth_service_close(ctx->auth);
    ctx->auth = NULL;
    ratelimit_free(ctx->ratelimit);
    ctx->ratelimit = NULL;
    dns_cache_free(ctx->dnscache);
    ctx->dnscache = NULL;
    greylist_close(ctx->greylist);
    ctx->greylist = NULL;
    /* release the notification event before the loop's base is freed */
    store_notify_init(NULL);
}

/* SIGHUP in the master: the configuration file read again, with the same -c and -o. */
static struct config *serve_reload(char **error_r)
{
    struct config *cfg = config_load(serve_options.config_path, serve_options.overrides,
                                     serve_options.n_overrides, error_r);
    if (cfg && auth_config_check(cfg, error_r) < 0) { /* the directory keys too */
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Send the log where the config says (stderr when in the foreground with -f). */
static int serve_open_log(const struct config *cfg, bool is_foreground)
{
    enum log_target target = LOG_TARGET_STDERR;
    if (!is_foreground && strcmp(cfg->log_target, "syslog") == 0)
        target = LOG_TARGET_SYSLOG;
    else if (!is_foreground && strcmp(cfg->log_target, "file") == 0)
        target = LOG_TARGET_FILE;
    if (target == LOG_TARGET_FILE) {
        char dir[4096];
        const char *slash = strrchr(cfg->log_file, '/');
        if (slash && slash != cfg->log_file && (size_t)(slash - cfg->log_file) < sizeof dir) {
            memcpy(dir, cfg->log_file, (size_t)(slash - cfg->log_file));
            dir[slash - cfg->log_file] = '\0';
            util_mkdir_p(dir, 0755);
        }
    }
    if (log_open(target, cfg->log_file) < 0) {
        fprintf(stderr, "tern: cannot open log file %s: %s\n", cfg->log_file, strerror(errno));
        return -1;
    }
    log_set_debug(cfg->log_debug);
    return 0;
}

static int serve_usage(void)
{
    fprintf(stderr, "usage: tern serve [-f] [-c FILE] [-o key=value]...\n");
    return 2;
}

int cli_serve(const struct cli_options *o, int argc, char **argv)
{
    struct cli_options opts = *o;
    bool is_foreground = false;
    char **overrides = calloc(o->n_overrides + (size_t)argc + 1, sizeof *overrides);
    if (!overrides)
        return 1;
    for (size_t i = 0; i < o->n_overrides; i++)
        overrides[i] = o->overrides[i];
    opts.overrides = overrides;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-f") == 0) {
            is_foreground = true;
        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            overrides[opts.n_overrides++] = argv[++i];
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            opts.config_path = argv[++i];
        } else {
            fprintf(stderr, "tern: serve: unexpected argument '%s'\n", argv[i]);
            free(overrides);
            return serve_usage();
        }
    }
    struct config *cfg = cli_load_config(&opts);
    if (!cfg) {
        free(overrides);
        return 1;
    }
    char *err = NULL;
    if (auth_config_check(cfg, &err) < 0) { /* before anything binds */
        fprintf(stderr, "tern: %s\n", err ? err : "bad directory settings");
        free(err);
        config_free(cfg);
        free(overrides);
        return 1;
    }
    serve_options = opts;
    if (serve_open_log(cfg, is_foreground) < 0) {
        config_free(cfg);
        return 1;
    }
    struct server_hooks hooks = {
        .protocols =
            {
                [CONN_ROLE_SMTP] = &smtp_protocol,
                [CONN_ROLE_SUBMISSION] = &smtp_protocol,
                [CONN_ROLE_SUBMISSIONS] = &smtp_protocol,
                [CONN_ROLE_POP3] = &pop3_protocol,
                [CONN_ROLE_POP3S] = &pop3_protocol,
                [CONN_ROLE_IMAP] = &imap_protocol,
                [CONN_ROLE_IMAPS] = &imap_protocol,
                [CONN_ROLE_LMTP] = &smtp_protocol,
                [CONN_ROLE_MTA_STS] = &http_mtasts_protocol,
            },
        .prepare = serve_prepare,
        .init = serve_init,
        .fini = serve_fini,
        .on_message = serve_on_message,
        .reload = serve_reload,
    };
    int rc = server_run(cfg, &hooks);
    config_free(cfg);
    free(overrides);
    return rc;
}
