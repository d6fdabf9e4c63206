//! The `call` object of Retell AI's webhooks, which vox.ai copies: what both adapters read the
//! same way — the call's identity, `call_started`, `call_ended` (outcome, transcript,
//! recording) and `call_analysis` — written once. Each adapter keeps its own field names
//! ([`Names`]), `disconnection_reason` table ([`Reasons`]) and the names and unit of its cost.

use serde_json::{Map, Value};

use super::{Context, Violation};
use crate::canonical::{
    Analysis, Common, Cost, Details, Direction, Draft, End, EndReason, EndedBy, EventType, Payload, Role, Sentiment,
    Status, Utterance, convert, payload::kind_of,
};

/// The names of a format's fields inside its `call` object.
pub struct Names {
    pub agent_id: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    /// Call start and end, epoch milliseconds.
    pub start: &'static str,
    pub end: &'static str,
    /// The event's own time, epoch milliseconds, where the format has one (vox).
    pub occurred_at: Option<&'static str>,
}

/// How a `disconnection_reason` bears on whether the call connected.
#[derive(Clone, Copy)]
pub enum Connection {
    /// Only a connected call ends this way.
    Connected,
    /// The call never connected; the status it ended in.
    NotConnected(Status),
    /// Vendor-side failure: connected or not, judged from the rest of the payload.
    Either,
}

/// A vendor's `disconnection_reason` table: the canonical reason, who ended the call, and
/// what the reason says about the connection; `None` for a value it does not know.
pub type Reasons = fn(&str) -> Option<(EndReason, EndedBy, Connection)>;

/// An epoch-milliseconds time at `/call/{field}`, as RFC 3339.
fn ms(p: &Payload<'_>, field: &str) -> Option<String> {
    p.i64(&format!("/call/{field}")).and_then(convert::from_epoch_ms)
}

/// The event's own time, when the format has a field for it.
pub fn occurred_at(names: &Names, p: &Payload<'_>) -> Option<String> {
    names.occurred_at.and_then(|field| ms(p, field))
}

/// Call id, agent, direction and numbers of a `call` (or vox `mid_call`) object at `root`.
/// `agent_id`, `from_number` and `to_number` are read as a fallback when the format's own
/// names differ (vox bodies that copy Retell's names).
pub fn identity(
    names: &Names,
    vendor_event: &str,
    root: &str,
    p: &Payload<'_>,
    cx: &Context<'_>,
) -> Result<Common, Violation> {
    let mut common = cx.common(vendor_event, p.required_id(&format!("{root}/call_id"))?);
    let fallback = |own: &str, retell: &'static str| (own != retell).then_some(retell);
    let agent = |field: &str| p.describe_id("agent", &format!("{root}/{field}"));
    common.agent_id = agent(names.agent_id).or_else(|| fallback(names.agent_id, "agent_id").and_then(agent));
    // An explicit `direction` wins; `call_type` is one only when it says inbound or outbound
    // ("phone", "web_call", "api"… are not directions and stay in vendor_extra).
    common.direction = match p.describe_direction(&format!("{root}/direction")) {
        Direction::Unknown => p.describe_direction(&format!("{root}/call_type")),
        known => known,
    };
    let number = |field: &str| p.describe_str("numbers", &format!("{root}/{field}"));
    let from = number(names.from).or_else(|| fallback(names.from, "from_number").and_then(number));
    let to = number(names.to).or_else(|| fallback(names.to, "to_number").and_then(number));
    cx.numbers(&mut common, from, to);
    Ok(common)
}

/// `call_started`: `call.connected` at the call's start.
pub fn started(names: &Names, common: &mut Common, p: &Payload<'_>) -> Vec<Draft> {
    let occurred_at = occurred_at(names, p);
    let started_at = ms(p, names.start);
    common.occurred_at = occurred_at.or_else(|| started_at.clone());
    let details = Details { started_at: started_at.clone(), connected_at: started_at, ..Details::default() };
    vec![Draft::new(EventType::CallConnected, details)]
}

/// `call_ended`: `call.ended` or `call.failed`, then `transcript.final` when the transcript is
/// not empty and `call.recording.ready` when there is a recording. Cost and analysis are the
/// caller's (vox v1 packs them in; Retell and vox v2 send them as `call_analyzed`).
pub fn ended(names: &Names, reasons: Reasons, common: &mut Common, p: &Payload<'_>) -> Vec<Draft> {
    let occurred_at = occurred_at(names, p);
    let (started_at, ended_at) = (ms(p, names.start), ms(p, names.end));
    common.occurred_at = occurred_at.or_else(|| ended_at.clone());
    let transcript = transcript(p);
    let duration_ms = p.i64("/call/duration_ms");
    let evidence = duration_ms.is_some_and(|d| d > 0) || transcript.as_ref().is_some_and(|t| !t.is_empty());
    let call_status = p.peek("/call/call_status").and_then(Value::as_str);
    let reason_raw = p.str("/call/disconnection_reason");
    if let Some(raw) = reason_raw.as_deref().filter(|raw| reasons(raw).is_none()) {
        p.unknown_value("disconnection_reason", "/call/disconnection_reason", raw);
    }
    let (status, end) = outcome(reasons, reason_raw, call_status, evidence);
    if matches!(call_status, Some("ended" | "not_connected" | "canceled")) {
        // Fully represented by `status` + `end`; any other status ("error", Retell's
        // "registered"…) says something they do not, so it stays in vendor_extra.
        p.consume("/call/call_status");
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
    events
}

/// The terminal status and end of a call: a known `disconnection_reason` decides, a
/// `call_status` of `ended` / `not_connected` / `canceled` says whether it connected, and
/// without one the `evidence` (a positive duration, a transcript) does.
fn outcome(reasons: Reasons, reason_raw: Option<String>, call_status: Option<&str>, evidence: bool) -> (Status, End) {
    let connected = match call_status {
        Some("ended") => true,
        Some("not_connected" | "canceled") => false,
        _ => evidence,
    };
    let known = reason_raw.as_deref().and_then(reasons);
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
/// speaker it starts an utterance of role `unknown`. Trailing blank (or whitespace-only) lines
/// are dropped.
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
            (None, None) => {
                out.push(Utterance { role: Role::Unknown, role_raw: String::new(), text: line.to_owned(), at: None })
            }
        }
    }
    for utterance in &mut out {
        // Trailing blank lines are not speech (Retell ends its string with "\n ").
        while let Some(i) = utterance.text.rfind('\n') {
            if !utterance.text[i + 1..].trim().is_empty() {
                break;
            }
            utterance.text.truncate(i);
        }
    }
    out
}

/// Whether `/call/{field}` holds an object to read. Absent is `false`; null is consumed
/// (it says "none"); any other shape is reported as degraded `field` and kept as sent.
fn section(p: &Payload<'_>, field: &'static str) -> bool {
    let root = format!("/call/{field}");
    match p.peek(&root) {
        None => false,
        Some(Value::Object(_)) => true,
        Some(value) => {
            p.take_with(&root, |_| None::<()>); // consumes a null
            if !value.is_null() {
                p.degrade(field, &root, format!("expected an object, got {}", kind_of(value)));
            }
            false
        }
    }
}

/// `call_analysis {summary | call_summary, user_sentiment, custom_analysis_data}`, where
/// `custom_analysis_data` is an array of `{name, value}` (vox) or an object (name → value).
/// Other keys (Retell's `call_successful`, `in_voicemail`) stay in vendor_extra.
pub fn analysis(p: &Payload<'_>) -> Option<Analysis> {
    if !section(p, "call_analysis") {
        return None;
    }
    let root = "/call/call_analysis";
    let text = |field: &str| p.describe_str("call_analysis", &format!("{root}/{field}"));
    let summary = text("summary").or_else(|| text("call_summary"));
    let sentiment_raw = text("user_sentiment");
    let sentiment = sentiment_raw.as_deref().map(convert::sentiment);
    if let (Some(Sentiment::Unknown), Some(raw)) = (sentiment, sentiment_raw.as_deref()) {
        p.unknown_value("sentiment", &format!("{root}/user_sentiment"), raw);
    }
    Some(Analysis {
        summary,
        outcome: None,
        sentiment,
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

/// `call_cost` → `{amount, unit, billed_seconds}`, from the format's own names of the two
/// numbers (each reported as degraded `call_cost` when it is not a number); `unit` is given
/// only beside an amount. The rest of `call_cost` stays in vendor_extra.
pub fn cost(p: &Payload<'_>, amount: &str, billed_seconds: &str, unit: &str) -> Option<Cost> {
    if !section(p, "call_cost") {
        return None;
    }
    let number = |field: &str| {
        p.describe("call_cost", &format!("/call/call_cost/{field}"), "a number", |v| v.as_number().cloned())
    };
    let amount = number(amount);
    Some(Cost { unit: amount.as_ref().map(|_| unit.to_owned()), amount, billed_seconds: number(billed_seconds) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_string_becomes_utterances() {
        let said = |u: &Utterance| (u.role, u.role_raw.clone(), u.text.clone());
        let lines = transcript_lines("Agent: Hi.\nUSER:yes\nand more\n\nAgent: Bye.\n\n \n");
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
}
