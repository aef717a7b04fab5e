/*
 * fuzz_handoff.c - libFuzzer target for the record a login process sends with a session
 * it hands to a mail worker (conn_handoff_decode, core/handoff.c): the input is the
 * record as a taken-over login process could send it. Besides no crash and no over-read:
 * a record that decodes has every field terminated, printable where checked and within
 * bounds, and encodes back to exactly the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct conn_handoff h;
    static char again[64 * 1024];
    if (!conn_handoff_decode((const char *)data, size, &h))
        return 0;
    if (h.role >= CONN_ROLE_COUNT || h.input_len > CONN_HANDOFF_INPUT_MAX ||
        strlen(h.user) == 0 || strlen(h.token) != 64 || strlen(h.method) == 0 ||
        strlen(h.sasl_final) > CONN_HANDOFF_SASL_MAX || h.errors > 1000)
        abort();
    size_t len;
    if (conn_handoff_encode(&h, again, sizeof again, &len) < 0 || len != size ||
        memcmp(again, data, size) != 0)
        abort();
    return 0;
}
