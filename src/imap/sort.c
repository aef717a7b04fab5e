/*
 * sort.c - SORT and THREAD (RFC 5256), with SORT=DISPLAY (RFC 5957), ESORT, PARTIAL and
 * CONTEXT=SORT updates (RFC 5267, kept by context.c) and RETURN (SAVE) (RFC 5182).
 *
 * The search criteria are the SEARCH ones (search.c), parsed on the loop. The work runs
 * the search over the view, takes the messages' keys from the index (store.h
 * store_mailbox_sort_keys: computed from a header once, cached after), and sorts them with
 * the requested criteria, the sequence number breaking every tie (RFC 5256 §3); or hands
 * them to the threading algorithms (thread.c). Strings compare as octets of their
 * i;unicode-casemap form (RFC 5051), which the keys already are.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/conn.h"
#include "imap/args.h"
#include "imap/session.h"
#include "imap/thread.h"
#include "store/mime.h"
#include "store/store.h"

struct imap_sort_job {
    struct imap_job base;
    struct skey *root; /* the search criteria */
    struct imap_sort_criterion crit[IMAP_SORT_MAX_CRITERIA];
    size_t n_crit;
    struct imap_search_return ret; /* ESORT (RFC 5267): opts 0 for the plain * SORT */
    bool is_thread;
    enum mime_comparator cmp; /* RFC 5255 §4.2: the session's comparator */
    enum imap_thread_algorithm alg;
    bool is_uid;
    struct imap_update_request update; /* RETURN (UPDATE): RFC 5267 §4.3 */
    /* result for finish: the RFC 5182 saved result (UIDs, ascending) */
    uint32_t *saved;
    size_t n_saved;
};

static void imap_sort_cleanup(struct imap_job *j)
{
    struct imap_sort_job *sj = IMAP_JOB(imap_sort_job, j);
    imap_search_free(sj->root);
    free(sj->saved);
}

static void imap_sort_finish(struct imap_session *s, struct imap_job *j)
{
    struct imap_sort_job *sj = IMAP_JOB(imap_sort_job, j);
    imap_searchres_finish(s, j, &sj->saved, &sj->n_saved);
}

/* What the comparator sees: the criteria, the view, the keys (NULL when no criterion
 * needs them). */
struct sort_ctx {
    const struct imap_sort_criterion *crit;
    size_t n_crit;
    struct store_mailbox *box;
    const struct mime_sort_keys *keys;
};

static int sort_cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int sort_cmp_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "");
}

/* RFC 5256 §3: the criteria in order, REVERSE inverting one; equal on all of them, the
 * sequence number decides (never reversed). */
static int sort_cmp(const void *x, const void *y, void *arg)
{
    const struct sort_ctx *ctx = arg;
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    const struct store_message *ma = store_mailbox_message(ctx->box, a);
    const struct store_message *mb = store_mailbox_message(ctx->box, b);
    const struct mime_sort_keys *ka = ctx->keys ? &ctx->keys[a] : NULL;
    const struct mime_sort_keys *kb = ctx->keys ? &ctx->keys[b] : NULL;
    for (size_t i = 0; i < ctx->n_crit; i++) {
        const struct imap_sort_criterion *c = &ctx->crit[i];
        int r = 0;
        switch (c->key) {
        case IMAP_SORT_ARRIVAL:
            r = sort_cmp_u64((uint64_t)ma->internaldate, (uint64_t)mb->internaldate);
            break;
        case IMAP_SORT_SIZE:
            r = sort_cmp_u64(ma->vsize, mb->vsize);
            break;
        case IMAP_SORT_DATE:
            r = ka->sent < kb->sent ? -1 : ka->sent > kb->sent;
            break;
        case IMAP_SORT_SUBJECT:
            r = sort_cmp_str(ka->subject, kb->subject);
            break;
        case IMAP_SORT_FROM:
            r = sort_cmp_str(ka->from, kb->from);
            break;
        case IMAP_SORT_TO:
            r = sort_cmp_str(ka->to, kb->to);
            break;
        case IMAP_SORT_CC:
            r = sort_cmp_str(ka->cc, kb->cc);
            break;
        case IMAP_SORT_DISPLAYFROM:
            r = sort_cmp_str(ka->display_from, kb->display_from);
            break;
        case IMAP_SORT_DISPLAYTO:
            r = sort_cmp_str(ka->display_to, kb->display_to);
            break;
        }
        if (r != 0)
            return c->is_reverse ? -r : r;
    }
    return a < b ? -1 : a > b;
}

/* Do the criteria need the header keys (anything but ARRIVAL and SIZE)? */
static bool sort_needs_keys(const struct imap_sort_criterion *crit, size_t n_crit)
{
    for (size_t i = 0; i < n_crit; i++)
        if (crit[i].key != IMAP_SORT_ARRIVAL && crit[i].key != IMAP_SORT_SIZE)
            return true;
    return false;
}

int imap_sort_order(struct store_mailbox *box, enum mime_comparator cmp,
                    const struct imap_sort_criterion *crit, size_t n_crit, const bool *match,
                    size_t *idx, size_t n, char **error_r)
{
    struct mime_sort_keys *keys = NULL;
    if (sort_needs_keys(crit, n_crit) &&
        store_mailbox_sort_keys_cmp(box, match, cmp, &keys, error_r) < 0)
        return -1;
    struct sort_ctx ctx = {crit, n_crit, box, keys};
    qsort_r(idx, n, sizeof *idx, sort_cmp, &ctx);
    if (keys)
        store_sort_keys_free(keys, store_mailbox_count(box));
    return 0;
}

/* THREAD: the matched messages' keys to the threading algorithm. */
static bool sort_thread(struct imap_job *j, const size_t *idx, size_t n,
                        const struct mime_sort_keys *keys)
{
    const struct imap_sort_job *sj = IMAP_JOB(imap_sort_job, j);
    struct store_mailbox *box = j->ctx.box;
    struct imap_thread_msg *msgs = calloc(n ? n : 1, sizeof *msgs);
    if (!msgs)
        return false;
    for (size_t k = 0; k < n; k++) {
        const struct mime_sort_keys *key = &keys[idx[k]];
        msgs[k] = (struct imap_thread_msg){
            .number = sj->is_uid ? store_mailbox_message(box, idx[k])->uid : (uint32_t)idx[k] + 1,
            .seq = (uint32_t)idx[k] + 1,
            .sent = key->sent,
            .subject = key->subject ? key->subject : "",
            .is_reply = key->is_reply,
            .message_id = key->message_id,
            .references = key->references ? key->references : "",
        };
    }
    bool ok = buf_append_str(&j->out, "* THREAD") &&
              (n == 0 || buf_append_byte(&j->out, ' ')) &&
              imap_thread_write(sj->alg, msgs, n, &j->out) && buf_append_str(&j->out, "\r\n");
    free(msgs);
    return ok;
}

static void imap_sort_work(struct imap_job *j)
{
    struct imap_sort_job *sj = IMAP_JOB(imap_sort_job, j);
    struct store_mailbox *box = j->ctx.box;
    size_t count = store_mailbox_count(box);
    bool *match = calloc(count ? count : 1, sizeof *match);
    size_t *idx = calloc(count ? count : 1, sizeof *idx);
    uint32_t *values = calloc(count ? count : 1, sizeof *values);
    uint32_t *uids = calloc(count ? count : 1, sizeof *uids);
    struct mime_sort_keys *keys = NULL;
    char *err = NULL;
    bool ok = match && idx && values && uids;
    size_t n = 0;
    if (ok) {
        imap_search_match(sj->root, box, match);
        for (size_t i = 0; i < count; i++)
            if (match[i])
                idx[n++] = i;
    }
    if (ok && sj->is_thread) {
        if (store_mailbox_sort_keys_cmp(box, match, sj->cmp, &keys, &err) < 0) {
            imap_job_err(j, "%s", err);
            goto done;
        }
        ok = sort_thread(j, idx, n, keys);
    } else if (ok) {
        if (imap_sort_order(box, sj->cmp, sj->crit, sj->n_crit, match, idx, n, &err) < 0) {
            imap_job_err(j, "%s", err);
            goto done;
        }
        for (size_t k = 0; k < n; k++) {
            const struct store_message *m = store_mailbox_message(box, idx[k]);
            values[k] = sj->is_uid ? m->uid : (uint32_t)idx[k] + 1;
            uids[k] = m->uid;
        }
        /* UPDATE and CONTEXT ask for no data of their own (RFC 5267 §4.2-4.3) */
        unsigned opts = sj->ret.opts & ~(unsigned)IMAP_SEARCH_RET_HINTS;
        if (sj->ret.opts == 0) {
            ok = buf_append_str(&j->out, "* SORT");
            for (size_t k = 0; k < n && ok; k++)
                ok = buf_printf(&j->out, " %u", values[k]);
            ok = ok && buf_append_str(&j->out, "\r\n");
        } else {
            /* RFC 5267 §4.3.1: a refused UPDATE is an untagged NO, the rest still holds */
            if (sj->ret.opts & IMAP_SEARCH_RET_UPDATE)
                imap_update_start(j, &sj->update, &sj->root, uids, n);
            if (opts != IMAP_SEARCH_RET_SAVE) /* RFC 5182 §2.4: SAVE alone says nothing */
                imap_esearch_write(&j->out, j->tag, sj->is_uid, &sj->ret, values, n, 0);
        }
        if (ok && (opts & IMAP_SEARCH_RET_SAVE))
            ok = imap_searchres_make(&sj->ret, uids, n, &sj->saved, &sj->n_saved);
    }
    if (!ok) {
        buf_reset(&j->out);
        buf_printf(&j->tagged, "%s NO Out of memory.\r\n", j->tag);
    } else {
        buf_printf(&j->tagged, "%s OK %s completed.\r\n", j->tag, sj->is_thread ? "Thread" : "Sort");
        j->is_ok = true;
    }
done:
    if (keys)
        store_sort_keys_free(keys, count);
    free(match);
    free(idx);
    free(values);
    free(uids);
}

/* Parse "charset search-criteria" from args[0..n) into the job; false: answered. */
static bool imap_sort_search_parse(struct imap_session *s, const char *tag, struct imap_arg *args,
                                   size_t n, struct skey **root_r, bool *has_modseq_r)
{
    if (n < 2) {
        imap_reply(s, tag, "BAD Missing charset or search criteria.");
        return false;
    }
    if (!imap_search_charset_ok(s, tag, &args[0]))
        return false;
    *root_r = imap_search_parse_cmp(args + 1, n - 1, s->searchres, s->n_searchres,
                                    s->comparator, has_modseq_r);
    if (!*root_r) {
        imap_reply(s, tag, "BAD Invalid search criteria.");
        return false;
    }
    return true;
}

static void imap_sort_submit(struct imap_session *s, const char *tag, struct imap_sort_job *tmpl,
                             struct skey *root, bool has_modseq)
{
    unsigned save = tmpl->ret.opts & IMAP_SEARCH_RET_SAVE;
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_sort_job), imap_sort_work,
                                      save ? imap_sort_finish : NULL, imap_sort_cleanup);
    if (!j) {
        imap_search_free(root);
        return;
    }
    struct imap_sort_job *sj = IMAP_JOB(imap_sort_job, j);
    memcpy(sj->crit, tmpl->crit, sizeof sj->crit);
    sj->n_crit = tmpl->n_crit;
    sj->ret = tmpl->ret;
    sj->is_thread = tmpl->is_thread;
    sj->alg = tmpl->alg;
    sj->is_uid = tmpl->is_uid;
    sj->cmp = s->comparator;
    sj->root = root;
    if (sj->ret.opts & IMAP_SEARCH_RET_UPDATE)
        imap_update_request_init(s, root, sj->is_uid, sj->crit, sj->n_crit, &sj->update);
    if (has_modseq)
        imap_condstore_enable(s); /* RFC 7162 §3.1 */
    /* RFC 3501 §7.4.1 as for SEARCH: only the UID forms may report expunges */
    j->do_sync = sj->is_uid;
    imap_job_submit(s, j);
}

void imap_cmd_sort(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                   bool is_uid)
{
    struct imap_sort_job tmpl = {.is_uid = is_uid};
    /* RFC 5267 §3: SORT [RETURN (options)] (criteria) charset search-criteria */
    if (n >= 1 && imap_arg_is_atom(&args[0], "RETURN")) {
        if (n < 2 || !imap_search_return_parse(&args[1], &tmpl.ret)) {
            imap_reply(s, tag, "BAD Unknown SORT return option.");
            return;
        }
        args += 2;
        n -= 2;
    }
    if (n < 1 || !imap_sort_criteria_parse(&args[0], tmpl.crit, &tmpl.n_crit)) {
        if (tmpl.ret.opts & IMAP_SEARCH_RET_SAVE)
            imap_searchres_clear(s); /* RFC 5182 §2.1 */
        imap_reply(s, tag, "BAD Invalid sort criteria.");
        return;
    }
    if ((tmpl.ret.opts & IMAP_SEARCH_RET_UPDATE) && imap_update_find(s->updates, tag)) {
        imap_reply(s, tag, "BAD Tag reuse."); /* RFC 5267 §4.3 */
        return;
    }
    struct skey *root = NULL;
    bool has_modseq = false;
    if (!imap_sort_search_parse(s, tag, args + 1, n - 1, &root, &has_modseq)) {
        if (tmpl.ret.opts & IMAP_SEARCH_RET_SAVE)
            imap_searchres_clear(s);
        return;
    }
    imap_sort_submit(s, tag, &tmpl, root, has_modseq);
}

void imap_cmd_thread(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    /* RFC 5256 §3: THREAD algorithm charset search-criteria */
    struct imap_sort_job tmpl = {.is_uid = is_uid, .is_thread = true};
    if (n < 1 || !imap_thread_algorithm_parse(&args[0], &tmpl.alg)) {
        imap_reply(s, tag, "BAD Unknown threading algorithm.");
        return;
    }
    struct skey *root = NULL;
    bool has_modseq = false;
    if (!imap_sort_search_parse(s, tag, args + 1, n - 1, &root, &has_modseq))
        return;
    imap_sort_submit(s, tag, &tmpl, root, has_modseq);
}

/* ---- COMPARATOR (RFC 5255 §4.7-4.9) ---------------------------------------------------- */

void imap_cmd_comparator(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                         bool is_uid)
{
    (void)is_uid;
    if (n == 0) {
        /* no arguments: which comparator is active */
        conn_printf(s->c, "* COMPARATOR %s\r\n", imap_comparators[s->comparator]);
        imap_reply(s, tag, "OK Comparator completed.");
        return;
    }
    unsigned matched = 0;
    int k = imap_comparator_choose(args, n, &matched);
    if (k == -2) {
        imap_reply(s, tag, "BAD Invalid comparator arguments.");
        return;
    }
    if (k < 0) {
        imap_reply(s, tag, "NO [BADCOMPARATOR] No such comparator.");
        return;
    }
    s->comparator = (enum mime_comparator)k;
    /* RFC 5255 §4.8: the active comparator, then what the winning argument matched when
     * that was more than one */
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "* COMPARATOR %s", imap_comparators[k]);
    if (matched & (matched - 1)) {
        const char *sep = " (";
        for (size_t i = 0; i < IMAP_N_COMPARATORS; i++) {
            if (matched & (1u << i)) {
                buf_printf(&b, "%s%s", sep, imap_comparators[i]);
                sep = " ";
            }
        }
        buf_append_byte(&b, ')');
    }
    conn_printf(s->c, "%s\r\n", buf_cstr(&b));
    buf_free(&b);
    imap_reply(s, tag, "OK Comparator completed.");
}
