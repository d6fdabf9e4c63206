//! `cargo bench --bench gateway`: the end-to-end benchmark of callgate against the cheapest
//! possible HTTP endpoint on the same machine, measured in one run with one load generator.
//!
//! It starts the release `callgate` binary (durable SQLite store on disk) and, as the
//! baseline, a minimal axum handler that parses the JSON body and answers 200 storing nothing
//! (this same program, re-executed as `--ceiling`). The load generator is in-process: `C`
//! keep-alive HTTP/1 connections in a closed loop, or an open loop at a fixed rate for the
//! latency target. Results go to stdout and to BENCHMARKS.md.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, routing::post};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

const CONCURRENCY: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--ceiling") {
        return ceiling_server();
    }
    if args.iter().any(|a| a == "--sink") {
        return sink_server();
    }
    let quick = std::env::var_os("CALLGATE_BENCH_QUICK").is_some();
    let phase = Duration::from_secs(if quick { 3 } else { 10 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(phase));
}

/// The baseline: parse the JSON body, answer 200, store nothing.
fn ceiling_server() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let app = Router::new().route(
            "/v1/ingest/{source}",
            post(|body: Bytes| async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(_) => (axum::http::StatusCode::OK, "{\"accepted\":1}"),
                    Err(_) => (axum::http::StatusCode::BAD_REQUEST, "{}"),
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("callgate listening ingress={}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

/// A running server process (gateway or ceiling).
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn spawn(mut command: Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.find_map(|l| l.ok().filter(|l| l.starts_with("callgate listening"))).expect("listening line");
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("ingress=")).unwrap().parse().unwrap();
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    /// CPU time (user + sys, all threads) the process has used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| {
                // Fields after the command name (which may hold spaces) start at its `)`.
                let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                let utime: f64 = rest.get(11)?.parse().ok()?;
                let stime: f64 = rest.get(12)?.parse().ok()?;
                Some((utime + stime) / 100.0)
            })
            .unwrap_or(f64::NAN)
    }

    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
            })
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn gateway(store: &BenchStore, routes: usize, receiver: Option<SocketAddr>) -> Server {
    let dir = store.dir.path();
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_concurrent_requests = 4096\n[storage]\nurl = \"{}\"\n[log]\nfilter = \"warn\"\n\
         [sources.oneinbox]\nvendor = \"oneinbox\"\n[sources.vox]\nvendor = \"vox\"\nphone_region = \"KR\"\n\
         [sources.salpre]\nvendor = \"salpre\"\n[sources.utel]\nvendor = \"utel\"\nphone_region = \"UZ\"\n[delivery]\nconcurrency = 32\n",
        store.url()
    );
    for i in 0..routes {
        let receiver = receiver.expect("a receiver for routes");
        let _ = write!(config, "[routes.r{i}]\nurl = \"http://{receiver}/r{i}\"\ninclude_test = true\n");
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    // `CALLGATE_BENCH_BIN`: another build's binary, for A/B runs under one load generator.
    let binary = std::env::var_os("CALLGATE_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_callgate").into());
    let mut command = Command::new(binary);
    command.args(["serve", "--config"]).arg(&path);
    Server::spawn(command)
}

/// The PostgreSQL server the bench may use: `CALLGATE_BENCH_PG_URL` (an admin URL whose user
/// may create databases), else the local cluster.
fn pg_admin_url() -> String {
    std::env::var("CALLGATE_BENCH_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Connects to the PostgreSQL admin database, or says why not.
async fn pg_admin(url: &str) -> Result<sqlx::PgConnection, String> {
    use sqlx::ConnectOptions;
    let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// Which backend a phase's gateway stores into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A phase's store: a temporary directory (the config, and the SQLite file) and, for
/// PostgreSQL, a fresh database dropped by [`BenchStore::finish`] (every phase starts from
/// empty tables, so one phase's dead tuples never slow the next: autovacuum may be off).
struct BenchStore {
    dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl BenchStore {
    async fn new(backend: Backend) -> BenchStore {
        let dir = tempfile::tempdir().unwrap();
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                use sqlx::Executor;
                let admin = pg_admin_url();
                let mut conn = pg_admin(&admin).await.expect("PostgreSQL became unreachable");
                let name = format!("callgate_bench_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
                conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .await
                    .unwrap();
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
                // Every phase starts without the previous phases' checkpoint debt (SQLite's start
                // with a fresh file). Needs superuser or pg_checkpoint; without, phases just run.
                let _ = conn.execute("CHECKPOINT").await;
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&format!("/{name}"));
                Some((url.to_string(), name))
            }
        };
        BenchStore { dir, pg }
    }

    fn url(&self) -> String {
        match &self.pg {
            Some((url, _)) => url.clone(),
            None => format!("sqlite://{}/bench.db", self.dir.path().display()),
        }
    }

    /// Rows of `payloads`: what the store holds after a phase.
    async fn payloads(&self) -> u64 {
        match &self.pg {
            None => count_rows(&self.dir.path().join("bench.db"), "payloads"),
            Some((url, _)) => {
                let mut conn = pg_admin(url).await.unwrap();
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM payloads").fetch_one(&mut conn).await.unwrap();
                n as u64
            }
        }
    }

    /// CPU seconds (user + sys) of the PostgreSQL backends serving this phase's database now
    /// (diagnostics only; 0 for SQLite): read from `/proc`, by their process titles.
    fn pg_backend_cpu(&self) -> f64 {
        let Some((_, name)) = &self.pg else { return 0.0 };
        let Ok(procs) = std::fs::read_dir("/proc") else { return f64::NAN };
        let mut ticks = 0.0;
        for entry in procs.flatten() {
            let dir = entry.path();
            let title = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&title).contains(&format!(" {name} ")) {
                continue;
            }
            if let Ok(stat) = std::fs::read_to_string(dir.join("stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
            {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
                ticks += field(11) + field(12);
            }
        }
        ticks / 100.0
    }

    /// Size of the SQLite WAL (diagnostics only; 0 for PostgreSQL).
    fn wal_mb(&self) -> f64 {
        std::fs::metadata(self.dir.path().join("bench.db-wal")).map_or(0, |m| m.len()) as f64 / 1e6
    }

    /// Drops the PostgreSQL database (after its gateway stopped).
    async fn finish(self) {
        if let Some((_, name)) = &self.pg {
            use sqlx::Executor;
            if let Ok(mut conn) = pg_admin(&pg_admin_url()).await
                && let Err(e) =
                    conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await
            {
                println!("  (could not drop database {name}: {e})");
            }
        }
    }
}

fn ceiling() -> Server {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.arg("--ceiling");
    Server::spawn(command)
}

/// Request bodies: every vendor's documented examples, each given its own call id per
/// request, so that every request is a new call (duplicate detection never short-cuts the
/// work, and per-call ordering never serialises deliveries that real traffic would not).
struct Corpus {
    templates: Vec<(String, Vec<u8>)>,
}

/// Where each vendor keeps the call id (Salpre's is an integer).
const CALL_ID_POINTERS: &[&str] = &[
    "/call_id",
    "/call/call_id",
    "/mid_call/call_id",
    "/payload/call_id",
    "/payload/call/id",
    "/data/call/id",
    "/data/call_first/id",
    "/data/call_history/call_id",
    "/sms/message_id",
];

impl Corpus {
    fn mixed() -> Corpus {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut templates = Vec::new();
        for vendor in ["oneinbox", "vox", "salpre", "utel"] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(vendor))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    (name.starts_with("doc-") || name.starts_with("synthetic-")) && !name.ends_with(".expected.json")
                })
                .collect();
            files.sort();
            for file in files {
                let value: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
                templates.push((vendor.to_owned(), serde_json::to_vec(&value).unwrap()));
            }
        }
        Corpus { templates }
    }

    /// A vox `call_ended` whose transcript brings it to about `size` bytes.
    fn long_transcript(size: usize) -> Corpus {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vox/doc-call_ended.json");
        let mut value: Value = serde_json::from_slice(&std::fs::read(root).unwrap()).unwrap();
        let line = serde_json::json!({"role": "user", "content": "주문 상태를 확인하고 싶습니다. 배송은 언제 도착하나요? 감사합니다."});
        while serde_json::to_vec(&value).unwrap().len() < size {
            value["call"]["transcript"].as_array_mut().unwrap().push(line.clone());
        }
        Corpus { templates: vec![("vox".into(), serde_json::to_vec(&value).unwrap())] }
    }

    fn mean_size(&self) -> usize {
        self.templates.iter().map(|(_, b)| b.len()).sum::<usize>() / self.templates.len()
    }

    /// The n-th request: (path, body).
    fn request(&self, n: u64) -> (String, Vec<u8>) {
        let (source, template) = &self.templates[n as usize % self.templates.len()];
        let mut value: Value = serde_json::from_slice(template).unwrap();
        for pointer in CALL_ID_POINTERS {
            if let Some(id) = value.pointer_mut(pointer) {
                *id = match id {
                    Value::Number(_) => Value::from(n),
                    Value::String(s) => Value::from(format!("{s}-{n}")),
                    _ => continue,
                };
            }
        }
        (format!("/v1/ingest/{source}"), serde_json::to_vec(&value).unwrap())
    }
}

/// What a load run measured.
#[derive(Default, Clone)]
struct Load {
    ok: u64,
    /// Canonical events the gateway said it accepted (`accepted` of each 200).
    events: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Load {
    /// Counts one answer (`Some(events)` for a 200); false when the connection must be renewed.
    fn record(&mut self, answer: Option<u64>, latency: Duration) -> bool {
        match answer {
            Some(events) => {
                self.ok += 1;
                self.events += events;
                self.latencies_us.push(latency.as_micros() as u64);
                true
            }
            None => {
                self.errors += 1;
                false
            }
        }
    }

    fn merge(&mut self, other: Load) {
        self.ok += other.ok;
        self.events += other.events;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i] as f64 / 1000.0
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends one request; the number of events accepted when the answer is 200.
async fn send(sender: &mut Sender, addr: SocketAddr, path: &str, body: Vec<u8>) -> Option<u64> {
    let request = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    let ok = response.status() == 200;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    ok.then(|| serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["accepted"].as_u64()).unwrap_or(0))
}

/// Closed loop: `CONCURRENCY` connections, each sending its next request as soon as the
/// previous one is answered, for `duration`.
async fn closed_loop(addr: SocketAddr, corpus: Arc<Corpus>, duration: Duration, seq: Arc<AtomicU64>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (corpus, stop, seq) = (corpus.clone(), stop.clone(), seq.clone());
        tasks.spawn(async move {
            let mut sender = connect(addr).await;
            let mut load = Load::default();
            while !stop.load(Ordering::Relaxed) {
                let (path, body) = corpus.request(seq.fetch_add(1, Ordering::Relaxed));
                let started = Instant::now();
                let answer = send(&mut sender, addr, &path, body).await;
                if !load.record(answer, started.elapsed()) {
                    sender = connect(addr).await;
                }
            }
            load
        });
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Load::default();
    while let Some(load) = tasks.join_next().await {
        total.merge(load.unwrap());
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// Open loop at `rate` requests/s: latency is measured from each request's scheduled time,
/// so a stall shows up in the percentiles instead of slowing the generator down.
async fn open_loop(addr: SocketAddr, corpus: Arc<Corpus>, rate: u64, duration: Duration, seq: Arc<AtomicU64>) -> Load {
    let connections = CONCURRENCY;
    let (tx, rx) = async_channel(connections * 4);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (rx, corpus, seq) = (rx.clone(), corpus.clone(), seq.clone());
        tasks.spawn(async move {
            let mut sender = connect(addr).await;
            let mut load = Load::default();
            while let Ok(scheduled) = recv(&rx).await {
                let (path, body) = corpus.request(seq.fetch_add(1, Ordering::Relaxed));
                let answer = send(&mut sender, addr, &path, body).await;
                if !load.record(answer, scheduled.elapsed()) {
                    sender = connect(addr).await;
                }
            }
            load
        });
    }
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = started;
    while started.elapsed() < duration {
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        if tx.send(next).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut total = Load::default();
    while let Some(load) = tasks.join_next().await {
        total.merge(load.unwrap());
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

type Rx = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Instant>>>;

fn async_channel(capacity: usize) -> (tokio::sync::mpsc::Sender<Instant>, Rx) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

async fn recv(rx: &Rx) -> Result<Instant, ()> {
    rx.lock().await.recv().await.ok_or(())
}

/// A fast downstream, in its own process (so it does not share the load generator's
/// runtime): answers 200 at once and records, per request, the delay from the gateway's
/// `received_at` to arrival (both read from this machine's clock). `GET /__stats` reports.
#[derive(Clone, Default)]
struct SinkState {
    count: Arc<AtomicU64>,
    delays_us: Arc<Mutex<Vec<u64>>>,
}

fn sink_server() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let state = SinkState::default();
        let stats = state.clone();
        let app = Router::new()
            .route(
                "/__stats",
                axum::routing::get(move || {
                    let stats = stats.clone();
                    async move {
                        let delays = stats.delays_us.lock().unwrap().clone();
                        axum::Json(
                            serde_json::json!({"count": stats.count.load(Ordering::Relaxed), "delays_us": delays}),
                        )
                    }
                }),
            )
            .fallback(move |body: Bytes| {
                let state = state.clone();
                async move {
                    let now = chrono::Utc::now();
                    if let Ok(event) = serde_json::from_slice::<Value>(&body)
                        && let Some(at) = event["data"]["received_at"]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    {
                        let delay =
                            (now - at.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0).max(0) as u64;
                        state.delays_us.lock().unwrap().push(delay);
                    }
                    state.count.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("callgate listening ingress={}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

struct Sink {
    server: Server,
    http: reqwest::Client,
}

impl Sink {
    fn start() -> Sink {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.arg("--sink");
        Sink { server: Server::spawn(command), http: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    async fn stats(&self) -> (u64, Vec<u64>) {
        let v: Value =
            self.http.get(format!("http://{}/__stats", self.addr())).send().await.unwrap().json().await.unwrap();
        let delays = v["delays_us"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        (v["count"].as_u64().unwrap(), delays)
    }

    async fn count(&self) -> u64 {
        self.stats().await.0
    }
}

fn percentile(values: &[u64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn count_rows(db: &Path, table: &str) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// Canonical events each request of the mixed corpus produces, on average.
fn events_per_payload(corpus: &Corpus) -> f64 {
    let origin = |source: &str| callgate::vendors::Origin {
        source: "bench",
        vendor: callgate::canonical::Vendor::parse(source).unwrap(),
        phone_region: None,
    };
    let total: usize = corpus
        .templates
        .iter()
        .map(|(source, body)| {
            callgate::vendors::normalize(&origin(source), body, chrono::Utc::now()).unwrap().events.len()
        })
        .sum();
    total as f64 / corpus.templates.len() as f64
}

/// Single-thread validate-and-map throughput per vendor (payloads/s).
fn normalize_rates(corpus: &Corpus) -> Vec<(String, f64, usize)> {
    let mut by_vendor: HashMap<String, Vec<&Vec<u8>>> = HashMap::new();
    for (source, body) in &corpus.templates {
        by_vendor.entry(source.clone()).or_default().push(body);
    }
    let mut out = Vec::new();
    for vendor in ["oneinbox", "vox", "salpre", "utel"] {
        let bodies = &by_vendor[vendor];
        let origin = callgate::vendors::Origin {
            source: vendor,
            vendor: callgate::canonical::Vendor::parse(vendor).unwrap(),
            phone_region: "KR".parse().ok(),
        };
        let now = chrono::Utc::now();
        let started = Instant::now();
        let mut n = 0usize;
        while started.elapsed() < Duration::from_secs(1) {
            for body in bodies {
                std::hint::black_box(callgate::vendors::normalize(&origin, body, now).unwrap());
                n += 1;
            }
        }
        let size = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len();
        out.push((vendor.to_owned(), n as f64 / started.elapsed().as_secs_f64(), size));
    }
    out
}

struct Row {
    name: String,
    value: String,
    note: String,
}

/// Figures of one end-to-end phase.
struct E2e {
    /// Canonical events × routes the gateway accepted, per second of load.
    accepted: f64,
    /// Deliveries the receiver got while the load ran, per second.
    delivered: f64,
    /// Acceptance → delivery of every delivery, drain included (µs).
    delays: Vec<u64>,
    drained: u64,
    expected: u64,
    drain_seconds: f64,
}

impl E2e {
    fn ratio(&self) -> f64 {
        self.delivered / self.accepted
    }
    fn p99_ms(&self) -> f64 {
        percentile(&self.delays, 0.99)
    }
}

/// Saturated ingest with no routes: the load and the payloads found in the store after it.
async fn ingest_phase(
    backend: Backend,
    corpus: Arc<Corpus>,
    phase: Duration,
    seq: Arc<AtomicU64>,
    peak_rss: &mut u64,
) -> (Load, u64) {
    let store = BenchStore::new(backend).await;
    let gw = gateway(&store, 0, None);
    let load = closed_loop(gw.addr, corpus, phase, seq).await;
    let stored = store.payloads().await;
    *peak_rss = (*peak_rss).max(gw.peak_rss_kib());
    drop(gw);
    store.finish().await;
    (load, stored)
}

/// End to end with `routes` routes to a fresh receiver: saturated (closed loop) when
/// `offered` is `None`, else an open loop at that many payloads/s; then waits (up to 120 s)
/// for the backlog to drain.
async fn e2e_phase(
    backend: Backend,
    routes: usize,
    offered: Option<u64>,
    corpus: Arc<Corpus>,
    phase: Duration,
    seq: Arc<AtomicU64>,
    peak_rss: &mut u64,
) -> E2e {
    let sink = Sink::start();
    let store = BenchStore::new(backend).await;
    let gw = gateway(&store, routes, Some(sink.addr()));
    let load = match offered {
        None => closed_loop(gw.addr, corpus, phase, seq).await,
        Some(rate) => open_loop(gw.addr, corpus, rate, phase, seq).await,
    };
    let delivered_in_window = sink.count().await;
    if backend == Backend::Sqlite {
        println!("  (WAL after the load: {:.1} MB)", store.wal_mb());
    }
    let expected = load.events * routes as u64;
    let drain_started = Instant::now();
    while sink.count().await < expected && drain_started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let (drained, delays) = sink.stats().await;
    *peak_rss = (*peak_rss).max(gw.peak_rss_kib());
    drop(gw);
    store.finish().await;
    E2e {
        accepted: expected as f64 / load.seconds,
        delivered: delivered_in_window as f64 / load.seconds,
        delays,
        drained,
        expected,
        drain_seconds,
    }
}

fn e2e_mode(offered: Option<u64>) -> String {
    match offered {
        None => "saturated, c=64".to_owned(),
        Some(rate) => format!("{rate} payloads/s offered"),
    }
}

/// Whether PostgreSQL can be used: `Err(reason)` when not (the run then has SQLite rows only).
async fn pg_available() -> Result<(), String> {
    use sqlx::Connection;
    let url = pg_admin_url();
    let conn = pg_admin(&url).await.map_err(|e| format!("{}: {e}", callgate::store::postgres::redact(&url)))?;
    let _ = conn.close().await;
    Ok(())
}

async fn run(phase: Duration) {
    let seq = Arc::new(AtomicU64::new(0));
    let mixed = Arc::new(Corpus::mixed());
    let big = Arc::new(Corpus::long_transcript(32 * 1024));
    let per_payload = events_per_payload(&mixed);
    let mut rows: Vec<Row> = Vec::new();
    let mut peak_rss = 0u64;
    let row = |rows: &mut Vec<Row>, name: &str, value: String, note: String| {
        println!("{name:<58} {value:>14}  {note}");
        rows.push(Row { name: name.into(), value, note });
    };
    println!(
        "corpus: {} templates, mean {} B, {per_payload:.2} canonical events per payload; phases of {phase:?}",
        mixed.templates.len(),
        mixed.mean_size()
    );

    if std::env::var_os("CALLGATE_BENCH_E2E_ONLY").is_some() {
        return e2e_only(phase, mixed, seq).await;
    }
    let postgres = match pg_available().await {
        Ok(()) => true,
        Err(why) => {
            println!(
                "PostgreSQL unreachable ({why}): measuring SQLite only (set CALLGATE_BENCH_PG_URL to a server where the user may create databases)"
            );
            false
        }
    };
    // 1. The ceiling.
    let ceiling_server = ceiling();
    let base = closed_loop(ceiling_server.addr, mixed.clone(), phase, seq.clone()).await;
    drop(ceiling_server);
    row(
        &mut rows,
        "ceiling: bare axum JSON handler, c=64 (req/s)",
        format!("{:.0}", base.rate()),
        format!("p50 {:.2} ms, p99 {:.2} ms", base.percentile_ms(0.5), base.percentile_ms(0.99)),
    );

    // 2. Ingest, durable, no routes; then 3. latency at 2,000 payloads/s offered, on the same
    // gateway.
    let store = BenchStore::new(Backend::Sqlite).await;
    let gw = gateway(&store, 0, None);
    let ingest = closed_loop(gw.addr, mixed.clone(), phase, seq.clone()).await;
    let stored = store.payloads().await;
    peak_rss = peak_rss.max(gw.peak_rss_kib());
    row(
        &mut rows,
        "ingest: accepted payloads/s, c=64, 1 KB mix",
        format!("{:.0}", ingest.rate()),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, {} errors",
            ingest.percentile_ms(0.5),
            ingest.percentile_ms(0.99),
            ingest.errors
        ),
    );
    row(&mut rows, "ingest / ceiling", format!("{:.2}", ingest.rate() / base.rate()), "target >= 0.5".into());
    row(
        &mut rows,
        "acknowledged payloads found in the store",
        format!("{stored}/{}", ingest.ok),
        "every 200 is durable".into(),
    );

    let paced = open_loop(gw.addr, mixed.clone(), 2000, phase, seq.clone()).await;
    peak_rss = peak_rss.max(gw.peak_rss_kib());
    drop(gw);
    store.finish().await;
    row(
        &mut rows,
        "ingest p99 at 2,000 payloads/s offered (ms)",
        format!("{:.2}", paced.percentile_ms(0.99)),
        format!("p50 {:.2} ms, achieved {:.0}/s; target <= 10 ms", paced.percentile_ms(0.5), paced.rate()),
    );

    // 4. How cost grows with size: 1 KB and 32 KB vox `call_ended` (longer transcripts).
    let small = Arc::new(Corpus::long_transcript(1024));
    let store = BenchStore::new(Backend::Sqlite).await;
    let gw = gateway(&store, 0, None);
    let one_kb = closed_loop(gw.addr, small.clone(), phase, seq.clone()).await;
    let large = closed_loop(gw.addr, big.clone(), phase, seq.clone()).await;
    peak_rss = peak_rss.max(gw.peak_rss_kib());
    drop(gw);
    store.finish().await;
    row(
        &mut rows,
        &format!("ingest: {} B vox call_ended/s, c=64", small.mean_size()),
        format!("{:.0}", one_kb.rate()),
        format!("p99 {:.2} ms", one_kb.percentile_ms(0.99)),
    );
    row(
        &mut rows,
        &format!("ingest: {} KB vox call_ended/s, c=64", big.mean_size() / 1024),
        format!("{:.0}", large.rate()),
        format!("p99 {:.2} ms; {:.2}x the 1 KB rate", large.percentile_ms(0.99), large.rate() / one_kb.rate()),
    );

    // 5. End to end with 1 and 10 routes: first at saturation (closed loop), then at a
    // sustainable offered rate (open loop), where delivery must keep up.
    let mut sqlite_one_route: Vec<E2e> = Vec::new();
    for routes in [1usize, 10] {
        for offered in [None, Some(1000u64)] {
            let e2e =
                e2e_phase(Backend::Sqlite, routes, offered, mixed.clone(), phase, seq.clone(), &mut peak_rss).await;
            let mode = e2e_mode(offered);
            row(
                &mut rows,
                &format!("end to end, {routes} route(s), {mode}: deliveries/s"),
                format!("{:.0}", e2e.delivered),
                format!("{:.0} accepted/s; ratio {:.2} (target >= 0.9)", e2e.accepted, e2e.ratio()),
            );
            row(
                &mut rows,
                &format!("end to end, {routes} route(s), {mode}: acceptance -> delivery p99 (ms)"),
                format!("{:.1}", e2e.p99_ms()),
                format!(
                    "p50 {:.1} ms; {}/{} delivered, {:.1} s after the load stopped",
                    percentile(&e2e.delays, 0.5),
                    e2e.drained,
                    e2e.expected,
                    e2e.drain_seconds
                ),
            );
            if routes == 1 {
                sqlite_one_route.push(e2e);
            }
        }
    }

    // 6. PostgreSQL (a fresh database per phase on the same machine), against SQLite's
    // figures above.
    if postgres {
        let (pg_ingest, pg_stored) =
            ingest_phase(Backend::Postgres, mixed.clone(), phase, seq.clone(), &mut peak_rss).await;
        row(
            &mut rows,
            "PostgreSQL ingest: accepted payloads/s, c=64, 1 KB mix",
            format!("{:.0}", pg_ingest.rate()),
            format!(
                "{:.2}x SQLite's {:.0} (target >= 0.6); p50 {:.2} ms, p99 {:.2} ms, {} errors",
                pg_ingest.rate() / ingest.rate(),
                ingest.rate(),
                pg_ingest.percentile_ms(0.5),
                pg_ingest.percentile_ms(0.99),
                pg_ingest.errors
            ),
        );
        row(
            &mut rows,
            "PostgreSQL: acknowledged payloads found in the store",
            format!("{pg_stored}/{}", pg_ingest.ok),
            "every 200 is durable".into(),
        );
        for (offered, sqlite) in [None, Some(1000u64)].into_iter().zip(&sqlite_one_route) {
            let pg = e2e_phase(Backend::Postgres, 1, offered, mixed.clone(), phase, seq.clone(), &mut peak_rss).await;
            let mode = e2e_mode(offered);
            let target = match offered {
                None => {
                    format!("{:.2}x SQLite's {:.0} (target >= 0.6)", pg.delivered / sqlite.delivered, sqlite.delivered)
                }
                Some(_) => format!(
                    "ratio {:.2} (target >= 0.9), {:.2}x SQLite's {:.2}",
                    pg.ratio(),
                    pg.ratio() / sqlite.ratio(),
                    sqlite.ratio()
                ),
            };
            row(
                &mut rows,
                &format!("PostgreSQL end to end, 1 route(s), {mode}: deliveries/s"),
                format!("{:.0}", pg.delivered),
                format!("{:.0} accepted/s; {target}", pg.accepted),
            );
            let p99_target = if offered.is_some() { "target <= 100 ms; " } else { "" };
            row(
                &mut rows,
                &format!("PostgreSQL end to end, 1 route(s), {mode}: acceptance -> delivery p99 (ms)"),
                format!("{:.1}", pg.p99_ms()),
                format!(
                    "{p99_target}{:.2}x SQLite's {:.1} ms; p50 {:.1} ms; {}/{} delivered, {:.1} s after the load stopped",
                    pg.p99_ms() / sqlite.p99_ms(),
                    sqlite.p99_ms(),
                    percentile(&pg.delays, 0.5),
                    pg.drained,
                    pg.expected,
                    pg.drain_seconds
                ),
            );
        }
    }
    row(
        &mut rows,
        "peak RSS of the gateway (MB)",
        format!("{:.1}", peak_rss as f64 / 1024.0),
        "target <= 100 MB".into(),
    );

    for (vendor, rate, size) in normalize_rates(&mixed) {
        row(
            &mut rows,
            &format!("validate+map, one thread: {vendor} (payloads/s)"),
            format!("{rate:.0}"),
            format!("mean {size} B; target >= 100,000"),
        );
    }
    write_report(&rows, phase, postgres);
}

fn write_report(rows: &[Row], phase: Duration, postgres: bool) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024)
        })
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Produced by `cargo bench --bench gateway` on {} ({}).\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "Machine: {cpu}, {cores} cores, {memory} GiB; the load generator, the gateway (release build, SQLite on disk, `synchronous = FULL`) and the receiver share it. Phases of {} s, concurrency {CONCURRENCY}. The ceiling is a bare axum handler that parses the JSON body and stores nothing, measured in the same run with the same load generator; compare ratios, not absolute numbers, across machines.\n",
        phase.as_secs()
    );
    let _ = writeln!(
        out,
        "{}\n",
        if postgres {
            "The PostgreSQL rows come from the same run: the same gateway binary with `storage.url = \"postgres://…\"` (defaults: pool 16, 2 writers), a fresh database per phase on the local PostgreSQL server (same machine, same two cores, `synchronous_commit = on`), each figure set against SQLite's from this run."
        } else {
            "PostgreSQL was unreachable in this run: SQLite rows only."
        }
    );
    let _ = writeln!(out, "| measurement | value | notes |\n| --- | ---: | --- |");
    for row in rows {
        let _ = writeln!(out, "| {} | {} | {} |", row.name, row.value, row.note);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    std::fs::write(&path, out).unwrap();
    println!("\nwritten to {}", path.display());
}

/// Debugging aid: one phase, chosen by `CALLGATE_BENCH_E2E_ONLY`: `ingest` (saturated, no
/// routes), `paced` (2,000 payloads/s, no routes), `saturated` (1 route), `saturated10` (10
/// routes), `e2e1` (1 route at 1,000 payloads/s), else 10 routes at 1,000 payloads/s.
/// `CALLGATE_BENCH_BACKEND=postgres` runs it on a fresh PostgreSQL database.
async fn e2e_only(phase: Duration, mixed: Arc<Corpus>, seq: Arc<AtomicU64>) {
    let backend = match std::env::var("CALLGATE_BENCH_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let sink = Sink::start();
    let store = BenchStore::new(backend).await;
    let mode = std::env::var("CALLGATE_BENCH_E2E_ONLY").unwrap_or_default();
    let saturated = mode.starts_with("saturated") || mode == "ingest";
    let routes = match mode.as_str() {
        "ingest" | "paced" => 0,
        "saturated" | "e2e1" => 1,
        _ => 10,
    };
    let gw = gateway(&store, routes, Some(sink.addr()));
    let pg_cpu_before = store.pg_backend_cpu();
    let load = if saturated {
        closed_loop(gw.addr, mixed.clone(), phase, seq.clone()).await
    } else if mode == "paced" {
        open_loop(gw.addr, mixed.clone(), 2000, phase, seq.clone()).await
    } else {
        open_loop(gw.addr, mixed.clone(), 1000, phase, seq.clone()).await
    };
    let delivered = sink.count().await;
    let expected = load.events * routes as u64;
    let drain_started = Instant::now();
    while sink.count().await < expected && drain_started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (drained, delays) = sink.stats().await;
    let cpu = gw.cpu_seconds();
    let pg_cpu = store.pg_backend_cpu() - pg_cpu_before;
    println!(
        "gateway CPU {cpu:.2} s: {:.1} us per payload, {:.1} us per delivery; PostgreSQL backends {pg_cpu:.2} s: {:.1} us per payload",
        cpu * 1e6 / load.ok.max(1) as f64,
        cpu * 1e6 / drained.max(1) as f64,
        pg_cpu * 1e6 / load.ok.max(1) as f64
    );
    println!(
        "accepted {} payloads in {:.1}s ({:.0}/s), p50 {:.1} ms p99 {:.1} ms, delivered {delivered} in the window, \
         {drained}/{expected} after {:.1} s, delivery p99 {:.1} ms, WAL {:.1} MB, peak RSS {:.1} MB",
        load.ok,
        load.seconds,
        load.rate(),
        load.percentile_ms(0.5),
        load.percentile_ms(0.99),
        drain_started.elapsed().as_secs_f64(),
        percentile(&delays, 0.99),
        store.wal_mb(),
        gw.peak_rss_kib() as f64 / 1024.0
    );
    drop(gw);
    store.finish().await;
}
