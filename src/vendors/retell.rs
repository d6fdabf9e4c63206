//! Retell AI call webhooks: `{event, call}` with `call_started`, `call_ended` and
//! `call_analyzed` (the events Retell sends unless an agent's `webhook_events` asks for more).
//! The `call` object is the one vox copies, read by [`call_object`](super::call_object);
//! this module keeps Retell's field names, its `disconnection_reason` table and its cost.
//! Times are epoch **milliseconds**. Signatures (`x-retell-signature`) are checked by the
//! `retell` ingress auth type, not here.

use serde_json::Value;

use super::{
    Context, Identity, MapResult, Violation,
    call_object::{self, Connection, Names},
};
use crate::canonical::{Cost, Details, Draft, EndReason, EndedBy, EventType, Mapped, Payload, Status, Vendor};

events! {
    "retell" {
        Started = "call_started",
        Ended = "call_ended",
        Analyzed = "call_analyzed",
    }
}

pub fn event(body: &Value) -> Result<Event, Violation> {
    super::discriminate_named(body, "/event", Vendor::Retell, Event::ALL, Event::name)
}

/// Retell's call object (`PhoneCallResponse` / `WebCallResponse` in its SDKs). It has no
/// time of its own for an event.
const NAMES: Names = Names {
    agent_id: "agent_id",
    from: "from_number",
    to: "to_number",
    start: "start_timestamp",
    end: "end_timestamp",
    occurred_at: None,
};

/// `dedup = "event"`: Retell sends no event id and no time of an event, so an instance is the
/// event, its call and the call's start (`call_started`) or end time; `call_analyzed` also by
/// its analysis and cost (a re-analysis is a new event).
pub fn identity(event: Event, body: &Value) -> Option<Identity> {
    let id = Identity::new(event.name()).field(body, "call_id", &["/call/call_id"])?;
    Some(match event {
        Event::Started => id.field(body, "time", &["/call/start_timestamp"])?,
        Event::Ended => id.field(body, "time", &["/call/end_timestamp"])?,
        Event::Analyzed => id
            .optional(body, "time", "/call/end_timestamp")
            .optional(body, "call_analysis", "/call/call_analysis")
            .optional(body, "call_cost", "/call/call_cost"),
    })
}

pub fn map(event: Event, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    p.consume("/event");
    let mut common = call_object::identity(&NAMES, event.name(), "/call", p, cx)?;
    // Each event reads only its own facts; what it does not read (call_analyzed repeats the
    // whole call, call_ended may carry call_cost) stays in vendor_extra.
    let events = match event {
        Event::Started => call_object::started(&NAMES, &mut common, p),
        Event::Ended => call_object::ended(&NAMES, reason, &mut common, p),
        Event::Analyzed => {
            let details = Details { analysis: call_object::analysis(p), cost: cost(p), ..Details::default() };
            vec![Draft::new(EventType::CallAnalyzed, details)]
        }
    };
    let metadata = p.describe_object("metadata", "/call/metadata");
    let variables = p.describe_object("dynamic_variables", "/call/retell_llm_dynamic_variables");
    Ok(Mapped { common, metadata, variables, events })
}

/// Retell's `disconnection_reason` values (SDK 5.60, and older ones still seen) mapped onto
/// canonical.md §6. Values with no canonical reason of their own (`ivr_reached`,
/// `transfer_cancelled`, `scam_detected`, `manual_stopped`, `call_take_over`) are `unknown`
/// with the raw value kept, but still say whether the call connected.
fn reason(raw: &str) -> Option<(EndReason, EndedBy, Connection)> {
    use Connection::*;
    use EndReason as R;
    Some(match raw {
        "user_hangup" => (R::CustomerHangup, EndedBy::Customer, Connected),
        "agent_hangup" => (R::AgentHangup, EndedBy::Agent, Connected),
        "call_transfer" | "transfer_bridged" => (R::Transferred, EndedBy::Agent, Connected),
        "voicemail_reached" | "machine_detected" => (R::Voicemail, EndedBy::System, Connected),
        "inactivity" => (R::SilenceTimeout, EndedBy::System, Connected),
        "max_duration_reached" => (R::MaxDuration, EndedBy::System, Connected),
        "ivr_reached" | "transfer_cancelled" => (R::Unknown, EndedBy::System, Connected),
        "dial_no_answer" | "registered_call_timeout" | "error_user_not_joined" => {
            (R::NoAnswer, EndedBy::Unknown, NotConnected(Status::NoAnswer))
        }
        "dial_busy" => (R::Busy, EndedBy::Unknown, NotConnected(Status::Busy)),
        "user_declined" => (R::Declined, EndedBy::Customer, NotConnected(Status::Busy)),
        "invalid_destination" => (R::InvalidNumber, EndedBy::Unknown, NotConnected(Status::Failed)),
        // The 6-30 split of `dial_failed`: carrier, SIP or provider could not connect.
        "dial_failed"
        | "telephony_provider_unavailable"
        | "telephony_provider_permission_denied"
        | "sip_routing_error"
        | "marked_as_spam" => (R::DialFailed, EndedBy::System, NotConnected(Status::Failed)),
        "concurrency_limit_reached" | "no_concurrency_fallback" => {
            (R::CapacityLimit, EndedBy::System, NotConnected(Status::Failed))
        }
        "no_valid_payment" => (R::Billing, EndedBy::System, NotConnected(Status::Failed)),
        "scam_detected" | "manual_stopped" | "call_take_over" => (R::Unknown, EndedBy::System, Either),
        // error_llm_websocket_*, error_no_audio_received, error_asr, error_retell,
        // error_unknown, and the removed error_inbound_webhook, error_twilio…
        other if other.starts_with("error_") => (R::PlatformError, EndedBy::System, Either),
        _ => return None,
    })
}

/// `call_cost {combined_cost (cents), total_duration_seconds, product_costs, …}` →
/// `{amount, unit: "cents", billed_seconds}`; the per-product breakdown and unit prices stay
/// in vendor_extra.
fn cost(p: &Payload<'_>) -> Option<Cost> {
    call_object::cost(p, "combined_cost", "total_duration_seconds", "cents")
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::vendors::{Origin, normalize};

    fn normalize_body(body: Value) -> crate::vendors::Normalized {
        let origin = Origin { source: "retell", vendor: Vendor::Retell, phone_region: None };
        normalize(&origin, &serde_json::to_vec(&body).unwrap(), Utc::now()).unwrap()
    }

    /// Every documented reason maps to a canonical one, except the five with none of their
    /// own; an undocumented value is accepted as `unknown`.
    #[test]
    fn every_documented_disconnection_reason_is_mapped() {
        const DOCUMENTED: &[&str] = &[
            "user_hangup", "agent_hangup", "call_transfer", "voicemail_reached", "ivr_reached", "inactivity",
            "max_duration_reached", "concurrency_limit_reached", "no_concurrency_fallback", "no_valid_payment",
            "scam_detected", "dial_busy", "dial_failed", "dial_no_answer", "invalid_destination",
            "telephony_provider_permission_denied", "telephony_provider_unavailable", "sip_routing_error",
            "marked_as_spam", "user_declined", "error_llm_websocket_open", "error_llm_websocket_lost_connection",
            "error_llm_websocket_runtime", "error_llm_websocket_corrupt_payload", "error_no_audio_received",
            "error_asr", "error_retell", "error_unknown", "error_user_not_joined", "registered_call_timeout",
            "transfer_bridged", "transfer_cancelled", "manual_stopped", "call_take_over",
        ];
        assert_eq!(DOCUMENTED.len(), 34);
        let without_own = ["ivr_reached", "transfer_cancelled", "scam_detected", "manual_stopped", "call_take_over"];
        for raw in DOCUMENTED {
            let (canonical, _, _) = reason(raw).unwrap_or_else(|| panic!("{raw} is not mapped"));
            assert_eq!(canonical == EndReason::Unknown, without_own.contains(raw), "{raw}");
        }
        let body = json!({"event": "call_ended", "call": {"call_id": "c1", "call_status": "ended",
            "disconnection_reason": "brand_new_reason"}});
        let ended = &normalize_body(body).events[0];
        let end = ended.data.details.end.as_ref().unwrap();
        assert_eq!((end.reason, end.reason_raw.as_deref()), (EndReason::Unknown, Some("brand_new_reason")));
        assert_eq!(ended.kind, EventType::CallEnded);
    }

    /// A platform error ends a connected call as `call.ended` and an unconnected one as
    /// `call.failed`, judged from `call_status` first, then from the evidence.
    #[test]
    fn a_platform_error_is_judged_by_the_connection() {
        let kind = |call: Value| normalize_body(json!({"event": "call_ended", "call": call})).events[0].kind;
        let error = "error_llm_websocket_open";
        assert_eq!(
            kind(json!({"call_id": "c", "disconnection_reason": error, "call_status": "ended"})),
            EventType::CallEnded
        );
        assert_eq!(
            kind(json!({"call_id": "c", "disconnection_reason": error, "call_status": "not_connected"})),
            EventType::CallFailed
        );
        assert_eq!(
            kind(json!({"call_id": "c", "disconnection_reason": error, "call_status": "error", "duration_ms": 4200})),
            EventType::CallEnded
        );
        assert_eq!(
            kind(json!({"call_id": "c", "disconnection_reason": error, "call_status": "error"})),
            EventType::CallFailed
        );
    }

    #[test]
    fn a_cost_in_an_unknown_shape_is_reported_not_rejected() {
        let normalized = normalize_body(json!({"event": "call_analyzed", "call": {"call_id": "c1",
            "call_cost": {"combined_cost": "7.5", "total_duration_seconds": 30}, "call_analysis": "later"}}));
        let fields: Vec<(&str, &str)> = normalized.degraded.iter().map(|d| (d.field, d.pointer.as_str())).collect();
        assert_eq!(fields, [("call_analysis", "/call/call_analysis"), ("call_cost", "/call/call_cost/combined_cost")]);
        let event = &normalized.events[0];
        assert_eq!(event.kind, EventType::CallAnalyzed);
        assert_eq!(event.data.vendor_extra["call"]["call_cost"]["combined_cost"], "7.5");
    }

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/retell/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn key(body: &Value) -> Option<[u8; 32]> {
        identity(event(body).unwrap(), body).map(|id| id.digest(Vendor::Retell))
    }

    #[test]
    fn the_identity_is_the_event_call_and_its_start_or_end_and_an_analysis_its_content() {
        let labels = |name: &str| {
            let body = fixture(name);
            identity(event(&body).unwrap(), &body).unwrap().labels()
        };
        assert_eq!(labels("var-call_started.json"), ["call_id", "time"]);
        assert_eq!(labels("doc-call_ended.json"), ["call_id", "time"]);
        assert_eq!(labels("var-call_analyzed.json"), ["call_id", "time", "call_analysis", "call_cost"]);

        let ended = fixture("doc-call_ended.json");
        let mut retried = ended.clone();
        retried["retry"] = json!(1);
        retried["call"]["transcript"] = json!("Agent: hi");
        assert_eq!(key(&ended), key(&retried));
        let mut other = ended.clone();
        other["call"]["end_timestamp"] = json!(1);
        assert_ne!(key(&ended), key(&other));
        let analyzed = fixture("var-call_analyzed.json");
        let mut reanalyzed = analyzed.clone();
        reanalyzed["call"]["call_analysis"] = json!({"call_summary": "Another summary."});
        assert_ne!(key(&analyzed), key(&reanalyzed), "a re-analysis is a new event");

        let mut unended = ended;
        unended["call"].as_object_mut().unwrap().remove("end_timestamp");
        assert_eq!(key(&unended), None, "no identity: keyed by the body");
    }
}
