-- A DLQ entry keeps the event type the describe hook decided, as it keeps the tenant: a
-- record whose route hook raised is still found by tenant and type.
ALTER TABLE dead_letter_queue ADD COLUMN event_type text;
