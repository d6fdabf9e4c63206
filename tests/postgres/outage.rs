//! The database goes away under load and comes back: ingress answers 503 and accepts nothing,
//! `/readyz` fails, nothing acknowledged is lost, and the same gateway process recovers by
//! itself. Only this test's database is cut (`ALLOW_CONNECTIONS false` and its connections
//! terminated): the shared server keeps serving the tests running beside it.

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::*;

/// Load phases, as the posters see them.
const BEFORE: u8 = 0;
/// The database is being cut: answers may be either.
const CUTTING: u8 = 1;
/// The gateway has reported itself not ready: the database is certainly unreachable.
const DOWN: u8 = 2;
/// The database is being (or has been) given back.
const BACK: u8 = 3;

/// Refuses new connections to the test's database and ends those it has.
fn cut_database(dir: &Path) {
    let database = pg_database(dir);
    psql(&pg_admin_url(), &format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false")).unwrap();
    psql(
        &pg_admin_url(),
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"),
    )
    .unwrap();
}

fn restore_database(dir: &Path) {
    let database = pg_database(dir);
    psql(&pg_admin_url(), &format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true")).unwrap();
}

fn unique_payload(call_id: &str) -> String {
    format!(
        r#"{{"event":"call.started","call_id":"{call_id}","agent_id":"agt_1","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
    )
}

async fn ready(gateway: &Gateway) -> u16 {
    match gateway.http.get(gateway.ops_url("/readyz")).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls `/readyz` until it answers `status` (readiness has no push signal).
async fn wait_ready(gateway: &Gateway, status: u16) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if ready(gateway).await == status {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never answered {status}:\n{}", gateway.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the posters saw.
#[derive(Default)]
struct Seen {
    acknowledged: HashSet<String>,
    acknowledged_after: usize,
    /// Bodies answered 503 while the database was certainly down.
    refused: Vec<String>,
    /// Anything else answered while it was down (must stay empty).
    unexpected: Vec<(u16, Value)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_fails_readiness_and_recovers_without_a_restart() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let config = base_config(dir.path())
        .replace("[storage]\n", "[storage]\nacquire_timeout = \"1s\"\nstatement_timeout = \"2s\"\n")
        + &format!(
            "\n[routes.crm]\nurl = \"{}\"\n[routes.crm.retry]\nschedule = [\"100ms\", \"200ms\", \"500ms\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]\n",
            receiver.url("/crm")
        );
    let config = config + "\n[admin]\ntoken = \"outage-t0ken\"\n";
    let gateway = Arc::new(Gateway::start(dir.path(), &config).await);
    // A second replica on the same database: only its listening connection tells it of a
    // pause made through the first, so it shows that connection came back by itself.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Gateway::start(&other_dir, &config).await;
    let pid = gateway.pid();
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    // A token, not a Notify: a poster between two posts must see the stop too.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut posters = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (gateway, phase, seen, stop) = (gateway.clone(), phase.clone(), seen.clone(), stop.clone());
        posters.spawn(async move {
            for i in 0..100_000 {
                let body = unique_payload(&format!("outage_{worker}_{i}"));
                let sent_in = phase.load(Ordering::SeqCst);
                let (status, json) = tokio::select! {
                    answer = gateway.post("oneinbox", body.clone()) => answer,
                    () = stop.cancelled() => return,
                };
                let answered_in = phase.load(Ordering::SeqCst);
                {
                    let mut seen = seen.lock().unwrap();
                    if status == 200 {
                        seen.acknowledged.insert(json["ids"][0].as_str().unwrap().to_owned());
                        if sent_in == BACK {
                            seen.acknowledged_after += 1;
                        }
                    }
                    if sent_in == DOWN && answered_in == DOWN {
                        if status == 503 {
                            seen.refused.push(body);
                        } else {
                            seen.unexpected.push((status, json));
                        }
                    } else if status != 200 && sent_in == BEFORE && answered_in == BEFORE {
                        panic!("answered {status} before the outage: {json}");
                    }
                }
                if status != 200 {
                    // A vendor retrying a 503 does not hammer: neither do the posters.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
    let poll = |what: &'static str, done: Box<dyn Fn(&Seen) -> bool + Send>| {
        let seen = seen.clone();
        async move {
            let deadline = Instant::now() + DEADLINE;
            // The posters have no push signal to the test: poll what they saw.
            while !done(&seen.lock().unwrap()) {
                assert!(Instant::now() < deadline, "never {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    poll("acknowledged load before the outage", Box::new(|s| s.acknowledged.len() >= 100)).await;

    phase.store(CUTTING, Ordering::SeqCst);
    cut_database(dir.path());
    wait_ready(&gateway, 503).await;
    phase.store(DOWN, Ordering::SeqCst);
    poll("refused payloads while the database was down", Box::new(|s| s.refused.len() >= 20)).await;
    let acknowledged_before = seen.lock().unwrap().acknowledged.len();
    let metrics = gateway.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "callgate_ingress_requests_total{source=\"oneinbox\",vendor=\"oneinbox\",outcome=\"unavailable\"}"
        ) > 0.0,
        "{metrics}"
    );

    phase.store(BACK, Ordering::SeqCst);
    restore_database(dir.path());
    wait_ready(&gateway, 200).await;
    poll("acknowledged load after the outage", Box::new(|s| s.acknowledged_after >= 100)).await;
    stop.cancel();
    while let Some(r) = posters.join_next().await {
        r.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.unexpected, [], "only 503 while the database was down");
    assert_eq!(gateway.pid(), pid, "the same process recovered");
    wait_ready(&other, 200).await;
    let pause = |gateway: &Gateway, action: &str| {
        gateway.http.post(gateway.ops_url(&format!("/v1/admin/routes/crm/{action}"))).bearer_auth("outage-t0ken").send()
    };
    assert_eq!(pause(&gateway, "pause").await.unwrap().status(), 200);
    other.wait_metric("callgate_route_paused{route=\"crm\"}", 1.0).await;
    assert_eq!(pause(&gateway, "resume").await.unwrap().status(), 200);
    other.wait_metric("callgate_route_paused{route=\"crm\"}", 0.0).await;

    // Nothing was accepted while down: each refused body is accepted now, not a duplicate.
    let mut expected = seen.acknowledged.clone();
    for body in &seen.refused {
        let (status, answer) = gateway.post("oneinbox", body.clone()).await;
        assert_eq!((status, &answer["accepted"]), (200, &Value::from(1)), "{answer}");
        expected.insert(answer["ids"][0].as_str().unwrap().to_owned());
    }

    // Deliveries resumed: every acknowledged event reached the route.
    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    let delivered: HashSet<String> =
        receiver.at("/crm").iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    let missing: Vec<&String> = expected.iter().filter(|id| !delivered.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never delivered: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    println!(
        "outage: {acknowledged_before} acknowledged before and during the cut, {} refused with 503 while down (accepted when posted again), {} acknowledged in all, all delivered",
        seen.refused.len(),
        expected.len()
    );
}
