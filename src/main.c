/*
 * main.c - command dispatch only: global options (-c FILE, -o key=value), then the
 * subcommand table. Everything else lives in src/cli/.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct command {
    const char *name;
    int (*run)(const struct cli_options *o, int argc, char **argv);
    const char *help;
};

static const struct command commands[] = {
    {"serve", cli_serve, "serve [-f]                      run the mail server"},
    {"config", cli_config, "config check | show [-n]        validate / print settings"},
    {"domain", cli_domain, "domain add|del|list [DOMAIN]    manage local domains"},
    {"user", cli_user, "user add|del|passwd|list|show   manage users"},
    {"alias", cli_alias, "alias add|del|list              manage aliases"},
    {"auth", cli_auth, "auth blocks [clear ADDR [ACCOUNT]|clear --all]  failed-login blocks\n"
                       "  auth check --ip IP --helo NAME --mail-from ADDR < MESSAGE  show SPF/DKIM/DMARC"},
    {"hash-password", cli_hash_password, "hash-password [-s SCHEME]       like doveadm pw"},
    {"import", cli_import, "import [--postfix DIR] [--dovecot DIR] [--write]  carry over Postfix+Dovecot"},
    {"queue", cli_queue, "queue list|show|delete|hold|release|flush  manage the outbound queue"},
    {"sendmail", cli_sendmail, "sendmail [-t] [-i] [-f FROM] [RCPT...]  submit a message from stdin"},
    {"dkim", cli_dkim, "dkim keygen|list|retire         manage DKIM signing keys"},
    {"dns", cli_dns, "dns records|check DOMAIN          DNS records to publish / compare with DNS"},
    {"tlsrpt", cli_tlsrpt, "tlsrpt send [YYYY-MM-DD]         send the day's TLS-RPT reports now"},
    {"mailq", cli_mailq, "mailq                           list the queue (like queue list)"},
    {"status", cli_status, "status                          the running server's processes and counters"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: tern [-c FILE] [-o key=value]... COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %s\n", commands[i].help);
}

int main(int argc, char **argv)
{
    struct cli_options opts = {0};
    char **overrides = calloc((size_t)argc + 1, sizeof *overrides);
    if (!overrides)
        return 1;
    opts.overrides = overrides;

    /* invoked as "sendmail" or "mailq" (a symlink): the sendmail(8) interface */
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (strcmp(base, "sendmail") == 0 || strcmp(base, "mailq") == 0) {
        int rc = base[0] == 's' ? cli_sendmail(&opts, argc, argv) : cli_mailq(&opts, argc, argv);
        free(overrides);
        return rc;
    }

    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 && i + 1 < argc) {
            opts.config_path = argv[++i];
        } else if (strcmp(a, "-o") == 0 && i + 1 < argc) {
            overrides[opts.n_overrides++] = argv[++i];
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            free(overrides);
            return 0;
        } else if (a[0] == '-') {
            fprintf(stderr, "tern: unknown option %s\n", a);
            usage(stderr);
            free(overrides);
            return 2;
        } else {
            break;
        }
    }
    if (i >= argc) {
        usage(stderr);
        free(overrides);
        return 2;
    }
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        if (strcmp(argv[i], commands[k].name) == 0) {
            int rc = commands[k].run(&opts, argc - i, argv + i);
            free(overrides);
            return rc;
        }
    }
    fprintf(stderr, "tern: unknown command '%s'\n", argv[i]);
    usage(stderr);
    free(overrides);
    return 2;
}
