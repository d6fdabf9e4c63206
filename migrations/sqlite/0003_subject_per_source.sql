-- 3: subjects are `{source}:{call_id}` instead of `{vendor}:{call_id}` (canonical.md §2), so
-- two sources of one vendor never share a call's queue. The old prefix is the vendor name,
-- which has no `:` (call ids may), so the call id is everything after the first `:`. Only
-- rows whose subject changes are touched: with sources named after their vendor, none.
-- `json_replace` edits the stored event's `subject` in place, keeping key order and every
-- other byte (a test checks the result against what this version emits).
UPDATE events
   SET subject = p.source || substr(events.subject, instr(events.subject, ':')),
       body = CASE WHEN json_valid(events.body)
                   THEN json_replace(events.body, '$.subject', p.source || substr(events.subject, instr(events.subject, ':')))
                   ELSE events.body END
  FROM payloads p
 WHERE p.id = events.payload_id
   AND instr(events.subject, ':') > 0
   AND p.source || substr(events.subject, instr(events.subject, ':')) <> events.subject;
UPDATE outbox SET subject = e.subject FROM events e WHERE e.seq = outbox.event_seq AND e.subject <> outbox.subject;
UPDATE dead_letters SET subject = e.subject FROM events e WHERE e.seq = dead_letters.event_seq AND e.subject <> dead_letters.subject;
-- A retry of one source's event pushed back the waiting events of the other sources that
-- shared its old subject. An event not yet attempted now waits only for the retries ahead of
-- it in its own queue (never later than before; its arrival time is the floor, as at ingest).
-- Only rows not yet attempted change and only attempted rows are read, so the result does not
-- depend on the order SQLite updates in.
UPDATE outbox
   SET next_at = MIN(next_at, MAX(
           COALESCE((SELECT p.received_at FROM events e JOIN payloads p ON p.id = e.payload_id WHERE e.seq = outbox.event_seq), next_at),
           COALESCE((SELECT MAX(a.next_at) FROM outbox a INDEXED BY outbox_subject
                      WHERE a.route = outbox.route AND a.subject = outbox.subject AND a.id < outbox.id AND a.attempts > 0), 0)))
 WHERE attempts = 0;
