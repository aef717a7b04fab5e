/*
 * fuzz_imap_mailname.c - libFuzzer target for mailbox names between UTF-8 and modified
 * UTF-7 (src/imap/mailname.c). The input is one name, taken both ways: as a UTF-8
 * session's name (checked, NFC, encoded) and as a stored name (decoded). Invariants: an
 * imported name is valid modified UTF-7 and survives export and import again unchanged;
 * an export never fails for want of anything but memory.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imap/mailname.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4 * IMAP_MAILNAME_MAX)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t len = strlen(s); /* names carry no NUL */
    char *stored = imap_mailname_import(s, len);
    if (stored) {
        if (!imap_mailname_is_mutf7(stored))
            __builtin_trap();
        char *shown = imap_mailname_export(stored);
        if (!shown || !imap_mailname_utf8_ok(shown, strlen(shown)))
            __builtin_trap();
        char *again = imap_mailname_import(shown, strlen(shown));
        if (!again || strcmp(again, stored) != 0)
            __builtin_trap();
        free(again);
        free(shown);
        free(stored);
    }
    char *shown = imap_mailname_export(s);
    if (shown && !imap_mailname_is_mutf7(s) && strcmp(shown, s) != 0)
        __builtin_trap(); /* not modified UTF-7: sent as it is */
    free(shown);
    free(s);
    return 0;
}
