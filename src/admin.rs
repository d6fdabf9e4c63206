//! The admin API (`/v1/admin/...`): routes (pause, resume, test sends, the delivery log, the
//! backlog of a removed route), events (one, with each route's delivery), dead letters (list,
//! inspect, replay), the quarantine (list, inspect, replay), the vendor drift report, reload,
//! the live tail (`tail.rs`) and its own OpenAPI document; and call records (`/v1/calls`: list,
//! and one call's merged record, events and delivery state) and their erasure (one call, or
//! every call of a phone number: `store::erase`). Every call needs
//! `Authorization: Bearer <[admin] token>` (the tail also takes a stream ticket); without a
//! configured token the API is off.
//!
//! **Invariant:** the admin API changes the store only through the `Store` trait and tells
//! the delivery workers through the `Dispatcher`, so counts, gauges and workers stay true.
//! **Invariant:** every admin endpoint is registered through [`endpoints`] from its
//! `#[utoipa::path]`, so the router and the OpenAPI document are one list (a unit test fails
//! on a route the document lacks, and on a documented path the router lacks).

use std::{
    collections::BTreeSet,
    sync::{Arc, LazyLock},
};

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, Request, State},
    http::{StatusCode, header::CONTENT_TYPE, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::{
    IntoParams, Modify, OpenApi, ToSchema,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth,
    canonical::{CloudEvent, EventType, Status, Vendor, call::merge, sample},
    config::ConfigErrors,
    drift::MAX_ROWS_PER_SOURCE,
    http::{ErrorBody, cut, error_response},
    ingress::{self, IngressError, OnReject},
    reload::Changes,
    server::App,
    store::{
        CallDelivery, CallFilter, CallStatus, CallSummary, DeadLetter, DeadLetterDetail, DeliveryState, EventDetail,
        Filter, LogEntry, LogFilter, LogOutcome, Millis, QuarantineItem, StoreError, TestSend,
        erase::{Erased, Erasure, Number},
        now_ms, rfc3339,
    },
    tail,
    telemetry::IngressOutcome,
    vendors::Violation,
};

/// The document's frame: what no handler says (title, version = the crate's, the bearer
/// scheme required by every operation, the tags). The paths come from [`endpoints`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "callgate admin API",
        description = "Routes, the delivery log, events, dead letters, the quarantine, the drift \
                       report, reload, the live tail and call records of a running callgate gateway. \
                       Every call needs `Authorization: Bearer <[admin] token>` (the live tail also \
                       takes a stream ticket); without a configured token every call answers 403. \
                       Every error is the JSON body `ErrorBody`."
    ),
    modifiers(&AdminToken),
    // Named only by the shared error answers (`answers`), so not found by itself.
    components(schemas(ErrorBody)),
    security(("admin_token" = [])),
    tags(
        (name = "routes", description = "Delivery routes: state, pause and resume, the delivery log, test sends, an orphaned backlog"),
        (name = "events", description = "One stored event and each route's delivery of it"),
        (name = "dead-letters", description = "Deliveries that ran out of attempts: list, inspect, replay"),
        (name = "quarantine", description = "Rejected payloads: list, inspect, validate again"),
        (name = "drift", description = "What vendors send that the mapping does not know"),
        (name = "config", description = "Reloading the configuration file"),
        (name = "tail", description = "The live tail: server-sent events of accepted events and delivery outcomes"),
        (name = "calls", description = "Call records: one merged view per call; erasure of a call or of a phone number's calls"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The `admin_token` bearer scheme, and the live tail's `stream_ticket` (the other way to
/// open `GET /v1/admin/stream`).
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The `[admin] token` of the gateway's configuration."))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin_token", SecurityScheme::Http(scheme));
        components.add_security_scheme(
            "stream_ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use ticket from `POST /v1/admin/stream/tickets`, good for 60 s: only \
                 `GET /v1/admin/stream` takes it, instead of the bearer header (a browser's \
                 `EventSource` cannot send headers).",
            ))),
        );
    }
}

/// Every admin endpoint behind the bearer-token middleware, each from its handler's
/// `#[utoipa::path]` (method, path, parameters, answers). Adding an endpoint is its annotated
/// handler and one `.routes(routes!(handler))` line here (or in [`self_authorised`]): the
/// router and the document are both made from these lists.
fn endpoints() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_document))
        .routes(routes!(list_routes))
        .routes(routes!(pause_route))
        .routes(routes!(resume_route))
        .routes(routes!(discard_backlog))
        .routes(routes!(reload))
        .routes(routes!(list_deliveries))
        .routes(routes!(test_send))
        .routes(routes!(get_event))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letters))
        .routes(routes!(get_dead_letter))
        .routes(routes!(replay_dead_letter))
        .routes(routes!(list_quarantine))
        .routes(routes!(replay_quarantine))
        .routes(routes!(get_quarantined))
        .routes(routes!(replay_quarantined))
        .routes(routes!(drift))
        .routes(routes!(tail::ticket))
        .routes(routes!(list_calls))
        .routes(routes!(get_call))
        .routes(routes!(erase_call))
        .routes(routes!(erase_number))
}

/// The endpoints that check their own credentials, outside the middleware: the live tail,
/// which a browser's `EventSource` opens with a ticket instead of the header.
fn self_authorised() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(tail::stream))
}

pub fn router(app: Arc<App>) -> Router {
    let (router, _) = endpoints().split_for_parts();
    let (open, _) = self_authorised().split_for_parts();
    router.layer(middleware::from_fn_with_state(app.clone(), require_token)).merge(open).with_state(app)
}

/// Every endpoint with its document: what [`router`] serves.
fn everything() -> OpenApiRouter<Arc<App>> {
    endpoints().merge(self_authorised())
}

/// The admin API's OpenAPI 3.1 document (`GET /v1/admin/openapi.json`, `callgate openapi`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    everything().into_openapi()
}

/// The document as served (pretty JSON), made once.
pub fn openapi_json() -> &'static str {
    static DOCUMENT: LazyLock<String> =
        LazyLock::new(|| openapi().to_pretty_json().expect("the OpenAPI document is plain data and serialises"));
    &DOCUMENT
}

/// The answers every admin call may get besides its own (described, never built: the
/// middleware and [`AdminError`] build them).
#[allow(dead_code)]
pub(crate) mod answers {
    use crate::http::ErrorBody;

    #[derive(utoipa::IntoResponses)]
    pub enum Denied {
        /// No `Authorization: Bearer` header, or not the admin token (`unauthorized`).
        #[response(status = 401)]
        Unauthorized(ErrorBody),
        /// The admin API is off: `[admin] token` is not set (`admin_disabled`).
        #[response(status = 403)]
        Disabled(ErrorBody),
    }

    #[derive(utoipa::IntoResponses)]
    pub enum Invalid {
        /// A query parameter or path segment that does not parse, an unknown parameter, or a
        /// value out of range (`bad_request`, naming it).
        #[response(status = 400)]
        BadRequest(ErrorBody),
    }

    #[derive(utoipa::IntoResponses)]
    pub enum Missing {
        /// No such route, dead letter or quarantined payload (`not_found`).
        #[response(status = 404)]
        NotFound(ErrorBody),
    }

    #[derive(utoipa::IntoResponses)]
    pub enum Conflict {
        /// The route is configured and delivering: remove it from the configuration (or
        /// disable it) and reload first (`conflict`).
        #[response(status = 409)]
        Conflict(ErrorBody),
    }

    #[derive(utoipa::IntoResponses)]
    pub enum InvalidConfig {
        /// The configuration file has errors (`invalid_config`, every one in `details` as
        /// `{key, message}`); nothing was applied and the running configuration stays.
        #[response(status = 422)]
        InvalidConfig(ErrorBody),
    }

    #[derive(utoipa::IntoResponses)]
    pub enum Unavailable {
        /// The store cannot answer now (`store_unavailable`); nothing was changed, or (a bulk
        /// replay) `details[0].done` items were done before it stopped. Retrying is safe.
        #[response(status = 503)]
        StoreUnavailable(ErrorBody),
    }
}
use answers::{Conflict, Denied, Invalid, InvalidConfig, Missing, Unavailable};

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
                let details: Vec<_> = errors
                    .errors
                    .iter()
                    .map(|e| ConfigProblem { key: e.key.clone(), message: e.message.clone() })
                    .collect();
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
                error_response(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", &message, &[Done { done }])
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

/// `details` of an interrupted bulk operation.
#[derive(Serialize)]
struct Done {
    done: usize,
}

/// `details` of a reload refused for the file's errors.
#[derive(Serialize)]
struct ConfigProblem {
    key: String,
    message: String,
}

/// `GET /v1/admin/dead-letters`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeadLetterQuery {
    /// Only this route's.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    route: Option<String>,
    /// Only those dead-lettered at or after this time: RFC 3339 or a duration back from now (`2h`).
    #[param(schema_with = since_schema)]
    since: Option<String>,
    /// Only ids below this: the previous page's `next_before_id`.
    before_id: Option<i64>,
    /// Most items in the answer: default 100; 0 counts as 1, more than 1000 as 1000.
    limit: Option<usize>,
}

/// `GET /v1/admin/quarantine`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct QuarantineQuery {
    /// Only this source's.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    source: Option<String>,
    /// Only those received at or after this time: RFC 3339 or a duration back from now (`2h`).
    #[param(schema_with = since_schema)]
    since: Option<String>,
    /// Only ids below this: the previous page's `next_before_id`.
    before_id: Option<i64>,
    /// Most items in the answer: default 100; 0 counts as 1, more than 1000 as 1000.
    limit: Option<usize>,
}

/// `POST /v1/admin/dead-letters/replay`: a route, `since`, or `all=true` is required.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeadLetterReplayQuery {
    /// Replay this route's dead letters.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    route: Option<String>,
    /// Replay those dead-lettered at or after this time: RFC 3339 or a duration back from now (`2h`).
    #[param(schema_with = since_schema)]
    since: Option<String>,
    /// Replay every dead letter (required when neither `route` nor `since` narrows it).
    #[serde(default)]
    all: bool,
}

/// `POST /v1/admin/quarantine/replay`: a source, `since`, or `all=true` is required.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct QuarantineReplayQuery {
    /// Replay this source's quarantined payloads.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    source: Option<String>,
    /// Replay those received at or after this time: RFC 3339 or a duration back from now (`2h`).
    #[param(schema_with = since_schema)]
    since: Option<String>,
    /// Go on after this id: an earlier answer's `next_after_id`.
    after_id: Option<i64>,
    /// Most payloads this request handles: default and at most 10,000; 0 counts as 1.
    limit: Option<usize>,
    /// Replay the whole quarantine (required when neither `source` nor `since` narrows it).
    #[serde(default)]
    all: bool,
}

/// `GET /v1/admin/routes/{name}/deliveries`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Only attempts at or after this time: RFC 3339 or a duration back from now (`2h`).
    #[param(schema_with = since_schema)]
    since: Option<String>,
    /// Only ids below this: the previous page's `next_before_id`.
    before_id: Option<i64>,
    /// Most items in the answer: default 100; 0 counts as 1, more than 1000 as 1000.
    limit: Option<usize>,
    /// Only this call's (`{source}:{call_id}`).
    subject: Option<String>,
    /// Only attempts that ended so.
    #[param(value_type = Option<LogOutcome>)]
    outcome: Option<String>,
    /// Only test sends (`true`) or only deliveries (`false`).
    test: Option<bool>,
}

/// `POST /v1/admin/routes/{name}/test`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TestQuery {
    /// The canonical type of the sample event; default: the first the route subscribes to.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = event_type_schema)]
    kind: Option<String>,
}

/// `GET /v1/admin/drift`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DriftQuery {
    /// Only this source's.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    source: Option<String>,
    /// Only rows last seen at or after this time: RFC 3339 or a duration back from now (`2h`).
    #[param(schema_with = since_schema)]
    since: Option<String>,
    /// Most rows in the answer: default 100; 0 counts as 1, more than 1000 as 1000.
    limit: Option<usize>,
}

/// `GET /v1/calls`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CallQuery {
    /// Only this source's calls.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    source: Option<String>,
    /// Only calls whose first event was accepted at or after this time: RFC 3339 or a
    /// duration back from now (`2h`).
    #[param(schema_with = since_schema)]
    since: Option<String>,
    /// A canonical status, or `in_progress` for calls without a terminal event yet.
    #[param(schema_with = call_status_schema)]
    status: Option<String>,
    /// Only ids below this: the previous page's `next_before_id`.
    before_id: Option<i64>,
    /// Most items in the answer: default 100; 0 counts as 1, more than 1000 as 1000.
    limit: Option<usize>,
}

/// A string schema of the given words.
fn words_schema(words: Vec<&'static str>, description: &str) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    Schema::Object(
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(words)).description(Some(description)).build(),
    )
}

/// `type` of a test send: a canonical event type.
fn event_type_schema() -> utoipa::openapi::schema::Schema {
    words_schema(
        EventType::ALL.iter().map(|t| t.as_str()).collect(),
        "The canonical type of the sample event; default: the first the route subscribes to.",
    )
}

/// `status` of the call listing.
fn call_status_schema() -> utoipa::openapi::schema::Schema {
    let mut words: Vec<&'static str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    words.push("in_progress");
    words_schema(words, "A canonical status, or `in_progress` for calls without a terminal event yet.")
}

/// `since`: an RFC 3339 time, or a duration back from now as a number and a unit (`2h`,
/// `30m`, `1d`). `parse_since` also takes the rest of humantime's forms (`1h 30m`); the
/// document states the plain ones.
fn since_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]{1,6}(ms|s|m|h|d|w)$")))
            .description(Some(
                "Only those at or after this time: RFC 3339, or a duration back from now (`2h`, `30m`, `1d`).",
            ))
            .build(),
    )
}

/// A route or source name given as a filter (documented as `^[A-Za-z0-9_-]+$`, the
/// configuration's rule): a name the configuration could not hold matches
/// nothing, and is refused rather than handed to the database (PostgreSQL refuses a NUL).
fn name_filter(key: &str, name: Option<&String>) -> Result<Option<String>, AdminError> {
    match name {
        Some(n) if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
            Err(AdminError::BadRequest(format!(
                "`{key}` may only use letters, digits, `-` and `_`, not `{}`",
                cut(n, ECHO)
            )))
        }
        other => Ok(other.cloned()),
    }
}

/// A free-text value that goes to the store (a subject, an event id): a NUL is no text either
/// backend can hold (PostgreSQL refuses it), so it is refused here.
fn text_param<'a>(key: &str, value: &'a str) -> Result<&'a str, AdminError> {
    if value.contains('\0') {
        return Err(AdminError::BadRequest(format!("`{key}` may not hold a NUL character")));
    }
    Ok(value)
}

/// A route named in a path, before it goes to the store.
fn route_name(name: &str) -> Result<(), AdminError> {
    name_filter("route", Some(&name.to_owned())).map(|_| ())
}

/// The list filter: name, `since`, page.
fn list_filter(
    key: &str,
    name: Option<&String>,
    since: Option<&str>,
    before_id: Option<i64>,
    limit: Option<usize>,
) -> Result<Filter, AdminError> {
    Ok(Filter {
        id: None,
        name: name_filter(key, name)?,
        since: since.map(parse_since).transpose()?,
        before_id,
        after_id: None,
        limit: Some(page_size(limit)),
    })
}

/// The bulk-replay filter: a name, `since`, or `all` must say what to replay.
fn bulk_filter(key: &str, name: Option<&String>, since: Option<&str>, all: bool) -> Result<Filter, AdminError> {
    if name.is_none() && since.is_none() && !all {
        return Err(AdminError::BadRequest(format!("say what to replay: `{key}`, `since`, or `all=true`")));
    }
    Ok(Filter { name: name_filter(key, name)?, since: since.map(parse_since).transpose()?, ..Filter::default() })
}

/// Items in one list answer: `limit` (default 100) within 1..=1000.
fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, 1000)
}

/// `since` as an RFC 3339 time or a duration before now.
fn parse_since(text: &str) -> Result<Millis, AdminError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let duration = humantime::parse_duration(text).map_err(|_| {
        AdminError::BadRequest(format!(
            "`since` must be an RFC 3339 time or a duration such as 2h, not `{}`",
            cut(text, ECHO)
        ))
    })?;
    // A duration longer than the clock goes back (`1000000000y`) is a mistake, not "everything".
    Millis::try_from(duration.as_millis())
        .ok()
        .and_then(|back| now_ms().checked_sub(back))
        .ok_or_else(|| AdminError::BadRequest(format!("`since` goes too far back: `{}`", cut(text, ECHO))))
}

/// Every route.
#[derive(Debug, Serialize, ToSchema)]
struct RouteList {
    routes: Vec<RouteState>,
}

/// One route: configured ones, and any that still has a backlog or dead letters.
#[derive(Debug, Serialize, ToSchema)]
struct RouteState {
    name: String,
    /// In the configuration (a removed route stays listed while the store holds its rows).
    configured: bool,
    /// Configured and `enabled`: a worker sends its deliveries.
    enabled: bool,
    /// A backlog waits for a route this gateway does not deliver (removed from the
    /// configuration, or disabled): kept until the route returns or an operator discards it.
    orphaned: bool,
    /// Paused by a 410 from the route or by an operator, on any replica.
    paused: bool,
    /// RFC 3339 time it was paused.
    paused_since: Option<String>,
    paused_reason: Option<String>,
    /// Deliveries waiting or retrying.
    backlog: i64,
    dead_letters: i64,
    /// How its recent deliveries went (the dashboard's success rate and latency).
    recent: Recent,
}

/// A route's newest delivery attempts of the last hour: at most [`RECENT_MAX`] of them, test
/// sends left out, read from the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
struct Recent {
    /// Attempts counted.
    attempts: usize,
    /// Of them, answered 2xx.
    successes: usize,
    /// `successes / attempts`, 0 to 1; null without attempts.
    success_rate: Option<f64>,
    /// Median attempt duration in milliseconds (nearest rank); null without attempts.
    p50_ms: Option<i64>,
    /// 95th percentile attempt duration in milliseconds (nearest rank); null without attempts.
    p95_ms: Option<i64>,
}

/// Most log attempts [`Recent`] reads per route.
const RECENT_MAX: usize = 500;
/// How far back [`Recent`] looks.
const RECENT_WINDOW_MS: Millis = 60 * 60 * 1000;

impl Recent {
    fn of(entries: &[LogEntry]) -> Recent {
        let attempts = entries.len();
        let successes = entries.iter().filter(|e| e.outcome == LogOutcome::Success).count();
        let mut durations: Vec<i64> = entries.iter().map(|e| e.duration_ms).collect();
        durations.sort_unstable();
        let rank = |p: f64| {
            let at = ((p * attempts as f64).ceil() as usize).clamp(1, attempts.max(1)) - 1;
            durations.get(at).copied()
        };
        Recent {
            attempts,
            successes,
            success_rate: (attempts > 0).then(|| successes as f64 / attempts as f64),
            p50_ms: rank(0.5),
            p95_ms: rank(0.95),
        }
    }
}

/// The route's pause state after a pause or resume.
#[derive(Debug, Serialize, ToSchema)]
struct PauseState {
    route: String,
    paused: bool,
}

/// A page of dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
    /// Set when the page is full: ask again with `before_id=` this for the next one.
    next_before_id: Option<i64>,
}

/// A page of quarantined payloads, newest first (without bodies).
#[derive(Debug, Serialize, ToSchema)]
struct QuarantineList {
    quarantine: Vec<QuarantineItem>,
    /// Set when the page is full: ask again with `before_id=` this for the next one.
    next_before_id: Option<i64>,
}

/// What `DELETE /v1/admin/routes/{name}/backlog` did.
#[derive(Debug, Serialize, ToSchema)]
struct BacklogDiscarded {
    route: String,
    /// Waiting deliveries discarded.
    discarded: usize,
    /// Deliveries still in the outbox: in flight when this ran (they finish and are recorded).
    backlog: i64,
}

/// A page of the delivery log, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct DeliveryList {
    deliveries: Vec<LogEntry>,
    /// Set when the page is full: ask again with `before_id=` this for the next one.
    next_before_id: Option<i64>,
}

/// How a test send ended.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum TestOutcome {
    /// The route answered 2xx.
    Success,
    /// Any other answer, or no answer (`error` says why).
    Failed,
}

/// What a test send found.
#[derive(Debug, Serialize, ToSchema)]
struct TestResult {
    route: String,
    /// The sample event's id (not stored: `GET /v1/admin/events/{id}` does not know it).
    event_id: String,
    /// Its canonical type.
    #[serde(rename = "type")]
    kind: String,
    subject: String,
    outcome: TestOutcome,
    /// The route's HTTP status; null when the connection failed.
    status: Option<u16>,
    duration_ms: i64,
    /// The first bytes of the answer's body.
    response: Option<String>,
    /// Why there was no answer (timeout, connection), without the URL.
    error: Option<String>,
    /// Its id in the delivery log; null when the store could not keep it.
    log_id: Option<i64>,
}

/// The vendor drift report, most recently seen first.
#[derive(Debug, Serialize, ToSchema)]
struct DriftReport {
    drift: Vec<DriftRow>,
    /// Most rows a source holds; drift past that is counted in its `overflow` row.
    max_rows_per_source: usize,
}

/// One kind of drift of one vendor event.
#[derive(Debug, Serialize, ToSchema)]
struct DriftRow {
    source: String,
    /// The vendor event as its schema is named (`v2/call_ended`); empty on an overflow row.
    vendor_event: String,
    /// `unknown_field`, `unknown_value`, `degraded` or `overflow`.
    kind: String,
    /// Where in the payload (`call.transcript[].role`); empty on an overflow row.
    path: String,
    /// An unknown value's raw word (80 characters at most); null for the other kinds.
    value: Option<String>,
    /// How many times it was seen.
    count: i64,
    /// RFC 3339 acceptance times.
    first_seen: String,
    last_seen: String,
    /// Its shape, or what was wrong; never a vendor's field value.
    example: String,
}

/// A page of calls, newest first by their first event.
#[derive(Debug, Serialize, ToSchema)]
struct CallList {
    calls: Vec<CallSummary>,
    /// Set when the page is full: ask again with `before_id=` this for the next one.
    next_before_id: Option<i64>,
}

/// One call: its summary, merged record, events and each route's deliveries.
#[derive(Debug, Serialize, ToSchema)]
struct CallView {
    subject: String,
    summary: CallSummary,
    /// The call's merged record (README, "Call records"), computed from its readable events;
    /// null when none could be read.
    record: Option<crate::canonical::call::CallRecord>,
    /// The call's CloudEvents as delivered, in acceptance order (one that cannot be read back
    /// is given as its stored text).
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// The call has more events than were returned (5,000 or 8 MiB at most).
    events_truncated: bool,
    /// Events that could not be read back (left out of the record).
    unreadable_events: usize,
    routes: Vec<CallRoute>,
}

/// One route's deliveries of a call's events.
#[derive(Debug, Serialize, ToSchema)]
struct CallRoute {
    route: String,
    /// In the running configuration.
    configured: bool,
    delivered: usize,
    pending: usize,
    retrying: usize,
    in_flight: usize,
    dead: usize,
    deliveries: Vec<CallDelivery>,
}

/// Dead letters put back in the outbox.
#[derive(Debug, Serialize, ToSchema)]
struct Replayed {
    replayed: usize,
}

/// What a quarantine replay did, oldest first.
#[derive(Debug, Default, Serialize, ToSchema)]
struct QuarantineReplay {
    results: Vec<ReplayResult>,
    accepted: usize,
    duplicate: usize,
    rejected: usize,
    /// Its cap (`limit`, at most 10,000) stopped it with matches left: call again with
    /// `after_id=` `next_after_id`.
    more: bool,
    /// Set with `more`: the last id handled.
    next_after_id: Option<i64>,
}

/// One quarantined payload validated again.
#[derive(Debug, Serialize, ToSchema)]
struct ReplayResult {
    id: i64,
    source: String,
    outcome: ReplayOutcome,
    /// Accepted or duplicate: the canonical event ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<Vec<String>>,
    /// Rejected: the error code it would get at ingress (it stays quarantined).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Vec<Violation>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ReplayOutcome {
    /// It passed and flowed on; it left the quarantine.
    Accepted,
    /// It passed, but the same body had been accepted before; it left the quarantine.
    Duplicate,
    /// It failed again and stays, with its new problems.
    Rejected,
}

/// This document.
#[utoipa::path(get, path = "/v1/admin/openapi.json", tag = "meta", operation_id = "openapi_document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of the admin API", content_type = "application/json", body = Object),
        Denied,
    ))]
async fn openapi_document() -> Response {
    ([(CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// Every route with its state, backlog, dead letters and how its recent deliveries went.
#[utoipa::path(get, path = "/v1/admin/routes", tag = "routes",
    responses((status = 200, description = "Every route", body = RouteList), Denied, Unavailable))]
async fn list_routes(State(app): State<Arc<App>>) -> Result<Json<RouteList>, AdminError> {
    let counts = app.store.counts().await?;
    let paused = app.store.paused().await?;
    let running = app.config.load_full();
    let mut names: BTreeSet<&String> = running.routes.keys().collect();
    names.extend(counts.backlog.keys());
    names.extend(counts.dead.keys());
    let since = now_ms() - RECENT_WINDOW_MS;
    let mut routes = Vec::with_capacity(names.len());
    for name in names {
        let config = running.routes.get(name);
        let pause = paused.iter().find(|p| &p.route == name);
        let backlog = counts.backlog.get(name).copied().unwrap_or(0);
        let enabled = config.is_some_and(|c| c.enabled);
        let window = LogFilter {
            route: Some(name.clone()),
            since: Some(since),
            test: Some(false),
            limit: Some(RECENT_MAX),
            ..LogFilter::default()
        };
        let recent = Recent::of(&app.store.delivery_log(&window).await?);
        routes.push(RouteState {
            name: name.clone(),
            configured: config.is_some(),
            enabled,
            orphaned: backlog > 0 && !enabled,
            paused: pause.is_some(),
            paused_since: pause.map(|p| p.since.clone()),
            paused_reason: pause.map(|p| p.reason.clone()),
            backlog,
            dead_letters: counts.dead.get(name).copied().unwrap_or(0),
            recent,
        });
    }
    Ok(Json(RouteList { routes }))
}

/// Stops sending to a route (every replica), until it is resumed.
#[utoipa::path(post, path = "/v1/admin/routes/{name}/pause", tag = "routes",
    params(("name" = String, Path, description = "A configured route", example = "crm")),
    responses((status = 200, description = "Paused", body = PauseState), Denied, Missing, Unavailable))]
async fn pause_route(
    State(app): State<Arc<App>>,
    AdminPath(name): AdminPath<String>,
) -> Result<Json<PauseState>, AdminError> {
    set_paused(&app, &name, true).await
}

/// Sends to a paused route again (paused by an operator or by a 410).
#[utoipa::path(post, path = "/v1/admin/routes/{name}/resume", tag = "routes",
    params(("name" = String, Path, description = "A configured route", example = "crm")),
    responses((status = 200, description = "Resumed", body = PauseState), Denied, Missing, Unavailable))]
async fn resume_route(
    State(app): State<Arc<App>>,
    AdminPath(name): AdminPath<String>,
) -> Result<Json<PauseState>, AdminError> {
    set_paused(&app, &name, false).await
}

async fn set_paused(app: &App, name: &str, paused: bool) -> Result<Json<PauseState>, AdminError> {
    if !app.config.load().routes.contains_key(name) {
        return Err(AdminError::NotFound(format!("no route named `{}`", cut(name, ECHO))));
    }
    // The store tells every worker (of every replica) through its notices.
    app.store.set_paused(name, paused.then_some("paused by an operator"), now_ms()).await?;
    tracing::info!(route = %name, paused, "Route pause changed by an operator.");
    Ok(Json(PauseState { route: name.to_owned(), paused }))
}

/// Discards the waiting deliveries of a route this gateway no longer delivers (removed from
/// the configuration, or disabled). Deliveries in flight finish; dead letters stay.
#[utoipa::path(delete, path = "/v1/admin/routes/{name}/backlog", tag = "routes",
    params(("name" = String, Path, description = "A route that is not configured (or disabled)", example = "old-crm")),
    responses((status = 200, description = "Discarded", body = BacklogDiscarded), Invalid, Denied, Conflict, Unavailable))]
async fn discard_backlog(
    State(app): State<Arc<App>>,
    AdminPath(name): AdminPath<String>,
) -> Result<Json<BacklogDiscarded>, AdminError> {
    route_name(&name)?;
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
    Ok(Json(BacklogDiscarded { route: name, discarded, backlog: left }))
}

/// Reads the configuration file again and applies it (as SIGHUP); a file with errors changes
/// nothing.
#[utoipa::path(post, path = "/v1/admin/reload", tag = "config",
    responses((status = 200, description = "Applied: what changed (names only)", body = Changes), Denied, InvalidConfig))]
async fn reload(State(app): State<Arc<App>>) -> Result<Json<Changes>, AdminError> {
    match crate::reload::reload(&app, "admin API").await {
        Ok(changes) => Ok(Json(changes)),
        Err(errors) => Err(AdminError::InvalidConfig(errors)),
    }
}

/// The route's delivery log (every attempt, and test sends), newest first, a page at a time.
#[utoipa::path(get, path = "/v1/admin/routes/{name}/deliveries", tag = "routes", params(
        ("name" = String, Path, description = "A route configured, or one the log still holds", example = "crm"),
        LogQuery),
    responses((status = 200, description = "A page of the delivery log", body = DeliveryList), Invalid, Denied, Missing, Unavailable))]
async fn list_deliveries(
    State(app): State<Arc<App>>,
    AdminPath(name): AdminPath<String>,
    AdminQuery(query): AdminQuery<LogQuery>,
) -> Result<Json<DeliveryList>, AdminError> {
    route_name(&name)?;
    let outcome = match query.outcome.as_deref() {
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
    let limit = page_size(query.limit);
    let filter = LogFilter {
        route: Some(name.clone()),
        since: query.since.as_deref().map(parse_since).transpose()?,
        before_id: query.before_id,
        subject: query.subject.as_deref().map(|s| text_param("subject", s)).transpose()?.map(str::to_owned),
        outcome,
        test: query.test,
        limit: Some(limit),
    };
    let deliveries = app.store.delivery_log(&filter).await?;
    // A route no longer configured still shows the log it left.
    if deliveries.is_empty() && !app.config.load().routes.contains_key(&name) {
        let any = LogFilter { route: Some(name.clone()), limit: Some(1), ..LogFilter::default() };
        if app.store.delivery_log(&any).await?.is_empty() {
            return Err(AdminError::NotFound(format!("no route named `{}`", cut(&name, ECHO))));
        }
    }
    let next_before_id = (deliveries.len() == limit).then(|| deliveries.last().map(|d| d.id)).flatten();
    Ok(Json(DeliveryList { deliveries, next_before_id }))
}

/// One stored canonical event and each route's delivery of it, with its attempts.
#[utoipa::path(get, path = "/v1/admin/events/{id}", tag = "events",
    params(("id" = String, Path, description = "The CloudEvent's `id`", example = "ce_01jabc")),
    responses((status = 200, description = "The event and its deliveries", body = EventDetail), Invalid, Denied, Missing, Unavailable))]
async fn get_event(
    State(app): State<Arc<App>>,
    AdminPath(id): AdminPath<String>,
) -> Result<Json<EventDetail>, AdminError> {
    text_param("id", &id)?;
    match app.store.event(&id, now_ms()).await? {
        Some(detail) => Ok(Json(detail)),
        None => Err(AdminError::NotFound(format!("no stored event `{}`", cut(&id, ECHO)))),
    }
}

/// Sends a sample event of a type to a route now, outside the outbox, as a delivery would go
/// (headers, signature), and answers what the receiver said; kept in the log as a test.
#[utoipa::path(post, path = "/v1/admin/routes/{name}/test", tag = "routes", params(
        ("name" = String, Path, description = "A configured route", example = "crm"),
        TestQuery),
    responses((status = 200, description = "What the receiver answered (a failed send is a 200 too)", body = TestResult),
        Invalid, Denied, Missing))]
async fn test_send(
    State(app): State<Arc<App>>,
    AdminPath(name): AdminPath<String>,
    AdminQuery(query): AdminQuery<TestQuery>,
) -> Result<Json<TestResult>, AdminError> {
    let config = app.config.load();
    let Some(route) = config.routes.get(&name) else {
        return Err(AdminError::NotFound(format!("no route named `{}`", cut(&name, ECHO))));
    };
    let known = || EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
    let kind = match query.kind.as_deref() {
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
    Ok(Json(TestResult {
        route: name,
        event_id: event.id,
        kind: kind.as_str().to_owned(),
        subject: event.subject,
        outcome: if tested.success { TestOutcome::Success } else { TestOutcome::Failed },
        status: attempt.status,
        duration_ms: attempt.duration_ms,
        response: attempt.response,
        error: attempt.error,
        log_id,
    }))
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

/// The vendor drift report (`source`, `since` and `limit` narrow it), most recently seen
/// first. This replica's own sums are written first, so it shows everything this replica
/// accepted; other replicas' are at most `drift::FLUSH_EVERY` late.
#[utoipa::path(get, path = "/v1/admin/drift", tag = "drift", params(DriftQuery),
    responses((status = 200, description = "The drift report", body = DriftReport), Invalid, Denied, Unavailable))]
async fn drift(
    State(app): State<Arc<App>>,
    AdminQuery(query): AdminQuery<DriftQuery>,
) -> Result<Json<DriftReport>, AdminError> {
    let filter = list_filter("source", query.source.as_ref(), query.since.as_deref(), None, query.limit)?;
    app.drift.flush().await?;
    let rows = app.store.drift(&filter).await?;
    let drift = rows
        .into_iter()
        .map(|d| DriftRow {
            source: d.source,
            vendor_event: d.vendor_event,
            kind: d.kind,
            path: d.path,
            value: (!d.value.is_empty()).then_some(d.value),
            count: d.count,
            first_seen: rfc3339(d.first_seen),
            last_seen: rfc3339(d.last_seen),
            example: d.example,
        })
        .collect();
    Ok(Json(DriftReport { drift, max_rows_per_source: MAX_ROWS_PER_SOURCE }))
}

/// Calls, newest first by their first event, a page at a time.
#[utoipa::path(get, path = "/v1/calls", tag = "calls", params(CallQuery),
    responses((status = 200, description = "A page of calls", body = CallList), Invalid, Denied, Unavailable))]
async fn list_calls(
    State(app): State<Arc<App>>,
    AdminQuery(query): AdminQuery<CallQuery>,
) -> Result<Json<CallList>, AdminError> {
    let status = match query.status.as_deref() {
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
    let limit = page_size(query.limit);
    let filter = CallFilter {
        source: name_filter("source", query.source.as_ref())?,
        since: query.since.as_deref().map(parse_since).transpose()?,
        status,
        before_id: query.before_id,
        limit: Some(limit),
    };
    let calls = app.store.calls(&filter).await?;
    let next_before_id = (calls.len() == limit).then(|| calls.last().map(|c| c.id)).flatten();
    Ok(Json(CallList { calls, next_before_id }))
}

/// One call: its summary, its merged record (`canonical::call::merge`), its events in
/// acceptance order and each route's delivery state.
#[utoipa::path(get, path = "/v1/calls/{subject}", tag = "calls",
    params(("subject" = String, Path, description = "`{source}:{call_id}`, as in every event (`:` as is or as `%3A`)", example = "vox:3079f46c")),
    responses((status = 200, description = "The call", body = CallView), Invalid, Denied, Missing, Unavailable))]
async fn get_call(
    State(app): State<Arc<App>>,
    AdminPath(subject): AdminPath<String>,
) -> Result<Json<CallView>, AdminError> {
    text_param("subject", &subject)?;
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
    let mut record = merge(&readable);
    // The store's list of late pieces is the one of commit order. On PostgreSQL an event is
    // numbered before its transaction commits, so a piece committed after the call.completed
    // may stand before it in acceptance order, where `merge` cannot tell it was late.
    if let Some(record) = record.as_mut().filter(|r| r.completed_at.is_some()) {
        record.late = stored.summary.late.iter().filter_map(|kind| EventType::parse(kind)).collect();
    }
    let running = app.config.load();
    let names: BTreeSet<&str> = stored.deliveries.iter().map(|d| d.route.as_str()).collect();
    let routes = names
        .into_iter()
        .map(|name| {
            let deliveries: Vec<CallDelivery> = stored.deliveries.iter().filter(|d| d.route == name).cloned().collect();
            let count = |state: DeliveryState| deliveries.iter().filter(|d| d.state == state).count();
            CallRoute {
                route: name.to_owned(),
                configured: running.routes.contains_key(name),
                delivered: count(DeliveryState::Delivered),
                pending: count(DeliveryState::Pending),
                retrying: count(DeliveryState::Retrying),
                in_flight: count(DeliveryState::InFlight),
                dead: count(DeliveryState::Dead),
                deliveries,
            }
        })
        .collect();
    Ok(Json(CallView {
        subject: stored.summary.subject.clone(),
        unreadable_events: stored.events.len() - readable.len(),
        summary: stored.summary,
        record,
        events,
        events_truncated: stored.truncated,
        routes,
    }))
}

/// Dead letters, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "dead-letters", params(DeadLetterQuery),
    responses((status = 200, description = "A page of dead letters", body = DeadLetterList), Invalid, Denied, Unavailable))]
async fn list_dead_letters(
    State(app): State<Arc<App>>,
    AdminQuery(query): AdminQuery<DeadLetterQuery>,
) -> Result<Json<DeadLetterList>, AdminError> {
    let filter = list_filter("route", query.route.as_ref(), query.since.as_deref(), query.before_id, query.limit)?;
    let dead_letters = app.store.dead_letters(&filter).await?;
    let full = Some(dead_letters.len()) == filter.limit;
    let next_before_id = full.then(|| dead_letters.last().map(|d| d.id)).flatten();
    Ok(Json(DeadLetterList { dead_letters, next_before_id }))
}

/// One dead letter: its event and every attempt.
#[utoipa::path(get, path = "/v1/admin/dead-letters/{id}", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, description = "The dead letter", body = DeadLetterDetail), Invalid, Denied, Missing, Unavailable))]
async fn get_dead_letter(
    State(app): State<Arc<App>>,
    AdminPath(id): AdminPath<i64>,
) -> Result<Json<DeadLetterDetail>, AdminError> {
    match app.store.dead_letter(id).await? {
        Some(detail) => Ok(Json(detail)),
        None => Err(AdminError::NotFound(format!("no dead letter {id}"))),
    }
}

/// Puts one dead letter back in its route's outbox (its old place in its call's order), due now.
#[utoipa::path(post, path = "/v1/admin/dead-letters/{id}/replay", tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, description = "Replayed", body = Replayed), Invalid, Denied, Missing, Unavailable))]
async fn replay_dead_letter(
    State(app): State<Arc<App>>,
    AdminPath(id): AdminPath<i64>,
) -> Result<Json<Replayed>, AdminError> {
    let replayed = replay(&app, &Filter { id: Some(id), ..Filter::default() }).await?;
    if replayed == 0 {
        return Err(AdminError::NotFound(format!("no dead letter {id}")));
    }
    Ok(Json(Replayed { replayed }))
}

/// Replays every dead letter of a route, since a time, or all of them.
#[utoipa::path(post, path = "/v1/admin/dead-letters/replay", tag = "dead-letters", params(DeadLetterReplayQuery),
    responses((status = 200, description = "How many were replayed", body = Replayed), Invalid, Denied, Unavailable))]
async fn replay_dead_letters(
    State(app): State<Arc<App>>,
    AdminQuery(query): AdminQuery<DeadLetterReplayQuery>,
) -> Result<Json<Replayed>, AdminError> {
    let filter = bulk_filter("route", query.route.as_ref(), query.since.as_deref(), query.all)?;
    Ok(Json(Replayed { replayed: replay(&app, &filter).await? }))
}

async fn replay(app: &App, filter: &Filter) -> Result<usize, AdminError> {
    let replayed = app.store.replay_dead_letters(filter, now_ms()).await?;
    tracing::info!(count = replayed.len(), "Dead letters replayed by an operator.");
    Ok(replayed.len())
}

/// Rejected payloads, newest first, a page at a time (without their bodies).
#[utoipa::path(get, path = "/v1/admin/quarantine", tag = "quarantine", params(QuarantineQuery),
    responses((status = 200, description = "A page of the quarantine", body = QuarantineList), Invalid, Denied, Unavailable))]
async fn list_quarantine(
    State(app): State<Arc<App>>,
    AdminQuery(query): AdminQuery<QuarantineQuery>,
) -> Result<Json<QuarantineList>, AdminError> {
    let filter = list_filter("source", query.source.as_ref(), query.since.as_deref(), query.before_id, query.limit)?;
    let quarantine = app.store.quarantined(&filter, false).await?;
    let full = Some(quarantine.len()) == filter.limit;
    let next_before_id = full.then(|| quarantine.last().map(|q| q.id)).flatten();
    Ok(Json(QuarantineList { quarantine, next_before_id }))
}

/// One quarantined payload, with its body.
#[utoipa::path(get, path = "/v1/admin/quarantine/{id}", tag = "quarantine",
    params(("id" = i64, Path, description = "The quarantined payload's id")),
    responses((status = 200, description = "The payload, its problems and its body", body = QuarantineItem), Invalid, Denied, Missing, Unavailable))]
async fn get_quarantined(
    State(app): State<Arc<App>>,
    AdminPath(id): AdminPath<i64>,
) -> Result<Json<QuarantineItem>, AdminError> {
    let filter = Filter { id: Some(id), ..Filter::default() };
    match app.store.quarantined(&filter, true).await?.pop() {
        Some(item) => Ok(Json(item)),
        None => Err(AdminError::NotFound(format!("nothing quarantined with id {id}"))),
    }
}

/// Validates one quarantined payload again: if it passes it flows as if it had just arrived
/// and leaves the quarantine; if not it stays with its new problems.
#[utoipa::path(post, path = "/v1/admin/quarantine/{id}/replay", tag = "quarantine",
    params(("id" = i64, Path, description = "The quarantined payload's id")),
    responses((status = 200, description = "What the replay did", body = QuarantineReplay), Invalid, Denied, Missing, Unavailable))]
async fn replay_quarantined(
    State(app): State<Arc<App>>,
    AdminPath(id): AdminPath<i64>,
) -> Result<Json<QuarantineReplay>, AdminError> {
    let replay = replay_quarantine_matching(&app, &Filter { id: Some(id), ..Filter::default() }, 1).await?;
    if replay.results.is_empty() {
        return Err(AdminError::NotFound(format!("nothing quarantined with id {id}")));
    }
    Ok(Json(replay))
}

/// Validates every match again, oldest first, paging through the quarantine; at most `limit`
/// (default and at most 10,000) per request, then `more` and `next_after_id` say how to go on.
#[utoipa::path(post, path = "/v1/admin/quarantine/replay", tag = "quarantine", params(QuarantineReplayQuery),
    responses((status = 200, description = "What the replay did", body = QuarantineReplay), Invalid, Denied, Unavailable))]
async fn replay_quarantine(
    State(app): State<Arc<App>>,
    AdminQuery(query): AdminQuery<QuarantineReplayQuery>,
) -> Result<Json<QuarantineReplay>, AdminError> {
    let most = query.limit.map_or(REPLAY_MAX, |l| l.clamp(1, REPLAY_MAX));
    let filter = Filter {
        after_id: query.after_id,
        ..bulk_filter("source", query.source.as_ref(), query.since.as_deref(), query.all)?
    };
    Ok(Json(replay_quarantine_matching(&app, &filter, most).await?))
}

/// Quarantined payloads one bulk replay reads from the store at a time.
const REPLAY_PAGE: usize = 200;
/// Most payloads one bulk replay request handles (`limit` lowers it); past it the answer says
/// how to go on.
const REPLAY_MAX: usize = 10_000;

impl QuarantineReplay {
    fn push(&mut self, result: ReplayResult) {
        match result.outcome {
            ReplayOutcome::Accepted => self.accepted += 1,
            ReplayOutcome::Duplicate => self.duplicate += 1,
            ReplayOutcome::Rejected => self.rejected += 1,
        }
        self.results.push(result);
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
                replay.more = true;
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
                    let outcome = if outcome == IngressOutcome::Duplicate {
                        ReplayOutcome::Duplicate
                    } else {
                        ReplayOutcome::Accepted
                    };
                    ReplayResult { id, source, outcome, ids: Some(ids), code: None, message: None, details: None }
                }
                Err(e @ (IngressError::Unavailable | IngressError::Internal(_))) => {
                    return Err(AdminError::Interrupted { done: replay.results.len(), error: e.to_string() });
                }
                Err(e) => ReplayResult {
                    id,
                    source,
                    outcome: ReplayOutcome::Rejected,
                    ids: None,
                    code: Some(e.code().to_owned()),
                    message: Some(e.to_string()),
                    details: Some(e.details()),
                },
            };
            replay.push(entry);
        }
        if last_page || filter.id.is_some() {
            break;
        }
    }
    tracing::info!(count = replay.results.len(), "Quarantined payloads replayed by an operator.");
    Ok(replay)
}

fn interrupted(replay: &QuarantineReplay, e: StoreError) -> AdminError {
    AdminError::Interrupted { done: replay.results.len(), error: e.to_string() }
}

/// Erases everything stored of one call: its pending deliveries (cancelled), dead letters,
/// delivery log, events, summary, the payloads it came in and quarantined bodies of its source
/// that hold its call id. A subject nothing is stored of erases nothing (200, every count 0).
#[utoipa::path(delete, path = "/v1/admin/calls/{subject}", tag = "calls",
    params(("subject" = String, Path, description = "`{source}:{call_id}`, as in every event (`:` as is or as `%3A`)", example = "vox:call-to-erase")),
    responses((status = 200, description = "Erased: what was removed, per kind", body = Erased), Invalid, Denied, Unavailable))]
async fn erase_call(
    State(app): State<Arc<App>>,
    AdminPath(subject): AdminPath<String>,
) -> Result<Json<Erased>, AdminError> {
    text_param("subject", &subject)?;
    let erased = app.store.erase(Erasure::Call(subject.clone()), now_ms()).await?;
    log_erasure("call", Some(&subject), &erased);
    Ok(Json(erased))
}

/// What `POST /v1/admin/erase` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EraseRequest {
    /// A phone number, in E.164 or as the vendor sent it (at most 64 characters, at least 7
    /// digits); a national number is also matched in E.164 with each source's `phone_region`.
    #[schema(example = "+15550100999")]
    number: String,
}

/// Erases every call whose events carry a phone number (`from`, `to`, their E.164 forms, an
/// SMS's numbers, a transfer target), as `DELETE /v1/admin/calls/{subject}` does for each, and
/// every payload, quarantined body and drift report row that holds the number. The number is
/// never logged nor repeated in an answer.
#[utoipa::path(post, path = "/v1/admin/erase", tag = "calls", request_body = EraseRequest,
    responses((status = 200, description = "Erased: what was removed, per kind", body = Erased), Invalid, Denied, Unavailable))]
async fn erase_number(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Result<Json<Erased>, AdminError> {
    // serde's messages may quote the value: never echoed.
    let request: EraseRequest = serde_json::from_slice(&body).map_err(|_| {
        AdminError::BadRequest(
            "the body must be a JSON object {\"number\": \"...\"} with the number as a string".into(),
        )
    })?;
    let regions: Vec<_> = app.config.load().sources.values().filter_map(|s| s.phone_region).collect();
    let number = Number::parse(&request.number, regions).map_err(|e| AdminError::BadRequest(e.to_string()))?;
    let erased = app.store.erase(Erasure::Number(number), now_ms()).await?;
    log_erasure("number", None, &erased);
    Ok(Json(erased))
}

/// The audit line of an erasure: its kind and counts, and the subject of a call erasure
/// (never the number, nor the calls a number erasure found: they would tie it to them).
fn log_erasure(kind: &'static str, subject: Option<&str>, e: &Erased) {
    tracing::warn!(
        kind,
        subject = subject.unwrap_or(""),
        calls = e.calls,
        events = e.events,
        payloads = e.payloads,
        outbox_cancelled = e.outbox_cancelled,
        dead_letters = e.dead_letters,
        log_rows = e.log_rows,
        quarantined = e.quarantined,
        drift_rows = e.drift_rows,
        "erasure done"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    type Operations = BTreeMap<String, BTreeSet<String>>;

    /// (path → methods) of what the router serves, read from its `Debug` output: axum offers no
    /// other way to list routes. Each route shows as `RouteId(N): MethodRouter(… allow_header:
    /// Bytes(b"GET,HEAD") …)` and its path as `RouteId(N): "/v1/…"`; a change of that format
    /// fails the test (it finds nothing) rather than passing it.
    fn served(router: &Router<Arc<App>>) -> Operations {
        let text = format!("{router:?}");
        // The routes proper, not the fallback router's (which numbers its own from 0 too).
        let text = &text[..text.find("fallback_router:").unwrap_or(text.len())];
        let mut methods = BTreeMap::new();
        let mut paths = BTreeMap::new();
        for (at, _) in text.match_indices("RouteId(") {
            let rest = &text[at + "RouteId(".len()..];
            let Some(close) = rest.find("): ") else { continue };
            let Ok(id) = rest[..close].parse::<u32>() else { continue };
            let value = &rest[close + 3..];
            if let Some(path) = value.strip_prefix('"') {
                paths.insert(id, path[..path.find('"').unwrap()].to_owned());
            } else if value.starts_with("MethodRouter(") {
                const ALLOW: &str = "allow_header: Bytes(b\"";
                let allow = &value[value.find(ALLOW).unwrap() + ALLOW.len()..];
                let allow = &allow[..allow.find('"').unwrap()];
                let set: BTreeSet<String> = allow.split(',').filter(|m| *m != "HEAD").map(str::to_owned).collect();
                methods.insert(id, set);
            }
        }
        paths.into_iter().map(|(id, path)| (path, methods.remove(&id).unwrap_or_default())).collect()
    }

    fn documented(doc: &utoipa::openapi::OpenApi) -> Operations {
        let json = serde_json::to_value(doc).unwrap();
        json["paths"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(path, item)| (path.clone(), item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect()))
            .collect()
    }

    /// A route registered without its `#[utoipa::path]` (or a documented one the router lacks)
    /// fails here: add the handler to `endpoints` with `.routes(routes!(handler))`. `router`
    /// serves `endpoints` and `self_authorised`, which `everything` merges.
    #[test]
    fn every_route_is_documented_and_every_documented_route_is_served() {
        let (router, doc) = everything().split_for_parts();
        let routes = served(&router);
        let operations = documented(&doc);
        assert!(routes.len() >= 22, "the router's routes could not be read: {routes:?}");
        assert_eq!(routes, operations, "router (left) and OpenAPI document (right) disagree");
        // The same holds for what `router` serves and what `openapi` describes.
        assert_eq!(documented(&openapi()), operations);
    }

    #[test]
    fn the_reader_sees_an_undocumented_route() {
        let sneaky = endpoints().route("/v1/admin/sneaky", axum::routing::delete(|| async { "" }));
        let (router, doc) = sneaky.split_for_parts();
        let served = served(&router);
        assert_eq!(served.get("/v1/admin/sneaky"), Some(&BTreeSet::from(["DELETE".to_owned()])));
        assert_ne!(served, documented(&doc));
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_crate_version_and_every_error() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["security"], serde_json::json!([{ "admin_token": [] }]));
        assert_eq!(doc["components"]["securitySchemes"]["admin_token"]["scheme"], "bearer");
        let ticket = &doc["components"]["securitySchemes"]["stream_ticket"];
        assert_eq!(
            (&ticket["type"], &ticket["in"], &ticket["name"]),
            (&"apiKey".into(), &"query".into(), &"ticket".into())
        );
        // The live tail takes either credential; it is text/event-stream.
        let stream = &doc["paths"]["/v1/admin/stream"]["get"];
        assert_eq!(stream["security"], serde_json::json!([{ "admin_token": [] }, { "stream_ticket": [] }]));
        assert_eq!(stream["responses"]["200"]["content"]["text/event-stream"]["schema"]["type"], "string");
        // Operations that never read the store (or swallow its failure: a test send's log).
        let no_store = ["/v1/admin/openapi.json", "/v1/admin/reload", "/v1/admin/stream", "/v1/admin/stream/tickets"];
        let no_store_op = ["post /v1/admin/routes/{name}/test"];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let at = format!("{method} {path}");
                let responses = op["responses"].as_object().unwrap();
                assert!(responses.keys().any(|s| s.starts_with('2')), "{at} lacks a 2xx");
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{at} lacks {status}");
                }
                for (status, answer) in responses {
                    let schema = &answer["content"]["application/json"]["schema"];
                    if !status.starts_with('2') {
                        assert_eq!(schema["$ref"], "#/components/schemas/ErrorBody", "{at} {status}");
                    }
                }
                // Every path parameter is declared (and an id that does not parse is a 400).
                let params: Vec<&str> =
                    op["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
                for segment in path.split('/').filter(|s| s.starts_with('{')) {
                    assert!(params.contains(&segment.trim_matches(['{', '}'])), "{at}: {segment} undeclared");
                }
                if path.contains("{id}")
                    || op["parameters"].as_array().is_some_and(|p| p.iter().any(|p| p["in"] == "query"))
                {
                    assert!(responses.contains_key("400"), "{at} lacks 400");
                }
                // Discarding the backlog of a route nobody knows discards nothing (200).
                // Erasing a call nothing is stored of erases nothing (200, every count 0).
                let no_404 = ["delete /v1/admin/routes/{name}/backlog", "delete /v1/admin/calls/{subject}"];
                if path.contains('{') && !no_404.contains(&at.as_str()) {
                    assert!(responses.contains_key("404"), "{at} lacks 404");
                }
                if !no_store.contains(&path.as_str()) && !no_store_op.contains(&at.as_str()) {
                    assert!(responses.contains_key("503"), "{at} lacks 503");
                }
            }
        }
        // Every `$ref` resolves (a schema named only in a response list is easily left out).
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.contains(&"#/components/schemas/ErrorBody".to_owned()));
        for reference in refs {
            let pointer = reference.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "{reference} does not resolve");
        }
    }

    fn collect_refs(value: &serde_json::Value, refs: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    refs.push(r.clone());
                }
                map.values().for_each(|v| collect_refs(v, refs));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
            _ => {}
        }
    }

    #[test]
    fn since_that_goes_back_past_the_clock_is_a_bad_request() {
        assert!(matches!(parse_since("2h"), Ok(ms) if ms < now_ms()));
        for text in ["100000000000y", "18446744073709551615s", "nonsense"] {
            assert!(matches!(parse_since(text), Err(AdminError::BadRequest(_))), "{text}");
        }
    }

    #[test]
    fn recent_counts_successes_and_takes_nearest_rank_percentiles() {
        let entry = |duration_ms: i64, outcome: LogOutcome| LogEntry {
            id: duration_ms,
            route: "crm".into(),
            delivery_id: Some(1),
            event_id: None,
            kind: None,
            subject: None,
            attempt: 1,
            outcome,
            test: false,
            at: String::new(),
            status: None,
            duration_ms,
            response: None,
            error: None,
        };
        let none = Recent::of(&[]);
        assert_eq!((none.attempts, none.success_rate, none.p50_ms, none.p95_ms), (0, None, None, None));
        let mut entries: Vec<LogEntry> = (1..=20).rev().map(|d| entry(d, LogOutcome::Success)).collect();
        entries[0].outcome = LogOutcome::Failed;
        entries[1].outcome = LogOutcome::Dead;
        let recent = Recent::of(&entries);
        assert_eq!((recent.attempts, recent.successes), (20, 18));
        assert_eq!(recent.success_rate, Some(0.9));
        assert_eq!((recent.p50_ms, recent.p95_ms), (Some(10), Some(19)));
        let one = Recent::of(&[entry(7, LogOutcome::Failed)]);
        assert_eq!((one.success_rate, one.p50_ms, one.p95_ms), (Some(0.0), Some(7), Some(7)));
    }

    #[test]
    fn a_name_filter_outside_the_name_alphabet_is_a_bad_request() {
        assert_eq!(name_filter("route", Some(&"crm-1_a".to_owned())).unwrap().as_deref(), Some("crm-1_a"));
        for bad in ["", "a\0b", "é", "a b", "../x"] {
            assert!(matches!(name_filter("route", Some(&bad.to_owned())), Err(AdminError::BadRequest(_))), "{bad:?}");
        }
    }
}
