/*
 * auth_cmd.c - `tern auth`: `auth check` (auth_check_cmd.c) and `auth blocks`, which lists
 * and lifts the failed-login blocks the running server holds (policy/penalty.h: the auth
 * process's table), through its control socket (auth/control.h).
 *
 *   tern auth blocks                      list: ADDRESS ACCOUNT FAILURES SECONDS-LEFT
 *   tern auth blocks clear ADDRESS [ACCOUNT | -]
 *   tern auth blocks clear --all
 *
 * clear ADDRESS lifts the address block and every (address, account) lock of it;
 * with ACCOUNT only that pair, with "-" only the address block. The server logs each
 * lifted block. Exit 1 when the server cannot be reached (it is not running, or the
 * caller may not open data_dir/control.sock: root or run_user only).
 */
#include "cli/cli.h"
#include "core/buf.h"
#include "core/config.h"
#include "auth/control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char auth_usage[] =
    "usage: tern auth blocks [clear ADDRESS [ACCOUNT|-] | clear --all]\n"
    "       tern auth check [--ip IP] [--helo NAME] [--mail-from ADDR] < message\n";

/* An argument goes into a one-line request: no spaces or control bytes in it. */
static bool is_request_word(const char *w)
{
    if (!*w || strlen(w) > 320)
        return false;
    for (const unsigned char *p = (const unsigned char *)w; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* Print the server's answer for `blocks list` as a table. */
static int auth_blocks_print(const char *answer)
{
    printf("%-40s %-32s %8s %8s\n", "ADDRESS", "ACCOUNT", "FAILURES", "SECONDS");
    const char *p = answer;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
        char ip[64], account[330];
        unsigned failures;
        unsigned long long seconds;
        if (sscanf(line, "block %63s %329s %u %llu", ip, account, &failures, &seconds) == 4)
            printf("%-40s %-32s %8u %8llu\n", ip, account, failures, seconds);
        else if (strncmp(line, "end ", 4) == 0)
            return 0;
        else if (strncmp(line, "error ", 6) == 0) {
            fprintf(stderr, "tern: auth blocks: %s\n", line + 6);
            return 1;
        }
        p += len + (nl ? 1 : 0);
    }
    fprintf(stderr, "tern: auth blocks: incomplete answer from the server\n");
    return 1;
}

int cli_auth(const struct cli_options *o, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "check") == 0)
        return cli_auth_check(o, argc, argv);
    if (argc < 2 || strcmp(argv[1], "blocks") != 0) {
        fputs(auth_usage, stderr);
        return 2;
    }
    struct buf req;
    buf_init(&req, CONTROL_MAX_LINE);
    bool is_list = argc == 2;
    if (is_list) {
        buf_append_str(&req, "blocks-list");
    } else if (argc == 4 && strcmp(argv[2], "clear") == 0 && strcmp(argv[3], "--all") == 0) {
        buf_append_str(&req, "blocks-clear *");
    } else if ((argc == 4 || argc == 5) && strcmp(argv[2], "clear") == 0 &&
               is_request_word(argv[3]) && (argc == 4 || is_request_word(argv[4]))) {
        buf_printf(&req, "blocks-clear %s%s%s", argv[3], argc == 5 ? " " : "",
                   argc == 5 ? argv[4] : "");
    } else {
        fputs(auth_usage, stderr);
        buf_free(&req);
        return 2;
    }
    struct config *cfg = cli_load_config(o);
    if (!cfg) {
        buf_free(&req);
        return 1;
    }
    char *answer = NULL;
    size_t answer_len = 0;
    FILE *out = open_memstream(&answer, &answer_len);
    char *error = NULL;
    int rc = out ? auth_control_request(cfg->data_dir, buf_cstr(&req), out, &error) : -1;
    if (out)
        fclose(out);
    buf_free(&req);
    config_free(cfg);
    if (rc < 0) {
        fprintf(stderr, "tern: auth blocks: %s\n", error ? error : "out of memory");
        free(error);
        free(answer);
        return 1;
    }
    int status = 0;
    if (is_list) {
        status = auth_blocks_print(answer ? answer : "");
    } else if (answer && strncmp(answer, "cleared ", 8) == 0) {
        printf("%s", answer);
    } else {
        fprintf(stderr, "tern: auth blocks: %s", answer && *answer ? answer : "no answer\n");
        status = 1;
    }
    free(answer);
    return status;
}
