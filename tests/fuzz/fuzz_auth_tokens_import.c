/*
 * fuzz_auth_tokens_import.c - libFuzzer target for the one-time login tokens a stopping
 * auth process hands to the next one (auth/token.c auth_tokens_import): the input is the
 * hand-over as a forged or corrupted memfd could hold it. The import must never crash,
 * keep at most the table's size, keep no token that lives longer than a fresh one, and
 * and what it kept must survive an export and an import again.
 */
#include "auth/auth_internal.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static time_t fuzz_clock(void)
{
    return 1700000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_tokens *t = auth_tokens_new();
    if (!t)
        return 0;
    auth_tokens_set_clock(t, fuzz_clock);
    size_t kept = auth_tokens_import(t, data, size);
    assert(kept <= AUTH_TOKEN_SLOTS);
    /* (after the magic a record takes at least 32 + 8 + 2 + 2 octets) */
    assert(kept == 0 || size >= 8 + kept * 44);
    char *out = NULL;
    size_t len = 0;
    size_t n = auth_tokens_export(t, &out, &len);
    if (n != SIZE_MAX) {
        assert(n <= kept && len <= AUTH_TOKENS_EXPORT_MAX);
        struct auth_tokens *u = auth_tokens_new();
        if (u) {
            auth_tokens_set_clock(u, fuzz_clock);
            /* (at most: a probe window full of tokens may evict in another order) */
            size_t again = auth_tokens_import(u, out, len);
            assert(again <= n && (n == 0 || again > 0));
            auth_tokens_free(u);
        }
        free(out);
    }
    /* a guess is still refused */
    assert(!auth_tokens_redeem(t, "00000000000000000000000000000000000000000000000000000000000000zz",
                               "a@b", "x"));
    auth_tokens_free(t);
    return 0;
}
