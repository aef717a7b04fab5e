/*
 * log.h - Postfix-style mail log lines.
 *
 * Every line is "tern/<service>[pid]: <text>", e.g.
 *   tern/smtpd[812]: 5E4A5BA2D4: client=localhost[127.0.0.1]
 * In the foreground (log_open(LOG_TARGET_STDERR, ...)) lines go to stderr with a
 * syslog-like timestamp; as a daemon to syslog (facility mail); or appended to a file.
 *
 * Three kinds of failure (CONVENTIONS.md): log_panic() for broken invariants (aborts),
 * log_fatal() for a broken environment at start-up (exits 1), log_error()/log_warning()
 * for run-time trouble that is handled. Bad input from a peer is a protocol reply, and at
 * most a log_info() line.
 *
 * Thread rules: all functions may be called from any thread; one write(2) per line.
 */
#ifndef TERN_CORE_LOG_H
#define TERN_CORE_LOG_H

#include <stdarg.h>

enum log_target { LOG_TARGET_STDERR, LOG_TARGET_SYSLOG, LOG_TARGET_FILE };

/* path is used for LOG_TARGET_FILE only. Returns 0 or -1 (file could not be opened). */
int log_open(enum log_target target, const char *path);
/* Debug lines are dropped unless enabled. */
void log_set_debug(int enabled);

/* service: "smtpd", "local", "pop3", "imap", "master", "queue", "cli", ... */
void log_info(const char *service, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_warning(const char *service, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_error(const char *service, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_debug(const char *service, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_fatal(const char *service, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
void log_panic(const char *service, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

#endif
