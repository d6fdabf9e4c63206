//! Call records on the binary: `GET /v1/calls/{subject}` merges a call's events (golden
//! fixtures of every vendor) into one record with its events in acceptance order and each
//! route's delivery state; `GET /v1/calls` lists and filters; `callgate calls` shows both.

use std::process::Command;

use callgate::canonical::{CloudEvent, call::merge};
use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "calls-t0ken";

fn config(dir: &std::path::Path, routes: &str) -> String {
    base_config(dir) + &format!("\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n") + routes
}

fn route(name: &str, url: &str, extra: &str) -> String {
    format!("\n[routes.{name}]\nurl = \"{url}\"\ninclude_test = true\n{extra}\n")
}

async fn admin(gateway: &Gateway, path: &str) -> (u16, Value) {
    let response = gateway.http.get(gateway.ops_url(path)).bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

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

/// A call made of golden fixtures, posted in this order.
struct FixtureCall {
    source: &'static str,
    subject: &'static str,
    fixtures: &'static [&'static str],
}

const CALLS: &[FixtureCall] = &[
    FixtureCall {
        source: "oneinbox",
        subject: "oneinbox:call_abc123",
        // The analysis before the end: the `call.analyzed` one stays.
        fixtures: &[
            "doc-call.started",
            "doc-transcript.partial",
            "doc-call.analyzed",
            "doc-transcript.final",
            "doc-call.ended",
            "doc-call.recording.available",
        ],
    },
    FixtureCall {
        source: "vox",
        subject: "vox:6b0f1f08-1c2b-4f0e-9c3a-0c1d9e6f5a82",
        fixtures: &["doc-call_started", "doc-mid_call-flow_transition", "doc-mid_call-call_message", "doc-call_ended"],
    },
    FixtureCall {
        source: "vox",
        subject: "vox:3079f46c-d141-4cd9-805f-69f212136b66",
        fixtures: &[
            "v2-call_started",
            "v2-mid_call-flow_transition",
            "v2-mid_call-call_message",
            "v2-call_ended",
            "v2-call_analyzed",
        ],
    },
    FixtureCall {
        source: "vox",
        subject: "vox:9c1e4b7a-52d8-4f06-a3b9-e8d27c5f1a64",
        fixtures: &["v2-call_ended-not_connected"],
    },
    FixtureCall {
        source: "salpre",
        subject: "salpre:1",
        fixtures: &[
            "doc-call_initiated",
            "doc-call_ringing",
            "doc-call_answered",
            "doc-transcript",
            "doc-error",
            "doc-call_ended",
        ],
    },
    FixtureCall {
        source: "utel",
        subject: "utel:5f0c2d7e-9a41-4b8e-b3c6-1e2f7a9d4c08",
        // The call record (`call_saved`) before the end, and a leg's end after it.
        fixtures: &[
            "synthetic-call_started",
            "synthetic-dial_started",
            "synthetic-dial_answered",
            "synthetic-call_saved-answered",
            "synthetic-call_ended-answered",
            "synthetic-dial_ended",
        ],
    },
    FixtureCall {
        source: "retell",
        subject: "retell:Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6",
        fixtures: &["var-call_started", "doc-call_ended", "var-call_analyzed"],
    },
];

impl FixtureCall {
    fn path(&self, fixture: &str) -> String {
        format!("{}/{fixture}.json", self.source)
    }

    /// The golden events of its fixtures, in posting order.
    fn expected(&self) -> Vec<Value> {
        self.fixtures.iter().flat_map(|f| expected(&self.path(f))).collect()
    }
}

/// Posts every call's fixtures and waits until the route got every event.
async fn post_all(gateway: &Gateway, receiver: &Receiver) {
    let mut total = 0;
    for call in CALLS {
        for name in call.fixtures {
            let (status, answer) = gateway.post(call.source, fixture(&call.path(name))).await;
            assert_eq!(status, 200, "{}: {answer}", call.path(name));
            total += answer["accepted"].as_u64().unwrap() as usize;
        }
    }
    receiver.wait_for("/all", total).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"all\"}", 0.0).await;
}

/// The record `merge` makes of the golden events, as JSON.
fn merged(events: &[Value]) -> Value {
    let events: Vec<CloudEvent> = events.iter().map(|e| serde_json::from_value(e.clone()).unwrap()).collect();
    serde_json::to_value(merge(&events)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vendors_call_shows_its_merged_record_events_and_deliveries() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let routes = route("all", &receiver.url("/all"), "")
        + &route("done", &receiver.url("/done"), "events = [\"call.completed\"]");
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &routes)).await;
    post_all(&gateway, &receiver).await;
    // Every call but the one that never connected (vox v2 sends its analysis after a failed
    // call too) is complete with its fixtures: each gets its `call.completed` at ingest.
    let complete = |subject: &str| subject != "vox:9c1e4b7a-52d8-4f06-a3b9-e8d27c5f1a64";
    receiver.wait_for("/done", CALLS.iter().filter(|c| complete(c.subject)).count()).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"done\"}", 0.0).await;

    for call in CALLS {
        // Subjects hold `:`; an encoded one is read the same.
        let encoded = call.subject.replace(':', "%3A");
        let (status, answer) = admin(&gateway, &format!("/v1/calls/{encoded}")).await;
        assert_eq!(status, 200, "{}: {answer}", call.subject);
        // Each vendor's whole answer (record, transcript, analysis, cost…) is the documented one.
        crate::openapi::assert_documented("GET", "/v1/calls/{subject}", status, &answer);
        let expected = call.expected();
        let completed = usize::from(complete(call.subject));
        let all = answer["events"].as_array().unwrap();
        // The vendor's events and (once) the call's `call.completed`; a piece committed after
        // it was made (Utel's leg end, accepted meanwhile) is late: not merged into it.
        let at = all.iter().position(|e| e["type"] == "call.completed");
        assert_eq!(at.is_some(), completed == 1, "{}", call.subject);
        let late = answer["record"]["late"].as_array().unwrap();
        assert_eq!(answer["summary"]["late"], answer["record"]["late"], "{}", call.subject);
        if let Some(at) = at {
            let merged_events = all[at]["data"]["completion"]["events"].as_u64().unwrap() as usize;
            assert_eq!(merged_events + late.len(), expected.len(), "{}: merged or late", call.subject);
            let after: Vec<Value> = all[at + 1..].iter().map(|e| e["type"].clone()).collect();
            if backend() == Backend::Sqlite {
                // One writer: acceptance order is commit order, so the late ones come after it.
                assert_eq!(late, &after, "{}", call.subject);
            } else {
                // PostgreSQL numbers an event when it is inserted, before its transaction
                // commits: a late piece may hold a place before the call.completed.
                assert!(after.iter().all(|t| late.contains(t)), "{}: {after:?} not in {late:?}", call.subject);
            }
        } else {
            assert!(late.is_empty(), "{}", call.subject);
        }
        let events: Vec<&Value> = all.iter().filter(|e| e["type"] != "call.completed").collect();
        let got: Vec<Value> = events.iter().copied().cloned().map(without_received_at).collect();
        let want: Vec<Value> = expected.iter().cloned().map(without_received_at).collect();
        assert_eq!(got, want, "{}: its events in acceptance order", call.subject);
        let mut record = answer["record"].clone();
        assert_eq!(record["completed_at"].is_string(), completed == 1, "{}", call.subject);
        record["completed_at"] = Value::Null;
        record["late"] = json!([]);
        assert_eq!(record, merged(&expected), "{}: the record merges them", call.subject);
        assert_eq!(answer["subject"], call.subject);
        assert_eq!(answer["summary"]["events"], expected.len() + completed);
        assert_eq!(answer["summary"]["status"], answer["record"]["status"], "{}", call.subject);
        assert_eq!(answer["events_truncated"], false);
        // Every event went to the one route and was delivered; `call.completed` to its own.
        let routes = answer["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 1 + completed, "{}: {routes:?}", call.subject);
        assert_eq!(
            (&routes[0]["route"], &routes[0]["delivered"], &routes[0]["pending"], &routes[0]["dead"]),
            (&json!("all"), &json!(expected.len()), &json!(0), &json!(0)),
            "{}",
            call.subject
        );
        let ids: Vec<&Value> = routes[0]["deliveries"].as_array().unwrap().iter().map(|d| &d["event_id"]).collect();
        assert_eq!(ids, events.iter().map(|e| &e["id"]).collect::<Vec<_>>());
    }

    // What each vendor's record says, beyond "it is the merge".
    let record = |subject: &str| {
        let subject = subject.to_owned();
        let gateway = &gateway;
        async move { admin(gateway, &format!("/v1/calls/{subject}")).await.1["record"].clone() }
    };
    let oneinbox = record("oneinbox:call_abc123").await;
    assert_eq!((&oneinbox["phase"], &oneinbox["status"]), (&json!("ended"), &json!("completed")));
    assert_eq!(oneinbox["transcript"]["source"], "final");
    assert_eq!(oneinbox["recording_url"], "https://storage.oneinbox.ai/recordings/call_abc123.mp3");
    assert_eq!(oneinbox["analysis"]["summary"], "Caller agreed to a product demo on Thursday at 3pm.");
    assert_eq!(oneinbox["duration_ms"], 87_000);
    assert_eq!(
        oneinbox["pieces"],
        json!([
            "call.connected",
            "call.ended",
            "call.analyzed",
            "call.recording.ready",
            "transcript.partial",
            "transcript.final"
        ])
    );
    let vox_v1 = record("vox:6b0f1f08-1c2b-4f0e-9c3a-0c1d9e6f5a82").await;
    assert_eq!((&vox_v1["phase"], &vox_v1["status"]), (&json!("ended"), &json!("completed")));
    assert_eq!(vox_v1["transcript"]["source"], "final");
    assert!(vox_v1["recording_url"].is_string() && vox_v1["analysis"].is_object(), "{vox_v1}");
    let vox_v2 = record("vox:3079f46c-d141-4cd9-805f-69f212136b66").await;
    assert_eq!(vox_v2["status"], "completed");
    assert!(vox_v2["cost"].is_object() && vox_v2["analysis"].is_object(), "v2 analysis and cost arrive after the end");
    assert!(vox_v2["pieces"].as_array().unwrap().contains(&json!("call.analyzed")));
    let failed = record("vox:9c1e4b7a-52d8-4f06-a3b9-e8d27c5f1a64").await;
    assert_eq!((&failed["phase"], &failed["pieces"]), (&json!("ended"), &json!(["call.failed"])));
    assert_ne!(failed["status"], "completed");
    let salpre = record("salpre:1").await;
    assert_eq!((&salpre["status"], &salpre["transcript"]["source"]), (&json!("completed"), &json!("final")));
    assert_eq!(salpre["errors"].as_array().unwrap().len(), 1);
    let utel = record("utel:5f0c2d7e-9a41-4b8e-b3c6-1e2f7a9d4c08").await;
    assert_eq!((&utel["phase"], &utel["status"]), (&json!("ended"), &json!("completed")));
    assert!(utel["recording_url"].is_string(), "{utel}");
    let retell = record("retell:Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6").await;
    assert_eq!((&retell["status"], &retell["transcript"]["source"]), (&json!("completed"), &json!("final")));
    assert!(retell["analysis"].is_object());

    // The listing: every call, newest first, filtered and paged.
    let (status, list) = admin(&gateway, "/v1/calls").await;
    assert_eq!(status, 200, "{list}");
    let subjects: Vec<&str> =
        list["calls"].as_array().unwrap().iter().map(|c| c["subject"].as_str().unwrap()).collect();
    let mut newest_first: Vec<&str> = CALLS.iter().map(|c| c.subject).collect();
    newest_first.reverse();
    assert_eq!(subjects, newest_first);
    let (_, vox) = admin(&gateway, "/v1/calls?source=vox").await;
    assert_eq!(vox["calls"].as_array().unwrap().len(), 3);
    let (_, completed) = admin(&gateway, "/v1/calls?status=completed").await;
    assert_eq!(completed["calls"].as_array().unwrap().len(), CALLS.len() - 1, "all but the failed one");
    let (_, open) = admin(&gateway, "/v1/calls?status=in_progress&since=1h").await;
    assert_eq!(open["calls"], json!([]));
    let (_, page) = admin(&gateway, "/v1/calls?limit=2").await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 2);
    let next = page["next_before_id"].as_i64().expect("a next page");
    let (_, rest) = admin(&gateway, &format!("/v1/calls?before_id={next}&limit=1000")).await;
    assert_eq!(rest["calls"].as_array().unwrap().len(), CALLS.len() - 2);
    assert_eq!(rest["next_before_id"], Value::Null);

    // The CLI shows the same.
    let (code, out, err) = cli(&gateway, &["calls", "show", "salpre:1"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["record"]["status"], "completed");
    assert_eq!(shown["events"].as_array().unwrap().len(), 8, "six events, its call.completed");
    let (code, out, err) = cli(&gateway, &["calls", "list", "--status", "completed", "--source", "utel"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("utel:5f0c2d7e-9a41-4b8e-b3c6-1e2f7a9d4c08") && out.contains("completed"), "{out}");
    assert!(!out.contains("salpre:1"), "{out}");
    let (code, _, err) = cli(&gateway, &["calls", "show", "salpre:404"]);
    assert_ne!(code, 0);
    assert!(err.contains("no call with subject `salpre:404`"), "{err}");
    gateway.terminate().await;
}

/// A call's route states while they change: delivered, in flight (held at the receiver), the
/// follower pending behind it, dead letters; and the errors of the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_shows_each_routes_delivery_state() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let routes = route("ok", &receiver.url("/ok"), "")
        + &route("held", &receiver.url("/held"), "timeout = \"1h\"")
        + &route("dead", &receiver.url("/dead"), "[routes.dead.retry]\nschedule = [\"10ms\"]")
        + &route("ended_only", &receiver.url("/ended"), "events = [\"call.ended\"]");
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &routes)).await;
    receiver.hold("/held");
    receiver.respond("/dead", &[500, 500, 500, 500]);
    for path in ["oneinbox/doc-call.started.json", "oneinbox/doc-call.ended.json"] {
        assert_eq!(gateway.post("oneinbox", fixture(path)).await.0, 200);
    }
    receiver.wait_for("/ok", 2).await;
    receiver.wait_for("/ended", 1).await;
    receiver.wait_for("/held", 1).await;
    gateway.wait_metric("callgate_dead_letters{route=\"dead\"}", 2.0).await;
    // Arrival is not the outcome: the backlog gauges follow the store's commits.
    gateway.wait_metric("callgate_delivery_backlog{route=\"ok\"}", 0.0).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"ended_only\"}", 0.0).await;

    let (status, answer) = admin(&gateway, "/v1/calls/oneinbox:call_abc123").await;
    assert_eq!(status, 200, "{answer}");
    let events = answer["events"].as_array().unwrap();
    let (started, ended) = (&events[0]["id"], &events[1]["id"]);
    let by_route =
        |name: &str| answer["routes"].as_array().unwrap().iter().find(|r| r["route"] == name).cloned().unwrap();
    let states = |name: &str| -> Vec<(Value, Value)> {
        by_route(name)["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["event_id"].clone(), d["state"].clone()))
            .collect()
    };
    assert_eq!(states("ok"), [(started.clone(), json!("delivered")), (ended.clone(), json!("delivered"))]);
    assert_eq!(states("held"), [(started.clone(), json!("in_flight")), (ended.clone(), json!("pending"))]);
    assert_eq!(states("dead"), [(started.clone(), json!("dead")), (ended.clone(), json!("dead"))]);
    assert_eq!(states("ended_only"), [(ended.clone(), json!("delivered"))], "only the routes an event was queued for");
    let dead = by_route("dead");
    assert_eq!((&dead["dead"], &dead["delivered"]), (&json!(2), &json!(0)));
    let first_dead = &dead["deliveries"][0];
    assert_eq!((&first_dead["attempts"], &first_dead["last_error"]), (&json!(2), &json!("HTTP 500")));
    // Its id is the dead-letter API's.
    let (status, letter) = admin(&gateway, &format!("/v1/admin/dead-letters/{}", first_dead["delivery_id"])).await;
    assert_eq!((status, &letter["event_id"]), (200, started));
    let held = by_route("held");
    assert_eq!((&held["in_flight"], &held["pending"], &held["delivered"]), (&json!(1), &json!(1), &json!(0)));
    assert_eq!(answer["record"]["status"], "completed");

    // Once released, the held route delivers both.
    receiver.release();
    receiver.wait_for("/held", 2).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"held\"}", 0.0).await;
    let (_, answer) = admin(&gateway, "/v1/calls/oneinbox:call_abc123").await;
    let held = answer["routes"].as_array().unwrap().iter().find(|r| r["route"] == "held").cloned().unwrap();
    assert_eq!((&held["delivered"], &held["in_flight"], &held["pending"]), (&json!(2), &json!(0), &json!(0)));

    // Errors: unknown call, bad filter, no token.
    let (status, missing) = admin(&gateway, "/v1/calls/oneinbox:nope").await;
    assert_eq!((status, &missing["error"]["code"]), (404, &json!("not_found")));
    let (status, bad) = admin(&gateway, "/v1/calls?status=ringing").await;
    assert_eq!((status, &bad["error"]["code"]), (400, &json!("bad_request")));
    assert!(bad["error"]["message"].as_str().unwrap().contains("in_progress"), "{bad}");
    let (status, _) = admin(&gateway, "/v1/calls?colour=red").await;
    assert_eq!(status, 400);
    let anonymous = gateway.http.get(gateway.ops_url("/v1/calls/oneinbox:call_abc123")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let on_ingress = gateway.http.get(gateway.url("/v1/calls")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(on_ingress.status().as_u16(), 404, "the admin API is on the admin listener only");
    gateway.terminate().await;
}

/// The summary survives a restart and a call accepted in parts keeps its place and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_record_survives_a_restart_and_grows_with_later_events() {
    crate::require_backend!();
    let dir = temp_dir();
    let receiver = Receiver::start().await;
    let done = route("done", &receiver.url("/done"), "events = [\"call.completed\"]");
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &done)).await;
    assert_eq!(gateway.post("salpre", fixture("salpre/doc-call_initiated.json")).await.0, 200);
    let (_, open) = admin(&gateway, "/v1/calls?status=in_progress").await;
    assert_eq!(open["calls"][0]["subject"], "salpre:1");
    assert_eq!(open["calls"][0]["status"], Value::Null);
    let (_, early) = admin(&gateway, "/v1/calls/salpre:1").await;
    assert_eq!((&early["record"]["phase"], &early["record"]["status"]), (&json!("initiated"), &Value::Null));
    assert_eq!(early["routes"], json!([]), "no route, no deliveries");
    gateway.terminate().await;

    let gateway = Gateway::start(dir.path(), &config(dir.path(), &done)).await;
    for path in ["salpre/doc-transcript.json", "salpre/doc-call_ended.json"] {
        assert_eq!(gateway.post("salpre", fixture(path)).await.0, 200);
    }
    // Salpre's end completes the call (its `call.completed` counts among its events).
    receiver.wait_for("/done", 1).await;
    let (_, open) = admin(&gateway, "/v1/calls?status=in_progress").await;
    assert_eq!(open["calls"], json!([]));
    let (_, done) = admin(&gateway, "/v1/calls?status=completed").await;
    assert_eq!(done["calls"].as_array().unwrap().len(), 1);
    assert_eq!(done["calls"][0]["events"], 5);
    assert!(done["calls"][0]["terminal_at"].is_string());
    let (_, call) = admin(&gateway, "/v1/calls/salpre:1").await;
    assert_eq!(
        call["record"]["pieces"],
        json!(["call.initiated", "call.ended", "transcript.segment", "transcript.final"])
    );
    assert_eq!(call["record"]["transcript"]["source"], "final");
    gateway.terminate().await;
}
