//! The admin API (`/v1/admin/...`): routes (pause, resume), dead letters (list, inspect,
//! replay), the quarantine (list, inspect, replay) and its own OpenAPI document. Every call
//! needs `Authorization: Bearer <[admin] token>`; without a configured token the API is off.
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
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth,
    http::{ErrorBody, cut, error_response},
    ingress::{self, IngressError, OnReject},
    server::App,
    store::{DeadLetter, DeadLetterDetail, Filter, Millis, QuarantineItem, StoreError, now_ms},
    telemetry::IngressOutcome,
    vendors::Violation,
};

/// The document's frame: what no handler says (title, version = the crate's, the bearer
/// scheme required by every operation, the tags). The paths come from [`endpoints`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "callgate admin API",
        description = "Routes, dead letters and the quarantine of a running callgate gateway. \
                       Every call needs `Authorization: Bearer <[admin] token>`; without a configured \
                       token every call answers 403. Every error is the JSON body `ErrorBody`."
    ),
    modifiers(&AdminToken),
    // Named only by the shared error answers (`answers`), so not found by itself.
    components(schemas(ErrorBody)),
    security(("admin_token" = [])),
    tags(
        (name = "routes", description = "Delivery routes: state, pause and resume"),
        (name = "dead-letters", description = "Deliveries that ran out of attempts: list, inspect, replay"),
        (name = "quarantine", description = "Rejected payloads: list, inspect, validate again"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The `admin_token` bearer scheme.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The `[admin] token` of the gateway's configuration."))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// Every admin endpoint, each from its handler's `#[utoipa::path]` (method, path, parameters,
/// answers). Adding an endpoint is its annotated handler and one `.routes(routes!(handler))`
/// line here: the router and the document are both made from this list.
fn endpoints() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_document))
        .routes(routes!(list_routes))
        .routes(routes!(pause_route))
        .routes(routes!(resume_route))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letters))
        .routes(routes!(get_dead_letter))
        .routes(routes!(replay_dead_letter))
        .routes(routes!(list_quarantine))
        .routes(routes!(replay_quarantine))
        .routes(routes!(get_quarantined))
        .routes(routes!(replay_quarantined))
}

pub fn router(app: Arc<App>) -> Router {
    let (router, _) = endpoints().split_for_parts();
    router.layer(middleware::from_fn_with_state(app.clone(), require_token)).with_state(app)
}

/// The admin API's OpenAPI 3.1 document (`GET /v1/admin/openapi.json`, `callgate openapi`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    endpoints().into_openapi()
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
mod answers {
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
    pub enum Unavailable {
        /// The store cannot answer now (`store_unavailable`); nothing was changed, or (a bulk
        /// replay) `details[0].done` items were done before it stopped. Retrying is safe.
        #[response(status = 503)]
        StoreUnavailable(ErrorBody),
    }
}
use answers::{Denied, Invalid, Missing, Unavailable};

/// Errors of the admin API.
#[derive(Debug)]
enum AdminError {
    Disabled,
    Unauthorized,
    NotFound(String),
    BadRequest(String),
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
    let Some(token) = &app.config.admin.token else { return AdminError::Disabled.into_response() };
    if !auth::bearer_matches(request.headers(), token) {
        return AdminError::Unauthorized.into_response();
    }
    next.run(request).await
}

/// `details` of an interrupted bulk operation.
#[derive(Serialize)]
struct Done {
    done: usize,
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
    /// Paused by a 410 from the route or by an operator, on any replica.
    paused: bool,
    /// RFC 3339 time it was paused.
    paused_since: Option<String>,
    paused_reason: Option<String>,
    /// Deliveries waiting or retrying.
    backlog: i64,
    dead_letters: i64,
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

/// Every route with its state, backlog and dead letters.
#[utoipa::path(get, path = "/v1/admin/routes", tag = "routes",
    responses((status = 200, description = "Every route", body = RouteList), Denied, Unavailable))]
async fn list_routes(State(app): State<Arc<App>>) -> Result<Json<RouteList>, AdminError> {
    let counts = app.store.counts().await?;
    let paused = app.store.paused().await?;
    let mut names: BTreeSet<&String> = app.config.routes.keys().collect();
    names.extend(counts.backlog.keys());
    names.extend(counts.dead.keys());
    let routes = names
        .into_iter()
        .map(|name| {
            let config = app.config.routes.get(name);
            let pause = paused.iter().find(|p| &p.route == name);
            RouteState {
                name: name.clone(),
                configured: config.is_some(),
                enabled: config.is_some_and(|c| c.enabled),
                paused: pause.is_some(),
                paused_since: pause.map(|p| p.since.clone()),
                paused_reason: pause.map(|p| p.reason.clone()),
                backlog: counts.backlog.get(name).copied().unwrap_or(0),
                dead_letters: counts.dead.get(name).copied().unwrap_or(0),
            }
        })
        .collect();
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
    if !app.config.routes.contains_key(name) {
        return Err(AdminError::NotFound(format!("no route named `{}`", cut(name, ECHO))));
    }
    // The store tells every worker (of every replica) through its notices.
    app.store.set_paused(name, paused.then_some("paused by an operator"), now_ms()).await?;
    tracing::info!(route = %name, paused, "Route pause changed by an operator.");
    Ok(Json(PauseState { route: name.to_owned(), paused }))
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
            let result = ingress::accept(app, &source, body.into(), chrono::Utc::now(), OnReject::Report).await;
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
    /// fails here: add the handler to `endpoints` with `.routes(routes!(handler))`.
    #[test]
    fn every_route_is_documented_and_every_documented_route_is_served() {
        let (router, doc) = endpoints().split_for_parts();
        let routes = served(&router);
        let operations = documented(&doc);
        assert!(routes.len() >= 12, "the router's routes could not be read: {routes:?}");
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
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let at = format!("{method} {path}");
                let responses = op["responses"].as_object().unwrap();
                for status in ["200", "401", "403"] {
                    assert!(responses.contains_key(status), "{at} lacks {status}");
                }
                for (status, answer) in responses {
                    let schema = &answer["content"]["application/json"]["schema"];
                    if status != "200" {
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
                if path.contains('{') {
                    assert!(responses.contains_key("404"), "{at} lacks 404");
                }
                if path != "/v1/admin/openapi.json" {
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
    fn a_name_filter_outside_the_name_alphabet_is_a_bad_request() {
        assert_eq!(name_filter("route", Some(&"crm-1_a".to_owned())).unwrap().as_deref(), Some("crm-1_a"));
        for bad in ["", "a\0b", "é", "a b", "../x"] {
            assert!(matches!(name_filter("route", Some(&bad.to_owned())), Err(AdminError::BadRequest(_))), "{bad:?}");
        }
    }
}
