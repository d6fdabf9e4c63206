-- `call.completed`, as SQLite's migration 8: `completed_at` set in the transaction that stores
-- the call's `call.completed`, `late` the canonical types accepted after it (comma-separated),
-- and the calls that ended before this release counted as completed (no flood on upgrade).
SET LOCAL lock_timeout = '2s';

ALTER TABLE calls ADD COLUMN completed_at bigint;
ALTER TABLE calls ADD COLUMN late text;
UPDATE calls SET completed_at = terminal_at WHERE terminal_at IS NOT NULL;
CREATE INDEX calls_settling ON calls (terminal_at) WHERE completed_at IS NULL;
