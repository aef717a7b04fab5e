/*
 * test_mailauth_util.h - a table DNS for the mailauth unit tests and fuzzers: rows of
 * (name, type, value) answer lookups; a row with value NULL answers TEMPFAIL; a name
 * with no row at all is NXDOMAIN. Header-only (static).
 */
#ifndef TERN_TEST_MAILAUTH_UTIL_H
#define TERN_TEST_MAILAUTH_UTIL_H

#include "mailauth/mailauth.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct table_row {
    const char *name;
    int type;
    const char *value; /* TXT text, A/AAAA address text, MX/PTR host; NULL: TEMPFAIL */
};

struct table_dns {
    const struct table_row *rows;
    size_t n;
    unsigned n_lookups;
    char names[32][256]; /* the first 32 names looked up */
};

static enum mailauth_dns_status table_lookup(void *ctx, const char *name, int type,
                                             struct mailauth_dns_answer *a)
{
    struct table_dns *t = ctx;
    if (t->n_lookups < 32)
        snprintf(t->names[t->n_lookups], sizeof t->names[0], "%s", name);
    t->n_lookups++;
    a->n = 0;
    bool is_known = false;
    for (size_t i = 0; i < t->n; i++) {
        const struct table_row *r = &t->rows[i];
        if (strcasecmp(r->name, name) != 0)
            continue;
        is_known = true;
        if (r->type != type)
            continue;
        if (!r->value)
            return MAILAUTH_DNS_TEMPFAIL;
        if (a->n >= MAILAUTH_DNS_RRS_MAX)
            break;
        unsigned char *out = a->rr[a->n].data;
        if (type == MAILAUTH_DNS_A) {
            inet_pton(AF_INET, r->value, out);
            a->rr[a->n++].len = 4;
        } else if (type == MAILAUTH_DNS_AAAA) {
            inet_pton(AF_INET6, r->value, out);
            a->rr[a->n++].len = 16;
        } else {
            size_t l = strlen(r->value);
            if (l >= MAILAUTH_DNS_RR_MAX)
                l = MAILAUTH_DNS_RR_MAX - 1;
            memcpy(out, r->value, l);
            out[l] = '\0';
            a->rr[a->n++].len = l;
        }
    }
    return is_known ? MAILAUTH_DNS_OK : MAILAUTH_DNS_NXDOMAIN;
}

static inline struct mailauth_dns table_dns(struct table_dns *t)
{
    return (struct mailauth_dns){.lookup = table_lookup, .ctx = t};
}

#endif
