/*
 * context.c - RFC 5267 §4.3 updating contexts: UID SEARCH / UID SORT RETURN (UPDATE), the
 * unsolicited "* ESEARCH (TAG "t") UID ADDTO/REMOVEFROM" that follow the result while the
 * mailbox changes, and CANCELUPDATE (§4.3.5).
 *
 * A context holds its search program (parsed once, evaluated again only on the messages
 * that changed), the sort criteria of a UID SORT, and the result as the client was last
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
 *  - a UID of the result the view no longer has was expunged;
 *  - the differences are written: REMOVEFROM first, then ADDTO. A SEARCH context uses
 *    context position 0 and sets in mailbox order (§4.3.3-4.3.4 RECOMMENDED); a SORT
 *    context gives positions such that applying the pairs in order turns the old result
 *    into the new one (the sort keys of a message never change, so the messages that stay
 *    keep their relative order).
 *
 * Limits: IMAP_MAX_UPDATES contexts per session (beyond: "* NO [NOUPDATE "t"]", §4.3.1);
 * each result is bounded by the mailbox. Only the UID forms get contexts (see session.h).
 */
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "imap/session.h"
#include "store/store.h"

struct imap_update {
    char *tag;
    struct skey *root;
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
    if (!is_uid)
        r->refusal = "Updates only for UID SEARCH and UID SORT";
    else if (!imap_search_is_updatable(root))
        r->refusal = "No updates for sequence numbers, UID * or OLDER/YOUNGER";
    else if (s->updates && s->updates->n >= IMAP_MAX_UPDATES)
        r->refusal = "Too many contexts";
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
    u->is_sort = r->is_sort;
    u->cmp = r->cmp;
    memcpy(u->crit, r->crit, sizeof u->crit);
    u->n_crit = r->n_crit;
    u->seen_modseq = store_mailbox_highestmodseq(j->ctx.box);
    u->seen_count = store_mailbox_count(j->ctx.box);
    u->seen_generation = store_mailbox_generation(j->ctx.box);
    all->v[all->n++] = u;
}

/* Index of uid in the view (UIDs ascending), or SIZE_MAX. */
static size_t imap_view_find(struct store_mailbox *box, uint32_t uid)
{
    size_t lo = 0, hi = store_mailbox_count(box);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t v = store_mailbox_message(box, mid)->uid;
        if (v < uid)
            lo = mid + 1;
        else if (v > uid)
            hi = mid;
        else
            return mid;
    }
    return SIZE_MAX;
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

/* A pair "pos set" of ADDTO/REMOVEFROM: the values in the order given (runs compressed). */
static void imap_update_pair(struct buf *out, bool *is_first, size_t pos, const uint32_t *v,
                             size_t n)
{
    buf_printf(out, "%s%zu ", *is_first ? "" : " ", pos);
    imap_write_uid_set(out, v, n);
    *is_first = false;
}

/* A SEARCH context: REMOVEFROM (0 gone) and ADDTO (0 new), sets in mailbox order. */
static void imap_update_write_search(struct imap_job *j, const struct imap_update *u,
                                     const uint32_t *set, size_t n)
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
        buf_printf(&j->out, "* ESEARCH (TAG \"%s\") UID REMOVEFROM (", u->tag);
        imap_update_pair(&j->out, &is_first, 0, gone, n_gone);
        buf_append_str(&j->out, ")\r\n");
    }
    is_first = true;
    if (n_added) {
        buf_printf(&j->out, "* ESEARCH (TAG \"%s\") UID ADDTO (", u->tag);
        imap_update_pair(&j->out, &is_first, 0, added, n_added);
        buf_append_str(&j->out, ")\r\n");
    }
    free(gone);
    free(added);
}

/* A SORT context: the pairs that turn old[0..n_old) into new[0..n_new). REMOVEFROM: each
 * run of removed results at the position its first one has once the earlier runs are
 * gone; ADDTO: each run of added results at its position in the new order, ascending. */
static void imap_update_write_sort(struct imap_job *j, const char *tag, const uint32_t *old,
                                   size_t n_old, const uint32_t *new_set, size_t n_set,
                                   const uint32_t *new_order, size_t n_new)
{
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
            buf_printf(&j->out, "* ESEARCH (TAG \"%s\") UID REMOVEFROM (", tag);
        imap_update_pair(&j->out, &is_first, i + 1 - removed, old + i, k - i);
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
            buf_printf(&j->out, "* ESEARCH (TAG \"%s\") UID ADDTO (", tag);
        imap_update_pair(&j->out, &is_first, i + 1, new_order + i, k - i);
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
    uint32_t *set = NULL, *order = NULL;
    size_t n = 0;
    if (!imap_update_members(u, box, &set, &n))
        return;
    if (u->is_sort) {
        if (!imap_update_sorted(u, box, set, n, &order)) {
            free(set);
            return;
        }
        imap_update_write_sort(j, u->tag, u->uids, u->n, set, n, order, n);
        free(set);
    } else {
        imap_update_write_search(j, u, set, n);
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
