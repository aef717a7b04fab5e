/*
 * fuzz_imap_session.c - libFuzzer target for the whole IMAP session (src/imap/ files,
 * unchanged) over the fake core, with the real directory and store in a scratch folder:
 * command sequences (LOGIN, AUTHENTICATE, SELECT, FETCH, STORE, APPEND with literals,
 * IDLE, STARTTLS, ...) together with how they are split into reads, when blocking jobs
 * complete, when output drains and when clients leave. The input is a session script:
 * its format is in tests/unit/session_script.h.
 */
#include "../unit/session_script.h"
#include "imap/imap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct script_protocol imap = {&imap_protocol, CONN_ROLE_IMAP, CONN_ROLE_IMAPS};
    script_run(&imap, data, size);
    return 0;
}
