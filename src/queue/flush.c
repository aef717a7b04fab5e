/*
 * flush.c - `tern queue flush` and ETRN (RFC 1985): deferred mail becomes due now.
 *
 * A deferred message waits in deferred/ until its mtime (next retry time); flushing
 * renames it into active/, which the queue runner scans on every tick. Works from any
 * process (the CLI or the SMTP server) because it only renames files.
 */
/* Log and reply texts are deliberately cut to their fixed buffers. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "queue/queue-private.h"
#include "queue/queue.h"

#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FLUSH_MAX_FILES 1000000

static void flush_error(char **error_r, const char *what, const char *path)
{
    if (!error_r)
        return;
    char msg[4400];
    snprintf(msg, sizeof msg, "%s %s: %s", what, path, strerror(errno));
    free(*error_r);
    *error_r = strdup(msg);
}

/* Has the entry a recipient in domain (case-insensitive)? */
static bool entry_has_domain(const struct queue_entry *e, const char *domain)
{
    for (size_t i = 0; i < e->n_recipients; i++) {
        const char *at = strrchr(e->recipients[i], '@');
        if (at && strcasecmp(at + 1, domain) == 0)
            return true;
    }
    return false;
}

int queue_flush(const char *data_dir, const char *domain, char **error_r)
{
    char from_dir[4200], to_dir[4200];
    snprintf(from_dir, sizeof from_dir, "%s/queue/deferred", data_dir);
    snprintf(to_dir, sizeof to_dir, "%s/queue/active", data_dir);
    DIR *d = opendir(from_dir);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        flush_error(error_r, "opendir", from_dir);
        return -1;
    }
    int moved = 0, ret = 0;
    size_t seen = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && seen++ < FLUSH_MAX_FILES) {
        if (!queue_id_is_valid(de->d_name))
            continue;
        char from[4600], to[4600];
        snprintf(from, sizeof from, "%s/%.255s", from_dir, de->d_name);
        snprintf(to, sizeof to, "%s/%.255s", to_dir, de->d_name);
        if (domain) {
            struct queue_entry e;
            char *err = NULL;
            int r = queue_file_read(from, &e, NULL, NULL, &err);
            free(err);
            if (r != 0)
                continue;
            bool match = entry_has_domain(&e, domain);
            queue_entry_free(&e);
            if (!match)
                continue;
        }
        if (rename(from, to) < 0) {
            if (errno == ENOENT)
                continue; /* the runner took it meanwhile */
            flush_error(error_r, "rename", from);
            ret = -1;
            continue;
        }
        moved++;
    }
    closedir(d);
    if (moved > 0 && (util_fsync_dir(to_dir) < 0 || util_fsync_dir(from_dir) < 0)) {
        flush_error(error_r, "fsync", to_dir);
        return -1;
    }
    return ret < 0 ? -1 : moved;
}

int queue_flush_domain(const char *data_dir, const char *domain)
{
    return queue_flush(data_dir, domain, NULL);
}
