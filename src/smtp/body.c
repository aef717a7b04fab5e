/*
 * body.c - DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030) in the session: reading the
 * message through data.c, keeping it in memory up to SMTP_BODY_MEMORY_MAX and spilling
 * the rest to an unlinked temporary file in <data_dir>/tmp (O_TMPFILE, else mkstemp +
 * unlink), so 50 sessions of 20 MB each do not need 1 GB of memory.
 *
 * The spill file is written on the loop thread without fsync: page-cache writes are not
 * disk waits; durability is the store's and the queue's job (they fsync their copies).
 */
#include "core/config.h"
#include "core/log.h"
#include "smtp/session.h"

#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

/* Open an anonymous temporary file for a large message body. -1 on failure. A login
 * process has no data folder in its root: its spill file is a memfd, which it seals and
 * passes to the mail worker that delivers (smtp/remote.c). */
static int spill_open(const struct smtp_session *s)
{
    if (conn_is_login_process(s->c))
        return memfd_create("tern-message", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    return smtp_spill_file_open(s->cfg->data_dir ? s->cfg->data_dir : ".");
}

int smtp_spill_file_open(const char *data_dir)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tmp", data_dir);
    if (util_mkdir_p(dir, 0700) < 0)
        return -1;
#ifdef O_TMPFILE
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
#endif
    char path[4200];
    snprintf(path, sizeof path, "%s/smtp.XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -1;
    unlink(path); /* gone when closed, even after a crash */
    return fd;
}

/* Move the in-memory body to the spill file. */
static void spill_flush(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    if (t->has_body_error || t->body.len == 0)
        return;
    if (t->body_fd < 0) {
        t->body_fd = spill_open(s);
        if (t->body_fd < 0) {
            log_error("smtpd", "%s: cannot create temporary file in %s/tmp: %s", t->queue_id,
                      s->cfg->data_dir, strerror(errno));
            t->has_body_error = true;
            buf_reset(&t->body);
            return;
        }
    }
    if (util_write_all(t->body_fd, t->body.data, t->body.len) < 0) {
        log_error("smtpd", "%s: temporary file write error: %s", t->queue_id, strerror(errno));
        t->has_body_error = true;
    } else {
        t->body_fd_size += t->body.len;
    }
    buf_reset(&t->body);
}

void smtp_cmd_data(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (!s->txn.is_active) {
        smtp_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->txn.n_rcpt == 0) {
        smtp_reply(s, "503 5.5.1 Error: need RCPT command");
        return;
    }
    if (s->txn.is_bdat) {
        /* RFC 3030 §3: DATA and BDAT may not be mixed in one transaction. */
        smtp_reply(s, "503 5.5.1 Error: BDAT in progress");
        return;
    }
    if (cmd->arg_len) {
        smtp_reply(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    smtp_data_init(&s->txn.reader, s->cfg->smtp_max_message_size);
    buf_reset(&s->txn.body);
    s->input = SMTP_INPUT_DATA;
    smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* The whole message is in: check what the reader saw, then deliver. */
static void body_finish(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    s->input = SMTP_INPUT_COMMAND;
    if (t->reader.is_too_big) {
        /* RFC 1870 §6.2 / RFC 5321 §4.5.3.1.10 */
        char reply[SMTP_REPLY_MAX];
        snprintf(reply, sizeof reply, "552 5.3.4 Message size exceeds fixed limit");
        log_info("smtpd", "%s: reject: %s from %s: %s; from=<%s> proto=%s helo=<%s>",
                 t->has_queue_id ? t->queue_id : "NOQUEUE", t->is_bdat ? "BDAT" : "END-OF-MESSAGE",
                 s->peer, reply, t->from_text, s->is_esmtp ? "ESMTP" : "SMTP", s->helo);
        smtp_reply_message(s, t->n_rcpt, "%s", reply);
        smtp_txn_reset(t);
        return;
    }
    if (t->has_body_error) {
        smtp_reply_message(s, t->n_rcpt, "451 4.3.0 Error: queue file write error");
        smtp_txn_reset(t);
        return;
    }
    if (t->reader.n_received > SMTP_MAX_HOPS) {
        /* RFC 5321 §6.3: a mail loop. */
        smtp_reply_message(s, t->n_rcpt, "554 5.4.0 Error: too many hops");
        smtp_txn_reset(t);
        return;
    }
    if (t->reader.n_nul)
        log_info("smtpd", "%s: message contains %llu NUL octets", t->queue_id,
                 (unsigned long long)t->reader.n_nul);
    smtp_delivery_start(s);
}

void smtp_cmd_bdat(struct smtp_session *s, const struct smtp_command *cmd)
{
    uint64_t size;
    bool is_last;
    if (!smtp_parse_bdat(cmd->arg, cmd->arg_len, &size, &is_last)) {
        /* Without a size we cannot find the end of the chunk: what follows is message
         * content, and reading it as commands would be command smuggling. Hang up. */
        smtp_reply(s, "501 5.5.4 Syntax: BDAT count [LAST]");
        log_info("smtpd", "BDAT syntax error from %s, closing connection", s->peer);
        s->input = SMTP_INPUT_CLOSED;
        conn_close(s->c);
        return;
    }
    s->bdat_remaining = size;
    s->bdat_is_last = is_last;
    s->bdat_error[0] = '\0';
    /* A refused BDAT still carries its octets: read and drop them, then reply. */
    if (!s->has_helo)
        snprintf(s->bdat_error, sizeof s->bdat_error, "503 5.5.1 Error: send HELO/EHLO first");
    else if (!s->txn.is_active)
        snprintf(s->bdat_error, sizeof s->bdat_error, "503 5.5.1 Error: need MAIL command");
    else if (s->txn.n_rcpt == 0)
        snprintf(s->bdat_error, sizeof s->bdat_error, "503 5.5.1 Error: need RCPT command");
    if (!s->bdat_error[0] && !s->txn.is_bdat) {
        s->txn.is_bdat = true;
        smtp_data_init(&s->txn.reader, s->cfg->smtp_max_message_size);
        buf_reset(&s->txn.body);
    }
    s->input = SMTP_INPUT_BDAT;
    if (size == 0)
        smtp_body_read(s); /* completes at once */
}

static void bdat_chunk_done(struct smtp_session *s)
{
    s->input = SMTP_INPUT_COMMAND;
    if (s->bdat_error[0]) {
        smtp_reply(s, "%s", s->bdat_error);
        s->bdat_error[0] = '\0';
        return;
    }
    struct smtp_txn *t = &s->txn;
    if (s->bdat_is_last) {
        body_finish(s);
        return;
    }
    if (t->reader.is_too_big) {
        /* RFC 3030 §2: after an error reply the client sends no further chunks; the
         * transaction is over, later BDATs get "need MAIL". */
        body_finish(s);
        return;
    }
    smtp_reply(s, "250 2.0.0 Ok: %llu bytes", (unsigned long long)t->reader.size);
}

void smtp_body_add_chunk(struct smtp_session *s, const char *data, size_t len, bool is_last)
{
    struct smtp_txn *t = &s->txn;
    if (!t->is_bdat) {
        t->is_bdat = true; /* RFC 4468 §3: BURL and BDAT make one message, DATA none */
        smtp_data_init(&t->reader, s->cfg->smtp_max_message_size);
        buf_reset(&t->body);
    }
    /* in pieces, so the in-memory part never grows past SMTP_BODY_MEMORY_MAX + a piece */
    for (size_t off = 0; off < len;) {
        size_t n = len - off < SMTP_BODY_MEMORY_MAX ? len - off : SMTP_BODY_MEMORY_MAX;
        smtp_data_feed_chunk(&t->reader, data + off, n, &t->body);
        off += n;
        if (t->body.len >= SMTP_BODY_MEMORY_MAX)
            spill_flush(s);
    }
    s->bdat_is_last = is_last;
    s->bdat_error[0] = '\0';
    bdat_chunk_done(s);
}

bool smtp_body_read(struct smtp_session *s)
{
    struct evbuffer *in = conn_input(s->c);
    struct smtp_txn *t = &s->txn;
    if (s->input == SMTP_INPUT_BDAT) {
        if (s->bdat_remaining == 0) {
            bdat_chunk_done(s);
            return true;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            return false;
        size_t n = v.iov_len < s->bdat_remaining ? v.iov_len : (size_t)s->bdat_remaining;
        if (!s->bdat_error[0])
            smtp_data_feed_chunk(&t->reader, v.iov_base, n, &t->body);
        evbuffer_drain(in, n);
        s->bdat_remaining -= n;
        if (t->body.len >= SMTP_BODY_MEMORY_MAX)
            spill_flush(s);
        if (s->bdat_remaining == 0)
            bdat_chunk_done(s);
        return true;
    }
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
        return false;
    bool is_done = false;
    size_t used = smtp_data_feed(&t->reader, v.iov_base, v.iov_len, &t->body, &is_done);
    evbuffer_drain(in, used);
    if (t->body.len >= SMTP_BODY_MEMORY_MAX)
        spill_flush(s);
    if (is_done)
        body_finish(s);
    return true;
}

void smtp_body_finalize(struct smtp_session *s)
{
    /* Once part of the body is in the spill file, the rest goes there too. */
    if (s->txn.body_fd >= 0)
        spill_flush(s);
}
