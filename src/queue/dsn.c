/*
 * dsn.c - RFC 3461 delivery status notification parameters as pure functions: xtext
 * (ENVID=, ORCPT=), NOTIFY= values, and which DSNs a recipient asked for. Shared by the
 * SMTP server (parsing MAIL/RCPT), the spool (envelope lines) and the queue runner
 * (bounces, success and delay notices, passing the parameters to the next hop).
 */
#include "queue/queue.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int xtext_hex(char c)
{
    /* RFC 3461 §4: hexchar is "+" followed by two UPPER-case hex digits */
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool queue_xtext_decode(const char *in, size_t len, char *out, size_t size)
{
    size_t o = 0;
    if (size == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '+') {
            if (len - i < 3)
                return false;
            int h = xtext_hex(in[i + 1]), l = xtext_hex(in[i + 2]);
            if (h < 0 || l < 0)
                return false;
            c = (unsigned char)(h * 16 + l);
            i += 2;
            /* decoded text ends up in DSN header fields: printable ASCII only */
            if (c < 0x20 || c > 0x7e)
                return false;
        } else if (c < 33 || c > 126 || c == '=') {
            return false; /* xchar: "!".."~" except "+" and "=" */
        }
        if (o + 1 >= size)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

bool queue_xtext_encode(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool is_plain = *p >= 33 && *p <= 126 && *p != '+' && *p != '=';
        size_t need = is_plain ? 1 : 3;
        if (o + need >= size)
            return false;
        if (is_plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '+';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (size == 0)
        return false;
    out[o] = '\0';
    return true;
}

bool queue_notify_parse(const char *s, size_t len, unsigned *notify_r)
{
    static const struct {
        const char *name;
        unsigned bit;
    } words[] = {{"NEVER", QUEUE_NOTIFY_NEVER},
                 {"SUCCESS", QUEUE_NOTIFY_SUCCESS},
                 {"FAILURE", QUEUE_NOTIFY_FAILURE},
                 {"DELAY", QUEUE_NOTIFY_DELAY}};
    unsigned bits = 0;
    size_t i = 0;
    if (len == 0)
        return false;
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        bool found = false;
        for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) {
            if (j - i == strlen(words[k].name) && strncasecmp(s + i, words[k].name, j - i) == 0) {
                bits |= words[k].bit;
                found = true;
            }
        }
        if (!found)
            return false;
        i = j + 1;
    }
    /* RFC 3461 §4.1: NEVER must appear alone */
    if ((bits & QUEUE_NOTIFY_NEVER) && bits != QUEUE_NOTIFY_NEVER)
        return false;
    *notify_r = bits;
    return true;
}

void queue_notify_format(unsigned notify, char *out, size_t size)
{
    if (notify & QUEUE_NOTIFY_NEVER) {
        snprintf(out, size, "NEVER");
        return;
    }
    snprintf(out, size, "%s%s%s%s%s", (notify & QUEUE_NOTIFY_SUCCESS) ? "SUCCESS" : "",
             (notify & QUEUE_NOTIFY_SUCCESS) && (notify & 6) ? "," : "",
             (notify & QUEUE_NOTIFY_FAILURE) ? "FAILURE" : "",
             (notify & QUEUE_NOTIFY_FAILURE) && (notify & QUEUE_NOTIFY_DELAY) ? "," : "",
             (notify & QUEUE_NOTIFY_DELAY) ? "DELAY" : "");
}

bool queue_notify_wants(unsigned notify, unsigned what)
{
    if (notify == 0)
        return what != QUEUE_NOTIFY_SUCCESS;
    if (notify & QUEUE_NOTIFY_NEVER)
        return false;
    return (notify & what) != 0;
}

bool queue_entry_notify_wants(const struct queue_entry *e, size_t i, unsigned what)
{
    unsigned n = e->notify && i < e->n_recipients ? e->notify[i] : 0;
    return queue_notify_wants(n, what);
}

const char *queue_entry_orcpt(const struct queue_entry *e, size_t i)
{
    return e->orcpt && i < e->n_recipients ? e->orcpt[i] : NULL;
}
