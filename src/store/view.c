/*
 * view.c - a session's view of one mailbox (SELECT/EXAMINE, a POP3 maildrop): the message
 * list as of the last sync, sequence numbers as indexes into it, and the per-message
 * operations: open, set flags, expunge.
 *
 * Changes by other sessions or programs reach the view only through store_mailbox_sync(),
 * which reports them as IMAP needs them (EXPUNGE sequence numbers, FETCH for changed
 * flags, the count of new messages). Our own expunges, too, stay in the view until the
 * next sync reports them, so the numbering the client sees is always consistent.
 */
#include "store/store-private.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct view_msg {
    struct store_message pub;
    char *location; /* "cur/<name>" or "new/<name>" below the folder */
};

struct store_mailbox {
    struct store_user *u;
    char name[300];
    char path[4200];
    bool is_read_only;
    struct store_mbox_row row; /* uidvalidity, uidnext, highestmodseq as of the last sync */
    struct view_msg *msgs;
    size_t n;
};

static void view_msg_free(struct view_msg *m)
{
    free(m->pub.filename);
    store_keywords_free(m->pub.keywords);
    free(m->location);
}

static void view_msgs_free(struct view_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        view_msg_free(&msgs[i]);
    free(msgs);
}

/* The columns a view keeps, in view_msg_from_row's order. */
#define VIEW_COLUMNS                                                                               \
    "SELECT uid, basename, location, flags, keywords, size, vsize, internaldate, modseq"           \
    " FROM messages WHERE mailbox = ?"

/* Fill m from the current row of st (VIEW_COLUMNS). false when out of memory (m is then
 * still safe to free). */
static bool view_msg_from_row(struct view_msg *m, sqlite3_stmt *st)
{
    memset(m, 0, sizeof *m);
    m->pub.uid = (uint32_t)sqlite3_column_int64(st, 0);
    const char *base = (const char *)sqlite3_column_text(st, 1);
    const char *loc = (const char *)sqlite3_column_text(st, 2);
    m->pub.filename = strdup(base ? base : "");
    m->location = strdup(loc ? loc : "");
    m->pub.flags = (unsigned)sqlite3_column_int(st, 3) & ~(unsigned)STORE_FLAG_RECENT;
    m->pub.keywords = store_keywords_parse((const char *)sqlite3_column_text(st, 4));
    m->pub.size = (uint64_t)sqlite3_column_int64(st, 5);
    m->pub.vsize = (uint64_t)sqlite3_column_int64(st, 6);
    m->pub.internaldate = (time_t)sqlite3_column_int64(st, 7);
    m->pub.modseq = (uint64_t)sqlite3_column_int64(st, 8);
    return m->pub.filename && m->location;
}

/* Run a VIEW_COLUMNS query (mailbox bound as ?1, a and b as ?2, ?3 when the SQL has
 * them) inside the current transaction and collect its rows in order. */
static int view_query(struct store_mailbox *box, const char *sql, int64_t a, int64_t b,
                      struct view_msg **msgs_r, size_t *n_r, char **error_r)
{
    sqlite3_stmt *st = NULL;
    /* sql is one of the static texts below (VIEW_COLUMNS ...): fit for the cache */
    if (store_index_prepare(box->u->db, sql, &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(box->u->db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, box->row.id);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, a);
    if (sqlite3_bind_parameter_count(st) >= 3)
        sqlite3_bind_int64(st, 3, b);
    struct view_msg *msgs = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct view_msg *nm = realloc(msgs, ncap * sizeof *nm);
            if (!nm)
                goto oom;
            msgs = nm;
            cap = ncap;
        }
        bool ok = view_msg_from_row(&msgs[n], st);
        n++;
        if (!ok)
            goto oom;
    }
    if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(box->u->db));
        store_index_done(st);
        view_msgs_free(msgs, n);
        return -1;
    }
    store_index_done(st);
    *msgs_r = msgs;
    *n_r = n;
    return 0;
oom:
    store_index_done(st);
    view_msgs_free(msgs, n);
    store_error(error_r, "out of memory");
    return -1;
}

/* Load the mailbox's rows (ordered by UID) inside the current transaction. */
static int view_load(struct store_mailbox *box, struct view_msg **msgs_r, size_t *n_r,
                     char **error_r)
{
    return view_query(box, VIEW_COLUMNS " ORDER BY uid", 0, 0, msgs_r, n_r, error_r);
}

/*
 * What changed in the index since the view's last sync, read without reloading the
 * messages that did not change (issue 4: every sync after a STORE, APPEND or EXPUNGE
 * used to re-read and re-allocate the whole mailbox). Inside the sync's transaction,
 * against old (the mailbox row as of the view's last sync):
 *   - changed: the rows whose modseq is above old.highestmodseq, i.e. every row added or
 *     whose flags/keywords changed since (each such change takes a new modseq), by UID;
 *   - survivors: the UIDs below old.uidnext still indexed, by UID; NULL when all of the
 *     view's messages are still there (their count equals the view's: UIDs below
 *     old.uidnext cannot be added later, so an equal count means nothing was expunged).
 * A change of location alone (another session's new/ -> cur/ move) keeps its modseq and
 * is not seen here: the view finds the file again on ENOENT (view_relocate).
 */
struct view_delta {
    struct view_msg *changed;
    size_t n_changed;
    uint32_t *survivors;
    size_t n_survivors;
};

static void view_delta_free(struct view_delta *d)
{
    view_msgs_free(d->changed, d->n_changed);
    free(d->survivors);
    memset(d, 0, sizeof *d);
}

static int view_delta_read(struct store_mailbox *box, const struct store_mbox_row *old,
                           struct view_delta *d, char **error_r)
{
    memset(d, 0, sizeof *d);
    sqlite3 *db = box->u->db;
    if (view_query(box, VIEW_COLUMNS " AND modseq > ? ORDER BY uid", (int64_t)old->highestmodseq, 0,
                   &d->changed, &d->n_changed, error_r) < 0)
        return -1;
    sqlite3_stmt *st = NULL;
    int64_t count = -1;
    if (store_index_prepare(db, "SELECT count(*) FROM messages WHERE mailbox = ? AND uid < ?",
                            &st) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, box->row.id);
        sqlite3_bind_int64(st, 2, old->uidnext);
        if (sqlite3_step(st) == SQLITE_ROW)
            count = sqlite3_column_int64(st, 0);
        store_index_done(st);
    }
    if (count < 0)
        goto fail;
    if ((uint64_t)count == box->n)
        return 0;
    d->survivors = malloc(((size_t)count + 1) * sizeof *d->survivors);
    if (!d->survivors) {
        view_delta_free(d);
        store_error(error_r, "out of memory");
        return -1;
    }
    if (store_index_prepare(db,
                            "SELECT uid FROM messages WHERE mailbox = ? AND uid < ? ORDER BY uid",
                            &st) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, box->row.id);
    sqlite3_bind_int64(st, 2, old->uidnext);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && d->n_survivors < (size_t)count)
        d->survivors[d->n_survivors++] = (uint32_t)sqlite3_column_int64(st, 0);
    store_index_done(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        goto fail;
    return 0;
fail:
    store_error(error_r, "index: %s", sqlite3_errmsg(db));
    view_delta_free(d);
    return -1;
}

/* What one sync round found (view_refresh). */
struct view_update {
    bool is_unchanged;     /* uidnext and highestmodseq as at the view's last sync */
    struct view_msg *msgs; /* full load (a view without messages loaded yet) */
    size_t n;
    struct view_delta delta;       /* otherwise: the changes since the view's last sync */
    uint32_t recent_lo, recent_hi; /* UIDs this sync claimed (or sees, read-only) \Recent */
    struct store_mbox_row old;     /* the view's row before this sync */
};

/* One sync round: transaction, folder scan, recent claim, then the rows: all of them for
 * a view that has none loaded (is_full), else only what changed (view_delta_read). The
 * view's row is updated only when the round succeeded. */
static int view_refresh(struct store_mailbox *box, bool is_full, struct view_update *up,
                        char **error_r)
{
    memset(up, 0, sizeof *up);
    sqlite3 *db = box->u->db;
    if (store_index_begin(db, error_r) < 0)
        return -1;
    struct store_mbox_row row;
    int r = store_index_mailbox_get(db, box->name, &row, error_r);
    if (r != 0) {
        if (r == 1)
            store_error(error_r, "Mailbox was deleted");
        store_index_rollback(db);
        return -1;
    }
    if (row.uidvalidity != box->row.uidvalidity && box->row.uidvalidity != 0) {
        store_index_rollback(db);
        store_error(error_r, "Mailbox UIDVALIDITY changed");
        return -1;
    }
    if (store_sync_locked(box->u, box->path, &row, !box->is_read_only, error_r) < 0) {
        store_index_rollback(db);
        return -1;
    }
    /* RFC 3501 §2.3.2: \Recent goes to exactly one read-write session, which claims
     * it; a read-only view (EXAMINE) shows what is still unclaimed without taking it. */
    up->recent_lo = row.first_recent_uid;
    up->recent_hi = row.uidnext;
    if (!box->is_read_only && row.first_recent_uid != row.uidnext) {
        row.first_recent_uid = row.uidnext;
        if (store_index_mailbox_save(db, &row, error_r) < 0) {
            store_index_rollback(db);
            return -1;
        }
    }
    up->old = box->row;
    up->is_unchanged =
        !is_full && row.uidnext == up->old.uidnext && row.highestmodseq == up->old.highestmodseq;
    if (!up->is_unchanged) {
        int lr = is_full ? view_load(box, &up->msgs, &up->n, error_r)
                         : view_delta_read(box, &up->old, &up->delta, error_r);
        if (lr < 0) {
            store_index_rollback(db);
            return -1;
        }
    }
    if (store_index_commit(db, error_r) < 0) {
        view_msgs_free(up->msgs, up->n);
        view_delta_free(&up->delta);
        memset(up, 0, sizeof *up);
        return -1;
    }
    box->row = row;
    return 0;
}

/* Mark the messages whose UID is in [lo, hi) \Recent. */
static void view_mark_recent(struct view_msg *msgs, size_t n, uint32_t lo, uint32_t hi)
{
    if (lo >= hi)
        return;
    for (size_t i = n; i-- > 0 && msgs[i].pub.uid >= lo;)
        if (msgs[i].pub.uid < hi)
            msgs[i].pub.flags |= STORE_FLAG_RECENT;
}

int store_mailbox_open(struct store_user *u, const char *name, bool read_only,
                       struct store_mailbox **box_r, char **error_r)
{
    if (store_user_attach(u, error_r) < 0)
        return -1;
    struct store_mailbox *box = calloc(1, sizeof *box);
    if (!box) {
        store_error(error_r, "out of memory");
        return -1;
    }
    box->u = u;
    box->is_read_only = read_only;
    if (store_mailbox_lookup(u, name, box->name, sizeof box->name, box->path, sizeof box->path,
                             &box->row, error_r) < 0) {
        free(box);
        return -1;
    }
    box->row.uidvalidity = 0;
    struct view_update up;
    if (view_refresh(box, true, &up, error_r) < 0) {
        free(box);
        return -1;
    }
    view_mark_recent(up.msgs, up.n, up.recent_lo, up.recent_hi);
    box->msgs = up.msgs;
    box->n = up.n;
    *box_r = box;
    return 0;
}

void store_mailbox_close(struct store_mailbox *box)
{
    if (!box)
        return;
    view_msgs_free(box->msgs, box->n);
    free(box);
}

uint32_t store_mailbox_uidvalidity(const struct store_mailbox *box)
{
    return box->row.uidvalidity;
}

uint32_t store_mailbox_uidnext(const struct store_mailbox *box)
{
    return box->row.uidnext;
}

uint64_t store_mailbox_highestmodseq(const struct store_mailbox *box)
{
    return box->row.highestmodseq;
}

size_t store_mailbox_count(const struct store_mailbox *box)
{
    return box->n;
}

const struct store_message *store_mailbox_message(const struct store_mailbox *box, size_t i)
{
    return i < box->n ? &box->msgs[i].pub : NULL;
}

static bool keywords_equal(char **a, char **b)
{
    size_t i = 0;
    for (; a && a[i] && b && b[i]; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return !(a && a[i]) && !(b && b[i]);
}

/* Apply a delta to the view: drop the expunged messages, take the changed ones, append
 * the new ones; messages that did not change keep their entries (moved, not copied).
 * changes_r (may be NULL) gets what IMAP must report. Consumes up->delta. */
static int view_apply(struct store_mailbox *box, struct view_update *up,
                      struct store_sync_changes *changes_r, char **error_r)
{
    struct view_delta *d = &up->delta;
    struct view_msg *out = malloc((box->n + d->n_changed + 1) * sizeof *out);
    uint32_t *exp = calloc(box->n + 1, sizeof *exp);
    uint32_t *exp_uids = calloc(box->n + 1, sizeof *exp_uids);
    size_t *chg = calloc(box->n + d->n_changed + 1, sizeof *chg);
    if (!out || !exp || !exp_uids || !chg) {
        free(out);
        free(exp_uids);
        free(exp);
        free(chg);
        view_delta_free(d);
        box->row = up->old; /* the next sync reads this delta again */
        store_error(error_r, "out of memory");
        return -1;
    }
    /* RFC 3501 §7.4.1: each EXPUNGE number is the sequence number at the time it is
     * sent, so later numbers are reduced by the expunges reported before them. */
    size_t j = 0, k = 0, o = 0, n_exp = 0, n_chg = 0;
    for (size_t i = 0; i < box->n; i++) {
        struct view_msg *old = &box->msgs[i];
        uint32_t uid = old->pub.uid;
        bool is_alive = true;
        if (d->survivors) {
            while (k < d->n_survivors && d->survivors[k] < uid)
                k++;
            is_alive = k < d->n_survivors && d->survivors[k] == uid;
        }
        while (j < d->n_changed && d->changed[j].pub.uid < uid)
            j++; /* cannot happen (rows below uidnext are never added); freed below */
        if (!is_alive) {
            exp[n_exp] = (uint32_t)(i + 1 - n_exp);
            exp_uids[n_exp] = uid;
            n_exp++;
            view_msg_free(old);
            continue;
        }
        if (j < d->n_changed && d->changed[j].pub.uid == uid) {
            struct view_msg *nw = &d->changed[j++];
            nw->pub.flags |= old->pub.flags & STORE_FLAG_RECENT;
            if (nw->pub.flags != old->pub.flags ||
                !keywords_equal(nw->pub.keywords, old->pub.keywords))
                chg[n_chg++] = o;
            view_msg_free(old);
            out[o++] = *nw;
            memset(nw, 0, sizeof *nw); /* moved */
        } else {
            out[o++] = *old;
        }
    }
    size_t n_new = 0;
    for (; j < d->n_changed; j++) {
        if (d->changed[j].pub.uid < up->old.uidnext)
            continue; /* cannot happen, see above */
        out[o++] = d->changed[j];
        memset(&d->changed[j], 0, sizeof d->changed[j]);
        n_new++;
    }
    free(box->msgs);
    box->msgs = out;
    box->n = o;
    view_delta_free(d);
    view_mark_recent(box->msgs, box->n, up->recent_lo, up->recent_hi);
    if (changes_r) {
        changes_r->expunged_seqs = exp;
        changes_r->expunged_uids = exp_uids;
        changes_r->n_expunged = n_exp;
        changes_r->flag_changed = chg;
        changes_r->n_flag_changed = n_chg;
        changes_r->n_new = n_new;
    } else {
        free(exp);
        free(exp_uids);
        free(chg);
    }
    return 0;
}

/* One sync round's result, kept for the other views of a batch (store_sync_share). */
struct store_sync_share {
    bool is_set;
    char *home;                 /* the user's folder and the mailbox the round was for */
    char name[300];
    bool is_read_only;
    struct store_mbox_row old;  /* the state the views it applies to are in */
    size_t old_n;
    struct store_mbox_row row;  /* the state after the round */
    bool is_unchanged;
    struct view_delta delta;    /* a copy: each view consumes its own */
    uint32_t recent_lo, recent_hi; /* what another view of the batch sees as \Recent */
};

struct store_sync_share *store_sync_share_new(void)
{
    return calloc(1, sizeof(struct store_sync_share));
}

static void share_clear(struct store_sync_share *sh)
{
    free(sh->home);
    sh->home = NULL;
    view_delta_free(&sh->delta);
    sh->is_set = false;
}

void store_sync_share_free(struct store_sync_share *sh)
{
    if (!sh)
        return;
    share_clear(sh);
    free(sh);
}

/* A deep copy of delta d into out. false when out of memory (out is then empty). */
static bool view_delta_copy(const struct view_delta *d, struct view_delta *out)
{
    memset(out, 0, sizeof *out);
    if (d->n_changed) {
        out->changed = calloc(d->n_changed, sizeof *out->changed);
        if (!out->changed)
            return false;
        for (size_t i = 0; i < d->n_changed; i++) {
            const struct view_msg *m = &d->changed[i];
            struct view_msg *c = &out->changed[out->n_changed++];
            c->pub = m->pub;
            c->pub.filename = strdup(m->pub.filename ? m->pub.filename : "");
            c->pub.keywords = store_keywords_copy(m->pub.keywords);
            c->location = strdup(m->location ? m->location : "");
            if (!c->pub.filename || !c->location ||
                (m->pub.keywords && m->pub.keywords[0] && !c->pub.keywords)) {
                view_delta_free(out);
                return false;
            }
        }
    }
    if (d->survivors) {
        out->survivors = malloc((d->n_survivors + 1) * sizeof *out->survivors);
        if (!out->survivors) {
            view_delta_free(out);
            return false;
        }
        memcpy(out->survivors, d->survivors, d->n_survivors * sizeof *out->survivors);
        out->n_survivors = d->n_survivors;
    }
    return true;
}

/* Whether share holds a round that applies to box as it is now: the same user, mailbox
 * and mode, and the view in the state the round started from, so the same rows changed
 * for it (the delta depends only on that state and the index). */
static bool share_fits(const struct store_sync_share *sh, const struct store_mailbox *box)
{
    return sh && sh->is_set && strcmp(sh->home, box->u->home) == 0 &&
           strcmp(sh->name, box->name) == 0 && sh->is_read_only == box->is_read_only &&
           sh->old.id == box->row.id && sh->old.uidvalidity == box->row.uidvalidity &&
           sh->old.uidnext == box->row.uidnext &&
           sh->old.highestmodseq == box->row.highestmodseq && sh->old_n == box->n;
}

/* Keep a copy of the round up (box before it: old, old_n) for the batch's other views. */
static void share_record(struct store_sync_share *sh, const struct store_mailbox *box,
                         const struct view_update *up, size_t old_n)
{
    share_clear(sh);
    if (!(sh->home = strdup(box->u->home)))
        return;
    if (!up->is_unchanged && !view_delta_copy(&up->delta, &sh->delta)) {
        share_clear(sh);
        return;
    }
    snprintf(sh->name, sizeof sh->name, "%s", box->name);
    sh->is_read_only = box->is_read_only;
    sh->old = up->old;
    sh->old_n = old_n;
    sh->row = box->row;
    sh->is_unchanged = up->is_unchanged;
    /* RFC 3501 §2.3.2: a read-write round claimed the new messages' \Recent for its own
     * session; the others see none. A read-only round claimed nothing: they see what it saw. */
    sh->recent_lo = box->is_read_only ? up->recent_lo : box->row.uidnext;
    sh->recent_hi = box->is_read_only ? up->recent_hi : box->row.uidnext;
    sh->is_set = true;
}

int store_mailbox_sync(struct store_mailbox *box, struct store_sync_changes *changes_r,
                       char **error_r)
{
    return store_mailbox_sync_shared(box, NULL, changes_r, error_r);
}

int store_mailbox_sync_shared(struct store_mailbox *box, struct store_sync_share *share,
                              struct store_sync_changes *changes_r, char **error_r)
{
    memset(changes_r, 0, sizeof *changes_r);
    struct view_update up;
    if (share_fits(share, box)) {
        /* Another view of the batch read this round already: no index, no folder scan. */
        memset(&up, 0, sizeof up);
        if (!share->is_unchanged && !view_delta_copy(&share->delta, &up.delta)) {
            store_error(error_r, "out of memory");
            return -1;
        }
        up.old = box->row;
        up.is_unchanged = share->is_unchanged;
        up.recent_lo = share->recent_lo;
        up.recent_hi = share->recent_hi;
        box->row = share->row;
    } else {
        if (store_user_attach(box->u, error_r) < 0)
            return -1;
        size_t old_n = box->n;
        if (view_refresh(box, false, &up, error_r) < 0)
            return -1;
        if (share)
            share_record(share, box, &up, old_n);
    }
    if (up.is_unchanged) {
        /* nothing new in the index; only a fresh \Recent claim can matter */
        view_mark_recent(box->msgs, box->n, up.recent_lo, up.recent_hi);
        return 0;
    }
    return view_apply(box, &up, changes_r, error_r);
}

int store_mailbox_reopen(struct store_mailbox *box, const char *name, bool read_only,
                         char **error_r)
{
    char dir[300], canon[300];
    char *err = NULL;
    if (read_only != box->is_read_only ||
        store_mailbox_name_to_dir(name, dir, sizeof dir, canon, sizeof canon, &err) < 0 ||
        strcmp(canon, box->name) != 0) {
        free(err);
        return 1;
    }
    if (store_user_attach(box->u, error_r) < 0)
        return -1;
    struct view_update up;
    if (view_refresh(box, false, &up, error_r) < 0)
        return -1;
    if (!up.is_unchanged && view_apply(box, &up, NULL, error_r) < 0)
        return -1;
    /* as a fresh open: \Recent only on what this open claimed */
    for (size_t i = 0; i < box->n; i++)
        box->msgs[i].pub.flags &= ~(unsigned)STORE_FLAG_RECENT;
    view_mark_recent(box->msgs, box->n, up.recent_lo, up.recent_hi);
    return 0;
}

void store_sync_changes_free(struct store_sync_changes *c)
{
    if (!c)
        return;
    free(c->expunged_seqs);
    free(c->expunged_uids);
    free(c->flag_changed);
    memset(c, 0, sizeof *c);
}

/* Refresh the location of a message whose file moved (another session renamed it). */
static int view_relocate(struct store_mailbox *box, struct view_msg *m)
{
    char loc[700];
    if (store_maildir_locate(box->path, m->pub.filename, loc, sizeof loc) != 0)
        return -1;
    char *dup = strdup(loc);
    if (!dup)
        return -1;
    free(m->location);
    m->location = dup;
    return 0;
}

int store_message_open(struct store_mailbox *box, size_t i, int *fd_r, char **error_r)
{
    if (i >= box->n) {
        store_error(error_r, "No such message");
        return -1;
    }
    struct view_msg *m = &box->msgs[i];
    for (int attempt = 0; attempt < 2; attempt++) {
        char path[5000];
        snprintf(path, sizeof path, "%s/%s", box->path, m->location);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            *fd_r = fd;
            return 0;
        }
        if (errno != ENOENT) {
            int e = errno;
            store_error(error_r, "open %s: %s", path, strerror(e));
            errno = e;
            return -1;
        }
        if (attempt == 0 && view_relocate(box, m) < 0)
            break;
    }
    store_error(error_r, "Message was expunged");
    errno = ENOENT; /* callers tell "expunged" from an I/O error by it (store.h) */
    return -1;
}

/* Apply mode (0 replace, 1 add, -1 remove) to a keyword vector. */
static char **keywords_apply(char **cur, int mode, const char *const *kw)
{
    size_t n_cur = 0, n_kw = 0;
    while (cur && cur[n_cur])
        n_cur++;
    while (kw && kw[n_kw])
        n_kw++;
    char **out = calloc(n_cur + n_kw + 1, sizeof *out);
    if (!out)
        return NULL;
    size_t o = 0;
    if (mode != 0)
        for (size_t i = 0; i < n_cur; i++) {
            bool is_removed = false;
            for (size_t k = 0; mode < 0 && k < n_kw && !is_removed; k++)
                is_removed = strcasecmp(cur[i], kw[k]) == 0;
            if (!is_removed)
                out[o++] = strdup(cur[i]);
        }
    if (mode >= 0)
        for (size_t k = 0; k < n_kw; k++) {
            bool is_dup = false;
            for (size_t i = 0; i < o && !is_dup; i++)
                is_dup = strcasecmp(out[i], kw[k]) == 0;
            if (!is_dup)
                out[o++] = strdup(kw[k]);
        }
    out[o] = NULL;
    return out;
}

/* The message's row as the index has it now (inside the transaction): flags, keywords,
 * location, modseq. 0 found, 1 gone (expunged by another session), -1 error. */
static int flags_row_get(sqlite3 *db, int64_t mailbox_id, uint32_t uid, unsigned *flags_r,
                         char ***keywords_r, char **location_r, uint64_t *modseq_r, char **error_r)
{
    sqlite3_stmt *st = NULL;
    if (store_index_prepare(db,
                            "SELECT flags, keywords, location, modseq FROM messages"
                            " WHERE mailbox = ? AND uid = ?",
                            &st) != SQLITE_OK) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, mailbox_id);
    sqlite3_bind_int64(st, 2, uid);
    int rc = sqlite3_step(st), ret = 1;
    if (rc == SQLITE_ROW) {
        const char *loc = (const char *)sqlite3_column_text(st, 2);
        *flags_r = (unsigned)sqlite3_column_int(st, 0) & ~(unsigned)STORE_FLAG_RECENT;
        *keywords_r = store_keywords_parse((const char *)sqlite3_column_text(st, 1));
        *location_r = strdup(loc ? loc : "");
        *modseq_r = (uint64_t)sqlite3_column_int64(st, 3);
        ret = 0;
        if (!*location_r) {
            store_keywords_free(*keywords_r);
            store_error(error_r, "out of memory");
            ret = -1;
        }
    } else if (rc != SQLITE_DONE) {
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
        ret = -1;
    }
    store_index_done(st);
    return ret;
}

int store_message_set_flags(struct store_mailbox *box, size_t i, int mode, unsigned flags,
                            const char *const *keywords, char **error_r)
{
    int r = store_message_store_flags(box, i, mode, flags, keywords, UINT64_MAX, error_r);
    return r == 0 ? 0 : -1;
}

int store_message_store_flags(struct store_mailbox *box, size_t i, int mode, unsigned flags,
                              const char *const *keywords, uint64_t unchangedsince, char **error_r)
{
    if (store_user_attach(box->u, error_r) < 0)
        return -1;
    if (i >= box->n) {
        store_error(error_r, "No such message");
        return -1;
    }
    if (box->is_read_only) {
        store_error(error_r, "Mailbox is read-only");
        return -1;
    }
    struct view_msg *m = &box->msgs[i];
    sqlite3 *db = box->u->db;
    char **cur_kw = NULL, **nkw = NULL, *cur_loc = NULL, *kw_text = NULL;
    int ret = -1;
    /* Everything happens under the index's write lock, starting from the flags the index
     * has now, not from this view's copy: another session may have changed them since our
     * last sync, and "+FLAGS \Seen" must not undo its "+FLAGS \Flagged" (nor UNCHANGEDSINCE
     * miss its change). Renaming under the lock is cheap (no fsync, see below). */
    if (store_index_begin(db, error_r) < 0)
        return -1;
    struct store_mbox_row row;
    unsigned old;
    uint64_t cur_modseq;
    int r = store_index_mailbox_get(db, box->name, &row, error_r);
    if (r == 1)
        store_error(error_r, "Mailbox was deleted");
    if (r == 0) {
        r = flags_row_get(db, row.id, m->pub.uid, &old, &cur_kw, &cur_loc, &cur_modseq, error_r);
        if (r == 1) {
            store_error(error_r, "Message was expunged");
            ret = 2;
        }
    }
    if (r != 0)
        goto fail;
    /* RFC 7162 §3.1.3: changed after the client's UNCHANGEDSINCE: not stored */
    if (cur_modseq > unchangedsince) {
        ret = 1;
        goto fail;
    }
    const unsigned stored_mask = STORE_FLAG_SEEN | STORE_FLAG_ANSWERED | STORE_FLAG_FLAGGED |
                                 STORE_FLAG_DELETED | STORE_FLAG_DRAFT;
    old &= stored_mask;
    unsigned req = flags & stored_mask;
    unsigned nf = mode == 0 ? req : mode > 0 ? (old | req) : (old & ~req);
    nkw = keywords_apply(cur_kw, mode, keywords);
    if (!nkw) {
        store_error(error_r, "out of memory");
        goto fail;
    }
    /* keywords come from the client: bound their number and size per message */
    size_t n_kw = 0, kw_bytes = 0;
    for (; nkw[n_kw]; n_kw++)
        kw_bytes += strlen(nkw[n_kw]) + 1;
    if (n_kw > STORE_MAX_KEYWORDS || kw_bytes > STORE_MAX_KEYWORD_BYTES) {
        store_error(error_r, "Too many keywords");
        goto fail;
    }
    kw_text = store_keywords_join((const char *const *)nkw);
    if (!kw_text) {
        store_error(error_r, "out of memory");
        goto fail;
    }
    bool is_same = nf == old && keywords_equal(nkw, cur_kw);
    char new_loc[800];
    snprintf(new_loc, sizeof new_loc, "%s", cur_loc);
    if (!is_same) {
        /* 1. the file name carries the system flags (Maildir ":2,<letters>") */
        char new_name[700], cur_dir[4300];
        snprintf(cur_dir, sizeof cur_dir, "%s/cur", box->path);
        int64_t mtime_before = store_sync_dir_mtime(cur_dir), mtime_after = 0;
        bool is_renamed = false;
        for (int attempt = 0; attempt < 2; attempt++) {
            const char *fname = strchr(cur_loc, '/');
            fname = fname ? fname + 1 : cur_loc;
            const char *colon = strchr(fname, ':');
            if (store_maildir_name_with_flags(m->pub.filename, nf, colon ? colon + 1 : NULL,
                                              new_name, sizeof new_name) < 0) {
                store_error(error_r, "file name too long");
                goto fail;
            }
            snprintf(new_loc, sizeof new_loc, "cur/%s", new_name);
            if (strcmp(new_loc, cur_loc) == 0)
                break;
            char from[5000], to[5000];
            snprintf(from, sizeof from, "%s/%s", box->path, cur_loc);
            snprintf(to, sizeof to, "%s/%s", box->path, new_loc);
            if (rename(from, to) == 0) {
                is_renamed = true;
                mtime_after = store_sync_dir_mtime(cur_dir);
                break;
            }
            /* renamed by another program: find the file again */
            char found[700];
            int e = errno;
            if (e != ENOENT || attempt == 1 ||
                store_maildir_locate(box->path, m->pub.filename, found, sizeof found) != 0) {
                if (e == ENOENT)
                    ret = 2; /* the file is gone: expunged by another program */
                store_error(error_r, e == ENOENT ? "Message was expunged" : "rename %s: %s", from,
                            strerror(e));
                goto fail;
            }
            char *dup = strdup(found);
            if (!dup) {
                store_error(error_r, "out of memory");
                goto fail;
            }
            free(cur_loc);
            cur_loc = dup;
        }
        /* No fsync of cur/ for a flag rename (what Dovecot's default mail_fsync=optimized
         * does too): flags are not acknowledged mail. A crash can only bring back the old
         * name, whose flags the next sync takes over; the message itself was made durable
         * when it was delivered, appended or copied. Saves a journal commit per STORE. */
        /* 2. the index: flags, keywords, modseq (CONDSTORE) */
        row.highestmodseq++;
        cur_modseq = row.highestmodseq;
        if (is_renamed)
            store_sync_own_change(&row.cur_mtime, mtime_before, mtime_after);
        sqlite3_stmt *st = NULL;
        int rc = SQLITE_ERROR;
        if (store_index_prepare(db,
                                "UPDATE messages SET flags = ?, keywords = ?, modseq = ?,"
                                " location = ? WHERE mailbox = ? AND uid = ?",
                                &st) == SQLITE_OK) {
            sqlite3_bind_int(st, 1, (int)nf);
            if (*kw_text)
                sqlite3_bind_text(st, 2, kw_text, -1, SQLITE_STATIC);
            else
                sqlite3_bind_null(st, 2);
            sqlite3_bind_int64(st, 3, (int64_t)row.highestmodseq);
            sqlite3_bind_text(st, 4, new_loc, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 5, row.id);
            sqlite3_bind_int64(st, 6, m->pub.uid);
            rc = sqlite3_step(st);
        }
        if (rc != SQLITE_DONE)
            store_error(error_r, "index: %s", sqlite3_errmsg(db));
        store_index_done(st);
        if (rc != SQLITE_DONE)
            goto fail;
        if (store_index_mailbox_save(db, &row, error_r) < 0)
            goto fail;
    }
    if (store_index_commit(db, error_r) < 0)
        goto out;
    /* 3. the view takes the message's current state (the view's highestmodseq is left
     * alone: the next sync must still notice other changes made in between) */
    m->pub.flags = nf | (m->pub.flags & STORE_FLAG_RECENT);
    store_keywords_free(m->pub.keywords);
    m->pub.keywords = nkw;
    nkw = NULL;
    m->pub.modseq = cur_modseq;
    char *dup = strdup(new_loc);
    if (dup) {
        free(m->location);
        m->location = dup;
    }
    if (!is_same)
        store_notify_publish_any_thread(box->u->user, box->name);
    ret = 0;
    goto out;
fail:
    store_index_rollback(db);
out:
    store_keywords_free(cur_kw);
    store_keywords_free(nkw);
    free(cur_loc);
    free(kw_text);
    return ret;
}

/* Index of uid in the view, or SIZE_MAX. */
static size_t view_find_uid(const struct store_mailbox *box, uint32_t uid)
{
    size_t lo = 0, hi = box->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (box->msgs[mid].pub.uid == uid)
            return mid;
        if (box->msgs[mid].pub.uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

size_t store_view_find_uid(const struct store_mailbox *box, uint32_t uid)
{
    return view_find_uid(box, uid);
}

const char *store_view_path(const struct store_mailbox *box)
{
    return box->path;
}

const char *store_mailbox_folder(const struct store_mailbox *box)
{
    return box->path;
}

const char *store_view_name(const struct store_mailbox *box)
{
    return box->name;
}

struct store_user *store_view_user(const struct store_mailbox *box)
{
    return box->u;
}

int64_t store_view_mailbox_id(const struct store_mailbox *box)
{
    return box->row.id;
}

int store_view_file_path(struct store_mailbox *box, size_t i, char *out, size_t size)
{
    if (i >= box->n)
        return -1;
    struct view_msg *m = &box->msgs[i];
    snprintf(out, size, "%s/%s", box->path, m->location);
    if (access(out, F_OK) == 0)
        return 0;
    if (view_relocate(box, m) < 0)
        return -1;
    snprintf(out, size, "%s/%s", box->path, m->location);
    return 0;
}

/* Delete expunged rows and bump highestmodseq, in one transaction. */
static int expunge_index(struct store_mailbox *box, const uint32_t *uids, size_t n,
                         const int64_t mtime_before[2], const int64_t mtime_after[2],
                         char **error_r)
{
    sqlite3 *db = box->u->db;
    if (store_index_begin(db, error_r) < 0)
        return -1;
    struct store_mbox_row row;
    if (store_index_mailbox_get(db, box->name, &row, error_r) != 0) {
        store_index_rollback(db);
        return -1;
    }
    sqlite3_stmt *del = NULL, *delc = NULL;
    int ok = store_index_prepare(db, "DELETE FROM messages WHERE mailbox = ? AND uid = ?", &del) ==
                 SQLITE_OK &&
             store_index_prepare(db, "DELETE FROM cache WHERE mailbox = ? AND uid = ?", &delc) ==
                 SQLITE_OK;
    /* RFC 7162: an expunge is a modification; its mod-sequence goes with a tombstone */
    uint64_t modseq = row.highestmodseq + 1;
    for (size_t k = 0; ok && k < n; k++) {
        sqlite3_stmt *sts[2] = {del, delc};
        bool is_deleted = false;
        for (int s = 0; s < 2 && ok; s++) {
            sqlite3_reset(sts[s]);
            sqlite3_bind_int64(sts[s], 1, row.id);
            sqlite3_bind_int64(sts[s], 2, uids[k]);
            ok = sqlite3_step(sts[s]) == SQLITE_DONE;
            if (s == 0)
                is_deleted = ok && sqlite3_changes(db) > 0;
        }
        if (ok && is_deleted)
            ok = store_index_tombstone_add(db, row.id, uids[k], modseq, NULL) == 0;
    }
    if (!ok)
        store_error(error_r, "index: %s", sqlite3_errmsg(db));
    store_index_done(del);
    store_index_done(delc);
    row.highestmodseq = modseq;
    /* our unlinks: [0] new/, [1] cur/ (0 = folder not touched) */
    if (mtime_after[0] != 0)
        store_sync_own_change(&row.new_mtime, mtime_before[0], mtime_after[0]);
    if (mtime_after[1] != 0)
        store_sync_own_change(&row.cur_mtime, mtime_before[1], mtime_after[1]);
    if (!ok || store_index_mailbox_save(db, &row, error_r) < 0) {
        store_index_rollback(db);
        return -1;
    }
    return store_index_commit(db, error_r);
}

/* Expunge; is_durable: fsync the folders before returning (see store.h). */
static int view_expunge(struct store_mailbox *box, const uint32_t *uids, size_t n, bool is_durable,
                        char **error_r)
{
    if (store_user_attach(box->u, error_r) < 0)
        return -1;
    if (box->is_read_only) {
        store_error(error_r, "Mailbox is read-only");
        return -1;
    }
    bool touched_new = false, touched_cur = false;
    /* Only UIDs this view knows are expunged: a UID it has not seen yet has no file
     * name here, and dropping its row would leave the file to come back under a new UID. */
    uint32_t *known = calloc(n + 1, sizeof *known);
    size_t n_known = 0;
    if (!known) {
        store_error(error_r, "out of memory");
        return -1;
    }
    static const char *const subs[] = {"new", "cur"};
    int64_t mtime_before[2] = {0, 0}, mtime_after[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        char dir[4300];
        snprintf(dir, sizeof dir, "%s/%s", box->path, subs[s]);
        mtime_before[s] = store_sync_dir_mtime(dir);
    }
    for (size_t k = 0; k < n; k++) {
        size_t i = view_find_uid(box, uids[k]);
        if (i == SIZE_MAX)
            continue;
        known[n_known++] = uids[k];
        struct view_msg *m = &box->msgs[i];
        for (int attempt = 0; attempt < 2; attempt++) {
            char path[5000];
            snprintf(path, sizeof path, "%s/%s", box->path, m->location);
            if (unlink(path) == 0) {
                if (strncmp(m->location, "new/", 4) == 0)
                    touched_new = true;
                else
                    touched_cur = true;
                break;
            }
            if (errno != ENOENT) {
                store_error(error_r, "unlink %s: %s", path, strerror(errno));
                free(known);
                return -1;
            }
            if (attempt == 1 || view_relocate(box, m) < 0)
                break; /* already gone: someone else expunged it */
        }
    }
    bool touched[2] = {touched_new, touched_cur};
    for (int s = 0; s < 2; s++) {
        if (!touched[s])
            continue;
        char dir[4300];
        snprintf(dir, sizeof dir, "%s/%s", box->path, subs[s]);
        mtime_after[s] = store_sync_dir_mtime(dir);
        if (is_durable && store_io_fsync_dir(dir) < 0) {
            store_error(error_r, "fsync %s: %s", dir, strerror(errno));
            free(known);
            return -1;
        }
    }
    /* The files are gone for good now; if the index update below fails, the next sync
     * notices the missing files and drops the rows, so the expunge still stands. */
    char *ierr = NULL;
    if (n_known > 0 && expunge_index(box, known, n_known, mtime_before, mtime_after, &ierr) < 0) {
        log_warning("store", "%s: expunge index update failed (next sync repairs it): %s",
                    box->u->user, ierr ? ierr : "?");
        free(ierr);
    }
    free(known);
    if (n_known == 0)
        return 0;
    store_notify_publish_any_thread(box->u->user, box->name);
    return 0;
}

int store_mailbox_expunge_uids(struct store_mailbox *box, const uint32_t *uids, size_t n,
                               char **error_r)
{
    return view_expunge(box, uids, n, true, error_r);
}

int store_mailbox_expunge_uids_unsynced(struct store_mailbox *box, const uint32_t *uids, size_t n,
                                        char **error_r)
{
    /* No fsync of the folders (what Dovecot's default mail_fsync=optimized does for every
     * expunge): sessions and other programs see the unlinks at once, and a crash before
     * the kernel writes the folder back can only bring a message back (the next sync
     * gives it a new UID), never lose one. Saves a synchronous write per IMAP EXPUNGE,
     * the second-largest wait of the mixed load after APPEND's two (issue 4). */
    return view_expunge(box, uids, n, false, error_r);
}

/* Append uid to a growing array; false when out of memory. */
static bool vanished_push(uint32_t **v, size_t *n, size_t *cap, uint32_t uid)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        uint32_t *nv = realloc(*v, ncap * sizeof *nv);
        if (!nv)
            return false;
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*n)++] = uid;
    return true;
}

int store_mailbox_vanished(struct store_mailbox *box, uint64_t modseq, uint32_t **uids_r,
                           size_t *n_r, char **error_r)
{
    *uids_r = NULL;
    *n_r = 0;
    if (store_user_attach(box->u, error_r) < 0)
        return -1;
    sqlite3 *db = box->u->db;
    sqlite3_stmt *st = NULL;
    int64_t since = INT64_MAX;
    if (store_index_prepare(db, "SELECT vanished_since FROM mailboxes WHERE id = ?", &st) ==
        SQLITE_OK) {
        sqlite3_bind_int64(st, 1, box->row.id);
        if (sqlite3_step(st) == SQLITE_ROW)
            since = sqlite3_column_int64(st, 0);
    }
    store_index_done(st);
    uint32_t *v = NULL;
    size_t n = 0, cap = 0;
    if ((int64_t)modseq >= since) {
        /* every expunge after modseq has its tombstone */
        if (store_index_prepare(db,
                                "SELECT uid FROM expunged WHERE mailbox = ? AND modseq > ?"
                                " ORDER BY uid",
                                &st) != SQLITE_OK) {
            store_error(error_r, "index: %s", sqlite3_errmsg(db));
            return -1;
        }
        sqlite3_bind_int64(st, 1, box->row.id);
        sqlite3_bind_int64(st, 2, (int64_t)modseq);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            uint32_t uid = (uint32_t)sqlite3_column_int64(st, 0);
            /* a UID the view still shows is reported by its own sync later */
            if (view_find_uid(box, uid) == SIZE_MAX && !vanished_push(&v, &n, &cap, uid)) {
                store_index_done(st);
                free(v);
                store_error(error_r, "out of memory");
                return -1;
            }
        }
        store_index_done(st);
        if (rc != SQLITE_DONE) {
            free(v);
            store_error(error_r, "index: %s", sqlite3_errmsg(db));
            return -1;
        }
    } else {
        /* expunges that old were not tracked: every UID below UIDNEXT the view lacks
         * (RFC 7162 §3.2.5.1 lets the server name UIDs the client may not know) */
        uint32_t next = 1;
        for (size_t i = 0; i <= box->n; i++) {
            uint32_t until = i < box->n ? box->msgs[i].pub.uid : box->row.uidnext;
            for (uint32_t uid = next; uid < until; uid++)
                if (!vanished_push(&v, &n, &cap, uid)) {
                    free(v);
                    store_error(error_r, "out of memory");
                    return -1;
                }
            next = until + 1;
        }
    }
    *uids_r = v;
    *n_r = n;
    return 0;
}
