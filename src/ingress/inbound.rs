//! `POST /v1/inbound/{source}`: a vendor's inbound webhook (vox `call_inbound`), sent just
//! before a call starts and waiting for the variables of the agent's prompt. callgate
//! authenticates it like the source's ingress, posts a canonical `call.inbound_lookup`
//! CloudEvent to `[sources.NAME.inbound] url` (with the route-style headers and signature),
//! and answers the lookup's `{"variables", "metadata"}` in the vendor's shape.
//!
//! **Invariant:** the answer never waits past the source's `inbound.timeout`: a lookup that is
//! slow, fails or answers something unusable is answered with the configured fallback, and
//! counted and logged, so the call always proceeds.
//! **Invariant:** nothing of an inbound request is stored, and no phone number is logged:
//! only the counters remember it.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, RawQuery, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use tokio::time::Instant;

use super::{IngressError, authenticated};
use crate::{
    canonical::lookup::{LookupAnswer, LookupRequest},
    config::{Config, InboundConfig},
    delivery::{self, Egress},
    server::App,
    telemetry::{self, InboundOutcome},
    vendors,
};

/// Largest lookup answer read, in bytes; a larger one is malformed (variables for a prompt
/// are small, and memory per request stays bounded).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The lookup side of every source with `[sources.NAME.inbound]`.
pub struct Lookups {
    client: reqwest::Client,
}

impl Lookups {
    pub fn new(config: &Config) -> reqwest::Result<Lookups> {
        Ok(Lookups { client: delivery::client(config.delivery.connect_timeout)? })
    }

    /// Asks `inbound.url`, answering by `deadline`. The error is the fallback's reason: an
    /// outcome and a short text without the URL, the answer or any number.
    async fn ask(
        &self,
        inbound: &InboundConfig,
        request: &LookupRequest,
        deadline: Instant,
    ) -> Result<LookupAnswer, (InboundOutcome, String)> {
        let failed = |why: String| (InboundOutcome::Failed, why);
        let json = serde_json::to_string(request).map_err(|e| failed(format!("serialising the lookup: {e}")))?;
        // Prepared per request from the request's configuration snapshot, so a reload that
        // changes the lookup's headers or secrets never mixes them with another URL.
        let (headers, _cut) = Egress::new(&inbound.headers, &inbound.signing_secrets).headers(&request.id, &json);
        let exchange = async {
            let response = self
                .client
                .post(inbound.url.clone())
                .timeout(inbound.timeout)
                .headers(headers)
                .body(json)
                .send()
                .await
                .map_err(|e| {
                    // reqwest's own limit (a backstop equal to the deadline) is a timeout too.
                    let outcome = if e.is_timeout() { InboundOutcome::Timeout } else { InboundOutcome::Failed };
                    (outcome, delivery::describe(&e, inbound.timeout))
                })?;
            let status = response.status();
            if !status.is_success() {
                return Err(failed(format!("answered {status}")));
            }
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|_| failed("the answer could not be read".into()))? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err((InboundOutcome::Malformed, format!("answer larger than {MAX_ANSWER_BYTES} bytes")));
                }
                body.extend_from_slice(&chunk);
            }
            LookupAnswer::parse(&body).map_err(|e| (InboundOutcome::Malformed, format!("answer {e}")))
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err((InboundOutcome::Timeout, format!("no answer within {:?}", inbound.timeout))),
        }
    }
}

pub async fn inbound(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let config = app.config.load_full();
    let source = path.ok().map(|Path(source)| source);
    let label = match source.as_deref().and_then(|s| config.sources.get_key_value(s)) {
        Some((name, _)) => name.as_str(),
        None => "unknown",
    };
    let result = match source.as_deref() {
        Some(source) => handle(&app, &config, source, query.as_deref(), &headers, body, started).await,
        None => Err(IngressError::UnknownSource),
    };
    let (outcome, response) = match result {
        Ok((outcome, answer)) => (outcome, (StatusCode::OK, axum::Json(answer)).into_response()),
        Err(e) => {
            let details = e.details();
            tracing::warn!(
                source = %label,
                status = e.status().as_u16(),
                code = e.code(),
                reason = %e,
                first_problem = ?details.first().map(|v| format!("{}: {}", v.path, v.message)),
                "Inbound webhook rejected."
            );
            (InboundOutcome::Rejected, e.into_response())
        }
    };
    telemetry::inbound(label, outcome, started.elapsed().as_secs_f64());
    response
}

async fn handle(
    app: &App,
    snapshot: &Config,
    source: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<(InboundOutcome, serde_json::Value), IngressError> {
    let config = snapshot.sources.get(source).ok_or(IngressError::UnknownSource)?;
    let inbound = config.inbound.as_ref().ok_or(IngressError::NoInbound)?;
    // The slot is held until the answer is out: a slow lookup counts against the gateway's
    // concurrency, bounded by the deadline.
    let (body, _slot) = authenticated(app, snapshot, source, &config.auth, query, headers, body).await?;
    let call = vendors::inbound::request(config.vendor, &body)?;
    let request = LookupRequest::new(source, config.vendor, config.phone_region, call, Utc::now());
    let deadline = started + inbound.timeout;
    let (outcome, answer) = match app.lookups.ask(inbound, &request, deadline).await {
        Ok(answer) => (InboundOutcome::Answered, answer),
        Err((outcome, reason)) => {
            let waited = started.elapsed();
            tracing::warn!(
                source = %source,
                outcome = outcome.as_str(),
                reason = %reason,
                waited_ms = waited.as_millis() as u64,
                lookup_id = %request.id,
                "Inbound lookup fell back to the configured answer."
            );
            (outcome, inbound.fallback.clone())
        }
    };
    Ok((outcome, vendors::inbound::response(config.vendor, &answer)))
}
