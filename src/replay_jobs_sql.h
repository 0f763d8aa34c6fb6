/* SQL of the replay and DLQ endpoints: creating jobs and their items, reading jobs. */
#ifndef EVENTSINK_REPLAY_JOBS_SQL_H
#define EVENTSINK_REPLAY_JOBS_SQL_H

#include "db_sql.h"

/* A token's tenant scope ($N text[] or NULL) as a condition on a row's tenant_id. */
#define SCOPE(n, col) "($" n "::text[] IS NULL OR " col " = ANY($" n "::text[]))"

/* $1 event id, $2 scope -> replay_count, lineage text ("7 (depth 2) <- 5 (depth 1) <- 3") */
#define SQL_REPLAY_TARGET                                                                                        \
    "WITH RECURSIVE up AS ("                                                                                     \
    " SELECT id, replay_count, replayed_from_event_id, 0 AS depth FROM event_journal"                            \
    "  WHERE id = $1::bigint AND " SCOPE(                                                                        \
        "2",                                                                                                     \
        "tenant_id") " UNION ALL SELECT p.id, p.replay_count, p.replayed_from_event_id, "                        \
                     "up.depth + 1"                                                                              \
                     "  FROM event_journal p JOIN up ON p.id = up.replayed_from_event_id "                       \
                     "WHERE up.depth < 100 AND " SCOPE(                                                          \
                         "2",                                                                                    \
                         "p.tenant_id") ")"                                                                      \
                                        " SELECT (SELECT replay_count FROM up WHERE depth = 0),"                 \
                                        "  string_agg(id || ' (depth ' || replay_count || ')', ' <- ' ORDER BY " \
                                        "depth)"                                                                 \
                                        " FROM up HAVING count(*) > 0"

/* $1 kind, $2 source, $3 requested_by, $4 reason, $5 params jsonb, $6 status, $7 total */
#define SQL_JOB_CREATE                                                                             \
    "INSERT INTO replay_jobs (kind, replay_source, requested_by, reason, params, status,"          \
    " total, started_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::int,"                          \
    " CASE WHEN $6 = 'running' THEN now() END) RETURNING id"

/* $1 job, $2 event id or NULL, $3 dlq id or NULL */
#define SQL_JOB_ITEM_ONE                                                                           \
    "INSERT INTO replay_job_items (job_id, seq, event_id, dlq_id, created_at)"                     \
    " VALUES ($1::bigint, 1, $2::bigint, $3::bigint, " JOB_CREATED_AT("1") ")"

/* Batch: $1 job, $2 ids (bigint[], deduplicated in order), $3 scope. Ids the token
 * cannot see are failed at once as unknown. */
#define SQL_JOB_ITEMS_BATCH                                                                                                                        \
    "WITH ids AS (SELECT id, min(ord) AS ord FROM unnest($2::bigint[]) WITH ORDINALITY"                                                            \
    "  AS u(id, ord) GROUP BY id),"                                                                                                                \
    " ins AS (INSERT INTO replay_job_items (job_id, seq, event_id, status, error, created_at)"                                                     \
    "  SELECT $1::bigint, row_number() OVER (ORDER BY ids.ord), ids.id,"                                                                           \
    "   CASE WHEN j.id IS NULL THEN 'failed' ELSE 'pending' END,"                                                                                  \
    "   CASE WHEN j.id IS NULL THEN 'no such event' END, " JOB_CREATED_AT("1") "  FROM ids LEFT JOIN event_journal j ON j.id = ids.id AND " SCOPE( \
        "3", "j.tenant_id") "  RETURNING status)"                                                                                                  \
                            " UPDATE replay_jobs SET total = (SELECT count(*) FROM ins),"                                                          \
                            "  failed = (SELECT count(*) FROM ins WHERE status = 'failed')"                                                        \
                            " WHERE id = $1::bigint RETURNING total, failed"

/* Range filter: $1 start, $2 end (received_at, either may be NULL), $3 topic, $4 tenant,
 * $5 only_original, $6 scope, $7 from_id, $8 to_id (journal ids, inclusive, NULL: open) */
#define RANGE_WHERE                                                                                \
    " WHERE ($1::timestamptz IS NULL OR received_at >= $1::timestamptz)"                           \
    " AND ($2::timestamptz IS NULL OR received_at < $2::timestamptz)"                              \
    " AND ($3::text IS NULL OR topic = $3) AND ($4::text IS NULL OR tenant_id = $4)"               \
    " AND (NOT $5::bool OR replay_count = 0) AND " SCOPE(                                          \
        "6",                                                                                       \
        "tenant_id") " AND ($7::bigint IS NULL OR id >= $7::bigint) AND ($8::bigint IS NULL OR id <= $8::bigint)"

#define SQL_RANGE_COUNT "SELECT count(*) FROM event_journal" RANGE_WHERE

/* $9 job */
#define SQL_JOB_ITEMS_RANGE                                                                        \
    "WITH ins AS (INSERT INTO replay_job_items (job_id, seq, event_id, created_at)"                \
    " SELECT $9::bigint, row_number() OVER (ORDER BY id), id, " JOB_CREATED_AT(                    \
        "9") " FROM event_journal" RANGE_WHERE " RETURNING 1)"                                     \
             " UPDATE replay_jobs SET total = (SELECT count(*) FROM ins) WHERE id = $9::bigint"    \
             " RETURNING total"

/* DLQ retry by filter: $1 job, $2 reason, $3 topic, $4 tenant, $5 scope */
#define SQL_JOB_ITEMS_DLQ                                                                          \
    "WITH ins AS (INSERT INTO replay_job_items (job_id, seq, dlq_id, created_at)"                  \
    " SELECT $1::bigint, row_number() OVER (ORDER BY id), id, " JOB_CREATED_AT(                    \
        "1") " FROM dead_letter_queue"                                                             \
             " WHERE status = 'pending' AND ($2::text IS NULL OR reason = $2)"                     \
             " AND ($3::text IS NULL OR topic = $3) AND ($4::text IS NULL OR tenant_id = $4)"      \
             " AND " SCOPE(                                                                        \
                 "5", "tenant_id") " RETURNING 1)"                                                 \
                                   " UPDATE replay_jobs SET total = (SELECT count(*) FROM ins) "   \
                                   "WHERE id = $1::bigint"                                         \
                                   " RETURNING total"

/* $1 dlq id, $2 scope -> status */
#define SQL_DLQ_STATUS                                                                             \
    "SELECT status FROM dead_letter_queue WHERE id = $1::bigint AND " SCOPE("2", "tenant_id")

/* $1 dlq id, $2 scope */
#define SQL_DLQ_DISCARD                                                                            \
    "UPDATE dead_letter_queue SET status = 'discarded', next_attempt_at = NULL,"                   \
    " decided_at = now()"                                                                          \
    " WHERE id = $1::bigint AND status IN ('pending', 'retrying') AND " SCOPE(                     \
        "2", "tenant_id") " RETURNING json_build_object('id', id, 'status', status)"

/* A job is visible to a scoped token only when it was made under a scope within its own. */
#define JOB_VISIBLE(n)                                                                             \
    "($" n "::text[] IS NULL OR (params ? 'scope' AND ARRAY(SELECT"                                \
    " jsonb_array_elements_text(params->'scope')) <@ $" n "::text[]))"

#define JOB_COLUMNS                                                                                \
    "id, kind, replay_source, requested_by, reason, params, status, total, succeeded,"             \
    " failed, total - succeeded - failed AS pending, created_at, started_at, finished_at,"         \
    " error"

/* $1 limit, $2 status, $3 scope */
#define SQL_JOBS_LIST                                                                              \
    "SELECT json_build_object('jobs', coalesce(json_agg(j ORDER BY j.id DESC), '[]'))"             \
    " FROM (SELECT " JOB_COLUMNS " FROM replay_jobs WHERE ($2::text IS NULL OR status = $2)"       \
    " AND " JOB_VISIBLE("3") " ORDER BY id DESC LIMIT $1::int) j"

/* $1 id, $2 scope */
#define SQL_JOB_ONE                                                                                \
    "SELECT row_to_json(j) FROM (SELECT " JOB_COLUMNS " FROM replay_jobs"                          \
    " WHERE id = $1::bigint AND " JOB_VISIBLE("2") ") j"

/* $1 id, $2 scope -> the job after cancelling, or its status when it had already ended */
/* clang-format off */
#define SQL_JOB_CANCEL \
    "WITH c AS (UPDATE replay_jobs SET status = 'cancelled', finished_at = now()" \
    " WHERE id = $1::bigint AND status IN ('pending', 'running') AND " JOB_VISIBLE("2") \
    " RETURNING id)" \
    " SELECT (SELECT count(*) FROM c), status, kind FROM replay_jobs WHERE id = $1::bigint" \
    " AND " JOB_VISIBLE("2")
/* clang-format on */

/* $1 requested_by, $2 key */
/* clang-format off */
#define SQL_IDEM_GET \
    "SELECT status, response, request FROM replay_idempotency" \
    " WHERE requested_by = $1 AND key = $2"
#define SQL_IDEM_PUT \
    "INSERT INTO replay_idempotency (requested_by, key, status, response, request)" \
    " VALUES ($1, $2, $3::int, $4, $5) ON CONFLICT DO NOTHING"
/* clang-format on */
#define SQL_IDEM_LOCK                                                                              \
    "SELECT pg_advisory_lock(" SQL_LOCK_CLASS_IDEMPOTENCY ", hashtext($1 || '/' || $2))"
#define SQL_IDEM_UNLOCK                                                                            \
    "SELECT pg_advisory_unlock(" SQL_LOCK_CLASS_IDEMPOTENCY ", hashtext($1 || '/' || $2))"

/* Records a webhook's signature ($1) in the transaction of its job: no row back when
 * another request used it first (the insert waits for that one to commit). */
#define SQL_WEBHOOK_SEEN                                                                           \
    "INSERT INTO webhook_signatures (signature) VALUES ($1) ON CONFLICT DO NOTHING"                \
    " RETURNING 1"

#endif
