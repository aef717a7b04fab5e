/*
 * sql_driver.h - what sql_pool.c asks of a database client library (internal to the SQL
 * client: sql_pool.c, sql_mysql.c, sql_pgsql.c).
 *
 * A driver connects one handle with the settings' timeouts and TLS, runs a statement on
 * it with text parameters (preparing it once per handle when st->slot is set), hands rows
 * to the callback, and says what kind of failure happened so the pool can decide between
 * "this query failed" and "this connection is gone".
 *
 * Thread rules: a handle is used by one thread at a time; connect may run concurrently.
 */
#ifndef TERN_AUTH_SQL_DRIVER_H
#define TERN_AUTH_SQL_DRIVER_H

#include "auth/sql.h"

#include <time.h>

enum sql_rc {
    SQL_RC_OK,
    SQL_RC_QUERY,   /* the server refused the statement; the connection is fine */
    SQL_RC_CONN,    /* the connection broke (server gone, restarted, protocol error) */
    SQL_RC_TIMEOUT, /* no answer within query_timeout; the connection is unusable */
};

struct sql_driver {
    const char *name; /* URL scheme for messages: "mysql", "postgresql" */
    enum sql_dialect dialect;
    unsigned default_port;
    /* A connected handle, or NULL with a reason in err. */
    void *(*connect)(const struct sql_settings *s, char *err, size_t err_size);
    void (*disconnect)(void *handle);
    /* Run st with params; rows go to cb (may be NULL). *has_rows_r is set once a row was
     * handed to cb (a broken query that already produced rows is not retried). */
    enum sql_rc (*query)(void *handle, const struct sql_settings *s, const struct sql_stmt *st,
                         const char *const *params, sql_row_fn *cb, void *arg,
                         uint64_t *affected_r, bool *has_rows_r, char *err, size_t err_size);
};

/* Test hooks (tests/unit/test_dir_sql.c): serve every driver kind with drv (NULL: the
 * real ones again), and read the pool's time from clock (NULL: the monotonic clock). */
void sql_driver_override(const struct sql_driver *drv);
void sql_clock_override(time_t (*clock)(void));

#ifdef TERN_HAVE_MYSQL
extern const struct sql_driver sql_driver_mysql;
#endif
#ifdef TERN_HAVE_PGSQL
extern const struct sql_driver sql_driver_pgsql;
#endif

#endif
