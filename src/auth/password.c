/*
 * password.c - Dovecot-compatible password schemes: "{SCHEME}data" strings as
 * `doveadm pw` writes them, so an existing Dovecot user table can be imported as is.
 *
 * Supported: ARGON2ID, ARGON2I (libargon2 encoded form), SHA512-CRYPT, SHA256-CRYPT,
 * BLF-CRYPT, MD5-CRYPT, CRYPT (any crypt(3) hash, libxcrypt), SCRAM-SHA-256, SCRAM-SHA-1
 * ("iter,salt,storedkey,serverkey" in base64, RFC 5802 §3 keys of the SASLprep'd
 * password, see scram_normalize), CRAM-MD5 (Dovecot's
 * 32-byte HMAC-MD5 context in hex), PLAIN/CLEAR, PLAIN-MD5, SHA/SHA1, SHA256, SHA512,
 * SSHA, SSHA256, SSHA512. Digest schemes accept Dovecot's ".HEX"/".B64" suffix.
 *
 * Every comparison of secret-derived bytes is constant time (CRYPTO_memcmp).
 * Thread rules: pure functions, any thread; all of them BLOCKING (slow hashes).
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* MD5_CTX: CRAM-MD5 contexts resume a raw MD5 state */

#include "auth/auth_internal.h"
#include "core/config.h"
#include "core/util.h"

#include <argon2.h>
#include <crypt.h>
#include <errno.h>
#include <gsasl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/md5.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Dovecot's defaults, so hashes look like `doveadm pw` output. */
#define ARGON2ID_T  3
#define ARGON2ID_M  65536
#define ARGON2I_T   4
#define ARGON2I_M   32768
#define ARGON2_SALT 16
#define ARGON2_HASH 32
#define SCRAM_ITER  4096
#define SCRAM_SALT  16
#define SSHA_SALT   8

enum scheme_kind {
    KIND_ARGON2,
    KIND_CRYPT,
    KIND_SCRAM,
    KIND_CRAM_MD5,
    KIND_PLAIN,
    KIND_DIGEST, /* H(password) */
    KIND_SALTED, /* H(password || salt) || salt, base64 */
};

enum digest_encoding { ENC_B64, ENC_HEX };

struct scheme {
    const char *name;
    enum scheme_kind kind;
    const char *digest;       /* OpenSSL digest name for DIGEST/SALTED/SCRAM */
    const char *crypt_prefix; /* crypt_gensalt prefix; NULL = libxcrypt's default */
    enum digest_encoding enc; /* default encoding of DIGEST schemes */
    int argon2_type;
};

static const struct scheme schemes[] = {
    {"ARGON2ID", KIND_ARGON2, NULL, NULL, ENC_B64, Argon2_id},
    {"ARGON2I", KIND_ARGON2, NULL, NULL, ENC_B64, Argon2_i},
    {"SHA512-CRYPT", KIND_CRYPT, NULL, "$6$", ENC_B64, 0},
    {"SHA256-CRYPT", KIND_CRYPT, NULL, "$5$", ENC_B64, 0},
    {"BLF-CRYPT", KIND_CRYPT, NULL, "$2y$", ENC_B64, 0},
    {"MD5-CRYPT", KIND_CRYPT, NULL, "$1$", ENC_B64, 0},
    {"MD5", KIND_CRYPT, NULL, "$1$", ENC_B64, 0}, /* Dovecot: MD5 means MD5-CRYPT */
    {"CRYPT", KIND_CRYPT, NULL, NULL, ENC_B64, 0},
    {"SCRAM-SHA-256", KIND_SCRAM, "SHA256", NULL, ENC_B64, 0},
    {"SCRAM-SHA-1", KIND_SCRAM, "SHA1", NULL, ENC_B64, 0},
    {"CRAM-MD5", KIND_CRAM_MD5, NULL, NULL, ENC_HEX, 0},
    {"PLAIN", KIND_PLAIN, NULL, NULL, ENC_B64, 0},
    {"CLEAR", KIND_PLAIN, NULL, NULL, ENC_B64, 0},
    {"CLEARTEXT", KIND_PLAIN, NULL, NULL, ENC_B64, 0},
    {"PLAIN-MD5", KIND_DIGEST, "MD5", NULL, ENC_HEX, 0},
    {"LDAP-MD5", KIND_DIGEST, "MD5", NULL, ENC_B64, 0},
    {"SHA", KIND_DIGEST, "SHA1", NULL, ENC_B64, 0},
    {"SHA1", KIND_DIGEST, "SHA1", NULL, ENC_B64, 0},
    {"SHA256", KIND_DIGEST, "SHA256", NULL, ENC_B64, 0},
    {"SHA512", KIND_DIGEST, "SHA512", NULL, ENC_B64, 0},
    {"SSHA", KIND_SALTED, "SHA1", NULL, ENC_B64, 0},
    {"SSHA256", KIND_SALTED, "SHA256", NULL, ENC_B64, 0},
    {"SSHA512", KIND_SALTED, "SHA512", NULL, ENC_B64, 0},
};

/* Find a scheme by name; "NAME.HEX" / "NAME.B64" pick the encoding of digest schemes,
 * "NAME.B64" marks a base64-encoded crypt string (*is_crypt_b64_r). */
static const struct scheme *scheme_find_ext(const char *name, size_t len, enum digest_encoding *enc_r,
                                            bool *is_crypt_b64_r)
{
    size_t base_len = len;
    const char *dot = memchr(name, '.', len);
    bool has_enc = false;
    enum digest_encoding enc = ENC_B64;
    *is_crypt_b64_r = false;
    if (dot) {
        base_len = (size_t)(dot - name);
        size_t elen = len - base_len - 1;
        if (elen == 3 && strncasecmp(dot + 1, "HEX", 3) == 0)
            enc = ENC_HEX;
        else if ((elen == 3 && strncasecmp(dot + 1, "B64", 3) == 0) ||
                 (elen == 6 && strncasecmp(dot + 1, "BASE64", 6) == 0))
            enc = ENC_B64;
        else
            return NULL;
        has_enc = true;
    }
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        if (strlen(schemes[i].name) == base_len &&
            strncasecmp(schemes[i].name, name, base_len) == 0) {
            if (has_enc && schemes[i].kind == KIND_CRYPT && enc == ENC_B64)
                *is_crypt_b64_r = true;
            else if (has_enc && schemes[i].kind != KIND_DIGEST)
                return NULL;
            *enc_r = has_enc ? enc : schemes[i].enc;
            return &schemes[i];
        }
    }
    return NULL;
}

static const struct scheme *scheme_find(const char *name, size_t len, enum digest_encoding *enc_r)
{
    bool is_crypt_b64;
    return scheme_find_ext(name, len, enc_r, &is_crypt_b64);
}

bool auth_password_scheme_is_known(const char *name)
{
    enum digest_encoding enc;
    return name && *name && scheme_find(name, strlen(name), &enc) != NULL;
}

bool auth_password_scheme_of(const char *stored, char *out, size_t size)
{
    enum digest_encoding enc;
    const char *close = stored && stored[0] == '{' ? strchr(stored, '}') : NULL;
    size_t len = close ? (size_t)(close - stored - 1) : 0;
    if (!close || len == 0 || len >= size || !scheme_find(stored + 1, len, &enc))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = stored[1 + i];
        out[i] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
    }
    out[len] = '\0';
    return true;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode exactly out_len bytes of hex; false on any other length or a bad digit. */
static bool hex_decode(const char *s, size_t len, unsigned char *out, size_t out_len)
{
    if (len != out_len * 2)
        return false;
    for (size_t i = 0; i < out_len; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

static void hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

/* One-shot digest; returns the digest length or 0. */
static size_t digest_of(const char *md_name, const void *a, size_t alen, const void *b, size_t blen,
                        unsigned char out[EVP_MAX_MD_SIZE])
{
    const EVP_MD *md = EVP_get_digestbyname(md_name);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    bool ok =
        md && ctx && EVP_DigestInit_ex(ctx, md, NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
        (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) && EVP_DigestFinal_ex(ctx, out, &n) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? n : 0;
}

/* ---- CRAM-MD5 contexts ------------------------------------------------------------ */

/* MD5 state after one 64-byte block, written as four little-endian words (Dovecot's
 * hmac_md5_get_cram_context order). */
static void md5_block_state(const unsigned char block[64], unsigned char out[16])
{
    MD5_CTX c;
    MD5_Init(&c);
    MD5_Update(&c, block, 64);
    const MD5_LONG words[4] = {c.A, c.B, c.C, c.D};
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (unsigned char)(words[i] & 0xff);
        out[4 * i + 1] = (unsigned char)(words[i] >> 8 & 0xff);
        out[4 * i + 2] = (unsigned char)(words[i] >> 16 & 0xff);
        out[4 * i + 3] = (unsigned char)(words[i] >> 24 & 0xff);
    }
}

/* RFC 2104: HMAC keys longer than the block are hashed first. Context = outer state
 * (opad block) then inner state (ipad block), as Dovecot stores it. */
void auth_cram_md5_context(const char *password, size_t len, unsigned char ctx_r[32])
{
    unsigned char key[64] = {0}, ipad[64], opad[64];
    if (len > 64)
        MD5((const unsigned char *)password, len, key);
    else
        memcpy(key, password, len);
    for (int i = 0; i < 64; i++) {
        ipad[i] = key[i] ^ 0x36;
        opad[i] = key[i] ^ 0x5c;
    }
    md5_block_state(opad, ctx_r);
    md5_block_state(ipad, ctx_r + 16);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(ipad, sizeof ipad);
    OPENSSL_cleanse(opad, sizeof opad);
}

/* Resume an MD5 from a saved one-block state, hash msg, finish. */
static void md5_resume(const unsigned char state[16], const void *msg, size_t len,
                       unsigned char out[16])
{
    MD5_CTX c;
    MD5_Init(&c);
    MD5_LONG w[4];
    for (int i = 0; i < 4; i++)
        w[i] = (MD5_LONG)state[4 * i] | (MD5_LONG)state[4 * i + 1] << 8 |
               (MD5_LONG)state[4 * i + 2] << 16 | (MD5_LONG)state[4 * i + 3] << 24;
    c.A = w[0];
    c.B = w[1];
    c.C = w[2];
    c.D = w[3];
    c.Nl = 512; /* one 64-byte block already consumed */
    c.Nh = 0;
    c.num = 0;
    MD5_Update(&c, msg, len);
    MD5_Final(out, &c);
}

void auth_cram_md5_from_context(const unsigned char ctx[32], const void *msg, size_t len,
                                unsigned char out_r[16])
{
    unsigned char inner[16];
    md5_resume(ctx + 16, msg, len, inner);
    md5_resume(ctx, inner, sizeof inner, out_r);
}

/* ---- SCRAM keys (RFC 5802 §3) ----------------------------------------------------- */

static const char *scram_md(size_t digest_len)
{
    return digest_len == 20 ? "SHA1" : "SHA256";
}

/* The RFC 5802 §3 keys from the password bytes exactly as given. */
static bool scram_derive_bytes(const char *password, size_t digest_len, struct auth_scram_keys *k)
{
    const EVP_MD *md = EVP_get_digestbyname(scram_md(digest_len));
    unsigned char salted[64], client_key[64];
    unsigned int n = 0;
    if (!md || k->iter == 0 || digest_len > sizeof salted)
        return false;
    if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), k->salt, (int)k->salt_len, (int)k->iter,
                          md, (int)digest_len, salted) != 1)
        return false;
    bool ok = HMAC(md, salted, (int)digest_len, (const unsigned char *)"Client Key", 10, client_key,
                   &n) != NULL &&
              digest_of(scram_md(digest_len), client_key, digest_len, NULL, 0, k->stored_key) ==
                  digest_len &&
              HMAC(md, salted, (int)digest_len, (const unsigned char *)"Server Key", 10,
                   k->server_key, &n) != NULL;
    k->key_len = digest_len;
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return ok;
}

static void scram_normalized_free(char *prepped)
{
    if (prepped) {
        OPENSSL_cleanse(prepped, strlen(prepped));
        gsasl_free(prepped);
    }
}

/*
 * RFC 5802 §2.2 Normalize(): SASLprep (RFC 4013) of the password, as a query string
 * (unassigned code points allowed), so that "IX", "I<U+00AD>X" and "<U+2168>" make the
 * same keys on our side as in any client that follows the RFC. Returns the prepared
 * string (malloc'd; the caller cleanses and frees it) or NULL: the password is used as it
 * is. That is the case for all-ASCII passwords (SASLprep maps printable ASCII to itself
 * and refuses control characters, so skipping it keeps ASCII byte-identical, as `doveadm
 * pw` hashes it) and, as PostgreSQL does, for passwords SASLprep refuses (not UTF-8,
 * prohibited characters) or empties: such a password still works, byte for byte.
 */
static char *scram_normalize(const char *password)
{
    bool is_ascii = true;
    for (const unsigned char *p = (const unsigned char *)password; *p && is_ascii; p++)
        is_ascii = *p < 0x80;
    if (is_ascii)
        return NULL;
    char *prepped = NULL;
    int stringprep_rc = 0;
    if (gsasl_saslprep(password, GSASL_ALLOW_UNASSIGNED, &prepped, &stringprep_rc) != GSASL_OK)
        return NULL;
    if (prepped && (prepped[0] == '\0' || strcmp(prepped, password) == 0)) {
        scram_normalized_free(prepped);
        return NULL;
    }
    return prepped;
}

bool auth_scram_derive(const char *password, size_t digest_len, struct auth_scram_keys *k)
{
    char *prepped = scram_normalize(password);
    bool ok = scram_derive_bytes(prepped ? prepped : password, digest_len, k);
    scram_normalized_free(prepped);
    return ok;
}

/* "4096,salt_b64,storedkey_b64,serverkey_b64" (Dovecot's SCRAM format). */
bool auth_scram_parse(const char *data, size_t digest_len, struct auth_scram_keys *k)
{
    char *copy = strdup(data);
    if (!copy)
        return false;
    char *save = NULL;
    char *f[4];
    int nf = 0;
    for (char *t = strtok_r(copy, ",", &save); t && nf < 4; t = strtok_r(NULL, ",", &save))
        f[nf++] = t;
    bool ok = false;
    struct buf b;
    buf_init(&b, 256);
    memset(k, 0, sizeof *k);
    if (nf != 4 || strtok_r(NULL, ",", &save) != NULL)
        goto out;
    char *end;
    errno = 0;
    unsigned long iter = strtoul(f[0], &end, 10);
    if (errno || *end || iter < 1 || iter > 10000000)
        goto out;
    k->iter = (unsigned)iter;
    if (!util_base64_decode_lenient(f[1], strlen(f[1]), &b) || b.len == 0 || b.len > sizeof k->salt)
        goto out;
    memcpy(k->salt, b.data, b.len);
    k->salt_len = b.len;
    buf_reset(&b);
    if (!util_base64_decode_lenient(f[2], strlen(f[2]), &b) || b.len != digest_len)
        goto out;
    memcpy(k->stored_key, b.data, b.len);
    buf_reset(&b);
    if (!util_base64_decode_lenient(f[3], strlen(f[3]), &b) || b.len != digest_len)
        goto out;
    memcpy(k->server_key, b.data, b.len);
    k->key_len = digest_len;
    ok = true;
out:
    buf_free(&b);
    free(copy);
    return ok;
}

/* ---- verify ----------------------------------------------------------------------- */

static int verify_crypt(const char *data, const char *password)
{
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return -1;
    const char *out = crypt_r(password, data, cd);
    int rc;
    if (!out || out[0] == '*')
        rc = -1; /* unsupported or malformed setting */
    else
        rc = strlen(out) == strlen(data) && CRYPTO_memcmp(out, data, strlen(data)) == 0;
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    return rc;
}

/* 1 when password makes the stored keys, 0 when not, -1 on error. */
static int scram_keys_match(const struct auth_scram_keys *stored, const char *password,
                            size_t digest_len)
{
    struct auth_scram_keys mine = *stored;
    int rc = -1;
    if (scram_derive_bytes(password, digest_len, &mine))
        rc = CRYPTO_memcmp(mine.stored_key, stored->stored_key, digest_len) == 0 &&
             CRYPTO_memcmp(mine.server_key, stored->server_key, digest_len) == 0;
    OPENSSL_cleanse(&mine, sizeof mine);
    return rc;
}

static int verify_scram(const char *data, size_t digest_len, const char *password)
{
    struct auth_scram_keys stored;
    if (!auth_scram_parse(data, digest_len, &stored))
        return -1;
    /* Keys of the SASLprep'd password (ours, RFC 5802 clients'), else of the bytes as
     * typed: `doveadm pw` does not SASLprep, and its hashes must keep working. */
    char *prepped = scram_normalize(password);
    int rc = scram_keys_match(&stored, prepped ? prepped : password, digest_len);
    if (rc == 0 && prepped)
        rc = scram_keys_match(&stored, password, digest_len);
    scram_normalized_free(prepped);
    return rc;
}

/* Decode a digest value. Base64 is the default, but Dovecot also takes hex when the
 * length says so (PLAIN-MD5 is commonly stored either way). */
static bool digest_decode(const char *data, enum digest_encoding enc, struct buf *out,
                          size_t want_len)
{
    size_t len = strlen(data);
    if (enc == ENC_HEX || len == want_len * 2) {
        if (buf_reserve(out, want_len) &&
            hex_decode(data, len, (unsigned char *)out->data, want_len)) {
            out->len = want_len;
            out->data[want_len] = '\0';
            return true;
        }
        if (enc == ENC_HEX)
            return false;
    }
    return util_base64_decode_lenient(data, len, out);
}

int auth_password_verify(const char *stored, const char *password)
{
    if (!stored || !password || strlen(password) > AUTH_MAX_PASSWORD)
        return -1;
    const char *data = stored;
    const struct scheme *sc = NULL;
    enum digest_encoding enc = ENC_B64;
    bool is_crypt_b64 = false;
    if (stored[0] == '{') {
        const char *close = strchr(stored, '}');
        if (!close)
            return -1;
        sc = scheme_find_ext(stored + 1, (size_t)(close - stored - 1), &enc, &is_crypt_b64);
        data = close + 1;
    } else if (stored[0] == '$') {
        sc = scheme_find("CRYPT", 5, &enc); /* bare crypt(3) string */
    }
    if (!sc)
        return -1;

    unsigned char a[EVP_MAX_MD_SIZE];
    int rc = -1;
    struct buf b;
    buf_init(&b, 1024);
    switch (sc->kind) {
    case KIND_ARGON2: {
        const char *want = sc->argon2_type == Argon2_id ? "$argon2id$" : "$argon2i$";
        if (strncmp(data, want, strlen(want)) != 0)
            break;
        int r = argon2_verify(data, password, strlen(password), (argon2_type)sc->argon2_type);
        rc = r == ARGON2_OK ? 1 : r == ARGON2_VERIFY_MISMATCH ? 0 : -1;
        break;
    }
    case KIND_CRYPT:
        if (!is_crypt_b64) {
            rc = verify_crypt(data, password);
        } else if (util_base64_decode(data, strlen(data), &b) && b.len > 0 &&
                   !memchr(b.data, '\0', b.len)) {
            rc = verify_crypt(b.data, password);
        }
        break;
    case KIND_SCRAM:
        rc = verify_scram(data, strcmp(sc->digest, "SHA1") == 0 ? 20 : 32, password);
        break;
    case KIND_CRAM_MD5: {
        unsigned char want[32], have[32];
        if (!hex_decode(data, strlen(data), want, sizeof want))
            break;
        auth_cram_md5_context(password, strlen(password), have);
        rc = CRYPTO_memcmp(want, have, sizeof want) == 0;
        break;
    }
    case KIND_PLAIN: {
        /* Compare digests so the time does not depend on where the strings differ. */
        unsigned char h1[EVP_MAX_MD_SIZE], h2[EVP_MAX_MD_SIZE];
        size_t n1 = digest_of("SHA256", data, strlen(data), NULL, 0, h1);
        size_t n2 = digest_of("SHA256", password, strlen(password), NULL, 0, h2);
        if (n1 == 0 || n1 != n2)
            break;
        rc = CRYPTO_memcmp(h1, h2, n1) == 0;
        break;
    }
    case KIND_DIGEST: {
        size_t n = digest_of(sc->digest, password, strlen(password), NULL, 0, a);
        if (n == 0 || !digest_decode(data, enc, &b, n) || b.len != n)
            break;
        rc = CRYPTO_memcmp(a, b.data, n) == 0;
        break;
    }
    case KIND_SALTED: {
        const EVP_MD *md = EVP_get_digestbyname(sc->digest);
        size_t n = md ? (size_t)EVP_MD_get_size(md) : 0;
        if (n == 0 || !util_base64_decode_lenient(data, strlen(data), &b) || b.len <= n)
            break;
        if (digest_of(sc->digest, password, strlen(password), b.data + n, b.len - n, a) != n)
            break;
        rc = CRYPTO_memcmp(a, b.data, n) == 0;
        break;
    }
    }
    buf_free(&b);
    OPENSSL_cleanse(a, sizeof a);
    return rc;
}

/* ---- hash ------------------------------------------------------------------------- */

static void set_error(char **error_r, const char *msg)
{
    if (error_r)
        *error_r = strdup(msg);
}

static int hash_crypt(const struct scheme *sc, const char *password, struct buf *out,
                      char **error_r)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    unsigned char rnd[32];
    RAND_bytes(rnd, sizeof rnd);
    if (!crypt_gensalt_rn(sc->crypt_prefix, 0, (const char *)rnd, sizeof rnd, setting,
                          sizeof setting)) {
        set_error(error_r, "crypt_gensalt failed (scheme not supported by libcrypt?)");
        return -1;
    }
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd) {
        set_error(error_r, "out of memory");
        return -1;
    }
    const char *h = crypt_r(password, setting, cd);
    int rc = 0;
    if (!h || h[0] == '*') {
        set_error(error_r, "crypt failed");
        rc = -1;
    } else {
        buf_append_str(out, h);
    }
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    return rc;
}

void auth_hash_cost_from_config(const struct config *cfg, struct auth_hash_cost *cost_r)
{
    cost_r->argon2_rounds = cfg->auth_argon2_rounds;
    cost_r->argon2_memory_kib = (uint32_t)(cfg->auth_argon2_memory / 1024);
}

static int hash_argon2(const struct scheme *sc, const char *password,
                       const struct auth_hash_cost *cost, struct buf *out, char **error_r)
{
    uint32_t t = sc->argon2_type == Argon2_id ? ARGON2ID_T : ARGON2I_T;
    uint32_t m = sc->argon2_type == Argon2_id ? ARGON2ID_M : ARGON2I_M;
    if (cost && cost->argon2_rounds)
        t = cost->argon2_rounds;
    if (cost && cost->argon2_memory_kib)
        m = cost->argon2_memory_kib;
    unsigned char salt[ARGON2_SALT];
    char encoded[256];
    RAND_bytes(salt, sizeof salt);
    int r = argon2_hash(t, m, 1, password, strlen(password), salt, sizeof salt, NULL, ARGON2_HASH,
                        encoded, sizeof encoded, (argon2_type)sc->argon2_type, ARGON2_VERSION_13);
    if (r != ARGON2_OK) {
        set_error(error_r, argon2_error_message(r));
        return -1;
    }
    buf_append_str(out, encoded);
    return 0;
}

static int hash_scram(const struct scheme *sc, const char *password, struct buf *out)
{
    size_t dl = strcmp(sc->digest, "SHA1") == 0 ? 20 : 32;
    struct auth_scram_keys k = {.iter = SCRAM_ITER, .salt_len = SCRAM_SALT};
    RAND_bytes(k.salt, SCRAM_SALT);
    if (!auth_scram_derive(password, dl, &k))
        return -1;
    char *s = util_base64_encode_str(k.salt, k.salt_len);
    char *st = util_base64_encode_str(k.stored_key, dl);
    char *sv = util_base64_encode_str(k.server_key, dl);
    bool ok = s && st && sv && buf_printf(out, "%u,%s,%s,%s", k.iter, s, st, sv);
    free(s);
    free(st);
    free(sv);
    return ok ? 0 : -1;
}

int auth_password_hash(const char *scheme, const char *password,
                       const struct auth_hash_cost *cost, char **hash_r, char **error_r)
{
    enum digest_encoding enc;
    bool is_crypt_b64 = false;
    const struct scheme *sc =
        scheme ? scheme_find_ext(scheme, strlen(scheme), &enc, &is_crypt_b64) : NULL;
    *hash_r = NULL;
    if (!sc) {
        set_error(error_r, "unknown password scheme");
        return -1;
    }
    if (!password || strlen(password) > AUTH_MAX_PASSWORD) {
        set_error(error_r, "password too long");
        return -1;
    }
    struct buf out;
    buf_init(&out, 4096);
    buf_printf(&out, "{%s}", scheme);
    for (char *p = out.data; *p; p++) /* scheme names are upper case */
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    int rc = 0;
    unsigned char d[EVP_MAX_MD_SIZE + SSHA_SALT];
    switch (sc->kind) {
    case KIND_ARGON2:
        rc = hash_argon2(sc, password, cost, &out, error_r);
        break;
    case KIND_CRYPT:
        if (!is_crypt_b64) {
            rc = hash_crypt(sc, password, &out, error_r);
        } else {
            struct buf plain;
            buf_init(&plain, 1024);
            rc = hash_crypt(sc, password, &plain, error_r);
            char *b64 = rc == 0 ? util_base64_encode_str(plain.data, plain.len) : NULL;
            if (rc == 0 && (!b64 || !buf_append_str(&out, b64)))
                rc = -1;
            free(b64);
            buf_free(&plain);
        }
        break;
    case KIND_SCRAM:
        rc = hash_scram(sc, password, &out);
        if (rc < 0)
            set_error(error_r, "SCRAM key derivation failed");
        break;
    case KIND_CRAM_MD5: {
        unsigned char ctx[32];
        char hex[65];
        auth_cram_md5_context(password, strlen(password), ctx);
        hex_encode(ctx, sizeof ctx, hex);
        buf_append_str(&out, hex);
        break;
    }
    case KIND_PLAIN:
        buf_append_str(&out, password);
        break;
    case KIND_DIGEST: {
        size_t n = digest_of(sc->digest, password, strlen(password), NULL, 0, d);
        if (enc == ENC_HEX) {
            char hex[2 * EVP_MAX_MD_SIZE + 1];
            hex_encode(d, n, hex);
            buf_append_str(&out, hex);
        } else {
            char *s = util_base64_encode_str(d, n);
            rc = s && buf_append_str(&out, s) ? 0 : -1;
            free(s);
        }
        break;
    }
    case KIND_SALTED: {
        unsigned char salt[SSHA_SALT];
        RAND_bytes(salt, sizeof salt);
        size_t n = digest_of(sc->digest, password, strlen(password), salt, sizeof salt, d);
        memcpy(d + n, salt, sizeof salt);
        char *s = util_base64_encode_str(d, n + sizeof salt);
        rc = s && buf_append_str(&out, s) ? 0 : -1;
        free(s);
        break;
    }
    }
    OPENSSL_cleanse(d, sizeof d);
    if (rc < 0) {
        if (error_r && !*error_r)
            set_error(error_r, "hashing failed");
        buf_free(&out);
        return -1;
    }
    *hash_r = buf_steal(&out);
    return 0;
}

/* ---- credential sets -------------------------------------------------------------- */

/* Relative cost of verifying one credential: cheapest first. */
static int verify_cost(const char *stored)
{
    enum digest_encoding enc;
    const struct scheme *sc = NULL;
    const char *close = stored[0] == '{' ? strchr(stored, '}') : NULL;
    if (close)
        sc = scheme_find(stored + 1, (size_t)(close - stored - 1), &enc);
    if (!sc)
        return 9;
    switch (sc->kind) {
    case KIND_PLAIN:
        return 0;
    case KIND_CRAM_MD5:
    case KIND_DIGEST:
    case KIND_SALTED:
        return 1;
    case KIND_SCRAM:
        return 2;
    case KIND_CRYPT:
        return 3;
    case KIND_ARGON2:
        return 4;
    }
    return 9;
}

/* Every credential of a user is derived from the same password by `tern user add` /
 * `passwd`, so any one of them answers "is this the password?". Verify against the
 * cheapest: a login then costs microseconds when a {PLAIN} or {SCRAM} row exists, and the
 * slow hash only when it is all there is. A malformed credential is skipped so one bad
 * row does not lock a user out. */
int auth_creds_verify(const struct auth_cred_set *cs, const char *password)
{
    bool tried[16] = {false};
    int last = -1;
    for (size_t round = 0; round < cs->n; round++) {
        size_t best = cs->n;
        for (size_t i = 0; i < cs->n; i++)
            if (!tried[i] &&
                (best == cs->n || verify_cost(cs->value[i]) < verify_cost(cs->value[best])))
                best = i;
        if (best == cs->n)
            break;
        tried[best] = true;
        int rc = auth_password_verify(cs->value[best], password);
        if (rc >= 0)
            return rc;
        last = rc;
    }
    return last;
}
