//! SQLite backend: one file in WAL mode with `synchronous = FULL`, so a committed
//! transaction survives a crash or power loss.
//!
//! Writes go through one writer thread that takes every command waiting in its queue and runs
//! them in a single transaction (group commit): under load, many payloads share one fsync.
//! Reads (which deliveries are due) use a small pool of read connections, which WAL lets run
//! beside the writer.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{Counts, Delivery, Ingest, IngestOutcome, Millis, Outcome, Quarantined, Store, StoreError};

/// Migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE payloads (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    digest      BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    event_ids   TEXT    NOT NULL,
    UNIQUE (source, digest)
);
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    payload_id INTEGER NOT NULL REFERENCES payloads (id),
    type       TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    body       TEXT    NOT NULL
);
CREATE TABLE outbox (
    id        INTEGER PRIMARY KEY,
    event_seq INTEGER NOT NULL REFERENCES events (seq),
    route     TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 0,
    next_at   INTEGER NOT NULL
);
CREATE INDEX outbox_route ON outbox (route, id);
CREATE INDEX outbox_subject ON outbox (route, subject, id);
CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY,
    event_seq  INTEGER NOT NULL REFERENCES events (seq),
    route      TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    dead_at    INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX dead_letters_route ON dead_letters (route, id);
CREATE TABLE attempts (
    delivery_id INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    response    TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    vendor      TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    status      INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    details     TEXT    NOT NULL,
    body        BLOB    NOT NULL
);
"#];

/// Most commands one transaction takes: bounds the latency a batch adds to its first member.
const MAX_BATCH: usize = 512;
/// Commands waiting for the writer; ingress waits (backpressure) when it is full.
const QUEUE: usize = 4096;
const READERS: usize = 4;

enum Command {
    Ingest(Box<Ingest>, oneshot::Sender<Result<IngestOutcome, StoreError>>),
    Quarantine(Box<Quarantined>, oneshot::Sender<Result<(), StoreError>>),
    Complete(Vec<Outcome>, oneshot::Sender<Result<(), StoreError>>),
    /// Succeeds when the writer can take the write lock: readiness means "can commit".
    Ping(oneshot::Sender<Result<(), StoreError>>),
}

pub struct SqliteStore {
    path: PathBuf,
    busy_timeout: Duration,
    writer: mpsc::Sender<Command>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Backlog and dead letters per route, kept equal to the tables by the writer.
    counts: Arc<Mutex<Counts>>,
}

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
        thread::Builder::new()
            .name("callgate-sqlite-writer".into())
            .spawn(move || writer(conn, rx, writer_counts))
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            busy_timeout,
            writer: tx,
            readers: Arc::new(Mutex::new(readers)),
            counts,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(make(tx)).await.map_err(|_| StoreError::Closed)?;
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
    if !read_only {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!("could not switch {} to WAL mode (got {mode})", path.display())));
        }
        // FULL: every commit is fsynced; an acknowledged payload survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
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
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
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

/// Changes to `Counts` made by one transaction, applied only once it commits.
#[derive(Default)]
struct Delta(Vec<(bool, String, i64)>);

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

enum Reply {
    Ingest(oneshot::Sender<Result<IngestOutcome, StoreError>>, Result<IngestOutcome, StoreError>),
    Unit(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
}

impl Reply {
    fn send(self, commit: &Result<(), String>) {
        let fail = |e: &String| StoreError::Backend(format!("commit failed: {e}"));
        match self {
            Reply::Ingest(tx, r) => drop(tx.send(commit.as_ref().map_err(fail).and(r))),
            Reply::Unit(tx, r) => drop(tx.send(commit.as_ref().map_err(fail).and(r))),
        }
    }
}

/// The writer thread: one transaction per batch of queued commands, each command in its own
/// savepoint so that one failure does not undo the others.
fn writer(mut conn: Connection, mut rx: mpsc::Receiver<Command>, counts: Arc<Mutex<Counts>>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let mut delta = Delta::default();
        let mut replies = Vec::with_capacity(batch.len());
        let commit = (|| -> Result<(), String> {
            let mut tx =
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
            for cmd in batch.drain(..) {
                let mut step = Delta::default();
                let sp = tx.savepoint().map_err(|e| e.to_string());
                let reply = match sp {
                    Err(e) => match cmd {
                        Command::Ingest(_, reply) => Reply::Ingest(reply, Err(StoreError::Backend(e))),
                        Command::Quarantine(_, reply) => Reply::Unit(reply, Err(StoreError::Backend(e))),
                        Command::Complete(_, reply) | Command::Ping(reply) => {
                            Reply::Unit(reply, Err(StoreError::Backend(e)))
                        }
                    },
                    Ok(sp) => {
                        let (reply, ok) = match cmd {
                            Command::Ingest(ingest, reply) => {
                                let r = ingest_one(&sp, &ingest, &mut step);
                                let ok = r.is_ok();
                                (Reply::Ingest(reply, r), ok)
                            }
                            Command::Quarantine(item, reply) => {
                                let r = quarantine_one(&sp, &item);
                                let ok = r.is_ok();
                                (Reply::Unit(reply, r), ok)
                            }
                            Command::Complete(outcomes, reply) => {
                                let r = complete_all(&sp, &outcomes, &mut step);
                                let ok = r.is_ok();
                                (Reply::Unit(reply, r), ok)
                            }
                            Command::Ping(reply) => (Reply::Unit(reply, Ok(())), true),
                        };
                        if ok {
                            let _ = sp.commit();
                            delta.0.extend(step.0);
                        } // a dropped savepoint rolls back
                        reply
                    }
                };
                replies.push(reply);
            }
            tx.commit().map_err(|e| e.to_string())
        })();
        if commit.is_ok() {
            delta.apply(&counts);
        }
        for reply in replies {
            reply.send(&commit);
        }
    }
}

fn ingest_one(tx: &rusqlite::Savepoint<'_>, ingest: &Ingest, delta: &mut Delta) -> Result<IngestOutcome, StoreError> {
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
    for event in &ingest.events {
        tx.prepare_cached("INSERT INTO events (id, payload_id, type, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![event.id, payload_id, event.kind, event.subject, event.json])?;
        let seq = tx.last_insert_rowid();
        for route in &event.routes {
            tx.prepare_cached("INSERT INTO outbox (event_seq, route, subject, next_at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![seq, route, event.subject, ingest.received_at])?;
            delta.backlog(route, 1);
        }
    }
    Ok(IngestOutcome::Accepted(ids))
}

fn quarantine_one(tx: &rusqlite::Savepoint<'_>, q: &Quarantined) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO quarantine (source, vendor, received_at, status, reason, details, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![q.source, q.vendor, q.received_at, q.status, q.reason, q.details, q.body])?;
    Ok(())
}

fn complete_all(tx: &rusqlite::Savepoint<'_>, outcomes: &[Outcome], delta: &mut Delta) -> Result<(), StoreError> {
    for outcome in outcomes {
        match outcome {
            Outcome::Delivered { id } => {
                let route: Option<String> = tx
                    .prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING route")?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                if let Some(route) = route {
                    delta.backlog(&route, -1);
                }
            }
            Outcome::Retry { id, next_at, attempt } => {
                let attempts: Option<i64> = tx
                    .prepare_cached(
                        "UPDATE outbox SET attempts = attempts + 1, next_at = ?2 WHERE id = ?1 RETURNING attempts",
                    )?
                    .query_row(params![id, next_at], |r| r.get(0))
                    .optional()?;
                if let Some(n) = attempts {
                    record_attempt(tx, *id, n, attempt)?;
                }
            }
            Outcome::Dead { id, attempt } => {
                let row: Option<(i64, String, String, i64)> = tx
                    .prepare_cached(
                        "DELETE FROM outbox WHERE id = ?1 RETURNING event_seq, route, subject, attempts + 1",
                    )?
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                if let Some((seq, route, subject, attempts)) = row {
                    let last_error = attempt.error.clone().or_else(|| attempt.status.map(|s| format!("HTTP {s}")));
                    tx.prepare_cached(
                        "INSERT INTO dead_letters (id, event_seq, route, subject, attempts, dead_at, last_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![id, seq, route, subject, attempts, attempt.at, last_error])?;
                    record_attempt(tx, *id, attempts, attempt)?;
                    delta.backlog(&route, -1);
                    delta.dead(&route, 1);
                }
            }
        }
    }
    Ok(())
}

fn record_attempt(tx: &rusqlite::Savepoint<'_>, id: i64, n: i64, a: &super::Attempt) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts (delivery_id, attempt, at, status, error, response, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![id, n, a.at, a.status, a.error, a.response, a.duration_ms])?;
    Ok(())
}

/// Heads of line: the oldest undelivered delivery of each subject on a route.
const DUE: &str = "
SELECT o.id, e.id, o.subject, o.attempts, e.body
  FROM outbox o JOIN events e ON e.seq = o.event_seq
 WHERE o.route = ?1 AND o.next_at <= ?2
   AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.route = ?1 AND p.subject = o.subject AND p.id < o.id)
 ORDER BY o.id
 LIMIT ?3";

const NEXT_DUE: &str = "
SELECT MIN(o.next_at) FROM outbox o
 WHERE o.route = ?1
   AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.route = ?1 AND p.subject = o.subject AND p.id < o.id)";

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError> {
        self.send(|tx| Command::Ingest(Box::new(ingest), tx)).await
    }

    async fn quarantine(&self, item: Quarantined) -> Result<(), StoreError> {
        self.send(|tx| Command::Quarantine(Box::new(item), tx)).await
    }

    async fn due(
        &self,
        route: &str,
        now: Millis,
        limit: usize,
        in_flight: &[i64],
    ) -> Result<Vec<Delivery>, StoreError> {
        let route = route.to_owned();
        let skip: Vec<i64> = in_flight.to_vec();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(DUE)?;
            let rows = stmt.query_map(params![route, now, (limit + skip.len()) as i64], |r| {
                Ok(Delivery {
                    id: r.get(0)?,
                    route: route.clone(),
                    event_id: r.get(1)?,
                    subject: r.get(2)?,
                    attempts: r.get::<_, i64>(3)? as u32,
                    json: r.get(4)?,
                })
            })?;
            let mut out = Vec::new();
            for row in rows {
                let delivery = row?;
                if !skip.contains(&delivery.id) {
                    out.push(delivery);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn next_due(&self, route: &str) -> Result<Option<Millis>, StoreError> {
        let route = route.to_owned();
        self.read(move |conn| conn.prepare_cached(NEXT_DUE)?.query_row([route], |r| r.get(0))).await
    }

    async fn complete(&self, outcomes: Vec<Outcome>) -> Result<(), StoreError> {
        self.send(|tx| Command::Complete(outcomes, tx)).await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.counts.lock().map(|c| c.clone()).map_err(|_| StoreError::Closed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.send(Command::Ping).await
    }
}

#[cfg(test)]
mod tests;
