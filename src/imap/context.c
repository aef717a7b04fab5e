/*
 * context.c - RFC 5267 §4.3 updating contexts: SEARCH / SORT RETURN (UPDATE) and their UID
 * forms, the unsolicited "* ESEARCH (TAG "t") [UID] ADDTO/REMOVEFROM" that follow the
 * result while the mailbox changes, and CANCELUPDATE (§4.3.5).
 *
 * A context holds its search program (parsed once, evaluated again only on the messages
 * that changed), the sort criteria of a SORT, and the result as the client was last
 * told it, as UIDs (ascending for SEARCH, sort order for SORT). The session's contexts
 * move into every job with the selected mailbox (session.h, the thread rule), and
 * imap_updates_check() runs on the pool thread after the command's work and sync:
 *
 *  - a message whose mod-sequence is above the view's HIGHESTMODSEQ when the context last
 *    looked is evaluated again (new mail, flag changes by anyone, this session's own STORE
 *    and APPEND: every change of a message gives it a new mod-sequence, RFC 7162 §3.1).
 *    The view's HIGHESTMODSEQ moves only with a sync, never with this view's own flag
 *    change, so a change another session committed before our own STORE (a lower
 *    mod-sequence, synced later) is still above it;
 *  - a UID of the result the view no longer has was expunged: imap_updates_expunged() says
 *    so before the EXPUNGE (or VANISHED) responses are written, naming the messages by the
 *    numbers the client still has for them (RFC 5267 §4.3.4: a REMOVEFROM of sequence
 *    numbers goes before the EXPUNGEs that renumber them; Dovecot does the same);
 *  - the differences are written: REMOVEFROM first, then ADDTO, after the sync's EXISTS
 *    (an ADDTO names only messages the client has been told of). A SEARCH context uses
 *    context position 0 and sets in mailbox order (§4.3.3-4.3.4 RECOMMENDED); a SORT
 *    context gives positions such that applying the pairs in order turns the old result
 *    into the new one (the sort keys of a message never change, so the messages that stay
 *    keep their relative order).
 *
 * A context of the sequence-number form keeps UIDs too; its messages are named by their
 * sequence numbers in the view when written (the client renumbers the rest of its copy
 * with each EXPUNGE, as for any sequence number it holds).
 *
 * Limits: IMAP_MAX_UPDATES contexts per session (beyond: "* NO [NOUPDATE "t"]", §4.3.1);
 * each result is bounded by the mailbox. Programs whose result would move without any
 * message changing get no context (imap_search_is_updatable()).
 */
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "imap/session.h"
#include "store/store.h"

struct imap_update {
    char *tag;
    struct skey *root;
    bool is_uid; /* UID SEARCH/SORT: UIDs; else sequence numbers */
    bool is_sort;
    enum mime_comparator cmp;
    struct imap_sort_criterion crit[IMAP_SORT_MAX_CRITERIA];
    size_t n_crit;
    uint32_t *uids; /* the result as last told */
    size_t n;
    uint64_t seen_modseq;     /* the view's HIGHESTMODSEQ when last evaluated */
    size_t seen_count;        /* messages in the view then */
    uint64_t seen_generation; /* store_mailbox_generation() then */
};

struct imap_updates {
    struct imap_update *v[IMAP_MAX_UPDATES];
    size_t n;
};

static void imap_update_free(struct imap_update *u)
{
    if (!u)
        return;
    free(u->tag);
    imap_search_free(u->root);
    free(u->uids);
    free(u);
}

void imap_updates_free(struct imap_updates *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++)
        imap_update_free(u->v[i]);
    free(u);
}

void imap_updates_clear(struct imap_session *s)
{
    /* RFC 5267 §4.3: updates cease when the mailbox is no longer selected */
    imap_updates_free(s->updates);
    s->updates = NULL;
}

bool imap_update_find(const struct imap_updates *u, const char *tag)
{
    for (size_t i = 0; u && i < u->n; i++)
        if (strcmp(u->v[i]->tag, tag) == 0)
            return true;
    return false;
}

void imap_update_request_init(struct imap_session *s, const struct skey *root, bool is_uid,
                              const struct imap_sort_criterion *crit, size_t n_crit,
                              struct imap_update_request *r)
{
    memset(r, 0, sizeof *r);
    if (!imap_search_is_updatable(root))
        r->refusal = "No updates for sequence-set criteria, UID * or OLDER/YOUNGER";
    else if (s->updates && s->updates->n >= IMAP_MAX_UPDATES)
        r->refusal = "Too many contexts";
    r->is_uid = is_uid;
    r->is_sort = crit != NULL;
    r->cmp = s->comparator;
    if (crit) {
        memcpy(r->crit, crit, n_crit * sizeof *crit);
        r->n_crit = n_crit;
    }
}

void imap_update_start(struct imap_job *j, const struct imap_update_request *r, struct skey **root,
                       const uint32_t *uids, size_t n)
{
    const char *refusal = r->refusal;
    struct imap_updates *all = j->ctx.updates;
    struct imap_update *u = NULL;
    if (!refusal) {
        if (!all)
            all = j->ctx.updates = calloc(1, sizeof *all);
        u = all ? calloc(1, sizeof *u) : NULL;
        if (u) {
            u->tag = strdup(j->tag);
            u->uids = malloc((n ? n : 1) * sizeof *u->uids);
        }
        if (!u || !u->tag || !u->uids) {
            imap_update_free(u);
            u = NULL;
            refusal = "Out of memory";
        } else if (all->n >= IMAP_MAX_UPDATES) {
            imap_update_free(u);
            u = NULL;
            refusal = "Too many contexts";
        }
    }
    if (refusal) {
        /* RFC 5267 §4.3.1 */
        buf_printf(&j->out, "* NO [NOUPDATE \"%s\"] %s.\r\n", j->tag, refusal);
        return;
    }
    if (n)
        memcpy(u->uids, uids, n * sizeof *uids);
    u->n = n;
    u->root = *root;
    *root = NULL;
    u->is_uid = r->is_uid;
    u->is_sort = r->is_sort;
    u->cmp = r->cmp;
    memcpy(u->crit, r->crit, sizeof u->crit);
    u->n_crit = r->n_crit;
    u->seen_modseq = store_mailbox_highestmodseq(j->ctx.box);
    u->seen_count = store_mailbox_count(j->ctx.box);
    u->seen_generation = store_mailbox_generation(j->ctx.box);
    all->v[all->n++] = u;
}

/* How many messages of the view (UIDs ascending) have a UID below uid. */
static size_t imap_view_rank(struct store_mailbox *box, uint32_t uid)
{
    size_t lo = 0, hi = store_mailbox_count(box);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (store_mailbox_message(box, mid)->uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Index of uid in the view, or SIZE_MAX. */
static size_t imap_view_find(struct store_mailbox *box, uint32_t uid)
{
    size_t i = imap_view_rank(box, uid);
    bool is_found = i < store_mailbox_count(box) && store_mailbox_message(box, i)->uid == uid;
    return is_found ? i : SIZE_MAX;
}

static int imap_u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Is uid in the ascending array? */
static bool imap_u32_has(const uint32_t *v, size_t n, uint32_t uid)
{
    return n && bsearch(&uid, v, n, sizeof *v, imap_u32_cmp) != NULL;
}

/* The new membership of u (ascending UIDs, into *set_r): unchanged messages keep their
 * answer, changed ones (mod-sequence above seen) are evaluated again, expunged ones
 * leave. false when out of memory. */
static bool imap_update_members(struct imap_update *u, struct store_mailbox *box, uint32_t **set_r,
                                size_t *n_r)
{
    size_t count = store_mailbox_count(box);
    uint32_t *old = malloc((u->n ? u->n : 1) * sizeof *old);
    uint32_t *set = malloc((count ? count : 1) * sizeof *set);
    if (!old || !set) {
        free(old);
        free(set);
        return false;
    }
    if (u->n)
        memcpy(old, u->uids, u->n * sizeof *old);
    qsort(old, u->n, sizeof *old, imap_u32_cmp);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        const struct store_message *m = store_mailbox_message(box, i);
        bool is_match = m->modseq > u->seen_modseq ? imap_search_match_one(u->root, box, i)
                                                   : imap_u32_has(old, u->n, m->uid);
        if (is_match)
            set[n++] = m->uid;
    }
    free(old);
    *set_r = set;
    *n_r = n;
    return true;
}

/* How a context's messages are named in what is written now. */
struct imap_update_names {
    struct store_mailbox *box;
    bool is_uid;          /* UIDs, else sequence numbers */
    const uint32_t *gone; /* UIDs gone from the view, EXPUNGE not yet written (ascending) */
    size_t n_gone;
};

/* The name of the message uid: the UID, or its sequence number as the client has it (the
 * view plus the messages gone from it whose EXPUNGE is yet to come). */
static uint32_t imap_update_name(const struct imap_update_names *nm, uint32_t uid)
{
    if (nm->is_uid)
        return uid;
    size_t lo = 0, hi = nm->n_gone; /* gone ones below uid */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (nm->gone[mid] < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (uint32_t)(imap_view_rank(nm->box, uid) + lo + 1);
}

/* A pair "pos set" of ADDTO/REMOVEFROM: the messages v[0..n) named by nm, in the order
 * given (runs compressed). */
static void imap_update_pair(struct buf *out, bool *is_first, size_t pos, const uint32_t *v,
                             size_t n, const struct imap_update_names *nm)
{
    buf_printf(out, "%s%zu ", *is_first ? "" : " ", pos);
    *is_first = false;
    if (nm->is_uid) {
        imap_write_uid_set(out, v, n);
        return;
    }
    uint32_t *names = malloc((n ? n : 1) * sizeof *names);
    for (size_t i = 0; i < n; i++) {
        if (names)
            names[i] = imap_update_name(nm, v[i]);
        else /* out of memory: the same set, uncompressed */
            buf_printf(out, "%s%u", i ? "," : "", imap_update_name(nm, v[i]));
    }
    if (names)
        imap_write_uid_set(out, names, n);
    free(names);
}

/* The start of an update line: '* ESEARCH (TAG "t") [UID] ADDTO|REMOVEFROM ('. */
static void imap_update_line(struct buf *out, const struct imap_update *u, const char *what)
{
    buf_printf(out, "* ESEARCH (TAG \"%s\")%s %s (", u->tag, u->is_uid ? " UID" : "", what);
}

/* A SEARCH context: REMOVEFROM (0 gone) and ADDTO (0 new), sets in mailbox order. */
static void imap_update_write_search(struct imap_job *j, const struct imap_update *u,
                                     const struct imap_update_names *nm, const uint32_t *set,
                                     size_t n)
{
    uint32_t *gone = malloc((u->n ? u->n : 1) * sizeof *gone);
    uint32_t *added = malloc((n ? n : 1) * sizeof *added);
    size_t n_gone = 0, n_added = 0;
    if (gone && added) {
        for (size_t i = 0; i < u->n; i++)
            if (!imap_u32_has(set, n, u->uids[i]))
                gone[n_gone++] = u->uids[i];
        for (size_t i = 0; i < n; i++)
            if (!imap_u32_has(u->uids, u->n, set[i]))
                added[n_added++] = set[i];
    }
    bool is_first = true;
    if (n_gone) {
        imap_update_line(&j->out, u, "REMOVEFROM");
        imap_update_pair(&j->out, &is_first, 0, gone, n_gone, nm);
        buf_append_str(&j->out, ")\r\n");
    }
    is_first = true;
    if (n_added) {
        imap_update_line(&j->out, u, "ADDTO");
        imap_update_pair(&j->out, &is_first, 0, added, n_added, nm);
        buf_append_str(&j->out, ")\r\n");
    }
    free(gone);
    free(added);
}

/* A SORT context: the pairs that turn u's old result into new_order[0..n_new) (its members
 * ascending in new_set[0..n_set)). REMOVEFROM: each run of removed results at the position
 * its first one has once the earlier runs are gone; ADDTO: each run of added results at
 * its position in the new order, ascending. */
static void imap_update_write_sort(struct imap_job *j, const struct imap_update *u,
                                   const struct imap_update_names *nm, const uint32_t *new_set,
                                   size_t n_set, const uint32_t *new_order, size_t n_new)
{
    const uint32_t *old = u->uids;
    size_t n_old = u->n;
    uint32_t *old_sorted = malloc((n_old ? n_old : 1) * sizeof *old_sorted);
    if (!old_sorted)
        return;
    if (n_old)
        memcpy(old_sorted, old, n_old * sizeof *old);
    qsort(old_sorted, n_old, sizeof *old_sorted, imap_u32_cmp);
    bool is_first = true;
    size_t removed = 0;
    for (size_t i = 0; i < n_old;) {
        if (imap_u32_has(new_set, n_set, old[i])) {
            i++;
            continue;
        }
        size_t k = i;
        while (k < n_old && !imap_u32_has(new_set, n_set, old[k]))
            k++;
        if (is_first)
            imap_update_line(&j->out, u, "REMOVEFROM");
        imap_update_pair(&j->out, &is_first, i + 1 - removed, old + i, k - i, nm);
        removed += k - i;
        i = k;
    }
    if (!is_first)
        buf_append_str(&j->out, ")\r\n");
    is_first = true;
    for (size_t i = 0; i < n_new;) {
        if (imap_u32_has(old_sorted, n_old, new_order[i])) {
            i++;
            continue;
        }
        size_t k = i;
        while (k < n_new && !imap_u32_has(old_sorted, n_old, new_order[k]))
            k++;
        if (is_first)
            imap_update_line(&j->out, u, "ADDTO");
        imap_update_pair(&j->out, &is_first, i + 1, new_order + i, k - i, nm);
        i = k;
    }
    if (!is_first)
        buf_append_str(&j->out, ")\r\n");
    free(old_sorted);
}

/* The members set[0..n) (ascending UIDs) in u's sort order, into *order_r. */
static bool imap_update_sorted(const struct imap_update *u, struct store_mailbox *box,
                               const uint32_t *set, size_t n, uint32_t **order_r)
{
    size_t count = store_mailbox_count(box);
    bool *match = calloc(count ? count : 1, sizeof *match);
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    uint32_t *order = malloc((n ? n : 1) * sizeof *order);
    char *err = NULL;
    bool ok = match && idx && order;
    for (size_t k = 0; ok && k < n; k++) {
        idx[k] = imap_view_find(box, set[k]);
        match[idx[k]] = true; /* set comes from the view: always found */
    }
    if (ok && imap_sort_order(box, u->cmp, u->crit, u->n_crit, match, idx, n, &err) < 0) {
        free(err);
        ok = false;
    }
    for (size_t k = 0; ok && k < n; k++)
        order[k] = store_mailbox_message(box, idx[k])->uid;
    free(match);
    free(idx);
    if (!ok) {
        free(order);
        return false;
    }
    *order_r = order;
    return true;
}

/* Has anything of the view changed since u last looked? Most commands change nothing
 * (the generation tells in O(1): a FETCH in many batches costs no scans). */
static bool imap_update_is_stale(const struct imap_update *u, struct store_mailbox *box)
{
    if (store_mailbox_generation(box) == u->seen_generation)
        return false;
    size_t count = store_mailbox_count(box);
    if (count != u->seen_count)
        return true;
    for (size_t i = 0; i < count; i++)
        if (store_mailbox_message(box, i)->modseq > u->seen_modseq)
            return true;
    return false;
}

/* Bring one context up to date, writing its changes. A failure (memory, the sort keys)
 * leaves it as it was: the next check tries again. */
static void imap_update_check_one(struct imap_job *j, struct imap_update *u)
{
    struct store_mailbox *box = j->ctx.box;
    if (!imap_update_is_stale(u, box)) {
        u->seen_generation = store_mailbox_generation(box);
        return;
    }
    struct imap_update_names nm = {.box = box, .is_uid = u->is_uid};
    if (!u->is_uid) {
        /* Messages whose EXPUNGE went out without their REMOVEFROM (imap_updates_expunged
         * ran out of memory) have no number left: the EXPUNGE told the client. */
        size_t kept = 0;
        for (size_t i = 0; i < u->n; i++)
            if (imap_view_find(box, u->uids[i]) != SIZE_MAX)
                u->uids[kept++] = u->uids[i];
        u->n = kept;
    }
    uint32_t *set = NULL, *order = NULL;
    size_t n = 0;
    if (!imap_update_members(u, box, &set, &n))
        return;
    if (u->is_sort) {
        if (!imap_update_sorted(u, box, set, n, &order)) {
            free(set);
            return;
        }
        imap_update_write_sort(j, u, &nm, set, n, order, n);
        free(set);
    } else {
        imap_update_write_search(j, u, &nm, set, n);
        order = set;
    }
    free(u->uids);
    u->uids = order;
    u->n = n;
    u->seen_modseq = store_mailbox_highestmodseq(box);
    u->seen_count = store_mailbox_count(box);
    u->seen_generation = store_mailbox_generation(box);
}

void imap_updates_check(struct imap_job *j)
{
    struct imap_updates *all = j->ctx.updates;
    for (size_t i = 0; all && j->ctx.box && i < all->n; i++)
        imap_update_check_one(j, all->v[i]);
}

/* One context told that the messages gone[0..n_gone) (ascending UIDs) left the view. */
static void imap_update_expunged_one(struct imap_job *j, struct imap_update *u,
                                     const struct imap_update_names *nm)
{
    uint32_t *kept = malloc((u->n ? u->n : 1) * sizeof *kept);
    uint32_t *kept_set = u->is_sort ? malloc((u->n ? u->n : 1) * sizeof *kept_set) : NULL;
    if (!kept || (u->is_sort && !kept_set)) {
        /* out of memory: the next check drops them silently (imap_update_check_one) */
        free(kept);
        free(kept_set);
        return;
    }
    size_t n_kept = 0;
    for (size_t i = 0; i < u->n; i++)
        if (!imap_u32_has(nm->gone, nm->n_gone, u->uids[i]))
            kept[n_kept++] = u->uids[i];
    if (n_kept == u->n) {
        free(kept);
        free(kept_set);
        return;
    }
    if (u->is_sort) {
        memcpy(kept_set, kept, n_kept * sizeof *kept);
        qsort(kept_set, n_kept, sizeof *kept_set, imap_u32_cmp);
        imap_update_write_sort(j, u, nm, kept_set, n_kept, kept, n_kept);
    } else {
        imap_update_write_search(j, u, nm, kept, n_kept);
    }
    free(kept_set);
    free(u->uids);
    u->uids = kept; /* the rest of the change (seen_*) is the next check's */
    u->n = n_kept;
}

void imap_updates_expunged(struct imap_job *j, const uint32_t *uids, size_t n)
{
    struct imap_updates *all = j->ctx.updates;
    if (!all || all->n == 0 || !j->ctx.box || n == 0)
        return;
    uint32_t *gone = malloc(n * sizeof *gone);
    if (!gone)
        return;
    memcpy(gone, uids, n * sizeof *gone);
    qsort(gone, n, sizeof *gone, imap_u32_cmp);
    struct imap_update_names nm = {.box = j->ctx.box, .gone = gone, .n_gone = n};
    for (size_t i = 0; i < all->n; i++) {
        nm.is_uid = all->v[i]->is_uid;
        imap_update_expunged_one(j, all->v[i], &nm);
    }
    free(gone);
}

/* ---- CANCELUPDATE (RFC 5267 §4.3.5) ------------------------------------------------- */

void imap_cmd_cancelupdate(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                           bool is_uid)
{
    (void)is_uid;
    /* command-select =/ "CANCELUPDATE" 1*(SP quoted) */
    bool ok = n > 0;
    for (size_t i = 0; i < n && ok; i++)
        ok = args[i].type == IMAP_ARG_QUOTED;
    if (!ok) {
        imap_reply(s, tag, "BAD Invalid parameters.");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!imap_update_find(s->updates, args[i].str)) {
            imap_reply(s, tag, "BAD Unknown tag.");
            return;
        }
    }
    struct imap_updates *all = s->updates;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < all->n; k++) {
            if (strcmp(all->v[k]->tag, args[i].str) == 0) {
                imap_update_free(all->v[k]);
                all->v[k] = all->v[--all->n];
                break;
            }
        }
    }
    imap_reply(s, tag, "OK Updates cancelled.");
}
