/*
 * deflate.h - the COMPRESS=DEFLATE filter of a connection (RFC 4978), used by conn.c's
 * conn_compress(). Ownership: the returned bufferevent owns the zlib state and, with
 * BEV_OPT_CLOSE_ON_FREE, the underlying bufferevent. Thread rules: loop thread.
 */
#ifndef TERN_CORE_DEFLATE_H
#define TERN_CORE_DEFLATE_H

#include <stdbool.h>

struct event_base;
struct bufferevent;

/* A filter over under: writes are deflated (raw, sync-flushed), reads inflated. NULL on
 * failure (out of memory). */
struct bufferevent *deflate_filter_new(struct event_base *base, struct bufferevent *under,
                                       int options);

#endif
