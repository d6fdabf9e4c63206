//! Content filters and data minimisation per route (issue 12, items 3 and 4), on the binary:
//! each filter dialect decides at ingest which routes get an outbox row; `omit` and
//! `mask_numbers` trim what a route receives (body, templated headers and the signed bytes)
//! while the store keeps the canonical event whole.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::*;

const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Payloads with inbound and outbound calls, a campaign, a Retell and a OneInbox call and an
/// SMS: nine events in all.
const PAYLOADS: [(&str, &str); 6] = [
    ("vox", "vox/doc-call_ended.json"), // 4 events, inbound, campaign 봄_프로모션, duration 342000
    ("vox", "vox/var-call_ended-dial_busy.json"), // call.failed, outbound, campaign 봄_프로모션
    ("vox", "vox/v2-call_started.json"), // call.connected, inbound, metadata.source crm
    ("retell", "retell/var-call_ended-dial_no_answer.json"), // call.failed, outbound
    ("oneinbox", "oneinbox/doc-call.ended.json"), // call.ended, direction unknown
    ("vox", "vox/v2-sms_received.json"), // sms.received
];

/// `[routes.NAME]` posting to `/NAME` on the receiver.
fn route(receiver: &Receiver, name: &str, extra: &str) -> String {
    format!("\n[routes.{name}]\nurl = \"{}\"\n{extra}\n", receiver.url(&format!("/{name}")))
}

/// What a route received, as sorted `source type` pairs.
fn got(receiver: &Receiver, name: &str) -> Vec<String> {
    let mut got: Vec<String> = receiver
        .at(&format!("/{name}"))
        .iter()
        .map(|r| {
            let event = r.json();
            format!("{} {}", event["data"]["source"].as_str().unwrap(), event["type"].as_str().unwrap())
        })
        .collect();
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_dialect_decides_at_ingest_which_routes_get_an_event() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let filters: [(&str, &str); 7] = [
        ("exact", r#"filter = { exact = { "data.direction" = "inbound" } }"#),
        ("prefix", r#"filter = { prefix = { "data.metadata.campaign" = "봄_" } }"#),
        ("suffix", r#"filter = { suffix = { type = ".failed" } }"#),
        (
            "all",
            r#"filter = { all = [ { exact = { data.direction = "outbound" } }, { prefix = { subject = "vox:" } } ] }"#,
        ),
        (
            "any",
            r#"filter = { any = [ { exact = { type = "sms.received" } }, { exact = { "data.metadata.source" = "crm" } } ] }"#,
        ),
        ("not", r#"filter = { not = { prefix = { subject = "vox:" } } }"#),
        // A number compares as its JSON text.
        ("number", r#"filter = { exact = { "data.duration_ms" = "342000" } }"#),
    ];
    let dir = temp_dir();
    let mut config = base_config(dir.path()) + &route(&receiver, "everything", "");
    for (name, filter) in filters {
        config += &route(&receiver, name, filter);
        // Answers wait until the outbox has been counted, so every row is still there.
        receiver.hold(&format!("/{name}"));
    }
    let gateway = Gateway::start(dir.path(), &config).await;
    for (source, path) in PAYLOADS {
        let (status, body) = gateway.post(source, fixture(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // The decision is made at ingest: a filtered-out event has no outbox row at all.
    let rows = store_rows(
        dir.path(),
        "SELECT route, COUNT(*) FROM outbox WHERE route <> 'everything' GROUP BY route ORDER BY route",
    );
    let counts: BTreeMap<&str, &str> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("all", "1"),
            ("any", "2"),
            ("exact", "5"),
            ("not", "2"),
            ("number", "1"),
            ("prefix", "5"),
            ("suffix", "2")
        ])
    );

    receiver.release();
    receiver.wait_for("/everything", 9).await;
    for (name, _) in filters {
        gateway.wait_metric(&format!("callgate_delivery_backlog{{route=\"{name}\"}}"), 0.0).await;
    }
    gateway.wait_metric("callgate_delivery_backlog{route=\"everything\"}", 0.0).await;
    assert_eq!(
        got(&receiver, "exact"),
        [
            "vox call.analyzed",
            "vox call.connected",
            "vox call.ended",
            "vox call.recording.ready",
            "vox transcript.final"
        ]
    );
    assert_eq!(
        got(&receiver, "prefix"),
        ["vox call.analyzed", "vox call.ended", "vox call.failed", "vox call.recording.ready", "vox transcript.final"]
    );
    assert_eq!(got(&receiver, "suffix"), ["retell call.failed", "vox call.failed"]);
    assert_eq!(got(&receiver, "all"), ["vox call.failed"]);
    assert_eq!(got(&receiver, "any"), ["vox call.connected", "vox sms.received"]);
    assert_eq!(got(&receiver, "not"), ["oneinbox call.ended", "retell call.failed"]);
    assert_eq!(got(&receiver, "number"), ["vox call.ended"]);
    let ended = &receiver.at("/number")[0].json();
    assert_eq!(ended["data"]["duration_ms"], 342000);
    assert_eq!(receiver.at("/everything").len(), 9, "a route without a filter gets every event");
}

/// Every phone number the payloads below carry, and its documented mask.
fn masked(number: &str) -> &'static str {
    match number {
        "+821012345678" | "+827012345678" => "+********5678",
        "01012345678" | "07012345678" => "*******5678",
        "+998999995998" => "+********5998",
        "999995998" => "*****5998",
        "100" => "***",
        other => panic!("no mask written down for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omitted_and_masked_values_never_reach_the_route_and_the_signature_covers_the_trimmed_body() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let common = format!(
        "signing_secret = \"{SIGNING_SECRET}\"\nheaders = {{ X-From = \"{{{{data.from}}}}\", X-Customer = \"{{{{data.variables.customer_name}}}}\", X-Call = \"{{{{data.call_id}}}}\" }}"
    );
    let config = base_config(dir.path())
        + &route(&receiver, "whole", &common)
        + &route(
            &receiver,
            "analytics",
            &format!(
                "{common}\nomit = [\"data.transcript\", \"data.vendor_extra\", \"data.variables\"]\nmask_numbers = true\n[routes.analytics.retry]\nschedule = [\"50ms\"]"
            ),
        );
    // The first attempt fails: its retry is trimmed and signed the same way.
    receiver.respond("/analytics", &[500]);
    let gateway = Gateway::start(dir.path(), &config).await;
    let mut ids = Vec::new();
    for (source, path) in [
        ("vox", "vox/doc-call_ended.json"),
        ("vox", "vox/v2-sms_received.json"),
        ("utel", "utel/synthetic-call_saved-answered.json"),
    ] {
        let (status, body) = gateway.post(source, fixture(path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        ids.extend(body["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()));
    }
    assert_eq!(ids.len(), 7);
    let whole_requests: BTreeMap<String, Received> = receiver
        .wait_for("/whole", 7)
        .await
        .into_iter()
        .map(|r| (r.json()["id"].as_str().unwrap().to_owned(), r))
        .collect();
    let whole: BTreeMap<&String, Value> = whole_requests.iter().map(|(id, r)| (id, r.json())).collect();
    let trimmed = receiver.wait_for("/analytics", 8).await;
    gateway.wait_metric("callgate_deliveries_total{route=\"analytics\",outcome=\"success\"}", 7.0).await;
    assert_eq!(gateway.metric("callgate_deliveries_total{route=\"analytics\",outcome=\"retry\"}").await, 1.0);

    for request in &trimmed {
        // Signed over exactly the bytes received.
        crate::security::standard_webhooks_verify(SIGNING_SECRET, &request.headers, &request.body).unwrap();
        let event = request.json();
        let id = event["id"].as_str().unwrap();
        // The route gets the canonical event less what it omits, with its numbers masked,
        // and nothing else changed.
        let id = &id.to_owned();
        let mut want = whole[id].clone();
        let data = want["data"].as_object_mut().unwrap();
        for omitted in ["transcript", "vendor_extra", "variables"] {
            data.remove(omitted);
        }
        for field in ["from", "to", "from_e164", "to_e164"] {
            if let Some(number) = data[field].as_str() {
                data[field] = masked(number).into();
            }
        }
        if let Some(sms) = data.get_mut("sms") {
            for field in ["from", "to"] {
                sms[field] = masked(sms[field].as_str().unwrap()).into();
            }
        }
        assert_eq!(event, want, "event {id}");
        let text = String::from_utf8_lossy(&request.body);
        for secret in ["1012345678", "7012345678", "99995998", "김철수", "opt_out_sensitive_data_storage"] {
            assert!(!text.contains(secret), "{secret} reached the analytics route: {text}");
        }
        // Templated headers render from the trimmed event: masked or empty, never the value.
        let from = whole[id]["data"]["from"].as_str().map_or("", masked);
        assert_eq!(request.header("x-from").as_deref(), Some(from), "event {id}");
        assert_eq!(request.header("x-customer").as_deref(), Some(""), "event {id}");
        assert_eq!(request.header("x-call"), whole[id]["data"]["call_id"].as_str().map(str::to_owned));
        // The signature is over the trimmed body, not over the stored one.
        let stored = &whole_requests[id].body;
        assert!(crate::security::standard_webhooks_verify(SIGNING_SECRET, &request.headers, stored).is_err());
    }
    // The route without omit/mask gets the stored JSON unchanged, with its headers.
    let transcript = whole.values().find(|e| e["type"] == "transcript.final").unwrap();
    assert!(!transcript["data"]["transcript"].as_array().unwrap().is_empty());
    for request in receiver.at("/whole") {
        crate::security::standard_webhooks_verify(SIGNING_SECRET, &request.headers, &request.body).unwrap();
    }
    let call_ended = receiver.at("/whole").into_iter().find(|r| r.json()["type"] == "call.ended").unwrap();
    assert_eq!(call_ended.header("x-from").as_deref(), Some("+821012345678"));
    assert_eq!(call_ended.header("x-customer").as_deref(), Some("김철수"));

    // The store keeps the canonical event whole: trimming happens per route at send time.
    let id = transcript["id"].as_str().unwrap();
    assert!(ids.iter().any(|i| i == id));
    let stored = store_rows(dir.path(), &format!("SELECT body FROM events WHERE id = '{id}'"));
    let stored: Value = serde_json::from_str(&stored[0][0]).unwrap();
    assert_eq!(&stored, transcript);
}
