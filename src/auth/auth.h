/*
 * auth.h - the directory (domains, users, aliases), password schemes, SASL.
 *
 * One struct auth_service per process. The directory lives where directory.driver says
 * (auth/dir_backend.h): <data_dir>/tern.db (SQLite, the default, created with its schema
 * on first open), or a MariaDB/MySQL or PostgreSQL database — postfixadmin's tables read
 * as they are, or an administrator's own Dovecot-style queries. Whatever the backend,
 * the service answers the same questions with plain data in and plain data out:
 *   - routing: is this domain ours, who receives mail for this address (aliases one-to-many,
 *     catch-all "@domain", "user+tag@domain" -> user, alias domains), may this login use
 *     this MAIL FROM;
 *   - credentials: verify a password (Dovecot-style "{SCHEME}..." strings), APOP, SASL
 *     exchanges (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256), which mechanisms the store can serve;
 *   - administration for the CLI: add/del/list domains, users, aliases, set passwords.
 *
 * Login names: "user@domain"; a bare "user" is mapped to auth.default_domain, or, when that
 * is empty and the directory has exactly one domain, to that domain.
 *
 * Answers: lookups return 1 / 0 / -1, and -1 ALWAYS means "the directory could not answer
 * now" (database down, timed out, broken query): callers turn it into a temporary failure
 * (SMTP 451 4.3.0 / 454 4.7.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]), never into
 * "no such user" or "wrong password".
 *
 * Ownership: strings returned through *_r are malloc'd; the caller frees them (or calls the
 * matching *_free). Thread rules: every function is thread-safe. Two marks say what may
 * block, so that no event loop ever waits:
 *   BLOCKING  may run a slow password hash;
 *   NETWORK   may wait on the directory's database (up to directory.connect_timeout +
 *             directory.query_timeout) when auth_directory_may_block() is true: every
 *             lookup, routing and administration function below, unless it says
 *             "never blocks".
 * Call BLOCKING and NETWORK functions from the workpool (or the CLI), never on the loop.
 */
#ifndef TERN_AUTH_AUTH_H
#define TERN_AUTH_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct auth_service;

/* Open the directory cfg->directory_driver names (creating <data_dir>/tern.db if needed;
 * an SQL directory is connected on first use, and a database that is down at start is
 * an outage like any other). NULL with *error_r on failure: a bad directory.* setting
 * comes back as "file:line: key: reason". */
struct auth_service *auth_service_open(const struct config *cfg, char **error_r);
void auth_service_close(struct auth_service *svc);

/* Check the directory.* keys of cfg without opening anything (tern config check, and
 * `tern serve` before it binds): 0, or -1 with "file:line: key: reason" in *error_r.
 * Never blocks. */
int auth_config_check(const struct config *cfg, char **error_r);
/* Would `tern config check` take query as a directory.*_query (custom schema) for a
 * PostgreSQL (is_pgsql) or MySQL database? 0, or -1 with the reason in *error_r
 * ("at offset 34: unknown variable %x"). Pure; for `tern import`. */
int auth_sql_query_check(bool is_pgsql, const char *query, char **error_r);

/* Never blocks. Can directory lookups wait on a network (an SQL directory)? */
bool auth_directory_may_block(const struct auth_service *svc);
/* Never blocks. "tern.db" or "mysql://user@host:port/db", for messages. */
const char *auth_directory_name(const struct auth_service *svc);
/* Never blocks. NULL when the CLI may change the directory, else why it may not. */
const char *auth_directory_read_only_reason(const struct auth_service *svc);

/* ---- the auth process (DESIGN §2: it alone reads the password hashes) ------------------ */

/* A directory served by the auth process over the channel sock (a SOCK_SEQPACKET end,
 * owned from now on): every call below that needs the directory becomes a request to it
 * (remote.c). Same contracts; a dead or silent auth process is a temporary error (-1,
 * AUTH_SASL_TEMPFAIL), never a wrong password or an unknown user. */
struct auth_service *auth_service_open_remote(const struct config *cfg, int sock, char **error_r);
/* The master started a new auth process: use its channel (loop thread; owned). */
void auth_service_set_channel(struct auth_service *svc, int sock);

/* The auth process's side (server.c): answer the clients' requests from svc (a local
 * directory) on pool threads, SASL exchanges kept between steps. Loop thread. */
struct auth_server;
struct event_base;
struct workpool;
struct auth_server *auth_server_new(struct auth_service *svc, struct event_base *base,
                                    struct workpool *pool);
/* Serve one more client channel (owned from now on) of a process of kind (SERVER_PROC_*:
 * what it may ask, auth_wire.h). 0 or -1. */
int auth_server_add_client(struct auth_server *srv, int sock, unsigned kind);
void auth_server_free(struct auth_server *srv);

/* ---- routing ---------------------------------------------------------------------- */

/* NETWORK. 1 if domain (any case) is one of ours (or an alias domain of one), 0 if not,
 * -1 on a directory error. */
int auth_domain_is_local(struct auth_service *svc, const char *domain);
/* Never blocks: auth_domain_is_local for a local directory, -1 ("ask later, off the
 * loop") when answering would need the network. */
int auth_domain_is_local_nonblocking(struct auth_service *svc, const char *domain);

/* Where mail for one address goes after alias expansion (depth-limited, loop-safe). */
struct auth_targets {
    char **local; /* canonical "user@domain" of local users (deduplicated) */
    size_t n_local;
    char **remote; /* foreign addresses an alias points to */
    size_t n_remote;
};
/* NETWORK. Resolve address. Returns 1 if it exists (targets filled), 0 if the domain is ours but no
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
/* NETWORK. 1 found, 0 no such user, -1 error. Accepts a bare login name (default domain);
 * a login in an alias domain finds the user of the target domain. */
int auth_user_lookup(struct auth_service *svc, const char *login, struct auth_user *u_r);
void auth_user_free(struct auth_user *u);

/* A recipient's lookups in one step: from a login process one round trip to the auth
 * process instead of three (domain, resolve, user), docs/PERFORMANCE.md §12.8. */
#define AUTH_RCPT_USERS_MAX 64 /* local targets whose users come with the answer */
struct auth_rcpt {
    int is_local;          /* auth_domain_is_local(domain) */
    int resolved;          /* auth_resolve(address) when is_local == 1, else 0 */
    struct auth_targets t; /* when resolved == 1 */
    /* when resolved == 1, for each t.local[i]: found[i] is auth_user_lookup's result
     * (users[i] filled when 1); 2 = not looked up (more than AUTH_RCPT_USERS_MAX local
     * targets): the caller asks auth_user_lookup itself */
    int *found;
    struct auth_user *users;
};
/* NETWORK. Fills *r (auth_rcpt_free it); a failed call reads as a directory error
 * (is_local -1). */
void auth_rcpt_lookup(struct auth_service *svc, const char *domain, const char *address,
                      struct auth_rcpt *r);
void auth_rcpt_free(struct auth_rcpt *r);

/* NETWORK. May the authenticated user send with this envelope sender? Own address, an
 * alias that resolves to the user, or the null sender. A directory error answers false. */
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

/* May this peer use a SASL mechanism now? One rule for advertising (EHLO, CAPA,
 * CAPABILITY, bare POP3 AUTH) and for accepting (AUTH, AUTHENTICATE): a mechanism is
 * accepted exactly when it is advertised to that peer in that state. */
enum auth_mech_status {
    AUTH_MECH_OK,          /* advertised: the exchange may start */
    AUTH_MECH_UNKNOWN,     /* not a mechanism we implement */
    AUTH_MECH_NEEDS_TLS,   /* plaintext (PLAIN, LOGIN) refused by auth.allow_plaintext here;
                              every policy allows it over TLS */
    AUTH_MECH_UNAVAILABLE, /* no enabled user has a credential that can answer it
                              (CRAM-MD5, SCRAM-SHA-256 need a stored key or the password) */
};
/* Name case-insensitive. Never blocks on a network (auth_mechanism_flags below): safe on
 * the loop. */
enum auth_mech_status auth_mechanism_status(struct auth_service *svc, const char *mechanism,
                                            const struct auth_peer *peer);
/* Never blocks on a network (called on the loop for EHLO/CAPA/CAPABILITY). Space-separated
 * SASL mechanisms to advertise for this peer: those whose status is AUTH_MECH_OK, e.g.
 * "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256" (an SQL directory serves CRAM-MD5 and SCRAM-SHA-256
 * when directory.default_pass_scheme is a plaintext one). Caller frees. */
char *auth_mechanisms(struct auth_service *svc, const struct auth_peer *peer);
/* Never blocks on a network. Whether APOP can be served (some user has a
 * plaintext-equivalent credential). */
bool auth_apop_available(struct auth_service *svc);
/* The three facts the mechanism list depends on: some user can serve CRAM-MD5, SCRAM,
 * APOP. Fast: with a remote directory they are the auth process's last announcement. */
void auth_mechanism_flags(struct auth_service *svc, bool *has_cram_r, bool *has_scram_r,
                          bool *has_apop_r);
/* BLOCKING. POP3 LOGIN-DELAY (RFC 2449 §6.5): true if user logged in successfully less
 * than delay seconds ago; otherwise records now as its last login and returns false.
 * One table per directory: with the auth process, one for every worker. */
bool auth_login_too_soon(struct auth_service *svc, const char *user, unsigned delay);

/* BLOCKING, NETWORK. Verify login/password. 1 ok (*user_r = canonical address), 0 bad credentials or
 * disabled user, -1 temporary error. */
int auth_login_password(struct auth_service *svc, const char *login, const char *password,
                        char **user_r);
/* BLOCKING, NETWORK. APOP (RFC 1939 §7): digest_hex = MD5(timestamp + password). Same returns. */
int auth_login_apop(struct auth_service *svc, const char *login, const char *timestamp,
                    const char *digest_hex, char **user_r);

/* ---- the failed-login policy (policy/penalty.h) ------------------------------------ */

/* One table per directory: with the auth process (DESIGN §2), the auth process's, for
 * every worker (issue 10: it owns the failed-login state). Plain data in and out
 * (penalty.h's request and answer); the table does no hashing, but with a remote
 * directory each call is a request to the auth process: BLOCKING, so sessions make them
 * in their login jobs, beside the credential check. The auth process stamps the time
 * itself (q->now_ms is used only with a local directory). */
struct penalty_query;
struct penalty_answer;
struct penalty_block;
/* BLOCKING. Before verifying credentials: blocked, or allowed after answer->delay_ms. */
void auth_penalty_check(struct auth_service *svc, const struct penalty_query *q,
                        struct penalty_answer *a_r);
/* BLOCKING. After verifying: count the attempt; PENALTY_BLOCKED on a success means
 * refuse it. */
void auth_penalty_report(struct auth_service *svc, const struct penalty_query *q,
                         bool is_success, struct penalty_answer *a_r);
/* BLOCKING. A login job's policy step before it verifies credentials (penalty.h's struct
 * penalty_gate, filled on the loop): true to verify now; false when the attempt is
 * refused (g->is_blocked) or must first be held g->delay_ms (the job's done callback
 * submits it again after that delay; the check is not repeated). */
struct penalty_gate;
bool auth_penalty_gate_enter(struct auth_service *svc, struct penalty_gate *g,
                             const char *account);
/* BLOCKING. After verifying: rc 1 succeeded, 0 failed (counted), -1 a temporary error
 * (not counted). true when a success must be refused as a failure (g->is_blocked). */
bool auth_penalty_gate_report(struct auth_service *svc, struct penalty_gate *g,
                              const char *account, int rc);
/* Never blocks. `tern auth blocks` (auth/control.c, in the process that holds the table):
 * list the active blocks / lift them (penalty_blocks_* rules); 0 without a local table. */
size_t auth_penalty_blocks_list(struct auth_service *svc,
                                void (*cb)(const struct penalty_block *b, void *arg), void *arg);
size_t auth_penalty_blocks_clear(struct auth_service *svc, const char *ip, const char *account,
                                 const char *by);
/* In the process that holds the table (the auth process, or the only one): restore it
 * from path (<data_dir>/penalty.db, created mode 0600) and keep saving it there from a
 * thread of its own (policy/penalty.h "persistence"), so a restart of the process does
 * not lift its blocks. BLOCKING (reads the file): at start-up. 0, or -1 with *error_r
 * (malloc'd; the table then lives in memory only). auth_service_close() stops it after a
 * last save; 0 and nothing done without a local table. */
int auth_penalty_persist_start(struct auth_service *svc, const char *path, char **error_r);
void auth_penalty_persist_stop(struct auth_service *svc);

/* ---- handing a logged-in session over (privilege separation, DESIGN §2) ----------------
 * A login process (which may read no mailbox) checks the credentials through the auth
 * process and hands the logged-in connection to a mail worker. The auth process answers
 * a successful check from a login process with a one-time token bound to the canonical
 * user and the connection; the mail worker redeems it before it opens the mailbox, so a
 * login process taken over by an attacker cannot ask for a mailbox without its password.
 * Single-process mode has no tokens (the session never moves). */
#define AUTH_TOKEN_SIZE  65  /* 64 hex digits and the NUL */
/* A binding names the connection (conn_login_binding: service, both addresses and
 * ports); the auth process only compares it. */
#define AUTH_BINDING_MAX 160
/* BLOCKING, NETWORK. auth_login_password / auth_login_apop that also return the token for
 * binding in token_r (AUTH_TOKEN_SIZE bytes; "" when no token was issued: a local
 * directory, or not asked from a login process). Same return codes. */
int auth_login_password_token(struct auth_service *svc, const char *login, const char *password,
                              const char *binding, char **user_r, char *token_r);
int auth_login_apop_token(struct auth_service *svc, const char *login, const char *timestamp,
                          const char *digest_hex, const char *binding, char **user_r,
                          char *token_r);
/* BLOCKING, NETWORK. In a mail worker: is token the auth process's unspent proof that user
 * logged in on binding? 1 yes (the token is spent now), 0 no, -1 temporary failure. */
int auth_login_redeem(struct auth_service *svc, const char *token, const char *user,
                      const char *binding);

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
/* Start mechanism (case-insensitive). NULL unless auth_mechanism_status() is AUTH_MECH_OK
 * for this peer (or out of memory): sessions ask auth_mechanism_status() first to choose
 * their refusal. hostname is used for CRAM-MD5 challenges "<random.time@hostname>". */
struct auth_sasl *auth_sasl_start(struct auth_service *svc, const char *mechanism,
                                  const struct auth_peer *peer, const char *hostname);
/* BLOCKING, NETWORK. Feed one client response: base64 text as the client sent it (NULL when the
 * mechanism starts and the client gave no initial response; "=" means empty initial
 * response, RFC 4954). *challenge_r: malloc'd base64 to send next (or NULL). LOGIN prompts
 * are "Username:" / "Password:" (VXNlcm5hbWU6 / UGFzc3dvcmQ6), as the seeds show. */
enum auth_sasl_status auth_sasl_step(struct auth_sasl *s, const char *response_b64,
                                     char **challenge_r);
const char *auth_sasl_mechanism(const struct auth_sasl *s); /* upper-case name */
const char *auth_sasl_user(const struct auth_sasl *s);      /* after AUTH_SASL_OK */
/* The login name the client tried (for the failure log line), or "" if none yet. */
const char *auth_sasl_attempted_login(const struct auth_sasl *s);
/* In a login process, before the first step: the connection (conn_login_binding) a
 * successful exchange is handed over with; the auth process then issues a token. */
void auth_sasl_set_binding(struct auth_sasl *s, const char *binding);
/* After AUTH_SASL_OK of an exchange with a binding: the token for the handover
 * (auth_login_redeem), or "" when none was issued. */
const char *auth_sasl_token(const struct auth_sasl *s);
void auth_sasl_free(struct auth_sasl *s);

/* ---- password schemes (Dovecot-compatible "{SCHEME}data") -------------------------- */

/* The cost of the hashes auth_password_hash writes (auth.argon2_rounds/_memory). A zero
 * field is the scheme's own, as `doveadm pw` writes it: ARGON2ID 3 rounds and 64 MiB,
 * ARGON2I 4 rounds and 32 MiB. A stored hash names its own cost, so a change applies to
 * passwords set from then on; verifying costs what the stored hash says. */
struct auth_hash_cost {
    uint32_t argon2_rounds;
    uint32_t argon2_memory_kib;
};
/* The cost cfg sets (config.c checked the bounds). */
void auth_hash_cost_from_config(const struct config *cfg, struct auth_hash_cost *cost_r);

/* Schemes: ARGON2ID, ARGON2I, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, CRYPT (yescrypt/any
 * crypt(3)), SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, CLEAR, PLAIN-MD5, SHA256, SSHA256,
 * SHA512, SSHA512; cost NULL: every scheme's own. BLOCKING. Returns 0 and a malloc'd
 * "{SCHEME}..." or -1 with *error_r. */
int auth_password_hash(const char *scheme, const char *password,
                       const struct auth_hash_cost *cost, char **hash_r, char **error_r);
/* BLOCKING. 1 match, 0 mismatch, -1 unknown scheme or malformed stored value. */
int auth_password_verify(const char *stored, const char *password);
/* Is name a scheme auth_password_verify knows ("SHA512-CRYPT", "PLAIN-MD5.HEX", ...)? */
bool auth_password_scheme_is_known(const char *name);

/* ---- administration (CLI) --------------------------------------------------------- */
/* All NETWORK. On a read-only directory (custom SQL queries) every change fails with
 * auth_directory_read_only_reason() in *error_r. */

int auth_domain_add(struct auth_service *svc, const char *domain, char **error_r);
int auth_domain_del(struct auth_service *svc, const char *domain, char **error_r);
/* Calls cb for each domain in order. */
int auth_domain_list(struct auth_service *svc, void (*cb)(const char *domain, void *arg),
                     void *arg);
/* BLOCKING. Store the password in each scheme of auth.password_schemes (tern.db) or in
 * directory.password_scheme (SQL). quota 0 means "follow quota.default" (tern.db) or
 * unlimited (postfixadmin), also for auth_user_set_quota. The domain must exist. */
int auth_user_add(struct auth_service *svc, const char *address, const char *password,
                  uint64_t quota, char **error_r);
/* BLOCKING. Add a user with a password hash made elsewhere (a Dovecot passwd-file, doveadm
 * pw): "{SCHEME}data" in a scheme auth_password_verify reads, or a bare crypt(3) string
 * ("$6$...", read as {CRYPT}). Stored as given, so the old password keeps working. */
int auth_user_add_hashed(struct auth_service *svc, const char *address, const char *stored,
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
