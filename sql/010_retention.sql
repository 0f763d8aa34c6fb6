-- Retention (retention.dlq, retention.jobs). A DLQ entry's age for retention is the time it
-- was decided (resolved or discarded), not its arrival: `decided_at`. Older entries have
-- none; their last attempt or arrival stands in.
ALTER TABLE dead_letter_queue ADD COLUMN decided_at timestamptz;
UPDATE dead_letter_queue SET decided_at = coalesce(last_attempt_at, created_at)
 WHERE status IN ('resolved', 'discarded');

-- what retention looks for, without reading every row
CREATE INDEX dead_letter_queue_decided ON dead_letter_queue (decided_at)
    WHERE status IN ('resolved', 'discarded');
CREATE INDEX replay_jobs_finished ON replay_jobs (finished_at)
    WHERE status IN ('done', 'failed', 'cancelled');
