/*
 * msg.c - the RETR/TOP converter: stored message (LF line ends) to wire form (CRLF line
 * ends, byte-stuffed), and the size LIST and STAT report for a message (see parse.h: what
 * RETR sends, less the byte-stuffing).
 *
 * The converter is a resumable state machine fed in chunks of any size, so RETR streams a
 * file of any length through a fixed buffer, and the size scan is the same code with a
 * NULL output: they cannot disagree.
 */
#include "pop3/parse.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

void pop3_msg_init(struct pop3_msg *m)
{
    memset(m, 0, sizeof *m);
    m->is_line_start = true;
}

void pop3_msg_init_top(struct pop3_msg *m, uint64_t lines)
{
    pop3_msg_init(m);
    m->is_top = true;
    m->is_in_header = true;
    m->top_lines = lines;
}

/* Append n bytes to out (if any) at *pos. */
static void emit(char *out, size_t *pos, const char *data, size_t n)
{
    if (out != NULL)
        memcpy(out + *pos, data, n);
    *pos += n;
}

/* TOP: have the header, the blank line and the requested body lines all been sent? */
static bool top_is_complete(const struct pop3_msg *m)
{
    return m->is_top && !m->is_in_header && m->top_lines == 0;
}

size_t pop3_msg_feed(struct pop3_msg *m, const char *in, size_t len, char *out)
{
    size_t pos = 0;
    size_t i = 0;

    while (i < len && !m->is_done) {
        if (m->is_line_start) {
            m->is_line_start = false;
            m->has_line_text = false;
            /* RFC 1939 §3: a line starting with the termination octet is byte-stuffed. */
            if (in[i] == '.') {
                emit(out, &pos, ".", 1);
                m->stuffed++;
            }
        }
        const char *lf = memchr(in + i, '\n', len - i);
        size_t end = lf != NULL ? (size_t)(lf - in) : len;
        if (end > i) {
            emit(out, &pos, in + i, end - i);
            for (size_t k = i; k < end && !m->has_line_text; k++)
                m->has_line_text = in[k] != '\r';
            m->was_cr = in[end - 1] == '\r';
        }
        i = end;
        if (lf == NULL)
            break;
        /* A line end: LF becomes CRLF; a CRLF already in the file stays one CRLF. */
        if (!m->was_cr)
            emit(out, &pos, "\r", 1);
        emit(out, &pos, "\n", 1);
        m->was_cr = false;
        m->is_line_start = true;
        i++;
        if (m->is_top) {
            /* RFC 1939 §7 TOP: the header, the blank line, then n lines of the body. */
            if (m->is_in_header) {
                if (!m->has_line_text)
                    m->is_in_header = false;
            } else if (m->top_lines > 0) {
                m->top_lines--;
            }
            if (top_is_complete(m))
                m->is_done = true;
        }
    }
    m->out_total += pos;
    return pos;
}

size_t pop3_msg_finish(struct pop3_msg *m, char *out)
{
    size_t pos = 0;
    if (!m->is_line_start && !m->is_done) {
        /* The stored message lacks a final line end: the terminator must start a line. */
        if (m->was_cr)
            emit(out, &pos, "\n", 1);
        else
            emit(out, &pos, "\r\n", 2);
        m->is_line_start = true;
    }
    m->out_total += pos;
    emit(out, &pos, ".\r\n", 3);
    m->is_done = true;
    return pos;
}

uint64_t pop3_msg_size(const struct pop3_msg *m)
{
    return m->out_total - m->stuffed;
}

int pop3_msg_size_fd(int fd, uint64_t *size_r)
{
    char chunk[64 * 1024];
    struct pop3_msg m;
    off_t off = 0;

    pop3_msg_init(&m);
    for (;;) {
        ssize_t n = pread(fd, chunk, sizeof chunk, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        pop3_msg_feed(&m, chunk, (size_t)n, NULL);
        off += n;
    }
    pop3_msg_finish(&m, NULL);
    *size_r = pop3_msg_size(&m);
    return 0;
}
