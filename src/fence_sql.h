/* SQL of the sink's own position in each Kafka partition (sink_offsets, migration 011):
 * the fence that keeps a record from being journaled twice now that the journal's Kafka
 * position cannot be a unique index (the journal is partitioned by time). See db_fence.h. */
#ifndef EVENTSINK_FENCE_SQL_H
#define EVENTSINK_FENCE_SQL_H

/* $1 topics, $2 partitions -> ord, next_offset, version (NULL when the partition has no
 * row yet). Read without a lock at the start of a batch. */
#define SQL_FENCE_READ                                                                             \
    "SELECT t.ord, s.next_offset, s.version"                                                       \
    " FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS t(topic, kafka_partition, ord)"        \
    " LEFT JOIN sink_offsets s USING (topic, kafka_partition)"

/* $1 topics, $2 partitions, $3 the batch's highest offset in each, $4 that record's key,
 * $5 its Kafka timestamp (ms) -> ord, version after, next_offset before (NULL: new row).
 * Locks the rows, in one order for every writer, until the batch's transaction ends. */
#define SQL_FENCE_ADVANCE                                                                          \
    "INSERT INTO sink_offsets AS s (topic, kafka_partition, next_offset, version,"                 \
    "  last_offset, last_key, last_timestamp, updated_at)"                                         \
    " SELECT t.topic, t.kafka_partition, t.last_offset + 1, 1, t.last_offset, t.last_key,"         \
    "  'epoch'::timestamptz + t.ts_ms * interval '1 millisecond', now()"                           \
    " FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::bigint[])"                  \
    "  AS t(topic, kafka_partition, last_offset, last_key, ts_ms)"                                 \
    " ORDER BY t.topic, t.kafka_partition"                                                         \
    " ON CONFLICT (topic, kafka_partition) DO UPDATE SET"                                          \
    "  next_offset = greatest(s.next_offset, EXCLUDED.next_offset), version = s.version + 1,"      \
    "  checked_below = s.next_offset, last_offset = EXCLUDED.last_offset,"                         \
    "  last_key = EXCLUDED.last_key, last_timestamp = EXCLUDED.last_timestamp, updated_at = now()" \
    " RETURNING s.topic, s.kafka_partition, s.version, s.checked_below"

/* $1 topics, $2 partitions, $3 offsets, $4 keys, $5 Kafka timestamps (ms): whether the
 * journal and the DLQ together hold any of these records twice (this batch's row and
 * another's). */
#define SQL_FENCE_CHECK                                                                             \
    "SELECT EXISTS (SELECT 1"                                                                       \
    " FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::bigint[])"                   \
    "  AS p(topic, kafka_partition, kafka_offset, event_key, ts_ms)"                                \
    " WHERE (SELECT count(*) FROM event_journal j WHERE j.topic = p.topic"                          \
    "  AND j.kafka_partition = p.kafka_partition AND j.kafka_offset = p.kafka_offset"               \
    "  AND j.event_key IS NOT DISTINCT FROM p.event_key AND j.kafka_timestamp IS NOT DISTINCT FROM" \
    "  'epoch'::timestamptz + p.ts_ms * interval '1 millisecond')"                                  \
    "  + (SELECT count(*) FROM dead_letter_queue d WHERE d.topic = p.topic"                         \
    "  AND d.kafka_partition = p.kafka_partition AND d.kafka_offset = p.kafka_offset"               \
    "  AND d.event_key IS NOT DISTINCT FROM p.event_key AND d.kafka_timestamp IS NOT DISTINCT FROM" \
    "  'epoch'::timestamptz + p.ts_ms * interval '1 millisecond') > 1)"

#endif
