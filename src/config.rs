//! Configuration: `config/gateway.toml` merged with `CALLGATE_` environment variables
//! (figment), parsed once into an immutable, validated [`Config`].
//!
//! Loading reports every problem at once, each naming its key, rather than stopping at the
//! first. `${NAME}` in secrets, URLs and header values is replaced by the environment variable
//! `NAME` at load time; a missing variable is an error that names it.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, de::DeserializeOwned};

use crate::{canonical::Vendor, vendors::Dedup};

mod filter;
mod minimise;

pub use filter::Filter;
pub use minimise::Minimise;

/// The configuration shipped with the binary; `cargo run --release` serves it.
pub const DEFAULT_PATH: &str = "config/gateway.toml";

/// Retry delays of Svix and Standard Webhooks: the default `retry.schedule`.
pub const DEFAULT_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// A secret string: compared and sent, never printed. `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (for messages).
    pub path: PathBuf,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    /// `storage.url`, parsed: which backend, and where.
    pub storage_url: StorageUrl,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub delivery: DeliveryConfig,
    /// `[calls]`: when a call is complete (`call.completed`).
    pub calls: CallsConfig,
    /// Ingress sources by name (the `{source}` path segment).
    pub sources: BTreeMap<String, SourceConfig>,
    /// Egress routes by name.
    pub routes: BTreeMap<String, RouteConfig>,
}

/// `[server]`: the listener that faces the vendors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the ingress listener (also serves `/metrics`, health and admin unless
    /// `[admin] listen` moves them).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Longest a request may take, body upload included (slow senders get 408).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests handled at once; more are shed with 503 rather than queued without bound.
    /// A request takes its slot only once its credentials passed (before its body is read).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// Slots one source may hold for requests whose body is read before their sender is
    /// known to be genuine (`none`, `hmac` and `retell` sources), so that one source's slow or hostile
    /// senders cannot starve another. Default: `max_concurrent_requests / (n + 1)`, at least 1,
    /// where n is the number of such sources.
    #[serde(default)]
    pub max_unverified_per_source: Option<usize>,
    /// A client must send its request line and headers within this time (slowloris).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line + headers) in bytes; larger is answered 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Connections open at once per listener; more are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// On SIGTERM/Ctrl-C, how long in-flight requests and deliveries may take to finish.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// Where the store lives, from `storage.url`.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// The embedded default: one SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by every replica (the whole URL, which may hold a
    /// password).
    Postgres(Secret),
}

impl StorageUrl {
    pub fn parse(url: &str) -> Result<StorageUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err("sqlite: needs a file path, e.g. sqlite://data/callgate.db".into());
            }
            return Ok(StorageUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err("a PostgreSQL URL needs a host, e.g. postgres://user@127.0.0.1:5432/callgate".into());
            }
            return Ok(StorageUrl::Postgres(Secret::new(url)));
        }
        Err("must be sqlite://PATH or postgres://user:password@host:port/database".into())
    }

    /// For display: the SQLite path, or the PostgreSQL URL without credentials or query.
    pub fn redacted(&self) -> String {
        match self {
            StorageUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            StorageUrl::Postgres(url) => match url::Url::parse(url.expose()) {
                Ok(url) => redact_url(&url),
                Err(_) => "postgres://<redacted>".into(),
            },
        }
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://path/to/file.db` (created on first start) or
    /// `postgres://user:password@host:5432/db` (several replicas on one database). Kept as a
    /// secret: a PostgreSQL URL may carry a password. Parsed into [`Config::storage_url`].
    #[serde(default = "default_storage_url")]
    pub url: Secret,
    /// How long a write waits for a database lock held by another process before the
    /// ingress answers 503.
    #[serde(default = "default_busy_timeout", with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// Delivered events, their attempts and quarantined payloads older than this are
    /// deleted. Undelivered events and dead letters are kept until handled.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// A byte-identical redelivery within this window is recognised as a duplicate (also
    /// across restarts).
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How often pruning runs.
    #[serde(default = "default_prune_interval", with = "humantime_serde")]
    pub prune_interval: Duration,
    /// `/readyz` fails while the file system holding the store has less free space than this
    /// (bytes), before writes start failing.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// PostgreSQL only: connections in this replica's pool (the listening connection comes
    /// on top). Size it so replicas × (pool_size + 1) stays under the server's
    /// `max_connections`.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// PostgreSQL only: ingest writer tasks, each committing a batch of payloads at a time (1–8).
    #[serde(default = "default_writers")]
    pub writers: usize,
    /// PostgreSQL only: a statement that takes longer fails, and ingress answers 503.
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// PostgreSQL only: how long a request waits for a pooled connection before ingress
    /// answers 503.
    #[serde(default = "default_acquire_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

/// `[admin]`: where the operational endpoints listen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve `/metrics`, `/healthz`, `/readyz` (and the admin API) here instead of on
    /// `server.listen`.
    pub listen: Option<SocketAddr>,
    /// Bearer token of the admin API.
    pub token: Option<Secret>,
    /// Live tail (`/v1/admin/stream`): messages held for one reader that is not keeping up;
    /// when they are all waiting, the reader is dropped with a notice.
    #[serde(default = "default_stream_buffer")]
    pub stream_buffer: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: None, token: None, stream_buffer: default_stream_buffer() }
    }
}

fn default_stream_buffer() -> usize {
    1000
}

/// Bounds of `admin.stream_buffer` (one slot is kept for the notice that ends a stream).
pub const STREAM_BUFFER_RANGE: std::ops::RangeInclusive<usize> = 2..=100_000;

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `callgate=debug,info`; `RUST_LOG` overrides it.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[delivery]`: how the delivery workers behave (all routes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Requests in flight at once per route.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long to connect to a route's host before giving up.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A claimed delivery's lease lasts the route's `timeout` plus this. A replica that dies
    /// holds its deliveries (and their calls' later events) back this long at most.
    #[serde(default = "default_lease_margin", with = "humantime_serde")]
    pub lease_margin: Duration,
}

/// `[calls]`: when callgate emits a call's `call.completed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsConfig {
    /// How long after a call's terminal event (`call.ended` / `call.failed`) callgate waits
    /// for the pieces its vendor sends separately before it emits `call.completed` with the
    /// missing ones listed. Reloadable.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig { settle: default_settle() }
    }
}

fn default_settle() -> Duration {
    Duration::from_secs(600)
}

/// `[sources.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub vendor: Vendor,
    /// Region for national-format phone numbers (`KR`, `UZ`…).
    pub phone_region: Option<phonenumber::country::Id>,
    pub auth: Auth,
    /// `[sources.NAME.inbound]`: answer the vendor's inbound webhook from a lookup.
    pub inbound: Option<InboundConfig>,
    /// What makes two payloads the same delivery: byte-identical bodies (`body`, the default)
    /// or the same vendor event identity (`event`; README, "Deduplication").
    pub dedup: Dedup,
}

/// The default deadline of an inbound answer: well under the few seconds a vendor waits
/// before it starts the call without variables (vox publishes no timeout; Retell's is 10 s).
pub const DEFAULT_INBOUND_TIMEOUT: Duration = Duration::from_secs(2);

/// `[sources.NAME.inbound]`: how `POST /v1/inbound/NAME` finds the variables of a call about
/// to start.
#[derive(Clone, PartialEq)]
pub struct InboundConfig {
    /// Where the `call.inbound_lookup` CloudEvent is posted (the CRM's endpoint).
    pub url: reqwest::Url,
    /// The most the whole answer may take, lookup included; past it the fallback is answered.
    pub timeout: Duration,
    /// Headers added to the lookup request, rendered against the lookup event (as a route's).
    pub headers: Vec<(HeaderName, HeaderTemplate)>,
    /// Standard Webhooks signing secrets of the lookup request (as a route's).
    pub signing_secrets: Vec<Secret>,
    /// Answered when the lookup is slow, fails or answers something unusable.
    pub fallback: crate::canonical::lookup::LookupAnswer,
}

impl fmt::Debug for InboundConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundConfig")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("headers", &self.headers)
            .field("signing_secrets", &self.signing_secrets)
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// Ingress authentication of one source (`gateway.md` §4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Auth {
    #[default]
    None,
    /// `?name=value` in the URL.
    Query { name: String, value: Secret },
    /// A named header equals a value.
    Header { name: String, value: Secret },
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// `Authorization: Basic …`.
    Basic { username: String, password: Secret },
    /// A named header carries the HMAC-SHA256 of the raw body.
    Hmac {
        header: String,
        secret: Secret,
        #[serde(default)]
        encoding: HmacEncoding,
    },
    /// Retell AI's `x-retell-signature: v=<unix ms>,d=<hex>`: the HMAC-SHA256 of the raw body
    /// followed by that timestamp, keyed with the Retell API key that has the webhook badge. A
    /// timestamp more than five minutes from now fails (Retell's SDKs' window).
    Retell { api_key: Secret },
}

impl Auth {
    /// Whether the body must be read before the sender is known to be genuine: `none` (no
    /// authentication) and the signature schemes (the signature covers the body).
    pub fn reads_body_unverified(&self) -> bool {
        matches!(self, Auth::None | Auth::Hmac { .. } | Auth::Retell { .. })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacEncoding {
    #[default]
    Hex,
    Base64,
}

/// `[routes.NAME]`. A reload compares whole `RouteConfig`s (`PartialEq`), so every key
/// added here is picked up by a reload without further code.
#[derive(Clone, PartialEq)]
pub struct RouteConfig {
    pub url: reqwest::Url,
    /// Glob patterns over canonical types (`call.*`, `transcript.final`).
    pub events: Vec<String>,
    /// `events`, compiled once.
    patterns: Vec<wildmatch::WildMatch>,
    /// Sources whose events this route receives; `None` = all.
    pub sources: Option<Vec<String>>,
    /// Deliver events the vendor marked as test (Salpre `is_test`).
    pub include_test: bool,
    /// Content filter over attributes and `data` paths (CloudEvents Subscriptions API
    /// dialects), decided at ingest with the other conditions; `None` = every event.
    pub filter: Option<Filter>,
    /// What is removed or masked from each event this route receives (at send time).
    pub minimise: Minimise,
    pub enabled: bool,
    /// Total time one delivery attempt may take.
    pub timeout: Duration,
    /// Headers added to every request, rendered per event.
    pub headers: Vec<(HeaderName, HeaderTemplate)>,
    /// Standard Webhooks signing secrets (`whsec_…`); several during a rotation.
    pub signing_secrets: Vec<Secret>,
    /// Delays before retry 1, 2, …; after the last, the delivery is dead-lettered.
    pub retry_schedule: Vec<Duration>,
}

impl fmt::Debug for RouteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteConfig")
            .field("url", &redact_url(&self.url))
            .field("events", &self.events)
            .field("sources", &self.sources)
            .field("include_test", &self.include_test)
            .field("filter", &self.filter)
            .field("minimise", &self.minimise)
            .field("enabled", &self.enabled)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers)
            .field("signing_secrets", &self.signing_secrets)
            .field("retry_schedule", &self.retry_schedule)
            .finish()
    }
}

/// A URL without credentials or query (either may carry a secret), for display.
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    if shown.query().is_some() {
        shown.set_query(Some("redacted"));
    }
    shown.to_string()
}

impl RouteConfig {
    /// Whether this route wants an event of `kind` from `source` (its content `filter` is
    /// [`RouteConfig::passes`]).
    pub fn matches(&self, kind: &str, source: &str, test: bool) -> bool {
        self.enabled
            && (self.include_test || !test)
            && self.sources.as_ref().is_none_or(|s| s.iter().any(|s| s == source))
            && if kind == crate::canonical::EventType::CallCompleted.as_str() {
                // Opted into by its exact name: a route of `*` or `call.*` written before it
                // existed does not start receiving it.
                self.events.iter().any(|e| e == kind)
            } else {
                self.patterns.iter().any(|pattern| pattern.matches(kind))
            }
    }

    /// Whether the CloudEvent (as JSON) passes this route's content filter.
    pub fn passes(&self, event: &serde_json::Value) -> bool {
        self.filter.as_ref().is_none_or(|filter| filter.matches(event))
    }
}

/// Longest value, in bytes, that one header with a `{{path}}` placeholder renders to.
pub const HEADER_VALUE_MAX: usize = 1024;
/// Most bytes all of a route's templated header values take in one request together; a header
/// that would go past it is left out. With the fixed headers (content type, user agent,
/// signature: well under 1 KiB) the request head stays far below the 8 KiB that common
/// receivers accept.
pub const TEMPLATED_HEADERS_MAX: usize = 4096;

/// A header value with `{{path}}` placeholders, filled from the canonical event being sent.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderTemplate(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Literal text (may hold a secret substituted from the environment).
    Text(String),
    /// Dotted path into the event (`data.call_id`).
    Field(Vec<String>),
}

impl fmt::Debug for HeaderTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Literal parts may be secrets: show only the placeholders.
        let shown: Vec<String> = self
            .0
            .iter()
            .map(|p| match p {
                Part::Text(_) => "…".to_owned(),
                Part::Field(path) => format!("{{{{{}}}}}", path.join(".")),
            })
            .collect();
        write!(f, "HeaderTemplate({})", shown.join(""))
    }
}

impl HeaderTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..].find("}}").ok_or("unclosed `{{` placeholder")? + start;
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let path = rest[start + 2..end].trim();
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!("invalid placeholder `{{{{{path}}}}}`"));
            }
            parts.push(Part::Field(path.split('.').map(str::to_owned).collect()));
            rest = &rest[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(HeaderTemplate(parts))
    }

    /// Renders against an event; a missing field is the empty string. Control characters
    /// that a header cannot carry (CR, LF, NUL, DEL…) are dropped. A value with a `{{path}}`
    /// is cut to [`HEADER_VALUE_MAX`] bytes (at a character boundary): vendor data can be
    /// arbitrarily long, and a receiver refuses a request head over its limit. The flag says
    /// whether the value was cut.
    pub fn render_capped(&self, event: &serde_json::Value) -> (HeaderValue, bool) {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(path) => {
                    let value = path.iter().try_fold(event, |v, key| v.get(key));
                    match value {
                        Some(serde_json::Value::String(s)) => out.push_str(s),
                        Some(serde_json::Value::Null) | None => {}
                        Some(other) => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        out.retain(|c| c == '\t' || !c.is_control());
        let cut = self.has_fields() && out.len() > HEADER_VALUE_MAX;
        if cut {
            let end = (0..=HEADER_VALUE_MAX).rev().find(|&i| out.is_char_boundary(i)).unwrap_or(0);
            out.truncate(end);
        }
        (HeaderValue::from_bytes(out.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("")), cut)
    }

    /// [`HeaderTemplate::render_capped`] without the flag.
    pub fn render(&self, event: &serde_json::Value) -> HeaderValue {
        self.render_capped(event).0
    }

    /// Whether rendering needs the event (any `{{path}}`).
    pub fn has_fields(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Field(_)))
    }

    fn static_text(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Part::Text(text)] => Some(text),
            [] => Some(""),
            _ => None,
        }
    }
}

/// A configuration problem: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.key, self.message) }
    }
}

/// Every problem found while loading, in key order.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration in {} ({} problem(s)):", self.path.display(), self.errors.len())?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads environment variables; a seam so tests need not mutate the process environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Config {
    /// Loads `path` merged with `CALLGATE_*` variables from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        // Only `CALLGATE_<SECTION>__<KEY>` variables are configuration; others with the prefix
        // (`CALLGATE_CONFIG`, `CALLGATE_ADMIN_TOKEN` for the CLI…) are not keys.
        let env = Env::prefixed("CALLGATE_").filter(|key| key.as_str().contains("__")).split("__");
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(env);
        Self::from_figment(path, &figment, &ProcessEnv)
    }

    /// Loads TOML text (for tests and `check`), with `${NAME}` read from `env`.
    pub fn from_toml(text: &str, env: &dyn Environment) -> Result<Config, ConfigErrors> {
        Self::from_figment(Path::new("<inline>"), &Figment::new().merge(Toml::string(text)), env)
    }

    fn from_figment(path: &Path, figment: &Figment, env: &dyn Environment) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let fail = |errors: Vec<ConfigError>| ConfigErrors { path: path.to_owned(), errors };

        let root: figment::value::Dict = match figment.extract() {
            Ok(root) => root,
            Err(e) => return Err(fail(figment_errors(e))),
        };
        for key in root.keys() {
            if !["server", "storage", "admin", "log", "delivery", "calls", "sources", "routes"].contains(&key.as_str())
            {
                errors.push(ConfigError { key: key.clone(), message: "unknown key".into() });
            }
        }
        let server: ServerConfig =
            table(figment, &root, "server", &mut errors).unwrap_or_else(ServerConfig::from_empty);
        let storage: StorageConfig =
            table(figment, &root, "storage", &mut errors).unwrap_or_else(StorageConfig::from_empty);
        let mut admin: AdminConfig = table(figment, &root, "admin", &mut errors).unwrap_or_default();
        let log: LogConfig = table(figment, &root, "log", &mut errors).unwrap_or_else(LogConfig::from_empty);
        let delivery: DeliveryConfig =
            table(figment, &root, "delivery", &mut errors).unwrap_or_else(DeliveryConfig::from_empty);
        let calls: CallsConfig = table(figment, &root, "calls", &mut errors).unwrap_or_default();
        if calls.settle.is_zero() {
            errors.push(ConfigError { key: "calls.settle".into(), message: "must be greater than 0".into() });
        }

        if server.max_body_bytes == 0 {
            errors.push(ConfigError { key: "server.max_body_bytes".into(), message: "must be greater than 0".into() });
        }
        if server.max_header_bytes < 8192 {
            errors.push(ConfigError { key: "server.max_header_bytes".into(), message: "must be at least 8192".into() });
        }
        if server.max_connections == 0 || server.header_read_timeout.is_zero() || server.request_timeout.is_zero() {
            errors.push(ConfigError {
                key: "server".into(),
                message: "max_connections, header_read_timeout and request_timeout must be greater than 0".into(),
            });
        }
        if server.max_concurrent_requests == 0 {
            errors.push(ConfigError {
                key: "server.max_concurrent_requests".into(),
                message: "must be greater than 0".into(),
            });
        }
        if server.max_unverified_per_source == Some(0) {
            errors.push(ConfigError {
                key: "server.max_unverified_per_source".into(),
                message: "must be greater than 0".into(),
            });
        }
        if !(1..=8).contains(&storage.writers) {
            errors.push(ConfigError { key: "storage.writers".into(), message: "must be between 1 and 8".into() });
        }
        if storage.pool_size < 2 {
            errors.push(ConfigError { key: "storage.pool_size".into(), message: "must be at least 2".into() });
        }
        if storage.statement_timeout.is_zero() || storage.acquire_timeout.is_zero() {
            errors.push(ConfigError {
                key: "storage.statement_timeout".into(),
                message: "statement_timeout and acquire_timeout must be greater than 0".into(),
            });
        }
        if storage.prune_interval.is_zero() {
            errors.push(ConfigError { key: "storage.prune_interval".into(), message: "must be greater than 0".into() });
        }
        if delivery.lease_margin < Duration::from_secs(1) {
            // An attempt ends at its route's timeout; a lease must outlive it by a safe margin.
            errors.push(ConfigError { key: "delivery.lease_margin".into(), message: "must be at least 1s".into() });
        }
        if !STREAM_BUFFER_RANGE.contains(&admin.stream_buffer) {
            errors.push(ConfigError {
                key: "admin.stream_buffer".into(),
                message: format!("must be between {} and {}", STREAM_BUFFER_RANGE.start(), STREAM_BUFFER_RANGE.end()),
            });
        }
        if delivery.concurrency == 0 {
            errors.push(ConfigError { key: "delivery.concurrency".into(), message: "must be greater than 0".into() });
        }
        let storage =
            StorageConfig { url: Secret(substitute(storage.url.expose(), "storage.url", env, &mut errors)), ..storage };
        let storage_url = StorageUrl::parse(storage.url.expose()).unwrap_or_else(|message| {
            errors.push(ConfigError { key: "storage.url".into(), message });
            StorageUrl::Sqlite(PathBuf::new())
        });
        if let Some(token) = &admin.token {
            let token = substitute(token.expose(), "admin.token", env, &mut errors);
            if token.trim().is_empty() {
                // An empty token would make `Authorization: Bearer ` the admin password.
                errors.push(ConfigError {
                    key: "admin.token".into(),
                    message: "the token is empty (remove the key to turn the admin API off)".into(),
                });
            }
            admin.token = Some(Secret(token));
        }

        let mut sources = BTreeMap::new();
        for name in names(&root, "sources", &mut errors) {
            let key = format!("sources.{name}");
            if let Some(raw) = extract::<RawSource>(figment, &key, &mut errors)
                && let Some(source) = raw.validate(&key, env, &mut errors)
            {
                check_name(&name, &key, &mut errors);
                sources.insert(name, source);
            }
        }
        for (name, source) in &sources {
            if source.inbound.as_ref().is_some_and(|i| i.timeout >= server.request_timeout) {
                // The request's own time limit would answer 408 before the fallback.
                errors.push(ConfigError {
                    key: format!("sources.{name}.inbound.timeout"),
                    message: "must be shorter than server.request_timeout".into(),
                });
            }
        }
        let mut routes = BTreeMap::new();
        for name in names(&root, "routes", &mut errors) {
            let key = format!("routes.{name}");
            if let Some(raw) = extract::<RawRoute>(figment, &key, &mut errors)
                && let Some(route) = raw.validate(&key, &sources, env, &mut errors)
            {
                check_name(&name, &key, &mut errors);
                routes.insert(name, route);
            }
        }

        if errors.is_empty() {
            Ok(Config {
                path: path.to_owned(),
                server,
                storage,
                storage_url,
                admin,
                log,
                delivery,
                calls,
                sources,
                routes,
            })
        } else {
            errors.sort_by(|a, b| a.key.cmp(&b.key));
            errors.dedup();
            Err(fail(errors))
        }
    }

    /// Slots a source may hold for bodies read before their sender is authenticated
    /// (`server.max_unverified_per_source`, or its default).
    pub fn unverified_share(&self) -> usize {
        let unverified = self.sources.values().filter(|s| s.auth.reads_body_unverified()).count();
        self.server
            .max_unverified_per_source
            .unwrap_or_else(|| (self.server.max_concurrent_requests / (unverified + 1)).max(1))
    }
}

/// Extracts one table, recording (not returning) its errors.
fn table<T: DeserializeOwned>(
    figment: &Figment,
    root: &figment::value::Dict,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    if root.contains_key(key) { extract(figment, key, errors) } else { None }
}

fn extract<T: DeserializeOwned>(figment: &Figment, key: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
    match figment.extract_inner::<T>(key) {
        Ok(value) => Some(value),
        Err(e) => {
            // figment reports the path inside the extracted value followed by `key`'s own
            // segments ("foo.routes.r"); put it back in reading order ("routes.r.foo").
            let segments: Vec<&str> = key.split('.').collect();
            errors.extend(figment_errors(e).into_iter().map(|mut error| {
                let mut path: Vec<&str> = error.key.split('.').filter(|s| !s.is_empty()).collect();
                if path.ends_with(&segments) {
                    path.truncate(path.len() - segments.len());
                }
                error.key = segments.iter().chain(path.iter()).copied().collect::<Vec<_>>().join(".");
                error
            }));
            None
        }
    }
}

/// The table names under `[sources]` or `[routes]`.
fn names(root: &figment::value::Dict, key: &str, errors: &mut Vec<ConfigError>) -> Vec<String> {
    match root.get(key) {
        None => Vec::new(),
        Some(figment::value::Value::Dict(_, dict)) => dict.keys().cloned().collect(),
        Some(_) => {
            errors.push(ConfigError { key: key.into(), message: "must be a table of named entries".into() });
            Vec::new()
        }
    }
}

fn check_name(name: &str, key: &str, errors: &mut Vec<ConfigError>) {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        errors.push(ConfigError { key: key.into(), message: "name may only use letters, digits, `-` and `_`".into() });
    }
}

fn figment_errors(e: figment::Error) -> Vec<ConfigError> {
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let mut message = e.kind.to_string();
            if let Some(source) = e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                message.push_str(&format!(" (from {source})"));
            }
            ConfigError { key, message }
        })
        .collect()
}

/// Replaces every `${NAME}` with the environment variable `NAME`; a missing one is an error.
pub fn substitute(text: &str, key: &str, env: &dyn Environment, errors: &mut Vec<ConfigError>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..start]);
        if !valid {
            out.push_str(&rest[start..start + 3 + len]);
        } else {
            match env.var(name) {
                Some(value) => out.push_str(&value),
                None => errors
                    .push(ConfigError { key: key.into(), message: format!("environment variable {name} is not set") }),
            }
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    /// `oneinbox` | `vox` | `salpre` | `utel`.
    vendor: Vendor,
    phone_region: Option<String>,
    #[serde(default)]
    auth: Auth,
    inbound: Option<RawInbound>,
    /// `body` (default) | `event`.
    dedup: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    url: String,
    #[serde(default = "default_inbound_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    signing_secret: Option<OneOrMany>,
    #[serde(default)]
    fallback: crate::canonical::lookup::LookupAnswer,
}

impl RawInbound {
    fn validate(
        self,
        key: &str,
        vendor: Vendor,
        env: &dyn Environment,
        errors: &mut Vec<ConfigError>,
    ) -> Option<InboundConfig> {
        let before = errors.len();
        if vendor != Vendor::Vox {
            errors.push(ConfigError {
                key: key.into(),
                message: format!("only vox sources have an inbound webhook (this source is {vendor})"),
            });
        }
        let url = egress_url(&self.url, key, env, errors);
        if self.timeout.is_zero() {
            errors.push(ConfigError { key: format!("{key}.timeout"), message: "must be greater than 0".into() });
        }
        let headers = egress_headers(&self.headers, key, env, errors);
        let signing_secrets = signing_secrets(self.signing_secret, key, env, errors);
        if errors.len() != before {
            return None;
        }
        Some(InboundConfig { url: url?, timeout: self.timeout, headers, signing_secrets, fallback: self.fallback })
    }
}

impl RawSource {
    fn validate(self, key: &str, env: &dyn Environment, errors: &mut Vec<ConfigError>) -> Option<SourceConfig> {
        let before = errors.len();
        let phone_region = self.phone_region.as_deref().and_then(|region| match region.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(ConfigError {
                    key: format!("{key}.phone_region"),
                    message: format!("unknown region `{region}` (use an ISO 3166 code such as KR)"),
                });
                None
            }
        });
        let dedup = match self.dedup.as_deref() {
            None => Some(Dedup::Body),
            Some(name) => Dedup::parse(name).or_else(|| {
                errors.push(ConfigError {
                    key: format!("{key}.dedup"),
                    message: format!("unknown value `{}` (use {})", crate::http::cut(name, 40), Dedup::NAMES),
                });
                None
            }),
        };
        let sub = |s: &Secret, field: &str, errors: &mut Vec<ConfigError>| {
            Secret(substitute(s.expose(), &format!("{key}.auth.{field}"), env, errors))
        };
        let auth = match self.auth {
            Auth::None => Auth::None,
            Auth::Query { name, value } => Auth::Query { value: sub(&value, "value", errors), name },
            Auth::Header { name, value } => {
                if HeaderName::from_bytes(name.as_bytes()).is_err() {
                    errors.push(ConfigError {
                        key: format!("{key}.auth.name"),
                        message: "not a valid header name".into(),
                    });
                }
                Auth::Header { value: sub(&value, "value", errors), name }
            }
            Auth::Bearer { token } => Auth::Bearer { token: sub(&token, "token", errors) },
            Auth::Basic { username, password } => {
                Auth::Basic { password: sub(&password, "password", errors), username }
            }
            Auth::Hmac { header, secret, encoding } => {
                Auth::Hmac { secret: sub(&secret, "secret", errors), header, encoding }
            }
            Auth::Retell { api_key } => Auth::Retell { api_key: sub(&api_key, "api_key", errors) },
        };
        let empty_secret = match &auth {
            Auth::None => false,
            Auth::Query { value, .. } | Auth::Header { value, .. } => value.expose().is_empty(),
            Auth::Bearer { token } => token.expose().is_empty(),
            Auth::Basic { password, .. } => password.expose().is_empty(),
            Auth::Hmac { secret, .. } => secret.expose().is_empty(),
            Auth::Retell { api_key } => api_key.expose().is_empty(),
        };
        if empty_secret {
            errors.push(ConfigError { key: format!("{key}.auth"), message: "the secret is empty".into() });
        }
        let inbound = self.inbound.and_then(|raw| raw.validate(&format!("{key}.inbound"), self.vendor, env, errors));
        match dedup {
            Some(dedup) if errors.len() == before => {
                Some(SourceConfig { vendor: self.vendor, phone_region, auth, inbound, dedup })
            }
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    url: String,
    #[serde(default = "all_events")]
    events: Vec<String>,
    sources: Option<Vec<String>>,
    #[serde(default)]
    include_test: bool,
    /// Read by [`Filter::parse`], which names each problem's key.
    filter: Option<serde_json::Value>,
    #[serde(default)]
    omit: Vec<String>,
    #[serde(default)]
    mask_numbers: bool,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_route_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    signing_secret: Option<OneOrMany>,
    #[serde(default)]
    retry: RawRetry,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default, with = "humantime_serde::option_vec")]
    schedule: Option<Vec<Duration>>,
}

/// Headers the gateway owns: a route cannot override them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

impl RawRoute {
    fn validate(
        self,
        key: &str,
        sources: &BTreeMap<String, SourceConfig>,
        env: &dyn Environment,
        errors: &mut Vec<ConfigError>,
    ) -> Option<RouteConfig> {
        let before = errors.len();
        let url = egress_url(&self.url, key, env, errors);
        if self.events.is_empty() {
            errors.push(ConfigError { key: format!("{key}.events"), message: "must list at least one pattern".into() });
        }
        for pattern in &self.events {
            let ok = pattern.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._*?".contains(c));
            if !ok || pattern.is_empty() {
                errors.push(ConfigError {
                    key: format!("{key}.events"),
                    message: format!("`{pattern}` is not a pattern over canonical types (e.g. `call.*`)"),
                });
            }
        }
        for source in self.sources.iter().flatten() {
            if !sources.contains_key(source) {
                errors.push(ConfigError {
                    key: format!("{key}.sources"),
                    message: format!("no source named `{source}`"),
                });
            }
        }
        if self.timeout.is_zero() {
            errors.push(ConfigError { key: format!("{key}.timeout"), message: "must be greater than 0".into() });
        }
        let filter = self.filter.as_ref().and_then(|value| Filter::parse(value, &format!("{key}.filter"), errors));
        let minimise = Minimise::new(self.omit, self.mask_numbers, key, errors);
        let headers = egress_headers(&self.headers, key, env, errors);
        let signing_secrets = signing_secrets(self.signing_secret, key, env, errors);
        let retry_schedule = self.retry.schedule.unwrap_or_else(|| DEFAULT_SCHEDULE.to_vec());
        if errors.len() != before {
            return None;
        }
        Some(RouteConfig {
            url: url?,
            patterns: self.events.iter().map(|p| wildmatch::WildMatch::new(p)).collect(),
            events: self.events,
            sources: self.sources,
            include_test: self.include_test,
            filter,
            minimise,
            enabled: self.enabled,
            timeout: self.timeout,
            headers,
            signing_secrets,
            retry_schedule,
        })
    }
}

/// An egress `url` (a route's, a lookup's): `${NAME}` substituted, http or https.
fn egress_url(text: &str, key: &str, env: &dyn Environment, errors: &mut Vec<ConfigError>) -> Option<reqwest::Url> {
    let url_text = substitute(text, &format!("{key}.url"), env, errors);
    match reqwest::Url::parse(&url_text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(_) => {
            errors.push(ConfigError { key: format!("{key}.url"), message: "must be an http or https URL".into() });
            None
        }
        Err(e) => {
            errors.push(ConfigError { key: format!("{key}.url"), message: format!("not a URL: {e}") });
            None
        }
    }
}

/// The `headers` table of an egress (a route, a lookup), parsed into templates in key order.
fn egress_headers(
    table: &BTreeMap<String, String>,
    key: &str,
    env: &dyn Environment,
    errors: &mut Vec<ConfigError>,
) -> Vec<(HeaderName, HeaderTemplate)> {
    let mut headers = Vec::new();
    for (name, value) in table {
        let at = format!("{key}.headers.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            errors.push(ConfigError { key: at, message: "not a valid header name".into() });
            continue;
        };
        if RESERVED_HEADERS.contains(&header.as_str()) {
            errors.push(ConfigError {
                key: at,
                message: "this header is set by callgate and cannot be overridden".into(),
            });
            continue;
        }
        let value = substitute(value, &at, env, errors);
        match HeaderTemplate::parse(&value) {
            Ok(template) => {
                if template.static_text().is_some_and(|t| HeaderValue::from_str(t).is_err()) {
                    errors.push(ConfigError { key: at, message: "not a valid header value".into() });
                } else {
                    headers.push((header, template));
                }
            }
            Err(e) => errors.push(ConfigError { key: at, message: e }),
        }
    }
    headers
}

/// The `signing_secret` of an egress (one or several `whsec_…`).
fn signing_secrets(
    given: Option<OneOrMany>,
    key: &str,
    env: &dyn Environment,
    errors: &mut Vec<ConfigError>,
) -> Vec<Secret> {
    let secrets = match given {
        None => vec![],
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    let mut signing_secrets = Vec::new();
    for secret in secrets {
        let secret = substitute(&secret, &format!("{key}.signing_secret"), env, errors);
        if crate::delivery::signing::decode_secret(&secret).is_none() {
            errors.push(ConfigError {
                key: format!("{key}.signing_secret"),
                message: "must be `whsec_` followed by base64 (the Standard Webhooks format)".into(),
            });
        }
        signing_secrets.push(Secret(secret));
    }
    signing_secrets
}

impl ServerConfig {
    fn from_empty() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            request_timeout: default_request_timeout(),
            max_concurrent_requests: default_max_concurrent(),
            max_unverified_per_source: None,
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_connections: default_max_connections(),
            shutdown_grace: default_grace(),
        }
    }
}

impl StorageConfig {
    fn from_empty() -> Self {
        StorageConfig {
            url: default_storage_url(),
            busy_timeout: default_busy_timeout(),
            retention: default_retention(),
            dedup_window: default_dedup_window(),
            prune_interval: default_prune_interval(),
            min_free_bytes: default_min_free_bytes(),
            pool_size: default_pool_size(),
            writers: default_writers(),
            statement_timeout: default_statement_timeout(),
            acquire_timeout: default_acquire_timeout(),
        }
    }
}

impl LogConfig {
    fn from_empty() -> Self {
        LogConfig { format: LogFormat::Text, filter: default_log_filter() }
    }
}

impl DeliveryConfig {
    fn from_empty() -> Self {
        DeliveryConfig {
            concurrency: default_concurrency(),
            connect_timeout: default_connect_timeout(),
            lease_margin: default_lease_margin(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_concurrent() -> usize {
    512
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_connections() -> usize {
    4096
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_storage_url() -> Secret {
    Secret::new("sqlite://data/callgate.db")
}
fn default_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_dedup_window() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_prune_interval() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_pool_size() -> u32 {
    16
}
fn default_writers() -> usize {
    2
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_acquire_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_min_free_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_busy_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_log_filter() -> String {
    "info".into()
}
fn default_concurrency() -> usize {
    16
}
fn default_lease_margin() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_inbound_timeout() -> Duration {
    DEFAULT_INBOUND_TIMEOUT
}
fn default_route_timeout() -> Duration {
    Duration::from_secs(10)
}
fn all_events() -> Vec<String> {
    vec!["*".into()]
}
fn yes() -> bool {
    true
}

/// `"10s"`-style durations in serde, via `humantime`.
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}`: {e} (use e.g. \"10s\", \"5m\")")))
    }

    pub mod option_vec {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
            let texts = Vec::<String>::deserialize(d)?;
            texts
                .iter()
                .map(|t| humantime::parse_duration(t).map_err(|e| serde::de::Error::custom(format!("`{t}`: {e}"))))
                .collect::<Result<_, _>>()
                .map(Some)
        }
    }
}

#[cfg(test)]
mod tests;
