/*
 * directory_cmd.c - `tern domain`, `tern user`, `tern alias` and `tern hash-password`:
 * the administrator's view of the directory (src/auth/auth.h).
 *
 *   tern domain add|del DOMAIN | list
 *   tern user add ADDRESS [--password-stdin | --hash HASH] [--quota BYTES]
 *   tern user passwd ADDRESS [--password-stdin]
 *   tern user del ADDRESS | list [DOMAIN] | show ADDRESS
 *   tern user quota ADDRESS BYTES | enable ADDRESS | disable ADDRESS
 *   tern alias add SOURCE TARGET | del SOURCE [TARGET] | list
 *   tern hash-password [-s SCHEME] [-p PASS] [-t HASH]     (like `doveadm pw`)
 *
 * Passwords come from a no-echo prompt on the terminal, or, with --password-stdin, from
 * one line of standard input (for scripts); --hash stores a hash made elsewhere (a Dovecot
 * passwd-file's "{SHA512-CRYPT}$6$...", `doveadm pw`), so a moved user keeps the old
 * password. Errors: one line "tern: ..." on stderr and
 * exit 1; usage errors exit 2.
 *
 * Run as root against a data dir owned by another user (the server's run_user), the
 * commands stay root and keep tern.db's owner (the auth process's user): SQLite gives the
 * files it adds the database's owner, and a new tern.db is made for that user first
 * (cli_directory_prepare).
 */
#include "auth/auth.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/util.h"
#include "store/store.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define PASSWORD_MAX 1024

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "tern: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

static int usage_error(const char *usage)
{
    fprintf(stderr, "usage: tern %s\n", usage);
    return 2;
}

/* Load the config and open the directory; NULL after printing the reason. */
static struct auth_service *open_directory(const struct cli_options *o, struct config **cfg_r)
{
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return NULL;
    if (cli_directory_prepare(cfg) != 0) {
        config_free(cfg);
        return NULL;
    }
    char *err = NULL;
    struct auth_service *svc = auth_service_open(cfg, &err);
    if (!svc) {
        fail("cannot open the directory", err);
        free(err);
        config_free(cfg);
        return NULL;
    }
    *cfg_r = cfg;
    return svc;
}

static void close_directory(struct auth_service *svc, struct config *cfg)
{
    auth_service_close(svc);
    config_free(cfg);
}

/* Print *errp (if any) as the failure line; returns the exit code for rc. A pointer,
 * because report(f(&err), err) would read err before f sets it. */
static int report(int rc, char **errp)
{
    char *err = *errp;
    *errp = NULL;
    if (rc == 0) {
        free(err);
        return 0;
    }
    fail(err ? err : "operation failed", NULL);
    free(err);
    return 1;
}

/* ---- passwords -------------------------------------------------------------------- */

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* One line from stdin (--password-stdin). */
static int read_password_stdin(char *out, size_t size)
{
    if (!fgets(out, (int)size, stdin))
        return fail("no password on standard input", NULL);
    if (!strchr(out, '\n') && !feof(stdin))
        return fail("password too long", NULL);
    chomp(out);
    return 0;
}

/* Prompt on the terminal without echo. */
static int prompt_no_echo(const char *prompt, char *out, size_t size)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty)
        return fail("no terminal to ask for a password (use --password-stdin)", NULL);
    struct termios old, quiet;
    int fd = fileno(tty);
    bool has_termios = tcgetattr(fd, &old) == 0;
    if (has_termios) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    fputs(prompt, tty);
    fflush(tty);
    char *got = fgets(out, (int)size, tty);
    if (has_termios)
        tcsetattr(fd, TCSAFLUSH, &old);
    fclose(tty);
    if (!got)
        return fail("no password entered", NULL);
    chomp(out);
    return 0;
}

/* Ask twice on the terminal; both entries must match. */
static int prompt_new_password(char *out, size_t size)
{
    char again[PASSWORD_MAX + 2];
    if (prompt_no_echo("Enter new password: ", out, size) != 0 ||
        prompt_no_echo("Retype new password: ", again, sizeof again) != 0)
        return 1;
    bool same = strcmp(out, again) == 0;
    memset(again, 0, sizeof again);
    if (!same)
        return fail("passwords do not match", NULL);
    return 0;
}

static int get_new_password(bool from_stdin, char *out, size_t size)
{
    int rc = from_stdin ? read_password_stdin(out, size) : prompt_new_password(out, size);
    if (rc == 0 && out[0] == '\0')
        return fail("empty password", NULL);
    return rc;
}

/* ---- tern domain ------------------------------------------------------------------ */

static void print_line(const char *s, void *arg)
{
    (void)arg;
    printf("%s\n", s);
}

int cli_domain(const struct cli_options *o, int argc, char **argv)
{
    static const char usage[] = "domain add DOMAIN | del DOMAIN | list";
    if (argc < 2)
        return usage_error(usage);
    const char *sub = argv[1];
    bool is_add = strcmp(sub, "add") == 0, is_del = strcmp(sub, "del") == 0;
    bool is_list = strcmp(sub, "list") == 0;
    if (!(((is_add || is_del) && argc == 3) || (is_list && argc == 2)))
        return usage_error(usage);
    struct config *cfg;
    struct auth_service *svc = open_directory(o, &cfg);
    if (!svc)
        return 1;
    char *err = NULL;
    int rc;
    if (is_add)
        rc = report(auth_domain_add(svc, argv[2], &err), &err);
    else if (is_del)
        rc = report(auth_domain_del(svc, argv[2], &err), &err);
    else
        rc = auth_domain_list(svc, print_line, NULL) == 0 ? 0 : fail("cannot list domains", NULL);
    close_directory(svc, cfg);
    return rc;
}

/* ---- tern user -------------------------------------------------------------------- */

static bool parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mult = 1;
    if (*end == 'K' || *end == 'k')
        mult = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mult = 1024 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mult = 1024ULL * 1024 * 1024, end++;
    if (errno || *end || v > INT64_MAX / mult)
        return false;
    *out = v * mult;
    return true;
}

static void print_user(const struct auth_user *u, void *arg)
{
    (void)arg;
    printf("%s%s\n", u->address, u->enabled ? "" : "\tdisabled");
}

static int user_show(struct auth_service *svc, const char *address)
{
    struct auth_user u;
    int rc = auth_user_lookup(svc, address, &u);
    if (rc < 0)
        return fail("directory lookup failed", NULL);
    if (rc == 0)
        return fail("no such user", address);
    printf("address: %s\n", u.address);
    printf("home: %s\n", u.home);
    if (u.quota)
        printf("quota: %" PRIu64 "\n", u.quota);
    else
        printf("quota: unlimited\n");
    struct stat st;
    if (stat(u.home, &st) == 0) {
        int64_t used = store_user_usage(u.home);
        if (used >= 0)
            printf("usage: %" PRId64 "\n", used);
    } else {
        printf("usage: 0\n"); /* nothing delivered yet */
    }
    printf("enabled: %s\n", u.enabled ? "yes" : "no");
    char *schemes = auth_user_schemes(svc, u.address);
    printf("schemes: %s\n", schemes ? schemes : "");
    free(schemes);
    auth_user_free(&u);
    return 0;
}

int cli_user(const struct cli_options *o, int argc, char **argv)
{
    static const char usage[] =
        "user add ADDRESS [--password-stdin | --hash HASH] [--quota BYTES] | passwd ADDRESS "
        "[--password-stdin] | del ADDRESS | list [DOMAIN] | show ADDRESS | quota ADDRESS "
        "BYTES | enable ADDRESS | disable ADDRESS";
    if (argc < 2)
        return usage_error(usage);
    const char *sub = argv[1];
    const char *address = argc >= 3 ? argv[2] : NULL;
    bool from_stdin = false;
    const char *hash = NULL;
    uint64_t quota = 0;

    /* Validate the command line fully before opening anything. */
    if (strcmp(sub, "add") == 0 || strcmp(sub, "passwd") == 0) {
        if (!address || address[0] == '-')
            return usage_error(usage);
        for (int i = 3; i < argc; i++) {
            if (strcmp(argv[i], "--password-stdin") == 0 && !hash) {
                from_stdin = true;
            } else if (strcmp(sub, "add") == 0 && strcmp(argv[i], "--hash") == 0 &&
                       i + 1 < argc && !from_stdin) {
                hash = argv[++i];
            } else if (strcmp(sub, "add") == 0 && strcmp(argv[i], "--quota") == 0 && i + 1 < argc) {
                if (!parse_bytes(argv[++i], &quota)) {
                    fprintf(stderr, "tern: bad --quota value '%s'\n", argv[i]);
                    return 2;
                }
            } else {
                return usage_error(usage);
            }
        }
    } else if (strcmp(sub, "del") == 0 || strcmp(sub, "show") == 0 || strcmp(sub, "enable") == 0 ||
               strcmp(sub, "disable") == 0) {
        if (argc != 3)
            return usage_error(usage);
    } else if (strcmp(sub, "quota") == 0) {
        if (argc != 4)
            return usage_error(usage);
        if (!parse_bytes(argv[3], &quota)) {
            fprintf(stderr, "tern: bad quota value '%s'\n", argv[3]);
            return 2;
        }
    } else if (strcmp(sub, "list") == 0) {
        if (argc > 3)
            return usage_error(usage);
    } else {
        return usage_error(usage);
    }

    struct config *cfg;
    struct auth_service *svc = open_directory(o, &cfg);
    if (!svc)
        return 1;
    char *err = NULL;
    int rc;
    if (hash) {
        rc = report(auth_user_add_hashed(svc, address, hash, quota, &err), &err);
    } else if (strcmp(sub, "add") == 0 || strcmp(sub, "passwd") == 0) {
        char pw[PASSWORD_MAX + 2];
        rc = get_new_password(from_stdin, pw, sizeof pw);
        if (rc == 0)
            rc = report(strcmp(sub, "add") == 0 ? auth_user_add(svc, address, pw, quota, &err)
                                                : auth_user_set_password(svc, address, pw, &err),
                        &err);
        memset(pw, 0, sizeof pw);
    } else if (strcmp(sub, "del") == 0) {
        rc = report(auth_user_del(svc, address, &err), &err);
    } else if (strcmp(sub, "quota") == 0) {
        rc = report(auth_user_set_quota(svc, address, quota, &err), &err);
    } else if (strcmp(sub, "enable") == 0 || strcmp(sub, "disable") == 0) {
        rc = report(auth_user_set_enabled(svc, address, strcmp(sub, "enable") == 0, &err), &err);
    } else if (strcmp(sub, "show") == 0) {
        rc = user_show(svc, address);
    } else {
        if (address && auth_domain_is_local(svc, address) != 1) {
            rc = fail("no such domain", address);
        } else {
            rc = auth_user_list(svc, address, print_user, NULL) == 0
                     ? 0
                     : fail("cannot list users", NULL);
        }
    }
    close_directory(svc, cfg);
    return rc;
}

/* ---- tern alias ------------------------------------------------------------------- */

static void print_alias(const char *source, const char *target, void *arg)
{
    (void)arg;
    printf("%s -> %s\n", source, target);
}

int cli_alias(const struct cli_options *o, int argc, char **argv)
{
    static const char usage[] = "alias add SOURCE TARGET | del SOURCE [TARGET] | list\n"
                                "  SOURCE is user@domain or @domain (catch-all)";
    if (argc < 2)
        return usage_error(usage);
    const char *sub = argv[1];
    if (!((strcmp(sub, "add") == 0 && argc == 4) ||
          (strcmp(sub, "del") == 0 && (argc == 3 || argc == 4)) ||
          (strcmp(sub, "list") == 0 && argc == 2)))
        return usage_error(usage);
    struct config *cfg;
    struct auth_service *svc = open_directory(o, &cfg);
    if (!svc)
        return 1;
    char *err = NULL;
    int rc;
    if (strcmp(sub, "add") == 0)
        rc = report(auth_alias_add(svc, argv[2], argv[3], &err), &err);
    else if (strcmp(sub, "del") == 0)
        rc = report(auth_alias_del(svc, argv[2], argc == 4 ? argv[3] : NULL, &err), &err);
    else
        rc = auth_alias_list(svc, print_alias, NULL) == 0 ? 0 : fail("cannot list aliases", NULL);
    close_directory(svc, cfg);
    return rc;
}

/* ---- tern hash-password ----------------------------------------------------------- */

/* Like `doveadm pw`: hash a password (-s SCHEME, default ARGON2ID), or with -t HASH verify
 * one: exit 0 and "(verified)" on a match, 1 otherwise. Needs no config. */
int cli_hash_password(const struct cli_options *o, int argc, char **argv)
{
    static const char usage[] = "hash-password [-s SCHEME] [-p PASSWORD] [-t HASH]";
    (void)o;
    const char *scheme = "ARGON2ID", *password = NULL, *test_hash = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
            scheme = argv[++i];
        else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc)
            password = argv[++i];
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            test_hash = argv[++i];
        else
            return usage_error(usage);
    }
    char pw[PASSWORD_MAX + 2];
    if (!password) {
        int rc;
        if (isatty(STDIN_FILENO))
            rc = test_hash ? prompt_no_echo("Enter password to verify: ", pw, sizeof pw)
                           : prompt_new_password(pw, sizeof pw);
        else
            rc = read_password_stdin(pw, sizeof pw);
        if (rc != 0)
            return 1;
        password = pw;
    }
    int rc;
    if (test_hash) {
        int v = auth_password_verify(test_hash, password);
        if (v == 1) {
            printf("%s (verified)\n", test_hash);
            rc = 0;
        } else {
            rc = fail(v == 0 ? "password mismatch" : "unknown scheme or malformed hash", NULL);
        }
    } else {
        char *hash = NULL, *err = NULL;
        if (auth_password_hash(scheme, password, NULL, &hash, &err) == 0) {
            printf("%s\n", hash);
            free(hash);
            rc = 0;
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, "%s: %s", scheme, err ? err : "hashing failed");
            rc = fail(msg, NULL);
            free(err);
        }
    }
    memset(pw, 0, sizeof pw);
    return rc;
}
