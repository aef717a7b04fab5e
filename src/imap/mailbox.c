/*
 * mailbox.c - IMAP mailbox commands (RFC 3501 §6.3, §6.4 except FETCH/STORE/SEARCH,
 * LIST/LSUB in list.c, APPEND in append.c): SELECT/EXAMINE, CREATE/DELETE/RENAME,
 * (UN)SUBSCRIBE, STATUS, NAMESPACE, NOOP/CHECK, CLOSE/UNSELECT, EXPUNGE, COPY/MOVE (RFC 4315
 * UIDPLUS, RFC 6851), and the untagged updates a sync produces (RFC 3501 §7.3-7.4).
 *
 * Each command runs as a typed imap_job (session.h): the *_work functions run on a pool
 * thread and see only their job (the session's handles moved into j->ctx); *_finish runs
 * on the loop with the session.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/conn.h"
#include "core/log.h"
#include "imap/args.h"
#include "imap/mailname.h"
#include "imap/session.h"
#include "store/mime.h"
#include "store/store.h"

/* ---- helpers ------------------------------------------------------------------------ */

void imap_keywords_free(char **k)
{
    if (!k)
        return;
    for (char **p = k; *p; p++)
        free(*p);
    free(k);
}

void imap_write_flags(struct buf *out, unsigned flags, char *const *keywords)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {
        {STORE_FLAG_SEEN, "\\Seen"},       {STORE_FLAG_ANSWERED, "\\Answered"},
        {STORE_FLAG_FLAGGED, "\\Flagged"}, {STORE_FLAG_DELETED, "\\Deleted"},
        {STORE_FLAG_DRAFT, "\\Draft"},     {STORE_FLAG_RECENT, "\\Recent"},
    };
    buf_append_byte(out, '(');
    bool first = true;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (flags & names[i].bit) {
            if (!first)
                buf_append_byte(out, ' ');
            buf_append_str(out, names[i].name);
            first = false;
        }
    }
    for (char *const *k = keywords; k && *k; k++) {
        if (!first)
            buf_append_byte(out, ' ');
        buf_append_str(out, *k);
        first = false;
    }
    buf_append_byte(out, ')');
}

/* One flag name -> bit (0 for a keyword); -1 for an unknown system flag. */
static int imap_flag_bit(const char *f)
{
    if (f[0] != '\\')
        return 0;
    if (strcasecmp(f, "\\Seen") == 0)
        return STORE_FLAG_SEEN;
    if (strcasecmp(f, "\\Answered") == 0)
        return STORE_FLAG_ANSWERED;
    if (strcasecmp(f, "\\Flagged") == 0)
        return STORE_FLAG_FLAGGED;
    if (strcasecmp(f, "\\Deleted") == 0)
        return STORE_FLAG_DELETED;
    if (strcasecmp(f, "\\Draft") == 0)
        return STORE_FLAG_DRAFT;
    return -1;
}

bool imap_parse_flags(const struct imap_arg *a, unsigned *flags_r, char ***keywords_r)
{
    const struct imap_arg *items = a;
    size_t n = 1;
    if (a->type == IMAP_ARG_LIST) {
        items = a->list;
        n = a->n;
    }
    *flags_r = 0;
    *keywords_r = NULL;
    char **kw = calloc(n + 1, sizeof *kw);
    if (!kw)
        return false;
    size_t nk = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].type != IMAP_ARG_ATOM)
            goto fail;
        int bit = imap_flag_bit(items[i].str);
        if (bit < 0) {
            if (strcasecmp(items[i].str, "\\Recent") == 0)
                continue; /* RFC 3501 §2.3.2: \Recent cannot be changed by the client */
            goto fail;
        }
        if (bit > 0) {
            *flags_r |= (unsigned)bit;
        } else {
            for (const char *c = items[i].str; *c; c++)
                if (strchr("(){%*\"\\]", *c) || (unsigned char)*c <= ' ' ||
                    (unsigned char)*c >= 127)
                    goto fail;
            kw[nk++] = strdup(items[i].str);
        }
    }
    if (nk == 0) {
        free(kw);
        kw = NULL;
    }
    *keywords_r = kw;
    return true;
fail:
    imap_keywords_free(kw);
    return false;
}

char *imap_mailbox_name(const struct imap_arg *a)
{
    /* a literal spilled to a file (APPEND) has no bytes here: not a name */
    if (!imap_arg_is_string(a) || a->is_external || a->len == 0 || memchr(a->str, '\0', a->len))
        return NULL;
    /* RFC 3501 §5.1: INBOX is case-insensitive */
    if (strcasecmp(a->str, "INBOX") == 0)
        return strdup("INBOX");
    size_t len = a->len;
    while (len > 1 && a->str[len - 1] == '/')
        len--;
    return strndup(a->str, len);
}

char *imap_session_mailbox_name(const struct imap_session *s, const struct imap_arg *a)
{
    if (!imap_is_utf8(s))
        return imap_mailbox_name(a);
    /* RFC 9051 §5.1 / RFC 6855 §3: a UTF-8 name, kept in the store's modified UTF-7 */
    char *name = imap_mailbox_name(a);
    if (!name || strcmp(name, "INBOX") == 0)
        return name;
    char *stored = imap_mailname_import(name, strlen(name));
    free(name);
    return stored;
}

void imap_write_mailbox(struct buf *out, const char *stored, bool is_utf8)
{
    char *name = is_utf8 ? imap_mailname_export(stored) : NULL;
    imap_write_mailbox_shown(out, name ? name : stored, is_utf8);
    free(name);
}

void imap_write_mailbox_shown(struct buf *out, const char *shown, bool is_utf8)
{
    size_t len = strlen(shown);
    /* RFC 9051 §4.3 / RFC 6855 §3: a UTF-8 session takes UTF-8 in quoted strings; others
     * get 8-bit names as literals (mime_write_string) */
    if (is_utf8 && imap_mailname_utf8_ok(shown, len)) {
        buf_append_byte(out, '"');
        for (size_t i = 0; i < len; i++) {
            if (shown[i] == '"' || shown[i] == '\\')
                buf_append_byte(out, '\\');
            buf_append_byte(out, shown[i]);
        }
        buf_append_byte(out, '"');
    } else {
        mime_write_string(out, shown);
    }
}

unsigned imap_flags_shown(const struct imap_job_ctx *ctx, unsigned flags)
{
    /* RFC 9051 Appendix E item 12: no \Recent for IMAP4rev2 */
    return ctx->is_rev2 ? flags & ~(unsigned)STORE_FLAG_RECENT : flags;
}

bool imap_resolve_set(struct store_mailbox *box, const char *set, bool is_uid, size_t **idx_r,
                      size_t *n_r)
{
    struct imap_seqset seq;
    *idx_r = NULL;
    *n_r = 0;
    if (set[0] == '\0') { /* an empty saved result (imap_searchres_expand) */
        *idx_r = malloc(sizeof **idx_r);
        return *idx_r != NULL;
    }
    if (strcmp(set, "$") == 0 || !imap_seqset_parse(set, &seq))
        return false;
    size_t count = store_mailbox_count(box);
    size_t *idx = malloc((count ? count : 1) * sizeof *idx);
    if (!idx) {
        imap_seqset_free(&seq);
        return false;
    }
    size_t n = 0;
    uint32_t star = 0;
    if (count > 0)
        star = is_uid ? store_mailbox_message(box, count - 1)->uid : (uint32_t)count;
    /* Numbers past the end match nothing (lenient: no BAD for a stale view). */
    for (size_t i = 0; i < count; i++) {
        uint32_t v = is_uid ? store_mailbox_message(box, i)->uid : (uint32_t)(i + 1);
        if (imap_seqset_contains(&seq, v, star))
            idx[n++] = i;
    }
    imap_seqset_free(&seq);
    *idx_r = idx;
    *n_r = n;
    return true;
}

void imap_write_uid_set(struct buf *out, const uint32_t *uids, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && uids[j + 1] == uids[j] + 1)
            j++;
        if (i > 0)
            buf_append_byte(out, ',');
        if (j > i)
            buf_printf(out, "%u:%u", uids[i], uids[j]);
        else
            buf_printf(out, "%u", uids[i]);
        i = j + 1;
    }
}

void imap_job_err(struct imap_job *j, const char *fmt, char *err)
{
    /* An error that names a file of the user's (an I/O failure of the store) is for the
     * admin's log, not for the client: the reply says so without the server's paths. */
    const char *home = j->ctx.user ? store_user_home(j->ctx.user) : NULL;
    if (err && home && *home && strstr(err, home)) {
        log_error("imap", "user=<%s>: %s", j->ctx.username ? j->ctx.username : "", err);
        buf_printf(&j->tagged,
                   "%s NO [SERVERBUG] Internal error occurred. Refer to server log for more "
                   "information.\r\n",
                   j->tag);
        free(err);
        return;
    }
    buf_printf(&j->tagged, "%s NO ", j->tag);
    buf_printf(&j->tagged, fmt, err ? err : "failed");
    buf_append_str(&j->tagged, "\r\n");
    free(err);
}

void imap_job_sync(struct imap_job *j)
{
    struct store_mailbox *box = j->ctx.box;
    struct store_sync_changes ch;
    memset(&ch, 0, sizeof ch);
    char *err = NULL;
    if (store_mailbox_sync_shared(box, j->ctx.sync_share, &ch, &err) < 0) {
        free(err);
        return;
    }
    /* RFC 3501 §7.4.1: each EXPUNGE renumbers the following messages; the store gives
     * the numbers in the order they must be sent. */
    imap_write_expunges(j, ch.expunged_seqs, ch.expunged_uids, ch.n_expunged);
    size_t count = store_mailbox_count(box);
    if (ch.n_new > 0 && j->ctx.is_rev2) {
        buf_printf(&j->out, "* %zu EXISTS\r\n", count); /* RFC 9051: no RECENT */
    } else if (ch.n_new > 0) {
        buf_printf(&j->out, "* %zu EXISTS\r\n", count);
        size_t recent = 0;
        for (size_t i = 0; i < count; i++)
            if (store_mailbox_message(box, i)->flags & STORE_FLAG_RECENT)
                recent++;
        buf_printf(&j->out, "* %zu RECENT\r\n", recent);
    }
    for (size_t i = 0; i < ch.n_flag_changed; i++) {
        size_t k = ch.flag_changed[i];
        if (k >= count)
            continue;
        const struct store_message *m = store_mailbox_message(box, k);
        imap_keywords_announce(&j->ctx, m->keywords, &j->out);
        buf_printf(&j->out, "* %zu FETCH (UID %u FLAGS ", k + 1, m->uid);
        imap_write_flags(&j->out, imap_flags_shown(&j->ctx, m->flags), m->keywords);
        /* RFC 7162 §3.1.4.1: unsolicited flag changes carry MODSEQ for CONDSTORE clients */
        if (j->ctx.is_condstore)
            buf_printf(&j->out, " MODSEQ (%llu)", (unsigned long long)m->modseq);
        buf_append_str(&j->out, ")\r\n");
    }
    store_sync_changes_free(&ch);
}

static int imap_u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void imap_write_expunges(struct imap_job *j, const uint32_t *seqs, const uint32_t *uids, size_t n)
{
    if (n == 0)
        return;
    /* RFC 5267 §4.3.4: the contexts' REMOVEFROM first, in the numbers before these */
    imap_updates_expunged(j, uids, n);
    if (!j->ctx.is_qresync) {
        for (size_t k = 0; k < n; k++)
            buf_printf(&j->out, "* %u EXPUNGE\r\n", seqs[k]);
        return;
    }
    /* RFC 7162 §3.2.10: once QRESYNC is enabled, expunges are "* VANISHED uid-set" */
    uint32_t *sorted = malloc(n * sizeof *sorted);
    if (!sorted) { /* out of memory: one VANISHED per message says the same */
        for (size_t k = 0; k < n; k++)
            buf_printf(&j->out, "* VANISHED %u\r\n", uids[k]);
        return;
    }
    memcpy(sorted, uids, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, imap_u32_cmp);
    buf_append_str(&j->out, "* VANISHED ");
    imap_write_uid_set(&j->out, sorted, n);
    buf_append_str(&j->out, "\r\n");
    free(sorted);
}

/* seqs ascending (as the view had them): EXPUNGE highest first, so that no number shifts
 * under the client (RFC 3501 §7.4.1), or one VANISHED. */
static void imap_write_expunges_desc(struct imap_job *j, const uint32_t *seqs,
                                     const uint32_t *uids, size_t n)
{
    uint32_t *rev = malloc((n ? n : 1) * sizeof *rev);
    if (!rev || j->ctx.is_qresync) {
        free(rev);
        if (j->ctx.is_qresync)
            imap_write_expunges(j, seqs, uids, n);
        return;
    }
    for (size_t k = 0; k < n; k++)
        rev[k] = seqs[n - 1 - k];
    imap_write_expunges(j, rev, uids, n);
    free(rev);
}

void imap_job_ok(struct imap_job *j, const char *text)
{
    buf_printf(&j->tagged, "%s OK %s\r\n", j->tag, text);
    j->is_ok = true;
}

/* ---- NOOP / CHECK ------------------------------------------------------------------- */

struct imap_noop_job {
    struct imap_job base;
    const char *text; /* static completion text */
};

static void imap_noop_work(struct imap_job *j)
{
    imap_job_ok(j, IMAP_JOB(imap_noop_job, j)->text);
}

static void imap_noop_submit(struct imap_session *s, const char *tag, const char *done)
{
    if (!s->box) {
        imap_reply(s, tag, "OK %s", done);
        return;
    }
    /* RFC 3501 §6.1.2: NOOP is how clients poll for new mail and flag changes. */
    struct imap_job *j =
        imap_job_new(s, tag, sizeof(struct imap_noop_job), imap_noop_work, NULL, NULL);
    if (!j)
        return;
    IMAP_JOB(imap_noop_job, j)->text = done;
    j->do_sync = true;
    j->is_sync_forced = true;
    imap_job_submit(s, j);
}

void imap_cmd_noop(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                   bool is_uid)
{
    imap_noop_submit(s, tag, "NOOP completed.");
}

void imap_cmd_check(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                    bool is_uid)
{
    imap_noop_submit(s, tag, "Check completed.");
}

/* ---- SELECT / EXAMINE --------------------------------------------------------------- */

struct imap_select_job {
    struct imap_job base;
    char *name; /* request: the mailbox */
    bool is_readonly, is_condstore;
    bool was_selected; /* QRESYNC session with a mailbox selected: [CLOSED] first */
    /* RFC 7162 §3.2.5 QRESYNC parameter: what the client knows */
    bool has_qresync;
    uint32_t qr_uidvalidity;
    uint64_t qr_modseq;
    char *qr_known_uids; /* NULL: all */
    char *given; /* RFC 9051 §6.3.2: the name as a UTF-8 client wrote it, when it is not
                    the normalized one (LIST ... OLDNAME); else NULL */
};

static void imap_select_cleanup(struct imap_job *j)
{
    free(IMAP_JOB(imap_select_job, j)->name);
    free(IMAP_JOB(imap_select_job, j)->qr_known_uids);
    free(IMAP_JOB(imap_select_job, j)->given);
}

/* RFC 9051 §6.3.2: IMAP4rev2's SELECT/EXAMINE tells the mailbox's LIST response, its
 * attributes as LIST gives them, and OLDNAME when the client's spelling was not the
 * normalized name (RFC 5258 §6 OLDNAME). */
static void imap_select_list(struct imap_job *j, const struct imap_select_job *sj)
{
    struct store_mailbox_info *list = NULL;
    size_t n = 0;
    char *err = NULL;
    const struct store_mailbox_info *mi = NULL;
    if (store_mailbox_list(j->ctx.user, &list, &n, &err) == 0)
        for (size_t i = 0; i < n && !mi; i++)
            if (strcmp(list[i].name, sj->name) == 0 ||
                (strcmp(sj->name, "INBOX") == 0 && strcasecmp(list[i].name, "INBOX") == 0))
                mi = &list[i];
    free(err);
    buf_append_str(&j->out, "* LIST (");
    if (mi) {
        buf_append_str(&j->out, mi->has_children ? "\\HasChildren" : "\\HasNoChildren");
        if (mi->subscribed)
            buf_append_str(&j->out, " \\Subscribed");
        if (mi->special_use)
            buf_printf(&j->out, " %s", mi->special_use);
    }
    buf_append_str(&j->out, ") \"/\" ");
    imap_write_mailbox(&j->out, sj->name, j->ctx.is_utf8);
    if (sj->given) {
        buf_append_str(&j->out, " (\"OLDNAME\" (");
        imap_write_mailbox_shown(&j->out, sj->given, true);
        buf_append_str(&j->out, "))");
    }
    buf_append_str(&j->out, "\r\n");
    store_mailbox_info_free(list, n);
}

/* RFC 7162 §3.2.5.1: what changed since the client's mod-sequence, when its UIDVALIDITY
 * is still the mailbox's: VANISHED (EARLIER) for what was expunged (of the known UIDs),
 * then FETCH (UID FLAGS MODSEQ) for what changed. */
static void imap_select_qresync(struct imap_job *j, const struct imap_select_job *sj)
{
    struct store_mailbox *box = j->ctx.box;
    if (sj->qr_uidvalidity != store_mailbox_uidvalidity(box))
        return;
    uint32_t *gone = NULL;
    size_t n_gone = 0;
    char *err = NULL;
    struct imap_seqset known = {0};
    bool has_known = sj->qr_known_uids && imap_seqset_parse(sj->qr_known_uids, &known);
    if (store_mailbox_vanished(box, sj->qr_modseq, &gone, &n_gone, &err) == 0) {
        uint32_t star = store_mailbox_uidnext(box) - 1;
        size_t k = 0;
        for (size_t i = 0; i < n_gone; i++)
            if (!has_known || imap_seqset_contains(&known, gone[i], star))
                gone[k++] = gone[i];
        if (k > 0) {
            buf_append_str(&j->out, "* VANISHED (EARLIER) ");
            imap_write_uid_set(&j->out, gone, k);
            buf_append_str(&j->out, "\r\n");
        }
    }
    free(err);
    free(gone);
    imap_seqset_free(&known);
    size_t count = store_mailbox_count(box);
    for (size_t i = 0; i < count; i++) {
        const struct store_message *m = store_mailbox_message(box, i);
        if (m->modseq <= sj->qr_modseq)
            continue;
        imap_keywords_announce(&j->ctx, m->keywords, &j->out);
        buf_printf(&j->out, "* %zu FETCH (UID %u FLAGS ", i + 1, m->uid);
        imap_write_flags(&j->out, imap_flags_shown(&j->ctx, m->flags), m->keywords);
        buf_printf(&j->out, " MODSEQ (%llu))\r\n", (unsigned long long)m->modseq);
    }
}

static void imap_select_work(struct imap_job *j)
{
    struct imap_select_job *sj = IMAP_JOB(imap_select_job, j);
    char *err = NULL;
    bool ro = sj->is_readonly;
    struct store_mailbox *box = j->ctx.box;
    j->ctx.box = NULL;
    /* RFC 7162 §3.2.11: the mailbox selected before is closed; QRESYNC clients are told */
    if (sj->was_selected)
        buf_append_str(&j->out, "* OK [CLOSED] Previous mailbox closed.\r\n");
    if (box) {
        /* The mailbox already selected (clients re-SELECT it to poll): bring the view up
         * to date instead of reading the whole mailbox again (issue 4). */
        if (store_mailbox_reopen(box, sj->name, ro, &err) != 0) {
            /* RFC 3501 §6.3.1: a SELECT first deselects (no expunge). */
            store_mailbox_close(box);
            box = NULL;
        }
        free(err);
        err = NULL;
    }
    if (!box && store_mailbox_open(j->ctx.user, sj->name, ro, &box, &err) < 0) {
        imap_job_err(j, "Mailbox doesn't exist: %s", err);
        return;
    }
    j->ctx.box = box;
    size_t count = store_mailbox_count(box);
    size_t recent = 0, first_unseen = 0;
    for (size_t i = 0; i < count; i++) {
        const struct store_message *m = store_mailbox_message(box, i);
        if (m->flags & STORE_FLAG_RECENT)
            recent++;
        if (!(m->flags & STORE_FLAG_SEEN) && first_unseen == 0)
            first_unseen = i + 1;
    }
    imap_keywords_select(&j->ctx, ro, &j->out);
    if (j->ctx.is_rev2) {
        /* RFC 9051 Appendix E items 10-12: LIST instead of RECENT and [UNSEEN] */
        buf_printf(&j->out, "* %zu EXISTS\r\n", count);
        imap_select_list(j, sj);
    } else {
        buf_printf(&j->out, "* %zu EXISTS\r\n* %zu RECENT\r\n", count, recent);
        if (first_unseen)
            buf_printf(&j->out, "* OK [UNSEEN %zu] First unseen.\r\n", first_unseen);
    }
    buf_printf(&j->out, "* OK [UIDVALIDITY %u] UIDs valid\r\n", store_mailbox_uidvalidity(box));
    buf_printf(&j->out, "* OK [UIDNEXT %u] Predicted next UID\r\n", store_mailbox_uidnext(box));
    /* RFC 7162 §3.1.2.1: a CONDSTORE server sends HIGHESTMODSEQ on every SELECT/EXAMINE */
    buf_printf(&j->out, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
               (unsigned long long)store_mailbox_highestmodseq(box));
    buf_append_str(&j->out, "* OK [MAILBOXID ("); /* RFC 8474 §4.2 */
    imap_write_mailboxid(&j->out, store_mailbox_uidvalidity(box));
    buf_append_str(&j->out, ")] Ok\r\n");
    buf_append_str(&j->out, "* OK [URLMECH INTERNAL] Ok\r\n"); /* RFC 4467 §6.1 */
    if (sj->has_qresync)
        imap_select_qresync(j, sj);
    buf_printf(&j->tagged, "%s OK [%s] %s completed.\r\n", j->tag, ro ? "READ-ONLY" : "READ-WRITE",
               ro ? "Examine" : "Select");
    j->is_ok = true;
}

static void imap_select_finish(struct imap_session *s, struct imap_job *j)
{
    struct imap_select_job *sj = IMAP_JOB(imap_select_job, j);
    free(s->box_name);
    s->box_name = NULL;
    s->has_pending_changes = false;
    if (!s->box) {
        s->state = IMAP_STATE_AUTH;
        return;
    }
    s->box_name = sj->name;
    sj->name = NULL;
    s->is_readonly = sj->is_readonly;
    s->state = IMAP_STATE_SELECTED;
    if (sj->is_condstore)
        s->is_condstore = true; /* SELECT mailbox (CONDSTORE), RFC 7162 §3.1.8 */
}

/* RFC 7162 §3.2.5: "QRESYNC (uidvalidity mod-sequence [known-uids [(seqs uids)]])".
 * The sequence match data is accepted and not needed (the index keeps tombstones). */
static bool imap_select_qresync_parse(const struct imap_arg *a, struct imap_select_job *sj)
{
    if (a->type != IMAP_ARG_LIST || a->n < 2 || a->n > 4)
        return false;
    const struct imap_arg *v = a->list;
    char *end;
    if (v[0].type != IMAP_ARG_ATOM || v[1].type != IMAP_ARG_ATOM || v[0].str[0] < '1' ||
        v[0].str[0] > '9' || v[1].str[0] < '1' || v[1].str[0] > '9')
        return false;
    unsigned long long uidv = strtoull(v[0].str, &end, 10);
    if (*end || uidv > UINT32_MAX)
        return false;
    unsigned long long modseq = strtoull(v[1].str, &end, 10);
    if (*end)
        return false;
    struct imap_seqset set;
    if (a->n >= 3) {
        if (v[2].type != IMAP_ARG_ATOM || !imap_seqset_parse(v[2].str, &set))
            return false;
        imap_seqset_free(&set);
        if (!(sj->qr_known_uids = strdup(v[2].str)))
            return false;
    }
    if (a->n == 4) {
        const struct imap_arg *m = &v[3];
        if (m->type != IMAP_ARG_LIST || m->n != 2 || m->list[0].type != IMAP_ARG_ATOM ||
            m->list[1].type != IMAP_ARG_ATOM || !imap_seqset_parse(m->list[0].str, &set))
            return false;
        imap_seqset_free(&set);
        if (!imap_seqset_parse(m->list[1].str, &set))
            return false;
        imap_seqset_free(&set);
    }
    sj->has_qresync = true;
    sj->qr_uidvalidity = (uint32_t)uidv;
    sj->qr_modseq = modseq;
    return true;
}

static void imap_select_common(struct imap_session *s, const char *tag, struct imap_arg *args,
                               size_t n, bool ro)
{
    const char *cmd = ro ? "EXAMINE" : "SELECT";
    char *name = n >= 1 && n <= 2 ? imap_session_mailbox_name(s, &args[0]) : NULL;
    if (!name || (n == 2 && (args[1].type != IMAP_ARG_LIST || args[1].n == 0))) {
        free(name);
        imap_reply(s, tag, "BAD Usage: %s mailbox [(CONDSTORE | QRESYNC (...))]", cmd);
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_select_job), imap_select_work,
                                      imap_select_finish, imap_select_cleanup);
    if (!j) {
        free(name);
        return;
    }
    struct imap_select_job *sj = IMAP_JOB(imap_select_job, j);
    sj->name = name;
    sj->is_readonly = ro;
    /* RFC 4466 select parameters: CONDSTORE (RFC 7162 §3.1.8), QRESYNC (§3.2.5) */
    for (size_t i = 0; n == 2 && i < args[1].n; i++) {
        const struct imap_arg *p = &args[1].list[i];
        if (imap_arg_is_atom(p, "CONDSTORE")) {
            sj->is_condstore = true;
        } else if (imap_arg_is_atom(p, "QRESYNC") && i + 1 < args[1].n && !sj->has_qresync) {
            /* §3.2.5: only after ENABLE QRESYNC */
            if (!s->is_qresync) {
                imap_job_discard_quiet(s, j);
                imap_reply(s, tag, "BAD QRESYNC is not enabled.");
                return;
            }
            if (!imap_select_qresync_parse(&args[1].list[++i], sj)) {
                imap_job_discard_quiet(s, j);
                imap_reply(s, tag, "BAD Invalid QRESYNC parameters.");
                return;
            }
        } else {
            imap_job_discard_quiet(s, j);
            imap_reply(s, tag, "BAD Unknown %s parameter.", cmd);
            return;
        }
    }
    /* RFC 7162 §3.2.11 and RFC 9051 §6.3.2: [CLOSED] for the mailbox selected before */
    sj->was_selected = s->box != NULL && (s->is_qresync || s->is_rev2);
    if (s->is_rev2 && imap_is_utf8(s) && strcmp(name, "INBOX") != 0) {
        /* the client's spelling, when it is not the normalized name (OLDNAME) */
        char *shown = imap_mailname_export(name);
        char *given = imap_mailbox_name(&args[0]);
        if (shown && given && strcmp(shown, given) != 0) {
            sj->given = given;
            given = NULL;
        }
        free(shown);
        free(given);
    }
    /* Stop reporting on the old mailbox at once. */
    free(s->box_name);
    s->box_name = NULL;
    imap_searchres_clear(s); /* RFC 5182 §2.1: a saved result is per selected mailbox */
    imap_updates_clear(s);
    imap_job_submit(s, j);
}

void imap_cmd_select(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    imap_select_common(s, tag, args, n, false);
}

void imap_cmd_examine(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                      bool is_uid)
{
    imap_select_common(s, tag, args, n, true);
}

/* ---- CLOSE / UNSELECT / EXPUNGE ----------------------------------------------------- */

struct imap_expunge_job {
    struct imap_job base;
    char *uid_set; /* UID EXPUNGE's set, NULL for all */
    bool is_close; /* CLOSE or UNSELECT: the view goes afterwards */
    bool is_expunge; /* expunge \Deleted (EXPUNGE, UID EXPUNGE, CLOSE) */
};

static void imap_expunge_cleanup(struct imap_job *j)
{
    free(IMAP_JOB(imap_expunge_job, j)->uid_set);
}

/* Expunge \Deleted messages (restricted to the job's UID set when given); with
 * report=true send EXPUNGE responses. */
static void imap_expunge_deleted(struct imap_job *j, bool report)
{
    struct store_mailbox *box = j->ctx.box;
    const char *uid_set = IMAP_JOB(imap_expunge_job, j)->uid_set;
    size_t count = store_mailbox_count(box);
    size_t *sel = NULL, n_sel = count;
    if (uid_set && !imap_resolve_set(box, uid_set, true, &sel, &n_sel)) {
        buf_printf(&j->tagged, "%s BAD Invalid UID set.\r\n", j->tag);
        return;
    }
    uint32_t *uids = malloc((n_sel ? n_sel : 1) * sizeof *uids);
    uint32_t *seqs = malloc((n_sel ? n_sel : 1) * sizeof *seqs);
    size_t n = 0;
    if (uids && seqs) {
        for (size_t k = 0; k < n_sel; k++) {
            size_t i = sel ? sel[k] : k;
            const struct store_message *m = store_mailbox_message(box, i);
            if (m->flags & STORE_FLAG_DELETED) {
                uids[n] = m->uid;
                seqs[n] = (uint32_t)(i + 1);
                n++;
            }
        }
    }
    free(sel);
    char *err = NULL;
    /* RFC 3501 EXPUNGE/CLOSE: unsynced, as Dovecot (store.h, ARCHITECTURE.md §4) */
    if (n > 0 && store_mailbox_expunge_uids_unsynced(box, uids, n, &err) < 0) {
        imap_job_err(j, "Expunge failed: %s", err);
        free(uids);
        free(seqs);
        return;
    }
    if (report && n > 0 && store_mailbox_count(box) < count) {
        /* The view already dropped them: report here, highest first, so no number
         * shifts under the client (RFC 3501 §7.4.1). */
        imap_write_expunges_desc(j, seqs, uids, n);
    }
    free(uids);
    free(seqs);
    j->is_ok = true;
}

static void imap_expunge_work(struct imap_job *j)
{
    if (j->ctx.is_readonly) {
        buf_printf(&j->tagged, "%s NO Mailbox is read-only.\r\n", j->tag);
        return;
    }
    imap_expunge_deleted(j, true);
    if (j->is_ok)
        buf_printf(&j->tagged, "%s OK Expunge completed.\r\n", j->tag);
}

void imap_cmd_expunge(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                      bool is_uid)
{
    if (is_uid && (n != 1 || args[0].type != IMAP_ARG_ATOM)) {
        imap_reply(s, tag, "BAD Usage: UID EXPUNGE uid-set");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_expunge_job), imap_expunge_work,
                                      NULL, imap_expunge_cleanup);
    if (!j)
        return;
    bool is_set_uid = true;
    if (is_uid &&
        !(IMAP_JOB(imap_expunge_job, j)->uid_set = imap_searchres_expand(s, args[0].str,
                                                                          &is_set_uid))) {
        imap_job_discard(s, j);
        return;
    }
    j->do_sync = true;
    j->is_sync_forced = true;
    imap_job_submit(s, j);
}

static void imap_close_work(struct imap_job *j)
{
    struct imap_expunge_job *ej = IMAP_JOB(imap_expunge_job, j);
    /* RFC 3501 §6.4.2: CLOSE expunges silently when the mailbox is read-write. */
    if (ej->is_expunge && !j->ctx.is_readonly)
        imap_expunge_deleted(j, false);
    buf_reset(&j->tagged);
    buf_reset(&j->out);
    store_mailbox_close(j->ctx.box);
    j->ctx.box = NULL;
    buf_printf(&j->tagged, "%s OK %s completed.\r\n", j->tag, ej->is_expunge ? "Close" : "Unselect");
}

static void imap_close_finish(struct imap_session *s, struct imap_job *j)
{
    free(s->box_name);
    s->box_name = NULL;
    imap_searchres_clear(s);
    imap_updates_clear(s);
    s->state = IMAP_STATE_AUTH;
}

static void imap_close_submit(struct imap_session *s, const char *tag, bool expunge)
{
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_expunge_job), imap_close_work,
                                      imap_close_finish, imap_expunge_cleanup);
    if (!j)
        return;
    IMAP_JOB(imap_expunge_job, j)->is_close = true;
    IMAP_JOB(imap_expunge_job, j)->is_expunge = expunge;
    imap_job_submit(s, j);
}

void imap_cmd_close(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                    bool is_uid)
{
    imap_close_submit(s, tag, true);
}

void imap_cmd_unselect(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                       bool is_uid)
{
    imap_close_submit(s, tag, false);
}

/* ---- CREATE / DELETE / RENAME / SUBSCRIBE ------------------------------------------ */

enum imap_mb_op { IMAP_MB_CREATE, IMAP_MB_DELETE, IMAP_MB_RENAME, IMAP_MB_SUB, IMAP_MB_UNSUB };

struct imap_mb_job {
    struct imap_job base;
    enum imap_mb_op op;
    char *name, *new_name; /* new_name: RENAME's target */
};

static void imap_mb_cleanup(struct imap_job *j)
{
    free(IMAP_JOB(imap_mb_job, j)->name);
    free(IMAP_JOB(imap_mb_job, j)->new_name);
}

static void imap_mb_work(struct imap_job *j)
{
    struct imap_mb_job *mj = IMAP_JOB(imap_mb_job, j);
    struct store_user *user = j->ctx.user;
    char *err = NULL;
    int r = -1;
    const char *done = "";
    switch (mj->op) {
    case IMAP_MB_CREATE:
        r = store_mailbox_create(user, mj->name, &err);
        done = "Create completed.";
        break;
    case IMAP_MB_DELETE:
        r = store_mailbox_delete(user, mj->name, &err);
        done = "Delete completed.";
        break;
    case IMAP_MB_RENAME:
        r = store_mailbox_rename(user, mj->name, mj->new_name, &err);
        done = "Rename completed.";
        break;
    case IMAP_MB_SUB:
    case IMAP_MB_UNSUB:
        r = store_mailbox_subscribe(user, mj->name, mj->op == IMAP_MB_SUB, &err);
        done = mj->op == IMAP_MB_SUB ? "Subscribe completed." : "Unsubscribe completed.";
        break;
    }
    struct store_status st;
    char *err2 = NULL;
    if (r == 0) {
        /* RFC 5465 §5.4-5.5: other sessions' NOTIFY hears of it (renaming INBOX leaves
         * an INBOX: the new name is a new mailbox) */
        static const int kinds[] = {STORE_CHANGE_CREATED, STORE_CHANGE_DELETED,
                                    STORE_CHANGE_RENAMED, STORE_CHANGE_SUBSCRIBED,
                                    STORE_CHANGE_UNSUBSCRIBED};
        bool is_inbox_rename = mj->op == IMAP_MB_RENAME && strcmp(mj->name, "INBOX") == 0;
        if (mj->op == IMAP_MB_RENAME && !is_inbox_rename)
            imap_notify_publish(j, STORE_CHANGE_RENAMED, mj->new_name, mj->name);
        else
            imap_notify_publish(j, is_inbox_rename ? STORE_CHANGE_CREATED : kinds[mj->op],
                                mj->op == IMAP_MB_RENAME ? mj->new_name : mj->name, NULL);
    }
    if (r < 0) {
        imap_job_err(j, "%s", err);
    } else if (mj->op == IMAP_MB_CREATE && store_mailbox_status(user, mj->name, &st, &err2) == 0) {
        /* RFC 8474 §4.1: CREATE tells the new mailbox's MAILBOXID */
        buf_printf(&j->tagged, "%s OK [MAILBOXID (", j->tag);
        imap_write_mailboxid(&j->tagged, st.uidvalidity);
        buf_printf(&j->tagged, ")] %s\r\n", done);
        j->is_ok = true;
    } else {
        imap_job_ok(j, done);
    }
    free(err2);
}

static void imap_mb_submit(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                           enum imap_mb_op op)
{
    size_t want = op == IMAP_MB_RENAME ? 2 : 1;
    char *a1 = n == want ? imap_session_mailbox_name(s, &args[0]) : NULL;
    char *a2 = n == want && want == 2 ? imap_session_mailbox_name(s, &args[1]) : NULL;
    if (!a1 || (want == 2 && !a2)) {
        free(a1);
        free(a2);
        imap_reply(s, tag, "BAD Invalid arguments.");
        return;
    }
    if ((op == IMAP_MB_CREATE || op == IMAP_MB_DELETE) && strcmp(a1, "INBOX") == 0) {
        imap_reply(s, tag, "NO INBOX always exists and cannot be %s.",
                   op == IMAP_MB_CREATE ? "created" : "deleted");
        free(a1);
        free(a2);
        return;
    }
    struct imap_job *j =
        imap_job_new(s, tag, sizeof(struct imap_mb_job), imap_mb_work, NULL, imap_mb_cleanup);
    if (!j) {
        free(a1);
        free(a2);
        return;
    }
    struct imap_mb_job *mj = IMAP_JOB(imap_mb_job, j);
    mj->op = op;
    mj->name = a1;
    mj->new_name = a2;
    j->do_sync = true;
    imap_job_submit(s, j);
}

void imap_cmd_create(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    imap_mb_submit(s, tag, args, n, IMAP_MB_CREATE);
}
void imap_cmd_delete(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    imap_mb_submit(s, tag, args, n, IMAP_MB_DELETE);
}
void imap_cmd_rename(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    imap_mb_submit(s, tag, args, n, IMAP_MB_RENAME);
}
void imap_cmd_subscribe(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                        bool is_uid)
{
    imap_mb_submit(s, tag, args, n, IMAP_MB_SUB);
}
void imap_cmd_unsubscribe(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                          bool is_uid)
{
    imap_mb_submit(s, tag, args, n, IMAP_MB_UNSUB);
}

/* ---- NAMESPACE --------------------------------------------------------------------- */

void imap_cmd_namespace(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                        bool is_uid)
{
    /* RFC 2342: one personal namespace, no prefix, "/" separator. */
    conn_write_str(s->c, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
    imap_reply(s, tag, "OK Namespace completed.");
}

/* ---- STATUS ------------------------------------------------------------------------- */

void imap_write_mailboxid(struct buf *out, uint32_t uidvalidity)
{
    /* RFC 8474 §4: objectid = 1*255(ALPHA / DIGIT / "_" / "-"). UIDVALIDITY values are
     * never handed out twice per user and survive RENAME: a mailbox's own id. */
    buf_printf(out, "M%08x", uidvalidity);
}

bool imap_write_threadid(struct buf *out, const char *msg, size_t len)
{
    /* RFC 8474 §5.2: the same THREADID for every message of a thread, in every mailbox,
     * for ever. A thread here is the messages that name one first message (mime.h
     * mime_thread_root), so the id follows from the message's own header: no state, no
     * renumbering when THREAD=REFERENCES would regroup. "T" + 64-bit FNV-1a of the root's
     * msg-id (objectid: 1*255 ALPHA/DIGIT/"_"/"-"). */
    char *root = mime_thread_root(msg, len);
    if (!root)
        return false;
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)root; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    free(root);
    return buf_printf(out, "T%016llx", (unsigned long long)h);
}

void imap_write_emailid(struct buf *out, uint32_t uidvalidity, uint32_t uid)
{
    /* a UID is never reused under a UIDVALIDITY: unique and immutable */
    buf_printf(out, "E%08x%08x", uidvalidity, uid);
}

time_t imap_message_savedate(const struct store_message *m)
{
    /* RFC 8514: when the message was saved to this mailbox: the time its file was made,
     * the leading "<seconds>." of the Maildir name every save (APPEND, COPY, delivery)
     * gives it; 0 (NIL) for a name another program made without one */
    const char *p = m->filename;
    time_t t = 0;
    size_t n = 0;
    while (p && *p >= '0' && *p <= '9' && n < 12) {
        t = t * 10 + (*p++ - '0');
        n++;
    }
    return p && *p == '.' && n >= 9 ? t : 0;
}

void imap_status_write(struct buf *out, const char *name, unsigned items,
                       const struct store_status *st, uint64_t appendlimit, bool is_utf8)
{
    buf_append_str(out, "* STATUS ");
    imap_write_mailbox(out, name, is_utf8);
    buf_append_str(out, " (");
    const char *sp = "";
    if (items & IMAP_ST_MESSAGES) {
        buf_printf(out, "%sMESSAGES %u", sp, st->messages);
        sp = " ";
    }
    if (items & IMAP_ST_RECENT) {
        buf_printf(out, "%sRECENT %u", sp, st->recent);
        sp = " ";
    }
    if (items & IMAP_ST_UIDNEXT) {
        buf_printf(out, "%sUIDNEXT %u", sp, st->uidnext);
        sp = " ";
    }
    if (items & IMAP_ST_UIDVALIDITY) {
        buf_printf(out, "%sUIDVALIDITY %u", sp, st->uidvalidity);
        sp = " ";
    }
    if (items & IMAP_ST_UNSEEN) {
        buf_printf(out, "%sUNSEEN %u", sp, st->unseen);
        sp = " ";
    }
    if (items & IMAP_ST_SIZE) {
        buf_printf(out, "%sSIZE %llu", sp, (unsigned long long)st->size);
        sp = " ";
    }
    if (items & IMAP_ST_HIGHESTMODSEQ) {
        buf_printf(out, "%sHIGHESTMODSEQ %llu", sp, (unsigned long long)st->highestmodseq);
        sp = " ";
    }
    if (items & IMAP_ST_APPENDLIMIT) { /* RFC 7889 §3.2 */
        buf_printf(out, "%sAPPENDLIMIT %llu", sp, (unsigned long long)appendlimit);
        sp = " ";
    }
    if (items & IMAP_ST_MAILBOXID) { /* RFC 8474 §4.3 */
        buf_printf(out, "%sMAILBOXID (", sp);
        imap_write_mailboxid(out, st->uidvalidity);
        buf_append_byte(out, ')');
        sp = " ";
    }
    if (items & IMAP_ST_DELETED) /* RFC 9051 §6.3.11 */
        buf_printf(out, "%sDELETED %u", sp, st->deleted);
    buf_append_str(out, ")\r\n");
}

struct imap_status_job {
    struct imap_job base;
    char *name;
    unsigned items; /* IMAP_ST_* */
};

static void imap_status_cleanup(struct imap_job *j)
{
    free(IMAP_JOB(imap_status_job, j)->name);
}

static void imap_status_work(struct imap_job *j)
{
    struct imap_status_job *sj = IMAP_JOB(imap_status_job, j);
    struct store_status st;
    char *err = NULL;
    if (store_mailbox_status(j->ctx.user, sj->name, &st, &err) < 0) {
        imap_job_err(j, "Mailbox doesn't exist: %s", err);
        return;
    }
    imap_status_write(&j->out, sj->name, sj->items, &st, j->ctx.max_append, j->ctx.is_utf8);
    imap_job_ok(j, "Status completed.");
}

void imap_cmd_status(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    char *name = n == 2 ? imap_session_mailbox_name(s, &args[0]) : NULL;
    if (!name || args[1].type != IMAP_ARG_LIST || args[1].n == 0) {
        free(name);
        imap_reply(s, tag, "BAD Usage: STATUS mailbox (items)");
        return;
    }
    unsigned items = 0;
    if (!imap_status_items_parse(&args[1], &items)) {
        free(name);
        imap_reply(s, tag, "BAD Unknown STATUS item.");
        return;
    }
    if (items & IMAP_ST_HIGHESTMODSEQ)
        imap_condstore_enable(s); /* RFC 7162 §3.1.10; enables CONDSTORE */
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_status_job), imap_status_work,
                                      NULL, imap_status_cleanup);
    if (!j) {
        free(name);
        return;
    }
    IMAP_JOB(imap_status_job, j)->name = name;
    IMAP_JOB(imap_status_job, j)->items = items;
    j->do_sync = true;
    imap_job_submit(s, j);
}

/* ---- COPY / MOVE -------------------------------------------------------------------- */

struct imap_copy_job {
    struct imap_job base;
    char *set, *dest;
    bool is_uid, is_move;
};

static void imap_copy_cleanup(struct imap_job *j)
{
    free(IMAP_JOB(imap_copy_job, j)->set);
    free(IMAP_JOB(imap_copy_job, j)->dest);
}

static void imap_copy_work(struct imap_job *j)
{
    struct imap_copy_job *cj = IMAP_JOB(imap_copy_job, j);
    struct store_mailbox *box = j->ctx.box;
    bool move = cj->is_move;
    size_t *idx = NULL, n = 0;
    if (!imap_resolve_set(box, cj->set, cj->is_uid, &idx, &n)) {
        buf_printf(&j->tagged, "%s BAD Invalid message set.\r\n", j->tag);
        return;
    }
    if (n == 0) {
        free(idx);
        imap_job_ok(j, move ? "No messages moved." : "No messages copied.");
        return;
    }
    if (move && j->ctx.is_readonly) {
        free(idx);
        buf_printf(&j->tagged, "%s NO Mailbox is read-only.\r\n", j->tag);
        return;
    }
    uint32_t *uids = malloc(n * sizeof *uids);
    uint32_t *seqs = malloc(n * sizeof *seqs);
    if (!uids || !seqs) {
        free(idx);
        free(uids);
        free(seqs);
        imap_job_err(j, "%s", NULL);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        uids[k] = store_mailbox_message(box, idx[k])->uid;
        seqs[k] = (uint32_t)(idx[k] + 1);
    }
    /* COPY adds to the user's usage; MOVE stays inside the same user's quota */
    uint64_t add_bytes = 0;
    for (size_t k = 0; k < n && !move; k++)
        add_bytes += store_mailbox_message(box, idx[k])->size;
    free(idx);
    if (add_bytes > 0 && !imap_quota_allows(j, add_bytes)) {
        free(uids);
        free(seqs);
        return;
    }
    size_t before = store_mailbox_count(box);
    uint32_t uidv = 0, *dest = NULL;
    char *err = NULL;
    if (store_mailbox_copy_uids(box, uids, n, cj->dest, move, &uidv, &dest, &err) < 0) {
        struct store_status st;
        char *err2 = NULL;
        if (store_mailbox_status(j->ctx.user, cj->dest, &st, &err2) < 0) {
            free(err2);
            free(err);
            buf_printf(&j->tagged, "%s NO [TRYCREATE] Mailbox doesn't exist: %s\r\n", j->tag,
                       cj->dest);
        } else {
            imap_job_err(j, "Copy failed: %s", err);
        }
        free(uids);
        free(seqs);
        return;
    }
    /* Messages another session expunged meanwhile were not copied (their dest UID is 0):
     * they are left out of both sets (RFC 4315 §3: nz-number), and when nothing was left
     * to copy the command says so (RFC 5530 EXPUNGEISSUED; RFC 2180 §4.4.1). */
    size_t n_done = 0;
    for (size_t k = 0; dest && k < n; k++) {
        if (dest[k] == 0)
            continue;
        uids[n_done] = uids[k];
        seqs[n_done] = seqs[k];
        dest[n_done] = dest[k];
        n_done++;
    }
    if (n_done == 0) {
        buf_printf(&j->tagged,
                   "%s NO [EXPUNGEISSUED] Some of the requested messages no longer exist.\r\n",
                   j->tag);
        free(dest);
        free(uids);
        free(seqs);
        return;
    }
    struct buf code;
    buf_init(&code, 0);
    buf_printf(&code, "COPYUID %u ", uidv);
    imap_write_uid_set(&code, uids, n_done);
    buf_append_byte(&code, ' ');
    imap_write_uid_set(&code, dest, n_done);
    if (move) {
        /* RFC 6851 §4.3: COPYUID in an untagged OK, then the EXPUNGEs */
        buf_printf(&j->out, "* OK [%s] Moved UIDs.\r\n", buf_cstr(&code));
        if (store_mailbox_count(box) < before)
            imap_write_expunges_desc(j, seqs, uids, n_done);
        buf_printf(&j->tagged, "%s OK Move completed.\r\n", j->tag);
    } else {
        buf_printf(&j->tagged, "%s OK [%s] Copy completed.\r\n", j->tag, buf_cstr(&code));
    }
    j->is_ok = true;
    buf_free(&code);
    free(dest);
    free(uids);
    free(seqs);
}

static void imap_copy_submit(struct imap_session *s, const char *tag, struct imap_arg *args,
                             size_t n, bool is_uid, bool move)
{
    char *dest =
        n == 2 && args[0].type == IMAP_ARG_ATOM ? imap_session_mailbox_name(s, &args[1]) : NULL;
    if (!dest) {
        imap_reply(s, tag, "BAD Usage: %s set mailbox", move ? "MOVE" : "COPY");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_copy_job), imap_copy_work, NULL,
                                      imap_copy_cleanup);
    if (!j) {
        free(dest);
        return;
    }
    struct imap_copy_job *cj = IMAP_JOB(imap_copy_job, j);
    cj->dest = dest;
    cj->is_uid = is_uid;
    cj->is_move = move;
    /* RFC 5182: "$" is the saved search result */
    if (!(cj->set = imap_searchres_expand(s, args[0].str, &cj->is_uid))) {
        imap_job_discard(s, j);
        return;
    }
    /* MOVE expunges: the sync may report; COPY changes nothing here (FETCH-like rules
     * do not apply to COPY, so pending changes may be reported too). */
    j->do_sync = true;
    j->is_sync_forced = move || (s->box_name && strcmp(s->box_name, dest) == 0);
    imap_job_submit(s, j);
}

void imap_cmd_copy(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                   bool is_uid)
{
    imap_copy_submit(s, tag, args, n, is_uid, false);
}

void imap_cmd_move(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                   bool is_uid)
{
    imap_copy_submit(s, tag, args, n, is_uid, true);
}
