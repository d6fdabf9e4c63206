//! The edges an internet-facing gateway is tried on: who may hold a request slot, one JSON
//! error body everywhere, readiness and rejects on a full disk, large bodies beside health
//! checks, bounded echoes, and bulk operations that cover every match.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::AsyncReadExt;

use crate::support::*;

const TOKEN: &str = "edge-admin-t0ken";
const VENDOR_TOKEN: &str = "vendor-bearer-9a1";
const HMAC_SECRET: &str = "edge-hmac-secret";

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn guarded_config(dir: &Path, server: &str) -> String {
    base_config(dir).replace("shutdown_grace = \"5s\"", &format!("shutdown_grace = \"5s\"\n{server}"))
        + &format!(
            "\n[admin]\ntoken = \"{TOKEN}\"\n\
             \n[sources.b]\nvendor = \"vox\"\nauth = {{ type = \"bearer\", token = \"{VENDOR_TOKEN}\" }}\n\
             \n[sources.m]\nvendor = \"oneinbox\"\nauth = {{ type = \"hmac\", header = \"X-Signature\", secret = \"{HMAC_SECRET}\" }}\n"
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_trickles_never_hold_a_slot_and_the_vendor_keeps_getting_200s() {
    crate::require_backend!();
    let dir = temp_dir();
    let config = guarded_config(dir.path(), "max_concurrent_requests = 2\nrequest_timeout = \"60s\"");
    let gateway = Gateway::start(dir.path(), &config).await;
    // Three times as many trickling senders as there are slots, without or with wrong
    // credentials: each is turned away on its head, before any body is read.
    let mut trickles = Vec::new();
    for i in 0..6 {
        let auth = if i % 2 == 0 { String::new() } else { "Authorization: Bearer guessed\r\n".to_owned() };
        let mut stream = trickle(&gateway, "/v1/ingest/b", &auth).await;
        assert_eq!(status_line(&mut stream).await, "HTTP/1.1 401 Unauthorized");
        trickles.push(stream);
    }
    // An hmac request without a usable signature fails on its head too.
    let mut unsigned = trickle(&gateway, "/v1/ingest/m", "").await;
    assert_eq!(status_line(&mut unsigned).await, "HTTP/1.1 401 Unauthorized");
    // With both slots free, the real vendor gets every request through.
    for _ in 0..5 {
        let response = gateway
            .http
            .post(gateway.url("/v1/ingest/b"))
            .bearer_auth(VENDOR_TOKEN)
            .body(fixture("vox/doc-call_started.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let m = gateway.metrics().await;
    assert_eq!(
        metric_value(&m, "callgate_ingress_requests_total{source=\"b\",vendor=\"vox\",outcome=\"unauthorized\"}"),
        6.0
    );
    assert_eq!(
        metric_value(&m, "callgate_ingress_requests_total{source=\"b\",vendor=\"vox\",outcome=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        metric_value(&m, "callgate_ingress_requests_total{source=\"b\",vendor=\"vox\",outcome=\"duplicate\"}"),
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hmac_sources_slow_senders_hold_only_its_share_of_the_slots() {
    crate::require_backend!();
    let dir = temp_dir();
    let config = guarded_config(
        dir.path(),
        "max_concurrent_requests = 4\nmax_unverified_per_source = 2\nrequest_timeout = \"60s\"",
    );
    let gateway = Gateway::start(dir.path(), &config).await;
    // Three slow senders with a plausible signature header: the body must be read before it
    // can be checked, so they may hold slots, but at most the source's share of two.
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(trickle(&gateway, "/v1/ingest/m", "X-Signature: 00ff\r\n").await);
    }
    let mut answers = tokio::task::JoinSet::new();
    for (i, mut stream) in slow.into_iter().enumerate() {
        answers.spawn(async move {
            let line = status_line(&mut stream).await;
            (i, line, stream)
        });
    }
    // The holders answer only when the test lets them go, so the first answer is the one
    // sender that found the share full, whichever of the three it was.
    let (shed, line, _) = answers.join_next().await.unwrap().unwrap();
    assert_eq!(line, "HTTP/1.1 503 Service Unavailable", "sender {shed}");
    // Another source is not starved: two slots are still free for the real vendor.
    for _ in 0..4 {
        let response = gateway
            .http
            .post(gateway.url("/v1/ingest/b"))
            .bearer_auth(VENDOR_TOKEN)
            .body(fixture("vox/doc-call_ended.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // The hmac source itself is at its share while its slow senders hold it.
    let body = fixture("oneinbox/doc-call.ended.json");
    let signed = || {
        gateway.http.post(gateway.url("/v1/ingest/m")).header("X-Signature", signature(&body)).body(body.clone()).send()
    };
    let response = signed().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "overloaded");
    // Once they hang up, their share is free again (the gateway notices the close
    // asynchronously, and says so only by answering).
    answers.abort_all();
    while answers.join_next().await.is_some() {}
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = signed().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the share was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_the_json_body_and_every_ingress_request_is_counted() {
    crate::require_backend!();
    let dir = temp_dir();
    let config = guarded_config(dir.path(), "request_timeout = \"1s\"");
    let gateway = Gateway::start(dir.path(), &config).await;
    let json_error = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/json"), "{status}: {content_type}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string() && body["error"]["details"].is_array(), "{body}");
        (status, body["error"]["code"].as_str().unwrap().to_owned(), body)
    };
    let http = &gateway.http;

    // A wrong method on the ingress path: 405, JSON, counted under the source.
    let (status, code, _) = json_error(http.get(gateway.url("/v1/ingest/vox")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    // A source segment that is not UTF-8, and a path below a source: no such source.
    let (status, code, _) =
        json_error(http.post(gateway.url("/v1/ingest/%FF%FE")).body("{}").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "unknown_source"));
    let (status, code, _) =
        json_error(http.post(gateway.url("/v1/ingest/vox/x")).body("{}").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    // A body that never finishes: 408 with the JSON body, counted as a timeout.
    let mut slow = trickle(&gateway, "/v1/ingest/vox", "").await;
    assert_eq!(status_line(&mut slow).await, "HTTP/1.1 408 Request Timeout");
    let mut rest = String::new();
    let _ = slow.read_to_string(&mut rest).await;
    assert!(rest.contains("application/json") && rest.contains("\"request_timeout\""), "{rest}");

    // Admin: query and path parse errors, unknown parameters, wrong methods.
    let admin =
        |method: reqwest::Method, path: &str| http.request(method, gateway.ops_url(path)).bearer_auth(TOKEN).send();
    for (path, why) in [
        ("/v1/admin/dead-letters?limit=many", "limit"),
        ("/v1/admin/dead-letters?colour=red", "colour"),
        ("/v1/admin/dead-letters/seven", "seven"),
        ("/v1/admin/quarantine/1.5", "1.5"),
    ] {
        let (status, code, body) = json_error(admin(reqwest::Method::GET, path).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(why), "{path}: {body}");
    }
    let long = "9".repeat(10_000);
    let (status, _, body) =
        json_error(admin(reqwest::Method::GET, &format!("/v1/admin/dead-letters?since={long}")).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(body.to_string().len() < 500, "a caller's value is not echoed whole: {} bytes", body.to_string().len());
    let (status, code, _) = json_error(admin(reqwest::Method::DELETE, "/v1/admin/routes").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    let (status, code, _) = json_error(admin(reqwest::Method::GET, "/v1/admin/nothing-here").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));

    gateway
        .wait_metric("callgate_ingress_requests_total{source=\"vox\",vendor=\"vox\",outcome=\"timeout\"}", 1.0)
        .await;
    let m = gateway.metrics().await;
    for (series, n) in [
        ("callgate_ingress_requests_total{source=\"vox\",vendor=\"vox\",outcome=\"invalid\"}", 1.0),
        ("callgate_ingress_requests_total{source=\"unknown\",vendor=\"unknown\",outcome=\"unknown_source\"}", 2.0),
    ] {
        assert_eq!(metric_value(&m, series), n, "{series}\n{m}");
    }
    assert!(!m.contains("%FF") && !m.contains("vox/x"), "raw path segments never become labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_wrong_value_gives_a_small_422_and_a_small_log_line() {
    crate::require_backend!();
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &base_config(dir.path())).await;
    let huge = "7".repeat(900 * 1024);
    let body = format!(r#"{{"event":"call_started","call":{{"call_id":"c-1","start_timestamp":"{huge}"}}}}"#);
    let response = gateway.http.post(gateway.url("/v1/ingest/vox")).body(body).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let text = response.text().await.unwrap();
    assert!(text.len() < 64 * 1024, "422 body of {} bytes", text.len());
    assert!(!text.contains(&"7".repeat(200)), "the value is not echoed whole");
    let line = gateway.wait_log("Ingress rejected.").await;
    assert!(line.len() < 64 * 1024, "log line of {} bytes", line.len());
    assert!(!line.contains(&"7".repeat(200)));
    // The quarantine keeps the body once, and its details are as small as the answer.
    let lengths = store_rows(dir.path(), "SELECT length(body), length(details) FROM quarantine");
    let (body_len, details_len): (i64, i64) = (lengths[0][0].parse().unwrap(), lengths[0][1].parse().unwrap());
    assert!(body_len > 900 * 1024 && details_len < 64 * 1024, "body {body_len}, details {details_len}");
}

/// A small tmpfs for one test, unmounted on drop; `None` where mounting is not allowed.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        let at = dir.join("disk");
        std::fs::create_dir_all(&at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false);
        mounted.then(|| SmallDisk(at))
    }

    /// Fills the disk with one file until writing fails.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).and_then(|()| file.sync_data()).is_ok() {}
        // What is left is smaller than a chunk: take it byte by byte.
        while file.write_all(&[0]).and_then(|()| file.sync_data()).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_readyz_fails_and_nothing_is_answered_4xx_without_quarantine() {
    crate::require_backend!();
    crate::sqlite_only!("a full disk under PostgreSQL is the database server's, not the gateway's");
    let dir = temp_dir();
    let Some(disk) = SmallDisk::mount(dir.path(), "16m") else {
        println!("skipped: cannot mount a tmpfs here (needs root); the full-disk behaviour is untested");
        return;
    };
    let config = base_config(dir.path()).replace(
        &format!("url = \"sqlite://{}/callgate.db\"", dir.path().display()),
        &format!("url = \"sqlite://{}/callgate.db\"\nmin_free_bytes = 1048576", disk.0.display()),
    );
    let gateway = Gateway::start(dir.path(), &config).await;
    let ready = || async { gateway.http.get(gateway.url("/readyz")).send().await.unwrap() };
    assert_eq!(ready().await.status(), 200);
    assert_eq!(gateway.post("vox", fixture("vox/doc-call_started.json")).await.0, 200);

    let filler = disk.fill();
    let response = ready().await;
    assert_eq!(response.status(), 503, "not ready on a full disk");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
    // A payload the disk has no room for is refused with 503, not acknowledged.
    let padding = "p".repeat(300 * 1024);
    let valid = format!(
        r#"{{"event":"call.started","call_id":"full-1","created_at":"2026-06-01T10:00:00Z","padding":"{padding}"}}"#
    );
    let (status, body) = gateway.post("oneinbox", valid.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("store_unavailable")));
    // A payload that would be rejected cannot be quarantined either: 503, so the vendor
    // retries instead of the payload being lost behind a 4xx.
    let invalid = format!(r#"{{"event":"call.started","padding":"{padding}"}}"#); // no call id
    let (status, body) = gateway.post("oneinbox", invalid.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("store_unavailable")), "{body}");

    // Room again: ready, and both payloads are taken as a vendor's retry would bring them.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(ready().await.status(), 200);
    assert_eq!(gateway.post("oneinbox", valid).await.0, 200, "nothing was accepted before");
    assert_eq!(gateway.post("oneinbox", invalid).await.0, 422);
    drop(gateway);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_while_large_bodies_are_validated() {
    crate::require_backend!();
    let dir = temp_dir();
    let gateway = std::sync::Arc::new(Gateway::start(dir.path(), &base_config(dir.path())).await);
    // vox call_ended bodies of about 900 KB: thousands of utterances to validate and map.
    let body = |n: usize| {
        let line = r#"{"role":"user","content":"I would like to move my appointment to Thursday afternoon please"}"#;
        let transcript = vec![line; 10_500].join(",");
        format!(
            r#"{{"event":"call_ended","call":{{"call_id":"big-{n}","call_type":"inbound","start_timestamp":1775980200000,"end_timestamp":1775980500000,"duration_ms":300000,"disconnection_reason":"user_hangup","transcript":[{transcript}]}}}}"#
        )
    };
    assert!(body(0).len() > 900_000 && body(0).len() < 1_048_576);
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..6 {
        let gateway = gateway.clone();
        let bodies: Vec<String> = (0..4).map(|i| body(sender * 10 + i)).collect();
        senders.spawn(async move {
            for body in bodies {
                let (status, answer) = gateway.post("vox", body).await;
                assert_eq!(status, 200, "{answer}");
            }
        });
    }
    let mut slowest = Duration::ZERO;
    let mut checks = 0;
    while !senders.is_empty() {
        let started = Instant::now();
        let health = gateway.http.get(gateway.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        slowest = slowest.max(started.elapsed());
        checks += 1;
        while let Some(done) = senders.try_join_next() {
            done.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A figure to read, not a timed assertion: the mechanism is proven deterministically by
    // the offload unit tests in src/ingress.rs.
    println!("healthz under 24 bodies of 900 KB: {checks} checks, slowest {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_quarantine_replay_covers_every_match_or_says_how_to_go_on() {
    crate::require_backend!();
    let dir = temp_dir();
    // Misconfigured: Salpre posts to a source set up as vox.
    let broken =
        base_config(dir.path()) + &format!("\n[admin]\ntoken = \"{TOKEN}\"\n[sources.calls]\nvendor = \"vox\"\n");
    let gateway = std::sync::Arc::new(Gateway::start(dir.path(), &broken).await);
    const N: usize = 450; // more than two of the replay's internal pages
    let mut posters = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let gateway = gateway.clone();
        posters.spawn(async move {
            for i in (worker..N).step_by(6) {
                let body = format!(
                    r#"{{"event_type":"call_ringing","timestamp_utc":1760084505,"payload":{{"call_id":{i},"from":"+15551230000","to":"+15551239999"}},"is_test":false}}"#
                );
                assert_eq!(gateway.post("calls", body).await.0, 422);
            }
        });
    }
    while let Some(done) = posters.join_next().await {
        done.unwrap();
    }
    let gateway = std::sync::Arc::into_inner(gateway).unwrap();
    assert!(gateway.terminate().await.success());
    let fixed = broken.replace("[sources.calls]\nvendor = \"vox\"", "[sources.calls]\nvendor = \"salpre\"");
    let gateway = Gateway::start(dir.path(), &fixed).await;
    let replay = |query: String| {
        let request = gateway.http.post(gateway.ops_url(&format!("/v1/admin/quarantine/replay?{query}")));
        async move { request.bearer_auth(TOKEN).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // Capped at 300 by the caller (past one internal page of 200): it says that more remain
    // and where to go on.
    let first = replay("source=calls&limit=300".into()).await;
    assert_eq!((first["accepted"].as_u64(), first["more"].as_bool()), (Some(300), Some(true)), "{first}");
    let after = first["next_after_id"].as_i64().unwrap();
    let second = replay(format!("source=calls&after_id={after}")).await;
    assert_eq!((second["accepted"].as_u64(), second["more"].as_bool()), (Some(150), Some(false)));
    // Going on from there covers the rest: nothing is left behind.
    let (status, left) = {
        let r = gateway.http.get(gateway.ops_url("/v1/admin/quarantine")).bearer_auth(TOKEN).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(left["quarantine"].as_array().unwrap().len(), 0, "{left}");
    let m = gateway.metrics().await;
    assert_eq!(metric_value(&m, "callgate_events_total{source=\"calls\",type=\"call.ringing\"}"), N as f64);
}
