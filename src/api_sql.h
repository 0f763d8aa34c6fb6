/* SQL of the read endpoints. PostgreSQL builds the JSON (row_to_json/json_agg), so every
 * value is encoded by a real encoder; timestamps come out as ISO 8601 with their zone
 * (the API connections run with TimeZone=UTC). $N parameters are always bound. */
#ifndef EVENTSINK_API_SQL_H
#define EVENTSINK_API_SQL_H

#define EVENT_COLUMNS                                                                              \
    "id, tenant_id, event_type, topic, kafka_partition, kafka_offset, event_key, headers,"         \
    " payload, received_at, replay_count, replay_source, replayed_from_event_id,"                  \
    " replay_job_id, replayed_from_dlq_id, replay_verified, kafka_timestamp"

/* $1 limit, $2 tenant, $3 topic, $4 replayed (bool), $5 token scope (text[]), $6 before_id
 * (ids below it: the next page), $7 since (received_at >= it), $8 until (received_at < it),
 * $9 event_type */
#define SQL_EVENTS_LATEST                                                                          \
    "SELECT json_build_object('events', coalesce(json_agg(e ORDER BY e.id DESC), '[]'))"           \
    " FROM (SELECT " EVENT_COLUMNS " FROM event_journal"                                           \
    "  WHERE ($2::text IS NULL OR tenant_id = $2) AND ($3::text IS NULL OR topic = $3)"            \
    "  AND ($4::bool IS NULL OR (replay_count > 0) = $4)"                                          \
    "  AND ($5::text[] IS NULL OR tenant_id = ANY($5::text[]))"                                    \
    "  AND ($6::bigint IS NULL OR id < $6::bigint)"                                                \
    "  AND ($7::timestamptz IS NULL OR received_at >= $7::timestamptz)"                            \
    "  AND ($8::timestamptz IS NULL OR received_at < $8::timestamptz)"                             \
    "  AND ($9::text IS NULL OR event_type = $9)"                                                  \
    "  ORDER BY id DESC LIMIT $1::int) e"

/* $1 id, $2 token scope */
#define SQL_EVENT_ONE                                                                              \
    "SELECT row_to_json(e) FROM (SELECT " EVENT_COLUMNS " FROM event_journal"                      \
    " WHERE id = $1::bigint AND ($2::text[] IS NULL OR tenant_id = ANY($2::text[]))) e"

/* $1 id, $2 token scope. Ancestors root first; descendants by depth. Depth is bounded so
 * that a forged marker making a cycle cannot loop. ancestor_gone: the parent the oldest
 * ancestor found points at, when the journal no longer holds it (retention dropped it). */
#define SQL_EVENT_LINEAGE                                                                          \
    "WITH RECURSIVE up AS ("                                                                       \
    " SELECT " EVENT_COLUMNS ", 0 AS depth FROM event_journal WHERE id = $1::bigint"               \
    "  AND ($2::text[] IS NULL OR tenant_id = ANY($2::text[]))"                                    \
    " UNION ALL"                                                                                   \
    " SELECT p.id, p.tenant_id, p.event_type, p.topic, p.kafka_partition, p.kafka_offset,"         \
    "  p.event_key, p.headers, p.payload, p.received_at, p.replay_count, p.replay_source,"         \
    "  p.replayed_from_event_id, p.replay_job_id, p.replayed_from_dlq_id, p.replay_verified,"      \
    "  p.kafka_timestamp, up.depth - 1"                                                            \
    " FROM event_journal p JOIN up ON p.id = up.replayed_from_event_id"                            \
    " WHERE up.depth > -100 AND ($2::text[] IS NULL OR p.tenant_id = ANY($2::text[]))"             \
    "), down AS ("                                                                                 \
    " SELECT id, 0 AS depth FROM up WHERE depth = 0"                                               \
    " UNION ALL"                                                                                   \
    " SELECT c.id, down.depth + 1 FROM event_journal c JOIN down"                                  \
    "  ON c.replayed_from_event_id = down.id WHERE down.depth < 100"                               \
    "  AND ($2::text[] IS NULL OR c.tenant_id = ANY($2::text[]))"                                  \
    ")"                                                                                            \
    " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM up WHERE depth = 0) THEN NULL ELSE"               \
    " json_build_object('event_id', $1::bigint,"                                                   \
    "  'event', (SELECT row_to_json(u) FROM up u WHERE depth = 0),"                                \
    "  'ancestors', coalesce((SELECT json_agg(u ORDER BY u.depth) FROM up u"                       \
    "   WHERE u.depth < 0), '[]'),"                                                                \
    "  'ancestor_gone', (SELECT u.replayed_from_event_id FROM up u"                                \
    "   WHERE u.depth = (SELECT min(depth) FROM up) AND u.replayed_from_event_id IS NOT NULL"      \
    "   AND NOT EXISTS (SELECT 1 FROM event_journal g WHERE g.id = u.replayed_from_event_id)),"    \
    "  'descendants', coalesce((SELECT json_agg(x ORDER BY x.depth, x.id) FROM"                    \
    "   (SELECT " EVENT_COLUMNS ", d.depth FROM event_journal j JOIN down d USING (id)"            \
    "    WHERE d.depth > 0) x), '[]')) END"

#define DLQ_COLUMNS                                                                                \
    "id, topic, kafka_partition, kafka_offset, event_key, headers, raw_payload, reason,"           \
    " error, policy_version, tenant_id, event_type, attempts, status, created_at,"                 \
    " last_attempt_at,"                                                                            \
    " next_attempt_at, resolved_event_id,"                                                         \
    " CASE WHEN octet_length(raw_payload) <= 65536 THEN"                                           \
    "  encode(raw_payload, 'base64') END AS raw_payload_base64"

/* $1 limit, $2 status, $3 reason, $4 topic, $5 tenant, $6 token scope, $7 before_id */
#define SQL_DLQ_LIST                                                                               \
    "SELECT json_build_object('entries', coalesce(json_agg(d ORDER BY d.id DESC), '[]'))"          \
    " FROM (SELECT " DLQ_COLUMNS " FROM dead_letter_queue"                                         \
    "  WHERE ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR reason = $3)"              \
    "  AND ($4::text IS NULL OR topic = $4) AND ($5::text IS NULL OR tenant_id = $5)"              \
    "  AND ($6::text[] IS NULL OR tenant_id = ANY($6::text[]))"                                    \
    "  AND ($7::bigint IS NULL OR id < $7::bigint)"                                                \
    "  ORDER BY id DESC LIMIT $1::int) d"

/* $1 id, $2 token scope */
#define SQL_DLQ_ONE                                                                                \
    "SELECT row_to_json(d) FROM (SELECT " DLQ_COLUMNS " FROM dead_letter_queue"                    \
    " WHERE id = $1::bigint AND ($2::text[] IS NULL OR tenant_id = ANY($2::text[]))) d"

#define SQL_PING "SELECT 1"

/* GET /stats: $1 window (s), $2 bin (s), $3 token scope. Non-empty bins, oldest first.
 * Also what the status page needs to know whether its lists changed (it fetches them only
 * then): the newest journal id and replay id, and a version of the replay jobs that moves
 * with any job's creation, progress or end. The service's health is added by h_stats. */
/* clang-format off */
#define SQL_STATS \
    "SELECT json_build_object('now', now(), 'window_s', $1::int, 'bin_s', $2::int," \
    " 'events', (SELECT json_build_object('bins', coalesce(json_agg(json_build_object(" \
    "   't', to_timestamp(b), 'original', o, 'replayed', r) ORDER BY b), '[]')," \
    "   'original', coalesce(sum(o), 0), 'replayed', coalesce(sum(r), 0))" \
    "  FROM (SELECT floor(extract(epoch FROM received_at) / $2::int) * $2::int AS b," \
    "   count(*) FILTER (WHERE replay_count = 0) AS o," \
    "   count(*) FILTER (WHERE replay_count > 0) AS r" \
    "   FROM event_journal WHERE received_at >= now() - make_interval(secs => $1::int)" \
    "   AND ($3::text[] IS NULL OR tenant_id = ANY($3::text[])) GROUP BY 1) x)," \
    " 'dlq', (SELECT coalesce(json_agg(json_build_object('reason', reason, 'status', status," \
    "   'count', n) ORDER BY reason, status), '[]')" \
    "  FROM (SELECT reason, status, count(*) AS n FROM dead_letter_queue" \
    "   WHERE ($3::text[] IS NULL OR tenant_id = ANY($3::text[])) GROUP BY 1, 2) d)," \
    " 'journal', json_build_object(" \
    "  'latest_id', (SELECT max(id) FROM event_journal" \
    "   WHERE ($3::text[] IS NULL OR tenant_id = ANY($3::text[])))," \
    "  'latest_replay_id', (SELECT max(id) FROM event_journal WHERE replay_count > 0" \
    "   AND ($3::text[] IS NULL OR tenant_id = ANY($3::text[]))))," \
    " 'jobs', (SELECT json_build_object('active', count(*) FILTER (WHERE status IN" \
    "   ('pending', 'running')), 'version', concat_ws(':', max(id), count(*) FILTER (WHERE" \
    "   status IN ('pending', 'running')), sum(succeeded + failed) FILTER (WHERE status IN" \
    "   ('pending', 'running')), extract(epoch FROM max(finished_at))))" \
    "  FROM replay_jobs WHERE ($3::text[] IS NULL OR (params ? 'scope' AND ARRAY(SELECT" \
    "   jsonb_array_elements_text(params->'scope')) <@ $3::text[]))))"
/* clang-format on */

#endif
