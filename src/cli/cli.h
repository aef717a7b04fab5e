/*
 * cli.h - the `tern` subcommands. Each takes the arguments after the command name
 * (argv[0] is the command itself), the global options already parsed, and returns the
 * process exit code: 0 ok, 1 operational failure, 2 usage error (message on stderr).
 *
 * Commands that need the config load it with config_load(opts->config_path, ...).
 */
#ifndef TERN_CLI_CLI_H
#define TERN_CLI_CLI_H

#include <stddef.h>

struct cli_options {
    const char *config_path;  /* -c FILE, or NULL ($TERN_CONFIG, then the default) */
    char **overrides;         /* -o key=value, in order */
    size_t n_overrides;
};

int cli_serve(const struct cli_options *o, int argc, char **argv);       /* serve [-f] */
int cli_config(const struct cli_options *o, int argc, char **argv);      /* config check|show [-n] */
int cli_domain(const struct cli_options *o, int argc, char **argv);      /* domain add|del|list */
int cli_user(const struct cli_options *o, int argc, char **argv);        /* user add|del|passwd|list|show */
int cli_alias(const struct cli_options *o, int argc, char **argv);       /* alias add|del|list */
int cli_hash_password(const struct cli_options *o, int argc, char **argv); /* hash-password [-s scheme] */
int cli_queue(const struct cli_options *o, int argc, char **argv);       /* queue list|show|delete|hold|release */
int cli_auth(const struct cli_options *o, int argc, char **argv);        /* auth blocks|check ... */
/* Added by the migration helper (issue 14): read a Postfix + Dovecot host's config. */
int cli_import(const struct cli_options *o, int argc, char **argv); /* import [--write] ... */
int cli_status(const struct cli_options *o, int argc, char **argv);      /* status */

/* Added by the outbound helper: local submission and the queue listing (also run when
 * the binary is invoked as "sendmail" or "mailq"). */
int cli_sendmail(const struct cli_options *o, int argc, char **argv); /* sendmail [-t] [-i] ... */
int cli_mailq(const struct cli_options *o, int argc, char **argv);    /* mailq */

/* Added by the mailauth helper (issue 12): DKIM keys, DNS records, authentication checks. */
int cli_dkim(const struct cli_options *o, int argc, char **argv); /* dkim keygen|list|retire */
int cli_auth_check(const struct cli_options *o, int argc, char **argv); /* auth check < message */
int cli_dns(const struct cli_options *o, int argc, char **argv);  /* dns records|check DOMAIN */
int cli_tlsrpt(const struct cli_options *o, int argc, char **argv); /* tlsrpt send [DAY] */
/* Print a zone-file TXT record, split into 250-octet character-strings. */
void cli_print_txt_record(const char *name, const char *value);

/* Load the config for a command, printing "tern: <reason>" on failure (returns NULL). */
struct config *cli_load_config(const struct cli_options *o);
/* Before a command run as root opens the directory: data_dir is made for run_user when
 * missing, and a missing tern.db is created empty, owned by the user that will read it
 * (auth_user, or run_user without separated processes). The command stays root: files
 * SQLite adds get the database's owner. 0, or 1 after printing the reason. */
int cli_directory_prepare(const struct config *cfg);

#endif
