-- 5: call records (`GET /v1/calls/{subject}`). A call's events are read by subject, and each
-- event keeps the routes it was queued for, so a delivery that left the outbox without a
-- dead letter is known to be delivered. `calls` is one summary row per subject, updated in
-- the transaction that stores the call's events: the listing pages through it (newest first
-- by `id`) and filters on its `status` without reading any event.
ALTER TABLE events ADD COLUMN routes TEXT; -- JSON array; NULL for events stored before 5
CREATE INDEX events_subject ON events (subject, seq);
CREATE TABLE calls (
    id          INTEGER PRIMARY KEY AUTOINCREMENT, -- the listing's cursor: never reused
    subject     TEXT    NOT NULL UNIQUE,
    source      TEXT    NOT NULL,
    first_at    INTEGER NOT NULL,                  -- acceptance of its first event
    last_at     INTEGER NOT NULL,                  -- acceptance of its latest event
    status      TEXT,                              -- of its last terminal event or call record
    status_seq  INTEGER,                           -- the events.seq that status came from
    terminal_at INTEGER,                           -- acceptance of its first call.ended/failed
    events      INTEGER NOT NULL
);
CREATE INDEX calls_source ON calls (source, id);
CREATE INDEX calls_status ON calls (status, id);
CREATE INDEX calls_first ON calls (first_at);
-- The calls already stored, in the order they began.
INSERT INTO calls (subject, source, first_at, last_at, status, status_seq, terminal_at, events)
SELECT e.subject, MIN(p.source), MIN(p.received_at), MAX(p.received_at),
       (SELECT json_extract(s.body, '$.data.status') FROM events s
         WHERE s.subject = e.subject AND s.type IN ('call.ended', 'call.failed', 'call.cdr')
           AND json_valid(s.body) ORDER BY s.seq DESC LIMIT 1),
       (SELECT MAX(s.seq) FROM events s
         WHERE s.subject = e.subject AND s.type IN ('call.ended', 'call.failed', 'call.cdr')
           AND json_valid(s.body)),
       MIN(CASE WHEN e.type IN ('call.ended', 'call.failed') THEN p.received_at END),
       COUNT(*)
  FROM events e JOIN payloads p ON p.id = e.payload_id
 GROUP BY e.subject
 ORDER BY MIN(e.seq);
