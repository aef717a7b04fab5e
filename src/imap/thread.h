/*
 * thread.h - the THREAD algorithms (RFC 5256 §3 ORDEREDSUBJECT and REFERENCES, and REFS:
 * REFERENCES without the subject merge, threads ordered by their newest message, as
 * Dovecot offers it), as a pure function from the messages' keys to the THREAD response
 * text. No I/O, no session: unit-tested (tests/unit/test_imap_thread.c) and run on a
 * workpool thread by THREAD.
 *
 * Work and memory are linear in the messages and the message ids they reference (ids
 * beyond IMAP_THREAD_MAX_IDS are ignored), and nothing recurses: a reference chain as
 * long as the mailbox is threaded and written with explicit stacks.
 *
 * Ownership: the caller's arrays are only read. Thread rules: none.
 */
#ifndef TERN_IMAP_THREAD_H
#define TERN_IMAP_THREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap/args.h"

struct buf;

/* Message ids a THREAD REFERENCES/REFS looks at, over all messages together. */
#define IMAP_THREAD_MAX_IDS 2000000
/* Ancestors walked to refuse a link that would make a loop (RFC 5256 §3 (1)(A)); a
 * deeper chain is not extended (and so cannot loop). */
#define IMAP_THREAD_MAX_WALK 4096

struct imap_thread_msg {
    uint32_t number;        /* what the reply shows: sequence number or UID */
    uint32_t seq;           /* sequence number: the tie-break of equal dates */
    int64_t sent;           /* RFC 5256 §2.2 sent date */
    const char *subject;    /* casemapped base subject ("" none) */
    bool is_reply;          /* the subject marked a reply or forward */
    const char *message_id; /* "<a@b>" or NULL */
    const char *references; /* space-separated ids ("" none) */
};

/* Append the thread list "(1 2)(3 (4)(5))" of msgs[0..n) (in any order) to out; an
 * empty n appends nothing. false when out of memory. */
bool imap_thread_write(enum imap_thread_algorithm alg, const struct imap_thread_msg *msgs,
                       size_t n, struct buf *out);

#endif
