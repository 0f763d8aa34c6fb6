/* A query and its rows, for the code outside the db* files: libpq stays behind this
 * boundary (a connection is a struct pg_conn, libpq's own name for PGconn, which other
 * files only pass along; an answer is a struct db_rows). The accessors mirror libpq's:
 * db_rows_text gives "" for SQL NULL as PQgetvalue does, db_rows_null tells them apart. */
#ifndef EVENTSINK_DB_ROWS_H
#define EVENTSINK_DB_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pg_conn;
struct db_rows;

enum db_failure {
    DB_ERR_NONE,
    DB_ERR_BAD_VALUE,   /* SQLSTATE class 22: a value passed in was refused (a bad timestamp) */
    DB_ERR_UNAVAILABLE, /* the connection is gone, or the statement was cancelled (57014) */
    DB_ERR_FAILED,      /* anything else: a bug, or a constraint */
};

struct db_error {
    enum db_failure kind;
    char sqlstate[6];
    char message[512]; /* PostgreSQL's primary message, or libpq's */
};

/* Runs sql with text parameters. NULL when it failed, with *e filled (e may be NULL). */
struct db_rows *db_rows_exec(struct pg_conn *c, const char *sql, int n, const char *const *params,
                             struct db_error *e);
/* The same for background threads: a failure is logged as "who: message". */
struct db_rows *db_rows_logged(struct pg_conn *c, const char *who, const char *sql, int n,
                               const char *const *params);
/* Runs a statement for its effect only; false (logged as "who: message") when it failed. */
bool db_rows_run(struct pg_conn *c, const char *who, const char *sql, int n,
                 const char *const *params);

int db_rows_count(const struct db_rows *r);
const char *db_rows_text(const struct db_rows *r, int row, int col);
size_t db_rows_len(const struct db_rows *r, int row, int col);
bool db_rows_null(const struct db_rows *r, int row, int col);
/* The value as an integer (0 for SQL NULL). */
int64_t db_rows_int(const struct db_rows *r, int row, int col);
/* The value, or NULL for SQL NULL. */
const char *db_rows_text_or_null(const struct db_rows *r, int row, int col);
/* Rows an INSERT, UPDATE or DELETE touched. */
int64_t db_rows_affected(const struct db_rows *r);
/* Accepts NULL. */
void db_rows_free(struct db_rows *r);

/* True while the connection is up. */
bool db_conn_ok(struct pg_conn *c);
/* Closes it (PQfinish). Accepts NULL. */
void db_conn_close(struct pg_conn *c);

#endif
