//! Security at the edges: ingress authentication, signed egress verified independently,
//! hostile input, safe egress, and no secret anywhere it should not be.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::support::*;

const QUERY_SECRET: &str = "q-secret-7f3a";
const HEADER_SECRET: &str = "h-secret-91bc";
const BEARER_SECRET: &str = "b-secret-4d2e";
const BASIC_SECRET: &str = "p-secret-c0de";
const HMAC_SECRET: &str = "m-secret-5a5a";
const ROUTE_TOKEN: &str = "r-secret-beef";
const ADMIN_TOKEN: &str = "a-secret-f00d";
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SIGNING_SECRET: &str = "whsec_c2VjcmV0LWJlZm9yZS1yb3RhdGlvbg==";

const SECRETS: &[&str] = &[
    QUERY_SECRET,
    HEADER_SECRET,
    BEARER_SECRET,
    BASIC_SECRET,
    HMAC_SECRET,
    ROUTE_TOKEN,
    ADMIN_TOKEN,
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "c2VjcmV0LWJlZm9yZS1yb3RhdGlvbg",
];

fn secured_config(dir: &std::path::Path, receiver: &Receiver) -> String {
    base_config(dir)
        + &format!(
            r#"
[admin]
token = "${{IT_ADMIN_TOKEN}}"

[sources.q]
vendor = "utel"
auth = {{ type = "query", name = "secret", value = "${{IT_QUERY}}" }}

[sources.h]
vendor = "salpre"
auth = {{ type = "header", name = "X-Salpre-Key", value = "${{IT_HEADER}}" }}

[sources.b]
vendor = "vox"
auth = {{ type = "bearer", token = "${{IT_BEARER}}" }}

[sources.p]
vendor = "oneinbox"
auth = {{ type = "basic", username = "vendor", password = "${{IT_BASIC}}" }}

[sources.mhex]
vendor = "oneinbox"
auth = {{ type = "hmac", header = "X-Signature", secret = "${{IT_HMAC}}", encoding = "hex" }}

[sources.mb64]
vendor = "oneinbox"
auth = {{ type = "hmac", header = "X-Signature", secret = "${{IT_HMAC}}", encoding = "base64" }}

[routes.signed]
url = "{url}"
include_test = true
headers = {{ Authorization = "Bearer ${{IT_ROUTE_TOKEN}}" }}
signing_secret = ["${{IT_SIGNING}}", "{OLD_SIGNING_SECRET}"]
"#,
            url = receiver.url("/signed")
        )
}

fn secret_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("IT_QUERY", QUERY_SECRET),
        ("IT_HEADER", HEADER_SECRET),
        ("IT_BEARER", BEARER_SECRET),
        ("IT_BASIC", BASIC_SECRET),
        ("IT_HMAC", HMAC_SECRET),
        ("IT_ROUTE_TOKEN", ROUTE_TOKEN),
        ("IT_ADMIN_TOKEN", ADMIN_TOKEN),
        ("IT_SIGNING", SIGNING_SECRET),
    ]
}

async fn code(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

fn hmac(body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// An independent Standard Webhooks verifier, written from the specification: the signed
/// content is `{webhook-id}.{webhook-timestamp}.{body}`, the key is the base64 part of the
/// `whsec_` secret, and the header lists space-separated `v1,<base64 HMAC-SHA256>` entries.
pub(crate) fn standard_webhooks_verify(
    secret: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).ok_or(format!("missing {name}"));
    let id = get("webhook-id")?;
    let timestamp = get("webhook-timestamp")?;
    let signatures = get("webhook-signature")?;
    let ts: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return Err("timestamp outside tolerance".into());
    }
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    if signatures.split(' ').any(|s| s == expected) {
        Ok(())
    } else {
        Err(format!("no signature matches in {signatures}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_type_accepts_the_right_secret_and_rejects_missing_wrong_or_tampered_ones() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start_with_env(dir.path(), &secured_config(dir.path(), &receiver), &secret_env()).await;
    let http = &gateway.http;
    let post = |path: &str| http.post(gateway.url(path));
    let utel = fixture("utel/synthetic-call_started.json");
    let salpre = fixture("salpre/doc-call_ringing.json");
    let vox = fixture("vox/doc-call_started.json");
    let oneinbox = fixture("oneinbox/doc-call.analyzed.json");

    // query
    let q = format!("/v1/ingest/q?secret={QUERY_SECRET}");
    assert_eq!(code(post(&q).body(utel.clone())).await, 200);
    assert_eq!(code(post("/v1/ingest/q").body(utel.clone())).await, 401);
    assert_eq!(code(post("/v1/ingest/q?secret=nope").body(utel.clone())).await, 401);
    // header
    let h = "X-Salpre-Key";
    assert_eq!(code(post("/v1/ingest/h").header(h, HEADER_SECRET).body(salpre.clone())).await, 200);
    assert_eq!(code(post("/v1/ingest/h").body(salpre.clone())).await, 401);
    assert_eq!(code(post("/v1/ingest/h").header(h, "h-secret-91bd").body(salpre.clone())).await, 401);
    // bearer
    assert_eq!(code(post("/v1/ingest/b").bearer_auth(BEARER_SECRET).body(vox.clone())).await, 200);
    assert_eq!(code(post("/v1/ingest/b").body(vox.clone())).await, 401);
    assert_eq!(code(post("/v1/ingest/b").bearer_auth("b-secret").body(vox.clone())).await, 401);
    // basic
    let p = "/v1/ingest/p";
    assert_eq!(code(post(p).basic_auth("vendor", Some(BASIC_SECRET)).body(oneinbox.clone())).await, 200);
    assert_eq!(code(post(p).body(oneinbox.clone())).await, 401);
    assert_eq!(code(post(p).basic_auth("other", Some(BASIC_SECRET)).body(oneinbox.clone())).await, 401);
    // hmac, hex and base64; a tampered body fails
    let sig = hmac(&oneinbox);
    let signed = |path: &str, signature: String, body: Vec<u8>| post(path).header("X-Signature", signature).body(body);
    assert_eq!(code(signed("/v1/ingest/mhex", hex::encode(&sig), oneinbox.clone())).await, 200);
    assert_eq!(code(signed("/v1/ingest/mb64", STANDARD.encode(&sig), oneinbox.clone())).await, 200);
    let mut tampered = oneinbox.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(code(signed("/v1/ingest/mhex", hex::encode(&sig), tampered)).await, 401);
    assert_eq!(code(post("/v1/ingest/mhex").body(oneinbox.clone())).await, 401);
    assert_eq!(code(signed("/v1/ingest/mb64", hex::encode(&sig), oneinbox.clone())).await, 401);

    let m = gateway.metrics().await;
    for (source, vendor, n) in [
        ("q", "utel", 2.0),
        ("h", "salpre", 2.0),
        ("b", "vox", 2.0),
        ("p", "oneinbox", 2.0),
        ("mhex", "oneinbox", 2.0),
        ("mb64", "oneinbox", 1.0),
    ] {
        let series = format!(
            "callgate_ingress_requests_total{{source=\"{source}\",vendor=\"{vendor}\",outcome=\"unauthorized\"}}"
        );
        assert_eq!(metric_value(&m, &series), n, "{series}");
    }
    let answer: Value = post("/v1/ingest/b").bearer_auth("wrong").body(vox).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["error"]["code"], "unauthorized");
    assert!(SECRETS.iter().all(|s| !answer.to_string().contains(s)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_egress_verifies_with_an_independent_implementation_for_every_rotating_secret() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start_with_env(dir.path(), &secured_config(dir.path(), &receiver), &secret_env()).await;
    let (_, body) = gateway.post("vox", fixture("vox/doc-call_ended.json")).await;
    let requests = receiver.wait_for("/signed", 4).await;
    for request in &requests {
        let event = request.json();
        assert_eq!(request.header("webhook-id").as_deref(), event["id"].as_str(), "webhook-id is the CloudEvents id");
        assert!(body["ids"].as_array().unwrap().contains(&event["id"]));
        standard_webhooks_verify(SIGNING_SECRET, &request.headers, &request.body).unwrap();
        standard_webhooks_verify(OLD_SIGNING_SECRET, &request.headers, &request.body).unwrap();
        assert_eq!(request.header("webhook-signature").unwrap().split(' ').count(), 2);
        assert_eq!(request.header("authorization"), Some(format!("Bearer {ROUTE_TOKEN}")));
        // A tampered body no longer verifies.
        let mut tampered = request.body.to_vec();
        tampered[10] ^= 1;
        assert!(standard_webhooks_verify(SIGNING_SECRET, &request.headers, &tampered).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_and_the_gateway_stays_healthy() {
    crate::require_backend!();
    let dir = temp_dir();
    let config = base_config(dir.path()).replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nheader_read_timeout = \"1s\"\nrequest_timeout = \"4s\"\nmax_header_bytes = 8192\nmax_concurrent_requests = 2\nmax_unverified_per_source = 2",
    );
    let gateway = Gateway::start(dir.path(), &config).await;
    let addr = gateway.addr;

    // Deep nesting: a clear 400, not a stack overflow.
    let deep = "[".repeat(100_000);
    let (status, body) = gateway.post("vox", deep).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("recursion limit"), "{body}");

    // Too many or too large headers: 431.
    let mut request = gateway.http.post(gateway.url("/v1/ingest/vox")).body("{}");
    for i in 0..120 {
        request = request.header(format!("x-junk-{i}"), "x");
    }
    assert_eq!(request.send().await.unwrap().status(), 431);
    let big =
        gateway.http.post(gateway.url("/v1/ingest/vox")).header("x-big", "y".repeat(10_000)).body("{}").send().await;
    assert_eq!(big.unwrap().status(), 431);

    // A sender that never finishes its headers is cut off.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"POST /v1/ingest/vox HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(10), "the connection was closed by the server");

    // Bodies that trickle in slower than request_timeout get 408, and the requests they hold
    // meanwhile count against max_concurrent_requests (2): of three, whichever arrives last
    // finds both slots taken and is shed with 503. The two holders answer only at the time
    // limit, so the count does not depend on the order the gateway sees them in.
    let trickle = || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /v1/ingest/vox HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    };
    let mut trickles = [trickle(), trickle(), trickle()];
    let mut statuses: Vec<String> = trickles
        .iter_mut()
        .map(|s| {
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.contains("\"request_timeout\"") || answer.contains("\"overloaded\"") {
                answer.split_whitespace().nth(1).unwrap_or_default().to_owned()
            } else {
                format!("unexpected: {answer}")
            }
        })
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["408", "408", "503"]);
    assert_eq!(gateway.http.get(gateway.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(gateway.post("vox", fixture("vox/doc-call_started.json")).await.0, 200);
}

/// Mutations of the golden fixtures and pure junk, fired concurrently at every source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_mutated_and_junk_bodies_never_gets_a_5xx_or_kills_the_process() {
    crate::require_backend!();
    let dir = temp_dir();
    let gateway = std::sync::Arc::new(Gateway::start(dir.path(), &base_config(dir.path())).await);
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (vendor, path) in crate::golden::fixtures() {
        seeds.push((vendor.as_str().to_owned(), std::fs::read(path).unwrap()));
    }
    let mut rng = fastrand::Rng::with_seed(20261121);
    let mut bodies = Vec::new();
    for i in 0..3000 {
        let (source, seed) = &seeds[rng.usize(..seeds.len())];
        let body = match i % 6 {
            0 => (0..rng.usize(0..512)).map(|_| rng.u8(..)).collect(),
            1 => seed[..rng.usize(0..seed.len())].to_vec(),
            2 => {
                let mut b = seed.clone();
                for _ in 0..rng.usize(1..8) {
                    let at = rng.usize(..b.len());
                    b[at] = rng.u8(..);
                }
                b
            }
            3 => mutate_json(seed, &mut rng),
            4 => {
                let mut b = seed.clone();
                let at = rng.usize(..b.len());
                let chunk = seed[..rng.usize(0..seed.len())].to_vec();
                b.splice(at..at, chunk);
                b
            }
            _ => format!(
                "{{\"event\":{}}}",
                ["null", "1", "[]", "{}", "\"\u{0}\"", "\"call.started\"", "\"call_ended\""][i % 7]
            )
            .into_bytes(),
        };
        bodies.push((source.clone(), body));
    }
    let bodies = std::sync::Arc::new(bodies);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let gateway = gateway.clone();
        let bodies = bodies.clone();
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for (source, body) in bodies.iter().skip(worker).step_by(16) {
                let response =
                    gateway.http.post(gateway.url(&format!("/v1/ingest/{source}"))).body(body.clone()).send().await;
                let status = response.expect("the gateway answers every request").status().as_u16();
                assert!(
                    status == 200 || (400..500).contains(&status),
                    "{status} for {}",
                    String::from_utf8_lossy(body)
                );
                seen.push(status);
            }
            seen
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(seen) = tasks.join_next().await {
        for s in seen.unwrap() {
            *statuses.entry(s).or_insert(0) += 1;
        }
    }
    println!("junk storm: {statuses:?}");
    assert!(
        statuses.get(&400).copied().unwrap_or(0) > 500 && statuses.get(&422).copied().unwrap_or(0) > 100,
        "{statuses:?}"
    );
    assert_eq!(gateway.http.get(gateway.url("/readyz")).send().await.unwrap().status(), 200);
    assert!(!gateway.logs().contains("panicked"), "{}", gateway.logs());
}

/// Replaces a random value in a JSON body with a value of another type.
fn mutate_json(seed: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(seed).unwrap();
    let mut pointers = Vec::new();
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, format!("{at}/{k}"), out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| walk(v, format!("{at}/{i}"), out)),
            _ => {}
        }
    }
    walk(&value, String::new(), &mut pointers);
    let replacements = [
        Value::Null,
        Value::from(-1),
        Value::from(1.5e300),
        Value::from(""),
        Value::from("☃"),
        serde_json::json!([]),
        serde_json::json!({}),
    ];
    let at = &pointers[rng.usize(..pointers.len())];
    if let Some(target) = value.pointer_mut(at) {
        *target = replacements[rng.usize(..replacements.len())].clone();
    }
    serde_json::to_vec(&value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_follows_no_redirect_and_reads_only_a_snippet_of_a_failed_response() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.respond_with("/moved", vec![(302, vec![("location".into(), receiver.url("/elsewhere"))])]);
    receiver.respond_big("/huge", 500, 5 * 1024 * 1024);
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &format!("\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n")
        + &format!("\n[routes.moved]\nurl = \"{}\"\n[routes.moved.retry]\nschedule = []\n", receiver.url("/moved"))
        + &format!("\n[routes.huge]\nurl = \"{}\"\n[routes.huge.retry]\nschedule = []\n", receiver.url("/huge"));
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(gateway.post("vox", fixture("vox/doc-call_started.json")).await.0, 200);
    gateway.wait_metric("callgate_dead_letters{route=\"moved\"}", 1.0).await;
    assert!(receiver.at("/elsewhere").is_empty(), "the redirect was not followed");
    let list: Value = gateway
        .http
        .get(gateway.ops_url("/v1/admin/dead-letters"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let moved = list["dead_letters"].as_array().unwrap().iter().find(|d| d["route"] == "moved").unwrap().clone();
    assert_eq!(moved["last_error"], "HTTP 302");
    gateway.wait_metric("callgate_dead_letters{route=\"huge\"}", 1.0).await;
    let list: Value = gateway
        .http
        .get(gateway.ops_url("/v1/admin/dead-letters?route=huge"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let detail: Value = gateway
        .http
        .get(gateway.ops_url(&format!("/v1/admin/dead-letters/{}", list["dead_letters"][0]["id"])))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let snippet = detail["attempts_log"][0]["response"].as_str().unwrap();
    assert_eq!(snippet.len(), 1024, "only the first KiB of a 5 MiB answer is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_metrics_errors_or_the_store() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.respond("/signed", &[500]);
    let dir = temp_dir();
    let config = secured_config(dir.path(), &receiver)
        .replace("[routes.signed]\n", "[routes.signed]\nretry = { schedule = [\"10ms\"] }\n");
    let mut env = secret_env();
    env.push(("RUST_LOG", "debug"));
    let gateway = Gateway::start_with_env(dir.path(), &config, &env).await;
    // Traffic of every kind: accepted, rejected with and without secrets, retried, admin.
    let ok = gateway
        .http
        .post(gateway.url(&format!("/v1/ingest/q?secret={QUERY_SECRET}")))
        .body(fixture("utel/synthetic-call_started.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = gateway
        .http
        .post(gateway.url(&format!("/v1/ingest/q?secret={QUERY_SECRET}")))
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    gateway.http.post(gateway.url("/v1/ingest/q?secret=q-secret-7f3b")).body("{}").send().await.unwrap();
    gateway.http.post(gateway.url("/v1/ingest/b")).bearer_auth(BEARER_SECRET).body("[]").send().await.unwrap();
    gateway.http.post(gateway.url("/v1/ingest/b")).bearer_auth("guess").body("{}").send().await.unwrap();
    gateway.http.get(gateway.url("/v1/admin/routes")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    gateway.http.get(gateway.url("/v1/admin/routes")).bearer_auth("a-secret-f00e").send().await.unwrap();
    receiver.wait_for("/signed", 2).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"signed\"}", 0.0).await;
    let metrics = gateway.metrics().await;
    // The admin call with a wrong token is the last request; once the rejections before it
    // are in the log, the log holds everything these requests caused.
    gateway.wait_log("Ingress rejected.").await;
    gateway.wait_log("Delivery failed; will retry.").await;
    let logs = gateway.logs();
    assert!(gateway.terminate().await.success());
    let store = store_dump(dir.path());
    assert!(store.contains("broken"), "the quarantined body is in the store");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "`{secret}` in the logs");
        assert!(!metrics.contains(secret), "`{secret}` in the metrics");
        assert!(!store.contains(secret), "`{secret}` in the store");
    }
}
