//! The durable store: accepted payloads, their canonical events, the delivery outbox, dead
//! letters and the quarantine of rejected payloads.
//!
//! Ingress and delivery see only the [`Store`] trait; SQLite ([`sqlite::SqliteStore`]) is the
//! embedded backend, and a PostgreSQL backend can be added beside it without touching either.
//!
//! **Invariant:** [`Store::ingest`] returns only after the payload, its events and their
//! deliveries are committed and synced to disk — the ingress answers 200 on that promise.

pub mod sqlite;

use std::collections::BTreeMap;

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
    /// The CloudEvent as JSON, exactly as it will be sent.
    pub json: String,
    pub routes: Vec<String>,
}

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

/// A delivery due now: one event for one route.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub route: String,
    pub event_id: String,
    pub subject: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub json: String,
}

/// What one attempt found, kept for failed attempts and dead letters.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub at: Millis,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The first bytes of the response body.
    pub response: Option<String>,
    pub duration_ms: i64,
}

/// How an attempt ended, as the store records it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 2xx. `recovered`: the route had been failing; its waiting retries fall due now.
    Delivered {
        id: i64,
        recovered: bool,
    },
    Retry {
        id: i64,
        next_at: Millis,
        attempt: Attempt,
    },
    Dead {
        id: i64,
        attempt: Attempt,
    },
    /// 410 Gone: the route asked us to stop. The delivery stays queued and the route is
    /// paused until an operator resumes it.
    Gone {
        id: i64,
        attempt: Attempt,
    },
}

/// A dead-lettered delivery, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub route: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub attempts: i64,
    pub dead_at: String,
    pub last_error: Option<String>,
}

/// One recorded attempt of a delivery.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRecord {
    pub attempt: i64,
    pub at: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
    pub duration_ms: i64,
}

/// A dead letter with its event and every attempt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub summary: DeadLetter,
    pub event: serde_json::Value,
    pub attempts_log: Vec<AttemptRecord>,
}

/// A quarantined payload, as listed (`body` only in detail).
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantineItem {
    pub id: i64,
    pub source: String,
    pub vendor: String,
    pub received_at: String,
    pub status: u16,
    pub reason: String,
    pub details: serde_json::Value,
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
}

/// A paused route and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pause {
    pub route: String,
    pub since: String,
    pub reason: String,
}

/// Deliveries waiting (or retrying) and dead letters, per route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub backlog: BTreeMap<String, i64>,
    pub dead: BTreeMap<String, i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("the store is shut down")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits a payload, its events and their deliveries durably, or reports a duplicate.
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError>;

    /// Keeps a rejected payload.
    async fn quarantine(&self, item: Quarantined) -> Result<(), StoreError>;

    /// Deliveries of `route` due at `now`, oldest first, at most one per subject (the oldest
    /// undelivered one, so a call's events go out in order), skipping `in_flight`.
    async fn due(&self, route: &str, now: Millis, limit: usize, in_flight: &[i64])
    -> Result<Vec<Delivery>, StoreError>;

    /// The earliest `next_at` of `route`'s deliveries (possibly already past: due now, or in
    /// flight), if any is waiting.
    async fn next_due(&self, route: &str) -> Result<Option<Millis>, StoreError>;

    /// Records attempt outcomes.
    async fn complete(&self, outcomes: Vec<Outcome>) -> Result<(), StoreError>;

    /// Backlog and dead letters per route, straight from the store.
    async fn counts(&self) -> Result<Counts, StoreError>;

    /// Whether the store can commit a real write now (and has room for more).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Routes paused (by a 410 or an operator), with since when and why.
    async fn paused(&self) -> Result<Vec<Pause>, StoreError>;

    async fn set_paused(&self, route: &str, reason: Option<&str>) -> Result<(), StoreError>;

    /// Dead letters matching `filter`, newest first.
    async fn dead_letters(&self, filter: &Filter) -> Result<Vec<DeadLetter>, StoreError>;

    async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterDetail>, StoreError>;

    /// Puts matching dead letters back in the outbox (same delivery id, so a call's order is
    /// kept), due now with a fresh retry schedule; returns (id, route) of each.
    async fn replay_dead_letters(&self, filter: &Filter) -> Result<Vec<(i64, String)>, StoreError>;

    /// Quarantined payloads matching `filter`, newest first; `with_body` includes bodies.
    async fn quarantined(&self, filter: &Filter, with_body: bool) -> Result<Vec<QuarantineItem>, StoreError>;

    /// The raw bodies of matching quarantined payloads, oldest first: (id, source, body).
    async fn quarantined_raw(&self, filter: &Filter) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError>;

    /// Forgets a quarantined payload (after a replay accepted it).
    async fn release_quarantined(&self, id: i64) -> Result<(), StoreError>;

    /// Deletes what is older than the retention and the redelivery window.
    async fn prune(&self, retention_before: Millis, dedup_before: Millis) -> Result<Pruned, StoreError>;
}

/// RFC 3339 text of a store time.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(crate::canonical::convert::rfc3339)
        .unwrap_or_default()
}
