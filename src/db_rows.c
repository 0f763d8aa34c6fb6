#include "db_rows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"
#include "db_watchdog.h"

/* struct db_rows is a PGresult under another name: no allocation of our own per query */
static PGresult *res(const struct db_rows *r)
{
    return (PGresult *)r;
}

static void describe(PGconn *c, PGresult *r, struct db_error *e)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg && r) msg = PQresultErrorMessage(r);
    if (!msg || !*msg) msg = PQerrorMessage(c);
    if (!msg || !*msg) msg = "PostgreSQL did not answer";
    snprintf(e->sqlstate, sizeof e->sqlstate, "%s", state ? state : "");
    snprintf(e->message, sizeof e->message, "%s", msg);
    size_t n = strlen(e->message);
    while (n && (e->message[n - 1] == '\n' || e->message[n - 1] == ' '))
        e->message[--n] = 0;
    if (state && strncmp(state, "22", 2) == 0)
        e->kind = DB_ERR_BAD_VALUE;
    else if (PQstatus(c) != CONNECTION_OK || (state && strcmp(state, "57014") == 0))
        e->kind = DB_ERR_UNAVAILABLE;
    else
        e->kind = DB_ERR_FAILED;
}

struct db_rows *db_rows_exec(struct pg_conn *c, const char *sql, int n, const char *const *params,
                             struct db_error *e)
{
    db_watchdog_begin(c, 0);
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    db_watchdog_end();
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        if (e) *e = (struct db_error){.kind = DB_ERR_NONE};
        return (struct db_rows *)r;
    }
    if (e) describe(c, r, e);
    PQclear(r);
    return NULL;
}

struct db_rows *db_rows_logged(struct pg_conn *c, const char *who, const char *sql, int n,
                               const char *const *params)
{
    struct db_error e;
    struct db_rows *r = db_rows_exec(c, sql, n, params, &e);
    if (!r) log_warn("%s: %s", who, e.message);
    return r;
}

bool db_rows_run(struct pg_conn *c, const char *who, const char *sql, int n,
                 const char *const *params)
{
    struct db_rows *r = db_rows_logged(c, who, sql, n, params);
    db_rows_free(r);
    return r != NULL;
}

int db_rows_count(const struct db_rows *r)
{
    return r ? PQntuples(res(r)) : 0;
}

const char *db_rows_text(const struct db_rows *r, int row, int col)
{
    return PQgetvalue(res(r), row, col);
}

size_t db_rows_len(const struct db_rows *r, int row, int col)
{
    return (size_t)PQgetlength(res(r), row, col);
}

bool db_rows_null(const struct db_rows *r, int row, int col)
{
    return PQgetisnull(res(r), row, col) != 0;
}

int64_t db_rows_int(const struct db_rows *r, int row, int col)
{
    return db_rows_null(r, row, col) ? 0 : strtoll(PQgetvalue(res(r), row, col), NULL, 10);
}

const char *db_rows_text_or_null(const struct db_rows *r, int row, int col)
{
    return db_rows_null(r, row, col) ? NULL : PQgetvalue(res(r), row, col);
}

int64_t db_rows_affected(const struct db_rows *r)
{
    const char *n = PQcmdTuples(res(r));
    return n && *n ? strtoll(n, NULL, 10) : 0;
}

void db_rows_free(struct db_rows *r)
{
    if (r) PQclear(res(r));
}

bool db_conn_ok(struct pg_conn *c)
{
    return c && PQstatus(c) == CONNECTION_OK;
}

void db_conn_close(struct pg_conn *c)
{
    if (c) PQfinish(c);
}
