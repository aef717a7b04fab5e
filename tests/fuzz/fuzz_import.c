/*
 * fuzz_import.c - libFuzzer target for the `tern import` parsers (cli/import.h). The
 * first byte picks the parser (0: main.cf, 1: lookup table source, 2: Dovecot config),
 * the rest is the file. Checked besides no crash, leak or over-read: every parsed key
 * is found again by import_kv_get (with its last value); map keys hold no upper case;
 * $name expansion of every main.cf value ends (bounded) and its result stays within
 * IMPORT_MAX_VALUE; list splitting gives words without separators.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    struct import_kv kv;
    int kind = data[0] % 3;
    int r = kind == 0   ? import_postconf_parse(d, n, &kv, NULL)
            : kind == 1 ? import_postmap_parse(d, n, &kv, NULL)
                        : import_doveconf_parse(d, n, &kv, NULL);
    if (r < 0)
        return 0;
    for (size_t i = 0; i < kv.n && i < 64; i++) {
        if (!import_kv_get(&kv, kv.keys[i]))
            abort();
        if (kind == 1)
            for (const char *c = kv.keys[i]; *c; c++)
                if (isupper((unsigned char)*c))
                    abort();
        if (kind == 0) {
            char *e = import_postconf_expand(&kv, kv.values[i]);
            if (e && strlen(e) > IMPORT_MAX_VALUE)
                abort();
            free(e);
        }
        char **words = import_split_list(kv.values[i], NULL);
        for (size_t w = 0; words && words[w]; w++)
            if (words[w][0] == '\0' || strpbrk(words[w], ", \t\r\n"))
                abort();
        import_list_free(words);
    }
    import_kv_free(&kv);
    return 0;
}
