/*
 * mime_sort.c - what IMAP SORT and THREAD compare (RFC 5256, RFC 5957), taken from a
 * message's header: the base subject (RFC 5256 §2.1), the sent date (§2.2), the first
 * address of From/To/Cc and its display form, the message ids threading links by; and the
 * i;unicode-casemap comparator (RFC 5051) the strings are prepared for, so that comparing
 * two keys is a byte comparison.
 *
 * Pure functions over bytes: no I/O, linear in the input (the base subject loop removes
 * at least one byte per round), every output bounded by the input it came from
 * (MIME_MAX_VALUE bytes of a field are looked at).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <unicase.h>
#include <uninorm.h>
#include <unistr.h>

#include "core/buf.h"
#include "store/mime.h"

/* ---- i;unicode-casemap (RFC 5051 §2) --------------------------------------------------- */

bool mime_casemap(const char *s, size_t len, struct buf *out)
{
    /* RFC 5051 §2: (1) each character to its titlecase form (Unicode simple titlecase
     * mapping); (2) the result in normalisation form KD; compared as octets (i;octet).
     * An octet that is not valid UTF-8 stands for U+FFFD. */
    uint32_t stack[256];
    uint32_t *cps = len <= sizeof stack / sizeof stack[0] ? stack : malloc(len * sizeof *cps);
    if (!cps)
        return false;
    size_t n = 0;
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    while (p < end) {
        ucs4_t uc;
        int k = u8_mbtoucr(&uc, p, (size_t)(end - p));
        if (k <= 0) {
            uc = 0xFFFD;
            k = 1;
        }
        p += k;
        cps[n++] = uc_totitle(uc);
    }
    bool ok = true;
    if (n > 0) {
        size_t nlen = 0;
        uint32_t *norm = u32_normalize(UNINORM_NFKD, cps, n, NULL, &nlen);
        if (!norm) {
            ok = false;
        } else {
            for (size_t i = 0; i < nlen && ok; i++) {
                uint8_t u8[6];
                int w = u8_uctomb(u8, norm[i], sizeof u8);
                ok = w > 0 && buf_append(out, u8, (size_t)w);
            }
            free(norm);
        }
    }
    if (cps != stack)
        free(cps);
    return ok;
}

/* ---- base subject (RFC 5256 §2.1, ABNF in §5) ------------------------------------------ */

/* [s, e) of the working subject; the flag collects "this is a reply or forward". */
struct subj {
    const char *s;
    size_t b, e; /* begin and end offsets */
    bool is_reply;
};

static bool subj_prefix_ci(const struct subj *x, size_t at, const char *word)
{
    size_t n = strlen(word);
    return x->e - at >= n && strncasecmp(x->s + at, word, n) == 0;
}

/* subj-blob = "[" *BLOBCHAR "]" *WSP at offset at: the offset after it, or 0 if none. */
static size_t subj_blob_end(const struct subj *x, size_t at)
{
    if (at >= x->e || x->s[at] != '[')
        return 0;
    size_t i = at + 1;
    while (i < x->e && x->s[i] != ']' && x->s[i] != '[')
        i++;
    if (i >= x->e || x->s[i] != ']')
        return 0;
    i++;
    while (i < x->e && x->s[i] == ' ')
        i++;
    return i;
}

/* subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":" at offset at: end or 0. */
static size_t subj_refwd_end(const struct subj *x, size_t at)
{
    size_t i;
    if (subj_prefix_ci(x, at, "re"))
        i = at + 2;
    else if (subj_prefix_ci(x, at, "fwd"))
        i = at + 3;
    else if (subj_prefix_ci(x, at, "fw"))
        i = at + 2;
    else
        return 0;
    while (i < x->e && x->s[i] == ' ')
        i++;
    size_t blob = subj_blob_end(x, i);
    if (blob)
        i = blob;
    return i < x->e && x->s[i] == ':' ? i + 1 : 0;
}

/* Step (2): remove subj-trailer = "(fwd)" / WSP at the end, as long as any is there. */
static void subj_strip_trailers(struct subj *x)
{
    for (;;) {
        if (x->e > x->b && x->s[x->e - 1] == ' ') {
            x->e--;
        } else if (x->e - x->b >= 5 && strncasecmp(x->s + x->e - 5, "(fwd)", 5) == 0) {
            x->e -= 5;
            x->is_reply = true;
        } else {
            return;
        }
    }
}

/* Step (3): remove subj-leader = (*subj-blob subj-refwd) / WSP from the start, all of
 * them; true when something was removed. */
static bool subj_strip_leaders(struct subj *x)
{
    bool removed = false;
    for (;;) {
        if (x->b < x->e && x->s[x->b] == ' ') {
            x->b++;
            removed = true;
            continue;
        }
        size_t i = x->b, blob;
        while ((blob = subj_blob_end(x, i)) != 0)
            i = blob;
        size_t refwd = subj_refwd_end(x, i);
        if (!refwd)
            return removed;
        x->b = refwd;
        x->is_reply = true;
        removed = true;
    }
}

bool mime_base_subject(const char *subject, size_t len, struct buf *out, bool *is_reply_r)
{
    /* Step (1) (after RFC 2047 decoding by the caller): tabs and line breaks become a
     * space, runs of spaces one space. */
    char *t = malloc(len + 1);
    if (!t)
        return false;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = subject[i];
        if (c == '\t' || c == '\r' || c == '\n')
            c = ' ';
        if (c == ' ' && n > 0 && t[n - 1] == ' ')
            continue;
        t[n++] = c;
    }
    struct subj x = {.s = t, .b = 0, .e = n};
    for (;;) {
        subj_strip_trailers(&x); /* (2) */
        for (;;) {               /* (5): repeat (3) and (4) until nothing matches */
            bool removed = subj_strip_leaders(&x); /* (3) */
            /* (4): a leading subj-blob goes when something non-empty remains after it */
            size_t blob = subj_blob_end(&x, x.b);
            if (blob && blob < x.e) {
                x.b = blob;
                removed = true;
            }
            if (!removed)
                break;
        }
        /* (6): "[fwd:" subj-base "]" unwraps, and extraction starts again at (2) */
        if (subj_prefix_ci(&x, x.b, "[fwd:") && x.e > x.b + 5 && x.s[x.e - 1] == ']') {
            x.b += 5;
            x.e--;
            x.is_reply = true;
            continue;
        }
        break;
    }
    bool ok = buf_append(out, t + x.b, x.e - x.b);
    free(t);
    if (is_reply_r)
        *is_reply_r = x.is_reply;
    return ok;
}

/* ---- sent date (RFC 5322 §3.3, with the obsolete forms of §4.3) ------------------------- */

static const char *date_skip_cfws(const char *s)
{
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
            s++;
        if (*s != '(')
            return s;
        int depth = 0;
        do {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '(')
                depth++;
            else if (*s == ')')
                depth--;
            s++;
        } while (*s && depth > 0);
    }
}

static bool date_number(const char **sp, int min_digits, int max_digits, int *v_r)
{
    const char *s = *sp;
    int v = 0, n = 0;
    while (isdigit((unsigned char)*s) && n < max_digits) {
        v = v * 10 + (*s - '0');
        s++;
        n++;
    }
    if (n < min_digits || isdigit((unsigned char)*s))
        return false;
    *v_r = v;
    *sp = s;
    return true;
}

/* Zone offset in minutes east of UTC: "+hhmm"/"-hhmm" or an obsolete name (§4.3: military
 * zones and unknown names are treated as +0000). */
static int date_zone(const char *s)
{
    if (*s == '+' || *s == '-') {
        int v;
        const char *p = s + 1;
        if (!date_number(&p, 4, 4, &v))
            return 0;
        int minutes = (v / 100) * 60 + v % 100;
        return *s == '-' ? -minutes : minutes;
    }
    static const struct {
        const char *name;
        int hours;
    } zones[] = {{"UT", 0},   {"GMT", 0},  {"EST", -5}, {"EDT", -4}, {"CST", -6},
                 {"CDT", -5}, {"MST", -7}, {"MDT", -6}, {"PST", -8}, {"PDT", -7}};
    size_t n = 0;
    while (isalpha((unsigned char)s[n]))
        n++;
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++)
        if (strlen(zones[i].name) == n && strncasecmp(s, zones[i].name, n) == 0)
            return zones[i].hours * 60;
    return 0;
}

bool mime_date_parse(const char *s, int64_t *t_r)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    s = date_skip_cfws(s);
    if (isalpha((unsigned char)*s)) { /* day-of-week "," */
        while (isalpha((unsigned char)*s))
            s++;
        s = date_skip_cfws(s);
        if (*s == ',')
            s = date_skip_cfws(s + 1);
    }
    int day, year, hour, min, sec = 0;
    if (!date_number(&s, 1, 2, &day))
        return false;
    s = date_skip_cfws(s);
    const char *m = NULL;
    for (const char *p = months; *p; p += 3)
        if (strncasecmp(s, p, 3) == 0)
            m = p;
    if (!m)
        return false;
    s = date_skip_cfws(s + 3);
    const char *ys = s;
    if (!date_number(&s, 2, 4, &year))
        return false;
    if (s - ys == 2) /* RFC 5322 §4.3: 2-digit years: 00-49 are 2000-2049 */
        year += year < 50 ? 2000 : 1900;
    else if (s - ys == 3)
        year += 1900;
    s = date_skip_cfws(s);
    if (!date_number(&s, 1, 2, &hour) || *date_skip_cfws(s) != ':')
        return false;
    s = date_skip_cfws(date_skip_cfws(s) + 1);
    if (!date_number(&s, 1, 2, &min))
        return false;
    s = date_skip_cfws(s);
    if (*s == ':') {
        s = date_skip_cfws(s + 1);
        if (!date_number(&s, 1, 2, &sec))
            return false;
        s = date_skip_cfws(s);
    }
    if (day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60 || year < 1900 ||
        year > 9999)
        return false;
    struct tm tm = {0};
    tm.tm_mday = day;
    tm.tm_mon = (int)((m - months) / 3);
    tm.tm_year = year - 1900;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    *t_r = (int64_t)timegm(&tm) - (int64_t)date_zone(s) * 60;
    return true;
}

/* ---- message ids -------------------------------------------------------------------------- */

size_t mime_msgids(const char *value, size_t max, mime_msgid_fn *fn, void *arg)
{
    /* msg-id = "<" id-left "@" id-right ">" (RFC 5322 §3.6.4): folding white space and
     * comments inside are dropped; a "<...>" without '@' is not a message id. */
    size_t found = 0;
    const char *s = value;
    while (s && *s && found < max) {
        s = date_skip_cfws(s);
        if (*s != '<') {
            if (*s)
                s++;
            continue;
        }
        const char *st = s;
        const char *gt = strchr(s + 1, '>');
        const char *lt = strchr(s + 1, '<');
        if (!gt)
            break;
        if (lt && lt < gt) { /* "<<a@b>": start again at the inner '<' */
            s = lt;
            continue;
        }
        char id[1024];
        size_t n = 0;
        bool has_at = false, is_too_long = false;
        for (const char *p = st; p <= gt; p++) {
            if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
                continue;
            if (n + 1 >= sizeof id) {
                is_too_long = true;
                break;
            }
            has_at |= *p == '@';
            id[n++] = *p;
        }
        id[n] = '\0';
        if (has_at && !is_too_long && n > 3) {
            fn(arg, id, n);
            found++;
        }
        s = gt + 1;
    }
    return found;
}

/* ---- the keys of a message ---------------------------------------------------------------- */

enum {
    SORT_F_DATE,
    SORT_F_SUBJECT,
    SORT_F_FROM,
    SORT_F_TO,
    SORT_F_CC,
    SORT_F_MESSAGE_ID,
    SORT_F_IN_REPLY_TO,
    SORT_F_REFERENCES,
    SORT_F_COUNT
};

/* First occurrence of each field the keys need, unfolded (as raw header text). */
static void sort_fields(const char *hdr, size_t len, char *fields[SORT_F_COUNT])
{
    static const char *const names[SORT_F_COUNT] = {
        "Date", "Subject", "From", "To", "Cc", "Message-ID", "In-Reply-To", "References"};
    size_t pos = 0, n_fields = 0;
    while (pos < len && n_fields++ < MIME_MAX_FIELDS) {
        const char *nl = memchr(hdr + pos, '\n', len - pos);
        size_t le = nl ? (size_t)(nl - hdr) + 1 : len;
        size_t ce = le;
        while (ce > pos && (hdr[ce - 1] == '\n' || hdr[ce - 1] == '\r'))
            ce--;
        if (ce == pos)
            break; /* the empty line ends the header */
        size_t next = le;
        while (next < len && (hdr[next] == ' ' || hdr[next] == '\t')) {
            const char *cnl = memchr(hdr + next, '\n', len - next);
            next = cnl ? (size_t)(cnl - hdr) + 1 : len;
        }
        const char *line = hdr + pos;
        const char *colon = memchr(line, ':', ce - pos);
        if (colon && line[0] != ' ' && line[0] != '\t') {
            size_t nlen = (size_t)(colon - line);
            while (nlen > 0 && (line[nlen - 1] == ' ' || line[nlen - 1] == '\t'))
                nlen--;
            for (int f = 0; f < SORT_F_COUNT; f++) {
                if (fields[f] || strlen(names[f]) != nlen || strncasecmp(line, names[f], nlen))
                    continue;
                /* RFC 5322 §2.2.3: unfold (drop the line breaks) */
                size_t vs = (size_t)(colon + 1 - hdr), cap = next - vs;
                if (cap > MIME_MAX_VALUE)
                    cap = MIME_MAX_VALUE;
                char *v = malloc(cap + 1);
                if (!v)
                    break;
                size_t k = 0;
                for (size_t q = vs; q < next && k < cap; q++)
                    if (hdr[q] != '\r' && hdr[q] != '\n')
                        v[k++] = hdr[q];
                v[k] = '\0';
                fields[f] = v;
            }
        }
        pos = next;
    }
}

struct sort_first_addr {
    char *mailbox, *display;
};

static bool sort_first_address(void *arg, const struct mime_address *a)
{
    struct sort_first_addr *f = arg;
    f->mailbox = strdup(a->mailbox);
    /* RFC 5957 §3: the display-name when present and non-empty, else the addr-spec */
    struct buf d;
    buf_init(&d, MIME_MAX_VALUE);
    if (a->name && a->name[0])
        buf_append_str(&d, a->name);
    else if (a->host)
        buf_printf(&d, "%s@%s", a->mailbox, a->host);
    else
        buf_append_str(&d, a->mailbox);
    f->display = buf_steal(&d);
    return false; /* the first address is all SORT wants */
}

/* A group comes first: its name stands for the address, as in Dovecot (whose address
 * lists carry a group as an address named after it). */
static bool sort_first_group(void *arg, const char *name)
{
    struct sort_first_addr *f = arg;
    f->mailbox = strdup(name);
    f->display = strdup(name);
    return false;
}

/* s[0..len) mapped for the comparator: i;unicode-casemap (mime_casemap) or
 * i;ascii-casemap (a-z as A-Z), so that comparing the results as octets is the
 * comparator's ordering. */
static bool sort_map(enum mime_comparator cmp, const char *s, size_t len, struct buf *out)
{
    if (cmp == MIME_CMP_UNICODE_CASEMAP)
        return mime_casemap(s, len, out);
    bool ok = true;
    for (size_t i = 0; i < len && ok; i++)
        ok = buf_append_byte(out, s[i] >= 'a' && s[i] <= 'z' ? (char)(s[i] - 32) : s[i]);
    return ok;
}

/* Casemapped copy of s (NULL -> ""), RFC 2047-decoded first when is_encoded. */
static char *sort_casemapped(enum mime_comparator cmp, const char *s, bool is_encoded)
{
    struct buf dec, out;
    buf_init(&dec, MIME_MAX_VALUE * 2);
    buf_init(&out, MIME_MAX_VALUE * 4);
    const char *text = s ? s : "";
    size_t len = strlen(text);
    if (is_encoded && mime_header_decode(text, len, &dec)) {
        text = dec.data ? dec.data : "";
        len = dec.len;
    }
    sort_map(cmp, text, len, &out);
    buf_free(&dec);
    char *r = buf_steal(&out);
    return r ? r : strdup("");
}

static void sort_address_keys(enum mime_comparator cmp, const char *value, char **mailbox_r,
                              char **display_r)
{
    struct sort_first_addr f = {0};
    const struct mime_address_visitor v = {sort_first_group, sort_first_address, NULL, &f};
    mime_address_list_parse(value, &v);
    *mailbox_r = sort_casemapped(cmp, f.mailbox, false);
    if (display_r)
        *display_r = sort_casemapped(cmp, f.display, true);
    free(f.mailbox);
    free(f.display);
}

static void sort_append_id(void *arg, const char *id, size_t len)
{
    struct buf *b = arg;
    if (b->len)
        buf_append_byte(b, ' ');
    buf_append(b, id, len);
}

static void sort_first_id(void *arg, const char *id, size_t len)
{
    char **r = arg;
    if (!*r)
        *r = strndup(id, len);
}

bool mime_sort_keys_parse(const char *hdr, size_t len, struct mime_sort_keys *k)
{
    return mime_sort_keys_parse_cmp(hdr, len, MIME_CMP_UNICODE_CASEMAP, k);
}

bool mime_sort_keys_parse_cmp(const char *hdr, size_t len, enum mime_comparator cmp,
                              struct mime_sort_keys *k)
{
    memset(k, 0, sizeof *k);
    char *f[SORT_F_COUNT] = {0};
    sort_fields(hdr, len, f);
    k->sent = -1;
    int64_t t;
    if (f[SORT_F_DATE] && mime_date_parse(f[SORT_F_DATE], &t))
        k->sent = t;
    /* RFC 5256 §2.1 step (1): RFC 2047 words decoded before the base subject is taken */
    struct buf dec, base;
    buf_init(&dec, MIME_MAX_VALUE * 2);
    buf_init(&base, MIME_MAX_VALUE * 2);
    const char *subj = f[SORT_F_SUBJECT] ? f[SORT_F_SUBJECT] : "";
    if (mime_header_decode(subj, strlen(subj), &dec))
        mime_base_subject(dec.data ? dec.data : "", dec.len, &base, &k->is_reply);
    struct buf mapped;
    buf_init(&mapped, MIME_MAX_VALUE * 8);
    sort_map(cmp, base.data ? base.data : "", base.len, &mapped);
    k->subject = buf_steal(&mapped);
    if (!k->subject)
        k->subject = strdup("");
    buf_free(&dec);
    buf_free(&base);
    sort_address_keys(cmp, f[SORT_F_FROM], &k->from, &k->display_from);
    sort_address_keys(cmp, f[SORT_F_TO], &k->to, &k->display_to);
    sort_address_keys(cmp, f[SORT_F_CC], &k->cc, NULL);
    mime_msgids(f[SORT_F_MESSAGE_ID], 1, sort_first_id, &k->message_id);
    /* RFC 5256 §3 REFERENCES (1)(A): the References ids, or without them the first id
     * of In-Reply-To */
    struct buf refs;
    buf_init(&refs, MIME_MAX_VALUE);
    if (mime_msgids(f[SORT_F_REFERENCES], MIME_MAX_REFERENCES, sort_append_id, &refs) == 0)
        mime_msgids(f[SORT_F_IN_REPLY_TO], 1, sort_append_id, &refs);
    k->references = buf_steal(&refs);
    if (!k->references)
        k->references = strdup("");
    for (int i = 0; i < SORT_F_COUNT; i++)
        free(f[i]);
    return k->subject && k->from && k->display_from && k->to && k->display_to && k->cc &&
           k->references;
}

char *mime_thread_root(const char *msg, size_t len)
{
    char *f[SORT_F_COUNT] = {0};
    sort_fields(msg, len, f);
    char *root = NULL;
    /* RFC 5322 §3.6.4: References starts with the thread's first message (a client that
     * shortens it keeps the first id); a reply without it names its parent in
     * In-Reply-To; a message that starts a thread has only its own Message-ID */
    mime_msgids(f[SORT_F_REFERENCES], 1, sort_first_id, &root);
    if (!root)
        mime_msgids(f[SORT_F_IN_REPLY_TO], 1, sort_first_id, &root);
    if (!root)
        mime_msgids(f[SORT_F_MESSAGE_ID], 1, sort_first_id, &root);
    for (int i = 0; i < SORT_F_COUNT; i++)
        free(f[i]);
    return root;
}

void mime_sort_keys_free(struct mime_sort_keys *k)
{
    if (!k)
        return;
    free(k->subject);
    free(k->from);
    free(k->to);
    free(k->cc);
    free(k->display_from);
    free(k->display_to);
    free(k->message_id);
    free(k->references);
    memset(k, 0, sizeof *k);
}
