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

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A directory mtime younger than this is not trusted to reveal later changes. */
#define SYNC_MTIME_SLACK_NS (2LL * 1000000000LL)
#define SYNC_MAX_FILES      10000000

struct scan_entry {
    char *name; /* file name in its directory */
    size_t base_len;
    bool is_new; /* in new/ (else cur/) */
    bool is_matched;
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

/* Size and CRLF size of a file not named with S=/W= (written by another program). */
static int file_sizes(const char *path, uint64_t *size_r, uint64_t *vsize_r, time_t *mtime_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -1;
    }
    *mtime_r = st.st_mtime;
    *size_r = (uint64_t)st.st_size;
    uint64_t lines = 0;
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
    close(fd);
    *vsize_r = *size_r + lines;
    return 0;
}

static int exec_stmt(sqlite3 *db, const char *sql, int64_t a, int64_t b, const char *t1,
                     const char *t2, char **error_r)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
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
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
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

int store_sync_locked(struct store_user *u, const char *path, struct store_mbox_row *row,
                      bool move_new, char **error_r)
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
    size_t n_moved = 0;
    if (!scan_new && !scan_cur)
        goto done; /* neither folder changed since it was last read: nothing to do */
    if ((scan_new && scan_dir(&s, new_dir, true, error_r) < 0) ||
        (scan_cur && scan_dir(&s, cur_dir, false, error_r) < 0))
        goto out;
    if (s.n > 1)
        qsort(s.e, s.n, sizeof *s.e, scan_entry_cmp);

    /* 1. rows: vanished files and changed flags / locations */
    if (sqlite3_prepare_v2(u->db,
                           "SELECT uid, basename, location, flags, modseq FROM messages"
                           " WHERE mailbox = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
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
            if (exec_stmt(u->db, "DELETE FROM messages WHERE mailbox = ? AND uid = ?", row->id, uid,
                          NULL, NULL, error_r) < 0 ||
                exec_stmt(u->db, "DELETE FROM cache WHERE mailbox = ? AND uid = ?", row->id, uid,
                          NULL, NULL, error_r) < 0)
                goto out;
            row->highestmodseq++;
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
            if (sqlite3_prepare_v2(u->db,
                                   "UPDATE messages SET flags = ?, modseq = ?, location = ?"
                                   " WHERE mailbox = ? AND uid = ?",
                                   -1, &up, NULL) != SQLITE_OK) {
                store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
                goto out;
            }
            sqlite3_bind_int(up, 1, (int)eflags);
            sqlite3_bind_int64(up, 2, eflags != flags ? (int64_t)row->highestmodseq : modseq);
            sqlite3_bind_text(up, 3, eloc, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(up, 4, row->id);
            sqlite3_bind_int64(up, 5, uid);
            int urc = sqlite3_step(up);
            sqlite3_finalize(up);
            if (urc != SQLITE_DONE) {
                store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
                goto out;
            }
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        goto out;
    }

    /* 2. unknown files get the next UIDs, in name (= time) order */
    for (size_t i = 0; i < s.n; i++) {
        struct scan_entry *e = &s.e[i];
        if (e->is_matched)
            continue;
        char base[512], eloc[600], fpath[5000];
        snprintf(base, sizeof base, "%.*s", (int)e->base_len, e->name);
        entry_location(e, eloc, sizeof eloc);
        snprintf(fpath, sizeof fpath, "%s/%s", path, eloc);
        uint64_t size = 0, vsize = 0;
        time_t mtime = 0;
        struct stat fst;
        if (store_maildir_name_size(base, 'S', &size) &&
            store_maildir_name_size(base, 'W', &vsize) && stat(fpath, &fst) == 0) {
            mtime = fst.st_mtime;
        } else if (file_sizes(fpath, &size, &vsize, &mtime) < 0) {
            continue; /* vanished while we looked: nothing to index */
        }
        uint32_t uid;
        if (store_index_message_add(u->db, row, base, eloc, entry_flags(e), NULL, size, vsize,
                                    mtime, &uid, error_r) < 0)
            goto out;
    }

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
            if (sqlite3_prepare_v2(u->db,
                                   "SELECT flags FROM messages WHERE mailbox = ? AND basename = ?",
                                   -1, &q, NULL) == SQLITE_OK) {
                sqlite3_bind_int64(q, 1, row->id);
                sqlite3_bind_text(q, 2, base, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(q) == SQLITE_ROW)
                    flags = (unsigned)sqlite3_column_int(q, 0);
            }
            sqlite3_finalize(q);
            if (store_maildir_name_with_flags(base, flags, NULL, to_name, sizeof to_name) < 0)
                continue;
            snprintf(from, sizeof from, "%s/new/%s", path, e->name);
            snprintf(to, sizeof to, "%s/cur/%s", path, to_name);
            if (rename(from, to) < 0)
                continue; /* moved by someone else: the next scan finds it */
            n_moved++;
            snprintf(loc, sizeof loc, "cur/%s", to_name);
            sqlite3_stmt *up = NULL;
            if (sqlite3_prepare_v2(u->db,
                                   "UPDATE messages SET location = ? WHERE mailbox = ? AND "
                                   "basename = ?",
                                   -1, &up, NULL) == SQLITE_OK) {
                sqlite3_bind_text(up, 1, loc, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(up, 2, row->id);
                sqlite3_bind_text(up, 3, base, -1, SQLITE_TRANSIENT);
                sqlite3_step(up);
            }
            sqlite3_finalize(up);
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
    if (is_changed && store_index_mailbox_save(u->db, row, error_r) < 0)
        goto out;
    ret = 0;
out:
    sqlite3_finalize(st);
    scan_free(&s);
    return ret;
}
