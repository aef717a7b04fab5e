/*
 * filter.c - the message stages of the listener's milters (smtp.milters on port 25,
 * submission.milters on 587/465) over a received message, at the start of its delivery
 * job, and what they decide applied to the job: headers and body rewritten, sender
 * changed, recipients added (resolved through the directory like RCPT TO) or removed,
 * the message refused, discarded or sent to the hold queue (quarantine).
 *
 * The earlier stages (connect, helo, mail, rcpt) were asked at their commands
 * (milters.c); the same conversations are moved into the job here for DATA, the header
 * fields, end of headers, the body and end of message, and moved back to the session in
 * the job's done callbacks (smtp_filter_give_back), ready for the next transaction. The
 * conversation is blocking I/O with per-milter timeouts on a pool thread (the milter
 * pool when there is one), so the event loop never waits on a milter.
 */
#include "auth/auth.h"
#include "core/config.h"
#include "core/log.h"
#include "milter/milter.h"
#include "smtp/delivery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct smtp_filter {
    struct milter_session *ms; /* the session's conversations, moved in (NULL: discarded) */
    bool is_discarded;         /* a milter discarded the message at MAIL or RCPT */
    struct auth_service *auth; /* thread-safe service handle, to resolve added recipients */
    uint64_t max_size;
    /* results */
    struct milter_outcome outcome;
    bool is_held;
    struct buf original; /* the message read back from the spill file */
    struct buf message;  /* the rewritten message, when a milter changed it */
};

struct smtp_filter *smtp_filter_prepare(struct smtp_session *s, const struct smtp_delivery_job *job,
                                        bool *is_oom_r)
{
    *is_oom_r = false;
    bool is_discarded = smtp_milter_is_discarded(s);
    struct milter_session *ms = is_discarded ? NULL : smtp_milter_take(s);
    if (!ms && !is_discarded)
        return NULL; /* no milter (left) to ask */
    struct smtp_filter *f = calloc(1, sizeof *f);
    if (!f) {
        smtp_milter_give_back(s, ms);
        *is_oom_r = true;
        return NULL;
    }
    f->ms = ms;
    f->is_discarded = is_discarded;
    f->auth = s->ctx->auth;
    f->max_size = s->cfg->smtp_max_message_size;
    buf_init(&f->original, 0);
    buf_init(&f->message, 0);
    (void)job;
    return f;
}

void smtp_filter_give_back(struct smtp_filter *f, struct smtp_session *s)
{
    if (f && f->ms) {
        smtp_milter_give_back(s, f->ms);
        f->ms = NULL;
    }
}

void smtp_filter_free(struct smtp_filter *f)
{
    if (!f)
        return;
    milter_session_free(f->ms);
    milter_outcome_free(&f->outcome);
    buf_free(&f->original);
    buf_free(&f->message);
    free(f);
}

bool smtp_filter_is_held(const struct smtp_filter *f)
{
    return f && f->is_held;
}

bool smtp_header_has_field(const char *data, size_t len, const char *field)
{
    const char *colon = strchr(field, ':');
    if (!colon || colon == field)
        return false;
    size_t name_len = (size_t)(colon - field);
    const char *want = colon + 1;
    while (*want == ' ' || *want == '\t')
        want++;
    size_t want_len = strlen(want);
    while (want_len && (want[want_len - 1] == ' ' || want[want_len - 1] == '\t'))
        want_len--;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        size_t line_len = end - pos;
        if (line_len && data[end - 1] == '\r')
            line_len--;
        if (line_len == 0)
            return false; /* the end of the header section */
        const char *line = data + pos;
        if (line_len > name_len && line[name_len] == ':' &&
            strncasecmp(line, field, name_len) == 0) {
            const char *v = line + name_len + 1;
            size_t vlen = line_len - name_len - 1;
            while (vlen && (*v == ' ' || *v == '\t'))
                v++, vlen--;
            if (vlen >= want_len && strncasecmp(v, want, want_len) == 0)
                return true;
        }
        pos = end + 1;
    }
    return false;
}

/* The first octets of the message (its header section, in practice). */
static size_t message_head(const struct smtp_delivery_job *job, char *buf, size_t size)
{
    if (job->src.fd < 0) {
        size_t n = job->src.len < size ? job->src.len : size;
        memcpy(buf, job->src.data, n);
        return n;
    }
    ssize_t r = pread(job->src.fd, buf, size, 0);
    return r > 0 ? (size_t)r : 0;
}

void smtp_filter_junk(struct smtp_delivery_job *job)
{
    bool is_spam = false;
    const char *why = NULL;
    if (job->is_junk_quarantine && job->filter && job->filter->is_held) {
        job->filter->is_held = false; /* Junk instead of the hold queue */
        is_spam = true;
        why = "milter quarantine";
    }
    if (!is_spam && job->junk_header && job->junk_header[0]) {
        static const size_t head_max = 64 * 1024;
        char *head = malloc(head_max);
        if (head) {
            size_t n = message_head(job, head, head_max);
            is_spam = smtp_header_has_field(head, n, job->junk_header);
            free(head);
        }
        why = job->junk_header;
    }
    if (!is_spam || job->n_local == 0)
        return;
    job->is_junk = true;
    for (size_t i = 0; i < job->n_local; i++)
        job->targets[i].mailbox = job->junk_mailbox;
    log_info("cleanup", "%s: spam (%s): local copies go to %s", job->queue_id, why,
             job->junk_mailbox);
}

bool smtp_filter_is_discarded(const struct smtp_filter *f)
{
    return f && f->outcome.verdict == MILTER_DISCARD;
}

const char *smtp_filter_reply(const struct smtp_filter *f)
{
    return f->outcome.reply;
}

const char *smtp_filter_why(const struct smtp_filter *f)
{
    return f->outcome.why;
}

/* ---- applying the outcome to the job -------------------------------------------------- */

/* "<a@b>" or "a@b" -> "a@b" in out (false when it does not fit or is empty). */
static bool bare_address(const char *in, char *out, size_t size)
{
    size_t len = strlen(in);
    if (len >= 2 && in[0] == '<' && in[len - 1] == '>') {
        in++;
        len -= 2;
    }
    if (len >= size)
        return false;
    memcpy(out, in, len);
    out[len] = '\0';
    return true;
}

static void local_remove(struct smtp_delivery_job *job, size_t i)
{
    free(job->local[i].user);
    free(job->local[i].home);
    free(job->local[i].orig_rcpt);
    free(job->local[i].orcpt);
    free(job->headers[i]);
    size_t rest = job->n_local - i - 1;
    memmove(&job->local[i], &job->local[i + 1], rest * sizeof *job->local);
    memmove(&job->headers[i], &job->headers[i + 1], rest * sizeof *job->headers);
    job->n_local--;
}

static void remote_remove(struct smtp_delivery_job *job, size_t i)
{
    free(job->remote[i]);
    if (job->remote_orcpt)
        free(job->remote_orcpt[i]);
    size_t rest = job->n_remote - i - 1;
    memmove(&job->remote[i], &job->remote[i + 1], rest * sizeof *job->remote);
    if (job->remote_notify)
        memmove(&job->remote_notify[i], &job->remote_notify[i + 1],
                rest * sizeof *job->remote_notify);
    if (job->remote_orcpt)
        memmove(&job->remote_orcpt[i], &job->remote_orcpt[i + 1], rest * sizeof *job->remote_orcpt);
    job->n_remote--;
}

static void rcpt_delete(struct smtp_delivery_job *job, const char *addr)
{
    for (size_t i = job->n_local; i-- > 0;)
        if (strcasecmp(job->local[i].orig_rcpt, addr) == 0)
            local_remove(job, i);
    for (size_t i = job->n_remote; i-- > 0;)
        if (strcasecmp(job->remote[i], addr) == 0)
            remote_remove(job, i);
}

/* The trace lines of a local copy (delivery.c's shape) for a recipient a milter added. */
static char *local_header(const struct smtp_delivery_job *job, const char *orig, const char *user)
{
    struct buf h;
    buf_init(&h, 0);
    buf_printf(&h, "Return-Path: <%s>\r\nX-Original-To: %s\r\nDelivered-To: %s\r\n%s",
               job->sender, orig, user, job->remote_header ? job->remote_header : "");
    return buf_steal(&h);
}

static bool remote_add(struct smtp_delivery_job *job, const char *addr)
{
    for (size_t i = 0; i < job->n_remote; i++)
        if (strcasecmp(job->remote[i], addr) == 0)
            return true;
    size_t n = job->n_remote + 1;
    char **r = realloc(job->remote, n * sizeof *r);
    if (!r)
        return false;
    job->remote = r;
    unsigned *notify = realloc(job->remote_notify, n * sizeof *notify);
    if (!notify)
        return false;
    job->remote_notify = notify;
    char **orcpt = realloc(job->remote_orcpt, n * sizeof *orcpt);
    if (!orcpt)
        return false;
    job->remote_orcpt = orcpt;
    if (!(job->remote[n - 1] = strdup(addr)))
        return false;
    job->remote_notify[n - 1] = 0;
    job->remote_orcpt[n - 1] = NULL;
    job->n_remote = n;
    return true;
}

static bool local_add(struct smtp_delivery_job *job, struct auth_service *auth, const char *orig,
                      const char *user)
{
    for (size_t i = 0; i < job->n_local; i++)
        if (strcasecmp(job->local[i].user, user) == 0)
            return true;
    struct auth_user u;
    if (auth_user_lookup(auth, user, &u) != 1)
        return false;
    size_t n = job->n_local + 1;
    struct smtp_local_target *l = realloc(job->local, n * sizeof *l);
    char **h = l ? realloc(job->headers, n * sizeof *h) : NULL;
    if (l)
        job->local = l;
    if (!h) {
        auth_user_free(&u);
        return false;
    }
    job->headers = h;
    struct smtp_local_target *t = &job->local[n - 1];
    memset(t, 0, sizeof *t);
    t->user = strdup(u.address);
    t->home = strdup(u.home);
    t->quota = u.quota;
    t->orig_rcpt = strdup(orig);
    job->headers[n - 1] = local_header(job, orig, u.address);
    auth_user_free(&u);
    job->n_local = n; /* freed with the job even when a strdup failed */
    return t->user && t->home && t->orig_rcpt && job->headers[n - 1];
}

/* A recipient a milter added: resolved like RCPT TO (aliases, catch-all). */
static void rcpt_add(struct smtp_filter *f, struct smtp_delivery_job *job, const char *addr)
{
    const char *at = strrchr(addr, '@');
    int is_local = at && f->auth ? auth_domain_is_local(f->auth, at + 1) : 0;
    if (is_local != 1) {
        if (!at || !remote_add(job, addr))
            log_warning("cleanup", "%s: milter: cannot add recipient <%s>", job->queue_id, addr);
        return;
    }
    struct auth_targets t;
    if (auth_resolve(f->auth, addr, &t) != 1) {
        log_warning("cleanup", "%s: milter: added recipient <%s> does not exist", job->queue_id,
                    addr);
        return;
    }
    for (size_t i = 0; i < t.n_local; i++)
        if (!local_add(job, f->auth, addr, t.local[i]))
            log_warning("cleanup", "%s: milter: cannot add <%s>", job->queue_id, t.local[i]);
    for (size_t i = 0; i < t.n_remote; i++)
        remote_add(job, t.remote[i]);
    auth_targets_free(&t);
}

/* The Return-Path line of each local copy follows a changed sender. */
static void sender_change(struct smtp_delivery_job *job, const char *addr)
{
    char *s = strdup(addr);
    if (!s)
        return;
    free(job->sender);
    job->sender = s;
    for (size_t i = 0; i < job->n_local; i++) {
        const char *rest = strstr(job->headers[i], "\r\n");
        struct buf h;
        buf_init(&h, 0);
        buf_printf(&h, "Return-Path: <%s>%s", addr, rest ? rest : "\r\n");
        char *nh = buf_steal(&h);
        if (nh) {
            free(job->headers[i]);
            job->headers[i] = nh;
        }
    }
}

/* Read a spilled message back into memory (the milters need it whole; it is within
 * smtp.max_message_size). */
static bool filter_load(struct smtp_filter *f, const struct smtp_delivery_job *job,
                        const char **data_r, size_t *len_r)
{
    if (job->src.fd < 0) {
        *data_r = job->src.data;
        *len_r = job->src.len;
        return true;
    }
    if (!buf_reserve(&f->original, job->src.size + 1))
        return false;
    uint64_t off = 0;
    while (off < job->src.size) {
        ssize_t r = pread(job->src.fd, f->original.data + off, job->src.size - off, (off_t)off);
        if (r <= 0)
            return false;
        off += (uint64_t)r;
    }
    f->original.len = off;
    *data_r = f->original.data;
    *len_r = f->original.len;
    return true;
}

bool smtp_filter_run(struct smtp_delivery_job *job)
{
    struct smtp_filter *f = job->filter;
    if (f->is_discarded) {
        f->outcome.verdict = MILTER_DISCARD;
        snprintf(f->outcome.why, sizeof f->outcome.why, "milter discarded it at MAIL or RCPT");
        return false;
    }
    const char *data;
    size_t len;
    if (!filter_load(f, job, &data, &len)) {
        f->outcome.verdict = MILTER_TEMPFAIL;
        snprintf(f->outcome.reply, sizeof f->outcome.reply, "451 4.3.0 Error: queue file read error");
        snprintf(f->outcome.why, sizeof f->outcome.why, "cannot read the message back");
        return false;
    }
    struct milter_message m = {.queue_id = job->queue_id, .data = data, .len = len};
    milter_session_message(f->ms, &m, &f->outcome);
    struct milter_outcome *o = &f->outcome;
    if (o->verdict != MILTER_ACCEPT)
        return false;

    /* envelope changes, in the order the milters sent them */
    bool has_content_change = o->has_new_body;
    char addr[ADDR_MAX_PATH + 1];
    for (size_t i = 0; i < o->n_changes; i++) {
        const struct milter_change *c = &o->changes[i];
        switch (c->kind) {
        case MILTER_ADD_RCPT:
            if (bare_address(c->name, addr, sizeof addr)) {
                log_info("cleanup", "%s: milter: add rcpt <%s>", job->queue_id, addr);
                rcpt_add(f, job, addr);
            }
            break;
        case MILTER_DEL_RCPT:
            if (bare_address(c->name, addr, sizeof addr)) {
                log_info("cleanup", "%s: milter: delete rcpt <%s>", job->queue_id, addr);
                rcpt_delete(job, addr);
            }
            break;
        case MILTER_CHANGE_FROM:
            if (bare_address(c->name, addr, sizeof addr)) {
                log_info("cleanup", "%s: milter: change sender to <%s>", job->queue_id, addr);
                sender_change(job, addr);
            }
            break;
        default:
            has_content_change = true;
            break;
        }
    }
    if (has_content_change) {
        if (milter_message_rewrite(data, len, o, f->max_size ? f->max_size : UINT64_MAX,
                                   &f->message) < 0) {
            o->verdict = MILTER_TEMPFAIL;
            snprintf(o->reply, sizeof o->reply, "452 4.3.4 Error: message too big after filtering");
            snprintf(o->why, sizeof o->why, "rewritten message too large");
            return false;
        }
        job->src = (struct store_source){.data = f->message.data ? f->message.data : "",
                                         .len = f->message.len,
                                         .fd = -1,
                                         .size = f->message.len};
    }
    /* the store's targets follow the (possibly changed) local recipients */
    free(job->targets);
    job->targets = calloc(job->n_local ? job->n_local : 1, sizeof *job->targets);
    if (!job->targets) {
        o->verdict = MILTER_TEMPFAIL;
        snprintf(o->reply, sizeof o->reply, "451 4.3.0 Error: out of memory");
        return false;
    }
    for (size_t i = 0; i < job->n_local; i++)
        job->targets[i] = (struct store_target){.user = job->local[i].user,
                                                .home = job->local[i].home,
                                                .quota = job->local[i].quota,
                                                .header = job->headers[i]};
    if (o->quarantine) {
        char why[200];
        snprintf(why, sizeof why, "%s", o->quarantine);
        log_info("cleanup", "%s: milter: hold: %s", job->queue_id, why);
        f->is_held = true;
    }
    if (job->n_local + job->n_remote == 0) {
        /* a milter removed every recipient: nothing to deliver, like a discard */
        o->verdict = MILTER_DISCARD;
        snprintf(o->why, sizeof o->why, "milter removed every recipient");
        return false;
    }
    return true;
}
