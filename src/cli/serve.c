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
#include "core/config.h"
#include "core/conn.h"
#include "core/log.h"
#include "core/util.h"
#include "core/workpool.h"
#include "imap/imap.h"
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

/* The control socket `tern auth blocks` talks to (one server per process). */
static struct auth_control *serve_control;

/* The failed-login policy's table and the control socket that lists and lifts its
 * blocks. (When the auth process exists, both move there.) */
static int serve_init_policy(struct server_context *ctx, char **error_r)
{
    struct ratelimit_limits rates;
    ratelimit_limits_from_config(ctx->cfg, &rates);
    ctx->ratelimit = ratelimit_new(&rates);
    ctx->dnscache = dns_cache_new();
    if (!ctx->ratelimit || !ctx->dnscache) {
        *error_r = strdup("out of memory");
        return -1;
    }
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
    if (ctx->cfg->greylist_enabled) {
        struct greylist_limits gl;
        greylist_limits_from_config(ctx->cfg, &gl);
        char path[4200];
        snprintf(path, sizeof path, "%s/greylist.db", ctx->cfg->data_dir);
        ctx->greylist = greylist_open(path, &gl, error_r);
        if (!ctx->greylist)
            return -1;
    }
    /* Without the socket the server still serves; only `tern auth blocks` cannot reach it
     * (e.g. a data_dir path longer than a Unix socket name allows). */
    char *err = NULL;
    serve_control = auth_control_start(ctx->base, ctx->cfg->data_dir, ctx->auth, &err);
    if (!serve_control)
        log_warning("master", "control socket: %s; `tern auth blocks` will not reach this server",
                    err ? err : "unknown error");
    free(err);
    return 0;
}

/* Open the directory and the notification channel, after privileges are dropped. */
static int serve_init(struct server_context *ctx, char **error_r)
{
    if (store_notify_init(ctx->base) < 0) {
        *error_r = strdup("cannot set up mailbox change notifications");
        return -1;
    }
    char *err = NULL;
    ctx->auth = auth_service_open(ctx->cfg, &err);
    if (!ctx->auth) {
        size_t n = strlen(err ? err : "") + 64;
        *error_r = malloc(n);
        if (*error_r)
            snprintf(*error_r, n, "cannot open the directory: %s", err ? err : "unknown error");
        free(err);
        return -1;
    }
    if (serve_init_policy(ctx, error_r) < 0)
        return -1;
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
    if (!outbound_runner_stop(ctx->app, ctx->shutdown_deadline_ms ? ctx->shutdown_deadline_ms
                                                                   : UINT64_MAX))
        server_abandon_exit(ctx, "outbound deliveries");
    ctx->app = NULL;
    auth_control_stop(serve_control); /* it answers from the directory's blocks */
    serve_control = NULL;
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
    free(overrides);
    if (!cfg)
        return 1;
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
            },
        .init = serve_init,
        .fini = serve_fini,
    };
    int rc = server_run(cfg, &hooks);
    config_free(cfg);
    return rc;
}
