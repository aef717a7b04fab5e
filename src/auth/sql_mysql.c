/*
 * sql_mysql.c - the MariaDB/MySQL driver of the SQL client, on libmariadb (MariaDB
 * Connector/C): server-side prepared statements with every parameter bound as a string,
 * prepared once per connection and slot; connect/read/write timeouts; TLS.
 *
 * Results are read whole (mysql_stmt_store_result) into per-column buffers that start
 * small and grow to the column's length with mysql_stmt_fetch_column, capped at
 * SQL_MAX_VALUE_LEN. Errors from the client library (2000-2999, 5000+) and the server's
 * "connection killed/shutdown" codes mean the connection is gone; other server errors
 * are the statement's.
 */
#include "auth/sql_driver.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MYSQL_INITIAL_COLUMN 256 /* bytes bound per column before growing */

struct my_handle {
    MYSQL *m;
    MYSQL_STMT *stmts[SQL_MAX_SLOTS];
    const char *stmt_sql[SQL_MAX_SLOTS]; /* the text each slot was prepared from */
};

static pthread_once_t library_once = PTHREAD_ONCE_INIT;

/* mysql_library_init is not thread-safe: run it once before any thread connects. */
static void library_init(void)
{
    mysql_library_init(0, NULL, NULL);
}

static void copy_error(char *err, size_t size, const char *msg)
{
    snprintf(err, size, "%s", msg && *msg ? msg : "unknown MySQL error");
}

static void *my_connect(const struct sql_settings *s, char *err, size_t err_size)
{
    pthread_once(&library_once, library_init);
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        copy_error(err, err_size, "out of memory");
        return NULL;
    }
    unsigned int connect_timeout = s->connect_timeout ? s->connect_timeout : 5;
    unsigned int io_timeout = s->query_timeout ? s->query_timeout : 10;
    mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_optionsv(m, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_optionsv(m, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (s->tls != SQL_TLS_NO) {
        my_bool yes = 1, verify = s->tls == SQL_TLS_VERIFY;
        mysql_optionsv(m, MYSQL_OPT_SSL_ENFORCE, &yes);
        mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
        if (s->tls_ca[0])
            mysql_optionsv(m, MYSQL_OPT_SSL_CA, s->tls_ca);
        if (s->tls_cert[0])
            mysql_optionsv(m, MYSQL_OPT_SSL_CERT, s->tls_cert);
        if (s->tls_key[0])
            mysql_optionsv(m, MYSQL_OPT_SSL_KEY, s->tls_key);
    }
    const char *host = s->socket[0] ? "localhost" : s->host[0] ? s->host : NULL;
    if (!mysql_real_connect(m, host, s->user[0] ? s->user : NULL,
                            s->password[0] ? s->password : NULL, s->dbname, s->port,
                            s->socket[0] ? s->socket : NULL, CLIENT_FOUND_ROWS)) {
        copy_error(err, err_size, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    struct my_handle *h = calloc(1, sizeof *h);
    if (!h) {
        mysql_close(m);
        copy_error(err, err_size, "out of memory");
        return NULL;
    }
    h->m = m;
    return h;
}

static void my_disconnect(void *handle)
{
    struct my_handle *h = handle;
    for (unsigned i = 0; i < SQL_MAX_SLOTS; i++)
        if (h->stmts[i])
            mysql_stmt_close(h->stmts[i]);
    mysql_close(h->m);
    free(h);
}

/* Does this error number mean the connection is gone? */
static bool is_connection_error(unsigned int no)
{
    return (no >= 2000 && no < 3000) || no >= 5000 || no == ER_CONNECTION_KILLED ||
           no == ER_SERVER_SHUTDOWN || no == ER_NET_READ_ERROR ||
           no == ER_NET_READ_INTERRUPTED || no == ER_NET_ERROR_ON_WRITE ||
           no == ER_NET_WRITE_INTERRUPTED;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Classify a failure of stmt (or of the connection when stmt is NULL). */
static enum sql_rc stmt_failure(struct my_handle *h, MYSQL_STMT *stmt, const struct sql_settings *s,
                                const struct timespec *t0, char *err, size_t err_size)
{
    unsigned int no = stmt ? mysql_stmt_errno(stmt) : mysql_errno(h->m);
    copy_error(err, err_size, stmt ? mysql_stmt_error(stmt) : mysql_error(h->m));
    if (!is_connection_error(no))
        return SQL_RC_QUERY;
    unsigned timeout = s->query_timeout ? s->query_timeout : 10;
    return seconds_since(t0) >= (double)timeout ? SQL_RC_TIMEOUT : SQL_RC_CONN;
}

/* The prepared statement for st on this connection (cached by slot). */
static MYSQL_STMT *stmt_get(struct my_handle *h, const struct sql_stmt *st, bool *is_cached_r)
{
    *is_cached_r = st->slot > 0 && st->slot < SQL_MAX_SLOTS;
    if (*is_cached_r && h->stmts[st->slot] && h->stmt_sql[st->slot] == st->sql)
        return h->stmts[st->slot];
    if (*is_cached_r && h->stmts[st->slot]) {
        mysql_stmt_close(h->stmts[st->slot]);
        h->stmts[st->slot] = NULL;
    }
    MYSQL_STMT *stmt = mysql_stmt_init(h->m);
    if (!stmt)
        return NULL;
    if (mysql_stmt_prepare(stmt, st->sql, strlen(st->sql)) != 0)
        return stmt; /* the caller reads the error, then closes it */
    if (*is_cached_r) {
        h->stmts[st->slot] = stmt;
        h->stmt_sql[st->slot] = st->sql;
    }
    return stmt;
}

static void stmt_forget(struct my_handle *h, const struct sql_stmt *st, MYSQL_STMT *stmt,
                        bool is_cached)
{
    if (is_cached && h->stmts[st->slot] == stmt) {
        h->stmts[st->slot] = NULL;
        h->stmt_sql[st->slot] = NULL;
    }
    mysql_stmt_close(stmt);
}

struct my_columns {
    size_t n;
    MYSQL_BIND bind[SQL_MAX_COLUMNS];
    char *buf[SQL_MAX_COLUMNS];
    size_t cap[SQL_MAX_COLUMNS]; /* bytes allocated; bound as cap - 1 (room for a NUL) */
    unsigned long length[SQL_MAX_COLUMNS];
    my_bool is_null[SQL_MAX_COLUMNS];
    my_bool error[SQL_MAX_COLUMNS];
    const char *names[SQL_MAX_COLUMNS];
};

static void columns_free(struct my_columns *cols)
{
    for (size_t i = 0; i < cols->n; i++)
        free(cols->buf[i]);
}

/* Column i of the current row was longer than its buffer: grow it and fetch it again.
 * The grown buffer is bound for the following rows too (*must_rebind_r). */
static enum sql_rc column_refetch(struct my_handle *h, MYSQL_STMT *stmt, struct my_columns *cols,
                                  size_t i, const struct sql_settings *s,
                                  const struct timespec *t0, bool *must_rebind_r, char *err,
                                  size_t err_size)
{
    if (cols->length[i] > SQL_MAX_VALUE_LEN) {
        copy_error(err, err_size, "a column value is too long");
        return SQL_RC_QUERY;
    }
    char *grown = realloc(cols->buf[i], cols->length[i] + 1);
    if (!grown) {
        copy_error(err, err_size, "out of memory");
        return SQL_RC_QUERY;
    }
    cols->buf[i] = grown;
    cols->cap[i] = cols->length[i] + 1;
    cols->bind[i].buffer = grown;
    cols->bind[i].buffer_length = cols->cap[i] - 1;
    *must_rebind_r = true;
    if (mysql_stmt_fetch_column(stmt, &cols->bind[i], (unsigned)i, 0) != 0)
        return stmt_failure(h, stmt, s, t0, err, err_size);
    return SQL_RC_OK;
}

/* Fetch every row and hand it to cb. */
static enum sql_rc read_rows(struct my_handle *h, MYSQL_STMT *stmt, MYSQL_RES *meta,
                             const struct sql_settings *s, const struct timespec *t0,
                             sql_row_fn *cb, void *arg, bool *has_rows_r, char *err,
                             size_t err_size)
{
    struct my_columns cols = {.n = mysql_num_fields(meta)};
    if (cols.n > SQL_MAX_COLUMNS) {
        copy_error(err, err_size, "too many columns in the result");
        return SQL_RC_QUERY;
    }
    if (mysql_stmt_store_result(stmt) != 0)
        return stmt_failure(h, stmt, s, t0, err, err_size);
    MYSQL_FIELD *fields = mysql_fetch_fields(meta);
    for (size_t i = 0; i < cols.n; i++) {
        cols.names[i] = fields[i].name;
        cols.cap[i] = MYSQL_INITIAL_COLUMN;
        cols.buf[i] = malloc(cols.cap[i]);
        if (!cols.buf[i]) {
            cols.n = i;
            columns_free(&cols);
            copy_error(err, err_size, "out of memory");
            mysql_stmt_free_result(stmt);
            return SQL_RC_QUERY;
        }
        cols.bind[i] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_STRING,
                                    .buffer = cols.buf[i],
                                    .buffer_length = cols.cap[i] - 1,
                                    .length = &cols.length[i],
                                    .is_null = &cols.is_null[i],
                                    .error = &cols.error[i]};
    }
    enum sql_rc rc = SQL_RC_OK;
    bool must_rebind = cols.n > 0;
    const char *values[SQL_MAX_COLUMNS];
    for (;;) {
        if (must_rebind && mysql_stmt_bind_result(stmt, cols.bind) != 0) {
            rc = stmt_failure(h, stmt, s, t0, err, err_size);
            break;
        }
        must_rebind = false;
        int f = mysql_stmt_fetch(stmt);
        if (f == MYSQL_NO_DATA)
            break;
        if (f == 1) {
            rc = stmt_failure(h, stmt, s, t0, err, err_size);
            break;
        }
        for (size_t i = 0; i < cols.n && rc == SQL_RC_OK; i++) {
            if (cols.is_null[i]) {
                values[i] = NULL;
                continue;
            }
            if (cols.length[i] > cols.bind[i].buffer_length)
                rc = column_refetch(h, stmt, &cols, i, s, t0, &must_rebind, err, err_size);
            if (rc == SQL_RC_OK) {
                cols.buf[i][cols.length[i]] = '\0';
                values[i] = cols.buf[i];
            }
        }
        if (rc != SQL_RC_OK)
            break;
        struct sql_row row = {.n = cols.n, .names = cols.names, .values = values};
        *has_rows_r = true;
        if (cb && !cb(arg, &row))
            break;
    }
    mysql_stmt_free_result(stmt);
    columns_free(&cols);
    return rc;
}

/* A statement without parameters or rows (BEGIN, COMMIT, ROLLBACK: not every server
 * takes those as prepared statements) over the text protocol. */
static enum sql_rc text_query(struct my_handle *h, const struct sql_settings *s,
                              const struct sql_stmt *st, const struct timespec *t0,
                              uint64_t *affected_r, char *err, size_t err_size)
{
    if (mysql_real_query(h->m, st->sql, strlen(st->sql)) != 0)
        return stmt_failure(h, NULL, s, t0, err, err_size);
    if (mysql_field_count(h->m) > 0) {
        MYSQL_RES *res = mysql_store_result(h->m);
        if (!res)
            return stmt_failure(h, NULL, s, t0, err, err_size);
        mysql_free_result(res);
    }
    my_ulonglong n = mysql_affected_rows(h->m);
    *affected_r = n == (my_ulonglong)-1 ? 0 : (uint64_t)n;
    return SQL_RC_OK;
}

static enum sql_rc my_query(void *handle, const struct sql_settings *s, const struct sql_stmt *st,
                            const char *const *params, sql_row_fn *cb, void *arg,
                            uint64_t *affected_r, bool *has_rows_r, char *err, size_t err_size)
{
    struct my_handle *h = handle;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *affected_r = 0;
    if (st->slot == 0 && st->n_params == 0)
        return text_query(h, s, st, &t0, affected_r, err, err_size);
    bool is_cached = false;
    MYSQL_STMT *stmt = stmt_get(h, st, &is_cached);
    if (!stmt)
        return stmt_failure(h, NULL, s, &t0, err, err_size);
    if (mysql_stmt_errno(stmt) != 0) {
        enum sql_rc rc = stmt_failure(h, stmt, s, &t0, err, err_size);
        stmt_forget(h, st, stmt, is_cached);
        return rc;
    }
    if (mysql_stmt_param_count(stmt) != st->n_params || st->n_params > SQL_TEMPLATE_MAX_PARAMS) {
        copy_error(err, err_size, "parameter count mismatch");
        stmt_forget(h, st, stmt, is_cached);
        return SQL_RC_QUERY;
    }
    MYSQL_BIND pb[SQL_TEMPLATE_MAX_PARAMS];
    unsigned long plen[SQL_TEMPLATE_MAX_PARAMS];
    memset(pb, 0, sizeof pb);
    for (size_t i = 0; i < st->n_params; i++) {
        plen[i] = (unsigned long)strlen(params[i]);
        pb[i].buffer_type = MYSQL_TYPE_STRING;
        pb[i].buffer = (void *)params[i];
        pb[i].buffer_length = plen[i];
        pb[i].length = &plen[i];
    }
    enum sql_rc rc = SQL_RC_OK;
    if ((st->n_params > 0 && mysql_stmt_bind_param(stmt, pb) != 0) ||
        mysql_stmt_execute(stmt) != 0) {
        rc = stmt_failure(h, stmt, s, &t0, err, err_size);
    } else {
        MYSQL_RES *meta = mysql_stmt_result_metadata(stmt);
        if (meta) {
            rc = read_rows(h, stmt, meta, s, &t0, cb, arg, has_rows_r, err, err_size);
            mysql_free_result(meta);
        } else {
            my_ulonglong n = mysql_stmt_affected_rows(stmt);
            *affected_r = n == (my_ulonglong)-1 ? 0 : (uint64_t)n;
        }
    }
    if (rc != SQL_RC_OK || !is_cached)
        stmt_forget(h, st, stmt, is_cached);
    return rc;
}

const struct sql_driver sql_driver_mysql = {
    .name = "mysql",
    .dialect = SQL_DIALECT_MYSQL,
    .default_port = 3306,
    .connect = my_connect,
    .disconnect = my_disconnect,
    .query = my_query,
};
