/*
 * spool.c - the outbound spool on disk (queue.h): durable enqueue, listing, delete,
 * hold and release, and a strict reader for queue files.
 *
 * A queue file is a small text envelope, one "key=value" per line with values
 * percent-escaped (so a value never holds CR, LF, NUL or '%' raw), then an empty line,
 * then the message (CRLF, trace headers first):
 *   TERNQ1
 *   id=5E4A5BA2D4
 *   arrival=1795597200
 *   attempts=0
 *   sender=alice%40example.test      ('' for the null sender <>)
 *   rcpt=bob%40example.org           (one line per recipient)
 *   size=1234                        (message bytes after the empty line)
 * Optional lines (RFC 3461 DSN parameters; files without them still parse):
 *   ret=FULL|HDRS, envid=<escaped>, warned=1 (the delay DSN went out)   per message
 *   notify=SFD|N, orcpt=<escaped>    for the rcpt= line just before them
 *
 * Queue files are read back as hostile input: every line, count and size is bounded and
 * checked, and a file that does not parse is skipped (and reported), never trusted.
 */
#include "queue/queue.h"
#include "queue/queue-private.h"

#include "core/log.h"
#include "store/store-private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_MAGIC          "TERNQ1"
#define QUEUE_MAX_LINE       4096
#define QUEUE_MAX_RECIPIENTS 10000
#define QUEUE_MAX_ENVELOPE   (4u * 1024 * 1024)
#define QUEUE_MAX_FILES      1000000

const char *const queue_states[QUEUE_N_STATES] = {"active", "deferred", "hold"};

bool queue_id_is_valid(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len >= sizeof(((struct queue_entry *)0)->id))
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
            return false;
    return true;
}

/* Percent-escape a value: anything outside printable ASCII, '%' and '=' is %XX. */
static bool queue_escape(struct buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool ok = *p > 0x20 && *p < 0x7f && *p != '%' && *p != '=';
        if (!(ok ? buf_append_byte(b, (char)*p) : buf_printf(b, "%%%02X", *p)))
            return false;
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decode a %-escaped value; NULL on a bad escape or a decoded control character. */
static char *queue_unescape(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int h = len - i >= 3 ? hexval(s[i + 1]) : -1;
            int l = len - i >= 3 ? hexval(s[i + 2]) : -1;
            if (h < 0 || l < 0) {
                free(out);
                return NULL;
            }
            c = (unsigned char)(h * 16 + l);
            i += 2;
        } else if (c <= 0x20 || c >= 0x7f) {
            free(out); /* raw bytes must have been escaped by the writer */
            return NULL;
        }
        if (c < 0x20 || c == 0x7f) {
            free(out);
            return NULL;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return out;
}

int queue_dirs_create(const char *data_dir, char **error_r)
{
    static const char *const subdirs[] = {"incoming", "active", "deferred", "hold"};
    char path[4200];
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/queue/%s", data_dir, subdirs[i]);
        if (store_io_mkdir_p(path) < 0) {
            store_error(error_r, "mkdir %s: %s", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

bool queue_envelope_dsn_message(struct buf *b, int ret, const char *envid, bool is_delay_warned)
{
    bool ok = true;
    if (ret == QUEUE_RET_FULL || ret == QUEUE_RET_HDRS)
        ok = buf_printf(b, "ret=%s\n", ret == QUEUE_RET_FULL ? "FULL" : "HDRS");
    if (ok && envid && envid[0])
        ok = buf_append_str(b, "envid=") && queue_escape(b, envid) && buf_append_byte(b, '\n');
    if (ok && is_delay_warned)
        ok = buf_append_str(b, "warned=1\n");
    return ok;
}

bool queue_envelope_dsn_rcpt(struct buf *b, unsigned notify, const char *orcpt)
{
    bool ok = true;
    if (notify) {
        if (notify & QUEUE_NOTIFY_NEVER)
            ok = buf_append_str(b, "notify=N\n");
        else
            ok = buf_printf(b, "notify=%s%s%s\n", (notify & QUEUE_NOTIFY_SUCCESS) ? "S" : "",
                            (notify & QUEUE_NOTIFY_FAILURE) ? "F" : "",
                            (notify & QUEUE_NOTIFY_DELAY) ? "D" : "");
    }
    if (ok && orcpt && orcpt[0])
        ok = buf_append_str(b, "orcpt=") && queue_escape(b, orcpt) && buf_append_byte(b, '\n');
    return ok;
}

int queue_enqueue_staged(const char *data_dir, const char *queue_id, const char *sender,
                         const char *const *recipients, size_t n_recipients, const char *header,
                         const struct store_source *src, char **error_r)
{
    return queue_enqueue_staged_dsn(data_dir, queue_id, sender, recipients, n_recipients, header,
                                    src, NULL, error_r);
}

int queue_enqueue_staged_dsn(const char *data_dir, const char *queue_id, const char *sender,
                             const char *const *recipients, size_t n_recipients, const char *header,
                             const struct store_source *src, const struct queue_dsn *dsn,
                             char **error_r)
{
    if (!queue_id_is_valid(queue_id)) {
        store_error(error_r, "invalid queue id");
        return -1;
    }
    if (n_recipients == 0 || n_recipients > QUEUE_MAX_RECIPIENTS) {
        store_error(error_r, "bad recipient count %zu", n_recipients);
        return -1;
    }
    if (queue_dirs_create(data_dir, error_r) < 0)
        return -1;
    uint64_t msg_size = store_source_size(src) + (header ? strlen(header) : 0);
    struct buf env;
    buf_init(&env, QUEUE_MAX_ENVELOPE);
    bool ok = buf_printf(&env, "%s\nid=%s\narrival=%lld\nattempts=0\nsender=", QUEUE_MAGIC,
                         queue_id, (long long)time(NULL)) &&
              queue_escape(&env, sender ? sender : "") && buf_append_byte(&env, '\n');
    if (ok && dsn)
        ok = queue_envelope_dsn_message(&env, dsn->ret, dsn->envid, false);
    for (size_t i = 0; ok && i < n_recipients; i++) {
        ok = buf_append_str(&env, "rcpt=") && queue_escape(&env, recipients[i]) &&
             buf_append_byte(&env, '\n');
        if (ok && dsn)
            ok = queue_envelope_dsn_rcpt(&env, dsn->notify ? dsn->notify[i] : 0,
                                         dsn->orcpt ? dsn->orcpt[i] : NULL);
    }
    ok = ok && buf_printf(&env, "size=%llu\n\n", (unsigned long long)msg_size);
    if (!ok) {
        buf_free(&env);
        store_error(error_r, "envelope too large");
        return -1;
    }
    char tmp_path[4200], final_path[4200], active_dir[4200];
    snprintf(tmp_path, sizeof tmp_path, "%s/queue/incoming/%s", data_dir, queue_id);
    snprintf(active_dir, sizeof active_dir, "%s/queue/active", data_dir);
    snprintf(final_path, sizeof final_path, "%s/queue/active/%s", data_dir, queue_id);
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        store_error(error_r, "create %s: %s", tmp_path, strerror(errno));
        buf_free(&env);
        return -1;
    }
    uint64_t written = 0;
    int ret = -1;
    if (store_io_write_all(fd, env.data, env.len) < 0) {
        store_error(error_r, "write %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    if (store_io_write_raw(fd, header, src, &written, error_r) < 0)
        goto fail;
    if (written != msg_size) {
        store_error(error_r, "message changed size while spooling");
        goto fail;
    }
    if (store_io_fsync(fd) < 0) {
        store_error(error_r, "fsync %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        store_error(error_r, "close %s: %s", tmp_path, strerror(errno));
        goto fail;
    }
    fd = -1;
    /* Make the incoming/ entry itself durable, so that a later rename into active/ moves
     * a file that survives a crash. */
    snprintf(active_dir, sizeof active_dir, "%s/queue/incoming", data_dir);
    if (store_io_fsync_dir(active_dir) < 0) {
        store_error(error_r, "fsync %s: %s", active_dir, strerror(errno));
        goto fail;
    }
    (void)final_path;
    ret = 0;
fail:
    if (fd >= 0)
        close(fd);
    if (ret < 0)
        (void)unlink(tmp_path);
    buf_free(&env);
    return ret;
}

void queue_entry_free(struct queue_entry *e)
{
    if (!e)
        return;
    free(e->sender);
    for (size_t i = 0; i < e->n_recipients; i++)
        free(e->recipients[i]);
    free(e->recipients);
    if (e->orcpt)
        for (size_t i = 0; i < e->n_recipients; i++)
            free(e->orcpt[i]);
    free(e->orcpt);
    free(e->notify);
    free(e->envid);
    e->envid = NULL;
    e->orcpt = NULL;
    e->notify = NULL;
    e->sender = NULL;
    e->recipients = NULL;
    e->n_recipients = 0;
}

/* Parse one decimal number that must fill the whole value. */
static bool parse_u64(const char *s, size_t len, uint64_t *v_r)
{
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *v_r = v;
    return true;
}

int queue_parse_envelope(const char *data, size_t len, struct queue_entry *e,
                         uint64_t *body_offset_r, unsigned *attempts_r, char **error_r)
{
    memset(e, 0, sizeof *e);
    size_t pos = 0, line_no = 0;
    bool has_id = false, has_sender = false, has_size = false, has_arrival = false;
    uint64_t attempts = 0;
    size_t cap_rcpt = 0;
    bool has_ret = false, has_warned = false, has_notify = false, has_orcpt = false;
    for (;;) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        if (!nl) {
            store_error(error_r, "truncated envelope");
            goto fail;
        }
        size_t llen = (size_t)(nl - (data + pos));
        const char *line = data + pos;
        pos += llen + 1;
        line_no++;
        if (llen > QUEUE_MAX_LINE) {
            store_error(error_r, "line %zu too long", line_no);
            goto fail;
        }
        if (line_no == 1) {
            if (llen != strlen(QUEUE_MAGIC) || memcmp(line, QUEUE_MAGIC, llen) != 0) {
                store_error(error_r, "not a queue file");
                goto fail;
            }
            continue;
        }
        if (llen == 0)
            break;
        const char *eq = memchr(line, '=', llen);
        if (!eq) {
            store_error(error_r, "line %zu: no '='", line_no);
            goto fail;
        }
        size_t klen = (size_t)(eq - line);
        const char *val = eq + 1;
        size_t vlen = llen - klen - 1;
        uint64_t num;
#define KEY_IS(k) (klen == sizeof(k) - 1 && memcmp(line, k, klen) == 0)
        if (KEY_IS("id")) {
            char *id = queue_unescape(val, vlen);
            if (!id || has_id || !queue_id_is_valid(id)) {
                free(id);
                store_error(error_r, "line %zu: bad id", line_no);
                goto fail;
            }
            snprintf(e->id, sizeof e->id, "%s", id);
            free(id);
            has_id = true;
        } else if (KEY_IS("arrival") && !has_arrival && parse_u64(val, vlen, &num) &&
                   num < (1ULL << 40)) {
            e->arrival = (time_t)num;
            has_arrival = true;
        } else if (KEY_IS("attempts") && parse_u64(val, vlen, &num) && num < 1000000) {
            attempts = num;
        } else if (KEY_IS("sender") && !has_sender) {
            e->sender = queue_unescape(val, vlen);
            if (!e->sender) {
                store_error(error_r, "line %zu: bad sender", line_no);
                goto fail;
            }
            has_sender = true;
        } else if (KEY_IS("rcpt")) {
            if (e->n_recipients >= QUEUE_MAX_RECIPIENTS || vlen == 0) {
                store_error(error_r, "line %zu: bad recipient", line_no);
                goto fail;
            }
            if (e->n_recipients == cap_rcpt) {
                size_t ncap = cap_rcpt ? cap_rcpt * 2 : 8;
                char **r = realloc(e->recipients, ncap * sizeof *r);
                if (r)
                    e->recipients = r;
                /* DSN arrays grow with the recipients (zeroed: "not given") */
                unsigned *nt = r ? realloc(e->notify, ncap * sizeof *nt) : NULL;
                if (nt)
                    e->notify = nt;
                char **oc = nt ? realloc(e->orcpt, ncap * sizeof *oc) : NULL;
                if (!oc) {
                    store_error(error_r, "out of memory");
                    goto fail;
                }
                e->orcpt = oc;
                cap_rcpt = ncap;
            }
            e->notify[e->n_recipients] = 0;
            e->orcpt[e->n_recipients] = NULL;
            has_notify = has_orcpt = false;
            char *rc = queue_unescape(val, vlen);
            if (!rc) {
                store_error(error_r, "line %zu: bad recipient", line_no);
                goto fail;
            }
            e->recipients[e->n_recipients++] = rc;
        } else if (KEY_IS("size") && !has_size && parse_u64(val, vlen, &num)) {
            e->size = num;
            has_size = true;
        } else if (KEY_IS("ret") && !has_ret && vlen == 4 &&
                   (memcmp(val, "FULL", 4) == 0 || memcmp(val, "HDRS", 4) == 0)) {
            e->dsn_ret = val[0] == 'F' ? QUEUE_RET_FULL : QUEUE_RET_HDRS;
            has_ret = true;
        } else if (KEY_IS("envid") && !e->envid && vlen > 0) {
            e->envid = queue_unescape(val, vlen);
            if (!e->envid || strlen(e->envid) > QUEUE_ENVID_MAX) {
                store_error(error_r, "line %zu: bad envid", line_no);
                goto fail;
            }
        } else if (KEY_IS("warned") && !has_warned && vlen == 1 && val[0] == '1') {
            e->is_delay_warned = true;
            has_warned = true;
        } else if (KEY_IS("notify") && e->n_recipients > 0 && !has_notify && vlen > 0 &&
                   vlen <= 3) {
            /* belongs to the rcpt= line before it */
            unsigned bits = 0;
            for (size_t i = 0; i < vlen; i++) {
                unsigned bit = val[i] == 'S'   ? QUEUE_NOTIFY_SUCCESS
                               : val[i] == 'F' ? QUEUE_NOTIFY_FAILURE
                               : val[i] == 'D' ? QUEUE_NOTIFY_DELAY
                               : val[i] == 'N' ? QUEUE_NOTIFY_NEVER
                                               : 0;
                if (bit == 0 || (bits & bit)) {
                    store_error(error_r, "line %zu: bad notify", line_no);
                    goto fail;
                }
                bits |= bit;
            }
            if ((bits & QUEUE_NOTIFY_NEVER) && bits != QUEUE_NOTIFY_NEVER) {
                store_error(error_r, "line %zu: bad notify", line_no);
                goto fail;
            }
            e->notify[e->n_recipients - 1] = bits;
            has_notify = true;
        } else if (KEY_IS("orcpt") && e->n_recipients > 0 && !has_orcpt && vlen > 0) {
            char *oc = queue_unescape(val, vlen);
            if (!oc || strlen(oc) > QUEUE_ORCPT_MAX) {
                free(oc);
                store_error(error_r, "line %zu: bad orcpt", line_no);
                goto fail;
            }
            e->orcpt[e->n_recipients - 1] = oc;
            has_orcpt = true;
        } else {
            store_error(error_r, "line %zu: unknown or bad field", line_no);
            goto fail;
        }
#undef KEY_IS
    }
    if (!has_id || !has_sender || !has_size || !has_arrival || e->n_recipients == 0) {
        store_error(error_r, "envelope misses a field");
        goto fail;
    }
    *body_offset_r = pos;
    if (attempts_r)
        *attempts_r = (unsigned)attempts;
    return 0;
fail:
    queue_entry_free(e);
    return -1;
}

int queue_file_read(const char *path, struct queue_entry *e, int *fd_r, uint64_t *offset_r,
                    char **error_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        store_error(error_r, "open %s: %s", path, strerror(errno));
        return errno == ENOENT ? 1 : -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        store_error(error_r, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t want =
        (uint64_t)st.st_size < QUEUE_MAX_ENVELOPE ? (size_t)st.st_size : QUEUE_MAX_ENVELOPE;
    char *data = malloc(want + 1);
    if (!data) {
        close(fd);
        store_error(error_r, "out of memory");
        return -1;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, data + got, want - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    uint64_t off = 0;
    int r = queue_parse_envelope(data, got, e, &off, NULL, error_r);
    free(data);
    if (r == 0 && (e->size > (uint64_t)st.st_size || off + e->size != (uint64_t)st.st_size)) {
        store_error(error_r, "%s: size field does not match the file", path);
        queue_entry_free(e);
        r = -1;
    }
    if (r == 0) {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (strcmp(base, e->id) != 0) {
            store_error(error_r, "%s: id does not match the file name", path);
            queue_entry_free(e);
            r = -1;
        }
    }
    if (r < 0 || !fd_r) {
        close(fd);
    } else {
        *fd_r = fd;
    }
    if (r == 0 && offset_r)
        *offset_r = off;
    return r;
}

int queue_find(const char *data_dir, const char *id, char *path_r, size_t size, int *state_r)
{
    for (int s = 0; s < QUEUE_N_STATES; s++) {
        snprintf(path_r, size, "%s/queue/%s/%s", data_dir, queue_states[s], id);
        struct stat st;
        if (lstat(path_r, &st) == 0) {
            if (state_r)
                *state_r = s;
            return 0;
        }
    }
    return 1;
}

int queue_read(const char *data_dir, const char *id, struct queue_entry *e_r, int *fd_r,
               uint64_t *offset_r, char **error_r)
{
    char path[4200];
    int state;
    if (!queue_id_is_valid(id) || queue_find(data_dir, id, path, sizeof path, &state) != 0) {
        store_error(error_r, "%s: no such message in the queue", id);
        return 1;
    }
    int r = queue_file_read(path, e_r, fd_r, offset_r, error_r);
    if (r == 0)
        snprintf(e_r->state, sizeof e_r->state, "%s", queue_states[state]);
    return r;
}

/* Index of a state name in queue_states (QUEUE_N_STATES if none). */
static int state_index(const char *name)
{
    int s = 0;
    while (s < QUEUE_N_STATES && strcmp(queue_states[s], name) != 0)
        s++;
    return s;
}

/* By arrival, then id; copies of one message by state, in the order they were scanned. */
static int entry_cmp(const void *a, const void *b)
{
    const struct queue_entry *x = a, *y = b;
    if (x->arrival != y->arrival)
        return x->arrival < y->arrival ? -1 : 1;
    int c = strcmp(x->id, y->id);
    if (c != 0)
        return c;
    return state_index(x->state) - state_index(y->state);
}

int queue_list(const char *data_dir, void (*cb)(const struct queue_entry *e, void *arg), void *arg,
               char **error_r)
{
    struct queue_entry *list = NULL;
    size_t n = 0, cap = 0;
    int ret = 0;
    for (int s = 0; s < QUEUE_N_STATES && ret == 0; s++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/queue/%s", data_dir, queue_states[s]);
        DIR *d = opendir(dir);
        if (!d) {
            if (errno == ENOENT)
                continue;
            store_error(error_r, "opendir %s: %s", dir, strerror(errno));
            ret = -1;
            break;
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL && n < QUEUE_MAX_FILES) {
            if (de->d_name[0] == '.' || !queue_id_is_valid(de->d_name))
                continue;
            char path[4600];
            snprintf(path, sizeof path, "%s/%.255s", dir, de->d_name);
            struct queue_entry e;
            char *err = NULL;
            if (queue_file_read(path, &e, NULL, NULL, &err) != 0) {
                log_warning("queue", "skipping unreadable queue file %s: %s", path,
                            err ? err : "?");
                free(err);
                continue;
            }
            snprintf(e.state, sizeof e.state, "%s", queue_states[s]);
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct queue_entry *nl = realloc(list, ncap * sizeof *nl);
                if (!nl) {
                    queue_entry_free(&e);
                    store_error(error_r, "out of memory");
                    ret = -1;
                    break;
                }
                list = nl;
                cap = ncap;
            }
            list[n++] = e;
        }
        closedir(d);
    }
    if (ret == 0 && n > 0) {
        qsort(list, n, sizeof *list, entry_cmp); /* list is NULL when n is 0 (UBSan) */
        /* One message can be seen twice: a deferral writes deferred/<id> before it
         * removes active/<id> (never zero copies), and a move between directories can
         * happen between our two scans. List it once, in the later state (the newer
         * copy, scanned last). */
        for (size_t i = 0; i < n; i++)
            if (i + 1 == n || strcmp(list[i].id, list[i + 1].id) != 0)
                cb(&list[i], arg);
    }
    for (size_t i = 0; i < n; i++)
        queue_entry_free(&list[i]);
    free(list);
    return ret;
}

/* Unlink one queue file and make the removal durable. */
static int queue_unlink(const char *path, char **error_r)
{
    if (unlink(path) < 0) {
        store_error(error_r, "unlink %s: %s", path, strerror(errno));
        return errno == ENOENT ? 1 : -1;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    if (store_io_fsync_dir(dir) < 0) {
        store_error(error_r, "fsync %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

int queue_delete(const char *data_dir, const char *id, char **error_r)
{
    if (strcmp(id, "ALL") == 0) {
        int ret = 0;
        for (int s = 0; s < QUEUE_N_STATES; s++) {
            char dir[4200];
            snprintf(dir, sizeof dir, "%s/queue/%s", data_dir, queue_states[s]);
            DIR *d = opendir(dir);
            if (!d)
                continue;
            struct dirent *de;
            size_t count = 0;
            while ((de = readdir(d)) != NULL && count++ < QUEUE_MAX_FILES) {
                if (de->d_name[0] == '.')
                    continue;
                char path[4600];
                snprintf(path, sizeof path, "%s/%.255s", dir, de->d_name);
                if (unlink(path) < 0 && errno != ENOENT) {
                    store_error(error_r, "unlink %s: %s", path, strerror(errno));
                    ret = -1;
                }
            }
            closedir(d);
            if (store_io_fsync_dir(dir) < 0)
                ret = -1;
        }
        return ret;
    }
    char path[4200];
    if (!queue_id_is_valid(id) || queue_find(data_dir, id, path, sizeof path, NULL) != 0) {
        store_error(error_r, "%s: no such message in the queue", id);
        return 1;
    }
    return queue_unlink(path, error_r);
}

/* Move a message into state dir to_state from any of the from states. */
static int queue_move(const char *data_dir, const char *id, int to_state, char **error_r)
{
    char path[4200];
    int state;
    if (!queue_id_is_valid(id) || queue_find(data_dir, id, path, sizeof path, &state) != 0) {
        store_error(error_r, "%s: no such message in the queue", id);
        return 1;
    }
    if (state == to_state)
        return 0;
    if (queue_dirs_create(data_dir, error_r) < 0)
        return -1;
    char dest_dir[4200], dest[4400];
    snprintf(dest_dir, sizeof dest_dir, "%s/queue/%s", data_dir, queue_states[to_state]);
    snprintf(dest, sizeof dest, "%s/%s", dest_dir, id);
    if (rename(path, dest) < 0) {
        store_error(error_r, "rename %s: %s", path, strerror(errno));
        return errno == ENOENT ? 1 : -1;
    }
    if (store_io_fsync_dir(dest_dir) < 0) {
        store_error(error_r, "fsync %s: %s", dest_dir, strerror(errno));
        return -1;
    }
    return 0;
}

int queue_hold(const char *data_dir, const char *id, char **error_r)
{
    return queue_move(data_dir, id, QUEUE_STATE_HOLD, error_r);
}

int queue_release(const char *data_dir, const char *id, char **error_r)
{
    char path[4200];
    int state;
    if (queue_id_is_valid(id) && queue_find(data_dir, id, path, sizeof path, &state) == 0 &&
        state != QUEUE_STATE_HOLD)
        return 0; /* not on hold: nothing to do */
    return queue_move(data_dir, id, QUEUE_STATE_ACTIVE, error_r);
}

/* Second phase: move a staged message into active/ where the runner sees it. */
/* Move a staged message into dir ("active" or "hold"), durably. */
static int queue_commit_into(const char *data_dir, const char *queue_id, const char *dir,
                             char **error_r)
{
    if (!queue_id_is_valid(queue_id)) {
        store_error(error_r, "invalid queue id");
        return -1;
    }
    char tmp_path[4200], final_path[4200], active_dir[4200];
    snprintf(tmp_path, sizeof tmp_path, "%s/queue/incoming/%s", data_dir, queue_id);
    snprintf(active_dir, sizeof active_dir, "%s/queue/%s", data_dir, dir);
    snprintf(final_path, sizeof final_path, "%s/queue/%s/%s", data_dir, dir, queue_id);
    if (rename(tmp_path, final_path) < 0) {
        store_error(error_r, "rename %s: %s", tmp_path, strerror(errno));
        return -1;
    }
    if (store_io_fsync_dir(active_dir) < 0) {
        store_error(error_r, "fsync %s: %s", active_dir, strerror(errno));
        /* not durable: put it back so we never acknowledge it */
        (void)rename(final_path, tmp_path);
        return -1;
    }
    return 0;
}

int queue_commit(const char *data_dir, const char *queue_id, char **error_r)
{
    return queue_commit_into(data_dir, queue_id, "active", error_r);
}

int queue_commit_held(const char *data_dir, const char *queue_id, char **error_r)
{
    return queue_commit_into(data_dir, queue_id, "hold", error_r);
}

/* Drop a staged message that will not be acknowledged. */
void queue_abort(const char *data_dir, const char *queue_id)
{
    if (!queue_id_is_valid(queue_id))
        return;
    char tmp_path[4200];
    snprintf(tmp_path, sizeof tmp_path, "%s/queue/incoming/%s", data_dir, queue_id);
    (void)unlink(tmp_path);
}

int queue_enqueue(const char *data_dir, const char *queue_id, const char *sender,
                  const char *const *recipients, size_t n_recipients, const char *header,
                  const struct store_source *src, char **error_r)
{
    if (queue_enqueue_staged(data_dir, queue_id, sender, recipients, n_recipients, header, src,
                             error_r) < 0)
        return -1;
    if (queue_commit(data_dir, queue_id, error_r) < 0) {
        queue_abort(data_dir, queue_id);
        return -1;
    }
    return 0;
}

/* Remove staged files left in incoming/ by a process that died between staging and
 * commit: no client was ever told 250 for them. Only files older than max_age seconds
 * go, so a `tern sendmail` staging right now is left alone. Returns how many went. */
int queue_incoming_cleanup(const char *data_dir, unsigned max_age)
{
    char dir_path[4200];
    snprintf(dir_path, sizeof dir_path, "%s/queue/incoming", data_dir);
    DIR *dir = opendir(dir_path);
    if (!dir)
        return 0;
    time_t now = time(NULL);
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (!queue_id_is_valid(de->d_name))
            continue;
        struct stat st;
        if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (now - st.st_mtime < (time_t)max_age)
            continue;
        if (unlinkat(dirfd(dir), de->d_name, 0) == 0) {
            log_info("queue", "%s: removed stale incoming file (never acknowledged)", de->d_name);
            removed++;
        }
    }
    closedir(dir);
    return removed;
}
