/*
 * tlsrpt_cmd.c - `tern tlsrpt send [YYYY-MM-DD]`: send the TLS-RPT aggregate reports (RFC
 * 8460) of a day now (default: yesterday, UTC), as the queue runner does once a day. A day
 * already sent is not sent again. Reports for mailto: addresses are queued (the running
 * server delivers them), https: ones POSTed now; a POST that failed is tried again by the
 * next run (of this command or the runner).
 */
#include "cli/cli.h"
#include "core/config.h"
#include "mailauth/mailauth.h"
#include "queue/outbound.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_tlsrpt(const struct cli_options *o, int argc, char **argv)
{
    if (argc < 2 || argc > 3 || strcmp(argv[1], "send") != 0) {
        fprintf(stderr, "usage: tern tlsrpt send [YYYY-MM-DD]\n");
        return 2;
    }
    char day[16];
    if (argc == 3) {
        int y, m, d;
        if (strlen(argv[2]) != 10 || sscanf(argv[2], "%4d-%2d-%2d", &y, &m, &d) != 3) {
            fprintf(stderr, "tern: bad day '%s' (YYYY-MM-DD)\n", argv[2]);
            return 2;
        }
        snprintf(day, sizeof day, "%s", argv[2]);
    } else {
        mailauth_tlsrpt_day((int64_t)time(NULL) - 86400, day, sizeof day);
    }
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return 1;
    char *err = NULL;
    struct mailauth_resolver *r =
        mailauth_resolver_create(cfg->dns_resolver, cfg->mailauth_dns_timeout * 1000, NULL, &err);
    int rc = 1;
    if (r) {
        struct mailauth_dns dns = mailauth_resolver_dns(r);
        struct outbound_tlsrpt_counts n;
        if (outbound_tlsrpt_send(cfg, &dns, day, &n, &err) == 0) {
            printf("%u TLS report(s) of %s queued, %u posted, %u to try again\n", n.queued, day,
                   n.posted, n.pending);
            rc = 0;
        }
        mailauth_resolver_free(r);
    }
    if (rc)
        fprintf(stderr, "tern: %s\n", err ? err : "cannot send the TLS reports");
    free(err);
    config_free(cfg);
    return rc;
}
