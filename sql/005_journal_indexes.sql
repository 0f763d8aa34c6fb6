-- eventsink schema, version 5: fewer index insertions per journal row.
-- The topic index is covered by the unique (topic, kafka_partition, kafka_offset) index,
-- whose first column is the topic. The replay_count index only needs the replays: queries
-- for originals (replay_count = 0) read most of the table anyway.
DROP INDEX IF EXISTS event_journal_topic;
DROP INDEX IF EXISTS event_journal_replay_count;
CREATE INDEX event_journal_replay_count ON event_journal (replay_count) WHERE replay_count > 0;
