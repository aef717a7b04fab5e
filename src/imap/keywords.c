/*
 * keywords.c - the keywords a session has been told about (RFC 3501 §7.2.6, §7.1
 * PERMANENTFLAGS).
 *
 * A client learns which flags a mailbox has from the untagged FLAGS response (and
 * PERMANENTFLAGS) at SELECT; a FETCH FLAGS naming a keyword the client never saw in FLAGS
 * breaks clients that keep a per-mailbox flag table (issue 9: another session STOREd a new
 * keyword and ours reported it at once). So every FETCH FLAGS line passes its keywords
 * through imap_keywords_announce() first: an unknown one is added and a new FLAGS and
 * PERMANENTFLAGS pair goes out before the FETCH, as Dovecot does.
 *
 * The set belongs to the session's selected view and moves with it into jobs (ctx.box's
 * companion, session.h), so it is used by one thread at a time. Sorted, binary-searched.
 */
#include <stdlib.h>
#include <string.h>

#include "imap/session.h"
#include "store/store.h"

/* A mailbox with more distinct keywords than this gets no new ones announced: PERMANENTFLAGS
 * stays "\*", and the FETCH still reports them (a client must cope with an unknown flag,
 * RFC 3501 §2.3.2, but ordinary mailboxes never come near this). */
#define IMAP_KEYWORDS_MAX 4096

struct imap_keywords {
    char **names; /* sorted (strcmp) */
    size_t n, cap;
};

void imap_keywords_set_free(struct imap_keywords *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        free(k->names[i]);
    free(k->names);
    free(k);
}

/* Index where name is or would go; *found_r whether it is there. */
static size_t imap_keywords_find(const struct imap_keywords *k, const char *name, bool *found_r)
{
    size_t lo = 0, hi = k->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(k->names[mid], name);
        if (c == 0) {
            *found_r = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found_r = false;
    return lo;
}

/* Add name; true when it was new and added. */
static bool imap_keywords_add(struct imap_keywords *k, const char *name)
{
    bool found;
    size_t at = imap_keywords_find(k, name, &found);
    if (found || k->n >= IMAP_KEYWORDS_MAX)
        return false;
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        char **p = realloc(k->names, cap * sizeof *p);
        if (!p)
            return false;
        k->names = p;
        k->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return false;
    memmove(k->names + at + 1, k->names + at, (k->n - at) * sizeof *k->names);
    k->names[at] = copy;
    k->n++;
    return true;
}

/* "* FLAGS (...)" and "* OK [PERMANENTFLAGS (...)]" for the set. */
static void imap_keywords_write(const struct imap_keywords *k, bool is_readonly, struct buf *out)
{
    buf_append_str(out, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
    for (size_t i = 0; i < k->n; i++) {
        buf_append_byte(out, ' ');
        buf_append_str(out, k->names[i]);
    }
    buf_append_str(out, ")\r\n");
    if (is_readonly) {
        buf_append_str(out, "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
        return;
    }
    buf_append_str(out, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
    for (size_t i = 0; i < k->n; i++) {
        buf_append_byte(out, ' ');
        buf_append_str(out, k->names[i]);
    }
    /* RFC 3501 §7.1: \* - clients may create new keywords */
    buf_append_str(out, " \\*)] Flags permitted.\r\n");
}

void imap_keywords_select(struct imap_job_ctx *ctx, bool is_readonly, struct buf *out)
{
    if (!ctx->keywords)
        ctx->keywords = calloc(1, sizeof *ctx->keywords);
    struct imap_keywords *k = ctx->keywords;
    if (k) {
        for (size_t i = 0; i < k->n; i++)
            free(k->names[i]);
        k->n = 0;
    }
    size_t count = store_mailbox_count(ctx->box);
    for (size_t i = 0; k && i < count; i++) {
        const struct store_message *m = store_mailbox_message(ctx->box, i);
        for (char *const *kw = m->keywords; kw && *kw; kw++)
            imap_keywords_add(k, *kw);
    }
    static const struct imap_keywords none = {0};
    imap_keywords_write(k ? k : &none, is_readonly, out);
}

void imap_keywords_announce(struct imap_job_ctx *ctx, char *const *keywords, struct buf *out)
{
    struct imap_keywords *k = ctx->keywords;
    if (!k || !keywords)
        return;
    bool is_new = false;
    for (char *const *kw = keywords; *kw; kw++)
        is_new |= imap_keywords_add(k, *kw);
    if (is_new)
        imap_keywords_write(k, ctx->is_readonly, out);
}
