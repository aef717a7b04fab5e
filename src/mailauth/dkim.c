/*
 * dkim.c - DKIM verification (RFC 6376 §6, RFC 8463 Ed25519, RFC 8301: rsa-sha1 is not
 * valid, RSA keys under 1024 bits are not valid): the DKIM-Signature and key record
 * parsers, body hashes (one streaming pass feeds every signature's canonicalizer), the
 * header hash and the signature check with OpenSSL 3.
 *
 * Budgets: at most MAILAUTH_DKIM_SIGS_MAX signatures per message (one DNS query each),
 * h= at most 1023 characters, keys at most 1024 octets (8192-bit RSA).
 */
#include "mailauth/mailauth-private.h"

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- parsers ------------------------------------------------------------------------ */

/* Parse an unsigned decimal of at most 18 digits (RFC 6376 §3.5: t=, x=, l= are 1*12
 * DIGIT but we accept more rather than misread). */
static bool parse_uint(const char *v, size_t len, uint64_t *out)
{
    if (len == 0 || len > 18)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return true;
}

/* Is h= (colon separated, FWS removed) naming the From field? */
static bool headers_have_from(const char *h)
{
    const char *p = h;
    while (*p) {
        const char *c = strchr(p, ':');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        if (l == 4 && strncasecmp(p, "from", 4) == 0)
            return true;
        if (!c)
            break;
        p = c + 1;
    }
    return false;
}

/* The parser of DKIM-Signature and of ARC-Message-Signature (RFC 8617 §4.1.2: the same
 * tags, but no v=, and i= is the instance number). */
static int sig_parse(const char *value, size_t len, struct mailauth_dkim_sig *sig, bool is_ams,
                     const char **error_r);

int mailauth_dkim_sig_parse(const char *value, size_t len, struct mailauth_dkim_sig *sig,
                            const char **error_r)
{
    return sig_parse(value, len, sig, false, error_r);
}

int mailauth_arc_ams_parse(const char *value, size_t len, struct mailauth_dkim_sig *sig,
                           const char **error_r)
{
    return sig_parse(value, len, sig, true, error_r);
}

static int sig_parse(const char *value, size_t len, struct mailauth_dkim_sig *sig, bool is_ams,
                     const char **error_r)
{
    struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
    size_t n;
    memset(sig, 0, sizeof *sig);
    sig->timestamp = sig->expires = -1;
    if (mailauth_tags_parse(value, len, tags, &n) < 0) {
        *error_r = "bad tag list";
        return -1;
    }
    const struct mailauth_tag *v = mailauth_tags_find(tags, n, "v"),
                              *a = mailauth_tags_find(tags, n, "a"),
                              *b = mailauth_tags_find(tags, n, "b"),
                              *bh = mailauth_tags_find(tags, n, "bh"),
                              *d = mailauth_tags_find(tags, n, "d"),
                              *h = mailauth_tags_find(tags, n, "h"),
                              *s = mailauth_tags_find(tags, n, "s"),
                              *c = mailauth_tags_find(tags, n, "c"),
                              *i = mailauth_tags_find(tags, n, "i"),
                              *l = mailauth_tags_find(tags, n, "l"),
                              *q = mailauth_tags_find(tags, n, "q"),
                              *t = mailauth_tags_find(tags, n, "t"),
                              *x = mailauth_tags_find(tags, n, "x");
    /* RFC 6376 §6.1.1: required tags */
    if ((!v && !is_ams) || !a || !b || !bh || !d || !h || !s || (is_ams && !i)) {
        *error_r = "missing required tag";
        return -1;
    }
    if (!is_ams && (v->value_len != 1 || v->value[0] != '1')) {
        *error_r = "incompatible version";
        return -1;
    }
    char tmp[64];
    if (!mailauth_copy_nofws(a->value, a->value_len, tmp, sizeof tmp)) {
        *error_r = "bad algorithm";
        return -1;
    }
    if (strcasecmp(tmp, "rsa-sha256") == 0)
        sig->alg = MAILAUTH_DKIM_RSA_SHA256;
    else if (strcasecmp(tmp, "ed25519-sha256") == 0)
        sig->alg = MAILAUTH_DKIM_ED25519_SHA256;
    else if (strcasecmp(tmp, "rsa-sha1") == 0)
        sig->alg = MAILAUTH_DKIM_RSA_SHA1;
    else {
        *error_r = "unknown algorithm";
        return -1;
    }
    if (c) {
        if (!mailauth_copy_nofws(c->value, c->value_len, tmp, sizeof tmp)) {
            *error_r = "bad canonicalization";
            return -1;
        }
        char *slash = strchr(tmp, '/');
        if (slash)
            *slash = '\0';
        const char *hc = tmp, *bc = slash ? slash + 1 : "simple";
        if (strcasecmp(hc, "relaxed") == 0)
            sig->is_header_relaxed = true;
        else if (strcasecmp(hc, "simple") != 0) {
            *error_r = "unknown canonicalization";
            return -1;
        }
        if (strcasecmp(bc, "relaxed") == 0)
            sig->is_body_relaxed = true;
        else if (strcasecmp(bc, "simple") != 0) {
            *error_r = "unknown canonicalization";
            return -1;
        }
    }
    if (!mailauth_copy_nofws(d->value, d->value_len, sig->domain, sizeof sig->domain) ||
        !sig->domain[0] || !mailauth_keys_is_valid_name(sig->domain, sizeof sig->domain)) {
        *error_r = "bad d= domain";
        return -1;
    }
    if (!mailauth_copy_nofws(s->value, s->value_len, sig->selector, sizeof sig->selector) ||
        !sig->selector[0] || !mailauth_keys_is_valid_name(sig->selector, sizeof sig->selector)) {
        *error_r = "bad s= selector";
        return -1;
    }
    if (!mailauth_copy_nofws(h->value, h->value_len, sig->headers, sizeof sig->headers) ||
        !headers_have_from(sig->headers)) {
        /* §5.4: From MUST be signed */
        *error_r = "From field not signed";
        return -1;
    }
    if (mailauth_base64_decode(bh->value, bh->value_len, sig->bh, sizeof sig->bh, &sig->bh_len) <
            0 ||
        sig->bh_len == 0) {
        *error_r = "bad bh= body hash";
        return -1;
    }
    if (mailauth_base64_decode(b->value, b->value_len, sig->b, sizeof sig->b, &sig->b_len) < 0 ||
        sig->b_len == 0) {
        *error_r = "bad b= signature";
        return -1;
    }
    size_t k = 0;
    for (size_t j = 0; j < b->value_len && k < 8; j++)
        if (b->value[j] != ' ' && b->value[j] != '\t' && b->value[j] != '\r' &&
            b->value[j] != '\n')
            sig->b_text[k++] = b->value[j];
    sig->b_text[k] = '\0';
    if (is_ams) {
        uint64_t inst;
        if (!parse_uint(i->value, i->value_len, &inst) || inst < 1 || inst > MAILAUTH_ARC_MAX) {
            *error_r = "bad i= instance";
            return -1;
        }
        sig->instance = (unsigned)inst;
        snprintf(sig->identity, sizeof sig->identity, "@%s", sig->domain);
    } else if (i) {
        if (!mailauth_copy_nofws(i->value, i->value_len, sig->identity, sizeof sig->identity)) {
            *error_r = "bad i= identity";
            return -1;
        }
        const char *at = strrchr(sig->identity, '@');
        /* §3.5 i=: its domain is d= or a subdomain of it */
        if (!at || !mailauth_domain_is_within(at + 1, sig->domain)) {
            *error_r = "i= not within d=";
            return -1;
        }
    } else {
        snprintf(sig->identity, sizeof sig->identity, "@%s", sig->domain);
    }
    uint64_t u;
    if (l) {
        if (!parse_uint(l->value, l->value_len, &u)) {
            *error_r = "bad l= length";
            return -1;
        }
        sig->has_limit = true;
        sig->limit = u;
    }
    if (q) {
        if (!mailauth_copy_nofws(q->value, q->value_len, tmp, sizeof tmp) ||
            strncasecmp(tmp, "dns/txt", 7) != 0) {
            *error_r = "unknown query method";
            return -1;
        }
    }
    if (t) {
        if (!parse_uint(t->value, t->value_len, &u)) {
            *error_r = "bad t= timestamp";
            return -1;
        }
        sig->timestamp = (int64_t)u;
    }
    if (x) {
        if (!parse_uint(x->value, x->value_len, &u)) {
            *error_r = "bad x= expiry";
            return -1;
        }
        sig->expires = (int64_t)u;
        if (sig->timestamp >= 0 && sig->expires < sig->timestamp) {
            *error_r = "x= before t=";
            return -1;
        }
    }
    return 0;
}

/* Does the colon-separated list (FWS removed) contain item (case-insensitive)? An empty
 * or absent list means "anything" to the caller. */
static bool list_has(const char *list, size_t len, const char *item)
{
    size_t il = strlen(item), pos = 0;
    while (pos <= len) {
        const char *c = memchr(list + pos, ':', len - pos);
        size_t end = c ? (size_t)(c - list) : len;
        size_t a = pos, b = end;
        while (a < b && (list[a] == ' ' || list[a] == '\t' || list[a] == '\r' || list[a] == '\n'))
            a++;
        while (b > a && (list[b - 1] == ' ' || list[b - 1] == '\t' || list[b - 1] == '\r' ||
                         list[b - 1] == '\n'))
            b--;
        if (b - a == il && strncasecmp(list + a, item, il) == 0)
            return true;
        if (!c)
            break;
        pos = end + 1;
    }
    return false;
}

int mailauth_dkim_key_parse(const char *text, size_t len, struct mailauth_dkim_key *key,
                            const char **error_r)
{
    struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
    size_t n;
    memset(key, 0, sizeof *key);
    if (mailauth_tags_parse(text, len, tags, &n) < 0) {
        *error_r = "bad key record syntax";
        return -1;
    }
    const struct mailauth_tag *v = mailauth_tags_find(tags, n, "v"),
                              *k = mailauth_tags_find(tags, n, "k"),
                              *p = mailauth_tags_find(tags, n, "p"),
                              *h = mailauth_tags_find(tags, n, "h"),
                              *s = mailauth_tags_find(tags, n, "s"),
                              *t = mailauth_tags_find(tags, n, "t");
    /* §3.6.1: v= if present must be first and DKIM1 */
    if (v && (v != &tags[0] || v->value_len != 5 || strncmp(v->value, "DKIM1", 5) != 0)) {
        *error_r = "bad key record version";
        return -1;
    }
    if (!p) {
        *error_r = "key record without p=";
        return -1;
    }
    char kt[32] = "rsa";
    if (k && !mailauth_copy_nofws(k->value, k->value_len, kt, sizeof kt)) {
        *error_r = "bad k= key type";
        return -1;
    }
    if (strcasecmp(kt, "rsa") == 0)
        key->is_rsa = true;
    else if (strcasecmp(kt, "ed25519") == 0)
        key->is_ed25519 = true;
    else {
        *error_r = "unknown key type";
        return -1;
    }
    key->allows_sha1 = key->allows_sha256 = true;
    if (h && h->value_len) {
        key->allows_sha1 = list_has(h->value, h->value_len, "sha1");
        key->allows_sha256 = list_has(h->value, h->value_len, "sha256");
    }
    if (s && s->value_len && !list_has(s->value, s->value_len, "email") &&
        !list_has(s->value, s->value_len, "*")) {
        *error_r = "key not for email";
        return -1;
    }
    if (t && t->value_len) {
        key->is_testing = list_has(t->value, t->value_len, "y");
        key->is_strict = list_has(t->value, t->value_len, "s");
    }
    if (mailauth_base64_decode(p->value, p->value_len, key->p, sizeof key->p, &key->p_len) < 0) {
        *error_r = "bad p= public key";
        return -1;
    }
    key->is_revoked = key->p_len == 0; /* §3.6.1: an empty p= means revoked */
    return 0;
}

/* ---- verification ----------------------------------------------------------------------- */

/* Public key from the record: RSA as SubjectPublicKeyInfo (what everybody publishes) or
 * a bare RSAPublicKey (§3.6.1's literal reading), Ed25519 as the raw 32 octets (RFC 8463
 * §4). NULL if unusable. */
static EVP_PKEY *key_from_record(const struct mailauth_dkim_key *k)
{
    const unsigned char *p = k->p;
    if (k->is_ed25519)
        return k->p_len == 32 ? EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k->p, 32)
                              : NULL;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)k->p_len);
    if (!pk) {
        p = k->p;
        pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)k->p_len);
    }
    if (pk && EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
        EVP_PKEY_free(pk);
        return NULL;
    }
    return pk;
}

/* One signature under verification. */
struct verify_sig {
    struct mailauth_dkim_sig sig;
    size_t field;   /* index of its DKIM-Signature field */
    bool is_done;   /* result already final (parse error...) */
    EVP_MD_CTX *body_md;
    struct mailauth_body_canon canon;
};

static void body_emit(void *arg, const char *data, size_t len)
{
    EVP_DigestUpdate(arg, data, len);
}

struct verify_all {
    struct verify_sig *v;
    size_t n;
};

static void body_feed_all(void *arg, const char *data, size_t len)
{
    struct verify_all *all = arg;
    for (size_t i = 0; i < all->n; i++)
        if (!all->v[i].is_done)
            mailauth_body_canon_feed(&all->v[i].canon, data, len);
}

/* The header hash input of §3.7: the fields named in h=, each instance taken from the
 * bottom up, then the signature field itself without b='s value and without its CRLF. */
bool mailauth_dkim_header_input(const struct mailauth_parsed *p, const char *h_list,
                                bool is_relaxed, const char *f, size_t f_len, struct buf *out)
{
    /* per name, how many instances were already consumed: counted by scanning h= */
    const char *name = h_list;
    while (*name) {
        const char *c = strchr(name, ':');
        size_t l = c ? (size_t)(c - name) : strlen(name);
        /* how many times this name appeared earlier in h= */
        size_t before = 0;
        for (const char *q = h_list; q < name;) {
            const char *qc = strchr(q, ':');
            size_t ql = qc ? (size_t)(qc - q) : strlen(q);
            if (ql == l && strncasecmp(q, name, l) == 0)
                before++;
            q = qc ? qc + 1 : q + ql;
        }
        /* the (before+1)-th instance from the bottom */
        size_t seen = 0;
        for (size_t i = p->n_fields; i-- > 0;) {
            const struct mailauth_header *f = &p->fields[i];
            if (f->name_len != l || strncasecmp(p->header.data + f->start, name, l) != 0)
                continue;
            if (seen++ == before) {
                if (!mailauth_canon_header(p->header.data + f->start, f->len, is_relaxed, true,
                                           out))
                    return false;
                break;
            }
        }
        if (!c)
            break;
        name = c + 1;
    }
    /* the signature field with the value of b= emptied (§3.7) */
    return mailauth_sig_field_canon(f, f_len, is_relaxed, out);
}

bool mailauth_sig_field_canon(const char *f, size_t f_len, bool is_relaxed, struct buf *out)
{
    struct buf tmp;
    buf_init(&tmp, 0);
    const char *colon = memchr(f, ':', f_len);
    if (!colon)
        return false;
    size_t i = (size_t)(colon - f) + 1;
    buf_append(&tmp, f, i);
    bool at_tag_start = true;
    while (i < f_len) {
        char ch = f[i];
        if (at_tag_start && ch == 'b') {
            size_t j = i + 1;
            while (j < f_len && (f[j] == ' ' || f[j] == '\t' || f[j] == '\r' || f[j] == '\n'))
                j++;
            if (j < f_len && f[j] == '=') {
                buf_append(&tmp, f + i, j + 1 - i);
                i = j + 1;
                while (i < f_len && f[i] != ';')
                    i++; /* drop the value */
                /* keep what follows, including a final CRLF */
                if (i >= f_len && f_len >= 2 && f[f_len - 1] == '\n')
                    buf_append(&tmp, "\r\n", 2);
                at_tag_start = false;
                continue;
            }
        }
        if (ch == ';')
            at_tag_start = true;
        else if (!(ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'))
            at_tag_start = false;
        buf_append_byte(&tmp, ch);
        i++;
    }
    bool ok = tmp.data && mailauth_canon_header(tmp.data, tmp.len, is_relaxed, false, out);
    buf_free(&tmp);
    return ok;
}

static const char *alg_name(enum mailauth_dkim_alg a)
{
    return a == MAILAUTH_DKIM_ED25519_SHA256 ? "ed25519-sha256"
           : a == MAILAUTH_DKIM_RSA_SHA1     ? "rsa-sha1"
                                             : "rsa-sha256";
}

static void result_set(struct mailauth_dkim_result *r, enum mailauth_result res,
                       const char *reason)
{
    r->result = res;
    snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "");
}

/* Fetch and check the key of sig; the signature check itself. */
static void verify_one(struct verify_sig *v, const struct mailauth_parsed *p,
                       const struct mailauth_dns *dns, int64_t now,
                       struct mailauth_dkim_result *r)
{
    const struct mailauth_dkim_sig *sig = &v->sig;
    if (sig->alg == MAILAUTH_DKIM_RSA_SHA1) {
        result_set(r, MAILAUTH_PERMERROR, "rsa-sha1 is not accepted (RFC 8301)");
        return;
    }
    if (sig->expires >= 0 && now > sig->expires) {
        result_set(r, MAILAUTH_PERMERROR, "signature expired");
        return;
    }
    /* body hash first: a mismatch needs no DNS */
    unsigned char bh[EVP_MAX_MD_SIZE];
    unsigned bh_len = 0;
    EVP_DigestFinal_ex(v->body_md, bh, &bh_len);
    if (sig->has_limit && v->canon.total < sig->limit) {
        result_set(r, MAILAUTH_PERMERROR, "l= longer than the body");
        return;
    }
    void *pk = NULL;
    bool is_testing = false;
    enum mailauth_result res;
    const char *reason;
    if (mailauth_key_fetch(dns, sig->selector, sig->domain, sig->alg, sig->identity, &pk,
                           &is_testing, &r->key_bits, &res, &reason) < 0) {
        result_set(r, res, reason);
        return;
    }
    if (bh_len != sig->bh_len || memcmp(bh, sig->bh, bh_len) != 0) {
        EVP_PKEY_free(pk);
        result_set(r, MAILAUTH_FAIL, "body hash did not verify");
        return;
    }
    struct buf input;
    buf_init(&input, 0);
    const struct mailauth_header *sf = &p->fields[v->field];
    bool ok = mailauth_dkim_header_input(p, sig->headers, sig->is_header_relaxed,
                                         p->header.data + sf->start, sf->len, &input);
    bool vr = ok && mailauth_sig_check(pk, sig->alg == MAILAUTH_DKIM_ED25519_SHA256, sig->b,
                                       sig->b_len, input.data, input.len);
    EVP_PKEY_free(pk);
    buf_free(&input);
    if (!ok)
        result_set(r, MAILAUTH_TEMPERROR, "out of memory");
    else if (vr)
        result_set(r, MAILAUTH_PASS, is_testing ? "testing key" : NULL);
    else
        result_set(r, MAILAUTH_FAIL, "signature did not verify");
}

int mailauth_key_fetch(const struct mailauth_dns *dns, const char *selector, const char *domain,
                       enum mailauth_dkim_alg alg, const char *identity, void **pk_r,
                       bool *is_testing_r, unsigned *bits_r, enum mailauth_result *res_r,
                       const char **reason_r)
{
    char name[400];
    snprintf(name, sizeof name, "%s._domainkey.%s", selector, domain);
    *res_r = MAILAUTH_PERMERROR;
    struct mailauth_dns_answer *ans = calloc(1, sizeof *ans);
    if (!ans) {
        *res_r = MAILAUTH_TEMPERROR;
        *reason_r = "out of memory";
        return -1;
    }
    enum mailauth_dns_status st = dns->lookup(dns->ctx, name, MAILAUTH_DNS_TXT, ans);
    if (st == MAILAUTH_DNS_TEMPFAIL) {
        free(ans);
        *res_r = MAILAUTH_TEMPERROR;
        *reason_r = "key lookup failed";
        return -1;
    }
    if (st == MAILAUTH_DNS_NXDOMAIN || ans->n == 0) {
        free(ans);
        *reason_r = "no key for signature";
        return -1;
    }
    if (ans->n > 1) {
        /* RFC 6376 §3.6.2.2: several records make the result undefined; we refuse to guess */
        free(ans);
        *reason_r = "several key records";
        return -1;
    }
    struct mailauth_dkim_key key;
    int rc = mailauth_dkim_key_parse((const char *)ans->rr[0].data, ans->rr[0].len, &key,
                                     reason_r);
    free(ans);
    if (rc < 0)
        return -1;
    if (key.is_revoked) {
        *reason_r = "key revoked";
        return -1;
    }
    if ((alg == MAILAUTH_DKIM_ED25519_SHA256) != key.is_ed25519 || !key.allows_sha256) {
        *reason_r = "key type does not match the algorithm";
        return -1;
    }
    if (key.is_strict && identity) {
        const char *at = strrchr(identity, '@');
        if (!at || strcasecmp(at + 1, domain) != 0) {
            *reason_r = "t=s key with a subdomain i=";
            return -1;
        }
    }
    EVP_PKEY *pk = key_from_record(&key);
    if (!pk) {
        *reason_r = "unusable public key";
        return -1;
    }
    *bits_r = (unsigned)EVP_PKEY_get_bits(pk);
    if (key.is_rsa && *bits_r < MAILAUTH_RSA_BITS_MIN) {
        EVP_PKEY_free(pk);
        *reason_r = "RSA key shorter than 1024 bits (RFC 8301)";
        return -1;
    }
    *is_testing_r = key.is_testing;
    *pk_r = pk;
    return 0;
}

bool mailauth_sig_check(void *pkey, bool is_ed25519, const unsigned char *sig, size_t sig_len,
                        const char *input, size_t input_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int vr = 0;
    if (md && is_ed25519) {
        /* RFC 8463 §3: Ed25519 signs the SHA-256 hash of the header input */
        unsigned char hash[32];
        unsigned hl = 0;
        EVP_Digest(input, input_len, hash, &hl, EVP_sha256(), NULL);
        vr = EVP_DigestVerifyInit(md, NULL, NULL, NULL, pkey) == 1 &&
             EVP_DigestVerify(md, sig, sig_len, hash, hl) == 1;
    } else if (md) {
        vr = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
             EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)input, input_len) == 1;
    }
    EVP_MD_CTX_free(md);
    return vr;
}

int mailauth_dkim_verify(const struct mailauth_message *m, const struct mailauth_dns *dns,
                         int64_t now, struct mailauth_dkim_result *results, size_t *n_r)
{
    *n_r = 0;
    struct mailauth_parsed p;
    const char *err = NULL;
    if (mailauth_parsed_read(m, &p, &err) < 0) {
        mailauth_parsed_free(&p);
        return -1;
    }
    struct verify_sig *v = calloc(MAILAUTH_DKIM_SIGS_MAX, sizeof *v);
    if (!v) {
        mailauth_parsed_free(&p);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < p.n_fields && n < MAILAUTH_DKIM_SIGS_MAX; i++) {
        if (!mailauth_field_is(&p, i, "DKIM-Signature"))
            continue;
        struct mailauth_dkim_result *r = &results[n];
        struct verify_sig *vs = &v[n];
        memset(r, 0, sizeof *r);
        vs->field = i;
        const char *val;
        size_t vl;
        mailauth_field_value(&p, i, &val, &vl);
        const char *perr = NULL;
        if (mailauth_dkim_sig_parse(val, vl, &vs->sig, &perr) < 0) {
            result_set(r, MAILAUTH_PERMERROR, perr);
            r->algorithm = "rsa-sha256";
            /* best effort identification for the A-R line */
            struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
            size_t nt;
            if (mailauth_tags_parse(val, vl, tags, &nt) == 0) {
                const struct mailauth_tag *d = mailauth_tags_find(tags, nt, "d");
                if (d && !mailauth_copy_nofws(d->value, d->value_len, r->domain, sizeof r->domain))
                    r->domain[0] = '\0';
                if (r->domain[0] && !mailauth_keys_is_valid_name(r->domain, sizeof r->domain))
                    r->domain[0] = '\0';
            }
            vs->is_done = true;
            n++;
            continue;
        }
        snprintf(r->domain, sizeof r->domain, "%s", vs->sig.domain);
        snprintf(r->selector, sizeof r->selector, "%s", vs->sig.selector);
        snprintf(r->identity, sizeof r->identity, "%s", vs->sig.identity);
        snprintf(r->b_text, sizeof r->b_text, "%s", vs->sig.b_text);
        r->algorithm = alg_name(vs->sig.alg);
        vs->body_md = EVP_MD_CTX_new();
        if (!vs->body_md || EVP_DigestInit_ex(vs->body_md, EVP_sha256(), NULL) != 1) {
            result_set(r, MAILAUTH_TEMPERROR, "out of memory");
            vs->is_done = true;
        }
        mailauth_body_canon_init(&vs->canon, vs->sig.is_body_relaxed, vs->sig.has_limit,
                                 vs->sig.limit, body_emit, vs->body_md);
        n++;
    }
    int rc = 0;
    if (n > 0) {
        /* one pass over the body for every signature */
        struct verify_all all = {v, n};
        if (mailauth_body_each(m, p.body_offset, body_feed_all, &all) < 0) {
            for (size_t i = 0; i < n; i++)
                if (!v[i].is_done)
                    result_set(&results[i], MAILAUTH_TEMPERROR, "cannot read the message");
            rc = -1;
        } else {
            for (size_t i = 0; i < n; i++) {
                if (v[i].is_done)
                    continue;
                mailauth_body_canon_finish(&v[i].canon);
                verify_one(&v[i], &p, dns, now, &results[i]);
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        EVP_MD_CTX_free(v[i].body_md);
    free(v);
    mailauth_parsed_free(&p);
    *n_r = n;
    return rc;
}
