/*
 * cmd_mail.c - POP3 TRANSACTION and UPDATE states (RFC 1939 §5, §6, §7): STAT, LIST,
 * UIDL, RETR, TOP, DELE, NOOP, RSET, QUIT.
 *
 * The maildrop is a snapshot taken at login: numbers and sizes never change during the
 * session (RFC 1939 §5). DELE only marks; QUIT removes the marked messages with
 * store_mailbox_expunge_uids(), which is durable before it returns, and only then is
 * "+OK" sent (DESIGN §2). A dropped connection deletes nothing.
 *
 * Long replies are streamed: LIST/UIDL write a batch of lines, RETR/TOP convert one chunk
 * of the file, then stop while CONN_OUTPUT_LOW_WATER bytes are queued and continue from
 * on_drained. A message is never held in memory whole.
 *
 * UIDL (RFC 1939 §7): pop3.uidl_format, by default Dovecot's "%08Xu%08Xv" (lower-case hex
 * of UID and UIDVALIDITY), or the POP3 UIDL Dovecot kept for a message moved in from it;
 * computed at login (cmd_auth.c), so values survive sessions and restarts and never
 * repeat.
 */
#include "pop3/session.h"

#include "core/conn.h"
#include "core/log.h"
#include "store/store.h"

#include <event2/buffer.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STREAM_CHUNK (64 * 1024)

/* ---- message numbers ---------------------------------------------------------------- */

/* Parse a message-number argument: false (reply sent) when invalid, absent or deleted. */
static bool msg_lookup(struct pop3_session *s, const char *arg, size_t len, size_t *index_r)
{
    uint64_t n;
    if (!pop3_number_parse(arg, len, &n)) {
        pop3_error(s, "-ERR Invalid message number.");
        return false;
    }
    if (n == 0 || n > s->n_msgs) {
        pop3_replyf(s, "-ERR There's no message %" PRIu64 ".", n);
        return false;
    }
    /* RFC 1939 §5: a message marked as deleted may not be referred to. */
    if (s->msgs[n - 1].is_deleted) {
        pop3_reply(s, "-ERR Message is deleted.");
        return false;
    }
    *index_r = (size_t)(n - 1);
    return true;
}

/* Split args expecting between min and max words; false (reply sent) otherwise. */
static bool args_expect(struct pop3_session *s, const char *args, size_t len, size_t min,
                        size_t max, struct pop3_args *a_r)
{
    if (!pop3_args_split(args, len, false, a_r) || a_r->n < min || a_r->n > max) {
        pop3_error(s, "-ERR Invalid arguments.");
        return false;
    }
    return true;
}

/* UIDL of message i, as computed at login (pop3.uidl_format, cmd_auth.c). */
static const char *msg_uidl(const struct pop3_session *s, size_t i)
{
    return s->uidls + s->msgs[i].uidl_offset;
}

/* ---- STAT, NOOP, RSET, DELE ------------------------------------------------------------ */

void pop3_cmd_stat(struct pop3_session *s, const char *args, size_t len)
{
    pop3_replyf(s, "+OK %zu %" PRIu64, s->n_live, s->live_size);
}

void pop3_cmd_noop(struct pop3_session *s, const char *args, size_t len)
{
    pop3_reply(s, "+OK");
}

void pop3_cmd_rset(struct pop3_session *s, const char *args, size_t len)
{
    /* RFC 1939 §5 RSET: unmark every message marked as deleted. */
    for (size_t i = 0; i < s->n_msgs; i++)
        s->msgs[i].is_deleted = false;
    s->n_live = s->n_msgs;
    s->live_size = s->total_size;
    s->n_del = 0;
    pop3_reply(s, "+OK");
}

void pop3_cmd_dele(struct pop3_session *s, const char *args, size_t len)
{
    struct pop3_args a;
    size_t i;
    if (!args_expect(s, args, len, 1, 1, &a) || !msg_lookup(s, a.v[0], a.len[0], &i))
        return;
    s->msgs[i].is_deleted = true;
    s->n_live--;
    s->live_size -= s->msgs[i].size;
    s->n_del++;
    pop3_reply(s, "+OK Marked to be deleted.");
}

/* ---- streaming ---------------------------------------------------------------------- */

void pop3_stream_abort(struct pop3_session *s)
{
    if (s->stream.fd >= 0)
        close(s->stream.fd);
    s->stream.fd = -1;
    s->stream.kind = POP3_STREAM_NONE;
}

/* LIST/UIDL: append lines for undeleted messages to a batch, then write it. */
static bool stream_lines(struct pop3_session *s)
{
    char batch[16 * 1024];
    size_t used = 0;
    while (s->stream.next < s->n_msgs && used + 64 < sizeof batch) {
        size_t i = s->stream.next++;
        if (s->msgs[i].is_deleted)
            continue; /* RFC 1939 §5: deleted messages are not listed */
        int n;
        if (s->stream.kind == POP3_STREAM_LIST) {
            n = snprintf(batch + used, sizeof batch - used, "%zu %" PRIu64 "\r\n", i + 1,
                         s->msgs[i].size);
        } else {
            n = snprintf(batch + used, sizeof batch - used, "%zu %s\r\n", i + 1, msg_uidl(s, i));
        }
        if (n > 0)
            used += (size_t)n;
    }
    if (s->stream.next >= s->n_msgs) {
        memcpy(batch + used, ".\r\n", 3);
        used += 3;
        conn_write(s->conn, batch, used);
        s->stream.kind = POP3_STREAM_NONE;
        return true;
    }
    conn_write(s->conn, batch, used);
    return false;
}

/* RETR/TOP: convert the next chunk of the file. The read is from a file the kernel most
 * likely has cached; v1 accepts this one read(2) on the loop (opening is in the workpool). */
static bool stream_message(struct pop3_session *s)
{
    /* Only the loop thread streams, one chunk at a time: one static buffer suffices. */
    static char in[STREAM_CHUNK];
    static char out[2 * STREAM_CHUNK + 8];
    struct pop3_stream *st = &s->stream;
    ssize_t n = 0;

    if (!st->conv.is_done) {
        do
            n = read(st->fd, in, sizeof in);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            /* The "+OK" is already out: the only honest thing left is to hang up. */
            log_error("pop3", "Read error on message %zu: user=<%s>: %s", st->msg_index + 1,
                      s->user, strerror(errno));
            pop3_stream_abort(s);
            s->close_reason = "Message read error";
            pop3_close(s);
            return false;
        }
    }
    if (n > 0) {
        size_t len = pop3_msg_feed(&st->conv, in, (size_t)n, out);
        conn_write(s->conn, out, len);
        if (!st->conv.is_done)
            return false;
    }
    size_t len = pop3_msg_finish(&st->conv, out);
    conn_write(s->conn, out, len);
    if (st->is_top) {
        s->n_top++;
        s->top_bytes += st->conv.out_total;
    } else {
        s->n_retr++;
        s->retr_bytes += st->conv.out_total;
        s->msgs[st->msg_index].is_retrieved = true;
    }
    pop3_stream_abort(s);
    return true;
}

bool pop3_stream_continue(struct pop3_session *s)
{
    /* Bounded by the output low-water mark: each turn queues output or finishes. */
    while (s->stream.kind != POP3_STREAM_NONE) {
        if (conn_output_length(s->conn) >= CONN_OUTPUT_LOW_WATER)
            return false; /* on_drained continues */
        bool is_finished = s->stream.kind == POP3_STREAM_MSG ? stream_message(s) : stream_lines(s);
        if (is_finished)
            return true;
        if (s->is_quitting)
            return false; /* read error closed the session */
    }
    return true;
}

/* Start a stream from a command handler or a job's done callback. */
static void stream_start(struct pop3_session *s, bool is_from_job)
{
    if (pop3_stream_continue(s)) {
        if (is_from_job)
            pop3_resume(s);
        return;
    }
    if (!is_from_job)
        conn_pause_read(s->conn); /* jobs paused already; on_drained resumes */
}

/* ---- LIST, UIDL ----------------------------------------------------------------------- */

void pop3_cmd_list(struct pop3_session *s, const char *args, size_t len)
{
    struct pop3_args a;
    size_t i;
    if (!args_expect(s, args, len, 0, 1, &a))
        return;
    if (a.n == 1) {
        if (msg_lookup(s, a.v[0], a.len[0], &i))
            pop3_replyf(s, "+OK %zu %" PRIu64, i + 1, s->msgs[i].size);
        return;
    }
    pop3_replyf(s, "+OK %zu messages:", s->n_live);
    s->stream.kind = POP3_STREAM_LIST;
    s->stream.next = 0;
    stream_start(s, false);
}

void pop3_cmd_uidl(struct pop3_session *s, const char *args, size_t len)
{
    struct pop3_args a;
    size_t i;
    if (!args_expect(s, args, len, 0, 1, &a))
        return;
    if (a.n == 1) {
        if (msg_lookup(s, a.v[0], a.len[0], &i)) {
            pop3_replyf(s, "+OK %zu %s", i + 1, msg_uidl(s, i));
        }
        return;
    }
    pop3_reply(s, "+OK");
    s->stream.kind = POP3_STREAM_UIDL;
    s->stream.next = 0;
    stream_start(s, false);
}

/* ---- RETR, TOP: open the file in the workpool, then stream ------------------------------ */

void pop3_prefetch_clear(struct pop3_session *s)
{
    for (size_t k = 0; k < s->n_prefetch; k++)
        close(s->prefetch[k].fd);
    s->n_prefetch = 0;
}

/* The file of message index if it was opened ahead (ownership passes), else -1. */
static int prefetch_take(struct pop3_session *s, size_t index)
{
    for (size_t k = 0; k < s->n_prefetch; k++) {
        if (s->prefetch[k].index == index) {
            int fd = s->prefetch[k].fd;
            s->prefetch[k] = s->prefetch[--s->n_prefetch];
            return fd;
        }
    }
    return -1;
}

static bool is_prefetched(const struct pop3_session *s, size_t index)
{
    for (size_t k = 0; k < s->n_prefetch; k++)
        if (s->prefetch[k].index == index)
            return true;
    return false;
}

/* Peek (without consuming) at the RETR commands pipelined behind the current one. */
static size_t peek_pipelined_retr(struct pop3_session *s, size_t *list, size_t n_list, size_t max)
{
    struct evbuffer *in = conn_input(s->conn);
    size_t avail = evbuffer_get_length(in);
    size_t window = avail < 4096 ? avail : 4096;
    if (window == 0 || s->lines.is_discarding)
        return n_list;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)window);
    struct pop3_lines st = {0};
    size_t off = 0;
    while (p != NULL && n_list < max && off < window) {
        size_t len = 0, used = 0;
        struct pop3_command cmd;
        struct pop3_args a;
        uint64_t n;
        if (pop3_line_next(&st, p + off, window - off, POP3_LINE_MAX, &len, &used) !=
                POP3_LINE_OK ||
            !pop3_command_parse(p + off, len, &cmd) || cmd.verb != POP3_VERB_RETR ||
            !pop3_args_split(cmd.args, cmd.args_len, false, &a) || a.n != 1 ||
            !pop3_number_parse(a.v[0], a.len[0], &n) || n == 0 || n > s->n_msgs ||
            s->msgs[n - 1].is_deleted)
            break;
        off += used;
        bool is_listed = is_prefetched(s, (size_t)(n - 1));
        for (size_t k = 0; k < n_list && !is_listed; k++)
            is_listed = list[k] == (size_t)(n - 1);
        if (!is_listed)
            list[n_list++] = (size_t)(n - 1);
    }
    return n_list;
}

struct open_job {
    struct job job;          /* first (core/job.h) */
    struct pop3_maildrop md; /* moved in for the job, back in open_done */
    bool is_top;
    uint64_t top_lines;
    size_t n; /* [0] is the message asked for; the rest ahead */
    size_t index[POP3_PREFETCH_MAX + 1];
    int fd[POP3_PREFETCH_MAX + 1];
    char *error;
};

static void open_work(struct job *job)
{
    struct open_job *j = (struct open_job *)job;
    for (size_t k = 0; k < j->n; k++) {
        char *error = NULL;
        if (store_message_open(j->md.box, j->index[k], &j->fd[k], &error) != 0) {
            j->fd[k] = -1;
            if (k == 0)
                j->error = error;
            else
                free(error);
        }
    }
}

/* Reply "+OK" and start streaming message index from fd. */
static void message_begin(struct pop3_session *s, size_t index, bool is_top, uint64_t lines, int fd,
                          bool is_from_job)
{
    struct pop3_stream *st = &s->stream;
    st->kind = POP3_STREAM_MSG;
    st->fd = fd;
    st->msg_index = index;
    st->is_top = is_top;
    if (is_top) {
        pop3_msg_init_top(&st->conv, lines);
        pop3_reply(s, "+OK");
    } else {
        pop3_msg_init(&st->conv);
        /* The size LIST said: what follows less the byte-stuffing (see parse.h). */
        pop3_replyf(s, "+OK %" PRIu64 " octets", s->msgs[index].size);
    }
    stream_start(s, is_from_job);
}

static void open_done(void *session, struct job *job)
{
    struct open_job *j = (struct open_job *)job;
    struct pop3_session *s = session;
    bool is_alive = s != NULL;
    if (is_alive) {
        pop3_job_finish(s);
        s->md = j->md; /* the maildrop comes back */
    } else {
        pop3_maildrop_close(&j->md); /* no deletion: only QUIT deletes (RFC 1939 §6) */
    }
    /* Keep the files opened ahead (bounded table); close what does not fit. */
    for (size_t k = 1; k < j->n; k++) {
        if (j->fd[k] < 0)
            continue;
        if (is_alive && s->n_prefetch < POP3_PREFETCH_MAX) {
            s->prefetch[s->n_prefetch].index = j->index[k];
            s->prefetch[s->n_prefetch].fd = j->fd[k];
            s->n_prefetch++;
        } else {
            close(j->fd[k]);
        }
    }
    if (!is_alive) {
        if (j->fd[0] >= 0)
            close(j->fd[0]);
        free(j->error);
        free(j);
        return;
    }
    if (j->fd[0] < 0) {
        /* Removed behind our back (IMAP EXPUNGE, another program). */
        log_info("pop3", "Cannot open message %zu: user=<%s>: %s", j->index[0] + 1, s->user,
                 j->error != NULL ? j->error : "unknown error");
        pop3_reply(s, "-ERR Message has been removed from the server.");
        free(j->error);
        free(j);
        pop3_resume(s);
        return;
    }
    size_t index = j->index[0];
    bool is_top = j->is_top;
    uint64_t lines = j->top_lines;
    int fd = j->fd[0];
    free(j->error);
    free(j);
    message_begin(s, index, is_top, lines, fd, true);
}

static void message_send(struct pop3_session *s, size_t index, bool is_top, uint64_t lines)
{
    int fd = prefetch_take(s, index);
    if (fd >= 0) {
        message_begin(s, index, is_top, lines, fd, false);
        return;
    }
    struct open_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        pop3_reply(s, "-ERR [SYS/TEMP] Out of memory.");
        return;
    }
    job_init(&j->job, s->handle, open_work, open_done);
    /* no descriptor until open_work opens one: a job cancelled before it ran (its client
     * left) must not close descriptor 0 in open_done */
    for (size_t k = 0; k < POP3_PREFETCH_MAX + 1; k++)
        j->fd[k] = -1;
    j->md = s->md; /* moved in; back in open_done */
    memset(&s->md, 0, sizeof s->md);
    j->is_top = is_top;
    j->top_lines = lines;
    j->index[0] = index;
    j->n = 1;
    if (!is_top)
        j->n = peek_pipelined_retr(s, j->index, 1, POP3_PREFETCH_MAX + 1 - s->n_prefetch);
    pop3_job_start(s, &j->job);
}

void pop3_cmd_retr(struct pop3_session *s, const char *args, size_t len)
{
    struct pop3_args a;
    size_t i;
    if (!args_expect(s, args, len, 1, 1, &a) || !msg_lookup(s, a.v[0], a.len[0], &i))
        return;
    message_send(s, i, false, 0);
}

void pop3_cmd_top(struct pop3_session *s, const char *args, size_t len)
{
    struct pop3_args a;
    size_t i;
    uint64_t lines = 0;
    /* RFC 1939 §7: TOP msg n. Seed 001 shows "TOP 7214" answered with the header alone,
     * so a missing n is taken as 0, as that server did. */
    if (!args_expect(s, args, len, 1, 2, &a))
        return;
    if (a.n == 2 && !pop3_number_parse(a.v[1], a.len[1], &lines)) {
        pop3_error(s, "-ERR Invalid number of lines.");
        return;
    }
    if (!msg_lookup(s, a.v[0], a.len[0], &i))
        return;
    message_send(s, i, true, lines);
}

/* ---- QUIT: the UPDATE state ------------------------------------------------------------ */

struct quit_job {
    struct job job; /* first; essential: runs even if the client left after QUIT */
    struct pop3_maildrop md;
    uint32_t *uids; /* marked for deletion */
    size_t n_uids;
    char *user; /* for the change notification */
    int rc;
    char *error;
};

/* Workpool thread: remove the marked messages durably (RFC 1939 §6 UPDATE), unlock,
 * close. No \Seen flags are set for RETR'd messages (Dovecot's pop3_no_flag_updates=yes):
 * in the store a flag change is a rename plus a directory fsync per message, which made
 * QUIT after a 10,000-message download take ~18 s, and doing it after the reply made the
 * next session's file names stale. */
static void quit_work(struct job *job)
{
    struct quit_job *j = (struct quit_job *)job;
    j->rc = 0;
    if (j->n_uids > 0)
        j->rc = store_mailbox_expunge_uids(j->md.box, j->uids, j->n_uids, &j->error);
    pop3_maildrop_close(&j->md);
}

static void quit_done(void *session, struct job *job)
{
    struct quit_job *j = (struct quit_job *)job;
    struct pop3_session *s = session;
    bool is_alive = s != NULL;
    if (is_alive)
        pop3_job_finish(s);
    else if (j->rc != 0)
        log_error("pop3", "QUIT could not delete messages: user=<%s>: %s", j->user,
                  j->error != NULL ? j->error : "unknown error");
    if (j->rc == 0 && j->n_uids > 0 && j->user != NULL)
        store_notify_publish(j->user, "INBOX"); /* IMAP sessions learn of the expunge */
    if (is_alive) {
        if (j->rc != 0) {
            log_error("pop3", "QUIT could not delete messages: user=<%s>: %s", s->user,
                      j->error != NULL ? j->error : "unknown error");
            /* RFC 1939 §6: "-ERR some deleted messages not removed". */
            pop3_reply(s, "-ERR [SYS/TEMP] Some deleted messages were not removed.");
        } else {
            s->has_deleted_on_quit = j->n_uids > 0;
            pop3_reply(s,
                       j->n_uids > 0 ? "+OK Logging out, messages deleted." : "+OK Logging out.");
        }
    }
    free(j->uids);
    free(j->user);
    free(j->error);
    free(j);
    if (is_alive)
        pop3_close(s); /* last use of s: close() may free it */
}

void pop3_cmd_quit(struct pop3_session *s, const char *args, size_t len)
{
    if (s->state != POP3_STATE_TRANSACTION) {
        pop3_reply(s, "+OK Logging out.");
        pop3_close(s);
        return;
    }
    /* RFC 1939 §6: QUIT in TRANSACTION enters UPDATE. */
    s->state = POP3_STATE_UPDATE;
    pop3_prefetch_clear(s);
    size_t n_del = s->n_msgs - s->n_live;
    struct quit_job *j = calloc(1, sizeof *j);
    if (j != NULL) {
        j->uids = calloc(n_del > 0 ? n_del : 1, sizeof *j->uids);
        j->user = strdup(s->user);
    }
    if (j == NULL || j->uids == NULL || j->user == NULL) {
        if (j != NULL) {
            free(j->uids);
            free(j->user);
            free(j);
        }
        pop3_reply(s, "-ERR [SYS/TEMP] Out of memory, nothing deleted.");
        pop3_close(s);
        return;
    }
    for (size_t i = 0; i < s->n_msgs; i++)
        if (s->msgs[i].is_deleted)
            j->uids[j->n_uids++] = s->msgs[i].uid;
    /* The job owns the maildrop from here: it is released even if the peer vanishes, and
     * the deletions happen even then (the client said QUIT: RFC 1939 §6 UPDATE). */
    job_init(&j->job, s->handle, quit_work, quit_done);
    j->job.is_essential = true;
    j->md = s->md;
    memset(&s->md, 0, sizeof s->md);
    s->is_quitting = true;
    pop3_job_start(s, &j->job);
}
