/*
 * channel.h - messages between Tern's own processes (master, workers, queue, auth) over
 * AF_UNIX SOCK_SEQPACKET socketpairs made by the master before fork.
 *
 * A message is one datagram: a type byte, then a payload of up to CHANNEL_MAX_PAYLOAD
 * bytes, optionally with one descriptor passed alongside (SCM_RIGHTS). The payload is
 * plain data: fields are NUL-terminated strings or fixed-size integers, never pointers.
 * The receiver treats every message as untrusted input (another process may have been
 * taken over): lengths are checked, strings must be terminated inside the payload,
 * unknown types are ignored, and a received descriptor is closed unless the handler
 * takes it.
 *
 * channel_send() never blocks: the sockets are non-blocking and a message that does not
 * fit into the socket buffer is dropped (returns -1 with EAGAIN); the messages that use
 * it are hints whose loss only delays (a change notification, a queue kick), and the
 * receivers read promptly. Requests that need an answer use their own channels.
 *
 * struct channel_reader delivers the messages arriving on one descriptor to a callback on
 * the event loop (libevent); the master, which has no libevent loop, reads with
 * channel_recv() from poll().
 *
 * Thread rules: channel_send/channel_recv from any one thread at a time per descriptor;
 * a channel_reader on its loop thread only.
 */
#ifndef TERN_CORE_CHANNEL_H
#define TERN_CORE_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

#define CHANNEL_MAX_PAYLOAD (64 * 1024 - 64)

struct channel_msg {
    uint8_t type;
    size_t len;                        /* payload bytes */
    char payload[CHANNEL_MAX_PAYLOAD + 1]; /* always NUL after len */
    int fd;                            /* passed descriptor, -1 none; the receiver owns it */
    bool is_fd_lost;                   /* one was sent but not received: the receiver is out
                                          of descriptors (MSG_CTRUNC); fd is -1 */
};

/* A pair of connected, non-blocking, close-on-exec SEQPACKET sockets. 0 or -1 (errno). */
int channel_pair(int fds_r[2]);
/* Send one message (payload may be NULL when len is 0), passing fd when >= 0. */
int channel_send(int sock, uint8_t type, const void *payload, size_t len, int fd);
/* After channel_send failed with EAGAIN: wait up to timeout_ms for room, and at least a
 * few milliseconds. poll() alone does not pace the next try: on a socketpair it reports
 * POLLOUT while the peer's receive queue is at its datagram limit
 * (net.unix.max_dgram_qlen: 10 on some systems), so a loop of tries around it gave up
 * within a millisecond and dropped the message (an auth process's answer or goodbye,
 * a worker's reply) in a burst. */
void channel_wait_room(int sock, int timeout_ms);
/* channel_send without fd, waiting for room (channel_wait_room, 50 ms) while the peer's
 * queue is full, at most tries times. BLOCKING (only while that queue is full): for
 * answers, whose peer is broken when it reads nothing for seconds. 0 or -1 (errno). */
int channel_send_patiently(int sock, uint8_t type, const void *payload, size_t len, int tries);
/* Receive one message: 1 got one, 0 none waiting (EAGAIN), -1 the peer is gone or error.
 * A truncated or malformed datagram is dropped (returns 0 after closing any fd). The
 * messages a peer sent before it closed are all returned before its close, even when it
 * left messages of ours unread (the kernel's ECONNRESET is read past). */
int channel_recv(int sock, struct channel_msg *m);

/* Payload helpers: append a NUL-terminated string / read the next one. */
bool channel_put_str(char *payload, size_t *len, const char *s);
/* The string at *pos (advanced past its NUL), or NULL when none is terminated in m. */
const char *channel_get_str(const struct channel_msg *m, size_t *pos);

typedef void channel_fn(void *arg, struct channel_msg *m);
typedef void channel_closed_fn(void *arg);

struct channel_reader;
/* Watch sock on base: every message goes to on_msg (which may take m->fd by setting it
 * to -1), and on_closed is called once when the peer is gone. sock stays the caller's. */
struct channel_reader *channel_reader_new(struct event_base *base, int sock, channel_fn *on_msg,
                                          channel_closed_fn *on_closed, void *arg);
void channel_reader_free(struct channel_reader *r);

#endif
