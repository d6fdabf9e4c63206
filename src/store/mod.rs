//! The durable store: accepted payloads, their canonical events, the delivery outbox, dead
//! letters and the quarantine of rejected payloads.
//!
//! Ingress and delivery see only the [`Store`] trait; SQLite ([`sqlite::SqliteStore`]) is the
//! embedded backend. The contract holds for several gateway processes sharing one database:
//! deliveries are *claimed* with a [`Lease`] that every [`Outcome`] presents (an expired lease
//! is taken over by the next claim, and an outcome whose lease was taken over is dropped),
//! wake-ups travel as [`Notice`]s from the store, pause state lives in the store, and every
//! time is passed in.
//!
//! **Invariant:** [`Store::ingest`] returns only after the payload, its events and their
//! deliveries are committed and synced to disk — the ingress answers 200 on that promise.
//! **Invariant:** for one (route, subject), at most one delivery is leased at a time, and it is
//! the oldest one still in the outbox: a call's events go out in acceptance order.

pub mod erase;
pub mod migrate;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod test_support;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use async_trait::async_trait;

/// Milliseconds since the Unix epoch: the store's only time unit.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// An accepted payload and everything it produced, written in one transaction.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub source: String,
    /// SHA-256 of the raw body: the redelivery key together with `source`.
    pub digest: [u8; 32],
    pub body: Vec<u8>,
    pub received_at: Millis,
    pub events: Vec<NewEvent>,
}

/// One canonical event to store, with the routes it must be delivered to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub kind: String,
    pub subject: String,
    /// The canonical CloudEvent as JSON: sent as is, or trimmed at send time for a route
    /// with `omit` or `mask_numbers` (this stays whole).
    pub json: String,
    pub routes: Vec<String>,
    /// The canonical `status` of a terminal event or call record (`call.ended`,
    /// `call.failed`, `call.cdr`): the call's summary row keeps the last one accepted.
    pub status: Option<&'static str>,
}

/// Canonical types whose acceptance ends a call (its summary's `terminal_at`).
pub const TERMINAL_TYPES: &[&str] = &["call.ended", "call.failed"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored now; the canonical ids.
    Accepted(Vec<String>),
    /// The same body from the same source was accepted before; its original ids.
    Duplicate(Vec<String>),
}

/// A rejected payload kept for inspection and replay.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub source: String,
    pub vendor: String,
    pub received_at: Millis,
    /// HTTP status it was rejected with (400, 422).
    pub status: u16,
    /// Machine-readable reason (`invalid_json`, `schema_violation`, `unknown_event`).
    pub reason: String,
    /// JSON array of `{path, message}`.
    pub details: String,
    pub body: Vec<u8>,
}

/// The proof that a claim handed a delivery to this worker; its outcome presents it. A lease
/// that expired (its holder died or hung) is taken over by a later claim with a new token,
/// and the old holder's outcome is then dropped (the delivery may go out twice: at least once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease(pub i64);

impl Lease {
    /// A fresh random token.
    pub fn new() -> Lease {
        Lease(fastrand::i64(1..i64::MAX))
    }
}

impl Default for Lease {
    fn default() -> Self {
        Lease::new()
    }
}

/// A claimed delivery: one event for one route, leased to the claimer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub route: String,
    pub event_id: String,
    pub subject: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub json: String,
    pub lease: Lease,
}

/// What [`Store::claim`] found.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub deliveries: Vec<Delivery>,
    /// The route is paused (by a 410 or an operator, on any replica): nothing was claimed.
    pub paused: bool,
}

/// What the store tells every delivery worker, in this process and (for a shared database)
/// in the other replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Deliveries of this route may have become claimable: new events, a replay, a resume,
    /// or the head of a call finished so its followers may go.
    Due(String),
    /// The route was paused (`true`) or resumed (`false`).
    Paused { route: String, paused: bool },
    /// Notices may have been missed (a lagging subscriber, a lost connection): look at every
    /// route again.
    Lost,
}

/// What a store that several processes share relays between their live tails (`tail.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailFeed {
    /// A payload that some process (this one included) gave [`Store::send_tail`].
    Payload(Arc<str>),
    /// Payloads may have been missed (the listening connection was lost and made again).
    Lost,
}

/// Longest payload [`Store::send_tail`] takes: PostgreSQL's `NOTIFY` carries at most 8000
/// bytes, and the sender's mark goes in front.
pub const TAIL_PAYLOAD_MAX: usize = 7800;

/// What one attempt found, kept in the delivery log (successes included).
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub at: Millis,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The first bytes of the response body (none when it was empty).
    pub response: Option<String>,
    pub duration_ms: i64,
}

/// How an attempt of a claimed delivery ended, as the store records it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The delivery (outbox id).
    pub id: i64,
    /// The lease its claim handed out.
    pub lease: Lease,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone)]
pub enum OutcomeKind {
    /// 2xx. `recovered`: the route had been failing; its waiting retries fall due now.
    Delivered {
        recovered: bool,
        attempt: Attempt,
    },
    Retry {
        next_at: Millis,
        attempt: Attempt,
    },
    Dead {
        attempt: Attempt,
    },
    /// 410 Gone: the route asked us to stop. The delivery stays queued and the route is
    /// paused until an operator resumes it.
    Gone {
        attempt: Attempt,
    },
}

/// What [`Store::complete`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completed {
    /// Outcomes dropped because their lease had expired and been taken over.
    pub stale: usize,
}

/// How an attempt in the delivery log ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogOutcome {
    /// A 2xx answer.
    Success,
    /// Anything else; the delivery was retried (or is waiting for a resume after a 410).
    Failed,
    /// The last attempt of a delivery that was dead-lettered.
    Dead,
}

impl LogOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LogOutcome::Success => "success",
            LogOutcome::Failed => "failed",
            LogOutcome::Dead => "dead",
        }
    }

    /// The stored text; anything unknown reads as `failed`.
    pub fn parse(text: &str) -> LogOutcome {
        match text {
            "success" => LogOutcome::Success,
            "dead" => LogOutcome::Dead,
            _ => LogOutcome::Failed,
        }
    }
}

/// One attempt in the delivery log: a delivery's (`delivery_id`) or a test send's.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    pub id: i64,
    pub route: String,
    /// The outbox id of the delivery; `None` for a test send.
    pub delivery_id: Option<i64>,
    pub event_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub subject: Option<String>,
    pub attempt: i64,
    pub outcome: LogOutcome,
    /// A test send (`POST /v1/admin/routes/{name}/test`), never a delivery.
    pub test: bool,
    pub at: String,
    pub status: Option<u16>,
    pub duration_ms: i64,
    /// The first bytes of the response body.
    pub response: Option<String>,
    pub error: Option<String>,
}

/// Which delivery log entries to list (newest first).
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub route: Option<String>,
    /// Only attempts at or after this time.
    pub since: Option<Millis>,
    /// Only ids below this (pagination).
    pub before_id: Option<i64>,
    pub subject: Option<String>,
    pub outcome: Option<LogOutcome>,
    /// Only test sends (`true`) or only deliveries (`false`).
    pub test: Option<bool>,
    pub limit: Option<usize>,
}

/// A test send to keep in the delivery log.
#[derive(Debug, Clone)]
pub struct TestSend {
    pub route: String,
    pub event_id: String,
    pub kind: String,
    pub subject: String,
    pub success: bool,
    pub attempt: Attempt,
}

/// Where one route's delivery of an event stands, as the tables tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// In the outbox, not attempted yet: waiting for its time (`next_at`) or for the call's
    /// earlier events.
    Pending,
    /// In the outbox after a failed attempt, waiting for its retry (`next_at`).
    Retrying,
    /// Leased to a worker (of any replica) that is sending it now.
    InFlight,
    /// In the outbox of a paused route: it goes when the route is resumed.
    Paused,
    /// A 2xx was recorded.
    Delivered,
    /// Dead-lettered: waits for a replay.
    Dead,
}

/// One route's delivery of an event, with its attempts (oldest first).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RouteDelivery {
    pub route: String,
    pub delivery_id: i64,
    pub state: DeliveryState,
    /// Attempts made so far (since the last replay, while it is in the outbox).
    pub attempts: i64,
    /// When a pending delivery is due next.
    pub next_at: Option<String>,
    /// Until when an in-flight delivery is leased.
    pub lease_until: Option<String>,
    pub attempts_log: Vec<LogEntry>,
}

/// One stored canonical event and each route's delivery of it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EventDetail {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub received_at: String,
    /// The canonical CloudEvent, as stored.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    pub deliveries: Vec<RouteDelivery>,
}

/// A dead-lettered delivery, as listed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The delivery's id (kept when it is replayed).
    pub id: i64,
    pub route: String,
    /// The CloudEvent's `id`.
    pub event_id: String,
    /// The CloudEvent's `type` (`call.ended`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The CloudEvent's `subject`: the call.
    pub subject: String,
    /// Attempts made.
    pub attempts: i64,
    /// RFC 3339 time it was dead-lettered.
    pub dead_at: String,
    /// What the last attempt found (status, error or response), if recorded.
    pub last_error: Option<String>,
}

/// One recorded attempt of a delivery.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: i64,
    /// RFC 3339 time of the attempt.
    pub at: String,
    /// The HTTP status the route answered, if it answered.
    pub status: Option<u16>,
    /// Why the attempt failed without an answer (timeout, connection refused, …).
    pub error: Option<String>,
    /// The first bytes of the answer's body.
    pub response: Option<String>,
    pub duration_ms: i64,
}

/// A dead letter with its event and every attempt.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub summary: DeadLetter,
    /// The canonical CloudEvent, as stored.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// Every recorded attempt, oldest first.
    pub attempts_log: Vec<AttemptRecord>,
}

/// A quarantined payload, as listed (`body` only in detail).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QuarantineItem {
    pub id: i64,
    /// The source it was posted to.
    pub source: String,
    /// The source's vendor.
    pub vendor: String,
    /// RFC 3339 time it arrived.
    pub received_at: String,
    /// The HTTP status it was rejected with (400, 422).
    pub status: u16,
    /// Machine-readable reason (`invalid_json`, `schema_violation`, `unknown_event`).
    pub reason: String,
    /// The problems found, each located by a JSON pointer.
    #[schema(value_type = Vec<crate::vendors::Violation>)]
    pub details: serde_json::Value,
    /// The body as received (lossy UTF-8); only when one item is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Which dead letters or quarantined payloads an operation applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub id: Option<i64>,
    /// Route (dead letters) or source (quarantine).
    pub name: Option<String>,
    /// Only those at or after this time.
    pub since: Option<Millis>,
    /// Only ids below this (pagination, newest first).
    pub before_id: Option<i64>,
    /// Only ids above this (pagination, oldest first).
    pub after_id: Option<i64>,
    pub limit: Option<usize>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: usize,
    pub payloads: usize,
    pub attempts: usize,
    pub quarantine: usize,
    /// Drift report rows not seen since the retention.
    pub drift: usize,
    /// Call summaries whose events are all gone.
    pub calls: usize,
}

/// A paused route and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pause {
    pub route: String,
    pub since: String,
    pub reason: String,
}

/// A call as the store summarises it at ingest (the `calls` row, one per subject, updated in
/// the transaction that stores the call's events).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CallSummary {
    /// Increases with the call's first acceptance: the listing's cursor.
    pub id: i64,
    pub subject: String,
    pub source: String,
    /// When its first and latest events were accepted.
    pub first_at: String,
    pub last_at: String,
    /// The `status` of its last accepted terminal event or call record; `None` while none
    /// came (`in_progress`).
    pub status: Option<String>,
    /// When its first `call.ended` / `call.failed` was accepted.
    pub terminal_at: Option<String>,
    /// Events accepted for it (its `call.completed` included).
    pub events: i64,
    /// When its `call.completed` was stored (for a call that ended before callgate emitted
    /// `call.completed`, its `terminal_at`).
    pub completed_at: Option<String>,
    /// Canonical types of the events accepted after it was completed, in acceptance order.
    pub late: Vec<String>,
}

/// `calls.late` as stored (comma-separated types) as a list.
pub(crate) fn late_list(text: Option<String>) -> Vec<String> {
    text.map(|t| t.split(',').filter(|k| !k.is_empty()).map(str::to_owned).collect()).unwrap_or_default()
}

/// The types of `events` that are late for a call completed before them (every one but
/// `call.completed` itself), comma-separated; `None` when there is none.
pub(crate) fn late_text<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let kinds: Vec<&str> = kinds.into_iter().filter(|k| *k != COMPLETED_TYPE).collect();
    (!kinds.is_empty()).then(|| kinds.join(","))
}

/// Most bytes of `calls.late` that more late types are appended to: a call id that keeps
/// getting events after its call was completed (reused by a vendor or in tests) stops growing
/// its summary row there (the first ~200 late types are kept).
pub const LATE_MAX_BYTES: usize = 4096;

/// The canonical type of a call's completion record.
pub const COMPLETED_TYPE: &str = "call.completed";

/// Which calls [`Store::calls`] lists.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub source: Option<String>,
    /// Only calls first accepted at or after this time.
    pub since: Option<Millis>,
    pub status: Option<CallStatus>,
    /// Only ids below this (pagination, newest first).
    pub before_id: Option<i64>,
    pub limit: Option<usize>,
}

/// The status filter of a call listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallStatus {
    /// No terminal event yet.
    InProgress,
    /// This canonical status (`completed`, `no_answer`…).
    Is(String),
}

/// Most events [`Store::call`] returns for one call (the rest are not read).
pub const CALL_EVENTS_MAX: usize = 5_000;
/// Most bytes of stored event JSON [`Store::call`] returns for one call: it stops before the
/// event that would pass this (the first event always comes), so one answer stays bounded
/// however large a call's transcripts grew.
pub const CALL_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How many of a call's events (given their JSON sizes in acceptance order) fit in one
/// answer: at most [`CALL_EVENTS_MAX`], and [`CALL_BYTES_MAX`] bytes, but at least one.
pub(crate) fn events_that_fit(sizes: impl IntoIterator<Item = usize>) -> usize {
    let (mut n, mut total) = (0, 0usize);
    for size in sizes {
        total = total.saturating_add(size);
        if n == CALL_EVENTS_MAX || (n > 0 && total > CALL_BYTES_MAX) {
            break;
        }
        n += 1;
    }
    n
}

/// One stored event of a call.
#[derive(Debug, Clone)]
pub struct CallEvent {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    /// When its payload was accepted.
    pub accepted_at: Millis,
    /// The CloudEvent as stored (and sent).
    pub json: String,
    /// The routes it was queued for; `None` for events stored before callgate kept them.
    pub routes: Option<Vec<String>>,
}

/// One (event, route) of a call and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CallDelivery {
    pub event_id: String,
    pub route: String,
    pub state: DeliveryState,
    /// The outbox or dead-letter id (the dead-letter API's id), while it has one.
    pub delivery_id: Option<i64>,
    /// Failed attempts so far (for a dead letter, all of them).
    pub attempts: i64,
    /// Pending or retrying: when it is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A call as [`Store::call`] reads it, in one snapshot.
#[derive(Debug, Clone)]
pub struct StoredCall {
    pub summary: CallSummary,
    /// Its events in acceptance order, at most [`CALL_EVENTS_MAX`] and [`CALL_BYTES_MAX`].
    pub events: Vec<CallEvent>,
    /// More events are stored than were returned.
    pub truncated: bool,
    /// Every (event, route) of the returned events, in event order then route name.
    pub deliveries: Vec<CallDelivery>,
}

/// An outbox row of a call, as the backends read it.
pub(crate) struct OutboxRow {
    pub id: i64,
    pub event_seq: i64,
    pub route: String,
    pub attempts: i64,
    pub next_at: Millis,
    pub leased: bool,
}

/// A dead letter of a call, as the backends read it.
pub(crate) struct DeadRow {
    pub id: i64,
    pub event_seq: i64,
    pub route: String,
    pub attempts: i64,
    pub dead_at: Millis,
    pub last_error: Option<String>,
}

/// Each returned event's state on each route it was queued for (and on any route it still
/// has an outbox row or dead letter for): in the outbox it is pending, retrying or in
/// flight, dead lettered it is dead, and otherwise it was delivered.
pub(crate) fn call_deliveries(events: &[CallEvent], outbox: Vec<OutboxRow>, dead: Vec<DeadRow>) -> Vec<CallDelivery> {
    let mut by_key: BTreeMap<(i64, String), CallDelivery> = BTreeMap::new();
    let id_of: BTreeMap<i64, &str> = events.iter().map(|e| (e.seq, e.id.as_str())).collect();
    for event in events {
        for route in event.routes.iter().flatten() {
            by_key.insert(
                (event.seq, route.clone()),
                CallDelivery {
                    event_id: event.id.clone(),
                    route: route.clone(),
                    state: DeliveryState::Delivered,
                    delivery_id: None,
                    attempts: 0,
                    next_at: None,
                    dead_at: None,
                    last_error: None,
                },
            );
        }
    }
    for row in outbox {
        let Some(event_id) = id_of.get(&row.event_seq) else { continue };
        let state = match (row.leased, row.attempts) {
            (true, _) => DeliveryState::InFlight,
            (false, 0) => DeliveryState::Pending,
            (false, _) => DeliveryState::Retrying,
        };
        by_key.insert(
            (row.event_seq, row.route.clone()),
            CallDelivery {
                event_id: (*event_id).to_owned(),
                route: row.route,
                state,
                delivery_id: Some(row.id),
                attempts: row.attempts,
                next_at: Some(rfc3339(row.next_at)),
                dead_at: None,
                last_error: None,
            },
        );
    }
    for row in dead {
        let Some(event_id) = id_of.get(&row.event_seq) else { continue };
        by_key.insert(
            (row.event_seq, row.route.clone()),
            CallDelivery {
                event_id: (*event_id).to_owned(),
                route: row.route,
                state: DeliveryState::Dead,
                delivery_id: Some(row.id),
                attempts: row.attempts,
                next_at: None,
                dead_at: Some(rfc3339(row.dead_at)),
                last_error: row.last_error,
            },
        );
    }
    by_key.into_values().collect()
}

/// Deliveries waiting (or retrying) and dead letters, per route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub backlog: BTreeMap<String, i64>,
    pub dead: BTreeMap<String, i64>,
}

/// Drift of one kind at one place of one source's vendor event, aggregated: a row of the
/// drift report (`GET /v1/admin/drift`), keyed by (source, vendor_event, kind, path, value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftCount {
    pub source: String,
    /// The vendor event as its schema is named (`v2/call_ended`); empty on an overflow row.
    pub vendor_event: String,
    /// `unknown_field`, `unknown_value`, `degraded`, or [`DRIFT_OVERFLOW`].
    pub kind: String,
    /// Where in the payload (`call.transcript[].role`); empty on an overflow row.
    pub path: String,
    /// The raw value of an unknown value, else empty.
    pub value: String,
    pub count: i64,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// Short, never a vendor's field value (see `vendors::Drift::example`); the latest one.
    pub example: String,
}

/// The `kind` of a source's overflow row: drift counted after the source reached its cap of
/// distinct rows, when there was no row left to count it in.
pub const DRIFT_OVERFLOW: &str = "overflow";

type DriftKey = (String, String, String, String, String);

impl DriftCount {
    fn key(&self) -> DriftKey {
        (self.source.clone(), self.vendor_event.clone(), self.kind.clone(), self.path.clone(), self.value.clone())
    }

    /// Adds `other` (of the same key) to this count.
    pub fn merge(&mut self, other: &DriftCount) {
        self.count += other.count;
        self.first_seen = self.first_seen.min(other.first_seen);
        if other.last_seen >= self.last_seen {
            self.last_seen = other.last_seen;
            self.example.clone_from(&other.example);
        }
    }

    /// The overflow row of `source` holding `count` at `first_seen`..`last_seen`.
    pub fn overflow(source: &str, count: i64, first_seen: Millis, last_seen: Millis) -> DriftCount {
        DriftCount {
            source: source.to_owned(),
            vendor_event: String::new(),
            kind: DRIFT_OVERFLOW.to_owned(),
            path: String::new(),
            value: String::new(),
            count,
            first_seen,
            last_seen,
            example: String::new(),
        }
    }
}

/// What a drift write upserts, shared by both backends: every count whose row is `stored`,
/// new rows while their source has fewer than `max_rows` (`rows`: its rows now, overflow not
/// counted), and the rest folded into the source's overflow row. One entry per key.
fn admit_drift(
    counts: Vec<DriftCount>,
    stored: &HashSet<DriftKey>,
    rows: &HashMap<String, i64>,
    max_rows: usize,
) -> Vec<DriftCount> {
    let mut rows = rows.clone();
    let mut out: Vec<DriftCount> = Vec::with_capacity(counts.len());
    let mut at: HashMap<DriftKey, usize> = HashMap::new();
    for count in counts {
        let key = count.key();
        let admitted = if count.kind == DRIFT_OVERFLOW || stored.contains(&key) || at.contains_key(&key) {
            count
        } else {
            let held = rows.entry(count.source.clone()).or_insert(0);
            if (*held as usize) < max_rows {
                *held += 1;
                count
            } else {
                DriftCount::overflow(&count.source, count.count, count.first_seen, count.last_seen)
            }
        };
        match at.get(&admitted.key()) {
            Some(&i) => out[i].merge(&admitted),
            None => {
                at.insert(admitted.key(), out.len());
                out.push(admitted);
            }
        }
    }
    out
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot commit right now (connection lost, lock held,
    /// disk full, read-only file): nothing was changed; try again later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored record cannot be read back as written.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Any other failure of the backend.
    #[error("storage error: {0}")]
    Backend(String),
    #[error("the store is shut down")]
    Closed,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits a payload, its events and their deliveries durably, or reports a duplicate
    /// (the same `(source, digest)` within the dedup window, accepted by any replica). Sends
    /// [`Notice::Due`] for the routes that got deliveries, after the commit.
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError>;

    /// Keeps a rejected payload (durably: the vendor is answered only after it).
    async fn quarantine(&self, item: Quarantined) -> Result<(), StoreError>;

    /// Leases up to `limit` deliveries of `route` due at `now`, oldest first, until
    /// `lease_until`. Only the head of each (route, subject) queue is claimable (the oldest
    /// delivery still in the outbox), and only while no delivery of that subject holds a live
    /// lease; an expired lease is taken over. Nothing is claimed while the route is paused.
    async fn claim(&self, route: &str, now: Millis, limit: usize, lease_until: Millis) -> Result<Claimed, StoreError>;

    /// The earliest time after `after` at which a delivery of `route` falls due or a lease
    /// expires, if any. Heads that are due but blocked behind a live lease are not counted:
    /// their release comes as a [`Notice::Due`].
    async fn next_due(&self, route: &str, after: Millis) -> Result<Option<Millis>, StoreError>;

    /// Records attempt outcomes at `now`. Each is applied only if its lease is still the
    /// delivery's; the others are counted in [`Completed::stale`] and dropped. Sends
    /// [`Notice::Due`] when a call's next event may go, and [`Notice::Paused`] on a 410.
    async fn complete(&self, outcomes: Vec<Outcome>, now: Millis) -> Result<Completed, StoreError>;

    /// Gives claimed deliveries back without an outcome (attempts abandoned at shutdown), so
    /// this or another replica may claim them at once instead of after their lease ends. A
    /// lease already taken over is left alone. Sends [`Notice::Due`] for their routes.
    async fn release(&self, leases: Vec<(i64, Lease)>) -> Result<(), StoreError>;

    /// Deletes the waiting deliveries of `route` (the backlog a route removed from the
    /// configuration left behind), except those leased at `now`: an attempt in flight on any
    /// replica finishes and records its outcome. Dead letters stay. Returns how many were
    /// deleted; [`Store::counts`] drops by as many.
    async fn discard_backlog(&self, route: &str, now: Millis) -> Result<usize, StoreError>;

    /// Backlog and dead letters per route, straight from the store (every replica agrees).
    async fn counts(&self) -> Result<Counts, StoreError>;

    /// Whether the store can commit a real write now (and has room for more).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Routes paused (by a 410 or an operator), with since when and why.
    async fn paused(&self) -> Result<Vec<Pause>, StoreError>;

    /// Pauses (`Some(reason)`) or resumes (`None`) a route for every replica, and sends
    /// [`Notice::Paused`].
    async fn set_paused(&self, route: &str, reason: Option<&str>, now: Millis) -> Result<(), StoreError>;

    /// Dead letters matching `filter`, newest first.
    async fn dead_letters(&self, filter: &Filter) -> Result<Vec<DeadLetter>, StoreError>;

    async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterDetail>, StoreError>;

    /// Puts matching dead letters back in the outbox (same delivery id, so a call's order is
    /// kept), due at `now` with a fresh retry schedule; returns (id, route) of each and sends
    /// [`Notice::Due`] for their routes.
    async fn replay_dead_letters(&self, filter: &Filter, now: Millis) -> Result<Vec<(i64, String)>, StoreError>;

    /// Quarantined payloads matching `filter`, newest first; `with_body` includes bodies.
    async fn quarantined(&self, filter: &Filter, with_body: bool) -> Result<Vec<QuarantineItem>, StoreError>;

    /// The raw bodies of matching quarantined payloads, oldest first: (id, source, body).
    async fn quarantined_raw(&self, filter: &Filter) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError>;

    /// Forgets a quarantined payload (after a replay accepted it).
    async fn release_quarantined(&self, id: i64) -> Result<(), StoreError>;

    /// The delivery log matching `filter`, newest first.
    async fn delivery_log(&self, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError>;

    /// One stored event by its id, with each route's delivery state at `now` and attempts.
    async fn event(&self, id: &str, now: Millis) -> Result<Option<EventDetail>, StoreError>;

    /// Keeps a test send in the delivery log; returns its log id.
    async fn record_test(&self, send: TestSend) -> Result<i64, StoreError>;

    /// Deletes what is older than the retention and the redelivery window (one replica at a
    /// time; another replica's call returns nothing pruned). The delivery log goes with its
    /// time; an event stays as long as an attempt of it does; drift rows go once last seen
    /// before the retention.
    async fn prune(&self, retention_before: Millis, dedup_before: Millis) -> Result<Pruned, StoreError>;

    /// Adds aggregated drift counts to the drift report, for every replica: count added,
    /// `first_seen` the earliest, `last_seen` and `example` the latest. A source holds at most
    /// `max_rows` rows (besides its overflow row); a count that would need one more goes to
    /// its source's [`DRIFT_OVERFLOW`] row. Not synced to disk on its own (a crash may lose
    /// the last write: drift is a report, not a payload).
    async fn record_drift(&self, counts: Vec<DriftCount>, max_rows: usize) -> Result<(), StoreError>;

    /// The drift report: rows of source `filter.name` (all when `None`) last seen at or after
    /// `filter.since`, most recently seen first, at most `filter.limit` (100 by default, 1000
    /// at most).
    async fn drift(&self, filter: &Filter) -> Result<Vec<DriftCount>, StoreError>;

    /// Stores a call's `call.completed` (`ingest`: its one event, under the payload key
    /// `canonical::completed::digest`, with its outbox rows) and marks the call completed at
    /// `ingest.received_at`, in one transaction, only if the call is not completed yet and
    /// still has `events` events (as many as it was read with). `true` when this call did
    /// it; two replicas racing: one gets `true`, the other `false`. Sends [`Notice::Due`] for
    /// its routes.
    async fn complete_call(&self, subject: &str, events: i64, ingest: Ingest) -> Result<bool, StoreError>;

    /// Subjects of the calls whose first terminal event was accepted before `before` and that
    /// are not completed, oldest terminal event first, at most `limit`.
    async fn settling(&self, before: Millis, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Calls matching `filter`, newest first (by first acceptance).
    async fn calls(&self, filter: &CallFilter) -> Result<Vec<CallSummary>, StoreError>;

    /// One call by subject, read in one snapshot: its summary, its events in acceptance order
    /// (at most [`CALL_EVENTS_MAX`] and [`CALL_BYTES_MAX`]) and each (event, route)'s delivery state, leases judged
    /// at `now`. `None` when no call has that subject.
    async fn call(&self, subject: &str, now: Millis) -> Result<Option<StoredCall>, StoreError>;

    /// What a completion check reads of a call (`completion.rs`): its summary and events as
    /// [`Store::call`] reads them, in one snapshot, without their delivery states. `None` when
    /// no call has that subject. A check runs after most payloads with a terminal event, so
    /// the backends read it in as few statements as they can.
    async fn call_for_completion(&self, subject: &str) -> Result<Option<(CallSummary, Vec<CallEvent>)>, StoreError> {
        Ok(self.call(subject, now_ms()).await?.map(|call| (call.summary, call.events)))
    }

    /// Erases one call, or every call of a number (`erase.rs`), in one transaction: its
    /// pending deliveries are cancelled (an attempt in flight finishes but records nothing),
    /// its dead letters, delivery log, events, summary, payloads and matching quarantined
    /// bodies deleted, and the files scrubbed as far as the backend allows (SQLite:
    /// `secure_delete` and a truncating WAL checkpoint; PostgreSQL: `VACUUM` of the tables).
    /// [`Store::counts`] drops by what was cancelled and deleted. Nothing matched: all zero.
    async fn erase(&self, erasure: erase::Erasure, now: Millis) -> Result<erase::Erased, StoreError>;

    /// Subscribes to this store's [`Notice`]s (a lagging subscriber should treat the lag as
    /// [`Notice::Lost`]).
    fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice>;

    /// Sends each payload (at most [`TAIL_PAYLOAD_MAX`] bytes) to the [`Store::tail_feed`] of
    /// every process sharing this store, this one's included. Nothing is stored: a process not
    /// listening at that moment never hears it. A store that only one process opens (SQLite)
    /// has no one to tell and does nothing.
    async fn send_tail(&self, payloads: Vec<String>) -> Result<(), StoreError> {
        let _ = payloads;
        Ok(())
    }

    /// Subscribes to the payloads [`Store::send_tail`] sent from any process (a lagging
    /// subscriber should treat the lag as [`TailFeed::Lost`]); `None` for a store that only
    /// one process opens.
    fn tail_feed(&self) -> Option<tokio::sync::broadcast::Receiver<TailFeed>> {
        None
    }
}

/// RFC 3339 text of a store time.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(crate::canonical::convert::rfc3339)
        .unwrap_or_default()
}

/// A delivery in the outbox, as [`assemble`] reads it: (id, route, attempts, next_at, the end
/// of its live lease).
pub(crate) type EventOutboxRow = (i64, String, i64, Millis, Option<Millis>);

/// Each route's delivery of one event, from what the tables hold: its rows in the outbox, its
/// dead letters (id, route, attempts, dead_at) and its delivery log (oldest first). A delivery
/// in neither table left the outbox with its 2xx; one whose log has no success (its log
/// pruned part-way) is not listed.
pub(crate) fn assemble(
    outbox: Vec<EventOutboxRow>,
    dead: Vec<(i64, String, i64, Millis)>,
    log: Vec<LogEntry>,
    paused: &[String],
) -> Vec<RouteDelivery> {
    let mut logs: BTreeMap<i64, Vec<LogEntry>> = BTreeMap::new();
    for entry in log {
        if let Some(delivery) = entry.delivery_id {
            logs.entry(delivery).or_default().push(entry);
        }
    }
    let mut deliveries = Vec::new();
    for (id, route, attempts, next_at, lease_until) in outbox {
        let state = match lease_until {
            Some(_) => DeliveryState::InFlight,
            None if paused.contains(&route) => DeliveryState::Paused,
            None if attempts > 0 => DeliveryState::Retrying,
            None => DeliveryState::Pending,
        };
        deliveries.push(RouteDelivery {
            route,
            delivery_id: id,
            state,
            attempts,
            next_at: (state != DeliveryState::InFlight).then(|| rfc3339(next_at)),
            lease_until: lease_until.map(rfc3339),
            attempts_log: logs.remove(&id).unwrap_or_default(),
        });
    }
    for (id, route, attempts, _dead_at) in dead {
        deliveries.push(RouteDelivery {
            route,
            delivery_id: id,
            state: DeliveryState::Dead,
            attempts,
            next_at: None,
            lease_until: None,
            attempts_log: logs.remove(&id).unwrap_or_default(),
        });
    }
    for (id, log) in logs {
        let Some(last) = log.last() else { continue };
        if log.iter().any(|e| e.outcome == LogOutcome::Success) {
            deliveries.push(RouteDelivery {
                route: last.route.clone(),
                delivery_id: id,
                state: DeliveryState::Delivered,
                attempts: last.attempt,
                next_at: None,
                lease_until: None,
                attempts_log: log,
            });
        }
    }
    deliveries.sort_by(|a, b| (&a.route, a.delivery_id).cmp(&(&b.route, b.delivery_id)));
    deliveries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_answer_is_bounded_by_count_and_bytes_but_holds_its_first_event() {
        assert_eq!(events_that_fit([]), 0);
        assert_eq!(events_that_fit([CALL_BYTES_MAX * 2]), 1, "the first event always comes");
        assert_eq!(events_that_fit([CALL_BYTES_MAX / 2, CALL_BYTES_MAX / 2, 1]), 2);
        assert_eq!(events_that_fit(std::iter::repeat_n(10, CALL_EVENTS_MAX + 5)), CALL_EVENTS_MAX);
    }
}
