/*
 * thread.c - THREAD ORDEREDSUBJECT, REFERENCES and REFS (thread.h): message keys in,
 * the "* THREAD" list out.
 *
 * REFERENCES follows RFC 5256 §3 step by step: (1) containers per message id, linked by
 * References (or In-Reply-To) without loops; (2) the root set; (3) dummy containers
 * pruned; (4) roots sorted by sent date; (5) roots with the same base subject merged;
 * (6) every set of siblings sorted by sent date (equal dates: sequence number). Parents
 * are plain indexes, the tree is rebuilt as arrays of children after pruning and after
 * the merge, and both the pruning and the writing walk with explicit stacks.
 */
#include "imap/thread.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define NONE UINT32_MAX

/* ---- ORDEREDSUBJECT (RFC 5256 §3) ---------------------------------------------------- */

static int thread_date_cmp(const struct imap_thread_msg *a, const struct imap_thread_msg *b)
{
    if (a->sent != b->sent)
        return a->sent < b->sent ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int thread_subject_date_cmp(const void *x, const void *y)
{
    const struct imap_thread_msg *a = *(const struct imap_thread_msg *const *)x;
    const struct imap_thread_msg *b = *(const struct imap_thread_msg *const *)y;
    int c = strcmp(a->subject, b->subject);
    return c ? c : thread_date_cmp(a, b);
}

/* A run of v (one base subject): where it starts and how long it is. */
struct subject_run {
    const struct imap_thread_msg **first;
    size_t len;
};

static int thread_run_cmp(const void *x, const void *y)
{
    const struct subject_run *a = x, *b = y;
    return thread_date_cmp(a->first[0], b->first[0]);
}

/* Sorted by base subject then date, one thread per subject: its first message the parent,
 * the others its children; threads by the date of their first message. */
static bool thread_orderedsubject(const struct imap_thread_msg *msgs, size_t n, struct buf *out)
{
    const struct imap_thread_msg **v = malloc(n * sizeof *v);
    struct subject_run *runs = malloc(n * sizeof *runs);
    bool ok = v && runs;
    if (ok) {
        for (size_t i = 0; i < n; i++)
            v[i] = &msgs[i];
        qsort(v, n, sizeof *v, thread_subject_date_cmp);
        size_t n_runs = 0;
        for (size_t i = 0; i < n;) {
            size_t j = i + 1;
            while (j < n && strcmp(v[j]->subject, v[i]->subject) == 0)
                j++;
            runs[n_runs++] = (struct subject_run){&v[i], j - i};
            i = j;
        }
        qsort(runs, n_runs, sizeof *runs, thread_run_cmp);
        /* RFC 5256 §4: one child follows its parent in the list, several are nested */
        for (size_t t = 0; t < n_runs && ok; t++) {
            const struct subject_run *r = &runs[t];
            ok = buf_printf(out, "(%u", r->first[0]->number);
            if (r->len == 2) {
                ok = ok && buf_printf(out, " %u", r->first[1]->number);
            } else if (r->len > 2) {
                ok = ok && buf_append_byte(out, ' ');
                for (size_t k = 1; k < r->len && ok; k++)
                    ok = buf_printf(out, "(%u)", r->first[k]->number);
            }
            ok = ok && buf_append_byte(out, ')');
        }
    }
    free(v);
    free(runs);
    return ok;
}

/* ---- REFERENCES / REFS ------------------------------------------------------------------ */

struct container {
    const char *id; /* NULL: not in the id table (no or duplicate Message-ID) */
    uint32_t id_len;
    uint32_t msg;    /* index into msgs, NONE for a dummy */
    uint32_t parent; /* NONE: a root */
    uint32_t n_links; /* containers whose parent this is (while linking) */
    uint32_t final;  /* parent after pruning and merging (NONE: root) */
    int64_t sent;    /* sort key: the message's, or a dummy's first child's */
    uint32_t seq;
    bool is_dropped; /* a dummy pruned away */
};

struct threader {
    const struct imap_thread_msg *msgs;
    struct container *c;
    size_t n_c, cap_c;
    uint32_t *table; /* open addressing: container index by id, NONE empty */
    size_t table_size;
    size_t ref_budget; /* dummies references may still make (IMAP_THREAD_MAX_IDS) */
    /* the tree as arrays of children (rebuilt by thread_children) */
    uint32_t *child_start, *children, *roots;
    size_t n_roots;
};

static uint64_t thread_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static uint32_t thread_new_container(struct threader *t, const char *id, size_t len, uint32_t msg)
{
    if (t->n_c == t->cap_c)
        return NONE;
    struct container *c = &t->c[t->n_c];
    memset(c, 0, sizeof *c);
    c->id = id;
    c->id_len = (uint32_t)len;
    c->msg = msg;
    c->parent = c->final = NONE;
    return (uint32_t)t->n_c++;
}

/* The container of an id, made when new (for a reference: a dummy, while the budget
 * lasts); NONE when it cannot be made. */
static uint32_t thread_lookup(struct threader *t, const char *id, size_t len, bool is_ref)
{
    size_t mask = t->table_size - 1;
    for (size_t h = (size_t)thread_hash(id, len) & mask;; h = (h + 1) & mask) {
        uint32_t k = t->table[h];
        if (k == NONE) {
            if (is_ref && t->ref_budget == 0)
                return NONE;
            if (is_ref)
                t->ref_budget--;
            uint32_t nc = thread_new_container(t, id, len, NONE);
            if (nc != NONE)
                t->table[h] = nc;
            return nc;
        }
        if (t->c[k].id_len == len && memcmp(t->c[k].id, id, len) == 0)
            return k;
    }
}

/* Would parent -> child make a loop (child is parent or one of its ancestors)? A child
 * without children of its own is nobody's ancestor (the common case: no walk). A walk
 * longer than IMAP_THREAD_MAX_WALK counts as a loop: the link is not made. */
static bool thread_would_loop(const struct threader *t, uint32_t parent, uint32_t child)
{
    if (parent == child)
        return true;
    if (t->c[child].n_links == 0)
        return false;
    size_t steps = 0;
    for (uint32_t a = parent; a != NONE; a = t->c[a].parent)
        if (a == child || ++steps > IMAP_THREAD_MAX_WALK)
            return true;
    return false;
}

static void thread_set_parent(struct threader *t, uint32_t child, uint32_t parent)
{
    if (t->c[child].parent != NONE)
        t->c[t->c[child].parent].n_links--;
    t->c[child].parent = parent;
    if (parent != NONE)
        t->c[parent].n_links++;
}

/* RFC 5256 §3 (1): containers and links for every message, in sequence order. */
static void thread_link(struct threader *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct imap_thread_msg *m = &t->msgs[i];
        uint32_t self = NONE;
        if (m->message_id && m->message_id[0]) {
            size_t len = strlen(m->message_id);
            self = thread_lookup(t, m->message_id, len, false);
            /* a second message with the same id gets an id of its own */
            if (self != NONE && t->c[self].msg != NONE)
                self = thread_new_container(t, NULL, 0, (uint32_t)i);
        } else {
            self = thread_new_container(t, NULL, 0, (uint32_t)i);
        }
        if (self == NONE)
            continue; /* over the id limit: the message is not threaded further */
        t->c[self].msg = (uint32_t)i;
        /* (A): link each reference to the next, when the child has no parent yet */
        uint32_t prev = NONE;
        for (const char *p = m->references; p && *p;) {
            while (*p == ' ')
                p++;
            const char *e = p;
            while (*e && *e != ' ')
                e++;
            if (e == p)
                break;
            uint32_t ref = thread_lookup(t, p, (size_t)(e - p), true);
            if (ref != NONE && prev != NONE && t->c[ref].parent == NONE &&
                !thread_would_loop(t, prev, ref))
                thread_set_parent(t, ref, prev);
            if (ref != NONE)
                prev = ref;
            p = e;
        }
        /* (B): the last reference is the parent: an earlier guess (from a truncated
         * References) is broken first; no link that would make a loop */
        if (prev != NONE && prev != self) {
            thread_set_parent(t, self, NONE);
            if (!thread_would_loop(t, prev, self))
                thread_set_parent(t, self, prev);
        }
    }
}

/* RFC 5256 §3 (3): the parent each container keeps after dummies are pruned: the nearest
 * ancestor that is a message or a dummy at the root (a dummy elsewhere is removed and its
 * children promoted); then a root dummy with no child is dropped, with one child it gives
 * way to that child. Linear: the walk up through dummies is path-compressed. */
static bool thread_prune(struct threader *t)
{
    /* a removed dummy: a dummy that is not a root; its answer (memoised in final) is
     * never NONE, since every chain ends at a kept root */
#define IS_REMOVED(x) (t->c[x].msg == NONE && t->c[x].parent != NONE)
    for (size_t i = 0; i < t->n_c; i++) {
        uint32_t a = t->c[i].parent;
        while (a != NONE && IS_REMOVED(a)) {
            if (t->c[a].final != NONE) {
                a = t->c[a].final;
                break;
            }
            a = t->c[a].parent;
        }
        for (uint32_t b = t->c[i].parent; b != NONE && IS_REMOVED(b) && t->c[b].final == NONE;
             b = t->c[b].parent)
            t->c[b].final = a;
        t->c[i].final = a;
    }
    /* removed dummies are neither roots nor children */
    for (size_t i = 0; i < t->n_c; i++)
        if (IS_REMOVED(i))
            t->c[i].is_dropped = true;
#undef IS_REMOVED
    /* root dummies: count their children */
    uint32_t *count = calloc(t->n_c ? t->n_c : 1, sizeof *count);
    uint32_t *only = calloc(t->n_c ? t->n_c : 1, sizeof *only);
    if (!count || !only) {
        free(count);
        free(only);
        return false;
    }
    for (size_t i = 0; i < t->n_c; i++) {
        uint32_t f = t->c[i].final;
        if (!t->c[i].is_dropped && f != NONE) {
            count[f]++;
            only[f] = (uint32_t)i;
        }
    }
    for (size_t i = 0; i < t->n_c; i++) {
        if (t->c[i].is_dropped || t->c[i].msg != NONE || t->c[i].final != NONE)
            continue;
        if (count[i] == 0) {
            t->c[i].is_dropped = true;
        } else if (count[i] == 1) {
            t->c[i].is_dropped = true;
            t->c[only[i]].final = NONE;
        }
    }
    free(count);
    free(only);
    return true;
}

/* qsort_r comparator of container indexes by (sent, seq); arg: the threader. */
static int thread_container_cmp(const void *x, const void *y, void *arg)
{
    const struct threader *t = arg;
    const struct container *a = &t->c[*(const uint32_t *)x];
    const struct container *b = &t->c[*(const uint32_t *)y];
    if (a->sent != b->sent)
        return a->sent < b->sent ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Build children arrays from final parents and sort every set of siblings by date (and
 * the roots: a dummy by its first child, with is_newest by the newest message of the
 * thread, REFS). (6) of RFC 5256 §3, also (4) before the merge. */
static bool thread_children(struct threader *t, bool is_newest)
{
    free(t->child_start);
    free(t->children);
    free(t->roots);
    size_t n = t->n_c;
    t->child_start = calloc(n + 1, sizeof *t->child_start);
    t->children = malloc((n ? n : 1) * sizeof *t->children);
    t->roots = malloc((n ? n : 1) * sizeof *t->roots);
    if (!t->child_start || !t->children || !t->roots)
        return false;
    t->n_roots = 0;
    for (size_t i = 0; i < n; i++) {
        if (t->c[i].is_dropped)
            continue;
        if (t->c[i].final == NONE)
            t->roots[t->n_roots++] = (uint32_t)i;
        else
            t->child_start[t->c[i].final + 1]++;
    }
    for (size_t i = 0; i < n; i++)
        t->child_start[i + 1] += t->child_start[i];
    uint32_t *fill = malloc((n ? n : 1) * sizeof *fill);
    if (!fill)
        return false;
    memcpy(fill, t->child_start, n * sizeof *fill);
    for (size_t i = 0; i < n; i++)
        if (!t->c[i].is_dropped && t->c[i].final != NONE)
            t->children[fill[t->c[i].final]++] = (uint32_t)i;
    free(fill);
    for (size_t i = 0; i < n; i++) {
        if (t->c[i].msg != NONE) {
            t->c[i].sent = t->msgs[t->c[i].msg].sent;
            t->c[i].seq = t->msgs[t->c[i].msg].seq;
        }
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t s = t->child_start[i], e = t->child_start[i + 1];
        if (e - s > 1)
            qsort_r(t->children + s, e - s, sizeof *t->children, thread_container_cmp, t);
    }
    /* a root's key: a dummy takes its first child's (dummies only stand at the root) */
    for (size_t r = 0; r < t->n_roots; r++) {
        struct container *c = &t->c[t->roots[r]];
        if (c->msg == NONE && t->child_start[t->roots[r] + 1] > t->child_start[t->roots[r]]) {
            const struct container *first = &t->c[t->children[t->child_start[t->roots[r]]]];
            c->sent = first->sent;
            c->seq = first->seq;
        }
    }
    if (is_newest) {
        /* REFS: a thread sorts by its newest message (walk each thread with a stack) */
        uint32_t *stack = malloc((n ? n : 1) * sizeof *stack);
        if (!stack)
            return false;
        for (size_t r = 0; r < t->n_roots; r++) {
            struct container *root = &t->c[t->roots[r]];
            size_t sp = 0;
            stack[sp++] = t->roots[r];
            while (sp > 0) {
                uint32_t k = stack[--sp];
                const struct container *c = &t->c[k];
                if (c->msg != NONE && (c->sent > root->sent ||
                                       (c->sent == root->sent && c->seq > root->seq))) {
                    root->sent = c->sent;
                    root->seq = c->seq;
                }
                for (uint32_t q = t->child_start[k]; q < t->child_start[k + 1]; q++)
                    stack[sp++] = t->children[q];
            }
        }
        free(stack);
    }
    qsort_r(t->roots, t->n_roots, sizeof *t->roots, thread_container_cmp, t);
    return true;
}

/* The thread subject of a root: its own, or a dummy's first child's (5)(B)(i). */
static const struct imap_thread_msg *thread_subject_msg(const struct threader *t, uint32_t k)
{
    if (t->c[k].msg != NONE)
        return &t->msgs[t->c[k].msg];
    if (t->child_start[k + 1] > t->child_start[k]) {
        uint32_t first = t->children[t->child_start[k]];
        if (t->c[first].msg != NONE)
            return &t->msgs[t->c[first].msg];
    }
    return NULL;
}

/* Open-addressing table of base subject -> root container, for (5). */
struct subject_slot {
    const char *subject; /* NULL: empty slot */
    uint32_t k;
};

static struct subject_slot *subject_find(struct subject_slot *slots, size_t size,
                                         const char *subject)
{
    size_t mask = size - 1;
    for (size_t h = (size_t)thread_hash(subject, strlen(subject)) & mask;; h = (h + 1) & mask)
        if (!slots[h].subject || strcmp(slots[h].subject, subject) == 0)
            return &slots[h];
}

/* RFC 5256 §3 (5): merge the roots that share a (non-empty) base subject. */
static bool thread_merge_subjects(struct threader *t)
{
    size_t size = 16;
    while (size < t->n_roots * 2 + 16)
        size *= 2;
    struct subject_slot *slots = calloc(size, sizeof *slots);
    if (!slots)
        return false;
    /* (B): one root per subject: a dummy wins over a message, a non-reply over a reply */
    for (size_t r = 0; r < t->n_roots; r++) {
        uint32_t k = t->roots[r];
        const struct imap_thread_msg *m = thread_subject_msg(t, k);
        if (!m || !m->subject[0])
            continue;
        struct subject_slot *slot = subject_find(slots, size, m->subject);
        if (!slot->subject) {
            *slot = (struct subject_slot){m->subject, k};
            continue;
        }
        const struct container *in = &t->c[slot->k];
        bool is_in_reply = in->msg != NONE && t->msgs[in->msg].is_reply;
        bool is_cur_reply = t->c[k].msg != NONE && m->is_reply;
        if (in->msg != NONE && (t->c[k].msg == NONE || (is_in_reply && !is_cur_reply)))
            slot->k = k;
    }
    /* (C): merge each root into the one its subject maps to */
    for (size_t r = 0; r < t->n_roots; r++) {
        uint32_t k = t->roots[r];
        const struct imap_thread_msg *m = thread_subject_msg(t, k);
        if (!m || !m->subject[0])
            continue;
        struct subject_slot *slot = subject_find(slots, size, m->subject);
        uint32_t in = slot->k;
        if (!slot->subject || in == k)
            continue;
        bool is_cur_dummy = t->c[k].msg == NONE, is_in_dummy = t->c[in].msg == NONE;
        if (is_cur_dummy && is_in_dummy) {
            /* both dummies: the current one's children join the table's */
            for (uint32_t q = t->child_start[k]; q < t->child_start[k + 1]; q++)
                t->c[t->children[q]].final = in;
            t->c[k].is_dropped = true;
        } else if (is_in_dummy ||
                   (!is_cur_dummy && m->is_reply && !t->msgs[t->c[in].msg].is_reply)) {
            t->c[k].final = in;
        } else {
            /* a new dummy holds both; it takes the table's place */
            uint32_t d = thread_new_container(t, NULL, 0, NONE);
            if (d == NONE)
                continue;
            t->c[k].final = d;
            t->c[in].final = d;
            slot->k = d;
        }
    }
    free(slots);
    return true;
}

/* Write the sorted forest: "(" root ")" per thread; a message's single child follows it
 * in the same list, several children each get a list of their own (RFC 5256 §4). */
static bool thread_write_forest(const struct threader *t, struct buf *out)
{
    /* frames: a container and the next child to write; is_nested: its children are in
     * "(...)" lists of their own */
    struct frame {
        uint32_t k, next;
        bool is_nested;
    };
    struct frame *stack = malloc((t->n_c ? t->n_c : 1) * sizeof *stack);
    if (!stack)
        return false;
    bool ok = true;
    for (size_t r = 0; r < t->n_roots && ok; r++) {
        size_t sp = 0;
        ok = buf_append_byte(out, '(');
        /* enter(k): write the number, then choose how the children follow */
        uint32_t k = t->roots[r];
        bool is_first_in_list = true;
        for (;;) {
            const struct container *c = &t->c[k];
            uint32_t n_kids = t->child_start[k + 1] - t->child_start[k];
            if (c->msg != NONE) {
                ok = ok && (is_first_in_list || buf_append_byte(out, ' ')) &&
                     buf_printf(out, "%u", t->msgs[c->msg].number);
                is_first_in_list = false;
            }
            if (n_kids == 1 && c->msg != NONE) {
                k = t->children[t->child_start[k]]; /* a chain continues inline */
                continue;
            }
            if (n_kids > 0) {
                if (c->msg != NONE)
                    ok = ok && buf_append_byte(out, ' ');
                stack[sp++] = (struct frame){k, t->child_start[k], true};
            }
            /* next: the next nested child of the innermost open frame */
            bool has_next = false;
            while (sp > 0 && ok) {
                struct frame *f = &stack[sp - 1];
                if (f->next > t->child_start[f->k]) /* close the previous child's list */
                    ok = buf_append_byte(out, ')');
                if (f->next < t->child_start[f->k + 1]) {
                    k = t->children[f->next++];
                    ok = ok && buf_append_byte(out, '(');
                    is_first_in_list = true;
                    has_next = true;
                    break;
                }
                sp--;
            }
            if (!has_next)
                break;
        }
        ok = ok && buf_append_byte(out, ')');
    }
    free(stack);
    return ok;
}

static bool thread_references(const struct imap_thread_msg *msgs, size_t n, bool is_refs,
                              struct buf *out)
{
    struct threader t = {.msgs = msgs};
    size_t n_refs = 0;
    for (size_t i = 0; i < n; i++)
        for (const char *p = msgs[i].references; p && *p; p++)
            n_refs += *p == '<';
    t.ref_budget = n_refs < IMAP_THREAD_MAX_IDS ? n_refs : IMAP_THREAD_MAX_IDS;
    /* room for every message, the referenced ids and the dummies (5) may add (one per
     * root at most) */
    t.cap_c = 2 * n + t.ref_budget + 1;
    t.c = malloc(t.cap_c * sizeof *t.c);
    t.table_size = 16;
    while (t.table_size < t.cap_c * 2)
        t.table_size *= 2;
    t.table = malloc(t.table_size * sizeof *t.table);
    bool ok = t.c && t.table;
    if (ok) {
        memset(t.table, 0xff, t.table_size * sizeof *t.table);
        thread_link(&t, n);
        ok = thread_prune(&t) && thread_children(&t, is_refs);
        if (ok && !is_refs)
            ok = thread_merge_subjects(&t) && thread_children(&t, false);
        ok = ok && thread_write_forest(&t, out);
    }
    free(t.c);
    free(t.table);
    free(t.child_start);
    free(t.children);
    free(t.roots);
    return ok;
}

bool imap_thread_write(enum imap_thread_algorithm alg, const struct imap_thread_msg *msgs,
                       size_t n, struct buf *out)
{
    if (n == 0)
        return true;
    if (alg == IMAP_THREAD_ORDEREDSUBJECT)
        return thread_orderedsubject(msgs, n, out);
    return thread_references(msgs, n, alg == IMAP_THREAD_REFS, out);
}
