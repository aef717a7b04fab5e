/*
 * conn.c - one client connection on the event loop: its bufferevent (plain, implicit TLS
 * or upgraded by STARTTLS), timeouts, backpressure and the protocol callbacks (conn.h).
 *
 * Re-entrancy rule: a protocol callback (open, on_read, on_drained, on_tls, on_timeout,
 * close) is only ever called from the loop itself (a bufferevent callback or the
 * connection's "kick" event), never from inside a conn_* call a session makes. So a
 * session that calls conn_close() or conn_write() from anywhere (even from a workpool
 * done callback) never finds its own close() running underneath it. For that every
 * bufferevent uses BEV_OPT_DEFER_CALLBACKS, and conn_close()/conn_resume_read() only
 * schedule the kick event.
 *
 * Handing a session over (login process -> mail worker, conn.h): conn_handoff() pauses
 * the connection, takes the input the session has not read into the record, and sends
 * the record with the socket to a mail worker from a pool thread (core/backend.h). A
 * plain connection is then forgotten here without a byte written or a shutdown: the mail
 * worker's copy of the socket carries on. A TLS connection cannot move (OpenSSL's state
 * stays in this process): the worker gets one end of a socketpair instead, and this
 * connection becomes a relay of the plaintext between the client's TLS and the other end
 * (conn_relay_*): no session, and an end on either side ends the other after its last
 * bytes are through. The relay has no buffers of its own (issue 10: every idle TLS
 * session keeps one, so each byte of it counts): the socketpair is one plain event, the
 * worker's bytes are read straight into the TLS output buffer (while that holds at most
 * CONN_RELAY_HIGH), and the client's decrypted bytes wait in the TLS input buffer until
 * the socketpair takes them (its high-water mark, CONN_INPUT_HIGH_WATER, stops reading
 * the client meanwhile). conn_adopt() is the mail worker's side: a struct conn made from
 * the record, its input preloaded.
 */
#include "core/backend.h"
#include "core/channel.h"
#include "core/config.h"
#include "core/conn_internal.h"
#include "core/job.h"
#include "core/log.h"
#include "core/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "core/deflate.h"
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* Relay (conn_handoff over TLS): the worker's end is not read while the client's TLS
 * output holds more than this; reading resumes below CONN_OUTPUT_LOW_WATER. */
#define CONN_RELAY_HIGH (128 * 1024)
/* At most this much is read from the worker's end per wake-up (then the loop turns). */
#define CONN_RELAY_READ_MAX (64 * 1024)
/* How long a mail worker may take to adopt a handed-over session. */
#define CONN_HANDOFF_TIMEOUT_S 10

/* Every conn_* call a session makes must come from the loop thread: a workpool thread
 * that reaches a connection is the use-after-free of issue 9 (job.h, the thread rule). */
#define CONN_ON_LOOP() job_assert_loop_thread(__func__)

/* How long a closing connection may take to flush its last reply. */
#define CONN_CLOSE_FLUSH_SECONDS 30
/* How long a TLS handshake may take when tls.handshake_timeout is 0. */
#define CONN_HANDSHAKE_SECONDS 60
/* Lingering close: how long, and how much of the peer's input, to read and drop after
 * our last reply before closing for good; and how many sockets may linger at once. */
#define CONN_LINGER_SECONDS 2
#define CONN_LINGER_BYTES   (1024 * 1024)
#define CONN_LINGER_MAX     1024

struct conn {
    struct server *srv;
    enum conn_role role;
    const struct conn_protocol *proto;
    void *session; /* NULL until open() returned one */
    struct bufferevent *bev;
    struct event *kick;                 /* deferred work: re-dispatch input, finish a close */
    struct event *deadline;             /* conn_set_deadline(); NULL until first armed */
    struct evbuffer_cb_entry *under_cb; /* on the socket's output under a STARTTLS or
                                           COMPRESS filter */
    struct evbuffer *under_buf;         /* that output buffer */
    bool is_compressed;                 /* RFC 4978 COMPRESS=DEFLATE is on */
    struct conn *next, *prev;
    int fd; /* the socket (owned by bev), for socket options */

    /* the peer's address (AF_INET or AF_INET6; of a unix peer only the family): not a
     * sockaddr_storage, whose 128 bytes every idle session would carry (issue 10) */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    char peer_ip[INET6_ADDRSTRLEN];
    char local_ip[INET6_ADDRSTRLEN];
    uint16_t peer_port, local_port;
    bool is_loopback;
    bool is_local; /* accepted on a unix socket */

    /* privilege separation (conn_handoff, conn_adopt) */
    uint64_t handle;         /* job.h handle while a handoff job runs, 0 none */
    bool is_handing_off;     /* a handoff is in flight: nothing is read or written */
    bool is_handed_off;      /* login side, plain: the mail worker has the socket */
    bool is_adopted;         /* worker side: a session a login process handed over */
    bool is_relay_end;       /* worker side: the socket is a login process's relay end */
    bool is_anvil_counted;   /* counted in anvil.h (not a relayed session in a worker) */
    bool is_relay;           /* login side, TLS: relaying for a mail worker (no session) */
    bool is_relay_out_paused; /* the worker's end is not read: the client is behind */
    bool has_relay_ended;    /* the worker's end closed (or failed): nothing more to relay */
    bool has_handoff_failed; /* on_handoff_failed is due (from the kick) */
    short relay_watch;          /* what relay_ev waits for now (EV_READ, EV_WRITE), 0 none */
    int relay_fd;               /* our end of the socketpair, -1 none */
    struct event *relay_ev;     /* relay_fd on the loop while relaying */

    unsigned timeout; /* seconds, 0 none */
    bool is_tls;
    bool is_handshaking; /* implicit TLS or STARTTLS handshake in progress */
    bool is_paused;
    bool is_opened;   /* open() has been called */
    bool has_eof;     /* the peer closed its side; finish after the pending work */
    bool is_closing;  /* conn_close(): flush then finish */
    bool is_finished; /* close() called; the struct is about to go */
    bool wants_linger; /* our orderly close: drain the peer's input first (conn_linger) */
    const char *close_reason;
    char *tls_desc; /* "TLSv1.3 with cipher ..." once TLS is up, NULL before (malloc'd:
                       the exact length, not a fixed array in every session) */
};

static void conn_relay_client_read(struct conn *c);
static void conn_relay_client_drained(struct conn *c);
static void conn_relay_client_eof(struct conn *c);

static void conn_on_read(struct bufferevent *bev, void *arg);
static void conn_on_write(struct bufferevent *bev, void *arg);
static void conn_on_event(struct bufferevent *bev, short what, void *arg);
static void conn_open_session(struct conn *c);

/* ---- small accessors ------------------------------------------------------------------ */

const struct server_context *conn_server(const struct conn *c)
{
    CONN_ON_LOOP();
    return &c->srv->ctx;
}

enum conn_role conn_role(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->role;
}

struct evbuffer *conn_input(struct conn *c)
{
    CONN_ON_LOOP();
    return bufferevent_get_input(c->bev);
}

size_t conn_output_length(struct conn *c)
{
    CONN_ON_LOOP();
    /* every layer: COMPRESS over TLS over the socket */
    size_t n = 0;
    for (struct bufferevent *b = c->bev; b; b = bufferevent_get_underlying(b))
        n += evbuffer_get_length(bufferevent_get_output(b));
    return n;
}

void conn_write(struct conn *c, const void *data, size_t len)
{
    CONN_ON_LOOP();
    if (c->is_finished || len == 0)
        return;
    if (bufferevent_write(c->bev, data, len) < 0)
        log_warning(c->proto->log_name, "write to %s failed: out of memory", c->peer_ip);
}

void conn_write_str(struct conn *c, const char *s)
{
    conn_write(c, s, strlen(s));
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
    CONN_ON_LOOP();
    if (c->is_finished)
        return;
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
    va_end(ap);
}

void conn_ack_now(struct conn *c)
{
    CONN_ON_LOOP();
#ifdef TCP_QUICKACK
    /* Linux: acknowledge what has arrived now instead of after the delayed-ACK timer
     * (up to 40 ms). A client with Nagle on (most; Python's imaplib sends an APPEND
     * literal and its closing CRLF as two writes) holds its last small segment until the
     * previous one is acknowledged, and we answer nothing before that segment arrives:
     * without this every APPEND waited ~40 ms (issue 4). Not sticky: set per call. */
    int one = 1;
    if (!c->is_finished)
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
#else
    (void)c;
#endif
}

bool conn_is_stopping(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->srv->is_stopping;
}

bool conn_is_tls(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->is_tls;
}

const char *conn_tls_description(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->is_tls && c->tls_desc ? c->tls_desc : "";
}

/* STARTTLS can be offered: a TLS context exists and this connection is still plain. */
bool conn_tls_available(const struct conn *c)
{
    CONN_ON_LOOP();
    return tls_context_get() != NULL && !c->is_tls && !c->is_handshaking;
}

const char *conn_peer_ip(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->peer_ip;
}

const char *conn_local_ip(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->local_ip;
}

uint16_t conn_local_port(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->local_port;
}

uint16_t conn_peer_port(const struct conn *c)
{
    CONN_ON_LOOP();
    if (c->peer.sa.sa_family == AF_INET)
        return ntohs(c->peer.in.sin_port);
    if (c->peer.sa.sa_family == AF_INET6)
        return ntohs(c->peer.in6.sin6_port);
    return 0;
}

bool conn_peer_is_loopback(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->is_loopback;
}

bool conn_peer_is_local(const struct conn *c)
{
    return c->is_local;
}

const char *conn_peer_name(const struct conn *c)
{
    CONN_ON_LOOP();
    return c->is_loopback ? "localhost" : "unknown";
}

/* ---- networks ------------------------------------------------------------------------- */

/* Does addr (family-sized bytes) fall inside "net[/bits]"? */
static bool conn_net_contains(const char *net, int family, const unsigned char *addr)
{
    char host[INET6_ADDRSTRLEN + 3];
    const char *slash = strchr(net, '/');
    size_t n = slash ? (size_t)(slash - net) : strlen(net);
    if (n == 0 || n >= sizeof host)
        return false;
    memcpy(host, net, n);
    host[n] = '\0';
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    unsigned char want[16];
    size_t alen = family == AF_INET ? 4 : 16;
    if (inet_pton(family, host, want) != 1)
        return false;
    unsigned bits = (unsigned)alen * 8;
    if (slash) {
        char *end;
        unsigned long b = strtoul(slash + 1, &end, 10);
        if (*end || b > bits)
            return false;
        bits = (unsigned)b;
    }
    size_t full = bits / 8;
    if (memcmp(want, addr, full) != 0)
        return false;
    if (bits % 8) {
        unsigned char mask = (unsigned char)(0xFF << (8 - bits % 8));
        if ((want[full] & mask) != (addr[full] & mask))
            return false;
    }
    return true;
}

bool conn_peer_in_networks(const struct conn *c, const struct config_list *nets)
{
    CONN_ON_LOOP();
    int family;
    unsigned char addr[16];
    if (c->peer.sa.sa_family == AF_INET) {
        family = AF_INET;
        memcpy(addr, &c->peer.in.sin_addr, 4);
    } else if (c->peer.sa.sa_family == AF_INET6) {
        const struct in6_addr *a6 = &c->peer.in6.sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            family = AF_INET; /* ::ffff:a.b.c.d matches IPv4 networks */
            memcpy(addr, &a6->s6_addr[12], 4);
        } else {
            family = AF_INET6;
            memcpy(addr, a6, 16);
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < nets->n; i++)
        if (conn_net_contains(nets->items[i], family, addr))
            return true;
    return false;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static void conn_kick(struct conn *c)
{
    event_active(c->kick, EV_TIMEOUT, 1);
}

/* ---- lingering close ----------------------------------------------------------------
 * Closing a socket whose receive queue still holds data makes the kernel send a RST at
 * once, and a RST can destroy our last reply in the peer's queue before it reads it: a
 * client that pipelined 100,000 RCPTs would never see "421 too many errors". So after an
 * orderly close of ours (the reply flushed) the socket is shut for writing and the input
 * read and dropped until the peer closes, CONN_LINGER_BYTES have come, or
 * CONN_LINGER_SECONDS have passed (Apache's lingering close). */

struct conn_linger {
    int fd;
    size_t drained;
    struct event *ev;
    struct conn_linger *next, *prev;
};

static struct conn_linger *conn_lingering;
static unsigned conn_n_lingering;

static void conn_linger_end(struct conn_linger *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        conn_lingering = l->next;
    if (l->next)
        l->next->prev = l->prev;
    event_free(l->ev);
    close(l->fd);
    free(l);
    conn_n_lingering--;
}

static void conn_linger_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn_linger *l = arg;
    if (what & EV_READ) {
        char buf[16384];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0 && (l->drained += (size_t)n) < CONN_LINGER_BYTES)
            return;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
    }
    conn_linger_end(l); /* EOF, error, enough, or the time is up */
}

/* Take over fd (a duplicate of the connection's socket) for the lingering close. */
static void conn_linger(struct event_base *base, int fd)
{
    struct conn_linger *l = conn_n_lingering < CONN_LINGER_MAX ? calloc(1, sizeof *l) : NULL;
    if (!l || shutdown(fd, SHUT_WR) < 0) {
        free(l);
        close(fd);
        return;
    }
    l->fd = fd;
    l->ev = event_new(base, fd, EV_READ | EV_PERSIST, conn_linger_cb, l);
    struct timeval tv = {.tv_sec = CONN_LINGER_SECONDS};
    if (!l->ev || event_add(l->ev, &tv) < 0) {
        if (l->ev)
            event_free(l->ev);
        free(l);
        close(fd);
        return;
    }
    l->next = conn_lingering;
    if (conn_lingering)
        conn_lingering->prev = l;
    conn_lingering = l;
    conn_n_lingering++;
}

/* The end: tell the protocol once, unlink, free. Only called from loop-level code. */
static void conn_finish(struct conn *c, const char *reason)
{
    if (c->is_finished)
        return;
    c->is_finished = true;
    if (c->session && c->proto->close)
        c->proto->close(c->session, reason);
    c->session = NULL;
    struct server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->n_conns--;
    if (c->is_anvil_counted)
        server_conn_released(srv, c->peer_ip, c->role);
    if (c->is_adopted)
        server_session_released(srv);
    if (c->handle)
        job_session_remove(c->handle); /* a handoff job still queued is cancelled */
    if (c->relay_ev)
        event_free(c->relay_ev);
    if (c->relay_fd >= 0)
        close(c->relay_fd); /* the mail worker reads the end of its input */
    if (c->under_cb)
        evbuffer_remove_cb_entry(c->under_buf, c->under_cb);
    SSL *ssl = c->is_tls && !c->is_adopted ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    if (ssl && !bufferevent_get_underlying(c->bev) && c->close_reason)
        SSL_shutdown(ssl);    /* a best-effort close_notify on an orderly close */
    /* our orderly close, the peer still sending (its input unread): linger. Never for a
     * socket handed to a mail worker (it lives on there) or a relay's far end. */
    int linger_fd = -1;
    if (c->wants_linger && !c->has_eof && !srv->is_stopping && !c->is_handed_off &&
        !c->is_relay_end)
        linger_fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    bufferevent_free(c->bev); /* closes (our copy of) the socket and frees the SSL */
    if (linger_fd >= 0)
        conn_linger(srv->ctx.base, linger_fd);
    event_free(c->kick);
    if (c->deadline)
        event_free(c->deadline);
    free(c->tls_desc);
    free(c);
}

/* After STARTTLS the encrypted bytes sit in the socket bufferevent under the TLS filter,
 * whose callbacks belong to the filter: watch its output buffer directly so a closing
 * connection learns when the last record has left. Runs inside libevent's write path,
 * so it only schedules the kick. */
static void conn_on_under_output(struct evbuffer *buf, const struct evbuffer_cb_info *info,
                                 void *arg)
{
    struct conn *c = arg;
    if (c->is_closing && info->n_deleted > 0 && evbuffer_get_length(buf) == 0)
        conn_kick(c);
}

/* Finish a closing connection whose output has drained. */
static void conn_finish_if_flushed(struct conn *c)
{
    if (c->is_closing && conn_output_length(c) == 0) {
        c->wants_linger = true;
        conn_finish(c, c->close_reason ? c->close_reason : "disconnect");
    }
}

static void conn_apply_timeouts(struct conn *c)
{
    struct timeval tv = {.tv_sec = c->timeout};
    if (c->is_closing) {
        struct timeval flush = {.tv_sec = CONN_CLOSE_FLUSH_SECONDS};
        bufferevent_set_timeouts(c->bev, NULL, &flush);
    } else if (c->timeout) {
        /* the write timeout drops a peer that stops reading our replies */
        bufferevent_set_timeouts(c->bev, &tv, &tv);
    } else {
        bufferevent_set_timeouts(c->bev, NULL, NULL);
    }
}

void conn_set_timeout(struct conn *c, unsigned seconds)
{
    CONN_ON_LOOP();
    c->timeout = seconds;
    if (!c->is_finished)
        conn_apply_timeouts(c);
}

static void conn_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->is_closing || c->is_finished)
        return;
    if (!c->session) {
        /* still in the implicit-TLS handshake: nobody to say goodbye */
        log_info(c->proto->log_name, "TLS handshake timeout from %s[%s]", conn_peer_name(c),
                 c->peer_ip);
        conn_finish(c, "timeout");
        return;
    }
    if (c->proto->on_timeout)
        c->proto->on_timeout(c->session, c);
    c->close_reason = "timeout";
    conn_close(c);
}

void conn_set_deadline(struct conn *c, unsigned seconds)
{
    CONN_ON_LOOP();
    if (c->is_finished)
        return;
    if (seconds == 0) {
        if (c->deadline)
            event_del(c->deadline);
        return;
    }
    if (!c->deadline)
        c->deadline = evtimer_new(c->srv->ctx.base, conn_on_deadline, c);
    if (!c->deadline)
        return; /* out of memory: the idle timeout still applies */
    struct timeval tv = {.tv_sec = seconds};
    evtimer_add(c->deadline, &tv);
}

void conn_close(struct conn *c)
{
    CONN_ON_LOOP();
    if (c->is_closing || c->is_finished)
        return;
    c->is_closing = true;
    if (!c->close_reason)
        c->close_reason = "disconnect";
    bufferevent_disable(c->bev, EV_READ);
    /* The write callback now fires only once everything has been written. */
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    conn_apply_timeouts(c);
    conn_kick(c);
}

void conn_pause_read(struct conn *c)
{
    CONN_ON_LOOP();
    if (c->is_paused || c->is_finished)
        return;
    c->is_paused = true;
    bufferevent_disable(c->bev, EV_READ);
}

void conn_resume_read(struct conn *c)
{
    CONN_ON_LOOP();
    if (!c->is_paused || c->is_finished)
        return;
    c->is_paused = false;
    if (c->is_closing || c->is_handing_off)
        return; /* (a handoff that fails enables reading again itself) */
    if (!c->has_eof)
        bufferevent_enable(c->bev, EV_READ);
    if (c->has_eof || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        conn_kick(c);
}

/* Hand input to the protocol while it is willing to take it. */
static void conn_dispatch_read(struct conn *c)
{
    if (c->is_paused || c->is_closing || c->is_finished || c->is_handshaking || !c->session ||
        c->is_handing_off)
        return;
    if (c->srv->is_stopping)
        return; /* shutting down: no new command (server_shutdown closes us soon) */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        c->proto->on_read(c->session, c);
    /* The peer half-closed after its last command: once that command is answered
     * (nothing paused any more), flush the replies and close. */
    if (c->has_eof && !c->is_paused && !c->is_closing && !c->is_finished) {
        c->close_reason = "lost connection";
        conn_close(c);
    }
}

static void conn_handoff_fail(struct conn *c);

static void conn_on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->has_handoff_failed) {
        c->has_handoff_failed = false;
        conn_handoff_fail(c);
        conn_finish_if_flushed(c);
        return;
    }
    if (!c->session && !c->is_handshaking && !c->is_closing && !c->is_opened) {
        c->is_opened = true;
        conn_open_session(c);
        conn_finish_if_flushed(c);
        return;
    }
    if (c->is_closing) {
        conn_finish_if_flushed(c);
        return;
    }
    conn_dispatch_read(c);
    conn_finish_if_flushed(c);
}

/* ---- bufferevent callbacks ------------------------------------------------------------ */

/* libevent's TLS bufferevent stops writing when its read side sees the peer's end of
 * input, and re-arms the socket's write event only when an empty output buffer gains
 * data: a reply already queued at that moment (a FETCH answer above the high-water mark,
 * a farewell) would wait forever, with no write timeout either, and the session with its
 * locks (a POP3 maildrop) would never end. Re-enabling EV_WRITE restarts the writing:
 * the bytes reach a half-closed peer, or the write fails on a vanished one and the error
 * event finishes the connection. */
static void conn_restart_tls_write(struct conn *c)
{
    if (!c->is_tls || c->is_finished || conn_output_length(c) == 0)
        return;
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_enable(c->bev, EV_WRITE);
}

static void conn_on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->is_relay) {
        conn_relay_client_read(c);
        return;
    }
    conn_dispatch_read(c);
    conn_finish_if_flushed(c);
}

static void conn_on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->is_closing) {
        conn_finish_if_flushed(c);
        return;
    }
    if (c->is_relay) {
        conn_relay_client_drained(c);
        return;
    }
    if (c->session && c->proto->on_drained && !c->is_handshaking)
        c->proto->on_drained(c->session, c);
    conn_finish_if_flushed(c);
}

static void conn_describe_tls(struct conn *c)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (!ssl)
        return;
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    int alg_bits = 0;
    int bits = cipher ? SSL_CIPHER_get_bits(cipher, &alg_bits) : 0;
    char desc[sizeof ((struct conn_handoff *)0)->tls_desc];
    snprintf(desc, sizeof desc, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl),
             cipher ? SSL_CIPHER_get_name(cipher) : "unknown", bits, alg_bits);
    free(c->tls_desc);
    c->tls_desc = strdup(desc); /* NULL (out of memory): described as "" */
}

/* The implicit-TLS handshake finished (or the plain connection is ready): open. */
static void conn_open_session(struct conn *c)
{
    c->session = c->proto->open(c);
    if (!c->session) {
        c->close_reason = "refused";
        conn_close(c);
        return;
    }
    conn_dispatch_read(c);
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        /* a TLS handshake finished */
        bool was_plain_upgrade = c->session != NULL;
        c->is_handshaking = false;
        c->is_tls = true;
        conn_describe_tls(c);
        conn_apply_timeouts(c);
        if (!was_plain_upgrade) {
            c->is_opened = true;
            conn_open_session(c);
        } else {
            if (c->proto->on_tls)
                c->proto->on_tls(c->session, c);
            conn_dispatch_read(c);
        }
        /* Deferred callbacks accumulate: a peer that closes right after its handshake
         * (TLS scanners, `openssl s_time -new`, monitoring probes) arrives here as
         * CONNECTED|EOF or CONNECTED|ERROR in one call. libevent has already stopped
         * reading, so no later event would ever report that end: handle it now, or the
         * connection (its socket, its admission counts) stays forever. */
        if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) {
            conn_finish_if_flushed(c);
            return;
        }
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (c->is_closing) {
            /* Only the flush (write) timeout ends a closing connection: a read timeout
             * that fired in the same loop turn as conn_close() (an IDLE limit reached at
             * the very second of the idle timeout) must not cut off the farewell. */
            if (what & BEV_EVENT_WRITING)
                conn_finish(c, "timeout while flushing");
            return;
        }
        if (c->is_handshaking) {
            log_info(c->proto->log_name, "TLS handshake timeout from %s[%s]", conn_peer_name(c),
                     c->peer_ip);
            conn_finish(c, "timeout");
            return;
        }
        if ((what & BEV_EVENT_READING) && conn_output_length(c) > 0) {
            /* Not idle: we are still sending (a long RETR or FETCH to a slow reader).
             * The write timeout catches a peer that stopped reading altogether. */
            bufferevent_enable(c->bev, EV_READ);
            return;
        }
        if (what & BEV_EVENT_WRITING)
            /* libevent disabled writing when the write timer fired. Re-arm it: what is
             * queued still goes to a peer that resumes reading, and the flush timeout of
             * conn_close() finishes one that never does. Left disabled, the closing
             * connection waited forever (no write, so no timer either) with its session,
             * its descriptor and a POP3 maildrop lock. */
            bufferevent_enable(c->bev, EV_WRITE);
        if (c->session && c->proto->on_timeout)
            c->proto->on_timeout(c->session, c);
        c->close_reason = "timeout";
        conn_close(c);
        return;
    }
    if (c->is_relay && (what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING) &&
        !(what & BEV_EVENT_ERROR) && !c->is_closing) {
        conn_relay_client_eof(c);
        return;
    }
    /* Only an end of input is a half-close: with dirty shutdowns allowed, libevent's TLS
     * bufferevent reports a failed write (EPIPE from a vanished peer) as EOF|WRITING, and
     * treating that as "the peer finished sending" waited forever for a flush. */
    if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING) && !(what & BEV_EVENT_ERROR) &&
        !c->is_handshaking && c->session && !c->is_closing &&
        (c->is_paused || conn_output_length(c) > 0 ||
         evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)) {
        /* e.g. "QUIT" then FIN, or a message whose fsync is still running: answer what
         * was sent before the end of input, then close. */
        c->has_eof = true;
        bufferevent_disable(c->bev, EV_READ);
        conn_restart_tls_write(c);
        conn_dispatch_read(c);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (c->is_handshaking) {
            unsigned long e = bufferevent_get_openssl_error(bev);
            char ebuf[256] = "connection closed";
            if (e)
                ERR_error_string_n(e, ebuf, sizeof ebuf);
            log_info(c->proto->log_name, "SSL_accept error from %s[%s]: %s", conn_peer_name(c),
                     c->peer_ip, ebuf);
        }
        conn_finish(c, (what & BEV_EVENT_EOF) ? "lost connection" : "connection error");
    }
}

/* ---- creation ------------------------------------------------------------------------- */

static void conn_set_callbacks(struct conn *c)
{
    bufferevent_setcb(c->bev, conn_on_read, conn_on_write, conn_on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_INPUT_HIGH_WATER);
    bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUTPUT_LOW_WATER, 0);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static unsigned conn_role_timeout(const struct config *cfg, enum conn_role role)
{
    switch (role) {
    case CONN_ROLE_SMTP:
    case CONN_ROLE_SUBMISSION:
    case CONN_ROLE_SUBMISSIONS:
    case CONN_ROLE_LMTP:
        return cfg->smtp_timeout;
    case CONN_ROLE_POP3:
    case CONN_ROLE_POP3S:
        return cfg->pop3_timeout;
    case CONN_ROLE_IMAP:
    case CONN_ROLE_IMAPS:
        return cfg->imap_timeout;
    case CONN_ROLE_MTA_STS:
        return 10; /* HTTP_READ_TIMEOUT (http/http.h): one small request, then we close */
    }
    return 300;
}

/* The pre-login deadline of a role (0: none; SMTP has its idle timeout only, like
 * Postfix's smtpd_timeout, since port 25 clients never log in). */
static unsigned conn_role_login_timeout(const struct config *cfg, enum conn_role role)
{
    switch (role) {
    case CONN_ROLE_POP3:
    case CONN_ROLE_POP3S:
        return cfg->pop3_login_timeout;
    case CONN_ROLE_IMAP:
    case CONN_ROLE_IMAPS:
        return cfg->imap_login_timeout;
    case CONN_ROLE_MTA_STS:
        return 30; /* HTTP_CONN_DEADLINE: handshake, request and answer in all */
    default:
        return 0;
    }
}

/* A handshake stalls for at most tls.handshake_timeout, never the role's long idle
 * timeout (imap.timeout is 30 minutes: a silent client on 993 would hold a slot). */
static unsigned conn_handshake_timeout(const struct conn *c)
{
    unsigned t = c->srv->ctx.cfg->tls_handshake_timeout;
    if (!t)
        t = CONN_HANDSHAKE_SECONDS;
    return c->timeout && c->timeout < t ? c->timeout : t;
}

/* The peer's address, its text form, port and loopback/local flags from a sockaddr (as
 * accept() gave it, here or in the login process that handed the session over). */
static void conn_set_peer(struct conn *c, const struct sockaddr *peer, socklen_t peer_len)
{
    memset(&c->peer, 0, sizeof c->peer);
    memcpy(&c->peer, peer, peer_len < sizeof c->peer ? peer_len : sizeof c->peer);
    c->peer.sa.sa_family = peer->sa_family; /* a unix peer's path is cut off */
    snprintf(c->peer_ip, sizeof c->peer_ip, "unknown");
    if (peer->sa_family == AF_UNIX) {
        /* a unix socket: its file permissions said who may connect */
        snprintf(c->peer_ip, sizeof c->peer_ip, "local");
        c->is_loopback = true;
        c->is_local = true;
    } else if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &s->sin_addr, c->peer_ip, sizeof c->peer_ip);
        c->is_loopback = (ntohl(s->sin_addr.s_addr) >> 24) == 127;
        c->peer_port = ntohs(s->sin_port);
    } else if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)peer;
        if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) {
            inet_ntop(AF_INET, &s->sin6_addr.s6_addr[12], c->peer_ip, sizeof c->peer_ip);
            c->is_loopback = s->sin6_addr.s6_addr[12] == 127;
        } else {
            inet_ntop(AF_INET6, &s->sin6_addr, c->peer_ip, sizeof c->peer_ip);
            c->is_loopback = IN6_IS_ADDR_LOOPBACK(&s->sin6_addr);
        }
        c->peer_port = ntohs(s->sin6_port);
    }
}

static void conn_fill_addresses(struct conn *c, int fd, const struct sockaddr *peer,
                                socklen_t peer_len)
{
    conn_set_peer(c, peer, peer_len);
    struct sockaddr_storage local;
    socklen_t llen = sizeof local;
    snprintf(c->local_ip, sizeof c->local_ip, "unknown");
    if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0) {
        if (local.ss_family == AF_INET) {
            const struct sockaddr_in *s = (const struct sockaddr_in *)&local;
            inet_ntop(AF_INET, &s->sin_addr, c->local_ip, sizeof c->local_ip);
            c->local_port = ntohs(s->sin_port);
        } else if (local.ss_family == AF_INET6) {
            const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&local;
            if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr))
                inet_ntop(AF_INET, &s->sin6_addr.s6_addr[12], c->local_ip, sizeof c->local_ip);
            else
                inet_ntop(AF_INET6, &s->sin6_addr, c->local_ip, sizeof c->local_ip);
            c->local_port = ntohs(s->sin6_port);
        }
    }
}

bool conn_accept(struct server *srv, enum conn_role role, const struct conn_protocol *proto, int fd,
                 const struct sockaddr *peer, socklen_t peer_len, bool is_implicit_tls)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return false;
    }
    c->srv = srv;
    c->role = role;
    c->proto = proto;
    c->fd = fd;
    c->relay_fd = -1;
    c->is_anvil_counted = true; /* server.c admitted it */
    conn_fill_addresses(c, fd, peer, peer_len);
    c->timeout = conn_role_timeout(srv->ctx.cfg, role);
    evutil_make_socket_nonblocking(fd);
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (is_implicit_tls) {
        SSL_CTX *ctx = tls_context_get();
        SSL *ssl = ctx ? SSL_new(ctx) : NULL;
        if (ssl)
            c->bev = bufferevent_openssl_socket_new(srv->ctx.base, fd, ssl,
                                                    BUFFEREVENT_SSL_ACCEPTING, opts);
        else
            log_error(proto->log_name, "no TLS context for an implicit-TLS connection");
        c->is_handshaking = true;
    } else {
        c->bev = bufferevent_socket_new(srv->ctx.base, fd, opts);
    }
    c->kick = event_new(srv->ctx.base, -1, 0, conn_on_kick, c);
    if (!c->bev || !c->kick) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(fd);
        if (c->kick)
            event_free(c->kick);
        free(c);
        return false;
    }
    if (is_implicit_tls)
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    conn_set_callbacks(c);
    conn_set_deadline(c, conn_role_login_timeout(srv->ctx.cfg, role));
    if (is_implicit_tls) {
        struct timeval tv = {.tv_sec = conn_handshake_timeout(c)};
        bufferevent_set_timeouts(c->bev, &tv, &tv);
        return true; /* open() once BEV_EVENT_CONNECTED arrives */
    }
    conn_apply_timeouts(c);
    /* open() from the loop, not from inside the accept callback's bookkeeping */
    conn_kick(c);
    return true;
}

/* ---- STARTTLS ------------------------------------------------------------------------- */

int conn_starttls(struct conn *c)
{
    CONN_ON_LOOP();
    SSL_CTX *ctx = tls_context_get();
    if (!ctx || c->is_tls || c->is_handshaking || c->is_closing || c->is_finished)
        return -1;
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return -1;
    /* RFC 3207 §4 / CVE-2011-0411: whatever the client pipelined after STARTTLS was sent
     * in clear and must not be read as if it came through TLS. Drop it. */
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    /* The queued "go ahead" reply stays first in the socket's output buffer; the filter
     * writes TLS records after it, so it goes out in clear before the handshake. As the
     * server we send nothing until the ClientHello arrives anyway. */
    struct bufferevent *under = c->bev;
    bufferevent_setwatermark(under, EV_READ, 0, 0);
    bufferevent_setwatermark(under, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(under, NULL, NULL);
    struct bufferevent *tls =
        bufferevent_openssl_filter_new(c->srv->ctx.base, under, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!tls) {
        SSL_free(ssl);
        return -1;
    }
    /* The filter stops encrypting while the socket's buffer is above this high mark
     * and resumes when it falls to the low one, so backpressure reaches on_drained. */
    bufferevent_setwatermark(under, EV_WRITE, CONN_OUTPUT_LOW_WATER / 2, CONN_OUTPUT_LOW_WATER * 2);
    bufferevent_enable(under, EV_READ | EV_WRITE);
    c->under_buf = bufferevent_get_output(under);
    c->under_cb = evbuffer_add_cb(c->under_buf, conn_on_under_output, c);
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    c->bev = tls;
    c->is_handshaking = true;
    conn_set_callbacks(c);
    struct timeval tv = {.tv_sec = conn_handshake_timeout(c)};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    return 0;
}

int conn_compress(struct conn *c)
{
    CONN_ON_LOOP();
    if (c->is_compressed || c->is_handshaking || c->is_closing || c->is_finished)
        return -1;
    /* The protocol's "OK" is queued in c->bev already and goes out uncompressed; the
     * filter compresses only what is written from now on (RFC 4978 §3). */
    struct bufferevent *under = c->bev;
    bufferevent_setwatermark(under, EV_READ, 0, 0);
    bufferevent_setwatermark(under, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(under, NULL, NULL);
    struct bufferevent *z = deflate_filter_new(c->srv->ctx.base, under,
                                               BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!z) {
        conn_set_callbacks(c); /* keep the connection as it was */
        conn_apply_timeouts(c);
        return -1;
    }
    /* backpressure as for STARTTLS: the filter stops while the layer below is full */
    bufferevent_setwatermark(under, EV_WRITE, CONN_OUTPUT_LOW_WATER / 2, CONN_OUTPUT_LOW_WATER * 2);
    bufferevent_enable(under, EV_READ | EV_WRITE);
    if (!c->under_cb) { /* plain: watch the socket's output for a closing flush */
        c->under_buf = bufferevent_get_output(under);
        c->under_cb = evbuffer_add_cb(c->under_buf, conn_on_under_output, c);
    }
    c->bev = z;
    c->is_compressed = true;
    conn_set_callbacks(c);
    conn_apply_timeouts(c);
    return 0;
}

bool conn_is_compressed(const struct conn *c)
{
    return c->is_compressed;
}

/* ---- shutdown ------------------------------------------------------------------------- */

size_t conn_close_some(struct server *srv, size_t max)
{
    size_t n = 0;
    for (struct conn *c = srv->conns; c; c = c->next) {
        if (c->is_closing || c->is_finished)
            continue;
        if (n == max)
            return 1; /* more are left */
        if (!c->close_reason)
            c->close_reason = "shutdown";
        if (c->session && c->proto->on_shutdown && !c->is_handshaking && !c->is_paused)
            c->proto->on_shutdown(c->session, c);
        conn_close(c);
        n++;
    }
    return 0;
}

void conn_free_all(struct server *srv, const char *reason)
{
    while (srv->conns)
        conn_finish(srv->conns, reason);
    while (conn_lingering)
        conn_linger_end(conn_lingering);
    conn_run_finalizers(srv->ctx.base);
}

/* Each pass runs what the one before queued: a deferred callback, then the bufferevent's
 * finalizer, then (a TLS filter's) the finalizer of the socket bufferevent under it. */
#define CONN_FINALIZE_PASSES 8

void conn_run_finalizers(struct event_base *base)
{
    for (int i = 0; i < CONN_FINALIZE_PASSES &&
                    event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) > 0;
         i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* ---- privilege separation: handing a session over ------------------------------------ */

bool conn_is_login_process(const struct conn *c)
{
    unsigned p = c->srv->ctx.processes;
    return (p & SERVER_PROC_LOGIN) && !(p & SERVER_PROC_WORKER);
}

bool conn_is_handed_over(const struct conn *c)
{
    return c->is_adopted;
}

void conn_login_binding(const struct conn *c, const char *service, char *out, size_t size)
{
    /* what the login process and the mail worker both know of the connection */
    snprintf(out, size, "%s %s %u %s %u", service, c->peer_ip, (unsigned)c->peer_port,
             c->local_ip, (unsigned)c->local_port);
}

struct conn_handoff_job {
    struct job job; /* first (core/job.h); owner: the connection's handle */
    char *data;     /* the encoded record */
    size_t len;
    int fd;         /* what goes over: a copy of the socket, or the relay's far end */
    int32_t rc;     /* result: CONN_HANDOFF_ADOPTED, _REFUSED or _CLIENT_GONE */
};

/* Pool thread: give the record and the descriptor to a mail worker, wait for its word. */
static void conn_handoff_work(struct job *job)
{
    struct conn_handoff_job *j = (struct conn_handoff_job *)job;
    struct channel_msg *reply = malloc(sizeof *reply);
    int32_t rc = 0;
    size_t off;
    j->rc = CONN_HANDOFF_REFUSED;
    if (reply && backend_call(BACKEND_MSG_HANDOFF, j->data, j->len, j->fd,
                              CONN_HANDOFF_TIMEOUT_S, reply, &rc, &off) == 0 &&
        (rc == CONN_HANDOFF_ADOPTED || rc == CONN_HANDOFF_CLIENT_GONE))
        j->rc = rc;
    free(reply);
}

static void conn_handoff_job_free(struct conn_handoff_job *j)
{
    if (j->fd >= 0)
        close(j->fd); /* ours: the mail worker received its own copy */
    if (j->data)
        explicit_bzero(j->data, j->len);
    free(j->data);
    free(j);
}

/* The handoff failed: the session answers and goes on (kick: loop level). */
static void conn_handoff_fail(struct conn *c)
{
    c->is_handing_off = false;
    if (c->relay_fd >= 0)
        close(c->relay_fd);
    c->relay_fd = -1;
    conn_apply_timeouts(c);
    if (!c->is_paused && !c->is_closing)
        bufferevent_enable(c->bev, EV_READ);
    if (c->session && c->proto->on_handoff_failed)
        c->proto->on_handoff_failed(c->session, c);
    else
        conn_close(c);
}

static void conn_relay_start(struct conn *c);

/* Loop thread: the mail worker's word (c NULL: the client left meanwhile). */
static void conn_handoff_done(void *owner, struct job *job)
{
    struct conn_handoff_job *j = (struct conn_handoff_job *)job;
    struct conn *c = owner;
    int32_t rc = j->rc;
    conn_handoff_job_free(j);
    if (!c)
        return;
    job_session_remove(c->handle);
    c->handle = 0;
    if (rc == CONN_HANDOFF_CLIENT_GONE) {
        /* the client reset or closed while its login was checked (its socket moved
         * disconnected): no worker is at fault and there is nobody to answer */
        c->is_handing_off = false;
        conn_finish(c, "lost connection");
        return;
    }
    if (rc != CONN_HANDOFF_ADOPTED) {
        log_warning(c->proto->log_name, "no mail worker took the session of %s: answered "
                                        "with a temporary failure",
                    c->peer_ip);
        conn_handoff_fail(c);
        return;
    }
    c->is_handing_off = false;
    if (c->is_tls) {
        conn_relay_start(c);
        return;
    }
    /* plain: the mail worker's copy of the socket carries the session on; ours closes
     * without a byte, a FIN or a lingering read */
    c->is_handed_off = true;
    conn_finish(c, "handoff");
}

void conn_handoff(struct conn *c, struct conn_handoff *h)
{
    CONN_ON_LOOP();
    struct conn_handoff_job *j = NULL;
    if (c->is_finished || c->is_closing || c->is_handing_off || c->is_compressed ||
        c->is_handshaking || c->srv->ctx.channel < 0)
        goto fail;
    c->is_handing_off = true;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_set_timeouts(c->bev, NULL, NULL); /* no idle farewell while it moves */
    h->role = c->role;
    h->is_tls = c->is_tls;
    snprintf(h->peer_ip, sizeof h->peer_ip, "%s", c->peer_ip);
    snprintf(h->local_ip, sizeof h->local_ip, "%s", c->local_ip);
    h->peer_port = c->peer_port;
    h->local_port = c->local_port;
    snprintf(h->tls_desc, sizeof h->tls_desc, "%s", conn_tls_description(c));
    /* what the client sent after the login command goes along, read by the worker's
     * session first (more arrives on the socket, or through the relay, after it) */
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t pending = evbuffer_get_length(in);
    if (pending > CONN_HANDOFF_INPUT_MAX) {
        log_warning(c->proto->log_name, "%s pipelined %zu bytes after logging in: not handed "
                                        "over",
                    c->peer_ip, pending);
        goto fail;
    }
    h->input_len = pending;
    if (pending && evbuffer_copyout(in, h->input, pending) != (ev_ssize_t)pending)
        goto fail;
    j = calloc(1, sizeof *j);
    if (!j)
        goto fail;
    j->fd = -1;
    /* encoded here, kept at its own size: a handoff in flight does not hold 64 KB of the
     * login process's heap (a burst of logins left it behind, issue 10) */
    static char record[CHANNEL_MAX_PAYLOAD]; /* loop thread only (CONN_ON_LOOP) */
    if (conn_handoff_encode(h, record, CHANNEL_MAX_PAYLOAD - 8, &j->len) < 0) {
        explicit_bzero(record, sizeof record);
        goto fail;
    }
    j->data = malloc(j->len ? j->len : 1);
    if (j->data)
        memcpy(j->data, record, j->len);
    explicit_bzero(record, j->len);
    if (!j->data)
        goto fail;
    if (c->is_tls) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
            goto fail;
        c->relay_fd = sv[0];
        j->fd = sv[1];
    } else if ((j->fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        goto fail;
    }
    evbuffer_drain(in, pending); /* it travels in the record now */
    c->handle = job_session_add(c);
    job_init(&j->job, c->handle, conn_handoff_work, conn_handoff_done);
    explicit_bzero(h, sizeof *h);
    free(h);
    job_submit(c->srv->ctx.pool, &j->job);
    return;
fail:
    if (j)
        conn_handoff_job_free(j);
    explicit_bzero(h, sizeof *h);
    free(h);
    if (c->is_finished)
        return;
    /* on_handoff_failed from the loop, not from inside this call (re-entrancy rule) */
    c->is_handing_off = true;
    c->has_handoff_failed = true;
    conn_kick(c);
}

/* ---- the TLS relay (login side) ------------------------------------------------------ */

static void conn_relay_on_ready(evutil_socket_t fd, short what, void *arg);
static void conn_relay_end(struct conn *c, const char *reason);

/* Watch the worker's end for what the relay needs now: its output (EV_READ) unless the
 * client is behind or the worker finished, and room for the client's bytes (EV_WRITE)
 * while some wait. */
static void conn_relay_watch(struct conn *c)
{
    if (!c->relay_ev || c->relay_fd < 0)
        return;
    short want = 0;
    if (!c->is_relay_out_paused && !c->has_relay_ended && !c->is_closing)
        want |= EV_READ;
    if (!c->has_relay_ended && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        want |= EV_WRITE;
    if (want == c->relay_watch)
        return;
    event_del(c->relay_ev);
    c->relay_watch = 0;
    if (!want)
        return;
    if (event_assign(c->relay_ev, c->srv->ctx.base, c->relay_fd, want | EV_PERSIST,
                     conn_relay_on_ready, c) == 0 &&
        event_add(c->relay_ev, NULL) == 0) {
        c->relay_watch = want;
        return;
    }
    /* unwatched, the relay would stall for good: end it (nothing is watched after) */
    log_warning(c->proto->log_name, "cannot watch the relay of %s: %s", c->peer_ip,
                strerror(errno));
    conn_relay_end(c, "relay failed");
}

/* The worker's end closed or failed: flush what it said to the client, then close. */
static void conn_relay_end(struct conn *c, const char *reason)
{
    c->has_relay_ended = true;
    bufferevent_disable(c->bev, EV_READ);
    if (!c->close_reason)
        c->close_reason = reason;
    conn_close(c);
    conn_relay_watch(c);
    conn_restart_tls_write(c);
}

/* Client -> mail worker: write the decrypted bytes waiting in the TLS input buffer to the
 * socketpair, as far as it takes them; the rest waits there (EV_WRITE). After the
 * client's end, the worker's input ends once the last of them is through. */
static void conn_relay_client_read(struct conn *c)
{
    if (c->has_relay_ended || c->relay_fd < 0)
        return;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (evbuffer_get_length(in) > 0) {
        int n = evbuffer_write(in, c->relay_fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        conn_relay_end(c, "mail worker gone");
        return;
    }
    if (c->has_eof && evbuffer_get_length(in) == 0)
        shutdown(c->relay_fd, SHUT_WR);
    conn_relay_watch(c);
}

/* The client's output fell below CONN_OUTPUT_LOW_WATER: read the worker again. */
static void conn_relay_client_drained(struct conn *c)
{
    if (c->is_relay_out_paused) {
        c->is_relay_out_paused = false;
        conn_relay_watch(c);
    }
}

/* The client finished sending: pass the end on once its last bytes are through, then
 * wait for the worker's last words (its farewell) and its close. */
static void conn_relay_client_eof(struct conn *c)
{
    c->has_eof = true;
    bufferevent_disable(c->bev, EV_READ);
    conn_relay_client_read(c);
    /* A vanished client (a reset: with dirty shutdowns allowed that is an end of input
     * too) left libevent's TLS writing stopped with the worker's output queued: the
     * worker waited to hand over the rest, this side for the worker's close, for good.
     * Writing again ends it: the bytes reach a half-closed client, or the write fails. */
    conn_restart_tls_write(c);
}

/* Mail worker -> client: its replies go straight into the TLS output buffer, read while
 * that holds at most CONN_RELAY_HIGH (a slow client: the worker's output waits in the
 * socketpair, and then in the worker, whose FETCH stops at its own high mark). */
static void conn_relay_worker_read(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t budget = CONN_RELAY_READ_MAX;
    while (budget > 0) {
        if (conn_output_length(c) > CONN_RELAY_HIGH) {
            c->is_relay_out_paused = true;
            break;
        }
        int n = evbuffer_read(out, c->relay_fd, (int)budget);
        if (n > 0) {
            budget -= (size_t)n < budget ? (size_t)n : budget;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        /* the session is over (the worker closed its end) or the worker died */
        conn_relay_end(c, n == 0 ? "disconnect" : "mail worker gone");
        return;
    }
    conn_relay_watch(c);
}

/* The worker's end is readable or writable. */
static void conn_relay_on_ready(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->is_finished)
        return;
    if (what & EV_WRITE)
        conn_relay_client_read(c);
    if ((what & EV_READ) && !c->has_relay_ended && !c->is_closing)
        conn_relay_worker_read(c);
}

/* The mail worker adopted the session: the session here ends; the plaintext is relayed. */
static void conn_relay_start(struct conn *c)
{
    c->relay_ev = event_new(c->srv->ctx.base, -1, 0, conn_relay_on_ready, c);
    void *session = c->session;
    c->session = NULL;
    c->is_relay = true; /* no session any more: nothing to answer */
    if (session && c->proto->close)
        c->proto->close(session, "handoff");
    if (!c->relay_ev) {
        c->close_reason = "out of memory";
        conn_finish(c, "out of memory");
        return;
    }
    /* the login deadline is the session's; the mail worker has its own now */
    if (c->deadline) {
        event_free(c->deadline);
        c->deadline = NULL;
    }
    /* the mail worker keeps the protocol's idle timeout; here only a client that stops
     * reading is cut off (the write timeout) */
    struct timeval tv = {.tv_sec = c->timeout ? c->timeout : CONN_CLOSE_FLUSH_SECONDS};
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    bufferevent_enable(c->bev, EV_READ);
    conn_relay_client_read(c); /* anything decrypted while the handoff was in flight */
    conn_relay_watch(c);
}

/* ---- adopting a handed-over session (mail worker) ------------------------------------- */

/* The address and port of a socket address, for comparing with the record. */
static void conn_sockaddr_text(const struct sockaddr_storage *ss, char *ip, size_t size,
                               uint16_t *port_r)
{
    snprintf(ip, size, "unknown");
    *port_r = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s->sin_addr, ip, (socklen_t)size);
        *port_r = ntohs(s->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr))
            inet_ntop(AF_INET, &s->sin6_addr.s6_addr[12], ip, (socklen_t)size);
        else
            inet_ntop(AF_INET6, &s->sin6_addr, ip, (socklen_t)size);
        *port_r = ntohs(s->sin6_port);
    }
}

/* Does the socket fd match what the record says (a plain connection), or is it a relay's
 * socketpair end (a TLS connection)? A login process cannot pass off one client's socket
 * as another's, nor a plain connection as TLS. */
static bool conn_adopt_check_socket(int fd, const struct conn_handoff *h, bool *is_relay_r)
{
    struct sockaddr_storage local, peer;
    socklen_t llen = sizeof local, plen = sizeof peer;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0)
        return false;
    if (local.ss_family == AF_UNIX) {
        int type = 0;
        socklen_t tlen = sizeof type;
        *is_relay_r = true;
        return h->is_tls && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 &&
               type == SOCK_STREAM;
    }
    *is_relay_r = false;
    if (h->is_tls || getpeername(fd, (struct sockaddr *)&peer, &plen) < 0)
        return false;
    char lip[INET6_ADDRSTRLEN], pip[INET6_ADDRSTRLEN];
    uint16_t lport, pport;
    conn_sockaddr_text(&local, lip, sizeof lip, &lport);
    conn_sockaddr_text(&peer, pip, sizeof pip, &pport);
    return strcmp(lip, h->local_ip) == 0 && lport == h->local_port &&
           strcmp(pip, h->peer_ip) == 0 && pport == h->peer_port;
}

/* Put what the client pipelined after its login command into bev's input, as if it had
 * just been read. A socket bufferevent keeps the end of its input frozen (only libevent
 * itself adds there), so it is thawed for the copy. */
static bool conn_preload_input(struct bufferevent *bev, const char *data, size_t len)
{
    if (len == 0)
        return true;
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_unfreeze(in, 0);
    bool ok = evbuffer_add(in, data, len) == 0;
    evbuffer_freeze(in, 0);
    return ok;
}

bool conn_socket_is_gone(int fd)
{
    struct sockaddr_storage local, peer;
    socklen_t llen = sizeof local, plen = sizeof peer;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0 || local.ss_family == AF_UNIX)
        return false;
    return getpeername(fd, (struct sockaddr *)&peer, &plen) < 0 && errno == ENOTCONN;
}

bool conn_adopt(struct server *srv, const struct conn_protocol *proto, int fd,
                const struct conn_handoff *h)
{
    bool is_relay_end = false;
    struct conn *c = NULL;
    if (!proto->adopt || !conn_adopt_check_socket(fd, h, &is_relay_end) ||
        !(c = calloc(1, sizeof *c))) {
        close(fd);
        return false;
    }
    c->srv = srv;
    c->role = h->role;
    c->proto = proto;
    c->fd = fd;
    c->relay_fd = -1;
    c->is_adopted = true;
    c->is_relay_end = is_relay_end;
    c->is_tls = h->is_tls;
    c->is_opened = true;
    c->tls_desc = h->tls_desc[0] ? strdup(h->tls_desc) : NULL;
    snprintf(c->peer_ip, sizeof c->peer_ip, "%s", h->peer_ip);
    snprintf(c->local_ip, sizeof c->local_ip, "%s", h->local_ip);
    c->peer_port = h->peer_port;
    c->local_port = h->local_port;
    /* the peer's address as accept() gave it in the login process, so that
     * conn_peer_in_networks() answers here as it did there */
    struct sockaddr_in in4 = {.sin_family = AF_INET, .sin_port = htons(h->peer_port)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(h->peer_port)};
    if (inet_pton(AF_INET, h->peer_ip, &in4.sin_addr) == 1)
        conn_set_peer(c, (const struct sockaddr *)&in4, sizeof in4);
    else if (inet_pton(AF_INET6, h->peer_ip, &in6.sin6_addr) == 1)
        conn_set_peer(c, (const struct sockaddr *)&in6, sizeof in6);
    c->timeout = conn_role_timeout(srv->ctx.cfg, c->role);
    evutil_make_socket_nonblocking(fd);
    c->bev = bufferevent_socket_new(srv->ctx.base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    c->kick = event_new(srv->ctx.base, -1, 0, conn_on_kick, c);
    if (!c->bev || !c->kick || !conn_preload_input(c->bev, h->input, h->input_len)) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(fd);
        if (c->kick)
            event_free(c->kick);
        free(c->tls_desc);
        free(c);
        return false;
    }
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    /* counted where the client's socket is: here for a plain connection; a relayed one
     * stays counted in the login process (shown here as a session) */
    c->is_anvil_counted = !is_relay_end;
    server_conn_adopted(srv, c->peer_ip, c->role, c->is_anvil_counted);
    conn_set_callbacks(c);
    conn_apply_timeouts(c);
    c->session = proto->adopt(c, h);
    if (!c->session) {
        /* refused before a byte was written: the login process answers the client */
        c->is_handed_off = true; /* (no lingering close of a socket that lives on) */
        conn_finish(c, "refused");
        return false;
    }
    conn_kick(c); /* the preloaded input, once the session reads */
    return true;
}
