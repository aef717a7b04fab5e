/*
 * parse.c - IMAP command parser (see parse.h): lines and literals in, argument tree out.
 */
#include "imap/parse.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistr.h>

void imap_parser_init(struct imap_parser *p, size_t max_literal)
{
    memset(p, 0, sizeof *p);
    p->max_literal = max_literal;
    p->args.type = IMAP_ARG_LIST;
    p->stack[0] = &p->args;
}

static void imap_arg_free(struct imap_arg *a)
{
    free(a->str);
    for (size_t i = 0; i < a->n; i++)
        imap_arg_free(&a->list[i]);
    free(a->list);
    memset(a, 0, sizeof *a);
}

void imap_parser_reset(struct imap_parser *p)
{
    size_t max = p->max_literal, max_nonsync = p->max_nonsync;
    bool is_utf8 = p->is_utf8;
    free(p->tag);
    free(p->name);
    imap_arg_free(&p->args);
    imap_parser_init(p, max);
    p->max_nonsync = max_nonsync;
    p->is_utf8 = is_utf8;
}

void imap_parser_free(struct imap_parser *p)
{
    imap_parser_reset(p);
}

/* Add an empty element to the innermost open list. */
static struct imap_arg *imap_arg_add(struct imap_parser *p, enum imap_arg_type type)
{
    if (p->n_args >= IMAP_MAX_ARGS)
        return NULL;
    struct imap_arg *l = p->stack[p->depth];
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        struct imap_arg *nl = realloc(l->list, cap * sizeof *nl);
        if (!nl)
            return NULL;
        l->list = nl;
        l->cap = cap;
    }
    struct imap_arg *a = &l->list[l->n++];
    memset(a, 0, sizeof *a);
    a->type = type;
    p->n_args++;
    return a;
}

static char *imap_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* RFC 3501 §9: tag = 1*<any ASTRING-CHAR except "+">; atom-specials excluded. */
static bool imap_is_tag_char(unsigned char c)
{
    return c > ' ' && c < 127 && !strchr("(){%*\"\\+", c);
}

/* Atom characters we accept in arguments: lenient (list-wildcards, ']' and '\' included) */
static bool imap_is_atom_char(unsigned char c)
{
    return c > ' ' && c != 127 && c != '(' && c != ')' && c != '"' && c != '{';
}

/* Does an atom that reaches '[' name a FETCH section ("BODY[", "BODY.PEEK[", RFC 3516
 * "BINARY[", "BINARY.PEEK[", "BINARY.SIZE[")? Only there do brackets hold spaces and
 * parens; anywhere else '[' is an ordinary ATOM-CHAR (RFC 3501 §9: only ']' is a
 * resp-special), so "SELECT a[b" names the mailbox "a[b". */
static bool imap_is_section_prefix(const char *s, size_t n)
{
    static const char *const names[] = {"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK",
                                        "BINARY.SIZE"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (strlen(names[k]) == n && strncasecmp(s, names[k], n) == 0)
            return true;
    return false;
}

static enum imap_parse_result imap_fail(struct imap_parser *p, const char *why)
{
    p->error = why;
    return IMAP_PARSE_ERROR;
}

/* Parse arguments from s[0..len) into the open lists. */
static enum imap_parse_result imap_parse_args(struct imap_parser *p, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ') {
            i++;
            continue;
        }
        if (c == '(') {
            if (p->depth >= IMAP_MAX_LIST_DEPTH)
                return imap_fail(p, "Too deeply nested lists.");
            struct imap_arg *a = imap_arg_add(p, IMAP_ARG_LIST);
            if (!a)
                return imap_fail(p, "Too many arguments.");
            p->stack[++p->depth] = a;
            i++;
        } else if (c == ')') {
            if (p->depth == 0)
                return imap_fail(p, "Unexpected ')'.");
            p->depth--;
            i++;
        } else if (c == '"') {
            /* RFC 3501 §4.3: quoted = DQUOTE *QUOTED-CHAR DQUOTE, \ escapes " and \ */
            i++;
            /* Allocate what this string needs, not the rest of the line: many quoted
             * strings on one line must not cost line-length each. */
            size_t need = 1;
            for (size_t q = i; q < len && s[q] != '"'; q++, need++)
                if (s[q] == '\\' && q + 1 < len)
                    q++;
            char *out = malloc(need);
            if (!out)
                return imap_fail(p, "Out of memory.");
            size_t n = 0;
            bool closed = false;
            while (i < len) {
                char q = s[i++];
                if (q == '"') {
                    closed = true;
                    break;
                }
                if (q == '\\') {
                    if (i >= len || (s[i] != '"' && s[i] != '\\')) {
                        free(out);
                        return imap_fail(p, "Invalid escape in quoted string.");
                    }
                    q = s[i++];
                }
                if (q == '\0') {
                    free(out);
                    return imap_fail(p, "NUL in quoted string.");
                }
                out[n++] = q;
            }
            if (!closed) {
                free(out);
                return imap_fail(p, "Missing '\"'.");
            }
            out[n] = '\0';
            /* RFC 6855 §3: once UTF-8 is enabled, 8-bit octets that are not UTF-8 are BAD */
            if (p->is_utf8 && u8_check((const uint8_t *)out, n) != NULL) {
                free(out);
                return imap_fail(p, "Invalid UTF-8 in quoted string.");
            }
            struct imap_arg *a = imap_arg_add(p, IMAP_ARG_QUOTED);
            if (!a) {
                free(out);
                return imap_fail(p, "Too many arguments.");
            }
            a->str = out;
            a->len = n;
        } else if (c == '{' || (c == '~' && i + 1 < len && s[i + 1] == '{')) {
            /* literal = "{" number ["+"] "}" CRLF *CHAR8, and it must end the line;
             * RFC 3516 literal8 = "~{" number ["+"] "}" CRLF *OCTET (NUL allowed: a
             * literal's length is the truth here anyway) */
            bool is_literal8 = c == '~';
            if (is_literal8)
                i++;
            size_t j = i + 1;
            uint64_t n = 0;
            bool digits = false, overflow = false;
            while (j < len && isdigit((unsigned char)s[j])) {
                if (n > (UINT64_MAX - 9) / 10)
                    overflow = true;
                else
                    n = n * 10 + (uint64_t)(s[j] - '0');
                digits = true;
                j++;
            }
            bool nonsync = false;
            if (j < len && s[j] == '+') {
                nonsync = true;
                j++;
            }
            if (!digits || j >= len || s[j] != '}' || j + 1 != len)
                return imap_fail(p, "Invalid literal.");
            p->is_literal_nonsync = nonsync;
            /* Only APPEND and REPLACE carry messages; others get line-sized literals. */
            bool is_append = imap_parser_carries_message(p);
            uint64_t limit = p->max_literal;
            /* RFC 3502 MULTIAPPEND: several messages, each within the message limit,
             * together within IMAP_APPEND_TOTAL_FACTOR of them (saturating). */
            uint64_t total_limit = (uint64_t)p->max_literal <= UINT64_MAX / IMAP_APPEND_TOTAL_FACTOR
                                       ? (uint64_t)p->max_literal * IMAP_APPEND_TOTAL_FACTOR
                                       : UINT64_MAX;
            if (total_limit < (uint64_t)p->max_literal + IMAP_MAX_LINE)
                total_limit = (uint64_t)p->max_literal + IMAP_MAX_LINE;
            if (!is_append) {
                limit = limit < IMAP_MAX_LINE ? limit : IMAP_MAX_LINE;
                total_limit = 4 * IMAP_MAX_LINE; /* all literals of one command */
            }
            if (is_append && p->n_literals >= IMAP_MAX_APPEND_MESSAGES) {
                p->is_over_limit = true;
                return imap_fail(p, "Too many messages in one APPEND.");
            }
            if (p->literal_total > total_limit || n > total_limit - p->literal_total)
                overflow = true;
            if (overflow || n > limit) {
                p->is_literal_too_big = true;
                return imap_fail(p, "Literal too large.");
            }
            /* RFC 7888 §5: with LITERAL-, a non-synchronizing literal is at most 4096
             * octets; a larger one is read (the session skips it) and refused */
            if (nonsync && p->max_nonsync && n > p->max_nonsync) {
                p->is_nonsync_too_big = true;
                p->literal_size = n;
                return imap_fail(p, "Non-synchronizing literal too large.");
            }
            struct imap_arg *a = imap_arg_add(p, IMAP_ARG_LITERAL);
            if (!a)
                return imap_fail(p, "Too many arguments.");
            a->is_literal8 = is_literal8;
            /* Memory grows as the bytes arrive: an announced size costs nothing. */
            size_t first = n < 4096 ? (size_t)n + 1 : 4096;
            a->str = malloc(first);
            if (!a->str)
                return imap_fail(p, "Out of memory.");
            a->cap = first;
            a->str[0] = '\0';
            a->len = 0;
            p->literal_size = n;
            p->literal_have = 0;
            p->literal_total += n;
            p->n_literals++;
            return IMAP_PARSE_LITERAL;
        } else if (imap_is_atom_char(c)) {
            size_t st = i;
            while (i < len && imap_is_atom_char((unsigned char)s[i])) {
                if (s[i] == '[' && imap_is_section_prefix(s + st, i - st)) {
                    /* BODY[HEADER.FIELDS (A B)]: brackets hold spaces and parens */
                    int d = 0;
                    while (i < len) {
                        if (s[i] == '[')
                            d++;
                        else if (s[i] == ']' && --d == 0)
                            break;
                        i++;
                    }
                    if (i >= len)
                        return imap_fail(p, "Missing ']'.");
                }
                i++;
            }
            struct imap_arg *a = imap_arg_add(p, IMAP_ARG_ATOM);
            if (!a)
                return imap_fail(p, "Too many arguments.");
            a->str = imap_strndup(s + st, i - st);
            if (!a->str)
                return imap_fail(p, "Out of memory.");
            a->len = i - st;
        } else {
            return imap_fail(p, "Invalid characters in command.");
        }
    }
    if (p->depth != 0)
        return imap_fail(p, "Missing ')'.");
    return IMAP_PARSE_DONE;
}

enum imap_parse_result imap_parser_feed_line(struct imap_parser *p, const char *line, size_t len)
{
    p->error = NULL;
    if (len > IMAP_MAX_LINE)
        return imap_fail(p, "Line too long.");
    if (!p->has_first_line) {
        p->has_first_line = true;
        size_t i = 0;
        while (i < len && imap_is_tag_char((unsigned char)line[i]))
            i++;
        if (i == 0 || i > IMAP_MAX_TAG || (i < len && line[i] != ' '))
            return imap_fail(p, "Invalid tag.");
        if (i == len)
            return imap_fail(p, "Missing tag or command."); /* "logout" alone: untagged */
        p->tag = imap_strndup(line, i);
        if (!p->tag)
            return imap_fail(p, "Out of memory.");
        i++;
        size_t st = i;
        while (i < len && isalnum((unsigned char)line[i]))
            i++;
        if (i == st || (i < len && line[i] != ' '))
            return imap_fail(p, "Invalid command.");
        p->name = imap_strndup(line + st, i - st);
        if (!p->name)
            return imap_fail(p, "Out of memory.");
        for (char *c = p->name; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        line += i;
        len -= i;
    }
    return imap_parse_args(p, line, len);
}

bool imap_parser_feed_literal(struct imap_parser *p, const char *data, size_t len)
{
    struct imap_arg *l = p->stack[p->depth];
    struct imap_arg *a = &l->list[l->n - 1];
    uint64_t want = p->literal_size - p->literal_have;
    if (len > want)
        len = (size_t)want;
    if (a->len + len + 1 > a->cap) {
        /* double, but never past the announced size (+1 for the NUL) */
        size_t cap = a->cap;
        while (cap < a->len + len + 1)
            cap = cap > SIZE_MAX / 2 ? a->len + len + 1 : cap * 2;
        if (cap > (size_t)p->literal_size + 1)
            cap = (size_t)p->literal_size + 1;
        char *grown = realloc(a->str, cap);
        if (!grown) {
            p->is_out_of_memory = true; /* the session gives up on the connection */
            return false;
        }
        a->str = grown;
        a->cap = cap;
    }
    memcpy(a->str + a->len, data, len);
    a->len += len;
    a->str[a->len] = '\0';
    p->literal_have += len;
    return p->literal_have == p->literal_size;
}

void imap_parser_literal_external(struct imap_parser *p, uint64_t offset)
{
    struct imap_arg *l = p->stack[p->depth];
    struct imap_arg *a = &l->list[l->n - 1];
    a->is_external = true;
    a->external_offset = offset;
    a->len = (size_t)p->literal_size;
    a->str[0] = '\0';
    p->literal_have = p->literal_size;
}

uint64_t imap_parser_literal_remaining(const struct imap_parser *p)
{
    return p->literal_size - p->literal_have;
}

bool imap_parser_carries_message(const struct imap_parser *p)
{
    if (!p->name)
        return false;
    if (strcmp(p->name, "APPEND") == 0 || strcmp(p->name, "REPLACE") == 0)
        return true;
    /* RFC 8508 UID REPLACE: the command word is the first argument */
    return strcmp(p->name, "UID") == 0 && p->args.n > 0 &&
           imap_arg_is_atom(&p->args.list[0], "REPLACE");
}

bool imap_arg_is_string(const struct imap_arg *a)
{
    return a && a->type != IMAP_ARG_LIST;
}

bool imap_arg_is_atom(const struct imap_arg *a, const char *upper)
{
    return a && a->type == IMAP_ARG_ATOM && strcasecmp(a->str, upper) == 0;
}

/* ---- sequence sets ------------------------------------------------------------------ */

/* One seq-number: '*' (is_star_r) or an nz-number. */
static bool imap_seq_number(const char **sp, uint32_t *v_r, bool *is_star_r)
{
    const char *s = *sp;
    *is_star_r = false;
    if (*s == '*') {
        *v_r = 0;
        *is_star_r = true;
        *sp = s + 1;
        return true;
    }
    /* RFC 3501 §9: nz-number = digit-nz *DIGIT, up to 2^32-1 (4294967295 is a valid UID) */
    if (*s < '1' || *s > '9')
        return false;
    uint64_t n = 0;
    while (isdigit((unsigned char)*s)) {
        n = n * 10 + (uint64_t)(*s - '0');
        if (n > UINT32_MAX)
            return false;
        s++;
    }
    *v_r = (uint32_t)n;
    *sp = s;
    return true;
}

bool imap_seqset_parse(const char *s, struct imap_seqset *set_r)
{
    set_r->r = NULL;
    set_r->n = 0;
    size_t cap = 0;
    for (;;) {
        uint32_t lo, hi;
        bool is_lo_star, is_hi_star;
        if (!imap_seq_number(&s, &lo, &is_lo_star))
            goto fail;
        hi = lo;
        is_hi_star = is_lo_star;
        if (*s == ':') {
            s++;
            if (!imap_seq_number(&s, &hi, &is_hi_star))
                goto fail;
        }
        if (set_r->n == cap) {
            cap = cap ? cap * 2 : 4;
            if (cap > IMAP_MAX_LINE)
                goto fail;
            struct imap_seq_range *r = realloc(set_r->r, cap * sizeof *r);
            if (!r)
                goto fail;
            set_r->r = r;
        }
        set_r->r[set_r->n] = (struct imap_seq_range){lo, hi, is_lo_star, is_hi_star};
        set_r->n++;
        if (*s == '\0')
            return true;
        if (*s != ',')
            goto fail;
        s++;
    }
fail:
    imap_seqset_free(set_r);
    return false;
}

void imap_seqset_free(struct imap_seqset *set)
{
    free(set->r);
    set->r = NULL;
    set->n = 0;
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t v, uint32_t star)
{
    for (size_t i = 0; i < set->n; i++) {
        uint32_t lo = set->r[i].is_lo_star ? star : set->r[i].lo;
        uint32_t hi = set->r[i].is_hi_star ? star : set->r[i].hi;
        if (lo > hi) {
            uint32_t t = lo;
            lo = hi;
            hi = t;
        }
        if (v >= lo && v <= hi)
            return true;
    }
    return false;
}
