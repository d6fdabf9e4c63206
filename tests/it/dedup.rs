//! `[sources.NAME] dedup = "event"` end to end: the real binary over HTTP, a recording
//! receiver, every vendor; beside each `event` source, its vendor's default (`body`) source.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::support::*;

/// One `ev_<vendor>` source with `dedup = "event"` per vendor, beside the base config's
/// `<vendor>` sources (default `body`), and one route that takes everything.
fn config(dir: &std::path::Path, receiver: &Receiver) -> String {
    let mut config = base_config(dir);
    for vendor in ["oneinbox", "vox", "salpre", "utel", "retell"] {
        config += &format!("\n[sources.ev_{vendor}]\nvendor = \"{vendor}\"\ndedup = \"event\"\n");
    }
    config + &format!("\n[routes.all]\nurl = \"{}\"\ninclude_test = true\n", receiver.url("/all"))
}

/// `value` as a vendor retry might re-send it: every object's keys in reverse order, tabs and
/// CRLF for whitespace, and a retry counter added at the top level.
fn reserialised(value: &Value) -> Vec<u8> {
    fn write(value: &Value, depth: usize, out: &mut String) {
        let indent = |depth: usize| format!("\r\n{}", "\t".repeat(depth));
        match value {
            Value::Object(map) => {
                out.push('{');
                for (i, (key, item)) in map.iter().rev().enumerate() {
                    out.push_str(if i == 0 { "" } else { " ," });
                    out.push_str(&indent(depth + 1));
                    out.push_str(&format!("{} :\t", Value::from(key.as_str())));
                    write(item, depth + 1, out);
                }
                out.push_str(&indent(depth));
                out.push('}');
            }
            Value::Array(items) => {
                out.push_str("[ ");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { ",\t" });
                    write(item, depth + 1, out);
                }
                out.push_str(" ]");
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut retried = value.clone();
    retried["delivery_attempt"] = json!(2);
    let mut out = String::new();
    write(&retried, 0, &mut out);
    out.into_bytes()
}

fn parse(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

/// Posts `body` to `source`, expects a 200 accepting it as new, and returns its ids.
async fn accepted(gateway: &Gateway, source: &str, body: Vec<u8>, what: &str) -> Vec<String> {
    let (status, answer) = gateway.post(source, body).await;
    assert_eq!(status, 200, "{what} to {source}: {answer}");
    assert_eq!(answer.get("duplicate"), None, "{what} to {source} was taken for a duplicate: {answer}");
    let ids = ids(&answer);
    assert!(!ids.is_empty() && answer["accepted"] == ids.len(), "{what} to {source}: {answer}");
    ids
}

/// Posts `body` to `source` and expects it answered as a duplicate with `original` ids.
async fn duplicate(gateway: &Gateway, source: &str, body: Vec<u8>, original: &[String], what: &str) {
    let (status, answer) = gateway.post(source, body).await;
    assert_eq!(status, 200, "{what} to {source}: {answer}");
    assert_eq!((&answer["duplicate"], &answer["accepted"]), (&json!(true), &json!(0)), "{what} to {source}: {answer}");
    assert_eq!(ids(&answer), original, "{what} to {source}: the original ids");
}

/// Waits until the route has delivered everything, then returns how many times each event id
/// arrived.
async fn delivered(gateway: &Gateway, receiver: &Receiver, expected: usize) -> HashMap<String, usize> {
    receiver.wait_for("/all", expected).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"all\"}", 0.0).await;
    let mut counts = HashMap::new();
    for request in receiver.at("/all") {
        *counts.entry(request.json()["id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// For each vendor, a golden fixture re-serialised (keys reversed, other whitespace, a retry
/// counter added) after the original: a duplicate with the original ids under `event`,
/// delivered once; a new payload under the default `body`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserialised_redelivery_is_a_duplicate_under_event_and_new_under_body_for_every_vendor() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver)).await;

    let mut once = Vec::new();
    let mut expected = 0;
    for (vendor, path) in [
        ("oneinbox", "oneinbox/doc-call.ended.json"),
        ("vox", "vox/v2-call_ended.json"),
        ("salpre", "salpre/doc-call_ended.json"),
        ("utel", "utel/synthetic-call_saved-answered.json"),
        ("retell", "retell/doc-call_ended.json"),
    ] {
        let (original, retry) = (fixture(path), reserialised(&parse(path)));
        assert_ne!(original, retry);
        let event_source = format!("ev_{vendor}");
        let first = accepted(&gateway, &event_source, original.clone(), path).await;
        let golden: Vec<String> = expected_ids(path);
        assert_eq!(first.len(), golden.len(), "{path}: as many events as its golden file");
        duplicate(&gateway, &event_source, retry.clone(), &first, path).await;
        duplicate(&gateway, &event_source, original.clone(), &first, path).await;

        let by_body = accepted(&gateway, vendor, original, path).await;
        assert_eq!(by_body, golden, "{path}: under `body` the ids are the golden ones");
        let again = accepted(&gateway, vendor, retry, path).await;
        assert!(again.iter().all(|id| !by_body.contains(id)), "{path}: new ids under `body`");
        expected += first.len() + by_body.len() + again.len();
        once.extend(first);

        let series = format!(
            "callgate_ingress_requests_total{{source=\"{event_source}\",vendor=\"{vendor}\",outcome=\"duplicate\"}}"
        );
        assert_eq!(gateway.metric(&series).await, 2.0, "{series}");
    }

    let counts = delivered(&gateway, &receiver, expected).await;
    assert_eq!(counts.values().sum::<usize>(), expected, "nothing delivered twice: {counts:?}");
    for id in &once {
        assert_eq!(counts.get(id), Some(&1), "{id} delivered once");
    }
    assert!(!gateway.metrics().await.contains("callgate_dedup_body_fallbacks_total{"), "no fallback");

    // Still a duplicate after a restart: the key is in the store, not in memory.
    assert!(gateway.terminate().await.success());
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver)).await;
    let path = "vox/v2-call_ended.json";
    let (_, answer) = gateway.post("ev_vox", reserialised(&parse(path))).await;
    assert_eq!(answer["duplicate"], true, "{answer}");
}

/// The ids of a fixture's golden events (the `body` keying, source named after the vendor).
fn expected_ids(path: &str) -> Vec<String> {
    expected(path).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

/// Two genuinely different events of one call at one vendor time are two events under
/// `event`, for every vendor; each of them re-serialised is still caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_events_of_one_call_at_one_time_are_never_collapsed() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver)).await;

    let edit = |path: &str, change: &dyn Fn(&mut Value)| {
        let mut body = parse(path);
        change(&mut body);
        body
    };
    let transcript = parse("oneinbox/doc-transcript.final.json");
    let cases: Vec<(&str, &str, Vec<Value>)> = vec![
        // Partial transcripts of one call (OneInbox sends no time): they grow.
        (
            "oneinbox",
            "partials",
            vec![
                parse("oneinbox/doc-transcript.partial.json"),
                edit("oneinbox/doc-transcript.partial.json", &|b| b["messages"] = transcript["messages"].clone()),
            ],
        ),
        // vox's own examples: a message and a transition in the same millisecond, and a
        // second message in it.
        (
            "vox",
            "mid_call",
            vec![
                parse("vox/doc-mid_call-call_message.json"),
                parse("vox/doc-mid_call-flow_transition.json"),
                edit("vox/doc-mid_call-call_message.json", &|b| {
                    b["mid_call"]["event_data"] = json!({"role": "agent", "content": "네, 확인해 드릴게요."})
                }),
            ],
        ),
        // Two transcript segments in one second.
        (
            "salpre",
            "segments",
            vec![
                parse("salpre/doc-transcript.json"),
                edit("salpre/doc-transcript.json", &|b| {
                    b["payload"]["type"] = json!("ai");
                    b["payload"]["transcript"] = json!("I am fine, thank you.");
                }),
            ],
        ),
        // A ring group dialling two extensions of one call in one second.
        (
            "utel",
            "dial legs",
            vec![
                parse("utel/synthetic-dial_started.json"),
                edit("utel/synthetic-dial_started.json", &|b| b["data"]["destChannel"]["id"] = json!("1768308876.4")),
            ],
        ),
        // Retell sends no event time: the end of a call, its analysis and a re-analysis.
        (
            "retell",
            "end and analyses",
            vec![
                parse("retell/var-call_analyzed.json"),
                edit("retell/var-call_analyzed.json", &|b| b["event"] = json!("call_ended")),
                edit("retell/var-call_analyzed.json", &|b| {
                    b["call"]["call_analysis"]["call_summary"] = json!("The caller rescheduled.")
                }),
            ],
        ),
    ];

    let mut all = HashSet::new();
    let mut expected = 0;
    for (vendor, what, bodies) in cases {
        let source = format!("ev_{vendor}");
        let mut firsts = Vec::new();
        for body in &bodies {
            let ids = accepted(&gateway, &source, serde_json::to_vec(body).unwrap(), what).await;
            expected += ids.len();
            assert!(ids.iter().all(|id| all.insert(id.clone())), "{vendor} {what}: ids collide");
            firsts.push(ids);
        }
        for (body, ids) in bodies.iter().zip(&firsts) {
            duplicate(&gateway, &source, reserialised(body), ids, what).await;
        }
    }
    let counts = delivered(&gateway, &receiver, expected).await;
    assert_eq!(counts.len(), expected, "every event delivered: {counts:?}");
    assert!(counts.values().all(|n| *n == 1), "each once: {counts:?}");
}

/// A payload without its identity keys (a Utel event without `time`) is deduplicated by its
/// body, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_without_its_identity_falls_back_to_its_body_and_is_counted() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver)).await;

    let mut timeless = parse("utel/synthetic-dial_started.json");
    timeless.as_object_mut().unwrap().remove("time");
    let body = serde_json::to_vec(&timeless).unwrap();
    let first = accepted(&gateway, "ev_utel", body.clone(), "no time").await;
    duplicate(&gateway, "ev_utel", body, &first, "no time, byte-identical").await;
    let again = accepted(&gateway, "ev_utel", reserialised(&timeless), "no time, re-serialised").await;
    assert_ne!(first, again);
    assert_eq!(gateway.metric("callgate_dedup_body_fallbacks_total{source=\"ev_utel\",vendor=\"utel\"}").await, 3.0);

    let counts = delivered(&gateway, &receiver, 2).await;
    assert_eq!(counts.values().sum::<usize>(), 2, "{counts:?}");
}
