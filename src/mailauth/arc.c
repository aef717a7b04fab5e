/*
 * arc.c - Authenticated Received Chain, RFC 8617: validating the chain of a received
 * message (§5.2) and adding our ARC set when we forward one (§5.1), so that the next
 * receiver can see what our SPF/DKIM/DMARC checks said before the forward broke SPF (and
 * perhaps DKIM).
 *
 * An ARC set i is three fields: ARC-Authentication-Results (AAR, "i=N; " + an A-R value),
 * ARC-Message-Signature (AMS: a DKIM signature with i= as instance and no v=) and
 * ARC-Seal (AS: i, a, t, cv, d, s, b over all sets 1..i, relaxed canonicalization).
 * Budgets: at most 50 sets (MAILAUTH_ARC_MAX); more is a failed chain.
 */
#include "mailauth/mailauth-private.h"

#include "core/util.h"

#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int mailauth_arc_seal_parse(const char *value, size_t len, struct mailauth_arc_seal *seal,
                            const char **error_r)
{
    struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
    size_t n;
    memset(seal, 0, sizeof *seal);
    if (mailauth_tags_parse(value, len, tags, &n) < 0) {
        *error_r = "bad tag list";
        return -1;
    }
    const struct mailauth_tag *i = mailauth_tags_find(tags, n, "i"),
                              *a = mailauth_tags_find(tags, n, "a"),
                              *b = mailauth_tags_find(tags, n, "b"),
                              *d = mailauth_tags_find(tags, n, "d"),
                              *s = mailauth_tags_find(tags, n, "s"),
                              *cv = mailauth_tags_find(tags, n, "cv"),
                              *h = mailauth_tags_find(tags, n, "h");
    if (!i || !a || !b || !d || !s || !cv) {
        *error_r = "ARC-Seal: missing required tag";
        return -1;
    }
    if (h) {
        *error_r = "ARC-Seal: h= is not allowed"; /* §4.1.3 */
        return -1;
    }
    char tmp[64];
    unsigned inst = 0;
    size_t k = 0;
    for (; k < i->value_len && i->value[k] >= '0' && i->value[k] <= '9' && inst <= 1000; k++)
        inst = inst * 10 + (unsigned)(i->value[k] - '0');
    if (k == 0 || k != i->value_len || inst < 1 || inst > MAILAUTH_ARC_MAX) {
        *error_r = "ARC-Seal: bad i=";
        return -1;
    }
    seal->instance = inst;
    if (!mailauth_copy_nofws(a->value, a->value_len, tmp, sizeof tmp)) {
        *error_r = "ARC-Seal: bad a=";
        return -1;
    }
    if (strcasecmp(tmp, "rsa-sha256") == 0)
        seal->alg = MAILAUTH_DKIM_RSA_SHA256;
    else if (strcasecmp(tmp, "ed25519-sha256") == 0)
        seal->alg = MAILAUTH_DKIM_ED25519_SHA256;
    else {
        *error_r = "ARC-Seal: unknown algorithm";
        return -1;
    }
    if (!mailauth_copy_nofws(cv->value, cv->value_len, tmp, sizeof tmp)) {
        *error_r = "ARC-Seal: bad cv=";
        return -1;
    }
    if (strcasecmp(tmp, "none") == 0)
        seal->cv = MAILAUTH_NONE;
    else if (strcasecmp(tmp, "pass") == 0)
        seal->cv = MAILAUTH_PASS;
    else if (strcasecmp(tmp, "fail") == 0)
        seal->cv = MAILAUTH_FAIL;
    else {
        *error_r = "ARC-Seal: bad cv=";
        return -1;
    }
    if (!mailauth_copy_nofws(d->value, d->value_len, seal->domain, sizeof seal->domain) ||
        !mailauth_keys_is_valid_name(seal->domain, sizeof seal->domain) ||
        !mailauth_copy_nofws(s->value, s->value_len, seal->selector, sizeof seal->selector) ||
        !mailauth_keys_is_valid_name(seal->selector, sizeof seal->selector)) {
        *error_r = "ARC-Seal: bad d= or s=";
        return -1;
    }
    if (mailauth_base64_decode(b->value, b->value_len, seal->b, sizeof seal->b, &seal->b_len) < 0 ||
        seal->b_len == 0) {
        *error_r = "ARC-Seal: bad b=";
        return -1;
    }
    return 0;
}

/* The instance of an ARC-Authentication-Results value ("i=N; ..."), 0 if malformed. */
static unsigned aar_instance(const char *v, size_t len)
{
    size_t i = 0;
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n'))
        i++;
    if (i + 2 >= len || (v[i] != 'i' && v[i] != 'I') || v[i + 1] != '=')
        return 0;
    i += 2;
    unsigned inst = 0;
    size_t start = i;
    while (i < len && v[i] >= '0' && v[i] <= '9' && inst <= 1000)
        inst = inst * 10 + (unsigned)(v[i++] - '0');
    if (i == start || inst > MAILAUTH_ARC_MAX)
        return 0;
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n'))
        i++;
    return i < len && v[i] == ';' ? inst : 0;
}

/* The ARC fields of a message by instance: indexes into p->fields, (size_t)-1 if absent. */
struct arc_sets {
    size_t aar[MAILAUTH_ARC_MAX + 1], ams[MAILAUTH_ARC_MAX + 1], as[MAILAUTH_ARC_MAX + 1];
    unsigned n;
};

/* Collect the sets: 0 none, 1 a well-formed chain of n sets, -1 broken structure. */
static int arc_collect(const struct mailauth_parsed *p, struct arc_sets *s, const char **why)
{
    memset(s, 0xff, sizeof s->aar + sizeof s->ams + sizeof s->as);
    s->n = 0;
    bool has_any = false;
    for (size_t i = 0; i < p->n_fields; i++) {
        size_t *slot;
        const char *v;
        size_t vl;
        unsigned inst;
        if (mailauth_field_is(p, i, "ARC-Authentication-Results")) {
            mailauth_field_value(p, i, &v, &vl);
            inst = aar_instance(v, vl);
            slot = s->aar;
        } else if (mailauth_field_is(p, i, "ARC-Message-Signature") ||
                   mailauth_field_is(p, i, "ARC-Seal")) {
            bool is_seal = mailauth_field_is(p, i, "ARC-Seal");
            mailauth_field_value(p, i, &v, &vl);
            struct mailauth_tag tags[MAILAUTH_TAGS_MAX];
            size_t nt;
            inst = 0;
            if (mailauth_tags_parse(v, vl, tags, &nt) == 0) {
                const struct mailauth_tag *t = mailauth_tags_find(tags, nt, "i");
                for (size_t k = 0; t && k < t->value_len && inst <= 1000; k++) {
                    if (t->value[k] < '0' || t->value[k] > '9') {
                        inst = 0;
                        break;
                    }
                    inst = inst * 10 + (unsigned)(t->value[k] - '0');
                }
            }
            slot = is_seal ? s->as : s->ams;
        } else {
            continue;
        }
        has_any = true;
        if (inst < 1 || inst > MAILAUTH_ARC_MAX) {
            *why = "ARC field without a valid instance";
            return -1;
        }
        if (slot[inst] != (size_t)-1) {
            *why = "two ARC fields of one kind in one set"; /* §4.2.1 */
            return -1;
        }
        slot[inst] = i;
        if (inst > s->n)
            s->n = inst;
    }
    if (!has_any)
        return 0;
    for (unsigned k = 1; k <= s->n; k++) {
        if (s->aar[k] == (size_t)-1 || s->ams[k] == (size_t)-1 || s->as[k] == (size_t)-1) {
            *why = "an ARC set is incomplete or missing";
            return -1;
        }
    }
    return 1;
}

/* Append the ARC-Seal hash input for instance i (§5.1.1): every set 1..i in order, AAR,
 * AMS, AS each relaxed; the AS of instance i with its b= emptied and no final CRLF. The
 * newest set may come from outside p (sealing): new_aar/new_ams/new_as then stand for i. */
static bool arc_seal_input(const struct mailauth_parsed *p, const struct arc_sets *s, unsigned i,
                           const char *new_aar, const char *new_ams, const char *new_as,
                           struct buf *out)
{
    for (unsigned k = 1; k <= i; k++) {
        bool is_new = new_aar && k == i;
        const struct mailauth_header *aar = is_new ? NULL : &p->fields[s->aar[k]];
        const struct mailauth_header *ams = is_new ? NULL : &p->fields[s->ams[k]];
        const struct mailauth_header *as = is_new ? NULL : &p->fields[s->as[k]];
        if (!mailauth_canon_header(is_new ? new_aar : p->header.data + aar->start,
                                   is_new ? strlen(new_aar) : aar->len, true, true, out) ||
            !mailauth_canon_header(is_new ? new_ams : p->header.data + ams->start,
                                   is_new ? strlen(new_ams) : ams->len, true, true, out))
            return false;
        const char *f = is_new ? new_as : p->header.data + as->start;
        size_t fl = is_new ? strlen(new_as) : as->len;
        if (k < i ? !mailauth_canon_header(f, fl, true, true, out)
                  : !mailauth_sig_field_canon(f, fl, true, out))
            return false;
    }
    return true;
}

static void arc_fail(struct mailauth_arc_result *r, enum mailauth_result res, const char *why)
{
    r->result = res;
    snprintf(r->reason, sizeof r->reason, "%s", why);
}

/* Validate the newest AMS (instance n) like a DKIM signature (§5.2 step 5). */
static void arc_check_ams(const struct mailauth_message *m, const struct mailauth_parsed *p,
                          const struct arc_sets *s, const struct mailauth_dns *dns,
                          struct mailauth_arc_result *r)
{
    const struct mailauth_header *f = &p->fields[s->ams[s->n]];
    const char *v;
    size_t vl;
    mailauth_field_value(p, s->ams[s->n], &v, &vl);
    struct mailauth_dkim_sig sig;
    const char *err;
    if (mailauth_arc_ams_parse(v, vl, &sig, &err) < 0) {
        arc_fail(r, MAILAUTH_FAIL, err);
        return;
    }
    unsigned char bh[64];
    size_t bh_len = 0;
    char *bh_text = mailauth_body_hash(m, p->body_offset, sig.is_body_relaxed, sig.has_limit,
                                       sig.limit, bh, &bh_len);
    free(bh_text);
    if (bh_len != sig.bh_len || memcmp(bh, sig.bh, bh_len) != 0) {
        arc_fail(r, MAILAUTH_FAIL, "ARC-Message-Signature: body hash did not verify");
        return;
    }
    void *pk;
    bool is_testing;
    unsigned bits;
    enum mailauth_result res;
    if (mailauth_key_fetch(dns, sig.selector, sig.domain, sig.alg, NULL, &pk, &is_testing, &bits,
                           &res, &err) < 0) {
        arc_fail(r, res == MAILAUTH_TEMPERROR ? MAILAUTH_TEMPERROR : MAILAUTH_FAIL, err);
        return;
    }
    struct buf input;
    buf_init(&input, 0);
    bool ok = mailauth_dkim_header_input(p, sig.headers, sig.is_header_relaxed,
                                         p->header.data + f->start, f->len, &input) &&
              mailauth_sig_check(pk, sig.alg == MAILAUTH_DKIM_ED25519_SHA256, sig.b, sig.b_len,
                                 input.data, input.len);
    EVP_PKEY_free(pk);
    buf_free(&input);
    if (!ok)
        arc_fail(r, MAILAUTH_FAIL, "ARC-Message-Signature did not verify");
}

int mailauth_arc_verify(const struct mailauth_message *m, const struct mailauth_dns *dns,
                        struct mailauth_arc_result *r)
{
    memset(r, 0, sizeof *r);
    struct mailauth_parsed p;
    const char *err = NULL;
    if (mailauth_parsed_read(m, &p, &err) < 0) {
        mailauth_parsed_free(&p);
        return -1;
    }
    struct arc_sets *s = malloc(sizeof *s);
    if (!s) {
        mailauth_parsed_free(&p);
        return -1;
    }
    const char *why = NULL;
    int c = arc_collect(&p, s, &why);
    r->n_sets = c > 0 ? s->n : 0;
    if (c == 0) {
        r->result = MAILAUTH_NONE;
        goto out;
    }
    if (c < 0) {
        arc_fail(r, MAILAUTH_FAIL, why);
        goto out;
    }
    /* §5.2 steps 2-4: the seals' cv values, newest first */
    struct mailauth_arc_seal seal;
    for (unsigned k = s->n; k >= 1; k--) {
        const char *v;
        size_t vl;
        mailauth_field_value(&p, s->as[k], &v, &vl);
        if (mailauth_arc_seal_parse(v, vl, &seal, &err) < 0) {
            arc_fail(r, MAILAUTH_FAIL, err);
            goto out;
        }
        if (k == s->n)
            snprintf(r->domain, sizeof r->domain, "%s", seal.domain);
        if (seal.cv == MAILAUTH_FAIL) {
            arc_fail(r, MAILAUTH_FAIL, "a sealer found the chain broken (cv=fail)");
            goto out;
        }
        if ((k == 1) != (seal.cv == MAILAUTH_NONE)) {
            arc_fail(r, MAILAUTH_FAIL, "wrong cv= for the instance");
            goto out;
        }
    }
    /* step 5: the newest AMS */
    r->result = MAILAUTH_PASS;
    arc_check_ams(m, &p, s, dns, r);
    if (r->result != MAILAUTH_PASS)
        goto out;
    /* step 6: every seal, newest first */
    for (unsigned k = s->n; k >= 1; k--) {
        const char *v;
        size_t vl;
        mailauth_field_value(&p, s->as[k], &v, &vl);
        mailauth_arc_seal_parse(v, vl, &seal, &err);
        void *pk;
        bool is_testing;
        unsigned bits;
        enum mailauth_result res;
        if (mailauth_key_fetch(dns, seal.selector, seal.domain, seal.alg, NULL, &pk, &is_testing,
                               &bits, &res, &err) < 0) {
            arc_fail(r, res == MAILAUTH_TEMPERROR ? MAILAUTH_TEMPERROR : MAILAUTH_FAIL, err);
            goto out;
        }
        struct buf input;
        buf_init(&input, 0);
        bool ok = arc_seal_input(&p, s, k, NULL, NULL, NULL, &input) &&
                  mailauth_sig_check(pk, seal.alg == MAILAUTH_DKIM_ED25519_SHA256, seal.b,
                                     seal.b_len, input.data, input.len);
        EVP_PKEY_free(pk);
        buf_free(&input);
        if (!ok) {
            arc_fail(r, MAILAUTH_FAIL, "ARC-Seal did not verify");
            goto out;
        }
    }
out:
    free(s);
    mailauth_parsed_free(&p);
    return 0;
}

/* Sign input with key into base64, folded, appended to field. */
static bool arc_sign_append(const struct mailauth_signing_key *key, const struct buf *input,
                            struct buf *field)
{
    unsigned char sig[1024];
    size_t sig_len = sizeof sig;
    if (!mailauth_sig_make(key->pkey, key->alg == MAILAUTH_DKIM_ED25519_SHA256, input->data,
                           input->len, sig, &sig_len))
        return false;
    struct buf b64;
    buf_init(&b64, 0);
    bool ok = util_base64_encode(sig, sig_len, &b64);
    if (ok)
        mailauth_fold_base64(field, b64.data, 10);
    buf_free(&b64);
    return ok && buf_append(field, "\r\n", 2);
}

int mailauth_arc_seal(const struct mailauth_message *m, const struct mailauth_signing_key *key,
                      const char *ar, const struct mailauth_arc_result *chain, int64_t now,
                      struct buf *out, const char **error_r)
{
    if (chain->result == MAILAUTH_FAIL || chain->result == MAILAUTH_TEMPERROR) {
        /* §5.1.2: a failed chain is not extended by us (the A-R says arc=fail) */
        *error_r = "chain failed: not sealed";
        return -1;
    }
    unsigned inst = chain->result == MAILAUTH_PASS ? chain->n_sets + 1 : 1;
    if (inst > MAILAUTH_ARC_MAX) {
        *error_r = "chain too long: not sealed";
        return -1;
    }
    const char *alg = key->alg == MAILAUTH_DKIM_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
    /* AAR: "i=N; " + our A-R value (§4.1.1) */
    const char *colon = strchr(ar, ':');
    if (strncasecmp(ar, "Authentication-Results:", 23) != 0 || !colon) {
        *error_r = "bad Authentication-Results field";
        return -1;
    }
    const char *val = colon + 1;
    while (*val == ' ')
        val++;
    size_t vl = strlen(val);
    while (vl && (val[vl - 1] == '\n' || val[vl - 1] == '\r'))
        vl--;
    struct mailauth_parsed p;
    if (mailauth_parsed_read(m, &p, error_r) < 0) {
        mailauth_parsed_free(&p);
        return -1;
    }
    int rc = -1;
    struct buf aar, ams, as, hlist, input;
    buf_init(&aar, 0);
    buf_init(&ams, 0);
    buf_init(&as, 0);
    buf_init(&hlist, 0);
    buf_init(&input, 0);
    struct arc_sets *s = malloc(sizeof *s);
    const char *why;
    bool has_from;
    char *bh = NULL;
    if (!s || (inst > 1 && arc_collect(&p, s, &why) != 1) ||
        !mailauth_sign_header_list(&p, &hlist, &has_from)) {
        *error_r = "cannot read the ARC chain";
        goto out;
    }
    buf_printf(&aar, "ARC-Authentication-Results: i=%u; %.*s;\r\n\tarc=%s\r\n", inst, (int)vl, val,
               mailauth_result_name(chain->result));
    /* AMS (§4.1.2): a DKIM signature of the message with i= instead of v= */
    bh = mailauth_body_hash(m, p.body_offset, true, false, 0, NULL, NULL);
    if (!bh) {
        *error_r = "cannot read the message";
        goto out;
    }
    buf_printf(&ams,
               "ARC-Message-Signature: i=%u; a=%s; c=relaxed/relaxed; d=%s;\r\n"
               "\ts=%s; t=%lld; h=",
               inst, alg, key->domain, key->selector, (long long)now);
    mailauth_fold_list(&ams, hlist.data, 8 + strlen(key->selector) + 24 + 3);
    buf_printf(&ams, ";\r\n\tbh=%s;\r\n\tb=", bh);
    if (!ams.data || !mailauth_dkim_header_input(&p, hlist.data, true, ams.data, ams.len, &input) ||
        !arc_sign_append(key, &input, &ams)) {
        *error_r = "ARC-Message-Signature: signing failed";
        goto out;
    }
    /* AS (§4.1.3): over every set, this one included */
    buf_printf(&as, "ARC-Seal: i=%u; a=%s; t=%lld; cv=%s;\r\n\td=%s; s=%s;\r\n\tb=", inst, alg,
               (long long)now,
               inst == 1 ? "none" : "pass", key->domain, key->selector);
    buf_reset(&input);
    if (!as.data || !arc_seal_input(&p, s, inst, aar.data, ams.data, as.data, &input) ||
        !arc_sign_append(key, &input, &as)) {
        *error_r = "ARC-Seal: signing failed";
        goto out;
    }
    buf_append(out, as.data, as.len);
    buf_append(out, ams.data, ams.len);
    rc = buf_append(out, aar.data, aar.len) ? 0 : -1;
    if (rc < 0)
        *error_r = "out of memory";
out:
    free(bh);
    free(s);
    buf_free(&aar);
    buf_free(&ams);
    buf_free(&as);
    buf_free(&hlist);
    buf_free(&input);
    mailauth_parsed_free(&p);
    return rc;
}
