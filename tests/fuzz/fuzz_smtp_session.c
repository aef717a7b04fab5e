/*
 * fuzz_smtp_session.c - libFuzzer target for the whole SMTP session state machine
 * (session.c, envelope.c, body.c, sasl.c, delivery.c) over the stub core, directory and
 * store of tests/unit/smtp_session_harness.h (over the fake core, tests/unit/fake_core.h).
 *
 * Input: byte 0 picks the role and injected failures, byte 1 the piece size the rest
 * is fed in (pipelining and split lines), then the client's bytes. At the end the
 * connection times out or is dropped, possibly while a delivery or AUTH job is queued.
 */
#include "../unit/smtp_session_harness.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0];
    size_t step = (size_t)data[1] % 64 + 1;
    static const enum conn_role roles[] = {CONN_ROLE_SMTP, CONN_ROLE_SUBMISSION,
                                           CONN_ROLE_SUBMISSIONS};
    harness_open(roles[mode % 3], "/tmp");
    harness.fail_store = mode & 0x04;
    harness.fail_queue = mode & 0x08;
    const uint8_t *p = data + 2;
    size_t len = size - 2;
    for (size_t off = 0; off < len; off += step)
        harness_feed(p + off, len - off < step ? len - off : step);
    if (mode & 0x10)
        harness_timeout();
    if (mode & 0x20) {
        /* drop the connection with a delivery job still queued in the pool */
        fake_core_policy()->auto_jobs = false;
        static const char msg[] = "MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\n"
                                  "DATA\r\nx\r\n.\r\n";
        harness_feed(msg, sizeof msg - 1);
    }
    harness_finish("lost connection");
    return 0;
}
