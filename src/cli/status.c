/*
 * status.c - `tern status`: what the running server's master says about its processes
 * (like `postfix status` plus the counters of `doveadm who`/`stats`): each process with
 * its pid, generation, uptime, memory and, for workers, connections per protocol; the
 * queue size; the totals. The master answers on <data_dir>/run/master.sock (mode 0600:
 * the user that runs the server, root normally).
 *
 * Exit status: 0 running (the report printed), 1 not running or no answer.
 */
#include "cli/cli.h"
#include "core/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int cli_status(const struct cli_options *o, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "usage: tern status\n");
        return 2;
    }
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return 1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/run/master.sock", cfg->data_dir);
    int rc = 1;
    int fd = -1;
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) {
        fprintf(stderr, "tern: status: data_dir path too long for a socket\n");
        goto out;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 5};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "tern: status: the server is not running (%s: %s)\n", sa.sun_path,
                strerror(errno));
        goto out;
    }
    if (write(fd, "status\n", 7) != 7) {
        fprintf(stderr, "tern: status: %s\n", strerror(errno));
        goto out;
    }
    char buf[4096];
    ssize_t r;
    size_t total = 0;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
        fwrite(buf, 1, (size_t)r, stdout);
        total += (size_t)r;
    }
    if (total == 0) {
        fprintf(stderr, "tern: status: no answer from the master\n");
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    config_free(cfg);
    return rc;
}
