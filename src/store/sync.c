/*
 * sync.c - bringing the index of a mailbox in line with its Maildir folder.
 *
 * The Maildir is the truth (DESIGN §4): other programs may add, remove or rename files.
 * A sync, inside one IMMEDIATE transaction so concurrent syncs serialise:
 *   - scans new/ and cur/ only when its mtime changed since the last scan, or the recorded
 *     mtime was too recent to trust (ext4 timestamps are coarse: a change in the same tick
 *     as our scan would leave the mtime equal);
 *   - skips the scan when the only changes since then are our own (flag renames, APPEND,
 *     COPY, EXPUNGE): those record the folder's mtime right after the change together
 *     with their index update (store_sync_own_change), so the next sync of the session
 *     that made them does not re-read a folder it already knows (issue 4: a whole cur/
 *     rescan after every STORE/APPEND/EXPUNGE);
 *   - gives unknown files the next UIDs (in name order, i.e. delivery time order);
 *   - deletes rows whose file vanished, takes over flags changed in ":2,<flags>";
 *   - optionally moves new/ files to cur/ (what Dovecot does when a mailbox is selected
 *     read-write).
 * UIDs are never reused: uidnext only grows, and rows are only ever added at uidnext.
 */
#include "store/store-private.h"

#include "core/log.h"
#include "store/dovecot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A directory mtime younger than this is not trusted to reveal later changes. */
#define SYNC_MTIME_SLACK_NS (2LL * 1000000000LL)
#define SYNC_MAX_FILES      10000000

/* What a first index build takes over from Dovecot (store_sync_import_dovecot). */
struct sync_import {
    struct dovecot_uidlist uidlist;
    struct dovecot_keywords keywords; /* all NULL when the folder has none */
    size_t n_listed;                  /* files that got their Dovecot UID */
};

struct scan_entry {
    char *name; /* file name in its directory */
    size_t base_len;
    bool is_new;     /* in new/ (else cur/) */
    bool is_matched; /* has a row (step 1) */
    bool is_indexed; /* has a row or got one now (or is a duplicate of one that did) */
    /* unknown files only, filled by sizes_compute: */
    bool is_gone; /* vanished (or unreadable) while we looked */
    uint64_t size, vsize;
    int64_t mtime;
};

struct scan {
    struct scan_entry *e;
    size_t n, cap;
};

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * The recorded mtimes (row->cur_mtime, row->new_mtime), in ns:
 *   0     unknown: scan;
 *   > 0   the folder's mtime at the last scan, old enough to trust: equal = unchanged;
 *   < 0   -(mtime) of a young folder whose state the index already holds (a scan, or our
 *         own change on top of a known state): equal and still young = unchanged; once it
 *         is SYNC_MTIME_SLACK_NS old it is scanned once more, which catches another
 *         program's change made in the same timestamp tick (or between our change and
 *         its stat), and is then recorded as trusted.
 * Known limit: a session that keeps changing the folder faster than every
 * SYNC_MTIME_SLACK_NS keeps renewing a young mark, so such a same-tick foreign change is
 * seen only once the folder rests that long (or changes again by someone else).
 */
static bool mtime_is_known(int64_t recorded, int64_t m, int64_t now)
{
    if (recorded > 0)
        return m == recorded;
    return recorded < 0 && m == -recorded && now - m < SYNC_MTIME_SLACK_NS;
}

/* What to record for a folder just scanned with mtime m. */
static int64_t mtime_record(int64_t m, int64_t now)
{
    return now - m >= SYNC_MTIME_SLACK_NS ? m : -m;
}

int64_t store_sync_dir_mtime(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return 0;
    return mtime_ns(&st);
}

void store_sync_own_change(int64_t *recorded, int64_t before, int64_t after)
{
    /* Only on top of a state the index holds; anything else changed the folder too (or
     * the mark moved on): leave the record alone and the mismatch forces a scan. */
    if (before == 0 || after == 0 || *recorded == 0)
        return;
    /* a young mark that has aged is owed its confirming scan: do not renew it */
    if (*recorded < 0 && now_ns() - before >= SYNC_MTIME_SLACK_NS)
        return;
    if (*recorded == before || *recorded == -before)
        *recorded = -after;
}

static void scan_free(struct scan *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->e[i].name);
    free(s->e);
    memset(s, 0, sizeof *s);
}

static int scan_dir(struct scan *s, const char *dir, bool is_new, char **error_r)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        store_error(error_r, "opendir %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (s->n >= SYNC_MAX_FILES)
            break;
        if (s->n == s->cap) {
            size_t ncap = s->cap ? s->cap * 2 : 64;
            struct scan_entry *ne = realloc(s->e, ncap * sizeof *ne);
            if (!ne) {
                closedir(d);
                store_error(error_r, "out of memory");
                return -1;
            }
            s->e = ne;
            s->cap = ncap;
        }
        char *name = strdup(de->d_name);
        if (!name) {
            closedir(d);
            store_error(error_r, "out of memory");
            return -1;
        }
        const char *colon = strchr(name, ':');
        s->e[s->n++] = (struct scan_entry){
            .name = name,
            .base_len = colon ? (size_t)(colon - name) : strlen(name),
            .is_new = is_new,
        };
    }
    closedir(d);
    return 0;
}

/* Compare by base name (the part before ':'). */
static int base_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = memcmp(a, b, n);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int scan_entry_cmp(const void *x, const void *y)
{
    const struct scan_entry *a = x, *b = y;
    return base_cmp(a->name, a->base_len, b->name, b->base_len);
}

static struct scan_entry *scan_find(struct scan *s, const char *base)
{
    size_t lo = 0, hi = s->n, blen = strlen(base);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = base_cmp(s->e[mid].name, s->e[mid].base_len, base, blen);
        if (c == 0)
            return &s->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void entry_location(const struct scan_entry *e, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", e->is_new ? "new" : "cur", e->name);
}

static unsigned entry_flags(const struct scan_entry *e)
{
    if (e->is_new || e->name[e->base_len] != ':')
        return 0;
    return store_maildir_flags_parse(e->name + e->base_len + 1);
}

/* ---- sizes of unknown files ------------------------------------------------------------
 * A new file needs its size, its CRLF size (RFC822.SIZE, STATUS SIZE: exact, so a file not
 * named with ,S=/W= (written by another program) must be read to count its LFs) and its
 * mtime (INTERNALDATE). On a cold first SELECT of a large folder this is most of the work
 * (issue: 100,000 files took 2.3 s), so it is done with openat/fstatat relative to the
 * folder (no path walk per file), one read per file, and shared with a few threads while
 * this thread inserts the rows: entries are cut into chunks; helpers take the next chunk
 * not yet taken; the inserting thread, when the chunk it needs next is not ready, takes
 * one itself or waits. */
#define SIZES_CHUNK        256
#define SIZES_MAX_HELPERS  3
#define SIZES_MIN_THREADED 2048 /* fewer unknown files: not worth a thread */
/* Page cache for a large build: SQLite's default (2 MB) is far smaller than the B-trees
 * a big build writes, so it spilled dirty pages into the WAL and, since a page spilled in
 * the same transaction is rewritten in place, wrote the same pages over and over (647,000
 * pwrite calls for 100,000 messages). Per new row ~256 bytes, up to this bound (KiB). */
#define SIZES_BUILD_CACHE_MAX_KIB (128 * 1024)

/* Bytes equal to '\n' in p[0..n), eight at a time (fast at every optimisation level,
 * no popcount instruction needed). */
static uint64_t count_lf(const unsigned char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, lows = 0x7f7f7f7f7f7f7f7fULL;
    uint64_t count = 0;
    size_t i = 0;
    while (i + 8 <= n) {
        uint64_t lanes = 0; /* one counter per byte lane: at most 255 rounds */
        for (size_t round = 0; round < 255 && i + 8 <= n; round++, i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            w ^= ones * '\n'; /* LF bytes become 0 */
            /* low bit of a lane set iff that byte is zero (no carry crosses lanes) */
            lanes += (~((((w & lows) + lows) | w) | lows)) >> 7;
        }
        /* sum of the eight lanes (each <= 255): pairs into 16-bit lanes, then those */
        uint64_t pairs = (lanes & 0x00ff00ff00ff00ffULL) + ((lanes >> 8) & 0x00ff00ff00ff00ffULL);
        count += (pairs * 0x0001000100010001ULL) >> 48;
    }
    for (; i < n; i++)
        count += p[i] == '\n';
    return count;
}

/* LFs in p[0..n) that already follow a CR (prev_cr: the byte before p[0] is a CR): a file
 * that another program wrote with CRLF line ends needs no CR added for those. memchr
 * finds the CRs, so a file without any (as tern writes them) costs one scan. */
static uint64_t count_crlf(const unsigned char *p, size_t n, bool prev_cr)
{
    uint64_t count = prev_cr && n > 0 && p[0] == '\n';
    const unsigned char *end = p + n, *cr = memchr(p, '\r', n);
    while (cr) {
        if (cr + 1 < end && cr[1] == '\n')
            count++;
        cr = cr + 1 < end ? memchr(cr + 1, '\r', (size_t)(end - cr - 1)) : NULL;
    }
    return count;
}

/* Size, CRLF size and mtime of one unknown file (dfd: its folder, cur/ or new/). */
static void entry_sizes(struct scan_entry *e, int dfd)
{
    char base[512];
    snprintf(base, sizeof base, "%.*s", (int)e->base_len, e->name);
    uint64_t size = 0, vsize = 0;
    struct stat st;
    if (store_maildir_name_size(base, 'S', &size) && store_maildir_name_size(base, 'W', &vsize)) {
        if (fstatat(dfd, e->name, &st, 0) < 0) {
            e->is_gone = true;
            return;
        }
        e->size = size;
        e->vsize = vsize;
        e->mtime = (int64_t)st.st_mtime;
        return;
    }
    int fd = openat(dfd, e->name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        e->is_gone = true;
        return;
    }
    unsigned char buf[65536];
    uint64_t total = 0, lines = 0;
    bool prev_cr = false;
    ssize_t n;
    /* a Maildir file never changes: stop at the size fstat gave, which saves the read
     * that would only return end-of-file */
    while ((st.st_size <= 0 || total < (uint64_t)st.st_size) &&
           (n = read(fd, buf, sizeof buf)) > 0) {
        total += (uint64_t)n;
        lines += count_lf(buf, (size_t)n) - count_crlf(buf, (size_t)n, prev_cr);
        prev_cr = buf[n - 1] == '\r';
    }
    close(fd);
    e->size = total;
    e->vsize = total + lines; /* as IMAP counts it: bare LFs become CRLF */
    e->mtime = (int64_t)st.st_mtime;
}

struct sizes_job {
    struct scan_entry **todo; /* the unknown entries, in UID order */
    size_t n, n_chunks;
    int dfd_cur, dfd_new;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t next_chunk; /* next chunk nobody took yet */
    bool *is_chunk_done;
};

static void sizes_chunk_compute(struct sizes_job *j, size_t c)
{
    size_t end = (c + 1) * SIZES_CHUNK < j->n ? (c + 1) * SIZES_CHUNK : j->n;
    for (size_t i = c * SIZES_CHUNK; i < end; i++)
        entry_sizes(j->todo[i], j->todo[i]->is_new ? j->dfd_new : j->dfd_cur);
    pthread_mutex_lock(&j->lock);
    j->is_chunk_done[c] = true;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->lock);
}

/* Take the next untaken chunk: its number, or SIZE_MAX when all are taken. */
static size_t sizes_chunk_take(struct sizes_job *j)
{
    pthread_mutex_lock(&j->lock);
    size_t c = j->next_chunk < j->n_chunks ? j->next_chunk++ : SIZE_MAX;
    pthread_mutex_unlock(&j->lock);
    return c;
}

static void *sizes_helper(void *arg)
{
    struct sizes_job *j = arg;
    for (size_t c; (c = sizes_chunk_take(j)) != SIZE_MAX;)
        sizes_chunk_compute(j, c);
    return NULL;
}

/* Make sure chunk c is computed (by us if nobody took it yet, else wait for it). */
static void sizes_chunk_wait(struct sizes_job *j, size_t c)
{
    for (;;) {
        pthread_mutex_lock(&j->lock);
        bool is_done = j->is_chunk_done[c];
        pthread_mutex_unlock(&j->lock);
        if (is_done)
            return;
        size_t mine = sizes_chunk_take(j);
        if (mine == SIZE_MAX)
            break;
        sizes_chunk_compute(j, mine);
    }
    pthread_mutex_lock(&j->lock);
    while (!j->is_chunk_done[c])
        pthread_cond_wait(&j->cond, &j->lock);
    pthread_mutex_unlock(&j->lock);
}

/* Run one static statement (cached) with up to two integer and two text parameters. */
static int exec_stmt(sqlite3 *db, const char *sql, int64_t a, int64_t b, const char *t1,
                     const char *t2, char **error_r)
{
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(db, sql, &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    int i = 1;
    sqlite3_bind_int64(st, i++, a);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, i++, b);
    if (t1 && sqlite3_bind_parameter_count(st) >= i)
        sqlite3_bind_text(st, i++, t1, -1, SQLITE_TRANSIENT);
    if (t2 && sqlite3_bind_parameter_count(st) >= i)
        sqlite3_bind_text(st, i++, t2, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        store_index_done(st);
        return -1;
    }
    store_index_done(st);
    return 0;
}

int store_maildir_locate(const char *path, const char *basename, char *location, size_t size)
{
    static const char *const subs[] = {"cur", "new"};
    size_t blen = strlen(basename);
    for (int i = 0; i < 2; i++) {
        char dir[4300];
        snprintf(dir, sizeof dir, "%s/%s", path, subs[i]);
        DIR *d = opendir(dir);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strncmp(de->d_name, basename, blen) == 0 &&
                (de->d_name[blen] == '\0' || de->d_name[blen] == ':')) {
                snprintf(location, size, "%s/%s", subs[i], de->d_name);
                closedir(d);
                return 0;
            }
        }
        closedir(d);
    }
    return 1;
}

/* Record a value Dovecot kept for a message (POP3 UIDL, GUID) in the cache table, where
 * store_message_get_cache() finds it. */
static int import_cache_add(sqlite3 *db, int64_t mailbox, uint32_t uid, const char *field,
                            const char *value, char **error_r)
{
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(db,
                            "INSERT OR REPLACE INTO cache(mailbox, uid, field, value)"
                            " VALUES(?,?,?,?)",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, mailbox);
    sqlite3_bind_int64(st, 2, uid);
    sqlite3_bind_text(st, 3, field, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
    store_index_done(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Insert the unknown entries of s (not is_matched) with the next UIDs, in s's order, into
 * the current transaction. Their sizes are computed meanwhile by helper threads (large
 * numbers only). The insert is one cached statement bound per file. */
static int index_unknown(sqlite3 *db, const char *path, struct scan *s, struct store_mbox_row *row,
                         struct sync_import *imp, char **error_r)
{
    struct sizes_job j = {.dfd_cur = -1, .dfd_new = -1};
    pthread_t helpers[SIZES_MAX_HELPERS];
    size_t n_helpers = 0;
    sqlite3_stmt *ins = NULL;
    int64_t old_cache = 0; /* PRAGMA cache_size before a large build (0: left alone) */
    bool is_trigger_dropped = false;
    uint64_t added_bytes = 0, added_messages = 0;
    int ret = -1;
    for (size_t i = 0; i < s->n; i++)
        j.n += !s->e[i].is_matched;
    if (j.n == 0)
        return 0;
    char dir[4300];
    snprintf(dir, sizeof dir, "%s/cur", path);
    j.dfd_cur = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(dir, sizeof dir, "%s/new", path);
    j.dfd_new = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    j.todo = malloc(j.n * sizeof *j.todo);
    j.n_chunks = (j.n + SIZES_CHUNK - 1) / SIZES_CHUNK;
    j.is_chunk_done = calloc(j.n_chunks, sizeof *j.is_chunk_done);
    if (!j.todo || !j.is_chunk_done) {
        store_error(error_r, "out of memory");
        goto out_nothreads;
    }
    for (size_t i = 0, k = 0; i < s->n; i++)
        if (!s->e[i].is_matched)
            j.todo[k++] = &s->e[i];
    pthread_mutex_init(&j.lock, NULL);
    pthread_cond_init(&j.cond, NULL);
    if (j.n >= SIZES_MIN_THREADED) {
        long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
        size_t want = n_cpu > SIZES_MAX_HELPERS ? SIZES_MAX_HELPERS : n_cpu > 1 ? (size_t)n_cpu : 1;
        while (n_helpers < want && pthread_create(&helpers[n_helpers], NULL, sizes_helper, &j) == 0)
            n_helpers++; /* none started: this thread does it all */
    }
    if (j.n >= SIZES_MIN_THREADED) { /* see SIZES_BUILD_CACHE_MAX_KIB */
        sqlite3_stmt *q = NULL;
        if (store_index_prepare(db, "PRAGMA cache_size", &q) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            old_cache = sqlite3_column_int64(q, 0);
        store_index_done(q);
        int64_t kib = (int64_t)(j.n / 4);
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA cache_size = -%lld",
                 (long long)(kib < SIZES_BUILD_CACHE_MAX_KIB ? kib : SIZES_BUILD_CACHE_MAX_KIB));
        if (old_cache != 0)
            (void)store_index_exec(db, sql, NULL); /* only a speed-up */
        /* The usage trigger runs an UPDATE per inserted row (a third of each insert):
         * drop it for this transaction and add the sums once. DDL is transactional: any
         * failure rolls back to the trigger as it was. */
        is_trigger_dropped = store_index_exec(db, "DROP TRIGGER IF EXISTS usage_add", NULL) == 0;
    }
    if (store_index_prepare(db,
                            "INSERT INTO messages(mailbox, uid, basename, location, flags,"
                            " keywords, size, vsize, internaldate, modseq)"
                            " VALUES(?,?,?,?,?,?,?,?,?,?)",
                            &ins) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        goto out;
    }
    for (size_t k = 0; k < j.n; k++) {
        if (k % SIZES_CHUNK == 0)
            sizes_chunk_wait(&j, k / SIZES_CHUNK);
        struct scan_entry *e = j.todo[k];
        if (e->is_gone)
            continue;
        /* the same base name in new/ and cur/ (caught between another program's link and
         * unlink): one message, indexed once (equal names sort next to each other) */
        const struct scan_entry *prev = e > s->e ? e - 1 : NULL;
        if (prev && (prev->is_matched || prev->is_indexed) &&
            base_cmp(prev->name, prev->base_len, e->name, e->base_len) == 0) {
            e->is_indexed = true;
            continue;
        }
        /* a file Dovecot listed keeps its UID (all below the list's next UID, which
         * row->uidnext starts at); any other gets the next one */
        const struct dovecot_uidlist_rec *rec =
            imp ? dovecot_uidlist_find(&imp->uidlist, e->name, e->base_len) : NULL;
        uint32_t uid = rec ? rec->uid : row->uidnext;
        if (!rec && (row->uidnext == 0 || row->uidnext == UINT32_MAX)) {
            store_error(error_r, "UID space exhausted");
            goto out;
        }
        char loc[600], keywords[STORE_MAX_KEYWORD_BYTES];
        entry_location(e, loc, sizeof loc);
        keywords[0] = '\0';
        if (imp && !e->is_new && e->name[e->base_len] == ':' &&
            !dovecot_keywords_of_info(&imp->keywords, e->name + e->base_len + 1, keywords,
                                      sizeof keywords))
            keywords[0] = '\0'; /* cannot happen: 26 names of <= 256 bytes */
        sqlite3_bind_int64(ins, 1, row->id);
        sqlite3_bind_int64(ins, 2, uid);
        sqlite3_bind_text(ins, 3, e->name, (int)e->base_len, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, loc, -1, SQLITE_STATIC);
        sqlite3_bind_int(ins, 5, (int)(entry_flags(e) & ~(unsigned)STORE_FLAG_RECENT));
        if (keywords[0] != '\0')
            sqlite3_bind_text(ins, 6, keywords, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(ins, 6);
        sqlite3_bind_int64(ins, 7, (int64_t)e->size);
        sqlite3_bind_int64(ins, 8, (int64_t)e->vsize);
        sqlite3_bind_int64(ins, 9, e->mtime);
        sqlite3_bind_int64(ins, 10, (int64_t)row->highestmodseq + 1);
        if (sqlite3_step(ins) != SQLITE_DONE) {
            store_error(error_r, "index: %s", sqlite3_errmsg(db));
            goto out;
        }
        sqlite3_reset(ins);
        if (rec) {
            imp->n_listed++;
            if ((rec->pop3_uidl && import_cache_add(db, row->id, uid, "pop3_uidl", rec->pop3_uidl,
                                                    error_r) < 0) ||
                (rec->guid && import_cache_add(db, row->id, uid, "guid", rec->guid, error_r) < 0))
                goto out;
        } else {
            row->uidnext++;
        }
        row->highestmodseq++;
        e->is_indexed = true;
        added_bytes += e->size;
        added_messages++;
    }
    if (is_trigger_dropped) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "UPDATE usage SET bytes = bytes + %llu, messages = messages + %llu WHERE id = 1",
                 (unsigned long long)added_bytes, (unsigned long long)added_messages);
        if (store_index_exec(db, sql, error_r) < 0 ||
            store_index_exec(db, STORE_INDEX_USAGE_ADD_TRIGGER, error_r) < 0)
            goto out; /* the caller rolls back, the trigger included */
    }
    ret = 0;
out:
    /* helpers stop once every chunk is taken; take the rest so they end soon */
    pthread_mutex_lock(&j.lock);
    j.next_chunk = j.n_chunks;
    pthread_mutex_unlock(&j.lock);
    for (size_t h = 0; h < n_helpers; h++)
        pthread_join(helpers[h], NULL);
    pthread_cond_destroy(&j.cond);
    pthread_mutex_destroy(&j.lock);
out_nothreads:
    store_index_done(ins);
    if (old_cache != 0) {
        /* back to the usual size: SQLite frees the pages beyond it (the dirty ones are
         * written at commit either way) */
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA cache_size = %lld", (long long)old_cache);
        (void)store_index_exec(db, sql, NULL);
    }
    free(j.todo);
    free(j.is_chunk_done);
    if (j.dfd_cur >= 0)
        close(j.dfd_cur);
    if (j.dfd_new >= 0)
        close(j.dfd_new);
    return ret;
}

/* Bring the index of one folder in line with it (store_sync_locked); imp: a first
 * build taking over Dovecot's UIDs, or NULL. */
static int sync_folder(sqlite3 *db, const char *path, struct store_mbox_row *row, bool move_new,
                       struct sync_import *imp, char **error_r)
{
    char cur_dir[4300], new_dir[4300];
    snprintf(cur_dir, sizeof cur_dir, "%s/cur", path);
    snprintf(new_dir, sizeof new_dir, "%s/new", path);
    struct stat st_cur, st_new;
    if (stat(cur_dir, &st_cur) < 0 || stat(new_dir, &st_new) < 0) {
        store_error(error_r, "stat %s: %s", path, strerror(errno));
        return -1;
    }
    int64_t now = now_ns();
    int64_t cur_m = mtime_ns(&st_cur);
    int64_t new_m = mtime_ns(&st_new);
    bool scan_cur = !mtime_is_known(row->cur_mtime, cur_m, now);
    bool scan_new = !mtime_is_known(row->new_mtime, new_m, now);

    struct scan s = {0};
    sqlite3_stmt *st = NULL;
    int ret = -1;
    const struct store_mbox_row orig = *row;
    size_t n_moved = 0, n_vanished = 0;
    if (!scan_new && !scan_cur)
        goto done; /* neither folder changed since it was last read: nothing to do */
    if ((scan_new && scan_dir(&s, new_dir, true, error_r) < 0) ||
        (scan_cur && scan_dir(&s, cur_dir, false, error_r) < 0))
        goto out;
    if (s.n > 1)
        qsort(s.e, s.n, sizeof *s.e, scan_entry_cmp);

    /* 1. rows: vanished files and changed flags / locations */
    if (store_index_prepare(db,
                            "SELECT uid, basename, location, flags, modseq FROM messages"
                            " WHERE mailbox = ?",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(st, 1, row->id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint32_t uid = (uint32_t)sqlite3_column_int64(st, 0);
        const char *base = (const char *)sqlite3_column_text(st, 1);
        const char *loc = (const char *)sqlite3_column_text(st, 2);
        unsigned flags = (unsigned)sqlite3_column_int(st, 3);
        int64_t modseq = sqlite3_column_int64(st, 4);
        if (!base || !loc)
            continue;
        struct scan_entry *e = scan_find(&s, base);
        if (!e) {
            if ((!scan_cur && strncmp(loc, "cur/", 4) == 0) ||
                (!scan_new && strncmp(loc, "new/", 4) == 0))
                continue; /* its folder is unchanged since the last full scan */
            /* gone from disk: expunged behind our back */
            if (exec_stmt(db, "DELETE FROM messages WHERE mailbox = ? AND uid = ?", row->id, uid,
                          NULL, NULL, error_r) < 0 ||
                exec_stmt(db, "DELETE FROM cache WHERE mailbox = ? AND uid = ?", row->id, uid,
                          NULL, NULL, error_r) < 0 ||
                store_index_tombstone_add(db, row->id, uid, row->highestmodseq + 1, error_r) < 0)
                goto out;
            row->highestmodseq++;
            n_vanished++;
            continue;
        }
        e->is_matched = true;
        char eloc[600];
        entry_location(e, eloc, sizeof eloc);
        unsigned eflags = entry_flags(e);
        /* a file still in new/ carries no flags in its name: keep the indexed ones */
        if (e->is_new)
            eflags = flags;
        if (eflags != flags)
            row->highestmodseq++; /* a flag change is a CONDSTORE modification */
        if (eflags != flags || strcmp(eloc, loc) != 0) {
            sqlite3_stmt *up = NULL;
            if (store_index_prepare(db,
                                    "UPDATE messages SET flags = ?, modseq = ?, location = ?"
                                    " WHERE mailbox = ? AND uid = ?",
                                    &up) != SQLITE_OK) {
                store_error(error_r, "index: %s", sqlite3_errmsg(db));
                goto out;
            }
            sqlite3_bind_int(up, 1, (int)eflags);
            sqlite3_bind_int64(up, 2, eflags != flags ? (int64_t)row->highestmodseq : modseq);
            sqlite3_bind_text(up, 3, eloc, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(up, 4, row->id);
            sqlite3_bind_int64(up, 5, uid);
            int urc = sqlite3_step(up);
            if (urc != SQLITE_DONE)
                store_error(error_r, "index: %s", sqlite3_errmsg(db));
            store_index_done(up);
            if (urc != SQLITE_DONE)
                goto out;
        }
    }
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        goto out;
    }
    store_index_done(st);
    st = NULL;
    if (store_index_tombstones_bound(db, row->id, row->highestmodseq, n_vanished, error_r) < 0)
        goto out;

    /* 2. unknown files get the next UIDs, in name (= time) order */
    if (index_unknown(db, path, &s, row, imp, error_r) < 0)
        goto out;

    /* 3. SELECT read-write: new/ -> cur/ (the message is no longer "new" to MUAs) */
    if (move_new) {
        for (size_t i = 0; i < s.n; i++) {
            struct scan_entry *e = &s.e[i];
            if (!e->is_new)
                continue;
            char base[512], to_name[600], from[5000], to[5000], loc[700];
            snprintf(base, sizeof base, "%.*s", (int)e->base_len, e->name);
            sqlite3_stmt *q = NULL;
            unsigned flags = 0;
            if (store_index_prepare(db,
                                    "SELECT flags FROM messages WHERE mailbox = ? AND basename = ?",
                                    &q) == SQLITE_OK) {
                sqlite3_bind_int64(q, 1, row->id);
                sqlite3_bind_text(q, 2, base, -1, SQLITE_STATIC);
                if (sqlite3_step(q) == SQLITE_ROW)
                    flags = (unsigned)sqlite3_column_int(q, 0);
            }
            store_index_done(q);
            if (store_maildir_name_with_flags(base, flags, NULL, to_name, sizeof to_name) < 0)
                continue;
            snprintf(from, sizeof from, "%s/new/%s", path, e->name);
            snprintf(to, sizeof to, "%s/cur/%s", path, to_name);
            if (rename(from, to) < 0)
                continue; /* moved by someone else: the next scan finds it */
            n_moved++;
            snprintf(loc, sizeof loc, "cur/%s", to_name);
            sqlite3_stmt *up = NULL;
            if (store_index_prepare(db,
                                    "UPDATE messages SET location = ? WHERE mailbox = ? AND "
                                    "basename = ?",
                                    &up) == SQLITE_OK) {
                sqlite3_bind_text(up, 1, loc, -1, SQLITE_STATIC);
                sqlite3_bind_int64(up, 2, row->id);
                sqlite3_bind_text(up, 3, base, -1, SQLITE_STATIC);
                sqlite3_step(up);
            }
            store_index_done(up);
        }
    }

done:
    if (scan_cur)
        row->cur_mtime = mtime_record(cur_m, now);
    if (scan_new)
        row->new_mtime = mtime_record(new_m, now);
    if (n_moved > 0) {
        /* our own new/ -> cur/ moves changed both folders after the scan */
        store_sync_own_change(&row->new_mtime, new_m, store_sync_dir_mtime(new_dir));
        store_sync_own_change(&row->cur_mtime, cur_m, store_sync_dir_mtime(cur_dir));
    }
    /* NOOP/IDLE syncs usually change nothing: then write nothing */
    bool is_changed = orig.uidnext != row->uidnext || orig.highestmodseq != row->highestmodseq ||
                      orig.cur_mtime != row->cur_mtime || orig.new_mtime != row->new_mtime ||
                      orig.first_recent_uid != row->first_recent_uid;
    if (is_changed && store_index_mailbox_save(db, row, error_r) < 0)
        goto out;
    ret = 0;
out:
    store_index_done(st);
    scan_free(&s);
    return ret;
}

/* Read and parse <path>/<name> with parse(); 1 absent, 0 parsed, -1 unreadable or
 * malformed (reason in *error_r). */
static int import_read(const char *path, const char *name, size_t max,
                       int (*parse)(const char *, size_t, void *, char **), void *out,
                       char **error_r)
{
    char file[4400];
    snprintf(file, sizeof file, "%s/%s", path, name);
    char *data = NULL;
    size_t len = 0;
    int r = store_io_read_file(file, max, &data, &len, error_r);
    if (r != 0)
        return r;
    r = parse(data, len, out, error_r);
    free(data);
    return r < 0 ? -1 : 0;
}

static int parse_uidlist(const char *d, size_t n, void *out, char **error_r)
{
    return dovecot_uidlist_parse(d, n, out, error_r);
}

static int parse_keywords(const char *d, size_t n, void *out, char **error_r)
{
    return dovecot_keywords_parse(d, n, out, error_r);
}

/* The mailbox takes Dovecot's UIDVALIDITY; meta's last_uidvalidity stays the highest
 * value this index ever handed out or took over (store_index_next_uidvalidity). */
static int import_uidvalidity(sqlite3 *db, struct store_mbox_row *row, uint32_t uidvalidity,
                              char **error_r)
{
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_ERROR;
    if (store_index_prepare(db, "UPDATE mailboxes SET uidvalidity = ? WHERE id = ?", &st) ==
        SQLITE_OK) {
        sqlite3_bind_int64(st, 1, uidvalidity);
        sqlite3_bind_int64(st, 2, row->id);
        rc = sqlite3_step(st);
    }
    store_index_done(st);
    st = NULL;
    if (rc == SQLITE_DONE &&
        store_index_prepare(db,
                            "INSERT OR REPLACE INTO meta(key, value) VALUES('last_uidvalidity',"
                            " MAX(?, COALESCE((SELECT CAST(value AS INTEGER) FROM meta"
                            " WHERE key = 'last_uidvalidity'), 0)))",
                            &st) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, uidvalidity);
        rc = sqlite3_step(st);
    } else {
        rc = SQLITE_ERROR;
    }
    if (rc != SQLITE_DONE)
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
    store_index_done(st);
    if (rc != SQLITE_DONE)
        return -1;
    row->uidvalidity = uidvalidity;
    return 0;
}

int store_sync_import_dovecot(sqlite3 *db, const char *path, struct store_mbox_row *row,
                              char **error_r)
{
    if (row->uidnext != 1)
        return 0; /* UIDs were handed out already: clients know this mailbox from us */
    struct sync_import imp = {0};
    char *reason = NULL;
    int r = import_read(path, DOVECOT_UIDLIST_NAME, DOVECOT_UIDLIST_MAX_BYTES, parse_uidlist,
                        &imp.uidlist, &reason);
    if (r == 1)
        return 0; /* not a Dovecot folder */
    if (r < 0) {
        log_warning("store", "%s/%s: %s; its messages get new UIDs", path, DOVECOT_UIDLIST_NAME,
                    reason ? reason : "unreadable");
        free(reason);
        /* hand them out now, so the next sync does not read (and log) the file again */
        return sync_folder(db, path, row, false, NULL, error_r);
    }
    r = import_read(path, DOVECOT_KEYWORDS_NAME, DOVECOT_KEYWORDS_MAX_BYTES, parse_keywords,
                    &imp.keywords, &reason);
    if (r < 0 || imp.keywords.n_skipped > 0) {
        log_warning("store", "%s/%s: %s; keywords of its letters are %s", path,
                    DOVECOT_KEYWORDS_NAME, reason ? reason : "lines skipped",
                    r < 0 ? "dropped" : "taken where valid");
        free(reason);
        reason = NULL;
    }
    int ret = -1;
    if (import_uidvalidity(db, row, imp.uidlist.uidvalidity, error_r) < 0)
        goto out;
    row->uidnext = imp.uidlist.uidnext;
    if (sync_folder(db, path, row, false, &imp, error_r) < 0)
        goto out;
    log_info("store", "%s: took over Dovecot's UIDs: uidvalidity=%u, uidnext=%u, %zu of %zu listed"
             " files found", path, row->uidvalidity, row->uidnext, imp.n_listed, imp.uidlist.n);
    ret = 0;
out:
    dovecot_uidlist_free(&imp.uidlist);
    dovecot_keywords_free(&imp.keywords);
    return ret;
}

int store_sync_locked(struct store_user *u, const char *path, struct store_mbox_row *row,
                      bool move_new, char **error_r)
{
    if (row->uidnext == 1 && store_sync_import_dovecot(u->db, path, row, error_r) < 0)
        return -1;
    return sync_folder(u->db, path, row, move_new, NULL, error_r);
}
