/*
 * fuzz_config.c - libFuzzer target for the tern.conf parser (config_parse_buffer): any
 * bytes give a config or a "name:line: reason" error, never a crash or a leak; a parsed
 * config can be shown.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    char *err = NULL;
    bool is_root = size > 0 && (data[0] & 1);
    struct config *cfg =
        config_parse_buffer("fuzz.conf", (const char *)data, size, NULL, 0, is_root, &err);
    if (cfg) {
        if (err)
            abort();
        if (!cfg->data_dir || cfg->data_dir[0] != '/' || !cfg->tls_cert || !cfg->hostname)
            abort();
        config_free(cfg);
    } else {
        if (!err || strncmp(err, "fuzz.conf", 9) != 0)
            abort();
        free(err);
    }
    return 0;
}
