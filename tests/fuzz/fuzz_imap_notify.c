/*
 * fuzz_imap_notify.c - libFuzzer target for the IMAP4rev2 / UTF8=ACCEPT / LITERAL- /
 * NOTIFY grammar: byte 0 sets the parser's modes (bit 0: a UTF-8 session checks its
 * quoted strings, RFC 6855 §3; bit 1: LITERAL-'s 4096-octet limit, RFC 7888 §5), the rest
 * is cut into lines and literals as the session does. Whole commands go through NOTIFY
 * (RFC 5465, src/imap/notify.c), APPEND with the UTF8 data item (RFC 6855 §4) and STATUS
 * items (RFC 9051 DELETED); every string argument through the mailbox name conversions.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imap/args.h"
#include "imap/mailname.h"
#include "imap/notify.h"
#include "imap/parse.h"

/* Every string of the tree, as a UTF-8 session's mailbox name and as a stored one. */
static void fuzz_names(const struct imap_arg *a, int depth)
{
    if (depth > IMAP_MAX_LIST_DEPTH)
        return;
    if (a->type == IMAP_ARG_LIST) {
        for (size_t i = 0; i < a->n; i++)
            fuzz_names(&a->list[i], depth + 1);
        return;
    }
    if (!a->str || memchr(a->str, '\0', a->len))
        return;
    free(imap_mailname_import(a->str, a->len));
    free(imap_mailname_export(a->str));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct imap_parser p;
    imap_parser_init(&p, 1 << 16);
    p.is_utf8 = data[0] & 1;
    p.max_nonsync = data[0] & 2 ? IMAP_LITERAL_MINUS_MAX : 0;
    const char *s = (const char *)data + 1;
    size--;
    size_t pos = 0;
    int commands = 0;
    while (pos < size && commands < 1000) {
        const char *nl = memchr(s + pos, '\n', size - pos);
        size_t le = nl ? (size_t)(nl - s) : size;
        size_t len = le - pos;
        if (len > 0 && s[pos + len - 1] == '\r')
            len--;
        enum imap_parse_result r = imap_parser_feed_line(&p, s + pos, len);
        pos = nl ? le + 1 : size;
        if (r == IMAP_PARSE_LITERAL) {
            size_t n = (size_t)imap_parser_literal_remaining(&p);
            if (n > size - pos)
                n = size - pos;
            imap_parser_feed_literal(&p, s + pos, n);
            pos += n;
            if (imap_parser_literal_remaining(&p) > 0)
                break;
            continue;
        }
        if (r == IMAP_PARSE_ERROR && p.is_nonsync_too_big) {
            /* the session skips the literal's octets */
            uint64_t skip = p.literal_size;
            pos += skip < size - pos ? (size_t)skip : size - pos;
        }
        if (r == IMAP_PARSE_DONE && strcmp(p.name, "NOTIFY") == 0) {
            struct imap_notify_request nr;
            const char *why;
            (void)imap_notify_parse(p.args.list, p.args.n, &nr, &why);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "APPEND") == 0) {
            struct imap_append_request ar;
            const char *why;
            if (imap_append_request_parse(p.args.list, p.args.n, &ar, &why))
                imap_append_request_free(&ar);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "STATUS") == 0 && p.args.n == 2) {
            unsigned items;
            (void)imap_status_items_parse(&p.args.list[1], &items);
        }
        if (r == IMAP_PARSE_DONE)
            fuzz_names(&p.args, 0);
        imap_parser_reset(&p);
        commands++;
    }
    imap_parser_free(&p);
    return 0;
}
