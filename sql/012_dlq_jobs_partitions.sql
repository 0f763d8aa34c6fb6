-- eventsink schema, version 12: the DLQ and the replay jobs over years (CONTRACT 9.5), the
-- treatment the journal got in version 11.
--
-- Partitioned by month (UTC) of created_at: the DLQ by its entry's, replay_jobs by its
-- job's, and what grows with a job by its job's too (replay_job_items: one row per replayed
-- event; journal_replay_copies: one per copy journaled), so that a job, its items and its
-- copies are in partitions of the same month. Retention (retention.c) drops a month whole
-- once everything in it is past retention.dlq / retention.jobs: a DROP TABLE, nothing left
-- to vacuum. A month that still holds an entry or job to keep (a DLQ entry still pending,
-- a job still running) stays; what in it is past retention goes row by row, so the bloat
-- of such a DELETE lives at most as long as its month partition.
--
-- A unique index over partitions must hold the partition key. The DLQ's Kafka position is
-- therefore no longer unique: like the journal's, a record's second copy is kept out by the
-- sink's position (sink_offsets, the fence of version 11), which the DLQ's writes share
-- with the journal's. Ids stay unique (identity), the (job, event) claims of
-- journal_replay_copies stay unique (a job's rows are all in one partition).

-- ---- partitions by month, for any table partitioned by a timestamptz column ----------------

-- The partitions of eventsink's partitioned tables, with their bounds (a default one has
-- none).
CREATE VIEW eventsink_partition_bounds AS
SELECT p.relname::text AS parent,
       c.relname::text AS name,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz
           AS lower,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
           AS upper
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
  JOIN pg_class p ON p.oid = i.inhparent
 WHERE p.relkind = 'p' AND p.relnamespace = c.relnamespace
   AND p.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema());

-- The partition <parent>_pYYYY_MM of the month (UTC) holding `at`, on column `col`, created
-- when missing; rows of that month in the default partition <parent>_default move into it.
-- Returns its name when it was created, else NULL.
CREATE FUNCTION eventsink_month_partition(parent text, col text, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    hi   timestamp := date_trunc('month', at AT TIME ZONE 'UTC') + interval '1 month';
    name text := parent || '_p' || to_char(lo, 'YYYY_MM');
    dflt text := parent || '_default';
    lo_z text := to_char(lo, 'YYYY-MM-DD') || ' 00:00:00+00';
    hi_z text := to_char(hi, 'YYYY-MM-DD') || ' 00:00:00+00';
    held boolean;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= %L AND %I < %L)',
                   dflt, col, lo_z, col, hi_z) INTO held;
    IF NOT held THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       name, parent, lo_z, hi_z);
        RETURN name;
    END IF;
    -- rows of the month wait in the default partition: a table of their own first, the
    -- rows moved, then attached (the default partition must not hold rows of the range).
    -- Readers wait meanwhile: a query planned before the attach and run after the move
    -- would see the rows in neither place.
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent);
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   name, parent);
    EXECUTE format('WITH m AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *)'
                   ' INSERT INTO %I SELECT * FROM m', dflt, col, lo_z, col, hi_z, name);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, name, lo_z, hi_z);
    RETURN name;
END
$$;

-- The month partitions of `parent` covering [lo, hi] that are missing; how many were made.
CREATE FUNCTION eventsink_month_partitions(parent text, col text, lo timestamptz,
                                           hi timestamptz) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    m timestamp := date_trunc('month', lo AT TIME ZONE 'UTC');
    n int := 0;
BEGIN
    WHILE m <= hi AT TIME ZONE 'UTC' LOOP
        IF eventsink_month_partition(parent, col, m AT TIME ZONE 'UTC') IS NOT NULL THEN
            n := n + 1;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN n;
END
$$;

-- The journal's functions of version 11, now the general ones (same names, same results).
CREATE OR REPLACE FUNCTION eventsink_journal_partition(at timestamptz) RETURNS text
LANGUAGE sql AS $$ SELECT eventsink_month_partition('event_journal', 'received_at', at) $$;
CREATE OR REPLACE FUNCTION eventsink_journal_partitions(lo timestamptz, hi timestamptz)
RETURNS int
LANGUAGE sql AS $$ SELECT eventsink_month_partitions('event_journal', 'received_at', lo, hi) $$;

-- The partitions of the DLQ, replay_jobs and what belongs to jobs, for this month and the
-- next two (maintenance in retention.c calls it at start and hourly).
CREATE FUNCTION eventsink_partitions_ahead() RETURNS int
LANGUAGE sql AS $$
SELECT eventsink_month_partitions('dead_letter_queue', 'created_at', now(),
                                  now() + interval '2 months')
     + eventsink_month_partitions('replay_jobs', 'created_at', now(), now() + interval '2 months')
     + eventsink_month_partitions('replay_job_items', 'created_at', now(),
                                  now() + interval '2 months')
     + eventsink_month_partitions('journal_replay_copies', 'job_created_at', now(),
                                  now() + interval '2 months')
     + eventsink_month_partitions('event_journal', 'received_at', now(),
                                  now() + interval '2 months')
$$;

-- ---- the DLQ -------------------------------------------------------------------------------
CREATE TABLE dead_letter_queue_new (
    LIKE dead_letter_queue INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE dead_letter_queue_default PARTITION OF dead_letter_queue_new DEFAULT;

-- ---- replay jobs, their items, their journaled copies --------------------------------------
CREATE TABLE replay_jobs_new (
    LIKE replay_jobs INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE replay_jobs_default PARTITION OF replay_jobs_new DEFAULT;

-- created_at: the job's (an item is in the month partition of its job)
CREATE TABLE replay_job_items_new (
    LIKE replay_job_items INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, seq, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE replay_job_items_default PARTITION OF replay_job_items_new DEFAULT;

-- job_created_at: the job's (NULL would have no partition: a copy of a job gone with
-- retention takes the time it was journaled)
CREATE TABLE journal_replay_copies_new (
    LIKE journal_replay_copies INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    job_created_at timestamptz NOT NULL
) PARTITION BY RANGE (job_created_at);
CREATE TABLE journal_replay_copies_default PARTITION OF journal_replay_copies_new DEFAULT;

-- ---- the rows of before, copied once -------------------------------------------------------
ALTER TABLE dead_letter_queue RENAME TO dead_letter_queue_old;
ALTER TABLE dead_letter_queue_new RENAME TO dead_letter_queue;
ALTER SEQUENCE dead_letter_queue_new_id_seq RENAME TO dead_letter_queue_part_id_seq;
ALTER TABLE replay_jobs RENAME TO replay_jobs_old;
ALTER TABLE replay_jobs_new RENAME TO replay_jobs;
ALTER SEQUENCE replay_jobs_new_id_seq RENAME TO replay_jobs_part_id_seq;
ALTER TABLE replay_job_items RENAME TO replay_job_items_old;
ALTER TABLE replay_job_items_new RENAME TO replay_job_items;
ALTER TABLE journal_replay_copies RENAME TO journal_replay_copies_old;
ALTER TABLE journal_replay_copies_new RENAME TO journal_replay_copies;

SELECT eventsink_month_partition('dead_letter_queue', 'created_at', m)
  FROM (SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
          FROM dead_letter_queue_old) x;
SELECT eventsink_month_partition('replay_jobs', 'created_at', m),
       eventsink_month_partition('replay_job_items', 'created_at', m),
       eventsink_month_partition('journal_replay_copies', 'job_created_at', m)
  FROM (SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
          FROM replay_jobs_old) x;
SELECT eventsink_partitions_ahead();

INSERT INTO dead_letter_queue OVERRIDING SYSTEM VALUE SELECT * FROM dead_letter_queue_old;
SELECT setval('dead_letter_queue_part_id_seq',
              coalesce((SELECT max(id) FROM dead_letter_queue_old), 0) + 1, false);
INSERT INTO replay_jobs OVERRIDING SYSTEM VALUE SELECT * FROM replay_jobs_old;
SELECT setval('replay_jobs_part_id_seq', coalesce((SELECT max(id) FROM replay_jobs_old), 0) + 1,
              false);
INSERT INTO replay_job_items
SELECT i.*, j.created_at FROM replay_job_items_old i JOIN replay_jobs_old j ON j.id = i.job_id;
INSERT INTO journal_replay_copies
SELECT c.*, coalesce(j.created_at, c.claimed_at)
  FROM journal_replay_copies_old c LEFT JOIN replay_jobs_old j ON j.id = c.replay_job_id;
DROP TABLE journal_replay_copies_old;
DROP TABLE replay_job_items_old;
DROP TABLE replay_jobs_old;
DROP TABLE dead_letter_queue_old;
ALTER TABLE dead_letter_queue RENAME CONSTRAINT dead_letter_queue_new_pkey TO dead_letter_queue_pkey;
ALTER TABLE replay_jobs RENAME CONSTRAINT replay_jobs_new_pkey TO replay_jobs_pkey;
ALTER TABLE replay_job_items RENAME CONSTRAINT replay_job_items_new_pkey TO replay_job_items_pkey;

-- An item belongs to its job by job_id and is in its job's month; there is no foreign key:
-- maintenance moving a job out of the default partition (a DELETE there and an INSERT into
-- its month) would cascade to its items. Retention removes a job's items and copies first,
-- a month of jobs with its months of items and copies.

-- ---- the indexes of before, on every partition ---------------------------------------------
-- The Kafka position of a DLQ entry, no longer unique: the look-up below the sink's position
-- (a redelivery), the next generation of a reused position, the check on assignment.
CREATE INDEX dead_letter_queue_kafka_position ON dead_letter_queue
    (topic, kafka_partition, kafka_offset);
CREATE INDEX dead_letter_queue_status ON dead_letter_queue (status, created_at);
CREATE INDEX dead_letter_queue_reason ON dead_letter_queue (reason);
CREATE INDEX dead_letter_queue_next_attempt ON dead_letter_queue (next_attempt_at)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
CREATE INDEX dead_letter_queue_undecided ON dead_letter_queue (id)
    WHERE status = 'pending' AND NOT retry_decided;
CREATE INDEX dead_letter_queue_decided ON dead_letter_queue (decided_at)
    WHERE status IN ('resolved', 'discarded');
CREATE INDEX replay_jobs_status ON replay_jobs (status, created_at);
CREATE INDEX replay_jobs_finished ON replay_jobs (finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');
CREATE INDEX replay_job_items_pending ON replay_job_items (job_id, seq) WHERE status = 'pending';
CREATE INDEX replay_job_items_unknown ON replay_job_items (job_id)
    WHERE status = 'pending' AND error IS NOT NULL;
CREATE INDEX replay_job_items_dlq ON replay_job_items (dlq_id) WHERE dlq_id IS NOT NULL;
CREATE INDEX replay_job_items_unsettled ON replay_job_items (job_id)
    WHERE status = 'sent' AND dlq_id IS NOT NULL AND NOT outcome_counted;
CREATE INDEX replay_job_items_back ON replay_job_items (job_id)
    WHERE status = 'pending' AND outcome IS NOT NULL;
CREATE UNIQUE INDEX journal_replay_copies_event ON journal_replay_copies
    (replay_job_id, replayed_from_event_id, job_created_at) WHERE replayed_from_event_id IS NOT NULL;
CREATE UNIQUE INDEX journal_replay_copies_dlq ON journal_replay_copies
    (replay_job_id, replayed_from_dlq_id, job_created_at) WHERE replayed_from_dlq_id IS NOT NULL;
CREATE INDEX journal_replay_copies_job ON journal_replay_copies (replay_job_id);

-- ---- retention: a month dropped whole, when all of it is past retention --------------------

-- The DLQ month partition `part`: when every entry in it was resolved or discarded more than
-- `keep` ago, its number of entries, and unless `dry` it is dropped; else NULL (it stays).
CREATE FUNCTION eventsink_dlq_drop(part text, keep interval, dry boolean) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    kept boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM eventsink_partition_bounds b WHERE b.parent = 'dead_letter_queue'
                      AND b.name = part AND b.upper IS NOT NULL) THEN
        RAISE EXCEPTION 'eventsink: % is no month partition of dead_letter_queue', part;
    END IF;
    IF NOT dry THEN
        -- the DLQ's lock, then the partition's: the order of every writer (no deadlock);
        -- nobody decides an entry of it again until it is gone
        LOCK TABLE dead_letter_queue IN ACCESS EXCLUSIVE MODE;
    END IF;
    EXECUTE format('SELECT count(*), bool_or(status NOT IN (''resolved'', ''discarded'')'
                   ' OR decided_at IS NULL OR decided_at >= now() - $1) FROM %I', part)
        USING keep INTO n, kept;
    IF kept THEN
        RETURN NULL;
    END IF;
    IF NOT dry THEN
        EXECUTE format('DROP TABLE %I', part);
    END IF;
    RETURN n;
END
$$;

-- The jobs of the month partition `part` of replay_jobs: when every one of them ended more
-- than `keep` ago, (jobs, items), and unless `dry` the month is dropped (its copies, its
-- items, its jobs); else no row (it stays).
CREATE FUNCTION eventsink_jobs_drop(part text, keep interval, dry boolean)
RETURNS TABLE (jobs bigint, items bigint)
LANGUAGE plpgsql AS $$
DECLARE
    lo    timestamptz;
    sfx   text := substring(part FROM '_p[0-9]{4}_[0-9]{2}$');
    kept  boolean;
BEGIN
    SELECT b.lower INTO lo FROM eventsink_partition_bounds b
     WHERE b.parent = 'replay_jobs' AND b.name = part AND b.upper IS NOT NULL;
    IF lo IS NULL OR sfx IS NULL THEN
        RAISE EXCEPTION 'eventsink: % is no month partition of replay_jobs', part;
    END IF;
    -- the items and copies of a month's jobs only come with the jobs: counted unlocked
    IF dry THEN
        -- a dry run makes nothing: the month's items, wherever they wait
        SELECT count(*) INTO items FROM replay_job_items i
         WHERE i.created_at >= lo AND i.created_at < lo + interval '1 month';
    ELSE
        -- their months of items and copies, with what of them waits in a default partition
        PERFORM eventsink_month_partition('replay_job_items', 'created_at', lo);
        PERFORM eventsink_month_partition('journal_replay_copies', 'job_created_at', lo);
        EXECUTE format('SELECT count(*) FROM %I', 'replay_job_items' || sfx) INTO items;
    END IF;
    IF NOT dry THEN
        -- the parents' locks in the order of every writer (the consumer claims a copy, then
        -- writes an item; a worker writes items, then its job): copies, items, jobs
        LOCK TABLE journal_replay_copies, replay_job_items, replay_jobs IN ACCESS EXCLUSIVE MODE;
    END IF;
    EXECUTE format('SELECT count(*), bool_or(status NOT IN (''done'', ''failed'', ''cancelled'')'
                   ' OR finished_at IS NULL OR finished_at >= now() - $1) FROM %I', part)
        USING keep INTO jobs, kept;
    IF kept THEN
        RETURN;
    END IF;
    IF NOT dry THEN
        EXECUTE format('DROP TABLE %I', 'journal_replay_copies' || sfx);
        EXECUTE format('DROP TABLE %I', 'replay_job_items' || sfx);
        EXECUTE format('DROP TABLE %I', part);
    END IF;
    RETURN NEXT;
END
$$;
