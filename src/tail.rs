//! The live tail: `GET /v1/admin/stream` streams, as server-sent events, every event as it is
//! accepted and every delivery outcome as it is recorded, filtered by route, source and type;
//! `callgate tail` prints them.
//!
//! Ingress publishes `accepted` after the store committed the payload, the delivery worker
//! publishes `outcome` after the store took the attempt's outcome. Nothing is built or sent
//! while no reader is open anywhere: publishing starts with a check of two atomics (and of the
//! clock, once another replica has had readers). Each reader has a forwarding task that takes
//! what its filter matches off this replica's bus into the reader's own queue of
//! `admin.stream_buffer` messages; a reader whose queue is full (it stopped reading, or reads
//! slower than events come) is sent `event: dropped` and its stream ends, and if it does not
//! take that notice within [`END_FLUSH`] its connection is closed. Memory is bounded per
//! reader, and ingest never waits for a reader.
//!
//! On a store that several replicas share (PostgreSQL), a replica with readers says so every
//! [`HEARTBEAT`] through [`Store::send_tail`]; a replica that heard it within [`REMOTE_TTL`]
//! relays its own messages the same way, batched into payloads of at most
//! [`TAIL_PAYLOAD_MAX`] bytes, so a tail on one replica sees what every replica accepts and
//! delivers. A relay that could not keep up, or a lost listening connection, ends the readers
//! with `event: dropped` too: a tail never misses messages silently.
//!
//! Browsers: `EventSource` cannot send an `Authorization` header, so `POST
//! /v1/admin/stream/tickets` (with the bearer token) hands out a ticket, good for one stream
//! within [`TICKET_TTL`] on any replica with the same token (an HMAC keyed by the token; this
//! replica remembers the tickets it admitted until they expire).
//!
//! **Invariant:** the tail carries summaries only, never an event's `data` (personal data:
//! numbers, transcripts) or a response body.
//! **Invariant:** no reader holds more than `admin.stream_buffer` messages, and no publisher
//! ever waits for a reader.

use std::{
    borrow::Cow,
    collections::HashMap,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Extension,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use wildmatch::WildMatch;

use crate::{
    auth,
    config::{Config, Secret},
    http::{ConnectionClose, cut, error_response},
    server::App,
    store::{Delivery, Millis, NewEvent, Store, TAIL_PAYLOAD_MAX, TailFeed, now_ms, rfc3339},
};

/// Messages this replica's bus holds for the forwarding tasks (which take them at once).
const BUS: usize = 4096;
/// Messages waiting to be relayed to the other replicas; more are counted as lost.
const RELAY_QUEUE: usize = 8192;
/// How often a replica with readers says so to the other replicas.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a replica relays after it last heard that another one has readers.
pub const REMOTE_TTL: Duration = Duration::from_secs(15);
/// How long a ticket admits a stream.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// A comment line this often keeps proxies from cutting an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a dropped reader has to take its notice before its connection is closed (its
/// answer cannot finish while it does not read, and would hold the connection for good).
pub const END_FLUSH: Duration = Duration::from_secs(30);
/// The same at shutdown, so a stuck reader never holds the drain for the grace period.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// Longest error text carried in an `outcome` (the whole one is in the store's attempts).
const ERROR_MAX: usize = 300;

/// An event accepted and committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    /// The source it came in on (the `/v1/ingest/{source}` name).
    pub source: String,
    /// The CloudEvent's `time`.
    pub time: String,
    /// The routes it will be delivered to.
    pub routes: Vec<String>,
}

/// One delivery attempt and its recorded outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempted {
    pub route: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub source: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `success`, `failed` (a retry follows), `dead` (dead-lettered) or `gone` (410: the route
    /// is paused).
    pub outcome: String,
    pub status: Option<u16>,
    pub duration_ms: i64,
    /// The transport error (timeout, connection), without the URL.
    pub error: Option<String>,
    /// When the attempt started.
    pub at: String,
}

/// What the tail streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub enum Message {
    Accepted(Accepted),
    Outcome(Attempted),
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::Accepted(_) => "accepted",
            Message::Outcome(_) => "outcome",
        }
    }
}

/// What travels on this replica's bus (in an `Arc`, so its size does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Feed {
    Message(Message),
    /// Messages of other replicas may have been lost: every reader is ended.
    Gap,
}

/// Why a stream ended (its last SSE message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reader fell `admin.stream_buffer` messages behind.
    Slow,
    /// Messages of other replicas may have been missed.
    Missed,
    /// The gateway is shutting down.
    Shutdown,
}

impl End {
    fn event(self, buffer: usize) -> Event {
        let (name, reason, message) = match self {
            End::Slow => (
                "dropped",
                "slow",
                format!("this reader fell {buffer} messages behind and was dropped; connect again to go on"),
            ),
            End::Missed => (
                "dropped",
                "missed",
                "messages from other replicas may have been missed (the database connection or relay fell behind); connect again to go on".to_owned(),
            ),
            End::Shutdown => ("closed", "shutdown", "the gateway is shutting down".to_owned()),
        };
        Event::default().event(name).data(json!({ "reason": reason, "message": message }).to_string())
    }
}

/// What a reader's queue holds: messages, then perhaps the reason its stream ends.
enum Item {
    Message(Arc<Feed>),
    End(End),
}

/// The tail of one gateway process: its readers, its bus, and the relay to other replicas.
pub struct Tail {
    bus: broadcast::Sender<Arc<Feed>>,
    /// Streams open here.
    readers: AtomicUsize,
    /// Until when (ms since `epoch`) another replica is known to have readers.
    remote_until: AtomicU64,
    epoch: Instant,
    /// To the relay task (stores that several processes share).
    relay: Option<mpsc::Sender<Message>>,
    /// Messages that did not fit in the relay's queue since the last batch.
    relay_lost: AtomicU64,
    /// This process's mark on what it relays.
    replica: String,
    /// `admin.stream_buffer`.
    buffer: usize,
    /// Wakes the heartbeat when a reader opens.
    announce: Notify,
    /// Cancelled at shutdown: every stream ends.
    closing: CancellationToken,
    tickets: Tickets,
}

impl Tail {
    /// The tail of a gateway on `store`; on a store that other processes share, also its
    /// relay, heartbeat and listener tasks (they end with [`Tail::close`]).
    pub fn start(config: &Config, store: Arc<dyn Store>) -> Arc<Tail> {
        let Some(feed) = store.tail_feed() else { return Tail::new(config.admin.stream_buffer, None) };
        let (relay, relay_rx) = mpsc::channel(RELAY_QUEUE);
        let tail = Tail::new(config.admin.stream_buffer, Some(relay));
        tokio::spawn(relay_out(tail.clone(), store.clone(), relay_rx));
        tokio::spawn(heartbeat(tail.clone(), store));
        tokio::spawn(relay_in(tail.clone(), feed));
        tail
    }

    fn new(buffer: usize, relay: Option<mpsc::Sender<Message>>) -> Arc<Tail> {
        crate::telemetry::tail_readers(0);
        Arc::new(Tail {
            bus: broadcast::channel(BUS).0,
            readers: AtomicUsize::new(0),
            remote_until: AtomicU64::new(0),
            epoch: Instant::now(),
            relay,
            relay_lost: AtomicU64::new(0),
            replica: format!("{:016x}", fastrand::u64(..)),
            buffer,
            announce: Notify::new(),
            closing: CancellationToken::new(),
            tickets: Tickets::default(),
        })
    }

    /// Ends every stream (with `event: closed`) and the relay tasks: at shutdown, so open
    /// streams never hold the server's drain.
    pub fn close(&self) {
        self.closing.cancel();
    }

    fn since_epoch(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn remote_readers(&self) -> bool {
        // Zero until another replica first had readers: the clock is not read before.
        let until = self.remote_until.load(Ordering::Relaxed);
        until != 0 && until > self.since_epoch()
    }

    /// Whether anyone (here or on another replica) reads the tail: publishers build nothing
    /// otherwise.
    pub fn active(&self) -> bool {
        self.readers.load(Ordering::Relaxed) > 0 || self.remote_readers()
    }

    /// Publishes a message this process made: to its readers, and to the other replicas'
    /// while they have readers.
    fn publish(&self, message: Message) {
        if let Some(relay) = &self.relay
            && self.remote_readers()
            && relay.try_send(message.clone()).is_err()
        {
            self.relay_lost.fetch_add(1, Ordering::Relaxed);
        }
        self.local(message);
    }

    /// To this process's readers only.
    fn local(&self, message: Message) {
        if self.readers.load(Ordering::Relaxed) > 0 {
            let _ = self.bus.send(Arc::new(Feed::Message(message)));
        }
    }

    /// Events of a payload, once committed (see [`summaries`]).
    pub fn accepted(&self, accepted: Vec<Accepted>) {
        for accepted in accepted {
            self.publish(Message::Accepted(accepted));
        }
    }

    /// An attempt's outcome, recorded in the store.
    pub fn outcome(&self, attempted: Attempted) {
        self.publish(Message::Outcome(attempted));
    }

    /// Opens a reader: its queue, fed by its own forwarding task until the stream ends, which
    /// closes `connection` if the reader does not take its last message.
    fn subscribe(self: &Arc<Self>, filter: Filter, connection: Option<ConnectionClose>) -> mpsc::Receiver<Item> {
        // On the bus before counted as a reader: nothing published after that is missed.
        let bus = self.bus.subscribe();
        let (queue, items) = mpsc::channel(self.buffer);
        let open = self.readers.fetch_add(1, Ordering::Relaxed) + 1;
        crate::telemetry::tail_readers(open);
        self.announce.notify_one();
        tokio::spawn(forward(self.clone(), bus, queue, filter, connection));
        items
    }
}

/// Stream tickets: signed by a key derived from the admin token, so any replica with the same
/// token admits them; each admits one stream on a replica.
#[derive(Default)]
struct Tickets {
    /// Tickets admitted here and not yet expired (by signature).
    used: Mutex<HashMap<[u8; 32], Millis>>,
}

impl Tickets {
    /// A ticket for one stream within [`TICKET_TTL`], and when it expires.
    fn issue(token: &Secret, now: Millis) -> (String, Millis) {
        let expires = now + TICKET_TTL.as_millis() as Millis;
        let nonce = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let signed = format!("{expires}.{nonce}");
        let mac = hex::encode(ticket_mac(token, &signed));
        (format!("{signed}.{mac}"), expires)
    }

    /// Whether `ticket` is one this token signed, not expired, and not used here before.
    fn admit(&self, token: &Secret, ticket: &str, now: Millis) -> bool {
        let Some((signed, mac)) = ticket.rsplit_once('.') else { return false };
        let Some(expires) = signed.split_once('.').and_then(|(e, _)| e.parse::<Millis>().ok()) else { return false };
        let Ok(mac) = hex::decode(mac) else { return false };
        let mut check = <Hmac<Sha256>>::new_from_slice(&ticket_key(token)).expect("HMAC takes any key");
        check.update(signed.as_bytes());
        if check.verify_slice(&mac).is_err() || expires < now || expires > now + TICKET_TTL.as_millis() as Millis {
            return false;
        }
        let Ok(key) = <[u8; 32]>::try_from(mac.as_slice()) else { return false };
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, until| *until >= now);
        used.insert(key, expires).is_none()
    }
}

fn ticket_key(token: &Secret) -> [u8; 32] {
    let mut key = Sha256::new();
    key.update(b"callgate stream ticket v1\0");
    key.update(token.expose().as_bytes());
    key.finalize().into()
}

fn ticket_mac(token: &Secret, signed: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256>>::new_from_slice(&ticket_key(token)).expect("HMAC takes any key");
    mac.update(signed.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The `accepted` messages of a payload's `events` from `source`: made before the store takes
/// them, and only while [`Tail::active`] (each event's JSON is read for its time).
pub fn summaries(source: &str, events: &[NewEvent]) -> Vec<Accepted> {
    events
        .iter()
        .map(|event| Accepted {
            id: event.id.clone(),
            kind: event.kind.clone(),
            subject: event.subject.clone(),
            source: source.to_owned(),
            time: Head::of(&event.json).time.into_owned(),
            routes: event.routes.clone(),
        })
        .collect()
}

/// The CloudEvent attributes the tail needs from a stored event's JSON.
#[derive(Deserialize, Default)]
struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    source: Cow<'a, str>,
    #[serde(borrow, default)]
    time: Cow<'a, str>,
}

impl<'a> Head<'a> {
    fn of(json: &'a str) -> Head<'a> {
        serde_json::from_str(json).unwrap_or_default()
    }
}

/// What the delivery worker keeps of a claimed delivery for its `outcome` message, taken
/// before its body is sent (only while the tail is active).
#[derive(Debug, Clone)]
pub struct Sending {
    event_id: String,
    kind: String,
    subject: String,
    source: String,
    attempt: u32,
    at: Millis,
}

impl Sending {
    pub fn of(delivery: &Delivery, at: Millis) -> Sending {
        let head = Head::of(&delivery.json);
        // The CloudEvent's source is `/callgate/sources/{name}`.
        let source = head.source.rsplit('/').next().unwrap_or_default().to_owned();
        Sending {
            event_id: delivery.event_id.clone(),
            kind: head.kind.into_owned(),
            subject: delivery.subject.clone(),
            source,
            attempt: delivery.attempts + 1,
            at,
        }
    }

    /// The `outcome` message of this attempt.
    pub fn attempted(
        self,
        route: &str,
        outcome: &str,
        status: Option<u16>,
        duration_ms: i64,
        error: Option<&str>,
    ) -> Attempted {
        Attempted {
            route: route.to_owned(),
            event_id: self.event_id,
            kind: self.kind,
            subject: self.subject,
            source: self.source,
            attempt: self.attempt,
            outcome: outcome.to_owned(),
            status,
            duration_ms,
            error: error.map(|e| cut(e, ERROR_MAX)),
            at: rfc3339(self.at),
        }
    }
}

/// A reader's filter: each list given must match (any of its entries).
#[derive(Debug, Default, Clone)]
struct Filter {
    routes: Option<Vec<String>>,
    sources: Option<Vec<String>>,
    types: Option<Vec<WildMatch>>,
}

impl Filter {
    fn matches(&self, message: &Message) -> bool {
        let (routes, source, kind): (&[String], &str, &str) = match message {
            Message::Accepted(a) => (&a.routes, &a.source, &a.kind),
            Message::Outcome(o) => (std::slice::from_ref(&o.route), &o.source, &o.kind),
        };
        self.routes.as_ref().is_none_or(|want| routes.iter().any(|r| want.contains(r)))
            && self.sources.as_ref().is_none_or(|want| want.iter().any(|s| s == source))
            && self.types.as_ref().is_none_or(|want| want.iter().any(|t| t.matches(kind)))
    }
}

/// Takes what `filter` matches off the bus into the reader's queue, until the reader goes
/// away, falls behind (its queue full), a gap, or shutdown; then, unless the reader went away,
/// gives it [`END_FLUSH`] (at shutdown [`SHUTDOWN_FLUSH`]) to take its last message and
/// closes its `connection` (a stream answer has `Connection: close`: it is the last of it).
async fn forward(
    tail: Arc<Tail>,
    mut bus: broadcast::Receiver<Arc<Feed>>,
    queue: mpsc::Sender<Item>,
    filter: Filter,
    connection: Option<ConnectionClose>,
) {
    let end = loop {
        let feed = tokio::select! {
            feed = bus.recv() => feed,
            () = queue.closed() => break None,
            () = tail.closing.cancelled() => break Some(End::Shutdown),
        };
        match feed {
            Ok(feed) => match &*feed {
                Feed::Message(message) if filter.matches(message) => {
                    // The last slot is kept for the notice that ends the stream.
                    if queue.capacity() <= 1 {
                        break Some(End::Slow);
                    }
                    let _ = queue.try_send(Item::Message(feed.clone()));
                }
                Feed::Message(_) => {}
                Feed::Gap => break Some(End::Missed),
            },
            // This task itself fell behind the bus: the reader has missed messages.
            Err(broadcast::error::RecvError::Lagged(_)) => break Some(End::Slow),
            Err(broadcast::error::RecvError::Closed) => break Some(End::Shutdown),
        }
    };
    match end {
        Some(End::Slow) => {
            crate::telemetry::tail_dropped("slow");
            tracing::warn!(buffer = tail.buffer, "A live tail reader fell behind and was dropped.");
        }
        Some(End::Missed) => {
            crate::telemetry::tail_dropped("missed");
            tracing::warn!("Live tail readers were dropped: messages of other replicas may have been missed.");
        }
        Some(End::Shutdown) | None => {}
    }
    if let Some(end) = end {
        let _ = queue.try_send(Item::End(end));
    }
    drop(queue);
    let open = tail.readers.fetch_sub(1, Ordering::Relaxed) - 1;
    crate::telemetry::tail_readers(open);
    if let (Some(end), Some(connection)) = (end, connection) {
        if end != End::Shutdown {
            tokio::select! {
                () = tokio::time::sleep(END_FLUSH) => {}
                () = tail.closing.cancelled() => {}
            }
        }
        if tail.closing.is_cancelled() {
            tokio::time::sleep(SHUTDOWN_FLUSH).await;
        }
        // Done by now unless its reader stopped reading; then this cuts it off.
        connection.close();
    }
}

/// What replicas say to each other on the store's tail channel.
#[derive(Debug, Serialize, Deserialize)]
struct Relayed {
    /// The sender's mark.
    r: String,
    /// The sender has readers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    on: bool,
    /// Messages the sender could not relay since its last payload.
    #[serde(default, skip_serializing_if = "is_zero")]
    lost: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    m: Vec<Message>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Relays this process's messages to the other replicas, in payloads that fit a notification.
async fn relay_out(tail: Arc<Tail>, store: Arc<dyn Store>, mut queue: mpsc::Receiver<Message>) {
    loop {
        let first = tokio::select! {
            first = queue.recv() => first,
            () = tail.closing.cancelled() => return,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < 1024
            && let Ok(more) = queue.try_recv()
        {
            batch.push(more);
        }
        let payloads = frame(&tail.replica, &batch, tail.relay_lost.swap(0, Ordering::Relaxed));
        if let Err(e) = store.send_tail(payloads).await {
            tracing::debug!(error = %e, "Could not relay live tail messages to the other replicas.");
            tail.relay_lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    }
}

/// `messages` as relay payloads of at most [`TAIL_PAYLOAD_MAX`] bytes each, in order; the
/// first says how many were `lost` before them, and a message too large for any payload is
/// counted as lost in the next one.
fn frame(replica: &str, messages: &[Message], mut lost: u64) -> Vec<String> {
    // The frame around the messages, with room for any `lost` count.
    let overhead = format!(r#"{{"r":"{replica}","lost":{},"m":[]}}"#, u64::MAX).len();
    let mut payloads = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut size = overhead;
    let close = |texts: &mut Vec<String>, lost: &mut u64, payloads: &mut Vec<String>| {
        if texts.is_empty() && *lost == 0 {
            return;
        }
        let mut payload = format!(r#"{{"r":"{replica}""#);
        if *lost > 0 {
            payload.push_str(&format!(r#","lost":{lost}"#));
        }
        payload.push_str(r#","m":["#);
        payload.push_str(&texts.join(","));
        payload.push_str("]}");
        payloads.push(payload);
        texts.clear();
        *lost = 0;
    };
    for message in messages {
        let Ok(text) = serde_json::to_string(message) else {
            lost += 1;
            continue;
        };
        if overhead + text.len() > TAIL_PAYLOAD_MAX {
            lost += 1;
            continue;
        }
        // A comma before every message but the first.
        if size + text.len() + 1 > TAIL_PAYLOAD_MAX {
            close(&mut texts, &mut lost, &mut payloads);
            size = overhead;
        }
        size += text.len() + 1;
        texts.push(text);
    }
    close(&mut texts, &mut lost, &mut payloads);
    payloads
}

/// While this process has readers, says so to the other replicas: at once when a reader
/// opens, then every [`HEARTBEAT`].
async fn heartbeat(tail: Arc<Tail>, store: Arc<dyn Store>) {
    let on =
        serde_json::to_string(&Relayed { r: tail.replica.clone(), on: true, lost: 0, m: vec![] }).unwrap_or_default();
    loop {
        tokio::select! {
            () = tail.announce.notified() => {}
            () = tokio::time::sleep(HEARTBEAT) => {}
            () = tail.closing.cancelled() => return,
        }
        if tail.readers.load(Ordering::Relaxed) > 0
            && let Err(e) = store.send_tail(vec![on.clone()]).await
        {
            tracing::debug!(error = %e, "Could not tell the other replicas about this replica's live tail readers.");
        }
    }
}

/// Hears the other replicas: their readers (so this one relays) and their messages (for the
/// readers here).
async fn relay_in(tail: Arc<Tail>, mut feed: broadcast::Receiver<TailFeed>) {
    loop {
        let heard = tokio::select! {
            heard = feed.recv() => heard,
            () = tail.closing.cancelled() => return,
        };
        let payload = match heard {
            Ok(TailFeed::Payload(payload)) => payload,
            Ok(TailFeed::Lost) | Err(broadcast::error::RecvError::Lagged(_)) => {
                if tail.readers.load(Ordering::Relaxed) > 0 {
                    let _ = tail.bus.send(Arc::new(Feed::Gap));
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Ok(relayed) = serde_json::from_str::<Relayed>(&payload) else {
            tracing::debug!("Ignored a live tail payload that is not callgate's.");
            continue;
        };
        if relayed.r == tail.replica {
            continue;
        }
        if relayed.on {
            let was = tail.remote_readers();
            let until = tail.since_epoch() + REMOTE_TTL.as_millis() as u64;
            tail.remote_until.fetch_max(until, Ordering::Relaxed);
            if !was {
                tracing::info!(
                    "A live tail is open on another replica: relaying this replica's events and outcomes to it."
                );
            }
        }
        if relayed.lost > 0 && tail.readers.load(Ordering::Relaxed) > 0 {
            let _ = tail.bus.send(Arc::new(Feed::Gap));
        }
        for message in relayed.m {
            tail.local(message);
        }
    }
}

/// Query parameters of `GET /v1/admin/stream`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Comma-separated route names (each configured): only events routed to one of them, and
    /// their outcomes.
    #[param(example = "crm")]
    route: Option<String>,
    /// Comma-separated source names (each configured).
    source: Option<String>,
    /// Comma-separated glob patterns over canonical types, as a route's `events` (`call.*`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// A ticket from `POST /v1/admin/stream/tickets`, for clients that cannot send headers:
    /// described by the `stream_ticket` security scheme, not as a parameter.
    #[param(ignore)]
    ticket: Option<String>,
}

fn list(value: &Option<String>) -> Option<Vec<String>> {
    value.as_ref().map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

impl StreamParams {
    fn filter(&self, config: &Config) -> Result<Filter, String> {
        let routes = list(&self.route);
        let sources = list(&self.source);
        for route in routes.iter().flatten() {
            if !config.routes.contains_key(route) {
                return Err(format!("no route named `{}`", cut(route, 80)));
            }
        }
        for source in sources.iter().flatten() {
            if !config.sources.contains_key(source) {
                return Err(format!("no source named `{}`", cut(source, 80)));
            }
        }
        let types = list(&self.kind).map(|patterns| patterns.iter().map(|p| WildMatch::new(p)).collect());
        Ok(Filter { routes, sources, types })
    }
}

/// `GET /v1/admin/stream`: the live tail as server-sent events. Authorised by the admin
/// bearer token, or by a ticket (`?ticket=`) for a browser's `EventSource`.
#[utoipa::path(get, path = "/v1/admin/stream", tag = "tail", operation_id = "stream",
    params(StreamParams),
    // Either credential: the bearer header, or a single-use ticket in the query.
    security(("admin_token" = []), ("stream_ticket" = [])),
    responses(
        (status = 200, description = "Server-sent events (`ready`, then `accepted`, `outcome`, and a last \
            `dropped` or `closed`), each `data` one JSON object; a comment line every 15 s keeps it alive",
            content_type = "text/event-stream", body = String),
        crate::admin::answers::Invalid,
        (status = 401, description = "No valid bearer token, and no unused, unexpired ticket (`unauthorized`)",
            body = crate::http::ErrorBody),
        (status = 403, description = "The admin API is off: `[admin] token` is not set (`admin_disabled`)",
            body = crate::http::ErrorBody),
    ))]
pub async fn stream(
    State(app): State<Arc<App>>,
    connection: Option<Extension<ConnectionClose>>,
    headers: HeaderMap,
    query: Result<Query<StreamParams>, QueryRejection>,
) -> Response {
    let config = app.config.load();
    let Some(token) = &config.admin.token else {
        return error_response::<()>(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is off: set [admin] token to enable it",
            &[],
        );
    };
    let params = match query {
        Ok(Query(params)) => params,
        Err(e) => return error_response::<()>(StatusCode::BAD_REQUEST, "bad_request", &cut(&e.body_text(), 160), &[]),
    };
    let authorized = if headers.contains_key(header::AUTHORIZATION) {
        auth::bearer_matches(&headers, token)
    } else {
        params.ticket.as_deref().is_some_and(|t| app.tail.tickets.admit(token, t, now_ms()))
    };
    if !authorized {
        return error_response::<()>(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin bearer token or an unused, unexpired stream ticket is required",
            &[],
        );
    }
    let filter = match params.filter(&app.config.load()) {
        Ok(filter) => filter,
        Err(why) => return error_response::<()>(StatusCode::BAD_REQUEST, "bad_request", &why, &[]),
    };
    let tail = app.tail.clone();
    let buffer = tail.buffer;
    let ready = Event::default().event("ready").data(
        json!({ "buffer": buffer, "route": list(&params.route), "source": list(&params.source), "type": list(&params.kind) })
            .to_string(),
    );
    let items = tail.subscribe(filter, connection.map(|Extension(c)| c));
    let events = futures_util::stream::unfold((Some(ready), Some(items)), move |(first, items)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), (None, items)));
        }
        let mut items = items?;
        match items.recv().await? {
            Item::Message(feed) => {
                let Feed::Message(message) = &*feed else { return Some((Ok(End::Missed.event(buffer)), (None, None))) };
                let data = match message {
                    Message::Accepted(a) => serde_json::to_string(a),
                    Message::Outcome(o) => serde_json::to_string(o),
                }
                .unwrap_or_default();
                Some((Ok(Event::default().event(message.name()).data(data)), (None, Some(items))))
            }
            Item::End(end) => Some((Ok(end.event(buffer)), (None, None))),
        }
    });
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    // Proxies that buffer responses (nginx) pass this one through as it comes.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The connection ends with the stream: its close at the end never cuts another request.
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A stream ticket.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ticket {
    /// Single use, on each replica with the same `[admin] token`.
    pub ticket: String,
    /// RFC 3339 time it stops admitting a stream (60 s from now).
    pub expires_at: String,
    /// The stream's path with the ticket: add `&type=…` and the other filters.
    pub url: String,
}

/// `POST /v1/admin/stream/tickets` (behind the bearer token): a ticket for one stream.
#[utoipa::path(post, path = "/v1/admin/stream/tickets", tag = "tail", operation_id = "stream_ticket",
    responses(
        (status = 201, description = "A single-use ticket for one `GET /v1/admin/stream` within 60 s", body = Ticket),
        crate::admin::answers::Denied,
    ))]
pub async fn ticket(State(app): State<Arc<App>>) -> Response {
    let config = app.config.load();
    let Some(token) = &config.admin.token else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let (ticket, expires) = Tickets::issue(token, now_ms());
    let url = format!("/v1/admin/stream?ticket={ticket}");
    (StatusCode::CREATED, axum::Json(Ticket { ticket, expires_at: rfc3339(expires), url })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(kind: &str, routes: &[&str]) -> Message {
        Message::Accepted(Accepted {
            id: "ce_1".into(),
            kind: kind.into(),
            subject: "vox:c1".into(),
            source: "vox".into(),
            time: "2026-01-01T00:00:00.000Z".into(),
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        })
    }

    #[test]
    fn filters_match_routes_sources_and_type_globs() {
        let all = Filter::default();
        let by_route = Filter { routes: Some(vec!["crm".into()]), ..Filter::default() };
        let by_type = Filter { types: Some(vec![WildMatch::new("call.*")]), ..Filter::default() };
        let by_source = Filter { sources: Some(vec!["salpre".into()]), ..Filter::default() };
        let ended = accepted("call.ended", &["crm", "bi"]);
        let transcript = accepted("transcript.ready", &["bi"]);
        assert!(all.matches(&ended) && all.matches(&transcript));
        assert!(by_route.matches(&ended) && !by_route.matches(&transcript));
        assert!(by_type.matches(&ended) && !by_type.matches(&transcript));
        assert!(!by_source.matches(&ended));
    }

    #[test]
    fn relayed_messages_are_split_into_payloads_that_fit_a_notification_in_order() {
        let replica = "00000000deadbeef";
        let messages: Vec<Message> = (0..500)
            .map(|n| match accepted("call.ended", &["crm"]) {
                Message::Accepted(a) => Message::Accepted(Accepted { id: format!("ce_{n}"), ..a }),
                other => other,
            })
            .collect();
        let mut huge = accepted("call.ended", &["crm"]);
        if let Message::Accepted(a) = &mut huge {
            a.subject = "x".repeat(TAIL_PAYLOAD_MAX);
        }
        let mut all = messages.clone();
        all.insert(10, huge);
        let payloads = frame(replica, &all, 3);
        assert!(payloads.len() > 5, "{} payloads", payloads.len());
        let mut got = Vec::new();
        let mut lost = 0;
        for payload in &payloads {
            assert!(payload.len() <= TAIL_PAYLOAD_MAX, "{}", payload.len());
            let relayed: Relayed = serde_json::from_str(payload).unwrap();
            assert_eq!((relayed.r.as_str(), relayed.on), (replica, false));
            lost += relayed.lost;
            got.extend(relayed.m);
        }
        assert_eq!(got, messages, "every message that fits, in order");
        assert_eq!(lost, 3 + 1, "the earlier losses and the message too large to relay");
        assert!(frame(replica, &[], 0).is_empty());
        let only_lost: Relayed = serde_json::from_str(&frame(replica, &[], 2)[0]).unwrap();
        assert_eq!((only_lost.lost, only_lost.m.len()), (2, 0));
    }

    async fn next(items: &mut mpsc::Receiver<Item>) -> Result<String, End> {
        match items.recv().await.expect("an item before the queue closes") {
            Item::Message(feed) => match &*feed {
                Feed::Message(Message::Accepted(a)) => Ok(a.id.clone()),
                other => panic!("{other:?}"),
            },
            Item::End(end) => Err(end),
        }
    }

    fn numbered(n: usize, kind: &str) -> Message {
        match accepted(kind, &["crm"]) {
            Message::Accepted(a) => Message::Accepted(Accepted { id: format!("ce_{n}"), ..a }),
            other => other,
        }
    }

    /// On one thread the forwarders run only while the test awaits, so everything published
    /// before is in their bus when they look: what they do with it is determined.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_reader_is_ended_with_its_notice_while_the_others_go_on() {
        let tail = Tail::new(3, None);
        assert!(!tail.active());
        let mut slow = tail.subscribe(Filter::default(), None);
        let mut transcripts =
            tail.subscribe(Filter { types: Some(vec![WildMatch::new("transcript.*")]), ..Filter::default() }, None);
        assert!(tail.active());
        for n in 0..5 {
            tail.publish(numbered(n, "call.ended"));
        }
        tail.publish(numbered(5, "transcript.ready"));
        // Two messages fit beside the slot kept for the notice.
        assert_eq!(next(&mut slow).await, Ok("ce_0".into()));
        assert_eq!(next(&mut slow).await, Ok("ce_1".into()));
        assert_eq!(next(&mut slow).await, Err(End::Slow));
        assert!(slow.recv().await.is_none(), "nothing after the notice");
        assert_eq!(next(&mut transcripts).await, Ok("ce_5".into()), "the filtered reader skipped the rest");
        assert_eq!(tail.readers.load(Ordering::Relaxed), 1);

        // A gap ends every reader; shutdown ends them too.
        let mut second = tail.subscribe(Filter::default(), None);
        let _ = tail.bus.send(Arc::new(Feed::Gap));
        assert_eq!(next(&mut transcripts).await, Err(End::Missed));
        assert_eq!(next(&mut second).await, Err(End::Missed));
        let mut last = tail.subscribe(Filter::default(), None);
        tail.close();
        assert_eq!(next(&mut last).await, Err(End::Shutdown));
        assert_eq!(tail.readers.load(Ordering::Relaxed), 0);
        assert!(!tail.active());
    }

    #[test]
    fn tickets_are_signed_single_use_and_expire() {
        let tickets = Tickets::default();
        let token = Secret::new("t0k");
        let now = 1_000_000;
        let (ticket, expires) = Tickets::issue(&token, now);
        assert_eq!(expires, now + TICKET_TTL.as_millis() as Millis);
        assert!(!tickets.admit(&Secret::new("other"), &ticket, now), "another token's ticket");
        let last = if ticket.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}", &ticket[..ticket.len() - 1]);
        assert!(!tickets.admit(&token, &forged, now), "a changed signature");
        let later = ticket.replacen(&expires.to_string(), &(expires + 1000).to_string(), 1);
        assert!(!tickets.admit(&token, &later, now), "a changed expiry");
        assert!(tickets.admit(&token, &ticket, now));
        assert!(!tickets.admit(&token, &ticket, now), "used once already");
        let (late, _) = Tickets::issue(&token, now);
        assert!(!tickets.admit(&token, &late, expires + 1), "expired");
        assert!(!tickets.admit(&token, "garbage", now));
        assert!(!tickets.admit(&token, "1.2.zz", now));
    }
}
