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

pub mod migrate;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod test_support;

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
    /// The canonical CloudEvent as JSON: sent as is, or trimmed at send time for a route
    /// with `omit` or `mask_numbers` (this stays whole).
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

    /// Deletes what is older than the retention and the redelivery window (one replica at a
    /// time; another replica's call returns nothing pruned).
    async fn prune(&self, retention_before: Millis, dedup_before: Millis) -> Result<Pruned, StoreError>;

    /// Subscribes to this store's [`Notice`]s (a lagging subscriber should treat the lag as
    /// [`Notice::Lost`]).
    fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice>;
}

/// RFC 3339 text of a store time.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(crate::canonical::convert::rfc3339)
        .unwrap_or_default()
}
