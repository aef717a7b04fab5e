/*
 * keys.c - the DKIM key store under <data_dir>/dkim/<domain>/: one PEM private key per
 * selector (<selector>.pem, mode 0600 in a 0700 folder, owned by whoever runs `tern dkim
 * keygen`: run it as the server's run_user, or as root and chown, like the TLS key), a
 * "# created=SECONDS" line before the PEM block (OpenSSL skips text before BEGIN), and
 * retired keys renamed to <selector>.retired.
 *
 * Which key signs: per domain and algorithm the oldest one not retired. Rotation is
 * therefore: keygen a new selector, publish its record next to the old one, retire the
 * old one (the new one signs from then on), remove the old record later.
 */
#include "mailauth/mailauth-private.h"

#include "core/util.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEYS_PER_DOMAIN_MAX 64

bool mailauth_keys_is_valid_name(const char *s, size_t max)
{
    size_t l = strlen(s);
    if (l == 0 || l >= max || s[0] == '.' || s[0] == '-' || s[l - 1] == '.')
        return false;
    for (size_t i = 0; i < l; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || (c == '.' && s[i + 1] != '.');
        if (!ok)
            return false;
    }
    return true;
}

static char *keys_error(const char *fmt, const char *a, const char *b)
    __attribute__((format(printf, 1, 0)));
/* A malloc'd message from fmt with two string arguments. */
static char *keys_error(const char *fmt, const char *a, const char *b)
{
    struct buf m;
    buf_init(&m, 0);
    buf_printf(&m, fmt, a, b);
    return buf_steal(&m);
}

/* The DNS TXT value for a public key: "v=DKIM1; k=rsa; p=BASE64". malloc'd or NULL. */
static char *key_txt(EVP_PKEY *pk)
{
    struct buf b;
    buf_init(&b, 0);
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519) {
        unsigned char raw[32];
        size_t rl = sizeof raw;
        if (EVP_PKEY_get_raw_public_key(pk, raw, &rl) != 1)
            return NULL;
        buf_append_str(&b, "v=DKIM1; k=ed25519; p=");
        util_base64_encode(raw, rl, &b);
    } else {
        unsigned char *der = NULL;
        int dl = i2d_PUBKEY(pk, &der);
        if (dl <= 0)
            return NULL;
        buf_append_str(&b, "v=DKIM1; k=rsa; p=");
        util_base64_encode(der, (size_t)dl, &b);
        OPENSSL_free(der);
    }
    return buf_steal(&b);
}

/* Load <dir>/<file>: the key, its created= stamp. NULL on error. */
static EVP_PKEY *key_load(const char *path, int64_t *created_r)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char line[128];
    *created_r = 0;
    if (fgets(line, sizeof line, f) && strncmp(line, "# created=", 10) == 0)
        *created_r = strtoll(line + 10, NULL, 10);
    rewind(f);
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    return pk;
}

static void info_fill(struct mailauth_key_info *info, const char *domain, const char *selector,
                      EVP_PKEY *pk, int64_t created, bool is_retired)
{
    memset(info, 0, sizeof *info);
    snprintf(info->domain, sizeof info->domain, "%s", domain);
    snprintf(info->selector, sizeof info->selector, "%s", selector);
    info->alg = EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519 ? MAILAUTH_DKIM_ED25519_SHA256
                                                             : MAILAUTH_DKIM_RSA_SHA256;
    info->bits = (unsigned)EVP_PKEY_get_bits(pk);
    info->created = created;
    info->is_retired = is_retired;
    info->txt = key_txt(pk);
}

/* The folder of domain's keys and the two names of selector's key (active, retired),
 * after checking both names. 0, or -1 with *error_r. */
static int keys_paths(const char *data_dir, const char *domain, const char *selector,
                      char dir[4096], char pem[4200], char retired[4200], char **error_r)
{
    if (!mailauth_keys_is_valid_name(domain, 254) || !mailauth_keys_is_valid_name(selector, 64)) {
        *error_r = keys_error("invalid domain or selector: %s %s", domain, selector);
        return -1;
    }
    snprintf(dir, 4096, "%s/dkim/%s", data_dir, domain);
    snprintf(pem, 4200, "%s/%s.pem", dir, selector);
    snprintf(retired, 4200, "%s/%s.retired", dir, selector);
    return 0;
}

int mailauth_keys_generate(const char *data_dir, const char *domain, const char *selector,
                           enum mailauth_dkim_alg alg, struct mailauth_key_info *info_r,
                           char **error_r)
{
    char dir[4096], path[4200], retired[4200];
    if (keys_paths(data_dir, domain, selector, dir, path, retired, error_r) < 0)
        return -1;
    if (util_mkdir_p(dir, 0700) < 0) {
        *error_r = keys_error("cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (access(retired, F_OK) == 0) {
        *error_r = keys_error("selector %s of %s was used before: choose a new one", selector,
                              domain);
        return -1;
    }
    EVP_PKEY *pk = alg == MAILAUTH_DKIM_ED25519_SHA256 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                                                       : EVP_PKEY_Q_keygen(NULL, NULL, "RSA",
                                                                           (size_t)2048);
    if (!pk) {
        *error_r = strdup("key generation failed");
        return -1;
    }
    /* O_EXCL: never overwrite a key whose record may be published */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        *error_r = keys_error("cannot create %s: %s", path,
                              errno == EEXIST ? "the selector exists" : strerror(errno));
        EVP_PKEY_free(pk);
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    int64_t now = (int64_t)time(NULL);
    bool ok = f && fprintf(f, "# created=%lld\n", (long long)now) > 0 &&
              PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1 && fflush(f) == 0 &&
              fsync(fd) == 0;
    if (f)
        ok = fclose(f) == 0 && ok;
    else
        close(fd);
    if (!ok || util_fsync_dir(dir) < 0) {
        *error_r = keys_error("cannot write %s: %s", path, strerror(errno));
        unlink(path);
        EVP_PKEY_free(pk);
        return -1;
    }
    if (info_r)
        info_fill(info_r, domain, selector, pk, now, false);
    EVP_PKEY_free(pk);
    return 0;
}

static int info_cmp(const void *a, const void *b)
{
    const struct mailauth_key_info *x = a, *y = b;
    int c = strcmp(x->domain, y->domain);
    if (c)
        return c;
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return strcmp(x->selector, y->selector);
}

/* Append the keys of one domain folder to *list. */
static int list_domain(const char *data_dir, const char *domain, struct mailauth_key_info **list,
                       size_t *n, size_t *cap)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/dkim/%s", data_dir, domain);
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    size_t found = 0;
    while ((e = readdir(d)) && found < KEYS_PER_DOMAIN_MAX) {
        const char *dot = strrchr(e->d_name, '.');
        if (!dot || dot == e->d_name)
            continue;
        bool is_retired = strcmp(dot, ".retired") == 0;
        if (!is_retired && strcmp(dot, ".pem") != 0)
            continue;
        char selector[64];
        size_t sl = (size_t)(dot - e->d_name);
        if (sl >= sizeof selector)
            continue;
        memcpy(selector, e->d_name, sl);
        selector[sl] = '\0';
        if (!mailauth_keys_is_valid_name(selector, sizeof selector))
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int64_t created;
        EVP_PKEY *pk = key_load(path, &created);
        if (!pk)
            continue;
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 8;
            struct mailauth_key_info *nl = realloc(*list, nc * sizeof *nl);
            if (!nl) {
                EVP_PKEY_free(pk);
                closedir(d);
                return -1;
            }
            *list = nl;
            *cap = nc;
        }
        info_fill(&(*list)[(*n)++], domain, selector, pk, created, is_retired);
        EVP_PKEY_free(pk);
        found++;
    }
    closedir(d);
    return 0;
}

int mailauth_keys_list(const char *data_dir, const char *domain, struct mailauth_key_info **list_r,
                       size_t *n_r, char **error_r)
{
    *list_r = NULL;
    *n_r = 0;
    size_t cap = 0;
    if (domain) {
        if (!mailauth_keys_is_valid_name(domain, 254)) {
            *error_r = keys_error("invalid domain: %s%s", domain, "");
            return -1;
        }
        if (list_domain(data_dir, domain, list_r, n_r, &cap) < 0) {
            *error_r = keys_error("cannot read the keys of %s: %s", domain, strerror(errno));
            return -1;
        }
    } else {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/dkim", data_dir);
        DIR *d = opendir(dir);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                if (e->d_name[0] == '.' || !mailauth_keys_is_valid_name(e->d_name, 254))
                    continue;
                if (list_domain(data_dir, e->d_name, list_r, n_r, &cap) < 0) {
                    closedir(d);
                    *error_r = keys_error("cannot read the keys of %s: %s", e->d_name,
                                          strerror(errno));
                    return -1;
                }
            }
            closedir(d);
        }
    }
    if (*n_r > 1)
        qsort(*list_r, *n_r, sizeof **list_r, info_cmp);
    /* mark the signing key of each domain and algorithm: the oldest not retired */
    for (size_t i = 0; i < *n_r; i++) {
        struct mailauth_key_info *k = &(*list_r)[i];
        if (k->is_retired)
            continue;
        bool has_older = false;
        for (size_t j = 0; j < i; j++) {
            const struct mailauth_key_info *o = &(*list_r)[j];
            if (!o->is_retired && o->alg == k->alg && strcmp(o->domain, k->domain) == 0)
                has_older = true;
        }
        k->is_signing = !has_older;
    }
    return 0;
}

void mailauth_keys_list_free(struct mailauth_key_info *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i].txt);
    free(list);
}

int mailauth_keys_retire(const char *data_dir, const char *domain, const char *selector,
                         char **error_r)
{
    char dir[4096], from[4200], to[4200];
    if (keys_paths(data_dir, domain, selector, dir, from, to, error_r) < 0)
        return -1;
    if (rename(from, to) < 0) {
        *error_r = keys_error(errno == ENOENT ? "no active key %s for %s" : "cannot retire %s: %s",
                              errno == ENOENT ? selector : from,
                              errno == ENOENT ? domain : strerror(errno));
        return -1;
    }
    util_fsync_dir(dir);
    return 0;
}

/* A process-wide cache of the signing keys of recently used domains, so that signing a
 * message costs no directory scan and no PEM parsing: an entry is valid while its folder's
 * mtime (changed by keygen and retire, which create and rename files there) is the same. */
#define KEY_CACHE_SIZE 64
struct key_cache_entry {
    char path[4400]; /* <data_dir>/dkim/<domain> */
    struct timespec mtime;
    struct mailauth_signing_key keys[2];
    size_t n;
    uint64_t used;
};
static struct key_cache_entry key_cache[KEY_CACHE_SIZE];
static uint64_t key_cache_clock;
static pthread_mutex_t key_cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* Copy entry's keys to keys_r (a reference each). */
static void key_cache_copy(const struct key_cache_entry *e, struct mailauth_signing_key *keys_r,
                           size_t *n_r)
{
    for (size_t i = 0; i < e->n; i++) {
        keys_r[i] = e->keys[i];
        EVP_PKEY_up_ref(e->keys[i].pkey);
    }
    *n_r = e->n;
}

static int keys_load_signing_uncached(const char *data_dir, const char *domain,
                                      struct mailauth_signing_key keys_r[2], size_t *n_r,
                                      char **error_r);

int mailauth_keys_load_signing(const char *data_dir, const char *domain,
                               struct mailauth_signing_key keys_r[2], size_t *n_r,
                               char **error_r)
{
    *n_r = 0;
    if (!mailauth_keys_is_valid_name(domain, 254))
        return 0;
    char path[4400];
    snprintf(path, sizeof path, "%s/dkim/%s", data_dir, domain);
    struct stat st;
    if (stat(path, &st) < 0)
        return 0; /* no folder: no keys */
    pthread_mutex_lock(&key_cache_lock);
    struct key_cache_entry *victim = &key_cache[0];
    for (size_t i = 0; i < KEY_CACHE_SIZE; i++) {
        struct key_cache_entry *e = &key_cache[i];
        if (e->path[0] && strcmp(e->path, path) == 0) {
            if (e->mtime.tv_sec == st.st_mtim.tv_sec && e->mtime.tv_nsec == st.st_mtim.tv_nsec) {
                e->used = ++key_cache_clock;
                key_cache_copy(e, keys_r, n_r);
                pthread_mutex_unlock(&key_cache_lock);
                return 0;
            }
            victim = e; /* stale: reload into the same slot */
            break;
        }
        if (e->used < victim->used)
            victim = e;
    }
    pthread_mutex_unlock(&key_cache_lock);
    struct mailauth_signing_key fresh[2];
    size_t n = 0;
    if (keys_load_signing_uncached(data_dir, domain, fresh, &n, error_r) < 0)
        return -1;
    pthread_mutex_lock(&key_cache_lock);
    for (size_t i = 0; i < victim->n; i++)
        mailauth_signing_key_free(&victim->keys[i]);
    memset(victim, 0, sizeof *victim);
    snprintf(victim->path, sizeof victim->path, "%s", path);
    victim->mtime = st.st_mtim;
    for (size_t i = 0; i < n; i++)
        victim->keys[i] = fresh[i];
    victim->n = n;
    victim->used = ++key_cache_clock;
    key_cache_copy(victim, keys_r, n_r);
    pthread_mutex_unlock(&key_cache_lock);
    return 0;
}

static int keys_load_signing_uncached(const char *data_dir, const char *domain,
                                      struct mailauth_signing_key keys_r[2], size_t *n_r,
                                      char **error_r)
{
    *n_r = 0;
    if (!mailauth_keys_is_valid_name(domain, 254))
        return 0;
    struct mailauth_key_info *list;
    size_t n;
    if (mailauth_keys_list(data_dir, domain, &list, &n, error_r) < 0)
        return -1;
    static const enum mailauth_dkim_alg order[2] = {MAILAUTH_DKIM_RSA_SHA256,
                                                    MAILAUTH_DKIM_ED25519_SHA256};
    int rc = 0;
    for (int a = 0; a < 2 && rc == 0; a++) {
        for (size_t i = 0; i < n; i++) {
            if (!list[i].is_signing || list[i].alg != order[a])
                continue;
            char path[4400];
            snprintf(path, sizeof path, "%s/dkim/%s/%s.pem", data_dir, domain, list[i].selector);
            int64_t created;
            EVP_PKEY *pk = key_load(path, &created);
            if (!pk) {
                *error_r = keys_error("cannot load the DKIM key %s%s", path, "");
                rc = -1;
                break;
            }
            struct mailauth_signing_key *k = &keys_r[(*n_r)++];
            memset(k, 0, sizeof *k);
            snprintf(k->domain, sizeof k->domain, "%s", domain);
            snprintf(k->selector, sizeof k->selector, "%s", list[i].selector);
            k->alg = order[a];
            k->pkey = pk;
            break;
        }
    }
    if (rc < 0) {
        for (size_t i = 0; i < *n_r; i++)
            mailauth_signing_key_free(&keys_r[i]);
        *n_r = 0;
    }
    mailauth_keys_list_free(list, n);
    return rc;
}
