/*
 * parse.c - POP3 line framing, verb table, arguments and numbers (see parse.h).
 * Pure functions over bytes: no I/O, no allocation, linear time in the input.
 */
#include "pop3/parse.h"

#include <string.h>

enum pop3_line_result pop3_line_next(struct pop3_lines *st, const char *buf, size_t len, size_t max,
                                     size_t *line_len_r, size_t *consumed_r)
{
    /* Only the first max bytes can hold the LF of an acceptable line. */
    size_t window = len < max ? len : max;
    const char *lf = memchr(buf, '\n', st->is_discarding ? len : window);

    *line_len_r = 0;
    if (st->is_discarding) {
        if (lf == NULL) {
            *consumed_r = len; /* keep dropping: no memory grows for a hostile line */
            return POP3_LINE_NEED_MORE;
        }
        *consumed_r = (size_t)(lf - buf) + 1;
        st->is_discarding = false;
        return POP3_LINE_TOO_LONG;
    }
    if (lf == NULL) {
        if (len >= max) {
            /* max bytes and no LF: the line (LF included) is longer than the cap. */
            st->is_discarding = true;
            *consumed_r = window; /* bytes after it may hold the LF: search them next */
            return POP3_LINE_NEED_MORE;
        }
        *consumed_r = 0;
        return POP3_LINE_NEED_MORE;
    }
    size_t n = (size_t)(lf - buf);
    *consumed_r = n + 1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    *line_len_r = n;
    return POP3_LINE_OK;
}

static const char *const verb_names[POP3_VERB_COUNT_] = {
    [POP3_VERB_UNKNOWN] = "",  [POP3_VERB_USER] = "USER", [POP3_VERB_PASS] = "PASS",
    [POP3_VERB_APOP] = "APOP", [POP3_VERB_AUTH] = "AUTH", [POP3_VERB_STLS] = "STLS",
    [POP3_VERB_CAPA] = "CAPA", [POP3_VERB_QUIT] = "QUIT", [POP3_VERB_STAT] = "STAT",
    [POP3_VERB_LIST] = "LIST", [POP3_VERB_RETR] = "RETR", [POP3_VERB_DELE] = "DELE",
    [POP3_VERB_NOOP] = "NOOP", [POP3_VERB_RSET] = "RSET", [POP3_VERB_TOP] = "TOP",
    [POP3_VERB_UIDL] = "UIDL",
};

const char *pop3_verb_name(enum pop3_verb verb)
{
    if ((unsigned)verb >= POP3_VERB_COUNT_)
        return "";
    return verb_names[verb];
}

static char ascii_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

bool pop3_command_parse(const char *line, size_t len, struct pop3_command *cmd_r)
{
    cmd_r->verb = POP3_VERB_UNKNOWN;
    cmd_r->args = line + len;
    cmd_r->args_len = 0;
    if (len == 0)
        return false;
    /* Control bytes (NUL, bare CR, ESC...) never appear in a valid command; a password
     * may contain TAB or 8-bit bytes, so only C0 controls other than TAB and DEL fail. */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    size_t vlen = 0;
    while (vlen < len && line[vlen] != ' ')
        vlen++;
    /* RFC 1939 §3: keywords are three or four characters, case-insensitive. */
    if (vlen >= 3 && vlen <= 4) {
        char up[5];
        for (size_t i = 0; i < vlen; i++)
            up[i] = ascii_upper(line[i]);
        up[vlen] = '\0';
        for (unsigned v = 1; v < POP3_VERB_COUNT_; v++) {
            if (strcmp(up, verb_names[v]) == 0) {
                cmd_r->verb = (enum pop3_verb)v;
                break;
            }
        }
    }
    if (vlen < len) {
        /* RFC 1939 §3: one space separates keyword and argument; PASS takes the rest of
         * the line verbatim (§7: "the server may treat spaces in the argument as part of
         * the password"). */
        cmd_r->args = line + vlen + 1;
        cmd_r->args_len = len - vlen - 1;
    }
    return true;
}

bool pop3_args_split(const char *args, size_t len, bool allow_long, struct pop3_args *a_r)
{
    size_t i = 0;
    a_r->n = 0;
    while (i < len) {
        while (i < len && (args[i] == ' ' || args[i] == '\t'))
            i++;
        if (i >= len)
            break;
        size_t start = i;
        while (i < len && args[i] != ' ' && args[i] != '\t')
            i++;
        if (a_r->n >= POP3_ARGS_MAX)
            return false;
        /* RFC 1939 §3: "arguments may be up to 40 characters long". */
        if (!allow_long && i - start > 40)
            return false;
        a_r->v[a_r->n] = args + start;
        a_r->len[a_r->n] = i - start;
        a_r->n++;
    }
    return true;
}

bool pop3_number_parse(const char *s, size_t len, uint64_t *n_r)
{
    uint64_t n = 0;
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *n_r = n;
    return true;
}
