/*
 * config.c - tern.conf: the key table, defaults, parsing, overrides, check and show
 * (see config.h and docs/CONFIG.md).
 *
 * Every key is one row of config_keys[]: name, type, where it lives in struct config,
 * and its default for root and for an unprivileged user. Parsing a line is: split at the
 * first '=', trim, find the row, convert by type. Defaults that depend on other keys
 * (log.file and tls.* under data_dir) are filled in after the file and the overrides.
 *
 * Relative paths: data_dir is made absolute against the current directory; tls.cert,
 * tls.key and log.file are taken relative to data_dir.
 */
#include "core/config.h"
#include "core/uidl.h"
#include "core/buf.h"
#include "core/dnsbl_site.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CONFIG_MAX_LINE  8192
#define CONFIG_MAX_ITEMS 64 /* per list value */
/* auth.argon2_rounds and auth.argon2_memory (argon2 counts memory in KiB, in 32 bits) */
#define CONFIG_ARGON2_MAX_ROUNDS 64u
#define CONFIG_ARGON2_MIN_MEMORY (8u * 1024)
#define CONFIG_ARGON2_MAX_MEMORY (4ull << 30)

enum config_type {
    CT_STRING,
    CT_PATH,     /* string, made absolute */
    CT_LISTEN,   /* list of addr:port */
    CT_NETWORKS, /* list of CIDRs */
    CT_BOOL,
    CT_UINT,
    CT_SIZE, /* uint64 bytes, optional k/M/G suffix */
    CT_PLAINTEXT,
    CT_LOG_TARGET,
    CT_MILTERS,       /* list of filter socket addresses (util_socket_address_parse) */
    CT_DNSBL,         /* list of DNS list sites (core/dnsbl_site.h) */
    CT_CHOICE,      /* string, one of config_choices(key) */
    CT_UIDL_FORMAT, /* string, a POP3 UIDL format (core/uidl.h) */
    CT_MODE,        /* unsigned, an octal file mode (0000-0777) */
    CT_ENUM,        /* unsigned index into the key's value list (config_enums) */
    CT_CERTS,       /* list of "CERT" or "CERT:KEY" files, made absolute (tls.sni_certs) */
    CT_HOSTS,       /* list of host names, "*.domain" wildcards allowed (mta_sts.mx) */
};

struct config_key {
    const char *name;
    enum config_type type;
    size_t offset;
    const char *default_root; /* NULL: computed (hostname, paths under data_dir) */
    const char *default_user;
};

#define OFF(field) offsetof(struct config, field)

/* CT_ENUM value lists (NULL-terminated), in the order of the enums in config.h. */
static const char *const directory_drivers[] = {"sqlite", "mysql", "postgresql", NULL};
static const char *const directory_schemas[] = {"postfixadmin", "custom", NULL};
static const char *const directory_tls_modes[] = {"no", "yes", "verify", NULL};
/* Other spellings admins bring from Dovecot and Postfix ("pgsql") and MariaDB. */
static const struct {
    const char *alias;
    const char *name;
} config_enum_aliases[] = {{"mariadb", "mysql"}, {"pgsql", "postgresql"}, {"postgres", "postgresql"}};
static const struct {
    size_t offset;
    const char *const *names;
} config_enums[] = {
    {OFF(directory_driver), directory_drivers},
    {OFF(directory_schema), directory_schemas},
    {OFF(directory_tls), directory_tls_modes},
};

static const struct config_key config_keys[] = {
    {"hostname", CT_STRING, OFF(hostname), NULL, NULL},
    {"data_dir", CT_PATH, OFF(data_dir), "/var/lib/tern", "var"},
    {"run_user", CT_STRING, OFF(run_user), "tern", "tern"},
    {"login_user", CT_STRING, OFF(login_user), "tern-login", "tern-login"},
    {"auth_user", CT_STRING, OFF(auth_user), "tern-auth", "tern-auth"},
    {"login_chroot", CT_PATH, OFF(login_chroot), NULL, NULL},
    {"log.target", CT_LOG_TARGET, OFF(log_target), "stderr", "stderr"},
    {"log.file", CT_PATH, OFF(log_file), NULL, NULL},
    {"log.debug", CT_BOOL, OFF(log_debug), "no", "no"},
    {"smtp.listen", CT_LISTEN, OFF(smtp_listen), "*:25", "*:2525"},
    {"submission.listen", CT_LISTEN, OFF(submission_listen), "*:587", "*:2587"},
    {"submissions.listen", CT_LISTEN, OFF(submissions_listen), "*:465", "*:2465"},
    {"pop3.listen", CT_LISTEN, OFF(pop3_listen), "*:110", "*:2110"},
    {"pop3s.listen", CT_LISTEN, OFF(pop3s_listen), "*:995", "*:2995"},
    {"imap.listen", CT_LISTEN, OFF(imap_listen), "*:143", "*:2143"},
    {"imaps.listen", CT_LISTEN, OFF(imaps_listen), "*:993", "*:2993"},
    {"lmtp.listen", CT_LISTEN, OFF(lmtp_listen), "unix:lmtp", "unix:lmtp"},
    {"lmtp.socket_mode", CT_MODE, OFF(lmtp_socket_mode), "0660", "0660"},
    {"lmtp.socket_group", CT_STRING, OFF(lmtp_socket_group), "", ""},
    {"lmtp.trusted_networks", CT_NETWORKS, OFF(lmtp_trusted_networks), "", ""},
    {"tls.cert", CT_PATH, OFF(tls_cert), NULL, NULL},
    {"tls.key", CT_PATH, OFF(tls_key), NULL, NULL},
    {"tls.sni_certs", CT_CERTS, OFF(tls_sni_certs), "", ""},
    {"relay_networks", CT_NETWORKS, OFF(relay_networks), "", ""},
    {"auth.allow_plaintext", CT_PLAINTEXT, OFF(allow_plaintext), "loopback+tls", "loopback+tls"},
    {"auth.default_domain", CT_STRING, OFF(default_domain), "", ""},
    {"auth.max_failures", CT_UINT, OFF(auth_max_failures), "100", "100"},
    {"auth.account_max_failures", CT_UINT, OFF(auth_account_max_failures), "10", "10"},
    {"auth.failure_window", CT_UINT, OFF(auth_failure_window), "300", "300"},
    {"auth.failure_delay", CT_UINT, OFF(auth_failure_delay), "2000", "2000"},
    {"auth.failure_delay_max", CT_UINT, OFF(auth_failure_delay_max), "15000", "15000"},
    {"auth.block_time", CT_UINT, OFF(auth_block_time), "900", "900"},
    {"auth.trusted_networks", CT_NETWORKS, OFF(auth_trusted_networks), "", ""},
    {"auth.password_schemes", CT_STRING, OFF(password_schemes), "ARGON2ID SCRAM-SHA-256",
     "ARGON2ID SCRAM-SHA-256"},
    {"auth.argon2_memory", CT_SIZE, OFF(auth_argon2_memory), "0", "0"},
    {"auth.argon2_rounds", CT_UINT, OFF(auth_argon2_rounds), "0", "0"},
    {"smtp.max_message_size", CT_SIZE, OFF(smtp_max_message_size), "52428800", "52428800"},
    {"smtp.max_recipients", CT_UINT, OFF(smtp_max_recipients), "1000", "1000"},
    {"smtp.max_errors", CT_UINT, OFF(smtp_max_errors), "20", "20"},
    {"smtp.timeout", CT_UINT, OFF(smtp_timeout), "300", "300"},
    {"pop3.timeout", CT_UINT, OFF(pop3_timeout), "600", "600"},
    {"pop3.login_timeout", CT_UINT, OFF(pop3_login_timeout), "180", "180"},
    {"pop3.login_delay", CT_UINT, OFF(pop3_login_delay), "0", "0"},
    {"pop3.uidl_format", CT_UIDL_FORMAT, OFF(pop3_uidl_format), UIDL_DEFAULT_FORMAT,
     UIDL_DEFAULT_FORMAT},
    {"imap.timeout", CT_UINT, OFF(imap_timeout), "1800", "1800"},
    {"imap.login_timeout", CT_UINT, OFF(imap_login_timeout), "180", "180"},
    {"imap.literal_plus", CT_BOOL, OFF(imap_literal_plus), "yes", "yes"},
    {"imap.utf8_append_strict", CT_BOOL, OFF(imap_utf8_append_strict), "no", "no"},
    {"tls.handshake_timeout", CT_UINT, OFF(tls_handshake_timeout), "60", "60"},
    {"max_connections", CT_UINT, OFF(max_connections), "10000", "10000"},
    {"max_connections_per_ip", CT_UINT, OFF(max_connections_per_ip), "100", "100"},
    {"quota.default", CT_SIZE, OFF(quota_default), "0", "0"},
    {"worker_threads", CT_UINT, OFF(worker_threads), "16", "16"},
    {"shutdown_timeout", CT_UINT, OFF(shutdown_timeout), "10", "10"},
    {"master_process", CT_BOOL, OFF(master_process), "yes", "yes"},
    {"worker_processes", CT_UINT, OFF(worker_processes), "0", "0"},
    {"login_processes", CT_UINT, OFF(login_processes), "0", "0"},
    {"process_memory_limit", CT_SIZE, OFF(process_memory_limit), "0", "0"},
    {"queue.retry_min", CT_UINT, OFF(queue_retry_min), "300", "300"},
    {"queue.retry_max", CT_UINT, OFF(queue_retry_max), "14400", "14400"},
    {"queue.lifetime", CT_UINT, OFF(queue_lifetime), "432000", "432000"},
    {"queue.scan_interval", CT_UINT, OFF(queue_scan_interval), "1", "1"},
    {"queue.max_deliveries", CT_UINT, OFF(queue_max_deliveries), "20", "20"},
    {"queue.destination_concurrency", CT_UINT, OFF(queue_destination_concurrency), "10", "10"},
    {"queue.delay_warning_time", CT_UINT, OFF(queue_delay_warning_time), "0", "0"},
    {"dns.resolver", CT_STRING, OFF(dns_resolver), "", ""},
    {"dns.trust_anchor", CT_PATH, OFF(dns_trust_anchor), "", ""},
    {"relayhost", CT_STRING, OFF(relayhost), "", ""},
    {"relayhost.username", CT_STRING, OFF(relayhost_username), "", ""},
    {"relayhost.password", CT_STRING, OFF(relayhost_password), "", ""},
    {"relayhost.password_file", CT_PATH, OFF(relayhost_password_file), "", ""},
    {"outbound.tls", CT_STRING, OFF(outbound_tls), "may", "may"},
    {"outbound.timeout", CT_UINT, OFF(outbound_timeout), "300", "300"},
    {"outbound.port", CT_UINT, OFF(outbound_port), "25", "25"},
    {"smtp.greet_pause", CT_UINT, OFF(smtp_greet_pause), "0", "0"},
    {"smtp.reject_unauth_pipelining", CT_BOOL, OFF(smtp_reject_unauth_pipelining), "yes", "yes"},
    {"smtp.helo_checks", CT_BOOL, OFF(smtp_helo_checks), "yes", "yes"},
    {"smtp.helo_require_fqdn", CT_BOOL, OFF(smtp_helo_require_fqdn), "no", "no"},
    {"smtp.reject_unknown_sender_domain", CT_BOOL, OFF(smtp_reject_unknown_sender_domain), "no",
     "no"},
    {"smtp.dnsbl_sites", CT_DNSBL, OFF(smtp_dnsbl_sites), "", ""},
    {"smtp.dnsbl_threshold", CT_UINT, OFF(smtp_dnsbl_threshold), "1", "1"},
    {"smtp.rhsbl_sites", CT_DNSBL, OFF(smtp_rhsbl_sites), "", ""},
    {"smtp.rhsbl_threshold", CT_UINT, OFF(smtp_rhsbl_threshold), "1", "1"},
    {"smtp.dns_timeout", CT_UINT, OFF(smtp_dns_timeout), "10000", "10000"},
    {"greylist.enabled", CT_BOOL, OFF(greylist_enabled), "no", "no"},
    {"greylist.delay", CT_UINT, OFF(greylist_delay), "300", "300"},
    {"greylist.retry_window", CT_UINT, OFF(greylist_retry_window), "172800", "172800"},
    {"greylist.max_age", CT_UINT, OFF(greylist_max_age), "3024000", "3024000"},
    {"greylist.auto_pass", CT_UINT, OFF(greylist_auto_pass), "5", "5"},
    {"ratelimit.connections", CT_UINT, OFF(ratelimit_connections), "0", "0"},
    {"ratelimit.messages", CT_UINT, OFF(ratelimit_messages), "0", "0"},
    {"ratelimit.recipients", CT_UINT, OFF(ratelimit_recipients), "0", "0"},
    {"ratelimit.user_messages", CT_UINT, OFF(ratelimit_user_messages), "0", "0"},
    {"ratelimit.user_recipients", CT_UINT, OFF(ratelimit_user_recipients), "0", "0"},
    {"ratelimit.window", CT_UINT, OFF(ratelimit_window), "60", "60"},
    {"junk.header", CT_STRING, OFF(junk_header), "X-Spam: Yes", "X-Spam: Yes"},
    {"junk.mailbox", CT_STRING, OFF(junk_mailbox), "Junk", "Junk"},
    {"junk.quarantine", CT_BOOL, OFF(junk_quarantine), "no", "no"},
    {"smtp.milters", CT_MILTERS, OFF(smtp_milters), "", ""},
    {"submission.milters", CT_MILTERS, OFF(submission_milters), "", ""},
    {"sendmail.milters", CT_MILTERS, OFF(sendmail_milters), "", ""},
    {"milter.connect_timeout", CT_UINT, OFF(milter_connect_timeout), "30", "30"},
    {"milter.command_timeout", CT_UINT, OFF(milter_command_timeout), "30", "30"},
    {"milter.content_timeout", CT_UINT, OFF(milter_content_timeout), "300", "300"},
    {"milter.concurrency", CT_UINT, OFF(milter_concurrency), "64", "64"},
    {"milter.default_action", CT_CHOICE, OFF(milter_default_action), "tempfail",
     "tempfail"},
    {"outbound.mta_sts", CT_BOOL, OFF(outbound_mta_sts), "yes", "yes"},
    {"outbound.mta_sts_port", CT_UINT, OFF(outbound_mta_sts_port), "443", "443"},
    {"outbound.ca_file", CT_PATH, OFF(outbound_ca_file), "", ""},
    {"outbound.dane", CT_BOOL, OFF(outbound_dane), "yes", "yes"},
    /* Our own MTA-STS policy served over HTTPS (issue 12; http/http.h), off by default. */
    {"mta_sts.listen", CT_LISTEN, OFF(mta_sts_listen), "", ""},
    {"mta_sts.mode", CT_CHOICE, OFF(mta_sts_mode), "testing", "testing"},
    {"mta_sts.mx", CT_HOSTS, OFF(mta_sts_mx), "", ""},
    {"mta_sts.max_age", CT_UINT, OFF(mta_sts_max_age), "604800", "604800"},
    {"mailauth.verify", CT_BOOL, OFF(mailauth_verify), "yes", "yes"},
    {"mailauth.authserv_id", CT_STRING, OFF(mailauth_authserv_id), "", ""},
    {"mailauth.spf_policy", CT_CHOICE, OFF(mailauth_spf_policy), "mark", "mark"},
    {"mailauth.dmarc_policy", CT_CHOICE, OFF(mailauth_dmarc_policy), "enforce", "enforce"},
    {"mailauth.dns_timeout", CT_UINT, OFF(mailauth_dns_timeout), "5", "5"},
    /* The directory's backend (issue 14; docs/CONFIG.md "Directory in SQL"). */
    {"directory.driver", CT_ENUM, OFF(directory_driver), "sqlite", "sqlite"},
    {"directory.schema", CT_ENUM, OFF(directory_schema), "postfixadmin", "postfixadmin"},
    {"directory.host", CT_STRING, OFF(directory_host), "localhost", "localhost"},
    {"directory.port", CT_UINT, OFF(directory_port), "0", "0"},
    {"directory.socket", CT_STRING, OFF(directory_socket), "", ""},
    {"directory.dbname", CT_STRING, OFF(directory_dbname), "", ""},
    {"directory.user", CT_STRING, OFF(directory_user), "", ""},
    {"directory.password", CT_STRING, OFF(directory_password), "", ""},
    {"directory.password_file", CT_PATH, OFF(directory_password_file), "", ""},
    {"directory.pool_size", CT_UINT, OFF(directory_pool_size), "4", "4"},
    {"directory.connect_timeout", CT_UINT, OFF(directory_connect_timeout), "5", "5"},
    {"directory.query_timeout", CT_UINT, OFF(directory_query_timeout), "10", "10"},
    {"directory.tls", CT_ENUM, OFF(directory_tls), "no", "no"},
    {"directory.tls_ca", CT_PATH, OFF(directory_tls_ca), "", ""},
    {"directory.tls_cert", CT_PATH, OFF(directory_tls_cert), "", ""},
    {"directory.tls_key", CT_PATH, OFF(directory_tls_key), "", ""},
    {"directory.default_pass_scheme", CT_STRING, OFF(directory_default_pass_scheme), "CRYPT",
     "CRYPT"},
    {"directory.password_scheme", CT_STRING, OFF(directory_password_scheme), "SHA512-CRYPT",
     "SHA512-CRYPT"},
    {"directory.mail_root", CT_PATH, OFF(directory_mail_root), "", ""},
    {"directory.password_query", CT_STRING, OFF(directory_password_query), "", ""},
    {"directory.user_query", CT_STRING, OFF(directory_user_query), "", ""},
    {"directory.iterate_query", CT_STRING, OFF(directory_iterate_query), "", ""},
    {"directory.domain_query", CT_STRING, OFF(directory_domain_query), "", ""},
    {"directory.alias_query", CT_STRING, OFF(directory_alias_query), "", ""},
    {"directory.alias_domain_query", CT_STRING, OFF(directory_alias_domain_query), "", ""},
};

#define N_KEYS (sizeof config_keys / sizeof config_keys[0])

/* The names a CT_CHOICE key accepts (NULL-terminated). */
static const char *const *config_choices(const struct config_key *k)
{
    static const char *const spf_policy_names[] = {"mark", "reject", NULL};
    static const char *const dmarc_policy_names[] = {"enforce", "junk", "mark", NULL};
    static const char *const milter_action_names[] = {"tempfail", "accept", NULL};
    static const char *const sts_mode_names[] = {"none", "testing", "enforce", NULL};
    static const char *const none[] = {NULL};
    if (k->offset == OFF(mta_sts_mode))
        return sts_mode_names;
    if (k->offset == OFF(milter_default_action))
        return milter_action_names;
    if (k->offset == OFF(mailauth_spf_policy))
        return spf_policy_names;
    if (k->offset == OFF(mailauth_dmarc_policy))
        return dmarc_policy_names;
    return none;
}

/* The public struct plus what config_show needs to know about how it was made. */
struct config_private {
    struct config pub; /* first: a struct config * is a struct config_private * */
    bool is_root;      /* built with the root defaults */
    unsigned key_line[N_KEYS]; /* line of the file that set each key; 0 default,
                                  CONFIG_LINE_OVERRIDE from -o */
};

static const char *const plaintext_names[] = {"tls", "loopback+tls", "always"};
static const char *const log_target_names[] = {"stderr", "syslog", "file"};

static char *config_strdup(const char *s)
{
    char *p = strdup(s);
    if (!p) {
        fputs("tern: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static char *config_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *config_asprintf(const char *fmt, ...)
{
    struct buf b;
    buf_init(&b, 0);
    va_list ap;
    va_start(ap, fmt);
    bool ok = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (!ok) {
        fputs("tern: out of memory\n", stderr);
        exit(1);
    }
    return buf_steal(&b);
}

static void config_list_free(struct config_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static const struct config_key *config_key_find(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* ---- value parsers: each returns NULL on success or a static reason ------------------ */

static bool parse_u64(const char *v, uint64_t max, uint64_t *out, bool allow_suffix)
{
    if (*v < '0' || *v > '9')
        return false;
    uint64_t n = 0;
    const char *p = v;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    uint64_t mult = 1;
    if (*p && allow_suffix) {
        switch (*p) {
        case 'k':
        case 'K':
            mult = 1024ull;
            break;
        case 'm':
        case 'M':
            mult = 1024ull * 1024;
            break;
        case 'g':
        case 'G':
            mult = 1024ull * 1024 * 1024;
            break;
        default:
            return false;
        }
        p++;
        if (*p == 'b' || *p == 'B')
            p++;
    }
    if (*p)
        return false;
    if (n > max / mult)
        return false;
    *out = n * mult;
    return true;
}

/* Split a list value at commas and white space into items (at most CONFIG_MAX_ITEMS). */
static const char *split_list(const char *v, struct config_list *out)
{
    struct config_list l = {0};
    const char *p = v;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (l.n >= CONFIG_MAX_ITEMS) {
            config_list_free(&l);
            return "too many items in list";
        }
        char **items = realloc(l.items, (l.n + 1) * sizeof *items);
        if (!items) {
            config_list_free(&l);
            return "out of memory";
        }
        l.items = items;
        size_t n = (size_t)(p - start);
        char *item = malloc(n + 1);
        if (!item) {
            config_list_free(&l);
            return "out of memory";
        }
        memcpy(item, start, n);
        item[n] = '\0';
        l.items[l.n++] = item;
    }
    *out = l;
    return NULL;
}

/* One listen item: "addr:port", "[v6]:port", "*:port" or a bare port. Rewrites *item
 * into the canonical form. */
static bool listen_item_normalise(char **item, bool may_be_unix)
{
    const char *s = *item;
    /* "unix:<path>" (LMTP only): a relative path is made absolute under data_dir later;
     * sockaddr_un holds 107 bytes of path, checked when binding */
    if (strncmp(s, "unix:", 5) == 0)
        return may_be_unix && s[5] != '\0' && strlen(s + 5) < 4096;
    char host[INET6_ADDRSTRLEN + 2];
    const char *port;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host)
            return false;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        unsigned char tmp[16];
        if (inet_pton(AF_INET6, host, tmp) != 1)
            return false;
        port = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            snprintf(host, sizeof host, "*");
            port = s;
        } else {
            if ((size_t)(colon - s) >= sizeof host || colon == s)
                return false;
            memcpy(host, s, (size_t)(colon - s));
            host[colon - s] = '\0';
            port = colon + 1;
            unsigned char tmp[4];
            if (strcmp(host, "localhost") == 0)
                snprintf(host, sizeof host, "127.0.0.1");
            else if (strcmp(host, "*") != 0 && inet_pton(AF_INET, host, tmp) != 1)
                return false;
        }
    }
    uint64_t p;
    if (!parse_u64(port, 65535, &p, false) || p == 0)
        return false;
    char *canon = strchr(host, ':') ? config_asprintf("[%s]:%u", host, (unsigned)p)
                                    : config_asprintf("%s:%u", host, (unsigned)p);
    free(*item);
    *item = canon;
    return true;
}

/* One tls.sni_certs item: "CERT" or "CERT:KEY", neither part empty. */
static bool cert_item_is_valid(const char *s)
{
    const char *colon = strchr(s, ':');
    return s[0] != '\0' && s[0] != ':' && (!colon || (colon[1] != '\0' && !strchr(colon + 1, ':')));
}

/* One mta_sts.mx item (RFC 8461 §3.2): a host name of LDH labels, the first may be "*". */
static bool host_item_is_valid(const char *s)
{
    size_t len = strlen(s), label = 0;
    if (len == 0 || len > 253)
        return false;
    if (s[0] == '*') {
        if (s[1] != '.' || s[2] == '\0')
            return false;
        s += 2;
    }
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || label > 63 || p[-1] == '-')
                return false;
            if (*p == '\0')
                return true;
            label = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || (*p == '-' && label > 0)) {
            label++;
        } else {
            return false;
        }
    }
}

/* One network: an IPv4/IPv6 address with an optional "/prefix". */
static bool network_item_is_valid(const char *s)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof host)
        return false;
    memcpy(host, s, n);
    host[n] = '\0';
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    unsigned char tmp[16];
    unsigned max;
    if (inet_pton(AF_INET, host, tmp) == 1)
        max = 32;
    else if (inet_pton(AF_INET6, host, tmp) == 1)
        max = 128;
    else
        return false;
    if (slash) {
        uint64_t bits;
        if (!parse_u64(slash + 1, max, &bits, false))
            return false;
    }
    return true;
}

/* The value list of a CT_ENUM key. */
static const char *const *enum_names(const struct config_key *k)
{
    for (size_t i = 0; i < sizeof config_enums / sizeof config_enums[0]; i++)
        if (config_enums[i].offset == k->offset)
            return config_enums[i].names;
    abort(); /* a CT_ENUM row without its list */
}

static int enum_find(const char *const *names, size_t n, const char *v)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(names[i], v) == 0)
            return (int)i;
    return -1;
}

/* Set one key from its text value. Returns NULL or a malloc'd reason. */
static char *config_set(struct config *cfg, const struct config_key *k, const char *v)
{
    char *field = (char *)cfg + k->offset;
    switch (k->type) {
    case CT_STRING:
    case CT_PATH: {
        if (k->offset == OFF(data_dir) && v[0] == '\0')
            return config_asprintf("empty value for %s", k->name);
        char **sp = (char **)field;
        free(*sp);
        *sp = config_strdup(v);
        return NULL;
    }
    case CT_LISTEN:
    case CT_NETWORKS:
    case CT_MILTERS:
    case CT_DNSBL:
    case CT_CERTS:
    case CT_HOSTS: {
        struct config_list l;
        const char *err = split_list(v, &l);
        if (err)
            return config_asprintf("%s for %s", err, k->name);
        for (size_t i = 0; i < l.n; i++) {
            int family;
            char host[256], port[8];
            struct dnsbl_site site;
            struct config_milter_item milter;
            bool ok = k->type == CT_LISTEN
                          ? listen_item_normalise(&l.items[i], k->offset == OFF(lmtp_listen))
                      : k->type == CT_NETWORKS
                          ? network_item_is_valid(l.items[i])
                      : k->type == CT_DNSBL
                          ? dnsbl_site_parse(l.items[i], &site)
                      : k->type == CT_CERTS
                          ? cert_item_is_valid(l.items[i])
                      : k->type == CT_HOSTS
                          ? host_item_is_valid(l.items[i])
                      : k->type == CT_MILTERS
                          ? config_milter_item_parse(l.items[i], &milter)
                          : util_socket_address_parse(l.items[i], &family, host, sizeof host,
                                                      port, sizeof port);
            if (!ok) {
                char *r = config_asprintf(
                    "bad %s '%s' for %s",
                    k->type == CT_LISTEN     ? "listen address"
                    : k->type == CT_NETWORKS ? "network"
                    : k->type == CT_DNSBL    ? "DNS list site (domain[=filter]*weight)"
                    : k->type == CT_CERTS    ? "certificate (CERT_FILE or CERT_FILE:KEY_FILE)"
                    : k->type == CT_HOSTS    ? "host name (mx.example.org or *.example.org)"
                                             : "milter address (inet:IP:PORT or unix:/path; "
                                               "then ;default_action=accept|tempfail or "
                                               ";connect|command|content_timeout=SECONDS)",
                    l.items[i], k->name);
                config_list_free(&l);
                return r;
            }
        }
        struct config_list *lp = (struct config_list *)field;
        config_list_free(lp);
        *lp = l;
        return NULL;
    }
    case CT_BOOL: {
        static const char *const yes[] = {"yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};
        if (enum_find(yes, 4, v) >= 0)
            *(bool *)field = true;
        else if (enum_find(no, 4, v) >= 0)
            *(bool *)field = false;
        else
            return config_asprintf("bad boolean '%s' for %s (use yes or no)", v, k->name);
        return NULL;
    }
    case CT_MODE: {
        unsigned mode = 0;
        size_t len = strlen(v);
        for (size_t i = 0; i < len && len <= 4; i++)
            mode = v[i] >= '0' && v[i] <= '7' ? mode * 8 + (unsigned)(v[i] - '0') : 01000;
        if (len == 0 || len > 4 || mode > 0777)
            return config_asprintf("bad file mode '%s' for %s (octal, e.g. 0660)", v, k->name);
        *(unsigned *)field = mode;
        return NULL;
    }
    case CT_UINT: {
        uint64_t n;
        if (!parse_u64(v, UINT_MAX, &n, false))
            return config_asprintf("bad number '%s' for %s", v, k->name);
        /* RFC 8461 §3.2: max_age is at most 31557600 (a year), and a policy that expires at
         * once protects nothing */
        if (k->offset == OFF(mta_sts_max_age) && (n == 0 || n > 31557600))
            return config_asprintf("bad number '%s' for %s (1 to 31557600 seconds)", v, k->name);
        if (k->offset == OFF(auth_argon2_rounds) && n > CONFIG_ARGON2_MAX_ROUNDS)
            return config_asprintf("bad number '%s' for %s (0 for the scheme's own, or 1 to %u)",
                                   v, k->name, CONFIG_ARGON2_MAX_ROUNDS);
        *(unsigned *)field = (unsigned)n;
        return NULL;
    }
    case CT_SIZE: {
        uint64_t n;
        if (!parse_u64(v, UINT64_MAX, &n, true))
            return config_asprintf("bad number '%s' for %s", v, k->name);
        /* argon2's own bounds: at least 8 KiB, counted in KiB in 32 bits */
        if (k->offset == OFF(auth_argon2_memory) && n != 0 &&
            (n < CONFIG_ARGON2_MIN_MEMORY || n > CONFIG_ARGON2_MAX_MEMORY))
            return config_asprintf("bad size '%s' for %s (0 for the scheme's own, or 8k to 4G)",
                                   v, k->name);
        *(uint64_t *)field = n;
        return NULL;
    }
    case CT_PLAINTEXT: {
        int i = enum_find(plaintext_names, 3, v);
        if (i < 0)
            return config_asprintf("bad value '%s' for %s (use tls, loopback+tls or always)", v,
                                   k->name);
        *(enum config_plaintext *)field = (enum config_plaintext)i;
        return NULL;
    }
    case CT_CHOICE:
    case CT_ENUM: {
        /* CT_CHOICE stores the name (a string), CT_ENUM its index (an unsigned) */
        bool is_enum = k->type == CT_ENUM;
        const char *const *names = is_enum ? enum_names(k) : config_choices(k);
        size_t n = 0;
        while (names[n])
            n++;
        for (size_t a = 0;
             is_enum && a < sizeof config_enum_aliases / sizeof config_enum_aliases[0]; a++)
            if (strcasecmp(v, config_enum_aliases[a].alias) == 0)
                v = config_enum_aliases[a].name;
        int i = enum_find(names, n, v);
        if (i < 0) {
            struct buf b;
            buf_init(&b, 0);
            for (size_t j = 0; j < n; j++)
                buf_printf(&b, "%s%s", j == 0 ? "" : j + 1 == n ? " or " : ", ", names[j]);
            char *r = config_asprintf("bad value '%s' for %s (use %s)", v, k->name, buf_cstr(&b));
            buf_free(&b);
            return r;
        }
        if (is_enum) {
            *(unsigned *)field = (unsigned)i;
        } else {
            char **sp = (char **)field;
            free(*sp);
            *sp = config_strdup(names[i]);
        }
        return NULL;
    }
    case CT_UIDL_FORMAT: {
        char *why = NULL;
        if (!uidl_format_check(v, &why)) {
            char *r = config_asprintf("bad POP3 UIDL format '%s' for %s: %s", v, k->name,
                                      why ? why : "invalid");
            free(why);
            return r;
        }
        char **sp = (char **)field;
        free(*sp);
        *sp = config_strdup(v);
        return NULL;
    }
    case CT_LOG_TARGET: {
        int i = enum_find(log_target_names, 3, v);
        if (i < 0)
            return config_asprintf("bad value '%s' for %s (use stderr, syslog or file)", v,
                                   k->name);
        char **sp = (char **)field;
        free(*sp);
        *sp = config_strdup(log_target_names[i]);
        return NULL;
    }
    }
    return config_asprintf("internal: bad type for %s", k->name);
}

/* ---- lines ----------------------------------------------------------------------------- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Cut a comment: '#' at the start or after white space (so "a#b" stays a value). */
static void strip_comment(char *s)
{
    bool is_quoted = false;
    for (char *p = s; *p; p++) {
        if (*p == '"')
            is_quoted = !is_quoted;
        if (*p == '#' && !is_quoted && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            return;
        }
    }
}

/* transport.<domain> = [host]:port (a per-domain route for the queue runner): kept as
 * "<domain> <value>" items; a later line for the same domain replaces the earlier one. */
static char *config_transport_add(struct config *cfg, const char *domain, const char *value)
{
    if (strchr(domain, ' ') || strchr(value, ' ') || *value == '\0')
        return config_asprintf("bad value '%.80s' for transport.%.80s", value, domain);
    struct config_list *l = &cfg->transports;
    size_t dn = strlen(domain);
    for (size_t i = 0; i < l->n; i++) {
        if (strncasecmp(l->items[i], domain, dn) == 0 && l->items[i][dn] == ' ') {
            free(l->items[i]);
            l->items[i] = config_asprintf("%s %s", domain, value);
            return NULL;
        }
    }
    if (l->n >= 1024)
        return config_asprintf("too many transport.* keys");
    char **items = realloc(l->items, (l->n + 1) * sizeof *items);
    if (!items)
        return config_asprintf("out of memory");
    l->items = items;
    l->items[l->n++] = config_asprintf("%s %s", domain, value);
    return NULL;
}

/* mailauth.spf_policy.<domain> / mailauth.dmarc_policy.<domain> (issue 12): a per-domain
 * override of the global key k, kept as "<key name> <domain> <value>" items; a later line
 * for the same key and domain replaces the earlier one. */
static char *config_mailauth_policy_add(struct config *cfg, const struct config_key *k,
                                        const char *domain, const char *value)
{
    const char *const *choices = config_choices(k);
    size_t n = 0;
    while (choices[n])
        n++;
    int i = enum_find(choices, n, value);
    if (i < 0 || strchr(domain, ' ') || domain[0] == '\0')
        return config_asprintf("bad value '%.80s' for %s.%.80s", value, k->name, domain);
    struct config_list *l = &cfg->mailauth_policies;
    char *item = config_asprintf("%s %s %s", k->name, domain, choices[i]);
    size_t prefix = strlen(k->name) + 1 + strlen(domain) + 1;
    for (size_t j = 0; j < l->n; j++) {
        if (strncasecmp(l->items[j], item, prefix) == 0) {
            free(l->items[j]);
            l->items[j] = item;
            return NULL;
        }
    }
    if (l->n >= 1024) {
        free(item);
        return config_asprintf("too many %s.* keys", k->name);
    }
    char **items = realloc(l->items, (l->n + 1) * sizeof *items);
    if (!items) {
        free(item);
        return config_asprintf("out of memory");
    }
    l->items = items;
    l->items[l->n++] = item;
    return NULL;
}

const char *config_mailauth_policy(const struct config *cfg, const char *key, const char *domain)
{
    size_t kl = strlen(key), dl = domain ? strlen(domain) : 0;
    for (size_t j = 0; domain && j < cfg->mailauth_policies.n; j++) {
        const char *it = cfg->mailauth_policies.items[j];
        if (strncmp(it, key, kl) == 0 && it[kl] == ' ' && strncasecmp(it + kl + 1, domain, dl) == 0 &&
            it[kl + 1 + dl] == ' ')
            return it + kl + 1 + dl + 1;
    }
    return strcmp(key, "mailauth.spf_policy") == 0 ? cfg->mailauth_spf_policy
                                                   : cfg->mailauth_dmarc_policy;
}

/* Apply "key = value" (a line or an override). Returns NULL or a malloc'd reason;
 * a blank line or comment is a no-op. */
static char *config_apply_line(struct config *cfg, char *line, bool is_override, unsigned lineno)
{
    if (!is_override)
        strip_comment(line);
    char *s = trim(line);
    if (*s == '\0')
        return NULL;
    char *eq = strchr(s, '=');
    if (!eq)
        return config_asprintf("missing '=' in \"%.60s\"", s);
    *eq = '\0';
    char *key = trim(s);
    char *value = trim(eq + 1);
    size_t vn = strlen(value);
    /* "..." allows an explicit empty value or one with leading/trailing spaces */
    if (vn >= 2 && value[0] == '"' && value[vn - 1] == '"') {
        value[vn - 1] = '\0';
        value++;
    }
    if (*key == '\0')
        return config_asprintf("missing key before '='");
    const struct config_key *k = config_key_find(key);
    if (!k && strncmp(key, "transport.", 10) == 0 && key[10] != '\0')
        return config_transport_add(cfg, key + 10, value);
    if (!k && (strncmp(key, "mailauth.spf_policy.", 20) == 0 ||
               strncmp(key, "mailauth.dmarc_policy.", 22) == 0)) {
        const char *dot = strchr(key + 9, '.');
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(dot - key), key);
        return config_mailauth_policy_add(cfg, config_key_find(name), dot + 1, value);
    }
    if (!k)
        return config_asprintf("unknown key '%.80s'", key);
    char *err = config_set(cfg, k, value);
    if (!err)
        ((struct config_private *)cfg)->key_line[k - config_keys] =
            is_override ? CONFIG_LINE_OVERRIDE : lineno;
    return err;
}

/* ---- defaults -------------------------------------------------------------------------- */

static void config_set_defaults(struct config *cfg, bool is_root)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        const char *v = is_root ? k->default_root : k->default_user;
        if (!v)
            continue;
        char *err = config_set(cfg, k, v);
        if (err) {
            fprintf(stderr, "tern: internal: default for %s: %s\n", k->name, err);
            abort();
        }
    }
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    return config_asprintf("%.*s/%s", (int)n, dir, name);
}

/* Make a path absolute against base ("./var" -> "<base>/var"). */
static void path_make_absolute(char **p, const char *base)
{
    if ((*p)[0] == '/' || (*p)[0] == '\0')
        return;
    const char *rel = *p;
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    char *abs = strcmp(rel, ".") == 0 ? config_strdup(base) : path_join(base, rel);
    free(*p);
    *p = abs;
}

/* Fill in defaults that depend on other keys, and make paths absolute. */
static void config_finish(struct config *cfg)
{
    if (!cfg->hostname || cfg->hostname[0] == '\0') {
        char host[256];
        if (gethostname(host, sizeof host) != 0 || host[0] == '\0')
            snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        free(cfg->hostname);
        cfg->hostname = config_strdup(host);
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        snprintf(cwd, sizeof cwd, "/");
    path_make_absolute(&cfg->data_dir, cwd);
    if (!cfg->log_file || !cfg->log_file[0]) {
        free(cfg->log_file);
        cfg->log_file = path_join(cfg->data_dir, "log/maillog");
    }
    if (!cfg->tls_cert || !cfg->tls_cert[0]) {
        free(cfg->tls_cert);
        cfg->tls_cert = path_join(cfg->data_dir, "tls/cert.pem");
    }
    if (!cfg->tls_key || !cfg->tls_key[0]) {
        free(cfg->tls_key);
        cfg->tls_key = path_join(cfg->data_dir, "tls/key.pem");
    }
    if (!cfg->login_chroot || !cfg->login_chroot[0]) {
        free(cfg->login_chroot);
        cfg->login_chroot = path_join(cfg->data_dir, "run/login-root");
    }
    for (size_t i = 0; i < cfg->lmtp_listen.n; i++) {
        char **item = &cfg->lmtp_listen.items[i];
        if (strncmp(*item, "unix:", 5) == 0 && (*item)[5] != '/') {
            char *path = config_strdup(*item + 5);
            path_make_absolute(&path, cfg->data_dir);
            free(*item);
            *item = config_asprintf("unix:%s", path);
            free(path);
        }
    }
    path_make_absolute(&cfg->log_file, cfg->data_dir);
    path_make_absolute(&cfg->tls_cert, cfg->data_dir);
    path_make_absolute(&cfg->tls_key, cfg->data_dir);
    path_make_absolute(&cfg->login_chroot, cfg->data_dir);
    path_make_absolute(&cfg->directory_mail_root, cfg->data_dir);
    for (size_t i = 0; i < cfg->tls_sni_certs.n; i++) {
        /* "CERT" or "CERT:KEY", each part under data_dir when relative (as tls.cert) */
        char **item = &cfg->tls_sni_certs.items[i];
        char *colon = strchr(*item, ':');
        char *cert = config_strdup(*item), *key = NULL;
        if (colon) {
            cert[colon - *item] = '\0';
            key = config_strdup(colon + 1);
            path_make_absolute(&key, cfg->data_dir);
        }
        path_make_absolute(&cert, cfg->data_dir);
        free(*item);
        *item = key ? config_asprintf("%s:%s", cert, key) : config_strdup(cert);
        free(cert);
        free(key);
    }
}

static struct config *config_new_default(const char *path, bool is_root)
{
    struct config_private *priv = calloc(1, sizeof *priv);
    if (!priv) {
        fputs("tern: out of memory\n", stderr);
        exit(1);
    }
    priv->is_root = is_root;
    struct config *cfg = &priv->pub;
    cfg->path = config_strdup(path);
    config_set_defaults(cfg, is_root);
    return cfg;
}

/* Apply the text of a config file (name is used in messages), then the overrides. */
static struct config *config_build(const char *name, const char *text, size_t len,
                                   char *const *overrides, size_t n_overrides, bool is_root,
                                   char **error_r)
{
    struct config *cfg = config_new_default(name, is_root);
    char *line = malloc(CONFIG_MAX_LINE + 1);
    if (!line) {
        config_free(cfg);
        *error_r = config_asprintf("%s: out of memory", name);
        return NULL;
    }
    size_t pos = 0;
    unsigned lineno = 0;
    while (pos < len) {
        lineno++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        if (n > CONFIG_MAX_LINE) {
            *error_r = config_asprintf("%s:%u: line too long", name, lineno);
            goto fail;
        }
        if (memchr(text + pos, '\0', n)) {
            *error_r = config_asprintf("%s:%u: NUL byte in line", name, lineno);
            goto fail;
        }
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos += n + (nl ? 1 : 0);
        char *err = config_apply_line(cfg, line, false, lineno);
        if (err) {
            *error_r = config_asprintf("%s:%u: %s", name, lineno, err);
            free(err);
            goto fail;
        }
    }
    for (size_t i = 0; i < n_overrides; i++) {
        size_t n = strlen(overrides[i]);
        if (n > CONFIG_MAX_LINE) {
            *error_r = config_asprintf("-o: override too long");
            goto fail;
        }
        memcpy(line, overrides[i], n + 1);
        char *err = config_apply_line(cfg, line, true, 0);
        if (err) {
            *error_r = config_asprintf("-o %s: %s", overrides[i], err);
            free(err);
            goto fail;
        }
    }
    free(line);
    config_finish(cfg);
    return cfg;
fail:
    free(line);
    config_free(cfg);
    return NULL;
}

struct config *config_parse_buffer(const char *name, const char *text, size_t len,
                                   char *const *overrides, size_t n_overrides, bool is_root,
                                   char **error_r)
{
    return config_build(name, text, len, overrides, n_overrides, is_root, error_r);
}

struct config *config_load(const char *path, char *const *overrides, size_t n_overrides,
                           char **error_r)
{
    bool is_root = geteuid() == 0;
    if (!path || !*path)
        path = getenv("TERN_CONFIG");
    if (!path || !*path)
        path = is_root ? CONFIG_DEFAULT_PATH_ROOT : CONFIG_DEFAULT_PATH_USER;

    struct buf text;
    buf_init(&text, 16u << 20); /* a config file past 16 MB is a mistake */
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno != ENOENT) {
            *error_r = config_asprintf("%s: cannot open: %s", path, strerror(errno));
            return NULL;
        }
    } else {
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
            if (!buf_append(&text, chunk, n)) {
                fclose(f);
                buf_free(&text);
                *error_r = config_asprintf("%s: file too large", path);
                return NULL;
            }
        }
        bool has_error = ferror(f);
        fclose(f);
        if (has_error) {
            buf_free(&text);
            *error_r = config_asprintf("%s: read error", path);
            return NULL;
        }
    }
    struct config *cfg = config_build(path, text.data ? text.data : "", text.len, overrides,
                                      n_overrides, is_root, error_r);
    buf_free(&text);
    return cfg;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        char *field = (char *)cfg + k->offset;
        if (k->type == CT_STRING || k->type == CT_PATH || k->type == CT_LOG_TARGET ||
            k->type == CT_CHOICE || k->type == CT_UIDL_FORMAT)
            free(*(char **)field);
        else if (k->type == CT_LISTEN || k->type == CT_NETWORKS || k->type == CT_MILTERS ||
                 k->type == CT_DNSBL || k->type == CT_CERTS || k->type == CT_HOSTS)
            config_list_free((struct config_list *)field);
    }
    config_list_free(&cfg->transports);
    config_list_free(&cfg->mailauth_policies);
    free(cfg->path);
    free(cfg);
}

/* ---- show ------------------------------------------------------------------------------ */

/* The value of one key as config_show prints it (malloc'd). */
static char *config_format_value(const struct config *cfg, const struct config_key *k)
{
    const char *field = (const char *)cfg + k->offset;
    switch (k->type) {
    case CT_STRING:
    case CT_PATH:
    case CT_CHOICE:
    case CT_LOG_TARGET:
    case CT_UIDL_FORMAT: {
        const char *s = *(char *const *)field;
        return config_strdup(s ? s : "");
    }
    case CT_LISTEN:
    case CT_NETWORKS:
    case CT_MILTERS:
    case CT_DNSBL:
    case CT_CERTS:
    case CT_HOSTS: {
        const struct config_list *l = (const struct config_list *)field;
        struct buf b;
        buf_init(&b, 0);
        for (size_t i = 0; i < l->n; i++)
            buf_printf(&b, "%s%s", i ? ", " : "", l->items[i]);
        return b.data ? buf_steal(&b) : config_strdup("");
    }
    case CT_BOOL:
        return config_strdup(*(const bool *)field ? "yes" : "no");
    case CT_UINT:
        return config_asprintf("%u", *(const unsigned *)field);
    case CT_MODE:
        return config_asprintf("%04o", *(const unsigned *)field);
    case CT_SIZE:
        return config_asprintf("%llu", (unsigned long long)*(const uint64_t *)field);
    case CT_PLAINTEXT: {
        unsigned i = (unsigned)*(const enum config_plaintext *)field;
        return config_strdup(i < 3 ? plaintext_names[i] : "?");
    }
    case CT_ENUM:
        return config_strdup(enum_names(k)[*(const unsigned *)field]);
    }
    return config_strdup("");
}

/* The default of a key derived from data_dir, for the effective data_dir (malloc'd), or
 * NULL when the key has a plain default. */
static char *config_derived_default(const struct config *cfg, const struct config_key *k)
{
    if (k->offset == OFF(log_file))
        return path_join(cfg->data_dir, "log/maillog");
    if (k->offset == OFF(tls_cert))
        return path_join(cfg->data_dir, "tls/cert.pem");
    if (k->offset == OFF(tls_key))
        return path_join(cfg->data_dir, "tls/key.pem");
    if (k->offset == OFF(login_chroot))
        return path_join(cfg->data_dir, "run/login-root");
    return NULL;
}

bool config_milter_item_parse(const char *item, struct config_milter_item *out)
{
    memset(out, 0, sizeof *out);
    out->connect_timeout = out->command_timeout = out->content_timeout = out->is_accept = -1;
    const char *semi = strchr(item, ';');
    size_t alen = semi ? (size_t)(semi - item) : strlen(item);
    if (alen == 0 || alen >= sizeof out->address)
        return false;
    memcpy(out->address, item, alen);
    out->address[alen] = '\0';
    int family;
    char host[256], port[8];
    if (!util_socket_address_parse(out->address, &family, host, sizeof host, port, sizeof port))
        return false;
    while (semi) {
        const char *opt = semi + 1;
        semi = strchr(opt, ';');
        size_t olen = semi ? (size_t)(semi - opt) : strlen(opt);
        char kv[64];
        if (olen == 0 || olen >= sizeof kv)
            return false;
        memcpy(kv, opt, olen);
        kv[olen] = '\0';
        char *eq = strchr(kv, '=');
        if (!eq)
            return false;
        *eq = '\0';
        const char *key = kv, *val = eq + 1;
        if (strcmp(key, "default_action") == 0) {
            if (strcmp(val, "accept") != 0 && strcmp(val, "tempfail") != 0)
                return false;
            out->is_accept = strcmp(val, "accept") == 0;
            continue;
        }
        int *field = strcmp(key, "connect_timeout") == 0   ? &out->connect_timeout
                     : strcmp(key, "command_timeout") == 0 ? &out->command_timeout
                     : strcmp(key, "content_timeout") == 0 ? &out->content_timeout
                                                           : NULL;
        char *end;
        unsigned long n = field && *val ? strtoul(val, &end, 10) : 0;
        if (!field || !*val || *end || n < 1 || n > 86400)
            return false;
        *field = (int)n;
    }
    return true;
}

bool config_key_is_set(const struct config *cfg, const char *key)
{
    const struct config_key *k = config_key_find(key);
    return k && ((const struct config_private *)cfg)->key_line[k - config_keys] != 0;
}

char *config_key_origin(const struct config *cfg, const char *key)
{
    const struct config_key *k = config_key_find(key);
    unsigned line = k ? ((const struct config_private *)cfg)->key_line[k - config_keys] : 0;
    if (line == CONFIG_LINE_OVERRIDE)
        return config_asprintf("-o %s", key);
    if (line == 0)
        return config_asprintf("%s (default of %s)", cfg->path, key);
    return config_asprintf("%s:%u", cfg->path, line);
}

/* Do two lists of strings hold the same items in the same order? */
static bool config_list_equal(const struct config_list *a, const struct config_list *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->items[i], b->items[i]) != 0)
            return false;
    return true;
}

bool config_is_same(const struct config *a, const struct config *b)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        char *va = config_format_value(a, &config_keys[i]);
        char *vb = config_format_value(b, &config_keys[i]);
        bool is_same = va && vb && strcmp(va, vb) == 0;
        free(va);
        free(vb);
        if (!is_same)
            return false;
    }
    return config_list_equal(&a->transports, &b->transports) &&
           config_list_equal(&a->mailauth_policies, &b->mailauth_policies);
}

void config_show(const struct config *cfg, bool non_default_only)
{
    struct config *defaults = NULL;
    if (non_default_only) {
        char *err = NULL;
        bool is_root = ((const struct config_private *)cfg)->is_root;
        defaults = config_build(cfg->path, "", 0, NULL, 0, is_root, &err);
        free(err);
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        char *v = config_format_value(cfg, k);
        bool is_default = false;
        if (defaults) {
            char *d = config_derived_default(cfg, k);
            if (!d)
                d = config_format_value(defaults, k);
            is_default = strcmp(v, d) == 0;
            free(d);
        }
        /* A secret never goes to a terminal or a support ticket pasted from one. */
        bool is_secret =
            strcmp(k->name, "relayhost.password") == 0 || strcmp(k->name, "directory.password") == 0;
        if (!is_default)
            printf("%s =%s%s\n", k->name, v[0] ? " " : "", is_secret && v[0] ? "(hidden)" : v);
        free(v);
    }
    /* transport.<domain> keys have no default: always shown, as they were given */
    for (size_t i = 0; i < cfg->transports.n; i++) {
        const char *item = cfg->transports.items[i];
        const char *sp = strchr(item, ' ');
        if (sp)
            printf("transport.%.*s = %s\n", (int)(sp - item), item, sp + 1);
    }
    for (size_t i = 0; i < cfg->mailauth_policies.n; i++) {
        const char *item = cfg->mailauth_policies.items[i];
        const char *sp1 = strchr(item, ' ');
        const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
        if (sp2)
            printf("%.*s.%.*s = %s\n", (int)(sp1 - item), item, (int)(sp2 - sp1 - 1), sp1 + 1,
                   sp2 + 1);
    }
    config_free(defaults);
}
