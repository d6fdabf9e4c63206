//! PostgreSQL backend: several gateway replicas share one database.
//!
//! Ingest goes through W writer tasks (default 2): each takes every job waiting and commits
//! them in one transaction (`synchronous_commit = on`), so under load many payloads share one
//! commit; PostgreSQL's own group commit merges the writers' and the other replicas' flushes.
//! Duplicates are caught by the unique `(source, digest)` key across replicas: `ON CONFLICT DO
//! NOTHING` and a read-back of the first acceptance's ids. Keys are inserted sorted, so two
//! replicas inserting the same keys lock them in the same order. There is no savepoint per job
//! (more than 64 subtransactions slow every backend down); a failed batch is re-run one job
//! per transaction instead.
//!
//! Claims lease the head of each (route, subject) queue with `FOR UPDATE SKIP LOCKED`; a row is
//! a head only if no older row of its call is still in the outbox and no row of its call holds
//! a live lease, so no two replicas ever have two events of one call in flight to one route.
//! Every outcome is fenced by its lease token; claims and outcomes commit with
//! `synchronous_commit = off` (a lost one only repeats a delivery).
//!
//! Wake-ups: an in-process broadcast for this replica, and after the commit (never inside the
//! ingest transaction: a pending NOTIFY takes a database-wide lock at commit)
//! `pg_notify('callgate_due', ..)`, at most once per route per [`PgOptions::notify_interval`].
//! Pause and resume travel on `callgate_control`, inside their transaction; the live tails'
//! payloads on `callgate_tail` (`Store::send_tail`, heard by every replica). One dedicated
//! listening connection reconnects by itself and reports [`Notice::Lost`] after a reconnect,
//! since notifications may have been missed meanwhile.
//!
//! **Invariant:** outbox ids follow acceptance order (identity sequences with `CACHE 1`), and a
//! delivery leaves the outbox only when its outcome commits, so "the oldest row of a call still
//! in the outbox" is the call's head whichever replica accepted its events.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use sqlx::{
    Row,
    migrate::{MigrateError, Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions},
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    Attempt, AttemptRecord, CALL_BYTES_MAX, CALL_EVENTS_MAX, CallEvent, CallFilter, CallStatus, CallSummary, Claimed,
    Completed, Counts, DRIFT_OVERFLOW, DeadLetter, DeadLetterDetail, DeadRow, Delivery, DriftCount, EventDetail,
    Filter, Ingest, IngestOutcome, Lease, LogEntry, LogFilter, LogOutcome, Millis, Notice, OutboxRow, Outcome,
    OutcomeKind, Pause, Pruned, QuarantineItem, Quarantined, Store, StoreError, StoredCall, TAIL_PAYLOAD_MAX,
    TERMINAL_TYPES, TailFeed, TestSend, admit_drift, call_deliveries,
    erase::{self, Erased, Erasure},
    events_that_fit, now_ms, rfc3339,
};

/// The migrations, embedded (sqlx's `migrate!` needs its `macros` feature, which we leave out).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "vendor drift", include_str!("../../migrations/postgres/0002_vendor_drift.sql")),
    (3, "delivery log", include_str!("../../migrations/postgres/0003_delivery_log.sql")),
    (4, "call records", include_str!("../../migrations/postgres/0004_call_records.sql")),
    (5, "call completed", include_str!("../../migrations/postgres/0005_call_completed.sql")),
];

/// Most jobs one ingest transaction takes: bounds the latency a batch adds to its first member.
const MAX_BATCH: usize = 256;
/// Ingest jobs waiting for a writer; callers wait (backpressure) when it is full.
const QUEUE: usize = 4096;
/// Rows one prune deletes per table, so pruning never holds locks for long.
const PRUNE_CHUNK: i64 = 5000;
/// `pg_try_advisory_xact_lock` key of the pruner ("callgate" in ASCII, plus one).
const PRUNE_LOCK: i64 = 0x6361_6c6c_6761_7465 + 1;
const DUE_CHANNEL: &str = "callgate_due";
const CONTROL_CHANNEL: &str = "callgate_control";
/// The live tails' payloads (`Store::send_tail`): "<replica> <payload>", heard by every replica.
const TAIL_CHANNEL: &str = "callgate_tail";
/// Tail payloads buffered per subscriber before it lags.
const TAIL_FEED: usize = 256;
/// Notices buffered per subscriber before it lags (and must treat the lag as `Lost`).
const NOTICES: usize = 1024;

/// Tuning of the PostgreSQL backend; every field has a sane default.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in this replica's pool (writers, claims, outcomes, admin); the listening
    /// connection comes on top.
    pub pool_size: u32,
    /// Ingest writer tasks (1–8).
    pub writers: usize,
    /// `statement_timeout` of every connection: a statement stuck longer fails as unavailable.
    pub statement_timeout: Duration,
    /// How long a caller waits for a pooled connection before the store reports unavailable.
    pub acquire_timeout: Duration,
    /// Least time between two `callgate_due` notifications of one route from this replica.
    pub notify_interval: Duration,
    /// How long [`Store::counts`] reuses a database count (scrapes of several replicas).
    pub counts_ttl: Duration,
    /// How often this replica measures its clock against the database's.
    pub clock_interval: Duration,
    /// Tests: how far this replica pretends its own clock runs ahead, in ms.
    #[cfg(test)]
    pub pretend_clock_ahead: Millis,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            writers: 2,
            statement_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
            notify_interval: Duration::from_millis(50),
            counts_ttl: Duration::from_secs(1),
            clock_interval: Duration::from_secs(30),
            #[cfg(test)]
            pretend_clock_ahead: 0,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        use sqlx::Error as E;
        match &e {
            E::PoolClosed => StoreError::Closed,
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::WorkerCrashed | E::Protocol(_) | E::BeginFailed => {
                StoreError::Unavailable(e.to_string())
            }
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                // 08: connection, 53: resources (disk full, too many connections), 57: operator
                // intervention (shutdown, statement timeout), 40: serialization or deadlock,
                // 55P03: lock timeout, 25006: read-only (a standby after failover).
                if ["08", "53", "57", "40"].iter().any(|c| code.starts_with(c)) || code == "55P03" || code == "25006" {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Backend(e.to_string())
                }
            }
            E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) | E::TypeNotFound { .. } => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// A copy of an error for every job of a failed batch.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
        StoreError::Closed => StoreError::Closed,
    }
}

/// The URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable storage.url>".to_owned(),
    }
}

/// This replica's clock set against the database's. Every time the store is handed (claims,
/// leases, retries, acceptance) is moved onto the database's clock and every time it hands back
/// (the next due time) off it, so replicas whose clocks disagree still agree on when a lease
/// ends: a replica whose clock runs ahead never takes over a lease that is still live.
struct Clock {
    /// The database's clock minus this replica's, in ms.
    offset: std::sync::atomic::AtomicI64,
    #[cfg(test)]
    pretend: Millis,
}

/// Offsets this large are logged: the clocks should be synchronised (NTP) even though leases
/// do not depend on it.
const CLOCK_WARN: Millis = 1_000;
/// Offsets smaller than this are taken as zero.
const CLOCK_NOISE: Millis = 100;

impl Clock {
    fn new(_options: &PgOptions) -> Clock {
        Clock {
            offset: Default::default(),
            #[cfg(test)]
            pretend: _options.pretend_clock_ahead,
        }
    }

    /// This replica's own clock.
    fn local(&self) -> Millis {
        #[cfg(test)]
        return now_ms() + self.pretend;
        #[cfg(not(test))]
        now_ms()
    }

    fn offset(&self) -> Millis {
        self.offset.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A time of this replica's clock on the database's.
    fn on_db(&self, t: Millis) -> Millis {
        t.saturating_add(self.offset())
    }

    fn on_local(&self, t: Millis) -> Millis {
        t.saturating_sub(self.offset())
    }

    /// Reads the database's clock, halfway through the round trip, and keeps the offset.
    async fn measure(&self, pool: &PgPool) -> Result<Millis, StoreError> {
        let before = self.local();
        let db: Millis =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8").fetch_one(pool).await?;
        let after = self.local();
        let offset = db - before - (after - before) / 2;
        // Below this the offset is noise (the round trip, the clocks' granularity) and far
        // inside any lease margin; taking it as zero keeps synchronised replicas on one clock.
        let offset = if offset.abs() < CLOCK_NOISE { 0 } else { offset };
        self.offset.store(offset, std::sync::atomic::Ordering::Relaxed);
        Ok(offset)
    }
}

/// Measures the clock every `interval`, and says when it is off by a second or more (once, and
/// again whenever the offset moved by another second).
async fn track_clock(clock: Arc<Clock>, pool: PgPool, interval: Duration, mut said: Option<Millis>) {
    loop {
        tokio::time::sleep(interval).await;
        let Ok(offset) = clock.measure(&pool).await else { continue };
        if offset.abs() >= CLOCK_WARN && said.is_none_or(|s| (s - offset).abs() >= CLOCK_WARN) {
            warn_clock(offset);
            said = Some(offset);
        }
    }
}

fn warn_clock(offset: Millis) {
    tracing::warn!(
        offset_ms = offset,
        "this replica's clock is off the database's: callgate keeps leases and schedules on the database's clock, but logs and the receivers' signature checks see this one; synchronise it (NTP)"
    );
}

struct IngestJob {
    ingest: Ingest,
    reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
}

/// What the writers, the notifier and the store share.
#[derive(Clone)]
struct Shared {
    pool: PgPool,
    notices: broadcast::Sender<Notice>,
    /// What `callgate_tail` brought (every replica's payloads, this one's included).
    tail: broadcast::Sender<TailFeed>,
    /// Routes to announce on `callgate_due` (rate-limited by the notifier task).
    remote: mpsc::UnboundedSender<String>,
    counts: Arc<Mutex<Option<(Instant, Counts)>>>,
    /// Bumped by every change of this replica's counts: a count read while one happened is
    /// returned but not cached (it may predate the change).
    counts_generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    /// Tells this replica's workers and (rate-limited) the other replicas that `routes` may
    /// have claimable deliveries. Call only after the commit.
    fn due<'a>(&self, routes: impl IntoIterator<Item = &'a String>) {
        for route in routes {
            let _ = self.notices.send(Notice::Due(route.clone()));
            let _ = self.remote.send(route.clone());
        }
    }

    fn counts_changed(&self) {
        if let Ok(mut cached) = self.counts.lock() {
            self.counts_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            *cached = None;
        }
    }
}

pub struct PostgresStore {
    shared: Shared,
    jobs: mpsc::Sender<IngestJob>,
    completions: mpsc::Sender<CompleteJob>,
    options: PgOptions,
    /// Marks this replica's notifications, so its listener skips what it already told itself.
    replica: u64,
    clock: Arc<Clock>,
    listener: tokio::task::JoinHandle<()>,
    clock_tracker: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.clock_tracker.abort();
    }
}

impl PostgresStore {
    /// Connects, migrates (under sqlx's advisory lock: replicas starting together migrate
    /// once), starts listening and starts the writers.
    pub async fn open(url: &str, options: PgOptions) -> Result<PostgresStore, StoreError> {
        let shown = redact(url);
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("storage.url {shown}: {e}")))?
            .application_name("callgate")
            .options([("statement_timeout", options.statement_timeout.as_millis().to_string())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.max(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to {shown}: {e}")))?;
        let autovacuum: String = sqlx::query_scalar("SHOW autovacuum").fetch_one(&pool).await?;
        if autovacuum == "off" {
            tracing::warn!(
                database = %shown,
                "autovacuum is off on this PostgreSQL server: the outbox will bloat and claims slow down unless it is vacuumed"
            );
        }
        migrate(&pool).await?;
        let clock = Arc::new(Clock::new(&options));
        let offset = clock.measure(&pool).await?;
        if offset.abs() >= CLOCK_WARN {
            warn_clock(offset);
        }
        let said = (offset.abs() >= CLOCK_WARN).then_some(offset);
        let clock_tracker = tokio::spawn(track_clock(clock.clone(), pool.clone(), options.clock_interval, said));

        let replica = fastrand::u64(..);
        let (notices, _) = broadcast::channel(NOTICES);
        let (tail, _) = broadcast::channel(TAIL_FEED);
        let listener = subscribe(&pool).await?;
        let listener = tokio::spawn(listen(pool.clone(), listener, notices.clone(), tail.clone(), replica));

        let (remote, remote_rx) = mpsc::unbounded_channel();
        tokio::spawn(notifier(pool.clone(), remote_rx, options.notify_interval, replica));
        let shared = Shared {
            pool,
            notices,
            tail,
            remote,
            counts: Arc::new(Mutex::new(None)),
            counts_generation: Arc::default(),
        };
        let (jobs, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..options.writers.clamp(1, 8) {
            tokio::spawn(writer(shared.clone(), rx.clone()));
        }
        let (completions, rx) = mpsc::channel(QUEUE);
        tokio::spawn(completer(shared.clone(), replica, rx));
        Ok(PostgresStore { shared, jobs, completions, options, replica, clock, listener, clock_tracker })
    }

    fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    fn control(&self, route: &str, paused: bool) -> String {
        control(self.replica, route, paused)
    }
}

/// The payload of a `callgate_control` notification: who sent it, pause or resume, the route.
fn control(replica: u64, route: &str, paused: bool) -> String {
    format!("{replica:x} {} {route}", u8::from(paused))
}

/// Applies the migrations this callgate knows (also used by `callgate store migrate`).
pub(crate) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    let migrator = Migrator::with_migrations(migrations);
    migrator.run(pool).await.map_err(|e| match e {
        MigrateError::VersionMissing(v) => StoreError::Backend(format!(
            "the database has migration {v} applied, which this callgate does not know (it is newer); upgrade callgate"
        )),
        MigrateError::Execute(e) => match StoreError::from(e) {
            StoreError::Backend(m) => StoreError::Backend(format!("migrating: {m}")),
            other => other,
        },
        other => StoreError::Backend(format!("migrating: {other}")),
    })
}

/// Parses a notification from another replica.
fn parse_notice(channel: &str, payload: &str, replica: u64) -> Option<Notice> {
    let (from, rest) = payload.split_once(' ')?;
    if u64::from_str_radix(from, 16).ok()? == replica {
        return None;
    }
    match channel {
        DUE_CHANNEL => Some(Notice::Due(rest.to_owned())),
        CONTROL_CHANNEL => {
            let (flag, route) = rest.split_once(' ')?;
            Some(Notice::Paused { route: route.to_owned(), paused: flag == "1" })
        }
        _ => None,
    }
}

/// A listener on every channel, on a connection of the pool's.
async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends `try_recv` at once: `listen` then makes a new listener.
    listener.eager_reconnect(false);
    listener.listen_all([DUE_CHANNEL, CONTROL_CHANNEL, TAIL_CHANNEL]).await?;
    Ok(listener)
}

/// The dedicated listening connection: forwards the other replicas' notifications, and after
/// every reconnect says [`Notice::Lost`] (and [`TailFeed::Lost`]). Tail payloads are passed on
/// from every replica, this one's included, and only while someone here subscribes.
async fn listen(
    pool: PgPool,
    mut listener: PgListener,
    notices: broadcast::Sender<Notice>,
    tail: broadcast::Sender<TailFeed>,
    replica: u64,
) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if n.channel() == TAIL_CHANNEL {
                    if tail.receiver_count() > 0
                        && let Some((_, payload)) = n.payload().split_once(' ')
                    {
                        let _ = tail.send(TailFeed::Payload(payload.into()));
                    }
                } else if let Some(notice) = parse_notice(n.channel(), n.payload(), replica) {
                    let _ = notices.send(notice);
                }
                continue;
            }
            Err(sqlx::Error::PoolClosed) => return,
            Ok(None) => tracing::warn!("lost the PostgreSQL listening connection; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "the PostgreSQL listening connection failed; reconnecting"),
        }
        drop(listener);
        // A new listener each time, never the old one re-LISTENing: `PgListener` keeps a
        // connection that failed in a LISTEN (cut off half way through a reconnect), so every
        // later try through it fails for good, and each try adds the channels to it again.
        // Listening before saying Lost, so a worker that looks again after the notice cannot
        // miss a notification sent before it looked.
        let mut backoff = Duration::from_millis(100);
        listener = loop {
            match subscribe(&pool).await {
                Ok(listener) => break listener,
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "reconnecting the PostgreSQL listener");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let _ = notices.send(Notice::Lost);
        let _ = tail.send(TailFeed::Lost);
    }
}

/// Sends `callgate_due` for routes, at most once per `interval` per route: a route asked for
/// again within the interval is sent when it ends (never dropped).
async fn notifier(pool: PgPool, mut rx: mpsc::UnboundedReceiver<String>, interval: Duration, replica: u64) {
    let mut last: HashMap<String, Instant> = HashMap::new();
    let mut pending: HashMap<String, Instant> = HashMap::new();
    loop {
        let wake = pending.values().min().copied();
        let received = match wake {
            Some(at) => tokio::select! {
                r = rx.recv() => Some(r),
                () = tokio::time::sleep_until(at.into()) => None,
            },
            None => Some(rx.recv().await),
        };
        let now = Instant::now();
        let mut ask = |route: String| {
            let at = last.get(&route).map_or(now, |t| (*t + interval).max(now));
            pending.entry(route).or_insert(at);
        };
        match received {
            Some(None) => return,
            Some(Some(route)) => ask(route),
            None => {}
        }
        while let Ok(route) = rx.try_recv() {
            ask(route);
        }
        let ready: Vec<String> = pending.iter().filter(|(_, at)| **at <= now).map(|(r, _)| r.clone()).collect();
        if !ready.is_empty() {
            let payloads: Vec<String> = ready.iter().map(|r| format!("{replica:x} {r}")).collect();
            for route in ready {
                pending.remove(&route);
                last.insert(route, now);
            }
            if let Err(e) = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) p")
                .bind(DUE_CHANNEL)
                .bind(&payloads)
                .execute(&pool)
                .await
            {
                // The others still poll; their next claim finds the work.
                tracing::debug!(error = %e, "could not notify the other replicas");
            }
        }
        last.retain(|_, t| now.duration_since(*t) < interval);
    }
}

/// An ingest writer: one transaction per batch of waiting jobs.
async fn writer(shared: Shared, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<IngestJob>>>) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        let ingests: Vec<&Ingest> = batch.iter().map(|j| &j.ingest).collect();
        let mut routes = BTreeSet::new();
        let results = match ingest_batch(&shared.pool, &ingests, &mut routes).await {
            Ok(results) => results,
            Err(e) if batch.len() > 1 && matches!(e, StoreError::Backend(_) | StoreError::Corrupt(_)) => {
                // Only the bad job should fail: run each on its own.
                tracing::warn!(error = %e, jobs = batch.len(), "an ingest batch failed; retrying its jobs one by one");
                let mut results = Vec::with_capacity(batch.len());
                for ingest in &ingests {
                    results.push(match ingest_batch(&shared.pool, &[ingest], &mut routes).await {
                        Ok(mut one) => one.pop().unwrap_or_else(|| Err(StoreError::Backend("no result".into()))),
                        Err(e) => Err(e),
                    });
                }
                results
            }
            Err(e) => batch.iter().map(|_| Err(copy(&e))).collect(),
        };
        if !routes.is_empty() {
            shared.counts_changed();
            shared.due(&routes);
        }
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// Commits a batch of payloads in one transaction; one result per job, in order. `routes`
/// gains the routes that got deliveries.
async fn ingest_batch(
    pool: &PgPool,
    jobs: &[&Ingest],
    routes: &mut BTreeSet<String>,
) -> Result<Vec<Result<IngestOutcome, StoreError>>, StoreError> {
    let mut tx = pool.begin().await?;
    let results = ingest_in(&mut tx, jobs, routes).await?;
    tx.commit().await?;
    Ok(results)
}

/// [`ingest_batch`]'s statements, in the caller's transaction (a call's completion runs them
/// in its own).
async fn ingest_in(
    tx: &mut sqlx::PgConnection,
    jobs: &[&Ingest],
    routes: &mut BTreeSet<String>,
) -> Result<Vec<Result<IngestOutcome, StoreError>>, StoreError> {
    // The first job of each key leads; a later one with the same key is its duplicate.
    let mut leader_of: HashMap<(&str, &[u8; 32]), usize> = HashMap::new();
    let mut leads_of: Vec<usize> = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        leads_of.push(*leader_of.entry((job.source.as_str(), &job.digest)).or_insert(i));
    }
    let mut leaders: Vec<usize> = leader_of.values().copied().collect();
    leaders.sort_by(|a, b| (&jobs[*a].source, &jobs[*a].digest).cmp(&(&jobs[*b].source, &jobs[*b].digest)));

    let mut ids_json = Vec::with_capacity(leaders.len());
    for &i in &leaders {
        let ids: Vec<&str> = jobs[i].events.iter().map(|e| e.id.as_str()).collect();
        ids_json.push(serde_json::to_string(&ids).map_err(|e| StoreError::Backend(e.to_string()))?);
    }
    let sources: Vec<&str> = leaders.iter().map(|&i| jobs[i].source.as_str()).collect();
    let digests: Vec<&[u8]> = leaders.iter().map(|&i| &jobs[i].digest[..]).collect();
    let received: Vec<i64> = leaders.iter().map(|&i| jobs[i].received_at).collect();
    let bodies: Vec<&[u8]> = leaders.iter().map(|&i| jobs[i].body.as_slice()).collect();

    let inserted = sqlx::query(
        "INSERT INTO payloads (source, digest, received_at, body, event_ids)
         SELECT * FROM unnest($1::text[], $2::bytea[], $3::int8[], $4::bytea[], $5::text[])
                    AS u (source, digest, received_at, body, event_ids)
          ORDER BY source, digest
         ON CONFLICT (source, digest) DO NOTHING
         RETURNING id, source, digest",
    )
    .bind(&sources)
    .bind(&digests)
    .bind(&received)
    .bind(&bodies)
    .bind(&ids_json)
    .fetch_all(&mut *tx)
    .await?;
    let mut payload_id: HashMap<(String, Vec<u8>), i64> = HashMap::new();
    for row in inserted {
        payload_id.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
    }

    // Keys accepted before (by any replica, or by a transaction this one waited for).
    let known: Vec<usize> = leaders
        .iter()
        .copied()
        .filter(|&i| !payload_id.contains_key(&(jobs[i].source.clone(), jobs[i].digest.to_vec())))
        .collect();
    let mut earlier: HashMap<(String, Vec<u8>), Vec<String>> = HashMap::new();
    if !known.is_empty() {
        let sources: Vec<&str> = known.iter().map(|&i| jobs[i].source.as_str()).collect();
        let digests: Vec<&[u8]> = known.iter().map(|&i| &jobs[i].digest[..]).collect();
        let rows = sqlx::query(
            "SELECT source, digest, event_ids FROM payloads
              WHERE (source, digest) IN (SELECT * FROM unnest($1::text[], $2::bytea[]))",
        )
        .bind(&sources)
        .bind(&digests)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let ids: String = row.try_get(2)?;
            let ids: Vec<String> =
                serde_json::from_str(&ids).map_err(|e| StoreError::Corrupt(format!("stored event ids: {e}")))?;
            earlier.insert((row.try_get(0)?, row.try_get(1)?), ids);
        }
    }

    // Events of the accepted payloads, in arrival order (and each payload's own order).
    let accepted: Vec<(usize, i64)> = (0..jobs.len())
        .filter(|&i| leads_of[i] == i)
        .filter_map(|i| payload_id.get(&(jobs[i].source.clone(), jobs[i].digest.to_vec())).map(|&p| (i, p)))
        .collect();
    let mut ev_ids = Vec::new();
    let mut ev_payload = Vec::new();
    let mut ev_kind = Vec::new();
    let mut ev_subject = Vec::new();
    let mut ev_body = Vec::new();
    let mut ev_routes = Vec::new();
    for &(i, pid) in &accepted {
        for event in &jobs[i].events {
            ev_ids.push(event.id.as_str());
            ev_payload.push(pid);
            ev_kind.push(event.kind.as_str());
            ev_subject.push(event.subject.as_str());
            ev_body.push(event.json.as_str());
            ev_routes.push(serde_json::to_string(&event.routes).map_err(|e| StoreError::Backend(e.to_string()))?);
        }
    }
    if !ev_ids.is_empty() {
        let rows = sqlx::query(
            "INSERT INTO events (id, payload_id, type, subject, body, routes)
             SELECT id, payload_id, type, subject, body, routes
               FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[])
                    WITH ORDINALITY AS u (id, payload_id, type, subject, body, routes, n)
              ORDER BY n
             RETURNING seq",
        )
        .bind(&ev_ids)
        .bind(&ev_payload)
        .bind(&ev_kind)
        .bind(&ev_subject)
        .bind(&ev_body)
        .bind(&ev_routes)
        .fetch_all(&mut *tx)
        .await?;
        // The sequence hands out increasing values in insertion order, which is `n`'s order.
        let mut seqs: Vec<i64> = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
        seqs.sort_unstable();
        if seqs.len() != ev_ids.len() {
            return Err(StoreError::Backend(format!("inserted {} events of {}", seqs.len(), ev_ids.len())));
        }

        let mut ob_seq = Vec::new();
        let mut ob_route = Vec::new();
        let mut ob_subject = Vec::new();
        let mut ob_floor = Vec::new();
        // Never due before an earlier event of the call on this route, within the batch too
        // (the statement's subquery sees only rows committed before it).
        let mut floor: HashMap<(&str, &str), i64> = HashMap::new();
        let mut k = 0;
        for &(i, _) in &accepted {
            for event in &jobs[i].events {
                for route in &event.routes {
                    let f = floor.entry((route.as_str(), event.subject.as_str())).or_insert(i64::MIN);
                    *f = (*f).max(jobs[i].received_at);
                    ob_seq.push(seqs[k]);
                    ob_route.push(route.as_str());
                    ob_subject.push(event.subject.as_str());
                    ob_floor.push(*f);
                    routes.insert(route.clone());
                }
                k += 1;
            }
        }
        upsert_calls(&mut *tx, jobs, &accepted, &seqs).await?;
        if !ob_seq.is_empty() {
            sqlx::query(
                "INSERT INTO outbox (event_seq, route, subject, next_at)
                 SELECT t.seq, t.route, t.subject,
                        GREATEST(t.floor, COALESCE((SELECT max(o.next_at) FROM outbox o
                                                     WHERE o.route = t.route AND o.subject = t.subject), 0))
                   FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[])
                        WITH ORDINALITY AS t (seq, route, subject, floor, n)
                  ORDER BY t.n",
            )
            .bind(&ob_seq)
            .bind(&ob_route)
            .bind(&ob_subject)
            .bind(&ob_floor)
            .execute(&mut *tx)
            .await?;
        }
    }

    let own = |i: usize| -> Result<IngestOutcome, StoreError> {
        let key = (jobs[i].source.clone(), jobs[i].digest.to_vec());
        if payload_id.contains_key(&key) {
            Ok(IngestOutcome::Accepted(jobs[i].events.iter().map(|e| e.id.clone()).collect()))
        } else if let Some(ids) = earlier.get(&key) {
            Ok(IngestOutcome::Duplicate(ids.clone()))
        } else {
            // Accepted elsewhere and pruned before this batch could read it back.
            Err(StoreError::Unavailable("a concurrent duplicate vanished; try again".into()))
        }
    };
    Ok((0..jobs.len())
        .map(|i| {
            if leads_of[i] == i {
                own(i)
            } else {
                own(leads_of[i]).map(|o| match o {
                    IngestOutcome::Accepted(ids) | IngestOutcome::Duplicate(ids) => IngestOutcome::Duplicate(ids),
                })
            }
        })
        .collect())
}

/// Updates the summary row of every call the batch's events belong to: one row per subject
/// (a statement may not touch a row twice), in subject order (two batches lock shared calls in
/// one order). A call's status is its last accepted terminal event's, by `seq`, whichever
/// transaction commits first (`canonical::call::merge` reads the events the same way).
async fn upsert_calls(
    tx: &mut sqlx::PgConnection,
    jobs: &[&Ingest],
    accepted: &[(usize, i64)],
    seqs: &[i64],
) -> Result<(), StoreError> {
    struct Call<'a> {
        source: &'a str,
        first_at: i64,
        last_at: i64,
        status: Option<&'static str>,
        status_seq: Option<i64>,
        terminal_at: Option<i64>,
        events: i64,
        kinds: Vec<&'a str>,
    }
    let mut calls: BTreeMap<&str, Call<'_>> = BTreeMap::new();
    let mut k = 0;
    for &(i, _) in accepted {
        let job = jobs[i];
        for event in &job.events {
            let seq = seqs[k];
            k += 1;
            let call = calls.entry(event.subject.as_str()).or_insert(Call {
                source: job.source.as_str(),
                first_at: job.received_at,
                last_at: job.received_at,
                status: None,
                status_seq: None,
                terminal_at: None,
                events: 0,
                kinds: Vec::new(),
            });
            call.kinds.push(event.kind.as_str());
            call.first_at = call.first_at.min(job.received_at);
            call.last_at = call.last_at.max(job.received_at);
            call.events += 1;
            if let Some(status) = event.status {
                (call.status, call.status_seq) = (Some(status), Some(seq));
            }
            if TERMINAL_TYPES.contains(&event.kind.as_str()) {
                call.terminal_at = Some(call.terminal_at.map_or(job.received_at, |t| t.min(job.received_at)));
            }
        }
    }
    let subjects: Vec<&str> = calls.keys().copied().collect();
    let sources: Vec<&str> = calls.values().map(|c| c.source).collect();
    let first: Vec<i64> = calls.values().map(|c| c.first_at).collect();
    let last: Vec<i64> = calls.values().map(|c| c.last_at).collect();
    let status: Vec<Option<&str>> = calls.values().map(|c| c.status).collect();
    let status_seq: Vec<Option<i64>> = calls.values().map(|c| c.status_seq).collect();
    let terminal: Vec<Option<i64>> = calls.values().map(|c| c.terminal_at).collect();
    let events: Vec<i64> = calls.values().map(|c| c.events).collect();
    let rows = sqlx::query(
        "INSERT INTO calls (subject, source, first_at, last_at, status, status_seq, terminal_at, events)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int8[], $7::int8[], $8::int8[])
                AS u (subject, source, first_at, last_at, status, status_seq, terminal_at, events)
          ORDER BY subject
         ON CONFLICT (subject) DO UPDATE SET
             last_at = GREATEST(calls.last_at, excluded.last_at),
             status = CASE WHEN excluded.status_seq > COALESCE(calls.status_seq, -1) THEN excluded.status ELSE calls.status END,
             status_seq = GREATEST(calls.status_seq, excluded.status_seq),
             terminal_at = LEAST(calls.terminal_at, excluded.terminal_at),
             events = calls.events + excluded.events
         RETURNING subject, completed_at IS NOT NULL",
    )
    .bind(&subjects)
    .bind(&sources)
    .bind(&first)
    .bind(&last)
    .bind(&status)
    .bind(&status_seq)
    .bind(&terminal)
    .bind(&events)
    .fetch_all(&mut *tx)
    .await?;
    // Pieces of calls completed before them are noted (rare: a statement only then).
    let mut late_subjects = Vec::new();
    let mut late_kinds = Vec::new();
    for row in rows {
        let (subject, completed): (String, bool) = (row.try_get(0)?, row.try_get(1)?);
        if completed
            && let Some(call) = calls.get(subject.as_str())
            && let Some(late) = super::late_text(call.kinds.iter().copied())
        {
            late_subjects.push(subject);
            late_kinds.push(late);
        }
    }
    if !late_subjects.is_empty() {
        sqlx::query(
            "UPDATE calls SET late = COALESCE(calls.late || ',', '') || u.late
               FROM unnest($1::text[], $2::text[]) AS u (subject, late)
              WHERE calls.subject = u.subject AND length(COALESCE(calls.late, '')) < $3",
        )
        .bind(&late_subjects)
        .bind(&late_kinds)
        .bind(super::LATE_MAX_BYTES as i64)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

const CALL_COLUMNS: &str = "id, subject, source, first_at, last_at, status, terminal_at, events, completed_at, late";

fn call_summary_row(r: &sqlx::postgres::PgRow) -> Result<CallSummary, sqlx::Error> {
    Ok(CallSummary {
        id: r.try_get(0)?,
        subject: r.try_get(1)?,
        source: r.try_get(2)?,
        first_at: rfc3339(r.try_get(3)?),
        last_at: rfc3339(r.try_get(4)?),
        status: r.try_get(5)?,
        terminal_at: r.try_get::<Option<i64>, _>(6)?.map(rfc3339),
        events: r.try_get(7)?,
        completed_at: r.try_get::<Option<i64>, _>(8)?.map(rfc3339),
        late: super::late_list(r.try_get(9)?),
    })
}

/// A call's summary row.
async fn call_summary(tx: &mut sqlx::PgConnection, subject: &str) -> Result<Option<CallSummary>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {CALL_COLUMNS} FROM calls WHERE subject = $1")))
        .bind(subject)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(row.as_ref().map(call_summary_row).transpose()?)
}

/// A call's events in acceptance order, as many as [`events_that_fit`], and whether more
/// exist: their sizes are read first, then only the bodies that fit.
async fn call_events(tx: &mut sqlx::PgConnection, subject: &str) -> Result<(Vec<CallEvent>, bool), StoreError> {
    let sizes: Vec<(i64, i32)> =
        sqlx::query_as("SELECT seq, octet_length(body) FROM events WHERE subject = $1 ORDER BY seq LIMIT $2")
            .bind(subject)
            .bind(CALL_EVENTS_MAX as i64 + 1)
            .fetch_all(&mut *tx)
            .await?;
    let fit = events_that_fit(sizes.iter().map(|(_, size)| usize::try_from(*size).unwrap_or(usize::MAX)));
    let Some(&(last, _)) = fit.checked_sub(1).and_then(|i| sizes.get(i)) else { return Ok((Vec::new(), false)) };
    let rows = sqlx::query(
        "SELECT e.seq, e.id, e.type, p.received_at, e.body, e.routes
           FROM events e JOIN payloads p ON p.id = e.payload_id
          WHERE e.subject = $1 AND e.seq <= $2 ORDER BY e.seq",
    )
    .bind(subject)
    .bind(last)
    .fetch_all(&mut *tx)
    .await?;
    let events = rows
        .iter()
        .map(|r| {
            let routes: Option<String> = r.try_get(5)?;
            Ok(CallEvent {
                seq: r.try_get(0)?,
                id: r.try_get(1)?,
                kind: r.try_get(2)?,
                accepted_at: r.try_get(3)?,
                json: r.try_get(4)?,
                routes: routes.and_then(|text| serde_json::from_str(&text).ok()),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((events, sizes.len() > fit))
}

/// The outbox rows of a call's events up to `last_seq`, leased when their lease outlives
/// `now` (on the database's clock).
async fn call_outbox(
    tx: &mut sqlx::PgConnection,
    subject: &str,
    last_seq: i64,
    now: Millis,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT o.id, o.event_seq, o.route, o.attempts, o.next_at, COALESCE(o.lease_until > $3, false)
           FROM events e JOIN outbox o ON o.event_seq = e.seq
          WHERE e.subject = $1 AND e.seq <= $2",
    )
    .bind(subject)
    .bind(last_seq)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(OutboxRow {
                id: r.try_get(0)?,
                event_seq: r.try_get(1)?,
                route: r.try_get(2)?,
                attempts: i64::from(r.try_get::<i32, _>(3)?),
                next_at: r.try_get(4)?,
                leased: r.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// The dead letters of a call's events up to `last_seq`.
async fn call_dead_letters(
    tx: &mut sqlx::PgConnection,
    subject: &str,
    last_seq: i64,
) -> Result<Vec<DeadRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT d.id, d.event_seq, d.route, d.attempts, d.dead_at, d.last_error
           FROM events e JOIN dead_letters d ON d.event_seq = e.seq
          WHERE e.subject = $1 AND e.seq <= $2",
    )
    .bind(subject)
    .bind(last_seq)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(DeadRow {
                id: r.try_get(0)?,
                event_seq: r.try_get(1)?,
                route: r.try_get(2)?,
                attempts: i64::from(r.try_get::<i32, _>(3)?),
                dead_at: r.try_get(4)?,
                last_error: r.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// The tables an erasure deletes from, vacuumed after it.
const ERASE_VACUUM: &str = "VACUUM payloads, events, outbox, dead_letters, attempts, calls, quarantine, drift";

/// One erasure in `tx` (see `erase.rs` for what goes).
async fn erase_in(tx: &mut sqlx::PgConnection, erasure: &Erasure) -> Result<Erased, StoreError> {
    // A number's other notations its events hold are searched for in bodies too (`widened`).
    let (subjects, widened) = match erasure {
        Erasure::Call(subject) => (BTreeSet::from([subject.clone()]), None),
        Erasure::Number(number) => {
            // A scan of the events: those whose JSON holds a form as text, then their number fields.
            let rows = sqlx::query(
                "SELECT subject, body FROM events WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) f WHERE strpos(body, f) > 0)",
            )
            .bind(number.forms())
            .fetch_all(&mut *tx)
            .await?;
            let mut found = erase::Found::new(number);
            for row in rows {
                found.consider(row.try_get(0)?, row.try_get::<&str, _>(1)?);
            }
            found.finish()
        }
    };
    let erasure = widened.as_ref().unwrap_or(erasure);
    let names: Vec<String> = subjects.iter().cloned().collect();
    // The calls' rows first (in byte order of subject, as an ingest takes them): a completion in flight
    // holds its call's row until its `call.completed` is committed, and is waited for, so the
    // events read next include it; one that starts later finds no row and stores nothing.
    sqlx::query("SELECT 1 FROM calls WHERE subject = ANY($1) ORDER BY subject COLLATE \"C\" FOR UPDATE")
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query("SELECT seq, payload_id FROM events WHERE subject = ANY($1)")
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
    let mut seqs: Vec<i64> = Vec::with_capacity(rows.len());
    let mut payloads: BTreeSet<i64> = BTreeSet::new();
    for row in rows {
        seqs.push(row.try_get(0)?);
        payloads.insert(row.try_get(1)?);
    }
    let mut erased = Erased::default();
    let count = |done: sqlx::postgres::PgQueryResult| done.rows_affected() as usize;
    // Leased rows too: an attempt in flight finishes, and its outcome finds no row to record.
    erased.outbox_cancelled =
        count(sqlx::query("DELETE FROM outbox WHERE event_seq = ANY($1)").bind(&seqs).execute(&mut *tx).await?);
    erased.dead_letters =
        count(sqlx::query("DELETE FROM dead_letters WHERE event_seq = ANY($1)").bind(&seqs).execute(&mut *tx).await?);
    erased.log_rows = count(
        sqlx::query("DELETE FROM attempts WHERE event_seq = ANY($1) AND NOT test")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?,
    );
    erased.events = count(sqlx::query("DELETE FROM events WHERE seq = ANY($1)").bind(&seqs).execute(&mut *tx).await?);
    erased.calls =
        count(sqlx::query("DELETE FROM calls WHERE subject = ANY($1)").bind(&names).execute(&mut *tx).await?);
    for needle in erase::needles(erasure, &subjects) {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM payloads WHERE ($1::text IS NULL OR source = $1) AND position($2::bytea IN body) > 0",
        )
        .bind(&needle.source)
        .bind(&needle.bytes)
        .fetch_all(&mut *tx)
        .await?;
        payloads.extend(ids);
        erased.quarantined += count(
            sqlx::query(
                "DELETE FROM quarantine WHERE ($1::text IS NULL OR source = $1) AND position($2::bytea IN body) > 0",
            )
            .bind(&needle.source)
            .bind(&needle.bytes)
            .execute(&mut *tx)
            .await?,
        );
    }
    if let Erasure::Number(number) = erasure {
        erased.drift_rows = count(
            sqlx::query(
                "DELETE FROM drift WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) f WHERE strpos(value, f) > 0 OR strpos(example, f) > 0)",
            )
            .bind(number.forms())
            .execute(&mut *tx)
            .await?,
        );
    }
    let payloads: Vec<i64> = payloads.into_iter().collect();
    erased.payloads = count(
        sqlx::query(
            "DELETE FROM payloads p WHERE p.id = ANY($1) AND NOT EXISTS (SELECT 1 FROM events e WHERE e.payload_id = p.id)",
        )
        .bind(&payloads)
        .execute(&mut *tx)
        .await?,
    );
    // Another call's events came from these too: they and the redelivery key stay, the body goes.
    erased.payloads += count(
        sqlx::query("UPDATE payloads SET body = ''::bytea WHERE id = ANY($1) AND length(body) > 0")
            .bind(&payloads)
            .execute(&mut *tx)
            .await?,
    );
    Ok(erased)
}

/// Records outcomes in one transaction; returns the ids of those whose lease had been taken
/// over (dropped, not recorded).
async fn record_outcomes(
    shared: &Shared,
    replica: u64,
    outcomes: &[Outcome],
    now: Millis,
) -> Result<HashSet<i64>, StoreError> {
    let mut stale: HashSet<i64> = HashSet::new();
    let mut due: BTreeSet<String> = BTreeSet::new();
    let mut paused: Vec<String> = Vec::new();
    // A lost outcome only repeats a delivery: no need to wait for the flush.
    let mut tx = shared.pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?;

    // Deliveries, the common case, in one statement.
    let delivered: Vec<(i64, i64, bool, &Attempt)> = outcomes
        .iter()
        .filter_map(|o| match &o.kind {
            OutcomeKind::Delivered { recovered, attempt } => Some((o.id, o.lease.0, *recovered, attempt)),
            _ => None,
        })
        .collect();
    let mut released: BTreeSet<(String, String)> = BTreeSet::new();
    if !delivered.is_empty() {
        let ids: Vec<i64> = delivered.iter().map(|d| d.0).collect();
        let tokens: Vec<i64> = delivered.iter().map(|d| d.1).collect();
        let at: Vec<i64> = delivered.iter().map(|d| d.3.at).collect();
        let statuses: Vec<Option<i32>> = delivered.iter().map(|d| d.3.status.map(i32::from)).collect();
        let responses: Vec<Option<&str>> = delivered.iter().map(|d| d.3.response.as_deref()).collect();
        let durations: Vec<i64> = delivered.iter().map(|d| d.3.duration_ms).collect();
        // The rows leave the outbox and their successes enter the log in one statement.
        let rows = sqlx::query(
            "WITH gone AS (
                DELETE FROM outbox o USING unnest($1::int8[], $2::int8[]) AS d (id, tok)
                 WHERE o.id = d.id AND o.lease_token = d.tok
             RETURNING o.id, o.route, o.subject, o.event_seq, o.attempts + 1 AS n),
             logged AS (
                INSERT INTO attempts (delivery_id, route, event_seq, attempt, at, outcome, status, response, duration_ms)
                SELECT g.id, g.route, g.event_seq, g.n, a.at, 'success', a.status, a.response, a.duration_ms
                  FROM gone g
                  JOIN unnest($1::int8[], $3::int8[], $4::int4[], $5::text[], $6::int8[])
                       AS a (id, at, status, response, duration_ms) ON a.id = g.id)
             SELECT id, route, subject FROM gone",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(&at)
        .bind(&statuses)
        .bind(&responses)
        .bind(&durations)
        .fetch_all(&mut *tx)
        .await?;
        // Each delivered id, and whether its route had been failing; what is left after the
        // rows come back had lost its lease.
        let mut pending: HashMap<i64, bool> = delivered.iter().map(|d| (d.0, d.2)).collect();
        let mut recovered: BTreeSet<String> = BTreeSet::new();
        for row in rows {
            let id: i64 = row.try_get(0)?;
            let route: String = row.try_get(1)?;
            if pending.remove(&id) == Some(true) {
                recovered.insert(route.clone());
            }
            released.insert((route, row.try_get(2)?));
        }
        stale.extend(pending.into_keys());
        if !recovered.is_empty() {
            let routes: Vec<String> = recovered.into_iter().collect();
            sqlx::query(
                "UPDATE outbox SET next_at = $2
                  WHERE route = ANY($1) AND next_at > $2 AND (lease_until IS NULL OR lease_until <= $2)",
            )
            .bind(&routes)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }

    for outcome in outcomes {
        let (id, token) = (outcome.id, outcome.lease.0);
        match &outcome.kind {
            OutcomeKind::Delivered { .. } => {}
            OutcomeKind::Retry { next_at, attempt } => {
                let row = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = $3, lease_until = NULL, lease_token = NULL
                      WHERE id = $1 AND lease_token = $2
                  RETURNING attempts, route, subject, event_seq",
                )
                .bind(id)
                .bind(token)
                .bind(next_at)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    stale.insert(id);
                    continue;
                };
                let (n, route, subject, seq): (i32, String, String, i64) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                // Keep the call's later events behind this one.
                sqlx::query(
                    "UPDATE outbox SET next_at = $4 WHERE route = $1 AND subject = $2 AND id > $3 AND next_at < $4",
                )
                .bind(&route)
                .bind(&subject)
                .bind(id)
                .bind(next_at)
                .execute(&mut *tx)
                .await?;
                record_attempt(&mut tx, (id, &route, seq), n, LogOutcome::Failed, attempt).await?;
            }
            OutcomeKind::Gone { attempt } => {
                let row = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, lease_until = NULL, lease_token = NULL
                      WHERE id = $1 AND lease_token = $2
                  RETURNING attempts, route, event_seq",
                )
                .bind(id)
                .bind(token)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    stale.insert(id);
                    continue;
                };
                let (n, route, seq): (i32, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                record_attempt(&mut tx, (id, &route, seq), n, LogOutcome::Failed, attempt).await?;
                let control = control(replica, &route, true);
                pause_in(&mut tx, &route, Some("the route answered 410 Gone"), now, control).await?;
                paused.push(route);
            }
            OutcomeKind::Dead { attempt } => {
                let row = sqlx::query(
                    "DELETE FROM outbox WHERE id = $1 AND lease_token = $2
                  RETURNING event_seq, route, subject, attempts + 1",
                )
                .bind(id)
                .bind(token)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    stale.insert(id);
                    continue;
                };
                let (seq, route, subject, n): (i64, String, String, i32) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                let last_error = attempt.error.clone().or_else(|| attempt.status.map(|s| format!("HTTP {s}")));
                sqlx::query(
                    "INSERT INTO dead_letters (id, event_seq, route, subject, attempts, dead_at, last_error)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id)
                .bind(seq)
                .bind(&route)
                .bind(&subject)
                .bind(n)
                .bind(attempt.at)
                .bind(&last_error)
                .execute(&mut *tx)
                .await?;
                record_attempt(&mut tx, (id, &route, seq), n, LogOutcome::Dead, attempt).await?;
                released.insert((route, subject));
            }
        }
    }
    if !released.is_empty() {
        let (routes, subjects): (Vec<String>, Vec<String>) = released.into_iter().unzip();
        sqlx::query(RELEASE_FOLLOWERS).bind(&routes).bind(&subjects).bind(now).execute(&mut *tx).await?;
        due.extend(routes);
    }
    tx.commit().await?;
    if !stale.is_empty() {
        tracing::warn!(stale = stale.len(), "dropped outcomes whose lease had expired and been taken over");
    }
    shared.counts_changed();
    shared.due(&due);
    for route in paused {
        let _ = shared.notices.send(Notice::Paused { route, paused: true });
    }
    Ok(stale)
}

/// Most outcomes one completer transaction records.
const MAX_OUTCOMES: usize = 512;

struct CompleteJob {
    outcomes: Vec<Outcome>,
    now: Millis,
    reply: oneshot::Sender<Result<Completed, StoreError>>,
}

/// Records the outcomes of every attempt waiting, in one transaction: under load a route's
/// finished attempts (and every route's) share one commit instead of one each. One task, so
/// two outcome transactions never touch one call's rows at once.
async fn completer(shared: Shared, replica: u64, mut rx: mpsc::Receiver<CompleteJob>) {
    while let Some(first) = rx.recv().await {
        let mut count = first.outcomes.len();
        let mut jobs = vec![first];
        while count < MAX_OUTCOMES {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.outcomes.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let now = jobs.iter().map(|j| j.now).max().unwrap_or_else(now_ms);
        // The outcomes move into one list; each job keeps its range of it and its reply.
        let mut all: Vec<Outcome> = Vec::with_capacity(count);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            let start = all.len();
            all.extend(job.outcomes);
            replies.push((start..all.len(), job.now, job.reply));
        }
        match record_outcomes(&shared, replica, &all, now).await {
            Ok(stale) => {
                for (range, _, reply) in replies {
                    let stale = all[range].iter().filter(|o| stale.contains(&o.id)).count();
                    let _ = reply.send(Ok(Completed { stale }));
                }
            }
            Err(e) if replies.len() > 1 && matches!(e, StoreError::Backend(_) | StoreError::Corrupt(_)) => {
                // Only the bad job should fail: record each on its own.
                tracing::warn!(error = %e, jobs = replies.len(), "an outcome batch failed; recording its jobs one by one");
                for (range, now, reply) in replies {
                    let result = record_outcomes(&shared, replica, &all[range], now)
                        .await
                        .map(|stale| Completed { stale: stale.len() });
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                for (_, _, reply) in replies {
                    let _ = reply.send(Err(copy(&e)));
                }
            }
        }
    }
}

/// Leases heads of line: due, not leased (or the lease expired), no older row of the call in
/// the outbox and no row of the call under a live lease, the route not paused. The CTE is
/// `MATERIALIZED` so exactly the rows chosen are locked.
const CLAIM: &str = "
WITH c AS MATERIALIZED (
  SELECT o.id FROM outbox o
   WHERE o.route = $1 AND o.next_at <= $2
     AND (o.lease_until IS NULL OR o.lease_until <= $2)
     AND NOT EXISTS (SELECT 1 FROM paused_routes pr WHERE pr.route = $1)
     AND NOT EXISTS (SELECT 1 FROM outbox p
                      WHERE p.route = o.route AND p.subject = o.subject
                        AND (p.id < o.id OR p.lease_until > $2))
   ORDER BY o.next_at, o.id
   LIMIT $3
   FOR UPDATE OF o SKIP LOCKED),
l AS (UPDATE outbox o SET lease_until = $4, lease_token = $5
        FROM c WHERE o.id = c.id
      RETURNING o.id, o.event_seq, o.subject, o.attempts, o.next_at)
SELECT l.id, l.subject, l.attempts, e.id, e.body
  FROM l JOIN events e ON e.seq = l.event_seq
 ORDER BY l.next_at, l.id";

/// The earliest future time a head of `route` falls due or its lease expires. Heads are the
/// oldest row of each call; a follower waits for its head's outcome (a notice), not a time.
const NEXT_DUE: &str = "
SELECT min(t) FROM (
  SELECT CASE WHEN o.lease_until > $2 THEN o.lease_until ELSE o.next_at END AS t
    FROM outbox o
   WHERE o.route = $1
     AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.route = o.route AND p.subject = o.subject AND p.id < o.id)
) h
 WHERE t > $2";

/// After the head of a call left the outbox, its next events no longer wait for its retries.
const RELEASE_FOLLOWERS: &str = "
UPDATE outbox o SET next_at = $3
  FROM unnest($1::text[], $2::text[]) AS r (route, subject)
 WHERE o.route = r.route AND o.subject = r.subject
   AND o.next_at > $3 AND o.attempts = 0 AND o.lease_until IS NULL";

/// Keeps attempt `n` of a delivery (its id, route and event) in the delivery log.
async fn record_attempt(
    tx: &mut sqlx::PgConnection,
    (id, route, seq): (i64, &str, i64),
    n: i32,
    outcome: LogOutcome,
    a: &Attempt,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO attempts (delivery_id, attempt, at, status, error, response, duration_ms, route, event_seq, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(n)
    .bind(a.at)
    .bind(a.status.map(i32::from))
    .bind(&a.error)
    .bind(&a.response)
    .bind(a.duration_ms)
    .bind(route)
    .bind(seq)
    .bind(outcome.as_str())
    .execute(tx)
    .await?;
    Ok(())
}

/// The columns of a delivery log entry, over `attempts a LEFT JOIN events e` (a test send has
/// no event row and keeps its own id, type and subject).
const LOG_COLUMNS: &str = "a.id, a.route, a.delivery_id, COALESCE(e.id, a.event_id), COALESCE(e.type, a.type),
       COALESCE(e.subject, a.subject), a.attempt, a.outcome, a.test, a.at, a.status, a.duration_ms, a.response, a.error";

fn log_row(r: &sqlx::postgres::PgRow) -> Result<LogEntry, sqlx::Error> {
    Ok(LogEntry {
        id: r.try_get(0)?,
        route: r.try_get(1)?,
        delivery_id: r.try_get(2)?,
        event_id: r.try_get(3)?,
        kind: r.try_get(4)?,
        subject: r.try_get(5)?,
        attempt: i64::from(r.try_get::<i32, _>(6)?),
        outcome: LogOutcome::parse(r.try_get(7)?),
        test: r.try_get(8)?,
        at: rfc3339(r.try_get(9)?),
        status: status(r.try_get(10)?),
        duration_ms: r.try_get(11)?,
        response: r.try_get(12)?,
        error: r.try_get(13)?,
    })
}

async fn pause_in(
    tx: &mut sqlx::PgConnection,
    route: &str,
    reason: Option<&str>,
    now: Millis,
    control: String,
) -> Result<(), StoreError> {
    match reason {
        Some(reason) => {
            sqlx::query(
                "INSERT INTO paused_routes (route, since, reason) VALUES ($1, $2, $3) ON CONFLICT (route) DO NOTHING",
            )
            .bind(route)
            .bind(now)
            .bind(reason)
            .execute(&mut *tx)
            .await?
        }
        None => sqlx::query("DELETE FROM paused_routes WHERE route = $1").bind(route).execute(&mut *tx).await?,
    };
    // Inside the transaction: the other replicas hear it exactly when it commits.
    sqlx::query("SELECT pg_notify($1, $2)").bind(CONTROL_CHANNEL).bind(control).execute(&mut *tx).await?;
    Ok(())
}

fn limit(filter: &Filter) -> i64 {
    filter.limit.map_or(100, |l| l.clamp(1, 1000)) as i64
}

fn status(v: Option<i32>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

fn dead_letter_row(r: &sqlx::postgres::PgRow) -> Result<DeadLetter, sqlx::Error> {
    Ok(DeadLetter {
        id: r.try_get(0)?,
        route: r.try_get(1)?,
        event_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        subject: r.try_get(4)?,
        attempts: i64::from(r.try_get::<i32, _>(5)?),
        dead_at: rfc3339(r.try_get(6)?),
        last_error: r.try_get(7)?,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn ingest(&self, mut ingest: Ingest) -> Result<IngestOutcome, StoreError> {
        ingest.received_at = self.clock.on_db(ingest.received_at);
        let (reply, rx) = oneshot::channel();
        self.jobs.send(IngestJob { ingest, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn quarantine(&self, q: Quarantined) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO quarantine (source, vendor, received_at, status, reason, details, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&q.source)
        .bind(&q.vendor)
        .bind(self.clock.on_db(q.received_at))
        .bind(i32::from(q.status))
        .bind(&q.reason)
        .bind(&q.details)
        .bind(&q.body)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn claim(&self, route: &str, now: Millis, limit: usize, lease_until: Millis) -> Result<Claimed, StoreError> {
        let (now, lease_until) = (self.clock.on_db(now), self.clock.on_db(lease_until));
        let paused: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM paused_routes WHERE route = $1)")
            .bind(route)
            .fetch_one(self.pool())
            .await?;
        if paused {
            return Ok(Claimed { deliveries: Vec::new(), paused: true });
        }
        let lease = Lease::new();
        // A lost lease only repeats a delivery: no need to wait for the flush. Bitmap scans
        // off: without fresh statistics (a young or busy outbox, autovacuum behind) the planner
        // picks bitmap heap scans for the heads-of-line probe; measured under the saturated
        // bench, a claim took 45 ms with them and 0.5–3 ms with index scans.
        let mut tx = self
            .pool()
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_bitmapscan = off")
            .await?;
        let rows = sqlx::query(CLAIM)
            .bind(route)
            .bind(now)
            .bind(limit as i64)
            .bind(lease_until)
            .bind(lease.0)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let deliveries = rows
            .iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.try_get(0)?,
                    route: route.to_owned(),
                    subject: r.try_get(1)?,
                    attempts: u32::try_from(r.try_get::<i32, _>(2)?).unwrap_or(0),
                    event_id: r.try_get(3)?,
                    json: r.try_get(4)?,
                    lease,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Claimed { deliveries, paused: false })
    }

    async fn next_due(&self, route: &str, after: Millis) -> Result<Option<Millis>, StoreError> {
        let at: Option<Millis> =
            sqlx::query_scalar(NEXT_DUE).bind(route).bind(self.clock.on_db(after)).fetch_one(self.pool()).await?;
        Ok(at.map(|t| self.clock.on_local(t)))
    }

    async fn complete(&self, mut outcomes: Vec<Outcome>, now: Millis) -> Result<Completed, StoreError> {
        if outcomes.is_empty() {
            return Ok(Completed { stale: 0 });
        }
        let now = self.clock.on_db(now);
        for outcome in &mut outcomes {
            match &mut outcome.kind {
                OutcomeKind::Retry { next_at, attempt } => {
                    *next_at = self.clock.on_db(*next_at);
                    attempt.at = self.clock.on_db(attempt.at);
                }
                OutcomeKind::Delivered { attempt, .. }
                | OutcomeKind::Dead { attempt }
                | OutcomeKind::Gone { attempt } => attempt.at = self.clock.on_db(attempt.at),
            }
        }
        let (reply, rx) = oneshot::channel();
        self.completions.send(CompleteJob { outcomes, now, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn release(&self, leases: Vec<(i64, Lease)>) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let (ids, tokens): (Vec<i64>, Vec<i64>) = leases.into_iter().map(|(id, lease)| (id, lease.0)).unzip();
        let routes: Vec<String> = sqlx::query_scalar(
            "UPDATE outbox o SET lease_until = NULL, lease_token = NULL
               FROM unnest($1::int8[], $2::int8[]) AS d (id, tok)
              WHERE o.id = d.id AND o.lease_token = d.tok
          RETURNING o.route",
        )
        .bind(&ids)
        .bind(&tokens)
        .fetch_all(self.pool())
        .await?;
        let routes: BTreeSet<String> = routes.into_iter().collect();
        self.shared.due(&routes);
        Ok(())
    }

    async fn discard_backlog(&self, route: &str, now: Millis) -> Result<usize, StoreError> {
        // A row a claim is leasing right now is locked: the delete waits for that claim and
        // then sees its live lease, so it never takes a row out from under an attempt.
        let deleted = sqlx::query("DELETE FROM outbox WHERE route = $1 AND (lease_until IS NULL OR lease_until <= $2)")
            .bind(route)
            .bind(self.clock.on_db(now))
            .execute(self.pool())
            .await?
            .rows_affected();
        self.shared.counts_changed();
        Ok(deleted as usize)
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        if let Ok(cached) = self.shared.counts.lock()
            && let Some((at, counts)) = cached.as_ref()
            && at.elapsed() < self.options.counts_ttl
        {
            return Ok(counts.clone());
        }
        let generation = self.shared.counts_generation.load(std::sync::atomic::Ordering::SeqCst);
        let group = |sql: &'static str| async move {
            let rows = sqlx::query(sql).fetch_all(self.pool()).await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<BTreeMap<String, i64>, sqlx::Error>>()
        };
        let counts = Counts {
            backlog: group("SELECT route, count(*) FROM outbox GROUP BY route").await?,
            dead: group("SELECT route, count(*) FROM dead_letters GROUP BY route").await?,
        };
        if let Ok(mut cached) = self.shared.counts.lock()
            && self.shared.counts_generation.load(std::sync::atomic::Ordering::SeqCst) == generation
        {
            *cached = Some((Instant::now(), counts.clone()));
        }
        Ok(counts)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.jobs.is_closed() {
            return Err(StoreError::Closed);
        }
        // A real, durable write: it fails on a full disk or a read-only standby.
        sqlx::query(
            "INSERT INTO health (id, at, probe) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET at = excluded.at, probe = excluded.probe",
        )
        .bind(now_ms())
        .bind(vec![0u8; 4096])
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<Pause>, StoreError> {
        let rows =
            sqlx::query("SELECT route, since, reason FROM paused_routes ORDER BY route").fetch_all(self.pool()).await?;
        Ok(rows
            .iter()
            .map(|r| Ok(Pause { route: r.try_get(0)?, since: rfc3339(r.try_get(1)?), reason: r.try_get(2)? }))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn set_paused(&self, route: &str, reason: Option<&str>, now: Millis) -> Result<(), StoreError> {
        let now = self.clock.on_db(now);
        let mut tx = self.pool().begin().await?;
        pause_in(&mut tx, route, reason, now, self.control(route, reason.is_some())).await?;
        tx.commit().await?;
        let _ = self.shared.notices.send(Notice::Paused { route: route.to_owned(), paused: reason.is_some() });
        if reason.is_none() {
            self.shared.due([&route.to_owned()]);
        }
        Ok(())
    }

    async fn dead_letters(&self, filter: &Filter) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.route, e.id, e.type, d.subject, d.attempts, d.dead_at, d.last_error
               FROM dead_letters d JOIN events e ON e.seq = d.event_seq
              WHERE ($1::int8 IS NULL OR d.id = $1) AND ($2::text IS NULL OR d.route = $2)
                AND ($3::int8 IS NULL OR d.dead_at >= $3)
                AND ($4::int8 IS NULL OR d.id < $4) AND ($5::int8 IS NULL OR d.id > $5)
              ORDER BY d.id DESC LIMIT $6",
        )
        .bind(filter.id)
        .bind(&filter.name)
        .bind(filter.since)
        .bind(filter.before_id)
        .bind(filter.after_id)
        .bind(limit(filter))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(dead_letter_row).collect::<Result<_, _>>()?)
    }

    async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterDetail>, StoreError> {
        let row = sqlx::query(
            "SELECT d.id, d.route, e.id, e.type, d.subject, d.attempts, d.dead_at, d.last_error, e.body, d.event_seq
               FROM dead_letters d JOIN events e ON e.seq = d.event_seq WHERE d.id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let summary = dead_letter_row(&row)?;
        let body: String = row.try_get(8)?;
        let seq: i64 = row.try_get(9)?;
        // Through its event (`attempts_event`): the log has no index by delivery.
        let rows = sqlx::query(
            "SELECT attempt, at, status, error, response, duration_ms FROM attempts
              WHERE event_seq = $1 AND delivery_id = $2 ORDER BY id",
        )
        .bind(seq)
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let attempts_log = rows
            .iter()
            .map(|r| {
                Ok(AttemptRecord {
                    attempt: i64::from(r.try_get::<i32, _>(0)?),
                    at: rfc3339(r.try_get(1)?),
                    status: status(r.try_get(2)?),
                    error: r.try_get(3)?,
                    response: r.try_get(4)?,
                    duration_ms: r.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let event = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        Ok(Some(DeadLetterDetail { summary, event, attempts_log }))
    }

    async fn replay_dead_letters(&self, filter: &Filter, now: Millis) -> Result<Vec<(i64, String)>, StoreError> {
        let now = self.clock.on_db(now);
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(
            "DELETE FROM dead_letters
              WHERE ($1::int8 IS NULL OR id = $1) AND ($2::text IS NULL OR route = $2)
                AND ($3::int8 IS NULL OR dead_at >= $3)
                AND ($4::int8 IS NULL OR id < $4) AND ($5::int8 IS NULL OR id > $5)
          RETURNING id, event_seq, route, subject",
        )
        .bind(filter.id)
        .bind(&filter.name)
        .bind(filter.since)
        .bind(filter.before_id)
        .bind(filter.after_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut routes = Vec::with_capacity(rows.len());
        let mut subjects = Vec::with_capacity(rows.len());
        for r in &rows {
            ids.push(r.try_get::<i64, _>(0)?);
            seqs.push(r.try_get::<i64, _>(1)?);
            routes.push(r.try_get::<String, _>(2)?);
            subjects.push(r.try_get::<String, _>(3)?);
        }
        if !ids.is_empty() {
            // The original id puts it back at its place in the call's queue.
            sqlx::query(
                "INSERT INTO outbox (id, event_seq, route, subject, attempts, next_at)
                 SELECT id, seq, route, subject, 0, $5 FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[])
                        AS t (id, seq, route, subject)",
            )
            .bind(&ids)
            .bind(&seqs)
            .bind(&routes)
            .bind(&subjects)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let touched: BTreeSet<String> = routes.iter().cloned().collect();
        if !touched.is_empty() {
            self.shared.counts_changed();
            self.shared.due(&touched);
        }
        Ok(ids.into_iter().zip(routes).collect())
    }

    async fn quarantined(&self, filter: &Filter, with_body: bool) -> Result<Vec<QuarantineItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, source, vendor, received_at, status, reason, details, body FROM quarantine
              WHERE ($1::int8 IS NULL OR id = $1) AND ($2::text IS NULL OR source = $2)
                AND ($3::int8 IS NULL OR received_at >= $3)
                AND ($4::int8 IS NULL OR id < $4) AND ($5::int8 IS NULL OR id > $5)
              ORDER BY id DESC LIMIT $6",
        )
        .bind(filter.id)
        .bind(&filter.name)
        .bind(filter.since)
        .bind(filter.before_id)
        .bind(filter.after_id)
        .bind(limit(filter))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let details: String = r.try_get(6)?;
                let body: Vec<u8> = r.try_get(7)?;
                Ok(QuarantineItem {
                    id: r.try_get(0)?,
                    source: r.try_get(1)?,
                    vendor: r.try_get(2)?,
                    received_at: rfc3339(r.try_get(3)?),
                    status: status(r.try_get(4)?).unwrap_or_default(),
                    reason: r.try_get(5)?,
                    details: serde_json::from_str(&details).unwrap_or_default(),
                    body: with_body.then(|| String::from_utf8_lossy(&body).into_owned()),
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn quarantined_raw(&self, filter: &Filter) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, source, body FROM quarantine
              WHERE ($1::int8 IS NULL OR id = $1) AND ($2::text IS NULL OR source = $2)
                AND ($3::int8 IS NULL OR received_at >= $3)
                AND ($4::int8 IS NULL OR id < $4) AND ($5::int8 IS NULL OR id > $5)
              ORDER BY id LIMIT $6",
        )
        .bind(filter.id)
        .bind(&filter.name)
        .bind(filter.since)
        .bind(filter.before_id)
        .bind(filter.after_id)
        .bind(filter.limit.map_or(10_000, |l| l as i64))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn release_quarantined(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM quarantine WHERE id = $1").bind(id).execute(self.pool()).await?;
        Ok(())
    }

    async fn erase(&self, erasure: Erasure, _now: Millis) -> Result<Erased, StoreError> {
        let mut tx = self.pool().begin().await?;
        let erased = erase_in(&mut tx, &erasure).await?;
        tx.commit().await?;
        self.shared.counts_changed();
        // Dead row versions go; VACUUM does not zero the free space it leaves in a page, nor
        // the WAL: `VACUUM FULL` rewrites the tables (README, "Erasure").
        if let Err(e) = sqlx::raw_sql(ERASE_VACUUM).execute(self.pool()).await {
            tracing::warn!(error = %e, "VACUUM after an erasure failed; autovacuum will remove the dead rows later.");
        }
        Ok(erased)
    }

    async fn prune(&self, retention_before: Millis, dedup_before: Millis) -> Result<Pruned, StoreError> {
        let (retention_before, dedup_before) = (self.clock.on_db(retention_before), self.clock.on_db(dedup_before));
        let mut tx = self.pool().begin().await?;
        // One pruner at a time across replicas; the lock ends with the transaction (or crash).
        let ours: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PRUNE_LOCK).fetch_one(&mut *tx).await?;
        if !ours {
            return Ok(Pruned::default());
        }
        // Each statement deletes one chunk of what is older than its cutoff.
        async fn chunk(tx: &mut sqlx::PgConnection, sql: &'static str, before: Millis) -> Result<usize, StoreError> {
            let done = sqlx::query(sql).bind(before).bind(PRUNE_CHUNK).execute(tx).await?.rows_affected();
            Ok(done as usize)
        }
        // The log first: an event is kept while an attempt of it is.
        let attempts = chunk(
            &mut tx,
            "DELETE FROM attempts WHERE id IN (
                SELECT a.id FROM attempts a
                 WHERE a.at < $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = a.delivery_id)
                   AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = a.delivery_id)
                 LIMIT $2)",
            retention_before,
        )
        .await?;
        let events = chunk(
            &mut tx,
            "DELETE FROM events WHERE seq IN (
                SELECT e.seq FROM events e JOIN payloads p ON p.id = e.payload_id
                 WHERE p.received_at < $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_seq = e.seq)
                   AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_seq = e.seq)
                   AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.event_seq = e.seq)
                 LIMIT $2)",
            retention_before,
        )
        .await?;
        let payloads = chunk(
            &mut tx,
            "DELETE FROM payloads WHERE id IN (
                SELECT p.id FROM payloads p
                 WHERE p.received_at < $1 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.payload_id = p.id)
                 LIMIT $2)",
            dedup_before,
        )
        .await?;
        let quarantine = chunk(
            &mut tx,
            "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE received_at < $1 LIMIT $2)",
            retention_before,
        )
        .await?;
        // Bounded by the cap of rows per source.
        let drift = sqlx::query("DELETE FROM drift WHERE last_seen < $1")
            .bind(retention_before)
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
        let calls = chunk(
            &mut tx,
            "DELETE FROM calls WHERE id IN (
                SELECT c.id FROM calls c
                 WHERE c.last_at < $1 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.subject = c.subject)
                 LIMIT $2)",
            retention_before,
        )
        .await?;
        tx.commit().await?;
        Ok(Pruned { events, payloads, attempts, quarantine, drift, calls })
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        self.shared.notices.subscribe()
    }

    async fn record_drift(&self, mut counts: Vec<DriftCount>, max_rows: usize) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        for c in &mut counts {
            (c.first_seen, c.last_seen) = (self.clock.on_db(c.first_seen), self.clock.on_db(c.last_seen));
        }
        let column = |f: fn(&DriftCount) -> &String| counts.iter().map(|c| f(c).clone()).collect::<Vec<String>>();
        let keys = (
            column(|c| &c.source),
            column(|c| &c.vendor_event),
            column(|c| &c.kind),
            column(|c| &c.path),
            column(|c| &c.value),
        );
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        let stored = sqlx::query(
            "SELECT d.source, d.vendor_event, d.kind, d.path, d.value FROM drift d
               JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                    AS i(source, vendor_event, kind, path, value) USING (source, vendor_event, kind, path, value)",
        )
        .bind(&keys.0)
        .bind(&keys.1)
        .bind(&keys.2)
        .bind(&keys.3)
        .bind(&keys.4)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let rows =
            sqlx::query("SELECT source, count(*) FROM drift WHERE source = ANY($1) AND kind <> $2 GROUP BY source")
                .bind(&keys.0)
                .bind(DRIFT_OVERFLOW)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?;
        let mut upserts = admit_drift(counts, &stored, &rows, max_rows);
        // One lock order for every replica: two flushes of the same keys never deadlock.
        upserts.sort_by_key(|c| c.key());
        let text = |f: fn(&DriftCount) -> &String| upserts.iter().map(|c| f(c).clone()).collect::<Vec<String>>();
        let number = |f: fn(&DriftCount) -> i64| upserts.iter().map(f).collect::<Vec<i64>>();
        sqlx::query(
            "INSERT INTO drift (source, vendor_event, kind, path, value, count, first_seen, last_seen, example)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::int8[], $7::int8[], $8::int8[], $9::text[])
             ON CONFLICT (source, vendor_event, kind, path, value) DO UPDATE SET
                 count = drift.count + EXCLUDED.count,
                 first_seen = LEAST(drift.first_seen, EXCLUDED.first_seen),
                 last_seen = GREATEST(drift.last_seen, EXCLUDED.last_seen),
                 example = CASE WHEN EXCLUDED.last_seen >= drift.last_seen THEN EXCLUDED.example ELSE drift.example END",
        )
        .bind(text(|c| &c.source))
        .bind(text(|c| &c.vendor_event))
        .bind(text(|c| &c.kind))
        .bind(text(|c| &c.path))
        .bind(text(|c| &c.value))
        .bind(number(|c| c.count))
        .bind(number(|c| c.first_seen))
        .bind(number(|c| c.last_seen))
        .bind(text(|c| &c.example))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn drift(&self, filter: &Filter) -> Result<Vec<DriftCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, vendor_event, kind, path, value, count, first_seen, last_seen, example FROM drift
              WHERE ($1::text IS NULL OR source = $1) AND ($2::int8 IS NULL OR last_seen >= $2)
              ORDER BY last_seen DESC, source, vendor_event, kind, path, value LIMIT $3",
        )
        .bind(&filter.name)
        .bind(filter.since.map(|t| self.clock.on_db(t)))
        .bind(limit(filter))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(DriftCount {
                    source: r.try_get(0)?,
                    vendor_event: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    path: r.try_get(3)?,
                    value: r.try_get(4)?,
                    count: r.try_get(5)?,
                    first_seen: self.clock.on_local(r.try_get(6)?),
                    last_seen: self.clock.on_local(r.try_get(7)?),
                    example: r.try_get(8)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn send_tail(&self, payloads: Vec<String>) -> Result<(), StoreError> {
        if let Some(long) = payloads.iter().find(|p| p.len() > TAIL_PAYLOAD_MAX) {
            return Err(StoreError::Backend(format!(
                "a tail payload of {} bytes is over the {TAIL_PAYLOAD_MAX} bytes a notification carries",
                long.len()
            )));
        }
        let marked: Vec<String> = payloads.iter().map(|p| format!("{:x} {p}", self.replica)).collect();
        sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) p")
            .bind(TAIL_CHANNEL)
            .bind(&marked)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    fn tail_feed(&self) -> Option<broadcast::Receiver<TailFeed>> {
        Some(self.shared.tail.subscribe())
    }

    async fn delivery_log(&self, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM attempts a LEFT JOIN events e ON e.seq = a.event_seq
              WHERE ($1::text IS NULL OR a.route = $1) AND ($2::int8 IS NULL OR a.at >= $2)
                AND ($3::int8 IS NULL OR a.id < $3) AND ($4::text IS NULL OR COALESCE(e.subject, a.subject) = $4)
                AND ($5::text IS NULL OR a.outcome = $5) AND ($6::bool IS NULL OR a.test = $6)
              ORDER BY a.id DESC LIMIT $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&filter.route)
            .bind(filter.since.map(|t| self.clock.on_db(t)))
            .bind(filter.before_id)
            .bind(&filter.subject)
            .bind(filter.outcome.map(LogOutcome::as_str))
            .bind(filter.test)
            .bind(filter.limit.map_or(100, |l| l.clamp(1, 1000)) as i64)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(log_row).collect::<Result<_, _>>()?)
    }

    async fn event(&self, id: &str, now: Millis) -> Result<Option<EventDetail>, StoreError> {
        let now = self.clock.on_db(now);
        // One snapshot, so a delivery never shows in two states (or none) at once.
        let mut tx = self.pool().begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let row = sqlx::query(
            "SELECT x.* FROM generate_series((SELECT max(seq) FROM events) >> 10, (SELECT min(seq) FROM events) >> 10, -1) AS b (k)
              CROSS JOIN LATERAL (
                SELECT e.seq, e.id, e.type, e.subject, e.body, p.received_at
                  FROM events e JOIN payloads p ON p.id = e.payload_id
                 WHERE (e.seq >> 10) = b.k AND e.id = $1) x
              LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let seq: i64 = row.try_get(0)?;
        let body: String = row.try_get(4)?;
        let mut detail = EventDetail {
            id: row.try_get(1)?,
            kind: row.try_get(2)?,
            subject: row.try_get(3)?,
            received_at: rfc3339(row.try_get(5)?),
            event: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            deliveries: Vec::new(),
        };
        let outbox = sqlx::query("SELECT id, route, attempts, next_at, lease_until FROM outbox WHERE event_seq = $1")
            .bind(seq)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                let lease: Option<Millis> = r.try_get(4)?;
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    i64::from(r.try_get::<i32, _>(2)?),
                    r.try_get(3)?,
                    lease.filter(|until| *until > now),
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let dead = sqlx::query("SELECT id, route, attempts, dead_at FROM dead_letters WHERE event_seq = $1")
            .bind(seq)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, i64::from(r.try_get::<i32, _>(2)?), r.try_get(3)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let log = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LOG_COLUMNS} FROM attempts a LEFT JOIN events e ON e.seq = a.event_seq
              WHERE a.event_seq = $1 ORDER BY a.id"
        )))
        .bind(seq)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(log_row)
        .collect::<Result<Vec<_>, _>>()?;
        let paused: Vec<String> = sqlx::query_scalar("SELECT route FROM paused_routes").fetch_all(&mut *tx).await?;
        tx.commit().await?;
        detail.deliveries = super::assemble(outbox, dead, log, &paused);
        Ok(Some(detail))
    }

    async fn record_test(&self, send: TestSend) -> Result<i64, StoreError> {
        let TestSend { route, event_id, kind, subject, success, attempt: a } = send;
        let outcome = if success { LogOutcome::Success } else { LogOutcome::Failed };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO attempts (delivery_id, route, event_seq, attempt, at, outcome, test, status, error,
                                   response, duration_ms, event_id, type, subject)
             VALUES (NULL, $1, NULL, 1, $2, $3, true, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(&route)
        .bind(self.clock.on_db(a.at))
        .bind(outcome.as_str())
        .bind(a.status.map(i32::from))
        .bind(&a.error)
        .bind(&a.response)
        .bind(a.duration_ms)
        .bind(&event_id)
        .bind(&kind)
        .bind(&subject)
        .fetch_one(self.pool())
        .await?;
        Ok(id)
    }

    async fn complete_call(&self, subject: &str, events: i64, mut ingest: Ingest) -> Result<bool, StoreError> {
        ingest.received_at = self.clock.on_db(ingest.received_at);
        let mut tx = self.pool().begin().await?;
        // Locks the call's row: a replica racing this one waits here, then finds it completed;
        // an ingest of the call's next piece committed first changed `events`.
        let marked = sqlx::query(
            "UPDATE calls SET completed_at = $1 WHERE subject = $2 AND completed_at IS NULL AND events = $3",
        )
        .bind(ingest.received_at)
        .bind(subject)
        .bind(events)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked == 0 {
            return Ok(false);
        }
        let mut routes = BTreeSet::new();
        match ingest_in(&mut tx, &[&ingest], &mut routes).await?.pop() {
            Some(Ok(IngestOutcome::Accepted(_))) => {}
            Some(Err(e)) => return Err(e),
            _ => return Err(StoreError::Backend("a call.completed was stored twice".into())),
        }
        tx.commit().await?;
        if !routes.is_empty() {
            self.shared.counts_changed();
            self.shared.due(&routes);
        }
        Ok(true)
    }

    async fn settling(&self, before: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT subject FROM calls WHERE completed_at IS NULL AND terminal_at < $1 ORDER BY terminal_at LIMIT $2",
        )
        .bind(self.clock.on_db(before))
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    async fn calls(&self, filter: &CallFilter) -> Result<Vec<CallSummary>, StoreError> {
        let (in_progress, status) = match &filter.status {
            None => (false, None),
            Some(CallStatus::InProgress) => (true, None),
            Some(CallStatus::Is(status)) => (false, Some(status.as_str())),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CALL_COLUMNS} FROM calls
              WHERE ($1::text IS NULL OR source = $1) AND ($2::int8 IS NULL OR first_at >= $2)
                AND (NOT $3 OR status IS NULL) AND ($4::text IS NULL OR status = $4)
                AND ($5::int8 IS NULL OR id < $5)
              ORDER BY id DESC LIMIT $6"
        )))
        .bind(&filter.source)
        .bind(filter.since.map(|t| self.clock.on_db(t)))
        .bind(in_progress)
        .bind(status)
        .bind(filter.before_id)
        .bind(filter.limit.map_or(100, |l| l.clamp(1, 1000)) as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(call_summary_row).collect::<Result<_, _>>()?)
    }

    async fn call(&self, subject: &str, now: Millis) -> Result<Option<StoredCall>, StoreError> {
        let now = self.clock.on_db(now);
        // One snapshot: the events and their delivery rows agree.
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let Some(summary) = call_summary(&mut tx, subject).await? else { return Ok(None) };
        let (events, truncated) = call_events(&mut tx, subject).await?;
        let last = events.last().map_or(i64::MIN, |e| e.seq);
        let outbox = call_outbox(&mut tx, subject, last, now).await?;
        let dead = call_dead_letters(&mut tx, subject, last).await?;
        tx.commit().await?;
        let deliveries = call_deliveries(&events, outbox, dead);
        Ok(Some(StoredCall { summary, events, truncated, deliveries }))
    }

    async fn call_for_completion(&self, subject: &str) -> Result<Option<(CallSummary, Vec<CallEvent>)>, StoreError> {
        // One statement (one snapshot, one round trip) where `call` takes eight: the summary
        // on every row, and the events `events_that_fit` keeps (running count and size). The
        // payload's time is a subquery so that a fresh table's statistics never plan a scan
        // of every payload for it.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH c AS (SELECT {CALL_COLUMNS} FROM calls WHERE subject = $1),
                  e AS (SELECT e.seq, e.id, e.type, e.body, e.routes,
                               (SELECT p.received_at FROM payloads p WHERE p.id = e.payload_id) AS received_at,
                               row_number() OVER w AS n, sum(octet_length(e.body)) OVER w AS total
                          FROM events e
                         WHERE e.subject = $1
                        WINDOW w AS (ORDER BY e.seq))
             SELECT c.*, e.seq, e.id, e.type, e.received_at, e.body, e.routes
               FROM c LEFT JOIN e ON e.n <= $2 AND (e.n = 1 OR e.total <= $3) AND e.received_at IS NOT NULL
              ORDER BY e.seq"
        )))
        .bind(subject)
        .bind(CALL_EVENTS_MAX as i64)
        .bind(CALL_BYTES_MAX as i64)
        .fetch_all(self.pool())
        .await?;
        let Some(first) = rows.first() else { return Ok(None) };
        let summary = call_summary_row(first)?;
        let events = rows
            .iter()
            .filter(|r| r.try_get::<Option<i64>, _>(10).ok().flatten().is_some())
            .map(|r| {
                let routes: Option<String> = r.try_get(15)?;
                Ok(CallEvent {
                    seq: r.try_get(10)?,
                    id: r.try_get(11)?,
                    kind: r.try_get(12)?,
                    accepted_at: r.try_get(13)?,
                    json: r.try_get(14)?,
                    routes: routes.and_then(|text| serde_json::from_str(&text).ok()),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some((summary, events)))
    }
}

#[cfg(test)]
pub(crate) mod testdb;

#[cfg(test)]
mod tests;
