/*
 * append.c - APPEND (RFC 3501 §6.3.11) and MULTIAPPEND (RFC 3502): one or several messages
 * in one command, answered with APPENDUID (RFC 4315 §3, a UID set for several).
 *
 * The whole command, literals included, is read before it runs (session.c): big literals
 * went to the session's spill file, each at its own offset; the others are in the
 * argument tree and are taken over without copying. A single message keeps the plain
 * path (store_mailbox_append); several go to store_mailbox_append_many, which stores all
 * of them or none and returns only when all are durable.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "imap/args.h"
#include "imap/session.h"
#include "store/store.h"

/* "tag NO [TRYCREATE] ..." when the mailbox is missing (RFC 3501 §6.3.11), else the
 * store's reason. */
static void imap_append_fail(struct imap_job *j, char *err)
{
    struct store_status st;
    char *err2 = NULL;
    if (store_mailbox_status(j->s->user, j->arg1, &st, &err2) < 0) {
        free(err2);
        free(err);
        buf_printf(&j->tagged, "%s NO [TRYCREATE] Mailbox doesn't exist: %s\r\n", j->tag, j->arg1);
        return;
    }
    imap_job_err(j, "Append failed: %s", err);
}

/* ---- one message -------------------------------------------------------------------- */

static void imap_append_work(struct imap_job *j)
{
    struct imap_session *s = j->s;
    struct store_source src = {.data = j->data.data ? j->data.data : "",
                               .len = j->data.len,
                               .fd = -1,
                               .size = j->data.len};
    if (j->fd >= 0) {
        /* a big message, spilled to a file while it arrived */
        src.data = NULL;
        src.len = 0;
        src.fd = j->fd;
        src.size = j->fd_size;
    }
    uint32_t uidv = 0, uid = 0;
    char *err = NULL;
    if (!imap_quota_allows(j, src.fd >= 0 ? src.size : src.len))
        return;
    if (store_mailbox_append(s->user, j->arg1, &src, j->flags, (const char *const *)j->keywords,
                             (time_t)j->number, &uidv, &uid, &err) < 0) {
        imap_append_fail(j, err);
        return;
    }
    /* RFC 4315 §3: APPENDUID uidvalidity uid */
    buf_printf(&j->tagged, "%s OK [APPENDUID %u %u] Append completed.\r\n", j->tag, uidv, uid);
    j->is_ok = true;
}

static void imap_append_single(struct imap_session *s, const char *tag, char *name,
                               struct imap_append_part *m)
{
    struct imap_job *j = imap_job_new(s, tag, imap_append_work, NULL);
    if (!j) {
        free(name);
        return;
    }
    j->arg1 = name;
    j->flags = m->flags;
    j->keywords = m->keywords;
    m->keywords = NULL;
    j->number = (int64_t)(m->internaldate ? m->internaldate : time(NULL));
    struct imap_arg *data = (struct imap_arg *)m->data;
    if (data->is_external && s->spill_fd >= 0) {
        j->fd = s->spill_fd; /* the only literal in the file: at offset 0 */
        j->fd_size = data->len;
        s->spill_fd = -1;
    }
    /* Take the literal's bytes without copying. */
    j->data.data = data->str;
    j->data.len = data->len;
    j->data.size = data->len + 1;
    data->str = NULL;
    data->len = 0;
    j->do_sync = true;
    if (s->box_name && strcmp(s->box_name, name) == 0)
        j->is_sync_forced = true; /* appended to the selected mailbox: EXISTS now */
    imap_job_submit(j);
}

/* ---- several messages (RFC 3502) ---------------------------------------------------- */

struct imap_multiappend_msg {
    unsigned flags;
    char **keywords;
    time_t internaldate;
    char *data; /* in memory (owned), or NULL when in the spill file */
    size_t len;
    bool is_external;
    uint64_t offset; /* in the spill file */
};

struct imap_multiappend {
    size_t n;
    struct imap_multiappend_msg *msgs;
};

static void imap_multiappend_free(void *ptr)
{
    struct imap_multiappend *ma = ptr;
    if (!ma)
        return;
    for (size_t i = 0; i < ma->n; i++) {
        imap_keywords_free(ma->msgs[i].keywords);
        free(ma->msgs[i].data);
    }
    free(ma->msgs);
    free(ma);
}

/* A read-only view of bytes [offset, offset + len) of fd; base/size for munmap. */
static const char *imap_spill_map(int fd, uint64_t offset, size_t len, void **base_r,
                                  size_t *size_r)
{
    long page = sysconf(_SC_PAGESIZE);
    uint64_t start = page > 0 ? offset - offset % (uint64_t)page : offset;
    size_t skip = (size_t)(offset - start);
    if (len == 0 || len > SIZE_MAX - skip)
        return NULL;
    void *p = mmap(NULL, len + skip, PROT_READ, MAP_PRIVATE, fd, (off_t)start);
    if (p == MAP_FAILED)
        return NULL;
    *base_r = p;
    *size_r = len + skip;
    return (const char *)p + skip;
}

static void imap_multiappend_work(struct imap_job *j)
{
    struct imap_multiappend *ma = j->ptr;
    struct store_append_message *msgs = calloc(ma->n, sizeof *msgs);
    uint32_t *uids = calloc(ma->n, sizeof *uids);
    void **maps = calloc(ma->n, sizeof *maps);
    size_t *map_sizes = calloc(ma->n, sizeof *map_sizes);
    char *err = NULL;
    if (!msgs || !uids || !maps || !map_sizes) {
        imap_job_err(j, "Append failed: %s", strdup("out of memory"));
        goto out;
    }
    for (size_t i = 0; i < ma->n; i++) {
        const struct imap_multiappend_msg *m = &ma->msgs[i];
        msgs[i].src.fd = -1;
        msgs[i].src.data = m->data ? m->data : "";
        msgs[i].src.len = m->len;
        msgs[i].src.size = m->len;
        if (m->is_external) {
            const char *p = j->fd >= 0
                                ? imap_spill_map(j->fd, m->offset, m->len, &maps[i], &map_sizes[i])
                                : NULL;
            if (!p) {
                imap_job_err(j, "Append failed: %s", strdup("cannot read the message"));
                goto out;
            }
            msgs[i].src.data = p;
        }
        msgs[i].flags = m->flags;
        msgs[i].keywords = (const char *const *)m->keywords;
        msgs[i].internaldate = m->internaldate;
    }
    /* RFC 9208 §5.1: the quota must hold all of them, as they are stored all or none */
    uint64_t add_bytes = 0;
    for (size_t i = 0; i < ma->n; i++)
        add_bytes += ma->msgs[i].len;
    if (!imap_quota_allows(j, add_bytes))
        goto out;
    uint32_t uidv = 0;
    if (store_mailbox_append_many(j->s->user, j->arg1, msgs, ma->n, &uidv, uids, &err) < 0) {
        imap_append_fail(j, err);
        goto out;
    }
    /* RFC 4315 §3 / RFC 3502 §6.3.11: APPENDUID uidvalidity uid-set, in append order */
    buf_printf(&j->tagged, "%s OK [APPENDUID %u ", j->tag, uidv);
    imap_write_uid_set(&j->tagged, uids, ma->n);
    buf_append_str(&j->tagged, "] Append completed.\r\n");
    j->is_ok = true;
out:
    for (size_t i = 0; maps && i < ma->n; i++)
        if (maps[i])
            munmap(maps[i], map_sizes[i]);
    free(msgs);
    free(uids);
    free(maps);
    free(map_sizes);
}

static void imap_append_many(struct imap_session *s, const char *tag, char *name,
                             struct imap_append_request *r)
{
    struct imap_multiappend *ma = calloc(1, sizeof *ma);
    if (ma)
        ma->msgs = calloc(r->n_parts, sizeof *ma->msgs);
    struct imap_job *j = ma && ma->msgs ? imap_job_new(s, tag, imap_multiappend_work, NULL) : NULL;
    if (!j) {
        imap_multiappend_free(ma);
        free(name);
        imap_reply(s, tag, "NO Out of memory.");
        return;
    }
    j->arg1 = name;
    j->ptr = ma;
    j->ptr_free = imap_multiappend_free;
    for (size_t i = 0; i < r->n_parts; i++) {
        struct imap_append_part *p = &r->parts[i];
        struct imap_multiappend_msg *m = &ma->msgs[i];
        struct imap_arg *data = (struct imap_arg *)p->data;
        m->flags = p->flags;
        m->keywords = p->keywords;
        p->keywords = NULL;
        m->internaldate = p->internaldate ? p->internaldate : time(NULL);
        m->len = data->len;
        if (data->is_external) {
            m->is_external = true;
            m->offset = data->external_offset;
        } else {
            m->data = data->str; /* taken over without copying */
            data->str = NULL;
            data->len = 0;
        }
        ma->n++;
    }
    j->fd = s->spill_fd; /* the job closes it */
    s->spill_fd = -1;
    j->do_sync = true;
    if (s->box_name && strcmp(s->box_name, name) == 0)
        j->is_sync_forced = true; /* appended to the selected mailbox: EXISTS now */
    imap_job_submit(j);
}

void imap_cmd_append(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    char *name = n >= 2 ? imap_mailbox_name(&args[0]) : NULL;
    if (!name) {
        imap_reply(s, tag, "BAD Usage: APPEND mailbox [(flags)] [date-time] literal");
        return;
    }
    struct imap_append_request r;
    const char *why = NULL;
    if (!imap_append_request_parse(args, n, &r, &why)) {
        free(name);
        imap_reply(s, tag, "BAD %s", why);
        return;
    }
    const struct imap_arg *first = r.parts[0].data;
    if (r.n_parts == 1 && (!first->is_external || first->external_offset == 0))
        imap_append_single(s, tag, name, &r.parts[0]);
    else
        imap_append_many(s, tag, name, &r);
    imap_append_request_free(&r);
}
