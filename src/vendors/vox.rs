//! vox.ai call-data webhooks, v1 and v2. `{event, call | mid_call}` in v1; v2 adds
//! `webhook_version: "v2"`, renames numbers and times, nests the agent, moves cost and
//! analysis into a separate `call_analyzed`, and adds `sms_received` (body under `sms`).
//! Times are epoch **milliseconds**. The `call` object is Retell AI's, read by
//! [`call_object`](super::call_object); this module keeps what is vox's own.

pub(super) mod inbound;

use serde_json::Value;

use super::{
    Context, Identity, MapResult, Violation,
    call_object::{self, Connection, Names},
};
use crate::canonical::{
    Common, Cost, Details, Draft, EndReason, EndedBy, EventType, Flow, FlowNode, Mapped, Payload, Sms, Status, Vendor,
    VendorFormat,
    convert,
};

events! {
    "vox" {
        V1CallStarted = "v1/call_started",
        V1CallEnded = "v1/call_ended",
        V1FlowTransition = "v1/mid_call.flow_transition",
        V1CallMessage = "v1/mid_call.call_message",
        V2CallStarted = "v2/call_started",
        V2CallEnded = "v2/call_ended",
        V2CallAnalyzed = "v2/call_analyzed",
        V2SmsReceived = "v2/sms_received",
        V2FlowTransition = "v2/mid_call.flow_transition",
        V2CallMessage = "v2/mid_call.call_message",
    }
}

/// The webhook format: v1 has no `webhook_version`, v2 says `"v2"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// What a vox event is, whatever its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call(Call),
    SmsReceived,
    MidCall(MidCall),
}

/// The events about a `call` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Started,
    Ended,
    Analyzed,
}

/// The `mid_call` event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MidCall {
    FlowTransition,
    CallMessage,
}

impl Event {
    fn parts(self) -> (Version, Kind) {
        use Version::*;
        match self {
            Event::V1CallStarted => (V1, Kind::Call(Call::Started)),
            Event::V1CallEnded => (V1, Kind::Call(Call::Ended)),
            Event::V1FlowTransition => (V1, Kind::MidCall(MidCall::FlowTransition)),
            Event::V1CallMessage => (V1, Kind::MidCall(MidCall::CallMessage)),
            Event::V2CallStarted => (V2, Kind::Call(Call::Started)),
            Event::V2CallEnded => (V2, Kind::Call(Call::Ended)),
            Event::V2CallAnalyzed => (V2, Kind::Call(Call::Analyzed)),
            Event::V2SmsReceived => (V2, Kind::SmsReceived),
            Event::V2FlowTransition => (V2, Kind::MidCall(MidCall::FlowTransition)),
            Event::V2CallMessage => (V2, Kind::MidCall(MidCall::CallMessage)),
        }
    }

    /// The event a (format, kind) pair names, if that format has it (v1 has no
    /// `call_analyzed` and no `sms_received`).
    fn from_parts(version: Version, kind: Kind) -> Option<Event> {
        Event::ALL.iter().copied().find(|e| e.parts() == (version, kind))
    }
}

impl Version {
    fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }

    fn fields(self) -> &'static Names {
        match self {
            Version::V1 => &V1,
            Version::V2 => &V2,
        }
    }
}

impl Kind {
    /// `vendor_event`: the `event` name, with the `mid_call` type after a dot.
    fn vendor_event(self) -> &'static str {
        match self {
            Kind::Call(Call::Started) => "call_started",
            Kind::Call(Call::Ended) => "call_ended",
            Kind::Call(Call::Analyzed) => "call_analyzed",
            Kind::SmsReceived => "sms_received",
            Kind::MidCall(MidCall::FlowTransition) => "mid_call.flow_transition",
            Kind::MidCall(MidCall::CallMessage) => "mid_call.call_message",
        }
    }
}

pub fn event(body: &Value) -> Result<Event, Violation> {
    let version = match body.get("webhook_version") {
        None => Version::V1,
        Some(Value::String(v)) if v == "v2" => Version::V2,
        Some(other) => {
            let shown = super::cut(&other.to_string(), super::MAX_ECHO_CHARS).into_owned();
            return Err(Violation::new("/webhook_version", format!("unsupported vox webhook_version {shown}")));
        }
    };
    let in_version = |kind| Event::from_parts(version, kind);
    let kind = super::discriminate(body, "/event", Vendor::Vox, |name| match name {
        "call_started" => in_version(Kind::Call(Call::Started)).map(Some),
        "call_ended" => in_version(Kind::Call(Call::Ended)).map(Some),
        "call_analyzed" => in_version(Kind::Call(Call::Analyzed)).map(Some),
        "sms_received" => in_version(Kind::SmsReceived).map(Some),
        "mid_call" => Some(None),
        _ => None,
    })?;
    match kind {
        Some(event) => Ok(event),
        None => super::discriminate(body, "/mid_call/event_type", Vendor::Vox, |name| match name {
            "flow_transition" => in_version(Kind::MidCall(MidCall::FlowTransition)),
            "call_message" => in_version(Kind::MidCall(MidCall::CallMessage)),
            _ => None,
        }),
    }
}

/// `dedup = "event"`: the event (with its format), its call and its vendor time in ms
/// (`occurred_at`, else the event's own start or end time); `call_analyzed` also by its
/// analysis and cost (a re-analysis is a new event), `mid_call` by its `event_data` (a message
/// and a transition can share a millisecond), `sms_received` by its message id.
pub fn identity(event: Event, body: &Value) -> Option<Identity> {
    let (version, kind) = event.parts();
    let fields = version.fields();
    let id = Identity::new(event.name());
    Some(match kind {
        Kind::Call(call) => {
            let id = id.field(body, "call_id", &["/call/call_id"])?;
            match call {
                Call::Started => id.field(body, "time", &["/call/occurred_at", &format!("/call/{}", fields.start)])?,
                Call::Ended => id.field(body, "time", &["/call/occurred_at", &format!("/call/{}", fields.end)])?,
                Call::Analyzed => id
                    .field(body, "time", &["/call/occurred_at", &format!("/call/{}", fields.end)])?
                    .optional(body, "call_analysis", "/call/call_analysis")
                    .optional(body, "call_cost", "/call/call_cost"),
            }
        }
        Kind::MidCall(_) => id
            .field(body, "call_id", &["/mid_call/call_id"])?
            .field(body, "time", &["/mid_call/occurred_at", "/mid_call/timestamp"])?
            .optional(body, "event_data", "/mid_call/event_data"),
        Kind::SmsReceived => id
            .field(body, "message_id", &["/sms/message_id", "/sms/sms_id", "/sms/id"])?
            .optional(body, "occurred_at", "/sms/occurred_at"),
    })
}

/// vox's `disconnection_reason` table (canonical.md §6).
fn reason(raw: &str) -> Option<(EndReason, EndedBy, Connection)> {
    use EndReason as R;
    use Connection::*;
    Some(match raw {
        "user_hangup" => (R::CustomerHangup, EndedBy::Customer, Connected),
        "agent_hangup" => (R::AgentHangup, EndedBy::Agent, Connected),
        "call_transfer" => (R::Transferred, EndedBy::Agent, Connected),
        "voicemail_reached" => (R::Voicemail, EndedBy::System, Connected),
        "inactivity" => (R::SilenceTimeout, EndedBy::System, Connected),
        "max_duration_reached" => (R::MaxDuration, EndedBy::System, Connected),
        "dial_no_answer" => (R::NoAnswer, EndedBy::Unknown, NotConnected(Status::NoAnswer)),
        "dial_busy" => (R::Busy, EndedBy::Unknown, NotConnected(Status::Busy)),
        "dial_declined" => (R::Declined, EndedBy::Customer, NotConnected(Status::Busy)),
        "dial_failed" => (R::DialFailed, EndedBy::System, NotConnected(Status::Failed)),
        "concurrency_limit_reached" | "daily_call_limit_reached" => {
            (R::CapacityLimit, EndedBy::System, NotConnected(Status::Failed))
        }
        "insufficient_balance" => (R::Billing, EndedBy::System, NotConnected(Status::Failed)),
        "error_voxai" | "flow_error" | "orphaned_no_agent_pickup" => (R::PlatformError, EndedBy::System, Either),
        _ => return None,
    })
}

const V1: Names = Names {
    agent_id: "agent_id",
    from: "call_from",
    to: "call_to",
    start: "start_timestamp",
    end: "end_timestamp",
    occurred_at: Some("occurred_at"),
};
const V2: Names = Names {
    agent_id: "agent/agent_id",
    from: "from_number",
    to: "to_number",
    start: "start_at",
    end: "end_at",
    occurred_at: Some("occurred_at"),
};

pub fn map(event: Event, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    let (version, kind) = event.parts();
    p.consume("/event");
    p.consume("/webhook_version");
    match kind {
        Kind::SmsReceived => sms(p, cx),
        Kind::MidCall(mid) => mid_call(version, mid, p, cx),
        Kind::Call(call) => call_event(version, call, p, cx),
    }
}

/// The `call` events: `call_started`, `call_ended`, `call_analyzed`.
fn call_event(version: Version, call: Call, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    let fields = version.fields();
    let mut common = call_common(version, Kind::Call(call), "/call", p, cx)?;

    // Each event reads only its own facts; what it does not read (call_analyzed repeats the
    // call's times and transcript) stays in vendor_extra.
    let events = match call {
        Call::Started => call_object::started(fields, &mut common, p),
        Call::Ended => {
            let mut events = call_object::ended(fields, reason, &mut common, p);
            // v1 packs cost and analysis into call_ended; v2 sends them as call_analyzed.
            match version {
                Version::V1 => {
                    let (analysis, cost) = (call_object::analysis(p), cost(p));
                    if analysis.is_some() || cost.is_some() {
                        events
                            .push(Draft::new(EventType::CallAnalyzed, Details { analysis, cost, ..Details::default() }));
                    }
                }
                Version::V2 => {}
            }
            events
        }
        Call::Analyzed => {
            common.occurred_at = call_object::occurred_at(fields, p);
            let details = Details { analysis: call_object::analysis(p), cost: cost(p), ..Details::default() };
            vec![Draft::new(EventType::CallAnalyzed, details)]
        }
    };
    let metadata = p.describe_object("metadata", "/call/metadata");
    let variables = p.describe_object("dynamic_variables", "/call/dynamic_variables");
    Ok(Mapped { common, metadata, variables, events })
}

/// Call id, agent, direction and numbers of a `call` (or `mid_call`) object at `root`.
fn call_common(version: Version, kind: Kind, root: &str, p: &Payload<'_>, cx: &Context<'_>) -> Result<Common, Violation> {
    let mut common = call_object::identity(version.fields(), kind.vendor_event(), root, p, cx)?;
    common.vendor_format = VendorFormat::parse(version.as_str());
    Ok(common)
}

/// `call_cost {total_credits_used, duration_seconds}` → `{amount, unit: "credits", billed_seconds}`.
fn cost(p: &Payload<'_>) -> Option<Cost> {
    call_object::cost(p, "total_credits_used", "duration_seconds", "credits")
}

fn mid_call(version: Version, mid: MidCall, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    let mut common = call_common(version, Kind::MidCall(mid), "/mid_call", p, cx)?;
    p.consume("/mid_call/event_type");
    let occurred_at =
        p.i64("/mid_call/occurred_at").or_else(|| p.i64("/mid_call/timestamp")).and_then(convert::from_epoch_ms);
    common.occurred_at = occurred_at.clone();
    let draft = match mid {
        MidCall::CallMessage => {
            let utterance = p.utterance("/mid_call/event_data", "role", "content", occurred_at)?;
            Draft::new(EventType::TranscriptSegment, Details { transcript: Some(vec![utterance]), ..Details::default() })
        }
        MidCall::FlowTransition => {
        let node = |side: &str| FlowNode {
            id: p.id(&format!("/mid_call/event_data/{side}_node_id")),
            name: p.str(&format!("/mid_call/event_data/{side}_node_name")),
        };
        let flow = Flow { from_node: node("from"), to_node: node("to") };
        Draft::new(EventType::CallFlowTransition, Details { flow: Some(flow), ..Details::default() })
        }
    };
    let metadata = p.describe_object("metadata", "/mid_call/metadata");
    let variables = p.describe_object("dynamic_variables", "/mid_call/dynamic_variables");
    Ok(Mapped { common, metadata, variables, events: vec![draft] })
}

/// v2 `sms_received`: `call_id` holds the message's own id (provisional shape).
fn sms(p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    let id = ["message_id", "sms_id", "id"]
        .iter()
        .find_map(|field| p.id(&format!("/sms/{field}")))
        .ok_or_else(|| Violation::new("/sms/message_id", "message id is missing"))?;
    let text = ["content", "text", "body"]
        .iter()
        .find_map(|field| p.str(&format!("/sms/{field}")))
        .ok_or_else(|| Violation::new("/sms/content", "message text is missing"))?;
    let mut common = cx.common(Kind::SmsReceived.vendor_event(), id);
    common.vendor_format = VendorFormat::parse(Version::V2.as_str());
    let (from, to) = (p.str("/sms/from_number"), p.str("/sms/to_number"));
    cx.numbers(&mut common, from.clone(), to.clone());
    common.occurred_at = p.i64("/sms/occurred_at").and_then(convert::from_epoch_ms);
    let details = Details { sms: Some(Sms { from, to, text }), ..Details::default() };
    Ok(Mapped::new(common, vec![Draft::new(EventType::SmsReceived, details)]))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::vendors::{Origin, normalize};

    #[test]
    fn descriptive_fields_in_unknown_shapes_are_reported_not_rejected() {
        let body = json!({"event": "call_ended", "call": {
            "call_id": "c1", "disconnection_reason": "user_hangup", "transcript": 42,
            "call_analysis": "pending", "call_cost": {"total_credits_used": "12"},
            "metadata": [1], "call_from": false, "recording_url": 7
        }});
        let origin = Origin { source: "vox", vendor: Vendor::Vox, phone_region: None };
        let normalized = normalize(&origin, &serde_json::to_vec(&body).unwrap(), Utc::now()).unwrap();
        assert_eq!(normalized.events[0].kind, EventType::CallEnded);
        let fields: Vec<(&str, &str)> =
            normalized.degraded.iter().map(|d| (d.field, d.pointer.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("numbers", "/call/call_from"),
                ("transcript", "/call/transcript"),
                ("recording_url", "/call/recording_url"),
                ("call_analysis", "/call/call_analysis"),
                ("call_cost", "/call/call_cost/total_credits_used"),
                ("metadata", "/call/metadata"),
            ]
        );
        assert_eq!(normalized.degraded[1].problem, "expected an array or a string, got a number");
        let extra = &normalized.events[0].data.vendor_extra;
        assert_eq!(extra["call"]["transcript"], 42);
        assert_eq!(extra["call"]["call_analysis"], "pending");
        assert_eq!(extra["call"]["metadata"], json!([1]));
    }

    /// A `disconnection_reason`, role or sentiment outside the tables is `unknown` with its
    /// raw value, and the payload reports it where it is (for the drift report); known values
    /// are not reported.
    #[test]
    fn unknown_values_are_reported_with_their_raw_value() {
        let body = json!({"event": "call_ended", "call": {
            "call_id": "c1", "disconnection_reason": "hangup_by_carrier", "duration_ms": 1000,
            "transcript": [
                {"role": "agent", "content": "hi"},
                {"role": "narrator", "content": "(music)"},
                {"role": "narrator", "content": "(more music)"}
            ],
            "call_analysis": {"user_sentiment": "Elated"}
        }});
        let origin = Origin { source: "vox", vendor: Vendor::Vox, phone_region: None };
        let normalized = normalize(&origin, &serde_json::to_vec(&body).unwrap(), Utc::now()).unwrap();
        let end = normalized.events[0].data.details.end.clone().unwrap();
        assert_eq!((end.reason, end.reason_raw.as_deref()), (EndReason::Unknown, Some("hangup_by_carrier")));
        assert_eq!(normalized.schema, "v1/call_ended");
        let mut drift: Vec<(&str, &str, &str, u64)> = normalized
            .drift
            .iter()
            .map(|d| (d.kind.as_str(), d.path.as_str(), d.value.as_str(), d.count))
            .collect();
        drift.sort_unstable();
        assert_eq!(
            drift,
            [
                ("unknown_value", "call.call_analysis.user_sentiment", "Elated", 1),
                ("unknown_value", "call.disconnection_reason", "hangup_by_carrier", 1),
                ("unknown_value", "call.transcript[].role", "narrator", 2),
            ]
        );
        let known = json!({"event": "call_ended", "call": {"call_id": "c1", "disconnection_reason": "user_hangup"}});
        let normalized = normalize(&origin, &serde_json::to_vec(&known).unwrap(), Utc::now()).unwrap();
        assert!(normalized.drift.is_empty(), "{:?}", normalized.drift);
    }

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/vox/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn key(body: &Value) -> Option<[u8; 32]> {
        identity(event(body).unwrap(), body).map(|id| id.digest(Vendor::Vox))
    }

    #[test]
    fn the_identity_is_the_event_call_and_vendor_time_and_tells_mid_call_events_apart() {
        let labels = |name: &str| {
            let body = fixture(name);
            identity(event(&body).unwrap(), &body).unwrap().labels()
        };
        for name in ["doc-call_started.json", "doc-call_ended.json", "v2-call_started.json", "v2-call_ended.json"] {
            assert_eq!(labels(name), ["call_id", "time"], "{name}");
        }
        assert_eq!(labels("v2-call_analyzed.json"), ["call_id", "time", "call_analysis", "call_cost"]);
        for name in ["doc-mid_call-call_message.json", "v2-mid_call-flow_transition.json"] {
            assert_eq!(labels(name), ["call_id", "time", "event_data"], "{name}");
        }
        assert_eq!(labels("v2-sms_received.json"), ["message_id", "occurred_at"]);

        let ended = fixture("v2-call_ended.json");
        let mut retried = ended.clone();
        retried["delivery_attempt"] = json!(3);
        retried["call"]["recording_url"] = json!("https://signed.example/other-token");
        assert_eq!(key(&ended), key(&retried));
        let mut v1 = ended.clone();
        v1.as_object_mut().unwrap().remove("webhook_version");
        assert_ne!(key(&ended), key(&v1), "the format is part of the event");

        // vox's own examples: a message and a transition of one call in the same millisecond.
        let (message, transition) = (fixture("doc-mid_call-call_message.json"), fixture("doc-mid_call-flow_transition.json"));
        assert_eq!(message["mid_call"]["timestamp"], transition["mid_call"]["timestamp"]);
        assert_ne!(key(&message), key(&transition));
        let mut reply = message.clone();
        reply["mid_call"]["event_data"] = json!({"role": "agent", "content": "확인해 드릴게요."});
        assert_ne!(key(&message), key(&reply));

        let analyzed = fixture("v2-call_analyzed.json");
        let mut reanalyzed = analyzed.clone();
        reanalyzed["call"]["call_analysis"]["user_sentiment"] = json!("neutral");
        assert_ne!(key(&analyzed), key(&reanalyzed), "a re-analysis is a new event");

        let mut timeless = fixture("doc-call_started.json");
        timeless["call"].as_object_mut().unwrap().remove("start_timestamp");
        assert_eq!(key(&timeless), None, "no identity: keyed by the body");
    }
}
