/*
 * auth_internal.h - what the files of the auth module share and nobody else sees:
 * the service struct (one SQLite connection + mutex), address
 * normalisation, and the credential lookup that SASL and logins build on.
 *
 * Thread rules: the SQLite handle is used only with svc->db_lock held.
 */
#ifndef TERN_AUTH_AUTH_INTERNAL_H
#define TERN_AUTH_AUTH_INTERNAL_H

#include "auth/auth.h"
#include "core/buf.h"
#include "core/config.h"

#include <pthread.h>
#include <sqlite3.h>
#include <time.h>

/* Bounds on what we accept from peers and admins. */
#define AUTH_MAX_LOGIN      320  /* "local@domain": 64 + 1 + 255 */
#define AUTH_MAX_PASSWORD   1024 /* longer passwords are refused, never truncated */
#define AUTH_MAX_CRED       1024 /* a stored "{SCHEME}..." value */
#define AUTH_ALIAS_DEPTH    10   /* alias expansion depth (Postfix uses 100; 10 is plenty) */
#define AUTH_ALIAS_MAX_OUT  1000 /* addresses one resolve may produce */

struct auth_service {
    char *data_dir;
    char *default_domain; /* "" when unset */
    char *password_schemes;
    enum config_plaintext allow_plaintext;
    uint64_t quota_default;

    pthread_mutex_t db_lock;
    sqlite3 *db;

    pthread_mutex_t penalty_lock;   /* guards penalty */
    struct penalty_table *penalty;  /* the failed-login policy (policy/penalty.h) */

    unsigned char fake_secret[32];       /* fake SCRAM salts for unknown users */
};

/* ---- names ------------------------------------------------------------------------ */
/* Normalise a login or address to lower-case "local@domain"; bare names get the default
 * domain (auth.h rule). 1 ok, 0 malformed (or no domain can be chosen), -1 db error. */
int auth_name_canonical(struct auth_service *svc, const char *login, char *out, size_t size);
/* Lower-case, syntax-checked "local@domain" without default-domain rules. */
bool auth_addr_normalize(const char *addr, char *out, size_t size);

/* With db_lock held: does this (normalised) domain / user exist? 1 / 0 / -1. */
int auth_db_domain_exists(struct auth_service *svc, const char *domain);
int auth_db_user_exists(struct auth_service *svc, const char *address);

/* ---- credentials (directory.c) ---------------------------------------------------- */
struct auth_cred_set {
    char *address; /* canonical */
    bool enabled;
    size_t n;
    char *scheme[16];
    char *value[16]; /* "{SCHEME}data" */
};
/* Load a user's credentials by (already canonical) address. 1 / 0 no user / -1 error. */
int auth_creds_load(struct auth_service *svc, const char *address, struct auth_cred_set *cs);
void auth_creds_free(struct auth_cred_set *cs);
/* The stored value for scheme (case-insensitive) or NULL. */
const char *auth_creds_find(const struct auth_cred_set *cs, const char *scheme);
/* Any user holds a credential with one of these schemes (NULL-terminated list)? */
bool auth_creds_any(struct auth_service *svc, const char *const *schemes);

/* Verify a password against the best credential of a set (password.c). 1/0/-1. */
int auth_creds_verify(const struct auth_cred_set *cs, const char *password);

/* ---- password.c helpers that SASL shares ------------------------------------------ */
/* Dovecot's CRAM-MD5 context (32 bytes: HMAC-MD5 inner and outer state) of a password. */
void auth_cram_md5_context(const char *password, size_t len, unsigned char ctx_r[32]);
/* HMAC-MD5(key context, msg) from a 32-byte context. */
void auth_cram_md5_from_context(const unsigned char ctx[32], const void *msg, size_t len,
                                unsigned char out_r[16]);
/* Parse a "{SCRAM-SHA-x}iter,salt,stored,server" value. false if malformed. */
struct auth_scram_keys {
    unsigned iter;
    unsigned char salt[64];
    size_t salt_len;
    unsigned char stored_key[64];
    unsigned char server_key[64];
    size_t key_len;
};
bool auth_scram_parse(const char *data, size_t digest_len, struct auth_scram_keys *k);
/* Derive keys from a password with the given salt/iterations (digest_len 20 or 32), after
 * RFC 5802 §2.2 Normalize() (SASLprep; ASCII and passwords SASLprep refuses are used as
 * they are: password.c scram_normalize). */
bool auth_scram_derive(const char *password, size_t digest_len, struct auth_scram_keys *k);

#endif
