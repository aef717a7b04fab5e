/*
 * test_handoff.c - the plain-data records between processes: core/wire.h fields and the
 * record of a session handed from a login process to a mail worker (conn_handoff_encode /
 * conn_handoff_decode, core/handoff.c), including what a taken-over login process could
 * send instead; and the login process's side of the worker channels (core/backend.h):
 * which requests go to another worker when one leaves.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/buf.h"
#include "core/channel.h"
#include "core/conn.h"
#include "core/wire.h"

#define TOKEN "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_wire_fields(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    assert_true(wire_put_str(&b, "abc"));
    assert_true(wire_put_num(&b, 18446744073709551615ull));
    assert_true(wire_put_str(&b, ""));
    assert_true(wire_put_num(&b, 7));
    assert_true(buf_append(&b, "rest", 4));
    struct wire_reader r;
    wire_reader_init(&r, b.data, b.len);
    assert_string_equal(wire_str(&r, 4), "abc");
    assert_true(wire_num(&r, UINT64_MAX) == UINT64_MAX);
    assert_string_equal(wire_str(&r, 1), "");
    assert_int_equal(wire_num(&r, 7), 7);
    size_t n;
    const char *rest = wire_rest(&r, &n);
    assert_int_equal(n, 4);
    assert_memory_equal(rest, "rest", 4);
    assert_false(r.is_bad);
    buf_free(&b);
}

static void test_wire_hostile(void **state)
{
    struct wire_reader r;
    /* a string longer than allowed */
    wire_reader_init(&r, "abcd", 5);
    (void)wire_str(&r, 4);
    assert_true(r.is_bad);
    /* no terminating NUL inside the record */
    wire_reader_init(&r, "abcd", 4);
    (void)wire_str(&r, 100);
    assert_true(r.is_bad);
    /* numbers: digits only, within the bound, no overflow, not empty, no leading zero
     * (fuzz_handoff: "07" decoded as 7 encoded back as "7") */
    const char *bad[] = {"12a", "-1", "", "99999999999999999999999", "8", "07", "00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        wire_reader_init(&r, bad[i], strlen(bad[i]) + 1);
        (void)wire_num(&r, 7);
        assert_true(r.is_bad);
    }
    /* the first failure sticks */
    wire_reader_init(&r, "x\0" "5", 4);
    (void)wire_num(&r, 9);
    assert_int_equal(wire_num(&r, 9), 0);
    assert_true(r.is_bad);
}

static struct conn_handoff *sample(void)
{
    struct conn_handoff *h = calloc(1, sizeof *h);
    assert_non_null(h);
    h->role = CONN_ROLE_IMAPS;
    h->is_tls = true;
    strcpy(h->peer_ip, "2001:db8::7");
    h->peer_port = 50123;
    strcpy(h->local_ip, "192.0.2.1");
    h->local_port = 993;
    strcpy(h->tls_desc, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)");
    strcpy(h->user, "alice@example.org");
    strcpy(h->token, TOKEN);
    strcpy(h->tag, "a001");
    strcpy(h->method, "SCRAM-SHA-256");
    strcpy(h->sasl_final, "dj1hYmNkZWY=");
    h->errors = 3;
    memcpy(h->input, "b SELECT INBOX\r\n\0x", 18);
    h->input_len = 18;
    return h;
}

static void test_handoff_roundtrip(void **state)
{
    struct conn_handoff *h = sample(), *back = calloc(1, sizeof *back);
    char *wire = malloc((64 * 1024));
    size_t len;
    assert_int_equal(conn_handoff_encode(h, wire, (64 * 1024), &len), 0);
    assert_true(conn_handoff_decode(wire, len, back));
    assert_int_equal(back->role, CONN_ROLE_IMAPS);
    assert_true(back->is_tls);
    assert_string_equal(back->peer_ip, "2001:db8::7");
    assert_int_equal(back->peer_port, 50123);
    assert_string_equal(back->local_ip, "192.0.2.1");
    assert_int_equal(back->local_port, 993);
    assert_string_equal(back->tls_desc, h->tls_desc);
    assert_string_equal(back->user, "alice@example.org");
    assert_string_equal(back->token, TOKEN);
    assert_string_equal(back->tag, "a001");
    assert_string_equal(back->method, "SCRAM-SHA-256");
    assert_string_equal(back->sasl_final, "dj1hYmNkZWY=");
    assert_int_equal(back->errors, 3);
    assert_int_equal(back->input_len, 18);
    assert_memory_equal(back->input, h->input, 18);
    /* the input must be exactly the rest: one byte more or less is refused */
    assert_false(conn_handoff_decode(wire, len - 1, back));
    wire[len] = 'x';
    assert_false(conn_handoff_decode(wire, len + 1, back));
    /* too small an output buffer */
    assert_int_equal(conn_handoff_encode(h, wire, 40, &len), -1);
    free(wire);
    free(h);
    free(back);
}

/* Change one field of the sample and check the record is refused. */
static void expect_refused(void (*change)(struct conn_handoff *))
{
    struct conn_handoff *h = sample(), *back = calloc(1, sizeof *back);
    char *wire = malloc((64 * 1024));
    size_t len;
    change(h);
    assert_int_equal(conn_handoff_encode(h, wire, (64 * 1024), &len), 0);
    assert_false(conn_handoff_decode(wire, len, back));
    free(wire);
    free(h);
    free(back);
}

static void bad_peer(struct conn_handoff *h) { strcpy(h->peer_ip, "localhost"); }
static void bad_local(struct conn_handoff *h) { strcpy(h->local_ip, "1.2.3"); }
static void bad_token(struct conn_handoff *h) { h->token[5] = 'G'; }
static void short_token(struct conn_handoff *h) { h->token[63] = '\0'; }
static void bad_user(struct conn_handoff *h) { strcpy(h->user, "alice\r\n@example.org"); }
static void no_user(struct conn_handoff *h) { h->user[0] = '\0'; }
static void bad_tag(struct conn_handoff *h) { strcpy(h->tag, "a 1"); }
static void bad_method(struct conn_handoff *h) { strcpy(h->method, "PLAIN\x01"); }
static void no_method(struct conn_handoff *h) { h->method[0] = '\0'; }
static void bad_final(struct conn_handoff *h) { strcpy(h->sasl_final, "v=abc\r\n"); }
static void bad_desc(struct conn_handoff *h) { strcpy(h->tls_desc, "TLS\n1.3"); }

static void test_handoff_hostile(void **state)
{
    expect_refused(bad_peer);
    expect_refused(bad_local);
    expect_refused(bad_token);
    expect_refused(short_token);
    expect_refused(bad_user);
    expect_refused(no_user);
    expect_refused(bad_tag);
    expect_refused(bad_method);
    expect_refused(no_method);
    expect_refused(bad_final);
    expect_refused(bad_desc);
    /* a role beyond the table, a port beyond 16 bits, too much input */
    struct conn_handoff *back = calloc(1, sizeof *back);
    char role[] = "?\0" "127.0.0.1\0" "1\0" "127.0.0.1\0" "143\0" "0\0\0" "u\0" TOKEN
                  "\0t\0PLAIN\0\0" "0\0" "0";
    _Static_assert(CONN_ROLE_COUNT < 10, "one digit");
    role[0] = (char)('0' + CONN_ROLE_COUNT); /* the first number that is no role */
    assert_false(conn_handoff_decode(role, sizeof role, back));
    const char port[] = "5\0" "127.0.0.1\0" "65536\0" "127.0.0.1\0" "143\0" "0\0\0" "u\0" TOKEN
                        "\0t\0PLAIN\0\0" "0\0" "0";
    assert_false(conn_handoff_decode(port, sizeof port, back));
    const char ok[] = "5\0" "127.0.0.1\0" "1\0" "127.0.0.1\0" "143\0" "0\0\0" "u\0" TOKEN
                      "\0t\0PLAIN\0\0" "0\0" "0";
    assert_true(conn_handoff_decode(ok, sizeof ok, back));
    const char big[] = "5\0" "127.0.0.1\0" "1\0" "127.0.0.1\0" "143\0" "0\0\0" "u\0" TOKEN
                       "\0t\0PLAIN\0\0" "0\0" "99999";
    assert_false(conn_handoff_decode(big, sizeof big, back));
    free(back);
}

/* A descriptor the receiver cannot take (it is at RLIMIT_NOFILE: MSG_CTRUNC) still
 * delivers the message, marked, so the receiver can refuse it at once; a payload larger
 * than a message may be (MSG_TRUNC) is dropped. */
static void test_channel_fd_lost(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(channel_pair(sv), 0);
    int passed = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(passed >= 0);
    struct channel_msg *m = malloc(sizeof *m);
    assert_non_null(m);

    /* received normally: the descriptor arrives */
    assert_int_equal(channel_send(sv[0], 7, "abc", 3, passed), 0);
    assert_int_equal(channel_recv(sv[1], m), 1);
    assert_int_equal(m->type, 7);
    assert_false(m->is_fd_lost);
    assert_true(m->fd >= 0);
    close(m->fd);

    /* the receiver out of descriptors: no free number below the limit */
    assert_int_equal(channel_send(sv[0], 8, "def", 3, passed), 0);
    struct rlimit old, tight;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the lowest free number */
    assert_true(lowest >= 0);
    close(lowest);
    tight = old;
    tight.rlim_cur = (rlim_t)lowest;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
    int got = channel_recv(sv[1], m);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(got, 1);
    assert_int_equal(m->type, 8);
    assert_int_equal(m->len, 3);
    assert_memory_equal(m->payload, "def", 3);
    assert_true(m->is_fd_lost);
    assert_int_equal(m->fd, -1);

    /* a datagram longer than a message may be: dropped, nothing returned */
    size_t big = CHANNEL_MAX_PAYLOAD + 64;
    char *buf = calloc(1, big);
    assert_non_null(buf);
    assert_true(send(sv[0], buf, big, 0) == (ssize_t)big);
    assert_int_equal(channel_recv(sv[1], m), 0);
    free(buf);

    free(m);
    close(passed);
    close(sv[0]);
    close(sv[1]);
}

/* A peer that closes with our messages unread in its queue: the kernel reports
 * ECONNRESET once before the messages the peer sent; channel_recv must return those
 * (a worker's last answers: dropping a "delivered" one made the client send again),
 * then the close. */
static void test_channel_messages_before_a_reset(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(channel_pair(sv), 0);
    struct channel_msg *m = malloc(sizeof *m);
    assert_non_null(m);
    assert_int_equal(channel_send(sv[1], 5, "answer", 6, -1), 0);  /* the worker's answer */
    assert_int_equal(channel_send(sv[0], 6, "request", 7, -1), 0); /* never read */
    close(sv[1]);
    assert_int_equal(channel_recv(sv[0], m), 1);
    assert_int_equal(m->type, 5);
    assert_int_equal(m->len, 6);
    assert_memory_equal(m->payload, "answer", 6);
    assert_int_equal(channel_recv(sv[0], m), -1); /* then the close */
    free(m);
    close(sv[0]);
}

/* ---- the login process's backend client ------------------------------------------------ */

/* A fake mail worker at the far end of a channel: answers every request with rc, except
 * that the first request of all (fake_first) makes its worker leave without a word (it
 * closes its end: a draining worker exiting with the request unread, or one dying). */
struct fake_worker {
    int sock;
    int32_t rc;
    pthread_t thread;
    unsigned delay_ms; /* > 0: the thread hands its channel to the client after this */
    int client_end;
};

static atomic_int fake_requests; /* requests the fake workers received */
static atomic_bool fake_first_leaves;

static void *fake_worker_main(void *arg)
{
    struct fake_worker *w = arg;
    if (w->delay_ms) {
        poll(NULL, 0, (int)w->delay_ms);
        backend_client_add(w->client_end, 4242);
    }
    struct channel_msg *m = malloc(sizeof *m);
    for (int rounds = 0; m && rounds < 100; rounds++) {
        struct pollfd pfd = {.fd = w->sock, .events = POLLIN};
        if (poll(&pfd, 1, 10000) <= 0)
            break;
        int got = channel_recv(w->sock, m);
        if (got < 0)
            break; /* the client closed its end (backend_client_stop) */
        if (got == 0)
            continue;
        if (m->fd >= 0)
            close(m->fd);
        atomic_fetch_add(&fake_requests, 1);
        if (atomic_exchange(&fake_first_leaves, false))
            break;
        char answer[8];
        memcpy(answer, m->payload, 4); /* the call's id */
        memcpy(answer + 4, &w->rc, 4);
        channel_send(w->sock, m->type, answer, sizeof answer, -1);
    }
    free(m);
    close(w->sock);
    return NULL;
}

static void fake_worker_start(struct fake_worker *w, int32_t rc, unsigned delay_ms)
{
    int sv[2];
    assert_int_equal(channel_pair(sv), 0);
    *w = (struct fake_worker){.sock = sv[1], .rc = rc, .delay_ms = delay_ms, .client_end = sv[0]};
    if (!delay_ms)
        backend_client_add(sv[0], 4242);
    assert_int_equal(pthread_create(&w->thread, NULL, fake_worker_main, w), 0);
}

/* A fresh client; first_leaves: the first request of all makes its worker leave. */
static void fake_client_begin(bool first_leaves)
{
    atomic_store(&fake_requests, 0);
    atomic_store(&fake_first_leaves, first_leaves);
    assert_int_equal(backend_client_start(), 0);
}

/* Stop the client: the fake workers' channels close and their threads end. */
static void fake_client_end(struct fake_worker *w, size_t n)
{
    backend_client_stop();
    for (size_t i = 0; i < n; i++)
        pthread_join(w[i].thread, NULL);
}

/* One backend_call of type: its result, and the worker's answer in *rc. */
static int fake_call(uint8_t type, int32_t *rc)
{
    struct channel_msg *reply = malloc(sizeof *reply);
    assert_non_null(reply);
    size_t off;
    int r = backend_call(type, "m", 1, -1, 10, reply, rc, &off);
    free(reply);
    return r;
}

/* backend_call of type against two workers, the first to get a request leaving with it. */
static int call_with_a_worker_leaving(uint8_t type, int32_t *rc)
{
    struct fake_worker w[2];
    fake_client_begin(true);
    fake_worker_start(&w[0], 77, 0);
    fake_worker_start(&w[1], 77, 0);
    int r = fake_call(type, rc);
    fake_client_end(w, 2);
    return r;
}

/* A worker that leaves with a session unanswered (a draining worker exits with requests it
 * never read): the session goes to another worker. A delivery does not: the worker may
 * have stored the message before it died, and the client's retry is the safe side. */
static void test_backend_worker_leaving_unanswered(void **state)
{
    (void)state;
    int32_t rc = 0;
    assert_int_equal(call_with_a_worker_leaving(BACKEND_MSG_HANDOFF, &rc), 0);
    assert_int_equal(rc, 77);
    assert_int_equal(atomic_load(&fake_requests), 2);

    assert_int_equal(call_with_a_worker_leaving(BACKEND_MSG_DELIVER, &rc), -1);
    assert_int_equal(atomic_load(&fake_requests), 1);
}

/* A worker gone before the call went out (its end closed; the client may not have seen it
 * yet, and the send fails): nothing reached it, so any request goes to another. */
static void test_backend_worker_gone_before_the_send(void **state)
{
    (void)state;
    fake_client_begin(false);
    int gone[2];
    assert_int_equal(channel_pair(gone), 0);
    backend_client_add(gone[0], 4241);
    close(gone[1]);
    struct fake_worker w;
    fake_worker_start(&w, 78, 0);
    int32_t rc = 0;
    for (int k = 0; k < 4; k++) {
        assert_int_equal(fake_call(k % 2 ? BACKEND_MSG_DELIVER : BACKEND_MSG_HANDOFF, &rc), 0);
        assert_int_equal(rc, 78);
    }
    assert_int_equal(atomic_load(&fake_requests), 4);
    fake_client_end(&w, 1);
}

/* No worker at all when the call starts (a reload's old generation gone before the new
 * one's channels arrived, or every worker restarting): the call waits for one. */
static void test_backend_waits_for_a_worker(void **state)
{
    (void)state;
    fake_client_begin(false);
    struct fake_worker w;
    fake_worker_start(&w, 5, 200);
    int32_t rc = 0;
    assert_int_equal(fake_call(BACKEND_MSG_HANDOFF, &rc), 0);
    assert_int_equal(rc, 5);
    fake_client_end(&w, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_fields),
        cmocka_unit_test(test_wire_hostile),
        cmocka_unit_test(test_handoff_roundtrip),
        cmocka_unit_test(test_handoff_hostile),
        cmocka_unit_test(test_channel_fd_lost),
        cmocka_unit_test(test_channel_messages_before_a_reset),
        cmocka_unit_test(test_backend_worker_leaving_unanswered),
        cmocka_unit_test(test_backend_worker_gone_before_the_send),
        cmocka_unit_test(test_backend_waits_for_a_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
