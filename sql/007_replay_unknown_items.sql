-- Replay items Kafka may have written (a produce without a definite answer) stay pending
-- with an error; each chunk of their job first looks them up in the journal
-- (SQL_REPLAY_ITEMS_FOUND). This index holds only those, so the lookup costs nothing when
-- there are none.
CREATE INDEX replay_job_items_unknown ON replay_job_items (job_id)
    WHERE status = 'pending' AND error IS NOT NULL;
