/*
 * login.c - password logins (USER/PASS, IMAP LOGIN, SASL PLAIN/LOGIN), APOP, the
 * plaintext policy and which mechanisms to advertise. (Failed logins are counted by
 * the sessions' calls to the login-failure policy, src/policy/penalty.h.)
 *
 * Thread rules: any thread. auth_login_* are BLOCKING (they run slow hashes).
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* MD5() one-shot for APOP */

#include "auth/auth_internal.h"
#include "policy/penalty.h"

#include <openssl/crypto.h>
#include <openssl/md5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

bool auth_apop_available(struct auth_service *svc)
{
    return auth_creds_any(svc, plaintext_schemes);
}

char *auth_mechanisms(struct auth_service *svc, const struct auth_peer *peer)
{
    static const char *const cram[] = {"CRAM-MD5", "PLAIN", "CLEAR", "CLEARTEXT", NULL};
    static const char *const scram[] = {"SCRAM-SHA-256", "PLAIN", "CLEAR", "CLEARTEXT", NULL};
    struct buf out;
    buf_init(&out, 256);
    if (auth_plaintext_allowed(svc, peer))
        buf_append_str(&out, "PLAIN LOGIN");
    if (auth_creds_any(svc, cram))
        buf_printf(&out, "%sCRAM-MD5", out.len ? " " : "");
    if (auth_creds_any(svc, scram))
        buf_printf(&out, "%sSCRAM-SHA-256", out.len ? " " : "");
    if (!out.data)
        return strdup("");
    return buf_steal(&out);
}

/* ---- logins ----------------------------------------------------------------------- */

int auth_login_password(struct auth_service *svc, const char *login, const char *password,
                        char **user_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    *user_r = NULL;
    if (!password || !*password || strlen(password) > AUTH_MAX_PASSWORD)
        return 0;
    pthread_mutex_lock(&svc->db_lock);
    int rc = auth_name_canonical(svc, login, addr, sizeof addr);
    pthread_mutex_unlock(&svc->db_lock);
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

/* RFC 1939 §7: digest = MD5(timestamp || shared secret), 32 lower-case hex digits.
 * Only a plaintext-equivalent credential can answer it. */
int auth_login_apop(struct auth_service *svc, const char *login, const char *timestamp,
                    const char *digest_hex, char **user_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    *user_r = NULL;
    if (!timestamp || !digest_hex || strlen(digest_hex) != 32 || strlen(timestamp) > 512)
        return 0;
    pthread_mutex_lock(&svc->db_lock);
    int rc = auth_name_canonical(svc, login, addr, sizeof addr);
    pthread_mutex_unlock(&svc->db_lock);
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

void auth_penalty_check(struct auth_service *svc, const struct penalty_query *q,
                        struct penalty_answer *a_r)
{
    pthread_mutex_lock(&svc->penalty_lock);
    penalty_check(svc->penalty, q, a_r);
    pthread_mutex_unlock(&svc->penalty_lock);
}

void auth_penalty_report(struct auth_service *svc, const struct penalty_query *q,
                         bool is_success, struct penalty_answer *a_r)
{
    pthread_mutex_lock(&svc->penalty_lock);
    penalty_report(svc->penalty, q, is_success, a_r);
    pthread_mutex_unlock(&svc->penalty_lock);
}

size_t auth_penalty_blocks_list(struct auth_service *svc,
                                void (*cb)(const struct penalty_block *b, void *arg), void *arg)
{
    pthread_mutex_lock(&svc->penalty_lock);
    size_t n = penalty_blocks_list(svc->penalty, penalty_now_ms(), cb, arg);
    pthread_mutex_unlock(&svc->penalty_lock);
    return n;
}

size_t auth_penalty_blocks_clear(struct auth_service *svc, const char *ip, const char *account,
                                 const char *by)
{
    pthread_mutex_lock(&svc->penalty_lock);
    size_t n = penalty_blocks_clear(svc->penalty, ip, account, by, penalty_now_ms());
    pthread_mutex_unlock(&svc->penalty_lock);
    return n;
}
