/*
 * dkim_cmd.c - `tern dkim keygen DOMAIN [SELECTOR] [--rsa|--ed25519]`, `tern dkim list
 * [DOMAIN]`, `tern dkim retire DOMAIN SELECTOR`: the DKIM key store (mailauth/keys.c).
 *
 * keygen makes an RSA-2048 and an Ed25519 key by default (two selectors, SELECTOR-rsa and
 * SELECTOR-ed25519, since one name holds one key record) and prints the TXT records to
 * publish. Run as root, it hands the new files to run_user, who signs with them.
 */
#include "cli/cli.h"
#include "core/buf.h"
#include "core/config.h"
#include "mailauth/mailauth.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int dkim_usage(void)
{
    fprintf(stderr, "usage: tern dkim keygen DOMAIN [SELECTOR] [--rsa|--ed25519]\n"
                    "       tern dkim list [DOMAIN]\n"
                    "       tern dkim retire DOMAIN SELECTOR\n");
    return 2;
}

void cli_print_txt_record(const char *name, const char *value)
{
    /* RFC 1035 §3.3.14: a character-string holds at most 255 octets; longer values are
     * split into several strings that DKIM and SPF join again (RFC 6376 §3.6.2.2) */
    size_t len = strlen(value);
    printf("%s. 3600 IN TXT (", name);
    for (size_t i = 0; i < len; i += 250)
        printf(" \"%.*s\"", (int)(len - i < 250 ? len - i : 250), value + i);
    printf(" )\n");
}

/* Root made the files: give them to the user the server runs as. */
static void dkim_chown(const struct config *cfg, const char *domain, const char *selector)
{
    if (geteuid() != 0)
        return;
    struct passwd *pw = getpwnam(cfg->run_user);
    if (!pw)
        return;
    char path[4400];
    snprintf(path, sizeof path, "%s/dkim", cfg->data_dir);
    if (chown(path, pw->pw_uid, pw->pw_gid) < 0)
        fprintf(stderr, "tern: warning: cannot chown %s\n", path);
    snprintf(path, sizeof path, "%s/dkim/%s", cfg->data_dir, domain);
    if (chown(path, pw->pw_uid, pw->pw_gid) < 0)
        fprintf(stderr, "tern: warning: cannot chown %s\n", path);
    snprintf(path, sizeof path, "%s/dkim/%s/%s.pem", cfg->data_dir, domain, selector);
    if (chown(path, pw->pw_uid, pw->pw_gid) < 0)
        fprintf(stderr, "tern: warning: cannot chown %s\n", path);
}

static int dkim_keygen(const struct config *cfg, int argc, char **argv)
{
    const char *domain = NULL, *selector = NULL;
    bool want_rsa = true, want_ed = true;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--rsa") == 0)
            want_ed = false;
        else if (strcmp(argv[i], "--ed25519") == 0)
            want_rsa = false;
        else if (argv[i][0] == '-')
            return dkim_usage();
        else if (!domain)
            domain = argv[i];
        else if (!selector)
            selector = argv[i];
        else
            return dkim_usage();
    }
    if (!domain || (!want_rsa && !want_ed))
        return dkim_usage();
    char base[64];
    if (selector) {
        snprintf(base, sizeof base, "%s", selector);
    } else {
        /* default selector: the date, so that rotations get new names */
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(base, sizeof base, "t%Y%m%d", &tm);
    }
    bool both = want_rsa && want_ed;
    for (int k = 0; k < 2; k++) {
        bool is_ed = k == 1;
        if ((is_ed && !want_ed) || (!is_ed && !want_rsa))
            continue;
        char sel[80];
        if (both)
            snprintf(sel, sizeof sel, "%s-%s", base, is_ed ? "ed25519" : "rsa");
        else
            snprintf(sel, sizeof sel, "%s", base);
        struct mailauth_key_info info;
        char *err = NULL;
        if (mailauth_keys_generate(cfg->data_dir, domain, sel,
                                   is_ed ? MAILAUTH_DKIM_ED25519_SHA256 : MAILAUTH_DKIM_RSA_SHA256,
                                   &info, &err) < 0) {
            fprintf(stderr, "tern: %s\n", err ? err : "key generation failed");
            free(err);
            return 1;
        }
        dkim_chown(cfg, domain, sel);
        char name[400];
        snprintf(name, sizeof name, "%s._domainkey.%s", sel, domain);
        printf("; %s key %u bits, %s/dkim/%s/%s.pem\n", is_ed ? "Ed25519" : "RSA", info.bits,
               cfg->data_dir, domain, sel);
        cli_print_txt_record(name, info.txt ? info.txt : "");
        free(info.txt);
    }
    return 0;
}

static int dkim_list(const struct config *cfg, int argc, char **argv)
{
    if (argc > 3)
        return dkim_usage();
    struct mailauth_key_info *list;
    size_t n;
    char *err = NULL;
    if (mailauth_keys_list(cfg->data_dir, argc == 3 ? argv[2] : NULL, &list, &n, &err) < 0) {
        fprintf(stderr, "tern: %s\n", err ? err : "cannot list the keys");
        free(err);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        char when[32];
        time_t t = (time_t)list[i].created;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d", &tm);
        printf("%s %s %s %u %s %s\n", list[i].domain, list[i].selector,
               list[i].alg == MAILAUTH_DKIM_ED25519_SHA256 ? "ed25519" : "rsa", list[i].bits,
               when,
               list[i].is_retired   ? "retired"
               : list[i].is_signing ? "signing"
                                    : "published");
    }
    mailauth_keys_list_free(list, n);
    return 0;
}

int cli_dkim(const struct cli_options *o, int argc, char **argv)
{
    if (argc < 2)
        return dkim_usage();
    const char *sub = argv[1];
    if (strcmp(sub, "keygen") != 0 && strcmp(sub, "list") != 0 && strcmp(sub, "retire") != 0)
        return dkim_usage();
    if (strcmp(sub, "retire") == 0 && argc != 4)
        return dkim_usage();
    struct config *cfg = cli_load_config(o);
    if (!cfg)
        return 1;
    int rc;
    if (strcmp(sub, "keygen") == 0) {
        rc = dkim_keygen(cfg, argc, argv);
    } else if (strcmp(sub, "list") == 0) {
        rc = dkim_list(cfg, argc, argv);
    } else {
        char *err = NULL;
        rc = mailauth_keys_retire(cfg->data_dir, argv[2], argv[3], &err) == 0 ? 0 : 1;
        if (rc)
            fprintf(stderr, "tern: %s\n", err ? err : "cannot retire the key");
        else
            printf("retired %s of %s: remove %s._domainkey.%s from DNS once mail signed with it "
                   "has been delivered\n",
                   argv[3], argv[2], argv[3], argv[2]);
        free(err);
    }
    config_free(cfg);
    return rc;
}
