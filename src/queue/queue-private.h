/*
 * queue-private.h - internals of the spool shared by spool.c and the queue CLI.
 */
#ifndef TERN_QUEUE_QUEUE_PRIVATE_H
#define TERN_QUEUE_QUEUE_PRIVATE_H

#include "core/buf.h"
#include "queue/queue.h"

#include <stdbool.h>

enum { QUEUE_STATE_ACTIVE, QUEUE_STATE_DEFERRED, QUEUE_STATE_HOLD, QUEUE_N_STATES };
extern const char *const queue_states[QUEUE_N_STATES];

/* Queue ids are file names: [0-9A-Za-z]{1,31}. */
bool queue_id_is_valid(const char *id);
int queue_dirs_create(const char *data_dir, char **error_r);
/* Parse the envelope at the start of data (pure function; hostile input). */
int queue_parse_envelope(const char *data, size_t len, struct queue_entry *e,
                         uint64_t *body_offset_r, unsigned *attempts_r, char **error_r);
/* Read and validate a queue file; 0, 1 absent, -1 bad. fd_r (may be NULL) gets an open
 * fd positioned for pread at *offset_r = start of the message. */
int queue_file_read(const char *path, struct queue_entry *e, int *fd_r, uint64_t *offset_r,
                    char **error_r);
/* Locate id in active/, deferred/ or hold/: 0 found (path_r, *state_r), 1 absent. */
int queue_find(const char *data_dir, const char *id, char *path_r, size_t size, int *state_r);

/* Envelope lines for DSN parameters (dsn helper): message-level (ret=, envid=, warned=)
 * and per-recipient (notify=, orcpt=: they belong to the rcpt= line before them). Used
 * by the spool writer and by deliver.c when it rewrites a deferred file. */
bool queue_envelope_dsn_message(struct buf *b, int ret, const char *envid, bool is_delay_warned);
bool queue_envelope_dsn_rcpt(struct buf *b, unsigned notify, const char *orcpt);

#endif
