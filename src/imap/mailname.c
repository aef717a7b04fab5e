/*
 * mailname.c - mailbox names between a UTF-8 session and the store (see mailname.h).
 */
#include "imap/mailname.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistr.h>
#include <uninorm.h>

#include "core/util.h"
#include "store/dovecot.h"

/* RFC 6855 §3: Net-Unicode (RFC 5198 §2) without controls, DEL, LS and PS. */
static bool mailname_cp_ok(long cp)
{
    return !(cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029);
}

bool imap_mailname_utf8_ok(const char *s, size_t len)
{
    const uint8_t *u = (const uint8_t *)s;
    /* RFC 3629 §4 (libunistring: no overlong form, surrogate, or past U+10FFFF) */
    if (u8_check(u, len) != NULL)
        return false;
    for (size_t i = 0; i < len;) {
        ucs4_t cp;
        int n = u8_mbtoucr(&cp, u + i, len - i);
        if (n <= 0 || !mailname_cp_ok((long)cp))
            return false;
        i += (size_t)n;
    }
    return true;
}

char *imap_mailname_import(const char *utf8, size_t len)
{
    if (len > IMAP_MAILNAME_MAX || !imap_mailname_utf8_ok(utf8, len))
        return NULL;
    /* RFC 9051 §5.1: a denormalized name is taken as its NFC form, so that CREATE and
     * SELECT of the same text reach the same mailbox whatever form the client used */
    size_t nfc_len = 0;
    uint8_t *nfc = u8_normalize(UNINORM_NFC, (const uint8_t *)utf8, len, NULL, &nfc_len);
    if (!nfc)
        return NULL;
    /* worst case: every character a base64 run of its own ("&" 3 chars "-" per UTF-16
     * unit, two units for 4 octets); bounded by the length check above */
    size_t size = nfc_len * 4 + 16;
    char *out = nfc_len <= IMAP_MAILNAME_MAX ? malloc(size) : NULL;
    /* the limit is the stored form's too (it is longer: up to 8/3 per character) */
    if (out && (!dovecot_utf8_to_mutf7((const char *)nfc, nfc_len, out, size) ||
                strlen(out) > IMAP_MAILNAME_MAX)) {
        free(out);
        out = NULL;
    }
    free(nfc);
    return out;
}

/* RFC 3501 §5.1.3 modified base64: "," instead of "/". -1 for any other byte. */
static int mailname_b64(unsigned char c)
{
    if (c == ',')
        return 63;
    return c == '/' ? -1 : util_base64_value(c);
}

/* Decode s (modified UTF-7) into out (UTF-8, NUL-terminated; at least 2 * strlen(s) + 1
 * octets: a base64 run of k octets yields at most 3k/4 UTF-16 bytes, each unit at most
 * 3 UTF-8 octets per 2 bytes, or 4 per surrogate pair). false when s is not valid. */
static bool mailname_decode(const char *s, char *out)
{
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    bool after_run = false; /* "-&" right after a run is a superfluous shift */
    while (*p) {
        if (*p != '&') {
            if (*p < 0x20 || *p > 0x7e)
                return false; /* 8-bit or a control: not modified UTF-7 */
            out[o++] = (char)*p++;
            after_run = false;
            continue;
        }
        p++;
        if (*p == '-') { /* "&-" is "&" */
            out[o++] = '&';
            p++;
            after_run = false;
            continue;
        }
        if (after_run)
            return false;
        uint32_t bits = 0;
        unsigned n_bits = 0;
        uint32_t high = 0; /* a pending high surrogate */
        size_t n_units = 0;
        for (; *p && *p != '-'; p++) {
            int v = mailname_b64(*p);
            if (v < 0)
                return false;
            bits = (bits << 6) | (uint32_t)v;
            n_bits += 6;
            if (n_bits < 16)
                continue;
            n_bits -= 16;
            uint32_t unit = (bits >> n_bits) & 0xffff;
            bits &= (1u << n_bits) - 1;
            n_units++;
            long cp;
            if (high) {
                if (unit < 0xdc00 || unit > 0xdfff)
                    return false;
                cp = 0x10000 + (((long)high - 0xd800) << 10) + ((long)unit - 0xdc00);
                high = 0;
            } else if (unit >= 0xd800 && unit <= 0xdbff) {
                high = unit;
                continue;
            } else if (unit >= 0xdc00 && unit <= 0xdfff) {
                return false;
            } else {
                cp = unit;
            }
            /* printable ASCII must stand for itself; NUL, CR and LF cannot be sent */
            if ((cp >= 0x20 && cp <= 0x7e) || cp == 0 || cp == '\r' || cp == '\n')
                return false;
            o += (size_t)u8_uctomb((uint8_t *)out + o, (ucs4_t)cp, 4);
        }
        /* the run must end with "-", hold whole units, and pad with zero bits */
        if (*p != '-' || n_units == 0 || high || n_bits >= 6 || bits != 0)
            return false;
        p++;
        after_run = true;
    }
    out[o] = '\0';
    return true;
}

bool imap_mailname_is_mutf7(const char *s)
{
    size_t len = strlen(s);
    if (len > IMAP_MAILNAME_MAX)
        return false;
    char *out = malloc(2 * len + 1);
    bool ok = out && mailname_decode(s, out);
    free(out);
    return ok;
}

char *imap_mailname_export(const char *stored)
{
    size_t len = strlen(stored);
    char *out = malloc(2 * len + 1);
    if (!out)
        return NULL;
    if (len > IMAP_MAILNAME_MAX || !mailname_decode(stored, out))
        memcpy(out, stored, len + 1); /* not modified UTF-7: the name as it is */
    return out;
}
