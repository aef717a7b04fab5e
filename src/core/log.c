/*
 * log.c - Postfix-style log lines to stderr, syslog or a file (see log.h).
 */
#include "core/log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_target log_target = LOG_TARGET_STDERR;
static int log_fd = 2;
static int log_debug_enabled;

int log_open(enum log_target target, const char *path)
{
    if (target == LOG_TARGET_FILE) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0)
            return -1;
        if (log_fd > 2)
            close(log_fd);
        log_fd = fd;
    } else if (target == LOG_TARGET_SYSLOG) {
        openlog("tern", LOG_NDELAY, LOG_MAIL);
    } else {
        log_fd = 2;
    }
    log_target = target;
    return 0;
}

void log_set_debug(int enabled)
{
    log_debug_enabled = enabled;
}

static void log_vwrite(int priority, const char *service, const char *prefix, const char *fmt,
                       va_list ap)
{
    char line[4096];
    size_t n = 0;
    if (log_target == LOG_TARGET_SYSLOG) {
        int m = snprintf(line, sizeof line, "%s%s", prefix, "");
        n = m > 0 ? (size_t)m : 0;
        vsnprintf(line + n, sizeof line - n, fmt, ap);
        /* syslog adds "tern"; the service goes into the ident-like prefix */
        syslog(priority, "%s: %s", service, line);
        return;
    }
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    n = strftime(line, sizeof line, "%b %e %H:%M:%S ", &tm);
    int m = snprintf(line + n, sizeof line - n, "tern/%s[%ld]: %s", service, (long)getpid(), prefix);
    if (m > 0)
        n += (size_t)m < sizeof line - n ? (size_t)m : sizeof line - n - 1;
    m = vsnprintf(line + n, sizeof line - n, fmt, ap);
    if (m > 0)
        n += (size_t)m < sizeof line - n ? (size_t)m : sizeof line - n - 1;
    /* Never let a peer's bytes break the one-line-per-event rule. */
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    if (n >= sizeof line - 1)
        n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(log_fd, line, n);
    (void)w;
}

#define LOG_FN(name, prio, prefix)                                                                 \
    void name(const char *service, const char *fmt, ...)                                           \
    {                                                                                              \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        log_vwrite(prio, service, prefix, fmt, ap);                                                \
        va_end(ap);                                                                                \
    }

LOG_FN(log_info, LOG_INFO, "")
LOG_FN(log_warning, LOG_WARNING, "warning: ")
LOG_FN(log_error, LOG_ERR, "error: ")

void log_debug(const char *service, const char *fmt, ...)
{
    if (!log_debug_enabled)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(LOG_DEBUG, service, "debug: ", fmt, ap);
    va_end(ap);
}

void log_fatal(const char *service, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(LOG_CRIT, service, "fatal: ", fmt, ap);
    va_end(ap);
    exit(1);
}

void log_panic(const char *service, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(LOG_CRIT, service, "panic: ", fmt, ap);
    va_end(ap);
    abort();
}
