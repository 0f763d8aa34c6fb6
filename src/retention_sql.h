/* SQL of retention (CONTRACT 9.5): the months of the journal, the DLQ and the jobs wholly
 * past retention are dropped; what else is older than retention.dlq and retention.jobs goes,
 * a small batch a statement (each well under RETENTION_STATEMENT_TIMEOUT), so that no
 * statement holds many rows' locks, runs long, or keeps a shutdown waiting. */
#ifndef EVENTSINK_RETENTION_SQL_H
#define EVENTSINK_RETENTION_SQL_H

#include "db_sql.h"

#define RETENTION_BATCH "1000"
#define SQL_RETENTION_TIMEOUT "SET statement_timeout = '5s'"
#define SQL_RETENTION_TIMEOUT_RESET "RESET statement_timeout"

/* one instance applies retention at a time */
#define SQL_RETENTION_LOCK "SELECT pg_try_advisory_lock(" SQL_LOCK_CLASS_RETENTION ", 0)"
#define SQL_RETENTION_UNLOCK "SELECT pg_advisory_unlock(" SQL_LOCK_CLASS_RETENTION ", 0)"

/* ---- the DLQ and the jobs: whole month partitions, then what is left row by row ---- */

/* $1 retention in seconds -> the month partitions of `parent` wholly older than it */
#define MONTHS_BEFORE(parent)                                                                      \
    "SELECT name FROM eventsink_partition_bounds WHERE parent = '" parent "'"                      \
    " AND upper <= now() - make_interval(secs => $1::float8) ORDER BY upper"
#define SQL_RETENTION_DLQ_MONTHS MONTHS_BEFORE("dead_letter_queue")
#define SQL_RETENTION_JOBS_MONTHS MONTHS_BEFORE("replay_jobs")
/* $1 partition, $2 retention in seconds, $3 dry run -> its entries when all of them go
 * (dropped unless a dry run), else NULL (sql/012_dlq_jobs_partitions.sql) */
#define SQL_RETENTION_DLQ_MONTH_DROP                                                               \
    "SELECT eventsink_dlq_drop($1, make_interval(secs => $2::float8), $3::boolean)"
/* the same for a month of jobs -> jobs, items; no row when it stays */
#define SQL_RETENTION_JOBS_MONTH_DROP                                                              \
    "SELECT jobs, items FROM eventsink_jobs_drop($1, make_interval(secs => $2::float8),"           \
    " $3::boolean)"

/* $1 retention in seconds. A DLQ entry goes once it was resolved or discarded that long
 * ago (decided_at; pending and retrying ones stay). The consumer's check on assignment
 * needs none of them: sink_offsets names the newest stored record of each partition. */
#define DLQ_EXPIRED                                                                                \
    " FROM dead_letter_queue d WHERE d.status IN ('resolved', 'discarded')"                        \
    " AND d.decided_at < now() - make_interval(secs => $1::float8)"
#define SQL_RETENTION_DLQ_COUNT "SELECT count(*)" DLQ_EXPIRED
/* those left in a month that stays (one holding an entry still to keep) */
#define SQL_RETENTION_DLQ_DELETE                                                                   \
    "WITH x AS (DELETE FROM dead_letter_queue WHERE (id, created_at) IN (SELECT d.id,"             \
    " d.created_at" DLQ_EXPIRED " ORDER BY d.decided_at LIMIT " RETENTION_BATCH ") RETURNING 1)"   \
    " SELECT count(*) FROM x"

/* $1 retention in seconds. A job goes once it ended (done, failed, cancelled) that long
 * ago, its items first, a range of seq at a time. */
#define JOBS_EXPIRED                                                                               \
    " FROM replay_jobs j WHERE j.status IN ('done', 'failed', 'cancelled')"                        \
    " AND j.finished_at < now() - make_interval(secs => $1::float8)"
#define SQL_RETENTION_JOBS_COUNT                                                                   \
    "SELECT count(*), coalesce(sum((SELECT count(*) FROM replay_job_items i"                       \
    " WHERE i.job_id = j.id)), 0)" JOBS_EXPIRED
/* those left in a month that stays -> id, the highest seq of its items (0: none) */
#define SQL_RETENTION_JOBS_NEXT                                                                              \
    "SELECT j.id, coalesce((SELECT max(seq) FROM replay_job_items i WHERE i.job_id = j.id), 0)" JOBS_EXPIRED \
    " ORDER BY j.finished_at LIMIT 100"
/* $1 job, $2 after this seq */
#define SQL_RETENTION_ITEMS_DELETE                                                                 \
    "WITH x AS (DELETE FROM replay_job_items WHERE job_id = $1::bigint AND seq > $2::int"          \
    " AND seq <= $2::int + " RETENTION_BATCH " RETURNING 1) SELECT count(*) FROM x"
/* $1 job: its claims on one copy of each replayed event (SQL_JOURNAL_ROWS) */
#define SQL_RETENTION_COPIES_DELETE                                                                \
    "WITH x AS (DELETE FROM journal_replay_copies WHERE (tableoid, ctid) IN (SELECT tableoid,"     \
    " ctid FROM journal_replay_copies WHERE replay_job_id = $1::bigint LIMIT " RETENTION_BATCH ")" \
    " RETURNING 1) SELECT count(*) FROM x"
/* $1 job */
#define SQL_RETENTION_JOB_DELETE                                                                   \
    "WITH x AS (DELETE FROM replay_jobs WHERE id = $1::bigint RETURNING 1) SELECT count(*) FROM x"

/* ---- the journal: whole month partitions (sql/011_journal_partitions.sql) ---- */

/* the partitions of this month and the next two, of every partitioned table */
#define SQL_PARTITIONS_AHEAD "SELECT eventsink_partitions_ahead()"
/* the months of the rows waiting in a default partition (a backfill of a month that had no
 * partition, a row written while its month had none) -> table, column, month, oldest
 * first; $1 $2 $3 one of them: its partition made and its rows moved */
#define DEFAULT_MONTHS(t, col)                                                                     \
    "SELECT DISTINCT '" t "', '" col "', date_trunc('month', " col " AT TIME ZONE 'UTC')"          \
    " AT TIME ZONE 'UTC' FROM " t "_default"
#define SQL_DEFAULT_MONTHS                                                                                             \
    DEFAULT_MONTHS("event_journal", "received_at")                                                                     \
    " UNION ALL " DEFAULT_MONTHS("dead_letter_queue", "created_at") " UNION ALL " DEFAULT_MONTHS(                      \
        "replay_jobs",                                                                                                 \
        "created_at") " UNION ALL " DEFAULT_MONTHS("replay_job_items",                                                 \
                                                   "created_at") " UNION ALL " DEFAULT_MONTHS("journal_replay_copies", \
                                                                                              "job_created_at") " ORDER BY 3, 1"
#define SQL_PARTITION_SETTLE "SELECT eventsink_month_partition($1, $2, $3::timestamptz)"
#define SQL_JOURNAL_MOVE_TIMEOUT "SET statement_timeout = '10min'"

/* $1 retention in seconds -> name, bytes: the month partitions wholly older than it */
#define SQL_JOURNAL_EXPIRED                                                                        \
    "SELECT name, pg_total_relation_size(name::regclass) FROM event_journal_partitions"            \
    " WHERE upper <= now() - make_interval(secs => $1::float8) ORDER BY upper"
/* $1 retention in seconds -> the rows in the default partition of the months that would
 * go (a dry run counts them: a real run moves them to their months first) */
#define SQL_JOURNAL_EXPIRED_DEFAULT                                                                \
    "SELECT count(*) FROM event_journal_default WHERE received_at < date_trunc('month',"           \
    " (now() - make_interval(secs => $1::float8)) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
/* $1 partition -> its rows; the same, dropped */
#define SQL_JOURNAL_PART_ROWS "SELECT eventsink_journal_partition_rows($1)"
#define SQL_JOURNAL_DROP "SELECT eventsink_journal_drop($1)"
/* a count of a month reads it whole; the drop must not keep ingest queued behind it long */
#define SQL_JOURNAL_COUNT_TIMEOUT "SET statement_timeout = '2min'"
#define SQL_JOURNAL_DROP_LOCK_TIMEOUT "SET lock_timeout = '2s'"
#define SQL_LOCK_TIMEOUT_RESET "RESET lock_timeout"

#endif
