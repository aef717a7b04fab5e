/*
 * token.c - the auth process's one-time login tokens (auth_internal.h): the proof a login
 * process carries, with a session it hands over, that the client gave good credentials.
 *
 * A token is issued only together with a successful credential check (server.c answers a
 * login process's LOGIN_PASSWORD, LOGIN_APOP or final SASL step with it) and names the
 * canonical user and the connection (the binding: service and both addresses). The mail
 * worker that adopts the session redeems it once: it is spent by the first attempt, right
 * or wrong, and expires after AUTH_TOKEN_LIFETIME_S. So a login process taken over by an
 * attacker can hand over only the sessions of users whose passwords it was given, never
 * ask a mail worker for an arbitrary mailbox.
 *
 * The table is a fixed array probed from the token's first bytes (random, so they spread
 * evenly): no allocation per login, bounded memory. A full probe window evicts its oldest
 * entry; a token evicted before it was redeemed makes that one login fail with a
 * temporary error (only a flood of logins that are never redeemed can do that).
 *
 * Handing the table to the next auth process (a reload that replaces it, issue 10): the
 * old process writes its live tokens with auth_tokens_export once it has stopped reading
 * requests and answered every one it read (so no token is spent or issued after it), and
 * the new one reads them with auth_tokens_import before it reads its first request
 * (server.c says how the bytes travel: a memfd through the master, never a file). The
 * format is a magic line and fixed-shape records:
 *   "TERNTOK1"
 *   per token: 32 raw token bytes, 8 bytes expiry (Unix seconds, little-endian),
 *              user NUL (1..AUTH_MAX_LOGIN octets), binding NUL (1..AUTH_BINDING_MAX)
 * The reader takes the bytes as hostile: a record is kept only if its strings end within
 * their limits and hold no control octet, its expiry lies in the future and no further
 * than AUTH_TOKEN_LIFETIME_S (an import never makes a token live longer than the process
 * that issued it would have), and its token is not in the table yet; a string without its
 * NUL in reach ends the parse; at most AUTH_TOKEN_SLOTS records are read. One pass, no
 * allocation: linear in the input (fuzzed as fuzz_auth_tokens_import).
 *
 * Thread rules: every function is thread-safe (the table has its own lock); the auth
 * process answers on pool threads.
 */
#include "auth/auth_internal.h"
#include "core/util.h"

#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTH_TOKEN_PROBE 16
#define AUTH_TOKEN_BYTES 32
#define AUTH_TOKENS_MAGIC "TERNTOK1"
#define AUTH_TOKENS_MAGIC_LEN 8

struct auth_token_slot {
    unsigned char token[AUTH_TOKEN_BYTES];
    char user[AUTH_MAX_LOGIN + 1];
    char binding[AUTH_BINDING_MAX + 1];
    time_t expires; /* 0: free */
};

struct auth_tokens {
    pthread_mutex_t lock;
    struct auth_token_slot *slots; /* AUTH_TOKEN_SLOTS */
    time_t (*clock)(void);
};

static time_t token_now(const struct auth_tokens *t)
{
    return t->clock ? t->clock() : time(NULL);
}

struct auth_tokens *auth_tokens_new(void)
{
    struct auth_tokens *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->slots = calloc(AUTH_TOKEN_SLOTS, sizeof *t->slots);
    if (!t->slots) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void auth_tokens_free(struct auth_tokens *t)
{
    if (!t)
        return;
    OPENSSL_cleanse(t->slots, AUTH_TOKEN_SLOTS * sizeof *t->slots);
    free(t->slots);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

void auth_tokens_set_clock(struct auth_tokens *t, time_t (*clock)(void))
{
    t->clock = clock;
}

/* Where a token's probe window starts. */
static size_t token_home(const unsigned char *token)
{
    size_t h = (size_t)token[0] | (size_t)token[1] << 8 | (size_t)token[2] << 16;
    return h % AUTH_TOKEN_SLOTS;
}

/* 64 hex digits -> 32 bytes; false when it is not exactly that. */
static bool token_parse(const char *text, unsigned char out[AUTH_TOKEN_BYTES])
{
    if (!text || strlen(text) != 2 * AUTH_TOKEN_BYTES)
        return false;
    for (size_t i = 0; i < AUTH_TOKEN_BYTES; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = text[2 * i + (size_t)k];
            unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                         : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                                : 16;
            if (d > 15)
                return false;
            v = v * 16 + d;
        }
        out[i] = (unsigned char)v;
    }
    return true;
}

/* The slot a new token takes: a free or expired one in its probe window, else the
 * window's oldest (evicted). Lock held. */
static struct auth_token_slot *token_slot_for(struct auth_tokens *t, const unsigned char *token,
                                              time_t now)
{
    size_t home = token_home(token);
    struct auth_token_slot *slot = NULL;
    for (size_t i = 0; i < AUTH_TOKEN_PROBE; i++) {
        struct auth_token_slot *s = &t->slots[(home + i) % AUTH_TOKEN_SLOTS];
        if (s->expires <= now)
            return s; /* free or expired */
        if (!slot || s->expires < slot->expires)
            slot = s; /* the oldest, evicted when nothing is free */
    }
    return slot;
}

bool auth_tokens_issue(struct auth_tokens *t, const char *user, const char *binding,
                       char *token_r)
{
    token_r[0] = '\0';
    if (!user || !binding || strlen(user) > AUTH_MAX_LOGIN || strlen(binding) > AUTH_BINDING_MAX)
        return false;
    unsigned char raw[AUTH_TOKEN_BYTES];
    util_random_bytes(raw, sizeof raw);
    pthread_mutex_lock(&t->lock);
    time_t now = token_now(t);
    struct auth_token_slot *slot = token_slot_for(t, raw, now);
    memcpy(slot->token, raw, sizeof raw);
    snprintf(slot->user, sizeof slot->user, "%s", user);
    snprintf(slot->binding, sizeof slot->binding, "%s", binding);
    slot->expires = now + AUTH_TOKEN_LIFETIME_S;
    pthread_mutex_unlock(&t->lock);
    for (size_t i = 0; i < AUTH_TOKEN_BYTES; i++)
        snprintf(token_r + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof raw);
    return true;
}

bool auth_tokens_redeem(struct auth_tokens *t, const char *token, const char *user,
                        const char *binding)
{
    unsigned char raw[AUTH_TOKEN_BYTES];
    if (!user || !binding || !token_parse(token, raw))
        return false;
    bool is_valid = false;
    pthread_mutex_lock(&t->lock);
    time_t now = token_now(t);
    size_t home = token_home(raw);
    for (size_t i = 0; i < AUTH_TOKEN_PROBE; i++) {
        struct auth_token_slot *s = &t->slots[(home + i) % AUTH_TOKEN_SLOTS];
        if (s->expires == 0 || CRYPTO_memcmp(s->token, raw, sizeof raw) != 0)
            continue;
        /* found: spent now whatever the outcome, so a wrong guess cannot be retried */
        is_valid = s->expires > now && strcmp(s->user, user) == 0 &&
                   strcmp(s->binding, binding) == 0;
        OPENSSL_cleanse(s, sizeof *s);
        break;
    }
    pthread_mutex_unlock(&t->lock);
    OPENSSL_cleanse(raw, sizeof raw);
    return is_valid;
}

/* ---- handing the table over (a reload that replaces the auth process) ------------------ */

size_t auth_tokens_export(struct auth_tokens *t, char **buf_r, size_t *len_r)
{
    *buf_r = NULL;
    *len_r = 0;
    pthread_mutex_lock(&t->lock);
    time_t now = token_now(t);
    size_t size = AUTH_TOKENS_MAGIC_LEN, n = 0;
    for (size_t i = 0; i < AUTH_TOKEN_SLOTS; i++) {
        const struct auth_token_slot *s = &t->slots[i];
        if (s->expires > now)
            size += AUTH_TOKEN_BYTES + 8 + strlen(s->user) + 1 + strlen(s->binding) + 1;
    }
    char *buf = malloc(size);
    if (!buf) {
        pthread_mutex_unlock(&t->lock);
        return SIZE_MAX;
    }
    memcpy(buf, AUTH_TOKENS_MAGIC, AUTH_TOKENS_MAGIC_LEN);
    size_t len = AUTH_TOKENS_MAGIC_LEN;
    for (size_t i = 0; i < AUTH_TOKEN_SLOTS; i++) {
        const struct auth_token_slot *s = &t->slots[i];
        if (s->expires <= now)
            continue;
        memcpy(buf + len, s->token, AUTH_TOKEN_BYTES);
        len += AUTH_TOKEN_BYTES;
        uint64_t e = (uint64_t)s->expires;
        for (int k = 0; k < 8; k++)
            buf[len++] = (char)(unsigned char)(e >> (8 * k));
        size_t ul = strlen(s->user) + 1, bl = strlen(s->binding) + 1;
        memcpy(buf + len, s->user, ul);
        len += ul;
        memcpy(buf + len, s->binding, bl);
        len += bl;
        n++;
    }
    pthread_mutex_unlock(&t->lock);
    *buf_r = buf;
    *len_r = len;
    return n;
}

/* The NUL-terminated string at data[*pos] of at most max octets, none a control octet:
 * its length, or -1 when it is empty or has a control octet (the record is skipped), or
 * -2 when its NUL is not within max + 1 octets (the parse ends: no record boundary). */
static long import_string(const unsigned char *data, size_t len, size_t *pos, size_t max)
{
    size_t start = *pos, end = start;
    bool is_clean = true;
    while (end < len && end - start <= max && data[end] != '\0') {
        if (data[end] < 0x20 || data[end] == 0x7f)
            is_clean = false;
        end++;
    }
    if (end >= len || end - start > max || data[end] != '\0')
        return -2;
    *pos = end + 1;
    return is_clean && end > start ? (long)(end - start) : -1;
}

size_t auth_tokens_import(struct auth_tokens *t, const void *data, size_t len)
{
    const unsigned char *d = data;
    if (len < AUTH_TOKENS_MAGIC_LEN || memcmp(d, AUTH_TOKENS_MAGIC, AUTH_TOKENS_MAGIC_LEN) != 0)
        return 0;
    size_t pos = AUTH_TOKENS_MAGIC_LEN, kept = 0;
    pthread_mutex_lock(&t->lock);
    time_t now = token_now(t);
    for (size_t n = 0; n < AUTH_TOKEN_SLOTS && len - pos >= AUTH_TOKEN_BYTES + 8; n++) {
        const unsigned char *token = d + pos;
        uint64_t e = 0;
        for (int k = 0; k < 8; k++)
            e |= (uint64_t)d[pos + AUTH_TOKEN_BYTES + (size_t)k] << (8 * k);
        pos += AUTH_TOKEN_BYTES + 8;
        size_t user_at = pos;
        long ul = import_string(d, len, &pos, AUTH_MAX_LOGIN);
        if (ul == -2)
            break;
        size_t binding_at = pos;
        long bl = import_string(d, len, &pos, AUTH_BINDING_MAX);
        if (bl == -2)
            break;
        /* (compared as unsigned: a forged negative or huge time is out of range) */
        bool is_live = e > (uint64_t)now && e <= (uint64_t)now + AUTH_TOKEN_LIFETIME_S;
        if (ul < 0 || bl < 0 || !is_live)
            continue;
        bool is_known = false;
        size_t home = token_home(token);
        for (size_t i = 0; i < AUTH_TOKEN_PROBE && !is_known; i++) {
            const struct auth_token_slot *s = &t->slots[(home + i) % AUTH_TOKEN_SLOTS];
            is_known = s->expires > now && CRYPTO_memcmp(s->token, token, AUTH_TOKEN_BYTES) == 0;
        }
        if (is_known)
            continue; /* a token twice: the first one stands */
        struct auth_token_slot *slot = token_slot_for(t, token, now);
        memcpy(slot->token, token, AUTH_TOKEN_BYTES);
        memcpy(slot->user, d + user_at, (size_t)ul + 1);
        memcpy(slot->binding, d + binding_at, (size_t)bl + 1);
        slot->expires = (time_t)e;
        kept++;
    }
    pthread_mutex_unlock(&t->lock);
    return kept;
}
