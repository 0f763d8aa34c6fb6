-- eventsink schema, version 6: authentic replay markers and the Kafka timestamp of each row
-- (CONTRACT 9.2).

-- true: the replay markers were produced and signed by this deployment and verified when the
-- record came back; false: markers anyone could have written; null: an original (and the
-- rows journaled before this migration).
ALTER TABLE event_journal ADD COLUMN replay_verified boolean;
-- the record's Kafka timestamp (null for rows journaled before this migration)
ALTER TABLE event_journal ADD COLUMN kafka_timestamp timestamptz;

-- The keys that sign replay markers (x-replay-signature). The newest key not retired signs;
-- every key not retired verifies. Rotate: INSERT INTO replay_keys DEFAULT VALUES; once the
-- replays signed with the old key have landed, UPDATE replay_keys SET retired_at = now()
-- WHERE id = <old>. The instances pick up a new key by themselves.
CREATE TABLE replay_keys (
    id         int         GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 256 bits from PostgreSQL's strong random source (gen_random_uuid)
    secret     bytea       NOT NULL DEFAULT decode(replace(gen_random_uuid()::text
                                                            || gen_random_uuid()::text, '-', ''),
                                                    'hex'),
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
INSERT INTO replay_keys DEFAULT VALUES;

-- Reused Kafka positions: a topic deleted and created again, a new cluster, an offset reset
-- or the demo's embedded cluster hand out offsets that the journal (or the DLQ) already
-- holds, for other records. Such a record is journaled at the next generation of its
-- position instead of being taken for a redelivery; a redelivery (the same timestamp, key
-- and payload as a row at the position) stays a no-op.
ALTER TABLE event_journal ADD COLUMN kafka_generation int NOT NULL DEFAULT 0;
ALTER TABLE event_journal DROP CONSTRAINT event_journal_kafka_position;
ALTER TABLE event_journal ADD CONSTRAINT event_journal_kafka_position
    UNIQUE (topic, kafka_partition, kafka_offset, kafka_generation);
ALTER TABLE dead_letter_queue ADD COLUMN kafka_timestamp timestamptz;
ALTER TABLE dead_letter_queue ADD COLUMN kafka_generation int NOT NULL DEFAULT 0;
ALTER TABLE dead_letter_queue DROP CONSTRAINT dead_letter_queue_kafka_position;
ALTER TABLE dead_letter_queue ADD CONSTRAINT dead_letter_queue_kafka_position
    UNIQUE (topic, kafka_partition, kafka_offset, kafka_generation);
