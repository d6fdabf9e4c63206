//! Utel (PBX): `{"time": "HH:mm:ss", "data": {"name": …, "domain": …, …}}`.
//!
//! **Provisional.** Utel publishes no per-event payloads; the shapes come from a third-party
//! summary of its docs (`vendors-research.md` §3.4). This adapter reads only the ids and the
//! documented call-history record, leaves everything else in `vendor_extra`, and tightening
//! it once a real delivery is captured is a change to this file and `schemas/utel/`.
//! The envelope `time` has no date and no zone, so it is never interpreted (the event time
//! is `received_at`); it travels in `vendor_extra`.
//!
//! Strict on what decides (canonical.md §1.4): `data.name`, the call id and `call_ended`'s
//! status / disposition. Transfer targets, related calls and every `call_saved` history field
//! but the call id are descriptive: read when their shape is known, else degraded.

use serde_json::Value;

use super::{Context, Identity, MapResult, Violation};
use crate::canonical::{
    Details, Direction, Draft, End, EndReason, EndedBy, EventType, Mapped, Payload, Status, Transfer, TransferType,
    Vendor, convert, payload::kind_of,
};

events! {
    "utel" {
        CallStarted = "call_started",
        DialStarted = "dial_started",
        DialAnswered = "dial_answered",
        DialEnded = "dial_ended",
        CallBlindTransferred = "call_blind_transferred",
        CallAttendedTransferred = "call_attended_transferred",
        CallTransferred = "call_transferred",
        CallEnded = "call_ended",
        CallSaved = "call_saved",
    }
}

/// `call_history.date_time` is local time in Tashkent (UTC+5, no daylight saving).
const LOCAL_UTC_OFFSET_HOURS: i32 = 5;

pub fn event(body: &Value) -> Result<Event, Violation> {
    super::discriminate_named(body, "/data/name", Vendor::Utel, Event::ALL, Event::name)
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

/// `dedup = "event"` (provisional, as the adapter is): the event, its call, the envelope
/// `time` and the whole `data` object. Utel publishes no payloads, so nothing in `data` is
/// known to be safe to ignore (ring-group legs of one call can share a second); only key
/// order, whitespace and fields outside `data` do not count.
pub fn identity(event: Event, body: &Value) -> Option<Identity> {
    let call = match event {
        Event::CallAttendedTransferred => "/data/call_first/id",
        Event::CallSaved => "/data/call_history/call_id",
        _ => "/data/call/id",
    };
    Identity::new(event.name())
        .field(body, "call_id", &[call])?
        .field(body, "time", &["/time"])?
        .field(body, "data", &["/data"])
}

pub fn map(event: Event, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    p.consume("/data/name");
    // A scalar `to`/`target` is the transfer destination; anything richer stays raw.
    let target = |at: &str| p.describe_id("transfer", at);
    let transferred = |transfer| Draft::new(EventType::CallTransferred, Details { transfer: Some(transfer), ..Details::default() });
    let draft = match event {
        Event::CallStarted => Draft::new(EventType::CallInitiated, Details::default()),
        Event::DialStarted => Draft::new(EventType::CallRinging, Details::default()),
        Event::DialAnswered => Draft::new(EventType::CallConnected, Details::default()),
        Event::DialEnded => Draft::new(EventType::CallLegEnded, Details::default()),
        Event::CallBlindTransferred => {
            transferred(Transfer { kind: TransferType::Blind, target: target("/data/to"), related_call_ids: vec![] })
        }
        Event::CallAttendedTransferred => transferred(Transfer {
            kind: TransferType::Attended,
            target: target("/data/target"),
            related_call_ids: related_call(p).into_iter().collect(),
        }),
        Event::CallTransferred => {
            transferred(Transfer { kind: TransferType::Unknown, target: None, related_call_ids: vec![] })
        }
        Event::CallEnded => {
            let raw = ["/data/call/status", "/data/call/disposition"]
                .into_iter()
                .find_map(|at| p.peek(at).filter(|v| !v.is_null()).map(|v| (at, v)));
            let known = raw.and_then(|(_, v)| disposition(v));
            if let (Some((at, value)), None) = (raw, known) {
                let field = if at.ends_with("status") { "status" } else { "disposition" };
                p.unknown_value(field, at, &raw_text(value));
            }
            if let (Some((at, _)), Some(_)) = (raw, known) {
                p.consume(at);
            }
            let (reason, status) = known.unwrap_or((EndReason::Unknown, Status::Completed));
            let end = End { reason, reason_raw: raw.map(|(_, v)| raw_text(v)), by: EndedBy::Unknown };
            Draft::new(EventType::for_end(status), Details { status: Some(status), end: Some(end), ..Details::default() })
        }
        Event::CallSaved => return call_saved(p, cx),
    };
    let id_at = if event == Event::CallAttendedTransferred { "/data/call_first/id" } else { "/data/call/id" };
    let common = cx.common(event.name(), p.required_id(id_at)?);
    Ok(Mapped::new(common, vec![draft]))
}

/// The consultation call of an attended transfer, `call_second.id`; descriptive.
fn related_call(p: &Payload<'_>) -> Option<String> {
    let at = "/data/call_second";
    match p.peek(at)? {
        Value::Object(_) => p.describe_id("transfer", &format!("{at}/id")),
        Value::Null => None,
        other => {
            p.degrade("transfer", at, format!("expected an object, got {}", kind_of(other)));
            None
        }
    }
}

/// `call_saved` carries the call-history record: the call's CDR, then its recording. Only
/// the call id decides; every other field is read when its shape is known, else degraded.
fn call_saved(p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    let h = "/data/call_history";
    let at = |field: &str| format!("{h}/{field}");
    let mut common = cx.common(Event::CallSaved.name(), p.required_id(&at("call_id"))?);
    common.direction = history_direction(p, &at("type"));
    let number = |field: &str| p.describe_str("numbers", &at(field));
    cx.numbers(&mut common, number("src"), number("dst"));
    let started_at = p.describe("started_at", &at("date_time"), "a local time Y-m-d H:i:s", |v| {
        v.as_str().and_then(|t| convert::from_local(t, LOCAL_UTC_OFFSET_HOURS))
    });
    let status = history_status(p, &at("status"));
    let recording_url = p.describe_str("recording_url", &at("recorded_file_url"));
    let cdr = Details {
        status,
        started_at,
        duration_ms: p.describe_seconds("duration", &at("duration")),
        talk_duration_ms: p.describe_seconds("duration", &at("conversation")),
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
    Ok(Mapped::new(common, events))
}

/// History `type {number, name}`: 1 incoming, 2 outgoing, 3 internal. Consumed whole when the
/// number is known (the name only labels it); an unknown number stays in vendor_extra, any
/// other shape is degraded.
fn history_direction(p: &Payload<'_>, at: &str) -> Direction {
    let Some(value) = p.peek(at).filter(|v| !v.is_null()) else { return Direction::Unknown };
    let direction = match value.get("number").map(Value::as_i64) {
        Some(Some(1)) => Direction::Inbound,
        Some(Some(2)) => Direction::Outbound,
        Some(Some(3)) => Direction::Internal,
        Some(Some(_)) => return Direction::Unknown,
        _ => {
            p.degrade("direction", at, shape_problem(value));
            return Direction::Unknown;
        }
    };
    p.mark(value);
    direction
}

/// Why a history `{number, name}` value cannot be read.
fn shape_problem(value: &Value) -> String {
    match value {
        Value::Object(_) => "expected an integer number".to_owned(),
        other => format!("expected an object {{number, name}}, got {}", kind_of(other)),
    }
}

/// History `status {number, name}` (or a bare disposition, as `call_ended` may send it):
/// consumed whole when known; an unknown number stays in vendor_extra, any other shape is
/// degraded.
fn history_status(p: &Payload<'_>, at: &str) -> Option<Status> {
    let value = p.peek(at).filter(|v| !v.is_null())?;
    if let Some((_, status)) = disposition(value) {
        p.mark(value);
        return Some(status);
    }
    let known_shape = match value {
        Value::Object(o) => o.get("number").is_some_and(Value::is_i64),
        Value::String(_) | Value::Number(_) => true,
        _ => false,
    };
    if known_shape {
        p.unknown_value("status", at, &raw_text(value));
    } else {
        p.degrade("status", at, shape_problem(value));
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::vendors::{Normalized, Origin, Rejection, normalize};

    fn run(body: Value) -> Result<Normalized, Rejection> {
        let origin = Origin { source: "utel", vendor: Vendor::Utel, phone_region: None };
        normalize(&origin, &serde_json::to_vec(&body).unwrap(), Utc::now())
    }

    /// A known shape with a value not in the table is not a degradation: it stays in
    /// vendor_extra, as unknown words do. A bare disposition string is read as call_ended's is.
    #[test]
    fn unknown_history_numbers_stay_raw_and_bare_dispositions_are_read() {
        let body = json!({"data": {"name": "call_saved", "call_history": {
            "call_id": "c1", "type": {"number": 7, "name": "Robot"}, "status": "ANSWERED"}}});
        let normalized = run(body).unwrap();
        assert!(normalized.degraded.is_empty(), "{:?}", normalized.degraded);
        let data = &normalized.events[0].data;
        assert_eq!((data.common.direction, data.details.status), (Direction::Unknown, Some(Status::Completed)));
        assert_eq!(Value::Object((*data.vendor_extra).clone()), json!({"data": {"call_history": {"type": {"number": 7, "name": "Robot"}}}}));
    }

    /// A disposition or history status outside the table is `unknown` (raw kept) and reported
    /// with its raw text (an object's `name`) for the drift report; a known one is not.
    #[test]
    fn unknown_dispositions_and_statuses_are_reported_with_their_raw_value() {
        let drift = |body: Value| {
            let normalized = run(body).unwrap();
            normalized.drift.iter().map(|d| (d.kind.as_str(), d.path.clone(), d.value.clone())).collect::<Vec<_>>()
        };
        let ended = json!({"data": {"name": "call_ended", "call": {"id": "c1", "disposition": "ROBOCALL"}}});
        assert_eq!(drift(ended), [("unknown_value", "data.call.disposition".to_owned(), "ROBOCALL".to_owned())]);
        let status = json!({"data": {"name": "call_ended", "call": {"id": "c1", "status": {"number": 9, "name": "Lost"}}}});
        assert_eq!(drift(status), [("unknown_value", "data.call.status".to_owned(), "Lost".to_owned())]);
        let saved = json!({"data": {"name": "call_saved", "call_history": {"call_id": "c1", "status": "LOST"}}});
        assert_eq!(drift(saved), [("unknown_value", "data.call_history.status".to_owned(), "LOST".to_owned())]);
        let known = json!({"data": {"name": "call_saved", "call_history": {"call_id": "c1", "status": "ANSWERED"}}});
        assert_eq!(drift(known), []);
    }

    #[test]
    fn an_unreadable_related_call_id_is_degraded() {
        let body = json!({"data": {"name": "call_attended_transferred", "call_first": {"id": "c1"},
            "call_second": {"id": {"uuid": "c2"}}, "target": 103}});
        let normalized = run(body).unwrap();
        let transfer = normalized.events[0].data.details.transfer.clone().unwrap();
        assert_eq!((transfer.target.as_deref(), transfer.related_call_ids.len()), (Some("103"), 0));
        let degraded: Vec<_> = normalized.degraded.iter().map(|d| (d.field, d.pointer.as_str())).collect();
        assert_eq!(degraded, [("transfer", "/data/call_second/id")]);
    }

    #[test]
    fn the_call_ended_status_decides() {
        let body = json!({"data": {"name": "call_ended", "call": {"id": "c1", "status": true}}});
        assert!(matches!(run(body), Err(Rejection::Invalid { .. })));
    }

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/utel/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn key(body: &Value) -> Option<[u8; 32]> {
        identity(event(body).unwrap(), body).map(|id| id.digest(Vendor::Utel))
    }

    #[test]
    fn the_identity_is_the_event_call_time_and_whole_data_object() {
        for name in ["synthetic-call_started.json", "synthetic-dial_started.json", "synthetic-call_saved-answered.json",
            "synthetic-call_attended_transferred.json"]
        {
            let body = fixture(name);
            assert_eq!(identity(event(&body).unwrap(), &body).unwrap().labels(), ["call_id", "time", "data"], "{name}");
        }
        let dial = fixture("synthetic-dial_started.json");
        let mut retried = dial.clone();
        retried["attempt"] = json!(2);
        assert_eq!(key(&dial), key(&retried), "outside data");
        // A ring group dials several extensions of one call in one second.
        let mut other_leg = dial.clone();
        other_leg["data"]["destChannel"]["id"] = json!("1768308876.4");
        assert_ne!(key(&dial), key(&other_leg));
        let mut later = dial.clone();
        later["time"] = json!("17:54:37");
        assert_ne!(key(&dial), key(&later));

        let mut timeless = dial;
        timeless.as_object_mut().unwrap().remove("time");
        assert_eq!(key(&timeless), None, "no identity: keyed by the body");
    }
}
