/*
 * login.c - password logins (USER/PASS, IMAP LOGIN, SASL PLAIN/LOGIN), APOP, the
 * plaintext policy, the credential kinds the directory holds (auth_mechanism_flags: which
 * SASL mechanisms a peer may use is decided from them in sasl.c), the failed-login
 * policy's table (policy/penalty.h: the auth process's for every worker) and POP3's
 * LOGIN-DELAY times.
 *
 * Thread rules: any thread. auth_login_* are BLOCKING (they run slow hashes).
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* MD5() one-shot for APOP */

#include "auth/auth_internal.h"
#include "core/log.h"
#include "core/util.h"
#include "policy/penalty.h"

#include <openssl/crypto.h>
#include <openssl/md5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long auth_mechanism_flags trusts its last directory query. */
#define AUTH_MECH_RECHECK_MS 1000

/* Credentials that hold the password itself (can answer any challenge). */
static const char *const plaintext_schemes[] = {"PLAIN", "CLEAR", "CLEARTEXT", NULL};

/* ---- policy ----------------------------------------------------------------------- */

bool auth_plaintext_allowed(struct auth_service *svc, const struct auth_peer *peer)
{
    switch (svc->allow_plaintext) {
    case PLAINTEXT_ALWAYS:
        return true;
    case PLAINTEXT_LOOPBACK_TLS:
        return peer->is_tls || peer->is_loopback;
    case PLAINTEXT_TLS:
    default:
        return peer->is_tls;
    }
}

void auth_mechanism_flags(struct auth_service *svc, bool *has_cram_r, bool *has_scram_r,
                          bool *has_apop_r)
{
    static const char *const cram[] = {"CRAM-MD5", "PLAIN", "CLEAR", "CLEARTEXT", NULL};
    static const char *const scram[] = {"SCRAM-SHA-256", "PLAIN", "CLEAR", "CLEARTEXT", NULL};
    if (svc->remote) {
        /* announced by the auth process: no waiting on the event loop */
        (void)auth_remote_mechanism_flags(svc, has_cram_r, has_scram_r, has_apop_r);
        return;
    }
    /* A user added with a CRAM-capable password shows up in the offer within a second. */
    pthread_mutex_lock(&svc->mech_lock);
    uint64_t now = util_now_ms();
    if (svc->mech_checked_ms == 0 || now - svc->mech_checked_ms >= AUTH_MECH_RECHECK_MS) {
        svc->has_mech_cram = auth_creds_any(svc, cram);
        svc->has_mech_scram = auth_creds_any(svc, scram);
        svc->has_mech_apop = auth_creds_any(svc, plaintext_schemes);
        svc->mech_checked_ms = now > 0 ? now : 1;
    }
    *has_cram_r = svc->has_mech_cram;
    *has_scram_r = svc->has_mech_scram;
    *has_apop_r = svc->has_mech_apop;
    pthread_mutex_unlock(&svc->mech_lock);
}

void auth_mech_forget(struct auth_service *svc)
{
    pthread_mutex_lock(&svc->mech_lock);
    svc->mech_checked_ms = 0;
    pthread_mutex_unlock(&svc->mech_lock);
}

bool auth_apop_available(struct auth_service *svc)
{
    bool cram, scram, apop;
    auth_mechanism_flags(svc, &cram, &scram, &apop);
    return apop;
}

/* ---- logins ----------------------------------------------------------------------- */

int auth_login_password(struct auth_service *svc, const char *login, const char *password,
                        char **user_r)
{
    if (svc->remote)
        return auth_remote_login_password(svc, login, password, NULL, user_r, NULL);
    char addr[AUTH_MAX_LOGIN + 1];
    *user_r = NULL;
    if (!password || !*password || strlen(password) > AUTH_MAX_PASSWORD)
        return 0;
    int rc = auth_name_canonical(svc, login, addr, sizeof addr);
    if (rc <= 0)
        return rc;
    struct auth_cred_set cs;
    rc = auth_creds_load(svc, addr, &cs);
    if (rc <= 0)
        return rc;
    if (!cs.enabled) {
        auth_creds_free(&cs);
        return 0;
    }
    rc = auth_creds_verify(&cs, password);
    if (rc < 0)
        rc = 0; /* no usable credential: a failed login, not a server error */
    if (rc == 1 && !(*user_r = strdup(cs.address)))
        rc = -1;
    auth_creds_free(&cs);
    return rc;
}

/* ---- handing a session over (auth.h) ----------------------------------------------- */

int auth_login_password_token(struct auth_service *svc, const char *login, const char *password,
                              const char *binding, char **user_r, char *token_r)
{
    token_r[0] = '\0';
    if (svc->remote)
        return auth_remote_login_password(svc, login, password, binding, user_r, token_r);
    return auth_login_password(svc, login, password, user_r);
}

int auth_login_apop_token(struct auth_service *svc, const char *login, const char *timestamp,
                          const char *digest_hex, const char *binding, char **user_r,
                          char *token_r)
{
    token_r[0] = '\0';
    if (svc->remote)
        return auth_remote_login_apop(svc, login, timestamp, digest_hex, binding, user_r,
                                      token_r);
    return auth_login_apop(svc, login, timestamp, digest_hex, user_r);
}

int auth_login_redeem(struct auth_service *svc, const char *token, const char *user,
                      const char *binding)
{
    /* only the auth process keeps tokens: a local directory never issued one */
    return svc->remote ? auth_remote_login_redeem(svc, token, user, binding) : 0;
}

/* RFC 1939 §7: digest = MD5(timestamp || shared secret), 32 lower-case hex digits.
 * Only a plaintext-equivalent credential can answer it. */
int auth_login_apop(struct auth_service *svc, const char *login, const char *timestamp,
                    const char *digest_hex, char **user_r)
{
    if (svc->remote)
        return auth_remote_login_apop(svc, login, timestamp, digest_hex, NULL, user_r, NULL);
    char addr[AUTH_MAX_LOGIN + 1];
    *user_r = NULL;
    if (!timestamp || !digest_hex || strlen(digest_hex) != 32 || strlen(timestamp) > 512)
        return 0;
    int rc = auth_name_canonical(svc, login, addr, sizeof addr);
    if (rc <= 0)
        return rc;
    struct auth_cred_set cs;
    rc = auth_creds_load(svc, addr, &cs);
    if (rc <= 0)
        return rc;
    const char *secret = NULL;
    for (size_t i = 0; plaintext_schemes[i] && !secret; i++)
        secret = auth_creds_find(&cs, plaintext_schemes[i]);
    rc = 0;
    if (secret && cs.enabled) {
        secret = strchr(secret, '}') + 1;
        struct buf msg;
        buf_init(&msg, 2048);
        if (buf_append_str(&msg, timestamp) && buf_append_str(&msg, secret)) {
            unsigned char d[16];
            char hex[33], theirs[33];
            MD5((const unsigned char *)msg.data, msg.len, d);
            for (int i = 0; i < 16; i++)
                snprintf(hex + 2 * i, 3, "%02x", d[i]);
            for (int i = 0; i < 32; i++) {
                char c = digest_hex[i];
                theirs[i] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
            }
            theirs[32] = '\0';
            rc = CRYPTO_memcmp(hex, theirs, 32) == 0;
        }
        OPENSSL_cleanse(msg.data ? msg.data : (char *)"", msg.len);
        buf_free(&msg);
    }
    if (rc == 1 && !(*user_r = strdup(cs.address)))
        rc = -1;
    auth_creds_free(&cs);
    return rc;
}

/* ---- the failed-login policy ------------------------------------------------------------ */

/* The table's clock (tests replace it). penalty_lock held. */
static uint64_t auth_penalty_now(struct auth_service *svc)
{
    return svc->penalty_clock ? svc->penalty_clock() : penalty_now_ms();
}

void auth_penalty_set_clock(struct auth_service *svc, uint64_t (*clock_ms)(void))
{
    pthread_mutex_lock(&svc->penalty_lock);
    svc->penalty_clock = clock_ms;
    pthread_mutex_unlock(&svc->penalty_lock);
}

/* A block started or was lifted since blocks: have it saved now, not within the second.
 * penalty_lock held. */
static void penalty_saver_wake(struct auth_service *svc, uint64_t blocks)
{
    if (svc->has_penalty_saver && penalty_table_block_generation(svc->penalty) != blocks)
        pthread_cond_signal(&svc->penalty_cond);
}

static int64_t unix_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The saver thread: wakes every second (or when a block changed, or to stop) and writes
 * the table's live entries when it changed since the last save. The copy is made under
 * penalty_lock (a few thousand small entries at most); the file is written without it,
 * so the auth process's loop never waits on the disk. */
static void *penalty_saver_main(void *arg)
{
    struct auth_service *svc = arg;
    pthread_mutex_lock(&svc->penalty_lock);
    for (;;) {
        bool is_stopping = svc->is_penalty_saver_stopping;
        uint64_t gen = penalty_table_generation(svc->penalty);
        if (gen != svc->penalty_saved) {
            struct penalty_record *r = NULL;
            size_t n = penalty_table_export(svc->penalty, auth_penalty_now(svc), unix_now_ms(), &r);
            pthread_mutex_unlock(&svc->penalty_lock);
            int rc = n == SIZE_MAX ? -1 : penalty_store_save(svc->penalty_store, r, n);
            free(r);
            pthread_mutex_lock(&svc->penalty_lock);
            if (rc == 0) {
                svc->penalty_saved = gen;
            } else if (rc > 0) {
                /* a newer auth process (a reload) owns the file: it loaded what we had */
                log_info("auth", "failed-login table: saved by the new auth process now");
                break;
            } else { /* tried again at the next tick; the table in memory is unaffected */
                log_warning("auth", "cannot save the failed-login table");
            }
        }
        if (is_stopping)
            break;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&svc->penalty_cond, &svc->penalty_lock, &until);
    }
    pthread_mutex_unlock(&svc->penalty_lock);
    return NULL;
}

int auth_penalty_persist_start(struct auth_service *svc, const char *path, char **error_r)
{
    *error_r = NULL;
    if (!svc->penalty || svc->has_penalty_saver)
        return 0; /* a client of the auth process holds no table */
    struct penalty_store *ps = penalty_store_open(path, error_r);
    if (!ps)
        return -1;
    struct penalty_record *r = NULL;
    long n = penalty_store_load(ps, PENALTY_ADDRESS_SLOTS + PENALTY_PAIR_SLOTS, &r);
    if (n < 0)
        log_warning("auth", "%s: cannot read the failed-login table; starting empty", path);
    pthread_mutex_lock(&svc->penalty_lock);
    size_t kept = n > 0 ? penalty_table_import(svc->penalty, r, (size_t)n,
                                               auth_penalty_now(svc), unix_now_ms())
                        : 0;
    /* what the file holds beyond the kept entries goes at the first save */
    svc->penalty_saved = penalty_table_generation(svc->penalty) - (kept != (size_t)(n > 0 ? n : 0));
    pthread_mutex_unlock(&svc->penalty_lock);
    free(r);
    if (kept)
        log_info("auth", "failed-login table: %zu entries restored from %s", kept, path);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&svc->penalty_cond, &ca);
    pthread_condattr_destroy(&ca);
    svc->penalty_store = ps;
    svc->is_penalty_saver_stopping = false;
    if (pthread_create(&svc->penalty_saver, NULL, penalty_saver_main, svc) != 0) {
        pthread_cond_destroy(&svc->penalty_cond);
        penalty_store_close(ps);
        svc->penalty_store = NULL;
        *error_r = strdup("cannot start the thread that saves the failed-login table");
        return -1;
    }
    pthread_mutex_lock(&svc->penalty_lock);
    svc->has_penalty_saver = true;
    pthread_mutex_unlock(&svc->penalty_lock);
    return 0;
}

void auth_penalty_persist_stop(struct auth_service *svc)
{
    if (!svc->has_penalty_saver)
        return;
    pthread_mutex_lock(&svc->penalty_lock);
    svc->is_penalty_saver_stopping = true; /* (it saves what changed, then ends) */
    svc->has_penalty_saver = false;        /* nobody signals the condition any more */
    pthread_cond_signal(&svc->penalty_cond);
    pthread_mutex_unlock(&svc->penalty_lock);
    pthread_join(svc->penalty_saver, NULL);
    pthread_cond_destroy(&svc->penalty_cond);
    penalty_store_close(svc->penalty_store);
    svc->penalty_store = NULL;
}

/* The table is the auth process's when the directory is remote: the check and the report
 * are requests to it, so every worker counts into one table. */
void auth_penalty_check(struct auth_service *svc, const struct penalty_query *q,
                        struct penalty_answer *a_r)
{
    if (svc->remote) {
        auth_remote_penalty_check(svc, q, a_r);
        return;
    }
    struct penalty_query at = *q;
    pthread_mutex_lock(&svc->penalty_lock);
    if (svc->penalty_clock)
        at.now_ms = svc->penalty_clock();
    penalty_check(svc->penalty, &at, a_r);
    pthread_mutex_unlock(&svc->penalty_lock);
}

void auth_penalty_report(struct auth_service *svc, const struct penalty_query *q,
                         bool is_success, struct penalty_answer *a_r)
{
    if (svc->remote) {
        auth_remote_penalty_report(svc, q, is_success, a_r);
        return;
    }
    struct penalty_query at = *q;
    pthread_mutex_lock(&svc->penalty_lock);
    if (svc->penalty_clock)
        at.now_ms = svc->penalty_clock();
    uint64_t blocks = penalty_table_block_generation(svc->penalty);
    penalty_report(svc->penalty, &at, is_success, a_r);
    penalty_saver_wake(svc, blocks);
    pthread_mutex_unlock(&svc->penalty_lock);
}

size_t auth_penalty_blocks_list(struct auth_service *svc,
                                void (*cb)(const struct penalty_block *b, void *arg), void *arg)
{
    if (!svc->penalty)
        return 0; /* a client of the auth process holds no table */
    pthread_mutex_lock(&svc->penalty_lock);
    size_t n = penalty_blocks_list(svc->penalty, auth_penalty_now(svc), cb, arg);
    pthread_mutex_unlock(&svc->penalty_lock);
    return n;
}

size_t auth_penalty_blocks_clear(struct auth_service *svc, const char *ip, const char *account,
                                 const char *by)
{
    if (!svc->penalty)
        return 0;
    pthread_mutex_lock(&svc->penalty_lock);
    uint64_t blocks = penalty_table_block_generation(svc->penalty);
    size_t n = penalty_blocks_clear(svc->penalty, ip, account, by, auth_penalty_now(svc));
    penalty_saver_wake(svc, blocks);
    pthread_mutex_unlock(&svc->penalty_lock);
    return n;
}

/* ---- POP3 LOGIN-DELAY (RFC 2449 §6.5) ---------------------------------------------- */

/* The last successful login time per user, in a small table (one per directory: the auth
 * process keeps it for every worker). When it is full the oldest entry goes: a forgotten
 * user may log in early once, which costs nothing but bandwidth. */
#define AUTH_LOGIN_DELAY_SLOTS 4096

struct auth_login_time {
    char user[256];
    time_t at;
};

static pthread_mutex_t login_times_lock = PTHREAD_MUTEX_INITIALIZER;
static struct auth_login_time login_times[AUTH_LOGIN_DELAY_SLOTS];

bool auth_login_too_soon(struct auth_service *svc, const char *user, unsigned delay)
{
    if (svc->remote)
        return auth_remote_login_too_soon(svc, user, delay) == 1;
    time_t now = time(NULL);
    pthread_mutex_lock(&login_times_lock);
    size_t oldest = 0, free_slot = AUTH_LOGIN_DELAY_SLOTS;
    bool is_soon = false, is_found = false;
    for (size_t i = 0; i < AUTH_LOGIN_DELAY_SLOTS && !is_found; i++) {
        struct auth_login_time *t = &login_times[i];
        if (t->user[0] == '\0') {
            if (free_slot == AUTH_LOGIN_DELAY_SLOTS)
                free_slot = i;
            continue;
        }
        if (strcasecmp(t->user, user) == 0) {
            is_found = true;
            if (now - t->at < (time_t)delay)
                is_soon = true;
            else
                t->at = now;
            continue;
        }
        if (t->at < login_times[oldest].at)
            oldest = i;
    }
    if (!is_found) {
        size_t slot = free_slot != AUTH_LOGIN_DELAY_SLOTS ? free_slot : oldest;
        snprintf(login_times[slot].user, sizeof login_times[slot].user, "%s", user);
        login_times[slot].at = now;
    }
    pthread_mutex_unlock(&login_times_lock);
    return is_soon;
}
