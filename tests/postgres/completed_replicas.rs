//! `call.completed` with two replicas on one database: their sweepers race over the same
//! settled calls, and their ingest checks over one call whose last two pieces each accepted;
//! every call is completed exactly once.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "completed-replicas-t0ken";
const CALLS: usize = 20;

fn config(dir: &Path, receiver: &Receiver, settle: &str) -> String {
    base_config(dir)
        + &format!("\n[admin]\ntoken = \"{TOKEN}\"\n[calls]\nsettle = \"{settle}\"\n")
        + &format!(
            "\n[routes.done]\nurl = \"{}\"\nevents = [\"call.completed\"]\ninclude_test = true\n",
            receiver.url("/done")
        )
        + &format!("\n[routes.all]\nurl = \"{}\"\nevents = [\"*\"]\ninclude_test = true\n", receiver.url("/all"))
}

fn ended(call_id: &str) -> String {
    format!(r#"{{"event":"call.ended","call_id":"{call_id}","status":"completed","duration_seconds":12}}"#)
}

/// Starts replicas A and B (own directories, the database of `dir`).
async fn replicas(dir: &Path, receiver: &Receiver, settle: &str) -> (Gateway, Gateway) {
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let config = config(dir, receiver, settle);
    tokio::join!(Gateway::start(&a_dir, &config), Gateway::start(&b_dir, &config))
}

async fn post(gateway: &Gateway, source: &str, body: impl Into<reqwest::Body>) -> usize {
    let (status, answer) = gateway.post(source, body).await;
    assert_eq!(status, 200, "{answer}");
    answer["accepted"].as_u64().unwrap() as usize
}

/// The `completed=N` of a sweeper's start line (its colours removed).
fn completed_at_start(line: &str) -> usize {
    let mut plain = String::new();
    let mut escape = false;
    for c in line.chars() {
        match c {
            '\u{1b}' => escape = true,
            'm' if escape => escape = false,
            _ if escape => {}
            _ => plain.push(c),
        }
    }
    let n = plain.split("completed=").nth(1).unwrap_or_else(|| panic!("{plain}"));
    n.split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_complete_each_call_once() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let (a, b) = replicas(dir.path(), &receiver, "1h").await;
    // Calls that end without their transcript or recording, accepted by either replica.
    let mut total = 0;
    for i in 0..CALLS {
        total += post(if i % 2 == 0 { &a } else { &b }, "oneinbox", ended(&format!("settle_{i}"))).await;
    }
    // One call whose last two pieces reach the two replicas at once.
    total += post(&a, "oneinbox", fixture("oneinbox/doc-call.ended.json")).await;
    let (x, y) = tokio::join!(
        post(&a, "oneinbox", fixture("oneinbox/doc-transcript.final.json")),
        post(&b, "oneinbox", fixture("oneinbox/doc-call.recording.available.json")),
    );
    total += x + y;
    receiver.wait_for("/done", 1).await;
    receiver.wait_for("/all", total).await;

    // Both started again at once with a settle that passed while they restarted: their first
    // sweeps race over every waiting call.
    tokio::join!(a.terminate(), b.terminate());
    let (a, b) = replicas(dir.path(), &receiver, "1ms").await;
    // Both first sweeps are over (each completed what it won), and every call is stored once.
    let mut swept = 0;
    for replica in [&a, &b] {
        swept += completed_at_start(&replica.wait_log("Completed the calls that settled before this start.").await);
    }
    assert_eq!(swept, CALLS, "between them, the two sweeps completed each settled call once");
    let rows =
        store_rows(dir.path(), "SELECT subject, count(*) FROM events WHERE type = 'call.completed' GROUP BY subject");
    assert_eq!(rows.len(), CALLS + 1, "{rows:?}");
    assert!(rows.iter().all(|r| r[1] == "1"), "{rows:?}");
    receiver.wait_for("/done", CALLS + 1).await;
    // A barrier after the sweeps: a new call completed at ingest comes after them.
    post(&b, "salpre", fixture("salpre/doc-call_ended.json")).await;
    let done = receiver.wait_for("/done", CALLS + 2).await;
    let mut subjects: Vec<String> = done.iter().map(|r| r.json()["subject"].as_str().unwrap().to_owned()).collect();
    subjects.sort();
    let before = subjects.len();
    subjects.dedup();
    assert_eq!(before, subjects.len(), "a call completed twice: {subjects:?}");
    assert_eq!(subjects.len(), CALLS + 2);
    let rows =
        store_rows(dir.path(), "SELECT subject, count(*) FROM events WHERE type = 'call.completed' GROUP BY subject");
    assert_eq!(rows.len(), CALLS + 2);
    assert!(rows.iter().all(|r| r[1] == "1"), "{rows:?}");
    let reasons: Vec<Value> = done.iter().map(|r| r.json()["data"]["completion"]["reason"].clone()).collect();
    assert_eq!(reasons.iter().filter(|r| *r == "complete").count(), 2, "the raced call and Salpre's");
    drop((a, b));
}
