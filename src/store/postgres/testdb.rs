//! A database of its own for each test, on the server `CALLGATE_TEST_PG_URL` names (default: the
//! local cluster), dropped when the test ends. Without a reachable server the PostgreSQL tests
//! are skipped with a clear line, except under `CI=true`, where they fail.

use std::{
    io::Write,
    str::FromStr,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use sqlx::{ConnectOptions, Connection, Executor, postgres::PgConnectOptions};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static NEXT: AtomicUsize = AtomicUsize::new(0);
static SAID: AtomicBool = AtomicBool::new(false);

/// A scratch database; dropped (with any connection still open to it) on drop.
pub struct TestDb {
    pub url: String,
    name: String,
    admin: PgConnectOptions,
}

fn admin_url() -> String {
    std::env::var("CALLGATE_TEST_PG_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Creates a fresh database, or returns `None` (after saying so) when PostgreSQL cannot be
/// reached outside CI.
pub async fn create() -> Option<TestDb> {
    let url = admin_url();
    match try_create(&url).await {
        Ok(db) => Some(db),
        Err(e) => {
            let why = format!("cannot use PostgreSQL at {} ({e})", super::redact(&url));
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required in CI: {why}");
            }
            // Straight to stderr, once: libtest hides `eprintln!` of a passing test.
            if !SAID.swap(true, Ordering::Relaxed) {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "\nPostgreSQL half skipped: {why}; set CALLGATE_TEST_PG_URL to run it (CI=true makes this a failure)\n"
                );
            }
            None
        }
    }
}

async fn try_create(url: &str) -> Result<TestDb, sqlx::Error> {
    let admin = PgConnectOptions::from_str(url)?;
    let mut conn = tokio::time::timeout(Duration::from_secs(5), admin.connect())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let name = format!("callgate_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await?;
    conn.close().await?;
    let mut db_url = url::Url::parse(url).map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
    db_url.set_path(&format!("/{name}"));
    Ok(TestDb { url: db_url.to_string(), name, admin })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime that is shutting down: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = admin.connect().await.ok()?;
                conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}
