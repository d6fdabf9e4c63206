//! The live tail on the binary: `GET /v1/admin/stream` read over HTTP while payloads are
//! posted (accepted events and delivery outcomes, filters, no event data), its credentials
//! (bearer token, single-use tickets for a browser), a reader that stops reading dropped with
//! the notice while ingest goes on, `callgate tail` in both forms, and open streams ending at
//! shutdown instead of holding the drain.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const TOKEN: &str = "tail-t0ken";

/// A gateway with two routes: `crm` takes `call.*`, `bi` everything (its first attempts are
/// scripted to fail and retry in an hour); each reader may fall `buffer` messages behind.
fn config(dir: &Path, receiver: &Receiver, buffer: usize) -> String {
    base_config(dir)
        + &format!(
            r#"
[admin]
token = "{TOKEN}"
stream_buffer = {buffer}

[routes.crm]
url = "{}"
events = ["call.*"]
include_test = true

[routes.bi]
url = "{}"
include_test = true
[routes.bi.retry]
schedule = ["1h"]
"#,
            receiver.url("/crm"),
            receiver.url("/bi")
        )
}

/// A OneInbox `call.started` (a canonical `call.connected`) of call `call` (with phone numbers, which must never reach the
/// tail), or with `analyzed` a `call.analyzed`.
fn call_body(call: &str, analyzed: bool) -> String {
    if analyzed {
        format!(r#"{{"event":"call.analyzed","call_id":"{call}","agent_id":"agt_1","ai_summary":"fine"}}"#)
    } else {
        format!(
            r#"{{"event":"call.started","call_id":"{call}","agent_id":"agt_1","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
        )
    }
}

async fn post_id(gateway: &Gateway, source: &str, body: impl Into<reqwest::Body>) -> String {
    let (status, answer) = gateway.post(source, body).await;
    assert_eq!(status, 200, "{answer}");
    answer["ids"][0].as_str().unwrap().to_owned()
}

/// A reader of the live tail over HTTP, parsing server-sent events.
struct Stream {
    response: reqwest::Response,
    pending: Vec<u8>,
    /// Everything read, for checks on the raw text.
    raw: String,
}

impl Stream {
    /// Opens `/v1/admin/stream?{query}` with the bearer token and waits for `ready`.
    async fn open(gateway: &Gateway, query: &str) -> Stream {
        let url = gateway.ops_url(&format!("/v1/admin/stream?{query}"));
        let response = gateway.http.get(url).bearer_auth(TOKEN).send().await.unwrap();
        Stream::ready(response).await
    }

    async fn ready(response: reqwest::Response) -> Stream {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut stream = Stream { response, pending: Vec::new(), raw: String::new() };
        let (event, data) = stream.next().await.expect("a ready message");
        assert_eq!(event, "ready", "{data}");
        stream
    }

    /// The next message (event name, data), skipping comments; `None` at the end of the stream.
    async fn next(&mut self) -> Option<(String, Value)> {
        let deadline = Instant::now() + DEADLINE;
        let (mut event, mut data) = (String::new(), String::new());
        loop {
            while let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                let line = String::from_utf8(line).unwrap();
                self.raw.push_str(&line);
                let line = line.trim_end();
                if line.is_empty() && !event.is_empty() {
                    return Some((event, serde_json::from_str(&data).unwrap()));
                } else if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(text) = line.strip_prefix("data: ") {
                    data.push_str(text);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.pending.extend_from_slice(&chunk),
                Ok(Ok(None)) => return None,
                Ok(Err(e)) => panic!("the stream failed: {e}"),
                Err(_) => panic!("no message before the deadline; read so far:\n{}", self.raw),
            }
        }
    }

    /// The next `n` messages.
    async fn take(&mut self, n: usize) -> Vec<(String, Value)> {
        let mut got = Vec::new();
        while got.len() < n {
            got.push(self.next().await.unwrap_or_else(|| panic!("the stream ended after {got:?}")));
        }
        got
    }
}

fn outcome_of<'a>(messages: &'a [(String, Value)], route: &str) -> &'a Value {
    messages
        .iter()
        .find(|(e, d)| e == "outcome" && d["route"] == route)
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("no outcome of {route} in {messages:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_streams_accepted_events_and_their_outcomes_filtered_without_their_data() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    receiver.respond("/bi", &[500]);
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver, 100)).await;
    let mut all = Stream::open(&gateway, "").await;
    let mut crm = Stream::open(&gateway, "route=crm").await;
    let mut analyzed = Stream::open(&gateway, "type=call.ana*").await;
    let mut salpre = Stream::open(&gateway, "source=salpre").await;
    gateway.wait_metric("callgate_tail_readers", 4.0).await;

    let started = post_id(&gateway, "oneinbox", call_body("c1", false)).await;
    let seen = all.take(3).await;
    let (event, accepted) = &seen.iter().find(|(e, _)| e == "accepted").expect("accepted").clone();
    assert_eq!(event, "accepted");
    let keys: Vec<&str> = accepted.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{accepted}");
    assert_eq!(accepted["id"], started.as_str());
    assert_eq!(accepted["type"], "call.connected");
    assert_eq!(accepted["subject"], "oneinbox:c1");
    assert_eq!(accepted["source"], "oneinbox");
    assert_eq!(accepted["routes"], serde_json::json!(["bi", "crm"]));
    assert!(accepted["time"].as_str().is_some_and(|t| t.starts_with("2026-06-01T10:00:00")), "{accepted}");
    let delivered = outcome_of(&seen, "crm");
    assert_eq!(
        (&delivered["event_id"], &delivered["type"], &delivered["subject"], &delivered["source"]),
        (&accepted["id"], &accepted["type"], &accepted["subject"], &accepted["source"])
    );
    assert_eq!(
        (&delivered["outcome"], &delivered["status"], &delivered["attempt"]),
        (&"success".into(), &200.into(), &1.into())
    );
    assert!(delivered["duration_ms"].as_i64().is_some() && delivered["at"].as_str().is_some(), "{delivered}");
    let failed = outcome_of(&seen, "bi");
    assert_eq!((&failed["outcome"], &failed["status"], &failed["attempt"]), (&"failed".into(), &500.into(), &1.into()));

    // The crm reader gets the event (routed to crm) and crm's outcome, not bi's.
    let on_crm = crm.take(2).await;
    assert!(on_crm.iter().any(|(e, d)| e == "accepted" && d["id"] == started.as_str()));
    assert_eq!(outcome_of(&on_crm, "crm")["event_id"], started.as_str());

    // A barrier: every message of c1 was published before c2 was posted, so a reader whose
    // filter let any of them through would get it before c2's.
    let summary = post_id(&gateway, "oneinbox", call_body("c2", true)).await;
    let (event, first) = analyzed.next().await.unwrap();
    let about = if event == "accepted" { &first["id"] } else { &first["event_id"] };
    assert_eq!(about, summary.as_str(), "the type filter let c1 through: {event} {first}");
    let after = crm.next().await.unwrap();
    assert!(
        after.1["route"] == "crm" || after.1["routes"].as_array().is_some_and(|r| r.contains(&"crm".into())),
        "{after:?}"
    );
    let from_salpre = post_id(&gateway, "salpre", fixture("salpre/doc-call_initiated.json")).await;
    // An outcome can come before its accepted message (the worker may record it before the
    // ingest request publishes), but every message this reader gets is salpre's.
    let first = loop {
        let (event, message) = salpre.next().await.unwrap();
        assert_eq!(message["source"], "salpre", "{event}: {message}");
        if event == "accepted" {
            break message;
        }
        assert_eq!((event.as_str(), &message["event_id"]), ("outcome", &from_salpre.as_str().into()));
    };
    assert_eq!(first["id"], from_salpre.as_str());

    // Summaries only: no phone number, transcript or vendor field of the payloads.
    all.take(3).await;
    for reader in [&all, &crm, &analyzed, &salpre] {
        for secret in ["+919876543210", "15739693824", "agt_1", "fine", "vendor_extra"] {
            assert!(!reader.raw.contains(secret), "{secret} reached the tail:\n{}", reader.raw);
        }
    }
}

/// A `call.completed` is an accepted event like any other: the tail shows it when the
/// gateway stores it (a Salpre call is complete on its `call_ended`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_shows_a_call_completed_when_it_is_stored() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver, 100)).await;
    let mut completed = Stream::open(&gateway, "type=call.completed").await;
    gateway.wait_metric("callgate_tail_readers", 1.0).await;

    post_id(&gateway, "salpre", fixture("salpre/doc-call_ended.json")).await;
    let (event, message) = completed.next().await.unwrap();
    assert_eq!(
        (event.as_str(), &message["type"], &message["subject"]),
        ("accepted", &"call.completed".into(), &"salpre:1".into()),
        "{message}"
    );
    assert!(message["id"].as_str().is_some_and(|id| id.starts_with("ce_")), "{message}");
    // No route names call.completed: `*` and `call.*` do not take it.
    assert_eq!(message["routes"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_takes_the_bearer_token_or_a_single_use_ticket_and_checks_its_filters() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver, 100)).await;
    let http = &gateway.http;
    let stream_url = gateway.ops_url("/v1/admin/stream");
    let status = |r: reqwest::Response| r.status().as_u16();

    let anonymous = http.get(&stream_url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(status(http.get(&stream_url).bearer_auth("wrong").send().await.unwrap()), 401);
    let tickets = gateway.ops_url("/v1/admin/stream/tickets");
    assert_eq!(status(http.post(&tickets).send().await.unwrap()), 401, "a ticket needs the token");

    let issued = http.post(&tickets).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(issued.status(), 201);
    let issued: Value = issued.json().await.unwrap();
    let ticket = issued["ticket"].as_str().unwrap();
    assert!(!ticket.contains(TOKEN));
    assert!(issued["expires_at"].as_str().is_some());
    // The ticket's own URL, as a browser's EventSource would open it: no header at all.
    let url = gateway.ops_url(issued["url"].as_str().unwrap());
    let mut by_ticket = Stream::ready(http.get(&url).send().await.unwrap()).await;
    let id = post_id(&gateway, "oneinbox", call_body("t1", false)).await;
    let seen = by_ticket.take(1).await;
    assert!(seen[0].1["id"] == id.as_str() || seen[0].1["event_id"] == id.as_str(), "{seen:?}");
    assert_eq!(status(http.get(&url).send().await.unwrap()), 401, "a ticket admits one stream");
    let other = http.post(&tickets).bearer_auth(TOKEN).send().await.unwrap().json::<Value>().await.unwrap();
    let other = other["ticket"].as_str().unwrap();
    let (signed, mac) = other.rsplit_once('.').unwrap();
    let later = signed.replacen(signed.split('.').next().unwrap(), "99999999999999", 1);
    assert_eq!(
        status(http.get(format!("{stream_url}?ticket={later}.{mac}")).send().await.unwrap()),
        401,
        "a changed expiry"
    );
    assert_eq!(status(http.get(format!("{stream_url}?ticket=garbage")).send().await.unwrap()), 401);

    for (query, needle) in
        [("route=nope", "no route named `nope`"), ("source=nope", "no source named `nope`"), ("data=true", "data")]
    {
        let answer = http.get(format!("{stream_url}?{query}")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(answer.status(), 400, "{query}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{query}: {body}");
    }
}

/// Opens the stream on a raw connection with a small receive buffer, reads up to its `ready`
/// message, and then reads nothing more.
async fn stalled_reader(gateway: &Gateway) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = gateway.admin.unwrap_or(gateway.addr);
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/admin/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&head).contains("event: ready") {
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// Messages a reader of the slow-reader test may fall behind.
const BUFFER: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_dropped_with_a_notice_while_ingest_goes_on() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    // Room for a reader that keeps up on a busy machine; the one that stops reading fills it.
    // A grace period longer than any test: a stuck stream holding the drain would hold the exit.
    let config = config(dir.path(), &receiver, BUFFER).replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1h\"");
    let gateway = Gateway::start(dir.path(), &config).await;
    let mut stalled = stalled_reader(&gateway).await;
    // One that never reads again.
    let _gone = stalled_reader(&gateway).await;
    // `callgate tail` whose output nobody reads: it stops reading the stream once its pipe is full.
    let (go, hold) = std::sync::mpsc::channel();
    let cli = TailCli::start_held(&gateway, &[], Some(hold)).await;
    // A reader that keeps up sees everything, all along.
    let mut healthy = Stream::open(&gateway, "type=call.connected").await;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let reading = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some((event, data)) = healthy.next().await {
                assert!(event == "accepted" || event == "outcome", "the reader that keeps up was dropped: {data}");
                if event == "accepted" {
                    seen.lock().unwrap().push(data["id"].as_str().unwrap().to_owned());
                }
            }
        })
    };
    gateway.wait_metric("callgate_tail_readers", 4.0).await;

    // Ingest goes on, answered as always, until the stalled readers' pipe and socket buffers
    // and their places in the gateway are full and they are dropped.
    let dropped = "callgate_tail_dropped_total{reason=\"slow\"}";
    let mut posted = Vec::new();
    while metric_value(&gateway.metrics().await, dropped) < 3.0 {
        assert!(posted.len() < 20_000, "the stalled readers were never dropped");
        let start = posted.len();
        let bodies: Vec<String> = (start..start + 20).map(|n| call_body(&format!("s{n}"), false)).collect();
        posted
            .extend(futures_util::future::join_all(bodies.into_iter().map(|b| post_id(&gateway, "oneinbox", b))).await);
    }
    gateway.wait_metric("callgate_tail_readers", 1.0).await;
    assert!(gateway.logs().contains("A live tail reader fell behind and was dropped."));
    let more = post_id(&gateway, "oneinbox", call_body("after", false)).await;
    posted.push(more);

    // Reading again, it finds what was buffered for it, then the notice, then the end.
    let mut text = Vec::new();
    tokio::time::timeout(DEADLINE, stalled.read_to_end(&mut text)).await.expect("the stream ends").unwrap();
    let text = String::from_utf8_lossy(&text);
    let last = text.rfind("event: ").map(|at| &text[at..]).unwrap();
    assert!(last.starts_with("event: dropped\ndata: "), "{last}");
    assert!(last.contains(r#""reason":"slow""#) && last.contains(&format!("fell {BUFFER} messages behind")), "{last}");
    let got = text.matches("event: accepted").count();
    assert!(got < posted.len(), "it got {got} of {} events", posted.len());
    eprintln!(
        "the stalled readers were dropped after {} payloads; {got} of their events reached the raw one",
        posted.len()
    );

    // The command prints what reached it, then says it was dropped and exits 3.
    go.send(()).unwrap();
    cli.wait_stderr("callgate: the gateway dropped this tail: this reader fell").await;
    let printed = cli.lines.try_iter().count();
    assert!(printed > 0 && printed < 3 * posted.len(), "{printed} lines");
    assert_eq!(cli.exit_code().await, Some(3));

    let deadline = Instant::now() + DEADLINE;
    while seen.lock().unwrap().len() < posted.len() {
        assert!(
            Instant::now() < deadline,
            "the reader that keeps up got {} of {}",
            seen.lock().unwrap().len(),
            posted.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    posted.sort();
    assert_eq!(seen, posted, "every event");

    // The one that never reads again cannot take its notice: at shutdown its connection is
    // closed instead of holding the drain for the hour-long grace period.
    reading.abort();
    let exit = tokio::time::timeout(DEADLINE, gateway.terminate()).await.expect("a stuck stream held the shutdown");
    assert!(exit.success(), "{exit:?}");
}

/// `callgate tail <args>` against `gateway`, with its stdout lines and stderr gathered.
struct TailCli {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl TailCli {
    async fn start(gateway: &Gateway, args: &[&str]) -> TailCli {
        Self::start_held(gateway, args, None).await
    }

    /// With `hold`, its output is read only once `hold` says so.
    async fn start_held(gateway: &Gateway, args: &[&str], hold: Option<std::sync::mpsc::Receiver<()>>) -> TailCli {
        let mut child = Command::new(binary())
            .arg("tail")
            .args(["--url", &gateway.ops_url(""), "--token", TOKEN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            if let Some(hold) = hold {
                let _ = hold.recv();
            }
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let cli = TailCli { child, lines, stderr };
        cli.wait_stderr("following the live tail").await;
        cli
    }

    async fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(Instant::now() < deadline, "callgate tail never said `{needle}`:\n{}", self.stderr.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no line; stderr:\n{}", self.stderr.lock().unwrap()))
    }

    async fn exit_code(mut self) -> Option<i32> {
        tokio::task::spawn_blocking(move || self.child.wait().unwrap().code()).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callgate_tail_prints_lines_or_json_and_every_stream_ends_at_shutdown() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    // A grace period longer than any test: an open stream holding the drain would hold the exit.
    let config = config(dir.path(), &receiver, 100).replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1h\"");
    let gateway = Gateway::start(dir.path(), &config).await;
    let json = TailCli::start(&gateway, &["--json", "--route", "crm"]).await;
    let text = TailCli::start(&gateway, &["--type", "call.*", "--source", "oneinbox"]).await;
    let mut raw = Stream::open(&gateway, "").await;

    let id = post_id(&gateway, "oneinbox", call_body("cli", false)).await;
    let mut lines: Vec<Value> = (0..2).map(|_| serde_json::from_str(&json.line()).unwrap()).collect();
    lines.sort_by_key(|l| l["event"].as_str().unwrap().to_owned());
    assert_eq!(lines[0]["event"], "accepted");
    assert_eq!(lines[0]["data"]["id"], id.as_str());
    assert_eq!(lines[1]["event"], "outcome");
    assert_eq!((&lines[1]["data"]["route"], &lines[1]["data"]["outcome"]), (&"crm".into(), &"success".into()));
    let mut printed: Vec<String> = (0..3).map(|_| text.line()).collect();
    printed.sort_by_key(|l| l.contains(" outcome "));
    assert!(
        printed[0].contains(&format!(" accepted call.connected {id} subject oneinbox:cli source oneinbox -> bi,crm")),
        "{printed:?}"
    );
    assert!(printed.iter().any(|l| l.contains(" outcome  crm success 200 ") && l.contains(&id)), "{printed:?}");
    assert!(printed.iter().any(|l| l.contains(" outcome  bi success 200 ") && l.contains("attempt 1")), "{printed:?}");
    raw.take(3).await;

    // Shutdown: the streams end with `closed`, the commands say so and exit 1, and the gateway
    // exits without waiting for its (hour-long) grace period.
    let exit = tokio::spawn(gateway.terminate());
    let (event, data) = raw.next().await.expect("a closing message");
    assert_eq!((event.as_str(), &data["reason"]), ("closed", &"shutdown".into()), "{data}");
    assert!(raw.next().await.is_none(), "the stream ends after it");
    let status = tokio::time::timeout(DEADLINE, exit).await.expect("open streams held the shutdown").unwrap();
    assert!(status.success(), "{status:?}");
    json.wait_stderr("the tail ended: the gateway is shutting down").await;
    assert_eq!(json.exit_code().await, Some(1));
    text.wait_stderr("the tail ended: the gateway is shutting down").await;
    assert_eq!(text.exit_code().await, Some(1));
}
