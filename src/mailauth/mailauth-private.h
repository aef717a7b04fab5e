/*
 * mailauth-private.h - internal to the mailauth module: reading a struct mailauth_message
 * (header section into memory, body in chunks) and small helpers shared by dkim.c,
 * sign.c, spf.c and dmarc.c.
 */
#ifndef TERN_MAILAUTH_PRIVATE_H
#define TERN_MAILAUTH_PRIVATE_H

#include "core/buf.h"
#include "mailauth/mailauth.h"

/* The header section of m (prefix + the message's own, up to and including the empty
 * line) parsed into fields. */
struct mailauth_parsed {
    struct buf header;           /* the section's bytes */
    struct mailauth_header *fields;
    size_t n_fields;
    uint64_t body_offset;        /* where the body starts in the message (not the prefix) */
};
/* Read and parse the header section. 0, or -1 with *error_r (static): I/O error, over
 * MAILAUTH_HEADER_MAX. Free with mailauth_parsed_free even on failure. */
int mailauth_parsed_read(const struct mailauth_message *m, struct mailauth_parsed *p,
                         const char **error_r);
void mailauth_parsed_free(struct mailauth_parsed *p);
/* Call fn on the body of m in chunks. 0, or -1 on a read error. */
int mailauth_body_each(const struct mailauth_message *m, uint64_t body_offset,
                       void (*fn)(void *arg, const char *data, size_t len), void *arg);

/* The DKIM header hash input (RFC 6376 §3.7): the fields of h_list (colon separated, FWS
 * removed) from the bottom up, then the signature field f[f_len] itself with b='s value
 * removed and no CRLF. */
bool mailauth_dkim_header_input(const struct mailauth_parsed *p, const char *h_list,
                                bool is_relaxed, const char *f, size_t f_len, struct buf *out);

/* Append signature field f[f_len] canonicalized (relaxed or simple) with the value of its
 * b= tag removed and without its final CRLF (RFC 6376 §3.7, RFC 8617 §5.1.1). */
bool mailauth_sig_field_canon(const char *f, size_t f_len, bool is_relaxed, struct buf *out);
/* The h= list this module signs for the header section p (DKIM and ARC-Message-Signature):
 * the usual fields present, From/To/Subject/Date/Message-ID oversigned. */
bool mailauth_sign_header_list(const struct mailauth_parsed *p, struct buf *h, bool *has_from_r);
/* Append the h= list to out folded after colons (lines of at most ~76 columns). */
void mailauth_fold_list(struct buf *out, const char *list, size_t col);
/* Append base64 text folded into lines of at most ~76 columns. */
void mailauth_fold_base64(struct buf *out, const char *text, size_t col);
/* The relaxed/relaxed SHA-256 body hash of m's body (from body_offset), base64, malloc'd. */
char *mailauth_body_hash(const struct mailauth_message *m, uint64_t body_offset, bool is_relaxed,
                         bool has_limit, uint64_t limit, unsigned char *raw_r, size_t *raw_len_r);

/* The public key of selector._domainkey.domain for a signature of algorithm alg (RFC 6376
 * §3.6: one record, not revoked, the right type, t=s against identity when given, RSA at
 * least 1024 bits). 0 with *pk_r (an EVP_PKEY *, free with EVP_PKEY_free), or -1 with
 * the result (temperror/permerror) and a static reason. BLOCKING (DNS). */
int mailauth_key_fetch(const struct mailauth_dns *dns, const char *selector, const char *domain,
                       enum mailauth_dkim_alg alg, const char *identity, void **pk_r,
                       bool *is_testing_r, unsigned *bits_r, enum mailauth_result *res_r,
                       const char **reason_r);
/* Check signature sig over input (SHA-256; Ed25519 over its SHA-256 hash, RFC 8463). */
bool mailauth_sig_check(void *pkey, bool is_ed25519, const unsigned char *sig, size_t sig_len,
                        const char *input, size_t input_len);
/* Sign input with key (as mailauth_sig_check verifies); *len_r in, size of out; out. */
bool mailauth_sig_make(void *pkey, bool is_ed25519, const char *input, size_t input_len,
                       unsigned char *out, size_t *len_r);

/* Is field i named name (case-insensitive)? */
bool mailauth_field_is(const struct mailauth_parsed *p, size_t i, const char *name);
/* The value of field i (after the colon). */
void mailauth_field_value(const struct mailauth_parsed *p, size_t i, const char **v_r,
                          size_t *len_r);

/* Copy text[len] into out with FWS removed; false if it does not fit (or has a NUL). */
bool mailauth_copy_nofws(const char *text, size_t len, char *out, size_t size);
/* Decode base64 with FWS inside (RFC 6376 §2.10) into out[max]; -1 on bad syntax. */
int mailauth_base64_decode(const char *text, size_t len, unsigned char *out, size_t max,
                           size_t *len_r);
/* A libcurl handle for an HTTPS request to host:port at the address our resolver gives
 * (CURLOPT_RESOLVE: one resolver configuration covers HTTPS too), https only, no
 * redirects, certificate and name verified, 15 s to connect; the caller sets the URL,
 * CAINFO, the total timeout and the callbacks, then frees the handle and *resolve_r
 * (after the transfer). A CURL *, or NULL with err when host has no address. BLOCKING
 * (DNS). */
struct curl_slist;
void *mailauth_curl_new(const struct mailauth_dns *dns, const char *host, unsigned port,
                        struct curl_slist **resolve_r, char *err, size_t err_size);

/* Is d equal to or a subdomain of parent (case-insensitive, dotted names)? */
bool mailauth_domain_is_within(const char *d, const char *parent);

#endif
