//! Egress: one worker per route sends that route's due deliveries from the store, records
//! each outcome back in the store, and schedules retries or dead-letters.
//!
//! **Invariant:** delivery works only from the store. Nothing is handed from ingress to a
//! worker in memory except a wake-up, so a restart resumes exactly where the store says.
//! **Invariant:** delivery knows nothing about vendors; it sends canonical JSON as stored, or
//! trimmed by the route's `omit` / `mask_numbers` (never more than stored).
//! **Invariant:** each route has its own worker and its own concurrency budget: a slow or
//! dead route never delays another.

pub mod signing;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use reqwest::{
    StatusCode,
    header::{self, HeaderMap, HeaderName, HeaderValue},
};
use tokio::{
    sync::{Notify, broadcast},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, HEADER_VALUE_MAX, HeaderTemplate, RouteConfig, Secret, TEMPLATED_HEADERS_MAX},
    store::{Attempt, Claimed, Delivery, Lease, Millis, Notice, Outcome, OutcomeKind, Store, now_ms},
    tail::{Attempted, Sending, Tail},
    telemetry::{self, DeliveryOutcome},
};

/// Bytes of a response kept with the attempt in the delivery log.
const SNIPPET_BYTES: usize = 1024;
/// Longest idle sleep of a worker: it is woken earlier by the store's notices and by its own
/// finished attempts; this is the fallback for a notice that never arrived (another replica's).
const MAX_IDLE: Duration = Duration::from_secs(2);
/// Batches of outcomes one worker has at the store at once: one committing while the next
/// waits for the writer's next transaction (with one, outcomes answered meanwhile missed it).
const RECORDING: usize = 2;
/// How long a worker may take, after the grace period, to give its unfinished leases back.
const RELEASE_WAIT: Duration = Duration::from_secs(2);
/// Bounds applied to a `Retry-After` answer.
const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(6 * 3600);

/// The delivery side of a running gateway: a worker per enabled route, woken by the store's
/// notices (ingress and the admin API only talk to the store). [`Dispatcher::reconfigure`]
/// starts, retires and re-dresses workers when a reload changes the routes.
pub struct Dispatcher {
    workers: std::sync::Mutex<Workers>,
    /// What the relay wakes, by route: the enabled routes of the running configuration.
    handles: Handles,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    /// Told every outcome while someone reads the live tail.
    tail: Arc<Tail>,
    /// `[delivery]` and the grace period (restart-only keys): the same for every worker.
    settings: Settings,
    stop: CancellationToken,
}

type Handles = Arc<std::sync::RwLock<BTreeMap<String, Arc<RouteHandle>>>>;

/// The settings every worker shares.
#[derive(Clone, Copy)]
struct Settings {
    concurrency: usize,
    grace: Duration,
    lease_margin: Duration,
}

#[derive(Default)]
struct Workers {
    /// Every worker task (running or draining after its route was removed) and the relay.
    tasks: JoinSet<()>,
    /// The worker of each enabled route.
    running: BTreeMap<String, Running>,
}

/// A running worker, as a reload reaches it.
struct Running {
    /// Its route's settings: swapped by a reload, read at each claim.
    route: Arc<ArcSwap<RouteRuntime>>,
    /// Cancelled when the route is removed or disabled: the worker claims nothing more and
    /// ends once its attempts in flight have recorded their outcomes.
    retire: CancellationToken,
}

/// What a reload changed on the delivery side, by route name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    pub started: Vec<String>,
    pub retired: Vec<String>,
    pub updated: Vec<String>,
}

/// Passes the store's notices on to the route workers until `stop`.
async fn relay(
    mut notices: broadcast::Receiver<Notice>,
    routes: Handles,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) {
    let handle = |route: &str| routes.read().ok().and_then(|r| r.get(route).cloned());
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => notice,
            () = stop.cancelled() => return,
        };
        match notice {
            Ok(Notice::Due(route)) => {
                if let Some(handle) = handle(&route) {
                    handle.notify.notify_one();
                }
            }
            Ok(Notice::Paused { route, paused }) => {
                telemetry::route_paused(&route, paused);
                if let Some(handle) = handle(&route) {
                    if !paused {
                        handle.failing.store(0, Ordering::Relaxed);
                    }
                    handle.notify.notify_one();
                }
            }
            // Something may have been missed: every worker looks again, and the pause gauges
            // are read again from the store (a pause or resume may have been among it).
            Ok(Notice::Lost) | Err(broadcast::error::RecvError::Lagged(_)) => {
                let names: Vec<String> = match routes.read() {
                    Ok(routes) => {
                        routes.values().for_each(|handle| handle.notify.notify_one());
                        routes.keys().cloned().collect()
                    }
                    Err(_) => Vec::new(),
                };
                if let Ok(paused) = store.paused().await {
                    for route in &names {
                        telemetry::route_paused(route, paused.iter().any(|p| &p.route == route));
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// What the store's notices tell a route's worker.
struct RouteHandle {
    /// Signalled when deliveries may have become claimable, or the route was resumed.
    notify: Notify,
    /// Consecutive failed attempts; from [`PROBE_AFTER`] on, the route is probed with one
    /// request at a time instead of its full concurrency.
    failing: AtomicU32,
}

/// Failures in a row after which a route is treated as down and only probed.
const PROBE_AFTER: u32 = 3;

impl Dispatcher {
    /// Starts a worker for every enabled route; each tells `tail` its outcomes.
    pub async fn start(config: &Config, store: Arc<dyn Store>, tail: Arc<Tail>) -> anyhow::Result<Dispatcher> {
        let client = client(config.delivery.connect_timeout)?;
        // Subscribed before anything is read, so no notice falls between the two.
        let notices = store.notices();
        let paused: Vec<String> = store.paused().await?.into_iter().map(|p| p.route).collect();
        let dispatcher = Dispatcher {
            workers: std::sync::Mutex::new(Workers::default()),
            handles: Handles::default(),
            client,
            store: store.clone(),
            tail,
            settings: Settings {
                concurrency: config.delivery.concurrency,
                grace: config.server.shutdown_grace,
                lease_margin: config.delivery.lease_margin,
            },
            stop: CancellationToken::new(),
        };
        {
            let mut workers = dispatcher.workers.lock().map_err(|_| anyhow::anyhow!("dispatcher lock poisoned"))?;
            for (name, route) in config.routes.iter().filter(|(_, r)| r.enabled) {
                dispatcher.spawn_worker(&mut workers, name, route, paused.contains(name));
            }
            workers.tasks.spawn(relay(notices, dispatcher.handles.clone(), store, dispatcher.stop.clone()));
        }
        Ok(dispatcher)
    }

    fn spawn_worker(&self, workers: &mut Workers, name: &str, route: &RouteConfig, paused: bool) {
        let handle = Arc::new(RouteHandle { notify: Notify::new(), failing: AtomicU32::new(0) });
        if paused {
            tracing::warn!(route = %name, "Route is paused; resume it with `callgate routes resume {name}`.");
        }
        telemetry::route_paused(name, paused);
        if let Ok(mut handles) = self.handles.write() {
            handles.insert(name.to_owned(), handle.clone());
        }
        let runtime = Arc::new(ArcSwap::from_pointee(RouteRuntime::new(name, route, self.tail.clone())));
        let retire = self.stop.child_token();
        let worker = Worker {
            name: name.to_owned(),
            route: runtime.clone(),
            handle,
            store: self.store.clone(),
            client: self.client.clone(),
            concurrency: self.settings.concurrency,
            grace: self.settings.grace,
            lease_margin: self.settings.lease_margin,
            stop: self.stop.clone(),
            retire: retire.clone(),
        };
        workers.tasks.spawn(worker.run());
        workers.running.insert(name.to_owned(), Running { route: runtime, retire });
    }

    /// Brings the workers in line with `config`'s enabled routes: a new route gets a worker; a
    /// removed (or disabled) route's worker claims nothing more and ends once its attempts in
    /// flight have recorded their outcomes under the settings they were sent with (its
    /// deliveries stay in the store); a changed route's worker uses the new settings from its
    /// next claim on. No delivery is lost or sent twice: every one is leased in the store.
    pub async fn reconfigure(&self, config: &Config) -> Reconfigured {
        let wanted: BTreeMap<&String, &RouteConfig> = config.routes.iter().filter(|(_, r)| r.enabled).collect();
        // Read before the lock (a new route's pause gauge); a failure only costs the warning.
        let paused: Vec<String> =
            self.store.paused().await.map(|p| p.into_iter().map(|p| p.route).collect()).unwrap_or_default();
        let mut done = Reconfigured::default();
        let Ok(mut workers) = self.workers.lock() else { return done };
        let gone: Vec<String> = workers.running.keys().filter(|n| !wanted.contains_key(n)).cloned().collect();
        for name in gone {
            if let Some(running) = workers.running.remove(&name) {
                running.retire.cancel();
            }
            if let Ok(mut handles) = self.handles.write() {
                handles.remove(&name);
            }
            done.retired.push(name);
        }
        for (name, route) in wanted {
            match workers.running.get(name) {
                Some(running) if running.route.load().config == *route => {}
                Some(running) => {
                    running.route.store(Arc::new(RouteRuntime::new(name, route, self.tail.clone())));
                    done.updated.push(name.clone());
                }
                None => {
                    self.spawn_worker(&mut workers, name, route, paused.contains(name));
                    done.started.push(name.clone());
                }
            }
        }
        // Workers of removed routes that have finished.
        while workers.tasks.try_join_next().is_some() {}
        done
    }

    /// Whether a worker delivers `route` in this process now.
    pub fn delivers(&self, route: &str) -> bool {
        self.workers.lock().is_ok_and(|w| w.running.contains_key(route))
    }

    /// Sends the CloudEvent `json` (id `event_id`) to the route `name` configured as `route`
    /// once, now, exactly as a delivery of it would go (trimmed by its `omit`/`mask_numbers`,
    /// its headers and signature), outside the store: whether the route is enabled or paused,
    /// and never retried.
    pub async fn test_send(
        &self,
        name: &str,
        route: &RouteConfig,
        event_id: &str,
        subject: &str,
        json: String,
    ) -> Tested {
        let runtime = RouteRuntime::new(name, route, self.tail.clone());
        let mut delivery = Delivery {
            id: 0,
            route: name.to_owned(),
            event_id: event_id.to_owned(),
            subject: subject.to_owned(),
            attempts: 0,
            json,
            lease: Lease(0),
        };
        let attempt = match runtime.request(&mut delivery) {
            Ok((headers, body)) => post(&self.client, &runtime, headers, body).await.0,
            Err(error) => Attempt { at: now_ms(), status: None, error: Some(error), response: None, duration_ms: 0 },
        };
        let success = attempt.status.is_some_and(|s| (200..300).contains(&s));
        Tested { attempt, success }
    }

    /// Stops taking new deliveries and waits up to the grace period for in-flight attempts;
    /// each worker then gives the leases of what is not finished back to the store, so it is
    /// claimed again at once (here after a restart, or by another replica).
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        let mut tasks = match self.workers.lock() {
            Ok(mut workers) => std::mem::take(&mut workers.tasks),
            Err(_) => return,
        };
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace + RELEASE_WAIT, all).await.is_err() {
            tracing::warn!(grace = ?grace, "Deliveries still in flight at the end of the grace period; they will be retried after restart.");
            tasks.abort_all();
        }
    }
}

/// Renders a route's headers into `headers`, in their configured order, and returns the names
/// of the templated ones that were cut to [`HEADER_VALUE_MAX`] or left out because all
/// templated values together would pass [`TEMPLATED_HEADERS_MAX`].
fn render_headers(
    templates: &[(HeaderName, HeaderTemplate)],
    event: &serde_json::Value,
    headers: &mut HeaderMap,
) -> Vec<HeaderName> {
    let mut cut = Vec::new();
    let mut templated = 0;
    for (name, template) in templates {
        let (value, was_cut) = template.render_capped(event);
        if template.has_fields() {
            if templated + value.len() > TEMPLATED_HEADERS_MAX {
                cut.push(name.clone());
                continue;
            }
            templated += value.len();
        }
        if was_cut {
            cut.push(name.clone());
        }
        headers.insert(name.clone(), value);
    }
    cut
}

/// The HTTP client of every egress (routes, inbound lookups): no redirects followed (a
/// redirect could carry a signed body elsewhere), no proxies, callgate's user agent.
pub fn client(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}

/// How an egress (a route, an inbound lookup) dresses each request: its configured headers,
/// rendered against the CloudEvent being sent, and the Standard Webhooks signature.
pub struct Egress {
    headers: Vec<(HeaderName, HeaderTemplate)>,
    signing_keys: Vec<Vec<u8>>,
    /// Whether any header needs the event parsed to render.
    templated: bool,
}

impl Egress {
    pub fn new(headers: &[(HeaderName, HeaderTemplate)], secrets: &[Secret]) -> Egress {
        let signing_keys = secrets.iter().filter_map(|s| signing::decode_secret(s.expose())).collect();
        let templated = headers.iter().any(|(_, t)| t.has_fields());
        Egress { headers: headers.to_vec(), signing_keys, templated }
    }

    /// The headers of a request whose body is the CloudEvent `json` with id `event_id`, and
    /// the names of the templated headers that were cut or left out (see [`render_headers`]).
    pub fn headers(&self, event_id: &str, json: &str) -> (HeaderMap, Vec<HeaderName>) {
        self.dress(event_id, json, None)
    }

    /// [`Egress::headers`] for a body already parsed as `event` (a trimmed one): templates
    /// render from it, so they see exactly what the body holds.
    pub fn headers_for(&self, event_id: &str, json: &str, event: &serde_json::Value) -> (HeaderMap, Vec<HeaderName>) {
        self.dress(event_id, json, Some(event))
    }

    fn dress(&self, event_id: &str, json: &str, event: Option<&serde_json::Value>) -> (HeaderMap, Vec<HeaderName>) {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
        let mut cut = Vec::new();
        if !self.headers.is_empty() {
            let parsed;
            let event = match event {
                Some(event) => event,
                None if self.templated => {
                    parsed = serde_json::from_str(json).unwrap_or_default();
                    &parsed
                }
                None => &serde_json::Value::Null,
            };
            cut = render_headers(&self.headers, event, &mut headers);
        }
        if !self.signing_keys.is_empty() {
            let timestamp = chrono::Utc::now().timestamp();
            let signature = signing::signature_header(&self.signing_keys, event_id, timestamp, json.as_bytes());
            let mut set = |name: &'static str, value: String| {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            };
            set("webhook-id", event_id.to_owned());
            set("webhook-timestamp", timestamp.to_string());
            set("webhook-signature", signature);
        }
        (headers, cut)
    }
}

/// What a test send found.
pub struct Tested {
    pub attempt: Attempt,
    /// The route answered 2xx.
    pub success: bool,
}

/// A route prepared for sending: parsed headers and signing keys.
struct RouteRuntime {
    name: String,
    config: RouteConfig,
    /// Whether a cut header value was logged already (once per route, not per attempt).
    header_cut_logged: AtomicBool,
    egress: Egress,
    /// Where outcomes are told while someone reads the live tail.
    tail: Arc<Tail>,
}

impl RouteRuntime {
    fn new(name: &str, config: &RouteConfig, tail: Arc<Tail>) -> Self {
        RouteRuntime {
            name: name.to_owned(),
            config: config.clone(),
            header_cut_logged: AtomicBool::new(false),
            egress: Egress::new(&config.headers, &config.signing_secrets),
            tail,
        }
    }

    /// The headers and body of an attempt. A route without `omit` or `mask_numbers` sends
    /// the stored JSON as is (no parse unless a header template needs one); otherwise the
    /// event is trimmed first, and its headers and signature are made from the trimmed
    /// body. A stored event that does not parse is never sent untrimmed: the attempt fails.
    fn request(&self, delivery: &mut Delivery) -> Result<(HeaderMap, String), String> {
        let (headers, cut, body) = if self.config.minimise.is_empty() {
            let (headers, cut) = self.egress.headers(&delivery.event_id, &delivery.json);
            // The body is sent once; only its id and subject are needed afterwards.
            (headers, cut, std::mem::take(&mut delivery.json))
        } else {
            let mut event: serde_json::Value = serde_json::from_str(&delivery.json)
                .map_err(|e| format!("the stored event is not JSON ({e}); not sent"))?;
            delivery.json = String::new();
            self.config.minimise.apply(&mut event);
            let body = serde_json::to_string(&event).map_err(|e| format!("re-serialising the event: {e}"))?;
            let (headers, cut) = self.egress.headers_for(&delivery.event_id, &body, &event);
            (headers, cut, body)
        };
        if !cut.is_empty() {
            // Counted per delivery (its first attempt), logged once per route: a retry
            // renders the same values again. The value itself is never logged.
            if delivery.attempts == 0 {
                telemetry::header_values_truncated(&self.name, cut.len() as u64);
            }
            if !self.header_cut_logged.swap(true, Ordering::Relaxed) {
                let names: Vec<&str> = cut.iter().map(|n| n.as_str()).collect();
                tracing::warn!(route = %self.name, headers = ?names, max_value = HEADER_VALUE_MAX, max_total = TEMPLATED_HEADERS_MAX,
                    "Templated header values were cut or left out to keep the request head small (logged once per route; counted in {}).",
                    telemetry::HEADER_VALUES_TRUNCATED);
            }
        }
        Ok((headers, body))
    }
}

struct Worker {
    name: String,
    /// The route's current settings; each attempt keeps the ones it was claimed with.
    route: Arc<ArcSwap<RouteRuntime>>,
    handle: Arc<RouteHandle>,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    /// Attempts in flight at once on this route while it is healthy.
    concurrency: usize,
    /// After `stop`, how long attempts in flight may take to finish.
    grace: Duration,
    /// What a lease lasts beyond the route's timeout (`delivery.lease_margin`).
    lease_margin: Duration,
    /// The gateway shuts down: in-flight attempts get the grace period, then are cut off.
    stop: CancellationToken,
    /// The route left the configuration (or the gateway shuts down: a child of `stop`): claim
    /// nothing more, and end once every attempt in flight has recorded its outcome.
    retire: CancellationToken,
}

impl Worker {
    async fn run(self) {
        // Requests in flight; each becomes an outcome to record once it is answered, and frees
        // its slot then: the delivery stays leased (so its call's next event waits) until the
        // store holds the outcome, but the next request need not wait for that commit.
        let mut attempts: JoinSet<Sent> = JoinSet::new();
        // Outcomes are recorded in batches, at most `RECORDING` store calls at a time: the
        // answered outcomes wait in `answered` meanwhile, then all go in the next one.
        let mut answered: Vec<(Sent, Option<(i64, Lease)>)> = Vec::new();
        let mut recording: JoinSet<()> = JoinSet::new();
        // The lease of each attempt in flight, and those of each batch being recorded, to give
        // back if they are cut off at shutdown.
        let mut leases: HashMap<tokio::task::Id, (i64, Lease)> = HashMap::new();
        let mut batches: HashMap<tokio::task::Id, Vec<(i64, Lease)>> = HashMap::new();
        let mut backoff = Duration::from_millis(100);
        let mut cut_off_at: Option<tokio::time::Instant> = None;
        loop {
            if recording.len() < RECORDING && !answered.is_empty() {
                let (batch, held): (Vec<Sent>, Vec<Option<(i64, Lease)>>) = answered.drain(..).unzip();
                let handle = recording.spawn(record(
                    self.name.clone(),
                    self.store.clone(),
                    self.route.load().tail.clone(),
                    batch,
                ));
                batches.insert(handle.id(), held.into_iter().flatten().collect());
            }
            let unrecorded = answered.len() + batches.values().map(Vec::len).sum::<usize>();
            let limit = if self.handle.failing.load(Ordering::Relaxed) >= PROBE_AFTER { 1 } else { self.concurrency };
            // At most `limit` requests, and at most `limit` more answered but not yet recorded:
            // a slow store slows claims down instead of piling up outcomes.
            let free =
                limit.saturating_sub(attempts.len()).min((2 * limit).saturating_sub(attempts.len() + unrecorded));
            let mut idle_for = MAX_IDLE;
            // Refill in batches: asking the store for one delivery per completion would cost a
            // query per delivery under load.
            let worth_asking = free > 0 && (attempts.is_empty() || free >= limit.div_ceil(4));
            if worth_asking && !self.retire.is_cancelled() {
                let now = now_ms();
                // The settings of this claim's attempts, whatever a reload does meanwhile.
                let route = self.route.load_full();
                // The attempt always ends (reqwest's total timeout) before the lease does, so no
                // other replica takes a delivery over while it is still being sent.
                let lease_until = now + (route.config.timeout + self.lease_margin).as_millis() as Millis;
                match self.store.claim(&self.name, now, free, lease_until).await {
                    // Paused (on any replica): the resume notice wakes us; MAX_IDLE otherwise.
                    Ok(Claimed { paused: true, .. }) => backoff = Duration::from_millis(100),
                    Ok(Claimed { deliveries, .. }) => {
                        backoff = Duration::from_millis(100);
                        let exhausted = deliveries.len() < free;
                        for delivery in deliveries {
                            let lease = (delivery.id, delivery.lease);
                            let handle =
                                attempts.spawn(send(self.client.clone(), route.clone(), self.handle.clone(), delivery));
                            leases.insert(handle.id(), lease);
                        }
                        idle_for = if exhausted { self.idle_time(now).await } else { Duration::ZERO };
                    }
                    Err(e) => {
                        tracing::error!(route = %self.name, error = %e, "Could not claim due deliveries.");
                        idle_for = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            if self.retire.is_cancelled() && attempts.is_empty() && recording.is_empty() && answered.is_empty() {
                if !self.stop.is_cancelled() {
                    tracing::info!(route = %self.name, "The route was removed or disabled by a reload: its worker stopped after its attempts in flight; its backlog stays in the store.");
                }
                return;
            }
            if self.stop.is_cancelled() {
                let cut_off_at = *cut_off_at.get_or_insert_with(|| tokio::time::Instant::now() + self.grace);
                if tokio::time::Instant::now() >= cut_off_at {
                    attempts.abort_all();
                    recording.abort_all();
                    while attempts.join_next().await.is_some() {}
                    while recording.join_next().await.is_some() {}
                    let unfinished: Vec<(i64, Lease)> = leases
                        .into_values()
                        .chain(batches.into_values().flatten())
                        .chain(answered.into_iter().filter_map(|(_, lease)| lease))
                        .collect();
                    let count = unfinished.len();
                    match tokio::time::timeout(RELEASE_WAIT, self.store.release(unfinished)).await {
                        Ok(Ok(())) => {
                            tracing::info!(route = %self.name, count, "Attempts cut off by the shutdown; their deliveries are handed back for another try.")
                        }
                        _ => {
                            tracing::warn!(route = %self.name, count, "Attempts cut off by the shutdown; their leases will expire by themselves.")
                        }
                    }
                    return;
                }
            }
            if idle_for.is_zero() && worth_asking && attempts.len() < limit {
                continue;
            }
            let cut_off = async {
                match cut_off_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = attempts.join_next_with_id(), if !attempts.is_empty() => {
                    for done in std::iter::once(done).chain(std::iter::from_fn(|| attempts.try_join_next_with_id())) {
                        match done {
                            Ok((id, sent)) => {
                                let lease = leases.remove(&id);
                                if sent.gone {
                                    tracing::warn!(route = %self.name, "Route answered 410 Gone: paused. Resume it with `callgate routes resume {}`.", self.name);
                                }
                                answered.push((sent, lease));
                            }
                            // Its lease expires and the delivery is claimed again: nothing is lost.
                            Err(e) => {
                                leases.remove(&e.id());
                                tracing::error!(route = %self.name, error = %e, "A delivery attempt failed inside the gateway.");
                            }
                        }
                    }
                }
                Some(done) = recording.join_next_with_id(), if !recording.is_empty() => {
                    for done in std::iter::once(done).chain(std::iter::from_fn(|| recording.try_join_next_with_id())) {
                        match done {
                            Ok((id, ())) => {
                                batches.remove(&id);
                            }
                            Err(e) => {
                                batches.remove(&e.id());
                                tracing::error!(route = %self.name, error = %e, "Recording a delivery outcome failed inside the gateway.");
                            }
                        }
                    }
                }
                () = cut_off => {}
                _ = self.handle.notify.notified(), if !self.retire.is_cancelled() => {}
                _ = tokio::time::sleep(idle_for), if !self.retire.is_cancelled() => {}
                _ = self.retire.cancelled(), if !self.retire.is_cancelled() => {}
                _ = self.stop.cancelled(), if !self.stop.is_cancelled() => {}
            }
        }
    }

    /// How long to sleep when nothing more is claimable: until the next delivery falls due or
    /// a lease expires. Heads blocked behind an attempt in flight are released by a notice.
    async fn idle_time(&self, claimed_at: Millis) -> Duration {
        match self.store.next_due(&self.name, claimed_at).await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(0) as u64).min(MAX_IDLE),
            Ok(None) => MAX_IDLE,
            Err(_) => Duration::from_secs(1),
        }
    }
}

/// An answered attempt, classified, whose outcome is still to be recorded.
struct Sent {
    outcome: Outcome,
    counted: DeliveryOutcome,
    seconds: f64,
    /// The route answered 410 Gone (it is paused when the outcome is recorded).
    gone: bool,
    /// The live tail's `outcome` message, told once the store has the outcome (only while
    /// someone reads the tail).
    tailed: Option<Attempted>,
}

/// One attempt: send and classify. The outcome is recorded by [`record`]; until then the
/// delivery stays leased, so neither it nor a later event of its call is claimed again.
async fn send(client: reqwest::Client, route: Arc<RouteRuntime>, handle: Arc<RouteHandle>, mut d: Delivery) -> Sent {
    let name = &route.name;
    let started = Instant::now();
    let sending = route.tail.active().then(|| Sending::of(&d, now_ms()));
    let (record, retry_after) = match route.request(&mut d) {
        Ok((headers, body)) => post(&client, &route, headers, body).await,
        Err(error) => {
            (Attempt { at: now_ms(), status: None, error: Some(error), response: None, duration_ms: 0 }, None)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let status = record.status.and_then(|s| StatusCode::from_u16(s).ok());
    let done = d.attempts as usize + 1;
    let tailed = sending.map(|s| (s, record.status, record.duration_ms, record.error.clone()));
    let (kind, counted, gone) = if status.is_some_and(|s| s.is_success()) {
        let recovered = handle.failing.swap(0, Ordering::Relaxed) >= PROBE_AFTER;
        if recovered {
            tracing::info!(route = %name, "Route recovered; its waiting retries are due now.");
        }
        (OutcomeKind::Delivered { recovered, attempt: record }, DeliveryOutcome::Success, false)
    } else if status == Some(StatusCode::GONE) {
        handle.failing.fetch_add(1, Ordering::Relaxed);
        (OutcomeKind::Gone { attempt: record }, DeliveryOutcome::Retry, true)
    } else if let Some(delay) = route.config.retry_schedule.get(done - 1) {
        handle.failing.fetch_add(1, Ordering::Relaxed);
        let delay = retry_after.unwrap_or_else(|| jitter(*delay));
        tracing::debug!(route = %name, event_id = %d.event_id, attempt = done, status = ?record.status, error = ?record.error, "Delivery failed; will retry.");
        let next_at = record.at + delay.as_millis() as Millis;
        (OutcomeKind::Retry { next_at, attempt: record }, DeliveryOutcome::Retry, false)
    } else {
        handle.failing.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(route = %name, event_id = %d.event_id, subject = %d.subject, attempts = done, status = ?record.status, error = ?record.error, "Delivery dead-lettered.");
        (OutcomeKind::Dead { attempt: record }, DeliveryOutcome::DeadLetter, false)
    };
    let tailed = tailed.map(|(sending, status, duration_ms, error)| {
        let outcome = match kind {
            OutcomeKind::Delivered { .. } => "success",
            OutcomeKind::Retry { .. } => "failed",
            OutcomeKind::Dead { .. } => "dead",
            OutcomeKind::Gone { .. } => "gone",
        };
        sending.attempted(name, outcome, status, duration_ms, error.as_deref())
    });
    Sent { outcome: Outcome { id: d.id, lease: d.lease, kind }, counted, seconds, gone, tailed }
}

/// One request of `body` to a route with `headers`: what the delivery log keeps of it (status,
/// the first bytes of the answer, or the transport error; its time and duration), and the
/// `Retry-After` a 429 or 503 asked for.
async fn post(
    client: &reqwest::Client,
    route: &RouteRuntime,
    headers: HeaderMap,
    body: String,
) -> (Attempt, Option<Duration>) {
    let started = Instant::now();
    let at = now_ms();
    let result =
        client.post(route.config.url.clone()).timeout(route.config.timeout).headers(headers).body(body).send().await;
    let (status, error, response, retry_after) = match result {
        Ok(resp) => {
            let status = resp.status();
            let retry_after = matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
                .then(|| retry_after(resp.headers()))
                .flatten();
            (Some(status.as_u16()), None, snippet(resp).await, retry_after)
        }
        Err(e) => (None, Some(describe(&e, route.config.timeout)), None, None),
    };
    let attempt = Attempt { at, status, error, response, duration_ms: started.elapsed().as_millis() as i64 };
    (attempt, retry_after)
}

/// Records a batch of answered attempts' outcomes in one store call, retrying until the store
/// takes them. A call's next event is claimable only once its outcome is recorded (the lease
/// holds it back until then).
async fn record(name: String, store: Arc<dyn Store>, tail: Arc<Tail>, batch: Vec<Sent>) {
    let name = &name;
    let outcomes: Vec<Outcome> = batch.iter().map(|sent| sent.outcome.clone()).collect();
    let mut wait = Duration::from_millis(50);
    let completed = loop {
        match store.complete(outcomes.clone(), now_ms()).await {
            Ok(completed) => break completed,
            Err(e) => {
                tracing::error!(route = %name, error = %e, "Could not record a delivery outcome; retrying.");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    if completed.stale > 0 {
        // The lease ran out and another claim took the delivery over: it may go out twice.
        tracing::warn!(route = %name, deliveries = completed.stale, "Deliveries' leases expired before their outcomes were recorded; those outcomes were dropped and the deliveries are retried.");
    }
    for Sent { counted, seconds, tailed, .. } in batch {
        // Counted once the store agrees, so the counters never run ahead of the gauges.
        telemetry::delivery(name, counted, seconds);
        if let Some(attempted) = tailed {
            tail.outcome(attempted);
        }
    }
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
async fn snippet(mut resp: reqwest::Response) -> Option<String> {
    let mut bytes = Vec::new();
    while bytes.len() < SNIPPET_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk[..chunk.len().min(SNIPPET_BYTES - bytes.len())]),
            _ => break,
        }
    }
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// A transport error without the URL (which may carry a secret).
pub fn describe(e: &reqwest::Error, timeout: Duration) -> String {
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
    fn templated_headers_are_capped_each_and_together_and_never_carry_control_bytes() {
        let template = |t: &str| HeaderTemplate::parse(t).unwrap();
        let big = "é".repeat(10_000); // two bytes each: the cut must fall between characters
        let event = serde_json::json!({"data": {"big": big, "nasty": "a\r\nX-Injected: 1\u{0}\u{7f}b\tc", "n": 5}});
        let templates: Vec<(HeaderName, HeaderTemplate)> = vec![
            (HeaderName::from_static("x-big"), template("c={{data.big}}")),
            (HeaderName::from_static("x-nasty"), template("{{data.nasty}}")),
            (HeaderName::from_static("x-static"), template("fixed")),
            (HeaderName::from_static("x-b2"), template("{{data.big}}")),
            (HeaderName::from_static("x-b3"), template("{{data.big}}")),
            (HeaderName::from_static("x-b4"), template("{{data.big}}")),
            (HeaderName::from_static("x-n"), template("{{data.n}}")),
        ];
        let mut headers = HeaderMap::new();
        let cut = render_headers(&templates, &event, &mut headers);
        let big = headers["x-big"].len();
        assert!(big <= HEADER_VALUE_MAX && big > HEADER_VALUE_MAX - 2, "{big}");
        assert!(std::str::from_utf8(headers["x-big"].as_bytes()).is_ok(), "cut at a character boundary");
        assert!(headers["x-big"].as_bytes().starts_with(b"c="));
        assert_eq!(headers["x-nasty"].as_bytes(), b"aX-Injected: 1b\tc", "no CR, LF, NUL or DEL reaches the wire");
        assert_eq!(headers["x-static"], "fixed");
        // x-big (1 KiB), x-nasty, x-b2 and x-b3 fit in 4 KiB; x-b4 would not and is left out,
        // the small x-n after it still fits.
        assert!(headers.contains_key("x-b3") && !headers.contains_key("x-b4"));
        assert_eq!(headers["x-n"], "5");
        let templated: usize = headers.iter().filter(|(n, _)| *n != "x-static").map(|(_, v)| v.len()).sum();
        assert!(templated <= TEMPLATED_HEADERS_MAX, "{templated}");
        let cut: Vec<&str> = cut.iter().map(HeaderName::as_str).collect();
        assert_eq!(cut, ["x-big", "x-b2", "x-b3", "x-b4"]);
        // Literal headers are the operator's and are never cut.
        let long_literal = "k".repeat(2 * HEADER_VALUE_MAX);
        assert_eq!(
            template(&long_literal).render_capped(&event),
            (HeaderValue::from_str(&long_literal).unwrap(), false)
        );
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
