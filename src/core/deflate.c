/*
 * deflate.c - RFC 4978 COMPRESS=DEFLATE as a libevent filter bufferevent (zlib, raw
 * deflate without a zlib header, RFC 1951): what the protocol writes is compressed and
 * flushed (Z_SYNC_FLUSH) each time the filter runs, so every reply leaves at once; what
 * arrives is inflated into the connection's input.
 *
 * Input is inflated at most up to the filter's destination limit per call (libevent
 * passes the read high-water mark), so a small compressed input cannot blow up into an
 * unbounded buffer: the rest waits in the underlying buffer until the session reads.
 *
 * Ownership: the filter owns its zlib state (freed with the bufferevent). Thread rules:
 * loop thread, like every bufferevent of a connection.
 */
#include "core/deflate.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

struct deflate_state {
    z_stream in, out;
    struct bufferevent *bev; /* the filter itself, for reporting a corrupt stream */
    bool is_broken; /* a corrupt input stream: the connection reads nothing more */
};

/* A corrupt or ended input stream: tell the connection (an error event closes it). */
static void deflate_broken(struct deflate_state *st)
{
    if (!st->is_broken && st->bev)
        bufferevent_trigger_event(st->bev, BEV_EVENT_ERROR | BEV_EVENT_READING,
                                  BEV_TRIG_DEFER_CALLBACKS);
    st->is_broken = true;
}

static void deflate_state_free(void *arg)
{
    struct deflate_state *st = arg;
    inflateEnd(&st->in);
    deflateEnd(&st->out);
    free(st);
}

/* Compressed bytes from src inflated into dst (up to dst_limit new bytes, 0: no limit). */
static enum bufferevent_filter_result deflate_input(struct evbuffer *src, struct evbuffer *dst,
                                                    ev_ssize_t dst_limit,
                                                    enum bufferevent_flush_mode mode, void *arg)
{
    struct deflate_state *st = arg;
    if (st->is_broken)
        return BEV_ERROR;
    size_t produced = 0;
    size_t limit = dst_limit > 0 ? (size_t)dst_limit : (size_t)256 * 1024;
    while (evbuffer_get_length(src) > 0 && produced < limit) {
        struct evbuffer_iovec in;
        if (evbuffer_peek(src, -1, NULL, &in, 1) < 1)
            break;
        struct evbuffer_iovec out;
        if (evbuffer_reserve_space(dst, 16384, &out, 1) < 1)
            return BEV_ERROR;
        st->in.next_in = in.iov_base;
        st->in.avail_in = (uInt)(in.iov_len > UINT32_MAX ? UINT32_MAX : in.iov_len);
        st->in.next_out = out.iov_base;
        st->in.avail_out = (uInt)(out.iov_len > 16384 ? 16384 : out.iov_len);
        uInt before_out = st->in.avail_out;
        int r = inflate(&st->in, Z_SYNC_FLUSH);
        size_t used = (size_t)(st->in.next_in - (Bytef *)in.iov_base);
        out.iov_len = before_out - st->in.avail_out;
        evbuffer_commit_space(dst, &out, 1);
        evbuffer_drain(src, used);
        produced += out.iov_len;
        if (r == Z_STREAM_END || (r != Z_OK && r != Z_BUF_ERROR)) {
            /* RFC 4978: the stream never ends while the connection lives */
            deflate_broken(st);
            return produced > 0 ? BEV_OK : BEV_ERROR;
        }
        if (used == 0 && out.iov_len == 0)
            break; /* needs more input */
    }
    return produced > 0 ? BEV_OK : BEV_NEED_MORE;
}

/* Plain bytes from src deflated into dst, flushed so the peer can read them now. */
static enum bufferevent_filter_result deflate_output(struct evbuffer *src, struct evbuffer *dst,
                                                     ev_ssize_t dst_limit,
                                                     enum bufferevent_flush_mode mode, void *arg)
{
    struct deflate_state *st = arg;
    if (evbuffer_get_length(src) == 0)
        return BEV_NEED_MORE;
    while (evbuffer_get_length(src) > 0) {
        struct evbuffer_iovec in;
        if (evbuffer_peek(src, -1, NULL, &in, 1) < 1)
            break;
        st->out.next_in = in.iov_base;
        st->out.avail_in = (uInt)(in.iov_len > UINT32_MAX ? UINT32_MAX : in.iov_len);
        bool is_last = evbuffer_get_length(src) == in.iov_len;
        do {
            struct evbuffer_iovec out;
            if (evbuffer_reserve_space(dst, 16384, &out, 1) < 1)
                return BEV_ERROR;
            st->out.next_out = out.iov_base;
            st->out.avail_out = (uInt)(out.iov_len > 16384 ? 16384 : out.iov_len);
            uInt before_out = st->out.avail_out;
            int r = deflate(&st->out, is_last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
            out.iov_len = before_out - st->out.avail_out;
            evbuffer_commit_space(dst, &out, 1);
            if (r != Z_OK && r != Z_BUF_ERROR)
                return BEV_ERROR;
            /* Z_SYNC_FLUSH is complete when room was left in the output */
        } while (st->out.avail_in > 0 || (is_last && st->out.avail_out == 0));
        evbuffer_drain(src, in.iov_len);
    }
    return BEV_OK;
}

struct bufferevent *deflate_filter_new(struct event_base *base, struct bufferevent *under,
                                       int options)
{
    struct deflate_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    /* raw deflate (negative window bits): RFC 4978 §4 has no zlib header or trailer */
    if (inflateInit2(&st->in, -15) != Z_OK) {
        free(st);
        return NULL;
    }
    if (deflateInit2(&st->out, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        inflateEnd(&st->in);
        free(st);
        return NULL;
    }
    struct bufferevent *bev = bufferevent_filter_new(under, deflate_input, deflate_output,
                                                     options, deflate_state_free, st);
    if (!bev)
        deflate_state_free(st);
    else
        st->bev = bev;
    return bev;
}
