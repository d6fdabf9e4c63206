-- 4: readiness writes a real row (with a page of padding) instead of an empty transaction,
-- so a full disk or a read-only file makes `/readyz` fail, not only a held lock.
CREATE TABLE health (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    at    INTEGER NOT NULL,
    probe BLOB    NOT NULL
);
