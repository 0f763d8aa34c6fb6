/* SQL of the replay engine. Markers of journal events are added by PostgreSQL (jsonb ||);
 * keys travel as hex so that any bytes survive the round trip, headers as the journal's
 * jsonb text (values that are not UTF-8 are kept there as "\x<hex>"). */
#ifndef EVENTSINK_REPLAY_SQL_H
#define EVENTSINK_REPLAY_SQL_H

/* text that may be "\x<hex>" (see record_text) back to its bytes, as hex */
#define SQL_BYTES_HEX(col)                                                                         \
    "CASE WHEN " col " ~ '^\\\\x([0-9a-f]{2})*$' THEN substr(" col ", 3)"                          \
    " ELSE encode(convert_to(" col ", 'UTF8'), 'hex') END"

#define SQL_MARKER_KEYS "ARRAY['_replayed_from_event_id', '_replay_source', '_replay_job_id']"

/* The pending items of job $1 (at most $2), with what to produce for each. The items are
 * chosen first (the pending index, in seq order): joined and computed only for the chunk,
 * not for every pending item of a large job before the LIMIT.
 * $3 replay source tag. Columns: seq, event_id, dlq_id, topic, key hex, headers (jsonb
 * text, read by parse_headers() in replay.c),
 * payload (journal: an object with older markers gets them replaced here, jsonb ||), raw
 * hex (DLQ), replay_count (journal), unknown, DLQ status, and whether the payload is an
 * object without markers (replay.c adds them before its closing brace, which costs
 * PostgreSQL nothing). */
/* clang-format off */
#define SQL_REPLAY_ITEMS \
    "SELECT i.seq, i.event_id, i.dlq_id, coalesce(j.topic, d.topic)," \
    " CASE WHEN j.id IS NOT NULL THEN " SQL_BYTES_HEX("j.event_key") \
    "  ELSE " SQL_BYTES_HEX("d.event_key") " END," \
    " CASE WHEN j.id IS NOT NULL THEN j.headers::text ELSE d.headers::text END," \
    " CASE WHEN jsonb_typeof(j.payload) = 'object' AND j.payload ?| " SQL_MARKER_KEYS \
    "  THEN (j.payload || jsonb_build_object('_replayed_from_event_id', j.id," \
    "  '_replay_source', $3::text, '_replay_job_id', $1::bigint))::text" \
    "  ELSE j.payload::text END," \
    " encode(d.raw_payload, 'hex'), j.replay_count, j.id IS NULL AND d.id IS NULL," \
    " d.status," \
    " jsonb_typeof(j.payload) = 'object' AND NOT j.payload ?| " SQL_MARKER_KEYS \
    " FROM (SELECT seq, event_id, dlq_id FROM replay_job_items" \
    "  WHERE job_id = $1::bigint AND status = 'pending' AND outcome IS NULL" \
    "  ORDER BY seq LIMIT $2::int) i" \
    " LEFT JOIN event_journal j ON j.id = i.event_id" \
    " LEFT JOIN dead_letter_queue d ON d.id = i.dlq_id" \
    " ORDER BY i.seq"
/* clang-format on */

/* Outcome of a chunk: $1 job, $2 seq[], $3 status[], $4 error[], $5 topic[], $6 partition[],
 * $7 offset[]. Updates the items and the job's counts in one statement. A DLQ retry that
 * Kafka took is not yet a success: it counts once the consumer has read it back and
 * resolved the entry (SQL_JOURNAL_INSERT_RESOLVE; failed again: SQL_DLQ_INSERT). */
#define SQL_REPLAY_ITEMS_DONE                                                                      \
    "WITH r AS (SELECT * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[],"               \
    "  $6::int[], $7::bigint[]) AS r(seq, status, error, topic, part, off)),"                      \
    " upd AS (UPDATE replay_job_items i SET"                                                       \
    "  status = CASE WHEN i.outcome IS NOT NULL THEN 'sent' ELSE r.status END, error = r.error,"   \
    "  kafka_topic = r.topic, kafka_partition = r.part, kafka_offset = r.off,"                     \
    "  sent_at = CASE WHEN r.status = 'sent' THEN now() END"                                       \
    "  FROM r WHERE i.job_id = $1::bigint AND i.seq = r.seq AND i.status = 'pending'"              \
    "  RETURNING i.status, i.dlq_id),"                                                             \
    " dlq_failed AS (UPDATE dead_letter_queue d SET retry_decided = false,"                        \
    "  status = CASE WHEN d.status = 'retrying' THEN 'pending' ELSE d.status END"                  \
    "  FROM upd WHERE upd.status = 'failed' AND d.id = upd.dlq_id"                                 \
    "  AND d.status IN ('pending', 'retrying') RETURNING d.id)"                                    \
    " UPDATE replay_jobs SET"                                                                      \
    "  succeeded = succeeded + (SELECT count(*) FROM upd WHERE status = 'sent'"                    \
    "   AND dlq_id IS NULL),"                                                                      \
    "  failed = failed + (SELECT count(*) FROM upd WHERE status = 'failed'),"                      \
    "  heartbeat_at = now()"                                                                       \
    " WHERE id = $1::bigint RETURNING succeeded, failed, total, status"

/* The items of job $1 that Kafka may have written (pending with an error, replay.c
 * resolve_unknown) and that the journal holds: counted sent, with the journal row's
 * position (a DLQ retry found there was counted when it resolved its entry). Returns how
 * many. Only verified replays carry a job id (replay_auth.h). */
#define SQL_REPLAY_ITEMS_FOUND                                                                     \
    "WITH u AS MATERIALIZED (SELECT seq, event_id, dlq_id FROM replay_job_items"                   \
    "  WHERE job_id = $1::bigint AND status = 'pending' AND error IS NOT NULL),"                   \
    " f AS (SELECT u.seq, j.topic, j.kafka_partition, j.kafka_offset FROM u"                       \
    "  JOIN event_journal j ON j.replay_job_id = $1::bigint"                                       \
    "   AND j.replayed_from_event_id = u.event_id"                                                 \
    "  UNION ALL SELECT u.seq, j.topic, j.kafka_partition, j.kafka_offset FROM u"                  \
    "  JOIN event_journal j ON j.replay_job_id = $1::bigint"                                       \
    "   AND j.replayed_from_dlq_id = u.dlq_id),"                                                   \
    " upd AS (UPDATE replay_job_items i SET status = 'sent', error = NULL,"                        \
    "  kafka_topic = f.topic, kafka_partition = f.kafka_partition,"                                \
    "  kafka_offset = f.kafka_offset, sent_at = now()"                                             \
    "  FROM f WHERE i.job_id = $1::bigint AND i.seq = f.seq AND i.status = 'pending'"              \
    "  RETURNING i.dlq_id),"                                                                       \
    " job AS (UPDATE replay_jobs SET succeeded = succeeded"                                        \
    "  + (SELECT count(*) FROM upd WHERE dlq_id IS NULL)"                                          \
    "  WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM upd) RETURNING 1)"                          \
    " SELECT count(*) FROM upd"

/* Before DLQ entries are produced again: $1 ids. Marked first, so that a retry that comes
 * back and fails before the producer's acknowledgement is recorded puts the entry back
 * to pending rather than the other way round. */
#define SQL_DLQ_MARK_RETRYING                                                                      \
    "UPDATE dead_letter_queue SET status = 'retrying', last_attempt_at = now()"                    \
    " WHERE id = ANY($1::bigint[]) AND status = 'pending'"

/* A DLQ retry Kafka took whose outcome is not yet counted in its job (the index
 * replay_job_items_unsettled holds exactly these). */
#define UNSETTLED "status = 'sent' AND dlq_id IS NOT NULL AND NOT outcome_counted"

/* How long a job waits for the consumer to read its DLQ retries back. */
#define REPLAY_OUTCOME_WAIT_S "120"

/* Before a chunk of job $1: DLQ retries that came back before their acknowledgement was
 * recorded (a slow or unknown answer) are sent, and never produced again. */
#define SQL_REPLAY_ITEMS_BACK                                                                       \
    "UPDATE replay_job_items SET status = 'sent', error = NULL, sent_at = coalesce(sent_at, now())" \
    " WHERE job_id = $1::bigint AND status = 'pending' AND outcome IS NOT NULL"

/* The outcomes of job $1's DLQ retries that the consumer recorded, counted in the job once
 * each; retries sent longer ago than REPLAY_OUTCOME_WAIT_S without one count as failed,
 * with why (the entry stays as the consumer left it). Items first, then the job: the
 * order SQL_REPLAY_ITEMS_DONE takes its locks in. */
#define SQL_REPLAY_OUTCOMES_FOLD                                                                   \
    "WITH x AS (UPDATE replay_job_items SET outcome_counted = true,"                               \
    "  outcome = coalesce(outcome, 'no_outcome'),"                                                 \
    "  error = CASE WHEN outcome IS NULL THEN 'Kafka took the retry, but the consumer did not'"    \
    "   || ' read it back within " REPLAY_OUTCOME_WAIT_S " s' ELSE error END"                      \
    "  WHERE job_id = $1::bigint AND " UNSETTLED " AND (outcome IS NOT NULL"                       \
    "   OR sent_at < now() - interval '" REPLAY_OUTCOME_WAIT_S " seconds')"                        \
    "  RETURNING outcome)"                                                                         \
    " UPDATE replay_jobs SET"                                                                      \
    "  succeeded = succeeded + (SELECT count(*) FROM x WHERE outcome = 'resolved'),"               \
    "  failed = failed + (SELECT count(*) FROM x WHERE outcome <> 'resolved')"                     \
    " WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM x)"

/* Closes a job once nothing is pending and every DLQ retry's outcome is counted: $1 job. */
#define SQL_REPLAY_JOB_FINISH                                                                      \
    "UPDATE replay_jobs SET status = CASE WHEN failed > 0 AND succeeded = 0 AND total > 0"         \
    "  THEN 'failed' ELSE 'done' END, finished_at = now()"                                         \
    " WHERE id = $1::bigint AND status IN ('pending', 'running')"                                  \
    "  AND NOT EXISTS (SELECT 1 FROM replay_job_items WHERE job_id = $1::bigint"                   \
    "  AND (status = 'pending' OR (" UNSETTLED "))) RETURNING status, kind"

#endif
