/*
 * fuzz_pop3_session.c - libFuzzer target for the whole POP3 session (src/pop3/ files,
 * unchanged) over the fake core, with the real directory and store in a scratch folder:
 * USER/PASS, APOP, AUTH, STLS, STAT/LIST/UIDL/RETR/TOP/DELE/RSET/QUIT together with how
 * they are split into reads, when blocking jobs complete, when output drains and when
 * clients leave. The input is a session script: its format is in
 * tests/unit/session_script.h.
 */
#include "../unit/session_script.h"
#include "pop3/pop3.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct script_protocol pop3 = {&pop3_protocol, CONN_ROLE_POP3, CONN_ROLE_POP3S};
    script_run(&pop3, data, size);
    return 0;
}
