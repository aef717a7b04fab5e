/*
 * fuzz_penalty_import.c - libFuzzer target for the failed-login table read back from
 * <data_dir>/penalty.db (policy/penalty.c penalty_table_import): the input is taken as
 * the records a corrupted or forged file could yield (any bytes in the strings, any
 * counts and times); the import must never crash, and the table must answer and list
 * sanely afterwards.
 */
#include "policy/penalty.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const struct penalty_limits limits = {
    .delay_initial_ms = 1000,
    .delay_max_ms = 8000,
    .window_ms = 300000,
    .account_max_failures = 3,
    .address_max_failures = 20,
    .block_ms = 900000,
};

static void count(const struct penalty_block *b, void *arg)
{
    assert(memchr(b->ip, '\0', sizeof b->ip) && memchr(b->account, '\0', sizeof b->account));
    assert(b->remaining_ms <= limits.block_ms);
    ++*(size_t *)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = size / sizeof(struct penalty_record);
    if (n > 64)
        n = 64;
    struct penalty_record *r = calloc(n ? n : 1, sizeof *r);
    if (!r)
        return 0;
    memcpy(r, data, n * sizeof *r);
    struct penalty_table *t = penalty_table_new(&limits);
    uint64_t now = 5000000;
    int64_t now_unix = 1700000000000;
    size_t kept = penalty_table_import(t, r, n, now, now_unix);
    assert(kept <= n);
    struct penalty_query q = {.ip = "192.0.2.1", .account = "bob", .service = "fuzz",
                              .now_ms = now};
    struct penalty_answer a;
    penalty_check(t, &q, &a);
    assert(a.delay_ms <= PENALTY_DELAY_MAX_MS);
    size_t listed = 0;
    penalty_blocks_list(t, now, count, &listed);
    assert(listed <= kept);
    struct penalty_record *out;
    size_t m = penalty_table_export(t, now, now_unix, &out);
    assert(m == SIZE_MAX || m <= kept);
    free(out);
    penalty_table_free(t);
    free(r);
    return 0;
}
