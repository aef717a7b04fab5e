/*
 * mailauth.h - mail authentication (issue 12): DKIM signing and verification (RFC 6376,
 * RFC 8463 Ed25519, RFC 8301 algorithm floor), SPF (RFC 7208), DMARC (RFC 7489),
 * Authentication-Results (RFC 8601), and the DKIM key store.
 *
 * Contract:
 * - Pure functions over bytes plus a DNS interface (struct mailauth_dns). Nothing here
 *   touches a session, a connection or the event loop; results are plain data (fixed
 *   arrays inside the result structs), so the module can move behind another process.
 * - Parsers (tag lists, DKIM-Signature, key records, SPF and DMARC records, A-R) are
 *   linear-time with explicit budgets, unit-tested and fuzzed (tests/fuzz/fuzz_mailauth_*).
 * - DNS: every function that needs DNS takes a struct mailauth_dns and may BLOCK for at
 *   most the resolver's timeout per query (and a bounded number of queries): call it from
 *   a workpool thread or the CLI, never from the loop thread. A DNS failure is a
 *   temporary result (TEMPERROR), never a silent pass.
 * - Ownership: callers own every input; outputs are written into caller-provided structs
 *   or appended to a caller's struct buf. The resolver (mailauth_resolver_*) and key
 *   store handles are owned by whoever created them; both are thread-safe once created.
 */
#ifndef TERN_MAILAUTH_MAILAUTH_H
#define TERN_MAILAUTH_MAILAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* ---- results (RFC 8601 §2.7 result names) ------------------------------------------- */

enum mailauth_result {
    MAILAUTH_NONE,
    MAILAUTH_PASS,
    MAILAUTH_FAIL,
    MAILAUTH_SOFTFAIL, /* SPF only */
    MAILAUTH_NEUTRAL,
    MAILAUTH_POLICY,
    MAILAUTH_TEMPERROR,
    MAILAUTH_PERMERROR,
};
/* "pass", "fail", ... as written in Authentication-Results. */
const char *mailauth_result_name(enum mailauth_result r);

/* ---- the message ---------------------------------------------------------------------- */

/* A message as bytes: optional header lines we prepend (trace fields, our Message-ID),
 * then the message itself, in memory (data/len) or in a file (fd >= 0, fd_size bytes,
 * read with pread, so the file offset is left alone). */
struct mailauth_message {
    const char *prefix;
    size_t prefix_len;
    const char *data;
    size_t len;
    int fd;
    uint64_t fd_size;
};

/* Header sections larger than this are not authenticated (permerror): a budget. */
#define MAILAUTH_HEADER_MAX   (1024 * 1024)
#define MAILAUTH_HEADERS_MAX  1000 /* header fields looked at */

/* One header field of a parsed header section: offsets into the section's bytes. */
struct mailauth_header {
    size_t start;    /* first byte of the field name */
    size_t name_len; /* name without the colon, trailing blanks excluded */
    size_t len;      /* whole field up to and including its final CRLF */
};

/* Pure: split a header section (bytes up to and including the empty line, or all of len)
 * into fields. At most max fields (the rest are ignored and *is_truncated_r set). Lines
 * not of the form "name:" and not a continuation are skipped (RFC 5322 obs-forms are not
 * signed by anyone sane). Returns the number of fields; *body_r is the offset of the
 * body (len when there is no empty line). */
size_t mailauth_headers_parse(const char *h, size_t len, struct mailauth_header *out, size_t max,
                              size_t *body_r, bool *is_truncated_r);

/* ---- canonicalization (RFC 6376 §3.4) -------------------------------------------------- */

/* Append the canonical form of one header field (name: value CRLF as in the message) to
 * out: relaxed (§3.4.2) or simple (§3.4.1). with_crlf false drops the final CRLF (the
 * DKIM-Signature field itself, §3.7). */
bool mailauth_canon_header(const char *field, size_t len, bool is_relaxed, bool with_crlf,
                           struct buf *out);

/* Incremental body canonicalizer (§3.4.3 simple, §3.4.4 relaxed): feed chunks, then
 * finish; the canonical bytes go to emit() (at most limit of them when has_limit: l=). */
struct mailauth_body_canon {
    bool is_relaxed;
    bool has_limit;
    uint64_t limit;
    uint64_t emitted;   /* canonical octets passed to emit (after the limit) */
    uint64_t total;     /* canonical octets the whole body has (for l= checks) */
    uint64_t pending_crlf;
    bool pending_wsp;
    bool pending_cr;
    bool line_has_text;
    bool has_text; /* anything but empty lines so far */
    void (*emit)(void *arg, const char *data, size_t len);
    void *arg;
};
void mailauth_body_canon_init(struct mailauth_body_canon *c, bool is_relaxed, bool has_limit,
                              uint64_t limit, void (*emit)(void *, const char *, size_t),
                              void *arg);
void mailauth_body_canon_feed(struct mailauth_body_canon *c, const char *data, size_t len);
void mailauth_body_canon_finish(struct mailauth_body_canon *c);

/* ---- tag lists (RFC 6376 §3.2; also DMARC records, RFC 7489 §6.4, and ARC) ------------- */

#define MAILAUTH_TAGS_MAX 32
struct mailauth_tag {
    char name[16];
    const char *value; /* into the parsed text, FWS not removed inside */
    size_t value_len;
};
/* Pure: parse "tag=value; tag=value" (leading/trailing FWS trimmed around names and
 * values). -1 on syntax error, a duplicate tag (§3.2: permerror), a tag name longer than
 * 15 or more than MAILAUTH_TAGS_MAX tags. */
int mailauth_tags_parse(const char *text, size_t len, struct mailauth_tag *out, size_t *n_r);
/* Is the first tag "v" with exactly this value (DMARC1, STSv1, TLSRPTv1 records)? */
bool mailauth_tags_version_is(const struct mailauth_tag *t, size_t n, const char *version);
/* The tag named name, or NULL. */
const struct mailauth_tag *mailauth_tags_find(const struct mailauth_tag *t, size_t n,
                                              const char *name);

/* ---- DNS interface -------------------------------------------------------------------- */

enum mailauth_dns_status {
    MAILAUTH_DNS_OK,       /* answer with records (n may still be 0 for NODATA) */
    MAILAUTH_DNS_NXDOMAIN, /* no such name */
    MAILAUTH_DNS_TEMPFAIL, /* timeout, SERVFAIL, no resolver: a temporary result */
};
enum { MAILAUTH_DNS_A = 1, MAILAUTH_DNS_MX = 15, MAILAUTH_DNS_TXT = 16, MAILAUTH_DNS_PTR = 12,
       MAILAUTH_DNS_AAAA = 28 };
#define MAILAUTH_DNS_RRS_MAX 32
#define MAILAUTH_DNS_RR_MAX  4096 /* TXT: the character-strings joined */
struct mailauth_dns_answer {
    size_t n;
    /* TXT: the strings of one record joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2); A: 4
     * octets; AAAA: 16; MX and PTR: the host name in dotted form (MX preference dropped). */
    struct {
        unsigned char data[MAILAUTH_DNS_RR_MAX];
        size_t len;
    } rr[MAILAUTH_DNS_RRS_MAX];
    bool is_secure; /* DNSSEC validated (only from a validating resolver) */
};
/* A DNS implementation: the libunbound one below, or a table in tests and fuzzers. */
struct mailauth_dns {
    enum mailauth_dns_status (*lookup)(void *ctx, const char *name, int type,
                                       struct mailauth_dns_answer *answer);
    void *ctx;
};

/* The libunbound resolver: its own context (so its callbacks never run on the loop),
 * forwarding to resolver ("IP" or "IP@port"; "" = /etc/resolv.conf). Each lookup waits
 * at most timeout_ms (then TEMPFAIL). trust_anchor (NULL or "": none) turns DNSSEC
 * validation on: answers say is_secure, bogus ones are TEMPFAIL. Thread-safe: any number
 * of threads may look up at once. NULL with *error_r (malloc'd). */
struct mailauth_resolver;
struct mailauth_resolver *mailauth_resolver_create(const char *resolver, unsigned timeout_ms,
                                                   const char *trust_anchor, char **error_r);
void mailauth_resolver_free(struct mailauth_resolver *r);
/* Configure a fresh libunbound context the way every Tern resolver is: async mode,
 * forwarding to resolver ("" = /etc/resolv.conf and /etc/hosts), RFC 6761 and private
 * reverse zones answered by a configured resolver, DNSSEC from trust_anchor ("" = off).
 * 0, or -1 with *error_r (malloc'd). */
struct ub_ctx;
int mailauth_unbound_setup(struct ub_ctx *ub, const char *resolver, const char *trust_anchor,
                           char **error_r);
/* The interface for r (valid while r lives). */
struct mailauth_dns mailauth_resolver_dns(struct mailauth_resolver *r);

/* ---- SPF (RFC 7208) ------------------------------------------------------------------ */

struct mailauth_spf_result {
    enum mailauth_result result; /* none pass fail softfail neutral temperror permerror */
    bool is_helo;                /* the HELO identity was checked (null MAIL FROM) */
    char domain[254];            /* the domain whose policy was evaluated */
    char mechanism[64];          /* the term that decided ("-all", "ip4:..."), or "" */
    char explanation[256];       /* fail: the exp= text (macro-expanded), or "" */
    char reason[96];             /* temperror / permerror: why */
};
/* Pure: the syntax check of one SPF record ("v=spf1 ..."), as check_host() applies it
 * before evaluating any term (§4.6). 0 valid (*n_terms_r mechanisms), -1 permerror. */
int mailauth_spf_record_parse(const char *text, size_t len, size_t *n_terms_r);
/* check_host() (RFC 7208 §4) for the client ip (text), the HELO name and the MAIL FROM
 * address (without brackets; "" for the null sender, then postmaster@HELO is checked).
 * receiver: our host name (%{r}); now: %{t}. BLOCKING (DNS, at most 20 s). 0, or -1 out
 * of memory. */
int mailauth_spf_check(const struct mailauth_dns *dns, const char *ip, const char *helo,
                       const char *mail_from, const char *receiver, int64_t now,
                       struct mailauth_spf_result *out);

/* ---- DMARC (RFC 7489) ---------------------------------------------------------------- */

enum { MAILAUTH_DMARC_POLICY_NONE, MAILAUTH_DMARC_POLICY_QUARANTINE,
       MAILAUTH_DMARC_POLICY_REJECT };
struct mailauth_dmarc_record {
    int policy;           /* p= */
    int subdomain_policy; /* sp=, -1 when absent (p= applies) */
    bool is_dkim_strict, is_spf_strict;
    unsigned pct;
    bool has_rua;
    char rua[256];
};
/* Pure: parse a DMARC record (§6.3). 0, or -1 when it is not a usable record. */
int mailauth_dmarc_record_parse(const char *text, size_t len, struct mailauth_dmarc_record *r);
/* The organizational domain of domain (RFC 7489 §3.2) by the Public Suffix List. */
void mailauth_org_domain(const char *domain, char *out, size_t size);

struct mailauth_dkim_result;
struct mailauth_dmarc_result {
    enum mailauth_result result; /* none, pass, fail, temperror */
    char header_from[254];
    bool has_record;
    struct mailauth_dmarc_record record;
    int policy;      /* the policy that applies (p= or sp=) */
    int disposition; /* what to do after pct= sampling */
    bool is_sampled_out;
    bool is_spf_aligned, is_dkim_aligned;
    char reason[96];
};
/* DMARC for a message whose single From domain is from_domain ("" or NULL when the
 * message has none or several: none), given its SPF (may be NULL) and DKIM results.
 * BLOCKING (DNS: at most two lookups). */
void mailauth_dmarc_check(const struct mailauth_dns *dns, const char *from_domain,
                          const struct mailauth_spf_result *spf,
                          const struct mailauth_dkim_result *dkim, size_t n_dkim,
                          struct mailauth_dmarc_result *out);
const char *mailauth_dmarc_policy_name(int policy);

/* ---- DKIM (RFC 6376, RFC 8463) --------------------------------------------------------- */

enum mailauth_dkim_alg { MAILAUTH_DKIM_RSA_SHA256, MAILAUTH_DKIM_ED25519_SHA256,
                         MAILAUTH_DKIM_RSA_SHA1 };

/* A parsed DKIM-Signature (or ARC-Message-Signature) value. */
struct mailauth_dkim_sig {
    enum mailauth_dkim_alg alg;
    bool is_header_relaxed, is_body_relaxed;
    char domain[254];   /* d= */
    char selector[64];  /* s= */
    char identity[320]; /* i= (default "@d") */
    char headers[1024]; /* h= with FWS removed, colon separated */
    unsigned char bh[64];
    size_t bh_len;
    unsigned char b[1024];
    size_t b_len;
    char b_text[16]; /* the first 8 characters of b= for header.b (RFC 6008) */
    bool has_limit;
    uint64_t limit;    /* l= */
    int64_t timestamp; /* t=, -1 none */
    int64_t expires;   /* x=, -1 none */
    unsigned instance; /* ARC-Message-Signature i= (RFC 8617), 0 for DKIM */
};
/* Pure: parse the value of a DKIM-Signature field (after the colon). 0, or -1 with a
 * reason (static string) in *error_r. Checks the required tags and their syntax
 * (§3.5, §6.1.1): v=1, a, b, bh, d, h (must contain From), s; i= within d=. */
int mailauth_dkim_sig_parse(const char *value, size_t len, struct mailauth_dkim_sig *sig,
                            const char **error_r);

/* A parsed DKIM key record (RFC 6376 §3.6.1). */
struct mailauth_dkim_key {
    bool is_rsa, is_ed25519;
    bool is_revoked;   /* p= empty */
    bool is_testing;   /* t=y */
    bool is_strict;    /* t=s: i= must equal d= exactly */
    bool allows_sha1, allows_sha256;
    unsigned char p[1024];
    size_t p_len;
};
/* Pure: parse a key record. 0, or -1 with *error_r (static). */
int mailauth_dkim_key_parse(const char *text, size_t len, struct mailauth_dkim_key *key,
                            const char **error_r);

#define MAILAUTH_DKIM_SIGS_MAX 8 /* signatures verified per message; more are ignored */
#define MAILAUTH_RSA_BITS_MIN  1024 /* RFC 8301 §3.2 */
struct mailauth_dkim_result {
    enum mailauth_result result;
    char domain[254];
    char selector[64];
    char identity[320];
    const char *algorithm; /* "rsa-sha256", "ed25519-sha256", "rsa-sha1" */
    char b_text[16];
    unsigned key_bits;
    char reason[160];
};
/* Verify the DKIM signatures of m (at most MAILAUTH_DKIM_SIGS_MAX, top-most first).
 * results[MAILAUTH_DKIM_SIGS_MAX]; *n_r = how many; 0 signatures: *n_r = 0 (dkim=none).
 * now: seconds since the epoch (x= expiry). BLOCKING (DNS). 0, or -1 when the message
 * could not be read (I/O, header section over the budget: *n_r = 0). */
int mailauth_dkim_verify(const struct mailauth_message *m, const struct mailauth_dns *dns,
                         int64_t now, struct mailauth_dkim_result *results, size_t *n_r);

/* ---- ARC (RFC 8617) ------------------------------------------------------------------- */

#define MAILAUTH_ARC_MAX 50 /* RFC 8617 §4.2.1: at most 50 ARC sets */
struct mailauth_signing_key;
/* Pure: parse an ARC-Message-Signature value (the DKIM tags; i= is the instance). */
int mailauth_arc_ams_parse(const char *value, size_t len, struct mailauth_dkim_sig *sig,
                           const char **error_r);
struct mailauth_arc_seal {
    unsigned instance;
    enum mailauth_result cv; /* NONE, PASS or FAIL */
    enum mailauth_dkim_alg alg;
    char domain[254];
    char selector[64];
    unsigned char b[1024];
    size_t b_len;
};
/* Pure: parse an ARC-Seal value (§4.1.3: i, a, b, d, s, cv required; no h= allowed). */
int mailauth_arc_seal_parse(const char *value, size_t len, struct mailauth_arc_seal *seal,
                            const char **error_r);
struct mailauth_arc_result {
    enum mailauth_result result; /* none (no chain), pass, fail, temperror */
    unsigned n_sets;
    char domain[254]; /* d= of the newest seal */
    char reason[96];
};
/* Validate the ARC chain of m (§5.2): structure, the newest AMS, every AS. BLOCKING (DNS).
 * 0, or -1 when the message cannot be read. */
int mailauth_arc_verify(const struct mailauth_message *m, const struct mailauth_dns *dns,
                        struct mailauth_arc_result *r);
/* Add an ARC set (i = chain->n_sets + 1) to m, forwarded by us: ARC-Seal,
 * ARC-Message-Signature and ARC-Authentication-Results (built from our A-R field ar, which
 * must start "Authentication-Results: <authserv-id>;") appended to out, to be prepended in
 * that order. cv follows chain (none / pass / fail). key must be RSA or Ed25519. 0, or -1
 * with *error_r (static); a chain of 50 sets or a failed one is not sealed further
 * (-1, "chain ..."). Any thread. */
int mailauth_arc_seal(const struct mailauth_message *m, const struct mailauth_signing_key *key,
                      const char *ar, const struct mailauth_arc_result *chain, int64_t now,
                      struct buf *out, const char **error_r);

/* ---- MTA-STS (RFC 8461), for the outbound client --------------------------------------- */

enum mailauth_sts_mode { MAILAUTH_STS_NONE, MAILAUTH_STS_TESTING, MAILAUTH_STS_ENFORCE };
#define MAILAUTH_STS_MX_MAX 32
struct mailauth_sts_policy {
    enum mailauth_sts_mode mode;
    int64_t max_age;
    char mx[MAILAUTH_STS_MX_MAX][256]; /* lower case; "*.example.net" wildcards */
    size_t n_mx;
};
/* Pure: "v=STSv1; id=..." (§3.1). 0 with the id, or -1. */
int mailauth_sts_record_parse(const char *text, size_t len, char *id_r, size_t id_size);
/* Pure: the policy file (§3.2). 0, or -1 when it is not a valid policy. */
int mailauth_sts_policy_parse(const char *text, size_t len, struct mailauth_sts_policy *p);
/* Does MX host name mx match one of the policy's mx patterns (§4.1)? */
bool mailauth_sts_mx_matches(const struct mailauth_sts_policy *p, const char *mx);

struct mailauth_sts_opts {
    const char *ca_file;  /* CA bundle for the policy host's certificate; NULL = system */
    unsigned https_port;  /* 443 (tests: another port on loopback) */
    const char *cache_dir; /* policies kept across restarts here; NULL = memory only */
};
enum mailauth_sts_status {
    MAILAUTH_STS_NO_POLICY,    /* no (usable) _mta-sts record and nothing cached */
    MAILAUTH_STS_FOUND,        /* *p holds the policy in force (fresh or cached) */
    MAILAUTH_STS_FETCH_FAILED, /* a record, but the policy could not be fetched (err) */
};
/* GET https://mta-sts.<domain>/.well-known/mta-sts.txt (§3.3) at the address dns gives,
 * certificate checked, no redirects, 64 KiB, text/plain, parsed. No cache. 0 with *p, or
 * -1 with err. BLOCKING (DNS, HTTPS: at most ~60 s). */
int mailauth_sts_fetch(const struct mailauth_dns *dns, const struct mailauth_sts_opts *o,
                       const char *domain, struct mailauth_sts_policy *p, char *err,
                       size_t err_size);
/* The MTA-STS policy in force for domain (§5.1: TXT record, cache, HTTPS fetch with a
 * validated certificate, no redirects). Process-wide cache, thread-safe. BLOCKING (DNS,
 * HTTPS: at most ~60 s). */
enum mailauth_sts_status mailauth_sts_get(const struct mailauth_dns *dns,
                                          const struct mailauth_sts_opts *o, const char *domain,
                                          int64_t now, struct mailauth_sts_policy *p, char *err,
                                          size_t err_size);
/* Forget every cached policy (tests). */
void mailauth_sts_cache_clear(void);

/* ---- TLS-RPT (RFC 8460) ---------------------------------------------------------------- */

/* "YYYY-MM-DD" (UTC) of when. */
void mailauth_tlsrpt_day(int64_t when, char *out, size_t size);
/* Note one SMTP session with an MX host of domain under a policy ("sts" or "tlsa"):
 * result_type "success" or an RFC 8460 §4.3 failure ("validation-failure",
 * "certificate-host-mismatch", "starttls-not-supported", "tlsa-invalid",
 * "dnssec-invalid", "sts-policy-fetch-error", ...). Any thread; 0 or -1. */
int mailauth_tlsrpt_record(const char *data_dir, int64_t when, const char *domain,
                           const char *policy_type, const char *result_type, const char *mx,
                           const char *ip);
/* Pure: "v=TLSRPTv1; rua=..." (§3). 0 with the rua value (URIs, comma separated), or -1. */
int mailauth_tlsrpt_record_parse(const char *text, size_t len, char *rua, size_t rua_size);
/* The domains with sessions noted on day (malloc'd strings in a malloc'd array). */
int mailauth_tlsrpt_domains(const char *data_dir, const char *day, char ***domains_r, size_t *n_r);
/* Submit a report (gzip'd JSON) to an https: rua URI (§5.3.1): POST with Content-Type
 * application/tlsrpt+gzip to the address our resolver gives for the URI's host, its
 * certificate checked against ca_file (NULL or "": the system's CAs), no redirects, at
 * most 60 s. 0 when the receiver answered 2xx; -1 with err (and *status_r, the HTTP
 * status or 0). BLOCKING. */
int mailauth_tlsrpt_post(const struct mailauth_dns *dns, const char *url, const char *ca_file,
                         const char *body, size_t len, long *status_r, char *err,
                         size_t err_size);
/* Append the JSON aggregate report (§4.4) of domain for day to json. 0 or -1. */
int mailauth_tlsrpt_report(const char *data_dir, const char *day, const char *domain,
                           const char *organization, const char *contact, struct buf *json);

/* ---- one received message, and Authentication-Results (RFC 8601) ---------------------- */

/* What is known about the transaction. */
struct mailauth_check_args {
    const char *ip;        /* client address (NULL: no SPF check) */
    const char *helo;      /* HELO/EHLO name */
    const char *mail_from; /* envelope sender, "" for the null sender */
    const char *receiver;  /* our host name */
    int64_t now;
    const struct mailauth_spf_result *spf; /* already checked (at MAIL) or NULL */
};
struct mailauth_verdict {
    bool has_spf, has_dmarc;
    struct mailauth_arc_result arc;
    struct mailauth_spf_result spf;
    struct mailauth_dkim_result dkim[MAILAUTH_DKIM_SIGS_MAX];
    size_t n_dkim;
    struct mailauth_dmarc_result dmarc;
    char helo[256];
    char mail_from[320];
};
/* SPF (unless given), DKIM and DMARC for message m. BLOCKING (DNS). 0, or -1 when the
 * message cannot be read (I/O, header budget) or memory runs out. */
int mailauth_check_message(const struct mailauth_dns *dns, const struct mailauth_message *m,
                           const struct mailauth_check_args *a, struct mailauth_verdict *v);
/* Append our "Authentication-Results: id; dkim=...; spf=...; dmarc=..." field (CRLF). */
bool mailauth_ar_format(const char *authserv_id, const struct mailauth_verdict *v,
                        struct buf *out);

#define MAILAUTH_AR_METHODS_MAX 16
#define MAILAUTH_AR_PROPS_MAX   8
struct mailauth_ar_method {
    char method[64];
    char result[32];
    struct {
        char name[64];   /* "header.d", "smtp.mailfrom", "reason" */
        char value[256];
    } props[MAILAUTH_AR_PROPS_MAX];
    size_t n_props;
};
/* A parsed Authentication-Results (or ARC-Authentication-Results) value. */
struct mailauth_ar {
    unsigned instance; /* ARC i=, 0 for a plain A-R */
    char authserv_id[256];
    bool is_none;      /* "no-result" */
    struct mailauth_ar_method methods[MAILAUTH_AR_METHODS_MAX];
    size_t n;          /* methods kept (more are parsed and dropped) */
};
/* Pure: parse an A-R value (after the colon). 0, or -1 on bad syntax. */
int mailauth_ar_parse(const char *value, size_t len, struct mailauth_ar *ar);
/* Pure: append header section h[len] (parsed into fields[n]) to out without the
 * Authentication-Results fields whose authserv-id is authserv_id (RFC 8601 §5: they are
 * forged). Returns how many were removed. */
int mailauth_ar_remove_ours(const char *h, size_t len, const struct mailauth_header *fields,
                            size_t n, const char *authserv_id, struct buf *out);

/* ---- DKIM signing and the key store -------------------------------------------------- */

/* A private key for signing with its d= and s=. */
struct mailauth_signing_key {
    char domain[254];
    char selector[64];
    enum mailauth_dkim_alg alg;
    void *pkey; /* EVP_PKEY *, owned */
};
void mailauth_signing_key_free(struct mailauth_signing_key *k);

/* Sign m with keys[n] (one DKIM-Signature each; relaxed/relaxed, SHA-256, the headers of
 * mailauth_dkim_sign_headers present in m plus oversigning of From, To, Subject, Date,
 * Message-ID). The fields, each ending in CRLF, are appended to out, in the order to
 * prepend them. now: t=. 0, or -1 with *error_r (static). Any thread. */
int mailauth_dkim_sign(const struct mailauth_message *m, const struct mailauth_signing_key *keys,
                       size_t n, int64_t now, struct buf *out, const char **error_r);

/* Sign m for the domain of its From field (RFC 7489 alignment: d= is the author's
 * domain) with that domain's signing keys from the store. 1 when signed (fields appended
 * to out, the domain in domain_r), 0 when there is no single From or its domain has no
 * key, -1 on error (*error_r malloc'd). BLOCKING (key files); any thread. */
int mailauth_sign_for_author(const char *data_dir, const struct mailauth_message *m, int64_t now,
                             struct buf *out, char *domain_r, size_t domain_size,
                             char **error_r);

/* The key store: <data_dir>/dkim/<domain>/<selector>.pem (private key, mode 0600, a
 * "# created=SECONDS" line before the PEM block), retired keys renamed <selector>.retired.
 * The oldest key of each algorithm that is not retired signs: a new selector can be
 * published next to the old one before the old one is retired (RFC 6376 §3.1 rotation). */
struct mailauth_key_info {
    char domain[254];
    char selector[64];
    enum mailauth_dkim_alg alg;
    unsigned bits;
    int64_t created;
    bool is_retired;
    bool is_signing; /* the key signing for its domain and algorithm now */
    char *txt;       /* the DNS TXT value "v=DKIM1; k=...; p=..." (malloc'd) */
};
/* Generate a key (RSA 2048 or Ed25519) for domain/selector and store it. Fails if the
 * selector exists. info_r (may be NULL) describes it (free with ..._info_free). */
int mailauth_keys_generate(const char *data_dir, const char *domain, const char *selector,
                           enum mailauth_dkim_alg alg, struct mailauth_key_info *info_r,
                           char **error_r);
/* Every key of domain (NULL: of all domains), sorted by domain, then creation time.
 * *list_r is malloc'd; free with mailauth_keys_list_free. */
int mailauth_keys_list(const char *data_dir, const char *domain, struct mailauth_key_info **list_r,
                       size_t *n_r, char **error_r);
void mailauth_keys_list_free(struct mailauth_key_info *list, size_t n);
/* Retire domain/selector (it stops signing; remove its TXT record once messages signed
 * with it are delivered). */
int mailauth_keys_retire(const char *data_dir, const char *domain, const char *selector,
                         char **error_r);
/* The signing keys of domain: the oldest non-retired key per algorithm (RSA first).
 * keys_r[2]; *n_r 0 when the domain has none. BLOCKING (file reads). */
int mailauth_keys_load_signing(const char *data_dir, const char *domain,
                               struct mailauth_signing_key keys_r[2], size_t *n_r,
                               char **error_r);
/* Is s a valid selector / domain name for the key store (letters, digits, '-', '.')? */
bool mailauth_keys_is_valid_name(const char *s, size_t max);

/* Pure: the domain of the From: field among the parsed fields of header section h (RFC
 * 5322 §3.6.2), lower case, into out. false when there is none, there are several, or it
 * has several addresses (RFC 7489 §6.6.1: such messages get no DMARC identifier). */
bool mailauth_from_domain(const char *h, const struct mailauth_header *fields, size_t n,
                          char *out, size_t size);

#endif
