/*
 * channel.c - SOCK_SEQPACKET messages with an optional descriptor (channel.h).
 */
#include "core/channel.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int channel_pair(int fds_r[2])
{
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds_r);
}

int channel_send(int sock, uint8_t type, const void *payload, size_t len, int fd)
{
    if (len > CHANNEL_MAX_PAYLOAD) {
        errno = EMSGSIZE;
        return -1;
    }
    char buf[1 + CHANNEL_MAX_PAYLOAD];
    buf[0] = (char)type;
    if (len)
        memcpy(buf + 1, payload, len);
    struct iovec iov = {.iov_base = buf, .iov_len = 1 + len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    if (fd >= 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.space;
        mh.msg_controllen = sizeof ctl.space;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)(1 + len) ? 0 : -1;
}

void channel_wait_room(int sock, int timeout_ms)
{
    struct pollfd pfd = {.fd = sock, .events = POLLOUT};
    (void)poll(&pfd, 1, timeout_ms);
    /* (POLLOUT may be reported at once while the peer's queue is still full: pace) */
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};
    nanosleep(&pause, NULL);
}

int channel_send_patiently(int sock, uint8_t type, const void *payload, size_t len, int tries)
{
    for (int i = 0;; i++) {
        if (channel_send(sock, type, payload, len, -1) == 0)
            return 0;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || i + 1 >= tries)
            return -1;
        channel_wait_room(sock, 50);
    }
}

int channel_recv(int sock, struct channel_msg *m)
{
    char buf[1 + CHANNEL_MAX_PAYLOAD];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(int) * 4)];
    } ctl;
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space, .msg_controllen = sizeof ctl};
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == ECONNRESET) {
        /* The peer closed its end with messages of ours unread in it: the kernel says so
         * once, before the messages the peer sent us that are still queued (a worker's
         * last answers, an old auth process's goodbye). Read on: its close (0) comes after
         * them. Dropped, a "delivered" answer made a client send the message again. */
        do
            n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
    }
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    if (n == 0)
        return -1; /* SEQPACKET: zero bytes is the peer's close */
    m->fd = -1;
    /* Take every descriptor that came along; keep the first, close any others. */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (m->fd < 0)
                m->fd = fd;
            else
                close(fd);
        }
    }
    m->is_fd_lost = false;
    if ((mh.msg_flags & MSG_TRUNC) != 0) {
        /* a peer that sends more than a message may hold is not ours to trust */
        if (m->fd >= 0)
            close(m->fd);
        m->fd = -1;
        return 0;
    }
    if ((mh.msg_flags & MSG_CTRUNC) != 0) {
        /* The descriptor did not fit: we are at RLIMIT_NOFILE (or the peer sent more than
         * one). The message still arrives, marked, so the receiver can refuse it at once
         * instead of leaving its sender waiting. */
        if (m->fd >= 0)
            close(m->fd);
        m->fd = -1;
        m->is_fd_lost = true;
    }
    m->type = (uint8_t)buf[0];
    m->len = (size_t)n - 1;
    memcpy(m->payload, buf + 1, m->len);
    m->payload[m->len] = '\0';
    return 1;
}

bool channel_put_str(char *payload, size_t *len, const char *s)
{
    size_t n = strlen(s ? s : "");
    if (*len + n + 1 > CHANNEL_MAX_PAYLOAD)
        return false;
    memcpy(payload + *len, s ? s : "", n);
    payload[*len + n] = '\0';
    *len += n + 1;
    return true;
}

const char *channel_get_str(const struct channel_msg *m, size_t *pos)
{
    if (*pos >= m->len)
        return NULL;
    const char *s = m->payload + *pos;
    const char *end = memchr(s, '\0', m->len - *pos);
    if (!end)
        return NULL;
    *pos = (size_t)(end - m->payload) + 1;
    return s;
}

/* ---- reader on an event loop -------------------------------------------------------- */

struct channel_reader {
    struct event *ev;
    int sock;
    channel_fn *on_msg;
    channel_closed_fn *on_closed;
    void *arg;
    bool is_closed;
};

static void channel_reader_cb(evutil_socket_t fd, short what, void *arg)
{
    struct channel_reader *r = arg;
    /* Bounded per wake-up so one busy peer cannot starve the loop. */
    for (int i = 0; i < 64 && !r->is_closed; i++) {
        struct channel_msg m;
        int got = channel_recv(r->sock, &m);
        if (got == 0)
            return;
        if (got < 0) {
            r->is_closed = true;
            event_del(r->ev);
            if (r->on_closed)
                r->on_closed(r->arg);
            return;
        }
        r->on_msg(r->arg, &m);
        if (m.fd >= 0)
            close(m.fd);
    }
}

struct channel_reader *channel_reader_new(struct event_base *base, int sock, channel_fn *on_msg,
                                          channel_closed_fn *on_closed, void *arg)
{
    struct channel_reader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->sock = sock;
    r->on_msg = on_msg;
    r->on_closed = on_closed;
    r->arg = arg;
    r->ev = event_new(base, sock, EV_READ | EV_PERSIST, channel_reader_cb, r);
    if (!r->ev || event_add(r->ev, NULL) < 0) {
        if (r->ev)
            event_free(r->ev);
        free(r);
        return NULL;
    }
    return r;
}

void channel_reader_free(struct channel_reader *r)
{
    if (!r)
        return;
    event_free(r->ev);
    free(r);
}
