/*
 * sign.c - DKIM signing (RFC 6376 §5, RFC 8463): relaxed/relaxed, SHA-256, one
 * DKIM-Signature per key (RSA and Ed25519 side by side: receivers that do not know
 * Ed25519 ignore that one, RFC 8463 §5).
 *
 * Signed fields: those of SIGNED present in the message, each as many times as it occurs;
 * From, To, Subject, Date and Message-ID once more than they occur ("oversigning", RFC
 * 6376 §8.15), so that nobody can add a second instance without breaking the signature.
 */
#include "mailauth/mailauth-private.h"

#include "core/util.h"

#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    bool is_oversigned;
} SIGNED[] = {
    {"From", true},
    {"Reply-To", false},
    {"Subject", true},
    {"Date", true},
    {"To", true},
    {"Cc", false},
    {"Message-ID", true},
    {"In-Reply-To", false},
    {"References", false},
    {"MIME-Version", false},
    {"Content-Type", false},
    {"Content-Transfer-Encoding", false},
    {"Content-Disposition", false},
    {"Sender", false},
    {"List-Id", false},
    {"List-Unsubscribe", false},
    {"List-Unsubscribe-Post", false},
    {"Autocrypt", false},
};

void mailauth_signing_key_free(struct mailauth_signing_key *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->pkey);
    k->pkey = NULL;
}

bool mailauth_sig_make(void *pkey, bool is_ed25519, const char *input, size_t input_len,
                       unsigned char *out, size_t *len_r)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok;
    if (is_ed25519) {
        /* RFC 8463 §3: Ed25519 over the SHA-256 hash of the header input */
        unsigned char hash[32];
        unsigned hl = 0;
        EVP_Digest(input, input_len, hash, &hl, EVP_sha256(), NULL);
        ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, pkey) == 1 &&
             EVP_DigestSign(md, out, len_r, hash, hl) == 1;
    } else {
        ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
             EVP_DigestSign(md, out, len_r, (const unsigned char *)input, input_len) == 1;
    }
    EVP_MD_CTX_free(md);
    return ok;
}

static void sign_body_emit(void *arg, const char *data, size_t len);
static void sign_body_feed(void *arg, const char *data, size_t len);

char *mailauth_body_hash(const struct mailauth_message *m, uint64_t body_offset, bool is_relaxed,
                         bool has_limit, uint64_t limit, unsigned char *raw_r, size_t *raw_len_r)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    struct mailauth_body_canon canon;
    mailauth_body_canon_init(&canon, is_relaxed, has_limit, limit, sign_body_emit, md);
    if (mailauth_body_each(m, body_offset, sign_body_feed, &canon) < 0) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    mailauth_body_canon_finish(&canon);
    unsigned char bh[EVP_MAX_MD_SIZE];
    unsigned bh_len = 0;
    EVP_DigestFinal_ex(md, bh, &bh_len);
    EVP_MD_CTX_free(md);
    if (raw_r) {
        memcpy(raw_r, bh, bh_len);
        *raw_len_r = bh_len;
    }
    if (has_limit && canon.total < limit)
        return NULL;
    return util_base64_encode_str(bh, bh_len);
}

static void sign_body_emit(void *arg, const char *data, size_t len)
{
    EVP_DigestUpdate(arg, data, len);
}

static void sign_body_feed(void *arg, const char *data, size_t len)
{
    mailauth_body_canon_feed(arg, data, len);
}

/* Append "name:name:..." for the signed fields of p (h= value). */
bool mailauth_sign_header_list(const struct mailauth_parsed *p, struct buf *h, bool *has_from_r)
{
    *has_from_r = false;
    for (size_t k = 0; k < sizeof SIGNED / sizeof SIGNED[0]; k++) {
        size_t count = 0;
        for (size_t i = 0; i < p->n_fields; i++)
            count += mailauth_field_is(p, i, SIGNED[k].name);
        if (k == 0)
            *has_from_r = count == 1;
        if (SIGNED[k].is_oversigned)
            count++;
        for (size_t i = 0; i < count; i++) {
            if (h->len)
                buf_append_byte(h, ':');
            buf_append_str(h, SIGNED[k].name);
        }
    }
    return h->data != NULL;
}

/* Append the h= list to out, folding ("\r\n\t" is FWS, allowed after a colon) so that no
 * line grows past ~76 columns. */
void mailauth_fold_list(struct buf *out, const char *list, size_t col)
{
    const char *p = list;
    while (*p) {
        const char *c = strchr(p, ':');
        size_t l = c ? (size_t)(c - p) + 1 : strlen(p);
        if (col + l > 76 && col > 8) {
            buf_append(out, "\r\n\t", 3);
            col = 8;
        }
        buf_append(out, p, l);
        col += l;
        p += l;
    }
}

/* Append base64 text to out in lines of at most 76 columns (FWS inside b= is ignored,
 * RFC 6376 §3.5). */
void mailauth_fold_base64(struct buf *out, const char *text, size_t col)
{
    size_t len = strlen(text), i = 0;
    while (i < len) {
        size_t take = col < 76 ? 76 - col : 1;
        if (take > len - i)
            take = len - i;
        buf_append(out, text + i, take);
        i += take;
        if (i < len) {
            buf_append(out, "\r\n\t", 3);
            col = 8;
        }
    }
}

int mailauth_dkim_sign(const struct mailauth_message *m, const struct mailauth_signing_key *keys,
                       size_t n, int64_t now, struct buf *out, const char **error_r)
{
    struct mailauth_parsed p;
    if (mailauth_parsed_read(m, &p, error_r) < 0) {
        mailauth_parsed_free(&p);
        return -1;
    }
    int rc = -1;
    struct buf hlist, field, input, b64;
    buf_init(&hlist, 0);
    buf_init(&field, 0);
    buf_init(&input, 0);
    buf_init(&b64, 0);
    bool has_from;
    if (!mailauth_sign_header_list(&p, &hlist, &has_from)) {
        *error_r = "out of memory";
        goto out;
    }
    if (!has_from) {
        *error_r = "the message has no single From field";
        goto out;
    }
    /* the body hash is the same for every key: relaxed, SHA-256, no l= */
    char *bh_text = mailauth_body_hash(m, p.body_offset, true, false, 0, NULL, NULL);
    if (!bh_text) {
        *error_r = "cannot read the message";
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        const struct mailauth_signing_key *key = &keys[k];
        bool is_ed = key->alg == MAILAUTH_DKIM_ED25519_SHA256;
        buf_reset(&field);
        buf_reset(&input);
        buf_reset(&b64);
        buf_printf(&field,
                   "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed; d=%s;\r\n"
                   "\ts=%s; t=%lld; h=",
                   is_ed ? "ed25519-sha256" : "rsa-sha256", key->domain, key->selector,
                   (long long)now);
        mailauth_fold_list(&field, hlist.data, 8 + strlen(key->selector) + 24 + 3);
        buf_printf(&field, ";\r\n\tbh=%s;\r\n\tb=", bh_text);
        if (!field.data || !mailauth_dkim_header_input(&p, hlist.data, true, field.data,
                                                       field.len, &input)) {
            *error_r = "out of memory";
            free(bh_text);
            goto out;
        }
        unsigned char sig[1024];
        size_t sig_len = sizeof sig;
        bool ok = mailauth_sig_make(key->pkey, is_ed, input.data, input.len, sig, &sig_len);
        if (!ok || !util_base64_encode(sig, sig_len, &b64)) {
            *error_r = "signing failed";
            free(bh_text);
            goto out;
        }
        mailauth_fold_base64(&field, b64.data, 10);
        buf_append(&field, "\r\n", 2);
        if (!buf_append(out, field.data, field.len)) {
            *error_r = "out of memory";
            free(bh_text);
            goto out;
        }
    }
    free(bh_text);
    rc = 0;
out:
    buf_free(&hlist);
    buf_free(&field);
    buf_free(&input);
    buf_free(&b64);
    mailauth_parsed_free(&p);
    return rc;
}

int mailauth_sign_for_author(const char *data_dir, const struct mailauth_message *m, int64_t now,
                             struct buf *out, char *domain_r, size_t domain_size, char **error_r)
{
    struct mailauth_parsed p;
    const char *err = NULL;
    if (mailauth_parsed_read(m, &p, &err) < 0) {
        mailauth_parsed_free(&p);
        *error_r = strdup(err);
        return -1;
    }
    char domain[254];
    bool has_from =
        mailauth_from_domain(p.header.data, p.fields, p.n_fields, domain, sizeof domain);
    mailauth_parsed_free(&p);
    if (!has_from)
        return 0;
    struct mailauth_signing_key keys[2];
    size_t n = 0;
    if (mailauth_keys_load_signing(data_dir, domain, keys, &n, error_r) < 0)
        return -1;
    if (n == 0)
        return 0;
    int rc = mailauth_dkim_sign(m, keys, n, now, out, &err) < 0 ? -1 : 1;
    if (rc < 0)
        *error_r = strdup(err);
    else
        snprintf(domain_r, domain_size, "%s", domain);
    for (size_t i = 0; i < n; i++)
        mailauth_signing_key_free(&keys[i]);
    return rc;
}
