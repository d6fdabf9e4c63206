//! Retell AI end to end: the `retell` ingress auth type over real HTTP on the binary (a fresh
//! signature passes; a tampered body, a wrong key, a stale or future time and a missing or
//! malformed header fail, the head-only ones before the body is read), and a signed
//! documented payload arriving downstream as its canonical events. The mapping itself is
//! proven field by field by the golden fixtures under `tests/fixtures/retell/`.

use crate::support::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const API_KEY: &str = "key_retell-webhook-3c9d";
/// Retell's window, in milliseconds: a signature this far from now still passes.
const TOLERANCE_MS: i64 = 5 * 60 * 1000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `x-retell-signature` as Retell's SDKs make it: `v=<ms>,d=<hex HMAC-SHA256(body + ms)>`.
fn sign(key: &str, body: &[u8], at_ms: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    mac.update(at_ms.to_string().as_bytes());
    format!("v={at_ms},d={}", hex::encode(mac.finalize().into_bytes()))
}

fn config(dir: &std::path::Path, receiver: &Receiver) -> String {
    base_config(dir)
        + &format!(
            r#"
[sources.signed]
vendor = "retell"
auth = {{ type = "retell", api_key = "${{IT_RETELL_KEY}}" }}

[routes.calls]
url = "{}"
sources = ["signed"]
"#,
            receiver.url("/calls")
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retell_signatures_pass_only_when_fresh_and_over_the_exact_body_with_the_key() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway =
        Gateway::start_with_env(dir.path(), &config(dir.path(), &receiver), &[("IT_RETELL_KEY", API_KEY)]).await;
    let body = fixture("retell/doc-call_ended.json");
    let post = |signature: Option<String>, body: Vec<u8>| {
        let request = gateway.http.post(gateway.url("/v1/ingest/signed")).body(body);
        let request = match signature {
            Some(s) => request.header("x-retell-signature", s),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Refused: a tampered body, a wrong key, a time outside the window either way, a
    // malformed signature, none at all.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let refused = [
        ("tampered body", Some(sign(API_KEY, &body, now_ms())), tampered),
        ("wrong key", Some(sign("key_someone-else", &body, now_ms())), body.clone()),
        ("stale", Some(sign(API_KEY, &body, now_ms() - TOLERANCE_MS - 60_000)), body.clone()),
        ("future", Some(sign(API_KEY, &body, now_ms() + TOLERANCE_MS + 60_000)), body.clone()),
        ("malformed", Some(format!("d=00,v={}", now_ms())), body.clone()),
        ("missing", None, body.clone()),
    ];
    let refusals = refused.len();
    for (what, signature, sent) in refused {
        let (status, answer) = post(signature, sent).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized", "{what}");
        assert!(!answer.to_string().contains(API_KEY), "{what}: the key is in the answer");
    }

    // Accepted: signed now, and signed a little while ago (inside the window).
    let (status, answer) = post(Some(sign(API_KEY, &body, now_ms())), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "call.ended and transcript.final: {answer}");
    let analyzed = fixture("retell/var-call_analyzed.json");
    let (status, answer) = post(Some(sign(API_KEY, &analyzed, now_ms() - 60_000)), analyzed).await;
    assert_eq!(status, 200, "{answer}");

    let received = receiver.wait_for("/calls", 3).await;
    let types: Vec<Value> = received.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(types, ["call.ended", "transcript.final", "call.analyzed"]);
    let ended = received[0].json();
    assert_eq!(ended["subject"], "signed:Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6");
    assert_eq!(ended["data"]["vendor"], "retell");
    assert_eq!(ended["data"]["end"]["reason"], "customer_hangup");
    assert_eq!(ended["data"]["variables"]["customer_name"], "John Doe");

    let series = "callgate_ingress_requests_total{source=\"signed\",vendor=\"retell\",outcome=\"unauthorized\"}";
    assert_eq!(gateway.metric(series).await, refusals as f64);
    let logs = gateway.logs();
    assert!(!logs.contains(API_KEY), "the API key is in the logs");
}

/// What the head alone condemns is answered while the body is still unsent: no signature,
/// a malformed one, a stale one. (A tampered body or a wrong key can only be told from the
/// body, which the test above covers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retell_request_without_a_fresh_well_formed_signature_is_refused_before_its_body() {
    crate::require_backend!();
    let receiver = Receiver::start().await;
    let dir = temp_dir();
    let gateway =
        Gateway::start_with_env(dir.path(), &config(dir.path(), &receiver), &[("IT_RETELL_KEY", API_KEY)]).await;
    let stale = sign(API_KEY, b"{}", now_ms() - TOLERANCE_MS - 60_000);
    for signature in [None, Some("v=1,d=not-hex"), Some(stale.as_str())] {
        let header = signature.map(|s| format!("x-retell-signature: {s}\r\n")).unwrap_or_default();
        let mut stream = trickle(&gateway, "/v1/ingest/signed", &header).await;
        assert_eq!(status_line(&mut stream).await, "HTTP/1.1 401 Unauthorized", "{signature:?}");
    }
    let series = "callgate_ingress_requests_total{source=\"signed\",vendor=\"retell\",outcome=\"unauthorized\"}";
    gateway.wait_metric(series, 3.0).await;
}
