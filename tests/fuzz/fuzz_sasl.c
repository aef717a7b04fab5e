/*
 * fuzz_sasl.c - random client responses into PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-256
 * exchanges against a small test directory in a temp dir.
 *
 * Input: byte 0 picks the mechanism (and whether the first step is an initial
 * response); the rest is split at '\n' into client responses. Byte 1 bit 0 says whether
 * each response is sent base64-encoded (reaching the mechanism parsers) or raw
 * (exercising the base64 decoder). At most 8 steps per exchange.
 */
#include "auth/auth.h"
#include "auth/auth_internal.h"
#include "core/config.h"
#include "core/util.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct auth_service *svc;

/* A directory with one user whose SCRAM credential uses 2 iterations (fast to fuzz). */
static void fuzz_init(void)
{
    static char dir[] = "/tmp/tern-fuzz-sasl-XXXXXX";
    static struct config cfg;
    if (!mkdtemp(dir))
        abort();
    cfg.data_dir = dir;
    cfg.default_domain = "";
    cfg.password_schemes = "PLAIN CRAM-MD5";
    cfg.allow_plaintext = PLAINTEXT_ALWAYS;
    char *err = NULL;
    svc = auth_service_open(&cfg, &err);
    if (!svc || auth_domain_add(svc, "example.test", &err) != 0 ||
        auth_user_add(svc, "test@example.test", "testpass", 0, &err) != 0) {
        fprintf(stderr, "fuzz_sasl init: %s\n", err ? err : "?");
        abort();
    }
    struct auth_scram_keys k = {.iter = 2, .salt_len = 4, .salt = "salt"};
    if (!auth_scram_derive("testpass", 32, &k))
        abort();
    char *s = util_base64_encode_str(k.salt, k.salt_len),
         *st = util_base64_encode_str(k.stored_key, 32),
         *sv = util_base64_encode_str(k.server_key, 32);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO credentials(address, scheme, value) VALUES ('test@example.test', "
             "'SCRAM-SHA-256', '{SCRAM-SHA-256}2,%s,%s,%s')",
             s, st, sv);
    free(s);
    free(st);
    free(sv);
    /* the directory is behind the backend interface: write tern.db beside it */
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/tern.db", dir);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        abort();
    sqlite3_close(db);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const mechs[] = {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"};
    if (!svc)
        fuzz_init();
    if (size < 2)
        return 0;
    const struct auth_peer peer = {"smtp", "127.0.0.1", false, true};
    struct auth_sasl *s = auth_sasl_start(svc, mechs[data[0] & 3], &peer, "mail.example.test");
    if (!s)
        abort();
    bool encode = data[1] & 1;
    bool initial = data[0] & 4;
    data += 2;
    size -= 2;
    char *ch = NULL;
    enum auth_sasl_status st = AUTH_SASL_CONTINUE;
    if (!initial) {
        st = auth_sasl_step(s, NULL, &ch);
        free(ch);
    }
    for (int steps = 0; st == AUTH_SASL_CONTINUE && steps < 8; steps++) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t len = nl ? (size_t)(nl - data) : size;
        char *resp;
        if (encode) {
            resp = util_base64_encode_str(data, len);
        } else {
            resp = malloc(len + 1);
            memcpy(resp, data, len);
            resp[len] = '\0';
        }
        ch = NULL;
        st = auth_sasl_step(s, resp, &ch);
        free(ch);
        free(resp);
        if (!nl)
            break;
        data = nl + 1;
        size -= len + 1;
    }
    (void)auth_sasl_user(s);
    (void)auth_sasl_attempted_login(s);
    auth_sasl_free(s);
    return 0;
}
