//! `call.completed` on the binary: one per call, at ingest for a call whose pieces all
//! arrived (in any order), after `[calls] settle` with the missing pieces listed, across a
//! restart; a piece after it delivered and noted as late; only routes that name it get it.

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "completed-t0ken";

fn config(dir: &std::path::Path, receiver: &Receiver, settle: &str) -> String {
    base_config(dir)
        + &format!("\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
        + &format!("\n[calls]\nsettle = \"{settle}\"\n")
        + &format!(
            "\n[routes.done]\nurl = \"{}\"\nevents = [\"call.completed\"]\ninclude_test = true\n",
            receiver.url("/done")
        )
        + &format!("\n[routes.all]\nurl = \"{}\"\nevents = [\"*\"]\ninclude_test = true\n", receiver.url("/all"))
}

async fn call(gateway: &Gateway, subject: &str) -> Value {
    let path = format!("/v1/calls/{subject}");
    let response = gateway.http.get(gateway.ops_url(&path)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{subject}");
    response.json().await.unwrap()
}

/// Posts fixtures (`vendor/name` without `.json`) to the source named after their vendor;
/// how many events were accepted.
async fn post(gateway: &Gateway, fixtures: &[&str]) -> usize {
    let mut accepted = 0;
    for name in fixtures {
        let source = name.split('/').next().unwrap();
        let (status, answer) = gateway.post(source, fixture(&format!("{name}.json"))).await;
        assert_eq!(status, 200, "{name}: {answer}");
        accepted += answer["accepted"].as_u64().unwrap() as usize;
    }
    accepted
}

/// The `call.completed` events the route got, by subject.
fn completed(receiver: &Receiver) -> std::collections::BTreeMap<String, Vec<Value>> {
    let mut by_subject = std::collections::BTreeMap::<String, Vec<Value>>::new();
    for request in receiver.at("/done") {
        let event = request.json();
        assert_eq!(event["type"], "call.completed");
        by_subject.entry(event["subject"].as_str().unwrap().to_owned()).or_default().push(event);
    }
    by_subject
}

/// The types of a call's stored events, and how many of them are its `call.completed`.
fn kinds(record: &Value) -> (Vec<String>, usize) {
    let kinds: Vec<String> =
        record["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    let n = kinds.iter().filter(|k| *k == "call.completed").count();
    (kinds, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_pieces_all_arrived_is_completed_once_in_any_order() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver, "1h")).await;
    let mut total = 0;
    // In order: the end, then OneInbox's transcript and recording.
    total += post(
        &gateway,
        &[
            "oneinbox/doc-call.started",
            "oneinbox/doc-call.ended",
            "oneinbox/doc-transcript.final",
            "oneinbox/doc-call.recording.available",
        ],
    )
    .await;
    // Out of order: Retell's analysis and Utel's call record before their ends; vox v1
    // and Salpre are complete with their end.
    total += post(&gateway, &["retell/var-call_analyzed", "retell/var-call_started", "retell/doc-call_ended"]).await;
    total += post(
        &gateway,
        &["utel/synthetic-call_started", "utel/synthetic-call_saved-answered", "utel/synthetic-call_ended-answered"],
    )
    .await;
    total += post(&gateway, &["vox/doc-call_started", "vox/doc-call_ended"]).await;
    total += post(&gateway, &["salpre/doc-call_initiated", "salpre/doc-call_ended"]).await;
    receiver.wait_for("/done", 5).await;
    receiver.wait_for("/all", total).await;

    // A piece after the completion goes out as usual and is noted on the record.
    let late = post(&gateway, &["oneinbox/doc-call.analyzed"]).await;
    receiver.wait_for("/all", total + late).await;
    let subjects = [
        "oneinbox:call_abc123",
        "retell:Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6",
        "utel:5f0c2d7e-9a41-4b8e-b3c6-1e2f7a9d4c08",
        "vox:6b0f1f08-1c2b-4f0e-9c3a-0c1d9e6f5a82",
        "salpre:1",
    ];
    let got = completed(&receiver);
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut s = subjects.to_vec();
        s.sort();
        s
    });
    for subject in subjects {
        let events = &got[subject];
        assert_eq!(events.len(), 1, "{subject}: once");
        let data = &events[0]["data"];
        assert_eq!(data["completion"]["reason"], "complete", "{subject}: {data}");
        assert_eq!(data["completion"]["missing"], Value::Array(vec![]), "{subject}");
        assert_eq!(data["vendor_event"], "callgate.completed");
        let record = call(&gateway, subject).await;
        let (_, n) = kinds(&record);
        assert_eq!(n, 1, "{subject}: stored once");
        assert_eq!(
            record["events"].as_array().unwrap().iter().find(|e| e["type"] == "call.completed").unwrap()["id"],
            events[0]["id"]
        );
        assert!(record["summary"]["completed_at"].is_string(), "{record}");
        assert!(record["record"]["completed_at"].is_string(), "{record}");
    }
    let oneinbox = &got["oneinbox:call_abc123"][0]["data"];
    assert_eq!(oneinbox["status"], "completed");
    assert!(oneinbox["recording_url"].is_string() && oneinbox["transcript"].is_array(), "{oneinbox}");
    let record = call(&gateway, "oneinbox:call_abc123").await;
    assert_eq!(record["summary"]["late"], serde_json::json!(["call.analyzed"]));
    assert_eq!(record["record"]["late"], serde_json::json!(["call.analyzed"]));
    // A route of `*` written before `call.completed` existed does not receive it.
    assert!(receiver.at("/all").iter().all(|r| r.json()["type"] != "call.completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_missing_pieces_settles_once_with_them_listed_and_a_later_piece_is_late() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver, "200ms")).await;
    // OneInbox without its transcript and recording; vox v2 without its analysis.
    let mut total = post(&gateway, &["oneinbox/doc-call.started", "oneinbox/doc-call.ended"]).await;
    total += post(&gateway, &["vox/v2-call_started", "vox/v2-call_ended"]).await;
    receiver.wait_for("/done", 2).await;
    let got = completed(&receiver);
    let oneinbox = &got["oneinbox:call_abc123"][0]["data"]["completion"];
    assert_eq!(oneinbox["reason"], "settled");
    assert_eq!(oneinbox["missing"], serde_json::json!(["call.recording.ready", "transcript.final"]));
    let vox = &got["vox:3079f46c-d141-4cd9-805f-69f212136b66"][0]["data"]["completion"];
    assert_eq!((&vox["reason"], &vox["missing"]), (&Value::from("settled"), &serde_json::json!(["call.analyzed"])));

    // The missing piece arrives after all: delivered, noted, and no second completion.
    total += post(&gateway, &["oneinbox/doc-transcript.final"]).await;
    receiver.wait_for("/all", total).await;
    let record = call(&gateway, "oneinbox:call_abc123").await;
    assert_eq!(record["summary"]["late"], serde_json::json!(["transcript.final"]));
    assert_eq!(kinds(&record).1, 1);
    assert_eq!(completed(&receiver).values().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_survives_a_restart_and_is_not_repeated() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver, "1h")).await;
    // A complete call, completed before the restart; one still waiting for its pieces.
    let mut total =
        post(&gateway, &["retell/var-call_started", "retell/doc-call_ended", "retell/var-call_analyzed"]).await;
    total += post(&gateway, &["oneinbox/doc-call.ended"]).await;
    receiver.wait_for("/done", 1).await;
    receiver.wait_for("/all", total).await;
    assert!(call(&gateway, "oneinbox:call_abc123").await["summary"]["completed_at"].is_null());
    gateway.terminate().await;

    // Started again with a settle that passed while it restarted: its first sweep settles the
    // waiting call; the other is not repeated.
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver, "1ms")).await;
    gateway.wait_log("Completed the calls that settled before this start.").await;
    receiver.wait_for("/done", 2).await;
    let got = completed(&receiver);
    assert_eq!(got["oneinbox:call_abc123"][0]["data"]["completion"]["reason"], "settled");
    for subject in ["oneinbox:call_abc123", "retell:Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6"] {
        assert_eq!(got[subject].len(), 1, "{subject}");
        assert_eq!(kinds(&call(&gateway, subject).await).1, 1, "{subject}");
    }
}
