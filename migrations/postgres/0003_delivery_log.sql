-- The delivery log (SQLite migration 5): every attempt is kept for the retention, successes
-- and test sends included, with its route, its event (`event_seq`; a test send has no stored
-- event and keeps its own `event_id`, `type` and `subject`), its outcome (`success`, `failed`,
-- `dead`) and whether it was a test. A test send has no delivery: `delivery_id` is nullable.
SET LOCAL lock_timeout = '2s';

ALTER TABLE attempts
    ALTER COLUMN delivery_id DROP NOT NULL,
    ADD COLUMN route     text,
    ADD COLUMN event_seq bigint,
    ADD COLUMN outcome   text,
    ADD COLUMN test      boolean NOT NULL DEFAULT false,
    ADD COLUMN event_id  text,
    ADD COLUMN type      text,
    ADD COLUMN subject   text;

-- Before this version only failed attempts were kept; the last one of a dead letter is its
-- `dead` attempt. An attempt whose delivery is gone keeps an empty route (pruned with its time).
UPDATE attempts a
   SET route = COALESCE((SELECT o.route FROM outbox o WHERE o.id = a.delivery_id),
                        (SELECT d.route FROM dead_letters d WHERE d.id = a.delivery_id), ''),
       event_seq = COALESCE((SELECT o.event_seq FROM outbox o WHERE o.id = a.delivery_id),
                            (SELECT d.event_seq FROM dead_letters d WHERE d.id = a.delivery_id)),
       outcome = CASE WHEN EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = a.delivery_id AND d.attempts = a.attempt)
                      THEN 'dead' ELSE 'failed' END;

ALTER TABLE attempts
    ALTER COLUMN route SET NOT NULL,
    ALTER COLUMN outcome SET NOT NULL;

-- As on SQLite: indexes whose new keys arrive in (nearly) increasing order. A delivery's
-- attempts are found through its event; events by id through buckets of 1024 events
-- (`seq >> 10`), newest first, instead of a random-key index on the id.
DROP INDEX attempts_delivery;
CREATE INDEX attempts_route ON attempts (route, id);
CREATE INDEX attempts_event ON attempts (event_seq, id);
CREATE INDEX events_id ON events ((seq >> 10), id);
