//! Egress: one worker per route sends that route's due deliveries from the store, records
//! each outcome back in the store, and schedules retries or dead-letters.
//!
//! **Invariant:** delivery works only from the store. Nothing is handed from ingress to a
//! worker in memory except a wake-up, so a restart resumes exactly where the store says.
//! **Invariant:** delivery knows nothing about vendors; it sends canonical JSON as stored.
//! **Invariant:** each route has its own worker and its own concurrency budget: a slow or
//! dead route never delays another.

pub mod signing;

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{
    StatusCode,
    header::{self, HeaderMap, HeaderName, HeaderValue},
};
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, RouteConfig},
    store::{Attempt, Delivery, Millis, Outcome, Store, now_ms},
    telemetry::{self, DeliveryOutcome},
};

/// Bytes of a failed response kept with the attempt.
const SNIPPET_BYTES: usize = 1024;
/// Longest idle sleep of a worker; it is woken earlier by new events and finished attempts.
const MAX_IDLE: Duration = Duration::from_secs(30);
/// Bounds applied to a `Retry-After` answer.
const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(6 * 3600);

/// The delivery side of a running gateway.
pub struct Dispatcher {
    /// Wake-up per route, signalled by ingress after a commit that added deliveries.
    wakers: BTreeMap<String, Arc<Notify>>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl Dispatcher {
    /// Starts a worker for every enabled route.
    pub fn start(config: &Config, store: Arc<dyn Store>) -> Result<Dispatcher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.delivery.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let stop = CancellationToken::new();
        let mut wakers = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for (name, route) in config.routes.iter().filter(|(_, r)| r.enabled) {
            let notify = Arc::new(Notify::new());
            wakers.insert(name.clone(), notify.clone());
            let worker = Worker {
                name: name.clone(),
                route: Arc::new(RouteRuntime::new(route)),
                store: store.clone(),
                client: client.clone(),
                notify,
                concurrency: config.delivery.concurrency,
                stop: stop.clone(),
            };
            tasks.spawn(worker.run());
        }
        Ok(Dispatcher { wakers, tasks, stop })
    }

    /// Tells a route's worker that new deliveries are waiting.
    pub fn wake(&self, route: &str) {
        if let Some(notify) = self.wakers.get(route) {
            notify.notify_one();
        }
    }

    /// Stops taking new deliveries and waits up to `grace` for in-flight attempts; whatever
    /// is not finished stays in the store for the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(grace = ?grace, "Deliveries still in flight at the end of the grace period; they will be retried after restart.");
            self.tasks.abort_all();
        }
    }
}

/// A route prepared for sending: parsed headers and signing keys.
struct RouteRuntime {
    config: RouteConfig,
    signing_keys: Vec<Vec<u8>>,
    /// Whether any header needs the event parsed to render.
    templated: bool,
}

impl RouteRuntime {
    fn new(config: &RouteConfig) -> Self {
        let signing_keys = config.signing_secrets.iter().filter_map(|s| signing::decode_secret(s.expose())).collect();
        let templated = config.headers.iter().any(|(_, t)| t.has_fields());
        RouteRuntime { config: config.clone(), signing_keys, templated }
    }

    fn headers(&self, delivery: &Delivery) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
        if !self.config.headers.is_empty() {
            let event = if self.templated {
                serde_json::from_str(&delivery.json).unwrap_or_default()
            } else {
                serde_json::Value::Null
            };
            for (name, template) in &self.config.headers {
                headers.insert(name.clone(), template.render(&event));
            }
        }
        if !self.signing_keys.is_empty() {
            let timestamp = chrono::Utc::now().timestamp();
            let signature =
                signing::signature_header(&self.signing_keys, &delivery.event_id, timestamp, delivery.json.as_bytes());
            let mut set = |name: &'static str, value: String| {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            };
            set("webhook-id", delivery.event_id.clone());
            set("webhook-timestamp", timestamp.to_string());
            set("webhook-signature", signature);
        }
        headers
    }
}

struct Worker {
    name: String,
    route: Arc<RouteRuntime>,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    notify: Arc<Notify>,
    /// Attempts in flight at once on this route.
    concurrency: usize,
    stop: CancellationToken,
}

impl Worker {
    async fn run(self) {
        let mut in_flight: HashSet<i64> = HashSet::new();
        let mut attempts: JoinSet<i64> = JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            // Fill free slots with due heads of line.
            let mut idle_for = MAX_IDLE;
            let free = self.concurrency.saturating_sub(in_flight.len());
            if free > 0 && !self.stop.is_cancelled() {
                let skip: Vec<i64> = in_flight.iter().copied().collect();
                match self.store.due(&self.name, now_ms(), free, &skip).await {
                    Ok(due) => {
                        backoff = Duration::from_millis(100);
                        let exhausted = due.len() < free;
                        for delivery in due {
                            in_flight.insert(delivery.id);
                            attempts.spawn(attempt(
                                self.client.clone(),
                                self.route.clone(),
                                self.name.clone(),
                                self.store.clone(),
                                delivery,
                            ));
                        }
                        if exhausted {
                            idle_for = self.idle_time().await;
                        } else {
                            idle_for = Duration::ZERO;
                        }
                    }
                    Err(e) => {
                        tracing::error!(route = %self.name, error = %e, "Could not read due deliveries.");
                        idle_for = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            if self.stop.is_cancelled() && attempts.is_empty() {
                return;
            }
            if idle_for.is_zero() && in_flight.len() < self.concurrency {
                continue;
            }
            tokio::select! {
                Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                    if let Ok(id) = done {
                        in_flight.remove(&id);
                    }
                    while let Some(Ok(id)) = attempts.try_join_next() {
                        in_flight.remove(&id);
                    }
                }
                _ = self.notify.notified(), if !self.stop.is_cancelled() => {}
                _ = tokio::time::sleep(idle_for), if !self.stop.is_cancelled() => {}
                _ = self.stop.cancelled(), if !self.stop.is_cancelled() => {}
            }
        }
    }

    /// How long to sleep when nothing more is due: until the next retry falls due, or a
    /// short while if heads of line are in flight (their completion wakes us anyway).
    async fn idle_time(&self) -> Duration {
        match self.store.next_due(&self.name).await {
            Ok(Some(at)) => {
                let wait = at - now_ms();
                if wait > 0 { Duration::from_millis(wait as u64).min(MAX_IDLE) } else { Duration::from_secs(1) }
            }
            Ok(None) => MAX_IDLE,
            Err(_) => Duration::from_secs(1),
        }
    }
}

/// One attempt: send, classify, record the outcome in the store. Returns the delivery id once
/// the store holds the outcome, so the worker never picks the same delivery twice.
async fn attempt(
    client: reqwest::Client,
    route: Arc<RouteRuntime>,
    name: String,
    store: Arc<dyn Store>,
    d: Delivery,
) -> i64 {
    let started = Instant::now();
    let at = now_ms();
    let result = client
        .post(route.config.url.clone())
        .timeout(route.config.timeout)
        .headers(route.headers(&d))
        .body(d.json.clone())
        .send()
        .await;
    let (status, error, response, retry_after) = match result {
        Ok(resp) if resp.status().is_success() => (Some(resp.status()), None, None, None),
        Ok(resp) => {
            let status = resp.status();
            let retry_after = matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
                .then(|| retry_after(resp.headers()))
                .flatten();
            (Some(status), None, Some(snippet(resp).await), retry_after)
        }
        Err(e) => (None, Some(describe(&e, route.config.timeout)), None, None),
    };
    let seconds = started.elapsed().as_secs_f64();
    let record = Attempt {
        at,
        status: status.map(|s| s.as_u16()),
        error,
        response,
        duration_ms: started.elapsed().as_millis() as i64,
    };
    let delivered = status.is_some_and(|s| s.is_success());
    let done = d.attempts as usize + 1;
    let (outcome, counted) = if delivered {
        (Outcome::Delivered { id: d.id }, DeliveryOutcome::Success)
    } else if let Some(delay) = route.config.retry_schedule.get(done - 1) {
        let delay = retry_after.unwrap_or_else(|| jitter(*delay));
        tracing::debug!(route = %name, event_id = %d.event_id, attempt = done, status = ?record.status, error = ?record.error, "Delivery failed; will retry.");
        (
            Outcome::Retry { id: d.id, next_at: at + delay.as_millis() as Millis, attempt: record },
            DeliveryOutcome::Retry,
        )
    } else {
        tracing::warn!(route = %name, event_id = %d.event_id, subject = %d.subject, attempts = done, status = ?record.status, error = ?record.error, "Delivery dead-lettered.");
        (Outcome::Dead { id: d.id, attempt: record }, DeliveryOutcome::DeadLetter)
    };
    // The outcome must be stored before the worker may pick this delivery's successor.
    let mut wait = Duration::from_millis(50);
    while let Err(e) = store.complete(vec![outcome.clone()]).await {
        tracing::error!(route = %name, error = %e, "Could not record a delivery outcome; retrying.");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    // Counted once the store agrees, so the counters never run ahead of the gauges.
    telemetry::delivery(&name, counted, seconds);
    d.id
}

/// ±20 % jitter, so that retries of many deliveries spread out.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// `Retry-After` as seconds or an HTTP date, clamped to sane bounds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default()
        }
    };
    Some(delay.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX))
}

/// The first bytes of a response body, for the operator reading a dead letter.
async fn snippet(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < SNIPPET_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk[..chunk.len().min(SNIPPET_BYTES - bytes.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A transport error without the URL (which may carry a secret).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {timeout:?}");
    }
    let mut text = if e.is_connect() { "connection failed".to_owned() } else { "request failed".to_owned() };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(80) && d <= Duration::from_secs(120), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_parsed_and_clamped() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        assert_eq!(retry_after(&h), Some(RETRY_AFTER_MIN));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("99999999"));
        assert_eq!(retry_after(&h), Some(RETRY_AFTER_MAX));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
