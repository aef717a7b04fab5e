/*
 * test_dnsbl.c - DNS list site specifications (core/dnsbl_site.c: postscreen syntax,
 * filters, weights) and the answer cache (policy/dnscache.c: TTL bounds, expiry).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/anvil.h"
#include "core/dnsbl_site.h"
#include "policy/dnscache.h"

static void test_site_parse_and_match(void **state)
{
    struct dnsbl_site s;
    assert_true(dnsbl_site_parse("zen.spamhaus.org", &s));
    assert_string_equal(s.domain, "zen.spamhaus.org");
    assert_int_equal(s.weight, 1);
    assert_true(dnsbl_site_matches(&s, "127.0.0.2"));
    assert_true(dnsbl_site_matches(&s, "127.255.0.1"));
    assert_false(dnsbl_site_matches(&s, "10.0.0.2")); /* RFC 5782: answers are in 127/8 */

    assert_true(dnsbl_site_parse("bl.example=127.0.0.[2..4;10]*3", &s));
    assert_int_equal(s.weight, 3);
    assert_true(dnsbl_site_matches(&s, "127.0.0.2"));
    assert_true(dnsbl_site_matches(&s, "127.0.0.4"));
    assert_true(dnsbl_site_matches(&s, "127.0.0.10"));
    assert_false(dnsbl_site_matches(&s, "127.0.0.5"));
    assert_false(dnsbl_site_matches(&s, "127.0.1.2"));

    assert_true(dnsbl_site_parse("list.dnswl.example=127.0.[0..255].[2;3]*-2", &s));
    assert_int_equal(s.weight, -2);
    assert_true(dnsbl_site_matches(&s, "127.0.77.3"));
    assert_false(dnsbl_site_matches(&s, "127.0.77.4"));
    assert_false(dnsbl_site_matches(&s, "not-an-ip"));

    const char *bad[] = {"", "=127.0.0.2", "bl..example", ".bl.example", "bl.example=127.0.0",
                         "bl.example=127.0.0.256", "bl.example=127.0.0.[4..2]",
                         "bl.example=127.0.0.[2", "bl.example*", "bl.example*x",
                         "bl.example*2x", "bl example", "bl.example=127.0.0.2*2*3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(dnsbl_site_parse(bad[i], &s));
}

static void test_cache(void **state)
{
    struct dns_cache *c = dns_cache_new();
    struct dns_cache_entry e = {.is_found = true, .n_a = 1};
    memcpy(e.a[0], "127.0.0.2", 10);
    struct dns_cache_entry got;
    assert_false(dns_cache_get(c, "2.0.0.127.bl.test", 1, 1000, &got));
    dns_cache_put(c, "2.0.0.127.BL.test", 1, 5 /* below the minimum */, &e, 1000);
    assert_true(dns_cache_get(c, "2.0.0.127.bl.test", 1, 1000, &got));
    assert_string_equal(got.a[0], "127.0.0.2");
    assert_false(dns_cache_get(c, "2.0.0.127.bl.test", 28, 1000, &got)); /* other type */
    assert_true(dns_cache_get(c, "2.0.0.127.bl.test", 1, 1000 + DNSCACHE_MIN_TTL * 1000 - 1,
                              &got));
    assert_false(dns_cache_get(c, "2.0.0.127.bl.test", 1, 1000 + DNSCACHE_MIN_TTL * 1000, &got));
    dns_cache_put(c, "long.ttl", 1, 999999, &e, 0);
    assert_false(dns_cache_get(c, "long.ttl", 1, DNSCACHE_MAX_TTL * 1000ull, &got));
    dns_cache_free(c);
}

/* One cache for every process: slots in the anvil's shared mapping. A write in one
 * process (a forked child here) is read in another; garbage written over the slots (a
 * compromised process) is never read as an answer and never breaks the cache. */
static void test_shared_cache(void **state)
{
    anvil_attach(anvil_create(), 0);
    struct dns_cache *c1 = dns_cache_new_shared(), *c2 = dns_cache_new_shared();
    assert_true(dns_cache_is_shared(c1) && dns_cache_is_shared(c2));
    struct dns_cache_entry e = {.is_found = true, .n_a = 1}, got;
    memcpy(e.a[0], "127.0.0.2", 10);
    dns_cache_put(c1, "1.0.0.127.bl.test", 1, 300, &e, 1000);
    assert_true(dns_cache_get(c2, "1.0.0.127.bl.test", 1, 2000, &got));
    assert_string_equal(got.a[0], "127.0.0.2");
    pid_t pid = fork();
    if (pid == 0) {
        struct dns_cache *c = dns_cache_new_shared();
        dns_cache_put(c, "child.test", 15, 300, &e, 1000);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(dns_cache_get(c1, "child.test", 15, 2000, &got));
    assert_false(dns_cache_get(c1, "child.test", 1, 2000, &got));

    /* a hostile process scribbles over every slot */
    size_t size;
    uint64_t seed;
    unsigned char *area = anvil_dns_area(&size, &seed);
    assert_non_null(area);
    for (unsigned fill = 0; fill < 3; fill++) {
        for (size_t i = 0; i < size; i++)
            area[i] = fill == 0 ? 0xff : fill == 1 ? (unsigned char)(i * 7919 >> 3) : 0x41;
        assert_false(dns_cache_get(c1, "1.0.0.127.bl.test", 1, 2000, &got));
        assert_false(dns_cache_get(c1, "child.test", 15, 2000, &got));
        /* and the cache works again for what is written next */
        dns_cache_put(c2, "again.test", 1, 300, &e, 5000);
        assert_true(dns_cache_get(c1, "again.test", 1, 5000, &got));
        assert_string_equal(got.a[0], "127.0.0.2");
    }
    dns_cache_free(c1);
    dns_cache_free(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_site_parse_and_match),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_shared_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
