/*
 * search.c - SEARCH and UID SEARCH (RFC 3501 §6.4.4), with RETURN options (RFC 4731 ESEARCH,
 * RFC 5267 PARTIAL and UPDATE: the updates themselves are context.c's).
 *
 * The criteria are parsed on the loop into a small tree (AND lists, OR, NOT, leaves);
 * evaluation runs in the pool, mapping a message file only when a key needs its text
 * (HEADER, FROM, TO, CC, BCC, SUBJECT, BODY, TEXT, SENT*). Text keys match through MIME
 * decoding (src/store/mime_decode.c): header values after RFC 2047 decoding, BODY/TEXT in
 * text parts after Content-Transfer-Encoding and charset decoding to UTF-8, case-insensitive
 * (ASCII and simple Latin/Greek/Cyrillic folding). The message file is mmap'd (the page
 * cache holds it, never the heap) and at most IMAP_SEARCH_MAX_DECODE decoded bytes per
 * message and key are looked at, so memory stays bounded and the work linear.
 * BEFORE/ON/SINCE compare the internal date's day in UTC; SENTBEFORE/SENTON/SENTSINCE the
 * Date: header's day (its time and zone disregarded, RFC 3501 §6.4.4).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/conn.h"
#include "imap/args.h"
#include "imap/session.h"
#include "imap/msgmap.h"
#include "store/mime.h"
#include "store/store.h"

#define IMAP_SEARCH_MAX_DEPTH 32
#define IMAP_SEARCH_MAX_KEYS  1000
/* Decoded bytes of one message one BODY/TEXT key looks at. */
#define IMAP_SEARCH_MAX_DECODE ((uint64_t)64 * 1024 * 1024)

enum skey_op {
    SK_ALL,
    SK_AND,
    SK_OR,
    SK_NOT,
    SK_FLAG,   /* has flag num */
    SK_UNFLAG, /* lacks flag num */
    SK_KEYWORD,
    SK_UNKEYWORD,
    SK_NEW,
    SK_OLD,
    SK_LARGER,
    SK_SMALLER,
    SK_BEFORE,
    SK_ON,
    SK_SINCE,
    SK_SENTBEFORE,
    SK_SENTON,
    SK_SENTSINCE,
    SK_HEADER,
    SK_BODY,
    SK_TEXT,
    SK_UIDSET,
    SK_SEQSET,
    SK_MODSEQ, /* RFC 7162 §3.1.5: mod-sequence >= num */
    SK_SAVED,   /* RFC 5182 "$": the saved result (sorted UIDs) */
    SK_OLDER,   /* RFC 5032 WITHIN: internal date at least num seconds ago */
    SK_YOUNGER, /* RFC 5032 WITHIN: internal date at most num seconds ago */
    SK_EMAILID, /* RFC 8474 §7: the message's EMAILID is str */
    SK_THREADID, /* RFC 8474 §7: the message's THREADID is str */
    SK_SAVEDBEFORE, /* RFC 8514: save date's day (UTC) */
    SK_SAVEDON,
    SK_SAVEDSINCE,
};

struct skey {
    enum skey_op op;
    uint64_t num;
    char *str, *str2;
    struct imap_seqset set;
    struct skey *kids; /* AND: list; OR: two; NOT: one */
    size_t n_kids;
    struct mime_matcher *matcher; /* HEADER/BODY/TEXT: the needle */
    bool is_address;              /* FROM/TO/CC/BCC: match the parsed addresses */
    uint32_t *uids;               /* SK_SAVED: ascending */
    size_t n_uids;
};

static void skey_free_contents(struct skey *k)
{
    free(k->str);
    free(k->str2);
    imap_seqset_free(&k->set);
    mime_matcher_free(k->matcher);
    free(k->uids);
    for (size_t i = 0; i < k->n_kids; i++)
        skey_free_contents(&k->kids[i]);
    free(k->kids);
}

static void skey_free(void *p)
{
    struct skey *k = p;
    if (!k)
        return;
    skey_free_contents(k);
    free(k);
}

struct skey_parser {
    struct imap_arg *args;
    size_t n, pos;
    size_t n_keys;
    bool needs_file;
    bool has_modseq;
    const uint32_t *saved; /* RFC 5182: the session's saved result, for "$" */
    size_t n_saved;
    enum mime_comparator cmp; /* RFC 5255: how text keys compare */
};

/* RFC 3501 §9 date: "1-Feb-1994" (optionally quoted): midnight UTC of that day. */
static bool imap_parse_date(const char *s, time_t *t_r)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int day, year;
    char mon[4];
    if (sscanf(s, "%2d-%3c-%4d", &day, mon, &year) != 3)
        return false;
    mon[3] = '\0';
    const char *p = strcasestr(months, mon);
    if (!p || (p - months) % 3 != 0 || day < 1 || day > 31 || year < 1900)
        return false;
    struct tm tm = {0};
    tm.tm_mday = day;
    tm.tm_mon = (int)((p - months) / 3);
    tm.tm_year = year - 1900;
    *t_r = timegm(&tm);
    return true;
}

static bool skey_parse_one(struct skey_parser *sp, struct skey *k, unsigned depth);

static const char *skey_next_string(struct skey_parser *sp)
{
    if (sp->pos >= sp->n || !imap_arg_is_string(&sp->args[sp->pos]))
        return NULL;
    return sp->args[sp->pos++].str;
}

/* An AND of the args in [args, args+n). */
static bool skey_parse_list(struct skey_parser *sp, struct imap_arg *args, size_t n, struct skey *k,
                            unsigned depth)
{
    struct skey_parser sub = {.args = args, .n = n, .pos = 0, .n_keys = sp->n_keys,
                              .saved = sp->saved, .n_saved = sp->n_saved, .cmp = sp->cmp};
    k->op = SK_AND;
    k->kids = calloc(n ? n : 1, sizeof *k->kids);
    if (!k->kids)
        return false;
    while (sub.pos < sub.n) {
        if (!skey_parse_one(&sub, &k->kids[k->n_kids], depth + 1)) {
            skey_free_contents(&k->kids[k->n_kids]);
            return false;
        }
        k->n_kids++;
    }
    sp->n_keys = sub.n_keys;
    sp->needs_file |= sub.needs_file;
    sp->has_modseq |= sub.has_modseq;
    return true;
}

/* RFC 5182 §2.1: "$" is the saved result (as UIDs, so it survives expunges). */
static bool skey_parse_saved(struct skey_parser *sp, struct skey *k)
{
    k->op = SK_SAVED;
    k->uids = malloc((sp->n_saved ? sp->n_saved : 1) * sizeof *k->uids);
    if (!k->uids)
        return false;
    if (sp->n_saved)
        memcpy(k->uids, sp->saved, sp->n_saved * sizeof *k->uids);
    k->n_uids = sp->n_saved;
    return true;
}

static bool skey_parse_one(struct skey_parser *sp, struct skey *k, unsigned depth)
{
    memset(k, 0, sizeof *k);
    if (depth > IMAP_SEARCH_MAX_DEPTH || ++sp->n_keys > IMAP_SEARCH_MAX_KEYS || sp->pos >= sp->n)
        return false;
    struct imap_arg *a = &sp->args[sp->pos++];
    if (a->type == IMAP_ARG_LIST)
        return skey_parse_list(sp, a->list, a->n, k, depth);
    if (a->type != IMAP_ARG_ATOM)
        return false;
    const char *w = a->str;
    static const struct {
        const char *name;
        enum skey_op op;
        unsigned flag;
    } simple[] = {
        {"ALL", SK_ALL, 0},
        {"ANSWERED", SK_FLAG, STORE_FLAG_ANSWERED},
        {"DELETED", SK_FLAG, STORE_FLAG_DELETED},
        {"DRAFT", SK_FLAG, STORE_FLAG_DRAFT},
        {"FLAGGED", SK_FLAG, STORE_FLAG_FLAGGED},
        {"RECENT", SK_FLAG, STORE_FLAG_RECENT},
        {"SEEN", SK_FLAG, STORE_FLAG_SEEN},
        {"UNANSWERED", SK_UNFLAG, STORE_FLAG_ANSWERED},
        {"UNDELETED", SK_UNFLAG, STORE_FLAG_DELETED},
        {"UNDRAFT", SK_UNFLAG, STORE_FLAG_DRAFT},
        {"UNFLAGGED", SK_UNFLAG, STORE_FLAG_FLAGGED},
        {"UNSEEN", SK_UNFLAG, STORE_FLAG_SEEN},
        {"NEW", SK_NEW, 0},
        {"OLD", SK_OLD, 0},
    };
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        if (strcasecmp(w, simple[i].name) == 0) {
            k->op = simple[i].op;
            k->num = simple[i].flag;
            return true;
        }
    }
    if (strcasecmp(w, "NOT") == 0 || strcasecmp(w, "OR") == 0) {
        bool is_or = strcasecmp(w, "OR") == 0;
        k->op = is_or ? SK_OR : SK_NOT;
        k->kids = calloc(2, sizeof *k->kids);
        if (!k->kids)
            return false;
        for (size_t i = 0; i < (is_or ? 2u : 1u); i++) {
            if (!skey_parse_one(sp, &k->kids[i], depth + 1)) {
                skey_free_contents(&k->kids[i]);
                return false;
            }
            k->n_kids++;
        }
        return true;
    }
    if (strcasecmp(w, "LARGER") == 0 || strcasecmp(w, "SMALLER") == 0) {
        k->op = toupper((unsigned char)w[0]) == 'L' ? SK_LARGER : SK_SMALLER;
        const char *v = skey_next_string(sp);
        char *end;
        if (!v || !isdigit((unsigned char)*v))
            return false;
        k->num = strtoull(v, &end, 10);
        return *end == '\0';
    }
    static const struct {
        const char *name;
        enum skey_op op;
    } dates[] = {
        {"BEFORE", SK_BEFORE},         {"ON", SK_ON},         {"SINCE", SK_SINCE},
        {"SENTBEFORE", SK_SENTBEFORE}, {"SENTON", SK_SENTON}, {"SENTSINCE", SK_SENTSINCE},
    };
    for (size_t i = 0; i < sizeof dates / sizeof dates[0]; i++) {
        if (strcasecmp(w, dates[i].name) == 0) {
            k->op = dates[i].op;
            const char *v = skey_next_string(sp);
            time_t t;
            if (!v || !imap_parse_date(v, &t))
                return false;
            k->num = (uint64_t)t;
            if (k->op >= SK_SENTBEFORE)
                sp->needs_file = true;
            return true;
        }
    }
    static const char *const header_keys[] = {"FROM", "TO", "CC", "BCC", "SUBJECT"};
    for (size_t i = 0; i < sizeof header_keys / sizeof header_keys[0]; i++) {
        if (strcasecmp(w, header_keys[i]) == 0) {
            const char *v = skey_next_string(sp);
            if (!v)
                return false;
            k->op = SK_HEADER;
            k->str = strdup(header_keys[i]);
            k->str2 = strdup(v);
            k->matcher = mime_matcher_new_cmp(v, strlen(v), sp->cmp);
            k->is_address = i < 4; /* not SUBJECT */
            sp->needs_file = true;
            return k->str && k->str2 && k->matcher;
        }
    }
    if (strcasecmp(w, "HEADER") == 0) {
        const char *f = skey_next_string(sp);
        const char *v = skey_next_string(sp);
        if (!f || !v)
            return false;
        k->op = SK_HEADER;
        k->str = strdup(f);
        k->str2 = strdup(v);
        k->matcher = mime_matcher_new_cmp(v, strlen(v), sp->cmp);
        sp->needs_file = true;
        return k->str && k->str2 && k->matcher;
    }
    if (strcasecmp(w, "BODY") == 0 || strcasecmp(w, "TEXT") == 0) {
        const char *v = skey_next_string(sp);
        if (!v)
            return false;
        k->op = toupper((unsigned char)w[0]) == 'B' ? SK_BODY : SK_TEXT;
        k->str = strdup(v);
        k->matcher = mime_matcher_new_cmp(v, strlen(v), sp->cmp);
        sp->needs_file = true;
        return k->str && k->matcher;
    }
    if (strcasecmp(w, "KEYWORD") == 0 || strcasecmp(w, "UNKEYWORD") == 0) {
        const char *v = skey_next_string(sp);
        if (!v)
            return false;
        k->op = toupper((unsigned char)w[0]) == 'K' ? SK_KEYWORD : SK_UNKEYWORD;
        k->str = strdup(v);
        return true;
    }
    if (strcasecmp(w, "MODSEQ") == 0) {
        /* MODSEQ [entry-name entry-type-req] mod-sequence-valzer: the per-flag entry is
         * accepted and ignored (the server keeps one mod-sequence per message) */
        const char *v = skey_next_string(sp);
        if (v && !isdigit((unsigned char)*v)) {
            const char *type = skey_next_string(sp);
            if (!type || (strcasecmp(type, "all") != 0 && strcasecmp(type, "shared") != 0 &&
                          strcasecmp(type, "priv") != 0))
                return false;
            v = skey_next_string(sp);
        }
        char *end;
        if (!v || !isdigit((unsigned char)*v))
            return false;
        k->op = SK_MODSEQ;
        k->num = strtoull(v, &end, 10);
        sp->has_modseq = true;
        return *end == '\0';
    }
    if (strcasecmp(w, "EMAILID") == 0 || strcasecmp(w, "THREADID") == 0) {
        /* RFC 8474 §7: objectid = 1*255(ALPHA / DIGIT / "_" / "-") */
        const char *v = skey_next_string(sp);
        size_t len = v ? strlen(v) : 0;
        if (len == 0 || len > 255 || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu"
                                               "vwxyz0123456789_-") != len)
            return false;
        k->op = toupper((unsigned char)w[0]) == 'E' ? SK_EMAILID : SK_THREADID;
        k->str = strdup(v);
        if (k->op == SK_THREADID)
            sp->needs_file = true;
        return k->str != NULL;
    }
    if (strcasecmp(w, "SAVEDATESUPPORTED") == 0) {
        k->op = SK_ALL; /* RFC 8514 §4.2: every mailbox here has save dates */
        return true;
    }
    static const struct {
        const char *name;
        enum skey_op op;
    } saved[] = {{"SAVEDBEFORE", SK_SAVEDBEFORE}, {"SAVEDON", SK_SAVEDON},
                 {"SAVEDSINCE", SK_SAVEDSINCE}};
    for (size_t i = 0; i < sizeof saved / sizeof saved[0]; i++) {
        if (strcasecmp(w, saved[i].name) == 0) {
            const char *v = skey_next_string(sp);
            time_t t;
            if (!v || !imap_parse_date(v, &t))
                return false;
            k->op = saved[i].op;
            k->num = (uint64_t)t;
            return true;
        }
    }
    if (strcasecmp(w, "OLDER") == 0 || strcasecmp(w, "YOUNGER") == 0) {
        /* RFC 5032: OLDER/YOUNGER nz-number (seconds) */
        k->op = toupper((unsigned char)w[0]) == 'O' ? SK_OLDER : SK_YOUNGER;
        const char *v = skey_next_string(sp);
        char *end;
        if (!v || *v < '1' || *v > '9')
            return false;
        k->num = strtoull(v, &end, 10);
        return *end == '\0' && k->num <= UINT32_MAX;
    }
    if (strcasecmp(w, "UID") == 0) {
        const char *v = skey_next_string(sp);
        if (v && strcmp(v, "$") == 0)
            return skey_parse_saved(sp, k);
        k->op = SK_UIDSET;
        return v && imap_seqset_parse(v, &k->set);
    }
    if (strcmp(w, "$") == 0)
        return skey_parse_saved(sp, k);
    k->op = SK_SEQSET;
    return imap_seqset_parse(w, &k->set);
}

/* ---- evaluation --------------------------------------------------------------------- */

struct skey_msg {
    const struct store_message *m;
    time_t now; /* WITHIN: the time the search started */
    uint32_t seq, max_seq, max_uid;
    const char *bytes; /* the mapped file (or "" when empty) */
    size_t len;
    size_t header_len; /* bytes of the header block */
    bool tried_load, is_mapped;
    struct mime_part *mime; /* parsed on the first BODY/TEXT key */
    struct store_mailbox *box;
    size_t index;
};

/* Map the message file read-only; Maildir files never change once delivered, and an
 * expunge only unlinks, so the mapping stays valid. */
static bool skey_load(struct skey_msg *sm)
{
    if (sm->tried_load)
        return sm->bytes != NULL;
    sm->tried_load = true;
    struct imap_message_map map;
    if (!imap_message_map(sm->box, sm->index, &map))
        return false;
    sm->bytes = map.bytes;
    sm->len = map.len;
    sm->is_mapped = map.is_mapped;
    /* header ends at the first empty line */
    size_t pos = 0;
    sm->header_len = sm->len;
    while (pos < sm->len) {
        const char *nl = memchr(sm->bytes + pos, '\n', sm->len - pos);
        size_t le = nl ? (size_t)(nl - sm->bytes) + 1 : sm->len;
        size_t ce = le;
        if (ce > pos && sm->bytes[ce - 1] == '\n')
            ce--;
        if (ce > pos && sm->bytes[ce - 1] == '\r')
            ce--;
        if (ce == pos) {
            sm->header_len = le;
            break;
        }
        pos = le;
    }
    return true;
}

static void skey_msg_release(struct skey_msg *sm)
{
    struct imap_message_map map = {sm->bytes, sm->len, sm->is_mapped};
    imap_message_unmap(&map);
    mime_part_free(sm->mime);
}

/* RFC 3501 §6.4.4 HEADER/FROM/...: the field exists and its decoded value contains the
 * string (an empty string matches any message that has the field). */
static bool skey_header_match(const struct skey *k, struct skey_msg *sm)
{
    if (!skey_load(sm))
        return false;
    mime_matcher_reset(k->matcher);
    if (k->is_address)
        return mime_address_header_search(sm->bytes, sm->header_len, k->str, k->matcher);
    return mime_header_search(sm->bytes, sm->header_len, k->str, k->matcher, false);
}

/* BODY (is_text false) or TEXT (header and body) through MIME decoding. */
static bool skey_text_match(const struct skey *k, struct skey_msg *sm, bool is_text)
{
    if (!skey_load(sm))
        return false;
    if (is_text) {
        mime_matcher_reset(k->matcher);
        if (mime_header_search(sm->bytes, sm->header_len, NULL, k->matcher, true))
            return true;
    }
    if (!sm->mime)
        sm->mime = mime_parse(sm->bytes, sm->len);
    if (!sm->mime)
        return false;
    return mime_body_search(sm->bytes, sm->len, sm->mime, k->matcher, IMAP_SEARCH_MAX_DECODE);
}

/* Day (midnight UTC) of an RFC 5322 Date: "[Wed, ]25 Nov 2026 09:00:03 +0000"; -1 if bad. */
static int64_t skey_header_day(struct skey_msg *sm)
{
    if (!skey_load(sm))
        return -1;
    struct buf f;
    buf_init(&f, 0);
    const char *names[1] = {"Date"};
    mime_header_filter(sm->bytes, sm->header_len, names, 1, false, &f);
    int64_t day = -1;
    const char *v = f.data ? strchr(f.data, ':') : NULL;
    if (v) {
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        if (isalpha((unsigned char)*v)) {
            while (*v && *v != ',')
                v++;
            if (*v == ',')
                v++;
        }
        int d, y;
        char mon[4];
        if (sscanf(v, "%2d %3s %4d", &d, mon, &y) == 3) {
            char date[32];
            snprintf(date, sizeof date, "%d-%s-%d", d, mon,
                     y < 50    ? y + 2000
                     : y < 100 ? y + 1900
                               : y);
            time_t t;
            if (imap_parse_date(date, &t))
                day = (int64_t)t;
        }
    }
    buf_free(&f);
    return day;
}

static bool skey_has_keyword(const struct store_message *m, const char *kw)
{
    for (char **k = m->keywords; k && *k; k++)
        if (strcasecmp(*k, kw) == 0)
            return true;
    return false;
}

static bool imap_uid_in(const uint32_t *uids, size_t n, uint32_t uid);

static bool skey_eval(const struct skey *k, struct skey_msg *sm)
{
    const struct store_message *m = sm->m;
    time_t day = m->internaldate - (m->internaldate % 86400);
    switch (k->op) {
    case SK_ALL:
        return true;
    case SK_AND:
        for (size_t i = 0; i < k->n_kids; i++)
            if (!skey_eval(&k->kids[i], sm))
                return false;
        return true;
    case SK_OR:
        return skey_eval(&k->kids[0], sm) || skey_eval(&k->kids[1], sm);
    case SK_NOT:
        return !skey_eval(&k->kids[0], sm);
    case SK_FLAG:
        return (m->flags & k->num) != 0;
    case SK_UNFLAG:
        return (m->flags & k->num) == 0;
    case SK_KEYWORD:
        return skey_has_keyword(m, k->str);
    case SK_UNKEYWORD:
        return !skey_has_keyword(m, k->str);
    case SK_NEW:
        return (m->flags & STORE_FLAG_RECENT) && !(m->flags & STORE_FLAG_SEEN);
    case SK_OLD:
        return !(m->flags & STORE_FLAG_RECENT);
    case SK_LARGER:
        return m->vsize > k->num;
    case SK_SMALLER:
        return m->vsize < k->num;
    case SK_BEFORE:
        return (uint64_t)day < k->num;
    case SK_ON:
        return (uint64_t)day == k->num;
    case SK_SINCE:
        return (uint64_t)day >= k->num;
    case SK_SENTBEFORE:
    case SK_SENTON:
    case SK_SENTSINCE: {
        int64_t sent = skey_header_day(sm);
        if (sent < 0)
            return false;
        return k->op == SK_SENTBEFORE ? sent < (int64_t)k->num
               : k->op == SK_SENTON   ? sent == (int64_t)k->num
                                      : sent >= (int64_t)k->num;
    }
    case SK_HEADER:
        return skey_header_match(k, sm);
    case SK_BODY:
        return skey_text_match(k, sm, false);
    case SK_TEXT:
        return skey_text_match(k, sm, true);
    case SK_UIDSET:
        return imap_seqset_contains(&k->set, m->uid, sm->max_uid);
    case SK_SEQSET:
        return imap_seqset_contains(&k->set, sm->seq, sm->max_seq);
    case SK_MODSEQ:
        return m->modseq >= k->num;
    case SK_SAVED:
        return imap_uid_in(k->uids, k->n_uids, m->uid);
    case SK_EMAILID: {
        struct buf b;
        buf_init(&b, 64);
        imap_write_emailid(&b, store_mailbox_uidvalidity(sm->box), m->uid);
        bool is_same = strcmp(buf_cstr(&b), k->str) == 0;
        buf_free(&b);
        return is_same;
    }
    case SK_THREADID: {
        if (!skey_load(sm))
            return false;
        struct buf b;
        buf_init(&b, 32);
        bool is_same = imap_write_threadid(&b, sm->bytes, sm->header_len) &&
                       strcmp(buf_cstr(&b), k->str) == 0;
        buf_free(&b);
        return is_same;
    }
    case SK_SAVEDBEFORE:
    case SK_SAVEDON:
    case SK_SAVEDSINCE: {
        time_t saved = imap_message_savedate(m);
        if (saved == 0)
            return false; /* RFC 8514 §4.3: no save date matches no date criterion */
        int64_t sday = (int64_t)(saved - saved % 86400);
        return k->op == SK_SAVEDBEFORE ? sday < (int64_t)k->num
               : k->op == SK_SAVEDON   ? sday == (int64_t)k->num
                                       : sday >= (int64_t)k->num;
    }
    case SK_OLDER:
        return (int64_t)m->internaldate <= (int64_t)sm->now - (int64_t)k->num;
    case SK_YOUNGER:
        return (int64_t)m->internaldate >= (int64_t)sm->now - (int64_t)k->num;
    }
    return false;
}

/* Is uid in the ascending array? */
static bool imap_uid_in(const uint32_t *uids, size_t n, uint32_t uid)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (uids[mid] < uid)
            lo = mid + 1;
        else if (uids[mid] > uid)
            hi = mid;
        else
            return true;
    }
    return false;
}

/* ---- the query API (session.h) ------------------------------------------------------ */

struct skey *imap_search_parse(struct imap_arg *args, size_t n, const uint32_t *saved,
                               size_t n_saved, bool *has_modseq_r)
{
    return imap_search_parse_cmp(args, n, saved, n_saved, MIME_CMP_UNICODE_CASEMAP,
                                 has_modseq_r);
}

struct skey *imap_search_parse_cmp(struct imap_arg *args, size_t n, const uint32_t *saved,
                                   size_t n_saved, enum mime_comparator cmp, bool *has_modseq_r)
{
    struct skey *root = calloc(1, sizeof *root);
    if (!root)
        return NULL;
    struct skey_parser sp = {.args = args, .n = n, .pos = 0, .saved = saved,
                             .n_saved = n_saved, .cmp = cmp};
    if (n == 0 || !skey_parse_list(&sp, args, n, root, 0)) {
        skey_free(root);
        return NULL;
    }
    if (has_modseq_r)
        *has_modseq_r = sp.has_modseq;
    return root;
}

void imap_search_free(struct skey *root)
{
    skey_free(root);
}

/* Evaluate root on message i of the view (max_uid: the view's highest UID). */
static bool imap_search_eval_at(const struct skey *root, struct store_mailbox *box, size_t i,
                                size_t count, uint32_t max_uid, time_t now)
{
    struct skey_msg sm = {
        .m = store_mailbox_message(box, i),
        .now = now,
        .seq = (uint32_t)(i + 1),
        .max_seq = (uint32_t)count,
        .max_uid = max_uid,
        .box = box,
        .index = i,
    };
    bool is_match = skey_eval(root, &sm);
    skey_msg_release(&sm);
    return is_match;
}

size_t imap_search_match(const struct skey *root, struct store_mailbox *box, bool *match)
{
    size_t count = store_mailbox_count(box), n = 0;
    uint32_t max_uid = count ? store_mailbox_message(box, count - 1)->uid : 0;
    time_t now = time(NULL);
    for (size_t i = 0; i < count; i++) {
        match[i] = imap_search_eval_at(root, box, i, count, max_uid, now);
        n += match[i];
    }
    return n;
}

bool imap_search_match_one(const struct skey *root, struct store_mailbox *box, size_t i)
{
    size_t count = store_mailbox_count(box);
    return imap_search_eval_at(root, box, i, count, store_mailbox_message(box, count - 1)->uid,
                               time(NULL));
}

bool imap_search_is_updatable(const struct skey *k)
{
    /* RFC 5267 §4.3: the result must follow from the messages alone. Sequence numbers
     * shift under every expunge and OLDER/YOUNGER move with the clock, with no change to
     * notify of: such programs get no updates (§4.3.1 lets the server refuse). */
    if (k->op == SK_SEQSET || k->op == SK_OLDER || k->op == SK_YOUNGER)
        return false;
    /* "*" is the highest UID at the time of evaluation: it moves with new mail and with
     * the expunge of the last message, changing what older messages match */
    for (size_t i = 0; k->op == SK_UIDSET && i < k->set.n; i++)
        if (k->set.r[i].is_lo_star || k->set.r[i].is_hi_star)
            return false;
    for (size_t i = 0; i < k->n_kids; i++)
        if (!imap_search_is_updatable(&k->kids[i]))
            return false;
    return true;
}

/* ---- ESEARCH responses (RFC 4731, RFC 5267 ESORT and PARTIAL) ------------------------ */

void imap_esearch_write(struct buf *out, const char *tag, bool is_uid,
                        const struct imap_search_return *ret, const uint32_t *v, size_t n,
                        uint64_t modseq)
{
    /* "* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n] [PARTIAL (r set)]
     * [MODSEQ m]", the order Dovecot uses; MIN, MAX and ALL only when something matched.
     * v is in result order: ascending for SEARCH, sort order for SORT (RFC 5267 §3.1:
     * MIN and MAX are then the first and last in that order). */
    buf_printf(out, "* ESEARCH (TAG \"%s\")", tag);
    if (is_uid)
        buf_append_str(out, " UID");
    if (n > 0 && (ret->opts & IMAP_SEARCH_RET_MIN))
        buf_printf(out, " MIN %u", v[0]);
    if (n > 0 && (ret->opts & IMAP_SEARCH_RET_MAX))
        buf_printf(out, " MAX %u", v[n - 1]);
    if (n > 0 && (ret->opts & IMAP_SEARCH_RET_ALL)) {
        buf_append_str(out, " ALL ");
        imap_write_uid_set(out, v, n);
    }
    if (ret->opts & IMAP_SEARCH_RET_COUNT)
        buf_printf(out, " COUNT %zu", n);
    if (ret->opts & IMAP_SEARCH_RET_PARTIAL) {
        /* RFC 5267 §4.4: the results at positions lo..hi (RFC 9394: counted from the
         * end for -lo:-hi), or NIL when there are none */
        const char *minus = ret->is_from_end ? "-" : "";
        buf_printf(out, " PARTIAL (%s%u:%s%u ", minus, ret->partial_lo, minus, ret->partial_hi);
        size_t first = 0, last = 0; /* [first, last) of v */
        if (ret->partial_lo <= n) {
            size_t hi = ret->partial_hi < n ? ret->partial_hi : n;
            first = ret->is_from_end ? n - hi : ret->partial_lo - 1;
            last = ret->is_from_end ? n - ret->partial_lo + 1 : hi;
        }
        if (last > first)
            imap_write_uid_set(out, v + first, last - first);
        else
            buf_append_str(out, "NIL");
        buf_append_byte(out, ')');
    }
    if (modseq > 0)
        buf_printf(out, " MODSEQ %llu", (unsigned long long)modseq);
    buf_append_str(out, "\r\n");
}

static int imap_uid_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

bool imap_searchres_make(const struct imap_search_return *ret, const uint32_t *uids, size_t n,
                         uint32_t **saved_r, size_t *n_saved_r)
{
    /* RFC 5182 §2.4: with MIN and/or MAX alone only those messages are saved */
    unsigned only = IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX | IMAP_SEARCH_RET_SAVE |
                    IMAP_SEARCH_RET_HINTS;
    bool is_min_max = (ret->opts & ~only) == 0 &&
                      (ret->opts & (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX));
    uint32_t *saved = malloc((n ? n : 1) * sizeof *saved);
    if (!saved)
        return false;
    size_t k = 0;
    if (is_min_max) {
        if (n > 0 && (ret->opts & IMAP_SEARCH_RET_MIN))
            saved[k++] = uids[0];
        if (n > 0 && (ret->opts & IMAP_SEARCH_RET_MAX) && (k == 0 || uids[n - 1] != saved[0]))
            saved[k++] = uids[n - 1];
    } else {
        if (n)
            memcpy(saved, uids, n * sizeof *saved);
        k = n;
    }
    qsort(saved, k, sizeof *saved, imap_uid_cmp);
    *saved_r = saved;
    *n_saved_r = k;
    return true;
}

void imap_searchres_finish(struct imap_session *s, struct imap_job *j, uint32_t **saved,
                           size_t *n_saved)
{
    /* RFC 5182 §2.1: a command that fails leaves the saved result empty */
    free(s->searchres);
    s->searchres = j->is_ok ? *saved : NULL;
    s->n_searchres = j->is_ok ? *n_saved : 0;
    if (!j->is_ok)
        free(*saved);
    *saved = NULL;
    *n_saved = 0;
}

char *imap_searchres_expand(struct imap_session *s, const char *set, bool *is_uid)
{
    if (strcmp(set, "$") != 0)
        return strdup(set);
    /* RFC 5182 §2.1: "$" is the saved result, kept as UIDs */
    *is_uid = true;
    struct buf b;
    buf_init(&b, 0);
    /* an empty result is "" (imap_resolve_set: the empty set; no client atom is empty) */
    imap_write_uid_set(&b, s->searchres, s->n_searchres);
    char *r = buf_steal(&b);
    return r ? r : strdup("");
}

/* ---- SEARCH ------------------------------------------------------------------------ */

struct imap_search_job {
    struct imap_job base;
    struct skey *root; /* the parsed criteria */
    struct imap_search_return ret; /* ESEARCH options; opts 0 for the plain * SEARCH */
    bool is_uid;
    bool has_modseq; /* a MODSEQ criterion: report the highest mod-sequence */
    struct imap_update_request update; /* RETURN (UPDATE): RFC 5267 §4.3 */
    /* result for finish: the RFC 5182 saved result (UIDs, ascending) */
    uint32_t *saved;
    size_t n_saved;
};

static void imap_search_cleanup(struct imap_job *j)
{
    struct imap_search_job *sj = IMAP_JOB(imap_search_job, j);
    skey_free(sj->root);
    free(sj->saved);
}

static void imap_search_finish(struct imap_session *s, struct imap_job *j)
{
    struct imap_search_job *sj = IMAP_JOB(imap_search_job, j);
    imap_searchres_finish(s, j, &sj->saved, &sj->n_saved);
}

static void imap_search_work(struct imap_job *j)
{
    struct imap_search_job *sj = IMAP_JOB(imap_search_job, j);
    struct store_mailbox *box = j->ctx.box;
    size_t count = store_mailbox_count(box);
    bool *match = calloc(count ? count : 1, sizeof *match);
    uint32_t *hits = calloc(count ? count : 1, sizeof *hits);
    uint32_t *uids = calloc(count ? count : 1, sizeof *uids);
    if (!match || !hits || !uids) {
        free(match);
        free(hits);
        free(uids);
        buf_printf(&j->tagged, "%s NO Out of memory.\r\n", j->tag);
        return;
    }
    imap_search_match(sj->root, box, match);
    uint64_t max_modseq = 0, min_hit_modseq = 0, max_hit_modseq = 0;
    size_t n_hits = 0;
    for (size_t i = 0; i < count; i++) {
        if (!match[i])
            continue;
        const struct store_message *m = store_mailbox_message(box, i);
        hits[n_hits] = sj->is_uid ? m->uid : (uint32_t)(i + 1);
        uids[n_hits++] = m->uid;
        if (m->modseq > max_modseq)
            max_modseq = m->modseq;
        if (min_hit_modseq == 0)
            min_hit_modseq = m->modseq;
        max_hit_modseq = m->modseq;
    }
    /* UPDATE and CONTEXT ask for no data of their own (RFC 5267 §4.2-4.3) */
    unsigned opts = sj->ret.opts & ~(unsigned)IMAP_SEARCH_RET_HINTS;
    /* RFC 5267 §4.3.1: a refused UPDATE is an untagged NO, the other options still hold */
    if (sj->ret.opts & IMAP_SEARCH_RET_UPDATE)
        imap_update_start(j, &sj->update, &sj->root, uids, n_hits);
    if (sj->ret.opts == 0) {
        buf_append_str(&j->out, "* SEARCH");
        for (size_t k = 0; k < n_hits; k++)
            buf_printf(&j->out, " %u", hits[k]);
        /* RFC 7162 §3.1.5: a search with MODSEQ reports the highest mod-sequence found */
        if (sj->has_modseq && max_modseq > 0)
            buf_printf(&j->out, " (MODSEQ %llu)", (unsigned long long)max_modseq);
        buf_append_str(&j->out, "\r\n");
    } else if (opts != IMAP_SEARCH_RET_SAVE) { /* RFC 5182 §2.4: SAVE alone says nothing */
        /* RFC 7162 §3.1.5 with RFC 4731: when only MIN and/or MAX are returned, MODSEQ is
         * the highest mod-sequence of the message(s) they return, not of every match */
        unsigned only = IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX | IMAP_SEARCH_RET_SAVE;
        if ((opts & ~only) == 0) {
            max_modseq = 0;
            if ((opts & IMAP_SEARCH_RET_MIN) && min_hit_modseq > max_modseq)
                max_modseq = min_hit_modseq;
            if ((opts & IMAP_SEARCH_RET_MAX) && max_hit_modseq > max_modseq)
                max_modseq = max_hit_modseq;
        }
        imap_esearch_write(&j->out, j->tag, sj->is_uid, &sj->ret, hits, n_hits,
                           sj->has_modseq ? max_modseq : 0);
    }
    bool is_saved = !(opts & IMAP_SEARCH_RET_SAVE) ||
                    imap_searchres_make(&sj->ret, uids, n_hits, &sj->saved, &sj->n_saved);
    free(match);
    free(hits);
    free(uids);
    if (!is_saved) {
        buf_printf(&j->tagged, "%s NO Out of memory.\r\n", j->tag);
        return;
    }
    buf_printf(&j->tagged, "%s OK Search completed.\r\n", j->tag);
    j->is_ok = true;
}

bool imap_search_charset_ok(struct imap_session *s, const char *tag, const struct imap_arg *cs)
{
    /* RFC 3501 §6.4.4: US-ASCII must be supported; UTF-8 is what the decoded text is
     * matched in (US-ASCII is a subset). */
    if (imap_arg_is_string(cs) &&
        (strcasecmp(cs->str, "UTF-8") == 0 || strcasecmp(cs->str, "US-ASCII") == 0))
        return true;
    imap_reply(s, tag, "NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.");
    return false;
}

void imap_cmd_search(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    size_t start = 0;
    struct imap_search_return ret = {0};
    /* RFC 4731 §3.1: SEARCH [RETURN (options)] [CHARSET x] criteria */
    if (n >= 1 && imap_arg_is_atom(&args[0], "RETURN")) {
        if (n < 2 || !imap_search_return_parse(&args[1], &ret)) {
            imap_reply(s, tag, "BAD Unknown SEARCH return option.");
            return;
        }
        start = 2;
        if ((ret.opts & IMAP_SEARCH_RET_UPDATE) && imap_update_find(s->updates, tag)) {
            imap_reply(s, tag, "BAD Tag reuse."); /* RFC 5267 §4.3 */
            return;
        }
    }
    if (n >= start + 2 && imap_arg_is_atom(&args[start], "CHARSET")) {
        if (s->is_utf8_accept) {
            /* RFC 6855 §3: after ENABLE UTF8=ACCEPT a SEARCH names no charset */
            imap_reply(s, tag, "BAD SEARCH CHARSET is not allowed after ENABLE UTF8=ACCEPT.");
            return;
        }
        if (!imap_search_charset_ok(s, tag, &args[start + 1]))
            return;
        start += 2;
    }
    /* RFC 9051 §6.4.4: IMAP4rev2 answers every SEARCH with ESEARCH, RETURN () or none
     * meaning ALL (RFC 4731 §3.1) */
    if (s->is_rev2 && ret.opts == 0)
        ret.opts = IMAP_SEARCH_RET_ALL;
    if (start >= n) {
        imap_reply(s, tag, "BAD Missing search criteria.");
        return;
    }
    bool has_modseq = false;
    struct skey *root = imap_search_parse_cmp(args + start, n - start, s->searchres,
                                              s->n_searchres, s->comparator, &has_modseq);
    if (!root) {
        if (ret.opts & IMAP_SEARCH_RET_SAVE)
            imap_searchres_clear(s); /* RFC 5182 §2.1 */
        imap_reply(s, tag, "BAD Invalid search criteria.");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_search_job), imap_search_work,
                                      (ret.opts & IMAP_SEARCH_RET_SAVE) ? imap_search_finish
                                                                        : NULL,
                                      imap_search_cleanup);
    if (!j) {
        skey_free(root);
        return;
    }
    struct imap_search_job *sj = IMAP_JOB(imap_search_job, j);
    sj->root = root;
    sj->ret = ret;
    sj->has_modseq = has_modseq;
    sj->is_uid = is_uid;
    if (ret.opts & IMAP_SEARCH_RET_UPDATE)
        imap_update_request_init(s, root, is_uid, NULL, 0, &sj->update);
    if (has_modseq)
        imap_condstore_enable(s); /* RFC 7162 §3.1 */
    /* RFC 3501 §7.4.1: EXPUNGE may not be sent during SEARCH, but may during UID SEARCH
     * (its results are UIDs); the sync runs after the search, on the view it used. */
    j->do_sync = is_uid;
    imap_job_submit(s, j);
}

void imap_searchres_clear(struct imap_session *s)
{
    free(s->searchres);
    s->searchres = NULL;
    s->n_searchres = 0;
}
