/*
 * tls.h - the server's OpenSSL context: TLS 1.2+ only, certificate and key from config,
 * or a self-signed pair generated on first start (RSA 2048 / SHA-256, CN = hostname).
 *
 * SNI: up to TLS_SNI_MAX further certificates (tls.sni_certs), each chosen for the clients
 * whose server_name it is valid for; the default pair serves everyone else.
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

#include <stddef.h>

typedef struct ssl_ctx_st SSL_CTX;

#define TLS_SNI_MAX 64

/* Create cert/key if absent (mode 0600 key), then load it and the SNI certificates
 * (sni_certs: "CERT" holding its key too, or "CERT:KEY"; absolute paths). Returns 0 or
 * -1 with *error_r. */
int tls_context_init(const char *cert_path, const char *key_path, const char *hostname,
                     char *const *sni_certs, size_t n_sni, char **error_r);
int tls_context_reload(char **error_r);
SSL_CTX *tls_context_get(void);
void tls_context_free(void);

#endif
