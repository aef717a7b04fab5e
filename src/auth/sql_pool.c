/*
 * sql_pool.c - the bounded connection pool of the SQL client (see sql.h for the failure
 * model): acquire/release, connect on demand, retry once on a connection that broke,
 * outage detection with back-off and one log line per outage, rate-limited logging of
 * SQL errors.
 *
 * Locking: pool->lock guards the slots and the outage state; connecting, querying and
 * disconnecting happen with the lock released (they block on the network). A slot is
 * either free (no handle), idle (handle, not in use) or in use by one thread.
 */
#include "auth/auth_internal.h"
#include "auth/sql_driver.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SQL_BACKOFF_MIN   1  /* seconds before the first probe of a down database */
#define SQL_BACKOFF_MAX   30 /* seconds between probes at most */
#define SQL_ERROR_LOG_GAP 60 /* the same SQL error is logged once a minute */

struct sql_conn {
    struct sql_pool *pool;
    void *handle;   /* NULL: free slot */
    bool is_in_use;
    bool is_fresh;  /* connected for this use: a failure is not a stale connection */
    bool is_broken; /* the last statement broke it: close on release */
};

struct sql_pool {
    const struct sql_driver *drv;
    struct sql_settings set; /* strings owned (copies) */
    char *describe;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct sql_conn conns[SQL_MAX_POOL];
    unsigned size;

    /* outage state */
    bool is_down;
    bool is_probing;      /* one thread is trying to connect while down */
    time_t down_since;
    time_t retry_at;
    unsigned backoff;
    unsigned long n_failed; /* lookups refused during this outage */
    char last_error[256];

    /* rate limit for SQL (not connection) errors */
    char last_logged_query_error[256];
    time_t last_logged_query_at;
};

static const struct sql_driver *driver_override;
static time_t (*clock_override)(void);

void sql_driver_override(const struct sql_driver *drv)
{
    driver_override = drv;
}

void sql_clock_override(time_t (*clock)(void))
{
    clock_override = clock;
}

static const struct sql_driver *driver_for(enum sql_driver_kind kind)
{
    if (driver_override)
        return driver_override;
    switch (kind) {
    case SQL_DRIVER_MYSQL:
#ifdef TERN_HAVE_MYSQL
        return &sql_driver_mysql;
#else
        return NULL;
#endif
    case SQL_DRIVER_PGSQL:
#ifdef TERN_HAVE_PGSQL
        return &sql_driver_pgsql;
#else
        return NULL;
#endif
    }
    return NULL;
}

bool sql_driver_available(enum sql_driver_kind kind)
{
    return driver_for(kind) != NULL;
}

enum sql_dialect sql_driver_dialect(enum sql_driver_kind kind)
{
    return kind == SQL_DRIVER_MYSQL ? SQL_DIALECT_MYSQL : SQL_DIALECT_PGSQL;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static time_t now_monotonic(void)
{
    if (clock_override)
        return clock_override();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

struct sql_pool *sql_pool_open(const struct sql_settings *s, char **error_r)
{
    const struct sql_driver *drv = driver_for(s->driver);
    if (!drv) {
        auth_set_error(error_r, "this Tern was built without %s support (install %s and rebuild)",
                  s->driver == SQL_DRIVER_MYSQL ? "MariaDB/MySQL" : "PostgreSQL",
                  s->driver == SQL_DRIVER_MYSQL ? "libmariadb-dev" : "libpq-dev");
        return NULL;
    }
    struct sql_pool *p = calloc(1, sizeof *p);
    if (!p) {
        auth_set_error(error_r, "out of memory");
        return NULL;
    }
    p->drv = drv;
    p->set = *s;
    p->set.host = dup_or_empty(s->host);
    p->set.socket = dup_or_empty(s->socket);
    p->set.dbname = dup_or_empty(s->dbname);
    p->set.user = dup_or_empty(s->user);
    p->set.password = dup_or_empty(s->password);
    p->set.tls_ca = dup_or_empty(s->tls_ca);
    p->set.tls_cert = dup_or_empty(s->tls_cert);
    p->set.tls_key = dup_or_empty(s->tls_key);
    p->size = s->pool_size < 1 ? 1 : s->pool_size > SQL_MAX_POOL ? SQL_MAX_POOL : s->pool_size;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    for (unsigned i = 0; i < p->size; i++)
        p->conns[i].pool = p;
    char port[16] = "";
    if (p->set.port)
        snprintf(port, sizeof port, ":%u", p->set.port);
    const char *where = p->set.socket[0] ? p->set.socket : p->set.host[0] ? p->set.host : "localhost";
    if (asprintf(&p->describe, "%s://%s%s%s%s/%s", drv->name, p->set.user,
                 p->set.user[0] ? "@" : "", where, p->set.socket[0] ? "" : port,
                 p->set.dbname) < 0)
        p->describe = NULL;
    if (!p->set.host || !p->set.socket || !p->set.dbname || !p->set.user || !p->set.password ||
        !p->set.tls_ca || !p->set.tls_cert || !p->set.tls_key || !p->describe) {
        sql_pool_close(p);
        auth_set_error(error_r, "out of memory");
        return NULL;
    }
    return p;
}

void sql_pool_close(struct sql_pool *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->size; i++)
        if (p->conns[i].handle)
            p->drv->disconnect(p->conns[i].handle);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free((char *)p->set.host);
    free((char *)p->set.socket);
    free((char *)p->set.dbname);
    free((char *)p->set.user);
    if (p->set.password)
        memset((char *)p->set.password, 0, strlen(p->set.password));
    free((char *)p->set.password);
    free((char *)p->set.tls_ca);
    free((char *)p->set.tls_cert);
    free((char *)p->set.tls_key);
    free(p->describe);
    free(p);
}

const char *sql_pool_describe(const struct sql_pool *p)
{
    return p->describe;
}

/* ---- outage state (lock held) ----------------------------------------------------- */

/* The database did not answer: start an outage (one log line) or back off further. */
static void outage_note_failure(struct sql_pool *p, const char *why)
{
    time_t now = now_monotonic();
    snprintf(p->last_error, sizeof p->last_error, "%s", why);
    if (!p->is_down) {
        p->is_down = true;
        p->down_since = now;
        p->backoff = SQL_BACKOFF_MIN;
        p->n_failed = 0;
        log_error("auth", "directory: %s is unavailable: %s; lookups fail with temporary "
                          "errors until it is back",
                  p->describe, why);
    } else {
        p->backoff = p->backoff * 2 > SQL_BACKOFF_MAX ? SQL_BACKOFF_MAX : p->backoff * 2;
    }
    p->retry_at = now + p->backoff;
}

/* A connection succeeded: end the outage (one log line). */
static void outage_note_success(struct sql_pool *p)
{
    if (!p->is_down)
        return;
    log_info("auth", "directory: %s is available again after %lds (%lu lookups failed "
                     "meanwhile)",
             p->describe, (long)(now_monotonic() - p->down_since), p->n_failed);
    p->is_down = false;
}

/* ---- acquire / release ------------------------------------------------------------ */

static struct sql_conn *find_idle(struct sql_pool *p)
{
    for (unsigned i = 0; i < p->size; i++)
        if (p->conns[i].handle && !p->conns[i].is_in_use)
            return &p->conns[i];
    return NULL;
}

static struct sql_conn *find_free(struct sql_pool *p)
{
    for (unsigned i = 0; i < p->size; i++)
        if (!p->conns[i].handle && !p->conns[i].is_in_use)
            return &p->conns[i];
    return NULL;
}

/* Connect a reserved free slot (lock held on entry and exit; released while connecting). */
static struct sql_conn *connect_slot(struct sql_pool *p, struct sql_conn *c, char **error_r)
{
    bool is_probe = p->is_down;
    c->is_in_use = true;
    if (is_probe)
        p->is_probing = true;
    pthread_mutex_unlock(&p->lock);
    char err[256] = "";
    void *h = p->drv->connect(&p->set, err, sizeof err);
    pthread_mutex_lock(&p->lock);
    if (is_probe)
        p->is_probing = false;
    if (h) {
        c->handle = h;
        c->is_fresh = true;
        c->is_broken = false;
        outage_note_success(p);
        return c;
    }
    c->is_in_use = false;
    pthread_cond_signal(&p->cond);
    outage_note_failure(p, err[0] ? err : "cannot connect");
    auth_set_error(error_r, "%s: %s", p->describe, err[0] ? err : "cannot connect");
    return NULL;
}

struct sql_conn *sql_conn_acquire(struct sql_pool *p, char **error_r)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += p->set.query_timeout ? p->set.query_timeout : 10;
    pthread_mutex_lock(&p->lock);
    struct sql_conn *c = NULL;
    for (;;) {
        if ((c = find_idle(p)) != NULL) {
            c->is_in_use = true;
            c->is_fresh = false;
            c->is_broken = false;
            break;
        }
        bool may_connect = !p->is_down || (!p->is_probing && now_monotonic() >= p->retry_at);
        if (p->is_down && !may_connect) {
            p->n_failed++;
            auth_set_error(error_r, "%s is unavailable: %s", p->describe, p->last_error);
            break;
        }
        struct sql_conn *free_slot = find_free(p);
        if (free_slot) {
            c = connect_slot(p, free_slot, error_r);
            break;
        }
        /* every connection is busy: wait for one, bounded by the query timeout */
        if (pthread_cond_timedwait(&p->cond, &p->lock, &deadline) == ETIMEDOUT) {
            auth_set_error(error_r, "%s: all %u connections busy", p->describe, p->size);
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return c;
}

/* Close every idle connection: after one broke, the others are likely stale too (the
 * server restarted). Lock held; the handles are closed by the caller after unlocking. */
static size_t take_idle_handles(struct sql_pool *p, void **out)
{
    size_t n = 0;
    for (unsigned i = 0; i < p->size; i++) {
        struct sql_conn *c = &p->conns[i];
        if (c->handle && !c->is_in_use) {
            out[n++] = c->handle;
            c->handle = NULL;
        }
    }
    return n;
}

void sql_conn_release(struct sql_conn *c)
{
    struct sql_pool *p = c->pool;
    void *closing[SQL_MAX_POOL + 1];
    size_t n_closing = 0;
    pthread_mutex_lock(&p->lock);
    if (c->is_broken) {
        closing[n_closing++] = c->handle;
        c->handle = NULL;
        n_closing += take_idle_handles(p, closing + n_closing);
    }
    c->is_in_use = false;
    c->is_broken = false;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < n_closing; i++)
        if (closing[i])
            p->drv->disconnect(closing[i]);
}

/* Log a SQL error unless the same one was logged within the last minute. */
static void log_query_error(struct sql_pool *p, const char *err)
{
    time_t now = now_monotonic();
    pthread_mutex_lock(&p->lock);
    bool is_repeat = strncmp(p->last_logged_query_error, err,
                             sizeof p->last_logged_query_error - 1) == 0 &&
                     now - p->last_logged_query_at < SQL_ERROR_LOG_GAP;
    if (!is_repeat) {
        snprintf(p->last_logged_query_error, sizeof p->last_logged_query_error, "%s", err);
        p->last_logged_query_at = now;
    }
    pthread_mutex_unlock(&p->lock);
    if (!is_repeat)
        log_error("auth", "directory: %s: query failed: %s", p->describe, err);
}

/* ---- queries ---------------------------------------------------------------------- */

static enum sql_rc conn_run(struct sql_conn *c, const struct sql_stmt *st, const char *const *params,
                            sql_row_fn *cb, void *arg, uint64_t *affected_r, bool *has_rows_r,
                            char **error_r)
{
    struct sql_pool *p = c->pool;
    char err[512] = "";
    uint64_t affected = 0;
    enum sql_rc rc = p->drv->query(c->handle, &p->set, st, params, cb, arg, &affected,
                                   has_rows_r, err, sizeof err);
    if (affected_r)
        *affected_r = affected;
    if (rc == SQL_RC_OK)
        return rc;
    if (!err[0])
        snprintf(err, sizeof err, "%s", rc == SQL_RC_TIMEOUT ? "query timed out" : "failed");
    auth_set_error(error_r, "%s: %s", p->describe, err);
    if (rc == SQL_RC_QUERY) {
        log_query_error(p, err);
    } else {
        c->is_broken = true;
        /* A timeout, or a break on a connection made just now, is the database's state,
         * not a stale connection: that is an outage. */
        if (rc == SQL_RC_TIMEOUT || c->is_fresh) {
            pthread_mutex_lock(&p->lock);
            outage_note_failure(p, err);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return rc;
}

int sql_conn_query(struct sql_conn *c, const struct sql_stmt *st, const char *const *params,
                   sql_row_fn *cb, void *arg, uint64_t *affected_r, char **error_r)
{
    bool has_rows = false;
    return conn_run(c, st, params, cb, arg, affected_r, &has_rows, error_r) == SQL_RC_OK ? 0 : -1;
}

int sql_query(struct sql_pool *p, const struct sql_stmt *st, const char *const *params,
              sql_row_fn *cb, void *arg, uint64_t *affected_r, char **error_r)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        char *err = NULL;
        struct sql_conn *c = sql_conn_acquire(p, &err);
        if (!c) {
            if (error_r)
                *error_r = err;
            else
                free(err);
            return -1;
        }
        bool has_rows = false, was_fresh = c->is_fresh;
        enum sql_rc rc = conn_run(c, st, params, cb, arg, affected_r, &has_rows, &err);
        sql_conn_release(c);
        if (rc == SQL_RC_OK) {
            free(err);
            return 0;
        }
        /* Only a stale pooled connection that broke before any row is worth a retry. */
        if (rc != SQL_RC_CONN || was_fresh || has_rows || attempt == 1) {
            if (error_r)
                *error_r = err;
            else
                free(err);
            return -1;
        }
        free(err);
    }
    return -1;
}
