/*
 * fuzz_milter_reply.c - libFuzzer target for what a milter sends back (milter/milter.c):
 * the input is a stream of reply packets (4-octet length, command, data) as a milter
 * would write them; each is parsed, the modifications are collected like the client
 * does at end of message, and the message is rewritten with them.
 */
#include "milter/milter.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char message[] = "Subject: hi\r\nX-A: 1\r\nX-A: 2\r\n folded\r\nFrom: a@b\r\n\r\nbody\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct milter_outcome o;
    memset(&o, 0, sizeof o);
    buf_init(&o.new_body, 1 << 20);
    size_t pos = 0;
    while (size - pos >= 4 && o.n_changes < 64) {
        uint32_t n;
        memcpy(&n, data + pos, 4);
        size_t len = ntohl(n);
        pos += 4;
        if (len > size - pos)
            break;
        struct milter_reply r;
        if (milter_reply_parse((const char *)data + pos, len, &r)) {
            assert(!r.str1 || (r.str1 >= (const char *)data + pos &&
                               r.str1 < (const char *)data + pos + len));
            enum milter_change_kind kind = MILTER_ADD_HEADER;
            bool is_change = true;
            switch (r.cmd) {
            case 'h':
                kind = MILTER_ADD_HEADER;
                break;
            case 'i':
                kind = MILTER_INSERT_HEADER;
                break;
            case 'm':
                kind = MILTER_CHANGE_HEADER;
                break;
            case 'b':
                o.has_new_body = true;
                buf_append(&o.new_body, r.data, r.data_len);
                is_change = false;
                break;
            default:
                is_change = false;
            }
            if (is_change) {
                struct milter_change *c = realloc(o.changes, (o.n_changes + 1) * sizeof *c);
                assert(c);
                o.changes = c;
                o.changes[o.n_changes++] = (struct milter_change){kind, r.index, strdup(r.str1),
                                                                  strdup(r.str2)};
            }
        }
        pos += len;
    }
    struct buf out;
    buf_init(&out, 0);
    if (milter_message_rewrite(message, sizeof message - 1, &o, 1 << 22, &out) == 0)
        assert(out.len >= 2);
    buf_free(&out);
    milter_outcome_free(&o);
    return 0;
}
