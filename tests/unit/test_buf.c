/*
 * test_buf.c - struct buf: caps, appends, printf, consume, steal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

static void test_empty(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    assert_string_equal(buf_cstr(&b), "");
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_append_and_cap(void **state)
{
    struct buf b;
    buf_init(&b, 8);
    assert_true(buf_append_str(&b, "abcd"));
    assert_true(buf_append(&b, "efgh", 4));
    assert_false(buf_append_byte(&b, 'x')); /* past the cap */
    assert_int_equal(b.len, 8);
    assert_string_equal(buf_cstr(&b), "abcdefgh"); /* unchanged by the failed append */
    assert_false(buf_printf(&b, "%d", 1));
    assert_int_equal(b.len, 8);
    buf_free(&b);
}

static void test_binary(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    assert_true(buf_append(&b, "a\0b", 3));
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 3);
    assert_int_equal(b.data[3], '\0');
    buf_free(&b);
}

static void test_printf_consume(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    assert_true(buf_printf(&b, "%s-%d", "x", 42));
    assert_string_equal(buf_cstr(&b), "x-42");
    buf_consume(&b, 2);
    assert_string_equal(buf_cstr(&b), "42");
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    /* growth across many appends */
    for (int i = 0; i < 10000; i++)
        assert_true(buf_append_byte(&b, 'z'));
    assert_int_equal(b.len, 10000);
    char *s = buf_steal(&b);
    assert_int_equal(strlen(s), 10000);
    free(s);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_reserve_cap(void **state)
{
    struct buf b;
    buf_init(&b, 100);
    assert_true(buf_reserve(&b, 100));
    assert_false(buf_reserve(&b, 101));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),       cmocka_unit_test(test_append_and_cap),
        cmocka_unit_test(test_binary),      cmocka_unit_test(test_printf_consume),
        cmocka_unit_test(test_reserve_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
