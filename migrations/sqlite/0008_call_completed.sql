-- 8: `call.completed`. A call is completed once (its `call.completed` stored in the same
-- transaction as `completed_at`); a piece accepted after that is noted in `late` (canonical
-- types, comma-separated, in acceptance order). The sweeper finds the calls still settling
-- through `calls_settling`. Calls that ended before this release count as completed: an
-- upgrade does not emit a `call.completed` for every call ever stored.
ALTER TABLE calls ADD COLUMN completed_at INTEGER;
ALTER TABLE calls ADD COLUMN late TEXT;
UPDATE calls SET completed_at = terminal_at WHERE terminal_at IS NOT NULL;
CREATE INDEX calls_settling ON calls (terminal_at) WHERE completed_at IS NULL;
