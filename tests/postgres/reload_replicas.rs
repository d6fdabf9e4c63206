//! Hot reload across replicas on one database: each replica reloads its own file and routes
//! the events it accepts by it, and a discard on one replica never takes a delivery that
//! another replica holds in flight.

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "replica-reload-t0ken";

/// A replica's file: the shared database of `dir`, and the route `r` when `with_route`.
fn config(dir: &Path, receiver: &Receiver, with_route: bool) -> String {
    let mut config = base_config(dir) + &format!("\n[admin]\ntoken = \"{TOKEN}\"\n");
    if with_route {
        config += &format!("\n[routes.r]\nurl = \"{}\"\ntimeout = \"60s\"\n", receiver.url("/r"));
    }
    config
}

fn started(call_id: &str, n: u32) -> String {
    format!(
        r#"{{"event":"call.started","call_id":"{call_id}","agent_id":"agt_{n}","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
    )
}

async fn admin(gateway: &Gateway, method: Method, path: &str) -> (u16, Value) {
    let response = gateway.http.request(method, gateway.ops_url(path)).bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(gateway: &Gateway, body: String) -> String {
    let (status, answer) = gateway.post("oneinbox", body).await;
    assert_eq!(status, 200, "{answer}");
    answer["ids"][0].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_replica_reloads_its_own_file_and_a_discard_never_takes_another_replicas_lease() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.hold("/r");
    let dir = temp_dir();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = Gateway::start(&a_dir, &config(dir.path(), &receiver, true)).await;
    let b = Gateway::start(&b_dir, &config(dir.path(), &receiver, true)).await;

    // Replica A drops the route; B still has it.
    std::fs::write(a_dir.join("gateway.toml"), config(dir.path(), &receiver, false)).unwrap();
    let (status, changes) = admin(&a, Method::POST, "/v1/admin/reload").await;
    assert_eq!((status, &changes["routes"]["removed"]), (200, &serde_json::json!(["r"])), "{changes}");
    a.wait_log("its worker stopped after its attempts in flight").await;
    assert_eq!(b.metric("callgate_config_reloads_total{outcome=\"applied\"}").await, 0.0, "B did not reload");

    // Only B routes to r and delivers it: its claim holds x1 in flight, x2 waits behind it.
    let x1 = post(&b, started("call-x", 1)).await;
    receiver.wait_pending("/r", "held x1", |p| p.len() == 1).await;
    post(&b, started("call-x", 2)).await;
    post(&a, started("call-a", 1)).await; // A's file has no route: nothing queued for r
    b.wait_metric("callgate_delivery_backlog{route=\"r\"}", 2.0).await;

    // A discards the backlog it no longer delivers: B's leased x1 is left alone.
    let (status, discarded) = admin(&a, Method::DELETE, "/v1/admin/routes/r/backlog").await;
    assert_eq!(status, 200, "{discarded}");
    assert_eq!((&discarded["discarded"], &discarded["backlog"]), (&1.into(), &1.into()), "{discarded}");
    let (status, refused) = admin(&b, Method::DELETE, "/v1/admin/routes/r/backlog").await;
    assert_eq!(status, 409, "B still delivers r: {refused}");

    receiver.release();
    b.wait_metric("callgate_deliveries_total{route=\"r\",outcome=\"success\"}", 1.0).await;
    a.wait_metric("callgate_delivery_backlog{route=\"r\"}", 0.0).await;
    b.wait_metric("callgate_delivery_backlog{route=\"r\"}", 0.0).await;
    let sent: Vec<String> = receiver.at("/r").iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(sent, [x1], "x1 once; the discarded x2 never");
    assert!(store_rows(dir.path(), "SELECT id FROM outbox").is_empty());
}
