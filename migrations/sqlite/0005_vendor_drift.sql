-- 5: the vendor drift report (GET /v1/admin/drift): per source and vendor event, fields the
-- schema does not declare, unknown enum values and degraded descriptive fields, aggregated.
-- At most a fixed number of rows per source (drift::MAX_ROWS_PER_SOURCE) plus one overflow
-- row; `value` is '' unless the row is an unknown value (a unique key holds no NULL).
CREATE TABLE drift (
    source       TEXT    NOT NULL,
    vendor_event TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    value        TEXT    NOT NULL,
    count        INTEGER NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    example      TEXT    NOT NULL,
    PRIMARY KEY (source, vendor_event, kind, path, value)
) WITHOUT ROWID;
CREATE INDEX drift_last_seen ON drift (last_seen);
