/*
 * sql.h - a small client for the SQL servers a directory can live in (MariaDB/MySQL via
 * libmariadb, PostgreSQL via libpq): a bounded pool of connections, prepared statements
 * with bound parameters only, connect and query timeouts, TLS, reconnection with back-off.
 *
 * The directory (auth/dir_sql.c) is the only user. Statements come from sql_template.h,
 * so every value reaches the server as a bound parameter, never as SQL text.
 *
 * Failure model. sql_query() returns 0 or -1; -1 always means "no answer now" and the
 * caller turns it into a temporary failure (451/454/NO [UNAVAILABLE]/-ERR [SYS/TEMP]),
 * never into "no such user" or "wrong password". When the server cannot be reached (or a
 * query times out) the pool marks the database down, logs ONE line for the outage, and
 * from then on fails lookups at once instead of waiting for a connect timeout each time;
 * one caller at a time probes again after a back-off (1 s doubling to 30 s). The first
 * connection that succeeds ends the outage with one more log line. A connection that
 * breaks under a query (the server restarted) is dropped with the other idle ones, and
 * the query is retried once on a fresh connection before anything counts as an outage.
 * SQL errors (a bad custom query, a missing table) are logged at most once a minute per
 * message.
 *
 * Thread rules: every function may block on the network for up to the configured
 * timeouts: call them from workpool threads (or the CLI), never from an event loop.
 * A pool is shared by all threads; a connection is used by one thread at a time.
 * Ownership: sql_pool_open copies the settings; sql_pool_close frees everything.
 */
#ifndef TERN_AUTH_SQL_H
#define TERN_AUTH_SQL_H

#include "auth/sql_template.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SQL_MAX_COLUMNS   32
#define SQL_MAX_VALUE_LEN 65536 /* bytes of one column value */
#define SQL_MAX_SLOTS     48    /* prepared-statement cache slots per connection */
#define SQL_MAX_POOL      64

enum sql_driver_kind { SQL_DRIVER_MYSQL, SQL_DRIVER_PGSQL };
enum sql_tls { SQL_TLS_NO, SQL_TLS_YES, SQL_TLS_VERIFY };

struct sql_settings {
    enum sql_driver_kind driver;
    const char *host;     /* "" or NULL: the library's default */
    unsigned port;        /* 0: the driver's default */
    const char *socket;   /* MySQL: socket file; PostgreSQL: socket directory; "" none */
    const char *dbname;
    const char *user;
    const char *password; /* NULL or "" for none */
    unsigned pool_size;   /* 1..SQL_MAX_POOL */
    unsigned connect_timeout;
    unsigned query_timeout;
    enum sql_tls tls;
    const char *tls_ca, *tls_cert, *tls_key; /* "" for none */
};

/* One statement: native SQL text (from a compiled template) and its parameter types. */
struct sql_stmt {
    const char *sql;
    size_t n_params;
    const bool *is_typed_text; /* [n_params]: PostgreSQL declares these as text */
    unsigned slot;             /* 1..SQL_MAX_SLOTS-1: cache it prepared per connection;
                                  0: prepare, run, discard (administration) */
};

/* A result row: values[i] is NULL for SQL NULL; names are the result's column labels. */
struct sql_row {
    size_t n;
    const char *const *names;
    const char *const *values;
};
/* Called once per row; return true to continue, false to stop reading rows. */
typedef bool sql_row_fn(void *arg, const struct sql_row *row);

struct sql_pool;
struct sql_conn;

/* Is this driver compiled in? */
bool sql_driver_available(enum sql_driver_kind kind);
/* The driver's placeholder syntax. */
enum sql_dialect sql_driver_dialect(enum sql_driver_kind kind);

/* A pool (no connection is made yet). NULL with *error_r if the driver is missing. */
struct sql_pool *sql_pool_open(const struct sql_settings *settings, char **error_r);
void sql_pool_close(struct sql_pool *pool);
/* "mysql://user@host:port/db" for messages (no password). */
const char *sql_pool_describe(const struct sql_pool *pool);

/* Run one statement on a pooled connection. cb may be NULL. *affected_r (if not NULL):
 * rows changed by INSERT/UPDATE/DELETE. 0 ok, -1 failed (*error_r if wanted). */
int sql_query(struct sql_pool *pool, const struct sql_stmt *st, const char *const *params,
              sql_row_fn *cb, void *arg, uint64_t *affected_r, char **error_r);

/* For a transaction: hold one connection for several statements. */
struct sql_conn *sql_conn_acquire(struct sql_pool *pool, char **error_r);
int sql_conn_query(struct sql_conn *c, const struct sql_stmt *st, const char *const *params,
                   sql_row_fn *cb, void *arg, uint64_t *affected_r, char **error_r);
/* Give it back; a connection whose last statement failed is closed, not reused. */
void sql_conn_release(struct sql_conn *c);

#endif
