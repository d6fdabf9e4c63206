//! Several replicas on one PostgreSQL database, over HTTP with real gateway processes: load
//! spread across three replicas while one is SIGKILLed again and again (once while it holds
//! leases), duplicates across replicas, pause and resume, dead letters, quarantine, gauges.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "replica-t0ken";
const REPLICAS: usize = 3;
/// The replica that is killed and restarted.
const VICTIM: usize = 2;
/// Calls posted, and events per call (each event of a call to the next replica).
const CALLS: usize = 100;
const STEPS: usize = 4;
/// The route's attempt time limit: a claim's lease is this plus the gateway's 5 s margin.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(6);

/// The config of replica `n`: every replica shares the database of `dir`; each marks its
/// deliveries with an `X-Replica` header so the receiver knows who sent what. `calls_vendor`
/// is the vendor of the `calls` source (misconfigured as vox, then fixed to salpre).
fn replica_config(dir: &Path, n: usize, calls_vendor: &str) -> String {
    let timeout = format!("{}ms", ROUTE_TIMEOUT.as_millis());
    base_config(dir)
        + &format!(
            r#"
[admin]
token = "{TOKEN}"

[sources.calls]
vendor = "{calls_vendor}"

[routes.crm]
url = "{{crm}}"
timeout = "{timeout}"
include_test = true
[routes.crm.retry]
schedule = ["50ms", "100ms", "200ms", "400ms", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms"]
[routes.crm.headers]
X-Replica = "r{n}"

[routes.side]
url = "{{side}}"
include_test = true
events = ["call.connected", "call.recording.ready", "call.failed"]
[routes.side.headers]
X-Replica = "r{n}"

[routes.dlq]
url = "{{dlq}}"
events = ["call.failed"]
[routes.dlq.retry]
schedule = ["10ms"]
"#
        )
}

fn replica_dir(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("r{n}"));
    std::fs::create_dir_all(&path).unwrap();
    path
}

async fn start_replica(dir: &Path, n: usize, receiver: &Receiver, calls_vendor: &str) -> Gateway {
    let config = replica_config(dir, n, calls_vendor)
        .replace("{crm}", &receiver.url("/crm"))
        .replace("{side}", &receiver.url("/side"))
        .replace("{dlq}", &receiver.url("/dlq"));
    Gateway::start(&replica_dir(dir, n), &config).await
}

/// Event `step` of call `call`, as OneInbox posts it: `call.started` first, then a recording
/// and analyses. Every body is unique.
fn call_event(call: &str, step: usize) -> String {
    match step {
        0 => format!(
            r#"{{"event":"call.started","call_id":"{call}","agent_id":"agt_1","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
        ),
        1 => format!(
            r#"{{"event":"call.recording.available","call_id":"{call}","recording_url":"https://rec.example/{call}.mp3"}}"#
        ),
        _ => format!(r#"{{"event":"call.analyzed","call_id":"{call}","agent_id":"agt_1","ai_summary":"step {step}"}}"#),
    }
}

async fn admin(http: &reqwest::Client, gateway: &Gateway, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = http.request(method, gateway.ops_url(path)).bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs `body` to `/v1/ingest/oneinbox` at `addr`; `None` when the connection failed.
async fn post_to(http: &reqwest::Client, addr: SocketAddr, body: &str) -> Option<(u16, Value)> {
    let response = http.post(format!("http://{addr}/v1/ingest/oneinbox")).body(body.to_owned()).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// Posts `body` to replica `first`, and on a failed connection or a 503 to the next one, until
/// one answers 200 (bounded). Returns the canonical ids.
async fn post_until_accepted(
    http: &reqwest::Client,
    addrs: &Mutex<Vec<SocketAddr>>,
    first: usize,
    body: &str,
) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    for attempt in 0.. {
        let addr = addrs.lock().unwrap()[(first + attempt) % REPLICAS];
        match post_to(http, addr, body).await {
            Some((200, json)) => {
                return json["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
            }
            Some((status, json)) => assert_eq!(status, 503, "only unavailability is retried: {json}"),
            None => {}
        }
        assert!(Instant::now() < deadline, "no replica accepted {body}");
        // A replica is down or restarting: the next one is tried after a short pause so a
        // failing loop does not spin (the vendor's retry, in effect).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

/// The CloudEvents id of a received request.
fn id_of(r: &Received) -> String {
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn wait_metric_everywhere(replicas: &[Arc<Gateway>], series: &str, value: f64) {
    for gateway in replicas {
        gateway.wait_metric(series, value).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_database_through_repeated_sigkill() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.fail_first_attempt("/crm", 503);
    let dir = temp_dir();
    let started = Instant::now();

    // Three replicas at once on a fresh database: their migrations race.
    let (a, b, c) = tokio::join!(
        start_replica(dir.path(), 0, &receiver, "vox"),
        start_replica(dir.path(), 1, &receiver, "vox"),
        start_replica(dir.path(), 2, &receiver, "vox"),
    );
    let replicas: Arc<Mutex<Vec<Arc<Gateway>>>> = Arc::new(Mutex::new(vec![Arc::new(a), Arc::new(b), Arc::new(c)]));
    let addrs: Arc<Mutex<Vec<SocketAddr>>> =
        Arc::new(Mutex::new(replicas.lock().unwrap().iter().map(|g| g.addr).collect()));
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let migrations = store_rows(dir.path(), "SELECT count(*) FROM _sqlx_migrations");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(migrations, [[files.to_string()]], "each migration ran once");

    // Load: posters take calls in turn; each posts a call's events one after the other, event
    // k to replica (call + k) mod 3, so every call's events are accepted by different
    // replicas in a known order.
    let accepted: Arc<Mutex<BTreeMap<usize, Vec<String>>>> = Arc::default();
    let next_call = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (http, addrs, accepted, next_call) = (http.clone(), addrs.clone(), accepted.clone(), next_call.clone());
        posters.spawn(async move {
            loop {
                let call = next_call.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if call >= CALLS {
                    return;
                }
                let mut ids = Vec::new();
                for step in 0..STEPS {
                    let body = call_event(&format!("rep_call_{call}"), step);
                    ids.extend(post_until_accepted(&http, &addrs, call + step, &body).await);
                }
                accepted.lock().unwrap().insert(call, ids);
            }
        });
    }
    let acknowledged = || accepted.lock().unwrap().len();
    let wait_acknowledged = |n: usize| async move {
        let deadline = Instant::now() + DEADLINE;
        // Acknowledgements have no push signal to the test: poll them.
        while acknowledged() < n.min(CALLS) {
            assert!(Instant::now() < deadline, "load stalled at {} calls", acknowledged());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    // Kills 1 and 2 at arbitrary moments of the load, restarted at once.
    for round in 0..2 {
        wait_acknowledged(acknowledged() + 8 + fastrand::usize(0..8)).await;
        replicas.lock().unwrap()[VICTIM].kill_now();
        let restarted = Arc::new(start_replica(dir.path(), VICTIM, &receiver, "vox").await);
        addrs.lock().unwrap()[VICTIM] = restarted.addr;
        replicas.lock().unwrap()[VICTIM] = restarted;
        println!("replicas: kill {} of the victim done at {} calls acknowledged", round + 1, acknowledged());
    }
    // Kill 3, while the victim holds leases: hold the receiver until the victim has attempts
    // in flight, note which, kill it, let the others go on.
    receiver.hold("/crm");
    let victim_header = format!("r{VICTIM}");
    let held = receiver
        .wait_pending("/crm", "an attempt of the victim in flight", |p| {
            p.iter().any(|r| r.header("x-replica").as_deref() == Some(victim_header.as_str()))
        })
        .await;
    let held: HashSet<String> =
        held.iter().filter(|r| r.header("x-replica").as_deref() == Some(victim_header.as_str())).map(id_of).collect();
    replicas.lock().unwrap()[VICTIM].kill_now();
    let killed_at = Instant::now();
    let killed_calls = acknowledged();
    receiver.release();
    // Another replica takes each of its deliveries over once their lease has run out.
    receiver
        .wait_answered("/crm", "took the killed replica's leases over", |answered| {
            held.iter().all(|id| {
                answered.iter().any(|(r, s)| {
                    *s == 200 && id_of(r) == *id && r.header("x-replica").as_deref() != Some(&victim_header)
                })
            })
        })
        .await;
    let takeover = killed_at.elapsed();
    println!(
        "replicas: kill 3 at {killed_calls} calls acknowledged, holding {} leases; taken over {takeover:?} after the kill (lease {LEASE:?})",
        held.len()
    );
    let restarted = Arc::new(start_replica(dir.path(), VICTIM, &receiver, "vox").await);
    addrs.lock().unwrap()[VICTIM] = restarted.addr;
    replicas.lock().unwrap()[VICTIM] = restarted;

    while let Some(r) = posters.join_next().await {
        r.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), CALLS);
    let replicas: Vec<Arc<Gateway>> = replicas.lock().unwrap().clone();
    wait_metric_everywhere(&replicas, "callgate_delivery_backlog{route=\"crm\"}", 0.0).await;

    // Nothing acknowledged is lost: every id answered 200 by a replica got a 200 at the route.
    let answered = receiver.answered("/crm");
    let delivered: HashMap<String, usize> =
        answered.iter().filter(|(_, s)| *s == 200).fold(HashMap::new(), |mut m, (r, _)| {
            *m.entry(id_of(r)).or_default() += 1;
            m
        });
    let all_ids: Vec<&String> = accepted.values().flatten().collect();
    let missing: Vec<&&String> = all_ids.iter().filter(|id| !delivered.contains_key(**id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never delivered: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // Per-call order: the first request and the first success of each event of a call come
    // in acceptance order, and no two events of one call were ever in flight at once.
    let order_of = |requests: Vec<&Received>| -> BTreeMap<String, Vec<String>> {
        let mut seen = HashSet::new();
        let mut by_subject: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in requests {
            let id = id_of(r);
            if seen.insert(id.clone()) {
                by_subject.entry(r.json()["subject"].as_str().unwrap().to_owned()).or_default().push(id);
            }
        }
        by_subject
    };
    let all_requests = receiver.at("/crm");
    let firsts = order_of(all_requests.iter().collect());
    let successes = order_of(answered.iter().filter(|(_, s)| *s == 200).map(|(r, _)| r).collect());
    for ids in accepted.values() {
        let subject =
            all_requests.iter().find(|r| id_of(r) == ids[0]).unwrap().json()["subject"].as_str().unwrap().to_owned();
        assert_eq!(firsts.get(&subject), Some(ids), "first attempts of {subject} out of acceptance order");
        assert_eq!(successes.get(&subject), Some(ids), "deliveries of {subject} out of acceptance order");
    }
    assert_eq!(receiver.overlaps(), [], "two events of one call were in flight to the route at once");
    let first_failures = answered.iter().filter(|(_, s)| *s == 503).count();
    // Every event's first attempt failed as scripted, unless a kill cut it off before its answer
    // (the receiver then records the arrival but no answer, and the next attempt is the first
    // one it answers).
    let failed: HashSet<String> = answered.iter().filter(|(_, s)| *s == 503).map(|(r, _)| id_of(r)).collect();
    let mut arrivals: HashMap<String, usize> = HashMap::new();
    for r in &all_requests {
        *arrivals.entry(id_of(r)).or_default() += 1;
    }
    let mut answers: HashMap<String, usize> = HashMap::new();
    for (r, _) in &answered {
        *answers.entry(id_of(r)).or_default() += 1;
    }
    let unexplained: Vec<&&String> =
        all_ids.iter().filter(|id| !failed.contains(**id) && arrivals.get(**id) <= answers.get(**id)).collect();
    assert!(unexplained.is_empty(), "first attempts that neither failed nor were cut off: {unexplained:?}");
    let successes_total: usize = delivered.values().sum();
    let duplicates = successes_total - delivered.len();
    let senders: BTreeMap<String, usize> = answered.iter().fold(BTreeMap::new(), |mut m, (r, _)| {
        *m.entry(r.header("x-replica").unwrap_or_default()).or_default() += 1;
        m
    });
    println!(
        "replicas: {} events of {CALLS} calls over {REPLICAS} replicas, 3 SIGKILLs; {} requests ({first_failures} scripted first failures), \
         {successes_total} successful deliveries of {} events: {duplicates} duplicate deliveries; requests per replica {senders:?}",
        all_ids.len(),
        all_requests.len(),
        delivered.len()
    );

    // The same body posted to two replicas at once: accepted once, the other says duplicate
    // with the same ids.
    for i in 0..5 {
        let body = call_event(&format!("rep_dup_{i}"), 0);
        let (one, two) =
            tokio::join!(replicas[0].post("oneinbox", body.clone()), replicas[1].post("oneinbox", body.clone()));
        assert_eq!((one.0, two.0), (200, 200));
        let mut answers = [&one.1, &two.1];
        answers.sort_by_key(|a| a["duplicate"].as_bool().unwrap_or(false));
        assert_eq!(answers[0]["accepted"], 1, "{answers:?}");
        assert_eq!(answers[1]["duplicate"], true, "{answers:?}");
        assert_eq!(answers[0]["ids"], answers[1]["ids"], "the duplicate names the first acceptance's ids");
    }
    wait_metric_everywhere(&replicas, "callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    let crm_before = receiver.at("/crm").len();

    // Pause through one replica: no replica sends to the route; another route, the positive
    // barrier, still receives. Resume through another replica: delivery restarts.
    let (status, _) = admin(&http, &replicas[0], reqwest::Method::POST, "/v1/admin/routes/crm/pause").await;
    assert_eq!(status, 200);
    wait_metric_everywhere(&replicas, "callgate_route_paused{route=\"crm\"}", 1.0).await;
    let side_before = receiver.at("/side").len();
    let mut paused_ids = Vec::new();
    for (n, gateway) in replicas.iter().enumerate() {
        let (status, body) = gateway.post("oneinbox", call_event(&format!("rep_paused_{n}"), 0)).await;
        assert_eq!(status, 200);
        paused_ids.push(body["ids"][0].as_str().unwrap().to_owned());
    }
    let side = receiver.wait_for("/side", side_before + REPLICAS).await;
    assert!(paused_ids.iter().all(|id| side.iter().any(|r| id_of(r) == *id)), "the barrier route got the new events");
    wait_metric_everywhere(&replicas, "callgate_delivery_backlog{route=\"crm\"}", REPLICAS as f64).await;
    assert_eq!(receiver.at("/crm").len(), crm_before, "nothing is sent to the route paused on every replica");
    let (status, routes) = admin(&http, &replicas[1], reqwest::Method::GET, "/v1/admin/routes").await;
    assert_eq!(status, 200);
    let crm = routes["routes"].as_array().unwrap().iter().find(|r| r["name"] == "crm").unwrap().clone();
    assert_eq!(crm["paused"], true, "{crm}");
    let (status, _) = admin(&http, &replicas[2], reqwest::Method::POST, "/v1/admin/routes/crm/resume").await;
    assert_eq!(status, 200);
    receiver
        .wait_answered("/crm", "delivered the events held by the pause", |answered| {
            paused_ids.iter().all(|id| answered.iter().any(|(r, s)| *s == 200 && id_of(r) == *id))
        })
        .await;
    wait_metric_everywhere(&replicas, "callgate_route_paused{route=\"crm\"}", 0.0).await;

    // Dead letters: made through one replica, listed through another, replayed through a third.
    receiver.respond("/dlq", &[500; 4]);
    let mut dead_ids = Vec::new();
    for i in 0..2 {
        let body = format!(
            r#"{{"event":"call.failed","call_id":"rep_dead_{i}","agent_id":"agt_1","to_number":"+919876543210","from_number":"+15739693824","reason":"no-answer"}}"#
        );
        let (status, answer) = replicas[0].post("oneinbox", body).await;
        assert_eq!(status, 200);
        dead_ids.push(answer["ids"][0].as_str().unwrap().to_owned());
    }
    wait_metric_everywhere(&replicas, "callgate_dead_letters{route=\"dlq\"}", 2.0).await;
    let (status, list) = admin(&http, &replicas[1], reqwest::Method::GET, "/v1/admin/dead-letters?route=dlq").await;
    assert_eq!(status, 200);
    let listed: HashSet<String> =
        list["dead_letters"].as_array().unwrap().iter().map(|d| d["event_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed, dead_ids.iter().cloned().collect::<HashSet<_>>());
    // The gauges agree on every replica.
    for gateway in &replicas {
        for series in [
            "callgate_dead_letters{route=\"dlq\"}",
            "callgate_delivery_backlog{route=\"dlq\"}",
            "callgate_delivery_backlog{route=\"crm\"}",
            "callgate_delivery_backlog{route=\"side\"}",
        ] {
            let expected = if series.starts_with("callgate_dead") { 2.0 } else { 0.0 };
            gateway.wait_metric(series, expected).await;
        }
    }
    let (status, replay) =
        admin(&http, &replicas[2], reqwest::Method::POST, "/v1/admin/dead-letters/replay?route=dlq").await;
    assert_eq!((status, replay["replayed"].as_u64()), (200, Some(2)), "{replay}");
    receiver
        .wait_answered("/dlq", "delivered the replayed dead letters", |answered| {
            dead_ids.iter().all(|id| answered.iter().any(|(r, s)| *s == 200 && id_of(r) == *id))
        })
        .await;
    wait_metric_everywhere(&replicas, "callgate_dead_letters{route=\"dlq\"}", 0.0).await;

    // Quarantine: `calls` is misconfigured as vox on every replica; Salpre's payloads to it are
    // quarantined through one replica and listed through another; the victim comes back with
    // the fix and replays them.
    for path in ["salpre/doc-call_initiated.json", "salpre/doc-call_ringing.json"] {
        assert_eq!(replicas[0].post("calls", fixture(path)).await.0, 422);
    }
    let (_, list) = admin(&http, &replicas[1], reqwest::Method::GET, "/v1/admin/quarantine?source=calls").await;
    assert_eq!(list["quarantine"].as_array().unwrap().len(), 2, "{list}");
    replicas[VICTIM].kill_now();
    let fixed = start_replica(dir.path(), VICTIM, &receiver, "salpre").await;
    let crm_before = receiver.answered("/crm").iter().filter(|(_, s)| *s == 200).count();
    let (status, replay) =
        admin(&http, &fixed, reqwest::Method::POST, "/v1/admin/quarantine/replay?source=calls").await;
    assert_eq!(status, 200);
    assert_eq!(replay["accepted"], 2, "{replay}");
    let (_, list) = admin(&http, &replicas[0], reqwest::Method::GET, "/v1/admin/quarantine?source=calls").await;
    assert_eq!(list["quarantine"].as_array().unwrap().len(), 0, "{list}");
    receiver
        .wait_answered("/crm", "delivered the replayed quarantine", |answered| {
            answered.iter().filter(|(_, s)| *s == 200).count() >= crm_before + 2
        })
        .await;
    println!("replicas: test took {:?}", started.elapsed());
}
