//! The dashboard (`GET /ui` on the admin listener): its files served with strict headers and
//! without the token while the API behind it needs it; and the whole page end to end in
//! headless Chromium (`tests/ui/e2e.mjs`, Playwright): sign in, an event posted and seen in the
//! live tail, the delivery log and the event view, a dead letter replayed and seen delivered, a
//! test send, the quarantine, calls, and a refused token sending the operator back to the form.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "dash-b0ard-t0ken";

fn config(dir: &Path, receiver: &Receiver) -> String {
    base_config(dir)
        + &format!("\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
        + &format!("\n[routes.crm]\nurl = \"{}\"\n", receiver.url("/crm"))
        + &format!(
            "\n[routes.flaky]\nurl = \"{}\"\nsources = [\"oneinbox\"]\n[routes.flaky.retry]\nschedule = []\n",
            receiver.url("/flaky")
        )
}

/// A OneInbox `call.started`: one canonical event.
fn payload(call_id: &str) -> String {
    format!(
        r#"{{"event":"call.started","call_id":"{call_id}","agent_id":"agt_1","to_number":"+919876543210","from_number":"+15739693824","created_at":"2026-06-01T10:00:00Z"}}"#
    )
}

const ASSETS: [(&str, &str); 8] = [
    ("/ui", "text/html"),
    ("/ui/", "text/html"),
    ("/ui/style.css", "text/css"),
    ("/ui/icon.svg", "image/svg+xml"),
    ("/ui/app.js", "text/javascript"),
    ("/ui/api.js", "text/javascript"),
    ("/ui/views.js", "text/javascript"),
    ("/ui/tail.js", "text/javascript"),
];

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn assert_strict(response: &reqwest::Response, what: &str) {
    let csp = header(response, "content-security-policy");
    for part in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(csp.contains(part), "{what}: CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{what}: CSP allows something unsafe: {csp}");
    assert_eq!(header(response, "x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header(response, "referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header(response, "x-frame-options"), "DENY", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_with_strict_headers_without_the_token_while_its_api_needs_it() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver)).await;
    let http = &gateway.http;

    for (path, kind) in ASSETS {
        let response = http.get(gateway.ops_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(header(&response, "content-type").starts_with(kind), "{path}: {}", header(&response, "content-type"));
        assert_strict(&response, path);
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        let etag = header(&response, "etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{path}: etag {etag}");
        let body = response.text().await.unwrap();
        assert!(!body.is_empty() && !body.contains(TOKEN), "{path}");
        // Unchanged: 304, with the same headers and no body.
        let again = http.get(gateway.ops_url(path)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_strict(&again, path);
        assert_eq!(header(&again, "etag"), etag);
        assert!(again.text().await.unwrap().is_empty());
    }

    // The page runs no inline script: every script is a module file of its own.
    let index = http.get(gateway.ops_url("/ui")).send().await.unwrap().text().await.unwrap();
    assert!(index.contains(r#"<script type="module" src="/ui/app.js"></script>"#), "{index}");
    assert_eq!(index.matches("<script").count(), 1, "{index}");
    assert!(!index.contains(" style=") && !index.contains("<style"), "no inline style: {index}");

    // An unknown file is the JSON 404, as strict.
    let missing = http.get(gateway.ops_url("/ui/secret.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_strict(&missing, "404");
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    // Only on the admin listener, not where vendors post.
    let public = http.get(gateway.url("/ui")).send().await.unwrap();
    assert_eq!(public.status(), 404);

    // The API the page calls needs the token; the routes carry their recent delivery figures.
    let denied = http.get(gateway.ops_url("/v1/admin/routes")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    receiver.respond("/flaky", &[500]);
    let (status, _) = gateway.post("oneinbox", payload("ui_headers")).await;
    assert_eq!(status, 200);
    gateway.wait_metric("callgate_dead_letters{route=\"flaky\"}", 1.0).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"crm\",outcome=\"success\"}", 1.0).await;
    // A test send is left out of the figures.
    let tested = http.post(gateway.ops_url("/v1/admin/routes/crm/test")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(tested.status(), 200);
    let routes: Value =
        http.get(gateway.ops_url("/v1/admin/routes")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    let recent =
        |name: &str| routes["routes"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap()["recent"].clone();
    let crm = recent("crm");
    assert_eq!(
        (&crm["attempts"], &crm["successes"], &crm["success_rate"]),
        (&1.into(), &1.into(), &1.0.into()),
        "{crm}"
    );
    assert!(crm["p50_ms"].is_i64() && crm["p95_ms"].is_i64(), "{crm}");
    let flaky = recent("flaky");
    assert_eq!((&flaky["attempts"], &flaky["successes"], &flaky["success_rate"]), (&1.into(), &0.into(), &0.0.into()));
}

/// Where Chromium is: `CALLGATE_CHROMIUM`, else Debian's package.
fn chromium() -> PathBuf {
    std::env::var_os("CALLGATE_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn ui_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// Chromium, node and `tests/ui/node_modules` (`npm ci`, which `.ci/run` does): without one
/// the test says so and passes, and under `CI=true` it fails.
fn browser_ready() -> bool {
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = [
        (!chromium().exists()).then_some("chromium (CALLGATE_CHROMIUM or /usr/bin/chromium)"),
        (!node).then_some("node"),
        (!ui_dir().join("node_modules/playwright-core").exists()).then_some("tests/ui/node_modules (npm ci)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but the dashboard's browser test lacks {}", missing.join(", "));
    }
    eprintln!("dashboard browser test skipped: missing {}", missing.join(", "));
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_end_to_end_in_headless_chromium() {
    crate::require_backend!();
    if !browser_ready() {
        return;
    }
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path(), &receiver)).await;
    // The first delivery to `flaky` fails and, with no retry, is a dead letter; its replay
    // gets a 200; the second event's delivery fails too, and its replay gets the usual 200.
    receiver.respond("/flaky", &[500, 200, 500]);

    let backend = match backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots").join(backend);
    let _ = std::fs::remove_dir_all(&shots);
    let mut command = std::process::Command::new("node");
    command
        .arg(ui_dir().join("e2e.mjs"))
        .current_dir(ui_dir())
        .env("CALLGATE_UI_URL", gateway.ops_url("/ui"))
        .env("CALLGATE_ADMIN_TOKEN", TOKEN)
        .env("CALLGATE_INGEST_URL", gateway.url("/v1/ingest/oneinbox"))
        .env("CALLGATE_PAYLOAD", payload("ui_e2e_1"))
        .env("CALLGATE_PAYLOAD_2", payload("ui_e2e_2"))
        .env(
            "CALLGATE_BAD_PAYLOAD",
            r#"{"event":"<img src=x onerror=alert(1)>","call_id":"<script>alert(2)</script>"}"#,
        )
        .env("CALLGATE_SCREENSHOTS", &shots)
        .env("CALLGATE_CHROMIUM", chromium());
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\ngateway:\n{}",
        out.status,
        gateway.logs()
    );
    assert!(stdout.contains("dashboard end to end: ok"), "{stdout}");

    // What the page did reached the receiver: each event on both routes (on flaky twice: the
    // 500 and the replay), and the test send, marked as one.
    let flaky = receiver.answered("/flaky");
    assert_eq!(flaky.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [500, 200, 500, 200]);
    assert_eq!(flaky[0].0.json()["id"], flaky[1].0.json()["id"]);
    assert_eq!(flaky[2].0.json()["id"], flaky[3].0.json()["id"]);
    assert_ne!(flaky[0].0.json()["id"], flaky[2].0.json()["id"]);
    let crm = receiver.at("/crm");
    assert_eq!(crm.len(), 3, "the events and the test send");
    assert_eq!(crm[1].json()["type"], "call.ended");
    assert_eq!(crm[1].json()["data"]["test"], true);
    // The hostile payload stayed quarantined (its replay was rejected again).
    let rows = store_rows(dir.path(), "SELECT count(*) FROM quarantine");
    assert_eq!(rows, [["1"]]);
    // Every view was looked at.
    let taken = std::fs::read_dir(&shots).unwrap().count();
    assert!(taken >= 12, "{taken} screenshots in {}", shots.display());
}
