/*
 * common.c - helpers shared by the `tern` subcommands: loading the config the way every
 * command does (-c, $TERN_CONFIG or the default path, then -o overrides), and preparing
 * the directory's files for a command run as root.
 */
#include "cli/cli.h"
#include "core/config.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

int cli_directory_prepare(const struct config *cfg)
{
    if (geteuid() != 0 || !cfg->data_dir)
        return 0;
    struct passwd *run = cfg->run_user ? getpwnam(cfg->run_user) : NULL;
    struct stat st;
    if (stat(cfg->data_dir, &st) < 0) {
        /* a data dir that does not exist yet is made for the user the server runs as */
        if (errno != ENOENT || !run || run->pw_uid == 0)
            return 0;
        if (util_mkdir_p(cfg->data_dir, 0750) < 0 ||
            chown(cfg->data_dir, run->pw_uid, run->pw_gid) < 0) {
            fprintf(stderr, "tern: %s: %s\n", cfg->data_dir, strerror(errno));
            return 1;
        }
    }
    if (cfg->directory_driver != DIRECTORY_SQLITE)
        return 0;
    /* tern.db belongs to the process that reads it: the auth process's user when the
     * server runs separated processes (the server sets that again at each start). As
     * root, SQLite gives the -wal and -shm files it creates the database's owner. */
    char path[4200];
    snprintf(path, sizeof path, "%s/tern.db", cfg->data_dir);
    struct passwd *owner = cfg->master_process && cfg->auth_user ? getpwnam(cfg->auth_user) : NULL;
    if (!owner || owner->pw_uid == 0)
        owner = run;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0; /* there already (or it cannot be: the open that follows says why) */
    if (owner && owner->pw_uid != 0 && fchown(fd, owner->pw_uid, owner->pw_gid) < 0)
        fprintf(stderr, "tern: warning: cannot give %s to %s: %s\n", path, owner->pw_name,
                strerror(errno));
    close(fd);
    return 0;
}
