-- eventsink schema, version 1: the event journal, the dead-letter queue and replay jobs.
-- Applied by `eventsink migrate` (and at start-up) inside one transaction, under an advisory lock.

CREATE TABLE event_journal (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id              text        NOT NULL,
    event_type             text,
    topic                  text        NOT NULL,
    kafka_partition        int         NOT NULL,
    kafka_offset           bigint      NOT NULL,
    event_key              text,
    headers                jsonb,
    payload                jsonb       NOT NULL,
    received_at            timestamptz NOT NULL DEFAULT now(),
    replay_count           int         NOT NULL DEFAULT 0,
    replay_source          text,
    replayed_from_event_id bigint,
    replay_job_id          bigint,
    replayed_from_dlq_id   bigint,
    CONSTRAINT event_journal_kafka_position UNIQUE (topic, kafka_partition, kafka_offset)
);

CREATE INDEX event_journal_tenant_received ON event_journal (tenant_id, received_at);
CREATE INDEX event_journal_received ON event_journal (received_at);
CREATE INDEX event_journal_replay_count ON event_journal (replay_count);
CREATE INDEX event_journal_topic ON event_journal (topic);
CREATE INDEX event_journal_replayed_from ON event_journal (replayed_from_event_id)
    WHERE replayed_from_event_id IS NOT NULL;
CREATE INDEX event_journal_replay_job ON event_journal (replay_job_id)
    WHERE replay_job_id IS NOT NULL;

CREATE TABLE dead_letter_queue (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic             text        NOT NULL,
    kafka_partition   int         NOT NULL,
    kafka_offset      bigint      NOT NULL,
    event_key         text,
    headers           jsonb,
    raw_payload       bytea,
    reason            text        NOT NULL,
    error             text,
    policy_version    int,
    tenant_id         text,
    attempts          int         NOT NULL DEFAULT 0,
    status            text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'retrying', 'resolved', 'discarded')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_attempt_at   timestamptz,
    next_attempt_at   timestamptz,
    resolved_event_id bigint,
    -- the Kafka position of the last retry of this entry that came back and failed again,
    -- so that a redelivered retry does not count as a second attempt
    last_retry_topic     text,
    last_retry_partition int,
    last_retry_offset    bigint,
    CONSTRAINT dead_letter_queue_kafka_position UNIQUE (topic, kafka_partition, kafka_offset)
);

CREATE INDEX dead_letter_queue_status ON dead_letter_queue (status, created_at);
CREATE INDEX dead_letter_queue_reason ON dead_letter_queue (reason);
CREATE INDEX dead_letter_queue_next_attempt ON dead_letter_queue (next_attempt_at)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;

CREATE TABLE replay_jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL
                  CHECK (kind IN ('single', 'batch', 'range', 'scheduled', 'dlq_retry', 'webhook')),
    replay_source text        NOT NULL,
    requested_by  text,
    reason        text,
    params        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    total         int         NOT NULL DEFAULT 0,
    succeeded     int         NOT NULL DEFAULT 0,
    failed        int         NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
);

CREATE INDEX replay_jobs_status ON replay_jobs (status, created_at);
