/*
 * args.c - meaning of the LIST, APPEND, STATUS and SEARCH RETURN arguments (see args.h): pure
 * functions over the parser's argument tree.
 */
#include "imap/args.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <ctype.h>
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
        {"APPENDLIMIT", IMAP_ST_APPENDLIMIT},
        {"MAILBOXID", IMAP_ST_MAILBOXID},
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

/* RFC 5267 §4.4 partial-range "lo:hi" (RFC 9394: or "-lo:-hi" from the end). */
static bool imap_partial_range_parse(const char *s, struct imap_search_return *r)
{
    bool is_from_end = *s == '-';
    uint64_t v[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        if (is_from_end) {
            if (*s != '-')
                return false;
            s++;
        }
        if (*s < '1' || *s > '9')
            return false;
        while (*s >= '0' && *s <= '9') {
            v[k] = v[k] * 10 + (uint64_t)(*s++ - '0');
            if (v[k] > UINT32_MAX)
                return false;
        }
        if (k == 0 && *s++ != ':')
            return false;
    }
    if (*s != '\0')
        return false;
    r->partial_lo = (uint32_t)(v[0] < v[1] ? v[0] : v[1]);
    r->partial_hi = (uint32_t)(v[0] < v[1] ? v[1] : v[0]);
    r->is_from_end = is_from_end;
    return true;
}

bool imap_search_return_parse(const struct imap_arg *list, struct imap_search_return *r)
{
    memset(r, 0, sizeof *r);
    if (!list || list->type != IMAP_ARG_LIST || list->n > IMAP_SEARCH_MAX_RETURN)
        return false;
    for (size_t i = 0; i < list->n; i++) {
        const struct imap_arg *a = &list->list[i];
        if (imap_arg_is_atom(a, "MIN")) {
            r->opts |= IMAP_SEARCH_RET_MIN;
        } else if (imap_arg_is_atom(a, "MAX")) {
            r->opts |= IMAP_SEARCH_RET_MAX;
        } else if (imap_arg_is_atom(a, "ALL")) {
            r->opts |= IMAP_SEARCH_RET_ALL;
        } else if (imap_arg_is_atom(a, "COUNT")) {
            r->opts |= IMAP_SEARCH_RET_COUNT;
        } else if (imap_arg_is_atom(a, "SAVE")) {
            r->opts |= IMAP_SEARCH_RET_SAVE;
        } else if (imap_arg_is_atom(a, "PARTIAL") && !(r->opts & IMAP_SEARCH_RET_PARTIAL) &&
                   i + 1 < list->n && list->list[i + 1].type == IMAP_ARG_ATOM &&
                   imap_partial_range_parse(list->list[i + 1].str, r)) {
            r->opts |= IMAP_SEARCH_RET_PARTIAL;
            i++;
        } else {
            return false;
        }
    }
    /* RFC 4731 §3.1: an empty list is the same as (ALL) */
    if (r->opts == 0)
        r->opts = IMAP_SEARCH_RET_ALL;
    /* RFC 5267 §4.4: PARTIAL and ALL are mutually exclusive */
    if ((r->opts & IMAP_SEARCH_RET_PARTIAL) && (r->opts & IMAP_SEARCH_RET_ALL))
        return false;
    return true;
}

/* ---- SORT (RFC 5256 §3 sort-criteria, RFC 5957) ------------------------------------ */

bool imap_sort_criteria_parse(const struct imap_arg *list, struct imap_sort_criterion *c,
                              size_t *n_r)
{
    static const struct {
        const char *name;
        enum imap_sort_key key;
    } keys[] = {
        {"ARRIVAL", IMAP_SORT_ARRIVAL}, {"CC", IMAP_SORT_CC},
        {"DATE", IMAP_SORT_DATE},       {"FROM", IMAP_SORT_FROM},
        {"SIZE", IMAP_SORT_SIZE},       {"SUBJECT", IMAP_SORT_SUBJECT},
        {"TO", IMAP_SORT_TO},           {"DISPLAYFROM", IMAP_SORT_DISPLAYFROM},
        {"DISPLAYTO", IMAP_SORT_DISPLAYTO},
    };
    *n_r = 0;
    if (!list || list->type != IMAP_ARG_LIST || list->n == 0)
        return false;
    bool is_reverse = false;
    for (size_t i = 0; i < list->n; i++) {
        const struct imap_arg *a = &list->list[i];
        if (imap_arg_is_atom(a, "REVERSE")) {
            if (is_reverse)
                return false;
            is_reverse = true;
            continue;
        }
        size_t k = 0;
        while (k < sizeof keys / sizeof keys[0] && !imap_arg_is_atom(a, keys[k].name))
            k++;
        if (k == sizeof keys / sizeof keys[0] || *n_r == IMAP_SORT_MAX_CRITERIA)
            return false;
        c[*n_r].key = keys[k].key;
        c[*n_r].is_reverse = is_reverse;
        (*n_r)++;
        is_reverse = false;
    }
    return !is_reverse; /* a trailing REVERSE reverses nothing */
}

bool imap_thread_algorithm_parse(const struct imap_arg *a, enum imap_thread_algorithm *alg_r)
{
    if (imap_arg_is_atom(a, "ORDEREDSUBJECT"))
        *alg_r = IMAP_THREAD_ORDEREDSUBJECT;
    else if (imap_arg_is_atom(a, "REFERENCES"))
        *alg_r = IMAP_THREAD_REFERENCES;
    else if (imap_arg_is_atom(a, "REFS"))
        *alg_r = IMAP_THREAD_REFS;
    else
        return false;
    return true;
}

/* ---- METADATA (RFC 5464 §4) ---------------------------------------------------------- */

bool imap_metadata_name_ok(char *name)
{
    size_t len = strlen(name);
    bool is_private = strncasecmp(name, "/private/", 9) == 0;
    if (len > IMAP_METADATA_MAX_NAME || (!is_private && strncasecmp(name, "/shared/", 8) != 0))
        return false;
    if (len <= (is_private ? 9u : 8u) || name[len - 1] == '/' || strstr(name, "//"))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7f || c == '*' || c == '%')
            return false;
    }
    for (size_t i = 0; i < len; i++) /* entry names compare case-insensitively */
        name[i] = (char)tolower((unsigned char)name[i]);
    return true;
}

bool imap_getmetadata_parse(struct imap_arg *args, size_t n, struct imap_getmetadata_request *r)
{
    memset(r, 0, sizeof *r);
    size_t at = 0;
    if (n >= 1 && args[0].type == IMAP_ARG_LIST) {
        /* options: MAXSIZE n, DEPTH 0 / 1 / infinity (§4.2.1, §4.2.2) */
        const struct imap_arg *o = &args[0];
        for (size_t i = 0; i < o->n; i += 2) {
            if (i + 1 >= o->n || o->list[i + 1].type != IMAP_ARG_ATOM)
                return false;
            const char *v = o->list[i + 1].str;
            char *end;
            if (imap_arg_is_atom(&o->list[i], "MAXSIZE") && !r->has_maxsize && *v >= '0' &&
                *v <= '9') {
                r->maxsize = strtoull(v, &end, 10);
                if (*end)
                    return false;
                r->has_maxsize = true;
            } else if (imap_arg_is_atom(&o->list[i], "DEPTH")) {
                if (strcmp(v, "0") == 0)
                    r->depth = 0;
                else if (strcmp(v, "1") == 0)
                    r->depth = 1;
                else if (strcasecmp(v, "infinity") == 0)
                    r->depth = -1;
                else
                    return false;
            } else {
                return false;
            }
        }
        at = 1;
    }
    if (n != at + 2 || !imap_arg_is_string(&args[at]))
        return false;
    r->mailbox = &args[at];
    struct imap_arg *e = &args[at + 1];
    struct imap_arg *list = e->type == IMAP_ARG_LIST ? e->list : e;
    size_t count = e->type == IMAP_ARG_LIST ? e->n : 1;
    if (count == 0 || count > IMAP_METADATA_MAX_ENTRIES)
        return false;
    for (size_t i = 0; i < count; i++) {
        if (!imap_arg_is_string(&list[i]) || !imap_metadata_name_ok(list[i].str))
            return false;
        r->entries[r->n_entries++] = list[i].str;
    }
    return true;
}

bool imap_setmetadata_parse(struct imap_arg *args, size_t n, struct imap_setmetadata_request *r)
{
    memset(r, 0, sizeof *r);
    if (n != 2 || !imap_arg_is_string(&args[0]) || args[1].type != IMAP_ARG_LIST ||
        args[1].n == 0 || args[1].n % 2 || args[1].n / 2 > IMAP_METADATA_MAX_ENTRIES)
        return false;
    r->mailbox = &args[0];
    struct imap_arg *l = args[1].list;
    for (size_t i = 0; i < args[1].n; i += 2) {
        if (!imap_arg_is_string(&l[i]) || !imap_metadata_name_ok(l[i].str) ||
            !imap_arg_is_string(&l[i + 1]))
            return false;
        r->names[r->n] = l[i].str;
        /* the atom NIL removes the entry; a quoted "NIL" is a value */
        r->values[r->n] = imap_arg_is_atom(&l[i + 1], "NIL") ? NULL : &l[i + 1];
        r->n++;
    }
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

/* RFC 4469 §5: cat-part *(SP cat-part), each "TEXT" SP literal or "URL" SP astring. */
static bool imap_catenate_parts_ok(const struct imap_arg *list)
{
    if (list->n == 0 || list->n % 2 != 0 || list->n / 2 > IMAP_CATENATE_MAX_PARTS)
        return false;
    for (size_t k = 0; k < list->n; k += 2) {
        const struct imap_arg *v = &list->list[k + 1];
        if (imap_arg_is_atom(&list->list[k], "TEXT")) {
            if (v->type != IMAP_ARG_LITERAL)
                return false;
        } else if (!imap_arg_is_atom(&list->list[k], "URL") || !imap_arg_is_string(v) ||
                   v->is_external) {
            return false;
        }
    }
    return true;
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
        if (i + 1 < n && imap_arg_is_atom(&args[i], "CATENATE") &&
            args[i + 1].type == IMAP_ARG_LIST) {
            if (!imap_catenate_parts_ok(&args[i + 1])) {
                *error_r = "Invalid CATENATE parts.";
                goto fail;
            }
            m->catenate = &args[i + 1];
            i += 2;
            continue;
        }
        if (i >= n || !imap_arg_is_string(&args[i]))
            goto fail;
        m->data = &args[i++];
    }
    /* RFC 3502 §6.3.11: append-data is a literal; a lone message may still be a quoted
     * string, as APPEND always accepted */
    for (size_t k = 0; r->n_parts > 1 && k < r->n_parts; k++) {
        if (r->parts[k].data && r->parts[k].data->type != IMAP_ARG_LITERAL)
            goto fail;
    }
    *error_r = NULL;
    return true;
fail:
    imap_append_request_free(r);
    return false;
}
