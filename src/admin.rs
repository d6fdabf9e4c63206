//! The admin API (`/v1/admin/...`): routes (pause, resume, test sends, the delivery log, the
//! backlog of a removed route), events (one, with each route's delivery), dead letters (list,
//! inspect, replay), the quarantine (list, inspect, replay), the vendor drift report, reload and
//! the live tail (`tail.rs`); and call records (`/v1/calls`: list, and one call's merged record, events
//! and delivery state). Every call needs `Authorization: Bearer <[admin] token>` (the tail
//! also takes a stream ticket); without a configured token the API is off.
//!
//! **Invariant:** the admin API changes the store only through the `Store` trait and tells
//! the delivery workers through the `Dispatcher`, so counts, gauges and workers stay true.

use std::{collections::BTreeSet, sync::Arc};

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, Request, State},
    http::{StatusCode, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;

use crate::{
    auth,
    canonical::{CloudEvent, EventType, Status, Vendor, call::merge, sample},
    config::ConfigErrors,
    drift::MAX_ROWS_PER_SOURCE,
    http::{cut, error_response},
    ingress::{self, IngressError, OnReject},
    server::App,
    store::{
        CallDelivery, CallFilter, CallStatus, DeliveryState, Filter, LogFilter, LogOutcome, Millis, StoreError,
        TestSend, now_ms, rfc3339,
    },
    telemetry::IngressOutcome,
};

pub fn router(app: Arc<App>) -> Router {
    // The live tail checks its own credentials: a browser's EventSource brings a ticket.
    let stream = Router::new().route("/v1/admin/stream", get(crate::tail::stream)).with_state(app.clone());
    Router::new()
        .route("/v1/admin/stream/tickets", post(crate::tail::ticket))
        .route("/v1/admin/routes", get(routes))
        .route("/v1/admin/routes/{name}/pause", post(pause))
        .route("/v1/admin/routes/{name}/resume", post(resume))
        .route("/v1/admin/routes/{name}/backlog", delete(discard_backlog))
        .route("/v1/admin/reload", post(reload))
        .route("/v1/admin/routes/{name}/deliveries", get(deliveries))
        .route("/v1/admin/routes/{name}/test", post(test_send))
        .route("/v1/admin/events/{id}", get(event))
        .route("/v1/admin/dead-letters", get(dead_letters))
        .route("/v1/admin/dead-letters/replay", post(replay_dead_letters))
        .route("/v1/admin/dead-letters/{id}", get(dead_letter))
        .route("/v1/admin/dead-letters/{id}/replay", post(replay_dead_letter))
        .route("/v1/admin/quarantine", get(quarantine))
        .route("/v1/admin/quarantine/replay", post(replay_quarantine))
        .route("/v1/admin/quarantine/{id}", get(quarantined))
        .route("/v1/admin/quarantine/{id}/replay", post(replay_quarantined))
        .route("/v1/admin/drift", get(drift))
        .route("/v1/calls", get(calls))
        .route("/v1/calls/{subject}", get(call))
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .with_state(app)
        .merge(stream)
}

/// Errors of the admin API.
#[derive(Debug)]
enum AdminError {
    Disabled,
    Unauthorized,
    NotFound(String),
    BadRequest(String),
    /// 409: the request does not fit the running configuration.
    Conflict(String),
    /// 422: the configuration file has errors; the running configuration stays.
    InvalidConfig(ConfigErrors),
    Store(StoreError),
    /// A bulk operation stopped part-way because the store failed: what was done before.
    Interrupted {
        done: usize,
        error: String,
    },
}

/// Longest echo of a caller's value in an admin error message.
const ECHO: usize = 80;

/// `Query<T>` whose rejection is the JSON error body.
struct AdminQuery<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AdminQuery<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(AdminQuery(value)),
            Err(e) => Err(AdminError::BadRequest(cut(&e.body_text(), 2 * ECHO))),
        }
    }
}

/// `Path<T>` whose rejection is the JSON error body.
struct AdminPath<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AdminPath<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(AdminPath(value)),
            Err(e) => Err(AdminError::BadRequest(cut(&e.body_text(), 2 * ECHO))),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match self {
            AdminError::Disabled => error_response::<()>(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "the admin API is off: set [admin] token to enable it",
                &[],
            ),
            AdminError::Unauthorized => error_response::<()>(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin bearer token is required",
                &[],
            ),
            AdminError::NotFound(what) => error_response::<()>(StatusCode::NOT_FOUND, "not_found", &what, &[]),
            AdminError::BadRequest(why) => error_response::<()>(StatusCode::BAD_REQUEST, "bad_request", &why, &[]),
            AdminError::Conflict(why) => error_response::<()>(StatusCode::CONFLICT, "conflict", &why, &[]),
            AdminError::InvalidConfig(errors) => {
                let details: Vec<_> =
                    errors.errors.iter().map(|e| json!({ "key": e.key, "message": e.message })).collect();
                let message = format!(
                    "{} has {} problem(s); nothing was applied and the running configuration stays",
                    errors.path.display(),
                    errors.errors.len()
                );
                error_response(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", &message, &details)
            }
            AdminError::Store(e) => {
                tracing::error!(error = %e, "Admin request failed in the store.");
                error_response::<()>(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable",
                    &[],
                )
            }
            AdminError::Interrupted { done, error } => {
                tracing::error!(done, error = %error, "A bulk admin operation stopped: the store failed.");
                let message =
                    format!("the store failed after {done} item(s) were done; run the same request again to go on");
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    &message,
                    &[json!({ "done": done })],
                )
            }
        }
    }
}

async fn require_token(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    // The running configuration's token: a reload rotates it.
    let config = app.config.load();
    let Some(token) = &config.admin.token else { return AdminError::Disabled.into_response() };
    if !auth::bearer_matches(request.headers(), token) {
        return AdminError::Unauthorized.into_response();
    }
    drop(config);
    next.run(request).await
}

/// Query parameters shared by the list and bulk-replay endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    route: Option<String>,
    source: Option<String>,
    /// RFC 3339 time, or a duration back from now (`2h`, `30m`).
    since: Option<String>,
    before_id: Option<i64>,
    /// Bulk quarantine replay: go on after this id (an earlier answer's `next_after_id`).
    after_id: Option<i64>,
    limit: Option<usize>,
    /// Bulk replay of everything (required when neither a name nor `since` narrows it).
    #[serde(default)]
    all: bool,
}

impl Params {
    fn filter(&self, name: Option<&String>) -> Result<Filter, AdminError> {
        Ok(Filter {
            id: None,
            name: name.cloned(),
            since: self.since.as_deref().map(parse_since).transpose()?,
            before_id: self.before_id,
            after_id: self.after_id,
            limit: self.limit,
        })
    }

    fn bulk(&self, name: Option<&String>) -> Result<Filter, AdminError> {
        if name.is_none() && self.since.is_none() && !self.all {
            return Err(AdminError::BadRequest("say what to replay: a name, `since`, or `all=true`".into()));
        }
        Ok(Filter { limit: None, before_id: None, ..self.filter(name)? })
    }
}

/// `since` as an RFC 3339 time or a duration before now.
fn parse_since(text: &str) -> Result<Millis, AdminError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    humantime::parse_duration(text).map(|d| now_ms() - d.as_millis() as Millis).map_err(|_| {
        AdminError::BadRequest(format!(
            "`since` must be an RFC 3339 time or a duration such as 2h, not `{}`",
            cut(text, ECHO)
        ))
    })
}

async fn routes(State(app): State<Arc<App>>) -> Result<Response, AdminError> {
    let counts = app.store.counts().await?;
    let paused = app.store.paused().await?;
    let running = app.config.load_full();
    let mut names: BTreeSet<&String> = running.routes.keys().collect();
    names.extend(counts.backlog.keys());
    names.extend(counts.dead.keys());
    let list: Vec<_> = names
        .into_iter()
        .map(|name| {
            let config = running.routes.get(name);
            let pause = paused.iter().find(|p| &p.route == name);
            let backlog = counts.backlog.get(name).copied().unwrap_or(0);
            let enabled = config.is_some_and(|c| c.enabled);
            json!({
                "name": name,
                "configured": config.is_some(),
                "enabled": enabled,
                // Waiting for a route this gateway does not deliver (removed or disabled): kept
                // until the route returns or an operator discards it.
                "orphaned": backlog > 0 && !enabled,
                "paused": pause.is_some(),
                "paused_since": pause.map(|p| &p.since),
                "paused_reason": pause.map(|p| &p.reason),
                "backlog": backlog,
                "dead_letters": counts.dead.get(name).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(Json(json!({ "routes": list })).into_response())
}

async fn pause(State(app): State<Arc<App>>, AdminPath(name): AdminPath<String>) -> Result<Response, AdminError> {
    set_paused(&app, &name, true).await
}

async fn resume(State(app): State<Arc<App>>, AdminPath(name): AdminPath<String>) -> Result<Response, AdminError> {
    set_paused(&app, &name, false).await
}

async fn set_paused(app: &App, name: &str, paused: bool) -> Result<Response, AdminError> {
    if !app.config.load().routes.contains_key(name) {
        return Err(AdminError::NotFound(format!("no route named `{}`", cut(name, ECHO))));
    }
    // The store tells every worker (of every replica) through its notices.
    app.store.set_paused(name, paused.then_some("paused by an operator"), now_ms()).await?;
    tracing::info!(route = %name, paused, "Route pause changed by an operator.");
    Ok(Json(json!({ "route": name, "paused": paused })).into_response())
}

/// `DELETE /v1/admin/routes/{name}/backlog`: drops the waiting deliveries of a route this
/// gateway no longer delivers (removed from the configuration, or disabled). Deliveries in
/// flight finish; dead letters stay.
async fn discard_backlog(
    State(app): State<Arc<App>>,
    AdminPath(name): AdminPath<String>,
) -> Result<Response, AdminError> {
    let enabled = app.config.load().routes.get(&name).is_some_and(|r| r.enabled);
    if enabled || app.dispatcher.delivers(&name) {
        return Err(AdminError::Conflict(format!(
            "route `{}` is configured and delivering; remove it from the configuration (or disable it) and reload first",
            cut(&name, ECHO)
        )));
    }
    let discarded = app.store.discard_backlog(&name, now_ms()).await?;
    let left = app.store.counts().await?.backlog.get(&name).copied().unwrap_or(0);
    tracing::warn!(route = %name, discarded, left, "An operator discarded the backlog of a route that is not delivered.");
    Ok(Json(json!({ "route": name, "discarded": discarded, "backlog": left })).into_response())
}

/// `POST /v1/admin/reload`: reads the configuration file again and applies it (as SIGHUP).
async fn reload(State(app): State<Arc<App>>) -> Result<Response, AdminError> {
    match crate::reload::reload(&app, "admin API").await {
        Ok(changes) => Ok(Json(changes).into_response()),
        Err(errors) => Err(AdminError::InvalidConfig(errors)),
    }
}

/// Query parameters of the delivery log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    /// RFC 3339 time, or a duration back from now (`2h`, `30m`).
    since: Option<String>,
    before_id: Option<i64>,
    limit: Option<usize>,
    subject: Option<String>,
    /// `success`, `failed` or `dead`.
    outcome: Option<String>,
    /// Only test sends (`true`) or only deliveries (`false`).
    test: Option<bool>,
}

async fn deliveries(
    State(app): State<Arc<App>>,
    AdminPath(name): AdminPath<String>,
    AdminQuery(params): AdminQuery<LogParams>,
) -> Result<Response, AdminError> {
    let outcome = match params.outcome.as_deref() {
        None => None,
        Some("success") => Some(LogOutcome::Success),
        Some("failed") => Some(LogOutcome::Failed),
        Some("dead") => Some(LogOutcome::Dead),
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "`outcome` must be success, failed or dead, not `{}`",
                cut(other, ECHO)
            )));
        }
    };
    let filter = LogFilter {
        route: Some(name.clone()),
        since: params.since.as_deref().map(parse_since).transpose()?,
        before_id: params.before_id,
        subject: params.subject.clone(),
        outcome,
        test: params.test,
        limit: params.limit,
    };
    let items = app.store.delivery_log(&filter).await?;
    // A route no longer configured still shows the log it left.
    if items.is_empty() && !app.config.load().routes.contains_key(&name) {
        let any = LogFilter { route: Some(name.clone()), limit: Some(1), ..LogFilter::default() };
        if app.store.delivery_log(&any).await?.is_empty() {
            return Err(AdminError::NotFound(format!("no route named `{}`", cut(&name, ECHO))));
        }
    }
    let next =
        (items.len() == params.limit.unwrap_or(100).clamp(1, 1000)).then(|| items.last().map(|d| d.id)).flatten();
    Ok(Json(json!({ "deliveries": items, "next_before_id": next })).into_response())
}

async fn event(State(app): State<Arc<App>>, AdminPath(id): AdminPath<String>) -> Result<Response, AdminError> {
    match app.store.event(&id, now_ms()).await? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(AdminError::NotFound(format!("no stored event `{}`", cut(&id, ECHO)))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestParams {
    /// The canonical type of the sample event; default: the first the route subscribes to.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Sends a sample event of a type to a route now, outside the outbox, as a delivery would go
/// (headers, signature), and answers what the receiver said; kept in the log as a test.
async fn test_send(
    State(app): State<Arc<App>>,
    AdminPath(name): AdminPath<String>,
    AdminQuery(params): AdminQuery<TestParams>,
) -> Result<Response, AdminError> {
    let config = app.config.load();
    let Some(route) = config.routes.get(&name) else {
        return Err(AdminError::NotFound(format!("no route named `{}`", cut(&name, ECHO))));
    };
    let known = || EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
    let kind = match params.kind.as_deref() {
        Some(text) => EventType::parse(text).ok_or_else(|| {
            AdminError::BadRequest(format!("unknown event type `{}`; known types: {}", cut(text, ECHO), known()))
        })?,
        None => {
            let patterns: Vec<wildmatch::WildMatch> =
                route.events.iter().map(|p| wildmatch::WildMatch::new(p)).collect();
            EventType::ALL
                .iter()
                .copied()
                .find(|t| patterns.iter().any(|p| p.matches(t.as_str())))
                .unwrap_or(EventType::CallEnded)
        }
    };
    let (source, vendor) = sample_source(&config, route);
    let event = sample::sample(kind, &source, vendor, chrono::Utc::now());
    let json = serde_json::to_string(&event).map_err(|e| AdminError::BadRequest(e.to_string()))?;
    let tested = app.dispatcher.test_send(&name, route, &event.id, &event.subject, json).await;
    let attempt = tested.attempt.clone();
    let send = TestSend {
        route: name.clone(),
        event_id: event.id.clone(),
        kind: kind.as_str().to_owned(),
        subject: event.subject.clone(),
        success: tested.success,
        attempt: tested.attempt,
    };
    // The receiver has been answered already: a log the store cannot keep now is said, not
    // turned into a failure of the send.
    let log_id = match app.store.record_test(send).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(route = %name, error = %e, "Could not keep a test send in the delivery log.");
            None
        }
    };
    tracing::info!(route = %name, event_type = %kind, status = ?attempt.status, "Test send by an operator.");
    Ok(Json(json!({
        "route": name,
        "event_id": event.id,
        "type": kind.as_str(),
        "subject": event.subject,
        "outcome": if tested.success { "success" } else { "failed" },
        "status": attempt.status,
        "duration_ms": attempt.duration_ms,
        "response": attempt.response,
        "error": attempt.error,
        "log_id": log_id,
    }))
    .into_response())
}

/// The source a route's sample event claims to come from: the first of the route's sources,
/// else the first configured source, with its vendor.
fn sample_source(config: &crate::config::Config, route: &crate::config::RouteConfig) -> (String, Vendor) {
    let name = route.sources.as_ref().and_then(|s| s.first()).or_else(|| config.sources.keys().next());
    match name.and_then(|n| config.sources.get(n).map(|s| (n, s))) {
        Some((name, source)) => (name.clone(), source.vendor),
        None => ("callgate-test".to_owned(), Vendor::ALL[0]),
    }
}

async fn dead_letters(
    State(app): State<Arc<App>>,
    AdminQuery(params): AdminQuery<Params>,
) -> Result<Response, AdminError> {
    let items = app.store.dead_letters(&params.filter(params.route.as_ref())?).await?;
    let next =
        (items.len() == params.limit.unwrap_or(100).clamp(1, 1000)).then(|| items.last().map(|d| d.id)).flatten();
    Ok(Json(json!({ "dead_letters": items, "next_before_id": next })).into_response())
}

async fn dead_letter(State(app): State<Arc<App>>, AdminPath(id): AdminPath<i64>) -> Result<Response, AdminError> {
    match app.store.dead_letter(id).await? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(AdminError::NotFound(format!("no dead letter {id}"))),
    }
}

async fn replay_dead_letter(
    State(app): State<Arc<App>>,
    AdminPath(id): AdminPath<i64>,
) -> Result<Response, AdminError> {
    let replayed = replay(&app, &Filter { id: Some(id), ..Filter::default() }).await?;
    if replayed == 0 {
        return Err(AdminError::NotFound(format!("no dead letter {id}")));
    }
    Ok(Json(json!({ "replayed": replayed })).into_response())
}

async fn replay_dead_letters(
    State(app): State<Arc<App>>,
    AdminQuery(params): AdminQuery<Params>,
) -> Result<Response, AdminError> {
    let replayed = replay(&app, &params.bulk(params.route.as_ref())?).await?;
    Ok(Json(json!({ "replayed": replayed })).into_response())
}

async fn replay(app: &App, filter: &Filter) -> Result<usize, AdminError> {
    let replayed = app.store.replay_dead_letters(filter, now_ms()).await?;
    tracing::info!(count = replayed.len(), "Dead letters replayed by an operator.");
    Ok(replayed.len())
}

async fn quarantine(
    State(app): State<Arc<App>>,
    AdminQuery(params): AdminQuery<Params>,
) -> Result<Response, AdminError> {
    let items = app.store.quarantined(&params.filter(params.source.as_ref())?, false).await?;
    let next =
        (items.len() == params.limit.unwrap_or(100).clamp(1, 1000)).then(|| items.last().map(|q| q.id)).flatten();
    Ok(Json(json!({ "quarantine": items, "next_before_id": next })).into_response())
}

async fn quarantined(State(app): State<Arc<App>>, AdminPath(id): AdminPath<i64>) -> Result<Response, AdminError> {
    let filter = Filter { id: Some(id), ..Filter::default() };
    match app.store.quarantined(&filter, true).await?.pop() {
        Some(item) => Ok(Json(item).into_response()),
        None => Err(AdminError::NotFound(format!("nothing quarantined with id {id}"))),
    }
}

async fn replay_quarantined(
    State(app): State<Arc<App>>,
    AdminPath(id): AdminPath<i64>,
) -> Result<Response, AdminError> {
    let replay = replay_quarantine_matching(&app, &Filter { id: Some(id), ..Filter::default() }, 1).await?;
    if replay.results.is_empty() {
        return Err(AdminError::NotFound(format!("nothing quarantined with id {id}")));
    }
    Ok(Json(replay.answer()).into_response())
}

async fn replay_quarantine(
    State(app): State<Arc<App>>,
    AdminQuery(params): AdminQuery<Params>,
) -> Result<Response, AdminError> {
    let most = params.limit.map_or(REPLAY_MAX, |l| l.clamp(1, REPLAY_MAX));
    let replay = replay_quarantine_matching(&app, &params.bulk(params.source.as_ref())?, most).await?;
    Ok(Json(replay.answer()).into_response())
}

/// Quarantined payloads one bulk replay reads from the store at a time.
const REPLAY_PAGE: usize = 200;
/// Most payloads one bulk replay request handles (`limit` lowers it); past it the answer says
/// how to go on.
const REPLAY_MAX: usize = 10_000;

/// What a quarantine replay did.
#[derive(Default)]
struct QuarantineReplay {
    results: Vec<serde_json::Value>,
    /// Set when `REPLAY_MAX` stopped it with matches left: replay again from after this id.
    next_after_id: Option<i64>,
}

impl QuarantineReplay {
    fn answer(&self) -> serde_json::Value {
        let count = |outcome: &str| self.results.iter().filter(|r| r["outcome"] == outcome).count();
        json!({
            "results": self.results,
            "accepted": count("accepted"),
            "duplicate": count("duplicate"),
            "rejected": count("rejected"),
            "more": self.next_after_id.is_some(),
            "next_after_id": self.next_after_id,
        })
    }
}

/// Validates each matching quarantined payload again, oldest first, paging through every
/// match: one that passes flows as if it had just arrived and leaves the quarantine, one that
/// fails stays with its new problems. A store failure stops it and says how far it got.
async fn replay_quarantine_matching(app: &App, filter: &Filter, most: usize) -> Result<QuarantineReplay, AdminError> {
    let mut replay = QuarantineReplay::default();
    let mut after = filter.after_id;
    loop {
        let page_filter = Filter { after_id: after, limit: Some(REPLAY_PAGE), ..filter.clone() };
        let page = app.store.quarantined_raw(&page_filter).await.map_err(|e| interrupted(&replay, e))?;
        let last_page = page.len() < REPLAY_PAGE;
        for (id, source, body) in page {
            if replay.results.len() == most {
                replay.next_after_id = after;
                return Ok(replay);
            }
            after = Some(id);
            let config = app.config.load_full();
            let result =
                ingress::accept(app, &config, &source, body.into(), chrono::Utc::now(), OnReject::Report).await;
            let entry = match result {
                Ok((outcome, ids)) => {
                    app.store.release_quarantined(id).await.map_err(|e| interrupted(&replay, e))?;
                    let outcome = if outcome == IngressOutcome::Duplicate { "duplicate" } else { "accepted" };
                    json!({ "id": id, "source": source, "outcome": outcome, "ids": ids })
                }
                Err(e @ (IngressError::Unavailable | IngressError::Internal(_))) => {
                    return Err(AdminError::Interrupted { done: replay.results.len(), error: e.to_string() });
                }
                Err(e) => {
                    json!({ "id": id, "source": source, "outcome": "rejected", "code": e.code(), "message": e.to_string(), "details": e.details() })
                }
            };
            replay.results.push(entry);
        }
        if last_page || filter.id.is_some() {
            break;
        }
    }
    tracing::info!(count = replay.results.len(), "Quarantined payloads replayed by an operator.");
    Ok(replay)
}

/// The vendor drift report (`source`, `since` and `limit` narrow it), most recently seen
/// first. This replica's own sums are written first, so it shows everything this replica
/// accepted; other replicas' are at most `drift::FLUSH_EVERY` late.
async fn drift(State(app): State<Arc<App>>, AdminQuery(params): AdminQuery<Params>) -> Result<Response, AdminError> {
    if params.route.is_some() || params.before_id.is_some() || params.after_id.is_some() || params.all {
        return Err(AdminError::BadRequest("the drift report takes only `source`, `since` and `limit`".into()));
    }
    app.drift.flush().await?;
    let rows = app.store.drift(&params.filter(params.source.as_ref())?).await?;
    let list: Vec<_> = rows
        .into_iter()
        .map(|d| {
            json!({
                "source": d.source,
                "vendor_event": d.vendor_event,
                "kind": d.kind,
                "path": d.path,
                "value": (!d.value.is_empty()).then_some(d.value),
                "count": d.count,
                "first_seen": rfc3339(d.first_seen),
                "last_seen": rfc3339(d.last_seen),
                "example": d.example,
            })
        })
        .collect();
    Ok(Json(json!({ "drift": list, "max_rows_per_source": MAX_ROWS_PER_SOURCE })).into_response())
}

/// Query parameters of the call listing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallParams {
    source: Option<String>,
    /// RFC 3339 time, or a duration back from now (`2h`): calls first accepted since then.
    since: Option<String>,
    /// A canonical status (`completed`, `no_answer`, `busy`, `canceled`, `failed`), or
    /// `in_progress` for calls without a terminal event yet.
    status: Option<String>,
    before_id: Option<i64>,
    limit: Option<usize>,
}

async fn calls(
    State(app): State<Arc<App>>,
    AdminQuery(params): AdminQuery<CallParams>,
) -> Result<Response, AdminError> {
    let status = match params.status.as_deref() {
        None => None,
        Some("in_progress") => Some(CallStatus::InProgress),
        Some(text) => match Status::parse(text) {
            Some(status) => Some(CallStatus::Is(status.as_str().to_owned())),
            None => {
                let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                return Err(AdminError::BadRequest(format!(
                    "`status` must be in_progress or one of {}, not `{}`",
                    known.join(", "),
                    cut(text, ECHO)
                )));
            }
        },
    };
    let filter = CallFilter {
        source: params.source.clone(),
        since: params.since.as_deref().map(parse_since).transpose()?,
        status,
        before_id: params.before_id,
        limit: params.limit,
    };
    let items = app.store.calls(&filter).await?;
    let next =
        (items.len() == params.limit.unwrap_or(100).clamp(1, 1000)).then(|| items.last().map(|c| c.id)).flatten();
    Ok(Json(json!({ "calls": items, "next_before_id": next })).into_response())
}

/// One call: its summary, its merged record (`canonical::call::merge`), its events in
/// acceptance order and each route's delivery state.
async fn call(State(app): State<Arc<App>>, AdminPath(subject): AdminPath<String>) -> Result<Response, AdminError> {
    let Some(stored) = app.store.call(&subject, now_ms()).await? else {
        return Err(AdminError::NotFound(format!("no call with subject `{}`", cut(&subject, ECHO))));
    };
    let mut events = Vec::with_capacity(stored.events.len());
    let mut readable = Vec::with_capacity(stored.events.len());
    for event in &stored.events {
        let value: serde_json::Value =
            serde_json::from_str(&event.json).unwrap_or_else(|_| serde_json::Value::String(event.json.clone()));
        match CloudEvent::deserialize(&value) {
            Ok(parsed) => readable.push(parsed),
            // Kept in the answer, left out of the merge (and counted).
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "A stored event of a call could not be read for its record.")
            }
        }
        events.push(value);
    }
    let record = merge(&readable);
    let names: BTreeSet<&str> = stored.deliveries.iter().map(|d| d.route.as_str()).collect();
    let routes: Vec<_> = names
        .into_iter()
        .map(|name| {
            let deliveries: Vec<&CallDelivery> = stored.deliveries.iter().filter(|d| d.route == name).collect();
            let count = |state: DeliveryState| deliveries.iter().filter(|d| d.state == state).count();
            json!({
                "route": name,
                "configured": app.config.load().routes.contains_key(name),
                "delivered": count(DeliveryState::Delivered),
                "pending": count(DeliveryState::Pending),
                "retrying": count(DeliveryState::Retrying),
                "in_flight": count(DeliveryState::InFlight),
                "dead": count(DeliveryState::Dead),
                "deliveries": deliveries,
            })
        })
        .collect();
    Ok(Json(json!({
        "subject": stored.summary.subject,
        "summary": stored.summary,
        "record": record,
        "events": events,
        "events_truncated": stored.truncated,
        "unreadable_events": stored.events.len() - readable.len(),
        "routes": routes,
    }))
    .into_response())
}

fn interrupted(replay: &QuarantineReplay, e: StoreError) -> AdminError {
    AdminError::Interrupted { done: replay.results.len(), error: e.to_string() }
}
