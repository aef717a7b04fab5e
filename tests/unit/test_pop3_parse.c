/*
 * test_pop3_parse.c - unit tests for the pure POP3 parsers (src/pop3/parse.h): line
 * framing with the RFC 2449 255-octet cap, verbs and arguments, numbers, and the
 * RETR/TOP converter whose output length is what LIST/STAT report.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pop3/parse.h"

/* ---- line framing ------------------------------------------------------------------ */

static void test_line_crlf_and_lf(void **state)
{
    struct pop3_lines st = {0};
    size_t len, used;
    const char *in = "STAT\r\nNOOP\nRE";
    assert_int_equal(pop3_line_next(&st, in, strlen(in), POP3_LINE_MAX, &len, &used), POP3_LINE_OK);
    assert_int_equal(len, 4);
    assert_int_equal(used, 6);
    in += used;
    assert_int_equal(pop3_line_next(&st, in, strlen(in), POP3_LINE_MAX, &len, &used), POP3_LINE_OK);
    assert_int_equal(len, 4);
    assert_int_equal(used, 5);
    in += used;
    assert_int_equal(pop3_line_next(&st, in, strlen(in), POP3_LINE_MAX, &len, &used),
                     POP3_LINE_NEED_MORE);
    assert_int_equal(used, 0);
}

/* RFC 2449 §4: 255 octets including CRLF is the longest acceptable line. */
static void test_line_limit_exact(void **state)
{
    char buf[300];
    struct pop3_lines st = {0};
    size_t len, used;
    memset(buf, 'A', sizeof buf);
    memcpy(buf + 253, "\r\n", 2);
    assert_int_equal(pop3_line_next(&st, buf, 255, POP3_LINE_MAX, &len, &used), POP3_LINE_OK);
    assert_int_equal(len, 253);
    assert_int_equal(used, 255);

    memset(buf, 'A', sizeof buf);
    memcpy(buf + 254, "\r\n", 2);
    enum pop3_line_result r = pop3_line_next(&st, buf, 256, POP3_LINE_MAX, &len, &used);
    assert_int_equal(r, POP3_LINE_NEED_MORE);
    assert_true(st.is_discarding);
    r = pop3_line_next(&st, buf + used, 256 - used, POP3_LINE_MAX, &len, &used);
    assert_int_equal(r, POP3_LINE_TOO_LONG);
    assert_false(st.is_discarding);
}

/* A long line followed by a pipelined command, arriving in 100-byte fragments: the
 * long line gives one TOO_LONG, the command survives, memory stays bounded. */
static void test_line_too_long_then_command(void **state)
{
    size_t total = 5000 + 2 + 6;
    char *buf = malloc(total);
    memset(buf, 'x', 5000);
    memcpy(buf + 5000, "\r\nSTAT\r\n", 8);
    struct pop3_lines st = {0};
    size_t off = 0, arrived = 0, len, used;
    int n_long = 0, n_ok = 0;
    for (int guard = 0; guard < 10000 && off < total; guard++) {
        enum pop3_line_result r =
            pop3_line_next(&st, buf + off, arrived - off, POP3_LINE_MAX, &len, &used);
        off += used;
        assert_true(arrived - off <= POP3_LINE_MAX); /* never more than a line buffered */
        if (r == POP3_LINE_TOO_LONG)
            n_long++;
        if (r == POP3_LINE_OK) {
            n_ok++;
            assert_int_equal(len, 4);
            assert_memory_equal(buf + off - 6, "STAT", 4);
        }
        if (r == POP3_LINE_NEED_MORE && used == 0)
            arrived = arrived + 100 < total ? arrived + 100 : total;
    }
    assert_int_equal(n_long, 1);
    assert_int_equal(n_ok, 1);
    assert_int_equal(off, total);
    free(buf);
}

/* ---- commands ---------------------------------------------------------------------- */

static void test_command_verbs(void **state)
{
    struct pop3_command c;
    assert_true(pop3_command_parse("retr 2", 6, &c));
    assert_int_equal(c.verb, POP3_VERB_RETR);
    assert_int_equal(c.args_len, 1);
    assert_memory_equal(c.args, "2", 1);

    assert_true(pop3_command_parse("Top 7214 0", 10, &c));
    assert_int_equal(c.verb, POP3_VERB_TOP);
    assert_int_equal(c.args_len, 6);

    assert_true(pop3_command_parse("CAPA", 4, &c));
    assert_int_equal(c.verb, POP3_VERB_CAPA);
    assert_int_equal(c.args_len, 0);

    assert_true(pop3_command_parse("XYZZY now", 9, &c));
    assert_int_equal(c.verb, POP3_VERB_UNKNOWN);
    assert_true(pop3_command_parse("STATS", 5, &c));
    assert_int_equal(c.verb, POP3_VERB_UNKNOWN);

    assert_false(pop3_command_parse("", 0, &c));
    assert_false(pop3_command_parse("ST\0T", 4, &c));
    assert_false(pop3_command_parse("NOOP\x1b", 5, &c));
    assert_string_equal(pop3_verb_name(POP3_VERB_UIDL), "UIDL");
}

/* RFC 1939 §7: PASS takes the rest of the line, spaces included. */
static void test_command_pass_spaces(void **state)
{
    struct pop3_command c;
    const char *line = "PASS  my secret pw ";
    assert_true(pop3_command_parse(line, strlen(line), &c));
    assert_int_equal(c.verb, POP3_VERB_PASS);
    assert_int_equal(c.args_len, strlen(" my secret pw "));
    assert_memory_equal(c.args, " my secret pw ", c.args_len);
}

static void test_args_split(void **state)
{
    struct pop3_args a;
    const char *s = "1  10";
    assert_true(pop3_args_split(s, strlen(s), false, &a));
    assert_int_equal(a.n, 2);
    assert_int_equal(a.len[0], 1);
    assert_memory_equal(a.v[1], "10", 2);

    assert_true(pop3_args_split("", 0, false, &a));
    assert_int_equal(a.n, 0);
    s = "a b c d e";
    assert_false(pop3_args_split(s, strlen(s), false, &a));
    char long_arg[60];
    memset(long_arg, 'z', sizeof long_arg);
    assert_false(pop3_args_split(long_arg, sizeof long_arg, false, &a));
    assert_true(pop3_args_split(long_arg, sizeof long_arg, true, &a));
}

static void test_number_parse(void **state)
{
    uint64_t n;
    assert_true(pop3_number_parse("7214", 4, &n));
    assert_int_equal(n, 7214);
    assert_true(pop3_number_parse("0", 1, &n));
    assert_int_equal(n, 0);
    assert_true(pop3_number_parse("18446744073709551615", 20, &n));
    assert_true(n == UINT64_MAX);
    assert_false(pop3_number_parse("18446744073709551616", 20, &n));
    assert_false(pop3_number_parse("99999999999999999999", 20, &n));
    assert_false(pop3_number_parse("", 0, &n));
    assert_false(pop3_number_parse("-1", 2, &n));
    assert_false(pop3_number_parse("+1", 2, &n));
    assert_false(pop3_number_parse("1a", 2, &n));
}

/* ---- converter ------------------------------------------------------------------------ */

/* Convert a whole message in one go; returns malloc'd output, *len_r bytes incl. ".\r\n",
 * *counted_r the octets the converter counted as sent, *size_r the LIST size. */
static char *convert(const char *msg, size_t len, bool is_top, uint64_t lines, size_t step,
                     size_t *len_r, uint64_t *counted_r, uint64_t *size_r)
{
    struct pop3_msg m;
    if (is_top)
        pop3_msg_init_top(&m, lines);
    else
        pop3_msg_init(&m);
    char *out = malloc(2 * len + 8);
    size_t used = 0;
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        used += pop3_msg_feed(&m, msg + off, n, out + used);
    }
    used += pop3_msg_finish(&m, out + used);
    out[used] = '\0';
    *len_r = used;
    *counted_r = m.out_total;
    *size_r = pop3_msg_size(&m);
    return out;
}

/* Lines of wire output (before the terminator) that begin with '.': each was stuffed. */
static size_t stuffed_lines(const char *wire, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i + 3 < len; i++)
        if (wire[i] == '.' && (i == 0 || wire[i - 1] == '\n'))
            n++;
    return n;
}

static void expect_conversion(const char *msg, bool is_top, uint64_t lines, const char *want)
{
    size_t len = strlen(msg);
    for (size_t step = 1; step <= len + 1; step++) {
        size_t out_len;
        uint64_t counted, size;
        char *out = convert(msg, len, is_top, lines, step, &out_len, &counted, &size);
        assert_string_equal(out, want);
        /* The counted octets are everything before the terminating ".\r\n"... */
        assert_int_equal(counted, out_len - 3);
        /* ...and RFC 1939 §11: the size does not count the byte-stuffing. */
        assert_int_equal(size, out_len - 3 - stuffed_lines(out, out_len));
        free(out);
    }
}

/* The LIST size of a whole message. */
static uint64_t list_size(const char *msg)
{
    size_t out_len;
    uint64_t counted, size;
    free(convert(msg, strlen(msg), false, 0, strlen(msg) + 1, &out_len, &counted, &size));
    return size;
}

static void test_msg_crlf_and_stuffing(void **state)
{
    expect_conversion("Subject: x\n\nbody\n.\n..two\nend\n", false, 0,
                      "Subject: x\r\n\r\nbody\r\n..\r\n...two\r\nend\r\n.\r\n");
    /* A CRLF file keeps single CRLFs; a missing final line end is added. */
    expect_conversion("A: b\r\n\r\n.x", false, 0, "A: b\r\n\r\n..x\r\n.\r\n");
    expect_conversion("", false, 0, ".\r\n");
    expect_conversion(".", false, 0, "..\r\n.\r\n");
    /* A bare CR stays as it is and does not start a line. */
    expect_conversion("a\r.b\n", false, 0, "a\r.b\r\n.\r\n");
    /* CR-only line ends: kept; the last one gets its LF so the terminator starts a line. */
    expect_conversion("a\r.b\r", false, 0, "a\r.b\r\n.\r\n");
}

/* RFC 1939 §11: dot-lines "need not (and must not) be counted twice". The LIST size is
 * the size with CRLF line ends, the Maildir W= size Dovecot lists. */
static void test_msg_size_ignores_stuffing(void **state)
{
    const char *msg = "Subject: dots\n\n.\n..\n.leading\nplain\n";
    const char *crlf = "Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nplain\r\n";
    assert_int_equal(list_size(msg), strlen(crlf));
    /* Same size whatever the stored line ends: LF, CRLF. */
    assert_int_equal(list_size(crlf), strlen(crlf));
    /* No final line end: counted with the CRLF RETR adds. */
    assert_int_equal(list_size("a\n.b"), strlen("a\r\n.b\r\n"));
}

/* RFC 1939 §7 TOP: header, blank line, then n body lines. */
static void test_msg_top(void **state)
{
    const char *msg = "From: a\nTo: b\n\nline1\n.line2\nline3\n";
    expect_conversion(msg, true, 0, "From: a\r\nTo: b\r\n\r\n.\r\n");
    expect_conversion(msg, true, 2, "From: a\r\nTo: b\r\n\r\nline1\r\n..line2\r\n.\r\n");
    expect_conversion(msg, true, 100, "From: a\r\nTo: b\r\n\r\nline1\r\n..line2\r\nline3\r\n.\r\n");
    /* No body at all; and a header-only message without a final LF. */
    expect_conversion("From: a\n", true, 5, "From: a\r\n.\r\n");
    expect_conversion("From: a", true, 0, "From: a\r\n.\r\n");
}

/* The size scan over a file equals the LIST size of the converted stream. */
static void test_msg_size_fd(void **state)
{
    char path[] = "/tmp/test_pop3_parse_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    /* 200 KB with dot-lines straddling the 64 KB read boundaries */
    size_t len = 200 * 1024;
    char *msg = malloc(len);
    for (size_t i = 0; i < len; i++)
        msg[i] = (i % 37 == 0) ? '\n' : (i % 37 == 1 && i % 3 == 0) ? '.' : 'q';
    assert_int_equal(write(fd, msg, len), (ssize_t)len);
    uint64_t size = 0;
    assert_int_equal(pop3_msg_size_fd(fd, &size), 0);
    size_t out_len;
    uint64_t counted, converted_size;
    char *out = convert(msg, len, false, 0, 65536, &out_len, &counted, &converted_size);
    assert_true(size == converted_size);
    size_t n_stuffed = stuffed_lines(out, out_len);
    assert_true(n_stuffed > 1000);
    assert_int_equal(size, out_len - 3 - n_stuffed);
    free(out);
    free(msg);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_crlf_and_lf),
        cmocka_unit_test(test_line_limit_exact),
        cmocka_unit_test(test_line_too_long_then_command),
        cmocka_unit_test(test_command_verbs),
        cmocka_unit_test(test_command_pass_spaces),
        cmocka_unit_test(test_args_split),
        cmocka_unit_test(test_number_parse),
        cmocka_unit_test(test_msg_crlf_and_stuffing),
        cmocka_unit_test(test_msg_size_ignores_stuffing),
        cmocka_unit_test(test_msg_top),
        cmocka_unit_test(test_msg_size_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
