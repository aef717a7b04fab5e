/*
 * tls.h - the server's OpenSSL context: TLS 1.2+ only, certificate and key from config,
 * or a self-signed pair generated on first start (RSA 2048 / SHA-256, CN = hostname).
 *
 * tls_context_reload() builds a fresh SSL_CTX from the files; new connections use it,
 * existing ones keep theirs (SSL_CTX is reference counted), so SIGHUP drops nobody.
 *
 * Ownership: the context is owned by the tls module; tls_context_get() returns a borrowed
 * pointer valid until the next reload (take SSL_new() from it at once).
 * Thread rules: loop thread only.
 */
#ifndef TERN_CORE_TLS_H
#define TERN_CORE_TLS_H

typedef struct ssl_ctx_st SSL_CTX;

/* Create cert/key if absent (mode 0600 key), then load. Returns 0 or -1 with *error_r. */
int tls_context_init(const char *cert_path, const char *key_path, const char *hostname,
                     char **error_r);
int tls_context_reload(char **error_r);
SSL_CTX *tls_context_get(void);
void tls_context_free(void);

#endif
