//! `POST /v1/inbound/{source}`: vox's inbound webhook answered from a lookup receiver on
//! loopback that answers fast, holds its answer, fails, or answers something malformed.
//! The slow case asserts no timing: the receiver holds its answer until the test has seen
//! the gateway's fallback, then lets it go.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::*;

/// What the lookup receiver answers.
#[derive(Clone)]
enum Mode {
    Answer(Value),
    /// Holds every request until [`Lookup::release`].
    Hold,
    Status(u16),
    Body(&'static str),
}

#[derive(Clone)]
struct LookupState {
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    release: Arc<Notify>,
}

/// A CRM stand-in at `/lookup`.
struct Lookup {
    url: String,
    state: LookupState,
}

impl Lookup {
    async fn start(mode: Mode) -> Lookup {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/lookup", listener.local_addr().unwrap());
        let state =
            LookupState { mode: Arc::new(Mutex::new(mode)), seen: Arc::default(), release: Arc::new(Notify::new()) };
        let app = Router::new().route("/lookup", post(answer)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Lookup { url, state }
    }

    fn seen(&self) -> Vec<(HeaderMap, Value)> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter().map(|(h, b)| (h.clone(), serde_json::from_slice(b).expect("the lookup is JSON"))).collect()
    }

    fn release(&self) {
        self.state.release.notify_one();
    }
}

async fn answer(State(state): State<LookupState>, headers: HeaderMap, body: Bytes) -> Response {
    let released = state.release.notified();
    state.seen.lock().unwrap().push((headers, body));
    let mode = state.mode.lock().unwrap().clone();
    match mode {
        Mode::Answer(value) => axum::Json(value).into_response(),
        Mode::Hold => {
            released.await;
            axum::Json(json!({"variables": {"customer_name": "too late"}})).into_response()
        }
        Mode::Status(status) => (StatusCode::from_u16(status).unwrap(), "CRM is down").into_response(),
        Mode::Body(text) => (StatusCode::OK, text).into_response(),
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A gateway whose vox source answers its inbound webhook from `lookup`.
async fn gateway(dir: &std::path::Path, lookup: &Lookup, timeout: &str) -> Gateway {
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[storage]
url = "{storage}"

[sources.vox]
vendor = "vox"
phone_region = "KR"
auth = {{ type = "query", name = "secret", value = "vox-secret" }}

[sources.vox.inbound]
url = "{url}"
timeout = "{timeout}"
signing_secret = "{SECRET}"
headers = {{ "X-CRM-Key" = "crm-key", "X-Lookup-Source" = "{{{{data.source}}}}" }}
fallback = {{ variables = {{ customer_name = "there" }}, metadata = {{ lookup = "fallback" }} }}
"#,
        storage = storage_url(dir),
        url = lookup.url,
    );
    Gateway::start(dir, &config).await
}

const CURRENT: &str =
    r#"{"event":"call_inbound","call_inbound":{"from_number":"01012345678","to_number":"+827012345678"}}"#;
const OLDER: &str = r#"{"call_from":"+821055556666","call_to":"+827087652143"}"#;

async fn ask(gateway: &Gateway, query: &str, body: &str) -> (u16, Value) {
    let response =
        gateway.http.post(gateway.url(&format!("/v1/inbound/vox{query}"))).body(body.to_owned()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn fallback() -> Value {
    json!({"call_inbound": {"dynamic_variables": {"customer_name": "there"}, "metadata": {"lookup": "fallback"}}})
}

const ANSWERED: &str = "callgate_inbound_requests_total{source=\"vox\",outcome=\"answered\"}";

#[tokio::test]
async fn a_fast_lookup_answers_vox_with_the_crms_variables_in_both_request_forms() {
    crate::require_backend!();
    let dir = temp_dir();
    let crm = json!({"variables": {"customer_name": "Kim Cheol-su", "tier": "gold"}, "metadata": {"crm_id": 42}});
    let lookup = Lookup::start(Mode::Answer(crm)).await;
    let gateway = gateway(dir.path(), &lookup, "5s").await;

    let expected = json!({"call_inbound": {"dynamic_variables": {"customer_name": "Kim Cheol-su", "tier": "gold"}, "metadata": {"crm_id": 42}}});
    assert_eq!(ask(&gateway, "?secret=vox-secret", CURRENT).await, (200, expected.clone()));
    assert_eq!(ask(&gateway, "?secret=vox-secret", OLDER).await, (200, expected));

    let seen = lookup.seen();
    assert_eq!(seen.len(), 2);
    let (headers, event) = &seen[0];
    assert_eq!(event["type"], "call.inbound_lookup");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["source"], "/callgate/sources/vox");
    assert_eq!(event["data"]["vendor"], "vox");
    assert_eq!(event["data"]["from"], "01012345678");
    assert_eq!(event["data"]["from_e164"], "+821012345678", "national numbers in E.164 with the source's region");
    assert_eq!(event["data"]["to_e164"], "+827012345678");
    assert_eq!(seen[1].1["data"]["from_e164"], "+821055556666", "the older flat form");
    // The route machinery's headers and Standard Webhooks signature.
    assert_eq!(headers["x-crm-key"], "crm-key");
    assert_eq!(headers["x-lookup-source"], "vox", "templated over the lookup event");
    assert_eq!(headers["content-type"], "application/cloudevents+json");
    let id = headers["webhook-id"].to_str().unwrap();
    assert_eq!(id, event["id"].as_str().unwrap());
    let timestamp: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let key = callgate::delivery::signing::decode_secret(SECRET).unwrap();
    let raw = lookup.state.seen.lock().unwrap()[0].1.clone();
    assert_eq!(
        headers["webhook-signature"].to_str().unwrap(),
        callgate::delivery::signing::sign(&key, id, timestamp, &raw)
    );
    assert_eq!(gateway.metric(ANSWERED).await, 2.0);

    // Authenticated like the source's ingress: a wrong secret reaches no CRM.
    assert_eq!(ask(&gateway, "?secret=wrong", CURRENT).await.0, 401);
    // A call-data event is not an inbound request: a brief 422, and nothing is asked.
    let (status, body) = ask(&gateway, "?secret=vox-secret", r#"{"event":"call_started","call":{}}"#).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "unknown_event");
    assert_eq!(lookup.seen().len(), 2);
    assert_eq!(gateway.metric("callgate_inbound_requests_total{source=\"vox\",outcome=\"rejected\"}").await, 2.0);

    // Nothing is stored and no number is logged.
    let dump = store_dump(dir.path());
    let logs = gateway.logs();
    for number in ["1012345678", "1055556666", "7012345678"] {
        assert!(!dump.contains(number), "the store holds {number}");
        assert!(!logs.contains(number), "the logs hold {number}:\n{logs}");
    }
}

#[tokio::test]
async fn a_slow_lookup_is_answered_with_the_fallback_and_counted() {
    crate::require_backend!();
    let dir = temp_dir();
    let lookup = Lookup::start(Mode::Hold).await;
    let gateway = gateway(dir.path(), &lookup, "200ms").await;

    // The lookup is held until after the gateway has answered: only the fallback can come back.
    // (Whether the lookup reached the receiver before the deadline is up to the scheduler, so
    // it is not asserted; the counter says the deadline cut it.)
    let (status, body) = ask(&gateway, "?secret=vox-secret", CURRENT).await;
    assert_eq!((status, body), (200, fallback()));
    lookup.release();
    assert_eq!(gateway.metric("callgate_inbound_requests_total{source=\"vox\",outcome=\"timeout\"}").await, 1.0);
    assert_eq!(gateway.metric(ANSWERED).await, 0.0);
    let line = gateway.wait_log("Inbound lookup fell back").await;
    assert!(line.contains("timeout") && !line.contains("1012345678"), "{line}");
}

#[tokio::test]
async fn a_failing_lookup_is_answered_with_the_fallback_at_once() {
    crate::require_backend!();
    let dir = temp_dir();
    let lookup = Lookup::start(Mode::Status(500)).await;
    // A deadline far beyond the test's own: the fallback can only come from the failure.
    let gateway = gateway(dir.path(), &lookup, "9s").await;
    assert_eq!(ask(&gateway, "?secret=vox-secret", CURRENT).await, (200, fallback()));
    assert_eq!(gateway.metric("callgate_inbound_requests_total{source=\"vox\",outcome=\"failed\"}").await, 1.0);
    let line = gateway.wait_log("Inbound lookup fell back").await;
    assert!(line.contains("500"), "{line}");
}

#[tokio::test]
async fn a_malformed_lookup_answer_is_answered_with_the_fallback_at_once() {
    crate::require_backend!();
    let dir = temp_dir();
    let lookup = Lookup::start(Mode::Body("<html>not json</html>")).await;
    let gateway = gateway(dir.path(), &lookup, "9s").await;
    assert_eq!(ask(&gateway, "?secret=vox-secret", CURRENT).await, (200, fallback()));
    *lookup.state.mode.lock().unwrap() = Mode::Answer(json!({"variables": ["not", "a", "map"]}));
    assert_eq!(ask(&gateway, "?secret=vox-secret", OLDER).await, (200, fallback()));
    *lookup.state.mode.lock().unwrap() = Mode::Answer(json!({"customer_name": "Kim"}));
    assert_eq!(ask(&gateway, "?secret=vox-secret", OLDER).await, (200, fallback()), "another shape is not half-used");
    assert_eq!(gateway.metric("callgate_inbound_requests_total{source=\"vox\",outcome=\"malformed\"}").await, 3.0);
    // The answer's content is never logged.
    assert!(!gateway.logs().contains("not json"), "{}", gateway.logs());
}

/// An answer over the read limit is never read whole (memory per request stays bounded), and
/// an unreachable lookup falls back like a failing one.
#[tokio::test]
async fn an_oversized_answer_and_an_unreachable_lookup_are_answered_with_the_fallback() {
    crate::require_backend!();
    let dir = temp_dir();
    let big = "x".repeat(callgate::ingress::inbound::MAX_ANSWER_BYTES);
    let lookup = Lookup::start(Mode::Answer(json!({"variables": {"customer_name": big}}))).await;
    let first = gateway(dir.path(), &lookup, "9s").await;
    assert_eq!(ask(&first, "?secret=vox-secret", CURRENT).await, (200, fallback()));
    assert_eq!(first.metric("callgate_inbound_requests_total{source=\"vox\",outcome=\"malformed\"}").await, 1.0);
    let line = first.wait_log("Inbound lookup fell back").await;
    assert!(line.contains("larger than") && !line.contains("xxxxxxxx"), "{line}");

    // A port nobody listens on (bound, then closed).
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/lookup", closed.local_addr().unwrap());
    drop(closed);
    let dir = temp_dir();
    let unreachable = Lookup { url, state: lookup.state.clone() };
    let second = gateway(dir.path(), &unreachable, "9s").await;
    assert_eq!(ask(&second, "?secret=vox-secret", OLDER).await, (200, fallback()));
    assert_eq!(second.metric("callgate_inbound_requests_total{source=\"vox\",outcome=\"failed\"}").await, 1.0);
}

#[tokio::test]
async fn a_source_without_an_inbound_lookup_answers_404() {
    crate::require_backend!();
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &base_config(dir.path())).await;
    let response = gateway.http.post(gateway.url("/v1/inbound/vox")).body(CURRENT).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_inbound");
    let response = gateway.http.post(gateway.url("/v1/inbound/nosuch")).body(CURRENT).send().await.unwrap();
    assert_eq!(response.status(), 404);
}
