/* The SQL the service runs at run time, as prepared statements. The schema itself lives in
 * sql/NNN_name.sql (migrations). Parameters are always bound, never formatted in. */
#ifndef EVENTSINK_DB_SQL_H
#define EVENTSINK_DB_SQL_H

/* Advisory locks. PostgreSQL keeps two key spaces that never overlap: one bigint key, or
 * two int keys. Migrations alone use the one-key form ("eventsink" folded into 63 bits,
 * the key every version of eventsink takes), every other lock the two-key form with a
 * class of its own as the first key, so that locks of different purposes cannot collide
 * whatever their ids. */
#define SQL_MIGRATION_LOCK_KEY "7310575219485843001"
#define SQL_LOCK_CLASS_REPLAY_JOB "1702061569"  /* a replay job claimed by a worker */
#define SQL_LOCK_CLASS_IDEMPOTENCY "1702061570" /* one Idempotency-Key at a time */
#define SQL_LOCK_CLASS_RETENTION "1702061571"   /* one instance applies retention */
/* an id (bigint) as the second key: its low 32 bits, as a signed int */
#define SQL_LOCK_ID(x) "(((" x ") & 4294967295) - 2147483648)::int"

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

/* The columns of a journal row and their values from r (below), for the two INSERTs. */
#define JOURNAL_COLS                                                                               \
    " (tenant_id, event_type, topic, kafka_partition, kafka_offset, event_key, headers,"           \
    "  payload, replay_count, replay_source, replayed_from_event_id, replay_job_id,"               \
    "  replayed_from_dlq_id, replay_verified, kafka_timestamp, kafka_generation)"
#define JOURNAL_VALS                                                                               \
    " r.tenant_id, r.event_type, r.topic, r.kafka_partition, r.kafka_offset,"                      \
    "  r.event_key, r.headers::jsonb, r.payload::jsonb,"                                           \
    "  CASE WHEN r.replay_source IS NULL THEN 0 ELSE COALESCE(r.parent_count, 0) + 1 END,"         \
    "  r.replay_source, r.parent_id, r.replay_job_id, r.replayed_from_dlq_id,"                     \
    "  r.replay_verified, 'epoch'::timestamptz + r.kafka_ts_ms * interval '1 millisecond'"
#define JOURNAL_RETURNING                                                                          \
    " RETURNING id, tenant_id, event_type, topic, kafka_partition, kafka_offset, replay_count,"    \
    "  replayed_from_event_id, replayed_from_dlq_id, replay_source, replay_job_id,"                \
    "  kafka_generation > 0 AS reused"
/* the creation time of job $p: a job's items are in the month partition of their job
 * (sql/012_dlq_jobs_partitions.sql) */
#define JOB_CREATED_AT(p) "(SELECT created_at FROM replay_jobs WHERE id = $" p "::bigint)"
/* "the row of table `t` (the DLQ) at r's position is r itself": the same key and Kafka
 * timestamp (a row without a timestamp, written before migration 006, counts as the same) */
#define SAME_DLQ_RECORD(t)                                                                         \
    " " t ".event_key IS NOT DISTINCT FROM r.event_key AND (" t ".kafka_timestamp IS NULL"         \
    " OR r.kafka_ts_ms IS NULL OR " t ".kafka_timestamp ="                                         \
    " 'epoch'::timestamptz + r.kafka_ts_ms * interval '1 millisecond')"
/* "a row of table `t` at r's Kafka position" */
#define AT_POSITION(t)                                                                             \
    " " t ".topic = r.topic AND " t ".kafka_partition = r.kafka_partition"                         \
    " AND " t ".kafka_offset = r.kafka_offset"

/* One batch of journal rows, one array per column. A replay takes its depth from its
 * parent row, and is linked to it only when the parent exists and belongs to the same
 * tenant (markers may come from anyone: `unlinked` reports the id a record claimed but did
 * not get). The journal has no unique index on the Kafka position (it is partitioned by
 * time): a record that may be stored already ($15 maybe_stored: below the sink's position
 * in its partition, db_fence.h) is looked up (`held`). A redelivered record (the same key,
 * payload and timestamp at its position; or the same key and timestamp in the DLQ, a record
 * dead-lettered before a policy change) is skipped; one whose position is taken by a
 * different record (the offsets were reused) is journaled at the position's next
 * generation (`reused` true). A record twice in the batch counts once. One copy of a job's
 * replay of an event is journaled: the first claims (job, event) in journal_replay_copies;
 * a second copy (a resumed job that produced an event again) is not lost: `dup` keeps it
 * in the DLQ, resolved, pointing at the journal row that holds the first copy. Only
 * verified markers carry a job id (replay_auth.c). The result lists the journal rows (dup
 * false) and those DLQ rows (dup true). */
/* clang-format off */
#define SQL_JOURNAL_ROWS \
    "WITH r0 AS (" \
    " SELECT r.*, par.id AS parent_id, par.replay_count AS parent_count," \
    "  row_number() OVER (PARTITION BY r.topic, r.kafka_partition, r.kafka_offset," \
    "   r.event_key, r.kafka_ts_ms ORDER BY r.ord) AS pos_rank FROM unnest(" \
    "  $1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[]," \
    "  $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[]," \
    "  $12::bigint[], $13::boolean[], $14::bigint[], $15::boolean[]) WITH ORDINALITY" \
    "  AS r(tenant_id, event_type, topic, kafka_partition, kafka_offset, event_key, headers," \
    "  payload, replay_source, replayed_from_event_id, replay_job_id, replayed_from_dlq_id," \
    "  replay_verified, kafka_ts_ms, maybe_stored, ord)" \
    " LEFT JOIN LATERAL (SELECT p.id, p.replay_count FROM event_journal p" \
    "  WHERE p.id = r.replayed_from_event_id AND p.tenant_id = r.tenant_id) par ON true" \
    "), r AS (" \
    " SELECT r0.*, row_number() OVER (PARTITION BY r0.replay_job_id," \
    "  r0.replayed_from_event_id, r0.replayed_from_dlq_id ORDER BY r0.ord) AS copy_rank" \
    " FROM r0 WHERE r0.pos_rank = 1" \
    "), held AS (" \
    " SELECT h.ord, bool_or(h.same) AS same, max(h.gen) AS gen FROM (" \
    "  SELECT r.ord, j.event_key IS NOT DISTINCT FROM r.event_key" \
    "   AND j.payload = r.payload::jsonb" \
    "   AND (j.kafka_timestamp IS NULL OR r.kafka_ts_ms IS NULL OR j.kafka_timestamp =" \
    "    'epoch'::timestamptz + r.kafka_ts_ms * interval '1 millisecond') AS same," \
    "   j.kafka_generation AS gen" \
    "  FROM r JOIN event_journal j ON" AT_POSITION("j") " WHERE r.maybe_stored" \
    "  UNION ALL SELECT r.ord, true, NULL FROM r JOIN dead_letter_queue d ON" AT_POSITION("d") \
    "  WHERE r.maybe_stored AND" SAME_DLQ_RECORD("d") ") h GROUP BY h.ord" \
    "), claim AS (" \
    " INSERT INTO journal_replay_copies (replay_job_id, replayed_from_event_id," \
    "  replayed_from_dlq_id, job_created_at)" \
    " SELECT r.replay_job_id, r.replayed_from_event_id, r.replayed_from_dlq_id," \
    "  coalesce((SELECT j.created_at FROM replay_jobs j WHERE j.id = r.replay_job_id), now())" \
    " FROM r" \
    " WHERE r.replay_job_id IS NOT NULL AND r.copy_rank = 1" \
    "  AND NOT EXISTS (SELECT 1 FROM held h WHERE h.ord = r.ord AND h.same)" \
    " ORDER BY r.ord ON CONFLICT DO NOTHING" \
    " RETURNING replay_job_id, replayed_from_event_id, replayed_from_dlq_id" \
    "), ins AS (" \
    " INSERT INTO event_journal" JOURNAL_COLS " SELECT" JOURNAL_VALS "," \
    "  coalesce(h.gen + 1, 0)" \
    " FROM r LEFT JOIN held h ON h.ord = r.ord WHERE h.same IS NOT TRUE" \
    "  AND (r.replay_job_id IS NULL OR r.copy_rank = 1 AND EXISTS (SELECT 1 FROM claim c" \
    "   WHERE c.replay_job_id = r.replay_job_id" \
    "   AND c.replayed_from_event_id IS NOT DISTINCT FROM r.replayed_from_event_id" \
    "   AND c.replayed_from_dlq_id IS NOT DISTINCT FROM r.replayed_from_dlq_id))" \
    " ORDER BY r.ord" JOURNAL_RETURNING \
    "), dup AS (" \
    " INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset, event_key," \
    "  headers, raw_payload, reason, error, tenant_id, status, resolved_event_id, decided_at," \
    "  kafka_timestamp)" \
    " SELECT r.topic, r.kafka_partition, r.kafka_offset, r.event_key, r.headers::jsonb," \
    "  convert_to(r.payload, 'UTF8'), 'duplicate_replay'," \
    "  'a second copy of replay job ' || r.replay_job_id || ' of '" \
    "  || coalesce('event ' || r.replayed_from_event_id, 'DLQ entry ' || r.replayed_from_dlq_id, '?')" \
    "  || '; journal row ' || coalesce(f.id::text, '?') || ' holds the first'," \
    "  r.tenant_id, 'resolved', f.id, now()," \
    "  'epoch'::timestamptz + r.kafka_ts_ms * interval '1 millisecond'" \
    " FROM r LEFT JOIN LATERAL (SELECT j.id FROM event_journal j" \
    "  WHERE j.replay_job_id = r.replay_job_id" \
    "  AND (j.replayed_from_event_id = r.replayed_from_event_id" \
    "   OR j.replayed_from_dlq_id = r.replayed_from_dlq_id) LIMIT 1) f ON true" \
    " WHERE r.replay_job_id IS NOT NULL" \
    "  AND NOT EXISTS (SELECT 1 FROM ins WHERE" AT_POSITION("ins") ")" \
    "  AND NOT EXISTS (SELECT 1 FROM held h WHERE h.ord = r.ord AND h.same)" \
    "  AND NOT EXISTS (SELECT 1 FROM dead_letter_queue d WHERE" AT_POSITION("d") ")" \
    " RETURNING id, tenant_id, topic" \
    ")"

#define SQL_JOURNAL_RESULT \
    " SELECT DISTINCT ON (a.id) a.id, a.tenant_id, a.event_type, a.topic, a.replay_count," \
    "  a.replayed_from_event_id, a.replayed_from_dlq_id, a.replay_source, false AS dup," \
    "  CASE WHEN a.replayed_from_event_id IS NULL THEN r.replayed_from_event_id END" \
    "  AS unlinked, a.reused, a.kafka_partition, a.kafka_offset" \
    " FROM ins a JOIN r ON r.topic = a.topic AND r.kafka_partition = a.kafka_partition" \
    "  AND r.kafka_offset = a.kafka_offset" \
    " UNION ALL SELECT id, tenant_id, NULL, topic, 0, NULL, NULL, NULL, true, NULL, false," \
    "  NULL, NULL FROM dup"

#define SQL_JOURNAL_INSERT SQL_JOURNAL_ROWS SQL_JOURNAL_RESULT

/* Records the outcome of the retries in CTE `from` (columns id: the DLQ entry, and
 * replay_job_id) on their job items. An item whose produce failed keeps that failure. The
 * job's counts are the worker's to update (SQL_REPLAY_OUTCOMES_FOLD): the consumer locks no
 * job row, so it cannot deadlock with the worker. */
#define JOB_ITEM_OUTCOME(from, outcome) \
    ", " from "_items AS (" \
    " UPDATE replay_job_items i SET outcome = '" outcome "' FROM " from \
    " WHERE i.job_id = " from ".replay_job_id AND i.dlq_id = " from ".id" \
    "  AND i.outcome IS NULL AND i.status <> 'failed'" \
    ")"

/* The same for a batch holding retried DLQ entries: each one that lands resolves its
 * entry in the same statement, but only its own retry (an item of the job that carries
 * it) and only while the entry is retrying; its job item records it resolved. */
#define SQL_JOURNAL_INSERT_RESOLVE SQL_JOURNAL_ROWS \
    ", resolved AS (" \
    " UPDATE dead_letter_queue d SET status = 'resolved', resolved_event_id = ins.id," \
    "  attempts = d.attempts + 1, last_attempt_at = now(), next_attempt_at = NULL," \
    "  decided_at = now()" \
    " FROM ins WHERE d.id = ins.replayed_from_dlq_id AND d.status = 'retrying'" \
    "  AND EXISTS (SELECT 1 FROM replay_job_items i" \
    "   WHERE i.job_id = ins.replay_job_id AND i.dlq_id = d.id)" \
    " RETURNING d.id, ins.replay_job_id" \
    ")" JOB_ITEM_OUTCOME("resolved", "resolved") SQL_JOURNAL_RESULT
/* clang-format on */

/* The plain originals of a batch (no replay marker): columns in the order of copy_plain(),
 * binary COPY format. */
#define SQL_JOURNAL_COPY                                                                           \
    "COPY event_journal (tenant_id, event_type, topic, kafka_partition, kafka_offset,"             \
    " event_key, headers, payload, kafka_timestamp) FROM STDIN (FORMAT binary)"

/* One batch of DLQ rows. A record that is the retry of an existing entry counts one more
 * attempt on that entry (once per Kafka position) instead of adding a row, and its job
 * item records that it failed again. A record at a
 * position the DLQ holds for a different record (reused offsets, see SQL_JOURNAL_ROWS) gets
 * the position's next generation (`reused` true). The DLQ is partitioned by month, so its
 * Kafka position is no unique index: the look-ups below keep a redelivery out, and the
 * sink's position (db_fence.h) keeps out the copy another writer adds meanwhile. */
/* clang-format off */
#define DLQ_COLS \
    " (topic, kafka_partition, kafka_offset, event_key, headers, raw_payload, reason, error," \
    "  policy_version, tenant_id, event_type, kafka_timestamp, kafka_generation)"
#define DLQ_VALS \
    " r.topic, r.kafka_partition, r.kafka_offset, r.event_key, r.headers::jsonb," \
    "  r.raw_payload, r.reason, r.error, r.policy_version, r.tenant_id, r.event_type," \
    "  'epoch'::timestamptz + r.kafka_ts_ms * interval '1 millisecond'"
#define SQL_DLQ_INSERT \
    "WITH r AS (" \
    " SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[]," \
    "  $6::bytea[], $7::text[], $8::text[], $9::int[], $10::text[], $11::bigint[], $12::bigint[]," \
    "  $13::text[], $14::bigint[])" \
    "  WITH ORDINALITY AS r(topic, kafka_partition, kafka_offset, event_key, headers," \
    "  raw_payload, reason, error, policy_version, tenant_id, retry_of, kafka_ts_ms, event_type," \
    "  replay_job_id, ord)" \
    "), retried AS (" \
    " UPDATE dead_letter_queue d SET attempts = d.attempts + 1, last_attempt_at = now()," \
    "  reason = r.reason, error = r.error, policy_version = r.policy_version," \
    "  status = CASE WHEN d.status = 'retrying' THEN 'pending' ELSE d.status END," \
    "  last_retry_topic = r.topic, last_retry_partition = r.kafka_partition," \
    "  last_retry_offset = r.kafka_offset, retry_decided = false" \
    " FROM r WHERE d.id = r.retry_of AND (d.last_retry_topic, d.last_retry_partition," \
    "  d.last_retry_offset) IS DISTINCT FROM (r.topic, r.kafka_partition, r.kafka_offset)" \
    " RETURNING d.id, d.reason, d.tenant_id, d.error, r.replay_job_id" \
    ")" JOB_ITEM_OUTCOME("retried", "failed_again") \
    ", fresh0 AS (" \
    " SELECT DISTINCT ON (r.topic, r.kafka_partition, r.kafka_offset) * FROM r" \
    " WHERE r.retry_of IS NULL" \
    "  OR NOT EXISTS (SELECT 1 FROM dead_letter_queue d WHERE d.id = r.retry_of)" \
    " ORDER BY r.topic, r.kafka_partition, r.kafka_offset, r.ord" \
    "), fresh AS (" \
    " SELECT * FROM fresh0 r WHERE NOT EXISTS (SELECT 1 FROM event_journal j WHERE" \
    AT_POSITION("j") " AND" SAME_DLQ_RECORD("j") ")" \
    "), ins AS (" \
    " INSERT INTO dead_letter_queue" DLQ_COLS " SELECT" DLQ_VALS ", 0 FROM fresh r" \
    " WHERE NOT EXISTS (SELECT 1 FROM dead_letter_queue d WHERE" AT_POSITION("d") ")" \
    " ORDER BY r.ord" \
    " RETURNING id, reason, topic, kafka_partition, kafka_offset, tenant_id, error" \
    "), reused AS (" \
    " INSERT INTO dead_letter_queue" DLQ_COLS " SELECT" DLQ_VALS "," \
    "  (SELECT max(d.kafka_generation) + 1 FROM dead_letter_queue d WHERE" AT_POSITION("d") ")" \
    " FROM fresh r WHERE NOT EXISTS (SELECT 1 FROM ins WHERE" AT_POSITION("ins") ")" \
    "  AND NOT EXISTS (SELECT 1 FROM dead_letter_queue d WHERE" AT_POSITION("d") \
    "   AND d.event_key IS NOT DISTINCT FROM r.event_key" \
    "   AND d.raw_payload IS NOT DISTINCT FROM r.raw_payload" \
    "   AND (d.kafka_timestamp IS NULL OR r.kafka_ts_ms IS NULL OR d.kafka_timestamp =" \
    "    'epoch'::timestamptz + r.kafka_ts_ms * interval '1 millisecond'))" \
    " ORDER BY r.ord" \
    " RETURNING id, reason, topic, kafka_partition, kafka_offset, tenant_id, error" \
    ")" \
    " SELECT id, reason, false AS retry, false AS reused, topic, NULL::int, NULL::bigint," \
    "  tenant_id, error FROM ins" \
    " UNION ALL SELECT id, reason, true, false, NULL, NULL, NULL, tenant_id, error FROM retried" \
    " UNION ALL SELECT id, reason, false, true, topic, kafka_partition, kafka_offset, tenant_id," \
    "  error FROM reused"
/* clang-format on */

/* Whether the journal or the DLQ holds the record at $1 topic, $2 partition, $3 offset
 * with $4 key and $5 Kafka timestamp (ms): the same record, stored already; or the sink's
 * position names it as the last one stored (its journal row may have gone with retention). */
#define SQL_POSITION_HOLDS                                                                         \
    "SELECT EXISTS (SELECT 1 FROM event_journal j WHERE j.topic = $1"                              \
    "  AND j.kafka_partition = $2::int AND j.kafka_offset = $3::bigint"                            \
    "  AND j.event_key IS NOT DISTINCT FROM $4 AND j.kafka_timestamp ="                            \
    "  'epoch'::timestamptz + $5::bigint * interval '1 millisecond')"                              \
    " OR EXISTS (SELECT 1 FROM dead_letter_queue d WHERE d.topic = $1"                             \
    "  AND d.kafka_partition = $2::int AND d.kafka_offset = $3::bigint"                            \
    "  AND d.event_key IS NOT DISTINCT FROM $4 AND d.kafka_timestamp ="                            \
    "  'epoch'::timestamptz + $5::bigint * interval '1 millisecond')"                              \
    " OR EXISTS (SELECT 1 FROM sink_offsets s WHERE s.topic = $1"                                  \
    "  AND s.kafka_partition = $2::int AND s.last_offset = $3::bigint"                             \
    "  AND s.last_key IS NOT DISTINCT FROM $4 AND s.last_timestamp ="                              \
    "  'epoch'::timestamptz + $5::bigint * interval '1 millisecond')"

/* The keys that sign replay markers (replay_auth.h), newest last. */
#define SQL_REPLAY_KEYS "SELECT id, secret FROM replay_keys WHERE retired_at IS NULL ORDER BY id"

#endif
