//! `POST /v1/ingest/{source}`: authenticate, admit, read, normalise, store, answer. And
//! `POST /v1/inbound/{source}` ([`inbound`]): authenticate, admit, read, look up, answer.
//!
//! **Invariant:** only this module knows ingress HTTP status codes ([`IngressError`]).
//! **Invariant:** a 200 is sent only after [`Store::ingest`] has committed.
//! **Invariant:** a request holds a concurrency slot only once the request head has passed
//! every check it can pass (source, size, credentials); a body read before its sender is
//! known (`none`, `hmac` and `retell` sources) also holds one of its source's bounded share.
//! **Invariant:** nothing a vendor sent to `/v1/ingest` is answered with a 4xx unless it was
//! quarantined; when the quarantine cannot commit, the answer is 503 and the vendor retries.
//! (`/v1/inbound` stores nothing: its requests are questions, not events.)

pub mod inbound;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{Path, RawQuery, Request, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header::CONTENT_LENGTH},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    auth::{self, Precheck},
    canonical::{CloudEvent, EventType, Status},
    config::Config,
    http::error_response,
    server::App,
    store::{Ingest, IngestOutcome, NewEvent, Quarantined, Store},
    telemetry::{self, IngressOutcome},
    vendors::{self, KeyedBy, Origin, Rejection, Violation},
};

/// Every way an ingress request can fail, and the status each one answers.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// 404: no `[sources.NAME]` with that name.
    #[error("unknown source")]
    UnknownSource,
    /// 404 (`/v1/inbound`): the source has no `[sources.NAME.inbound]` lookup.
    #[error("this source answers no inbound webhook (no [sources.NAME.inbound] configured)")]
    NoInbound,
    /// 401: the source's authentication did not pass (no detail, by design).
    #[error("authentication failed")]
    Unauthorized,
    /// 413: the body is larger than `server.max_body_bytes`.
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// 400: the body could not be read.
    #[error("could not read the request body: {0}")]
    Unreadable(String),
    /// 400 (not JSON) or 422 (schema, unknown event).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// 503: the store could not commit (the payload, or its quarantine); nothing was accepted.
    #[error("the event store is unavailable; nothing was accepted, retry later")]
    Unavailable,
    /// 503: every slot this request may take is held by other requests.
    #[error("the gateway is overloaded; retry later")]
    Overloaded,
    /// 408: the request (body upload included) took longer than `server.request_timeout`.
    #[error("the request took too long")]
    Timeout,
    /// 500: a defect in the gateway, not in the request (logged, never detailed).
    #[error("internal error")]
    Internal(String),
}

impl IngressError {
    fn status(&self) -> StatusCode {
        match self {
            IngressError::UnknownSource | IngressError::NoInbound => StatusCode::NOT_FOUND,
            IngressError::Unauthorized => StatusCode::UNAUTHORIZED,
            IngressError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::Unreadable(_) | IngressError::Rejected(Rejection::NotJson { .. }) => StatusCode::BAD_REQUEST,
            IngressError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            IngressError::Unavailable | IngressError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::Timeout => StatusCode::REQUEST_TIMEOUT,
            IngressError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            IngressError::UnknownSource => "unknown_source",
            IngressError::NoInbound => "no_inbound",
            IngressError::Unauthorized => "unauthorized",
            IngressError::TooLarge { .. } => "payload_too_large",
            IngressError::Unreadable(_) => "unreadable_body",
            IngressError::Rejected(Rejection::NotJson { .. }) => "invalid_json",
            IngressError::Rejected(Rejection::UnknownEvent { .. }) => "unknown_event",
            IngressError::Rejected(Rejection::Invalid { .. }) => "schema_violation",
            IngressError::Unavailable => "store_unavailable",
            IngressError::Overloaded => "overloaded",
            IngressError::Timeout => "request_timeout",
            IngressError::Internal(_) => "internal_error",
        }
    }

    fn outcome(&self) -> IngressOutcome {
        match self {
            IngressError::UnknownSource | IngressError::NoInbound => IngressOutcome::UnknownSource,
            IngressError::Unauthorized => IngressOutcome::Unauthorized,
            IngressError::TooLarge { .. } => IngressOutcome::TooLarge,
            IngressError::Unreadable(_) | IngressError::Rejected(_) => IngressOutcome::Invalid,
            IngressError::Unavailable | IngressError::Overloaded | IngressError::Internal(_) => {
                IngressOutcome::Unavailable
            }
            IngressError::Timeout => IngressOutcome::Timeout,
        }
    }

    pub fn details(&self) -> Vec<Violation> {
        match self {
            IngressError::Rejected(r) => r.violations(),
            _ => Vec::new(),
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        if let IngressError::Internal(why) = &self {
            tracing::error!(error = %why, "Ingress failed inside the gateway.");
        }
        error_response(self.status(), self.code(), &self.to_string(), &self.details())
    }
}

/// The concurrency slots of the ingress, taken only by requests that passed every check the
/// request head allows.
pub struct Admission {
    /// `server.max_concurrent_requests`: requests reading a body or being processed.
    slots: Arc<Semaphore>,
    /// Per `none`/`hmac`/`retell` source: the most of those slots its not-yet-verified bodies
    /// may hold. Resized in place by a reload ([`Admission::reconfigure`]).
    unverified: std::sync::Mutex<BTreeMap<String, Share>>,
}

/// One source's share of the slots, and the size it was last set to.
struct Share {
    permits: Arc<Semaphore>,
    size: usize,
}

impl Share {
    fn new(size: usize) -> Share {
        Share { permits: Arc::new(Semaphore::new(size)), size }
    }

    /// Grows or shrinks the share. Permits held by requests in flight cannot be taken back:
    /// the ones missing are taken as those requests end (a waiter ahead of every new request),
    /// so the share never admits more than its new size once they are done.
    fn resize(&mut self, size: usize) {
        if size > self.size {
            self.permits.add_permits(size - self.size);
        } else if size < self.size {
            let cut = self.size - size;
            let missing = cut - self.permits.forget_permits(cut);
            if missing > 0 {
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    if let Ok(taken) = permits.acquire_many_owned(missing as u32).await {
                        taken.forget();
                    }
                });
            }
        }
        self.size = size;
    }
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        let admission = Admission {
            slots: Arc::new(Semaphore::new(config.server.max_concurrent_requests)),
            unverified: std::sync::Mutex::default(),
        };
        admission.reconfigure(config);
        admission
    }

    /// Sets each unverified source's share from a (reloaded) configuration: a new source gets
    /// its share, a removed one loses it, and a changed share is resized in place, so requests
    /// in flight keep counting against it. The total (`max_concurrent_requests`) needs a restart.
    pub fn reconfigure(&self, config: &Config) {
        let share = config.unverified_share();
        let Ok(mut shares) = self.unverified.lock() else { return };
        shares.retain(|name, _| config.sources.get(name).is_some_and(|s| s.auth.reads_body_unverified()));
        for (name, _) in config.sources.iter().filter(|(_, s)| s.auth.reads_body_unverified()) {
            match shares.get_mut(name) {
                Some(existing) => existing.resize(share),
                None => {
                    shares.insert(name.clone(), Share::new(share));
                }
            }
        }
    }

    fn slot(&self) -> Result<OwnedSemaphorePermit, IngressError> {
        self.slots.clone().try_acquire_owned().map_err(|_| IngressError::Overloaded)
    }

    fn unverified(&self, source: &str) -> Result<Option<OwnedSemaphorePermit>, IngressError> {
        let share = self.unverified.lock().ok().and_then(|shares| shares.get(source).map(|s| s.permits.clone()));
        match share {
            Some(share) => share.try_acquire_owned().map(Some).map_err(|_| IngressError::Overloaded),
            None => Ok(None),
        }
    }
}

/// Bodies at least this large are validated and mapped on the [`Offload`] pool; smaller ones
/// take less time than handing them over would cost.
pub const OFFLOAD_BYTES: usize = 16 * 1024;

/// A bounded pool for CPU-heavy work (parsing, validating and mapping a large body) off the
/// runtime's worker threads, so health checks, metrics and small requests stay responsive.
pub struct Offload {
    permits: Arc<Semaphore>,
}

impl Offload {
    /// A pool running at most `threads` jobs at once.
    pub fn new(threads: usize) -> Offload {
        Offload { permits: Arc::new(Semaphore::new(threads.max(1))) }
    }

    /// One worker per core.
    pub fn per_core() -> Offload {
        Offload::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    /// Runs `work` for an input of `size` bytes: inline when small, else on the pool (waiting,
    /// without blocking the runtime, for a free worker).
    pub async fn run<T: Send + 'static>(
        &self,
        size: usize,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, IngressError> {
        if size < OFFLOAD_BYTES {
            return Ok(work());
        }
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| IngressError::Unavailable)?;
        // The permit travels with the job: an abandoned request (timeout) does not free its
        // worker before the job is done, so the bound holds.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| IngressError::Internal(format!("offloaded work failed: {e}")))
    }
}

/// The labels an ingress request is counted with, attached to its response by the handler;
/// [`count`] counts requests that never reached it (405, 408, an unreadable path).
#[derive(Debug, Clone)]
struct Counted {
    source: String,
    vendor: &'static str,
    outcome: IngressOutcome,
}

/// The configured source named by an ingress path, if any: (source, vendor) labels.
fn labels(config: &Config, name: Option<&str>) -> (String, &'static str) {
    match name.and_then(|n| config.sources.get_key_value(n)) {
        Some((name, s)) => (name.clone(), s.vendor.as_str()),
        None => ("unknown".to_owned(), "unknown"),
    }
}

/// Middleware around every `/v1/ingest/…` request: counts it in
/// `callgate_ingress_requests_total` and times it, whatever answered it.
pub async fn count(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let Some(rest) = path.strip_prefix("/v1/ingest").filter(|r| r.is_empty() || r.starts_with('/')) else {
        return next.run(request).await;
    };
    let segment = rest.trim_start_matches('/').to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    match response.extensions().get::<Counted>() {
        Some(c) => telemetry::ingress(&c.source, c.vendor, c.outcome, seconds),
        None => {
            let (source, vendor) = labels(&app.config.load(), Some(segment.as_str()));
            let status = response.status();
            let outcome = match status {
                s if s.is_success() => IngressOutcome::Accepted,
                StatusCode::NOT_FOUND => IngressOutcome::UnknownSource,
                StatusCode::UNAUTHORIZED => IngressOutcome::Unauthorized,
                StatusCode::PAYLOAD_TOO_LARGE => IngressOutcome::TooLarge,
                StatusCode::REQUEST_TIMEOUT => IngressOutcome::Timeout,
                s if s.is_server_error() => IngressOutcome::Unavailable,
                _ => IngressOutcome::Invalid,
            };
            tracing::warn!(source = %source, vendor = %vendor, status = status.as_u16(), "Ingress rejected.");
            telemetry::ingress(&source, vendor, outcome, seconds);
        }
    }
    response
}

/// Middleware: answers 408 to a request (body upload included) that takes longer than
/// `server.request_timeout`. A commit already under way still completes; the vendor's retry
/// is then recognised as a duplicate.
pub async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => IngressError::Timeout.into_response(),
    }
}

pub async fn ingest(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received_at = Utc::now();
    // One configuration for the whole request, whatever a reload does meanwhile.
    let config = app.config.load_full();
    // A segment that is not UTF-8 names no source (source names are ASCII).
    let source = path.ok().map(|Path(source)| source);
    let (label_source, vendor) = labels(&config, source.as_deref());
    let result = match source.as_deref() {
        Some(source) => handle(&app, &config, source, query.as_deref(), &headers, body, received_at).await,
        None => Err(IngressError::UnknownSource),
    };
    let (outcome, mut response) = match result {
        Ok((outcome, ids)) => {
            let body = if outcome == IngressOutcome::Duplicate {
                json!({"accepted": 0, "duplicate": true, "ids": ids})
            } else {
                json!({"accepted": ids.len(), "ids": ids})
            };
            (outcome, (StatusCode::OK, axum::Json(body)).into_response())
        }
        Err(e) => {
            let details = e.details();
            tracing::warn!(
                source = %label_source,
                vendor = %vendor,
                status = e.status().as_u16(),
                code = e.code(),
                reason = %e,
                problems = details.len(),
                first_problem = ?details.first().map(|v| format!("{}: {}", v.path, v.message)),
                "Ingress rejected."
            );
            (e.outcome(), e.into_response())
        }
    };
    response.extensions_mut().insert(Counted { source: label_source, vendor, outcome });
    response
}

async fn handle(
    app: &App,
    config: &Arc<Config>,
    source: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    received_at: DateTime<Utc>,
) -> Result<(IngressOutcome, Vec<String>), IngressError> {
    let source_config = config.sources.get(source).ok_or(IngressError::UnknownSource)?;
    let (body, _slot) = authenticated(app, config, source, &source_config.auth, query, headers, body).await?;
    accept(app, config, source, body, received_at, OnReject::Quarantine).await
}

/// The body of a request to `source`, once the source's authentication passed, and the
/// concurrency slot it holds (to keep while the request is handled). Shared by every
/// endpoint a vendor calls (`/v1/ingest`, `/v1/inbound`).
async fn authenticated(
    app: &App,
    config: &Config,
    source: &str,
    auth: &crate::config::Auth,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, OwnedSemaphorePermit), IngressError> {
    let limit = config.server.max_body_bytes;
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(IngressError::TooLarge { limit });
    }
    // Credentials first: a request that can be turned away on its head never takes a slot.
    let precheck = auth::before_body(auth, headers, query);
    if precheck == Precheck::Fail {
        return Err(IngressError::Unauthorized);
    }
    let unverified = if precheck == Precheck::Unverified { app.admission.unverified(source)? } else { None };
    let slot = app.admission.slot()?;
    let body = read_body(body, limit).await?;
    if !auth::check(auth, headers, query, &body) {
        return Err(IngressError::Unauthorized);
    }
    drop(unverified); // authenticated now (or open to anyone): only the shared slot remains
    Ok((body, slot))
}

/// What [`accept`] does with a payload the vendor adapter rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReject {
    /// Keep it in the quarantine (a vendor's delivery): nothing is lost.
    Quarantine,
    /// Only report it (a replay from the quarantine, which keeps it anyway).
    Report,
}

/// Normalises and stores one authenticated body from `source` under `config` (the snapshot
/// its request took): the part of ingress that a quarantine replay runs again.
pub async fn accept(
    app: &App,
    config: &Arc<Config>,
    source: &str,
    body: Bytes,
    received_at: DateTime<Utc>,
    on_reject: OnReject,
) -> Result<(IngressOutcome, Vec<String>), IngressError> {
    let vendor = config.sources.get(source).ok_or(IngressError::UnknownSource)?.vendor;
    let prepared = {
        let (config, source, body) = (config.clone(), source.to_owned(), body.clone());
        app.offload.run(body.len(), move || prepare(&config, &source, &body, received_at)).await?
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(IngressError::Rejected(rejection)) => {
            if on_reject == OnReject::Quarantine {
                quarantine(app.store.as_ref(), source, vendor.as_str(), &rejection, &body, received_at).await?;
            }
            return Err(rejection.into());
        }
        Err(e) => return Err(e),
    };
    let Prepared { ingest, kinds, degraded, drift, schema, keyed_by } = prepared;
    let at = ingest.received_at;
    // The events that may complete their call (`completion.rs`), checked once committed.
    let calls: Vec<(String, EventType)> = ingest
        .events
        .iter()
        .filter_map(|e| {
            EventType::parse(&e.kind).filter(|k| crate::completion::triggers(*k)).map(|k| (e.subject.clone(), k))
        })
        .collect();
    if keyed_by == KeyedBy::BodyFallback {
        telemetry::dedup_fallback(source, vendor.as_str());
    }
    // Kept for the live tail only while someone reads it.
    let tailed = app.tail.active().then(|| crate::tail::summaries(source, &ingest.events));
    // The store wakes the routes' workers (its notices) once it has committed.
    match app.store.ingest(ingest).await {
        Ok(IngestOutcome::Accepted(ids)) => {
            if let Some(accepted) = tailed {
                app.tail.accepted(accepted);
            }
            app.completions.accepted(config, &calls, at);
            for kind in kinds {
                telemetry::event(source, kind);
            }
            app.drift.observe(source, schema, &drift, at);
            if !degraded.is_empty() {
                let fields: Vec<&str> = degraded.iter().map(|d| d.field).collect();
                fields.iter().for_each(|field| telemetry::degraded(source, vendor.as_str(), field));
                tracing::warn!(source = %source, fields = ?fields, "Accepted a payload with descriptive fields callgate cannot read; their values are in vendor_extra.");
            }
            Ok((IngressOutcome::Accepted, ids))
        }
        Ok(IngestOutcome::Duplicate(ids)) => Ok((IngressOutcome::Duplicate, ids)),
        Err(e) => {
            tracing::error!(source = %source, error = %e, "Could not store an accepted payload.");
            Err(IngressError::Unavailable)
        }
    }
}

/// A normalised payload ready for the store.
struct Prepared {
    ingest: Ingest,
    /// Canonical type of each event, for `callgate_events_total` once committed.
    kinds: Vec<&'static str>,
    /// Descriptive fields the adapter could not read (counted once committed).
    degraded: Vec<vendors::Degraded>,
    /// What the payload shows that the mapping does not know (for the drift report, once
    /// committed), and the schema name of its vendor event.
    drift: Vec<vendors::Drift>,
    schema: &'static str,
    /// What the dedup key was computed from (a fallback to the body is counted).
    keyed_by: KeyedBy,
}

/// The CPU-bound part of ingress, run inline or on the [`Offload`] pool: validate, map, key
/// (by body or by event identity, the source's `dedup`), and render every event once for
/// the store.
fn prepare(config: &Config, source: &str, body: &[u8], received_at: DateTime<Utc>) -> Result<Prepared, IngressError> {
    let source_config = config.sources.get(source).ok_or(IngressError::UnknownSource)?;
    let origin = Origin { source, vendor: source_config.vendor, phone_region: source_config.phone_region };
    let vendors::Normalized { events, degraded, drift, schema, key } =
        vendors::normalize_keyed(&origin, body, source_config.dedup, received_at)?;
    let kinds = events.iter().map(|e| e.kind.as_str()).collect();
    let events: Vec<NewEvent> = events.iter().map(|e| new_event(config, e)).collect::<Result<_, _>>()?;
    // The stored body is the first one received; a later one with the same key is answered
    // as a duplicate with the ids stored for it.
    let ingest = Ingest {
        source: source.to_owned(),
        digest: key.digest,
        body: body.to_vec(),
        received_at: received_at.timestamp_millis(),
        events,
    };
    Ok(Prepared { ingest, kinds, degraded, drift, schema, keyed_by: key.by })
}

/// A canonical event ready for the store: rendered, with the routes that want it (also how a
/// call's `call.completed` is routed).
pub(crate) fn new_event(config: &Config, event: &CloudEvent) -> Result<NewEvent, IngressError> {
    let kind = event.kind.as_str();
    let source = &event.data.common.source;
    // A canonical event that does not serialise is our defect, not the vendor's.
    let defect = |e: serde_json::Error| IngressError::Internal(format!("serialising an event: {e}"));
    // The event as JSON, made only when a route with a content filter wants its type.
    let mut as_value = None;
    let mut routes = Vec::new();
    for (name, route) in config.routes.iter().filter(|(_, r)| r.matches(kind, source, event.data.common.test)) {
        if route.filter.is_some() {
            if as_value.is_none() {
                as_value = Some(serde_json::to_value(event).map_err(defect)?);
            }
            if let Some(value) = &as_value
                && !route.passes(value)
            {
                continue;
            }
        }
        routes.push(name.clone());
    }
    let json = serde_json::to_string(event).map_err(defect)?;
    // Only a terminal event or the vendor's call record decides a call's status (as `merge`).
    let status = matches!(event.kind, EventType::CallEnded | EventType::CallFailed | EventType::CallCdr)
        .then(|| event.data.details.status.map(Status::as_str))
        .flatten();
    Ok(NewEvent { id: event.id.clone(), kind: kind.to_owned(), subject: event.subject.clone(), json, routes, status })
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, IngressError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(IngressError::TooLarge { limit }),
        Err(e) => Err(IngressError::Unreadable(crate::http::cut(&e.to_string(), 200))),
    }
}

/// Keeps a rejected body so an operator can inspect and replay it. Never records auth
/// material: only the body, which the source authenticated or which failed before auth.
/// When the quarantine cannot commit, the payload is answered 503 rather than lost.
async fn quarantine(
    store: &dyn Store,
    source: &str,
    vendor: &str,
    rejection: &Rejection,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<(), IngressError> {
    let error = IngressError::Rejected(rejection.clone());
    let item = Quarantined {
        source: source.to_owned(),
        vendor: vendor.to_owned(),
        received_at: received_at.timestamp_millis(),
        status: error.status().as_u16(),
        reason: error.code().to_owned(),
        details: serde_json::to_string(&rejection.violations()).unwrap_or_else(|_| "[]".into()),
        body: body.to_vec(),
    };
    store.quarantine(item).await.map_err(|e| {
        tracing::error!(source = %source, error = %e, "Could not quarantine a rejected payload; answering 503 so the vendor retries.");
        IngressError::Unavailable
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The heavy job waits for a message that only another task on the same one-thread
    /// runtime sends: had it run on the runtime's thread, that task could never run.
    #[tokio::test(flavor = "current_thread")]
    async fn large_work_runs_off_the_runtime_thread_and_small_work_inline() {
        let offload = Offload::new(1);
        let runtime_thread = std::thread::current().id();
        let small = offload.run(10, move || std::thread::current().id()).await.unwrap();
        assert_eq!(small, runtime_thread);

        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let heavy = offload.run(OFFLOAD_BYTES, move || {
            let heard = rx.recv_timeout(Duration::from_secs(20)).is_ok();
            (heard, std::thread::current().id())
        });
        let other = async move {
            tokio::task::yield_now().await;
            tx.send(()).unwrap();
        };
        let ((heard, thread), ()) = tokio::join!(async { heavy.await.unwrap() }, other);
        assert!(heard, "the runtime kept running while the heavy job ran");
        assert_ne!(thread, runtime_thread);
    }

    /// A reload changes an unverified source's share in place: permits held by requests in
    /// flight still count, so the source never holds more than its new share once they end.
    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_resizes_a_sources_share_in_place_counting_requests_in_flight() {
        let config = |toml: &str| Config::from_toml(toml, &crate::config::ProcessEnv).unwrap();
        let base = "[server]\nmax_concurrent_requests = 8\n[sources.a]\nvendor = \"vox\"\n";
        let one = config(base); // share: 8 / (1 + 1) = 4
        let two = config(&format!("{base}[sources.b]\nvendor = \"salpre\"\n")); // 8 / 3 = 2
        let admission = Admission::new(&one);
        let take = |source: &str| admission.unverified(source).ok().flatten();
        let mut held: Vec<_> = (0..4).map(|_| take("a").unwrap()).collect();
        assert!(take("a").is_none(), "the share is 4");

        admission.reconfigure(&two);
        tokio::task::yield_now().await; // lets the shrink queue up for the permits still held
        assert!(take("b").is_some(), "a new source has its share at once");
        held.truncate(1); // three requests end: two of their permits are the shrink's
        let fourth = take("a").expect("one free beside the one still held");
        assert!(take("a").is_none(), "never more than the new share of 2");
        drop((held, fourth));
        let now: Vec<_> = (0..2).map(|_| take("a").unwrap()).collect();
        assert!(take("a").is_none());

        admission.reconfigure(&one); // b removed: back to 4
        assert!(take("b").is_none() && admission.unverified("b").is_ok(), "a removed source has no share");
        let more: Vec<_> = (0..2).map(|_| take("a").unwrap()).collect();
        assert!(take("a").is_none());
        drop((now, more));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_runs_at_most_its_size_at_once() {
        let offload = Arc::new(Offload::new(1));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut jobs = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (offload, running, most) = (offload.clone(), running.clone(), most.clone());
            jobs.spawn(async move {
                offload
                    .run(OFFLOAD_BYTES, move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap()
            });
        }
        while jobs.join_next().await.is_some() {}
        assert_eq!(most.load(Ordering::SeqCst), 1, "jobs of a one-worker pool ran side by side");
    }
}
