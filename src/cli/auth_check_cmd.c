/*
 * auth_check_cmd.c - `tern auth check [--ip IP] [--helo NAME] [--mail-from ADDR] < message`:
 * runs SPF, DKIM and DMARC on a message the way port 25 does and prints the
 * Authentication-Results field Tern would add (the admin's debugging tool). Uses the
 * config's dns.resolver, mailauth.dns_timeout and authserv-id.
 */
#include "cli/cli.h"
#include "core/buf.h"
#include "core/config.h"
#include "mailauth/mailauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int auth_usage(void)
{
    fprintf(stderr, "usage: tern auth check [--ip IP] [--helo NAME] [--mail-from ADDR] < message\n");
    return 2;
}

int cli_auth_check(const struct cli_options *o, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "check") != 0)
        return auth_usage();
    const char *ip = NULL, *helo = "", *mail_from = "";
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc)
            return auth_usage();
        if (strcmp(argv[i], "--ip") == 0)
            ip = argv[++i];
        else if (strcmp(argv[i], "--helo") == 0)
            helo = argv[++i];
        else if (strcmp(argv[i], "--mail-from") == 0)
            mail_from = argv[++i];
        else
            return auth_usage();
    }
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return 1;
    int rc = 1;
    struct buf msg, out;
    buf_init(&msg, cfg->smtp_max_message_size);
    buf_init(&out, 0);
    char chunk[65536];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        /* a message from a file may have LF line ends: make them CRLF as SMTP would */
        for (size_t i = 0; i < n && ok; i++) {
            if (chunk[i] == '\n' && (msg.len == 0 || msg.data[msg.len - 1] != '\r'))
                ok = buf_append_byte(&msg, '\r');
            ok = ok && buf_append_byte(&msg, chunk[i]);
        }
    }
    if (!ok) {
        fprintf(stderr, "tern: message too large\n");
        goto out;
    }
    char *err = NULL;
    struct mailauth_resolver *r =
        mailauth_resolver_create(cfg->dns_resolver, cfg->mailauth_dns_timeout * 1000, NULL, &err);
    if (!r) {
        fprintf(stderr, "tern: %s\n", err ? err : "no resolver");
        free(err);
        goto out;
    }
    struct mailauth_dns dns = mailauth_resolver_dns(r);
    struct mailauth_message m = {.data = msg.data ? msg.data : "", .len = msg.len, .fd = -1};
    struct mailauth_check_args a = {.ip = ip,
                                    .helo = helo,
                                    .mail_from = mail_from,
                                    .receiver = cfg->hostname,
                                    .now = (int64_t)time(NULL)};
    struct mailauth_verdict *v = calloc(1, sizeof *v);
    if (!v || mailauth_check_message(&dns, &m, &a, v) < 0) {
        fprintf(stderr, "tern: cannot check the message (unreadable or header too large)\n");
    } else {
        const char *id = cfg->mailauth_authserv_id[0] ? cfg->mailauth_authserv_id : cfg->hostname;
        mailauth_ar_format(id, v, &out);
        fwrite(out.data, 1, out.len, stdout);
        if (v->has_spf && v->spf.explanation[0])
            printf("SPF explanation: %s\n", v->spf.explanation);
        rc = 0;
    }
    free(v);
    mailauth_resolver_free(r);
out:
    buf_free(&msg);
    buf_free(&out);
    config_free(cfg);
    return rc;
}
