/*
 * fuzz_queue_file.c - libFuzzer target for the queue file envelope parser
 * (queue_parse_envelope in src/queue/spool.c). Queue files are read back as hostile input
 * (a disk error, another tool, a truncated write): no crash, no over-read, no leak, and
 * what it returns keeps the invariants the runner relies on.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue-private.h"
#include "queue/queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy, so an over-read past size is caught by ASan */
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    struct queue_entry e;
    uint64_t off = 0;
    unsigned attempts = 0;
    char *error = NULL;
    if (queue_parse_envelope(copy, size, &e, &off, &attempts, &error) == 0) {
        if (off > size || !e.sender || e.n_recipients == 0 || !queue_id_is_valid(e.id))
            abort();
        for (size_t i = 0; i < e.n_recipients; i++)
            if (!e.recipients[i] || !e.recipients[i][0])
                abort();
        for (const char *p = e.sender; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                abort(); /* decoded values never hold control characters */
        queue_entry_free(&e);
    } else if (!error) {
        abort(); /* a failure always says why */
    }
    free(error);
    free(copy);
    return 0;
}
