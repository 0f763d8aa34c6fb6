-- eventsink schema, version 2: replay job items, idempotency keys, and the journal indexes
-- that make a replay land at most once per job.

-- One row per event (or DLQ entry) a job replays, created with the job: a job that is
-- interrupted resumes at its first item still pending.
CREATE TABLE replay_job_items (
    job_id          bigint      NOT NULL REFERENCES replay_jobs (id) ON DELETE CASCADE,
    seq             int         NOT NULL,
    event_id        bigint,
    dlq_id          bigint,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
    error           text,
    kafka_topic     text,
    kafka_partition int,
    kafka_offset    bigint,
    sent_at         timestamptz,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX replay_job_items_pending ON replay_job_items (job_id, seq) WHERE status = 'pending';

-- A job replays each event once: if a resumed job produces an event again, the second copy
-- is recognised when it comes back and is not journaled twice.
CREATE UNIQUE INDEX event_journal_replay_once ON event_journal (replay_job_id, replayed_from_event_id)
    WHERE replay_job_id IS NOT NULL AND replayed_from_event_id IS NOT NULL;
CREATE UNIQUE INDEX event_journal_dlq_retry_once ON event_journal (replay_job_id, replayed_from_dlq_id)
    WHERE replay_job_id IS NOT NULL AND replayed_from_dlq_id IS NOT NULL;
CREATE INDEX event_journal_replayed_from_dlq ON event_journal (replayed_from_dlq_id)
    WHERE replayed_from_dlq_id IS NOT NULL;

-- Idempotency-Key of POST /replay/{id}: the first answer, returned again for a retry.
CREATE TABLE replay_idempotency (
    requested_by text        NOT NULL,
    key          text        NOT NULL,
    status       int         NOT NULL,
    response     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (requested_by, key)
);

ALTER TABLE replay_jobs ADD COLUMN error text;
ALTER TABLE replay_jobs ADD COLUMN claimed_by text;
ALTER TABLE replay_jobs ADD COLUMN heartbeat_at timestamptz;
