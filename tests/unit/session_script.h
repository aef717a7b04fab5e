/*
 * session_script.h - runs a scripted client (the input of fuzz_imap_session and
 * fuzz_pop3_session, and of their seed replay in tests/unit/test_session_replay.c) against
 * the REAL IMAP or POP3 session over the fake core (fake_core.h), with the REAL directory
 * (auth_service on tern.db) and the REAL store in a scratch data folder made once per
 * process.
 *
 * The world: domain example.test; users alice@example.test and bob@example.test, password
 * "pw" (stored as PLAIN, SCRAM-SHA-256 and CRAM-MD5), bob with a 3000-byte quota;
 * off@example.test disabled. alice's INBOX holds 4 messages (plain text; multipart with an
 * attachment and encoded words; a ~70 KB text that FETCH and RETR stream over several
 * drains; a forwarded message/rfc822), some flagged \Seen, \Flagged, \Answered, $Label1;
 * her "Work" mailbox one message; bob's INBOX one. After a script that ran any blocking
 * job the users' folders are put back as a template copy has them (rewriting only what
 * differs), so every script starts from the same store. auth.max_failures is 3 (the throttle is reachable) and the throttle's
 * clock jumps forward between scripts. The folder is $TERN_FUZZ_TMP, else /dev/shm, else
 * /tmp; fsync is skipped (durability is not what this checks) and TERN_FUZZ_LOG=file keeps
 * the server log.
 *
 * Script format (bytes):
 *   [0] flags: 0x01 first connection from loopback; 0x02 over implicit TLS (IMAPS, POP3S);
 *        0x04 jobs wait for 'w'/'d'/'j' (else they run as soon as the loop is idle);
 *        0x08 the client reads output only on 'o'/'p' (else at once);
 *        0x30 the end: 0x00 EOF (half-close), 0x10 reset, 0x20 idle timeout, 0x30 shutdown;
 *        0x40 a STARTTLS handshake completes only on 'h' (else once its go-ahead is read)
 *   [1] how client bytes are split into reads: 0 one read per segment, 1..127 pieces of
 *       that many bytes, 128..255 one line per read
 *   then client bytes; 0xFF starts an operation (0xFF 0xFF is the byte 0xFF):
 *     w<k> run work() of queued job k     d  run the oldest completed job's done()
 *     j    run every job to the end       J  toggle automatic jobs
 *     o    the client reads all output    p<k> it reads (k+1)*4 KiB   O  toggle automatic reads
 *     e    EOF (half-close)               x  connection reset          t/W read/write timeout
 *     h/H  the STARTTLS handshake succeeds/fails                       s  server shutdown
 *     l    the loop turns (store notifications)   T  timers fire too (IDLE keepalives)
 *     c<k> use connection k&3, opening it (loopback unless k&4, implicit TLS if k&8)
 *     n<k> a message is delivered to alice (bob if k&1) by another process
 *     r<k> another program deletes the (k%8)-th message file (by name) of alice's INBOX
 *     F<k> the (k%16+1)-th next store write or fsync fails     z<k> split mode := k
 *     X<k> the last segment (client bytes between two operations) is sent again (k+1)*4
 *          times (per script at most 4200 times and 512 KiB)   |  nothing (ends a segment)
 *     A    answer the greeting's APOP challenge as alice       M  answer the last "+ "
 *                                                                  CRAM-MD5 challenge
 *   Unknown operations do nothing; an operation's missing argument is 0. At the end every
 *   connection gets the end action, then the loop runs (jobs, reads) until all is quiet,
 *   whatever is left is dropped and the remaining jobs run.
 * A script that has used 2 s of CPU time stops: nothing more is sent or processed and its
 * connections are reset (what a command costs varies too much for a count to bound it).
 * Checks (abort): a session or job still alive at the end, descriptors leaked, plus the
 * fake core's (thread rule, output during a STARTTLS handshake, runaway jobs).
 */
#ifndef TERN_TEST_SESSION_SCRIPT_H
#define TERN_TEST_SESSION_SCRIPT_H

#include "core/conn.h"

#include <stddef.h>
#include <stdint.h>

/* Scripts longer than this are cut (each byte may cost a command: keep runs quick). */
#define SCRIPT_MAX_INPUT (64 * 1024)

struct script_protocol {
    const struct conn_protocol *proto;
    enum conn_role plain_role, tls_role;
};

/* Make the scratch world (idempotent; removed at exit). */
void script_world_init(void);
/* Run one script. Afterwards every connection is closed and every job finished;
 * fake_output(peer) still has what each connection's last session wrote. */
void script_run(const struct script_protocol *sp, const uint8_t *data, size_t size);

#endif
