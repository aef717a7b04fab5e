/*
 * handoff.c - the record of a session handed from a login process to a mail worker
 * (struct conn_handoff, conn.h) as the data of one BACKEND_MSG_HANDOFF message.
 *
 * Layout: NUL-terminated fields in this order, then the input bytes:
 *   role, peer_ip, peer_port, local_ip, local_port, is_tls, tls_desc, user, token, tag,
 *   method, sasl_final, errors, input_len   (numbers in decimal, is_tls "0"/"1")
 *   input_len bytes of input, and nothing after them.
 *
 * The decoder is a parser of hostile bytes (a login process may have been taken over): a
 * pure function with a fuzz target (tests/fuzz/fuzz_handoff.c). Every string must end
 * inside the data and within its field's size; addresses must be addresses, numbers
 * digits within range, the token 64 hex digits, and the texts that reach logs, replies
 * and Received headers printable. What the fields mean is checked later: the token by the
 * auth process, the role by the worker (only roles with an adopt callback).
 */
#include "core/buf.h"
#include "core/conn.h"
#include "core/wire.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

int conn_handoff_encode(const struct conn_handoff *h, char *out, size_t size, size_t *len_r)
{
    if (h->input_len > CONN_HANDOFF_INPUT_MAX)
        return -1;
    struct buf b;
    buf_init(&b, size);
    bool ok = wire_put_num(&b, (uint64_t)h->role) && wire_put_str(&b, h->peer_ip) &&
              wire_put_num(&b, h->peer_port) && wire_put_str(&b, h->local_ip) &&
              wire_put_num(&b, h->local_port) && wire_put_num(&b, h->is_tls) &&
              wire_put_str(&b, h->tls_desc) && wire_put_str(&b, h->user) &&
              wire_put_str(&b, h->token) && wire_put_str(&b, h->tag) &&
              wire_put_str(&b, h->method) && wire_put_str(&b, h->sasl_final) &&
              wire_put_num(&b, h->errors) && wire_put_num(&b, h->input_len) &&
              buf_append(&b, h->input, h->input_len);
    if (ok) {
        memcpy(out, b.data, b.len);
        *len_r = b.len;
    }
    buf_free(&b);
    return ok ? 0 : -1;
}

/* Printable: no controls, no DEL; space only where allowed. UTF-8 bytes pass (names). */
static bool is_printable(const char *s, bool allow_space)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || (*p == ' ' && !allow_space))
            return false;
    return true;
}

static bool is_address(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

static bool is_hex_token(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static bool is_base64(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '+' || *p == '/' || *p == '='))
            return false;
    return true;
}

/* Copy a checked field into its place (the reader checked it fits). */
static void put(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
}

bool conn_handoff_decode(const char *data, size_t len, struct conn_handoff *h)
{
    memset(h, 0, offsetof(struct conn_handoff, input));
    struct wire_reader r;
    wire_reader_init(&r, data, len);
    h->role = (enum conn_role)wire_num(&r, CONN_ROLE_COUNT - 1);
    put(h->peer_ip, sizeof h->peer_ip, wire_str(&r, sizeof h->peer_ip));
    h->peer_port = (uint16_t)wire_num(&r, 65535);
    put(h->local_ip, sizeof h->local_ip, wire_str(&r, sizeof h->local_ip));
    h->local_port = (uint16_t)wire_num(&r, 65535);
    h->is_tls = wire_num(&r, 1) == 1;
    put(h->tls_desc, sizeof h->tls_desc, wire_str(&r, sizeof h->tls_desc));
    put(h->user, sizeof h->user, wire_str(&r, sizeof h->user));
    put(h->token, sizeof h->token, wire_str(&r, sizeof h->token));
    put(h->tag, sizeof h->tag, wire_str(&r, sizeof h->tag));
    put(h->method, sizeof h->method, wire_str(&r, sizeof h->method));
    put(h->sasl_final, sizeof h->sasl_final, wire_str(&r, sizeof h->sasl_final));
    h->errors = (unsigned)wire_num(&r, 1000);
    h->input_len = (size_t)wire_num(&r, CONN_HANDOFF_INPUT_MAX);
    size_t rest_len;
    const char *rest = wire_rest(&r, &rest_len);
    if (r.is_bad || rest_len != h->input_len)
        return false; /* the input is exactly the rest */
    if (!is_address(h->peer_ip) || !is_address(h->local_ip) ||
        !is_printable(h->tls_desc, true) || !h->user[0] || !is_printable(h->user, false) ||
        !is_hex_token(h->token) || !is_printable(h->tag, false) || !h->method[0] ||
        !is_printable(h->method, false) || !is_base64(h->sasl_final))
        return false;
    memcpy(h->input, rest, h->input_len);
    return true;
}
