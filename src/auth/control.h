/*
 * control.h - the server's control socket, <data_dir>/control.sock, through which
 * `tern auth blocks` reads and lifts the login blocks the running server holds in memory.
 *
 * One request line per connection, one answer, then the server closes:
 *   "blocks-list"                       -> "block <ip> <account|-> <failures> <seconds>" lines
 *                                          then "end <n>"
 *   "blocks-clear <ip|*> [<account|->]" -> "cleared <n>"  (no account: the address and all
 *                                          its pairs; "-": the address block only)
 *   anything else                       -> "error <reason>"
 * The socket is created mode 0600 (owned by run_user): only root and run_user may ask.
 * Requests are capped at CONTROL_MAX_LINE octets.
 *
 * The blocks belong to the directory's failed-login table (auth.h auth_penalty_*): the
 * socket is served by the process that holds it, the auth process (or the only process
 * with master_process = no). It is bound under a temporary name and renamed into place,
 * and removed at the end only while it is still this process's (a reload starts the new
 * auth process before the old one stops).
 *
 * Ownership: auth_control_start() returns a handle freed by auth_control_stop(),
 * which also removes the socket file. Thread rules: the server side runs on the event
 * loop; auth_control_request() is a blocking client for the CLI.
 */
#ifndef TERN_AUTH_CONTROL_H
#define TERN_AUTH_CONTROL_H

#include <stdio.h>

struct auth_service;
struct event_base;
struct auth_control;

#define CONTROL_MAX_LINE 1024
#define CONTROL_SOCKET   "control.sock"

/* Listen on <data_dir>/control.sock (replacing a stale one), answering from svc's
 * failed-login blocks (auth_penalty_*). NULL with *error_r. */
struct auth_control *auth_control_start(struct event_base *base, const char *data_dir,
                                        struct auth_service *svc, char **error_r);
void auth_control_stop(struct auth_control *pc);

/* CLI side: send request to the server of data_dir, copy the answer to out. 0, or -1
 * with *error_r (e.g. the server is not running). Waits at most 10 s. */
int auth_control_request(const char *data_dir, const char *request, FILE *out,
                           char **error_r);

#endif
