/*
 * append.c - APPEND (RFC 3501 §6.3.11) and MULTIAPPEND (RFC 3502): one or several messages
 * in one command, answered with APPENDUID (RFC 4315 §3, a UID set for several); REPLACE
 * (RFC 8508): an APPEND that then expunges one message of the selected mailbox.
 *
 * The whole command, literals included, is read before it runs (session.c): big literals
 * went to the session's spill file, each at its own offset; the others are in the
 * argument tree and are taken over without copying. One message or several, they go to
 * store_mailbox_append_many, which stores all of them or none and returns only when all
 * are durable. A CATENATE message (RFC 4469) is put together in the job from its text
 * parts and the octets its URLs name (imap/urlauth.c), then stored like any other.
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
#include "imap/url.h"
#include "store/mime.h"
#include "store/store.h"

/* A piece of a CATENATE message (RFC 4469): text of the command (owned, or in the spill
 * file) or a URL whose octets are read when the job runs. */
struct imap_catenate_part {
    char *url; /* NULL: text */
    char *data;
    size_t len;
    bool is_external;
    uint64_t offset;
};

/* One message of the command: its bytes (owned, or in the spill file), or the parts it is
 * made of (CATENATE), flags and date. */
struct imap_append_msg {
    struct imap_catenate_part *parts; /* CATENATE, else NULL */
    size_t n_parts;
    unsigned flags;
    char **keywords;
    time_t internaldate;
    char *data; /* in memory (owned), or NULL when in the spill file */
    size_t len;
    bool is_external;
    uint64_t offset; /* in the spill file */
};

struct imap_append_job {
    struct imap_job base;
    char *name; /* the mailbox */
    struct imap_append_msg *msgs;
    size_t n;
    int fd; /* the command's spill file, -1 none */
    /* RFC 8508 REPLACE: the selected mailbox's message the new one replaces */
    bool is_replace;
    uint32_t replace_uid;
};

static void imap_append_cleanup(struct imap_job *j)
{
    struct imap_append_job *aj = IMAP_JOB(imap_append_job, j);
    for (size_t i = 0; i < aj->n; i++) {
        imap_keywords_free(aj->msgs[i].keywords);
        free(aj->msgs[i].data);
        for (size_t k = 0; k < aj->msgs[i].n_parts; k++) {
            free(aj->msgs[i].parts[k].url);
            free(aj->msgs[i].parts[k].data);
        }
        free(aj->msgs[i].parts);
    }
    free(aj->msgs);
    free(aj->name);
    if (aj->fd >= 0)
        close(aj->fd);
}

/* The store's refusal: its response code as it is ("[TRYCREATE] Mailbox doesn't exist",
 * RFC 3501 §6.3.11; "[OVERQUOTA] ...", RFC 9208 §4.3), else "Append failed: reason". */
static void imap_append_fail(struct imap_job *j, char *err)
{
    if (err && err[0] == '[')
        imap_job_err(j, "%s", err);
    else
        imap_job_err(j, "Append failed: %s", err);
}

/* Has the message's header section (up to the first empty line) an 8-bit octet? */
static bool imap_header_has_8bit(const char *data, size_t len)
{
    bool at_line_start = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c >= 0x80)
            return true;
        if (at_line_start && (c == '\n' || (c == '\r' && i + 1 < len && data[i + 1] == '\n')))
            return false; /* the empty line: the body follows */
        at_line_start = c == '\n';
    }
    return false;
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

/* Pool thread: RFC 4469 §5, the message a CATENATE makes, its text and URL parts joined
 * into out (at most the APPEND size limit). false with the tagged NO written: [BADURL url]
 * for a URL that is invalid or names nothing the user may read, [TOOBIG] past the limit. */
static bool imap_catenate_build(struct imap_job *j, int spill_fd, const struct imap_append_msg *m,
                                struct buf *out)
{
    struct imap_url_reader r = {.auth = j->ctx.auth,
                                .user = j->ctx.user,
                                .username = j->ctx.username,
                                .now = time(NULL)};
    uint64_t max = j->ctx.max_append;
    for (size_t k = 0; k < m->n_parts; k++) {
        const struct imap_catenate_part *p = &m->parts[k];
        if (p->url) {
            char *err = NULL;
            int rc = imap_url_fetch(&r, p->url, strlen(p->url), max, out, &err);
            if (rc == IMAP_URL_OK) {
                free(err);
                continue;
            }
            if (rc == IMAP_URL_BAD) {
                struct buf code;
                buf_init(&code, 0);
                imap_write_badurl(&code, p->url);
                buf_printf(&j->tagged, "%s NO %s %s\r\n", j->tag, buf_cstr(&code),
                           err ? err : "Invalid URL");
                buf_free(&code);
                free(err);
            } else if (rc == IMAP_URL_TOOBIG) {
                free(err);
                buf_printf(&j->tagged, "%s NO [TOOBIG] Message too large.\r\n", j->tag);
            } else {
                imap_job_err(j, "Append failed: %s", err);
            }
            return false;
        }
        void *map = NULL;
        size_t map_size = 0;
        const char *text = p->data ? p->data : "";
        if (p->is_external &&
            !(text = imap_spill_map(spill_fd, p->offset, p->len, &map, &map_size))) {
            imap_job_err(j, "Append failed: %s", strdup("cannot read the message"));
            return false;
        }
        bool is_too_big = p->len > max || out->len > max - p->len;
        bool ok = is_too_big || p->len == 0 || buf_append(out, text, p->len);
        if (map)
            munmap(map, map_size);
        if (is_too_big) {
            buf_printf(&j->tagged, "%s NO [TOOBIG] Message too large.\r\n", j->tag);
            return false;
        }
        if (!ok) {
            imap_job_err(j, "Append failed: %s", strdup("out of memory"));
            return false;
        }
    }
    return true;
}

/* Pool thread: APPEND of one message is MULTIAPPEND of one (RFC 3502: all or none). */
static void imap_append_work(struct imap_job *j)
{
    struct imap_append_job *aj = IMAP_JOB(imap_append_job, j);
    size_t n = aj->n;
    struct store_append_message *msgs = calloc(n, sizeof *msgs);
    uint32_t *uids = calloc(n, sizeof *uids);
    void **maps = calloc(n, sizeof *maps);
    size_t *map_sizes = calloc(n, sizeof *map_sizes);
    struct buf *converted = calloc(n, sizeof *converted); /* zeroed: empty buffers */
    char *err = NULL;
    if (!msgs || !uids || !maps || !map_sizes || !converted) {
        imap_job_err(j, "Append failed: %s", strdup("out of memory"));
        goto out;
    }
    /* RFC 3501 §6.3.11: a missing target mailbox answers [TRYCREATE] before any CATENATE
     * URL is looked at (Dovecot's order; a client that creates and retries needs that) */
    for (size_t i = 0; i < n; i++) {
        struct store_status st;
        char *serr = NULL;
        if (!aj->msgs[i].parts)
            continue;
        if (store_mailbox_status(j->ctx.user, aj->name, &st, &serr) < 0 && serr &&
            strncmp(serr, "Mailbox doesn't exist", 21) == 0) {
            imap_job_err(j, "[TRYCREATE] %s", serr);
            goto out;
        }
        free(serr);
        break;
    }
    for (size_t i = 0; i < n; i++) {
        const struct imap_append_msg *m = &aj->msgs[i];
        msgs[i].src.fd = -1;
        msgs[i].src.data = m->data ? m->data : "";
        msgs[i].src.len = m->len;
        msgs[i].src.size = m->len;
        if (m->parts) {
            if (!imap_catenate_build(j, aj->fd, m, &converted[i]))
                goto out; /* the reply is written */
            msgs[i].src.data = converted[i].data ? converted[i].data : "";
            msgs[i].src.len = msgs[i].src.size = converted[i].len;
        } else if (m->is_external) {
            const char *p = aj->fd >= 0 ? imap_spill_map(aj->fd, m->offset, m->len, &maps[i],
                                                         &map_sizes[i])
                                        : NULL;
            if (!p) {
                imap_job_err(j, "Append failed: %s", strdup("cannot read the message"));
                goto out;
            }
            msgs[i].src.data = p;
        }
        /* RFC 6855 §4: UTF-8 header fields only from a client that enabled UTF-8
         * (UTF8=ACCEPT, or IMAP4rev2 whose messages may have them: RFC 9051 §4.3.1), when
         * imap.utf8_append_strict asks for it; by default stored as Dovecot does, so a
         * migration tool copying real-world mail loses none of it */
        if (j->ctx.is_utf8_append_strict && !j->ctx.is_utf8 &&
            imap_header_has_8bit(msgs[i].src.data, msgs[i].src.len)) {
            buf_printf(&j->tagged,
                       "%s NO 8-bit header fields need ENABLE UTF8=ACCEPT (RFC 6855).\r\n",
                       j->tag);
            goto out;
        }
        /* RFC 3516 §4.4: binary parts with NUL octets are kept in base64, so that
         * BODY[] can still send them (BINARY[] decodes them again) */
        if (memchr(msgs[i].src.data, '\0', msgs[i].src.len)) {
            struct buf b64;
            buf_init(&b64, 0);
            if (mime_binary_to_base64(msgs[i].src.data, msgs[i].src.len, &b64)) {
                buf_free(&converted[i]);
                converted[i] = b64;
                msgs[i].src.data = converted[i].data;
                msgs[i].src.len = msgs[i].src.size = converted[i].len;
            } else {
                buf_free(&b64);
            }
        }
        msgs[i].flags = m->flags;
        msgs[i].keywords = (const char *const *)m->keywords;
        msgs[i].internaldate = m->internaldate;
    }
    /* RFC 9208 §5.1: the quota must hold all of them, as they are stored all or none; the
     * store checks it inside its transaction (concurrent APPENDs cannot both pass) */
    uint64_t quota = 0;
    if (!imap_quota_limit(j, &quota))
        goto out;
    uint32_t uidv = 0;
    if (store_mailbox_append_many(j->ctx.user, aj->name, msgs, n, quota, &uidv, uids, &err) <
        0) {
        imap_append_fail(j, err);
        goto out;
    }
    if (aj->is_replace) {
        /* RFC 8508 §3.3: the new message's APPENDUID untagged, the old one expunged (as
         * MOVE does: EXPUNGE or VANISHED), then the tagged OK */
        buf_printf(&j->out, "* OK [APPENDUID %u %u] Replacement Message ID\r\n", uidv, uids[0]);
        /* the view keeps the message until the job's sync (forced), which reports it */
        if (store_mailbox_expunge_uids_unsynced(j->ctx.box, &aj->replace_uid, 1, &err) < 0) {
            imap_job_err(j, "Replace stored the new message but could not expunge: %s", err);
            goto out;
        }
        buf_printf(&j->tagged, "%s OK Replace completed.\r\n", j->tag);
        j->is_ok = true;
        goto out;
    }
    /* RFC 4315 §3 / RFC 3502 §6.3.11: APPENDUID uidvalidity uid-set, in append order */
    buf_printf(&j->tagged, "%s OK [APPENDUID %u ", j->tag, uidv);
    imap_write_uid_set(&j->tagged, uids, n);
    buf_append_str(&j->tagged, "] Append completed.\r\n");
    j->is_ok = true;
out:
    for (size_t i = 0; maps && i < n; i++)
        if (maps[i])
            munmap(maps[i], map_sizes[i]);
    for (size_t i = 0; converted && i < n; i++)
        buf_free(&converted[i]);
    free(converted);
    free(msgs);
    free(uids);
    free(maps);
    free(map_sizes);
}

/* Take a CATENATE list's parts into m: the URLs copied, the text literals taken over (or
 * their place in the spill file). false when out of memory. */
static bool imap_catenate_take(struct imap_append_msg *m, struct imap_arg *list)
{
    m->parts = calloc(list->n / 2, sizeof *m->parts);
    if (!m->parts)
        return false;
    for (size_t k = 0; k + 1 < list->n; k += 2) {
        struct imap_catenate_part *p = &m->parts[m->n_parts++];
        struct imap_arg *v = &list->list[k + 1];
        if (imap_arg_is_atom(&list->list[k], "URL")) {
            if (!(p->url = strndup(v->str, v->len)))
                return false;
        } else if (v->is_external) {
            p->is_external = true;
            p->offset = v->external_offset;
            p->len = v->len;
        } else {
            p->data = v->str; /* taken over without copying */
            p->len = v->len;
            v->str = NULL;
            v->len = 0;
        }
    }
    return true;
}

/* APPEND, or REPLACE of the selected mailbox's message replace_uid (0: APPEND). */
static void imap_append_submit(struct imap_session *s, const char *tag, struct imap_arg *args,
                               size_t n, uint32_t replace_uid)
{
    const char *cmd = replace_uid ? "REPLACE" : "APPEND";
    char *name = n >= 2 ? imap_session_mailbox_name(s, &args[0]) : NULL;
    if (!name) {
        imap_reply(s, tag, "BAD Usage: %s%s mailbox [(flags)] [date-time] literal", cmd,
                   replace_uid ? " message" : "");
        return;
    }
    struct imap_append_request r;
    const char *why = NULL;
    bool ok = imap_append_request_parse(args, n, &r, &why);
    if (ok && replace_uid && r.n_parts != 1) { /* RFC 8508: one message, no MULTIAPPEND */
        ok = false;
        why = "REPLACE takes one message";
    }
    if (!ok) {
        imap_append_request_free(&r); /* empty after a failed parse */
        free(name);
        imap_reply(s, tag, "BAD %s", why);
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_append_job), imap_append_work,
                                      NULL, imap_append_cleanup);
    struct imap_append_job *aj = j ? IMAP_JOB(imap_append_job, j) : NULL;
    if (aj) {
        aj->fd = -1;
        aj->name = name;
        aj->is_replace = replace_uid != 0;
        aj->replace_uid = replace_uid;
        aj->msgs = calloc(r.n_parts, sizeof *aj->msgs);
        if (!aj->msgs) {
            imap_job_discard(s, j);
            aj = NULL;
        }
    } else {
        free(name);
    }
    for (size_t i = 0; aj && i < r.n_parts; i++) {
        struct imap_append_part *p = &r.parts[i];
        struct imap_append_msg *m = &aj->msgs[i];
        struct imap_arg *data = (struct imap_arg *)p->data;
        m->flags = p->flags;
        m->keywords = p->keywords;
        p->keywords = NULL;
        m->internaldate = p->internaldate ? p->internaldate : time(NULL);
        aj->n++;
        if (p->catenate) {
            if (!imap_catenate_take(m, (struct imap_arg *)p->catenate)) {
                imap_job_discard(s, j);
                aj = NULL;
            }
            continue;
        }
        m->len = data->len;
        if (data->is_external) {
            m->is_external = true;
            m->offset = data->external_offset;
        } else {
            m->data = data->str; /* taken over without copying */
            data->str = NULL;
            data->len = 0;
        }
    }
    imap_append_request_free(&r);
    if (!aj)
        return;
    aj->fd = s->spill_fd; /* the job closes it */
    s->spill_fd = -1;
    j->do_sync = true;
    /* appended to the selected mailbox: EXISTS now; REPLACE: its EXPUNGE now (§3.3) */
    if (replace_uid || (s->box_name && strcmp(s->box_name, aj->name) == 0))
        j->is_sync_forced = true;
    imap_job_submit(s, j);
}

void imap_cmd_append(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    imap_append_submit(s, tag, args, n, 0);
}

void imap_cmd_replace(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                      bool is_uid)
{
    /* RFC 8508 §3: REPLACE message-number mailbox [flags] [date-time] literal; UID REPLACE
     * with a UID. The message must be in the selected mailbox, which must be writable. */
    char *end = NULL;
    unsigned long v = n >= 1 && args[0].type == IMAP_ARG_ATOM && args[0].str[0] >= '1' &&
                              args[0].str[0] <= '9'
                          ? strtoul(args[0].str, &end, 10)
                          : 0;
    if (!v || *end || v > UINT32_MAX) {
        imap_reply(s, tag, "BAD Usage: %sREPLACE message mailbox [(flags)] [date-time] literal",
                   is_uid ? "UID " : "");
        return;
    }
    if (s->is_readonly) {
        imap_reply(s, tag, "NO Mailbox is read-only.");
        return;
    }
    /* the view is the loop's while no job is in flight */
    size_t count = store_mailbox_count(s->box), i = 0;
    if (is_uid) {
        while (i < count && store_mailbox_message(s->box, i)->uid != v)
            i++;
    } else {
        i = v - 1;
    }
    if (i >= count) {
        imap_reply(s, tag, "NO No such message.");
        return;
    }
    imap_append_submit(s, tag, args + 1, n - 1, store_mailbox_message(s->box, i)->uid);
}
