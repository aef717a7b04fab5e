/*
 * import_cmd.c - `tern import [--postfix DIR] [--dovecot DIR] [--write] [--force]`: read
 * an existing Postfix + Dovecot host's configuration (parsers in import_parse.c) and
 * print the tern.conf settings, the directory settings and data (domains, mailboxes,
 * aliases) that carry it over, and what cannot be carried, each with its source file.
 *
 * A dry run (the default) changes nothing. --write writes the tern.conf settings to the
 * config file (-c, refused when it exists unless --force) and adds the domains and
 * aliases to Tern's own directory; mailboxes are listed, not created (Tern cannot store
 * an existing password hash yet) and mail is not moved (the printed plan says how: a
 * Maildir copied into a user's home keeps its UIDs, keywords and subscriptions).
 *
 * SQL maps and passdbs (mysql:, pgsql:, passdb/userdb driver = sql) become the SQL
 * directory's "directory.*" keys (import_plan.c): directory.schema = postfixadmin when
 * the queries read postfixadmin's tables, else custom with the queries rewritten for Tern.
 */
#include "auth/auth.h"
#include "cli/cli.h"
#include "cli/import.h"
#include "core/buf.h"
#include "core/config.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMPORT_MAX_INCLUDES 128 /* Dovecot files read in all */

struct import_ctx {
    const char *postfix_dir, *dovecot_dir;
    struct import_kv maincf;  /* main.cf */
    struct import_kv dovecot; /* dovecot.conf and its includes, merged in reading order */
    size_t n_dovecot_files;
    struct buf conf;  /* tern.conf lines */
    struct import_plan sql; /* the SQL directory, when the host has one */
    struct buf data;  /* domain/user/alias lines */
    struct buf notes; /* what cannot be carried over, and the mail plan */
    char **domains;
    size_t n_domains;
    char **alias_from, **alias_to;
    size_t n_aliases;
    char **mailboxes; /* virtual_mailbox_maps' addresses (text maps) */
    size_t n_mailboxes;
    char **pw_user, **pw_hash; /* passwd-file users and their "{SCHEME}hash" */
    size_t n_pw_users;
};

/* Read a whole file (at most IMPORT_MAX_FILE bytes). NULL with errno set. */
static char *read_file(const char *path, size_t *len_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > IMPORT_MAX_FILE) {
        close(fd);
        errno = EFBIG;
        return NULL;
    }
    size_t cap = (size_t)st.st_size, len = 0;
    char *data = malloc(cap + 1);
    if (!data) {
        close(fd);
        return NULL;
    }
    ssize_t n;
    while (len < cap && (n = read(fd, data + len, cap - len)) > 0)
        len += (size_t)n;
    close(fd);
    data[len] = '\0';
    *len_r = len;
    return data;
}

static void conf_set(struct import_ctx *x, const char *key, const char *value, const char *from)
{
    buf_printf(&x->conf, "%s = %s\n", key, value);
    buf_printf(&x->conf, "#   from %s\n", from);
}

/* ---- data: domains, aliases ------------------------------------------------------- */

static bool list_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(v[i], s) == 0)
            return true;
    return false;
}

static void domain_add(struct import_ctx *x, const char *d)
{
    if (list_has(x->domains, x->n_domains, d) || x->n_domains >= IMPORT_MAX_ENTRIES)
        return;
    char **nv = realloc(x->domains, (x->n_domains + 1) * sizeof *nv);
    if (!nv || !(nv[x->n_domains] = strdup(d))) {
        if (nv)
            x->domains = nv;
        return;
    }
    x->domains = nv;
    x->n_domains++;
    buf_printf(&x->data, "domain %s\n", d);
}

static void alias_add(struct import_ctx *x, const char *from, const char *to)
{
    if (x->n_aliases >= IMPORT_MAX_ENTRIES)
        return;
    char **nf = realloc(x->alias_from, (x->n_aliases + 1) * sizeof *nf);
    if (nf)
        x->alias_from = nf;
    char **nt = nf ? realloc(x->alias_to, (x->n_aliases + 1) * sizeof *nt) : NULL;
    if (!nt)
        return;
    x->alias_to = nt;
    x->alias_from[x->n_aliases] = strdup(from);
    x->alias_to[x->n_aliases] = strdup(to);
    if (!x->alias_from[x->n_aliases] || !x->alias_to[x->n_aliases]) {
        free(x->alias_from[x->n_aliases]);
        free(x->alias_to[x->n_aliases]);
        return;
    }
    x->n_aliases++;
    buf_printf(&x->data, "alias %s -> %s\n", from, to);
}

/* ---- Postfix maps ----------------------------------------------------------------- */

/* A map's file: "hash:/etc/postfix/vmailbox" -> "/etc/postfix/vmailbox" (the source text
 * postmap built the .db from); relative paths are under the Postfix directory. */
static void map_path(struct import_ctx *x, const char *file, char *out, size_t size)
{
    if (file[0] == '/')
        snprintf(out, size, "%s", file);
    else
        snprintf(out, size, "%s/%s", x->postfix_dir, file);
}

/* mysql:/pgsql: map: its connection and query go to the SQL directory plan. */
static void map_sql(struct import_ctx *x, const char *param, const char *type, const char *file)
{
    char path[4200];
    map_path(x, file, path, sizeof path);
    size_t len;
    char *text = read_file(path, &len);
    struct import_kv kv;
    char *err = NULL;
    if (!text || import_postconf_parse(text, len, &kv, &err) < 0) {
        import_note(&x->notes, "%s = %s:%s: cannot read %s: %s", param, type, file, path,
             err ? err : strerror(errno));
        free(err);
        free(text);
        return;
    }
    free(text);
    import_plan_postfix_map(&x->sql, param, type, path, &kv);
    import_kv_free(&kv);
}

/* Read a text map: NULL when it is not one we can read (a note says why). */
static bool map_read(struct import_ctx *x, const char *param, const char *spec,
                     struct import_kv *kv)
{
    if (strncmp(spec, "proxy:", 6) == 0)
        spec += 6; /* proxymap(8) only forwards the lookup */
    const char *colon = strchr(spec, ':');
    if (!colon) {
        import_note(&x->notes, "%s: '%s' is not a map", param, spec);
        return false;
    }
    char type[32];
    snprintf(type, sizeof type, "%.*s", (int)(colon - spec), spec);
    if (strcmp(type, "mysql") == 0 || strcmp(type, "pgsql") == 0) {
        map_sql(x, param, type, colon + 1);
        return false;
    }
    if (strcmp(type, "hash") != 0 && strcmp(type, "lmdb") != 0 && strcmp(type, "btree") != 0 &&
        strcmp(type, "texthash") != 0 && strcmp(type, "cdb") != 0) {
        import_note(&x->notes, "%s = %s: %s maps are not read", param, spec, type);
        return false;
    }
    char path[4200];
    map_path(x, colon + 1, path, sizeof path);
    size_t len;
    char *text = read_file(path, &len);
    char *err = NULL;
    if (!text || import_postmap_parse(text, len, kv, &err) < 0) {
        import_note(&x->notes, "%s: cannot read %s (the text source of %s): %s", param, path, spec,
             err ? err : strerror(errno));
        free(err);
        free(text);
        return false;
    }
    free(text);
    return true;
}

/* The domain of an address, "" when none. */
static const char *addr_domain(const char *a)
{
    const char *at = strrchr(a, '@');
    return at ? at + 1 : "";
}

static void postfix_domains(struct import_ctx *x)
{
    const char *v = import_kv_get(&x->maincf, "virtual_mailbox_domains");
    char *expanded = v ? import_postconf_expand(&x->maincf, v) : NULL;
    char **words = expanded ? import_split_list(expanded, NULL) : NULL;
    for (size_t i = 0; words && words[i]; i++) {
        if (strchr(words[i], ':') && words[i][0] != '/') {
            struct import_kv kv;
            if (map_read(x, "virtual_mailbox_domains", words[i], &kv)) {
                for (size_t k = 0; k < kv.n; k++)
                    domain_add(x, kv.keys[k]);
                import_kv_free(&kv);
            }
        } else if (words[i][0] != '/') {
            domain_add(x, words[i]);
        }
    }
    import_list_free(words);
    free(expanded);
}

static void postfix_mailboxes(struct import_ctx *x, const char *base)
{
    const char *v = import_kv_get(&x->maincf, "virtual_mailbox_maps");
    char *expanded = v ? import_postconf_expand(&x->maincf, v) : NULL;
    char **words = expanded ? import_split_list(expanded, NULL) : NULL;
    for (size_t i = 0; words && words[i]; i++) {
        struct import_kv kv;
        if (!map_read(x, "virtual_mailbox_maps", words[i], &kv))
            continue;
        for (size_t k = 0; k < kv.n; k++) {
            const char *addr = kv.keys[k];
            if (addr[0] == '@' || !strchr(addr, '@'))
                continue; /* catch-all or bare domain entries: no mailbox */
            if (x->n_mailboxes < IMPORT_MAX_ENTRIES) {
                char **nv = realloc(x->mailboxes, (x->n_mailboxes + 1) * sizeof *nv);
                if (nv && (nv[x->n_mailboxes] = strdup(addr)))
                    x->n_mailboxes++;
                if (nv)
                    x->mailboxes = nv;
            }
            buf_printf(&x->data, "mailbox %s  (mail in %s%s%s)\n", addr, base ? base : "",
                       base && base[0] && kv.values[k][0] != '/' ? "/" : "", kv.values[k]);
            if (!list_has(x->domains, x->n_domains, addr_domain(addr)))
                import_note(&x->notes, "mailbox %s: its domain is not in virtual_mailbox_domains", addr);
        }
        import_kv_free(&kv);
    }
    import_list_free(words);
    free(expanded);
}

static void postfix_aliases(struct import_ctx *x)
{
    const char *v = import_kv_get(&x->maincf, "virtual_alias_maps");
    char *expanded = v ? import_postconf_expand(&x->maincf, v) : NULL;
    char **words = expanded ? import_split_list(expanded, NULL) : NULL;
    for (size_t i = 0; words && words[i]; i++) {
        struct import_kv kv;
        if (!map_read(x, "virtual_alias_maps", words[i], &kv))
            continue;
        for (size_t k = 0; k < kv.n; k++) {
            char **targets = import_split_list(kv.values[k], NULL);
            for (size_t t = 0; targets && targets[t]; t++)
                alias_add(x, kv.keys[k], targets[t]);
            import_list_free(targets);
        }
        import_kv_free(&kv);
    }
    import_list_free(words);
    free(expanded);
}

/* ---- Postfix main.cf -> tern.conf ------------------------------------------------- */

/* main.cf names whose job Tern does itself or that only describe the Postfix install. */
static const char *const postfix_irrelevant[] = {
    "queue_directory", "command_directory", "daemon_directory", "data_directory",
    "mail_owner", "setgid_group", "html_directory", "manpage_directory", "sample_directory",
    "readme_directory", "shlib_directory", "meta_directory", "compatibility_level", "biff",
    "append_dot_mydomain", "inet_protocols", "inet_interfaces", "alias_maps",
    "alias_database", "myorigin", "mydomain", "recipient_delimiter", "mailbox_size_limit",
    "virtual_mailbox_base", "virtual_minimum_uid", "virtual_uid_maps", "virtual_gid_maps",
    "smtpd_banner", "smtpd_tls_security_level", "smtp_tls_security_level",
    "smtpd_tls_session_cache_database", "smtp_tls_session_cache_database",
    "smtp_tls_CApath", "smtp_tls_CAfile", "smtpd_use_tls", "smtpd_sasl_auth_enable",
    "smtpd_sasl_type", "smtpd_sasl_path", "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions", "virtual_transport", "mailbox_transport",
    "smtpd_tls_auth_only", "smtp_sasl_auth_enable", "smtp_sasl_security_options",
    "smtp_sasl_password_maps", "smtp_use_tls", "smtpd_tls_chain_files", "maillog_file",
    "maillog_file_prefixes", "smtputf8_enable", "relay_domains", "delay_warning_time",
};
/* main.cf names mapped onto tern.conf keys below */
static const char *const postfix_mapped[] = {
    "myhostname", "message_size_limit", "smtpd_tls_cert_file", "smtpd_tls_key_file",
    "mynetworks", "relayhost", "mydestination", "virtual_mailbox_domains",
    "virtual_mailbox_maps", "virtual_alias_maps", "maximal_queue_lifetime",
    "smtpd_recipient_limit",
};

static bool in_table(const char *const *t, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i], s) == 0)
            return true;
    return false;
}

/* mynetworks ("127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128 10.0.0.0/8") -> CIDRs. */
static void postfix_networks(struct import_ctx *x, const char *value)
{
    char **words = import_split_list(value, NULL);
    struct buf nets;
    buf_init(&nets, 0);
    for (size_t i = 0; words && words[i]; i++) {
        char *w = words[i];
        if (strchr(w, ':') && w[0] != '[') {
            import_note(&x->notes, "mynetworks: %s (a map or file) is not read", w);
            continue;
        }
        char cidr[128];
        if (w[0] == '[') {
            char *close = strchr(w, ']');
            if (!close)
                continue;
            snprintf(cidr, sizeof cidr, "%.*s%s", (int)(close - w - 1), w + 1, close + 1);
        } else {
            snprintf(cidr, sizeof cidr, "%s", w);
        }
        if (strncmp(cidr, "::ffff:", 7) == 0)
            continue; /* IPv4-mapped: Tern sees the IPv4 address */
        buf_printf(&nets, "%s%s", nets.len ? " " : "", cidr);
    }
    if (nets.len)
        conf_set(x, "relay_networks", nets.data, "main.cf mynetworks (may relay without AUTH)");
    buf_free(&nets);
    import_list_free(words);
}

static void postfix_settings(struct import_ctx *x)
{
    char *v;
#define MAIN(name) (import_kv_get(&x->maincf, name) ? import_postconf_expand(&x->maincf, import_kv_get(&x->maincf, name)) : NULL)
    if ((v = MAIN("myhostname"))) {
        conf_set(x, "hostname", v, "main.cf myhostname");
        free(v);
    }
    if ((v = MAIN("message_size_limit"))) {
        conf_set(x, "smtp.max_message_size", strcmp(v, "0") ? v : "0",
                 "main.cf message_size_limit");
        free(v);
    }
    if ((v = MAIN("smtpd_recipient_limit"))) {
        conf_set(x, "smtp.max_recipients", v, "main.cf smtpd_recipient_limit");
        free(v);
    }
    if ((v = MAIN("maximal_queue_lifetime"))) {
        long secs = strtol(v, NULL, 10);
        char unit = v[strspn(v, "0123456789")];
        long mult = unit == 'w' ? 604800 : unit == 'd' || unit == '\0' ? 86400
                    : unit == 'h' ? 3600 : unit == 'm' ? 60 : 1;
        char text[32];
        snprintf(text, sizeof text, "%ld", secs * mult);
        conf_set(x, "queue.lifetime", text, "main.cf maximal_queue_lifetime");
        free(v);
    }
    char *cert = MAIN("smtpd_tls_cert_file"), *key = MAIN("smtpd_tls_key_file");
    if (cert && cert[0])
        conf_set(x, "tls.cert", cert, "main.cf smtpd_tls_cert_file");
    if (key && key[0])
        conf_set(x, "tls.key", key, "main.cf smtpd_tls_key_file");
    free(cert);
    free(key);
    if ((v = MAIN("mynetworks"))) {
        postfix_networks(x, v);
        free(v);
    }
    if ((v = MAIN("relayhost"))) {
        if (v[0])
            conf_set(x, "relayhost", v, "main.cf relayhost");
        if (v[0] && import_kv_get(&x->maincf, "smtp_sasl_password_maps"))
            import_note(&x->notes, "relayhost %s: its login is in smtp_sasl_password_maps; set "
                    "relayhost.username and relayhost.password_file by hand",
                 v);
        free(v);
    }
    if ((v = MAIN("mydestination"))) {
        char **words = import_split_list(v, NULL);
        for (size_t i = 0; words && words[i]; i++)
            if (strcmp(words[i], "localhost") != 0 && strncmp(words[i], "localhost.", 10) != 0)
                import_note(&x->notes, "mydestination %s: Tern has no system (Unix account) mailboxes; make "
                        "it a domain with virtual users",
                     words[i]);
        import_list_free(words);
        free(v);
    }
    if ((v = MAIN("virtual_transport"))) {
        if (strncmp(v, "lmtp:", 5) == 0 || strcmp(v, "dovecot") == 0)
            import_note(&x->notes, "virtual_transport = %s: Tern delivers itself; if Postfix stays in front, "
                    "use virtual_transport = lmtp:unix:<data_dir>/lmtp (lmtp.listen)",
                 v);
        free(v);
    }
#undef MAIN
    for (size_t i = 0; i < x->maincf.n; i++) {
        const char *k = x->maincf.keys[i];
        if (in_table(postfix_mapped, sizeof postfix_mapped / sizeof postfix_mapped[0], k) ||
            in_table(postfix_irrelevant,
                     sizeof postfix_irrelevant / sizeof postfix_irrelevant[0], k))
            continue;
        if (import_kv_get(&x->maincf, k) != x->maincf.values[i])
            continue; /* only the last definition */
        import_note(&x->notes, "main.cf %s = %s: not carried over (no Tern equivalent)", k, x->maincf.values[i]);
    }
}

/* ---- Dovecot ---------------------------------------------------------------------- */

static void dovecot_read(struct import_ctx *x, const char *path, bool is_optional, int depth)
{
    if (depth > IMPORT_MAX_DEPTH || x->n_dovecot_files >= IMPORT_MAX_INCLUDES)
        return;
    size_t len;
    char *text = read_file(path, &len);
    if (!text) {
        if (!is_optional)
            import_note(&x->notes, "cannot read %s: %s", path, strerror(errno));
        return;
    }
    x->n_dovecot_files++;
    struct import_kv kv;
    char *err = NULL;
    if (import_doveconf_parse(text, len, &kv, &err) < 0) {
        import_note(&x->notes, "%s: %s (its settings are not read)", path, err ? err : "bad syntax");
        free(err);
        free(text);
        return;
    }
    free(text);
    for (size_t i = 0; i < kv.n; i++) {
        if (x->dovecot.n == x->dovecot.cap) {
            size_t cap = x->dovecot.cap ? x->dovecot.cap * 2 : 64;
            char **nk = realloc(x->dovecot.keys, cap * sizeof *nk);
            if (!nk)
                break;
            x->dovecot.keys = nk;
            char **nv = realloc(x->dovecot.values, cap * sizeof *nv);
            if (!nv)
                break;
            x->dovecot.values = nv;
            x->dovecot.cap = cap;
        }
        x->dovecot.keys[x->dovecot.n] = kv.keys[i];
        x->dovecot.values[x->dovecot.n] = kv.values[i];
        kv.keys[i] = kv.values[i] = NULL;
        x->dovecot.n++;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    for (size_t i = 0; i < kv.n_includes; i++) {
        const char *inc = kv.includes[i];
        bool is_try = inc[0] == '?';
        if (is_try)
            inc++;
        char pattern[4400];
        if (inc[0] == '/')
            snprintf(pattern, sizeof pattern, "%s", inc);
        else
            snprintf(pattern, sizeof pattern, "%s/%s", slash ? dir : ".", inc);
        glob_t g;
        if (glob(pattern, 0, NULL, &g) == 0) {
            for (size_t k = 0; k < g.gl_pathc; k++)
                dovecot_read(x, g.gl_pathv[k], is_try, depth + 1);
            globfree(&g);
        } else if (!is_try && !strpbrk(inc, "*?[")) {
            import_note(&x->notes, "%s: !include %s: not found", path, inc);
        }
    }
    for (size_t i = 0; i < kv.n; i++) {
        free(kv.keys[i]);
        free(kv.values[i]);
    }
    kv.n = 0;
    import_kv_free(&kv);
}

/* A dovecot-sql.conf.ext (args of a passdb and/or userdb with driver = sql). */
static void dovecot_sql(struct import_ctx *x, const char *args, bool is_passdb, bool is_userdb)
{
    char path[4200];
    if (args[0] == '/')
        snprintf(path, sizeof path, "%s", args);
    else
        snprintf(path, sizeof path, "%s/%s", x->dovecot_dir, args);
    size_t len;
    char *text = read_file(path, &len);
    struct import_kv kv;
    char *err = NULL;
    if (!text || import_doveconf_parse(text, len, &kv, &err) < 0) {
        import_note(&x->notes, "%s sql: cannot read %s: %s", is_passdb ? "passdb" : "userdb", path,
             err ? err : strerror(errno));
        free(err);
        free(text);
        return;
    }
    free(text);
    import_plan_dovecot(&x->sql, path, &kv, is_passdb, is_userdb);
    import_kv_free(&kv);
}

/* A Dovecot passwd-file passdb: "user:{SCHEME}hash:uid:gid:gecos:home:shell:extra" lines;
 * the users and their hashes are kept for --write (stored as they are: the old
 * passwords keep working). */
static void dovecot_passwd_file(struct import_ctx *x, const char *args)
{
    /* args may start with options ("scheme=SHA512-CRYPT username_format=%u /path") */
    char **words = import_split_list(args, NULL);
    const char *path = NULL, *scheme = "CRYPT"; /* Dovecot's default for passwd-file */
    for (size_t i = 0; words && words[i]; i++)
        if (strncmp(words[i], "scheme=", 7) == 0)
            scheme = words[i] + 7;
        else if (!strchr(words[i], '='))
            path = words[i];
    size_t len;
    char *text = path ? read_file(path, &len) : NULL;
    if (!text) {
        import_note(&x->notes, "passdb passwd-file %s: cannot read it", path ? path : args);
        import_list_free(words);
        return;
    }
    const char *realm = import_kv_get(&x->dovecot, "auth_default_realm");
    size_t n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *colon = strchr(line, ':');
        if (line[0] == '#' || !colon)
            continue;
        *colon = '\0';
        char *hash = colon + 1, *end = strchr(hash, ':');
        if (end)
            *end = '\0';
        char addr[512], stored[1200];
        if (strchr(line, '@'))
            snprintf(addr, sizeof addr, "%s", line);
        else if (realm && realm[0])
            snprintf(addr, sizeof addr, "%s@%s", line, realm);
        else {
            import_note(&x->notes, "passdb passwd-file %s: user %s has no domain (and there is no "
                    "auth_default_realm): not carried over",
                 path, line);
            continue;
        }
        if (!hash[0]) {
            import_note(&x->notes, "passdb passwd-file %s: user %s has no password: add it with `tern user "
                    "add`",
                 path, addr);
            continue;
        }
        if (hash[0] == '{')
            snprintf(stored, sizeof stored, "%s", hash);
        else
            snprintf(stored, sizeof stored, "{%s}%s", scheme, hash);
        const char *scheme_end = strchr(stored, '}');
        buf_printf(&x->data, "user %s  (password %.*s in %s)\n", addr,
                   (int)(scheme_end - stored + 1), stored, path);
        if (x->n_pw_users < IMPORT_MAX_ENTRIES) {
            char **na = realloc(x->pw_user, (x->n_pw_users + 1) * sizeof *na);
            if (na)
                x->pw_user = na;
            char **nh = na ? realloc(x->pw_hash, (x->n_pw_users + 1) * sizeof *nh) : NULL;
            if (nh) {
                x->pw_hash = nh;
                x->pw_user[x->n_pw_users] = strdup(addr);
                x->pw_hash[x->n_pw_users] = strdup(stored);
                if (x->pw_user[x->n_pw_users] && x->pw_hash[x->n_pw_users]) {
                    x->n_pw_users++;
                } else {
                    free(x->pw_user[x->n_pw_users]);
                    free(x->pw_hash[x->n_pw_users]);
                    import_note(&x->notes, "out of memory: user %s not carried over", addr);
                }
            }
        }
        memset(stored, 0, sizeof stored);
        n++;
    }
    free(text);
    if (n > 0)
        import_note(&x->notes, "passdb passwd-file %s: %zu users: --write adds them to tern.db with their "
                "password hashes as they are (the old passwords keep working; `tern user add "
                "ADDRESS --hash HASH` does one)",
             path, n);
    import_list_free(words);
}

/* The first "section/driver" and "section/args" of a Dovecot section kind (passdb, userdb:
 * Dovecot asks them in order). */
static void dovecot_first(const struct import_ctx *x, const char *kind, const char **driver_r,
                          const char **args_r)
{
    char driver_key[32], args_key[32];
    snprintf(driver_key, sizeof driver_key, "%s/driver", kind);
    snprintf(args_key, sizeof args_key, "%s/args", kind);
    *driver_r = *args_r = NULL;
    for (size_t i = 0; i < x->dovecot.n; i++) {
        if (strcmp(x->dovecot.keys[i], driver_key) == 0 && !*driver_r)
            *driver_r = x->dovecot.values[i];
        else if (strcmp(x->dovecot.keys[i], args_key) == 0 && !*args_r)
            *args_r = x->dovecot.values[i];
    }
}

/* Dovecot's mail_location template with the example user's values: the folder an admin
 * copies from. */
static void location_example(const char *path, char *out, size_t size)
{
    struct buf b;
    buf_init(&b, 4096);
    for (const char *p = path; *p; p++) {
        if (*p == '~' && p == path) {
            buf_append_str(&b, "<home>");
            continue;
        }
        const char *v = p[0] == '%' ? p + 1 : NULL;
        if (v && (*v == 'L' || *v == 'U'))
            v++;
        const char *value = !v ? NULL : *v == 'u' ? "alice@example.org" : *v == 'n' ? "alice"
                                  : *v == 'd' ? "example.org" : NULL;
        if (value) {
            buf_append_str(&b, value);
            p = v;
        } else {
            buf_append(&b, p, 1);
        }
    }
    snprintf(out, size, "%s", buf_cstr(&b));
    buf_free(&b);
}

/* Mailboxes of text maps that no passwd-file entry gives a password: Tern cannot log
 * them in until an admin adds them. */
static void mailboxes_without_password(struct import_ctx *x)
{
    if (x->sql.driver)
        return;
    size_t n = 0;
    const char *first = NULL;
    for (size_t i = 0; i < x->n_mailboxes; i++)
        if (!list_has(x->pw_user, x->n_pw_users, x->mailboxes[i]) && n++ == 0)
            first = x->mailboxes[i];
    if (n > 0)
        import_note(&x->notes, "%zu mailbox%s of virtual_mailbox_maps (%s%s) %s no password in Dovecot's "
                "passdb that Tern reads: add %s with `tern user add` (or --hash)",
             n, n == 1 ? "" : "es", first, n > 1 ? ", ..." : "", n == 1 ? "has" : "have",
             n == 1 ? "it" : "them");
}

/* Domains and aliases from main.cf or text maps while the directory is SQL: Tern reads
 * them from the database (a custom domain_query made of the domains aside). */
static void sql_and_text_maps(struct import_ctx *x)
{
    if (!x->sql.driver)
        return;
    if (x->n_domains > 0 && !x->sql.made_domain_query)
        import_note(&x->notes, "virtual_mailbox_domains names %zu domain%s in main.cf or text maps (%s%s): "
                "with the SQL directory Tern reads domains from the database: make sure they "
                "are there",
             x->n_domains, x->n_domains == 1 ? "" : "s", x->domains[0],
             x->n_domains > 1 ? ", ..." : "");
    if (x->n_aliases > 0)
        import_note(&x->notes, "virtual_alias_maps has %zu aliases in text maps (%s -> %s%s): with the SQL "
                "directory Tern reads aliases from the database: add them there%s",
             x->n_aliases, x->alias_from[0], x->alias_to[0], x->n_aliases > 1 ? ", ..." : "",
             x->sql.is_postfixadmin ? " (`tern alias add` writes postfixadmin's alias table)"
                                    : "");
}

/* Where each user's mail goes, from Dovecot's mail_location and Tern's directory. */
static void mail_plan(struct import_ctx *x)
{
    const char *loc = import_kv_get(&x->dovecot, "mail_location");
    if (!loc)
        return;
    if (strncmp(loc, "maildir:", 8) != 0) {
        import_note(&x->notes, "mail_location = %s: only Maildir can be moved in; convert it first (dsync)",
             loc);
        return;
    }
    char path[2048], from[2200];
    snprintf(path, sizeof path, "%s", loc + 8);
    char *opts = strchr(path, ':');
    if (opts)
        *opts++ = '\0';
    location_example(path, from, sizeof from);
    const char *home = !x->sql.driver ? "<data_dir>/mail/<domain>/<user>"
                       : x->sql.is_postfixadmin
                           ? "<directory.mail_root>/<mailbox.maildir> (mail_root: <data_dir>/mail "
                             "unless set)"
                           : "the home (or maildir) user_query returns, under "
                             "directory.mail_root (<data_dir>/mail) unless absolute";
    const char *example = !x->sql.driver || x->sql.is_postfixadmin
                              ? "<data_dir>/mail/example.org/alice/Maildir"
                              : "<home>/Maildir";
    import_note(&x->notes, "mail_location = %s: stop Dovecot, then copy each user's Maildir into Tern "
            "before the user logs in or receives mail there: to <home>/Maildir, owned by "
            "run_user, where <home> is %s; e.g. alice@example.org%s: `cp -a %s/. %s/`. "
            "dovecot-uidlist, dovecot-keywords and subscriptions come along, so UIDVALIDITY, "
            "UIDs, keywords, subscriptions and POP3 UIDLs stay what clients know",
         loc, home, x->sql.is_postfixadmin ? " (postfixadmin's maildir example.org/alice/)" : "",
         from, example);
    if (opts && strstr(opts, "LAYOUT=fs"))
        import_note(&x->notes, "mail_location %s: LAYOUT=fs folders: Tern reads Maildir++ (.Folder) "
                "folders; convert with dsync first",
             loc);
}

static void dovecot_settings(struct import_ctx *x)
{
    /* Dovecot's own key wins over the default; a protocol pop3 section over both */
    const char *uidl = import_kv_get(&x->dovecot, "protocol pop3/pop3_uidl_format");
    if (!uidl)
        uidl = import_kv_get(&x->dovecot, "pop3_uidl_format");
    if (uidl) {
        if (strstr(uidl, "%m"))
            import_note(&x->notes, "pop3_uidl_format = %s: %%m is not available from a Maildir", uidl);
        else
            conf_set(x, "pop3.uidl_format", uidl, "dovecot pop3_uidl_format");
    }
    const char *realm = import_kv_get(&x->dovecot, "auth_default_realm");
    if (realm && realm[0])
        conf_set(x, "auth.default_domain", realm, "dovecot auth_default_realm");
    const char *mechs = import_kv_get(&x->dovecot, "auth_mechanisms");
    if (mechs)
        import_note(&x->notes, "auth_mechanisms = %s: Tern offers the SASL mechanisms its stored schemes "
                "allow (auth.password_schemes)",
             mechs);
    const char *ssl_cert = import_kv_get(&x->dovecot, "ssl_cert");
    if (ssl_cert && ssl_cert[0] == '<' && (!x->conf.len || !strstr(x->conf.data, "tls.cert")))
        conf_set(x, "tls.cert", ssl_cert + 1, "dovecot ssl_cert");
    const char *ssl_key = import_kv_get(&x->dovecot, "ssl_key");
    if (ssl_key && ssl_key[0] == '<' && (!x->conf.len || !strstr(x->conf.data, "tls.key")))
        conf_set(x, "tls.key", ssl_key + 1, "dovecot ssl_key");
    const char *driver, *args, *user_driver, *user_args;
    dovecot_first(x, "passdb", &driver, &args);
    dovecot_first(x, "userdb", &user_driver, &user_args);
    bool is_user_sql = user_driver && strcmp(user_driver, "sql") == 0 && user_args;
    bool is_pass_sql = driver && strcmp(driver, "sql") == 0 && args;
    if (is_pass_sql)
        dovecot_sql(x, args, true, is_user_sql && strcmp(args, user_args) == 0);
    if (is_user_sql && (!is_pass_sql || strcmp(args, user_args) != 0))
        dovecot_sql(x, user_args, false, true);
    if (driver && strcmp(driver, "passwd-file") == 0 && args)
        dovecot_passwd_file(x, args);
    else if (driver && !is_pass_sql)
        import_note(&x->notes, "passdb driver = %s: not carried over (Tern reads SQLite, MySQL or "
                "PostgreSQL directories)",
             driver);
}

/* ---- output and --write ----------------------------------------------------------- */

static void print_section(const char *title, const struct buf *b)
{
    printf("# ---- %s\n%s\n", title, b->len ? b->data : "#   (nothing)\n");
}

static int write_config(const struct cli_options *o, struct import_ctx *x, bool is_force)
{
    const char *path = o->config_path ? o->config_path
                       : getenv("TERN_CONFIG") ? getenv("TERN_CONFIG")
                       : geteuid() == 0        ? CONFIG_DEFAULT_PATH_ROOT
                                               : CONFIG_DEFAULT_PATH_USER;
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size > 0 && !is_force) {
        fprintf(stderr, "tern: %s exists (give --force to replace it)\n", path);
        return 1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.import-tmp", path);
    /* the database password may be in it: readable by the owner only */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  x->sql.db.password ? 0600 : 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        fprintf(stderr, "tern: cannot write %s: %s\n", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    struct buf dir;
    buf_init(&dir, 0);
    import_plan_write(&x->sql, true, &dir);
    fprintf(f, "# written by `tern import` from %s and %s\n%s%s", x->postfix_dir, x->dovecot_dir,
            buf_cstr(&x->conf), buf_cstr(&dir));
    if (dir.data)
        memset(dir.data, 0, dir.len);
    buf_free(&dir);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, path) < 0) {
        fprintf(stderr, "tern: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    printf("wrote %s\n", path);
    return 0;
}

static int write_directory(const struct cli_options *o, struct import_ctx *x)
{
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return 1;
    if (cli_directory_prepare(cfg) != 0) {
        config_free(cfg);
        return 1;
    }
    char *err = NULL;
    struct auth_service *svc = auth_service_open(cfg, &err);
    if (!svc) {
        fprintf(stderr, "tern: directory: %s\n", err ? err : "cannot open");
        free(err);
        config_free(cfg);
        return 1;
    }
    int failures = 0;
    size_t n_domains = 0, n_aliases = 0;
    for (size_t i = 0; i < x->n_domains; i++) {
        if (auth_domain_add(svc, x->domains[i], &err) == 0)
            n_domains++;
        else if (!err || !strstr(err, "exists"))
            failures++, fprintf(stderr, "tern: domain %s: %s\n", x->domains[i], err ? err : "?");
        free(err);
        err = NULL;
    }
    size_t n_users = 0;
    for (size_t i = 0; i < x->n_pw_users; i++) {
        if (auth_user_add_hashed(svc, x->pw_user[i], x->pw_hash[i], 0, &err) == 0)
            n_users++;
        else if (!err || !strstr(err, "exists"))
            failures++, fprintf(stderr, "tern: user %s: %s\n", x->pw_user[i], err ? err : "?");
        free(err);
        err = NULL;
    }
    for (size_t i = 0; i < x->n_aliases; i++) {
        if (auth_alias_add(svc, x->alias_from[i], x->alias_to[i], &err) == 0)
            n_aliases++;
        else if (!err || !strstr(err, "exists"))
            failures++, fprintf(stderr, "tern: alias %s -> %s: %s\n", x->alias_from[i],
                                x->alias_to[i], err ? err : "?");
        free(err);
        err = NULL;
    }
    printf("added %zu domains, %zu users and %zu aliases to the directory\n", n_domains,
           n_users, n_aliases);
    auth_service_close(svc);
    config_free(cfg);
    return failures ? 1 : 0;
}

static void import_ctx_free(struct import_ctx *x)
{
    import_kv_free(&x->maincf);
    import_kv_free(&x->dovecot);
    buf_free(&x->conf);
    import_plan_free(&x->sql);
    buf_free(&x->data);
    buf_free(&x->notes);
    for (size_t i = 0; i < x->n_domains; i++)
        free(x->domains[i]);
    free(x->domains);
    for (size_t i = 0; i < x->n_aliases; i++) {
        free(x->alias_from[i]);
        free(x->alias_to[i]);
    }
    free(x->alias_from);
    free(x->alias_to);
    for (size_t i = 0; i < x->n_pw_users; i++) {
        free(x->pw_user[i]);
        if (x->pw_hash[i])
            memset(x->pw_hash[i], 0, strlen(x->pw_hash[i]));
        free(x->pw_hash[i]);
    }
    free(x->pw_user);
    free(x->pw_hash);
    for (size_t i = 0; i < x->n_mailboxes; i++)
        free(x->mailboxes[i]);
    free(x->mailboxes);
}

int cli_import(const struct cli_options *o, int argc, char **argv)
{
    struct import_ctx x = {.postfix_dir = "/etc/postfix", .dovecot_dir = "/etc/dovecot"};
    bool is_write = false, is_force = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--postfix") == 0 && i + 1 < argc)
            x.postfix_dir = argv[++i];
        else if (strcmp(argv[i], "--dovecot") == 0 && i + 1 < argc)
            x.dovecot_dir = argv[++i];
        else if (strcmp(argv[i], "--write") == 0)
            is_write = true;
        else if (strcmp(argv[i], "--force") == 0)
            is_force = true;
        else {
            fprintf(stderr, "usage: tern import [--postfix DIR] [--dovecot DIR] [--write] "
                            "[--force]\n");
            return 2;
        }
    }
    buf_init(&x.conf, 0);
    import_plan_init(&x.sql);
    buf_init(&x.data, 0);
    buf_init(&x.notes, 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/main.cf", x.postfix_dir);
    size_t len;
    char *text = read_file(path, &len);
    char *err = NULL;
    if (!text) {
        import_note(&x.notes, "cannot read %s: %s", path, strerror(errno));
    } else if (import_postconf_parse(text, len, &x.maincf, &err) < 0) {
        import_note(&x.notes, "%s: %s", path, err ? err : "unreadable");
        free(err);
    }
    free(text);
    postfix_settings(&x);
    postfix_domains(&x);
    const char *base_raw = import_kv_get(&x.maincf, "virtual_mailbox_base");
    char *base = base_raw ? import_postconf_expand(&x.maincf, base_raw) : NULL;
    postfix_mailboxes(&x, base);
    free(base);
    postfix_aliases(&x);
    snprintf(path, sizeof path, "%s/dovecot.conf", x.dovecot_dir);
    dovecot_read(&x, path, false, 0);
    dovecot_settings(&x);
    import_plan_decide(&x.sql, x.domains, x.n_domains);
    if (x.sql.notes.len)
        buf_append(&x.notes, x.sql.notes.data, x.sql.notes.len);
    sql_and_text_maps(&x);
    mailboxes_without_password(&x);
    mail_plan(&x);
    struct buf dir;
    buf_init(&dir, 0);
    import_plan_write(&x.sql, false, &dir);

    printf("# tern import: from %s and %s (a dry run changes nothing; --write writes)\n\n",
           x.postfix_dir, x.dovecot_dir);
    print_section("tern.conf", &x.conf);
    print_section("directory (for directory.driver; names as the SQL directory reads them)",
                  &dir);
    buf_free(&dir);
    print_section("directory data", &x.data);
    print_section("not carried over / to do by hand", &x.notes);
    int rc = 0;
    if (is_write) {
        rc = write_config(o, &x, is_force);
        if (rc == 0 && !x.sql.driver)
            rc = write_directory(o, &x);
        else if (rc == 0)
            printf("the directory is SQL (directory.schema = %s): domains, mailboxes and "
                   "aliases stay in that database\n",
                   x.sql.is_postfixadmin ? "postfixadmin" : "custom");
    }
    import_ctx_free(&x);
    return rc;
}
