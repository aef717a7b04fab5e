/*
 * conn_internal.h - what conn.c and server.c share inside the core; not for protocols.
 *
 * server.c owns the listeners, the limits and the shutdown; conn.c owns each
 * connection's bufferevent, TLS and callbacks, and the list of live connections.
 */
#ifndef TERN_CORE_CONN_INTERNAL_H
#define TERN_CORE_CONN_INTERNAL_H

#include "core/conn.h"

#include <stdbool.h>
#include <sys/socket.h>

struct server {
    struct server_context ctx;
    const struct server_hooks *hooks;
    struct conn *conns; /* every live connection (doubly linked, conn.c) */
    size_t n_conns;
    bool is_stopping;
};

/* Start a connection on an admitted socket; the TLS handshake first when implicit.
 * false (socket closed) when out of memory; the caller releases the admission. */
bool conn_accept(struct server *srv, enum conn_role role, const struct conn_protocol *proto, int fd,
                 const struct sockaddr *peer, socklen_t peer_len, bool is_implicit_tls);
/* Mail worker: serve fd (a handed-over socket, or a login process's relay end) with
 * proto->adopt, as the record h says. false (fd closed, nothing written) when the socket
 * does not match the record, out of memory, or refused: the login process answers. */
bool conn_adopt(struct server *srv, const struct conn_protocol *proto, int fd,
                const struct conn_handoff *h);
/* The mail worker's answer to BACKEND_MSG_HANDOFF: taken, refused (the login process
 * answers the client with a temporary failure), or the client's socket arrived
 * disconnected (the client left while its login was checked: nobody to answer). */
enum { CONN_HANDOFF_REFUSED = 0, CONN_HANDOFF_ADOPTED = 1, CONN_HANDOFF_CLIENT_GONE = 2 };
/* A handed-over TCP socket whose client has already gone (reset or closed: the kernel
 * no longer names a peer). A relay end (AF_UNIX) is never gone this way. */
bool conn_socket_is_gone(int fd);
/* Shutdown: ask every connection to close (flush, then close()). */
/* Give up to max connections that are not closing yet their farewell and close them:
 * 0 when none is left, else non-zero. */
size_t conn_close_some(struct server *srv, size_t max);
/* Shutdown deadline passed: finish every connection at once, then conn_run_finalizers.
 * Not from a callback of srv's loop (it runs that loop). */
void conn_free_all(struct server *srv, const char *reason);
/* Run base's queued callbacks until none is left (bounded): a bufferevent freed while one
 * of its deferred callbacks was queued is finalized only after that callback ran, and
 * event_base_free (libevent 2.1) cancels queued callbacks without running them, which
 * leaked the bufferevent with its SSL and buffers (seen: a POP3 session after STLS, relayed,
 * whose last bytes came just before SIGTERM). Before event_base_free; not from a callback. */
void conn_run_finalizers(struct event_base *base);
/* conn.c tells server.c a connection from ip is gone (per-IP counts, anvil.h). */
void server_conn_released(struct server *srv, const char *ip, enum conn_role role);
/* An adopted session arrived (is_counted: a plain connection, counted like an accepted
 * one), and an uncounted (relayed) one is gone. */
void server_conn_adopted(struct server *srv, const char *ip, enum conn_role role, bool is_counted);
void server_session_released(struct server *srv);

#endif
