/*
 * auth.h - the directory (domains, users, aliases in SQLite), password schemes, SASL.
 *
 * One struct auth_service per process, opened on <data_dir>/tern.db (created with its
 * schema on first open, WAL mode). It answers three kinds of question:
 *   - routing: is this domain ours, who receives mail for this address (aliases one-to-many,
 *     catch-all "@domain", "user+tag@domain" -> user), may this login use this MAIL FROM;
 *   - credentials: verify a password (Dovecot-style "{SCHEME}..." strings), APOP, SASL
 *     exchanges (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256), which mechanisms the store can serve;
 *   - administration for the CLI: add/del/list domains, users, aliases, set passwords.
 *
 * Login names: "user@domain"; a bare "user" is mapped to auth.default_domain, or, when that
 * is empty and the directory has exactly one domain, to that domain.
 *
 * Ownership: strings returned through *_r are malloc'd; the caller frees them (or calls the
 * matching *_free). Thread rules: every function is thread-safe (one SQLite connection
 * guarded by a mutex). Functions marked BLOCKING may run a slow hash: call them from the
 * workpool, never on the event loop. Lookups without the mark are fast (indexed SQLite reads).
 */
#ifndef TERN_AUTH_AUTH_H
#define TERN_AUTH_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct auth_service;

/* Open (creating if needed) <cfg->data_dir>/tern.db. NULL with *error_r on failure. */
struct auth_service *auth_service_open(const struct config *cfg, char **error_r);
void auth_service_close(struct auth_service *svc);

/* ---- routing ---------------------------------------------------------------------- */

/* 1 if domain (any case) is one of ours, 0 if not, -1 on a directory error. */
int auth_domain_is_local(struct auth_service *svc, const char *domain);

/* Where mail for one address goes after alias expansion (depth-limited, loop-safe). */
struct auth_targets {
    char **local; /* canonical "user@domain" of local users (deduplicated) */
    size_t n_local;
    char **remote; /* foreign addresses an alias points to */
    size_t n_remote;
};
/* Resolve address. Returns 1 if it exists (targets filled), 0 if the domain is ours but no
 * user or alias matches (550 5.1.1), -1 on a directory error (451). Domain must be local.
 * Lookup order per address: exact alias, exact user, "user+tag" -> "user" (alias or user),
 * then the domain's catch-all "@domain". An alias listing its own source keeps a copy for
 * the user of that name. An alias whose targets all vanished resolves to 0. */
int auth_resolve(struct auth_service *svc, const char *address, struct auth_targets *t);
void auth_targets_free(struct auth_targets *t);

struct auth_user {
    char *address;  /* canonical "user@domain" */
    char *home;     /* <data_dir>/mail/<domain>/<user>: the store's per-user folder */
    uint64_t quota; /* bytes, 0 = unlimited (user value or quota.default) */
    bool enabled;
};
/* 1 found, 0 no such user, -1 error. Accepts a bare login name (default domain). */
int auth_user_lookup(struct auth_service *svc, const char *login, struct auth_user *u_r);
void auth_user_free(struct auth_user *u);

/* May the authenticated user send with this envelope sender? Own address, an alias that
 * resolves to the user, or the null sender. */
bool auth_sender_allowed(struct auth_service *svc, const char *user, const char *mail_from);

/* ---- credentials ------------------------------------------------------------------ */

/* Context of a login attempt, for logs and the plaintext policy. */
struct auth_peer {
    const char *service; /* "smtp", "pop3", "imap" (SASL service name) */
    const char *ip;
    bool is_tls;
    bool is_loopback;
};

/* Is a plaintext mechanism (PLAIN, LOGIN, USER/PASS, IMAP LOGIN) allowed for this peer
 * under auth.allow_plaintext? */
bool auth_plaintext_allowed(struct auth_service *svc, const struct auth_peer *peer);

/* Space-separated SASL mechanisms to advertise for this peer, e.g.
 * "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256": plaintext ones only when allowed; CRAM-MD5 and
 * SCRAM-SHA-256 only when some user has a credential that can serve them. Caller frees. */
char *auth_mechanisms(struct auth_service *svc, const struct auth_peer *peer);
/* Whether APOP can be served (some user has a plaintext-equivalent credential). */
bool auth_apop_available(struct auth_service *svc);

/* BLOCKING. Verify login/password. 1 ok (*user_r = canonical address), 0 bad credentials or
 * disabled user, -1 temporary error. */
int auth_login_password(struct auth_service *svc, const char *login, const char *password,
                        char **user_r);
/* BLOCKING. APOP (RFC 1939 §7): digest_hex = MD5(timestamp + password). Same returns. */
int auth_login_apop(struct auth_service *svc, const char *login, const char *timestamp,
                    const char *digest_hex, char **user_r);

/* ---- the failed-login policy (policy/penalty.h) ------------------------------------ */

/* One table per directory: when the auth process serves the directory (DESIGN §2), one
 * for every worker, as the auth process owns the failed-login state. Plain data in and
 * out (penalty.h's request and answer), fast (no hashing): loop thread. */
struct penalty_query;
struct penalty_answer;
struct penalty_block;
/* Before verifying credentials: blocked, or allowed after answer->delay_ms. */
void auth_penalty_check(struct auth_service *svc, const struct penalty_query *q,
                        struct penalty_answer *a_r);
/* After verifying: count the attempt; PENALTY_BLOCKED on a success means refuse it. */
void auth_penalty_report(struct auth_service *svc, const struct penalty_query *q,
                         bool is_success, struct penalty_answer *a_r);
/* `tern auth blocks`: list the active blocks / lift them (penalty_blocks_* rules). */
size_t auth_penalty_blocks_list(struct auth_service *svc,
                                void (*cb)(const struct penalty_block *b, void *arg), void *arg);
size_t auth_penalty_blocks_clear(struct auth_service *svc, const char *ip, const char *account,
                                 const char *by);

/* ---- SASL exchanges (shared by SMTP AUTH, POP3 AUTH, IMAP AUTHENTICATE) --------------- */

struct auth_sasl;
enum auth_sasl_status {
    AUTH_SASL_CONTINUE, /* send *challenge_r (base64, may be "") and read the next response */
    AUTH_SASL_OK,       /* authenticated: auth_sasl_user(); *challenge_r may hold final data
                           (in practice NULL: SCRAM sends its server-final message as one
                           more CONTINUE challenge, answered by an empty response) */
    AUTH_SASL_FAIL,     /* bad credentials or malformed exchange */
    AUTH_SASL_TEMPFAIL, /* directory error */
};
/* Start mechanism (case-insensitive). NULL if unknown or not allowed for this peer.
 * hostname is used for CRAM-MD5 challenges "<random.time@hostname>". */
struct auth_sasl *auth_sasl_start(struct auth_service *svc, const char *mechanism,
                                  const struct auth_peer *peer, const char *hostname);
/* BLOCKING. Feed one client response: base64 text as the client sent it (NULL when the
 * mechanism starts and the client gave no initial response; "=" means empty initial
 * response, RFC 4954). *challenge_r: malloc'd base64 to send next (or NULL). LOGIN prompts
 * are "Username:" / "Password:" (VXNlcm5hbWU6 / UGFzc3dvcmQ6), as the seeds show. */
enum auth_sasl_status auth_sasl_step(struct auth_sasl *s, const char *response_b64,
                                     char **challenge_r);
const char *auth_sasl_mechanism(const struct auth_sasl *s); /* upper-case name */
const char *auth_sasl_user(const struct auth_sasl *s);      /* after AUTH_SASL_OK */
/* The login name the client tried (for the failure log line), or "" if none yet. */
const char *auth_sasl_attempted_login(const struct auth_sasl *s);
void auth_sasl_free(struct auth_sasl *s);

/* ---- password schemes (Dovecot-compatible "{SCHEME}data") -------------------------- */

/* Schemes: ARGON2ID, ARGON2I, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, CRYPT (yescrypt/any
 * crypt(3)), SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, CLEAR, PLAIN-MD5, SHA256, SSHA256,
 * SHA512, SSHA512. BLOCKING. Returns 0 and a malloc'd "{SCHEME}..." or -1 with *error_r. */
int auth_password_hash(const char *scheme, const char *password, char **hash_r, char **error_r);
/* BLOCKING. 1 match, 0 mismatch, -1 unknown scheme or malformed stored value. */
int auth_password_verify(const char *stored, const char *password);

/* ---- administration (CLI) --------------------------------------------------------- */

int auth_domain_add(struct auth_service *svc, const char *domain, char **error_r);
int auth_domain_del(struct auth_service *svc, const char *domain, char **error_r);
/* Calls cb for each domain in order. */
int auth_domain_list(struct auth_service *svc, void (*cb)(const char *domain, void *arg),
                     void *arg);
/* BLOCKING. Store the password in each scheme of auth.password_schemes. quota 0 means
 * "follow quota.default" (also for auth_user_set_quota). The domain must exist. */
int auth_user_add(struct auth_service *svc, const char *address, const char *password,
                  uint64_t quota, char **error_r);
int auth_user_del(struct auth_service *svc, const char *address, char **error_r);
int auth_user_set_password(struct auth_service *svc, const char *address, const char *password,
                           char **error_r);
int auth_user_set_quota(struct auth_service *svc, const char *address, uint64_t quota,
                        char **error_r);
int auth_user_set_enabled(struct auth_service *svc, const char *address, bool enabled,
                          char **error_r);
int auth_user_list(struct auth_service *svc, const char *domain_or_null,
                   void (*cb)(const struct auth_user *u, void *arg), void *arg);
/* Schemes stored for a user, space-separated (for `tern user show`). Caller frees. */
char *auth_user_schemes(struct auth_service *svc, const char *address);
int auth_alias_add(struct auth_service *svc, const char *source, const char *target,
                   char **error_r);
int auth_alias_del(struct auth_service *svc, const char *source, const char *target_or_null,
                   char **error_r);
int auth_alias_list(struct auth_service *svc,
                    void (*cb)(const char *source, const char *target, void *arg), void *arg);

#endif
