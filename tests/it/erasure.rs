//! Erasure on the binary: a call erased by its subject through the API (and again, finding
//! nothing, through the CLI) and another by its number through the CLI (as sent, with punctuation: matched in E.164), each with dead letters,
//! queued retries, a delivery log and a quarantined body; afterwards nothing of either is in
//! the store's files (SQLite: the database, its WAL and shared memory; PostgreSQL: a dump),
//! while another call stays whole, the gauges agree, and the log holds no number. A completed
//! call erased by its number takes its `call.completed` along, and a later piece starts afresh.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "erase-t0ken";

/// Numbers and transcript markers of the two erased calls, and of the call that stays.
const NUMBER_A: &str = "+12025550143";
const MARKER_A: &str = "MARKER-ALPHA-93817";
const NUMBER_B: &str = "+12025550178";
const MARKER_B: &str = "MARKER-BRAVO-27461";
const NUMBER_KEEP: &str = "+12025550111";
const MARKER_KEEP: &str = "MARKER-KEEP-55120";

/// A OneInbox call.started (carrying the caller's number) and transcript.final (the marker).
fn call(call_id: &str, number: &str, marker: &str) -> [String; 2] {
    [
        format!(
            r#"{{"event":"call.started","call_id":"{call_id}","agent_id":"agt_1","to_number":"+919876543210","from_number":"{number}","created_at":"2026-06-01T10:00:00Z"}}"#
        ),
        format!(
            r#"{{"event":"transcript.final","call_id":"{call_id}","messages":[{{"role":"user","content":"my code is {marker}"}}]}}"#
        ),
    ]
}

async fn admin(gateway: &Gateway, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = gateway.http.request(method, gateway.ops_url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `callgate <args>` against the gateway's admin API, with `stdin` on its standard input: its
/// JSON answer.
fn cli(gateway: &Gateway, args: &[&str], stdin: &str) -> Value {
    use std::io::Write as _;
    let mut child = Command::new(binary())
        .args(args)
        .args(["--url", &gateway.ops_url(""), "--token", TOKEN])
        .env_remove("CALLGATE_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "callgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn counts(calls: u64, events: u64, payloads: u64, outbox: u64, dead: u64, log: u64, quarantined: u64) -> Value {
    serde_json::json!({
        "calls": calls, "events": events, "payloads": payloads, "outbox_cancelled": outbox,
        "dead_letters": dead, "log_rows": log, "quarantined": quarantined, "drift_rows": 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_by_subject_and_by_number_leaves_nothing_behind() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    // `dead` dead-letters the erased calls' events after two attempts; `later` retries them in
    // an hour, so one attempt is logged and the rest waits in the outbox.
    let config = base_config(dir.path())
        + &format!(
            "\n[admin]\ntoken = \"{TOKEN}\"\n\
             [routes.dead]\nurl = \"{}\"\nsources = [\"oneinbox\"]\n[routes.dead.retry]\nschedule = [\"10ms\"]\n\
             [routes.later]\nurl = \"{}\"\nsources = [\"oneinbox\"]\n[routes.later.retry]\nschedule = [\"1h\"]\n",
            receiver.url("/dead"),
            receiver.url("/later")
        );
    let gateway = Gateway::start(dir.path(), &config).await;
    receiver.fail_bodies_containing("oneinbox:erase_", 500);
    for body in call("erase_a", NUMBER_A, MARKER_A).into_iter().chain(call("erase_b", NUMBER_B, MARKER_B)) {
        assert_eq!(gateway.post("oneinbox", body).await.0, 200);
    }
    for body in call("keep_c", NUMBER_KEEP, MARKER_KEEP) {
        assert_eq!(gateway.post("oneinbox", body).await.0, 200);
    }
    // Rejected (cut-off) bodies: one of call A's source naming it, one holding B's number, one of
    // neither.
    let rejected = [
        ("oneinbox", format!(r#"{{"event":"call.started","call_id":"erase_a","note":"{MARKER_A}""#)),
        ("vox", format!(r#"{{"call": {{"from_number": "{NUMBER_B}", "#)),
        ("oneinbox", format!(r#"{{"event":"call.started","call_id":"keep_c","from_number":"{NUMBER_KEEP}""#)),
    ];
    for (source, body) in rejected {
        let (status, answer) = gateway.post(source, body).await;
        assert!(status == 400 || status == 422, "{status} {answer}");
    }
    gateway.wait_metric("callgate_deliveries_total{route=\"dead\",outcome=\"dead_letter\"}", 4.0).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"later\",outcome=\"retry\"}", 2.0).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"later\",outcome=\"success\"}", 2.0).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"dead\",outcome=\"success\"}", 2.0).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"later\"}", 4.0).await;
    let before = store_dump(dir.path());
    for needle in [NUMBER_A, MARKER_A, NUMBER_B, MARKER_B, NUMBER_KEEP, MARKER_KEEP] {
        assert!(before.contains(needle), "{needle} is stored before the erasure");
    }

    // Call A by its subject: 2 events, 2 payloads, its 2 waiting deliveries, 2 dead letters,
    // 5 attempts (2 + 2 on `dead`, 1 on `later`) and its quarantined body.
    let (status, erased) = admin(&gateway, reqwest::Method::DELETE, "/v1/admin/calls/oneinbox:erase_a", None).await;
    assert_eq!((status, &erased), (200, &counts(1, 2, 2, 2, 2, 5, 1)));
    crate::openapi::assert_documented("DELETE", "/v1/admin/calls/{subject}", 200, &erased);
    gateway.wait_metric("callgate_dead_letters{route=\"dead\"}", 2.0).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"later\"}", 2.0).await;
    let again = cli(&gateway, &["calls", "erase", "oneinbox:erase_a"], "");
    assert_eq!(again, counts(0, 0, 0, 0, 0, 0, 0), "erased once, then nothing is left");

    // A number that is none is refused without being repeated.
    for body in [serde_json::json!({ "number": "call me 123" }), serde_json::json!({ "number": 12025550178u64 })] {
        let (status, answer) = admin(&gateway, reqwest::Method::POST, "/v1/admin/erase", Some(body)).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{answer}");
        assert!(
            message.contains("number") && !message.contains("call me") && !message.contains("2025550178"),
            "{message}"
        );
    }
    // Call B by its number, as sent with punctuation, through the CLI (from its standard input).
    let erased = cli(&gateway, &["erase", "--number", "-"], "+1 202-555-0178\n");
    assert_eq!(erased, counts(1, 2, 2, 2, 2, 5, 1));
    crate::openapi::assert_documented("POST", "/v1/admin/erase", 200, &erased);
    gateway.wait_metric("callgate_dead_letters{route=\"dead\"}", 0.0).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"later\"}", 0.0).await;

    // The other call is whole: its events, its deliveries, its quarantined body.
    let (status, kept) = admin(&gateway, reqwest::Method::GET, "/v1/calls/oneinbox:keep_c", None).await;
    assert_eq!((status, kept["events"].as_array().map(Vec::len)), (200, Some(2)), "{kept}");
    let (_, quarantine) = admin(&gateway, reqwest::Method::GET, "/v1/admin/quarantine", None).await;
    assert_eq!(quarantine["quarantine"].as_array().map(Vec::len), Some(1), "{quarantine}");
    for gone in ["oneinbox:erase_a", "oneinbox:erase_b"] {
        let (status, _) = admin(&gateway, reqwest::Method::GET, &format!("/v1/calls/{gone}"), None).await;
        assert_eq!(status, 404, "{gone}");
    }
    let after = store_dump(dir.path());
    for needle in [NUMBER_A, MARKER_A, NUMBER_B, MARKER_B, "erase_a", "erase_b", "2025550178", "2025550143"] {
        assert!(!after.contains(needle), "{needle} is still in the store after the erasure");
    }
    for needle in [NUMBER_KEEP, MARKER_KEEP] {
        assert!(after.contains(needle), "{needle} of the other call stays");
    }

    // Nothing erased was delivered again, and the log says what was done, never the number.
    let deliveries_before = receiver.all().len();
    let by_call = gateway.wait_log("erasure done").await;
    assert!(by_call.contains("oneinbox:erase_a"), "a call erasure names its subject: {by_call}");
    let by_number = gateway.wait_log("\"number\"").await;
    assert!(by_number.contains("erasure done") && !by_number.contains("erase_b"), "{by_number}");
    let logs = gateway.logs();
    assert!(!logs.contains("after an erasure"), "the files were scrubbed (checkpoint, VACUUM): {logs}");
    for secret in ["2025550178", "202-555-0178"] {
        assert!(!logs.contains(secret), "the log holds {secret}");
    }
    let status = gateway.terminate().await;
    assert!(status.success());
    assert_eq!(receiver.all().len(), deliveries_before);
    let closed = store_dump(dir.path());
    for needle in [NUMBER_A, MARKER_A, NUMBER_B, MARKER_B] {
        assert!(!closed.contains(needle), "{needle} is back in the store after shutdown");
    }
}

/// A completed call erased by its number: its `call.completed` (whose data holds the merged
/// record: numbers, transcript, recording) goes with its other events, nothing of it stays in
/// the files, and a piece the vendor sends afterwards starts a new call that no sweep completes
/// (it has no terminal event) instead of reviving the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_call_erased_takes_its_call_completed_and_a_later_piece_starts_afresh() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &format!(
            "\n[admin]\ntoken = \"{TOKEN}\"\n[calls]\nsettle = \"1h\"\n\
             [routes.done]\nurl = \"{}\"\nevents = [\"call.completed\"]\n",
            receiver.url("/done")
        );
    let gateway = Gateway::start(dir.path(), &config).await;
    const NUMBER: &str = "+12025550166";
    let piece = |name: &str| {
        String::from_utf8(fixture(&format!("oneinbox/{name}.json")))
            .unwrap()
            .replace("call_abc123", "erase_done")
            .replace("+15739693824", NUMBER)
            .replace("book a demo", MARKER_A)
    };
    for name in ["doc-call.started", "doc-call.ended", "doc-transcript.final", "doc-call.recording.available"] {
        assert_eq!(gateway.post("oneinbox", piece(name)).await.0, 200, "{name}");
    }
    let done = receiver.wait_for("/done", 1).await;
    let completed = done[0].json();
    assert_eq!(completed["type"], "call.completed");
    assert_eq!(completed["data"]["from"], NUMBER, "the merged record holds the number");
    let before = store_dump(dir.path());
    assert!(before.contains(NUMBER) && before.contains(MARKER_A), "stored before the erasure");

    let (status, erased) =
        admin(&gateway, reqwest::Method::POST, "/v1/admin/erase", Some(serde_json::json!({ "number": NUMBER }))).await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(
        (&erased["calls"], &erased["events"]),
        (&1.into(), &5.into()),
        "four pieces and call.completed: {erased}"
    );
    let after = store_dump(dir.path());
    for needle in [NUMBER, MARKER_A, "erase_done", "2025550166"] {
        assert!(!after.contains(needle), "{needle} is still in the store after the erasure");
    }

    // The vendor sends the recording again: a new call of one event, not completed.
    assert_eq!(gateway.post("oneinbox", piece("doc-call.recording.available")).await.0, 200);
    let (status, record) = admin(&gateway, reqwest::Method::GET, "/v1/calls/oneinbox:erase_done", None).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["summary"]["events"], 1, "{record}");
    assert_eq!(
        (&record["summary"]["completed_at"], &record["summary"]["late"]),
        (&Value::Null, &serde_json::json!([]))
    );
    assert_eq!(receiver.at("/done").len(), 1);
}
