/*
 * common.c - helpers shared by the `tern` subcommands: loading the config the way every
 * command does (-c, $TERN_CONFIG or the default path, then -o overrides).
 */
#include "cli/cli.h"
#include "core/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

struct config *cli_load_config(const struct cli_options *o)
{
    /* Whatever a command creates under data_dir (tern.db with password hashes, mail,
     * spool files) is private to its owner, as the server's own files are. */
    umask(077);
    char *err = NULL;
    struct config *cfg = config_load(o->config_path, o->overrides, o->n_overrides, &err);
    if (!cfg) {
        fprintf(stderr, "tern: %s\n", err ? err : "cannot load the configuration");
        free(err);
    }
    return cfg;
}
