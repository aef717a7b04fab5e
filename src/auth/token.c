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
 * Thread rules: every function is thread-safe (the table has its own lock); the auth
 * process answers on pool threads.
 */
#include "auth/auth_internal.h"
#include "core/util.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTH_TOKEN_SLOTS 8192
#define AUTH_TOKEN_PROBE 16
#define AUTH_TOKEN_BYTES 32

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
    size_t home = token_home(raw);
    struct auth_token_slot *slot = NULL;
    for (size_t i = 0; i < AUTH_TOKEN_PROBE; i++) {
        struct auth_token_slot *s = &t->slots[(home + i) % AUTH_TOKEN_SLOTS];
        if (s->expires <= now) {
            slot = s; /* free or expired */
            break;
        }
        if (!slot || s->expires < slot->expires)
            slot = s; /* the oldest, evicted when nothing is free */
    }
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
