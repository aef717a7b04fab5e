/*
 * fuzz_dovecot.c - libFuzzer target for the Dovecot file parsers (store/dovecot.h). The
 * first byte picks the parser (0: dovecot-uidlist, 1: dovecot-keywords, 2: subscriptions,
 * 3: UTF-8 -> modified UTF-7), the rest is the file. Checked besides no crash, no leak,
 * no over-read:
 *   - uidlist: a parsed list has uidvalidity and uidnext != 0, records sorted by name with
 *     distinct names, every UID in 1..uidnext-1, and every name found again by find();
 *   - keywords: every kept name is a non-empty atom; of_info() output fits and is made of
 *     kept names;
 *   - subscriptions: names are non-empty, at most 255 bytes, sorted and distinct, without
 *     empty levels;
 *   - mUTF-7: the output is printable ASCII.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/dovecot.h"

static void check_uidlist(const char *d, size_t n)
{
    struct dovecot_uidlist l;
    if (dovecot_uidlist_parse(d, n, &l, NULL) < 0)
        return;
    if (l.uidvalidity == 0 || l.uidnext == 0)
        abort();
    for (size_t i = 0; i < l.n; i++) {
        const struct dovecot_uidlist_rec *r = &l.recs[i];
        if (r->uid == 0 || r->uid >= l.uidnext || r->name[0] == '\0')
            abort();
        if (i > 0 && strcmp(l.recs[i - 1].name, r->name) >= 0)
            abort();
        if (dovecot_uidlist_find(&l, r->name, strlen(r->name)) != r)
            abort();
    }
    dovecot_uidlist_free(&l);
}

static void check_keywords(const char *d, size_t n)
{
    struct dovecot_keywords kw;
    if (dovecot_keywords_parse(d, n, &kw, NULL) < 0)
        return;
    for (size_t k = 0; k < DOVECOT_KEYWORDS_MAX; k++)
        if (kw.names[k] && (kw.names[k][0] == '\0' || strchr(kw.names[k], ' ')))
            abort();
    char out[32 * 260];
    if (!dovecot_keywords_of_info(&kw, "2,abcdefghijklmnopqrstuvwxyz", out, sizeof out))
        abort(); /* 26 names of <= 256 bytes always fit */
    dovecot_keywords_free(&kw);
}

static void check_subscriptions(const char *d, size_t n)
{
    struct dovecot_subscriptions s;
    if (dovecot_subscriptions_parse(d, n, &s, NULL) < 0)
        return;
    for (size_t i = 0; i < s.n; i++) {
        size_t len = strlen(s.names[i]);
        if (len == 0 || len > DOVECOT_MAILBOX_NAME_MAX || strstr(s.names[i], "//") ||
            s.names[i][0] == '/' || s.names[i][len - 1] == '/')
            abort();
        if (i > 0 && strcmp(s.names[i - 1], s.names[i]) >= 0)
            abort();
    }
    dovecot_subscriptions_free(&s);
}

static void check_mutf7(const char *d, size_t n)
{
    char out[1024];
    if (!dovecot_utf8_to_mutf7(d, n, out, sizeof out))
        return;
    for (const char *p = out; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
        check_uidlist(d, n);
        break;
    case 1:
        check_keywords(d, n);
        break;
    case 2:
        check_subscriptions(d, n);
        break;
    default:
        check_mutf7(d, n);
        break;
    }
    return 0;
}
