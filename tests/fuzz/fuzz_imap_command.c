/*
 * fuzz_imap_command.c - libFuzzer target for the IMAP command parser: the input is cut
 * into lines as the session does; literals are fed from the following bytes. Whole
 * commands then go through the argument interpretation of src/imap/args.c: LIST
 * (LIST-EXTENDED, LIST-STATUS), APPEND (MULTIAPPEND), STATUS items, SEARCH RETURN
 * (ESEARCH, SAVE, PARTIAL), SORT criteria and RETURN (ESORT), THREAD algorithms,
 * GETMETADATA/SETMETADATA (RFC 5464).
 */
#include <stdint.h>
#include <string.h>

#include "imap/args.h"
#include "imap/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct imap_parser p;
    imap_parser_init(&p, 4096);
    const char *s = (const char *)data;
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
        if (r == IMAP_PARSE_DONE && strcmp(p.name, "LIST") == 0) {
            struct imap_list_request lr;
            const char *why;
            (void)imap_list_request_parse(p.args.list, p.args.n, &lr, &why);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "APPEND") == 0) {
            struct imap_append_request ar;
            const char *why;
            if (imap_append_request_parse(p.args.list, p.args.n, &ar, &why))
                imap_append_request_free(&ar);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "SEARCH") == 0 && p.args.n >= 2) {
            struct imap_search_return ret;
            (void)imap_search_return_parse(&p.args.list[1], &ret);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "SORT") == 0 && p.args.n >= 1) {
            struct imap_sort_criterion c[IMAP_SORT_MAX_CRITERIA];
            size_t n_c;
            struct imap_search_return ret;
            size_t at = 0;
            if (p.args.n >= 3 && imap_arg_is_atom(&p.args.list[0], "RETURN")) {
                (void)imap_search_return_parse(&p.args.list[1], &ret);
                at = 2;
            }
            (void)imap_sort_criteria_parse(&p.args.list[at], c, &n_c);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "GETMETADATA") == 0) {
            struct imap_getmetadata_request gr;
            (void)imap_getmetadata_parse(p.args.list, p.args.n, &gr);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "SETMETADATA") == 0) {
            struct imap_setmetadata_request sr;
            (void)imap_setmetadata_parse(p.args.list, p.args.n, &sr);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "COMPARATOR") == 0) {
            unsigned matched;
            (void)imap_comparator_choose(p.args.list, p.args.n, &matched);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "THREAD") == 0 && p.args.n >= 1) {
            enum imap_thread_algorithm alg;
            (void)imap_thread_algorithm_parse(&p.args.list[0], &alg);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "ID") == 0) {
            char ip[64];
            (void)imap_id_originating_ip(p.args.list, p.args.n, ip, sizeof ip);
        } else if (r == IMAP_PARSE_DONE && strcmp(p.name, "STATUS") == 0 && p.args.n == 2) {
            unsigned items;
            (void)imap_status_items_parse(&p.args.list[1], &items);
        }
        if (r == IMAP_PARSE_DONE && p.args.n > 0 && p.args.list[0].type == IMAP_ARG_ATOM) {
            struct imap_seqset set;
            if (imap_seqset_parse(p.args.list[0].str, &set)) {
                (void)imap_seqset_contains(&set, 5, 10);
                imap_seqset_free(&set);
            }
        }
        imap_parser_reset(&p);
        commands++;
    }
    imap_parser_free(&p);
    return 0;
}
