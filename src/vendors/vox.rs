//! vox.ai call-data webhooks, v1 and v2. `{event, call | mid_call}` in v1; v2 adds
//! `webhook_version: "v2"`, renames numbers and times, nests the agent, moves cost and
//! analysis into a separate `call_analyzed`, and adds `sms_received` (body under `sms`).
//! Times are epoch **milliseconds**.

pub(super) mod inbound;

use serde_json::{Map, Value};

use super::{Context, MapResult, Violation};
use crate::canonical::{
    Analysis, Common, Cost, Details, Direction, Draft, End, EndReason, EndedBy, EventType, Flow, FlowNode, Mapped,
    Payload, Role, Sms, Status, Utterance, Vendor, convert, payload::kind_of,
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

    fn fields(self) -> &'static Fields {
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

/// How a `disconnection_reason` bears on whether the call connected.
#[derive(Clone, Copy)]
enum Connection {
    /// Only a connected call ends this way.
    Connected,
    /// The call never connected; the status it ended in.
    NotConnected(Status),
    /// Vendor-side failure: connected or not, judged from the rest of the payload.
    Either,
}

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

/// The field names that differ between the two formats.
struct Fields {
    agent_id: &'static str,
    from: &'static str,
    to: &'static str,
    start: &'static str,
    end: &'static str,
}

const V1: Fields = Fields {
    agent_id: "agent_id",
    from: "call_from",
    to: "call_to",
    start: "start_timestamp",
    end: "end_timestamp",
};
const V2: Fields = Fields {
    agent_id: "agent/agent_id",
    from: "from_number",
    to: "to_number",
    start: "start_at",
    end: "end_at",
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
    let ms = |field: &str| p.i64(&format!("/call/{field}")).and_then(convert::from_epoch_ms);
    let occurred_at = ms("occurred_at");

    // Each event reads only its own facts; what it does not read (call_analyzed repeats the
    // call's times and transcript) stays in vendor_extra.
    let events = match call {
        Call::Started => {
            let started_at = ms(fields.start);
            common.occurred_at = occurred_at.or_else(|| started_at.clone());
            let details = Details { started_at: started_at.clone(), connected_at: started_at, ..Details::default() };
            vec![Draft::new(EventType::CallConnected, details)]
        }
        Call::Ended => {
            let (started_at, ended_at) = (ms(fields.start), ms(fields.end));
            common.occurred_at = occurred_at.or_else(|| ended_at.clone());
            let transcript = transcript(p);
            let duration_ms = p.i64("/call/duration_ms");
            let evidence = duration_ms.is_some_and(|d| d > 0) || transcript.as_ref().is_some_and(|t| !t.is_empty());
            let call_status = p.peek("/call/call_status").and_then(Value::as_str);
            let reason_raw = p.str("/call/disconnection_reason");
            let (status, end) = outcome(reason_raw, call_status, evidence);
            if call_status.is_some() {
                p.consume("/call/call_status"); // fully represented by `status` + `end`
            }
            let connected = status == Status::Completed;
            let mut events = Vec::with_capacity(4);
            events.push(Draft::new(
                EventType::for_end(status),
                Details {
                    status: Some(status),
                    end: Some(end),
                    connected_at: started_at.clone().filter(|_| connected),
                    started_at,
                    ended_at,
                    duration_ms,
                    ..Details::default()
                },
            ));
            if let Some(transcript) = transcript.filter(|t| !t.is_empty()) {
                events.push(Draft::new(
                    EventType::TranscriptFinal,
                    Details { transcript: Some(transcript), ..Details::default() },
                ));
            }
            if let Some(url) = p.describe_str("recording_url", "/call/recording_url") {
                events.push(Draft::new(
                    EventType::CallRecordingReady,
                    Details { recording_url: Some(url), ..Details::default() },
                ));
            }
            // v1 packs cost and analysis into call_ended; v2 sends them as call_analyzed.
            match version {
                Version::V1 => {
                    let (analysis, cost) = (analysis(p), cost(p));
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
            common.occurred_at = occurred_at;
            let details = Details { analysis: analysis(p), cost: cost(p), ..Details::default() };
            vec![Draft::new(EventType::CallAnalyzed, details)]
        }
    };
    let metadata = p.describe_object("metadata", "/call/metadata");
    let variables = p.describe_object("dynamic_variables", "/call/dynamic_variables");
    Ok(Mapped { common, metadata, variables, events })
}

/// Call id, agent, direction and numbers of a `call` (or `mid_call`) object at `root`.
fn call_common(version: Version, kind: Kind, root: &str, p: &Payload<'_>, cx: &Context<'_>) -> Result<Common, Violation> {
    let fields = version.fields();
    let mut common = cx.common(kind.vendor_event(), p.required_id(&format!("{root}/call_id"))?);
    common.vendor_format = Some(version.as_str());
    let agent = |field: &str| p.describe_id("agent", &format!("{root}/{field}"));
    common.agent_id = agent(fields.agent_id).or_else(|| agent("agent_id"));
    // An explicit `direction` (Retell) wins; `call_type` is one only when it says inbound or
    // outbound ("phone", "web", "api"… are not directions and stay in vendor_extra).
    common.direction = match p.describe_direction(&format!("{root}/direction")) {
        Direction::Unknown => p.describe_direction(&format!("{root}/call_type")),
        known => known,
    };
    let number = |field: &str| p.describe_str("numbers", &format!("{root}/{field}"));
    let from = number(fields.from).or_else(|| number("from_number"));
    let to = number(fields.to).or_else(|| number("to_number"));
    cx.numbers(&mut common, from, to);
    Ok(common)
}

fn outcome(reason_raw: Option<String>, call_status: Option<&str>, evidence: bool) -> (Status, End) {
    let connected = match call_status {
        Some("ended") => true,
        Some("not_connected" | "canceled") => false,
        _ => evidence,
    };
    let known = reason_raw.as_deref().and_then(reason);
    let (reason, by, status) = match known {
        Some((reason, by, Connection::Connected)) => (reason, by, Status::Completed),
        Some((reason, by, Connection::NotConnected(status))) => (reason, by, status),
        Some((reason, by, Connection::Either)) => {
            (reason, by, if connected { Status::Completed } else { Status::Failed })
        }
        None => {
            let status = match (connected, call_status) {
                (true, _) => Status::Completed,
                (false, Some("canceled")) => Status::Canceled,
                (false, _) => Status::Failed,
            };
            (EndReason::Unknown, EndedBy::Unknown, status)
        }
    };
    (status, End { reason, reason_raw, by })
}

/// The transcript of a `call_ended`: Retell's `transcript_object` when it is readable, else
/// `transcript` (an array of `{role, content}`, or Retell's string). `None` when absent, null
/// or unreadable (then reported as degraded); what was not read stays in vendor_extra.
fn transcript(p: &Payload<'_>) -> Option<Vec<Utterance>> {
    if let Some(utterances) = p.describe_utterances("transcript_object", "/call/transcript_object", "role", "content") {
        return Some(utterances);
    }
    let at = "/call/transcript";
    match p.peek(at)? {
        value @ Value::String(text) => {
            p.mark(value);
            Some(transcript_lines(text))
        }
        Value::Array(_) => p.describe_utterances("transcript", at, "role", "content"),
        value => {
            p.take_with(at, |_| None::<()>); // consumes a null
            if !value.is_null() {
                p.degrade("transcript", at, format!("expected an array or a string, got {}", kind_of(value)));
            }
            None
        }
    }
}

/// Retell's transcript string, `"Agent: …\nUser: …"`: one utterance per line with a known
/// speaker prefix (`Agent:`, `User:`, any case; the raw role is the prefix as written). A line
/// without one continues the previous utterance (vendors wrap long turns); before the first
/// speaker it starts an utterance of role `unknown`. Trailing blank lines are dropped.
fn transcript_lines(text: &str) -> Vec<Utterance> {
    const SPEAKERS: &[&str] = &["agent", "user"];
    let mut out: Vec<Utterance> = Vec::new();
    for line in text.lines() {
        let speaker = SPEAKERS.iter().find_map(|speaker| {
            let head = line.get(..speaker.len()).filter(|head| head.eq_ignore_ascii_case(speaker))?;
            let rest = line[speaker.len()..].strip_prefix(':')?;
            Some((head, rest.strip_prefix(' ').unwrap_or(rest)))
        });
        match (speaker, out.last_mut()) {
            (Some((role_raw, said)), _) => out.push(Utterance {
                role: convert::role(role_raw),
                role_raw: role_raw.to_owned(),
                text: said.to_owned(),
                at: None,
            }),
            (None, Some(last)) => {
                last.text.push('\n');
                last.text.push_str(line);
            }
            (None, None) if line.trim().is_empty() => {}
            (None, None) => out.push(Utterance {
                role: Role::Unknown,
                role_raw: String::new(),
                text: line.to_owned(),
                at: None,
            }),
        }
    }
    for utterance in &mut out {
        let kept = utterance.text.trim_end_matches(['\n', '\r']).len();
        utterance.text.truncate(kept);
    }
    out
}

/// `call_analysis {summary | call_summary, user_sentiment, custom_analysis_data}`, where
/// `custom_analysis_data` is an array of `{name, value}` or an object (name → value).
fn analysis(p: &Payload<'_>) -> Option<Analysis> {
    let root = "/call/call_analysis";
    match p.peek(root)? {
        Value::Object(_) => {}
        value => {
            p.take_with(root, |_| None::<()>); // consumes a null
            if !value.is_null() {
                p.degrade("call_analysis", root, format!("expected an object, got {}", kind_of(value)));
            }
            return None;
        }
    }
    let text = |field: &str| p.describe_str("call_analysis", &format!("{root}/{field}"));
    let summary = text("summary").or_else(|| text("call_summary"));
    let sentiment_raw = text("user_sentiment");
    Some(Analysis {
        summary,
        outcome: None,
        sentiment: sentiment_raw.as_deref().map(convert::sentiment),
        sentiment_raw,
        extracted: extracted(p, "/call/call_analysis/custom_analysis_data"),
    })
}

/// `custom_analysis_data`: an object is taken whole; in an array of `{name, value}` only
/// `name` and `value` are read (other item keys, such as `type`, stay in vendor_extra), and on
/// a repeated name the last value wins (earlier ones stay in vendor_extra).
fn extracted(p: &Payload<'_>, at: &str) -> Map<String, Value> {
    let Some(value) = p.peek(at) else { return Map::new() };
    match value {
        Value::Object(map) => {
            p.mark(value);
            map.clone()
        }
        Value::Array(items) => {
            let mut extracted = Map::new();
            let mut winners: Vec<(&str, &Value, &Value)> = Vec::new();
            let mut unreadable = false;
            for item in items {
                match (item.get("name"), item.get("value")) {
                    (Some(name_value @ Value::String(name)), Some(value)) => {
                        winners.retain(|(n, _, _)| n != name);
                        winners.push((name, name_value, value));
                    }
                    _ => unreadable = true,
                }
            }
            for (name, name_value, value) in winners {
                extracted.insert(name.to_owned(), value.clone());
                p.mark(name_value);
                p.mark(value);
            }
            if unreadable {
                p.degrade("custom_analysis_data", at, "expected items with a string name and a value");
            }
            extracted
        }
        Value::Null => {
            p.mark(value);
            Map::new()
        }
        other => {
            p.degrade("custom_analysis_data", at, format!("expected an array or an object, got {}", kind_of(other)));
            Map::new()
        }
    }
}

/// `call_cost {total_credits_used, duration_seconds}` → `{amount, unit: "credits", billed_seconds}`.
fn cost(p: &Payload<'_>) -> Option<Cost> {
    let root = "/call/call_cost";
    match p.peek(root)? {
        Value::Object(_) => {}
        value => {
            p.take_with(root, |_| None::<()>); // consumes a null
            if !value.is_null() {
                p.degrade("call_cost", root, format!("expected an object, got {}", kind_of(value)));
            }
            return None;
        }
    }
    let number = |field: &str| p.describe("call_cost", &format!("{root}/{field}"), "a number", |v| v.as_number().cloned());
    let amount = number("total_credits_used");
    let billed_seconds = number("duration_seconds");
    let unit = amount.as_ref().map(|_| "credits".to_owned());
    Some(Cost { amount, unit, billed_seconds })
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
    common.vendor_format = Some(Version::V2.as_str());
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
    fn a_transcript_string_becomes_utterances() {
        let said = |u: &Utterance| (u.role, u.role_raw.clone(), u.text.clone());
        let lines = transcript_lines("Agent: Hi.\nUSER:yes\nand more\n\nAgent: Bye.\n\n");
        assert_eq!(
            lines.iter().map(said).collect::<Vec<_>>(),
            [
                (Role::Agent, "Agent".to_owned(), "Hi.".to_owned()),
                (Role::Customer, "USER".to_owned(), "yes\nand more".to_owned()),
                (Role::Agent, "Agent".to_owned(), "Bye.".to_owned()),
            ]
        );
        let orphan = transcript_lines("(ringing)\nAgent: Hello");
        assert_eq!(said(&orphan[0]), (Role::Unknown, String::new(), "(ringing)".to_owned()));
        assert!(transcript_lines("").is_empty());
    }

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
}
