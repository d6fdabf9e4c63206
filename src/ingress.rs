//! `POST /v1/ingest/{source}`: authenticate, read, normalise, store, answer.
//!
//! **Invariant:** only this module knows ingress HTTP status codes ([`IngressError`]).
//! **Invariant:** a 200 is sent only after [`Store::ingest`] has committed.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header::CONTENT_LENGTH},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde_json::json;

use crate::{
    auth,
    canonical::{self, CloudEvent},
    server::App,
    store::{Ingest, IngestOutcome, NewEvent, Quarantined, Store},
    telemetry::{self, IngressOutcome},
    vendors::{self, Origin, Rejection, Violation},
};

/// Every way an ingress request can fail, and the status each one answers.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// 404: no `[sources.NAME]` with that name.
    #[error("unknown source")]
    UnknownSource,
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
    /// 503: the store could not commit; nothing was accepted.
    #[error("the event store is unavailable; nothing was accepted, retry later")]
    Unavailable,
    /// 503: more requests in flight than `server.max_concurrent_requests`.
    #[error("the gateway is overloaded; retry later")]
    Overloaded,
}

impl IngressError {
    fn status(&self) -> StatusCode {
        match self {
            IngressError::UnknownSource => StatusCode::NOT_FOUND,
            IngressError::Unauthorized => StatusCode::UNAUTHORIZED,
            IngressError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::Unreadable(_) | IngressError::Rejected(Rejection::NotJson { .. }) => StatusCode::BAD_REQUEST,
            IngressError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            IngressError::Unavailable | IngressError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            IngressError::UnknownSource => "unknown_source",
            IngressError::Unauthorized => "unauthorized",
            IngressError::TooLarge { .. } => "payload_too_large",
            IngressError::Unreadable(_) => "unreadable_body",
            IngressError::Rejected(Rejection::NotJson { .. }) => "invalid_json",
            IngressError::Rejected(Rejection::UnknownEvent { .. }) => "unknown_event",
            IngressError::Rejected(Rejection::Invalid { .. }) => "schema_violation",
            IngressError::Unavailable => "store_unavailable",
            IngressError::Overloaded => "overloaded",
        }
    }

    fn outcome(&self) -> IngressOutcome {
        match self {
            IngressError::UnknownSource => IngressOutcome::UnknownSource,
            IngressError::Unauthorized => IngressOutcome::Unauthorized,
            IngressError::TooLarge { .. } => IngressOutcome::TooLarge,
            IngressError::Unreadable(_) | IngressError::Rejected(_) => IngressOutcome::Invalid,
            IngressError::Unavailable | IngressError::Overloaded => IngressOutcome::Unavailable,
        }
    }

    fn details(&self) -> Vec<Violation> {
        match self {
            IngressError::Rejected(r) => r.violations(),
            _ => Vec::new(),
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        error_response(self.status(), self.code(), &self.to_string(), &self.details())
    }
}

/// The JSON error body every endpoint uses: `{"error": {code, message, details}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str, details: &[Violation]) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message, "details": details}}))).into_response()
}

pub async fn ingest(
    State(app): State<Arc<App>>,
    Path(source): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let received_at = Utc::now();
    let (label_source, vendor) = match app.config.sources.get_key_value(&source) {
        Some((name, s)) => (name.as_str(), s.vendor.as_str()),
        None => ("unknown", "unknown"),
    };
    let result = handle(&app, &source, query.as_deref(), &headers, body, received_at).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok((outcome, ids)) => {
            telemetry::ingress(label_source, vendor, outcome, seconds);
            let body = if outcome == IngressOutcome::Duplicate {
                json!({"accepted": 0, "duplicate": true, "ids": ids})
            } else {
                json!({"accepted": ids.len(), "ids": ids})
            };
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => {
            telemetry::ingress(label_source, vendor, e.outcome(), seconds);
            let details = e.details();
            tracing::warn!(
                source = %label_source,
                vendor = %vendor,
                status = e.status().as_u16(),
                code = e.code(),
                reason = %e,
                first_problem = ?details.first().map(|v| format!("{}: {}", v.path, v.message)),
                "Ingress rejected."
            );
            e.into_response()
        }
    }
}

async fn handle(
    app: &App,
    source: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    received_at: chrono::DateTime<Utc>,
) -> Result<(IngressOutcome, Vec<String>), IngressError> {
    let config = app.config.sources.get(source).ok_or(IngressError::UnknownSource)?;
    let limit = app.config.server.max_body_bytes;
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(IngressError::TooLarge { limit });
    }
    let body = read_body(body, limit).await?;
    // HMAC needs the body; the other schemes could answer before reading it, but one order
    // for all keeps the code simple and the body is bounded anyway.
    if !auth::check(&config.auth, headers, query, &body) {
        return Err(IngressError::Unauthorized);
    }
    accept(app, source, &body, received_at, true).await
}

/// Normalises and stores one authenticated body from `source`: the part of ingress that a
/// quarantine replay runs again. A rejected body is quarantined when `quarantine_rejects`.
pub async fn accept(
    app: &App,
    source: &str,
    body: &[u8],
    received_at: chrono::DateTime<Utc>,
    quarantine_rejects: bool,
) -> Result<(IngressOutcome, Vec<String>), IngressError> {
    let config = app.config.sources.get(source).ok_or(IngressError::UnknownSource)?;
    let origin = Origin { source, vendor: config.vendor, phone_region: config.phone_region };
    let digest = canonical::body_digest(body);
    let vendors::Normalized { events, degraded } =
        match vendors::normalize_digested(&origin, body, &digest, received_at) {
            Ok(normalized) => normalized,
            Err(rejection) => {
                if quarantine_rejects {
                    quarantine(app.store.as_ref(), source, config.vendor.as_str(), &rejection, body, received_at).await;
                }
                return Err(rejection.into());
            }
        };
    let ingest = Ingest {
        source: source.to_owned(),
        digest,
        body: body.to_vec(),
        received_at: received_at.timestamp_millis(),
        events: events.iter().map(|e| new_event(app, e)).collect::<Result<_, _>>()?,
    };
    let routes: Vec<String> = {
        let mut r: Vec<String> = ingest.events.iter().flat_map(|e| e.routes.iter().cloned()).collect();
        r.sort();
        r.dedup();
        r
    };
    match app.store.ingest(ingest).await {
        Ok(IngestOutcome::Accepted(ids)) => {
            for event in &events {
                telemetry::event(source, event.kind.as_str());
            }
            for route in &routes {
                app.dispatcher.wake(route);
            }
            if !degraded.is_empty() {
                let fields: Vec<&str> = degraded.iter().map(|d| d.field).collect();
                fields.iter().for_each(|field| telemetry::degraded(source, config.vendor.as_str(), field));
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

fn new_event(app: &App, event: &CloudEvent) -> Result<NewEvent, IngressError> {
    let kind = event.kind.as_str();
    let source = &event.data.common.source;
    let routes = app
        .config
        .routes
        .iter()
        .filter(|(_, r)| r.matches(kind, source, event.data.common.test))
        .map(|(name, _)| name.clone())
        .collect();
    let json = serde_json::to_string(event).map_err(|e| IngressError::Unreadable(e.to_string()))?;
    Ok(NewEvent { id: event.id.clone(), kind: kind.to_owned(), subject: event.subject.clone(), json, routes })
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, IngressError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large { IngressError::TooLarge { limit } } else { IngressError::Unreadable(e.to_string()) }
    })
}

/// Keeps a rejected body so an operator can inspect and replay it. Never records auth
/// material: only the body, which the source authenticated or which failed before auth.
async fn quarantine(
    store: &dyn Store,
    source: &str,
    vendor: &str,
    rejection: &Rejection,
    body: &[u8],
    received_at: chrono::DateTime<Utc>,
) {
    let (status, reason) = match rejection {
        Rejection::NotJson { .. } => (400, "invalid_json"),
        Rejection::UnknownEvent { .. } => (422, "unknown_event"),
        Rejection::Invalid { .. } => (422, "schema_violation"),
    };
    let item = Quarantined {
        source: source.to_owned(),
        vendor: vendor.to_owned(),
        received_at: received_at.timestamp_millis(),
        status,
        reason: reason.to_owned(),
        details: serde_json::to_string(&rejection.violations()).unwrap_or_else(|_| "[]".into()),
        body: body.to_vec(),
    };
    if let Err(e) = store.quarantine(item).await {
        tracing::error!(source = %source, error = %e, "Could not quarantine a rejected payload.");
    }
}
