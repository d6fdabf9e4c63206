//! End to end: the real binary over HTTP on loopback, with a recording receiver.

use std::collections::HashMap;

use serde_json::Value;

use crate::support::*;

fn route(name: &str, url: &str, extra: &str) -> String {
    format!("\n[routes.{name}]\nurl = \"{url}\"\n{extra}\n")
}

/// Every fixture (documented examples and variants, all vendors) posted to its source
/// arrives downstream as exactly its golden canonical events, with the contract's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_arrives_downstream_as_its_golden_events() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let config = base_config(dir.path()) + &route("all", &receiver.url("/all"), "include_test = true");
    let gateway = Gateway::start(dir.path(), &config).await;

    let mut expected_by_id: HashMap<String, Value> = HashMap::new();
    for (vendor, path) in crate::golden::fixtures() {
        let relative =
            path.strip_prefix(path.parent().unwrap().parent().unwrap()).unwrap().to_string_lossy().into_owned();
        let expected = expected(&relative);
        let (status, body) = gateway.post(vendor.as_str(), fixture(&relative)).await;
        assert_eq!(status, 200, "{relative}: {body}");
        let ids: Vec<&str> = expected.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let got: Vec<&str> = body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(got, ids, "{relative}: ids in the 200 answer");
        assert_eq!(body["accepted"], ids.len(), "{relative}");
        for event in expected {
            expected_by_id.insert(event["id"].as_str().unwrap().to_owned(), event);
        }
    }

    let received = receiver.wait_for("/all", expected_by_id.len()).await;
    gateway.wait_metric("callgate_delivery_backlog{route=\"all\"}", 0.0).await;
    assert_eq!(receiver.at("/all").len(), expected_by_id.len(), "each event delivered once");
    for request in received {
        assert_eq!(request.header("content-type").as_deref(), Some("application/cloudevents+json"));
        assert_eq!(request.header("user-agent"), Some(format!("callgate/{}", env!("CARGO_PKG_VERSION"))));
        let event = request.json();
        let id = event["id"].as_str().unwrap();
        let want = expected_by_id.get(id).unwrap_or_else(|| panic!("unexpected event {id}"));
        assert_eq!(without_received_at(event.clone()), without_received_at(want.clone()), "event {id}");
        let received_at = event["data"]["received_at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(received_at).is_ok(), "{received_at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_filter_by_type_source_and_test_flag() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &route("calls", &receiver.url("/calls"), "events = [\"call.*\"]\nsources = [\"vox\"]")
        + &route("transcripts", &receiver.url("/transcripts"), "events = [\"transcript.*\"]")
        + &route("no_tests", &receiver.url("/no_tests"), "sources = [\"salpre\"]")
        + &route("with_tests", &receiver.url("/with_tests"), "sources = [\"salpre\"]\ninclude_test = true")
        + &route("exact", &receiver.url("/exact"), "events = [\"call.ended\", \"sms.received\"]")
        + &route("off", &receiver.url("/off"), "enabled = false");
    let gateway = Gateway::start(dir.path(), &config).await;

    for (source, path) in [
        ("vox", "vox/doc-call_ended.json"), // call.ended, transcript.final, call.recording.ready, call.analyzed
        ("oneinbox", "oneinbox/doc-transcript.final.json"), // transcript.final
        ("salpre", "salpre/doc-call_initiated.json"), // call.initiated, a test event
        ("salpre", "salpre/var-transcript-turkish.json"), // transcript.segment, not a test
    ] {
        let (status, body) = gateway.post(source, fixture(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for route in ["calls", "transcripts", "no_tests", "with_tests", "exact"] {
        gateway.wait_metric(&format!("callgate_delivery_backlog{{route=\"{route}\"}}"), 0.0).await;
    }
    let types = |path: &str| -> Vec<String> {
        let mut t: Vec<String> =
            receiver.at(path).iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
        t.sort();
        t
    };
    assert_eq!(types("/calls"), ["call.analyzed", "call.ended", "call.recording.ready"]);
    assert_eq!(types("/transcripts"), ["transcript.final", "transcript.final", "transcript.segment"]);
    assert_eq!(types("/no_tests"), ["transcript.segment"]);
    assert_eq!(types("/with_tests"), ["call.initiated", "transcript.segment"]);
    assert_eq!(types("/exact"), ["call.ended"]);
    assert!(receiver.at("/off").is_empty(), "a disabled route receives nothing");
    let sources: Vec<String> =
        receiver.at("/calls").iter().map(|r| r.json()["data"]["source"].as_str().unwrap().to_owned()).collect();
    assert!(sources.iter().all(|s| s == "vox"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_headers_are_injected_with_env_and_event_substitution() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let headers = r#"headers = { Authorization = "Bearer ${IT_ROUTE_TOKEN}", X-Call-Id = "{{data.call_id}}", X-Type = "{{type}}", X-Campaign = "{{data.metadata.campaign}}", X-Missing = "{{data.no.such.field}}", X-Mixed = "{{data.vendor}}/{{subject}}/{{data.duration_ms}}", X-Static = "fixed" }"#;
    let config = base_config(dir.path()) + &route("crm", &receiver.url("/crm"), headers);
    let gateway = Gateway::start_with_env(dir.path(), &config, &[("IT_ROUTE_TOKEN", "tok-123")]).await;

    let (status, _) = gateway.post("vox", fixture("vox/doc-call_ended.json")).await;
    assert_eq!(status, 200);
    let requests = receiver.wait_for("/crm", 4).await;
    let ended = requests.iter().find(|r| r.json()["type"] == "call.ended").unwrap();
    assert_eq!(ended.header("authorization").as_deref(), Some("Bearer tok-123"));
    assert_eq!(ended.header("x-call-id").as_deref(), Some("6b0f1f08-1c2b-4f0e-9c3a-0c1d9e6f5a82"));
    assert_eq!(ended.header("x-type").as_deref(), Some("call.ended"));
    assert_eq!(ended.header("x-campaign").as_deref(), Some("봄_프로모션"));
    assert_eq!(ended.header("x-missing").as_deref(), Some(""));
    assert_eq!(ended.header("x-mixed").as_deref(), Some("vox/vox:6b0f1f08-1c2b-4f0e-9c3a-0c1d9e6f5a82/342000"));
    assert_eq!(ended.header("x-static").as_deref(), Some("fixed"));
    // Each event renders its own values.
    let analyzed = requests.iter().find(|r| r.json()["type"] == "call.analyzed").unwrap();
    assert_eq!(analyzed.header("x-type").as_deref(), Some("call.analyzed"));
    assert_eq!(analyzed.header("x-mixed").as_deref(), Some("vox/vox:6b0f1f08-1c2b-4f0e-9c3a-0c1d9e6f5a82/"));
    assert!(!gateway.logs().contains("tok-123"), "the secret header value is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_with_the_same_id_until_they_succeed() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.respond("/flaky", &[500, 503]);
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &route("flaky", &receiver.url("/flaky"), "[routes.flaky.retry]\nschedule = [\"50ms\", \"50ms\", \"50ms\"]");
    let gateway = Gateway::start(dir.path(), &config).await;

    let (status, body) = gateway.post("oneinbox", fixture("oneinbox/doc-call.analyzed.json")).await;
    assert_eq!(status, 200);
    let requests = receiver.wait_for("/flaky", 3).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"flaky\",outcome=\"success\"}", 1.0).await;
    assert_eq!(gateway.metric("callgate_deliveries_total{route=\"flaky\",outcome=\"retry\"}").await, 2.0);
    let ids: Vec<Value> = requests.iter().map(|r| r.json()["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == body["ids"][0]), "every attempt carries the same CloudEvents id: {ids:?}");
    gateway.wait_metric("callgate_delivery_backlog{route=\"flaky\"}", 0.0).await;
    assert_eq!(receiver.at("/flaky").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_deliveries_become_dead_letters() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.respond("/down", &[500, 502]);
    let dir = temp_dir();
    let config =
        base_config(dir.path()) + &route("down", &receiver.url("/down"), "[routes.down.retry]\nschedule = [\"20ms\"]");
    let gateway = Gateway::start(dir.path(), &config).await;

    let (status, _) = gateway.post("oneinbox", fixture("oneinbox/doc-call.analyzed.json")).await;
    assert_eq!(status, 200);
    // The counter moves just after the commit that moves the gauges: wait for the later one.
    gateway.wait_metric("callgate_deliveries_total{route=\"down\",outcome=\"dead_letter\"}", 1.0).await;
    assert_eq!(gateway.metric("callgate_dead_letters{route=\"down\"}").await, 1.0);
    assert_eq!(gateway.metric("callgate_delivery_backlog{route=\"down\"}").await, 0.0);
    assert_eq!(gateway.metric("callgate_deliveries_total{route=\"down\",outcome=\"retry\"}").await, 1.0);
    assert_eq!(receiver.at("/down").len(), 2, "one attempt plus one retry");
    gateway.wait_log("Delivery dead-lettered.").await;

    // Kept in the store with every attempt.
    let dead = store_rows(dir.path(), "SELECT route, attempts, last_error FROM dead_letters");
    assert_eq!(dead, [["down", "2", "HTTP 502"]]);
    let statuses = store_rows(dir.path(), "SELECT status FROM attempts ORDER BY attempt");
    assert_eq!(statuses, [["500"], ["502"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_route_never_delays_another() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.hold("/slow");
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &route("slow", &receiver.url("/slow"), "timeout = \"30s\"")
        + &route("fast", &receiver.url("/fast"), "");
    let gateway = Gateway::start(dir.path(), &config).await;

    for path in ["vox/doc-call_started.json", "salpre/var-transcript-turkish.json", "utel/synthetic-call_started.json"]
    {
        let source = path.split('/').next().unwrap();
        assert_eq!(gateway.post(source, fixture(path)).await.0, 200);
    }
    // All three reach the fast route while the slow route's requests are still held open.
    receiver.wait_for("/fast", 3).await;
    receiver.wait_for("/slow", 1).await;
    assert_eq!(gateway.metric("callgate_deliveries_total{route=\"slow\",outcome=\"success\"}").await, 0.0);
    receiver.release();
    gateway.wait_metric("callgate_deliveries_total{route=\"slow\",outcome=\"success\"}", 3.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_does_not_answer_in_time_is_retried_then_dead_lettered() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.hold("/mute");
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &route("mute", &receiver.url("/mute"), "timeout = \"200ms\"\n[routes.mute.retry]\nschedule = [\"20ms\"]");
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(gateway.post("vox", fixture("vox/doc-call_started.json")).await.0, 200);
    gateway.wait_metric("callgate_dead_letters{route=\"mute\"}", 1.0).await;
    assert_eq!(receiver.at("/mute").len(), 2);
    let last_error = store_rows(dir.path(), "SELECT last_error FROM dead_letters");
    assert_eq!(last_error, [["timed out after 200ms"]]);
    receiver.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_call_arrive_in_accepted_order_even_when_one_is_retried() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.respond("/crm", &[503]);
    let dir = temp_dir();
    let config = base_config(dir.path())
        + &route("crm", &receiver.url("/crm"), "[routes.crm.retry]\nschedule = [\"200ms\", \"200ms\"]");
    let gateway = Gateway::start(dir.path(), &config).await;

    let mut accepted = Vec::new();
    for path in ["vox/doc-call_started.json", "vox/doc-mid_call-flow_transition.json", "vox/doc-call_ended.json"] {
        let (status, body) = gateway.post("vox", fixture(path)).await;
        assert_eq!(status, 200);
        accepted.extend(body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    // The first event fails once; the other five must wait for it.
    let requests = receiver.wait_for("/crm", accepted.len() + 1).await;
    let arrived: Vec<String> = requests.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(arrived[0], accepted[0]);
    assert_eq!(arrived[1..], accepted[..], "delivered in accepted order after the retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_identical_redelivery_is_acknowledged_once_and_not_emitted_again() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let config = base_config(dir.path()) + &route("crm", &receiver.url("/crm"), "include_test = true");
    let gateway = Gateway::start(dir.path(), &config).await;

    let body = fixture("salpre/doc-call_ended.json");
    let (status, first) = gateway.post("salpre", body.clone()).await;
    assert_eq!((status, first["accepted"].as_u64()), (200, Some(2)));
    assert_eq!(first.get("duplicate"), None);
    let (status, second) = gateway.post("salpre", body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(second["accepted"], 0);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["ids"], first["ids"]);
    // The same bytes to another source are a different payload.
    let (_, other) = gateway
        .post("salpre", {
            let mut b = body.clone();
            b.push(b'\n');
            b
        })
        .await;
    assert_eq!(other["accepted"], 2, "a byte-different body is not a duplicate");

    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    assert_eq!(receiver.at("/crm").len(), 4);
    assert_eq!(
        gateway
            .metric("callgate_ingress_requests_total{source=\"salpre\",vendor=\"salpre\",outcome=\"duplicate\"}")
            .await,
        1.0
    );

    // Still a duplicate after a restart.
    assert!(gateway.terminate().await.success());
    let gateway = Gateway::start(dir.path(), &config).await;
    let (status, third) = gateway.post("salpre", body).await;
    assert_eq!((status, &third["duplicate"], &third["ids"]), (200, &Value::Bool(true), &first["ids"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status_has_its_json_body_and_rejects_are_quarantined() {
    crate::require_backend!();
    let dir = temp_dir();
    let config = base_config(dir.path())
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"5s\"\nmax_body_bytes = 4096")
        + "\n[sources.guarded]\nvendor = \"utel\"\nauth = { type = \"query\", name = \"secret\", value = \"${IT_QUERY_SECRET}\" }\n";
    let config = config.replace("[storage]\n", "[storage]\nbusy_timeout = \"200ms\"\n");
    let gateway = Gateway::start_with_env(dir.path(), &config, &[("IT_QUERY_SECRET", "q-s3cret")]).await;
    let error = |body: &Value| body["error"]["code"].as_str().unwrap_or_default().to_owned();

    // 404: unknown source, counted under bounded labels.
    let (status, body) = gateway.post("nosuch", "{}").await;
    assert_eq!((status, error(&body).as_str()), (404, "unknown_source"));
    assert!(body["error"]["message"].is_string() && body["error"]["details"].is_array());
    assert_eq!(
        gateway
            .metric("callgate_ingress_requests_total{source=\"unknown\",vendor=\"unknown\",outcome=\"unknown_source\"}")
            .await,
        1.0
    );
    assert!(!gateway.metrics().await.contains("nosuch"), "raw path segments never become labels");

    // 413: larger than max_body_bytes.
    let big = format!("{{\"event\":\"call.started\",\"call_id\":\"{}\"}}", "x".repeat(5000));
    let (status, body) = gateway.post("oneinbox", big).await;
    assert_eq!((status, error(&body).as_str()), (413, "payload_too_large"));

    // 400: not JSON, with the position; the Content-Type header is not what decides.
    let response = gateway
        .http
        .post(gateway.url("/v1/ingest/vox"))
        .header("content-type", "application/json")
        .body("{\n  \"event\": \"call_started\",,\n}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error(&body), "invalid_json");
    assert!(body["error"]["message"].as_str().unwrap().contains("line 2 column"), "{body}");
    let response = gateway
        .http
        .post(gateway.url("/v1/ingest/oneinbox"))
        .header("content-type", "text/plain")
        .body(fixture("oneinbox/doc-call.failed.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a sloppy Content-Type does not matter");

    // 422: each violation with its path.
    let (status, body) =
        gateway.post("vox", r#"{"event":"call_started","call":{"call_id":5.5,"start_timestamp":"noon"}}"#).await;
    assert_eq!((status, error(&body).as_str()), (422, "schema_violation"));
    let paths: Vec<&str> =
        body["error"]["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/call/call_id") && paths.contains(&"/call/start_timestamp"), "{body}");
    assert!(body["error"]["details"].as_array().unwrap().iter().all(|d| d["message"].is_string()));

    // 422: an unknown event name.
    let (status, body) =
        gateway.post("salpre", r#"{"event_type":"call_teleported","timestamp_utc":1,"payload":{}}"#).await;
    assert_eq!((status, error(&body).as_str()), (422, "unknown_event"));
    assert_eq!(body["error"]["details"][0]["path"], "/event_type");

    // 401: authentication, with no hint of the secret.
    let (status, body) = gateway.post("guarded", fixture("utel/synthetic-call_started.json")).await;
    assert_eq!((status, error(&body).as_str()), (401, "unauthorized"));
    assert!(!body.to_string().contains("q-s3cret"));
    let response = gateway
        .http
        .post(gateway.url("/v1/ingest/guarded?secret=q-s3cret"))
        .body(fixture("utel/synthetic-call_started.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // 503: the store cannot commit (another process holds SQLite's write lock; PostgreSQL's
    // outages have their own test).
    let sqlite = backend() == Backend::Sqlite;
    if sqlite {
        let lock = rusqlite::Connection::open(dir.path().join("callgate.db")).unwrap();
        lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let (status, body) = gateway.post("oneinbox", fixture("oneinbox/doc-call.started.json")).await;
        assert_eq!((status, error(&body).as_str()), (503, "store_unavailable"));
        let ready = gateway.http.get(gateway.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503, "not ready while the store cannot commit");
        lock.execute_batch("ROLLBACK").unwrap();
        assert_eq!(gateway.http.get(gateway.url("/readyz")).send().await.unwrap().status(), 200);
        let (status, _) = gateway.post("oneinbox", fixture("oneinbox/doc-call.started.json")).await;
        assert_eq!(status, 200, "nothing was accepted by the 503, so the retry is not a duplicate");
    }

    // Outcomes are counted per source.
    let m = gateway.metrics().await;
    let (unavailable, accepted) = if sqlite { (1.0, 2.0) } else { (0.0, 1.0) };
    for (source, vendor, outcome, n) in [
        ("oneinbox", "oneinbox", "too_large", 1.0),
        ("oneinbox", "oneinbox", "unavailable", unavailable),
        ("oneinbox", "oneinbox", "accepted", accepted),
        ("guarded", "utel", "unauthorized", 1.0),
        ("guarded", "utel", "accepted", 1.0),
        ("vox", "vox", "invalid", 2.0),
        ("salpre", "salpre", "invalid", 1.0),
    ] {
        let series =
            format!("callgate_ingress_requests_total{{source=\"{source}\",vendor=\"{vendor}\",outcome=\"{outcome}\"}}");
        assert_eq!(metric_value(&m, &series), n, "{series}");
    }

    // The 400 and 422s are quarantined with their reason and body; 401/404/413 are not.
    let rows =
        store_rows(dir.path(), "SELECT source, status, reason, length(body), details FROM quarantine ORDER BY id");
    let summary: Vec<[&str; 3]> = rows.iter().map(|r| [r[0].as_str(), &r[1], &r[2]]).collect();
    assert_eq!(
        summary,
        [["vox", "400", "invalid_json"], ["vox", "422", "schema_violation"], ["salpre", "422", "unknown_event"]]
    );
    let bad_vox = r#"{"event":"call_started","call":{"call_id":5.5,"start_timestamp":"noon"}}"#;
    assert_eq!(rows[1][3], bad_vox.len().to_string(), "the body is kept whole");
    assert!(rows.iter().all(|r| !r[4].contains("q-s3cret") && !r[0].contains("q-s3cret")));
    assert!(!gateway.logs().contains("q-s3cret"), "the query secret is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_the_metric_series_contract() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let config = base_config(dir.path()) + &route("crm", &receiver.url("/crm"), "");
    let gateway = Gateway::start(dir.path(), &config).await;
    assert_eq!(gateway.http.get(gateway.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(gateway.http.get(gateway.url("/readyz")).send().await.unwrap().status(), 200);

    assert_eq!(gateway.post("vox", fixture("vox/doc-call_started.json")).await.0, 200);
    receiver.wait_for("/crm", 1).await;
    // Counters move just after the commit that empties the backlog: wait for them.
    gateway.wait_metric("callgate_deliveries_total{route=\"crm\",outcome=\"success\"}", 1.0).await;
    let m = gateway.metrics().await;
    for series in [
        "callgate_ingress_requests_total{source=\"vox\",vendor=\"vox\",outcome=\"accepted\"} 1",
        "callgate_events_total{source=\"vox\",type=\"call.connected\"} 1",
        "callgate_deliveries_total{route=\"crm\",outcome=\"success\"} 1",
        "callgate_delivery_backlog{route=\"crm\"} 0",
        "callgate_dead_letters{route=\"crm\"} 0",
        "callgate_ingress_duration_seconds_bucket{source=\"vox\",le=\"0.005\"}",
        "callgate_ingress_duration_seconds_count{source=\"vox\"} 1",
        "callgate_delivery_duration_seconds_bucket{route=\"crm\",le=\"+Inf\"} 1",
        "# TYPE callgate_ingress_duration_seconds histogram",
        "# TYPE callgate_delivery_duration_seconds histogram",
        "# TYPE callgate_delivery_backlog gauge",
        "# TYPE callgate_ingress_requests_total counter",
    ] {
        assert!(m.contains(series), "missing `{series}` in\n{m}");
    }
    assert!(!m.contains("6b0f1f08"), "no call id is ever a label");
    let not_found = gateway.http.get(gateway.url("/nope")).send().await.unwrap();
    assert_eq!(not_found.status(), 404);
    assert_eq!(not_found.json::<Value>().await.unwrap()["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_moves_operations_off_the_ingress_port_and_logs_can_be_json() {
    crate::require_backend!();
    let dir = temp_dir();
    let config = base_config(dir.path()) + "\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\n";
    let gateway = Gateway::start(dir.path(), &config).await;
    let admin = gateway.admin.expect("admin address printed");
    assert_ne!(admin, gateway.addr);
    assert_eq!(gateway.http.get(format!("http://{admin}/readyz")).send().await.unwrap().status(), 200);
    assert!(gateway.http.get(format!("http://{admin}/metrics")).send().await.unwrap().status().is_success());
    assert_eq!(gateway.http.get(gateway.url("/metrics")).send().await.unwrap().status(), 404);
    assert_eq!(
        gateway.http.post(format!("http://{admin}/v1/ingest/vox")).body("{}").send().await.unwrap().status(),
        404
    );
    assert_eq!(gateway.post("vox", "nope").await.0, 400);
    let line = gateway.wait_log("Ingress rejected.").await;
    let json: Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(json["code"], "invalid_json");
    assert_eq!(json["status"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_from_the_store_after_a_restart_and_sigterm_exits_cleanly() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.respond("/crm", &[503]);
    let dir = temp_dir();
    let config =
        base_config(dir.path()) + &route("crm", &receiver.url("/crm"), "[routes.crm.retry]\nschedule = [\"1s\"]");
    let gateway = Gateway::start(dir.path(), &config).await;
    let (status, body) = gateway.post("oneinbox", fixture("oneinbox/doc-call.recording.available.json")).await;
    assert_eq!(status, 200);
    receiver.wait_for("/crm", 1).await; // the failed first attempt
    let exit = gateway.terminate().await;
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
    let waiting = store_rows(dir.path(), "SELECT COUNT(*) FROM outbox WHERE attempts = 1");
    assert_eq!(waiting, [["1"]], "the failed delivery is in the store, its attempt recorded");

    // The retry is held at the receiver, so it is in flight (still in the backlog) whenever
    // the restarted gateway is scraped, however long the restart took.
    receiver.hold("/crm");
    let gateway = Gateway::start(dir.path(), &config).await;
    let requests = receiver.wait_for("/crm", 2).await;
    assert_eq!(requests[1].json()["id"], body["ids"][0]);
    assert_eq!(gateway.metric("callgate_delivery_backlog{route=\"crm\"}").await, 1.0, "backlog survives the restart");
    receiver.release();
    gateway.wait_metric("callgate_delivery_backlog{route=\"crm\"}", 0.0).await;
    assert_eq!(receiver.at("/crm").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_override_the_file() {
    crate::require_backend!();
    let dir = temp_dir();
    // The file asks for a port that is taken; the environment moves it.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = blocker.local_addr().unwrap();
    let config = base_config(dir.path()).replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{taken}\""));
    let env =
        [("CALLGATE_SERVER__LISTEN", "127.0.0.1:0"), ("CALLGATE_ADMIN_TOKEN", "for-the-cli"), ("CALLGATE_OTHER", "x")];
    let gateway = Gateway::start_with_env(dir.path(), &config, &env).await;
    assert_ne!(gateway.addr, taken);
    assert_eq!(gateway.http.get(gateway.url("/healthz")).send().await.unwrap().status(), 200);
}

/// Two accounts of one vendor reuse call ids (Salpre's are small integers): their subjects
/// differ, so one account's failing call never holds back the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_of_one_vendor_with_one_call_id_do_not_block_each_other() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    receiver.fail_bodies_containing(r#""subject":"salpre_east:1""#, 500);
    let dir = temp_dir();
    let config = base_config(dir.path())
        + "\n[sources.salpre_east]\nvendor = \"salpre\"\n\n[sources.salpre_west]\nvendor = \"salpre\"\n"
        + &route(
            "crm",
            &receiver.url("/crm"),
            "include_test = true\n[routes.crm.retry]\nschedule = [\"20ms\", \"1h\"]",
        );
    let gateway = Gateway::start(dir.path(), &config).await;

    // East's call 1 fails twice and then waits an hour, holding its follower behind it.
    let (status, east) = gateway.post("salpre_east", fixture("salpre/doc-call_ended.json")).await;
    assert_eq!((status, east["accepted"].as_u64()), (200, Some(2)));
    gateway.wait_metric("callgate_deliveries_total{route=\"crm\",outcome=\"retry\"}", 2.0).await;

    // West's call 1 flows all the same, in its own order.
    let mut west_ids = Vec::new();
    for path in ["salpre/doc-call_initiated.json", "salpre/doc-call_ended.json"] {
        let (status, body) = gateway.post("salpre_west", fixture(path)).await;
        assert_eq!(status, 200, "{body}");
        west_ids.extend(body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    gateway.wait_metric("callgate_deliveries_total{route=\"crm\",outcome=\"success\"}", west_ids.len() as f64).await;
    let requests = receiver.at("/crm");
    let (east_requests, west_requests): (Vec<&Received>, Vec<&Received>) =
        requests.iter().partition(|r| r.json()["data"]["source"] == "salpre_east");
    let west_arrived: Vec<String> = west_requests.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(west_arrived, west_ids, "west's events, each once, in accepted order");
    assert!(west_requests.iter().all(|r| r.json()["subject"] == "salpre_west:1"));
    assert_eq!(east_requests.len(), 2, "only east's head, twice");
    assert!(east_requests.iter().all(|r| r.json()["subject"] == "salpre_east:1" && r.json()["id"] == east["ids"][0]));
    assert_eq!(gateway.metric("callgate_delivery_backlog{route=\"crm\"}").await, 2.0, "east's call waits");
}

/// A 20 KB vendor value in a templated header is cut to the documented limit, so the
/// delivery still reaches a receiver that refuses request heads over 16 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_vendor_value_in_a_templated_header_is_cut_and_still_delivered() {
    crate::require_backend!();
    let receiver = Receiver::start_with_head_limit(16 * 1024).await;
    let huge = "x".repeat(20_000);
    // The receiver really refuses a 20 KB header: without the cap the delivery would fail.
    let direct = reqwest::Client::new().post(receiver.url("/crm")).header("x-campaign", &huge).body("{}").send().await;
    assert!(direct.is_err() || direct.unwrap().status() == 431, "a 20 KB head is refused");
    assert!(receiver.at("/crm").is_empty());

    let dir = temp_dir();
    let headers = r#"headers = { X-Campaign = "{{data.metadata.campaign}}", X-Call-Id = "{{data.call_id}}" }"#;
    let config = base_config(dir.path()) + &route("crm", &receiver.url("/crm"), headers);
    let gateway = Gateway::start(dir.path(), &config).await;
    let mut body: Value = serde_json::from_slice(&fixture("vox/doc-call_ended.json")).unwrap();
    body["call"]["metadata"]["campaign"] = Value::String(huge.clone());
    let (status, answer) = gateway.post("vox", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    let events = answer["ids"].as_array().unwrap().len();
    let requests = receiver.wait_for("/crm", events).await;
    for request in &requests {
        let campaign = request.header("x-campaign").unwrap();
        assert_eq!(campaign, huge[..1024], "cut to 1 KiB");
        assert_eq!(request.header("x-call-id").as_deref(), Some("6b0f1f08-1c2b-4f0e-9c3a-0c1d9e6f5a82"));
        assert_eq!(request.json()["data"]["metadata"]["campaign"], huge.as_str(), "the body keeps the whole value");
    }
    gateway.wait_metric("callgate_deliveries_total{route=\"crm\",outcome=\"success\"}", events as f64).await;
    assert_eq!(gateway.metric("callgate_header_values_truncated_total{route=\"crm\"}").await, events as f64);
    // A later log line is the barrier: every line logged before it has been read.
    assert_eq!(gateway.post("vox", "not json").await.0, 400);
    gateway.wait_log("Ingress rejected.").await;
    let logs = gateway.logs();
    assert_eq!(logs.matches("Templated header values were cut").count(), 1, "logged once per route:\n{logs}");
    assert!(!logs.contains(&huge[..100]), "the value is never logged");
}
