-- What became of a retried DLQ entry. Kafka taking the retry is not the outcome: the
-- consumer reads it back and either resolves the entry or counts one more failed attempt.
-- A job item of a DLQ retry is 'sent' once Kafka took it; `outcome` records what the
-- consumer then did, and only that counts as the job's success or failure.
ALTER TABLE replay_job_items ADD COLUMN outcome text
    CHECK (outcome IN ('resolved', 'failed_again', 'no_outcome'));

-- Items sent before this migration: their jobs counted them already.
UPDATE replay_job_items i SET outcome = CASE WHEN d.status = 'resolved' THEN 'resolved'
                                             ELSE 'no_outcome' END
  FROM dead_letter_queue d
 WHERE i.dlq_id = d.id AND i.status = 'sent';

-- The consumer finds the item of a retry by its DLQ entry; the worker finds the items
-- still awaiting an outcome by job.
CREATE INDEX replay_job_items_dlq ON replay_job_items (dlq_id) WHERE dlq_id IS NOT NULL;
CREATE INDEX replay_job_items_awaiting ON replay_job_items (job_id)
    WHERE status = 'sent' AND dlq_id IS NOT NULL AND outcome IS NULL;
