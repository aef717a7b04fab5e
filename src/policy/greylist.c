/*
 * greylist.c - greylisting triplets and the client pass list in SQLite (greylist.h).
 *
 * Tables: triplet(network, sender, rcpt, first_seen, last_seen, is_passed) and
 * client(network, passes, last_seen). Old rows (last seen more than max_age ago, or
 * never passed and past the retry window) are pruned every GREYLIST_PRUNE_EVERY checks.
 */
#include "policy/greylist.h"

#include "core/config.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GREYLIST_PRUNE_EVERY 1000
#define GREYLIST_MAX_ADDR    320

struct greylist {
    struct greylist_limits limits;
    pthread_mutex_t lock;
    sqlite3 *db;
    unsigned checks;
};

void greylist_limits_from_config(const struct config *cfg, struct greylist_limits *l_r)
{
    l_r->delay = cfg->greylist_delay;
    l_r->retry_window = cfg->greylist_retry_window;
    l_r->max_age = cfg->greylist_max_age;
    l_r->auto_pass = cfg->greylist_auto_pass;
}

static const char greylist_schema[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS triplet (network TEXT NOT NULL, sender TEXT NOT NULL,"
    " rcpt TEXT NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
    " is_passed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (network, sender, rcpt)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS client (network TEXT PRIMARY KEY, passes INTEGER NOT NULL,"
    " last_seen INTEGER NOT NULL) WITHOUT ROWID;";

struct greylist *greylist_open(const char *path, const struct greylist_limits *limits,
                               char **error_r)
{
    struct greylist *g = calloc(1, sizeof *g);
    if (!g) {
        *error_r = strdup("out of memory");
        return NULL;
    }
    g->limits = *limits;
    pthread_mutex_init(&g->lock, NULL);
    char *err = NULL;
    int rc = sqlite3_open_v2(path, &g->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(g->db, 5000);
    /* Every mail worker opens the file at start, at the same moment: switching it to WAL
     * or creating the tables can meet another's lock with SQLITE_BUSY at once (SQLite
     * skips the busy handler where waiting could deadlock), so the schema is retried,
     * 5 s at most (start-up only). */
    for (int tries = 0; rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED; tries++) {
        sqlite3_free(err);
        err = NULL;
        rc = sqlite3_exec(g->db, greylist_schema, NULL, NULL, &err);
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || tries >= 50)
            break;
        sqlite3_sleep(100);
    }
    if (rc != SQLITE_OK) {
        size_t n = strlen(path) + 128;
        *error_r = malloc(n);
        if (*error_r)
            snprintf(*error_r, n, "%s: %s", path,
                     err ? err : g->db ? sqlite3_errmsg(g->db) : "cannot open");
        sqlite3_free(err);
        greylist_close(g);
        return NULL;
    }
    return g;
}

void greylist_close(struct greylist *g)
{
    if (!g)
        return;
    if (g->db)
        sqlite3_close(g->db);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

bool greylist_network(const char *ip, char *out, size_t size)
{
    struct in_addr a4;
    struct in6_addr a6;
    char text[INET6_ADDRSTRLEN];
    int n;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        a4.s_addr &= htonl(0xffffff00u);
        inet_ntop(AF_INET, &a4, text, sizeof text);
        n = snprintf(out, size, "%s/24", text);
    } else if (inet_pton(AF_INET6, ip, &a6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            memcpy(&a4, &a6.s6_addr[12], 4);
            a4.s_addr &= htonl(0xffffff00u);
            inet_ntop(AF_INET, &a4, text, sizeof text);
            n = snprintf(out, size, "%s/24", text);
        } else {
            memset(&a6.s6_addr[8], 0, 8);
            inet_ntop(AF_INET6, &a6, text, sizeof text);
            n = snprintf(out, size, "%s/64", text);
        }
    } else {
        return false;
    }
    return n > 0 && (size_t)n < size;
}

static void lower_copy(const char *in, char *out, size_t size)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

/* Run one statement with text and integer parameters ("t" / "i" per parameter). For a
 * SELECT, the first row's integer columns go to cols_r. 1 row, 0 none, -1 error. */
static int greylist_sql(struct greylist *g, const char *sql, const char *types, const void **args,
                        int64_t *cols_r, int n_cols)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(g->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't')
            sqlite3_bind_text(st, i + 1, args[i], -1, SQLITE_STATIC);
        else
            sqlite3_bind_int64(st, i + 1, *(const int64_t *)args[i]);
    }
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
    for (int i = 0; ret == 1 && i < n_cols; i++)
        cols_r[i] = sqlite3_column_int64(st, i);
    sqlite3_finalize(st);
    return ret;
}

static void greylist_prune(struct greylist *g, int64_t now)
{
    int64_t old = now - (int64_t)g->limits.max_age;
    int64_t stale = now - (int64_t)g->limits.retry_window - (int64_t)g->limits.delay;
    const void *a1[] = {&old, &stale};
    (void)greylist_sql(g,
                       "DELETE FROM triplet WHERE last_seen < ?1 OR (is_passed = 0 AND "
                       "first_seen < ?2)",
                       "ii", a1, NULL, 0);
    (void)greylist_sql(g, "DELETE FROM client WHERE last_seen < ?1", "i", a1, NULL, 0);
}

void greylist_check(struct greylist *g, const char *ip, const char *sender, const char *rcpt,
                    time_t now_t, struct greylist_answer *a_r)
{
    memset(a_r, 0, sizeof *a_r);
    a_r->verdict = GREYLIST_ERROR;
    char net[64], from[GREYLIST_MAX_ADDR + 1], to[GREYLIST_MAX_ADDR + 1];
    if (!greylist_network(ip, net, sizeof net)) {
        a_r->verdict = GREYLIST_PASS; /* not an address: nothing to key on */
        return;
    }
    lower_copy(sender, from, sizeof from);
    lower_copy(rcpt, to, sizeof to);
    int64_t now = (int64_t)now_t;
    const struct greylist_limits *l = &g->limits;
    pthread_mutex_lock(&g->lock);
    if (++g->checks % GREYLIST_PRUNE_EVERY == 0)
        greylist_prune(g, now);
    if (sqlite3_exec(g->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    /* the pass list */
    int64_t c[3];
    const void *a_net[] = {net};
    int r = greylist_sql(g, "SELECT passes, last_seen FROM client WHERE network = ?1", "t",
                         a_net, c, 2);
    if (r < 0)
        goto rollback;
    if (r == 1 && l->auto_pass && c[0] >= l->auto_pass && now - c[1] < (int64_t)l->max_age) {
        const void *a[] = {&now, net};
        if (greylist_sql(g, "UPDATE client SET last_seen = ?1 WHERE network = ?2", "it", a,
                         NULL, 0) < 0)
            goto rollback;
        a_r->verdict = GREYLIST_PASS;
        a_r->is_pass_listed = true;
        goto commit;
    }
    const void *a_key[] = {net, from, to};
    r = greylist_sql(g,
                     "SELECT first_seen, last_seen, is_passed FROM triplet WHERE network = ?1 "
                     "AND sender = ?2 AND rcpt = ?3",
                     "ttt", a_key, c, 3);
    if (r < 0)
        goto rollback;
    bool is_known_pass = r == 1 && c[2] && now - c[1] < (int64_t)l->max_age;
    bool is_due = r == 1 && !c[2] && now - c[0] >= (int64_t)l->delay &&
                  now - c[0] <= (int64_t)l->delay + (int64_t)l->retry_window;
    if (is_known_pass || is_due) {
        const void *a[] = {&now, net, from, to};
        if (greylist_sql(g,
                         "UPDATE triplet SET last_seen = ?1, is_passed = 1 WHERE network = ?2 "
                         "AND sender = ?3 AND rcpt = ?4",
                         "ittt", a, NULL, 0) < 0)
            goto rollback;
        if (is_due) {
            /* a retry that passed: one more pass for the client network */
            const void *ac[] = {net, &now};
            if (greylist_sql(g,
                             "INSERT INTO client (network, passes, last_seen) VALUES (?1, 1, "
                             "?2) ON CONFLICT (network) DO UPDATE SET passes = passes + 1, "
                             "last_seen = ?2",
                             "ti", ac, NULL, 0) < 0)
                goto rollback;
        }
        a_r->verdict = GREYLIST_PASS;
        goto commit;
    }
    if (r == 1 && !c[2] && now - c[0] < (int64_t)l->delay) {
        /* retried too early: the clock keeps running from the first attempt */
        a_r->retry_in = (unsigned)((int64_t)l->delay - (now - c[0]));
        a_r->verdict = GREYLIST_DEFER;
        goto commit;
    }
    /* new, or the retry window (or max_age) passed: start again */
    const void *a[] = {net, from, to, &now};
    if (greylist_sql(g,
                     "INSERT OR REPLACE INTO triplet (network, sender, rcpt, first_seen, "
                     "last_seen, is_passed) VALUES (?1, ?2, ?3, ?4, ?4, 0)",
                     "ttti", a, NULL, 0) < 0)
        goto rollback;
    a_r->retry_in = l->delay;
    a_r->verdict = GREYLIST_DEFER;
commit:
    if (sqlite3_exec(g->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        goto out;
rollback:
    sqlite3_exec(g->db, "ROLLBACK", NULL, NULL, NULL);
    log_error("smtpd", "greylist database error: %s", sqlite3_errmsg(g->db));
    a_r->verdict = GREYLIST_ERROR;
out:
    pthread_mutex_unlock(&g->lock);
}
