//! The delivery log and test sends on the binary: every attempt of every delivery (successes
//! included) listed per route with its filters and pages, one event with each route's delivery
//! state, and a test send that goes out signed like a delivery, outside the queue, on a paused
//! route, and is logged as a test. Through the admin API and the CLI.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "admin-t0ken";
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn admin_config(dir: &std::path::Path) -> String {
    base_config(dir) + &format!("\n[admin]\ntoken = \"{TOKEN}\"\n")
}

/// A OneInbox `call.started` with a unique call id: one canonical event per body.
fn payload(call_id: &str) -> String {
    format!(
        r#"{{"event":"call.started","call_id":"{call_id}","agent_id":"agt_1","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
    )
}

async fn admin(gateway: &Gateway, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = gateway.http.request(method, gateway.ops_url(path)).bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(gateway: &Gateway, path: &str) -> Value {
    let (status, body) = admin(gateway, reqwest::Method::GET, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
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

fn field<'a>(items: &'a [Value], key: &str) -> Vec<&'a Value> {
    items.iter().map(|i| &i[key]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_logged_and_listed_newest_first_with_its_filters_and_pages() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let config = admin_config(dir.path())
        + &format!(
            "\n[routes.crm]\nurl = \"{}\"\nsources = [\"oneinbox\"]\n[routes.crm.retry]\nschedule = [\"10ms\"]\n",
            receiver.url("/crm")
        );
    let gateway = Gateway::start(dir.path(), &config).await;

    // One event fails once and then goes through; the next fails twice and is dead-lettered.
    receiver.respond("/crm", &[500]);
    let (_, first) = gateway.post("oneinbox", payload("log_1")).await;
    let delivered = first["ids"][0].as_str().unwrap().to_owned();
    gateway.wait_metric("callgate_deliveries_total{route=\"crm\",outcome=\"success\"}", 1.0).await;
    receiver.respond("/crm", &[500, 502]);
    let (_, second) = gateway.post("oneinbox", payload("log_2")).await;
    let dead = second["ids"][0].as_str().unwrap().to_owned();
    gateway.wait_metric("callgate_dead_letters{route=\"crm\"}", 1.0).await;

    let log = get(&gateway, "/v1/admin/routes/crm/deliveries").await;
    let items = log["deliveries"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{log}");
    assert_eq!(log["next_before_id"], Value::Null, "one page holds it all");
    let ids: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let event_ids = [&dead, &dead, &delivered, &delivered];
    assert_eq!(field(items, "event_id"), event_ids.map(|s| Value::from(s.as_str())).iter().collect::<Vec<_>>());
    assert_eq!(field(items, "outcome"), [&Value::from("dead"), &"failed".into(), &"success".into(), &"failed".into()]);
    assert_eq!(field(items, "attempt"), [&Value::from(2), &1.into(), &2.into(), &1.into()]);
    assert_eq!(field(items, "status"), [&Value::from(502), &500.into(), &200.into(), &500.into()]);
    assert_eq!(
        field(items, "response"),
        [&Value::from("scripted failure"), &"scripted failure".into(), &"ok".into(), &"scripted failure".into()]
    );
    for item in items {
        assert_eq!((item["route"].as_str(), item["type"].as_str()), (Some("crm"), Some("call.connected")), "{item}");
        assert_eq!(item["test"], false);
        assert!(item["duration_ms"].as_i64().is_some_and(|d| d >= 0) && item["at"].is_string(), "{item}");
        assert!(item["delivery_id"].is_i64() && item["error"].is_null(), "{item}");
    }
    assert_eq!(items[2]["subject"], "oneinbox:log_1");

    // Filters.
    let only = |query: &str| {
        let path = format!("/v1/admin/routes/crm/deliveries?{query}");
        let gateway = &gateway;
        async move { get(gateway, &path).await["deliveries"].as_array().unwrap().clone() }
    };
    let success = only("outcome=success").await;
    assert_eq!((success.len(), success[0]["event_id"].as_str()), (1, Some(delivered.as_str())));
    let died = only("outcome=dead").await;
    assert_eq!((died.len(), died[0]["event_id"].as_str()), (1, Some(dead.as_str())));
    assert_eq!(only("outcome=failed").await.len(), 2);
    let call = only("subject=oneinbox:log_2").await;
    assert!(call.len() == 2 && call.iter().all(|i| i["event_id"] == dead.as_str()), "{call:?}");
    assert_eq!(only("since=1h").await.len(), 4);
    assert_eq!(only("since=2999-01-01T00:00:00Z").await.len(), 0);
    assert_eq!(only("test=true").await.len(), 0);
    assert_eq!(only("test=false").await.len(), 4);

    // Pages, as the other lists page.
    let page = get(&gateway, "/v1/admin/routes/crm/deliveries?limit=3").await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 3);
    let next = page["next_before_id"].as_i64().expect("a full page says where to go on");
    assert_eq!(next, ids[2]);
    let rest = get(&gateway, &format!("/v1/admin/routes/crm/deliveries?limit=3&before_id={next}")).await;
    assert_eq!(field(rest["deliveries"].as_array().unwrap(), "id"), [&Value::from(ids[3])]);
    assert_eq!(rest["next_before_id"], Value::Null);

    // Mistakes.
    let (status, body) = admin(&gateway, reqwest::Method::GET, "/v1/admin/routes/crm/deliveries?outcome=bogus").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("success, failed or dead"), "{body}");
    let (status, _) = admin(&gateway, reqwest::Method::GET, "/v1/admin/routes/nope/deliveries").await;
    assert_eq!(status, 404);
    let (status, _) = admin(&gateway, reqwest::Method::GET, "/v1/admin/routes/crm/deliveries?color=red").await;
    assert_eq!(status, 400);

    // One event: where each route's delivery stands, with its attempts.
    let shown = get(&gateway, &format!("/v1/admin/events/{delivered}")).await;
    assert_eq!(
        (shown["id"].as_str(), shown["event"]["id"].as_str()),
        (Some(delivered.as_str()), Some(delivered.as_str()))
    );
    assert_eq!(shown["subject"], "oneinbox:log_1");
    let routes = shown["deliveries"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{shown}");
    assert_eq!((routes[0]["route"].as_str(), routes[0]["state"].as_str()), (Some("crm"), Some("delivered")));
    assert_eq!(routes[0]["attempts"], 2);
    assert_eq!(
        field(routes[0]["attempts_log"].as_array().unwrap(), "outcome"),
        [&Value::from("failed"), &"success".into()]
    );
    let shown = get(&gateway, &format!("/v1/admin/events/{dead}")).await;
    assert_eq!(shown["deliveries"][0]["state"], "dead");
    assert_eq!(shown["deliveries"][0]["attempts_log"].as_array().unwrap().len(), 2);
    let (status, _) =
        admin(&gateway, reqwest::Method::GET, "/v1/admin/events/ce_00000000000000000000000000000000").await;
    assert_eq!(status, 404);

    // The CLI.
    let (code, out, err) = cli(&gateway, &["deliveries", "list", "--route", "crm", "--outcome", "dead"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "header + 1 row:\n{out}");
    assert!(out.contains(&dead) && out.contains("dead") && out.contains("502"), "{out}");
    let (code, out, err) = cli(&gateway, &["deliveries", "list", "--route", "crm", "--limit", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("--before-id {}", ids[0])), "says how to go on:\n{out}");
    let (code, out, err) = cli(&gateway, &["events", "show", &delivered]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["deliveries"][0]["state"], "delivered");

    // The log survives a restart.
    assert!(gateway.terminate().await.success());
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(get(&gateway, "/v1/admin/routes/crm/deliveries").await["deliveries"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_shows_each_route_pending_in_flight_paused_and_delivered() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let route = |name: &str, extra: &str| {
        format!(
            "\n[routes.{name}]\nurl = \"{}\"\nsources = [\"oneinbox\"]\n{extra}\n",
            receiver.url(&format!("/{name}"))
        )
    };
    let config = admin_config(dir.path())
        + &route("held", "")
        + &route("later", "[routes.later.retry]\nschedule = [\"1h\"]")
        + &route("stopped", "");
    let gateway = Gateway::start(dir.path(), &config).await;
    let (status, _) = admin(&gateway, reqwest::Method::POST, "/v1/admin/routes/stopped/pause").await;
    assert_eq!(status, 200);
    receiver.hold("/held");
    receiver.respond("/later", &[503]);
    let (_, body) = gateway.post("oneinbox", payload("states_1")).await;
    let id = body["ids"][0].as_str().unwrap().to_owned();
    receiver.wait_pending("/held", "held", |p| p.len() == 1).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"later\",outcome=\"retry\"}", 1.0).await;

    let state = |shown: &Value, route: &str| {
        shown["deliveries"].as_array().unwrap().iter().find(|d| d["route"] == route).cloned().unwrap()
    };
    let shown = get(&gateway, &format!("/v1/admin/events/{id}")).await;
    assert_eq!(shown["deliveries"].as_array().unwrap().len(), 3, "{shown}");
    let held = state(&shown, "held");
    assert_eq!((held["state"].as_str(), held["attempts"].as_i64()), (Some("in_flight"), Some(0)), "{held}");
    assert!(held["lease_until"].is_string(), "{held}");
    let later = state(&shown, "later");
    assert_eq!((later["state"].as_str(), later["attempts"].as_i64()), (Some("retrying"), Some(1)), "{later}");
    let next_at = chrono::DateTime::parse_from_rfc3339(later["next_at"].as_str().unwrap()).unwrap();
    assert!(next_at > chrono::Utc::now() + chrono::Duration::minutes(30), "the retry an hour away: {later}");
    assert_eq!(later["attempts_log"][0]["status"], 503);
    let stopped = state(&shown, "stopped");
    assert_eq!((stopped["state"].as_str(), stopped["attempts"].as_i64()), (Some("paused"), Some(0)), "{stopped}");

    receiver.release();
    gateway.wait_metric("callgate_deliveries_total{route=\"held\",outcome=\"success\"}", 1.0).await;
    let shown = get(&gateway, &format!("/v1/admin/events/{id}")).await;
    let held = state(&shown, "held");
    assert_eq!((held["state"].as_str(), held["attempts"].as_i64()), (Some("delivered"), Some(1)), "{held}");
    assert_eq!(held["attempts_log"][0]["outcome"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_goes_out_signed_like_a_delivery_outside_the_queue_and_is_logged_as_a_test() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    // A port nothing listens on, for the connection error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = admin_config(dir.path())
        + &format!(
            r#"
[routes.signed]
url = "{}"
events = ["call.ended", "call.failed"]
signing_secret = "{SIGNING_SECRET}"
headers = {{ X-Route = "crm", X-Call = "{{{{data.call_id}}}}", X-Type = "{{{{type}}}}" }}

[routes.void]
url = "http://{closed}/void"
"#,
            receiver.url("/signed")
        );
    let gateway = Gateway::start(dir.path(), &config).await;
    // Works on a paused route.
    let (status, _) = admin(&gateway, reqwest::Method::POST, "/v1/admin/routes/signed/pause").await;
    assert_eq!(status, 200);

    // Default type: the first the route takes.
    let (status, answer) = admin(&gateway, reqwest::Method::POST, "/v1/admin/routes/signed/test").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["outcome"].as_str(), answer["status"].as_i64()), (Some("success"), Some(200)), "{answer}");
    assert_eq!((answer["type"].as_str(), answer["response"].as_str()), (Some("call.ended"), Some("ok")));
    assert!(answer["duration_ms"].is_i64() && answer["error"].is_null() && answer["log_id"].is_i64(), "{answer}");
    let requests = receiver.wait_for("/signed", 1).await;
    let request = &requests[0];
    let event = request.json();
    assert_eq!(event["id"], answer["event_id"]);
    assert_eq!(event["type"], "call.ended");
    assert_eq!(event["data"]["test"], true, "marked as a test");
    assert_eq!(event["subject"], answer["subject"]);
    // Exactly as a delivery: the event validates, its headers render, its signature verifies.
    let validator = callgate::vendors::compile(include_str!("../../schemas/canonical/event.json")).unwrap();
    assert!(validator.is_valid(&event), "{event}");
    assert_eq!(request.header("content-type").as_deref(), Some("application/cloudevents+json"));
    assert_eq!(request.header("x-route").as_deref(), Some("crm"));
    assert_eq!(request.header("x-type").as_deref(), Some("call.ended"));
    assert_eq!(request.header("x-call").as_deref(), event["data"]["call_id"].as_str());
    assert_eq!(request.header("webhook-id").as_deref(), event["id"].as_str());
    crate::security::standard_webhooks_verify(SIGNING_SECRET, &request.headers, &request.body).unwrap();

    // A chosen type; a failing receiver is answered as is, once, never retried.
    receiver.respond("/signed", &[500]);
    let (code, out, err) = cli(&gateway, &["routes", "test", "signed", "--type", "transcript.final"]);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((answer["outcome"].as_str(), answer["status"].as_i64()), (Some("failed"), Some(500)), "{answer}");
    assert_eq!(answer["response"], "scripted failure");
    let requests = receiver.wait_for("/signed", 2).await;
    assert_eq!(requests[1].json()["type"], "transcript.final");
    assert!(validator.is_valid(&requests[1].json()));

    // A connection error is the answer.
    let (status, answer) = admin(&gateway, reqwest::Method::POST, "/v1/admin/routes/void/test?type=call.failed").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "failed");
    assert!(answer["status"].is_null() && answer["error"].as_str().unwrap().contains("connection"), "{answer}");

    // Unknown type, unknown route.
    let (status, body) =
        admin(&gateway, reqwest::Method::POST, "/v1/admin/routes/signed/test?type=call.exploded").await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("call.ended") && message.contains("sms.received"), "lists the known types: {message}");
    let (status, _) = admin(&gateway, reqwest::Method::POST, "/v1/admin/routes/nope/test").await;
    assert_eq!(status, 404);

    // Logged as tests, on both routes; nothing entered the outbox and the paused route got
    // nothing else.
    let log = get(&gateway, "/v1/admin/routes/signed/deliveries").await;
    let items = log["deliveries"].as_array().unwrap();
    assert_eq!(field(items, "outcome"), [&Value::from("failed"), &"success".into()]);
    assert!(items.iter().all(|i| i["test"] == true && i["delivery_id"].is_null()), "{log}");
    assert_eq!(items[1]["event_id"], event["id"]);
    assert_eq!(items[1]["subject"], event["subject"]);
    assert_eq!(items[0]["type"], "transcript.final");
    assert_eq!(
        get(&gateway, "/v1/admin/routes/signed/deliveries?test=false").await["deliveries"],
        Value::Array(vec![])
    );
    assert_eq!(
        get(&gateway, "/v1/admin/routes/signed/deliveries?test=true").await["deliveries"].as_array().unwrap().len(),
        2
    );
    let void = get(&gateway, "/v1/admin/routes/void/deliveries").await;
    assert_eq!(void["deliveries"][0]["test"], true);
    assert!(void["deliveries"][0]["error"].as_str().unwrap().contains("connection"));
    let (code, out, err) = cli(&gateway, &["deliveries", "list", "--route", "signed", "--test", "true"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "header + 2 rows:\n{out}");
    assert_eq!(store_rows(dir.path(), "SELECT count(*) FROM outbox"), [["0"]]);
    assert_eq!(store_rows(dir.path(), "SELECT count(*) FROM events"), [["0"]]);
    assert_eq!(gateway.metric("callgate_delivery_backlog{route=\"signed\"}").await, 0.0);
    assert_eq!(receiver.at("/signed").len(), 2, "no retry, no delivery");
}
