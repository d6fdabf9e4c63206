-- 5: the delivery log. Every attempt is kept for the retention, successes and test sends
-- included, with what the log lists it by: its route, its event (`event_seq`; a test send has
-- no stored event and keeps its own `event_id`, `type` and `subject`), its outcome (`success`,
-- `failed`, `dead`) and whether it was a test. A test send has no delivery: `delivery_id`
-- becomes nullable, so the table is rebuilt (SQLite cannot drop a NOT NULL in place).
CREATE TABLE attempts_v5 (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER,                    -- the outbox id; NULL for a test send
    route       TEXT    NOT NULL,
    event_seq   INTEGER,                    -- NULL for a test send
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,           -- success | failed | dead
    test        INTEGER NOT NULL DEFAULT 0,
    status      INTEGER,
    error       TEXT,
    response    TEXT,
    duration_ms INTEGER NOT NULL,
    event_id    TEXT,                       -- test sends only
    type        TEXT,                       -- test sends only
    subject     TEXT                        -- test sends only
);
-- Before this version only failed attempts were kept; the last one of a dead letter is its
-- `dead` attempt. An attempt whose delivery is gone (delivered since) keeps an empty route:
-- it was past anything the log lists and is pruned with its time.
INSERT INTO attempts_v5 (id, delivery_id, route, event_seq, attempt, at, outcome, status, error, response, duration_ms)
    SELECT a.id, a.delivery_id,
           COALESCE(o.route, d.route, ''),
           COALESCE(o.event_seq, d.event_seq),
           a.attempt, a.at,
           CASE WHEN d.id IS NOT NULL AND a.attempt = d.attempts THEN 'dead' ELSE 'failed' END,
           a.status, a.error, a.response, a.duration_ms
      FROM attempts a
      LEFT JOIN outbox o ON o.id = a.delivery_id
      LEFT JOIN dead_letters d ON d.id = a.delivery_id;
DROP TABLE attempts;
ALTER TABLE attempts_v5 RENAME TO attempts;
-- Every index here takes its rows in (nearly) increasing order, so a commit writes the few
-- pages at their ends. The log of a route, newest first; an event's attempts (events/{id},
-- a dead letter's detail, and pruning, which keeps an event while its log does); the retention.
-- `attempts_delivery` goes: a delivery's attempts are found through its event.
CREATE INDEX attempts_route ON attempts (route, id);
CREATE INDEX attempts_event ON attempts (event_seq, id);
CREATE INDEX attempts_at ON attempts (at);
-- `GET /v1/admin/events/{id}` finds an event by its id. A plain index on the id (dropped by
-- migration 2) puts each new event on a random page: it cost a quarter of ingest throughput.
-- Keyed first by `seq >> 10` (buckets of 1024 consecutive events), new keys land in the last
-- few pages; a lookup probes each bucket, newest first (one index seek per 1024 events).
CREATE INDEX events_id ON events (seq >> 10, id);
