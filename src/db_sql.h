/* The SQL the service runs at run time, as prepared statements. The schema itself lives in
 * sql/NNN_name.sql (migrations). Parameters are always bound, never formatted in. */
#ifndef EVENTSINK_DB_SQL_H
#define EVENTSINK_DB_SQL_H

/* Advisory lock key for migrations: "eventsink" folded into 63 bits. */
#define SQL_MIGRATION_LOCK_KEY "7310575219485843001"

#define SQL_MIGRATIONS_TABLE                                                                       \
    "CREATE TABLE IF NOT EXISTS schema_migrations ("                                               \
    " version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"                        \
    " applied_at timestamptz NOT NULL DEFAULT now())"

#define SQL_MIGRATION_LOCK "SELECT pg_advisory_lock(" SQL_MIGRATION_LOCK_KEY ")"
#define SQL_MIGRATION_UNLOCK "SELECT pg_advisory_unlock(" SQL_MIGRATION_LOCK_KEY ")"
#define SQL_MIGRATION_APPLIED "SELECT version, checksum FROM schema_migrations"
#define SQL_MIGRATION_RECORD                                                                       \
    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, md5($3))"
#define SQL_MIGRATION_CHECKSUM "SELECT md5($1)"

/* One batch of journal rows, one array per column. A replay takes its depth from its
 * parent row (looked up only for replays). ON CONFLICT without a target: a redelivered
 * record (its topic, partition and offset are in the journal already) is skipped, and so
 * is a second copy of one job's replay of an event (a resumed job that produced an event
 * again, or forged markers) — that one is not lost: `dup` keeps it in the DLQ, resolved,
 * pointing at the journal row that holds the first copy. The result lists the journal
 * rows (dup false) and those DLQ rows (dup true). */
/* clang-format off */
#define SQL_JOURNAL_ROWS \
    "WITH r AS (" \
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[]," \
    "  $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[]," \
    "  $12::bigint[]) WITH ORDINALITY AS r(tenant_id, event_type, topic, kafka_partition," \
    "  kafka_offset, event_key, headers, payload, replay_source, replayed_from_event_id," \
    "  replay_job_id, replayed_from_dlq_id, ord)" \
    "), ins AS (" \
    " INSERT INTO event_journal (tenant_id, event_type, topic, kafka_partition, kafka_offset," \
    "  event_key, headers, payload, replay_count, replay_source, replayed_from_event_id," \
    "  replay_job_id, replayed_from_dlq_id)" \
    " SELECT r.tenant_id, r.event_type, r.topic, r.kafka_partition, r.kafka_offset," \
    "  r.event_key, r.headers::jsonb, r.payload::jsonb," \
    "  CASE WHEN r.replay_source IS NULL THEN 0 ELSE COALESCE((SELECT p.replay_count" \
    "   FROM event_journal p WHERE p.id = r.replayed_from_event_id), 0) + 1 END," \
    "  r.replay_source, r.replayed_from_event_id, r.replay_job_id, r.replayed_from_dlq_id" \
    " FROM r ORDER BY r.ord" \
    " ON CONFLICT DO NOTHING" \
    " RETURNING id, tenant_id, event_type, topic, kafka_partition, kafka_offset, replay_count," \
    "  replayed_from_event_id, replayed_from_dlq_id, replay_source" \
    "), dup AS (" \
    " INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset, event_key," \
    "  headers, raw_payload, reason, error, tenant_id, status, resolved_event_id)" \
    " SELECT r.topic, r.kafka_partition, r.kafka_offset, r.event_key, r.headers::jsonb," \
    "  convert_to(r.payload, 'UTF8'), 'duplicate_replay'," \
    "  'a second copy of replay job ' || r.replay_job_id || ' of '" \
    "  || coalesce('event ' || r.replayed_from_event_id, 'DLQ entry ' || r.replayed_from_dlq_id, '?')" \
    "  || '; journal row ' || coalesce(f.id::text, '?') || ' holds the first'," \
    "  r.tenant_id, 'resolved', f.id" \
    " FROM r LEFT JOIN LATERAL (SELECT j.id FROM event_journal j" \
    "  WHERE j.replay_job_id = r.replay_job_id" \
    "  AND (j.replayed_from_event_id = r.replayed_from_event_id" \
    "   OR j.replayed_from_dlq_id = r.replayed_from_dlq_id) LIMIT 1) f ON true" \
    " WHERE r.replay_job_id IS NOT NULL" \
    "  AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.topic = r.topic" \
    "   AND ins.kafka_partition = r.kafka_partition AND ins.kafka_offset = r.kafka_offset)" \
    "  AND NOT EXISTS (SELECT 1 FROM event_journal j WHERE j.topic = r.topic" \
    "   AND j.kafka_partition = r.kafka_partition AND j.kafka_offset = r.kafka_offset)" \
    " ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING" \
    " RETURNING id, tenant_id, topic" \
    ")"

#define SQL_JOURNAL_RESULT \
    " SELECT id, tenant_id, event_type, topic, replay_count, replayed_from_event_id," \
    "  replayed_from_dlq_id, replay_source, false AS dup FROM ins" \
    " UNION ALL SELECT id, tenant_id, NULL, topic, 0, NULL, NULL, NULL, true FROM dup"

#define SQL_JOURNAL_INSERT SQL_JOURNAL_ROWS SQL_JOURNAL_RESULT

/* The same for a batch holding retried DLQ entries: each one that lands resolves its
 * entry in the same statement. */
#define SQL_JOURNAL_INSERT_RESOLVE SQL_JOURNAL_ROWS \
    ", resolved AS (" \
    " UPDATE dead_letter_queue d SET status = 'resolved', resolved_event_id = ins.id," \
    "  attempts = d.attempts + 1, last_attempt_at = now(), next_attempt_at = NULL" \
    " FROM ins WHERE d.id = ins.replayed_from_dlq_id AND d.status <> 'resolved'" \
    ")" SQL_JOURNAL_RESULT
/* clang-format on */

/* The plain originals of a batch (no replay marker): columns in the order of copy_plain(). */
#define SQL_JOURNAL_COPY                                                                           \
    "COPY event_journal (tenant_id, event_type, topic, kafka_partition, kafka_offset,"             \
    " event_key, headers, payload) FROM STDIN"

/* One batch of DLQ rows. A record that is the retry of an existing entry counts one more
 * attempt on that entry (once per Kafka position) instead of adding a row. */
#define SQL_DLQ_INSERT                                                                             \
    "WITH r AS ("                                                                                  \
    " SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[],"           \
    "  $6::bytea[], $7::text[], $8::text[], $9::int[], $10::text[], $11::bigint[])"                \
    "  WITH ORDINALITY AS r(topic, kafka_partition, kafka_offset, event_key, headers,"             \
    "  raw_payload, reason, error, policy_version, tenant_id, retry_of, ord)"                      \
    "), retried AS ("                                                                              \
    " UPDATE dead_letter_queue d SET attempts = d.attempts + 1, last_attempt_at = now(),"          \
    "  reason = r.reason, error = r.error, policy_version = r.policy_version,"                     \
    "  status = CASE WHEN d.status = 'retrying' THEN 'pending' ELSE d.status END,"                 \
    "  last_retry_topic = r.topic, last_retry_partition = r.kafka_partition,"                      \
    "  last_retry_offset = r.kafka_offset, retry_decided = false"                                  \
    " FROM r WHERE d.id = r.retry_of AND (d.last_retry_topic, d.last_retry_partition,"             \
    "  d.last_retry_offset) IS DISTINCT FROM (r.topic, r.kafka_partition, r.kafka_offset)"         \
    " RETURNING d.id, d.reason"                                                                    \
    "), ins AS ("                                                                                  \
    " INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset, event_key,"             \
    "  headers, raw_payload, reason, error, policy_version, tenant_id)"                            \
    " SELECT r.topic, r.kafka_partition, r.kafka_offset, r.event_key, r.headers::jsonb,"           \
    "  r.raw_payload, r.reason, r.error, r.policy_version, r.tenant_id FROM r"                     \
    " WHERE r.retry_of IS NULL"                                                                    \
    "  OR NOT EXISTS (SELECT 1 FROM dead_letter_queue d WHERE d.id = r.retry_of)"                  \
    " ORDER BY r.ord"                                                                              \
    " ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING"                               \
    " RETURNING id, reason"                                                                        \
    ")"                                                                                            \
    " SELECT id, reason, false AS retry FROM ins UNION ALL SELECT id, reason, true FROM retried"

#endif
