/*
 * directory_admin.c - changes to the directory for the CLI: domains, users, their
 * credentials, aliases. Names are checked and normalised here, passwords hashed here in
 * the schemes the backend stores (slow hashing happens before the backend takes any
 * lock or transaction), and the backend does the writing (dir_backend.h).
 *
 * A backend that cannot be written (a custom-query SQL directory) answers every change
 * with its read_only_reason. Errors come back as one readable line in *error_r.
 */
#include "auth/auth_internal.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The backend can be written, or -1 with the reason. */
static int writable(struct auth_service *svc, char **error_r)
{
    if (!svc->dir->read_only_reason)
        return 0;
    auth_set_error(error_r, "the directory (%s) is read-only: %s", svc->dir->name,
                   svc->dir->read_only_reason);
    return -1;
}

static bool domain_norm(const char *domain, char *out, size_t size, char **error_r)
{
    if (!auth_domain_normalize(domain, out, size)) {
        auth_set_error(error_r, "invalid domain name '%s'", domain ? domain : "");
        return false;
    }
    return true;
}

/* ---- domains ---------------------------------------------------------------------- */

int auth_domain_add(struct auth_service *svc, const char *domain, char **error_r)
{
    char d[256];
    if (writable(svc, error_r) < 0 || !domain_norm(domain, d, sizeof d, error_r))
        return -1;
    return svc->dir->ops->domain_add(svc->dir, d, error_r);
}

int auth_domain_del(struct auth_service *svc, const char *domain, char **error_r)
{
    char d[256];
    if (writable(svc, error_r) < 0 || !domain_norm(domain, d, sizeof d, error_r))
        return -1;
    return svc->dir->ops->domain_del(svc->dir, d, error_r);
}

int auth_domain_list(struct auth_service *svc, void (*cb)(const char *domain, void *arg), void *arg)
{
    if (svc->remote)
        return auth_remote_domain_list(svc, cb, arg);
    if (!svc->dir->ops->domain_list)
        return -1;
    return svc->dir->ops->domain_list(svc->dir, cb, arg);
}

/* ---- users ------------------------------------------------------------------------ */

static void hashed_free(struct dir_hashed *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->scheme[i]);
        if (h->value[i])
            memset(h->value[i], 0, strlen(h->value[i]));
        free(h->value[i]);
    }
    h->n = 0;
}

/* BLOCKING. Hash password in every scheme the backend stores (deduplicated, upper case). */
static int hash_all(struct auth_service *svc, const char *password, struct dir_hashed *h,
                    char **error_r)
{
    memset(h, 0, sizeof *h);
    if (!password) {
        auth_set_error(error_r, "no password given");
        return -1;
    }
    if (strlen(password) > AUTH_MAX_PASSWORD) {
        auth_set_error(error_r, "password too long");
        return -1;
    }
    char *list = strdup(svc->dir->write_schemes ? svc->dir->write_schemes : "");
    if (!list) {
        auth_set_error(error_r, "out of memory");
        return -1;
    }
    char *save = NULL;
    int rc = 0;
    for (char *s = strtok_r(list, " ,\t", &save); s && rc == 0; s = strtok_r(NULL, " ,\t", &save)) {
        for (char *p = s; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
        bool dup = false;
        for (size_t i = 0; i < h->n; i++)
            dup = dup || strcmp(h->scheme[i], s) == 0;
        if (dup || h->n >= DIR_MAX_SCHEMES)
            continue;
        char *value = NULL, *err = NULL;
        if (auth_password_hash(s, password, &svc->hash_cost, &value, &err) < 0) {
            auth_set_error(error_r, "scheme %s: %s", s, err ? err : "hashing failed");
            free(err);
            rc = -1;
            break;
        }
        h->scheme[h->n] = strdup(s);
        h->value[h->n] = value;
        h->n++;
        if (!h->scheme[h->n - 1]) {
            auth_set_error(error_r, "out of memory");
            rc = -1;
        }
    }
    free(list);
    if (rc == 0 && h->n == 0) {
        auth_set_error(error_r, "no password scheme configured (auth.password_schemes)");
        rc = -1;
    }
    if (rc < 0)
        hashed_free(h);
    return rc;
}

static bool user_norm(const char *address, char *out, size_t size, char **error_r)
{
    if (!address || !strchr(address, '@') || !auth_addr_normalize(address, out, size)) {
        auth_set_error(error_r, "invalid address '%s' (want user@domain)", address);
        return false;
    }
    return true;
}

/* The cheap checks before a slow hash: the domain is ours, the user is (not) there. */
static int user_precheck(struct auth_service *svc, const char *addr, bool want_exists,
                         char **error_r)
{
    const char *domain = strrchr(addr, '@') + 1;
    char target[256];
    struct dir_user_info u = {0};
    int d = svc->dir->ops->domain_lookup(svc->dir, domain, target, sizeof target);
    int e = d == DIR_DOMAIN_LOCAL ? svc->dir->ops->user_get(svc->dir, addr, &u) : 0;
    dir_user_info_free(&u);
    if (d < 0 || e < 0) {
        auth_set_error(error_r, "%s: lookup failed", svc->dir->name);
        return -1;
    }
    if (want_exists && e == 0) {
        auth_set_error(error_r, "no such user: %s", addr);
        return -1;
    }
    if (!want_exists && d != DIR_DOMAIN_LOCAL) {
        auth_set_error(error_r,
                       d == DIR_DOMAIN_ALIAS
                           ? "%s is an alias domain (of %s): add the user in the target domain"
                           : "unknown domain %s (add it with `tern domain add`)",
                       domain, target);
        return -1;
    }
    if (!want_exists && e == 1) {
        auth_set_error(error_r, "user %s already exists", addr);
        return -1;
    }
    return 0;
}

/* The checks every add makes before it stores anything: a writable directory, a
 * well-formed address (normalised into addr_r), a quota SQL can hold, a domain that exists
 * and no user of that name yet. 0 or -1 with *error_r. */
static int user_add_check(struct auth_service *svc, const char *address, uint64_t quota,
                          char addr_r[AUTH_MAX_LOGIN + 1], char **error_r)
{
    if (writable(svc, error_r) < 0 || !user_norm(address, addr_r, AUTH_MAX_LOGIN + 1, error_r))
        return -1;
    if (quota > INT64_MAX) {
        auth_set_error(error_r, "quota too large");
        return -1;
    }
    return user_precheck(svc, addr_r, false, error_r);
}

/* Store a checked new user with its credentials. */
static int user_add_store(struct auth_service *svc, const char *addr, const struct dir_hashed *h,
                          uint64_t quota, char **error_r)
{
    /* quota 0: "follow quota.default" where the backend has that, else unlimited */
    bool has_quota = quota != 0 || !svc->dir->has_quota_default;
    int rc = svc->dir->ops->user_add(svc->dir, addr, h, has_quota, quota, error_r);
    auth_mech_forget(svc); /* the credentials changed: so may the mechanism offer */
    return rc;
}

int auth_user_add(struct auth_service *svc, const char *address, const char *password,
                  uint64_t quota, char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    struct dir_hashed h;
    if (user_add_check(svc, address, quota, addr, error_r) < 0 ||
        hash_all(svc, password, &h, error_r) < 0)
        return -1;
    int rc = user_add_store(svc, addr, &h, quota, error_r);
    hashed_free(&h);
    return rc;
}

int auth_user_add_hashed(struct auth_service *svc, const char *address, const char *stored,
                         uint64_t quota, char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (user_add_check(svc, address, quota, addr, error_r) < 0)
        return -1;
    char scheme[64], value[AUTH_MAX_CRED + 16];
    if (!stored || strlen(stored) > AUTH_MAX_CRED) {
        auth_set_error(error_r, "password hash missing or longer than %d bytes", AUTH_MAX_CRED);
        return -1;
    }
    if (stored[0] == '$') { /* crypt(3), as Dovecot's CRYPT reads it */
        snprintf(scheme, sizeof scheme, "CRYPT");
        snprintf(value, sizeof value, "{CRYPT}%s", stored);
    } else if (auth_password_scheme_of(stored, scheme, sizeof scheme)) {
        snprintf(value, sizeof value, "%s", stored);
    } else {
        auth_set_error(error_r, "not a password hash Tern reads (want {SCHEME}data, e.g. "
                                "from doveadm pw, or a crypt(3) $id$ string)");
        return -1;
    }
    if (strlen(value) > AUTH_MAX_CRED) {
        auth_set_error(error_r, "password hash longer than %d bytes", AUTH_MAX_CRED);
        return -1;
    }
    /* a value the scheme cannot parse would lock the user out: refuse it now */
    if (auth_password_verify(value, "tern-probe") < 0) {
        auth_set_error(error_r, "a malformed %s value", scheme);
        return -1;
    }
    struct dir_hashed h = {.n = 1, .scheme = {scheme}, .value = {value}};
    return user_add_store(svc, addr, &h, quota, error_r);
}

int auth_user_del(struct auth_service *svc, const char *address, char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (writable(svc, error_r) < 0 || !user_norm(address, addr, sizeof addr, error_r))
        return -1;
    int rc = svc->dir->ops->user_del(svc->dir, addr, error_r);
    auth_mech_forget(svc);
    return rc;
}

int auth_user_set_quota(struct auth_service *svc, const char *address, uint64_t quota,
                        char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (writable(svc, error_r) < 0 || !user_norm(address, addr, sizeof addr, error_r))
        return -1;
    if (quota > INT64_MAX) {
        auth_set_error(error_r, "quota too large");
        return -1;
    }
    bool has_quota = quota != 0 || !svc->dir->has_quota_default;
    return svc->dir->ops->user_set_quota(svc->dir, addr, has_quota, quota, error_r);
}

int auth_user_set_enabled(struct auth_service *svc, const char *address, bool enabled,
                          char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (writable(svc, error_r) < 0 || !user_norm(address, addr, sizeof addr, error_r))
        return -1;
    int rc = svc->dir->ops->user_set_enabled(svc->dir, addr, enabled, error_r);
    auth_mech_forget(svc);
    return rc;
}

int auth_user_set_password(struct auth_service *svc, const char *address, const char *password,
                           char **error_r)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (writable(svc, error_r) < 0 || !user_norm(address, addr, sizeof addr, error_r) ||
        user_precheck(svc, addr, true, error_r) < 0)
        return -1;
    struct dir_hashed h;
    if (hash_all(svc, password, &h, error_r) < 0)
        return -1;
    int rc = svc->dir->ops->user_set_password(svc->dir, addr, &h, error_r);
    hashed_free(&h);
    auth_mech_forget(svc);
    return rc;
}

char *auth_user_schemes(struct auth_service *svc, const char *address)
{
    char addr[AUTH_MAX_LOGIN + 1];
    if (!auth_addr_normalize(address, addr, sizeof addr) || !svc->dir->ops->user_schemes)
        return NULL;
    return svc->dir->ops->user_schemes(svc->dir, addr);
}

/* ---- aliases ---------------------------------------------------------------------- */

/* Alias source: "local@domain" or "@domain" (catch-all); lower case into out. */
static bool alias_source_norm(const char *source, char *out, size_t size)
{
    if (source && source[0] == '@') {
        char d[256];
        if (!auth_domain_normalize(source + 1, d, sizeof d))
            return false;
        return (size_t)snprintf(out, size, "@%s", d) < size;
    }
    return source && strchr(source, '@') && auth_addr_normalize(source, out, size);
}

int auth_alias_add(struct auth_service *svc, const char *source, const char *target, char **error_r)
{
    char src[AUTH_MAX_LOGIN + 2], dst[AUTH_MAX_LOGIN + 1];
    if (writable(svc, error_r) < 0)
        return -1;
    if (!alias_source_norm(source, src, sizeof src)) {
        auth_set_error(error_r, "invalid alias source '%s' (want user@domain or @domain)", source);
        return -1;
    }
    if (!target || !strchr(target, '@') || !auth_addr_normalize(target, dst, sizeof dst)) {
        auth_set_error(error_r, "invalid alias target '%s' (want user@domain)", target);
        return -1;
    }
    return svc->dir->ops->alias_add(svc->dir, src, dst, error_r);
}

int auth_alias_del(struct auth_service *svc, const char *source, const char *target_or_null,
                   char **error_r)
{
    char src[AUTH_MAX_LOGIN + 2], dst[AUTH_MAX_LOGIN + 1];
    if (writable(svc, error_r) < 0)
        return -1;
    if (!alias_source_norm(source, src, sizeof src)) {
        auth_set_error(error_r, "invalid alias source '%s'", source);
        return -1;
    }
    if (target_or_null && !auth_addr_normalize(target_or_null, dst, sizeof dst)) {
        auth_set_error(error_r, "invalid alias target '%s'", target_or_null);
        return -1;
    }
    return svc->dir->ops->alias_del(svc->dir, src, target_or_null ? dst : NULL, error_r);
}

int auth_alias_list(struct auth_service *svc,
                    void (*cb)(const char *source, const char *target, void *arg), void *arg)
{
    if (!svc->dir->ops->alias_list)
        return -1;
    return svc->dir->ops->alias_list(svc->dir, cb, arg);
}
