/*
 * metadata.c - GETMETADATA and SETMETADATA (RFC 5464 METADATA): entries of a mailbox or,
 * for the mailbox name "", of the server, kept in the user's index (store.h
 * store_metadata_*). The arguments are parsed on the loop (args.c); the work reads or
 * writes the entries and writes the "* METADATA" reply.
 */
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "imap/args.h"
#include "imap/session.h"
#include "store/mime.h"
#include "store/store.h"

struct imap_metadata_job {
    struct imap_job base;
    char *mailbox; /* "" for the server */
    bool is_set;
    /* GETMETADATA */
    char *entries[IMAP_METADATA_MAX_ENTRIES];
    size_t n_entries;
    int depth;
    bool has_maxsize;
    uint64_t maxsize;
    /* SETMETADATA */
    char *names[IMAP_METADATA_MAX_ENTRIES];
    char *values[IMAP_METADATA_MAX_ENTRIES]; /* NULL: remove */
    size_t lens[IMAP_METADATA_MAX_ENTRIES];
    size_t n_set;
};

static void imap_metadata_cleanup(struct imap_job *j)
{
    struct imap_metadata_job *mj = IMAP_JOB(imap_metadata_job, j);
    free(mj->mailbox);
    for (size_t i = 0; i < mj->n_entries; i++)
        free(mj->entries[i]);
    for (size_t i = 0; i < mj->n_set; i++) {
        free(mj->names[i]);
        free(mj->values[i]);
    }
}

/* Is name (an entry found under asked) within depth of it (0: itself only; 1: and its
 * children; -1: all below)? */
static bool imap_metadata_in_depth(const char *asked, const char *name, int depth)
{
    if (strcmp(asked, name) == 0)
        return true;
    if (depth == 0)
        return false;
    return depth < 0 || !strchr(name + strlen(asked) + 1, '/');
}

/* A value as IMAP sends it: a string, or a literal8 when it holds NUL (§4.2). */
static void imap_metadata_write_value(struct buf *out, const struct store_metadata *e)
{
    if (memchr(e->value, '\0', e->len)) {
        buf_printf(out, "~{%zu}\r\n", e->len);
        buf_append(out, e->value, e->len);
    } else {
        mime_write_nstring(out, e->value, e->len, false);
    }
}

static void imap_getmetadata_work(struct imap_job *j)
{
    struct imap_metadata_job *mj = IMAP_JOB(imap_metadata_job, j);
    struct buf items;
    buf_init(&items, 0);
    uint64_t longest = 0; /* the largest value left out by MAXSIZE (§4.2.1) */
    for (size_t k = 0; k < mj->n_entries; k++) {
        struct store_metadata *v = NULL;
        size_t n = 0;
        char *err = NULL;
        if (store_metadata_get(j->ctx.user, mj->mailbox, mj->entries[k], &v, &n, &err) < 0) {
            buf_free(&items);
            imap_job_err(j, "%s", err);
            return;
        }
        bool has_self = false;
        for (size_t i = 0; i < n; i++) {
            if (!imap_metadata_in_depth(mj->entries[k], v[i].name, mj->depth))
                continue;
            has_self |= strcmp(v[i].name, mj->entries[k]) == 0;
            if (mj->has_maxsize && v[i].len > mj->maxsize) {
                if (v[i].len > longest)
                    longest = v[i].len;
                continue;
            }
            buf_append_str(&items, items.len ? " " : "");
            buf_append_str(&items, v[i].name);
            buf_append_byte(&items, ' ');
            imap_metadata_write_value(&items, &v[i]);
        }
        if (!has_self && !(mj->has_maxsize && longest > 0)) {
            /* an entry that does not exist is returned as NIL */
            buf_printf(&items, "%s%s NIL", items.len ? " " : "", mj->entries[k]);
        }
        store_metadata_free(v, n);
    }
    buf_append_str(&j->out, "* METADATA ");
    imap_write_mailbox(&j->out, mj->mailbox, j->ctx.is_utf8);
    /* values may hold NUL (literal8): appended by length, never as a C string */
    buf_append_str(&j->out, " (");
    buf_append(&j->out, items.data ? items.data : "", items.len);
    buf_append_str(&j->out, ")\r\n");
    buf_free(&items);
    if (longest > 0)
        buf_printf(&j->tagged, "%s OK [METADATA LONGENTRIES %llu] Getmetadata completed.\r\n",
                   j->tag, (unsigned long long)longest);
    else
        buf_printf(&j->tagged, "%s OK Getmetadata completed.\r\n", j->tag);
    j->is_ok = true;
}

static void imap_setmetadata_work(struct imap_job *j)
{
    struct imap_metadata_job *mj = IMAP_JOB(imap_metadata_job, j);
    for (size_t i = 0; i < mj->n_set; i++) {
        char *err = NULL;
        int r = store_metadata_set(j->ctx.user, mj->mailbox, mj->names[i], mj->values[i],
                                   mj->lens[i], &err);
        if (r != 0) {
            /* a limit ([METADATA MAXSIZE n] / [METADATA TOOMANY]) or no such mailbox */
            imap_job_err(j, "%s", err);
            return;
        }
    }
    /* RFC 5465 §5.6-5.7: NOTIFY's metadata events name the entries */
    struct buf names;
    buf_init(&names, 0);
    for (size_t i = 0; i < mj->n_set; i++)
        buf_printf(&names, "%s%s", i ? " " : "", mj->names[i]);
    if (names.len)
        imap_notify_publish(j, STORE_CHANGE_METADATA, mj->mailbox, buf_cstr(&names));
    buf_free(&names);
    imap_job_ok(j, "Setmetadata completed.");
}

void imap_cmd_getmetadata(struct imap_session *s, const char *tag, struct imap_arg *args,
                          size_t n, bool is_uid)
{
    struct imap_getmetadata_request r;
    if (!imap_getmetadata_parse(args, n, &r)) {
        imap_reply(s, tag, "BAD Usage: GETMETADATA [(options)] mailbox entries");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_metadata_job),
                                      imap_getmetadata_work, NULL, imap_metadata_cleanup);
    if (!j)
        return;
    struct imap_metadata_job *mj = IMAP_JOB(imap_metadata_job, j);
    mj->depth = r.depth;
    mj->has_maxsize = r.has_maxsize;
    mj->maxsize = r.maxsize;
    bool ok = (mj->mailbox = r.mailbox->len ? imap_session_mailbox_name(s, r.mailbox) : strdup("")) != NULL;
    for (size_t i = 0; ok && i < r.n_entries; i++)
        ok = (mj->entries[mj->n_entries++] = strdup(r.entries[i])) != NULL;
    if (!ok) {
        imap_job_discard(s, j);
        return;
    }
    imap_job_submit(s, j);
}

void imap_cmd_setmetadata(struct imap_session *s, const char *tag, struct imap_arg *args,
                          size_t n, bool is_uid)
{
    struct imap_setmetadata_request r;
    if (!imap_setmetadata_parse(args, n, &r)) {
        imap_reply(s, tag, "BAD Usage: SETMETADATA mailbox (entry value ...)");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_metadata_job),
                                      imap_setmetadata_work, NULL, imap_metadata_cleanup);
    if (!j)
        return;
    struct imap_metadata_job *mj = IMAP_JOB(imap_metadata_job, j);
    mj->is_set = true;
    bool ok = (mj->mailbox = r.mailbox->len ? imap_session_mailbox_name(s, r.mailbox) : strdup("")) != NULL;
    for (size_t i = 0; ok && i < r.n; i++) {
        mj->names[i] = strdup(r.names[i]);
        mj->n_set++;
        ok = mj->names[i] != NULL;
        if (ok && r.values[i]) {
            mj->lens[i] = r.values[i]->len;
            mj->values[i] = malloc(r.values[i]->len + 1);
            ok = mj->values[i] != NULL;
            if (ok)
                memcpy(mj->values[i], r.values[i]->str, r.values[i]->len + 1);
        }
    }
    if (!ok) {
        imap_job_discard(s, j);
        return;
    }
    imap_job_submit(s, j);
}
