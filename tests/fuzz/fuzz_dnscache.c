/*
 * fuzz_dnscache.c - libFuzzer target for the shared DNS answer cache
 * (policy/dnscache.c): its slots live in memory any login process may write, so the
 * input is what a hostile process left there, tiled over the whole area; lookups must
 * never crash and never return an answer that is not well formed, and the cache must
 * still store and return what is written next.
 */
#include "core/anvil.h"
#include "policy/dnscache.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdint.h>
#include <string.h>

static const char *const names[] = {"1.0.0.127.bl.test", "2.0.0.127.bl.test", "example.test",
                                    "spam.example.dbl.test", ""};

/* An answer the cache returned: at most DNSCACHE_MAX_A IPv4 addresses in text. */
static void check_entry(const struct dns_cache_entry *e)
{
    assert(e->n_a <= DNSCACHE_MAX_A);
    for (size_t i = 0; i < e->n_a; i++) {
        assert(memchr(e->a[i], '\0', sizeof e->a[i]));
        struct in_addr ia;
        assert(inet_pton(AF_INET, e->a[i], &ia) == 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dns_cache *c;
    if (!c) {
        anvil_attach(anvil_create(), 0);
        c = dns_cache_new_shared();
        assert(c && dns_cache_is_shared(c));
    }
    if (size == 0)
        return 0;
    size_t area_size;
    uint64_t seed;
    unsigned char *area = anvil_dns_area(&area_size, &seed);
    for (size_t off = 0; off < area_size; off += size)
        memcpy(area + off, data, size < area_size - off ? size : area_size - off);
    uint64_t now = 1000000;
    struct dns_cache_entry e;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        for (int type = 1; type <= 28; type += 27)
            if (dns_cache_get(c, names[i], type, now, &e))
                check_entry(&e);
    struct dns_cache_entry mine = {.is_found = true, .n_a = 1};
    memcpy(mine.a[0], "127.0.0.2", 10);
    dns_cache_put(c, "fresh.test", 1, 300, &mine, now);
    if (dns_cache_get(c, "fresh.test", 1, now, &e)) {
        check_entry(&e);
        assert(e.n_a == 1 && strcmp(e.a[0], "127.0.0.2") == 0);
    }
    return 0;
}
