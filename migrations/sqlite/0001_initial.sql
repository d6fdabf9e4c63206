CREATE TABLE payloads (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    digest      BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    event_ids   TEXT    NOT NULL,
    UNIQUE (source, digest)
);
CREATE INDEX payloads_received ON payloads (received_at);
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    payload_id INTEGER NOT NULL REFERENCES payloads (id),
    type       TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    body       TEXT    NOT NULL
);
CREATE INDEX events_payload ON events (payload_id);
CREATE TABLE outbox (
    id        INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: attempts and dead letters keep it
    event_seq INTEGER NOT NULL REFERENCES events (seq),
    route     TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 0,
    next_at   INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (route, next_at, id);
-- Per-call lookups go through this index: the planner, left alone, answers
-- MAX(next_at) for one call by walking `outbox_due`, i.e. the whole route's backlog.
CREATE INDEX outbox_subject ON outbox (route, subject, id);
CREATE INDEX outbox_event ON outbox (event_seq);
CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY,
    event_seq  INTEGER NOT NULL REFERENCES events (seq),
    route      TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    dead_at    INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX dead_letters_route ON dead_letters (route, id);
CREATE INDEX dead_letters_event ON dead_letters (event_seq);
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    response    TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);
CREATE INDEX attempts_at ON attempts (at);
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    vendor      TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    status      INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    details     TEXT    NOT NULL,
    body        BLOB    NOT NULL
);
CREATE INDEX quarantine_received ON quarantine (received_at);
CREATE TABLE paused_routes (
    route  TEXT    PRIMARY KEY,
    since  INTEGER NOT NULL,
    reason TEXT    NOT NULL
);
