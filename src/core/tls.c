/*
 * tls.c - the server's OpenSSL 3 context (see tls.h): TLS 1.2 minimum, certificate and
 * key from files, a self-signed pair generated on first start, reload on SIGHUP.
 *
 * SNI (RFC 6066 §3): besides the default pair, tls.sni_certs may name more certificates
 * (each "CERT" with its key inside, or "CERT:KEY"); a client that names a host one of
 * them is valid for (subjectAltName or CN, wildcards as X509_check_host allows) gets
 * that one, every other client the default. The MTA-STS listener needs this: its
 * clients ask for mta-sts.<domain>, which the mail host's certificate rarely names.
 * Each extra certificate has a context of its own; the set hangs off the default
 * context as ex_data and is freed with it, so a reload swaps them all at once.
 *
 * The generated certificate is what a fresh install needs to offer STARTTLS and the
 * implicit-TLS ports at once (DESIGN §1): RSA 2048, SHA-256, X.509 v3, CN and
 * subjectAltName DNS = hostname, valid 10 years. The key file is created 0600 with
 * O_EXCL and written before the certificate, each fsync'd and renamed into place so a
 * crash never leaves a certificate without its key.
 */
#include "core/tls.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static SSL_CTX *tls_ctx;
static char *tls_cert_path, *tls_key_path, *tls_hostname;
static char **tls_sni_items; /* "CERT" or "CERT:KEY", as configured */
static size_t tls_n_sni;

/* The extra certificates of one default context (see the file comment). */
struct tls_sni_set {
    size_t n;
    SSL_CTX *ctx[TLS_SNI_MAX];
};
static int tls_sni_index = -1;
static pthread_once_t tls_sni_once = PTHREAD_ONCE_INIT;

/* "reason: <first OpenSSL error>" into a malloc'd string. */
static char *tls_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *tls_error(const char *fmt, ...)
{
    char what[512], ssl[256] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, ssl, sizeof ssl);
    ERR_clear_error();
    size_t n = strlen(what) + strlen(ssl) + 3;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s%s%s", what, ssl[0] ? ": " : "", ssl);
    return out;
}

static int tls_mkdir_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0;
    char dir[4096];
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir)
        return -1;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return util_mkdir_p(dir, 0755);
}

/* Write a PEM object to path via a temporary file, fsync'd, mode as given. */
static int tls_write_pem(const char *path, unsigned mode, EVP_PKEY *key, X509 *cert)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= sizeof tmp)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    int ok =
        key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
    if (!ok || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        unlink(tmp);
        return -1;
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return util_fsync_dir_of(path);
}

static bool tls_add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return false;
    bool ok = X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/* Generate a self-signed certificate and key for hostname. */
static int tls_generate(const char *cert_path, const char *key_path, const char *hostname,
                        char **error_r)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    int rc = -1;
    if (tls_mkdir_parent(cert_path) < 0 || tls_mkdir_parent(key_path) < 0) {
        *error_r = tls_error("cannot create directory for %s: %s", cert_path, strerror(errno));
        return -1;
    }
    key = EVP_RSA_gen(2048);
    if (!key) {
        *error_r = tls_error("cannot generate RSA key");
        goto out;
    }
    cert = X509_new();
    if (!cert)
        goto fail_cert;
    unsigned char serial[16];
    util_random_bytes(serial, sizeof serial);
    serial[0] &= 0x7f; /* RFC 5280 §4.1.2.2: a positive serial */
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert))) {
        BN_free(bn);
        goto fail_cert;
    }
    BN_free(bn);
    /* X509 v3 is version value 2 */
    if (!X509_set_version(cert, 2) || !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600) ||
        !X509_set_pubkey(cert, key))
        goto fail_cert;
    X509_NAME *name = X509_get_subject_name(cert);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)hostname, -1,
                                    -1, 0) ||
        !X509_set_issuer_name(cert, name))
        goto fail_cert;
    char san[600];
    snprintf(san, sizeof san, "DNS:%s", hostname);
    if (!tls_add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") ||
        !tls_add_ext(cert, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
        !tls_add_ext(cert, NID_ext_key_usage, "serverAuth") ||
        !tls_add_ext(cert, NID_subject_key_identifier, "hash") ||
        !tls_add_ext(cert, NID_subject_alt_name, san))
        goto fail_cert;
    if (!X509_sign(cert, key, EVP_sha256()))
        goto fail_cert;
    if (tls_write_pem(key_path, 0600, key, NULL) < 0) {
        *error_r = tls_error("cannot write %s: %s", key_path, strerror(errno));
        goto out;
    }
    if (tls_write_pem(cert_path, 0644, NULL, cert) < 0) {
        *error_r = tls_error("cannot write %s: %s", cert_path, strerror(errno));
        goto out;
    }
    log_info("master", "generated a self-signed certificate for %s in %s", hostname, cert_path);
    rc = 0;
    goto out;
fail_cert:
    *error_r = tls_error("cannot build certificate");
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

/* The ex_data free function: the set goes with its default context. */
static void tls_sni_set_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
    struct tls_sni_set *set = ptr;
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        SSL_CTX_free(set->ctx[i]);
    free(set);
}

static void tls_sni_index_make(void)
{
    tls_sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_sni_set_free);
}

/* RFC 6066 §3: the client's server_name picks the certificate. Any other name, or none,
 * keeps the default (a mail client that sends none still gets the mail host's). */
static int tls_on_servername(SSL *ssl, int *alert, void *arg)
{
    const struct tls_sni_set *set = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || !set)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < set->n; i++) {
        X509 *cert = SSL_CTX_get0_certificate(set->ctx[i]);
        if (cert && X509_check_host(cert, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, set->ctx[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* A server context with one certificate chain and its key. */
static SSL_CTX *tls_context_build_one(const char *cert_path, const char *key_path, char **error_r)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        *error_r = tls_error("SSL_CTX_new failed");
        return NULL;
    }
    /* TLS 1.2 is the floor (RFC 8996 deprecates 1.0 and 1.1). */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    static const unsigned char sid_ctx[] = "tern";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        *error_r = tls_error("cannot load certificate %s", cert_path);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
        *error_r = tls_error("cannot load key %s", key_path);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *error_r = tls_error("key %s does not match certificate %s", key_path, cert_path);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* A new server context from the files: the default pair, and the SNI certificates. */
static SSL_CTX *tls_context_build(char **error_r)
{
    SSL_CTX *ctx = tls_context_build_one(tls_cert_path, tls_key_path, error_r);
    if (!ctx || tls_n_sni == 0)
        return ctx;
    pthread_once(&tls_sni_once, tls_sni_index_make);
    struct tls_sni_set *set = calloc(1, sizeof *set);
    if (tls_sni_index < 0 || !set || SSL_CTX_set_ex_data(ctx, tls_sni_index, set) != 1) {
        free(set);
        SSL_CTX_free(ctx);
        *error_r = tls_error("cannot set up SNI");
        return NULL;
    }
    /* from now on the set is freed with ctx */
    for (size_t i = 0; i < tls_n_sni; i++) {
        char cert[4096];
        snprintf(cert, sizeof cert, "%s", tls_sni_items[i]);
        char *colon = strchr(cert, ':');
        const char *key = cert;
        if (colon) {
            *colon = '\0';
            key = colon + 1;
        }
        set->ctx[set->n] = tls_context_build_one(cert, key, error_r);
        if (!set->ctx[set->n]) {
            SSL_CTX_free(ctx);
            return NULL;
        }
        set->n++;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, tls_on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, set);
    return ctx;
}

/* Forget the configured SNI items. */
static void tls_sni_items_free(void)
{
    for (size_t i = 0; i < tls_n_sni; i++)
        free(tls_sni_items[i]);
    free(tls_sni_items);
    tls_sni_items = NULL;
    tls_n_sni = 0;
}

int tls_context_init(const char *cert_path, const char *key_path, const char *hostname,
                     char *const *sni_certs, size_t n_sni, char **error_r)
{
    free(tls_cert_path);
    free(tls_key_path);
    free(tls_hostname);
    tls_sni_items_free();
    tls_cert_path = strdup(cert_path);
    tls_key_path = strdup(key_path);
    tls_hostname = strdup(hostname);
    if (!tls_cert_path || !tls_key_path || !tls_hostname) {
        *error_r = strdup("out of memory");
        return -1;
    }
    if (n_sni > TLS_SNI_MAX) {
        *error_r = strdup("too many SNI certificates");
        return -1;
    }
    tls_sni_items = n_sni ? calloc(n_sni, sizeof *tls_sni_items) : NULL;
    for (size_t i = 0; i < n_sni; i++) {
        if (!tls_sni_items || !(tls_sni_items[tls_n_sni++] = strdup(sni_certs[i]))) {
            *error_r = strdup("out of memory");
            return -1;
        }
    }
    struct stat st;
    bool has_cert = stat(cert_path, &st) == 0;
    bool has_key = stat(key_path, &st) == 0;
    if (!has_cert && !has_key) {
        if (tls_generate(cert_path, key_path, hostname, error_r) < 0)
            return -1;
    } else if (has_cert != has_key) {
        size_t n = strlen(cert_path) + strlen(key_path) + 64;
        *error_r = malloc(n);
        if (*error_r)
            snprintf(*error_r, n, "%s exists but %s does not", has_cert ? cert_path : key_path,
                     has_cert ? key_path : cert_path);
        return -1;
    }
    SSL_CTX *ctx = tls_context_build(error_r);
    if (!ctx)
        return -1;
    SSL_CTX_free(tls_ctx);
    tls_ctx = ctx;
    return 0;
}

int tls_context_reload(char **error_r)
{
    if (!tls_cert_path) {
        *error_r = strdup("TLS is not initialised");
        return -1;
    }
    SSL_CTX *ctx = tls_context_build(error_r);
    if (!ctx)
        return -1; /* keep serving with the old context */
    /* Live connections hold their own reference through their SSL objects. */
    SSL_CTX_free(tls_ctx);
    tls_ctx = ctx;
    return 0;
}

SSL_CTX *tls_context_get(void)
{
    return tls_ctx;
}

void tls_context_free(void)
{
    SSL_CTX_free(tls_ctx);
    tls_ctx = NULL;
    free(tls_cert_path);
    free(tls_key_path);
    free(tls_hostname);
    tls_cert_path = tls_key_path = tls_hostname = NULL;
    tls_sni_items_free();
}
