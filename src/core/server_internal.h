/*
 * server_internal.h - what server.c (listeners, the loop of one process) and master.c
 * (the root master that forks and supervises the processes) share; not for protocols.
 *
 * The master prepares everything that needs root (data folder, certificate, listening
 * sockets) into one struct server_state, then forks: each child gets a copy of it (the
 * listening descriptors included), drops privileges and runs server_serve().
 */
#ifndef TERN_CORE_SERVER_INTERNAL_H
#define TERN_CORE_SERVER_INTERNAL_H

#include "core/conn_internal.h"

#include <netinet/in.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>

#define SERVER_MAX_LISTENERS 128

struct server_state;

struct listener {
    struct server_state *st;
    enum conn_role role;
    int fd;
    char name[INET6_ADDRSTRLEN + 128]; /* "127.0.0.1:25", "unix:/var/lib/tern/lmtp" */
    struct evconnlistener *evl;
    struct event *resume; /* re-enables accepting after an accept error */
    bool is_reused;       /* a reload took this socket over from the old set */
};

struct server_state {
    struct server srv; /* first: conn.c sees a struct server * */
    const struct config *cfg;
    struct listener listeners[SERVER_MAX_LISTENERS];
    size_t n_listeners;
    struct event *sig_term, *sig_int, *sig_hup, *shutdown_timer, *drain_timer;
    struct channel_reader *master_reader; /* messages from the master (children) */
    uint64_t deadline_ms; /* when a SIGTERM must be done (0: not stopping) */
    bool is_draining;     /* reload: no more accepting; exit when the sessions are gone */
    bool is_accept_paused; /* balancing: the others take the next connections */
    struct event *balance_timer;
    struct event *heap_timer; /* publishes the live heap for `tern status` */
    struct listener *reuse; /* reload: sockets to take over instead of binding again */
    size_t n_reuse;
    struct passwd pw;     /* run_user (when started as root) */
    char pw_name[64];
    struct passwd pw_login, pw_auth; /* login_user and auth_user (root, master mode) */
    char pw_login_name[64], pw_auth_name[64];
    bool is_root;
};

/* server.c: bind every listener of cfg into st (as root, before forking). */
int server_bind_all(struct server_state *st, const struct config *cfg);
/* server.c: close every listening descriptor of st (the master's copies, or unused). */
void server_close_listeners(struct server_state *st);
/* server.c: the text "smtp=0.0.0.0:25 ..." of the readiness line. */
void server_listeners_text(const struct server_state *st, char *out, size_t size);
/* server.c: drop root for run_user (setgroups/setgid/setuid, checked). 0 or -1. */
int server_drop_privileges(const struct passwd *pw);
/* server.c: in a child of kind (SERVER_PROC_*) right after fork: hooks->prepare, then
 * (when root) the kind's user: auth_user for the auth process, login_user inside
 * login_chroot for a login process, run_user for the others. 0 or -1 (logged). */
int server_child_privileges(struct server_state *st, unsigned kind);
/* server.c: run one process's loop: hooks->init for processes (SERVER_PROC_*), the
 * listeners when it accepts, until SIGTERM (or the end of a drain); returns the exit code.
 * channel: to the master, -1 in the single-process mode. */
int server_serve(struct server_state *st, unsigned processes, int channel, int auth_channel,
                 unsigned slot, unsigned generation);

/* master.c: supervise the processes until SIGTERM; returns the exit code. */
int master_run(struct server_state *st);

#endif
