/*
 * msgmap.h - map one stored message read-only for FETCH and SEARCH.
 *
 * The bytes are the file as stored (LF line ends). An empty file maps to "" with
 * is_mapped false. Ownership: the caller releases with imap_message_unmap().
 * Thread rules: any thread; a mapping is used by one session at a time.
 */
#ifndef TERN_IMAP_MSGMAP_H
#define TERN_IMAP_MSGMAP_H

#include <stdbool.h>
#include <stddef.h>

struct store_mailbox;

struct imap_message_map {
    const char *bytes; /* NULL until mapped */
    size_t len;
    bool is_mapped; /* munmap needed */
};

/* Map message i of box. false (map left empty) when it cannot be opened or mapped. */
bool imap_message_map(struct store_mailbox *box, size_t i, struct imap_message_map *m);
void imap_message_unmap(struct imap_message_map *m);

#endif
