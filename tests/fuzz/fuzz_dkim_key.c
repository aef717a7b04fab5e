/*
 * fuzz_dkim_key.c - libFuzzer target for the DKIM key record parser (RFC 6376 §3.6.1) and
 * the tag-list parser under it: no crash, no over-read, consistent results.
 */
#include <stdint.h>
#include <stdlib.h>

#include "mailauth/mailauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mailauth_dkim_key key;
    const char *err;
    if (mailauth_dkim_key_parse((const char *)data, size, &key, &err) == 0) {
        if (key.p_len > sizeof key.p || key.is_rsa == key.is_ed25519)
            abort();
        if (key.is_revoked != (key.p_len == 0))
            abort();
    }
    struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
    size_t n;
    if (mailauth_tags_parse((const char *)data, size, tags, &n) == 0) {
        if (n > MAILAUTH_TAGS_MAX)
            abort();
        for (size_t i = 0; i < n; i++)
            if (tags[i].value < (const char *)data ||
                tags[i].value + tags[i].value_len > (const char *)data + size)
                abort();
    }
    return 0;
}
