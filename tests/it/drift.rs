//! The vendor drift report (`GET /v1/admin/drift`) on the binary: a payload with a field its
//! schema does not declare and one with a new enum value (a new vox `disconnection_reason`)
//! show up with counts, first and last seen and a value-free example; the metric moves;
//! duplicates are not counted; counts add up across writes and survive a graceful restart;
//! on PostgreSQL two replicas add to one report.

use std::path::Path;

use serde_json::Value;

use crate::support::{Backend, Gateway, backend, base_config, fixture, store_rows, temp_dir};

const TOKEN: &str = "drift-admin-token";
/// A phone number in a new field: it must never reach the drift report or its table.
const PHONE: &str = "+14155550100";

fn config(dir: &Path) -> String {
    base_config(dir) + &format!("\n[admin]\ntoken = \"{TOKEN}\"\n")
}

async fn report(gateway: &Gateway, query: &str) -> (u16, Value) {
    let url = gateway.ops_url(&format!("/v1/admin/drift{query}"));
    let response = gateway.http.get(url).bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The report's row of `kind` at `path`.
fn row<'a>(report: &'a Value, kind: &str, path: &str) -> Option<&'a Value> {
    report["drift"].as_array().unwrap().iter().find(|r| r["kind"] == kind && r["path"] == path)
}

/// vox's documented `call_ended` with its own call id, a field vox does not document and a
/// `disconnection_reason` callgate does not know.
fn changed_call_ended(call_id: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture("vox/doc-call_ended.json")).unwrap();
    body["call"]["call_id"] = call_id.into();
    body["call"]["carrier_hint"] = PHONE.into();
    body["call"]["disconnection_reason"] = "hangup_by_carrier".into();
    serde_json::to_vec(&body).unwrap()
}

fn millis(text: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text.as_str().unwrap()).unwrap().timestamp_millis()
}

#[tokio::test]
async fn a_new_field_and_a_new_enum_value_show_in_the_drift_report() {
    crate::require_backend!();
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path())).await;
    let before = chrono::Utc::now().timestamp_millis();

    // A documented payload shows nothing.
    assert_eq!(gateway.post("vox", fixture("vox/doc-call_ended.json")).await.0, 200);
    let (status, empty) = report(&gateway, "").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["drift"], serde_json::json!([]), "a documented payload is no drift");
    assert_eq!(empty["max_rows_per_source"], 1000);

    for call in ["c-1", "c-2"] {
        assert_eq!(gateway.post("vox", changed_call_ended(call)).await.0, 200);
    }
    // A redelivery is a duplicate, not more drift.
    assert_eq!(gateway.post("vox", changed_call_ended("c-2")).await.0, 200);
    // A degraded descriptive field (a transcript that is a number).
    assert_eq!(gateway.post("vox", fixture("vox/var-call_ended-degraded_transcript_number.json")).await.0, 200);

    let (status, first) = report(&gateway, "?source=vox").await;
    assert_eq!(status, 200, "{first}");
    let field = row(&first, "unknown_field", "call.carrier_hint").unwrap_or_else(|| panic!("no new field: {first}"));
    assert_eq!(field["source"], "vox");
    assert_eq!(field["vendor_event"], "v1/call_ended");
    assert_eq!(field["count"], 2, "two payloads, the duplicate not counted: {field}");
    assert_eq!(field["value"], Value::Null);
    assert_eq!(field["example"], "a string of 12 characters", "its shape, never its value");
    let value = row(&first, "unknown_value", "call.disconnection_reason")
        .unwrap_or_else(|| panic!("no new disconnection_reason: {first}"));
    assert_eq!((&value["value"], &value["count"]), (&Value::from("hangup_by_carrier"), &Value::from(2)));
    assert_eq!(value["example"], "hangup_by_carrier");
    let degraded = row(&first, "degraded", "call.transcript").unwrap_or_else(|| panic!("no degraded: {first}"));
    assert_eq!(degraded["example"], "expected an array or a string, got a number");
    assert_eq!(degraded["count"], 1);
    let (first_seen, last_seen) = (millis(&field["first_seen"]), millis(&field["last_seen"]));
    let after = chrono::Utc::now().timestamp_millis();
    assert!(before <= first_seen && first_seen <= last_seen && last_seen <= after, "{field}");

    // The metric, by source and kind only.
    gateway.wait_metric(r#"callgate_vendor_drift_total{source="vox",kind="unknown_field"}"#, 2.0).await;
    gateway.wait_metric(r#"callgate_vendor_drift_total{source="vox",kind="unknown_value"}"#, 2.0).await;
    gateway.wait_metric(r#"callgate_vendor_drift_total{source="vox",kind="degraded"}"#, 4.0).await;
    assert!(!gateway.metrics().await.contains("carrier_hint"), "a path is never a label");

    // Counts add up across writes: first seen stays, last seen moves on.
    assert_eq!(gateway.post("vox", changed_call_ended("c-3")).await.0, 200);
    let (_, second) = report(&gateway, "").await;
    let field = row(&second, "unknown_field", "call.carrier_hint").unwrap();
    assert_eq!(field["count"], 3, "{field}");
    assert_eq!(millis(&field["first_seen"]), first_seen);
    assert!(millis(&field["last_seen"]) >= last_seen);
    let value = row(&second, "unknown_value", "call.disconnection_reason").unwrap();
    assert_eq!(value["count"], 3);

    // Filters: another source has none; nothing was seen after now.
    let (_, salpre) = report(&gateway, "?source=salpre").await;
    assert_eq!(salpre["drift"], serde_json::json!([]));
    let (_, later) = report(&gateway, "?since=2999-01-01T00:00:00Z").await;
    assert_eq!(later["drift"], serde_json::json!([]));
    let (_, recent) = report(&gateway, "?since=1h&limit=1").await;
    assert_eq!(recent["drift"].as_array().unwrap().len(), 1);
    let (status, wrong) = report(&gateway, "?route=crm").await;
    assert_eq!(status, 400, "{wrong}");

    // The CLI prints the same report as a table.
    let out = std::process::Command::new(crate::support::binary())
        .args(["drift", "--source", "vox", "--url", &gateway.ops_url(""), "--token", TOKEN])
        .env_remove("CALLGATE_CONFIG")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = table.lines().find(|l| l.contains("call.disconnection_reason")).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("unknown_value") && line.contains("hangup_by_carrier") && line.contains(" 3 "), "{table}");

    // No phone number in the stored report.
    let stored = store_rows(dir.path(), "SELECT path, value, example FROM drift");
    assert!(!stored.is_empty());
    assert!(stored.iter().flatten().all(|cell| !cell.contains(PHONE)), "{stored:?}");
}

/// Drift accepted just before a graceful shutdown is written at shutdown, not lost.
#[tokio::test]
async fn drift_accepted_before_a_graceful_shutdown_is_kept() {
    crate::require_backend!();
    let dir = temp_dir();
    let gateway = Gateway::start(dir.path(), &config(dir.path())).await;
    assert_eq!(gateway.post("vox", changed_call_ended("c-9")).await.0, 200);
    assert!(gateway.terminate().await.success());
    let gateway = Gateway::start(dir.path(), &config(dir.path())).await;
    let (_, report) = report(&gateway, "").await;
    let field = row(&report, "unknown_field", "call.carrier_hint").unwrap_or_else(|| panic!("lost: {report}"));
    assert_eq!(field["count"], 1);
}

/// Two replicas on one PostgreSQL database add to one report: what one accepted shows in
/// the other's answer (it wrote its sums when it stopped; a running one writes every 5 s).
#[tokio::test]
async fn two_replicas_contribute_to_one_report() {
    crate::require_backend!();
    if backend() == Backend::Sqlite {
        return; // one process owns a SQLite file
    }
    let dir = temp_dir();
    let a = Gateway::start(dir.path(), &config(dir.path())).await;
    let b = Gateway::start(dir.path(), &config(dir.path())).await;
    assert_eq!(a.post("vox", changed_call_ended("r-1")).await.0, 200);
    assert_eq!(b.post("vox", changed_call_ended("r-2")).await.0, 200);
    assert_eq!(b.post("vox", changed_call_ended("r-3")).await.0, 200);
    assert!(b.terminate().await.success());
    let (_, report) = report(&a, "?source=vox").await;
    let field = row(&report, "unknown_field", "call.carrier_hint").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(field["count"], 3, "one from a, two from b: {field}");
    let value = row(&report, "unknown_value", "call.disconnection_reason").unwrap();
    assert_eq!(value["count"], 3);
}
