//! Delivery you can trust: crashes, outages, 410, Retry-After, dead letters and quarantine
//! through the admin API and the CLI, retention, graceful shutdown.

use std::{
    collections::HashSet,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "admin-t0ken";

fn route(name: &str, url: &str, extra: &str) -> String {
    format!("\n[routes.{name}]\nurl = \"{url}\"\n{extra}\n")
}

fn admin_config(dir: &std::path::Path) -> String {
    base_config(dir) + &format!("\n[admin]\ntoken = \"{TOKEN}\"\n")
}

/// A OneInbox `call.started` with a unique call id: one canonical event per body.
fn unique_payload(call_id: &str) -> String {
    format!(
        r#"{{"event":"call.started","call_id":"{call_id}","agent_id":"agt_1","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
    )
}

async fn admin(gateway: &Gateway, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = gateway.http.request(method, gateway.ops_url(path)).bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `callgate <args>` against a running gateway's admin API.
fn cli(gateway: &Gateway, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .args(["--url", &gateway.ops_url(""), "--token", TOKEN])
        .env_remove("CALLGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Repeated SIGKILL under concurrent load loses no acknowledged event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_under_load_loses_no_acknowledged_event() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &route(
            "crm",
            &receiver.url("/crm"),
            "[routes.crm.retry]\nschedule = [\"100ms\", \"200ms\", \"400ms\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]",
        );
    let acknowledged: Arc<Mutex<HashSet<String>>> = Arc::default();
    const ROUNDS: usize = 5;
    const POSTERS: usize = 8;
    for round in 0..ROUNDS {
        let gateway = Arc::new(Gateway::start(dir.path(), &config).await);
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut posters = tokio::task::JoinSet::new();
        for worker in 0..POSTERS {
            let gateway = gateway.clone();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            posters.spawn(async move {
                for i in 0.. {
                    let body = unique_payload(&format!("call_{round}_{worker}_{i}"));
                    let post = gateway.http.post(gateway.url("/v1/ingest/oneinbox")).body(body).send();
                    let response = tokio::select! {
                        r = post => r,
                        _ = stop.notified() => return,
                    };
                    // A connection cut by the kill is not an acknowledgement.
                    let Ok(response) = response else { return };
                    if response.status() == 200 {
                        let Ok(json) = response.json::<Value>().await else { return };
                        let id = json["ids"][0].as_str().unwrap().to_owned();
                        acknowledged.lock().unwrap().insert(id);
                    }
                }
            });
        }
        // Let acknowledgements and deliveries run, then kill at an arbitrary moment.
        let target = acknowledged.lock().unwrap().len() + 40 + fastrand::usize(0..200);
        while acknowledged.lock().unwrap().len() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gateway.kill_now();
        stop.notify_waiters();
        while posters.join_next().await.is_some() {}
    }
    // A last, undisturbed run delivers whatever is left.
    let gateway = Gateway::start(dir.path(), &config).await;
    let expected = acknowledged.lock().unwrap().clone();
    assert!(expected.len() >= ROUNDS * 40, "load did produce acknowledgements: {}", expected.len());
    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    let received: Vec<String> =
        receiver.at("/crm").iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    let unique: HashSet<&String> = received.iter().collect();
    let missing: Vec<&String> = expected.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicates = received.len() - unique.len();
    println!(
        "crash test: {ROUNDS} SIGKILLs, {} acknowledged, {} deliveries received, {} unique, {duplicates} duplicates",
        expected.len(),
        received.len(),
        unique.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_builds_a_backlog_on_disk_and_drains_when_the_route_returns() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    const EVENTS: usize = 3000;
    receiver.respond("/crm", &vec![503; EVENTS * 2]);
    let dir = temp_dir();
    let config = admin_config(dir.path())
        + &route("crm", &receiver.url("/crm"), "[routes.crm.retry]\nschedule = [\"1s\", \"1h\"]")
        + &route("healthy", &receiver.url("/healthy"), "events = [\"call.connected\"]");
    let gateway = Arc::new(Gateway::start(dir.path(), &config).await);
    let mut posters = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let gateway = gateway.clone();
        posters.spawn(async move {
            for i in (worker..EVENTS).step_by(8) {
                let (status, _) = gateway.post("oneinbox", unique_payload(&format!("outage_{i}"))).await;
                assert_eq!(status, 200);
            }
        });
    }
    while let Some(r) = posters.join_next().await {
        r.unwrap();
    }
    // The healthy route got everything while the other was down.
    gateway.wait_metric("callgate_delivery_backlog{route=\"healthy\"}", 0.0).await;
    assert_eq!(receiver.at("/healthy").len(), EVENTS);
    assert_eq!(gateway.metric("callgate_delivery_backlog{route=\"crm\"}").await, EVENTS as f64);
    let during = peak_rss_kib(&gateway);

    // The route comes back: the first delivery that succeeds makes the whole backlog due. A
    // new event is that delivery: the backlog's own retries may all be an hour away by now
    // (each had its second attempt), depending on how fast the machine posted.
    receiver.clear_script("/crm");
    assert_eq!(gateway.post("oneinbox", unique_payload("outage_back")).await.0, 200);
    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    let delivered: HashSet<String> = receiver
        .at("/crm")
        .iter()
        .filter(|r| r.json()["id"].is_string())
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered.len(), EVENTS + 1, "every event reached the route after the outage");
    let after = peak_rss_kib(&gateway);
    println!("outage test: {EVENTS} events backlogged; peak RSS {during} KiB during, {after} KiB after draining");
    assert!(after < 100 * 1024, "peak RSS {after} KiB");
}

fn peak_rss_kib(gateway: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gateway.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_410_pauses_the_route_until_resumed() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    // 429 with Retry-After: 1 — the schedule's hour is replaced by one second.
    receiver.respond_with("/limited", vec![(429, vec![("retry-after".into(), "1".into())])]);
    receiver.respond("/gone", &[410]);
    let dir = temp_dir();
    let config = admin_config(dir.path())
        + &route("limited", &receiver.url("/limited"), "[routes.limited.retry]\nschedule = [\"1h\"]")
        + &route("gone", &receiver.url("/gone"), "")
        + &route("witness", &receiver.url("/witness"), "events = [\"transcript.*\"]");
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(gateway.post("vox", fixture("vox/doc-call_started.json")).await.0, 200);
    let limited = receiver.wait_for("/limited", 2).await;
    assert_eq!(limited[0].json()["id"], limited[1].json()["id"]);

    gateway.wait_metric("callgate_route_paused{route=\"gone\"}", 1.0).await;
    gateway.wait_log("410 Gone").await;
    assert_eq!(gateway.post("vox", fixture("vox/doc-mid_call-call_message.json")).await.0, 200);
    // A positive barrier before the negative check: an unpaused route got the new event.
    receiver.wait_for("/witness", 1).await;
    assert_eq!(gateway.metric("callgate_delivery_backlog{route=\"gone\"}").await, 2.0, "kept, not dead-lettered");
    assert_eq!(receiver.at("/gone").len(), 1, "nothing more is sent to a paused route");
    let (_, routes) = admin(&gateway, reqwest::Method::GET, "/v1/admin/routes").await;
    let gone = routes["routes"].as_array().unwrap().iter().find(|r| r["name"] == "gone").unwrap();
    assert_eq!((gone["paused"].as_bool(), gone["backlog"].as_i64()), (Some(true), Some(2)));

    // Paused survives a restart.
    assert!(gateway.terminate().await.success());
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(gateway.metric("callgate_route_paused{route=\"gone\"}").await, 1.0);
    let (code, out, err) = cli(&gateway, &["routes", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("gone") && l.contains("true")), "{out}");
    let (code, _, err) = cli(&gateway, &["routes", "resume", "gone"]);
    assert_eq!(code, 0, "{err}");
    let requests = receiver.wait_for("/gone", 3).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"gone\"}", 0.0).await;
    assert_eq!(gateway.metric("callgate_route_paused{route=\"gone\"}").await, 0.0);
    let types: Vec<Value> = requests.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(types, ["call.connected", "call.connected", "transcript.segment"], "in order after resuming");
    assert_eq!(receiver.at("/gone").len(), 3, "the 410, then each event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_inspected_and_replayed_through_the_api_and_the_cli() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.respond("/crm", &[500; 8]);
    let dir = temp_dir();
    let config =
        admin_config(dir.path()) + &route("crm", &receiver.url("/crm"), "[routes.crm.retry]\nschedule = [\"10ms\"]");
    let gateway = Gateway::start(dir.path(), &config).await;
    let mut ids = Vec::new();
    for call in ["dl_1", "dl_2", "dl_3", "dl_4"] {
        let (_, body) = gateway.post("oneinbox", unique_payload(call)).await;
        ids.push(body["ids"][0].as_str().unwrap().to_owned());
    }
    gateway.wait_metric("callgate_dead_letters{route=\"crm\"}", 4.0).await;

    // The metrics stay true across a restart.
    assert!(gateway.terminate().await.success());
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(gateway.metric("callgate_dead_letters{route=\"crm\"}").await, 4.0);
    assert_eq!(gateway.metric("callgate_delivery_backlog{route=\"crm\"}").await, 0.0);

    // API: list, inspect.
    let (status, list) = admin(&gateway, reqwest::Method::GET, "/v1/admin/dead-letters?route=crm").await;
    assert_eq!(status, 200);
    let items = list["dead_letters"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    let first = items.iter().find(|d| d["event_id"] == ids[0].as_str()).unwrap();
    let (status, detail) =
        admin(&gateway, reqwest::Method::GET, &format!("/v1/admin/dead-letters/{}", first["id"])).await;
    assert_eq!(status, 200);
    assert_eq!(detail["event"]["id"], ids[0].as_str());
    let attempts = detail["attempts_log"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a["status"] == 500 && a["response"] == "scripted failure"), "{detail}");

    // CLI: list and show.
    let (code, out, err) = cli(&gateway, &["dead-letters", "list", "--route", "crm"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 5, "header + 4 rows:\n{out}");
    assert!(out.contains("HTTP 500"), "{out}");
    let (code, out, _) = cli(&gateway, &["dead-letters", "show", &first["id"].to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains(&ids[0]));

    // Replay one through the API, one through the CLI, then the rest of the route.
    let (status, replay) =
        admin(&gateway, reqwest::Method::POST, &format!("/v1/admin/dead-letters/{}/replay", first["id"])).await;
    assert_eq!((status, replay["replayed"].as_u64()), (200, Some(1)));
    let second = items.iter().find(|d| d["event_id"] == ids[1].as_str()).unwrap();
    let (code, out, err) = cli(&gateway, &["dead-letters", "replay", &second["id"].to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"replayed\": 1"), "{out}");
    let (code, out, err) = cli(&gateway, &["dead-letters", "replay", "--route", "crm"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"replayed\": 2"), "{out}");
    gateway.wait_metric("callgate_dead_letters{route=\"crm\"}", 0.0).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    let delivered: HashSet<String> =
        receiver.at("/crm").iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.iter().all(|id| delivered.contains(id)), "replayed events keep their CloudEvents id");

    // Two more die; replay all since a time.
    receiver.respond("/crm", &[500; 4]);
    for call in ["dl_5", "dl_6"] {
        gateway.post("oneinbox", unique_payload(call)).await;
    }
    gateway.wait_metric("callgate_dead_letters{route=\"crm\"}", 2.0).await;
    let (status, replay) = admin(&gateway, reqwest::Method::POST, "/v1/admin/dead-letters/replay?since=1h").await;
    assert_eq!((status, replay["replayed"].as_u64()), (200, Some(2)));
    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    assert_eq!(gateway.metric("callgate_dead_letters{route=\"crm\"}").await, 0.0);
    let (status, _) = admin(&gateway, reqwest::Method::POST, "/v1/admin/dead-letters/replay").await;
    assert_eq!(status, 400, "a bulk replay must say what");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_payloads_are_listed_and_replayed_after_a_fix() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    // Misconfigured: the `calls` source says vox, but Salpre posts to it.
    let broken = admin_config(dir.path())
        + "\n[sources.calls]\nvendor = \"vox\"\n"
        + &route("crm", &receiver.url("/crm"), "include_test = true");
    let gateway = Gateway::start(dir.path(), &broken).await;
    for path in ["salpre/doc-call_initiated.json", "salpre/doc-call_ringing.json", "salpre/doc-error.json"] {
        assert_eq!(gateway.post("calls", fixture(path)).await.0, 422);
    }
    assert_eq!(gateway.post("calls", "not json").await.0, 400);
    let (code, out, err) = cli(&gateway, &["quarantine", "list", "--source", "calls"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(out.contains("unknown_event") && out.contains("invalid_json"), "{out}");
    let (_, list) = admin(&gateway, reqwest::Method::GET, "/v1/admin/quarantine").await;
    let items = list["quarantine"].as_array().unwrap();
    let (_, one) = admin(&gateway, reqwest::Method::GET, &format!("/v1/admin/quarantine/{}", items[0]["id"])).await;
    assert_eq!(one["body"], "not json");
    assert!(one["received_at"].is_string() && one["reason"] == "invalid_json");

    // Replaying before the fix changes nothing.
    let (status, replay) = admin(&gateway, reqwest::Method::POST, "/v1/admin/quarantine/replay?source=calls").await;
    assert_eq!(status, 200);
    assert!(replay["results"].as_array().unwrap().iter().all(|r| r["outcome"] == "rejected"), "{replay}");

    // The operator fixes the source and replays: one by id (API), the rest by source (CLI).
    assert!(gateway.terminate().await.success());
    let fixed = broken.replace("[sources.calls]\nvendor = \"vox\"", "[sources.calls]\nvendor = \"salpre\"");
    let gateway = Gateway::start(dir.path(), &fixed).await;
    let oldest = items.last().unwrap()["id"].clone();
    let (status, replay) =
        admin(&gateway, reqwest::Method::POST, &format!("/v1/admin/quarantine/{oldest}/replay")).await;
    assert_eq!(status, 200);
    assert_eq!(replay["results"][0]["outcome"], "accepted", "{replay}");
    let (code, out, err) = cli(&gateway, &["quarantine", "replay", "--source", "calls"]);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    let outcomes: Vec<&str> =
        answer["results"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["accepted", "accepted", "rejected"], "the non-JSON body still fails: {out}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(2), Some(1)));
    let requests = receiver.wait_for("/crm", 3).await;
    let mut types: Vec<String> = requests.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    types.sort();
    assert_eq!(types, ["call.error", "call.initiated", "call.ringing"]);
    assert!(requests.iter().all(|r| r.json()["data"]["source"] == "calls"));
    let (_, left) = admin(&gateway, reqwest::Method::GET, "/v1/admin/quarantine").await;
    assert_eq!(left["quarantine"].as_array().unwrap().len(), 1, "accepted payloads leave the quarantine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_call_never_holds_back_other_calls() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.fail_bodies_containing("call_stuck", 500);
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &route("crm", &receiver.url("/crm"), "[routes.crm.retry]\nschedule = [\"50ms\", \"1h\"]");
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(gateway.post("oneinbox", unique_payload("call_stuck")).await.0, 200);
    let stuck_followup =
        r#"{"event":"call.recording.available","call_id":"call_stuck","recording_url":"https://x/1.mp3"}"#.to_string();
    assert_eq!(gateway.post("oneinbox", stuck_followup).await.0, 200);
    for call in ["call_ok_1", "call_ok_2", "call_ok_3"] {
        assert_eq!(gateway.post("oneinbox", unique_payload(call)).await.0, 200);
    }
    // The stuck call's first event has failed twice and waits an hour; the others arrived.
    gateway.wait_metric("callgate_deliveries_total{route=\"crm\",outcome=\"success\"}", 3.0).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"crm\",outcome=\"retry\"}", 2.0).await;
    let subjects: Vec<String> =
        receiver.at("/crm").iter().map(|r| r.json()["subject"].as_str().unwrap().to_owned()).collect();
    assert_eq!(subjects.iter().filter(|s| s.ends_with("call_stuck")).count(), 2, "only the two failed attempts");
    assert_eq!(
        gateway.metric("callgate_delivery_backlog{route=\"crm\"}").await,
        2.0,
        "the stuck call's follow-up waits behind it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_retried_then_dead_lettered_with_the_reason() {
    crate::require_backend!();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/nobody", closed.local_addr().unwrap());
    drop(closed);
    let dir = temp_dir();
    let config =
        admin_config(dir.path()) + &route("void", &url, "[routes.void.retry]\nschedule = [\"10ms\", \"10ms\"]");
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(gateway.post("vox", fixture("vox/doc-call_started.json")).await.0, 200);
    gateway.wait_metric("callgate_dead_letters{route=\"void\"}", 1.0).await;
    let (_, list) = admin(&gateway, reqwest::Method::GET, "/v1/admin/dead-letters").await;
    let dead = &list["dead_letters"][0];
    assert_eq!(dead["attempts"], 3);
    assert!(dead["last_error"].as_str().unwrap().starts_with("connection failed"), "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_always_requires_its_token() {
    crate::require_backend!();
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &admin_config(dir.path())).await;
    let url = gateway.ops_url("/v1/admin/dead-letters");
    assert_eq!(gateway.http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(gateway.http.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    assert_eq!(gateway.http.get(&url).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    drop(gateway);

    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &base_config(dir.path())).await;
    let response = gateway.http.get(gateway.ops_url("/v1/admin/routes")).bearer_auth("anything").send().await.unwrap();
    assert_eq!(response.status(), 403, "no token configured: the admin API is off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_detected_within_the_window_and_old_records_are_pruned() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    // First within a window no test run can outlast, so "duplicate" never depends on speed;
    // then, on the same store, windows that have long passed, so pruning must happen.
    let windows = |window: &str| {
        base_config(dir.path()).replace(
            "[storage]\n",
            &format!("[storage]\nretention = \"{window}\"\ndedup_window = \"{window}\"\nprune_interval = \"100ms\"\n"),
        ) + &route("crm", &receiver.url("/crm"), "")
    };
    let gateway = Gateway::start(dir.path(), &windows("1h")).await;
    let body = fixture("vox/doc-call_started.json");
    let (_, first) = gateway.post("vox", body.clone()).await;
    assert_eq!(first["accepted"], 1);
    assert_eq!(gateway.post("vox", body.clone()).await.1["duplicate"], true);
    receiver.wait_for("/crm", 1).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    assert_eq!(gateway.post("vox", body.clone()).await.1["duplicate"], true, "still within the window");
    assert!(gateway.terminate().await.success());

    let gateway = Gateway::start(dir.path(), &windows("100ms")).await;
    // Pruning runs on its own schedule: poll until it has removed the record.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (_, answer) = gateway.post("vox", body.clone()).await;
        if answer["accepted"] == 1 {
            break;
        }
        assert_eq!(answer["duplicate"], true, "{answer}");
        assert!(std::time::Instant::now() < deadline, "never pruned: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.wait_log("Pruned old records.").await;
    let requests = receiver.wait_for("/crm", 2).await;
    assert_eq!(requests[1].json()["id"], first["ids"][0], "accepted again, with the same id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_is_bounded_and_leaves_unfinished_deliveries_for_the_next_start() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.hold("/slow");
    let dir = temp_dir();
    let config = base_config(dir.path()).replace("shutdown_grace = \"5s\"", "shutdown_grace = \"500ms\"")
        + &route("slow", &receiver.url("/slow"), "timeout = \"60s\"");
    let gateway = Gateway::start(dir.path(), &config).await;
    let (_, body) = gateway.post("vox", fixture("vox/doc-call_started.json")).await;
    receiver.wait_for("/slow", 1).await;
    let exit = tokio::time::timeout(Duration::from_secs(10), gateway.terminate()).await.expect("bounded shutdown");
    assert!(exit.success(), "{exit:?}");
    receiver.release();

    let gateway = Gateway::start(dir.path(), &config).await;
    let requests = receiver.wait_for("/slow", 2).await;
    assert_eq!(requests[1].json()["id"], body["ids"][0]);
    gateway.wait_metric("callgate_delivery_backlog{route=\"slow\"}", 0.0).await;
}
