/* SQL of the automation thread: automated DLQ retries and policy schedules. */
#ifndef EVENTSINK_SCHEDULER_SQL_H
#define EVENTSINK_SCHEDULER_SQL_H

#include "db_sql.h"

#define SQL_DLQ_UNDECIDED                                                                          \
    "SELECT id, reason, attempts, topic, tenant_id, error FROM dead_letter_queue"                  \
    " WHERE status = 'pending' AND NOT retry_decided ORDER BY id LIMIT 500"                        \
    " FOR UPDATE SKIP LOCKED"

/* $1 ids, $2 seconds (NULL: no more automated retries) */
#define SQL_DLQ_DECIDED                                                                            \
    "UPDATE dead_letter_queue d SET retry_decided = true,"                                         \
    " next_attempt_at = CASE WHEN u.secs IS NULL THEN NULL"                                        \
    "  ELSE now() + u.secs * interval '1 second' END,"                                             \
    " auto_retry_stopped = u.secs IS NULL"                                                         \
    " FROM unnest($1::bigint[], $2::float8[]) AS u(id, secs) WHERE d.id = u.id"

/* Due entries, claimed for one job: their next_attempt_at is cleared in the same
 * transaction as the job is created. */
#define SQL_DLQ_DUE                                                                                \
    "SELECT id FROM dead_letter_queue WHERE status = 'pending'"                                    \
    " AND next_attempt_at <= now() ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED"

/* $1 job, $2 ids */
#define SQL_DLQ_DUE_ITEMS                                                                          \
    "WITH ins AS (INSERT INTO replay_job_items (job_id, seq, dlq_id, created_at)"                  \
    " SELECT $1::bigint, ord, id, " JOB_CREATED_AT(                                                \
        "1") " FROM unnest($2::bigint[]) WITH ORDINALITY AS u(id, ord)"                            \
             " RETURNING dlq_id),"                                                                 \
             " upd AS (UPDATE dead_letter_queue SET next_attempt_at = NULL"                        \
             "  WHERE id IN (SELECT dlq_id FROM ins) RETURNING 1)"                                 \
             " UPDATE replay_jobs SET total = (SELECT count(*) FROM ins) WHERE id = $1::bigint"    \
             " RETURNING total"

#define SQL_SCHEDULE_LAST "SELECT max(tick) FROM schedule_runs WHERE name = $1"
/* $1 name, $2 tick (unix seconds), $3 note */
#define SQL_SCHEDULE_CLAIM                                                                         \
    "INSERT INTO schedule_runs (name, tick, note) VALUES ($1, to_timestamp($2::bigint), $3)"       \
    " ON CONFLICT DO NOTHING RETURNING to_char(tick AT TIME ZONE 'UTC',"                           \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define SQL_SCHEDULE_JOB                                                                           \
    "UPDATE schedule_runs SET job_id = $3::bigint WHERE name = $1"                                 \
    " AND tick = to_timestamp($2::bigint)"
#define SQL_TICK_IS_NEW                                                                            \
    "SELECT $2::timestamptz IS NULL OR to_timestamp($1::bigint) > $2::timestamptz"

/* DLQ retry items of a schedule: $1 job, $2 reason, $3 topic, $4 tenant, $5 since */
#define SQL_SCHEDULE_DLQ_ITEMS                                                                     \
    "WITH ins AS (INSERT INTO replay_job_items (job_id, seq, dlq_id, created_at)"                  \
    " SELECT $1::bigint, row_number() OVER (ORDER BY id), id, " JOB_CREATED_AT(                    \
        "1") " FROM dead_letter_queue"                                                             \
             " WHERE status = 'pending' AND ($2::text IS NULL OR reason = $2)"                     \
             " AND ($3::text IS NULL OR topic = $3) AND ($4::text IS NULL OR tenant_id = $4)"      \
             " AND ($5::timestamptz IS NULL OR created_at >= $5::timestamptz) RETURNING 1)"        \
             " UPDATE replay_jobs SET total = (SELECT count(*) FROM ins) WHERE id = $1::bigint"    \
             " RETURNING total"

/* A synchronous replay (POST /replay/{id}, POST /dlq/{id}/retry) whose instance stopped
 * before it answered stays "running": closed here after 10 minutes, as failed. */
#define SQL_STALE_SYNC_JOBS                                                                        \
    "UPDATE replay_jobs SET status = 'failed', finished_at = now(),"                               \
    " error = 'interrupted: the instance that ran this request stopped before it answered'"        \
    " WHERE status = 'running' AND coalesce((params->>'sync')::bool, false)"                       \
    " AND created_at < now() - interval '10 minutes'"

#endif
