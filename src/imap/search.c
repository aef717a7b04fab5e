/*
 * search.c - SEARCH and UID SEARCH (RFC 3501 §6.4.4), with RETURN options (RFC 4731 ESEARCH).
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
};

struct skey {
    enum skey_op op;
    uint64_t num;
    char *str, *str2;
    struct imap_seqset set;
    struct skey *kids; /* AND: list; OR: two; NOT: one */
    size_t n_kids;
    struct mime_matcher *matcher; /* HEADER/BODY/TEXT: the needle */
};

static void skey_free_contents(struct skey *k)
{
    free(k->str);
    free(k->str2);
    imap_seqset_free(&k->set);
    mime_matcher_free(k->matcher);
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
    struct skey_parser sub = {.args = args, .n = n, .pos = 0, .n_keys = sp->n_keys};
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
            k->matcher = mime_matcher_new(v, strlen(v));
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
        k->matcher = mime_matcher_new(v, strlen(v));
        sp->needs_file = true;
        return k->str && k->str2 && k->matcher;
    }
    if (strcasecmp(w, "BODY") == 0 || strcasecmp(w, "TEXT") == 0) {
        const char *v = skey_next_string(sp);
        if (!v)
            return false;
        k->op = toupper((unsigned char)w[0]) == 'B' ? SK_BODY : SK_TEXT;
        k->str = strdup(v);
        k->matcher = mime_matcher_new(v, strlen(v));
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
    if (strcasecmp(w, "UID") == 0) {
        const char *v = skey_next_string(sp);
        k->op = SK_UIDSET;
        return v && imap_seqset_parse(v, &k->set);
    }
    k->op = SK_SEQSET;
    return imap_seqset_parse(w, &k->set);
}

/* ---- evaluation --------------------------------------------------------------------- */

struct skey_msg {
    const struct store_message *m;
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
    }
    return false;
}


struct imap_search_job {
    struct imap_job base;
    struct skey *root;  /* the parsed criteria */
    unsigned esearch;   /* IMAP_SEARCH_RET_* of an ESEARCH (RFC 4731), 0 for * SEARCH */
    bool is_uid;
    bool has_modseq;    /* a MODSEQ criterion: report the highest mod-sequence */
};

static void imap_search_cleanup(struct imap_job *j)
{
    skey_free(IMAP_JOB(imap_search_job, j)->root);
}

/* RFC 4731 §3.1: "* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n]", the
 * order Dovecot uses; MIN, MAX and ALL only when something matched. */
static void imap_esearch_write(struct imap_job *j, const uint32_t *hits, size_t n,
                               uint64_t max_modseq)
{
    const struct imap_search_job *sj = IMAP_JOB(imap_search_job, j);
    buf_printf(&j->out, "* ESEARCH (TAG \"%s\")", j->tag);
    if (sj->is_uid)
        buf_append_str(&j->out, " UID");
    if (n > 0 && (sj->esearch & IMAP_SEARCH_RET_MIN))
        buf_printf(&j->out, " MIN %u", hits[0]);
    if (n > 0 && (sj->esearch & IMAP_SEARCH_RET_MAX))
        buf_printf(&j->out, " MAX %u", hits[n - 1]);
    if (n > 0 && (sj->esearch & IMAP_SEARCH_RET_ALL)) {
        buf_append_str(&j->out, " ALL ");
        imap_write_uid_set(&j->out, hits, n);
    }
    if (sj->esearch & IMAP_SEARCH_RET_COUNT)
        buf_printf(&j->out, " COUNT %zu", n);
    /* RFC 7162 §3.1.5: the highest mod-sequence of what matched */
    if (sj->has_modseq && max_modseq > 0)
        buf_printf(&j->out, " MODSEQ %llu", (unsigned long long)max_modseq);
    buf_append_str(&j->out, "\r\n");
}

static void imap_search_work(struct imap_job *j)
{
    const struct imap_search_job *sj = IMAP_JOB(imap_search_job, j);
    struct store_mailbox *box = j->ctx.box;
    const struct skey *root = sj->root;
    size_t count = store_mailbox_count(box);
    uint32_t max_uid = count ? store_mailbox_message(box, count - 1)->uid : 0;
    uint64_t max_modseq = 0;
    /* ESEARCH collects the hits (ascending: view order) to report MIN/MAX/ALL/COUNT */
    uint32_t *hits = NULL;
    size_t n_hits = 0;
    if (sj->esearch) {
        hits = calloc(count ? count : 1, sizeof *hits);
        if (!hits) {
            buf_printf(&j->tagged, "%s NO Out of memory.\r\n", j->tag);
            return;
        }
    } else {
        buf_append_str(&j->out, "* SEARCH");
    }
    for (size_t i = 0; i < count; i++) {
        struct skey_msg sm = {
            .m = store_mailbox_message(box, i),
            .seq = (uint32_t)(i + 1),
            .max_seq = (uint32_t)count,
            .max_uid = max_uid,
            .box = box,
            .index = i,
        };
        if (skey_eval(root, &sm)) {
            uint32_t v = sj->is_uid ? sm.m->uid : sm.seq;
            if (hits)
                hits[n_hits++] = v;
            else
                buf_printf(&j->out, " %u", v);
            if (sm.m->modseq > max_modseq)
                max_modseq = sm.m->modseq;
        }
        skey_msg_release(&sm);
    }
    if (hits) {
        imap_esearch_write(j, hits, n_hits, max_modseq);
        free(hits);
    } else {
        /* RFC 7162 §3.1.5: a search with MODSEQ reports the highest mod-sequence found */
        if (sj->has_modseq && max_modseq > 0)
            buf_printf(&j->out, " (MODSEQ %llu)", (unsigned long long)max_modseq);
        buf_append_str(&j->out, "\r\n");
    }
    buf_printf(&j->tagged, "%s OK Search completed.\r\n", j->tag);
    j->is_ok = true;
}

void imap_cmd_search(struct imap_session *s, const char *tag, struct imap_arg *args, size_t n,
                     bool is_uid)
{
    size_t start = 0;
    unsigned esearch = 0;
    /* RFC 4731 §3.1: SEARCH [RETURN (options)] [CHARSET x] criteria */
    if (n >= 1 && imap_arg_is_atom(&args[0], "RETURN")) {
        if (n < 2 || !imap_search_return_parse(&args[1], &esearch)) {
            imap_reply(s, tag, "BAD Unknown SEARCH return option.");
            return;
        }
        start = 2;
    }
    if (n >= start + 2 && imap_arg_is_atom(&args[start], "CHARSET")) {
        /* RFC 3501 §6.4.4: US-ASCII must be supported; UTF-8 is what the decoded text is
         * matched in (US-ASCII is a subset). */
        const struct imap_arg *cs = &args[start + 1];
        if (!imap_arg_is_string(cs) ||
            (strcasecmp(cs->str, "UTF-8") != 0 && strcasecmp(cs->str, "US-ASCII") != 0)) {
            imap_reply(s, tag, "NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.");
            return;
        }
        start += 2;
    }
    if (start >= n) {
        imap_reply(s, tag, "BAD Missing search criteria.");
        return;
    }
    struct skey *root = calloc(1, sizeof *root);
    if (!root)
        return;
    struct skey_parser sp = {.args = args, .n = n, .pos = 0};
    if (!skey_parse_list(&sp, args + start, n - start, root, 0)) {
        skey_free(root);
        imap_reply(s, tag, "BAD Invalid search criteria.");
        return;
    }
    struct imap_job *j = imap_job_new(s, tag, sizeof(struct imap_search_job), imap_search_work,
                                      NULL, imap_search_cleanup);
    if (!j) {
        skey_free(root);
        return;
    }
    struct imap_search_job *sj = IMAP_JOB(imap_search_job, j);
    sj->root = root;
    sj->esearch = esearch;
    sj->has_modseq = sp.has_modseq;
    sj->is_uid = is_uid;
    if (sp.has_modseq)
        s->is_condstore = true; /* RFC 7162 §3.1 */
    /* RFC 3501 §7.4.1: EXPUNGE may not be sent during SEARCH, but may during UID SEARCH
     * (its results are UIDs); the sync runs after the search, on the view it used. */
    j->do_sync = is_uid;
    imap_job_submit(s, j);
}
