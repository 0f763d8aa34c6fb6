-- eventsink schema, version 3: automated DLQ retries, schedules and signed webhooks.

-- The dlq_retry hook has decided about the entry's current attempt (next_attempt_at set,
-- or auto_retry_stopped when it gave up). A retry that fails again clears it.
ALTER TABLE dead_letter_queue ADD COLUMN retry_decided boolean NOT NULL DEFAULT false;
ALTER TABLE dead_letter_queue ADD COLUMN auto_retry_stopped boolean NOT NULL DEFAULT false;
CREATE INDEX dead_letter_queue_undecided ON dead_letter_queue (id)
    WHERE status = 'pending' AND NOT retry_decided;

-- One row per schedule tick that ran (or was the baseline of a new schedule): the primary
-- key is what makes a tick run once across instances.
CREATE TABLE schedule_runs (
    name       text        NOT NULL,
    tick       timestamptz NOT NULL,
    job_id     bigint,
    note       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, tick)
);

-- Signatures of accepted webhook calls: a repeated signature is refused, across restarts
-- and instances.
CREATE TABLE webhook_signatures (
    signature   text        PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    job_id      bigint
);
