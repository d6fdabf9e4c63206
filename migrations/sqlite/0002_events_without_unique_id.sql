-- 2: event ids lose their UNIQUE index. An id is derived from (source, body digest, index),
-- so `payloads (source, digest)` already makes it unique; the index only added a random-page
-- write per event to every commit, and nothing looks events up by id.
CREATE TABLE events_v2 (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL,
    payload_id INTEGER NOT NULL REFERENCES payloads (id),
    type       TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    body       TEXT    NOT NULL
);
INSERT INTO events_v2 (seq, id, payload_id, type, subject, body)
    SELECT seq, id, payload_id, type, subject, body FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_payload ON events (payload_id);
