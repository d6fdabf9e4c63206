//! OneInbox: flat payloads discriminated by `event`; only `call.started` carries a time.

use serde_json::Value;

use super::{Context, MapResult, Violation, discriminate};
use crate::canonical::{
    Analysis, Details, Draft, End, EndReason, EndedBy, EventType, Mapped, Payload, Status, convert,
};

pub const SCHEMAS: &[(&str, &str)] = &[
    ("call.started", include_str!("../../schemas/oneinbox/call.started.json")),
    ("call.ended", include_str!("../../schemas/oneinbox/call.ended.json")),
    ("call.analyzed", include_str!("../../schemas/oneinbox/call.analyzed.json")),
    ("call.failed", include_str!("../../schemas/oneinbox/call.failed.json")),
    ("call.recording.available", include_str!("../../schemas/oneinbox/call.recording.available.json")),
    ("transcript.partial", include_str!("../../schemas/oneinbox/transcript.partial.json")),
    ("transcript.final", include_str!("../../schemas/oneinbox/transcript.final.json")),
];

pub fn event_key(body: &Value) -> Result<&'static str, Violation> {
    let known: Vec<(&str, &'static str)> = SCHEMAS.iter().map(|(k, _)| (*k, *k)).collect();
    discriminate(body, "/event", &known, crate::canonical::Vendor::Oneinbox)
}

/// Twilio-style `reason` / `status` values (OneInbox runs on Twilio).
fn outcome(raw: &str) -> Option<(EndReason, Status)> {
    Some(match raw {
        "completed" => (EndReason::CompletedUnspecified, Status::Completed),
        "no-answer" => (EndReason::NoAnswer, Status::NoAnswer),
        "busy" => (EndReason::Busy, Status::Busy),
        "canceled" => (EndReason::Canceled, Status::Canceled),
        "failed" => (EndReason::DialFailed, Status::Failed),
        _ => return None,
    })
}

pub fn map(key: &'static str, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    p.consume("/event");
    let call_id = p.id("/call_id").ok_or_else(|| Violation::new("/call_id", "call id is missing"))?;
    let mut common = cx.common(key, call_id);
    common.agent_id = p.id("/agent_id");
    cx.numbers(&mut common, p.str("/from_number"), p.str("/to_number"));

    let draft = match key {
        "call.started" => {
            let at = p.peek("/created_at").and_then(Value::as_str).and_then(convert::from_iso);
            if at.is_some() {
                p.consume("/created_at");
            }
            common.occurred_at = at.clone();
            Draft::new(EventType::CallConnected, Details { connected_at: at, ..Details::default() })
        }
        "call.ended" => {
            let status_raw = p.str("/status");
            let (reason, status) =
                status_raw.as_deref().and_then(outcome).unwrap_or((EndReason::Unknown, Status::Completed));
            let kind = if status == Status::Completed { EventType::CallEnded } else { EventType::CallFailed };
            let duration_ms = p.peek("/duration_seconds").and_then(convert::seconds_to_ms);
            if duration_ms.is_some() {
                p.consume("/duration_seconds");
            }
            Draft::new(
                kind,
                Details {
                    status: Some(status),
                    end: Some(End { reason, reason_raw: status_raw, by: EndedBy::Unknown }),
                    duration_ms,
                    analysis: analysis(p),
                    ..Details::default()
                },
            )
        }
        "call.analyzed" => Draft::new(EventType::CallAnalyzed, Details { analysis: analysis(p), ..Details::default() }),
        "call.failed" => {
            let reason_raw = p.str("/reason");
            let (reason, status) = reason_raw
                .as_deref()
                .and_then(outcome)
                .filter(|(_, status)| *status != Status::Completed)
                .unwrap_or((EndReason::Unknown, Status::Failed));
            Draft::new(
                EventType::CallFailed,
                Details {
                    status: Some(status),
                    end: Some(End { reason, reason_raw, by: EndedBy::Unknown }),
                    ..Details::default()
                },
            )
        }
        "call.recording.available" => Draft::new(
            EventType::CallRecordingReady,
            Details { recording_url: p.str("/recording_url"), ..Details::default() },
        ),
        "transcript.partial" | "transcript.final" => {
            let kind =
                if key == "transcript.partial" { EventType::TranscriptPartial } else { EventType::TranscriptFinal };
            let transcript = (0..p.len("/messages"))
                .map(|i| p.utterance(&format!("/messages/{i}"), "role", "content", None))
                .collect::<Result<Vec<_>, _>>()?;
            p.consume("/messages");
            Draft::new(kind, Details { transcript: Some(transcript), ..Details::default() })
        }
        other => return Err(Violation::new("/event", format!("no mapping for {other}"))),
    };
    Ok(Mapped { common, metadata: Default::default(), variables: Default::default(), events: vec![draft] })
}

/// `outcome`, `ai_summary` and `analysis.summary` (the same text twice in OneInbox's
/// example); a differing `analysis.summary` is left in `vendor_extra` rather than dropped.
fn analysis(p: &Payload<'_>) -> Option<Analysis> {
    let outcome = p.str("/outcome");
    let ai_summary = p.str("/ai_summary");
    let nested = p.peek("/analysis/summary").and_then(Value::as_str);
    let summary = match (ai_summary, nested) {
        (Some(s), Some(n)) if s == n => {
            p.consume("/analysis/summary");
            Some(s)
        }
        (Some(s), _) => Some(s),
        (None, Some(_)) => p.str("/analysis/summary"),
        (None, None) => None,
    };
    if p.peek("/analysis").is_some_and(Value::is_null) {
        p.consume("/analysis");
    }
    (summary.is_some() || outcome.is_some()).then(|| Analysis {
        summary,
        outcome,
        sentiment: None,
        sentiment_raw: None,
        extracted: Default::default(),
    })
}
