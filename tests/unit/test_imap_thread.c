/*
 * test_imap_thread.c - unit tests for src/imap/thread.c: ORDEREDSUBJECT, REFERENCES and
 * REFS on small mailboxes whose expected threads follow RFC 5256 §3 step by step
 * (duplicate ids, loops refused, a broken earlier link, dummies pruned or kept, subject
 * merging in every case of step (5)(C)), and a reference chain as long as a big mailbox
 * (no recursion, linear work).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "imap/thread.h"

/* A message: sent time, subject (already a base subject), reply flag, id, references. */
struct m {
    int64_t sent;
    const char *subject;
    bool is_reply;
    const char *id, *refs;
};

static char *run(enum imap_thread_algorithm alg, const struct m *ms, size_t n)
{
    struct imap_thread_msg *v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (struct imap_thread_msg){
            .number = (uint32_t)i + 1,
            .seq = (uint32_t)i + 1,
            .sent = ms[i].sent,
            .subject = ms[i].subject ? ms[i].subject : "",
            .is_reply = ms[i].is_reply,
            .message_id = ms[i].id,
            .references = ms[i].refs ? ms[i].refs : "",
        };
    struct buf b;
    buf_init(&b, 0);
    assert_true(imap_thread_write(alg, v, n, &b));
    free(v);
    char *r = buf_steal(&b);
    return r ? r : strdup("");
}

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define EXPECT(alg, ms, want)                                                                     \
    do {                                                                                          \
        char *got = run(alg, ms, N(ms));                                                          \
        assert_string_equal(got, want);                                                           \
        free(got);                                                                                \
    } while (0)

static void test_references_links(void **state)
{
    (void)state;
    /* a; b refs "a c"; c refs b: c's link to b would loop, and (B) broke a -> c first */
    const struct m loop[] = {{300, "", 0, "<a@b>", NULL},
                             {100, "", 0, "<b@b>", "<a@b> <c@b>"},
                             {200, "", 0, "<c@b>", "<b@b>"}};
    EXPECT(IMAP_THREAD_REFERENCES, loop, "(3 2)(1)");
    /* the same id twice: the second message gets an id of its own */
    const struct m dup[] = {{1, "x", 0, "<a@b>", NULL},
                            {2, "y", 0, "<b@b>", "<a@b>"},
                            {3, "z", 0, "<c@b>", "<b@b>"},
                            {4, "w", 0, "<b@b>", "<a@b>"}};
    EXPECT(IMAP_THREAD_REFERENCES, dup, "(1 (2 3)(4))");
    /* two messages referring to one missing parent: a dummy root with two children */
    const struct m dummy[] = {{1, "", 0, NULL, "<a@b>"}, {2, "", 0, NULL, "<a@b>"}};
    EXPECT(IMAP_THREAD_REFERENCES, dummy, "((1)(2))");
    /* one child of a missing parent: the dummy gives way to it */
    const struct m one[] = {{5, "", 0, "<x@y>", "<gone@y>"}, {1, "", 0, "<z@y>", NULL}};
    EXPECT(IMAP_THREAD_REFERENCES, one, "(2)(1)");
    /* a missing message in the middle of a chain: its dummy is pruned, the child promoted */
    const struct m mid[] = {{1, "", 0, "<a@x>", NULL}, {3, "", 0, "<c@x>", "<a@x> <b@x>"},
                            {2, "", 0, "<d@x>", "<a@x>"}};
    EXPECT(IMAP_THREAD_REFERENCES, mid, "(1 (3)(2))");
    /* no Message-ID, In-Reply-To style single reference */
    const struct m irt[] = {{1, "", 0, "<p@x>", NULL}, {2, "", 0, NULL, "<p@x>"}};
    EXPECT(IMAP_THREAD_REFERENCES, irt, "(1 2)");
}

static void test_references_subjects(void **state)
{
    (void)state;
    /* same subject, the second a reply: it becomes a child (5)(C) */
    const struct m reply[] = {{1, "foo", 0, "<a@b>", NULL}, {2, "foo", 1, "<a@b>", NULL}};
    EXPECT(IMAP_THREAD_REFERENCES, reply, "(1 2)");
    /* a reply whose parent is missing: the dummy goes, the reply joins by subject */
    const struct m pruned[] = {{1, "foo", 0, "<a@b>", NULL}, {2, "foo", 1, "<b@b>", "<c@b>"}};
    EXPECT(IMAP_THREAD_REFERENCES, pruned, "(1 2)");
    /* neither is a reply: a new dummy holds both */
    const struct m both[] = {{1, "foo", 0, "<a@b>", NULL}, {2, "foo", 0, "<b@b>", NULL},
                             {3, "bar", 0, "<c@b>", NULL}};
    EXPECT(IMAP_THREAD_REFERENCES, both, "((1)(2))(3)");
    /* the table prefers the non-reply: the earlier reply becomes its child */
    const struct m prefer[] = {{1, "foo", 1, "<a@b>", NULL}, {2, "foo", 0, "<b@b>", NULL}};
    EXPECT(IMAP_THREAD_REFERENCES, prefer, "(2 1)");
    /* a dummy root wins the table; the message joins its children */
    const struct m dum[] = {{1, "foo", 0, "<a@b>", NULL},
                            {2, "foo", 1, NULL, "<p@b>"},
                            {3, "foo", 1, NULL, "<p@b>"}};
    EXPECT(IMAP_THREAD_REFERENCES, dum, "((1)(2)(3))");
    /* empty subjects never merge */
    const struct m empty[] = {{1, "", 0, "<a@b>", NULL}, {2, "", 1, "<b@b>", NULL}};
    EXPECT(IMAP_THREAD_REFERENCES, empty, "(1)(2)");
    /* REFS: no subject merge, threads by their newest message */
    const struct m refs[] = {{1, "foo", 0, "<a@b>", NULL},
                             {2, "foo", 1, "<b@b>", NULL},
                             {3, "", 0, "<c@b>", "<a@b>"}};
    EXPECT(IMAP_THREAD_REFS, refs, "(2)(1 3)");
    EXPECT(IMAP_THREAD_REFERENCES, refs, "(1 (2)(3))"); /* 2 joins by subject; by date */
}

static void test_orderedsubject(void **state)
{
    (void)state;
    const struct m ms[] = {{4, "b", 0, NULL, NULL}, {1, "a", 0, NULL, NULL},
                           {5, "b", 1, NULL, NULL}, {2, "a", 1, NULL, NULL},
                           {3, "c", 0, NULL, NULL}, {6, "a", 1, NULL, NULL},
                           {6, "a", 0, NULL, NULL}};
    /* a: 2(1) 4(2) 6(6) 7(6) -> "2 (4)(6)(7)"; c: 5; b: 1(4) 3(5) */
    EXPECT(IMAP_THREAD_ORDEREDSUBJECT, ms, "(2 (4)(6)(7))(5)(1 3)");
    const struct m single[] = {{1, "x", 0, NULL, NULL}};
    EXPECT(IMAP_THREAD_ORDEREDSUBJECT, single, "(1)");
    char *got = run(IMAP_THREAD_ORDEREDSUBJECT, NULL, 0);
    assert_string_equal(got, "");
    free(got);
}

/* A chain as deep as a big mailbox: each message replies to the one before. */
static void test_deep_chain(void **state)
{
    (void)state;
    enum { DEPTH = 200000 };
    struct imap_thread_msg *v = calloc(DEPTH, sizeof *v);
    char (*ids)[24] = calloc(DEPTH, sizeof *ids);
    assert_non_null(v);
    assert_non_null(ids);
    for (size_t i = 0; i < DEPTH; i++) {
        snprintf(ids[i], sizeof ids[i], "<%zu@x>", i);
        v[i] = (struct imap_thread_msg){.number = (uint32_t)i + 1, .seq = (uint32_t)i + 1,
                                        .sent = (int64_t)i, .subject = "s",
                                        .message_id = ids[i],
                                        .references = i ? ids[i - 1] : ""};
    }
    struct buf b;
    buf_init(&b, 0);
    assert_true(imap_thread_write(IMAP_THREAD_REFERENCES, v, DEPTH, &b));
    /* "(1 2 3 ... 200000)": one thread, one chain */
    assert_int_equal(b.data[0], '(');
    assert_int_equal(b.data[b.len - 1], ')');
    assert_null(strchr(b.data + 1, '('));
    assert_non_null(strstr(b.data, " 199999 200000)"));
    buf_free(&b);
    /* and each message referencing all earlier ones would be quadratic: the reference
     * budget bounds it; here a fan-out: every message replies to the first */
    for (size_t i = 1; i < DEPTH; i++)
        v[i].references = ids[0];
    buf_init(&b, 0);
    assert_true(imap_thread_write(IMAP_THREAD_REFS, v, DEPTH, &b));
    assert_memory_equal(b.data, "(1 (2)(3)(4)", 12);
    buf_free(&b);
    free(v);
    free(ids);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_references_links), cmocka_unit_test(test_references_subjects),
        cmocka_unit_test(test_orderedsubject),   cmocka_unit_test(test_deep_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
