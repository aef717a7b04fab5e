/*
 * config.h - tern.conf: parsing, defaults, overrides, check and show.
 *
 * Format: one "key = value" per line; '#' starts a comment; blank lines ignored; keys are
 * dotted lowercase names (smtp.listen). A value may be a comma/space separated list
 * where the key says so. A missing or empty file is valid: every key has a default
 * (DESIGN §1), and the defaults depend on whether we run as root (standard ports and
 * /var/lib/tern) or not (high ports 25xx and ./var).
 *
 * Lookup order: built-in defaults, then the file, then `-o key=value` overrides.
 * A bad value (unknown key, wrong type, bad address) is an error naming file, line and
 * reason; `tern serve` refuses to start on it.
 *
 * Ownership: config_load() returns a heap struct owned by the caller; config_free()
 * releases it and every string in it. Thread rules: read-only after load, may be shared.
 */
#ifndef TERN_CORE_CONFIG_H
#define TERN_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_DEFAULT_PATH_ROOT "/etc/tern/tern.conf"
#define CONFIG_DEFAULT_PATH_USER "tern.conf"

/* A list of "addr:port" strings ("127.0.0.1:25", "[::1]:25", "*:25"); n == 0 disables. */
struct config_list {
    char **items;
    size_t n;
};

enum config_plaintext { PLAINTEXT_TLS, PLAINTEXT_LOOPBACK_TLS, PLAINTEXT_ALWAYS };

/* directory.driver, directory.schema, directory.tls (in the order config.c lists them). */
enum config_directory_driver { DIRECTORY_SQLITE, DIRECTORY_MYSQL, DIRECTORY_PGSQL };
enum config_directory_schema { DIRECTORY_SCHEMA_POSTFIXADMIN, DIRECTORY_SCHEMA_CUSTOM };
enum config_directory_tls { DIRECTORY_TLS_NO, DIRECTORY_TLS_YES, DIRECTORY_TLS_VERIFY };

/* config_key_origin: a key set by -o rather than by a line of the file. */
#define CONFIG_LINE_OVERRIDE 0xffffffffu

struct config {
    char *path;       /* file the config came from (may not exist) */
    char *hostname;   /* hostname: banner and Received; default gethostname() */
    char *data_dir;   /* data_dir: absolute after load */
    char *run_user;   /* run_user: user to drop to when started as root; default "tern" */
    char *login_user; /* login_user: the login processes' user (privilege separation);
                         default "tern-login" */
    char *auth_user;  /* auth_user: the auth process's user, owner of tern.db; "tern-auth" */
    char *login_chroot; /* login_chroot: the login processes' empty root directory;
                           default <data_dir>/run/login-root */
    char *log_target; /* log.target: stderr | syslog | file; default stderr */
    char *log_file;   /* log.file: default <data_dir>/log/maillog */
    bool log_debug;   /* log.debug */

    struct config_list smtp_listen;        /* smtp.listen: port 25 role, mail for our domains */
    struct config_list submission_listen;  /* submission.listen: 587, AUTH required */
    struct config_list submissions_listen; /* submissions.listen: 465, implicit TLS */
    struct config_list pop3_listen;        /* pop3.listen: 110 (STLS) */
    struct config_list pop3s_listen;       /* pop3s.listen: 995 */
    struct config_list imap_listen;        /* imap.listen: 143 (STARTTLS) */
    struct config_list imaps_listen;       /* imaps.listen: 993 */
    struct config_list lmtp_listen;        /* lmtp.listen: "unix:<path>" or addr:port items;
                                              default unix:<data_dir>/lmtp */
    unsigned lmtp_socket_mode;             /* lmtp.socket_mode: octal; default 0660 */
    char *lmtp_socket_group;               /* lmtp.socket_group: "" = run_user's group */
    struct config_list lmtp_trusted_networks; /* lmtp.trusted_networks: TCP peers allowed
                                                 besides loopback; empty */

    char *tls_cert; /* tls.cert: default <data_dir>/tls/cert.pem (generated if absent) */
    char *tls_key;  /* tls.key:  default <data_dir>/tls/key.pem */
    struct config_list tls_sni_certs; /* tls.sni_certs: more certificates chosen by SNI,
                                         "CERT" (key inside) or "CERT:KEY"; empty */

    struct config_list relay_networks;     /* relay_networks: CIDRs allowed to relay; empty */
    enum config_plaintext allow_plaintext; /* auth.allow_plaintext; default loopback+tls */
    char *default_domain;                  /* auth.default_domain: for bare logins; "" none */
    unsigned auth_max_failures;            /* auth.max_failures per IP per window: block; 100 */
    unsigned auth_account_max_failures;    /* auth.account_max_failures per IP+account; 10 */
    unsigned auth_failure_window;          /* auth.failure_window seconds; 300 */
    unsigned auth_failure_delay;           /* auth.failure_delay ms, doubled per failure; 2000 */
    unsigned auth_failure_delay_max;       /* auth.failure_delay_max ms; 15000 */
    unsigned auth_block_time;              /* auth.block_time seconds a block lasts; 900 */
    struct config_list auth_trusted_networks; /* auth.trusted_networks: proxies that may pass
                                                 the client address (ID, XCLIENT); empty */
    char *password_schemes; /* auth.password_schemes: schemes stored by `tern user add`/passwd,
                               space separated; default "ARGON2ID SCRAM-SHA-256" */
    uint64_t auth_argon2_memory; /* auth.argon2_memory bytes of a new ARGON2 hash; 0: the
                                    scheme's own (64 MiB ARGON2ID, 32 MiB ARGON2I) */
    unsigned auth_argon2_rounds; /* auth.argon2_rounds of a new ARGON2 hash; 0: the scheme's
                                    own (3 ARGON2ID, 4 ARGON2I) */

    uint64_t smtp_max_message_size;  /* smtp.max_message_size bytes; 52428800 */
    unsigned smtp_max_recipients;    /* smtp.max_recipients; 1000 */
    unsigned smtp_max_errors;        /* smtp.max_errors before 421; 20 */
    unsigned smtp_timeout;           /* smtp.timeout seconds idle; 300 */
    unsigned pop3_timeout;           /* pop3.timeout; 600 */
    unsigned pop3_login_timeout;     /* pop3.login_timeout: connect to login, seconds; 180 */
    unsigned pop3_login_delay;       /* pop3.login_delay seconds between logins per user; 0 off */
    char *pop3_uidl_format;          /* pop3.uidl_format: Dovecot's pop3_uidl_format (core/uidl.h);
                                        default "%08Xu%08Xv" */
    unsigned imap_timeout;           /* imap.timeout; 1800 */
    unsigned imap_login_timeout;     /* imap.login_timeout: connect to login, seconds; 180 */
    bool imap_literal_plus; /* imap.literal_plus: LITERAL+ (yes) or LITERAL- (no); yes */
    bool imap_utf8_append_strict; /* imap.utf8_append_strict: RFC 6855 §4's NO; no */
    unsigned tls_handshake_timeout;  /* tls.handshake_timeout seconds (implicit and STARTTLS); 60 */
    unsigned max_connections;        /* max_connections total; 10000 */
    unsigned max_connections_per_ip; /* max_connections_per_ip; 100 */
    uint64_t quota_default;          /* quota.default bytes per user, 0 = unlimited */
    unsigned worker_threads;         /* worker_threads for blocking work; 16 */
    unsigned shutdown_timeout;       /* seconds SIGTERM may take at most; 10 */
    bool master_process;             /* a root master forks the processes; yes */
    unsigned worker_processes;       /* worker processes; 0 = one per core */
    unsigned login_processes;        /* login processes; 0 = as many as workers */
    uint64_t process_memory_limit;   /* bytes of data segment per child, 0 none */

    /* Outbound delivery (queue runner, SMTP client; issue 5). Added by the outbound helper. */
    unsigned queue_retry_min;      /* queue.retry_min seconds; 300 (doubles per attempt) */
    unsigned queue_retry_max;      /* queue.retry_max seconds; 14400 */
    unsigned queue_lifetime;       /* queue.lifetime seconds before bouncing; 432000 (5d) */
    unsigned queue_scan_interval;  /* queue.scan_interval seconds; 1 */
    unsigned queue_max_deliveries; /* queue.max_deliveries: delivery threads; 20 */
    unsigned queue_destination_concurrency; /* queue.destination_concurrency; 10 */
    unsigned queue_delay_warning_time;      /* queue.delay_warning_time seconds; 0 = no "delayed"
                                               DSN (RFC 3461 NOTIFY=DELAY; added by the dsn helper) */
    char *dns_resolver;                     /* dns.resolver: IP[@port]; "" = /etc/resolv.conf */
    char *relayhost;                        /* relayhost: [host]:port smarthost; "" = MX routing */
    char *relayhost_username;               /* relayhost.username: SASL login; "" = no AUTH */
    char *relayhost_password;               /* relayhost.password */
    char *relayhost_password_file; /* relayhost.password_file: first line is the password */
    char *outbound_tls;            /* outbound.tls: none | may | encrypt; default may */
    unsigned outbound_timeout;     /* outbound.timeout seconds per SMTP read/write; 300 */
    unsigned outbound_port;        /* outbound.port: TCP port for MX-routed mail; 25 */
    /* Port-25 screening (smtp/screen.c). */
    unsigned smtp_greet_pause;             /* smtp.greet_pause ms before the banner; 0 */
    bool smtp_reject_unauth_pipelining;    /* smtp.reject_unauth_pipelining; yes */
    bool smtp_helo_checks;                 /* smtp.helo_checks: syntax, not us; yes */
    bool smtp_helo_require_fqdn;           /* smtp.helo_require_fqdn; no */
    bool smtp_reject_unknown_sender_domain; /* smtp.reject_unknown_sender_domain; no */
    struct config_list smtp_dnsbl_sites;   /* smtp.dnsbl_sites: domain[=filter]*weight */
    unsigned smtp_dnsbl_threshold;         /* smtp.dnsbl_threshold; 1 */
    struct config_list smtp_rhsbl_sites;   /* smtp.rhsbl_sites: for sender and HELO domains */
    unsigned smtp_rhsbl_threshold;         /* smtp.rhsbl_threshold; 1 */
    unsigned smtp_dns_timeout;             /* smtp.dns_timeout ms for those lookups; 10000 */
    /* Greylisting (policy/greylist.h), off by default. */
    bool greylist_enabled;          /* greylist.enabled; no */
    unsigned greylist_delay;        /* greylist.delay seconds; 300 */
    unsigned greylist_retry_window; /* greylist.retry_window seconds; 172800 */
    unsigned greylist_max_age;      /* greylist.max_age seconds; 3024000 (35 days) */
    unsigned greylist_auto_pass;    /* greylist.auto_pass passes to the pass list; 5 */
    /* Rate limits (policy/ratelimit.h), per ratelimit.window seconds; 0 = no limit. */
    unsigned ratelimit_connections;     /* ratelimit.connections per client address */
    unsigned ratelimit_messages;        /* ratelimit.messages (MAIL) per client address */
    unsigned ratelimit_recipients;      /* ratelimit.recipients (RCPT) per client address */
    unsigned ratelimit_user_messages;   /* ratelimit.user_messages per authenticated user */
    unsigned ratelimit_user_recipients; /* ratelimit.user_recipients per authenticated user */
    unsigned ratelimit_window;          /* ratelimit.window seconds; 60 */
    /* Junk delivery: spam goes to the user's Junk mailbox instead of INBOX. */
    char *junk_header;    /* junk.header "Name: value" that marks spam; "X-Spam: Yes" */
    char *junk_mailbox;   /* junk.mailbox; "Junk" */
    bool junk_quarantine; /* junk.quarantine: a milter's quarantine means Junk, not hold; no */
    /* Milters (issue 13): socket addresses, in the order they are asked. */
    struct config_list smtp_milters;       /* smtp.milters: port 25 (smtpd_milters) */
    struct config_list submission_milters; /* submission.milters: 587 and 465 */
    struct config_list sendmail_milters;   /* sendmail.milters: `tern sendmail` (non_smtpd) */
    unsigned milter_connect_timeout;       /* milter.connect_timeout seconds; 30 */
    unsigned milter_command_timeout;       /* milter.command_timeout seconds; 30 */
    unsigned milter_content_timeout;       /* milter.content_timeout seconds; 300 */
    char *milter_default_action;           /* milter.default_action: tempfail | accept */
    unsigned milter_concurrency;           /* milter.concurrency: conversations at once; 64 */
    bool outbound_mta_sts;          /* outbound.mta_sts: honour RFC 8461 policies; yes */
    unsigned outbound_mta_sts_port; /* outbound.mta_sts_port: policy host's HTTPS port; 443 */
    char *outbound_ca_file;         /* outbound.ca_file: CAs for MTA-STS; "" = system */
    /* Our own MTA-STS policy over HTTPS (issue 12, http/http.h). */
    struct config_list mta_sts_listen; /* mta_sts.listen: HTTPS listener; empty = off */
    char *mta_sts_mode;                /* mta_sts.mode: none | testing | enforce; testing */
    struct config_list mta_sts_mx;     /* mta_sts.mx: the policy's mx lines; empty = hostname */
    unsigned mta_sts_max_age;          /* mta_sts.max_age seconds; 604800 */
    bool outbound_dane;             /* outbound.dane: RFC 7672 when DNSSEC is on; yes */
    char *dns_trust_anchor;         /* dns.trust_anchor: DNSSEC anchor file; "" = no DNSSEC */
    struct config_list transports; /* transport.<domain> = [host]:port, stored as
                                      "<domain> [host]:port" items, in file order */

    /* Mail authentication (issue 12). Added by the mailauth helper. */
    bool mailauth_verify;          /* mailauth.verify: SPF/DKIM/DMARC on port 25; yes */
    char *mailauth_authserv_id;    /* mailauth.authserv_id: A-R id; "" = hostname */
    char *mailauth_spf_policy;     /* mailauth.spf_policy: mark | reject (SPF fail at RCPT) */
    char *mailauth_dmarc_policy;   /* mailauth.dmarc_policy: enforce | junk | mark */
    unsigned mailauth_dns_timeout; /* mailauth.dns_timeout: seconds per lookup; 5 */
    struct config_list mailauth_policies; /* mailauth.{spf,dmarc}_policy.<domain> overrides,
                                             "<key> <domain> <value>" items */

    /* The directory's backend (issue 14; auth/dir_backend.h). Added by the sqldir helper. */
    unsigned directory_driver;          /* directory.driver: enum config_directory_driver */
    unsigned directory_schema;          /* directory.schema: enum config_directory_schema */
    char *directory_host;               /* directory.host; "localhost" */
    unsigned directory_port;            /* directory.port; 0 = the driver's default */
    char *directory_socket;             /* directory.socket: Unix socket (file or PG dir) */
    char *directory_dbname;             /* directory.dbname */
    char *directory_user;               /* directory.user */
    char *directory_password;           /* directory.password */
    char *directory_password_file;      /* directory.password_file: first line */
    unsigned directory_pool_size;       /* directory.pool_size connections; 4 */
    unsigned directory_connect_timeout; /* directory.connect_timeout seconds; 5 */
    unsigned directory_query_timeout;   /* directory.query_timeout seconds; 10 */
    unsigned directory_tls;             /* directory.tls: enum config_directory_tls */
    char *directory_tls_ca;             /* directory.tls_ca: CA file to verify the server */
    char *directory_tls_cert;           /* directory.tls_cert: client certificate */
    char *directory_tls_key;            /* directory.tls_key: its key */
    char *directory_default_pass_scheme; /* scheme of stored passwords without {SCHEME}; CRYPT */
    char *directory_password_scheme;     /* scheme Tern writes passwords in; SHA512-CRYPT */
    char *directory_mail_root;           /* base of relative maildir/home paths; "" =
                                            <data_dir>/mail */
    char *directory_password_query;      /* custom schema: Dovecot-style queries */
    char *directory_user_query;
    char *directory_iterate_query;
    char *directory_domain_query;
    char *directory_alias_query;
    char *directory_alias_domain_query;
};

/*
 * Load path (NULL: $TERN_CONFIG, else the default path for our uid). A missing file is
 * the embedded default. overrides: n strings "key=value" applied last (from -o).
 * Returns NULL and a malloc'd "file:line: reason" message in *error_r on a bad value.
 */
struct config *config_load(const char *path, char *const *overrides, size_t n_overrides,
                           char **error_r);
void config_free(struct config *cfg);

/*
 * Like config_load, but from text in memory (name is used in messages) with the defaults
 * for is_root. For tests and the fuzzer; touches no file.
 */
struct config *config_parse_buffer(const char *name, const char *text, size_t len,
                                   char *const *overrides, size_t n_overrides, bool is_root,
                                   char **error_r);

/* The value of mailauth.spf_policy or mailauth.dmarc_policy (key) for one of our
 * domains: its mailauth.<key>.<domain> override, else the global value. */
const char *config_mailauth_policy(const struct config *cfg, const char *key, const char *domain);

/* Was key given (in the file or by -o), rather than left at its default? */
bool config_key_is_set(const struct config *cfg, const char *key);

/* One item of smtp.milters and the like: an address, then optional settings of its own
 * that replace the milter.* ones for this milter (Postfix's per-milter overrides):
 *     inet:127.0.0.1:11332;default_action=accept;command_timeout=10
 * Keys: connect_timeout, command_timeout, content_timeout (seconds, 1-86400) and
 * default_action (tempfail | accept). A field not given is left as the caller set it
 * (-1 / NULL). true when well formed; address_r gets the address. */
struct config_milter_item {
    char address[256];
    int connect_timeout, command_timeout, content_timeout; /* seconds, -1 not given */
    int is_accept;                                          /* -1 not given, 0, 1 */
};
bool config_milter_item_parse(const char *item, struct config_milter_item *out);

/* Where a key's value came from, for messages about it: "tern.conf:12", "-o key", or
 * "tern.conf (default of key)". malloc'd. */
char *config_key_origin(const struct config *cfg, const char *key);

/* Do a and b give every key the same effective value (a SIGHUP that changed nothing in
 * the files, e.g. a renewed certificate, needs no new generation)? */
bool config_is_same(const struct config *a, const struct config *b);

/* Print the effective settings as "key = value" lines; only non-defaults if non_default_only. */
void config_show(const struct config *cfg, bool non_default_only);

#endif
