/*
 * args.c - meaning of the LIST, APPEND, STATUS and SEARCH RETURN arguments (see args.h): pure
 * functions over the parser's argument tree.
 */
#include "imap/args.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap/session.h"

/* ---- ID ---------------------------------------------------------------------------- */

bool imap_id_originating_ip(const struct imap_arg *args, size_t n, char *ip_r, size_t size)
{
    /* ID ("name" "value" ...) or ID NIL */
    if (n != 1 || args[0].type != IMAP_ARG_LIST)
        return false;
    const struct imap_arg *l = &args[0];
    if (l->n % 2 != 0 || l->n / 2 > IMAP_ID_MAX_FIELDS)
        return false;
    for (size_t i = 0; i < l->n; i += 2) {
        const struct imap_arg *field = &l->list[i], *value = &l->list[i + 1];
        if (field->type == IMAP_ARG_LIST || field->len > 30 || !field->str)
            return false;
        if (strcasecmp(field->str, "x-originating-ip") != 0 || value->type == IMAP_ARG_LIST ||
            !value->str)
            continue;
        unsigned char bin[sizeof(struct in6_addr)];
        if (value->len >= size || value->len >= INET6_ADDRSTRLEN ||
            strlen(value->str) != value->len ||
            (inet_pton(AF_INET, value->str, bin) != 1 && inet_pton(AF_INET6, value->str, bin) != 1))
            return false;
        memcpy(ip_r, value->str, value->len + 1);
        return true;
    }
    return false;
}

/* ---- STATUS items ------------------------------------------------------------------- */

bool imap_status_items_parse(const struct imap_arg *list, unsigned *items_r)
{
    static const struct {
        const char *name;
        unsigned bit;
    } items[] = {
        {"MESSAGES", IMAP_ST_MESSAGES},
        {"RECENT", IMAP_ST_RECENT},
        {"UIDNEXT", IMAP_ST_UIDNEXT},
        {"UIDVALIDITY", IMAP_ST_UIDVALIDITY},
        {"UNSEEN", IMAP_ST_UNSEEN},
        {"SIZE", IMAP_ST_SIZE},
        {"HIGHESTMODSEQ", IMAP_ST_HIGHESTMODSEQ},
    };
    *items_r = 0;
    if (!list || list->type != IMAP_ARG_LIST || list->n == 0)
        return false;
    for (size_t i = 0; i < list->n; i++) {
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof items / sizeof items[0] && !bit; k++)
            if (imap_arg_is_atom(&list->list[i], items[k].name))
                bit = items[k].bit;
        if (!bit)
            return false;
        *items_r |= bit;
    }
    return true;
}

/* ---- SEARCH RETURN (RFC 4731 §3.1) ------------------------------------------------- */

bool imap_search_return_parse(const struct imap_arg *list, unsigned *opts_r)
{
    *opts_r = 0;
    if (!list || list->type != IMAP_ARG_LIST || list->n > IMAP_SEARCH_MAX_RETURN)
        return false;
    for (size_t i = 0; i < list->n; i++) {
        const struct imap_arg *a = &list->list[i];
        if (imap_arg_is_atom(a, "MIN"))
            *opts_r |= IMAP_SEARCH_RET_MIN;
        else if (imap_arg_is_atom(a, "MAX"))
            *opts_r |= IMAP_SEARCH_RET_MAX;
        else if (imap_arg_is_atom(a, "ALL"))
            *opts_r |= IMAP_SEARCH_RET_ALL;
        else if (imap_arg_is_atom(a, "COUNT"))
            *opts_r |= IMAP_SEARCH_RET_COUNT;
        else
            return false; /* SAVE (RFC 5182) is not offered */
    }
    /* RFC 4731 §3.1: an empty list is the same as (ALL) */
    if (*opts_r == 0)
        *opts_r = IMAP_SEARCH_RET_ALL;
    return true;
}

/* ---- LIST (RFC 5258 §6 grammar) ----------------------------------------------------- */

/* list-select-opts = "(" [list-select-option *(SP list-select-option)] ")" */
static bool imap_list_select_parse(const struct imap_arg *l, unsigned *sel_r, const char **error_r)
{
    if (l->n > IMAP_LIST_MAX_OPTIONS) {
        *error_r = "Too many selection options";
        return false;
    }
    for (size_t i = 0; i < l->n; i++) {
        const struct imap_arg *a = &l->list[i];
        if (imap_arg_is_atom(a, "SUBSCRIBED"))
            *sel_r |= IMAP_LIST_SEL_SUBSCRIBED;
        else if (imap_arg_is_atom(a, "REMOTE"))
            *sel_r |= IMAP_LIST_SEL_REMOTE;
        else if (imap_arg_is_atom(a, "RECURSIVEMATCH"))
            *sel_r |= IMAP_LIST_SEL_RECURSIVEMATCH;
        else if (imap_arg_is_atom(a, "SPECIAL-USE"))
            *sel_r |= IMAP_LIST_SEL_SPECIAL_USE;
        else {
            /* RFC 5258 §3: an unrecognised selection option is a BAD */
            *error_r = "Unknown select options";
            return false;
        }
    }
    /* RFC 5258 §3: RECURSIVEMATCH alone (or with only REMOTE) is a BAD */
    if ((*sel_r & IMAP_LIST_SEL_RECURSIVEMATCH) &&
        !(*sel_r & (IMAP_LIST_SEL_SUBSCRIBED | IMAP_LIST_SEL_SPECIAL_USE))) {
        *error_r = "RECURSIVEMATCH must not be the only selection";
        return false;
    }
    return true;
}

/* list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")" */
static bool imap_list_return_parse(const struct imap_arg *l, struct imap_list_request *r,
                                   const char **error_r)
{
    if (l->n > IMAP_LIST_MAX_OPTIONS) {
        *error_r = "Too many return options";
        return false;
    }
    for (size_t i = 0; i < l->n; i++) {
        const struct imap_arg *a = &l->list[i];
        if (imap_arg_is_atom(a, "SUBSCRIBED")) {
            r->ret |= IMAP_LIST_RET_SUBSCRIBED;
        } else if (imap_arg_is_atom(a, "CHILDREN")) {
            r->ret |= IMAP_LIST_RET_CHILDREN;
        } else if (imap_arg_is_atom(a, "SPECIAL-USE")) {
            r->ret |= IMAP_LIST_RET_SPECIAL_USE;
        } else if (imap_arg_is_atom(a, "STATUS")) {
            /* RFC 5819 §2: STATUS (status-att-list) */
            if (i + 1 >= l->n || !imap_status_items_parse(&l->list[i + 1], &r->status_items)) {
                *error_r = "Invalid STATUS return option";
                return false;
            }
            r->ret |= IMAP_LIST_RET_STATUS;
            i++;
        } else {
            *error_r = "Unknown return options";
            return false;
        }
    }
    return true;
}

bool imap_list_request_parse(const struct imap_arg *args, size_t n, struct imap_list_request *r,
                             const char **error_r)
{
    memset(r, 0, sizeof *r);
    *error_r = "Invalid arguments";
    size_t i = 0;
    if (i < n && args[i].type == IMAP_ARG_LIST) {
        r->is_extended = true;
        if (!imap_list_select_parse(&args[i], &r->select, error_r))
            return false;
        i++;
    }
    if (i >= n || !imap_arg_is_string(&args[i]))
        return false;
    r->reference = args[i++].str;
    if (i >= n)
        return false;
    if (args[i].type == IMAP_ARG_LIST) {
        /* RFC 5258 §3: patterns = "(" list-mailbox *(SP list-mailbox) ")" */
        r->is_extended = true;
        r->is_pattern_list = true;
        if (args[i].n == 0) {
            *error_r = "Empty pattern list";
            return false;
        }
        if (args[i].n > IMAP_LIST_MAX_PATTERNS) {
            *error_r = "Too many patterns";
            return false;
        }
        for (size_t k = 0; k < args[i].n; k++) {
            if (!imap_arg_is_string(&args[i].list[k]))
                return false;
            r->patterns[r->n_patterns++] = args[i].list[k].str;
        }
    } else if (imap_arg_is_string(&args[i])) {
        r->patterns[r->n_patterns++] = args[i].str;
    } else {
        return false;
    }
    i++;
    if (i < n) {
        if (!imap_arg_is_atom(&args[i], "RETURN"))
            return false;
        r->is_extended = true;
        if (i + 2 != n || args[i + 1].type != IMAP_ARG_LIST)
            return false;
        if (!imap_list_return_parse(&args[i + 1], r, error_r))
            return false;
    }
    /* RFC 5258 §3: SUBSCRIBED selection implies the SUBSCRIBED return option;
     * RFC 6154 §5.1: SPECIAL-USE selection implies the SPECIAL-USE return option. */
    if (r->select & IMAP_LIST_SEL_SUBSCRIBED)
        r->ret |= IMAP_LIST_RET_SUBSCRIBED;
    if (r->select & IMAP_LIST_SEL_SPECIAL_USE)
        r->ret |= IMAP_LIST_RET_SPECIAL_USE;
    *error_r = NULL;
    return true;
}

/* ---- APPEND (RFC 3502 §6.3.11) ------------------------------------------------------ */

bool imap_date_time_parse(const char *s, time_t *t_r)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int day, year, hh, mm, ss, zone;
    char mon[4];
    while (*s == ' ')
        s++;
    if (sscanf(s, "%2d-%3c-%4d %2d:%2d:%2d %5d", &day, mon, &year, &hh, &mm, &ss, &zone) != 7)
        return false;
    mon[3] = '\0';
    const char *p = strcasestr(months, mon);
    if (!p || (p - months) % 3 != 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
        return false;
    struct tm tm = {0};
    tm.tm_mday = day;
    tm.tm_mon = (int)((p - months) / 3);
    tm.tm_year = year - 1900;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    time_t t = timegm(&tm);
    int z = zone < 0 ? -zone : zone;
    long off = (long)(z / 100) * 3600 + (long)(z % 100) * 60;
    *t_r = zone < 0 ? t + off : t - off;
    return true;
}

void imap_append_request_free(struct imap_append_request *r)
{
    for (size_t i = 0; i < r->n_parts; i++)
        imap_keywords_free(r->parts[i].keywords);
    free(r->parts);
    memset(r, 0, sizeof *r);
}

bool imap_append_request_parse(const struct imap_arg *args, size_t n, struct imap_append_request *r,
                               const char **error_r)
{
    memset(r, 0, sizeof *r);
    *error_r = "Usage: APPEND mailbox [(flags)] [date-time] literal";
    if (n < 2 || !imap_arg_is_string(&args[0]))
        return false;
    r->mailbox = &args[0];
    /* each message takes at least one argument: n - 1 bounds the count */
    size_t cap = n - 1 < IMAP_MAX_APPEND_MESSAGES ? n - 1 : IMAP_MAX_APPEND_MESSAGES;
    r->parts = calloc(cap, sizeof *r->parts);
    if (!r->parts) {
        *error_r = "Out of memory";
        return false;
    }
    size_t i = 1;
    while (i < n) {
        if (r->n_parts >= cap) {
            *error_r = "Too many messages in one APPEND.";
            goto fail;
        }
        struct imap_append_part *m = &r->parts[r->n_parts++];
        if (args[i].type == IMAP_ARG_LIST) {
            if (!imap_parse_flags(&args[i], &m->flags, &m->keywords)) {
                *error_r = "Invalid flags.";
                goto fail;
            }
            i++;
        }
        /* a quoted string followed by more is the date-time, else the message itself */
        if (i + 1 < n && args[i].type == IMAP_ARG_QUOTED) {
            if (!imap_date_time_parse(args[i].str, &m->internaldate)) {
                *error_r = "Invalid date-time.";
                goto fail;
            }
            i++;
        }
        if (i >= n || !imap_arg_is_string(&args[i]))
            goto fail;
        m->data = &args[i++];
    }
    /* RFC 3502 §6.3.11: append-data is a literal; a lone message may still be a quoted
     * string, as APPEND always accepted */
    for (size_t k = 0; r->n_parts > 1 && k < r->n_parts; k++) {
        if (r->parts[k].data->type != IMAP_ARG_LITERAL)
            goto fail;
    }
    *error_r = NULL;
    return true;
fail:
    imap_append_request_free(r);
    return false;
}
