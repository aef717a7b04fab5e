/*
 * notify.c - NOTIFY (RFC 5465): the command's grammar (notify.h, pure) and the session's
 * side: which changes it listens for, the queue of those that arrived, and the jobs that
 * turn them into unsolicited responses between commands (and during IDLE, §4).
 *
 * How a change reaches a session: the store publishes its messages' changes, and the
 * commands that change mailboxes (CREATE, DELETE, RENAME, (UN)SUBSCRIBE, SETMETADATA)
 * publish theirs (imap_notify_publish); both travel through the master to the other mail
 * workers (store/notify.c, cli/serve.c), so a session in worker B hears of a change made
 * in worker A. imap_notify_event (loop) keeps what the session's NOTIFY SET asked for;
 * imap_notify_kick starts a job when the session is between commands. The job (pool
 * thread) sees only plain copies: the watch list, the events, the last STATUS sent of
 * each mailbox it reports on; it writes
 *   - the selected mailbox (SELECTED): the sync's EXISTS/EXPUNGE (VANISHED)/FETCH, then
 *     (the next kick) an unsolicited UID FETCH of new messages with MessageNew's items;
 *   - another mailbox's messages: STATUS with the items of the events that happened
 *     (§5.1-5.3), found by comparing with the STATUS last sent (or all of them);
 *   - MailboxName, SubscriptionChange: LIST with the attributes LIST would give, \NonExistent
 *     for a deleted name, OLDNAME for a renamed one (§5.4, §5.5);
 *   - MailboxMetadataChange, ServerMetadataChange: METADATA with the entry names (§5.6-5.7).
 * More than IMAP_NOTIFY_MAX_PENDING events waiting: "* OK [NOTIFICATIONOVERFLOW]" and the
 * session behaves as after NOTIFY NONE (§5.8).
 *
 * Not done: AnnotationChange (no per-message annotations here: BADEVENT), \NoAccess (one
 * user's own mailboxes only: every mailbox is accessible). The SHOULD of §5.2 (no FETCH
 * of a message this connection appended) is not kept: the FETCH follows any EXISTS.
 */
#include "imap/notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/conn.h"
#include "imap/args.h"
#include "imap/session.h"
#include "store/store.h"

/* ---- the command's grammar (RFC 5465 §8) ----------------------------------------------- */

static bool notify_atom_is(const struct imap_arg *a, const char *name)
{
    return a && a->type == IMAP_ARG_ATOM && strcasecmp(a->str, name) == 0;
}

/* events = "(" event *(SP event) ")" / "NONE" */
static enum imap_notify_parse_result
notify_parse_events(const struct imap_arg *a, struct imap_notify_group *g, const char **error_r)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"MessageNew", IMAP_NOTIFY_MESSAGE_NEW},
        {"MessageExpunge", IMAP_NOTIFY_MESSAGE_EXPUNGE},
        {"FlagChange", IMAP_NOTIFY_FLAG_CHANGE},
        {"MailboxName", IMAP_NOTIFY_MAILBOX_NAME},
        {"SubscriptionChange", IMAP_NOTIFY_SUBSCRIPTION_CHANGE},
        {"MailboxMetadataChange", IMAP_NOTIFY_MAILBOX_METADATA_CHANGE},
        {"ServerMetadataChange", IMAP_NOTIFY_SERVER_METADATA_CHANGE},
    };
    if (notify_atom_is(a, "NONE"))
        return IMAP_NOTIFY_PARSE_OK;
    if (a->type != IMAP_ARG_LIST || a->n == 0) {
        *error_r = "Events must be a list or NONE.";
        return IMAP_NOTIFY_PARSE_BAD;
    }
    bool is_badevent = false;
    for (size_t i = 0; i < a->n; i++) {
        const struct imap_arg *e = &a->list[i];
        if (e->type != IMAP_ARG_ATOM) {
            *error_r = "An event is an atom.";
            return IMAP_NOTIFY_PARSE_BAD;
        }
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof names / sizeof names[0] && !bit; k++)
            if (strcasecmp(e->str, names[k].name) == 0)
                bit = names[k].bit;
        if (!bit) {
            is_badevent = true; /* AnnotationChange and any event-ext */
            continue;
        }
        g->events |= bit;
        /* MessageNew may carry the FETCH items of its new messages */
        if (bit == IMAP_NOTIFY_MESSAGE_NEW && i + 1 < a->n &&
            a->list[i + 1].type == IMAP_ARG_LIST) {
            if (g->fetch_att) {
                *error_r = "MessageNew given twice.";
                return IMAP_NOTIFY_PARSE_BAD;
            }
            g->fetch_att = &a->list[++i];
        }
    }
    if (is_badevent)
        return IMAP_NOTIFY_PARSE_BADEVENT;
    unsigned msg = g->events & IMAP_NOTIFY_MESSAGE_EVENTS;
    /* §5: for the selected mailbox MessageNew and MessageExpunge go together (its EXISTS
     * and EXPUNGE keep the numbering) and FlagChange needs both; for other mailboxes,
     * reported by STATUS, any of them alone is fine (the RFC's own example watches a subtree for
     * MessageNew; Dovecot and imaptest agree) */
    bool is_selected = g->filter == IMAP_NOTIFY_SELECTED || g->filter == IMAP_NOTIFY_SELECTED_DELAYED;
    if (msg && is_selected &&
        (!(msg & IMAP_NOTIFY_MESSAGE_NEW) || !(msg & IMAP_NOTIFY_MESSAGE_EXPUNGE))) {
        *error_r = "MessageNew, MessageExpunge (and FlagChange) go together.";
        return IMAP_NOTIFY_PARSE_BAD;
    }
    return IMAP_NOTIFY_PARSE_OK;
}

/* one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")" */
static bool notify_parse_names(const struct imap_arg *a, struct imap_notify_group *g)
{
    const struct imap_arg *items = a;
    size_t n = 1;
    if (a->type == IMAP_ARG_LIST) {
        items = a->list;
        n = a->n;
    }
    if (n == 0 || n > IMAP_NOTIFY_MAX_NAMES)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!imap_arg_is_string(&items[i]) || items[i].is_external)
            return false;
        g->names[g->n_names++] = &items[i];
    }
    return true;
}

enum imap_notify_parse_result imap_notify_parse(const struct imap_arg *args, size_t n,
                                                struct imap_notify_request *r, const char **error_r)
{
    static const struct {
        const char *name;
        enum imap_notify_filter filter;
    } filters[] = {
        {"SELECTED", IMAP_NOTIFY_SELECTED},     {"SELECTED-DELAYED", IMAP_NOTIFY_SELECTED_DELAYED},
        {"INBOXES", IMAP_NOTIFY_INBOXES},       {"PERSONAL", IMAP_NOTIFY_PERSONAL},
        {"SUBSCRIBED", IMAP_NOTIFY_SUBSCRIBED}, {"SUBTREE", IMAP_NOTIFY_SUBTREE},
        {"MAILBOXES", IMAP_NOTIFY_MAILBOXES},
    };
    memset(r, 0, sizeof *r);
    *error_r = "Usage: NOTIFY NONE | NOTIFY SET [STATUS] (filter events) ...";
    if (n == 1 && notify_atom_is(&args[0], "NONE")) {
        r->is_none = true;
        return IMAP_NOTIFY_PARSE_OK;
    }
    if (n < 2 || !notify_atom_is(&args[0], "SET"))
        return IMAP_NOTIFY_PARSE_BAD;
    size_t i = 1;
    if (notify_atom_is(&args[i], "STATUS")) {
        r->has_status = true;
        i++;
    }
    if (i >= n)
        return IMAP_NOTIFY_PARSE_BAD;
    bool has_selected = false, is_badevent = false;
    for (; i < n; i++) {
        const struct imap_arg *a = &args[i];
        if (a->type != IMAP_ARG_LIST || a->n < 2 || a->n > 3) {
            *error_r = "An event group is (filter events).";
            return IMAP_NOTIFY_PARSE_BAD;
        }
        if (r->n_groups >= IMAP_NOTIFY_MAX_GROUPS) {
            *error_r = "Too many event groups.";
            return IMAP_NOTIFY_PARSE_BAD;
        }
        struct imap_notify_group *g = &r->groups[r->n_groups++];
        size_t k = 0;
        while (k < sizeof filters / sizeof filters[0] &&
               !notify_atom_is(&a->list[0], filters[k].name))
            k++;
        if (k == sizeof filters / sizeof filters[0]) {
            *error_r = "Unknown mailbox filter.";
            return IMAP_NOTIFY_PARSE_BAD;
        }
        g->filter = filters[k].filter;
        bool has_names = g->filter == IMAP_NOTIFY_SUBTREE || g->filter == IMAP_NOTIFY_MAILBOXES;
        if (a->n != (has_names ? 3u : 2u) || (has_names && !notify_parse_names(&a->list[1], g))) {
            *error_r = "SUBTREE and MAILBOXES take mailbox names; other filters none.";
            return IMAP_NOTIFY_PARSE_BAD;
        }
        enum imap_notify_parse_result pr = notify_parse_events(&a->list[a->n - 1], g, error_r);
        if (pr == IMAP_NOTIFY_PARSE_BAD)
            return pr;
        is_badevent |= pr == IMAP_NOTIFY_PARSE_BADEVENT;
        bool is_selected =
            g->filter == IMAP_NOTIFY_SELECTED || g->filter == IMAP_NOTIFY_SELECTED_DELAYED;
        /* §6.1: one selected filter, and only message events for it; §8: the fetch-att
         * list only there */
        if (is_selected && (has_selected || (g->events & ~IMAP_NOTIFY_MESSAGE_EVENTS))) {
            *error_r = "One SELECTED filter, with message events only.";
            return IMAP_NOTIFY_PARSE_BAD;
        }
        if (!is_selected && g->fetch_att) {
            *error_r = "FETCH items only for the selected mailbox.";
            return IMAP_NOTIFY_PARSE_BAD;
        }
        has_selected |= is_selected;
    }
    if (is_badevent) {
        *error_r = NULL;
        return IMAP_NOTIFY_PARSE_BADEVENT;
    }
    *error_r = NULL;
    return IMAP_NOTIFY_PARSE_OK;
}

/* ---- the session's state ---------------------------------------------------------------- */

#define IMAP_NOTIFY_MAX_PENDING 64   /* events waiting for a job: more is an overflow (§5.8) */
#define IMAP_NOTIFY_MAX_CACHE   1000 /* mailboxes whose last STATUS is remembered */

/* One event group for other mailboxes, as plain data (copied into each job). */
struct imap_notify_watch {
    enum imap_notify_filter filter;
    char **names; /* SUBTREE / MAILBOXES, the store's names */
    size_t n_names;
    unsigned events;
};

/* The STATUS of a mailbox as last told (or first seen). */
struct imap_notify_cached {
    char *name;
    struct store_status st;
};

struct imap_notify_pending {
    enum store_change kind;
    char *mailbox, *detail;
};

struct imap_notify {
    bool has_selected, is_delayed;
    unsigned selected_events;
    struct imap_arg fetch_att; /* a copy of MessageNew's FETCH items (type LIST), n 0: none */
    struct imap_notify_watch *watches;
    size_t n_watches;
    struct imap_notify_cached *cache;
    size_t n_cache;
    struct imap_notify_pending pending[IMAP_NOTIFY_MAX_PENDING];
    size_t n_pending;
    /* the selected mailbox's messages the client was told of (MessageNew's FETCH) */
    uint32_t seen_uidvalidity, seen_uid;
};

static void notify_arg_free(struct imap_arg *a)
{
    free(a->str);
    for (size_t i = 0; i < a->n; i++)
        notify_arg_free(&a->list[i]);
    free(a->list);
    memset(a, 0, sizeof *a);
}

/* A deep copy of an argument (the parser's tree goes with the command). */
static bool notify_arg_copy(struct imap_arg *dst, const struct imap_arg *src)
{
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    dst->len = src->len;
    if (src->str) {
        if (!(dst->str = malloc(src->len + 1)))
            return false;
        memcpy(dst->str, src->str, src->len);
        dst->str[src->len] = '\0';
    }
    if (src->n) {
        if (!(dst->list = calloc(src->n, sizeof *dst->list)))
            return false;
        dst->cap = src->n;
        for (size_t i = 0; i < src->n; i++) {
            dst->n = i + 1;
            if (!notify_arg_copy(&dst->list[i], &src->list[i]))
                return false;
        }
    }
    return true;
}

static void notify_watches_free(struct imap_notify_watch *w, size_t n)
{
    for (size_t i = 0; w && i < n; i++) {
        for (size_t k = 0; k < w[i].n_names; k++)
            free(w[i].names[k]);
        free(w[i].names);
    }
    free(w);
}

static struct imap_notify_watch *notify_watches_copy(const struct imap_notify_watch *w, size_t n)
{
    struct imap_notify_watch *c = calloc(n ? n : 1, sizeof *c);
    for (size_t i = 0; c && i < n; i++) {
        c[i] = w[i];
        c[i].names = NULL;
        c[i].n_names = 0;
        if (w[i].n_names && !(c[i].names = calloc(w[i].n_names, sizeof *c[i].names))) {
            notify_watches_free(c, i + 1);
            return NULL;
        }
        for (size_t k = 0; k < w[i].n_names; k++) {
            if (!(c[i].names[k] = strdup(w[i].names[k]))) {
                c[i].n_names = k;
                notify_watches_free(c, i + 1);
                return NULL;
            }
            c[i].n_names = k + 1;
        }
    }
    return c;
}

static void notify_cache_free(struct imap_notify_cached *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++)
        free(c[i].name);
    free(c);
}

static void notify_pending_clear(struct imap_notify *n)
{
    for (size_t i = 0; i < n->n_pending; i++) {
        free(n->pending[i].mailbox);
        free(n->pending[i].detail);
    }
    n->n_pending = 0;
}

void imap_notify_free(struct imap_notify *n)
{
    if (!n)
        return;
    notify_arg_free(&n->fetch_att);
    notify_watches_free(n->watches, n->n_watches);
    notify_cache_free(n->cache, n->n_cache);
    notify_pending_clear(n);
    free(n);
}

/* ---- which mailboxes a watch covers (RFC 5465 §6) ---------------------------------------- */

static bool notify_name_eq(const char *a, const char *b)
{
    /* RFC 3501 §5.1: INBOX is case-insensitive */
    return strcmp(a, b) == 0 || (strcasecmp(a, "INBOX") == 0 && strcasecmp(b, "INBOX") == 0);
}

/* The entry of list named name, or NULL. */
static const struct store_mailbox_info *notify_list_find(const struct store_mailbox_info *list,
                                                         size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (notify_name_eq(list[i].name, name))
            return &list[i];
    return NULL;
}

/* Does w cover the mailbox name? list: the user's mailboxes (SUBSCRIBED), may be NULL. */
static bool notify_watch_covers(const struct imap_notify_watch *w, const char *name,
                                const struct store_mailbox_info *list, size_t n_list)
{
    switch (w->filter) {
    case IMAP_NOTIFY_INBOXES: /* §6.3: "personal" when the set cannot easily be computed */
    case IMAP_NOTIFY_PERSONAL:
        return true;
    case IMAP_NOTIFY_SUBSCRIBED: {
        const struct store_mailbox_info *mi = notify_list_find(list, n_list, name);
        return mi && mi->subscribed;
    }
    case IMAP_NOTIFY_SUBTREE:
        for (size_t k = 0; k < w->n_names; k++) {
            size_t len = strlen(w->names[k]);
            if (notify_name_eq(w->names[k], name) ||
                (strncmp(w->names[k], name, len) == 0 && name[len] == '/'))
                return true;
        }
        return false;
    case IMAP_NOTIFY_MAILBOXES: /* §6.6: no wildcards */
        for (size_t k = 0; k < w->n_names; k++)
            if (notify_name_eq(w->names[k], name))
                return true;
        return false;
    default:
        return false;
    }
}

/* The events of every watch covering name, among mask. */
static unsigned notify_events_for(const struct imap_notify_watch *w, size_t n_w, const char *name,
                                  unsigned mask, const struct store_mailbox_info *list,
                                  size_t n_list)
{
    unsigned ev = 0;
    for (size_t i = 0; i < n_w; i++)
        if ((w[i].events & mask) && notify_watch_covers(&w[i], name, list, n_list))
            ev |= w[i].events & mask;
    return ev;
}

static bool notify_watches_need_list(const struct imap_notify_watch *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (w[i].filter == IMAP_NOTIFY_SUBSCRIBED)
            return true;
    return false;
}

/* ---- the job ------------------------------------------------------------------------------ */

struct imap_notify_job {
    struct imap_job base;
    bool is_set;               /* NOTIFY SET: statuses of the watched mailboxes, the tagged OK */
    bool has_status;           /* NOTIFY SET STATUS: and tell them */
    struct imap_notify *state; /* NOTIFY SET: the new state, installed by finish */
    struct imap_notify_watch *watches; /* a copy (events job) */
    size_t n_watches;
    struct imap_notify_pending *events; /* moved from the session's queue */
    size_t n_events;
    char *selected; /* the selected mailbox's name, NULL none */
    /* request: the cached STATUS of the events' mailboxes; result: the new ones */
    struct imap_notify_cached *cache;
    size_t n_cache, cap_cache;
    /* the user's mailboxes, read once when needed (work) */
    struct store_mailbox_info *list;
    size_t n_list;
    bool has_list;
};

static void notify_job_cleanup(struct imap_job *j)
{
    struct imap_notify_job *nj = IMAP_JOB(imap_notify_job, j);
    imap_notify_free(nj->state);
    notify_watches_free(nj->watches, nj->n_watches);
    for (size_t i = 0; i < nj->n_events; i++) {
        free(nj->events[i].mailbox);
        free(nj->events[i].detail);
    }
    free(nj->events);
    free(nj->selected);
    notify_cache_free(nj->cache, nj->n_cache);
    if (nj->has_list)
        store_mailbox_info_free(nj->list, nj->n_list);
}

/* Work: the user's mailboxes (empty when they cannot be read). */
static void notify_job_list(struct imap_notify_job *nj, struct imap_job *j)
{
    if (nj->has_list)
        return;
    char *err = NULL;
    nj->has_list = true;
    if (store_mailbox_list(j->ctx.user, &nj->list, &nj->n_list, &err) < 0) {
        nj->list = NULL;
        nj->n_list = 0;
    }
    free(err);
}

static struct imap_notify_cached *notify_cache_find(struct imap_notify_cached *c, size_t n,
                                                    const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(c[i].name, name) == 0)
            return &c[i];
    return NULL;
}

/* Work: remember st as the STATUS of name in the job's result. */
static void notify_job_cache_put(struct imap_notify_job *nj, const char *name,
                                 const struct store_status *st)
{
    struct imap_notify_cached *c = notify_cache_find(nj->cache, nj->n_cache, name);
    if (c) {
        c->st = *st;
        return;
    }
    if (nj->n_cache >= IMAP_NOTIFY_MAX_CACHE)
        return;
    if (nj->n_cache == nj->cap_cache) {
        size_t cap = nj->cap_cache ? nj->cap_cache * 2 : 8;
        struct imap_notify_cached *grown = realloc(nj->cache, cap * sizeof *grown);
        if (!grown)
            return;
        nj->cache = grown;
        nj->cap_cache = cap;
    }
    char *dup = strdup(name);
    if (!dup)
        return;
    nj->cache[nj->n_cache++] = (struct imap_notify_cached){.name = dup, .st = *st};
}

/* STATUS items for the message events ev of a mailbox told for the first time (§3.1).
 * A watched FlagChange gets UIDVALIDITY and HIGHESTMODSEQ there even before CONDSTORE is
 * enabled (as Dovecot answers): UNSEEN covers \Seen alone, and the first STATUS is the
 * client's base for telling later that a \Flagged or keyword changed. */
static unsigned notify_status_items(unsigned ev, bool is_condstore)
{
    unsigned items = 0;
    if (ev & IMAP_NOTIFY_MESSAGE_NEW)
        items |= IMAP_ST_MESSAGES | IMAP_ST_UIDNEXT | IMAP_ST_UIDVALIDITY;
    if (ev & IMAP_NOTIFY_MESSAGE_EXPUNGE)
        items |= IMAP_ST_MESSAGES;
    if (ev & IMAP_NOTIFY_FLAG_CHANGE)
        items |= IMAP_ST_UNSEEN | IMAP_ST_UIDVALIDITY | IMAP_ST_HIGHESTMODSEQ;
    if (is_condstore)
        items |= IMAP_ST_HIGHESTMODSEQ;
    return items;
}

/* Work: the STATUS of a mailbox whose messages changed, with the items of what happened
 * since it was last told (§5.1-5.3); nothing when none of it was asked for. */
static void notify_job_messages(struct imap_notify_job *nj, struct imap_job *j, const char *name)
{
    if (nj->selected && notify_name_eq(nj->selected, name))
        return; /* the selected mailbox: SELECTED's business (§3.1) */
    if (notify_watches_need_list(nj->watches, nj->n_watches))
        notify_job_list(nj, j);
    unsigned ev = notify_events_for(nj->watches, nj->n_watches, name, IMAP_NOTIFY_MESSAGE_EVENTS,
                                    nj->list, nj->n_list);
    if (!ev)
        return;
    struct store_status st;
    char *err = NULL;
    if (store_mailbox_status(j->ctx.user, name, &st, &err) < 0) {
        free(err);
        return; /* gone meanwhile: its MailboxName event tells */
    }
    bool cs = j->ctx.is_condstore;
    const struct imap_notify_cached *prev = notify_cache_find(nj->cache, nj->n_cache, name);
    unsigned items = 0;
    if (!prev || prev->st.uidvalidity != st.uidvalidity) {
        /* unknown before (or a new UIDVALIDITY, §5.1): everything the events need */
        items = notify_status_items(ev, cs) | (prev ? IMAP_ST_UIDVALIDITY : 0);
    } else {
        uint32_t added = st.uidnext - prev->st.uidnext;
        bool is_new = st.uidnext != prev->st.uidnext;
        bool is_expunged = (uint64_t)prev->st.messages + added > st.messages;
        bool is_flagged = st.unseen != prev->st.unseen ||
                          (st.highestmodseq != prev->st.highestmodseq && !is_new && !is_expunged);
        if (is_new && (ev & IMAP_NOTIFY_MESSAGE_NEW))
            items |= IMAP_ST_MESSAGES | IMAP_ST_UIDNEXT;
        if (is_expunged && (ev & IMAP_NOTIFY_MESSAGE_EXPUNGE))
            items |= IMAP_ST_MESSAGES;
        if (is_flagged && (ev & IMAP_NOTIFY_FLAG_CHANGE))
            items |= IMAP_ST_UNSEEN | (cs ? IMAP_ST_UIDVALIDITY : 0);
        if (items && cs)
            items |= IMAP_ST_HIGHESTMODSEQ;
    }
    notify_job_cache_put(nj, name, &st);
    if (items)
        imap_status_write(&j->out, name, items, &st, j->ctx.max_append, j->ctx.is_utf8);
}

/* Work: "* LIST (attributes) "/" name [("OLDNAME" (old))]" as LIST would say it now. */
static void notify_job_write_list(struct imap_notify_job *nj, struct imap_job *j, const char *name,
                                  const char *old_name)
{
    notify_job_list(nj, j);
    const struct store_mailbox_info *mi = notify_list_find(nj->list, nj->n_list, name);
    buf_append_str(&j->out, "* LIST (");
    if (!mi || mi->is_nonexistent) {
        /* §5.4: a name that is no mailbox (any more) */
        buf_append_str(&j->out, "\\NonExistent");
        if (mi && mi->subscribed)
            buf_append_str(&j->out, " \\Subscribed");
    } else {
        buf_append_str(&j->out, mi->has_children ? "\\HasChildren" : "\\HasNoChildren");
        if (mi->noselect)
            buf_append_str(&j->out, " \\Noselect");
        if (mi->subscribed)
            buf_append_str(&j->out, " \\Subscribed");
        if (mi->special_use)
            buf_printf(&j->out, " %s", mi->special_use);
    }
    buf_append_str(&j->out, ") \"/\" ");
    imap_write_mailbox(&j->out, name, j->ctx.is_utf8);
    if (old_name) { /* RFC 5465 §5.4, RFC 5258 OLDNAME */
        buf_append_str(&j->out, " (\"OLDNAME\" (");
        imap_write_mailbox(&j->out, old_name, j->ctx.is_utf8);
        buf_append_str(&j->out, "))");
    }
    buf_append_str(&j->out, "\r\n");
}

/* Work: a created or deleted mailbox and its direct parent are affected (§5.4). */
static void notify_job_name_and_parent(struct imap_notify_job *nj, struct imap_job *j,
                                       const char *name)
{
    notify_job_write_list(nj, j, name, NULL);
    const char *slash = strrchr(name, '/');
    if (!slash || slash == name)
        return;
    char *parent = strndup(name, (size_t)(slash - name));
    if (parent && notify_events_for(nj->watches, nj->n_watches, parent, IMAP_NOTIFY_MAILBOX_NAME,
                                    nj->list, nj->n_list))
        notify_job_write_list(nj, j, parent, NULL);
    free(parent);
}

/* Work: one queued event. */
static void notify_job_event(struct imap_notify_job *nj, struct imap_job *j,
                             const struct imap_notify_pending *e)
{
    const struct imap_notify_watch *w = nj->watches;
    size_t nw = nj->n_watches;
    if (notify_watches_need_list(w, nw) || e->kind != STORE_CHANGE_MESSAGES)
        notify_job_list(nj, j);
    switch (e->kind) {
    case STORE_CHANGE_MESSAGES:
        notify_job_messages(nj, j, e->mailbox);
        break;
    case STORE_CHANGE_CREATED:
    case STORE_CHANGE_DELETED:
        if (notify_events_for(w, nw, e->mailbox, IMAP_NOTIFY_MAILBOX_NAME, nj->list, nj->n_list))
            notify_job_name_and_parent(nj, j, e->mailbox);
        break;
    case STORE_CHANGE_RENAMED:
        if (notify_events_for(w, nw, e->mailbox, IMAP_NOTIFY_MAILBOX_NAME, nj->list, nj->n_list) ||
            (e->detail &&
             notify_events_for(w, nw, e->detail, IMAP_NOTIFY_MAILBOX_NAME, nj->list, nj->n_list)))
            notify_job_write_list(nj, j, e->mailbox, e->detail);
        break;
    case STORE_CHANGE_SUBSCRIBED:
    case STORE_CHANGE_UNSUBSCRIBED:
        /* §5.5: with attributes computed as LIST does */
        if (notify_events_for(w, nw, e->mailbox, IMAP_NOTIFY_SUBSCRIPTION_CHANGE, nj->list,
                              nj->n_list))
            notify_job_write_list(nj, j, e->mailbox, NULL);
        break;
    case STORE_CHANGE_METADATA: {
        /* §5.6-5.7: RFC 5464 §4.4.2's unsolicited form, entry names only */
        bool is_server = e->mailbox[0] == '\0';
        unsigned want =
            is_server ? IMAP_NOTIFY_SERVER_METADATA_CHANGE : IMAP_NOTIFY_MAILBOX_METADATA_CHANGE;
        unsigned ev = 0;
        for (size_t i = 0; i < nw && is_server; i++)
            ev |= w[i].events & want; /* a user-event: whatever the filter */
        if (!is_server)
            ev = notify_events_for(w, nw, e->mailbox, want, nj->list, nj->n_list);
        if (!ev || !e->detail)
            break;
        buf_append_str(&j->out, "* METADATA ");
        imap_write_mailbox(&j->out, e->mailbox, j->ctx.is_utf8);
        buf_printf(&j->out, " %s\r\n", e->detail);
        break;
    }
    }
}

/* Work: NOTIFY SET's look at every watched mailbox: its STATUS remembered, and told when
 * the client asked for STATUS (§3.1). */
static void notify_job_set(struct imap_notify_job *nj, struct imap_job *j)
{
    notify_job_list(nj, j);
    for (size_t i = 0; i < nj->n_list; i++) {
        const struct store_mailbox_info *mi = &nj->list[i];
        if (mi->noselect || mi->is_nonexistent ||
            (nj->selected && notify_name_eq(nj->selected, mi->name)))
            continue;
        unsigned ev = notify_events_for(nj->watches, nj->n_watches, mi->name,
                                        IMAP_NOTIFY_MESSAGE_EVENTS, nj->list, nj->n_list);
        if (!ev || (!nj->has_status && nj->n_cache >= IMAP_NOTIFY_MAX_CACHE))
            continue;
        struct store_status st;
        char *err = NULL;
        const char *name = strcasecmp(mi->name, "INBOX") == 0 ? "INBOX" : mi->name;
        if (store_mailbox_status(j->ctx.user, name, &st, &err) < 0) {
            free(err);
            continue;
        }
        notify_job_cache_put(nj, name, &st);
        if (nj->has_status)
            imap_status_write(&j->out, name, notify_status_items(ev, j->ctx.is_condstore), &st,
                              j->ctx.max_append, j->ctx.is_utf8);
    }
}

static void notify_job_work(struct imap_job *j)
{
    struct imap_notify_job *nj = IMAP_JOB(imap_notify_job, j);
    if (nj->is_set)
        notify_job_set(nj, j);
    for (size_t i = 0; i < nj->n_events; i++)
        notify_job_event(nj, j, &nj->events[i]);
    if (nj->is_set)
        imap_job_ok(j, "NOTIFY completed.");
    /* the selected mailbox's sync (SELECTED, or NOTIFY SET's implicit NOOP) runs after */
}

/* Loop: the job's STATUS results become the session's memory of them. */
static void notify_cache_merge(struct imap_notify *n, struct imap_notify_job *nj)
{
    for (size_t i = 0; i < nj->n_cache; i++) {
        struct imap_notify_cached *c = notify_cache_find(n->cache, n->n_cache, nj->cache[i].name);
        if (c) {
            c->st = nj->cache[i].st;
            continue;
        }
        if (n->n_cache >= IMAP_NOTIFY_MAX_CACHE)
            return;
        struct imap_notify_cached *grown = realloc(n->cache, (n->n_cache + 1) * sizeof *grown);
        if (!grown)
            return;
        n->cache = grown;
        n->cache[n->n_cache++] = nj->cache[i];
        nj->cache[i].name = NULL; /* moved */
    }
}

/* The highest UID of the selected mailbox (0 when empty); loop, no job in flight. */
static uint32_t notify_last_uid(const struct imap_session *s)
{
    size_t count = s->box ? store_mailbox_count(s->box) : 0;
    return count ? store_mailbox_message(s->box, count - 1)->uid : 0;
}

static void notify_job_finish(struct imap_session *s, struct imap_job *j)
{
    struct imap_notify_job *nj = IMAP_JOB(imap_notify_job, j);
    if (nj->is_set) {
        imap_notify_free(s->notify);
        s->notify = nj->state;
        nj->state = NULL;
        if (s->notify && s->box) {
            s->notify->seen_uidvalidity = store_mailbox_uidvalidity(s->box);
            s->notify->seen_uid = notify_last_uid(s);
        }
    }
    if (s->notify)
        notify_cache_merge(s->notify, nj);
}

/* Submit a job for what waits (events moved in); false when nothing was started. */
static bool notify_submit(struct imap_session *s, const char *tag, struct imap_notify *set_state,
                          bool has_status)
{
    struct imap_notify *n = set_state ? set_state : s->notify;
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_notify_job), notify_job_work,
                                      notify_job_finish, notify_job_cleanup);
    if (!j) {
        imap_notify_free(set_state);
        return false;
    }
    struct imap_notify_job *nj = IMAP_JOB(imap_notify_job, j);
    nj->is_set = set_state != NULL;
    nj->has_status = has_status;
    nj->state = set_state;
    bool ok = (nj->watches = notify_watches_copy(n->watches, n->n_watches)) != NULL;
    nj->n_watches = ok ? n->n_watches : 0;
    if (ok && s->box_name)
        ok = (nj->selected = strdup(s->box_name)) != NULL;
    struct imap_notify *cur = s->notify;
    if (ok && cur && cur->n_pending && !set_state) {
        ok = (nj->events = calloc(cur->n_pending, sizeof *nj->events)) != NULL;
        for (size_t i = 0; ok && i < cur->n_pending; i++) {
            nj->events[nj->n_events++] = cur->pending[i];
            const struct imap_notify_cached *c =
                cur->pending[i].kind == STORE_CHANGE_MESSAGES
                    ? notify_cache_find(cur->cache, cur->n_cache, cur->pending[i].mailbox)
                    : NULL;
            if (c && !notify_cache_find(nj->cache, nj->n_cache, c->name))
                notify_job_cache_put(nj, c->name, &c->st);
        }
        if (ok)
            cur->n_pending = 0; /* moved */
    }
    if (!ok) {
        if (tag)
            imap_job_discard(s, j);
        else
            imap_job_discard_quiet(s, j);
        return false;
    }
    /* the selected mailbox: SELECTED's immediate report, or NOTIFY SET's implicit NOOP */
    if (s->box && (set_state || s->is_notify_sync_pending)) {
        j->do_sync = true;
        j->is_sync_forced = true;
    }
    imap_job_submit(s, j); /* a sync clears is_notify_sync_pending */
    return true;
}

bool imap_notify_kick(struct imap_session *s)
{
    struct imap_notify *n = s->notify;
    if (s->is_job_in_flight || s->fetch || s->is_closing || s->state == IMAP_STATE_NOT_AUTH)
        return false;
    if (s->is_notify_overflowed) {
        s->is_notify_overflowed = false;
        conn_write_str(s->c,
                       "* OK [NOTIFICATIONOVERFLOW] Too many notifications; NOTIFY is off.\r\n");
    }
    if (!n)
        return false;
    /* §5.2: the FETCH of new messages follows their EXISTS, whichever command or event
     * reported them */
    if (s->box && n->fetch_att.n && (n->selected_events & IMAP_NOTIFY_MESSAGE_NEW)) {
        uint32_t last = notify_last_uid(s);
        uint32_t uidv = store_mailbox_uidvalidity(s->box);
        if (n->seen_uidvalidity != uidv) {
            n->seen_uidvalidity = uidv; /* newly selected: what SELECT told is known */
            n->seen_uid = last;
        } else if (last > n->seen_uid) {
            uint32_t from = n->seen_uid + 1;
            n->seen_uid = last;
            imap_fetch_internal(s, from, last, &n->fetch_att);
            if (s->is_job_in_flight)
                return true;
        }
    }
    bool is_sync = s->is_notify_sync_pending && s->box;
    if (!is_sync && n->n_pending == 0) {
        s->is_notify_sync_pending = false;
        return false;
    }
    return notify_submit(s, NULL, NULL, false);
}

/* §5.8: too much waits: stop, as after NOTIFY NONE, and tell the client when it can be
 * told (imap_notify_kick: not while a FETCH may be in the middle of a literal). */
static void notify_overflow(struct imap_session *s)
{
    imap_notify_free(s->notify);
    s->notify = NULL;
    s->is_notify_sync_pending = false;
    s->is_notify_overflowed = true;
    if (!s->is_job_in_flight)
        imap_notify_kick(s);
}

void imap_notify_event(struct imap_session *s, const struct store_change_event *ev)
{
    struct imap_notify *n = s->notify;
    if (!n || s->state == IMAP_STATE_NOT_AUTH)
        return;
    /* §5: not the changes this client made itself */
    if (ev->kind != STORE_CHANGE_MESSAGES && ev->origin == s->handle)
        return;
    if (ev->kind == STORE_CHANGE_MESSAGES && s->box_name &&
        notify_name_eq(ev->mailbox, s->box_name)) {
        /* §6.1.1 SELECTED: at once; SELECTED-DELAYED: with the next command that may
         * report (has_pending_changes, set by the plain notification) */
        if (n->has_selected && !n->is_delayed && (n->selected_events & IMAP_NOTIFY_MESSAGE_EVENTS))
            s->is_notify_sync_pending = true;
    } else {
        bool is_dup = false;
        for (size_t i = 0; i < n->n_pending && !is_dup; i++)
            is_dup = n->pending[i].kind == ev->kind &&
                     strcmp(n->pending[i].mailbox, ev->mailbox) == 0 &&
                     ev->kind == STORE_CHANGE_MESSAGES;
        if (!is_dup) {
            if (n->n_pending >= IMAP_NOTIFY_MAX_PENDING) {
                notify_overflow(s);
                return;
            }
            struct imap_notify_pending *p = &n->pending[n->n_pending];
            p->kind = ev->kind;
            p->mailbox = strdup(ev->mailbox);
            p->detail = ev->detail ? strdup(ev->detail) : NULL;
            if (!p->mailbox || (ev->detail && !p->detail)) {
                free(p->mailbox);
                free(p->detail);
                notify_overflow(s);
                return;
            }
            n->n_pending++;
        }
    }
    if (!s->is_job_in_flight)
        imap_notify_kick(s);
}

void imap_notify_publish(const struct imap_job *j, int kind, const char *mailbox,
                         const char *detail)
{
    struct store_change_event ev = {
        .user = j->ctx.username,
        .mailbox = mailbox,
        .kind = (enum store_change)kind,
        .detail = detail,
        .origin = j->job.owner,
    };
    store_notify_publish_change(&ev);
}

/* ---- NOTIFY ---------------------------------------------------------------------------- */

/* The session's state for a parsed NOTIFY SET (names in the store's form); NULL with a
 * reply written when it cannot be made. */
static struct imap_notify *notify_state_new(struct imap_session *s, const char *tag,
                                            const struct imap_notify_request *r)
{
    struct imap_notify *n = calloc(1, sizeof *n);
    if (n)
        n->watches = calloc(r->n_groups, sizeof *n->watches);
    if (!n || !n->watches) {
        imap_notify_free(n);
        imap_reply(s, tag, "NO [SERVERBUG] Out of memory.");
        return NULL;
    }
    for (size_t i = 0; i < r->n_groups; i++) {
        const struct imap_notify_group *g = &r->groups[i];
        if (g->filter == IMAP_NOTIFY_SELECTED || g->filter == IMAP_NOTIFY_SELECTED_DELAYED) {
            n->has_selected = true;
            n->is_delayed = g->filter == IMAP_NOTIFY_SELECTED_DELAYED;
            n->selected_events = g->events;
            if (g->fetch_att && (!imap_fetch_items_ok(g->fetch_att) ||
                                 !notify_arg_copy(&n->fetch_att, g->fetch_att))) {
                imap_notify_free(n);
                imap_reply(s, tag, "BAD Invalid FETCH items for MessageNew.");
                return NULL;
            }
            continue;
        }
        struct imap_notify_watch *w = &n->watches[n->n_watches++];
        w->filter = g->filter;
        w->events = g->events;
        if (g->n_names && !(w->names = calloc(g->n_names, sizeof *w->names))) {
            imap_notify_free(n);
            imap_reply(s, tag, "NO [SERVERBUG] Out of memory.");
            return NULL;
        }
        for (size_t k = 0; k < g->n_names; k++) {
            char *name = imap_session_mailbox_name(s, g->names[k]);
            if (!name) {
                imap_notify_free(n);
                imap_reply(s, tag, "BAD Invalid mailbox name.");
                return NULL;
            }
            w->names[w->n_names++] = name;
        }
    }
    return n;
}

void imap_cmd_notify(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    struct imap_notify_request r;
    const char *why = NULL;
    switch (imap_notify_parse(args, n, &r, &why)) {
    case IMAP_NOTIFY_PARSE_BAD:
        imap_reply(s, tag, "BAD %s", why ? why : "Invalid NOTIFY.");
        return;
    case IMAP_NOTIFY_PARSE_BADEVENT:
        /* §3.1: NO with BADEVENT listing every event supported */
        imap_reply(s, tag, "NO [BADEVENT (" IMAP_NOTIFY_EVENT_NAMES ")] Unsupported event.");
        return;
    case IMAP_NOTIFY_PARSE_OK:
        break;
    }
    if (r.is_none) {
        imap_notify_free(s->notify);
        s->notify = NULL;
        imap_reply(s, tag, "OK NOTIFY completed.");
        return;
    }
    struct imap_notify *state = notify_state_new(s, tag, &r);
    if (state)
        (void)notify_submit(s, tag, state, r.has_status);
}
