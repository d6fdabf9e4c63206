-- The vendor drift report (GET /v1/admin/drift), as SQLite's migration 5: per source and
-- vendor event, fields the schema does not declare, unknown enum values and degraded
-- descriptive fields, aggregated; every replica adds to the same rows.
SET LOCAL lock_timeout = '2s';

CREATE TABLE drift (
    source       text   NOT NULL,
    vendor_event text   NOT NULL,
    kind         text   NOT NULL,
    path         text   NOT NULL,
    value        text   NOT NULL,           -- '' unless an unknown value
    count        bigint NOT NULL,
    first_seen   bigint NOT NULL,
    last_seen    bigint NOT NULL,
    example      text   NOT NULL,
    PRIMARY KEY (source, vendor_event, kind, path, value)
);
CREATE INDEX drift_last_seen ON drift (last_seen);
