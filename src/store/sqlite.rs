//! SQLite backend: one file in WAL mode with `synchronous = FULL`, so a committed
//! transaction survives a crash or power loss.
//!
//! Writes go through one writer thread that takes every job waiting in its queue and runs
//! them in a single transaction (group commit): under load, many payloads share one fsync.
//! Each job runs in its own savepoint, so one failure does not undo the others. Reads use a
//! small pool of read connections, which WAL lets run beside the writer.
//!
//! One process owns the file, so leases of claimed deliveries live in memory ([`Leases`]): a
//! crash frees them all, which is what the next start needs. Claims read on a reader
//! connection; a lease whose outcome committed after the claim's snapshot began keeps its row
//! out of that claim (the snapshot may still show the row as it was).
//!
//! **Invariant:** along one (route, subject) queue, `next_at` never decreases, so a later
//! event of a call is never due before an earlier one; the due query can then walk the
//! `(route, next_at)` index and stop at the first row not yet due, whatever the backlog.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Savepoint, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    AttemptRecord, CALL_BYTES_MAX, CALL_EVENTS_MAX, CallEvent, CallFilter, CallStatus, CallSummary, Claimed, Completed,
    Counts, DRIFT_OVERFLOW, DeadLetter, DeadLetterDetail, DeadRow, Delivery, DriftCount, EventDetail, Filter, Ingest,
    IngestOutcome, Lease, LogEntry, LogFilter, LogOutcome, Millis, Notice, OutboxRow, Outcome, OutcomeKind, Pause,
    Pruned, QuarantineItem, Quarantined, Store, StoreError, StoredCall, TERMINAL_TYPES, TestSend, admit_drift,
    call_deliveries,
    erase::{self, Erased, Erasure},
    now_ms, rfc3339,
};

/// Errors that say "not now" (busy, full, read-only, I/O) rather than "never".
fn is_unavailable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
        )
    )
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)) {
            StoreError::Corrupt(e.to_string())
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

/// Why a batch did not commit (cloned to every job of the batch).
#[derive(Debug, Clone)]
struct CommitError {
    /// Busy, full, read-only…: retrying later may work.
    unavailable: bool,
    message: String,
}

impl From<rusqlite::Error> for CommitError {
    fn from(e: rusqlite::Error) -> Self {
        CommitError { unavailable: is_unavailable(&e), message: e.to_string() }
    }
}

/// Migrations, applied in order; `PRAGMA user_version` records how many have run. Each file
/// says why it exists.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_events_without_unique_id.sql"),
    include_str!("../../migrations/sqlite/0003_subject_per_source.sql"),
    include_str!("../../migrations/sqlite/0004_health.sql"),
    include_str!("../../migrations/sqlite/0005_vendor_drift.sql"),
    include_str!("../../migrations/sqlite/0006_delivery_log.sql"),
    include_str!("../../migrations/sqlite/0007_call_records.sql"),
    include_str!("../../migrations/sqlite/0008_call_completed.sql"),
];

/// The schema version (`PRAGMA user_version`) this callgate migrates a database to.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Most jobs one transaction takes: bounds the latency a batch adds to its first member.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer; callers wait (backpressure) when it is full.
const QUEUE: usize = 4096;
const READERS: usize = 4;
/// Rows one prune job deletes per table, so pruning never holds the writer for long.
const PRUNE_CHUNK: usize = 5000;

/// A unit of work for the writer thread.
trait Job: Send {
    /// Runs inside the batch transaction (in a savepoint); `true` when it succeeded.
    fn run(&mut self, tx: &Savepoint<'_>, delta: &mut Delta) -> bool;
    /// Reports the result once the batch committed (or failed to).
    fn finish(self: Box<Self>, commit: &Result<(), CommitError>);
    /// Whether the commit must reach the disk before `finish` (an acknowledged payload),
    /// or may ride on the next fsync (delivery bookkeeping: losing it repeats a delivery).
    fn durable(&self) -> bool;
    /// Whether the WAL is checkpointed and truncated after its commit, before `finish`
    /// (an erasure: the erased rows' old pages leave the WAL file).
    fn checkpoint(&self) -> bool {
        false
    }
}

struct TypedJob<T, F> {
    durable: bool,
    checkpoint: bool,
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&Savepoint<'_>, &mut Delta) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, tx: &Savepoint<'_>, delta: &mut Delta) -> bool {
        let result = match self.work.take() {
            Some(work) => work(tx, delta),
            None => Err(StoreError::Backend("job ran twice".into())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn durable(&self) -> bool {
        self.durable
    }

    fn checkpoint(&self) -> bool {
        self.checkpoint
    }

    fn finish(self: Box<Self>, commit: &Result<(), CommitError>) {
        let result = match commit {
            Ok(()) => self.result.unwrap_or_else(|| Err(StoreError::Backend("job did not run".into()))),
            Err(e) if e.unavailable => Err(StoreError::Unavailable(format!("commit failed: {}", e.message))),
            Err(e) => Err(StoreError::Backend(format!("commit failed: {}", e.message))),
        };
        let _ = self.reply.send(result);
    }
}

pub struct SqliteStore {
    path: PathBuf,
    busy_timeout: Duration,
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Backlog and dead letters per route, kept equal to the tables by the writer.
    counts: Arc<Mutex<Counts>>,
    /// Readiness fails below this much free space where the database lives.
    min_free_bytes: u64,
    /// Leases of claimed deliveries.
    leases: Arc<Mutex<Leases>>,
    /// Batches the writer has committed: a claim's snapshot sees every commit counted before
    /// it began.
    commits: Arc<AtomicU64>,
    notices: broadcast::Sender<Notice>,
}

/// Leases of claimed deliveries, by outbox id and by route.
///
/// Every operation costs in proportion to what it touches, not to every lease held: a claim
/// reads only its route's leases, and finished leases are forgotten from a queue in the order
/// their outcomes committed (a `retain` over every lease on each outcome cost more than the
/// rest of the bookkeeping with ten busy routes).
#[derive(Default)]
struct Leases {
    held: HashMap<i64, Held>,
    /// The ids in `held`, per route.
    by_route: HashMap<String, HashSet<i64>>,
    /// (commit count, id) of leases whose outcome committed, roughly in commit order.
    finished: VecDeque<(u64, i64)>,
    /// Claims reading now, by the commit count they began at (with how many began there).
    reading: BTreeMap<u64, usize>,
}

struct Held {
    route: String,
    lease: Lease,
    until: Millis,
    /// The commit count once its outcome committed: claims whose snapshot began before it
    /// still leave the row alone; later ones see the outcome itself.
    done: Option<u64>,
}

impl Leases {
    /// Whether a claim whose snapshot began at commit count `began` may lease row `id` at `now`.
    fn claimable(&self, id: i64, now: Millis, began: u64) -> bool {
        match self.held.get(&id) {
            None => true,
            Some(held) => held.claimable(now, began),
        }
    }

    /// How many rows of `route` a claim whose snapshot began at `began` may not take at `now`.
    fn unclaimable(&self, route: &str, now: Millis, began: u64) -> usize {
        self.by_route
            .get(route)
            .into_iter()
            .flatten()
            .filter(|id| self.held.get(id).is_some_and(|held| !held.claimable(now, began)))
            .count()
    }

    /// The live leases of `route` (no outcome yet).
    fn live<'a>(&'a self, route: &str) -> impl Iterator<Item = (i64, &'a Held)> + 'a {
        let ids = self.by_route.get(route);
        ids.into_iter()
            .flatten()
            .filter_map(|id| self.held.get(id).map(|held| (*id, held)))
            .filter(|(_, held)| held.done.is_none())
    }

    fn insert(&mut self, id: i64, held: Held) {
        match self.by_route.get_mut(&held.route) {
            Some(ids) => drop(ids.insert(id)),
            None => drop(self.by_route.insert(held.route.clone(), HashSet::from([id]))),
        }
        self.held.insert(id, held);
    }

    fn remove(&mut self, id: i64) -> Option<Held> {
        let held = self.held.remove(&id)?;
        if let Some(ids) = self.by_route.get_mut(&held.route) {
            ids.remove(&id);
        }
        Some(held)
    }

    /// Whether `lease` is still the live lease of `id`.
    fn holds(&self, id: i64, lease: Lease) -> bool {
        self.held.get(&id).is_some_and(|held| held.lease == lease && held.done.is_none())
    }

    /// Marks the lease of `id` finished at commit count `done`.
    fn finish(&mut self, id: i64, done: u64) {
        if let Some(held) = self.held.get_mut(&id) {
            held.done = Some(done);
            self.finished.push_back((done, id));
        }
    }

    /// Forgets finished leases that no running claim can still need.
    fn forget_finished(&mut self) {
        let oldest = self.reading.keys().next().copied().unwrap_or(u64::MAX);
        while let Some(&(done, id)) = self.finished.front() {
            if done > oldest {
                break;
            }
            self.finished.pop_front();
            // A row claimed again since then holds a new lease: that one stays.
            if self.held.get(&id).is_some_and(|held| held.done == Some(done)) {
                self.remove(id);
            }
        }
    }
}

impl Held {
    fn claimable(&self, now: Millis, began: u64) -> bool {
        match self.done {
            Some(done) => done <= began,
            None => self.until <= now, // expired: taken over
        }
    }
}

/// Notices a subscriber may fall behind by before it is told it lost some.
const NOTICES: usize = 1024;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it and starts the writer.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        let mut conn = open_connection(path, false, busy_timeout)?;
        migrate(&mut conn)?;
        let counts = Arc::new(Mutex::new(count(&conn)?));
        let readers = (0..READERS).map(|_| open_connection(path, true, busy_timeout)).collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer_counts = counts.clone();
        let commits = Arc::new(AtomicU64::new(0));
        let writer_commits = commits.clone();
        thread::Builder::new()
            .name("callgate-sqlite-writer".into())
            .spawn(move || writer(conn, rx, writer_counts, writer_commits))
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            busy_timeout,
            writer: tx,
            readers: Arc::new(Mutex::new(readers)),
            counts,
            min_free_bytes: 0,
            leases: Arc::default(),
            commits,
            notices: broadcast::channel(NOTICES).0,
        })
    }

    fn notify(&self, notice: Notice) {
        let _ = self.notices.send(notice); // no subscriber: nobody to tell
    }

    fn notify_due<'a>(&self, routes: impl IntoIterator<Item = &'a String>) {
        let routes: BTreeSet<&String> = routes.into_iter().collect();
        for route in routes {
            self.notify(Notice::Due(route.clone()));
        }
    }

    /// Makes readiness ([`Store::ping`]) fail while the file system holding the database has
    /// less than `bytes` free.
    pub fn with_min_free_bytes(mut self, bytes: u64) -> SqliteStore {
        self.min_free_bytes = bytes;
        self
    }

    /// Fails when the database's file system is read-only or short of free space.
    fn check_disk(&self) -> Result<(), StoreError> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let stats = rustix::fs::statvfs(dir)
            .map_err(|e| StoreError::Backend(format!("cannot read the free space of {}: {e}", dir.display())))?;
        if stats.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
            return Err(StoreError::Backend(format!("{} is on a read-only file system", self.path.display())));
        }
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        if free < self.min_free_bytes {
            return Err(StoreError::Backend(format!(
                "only {free} bytes free for {} (storage.min_free_bytes is {})",
                self.path.display(),
                self.min_free_bytes
            )));
        }
        Ok(())
    }

    /// Runs `work` in the writer's next transaction and returns its result once committed
    /// and synced to disk.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Savepoint<'_>, &mut Delta) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(true, work).await
    }

    async fn submit<T, F>(&self, durable: bool, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Savepoint<'_>, &mut Delta) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit_job(durable, false, work).await
    }

    async fn submit_job<T, F>(&self, durable: bool, checkpoint: bool, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Savepoint<'_>, &mut Delta) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob { durable, checkpoint, work: Some(work), result: None, reply });
        self.writer.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a pooled read connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let busy_timeout = self.busy_timeout;
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().map_err(|_| StoreError::Closed)?.pop();
            let conn = match conn {
                Some(conn) => conn,
                None => open_connection(&path, true, busy_timeout)?,
            };
            let result = f(&conn).map_err(StoreError::from);
            if let Ok(mut pool) = readers.lock()
                && pool.len() < READERS
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

fn open_connection(path: &Path, read_only: bool, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(busy_timeout)?;
    // The query planner's stability guarantee: a plan never depends on a bound value. Without
    // it SQLite recompiles a statement whenever the value bound to its `LIMIT` changes, and
    // the claim's limit changes with every batch (a recompile of the due query cost more than
    // a claim).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if !read_only {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!("could not switch {} to WAL mode (got {mode})", path.display())));
        }
        // FULL: every commit is fsynced; an acknowledged payload survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted content is overwritten with zeros, so an erased row leaves no bytes behind
        // in the file's free space (an erasure then truncates the WAL: `checkpoint`).
        conn.pragma_update(None, "secure_delete", "ON")?;
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "the database is at schema version {version}, newer than this callgate ({}); upgrade callgate",
            MIGRATIONS.len()
        )));
    }
    // Rebuilding a table (SQLite's documented way to change a constraint) drops the old one,
    // which foreign keys would refuse; they are checked as a whole after each step instead.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let broken: Option<String> = tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional()?;
        if let Some(table) = broken {
            return Err(StoreError::Backend(format!(
                "migration {} left a broken reference in table {table}; nothing was changed",
                i + 1
            )));
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn count(conn: &Connection) -> Result<Counts, StoreError> {
    let group = |sql: &str| -> Result<BTreeMap<String, i64>, StoreError> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    Ok(Counts {
        backlog: group("SELECT route, COUNT(*) FROM outbox GROUP BY route")?,
        dead: group("SELECT route, COUNT(*) FROM dead_letters GROUP BY route")?,
    })
}

/// Changes to `Counts` made by one job, applied only once its transaction commits.
#[derive(Default)]
pub struct Delta(Vec<(bool, String, i64)>);

impl Delta {
    fn backlog(&mut self, route: &str, by: i64) {
        self.0.push((false, route.to_owned(), by));
    }
    fn dead(&mut self, route: &str, by: i64) {
        self.0.push((true, route.to_owned(), by));
    }
    fn apply(self, counts: &Mutex<Counts>) {
        if let Ok(mut counts) = counts.lock() {
            for (dead, route, by) in self.0 {
                let map = if dead { &mut counts.dead } else { &mut counts.backlog };
                let n = map.entry(route.clone()).or_default();
                *n += by;
                if *n == 0 {
                    map.remove(&route);
                }
            }
        }
    }
}

/// The writer thread: one transaction per batch of queued jobs.
fn writer(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    counts: Arc<Mutex<Counts>>,
    commits: Arc<AtomicU64>,
) {
    let mut synchronous_full = true;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A batch of delivery bookkeeping only commits without its own fsync (WAL with
        // synchronous=NORMAL); the next durable commit syncs it along, since the WAL is
        // written in order. A crash in between can only repeat deliveries.
        let durable = batch.iter().any(|job| job.durable());
        if durable != synchronous_full {
            let mode = if durable { "FULL" } else { "NORMAL" };
            if conn.pragma_update(None, "synchronous", mode).is_ok() {
                synchronous_full = durable;
            }
        }
        let mut delta = Delta::default();
        let commit = (|| -> Result<(), CommitError> {
            let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for job in batch.iter_mut() {
                let mut step = Delta::default();
                match tx.savepoint() {
                    Ok(sp) => {
                        if job.run(&sp, &mut step) && sp.commit().is_ok() {
                            delta.0.extend(step.0);
                        } // otherwise the dropped savepoint rolls back
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(tx.commit()?)
        })();
        if commit.is_ok() {
            delta.apply(&counts);
            commits.fetch_add(1, Ordering::SeqCst);
            if batch.iter().any(|job| job.checkpoint()) {
                checkpoint(&conn);
            }
        }
        for job in batch {
            job.finish(&commit);
        }
    }
}

/// Copies the whole WAL into the database and truncates it to nothing, so what an erasure
/// deleted is in neither file (the pages it overwrote with zeros replace the old ones). A
/// reader holding an old snapshot makes it stop short: then the WAL keeps its frames until the
/// next erasure or checkpoint, and this says so.
fn checkpoint(conn: &Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            "The WAL checkpoint after an erasure was blocked by a reader; the WAL keeps old pages until the next checkpoint."
        ),
        Err(e) => tracing::warn!(error = %e, "The WAL checkpoint after an erasure failed."),
    }
}

fn ingest_one(tx: &Savepoint<'_>, ingest: &Ingest, delta: &mut Delta) -> Result<IngestOutcome, StoreError> {
    let existing: Option<String> = tx
        .prepare_cached("SELECT event_ids FROM payloads WHERE source = ?1 AND digest = ?2")?
        .query_row(params![ingest.source, &ingest.digest[..]], |r| r.get(0))
        .optional()?;
    if let Some(ids) = existing {
        let ids = serde_json::from_str(&ids).map_err(|e| StoreError::Backend(format!("corrupt event ids: {e}")))?;
        return Ok(IngestOutcome::Duplicate(ids));
    }
    let ids: Vec<String> = ingest.events.iter().map(|e| e.id.clone()).collect();
    let ids_json = serde_json::to_string(&ids).map_err(|e| StoreError::Backend(e.to_string()))?;
    tx.prepare_cached(
        "INSERT INTO payloads (source, digest, received_at, body, event_ids) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![ingest.source, &ingest.digest[..], ingest.received_at, ingest.body, ids_json])?;
    let payload_id = tx.last_insert_rowid();
    // Usually one call per payload.
    let mut calls: Vec<CallDelta<'_>> = Vec::with_capacity(1);
    for event in &ingest.events {
        let routes = serde_json::to_string(&event.routes).map_err(|e| StoreError::Backend(e.to_string()))?;
        tx.prepare_cached(
            "INSERT INTO events (id, payload_id, type, subject, body, routes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![event.id, payload_id, event.kind, event.subject, event.json, routes])?;
        let seq = tx.last_insert_rowid();
        // The call's summary, written once per call of the payload (below).
        let call = match calls.iter_mut().find(|c| c.subject == event.subject) {
            Some(call) => call,
            None => {
                calls.push(CallDelta { subject: &event.subject, ..CallDelta::default() });
                calls.last_mut().ok_or_else(|| StoreError::Backend("no call summary".into()))?
            }
        };
        call.events += 1;
        call.kinds.push(event.kind.as_str());
        if event.status.is_some() {
            (call.status, call.status_seq) = (event.status, Some(seq));
        }
        call.terminal |= TERMINAL_TYPES.contains(&event.kind.as_str());
        for route in &event.routes {
            // Never due before an earlier event of the same call on this route.
            tx.prepare_cached(
                "INSERT INTO outbox (event_seq, route, subject, next_at)
                 VALUES (?1, ?2, ?3, MAX(?4, COALESCE((SELECT MAX(next_at) FROM outbox INDEXED BY outbox_subject WHERE route = ?2 AND subject = ?3), 0)))",
            )?
            .execute(params![seq, route, event.subject, ingest.received_at])?;
            delta.backlog(route, 1);
        }
    }
    for call in calls {
        // The status of a call's last accepted terminal event wins (`canonical::call::merge`
        // reads the events the same way).
        tx.prepare_cached(
            "INSERT INTO calls (subject, source, first_at, last_at, status, status_seq, terminal_at, events)
             VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (subject) DO UPDATE SET
                 last_at = MAX(last_at, excluded.last_at),
                 status = CASE WHEN excluded.status_seq > COALESCE(status_seq, -1) THEN excluded.status ELSE status END,
                 status_seq = CASE WHEN excluded.status_seq > COALESCE(status_seq, -1) THEN excluded.status_seq ELSE status_seq END,
                 terminal_at = COALESCE(MIN(terminal_at, excluded.terminal_at), terminal_at, excluded.terminal_at),
                 events = events + excluded.events,
                 late = CASE WHEN completed_at IS NOT NULL AND ?8 IS NOT NULL AND length(COALESCE(late, '')) < ?9
                             THEN COALESCE(late || ',', '') || ?8 ELSE late END",
        )?
        .execute(params![
            call.subject,
            ingest.source,
            ingest.received_at,
            call.status,
            call.status_seq,
            call.terminal.then_some(ingest.received_at),
            call.events,
            super::late_text(call.kinds.iter().copied()),
            super::LATE_MAX_BYTES as i64,
        ])?;
    }
    Ok(IngestOutcome::Accepted(ids))
}

/// What one payload adds to a call's summary row.
#[derive(Default)]
struct CallDelta<'a> {
    subject: &'a str,
    events: i64,
    status: Option<&'static str>,
    status_seq: Option<i64>,
    terminal: bool,
    /// Its events' types (late ones, if the call was completed before).
    kinds: Vec<&'a str>,
}

/// Applies outcomes whose leases were checked; returns what the workers must be told.
fn complete_all(
    tx: &Savepoint<'_>,
    outcomes: &[Outcome],
    delta: &mut Delta,
    now: Millis,
) -> Result<Vec<Notice>, StoreError> {
    let mut notices = Vec::new();
    for Outcome { id, kind, .. } in outcomes {
        match kind {
            OutcomeKind::Delivered { recovered, attempt } => {
                let row: Option<(String, String, i64, i64)> = tx
                    .prepare_cached(
                        "DELETE FROM outbox WHERE id = ?1 RETURNING route, subject, event_seq, attempts + 1",
                    )?
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                if let Some((route, subject, seq, n)) = row {
                    record_attempt(tx, *id, &route, seq, n, LogOutcome::Success, attempt)?;
                    delta.backlog(&route, -1);
                    let followers = release_followers(tx, &route, &subject, now)?;
                    if *recovered {
                        tx.prepare_cached("UPDATE outbox SET next_at = ?2 WHERE route = ?1 AND next_at > ?2")?
                            .execute(params![route, now])?;
                    }
                    // A notice per delivery (thousands a second) woke the worker for nothing.
                    if followers || *recovered {
                        notices.push(Notice::Due(route));
                    }
                }
            }
            OutcomeKind::Retry { next_at, attempt } => {
                let row: Option<(i64, String, String, i64)> = tx
                    .prepare_cached(
                        "UPDATE outbox SET attempts = attempts + 1, next_at = ?2 WHERE id = ?1 RETURNING attempts, route, subject, event_seq",
                    )?
                    .query_row(params![id, next_at], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                if let Some((n, route, subject, seq)) = row {
                    // Keep the call's later events behind this one.
                    tx.prepare_cached(
                        "UPDATE outbox INDEXED BY outbox_subject SET next_at = ?4 WHERE route = ?1 AND subject = ?2 AND id > ?3 AND next_at < ?4",
                    )?
                    .execute(params![route, subject, id, next_at])?;
                    record_attempt(tx, *id, &route, seq, n, LogOutcome::Failed, attempt)?;
                }
            }
            OutcomeKind::Gone { attempt } => {
                let row: Option<(i64, String, i64)> = tx
                    .prepare_cached(
                        "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1 RETURNING attempts, route, event_seq",
                    )?
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                if let Some((n, route, seq)) = row {
                    record_attempt(tx, *id, &route, seq, n, LogOutcome::Failed, attempt)?;
                    set_paused(tx, &route, Some("the route answered 410 Gone"), now)?;
                    notices.push(Notice::Paused { route, paused: true });
                }
            }
            OutcomeKind::Dead { attempt } => {
                let row: Option<(i64, String, String, i64)> = tx
                    .prepare_cached(
                        "DELETE FROM outbox WHERE id = ?1 RETURNING event_seq, route, subject, attempts + 1",
                    )?
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                if let Some((seq, route, subject, attempts)) = row {
                    let last_error = attempt.error.clone().or_else(|| attempt.status.map(|s| format!("HTTP {s}")));
                    tx.prepare_cached(
                        "INSERT INTO dead_letters (id, event_seq, route, subject, attempts, dead_at, last_error)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![id, seq, route, subject, attempts, attempt.at, last_error])?;
                    record_attempt(tx, *id, &route, seq, attempts, LogOutcome::Dead, attempt)?;
                    delta.backlog(&route, -1);
                    delta.dead(&route, 1);
                    release_followers(tx, &route, &subject, now)?;
                    notices.push(Notice::Due(route));
                }
            }
        }
    }
    Ok(notices)
}

/// After the head of a call's queue left it, the next events no longer wait for its retries.
/// Makes the call's next events due now; returns whether the call has any left on the route
/// (only then is a `Due` notice worth sending: the worker wakes up for its own outcomes).
fn release_followers(tx: &Savepoint<'_>, route: &str, subject: &str, now: Millis) -> Result<bool, StoreError> {
    tx.prepare_cached(
        "UPDATE outbox INDEXED BY outbox_subject SET next_at = ?3 WHERE route = ?1 AND subject = ?2 AND next_at > ?3 AND attempts = 0",
    )?
    .execute(params![route, subject, now])?;
    let left: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM outbox INDEXED BY outbox_subject WHERE route = ?1 AND subject = ?2 LIMIT 1")?
        .query_row(params![route, subject], |r| r.get(0))
        .optional()?;
    Ok(left.is_some())
}

/// Keeps attempt `n` of delivery `id` (of event `seq` on `route`) in the delivery log.
fn record_attempt(
    tx: &Savepoint<'_>,
    id: i64,
    route: &str,
    seq: i64,
    n: i64,
    outcome: LogOutcome,
    a: &super::Attempt,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO attempts (delivery_id, route, event_seq, attempt, at, outcome, status, error, response, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![id, route, seq, n, a.at, outcome.as_str(), a.status, a.error, a.response, a.duration_ms])?;
    Ok(())
}

/// An event by its id: `events_id` is keyed by buckets of 1024 events (`seq >> 10`) so that
/// ingest appends to it; the lookup probes each bucket, newest first.
const EVENT_BY_ID: &str = "
WITH RECURSIVE bucket (k) AS (
  SELECT (SELECT MAX(seq) FROM events) >> 10
  UNION ALL
  SELECT k - 1 FROM bucket WHERE k > (SELECT MIN(seq) FROM events) >> 10)
SELECT e.seq, e.id, e.type, e.subject, e.body, p.received_at
  FROM bucket JOIN events e ON (e.seq >> 10) = bucket.k AND e.id = ?1
  JOIN payloads p ON p.id = e.payload_id
 LIMIT 1";

/// The columns of a delivery log entry, over `attempts a LEFT JOIN events e` (a test send has
/// no event row and keeps its own id, type and subject).
const LOG_COLUMNS: &str = "a.id, a.route, a.delivery_id, COALESCE(e.id, a.event_id), COALESCE(e.type, a.type),
       COALESCE(e.subject, a.subject), a.attempt, a.outcome, a.test, a.at, a.status, a.duration_ms, a.response, a.error";

fn log_row(r: &rusqlite::Row<'_>) -> Result<LogEntry, rusqlite::Error> {
    Ok(LogEntry {
        id: r.get(0)?,
        route: r.get(1)?,
        delivery_id: r.get(2)?,
        event_id: r.get(3)?,
        kind: r.get(4)?,
        subject: r.get(5)?,
        attempt: r.get(6)?,
        outcome: LogOutcome::parse(&r.get::<_, String>(7)?),
        test: r.get(8)?,
        at: rfc3339(r.get(9)?),
        status: r.get(10)?,
        duration_ms: r.get(11)?,
        response: r.get(12)?,
        error: r.get(13)?,
    })
}

fn set_paused(tx: &Savepoint<'_>, route: &str, reason: Option<&str>, now: Millis) -> Result<(), StoreError> {
    match reason {
        Some(reason) => tx
            .prepare_cached(
                "INSERT INTO paused_routes (route, since, reason) VALUES (?1, ?2, ?3) ON CONFLICT (route) DO NOTHING",
            )?
            .execute(params![route, now, reason])?,
        None => tx.prepare_cached("DELETE FROM paused_routes WHERE route = ?1")?.execute([route])?,
    };
    Ok(())
}

/// Heads of line due now: walks the `(route, next_at)` index in due order and keeps the
/// oldest undelivered delivery of each subject. Bodies are fetched separately, only for the
/// rows handed out (the leased rows this query also meets are skipped cheaply).
const DUE: &str = "
SELECT o.id, o.event_seq, o.subject, o.attempts
  FROM outbox o
 WHERE o.route = ?1 AND o.next_at <= ?2
   AND NOT EXISTS (SELECT 1 FROM outbox p INDEXED BY outbox_subject WHERE p.route = ?1 AND p.subject = o.subject AND p.id < o.id)
   AND NOT EXISTS (SELECT 1 FROM paused_routes pr WHERE pr.route = ?1)
 ORDER BY o.next_at, o.id
 LIMIT ?3";

/// `WHERE` clause and parameters of a [`Filter`] over a table with `id`, a name column and
/// a time column.
fn filter_sql(filter: &Filter, name_col: &str, time_col: &str) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut values: Vec<V> = Vec::new();
    if let Some(id) = filter.id {
        values.push(V::Integer(id));
        clauses.push(format!("id = ?{}", values.len()));
    }
    if let Some(name) = &filter.name {
        values.push(V::Text(name.clone()));
        clauses.push(format!("{name_col} = ?{}", values.len()));
    }
    if let Some(since) = filter.since {
        values.push(V::Integer(since));
        clauses.push(format!("{time_col} >= ?{}", values.len()));
    }
    if let Some(before) = filter.before_id {
        values.push(V::Integer(before));
        clauses.push(format!("id < ?{}", values.len()));
    }
    if let Some(after) = filter.after_id {
        values.push(V::Integer(after));
        clauses.push(format!("id > ?{}", values.len()));
    }
    (clauses.join(" AND "), values)
}

fn limit(filter: &Filter) -> i64 {
    filter.limit.map_or(100, |l| l.clamp(1, 1000)) as i64
}

fn log_limit(filter: &LogFilter) -> i64 {
    filter.limit.map_or(100, |l| l.clamp(1, 1000)) as i64
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError> {
        let routes: BTreeSet<String> = ingest.events.iter().flat_map(|e| e.routes.iter().cloned()).collect();
        let outcome = self.write(move |tx, delta| ingest_one(tx, &ingest, delta)).await?;
        if matches!(outcome, IngestOutcome::Accepted(_)) {
            self.notify_due(&routes);
        }
        Ok(outcome)
    }

    async fn quarantine(&self, q: Quarantined) -> Result<(), StoreError> {
        self.write(move |tx, _| {
            tx.prepare_cached(
                "INSERT INTO quarantine (source, vendor, received_at, status, reason, details, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![q.source, q.vendor, q.received_at, q.status, q.reason, q.details, q.body])?;
            Ok(())
        })
        .await
    }

    async fn claim(&self, route: &str, now: Millis, limit: usize, lease_until: Millis) -> Result<Claimed, StoreError> {
        let began = {
            let mut leases = self.leases.lock().map_err(|_| StoreError::Closed)?;
            let began = self.commits.load(Ordering::SeqCst);
            *leases.reading.entry(began).or_default() += 1;
            began
        };
        let leases = self.leases.clone();
        let route_name = route;
        let route = route.to_owned();
        // One token for the whole claim: it fences each outcome, and undoes a failed claim.
        let lease = Lease::new();
        let result = self
            .read(move |conn| {
                // The rows this claim may not take (leased, or finished after its snapshot
                // began): the walk reads at most that many more than it hands out. They are
                // this route's only (a claim bounded by every route's leases read thousands of
                // rows back), and skipped here: a list of ids handed to the query cost more
                // to build into a temporary index than the rows it kept out.
                let skip = leases.lock().map(|l| l.unclaimable(&route, now, began)).unwrap_or(0);
                let mut stmt = conn.prepare_cached(DUE)?;
                let rows = stmt.query_map(params![route, now, (limit + skip) as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
                })?;
                let mut chosen = Vec::new();
                {
                    let Ok(mut leases) = leases.lock() else { return Ok(Claimed::default()) };
                    for row in rows {
                        let row = row?;
                        if leases.claimable(row.0, now, began) {
                            leases.insert(row.0, Held { route: route.clone(), lease, until: lease_until, done: None });
                            chosen.push((row, lease));
                            if chosen.len() == limit {
                                break;
                            }
                        }
                    }
                }
                if chosen.is_empty() {
                    // The pause gate is part of DUE; only an empty claim asks which it was.
                    let paused: Option<i64> = conn
                        .prepare_cached("SELECT 1 FROM paused_routes WHERE route = ?1")?
                        .query_row([&route], |r| r.get(0))
                        .optional()?;
                    if paused.is_some() {
                        return Ok(Claimed { deliveries: Vec::new(), paused: true });
                    }
                }
                let mut body = conn.prepare_cached("SELECT id, body FROM events WHERE seq = ?1")?;
                let mut deliveries = Vec::with_capacity(chosen.len());
                let mut erased = Vec::new();
                for ((id, seq, subject, attempts), lease) in chosen {
                    match body.query_row([seq], |r| Ok((r.get(0)?, r.get(1)?))).optional()? {
                        Some((event_id, json)) => deliveries.push(Delivery {
                            id,
                            route: route.clone(),
                            event_id,
                            subject,
                            attempts: attempts as u32,
                            json,
                            lease,
                        }),
                        // Erased after the due query read its row (this read may see a
                        // later snapshot): not handed out.
                        None => erased.push(id),
                    }
                }
                if !erased.is_empty()
                    && let Ok(mut leases) = leases.lock()
                {
                    erased.into_iter().for_each(|id| drop(leases.remove(id)));
                }
                Ok(Claimed { deliveries, paused: false })
            })
            .await;
        if let Ok(mut leases) = self.leases.lock() {
            if let Some(n) = leases.reading.get_mut(&began) {
                *n -= 1;
                if *n == 0 {
                    leases.reading.remove(&began);
                }
            }
            // A claim that failed after leasing rows hands none of them out: release them.
            if result.is_err() {
                let mine: Vec<i64> =
                    leases.live(route_name).filter(|(_, held)| held.lease == lease).map(|(id, _)| id).collect();
                mine.into_iter().for_each(|id| drop(leases.remove(id)));
            }
            leases.forget_finished();
        }
        result
    }

    async fn next_due(&self, route: &str, after: Millis) -> Result<Option<Millis>, StoreError> {
        let lease_expiry = self
            .leases
            .lock()
            .map_err(|_| StoreError::Closed)?
            .live(route)
            .map(|(_, held)| held.until)
            .filter(|until| *until > after)
            .min();
        let route = route.to_owned();
        let due: Option<Millis> = self
            .read(move |conn| {
                conn.prepare_cached("SELECT MIN(next_at) FROM outbox WHERE route = ?1 AND next_at > ?2")?
                    .query_row(params![route, after], |r| r.get(0))
            })
            .await?;
        Ok(match (due, lease_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    async fn complete(&self, outcomes: Vec<Outcome>, now: Millis) -> Result<Completed, StoreError> {
        let (current, stale): (Vec<Outcome>, Vec<Outcome>) = {
            let leases = self.leases.lock().map_err(|_| StoreError::Closed)?;
            outcomes.into_iter().partition(|o| leases.holds(o.id, o.lease))
        };
        let ids: Vec<i64> = current.iter().map(|o| o.id).collect();
        let notices = self.submit(false, move |tx, delta| complete_all(tx, &current, delta, now)).await?;
        let done = self.commits.load(Ordering::SeqCst);
        if let Ok(mut leases) = self.leases.lock() {
            for id in ids {
                leases.finish(id, done);
            }
            leases.forget_finished();
        }
        for notice in notices {
            self.notify(notice);
        }
        Ok(Completed { stale: stale.len() })
    }

    async fn release(&self, leases: Vec<(i64, Lease)>) -> Result<(), StoreError> {
        let mut routes = BTreeSet::new();
        {
            let mut held = self.leases.lock().map_err(|_| StoreError::Closed)?;
            for (id, lease) in leases {
                if held.holds(id, lease)
                    && let Some(h) = held.remove(id)
                {
                    routes.insert(h.route);
                }
            }
        }
        self.notify_due(&routes);
        Ok(())
    }

    async fn discard_backlog(&self, route: &str, now: Millis) -> Result<usize, StoreError> {
        // Leases live in this process: the rows in flight are named to the statement.
        let leased: Vec<i64> = {
            let leases = self.leases.lock().map_err(|_| StoreError::Closed)?;
            leases.live(route).filter(|(_, h)| h.until > now).map(|(id, _)| id).collect()
        };
        let leased = serde_json::to_string(&leased).map_err(|e| StoreError::Backend(e.to_string()))?;
        let route = route.to_owned();
        self.write(move |tx, delta| {
            let deleted = tx
                .prepare_cached("DELETE FROM outbox WHERE route = ?1 AND id NOT IN (SELECT value FROM json_each(?2))")?
                .execute(params![route, leased])?;
            delta.backlog(&route, -(deleted as i64));
            Ok(deleted)
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.counts.lock().map(|c| c.clone()).map_err(|_| StoreError::Closed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_disk()?;
        // A real, durable write: an empty transaction commits even on a full disk.
        self.write(|tx, _| {
            tx.prepare_cached(
                "INSERT INTO health (id, at, probe) VALUES (1, ?1, zeroblob(4096))
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at, probe = excluded.probe",
            )?
            .execute([now_ms()])?;
            Ok(())
        })
        .await
    }

    async fn paused(&self) -> Result<Vec<Pause>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT route, since, reason FROM paused_routes ORDER BY route")?;
            let rows =
                stmt.query_map([], |r| Ok(Pause { route: r.get(0)?, since: rfc3339(r.get(1)?), reason: r.get(2)? }))?;
            rows.collect()
        })
        .await
    }

    async fn set_paused(&self, route: &str, reason: Option<&str>, now: Millis) -> Result<(), StoreError> {
        let paused = reason.is_some();
        let name = route.to_owned();
        let reason = reason.map(str::to_owned);
        self.write(move |tx, _| set_paused(tx, &name, reason.as_deref(), now)).await?;
        self.notify(Notice::Paused { route: route.to_owned(), paused });
        if !paused {
            self.notify(Notice::Due(route.to_owned()));
        }
        Ok(())
    }

    async fn dead_letters(&self, filter: &Filter) -> Result<Vec<DeadLetter>, StoreError> {
        let (clause, mut values) = filter_sql(filter, "d.route", "d.dead_at");
        let clause = clause.replace("id = ", "d.id = ").replace("id < ", "d.id < ").replace("id > ", "d.id > ");
        values.push(rusqlite::types::Value::Integer(limit(filter)));
        let sql = format!(
            "SELECT d.id, d.route, e.id, e.type, d.subject, d.attempts, d.dead_at, d.last_error
               FROM dead_letters d JOIN events e ON e.seq = d.event_seq
              WHERE {clause} ORDER BY d.id DESC LIMIT ?{}",
            values.len()
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), dead_letter_row)?;
            rows.collect()
        })
        .await
    }

    async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterDetail>, StoreError> {
        self.read(move |conn| {
            let found = conn
                .query_row(
                    "SELECT d.id, d.route, e.id, e.type, d.subject, d.attempts, d.dead_at, d.last_error, e.body, d.event_seq
                       FROM dead_letters d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1",
                    [id],
                    |r| Ok((dead_letter_row(r)?, r.get::<_, String>(8)?, r.get::<_, i64>(9)?)),
                )
                .optional()?;
            let Some((summary, body, seq)) = found else { return Ok(None) };
            // Through its event (`attempts_event`): the log has no index by delivery.
            let mut stmt = conn.prepare(
                "SELECT attempt, at, status, error, response, duration_ms FROM attempts
                  WHERE event_seq = ?1 AND delivery_id = ?2 ORDER BY id",
            )?;
            let attempts_log = stmt
                .query_map([seq, id], |r| {
                    Ok(AttemptRecord {
                        attempt: r.get(0)?,
                        at: rfc3339(r.get(1)?),
                        status: r.get(2)?,
                        error: r.get(3)?,
                        response: r.get(4)?,
                        duration_ms: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let event = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            Ok(Some(DeadLetterDetail { summary, event, attempts_log }))
        })
        .await
    }

    async fn replay_dead_letters(&self, filter: &Filter, now: Millis) -> Result<Vec<(i64, String)>, StoreError> {
        let filter = filter.clone();
        let replayed: Vec<(i64, String)> = self.write(move |tx, delta| {
            let (clause, values) = filter_sql(&filter, "route", "dead_at");
            let mut stmt = tx.prepare(&format!("DELETE FROM dead_letters WHERE {clause} RETURNING id, event_seq, route, subject"))?;
            let rows: Vec<(i64, i64, String, String)> = stmt
                .query_map(rusqlite::params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            for (id, seq, route, subject) in &rows {
                // The original id puts it back at its place in the call's queue.
                tx.prepare_cached("INSERT INTO outbox (id, event_seq, route, subject, attempts, next_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)")?
                    .execute(params![id, seq, route, subject, now])?;
                delta.dead(route, -1);
                delta.backlog(route, 1);
            }
            Ok(rows.into_iter().map(|(id, _, route, _)| (id, route)).collect())
        })
        .await?;
        self.notify_due(replayed.iter().map(|(_, route)| route));
        Ok(replayed)
    }

    async fn quarantined(&self, filter: &Filter, with_body: bool) -> Result<Vec<QuarantineItem>, StoreError> {
        let (clause, mut values) = filter_sql(filter, "source", "received_at");
        values.push(rusqlite::types::Value::Integer(limit(filter)));
        let sql = format!(
            "SELECT id, source, vendor, received_at, status, reason, details, body FROM quarantine
              WHERE {clause} ORDER BY id DESC LIMIT ?{}",
            values.len()
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
                let details: String = r.get(6)?;
                let body: Vec<u8> = r.get(7)?;
                Ok(QuarantineItem {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    vendor: r.get(2)?,
                    received_at: rfc3339(r.get(3)?),
                    status: r.get(4)?,
                    reason: r.get(5)?,
                    details: serde_json::from_str(&details).unwrap_or_default(),
                    body: with_body.then(|| String::from_utf8_lossy(&body).into_owned()),
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn quarantined_raw(&self, filter: &Filter) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
        let (clause, mut values) = filter_sql(filter, "source", "received_at");
        values.push(rusqlite::types::Value::Integer(filter.limit.map_or(10_000, |l| l as i64)));
        let sql = format!("SELECT id, source, body FROM quarantine WHERE {clause} ORDER BY id LIMIT ?{}", values.len());
        self.read(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    async fn release_quarantined(&self, id: i64) -> Result<(), StoreError> {
        self.write(move |tx, _| {
            tx.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?.execute([id])?;
            Ok(())
        })
        .await
    }

    fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    async fn record_drift(&self, counts: Vec<DriftCount>, max_rows: usize) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        // Bookkeeping, not an acknowledged payload: it rides on the next fsync.
        self.submit(false, move |tx, _| {
            let mut stored = HashSet::new();
            let mut rows = HashMap::new();
            {
                let mut exists = tx.prepare_cached(
                    "SELECT 1 FROM drift WHERE source = ?1 AND vendor_event = ?2 AND kind = ?3 AND path = ?4 AND value = ?5",
                )?;
                let mut held = tx.prepare_cached("SELECT count(*) FROM drift WHERE source = ?1 AND kind <> ?2")?;
                for c in &counts {
                    if exists.exists(params![c.source, c.vendor_event, c.kind, c.path, c.value])? {
                        stored.insert(c.key());
                    }
                    if !rows.contains_key(&c.source) {
                        let n: i64 = held.query_row(params![c.source, DRIFT_OVERFLOW], |r| r.get(0))?;
                        rows.insert(c.source.clone(), n);
                    }
                }
            }
            let mut upsert = tx.prepare_cached(DRIFT_UPSERT)?;
            for c in admit_drift(counts, &stored, &rows, max_rows) {
                upsert.execute(params![
                    c.source,
                    c.vendor_event,
                    c.kind,
                    c.path,
                    c.value,
                    c.count,
                    c.first_seen,
                    c.last_seen,
                    c.example
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn drift(&self, filter: &Filter) -> Result<Vec<DriftCount>, StoreError> {
        let (source, since, limit) = (filter.name.clone(), filter.since, limit(filter));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source, vendor_event, kind, path, value, count, first_seen, last_seen, example FROM drift
                  WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR last_seen >= ?2)
                  ORDER BY last_seen DESC, source, vendor_event, kind, path, value LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![source, since, limit], drift_row)?;
            rows.collect()
        })
        .await
    }

    async fn delivery_log(&self, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        use rusqlite::types::Value as V;
        let mut clauses = vec!["1 = 1".to_owned()];
        let mut values: Vec<V> = Vec::new();
        let mut add = |clause: &str, value: V| {
            values.push(value);
            clauses.push(format!("{clause} ?{}", values.len()));
        };
        if let Some(route) = &filter.route {
            add("a.route =", V::Text(route.clone()));
        }
        if let Some(since) = filter.since {
            add("a.at >=", V::Integer(since));
        }
        if let Some(before) = filter.before_id {
            add("a.id <", V::Integer(before));
        }
        if let Some(subject) = &filter.subject {
            add("COALESCE(e.subject, a.subject) =", V::Text(subject.clone()));
        }
        if let Some(outcome) = filter.outcome {
            add("a.outcome =", V::Text(outcome.as_str().to_owned()));
        }
        if let Some(test) = filter.test {
            add("a.test =", V::Integer(i64::from(test)));
        }
        values.push(V::Integer(log_limit(filter)));
        // Walks the route's log newest first (`attempts_route`) and stops at the limit.
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM attempts a LEFT JOIN events e ON e.seq = a.event_seq
              WHERE {} ORDER BY a.id DESC LIMIT ?{}",
            clauses.join(" AND "),
            values.len()
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), log_row)?;
            rows.collect()
        })
        .await
    }

    async fn complete_call(&self, subject: &str, events: i64, ingest: Ingest) -> Result<bool, StoreError> {
        let routes: BTreeSet<String> = ingest.events.iter().flat_map(|e| e.routes.iter().cloned()).collect();
        let subject = subject.to_owned();
        let done = self
            .write(move |tx, delta| {
                let marked = tx
                    .prepare_cached(
                        "UPDATE calls SET completed_at = ?1
                          WHERE subject = ?2 AND completed_at IS NULL AND events = ?3",
                    )?
                    .execute(params![ingest.received_at, subject, events])?;
                if marked == 0 {
                    return Ok(false);
                }
                match ingest_one(tx, &ingest, delta)? {
                    IngestOutcome::Accepted(_) => Ok(true),
                    // Rolls the savepoint back: the call stays as it was.
                    IngestOutcome::Duplicate(_) => Err(StoreError::Backend("a call.completed was stored twice".into())),
                }
            })
            .await?;
        if done {
            self.notify_due(&routes);
        }
        Ok(done)
    }

    async fn settling(&self, before: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let limit = limit.clamp(1, 10_000) as i64;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT subject FROM calls INDEXED BY calls_settling
                  WHERE completed_at IS NULL AND terminal_at < ?1 ORDER BY terminal_at LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before, limit], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn calls(&self, filter: &CallFilter) -> Result<Vec<CallSummary>, StoreError> {
        use rusqlite::types::Value as V;
        let mut clauses = vec!["1 = 1".to_owned()];
        let mut values: Vec<V> = Vec::new();
        if let Some(source) = &filter.source {
            values.push(V::Text(source.clone()));
            clauses.push(format!("source = ?{}", values.len()));
        }
        if let Some(since) = filter.since {
            values.push(V::Integer(since));
            clauses.push(format!("first_at >= ?{}", values.len()));
        }
        match &filter.status {
            None => {}
            Some(CallStatus::InProgress) => clauses.push("status IS NULL".to_owned()),
            Some(CallStatus::Is(status)) => {
                values.push(V::Text(status.clone()));
                clauses.push(format!("status = ?{}", values.len()));
            }
        }
        if let Some(before) = filter.before_id {
            values.push(V::Integer(before));
            clauses.push(format!("id < ?{}", values.len()));
        }
        values.push(V::Integer(call_limit(filter)));
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE {} ORDER BY id DESC LIMIT ?{}",
            clauses.join(" AND "),
            values.len()
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), call_summary_row)?;
            rows.collect()
        })
        .await
    }

    async fn event(&self, id: &str, now: Millis) -> Result<Option<EventDetail>, StoreError> {
        let id = id.to_owned();
        let found = self
            .read(move |conn| {
                let event = conn
                    .query_row(EVENT_BY_ID, [&id], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, i64>(5)?,
                        ))
                    })
                    .optional()?;
                let Some((seq, id, kind, subject, body, received_at)) = event else { return Ok(None) };
                let rows = |sql: &str| -> Result<Vec<(i64, String, i64, i64)>, rusqlite::Error> {
                    conn.prepare(sql)?.query_map([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect()
                };
                let outbox = rows("SELECT id, route, attempts, next_at FROM outbox WHERE event_seq = ?1")?;
                let dead = rows("SELECT id, route, attempts, dead_at FROM dead_letters WHERE event_seq = ?1")?;
                let log: Vec<LogEntry> = conn
                    .prepare(&format!(
                        "SELECT {LOG_COLUMNS} FROM attempts a LEFT JOIN events e ON e.seq = a.event_seq
                          WHERE a.event_seq = ?1 ORDER BY a.id"
                    ))?
                    .query_map([seq], log_row)?
                    .collect::<Result<_, _>>()?;
                let paused: Vec<String> = conn
                    .prepare("SELECT route FROM paused_routes")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let detail = EventDetail {
                    id,
                    kind,
                    subject,
                    received_at: rfc3339(received_at),
                    event: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
                    deliveries: Vec::new(),
                };
                Ok(Some((detail, outbox, dead, log, paused)))
            })
            .await?;
        let Some((mut detail, outbox, dead, log, paused)) = found else { return Ok(None) };
        // Leases live in this process's memory (one process owns the file).
        let leased: HashMap<i64, Millis> = {
            let leases = self.leases.lock().map_err(|_| StoreError::Closed)?;
            outbox
                .iter()
                .filter_map(|(id, ..)| {
                    leases.held.get(id).filter(|h| h.done.is_none() && h.until > now).map(|h| (*id, h.until))
                })
                .collect()
        };
        let outbox = outbox
            .into_iter()
            .map(|(id, route, attempts, next_at)| (id, route, attempts, next_at, leased.get(&id).copied()))
            .collect();
        detail.deliveries = super::assemble(outbox, dead, log, &paused);
        Ok(Some(detail))
    }

    async fn record_test(&self, send: TestSend) -> Result<i64, StoreError> {
        self.submit(false, move |tx, _| {
            let TestSend { route, event_id, kind, subject, success, attempt: a } = &send;
            let outcome = if *success { LogOutcome::Success } else { LogOutcome::Failed };
            let id = tx
                .prepare_cached(
                    "INSERT INTO attempts (delivery_id, route, event_seq, attempt, at, outcome, test, status, error,
                                           response, duration_ms, event_id, type, subject)
                     VALUES (NULL, ?1, NULL, 1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                )?
                .query_row(
                    params![
                        route,
                        a.at,
                        outcome.as_str(),
                        a.status,
                        a.error,
                        a.response,
                        a.duration_ms,
                        event_id,
                        kind,
                        subject
                    ],
                    |r| r.get(0),
                )?;
            Ok(id)
        })
        .await
    }

    async fn call(&self, subject: &str, now: Millis) -> Result<Option<StoredCall>, StoreError> {
        let subject = subject.to_owned();
        let found = self
            .read(move |conn| {
                // One snapshot: the events and their delivery rows agree.
                let tx = conn.unchecked_transaction()?;
                let Some(summary) = call_summary(&tx, &subject)? else { return Ok(None) };
                let (events, truncated) = call_events(&tx, &subject)?;
                let last = events.last().map_or(i64::MIN, |e| e.seq);
                let outbox = call_outbox(&tx, &subject, last)?;
                let dead = call_dead_letters(&tx, &subject, last)?;
                Ok(Some((summary, events, truncated, outbox, dead)))
            })
            .await?;
        let Some((summary, events, truncated, mut outbox, dead)) = found else { return Ok(None) };
        // Leases live in memory (one process owns the file).
        if let Ok(leases) = self.leases.lock() {
            for row in &mut outbox {
                row.leased = leases.held.get(&row.id).is_some_and(|held| held.done.is_none() && held.until > now);
            }
        }
        let deliveries = call_deliveries(&events, outbox, dead);
        Ok(Some(StoredCall { summary, events, truncated, deliveries }))
    }

    async fn call_for_completion(&self, subject: &str) -> Result<Option<(CallSummary, Vec<CallEvent>)>, StoreError> {
        let subject = subject.to_owned();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let Some(summary) = call_summary(&tx, &subject)? else { return Ok(None) };
            let (events, _) = call_events(&tx, &subject)?;
            Ok(Some((summary, events)))
        })
        .await
    }

    async fn erase(&self, erasure: Erasure, _now: Millis) -> Result<Erased, StoreError> {
        // Durable, then the WAL checkpointed and truncated before the answer.
        self.submit_job(true, true, move |tx, delta| erase_in(tx, &erasure, delta)).await
    }

    async fn prune(&self, retention_before: Millis, dedup_before: Millis) -> Result<Pruned, StoreError> {
        self.write(move |tx, _| {
            let chunk = PRUNE_CHUNK as i64;
            // The log first: an event is kept while an attempt of it is.
            let attempts = tx.execute(
                "DELETE FROM attempts WHERE id IN (
                    SELECT a.id FROM attempts a
                     WHERE a.at < ?1
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = a.delivery_id)
                       AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = a.delivery_id)
                     LIMIT ?2)",
                params![retention_before, chunk],
            )?;
            let events = tx.execute(
                "DELETE FROM events WHERE seq IN (
                    SELECT e.seq FROM events e JOIN payloads p ON p.id = e.payload_id
                     WHERE p.received_at < ?1
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_seq = e.seq)
                       AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_seq = e.seq)
                       AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.event_seq = e.seq)
                     LIMIT ?2)",
                params![retention_before, chunk],
            )?;
            let payloads = tx.execute(
                "DELETE FROM payloads WHERE id IN (
                    SELECT p.id FROM payloads p
                     WHERE p.received_at < ?1 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.payload_id = p.id)
                     LIMIT ?2)",
                params![dedup_before, chunk],
            )?;
            let quarantine = tx.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE received_at < ?1 LIMIT ?2)",
                params![retention_before, chunk],
            )?;
            // Bounded by the cap of rows per source.
            let drift = tx.execute("DELETE FROM drift WHERE last_seen < ?1", params![retention_before])?;
            let calls = tx.execute(
                "DELETE FROM calls WHERE id IN (
                    SELECT c.id FROM calls c
                     WHERE c.last_at < ?1 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.subject = c.subject)
                     LIMIT ?2)",
                params![retention_before, chunk],
            )?;
            Ok(Pruned { events, payloads, attempts, quarantine, drift, calls })
        })
        .await
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
}

/// One erasure in the writer's transaction (see `erase.rs` for what goes).
fn erase_in(tx: &Savepoint<'_>, erasure: &Erasure, delta: &mut Delta) -> Result<Erased, StoreError> {
    // A number's other notations its events hold are searched for in bodies too (`widened`).
    let (subjects, widened) = match erasure {
        Erasure::Call(subject) => (BTreeSet::from([subject.clone()]), None),
        Erasure::Number(number) => {
            // A scan of the events: those whose JSON holds a form as text, then their number fields.
            let forms = number.forms();
            let mut stmt = tx.prepare(
                "SELECT subject, body FROM events
                  WHERE EXISTS (SELECT 1 FROM json_each(?1) f WHERE instr(events.body, f.value) > 0)",
            )?;
            let rows = stmt.query_map([json(forms)?], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut found = erase::Found::new(number);
            for row in rows {
                let (subject, body) = row?;
                found.consider(subject, &body);
            }
            found.finish()
        }
    };
    let erasure = widened.as_ref().unwrap_or(erasure);
    let names: Vec<&String> = subjects.iter().collect();
    let names_json = json(&names)?;
    let mut seqs: Vec<i64> = Vec::new();
    let mut payloads: BTreeSet<i64> = BTreeSet::new();
    {
        let mut stmt = tx.prepare(
            "SELECT seq, payload_id FROM events
              WHERE subject IN (SELECT value FROM json_each(?1))",
        )?;
        let rows = stmt.query_map([&names_json], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (seq, payload) = row?;
            seqs.push(seq);
            payloads.insert(payload);
        }
    }
    let seqs_json = json(&seqs)?;
    let mut erased = Erased::default();
    {
        let mut stmt =
            tx.prepare("DELETE FROM outbox WHERE event_seq IN (SELECT value FROM json_each(?1)) RETURNING route")?;
        let routes = stmt.query_map([&seqs_json], |r| r.get::<_, String>(0))?;
        for route in routes {
            delta.backlog(&route?, -1);
            erased.outbox_cancelled += 1;
        }
        let mut stmt = tx
            .prepare("DELETE FROM dead_letters WHERE event_seq IN (SELECT value FROM json_each(?1)) RETURNING route")?;
        let routes = stmt.query_map([&seqs_json], |r| r.get::<_, String>(0))?;
        for route in routes {
            delta.dead(&route?, -1);
            erased.dead_letters += 1;
        }
    }
    erased.log_rows = tx.execute(
        "DELETE FROM attempts WHERE event_seq IN (SELECT value FROM json_each(?1)) AND test = 0",
        [&seqs_json],
    )?;
    erased.events = tx.execute("DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?1))", [&seqs_json])?;
    erased.calls = tx.execute("DELETE FROM calls WHERE subject IN (SELECT value FROM json_each(?1))", [&names_json])?;
    // Bodies that hold the number or a call id: the events' own payloads, and any other (one
    // whose events were pruned while its redelivery key is kept, a number only in a
    // transcript), and the quarantine.
    for needle in erase::needles(erasure, &subjects) {
        let mut stmt =
            tx.prepare_cached("SELECT id FROM payloads WHERE (?1 IS NULL OR source = ?1) AND instr(body, ?2) > 0")?;
        let ids = stmt.query_map(params![needle.source, needle.bytes], |r| r.get::<_, i64>(0))?;
        for id in ids {
            payloads.insert(id?);
        }
        erased.quarantined += tx
            .prepare_cached("DELETE FROM quarantine WHERE (?1 IS NULL OR source = ?1) AND instr(body, ?2) > 0")?
            .execute(params![needle.source, needle.bytes])?;
    }
    if let Erasure::Number(number) = erasure {
        for form in number.forms() {
            erased.drift_rows += tx
                .prepare_cached("DELETE FROM drift WHERE instr(value, ?1) > 0 OR instr(example, ?1) > 0")?
                .execute([form])?;
        }
    }
    for id in payloads {
        let deleted = tx
            .prepare_cached(
                "DELETE FROM payloads WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM events WHERE payload_id = ?1)",
            )?
            .execute([id])?;
        // Another call's events came from it too: they and the redelivery key stay, the body goes.
        let emptied = match deleted {
            0 => {
                tx.prepare_cached("UPDATE payloads SET body = x'' WHERE id = ?1 AND length(body) > 0")?.execute([id])?
            }
            _ => 0,
        };
        erased.payloads += deleted + emptied;
    }
    Ok(erased)
}

/// Adds one aggregated count to its drift row (the example of the latest sighting wins).
const DRIFT_UPSERT: &str =
    "INSERT INTO drift (source, vendor_event, kind, path, value, count, first_seen, last_seen, example)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
     ON CONFLICT (source, vendor_event, kind, path, value) DO UPDATE SET
         count = drift.count + excluded.count,
         first_seen = min(drift.first_seen, excluded.first_seen),
         last_seen = max(drift.last_seen, excluded.last_seen),
         example = CASE WHEN excluded.last_seen >= drift.last_seen THEN excluded.example ELSE drift.example END";

fn drift_row(r: &rusqlite::Row<'_>) -> Result<DriftCount, rusqlite::Error> {
    Ok(DriftCount {
        source: r.get(0)?,
        vendor_event: r.get(1)?,
        kind: r.get(2)?,
        path: r.get(3)?,
        value: r.get(4)?,
        count: r.get(5)?,
        first_seen: r.get(6)?,
        last_seen: r.get(7)?,
        example: r.get(8)?,
    })
}

fn call_limit(filter: &CallFilter) -> i64 {
    filter.limit.map_or(100, |l| l.clamp(1, 1000)) as i64
}

const CALL_COLUMNS: &str = "id, subject, source, first_at, last_at, status, terminal_at, events, completed_at, late";

fn call_summary_row(r: &rusqlite::Row<'_>) -> Result<CallSummary, rusqlite::Error> {
    Ok(CallSummary {
        id: r.get(0)?,
        subject: r.get(1)?,
        source: r.get(2)?,
        first_at: rfc3339(r.get(3)?),
        last_at: rfc3339(r.get(4)?),
        status: r.get(5)?,
        terminal_at: r.get::<_, Option<i64>>(6)?.map(rfc3339),
        events: r.get(7)?,
        completed_at: r.get::<_, Option<i64>>(8)?.map(rfc3339),
        late: super::late_list(r.get(9)?),
    })
}

/// A call's summary row.
fn call_summary(conn: &Connection, subject: &str) -> Result<Option<CallSummary>, rusqlite::Error> {
    conn.prepare_cached(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE subject = ?1"))?
        .query_row([subject], call_summary_row)
        .optional()
}

/// A call's events in acceptance order, as many as [`events_that_fit`], and whether more
/// exist. Rows are read one at a time, so what does not fit is never loaded.
fn call_events(conn: &Connection, subject: &str) -> Result<(Vec<CallEvent>, bool), rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.seq, e.id, e.type, p.received_at, e.body, e.routes
           FROM events e JOIN payloads p ON p.id = e.payload_id
          WHERE e.subject = ?1 ORDER BY e.seq",
    )?;
    let mut rows = stmt.query([subject])?;
    let (mut events, mut bytes) = (Vec::new(), 0usize);
    while let Some(r) = rows.next()? {
        let json: String = r.get(4)?;
        bytes += json.len();
        if events.len() == CALL_EVENTS_MAX || (!events.is_empty() && bytes > CALL_BYTES_MAX) {
            return Ok((events, true));
        }
        let routes: Option<String> = r.get(5)?;
        events.push(CallEvent {
            seq: r.get(0)?,
            id: r.get(1)?,
            kind: r.get(2)?,
            accepted_at: r.get(3)?,
            json,
            routes: routes.and_then(|text| serde_json::from_str(&text).ok()),
        });
    }
    Ok((events, false))
}

/// The outbox rows of a call's events up to `last_seq` (leases are filled in by the caller).
fn call_outbox(conn: &Connection, subject: &str, last_seq: i64) -> Result<Vec<OutboxRow>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.event_seq, o.route, o.attempts, o.next_at
           FROM events e JOIN outbox o ON o.event_seq = e.seq
          WHERE e.subject = ?1 AND e.seq <= ?2",
    )?;
    stmt.query_map(params![subject, last_seq], |r| {
        Ok(OutboxRow {
            id: r.get(0)?,
            event_seq: r.get(1)?,
            route: r.get(2)?,
            attempts: r.get(3)?,
            next_at: r.get(4)?,
            leased: false,
        })
    })?
    .collect()
}

/// The dead letters of a call's events up to `last_seq`.
fn call_dead_letters(conn: &Connection, subject: &str, last_seq: i64) -> Result<Vec<DeadRow>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.event_seq, d.route, d.attempts, d.dead_at, d.last_error
           FROM events e JOIN dead_letters d ON d.event_seq = e.seq
          WHERE e.subject = ?1 AND e.seq <= ?2",
    )?;
    stmt.query_map(params![subject, last_seq], |r| {
        Ok(DeadRow {
            id: r.get(0)?,
            event_seq: r.get(1)?,
            route: r.get(2)?,
            attempts: r.get(3)?,
            dead_at: r.get(4)?,
            last_error: r.get(5)?,
        })
    })?
    .collect()
}

fn dead_letter_row(r: &rusqlite::Row<'_>) -> Result<DeadLetter, rusqlite::Error> {
    Ok(DeadLetter {
        id: r.get(0)?,
        route: r.get(1)?,
        event_id: r.get(2)?,
        kind: r.get(3)?,
        subject: r.get(4)?,
        attempts: r.get(5)?,
        dead_at: rfc3339(r.get(6)?),
        last_error: r.get(7)?,
    })
}

#[cfg(test)]
mod tests;
