/*
 * fuzz_pop3_command.c - libFuzzer target for the POP3 parsers (src/pop3/parse.h).
 *
 * The input is used twice:
 *   1. as a client byte stream, framed into lines in fragments (sizes from the input),
 *      each line parsed as a command and its arguments and numbers;
 *   2. as a stored message, converted for RETR and for TOP in two different chunkings.
 * Invariants checked: framing never buffers more than a line; the conversion is the same
 * whatever the chunking; the counted size (LIST/STAT) equals the octets sent; every LF
 * sent follows a CR; the terminator "CRLF.CRLF" appears only at the very end.
 */
#include "pop3/parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void fuzz_lines(const uint8_t *data, size_t size)
{
    struct pop3_lines st = {0};
    size_t off = 0, arrived = 0;
    size_t frag = size > 0 ? (size_t)data[0] % 97 + 1 : 1;
    /* Each turn either consumes bytes or lets more arrive: bounded by 2 * size + 2. */
    for (size_t guard = 0; guard < 2 * size + 2 && off < size; guard++) {
        size_t len = 0, used = 0;
        const char *p = (const char *)data + off;
        enum pop3_line_result r = pop3_line_next(&st, p, arrived - off, POP3_LINE_MAX, &len, &used);
        if (used > arrived - off || len > POP3_LINE_MAX)
            abort();
        if (r == POP3_LINE_OK) {
            struct pop3_command cmd;
            if (pop3_command_parse(p, len, &cmd)) {
                struct pop3_args a;
                if (cmd.args < p || cmd.args + cmd.args_len > p + len)
                    abort();
                (void)pop3_verb_name(cmd.verb);
                if (pop3_args_split(cmd.args, cmd.args_len, cmd.verb == POP3_VERB_AUTH, &a)) {
                    for (size_t i = 0; i < a.n; i++) {
                        uint64_t n;
                        (void)pop3_number_parse(a.v[i], a.len[i], &n);
                    }
                }
            }
        }
        off += used;
        if (arrived - off > POP3_LINE_MAX)
            abort(); /* never more than one capped line waits */
        if (r == POP3_LINE_NEED_MORE && used == 0) {
            if (arrived == size)
                break;
            arrived = arrived + frag < size ? arrived + frag : size;
        }
    }
}

static char *convert(const uint8_t *data, size_t size, bool is_top, uint64_t lines, size_t step,
                     size_t *len_r, uint64_t *counted_r, uint64_t *size_r)
{
    struct pop3_msg m;
    if (is_top)
        pop3_msg_init_top(&m, lines);
    else
        pop3_msg_init(&m);
    char *out = malloc(2 * size + 8);
    if (out == NULL)
        abort();
    size_t used = 0;
    for (size_t off = 0; off < size; off += step) {
        size_t n = size - off < step ? size - off : step;
        used += pop3_msg_feed(&m, (const char *)data + off, n, out + used);
    }
    used += pop3_msg_finish(&m, out + used);
    *len_r = used;
    *counted_r = m.out_total;
    *size_r = pop3_msg_size(&m);
    return out;
}

static void fuzz_message(const uint8_t *data, size_t size, bool is_top)
{
    uint64_t lines = size > 1 ? data[1] % 8 : 0;
    size_t step = size > 2 ? (size_t)data[2] % 31 + 1 : 1;
    size_t len_a, len_b;
    uint64_t counted_a, counted_b, size_a, size_b;
    char *a = convert(data, size, is_top, lines, size > 0 ? size : 1, &len_a, &counted_a, &size_a);
    char *b = convert(data, size, is_top, lines, step, &len_b, &counted_b, &size_b);
    if (len_a != len_b || memcmp(a, b, len_a) != 0 || counted_a != counted_b || size_a != size_b)
        abort();
    if (counted_a + 3 != len_a || len_a > 2 * size + 5)
        abort();
    if (memcmp(a + len_a - 3, ".\r\n", 3) != 0)
        abort();
    if (len_a >= 5 && memcmp(a + len_a - 5, "\r\n.\r\n", 5) != 0)
        abort();
    uint64_t n_stuffed = 0;
    for (size_t i = 0; i < len_a; i++) {
        if (a[i] == '\n' && (i == 0 || a[i - 1] != '\r'))
            abort();
        /* a line consisting of "." alone before the end would end the reply early */
        bool is_line_start = i == 0 || a[i - 1] == '\n';
        if (is_line_start && i + 3 < len_a && memcmp(a + i, ".\r\n", 3) == 0)
            abort();
        if (is_line_start && i + 3 < len_a && a[i] == '.')
            n_stuffed++; /* every line-start dot before the terminator was stuffed */
    }
    /* RFC 1939 §11: the LIST size is what was sent less the byte-stuffing */
    if (size_a != counted_a - n_stuffed)
        abort();
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lines(data, size);
    fuzz_message(data, size, false);
    fuzz_message(data, size, true);
    return 0;
}
