/*
 * user.c - a user's store: opening (Maildir, index, special-use mailboxes), the mailbox
 * tree (list, create, delete, rename, subscribe, status) and the POP3 maildrop lock.
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
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* RFC 6154 special-use mailboxes created for every user (names as Dovecot's defaults). */
static const struct {
    const char *name, *use;
} store_specials[] = {
    {"Drafts", "\\Drafts"}, {"Sent", "\\Sent"},       {"Trash", "\\Trash"},
    {"Junk", "\\Junk"},     {"Archive", "\\Archive"},
};

static void user_import_subscriptions(struct store_user *u);

static int user_create_specials(struct store_user *u, char **error_r)
{
    sqlite3_stmt *st = NULL;
    bool is_done = false;
    if (store_index_prepare(u->db, "SELECT 1 FROM meta WHERE key = 'specials'", &st) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        is_done = true;
    store_index_done(st);
    if (is_done)
        return 0;
    /* A Maildir moved in from Dovecot keeps its folder list as its clients know it: the
     * special-use marks go on the folders it has, and none is added (a client syncing
     * every folder would otherwise find new ones). */
    char inbox_uidlist[4300];
    snprintf(inbox_uidlist, sizeof inbox_uidlist, "%s/Maildir/%s", u->home, DOVECOT_UIDLIST_NAME);
    bool is_moved_in = access(inbox_uidlist, F_OK) == 0;
    bool has_folder[sizeof store_specials / sizeof store_specials[0]];
    for (size_t i = 0; i < sizeof store_specials / sizeof store_specials[0]; i++) {
        char path[4200], cur[4300];
        if (store_mailbox_path(u->home, store_specials[i].name, path, sizeof path) < 0) {
            store_error(error_r, "create %s: name too long", store_specials[i].name);
            return -1;
        }
        snprintf(cur, sizeof cur, "%s/cur", path);
        has_folder[i] = !is_moved_in || access(cur, F_OK) == 0;
        if (has_folder[i] && store_maildir_create(path, false) < 0) {
            store_error(error_r, "create %s: %s", store_specials[i].name, strerror(errno));
            return -1;
        }
    }
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    for (size_t i = 0; i < sizeof store_specials / sizeof store_specials[0]; i++) {
        struct store_mbox_row row;
        if (!has_folder[i])
            continue;
        int r = store_index_mailbox_get(u->db, store_specials[i].name, &row, error_r);
        if (r == 1) {
            char path[4200];
            r = store_index_mailbox_add(u->db, store_specials[i].name, store_specials[i].use, &row,
                                        error_r);
            /* a Sent/Trash/... moved in from Dovecot keeps its UIDs */
            if (r == 0 &&
                (store_mailbox_path(u->home, store_specials[i].name, path, sizeof path) < 0 ||
                 store_sync_import_dovecot(u->db, path, &row, error_r) < 0))
                r = -1;
        } else if (r == 0) {
            sqlite3_stmt *up = NULL;
            if (store_index_prepare(u->db,
                                    "UPDATE mailboxes SET special_use = ? WHERE id = ? AND "
                                    "special_use IS NULL",
                                    &up) == SQLITE_OK) {
                sqlite3_bind_text(up, 1, store_specials[i].use, -1, SQLITE_STATIC);
                sqlite3_bind_int64(up, 2, row.id);
                sqlite3_step(up);
            }
            store_index_done(up);
        }
        if (r < 0) {
            store_index_rollback(u->db);
            return -1;
        }
    }
    if (store_index_step_static(
            u->db, "INSERT OR REPLACE INTO meta(key, value) VALUES('specials','1')", error_r) < 0) {
        store_index_rollback(u->db);
        return -1;
    }
    if (store_index_commit(u->db, error_r) < 0)
        return -1;
    /* the first open of this index: a Maildir moved in from Dovecot brings its own */
    user_import_subscriptions(u);
    return 0;
}

static void remove_tree(const char *path, int depth);

/* Replace every subscription with the names given (canonical), in one transaction. */
static int user_subscriptions_set(struct store_user *u, char *const *names, size_t n,
                                  char **error_r)
{
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    if (store_index_step_static(u->db, "DELETE FROM subscriptions", error_r) < 0)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (store_index_subscription_set(u->db, names[i], true, error_r) < 0)
            goto fail;
    return store_index_commit(u->db, error_r);
fail:
    store_index_rollback(u->db);
    return -1;
}

/* First open of a Maildir moved in from Dovecot: its subscriptions file (dovecot.h)
 * replaces the default ones (INBOX and the special-use mailboxes), so LSUB and LIST
 * (SUBSCRIBED) show what Dovecot showed. Subscriptions are names (RFC 3501 §6.3.6), so one
 * to a folder that does not exist is kept too (LIST (SUBSCRIBED) shows it \NonExistent). */
static void user_import_subscriptions(struct store_user *u)
{
    char file[4300], *data = NULL, *error = NULL;
    size_t len = 0;
    snprintf(file, sizeof file, "%s/Maildir/%s", u->home, DOVECOT_SUBSCRIPTIONS_NAME);
    int r = store_io_read_file(file, DOVECOT_SUBSCRIPTIONS_MAX_BYTES, &data, &len, &error);
    if (r == 1)
        return;
    struct dovecot_subscriptions subs = {0};
    if (r < 0 || dovecot_subscriptions_parse(data, len, &subs, &error) < 0) {
        log_warning("store", "%s: %s; default subscriptions kept", file,
                    error ? error : "unreadable");
        free(data);
        free(error);
        return;
    }
    free(data);
    char **names = calloc(subs.n > 0 ? subs.n : 1, sizeof *names);
    size_t n_names = 0, n_missing = 0;
    for (size_t i = 0; names && i < subs.n; i++) {
        char canon[300], path[4200], dir[300];
        struct store_mbox_row row;
        char *err = NULL;
        /* a folder without an index row gets one here (and keeps Dovecot's UIDs) */
        if (store_mailbox_lookup(u, subs.names[i], canon, sizeof canon, path, sizeof path, &row,
                                 &err) != 0) {
            n_missing++;
            free(err);
            err = NULL;
            if (store_mailbox_name_to_dir(subs.names[i], dir, sizeof dir, canon, sizeof canon,
                                          &err) < 0) {
                free(err);
                continue;
            }
        }
        free(err);
        names[n_names] = strdup(canon);
        if (names[n_names])
            n_names++;
    }
    if (!names || user_subscriptions_set(u, names, n_names, &error) < 0)
        log_warning("store", "%s: %s; default subscriptions kept", file,
                    error ? error : "out of memory");
    else
        log_info("store",
                 "%s: took over Dovecot's subscriptions: %zu names (%zu without a folder),"
                 " %zu unusable names",
                 file, n_names, n_missing, subs.n_skipped);
    free(error);
    for (size_t i = 0; names && i < n_names; i++)
        free(names[i]);
    free(names);
    dovecot_subscriptions_free(&subs);
}

/* Maildir spec: a file left in tmp/ for 36 hours is debris of a crashed delivery. */
#define STORE_TMP_MAX_AGE (36 * 3600)

static void tmp_cleanup(const char *folder, time_t now)
{
    char dir[4300];
    snprintf(dir, sizeof dir, "%s/tmp", folder);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    size_t count = 0;
    while ((de = readdir(d)) != NULL && count++ < 100000) {
        if (de->d_name[0] == '.')
            continue;
        struct stat st;
        /* ctime, not mtime alone: APPEND sets a file's mtime to its internal date (maybe
         * years ago) while it is still in tmp/ (issue 9: a login's cleanup removed a
         * message being appended). futimens() sets ctime to now; only the kernel does. */
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            st.st_mtime < now - STORE_TMP_MAX_AGE && st.st_ctime < now - STORE_TMP_MAX_AGE)
            (void)unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

/* At login: finish deletes interrupted by a crash ("..deleted-*" folders) and remove
 * stale tmp/ files, so neither eats disk space forever. */
time_t (*store_clock_hook)(void);

static void user_cleanup(const char *maildir)
{
    time_t now = store_clock_hook ? store_clock_hook() : time(NULL);
    tmp_cleanup(maildir, now);
    DIR *d = opendir(maildir);
    if (!d)
        return;
    struct dirent *de;
    size_t count = 0;
    while ((de = readdir(d)) != NULL && count++ < 100000) {
        if (de->d_name[0] != '.' || strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[4600];
        snprintf(path, sizeof path, "%s/%.255s", maildir, de->d_name);
        if (strncmp(de->d_name, "..deleted-", 10) == 0)
            remove_tree(path, 0);
        else
            tmp_cleanup(path, now);
    }
    closedir(d);
}

const char *store_user_home(const struct store_user *u)
{
    return u ? u->home : NULL;
}

int store_user_open(const char *home, const char *user, struct store_user **user_r, char **error_r)
{
    struct store_user *u = calloc(1, sizeof *u);
    if (!u || !(u->home = strdup(home)) || !(u->user = strdup(user ? user : ""))) {
        if (u)
            free(u->home);
        free(u);
        store_error(error_r, "out of memory");
        return -1;
    }
    u->pop3_lock_fd = -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/Maildir", home);
    struct store_mbox_row row;
    if (store_io_mkdir_p(path) < 0 || store_maildir_create(path, true) < 0) {
        store_error(error_r, "create %s: %s", path, strerror(errno));
        goto fail;
    }
    user_cleanup(path);
    if (store_user_attach(u, error_r) < 0 ||
        store_index_mailbox_ensure(u->db, home, "INBOX", &row, error_r) < 0 ||
        user_create_specials(u, error_r) < 0)
        goto fail;
    *user_r = u;
    return 0;
fail:
    store_user_close(u);
    return -1;
}

int store_user_attach(struct store_user *u, char **error_r)
{
    if (!u->db)
        u->db = store_index_acquire(u->home, error_r);
    return u->db ? 0 : -1;
}

void store_user_idle(struct store_user *u)
{
    if (!u || !u->db)
        return;
    store_index_release(u->home, u->db);
    u->db = NULL;
}

void store_user_close(struct store_user *u)
{
    if (!u)
        return;
    store_pop3_unlock(u);
    store_user_idle(u);
    free(u->home);
    free(u->user);
    free(u);
}

int store_mailbox_lookup(struct store_user *u, const char *name, char *canon_r, size_t canon_size,
                         char *path_r, size_t path_size, struct store_mbox_row *row_r,
                         char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char dir[300];
    if (store_mailbox_name_to_dir(name, dir, sizeof dir, canon_r, canon_size, error_r) < 0)
        return -1;
    if (snprintf(path_r, path_size, "%s/Maildir%s%s", u->home, dir[0] ? "/" : "", dir) >=
        (int)path_size) {
        store_error(error_r, "Mailbox name too long");
        return -1;
    }
    char cur[4300];
    snprintf(cur, sizeof cur, "%s/cur", path_r);
    struct stat st;
    if (stat(cur, &st) < 0) {
        store_error(error_r, "Mailbox doesn't exist: %s", canon_r);
        return -1;
    }
    int r = store_index_mailbox_get(u->db, canon_r, row_r, error_r);
    if (r == 1) /* made by another program: index it */
        r = store_index_mailbox_ensure(u->db, u->home, canon_r, row_r, error_r);
    return r == 0 ? 0 : -1;
}

/* ---- list ---------------------------------------------------------------------------- */

struct name_list {
    struct store_mailbox_info *v;
    size_t n, cap;
};

static struct store_mailbox_info *list_find(struct name_list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, name) == 0)
            return &l->v[i];
    return NULL;
}

static struct store_mailbox_info *list_add(struct name_list *l, const char *name)
{
    struct store_mailbox_info *f = list_find(l, name);
    if (f)
        return f;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        struct store_mailbox_info *nv = realloc(l->v, ncap * sizeof *nv);
        if (!nv)
            return NULL;
        l->v = nv;
        l->cap = ncap;
    }
    struct store_mailbox_info *m = &l->v[l->n];
    memset(m, 0, sizeof *m);
    m->name = strdup(name);
    if (!m->name)
        return NULL;
    l->n++;
    return m;
}

static const char *special_use_const(const char *s)
{
    for (size_t i = 0; s && i < sizeof store_specials / sizeof store_specials[0]; i++)
        if (strcasecmp(s, store_specials[i].use) == 0)
            return store_specials[i].use;
    return NULL;
}

static int info_cmp(const void *a, const void *b)
{
    const struct store_mailbox_info *x = a, *y = b;
    /* INBOX first, then byte order */
    bool xi = strcmp(x->name, "INBOX") == 0, yi = strcmp(y->name, "INBOX") == 0;
    if (xi != yi)
        return xi ? -1 : 1;
    return strcmp(x->name, y->name);
}

int store_mailbox_list(struct store_user *u, struct store_mailbox_info **list_r, size_t *n_r,
                       char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    struct name_list l = {0};
    /* folders made by other programs get their index rows first */
    char maildir[4200];
    snprintf(maildir, sizeof maildir, "%s/Maildir", u->home);
    DIR *d = opendir(maildir);
    if (d) {
        struct dirent *de;
        size_t count = 0;
        while ((de = readdir(d)) != NULL && count++ < 100000) {
            if (de->d_name[0] != '.' || de->d_name[1] == '\0' || de->d_name[1] == '.')
                continue;
            char name[300];
            snprintf(name, sizeof name, "%s", de->d_name + 1);
            for (char *p = name; *p; p++)
                if (*p == '.')
                    *p = '/';
            char canon[300], path[4200];
            struct store_mbox_row row;
            char *err = NULL;
            (void)store_mailbox_lookup(u, name, canon, sizeof canon, path, sizeof path, &row, &err);
            free(err);
        }
        closedir(d);
    }
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(u->db,
                            "SELECT name, special_use,"
                            " EXISTS(SELECT 1 FROM subscriptions s WHERE s.name = mailboxes.name)"
                            " FROM mailboxes",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        char path[4200], cur[4300];
        if (!name || store_mailbox_path(u->home, name, path, sizeof path) < 0)
            continue;
        snprintf(cur, sizeof cur, "%s/cur", path);
        if (access(cur, F_OK) != 0)
            continue; /* removed by another program; the row is stale */
        struct store_mailbox_info *m = list_add(&l, name);
        if (!m)
            goto oom;
        m->noselect = false;
        m->special_use = special_use_const((const char *)sqlite3_column_text(st, 1));
        m->subscribed = sqlite3_column_int(st, 2) != 0;
    }
    store_index_done(st);
    st = NULL;
    /* Maildir++ needs no parent folder for "A/B": show a missing "A" as \Noselect. */
    for (size_t i = 0, n0 = l.n; i < n0; i++) {
        char name[300];
        snprintf(name, sizeof name, "%s", l.v[i].name);
        for (char *slash = strrchr(name, '/'); slash; slash = strrchr(name, '/')) {
            *slash = '\0';
            if (!list_find(&l, name)) {
                struct store_mailbox_info *m = list_add(&l, name);
                if (!m)
                    goto oom;
                m->noselect = true;
            }
        }
    }
    /* RFC 3501 §6.3.6: a subscribed name stays subscribed when its mailbox goes away;
     * such names are listed as nonexistent (LSUB, LIST (SUBSCRIBED)). A parent that is
     * only a name for its children is subscribed too when its own name is. */
    if (store_index_prepare(u->db, "SELECT name FROM subscriptions", &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        goto fail;
    }
    while (sqlite3_step(st) == SQLITE_ROW && l.n < STORE_MAX_MAILBOXES * 2) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (!name)
            continue;
        struct store_mailbox_info *m = list_find(&l, name);
        if (m) {
            m->subscribed = true;
            continue;
        }
        m = list_add(&l, name);
        if (!m)
            goto oom;
        m->subscribed = true;
        m->noselect = true;
        m->is_nonexistent = true;
    }
    store_index_done(st);
    st = NULL;
    for (size_t i = 0; i < l.n; i++) {
        size_t len = strlen(l.v[i].name);
        for (size_t j = 0; j < l.n && !l.v[i].has_children; j++)
            l.v[i].has_children = !l.v[j].is_nonexistent &&
                                  strncmp(l.v[j].name, l.v[i].name, len) == 0 &&
                                  l.v[j].name[len] == '/';
    }
    if (l.n > 1)
        qsort(l.v, l.n, sizeof *l.v, info_cmp);
    *list_r = l.v;
    *n_r = l.n;
    return 0;
oom:
    store_error(error_r, "out of memory");
fail:
    store_index_done(st);
    store_mailbox_info_free(l.v, l.n);
    return -1;
}

void store_mailbox_info_free(struct store_mailbox_info *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i].name);
    free(list);
}

/* ---- create / delete / rename / subscribe ------------------------------------------- */

int store_mailbox_create(struct store_user *u, const char *name, char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s", name);
    size_t len = strlen(tmp);
    /* RFC 3501 §6.3.3: a trailing separator only says the name will have inferiors. */
    if (len > 1 && tmp[len - 1] == '/')
        tmp[len - 1] = '\0';
    char dir[300], canon[300], path[4200];
    if (store_mailbox_name_to_dir(tmp, dir, sizeof dir, canon, sizeof canon, error_r) < 0)
        return -1;
    snprintf(path, sizeof path, "%s/Maildir%s%s", u->home, dir[0] ? "/" : "", dir);
    char cur[4300];
    snprintf(cur, sizeof cur, "%s/cur", path);
    if (strcmp(canon, "INBOX") == 0 || access(cur, F_OK) == 0) {
        store_error(error_r, "Mailbox already exists");
        return -1;
    }
    sqlite3_stmt *cnt = NULL;
    int64_t n_boxes = 0;
    if (store_index_prepare(u->db, "SELECT COUNT(*) FROM mailboxes", &cnt) == SQLITE_OK &&
        sqlite3_step(cnt) == SQLITE_ROW)
        n_boxes = sqlite3_column_int64(cnt, 0);
    store_index_done(cnt);
    if (n_boxes >= STORE_MAX_MAILBOXES) {
        store_error(error_r, "Too many mailboxes");
        return -1;
    }
    if (store_maildir_create(path, false) < 0) {
        store_error(error_r, "create %s: %s", path, strerror(errno));
        return -1;
    }
    char maildir[4200];
    snprintf(maildir, sizeof maildir, "%s/Maildir", u->home);
    (void)store_io_fsync_dir(maildir);
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    /* a stale row of a folder removed behind our back is replaced (new UIDVALIDITY) */
    struct store_mbox_row row;
    int r = store_index_mailbox_get(u->db, canon, &row, error_r);
    if (r == 0) {
        sqlite3_stmt *st = NULL;
        for (int k = 0; k < 4; k++) {
            static const char *const sql[] = {"DELETE FROM messages WHERE mailbox = ?",
                                              "DELETE FROM cache WHERE mailbox = ?",
                                              "DELETE FROM expunged WHERE mailbox = ?",
                                              "DELETE FROM mailboxes WHERE id = ?"};
            if (store_index_prepare(u->db, sql[k], &st) == SQLITE_OK) {
                sqlite3_bind_int64(st, 1, row.id);
                sqlite3_step(st);
            }
            store_index_done(st);
        }
        r = 1;
    }
    if (r == 1)
        r = store_index_mailbox_add(u->db, canon, NULL, &row, error_r);
    if (r < 0) {
        store_index_rollback(u->db);
        return -1;
    }
    return store_index_commit(u->db, error_r);
}

/* Remove a folder tree we renamed out of the way (bounded depth: cur/new/tmp only). */
static void remove_tree(const char *path, int depth)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[4600];
        /* a longer path cannot be ours (mailbox names are bounded): leave it */
        if ((size_t)snprintf(p, sizeof p, "%s/%.255s", path, de->d_name) >= sizeof p)
            continue;
        if (depth < 3)
            remove_tree(p, depth + 1);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(path);
}

int store_mailbox_delete(struct store_user *u, const char *name, char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char canon[300], path[4200];
    struct store_mbox_row row;
    if (store_mailbox_lookup(u, name, canon, sizeof canon, path, sizeof path, &row, error_r) < 0) {
        return -1;
    }
    if (strcmp(canon, "INBOX") == 0) {
        store_error(error_r, "INBOX can't be deleted.");
        return -1;
    }
    /* Rename out of the way first (atomic), so no crash leaves a half-deleted folder
     * that still looks like a mailbox; then remove the files at leisure. */
    char trash[4700], unique[400], maildir[4200];
    store_maildir_unique_name(unique, sizeof unique);
    snprintf(maildir, sizeof maildir, "%s/Maildir", u->home);
    snprintf(trash, sizeof trash, "%s/..deleted-%s", maildir, unique);
    if (rename(path, trash) < 0) {
        store_error(error_r, "rename %s: %s", path, strerror(errno));
        return -1;
    }
    if (store_io_fsync_dir(maildir) < 0) {
        store_error(error_r, "fsync %s: %s", maildir, strerror(errno));
        return -1;
    }
    remove_tree(trash, 0);
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    static const char *const sql[] = {"DELETE FROM messages WHERE mailbox = ?",
                                      "DELETE FROM cache WHERE mailbox = ?",
                                      "DELETE FROM expunged WHERE mailbox = ?",
                                      "DELETE FROM mailboxes WHERE id = ?"};
    for (int k = 0; k < 4; k++) {
        sqlite3_stmt *st = NULL;
        int rc = SQLITE_ERROR;
        if (store_index_prepare(u->db, sql[k], &st) == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, row.id);
            rc = sqlite3_step(st);
        }
        if (rc != SQLITE_DONE)
            store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        store_index_done(st);
        if (rc != SQLITE_DONE) {
            store_index_rollback(u->db);
            return -1;
        }
    }
    /* RFC 5464 §3.4: a deleted mailbox's entries go with it */
    sqlite3_stmt *md = NULL;
    int mrc = SQLITE_ERROR;
    if (store_index_prepare(u->db, "DELETE FROM metadata WHERE mailbox = ?", &md) == SQLITE_OK) {
        sqlite3_bind_text(md, 1, canon, -1, SQLITE_STATIC);
        mrc = sqlite3_step(md);
    }
    store_index_done(md);
    if (mrc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        store_index_rollback(u->db);
        return -1;
    }
    store_notify_publish_any_thread(u->user, canon);
    return store_index_commit(u->db, error_r);
}

/* RFC 3501 §6.3.5: renaming INBOX moves its messages to a new mailbox and leaves INBOX
 * empty (its subfolders stay). The messages keep their UIDs under the new UIDVALIDITY. */
static int rename_inbox(struct store_user *u, const char *to, char **error_r)
{
    char canon[300], path[4200], to_path[4200], dir[300];
    struct store_mbox_row inbox, dest;
    if (store_mailbox_lookup(u, "INBOX", canon, sizeof canon, path, sizeof path, &inbox, error_r) <
        0)
        return -1;
    if (store_mailbox_create(u, to, error_r) < 0)
        return -1;
    if (store_mailbox_name_to_dir(to, dir, sizeof dir, canon, sizeof canon, error_r) < 0)
        return -1;
    snprintf(to_path, sizeof to_path, "%s/Maildir/%s", u->home, dir);
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    if (store_index_mailbox_get(u->db, "INBOX", &inbox, error_r) != 0 ||
        store_index_mailbox_get(u->db, canon, &dest, error_r) != 0 ||
        store_sync_locked(u, path, &inbox, false, error_r) < 0)
        goto fail;
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(u->db, "SELECT uid, location FROM messages WHERE mailbox = ?", &st) !=
        SQLITE_OK)
        goto fail_sql;
    sqlite3_bind_int64(st, 1, inbox.id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *loc = (const char *)sqlite3_column_text(st, 1);
        if (!loc)
            continue;
        char from[5000], dst[5000];
        snprintf(from, sizeof from, "%s/%s", path, loc);
        snprintf(dst, sizeof dst, "%s/%s", to_path, loc);
        if (rename(from, dst) < 0 && errno != ENOENT) {
            store_error(error_r, "rename %s: %s", from, strerror(errno));
            store_index_done(st);
            goto fail; /* the next sync of each folder re-indexes what moved */
        }
    }
    store_index_done(st);
    static const char *const subs[] = {"new", "cur"};
    for (int s = 0; s < 2; s++) {
        char d[4300];
        snprintf(d, sizeof d, "%s/%s", to_path, subs[s]);
        if (store_io_fsync_dir(d) < 0) {
            store_error(error_r, "fsync %s: %s", d, strerror(errno));
            goto fail;
        }
    }
    static const char *const moves[] = {
        /* INBOX's messages leave it: tombstones at its next mod-sequence (QRESYNC) */
        ("INSERT OR REPLACE INTO expunged(mailbox, uid, modseq) SELECT ?1, uid,"
         " (SELECT highestmodseq FROM mailboxes WHERE id = ?1) + 1 FROM messages"
         " WHERE mailbox = ?1"),
        "UPDATE messages SET mailbox = ?2 WHERE mailbox = ?1",
        "UPDATE cache SET mailbox = ?2 WHERE mailbox = ?1",
        ("UPDATE mailboxes SET uidnext = (SELECT uidnext FROM mailboxes WHERE id = ?1),"
         " highestmodseq = (SELECT highestmodseq FROM mailboxes WHERE id = ?1) + 1,"
         " cur_mtime = 0, new_mtime = 0 WHERE id = ?2"),
        ("UPDATE mailboxes SET highestmodseq = highestmodseq + 1, cur_mtime = 0, new_mtime = 0"
         " WHERE id = ?1"),
    };
    for (size_t k = 0; k < sizeof moves / sizeof moves[0]; k++) {
        int rc = SQLITE_ERROR;
        if (store_index_prepare(u->db, moves[k], &st) == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, inbox.id);
            sqlite3_bind_int64(st, 2, dest.id);
            rc = sqlite3_step(st);
        }
        if (rc != SQLITE_DONE) {
            store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
            store_index_done(st);
            goto fail;
        }
        store_index_done(st);
    }
    /* every INBOX message became a tombstone: check the bound now */
    if (store_index_tombstones_prune(u->db, inbox.id, STORE_TOMBSTONES_MAX, STORE_TOMBSTONES_KEEP,
                                     error_r) < 0)
        goto fail;
    if (store_index_commit(u->db, error_r) < 0)
        return -1;
    store_notify_publish_any_thread(u->user, "INBOX");
    return 0;
fail_sql:
    store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
fail:
    store_index_rollback(u->db);
    return -1;
}

int store_mailbox_rename(struct store_user *u, const char *from, const char *to, char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char from_canon[300], from_path[4200], to_dir[300], to_canon[300], to_path[4200];
    struct store_mbox_row row;
    if (store_mailbox_lookup(u, from, from_canon, sizeof from_canon, from_path, sizeof from_path,
                             &row, error_r) < 0) {
        return -1;
    }
    if (store_mailbox_name_to_dir(to, to_dir, sizeof to_dir, to_canon, sizeof to_canon, error_r) <
        0)
        return -1;
    snprintf(to_path, sizeof to_path, "%s/Maildir%s%s", u->home, to_dir[0] ? "/" : "", to_dir);
    if (strcmp(to_canon, "INBOX") == 0 || access(to_path, F_OK) == 0) {
        store_error(error_r, "Mailbox already exists");
        return -1;
    }
    if (strcmp(from_canon, "INBOX") == 0)
        return rename_inbox(u, to_canon, error_r);
    size_t flen = strlen(from_canon);
    if (strncmp(to_canon, from_canon, flen) == 0 && to_canon[flen] == '/') {
        store_error(error_r, "Can't rename mailbox under itself");
        return -1;
    }
    /* The folder and its inferiors (".From.x" -> ".To.x"), each an atomic rename. */
    char maildir[4200];
    snprintf(maildir, sizeof maildir, "%s/Maildir", u->home);
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    if (rename(from_path, to_path) < 0) {
        store_error(error_r, "rename: %s", strerror(errno));
        store_index_rollback(u->db);
        return -1;
    }
    char from_dir[300], prefix[310], ignored[300];
    (void)store_mailbox_name_to_dir(from_canon, from_dir, sizeof from_dir, ignored, sizeof ignored,
                                    NULL);
    snprintf(prefix, sizeof prefix, "%s.", from_dir);
    DIR *d = opendir(maildir);
    if (d) {
        struct dirent *de;
        size_t count = 0;
        while ((de = readdir(d)) != NULL && count++ < 100000) {
            size_t plen = strlen(prefix);
            if (strncmp(de->d_name, prefix, plen) != 0)
                continue;
            char a[4600], b[4800];
            snprintf(a, sizeof a, "%s/%.255s", maildir, de->d_name);
            snprintf(b, sizeof b, "%s/%s.%.255s", maildir, to_dir, de->d_name + plen);
            (void)rename(a, b);
        }
        closedir(d);
    }
    if (store_io_fsync_dir(maildir) < 0) {
        store_error(error_r, "fsync %s: %s", maildir, strerror(errno));
        store_index_rollback(u->db);
        return -1;
    }
    /* name = to || substr(name, len(from)+1) for the mailbox and its inferiors; their
     * subscriptions follow them (as Dovecot's rename does) */
    static const char *const renames[] = {
        "UPDATE mailboxes SET name = ?1 || substr(name, ?3 + 1)"
        " WHERE name = ?2 OR substr(name, 1, ?3 + 1) = ?2 || '/'",
        "UPDATE OR REPLACE subscriptions SET name = ?1 || substr(name, ?3 + 1)"
        " WHERE name = ?2 OR substr(name, 1, ?3 + 1) = ?2 || '/'",
        "UPDATE OR REPLACE metadata SET mailbox = ?1 || substr(mailbox, ?3 + 1)"
        " WHERE mailbox = ?2 OR substr(mailbox, 1, ?3 + 1) = ?2 || '/'",
    };
    for (size_t k = 0; k < sizeof renames / sizeof renames[0]; k++) {
        sqlite3_stmt *st = NULL;
        int rc = SQLITE_ERROR;
        if (store_index_prepare(u->db, renames[k], &st) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, to_canon, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, from_canon, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, (int64_t)flen);
            rc = sqlite3_step(st);
        }
        if (rc != SQLITE_DONE)
            store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
        store_index_done(st);
        if (rc != SQLITE_DONE) {
            store_index_rollback(u->db);
            return -1;
        }
    }
    return store_index_commit(u->db, error_r);
}

int store_mailbox_subscribe(struct store_user *u, const char *name, bool subscribe, char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char canon[300], path[4200];
    struct store_mbox_row row;
    if (subscribe) {
        /* only an existing mailbox can be subscribed (as Dovecot) */
        if (store_mailbox_lookup(u, name, canon, sizeof canon, path, sizeof path, &row,
                                 error_r) < 0)
            return -1;
    } else {
        /* RFC 3501 §6.3.7: a name that no longer exists can be unsubscribed */
        char dir[300];
        if (store_mailbox_name_to_dir(name, dir, sizeof dir, canon, sizeof canon, error_r) < 0)
            return -1;
    }
    return store_index_subscription_set(u->db, canon, subscribe, error_r);
}

int store_mailbox_status(struct store_user *u, const char *name, struct store_status *st_r,
                         char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    char canon[300], path[4200];
    struct store_mbox_row row;
    if (store_mailbox_lookup(u, name, canon, sizeof canon, path, sizeof path, &row, error_r) < 0)
        return -1;
    if (store_index_begin(u->db, error_r) < 0)
        return -1;
    if (store_index_mailbox_get(u->db, canon, &row, error_r) != 0 ||
        store_sync_locked(u, path, &row, false, error_r) < 0) {
        store_index_rollback(u->db);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_ERROR;
    memset(st_r, 0, sizeof *st_r);
    if (store_index_prepare(u->db,
                            "SELECT COUNT(*), COALESCE(SUM(uid >= ?2), 0),"
                            " COALESCE(SUM((flags & ?3) = 0), 0), COALESCE(SUM(vsize), 0),"
                            " COALESCE(SUM((flags & ?4) != 0), 0)"
                            " FROM messages WHERE mailbox = ?1",
                            &st) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, row.id);
        sqlite3_bind_int64(st, 2, row.first_recent_uid);
        sqlite3_bind_int(st, 3, STORE_FLAG_SEEN);
        sqlite3_bind_int(st, 4, STORE_FLAG_DELETED);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            st_r->messages = (uint32_t)sqlite3_column_int64(st, 0);
            st_r->recent = (uint32_t)sqlite3_column_int64(st, 1);
            st_r->unseen = (uint32_t)sqlite3_column_int64(st, 2);
            st_r->size = (uint64_t)sqlite3_column_int64(st, 3);
            st_r->deleted = (uint32_t)sqlite3_column_int64(st, 4);
        }
    }
    if (rc != SQLITE_ROW)
        store_error(error_r, "index: %s", sqlite3_errmsg(u->db));
    store_index_done(st);
    if (rc != SQLITE_ROW) {
        store_index_rollback(u->db);
        return -1;
    }
    st_r->uidnext = row.uidnext;
    st_r->uidvalidity = row.uidvalidity;
    st_r->highestmodseq = row.highestmodseq;
    return store_index_commit(u->db, error_r);
}

/* ---- POP3 lock ------------------------------------------------------------------------ */

/* flock(2) on <home>/pop3.lock excludes other processes; the table below makes the rule
 * explicit inside this process too (several sessions of one user in one process). */
static pthread_mutex_t pop3_lock_mutex = PTHREAD_MUTEX_INITIALIZER;
static char **pop3_locked_homes;
static size_t pop3_n_locked;

int store_pop3_lock(struct store_user *u)
{
    if (u->has_pop3_lock)
        return 0;
    pthread_mutex_lock(&pop3_lock_mutex);
    for (size_t i = 0; i < pop3_n_locked; i++)
        if (strcmp(pop3_locked_homes[i], u->home) == 0) {
            pthread_mutex_unlock(&pop3_lock_mutex);
            return 1;
        }
    char path[4200];
    snprintf(path, sizeof path, "%s/pop3.lock", u->home);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        pthread_mutex_unlock(&pop3_lock_mutex);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        pthread_mutex_unlock(&pop3_lock_mutex);
        return e == EWOULDBLOCK ? 1 : -1;
    }
    char **nv = realloc(pop3_locked_homes, (pop3_n_locked + 1) * sizeof *nv);
    char *dup = strdup(u->home);
    if (!nv || !dup) {
        if (nv)
            pop3_locked_homes = nv;
        free(dup);
        close(fd);
        pthread_mutex_unlock(&pop3_lock_mutex);
        return -1;
    }
    pop3_locked_homes = nv;
    pop3_locked_homes[pop3_n_locked++] = dup;
    pthread_mutex_unlock(&pop3_lock_mutex);
    u->pop3_lock_fd = fd;
    u->has_pop3_lock = true;
    return 0;
}

void store_pop3_unlock(struct store_user *u)
{
    if (!u || !u->has_pop3_lock)
        return;
    pthread_mutex_lock(&pop3_lock_mutex);
    for (size_t i = 0; i < pop3_n_locked; i++)
        if (strcmp(pop3_locked_homes[i], u->home) == 0) {
            free(pop3_locked_homes[i]);
            pop3_locked_homes[i] = pop3_locked_homes[--pop3_n_locked];
            break;
        }
    close(u->pop3_lock_fd);
    pthread_mutex_unlock(&pop3_lock_mutex);
    u->pop3_lock_fd = -1;
    u->has_pop3_lock = false;
}
