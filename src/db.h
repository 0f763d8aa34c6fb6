/* PostgreSQL: one connection, the migrations, and the batch write of the pipeline. */
#ifndef EVENTSINK_DB_H
#define EVENTSINK_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "record.h"

struct db;
struct pg_conn; /* libpq's PGconn: only the db* files call libpq */

/* Connects (libpq keywords/URI in dsn). Returns NULL and sets *err on failure. */
/* Every connection to PostgreSQL is made here, with one set of options: a connect
 * timeout, TCP keepalives and tcp_user_timeout (a server that stops answering is given up
 * within about 30 s), statement_timeout (statement_timeout_ms), lock_timeout and
 * idle_in_transaction_session_timeout, UTC. What the operator's DSN sets wins. NULL (and
 * *err when err is not NULL) when it cannot connect. */
#define DB_STATEMENT_TIMEOUT_MS 60000
#define DB_LOCK_TIMEOUT_MS 30000
#define DB_IDLE_IN_TX_TIMEOUT_MS 120000
struct pg_conn *db_open(const char *dsn, const char *application_name, int statement_timeout_ms,
                        char **err);
/* Asks the server to cancel what conn runs now (from any thread). */
bool db_cancel(struct pg_conn *conn);

struct db *db_connect(const char *dsn, const char *application_name, char **err);
/* Cancels the statement db's writer is running (from another thread). */
void db_cancel_write(struct db *db);
void db_close(struct db *db);
bool db_alive(struct db *db);

/* Runs a trivial query: true when the server answers. */
bool db_ping(struct db *db);
struct pg_conn *db_conn(struct db *db);

/* Loads the replay signing keys (replay_keys) into replay_auth's ring. */
bool db_load_replay_keys(struct db *db, char **err);
/* 1 when the journal or the DLQ holds this record at its position (same key and Kafka
 * timestamp), 0 when not, -1 when that cannot be told (no timestamp, PostgreSQL down). */
int db_position_holds(struct db *db, const struct record *r);

/* Applies the migrations in sql/ not yet recorded in schema_migrations, each in its own
 * transaction, under an advisory lock so that two instances never race. */
bool db_migrate(struct db *db, int *applied, char **err);

/* One record of a batch, as decided by the policies. */
struct batch_item {
    const struct record *rec;
    struct decision d;
    bool is_object;
    bool copied;       /* written by COPY in this batch (set by db_write_batch) */
    bool maybe_stored; /* below the sink's position: looked up before it is journaled */
};

struct write_stats {
    size_t journal_new;       /* rows inserted into the journal */
    size_t journal_dup;       /* records already in the journal (redelivered) */
    size_t dlq_new;           /* rows inserted into the DLQ */
    size_t dlq_retried;       /* retried DLQ entries that failed again */
    size_t db_rejects;        /* rows PostgreSQL refused, moved to the DLQ */
    size_t duplicate_replays; /* second copies of a job's replay, kept in the DLQ */
    size_t offsets_reused;    /* records at a Kafka position taken by another record */
};

/* A journal row inserted, reported after the transaction committed. */
struct persisted_row {
    int64_t id; /* 0 for rows written by COPY (their ids are not read back) */
    const char *tenant, *event_type, *topic;
    const char *source; /* replay_source, NULL for an original */
    int replay_count;
    int64_t from_event, from_dlq;
    int64_t unlinked;  /* the parent a replay claimed that does not exist or belongs to
                          another tenant (not linked), else 0 */
    bool reused;       /* its Kafka position held another record: a new generation */
    int32_t partition; /* the Kafka position (of a reused row) */
    int64_t offset;
};
/* A DLQ row inserted or counted, reported after the transaction committed. */
struct dlq_row {
    int64_t id;
    const char *reason;
    bool retry;        /* a retried entry that failed again: one more attempt */
    bool reused;       /* its Kafka position held another record: a new generation */
    const char *topic; /* of a new row */
    int32_t partition; /* the Kafka position (of a reused row) */
    int64_t offset;
    const char *tenant; /* as decided, or NULL */
    const char *detail; /* the error column: why, in words, or NULL */
};
typedef void (*db_persisted_fn)(void *opaque, const struct persisted_row *row);
typedef void (*db_dlq_fn)(void *opaque, const struct dlq_row *row);

enum db_result {
    DB_OK,
    DB_RETRY,    /* connection lost or transient error: nothing was written, try again later */
    DB_CONFLICT, /* a deadlock or lock timeout with another transaction: nothing was written,
                    write it again now */
};

/* Writes a batch in one transaction: journal rows and DLQ rows together. A row that
 * PostgreSQL rejects (constraint, data error) goes to the DLQ as db_reject and the rest
 * are written. items[].d may be changed (to_dlq, reason) for rejected rows. */
enum db_result db_write_batch(struct db *db, struct batch_item *items, size_t n, int policy_version,
                              struct write_stats *stats, db_persisted_fn on_persisted,
                              db_dlq_fn on_dlq, void *opaque, char **err);

#endif
