/* SQL of retention (CONTRACT 9.5): what is older than retention.dlq and retention.jobs goes,
 * a batch a statement, so that no statement holds many rows' locks or runs long. */
#ifndef EVENTSINK_RETENTION_SQL_H
#define EVENTSINK_RETENTION_SQL_H

#include "db_sql.h"

#define RETENTION_BATCH "10000"

/* one instance applies retention at a time */
#define SQL_RETENTION_LOCK "SELECT pg_try_advisory_lock(" SQL_LOCK_CLASS_RETENTION ", 0)"
#define SQL_RETENTION_UNLOCK "SELECT pg_advisory_unlock(" SQL_LOCK_CLASS_RETENTION ", 0)"

/* $1 retention in seconds. A DLQ entry goes once it is resolved or discarded and its last
 * attempt (or, never retried, its arrival) is that old; pending and retrying ones stay. */
#define DLQ_EXPIRED                                                                                \
    " FROM dead_letter_queue WHERE status IN ('resolved', 'discarded')"                            \
    " AND coalesce(last_attempt_at, created_at) < now() - make_interval(secs => $1::float8)"
#define SQL_RETENTION_DLQ_COUNT "SELECT count(*)" DLQ_EXPIRED
#define SQL_RETENTION_DLQ_DELETE                                                                   \
    "WITH d AS (DELETE FROM dead_letter_queue WHERE id IN (SELECT id" DLQ_EXPIRED                  \
    " ORDER BY id LIMIT " RETENTION_BATCH ") RETURNING 1) SELECT count(*) FROM d"

/* $1 retention in seconds. A job goes once it ended (done, failed, cancelled) that long
 * ago; its items first, then the job. */
#define JOBS_EXPIRED                                                                               \
    " FROM replay_jobs WHERE status IN ('done', 'failed', 'cancelled')"                            \
    " AND finished_at < now() - make_interval(secs => $1::float8)"
#define SQL_RETENTION_JOBS_COUNT                                                                   \
    "SELECT count(*), coalesce((SELECT count(*) FROM replay_job_items WHERE job_id IN"             \
    " (SELECT id" JOBS_EXPIRED ")), 0)" JOBS_EXPIRED
#define SQL_RETENTION_ITEMS_DELETE                                                                 \
    "WITH d AS (DELETE FROM replay_job_items WHERE (job_id, seq) IN (SELECT job_id, seq"           \
    " FROM replay_job_items WHERE job_id IN (SELECT id" JOBS_EXPIRED ") LIMIT " RETENTION_BATCH    \
    ") RETURNING 1) SELECT count(*) FROM d"
#define SQL_RETENTION_JOBS_DELETE                                                                  \
    "WITH d AS (DELETE FROM replay_jobs WHERE id IN (SELECT id" JOBS_EXPIRED                       \
    " AND NOT EXISTS (SELECT 1 FROM replay_job_items i WHERE i.job_id = replay_jobs.id)"           \
    " ORDER BY id LIMIT " RETENTION_BATCH ") RETURNING 1) SELECT count(*) FROM d"

#endif
