/*
 * test_config.c - tern.conf: defaults (root and not), good and bad files with the
 * "file:line: reason" errors, -o overrides, $TERN_CONFIG, and config show [-n].
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

static struct config *parse(const char *text, char *const *ov, size_t n_ov, bool is_root,
                            char **err)
{
    *err = NULL;
    return config_parse_buffer("t.conf", text, strlen(text), ov, n_ov, is_root, err);
}

/* Expect text to fail with exactly message. */
static void expect_error(const char *text, const char *message)
{
    char *err;
    struct config *cfg = parse(text, NULL, 0, false, &err);
    if (cfg)
        fail_msg("accepted: %s", text);
    assert_non_null(err);
    assert_string_equal(err, message);
    free(err);
}

static void test_defaults_user(void **state)
{
    char *err;
    struct config *cfg = parse("", NULL, 0, false, &err);
    assert_non_null(cfg);
    char cwd[4096], want[4200];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(want, sizeof want, "%s/var", cwd);
    assert_string_equal(cfg->data_dir, want);
    snprintf(want, sizeof want, "%s/var/tls/cert.pem", cwd);
    assert_string_equal(cfg->tls_cert, want);
    snprintf(want, sizeof want, "%s/var/log/maillog", cwd);
    assert_string_equal(cfg->log_file, want);
    assert_int_equal(cfg->smtp_listen.n, 1);
    assert_string_equal(cfg->smtp_listen.items[0], "*:2525");
    assert_string_equal(cfg->submission_listen.items[0], "*:2587");
    assert_string_equal(cfg->submissions_listen.items[0], "*:2465");
    assert_string_equal(cfg->pop3_listen.items[0], "*:2110");
    assert_string_equal(cfg->pop3s_listen.items[0], "*:2995");
    assert_string_equal(cfg->imap_listen.items[0], "*:2143");
    assert_string_equal(cfg->imaps_listen.items[0], "*:2993");
    assert_string_equal(cfg->run_user, "tern");
    assert_string_equal(cfg->log_target, "stderr");
    assert_int_equal(cfg->allow_plaintext, PLAINTEXT_LOOPBACK_TLS);
    assert_int_equal(cfg->smtp_max_message_size, 52428800);
    assert_int_equal(cfg->smtp_max_recipients, 1000);
    assert_int_equal(cfg->smtp_max_errors, 20);
    assert_int_equal(cfg->smtp_timeout, 300);
    assert_int_equal(cfg->pop3_timeout, 600);
    assert_int_equal(cfg->imap_timeout, 1800);
    assert_int_equal(cfg->max_connections, 10000);
    assert_int_equal(cfg->max_connections_per_ip, 100);
    assert_int_equal(cfg->worker_threads, 16);
    assert_int_equal(cfg->auth_max_failures, 100);
    assert_int_equal(cfg->auth_account_max_failures, 10);
    assert_int_equal(cfg->auth_failure_window, 300);
    assert_int_equal(cfg->auth_failure_delay, 2000);
    assert_int_equal(cfg->auth_failure_delay_max, 15000);
    assert_int_equal(cfg->auth_block_time, 900);
    assert_int_equal(cfg->auth_trusted_networks.n, 0);
    assert_int_equal(cfg->imap_login_timeout, 180);
    assert_int_equal(cfg->pop3_login_timeout, 180);
    assert_int_equal(cfg->tls_handshake_timeout, 60);
    assert_int_equal(cfg->quota_default, 0);
    assert_int_equal(cfg->relay_networks.n, 0);
    assert_string_equal(cfg->default_domain, "");
    assert_string_equal(cfg->password_schemes, "ARGON2ID SCRAM-SHA-256");
    assert_int_equal(cfg->auth_argon2_memory, 0);
    assert_int_equal(cfg->auth_argon2_rounds, 0);
    assert_false(cfg->log_debug);
    assert_true(cfg->hostname[0] != '\0');
    config_free(cfg);
}

static void test_defaults_root(void **state)
{
    char *err;
    struct config *cfg = parse("", NULL, 0, true, &err);
    assert_non_null(cfg);
    assert_string_equal(cfg->data_dir, "/var/lib/tern");
    assert_string_equal(cfg->tls_key, "/var/lib/tern/tls/key.pem");
    assert_string_equal(cfg->smtp_listen.items[0], "*:25");
    assert_string_equal(cfg->submission_listen.items[0], "*:587");
    assert_string_equal(cfg->submissions_listen.items[0], "*:465");
    assert_string_equal(cfg->pop3_listen.items[0], "*:110");
    assert_string_equal(cfg->pop3s_listen.items[0], "*:995");
    assert_string_equal(cfg->imap_listen.items[0], "*:143");
    assert_string_equal(cfg->imaps_listen.items[0], "*:993");
    config_free(cfg);
}

static void test_good_file(void **state)
{
    const char *text = "# a comment\n"
                       "\n"
                       "hostname = mail.example.test\n"
                       "data_dir=/srv/tern   # trailing comment\n"
                       "  smtp.listen = 127.0.0.1:25, [::1]:25 *:2525\n"
                       "pop3.listen =\n"
                       "imap.listen = 143\n"
                       "relay_networks = 192.0.2.0/24 2001:db8::/32 10.1.2.3\n"
                       "auth.allow_plaintext = always\r\n"
                       "smtp.max_message_size = 10M\n"
                       "quota.default = 1G\n"
                       "log.debug = yes\n"
                       "log.target = file\n"
                       "log.file = log/tern.log\n"
                       "tls.cert = /etc/ssl/tern.pem\n"
                       "auth.default_domain = example.test\n"
                       "auth.password_schemes = \"SHA512-CRYPT PLAIN\"\n"
                       "auth.argon2_memory = 19M\n"
                       "auth.argon2_rounds = 2\n"
                       "worker_threads = 4\n";
    char *err;
    struct config *cfg = parse(text, NULL, 0, false, &err);
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->hostname, "mail.example.test");
    assert_string_equal(cfg->data_dir, "/srv/tern");
    assert_int_equal(cfg->smtp_listen.n, 3);
    assert_string_equal(cfg->smtp_listen.items[0], "127.0.0.1:25");
    assert_string_equal(cfg->smtp_listen.items[1], "[::1]:25");
    assert_string_equal(cfg->smtp_listen.items[2], "*:2525");
    assert_int_equal(cfg->pop3_listen.n, 0); /* empty disables */
    assert_string_equal(cfg->imap_listen.items[0], "*:143");
    assert_int_equal(cfg->relay_networks.n, 3);
    assert_int_equal(cfg->allow_plaintext, PLAINTEXT_ALWAYS);
    assert_int_equal(cfg->smtp_max_message_size, 10 * 1024 * 1024);
    assert_int_equal(cfg->quota_default, 1024ull * 1024 * 1024);
    assert_true(cfg->log_debug);
    assert_string_equal(cfg->log_target, "file");
    assert_string_equal(cfg->log_file, "/srv/tern/log/tern.log"); /* relative to data_dir */
    assert_string_equal(cfg->tls_cert, "/etc/ssl/tern.pem");
    assert_string_equal(cfg->tls_key, "/srv/tern/tls/key.pem");
    assert_string_equal(cfg->default_domain, "example.test");
    assert_string_equal(cfg->password_schemes, "SHA512-CRYPT PLAIN");
    assert_int_equal(cfg->auth_argon2_memory, 19ull << 20);
    assert_int_equal(cfg->auth_argon2_rounds, 2);
    assert_int_equal(cfg->worker_threads, 4);
    config_free(cfg);
}

static void test_errors(void **state)
{
    expect_error("hostname = a\nbogus.key = 1\n", "t.conf:2: unknown key 'bogus.key'");
    expect_error("\n\nsmtp.timeout = 5s\n", "t.conf:3: bad number '5s' for smtp.timeout");
    expect_error("smtp.timeout = -1\n", "t.conf:1: bad number '-1' for smtp.timeout");
    expect_error("smtp.timeout = 99999999999\n",
                 "t.conf:1: bad number '99999999999' for smtp.timeout");
    expect_error("smtp.max_message_size = 10X\n",
                 "t.conf:1: bad number '10X' for smtp.max_message_size");
    expect_error("auth.argon2_rounds = 65\n", "t.conf:1: bad number '65' for auth.argon2_rounds "
                                              "(0 for the scheme's own, or 1 to 64)");
    expect_error("auth.argon2_memory = 4k\n", "t.conf:1: bad size '4k' for auth.argon2_memory "
                                              "(0 for the scheme's own, or 8k to 4G)");
    expect_error("auth.argon2_memory = 5G\n", "t.conf:1: bad size '5G' for auth.argon2_memory "
                                              "(0 for the scheme's own, or 8k to 4G)");
    expect_error("smtp.listen = 127.0.0.1:99999\n",
                 "t.conf:1: bad listen address '127.0.0.1:99999' for smtp.listen");
    expect_error("imap.listen = 1.2.3:143\n",
                 "t.conf:1: bad listen address '1.2.3:143' for imap.listen");
    expect_error("imap.listen = [::1:143\n",
                 "t.conf:1: bad listen address '[::1:143' for imap.listen");
    expect_error("imaps.listen = ::1:993\n",
                 "t.conf:1: bad listen address '::1:993' for imaps.listen");
    expect_error("auth.allow_plaintext = sometimes\n",
                 "t.conf:1: bad value 'sometimes' for auth.allow_plaintext (use tls, "
                 "loopback+tls or always)");
    expect_error("log.target = journald\n",
                 "t.conf:1: bad value 'journald' for log.target (use stderr, syslog or file)");
    expect_error("log.debug = maybe\n",
                 "t.conf:1: bad boolean 'maybe' for log.debug (use yes or no)");
    expect_error("relay_networks = 10.0.0.0/33\n",
                 "t.conf:1: bad network '10.0.0.0/33' for relay_networks");
    expect_error("auth.trusted_networks = 127.0.0.1/40\n",
                 "t.conf:1: bad network '127.0.0.1/40' for auth.trusted_networks");
    expect_error("smtp.milters = inet:localhost:11332\n",
                 "t.conf:1: bad milter address (inet:IP:PORT or unix:/path; then "
                 ";default_action=accept|tempfail or ;connect|command|content_timeout=SECONDS) "
                 "'inet:localhost:11332' for smtp.milters");
    expect_error("smtp.milters = inet:127.0.0.1:11332;default_action=maybe\n",
                 "t.conf:1: bad milter address (inet:IP:PORT or unix:/path; then "
                 ";default_action=accept|tempfail or ;connect|command|content_timeout=SECONDS) "
                 "'inet:127.0.0.1:11332;default_action=maybe' for smtp.milters");
    expect_error("milter.default_action = reject\n",
                 "t.conf:1: bad value 'reject' for milter.default_action (use tempfail or "
                 "accept)");
    expect_error("smtp.dnsbl_sites = zen.spamhaus.org*x\n",
                 "t.conf:1: bad DNS list site (domain[=filter]*weight) 'zen.spamhaus.org*x' "
                 "for smtp.dnsbl_sites");
    expect_error("greylist.enabled = perhaps\n",
                 "t.conf:1: bad boolean 'perhaps' for greylist.enabled (use yes or no)");
    expect_error("just some words\n", "t.conf:1: missing '=' in \"just some words\"");
    expect_error("= value\n", "t.conf:1: missing key before '='");
    expect_error("data_dir =\n", "t.conf:1: empty value for data_dir"); /* found by fuzz_config */
}

static void test_overrides(void **state)
{
    char *ov[] = {"smtp.listen=127.0.0.1:10025", "smtp.timeout = 7", "pop3.listen="};
    char *err;
    struct config *cfg = parse("smtp.timeout = 5\nsmtp.listen = *:25\n", ov, 3, false, &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->smtp_timeout, 7); /* -o wins over the file */
    assert_string_equal(cfg->smtp_listen.items[0], "127.0.0.1:10025");
    assert_int_equal(cfg->pop3_listen.n, 0);
    config_free(cfg);

    char *bad[] = {"nope=1"};
    cfg = parse("", bad, 1, false, &err);
    assert_null(cfg);
    assert_string_equal(err, "-o nope=1: unknown key 'nope'");
    free(err);
}

static void test_load_file_and_env(void **state)
{
    char path[] = "/tmp/tern-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "smtp.timeout = 42\nimap.timeout = x\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char *err = NULL;
    struct config *cfg = config_load(path, NULL, 0, &err);
    assert_null(cfg);
    char want[256];
    snprintf(want, sizeof want, "%s:2: bad number 'x' for imap.timeout", path);
    assert_string_equal(err, want);
    free(err);

    /* $TERN_CONFIG is used when no path is given */
    FILE *f = fopen(path, "w");
    fputs("smtp.timeout = 42\n", f);
    fclose(f);
    setenv("TERN_CONFIG", path, 1);
    cfg = config_load(NULL, NULL, 0, &err);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, path);
    assert_int_equal(cfg->smtp_timeout, 42);
    config_free(cfg);
    unsetenv("TERN_CONFIG");
    unlink(path);

    /* a missing file is the embedded default */
    cfg = config_load("/nonexistent/tern.conf", NULL, 0, &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->smtp_timeout, 300);
    config_free(cfg);
}

/* Run config_show into a string (stdout redirected to a temporary file). */
static char *show(const struct config *cfg, bool non_default_only)
{
    fflush(stdout);
    int saved = dup(1);
    FILE *tmp = tmpfile();
    dup2(fileno(tmp), 1);
    config_show(cfg, non_default_only);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    static char out[16384];
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return out;
}

/* A milter list item: the address, then settings of its own. */
static void test_milter_item(void **state)
{
    (void)state;
    struct config_milter_item it;
    assert_true(config_milter_item_parse("inet:127.0.0.1:11332", &it));
    assert_string_equal(it.address, "inet:127.0.0.1:11332");
    assert_int_equal(it.is_accept, -1);
    assert_int_equal(it.command_timeout, -1);
    assert_true(config_milter_item_parse(
        "unix:/run/x.sock;default_action=accept;connect_timeout=5;command_timeout=7;"
        "content_timeout=86400",
        &it));
    assert_string_equal(it.address, "unix:/run/x.sock");
    assert_int_equal(it.is_accept, 1);
    assert_int_equal(it.connect_timeout, 5);
    assert_int_equal(it.command_timeout, 7);
    assert_int_equal(it.content_timeout, 86400);
    assert_true(config_milter_item_parse("inet:127.0.0.1:1;default_action=tempfail", &it));
    assert_int_equal(it.is_accept, 0);
    const char *bad[] = {"", ";default_action=accept", "inet:127.0.0.1:1;",
                         "inet:127.0.0.1:1;default_action=maybe", "inet:127.0.0.1:1;timeout=5",
                         "inet:127.0.0.1:1;command_timeout=0", "inet:127.0.0.1:1;command_timeout=x",
                         "inet:127.0.0.1:1;command_timeout=86401", "inet:127.0.0.1:1;command_timeout",
                         "inet:127.0.0.1:1;command_timeout=", "nonsense:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(config_milter_item_parse(bad[i], &it));
}

static void test_show(void **state)
{
    char *err;
    struct config *cfg = parse("hostname = h.example\nsmtp.listen = 127.0.0.1:25, [::1]:25\n"
                               "pop3.listen =\nsmtp.max_message_size = 1k\n",
                               NULL, 0, false, &err);
    assert_non_null(cfg);
    const char *n = show(cfg, true);
    assert_string_equal(n, "hostname = h.example\n"
                           "smtp.listen = 127.0.0.1:25, [::1]:25\n"
                           "pop3.listen =\n"
                           "smtp.max_message_size = 1024\n");
    const char *all = show(cfg, false);
    assert_non_null(strstr(all, "smtp.timeout = 300\n"));
    assert_non_null(strstr(all, "auth.allow_plaintext = loopback+tls\n"));
    assert_non_null(strstr(all, "imaps.listen = *:2993\n"));
    assert_non_null(strstr(all, "relay_networks =\n"));

    /* what show prints parses back to the same settings */
    char *copy = strdup(all);
    struct config *again = parse(copy, NULL, 0, false, &err);
    free(copy);
    if (!again)
        fail_msg("%s", err);
    char *first = strdup(show(cfg, false));
    assert_string_equal(show(again, false), first);
    free(first);
    config_free(again);
    config_free(cfg);

    /* transport.<domain> routes are shown as given, so show -n round-trips them */
    cfg = parse("transport.example.org = [192.0.2.1]:25\n", NULL, 0, false, &err);
    assert_non_null(cfg);
    assert_string_equal(show(cfg, true), "transport.example.org = [192.0.2.1]:25\n");
    config_free(cfg);
}

/* config_is_same: what a reload compares to keep the auth process. */
static void test_is_same(void **state)
{
    (void)state;
    const char *base = "hostname = mx.example.test\ntransport.example.org = [10.0.0.1]:25\n";
    char *err = NULL;
    struct config *a = parse(base, NULL, 0, false, &err);
    struct config *b = parse(base, NULL, 0, false, &err);
    struct config *c = parse("hostname = mx2.example.test\ntransport.example.org = [10.0.0.1]:25\n",
                             NULL, 0, false, &err);
    struct config *d = parse("hostname = mx.example.test\ntransport.example.org = [10.0.0.2]:25\n",
                             NULL, 0, false, &err);
    char *ov[] = {"directory.pool_size=9"};
    struct config *e = parse(base, ov, 1, false, &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(d);
    assert_non_null(e);
    assert_true(config_is_same(a, b));
    assert_false(config_is_same(a, c)); /* a key's value */
    assert_false(config_is_same(a, d)); /* a transport.<domain> item */
    assert_false(config_is_same(a, e)); /* an override */
    config_free(a);
    config_free(b);
    config_free(c);
    config_free(d);
    config_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_user), cmocka_unit_test(test_defaults_root),
        cmocka_unit_test(test_good_file),     cmocka_unit_test(test_errors),
        cmocka_unit_test(test_overrides),     cmocka_unit_test(test_load_file_and_env),
        cmocka_unit_test(test_show),          cmocka_unit_test(test_milter_item),
        cmocka_unit_test(test_is_same),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
