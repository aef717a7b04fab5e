/*
 * test_milter.c - the milter client (milter/milter.c): the reply parser, the message
 * rewrite, and whole conversations against a fake milter on a Unix socket in a thread
 * (negotiated no-reply and skipped stages, macro lists, end-of-message modifications,
 * replycode, a milter that never answers, one that is not there).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "milter/milter.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- parser ---------------------------------------------------------------------- */

static void test_reply_parse(void **state)
{
    struct milter_reply r;
    assert_true(milter_reply_parse("c", 1, &r));
    assert_int_equal(r.cmd, 'c');
    assert_true(milter_reply_parse("y550 5.7.1 no\0", 14, &r));
    assert_string_equal(r.str1, "550 5.7.1 no");
    assert_false(milter_reply_parse("y550 no NUL", 11, &r));
    assert_true(milter_reply_parse("hX-A\0v\0", 7, &r));
    assert_string_equal(r.str1, "X-A");
    assert_string_equal(r.str2, "v");
    assert_false(milter_reply_parse("hX-A\0v", 6, &r));
    const char ins[] = "i\0\0\0\2X-B\0w\0";
    assert_true(milter_reply_parse(ins, sizeof ins - 1, &r));
    assert_int_equal(r.index, 2);
    assert_false(milter_reply_parse("m\0\0", 3, &r)); /* index cut short */
    assert_true(milter_reply_parse("e<a@b>\0", 7, &r));
    assert_null(r.str2);
    assert_true(milter_reply_parse("e<a@b>\0SIZE=1\0", 14, &r));
    assert_string_equal(r.str2, "SIZE=1");
    assert_false(milter_reply_parse("e<a@b>\0SIZE", 11, &r));
    assert_true(milter_reply_parse("bbody", 5, &r));
    assert_int_equal(r.data_len, 4);
    const char neg[] = "O\0\0\0\6\0\0\1\xff\0\0\0\0\0\0\0\2{mail_addr}\0";
    assert_true(milter_reply_parse(neg, sizeof neg - 1, &r));
    assert_int_equal(r.version, 6);
    assert_int_equal(r.actions, 0x1ff);
    assert_string_equal(r.macros[MILTER_STAGE_MAIL], "{mail_addr}");
    assert_false(milter_reply_parse("O\0\0\0\6", 5, &r));
    assert_false(milter_reply_parse(neg, sizeof neg - 2, &r)); /* list without its NUL */
    assert_false(milter_reply_parse("Z", 1, &r));
    assert_false(milter_reply_parse("", 0, &r));
}

/* ---- rewrite --------------------------------------------------------------------- */

static void add_change(struct milter_outcome *o, enum milter_change_kind k, uint32_t index,
                       const char *name, const char *value)
{
    o->changes = realloc(o->changes, (o->n_changes + 1) * sizeof *o->changes);
    o->changes[o->n_changes++] = (struct milter_change){k, index, strdup(name),
                                                        value ? strdup(value) : NULL};
}

static void test_rewrite(void **state)
{
    const char *msg = "Subject: hi\r\nX-Old: 1\r\nX-Old: 2\r\n folded\r\n\r\nbody\r\n";
    struct milter_outcome o;
    memset(&o, 0, sizeof o);
    buf_init(&o.new_body, 0);
    add_change(&o, MILTER_ADD_HEADER, 0, "X-Spam", "Yes");
    add_change(&o, MILTER_INSERT_HEADER, 0, "X-First", "a\n\tb");
    add_change(&o, MILTER_CHANGE_HEADER, 2, "x-old", "two");
    add_change(&o, MILTER_CHANGE_HEADER, 1, "X-Old", "");
    add_change(&o, MILTER_CHANGE_HEADER, 1, "X-Missing", "");   /* delete of nothing */
    add_change(&o, MILTER_CHANGE_HEADER, 1, "X-New", "added");  /* change adds */
    add_change(&o, MILTER_ADD_RCPT, 0, "<c@d>", NULL);          /* not a header change */
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(milter_message_rewrite(msg, strlen(msg), &o, UINT64_MAX, &out), 0);
    assert_string_equal(buf_cstr(&out), "X-First: a\r\n\tb\r\nSubject: hi\r\nX-Old: two\r\n"
                                        "X-Spam: Yes\r\nX-New: added\r\n\r\nbody\r\n");
    buf_reset(&out);
    o.has_new_body = true;
    buf_append_str(&o.new_body, "new body\r\n");
    assert_int_equal(milter_message_rewrite(msg, strlen(msg), &o, UINT64_MAX, &out), 0);
    assert_non_null(strstr(buf_cstr(&out), "\r\n\r\nnew body\r\n"));
    buf_reset(&out);
    assert_int_equal(milter_message_rewrite(msg, strlen(msg), &o, 10, &out), -1);
    buf_free(&out);
    milter_outcome_free(&o);
}

/* ---- conversations with a fake milter --------------------------------------------- */

struct fake {
    int listen_fd;
    char path[108];
    int mode;             /* 0 full run, 1 silent, 2 replycode reject at RCPT */
    char log[4096];       /* the commands received, one letter each */
    char mail_macros[256]; /* the MACRO packet before MAIL */
};

static bool read_packet(int fd, char *buf, size_t cap, size_t *len)
{
    uint32_t n;
    if (recv(fd, &n, 4, MSG_WAITALL) != 4)
        return false;
    *len = ntohl(n);
    if (*len == 0 || *len > cap)
        return false;
    return recv(fd, buf, *len, MSG_WAITALL) == (ssize_t)*len;
}

static void send_packet(int fd, const char *data, size_t len)
{
    uint32_t n = htonl((uint32_t)len);
    (void)!write(fd, &n, 4);
    (void)!write(fd, data, len);
}

static void *fake_run(void *arg)
{
    struct fake *f = arg;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    static char buf[70000];
    size_t len, n = 0;
    char last_macro_for = 0;
    while (read_packet(fd, buf, sizeof buf, &len)) {
        char cmd = buf[0];
        if (n + 1 < sizeof f->log)
            f->log[n++] = cmd;
        if (f->mode == 1)
            continue; /* never answers */
        if (cmd == 'O') {
            /* NOHELO, no reply to headers; wants {mail_addr} only at MAIL */
            char neg[64];
            size_t k = 0;
            neg[k++] = 'O';
            uint32_t v[3] = {htonl(6), htonl(0x1ff), htonl(0x2u | 0x80u)};
            memcpy(neg + k, v, 12);
            k += 12;
            uint32_t stage = htonl(MILTER_STAGE_MAIL);
            memcpy(neg + k, &stage, 4);
            k += 4;
            memcpy(neg + k, "{mail_addr}", 12);
            k += 12;
            send_packet(fd, neg, k);
        } else if (cmd == 'D') {
            last_macro_for = buf[1];
            if (last_macro_for == 'M' && len - 2 < sizeof f->mail_macros) {
                memcpy(f->mail_macros, buf + 2, len - 2);
                for (size_t i = 0; i + 1 < len - 2; i++)
                    if (!f->mail_macros[i])
                        f->mail_macros[i] = '=';
            }
        } else if (cmd == 'R' && f->mode == 2) {
            send_packet(fd, "y550 5.7.1 no such luck\0", 24);
        } else if (cmd == 'L') {
            /* SMFIP_NR_HDR: no reply */
        } else if (cmd == 'E') {
            send_packet(fd, "hX-Spam\0Yes\0", 12);
            send_packet(fd, "m\0\0\0\1Subject\0\0", 14);
            send_packet(fd, "+<carol@example.test>\0", 22);
            send_packet(fd, "qlooks odd\0", 11);
            send_packet(fd, "p", 1);
            send_packet(fd, "bnew body\r\n", 11);
            send_packet(fd, "a", 1);
        } else if (cmd == 'Q') {
            break;
        } else if (cmd == 'A') {
            /* SMFIC_ABORT: no reply */
        } else {
            send_packet(fd, "c", 1);
        }
    }
    f->log[n] = '\0';
    close(fd);
    return NULL;
}

static void fake_start(struct fake *f, pthread_t *t, int mode)
{
    memset(f, 0, sizeof *f);
    f->mode = mode;
    snprintf(f->path, sizeof f->path, "/tmp/tern-milter-%d-%d.sock", (int)getpid(), mode);
    unlink(f->path);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, f->path, strlen(f->path) + 1);
    assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sun, sizeof sun), 0);
    assert_int_equal(listen(f->listen_fd, 1), 0);
    pthread_create(t, NULL, fake_run, f);
}

static void fake_stop(struct fake *f, pthread_t t)
{
    shutdown(f->listen_fd, SHUT_RDWR);
    pthread_join(t, NULL);
    close(f->listen_fd);
    unlink(f->path);
}

static const char *rcpts[] = {"bob@example.test"};
static const struct milter_message message = {
    .client_name = "client.example",
    .client_addr = "192.0.2.1",
    .client_port = 4711,
    .local_addr = "127.0.0.1",
    .helo = "client.example",
    .hostname = "mail.example.test",
    .daemon_name = "mail.example.test",
    .queue_id = "ABC123",
    .auth_user = "alice@example.test",
    .auth_mech = "PLAIN",
    .sender = "alice@example.test",
    .rcpts = rcpts,
    .n_rcpts = 1,
    .data = "Subject: hi\r\nFrom: alice@example.test\r\n\r\nhello\r\n",
    .len = 48,
};

static struct milter_spec spec_for(const struct fake *f, unsigned timeout_ms)
{
    struct milter_spec s = {.connect_timeout_ms = timeout_ms,
                            .command_timeout_ms = timeout_ms,
                            .content_timeout_ms = timeout_ms,
                            .default_action = MILTER_DEFAULT_TEMPFAIL};
    snprintf(s.address, sizeof s.address, "unix:%s", f->path);
    return s;
}

static void test_conversation(void **state)
{
    struct fake f;
    pthread_t t;
    fake_start(&f, &t, 0);
    struct milter_spec spec = spec_for(&f, 5000);
    struct milter_outcome o;
    milter_run(&spec, 1, &message, &o);
    fake_stop(&f, t);
    /* OPTNEG, macros+connect, (no HELO), macros+mail, macros+rcpt, macros+data, two
     * headers without replies, macros+eoh, body, macros+end of body, quit */
    assert_string_equal(f.log, "ODCDMDRDTLLDNBDEQ");
    assert_string_equal(f.mail_macros, "{mail_addr}=alice@example.test");
    assert_int_equal(o.verdict, MILTER_ACCEPT);
    assert_int_equal(o.n_changes, 3);
    assert_int_equal(o.changes[0].kind, MILTER_ADD_HEADER);
    assert_int_equal(o.changes[1].kind, MILTER_CHANGE_HEADER);
    assert_int_equal(o.changes[2].kind, MILTER_ADD_RCPT);
    assert_string_equal(o.changes[2].name, "<carol@example.test>");
    assert_string_equal(o.quarantine, "looks odd");
    assert_true(o.has_new_body);
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(milter_message_rewrite(message.data, message.len, &o, UINT64_MAX, &out), 0);
    assert_string_equal(buf_cstr(&out),
                        "From: alice@example.test\r\nX-Spam: Yes\r\n\r\nnew body\r\n");
    buf_free(&out);
    milter_outcome_free(&o);
}

static void test_replycode_at_rcpt(void **state)
{
    struct fake f;
    pthread_t t;
    fake_start(&f, &t, 2);
    struct milter_spec spec = spec_for(&f, 5000);
    struct milter_outcome o;
    milter_run(&spec, 1, &message, &o);
    fake_stop(&f, t);
    assert_int_equal(o.verdict, MILTER_REJECT);
    assert_string_equal(o.reply, "550 5.7.1 no such luck");
    assert_string_equal(f.log, "ODCDMDRQ"); /* nothing after the reject but QUIT */
    milter_outcome_free(&o);
}

static void test_silent_and_absent_milters(void **state)
{
    struct fake f;
    pthread_t t;
    fake_start(&f, &t, 1);
    struct milter_spec spec = spec_for(&f, 200);
    struct milter_outcome o;
    milter_run(&spec, 1, &message, &o);
    assert_int_equal(o.verdict, MILTER_TEMPFAIL);
    assert_memory_equal(o.reply, "451 4.7.1", 9);
    assert_non_null(strstr(o.why, "timeout"));
    milter_outcome_free(&o);
    fake_stop(&f, t);
    /* nobody there: accept when so configured */
    spec.default_action = MILTER_DEFAULT_ACCEPT;
    milter_run(&spec, 1, &message, &o);
    assert_int_equal(o.verdict, MILTER_ACCEPT);
    milter_outcome_free(&o);
}

/* A session's stages one at a time (milters.c's use): a refused recipient leaves the
 * message open, RSET aborts it, the next transaction goes on over the same connection. */
static void test_session_stages(void **state)
{
    struct fake f;
    pthread_t t;
    fake_start(&f, &t, 2);
    struct milter_spec spec = spec_for(&f, 5000);
    struct milter_session *ms = milter_session_new(&spec, 1, &message);
    assert_non_null(ms);
    struct milter_outcome o;
    milter_session_connect(ms, &o);
    assert_int_equal(o.verdict, MILTER_ACCEPT);
    milter_outcome_free(&o);
    milter_session_mail(ms, &message, &o);
    assert_int_equal(o.verdict, MILTER_ACCEPT);
    milter_outcome_free(&o);
    milter_session_rcpt(ms, "bob@example.test", &o);
    assert_int_equal(o.verdict, MILTER_REJECT);
    assert_string_equal(o.reply, "550 5.7.1 no such luck");
    milter_outcome_free(&o);
    milter_session_abort(ms, true); /* RSET */
    milter_session_mail(ms, &message, &o);
    assert_int_equal(o.verdict, MILTER_ACCEPT);
    milter_outcome_free(&o);
    milter_session_message(ms, &message, &o);
    assert_int_equal(o.verdict, MILTER_ACCEPT);
    assert_int_equal(o.n_changes, 3);
    assert_true(milter_session_is_active(ms));
    milter_outcome_free(&o);
    milter_session_free(ms);
    fake_stop(&f, t);
    /* one connection: connect, MAIL, the refused RCPT, ABORT, MAIL again, the message */
    assert_string_equal(f.log, "ODCDMDRADMDTLLDNBDEQ");
}

static void test_addresses(void **state)
{
    assert_true(milter_address_is_valid("inet:127.0.0.1:11332"));
    assert_true(milter_address_is_valid("inet6:[::1]:11332"));
    assert_true(milter_address_is_valid("unix:/run/opendkim/opendkim.sock"));
    assert_false(milter_address_is_valid("inet:localhost:11332")); /* numeric only */
    assert_false(milter_address_is_valid("inet:127.0.0.1:0"));
    assert_false(milter_address_is_valid("inet:127.0.0.1:70000"));
    assert_false(milter_address_is_valid("unix:relative"));
    assert_false(milter_address_is_valid("tcp:127.0.0.1:1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_parse),
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_conversation),
        cmocka_unit_test(test_replycode_at_rcpt),
        cmocka_unit_test(test_silent_and_absent_milters),
        cmocka_unit_test(test_session_stages),
        cmocka_unit_test(test_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
