/*
 * sql_pgsql.c - the PostgreSQL driver of the SQL client, on libpq: named prepared
 * statements (one per connection and slot), parameters sent as text (declared as text
 * where the template says so, so CONCAT('%n', ...) has a type), TLS via sslmode.
 *
 * libpq has no client-side query timeout, so statements are sent with PQsend* and the
 * answer is awaited with poll() on the connection's socket up to query_timeout. A
 * connection whose query timed out is dropped (its protocol state is unknown). No
 * server-side setting is sent at connect (no "options"): poolers such as PgBouncer
 * refuse unknown startup parameters.
 */
#include "auth/sql_driver.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG_TEXT_OID 25 /* pg_type.oid of text */

struct pg_handle {
    PGconn *c;
    const char *prepared_sql[SQL_MAX_SLOTS]; /* non-NULL: slot prepared as "tern<slot>" */
};

static void copy_error(char *err, size_t size, const char *msg)
{
    snprintf(err, size, "%s", msg && *msg ? msg : "unknown PostgreSQL error");
    /* libpq messages end in a newline (sometimes two lines): keep one log line */
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = p[1] ? ' ' : '\0';
}

static void *pg_connect(const struct sql_settings *s, char *err, size_t err_size)
{
    char port[16], connect_timeout[16];
    snprintf(port, sizeof port, "%u", s->port ? s->port : 5432);
    /* libpq treats connect_timeout below 2 as 2 */
    snprintf(connect_timeout, sizeof connect_timeout, "%u",
             s->connect_timeout ? s->connect_timeout : 5);
    const char *sslmode = s->tls == SQL_TLS_VERIFY ? "verify-full"
                          : s->tls == SQL_TLS_YES  ? "require"
                                                   : "disable";
    const char *keys[16], *values[16];
    size_t n = 0;
#define KV(k, v)                                                                                   \
    do {                                                                                           \
        keys[n] = (k);                                                                             \
        values[n] = (v);                                                                           \
        n++;                                                                                       \
    } while (0)
    const char *host = s->socket[0] ? s->socket : s->host[0] ? s->host : NULL;
    if (host)
        KV("host", host);
    KV("port", port);
    KV("dbname", s->dbname);
    if (s->user[0])
        KV("user", s->user);
    if (s->password[0])
        KV("password", s->password);
    KV("connect_timeout", connect_timeout);
    KV("sslmode", sslmode);
    if (s->tls_ca[0])
        KV("sslrootcert", s->tls_ca);
    if (s->tls_cert[0])
        KV("sslcert", s->tls_cert);
    if (s->tls_key[0])
        KV("sslkey", s->tls_key);
    KV("client_encoding", "UTF8");
    KV("application_name", "tern");
    keys[n] = NULL;
    values[n] = NULL;
#undef KV
    PGconn *c = PQconnectdbParams(keys, values, 0);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        copy_error(err, err_size, c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    struct pg_handle *h = calloc(1, sizeof *h);
    if (!h) {
        PQfinish(c);
        copy_error(err, err_size, "out of memory");
        return NULL;
    }
    h->c = c;
    return h;
}

static void pg_disconnect(void *handle)
{
    struct pg_handle *h = handle;
    PQfinish(h->c);
    free(h);
}

static long ms_until(const struct timespec *deadline)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(deadline->tv_sec - t.tv_sec) * 1000 + (deadline->tv_nsec - t.tv_nsec) / 1000000;
}

/* Wait for the next result of the statement in flight, up to the deadline. NULL when
 * there are no more results (*rc_r OK) or on a failure (*rc_r says which). */
static PGresult *result_wait(struct pg_handle *h, const struct timespec *deadline,
                             enum sql_rc *rc_r, char *err, size_t err_size)
{
    *rc_r = SQL_RC_OK;
    while (PQisBusy(h->c)) {
        long ms = ms_until(deadline);
        if (ms <= 0) {
            copy_error(err, err_size, "query timed out");
            *rc_r = SQL_RC_TIMEOUT;
            return NULL;
        }
        struct pollfd pfd = {.fd = PQsocket(h->c), .events = POLLIN};
        int r = poll(&pfd, 1, ms > 60000 ? 60000 : (int)ms);
        if (r < 0 && errno != EINTR) {
            copy_error(err, err_size, strerror(errno));
            *rc_r = SQL_RC_CONN;
            return NULL;
        }
        if (r > 0 && !PQconsumeInput(h->c)) {
            copy_error(err, err_size, PQerrorMessage(h->c));
            *rc_r = SQL_RC_CONN;
            return NULL;
        }
    }
    return PQgetResult(h->c);
}

/* Classify a failed result. */
static enum sql_rc result_failure(struct pg_handle *h, const PGresult *res, char *err,
                                  size_t err_size)
{
    copy_error(err, err_size, res ? PQresultErrorMessage(res) : PQerrorMessage(h->c));
    if (PQstatus(h->c) == CONNECTION_BAD)
        return SQL_RC_CONN;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    /* class 08: connection exception; 57P01-57P03: the server is shutting down */
    if (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0))
        return SQL_RC_CONN;
    return state ? SQL_RC_QUERY : SQL_RC_CONN;
}

/* Read every result of the statement in flight: rows to cb, the count of changed rows.
 * Always drains to the end so the connection is ready for the next statement. */
static enum sql_rc results_read(struct pg_handle *h, const struct timespec *deadline,
                                sql_row_fn *cb, void *arg, uint64_t *affected_r,
                                bool *has_rows_r, char *err, size_t err_size)
{
    enum sql_rc rc = SQL_RC_OK, wait_rc;
    PGresult *res;
    bool is_reading = true;
    while ((res = result_wait(h, deadline, &wait_rc, err, err_size)) != NULL) {
        ExecStatusType status = PQresultStatus(res);
        if (rc != SQL_RC_OK) {
            /* a failure was already recorded: drain */
        } else if (status == PGRES_TUPLES_OK) {
            int n_rows = PQntuples(res), n_cols = PQnfields(res);
            if (n_cols > SQL_MAX_COLUMNS) {
                copy_error(err, err_size, "too many columns in the result");
                rc = SQL_RC_QUERY;
            }
            const char *names[SQL_MAX_COLUMNS], *values[SQL_MAX_COLUMNS];
            for (int c = 0; c < n_cols && rc == SQL_RC_OK; c++)
                names[c] = PQfname(res, c);
            for (int r = 0; r < n_rows && is_reading && rc == SQL_RC_OK; r++) {
                for (int c = 0; c < n_cols; c++) {
                    values[c] = PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
                    if (PQgetlength(res, r, c) > SQL_MAX_VALUE_LEN) {
                        copy_error(err, err_size, "a column value is too long");
                        rc = SQL_RC_QUERY;
                    }
                }
                if (rc != SQL_RC_OK)
                    break;
                struct sql_row row = {.n = (size_t)n_cols, .names = names, .values = values};
                *has_rows_r = true;
                if (cb && !cb(arg, &row))
                    is_reading = false;
            }
        } else if (status == PGRES_COMMAND_OK) {
            const char *n = PQcmdTuples(res);
            *affected_r = n && *n ? strtoull(n, NULL, 10) : 0;
        } else {
            rc = result_failure(h, res, err, err_size);
        }
        PQclear(res);
    }
    return wait_rc != SQL_RC_OK ? wait_rc : rc;
}

static enum sql_rc pg_query(void *handle, const struct sql_settings *s, const struct sql_stmt *st,
                            const char *const *params, sql_row_fn *cb, void *arg,
                            uint64_t *affected_r, bool *has_rows_r, char *err, size_t err_size)
{
    struct pg_handle *h = handle;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += s->query_timeout ? s->query_timeout : 10;
    *affected_r = 0;
    if (st->n_params > SQL_TEMPLATE_MAX_PARAMS) {
        copy_error(err, err_size, "too many parameters");
        return SQL_RC_QUERY;
    }
    Oid types[SQL_TEMPLATE_MAX_PARAMS];
    for (size_t i = 0; i < st->n_params; i++)
        types[i] = st->is_typed_text && st->is_typed_text[i] ? PG_TEXT_OID : 0;
    bool is_cached = st->slot > 0 && st->slot < SQL_MAX_SLOTS;
    char name[32];
    snprintf(name, sizeof name, "tern%u", st->slot);
    if (is_cached && h->prepared_sql[st->slot] != st->sql) {
        if (h->prepared_sql[st->slot]) {
            /* another text in this slot (never in practice): drop the old one */
            char sql[64];
            snprintf(sql, sizeof sql, "DEALLOCATE %s", name);
            PQclear(PQexec(h->c, sql));
            h->prepared_sql[st->slot] = NULL;
        }
        if (!PQsendPrepare(h->c, name, st->sql, (int)st->n_params, types)) {
            copy_error(err, err_size, PQerrorMessage(h->c));
            return PQstatus(h->c) == CONNECTION_BAD ? SQL_RC_CONN : SQL_RC_QUERY;
        }
        bool has_rows = false;
        uint64_t ignored = 0;
        enum sql_rc rc =
            results_read(h, &deadline, NULL, NULL, &ignored, &has_rows, err, err_size);
        if (rc != SQL_RC_OK)
            return rc;
        h->prepared_sql[st->slot] = st->sql;
    }
    int sent = is_cached ? PQsendQueryPrepared(h->c, name, (int)st->n_params, params, NULL, NULL, 0)
                         : PQsendQueryParams(h->c, st->sql, (int)st->n_params, types, params,
                                             NULL, NULL, 0);
    if (!sent) {
        copy_error(err, err_size, PQerrorMessage(h->c));
        return PQstatus(h->c) == CONNECTION_BAD ? SQL_RC_CONN : SQL_RC_QUERY;
    }
    return results_read(h, &deadline, cb, arg, affected_r, has_rows_r, err, err_size);
}

const struct sql_driver sql_driver_pgsql = {
    .name = "postgresql",
    .dialect = SQL_DIALECT_PGSQL,
    .default_port = 5432,
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .query = pg_query,
};
