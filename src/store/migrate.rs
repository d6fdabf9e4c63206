//! `callgate store migrate`: moves a stopped gateway's SQLite store into an empty PostgreSQL
//! database, so a single box can move up to several replicas without losing what it holds.
//!
//! What is copied, ids kept: every payload (the dedup window: a vendor's redelivery after the
//! move is still a duplicate with the original ids), every event and call summary (the call
//! records of `GET /v1/calls`), the outbox (ids, `next_at`, attempts: a call's order and its
//! retry schedule), the dead letters, the whole delivery log (`attempts`, test sends
//! included), the quarantine, the paused routes and the drift report.
//!
//! The SQLite file is opened read-only and read in one transaction (one snapshot); the
//! PostgreSQL side is one transaction with its tables locked against writers, so the move is
//! all or nothing. The identity sequences are set past every copied id, so what PostgreSQL
//! accepts next sorts after what was moved (the outbox's order is the calls' order).

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use super::{StoreError, postgres, sqlite};

/// Rows read from SQLite and inserted into PostgreSQL at a time. Payloads and quarantined
/// bodies go in smaller chunks: each may be as large as `server.max_body_bytes`.
const CHUNK: i64 = 1000;
const BODY_CHUNK: i64 = 100;

/// The tables the move fills, which an empty target has no row in (`health` is only the
/// readiness probe's scratch row).
const TABLES: &[&str] =
    &["payloads", "events", "calls", "outbox", "dead_letters", "attempts", "quarantine", "paused_routes", "drift"];

/// What the move copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub payloads: u64,
    pub events: u64,
    /// Call summaries (`calls`).
    pub calls: u64,
    /// Pending deliveries (the outbox).
    pub deliveries: u64,
    pub dead_letters: u64,
    pub attempts: u64,
    pub quarantined: u64,
    pub paused_routes: u64,
    /// Rows of the drift report.
    pub drift: u64,
}

impl fmt::Display for Copied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("payloads", self.payloads, "(the dedup window)"),
            ("events", self.events, "(every call's record)"),
            ("calls", self.calls, ""),
            ("deliveries", self.deliveries, "(pending, ids and order kept)"),
            ("dead letters", self.dead_letters, ""),
            ("attempts", self.attempts, "(the delivery log)"),
            ("quarantined", self.quarantined, ""),
            ("paused routes", self.paused_routes, ""),
            ("drift rows", self.drift, "(the drift report)"),
        ];
        for (name, n, note) in rows {
            let line = format!("  {name:<14}{n:>10}  {note}");
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("no SQLite store at {0}")]
    NotFound(PathBuf),
    #[error("cannot read the SQLite store {path}: {message}")]
    Source { path: PathBuf, message: String },
    #[error("{0} is not a callgate store (it has no callgate schema)")]
    NotCallgate(PathBuf),
    #[error(
        "{path} is at schema version {found}, older than this callgate's {current}: start this callgate's gateway on it once and stop it (that migrates it in place), then move it"
    )]
    OldSchema { path: PathBuf, found: usize, current: usize },
    #[error(
        "{path} is at schema version {found}, newer than this callgate's {current}: move it with the callgate that wrote it"
    )]
    NewSchema { path: PathBuf, found: usize, current: usize },
    #[error("the target database {target} is not empty (it holds {found}); move into an empty database")]
    NotEmpty { target: String, found: String },
    #[error("the target database {target}: {error}")]
    Target { target: String, error: StoreError },
}

/// Copies the SQLite store at `from` into the PostgreSQL database `to` (migrated first, and
/// refused unless empty). Nothing is written to `from`; `to` gets all of it or nothing.
pub async fn sqlite_to_postgres(from: &Path, to: &str) -> Result<Copied, MigrateError> {
    let source = Source::open(from)?;
    let target = postgres::redact(to);
    let fail = |error: StoreError| MigrateError::Target { target: target.clone(), error };

    let options = PgConnectOptions::from_str(to)
        .map_err(|e| fail(StoreError::Backend(format!("not a PostgreSQL URL: {e}"))))?
        .application_name("callgate-migrate");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| fail(StoreError::Unavailable(format!("cannot connect: {e}"))))?;
    // The PostgreSQL store's own migrator: the schema is exactly what the gateway expects.
    postgres::migrate(&pool).await.map_err(fail)?;

    let mut tx = pool.begin().await.map_err(|e| fail(e.into()))?;
    let copied = copy(&source, &mut tx, &target).await?;
    tx.commit().await.map_err(|e| fail(e.into()))?;
    pool.close().await;
    Ok(copied)
}

/// The whole move inside the target's transaction.
async fn copy(source: &Source, tx: &mut PgConnection, target: &str) -> Result<Copied, MigrateError> {
    let fail = |error: StoreError| MigrateError::Target { target: target.to_owned(), error };
    let pg = |e: sqlx::Error| fail(e.into());
    // No gateway may write while the move runs (readers may still look); give up rather than
    // queue behind one that is running.
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await.map_err(pg)?;
    sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {} IN EXCLUSIVE MODE", TABLES.join(", "))))
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Unavailable(m) => {
                fail(StoreError::Unavailable(format!("its tables are in use (is a gateway running on it?): {m}")))
            }
            other => fail(other),
        })?;
    let mut found = Vec::new();
    for table in TABLES {
        // Bounded: a full table is not counted to the end just to be refused.
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1001) t"
        )))
        .fetch_one(&mut *tx)
        .await
        .map_err(pg)?;
        if n > 0 {
            let n = if n > 1000 { "more than 1000".to_owned() } else { n.to_string() };
            found.push(format!("{n} row(s) in {table}"));
        }
    }
    if !found.is_empty() {
        return Err(MigrateError::NotEmpty { target: target.to_owned(), found: found.join(", ") });
    }

    let on_target = |e: CopyError| e.into_error(target);
    let copied = Copied {
        payloads: copy_payloads(source, tx).await.map_err(on_target)?,
        events: copy_events(source, tx).await.map_err(on_target)?,
        calls: copy_calls(source, tx).await.map_err(on_target)?,
        deliveries: copy_outbox(source, tx).await.map_err(on_target)?,
        dead_letters: copy_dead_letters(source, tx).await.map_err(on_target)?,
        attempts: copy_attempts(source, tx).await.map_err(on_target)?,
        quarantined: copy_quarantine(source, tx).await.map_err(on_target)?,
        paused_routes: copy_paused(source, tx).await.map_err(on_target)?,
        drift: copy_drift(source, tx).await.map_err(on_target)?,
    };

    // Past every id SQLite ever handed out: the outbox's is its AUTOINCREMENT high-water mark
    // (ids of delivered rows are never reused there either), so a new delivery sorts after
    // every moved one of its call. `setval` is not undone by a rollback; a failed move leaves
    // only sequences ahead, which the next attempt sets again.
    let outbox_high = source.scalar(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0),
                    COALESCE((SELECT MAX(id) FROM outbox), 0),
                    COALESCE((SELECT MAX(id) FROM dead_letters), 0),
                    COALESCE((SELECT MAX(delivery_id) FROM attempts), 0))",
    )?;
    let sequences = [
        ("payloads", "id", source.scalar("SELECT COALESCE(MAX(id), 0) FROM payloads")?),
        ("events", "seq", source.scalar("SELECT COALESCE(MAX(seq), 0) FROM events")?),
        ("calls", "id", source.scalar("SELECT COALESCE(MAX(id), 0) FROM calls")?),
        ("outbox", "id", outbox_high),
        ("attempts", "id", source.scalar("SELECT COALESCE(MAX(id), 0) FROM attempts")?),
        ("quarantine", "id", source.scalar("SELECT COALESCE(MAX(id), 0) FROM quarantine")?),
    ];
    for (table, column, high) in sequences {
        if high > 0 {
            sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3, true)")
                .bind(table)
                .bind(column)
                .bind(high)
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
        }
    }
    Ok(copied)
}

/// The SQLite store, read-only, inside one read transaction (a consistent snapshot).
struct Source {
    conn: Connection,
    path: PathBuf,
}

/// A failure while copying: on which side.
enum CopyError {
    Source(MigrateError),
    Target(sqlx::Error),
}

impl CopyError {
    fn into_error(self, target: &str) -> MigrateError {
        match self {
            CopyError::Source(e) => e,
            CopyError::Target(e) => MigrateError::Target { target: target.to_owned(), error: e.into() },
        }
    }
}

impl From<MigrateError> for CopyError {
    fn from(e: MigrateError) -> Self {
        CopyError::Source(e)
    }
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Target(e)
    }
}

impl Source {
    fn open(path: &Path) -> Result<Source, MigrateError> {
        if !path.is_file() {
            return Err(MigrateError::NotFound(path.to_owned()));
        }
        let failed = |e: rusqlite::Error| MigrateError::Source { path: path.to_owned(), message: e.to_string() };
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(failed)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(failed)?;
        // Every read below sees the same snapshot; a read-only transaction writes nothing.
        conn.execute_batch("BEGIN").map_err(failed)?;
        let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).map_err(failed)?;
        let version = usize::try_from(version).unwrap_or(0);
        let current = sqlite::SCHEMA_VERSION;
        let has_payloads = conn
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payloads'", [], |_| Ok(()))
            .optional()
            .map_err(failed)?
            .is_some();
        if version == 0 || !has_payloads {
            return Err(MigrateError::NotCallgate(path.to_owned()));
        }
        if version < current {
            return Err(MigrateError::OldSchema { path: path.to_owned(), found: version, current });
        }
        if version > current {
            return Err(MigrateError::NewSchema { path: path.to_owned(), found: version, current });
        }
        Ok(Source { conn, path: path.to_owned() })
    }

    fn failed(&self, e: rusqlite::Error) -> MigrateError {
        MigrateError::Source { path: self.path.clone(), message: e.to_string() }
    }

    fn scalar(&self, sql: &str) -> Result<i64, MigrateError> {
        self.conn.query_row(sql, [], |r| r.get(0)).map_err(|e| self.failed(e))
    }

    /// The next chunk of a keyset walk: `sql` takes the last key seen (`?1`) and a limit (`?2`).
    fn chunk<T>(
        &self,
        sql: &str,
        after: i64,
        limit: i64,
        row: impl FnMut(&rusqlite::Row<'_>) -> Result<T, rusqlite::Error>,
    ) -> Result<Vec<T>, MigrateError> {
        // Synchronous reads on the async thread: the command does nothing else meanwhile, and
        // one chunk is a short indexed range.
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.failed(e))?;
        let rows = stmt.query_map(rusqlite::params![after, limit], row).map_err(|e| self.failed(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.failed(e))
    }
}

async fn copy_payloads(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    let (mut after, mut n) = (i64::MIN, 0);
    loop {
        let rows = source.chunk(
            "SELECT id, source, digest, received_at, body, event_ids FROM payloads WHERE id > ?1 ORDER BY id LIMIT ?2",
            after,
            BODY_CHUNK,
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            },
        )?;
        let Some(last) = rows.last() else { return Ok(n) };
        after = last.0;
        let (mut ids, mut sources, mut digests, mut received, mut bodies, mut event_ids) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (id, src, digest, at, body, events) in rows {
            ids.push(id);
            sources.push(src);
            digests.push(digest);
            received.push(at);
            bodies.push(body);
            event_ids.push(events);
        }
        n += sqlx::query(
            "INSERT INTO payloads (id, source, digest, received_at, body, event_ids) OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::int8[], $2::text[], $3::bytea[], $4::int8[], $5::bytea[], $6::text[])",
        )
        .bind(&ids)
        .bind(&sources)
        .bind(&digests)
        .bind(&received)
        .bind(&bodies)
        .bind(&event_ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
}

async fn copy_events(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    let (mut after, mut n) = (i64::MIN, 0);
    loop {
        let rows = source.chunk(
            "SELECT seq, id, payload_id, type, subject, body, routes FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            after,
            CHUNK,
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            },
        )?;
        let Some(last) = rows.last() else { return Ok(n) };
        after = last.0;
        let (mut seqs, mut ids, mut payloads, mut kinds, mut subjects, mut bodies, mut routes) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for (seq, id, payload, kind, subject, body, queued) in rows {
            seqs.push(seq);
            ids.push(id);
            payloads.push(payload);
            kinds.push(kind);
            subjects.push(subject);
            bodies.push(body);
            routes.push(queued);
        }
        n += sqlx::query(
            "INSERT INTO events (seq, id, payload_id, type, subject, body, routes) OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[])",
        )
        .bind(&seqs)
        .bind(&ids)
        .bind(&payloads)
        .bind(&kinds)
        .bind(&subjects)
        .bind(&bodies)
        .bind(&routes)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
}

async fn copy_calls(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    let (mut after, mut n) = (i64::MIN, 0);
    loop {
        let rows = source.chunk(
            "SELECT id, subject, source, first_at, last_at, status, status_seq, terminal_at, events, completed_at, late
               FROM calls WHERE id > ?1 ORDER BY id LIMIT ?2",
            after,
            CHUNK,
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, Option<i64>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ))
            },
        )?;
        let Some(last) = rows.last() else { return Ok(n) };
        after = last.0;
        let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for (id, subject, src, first, latest, status, status_seq, terminal, events, completed, late) in rows {
            columns.0.push(id);
            columns.1.push(subject);
            columns.2.push(src);
            columns.3.push(first);
            columns.4.push(latest);
            columns.5.push(status);
            columns.6.push(status_seq);
            columns.7.push(terminal);
            columns.8.push(events);
            columns.9.push(completed);
            columns.10.push(late);
        }
        n += sqlx::query(
            "INSERT INTO calls (id, subject, source, first_at, last_at, status, status_seq, terminal_at, events,
                                completed_at, late)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::int8[],
                                  $8::int8[], $9::int8[], $10::int8[], $11::text[])",
        )
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .bind(&columns.4)
        .bind(&columns.5)
        .bind(&columns.6)
        .bind(&columns.7)
        .bind(&columns.8)
        .bind(&columns.9)
        .bind(&columns.10)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
}

async fn copy_outbox(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    let (mut after, mut n) = (i64::MIN, 0);
    loop {
        let rows = source.chunk(
            "SELECT id, event_seq, route, subject, attempts, next_at FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
            after,
            CHUNK,
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i32>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )?;
        let Some(last) = rows.last() else { return Ok(n) };
        after = last.0;
        let (mut ids, mut seqs, mut routes, mut subjects, mut attempts, mut next_at) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (id, seq, route, subject, tries, next) in rows {
            ids.push(id);
            seqs.push(seq);
            routes.push(route);
            subjects.push(subject);
            attempts.push(tries);
            next_at.push(next);
        }
        // Not leased: the stopped gateway's leases died with it.
        n += sqlx::query(
            "INSERT INTO outbox (id, event_seq, route, subject, attempts, next_at)
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int4[], $6::int8[])",
        )
        .bind(&ids)
        .bind(&seqs)
        .bind(&routes)
        .bind(&subjects)
        .bind(&attempts)
        .bind(&next_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
}

async fn copy_dead_letters(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    let (mut after, mut n) = (i64::MIN, 0);
    loop {
        let rows = source.chunk(
            "SELECT id, event_seq, route, subject, attempts, dead_at, last_error FROM dead_letters
              WHERE id > ?1 ORDER BY id LIMIT ?2",
            after,
            CHUNK,
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i32>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            },
        )?;
        let Some(last) = rows.last() else { return Ok(n) };
        after = last.0;
        let (mut ids, mut seqs, mut routes, mut subjects, mut attempts, mut dead_at, mut errors) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for (id, seq, route, subject, tries, at, error) in rows {
            ids.push(id);
            seqs.push(seq);
            routes.push(route);
            subjects.push(subject);
            attempts.push(tries);
            dead_at.push(at);
            errors.push(error);
        }
        n += sqlx::query(
            "INSERT INTO dead_letters (id, event_seq, route, subject, attempts, dead_at, last_error)
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int4[], $6::int8[], $7::text[])",
        )
        .bind(&ids)
        .bind(&seqs)
        .bind(&routes)
        .bind(&subjects)
        .bind(&attempts)
        .bind(&dead_at)
        .bind(&errors)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
}

async fn copy_attempts(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    let (mut after, mut n) = (i64::MIN, 0);
    loop {
        let rows = source.chunk(
            "SELECT id, delivery_id, attempt, at, status, error, response, duration_ms,
                    route, event_seq, outcome, test, event_id, type, subject
               FROM attempts WHERE id > ?1 ORDER BY id LIMIT ?2",
            after,
            CHUNK,
            |r| {
                Ok(LogRow {
                    id: r.get(0)?,
                    delivery: r.get(1)?,
                    number: r.get(2)?,
                    at: r.get(3)?,
                    status: r.get(4)?,
                    error: r.get(5)?,
                    response: r.get(6)?,
                    duration: r.get(7)?,
                    route: r.get(8)?,
                    event_seq: r.get(9)?,
                    outcome: r.get(10)?,
                    test: r.get(11)?,
                    event_id: r.get(12)?,
                    kind: r.get(13)?,
                    subject: r.get(14)?,
                })
            },
        )?;
        let Some(last) = rows.last() else { return Ok(n) };
        after = last.id;
        macro_rules! column {
            ($field:ident) => {
                rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
            };
        }
        n += sqlx::query(
            "INSERT INTO attempts (id, delivery_id, attempt, at, status, error, response, duration_ms,
                                   route, event_seq, outcome, test, event_id, type, subject) OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int4[], $4::int8[], $5::int4[], $6::text[], $7::text[],
                                  $8::int8[], $9::text[], $10::int8[], $11::text[], $12::bool[], $13::text[],
                                  $14::text[], $15::text[])",
        )
        .bind(column!(id))
        .bind(column!(delivery))
        .bind(column!(number))
        .bind(column!(at))
        .bind(column!(status))
        .bind(column!(error))
        .bind(column!(response))
        .bind(column!(duration))
        .bind(column!(route))
        .bind(column!(event_seq))
        .bind(column!(outcome))
        .bind(column!(test))
        .bind(column!(event_id))
        .bind(column!(kind))
        .bind(column!(subject))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
}

/// One row of the delivery log as SQLite holds it.
struct LogRow {
    id: i64,
    delivery: Option<i64>,
    number: i32,
    at: i64,
    status: Option<i32>,
    error: Option<String>,
    response: Option<String>,
    duration: i64,
    route: String,
    event_seq: Option<i64>,
    outcome: String,
    test: bool,
    event_id: Option<String>,
    kind: Option<String>,
    subject: Option<String>,
}

async fn copy_quarantine(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    let (mut after, mut n) = (i64::MIN, 0);
    loop {
        let rows = source.chunk(
            "SELECT id, source, vendor, received_at, status, reason, details, body FROM quarantine
              WHERE id > ?1 ORDER BY id LIMIT ?2",
            after,
            BODY_CHUNK,
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i32>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                ))
            },
        )?;
        let Some(last) = rows.last() else { return Ok(n) };
        after = last.0;
        let (mut ids, mut sources, mut vendors, mut received, mut statuses, mut reasons, mut details, mut bodies) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for (id, src, vendor, at, status, reason, detail, body) in rows {
            ids.push(id);
            sources.push(src);
            vendors.push(vendor);
            received.push(at);
            statuses.push(status);
            reasons.push(reason);
            details.push(detail);
            bodies.push(body);
        }
        n += sqlx::query(
            "INSERT INTO quarantine (id, source, vendor, received_at, status, reason, details, body) OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int4[], $6::text[], $7::text[], $8::bytea[])",
        )
        .bind(&ids)
        .bind(&sources)
        .bind(&vendors)
        .bind(&received)
        .bind(&statuses)
        .bind(&reasons)
        .bind(&details)
        .bind(&bodies)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
}

async fn copy_paused(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    // A handful of rows (one per route): no chunks. The keyset parameters are unused.
    let rows = source.chunk(
        "SELECT route, since, reason FROM paused_routes WHERE ?1 = ?1 ORDER BY route LIMIT ?2",
        0,
        i64::MAX,
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)),
    )?;
    let (mut routes, mut since, mut reasons) = (vec![], vec![], vec![]);
    for (route, at, reason) in rows {
        routes.push(route);
        since.push(at);
        reasons.push(reason);
    }
    if routes.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "INSERT INTO paused_routes (route, since, reason) SELECT * FROM unnest($1::text[], $2::int8[], $3::text[])",
    )
    .bind(&routes)
    .bind(&since)
    .bind(&reasons)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

async fn copy_drift(source: &Source, tx: &mut PgConnection) -> Result<u64, CopyError> {
    // Bounded by the cap of rows per source: no chunks. The keyset parameters are unused.
    let rows = source.chunk(
        "SELECT source, vendor_event, kind, path, value, count, first_seen, last_seen, example FROM drift
          WHERE ?1 = ?1 ORDER BY source, vendor_event, kind, path, value LIMIT ?2",
        0,
        i64::MAX,
        |r| {
            Ok((
                [r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(8)?],
                [r.get::<_, i64>(5)?, r.get(6)?, r.get(7)?],
            ))
        },
    )?;
    if rows.is_empty() {
        return Ok(0);
    }
    let text = |i: usize| rows.iter().map(|(t, _)| t[i].clone()).collect::<Vec<String>>();
    let number = |i: usize| rows.iter().map(|(_, n)| n[i]).collect::<Vec<i64>>();
    Ok(sqlx::query(
        "INSERT INTO drift (source, vendor_event, kind, path, value, count, first_seen, last_seen, example)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::int8[], $7::int8[], $8::int8[], $9::text[])",
    )
    .bind(text(0))
    .bind(text(1))
    .bind(text(2))
    .bind(text(3))
    .bind(text(4))
    .bind(number(0))
    .bind(number(1))
    .bind(number(2))
    .bind(text(5))
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests;
