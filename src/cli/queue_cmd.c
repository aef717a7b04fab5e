/*
 * queue_cmd.c - `tern queue list|show|delete|hold|release`: the outbound queue for admins,
 * in the output formats of Postfix's mailq (postqueue -p), postcat -q and postsuper, so
 * the habits and scripts of Postfix admins carry over.
 */
#include "cli/cli.h"

#include "core/config.h"
#include "queue/queue.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Postfix showq formats (src/showq/showq.c): data lines are "%-10s%c", so the header
 * and recipient lines pad the id column to 11. */
#define QUEUE_STRING_FORMAT "%-11s %8s %-20s %s\n"

struct queue_list_ctx {
    uint64_t total;
    unsigned count;
};

static void queue_print_entry(const struct queue_entry *e, void *arg)
{
    struct queue_list_ctx *ctx = arg;
    if (ctx->count == 0)
        printf(QUEUE_STRING_FORMAT, "-Queue ID-", "--Size--", "----Arrival Time----",
               "-Sender/Recipient-------");
    /* '*' active, '!' on hold, ' ' deferred - as mailq marks them */
    char mark = strcmp(e->state, "active") == 0 ? '*' : strcmp(e->state, "hold") == 0 ? '!' : ' ';
    char date[64] = "";
    struct tm tm;
    time_t t = e->arrival;
    if (localtime_r(&t, &tm))
        strftime(date, sizeof date, "%a %b %e %H:%M:%S", &tm);
    printf("%-10s%c %8llu %-20.20s %s\n", e->id, mark, (unsigned long long)e->size, date,
           e->sender && *e->sender ? e->sender : "MAILER-DAEMON");
    for (size_t i = 0; i < e->n_recipients; i++)
        printf(QUEUE_STRING_FORMAT, "", "", "", e->recipients[i]);
    printf("\n");
    ctx->total += e->size;
    ctx->count++;
}

static int queue_cmd_list(const struct config *cfg)
{
    struct queue_list_ctx ctx = {0};
    char *error = NULL;
    if (queue_list(cfg->data_dir, queue_print_entry, &ctx, &error) < 0) {
        fprintf(stderr, "tern: queue list: %s\n", error ? error : "error");
        free(error);
        return 1;
    }
    if (ctx.count == 0)
        printf("Mail queue is empty\n");
    else
        printf("-- %llu Kbytes in %u Request%s.\n", (unsigned long long)((ctx.total + 1023) / 1024),
               ctx.count, ctx.count == 1 ? "" : "s");
    return 0;
}

/* Like postcat -q: the envelope, then the message as stored. */
static int queue_cmd_show(const struct config *cfg, const char *id)
{
    struct queue_entry e;
    int fd = -1;
    uint64_t off = 0;
    char *error = NULL;
    int r = queue_read(cfg->data_dir, id, &e, &fd, &off, &error);
    if (r != 0) {
        fprintf(stderr, "tern: %s\n", error ? error : "cannot read queue file");
        free(error);
        return 1;
    }
    char date[64] = "";
    struct tm tm;
    time_t t = e.arrival;
    if (localtime_r(&t, &tm))
        strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm);
    printf("*** ENVELOPE RECORDS %s/%s ***\n", e.state, e.id);
    printf("message_size: %llu\n", (unsigned long long)e.size);
    printf("message_arrival_time: %s\n", date);
    printf("sender: %s\n", e.sender);
    for (size_t i = 0; i < e.n_recipients; i++)
        printf("recipient: %s\n", e.recipients[i]);
    printf("*** MESSAGE CONTENTS %s/%s ***\n", e.state, e.id);
    fflush(stdout);
    char buf[65536];
    uint64_t left = e.size;
    int ret = 0;
    while (left > 0) {
        size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "tern: %s: short queue file\n", id);
            ret = 1;
            break;
        }
        fwrite(buf, 1, (size_t)n, stdout);
        off += (uint64_t)n;
        left -= (uint64_t)n;
    }
    printf("*** MESSAGE FILE END %s/%s ***\n", e.state, e.id);
    close(fd);
    queue_entry_free(&e);
    return ret;
}

/* delete / hold / release over the ids given, with postsuper's messages. */
static int queue_cmd_change(const struct config *cfg, const char *verb, int argc, char **argv)
{
    int (*fn)(const char *, const char *, char **) = strcmp(verb, "delete") == 0 ? queue_delete
                                                     : strcmp(verb, "hold") == 0 ? queue_hold
                                                                                 : queue_release;
    const char *done = strcmp(verb, "delete") == 0 ? "removed"
                       : strcmp(verb, "hold") == 0 ? "placed on hold"
                                                   : "released from hold";
    const char *total = strcmp(verb, "delete") == 0 ? "Deleted"
                        : strcmp(verb, "hold") == 0 ? "Placed on hold"
                                                    : "Released from hold";
    unsigned n_done = 0;
    int ret = 0;
    for (int i = 1; i < argc; i++) {
        char *error = NULL;
        if (strcmp(argv[i], "ALL") == 0 && fn != queue_delete) {
            fprintf(stderr, "tern: queue %s: ALL is only supported by delete\n", verb);
            return 2;
        }
        int r = fn(cfg->data_dir, argv[i], &error);
        if (r == 0) {
            if (strcmp(argv[i], "ALL") == 0)
                printf("tern: all messages: %s\n", done);
            else
                printf("tern: %s: %s\n", argv[i], done);
            n_done++;
        } else {
            fprintf(stderr, "tern: %s\n", error ? error : "error");
            ret = 1;
        }
        free(error);
    }
    if (n_done > 0)
        printf("tern: %s: %u message%s\n", total, n_done, n_done == 1 ? "" : "s");
    return ret;
}

/* Added by the outbound helper: `tern queue flush [DOMAIN]` (postqueue -f / -s): make
 * deferred mail due now; the running server retries it within queue.scan_interval. */
static int queue_cmd_flush(const struct cli_options *o, int argc, char **argv)
{
    if (argc > 3) {
        fprintf(stderr, "usage: tern queue flush [DOMAIN]\n");
        return 2;
    }
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return 1;
    char *error = NULL;
    int n = queue_flush(cfg->data_dir, argc == 3 ? argv[2] : NULL, &error);
    config_free(cfg);
    if (n < 0) {
        fprintf(stderr, "tern: queue flush: %s\n", error ? error : "error");
        free(error);
        return 1;
    }
    printf("tern: %d deferred message%s scheduled for delivery\n", n, n == 1 ? "" : "s");
    return 0;
}

static void queue_usage(void)
{
    fprintf(stderr, "usage: tern queue list\n"
                    "       tern queue show ID\n"
                    "       tern queue delete ID...|ALL\n"
                    "       tern queue hold ID...\n"
                    "       tern queue release ID...\n"
                    "       tern queue flush [DOMAIN]\n");
}

int cli_queue(const struct cli_options *o, int argc, char **argv)
{
    /* argv[0] is "queue"; the verb follows */
    if (argc < 2) {
        queue_usage();
        return 2;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "flush") == 0)
        return queue_cmd_flush(o, argc, argv);
    bool is_list = strcmp(verb, "list") == 0;
    bool is_show = strcmp(verb, "show") == 0;
    bool is_change =
        strcmp(verb, "delete") == 0 || strcmp(verb, "hold") == 0 || strcmp(verb, "release") == 0;
    if ((!is_list && !is_show && !is_change) || (is_list && argc != 2) || (is_show && argc != 3) ||
        (is_change && argc < 3)) {
        queue_usage();
        return 2;
    }
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return 1;
    int ret = is_list   ? queue_cmd_list(cfg)
              : is_show ? queue_cmd_show(cfg, argv[2])
                        : queue_cmd_change(cfg, verb, argc - 1, argv + 1);
    config_free(cfg);
    return ret;
}
