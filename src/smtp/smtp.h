/*
 * smtp.h - the SMTP server session (RFC 5321, with ESMTP extensions) for the roles
 * CONN_ROLE_SMTP (25), CONN_ROLE_SUBMISSION (587) and CONN_ROLE_SUBMISSIONS (465).
 *
 * The session is a state machine over lines from conn_input(); command parsing lives in
 * smtp/parse.c (pure functions, fuzzed), DATA/BDAT reading in smtp/data.c, delivery
 * (store_deliver / queue_enqueue) runs in the workpool so the loop never waits on fsync.
 */
#ifndef TERN_SMTP_SMTP_H
#define TERN_SMTP_SMTP_H

#include "core/conn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern const struct conn_protocol smtp_protocol;

struct config;
/* Mail authentication on port 25 (issue 12, smtp/mailauth_hook.c): create the resolver
 * the checks use (none when mailauth.verify is off) / free it. Loop thread, at start-up
 * and after every connection has closed. 0, or -1 with *error_r (malloc'd). */
int smtp_mailauth_start(const struct config *cfg, char **error_r);
void smtp_mailauth_stop(void);
/* Port-25 screening (issue 13, smtp/screen.c): the resolver of the DNS list and sender
 * domain checks, attached to base (none when no check needs DNS) / freed. Same rules. */
struct event_base;
int smtp_screen_start(const struct config *cfg, struct event_base *base, char **error_r);
/* The same resolver made ahead, before the process enters its chroot (a login process:
 * libunbound reads resolv.conf, hosts and the trust anchor when it is made);
 * smtp_screen_start then only attaches it. */
int smtp_screen_prepare(const struct config *cfg, char **error_r);
void smtp_screen_stop(void);

struct server_context;
/* A mail worker (privilege separation): deliver the messages, answer the usage and ETRN
 * questions of the login processes' SMTP and LMTP sessions (smtp/remote.h), with ctx's
 * directory, pool and configuration. Loop thread, once, from init. */
void smtp_remote_serve(const struct server_context *ctx);

/* BURL's reader of IMAP URLs (imap_url_fetch, imap/url.h), wired in by `tern serve` so
 * the smtp module does not link the imap one; NULL (the default): BURL is not offered.
 * Set before the loop runs. smtp_burl_fetch() calls it (any thread). */
struct imap_url_reader;
struct buf;
typedef int smtp_burl_fetch_fn(const struct imap_url_reader *r, const char *url, size_t url_len,
                               uint64_t max, struct buf *out, char **error_r);
void smtp_burl_set_fetch(smtp_burl_fetch_fn *fn);
bool smtp_burl_has_fetch(void);
int smtp_burl_fetch(const struct imap_url_reader *r, const char *url, size_t url_len,
                    uint64_t max, struct buf *out, char **error_r);

#endif
