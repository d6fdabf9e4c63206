//! Hot reload on the real binary: SIGHUP and `POST /v1/admin/reload` apply a rewritten
//! configuration file while events flow — routes added, changed with an attempt in flight,
//! removed with a backlog (kept, then delivered or discarded), sources and their
//! authentication — and a broken file is rejected with every error while the old one serves.

use std::{collections::BTreeSet, path::Path, process::Command};

use reqwest::Method;
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "reload-admin-t0ken";
const APPLIED: &str = "callgate_config_reloads_total{outcome=\"applied\"}";
const REJECTED: &str = "callgate_config_reloads_total{outcome=\"rejected\"}";

fn route(name: &str, url: &str, extra: &str) -> String {
    format!("\n[routes.{name}]\nurl = \"{url}\"\n{extra}\n")
}

/// The shared base with an admin token.
fn config(dir: &Path, token: &str) -> String {
    base_config(dir) + &format!("\n[admin]\ntoken = \"{token}\"\n")
}

/// A OneInbox `call.started` of `call_id`; `n` makes each body (so each event) unique.
fn started(call_id: &str, n: u32) -> String {
    format!(
        r#"{{"event":"call.started","call_id":"{call_id}","agent_id":"agt_{n}","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
    )
}

fn rewrite(dir: &Path, config: &str) {
    std::fs::write(dir.join("gateway.toml"), config).unwrap();
}

fn sighup(gateway: &Gateway) {
    let status = Command::new("kill").args(["-HUP", &gateway.pid().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn admin(gateway: &Gateway, method: Method, path: &str, token: &str) -> (u16, Value) {
    let response = gateway.http.request(method, gateway.ops_url(path)).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `callgate <args>` against the gateway's admin API: (exit code, stdout, stderr).
fn cli(gateway: &Gateway, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .args(["--url", &gateway.ops_url(""), "--token", TOKEN])
        .env_remove("CALLGATE_CONFIG")
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

async fn reload(gateway: &Gateway) -> (u16, Value) {
    admin(gateway, Method::POST, "/v1/admin/reload", TOKEN).await
}

/// Posts one body to OneInbox and returns its event id.
async fn post(gateway: &Gateway, body: String) -> String {
    let (status, answer) = gateway.post("oneinbox", body).await;
    assert_eq!(status, 200, "{answer}");
    answer["ids"][0].as_str().unwrap().to_owned()
}

fn ids(requests: &[Received]) -> Vec<String> {
    requests.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect()
}

async fn route_entry(gateway: &Gateway, name: &str) -> Value {
    let (status, routes) = admin(gateway, Method::GET, "/v1/admin/routes", TOKEN).await;
    assert_eq!(status, 200, "{routes}");
    routes["routes"].as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap_or(Value::Null)
}

/// A route added to the file takes events from the SIGHUP on, beside the ones already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_to_the_file_gets_events_after_sighup() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let before = config(dir.path(), TOKEN) + &route("a", &receiver.url("/a"), "");
    let gateway = Gateway::start(dir.path(), &before).await;
    let first = post(&gateway, started("call-1", 1)).await;
    assert_eq!(ids(&receiver.wait_for("/a", 1).await), [first.as_str()]);

    rewrite(dir.path(), &(before + &route("b", &receiver.url("/b"), "")));
    sighup(&gateway);
    gateway.wait_metric(APPLIED, 1.0).await;
    gateway.wait_log("Reload: route b added").await;

    let second = post(&gateway, started("call-2", 2)).await;
    assert_eq!(ids(&receiver.wait_for("/b", 1).await), [second.as_str()], "only events accepted after the reload");
    receiver.wait_for("/a", 2).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"b\"}", 0.0).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"a\"}", 0.0).await;
    assert_eq!(ids(&receiver.at("/a")), [first, second.clone()]);
    assert_eq!(ids(&receiver.at("/b")), [second]);
    assert_eq!(gateway.metric(REJECTED).await, 0.0);
}

/// A route's URL changes while an attempt to the old one is held open: that attempt finishes
/// on the old URL and is recorded, everything after it goes to the new one, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_in_flight_finishes_on_the_old_url_and_the_next_goes_to_the_new_one() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.hold("/old");
    let dir = temp_dir();
    let base = config(dir.path(), TOKEN);
    let gateway =
        Gateway::start(dir.path(), &(base.clone() + &route("r", &receiver.url("/old"), "timeout = \"60s\""))).await;
    let x1 = post(&gateway, started("call-x", 1)).await;
    receiver.wait_pending("/old", "held the first attempt", |p| p.len() == 1).await;

    rewrite(dir.path(), &(base + &route("r", &receiver.url("/new"), "timeout = \"60s\"")));
    let (status, changes) = reload(&gateway).await;
    assert_eq!(status, 200, "{changes}");
    assert_eq!(changes["routes"]["changed"], serde_json::json!(["r"]), "{changes}");
    gateway.wait_metric(APPLIED, 1.0).await;

    // The call's next event waits behind the held one; another call's goes to the new URL at once.
    let x2 = post(&gateway, started("call-x", 2)).await;
    let y1 = post(&gateway, started("call-y", 1)).await;
    assert_eq!(ids(&receiver.wait_for("/new", 1).await), [y1.as_str()]);
    assert_eq!(receiver.pending("/old").len(), 1, "the old attempt is still in flight, untouched");

    receiver.release();
    receiver.wait_for("/new", 2).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"r\"}", 0.0).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"r\",outcome=\"success\"}", 3.0).await;
    assert_eq!(ids(&receiver.at("/old")), [x1], "the held attempt completed on the old URL, once");
    assert_eq!(ids(&receiver.at("/new")), [y1, x2], "the call's next event went to the new URL after it");
    assert_eq!(gateway.metric("callgate_deliveries_total{route=\"r\",outcome=\"retry\"}").await, 0.0);
}

/// A removed route's in-flight attempt finishes; its backlog stays, visible and undelivered,
/// until the route comes back, and then it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_routes_backlog_is_kept_visible_and_delivered_when_it_returns() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.hold("/gone");
    let dir = temp_dir();
    let base = config(dir.path(), TOKEN) + &route("keep", &receiver.url("/keep"), "");
    let with_gone = base.clone() + &route("gone", &receiver.url("/gone"), "timeout = \"60s\"");
    let gateway = Gateway::start(dir.path(), &with_gone).await;
    let x1 = post(&gateway, started("call-x", 1)).await;
    receiver.wait_pending("/gone", "held the first attempt", |p| p.len() == 1).await;
    let x2 = post(&gateway, started("call-x", 2)).await; // queued behind x1

    rewrite(dir.path(), &base);
    let (status, changes) = reload(&gateway).await;
    assert_eq!(status, 200, "{changes}");
    assert_eq!(changes["routes"]["removed"], serde_json::json!(["gone"]), "{changes}");
    receiver.release();
    // The attempt in flight is recorded; then the worker stops, x2 still waiting.
    gateway.wait_metric("callgate_deliveries_total{route=\"gone\",outcome=\"success\"}", 1.0).await;
    gateway.wait_log("its worker stopped after its attempts in flight").await;
    // Barrier: an event accepted now is delivered to the remaining route, and not queued for
    // the removed one.
    let y1 = post(&gateway, started("call-y", 1)).await;
    receiver.wait_for("/keep", 3).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"keep\"}", 0.0).await;
    assert_eq!(ids(&receiver.at("/gone")), [x1.as_str()], "nothing more went to the removed route");
    let entry = route_entry(&gateway, "gone").await;
    assert_eq!(
        (&entry["configured"], &entry["orphaned"], &entry["backlog"]),
        (&Value::Bool(false), &Value::Bool(true), &1.into()),
        "{entry}"
    );
    gateway.wait_metric("callgate_delivery_backlog{route=\"gone\"}", 1.0).await;
    assert_eq!(store_rows(dir.path(), "SELECT route FROM outbox"), [["gone"]]);

    rewrite(dir.path(), &with_gone);
    sighup(&gateway);
    gateway.wait_metric(APPLIED, 2.0).await;
    receiver.wait_for("/gone", 2).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"gone\"}", 0.0).await;
    assert_eq!(ids(&receiver.at("/gone")), [x1, x2], "the kept backlog, once, in order");
    assert!(!ids(&receiver.at("/gone")).contains(&y1));
    let entry = route_entry(&gateway, "gone").await;
    assert_eq!((&entry["configured"], &entry["orphaned"]), (&Value::Bool(true), &Value::Bool(false)), "{entry}");
}

/// An operator discards a removed route's backlog: what waits is gone for good (the attempt in
/// flight still finishes), the gauges say so, and a route that is delivering cannot be
/// discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_routes_backlog_can_be_discarded_through_the_admin_api() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.hold("/d");
    let dir = temp_dir();
    let base = config(dir.path(), TOKEN);
    let with_d = base.clone() + &route("d", &receiver.url("/d"), "timeout = \"60s\"");
    let gateway = Gateway::start(dir.path(), &with_d).await;
    let z1 = post(&gateway, started("call-z", 1)).await;
    receiver.wait_pending("/d", "held the first attempt", |p| p.len() == 1).await;
    post(&gateway, started("call-z", 2)).await; // queued behind z1
    gateway.wait_metric("callgate_delivery_backlog{route=\"d\"}", 2.0).await;

    let (status, refused) = admin(&gateway, Method::DELETE, "/v1/admin/routes/d/backlog", TOKEN).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("conflict")), "{refused}");

    rewrite(dir.path(), &base);
    let (code, out, err) = cli(&gateway, &["reload"]);
    assert_eq!(code, 0, "{err}");
    let changes: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(changes["routes"]["removed"], serde_json::json!(["d"]), "{out}");
    let (code, out, err) = cli(&gateway, &["routes", "discard-backlog", "d"]);
    assert_eq!(code, 0, "{err}");
    let discarded: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&discarded["discarded"], &discarded["backlog"]), (&1.into(), &1.into()), "z2 gone, z1 in flight");

    receiver.release();
    gateway.wait_metric("callgate_deliveries_total{route=\"d\",outcome=\"success\"}", 1.0).await;
    // Neither configured nor in the store's counts any more: the gauge still drops to zero.
    gateway.wait_metric("callgate_delivery_backlog{route=\"d\"}", 0.0).await;
    assert!(store_rows(dir.path(), "SELECT id FROM outbox").is_empty());

    // The route comes back: only what is accepted from now on reaches it.
    rewrite(dir.path(), &with_d);
    assert_eq!(reload(&gateway).await.0, 200);
    let w1 = post(&gateway, started("call-w", 1)).await;
    receiver.wait_for("/d", 2).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"d\"}", 0.0).await;
    assert_eq!(ids(&receiver.at("/d")), [z1, w1], "the discarded delivery never went out");
}

/// A broken file is rejected with every error, by the API and by SIGHUP, and the running
/// configuration keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_rejected_with_every_error_and_the_old_configuration_serves() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let good = config(dir.path(), TOKEN) + &route("r", &receiver.url("/r"), "");
    let gateway = Gateway::start(dir.path(), &good).await;

    let broken = good.clone()
        + "\n[sources.bad]\nvendor = \"nobody\"\n"
        + &route("worse", "ftp://127.0.0.1/x", "colour = \"blue\"")
        + &route("r2", &receiver.url("/r2"), "timeout = \"0s\"");
    rewrite(dir.path(), &broken);
    let (status, answer) = reload(&gateway).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("invalid_config")), "{answer}");
    let keys: BTreeSet<&str> =
        answer["error"]["details"].as_array().unwrap().iter().map(|d| d["key"].as_str().unwrap()).collect();
    for key in ["sources.bad.vendor", "routes.worse.colour", "routes.r2.timeout"] {
        assert!(keys.contains(key), "{key} missing from {answer}");
    }
    gateway.wait_metric(REJECTED, 1.0).await;
    let (code, _, err) = cli(&gateway, &["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("422") && err.contains("- routes.r2.timeout:") && err.contains("- sources.bad.vendor:"),
        "{err}"
    );
    sighup(&gateway);
    gateway.wait_metric(REJECTED, 3.0).await;
    let line = gateway.wait_log("Configuration reload rejected").await;
    assert!(line.contains("routes.r2.timeout") && line.contains("sources.bad.vendor"), "{line}");

    // Still the old configuration: r delivers, r2 was never started.
    let id = post(&gateway, started("call-1", 1)).await;
    assert_eq!(ids(&receiver.wait_for("/r", 1).await), [id]);
    assert_eq!(gateway.metric(APPLIED).await, 0.0);
    let entry = route_entry(&gateway, "r2").await;
    assert_eq!(entry, Value::Null, "r2 is unknown");
}

/// Sources and their authentication, and the admin token, change with a reload; a key that
/// needs a restart is named and keeps its running value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_authentication_and_the_admin_token_change_with_a_reload() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let secured = |token: &str| {
        format!("\n[sources.secured]\nvendor = \"oneinbox\"\nauth = {{ type = \"bearer\", token = \"{token}\" }}\n")
    };
    let rest = route("r", &receiver.url("/r"), "");
    let gateway = Gateway::start(dir.path(), &(config(dir.path(), TOKEN) + &secured("f1rst-t0ken") + &rest)).await;
    let ingest = |token: &'static str, source: &'static str, n: u32| {
        let request = gateway
            .http
            .post(gateway.url(&format!("/v1/ingest/{source}")))
            .bearer_auth(token)
            .body(started(&format!("call-{n}"), n));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ingest("f1rst-t0ken", "secured", 1).await, 200);
    assert_eq!(ingest("s3cond-t0ken", "secured", 2).await, 401);
    assert_eq!(ingest("x", "late", 3).await, 404);

    let new_token = "rotated-admin-t0ken";
    let after =
        config(dir.path(), new_token) + &secured("s3cond-t0ken") + "\n[sources.late]\nvendor = \"oneinbox\"\n" + &rest;
    // A restart-only key changed too: named, and not applied.
    let after = after.replace("shutdown_grace = \"5s\"", "shutdown_grace = \"5s\"\nmax_body_bytes = 1000");
    rewrite(dir.path(), &after);
    let (status, changes) = reload(&gateway).await;
    assert_eq!(status, 200, "{changes}");
    assert_eq!(changes["sources"]["added"], serde_json::json!(["late"]), "{changes}");
    assert_eq!(changes["sources"]["changed"], serde_json::json!(["secured"]), "{changes}");
    assert_eq!(changes["admin_token_changed"], true);
    assert_eq!(changes["restart_required"], serde_json::json!(["server.max_body_bytes"]), "{changes}");
    assert!(!changes.to_string().contains("s3cond") && !changes.to_string().contains(new_token), "no secret echoed");

    assert_eq!(ingest("f1rst-t0ken", "secured", 4).await, 401, "the old token no longer passes");
    assert_eq!(ingest("s3cond-t0ken", "secured", 5).await, 200);
    assert_eq!(ingest("x", "late", 6).await, 200, "a new source accepts at once");
    // The running body limit stays (1 MiB), so a body over the file's 1000 bytes passes.
    let padded = started("call-7", 7).replacen('{', &format!("{{\"pad\":\"{}\",", "p".repeat(1500)), 1);
    let (status, answer) = gateway.post("late", padded).await;
    assert_eq!(status, 200, "{answer}");
    receiver.wait_for("/r", 4).await;

    assert_eq!(admin(&gateway, Method::GET, "/v1/admin/routes", TOKEN).await.0, 401, "the old admin token is off");
    assert_eq!(admin(&gateway, Method::GET, "/v1/admin/routes", new_token).await.0, 200);
    let logs = gateway.logs();
    assert!(!logs.contains("s3cond") && !logs.contains(new_token), "secrets never logged");
}
