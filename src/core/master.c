/*
 * master.c - the root master (DESIGN §2, the nginx/Postfix model): it forks the processes
 * that do the work, restarts one that dies, routes their messages to each other, answers
 * `tern status`, and turns SIGHUP and SIGTERM into a reload and a bounded stop.
 *
 * The master parses nothing from the network: it holds the listening sockets (bound as
 * root before the first fork) but never accepts on them. Its children are
 *   - login_processes login processes (default: as many as workers): the listeners, TLS,
 *     SMTP and LMTP sessions whole, and IMAP and POP3 sessions until their client has
 *     logged in. They run as login_user, chrooted into an empty directory: a bug reachable
 *     before login gives an attacker no mailbox, no password hash and no spool (DESIGN §2,
 *     docs/SECURITY.md). What needs those they ask a mail worker (core/backend.h), and a
 *     logged-in session is handed to one (conn_handoff);
 *   - worker_processes mail workers (default: one per core): the sessions after login and
 *     the deliveries the login processes ask for, as run_user; each runs the event loop
 *     with its thread pool. A session lives in one worker, so a worker that crashes takes
 *     only its own sessions along;
 *   - one queue process: the outbound queue runner (the spool, MX lookups, bounces);
 *   - one auth process: the directory with the password hashes, the failed-login
 *     policy's table (and the socket `tern auth blocks` talks to) and the POP3 login
 *     times for all workers (auth/server.c). The others
 *     reach it over channels the master makes and hands out: one socketpair per client
 *     child, its end inherited at fork, the auth end passed to the auth process
 *     (SERVER_MSG_AUTH_CLIENT); a restarted auth process gets new pairs for every live
 *     client, whose new ends reach them as SERVER_MSG_AUTH_CHANNEL.
 * The login processes and the mail workers talk over one channel per pair, which the
 * master makes and hands out (SERVER_MSG_BACKEND_CHANNEL to the login process,
 * SERVER_MSG_BACKEND_CLIENT to the worker) whenever either starts; it carries nothing
 * itself. Each child drops privileges right after fork (run_user; the auth process to
 * auth_user, the owner of tern.db; a login process to login_user inside login_chroot)
 * and tells the master READY once it serves. The master logs "daemon started --
 * listening on ..." when all have.
 *
 * A child that dies is logged as Postfix does ("warning: process tern/worker pid 123
 * killed by signal 11") and started again: at once the first time, with a growing pause
 * (1 s doubling to 60 s) while it keeps dying within 10 s of its start. The other workers
 * keep serving meanwhile (they share the listening sockets), and the dead one's counts
 * are cleared from the shared anvil (anvil.h).
 *
 * Messages (channel.h) go child -> master -> children by type range: SERVER_MSG_TO_WORKERS
 * to every other worker (change notifications: a delivery in one process wakes IDLE
 * sessions in all), SERVER_MSG_TO_QUEUE to the queue process (a message just queued).
 * The master copies payloads without reading them, and routes nothing a login process
 * sends (it has no business waking IDLE sessions or the queue runner).
 *
 * SIGHUP: the certificate is read again and, with hooks->reload, the configuration. A
 * new configuration starts a new generation: new listeners are bound (unchanged ones
 * kept), the queue process is replaced (never two runners at once), and so is the auth
 * process unless no setting and none of its files changed (then it stays, so the logins
 * in flight and their one-time tokens are undisturbed), new
 * workers and login processes start, and the old ones get SERVER_MSG_DRAIN: they stop
 * accepting and exit when their last session ends, so established sessions are not
 * dropped (the login processes learn which workers drain: SERVER_MSG_BACKEND_RETIRE).
 * Without a new configuration the login processes are replaced the same way (chrooted,
 * they cannot read the certificate: new ones get it from the master at fork), and the
 * workers and the queue process reload it in place on the SIGHUP passed on.
 *
 * SIGTERM/SIGINT: passed on; each child stops within shutdown_timeout (server.c); the
 * master waits that long plus a margin, kills what is left, and exits.
 *
 * The master has no event library loop: poll() over a signalfd, the children's channels
 * and the status socket, which keeps it small and safe to fork from at any time.
 */
#include "core/anvil.h"
#include "core/channel.h"
#include "core/config.h"
#include "core/log.h"
#include "core/server_internal.h"
#include "core/tls.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MASTER_MAX_CHILDREN   (ANVIL_SLOTS + 4)
#define MASTER_RESPAWN_QUEUE  ANVIL_SLOTS       /* respawn[] index of the queue process */
#define MASTER_RESPAWN_AUTH   (ANVIL_SLOTS + 1) /* and of the auth process */
#define MASTER_MAX_WORKERS    (ANVIL_SLOTS / 4) /* workers and login processes: two
                                                   generations of each at a reload */
#define MASTER_START_SECONDS  60   /* every child must be READY by then at start-up */
#define MASTER_KILL_MARGIN_MS 5000 /* past shutdown_timeout before SIGKILL */
#define MASTER_BACKOFF_MIN_MS 1000
#define MASTER_BACKOFF_MAX_MS 60000
#define MASTER_SHORT_LIFE_MS  10000 /* dying sooner than this after start backs off */
#define MASTER_MAX_STATUS     4     /* `tern status` clients at once */

struct child {
    pid_t pid;            /* 0: this entry is free */
    unsigned kind;        /* SERVER_PROC_WORKER, _LOGIN, _QUEUE or _AUTH */
    unsigned slot;        /* anvil slot (workers and login processes) */
    unsigned generation;
    int sock;             /* the master's end of the channel */
    bool is_ready;
    bool is_draining;     /* an old generation: exits when its sessions are gone */
    uint64_t started_ms;
    /* a client of the auth process born while there was none (a reload waits for the old
     * one to exit): the auth end of its channel, held until the next one starts; what
     * the client sends meanwhile waits in the socket */
    bool has_auth_end;
    int auth_end;
};

/* A process to start again once its pause is over. */
struct respawn {
    bool is_due;
    unsigned kind, slot;
    uint64_t at_ms;
    unsigned delay_ms; /* the pause used last time (doubles while it keeps dying) */
};

struct master {
    struct server_state *st;
    const struct config *cfg;    /* the configuration of the current generation */
    struct config *owned_cfg;    /* reloaded configurations are ours to free */
    struct anvil *anvil;
    struct child children[MASTER_MAX_CHILDREN];
    struct respawn respawn[ANVIL_SLOTS + 2]; /* per anvil slot, then queue and auth */
    unsigned generation;
    unsigned n_workers, n_logins;
    int sigfd;
    int status_fd;
    char status_path[4300];
    bool is_started, is_stopping, is_queue_pending;
    bool is_auth_stopped; /* a graceful stop has sent the auth process its SIGTERM */
    /* a reload replaces the auth process: the old one is stopping, the new one starts
     * when it has exited (by auth_pending_deadline_ms, else it is killed) */
    bool is_auth_pending;
    uint64_t auth_pending_deadline_ms;
    int auth_state_fd; /* the old one's live tokens (memfd, never read here), or -1 */
    uint64_t auth_files_stamp; /* master_auth_files_stamp when the auth process started */
    uint64_t start_ms, stop_deadline_ms;
};

static const char *kind_name(unsigned kind)
{
    return kind == SERVER_PROC_QUEUE   ? "queue"
           : kind == SERVER_PROC_AUTH  ? "auth"
           : kind == SERVER_PROC_LOGIN ? "login"
                                       : "worker";
}

/* Workers and login processes have an anvil slot (they hold client connections). */
static bool kind_has_slot(unsigned kind)
{
    return kind == SERVER_PROC_WORKER || kind == SERVER_PROC_LOGIN;
}

static unsigned respawn_index(unsigned kind, unsigned slot)
{
    return kind == SERVER_PROC_QUEUE  ? MASTER_RESPAWN_QUEUE
           : kind == SERVER_PROC_AUTH ? MASTER_RESPAWN_AUTH
                                      : slot;
}

/* The auth process, or NULL while there is none. */
static struct child *master_auth_child(struct master *m)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        if (m->children[i].pid && m->children[i].kind == SERVER_PROC_AUTH &&
            !m->children[i].is_draining)
            return &m->children[i];
    return NULL;
}

/* A stamp of the files the auth process reads besides the configuration (the SQL
 * directory's password file and TLS files): identity, size and time of each. A reload
 * keeps the auth process only while this and every setting are unchanged. */
static uint64_t master_auth_files_stamp(const struct config *cfg)
{
    const char *files[] = {cfg->directory_password_file, cfg->directory_tls_ca,
                           cfg->directory_tls_cert, cfg->directory_tls_key};
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct stat st;
        uint64_t v[4] = {0, 0, 0, 0};
        if (files[i] && files[i][0] && stat(files[i], &st) == 0) {
            v[0] = (uint64_t)st.st_dev ^ ((uint64_t)st.st_ino << 1);
            v[1] = (uint64_t)st.st_size;
            v[2] = (uint64_t)st.st_mtim.tv_sec;
            v[3] = (uint64_t)st.st_mtim.tv_nsec;
        }
        for (size_t k = 0; k < 4; k++)
            h = (h ^ v[k]) * 0x100000001b3ull;
    }
    return h;
}

/* Give the auth process the other end of a client's channel, with the client's kind
 * (what it may ask: auth_wire.h). There must be one (master_auth_child). */
static void master_auth_give(struct master *m, int auth_end, unsigned kind)
{
    struct child *a = master_auth_child(m);
    char payload[16];
    int n = snprintf(payload, sizeof payload, "%u", kind);
    if (!a || channel_send(a->sock, SERVER_MSG_AUTH_CLIENT, payload, (size_t)n, auth_end) < 0)
        log_error("master", "cannot hand a channel to the auth process: its clients will "
                            "get temporary errors until it restarts");
}

/* ---- children ----------------------------------------------------------------------- */

static struct child *master_child_by_pid(struct master *m, pid_t pid)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        if (m->children[i].pid == pid)
            return &m->children[i];
    return NULL;
}

/* Did a send to c fail because c is a draining process that has just exited (its end
 * closed, not yet reaped)? That is the normal end of an old generation, not an error. */
static bool master_is_exiting(const struct child *c, int err)
{
    return c->is_draining && (err == EPIPE || err == ECONNRESET || err == ENOTCONN);
}

static bool master_slot_in_use(struct master *m, unsigned slot)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        if (m->children[i].pid && kind_has_slot(m->children[i].kind) &&
            m->children[i].slot == slot)
            return true;
    return false;
}

/* Connect a login process and a mail worker: one channel, an end for each (backend.h).
 * Their master channels carry the ends; a process not reading yet finds them queued. */
static void master_backend_pair(struct master *m, struct child *login, struct child *worker)
{
    (void)m;
    int sv[2];
    if (channel_pair(sv) < 0) {
        log_error("master", "socketpair between tern/login pid %d and tern/worker pid %d: %s",
                  (int)login->pid, (int)worker->pid, strerror(errno));
        return;
    }
    char lpid[16], wpid[16];
    int ln = snprintf(lpid, sizeof lpid, "%d", (int)login->pid);
    int wn = snprintf(wpid, sizeof wpid, "%d", (int)worker->pid);
    if ((channel_send(worker->sock, SERVER_MSG_BACKEND_CLIENT, lpid, (size_t)ln, sv[0]) < 0 ||
         channel_send(login->sock, SERVER_MSG_BACKEND_CHANNEL, wpid, (size_t)wn, sv[1]) < 0) &&
        !master_is_exiting(login, errno) && !master_is_exiting(worker, errno))
        log_error("master", "cannot connect tern/login pid %d with tern/worker pid %d",
                  (int)login->pid, (int)worker->pid);
    close(sv[0]);
    close(sv[1]);
}

/* A new login process or worker c: a channel with every live process of the other kind
 * (a new login process only with the workers that do not drain). */
static void master_backend_connect(struct master *m, struct child *c)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *o = &m->children[i];
        if (!o->pid || o == c)
            continue;
        if (c->kind == SERVER_PROC_LOGIN && o->kind == SERVER_PROC_WORKER && !o->is_draining)
            master_backend_pair(m, c, o);
        else if (c->kind == SERVER_PROC_WORKER && o->kind == SERVER_PROC_LOGIN)
            master_backend_pair(m, o, c);
    }
}

/* A worker drains: the login processes send it nothing new. */
static void master_backend_retire(struct master *m, const struct child *w)
{
    char wpid[16];
    int n = snprintf(wpid, sizeof wpid, "%d", (int)w->pid);
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *o = &m->children[i];
        if (o->pid && o->kind == SERVER_PROC_LOGIN)
            (void)channel_send(o->sock, SERVER_MSG_BACKEND_RETIRE, wpid, (size_t)n, -1);
    }
}

/* Tell a worker or login process to drain (a reload). */
static void master_drain(struct master *m, struct child *c)
{
    c->is_draining = true;
    if (kind_has_slot(c->kind))
        anvil_slot_set_draining(m->anvil, c->slot);
    (void)channel_send(c->sock, SERVER_MSG_DRAIN, NULL, 0, -1);
    if (c->kind == SERVER_PROC_WORKER)
        master_backend_retire(m, c);
}

/* Per-process resource limits (issue 10): the auth and queue processes need far fewer
 * descriptors than a worker (whose limit the master raised for max_connections), and
 * process_memory_limit, when set, caps each child's data segment (RLIMIT_DATA: heap and
 * private mappings), so one runaway process fails alone and the master restarts it. */
static void master_child_limits(const struct config *cfg, unsigned kind)
{
    struct rlimit rl;
    rlim_t files = kind == SERVER_PROC_AUTH ? 4096 : kind == SERVER_PROC_QUEUE ? 16384 : 0;
    /* (login processes and workers keep the limit raised for max_connections) */
    if (files && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > files) {
        rl.rlim_cur = files;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (cfg->process_memory_limit) {
        rl.rlim_cur = rl.rlim_max = (rlim_t)cfg->process_memory_limit;
        if (setrlimit(RLIMIT_DATA, &rl) < 0)
            log_warning("master", "process_memory_limit: %s", strerror(errno));
    }
}

/* Child side of fork: forget the master's things, drop privileges, serve, exit. */
static void master_child_main(struct master *m, unsigned kind, unsigned slot, int sock,
                              int auth_sock)
{
    /* The master's SIGKILL-free death (kill -9) must take us along: no orphans serving. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    close(m->sigfd);
    if (m->status_fd >= 0)
        close(m->status_fd);
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        if (m->children[i].pid && m->children[i].sock >= 0)
            close(m->children[i].sock);
        /* another client's channel end waiting for the next auth process, and the old
         * auth process's tokens, are the master's only: a login process must not inherit
         * them (it could answer for the auth process, or read the tokens) */
        if (m->children[i].pid && m->children[i].has_auth_end)
            close(m->children[i].auth_end);
    }
    if (m->auth_state_fd >= 0)
        close(m->auth_state_fd); /* (an auth process gets it as a message instead) */
    if (kind_has_slot(kind))
        anvil_attach(m->anvil, slot);
    struct server_state *st = m->st;
    master_child_limits(st->cfg, kind);
    if (server_child_privileges(st, kind) < 0) {
        char why[] = "cannot prepare or drop privileges (see the log)";
        (void)channel_send(sock, SERVER_MSG_FAILED, why, sizeof why - 1, -1);
        exit(1);
    }
    int rc = server_serve(st, kind, sock, auth_sock, slot, m->generation);
    close(sock);
    exit(rc);
}

/* Start one child; 0, or -1 (logged). */
static int master_spawn(struct master *m, unsigned kind, unsigned slot)
{
    struct child *c = NULL;
    for (size_t i = 0; i < MASTER_MAX_CHILDREN && !c; i++)
        if (!m->children[i].pid)
            c = &m->children[i];
    if (!c) {
        log_error("master", "cannot start a %s: too many processes", kind_name(kind));
        return -1;
    }
    int sv[2], av[2] = {-1, -1};
    if (channel_pair(sv) < 0) {
        log_error("master", "cannot start a %s: socketpair: %s", kind_name(kind), strerror(errno));
        return -1;
    }
    /* a client of the auth process gets its channel at birth */
    if (kind != SERVER_PROC_AUTH && channel_pair(av) < 0) {
        log_error("master", "cannot start a %s: socketpair: %s", kind_name(kind), strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (kind_has_slot(kind))
        anvil_slot_reset(m->anvil, slot, 0, m->generation, kind);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("master", "cannot start a %s: fork: %s", kind_name(kind), strerror(errno));
        close(sv[0]);
        close(sv[1]);
        if (av[0] >= 0) {
            close(av[0]);
            close(av[1]);
        }
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        if (av[0] >= 0)
            close(av[0]);
        master_child_main(m, kind, slot, sv[1], av[1]);
    }
    close(sv[1]);
    *c = (struct child){.pid = pid,
                        .kind = kind,
                        .slot = slot,
                        .generation = m->generation,
                        .sock = sv[0],
                        .started_ms = util_now_ms()};
    if (av[0] >= 0) {
        close(av[1]);
        if (master_auth_child(m)) {
            master_auth_give(m, av[0], kind);
            close(av[0]);
        } else { /* given to the next auth process at its start (master_auth_reconnect) */
            c->has_auth_end = true;
            c->auth_end = av[0];
        }
    }
    if (kind == SERVER_PROC_AUTH && m->auth_state_fd >= 0) {
        /* the previous auth process's live tokens, before any client channel (the
         * channel keeps the order), so no redemption reaches it before them */
        if (channel_send(c->sock, SERVER_MSG_AUTH_STATE, NULL, 0, m->auth_state_fd) < 0)
            log_error("master", "cannot pass the login tokens to the new auth process: %s",
                      strerror(errno));
        close(m->auth_state_fd);
        m->auth_state_fd = -1;
    }
    if (kind_has_slot(kind))
        anvil_slot_reset(m->anvil, slot, pid, m->generation, kind);
    if (kind == SERVER_PROC_WORKER || kind == SERVER_PROC_LOGIN)
        master_backend_connect(m, c);
    if (kind == SERVER_PROC_AUTH)
        m->auth_files_stamp = master_auth_files_stamp(m->cfg);
    return 0;
}

/* A free anvil slot for a new worker, or ANVIL_SLOTS when none is. */
static unsigned master_free_slot(struct master *m)
{
    for (unsigned s = 0; s < ANVIL_SLOTS; s++)
        if (!master_slot_in_use(m, s) && !m->respawn[s].is_due)
            return s;
    return ANVIL_SLOTS;
}

static void master_send_all(struct master *m, unsigned kind, int except_sock, uint8_t type,
                            const void *payload, size_t len)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (c->pid && c->kind == kind && c->is_ready && c->sock != except_sock)
            (void)channel_send(c->sock, type, payload, len, -1);
    }
}

static void master_signal_all(struct master *m, int sig)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        if (m->children[i].pid)
            kill(m->children[i].pid, sig);
}

/* A graceful stop: every child but the auth process now; the auth process once the others
 * have gone (master_stop_auth_when_alone), so sessions finishing their last commands can
 * still log in or look a user up, and no process logs that its auth channel closed. */
static void master_signal_stop(struct master *m)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        if (m->children[i].pid && m->children[i].kind != SERVER_PROC_AUTH)
            kill(m->children[i].pid, SIGTERM);
}

static void master_stop_auth_when_alone(struct master *m)
{
    struct child *auth = NULL;
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (!c->pid)
            continue;
        if (c->kind != SERVER_PROC_AUTH)
            return;
        auth = c;
    }
    if (auth && !m->is_auth_stopped) {
        m->is_auth_stopped = true;
        kill(auth->pid, SIGTERM);
    }
}

static bool master_all_ready(struct master *m)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        if (m->children[i].pid && !m->children[i].is_ready)
            return false;
    return true;
}

static size_t master_count_children(struct master *m)
{
    size_t n = 0;
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        n += m->children[i].pid != 0;
    return n;
}

/* A message from child c: the core's own, or routed by its type's range. */
static void master_on_msg(struct master *m, struct child *c, struct channel_msg *msg)
{
    if (msg->type == SERVER_MSG_READY) {
        c->is_ready = true;
        if (!m->is_started && master_all_ready(m)) {
            m->is_started = true;
            char line[4096];
            server_listeners_text(m->st, line, sizeof line);
            log_info("master", "daemon started -- listening on %s", line);
        } else if (m->is_started) {
            log_info("master", "process tern/%s pid %d started", kind_name(c->kind), (int)c->pid);
        }
        return;
    }
    if (msg->type == SERVER_MSG_FAILED) {
        char why[256];
        size_t k = 0;
        for (; k + 1 < sizeof why && k < msg->len && msg->payload[k]; k++) {
            unsigned char ch = (unsigned char)msg->payload[k];
            why[k] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch; /* for the log: no controls */
        }
        why[k] = '\0';
        log_error("master", "process tern/%s pid %d could not start: %s", kind_name(c->kind),
                  (int)c->pid, why);
        return;
    }
    if (c->kind == SERVER_PROC_LOGIN)
        return; /* nothing a login process says is passed on */
    if (msg->type >= SERVER_MSG_TO_WORKERS && msg->type < SERVER_MSG_TO_QUEUE)
        master_send_all(m, SERVER_PROC_WORKER, c->sock, msg->type, msg->payload, msg->len);
    else if (msg->type >= SERVER_MSG_TO_QUEUE && msg->type < SERVER_MSG_TO_QUEUE + 16)
        master_send_all(m, SERVER_PROC_QUEUE, c->sock, msg->type, msg->payload, msg->len);
}

static void master_on_child_readable(struct master *m, struct child *c)
{
    for (int i = 0; i < 64 && c->pid; i++) {
        struct channel_msg msg;
        int got = channel_recv(c->sock, &msg);
        if (got <= 0)
            return; /* a closed channel shows as the child's exit (SIGCHLD) */
        if (msg.fd >= 0 && msg.type == SERVER_MSG_AUTH_STATE && c->kind == SERVER_PROC_AUTH) {
            /* the stopping auth process's tokens: kept, unread, for the next one */
            if (m->auth_state_fd >= 0)
                close(m->auth_state_fd);
            m->auth_state_fd = msg.fd;
            continue;
        }
        if (msg.fd >= 0)
            close(msg.fd); /* no other message to the master carries one */
        master_on_msg(m, c, &msg);
    }
}

/* ---- deaths and restarts ------------------------------------------------------------- */

static void master_schedule_respawn(struct master *m, const struct child *c, bool was_short)
{
    struct respawn *r = &m->respawn[respawn_index(c->kind, c->slot)];
    unsigned delay = 0;
    if (was_short) {
        delay = r->delay_ms ? r->delay_ms * 2 : MASTER_BACKOFF_MIN_MS;
        if (delay > MASTER_BACKOFF_MAX_MS)
            delay = MASTER_BACKOFF_MAX_MS;
    }
    r->delay_ms = delay;
    r->is_due = true;
    r->kind = c->kind;
    r->slot = c->slot;
    r->at_ms = util_now_ms() + delay;
    if (delay)
        log_warning("master", "tern/%s keeps dying: next start in %u s", kind_name(c->kind),
                    delay / 1000);
}

static void master_auth_reconnect(struct master *m);

static void master_reap(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct child *c = master_child_by_pid(m, pid);
        if (!c)
            continue;
        /* what it said last (the auth process's tokens) is read before its channel goes */
        master_on_child_readable(m, c);
        struct child dead = *c;
        close(c->sock);
        if (c->has_auth_end)
            close(c->auth_end);
        memset(c, 0, sizeof *c);
        c->sock = -1;
        if (kind_has_slot(dead.kind) && !master_slot_in_use(m, dead.slot))
            anvil_slot_clear(m->anvil, dead.slot);
        bool is_clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (WIFSIGNALED(status))
            log_warning("master", "process tern/%s pid %d killed by signal %d",
                        kind_name(dead.kind), (int)pid, WTERMSIG(status));
        else if (!is_clean)
            log_warning("master", "process tern/%s pid %d exit status %d", kind_name(dead.kind),
                        (int)pid, WEXITSTATUS(status));
        if (m->is_stopping)
            continue;
        if (!m->is_started) {
            /* start-up failed: do not loop restarting a broken configuration */
            log_error("master", "start-up failed: tern/%s did not start", kind_name(dead.kind));
            m->is_stopping = true;
            m->stop_deadline_ms = util_now_ms() + MASTER_KILL_MARGIN_MS;
            master_signal_all(m, SIGTERM);
            continue;
        }
        if (dead.kind == SERVER_PROC_AUTH && m->is_auth_pending && !master_auth_child(m)) {
            /* the old auth process of a reload has exited (its tokens handed over, its
             * failed-login table saved): start the new one */
            m->is_auth_pending = false;
            if (master_spawn(m, SERVER_PROC_AUTH, 0) == 0)
                master_auth_reconnect(m);
            else
                master_schedule_respawn(m, &dead, true);
            continue;
        }
        if (dead.kind == SERVER_PROC_QUEUE && m->is_queue_pending) {
            /* the old queue process of a reload has finished: start the new one */
            m->is_queue_pending = false;
            (void)master_spawn(m, SERVER_PROC_QUEUE, 0);
            continue;
        }
        if (dead.is_draining)
            continue; /* an old generation has finished */
        /* (a worker or login process does not exit 0 on its own: restarted like a crash) */
        bool was_short = util_now_ms() - dead.started_ms < MASTER_SHORT_LIFE_MS;
        master_schedule_respawn(m, &dead, was_short);
    }
}

/* A new auth process: every live client gets a new channel to it. */
static void master_auth_reconnect(struct master *m)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (!c->pid || c->kind == SERVER_PROC_AUTH)
            continue;
        if (c->has_auth_end) { /* born while there was none: its channel is waiting */
            master_auth_give(m, c->auth_end, c->kind);
            close(c->auth_end);
            c->has_auth_end = false;
            continue;
        }
        int av[2];
        if (channel_pair(av) < 0) {
            log_error("master", "socketpair for the auth process: %s", strerror(errno));
            continue;
        }
        if (channel_send(c->sock, SERVER_MSG_AUTH_CHANNEL, NULL, 0, av[1]) == 0)
            master_auth_give(m, av[0], c->kind);
        else if (!master_is_exiting(c, errno))
            log_error("master", "cannot hand tern/%s pid %d its auth channel", kind_name(c->kind),
                      (int)c->pid);
        close(av[0]);
        close(av[1]);
    }
}

/* An old auth process that has not exited by its deadline is killed (its clients wait for
 * the new one meanwhile); the new one starts when it is reaped, without its tokens. */
static void master_auth_pending_check(struct master *m, uint64_t now)
{
    if (!m->is_auth_pending || now < m->auth_pending_deadline_ms)
        return;
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (c->pid && c->kind == SERVER_PROC_AUTH && c->is_draining) {
            log_warning("master", "reload: tern/auth pid %d has not stopped: killed",
                        (int)c->pid);
            kill(c->pid, SIGKILL);
        }
    }
    m->auth_pending_deadline_ms = now + 1000000; /* only the reaping is left */
}

static void master_respawn_due(struct master *m)
{
    uint64_t now = util_now_ms();
    for (unsigned i = 0; i <= MASTER_RESPAWN_AUTH; i++) {
        struct respawn *r = &m->respawn[i];
        if (!r->is_due || r->at_ms > now)
            continue;
        r->is_due = false;
        if (master_spawn(m, r->kind, r->slot) < 0) {
            r->is_due = true; /* try again in a second */
            r->at_ms = now + MASTER_BACKOFF_MIN_MS;
        } else if (r->kind == SERVER_PROC_AUTH) {
            master_auth_reconnect(m);
        }
    }
}

/* A child that has lived long enough forgets its back-off. */
static void master_forget_backoff(struct master *m)
{
    uint64_t now = util_now_ms();
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (!c->pid || now - c->started_ms < MASTER_SHORT_LIFE_MS)
            continue;
        m->respawn[respawn_index(c->kind, c->slot)].delay_ms = 0;
    }
}

/* ---- reload (SIGHUP) ----------------------------------------------------------------- */

static unsigned master_workers_wanted(const struct config *cfg)
{
    unsigned n = cfg->worker_processes;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    return n > MASTER_MAX_WORKERS ? MASTER_MAX_WORKERS : n;
}

static unsigned master_logins_wanted(const struct config *cfg)
{
    unsigned n = cfg->login_processes ? cfg->login_processes : master_workers_wanted(cfg);
    return n > MASTER_MAX_WORKERS ? MASTER_MAX_WORKERS : n;
}

/* Start n processes of kind (workers or login processes) in free slots; false when not
 * all could start. */
static bool master_spawn_slotted(struct master *m, unsigned kind, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        unsigned slot = master_free_slot(m);
        if (slot == ANVIL_SLOTS || master_spawn(m, kind, slot) < 0)
            return false;
    }
    return true;
}

/* Replace the login processes (the certificate changed: chrooted, they cannot read it;
 * new ones get it at fork). The old ones finish their sessions and relays. */
static void master_replace_logins(struct master *m)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (c->pid && c->kind == SERVER_PROC_LOGIN && !c->is_draining)
            master_drain(m, c);
    }
    for (unsigned s = 0; s < ANVIL_SLOTS; s++)
        if (m->respawn[s].is_due && m->respawn[s].kind == SERVER_PROC_LOGIN)
            m->respawn[s].is_due = false;
    if (!master_spawn_slotted(m, SERVER_PROC_LOGIN, m->n_logins))
        log_error("master", "reload: could not start every login process");
}

/* Pass a signal on to the processes of the kinds given. */
static void master_signal_kinds(struct master *m, unsigned kinds, int sig)
{
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        if (m->children[i].pid && (m->children[i].kind & kinds))
            kill(m->children[i].pid, sig);
}

static void master_reload(struct master *m)
{
    char *err = NULL;
    if (tls_context_reload(&err) == 0) {
        log_info("master", "reload: TLS certificate reloaded");
    } else {
        log_error("master", "reload: TLS certificate not reloaded: %s", err ? err : "unknown");
        free(err);
        err = NULL;
    }
    const struct server_hooks *hooks = m->st->srv.hooks;
    struct config *cfg = hooks->reload ? hooks->reload(&err) : NULL;
    if (!cfg) {
        if (hooks->reload) {
            log_error("master", "reload: configuration not reloaded: %s", err ? err : "unknown");
            free(err);
        }
        /* the certificate only: the workers and the queue process re-read it in place,
         * the login processes are replaced */
        master_signal_kinds(m, SERVER_PROC_WORKER | SERVER_PROC_QUEUE, SIGHUP);
        master_replace_logins(m);
        return;
    }
    /* A generation still draining from an earlier reload is told to stop now, so two
     * generations at most share the anvil's slots. */
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (c->pid && c->is_draining)
            kill(c->pid, SIGTERM);
    }
    /* New listening sockets for the new configuration: the master's copies of the old
     * ones close (the old workers keep theirs until they exit). Addresses in both keep
     * their socket, so no connection waiting in the backlog is lost. */
    struct server_state *st = m->st;
    struct listener old[SERVER_MAX_LISTENERS];
    size_t n_old = st->n_listeners;
    memcpy(old, st->listeners, sizeof old);
    st->n_listeners = 0;
    memset(st->listeners, 0, sizeof st->listeners);
    st->cfg = cfg;
    st->srv.ctx.cfg = cfg;
    /* reuse: bind_all binds what the new config lists; a listener already open for the
     * same role and address is taken over instead of bound again (EADDRINUSE otherwise) */
    st->reuse = old;
    st->n_reuse = n_old;
    bool is_bound = server_bind_all(st, cfg) == 0;
    st->reuse = NULL;
    st->n_reuse = 0;
    if (!is_bound) {
        log_error("master", "reload: cannot bind the new listeners; keeping the old "
                            "configuration");
        /* give the taken-over sockets back to the old set, close the newly bound ones */
        for (size_t i = 0; i < st->n_listeners; i++) {
            struct listener *l = &st->listeners[i];
            for (size_t k = 0; l->is_reused && k < n_old; k++)
                if (old[k].fd < 0 && old[k].role == l->role && strcmp(old[k].name, l->name) == 0) {
                    old[k].fd = l->fd;
                    l->fd = -1;
                }
            if (l->fd >= 0)
                close(l->fd);
        }
        memcpy(st->listeners, old, sizeof old);
        st->n_listeners = n_old;
        st->cfg = m->cfg;
        st->srv.ctx.cfg = m->cfg;
        config_free(cfg);
        master_signal_kinds(m, SERVER_PROC_WORKER | SERVER_PROC_QUEUE, SIGHUP);
        master_replace_logins(m);
        return;
    }
    for (size_t i = 0; i < n_old; i++)
        if (old[i].fd >= 0)
            close(old[i].fd); /* not taken over: the new config dropped it */
    /* The auth process stays when nothing it reads changed (a renewed certificate, a
     * reload without edits): logins and lookups in flight go on undisturbed, and its
     * one-time tokens stay valid for the sessions being handed over right now. A new
     * one would fail those calls (temporarily) at the switch. */
    bool is_auth_kept = master_auth_child(m) && config_is_same(m->cfg, cfg) &&
                        master_auth_files_stamp(cfg) == m->auth_files_stamp;
    if (m->owned_cfg)
        config_free(m->owned_cfg); /* the children have their own copies (fork) */
    m->owned_cfg = cfg;
    m->cfg = cfg;
    m->generation++;
    /* tls.cert, tls.key or tls.sni_certs may name other files now (an MTA-STS
     * certificate added): the new generation forks with them; a failure keeps the
     * context loaded above */
    if (tls_context_init(cfg->tls_cert, cfg->tls_key, cfg->hostname, cfg->tls_sni_certs.items,
                         cfg->tls_sni_certs.n, &err) < 0) {
        log_error("master", "reload: TLS certificates of the new configuration not loaded: %s",
                  err ? err : "unknown");
        free(err);
        err = NULL;
    }
    /* the old workers and login processes finish their sessions; the queue process is
     * replaced (two runners must never deliver the same message) */
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (!c->pid)
            continue;
        if (kind_has_slot(c->kind)) {
            master_drain(m, c);
        } else if (c->kind == SERVER_PROC_QUEUE) {
            c->is_draining = true;
            m->is_queue_pending = true;
            kill(c->pid, SIGTERM);
        } else if (!is_auth_kept) {
            /* the directory settings may have changed: a new auth process, started when
             * this one has exited (master_reap), so that it takes over this one's
             * one-time tokens and last saved failed-login table; every live process (old
             * generation too) is connected to it then */
            if (!c->is_draining)
                m->auth_pending_deadline_ms = util_now_ms() +
                                              (uint64_t)m->cfg->shutdown_timeout * 1000 +
                                              MASTER_KILL_MARGIN_MS;
            c->is_draining = true;
            m->is_auth_pending = true;
            kill(c->pid, SIGTERM);
        } else {
            c->generation = m->generation; /* it serves the new generation as it is */
        }
    }
    if (!is_auth_kept && !m->is_auth_pending && !m->respawn[MASTER_RESPAWN_AUTH].is_due &&
        master_spawn(m, SERVER_PROC_AUTH, 0) == 0)
        master_auth_reconnect(m); /* there was none (it had died): at once */
    for (unsigned s = 0; s < ANVIL_SLOTS; s++)
        m->respawn[s].is_due = false; /* old-generation processes are not restarted */
    m->n_workers = master_workers_wanted(cfg);
    m->n_logins = master_logins_wanted(cfg);
    /* the workers first: each new login process connects to the new workers */
    if (!master_spawn_slotted(m, SERVER_PROC_WORKER, m->n_workers))
        log_error("master", "reload: could not start every worker");
    if (!master_spawn_slotted(m, SERVER_PROC_LOGIN, m->n_logins))
        log_error("master", "reload: could not start every login process");
    if (!m->is_queue_pending)
        (void)master_spawn(m, SERVER_PROC_QUEUE, 0);
    log_info("master", "reload: configuration reloaded, generation %u", m->generation);
}

/* ---- `tern status` ------------------------------------------------------------------- */

/* The value of "Key:" in /proc/<pid>/status, in kB or as given; 0 when unknown. */
static unsigned long master_proc_field(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long v = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0) {
            v = strtoul(line + kl, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Open descriptors of a process. */
static unsigned long master_proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    unsigned long n = 0;
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 10000000)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static unsigned long master_count_dir(const char *dir, const char *sub)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    unsigned long n = 0;
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 10000000)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void master_status_text(struct master *m, char *out, size_t size)
{
    static const char *const roles[ANVIL_ROLES] = {"smtp", "submission", "submissions", "pop3",
                                                    "pop3s", "imap", "imaps", "lmtp",
                                                    "mta-sts"};
    size_t n = 0;
#define OUT(...)                                                                                   \
    do {                                                                                           \
        if (n < size) {                                                                            \
            int w_ = snprintf(out + n, size - n, __VA_ARGS__);                                     \
            n += w_ > 0 ? (size_t)w_ : 0;                                                          \
        }                                                                                          \
    } while (0)
    uint64_t now = util_now_ms();
    OUT("master: pid %d, uptime %llu s, generation %u, processes %zu\n", (int)getpid(),
        (unsigned long long)((now - m->start_ms) / 1000), m->generation,
        master_count_children(m));
    char qdir[4200];
    snprintf(qdir, sizeof qdir, "%s/queue", m->cfg->data_dir);
    unsigned long q_inc = master_count_dir(qdir, "incoming"), q_act = master_count_dir(qdir, "active"),
                  q_def = master_count_dir(qdir, "deferred"), q_hold = master_count_dir(qdir, "hold");
    OUT("spool: %lu messages (incoming %lu, active %lu, deferred %lu, hold %lu)\n",
        q_inc + q_act + q_def + q_hold, q_inc, q_act, q_def, q_hold);
    uint32_t total = 0;
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        struct child *c = &m->children[i];
        if (!c->pid)
            continue;
        unsigned long rss = master_proc_field(c->pid, "VmRSS:");
        unsigned long threads = master_proc_field(c->pid, "Threads:");
        unsigned long fds = master_proc_fds(c->pid);
        OUT("%s: pid %d, generation %u%s, up %llu s, rss %lu kB, threads %lu, fds %lu",
            kind_name(c->kind), (int)c->pid, c->generation, c->is_draining ? " (draining)" : "",
            (unsigned long long)((now - c->started_ms) / 1000), rss, threads, fds);
        if (kind_has_slot(c->kind)) {
            /* a connection counts where its socket is: a login process (before login,
             * SMTP, and the TLS sessions it relays) or the worker a plain session was
             * handed to; a worker's sessions include the relayed ones */
            struct anvil_slot_info si;
            anvil_slot_info(m->anvil, c->slot, &si);
            total += si.conns;
            OUT(", connections %u (", si.conns);
            for (int r = 0; r < ANVIL_ROLES; r++)
                OUT("%s%s %u", r ? ", " : "", roles[r], si.by_role[r]);
            if (c->kind == SERVER_PROC_WORKER)
                OUT("), sessions %u", si.sessions);
            else
                OUT("), accepted %llu", (unsigned long long)si.accepted);
            OUT(", heap %llu kB", (unsigned long long)(si.heap_bytes / 1024));
        }
        OUT("\n");
    }
    OUT("total: connections %u, max_connections %u\n", total, m->cfg->max_connections);
#undef OUT
}

static int master_status_open(struct master *m)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/run", m->cfg->data_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -1;
    snprintf(m->status_path, sizeof m->status_path, "%s/master.sock", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(m->status_path) >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, m->status_path, strlen(m->status_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    unlink(m->status_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 8) < 0) {
        close(fd);
        return -1;
    }
    chmod(m->status_path, 0600); /* the master's user only: root, or the one running it */
    return fd;
}

/* A `tern status` client: it sends "status\n"; it gets the text and the close. */
static void master_status_serve(struct master *m)
{
    int fd = accept4(m->status_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char req[64];
    ssize_t r = recv(fd, req, sizeof req - 1, 0);
    if (r > 0) {
        req[r] = '\0';
        if (strncmp(req, "status", 6) == 0) {
            char text[16384];
            master_status_text(m, text, sizeof text);
            (void)util_write_all(fd, text, strlen(text));
        }
    }
    close(fd);
}

/* ---- the loop ------------------------------------------------------------------------ */

static void master_on_signal(struct master *m)
{
    struct signalfd_siginfo si;
    while (read(m->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            master_reap(m);
            break;
        case SIGHUP:
            if (!m->is_stopping && m->is_started)
                master_reload(m);
            break;
        case SIGTERM:
        case SIGINT:
            if (!m->is_stopping) {
                log_info("master", "terminating on signal %d", (int)si.ssi_signo);
                m->is_stopping = true;
                m->stop_deadline_ms =
                    util_now_ms() + (uint64_t)m->cfg->shutdown_timeout * 1000 + MASTER_KILL_MARGIN_MS;
                master_signal_stop(m);
            }
            break;
        default:
            break;
        }
    }
}

int master_run(struct server_state *st)
{
    struct master *m = calloc(1, sizeof *m);
    if (!m) {
        log_error("master", "out of memory");
        return 1;
    }
    m->st = st;
    m->cfg = st->cfg;
    m->sigfd = -1;
    m->status_fd = -1;
    m->auth_state_fd = -1;
    m->start_ms = util_now_ms();
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++)
        m->children[i].sock = -1;
    int rc = 1;
    m->anvil = anvil_create();
    if (!m->anvil) {
        log_error("master", "cannot create the shared counters: %s", strerror(errno));
        goto out;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    m->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sigfd < 0) {
        log_error("master", "signalfd: %s", strerror(errno));
        goto out;
    }
    m->status_fd = master_status_open(m);
    if (m->status_fd < 0)
        log_warning("master", "no status socket in %s/run: `tern status` will not answer",
                    m->cfg->data_dir);
    m->n_workers = master_workers_wanted(m->cfg);
    m->n_logins = master_logins_wanted(m->cfg);
    /* the auth process first: every other child gets a channel to it at birth; then the
     * workers, so each login process is connected to them at its birth */
    if (master_spawn(m, SERVER_PROC_AUTH, 0) < 0 || master_spawn(m, SERVER_PROC_QUEUE, 0) < 0 ||
        !master_spawn_slotted(m, SERVER_PROC_WORKER, m->n_workers) ||
        !master_spawn_slotted(m, SERVER_PROC_LOGIN, m->n_logins))
        goto out_stop;
    log_debug("master", "started %u workers, %u login processes, the auth and queue processes",
              m->n_workers, m->n_logins);

    for (;;) {
        if (m->is_stopping && master_count_children(m) == 0)
            break;
        if (m->is_stopping)
            master_stop_auth_when_alone(m);
        uint64_t now = util_now_ms();
        if (m->is_stopping && now >= m->stop_deadline_ms) {
            log_warning("master", "stop: %zu processes still running: killed",
                        master_count_children(m));
            master_signal_all(m, SIGKILL);
            m->stop_deadline_ms = now + 1000000; /* only reaping is left */
        }
        if (!m->is_started && now - m->start_ms > MASTER_START_SECONDS * 1000 && !m->is_stopping) {
            log_error("master", "start-up failed: processes not ready after %d s",
                      MASTER_START_SECONDS);
            m->is_stopping = true;
            m->stop_deadline_ms = now + MASTER_KILL_MARGIN_MS;
            master_signal_all(m, SIGTERM);
        }
        if (!m->is_stopping) {
            master_respawn_due(m);
            master_forget_backoff(m);
            master_auth_pending_check(m, now);
        }
        struct pollfd pfd[MASTER_MAX_CHILDREN + 2];
        struct child *who[MASTER_MAX_CHILDREN + 2];
        nfds_t n = 0;
        pfd[n] = (struct pollfd){.fd = m->sigfd, .events = POLLIN};
        who[n++] = NULL;
        if (m->status_fd >= 0) {
            pfd[n] = (struct pollfd){.fd = m->status_fd, .events = POLLIN};
            who[n++] = NULL;
        }
        for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
            if (!m->children[i].pid)
                continue;
            pfd[n] = (struct pollfd){.fd = m->children[i].sock, .events = POLLIN};
            who[n++] = &m->children[i];
        }
        int r = poll(pfd, n, 200);
        if (r < 0 && errno != EINTR) {
            log_error("master", "poll: %s", strerror(errno));
            break;
        }
        for (nfds_t i = 0; r > 0 && i < n; i++) {
            if (!pfd[i].revents)
                continue;
            if (pfd[i].fd == m->sigfd)
                master_on_signal(m);
            else if (pfd[i].fd == m->status_fd)
                master_status_serve(m);
            else if (who[i] && who[i]->pid && who[i]->sock == pfd[i].fd)
                master_on_child_readable(m, who[i]);
        }
    }
    rc = m->is_started ? 0 : 1;
    if (rc == 0)
        log_info("master", "stopped");
    goto out;
out_stop:
    master_signal_all(m, SIGTERM);
    while (waitpid(-1, NULL, 0) > 0)
        ;
out:
    if (m->sigfd >= 0)
        close(m->sigfd);
    if (m->status_fd >= 0) {
        close(m->status_fd);
        unlink(m->status_path);
    }
    for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
        if (m->children[i].sock >= 0)
            close(m->children[i].sock);
        if (m->children[i].pid && m->children[i].has_auth_end)
            close(m->children[i].auth_end);
    }
    if (m->auth_state_fd >= 0)
        close(m->auth_state_fd);
    if (m->owned_cfg)
        config_free(m->owned_cfg);
    st->cfg = NULL;
    free(m);
    return rc;
}
