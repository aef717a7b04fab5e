/*
 * uidl.c - POP3 UIDL formats (Dovecot's pop3_uidl_format): see uidl.h.
 *
 * One pass over the format; each variable is expanded into a small buffer, then its
 * modifiers, offset and width are applied in Dovecot's order (modifiers, offset, width).
 */
#include "core/uidl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UIDL_FIELD_MAX 512 /* one expanded variable (a file name is at most 255 bytes) */

/* Set *error_r (if error_r) to a malloc'd copy of reason. */
static void uidl_error(char **error_r, const char *reason)
{
    if (error_r)
        *error_r = strdup(reason);
}

/* The value of variable key (long name when is_long) into buf; NULL when unknown. */
static const char *var_value(const char *key, size_t key_len, const struct uidl_vars *v,
                             char *buf, size_t size, char **error_r)
{
    static const struct {
        char short_name;
        const char *long_name;
    } names[] = {{'u', "uid"}, {'v', "uidvalidity"}, {'f', "filename"}, {'g', "guid"}, {'m', "md5"}};
    int which = -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((key_len == 1 && key[0] == names[i].short_name) ||
            (key_len == strlen(names[i].long_name) &&
             memcmp(key, names[i].long_name, key_len) == 0))
            which = (int)i;
    const char *filename = v && v->filename ? v->filename : "";
    switch (which) {
    case 0:
        snprintf(buf, size, "%u", v ? v->uid : 0);
        return buf;
    case 1:
        snprintf(buf, size, "%u", v ? v->uidvalidity : 0);
        return buf;
    case 2:
        snprintf(buf, size, "%s", filename);
        return buf;
    case 3:
        snprintf(buf, size, "%s", v && v->guid ? v->guid : filename);
        return buf;
    case 4:
        uidl_error(error_r, "%m (header MD5) is not available: Dovecot serves it only from "
                            "mbox, never from a Maildir");
        return NULL;
    default:
        uidl_error(error_r, "unknown variable (known: %u %v %f %g)");
        return NULL;
    }
}

/* Dovecot's X: the decimal number as lower-case hex ("%llx"), 0 when not a number. */
static void modifier_hex(char *s, size_t size)
{
    unsigned long long n = 0;
    const char *p = s;
    bool is_number = *p != '\0';
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || n > (~0ULL - 9) / 10) {
            is_number = false;
            break;
        }
        n = n * 10 + (unsigned long long)(*p - '0');
    }
    snprintf(s, size, "%llx", is_number ? n : 0ULL);
}

/* Expand (out != NULL) or only check (out == NULL) fmt. */
static bool uidl_expand(const char *fmt, const struct uidl_vars *v, char *out, size_t size,
                        char **error_r)
{
    if (strlen(fmt) > UIDL_FORMAT_MAX) {
        uidl_error(error_r, "format too long");
        return false;
    }
    size_t o = 0;
    for (const char *p = fmt; *p; p++) {
        char field[UIDL_FIELD_MAX];
        const char *value;
        if (*p != '%') {
            field[0] = *p;
            field[1] = '\0';
            value = field;
        } else {
            p++;
            /* [<offset>.]<width>[<modifiers>]<variable> (Dovecot's var_expand order) */
            long offset = 0, width = 0, sign = 1;
            bool zero_pad = false;
            if (*p == '-') {
                sign = -1;
                p++;
            }
            if (*p == '0') {
                zero_pad = true;
                p++;
            }
            while (*p >= '0' && *p <= '9' && width < 1000)
                width = width * 10 + (*p++ - '0');
            if (*p == '.') {
                offset = sign * width;
                sign = 1;
                width = 0;
                p++;
                zero_pad = false;
                if (*p == '0') {
                    zero_pad = true;
                    p++;
                }
                if (*p == '-') {
                    sign = -1;
                    p++;
                }
                while (*p >= '0' && *p <= '9' && width < 1000)
                    width = width * 10 + (*p++ - '0');
                width *= sign;
            }
            if (*p >= '0' && *p <= '9') {
                uidl_error(error_r, "width too large");
                return false;
            }
            char mods[4];
            size_t n_mods = 0;
            while (*p && strchr("XLUR", *p) && n_mods < sizeof mods)
                mods[n_mods++] = *p++;
            if (*p && strchr("EHNMDTXLUR", *p)) {
                uidl_error(error_r, "unsupported modifier (supported: X L U R)");
                return false;
            }
            if (*p == '\0') {
                uidl_error(error_r, "'%' at the end");
                return false;
            }
            if (*p == '%' && n_mods == 0 && width == 0 && offset == 0) {
                field[0] = '%';
                field[1] = '\0';
                value = field;
            } else {
                const char *key = p;
                size_t key_len = 1;
                if (*p == '{') {
                    const char *close = strchr(p, '}');
                    if (!close) {
                        uidl_error(error_r, "'%{' without '}'");
                        return false;
                    }
                    key = p + 1;
                    key_len = (size_t)(close - key);
                    p = close;
                }
                if (!var_value(key, key_len, v, field, sizeof field, error_r))
                    return false;
                for (size_t m = 0; m < n_mods; m++) {
                    size_t len = strlen(field);
                    if (mods[m] == 'X')
                        modifier_hex(field, sizeof field);
                    for (size_t i = 0; i < len && mods[m] != 'X'; i++) {
                        char c = field[i];
                        if (mods[m] == 'L' && c >= 'A' && c <= 'Z')
                            field[i] = (char)(c - 'A' + 'a');
                        else if (mods[m] == 'U' && c >= 'a' && c <= 'z')
                            field[i] = (char)(c - 'a' + 'A');
                    }
                    for (size_t i = 0; mods[m] == 'R' && i < len / 2; i++) {
                        char t = field[i];
                        field[i] = field[len - 1 - i];
                        field[len - 1 - i] = t;
                    }
                }
                value = field;
                size_t len = strlen(value);
                if (offset < 0) {
                    if ((size_t)-offset < len)
                        value += len - (size_t)-offset;
                } else {
                    value += (size_t)offset < len ? (size_t)offset : len;
                }
                len = strlen(value);
                if (width != 0 && !zero_pad) {
                    /* truncation; a negative width drops that many bytes at the end */
                    size_t keep = width > 0 ? (size_t)width
                                            : ((size_t)-width < len ? len - (size_t)-width : 0);
                    if (keep < len) {
                        memmove(field, value, keep);
                        field[keep] = '\0';
                        value = field;
                    }
                } else if (zero_pad && width > 0 && (size_t)width > len) {
                    /* "%05d"-like padding, never truncating */
                    size_t pad = (size_t)width - len;
                    if (pad + len + 1 > sizeof field)
                        pad = sizeof field - len - 1;
                    memmove(field + pad, value, len + 1);
                    memset(field, '0', pad);
                    value = field;
                }
            }
        }
        for (const char *q = value; out && *q && o + 1 < size; q++) {
            unsigned char c = (unsigned char)*q;
            out[o++] = c >= 0x21 && c <= 0x7e ? (char)c : '?';
        }
    }
    if (out) {
        if (size == 0)
            return false;
        out[o] = '\0';
        return o > 0;
    }
    return true;
}

bool uidl_format_check(const char *fmt, char **error_r)
{
    if (fmt[0] == '\0') {
        uidl_error(error_r, "empty format");
        return false;
    }
    return uidl_expand(fmt, NULL, NULL, 0, error_r);
}

bool uidl_format(const char *fmt, const struct uidl_vars *v, char *out, size_t size)
{
    return uidl_expand(fmt, v, out, size, NULL);
}
