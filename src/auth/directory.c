/*
 * directory.c - the directory's rules above its storage backend (dir_backend.h): name
 * normalisation, opening the backend directory.driver names, routing (local domains,
 * alias domains, alias expansion, +tag, catch-all), users and their homes, senders, and
 * credential loading.
 *
 * Every address handled here is lower case: local parts match case-insensitively, so
 * the lower-case form is the canonical one, in every backend.
 *
 * Alias domains (postfixadmin's alias_domain table, a custom alias_domain_query): an
 * address local@D in an alias domain D of target T is local@T, after the aliases D has
 * of its own. Logins at local@D are the user local@T.
 *
 * Thread rules: any thread; every call may reach the backend (auth.h says which block
 * on the network).
 */
#include "auth/auth_internal.h"
#include "policy/penalty.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"

#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void auth_set_error(char **error_r, const char *fmt, ...)
{
    if (!error_r)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error_r, fmt, ap) < 0)
        *error_r = NULL;
    va_end(ap);
}

/* ---- names ------------------------------------------------------------------------ */

/* A character allowed in a stored address: printable ASCII or UTF-8 (SMTPUTF8), no
 * whitespace, no address delimiters. */
static bool addr_char_ok(unsigned char c)
{
    if (c >= 0x80)
        return true;
    if (c <= 0x20 || c == 0x7f)
        return false;
    return strchr("<>()[],;:\\\"", c) == NULL;
}

static bool domain_ok(const char *d, size_t len)
{
    if (len == 0 || len > 255 || d[0] == '.' || d[len - 1] == '.' || d[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];
        if (!(c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
        if (c == '.' && d[i + 1] == '.')
            return false;
    }
    return true;
}

static void lower_in_place(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

bool auth_addr_normalize(const char *addr, char *out, size_t size)
{
    if (!addr)
        return false;
    size_t len = strlen(addr);
    const char *at = strrchr(addr, '@');
    if (!at || at == addr || len >= size || len > AUTH_MAX_LOGIN)
        return false;
    size_t local_len = (size_t)(at - addr);
    if (local_len > 64 || !domain_ok(at + 1, len - local_len - 1))
        return false;
    for (size_t i = 0; i < local_len; i++)
        if (!addr_char_ok((unsigned char)addr[i]) || addr[i] == '@')
            return false;
    memmove(out, addr, len + 1);
    lower_in_place(out);
    return true;
}

bool auth_domain_normalize(const char *d, char *out, size_t size)
{
    size_t len = d ? strlen(d) : 0;
    if (!domain_ok(d, len) || len >= size)
        return false;
    memmove(out, d, len + 1);
    lower_in_place(out);
    return true;
}

int auth_name_canonical(struct auth_service *svc, const char *login, char *out, size_t size)
{
    if (!login || !*login || strlen(login) > AUTH_MAX_LOGIN)
        return 0;
    if (strchr(login, '@'))
        return auth_addr_normalize(login, out, size) ? 1 : 0;
    /* A bare name: auth.default_domain, else the only domain there is. */
    char domain[256] = "";
    if (svc->default_domain[0]) {
        snprintf(domain, sizeof domain, "%s", svc->default_domain);
    } else {
        int rc = svc->dir->ops->domain_single(svc->dir, domain, sizeof domain);
        if (rc <= 0)
            return rc;
    }
    char full[AUTH_MAX_LOGIN * 2 + 2];
    snprintf(full, sizeof full, "%s@%s", login, domain);
    return auth_addr_normalize(full, out, size) ? 1 : 0;
}

/* ---- open / close ----------------------------------------------------------------- */

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int auth_config_check(const struct config *cfg, char **error_r)
{
    if (cfg->directory_driver != DIRECTORY_SQLITE)
        return dir_sql_config_check(cfg, error_r);
    /* An SQL setting without an SQL driver would silently serve tern.db instead. */
    static const char *const sql_only[] = {"directory.dbname", "directory.password_query",
                                           "directory.user_query", "directory.domain_query"};
    const char *const values[] = {cfg->directory_dbname, cfg->directory_password_query,
                                  cfg->directory_user_query, cfg->directory_domain_query};
    for (size_t i = 0; i < sizeof sql_only / sizeof sql_only[0]; i++) {
        if (values[i] && values[i][0]) {
            char *origin = config_key_origin(cfg, sql_only[i]);
            auth_set_error(error_r, "%s: %s: is used only with directory.driver = mysql or "
                                    "postgresql (the directory is tern.db)",
                           origin ? origin : "?", sql_only[i]);
            free(origin);
            return -1;
        }
    }
    return 0;
}

struct auth_service *auth_service_open(const struct config *cfg, char **error_r)
{
    struct auth_service *svc = calloc(1, sizeof *svc);
    if (!svc) {
        auth_set_error(error_r, "out of memory");
        return NULL;
    }
    svc->data_dir = xstrdup(cfg->data_dir ? cfg->data_dir : ".");
    svc->default_domain = xstrdup(cfg->default_domain ? cfg->default_domain : "");
    svc->allow_plaintext = cfg->allow_plaintext;
    svc->quota_default = cfg->quota_default;
    auth_hash_cost_from_config(cfg, &svc->hash_cost);
    pthread_mutex_init(&svc->penalty_lock, NULL);
    struct penalty_limits limits;
    penalty_limits_from_config(cfg, &limits);
    svc->penalty = penalty_table_new(&limits);
    pthread_mutex_init(&svc->mech_lock, NULL);
    if (svc->data_dir) {
        if (cfg->directory_mail_root && cfg->directory_mail_root[0])
            svc->mail_root = xstrdup(cfg->directory_mail_root);
        else if (asprintf(&svc->mail_root, "%s/mail", svc->data_dir) < 0)
            svc->mail_root = NULL;
    }
    if (!svc->data_dir || !svc->default_domain || !svc->mail_root || !svc->penalty) {
        auth_set_error(error_r, "out of memory");
        goto fail;
    }
    lower_in_place(svc->default_domain);
    RAND_bytes(svc->fake_secret, sizeof svc->fake_secret);
    svc->dir = cfg->directory_driver == DIRECTORY_SQLITE ? dir_sqlite_open(cfg, error_r)
                                                         : dir_sql_open(cfg, error_r);
    if (!svc->dir)
        goto fail;
    return svc;
fail:
    auth_service_close(svc);
    return NULL;
}

void auth_service_close(struct auth_service *svc)
{
    if (!svc)
        return;
    auth_remote_close(svc);
    auth_penalty_persist_stop(svc); /* its last save, before the table goes */
    if (svc->dir)
        svc->dir->ops->close(svc->dir);
    if (svc->penalty) {
        pthread_mutex_destroy(&svc->penalty_lock);
        penalty_table_free(svc->penalty);
    }
    pthread_mutex_destroy(&svc->mech_lock);
    free(svc->data_dir);
    free(svc->default_domain);
    free(svc->mail_root);
    free(svc);
}

bool auth_directory_may_block(const struct auth_service *svc)
{
    return svc->remote || svc->dir->is_network; /* the auth process: always a wait */
}

const char *auth_directory_name(const struct auth_service *svc)
{
    return svc->remote ? "the auth process" : svc->dir->name;
}

const char *auth_directory_read_only_reason(const struct auth_service *svc)
{
    return svc->remote ? NULL : svc->dir->read_only_reason;
}

/* ---- domains ---------------------------------------------------------------------- */

int auth_domain_is_local(struct auth_service *svc, const char *domain)
{
    if (svc->remote)
        return auth_remote_domain_is_local(svc, domain);
    char d[256], target[256];
    if (!auth_domain_normalize(domain, d, sizeof d))
        return 0;
    int kind = svc->dir->ops->domain_lookup(svc->dir, d, target, sizeof target);
    return kind < 0 ? -1 : kind != DIR_DOMAIN_NONE;
}

int auth_domain_is_local_nonblocking(struct auth_service *svc, const char *domain)
{
    return auth_directory_may_block(svc) ? -1 : auth_domain_is_local(svc, domain);
}

/* ---- alias expansion -------------------------------------------------------------- */

struct resolve {
    struct auth_targets *t;
    char **visited;
    size_t n_visited;
    bool use_catchall;
    bool failed; /* the backend could not answer: the whole answer is -1 */
};

static bool list_has(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

bool dir_list_add(char ***list, size_t *n, const char *s)
{
    if (list_has(*list, *n, s))
        return true;
    if (*n >= AUTH_ALIAS_MAX_OUT)
        return false;
    char **grown = realloc(*list, (*n + 1) * sizeof **list);
    if (!grown)
        return false;
    *list = grown;
    if (!(grown[*n] = strdup(s)))
        return false;
    (*n)++;
    return true;
}

void dir_list_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void dir_user_info_free(struct dir_user_info *u)
{
    if (!u)
        return;
    free(u->address);
    free(u->home);
    memset(u, 0, sizeof *u);
}

/* Does this (normalised) user exist? 1 / 0 / -1. */
static int user_exists(struct auth_service *svc, const char *address)
{
    struct dir_user_info u = {0};
    int rc = svc->dir->ops->user_get(svc->dir, address, &u);
    dir_user_info_free(&u);
    return rc;
}

static int expand(struct auth_service *svc, struct resolve *r, const char *addr, int depth);

/* Expand each target of an alias source; 1 if the source had targets, 0 if none. */
static int expand_alias(struct auth_service *svc, struct resolve *r, const char *source,
                        const char *self, int depth)
{
    char **targets = NULL;
    size_t n = 0;
    if (svc->dir->ops->alias_targets(svc->dir, source, &targets, &n) < 0) {
        r->failed = true;
        return -1;
    }
    for (size_t i = 0; i < n && !r->failed; i++) {
        char target[AUTH_MAX_LOGIN + 1];
        if (!auth_addr_normalize(targets[i], target, sizeof target)) {
            log_warning("auth", "alias %s: target '%.100s' is not an address; skipped", source,
                        targets[i]);
            continue;
        }
        if (strcmp(target, self) == 0) {
            /* An alias to itself keeps a copy for the user of that name (postfixadmin
             * gives every mailbox such a row). */
            int u = user_exists(svc, self);
            if (u < 0)
                r->failed = true;
            else if (u > 0 && !dir_list_add(&r->t->local, &r->t->n_local, self))
                r->failed = true;
        } else {
            expand(svc, r, target, depth + 1);
        }
    }
    dir_list_free(targets, n);
    return n > 0 ? 1 : 0;
}

/* Alias or user for exactly this address (no tag stripping, no catch-all). */
static int expand_exact(struct auth_service *svc, struct resolve *r, const char *addr, int depth)
{
    int a = expand_alias(svc, r, addr, addr, depth);
    if (a != 0)
        return a;
    int u = user_exists(svc, addr);
    if (u < 0) {
        r->failed = true;
        return -1;
    }
    if (u > 0 && !dir_list_add(&r->t->local, &r->t->n_local, addr))
        r->failed = true;
    return u;
}

/* An address in an alias domain: its own aliases first, then the same local part in the
 * target domain (with everything that domain has: users, +tag, catch-all), then the
 * alias domain's own catch-all (Postfix's order with postfixadmin's maps). */
static int expand_in_alias_domain(struct auth_service *svc, struct resolve *r, const char *addr,
                                  const char *target_domain, int depth)
{
    const char *at = strrchr(addr, '@');
    int rc = expand_alias(svc, r, addr, addr, depth);
    if (rc != 0)
        return rc;
    char mapped[AUTH_MAX_LOGIN * 2 + 2];
    snprintf(mapped, sizeof mapped, "%.*s@%s", (int)(at - addr), addr, target_domain);
    if (strlen(mapped) > AUTH_MAX_LOGIN)
        return 0;
    size_t before = r->t->n_local + r->t->n_remote;
    rc = expand(svc, r, mapped, depth + 1);
    if (rc < 0 || r->failed)
        return -1;
    if (r->t->n_local + r->t->n_remote > before)
        return 1;
    return r->use_catchall ? expand_alias(svc, r, at, addr, depth) : 0;
}

/* Resolve one address into r. Order: exact alias, exact user, user+tag -> user, then the
 * domain's catch-all (so an exact user always beats a catch-all). */
static int expand(struct auth_service *svc, struct resolve *r, const char *addr, int depth)
{
    if (r->failed)
        return -1;
    if (depth > AUTH_ALIAS_DEPTH) {
        log_warning("auth", "alias expansion too deep at %s; branch dropped", addr);
        return 0;
    }
    if (list_has(r->visited, r->n_visited, addr))
        return 0; /* loop: this address is already being expanded */
    if (!dir_list_add(&r->visited, &r->n_visited, addr)) {
        r->failed = true;
        return -1;
    }
    const char *at = strrchr(addr, '@');
    if (!at)
        return 0;
    char target_domain[256];
    int kind = svc->dir->ops->domain_lookup(svc->dir, at + 1, target_domain, sizeof target_domain);
    if (kind < 0) {
        r->failed = true;
        return -1;
    }
    if (kind == DIR_DOMAIN_NONE) {
        if (!dir_list_add(&r->t->remote, &r->t->n_remote, addr))
            r->failed = true;
        return 1;
    }
    if (kind == DIR_DOMAIN_ALIAS)
        return expand_in_alias_domain(svc, r, addr, target_domain, depth);
    int rc = expand_exact(svc, r, addr, depth);
    if (rc != 0)
        return rc;
    /* user+tag@domain -> user@domain (Postfix recipient_delimiter "+"). */
    const char *plus = memchr(addr, '+', (size_t)(at - addr));
    if (plus && plus != addr) {
        char base[AUTH_MAX_LOGIN + 1];
        snprintf(base, sizeof base, "%.*s%s", (int)(plus - addr), addr, at);
        if (!list_has(r->visited, r->n_visited, base)) {
            if (!dir_list_add(&r->visited, &r->n_visited, base)) {
                r->failed = true;
                return -1;
            }
            rc = expand_exact(svc, r, base, depth);
            if (rc != 0)
                return rc;
        }
    }
    if (r->use_catchall)
        return expand_alias(svc, r, at, addr, depth);
    return 0;
}

static int resolve_address(struct auth_service *svc, const char *addr, bool use_catchall,
                           struct auth_targets *t)
{
    struct resolve r = {.t = t, .use_catchall = use_catchall};
    memset(t, 0, sizeof *t);
    expand(svc, &r, addr, 0);
    dir_list_free(r.visited, r.n_visited);
    if (r.failed) {
        auth_targets_free(t);
        return -1;
    }
    /* An alias whose every target is gone delivers nowhere: report unknown (550) rather
     * than accept mail we would drop. */
    return t->n_local + t->n_remote > 0 ? 1 : 0;
}

int auth_resolve(struct auth_service *svc, const char *address, struct auth_targets *t)
{
    if (svc->remote)
        return auth_remote_resolve(svc, address, t);
    char addr[AUTH_MAX_LOGIN + 1];
    memset(t, 0, sizeof *t);
    if (!auth_addr_normalize(address, addr, sizeof addr))
        return 0;
    return resolve_address(svc, addr, true, t);
}

void auth_targets_free(struct auth_targets *t)
{
    if (!t)
        return;
    dir_list_free(t->local, t->n_local);
    dir_list_free(t->remote, t->n_remote);
    memset(t, 0, sizeof *t);
}

/* ---- users ------------------------------------------------------------------------ */

/* An auth_user from a backend row: the home (Tern's layout unless the backend gave
 * one) and the quota (quota.default unless the row has its own). */
static int user_fill(struct auth_service *svc, const struct dir_user_info *in,
                     struct auth_user *u)
{
    memset(u, 0, sizeof *u);
    const char *at = in->address ? strrchr(in->address, '@') : NULL;
    if (!at)
        return -1;
    u->address = strdup(in->address);
    if (in->home) {
        u->home = strdup(in->home);
    } else if (asprintf(&u->home, "%s/%s/%.*s", svc->mail_root, at + 1,
                        (int)(at - in->address), in->address) < 0) {
        u->home = NULL;
    }
    if (!u->address || !u->home) {
        auth_user_free(u);
        return -1;
    }
    u->quota = in->has_quota ? in->quota : svc->quota_default;
    u->enabled = in->enabled;
    return 0;
}

/* The backend row of a canonical address, following an alias domain to its target. */
static int user_get_following_alias_domain(struct auth_service *svc, const char *addr,
                                           struct dir_user_info *u)
{
    int rc = svc->dir->ops->user_get(svc->dir, addr, u);
    if (rc != 0)
        return rc;
    const char *at = strrchr(addr, '@');
    char target[256], mapped[AUTH_MAX_LOGIN * 2 + 2];
    int kind = svc->dir->ops->domain_lookup(svc->dir, at + 1, target, sizeof target);
    if (kind != DIR_DOMAIN_ALIAS)
        return kind < 0 ? -1 : 0;
    snprintf(mapped, sizeof mapped, "%.*s@%s", (int)(at - addr), addr, target);
    if (strlen(mapped) > AUTH_MAX_LOGIN)
        return 0;
    return svc->dir->ops->user_get(svc->dir, mapped, u);
}

int auth_user_lookup(struct auth_service *svc, const char *login, struct auth_user *u_r)
{
    if (svc->remote)
        return auth_remote_user_lookup(svc, login, u_r);
    char addr[AUTH_MAX_LOGIN + 1];
    memset(u_r, 0, sizeof *u_r);
    int rc = auth_name_canonical(svc, login, addr, sizeof addr);
    if (rc != 1)
        return rc;
    struct dir_user_info u = {0};
    rc = user_get_following_alias_domain(svc, addr, &u);
    if (rc == 1 && user_fill(svc, &u, u_r) < 0)
        rc = -1;
    dir_user_info_free(&u);
    return rc;
}

void auth_user_free(struct auth_user *u)
{
    if (!u)
        return;
    free(u->address);
    free(u->home);
    memset(u, 0, sizeof *u);
}

void auth_rcpt_lookup(struct auth_service *svc, const char *domain, const char *address,
                      struct auth_rcpt *r)
{
    if (svc->remote) {
        auth_remote_rcpt_lookup(svc, domain, address, r);
        return;
    }
    memset(r, 0, sizeof *r);
    r->is_local = auth_domain_is_local(svc, domain);
    if (r->is_local != 1)
        return;
    r->resolved = auth_resolve(svc, address, &r->t);
    if (r->resolved != 1)
        return;
    size_t n = r->t.n_local;
    r->found = calloc(n ? n : 1, sizeof *r->found);
    r->users = calloc(n ? n : 1, sizeof *r->users);
    if (!r->found || !r->users) {
        auth_rcpt_free(r);
        r->is_local = -1;
        return;
    }
    for (size_t i = 0; i < n; i++)
        r->found[i] = i < AUTH_RCPT_USERS_MAX ? auth_user_lookup(svc, r->t.local[i], &r->users[i])
                                               : 2;
}

void auth_rcpt_free(struct auth_rcpt *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->users && i < r->t.n_local; i++)
        auth_user_free(&r->users[i]);
    free(r->users);
    free(r->found);
    auth_targets_free(&r->t);
    memset(r, 0, sizeof *r);
}

struct user_list_ctx {
    struct auth_service *svc;
    void (*cb)(const struct auth_user *u, void *arg);
    void *arg;
};

static void user_list_one(const struct dir_user_info *in, void *arg)
{
    struct user_list_ctx *ctx = arg;
    struct auth_user u;
    if (user_fill(ctx->svc, in, &u) == 0) {
        ctx->cb(&u, ctx->arg);
        auth_user_free(&u);
    }
}

int auth_user_list(struct auth_service *svc, const char *domain_or_null,
                   void (*cb)(const struct auth_user *u, void *arg), void *arg)
{
    char d[256];
    if (domain_or_null && !auth_domain_normalize(domain_or_null, d, sizeof d))
        return -1;
    if (!svc->dir->ops->user_list)
        return -1;
    struct user_list_ctx ctx = {svc, cb, arg};
    return svc->dir->ops->user_list(svc->dir, domain_or_null ? d : NULL, user_list_one, &ctx);
}

/* ---- senders ---------------------------------------------------------------------- */

bool auth_sender_allowed(struct auth_service *svc, const char *user, const char *mail_from)
{
    if (svc->remote)
        return auth_remote_sender_allowed(svc, user, mail_from);
    if (!mail_from || !*mail_from)
        return true; /* the null sender (bounces) */
    char u[AUTH_MAX_LOGIN + 1], from[AUTH_MAX_LOGIN + 1];
    if (!auth_addr_normalize(user, u, sizeof u) ||
        !auth_addr_normalize(mail_from, from, sizeof from))
        return false;
    if (strcmp(u, from) == 0)
        return true;
    /* Own address with a +tag. */
    const char *at = strrchr(from, '@');
    const char *plus = memchr(from, '+', (size_t)(at - from));
    if (plus) {
        char base[AUTH_MAX_LOGIN + 1];
        snprintf(base, sizeof base, "%.*s%s", (int)(plus - from), from, at);
        if (strcmp(base, u) == 0)
            return true;
    }
    /* An alias (or the alias-domain twin of the address) that resolves to this user; a
     * catch-all does not count, or one catch-all would let its owner send as any address
     * of the domain. */
    struct auth_targets t;
    bool allowed = false;
    if (auth_domain_is_local(svc, at + 1) == 1 && resolve_address(svc, from, false, &t) == 1) {
        allowed = list_has(t.local, t.n_local, u);
        auth_targets_free(&t);
    }
    return allowed;
}

/* ---- credentials ------------------------------------------------------------------ */

bool auth_creds_add(struct auth_cred_set *cs, const char *scheme, const char *value)
{
    if (cs->n >= DIR_MAX_SCHEMES)
        return false;
    cs->scheme[cs->n] = strdup(scheme);
    cs->value[cs->n] = strdup(value);
    cs->n++;
    return cs->scheme[cs->n - 1] && cs->value[cs->n - 1];
}

int auth_creds_load(struct auth_service *svc, const char *address, struct auth_cred_set *cs)
{
    memset(cs, 0, sizeof *cs);
    int rc = svc->dir->ops->creds_load(svc->dir, address, cs);
    if (rc == 0) {
        /* an alias domain's address logs in as the user of the target domain */
        const char *at = strrchr(address, '@');
        char target[256], mapped[AUTH_MAX_LOGIN * 2 + 2];
        int kind = at ? svc->dir->ops->domain_lookup(svc->dir, at + 1, target, sizeof target)
                      : DIR_DOMAIN_NONE;
        if (kind < 0) {
            rc = -1;
        } else if (kind == DIR_DOMAIN_ALIAS) {
            snprintf(mapped, sizeof mapped, "%.*s@%s", (int)(at - address), address, target);
            if (strlen(mapped) <= AUTH_MAX_LOGIN)
                rc = svc->dir->ops->creds_load(svc->dir, mapped, cs);
        }
    }
    if (rc != 1)
        auth_creds_free(cs);
    return rc;
}

void auth_creds_free(struct auth_cred_set *cs)
{
    free(cs->address);
    for (size_t i = 0; i < cs->n; i++) {
        free(cs->scheme[i]);
        if (cs->value[i]) {
            memset(cs->value[i], 0, strlen(cs->value[i]));
            free(cs->value[i]);
        }
    }
    memset(cs, 0, sizeof *cs);
}

const char *auth_creds_find(const struct auth_cred_set *cs, const char *scheme)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->scheme[i] && strcasecmp(cs->scheme[i], scheme) == 0)
            return cs->value[i];
    return NULL;
}

bool auth_creds_any(struct auth_service *svc, const char *const *schemes)
{
    return svc->dir && svc->dir->ops->creds_any(svc->dir, schemes);
}
