-- eventsink schema, version 4: an Idempotency-Key remembers which request it was used
-- for, so that the same key sent with another request is refused rather than answered
-- with the first request's result.
ALTER TABLE replay_idempotency ADD COLUMN request text;
