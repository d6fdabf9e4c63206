//! OneInbox: flat payloads discriminated by `event`; only `call.started` carries a time.

use serde_json::Value;

use super::{Context, MapResult, Vendor, Violation, discriminate_named};
use crate::canonical::{
    Analysis, Details, Draft, End, EndReason, EndedBy, EventType, Mapped, Payload, Status, convert,
};

events! {
    "oneinbox" {
        CallStarted = "call.started",
        CallEnded = "call.ended",
        CallAnalyzed = "call.analyzed",
        CallFailed = "call.failed",
        CallRecordingAvailable = "call.recording.available",
        TranscriptPartial = "transcript.partial",
        TranscriptFinal = "transcript.final",
    }
}

pub fn event(body: &Value) -> Result<Event, Violation> {
    discriminate_named(body, "/event", Vendor::Oneinbox, Event::ALL, Event::name)
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

pub fn map(event: Event, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    p.consume("/event");
    let mut common = cx.common(event.name(), p.required_id("/call_id")?);
    common.agent_id = p.id("/agent_id");
    cx.numbers(&mut common, p.str("/from_number"), p.str("/to_number"));

    let draft = match event {
        Event::CallStarted => {
            let at = p.take_with("/created_at", |v| v.as_str().and_then(convert::from_iso));
            common.occurred_at = at.clone();
            Draft::new(EventType::CallConnected, Details { connected_at: at, ..Details::default() })
        }
        Event::CallEnded => {
            let status_raw = p.str("/status");
            let (reason, status) =
                status_raw.as_deref().and_then(outcome).unwrap_or((EndReason::Unknown, Status::Completed));
            let duration_ms = p.take_with("/duration_seconds", convert::seconds_to_ms);
            Draft::new(
                EventType::for_end(status),
                Details {
                    status: Some(status),
                    end: Some(End { reason, reason_raw: status_raw, by: EndedBy::Unknown }),
                    duration_ms,
                    analysis: analysis(p),
                    ..Details::default()
                },
            )
        }
        Event::CallAnalyzed => Draft::new(EventType::CallAnalyzed, Details { analysis: analysis(p), ..Details::default() }),
        Event::CallFailed => {
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
        Event::CallRecordingAvailable => Draft::new(
            EventType::CallRecordingReady,
            Details { recording_url: p.str("/recording_url"), ..Details::default() },
        ),
        Event::TranscriptPartial | Event::TranscriptFinal => {
            let kind =
                if event == Event::TranscriptPartial { EventType::TranscriptPartial } else { EventType::TranscriptFinal };
            let transcript = (0..p.len("/messages"))
                .map(|i| p.utterance(&format!("/messages/{i}"), "role", "content", None))
                .collect::<Result<Vec<_>, _>>()?;
            p.consume("/messages");
            Draft::new(kind, Details { transcript: Some(transcript), ..Details::default() })
        }
    };
    Ok(Mapped::new(common, vec![draft]))
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
