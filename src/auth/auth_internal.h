/*
 * auth_internal.h - what the files of the auth module share and nobody else sees:
 * the service struct (the directory backend, the failed-login table), address
 * normalisation, and the credential lookup that SASL and logins build on.
 *
 * Thread rules: the backend serialises or pools itself (dir_backend.h); the failed-login
 * table is used only with svc->penalty_lock held.
 */
#ifndef TERN_AUTH_AUTH_INTERNAL_H
#define TERN_AUTH_AUTH_INTERNAL_H

#include "auth/auth.h"
#include "auth/dir_backend.h"
#include "core/buf.h"
#include "core/config.h"

#include <pthread.h>
#include <time.h>

/* Bounds on what we accept from peers and admins. */
#define AUTH_MAX_LOGIN      320  /* "local@domain": 64 + 1 + 255 */
#define AUTH_MAX_PASSWORD   1024 /* longer passwords are refused, never truncated */
#define AUTH_MAX_CRED       1024 /* a stored "{SCHEME}..." value */
#define AUTH_ALIAS_DEPTH    10   /* alias expansion depth (Postfix uses 100; 10 is plenty) */
#define AUTH_ALIAS_MAX_OUT  1000 /* addresses one resolve may produce */

struct auth_remote;

struct auth_service {
    struct auth_remote *remote; /* non-NULL: served by the auth process (remote.c) */
    char *data_dir;
    char *default_domain; /* "" when unset */
    char *mail_root;      /* <data_dir>/mail or directory.mail_root */
    enum config_plaintext allow_plaintext;
    uint64_t quota_default;
    struct auth_hash_cost hash_cost; /* of the passwords set through this service */

    struct dir_backend *dir; /* where domains, users and aliases are stored */

    pthread_mutex_t penalty_lock;   /* guards penalty */
    struct penalty_table *penalty;  /* the failed-login policy (policy/penalty.h); NULL when
                                     * remote: the auth process holds it */
    uint64_t (*penalty_clock)(void); /* its clock in ms, NULL: penalty_now_ms (tests) */
    /* the table saved to <data_dir>/penalty.db by its own thread (auth_penalty_persist_*):
     * every change within a second, a block at once */
    struct penalty_store *penalty_store;
    pthread_t penalty_saver;
    bool has_penalty_saver;
    bool is_penalty_saver_stopping; /* under penalty_lock */
    pthread_cond_t penalty_cond;    /* with penalty_lock: a block changed, or stop */
    uint64_t penalty_saved;         /* the table generation the file holds */

    unsigned char fake_secret[32];       /* fake SCRAM salts for unknown users */

    /* Which challenge mechanisms some stored credential can answer (auth_mechanism_flags):
     * asked for every CAPA/EHLO/CAPABILITY, so remembered for a second instead of a
     * directory query each time on the event loop. Under mech_lock. */
    pthread_mutex_t mech_lock;
    uint64_t mech_checked_ms; /* util_now_ms() of the last query; 0 never */
    bool has_mech_cram, has_mech_scram, has_mech_apop;
};

/* The credentials changed through this service: auth_mechanism_flags asks again. */
void auth_mech_forget(struct auth_service *svc);

/* ---- names ------------------------------------------------------------------------ */
/* Normalise a login or address to lower-case "local@domain"; bare names get the default
 * domain (auth.h rule). 1 ok, 0 malformed (or no domain can be chosen), -1 db error. */
int auth_name_canonical(struct auth_service *svc, const char *login, char *out, size_t size);
/* Lower-case, syntax-checked "local@domain" without default-domain rules. */
bool auth_addr_normalize(const char *addr, char *out, size_t size);
/* Lower-case, syntax-checked domain name. */
bool auth_domain_normalize(const char *domain, char *out, size_t size);
/* One readable line into *error_r (if error_r is not NULL). */
void auth_set_error(char **error_r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- credentials (directory.c) ---------------------------------------------------- */
struct auth_cred_set {
    char *address; /* canonical */
    bool enabled;
    size_t n;
    char *scheme[DIR_MAX_SCHEMES];
    char *value[DIR_MAX_SCHEMES]; /* "{SCHEME}data" */
};
/* Load a user's credentials by (already canonical) address; an address in an alias
 * domain loads the user of the target domain (cs->address says which). 1 / 0 no user /
 * -1 error. */
int auth_creds_load(struct auth_service *svc, const char *address, struct auth_cred_set *cs);
/* Add one credential to a set (copies); false on no memory or a full set. */
bool auth_creds_add(struct auth_cred_set *cs, const char *scheme, const char *value);
void auth_creds_free(struct auth_cred_set *cs);
/* The stored value for scheme (case-insensitive) or NULL. */
const char *auth_creds_find(const struct auth_cred_set *cs, const char *scheme);
/* Any user holds a credential with one of these schemes (NULL-terminated list)? */
bool auth_creds_any(struct auth_service *svc, const char *const *schemes);

/* Verify a password against the best credential of a set (password.c). 1/0/-1. */
int auth_creds_verify(const struct auth_cred_set *cs, const char *password);

/* ---- password.c helpers that SASL shares ------------------------------------------ */
/* The upper-case scheme of a stored "{SCHEME}data" value into out; false when the value
 * has no known {SCHEME} prefix. */
bool auth_password_scheme_of(const char *stored, char *out, size_t size);
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

/* ---- the auth process's clients (remote.c): what auth.h forwards -------------------- */
int auth_remote_domain_is_local(struct auth_service *svc, const char *domain);
int auth_remote_resolve(struct auth_service *svc, const char *address, struct auth_targets *t);
int auth_remote_user_lookup(struct auth_service *svc, const char *login, struct auth_user *u_r);
void auth_remote_rcpt_lookup(struct auth_service *svc, const char *domain, const char *address,
                             struct auth_rcpt *r);
bool auth_remote_sender_allowed(struct auth_service *svc, const char *user, const char *from);
/* binding NULL: no token asked (token_r may be NULL then) */
int auth_remote_login_password(struct auth_service *svc, const char *login, const char *password,
                               const char *binding, char **user_r, char *token_r);
int auth_remote_login_apop(struct auth_service *svc, const char *login, const char *timestamp,
                           const char *digest_hex, const char *binding, char **user_r,
                           char *token_r);
int auth_remote_login_redeem(struct auth_service *svc, const char *token, const char *user,
                             const char *binding);
int auth_remote_domain_list(struct auth_service *svc, void (*cb)(const char *domain, void *arg),
                            void *arg);
/* The failed-login policy's check and report (auth_penalty_*), asked of the auth
 * process; a call it cannot answer allows without delay (the login that follows fails
 * as a temporary error anyway). */
void auth_remote_penalty_check(struct auth_service *svc, const struct penalty_query *q,
                               struct penalty_answer *a_r);
void auth_remote_penalty_report(struct auth_service *svc, const struct penalty_query *q,
                                bool is_success, struct penalty_answer *a_r);
int auth_remote_login_too_soon(struct auth_service *svc, const char *user, unsigned delay);
/* The mechanism flags the auth process announced; false when none arrived yet. */
bool auth_remote_mechanism_flags(struct auth_service *svc, bool *has_cram_r, bool *has_scram_r,
                                 bool *has_apop_r);
/* One SASL step in the auth process: *sasl_id 0 starts the exchange (mech, hostname,
 * peer) and gets its number; user/attempted (and, with a binding, token:
 * AUTH_TOKEN_SIZE bytes) are filled from the answer. */
enum auth_sasl_status auth_remote_sasl_step(struct auth_service *svc, uint64_t *sasl_id,
                                            const char *mech, const char *hostname,
                                            const struct auth_peer *peer, const char *binding,
                                            const char *response, char **challenge_r,
                                            char *user, size_t user_size, char *attempted,
                                            size_t attempted_size, char *token);
void auth_remote_sasl_free(struct auth_service *svc, uint64_t sasl_id);
void auth_remote_close(struct auth_service *svc);

/* ---- one-time login tokens (token.c), kept by the auth process -------------------- */
#define AUTH_TOKEN_LIFETIME_S 60 /* from the check to the mail worker's redemption */
struct auth_tokens;
struct auth_tokens *auth_tokens_new(void);
void auth_tokens_free(struct auth_tokens *t);
/* A new token for user on binding into token_r (AUTH_TOKEN_SIZE); false when the
 * arguments are too long (token_r is "" then). */
bool auth_tokens_issue(struct auth_tokens *t, const char *user, const char *binding,
                       char *token_r);
/* Spend token: true when it was issued for exactly user and binding and has not expired.
 * A token found is spent whatever the outcome. */
bool auth_tokens_redeem(struct auth_tokens *t, const char *token, const char *user,
                        const char *binding);
/* Test hook: the tokens' clock (NULL: time()). */
void auth_tokens_set_clock(struct auth_tokens *t, time_t (*clock)(void));

/* Test hook: the failed-login table's clock in milliseconds (NULL: the monotonic clock). */
void auth_penalty_set_clock(struct auth_service *svc, uint64_t (*clock_ms)(void));

#endif
