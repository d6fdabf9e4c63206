//! `callgate vendors register|list|update|unregister` against local fakes of the vendors'
//! documented webhook APIs: OneInbox `POST/GET/PATCH/DELETE /v1/webhooks` and Utel
//! `GET`/`PUT /integration/webhook`, whose `PUT` replaces every webhook of the account.

use std::{
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, patch},
};
use serde_json::{Value, json};

use crate::support::{binary, temp_dir};

const ONEINBOX_KEY: &str = "oi_sk_test_key";
const UTEL_TOKEN: &str = "1|utel-test-token";
const QUERY_SECRET: &str = "q-s3cr3t";

/// What a fake vendor API holds and was asked.
#[derive(Clone, Default)]
struct Fake {
    webhooks: Arc<Mutex<Vec<Value>>>,
    calls: Arc<Mutex<Vec<(Method, String, Value)>>>,
    /// Utel only: the PUT drops the first webhook (a vendor-side loss the CLI must notice).
    lossy: Arc<Mutex<bool>>,
    /// Utel only: the PUT is applied, then answered 502 (a gateway in front of Utel timing out).
    put_fails: Arc<Mutex<bool>>,
    /// Utel only: the GET answers more than callgate reads (a misbehaving API or proxy).
    huge: Arc<Mutex<bool>>,
    next_id: Arc<Mutex<u32>>,
}

impl Fake {
    fn webhooks(&self) -> Vec<Value> {
        self.webhooks.lock().unwrap().clone()
    }

    fn calls(&self) -> Vec<(Method, String, Value)> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, method: Method, path: &str, body: &Value) {
        self.calls.lock().unwrap().push((method, path.to_owned(), body.clone()));
    }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers.get("authorization").is_some_and(|v| v == format!("Bearer {token}").as_str())
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": {"message": "invalid API key"}}))).into_response()
}

// --- OneInbox, as its webhook guide and API reference document it -------------------------

async fn oneinbox_list(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if !authorized(&headers, ONEINBOX_KEY) {
        return unauthorized();
    }
    fake.record(Method::GET, "/v1/webhooks", &Value::Null);
    Json(json!({"data": fake.webhooks()})).into_response()
}

async fn oneinbox_create(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers, ONEINBOX_KEY) {
        return unauthorized();
    }
    fake.record(Method::POST, "/v1/webhooks", &body);
    let name_ok = body["name"].as_str().is_some_and(|n| (1..=255).contains(&n.len()));
    let events_ok = body["events"].as_array().is_some_and(|e| (1..=20).contains(&e.len()));
    if !name_ok || !body["url"].is_string() || !events_ok {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": {"message": "invalid webhook"}})))
            .into_response();
    }
    let id = {
        let mut next = fake.next_id.lock().unwrap();
        *next += 1;
        format!("wh_{}", *next)
    };
    let webhook = json!({
        "id": id, "name": body["name"], "url": body["url"], "events": body["events"],
        "secret": "whsec_vendor_side", "status": "active",
        "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:00:00Z",
    });
    fake.webhooks.lock().unwrap().push(webhook.clone());
    (StatusCode::CREATED, Json(webhook)).into_response()
}

async fn oneinbox_update(
    State(fake): State<Fake>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, ONEINBOX_KEY) {
        return unauthorized();
    }
    fake.record(Method::PATCH, &format!("/v1/webhooks/{id}"), &body);
    let mut webhooks = fake.webhooks.lock().unwrap();
    let Some(webhook) = webhooks.iter_mut().find(|w| w["id"] == id) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"message": "no such webhook"}}))).into_response();
    };
    for key in ["name", "url", "events", "status"] {
        if let Some(value) = body.get(key) {
            webhook[key] = value.clone();
        }
    }
    Json(webhook.clone()).into_response()
}

async fn oneinbox_delete(State(fake): State<Fake>, UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Response {
    if !authorized(&headers, ONEINBOX_KEY) {
        return unauthorized();
    }
    fake.record(Method::DELETE, &format!("/v1/webhooks/{id}"), &Value::Null);
    let mut webhooks = fake.webhooks.lock().unwrap();
    let before = webhooks.len();
    webhooks.retain(|w| w["id"] != id);
    if webhooks.len() == before {
        StatusCode::NOT_FOUND.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

// --- Utel, as udocs.utel.uz/modules/webhooks.html documents it ----------------------------

const UTEL_FLAGS: [&str; 7] =
    ["call_started", "call_ended", "dial_started", "dial_answered", "dial_ended", "call_transferred", "call_saved"];

async fn utel_get(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if !authorized(&headers, UTEL_TOKEN) {
        return unauthorized();
    }
    fake.record(Method::GET, "/integration/webhook", &Value::Null);
    let mut result = fake.webhooks();
    if *fake.huge.lock().unwrap() {
        let padding = "x".repeat(callgate::vendor_client::MAX_ANSWER_BYTES);
        result.push(utel_webhook(&format!("https://big.example/{padding}"), &[]));
    }
    Json(json!({"status": "success", "code": 200, "result": result, "message": "Ok"})).into_response()
}

/// Replaces the whole list with the one sent, as Utel's documentation warns.
async fn utel_put(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers, UTEL_TOKEN) {
        return unauthorized();
    }
    fake.record(Method::PUT, "/integration/webhook", &body);
    let Some(list) = body.as_array() else {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"status": "error", "message": "array expected"})))
            .into_response();
    };
    let complete = list.iter().all(|w| w["url"].is_string() && UTEL_FLAGS.iter().all(|f| w[*f].is_boolean()));
    if !complete {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"status": "error", "message": "every field is required"})),
        )
            .into_response();
    }
    let mut list = list.clone();
    if *fake.lossy.lock().unwrap() && !list.is_empty() {
        list.remove(0);
    }
    *fake.webhooks.lock().unwrap() = list.clone();
    if *fake.put_fails.lock().unwrap() {
        return (StatusCode::BAD_GATEWAY, Json(json!({"status": "error", "message": "upstream timed out"})))
            .into_response();
    }
    Json(json!({"status": "success", "code": 200, "result": list, "message": "Ok"})).into_response()
}

/// Starts a fake; returns its base URL.
async fn start(fake: &Fake) -> String {
    let app = Router::new()
        .route("/v1/webhooks", get(oneinbox_list).post(oneinbox_create))
        .route("/v1/webhooks/{id}", patch(oneinbox_update).delete(oneinbox_delete))
        .route("/integration/webhook", get(utel_get).put(utel_put))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[sources.oneinbox]
vendor = "oneinbox"
auth = {{ type = "query", name = "secret", value = "{QUERY_SECRET}" }}

[sources.utel]
vendor = "utel"
auth = {{ type = "query", name = "secret", value = "{QUERY_SECRET}" }}

[sources.salpre]
vendor = "salpre"
auth = {{ type = "header", name = "X-Salpre-Key", value = "salpre-s3cr3t" }}

[sources.vox]
vendor = "vox"
auth = {{ type = "query", name = "secret", value = "{QUERY_SECRET}" }}

[sources.vox.inbound]
url = "http://127.0.0.1:9/lookup"

[sources.retell]
vendor = "retell"
auth = {{ type = "retell", api_key = "key_r3t3ll" }}
"#
        ),
    )
    .unwrap();
    path
}

/// Runs `callgate vendors …` (off the runtime, which serves the fakes) and returns
/// (exit code, stdout, stderr).
async fn vendors(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command.arg("vendors").arg("--config").arg(config).args(args);
    for name in ["CALLGATE_CONFIG", "ONEINBOX_API_KEY", "ONEINBOX_API_URL", "UTEL_API_TOKEN", "UTEL_API_URL"] {
        command.env_remove(name);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn utel_webhook(url: &str, on: &[&str]) -> Value {
    let mut webhook = json!({"url": url});
    for flag in UTEL_FLAGS {
        webhook[flag] = json!(on.contains(&flag));
    }
    webhook
}

#[tokio::test]
async fn utel_registration_keeps_every_existing_webhook_through_the_replace_all_put() {
    let dir = temp_dir();
    let config = write_config(dir.path());
    let fake = Fake::default();
    let crm = utel_webhook("https://myapp.com/webhook/calls", &["call_started", "call_ended", "call_saved"]);
    let mut bot = utel_webhook("https://bot.example/utel?token=theirs", &["dial_answered"]);
    bot["id"] = json!(7); // a field callgate does not know must survive too
    *fake.webhooks.lock().unwrap() = vec![crm.clone(), bot.clone()];
    let base = start(&fake).await;
    let env = [("UTEL_API_URL", base.as_str()), ("UTEL_API_TOKEN", UTEL_TOKEN)];

    let (code, out, err) = vendors(
        &config,
        &["register", "utel", "--public-url", "https://hooks.example", "--events", "call_started,call_ended"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let ours_url = format!("https://hooks.example/v1/ingest/utel?secret={QUERY_SECRET}");
    assert_eq!(
        fake.webhooks(),
        vec![crm.clone(), bot.clone(), utel_webhook(&ours_url, &["call_started", "call_ended"])],
        "both existing webhooks are kept exactly, callgate's is added"
    );
    assert!(out.contains("Utel webhook added") && out.contains("kept the other 2"), "{out}");
    assert!(!out.contains(QUERY_SECRET) && !err.contains(QUERY_SECRET), "the query secret is printed:\n{out}{err}");
    assert!(!out.contains(UTEL_TOKEN) && !err.contains(UTEL_TOKEN));
    let methods: Vec<Method> = fake.calls().into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(methods, [Method::GET, Method::PUT, Method::GET], "read, replace, read back");

    // Again with other events and a new public URL: callgate's entry changes, in place.
    let (code, out, err) =
        vendors(&config, &["register", "utel", "--public-url", "https://new.example/", "--events", "call_saved"], &env)
            .await;
    assert_eq!(code, 0, "{err}");
    let new_url = format!("https://new.example/v1/ingest/utel?secret={QUERY_SECRET}");
    assert_eq!(fake.webhooks(), vec![crm.clone(), bot.clone(), utel_webhook(&new_url, &["call_saved"])]);
    assert!(out.contains("Utel webhook updated"), "{out}");

    // `update` without --events keeps the current ones.
    let (code, _, err) = vendors(&config, &["update", "utel", "--public-url", "https://hooks.example"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.webhooks()[2], utel_webhook(&ours_url, &["call_saved"]));

    let (code, out, err) = vendors(&config, &["list", "utel"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("https://myapp.com/webhook/calls") && out.contains("yes"), "{out}");
    assert!(out.contains("token=REDACTED") && !out.contains("theirs"), "query values are hidden:\n{out}");

    let (code, out, err) = vendors(&config, &["unregister", "utel"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.webhooks(), vec![crm, bot], "only callgate's webhook is removed");
    assert!(out.contains("removed"), "{out}");
}

#[tokio::test]
async fn a_utel_put_that_loses_a_webhook_is_reported_with_the_list_to_restore() {
    let dir = temp_dir();
    let config = write_config(dir.path());
    let fake = Fake::default();
    let crm = utel_webhook("https://myapp.com/webhook/calls", &["call_ended"]);
    *fake.webhooks.lock().unwrap() = vec![crm];
    *fake.lossy.lock().unwrap() = true;
    let base = start(&fake).await;
    let env = [("UTEL_API_URL", base.as_str()), ("UTEL_API_TOKEN", UTEL_TOKEN)];
    let (code, _, err) = vendors(&config, &["register", "utel", "--public-url", "https://hooks.example"], &env).await;
    assert_eq!(code, 1);
    assert!(err.contains("no longer lists 1 of the other webhooks"), "{err}");
    assert!(err.contains("https://myapp.com/webhook/calls"), "the list before is printed to restore it:\n{err}");
}

/// A PUT that fails may still have been applied: callgate reads the list back and, when a
/// webhook is gone, prints the list to restore; when none is, it says so.
#[tokio::test]
async fn a_failed_utel_put_is_checked_and_reported_with_the_list_to_restore() {
    let dir = temp_dir();
    let config = write_config(dir.path());
    let fake = Fake::default();
    let crm = utel_webhook("https://myapp.com/webhook/calls", &["call_ended"]);
    *fake.webhooks.lock().unwrap() = vec![crm.clone()];
    *fake.put_fails.lock().unwrap() = true;
    let base = start(&fake).await;
    let env = [("UTEL_API_URL", base.as_str()), ("UTEL_API_TOKEN", UTEL_TOKEN)];

    let (code, _, err) = vendors(&config, &["register", "utel", "--public-url", "https://hooks.example"], &env).await;
    assert_eq!(code, 1);
    assert!(err.contains("502") && err.contains("the other 1 webhook(s) of the account are still listed"), "{err}");
    let methods: Vec<Method> = fake.calls().into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(methods, [Method::GET, Method::PUT, Method::GET], "read back after the failed PUT");

    *fake.webhooks.lock().unwrap() = vec![crm];
    *fake.lossy.lock().unwrap() = true;
    let (code, _, err) = vendors(&config, &["register", "utel", "--public-url", "https://hooks.example"], &env).await;
    assert_eq!(code, 1);
    assert!(err.contains("502") && err.contains("no longer lists every other webhook"), "{err}");
    assert!(err.contains("https://myapp.com/webhook/calls"), "the list before is printed to restore it:\n{err}");
}

/// A vendor answer larger than callgate reads fails before anything is written.
#[tokio::test]
async fn an_oversized_vendor_answer_fails_before_any_change() {
    let dir = temp_dir();
    let config = write_config(dir.path());
    let fake = Fake::default();
    *fake.huge.lock().unwrap() = true;
    let base = start(&fake).await;
    let env = [("UTEL_API_URL", base.as_str()), ("UTEL_API_TOKEN", UTEL_TOKEN)];
    let (code, _, err) = vendors(&config, &["register", "utel", "--public-url", "https://hooks.example"], &env).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("larger than"), "{err}");
    assert!(err.len() < 1000, "the answer is not repeated: {} bytes", err.len());
    let methods: Vec<Method> = fake.calls().into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(methods, [Method::GET], "no PUT after an unreadable list");
}

#[tokio::test]
async fn oneinbox_webhooks_are_created_listed_updated_and_removed_through_its_api() {
    let dir = temp_dir();
    let config = write_config(dir.path());
    let fake = Fake::default();
    let theirs = json!({"id": "wh_theirs", "name": "CRM", "url": "https://crm.example/hook", "events": ["call.ended"], "status": "active"});
    *fake.webhooks.lock().unwrap() = vec![theirs.clone()];
    let base = start(&fake).await;
    let env = [("ONEINBOX_API_URL", base.as_str()), ("ONEINBOX_API_KEY", ONEINBOX_KEY)];

    let (code, out, err) =
        vendors(&config, &["register", "oneinbox", "--public-url", "https://hooks.example"], &env).await;
    assert_eq!(code, 0, "{err}");
    let ours_url = format!("https://hooks.example/v1/ingest/oneinbox?secret={QUERY_SECRET}");
    let created = fake.calls().into_iter().find(|(m, _, _)| m == Method::POST).expect("a POST /v1/webhooks").2;
    assert_eq!(created["url"], ours_url.as_str());
    assert_eq!(created["name"], "callgate oneinbox");
    assert_eq!(created["events"].as_array().unwrap().len(), 7, "every documented event by default");
    assert!(out.contains("created") && out.contains("wh_1"), "{out}");
    assert!(!out.contains("whsec_vendor_side") && !out.contains(QUERY_SECRET), "{out}");

    // Registering again updates the same webhook rather than adding a second.
    let (code, out, err) = vendors(
        &config,
        &["register", "oneinbox", "--public-url", "https://hooks.example", "--events", "call.ended"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.webhooks().len(), 2);
    assert!(out.contains("updated"), "{out}");
    assert_eq!(fake.webhooks()[1]["events"], json!(["call.ended"]));

    let (code, _, err) = vendors(
        &config,
        &[
            "update",
            "oneinbox",
            "--public-url",
            "https://other.example",
            "--events",
            "call.started",
            "--events",
            "call.ended",
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let patch = fake.calls().into_iter().rfind(|(m, _, _)| m == Method::PATCH).unwrap();
    assert_eq!(patch.1, "/v1/webhooks/wh_1");
    assert_eq!(patch.2["events"], json!(["call.started", "call.ended"]));
    assert_eq!(
        fake.webhooks()[1]["url"],
        format!("https://other.example/v1/ingest/oneinbox?secret={QUERY_SECRET}").as_str()
    );

    let (code, out, _) = vendors(&config, &["list", "oneinbox"], &env).await;
    assert_eq!(code, 0);
    assert!(out.contains("wh_theirs") && out.contains("wh_1") && out.contains("yes"), "{out}");

    let (code, _, err) =
        vendors(&config, &["register", "oneinbox", "--public-url", "https://h.example", "--events", "call.nope"], &env)
            .await;
    assert_eq!(code, 1);
    assert!(err.contains("not a oneinbox event"), "{err}");

    let (code, _, err) = vendors(&config, &["unregister", "oneinbox"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.webhooks(), vec![theirs], "only callgate's webhook is deleted");
}

#[tokio::test]
async fn the_api_key_comes_from_the_environment_only() {
    let dir = temp_dir();
    let config = write_config(dir.path());
    let fake = Fake::default();
    let base = start(&fake).await;
    let (code, _, err) = vendors(
        &config,
        &["register", "oneinbox", "--public-url", "https://h.example"],
        &[("ONEINBOX_API_URL", &base)],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("ONEINBOX_API_KEY") && err.contains("environment"), "{err}");
    let (code, _, err) = vendors(
        &config,
        &["register", "oneinbox", "--public-url", "https://h.example", "--api-key", ONEINBOX_KEY],
        &[("ONEINBOX_API_URL", &base)],
    )
    .await;
    assert_eq!(code, 2, "there is no flag for the key: {err}");
    let (code, _, err) = vendors(&config, &["list", "utel"], &[("UTEL_API_TOKEN", UTEL_TOKEN)]).await;
    assert_eq!(code, 1);
    assert!(err.contains("UTEL_API_URL"), "Utel has no default API host: {err}");
    // A wrong key is the vendor's 401, named.
    let (code, _, err) =
        vendors(&config, &["list", "oneinbox"], &[("ONEINBOX_API_URL", &base), ("ONEINBOX_API_KEY", "wrong")]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("invalid API key") && !err.contains("wrong"), "{err}");
    assert!(fake.calls().is_empty(), "the fake saw a call it should have refused: {:?}", fake.calls());
}

#[tokio::test]
async fn salpre_vox_and_retell_get_the_exact_console_steps() {
    let dir = temp_dir();
    let config = write_config(dir.path());
    let (code, out, err) =
        vendors(&config, &["register", "salpre", "--public-url", "https://hooks.example"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Settings > Integrations > Custom Webhook"), "{out}");
    assert!(out.contains("Webhook URL: https://hooks.example/v1/ingest/salpre"), "{out}");
    assert!(out.contains("X-Salpre-Key: <secret") && !out.contains("salpre-s3cr3t"), "{out}");
    assert!(out.contains("call_initiated, call_ringing, call_answered, transcript, call_ended, error"), "{out}");
    let (_, out, _) =
        vendors(&config, &["register", "salpre", "--public-url", "https://hooks.example", "--show-secrets"], &[]).await;
    assert!(out.contains("X-Salpre-Key: salpre-s3cr3t"), "{out}");

    let (code, out, err) = vendors(&config, &["register", "vox", "--public-url", "https://hooks.example"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Call data webhook URL: https://hooks.example/v1/ingest/vox?secret=REDACTED"), "{out}");
    assert!(out.contains("Inbound webhook URL: https://hooks.example/v1/inbound/vox?secret=REDACTED"), "{out}");

    let (code, out, err) = vendors(
        &config,
        &["register", "retell", "--public-url", "https://hooks.example", "--events", "call_ended,call_analyzed"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Webhook URL https://hooks.example/v1/ingest/retell "), "{out}");
    assert!(out.contains("Events: call_ended, call_analyzed."), "{out}");
    assert!(out.contains("API key that has the webhook badge") && !out.contains("key_r3t3ll"), "{out}");
    let (code, _, err) =
        vendors(&config, &["register", "retell", "--public-url", "https://hooks.example", "--events", "mid_call"], &[])
            .await;
    assert_ne!(code, 0);
    assert!(err.contains("`mid_call` is not a retell event"), "{err}");
}
