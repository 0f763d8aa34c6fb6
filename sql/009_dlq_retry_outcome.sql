-- What became of a retried DLQ entry. Kafka taking the retry is not the outcome: the
-- consumer reads it back and either resolves the entry or counts one more failed attempt.
-- A job item of a DLQ retry is 'sent' once Kafka took it; `outcome` is what the consumer
-- then did (written in the consumer's own transaction), and only that counts as the job's
-- success or failure. The consumer writes the item only, never the job row (so that it
-- cannot deadlock with the replay worker, which writes items then jobs); the worker folds
-- the outcomes into the job's counts (`outcome_counted`) and closes the job once every
-- outcome is in.
ALTER TABLE replay_job_items
    ADD COLUMN outcome text CHECK (outcome IN ('resolved', 'failed_again', 'no_outcome')),
    ADD COLUMN outcome_counted boolean NOT NULL DEFAULT false;

-- Items sent before this migration: their jobs counted them already.
UPDATE replay_job_items i SET outcome_counted = true,
       outcome = CASE WHEN d.status = 'resolved' THEN 'resolved' ELSE 'no_outcome' END
  FROM dead_letter_queue d
 WHERE i.dlq_id = d.id AND i.status = 'sent';

-- The consumer finds the item of a retry by its DLQ entry; the worker finds, by job, the
-- retries still to settle (sent, outcome not yet counted) and those that came back before
-- their acknowledgement was recorded (still pending, with an outcome).
CREATE INDEX replay_job_items_dlq ON replay_job_items (dlq_id) WHERE dlq_id IS NOT NULL;
CREATE INDEX replay_job_items_unsettled ON replay_job_items (job_id)
    WHERE status = 'sent' AND dlq_id IS NOT NULL AND NOT outcome_counted;
CREATE INDEX replay_job_items_back ON replay_job_items (job_id)
    WHERE status = 'pending' AND outcome IS NOT NULL;
