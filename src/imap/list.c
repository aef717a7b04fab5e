/*
 * list.c - LIST and LSUB (RFC 3501 §6.3.8-9), with the extended LIST of RFC 5258
 * (selection options SUBSCRIBED, REMOTE, RECURSIVEMATCH; return options SUBSCRIBED,
 * CHILDREN; several patterns; \NonExistent, \Subscribed, CHILDINFO), RFC 6154 SPECIAL-USE
 * as a selection and return option, and RFC 5819 LIST-STATUS (RETURN (STATUS (...))).
 *
 * A LIST in the basic form ("LIST reference pattern") keeps its RFC 3501 replies, which
 * always carry the CHILDREN and SPECIAL-USE attributes. The extended form answers as
 * Dovecot does: only the attributes asked for, \NonExistent for a parent that is only a
 * name (Maildir++ "A" of "A/B").
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/conn.h"
#include "imap/args.h"
#include "imap/mailname.h"
#include "imap/session.h"
#include "store/mime.h"
#include "store/store.h"

/* RFC 3501 §6.3.8: '*' matches anything, '%' anything but the hierarchy separator.
 * Dynamic programming over (pattern, name) prefixes: O(|pattern| * |name|), no backtracking
 * blow-up whatever the wildcards. */
static bool imap_list_match(const char *pat, const char *name)
{
    size_t pl = strlen(pat), nl = strlen(name);
    if (pl > 1024 || nl > 1024)
        return false;
    bool prev[1025], cur[1025];
    /* prev[j]: pat[0..i) matches name[0..j) */
    prev[0] = true;
    for (size_t j = 1; j <= nl; j++)
        prev[j] = false;
    for (size_t i = 1; i <= pl; i++) {
        char pc = pat[i - 1];
        cur[0] = prev[0] && (pc == '*' || pc == '%');
        for (size_t j = 1; j <= nl; j++) {
            char nc = name[j - 1];
            if (pc == '*')
                cur[j] = prev[j] || cur[j - 1];
            else if (pc == '%')
                cur[j] = prev[j] || (cur[j - 1] && nc != '/');
            else
                cur[j] = prev[j - 1] && pc == nc;
        }
        memcpy(prev, cur, (nl + 1) * sizeof prev[0]);
    }
    return prev[nl];
}

struct imap_list_job {
    struct imap_job base;
    char *reference, *pattern; /* the basic LIST/LSUB */
    bool is_lsub;
    struct imap_list_ext *ext; /* the extended LIST (RFC 5258) */
};

static void imap_list_ext_free(struct imap_list_ext *x);

static void imap_list_cleanup(struct imap_job *j)
{
    struct imap_list_job *lj = IMAP_JOB(imap_list_job, j);
    free(lj->reference);
    free(lj->pattern);
    imap_list_ext_free(lj->ext);
}

/* Does name match the pattern? The name INBOX is case-insensitive (RFC 3501 §5.1): a
 * pattern that spells it ("inbox", "Inbox*") matches it, but "*x" does not. */
static bool imap_list_name_matches(const char *pattern, const char *name, bool is_inbox)
{
    if (imap_list_match(pattern, name))
        return true;
    if (!is_inbox || strncasecmp(pattern, "INBOX", 5) != 0)
        return false;
    char up[256];
    snprintf(up, sizeof up, "INBOX%s", pattern + 5);
    return imap_list_match(up, "INBOX");
}

/* RFC 9051 §5.1, RFC 6855 §3: a UTF-8 session matches its patterns against, and is
 * shown, the names in UTF-8. The list's names become their UTF-8 form; the store's own
 * names are returned (for LIST-STATUS), one per entry, or NULL when nothing changed
 * (a session without UTF-8) or out of memory (*is_ok_r false). */
static char **imap_list_to_utf8(const struct imap_job *j, struct store_mailbox_info *list,
                                size_t n, bool *is_ok_r)
{
    *is_ok_r = true;
    if (!j->ctx.is_utf8)
        return NULL;
    char **stored = calloc(n ? n : 1, sizeof *stored);
    if (!stored) {
        *is_ok_r = false;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char *shown = imap_mailname_export(list[i].name);
        if (!shown) {
            *is_ok_r = false;
            continue;
        }
        stored[i] = list[i].name;
        list[i].name = shown;
    }
    return stored;
}

/* Undo imap_list_to_utf8 (the store frees its own names). */
static void imap_list_from_utf8(struct store_mailbox_info *list, size_t n, char **stored)
{
    if (!stored)
        return;
    for (size_t i = 0; i < n; i++) {
        if (!stored[i])
            continue;
        free(list[i].name);
        list[i].name = stored[i];
    }
    free(stored);
}

static int imap_list_name_cmp(const void *a, const void *b)
{
    const struct store_mailbox_info *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Index of the list sorted by name, for finding parents by name (n log n). */
static const struct store_mailbox_info **imap_list_by_name(const struct store_mailbox_info *list,
                                                           size_t n)
{
    const struct store_mailbox_info **by_name = calloc(n ? n : 1, sizeof *by_name);
    if (!by_name)
        return NULL;
    for (size_t i = 0; i < n; i++)
        by_name[i] = &list[i];
    qsort(by_name, n, sizeof *by_name, imap_list_name_cmp);
    return by_name;
}

/* The entry named name (of length len), or NULL. */
static const struct store_mailbox_info *
imap_list_find(const struct store_mailbox_info **by_name, size_t n, const char *name)
{
    struct store_mailbox_info key = {.name = (char *)name};
    const struct store_mailbox_info *kp = &key;
    const struct store_mailbox_info **hit =
        bsearch(&kp, by_name, n, sizeof *by_name, imap_list_name_cmp);
    return hit ? *hit : NULL;
}

/* RFC 3501 §6.3.9: "if foo/bar is subscribed and foo is not, LSUB of % lists foo with
 * \Noselect". Marks every unsubscribed ancestor that matches the pattern of a subscribed
 * name that does not match it. NULL on out of memory (then no parents are listed). */
static bool *imap_lsub_parents(const struct store_mailbox_info *list, size_t n,
                               const char *pattern)
{
    bool *is_parent = calloc(n ? n : 1, sizeof *is_parent);
    const struct store_mailbox_info **by_name = imap_list_by_name(list, n);
    if (!is_parent || !by_name) {
        free(is_parent);
        free(by_name);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!list[i].subscribed || imap_list_match(pattern, list[i].name))
            continue;
        char name[1100];
        snprintf(name, sizeof name, "%s", list[i].name);
        for (char *slash = strrchr(name, '/'); slash; slash = strrchr(name, '/')) {
            *slash = '\0';
            const struct store_mailbox_info *hit = imap_list_find(by_name, n, name);
            if (hit && !hit->subscribed && imap_list_match(pattern, name))
                is_parent[hit - list] = true;
        }
    }
    free(by_name);
    return is_parent;
}

static void imap_list_work(struct imap_job *j)
{
    const struct imap_list_job *lj = IMAP_JOB(imap_list_job, j);
    bool lsub = lj->is_lsub;
    const char *cmd = lsub ? "LSUB" : "LIST";
    if (lj->pattern[0] == '\0') {
        /* RFC 3501 §6.3.8: an empty pattern asks for the delimiter */
        if (!lsub)
            buf_append_str(&j->out, "* LIST (\\Noselect) \"/\" \"\"\r\n");
        imap_job_ok(j, "List completed.");
        return;
    }
    struct buf pattern;
    buf_init(&pattern, 0);
    buf_append_str(&pattern, lj->reference);
    buf_append_str(&pattern, lj->pattern);
    struct store_mailbox_info *list = NULL;
    size_t n = 0;
    char *err = NULL;
    if (store_mailbox_list(j->ctx.user, &list, &n, &err) < 0) {
        buf_free(&pattern);
        imap_job_err(j, "%s", err);
        return;
    }
    bool is_ok;
    char **stored = imap_list_to_utf8(j, list, n, &is_ok);
    if (!is_ok) {
        imap_list_from_utf8(list, n, stored);
        store_mailbox_info_free(list, n);
        buf_free(&pattern);
        imap_job_err(j, "%s", strdup("out of memory"));
        return;
    }
    /* LSUB: names of unsubscribed parents to list as \Noselect (RFC 3501 §6.3.9) */
    bool *is_lsub_parent = lsub ? imap_lsub_parents(list, n, buf_cstr(&pattern)) : NULL;
    for (size_t i = 0; i < n; i++) {
        const struct store_mailbox_info *mi = &list[i];
        const char *name = mi->name;
        bool is_inbox = strcasecmp(name, "INBOX") == 0;
        bool match = imap_list_name_matches(buf_cstr(&pattern), is_inbox ? "INBOX" : name,
                                            is_inbox);
        bool is_parent = is_lsub_parent && is_lsub_parent[i];
        if (!match || (lsub && !mi->subscribed && !is_parent) ||
            (!lsub && mi->is_nonexistent))
            continue;
        buf_printf(&j->out, "* %s (", cmd);
        /* RFC 3348 CHILDREN and RFC 6154 SPECIAL-USE attributes */
        buf_append_str(&j->out, mi->has_children ? "\\HasChildren" : "\\HasNoChildren");
        /* LSUB: \Noselect marks a parent listed only for its subscribed children */
        if (lsub ? is_parent : mi->noselect)
            buf_append_str(&j->out, " \\Noselect");
        if (!lsub && mi->special_use)
            buf_printf(&j->out, " %s", mi->special_use);
        buf_append_str(&j->out, ") \"/\" ");
        imap_write_mailbox_shown(&j->out, is_inbox ? "INBOX" : name, j->ctx.is_utf8);
        buf_append_str(&j->out, "\r\n");
    }
    free(is_lsub_parent);
    imap_list_from_utf8(list, n, stored);
    store_mailbox_info_free(list, n);
    buf_free(&pattern);
    imap_job_ok(j, lsub ? "Lsub completed." : "List completed.");
}

static void imap_list_submit(struct imap_session *s, const char *tag, struct imap_arg *args,
                             size_t n, bool lsub)
{
    if (n != 2 || !imap_arg_is_string(&args[0]) || !imap_arg_is_string(&args[1])) {
        imap_reply(s, tag, "BAD Usage: %s reference pattern", lsub ? "LSUB" : "LIST");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_list_job), imap_list_work, NULL,
                                      imap_list_cleanup);
    if (!j)
        return;
    struct imap_list_job *lj = IMAP_JOB(imap_list_job, j);
    lj->is_lsub = lsub;
    if (!(lj->reference = strdup(args[0].str)) || !(lj->pattern = strdup(args[1].str))) {
        imap_job_discard(s, j);
        return;
    }
    j->do_sync = true;
    imap_job_submit(s, j);
}

/* ---- extended LIST (RFC 5258, RFC 5819, RFC 6154) ----------------------------------- */

struct imap_list_ext {
    unsigned select, ret, status_items;
    bool is_pattern_list;
    char *patterns[IMAP_LIST_MAX_PATTERNS]; /* reference + pattern, owned */
    size_t n_patterns;
};

static void imap_list_ext_free(struct imap_list_ext *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n_patterns; i++)
        free(x->patterns[i]);
    free(x);
}

/* Does a mailbox meet the selection criteria? (none: every name does) */
static bool imap_list_meets(const struct store_mailbox_info *mi, unsigned select)
{
    if ((select & IMAP_LIST_SEL_SUBSCRIBED) && !mi->subscribed)
        return false;
    if ((select & IMAP_LIST_SEL_SPECIAL_USE) && !mi->special_use)
        return false;
    return true;
}

/* Does the name match any of the (non-empty) patterns of an extended LIST? */
static bool imap_list_ext_matches(const struct imap_list_ext *x, const char *name, bool is_inbox)
{
    /* RFC 5258 §3: a mailbox matching several patterns is listed once; empty patterns in
     * a list are ignored */
    for (size_t k = 0; k < x->n_patterns; k++)
        if (x->patterns[k][0] != '\0' && imap_list_name_matches(x->patterns[k], name, is_inbox))
            return true;
    return false;
}

/* RFC 5258 §3.5 RECURSIVEMATCH: mark (in has_child_r) every mailbox with a descendant
 * that meets the selection criteria but does not itself match the patterns (§4: CHILDINFO
 * tells of children the reply does not list). Ancestors are found by name: n log n. */
static bool imap_list_mark_parents(const struct store_mailbox_info *list, size_t n,
                                   const struct imap_list_ext *x, bool *has_child_r)
{
    const struct store_mailbox_info **by_name = imap_list_by_name(list, n);
    if (!by_name)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool is_inbox = strcasecmp(list[i].name, "INBOX") == 0;
        if (!imap_list_meets(&list[i], x->select) ||
            imap_list_ext_matches(x, is_inbox ? "INBOX" : list[i].name, is_inbox))
            continue;
        char name[1100];
        snprintf(name, sizeof name, "%s", list[i].name);
        /* names are at most a few hundred bytes: the walk up is bounded by that */
        for (char *slash = strrchr(name, '/'); slash; slash = strrchr(name, '/')) {
            *slash = '\0';
            const struct store_mailbox_info *hit = imap_list_find(by_name, n, name);
            if (hit)
                has_child_r[hit - list] = true;
        }
    }
    free(by_name);
    return true;
}

/* One "* LIST" line (and "* STATUS" after it for LIST-STATUS) of an extended LIST. */
static void imap_list_ext_write(struct imap_job *j, const struct imap_list_ext *x,
                                const struct store_mailbox_info *mi, const char *name,
                                const char *stored, bool has_child)
{
    bool is_nonexistent = mi->noselect; /* a Maildir++ parent that is only a name */
    buf_append_str(&j->out, "* LIST (");
    const char *sp = "";
    if (is_nonexistent) {
        /* RFC 5258 §3: \NonExistent implies \Noselect */
        buf_append_str(&j->out, "\\NonExistent");
        sp = " ";
    }
    if ((x->ret & IMAP_LIST_RET_SUBSCRIBED) && mi->subscribed) {
        buf_printf(&j->out, "%s\\Subscribed", sp);
        sp = " ";
    }
    if (x->ret & IMAP_LIST_RET_CHILDREN) {
        buf_printf(&j->out, "%s%s", sp, mi->has_children ? "\\HasChildren" : "\\HasNoChildren");
        sp = " ";
    }
    if ((x->ret & IMAP_LIST_RET_SPECIAL_USE) && mi->special_use)
        buf_printf(&j->out, "%s%s", sp, mi->special_use);
    buf_append_str(&j->out, ") \"/\" ");
    imap_write_mailbox_shown(&j->out, name, j->ctx.is_utf8);
    /* RFC 5258 §3.5: a child meets the selection criteria (SUBSCRIBED) */
    if (has_child)
        buf_append_str(&j->out, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
    buf_append_str(&j->out, "\r\n");
    /* RFC 5819 §2: STATUS after the LIST of each selectable mailbox; one that cannot be
     * read is left without (§2: the server MAY omit it) */
    if ((x->ret & IMAP_LIST_RET_STATUS) && !is_nonexistent) {
        struct store_status st;
        char *err = NULL;
        if (store_mailbox_status(j->ctx.user, stored, &st, &err) == 0)
            imap_status_write(&j->out, stored, x->status_items, &st, j->ctx.max_append,
                              j->ctx.is_utf8);
        free(err);
    }
}

static void imap_list_ext_work(struct imap_job *j)
{
    const struct imap_list_ext *x = IMAP_JOB(imap_list_job, j)->ext;
    if (!x->is_pattern_list && x->n_patterns == 1 && x->patterns[0][0] == '\0') {
        /* RFC 3501 §6.3.8: an empty pattern asks for the delimiter */
        buf_append_str(&j->out, "* LIST (\\Noselect) \"/\" \"\"\r\n");
        imap_job_ok(j, "List completed.");
        return;
    }
    struct store_mailbox_info *list = NULL;
    size_t n = 0;
    char *err = NULL;
    if (store_mailbox_list(j->ctx.user, &list, &n, &err) < 0) {
        imap_job_err(j, "%s", err);
        return;
    }
    bool is_ok;
    char **stored = imap_list_to_utf8(j, list, n, &is_ok);
    bool *has_child = is_ok ? calloc(n ? n : 1, sizeof *has_child) : NULL;
    /* CHILDINFO is defined for SUBSCRIBED (RFC 5258 §3.5); with SPECIAL-USE alone a
     * RECURSIVEMATCH adds nothing, as in Dovecot */
    bool is_recursive =
        (x->select & IMAP_LIST_SEL_RECURSIVEMATCH) && (x->select & IMAP_LIST_SEL_SUBSCRIBED);
    if (!has_child || (is_recursive && !imap_list_mark_parents(list, n, x, has_child))) {
        free(has_child);
        imap_list_from_utf8(list, n, stored);
        store_mailbox_info_free(list, n);
        imap_job_err(j, "%s", strdup("out of memory"));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_mailbox_info *mi = &list[i];
        bool is_inbox = strcasecmp(mi->name, "INBOX") == 0;
        const char *name = is_inbox ? "INBOX" : mi->name;
        if (!imap_list_ext_matches(x, name, is_inbox))
            continue;
        bool meets = imap_list_meets(mi, x->select);
        /* a subscribed name without a mailbox is listed only by LIST (SUBSCRIBED)
         * (RFC 5258 §3.1, with \NonExistent) */
        if (mi->is_nonexistent && !(x->select & IMAP_LIST_SEL_SUBSCRIBED))
            continue;
        bool child = is_recursive && has_child[i];
        if (!meets && !child)
            continue;
        imap_list_ext_write(j, x, mi, name, stored && !is_inbox ? stored[i] : name, child);
    }
    free(has_child);
    imap_list_from_utf8(list, n, stored);
    store_mailbox_info_free(list, n);
    imap_job_ok(j, "List completed.");
}

static void imap_list_ext_submit(struct imap_session *s, const char *tag,
                                 const struct imap_list_request *r)
{
    struct imap_list_ext *x = calloc(1, sizeof *x);
    if (!x) {
        imap_reply(s, tag, "NO Out of memory.");
        return;
    }
    x->select = r->select;
    x->ret = r->ret;
    x->status_items = r->status_items;
    x->is_pattern_list = r->is_pattern_list;
    for (size_t i = 0; i < r->n_patterns; i++) {
        /* the reference is prefixed to each pattern, as in the basic LIST */
        size_t len = strlen(r->reference) + strlen(r->patterns[i]) + 1;
        char *p = malloc(len);
        if (!p) {
            imap_list_ext_free(x);
            imap_reply(s, tag, "NO Out of memory.");
            return;
        }
        snprintf(p, len, "%s%s", r->patterns[i][0] ? r->reference : "", r->patterns[i]);
        x->patterns[x->n_patterns++] = p;
    }
    if (r->status_items & IMAP_ST_HIGHESTMODSEQ)
        imap_condstore_enable(s); /* RFC 7162 §3.1.10, as STATUS does */
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_list_job), imap_list_ext_work,
                                      NULL, imap_list_cleanup);
    if (!j) {
        imap_list_ext_free(x);
        return;
    }
    IMAP_JOB(imap_list_job, j)->ext = x;
    j->do_sync = true;
    imap_job_submit(s, j);
}

void imap_cmd_list(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                   bool is_uid)
{
    struct imap_list_request r;
    const char *why = NULL;
    bool ok = imap_list_request_parse(args, n, &r, &why);
    if (!r.is_extended) {
        /* the basic form, answered exactly as before LIST-EXTENDED */
        imap_list_submit(s, tag, args, n, false);
        return;
    }
    if (!ok) {
        imap_reply(s, tag, "BAD Error in IMAP command LIST: %s.", why);
        return;
    }
    imap_list_ext_submit(s, tag, &r);
}

void imap_cmd_lsub(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                   bool is_uid)
{
    imap_list_submit(s, tag, args, n, true);
}
