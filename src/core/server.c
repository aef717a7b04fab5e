/*
 * server.c - server_run(): the master's start-up and the event loop (see conn.h).
 *
 * Start-up order, each step before the next so that a failure stops us early and
 * clearly: data_dir created (and given to run_user), TLS context (certificate generated
 * on first start), every listener bound, privileges dropped, workpool, hooks->init,
 * listeners enabled, then the readiness line "daemon started -- listening on ...".
 *
 * Admission: max_connections in total and max_connections_per_ip per client address.
 * Over a limit the socket is accepted and closed at once without a protocol reply (the
 * same for every protocol), and one warning is logged.
 *
 * Signals through libevent: SIGTERM/SIGINT stop within shutdown_timeout (server_shutdown:
 * listeners closed, no new command taken, commands running finish and answer, farewells,
 * connections flushed and closed, then the pools and hooks->fini, each bounded by the
 * same deadline), SIGHUP reloads the certificate, SIGPIPE is ignored.
 */
#include "core/config.h"
#include "core/anvil.h"
#include "core/backend.h"
#include "core/channel.h"
#include "core/server_internal.h"
#include "core/job.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/util.h"
#include "core/workpool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>

/* Bursts of connects (benchmarks, 10,000 IDLE clients reconnecting) must not overflow the
 * accept queue; the kernel caps this at net.core.somaxconn. */
#define SERVER_LISTEN_BACKLOG 4096

/* Descriptors we ask for when started as root (see server_run). */
#define SERVER_NOFILE_WANTED ((rlim_t)131072)
#define SERVER_CLOSE_BATCH   256 /* connections said goodbye to per loop pass at shutdown */

static const char *const role_names[CONN_ROLE_COUNT] = {
    "smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps", "lmtp", "mta-sts",
};

/* ---- accepting ------------------------------------------------------------------------ */

void server_conn_released(struct server *srv, const char *ip, enum conn_role role)
{
    (void)srv;
    anvil_release(ip, (unsigned)role);
}

void server_conn_adopted(struct server *srv, const char *ip, enum conn_role role, bool is_counted)
{
    (void)srv;
    const char *why;
    if (is_counted) /* the limits were applied where it was accepted */
        (void)anvil_admit(ip, (unsigned)role, 0, 0, &why);
    anvil_session_add();
}

void server_session_released(struct server *srv)
{
    (void)srv;
    anvil_session_release();
}

static bool role_is_implicit_tls(enum conn_role role)
{
    return role == CONN_ROLE_SUBMISSIONS || role == CONN_ROLE_POP3S || role == CONN_ROLE_IMAPS ||
           role == CONN_ROLE_MTA_STS;
}

static void peer_ip_text(const struct sockaddr *sa, char *out, size_t size)
{
    snprintf(out, size, "unknown");
    if (sa->sa_family == AF_UNIX) {
        snprintf(out, size, "local");
    } else if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)size);
        else
            inet_ntop(AF_INET6, a, out, (socklen_t)size);
    }
}

/* Every worker watches the same listening sockets and the kernel wakes them all; the
 * one that wakes first takes the connection, so at light load one worker would get them
 * all (10,000 idle IMAP clients in one process, the other cores idle). A worker that
 * holds more than SERVER_BALANCE_SLACK connections above the least loaded worker of its
 * generation stops accepting for SERVER_BALANCE_PAUSE_MS, and the others take the next
 * ones (nginx's accept_disabled, with the counts of every worker from anvil.h). The pause
 * is short and always ends: a worker that stopped serving cannot starve the others. */
#define SERVER_BALANCE_SLACK    2
#define SERVER_BALANCE_PAUSE_MS 10

static void server_on_balance_timer(evutil_socket_t fd, short what, void *arg)
{
    struct server_state *st = arg;
    st->is_accept_paused = false;
    if (st->srv.is_stopping || st->is_draining)
        return;
    for (size_t i = 0; i < st->n_listeners; i++)
        if (st->listeners[i].evl)
            evconnlistener_enable(st->listeners[i].evl);
}

/* How often a process publishes its live heap for `tern status` (anvil.h). */
#define SERVER_HEAP_PUBLISH_S 5

/* The live heap (glibc's mallinfo2: bytes handed out by malloc in every arena, plus
 * its own mmaps) into this process's slot: with the RSS `tern status` shows, it tells a
 * growing cache or a leak (live bytes grow) from pages malloc keeps for reuse. */
static void server_on_heap_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct mallinfo2 mi = mallinfo2();
    anvil_heap_set((uint64_t)mi.uordblks + (uint64_t)mi.hblkhd);
}

static void server_accept_balance(struct server_state *st)
{
    uint32_t mine, fewest;
    anvil_balance(&mine, &fewest);
    if (st->is_accept_paused || fewest == UINT32_MAX || mine <= fewest + SERVER_BALANCE_SLACK)
        return;
    if (!st->balance_timer &&
        !(st->balance_timer = evtimer_new(st->srv.ctx.base, server_on_balance_timer, st)))
        return;
    for (size_t i = 0; i < st->n_listeners; i++)
        if (st->listeners[i].evl)
            evconnlistener_disable(st->listeners[i].evl);
    st->is_accept_paused = true;
    struct timeval tv = {.tv_usec = SERVER_BALANCE_PAUSE_MS * 1000};
    evtimer_add(st->balance_timer, &tv);
}

static void server_on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg)
{
    struct listener *l = arg;
    struct server_state *st = l->st;
    const struct config *cfg = st->srv.ctx.cfg;
    const struct conn_protocol *proto = st->srv.hooks->protocols[l->role];
    char ip[INET6_ADDRSTRLEN];
    peer_ip_text(sa, ip, sizeof ip);
    if (st->srv.is_stopping || st->is_draining || !proto) {
        close(fd);
        return;
    }
    /* Limits over every worker process (anvil.h): over one, the socket is closed at once
     * without a protocol reply (the same for every protocol) and one warning logged. */
    const char *why = NULL;
    if (!anvil_admit(ip, (unsigned)l->role, cfg->max_connections, cfg->max_connections_per_ip,
                     &why)) {
        if (strcmp(why, "total") == 0)
            log_warning(proto->log_name, "too many connections in total (%u): dropped %s",
                        cfg->max_connections, ip);
        else
            log_warning(proto->log_name, "too many connections from %s", ip);
        close(fd);
        return;
    }
    /* A reply is often written in pieces (untagged lines, then the tagged one): without
     * TCP_NODELAY, Nagle holds the last piece until the client's delayed ACK (40 ms a
     * command for a pipelining IMAP client). Dovecot and Postfix set it too. */
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (!conn_accept(&st->srv, l->role, proto, fd, sa, (socklen_t)salen,
                     role_is_implicit_tls(l->role)))
        server_conn_released(&st->srv, ip, l->role);
    server_accept_balance(st);
}

static void server_on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    if (l->evl)
        evconnlistener_enable(l->evl);
}

static void server_on_accept_error(struct evconnlistener *evl, void *arg)
{
    struct listener *l = arg;
    int e = EVUTIL_SOCKET_ERROR();
    /* EMFILE/ENFILE: out of descriptors. The pending connection stays readable, so
     * accepting again at once would spin; pause this listener for a second. */
    log_warning("master", "accept on %s: %s", l->name, evutil_socket_error_to_string(e));
    if (!l->resume)
        l->resume = evtimer_new(evconnlistener_get_base(evl), server_on_accept_resume, l);
    if (l->resume) {
        struct timeval tv = {.tv_sec = 1};
        evconnlistener_disable(evl);
        evtimer_add(l->resume, &tv);
    }
}

/* ---- binding -------------------------------------------------------------------------- */

static int server_bind_one(struct server_state *st, enum conn_role role, int family,
                           const char *host, unsigned port, bool is_optional)
{
    if (st->n_listeners >= SERVER_MAX_LISTENERS) {
        log_error("master", "too many listen addresses (max %d)", SERVER_MAX_LISTENERS);
        return -1;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        s->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)port);
        if (strcmp(host, "*") == 0)
            s->sin_addr.s_addr = htonl(INADDR_ANY);
        else if (inet_pton(AF_INET, host, &s->sin_addr) != 1)
            return -1;
        len = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons((uint16_t)port);
        if (strcmp(host, "*") == 0)
            s->sin6_addr = in6addr_any;
        else if (inet_pton(AF_INET6, host, &s->sin6_addr) != 1)
            return -1;
        len = sizeof *s;
    }
    struct listener *l = &st->listeners[st->n_listeners];
    if (family == AF_INET6)
        snprintf(l->name, sizeof l->name, "[%s]:%u", strcmp(host, "*") ? host : "::", port);
    else
        snprintf(l->name, sizeof l->name, "%s:%u", strcmp(host, "*") ? host : "0.0.0.0", port);
    for (size_t i = 0; i < st->n_reuse; i++) {
        struct listener *old = &st->reuse[i];
        if (old->fd >= 0 && old->role == role && strcmp(old->name, l->name) == 0) {
            /* a reload keeps the socket: connections in its backlog are not lost */
            l->st = st;
            l->role = role;
            l->fd = old->fd;
            l->is_reused = true;
            old->fd = -1;
            st->n_listeners++;
            return 0;
        }
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        if (is_optional)
            return 0;
        log_error("master", "socket for %s: %s", l->name, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) /* "*" binds IPv4 and IPv6 as two sockets */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, SERVER_LISTEN_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        if (is_optional && (e == EADDRNOTAVAIL || e == EAFNOSUPPORT))
            return 0;
        log_error("master", "cannot listen on %s for %s: %s", l->name, role_names[role],
                  strerror(e));
        return -1;
    }
    l->st = st;
    l->role = role;
    l->fd = fd;
    st->n_listeners++;
    return 0;
}

/* Bind a unix socket "unix:<path>" (lmtp.listen), as root before forking: a stale socket
 * file of an earlier run is replaced, anything else at the path is an error; the file
 * gets lmtp.socket_mode and belongs to the run user and lmtp.socket_group. A reload
 * keeps the socket it already has for the same path. */
static int server_bind_unix(struct server_state *st, const struct config *cfg,
                            enum conn_role role, const char *path)
{
    if (st->n_listeners >= SERVER_MAX_LISTENERS) {
        log_error("master", "too many listen addresses (max %d)", SERVER_MAX_LISTENERS);
        return -1;
    }
    struct listener *l = &st->listeners[st->n_listeners];
    snprintf(l->name, sizeof l->name, "unix:%s", path);
    for (size_t i = 0; i < st->n_reuse; i++) {
        struct listener *old = &st->reuse[i];
        if (old->fd >= 0 && old->role == role && strcmp(old->name, l->name) == 0) {
            l->st = st;
            l->role = role;
            l->fd = old->fd;
            l->is_reused = true;
            old->fd = -1;
            st->n_listeners++;
            return 0;
        }
    }
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun.sun_path) {
        log_error("master", "cannot listen on unix:%s for %s: path longer than %zu bytes", path,
                  role_names[role], sizeof sun.sun_path - 1);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    struct stat old_st;
    if (lstat(path, &old_st) == 0) {
        if (!S_ISSOCK(old_st.st_mode)) {
            log_error("master", "cannot listen on unix:%s for %s: a file that is no socket is "
                                "in the way", path, role_names[role]);
            return -1;
        }
        (void)unlink(path); /* left by an earlier run */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    /* the socket is created with no access for anyone until chmod below */
    mode_t old_mask = umask(0777);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sun, sizeof sun);
    umask(old_mask);
    if (rc < 0 || listen(fd, SERVER_LISTEN_BACKLOG) < 0) {
        log_error("master", "cannot listen on unix:%s for %s: %s", path, role_names[role],
                  strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    uid_t uid = st->is_root ? st->pw.pw_uid : (uid_t)-1;
    gid_t gid = st->is_root ? st->pw.pw_gid : (gid_t)-1;
    if (cfg->lmtp_socket_group && cfg->lmtp_socket_group[0]) {
        struct group *gr = getgrnam(cfg->lmtp_socket_group);
        if (!gr) {
            log_error("master", "lmtp.socket_group: no group '%s'", cfg->lmtp_socket_group);
            close(fd);
            return -1;
        }
        gid = gr->gr_gid;
    }
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(path, uid, gid) < 0) {
        log_error("master", "chown unix:%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(path, (mode_t)cfg->lmtp_socket_mode) < 0) {
        log_error("master", "chmod unix:%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    l->st = st;
    l->role = role;
    l->fd = fd;
    st->n_listeners++;
    return 0;
}

/* Bind every "addr:port" (or "unix:<path>") of one role's list. */
static int server_bind_role(struct server_state *st, const struct config *cfg,
                            enum conn_role role, const struct config_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        const char *item = list->items[i];
        if (strncmp(item, "unix:", 5) == 0) {
            if (server_bind_unix(st, cfg, role, item + 5) < 0)
                return -1;
            continue;
        }
        char host[INET6_ADDRSTRLEN + 1];
        const char *colon = strrchr(item, ':');
        if (!colon)
            return -1;
        unsigned port = (unsigned)strtoul(colon + 1, NULL, 10);
        size_t n = (size_t)(colon - item);
        int family = AF_INET;
        const char *h = item;
        if (item[0] == '[' && n >= 2 && item[n - 1] == ']') {
            h = item + 1;
            n -= 2;
            family = AF_INET6;
        }
        if (n >= sizeof host)
            return -1;
        memcpy(host, h, n);
        host[n] = '\0';
        if (strcmp(host, "*") == 0) {
            if (server_bind_one(st, role, AF_INET, "*", port, false) < 0 ||
                server_bind_one(st, role, AF_INET6, "*", port, true) < 0)
                return -1;
        } else if (server_bind_one(st, role, family, host, port, false) < 0) {
            return -1;
        }
    }
    return 0;
}

static const struct config_list *role_list(const struct config *cfg, enum conn_role role)
{
    switch (role) {
    case CONN_ROLE_SMTP:
        return &cfg->smtp_listen;
    case CONN_ROLE_SUBMISSION:
        return &cfg->submission_listen;
    case CONN_ROLE_SUBMISSIONS:
        return &cfg->submissions_listen;
    case CONN_ROLE_POP3:
        return &cfg->pop3_listen;
    case CONN_ROLE_POP3S:
        return &cfg->pop3s_listen;
    case CONN_ROLE_IMAP:
        return &cfg->imap_listen;
    case CONN_ROLE_IMAPS:
        return &cfg->imaps_listen;
    case CONN_ROLE_LMTP:
        return &cfg->lmtp_listen;
    case CONN_ROLE_MTA_STS:
        return &cfg->mta_sts_listen;
    }
    return NULL;
}

/* ---- privileges ----------------------------------------------------------------------- */

/* Give path to the run user (only when we are root). */
static void server_chown(const char *path, const struct passwd *pw)
{
    if (pw && chown(path, pw->pw_uid, pw->pw_gid) < 0 && errno != ENOENT)
        log_warning("master", "chown %s to %s: %s", path, pw->pw_name, strerror(errno));
}

/* data_dir and what sits directly in it (tern.db, tls/, queue/, mail/, log/) belong to
 * the run user: the CLI may have created them as root before the first start. With the
 * processes separated (auth_user set apart), tern.db, penalty.db (the failed-login table)
 * and their WAL files belong to the auth user instead, mode 0600, so no other process can read the password hashes, and the
 * auth user's group may create files in data_dir (SQLite makes tern.db-wal and -shm
 * next to the database) under the sticky bit: it can remove only its own. */
static void server_chown_data_dir(const struct server_state *st, const struct config *cfg)
{
    static const char *const entries[] = {"tls", "queue", "mail", "log"};
    static const char *const db_files[] = {"tern.db",    "tern.db-wal",    "tern.db-shm",
                                           "penalty.db", "penalty.db-wal", "penalty.db-shm"};
    const struct passwd *pw = &st->pw;
    bool is_auth_apart = cfg->master_process && st->pw_auth.pw_uid != pw->pw_uid;
    const struct passwd *db_owner = is_auth_apart ? &st->pw_auth : pw;
    server_chown(cfg->data_dir, pw);
    char path[4096];
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s", cfg->data_dir, entries[i]) < sizeof path)
            server_chown(path, pw);
    }
    for (size_t i = 0; i < sizeof db_files / sizeof db_files[0]; i++) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s", cfg->data_dir, db_files[i]) >= sizeof path)
            continue;
        server_chown(path, db_owner);
        if (is_auth_apart && chmod(path, 0600) < 0 && errno != ENOENT)
            log_warning("master", "chmod %s: %s", path, strerror(errno));
    }
    if (is_auth_apart && cfg->directory_driver == DIRECTORY_SQLITE) {
        struct stat sb;
        if (chown(cfg->data_dir, pw->pw_uid, st->pw_auth.pw_gid) < 0 ||
            stat(cfg->data_dir, &sb) < 0 ||
            chmod(cfg->data_dir, (sb.st_mode & 0777) | S_ISVTX | S_IRWXG) < 0)
            log_warning("master", "cannot open %s to %s's group: %s", cfg->data_dir,
                        st->pw_auth.pw_name, strerror(errno));
    }
    server_chown(cfg->tls_cert, pw);
    server_chown(cfg->tls_key, pw);
}

/* The login processes' root: an empty directory that root owns and no one else may write
 * (created when missing). 0 or -1 (logged). */
static int server_make_login_root(const char *dir)
{
    struct stat sb;
    if (lstat(dir, &sb) < 0) {
        if (errno != ENOENT || util_mkdir_p(dir, 0700) < 0 || chmod(dir, 0555) < 0 ||
            lstat(dir, &sb) < 0) {
            log_error("master", "login_chroot %s: cannot create it: %s", dir, strerror(errno));
            return -1;
        }
    }
    if (!S_ISDIR(sb.st_mode) || sb.st_uid != 0 || (sb.st_mode & 0022)) {
        log_error("master", "login_chroot %s: must be a directory owned by root that nobody "
                            "else may write",
                  dir);
        return -1;
    }
    /* The whole file system as the root: allowed (sanitizer runs need /proc in every
     * process), but then a taken-over login process reads what login_user may read. */
    struct stat root_sb;
    if (stat("/", &root_sb) == 0 && root_sb.st_dev == sb.st_dev && root_sb.st_ino == sb.st_ino)
        log_warning("master", "login_chroot is '/': the login processes are not confined to "
                              "an empty directory (docs/SECURITY.md)");
    return 0;
}

#if defined(__SANITIZE_ADDRESS__)
#define SERVER_HAS_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SERVER_HAS_LSAN 1
#endif
#endif

#ifdef SERVER_HAS_LSAN
/* LeakSanitizer's check at exit reads /proc/<pid>/task: inside a root without /proc it
 * cannot, and aborts the process instead. Such a login process skips the check (sanitizer
 * test runs set login_chroot = / to keep it). */
static volatile int server_is_lsan_off;
int __lsan_is_turned_off(void);

/* Called by the sanitizer runtime before its leak check. */
int __lsan_is_turned_off(void)
{
    return server_is_lsan_off;
}
#endif

/* Enter dir as the root directory, without following a link swapped in meanwhile. */
static int server_enter_chroot(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || sb.st_uid != 0 || (sb.st_mode & 0022) ||
        fchdir(fd) < 0 || chroot(".") < 0 || chdir("/") < 0) {
        log_error("master", "cannot enter login_chroot %s: %s", dir,
                  fd < 0 || errno ? strerror(errno) : "not owned by root, or writable");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
#ifdef SERVER_HAS_LSAN
    server_is_lsan_off = access("/proc/self/task", R_OK) != 0;
#endif
    return 0;
}

/* The entry of user name (for a config key) into pw_r (strings kept in name_buf); 0, or -1
 * logged. */
static int server_lookup_user(const struct config *cfg, const char *key, const char *name,
                              struct passwd *pw_r, char *name_buf, size_t name_size)
{
    struct passwd *pw = name ? getpwnam(name) : NULL;
    if (!pw) {
        log_error("master", "%s '%s' does not exist: create it (useradd --system %s) or set %s "
                            "in %s",
                  key, name ? name : "", name ? name : "", key, cfg->path);
        return -1;
    }
    if (pw->pw_uid == 0) {
        log_error("master", "%s '%s' is root: refusing to serve as root", key, name);
        return -1;
    }
    *pw_r = *pw;
    snprintf(name_buf, name_size, "%s", pw->pw_name);
    pw_r->pw_name = name_buf;
    pw_r->pw_passwd = pw_r->pw_gecos = pw_r->pw_dir = pw_r->pw_shell = NULL;
    return 0;
}

int server_child_privileges(struct server_state *st, unsigned kind)
{
    const struct server_hooks *hooks = st->srv.hooks;
    st->srv.ctx.cfg = st->cfg;
    st->srv.ctx.processes = kind;
    if (hooks->prepare) {
        char *err = NULL;
        if (hooks->prepare(&st->srv.ctx, &err) < 0) {
            log_error("master", "start-up failed: %s", err ? err : "unknown error");
            free(err);
            return -1;
        }
    }
    if (!st->is_root)
        return 0;
    if (kind == SERVER_PROC_AUTH)
        return server_drop_privileges(&st->pw_auth);
    if (kind != SERVER_PROC_LOGIN)
        return server_drop_privileges(&st->pw);
    /* A login process: the clock's zone is read now (no /etc inside), then the empty
     * root, then the user, which may read nothing of ours. */
    tzset();
    if (initgroups(st->pw_login.pw_name, st->pw_login.pw_gid) < 0 ||
        server_enter_chroot(st->cfg->login_chroot) < 0)
        return -1;
    return server_drop_privileges(&st->pw_login);
}

int server_drop_privileges(const struct passwd *pw)
{
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        log_error("master", "cannot drop privileges to %s: %s", pw->pw_name, strerror(errno));
        return -1;
    }
    if (pw->pw_uid != 0 && setuid(0) == 0) {
        log_error("master", "privileges were not dropped (setuid(0) succeeded)");
        return -1;
    }
    /* Libraries look for per-user files under $HOME (libpq: ~/.postgresql/ client
     * certificates); root's home would answer "permission denied" instead of "none".
     * Still one thread here: the workpool starts after this. */
    setenv("HOME", pw->pw_dir && pw->pw_dir[0] ? pw->pw_dir : "/", 1);
    return 0;
}

/* ---- signals and shutdown ------------------------------------------------------------- */

static void server_stop(struct server_state *st, const char *why)
{
    if (st->srv.is_stopping)
        return;
    st->srv.is_stopping = true;
    /* a child names itself (the master's own line comes from master.c) */
    unsigned kind = st->srv.ctx.processes;
    log_info(kind == SERVER_PROC_QUEUE    ? "queue"
             : kind == SERVER_PROC_AUTH   ? "auth"
             : kind == SERVER_PROC_LOGIN  ? "login"
             : kind == SERVER_PROC_WORKER ? "worker"
                                          : "master",
             "terminating on %s", why);
    workpool_expedite(st->srv.ctx.pool); /* no shutdown waits out a failed-login delay */
    for (size_t i = 0; i < st->n_listeners; i++) {
        if (st->listeners[i].evl) {
            evconnlistener_free(st->listeners[i].evl); /* closes the socket */
            st->listeners[i].evl = NULL;
        }
    }
    event_base_loopbreak(st->srv.ctx.base);
}

static void server_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server_state *st = arg;
    if (sig == SIGHUP) {
        char *err = NULL;
        if (tls_context_reload(&err) == 0) {
            log_info("master", "reload: TLS certificate reloaded");
        } else {
            log_error("master", "reload: TLS certificate not reloaded: %s",
                      err ? err : "unknown error");
            free(err);
        }
        return;
    }
    server_stop(st, sig == SIGTERM ? "signal 15" : "signal 2");
}

/* On the way out (the loop and the pools are done): SIGTERM, SIGINT and SIGHUP mean
 * nothing any more. Freeing the libevent signal events puts their default actions back,
 * and the master may send a SIGTERM at any moment (a second reload stops the generation
 * still draining; a stop reaches a child already exiting): it would kill the process in
 * its last milliseconds, a crash in the master's log ("killed by signal 15") and the
 * exit's own work (a sanitizer's leak check) cut off. So they are blocked (is_before)
 * while the events go, and ignored after, which also drops one that came meanwhile. */
static void server_quiet_stop_signals(bool is_before)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    sigset_t stop;
    sigemptyset(&stop);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&stop, sigs[i]);
    if (is_before) {
        pthread_sigmask(SIG_BLOCK, &stop, NULL);
        return;
    }
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        (void)sigaction(sigs[i], &ign, NULL);
    /* (a server started again in this process, as the unit tests do, sets its own
     * handlers; it must not inherit the mask) */
    pthread_sigmask(SIG_UNBLOCK, &stop, NULL);
}

static void server_on_shutdown_timer(evutil_socket_t fd, short what, void *arg)
{
    struct server_state *st = arg;
    event_base_loopbreak(st->srv.ctx.base);
}

/* Run the loop until done(st) or the grace period (armed by the caller) ends. */
static void server_run_until(struct server_state *st, bool (*done)(struct server_state *))
{
    while (!done(st) && evtimer_pending(st->shutdown_timer, NULL) &&
           event_base_loop(st->srv.ctx.base, EVLOOP_ONCE) == 0)
        ;
}

static bool server_jobs_done(struct server_state *st)
{
    /* the sessions' jobs (job.h); the queue runner's own pool is stopped by fini */
    return job_in_flight() == 0;
}

static bool server_conns_done(struct server_state *st)
{
    return st->srv.conns == NULL;
}

/* Run the loop until done(st) or deadline_ms passes. */
static void server_run_until_ms(struct server_state *st, bool (*done)(struct server_state *),
                                uint64_t deadline_ms)
{
    uint64_t now = util_now_ms();
    if (now >= deadline_ms || done(st))
        return;
    uint64_t left = deadline_ms - now;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)(left % 1000) * 1000};
    st->shutdown_timer = evtimer_new(st->srv.ctx.base, server_on_shutdown_timer, st);
    if (!st->shutdown_timer)
        return;
    evtimer_add(st->shutdown_timer, &tv);
    server_run_until(st, done);
    event_free(st->shutdown_timer);
    st->shutdown_timer = NULL;
}

/*
 * After the loop stopped (listeners already closed), within shutdown_timeout in all:
 *   1. sessions take no new command (conn_is_stopping) and the commands already running
 *      finish while the loop still runs, so their replies ("250 queued", "+OK") reach the
 *      client: a message made durable but never acknowledged would be sent again;
 *   2. every connection gets its farewell (on_shutdown), is flushed and closed;
 *   3. what is left is cut off: sessions freed (their queued jobs cancelled, job.h).
 * Phase 1 may use at most half of the time, so that phase 2 always has some.
 */
static void server_shutdown(struct server_state *st)
{
    st->srv.is_stopping = true;
    uint64_t start = util_now_ms();
    uint64_t total = (uint64_t)st->srv.ctx.cfg->shutdown_timeout * 1000;
    st->deadline_ms = start + total;
    server_run_until_ms(st, server_jobs_done, start + total / 2);
    /* In batches, the loop writing each batch out before the next: OpenSSL takes a 17 KB
     * record buffer for a TLS connection's farewell and close_notify and frees it once
     * written, so closing 100,000 TLS sessions at once needed 1.7 GB at one moment. */
    while (conn_close_some(&st->srv, SERVER_CLOSE_BATCH) && util_now_ms() < st->deadline_ms)
        event_base_loop(st->srv.ctx.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    server_run_until_ms(st, server_conns_done, st->deadline_ms);
    if (st->srv.conns)
        log_warning("master", "shutdown: %zu connections still open after %us: closing them",
                    st->srv.n_conns, st->srv.ctx.cfg->shutdown_timeout);
    conn_free_all(&st->srv, "shutdown");
}

/* The deadline passed with work still running on pool threads that use the services and
 * memory a normal exit would free: leave without waiting or freeing. Nothing is lost: a
 * job that has not finished has acknowledged nothing (no 250/OK/+OK went out for it), and
 * a delivery interrupted before its rename leaves only tmp/ debris, cleaned later. */
void server_abandon_exit(const struct server_context *ctx, const char *what)
{
    log_warning("master", "shutdown: %s still running after %us: exiting without them", what,
                ctx->cfg->shutdown_timeout);
    log_info("master", "stopped");
    _exit(0);
}

/* ---- reload: draining an old generation -------------------------------------------------- */

/* A drained worker whose last connection closed ends like a SIGTERM'd one. */
static void server_on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
    struct server_state *st = arg;
    /* a worker also finishes the requests of login processes (deliveries) it took */
    bool is_idle = st->srv.conns == NULL && backend_server_in_flight() == 0 &&
                   job_in_flight() == 0;
    if (is_idle || util_now_ms() >= st->deadline_ms)
        event_base_loopbreak(st->srv.ctx.base);
}

/* SERVER_MSG_DRAIN: a new generation takes new connections; this one stops accepting,
 * keeps its sessions until they end (IMAP IDLE included) and exits then, or after
 * imap.timeout at the latest (then its sessions get the shutdown farewell). */
static void server_drain(struct server_state *st)
{
    if (st->is_draining || st->srv.is_stopping)
        return;
    st->is_draining = true;
    for (size_t i = 0; i < st->n_listeners; i++) {
        if (st->listeners[i].evl) {
            evconnlistener_free(st->listeners[i].evl);
            st->listeners[i].evl = NULL;
        }
    }
    unsigned limit = st->srv.ctx.cfg->imap_timeout ? st->srv.ctx.cfg->imap_timeout : 1800;
    st->deadline_ms = util_now_ms() + (uint64_t)limit * 1000;
    log_info("master", "reload: this generation finishes its %zu sessions and exits",
             st->srv.n_conns);
    st->drain_timer = event_new(st->srv.ctx.base, -1, EV_PERSIST, server_on_drain_timer, st);
    struct timeval tv = {.tv_sec = 1};
    if (st->drain_timer)
        event_add(st->drain_timer, &tv);
    server_on_drain_timer(-1, 0, st);
}

/* ---- messages from the master ----------------------------------------------------------- */

int server_send(const struct server_context *ctx, uint8_t type, const void *payload, size_t len)
{
    if (ctx->channel < 0)
        return -1;
    return channel_send(ctx->channel, type, payload, len, -1);
}

/* A mail worker: a login process hands a logged-in session over (backend.h). */
static void server_on_handoff(struct backend_request *req, void *arg)
{
    struct server_state *st = arg;
    size_t len;
    const char *data = backend_request_data(req, &len);
    int fd = backend_request_take_fd(req);
    if (st->is_draining || st->srv.is_stopping) {
        /* a reload retired this worker after the login process chose it (the message
         * saying so crossed the session on its way): nothing was taken, the login process
         * hands the session to another worker (backend_call) instead of failing it */
        if (fd >= 0)
            close(fd);
        backend_reply(req, BACKEND_RC_NOT_TAKEN, NULL, 0);
        return;
    }
    if (fd >= 0 && conn_socket_is_gone(fd)) {
        /* the client left while the login process checked its login: not a refusal */
        close(fd);
        backend_reply(req, CONN_HANDOFF_CLIENT_GONE, NULL, 0);
        return;
    }
    struct conn_handoff *h = malloc(sizeof *h);
    bool is_adopted = false;
    if (fd >= 0 && h && conn_handoff_decode(data, len, h) && st->srv.hooks->protocols[h->role]) {
        is_adopted = conn_adopt(&st->srv, st->srv.hooks->protocols[h->role], fd, h);
        fd = -1; /* conn_adopt took it */
    }
    if (fd >= 0)
        close(fd);
    if (!is_adopted)
        log_warning("master", "refused a session from login process pid %d (malformed, "
                              "not matching its socket, or out of memory)",
                    (int)backend_request_login_pid(req));
    if (h) {
        explicit_bzero(h, sizeof *h);
        free(h);
    }
    backend_reply(req, is_adopted ? CONN_HANDOFF_ADOPTED : CONN_HANDOFF_REFUSED, NULL, 0);
}

/* The pid a SERVER_MSG_BACKEND_* message names (decimal text), 0 when malformed. */
static pid_t server_msg_pid(const struct channel_msg *m)
{
    char *end;
    long v = strtol(m->payload, &end, 10);
    return *end == '\0' && v > 0 && v < (1L << 30) ? (pid_t)v : 0;
}

static void server_on_master_msg(void *arg, struct channel_msg *m)
{
    struct server_state *st = arg;
    unsigned p = st->srv.ctx.processes;
    if (m->type == SERVER_MSG_DRAIN) {
        server_drain(st);
        return;
    }
    if (m->type == SERVER_MSG_BACKEND_CLIENT && (p & SERVER_PROC_WORKER) && m->fd >= 0) {
        (void)backend_server_add(st->srv.ctx.base, m->fd, server_msg_pid(m));
        m->fd = -1;
        return;
    }
    if (m->type == SERVER_MSG_BACKEND_CHANNEL && (p & SERVER_PROC_LOGIN) && m->fd >= 0) {
        backend_client_add(m->fd, server_msg_pid(m));
        m->fd = -1;
        return;
    }
    if (m->type == SERVER_MSG_BACKEND_RETIRE && (p & SERVER_PROC_LOGIN)) {
        backend_client_retire(server_msg_pid(m));
        return;
    }
    if ((m->type >= SERVER_MSG_TO_WORKERS || m->type == SERVER_MSG_AUTH_CLIENT ||
         m->type == SERVER_MSG_AUTH_CHANNEL || m->type == SERVER_MSG_AUTH_STATE) &&
        st->srv.hooks->on_message)
        st->srv.hooks->on_message(&st->srv.ctx, m);
}

static void server_on_master_gone(void *arg)
{
    /* PR_SET_DEATHSIG normally ends us first; if the master is gone, so are we. */
    struct server_state *st = arg;
    server_stop(st, "the master's exit");
}

/* ---- run ------------------------------------------------------------------------------ */

void server_listeners_text(const struct server_state *st, char *line, size_t size)
{
    size_t n = 0;
    line[0] = '\0';
    for (size_t i = 0; i < st->n_listeners && n < size; i++) {
        int m = snprintf(line + n, size - n, "%s%s=%s", i ? " " : "",
                         role_names[st->listeners[i].role], st->listeners[i].name);
        if (m < 0)
            break;
        n += (size_t)m;
    }
    if (st->n_listeners == 0)
        snprintf(line, size, "(nothing)");
}

int server_bind_all(struct server_state *st, const struct config *cfg)
{
    for (int role = 0; role < CONN_ROLE_COUNT; role++) {
        if (!st->srv.hooks->protocols[role])
            continue;
        if (server_bind_role(st, cfg, (enum conn_role)role,
                             role_list(cfg, (enum conn_role)role)) < 0)
            return -1;
    }
    return 0;
}

void server_close_listeners(struct server_state *st)
{
    for (size_t i = 0; i < st->n_listeners; i++) {
        if (st->listeners[i].evl)
            evconnlistener_free(st->listeners[i].evl);
        else if (st->listeners[i].fd >= 0)
            close(st->listeners[i].fd);
        st->listeners[i].evl = NULL;
        st->listeners[i].fd = -1;
        if (st->listeners[i].resume)
            event_free(st->listeners[i].resume);
        st->listeners[i].resume = NULL;
    }
}

int server_serve(struct server_state *st, unsigned processes, int channel, int auth_channel,
                 unsigned slot, unsigned generation)
{
    const struct config *cfg = st->cfg;
    const struct server_hooks *hooks = st->srv.hooks;
    char *err = NULL;
    bool has_init = false;
    int rc = 1;
    struct event_base *base = event_base_new();
    if (!base) {
        log_error("master", "cannot create the event loop");
        return 1;
    }
    st->srv.ctx.base = base;
    st->srv.ctx.cfg = cfg;
    st->srv.ctx.processes = processes;
    st->srv.ctx.channel = channel;
    st->srv.ctx.auth_channel = auth_channel;
    st->srv.ctx.generation = generation;
    job_loop_thread_set(); /* conn_* and session code assert they run here (job.h) */

    st->srv.ctx.pool = workpool_create(base, cfg->worker_threads);
    if (!st->srv.ctx.pool)
        goto out;
    /* privilege separation: a login process asks the mail workers (backend.h); a mail
     * worker adopts the sessions they hand over */
    bool is_separated = channel >= 0 && processes != SERVER_PROC_ALL;
    if (is_separated && (processes & SERVER_PROC_LOGIN) && backend_client_start() < 0) {
        log_error("master", "cannot start the channels to the mail workers");
        goto out;
    }
    if (is_separated && (processes & SERVER_PROC_WORKER))
        backend_server_handle(BACKEND_MSG_HANDOFF, server_on_handoff, st);
    if (hooks->init && hooks->init(&st->srv.ctx, &err) < 0) {
        log_error("master", "start-up failed: %s", err ? err : "unknown error");
        if (channel >= 0)
            channel_send(channel, SERVER_MSG_FAILED, err ? err : "", err ? strlen(err) : 0, -1);
        goto out;
    }
    has_init = true;

    st->sig_term = evsignal_new(base, SIGTERM, server_on_signal, st);
    st->sig_int = evsignal_new(base, SIGINT, server_on_signal, st);
    st->sig_hup = evsignal_new(base, SIGHUP, server_on_signal, st);
    if (!st->sig_term || !st->sig_int || !st->sig_hup || evsignal_add(st->sig_term, NULL) < 0 ||
        evsignal_add(st->sig_int, NULL) < 0 || evsignal_add(st->sig_hup, NULL) < 0) {
        log_error("master", "cannot install signal handlers");
        goto out;
    }
    if (channel >= 0) {
        st->master_reader =
            channel_reader_new(base, channel, server_on_master_msg, server_on_master_gone, st);
        if (!st->master_reader) {
            log_error("master", "cannot watch the master's channel");
            goto out;
        }
    }
    for (size_t i = 0; i < st->n_listeners; i++) {
        struct listener *l = &st->listeners[i];
        if (!(processes & SERVER_PROC_LOGIN)) {
            close(l->fd); /* not ours to accept on: the login processes accept */
            l->fd = -1;
            continue;
        }
        l->st = st;
        l->evl = evconnlistener_new(base, server_on_accept, l,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, l->fd);
        if (!l->evl) {
            log_error("master", "cannot watch listener %s", l->name);
            goto out;
        }
        l->fd = -1; /* owned by the evconnlistener now (backlog 0: listen() was called) */
        evconnlistener_set_error_cb(l->evl, server_on_accept_error);
    }
    (void)slot;
    st->heap_timer = event_new(base, -1, EV_PERSIST, server_on_heap_timer, st);
    if (st->heap_timer) {
        struct timeval every = {.tv_sec = SERVER_HEAP_PUBLISH_S};
        event_add(st->heap_timer, &every);
        server_on_heap_timer(-1, 0, st);
    }
    if (channel >= 0) {
        channel_send(channel, SERVER_MSG_READY, NULL, 0, -1);
    } else {
        char line[4096];
        server_listeners_text(st, line, sizeof line);
        log_info("master", "daemon started -- listening on %s", line);
    }
    event_base_dispatch(base);
    server_shutdown(st);
    rc = 0;
out:
    free(err);
    conn_free_all(&st->srv, "shutdown");
    /* The sessions are gone (their queued jobs cancelled): wait for the jobs still
     * running, but not past the deadline. Before fini, which closes the services those
     * jobs use. */
    if (!st->deadline_ms || st->is_draining)
        st->deadline_ms = util_now_ms() + (uint64_t)cfg->shutdown_timeout * 1000;
    st->srv.ctx.shutdown_deadline_ms = st->deadline_ms;
    /* calls to the mail workers still waiting fail now rather than at their timeout */
    backend_client_stop();
    backend_server_stop();
    if (st->srv.ctx.pool && !workpool_destroy_by(st->srv.ctx.pool, st->deadline_ms))
        server_abandon_exit(&st->srv.ctx, "blocking jobs");
    st->srv.ctx.pool = NULL;
    if (has_init && hooks->fini)
        hooks->fini(&st->srv.ctx);
    server_close_listeners(st);
    channel_reader_free(st->master_reader);
    st->master_reader = NULL;
    if (st->drain_timer)
        event_free(st->drain_timer);
    if (st->balance_timer)
        event_free(st->balance_timer);
    st->balance_timer = NULL;
    if (st->heap_timer)
        event_free(st->heap_timer);
    st->heap_timer = NULL;
    server_quiet_stop_signals(true);
    if (st->sig_term)
        event_free(st->sig_term);
    if (st->sig_int)
        event_free(st->sig_int);
    if (st->sig_hup)
        event_free(st->sig_hup);
    st->drain_timer = st->sig_term = st->sig_int = st->sig_hup = NULL;
    server_quiet_stop_signals(false);
    event_base_free(base);
    return rc;
}

/* Raise the descriptor limit (as root: the hard one too) and warn when max_connections
 * cannot be reached with it. */
static void server_raise_nofile(const struct config *cfg)
{
    /* A logged-in IMAP/POP3 session holds its socket plus the user's index (SQLite db,
     * WAL, shm): 10,000 IDLE clients need ~30,000+ descriptors. Raise the soft limit to
     * the hard one; as root (before dropping privileges) raise the hard limit too, up to
     * SERVER_NOFILE_WANTED but never past the kernel's fs.nr_open. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (geteuid() == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max < SERVER_NOFILE_WANTED) {
        rlim_t wanted = SERVER_NOFILE_WANTED;
        FILE *f = fopen("/proc/sys/fs/nr_open", "r");
        unsigned long long nr_open = 0;
        if (f) {
            if (fscanf(f, "%llu", &nr_open) == 1 && nr_open > 0 && nr_open < wanted)
                wanted = (rlim_t)nr_open;
            fclose(f);
        }
        struct rlimit raised = {.rlim_cur = wanted, .rlim_max = wanted};
        if (wanted > rl.rlim_max && setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* One descriptor per connection, plus about a thousand for the rest (pooled index
     * connections: up to 512; listeners, logs, the queue, messages being read): say
     * at start-up when max_connections cannot be reached, rather than meeting
     * "Too many open files" under load. */
    uint64_t need = (uint64_t)cfg->max_connections + 1024;
    if (rl.rlim_cur != RLIM_INFINITY && cfg->max_connections != 0 && need > rl.rlim_cur)
        log_warning("master",
                    "open files limit is %llu: max_connections = %u needs about %llu "
                    "(raise LimitNOFILE= / ulimit -n, or lower max_connections)",
                    (unsigned long long)rl.rlim_cur, cfg->max_connections,
                    (unsigned long long)need);
}

int server_run(const struct config *cfg, const struct server_hooks *hooks)
{
    struct server_state *st = calloc(1, sizeof *st);
    if (!st) {
        log_error("master", "out of memory");
        return 1;
    }
    int rc = 1;
    char *err = NULL;
    st->cfg = cfg;
    st->srv.hooks = hooks;
    st->srv.ctx.cfg = cfg;
    st->srv.ctx.channel = -1;
    st->srv.ctx.auth_channel = -1;
    st->is_root = geteuid() == 0;

    signal(SIGPIPE, SIG_IGN);
    /* Mail, the directory and keys are private to the run user (like Dovecot's 0600
     * mail files); files that must be shared set their mode explicitly. */
    umask(077);
    server_raise_nofile(cfg);
    evthread_use_pthreads();

    if (st->is_root && server_lookup_user(cfg, "run_user", cfg->run_user, &st->pw, st->pw_name,
                                          sizeof st->pw_name) < 0)
        goto out;
    if (util_mkdir_p(cfg->data_dir, 0755) < 0) {
        log_error("master", "cannot create data_dir %s: %s", cfg->data_dir, strerror(errno));
        goto out;
    }
    if (tls_context_init(cfg->tls_cert, cfg->tls_key, cfg->hostname, cfg->tls_sni_certs.items,
                         cfg->tls_sni_certs.n, &err) < 0) {
        log_error("master", "TLS: %s", err ? err : "unknown error");
        goto out;
    }
    if (st->is_root && cfg->master_process &&
        (server_lookup_user(cfg, "login_user", cfg->login_user, &st->pw_login,
                            st->pw_login_name, sizeof st->pw_login_name) < 0 ||
         server_lookup_user(cfg, "auth_user", cfg->auth_user, &st->pw_auth, st->pw_auth_name,
                            sizeof st->pw_auth_name) < 0 ||
         server_make_login_root(cfg->login_chroot) < 0))
        goto out;
    if (st->is_root && cfg->master_process &&
        (st->pw_login.pw_uid == st->pw.pw_uid || st->pw_auth.pw_uid == st->pw.pw_uid))
        log_warning("master", "login_user or auth_user is run_user '%s': the processes are not "
                              "separated by privileges (docs/SECURITY.md)",
                    st->pw.pw_name);
    if (st->is_root)
        server_chown_data_dir(st, cfg);
    if (server_bind_all(st, cfg) < 0)
        goto out;

    if (cfg->master_process) {
        rc = master_run(st);
    } else {
        /* one process does it all: the counts live in a private mapping */
        anvil_attach(anvil_create(), 0);
        if (st->is_root && server_drop_privileges(&st->pw) < 0)
            goto out;
        rc = server_serve(st, SERVER_PROC_ALL, -1, -1, 0, 0);
        if (rc == 0)
            log_info("master", "stopped");
    }
out:
    free(err);
    server_close_listeners(st);
    tls_context_free();
    free(st);
    return rc;
}
