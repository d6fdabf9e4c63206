//! Test harness: the real `callgate` binary on loopback, and a recording receiver.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::any,
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
};

/// Longest any test waits for something to happen before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("receiver got JSON")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A scripted answer: a status and extra response headers.
type Answer = (u16, Vec<(String, String)>);

/// What the receiver answers: scripted statuses per path (consumed in order), then 200.
#[derive(Default)]
struct Script {
    statuses: Vec<(String, VecDeque<Answer>)>,
    /// Paths whose requests wait until `release` is notified.
    held: Vec<String>,
    /// Requests whose body contains the text always get the status.
    failing_bodies: Vec<(String, u16)>,
    /// One-off answers with a large body: (path, status, size).
    big_bodies: Vec<(String, u16, usize)>,
    /// Paths whose first request of each event id gets the status (retries then succeed).
    fail_first: Vec<(String, u16)>,
    /// (path, event id) pairs already seen on a `fail_first` path.
    seen: HashSet<(String, String)>,
}

/// Requests waiting for their answer, and what they reveal about concurrency.
#[derive(Default)]
struct Flight {
    next: u64,
    /// Requests whose answer is not out yet, by arrival number.
    pending: HashMap<u64, Received>,
    /// Requests that arrived while another request of the same event subject to the same path
    /// was still unanswered: (path, subject, event id).
    overlaps: Vec<(String, String, String)>,
    /// Every request answered, with the status it got, in answer order.
    answered: Vec<(Received, u16)>,
}

/// Takes a request out of `pending` when its handler ends, answered or dropped (a client that
/// went away, such as a SIGKILLed gateway).
struct InFlight {
    flight: Arc<Mutex<Flight>>,
    number: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.flight.lock().unwrap().pending.remove(&self.number);
    }
}

#[derive(Clone)]
struct Shared {
    log: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    script: Arc<Mutex<Script>>,
    release: Arc<Notify>,
    flight: Arc<Mutex<Flight>>,
}

/// A downstream on 127.0.0.1 that records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    /// Serves on a given listener (to come back on the same port after `stop`).
    pub fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let (receiver, app) = Self::app(&listener);
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        receiver
    }

    /// A receiver whose HTTP server refuses a request head (request line and headers) over
    /// `limit` bytes, as common servers do at 8–16 KiB: hyper's `max_buf_size`, which
    /// `axum::serve` does not expose. hyper answers such a request 431 without recording it.
    pub async fn start_with_head_limit(limit: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (receiver, app) = Self::app(&listener);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.max_buf_size(limit);
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
        receiver
    }

    fn app(listener: &tokio::net::TcpListener) -> (Receiver, Router) {
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            log: Arc::default(),
            arrived: Arc::new(Notify::new()),
            script: Arc::default(),
            release: Arc::new(Notify::new()),
            flight: Arc::default(),
        };
        let app = Router::new().fallback(any(record)).with_state(shared.clone());
        (Receiver { addr, shared }, app)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests to `path` get these statuses, in order (then 200 again).
    pub fn respond(&self, path: &str, statuses: &[u16]) {
        self.respond_with(path, statuses.iter().map(|s| (*s, vec![])).collect());
    }

    pub fn respond_with(&self, path: &str, answers: Vec<Answer>) {
        let mut script = self.shared.script.lock().unwrap();
        script.statuses.push((path.to_owned(), answers.into_iter().collect()));
    }

    /// The next request to `path` gets `status` with a body of `size` bytes.
    pub fn respond_big(&self, path: &str, status: u16, size: usize) {
        self.shared.script.lock().unwrap().big_bodies.push((path.to_owned(), status, size));
    }

    /// Every request whose body contains `needle` gets `status`, for good.
    pub fn fail_bodies_containing(&self, needle: &str, status: u16) {
        self.shared.script.lock().unwrap().failing_bodies.push((needle.to_owned(), status));
    }

    /// Forgets the scripted answers of `path`: it answers 200 again.
    pub fn clear_script(&self, path: &str) {
        self.shared.script.lock().unwrap().statuses.retain(|(p, _)| p != path);
    }

    /// Requests to `path` wait until [`Receiver::release`].
    pub fn hold(&self, path: &str) {
        self.shared.script.lock().unwrap().held.push(path.to_owned());
    }

    pub fn release(&self) {
        self.shared.script.lock().unwrap().held.clear();
        self.shared.release.notify_waiters();
    }

    pub fn all(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn at(&self, path: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path == path).collect()
    }

    /// Waits until at least `n` requests reached `path`, and returns them.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                panic!("{path}: {} of {n} requests arrived before the deadline", self.at(path).len());
            }
        }
    }
}

/// What the replica tests (`tests/postgres` only) check at the receiver.
#[allow(dead_code)]
impl Receiver {
    /// The first request of each event id (the CloudEvents `id` of the body) to `path` gets
    /// `status`; its retries get the usual answer.
    pub fn fail_first_attempt(&self, path: &str, status: u16) {
        self.shared.script.lock().unwrap().fail_first.push((path.to_owned(), status));
    }

    /// Requests that arrived while another one of the same event subject to the same path was
    /// unanswered: (path, subject, event id). Empty when a route never had two events of one
    /// call in flight at once.
    pub fn overlaps(&self) -> Vec<(String, String, String)> {
        self.shared.flight.lock().unwrap().overlaps.clone()
    }

    /// Requests to `path` answered so far (not those whose client went away first), with their
    /// status, in answer order.
    pub fn answered(&self, path: &str) -> Vec<(Received, u16)> {
        let flight = self.shared.flight.lock().unwrap();
        flight.answered.iter().filter(|(r, _)| r.path == path).cloned().collect()
    }

    /// Requests to `path` that arrived and are not answered yet (held, or being answered).
    pub fn pending(&self, path: &str) -> Vec<Received> {
        let flight = self.shared.flight.lock().unwrap();
        flight.pending.values().filter(|r| r.path == path).cloned().collect()
    }

    /// Waits until the unanswered requests to `path` satisfy `done`, and returns them.
    pub async fn wait_pending(&self, path: &str, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let notified = self.shared.arrived.notified();
            let pending = self.pending(path);
            if done(&pending) {
                return pending;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                panic!("{path}: never {what}: {} requests pending", self.pending(path).len());
            }
        }
    }

    /// Waits until `done` holds for the answered requests to `path` (checked at every arrival
    /// and answer).
    pub async fn wait_answered(&self, path: &str, what: &str, done: impl Fn(&[(Received, u16)]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let notified = self.shared.arrived.notified();
            if done(&self.answered(path)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                panic!("{path}: never {what} ({} answered)", self.answered(path).len());
            }
        }
    }
}

async fn record(State(shared): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let big = {
        let mut script = shared.script.lock().unwrap();
        let found = script.big_bodies.iter().position(|(p, _, _)| *p == path);
        found.map(|i| script.big_bodies.remove(i))
    };
    if let Some((_, status, size)) = big {
        shared.log.lock().unwrap().push(Received { path: path.clone(), headers, body });
        shared.arrived.notify_waiters();
        return (StatusCode::from_u16(status).unwrap(), "x".repeat(size)).into_response();
    }
    let (answer, held) = {
        let mut script = shared.script.lock().unwrap();
        let text = String::from_utf8_lossy(&body);
        let first_failure = script.fail_first.iter().find(|(p, _)| *p == path).map(|(_, s)| *s).and_then(|status| {
            let id = event_field(&body, "id")?;
            script.seen.insert((path.clone(), id)).then_some((status, vec![]))
        });
        let answer = match script.failing_bodies.iter().find(|(needle, _)| text.contains(needle.as_str())) {
            Some((_, status)) => Some((*status, vec![])),
            None => first_failure.or_else(|| {
                script.statuses.iter_mut().find(|(p, q)| *p == path && !q.is_empty()).and_then(|(_, q)| q.pop_front())
            }),
        };
        (answer, script.held.contains(&path))
    };
    let released = shared.release.notified();
    let received = Received { path: path.clone(), headers, body };
    let in_flight = {
        let mut flight = shared.flight.lock().unwrap();
        if let Some(subject) = event_field(&received.body, "subject") {
            let busy = flight
                .pending
                .values()
                .any(|r| r.path == path && event_field(&r.body, "subject").as_ref() == Some(&subject));
            if busy {
                let id = event_field(&received.body, "id").unwrap_or_default();
                flight.overlaps.push((path.clone(), subject, id));
            }
        }
        flight.next += 1;
        let number = flight.next;
        flight.pending.insert(number, received.clone());
        InFlight { flight: shared.flight.clone(), number }
    };
    shared.log.lock().unwrap().push(received.clone());
    shared.arrived.notify_waiters();
    // A held request has arrived (it is in the log) but is not answered until released.
    if held && shared.script.lock().unwrap().held.contains(&path) {
        released.await;
    }
    let status = answer.as_ref().map_or(200, |(s, _)| *s);
    {
        let mut flight = shared.flight.lock().unwrap();
        flight.pending.remove(&in_flight.number);
        flight.answered.push((received, status));
    }
    drop(in_flight);
    shared.arrived.notify_waiters();
    match answer {
        Some((status, headers)) => {
            let mut response = (StatusCode::from_u16(status).unwrap(), "scripted failure").into_response();
            for (k, v) in headers {
                response.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    axum::http::HeaderValue::from_str(&v).unwrap(),
                );
            }
            response
        }
        None => (StatusCode::OK, "ok").into_response(),
    }
}

/// A string field of a JSON request body (a CloudEvent's `id`, `subject`).
fn event_field(body: &[u8], name: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get(name)?.as_str().map(str::to_owned)
}

/// A running `callgate serve`, killed on drop.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    child: Mutex<Option<Child>>,
    pub http: reqwest::Client,
    stderr: Arc<Mutex<String>>,
}

/// Which store this integration-test binary runs the suite against: `tests/it` on SQLite,
/// `tests/postgres` (the same modules) on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    crate::BACKEND
}

/// The server PostgreSQL test databases are made on (`CALLGATE_TEST_PG_URL`).
pub fn pg_admin_url() -> String {
    std::env::var("CALLGATE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether this binary's backend can be used. PostgreSQL unreachable: a failure under
/// `CI=true`, otherwise one clear line and the test returns (see [`require_backend!`]).
pub fn backend_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        if backend() == Backend::Sqlite {
            return true;
        }
        match psql(&pg_admin_url(), "SELECT 1") {
            Ok(_) => true,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but PostgreSQL is unreachable at {}: {e}", pg_admin_url())
            }
            Err(e) => {
                eprintln!("PostgreSQL half of the integration suite skipped: {e} (set CALLGATE_TEST_PG_URL)");
                false
            }
        }
    })
}

/// First line of every integration test: returns from it when the backend is unavailable.
#[macro_export]
macro_rules! require_backend {
    () => {
        if !$crate::support::backend_ready() {
            return;
        }
    };
}

/// Returns from a test that checks something only one backend has (a SQLite file's bytes).
#[macro_export]
macro_rules! sqlite_only {
    ($why:literal) => {
        if $crate::support::backend() != $crate::support::Backend::Sqlite {
            println!("skipped on {:?}: {}", $crate::support::backend(), $why);
            return;
        }
    };
}

/// Runs one statement with `psql` and returns its rows, fields split.
pub fn psql(url: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let out = Command::new("psql")
        .args([url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-F", "\u{1f}", "-c", sql])
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\u{1f}').map(str::to_owned).collect()).collect())
}

/// The PostgreSQL database of a test directory: named after it, so a config built from the
/// path alone finds it.
pub fn pg_database(dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy().to_ascii_lowercase();
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("cg_{}_{name}", std::process::id())
}

fn pg_url(database: &str) -> String {
    let mut url = url::Url::parse(&pg_admin_url()).unwrap();
    url.set_path(database);
    url.to_string()
}

/// A temporary directory for one gateway (config, SQLite file), and for PostgreSQL its own
/// database, dropped with the directory.
pub struct TestDir {
    dir: tempfile::TempDir,
    database: Option<String>,
}

impl TestDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Some(database) = &self.database {
            // The gateways are gone (dropped first), but PostgreSQL may not have noticed yet.
            let _ = psql(&pg_admin_url(), &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
        }
    }
}

/// A temporary directory for one gateway (config, database).
pub fn temp_dir() -> TestDir {
    let dir = tempfile::Builder::new().prefix("callgate-it-").tempdir().unwrap();
    let database = (backend() == Backend::Postgres).then(|| {
        let database = pg_database(dir.path());
        psql(&pg_admin_url(), &format!("CREATE DATABASE {database}")).expect("create a test database");
        database
    });
    TestDir { dir, database }
}

/// The `storage.url` of a test directory's store.
pub fn storage_url(dir: &Path) -> String {
    match backend() {
        Backend::Sqlite => format!("sqlite://{}/callgate.db", dir.display()),
        Backend::Postgres => pg_url(&pg_database(dir)),
    }
}

/// Everything the store holds, as text: the SQLite files' bytes, or a PostgreSQL dump (with
/// `bytea` decoded, so a body reads as sent).
pub fn store_dump(dir: &Path) -> String {
    match backend() {
        Backend::Sqlite => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.to_string_lossy().contains("callgate.db") {
                    bytes.extend(std::fs::read(path).unwrap());
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Backend::Postgres => {
            let url = pg_url(&pg_database(dir));
            let out = Command::new("pg_dump").args(["--data-only", "--no-owner", &url]).output().unwrap();
            assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            // COPY writes bytea as \\x<hex>: decode each such value so what a body holds shows.
            let decoded: Vec<String> = text
                .split(|c: char| c.is_whitespace())
                .filter_map(|word| word.strip_prefix("\\\\x"))
                .filter_map(|hex_value| hex::decode(hex_value).ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .collect();
            for value in decoded {
                text.push('\n');
                text.push_str(&value);
            }
            text
        }
    }
}

/// Rows of a query against a test directory's store, every value as text (NULL is empty).
/// The tables and columns are the same on both backends.
pub fn store_rows(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    match backend() {
        Backend::Sqlite => {
            let db = rusqlite::Connection::open(dir.join("callgate.db")).unwrap();
            let mut stmt = db.prepare(sql).unwrap();
            let columns = stmt.column_count();
            stmt.query_map([], |row| {
                (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => String::new(),
                            rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                            rusqlite::types::ValueRef::Real(x) => x.to_string(),
                            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                                String::from_utf8_lossy(t).into_owned()
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        }
        Backend::Postgres => psql(&pg_url(&pg_database(dir)), sql).unwrap(),
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_callgate")
}

/// Config lines every test gateway shares: an ephemeral port and a database in `dir`.
pub fn base_config(dir: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[storage]
url = "{}"

[sources.oneinbox]
vendor = "oneinbox"

[sources.vox]
vendor = "vox"
phone_region = "KR"

[sources.salpre]
vendor = "salpre"

[sources.utel]
vendor = "utel"
phone_region = "UZ"

[sources.retell]
vendor = "retell"
"#,
        storage_url(dir)
    )
}

impl Gateway {
    /// Writes `config` to `dir/gateway.toml` and starts the binary on it.
    pub async fn start(dir: &Path, config: &str) -> Gateway {
        Self::start_with_env(dir, config, &[]).await
    }

    pub async fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("CALLGATE_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start callgate");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        // The gateway prints its bound addresses on stdout once it serves.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("callgate listening") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(DEADLINE))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("callgate did not start:\n{}", log.lock().unwrap()));
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(|a| a.parse::<SocketAddr>().unwrap())
        };
        Gateway {
            addr: field("ingress").unwrap(),
            admin: field("admin"),
            child: Mutex::new(Some(child)),
            http: reqwest::Client::new(),
            stderr: log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.unwrap_or(self.addr))
    }

    /// POSTs a body to `/v1/ingest/{source}` and returns (status, JSON body).
    pub async fn post(&self, source: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self.http.post(self.url(&format!("/v1/ingest/{source}"))).body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json)
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.ops_url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// The value of one series (exact label set as rendered), or 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until `series` is exported with `value` (the gateway has no push signal for
    /// metrics, so this polls the endpoint until the deadline).
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = self.metrics().await;
            if metric_present(&text, series) && metric_value(&text, series) == value {
                return;
            }
            assert!(Instant::now() < deadline, "{series} never became {value}\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the gateway has logged a line containing `needle` (logs arrive through a
    /// pipe, a moment after the response that caused them), and returns that line.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.logs().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with `{needle}`:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().as_ref().expect("running").id()
    }

    /// SIGKILL, at once: no chance to finish anything.
    pub fn kill_now(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(self) -> std::process::ExitStatus {
        let mut child = self.child.lock().unwrap().take().unwrap();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn metric_present(text: &str, series: &str) -> bool {
    text.lines().any(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
}

/// The value of a series in a Prometheus text page; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A fixture payload's bytes.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)).unwrap()
}

/// The expected canonical events of a fixture.
pub fn expected(path: &str) -> Vec<Value> {
    let expected_path = path.replace(".json", ".expected.json");
    serde_json::from_slice::<Value>(&fixture(&expected_path)).unwrap().as_array().unwrap().clone()
}

/// A canonical event with the fields that depend on the moment of ingest removed.
pub fn without_received_at(mut event: Value) -> Value {
    let received = event["data"]["received_at"].take();
    // `time` falls back to received_at when the vendor gives no time.
    if event["time"] == received {
        event["time"] = Value::Null;
    }
    event["data"]["received_at"] = Value::Null;
    event
}

/// A request whose head is complete but whose body never finishes: it stays open until the
/// gateway answers (or the test drops it).
pub async fn trickle(gateway: &Gateway, path: &str, extra_headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n{extra_headers}\r\n{{");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads the status line of the answer on a raw connection.
pub async fn status_line(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        match tokio::time::timeout(DEADLINE, stream.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            other => panic!("no answer on a raw connection ({other:?}), got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    String::from_utf8_lossy(&buf).trim().to_owned()
}
