-- eventsink schema, version 11: the journal over years (CONTRACT 9.5).
--
-- The journal is partitioned by month of received_at (UTC), PostgreSQL's declarative
-- partitioning, so that dropping a month of history is a DROP TABLE, not a DELETE. A
-- default partition takes rows of a month that has no partition yet (a backfill of any
-- date works); maintenance (retention.c, at start and hourly) creates the coming months
-- and moves such rows to their month.
--
-- A unique index over partitions must hold the partition key, so (topic, partition,
-- offset) can no longer be unique by itself. What it did:
--   * the redelivery check: sink_offsets below, the sink's own position per Kafka
--     partition, written in each batch's transaction and locked by it (the fence); a
--     record below it is looked up in the journal, one at or above it cannot be stored;
--   * one copy of a job's replay of an event: journal_replay_copies below, narrow and
--     unique, claimed in the statement that journals the copy.
-- This migration copies the journal once into the new table.

-- ---- the sink's own position in each Kafka partition --------------------------------------
CREATE TABLE sink_offsets (
    topic           text        NOT NULL,
    kafka_partition int         NOT NULL,
    -- every record of the partition the sink stored has an offset below this
    next_offset     bigint      NOT NULL,
    -- next_offset before the last batch: what that batch looked records up against
    checked_below   bigint,
    -- one more for each batch that moved it: a batch that saw it change while it wrote
    -- checks its rows for a copy another writer stored meanwhile (fence.c)
    version         bigint      NOT NULL DEFAULT 0,
    -- the record at the highest offset stored: the consumer checks it on assignment, also
    -- once retention dropped its journal row
    last_offset     bigint,
    last_key        text,
    last_timestamp  timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);

-- ---- one journal row per (job, replayed event) --------------------------------------------
CREATE TABLE journal_replay_copies (
    replay_job_id          bigint      NOT NULL,
    replayed_from_event_id bigint,
    replayed_from_dlq_id   bigint,
    claimed_at             timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX journal_replay_copies_event ON journal_replay_copies
    (replay_job_id, replayed_from_event_id) WHERE replayed_from_event_id IS NOT NULL;
CREATE UNIQUE INDEX journal_replay_copies_dlq ON journal_replay_copies
    (replay_job_id, replayed_from_dlq_id) WHERE replayed_from_dlq_id IS NOT NULL;
CREATE INDEX journal_replay_copies_job ON journal_replay_copies (replay_job_id);

INSERT INTO journal_replay_copies (replay_job_id, replayed_from_event_id, replayed_from_dlq_id)
SELECT DISTINCT ON (replay_job_id, replayed_from_event_id, replayed_from_dlq_id)
       replay_job_id, replayed_from_event_id, replayed_from_dlq_id
  FROM event_journal WHERE replay_job_id IS NOT NULL
ON CONFLICT DO NOTHING;

-- the positions of what is stored already, journal and DLQ (a backfill's partition -1
-- is no Kafka partition)
INSERT INTO sink_offsets (topic, kafka_partition, next_offset, last_offset, last_key,
                          last_timestamp)
SELECT DISTINCT ON (topic, kafka_partition) topic, kafka_partition, kafka_offset + 1,
       kafka_offset, event_key, kafka_timestamp
  FROM (SELECT topic, kafka_partition, kafka_offset, event_key, kafka_timestamp
          FROM event_journal WHERE kafka_partition >= 0
        UNION ALL
        SELECT topic, kafka_partition, kafka_offset, event_key, kafka_timestamp
          FROM dead_letter_queue WHERE kafka_partition >= 0) s
 ORDER BY topic, kafka_partition, kafka_offset DESC;

-- ---- the partitioned journal ----------------------------------------------------------------
-- the columns of today's journal (and any CHECK constraint an operator added), keyed by
-- id and the partition key
CREATE TABLE event_journal_new (
    LIKE event_journal INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE TABLE event_journal_default PARTITION OF event_journal_new DEFAULT;

-- The partitions, with their bounds (the default one has none).
CREATE VIEW event_journal_partitions AS
SELECT c.relname::text AS name,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz
           AS lower,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
           AS upper
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'event_journal_new'::regclass;

-- The partition of the month (UTC) holding `at`, created when missing; rows of that month
-- in the default partition move into it. Returns its name when it was created, else NULL.
CREATE FUNCTION eventsink_journal_partition(at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    hi   timestamp := date_trunc('month', at AT TIME ZONE 'UTC') + interval '1 month';
    name text := 'event_journal_p' || to_char(lo, 'YYYY_MM');
    lo_z text := to_char(lo, 'YYYY-MM-DD') || ' 00:00:00+00';
    hi_z text := to_char(hi, 'YYYY-MM-DD') || ' 00:00:00+00';
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM event_journal_default
                    WHERE received_at >= lo_z::timestamptz AND received_at < hi_z::timestamptz)
    THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF event_journal FOR VALUES FROM (%L) TO (%L)',
                       name, lo_z, hi_z);
        RETURN name;
    END IF;
    -- rows of the month wait in the default partition: a table of their own first, the
    -- rows moved, then attached (the default partition must not hold rows of the range).
    -- Readers wait meanwhile: a query planned before the attach and run after the move
    -- would see the rows in neither place. A backfill avoids this by calling
    -- eventsink_journal_partitions() first (docs/OPERATOR_QUICKREF.md).
    LOCK TABLE event_journal IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE event_journal INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   name);
    EXECUTE format('WITH m AS (DELETE FROM event_journal_default WHERE received_at >= %L'
                   ' AND received_at < %L RETURNING *) INSERT INTO %I SELECT * FROM m',
                   lo_z, hi_z, name);
    EXECUTE format('ALTER TABLE event_journal ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, lo_z, hi_z);
    RETURN name;
END
$$;

-- The month partitions covering [lo, hi] that are missing; how many were created.
CREATE FUNCTION eventsink_journal_partitions(lo timestamptz, hi timestamptz) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    m timestamp := date_trunc('month', lo AT TIME ZONE 'UTC');
    n int := 0;
BEGIN
    WHILE m <= hi AT TIME ZONE 'UTC' LOOP
        IF eventsink_journal_partition(m AT TIME ZONE 'UTC') IS NOT NULL THEN
            n := n + 1;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN n;
END
$$;

-- the months of the rows there are, and this month and the next two
ALTER TABLE event_journal RENAME TO event_journal_old;
ALTER TABLE event_journal_new RENAME TO event_journal;
ALTER SEQUENCE event_journal_new_id_seq RENAME TO event_journal_part_id_seq;
SELECT eventsink_journal_partition(m)
  FROM (SELECT DISTINCT date_trunc('month', received_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
          FROM event_journal_old
        UNION SELECT now() UNION SELECT now() + interval '1 month'
        UNION SELECT now() + interval '2 months') x;
INSERT INTO event_journal OVERRIDING SYSTEM VALUE SELECT * FROM event_journal_old;
SELECT setval('event_journal_part_id_seq', coalesce((SELECT max(id) FROM event_journal_old), 0) + 1,
              false);
DROP TABLE event_journal_old;
ALTER TABLE event_journal RENAME CONSTRAINT event_journal_new_pkey TO event_journal_pkey;

-- The indexes of before, on every partition. The Kafka position is no longer unique: it
-- serves the look-up below the sink's position and the consumer's check on assignment.
CREATE INDEX event_journal_kafka_position ON event_journal
    (topic, kafka_partition, kafka_offset);
CREATE INDEX event_journal_tenant_received ON event_journal (tenant_id, received_at);
-- replay_count beside the time: a range replay's count of originals over a day reads the
-- index only, not a day of rows (the bench's range dry run on 20,000,000 rows)
CREATE INDEX event_journal_received ON event_journal (received_at) INCLUDE (replay_count);
CREATE INDEX event_journal_replay_count ON event_journal (replay_count) WHERE replay_count > 0;
CREATE INDEX event_journal_replayed_from ON event_journal (replayed_from_event_id)
    WHERE replayed_from_event_id IS NOT NULL;
CREATE INDEX event_journal_replay_job ON event_journal (replay_job_id)
    WHERE replay_job_id IS NOT NULL;
CREATE INDEX event_journal_replayed_from_dlq ON event_journal (replayed_from_dlq_id)
    WHERE replayed_from_dlq_id IS NOT NULL;

-- Retention (retention.c): the rows of a partition, and a partition dropped whole (never
-- the default one) with how many rows it held. A name that is no partition of the journal
-- is refused.
CREATE FUNCTION eventsink_journal_partition_rows(part text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM event_journal_partitions p WHERE p.name = part) THEN
        RAISE EXCEPTION 'eventsink: % is no partition of event_journal', part;
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', part) INTO n;
    RETURN n;
END
$$;

CREATE FUNCTION eventsink_journal_drop(part text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM event_journal_partitions p
                    WHERE p.name = part AND p.upper IS NOT NULL) THEN
        RAISE EXCEPTION 'eventsink: % is no month partition of event_journal', part;
    END IF;
    -- counted before the drop, which takes its locks itself (the journal's, then the
    -- partition's: the order of every reader, so no deadlock); a row a backfill adds to
    -- that old month in between goes uncounted
    n := eventsink_journal_partition_rows(part);
    EXECUTE format('DROP TABLE %I', part);
    RETURN n;
END
$$;
