//! Metrics and logs. Every series callgate exports is named here, with its labels; label
//! values come from closed sets (source and route names from the config, fixed outcomes),
//! never from request data.

use std::{
    collections::BTreeSet,
    sync::{Mutex, OnceLock},
};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{
    config::{LogConfig, LogFormat},
    store::Counts,
};

pub const INGRESS_REQUESTS: &str = "callgate_ingress_requests_total";
pub const INGRESS_DURATION: &str = "callgate_ingress_duration_seconds";
pub const EVENTS: &str = "callgate_events_total";
pub const DELIVERIES: &str = "callgate_deliveries_total";
pub const DELIVERY_DURATION: &str = "callgate_delivery_duration_seconds";
pub const BACKLOG: &str = "callgate_delivery_backlog";
pub const DEAD_LETTERS: &str = "callgate_dead_letters";
pub const ROUTE_PAUSED: &str = "callgate_route_paused";
pub const HEADER_VALUES_TRUNCATED: &str = "callgate_header_values_truncated_total";
pub const DEGRADED_FIELDS: &str = "callgate_degraded_fields_total";
pub const VENDOR_DRIFT: &str = "callgate_vendor_drift_total";
pub const INBOUND_REQUESTS: &str = "callgate_inbound_requests_total";
pub const INBOUND_DURATION: &str = "callgate_inbound_duration_seconds";
pub const DEDUP_FALLBACKS: &str = "callgate_dedup_body_fallbacks_total";
pub const CONFIG_RELOADS: &str = "callgate_config_reloads_total";
pub const TAIL_READERS: &str = "callgate_tail_readers";
pub const TAIL_DROPPED: &str = "callgate_tail_dropped_total";

/// Histogram buckets (seconds) for both latency series.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Ingress outcomes, the `outcome` label of `callgate_ingress_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressOutcome {
    Accepted,
    Duplicate,
    Invalid,
    Unauthorized,
    TooLarge,
    Unavailable,
    UnknownSource,
    /// 408: the request did not finish within `server.request_timeout`.
    Timeout,
}

impl IngressOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            IngressOutcome::Accepted => "accepted",
            IngressOutcome::Duplicate => "duplicate",
            IngressOutcome::Invalid => "invalid",
            IngressOutcome::Unauthorized => "unauthorized",
            IngressOutcome::TooLarge => "too_large",
            IngressOutcome::Unavailable => "unavailable",
            IngressOutcome::UnknownSource => "unknown_source",
            IngressOutcome::Timeout => "timeout",
        }
    }
}

/// Inbound webhook outcomes, the `outcome` label of `callgate_inbound_requests_total`: the
/// lookup's answer was passed on, or the fallback was answered (and why), or the request was
/// refused (401, 404, 413, 422, 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundOutcome {
    Answered,
    /// No answer by the deadline (`sources.NAME.inbound.timeout`).
    Timeout,
    /// Unreachable, or an answer other than 2xx.
    Failed,
    /// A 2xx whose body is not `{"variables": {…}, "metadata": {…}}`.
    Malformed,
    Rejected,
}

impl InboundOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundOutcome::Answered => "answered",
            InboundOutcome::Timeout => "timeout",
            InboundOutcome::Failed => "failed",
            InboundOutcome::Malformed => "malformed",
            InboundOutcome::Rejected => "rejected",
        }
    }
}

/// Reload outcomes, the `outcome` label of `callgate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file was valid and its reloadable parts now run.
    Applied,
    /// The file had errors; the running configuration stays.
    Rejected,
}

impl ReloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Rejected => "rejected",
        }
    }
}

/// Delivery outcomes, the `outcome` label of `callgate_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Success,
    Retry,
    DeadLetter,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Success => "success",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::DeadLetter => "dead_letter",
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding several gateways):
            // then this one still renders, just without the other's data.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(INGRESS_REQUESTS, "Ingress requests by source, vendor and outcome.");
    describe_histogram!(INGRESS_DURATION, metrics::Unit::Seconds, "Time to answer an ingress request.");
    describe_counter!(EVENTS, "Canonical events accepted, by source and canonical type.");
    describe_counter!(DELIVERIES, "Delivery attempts by route and outcome.");
    describe_histogram!(DELIVERY_DURATION, metrics::Unit::Seconds, "Time of one delivery attempt.");
    describe_gauge!(BACKLOG, "Deliveries waiting or retrying, by route.");
    describe_gauge!(DEAD_LETTERS, "Dead-lettered deliveries kept in the store, by route.");
    describe_counter!(
        HEADER_VALUES_TRUNCATED,
        "Templated header values cut or left out to bound the request head, by route (once per delivery)."
    );
    describe_counter!(
        DEGRADED_FIELDS,
        "Descriptive fields of accepted payloads in a shape callgate cannot read (kept in vendor_extra), by source, vendor and field."
    );
    describe_counter!(
        VENDOR_DRIFT,
        "Drift seen in accepted payloads, by source and kind (unknown_field, unknown_value, degraded); GET /v1/admin/drift says where."
    );
    describe_counter!(
        INBOUND_REQUESTS,
        "Inbound webhook requests by source and outcome (answered, or the fallback after a timeout, failed or malformed lookup, or rejected)."
    );
    describe_histogram!(INBOUND_DURATION, metrics::Unit::Seconds, "Time to answer an inbound webhook request.");
    describe_gauge!(ROUTE_PAUSED, "1 while a route is paused (410 Gone, or an operator), else 0.");
    describe_counter!(
        DEDUP_FALLBACKS,
        "Payloads of a `dedup = \"event\"` source keyed by their body because they lack their event identity fields, by source and vendor."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads (SIGHUP or POST /v1/admin/reload) by outcome: applied, or rejected with the running configuration kept."
    );
    describe_gauge!(TAIL_READERS, "Live tail streams (/v1/admin/stream) open on this replica.");
    describe_counter!(
        TAIL_DROPPED,
        "Live tail streams ended with a `dropped` notice, by reason (slow: the reader fell behind; missed: messages of other replicas may have been lost)."
    );
}

pub fn tail_readers(open: usize) {
    gauge!(TAIL_READERS).set(open as f64);
}

/// `reason` is one of the tail's fixed reasons (`slow`, `missed`).
pub fn tail_dropped(reason: &'static str) {
    counter!(TAIL_DROPPED, "reason" => reason).increment(1);
}

pub fn config_reload(outcome: ReloadOutcome) {
    counter!(CONFIG_RELOADS, "outcome" => outcome.as_str()).increment(1);
}

pub fn ingress(source: &str, vendor: &str, outcome: IngressOutcome, seconds: f64) {
    counter!(INGRESS_REQUESTS, "source" => source.to_owned(), "vendor" => vendor.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
    histogram!(INGRESS_DURATION, "source" => source.to_owned()).record(seconds);
}

pub fn inbound(source: &str, outcome: InboundOutcome, seconds: f64) {
    counter!(INBOUND_REQUESTS, "source" => source.to_owned(), "outcome" => outcome.as_str()).increment(1);
    histogram!(INBOUND_DURATION, "source" => source.to_owned()).record(seconds);
}

pub fn event(source: &str, kind: &'static str) {
    counter!(EVENTS, "source" => source.to_owned(), "type" => kind).increment(1);
}

/// `field` comes from the adapter's fixed set (`vendors::Degraded::field`), never from the payload.
pub fn degraded(source: &str, vendor: &str, field: &'static str) {
    counter!(DEGRADED_FIELDS, "source" => source.to_owned(), "vendor" => vendor.to_owned(), "field" => field)
        .increment(1);
}

/// Drift in an accepted payload: `kind` is one of `vendors::DriftKind` (a closed set; the path
/// and value are never labels, they are unbounded).
pub fn vendor_drift(source: &str, kind: &'static str, count: u64) {
    counter!(VENDOR_DRIFT, "source" => source.to_owned(), "kind" => kind).increment(count);
}

/// A payload of a `dedup = "event"` source without its identity fields, keyed by its body.
pub fn dedup_fallback(source: &str, vendor: &str) {
    counter!(DEDUP_FALLBACKS, "source" => source.to_owned(), "vendor" => vendor.to_owned()).increment(1);
}

pub fn delivery(route: &str, outcome: DeliveryOutcome, seconds: f64) {
    counter!(DELIVERIES, "route" => route.to_owned(), "outcome" => outcome.as_str()).increment(1);
    histogram!(DELIVERY_DURATION, "route" => route.to_owned()).record(seconds);
}

pub fn header_values_truncated(route: &str, values: u64) {
    counter!(HEADER_VALUES_TRUNCATED, "route" => route.to_owned()).increment(values);
}

pub fn route_paused(route: &str, paused: bool) {
    gauge!(ROUTE_PAUSED, "route" => route.to_owned()).set(if paused { 1.0 } else { 0.0 });
}

/// Routes whose store gauges were ever set: a route removed by a reload whose backlog was then
/// discarded is in neither the configuration nor the counts, and its gauges must still drop
/// to zero rather than keep their last value. Bounded by the route names ever configured.
static GAUGED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Sets the backlog and dead-letter gauges from the store's counts, for every known route
/// (zero when the store has none), so the gauges always equal the store.
pub fn set_store_gauges<'a>(routes: impl IntoIterator<Item = &'a String>, counts: &Counts) {
    let mut names: BTreeSet<String> = routes.into_iter().cloned().collect();
    names.extend(counts.backlog.keys().cloned());
    names.extend(counts.dead.keys().cloned());
    if let Ok(mut gauged) = GAUGED.lock() {
        gauged.extend(names.iter().cloned());
        names.clone_from(&gauged);
    }
    for route in &names {
        gauge!(BACKLOG, "route" => route.clone()).set(counts.backlog.get(route).copied().unwrap_or(0) as f64);
        gauge!(DEAD_LETTERS, "route" => route.clone()).set(counts.dead.get(route).copied().unwrap_or(0) as f64);
    }
}

/// Installs the `tracing` subscriber: text or JSON lines on stderr, filtered by `RUST_LOG`
/// or `log.filter`.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
    let _ = result; // already installed (tests)
}
