/*
 * dir_backend.h - the directory's storage drivers, below the auth_* API (internal to
 * auth/). The rules of the directory (name normalisation, alias expansion order, +tag,
 * catch-all, alias domains, default domain, quota.default, the user's home layout,
 * which credential answers a login) live once above this line, in directory.c,
 * directory_admin.c and login.c; a backend only stores and finds rows:
 *
 *   dir_sqlite.c  <data_dir>/tern.db (the default; Tern's own schema)
 *   dir_sql.c     MariaDB/MySQL or PostgreSQL: the postfixadmin schema read as it is,
 *                 or an administrator's own queries in Dovecot's style (sql.h underneath)
 *
 * Every name a backend receives is already normalised (lower case "local@domain",
 * "@domain" for a catch-all source, a bare domain). Lookups return 1 found, 0 not found,
 * -1 when the store could not answer (the caller turns that into a temporary failure;
 * it is never "not found"). Administration returns 0 or -1 with one readable line in
 * *error_r. Strings returned are malloc'd and owned by the caller.
 *
 * Thread rules: every operation may be called from any thread at any time; a backend
 * serialises or pools internally. Backends with is_network set may block on the
 * network for up to their timeouts (auth.h marks the functions that reach them).
 */
#ifndef TERN_AUTH_DIR_BACKEND_H
#define TERN_AUTH_DIR_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct auth_cred_set;
struct dir_backend;

/* What a domain is to us. */
enum dir_domain_kind {
    DIR_DOMAIN_NONE = 0,  /* not ours */
    DIR_DOMAIN_LOCAL = 1, /* one of our domains */
    DIR_DOMAIN_ALIAS = 2, /* an alias domain: its addresses are those of its target */
};

/* A user row as a backend finds it. */
struct dir_user_info {
    char *address;  /* canonical "local@domain" */
    char *home;     /* NULL: Tern's layout <data_dir>/mail/<domain>/<local> */
    bool has_quota; /* false: the user follows quota.default */
    uint64_t quota; /* bytes when has_quota; 0 = unlimited */
    bool enabled;   /* user (and, where the schema says so, its domain) active */
};
void dir_user_info_free(struct dir_user_info *u);

/* A password hashed in the schemes a backend stores (directory_admin.c fills it). */
#define DIR_MAX_SCHEMES 16
struct dir_hashed {
    size_t n;
    char *scheme[DIR_MAX_SCHEMES]; /* upper case */
    char *value[DIR_MAX_SCHEMES];  /* "{SCHEME}data" */
};

struct dir_backend_ops {
    void (*close)(struct dir_backend *be);

    /* ---- lookups ---- */
    /* DIR_DOMAIN_* or -1; for an alias domain the target domain goes to target_r. */
    int (*domain_lookup)(struct dir_backend *be, const char *domain, char *target_r,
                         size_t size);
    /* The only local domain (for bare logins): 1 and its name, 0 none or several, -1. */
    int (*domain_single)(struct dir_backend *be, char *out, size_t size);
    /* Targets of an alias source ("a@d" or "@d"), in order: 0 (*n may be 0) or -1. */
    int (*alias_targets)(struct dir_backend *be, const char *source, char ***out, size_t *n);
    int (*user_get)(struct dir_backend *be, const char *address, struct dir_user_info *u_r);
    int (*creds_load)(struct dir_backend *be, const char *address, struct auth_cred_set *cs);
    /* Could any active user hold a credential in one of these schemes (NULL-terminated)?
     * Answered without waiting on the network (it decides what EHLO/CAPA advertise). */
    bool (*creds_any)(struct dir_backend *be, const char *const *schemes);

    /* ---- administration (NULL ops where read_only_reason is set) ---- */
    int (*domain_add)(struct dir_backend *be, const char *domain, char **error_r);
    int (*domain_del)(struct dir_backend *be, const char *domain, char **error_r);
    int (*domain_list)(struct dir_backend *be, void (*cb)(const char *domain, void *arg),
                       void *arg);
    /* quota: has_quota false means "follow quota.default" where the backend has that. */
    int (*user_add)(struct dir_backend *be, const char *address, const struct dir_hashed *h,
                    bool has_quota, uint64_t quota, char **error_r);
    int (*user_del)(struct dir_backend *be, const char *address, char **error_r);
    int (*user_set_password)(struct dir_backend *be, const char *address,
                             const struct dir_hashed *h, char **error_r);
    int (*user_set_quota)(struct dir_backend *be, const char *address, bool has_quota,
                          uint64_t quota, char **error_r);
    int (*user_set_enabled)(struct dir_backend *be, const char *address, bool enabled,
                            char **error_r);
    int (*user_list)(struct dir_backend *be, const char *domain_or_null,
                     void (*cb)(const struct dir_user_info *u, void *arg), void *arg);
    char *(*user_schemes)(struct dir_backend *be, const char *address);
    int (*alias_add)(struct dir_backend *be, const char *source, const char *target,
                     char **error_r);
    int (*alias_del)(struct dir_backend *be, const char *source, const char *target_or_null,
                     char **error_r);
    int (*alias_list)(struct dir_backend *be,
                      void (*cb)(const char *source, const char *target, void *arg), void *arg);
};

struct dir_backend {
    const struct dir_backend_ops *ops;
    const char *name;             /* for messages: "tern.db", "mysql://tern@db/postfix" */
    bool is_network;              /* lookups may block on the network */
    const char *read_only_reason; /* NULL when writable, else why not (for the CLI) */
    const char *write_schemes;    /* schemes a new password is hashed in, space separated */
    bool has_quota_default;       /* quota.default applies to users without their own */
};

/* Open the backend cfg->directory_driver names. NULL with *error_r on failure. */
struct dir_backend *dir_sqlite_open(const struct config *cfg, char **error_r);
struct dir_backend *dir_sql_open(const struct config *cfg, char **error_r);
/* Check the SQL directory keys of cfg without connecting (tern config check). */
int dir_sql_config_check(const struct config *cfg, char **error_r);

/* Split a comma/space separated target list (postfixadmin's alias.goto, a custom alias
 * query's rows) onto a list, normalised, deduplicated, bounded. false on no memory. */
bool dir_list_add(char ***list, size_t *n, const char *s);
void dir_list_free(char **list, size_t n);

#endif
