/*
 * control.c - the control socket: `tern auth blocks` asks the running server (control.h).
 *
 * Server side: an evconnlistener on a Unix socket; each connection is a bufferevent that
 * reads one line (at most CONTROL_MAX_LINE), writes the answer and closes once it is
 * flushed. A client that says nothing is dropped after CONTROL_TIMEOUT seconds.
 *
 * The socket is bound under a temporary name and renamed into place, and at the end
 * removed only if the file is still ours: an auth process that a reload replaces stops
 * after its successor started, and must not take the successor's socket along.
 */
#include "auth/control.h"

#include "auth/auth.h"

#include "core/buf.h"
#include "core/log.h"
#include "policy/penalty.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_TIMEOUT 10

struct auth_control {
    struct evconnlistener *listener;
    struct auth_service *svc;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev; /* the socket file we made: only that one is removed at the end */
    ino_t ino;
};

static bool control_path(const char *data_dir, char *out, size_t size)
{
    struct buf b;
    buf_init(&b, 0);
    bool ok = buf_printf(&b, "%s/%s", data_dir, CONTROL_SOCKET) && b.len < size;
    if (ok)
        memcpy(out, b.data, b.len + 1);
    buf_free(&b);
    return ok;
}

static void control_error(char **error_r, const char *what, const char *path)
{
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "%s %s: %s", what, path, strerror(errno));
    *error_r = buf_steal(&b);
}

/* ---- answers ---------------------------------------------------------------------------- */

static void list_one(const struct penalty_block *b, void *arg)
{
    evbuffer_add_printf(arg, "block %s %s %u %llu\n", b->ip, b->account[0] ? b->account : "-",
                        b->failures, (unsigned long long)((b->remaining_ms + 999) / 1000));
}

/* Answer one request line into out. */
static void control_answer(struct auth_control *pc, char *line, struct evbuffer *out)
{
    char *save = NULL;
    const char *verb = strtok_r(line, " ", &save);
    const char *a1 = verb ? strtok_r(NULL, " ", &save) : NULL;
    const char *a2 = a1 ? strtok_r(NULL, " ", &save) : NULL;
    if (verb && strcmp(verb, "blocks-list") == 0 && !a1) {
        size_t n = auth_penalty_blocks_list(pc->svc, list_one, out);
        evbuffer_add_printf(out, "end %zu\n", n);
    } else if (verb && strcmp(verb, "blocks-clear") == 0 && a1 &&
               !strtok_r(NULL, " ", &save)) {
        const char *ip = strcmp(a1, "*") == 0 ? NULL : a1;
        const char *account = !a2 ? NULL : strcmp(a2, "-") == 0 ? "" : a2;
        size_t n = auth_penalty_blocks_clear(pc->svc, ip, account, "tern auth blocks");
        evbuffer_add_printf(out, "cleared %zu\n", n);
    } else {
        evbuffer_add_printf(out, "error unknown request\n");
    }
}

/* ---- server ----------------------------------------------------------------------------- */

static void control_on_event(struct bufferevent *bev, short what, void *arg)
{
    bufferevent_free(bev);
}

static void control_on_written(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_free(bev);
}

static void control_on_read(struct bufferevent *bev, void *arg)
{
    struct auth_control *pc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = 0;
    char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
    if (!line) {
        if (evbuffer_get_length(in) > CONTROL_MAX_LINE)
            bufferevent_free(bev);
        return;
    }
    struct evbuffer *out = bufferevent_get_output(bev);
    if (len > CONTROL_MAX_LINE)
        evbuffer_add_printf(out, "error request too long\n");
    else
        control_answer(pc, line, out);
    free(line);
    bufferevent_disable(bev, EV_READ);
    bufferevent_setcb(bev, NULL, control_on_written, control_on_event, pc);
}

static void control_on_accept(struct evconnlistener *l, evutil_socket_t fd,
                              struct sockaddr *addr, int len, void *arg)
{
    struct bufferevent *bev =
        bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return;
    }
    struct timeval tv = {.tv_sec = CONTROL_TIMEOUT};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setwatermark(bev, EV_READ, 0, CONTROL_MAX_LINE + 2);
    bufferevent_setcb(bev, control_on_read, NULL, control_on_event, arg);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

struct auth_control *auth_control_start(struct event_base *base, const char *data_dir,
                                        struct auth_service *svc, char **error_r)
{
    struct auth_control *pc = calloc(1, sizeof *pc);
    if (!pc) {
        *error_r = strdup("out of memory");
        return NULL;
    }
    pc->svc = svc;
    if (!control_path(data_dir, pc->path, sizeof pc->path)) {
        *error_r = strdup("control socket path too long (data_dir)");
        free(pc);
        return NULL;
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int n = snprintf(sun.sun_path, sizeof sun.sun_path, "%s.%ld", pc->path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof sun.sun_path) {
        *error_r = strdup("control socket path too long (data_dir)");
        free(pc);
        return NULL;
    }
    unlink(sun.sun_path); /* a stale one of a process with our pid */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(077);
    bool is_bound = fd >= 0 && bind(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
    umask(old);
    struct stat st;
    if (!is_bound || listen(fd, 16) < 0 || stat(sun.sun_path, &st) < 0 ||
        rename(sun.sun_path, pc->path) < 0) {
        control_error(error_r, "cannot listen on", pc->path);
        if (is_bound)
            unlink(sun.sun_path);
        if (fd >= 0)
            close(fd);
        free(pc);
        return NULL;
    }
    pc->dev = st.st_dev;
    pc->ino = st.st_ino;
    pc->listener =
        evconnlistener_new(base, control_on_accept, pc, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (!pc->listener) {
        control_error(error_r, "cannot watch", pc->path);
        close(fd);
        unlink(pc->path);
        free(pc);
        return NULL;
    }
    return pc;
}

void auth_control_stop(struct auth_control *pc)
{
    if (!pc)
        return;
    evconnlistener_free(pc->listener);
    struct stat st;
    if (stat(pc->path, &st) == 0 && st.st_dev == pc->dev && st.st_ino == pc->ino)
        unlink(pc->path); /* ours, not a successor's */
    free(pc);
}

/* ---- client ----------------------------------------------------------------------------- */

int auth_control_request(const char *data_dir, const char *request, FILE *out,
                           char **error_r)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (!control_path(data_dir, sun.sun_path, sizeof sun.sun_path)) {
        *error_r = strdup("control socket path too long (data_dir)");
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        control_error(error_r, "cannot reach the server at", sun.sun_path);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = CONTROL_TIMEOUT};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t len = strlen(request);
    if (write(fd, request, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        control_error(error_r, "cannot send to", sun.sun_path);
        close(fd);
        return -1;
    }
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        fwrite(chunk, 1, (size_t)n, out);
    int rc = 0;
    if (n < 0) {
        control_error(error_r, "no answer from", sun.sun_path);
        rc = -1;
    }
    close(fd);
    return rc;
}
