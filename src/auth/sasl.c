/*
 * sasl.c - server side of the SASL mechanisms shared by SMTP AUTH, POP3 AUTH and IMAP
 * AUTHENTICATE: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login, prompts as the
 * seeds show them), CRAM-MD5 (RFC 2195) and SCRAM-SHA-256 (RFC 5802, RFC 7677).
 *
 * Written by hand on OpenSSL rather than through GNU SASL: PLAIN and LOGIN must match
 * the seeds byte for byte (GNU SASL's LOGIN prompts "User Name"), and each mechanism is
 * a small state machine over already-decoded bytes, which keeps it fuzzable.
 *
 * Which mechanisms a peer may use is decided here, once, for advertising and accepting
 * alike (auth_mechanism_status).
 *
 * Each exchange is an object owned by one session; steps may run on a worker thread
 * (they verify passwords), but never two at once for the same object.
 */
#include "auth/auth_internal.h"
#include "core/util.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SASL_MAX_RESPONSE  8192 /* decoded bytes of one client response */
#define SCRAM_ITER_DEFAULT 4096

enum sasl_mech { MECH_PLAIN, MECH_LOGIN, MECH_CRAM_MD5, MECH_SCRAM_SHA_256 };

/* What a mechanism needs stored: nothing particular (it verifies a password, any
 * credential will do), or a credential a challenge-response can be answered from (its
 * own key or the password itself: auth_mechanism_flags). */
enum mech_credential { CRED_ANY, CRED_CRAM_MD5, CRED_SCRAM_SHA_256 };

/* The mechanisms, in the order they are advertised. */
static const struct sasl_mech_info {
    const char *name;
    enum sasl_mech mech;
    bool is_plaintext; /* sends the password: subject to auth.allow_plaintext */
    enum mech_credential needs;
} mechs[] = {
    {"PLAIN", MECH_PLAIN, true, CRED_ANY},
    {"LOGIN", MECH_LOGIN, true, CRED_ANY},
    {"CRAM-MD5", MECH_CRAM_MD5, false, CRED_CRAM_MD5},
    {"SCRAM-SHA-256", MECH_SCRAM_SHA_256, false, CRED_SCRAM_SHA_256},
};

struct auth_sasl {
    struct auth_service *svc;
    enum sasl_mech mech;
    const char *name;
    int state; /* mechanism-specific step counter */
    bool is_done;
    char hostname[256];
    char login[AUTH_MAX_LOGIN + 1]; /* as the client gave it */
    char user[AUTH_MAX_LOGIN + 1];  /* canonical, after AUTH_SASL_OK */
    char *challenge;                /* CRAM-MD5 challenge; SCRAM server-first */
    /* SCRAM */
    char *client_first_bare;
    char *gs2_header;
    char *nonce;
    bool is_fake; /* unknown user: run the exchange, then fail */
    struct auth_scram_keys keys;
    /* served by the auth process (remote.c): the exchange lives there between steps */
    uint64_t remote_id; /* 0 until the first step started it */
    char peer_service[16], peer_ip[64];
    bool peer_is_tls, peer_is_loopback;
    char binding[AUTH_BINDING_MAX + 1]; /* a login process's connection, "" none */
    char token[AUTH_TOKEN_SIZE];        /* its token after AUTH_SASL_OK, "" none */
};

static const char *const plaintext_schemes[] = {"PLAIN", "CLEAR", "CLEARTEXT", NULL};

static const struct sasl_mech_info *mech_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof mechs / sizeof mechs[0]; i++)
        if (strcasecmp(mechs[i].name, name) == 0)
            return &mechs[i];
    return NULL;
}

/* The one rule behind both advertising and accepting a mechanism; has_cram/has_scram
 * from auth_mechanism_flags(). */
static enum auth_mech_status mech_status(struct auth_service *svc,
                                         const struct sasl_mech_info *m,
                                         const struct auth_peer *peer, bool has_cram,
                                         bool has_scram)
{
    if (m->is_plaintext && !auth_plaintext_allowed(svc, peer))
        return AUTH_MECH_NEEDS_TLS;
    if ((m->needs == CRED_CRAM_MD5 && !has_cram) || (m->needs == CRED_SCRAM_SHA_256 && !has_scram))
        return AUTH_MECH_UNAVAILABLE;
    return AUTH_MECH_OK;
}

enum auth_mech_status auth_mechanism_status(struct auth_service *svc, const char *mechanism,
                                            const struct auth_peer *peer)
{
    const struct sasl_mech_info *m = mech_find(mechanism);
    if (!m)
        return AUTH_MECH_UNKNOWN;
    bool has_cram, has_scram, has_apop;
    auth_mechanism_flags(svc, &has_cram, &has_scram, &has_apop);
    return mech_status(svc, m, peer, has_cram, has_scram);
}

char *auth_mechanisms(struct auth_service *svc, const struct auth_peer *peer)
{
    bool has_cram, has_scram, has_apop;
    auth_mechanism_flags(svc, &has_cram, &has_scram, &has_apop);
    struct buf out;
    buf_init(&out, 256);
    for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++)
        if (mech_status(svc, &mechs[i], peer, has_cram, has_scram) == AUTH_MECH_OK)
            buf_printf(&out, "%s%s", out.len ? " " : "", mechs[i].name);
    if (!out.data)
        return strdup("");
    return buf_steal(&out);
}

struct auth_sasl *auth_sasl_start(struct auth_service *svc, const char *mechanism,
                                  const struct auth_peer *peer, const char *hostname)
{
    const struct sasl_mech_info *m = mech_find(mechanism);
    /* RFC 4954 §4, RFC 5034 §4, RFC 3501 §6.2.2: only what we advertise is accepted */
    if (!m || auth_mechanism_status(svc, mechanism, peer) != AUTH_MECH_OK)
        return NULL;
    struct auth_sasl *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->svc = svc;
    s->mech = m->mech;
    s->name = m->name;
    snprintf(s->hostname, sizeof s->hostname, "%s", hostname && *hostname ? hostname : "localhost");
    /* copies: the steps run on pool threads, the peer's strings belong to the loop */
    snprintf(s->peer_service, sizeof s->peer_service, "%s",
             peer && peer->service ? peer->service : "");
    snprintf(s->peer_ip, sizeof s->peer_ip, "%s", peer && peer->ip ? peer->ip : "");
    s->peer_is_tls = peer && peer->is_tls;
    s->peer_is_loopback = peer && peer->is_loopback;
    return s;
}

const char *auth_sasl_mechanism(const struct auth_sasl *s)
{
    return s->name;
}

const char *auth_sasl_user(const struct auth_sasl *s)
{
    return s->user;
}

const char *auth_sasl_attempted_login(const struct auth_sasl *s)
{
    return s->login;
}

void auth_sasl_set_binding(struct auth_sasl *s, const char *binding)
{
    snprintf(s->binding, sizeof s->binding, "%s", binding ? binding : "");
}

const char *auth_sasl_token(const struct auth_sasl *s)
{
    return s->token;
}

void auth_sasl_free(struct auth_sasl *s)
{
    if (!s)
        return;
    if (s->svc->remote && s->remote_id && !s->is_done)
        auth_remote_sasl_free(s->svc, s->remote_id); /* the auth process drops its half */
    free(s->challenge);
    free(s->client_first_bare);
    free(s->gs2_header);
    free(s->nonce);
    OPENSSL_cleanse(&s->keys, sizeof s->keys);
    OPENSSL_cleanse(s->token, sizeof s->token);
    free(s);
}

static void set_login(struct auth_sasl *s, const char *p, size_t len)
{
    if (len >= sizeof s->login)
        len = sizeof s->login - 1;
    memcpy(s->login, p, len);
    s->login[len] = '\0';
    /* A login for the log line must not carry control bytes. */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s->login[i] < 0x20 || s->login[i] == 0x7f)
            s->login[i] = '?';
}

/* Finish a password check: verify, and on success record the canonical user. */
static enum auth_sasl_status finish_password(struct auth_sasl *s, const char *login,
                                             const char *password)
{
    char *user = NULL;
    s->is_done = true;
    int rc = auth_login_password(s->svc, login, password, &user);
    if (rc < 0)
        return AUTH_SASL_TEMPFAIL;
    if (rc == 0)
        return AUTH_SASL_FAIL;
    snprintf(s->user, sizeof s->user, "%s", user);
    free(user);
    return AUTH_SASL_OK;
}

/* ---- PLAIN (RFC 4616) ------------------------------------------------------------- */

/* message = [authzid] NUL authcid NUL passwd. We do not support proxy authorization:
 * an authzid must name the same user as the authcid (the seeds send "test\0test\0..."). */
static enum auth_sasl_status step_plain(struct auth_sasl *s, const struct buf *in)
{
    const char *p = in->data ? in->data : "";
    size_t len = in->len;
    const char *nul1 = memchr(p, '\0', len);
    if (!nul1)
        return AUTH_SASL_FAIL;
    const char *authcid = nul1 + 1;
    const char *nul2 = memchr(authcid, '\0', len - (size_t)(authcid - p));
    if (!nul2)
        return AUTH_SASL_FAIL;
    const char *passwd = nul2 + 1;
    size_t authzid_len = (size_t)(nul1 - p), authcid_len = (size_t)(nul2 - authcid);
    size_t passwd_len = len - (size_t)(passwd - p);
    set_login(s, authcid, authcid_len);
    /* RFC 4616 §2: exactly two NULs; authcid and passwd are non-empty. */
    if (memchr(passwd, '\0', passwd_len) || authcid_len == 0 || passwd_len == 0 ||
        authcid_len > AUTH_MAX_LOGIN || authzid_len > AUTH_MAX_LOGIN ||
        passwd_len > AUTH_MAX_PASSWORD)
        return AUTH_SASL_FAIL;
    char authcid_s[AUTH_MAX_LOGIN + 1];
    memcpy(authcid_s, authcid, authcid_len);
    authcid_s[authcid_len] = '\0';
    if (authzid_len > 0) {
        char authzid_s[AUTH_MAX_LOGIN + 1], a[AUTH_MAX_LOGIN + 1], b[AUTH_MAX_LOGIN + 1];
        memcpy(authzid_s, p, authzid_len);
        authzid_s[authzid_len] = '\0';
        int ra = auth_name_canonical(s->svc, authzid_s, a, sizeof a);
        int rb = auth_name_canonical(s->svc, authcid_s, b, sizeof b);
        if (ra < 0 || rb < 0)
            return AUTH_SASL_TEMPFAIL;
        if (ra == 0 || rb == 0 || strcmp(a, b) != 0) {
            s->is_done = true;
            return AUTH_SASL_FAIL;
        }
    }
    return finish_password(s, authcid_s, passwd);
}

/* ---- LOGIN ------------------------------------------------------------------------ */

static char *b64_str(const char *s)
{
    return util_base64_encode_str(s, strlen(s));
}

static enum auth_sasl_status step_login(struct auth_sasl *s, const struct buf *in,
                                        char **challenge_r)
{
    const char *p = in->data ? in->data : "";
    if (memchr(p, '\0', in->len))
        return AUTH_SASL_FAIL;
    if (s->state == 0) { /* the user name (initial response or first answer) */
        if (in->len > AUTH_MAX_LOGIN)
            return AUTH_SASL_FAIL;
        set_login(s, p, in->len);
        s->state = 1;
        *challenge_r = b64_str("Password:");
        return *challenge_r ? AUTH_SASL_CONTINUE : AUTH_SASL_TEMPFAIL;
    }
    if (in->len > AUTH_MAX_PASSWORD)
        return AUTH_SASL_FAIL;
    return finish_password(s, s->login, p);
}

/* ---- CRAM-MD5 (RFC 2195) ---------------------------------------------------------- */

static enum auth_sasl_status cram_challenge(struct auth_sasl *s, char **challenge_r)
{
    /* RFC 2195 §2: a presumptively arbitrary string, by convention <random.time@host>
     * in msg-id form (RFC 1939 APOP style), as Dovecot and the seed show. */
    unsigned long long rnd;
    RAND_bytes((unsigned char *)&rnd, sizeof rnd);
    char buf[400];
    snprintf(buf, sizeof buf, "<%llu.%lld@%s>", rnd % 100000000000000000ULL, (long long)time(NULL),
             s->hostname);
    s->challenge = strdup(buf);
    *challenge_r = s->challenge ? b64_str(buf) : NULL;
    s->state = 1;
    return *challenge_r ? AUTH_SASL_CONTINUE : AUTH_SASL_TEMPFAIL;
}

/* response = user SP 32 lower-case hex digits of HMAC-MD5(password, challenge). */
static enum auth_sasl_status step_cram(struct auth_sasl *s, const struct buf *in)
{
    const char *p = in->data ? in->data : "";
    s->is_done = true;
    if (memchr(p, '\0', in->len))
        return AUTH_SASL_FAIL;
    const char *sp = strrchr(p, ' ');
    if (!sp || sp == p || strlen(sp + 1) != 32)
        return AUTH_SASL_FAIL;
    set_login(s, p, (size_t)(sp - p));
    char addr[AUTH_MAX_LOGIN + 1];
    int rc = auth_name_canonical(s->svc, s->login, addr, sizeof addr);
    if (rc <= 0)
        return rc < 0 ? AUTH_SASL_TEMPFAIL : AUTH_SASL_FAIL;
    struct auth_cred_set cs;
    rc = auth_creds_load(s->svc, addr, &cs);
    if (rc <= 0)
        return rc < 0 ? AUTH_SASL_TEMPFAIL : AUTH_SASL_FAIL;
    unsigned char ctx[32], mac[16];
    bool have_ctx = false;
    const char *v = auth_creds_find(&cs, "CRAM-MD5");
    if (v && strlen(v) == 10 + 64) {
        have_ctx = true;
        for (int i = 0; i < 32 && have_ctx; i++) {
            unsigned hi, lo;
            if (sscanf(v + 10 + 2 * i, "%1x%1x", &hi, &lo) != 2)
                have_ctx = false;
            else
                ctx[i] = (unsigned char)(hi << 4 | lo);
        }
    }
    for (size_t i = 0; plaintext_schemes[i] && !have_ctx; i++) {
        const char *pw = auth_creds_find(&cs, plaintext_schemes[i]);
        if (pw) {
            pw = strchr(pw, '}') + 1;
            auth_cram_md5_context(pw, strlen(pw), ctx);
            have_ctx = true;
        }
    }
    enum auth_sasl_status st = AUTH_SASL_FAIL;
    if (have_ctx && cs.enabled) {
        auth_cram_md5_from_context(ctx, s->challenge, strlen(s->challenge), mac);
        char hex[33], theirs[33];
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", mac[i]);
        for (int i = 0; i < 32; i++) {
            char c = sp[1 + i];
            theirs[i] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
        }
        theirs[32] = '\0';
        if (CRYPTO_memcmp(hex, theirs, 32) == 0) {
            snprintf(s->user, sizeof s->user, "%s", cs.address);
            st = AUTH_SASL_OK;
        }
    }
    OPENSSL_cleanse(ctx, sizeof ctx);
    auth_creds_free(&cs);
    return st;
}

/* ---- SCRAM-SHA-256 (RFC 5802 §5, RFC 7677) ---------------------------------------- */

/* Decode a saslname (RFC 5802 §5.1: "=2C" is ',', "=3D" is '='). false on a bad escape. */
static bool saslname_decode(const char *in, size_t len, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '=') {
            if (len - i < 3)
                return false;
            if (in[i + 1] == '2' && in[i + 2] == 'C')
                c = ',';
            else if (in[i + 1] == '3' && in[i + 2] == 'D')
                c = '=';
            else
                return false;
            i += 2;
        } else if (c == ',' || c == '\0') {
            return false;
        }
        if (o + 1 >= size)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return o > 0;
}

/* Deterministic fake salt for an unknown user, so probing cannot tell users apart. */
static void scram_fake_keys(struct auth_sasl *s, const char *login)
{
    unsigned char mac[32];
    unsigned int n = 0;
    HMAC(EVP_sha256(), s->svc->fake_secret, sizeof s->svc->fake_secret,
         (const unsigned char *)login, strlen(login), mac, &n);
    memset(&s->keys, 0, sizeof s->keys);
    memcpy(s->keys.salt, mac, 16);
    s->keys.salt_len = 16;
    s->keys.iter = SCRAM_ITER_DEFAULT;
    s->keys.key_len = 32;
    s->is_fake = true;
}

/* Look up the user's SCRAM keys ({SCRAM-SHA-256}, else derived from {PLAIN}). */
static int scram_load_keys(struct auth_sasl *s)
{
    char addr[AUTH_MAX_LOGIN + 1];
    int rc = auth_name_canonical(s->svc, s->login, addr, sizeof addr);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        scram_fake_keys(s, s->login);
        return 0;
    }
    struct auth_cred_set cs;
    rc = auth_creds_load(s->svc, addr, &cs);
    if (rc < 0)
        return -1;
    bool ok = false;
    if (rc == 1 && cs.enabled) {
        const char *v = auth_creds_find(&cs, "SCRAM-SHA-256");
        if (v)
            ok = auth_scram_parse(strchr(v, '}') + 1, 32, &s->keys);
        for (size_t i = 0; plaintext_schemes[i] && !ok; i++) {
            const char *pw = auth_creds_find(&cs, plaintext_schemes[i]);
            if (!pw)
                continue;
            memset(&s->keys, 0, sizeof s->keys);
            s->keys.iter = SCRAM_ITER_DEFAULT;
            s->keys.salt_len = 16;
            RAND_bytes(s->keys.salt, 16);
            ok = auth_scram_derive(strchr(pw, '}') + 1, 32, &s->keys);
        }
        if (ok)
            snprintf(s->user, sizeof s->user, "%s", cs.address); /* reported only on OK */
    }
    if (rc == 1)
        auth_creds_free(&cs);
    if (!ok)
        scram_fake_keys(s, s->login);
    return 0;
}

/* client-first-message = gs2-header client-first-message-bare
 * gs2-header = gs2-cbind-flag "," [ authzid ] ","
 * client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions] */
static enum auth_sasl_status scram_client_first(struct auth_sasl *s, const struct buf *in,
                                                char **challenge_r)
{
    const char *p = in->data ? in->data : "";
    size_t len = in->len;
    if (memchr(p, '\0', len) || len < 3)
        return AUTH_SASL_FAIL;
    /* We advertise no -PLUS variant: "n" and "y" are fine, "p=" is not. */
    if (!(p[0] == 'n' || p[0] == 'y') || p[1] != ',')
        return AUTH_SASL_FAIL;
    const char *authzid = p + 2;
    const char *comma = strchr(authzid, ',');
    if (!comma)
        return AUTH_SASL_FAIL;
    char azid[AUTH_MAX_LOGIN + 1] = "";
    if (comma != authzid) {
        if (strncmp(authzid, "a=", 2) != 0 ||
            !saslname_decode(authzid + 2, (size_t)(comma - authzid - 2), azid, sizeof azid))
            return AUTH_SASL_FAIL;
    }
    const char *bare = comma + 1;
    s->gs2_header = strndup(p, (size_t)(bare - p));
    s->client_first_bare = strdup(bare);
    if (!s->gs2_header || !s->client_first_bare)
        return AUTH_SASL_TEMPFAIL;
    /* username */
    if (strncmp(bare, "n=", 2) != 0) /* includes "m=": no mandatory extensions known */
        return AUTH_SASL_FAIL;
    const char *uend = strchr(bare + 2, ',');
    if (!uend || !saslname_decode(bare + 2, (size_t)(uend - bare - 2), s->login, sizeof s->login))
        return AUTH_SASL_FAIL;
    set_login(s, s->login, strlen(s->login));
    if (strncmp(uend + 1, "r=", 2) != 0)
        return AUTH_SASL_FAIL;
    const char *cnonce = uend + 3;
    size_t cnonce_len = strcspn(cnonce, ",");
    if (cnonce_len == 0 || cnonce_len > 256)
        return AUTH_SASL_FAIL;
    for (size_t i = 0; i < cnonce_len; i++)
        if (cnonce[i] < 0x21 || cnonce[i] > 0x7e)
            return AUTH_SASL_FAIL;
    if (azid[0]) {
        /* No proxy authorization: authzid must be the user itself. */
        char a[AUTH_MAX_LOGIN + 1], b[AUTH_MAX_LOGIN + 1];
        int ra = auth_name_canonical(s->svc, azid, a, sizeof a);
        int rb = auth_name_canonical(s->svc, s->login, b, sizeof b);
        if (ra < 0 || rb < 0)
            return AUTH_SASL_TEMPFAIL;
        if (ra == 0 || rb == 0 || strcmp(a, b) != 0)
            return AUTH_SASL_FAIL;
    }
    if (scram_load_keys(s) < 0)
        return AUTH_SASL_TEMPFAIL;

    unsigned char rnd[18];
    RAND_bytes(rnd, sizeof rnd);
    char *snonce = util_base64_encode_str(rnd, sizeof rnd);
    char *salt = util_base64_encode_str(s->keys.salt, s->keys.salt_len);
    struct buf nonce, first;
    buf_init(&nonce, 1024);
    buf_init(&first, 2048);
    bool ok = snonce && salt && buf_append(&nonce, cnonce, cnonce_len) &&
              buf_append_str(&nonce, snonce) &&
              buf_printf(&first, "r=%s,s=%s,i=%u", nonce.data, salt, s->keys.iter);
    free(snonce);
    free(salt);
    if (!ok) {
        buf_free(&nonce);
        buf_free(&first);
        return AUTH_SASL_TEMPFAIL;
    }
    s->nonce = buf_steal(&nonce);
    s->challenge = buf_steal(&first);
    *challenge_r = b64_str(s->challenge);
    s->state = 1;
    return *challenge_r ? AUTH_SASL_CONTINUE : AUTH_SASL_TEMPFAIL;
}

/* client-final-message = channel-binding "," nonce ["," extensions] "," proof */
static enum auth_sasl_status scram_client_final(struct auth_sasl *s, const struct buf *in,
                                                char **challenge_r)
{
    const char *p = in->data ? in->data : "";
    s->is_done = true;
    if (memchr(p, '\0', in->len))
        return AUTH_SASL_FAIL;
    const char *proof = strstr(p, ",p=");
    if (!proof || strchr(proof + 3, ','))
        return AUTH_SASL_FAIL;
    size_t without_proof_len = (size_t)(proof - p);
    /* c= must be base64 of exactly the gs2 header the client sent (no channel binding). */
    if (strncmp(p, "c=", 2) != 0)
        return AUTH_SASL_FAIL;
    size_t cb_len = strcspn(p + 2, ",");
    struct buf cb, pr;
    buf_init(&cb, 1024);
    buf_init(&pr, 256);
    enum auth_sasl_status st = AUTH_SASL_FAIL;
    if (!util_base64_decode_lenient(p + 2, cb_len, &cb) || cb.len != strlen(s->gs2_header) ||
        memcmp(cb.data, s->gs2_header, cb.len) != 0)
        goto out;
    const char *r = p + 2 + cb_len;
    size_t nl = strlen(s->nonce);
    if (strncmp(r, ",r=", 3) != 0 || strncmp(r + 3, s->nonce, nl) != 0 || (r[3 + nl] != ','))
        goto out;
    if (!util_base64_decode_lenient(proof + 3, strlen(proof + 3), &pr) || pr.len != s->keys.key_len)
        goto out;

    /* AuthMessage = client-first-message-bare "," server-first-message ","
     *               client-final-message-without-proof */
    struct buf msg;
    buf_init(&msg, 8192);
    if (!buf_printf(&msg, "%s,%s,%.*s", s->client_first_bare, s->challenge, (int)without_proof_len,
                    p)) {
        buf_free(&msg);
        st = AUTH_SASL_TEMPFAIL;
        goto out;
    }
    const EVP_MD *md = EVP_sha256();
    unsigned char sig[32], client_key[32], stored[32], server_sig[32];
    unsigned int n = 0;
    HMAC(md, s->keys.stored_key, 32, (unsigned char *)msg.data, msg.len, sig, &n);
    for (int i = 0; i < 32; i++)
        client_key[i] = (unsigned char)pr.data[i] ^ sig[i];
    EVP_Digest(client_key, 32, stored, &n, md, NULL);
    bool match = CRYPTO_memcmp(stored, s->keys.stored_key, 32) == 0;
    if (match && !s->is_fake) {
        HMAC(md, s->keys.server_key, 32, (unsigned char *)msg.data, msg.len, server_sig, &n);
        char *v = util_base64_encode_str(server_sig, 32);
        struct buf fin;
        buf_init(&fin, 256);
        if (v && buf_printf(&fin, "v=%s", v)) {
            /* RFC 4422 §5 / RFC 4954 §4: SMTP and IMAP have no success-with-data, so the
             * server-final message goes out as one more challenge; the client answers
             * with an empty response and only then is the exchange OK. */
            *challenge_r = b64_str(fin.data);
            st = *challenge_r ? AUTH_SASL_CONTINUE : AUTH_SASL_TEMPFAIL;
            s->state = 2;
            s->is_done = false;
        } else {
            st = AUTH_SASL_TEMPFAIL;
        }
        free(v);
        buf_free(&fin);
    }
    OPENSSL_cleanse(client_key, sizeof client_key);
    buf_free(&msg);
out:
    if (st != AUTH_SASL_CONTINUE)
        s->user[0] = '\0';
    buf_free(&cb);
    buf_free(&pr);
    return st;
}

/* ---- dispatch --------------------------------------------------------------------- */

enum auth_sasl_status auth_sasl_step(struct auth_sasl *s, const char *response_b64,
                                     char **challenge_r)
{
    *challenge_r = NULL;
    if (s->is_done)
        return AUTH_SASL_FAIL;
    if (s->svc->remote) {
        struct auth_peer peer = {.service = s->peer_service,
                                 .ip = s->peer_ip,
                                 .is_tls = s->peer_is_tls,
                                 .is_loopback = s->peer_is_loopback};
        enum auth_sasl_status st = auth_remote_sasl_step(
            s->svc, &s->remote_id, s->name, s->hostname, &peer,
            s->binding[0] ? s->binding : NULL, response_b64, challenge_r, s->user,
            sizeof s->user, s->login, sizeof s->login, s->token);
        if (st != AUTH_SASL_CONTINUE)
            s->is_done = true; /* the auth process ended its half */
        return st;
    }
    bool is_first = s->state == 0 && !s->challenge;
    if (response_b64 && strcmp(response_b64, "*") == 0) {
        s->is_done = true; /* RFC 4954 §4: the client cancelled */
        return AUTH_SASL_FAIL;
    }
    /* No data yet: mechanisms where the client speaks first get an empty challenge. */
    if (!response_b64 && is_first) {
        switch (s->mech) {
        case MECH_LOGIN:
            *challenge_r = b64_str("Username:");
            s->challenge = strdup("Username:"); /* marks the prompt as sent */
            return *challenge_r && s->challenge ? AUTH_SASL_CONTINUE : AUTH_SASL_TEMPFAIL;
        case MECH_CRAM_MD5:
            return cram_challenge(s, challenge_r);
        case MECH_PLAIN:
        case MECH_SCRAM_SHA_256:
            *challenge_r = strdup("");
            s->challenge = strdup(""); /* marks the empty challenge as sent */
            return *challenge_r && s->challenge ? AUTH_SASL_CONTINUE : AUTH_SASL_TEMPFAIL;
        }
    }
    if (!response_b64) {
        s->is_done = true;
        return AUTH_SASL_FAIL;
    }
    struct buf in;
    buf_init(&in, SASL_MAX_RESPONSE);
    /* RFC 4954 §4: "=" is an empty initial response. */
    bool ok = strcmp(response_b64, "=") == 0 ||
              util_base64_decode_lenient(response_b64, strlen(response_b64), &in);
    if (!ok) {
        buf_free(&in);
        s->is_done = true;
        return AUTH_SASL_FAIL;
    }
    enum auth_sasl_status st = AUTH_SASL_FAIL;
    switch (s->mech) {
    case MECH_PLAIN:
        st = step_plain(s, &in);
        s->is_done = true;
        break;
    case MECH_LOGIN:
        st = step_login(s, &in, challenge_r);
        break;
    case MECH_CRAM_MD5:
        if (is_first) { /* server speaks first: an initial response is a protocol error */
            if (in.len == 0) {
                st = cram_challenge(s, challenge_r);
                break;
            }
            s->is_done = true;
            break;
        }
        st = step_cram(s, &in);
        break;
    case MECH_SCRAM_SHA_256:
        if (s->state == 0) {
            free(s->challenge);
            s->challenge = NULL;
            st = scram_client_first(s, &in, challenge_r);
        } else if (s->state == 1) {
            st = scram_client_final(s, &in, challenge_r);
        } else {
            /* The empty answer to our server-final message. */
            st = in.len == 0 ? AUTH_SASL_OK : AUTH_SASL_FAIL;
        }
        break;
    }
    if (in.data)
        OPENSSL_cleanse(in.data, in.len);
    buf_free(&in);
    if (st != AUTH_SASL_CONTINUE) {
        s->is_done = true;
        if (st != AUTH_SASL_OK)
            s->user[0] = '\0';
    }
    return st;
}
