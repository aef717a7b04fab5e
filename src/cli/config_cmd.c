/*
 * config_cmd.c - `tern config check` (validate, exit 0/1) and `tern config show [-n]`
 * (effective settings, or only those that differ from the defaults, like postconf -n).
 */
#include "auth/auth.h"
#include "cli/cli.h"
#include "core/config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int config_usage(void)
{
    fprintf(stderr, "usage: tern config check | show [-n]\n");
    return 2;
}

int cli_config(const struct cli_options *o, int argc, char **argv)
{
    if (argc < 2)
        return config_usage();
    if (strcmp(argv[1], "check") == 0) {
        if (argc != 2)
            return config_usage();
        struct config *cfg = cli_load_config(o);
        if (!cfg)
            return 1;
        /* keys whose meaning depends on others (the directory's driver and queries) */
        char *err = NULL;
        if (auth_config_check(cfg, &err) < 0) {
            fprintf(stderr, "tern: %s\n", err ? err : "bad directory settings");
            free(err);
            config_free(cfg);
            return 1;
        }
        printf("config OK: %s\n", cfg->path);
        config_free(cfg);
        return 0;
    }
    if (strcmp(argv[1], "show") == 0) {
        bool non_default_only = false;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "-n") == 0)
                non_default_only = true;
            else
                return config_usage();
        }
        struct config *cfg = cli_load_config(o);
        if (!cfg)
            return 1;
        config_show(cfg, non_default_only);
        config_free(cfg);
        return 0;
    }
    return config_usage();
}
