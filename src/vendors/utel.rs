//! Utel (PBX): `{"time": "HH:mm:ss", "data": {"name": …, "domain": …, …}}`.
//!
//! **Provisional.** Utel publishes no per-event payloads; the shapes come from a third-party
//! summary of its docs (`vendors-research.md` §3.4). This adapter reads only the ids and the
//! documented call-history record, leaves everything else in `vendor_extra`, and tightening
//! it once a real delivery is captured is a change to this file and `schemas/utel/`.
//! The envelope `time` has no date and no zone, so it is never interpreted (the event time
//! is `received_at`); it travels in `vendor_extra`.

use serde_json::Value;

use super::{Context, MapResult, Violation};
use crate::canonical::{
    Details, Direction, Draft, End, EndReason, EndedBy, EventType, Mapped, Payload, Status, Transfer, TransferType,
    Vendor, convert,
};

pub const SCHEMAS: &[(&str, &str)] = &[
    ("call_started", include_str!("../../schemas/utel/call_started.json")),
    ("dial_started", include_str!("../../schemas/utel/dial_started.json")),
    ("dial_answered", include_str!("../../schemas/utel/dial_answered.json")),
    ("dial_ended", include_str!("../../schemas/utel/dial_ended.json")),
    ("call_blind_transferred", include_str!("../../schemas/utel/call_blind_transferred.json")),
    ("call_attended_transferred", include_str!("../../schemas/utel/call_attended_transferred.json")),
    ("call_transferred", include_str!("../../schemas/utel/call_transferred.json")),
    ("call_ended", include_str!("../../schemas/utel/call_ended.json")),
    ("call_saved", include_str!("../../schemas/utel/call_saved.json")),
];

/// `call_history.date_time` is local time in Tashkent (UTC+5, no daylight saving).
const LOCAL_UTC_OFFSET_HOURS: i32 = 5;

pub fn event_key(body: &Value) -> Result<&'static str, Violation> {
    let known: Vec<(&str, &'static str)> = SCHEMAS.iter().map(|(k, _)| (*k, *k)).collect();
    super::discriminate(body, "/data/name", &known, Vendor::Utel)
}

/// Answered / not answered, from a history `status {number}` or a CDR-style disposition.
fn disposition(value: &Value) -> Option<(EndReason, Status)> {
    let text = match value {
        Value::Object(o) => return o.get("number").and_then(disposition),
        Value::Number(n) => match n.as_i64()? {
            1 => "answered",
            2 => "no answer",
            _ => return None,
        },
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    Some(match text.to_ascii_lowercase().replace('_', " ").as_str() {
        "answered" | "1" => (EndReason::CompletedUnspecified, Status::Completed),
        "no answer" | "not answered" | "noanswer" | "2" => (EndReason::NoAnswer, Status::NoAnswer),
        "busy" => (EndReason::Busy, Status::Busy),
        "failed" | "congestion" => (EndReason::DialFailed, Status::Failed),
        "cancel" | "canceled" | "cancelled" => (EndReason::Canceled, Status::Canceled),
        _ => return None,
    })
}

fn raw_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("name").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_owned),
        other => other.to_string(),
    }
}

pub fn map(key: &'static str, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    p.consume("/data/name");
    if key == "call_saved" {
        return call_saved(p, cx);
    }
    let id_at = if key == "call_attended_transferred" { "/data/call_first/id" } else { "/data/call/id" };
    let call_id = p.id(id_at).ok_or_else(|| Violation::new(id_at, "call id is missing"))?;
    let common = cx.common(key, call_id);
    // A scalar `to`/`target` is the transfer destination; anything richer stays raw.
    let target = |at: &str| match p.peek(at) {
        Some(Value::String(_) | Value::Number(_)) => p.id(at),
        _ => None,
    };
    let draft = match key {
        "call_started" => Draft::new(EventType::CallInitiated, Details::default()),
        "dial_started" => Draft::new(EventType::CallRinging, Details::default()),
        "dial_answered" => Draft::new(EventType::CallConnected, Details::default()),
        "dial_ended" => Draft::new(EventType::CallLegEnded, Details::default()),
        "call_blind_transferred" | "call_attended_transferred" | "call_transferred" => {
            let transfer = match key {
                "call_blind_transferred" => {
                    Transfer { kind: TransferType::Blind, target: target("/data/to"), related_call_ids: vec![] }
                }
                "call_attended_transferred" => Transfer {
                    kind: TransferType::Attended,
                    target: target("/data/target"),
                    related_call_ids: p.id("/data/call_second/id").into_iter().collect(),
                },
                _ => Transfer { kind: TransferType::Unknown, target: None, related_call_ids: vec![] },
            };
            Draft::new(EventType::CallTransferred, Details { transfer: Some(transfer), ..Details::default() })
        }
        "call_ended" => {
            let raw = ["/data/call/status", "/data/call/disposition"]
                .into_iter()
                .find_map(|at| p.peek(at).filter(|v| !v.is_null()).map(|v| (at, v)));
            let known = raw.and_then(|(_, v)| disposition(v));
            if let (Some((at, _)), Some(_)) = (raw, known) {
                p.consume(at);
            }
            let (reason, status) = known.unwrap_or((EndReason::Unknown, Status::Completed));
            let kind = if status == Status::Completed { EventType::CallEnded } else { EventType::CallFailed };
            let end = End { reason, reason_raw: raw.map(|(_, v)| raw_text(v)), by: EndedBy::Unknown };
            Draft::new(kind, Details { status: Some(status), end: Some(end), ..Details::default() })
        }
        other => {
            return Err(Violation::new("/data/name", format!("no mapping for utel {other}")));
        }
    };
    Ok(Mapped { common, metadata: Default::default(), variables: Default::default(), events: vec![draft] })
}

/// `call_saved` carries the call-history record: the call's CDR, then its recording.
fn call_saved(p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    let h = "/data/call_history";
    let call_id =
        p.id(&format!("{h}/call_id")).ok_or_else(|| Violation::new(format!("{h}/call_id"), "call id is missing"))?;
    let mut common = cx.common("call_saved", call_id);
    if let Some(number) = p.peek(&format!("{h}/type/number")).and_then(Value::as_i64) {
        common.direction = match number {
            1 => Direction::Inbound,
            2 => Direction::Outbound,
            3 => Direction::Internal,
            _ => Direction::Unknown,
        };
        if common.direction != Direction::Unknown {
            p.consume(&format!("{h}/type"));
        }
    }
    cx.numbers(&mut common, p.str(&format!("{h}/src")), p.str(&format!("{h}/dst")));
    let started_at = p
        .peek(&format!("{h}/date_time"))
        .and_then(Value::as_str)
        .and_then(|t| convert::from_local(t, LOCAL_UTC_OFFSET_HOURS));
    if started_at.is_some() {
        p.consume(&format!("{h}/date_time"));
    }
    let seconds = |field: &str| {
        let at = format!("{h}/{field}");
        let ms = p.peek(&at).and_then(convert::seconds_to_ms);
        if ms.is_some() || p.peek(&at).is_some_and(Value::is_null) {
            p.consume(&at);
        }
        ms
    };
    let status = p.peek(&format!("{h}/status/number")).and_then(disposition).map(|(_, status)| status);
    if status.is_some() {
        p.consume(&format!("{h}/status"));
    }
    let recording_url = p.str(&format!("{h}/recorded_file_url"));
    let cdr = Details {
        status,
        started_at,
        duration_ms: seconds("duration"),
        talk_duration_ms: seconds("conversation"),
        recording_url: recording_url.clone(),
        ..Details::default()
    };
    let mut events = vec![Draft::new(EventType::CallCdr, cdr)];
    if let Some(url) = recording_url {
        events.push(Draft::new(
            EventType::CallRecordingReady,
            Details { recording_url: Some(url), ..Details::default() },
        ));
    }
    Ok(Mapped { common, metadata: Default::default(), variables: Default::default(), events })
}
