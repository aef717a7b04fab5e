/*
 * io.c - durable file writing for the store and the queue: write/fsync wrappers with
 * fault-injection hooks (tests prove a failed write or fsync never acknowledges), the
 * streaming CRLF -> LF message writer, unique Maildir names, mkdir -p, and the group
 * commit of directory fsyncs (store_io_fsync_dir_shared).
 */
#include "store/store-private.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

ssize_t (*store_io_write_hook)(int fd, const void *data, size_t len) = NULL;
int (*store_io_fsync_hook)(int fd) = NULL;

/* Chunk size for streaming a message from its spool file. */
#define STORE_IO_CHUNK (64 * 1024)

void store_error(char **error_r, const char *fmt, ...)
{
    if (!error_r)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    free(*error_r);
    *error_r = s;
}

int store_io_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = store_io_write_hook ? store_io_write_hook(fd, p, len) : write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int store_io_fsync(int fd)
{
    return store_io_fsync_hook ? store_io_fsync_hook(fd) : fsync(fd);
}

int store_io_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int ret = store_io_fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return ret;
}

/*
 * Group commit of directory fsyncs. Deliveries to one mailbox rename into the same new/
 * from many pool threads at once; each rename is durable once an fsync of the directory
 * that *began after it* has returned. So a thread that renamed waits for the next fsync
 * to start (generation started + 1) rather than starting its own: while one runs, the
 * threads arriving meanwhile queue up and the first of them, once it ends, runs the next
 * one for all of them. No rename is acknowledged before an fsync that covers it, so the
 * durability rule (docs/ARCHITECTURE.md §4) is unchanged; the number of directory
 * flushes falls from one per message to one per batch (docs/PERFORMANCE.md §12.8).
 * A failed fsync fails every waiter it would have covered, and later ones too (after a
 * write-back error a later fsync's success proves nothing about the earlier entries).
 * One slot per directory path hash; a slot busy with another directory (a collision)
 * makes the caller fsync on its own, as before.
 */
#define DIR_SYNC_SLOTS 64

struct dir_sync {
    pthread_mutex_t lock;
    pthread_cond_t cond;   /* an fsync of path ended */
    char *path;            /* the directory this slot serves now (NULL: none yet) */
    unsigned n_users;      /* threads waiting or running for path */
    bool is_running;       /* an fsync of path runs now */
    uint64_t started;      /* fsyncs of path begun */
    uint64_t done;         /* the generation of the last fsync that ended */
    uint64_t failed;       /* the generation of the last one that failed (0: none) */
    int failed_errno;
};

static struct dir_sync dir_syncs[DIR_SYNC_SLOTS] = {
    [0 ... DIR_SYNC_SLOTS - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER,
                                  .cond = PTHREAD_COND_INITIALIZER}};

uint32_t store_path_hash(const char *path)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

int store_io_fsync_dir_shared(const char *dir)
{
    struct dir_sync *d = &dir_syncs[store_path_hash(dir) % DIR_SYNC_SLOTS];
    pthread_mutex_lock(&d->lock);
    if (!d->path || strcmp(d->path, dir) != 0) {
        char *copy = d->n_users == 0 ? strdup(dir) : NULL;
        if (!copy) { /* the slot serves another directory now (or no memory): alone */
            pthread_mutex_unlock(&d->lock);
            return store_io_fsync_dir(dir);
        }
        free(d->path);
        d->path = copy;
        d->started = d->done = d->failed = 0;
    }
    d->n_users++;
    uint64_t need = d->started + 1; /* the next fsync to begin covers our entry */
    while (d->done < need) {
        if (d->is_running) {
            pthread_cond_wait(&d->cond, &d->lock);
            continue;
        }
        d->is_running = true;
        uint64_t gen = ++d->started;
        pthread_mutex_unlock(&d->lock);
        int rc = store_io_fsync_dir(dir);
        int saved = errno;
        pthread_mutex_lock(&d->lock);
        d->is_running = false;
        d->done = gen;
        if (rc < 0) {
            d->failed = gen;
            d->failed_errno = saved;
        }
        pthread_cond_broadcast(&d->cond);
    }
    bool is_failed = d->failed >= need;
    int err = d->failed_errno;
    d->n_users--;
    pthread_mutex_unlock(&d->lock);
    if (is_failed) {
        errno = err;
        return -1;
    }
    return 0;
}

int store_io_mkdir_p(const char *path)
{
    char tmp[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char saved = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0700) == 0) {
            /* the new entry must survive a crash: sync the directory holding it */
            char *slash = strrchr(tmp, '/');
            if (slash && slash != tmp) {
                *slash = '\0';
                (void)store_io_fsync_dir(tmp);
                *slash = '/';
            }
        } else if (errno != EEXIST) {
            return -1;
        }
        tmp[i] = saved;
    }
    return 0;
}

/* Dovecot escapes '/' and ':' in the host part of Maildir names as \057 and \072. */
static void store_hostname(char *out, size_t size)
{
    char host[256];
    if (gethostname(host, sizeof host) < 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    size_t o = 0;
    for (const char *p = host; *p && o + 5 < size; p++) {
        if (*p == '/' || *p == ':') {
            o += (size_t)snprintf(out + o, size - o, "\\%03o", (unsigned char)*p);
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

void store_maildir_unique_name(char *out, size_t size)
{
    static _Atomic unsigned long counter;
    char host[128];
    store_hostname(host, sizeof host);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    unsigned long q = atomic_fetch_add(&counter, 1) + 1;
    snprintf(out, size, "%lld.M%ldP%ldQ%lu.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
             (long)getpid(), q, host);
}

uint64_t store_source_size(const struct store_source *src)
{
    if (src->data || src->fd < 0)
        return src->len;
    return src->size;
}

/* Streaming CRLF -> LF converter: a CR is held back until the next byte shows whether
 * it starts a CRLF pair, so chunk boundaries do not matter. */
struct conv {
    int fd;
    char out[STORE_IO_CHUNK];
    size_t n;
    bool held_cr;
    uint64_t size, lines;
};

static int conv_flush(struct conv *c)
{
    if (c->n == 0)
        return 0;
    int ret = store_io_write_all(c->fd, c->out, c->n);
    c->n = 0;
    return ret;
}

static int conv_put(struct conv *c, char ch)
{
    if (c->n == sizeof c->out && conv_flush(c) < 0)
        return -1;
    c->out[c->n++] = ch;
    c->size++;
    if (ch == '\n')
        c->lines++;
    return 0;
}

static int conv_feed(struct conv *c, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        if (c->held_cr) {
            c->held_cr = false;
            if (ch != '\n' && conv_put(c, '\r') < 0)
                return -1;
        }
        if (ch == '\r') {
            c->held_cr = true;
            continue;
        }
        if (conv_put(c, ch) < 0)
            return -1;
    }
    return 0;
}

/* Feed the source through fn in chunks (pread for a file: the message is never held
 * whole in memory). */
static int source_stream(const struct store_source *src,
                         int (*fn)(void *ctx, const char *p, size_t len), void *ctx, char **error_r)
{
    if (src->data || src->fd < 0)
        return src->len ? fn(ctx, src->data, src->len) : 0;
    char *chunk = malloc(STORE_IO_CHUNK);
    if (!chunk) {
        store_error(error_r, "out of memory");
        return -1;
    }
    uint64_t off = 0;
    while (off < src->size) {
        size_t want = src->size - off < STORE_IO_CHUNK ? (size_t)(src->size - off) : STORE_IO_CHUNK;
        ssize_t n = pread(src->fd, chunk, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            store_error(error_r, "read message: %s", n < 0 ? strerror(errno) : "short file");
            free(chunk);
            return -1;
        }
        if (fn(ctx, chunk, (size_t)n) < 0) {
            store_error(error_r, "write: %s", strerror(errno));
            free(chunk);
            return -1;
        }
        off += (uint64_t)n;
    }
    free(chunk);
    return 0;
}

static int conv_feed_cb(void *ctx, const char *p, size_t len)
{
    return conv_feed(ctx, p, len);
}

int store_io_write_message(int fd, const char *header, const struct store_source *src,
                           uint64_t *size_r, uint64_t *vsize_r, char **error_r)
{
    struct conv *c = calloc(1, sizeof *c);
    if (!c) {
        store_error(error_r, "out of memory");
        return -1;
    }
    c->fd = fd;
    int ret = -1;
    if (header && conv_feed(c, header, strlen(header)) < 0) {
        store_error(error_r, "write: %s", strerror(errno));
        goto out;
    }
    if (source_stream(src, conv_feed_cb, c, error_r) < 0)
        goto out;
    if (c->held_cr && conv_put(c, '\r') < 0) {
        store_error(error_r, "write: %s", strerror(errno));
        goto out;
    }
    if (conv_flush(c) < 0) {
        store_error(error_r, "write: %s", strerror(errno));
        goto out;
    }
    /* Dovecot's W=: the size as if every LF were CRLF. */
    *size_r = c->size;
    *vsize_r = c->size + c->lines;
    ret = 0;
out:
    free(c);
    return ret;
}

struct raw_ctx {
    int fd;
    uint64_t size;
};

static int raw_cb(void *ctx, const char *p, size_t len)
{
    struct raw_ctx *r = ctx;
    if (store_io_write_all(r->fd, p, len) < 0)
        return -1;
    r->size += len;
    return 0;
}

int store_io_write_raw(int fd, const char *header, const struct store_source *src, uint64_t *size_r,
                       char **error_r)
{
    struct raw_ctx r = {fd, 0};
    if (header && raw_cb(&r, header, strlen(header)) < 0) {
        store_error(error_r, "write: %s", strerror(errno));
        return -1;
    }
    if (source_stream(src, raw_cb, &r, error_r) < 0)
        return -1;
    *size_r = r.size;
    return 0;
}

int store_io_read_file(const char *path, size_t max, char **data_r, size_t *len_r,
                       char **error_r)
{
    *data_r = NULL;
    *len_r = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        store_error(error_r, "open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        store_error(error_r, "fstat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        store_error(error_r, "%s: %s", path,
                    !S_ISREG(st.st_mode) ? "not a regular file" : "file too large");
        close(fd);
        return -1;
    }
    /* one byte more than the budget: a file that grew meanwhile is still refused */
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *data = malloc(cap + 1);
    if (!data) {
        close(fd);
        store_error(error_r, "out of memory");
        return -1;
    }
    for (;;) {
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            store_error(error_r, "read %s: %s", path, strerror(errno));
            free(data);
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap) {
            if (cap > max) {
                store_error(error_r, "%s: file too large", path);
                free(data);
                close(fd);
                return -1;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nd = realloc(data, ncap + 1);
            if (!nd) {
                free(data);
                close(fd);
                store_error(error_r, "out of memory");
                return -1;
            }
            data = nd;
            cap = ncap;
        }
    }
    close(fd);
    data[len] = '\0';
    *data_r = data;
    *len_r = len;
    return 0;
}
