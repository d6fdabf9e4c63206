//! The admin API against its own OpenAPI document (`GET /v1/admin/openapi.json`): the
//! document as served (OpenAPI 3.1, the crate's version, behind the admin token like the rest
//! of the API, the same as `callgate openapi` prints), the bad requests schemathesis found
//! (each kept here as a regression), and schemathesis itself run against a live gateway with
//! routes, dead letters and the quarantine seeded: no 5xx, and every answer's status, content
//! type and body as documented.
//!
//! Schemathesis comes from `CALLGATE_SCHEMATHESIS`, the venv `.ci/run` installs it into
//! (`/var/tmp/callgate-venv`), or `PATH`. Without it the property run is skipped with a line,
//! and under `CI=true` it fails.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "openapi-admin-t0ken";

/// Where `.ci/run` installs the pinned schemathesis.
const VENV_SCHEMATHESIS: &str = "/var/tmp/callgate-venv/bin/schemathesis";

/// Seed of the property run: the same requests every run.
const SEED: &str = "20261202";

fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CALLGATE_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(VENV_SCHEMATHESIS);
    if venv.is_file() {
        return Some(venv);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("schemathesis")).find(|p| p.is_file())
}

/// A OneInbox `call.started` with a unique call id: one canonical event per body.
fn payload(call_id: &str) -> String {
    format!(
        r#"{{"event":"call.started","call_id":"{call_id}","agent_id":"agt_1","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
    )
}

/// Two routes (`crm` fails every event of a `dl_` call, so those end as dead letters after
/// two attempts; `archive` takes everything) and the admin token.
fn config(dir: &Path, receiver: &Receiver) -> String {
    base_config(dir)
        + &format!(
            "\n[admin]\ntoken = \"{TOKEN}\"\n\n[routes.crm]\nurl = \"{}\"\n[routes.crm.retry]\nschedule = [\"10ms\"]\n\n[routes.archive]\nurl = \"{}\"\n",
            receiver.url("/crm"),
            receiver.url("/archive")
        )
}

async fn admin(gateway: &Gateway, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = gateway.http.request(method, gateway.ops_url(path)).bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A gateway with dead letters (4 on `crm`), a paused route (`archive`) and two quarantined
/// payloads (one not JSON, one violating its schema).
async fn seeded(dir: &Path, receiver: &Receiver) -> Gateway {
    receiver.fail_bodies_containing("dl_", 500);
    let gateway = Gateway::start(dir, &config(dir, receiver)).await;
    for call in ["dl_1", "dl_2", "dl_3", "dl_4", "ok_1"] {
        let (status, body) = gateway.post("oneinbox", payload(call)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = gateway.post("oneinbox", "{not json").await;
    assert_eq!(status, 400);
    let (status, _) = gateway.post("oneinbox", r#"{"event":"call.started"}"#).await;
    assert_eq!(status, 422);
    gateway.wait_metric("callgate_dead_letters{route=\"crm\"}", 4.0).await;
    let (status, body) = admin(&gateway, reqwest::Method::POST, "/v1/admin/routes/archive/pause").await;
    assert_eq!(status, 200, "{body}");
    gateway
}

#[tokio::test]
async fn the_document_is_served_behind_the_token_and_matches_the_cli() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver)).await;

    let response = gateway.http.get(gateway.ops_url("/v1/admin/openapi.json")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    for path in ["/v1/admin/routes", "/v1/admin/dead-letters/{id}", "/v1/admin/quarantine/replay"] {
        assert!(served["paths"][path].is_object(), "{path} is documented");
    }

    // Like every admin call: 401 without the token.
    let response = gateway.http.get(gateway.ops_url("/v1/admin/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    // `callgate openapi` prints the same document, without a running gateway.
    let out = Command::new(binary()).arg("openapi").env_remove("CALLGATE_CONFIG").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, served);
}

#[tokio::test]
async fn without_an_admin_token_the_document_is_off_too() {
    crate::require_backend!();
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &base_config(dir.path())).await;
    let response = gateway.http.get(gateway.ops_url("/v1/admin/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "admin_disabled");
}

/// What schemathesis found, each a clear 400 naming the parameter now: a name filter with a
/// NUL (PostgreSQL refused it: 503), a `since` further back than the clock goes (wrapped
/// around into a wrong time: 200), and an id past `i64`.
#[tokio::test]
async fn out_of_range_parameters_are_bad_requests() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver)).await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let delete = reqwest::Method::DELETE;
    for (method, path, named) in [
        // Text that reaches the store on the delivery log, event, drift, backlog and call
        // endpoints: a NUL is refused before it (as the quarantine filter's was).
        (&get, "/v1/admin/routes/a%00b/deliveries", "route"),
        (&get, "/v1/admin/routes/crm/deliveries?subject=vox%3Aa%00", "subject"),
        (&get, "/v1/admin/routes/crm/deliveries?outcome=maybe", "outcome"),
        (&get, "/v1/admin/routes/crm/deliveries?limit=-1", "limit"),
        (&delete, "/v1/admin/routes/a%00b/backlog", "route"),
        (&get, "/v1/admin/events/ce_%00", "id"),
        (&get, "/v1/admin/drift?source=a%00", "source"),
        (&get, "/v1/admin/drift?route=crm", "route"),
        (&get, "/v1/calls?source=%00", "source"),
        (&get, "/v1/calls?status=ringing", "status"),
        (&get, "/v1/calls/vox%3Aa%00b", "subject"),
        (&post, "/v1/admin/routes/crm/test?type=call.nope", "call.nope"),
        (&get, "/v1/admin/quarantine?source=%00", "source"),
        (&get, "/v1/admin/dead-letters?route=a%00b", "route"),
        (&get, "/v1/admin/dead-letters?route=", "route"),
        (&post, "/v1/admin/quarantine/replay?source=a%20b", "source"),
        (&post, "/v1/admin/dead-letters/replay?route=%C3%A9", "route"),
        (&get, "/v1/admin/dead-letters?since=100000000000y", "since"),
        (&get, "/v1/admin/quarantine?since=18446744073709551615s", "since"),
        (&post, "/v1/admin/quarantine/replay?since=99999999999999d", "since"),
        (&get, "/v1/admin/dead-letters?limit=-1", "limit"),
        (&get, "/v1/admin/dead-letters/99999999999999999999", "99999999999999999999"),
        (&post, "/v1/admin/quarantine/9223372036854775808/replay", "9223372036854775808"),
        (&delete, "/v1/admin/calls/vox%3Aa%00b", "subject"),
        (&post, "/v1/admin/erase", "number"),
    ] {
        let (status, body) = admin(&gateway, method.clone(), path).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{method} {path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{method} {path}: {message}");
    }
    // The ends of the range are fine: nothing found.
    for path in ["/v1/admin/dead-letters/-9223372036854775808", "/v1/admin/quarantine/9223372036854775807"] {
        let (status, body) = admin(&gateway, get.clone(), path).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{path}: {body}");
    }
    let (status, body) =
        admin(&gateway, get.clone(), "/v1/admin/dead-letters?before_id=-9223372036854775808&limit=0").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dead_letters"], serde_json::json!([]));
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    crate::require_backend!();
    let Some(schemathesis) = schemathesis() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but schemathesis is missing (.ci/run installs it into /var/tmp/callgate-venv)");
        }
        eprintln!("schemathesis run skipped: not found (set CALLGATE_SCHEMATHESIS, or run .ci/run once)");
        return;
    };
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = seeded(dir.path(), &receiver).await;

    let url = gateway.ops_url("/v1/admin/openapi.json");
    let work = dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&schemathesis)
            .args(["run", &url])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth,unsupported_method",
            ])
            // The examples phase (the documented route name reaches pause and resume) is off
            // unless named.
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            // The live tail (text/event-stream) answers a stream that ends only when the
            // gateway stops: every request would wait for the timeout, and there is no body
            // to check against a schema. It stays in the document; tests/it/tail.rs tests it.
            .args(["--exclude-operation-id", "stream"])
            .args(["--seed", SEED, "--max-examples", "100", "--workers", "1"])
            // Hypothesis's speed checks are not what this test is about (a loaded CI machine).
            .args(["--suppress-health-check", "all", "--request-timeout", "20"])
            // Its example database (`.hypothesis/`) goes with the test's directory.
            .current_dir(&work)
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("running schemathesis: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}\n--- gateway log ---\n{}",
        gateway.logs()
    );
    // The summary, for the test's log.
    eprintln!("{}", stdout.split("SUMMARY").last().unwrap_or_default().trim());
    // It did test the operations (not a run that loaded nothing).
    assert!(stdout.contains("Open API 3.1"), "{stdout}");
    // Every operation but the document itself (schemathesis leaves out the one it loaded) and
    // the excluded live tail.
    let document: Value = serde_json::from_str(callgate::admin::openapi_json()).unwrap();
    let operations: usize =
        document["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
    let tested = stdout.split("Tested: ").nth(1).and_then(|rest| rest.split_whitespace().next()?.parse::<usize>().ok());
    assert_eq!(tested, Some(operations - 2), "{stdout}");
    assert!(!gateway.logs().contains("panicked"), "{}", gateway.logs());
}

/// Real answers of the endpoints whose ids schemathesis cannot guess (a call's subject, an
/// event id, a route's log), and of the other new ones, validated against the schema the
/// document gives for them: the document describes what the handlers really send.
#[tokio::test]
async fn real_answers_match_their_documented_schemas() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = seeded(dir.path(), &receiver).await;
    let document: Value = serde_json::from_str(callgate::admin::openapi_json()).unwrap();
    let (status, listed) = admin(&gateway, reqwest::Method::GET, "/v1/calls").await;
    assert_eq!(status, 200, "{listed}");
    let subject = listed["calls"][0]["subject"].as_str().expect("a call is listed").to_owned();
    let (status, call) = admin(&gateway, reqwest::Method::GET, &format!("/v1/calls/{subject}")).await;
    assert_eq!(status, 200, "{call}");
    let event_id = call["events"][0]["id"].as_str().expect("the call has an event").to_owned();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let delete = reqwest::Method::DELETE;
    let cases = [
        (&get, "/v1/calls".to_owned(), "/v1/calls", 200),
        (&get, format!("/v1/calls/{subject}"), "/v1/calls/{subject}", 200),
        (&get, format!("/v1/admin/events/{event_id}"), "/v1/admin/events/{id}", 200),
        (&get, "/v1/admin/routes/crm/deliveries".to_owned(), "/v1/admin/routes/{name}/deliveries", 200),
        (&post, "/v1/admin/routes/archive/test?type=call.ended".to_owned(), "/v1/admin/routes/{name}/test", 200),
        (&get, "/v1/admin/routes/crm/deliveries?test=true".to_owned(), "/v1/admin/routes/{name}/deliveries", 200),
        (&get, "/v1/admin/drift".to_owned(), "/v1/admin/drift", 200),
        (&get, "/v1/admin/routes".to_owned(), "/v1/admin/routes", 200),
        (&post, "/v1/admin/reload".to_owned(), "/v1/admin/reload", 200),
        (&post, "/v1/admin/stream/tickets".to_owned(), "/v1/admin/stream/tickets", 201),
        (&delete, "/v1/admin/routes/gone/backlog".to_owned(), "/v1/admin/routes/{name}/backlog", 200),
        (&delete, "/v1/admin/routes/crm/backlog".to_owned(), "/v1/admin/routes/{name}/backlog", 409),
        (&get, "/v1/calls/nobody%3Anothing".to_owned(), "/v1/calls/{subject}", 404),
    ];
    for (method, path, template, expected) in cases {
        let (status, body) = admin(&gateway, method.clone(), &path).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_documented(method.as_str(), template, status, &body);
    }
    // The record really is typed (not a bare object): a field of the wrong type fails.
    let mut wrong = call.clone();
    wrong["record"]["phase"] = Value::from(7);
    assert!(!answer_schema(&document, "GET", "/v1/calls/{subject}", 200).is_valid(&wrong));
}

/// The validator of the JSON schema the admin API's document gives for an answer.
fn answer_schema(document: &Value, method: &str, template: &str, status: u16) -> jsonschema::Validator {
    let operation = &document["paths"][template][method.to_lowercase()];
    let mut schema = operation["responses"][status.to_string()]["content"]["application/json"]["schema"].clone();
    assert!(schema.is_object(), "{method} {template} documents no {status} schema");
    // The schema's `$ref`s point into the document's components.
    schema["components"] = document["components"].clone();
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{template}: {e}"))
}

/// Fails unless `body` matches what the admin API's OpenAPI document says `method template`
/// answers with `status` (other modules' tests check their real answers with it too).
pub fn assert_documented(method: &str, template: &str, status: u16, body: &Value) {
    let document: Value = serde_json::from_str(callgate::admin::openapi_json()).unwrap();
    let validator = answer_schema(&document, method, template, status);
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {template} {status} does not match its schema: {errors:?}\n{body}");
}
