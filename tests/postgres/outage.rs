//! The database goes away under load and comes back: ingress answers 503 and accepts nothing,
//! `/readyz` fails, nothing acknowledged is lost, and the same gateway process recovers by
//! itself. Two ways: only this test's database cut on the shared server (`ALLOW_CONNECTIONS
//! false` and its connections terminated), and a whole server of the test's own crashed
//! (`pg_ctl stop -m immediate`) and restarted (`pg_ctl restart -m fast`).

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

use crate::{
    cluster::{Cluster, Stop},
    support::*,
};

/// Load phases, as the posters see them.
const BEFORE: u8 = 0;
/// The database is being cut: answers may be either.
const CUTTING: u8 = 1;
/// The gateway has reported itself not ready: the database is certainly unreachable.
const DOWN: u8 = 2;
/// The database is being (or has been) given back.
const BACK: u8 = 3;
/// The server is being restarted: answers may be either.
const RESTARTING: u8 = 4;
/// The restart is over.
const RESTARTED: u8 = 5;
const PHASES: usize = 6;

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

/// A gateway config with route `crm` to `receiver` (fast retries) and an admin token; the
/// store gives up on a connection or statement quickly, so a lost database shows at once.
fn outage_config(dir: &Path, url: &str, receiver: &Receiver) -> String {
    let config = base_config(dir)
        .replace(&format!("url = \"{}\"", storage_url(dir)), &format!("url = \"{url}\""))
        .replace("[storage]\n", "[storage]\nacquire_timeout = \"1s\"\nstatement_timeout = \"2s\"\n");
    config
        + &format!(
            "\n[routes.crm]\nurl = \"{}\"\n[routes.crm.retry]\nschedule = [\"100ms\", \"200ms\", \"500ms\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]\n",
            receiver.url("/crm")
        )
        + "\n[admin]\ntoken = \"outage-t0ken\"\n"
}

/// The gateway under load, and a second replica on the same database: only its listening
/// connection tells it of a pause made through the first, so it shows that connection came
/// back by itself.
async fn two_replicas(dir: &Path, url: &str, receiver: &Receiver) -> (Arc<Gateway>, Gateway) {
    let config = outage_config(dir, url, receiver);
    let gateway = Arc::new(Gateway::start(dir, &config).await);
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    (gateway, Gateway::start(&other_dir, &config).await)
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

/// `/readyz` while the store is down: 503 with the JSON error body.
async fn assert_not_ready(gateway: &Gateway) {
    let response = gateway.http.get(gateway.ops_url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
}

/// What the posters saw.
#[derive(Default)]
struct Seen {
    /// Event ids of every payload answered 200.
    acknowledged: HashSet<String>,
    /// Payloads answered 200, by the phase they were sent in.
    acknowledged_in: [usize; PHASES],
    /// Payloads answered the store's 503, by the phase they were sent in.
    refused_in: [usize; PHASES],
    /// Bodies answered 503 while the database was certainly down.
    refused: Vec<String>,
    /// Call ids of the payloads answered 503 at any time: a crash between the commit and its
    /// answer may have kept one (the vendor's retry would be told it is a duplicate).
    unacknowledged_calls: HashSet<String>,
    /// Any answer but 200 or the store's 503 JSON error, any 200 while the database was down,
    /// and anything but 200 before the outage: (phase sent in, phase answered in, status, body).
    unexpected: Vec<(u8, u8, u16, Value)>,
}

/// Posters sending unique payloads to one gateway until stopped, tallying the answers by phase.
struct Load {
    phase: Arc<AtomicU8>,
    seen: Arc<Mutex<Seen>>,
    /// A token, not a Notify: a poster busy posting must see the stop when it is done.
    stop: tokio_util::sync::CancellationToken,
    posters: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(gateway: &Arc<Gateway>, prefix: &'static str) -> Load {
        let phase = Arc::new(AtomicU8::new(BEFORE));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut posters = tokio::task::JoinSet::new();
        for worker in 0..4 {
            let (gateway, phase, seen, stop) = (gateway.clone(), phase.clone(), seen.clone(), stop.clone());
            posters.spawn(async move {
                for i in 0..100_000 {
                    let call_id = format!("{prefix}_{worker}_{i}");
                    let body = unique_payload(&call_id);
                    // Stopped between two posts, never during one: every payload sent is
                    // answered, so what reached the receiver can be accounted for exactly.
                    if stop.is_cancelled() {
                        return;
                    }
                    let sent_in = phase.load(Ordering::SeqCst);
                    let (status, json) = gateway.post("oneinbox", body.clone()).await;
                    let answered_in = phase.load(Ordering::SeqCst);
                    let refused = status == 503 && json["error"]["code"] == "store_unavailable";
                    {
                        let mut seen = seen.lock().unwrap();
                        if status == 200 {
                            seen.acknowledged.insert(json["ids"][0].as_str().unwrap().to_owned());
                            seen.acknowledged_in[usize::from(sent_in)] += 1;
                        } else if refused {
                            seen.refused_in[usize::from(sent_in)] += 1;
                            seen.unacknowledged_calls.insert(call_id);
                        }
                        let down = sent_in == DOWN && answered_in == DOWN;
                        let before = sent_in == BEFORE && answered_in == BEFORE;
                        // 200 except while down, the store's 503 except before the outage.
                        let allowed = if status == 200 { !down } else { refused && !before };
                        if down && refused {
                            seen.refused.push(body);
                        } else if !allowed {
                            seen.unexpected.push((sent_in, answered_in, status, json));
                        }
                    }
                    if status != 200 {
                        // A vendor retrying a 503 does not hammer: neither do the posters.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
        Load { phase, seen, stop, posters }
    }

    fn enter(&self, phase: u8) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// Waits until what the posters saw satisfies `done` (they have no push signal to the
    /// test: this polls).
    async fn wait(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                assert_eq!(seen.unexpected, [], "unexpected answers while waiting until {what}");
                if done(&seen) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "never {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(mut self) -> Seen {
        self.stop.cancel();
        while let Some(r) = self.posters.join_next().await {
            r.unwrap();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        assert_eq!(seen.unexpected, [], "only 200 or the store's 503, and only 503 while the database was down");
        seen
    }
}

/// Nothing was accepted while down: each refused body is accepted now, not a duplicate.
/// Returns the ids they got.
async fn post_refused_again(gateway: &Gateway, refused: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for body in refused {
        let (status, answer) = gateway.post("oneinbox", body.clone()).await;
        assert_eq!((status, &answer["accepted"]), (200, &Value::from(1)), "{answer}");
        ids.push(answer["ids"][0].as_str().unwrap().to_owned());
    }
    ids
}

/// Deliveries resumed: every acknowledged event reached the route, and anything else it got
/// was a payload answered 503 (committed just before a connection was lost).
async fn assert_all_delivered(gateway: &Gateway, receiver: &Receiver, expected: &HashSet<String>, seen: &Seen) {
    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    let received = receiver.at("/crm");
    let delivered: HashSet<String> = received.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    let missing: Vec<&String> = expected.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never delivered: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let strays: Vec<Value> = received
        .iter()
        .map(Received::json)
        .filter(|event| !expected.contains(event["id"].as_str().unwrap()))
        .filter(|event| !seen.unacknowledged_calls.contains(event["data"]["call_id"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(strays, Vec::<Value>::new(), "delivered events no poster sent");
}

/// Waits until `n` sessions on the database of `url` last ran `LISTEN`: every gateway's listening
/// connection is back (a pause made elsewhere now reaches it).
async fn wait_listening(url: &str, n: usize, gateways: &[&Gateway]) {
    let deadline = Instant::now() + DEADLINE;
    let sql = "SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = 'callgate' AND query LIKE 'LISTEN%'";
    loop {
        let listening = psql(url, sql).ok().and_then(|rows| rows[0][0].parse::<usize>().ok());
        if listening == Some(n) {
            return;
        }
        if Instant::now() >= deadline {
            let sessions = psql(
                url,
                "SELECT application_name, state, left(query, 80) FROM pg_stat_activity WHERE datname = current_database()",
            );
            let logs: Vec<String> = gateways.iter().map(|g| g.logs()).collect();
            panic!(
                "never {n} listening connections (last: {listening:?}); sessions: {sessions:?}\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pause through one replica reaches the other through its listening connection, and the
/// resume the other way round.
async fn assert_pause_travels(from: &Gateway, to: &Gateway) {
    let admin = |gateway: &Gateway, action: &str| {
        gateway.http.post(gateway.ops_url(&format!("/v1/admin/routes/crm/{action}"))).bearer_auth("outage-t0ken").send()
    };
    let paused = "callgate_route_paused{route=\"crm\"}";
    assert_eq!(admin(from, "pause").await.unwrap().status(), 200);
    from.wait_metric(paused, 1.0).await;
    to.wait_metric(paused, 1.0).await;
    assert_eq!(admin(to, "resume").await.unwrap().status(), 200);
    to.wait_metric(paused, 0.0).await;
    from.wait_metric(paused, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_fails_readiness_and_recovers_without_a_restart() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let (gateway, other) = two_replicas(dir.path(), &storage_url(dir.path()), &receiver).await;
    let pid = gateway.pid();
    let load = Load::start(&gateway, "outage");
    load.wait("acknowledged load before the outage", |s| s.acknowledged.len() >= 100).await;

    load.enter(CUTTING);
    cut_database(dir.path());
    wait_ready(&gateway, 503).await;
    load.enter(DOWN);
    load.wait("refused payloads while the database was down", |s| s.refused.len() >= 20).await;
    let acknowledged_before = load.seen.lock().unwrap().acknowledged.len();
    let metrics = gateway.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "callgate_ingress_requests_total{source=\"oneinbox\",vendor=\"oneinbox\",outcome=\"unavailable\"}"
        ) > 0.0,
        "{metrics}"
    );

    load.enter(BACK);
    restore_database(dir.path());
    wait_ready(&gateway, 200).await;
    load.wait("acknowledged load after the outage", |s| s.acknowledged_in[usize::from(BACK)] >= 100).await;
    let seen = load.finish().await;
    assert_eq!(gateway.pid(), pid, "the same process recovered");
    wait_ready(&other, 200).await;
    wait_listening(&storage_url(dir.path()), 2, &[&gateway, &other]).await;
    assert_pause_travels(&gateway, &other).await;

    let mut expected = seen.acknowledged.clone();
    expected.extend(post_refused_again(&gateway, &seen.refused).await);
    assert_all_delivered(&gateway, &receiver, &expected, &seen).await;
    println!(
        "outage: {acknowledged_before} acknowledged before and during the cut, {} refused with 503 while down (accepted when posted again), {} acknowledged in all, all delivered",
        seen.refused.len(),
        expected.len()
    );
}

/// The whole server, not one database: a cluster of the test's own is crashed and restarted
/// under load while two replicas use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_and_a_restarted_server_answer_503_and_the_gateway_recovers_by_itself() {
    let Some(cluster) = Cluster::start_or_skip() else { return };
    let receiver = Receiver::start().await;
    let dir = tempfile::Builder::new().prefix("callgate-it-").tempdir().unwrap();
    let (gateway, other) = two_replicas(dir.path(), &cluster.url(), &receiver).await;
    let pid = gateway.pid();
    let load = Load::start(&gateway, "crash");
    load.wait("acknowledged load before the crash", |s| s.acknowledged.len() >= 100).await;

    // (a) A crash: every server process killed at once, then crash recovery at start.
    load.enter(CUTTING);
    cluster.stop(Stop::Immediate);
    wait_ready(&gateway, 503).await;
    load.enter(DOWN);
    load.wait("refused payloads while the server was down", |s| s.refused.len() >= 20).await;
    assert_not_ready(&gateway).await;
    wait_ready(&other, 503).await;
    load.enter(BACK);
    cluster.start_server().unwrap();
    wait_ready(&gateway, 200).await;
    load.wait("acknowledged load after the crash", |s| s.acknowledged_in[usize::from(BACK)] >= 100).await;

    // (b) A restart: sessions terminated, a clean shutdown, the server back at once. Whether
    // the gateway sees it down in between is a matter of timing: not asserted.
    let started = |cluster: &Cluster| psql(&cluster.url(), "SELECT pg_postmaster_start_time()").unwrap();
    let first_start = started(&cluster);
    load.enter(RESTARTING);
    cluster.restart(Stop::Fast);
    load.enter(RESTARTED);
    assert_ne!(started(&cluster), first_start, "the server restarted");
    wait_ready(&gateway, 200).await;
    load.wait("acknowledged load after the restart", |s| s.acknowledged_in[usize::from(RESTARTED)] >= 100).await;
    let seen = load.finish().await;
    assert_eq!(gateway.pid(), pid, "the same process recovered");

    // Both listening connections came back: a pause through either reaches the other.
    wait_ready(&other, 200).await;
    wait_listening(&cluster.url(), 2, &[&gateway, &other]).await;
    assert_pause_travels(&other, &gateway).await;

    let mut expected = seen.acknowledged.clone();
    expected.extend(post_refused_again(&gateway, &seen.refused).await);
    assert_all_delivered(&gateway, &receiver, &expected, &seen).await;
    println!(
        "server crash and restart: {} refused with 503 while down (accepted when posted again), {} refused during the restart, {} acknowledged in all ({} after the crash, {} during and after the restart), all delivered",
        seen.refused.len(),
        seen.refused_in[usize::from(RESTARTING)],
        expected.len(),
        seen.acknowledged_in[usize::from(BACK)],
        seen.acknowledged_in[usize::from(RESTARTING)] + seen.acknowledged_in[usize::from(RESTARTED)],
    );
}
