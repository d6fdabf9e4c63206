//! OneInbox: flat payloads discriminated by `event`; only `call.started` carries a time.
//!
//! Strict on what decides (canonical.md §1.4): `event`, `call_id`, `call.started`'s
//! `created_at`, `call.ended`'s `status`, `call.failed`'s `reason`, and the facts an event is
//! nothing without (`transcript.*` `messages`, `call.recording.available` `recording_url`).
//! Everything else is descriptive: read when its shape is known, else degraded.

use serde_json::Value;

use super::{Context, Identity, MapResult, Vendor, Violation, discriminate_named};
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

/// `dedup = "event"`: OneInbox sends no event id and a time only on `call.started`, so an
/// instance is its call plus the facts that would differ between two genuinely different
/// events of that call (README, "Deduplication").
pub fn identity(event: Event, body: &Value) -> Option<Identity> {
    let id = Identity::new(event.name()).field(body, "call_id", &["/call_id"])?;
    Some(match event {
        Event::CallStarted => id.field(body, "created_at", &["/created_at"])?,
        Event::CallEnded => id.optional(body, "status", "/status").optional(body, "duration_seconds", "/duration_seconds"),
        Event::CallAnalyzed => id.optional(body, "outcome", "/outcome").optional(body, "ai_summary", "/ai_summary"),
        Event::CallFailed => id.optional(body, "reason", "/reason"),
        Event::CallRecordingAvailable => id.field(body, "recording_url", &["/recording_url"])?,
        // Partial transcripts grow during a call: the messages tell them apart.
        Event::TranscriptPartial | Event::TranscriptFinal => id.field(body, "messages", &["/messages"])?,
    })
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
    common.agent_id = p.describe_id("agent", "/agent_id");
    let number = |field: &str| p.describe_str("numbers", field);
    cx.numbers(&mut common, number("/from_number"), number("/to_number"));

    let draft = match event {
        Event::CallStarted => {
            let at = p.take_with("/created_at", |v| v.as_str().and_then(convert::from_iso));
            common.occurred_at = at.clone();
            Draft::new(EventType::CallConnected, Details { connected_at: at, ..Details::default() })
        }
        Event::CallEnded => {
            let status_raw = p.str("/status");
            if let Some(raw) = status_raw.as_deref().filter(|raw| outcome(raw).is_none()) {
                p.unknown_value("status", "/status", raw);
            }
            let (reason, status) =
                status_raw.as_deref().and_then(outcome).unwrap_or((EndReason::Unknown, Status::Completed));
            let duration_ms = p.describe_seconds("duration", "/duration_seconds");
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
            if let Some(raw) = reason_raw.as_deref().filter(|raw| outcome(raw).is_none()) {
                p.unknown_value("reason", "/reason", raw);
            }
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
        // The URL is the event (the schema requires it): not descriptive here.
        Event::CallRecordingAvailable => Draft::new(
            EventType::CallRecordingReady,
            Details { recording_url: p.str("/recording_url"), ..Details::default() },
        ),
        Event::TranscriptPartial | Event::TranscriptFinal => {
            let kind =
                if event == Event::TranscriptPartial { EventType::TranscriptPartial } else { EventType::TranscriptFinal };
            // The messages are the event (the schema checks them): an unreadable one rejects
            // the payload into the quarantine rather than sending a transcript that is not.
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
/// example); a differing `analysis.summary` is left in `vendor_extra` rather than dropped. All
/// descriptive: a value of another shape is degraded as `analysis`.
fn analysis(p: &Payload<'_>) -> Option<Analysis> {
    let outcome = p.describe_str("analysis", "/outcome");
    let ai_summary = p.describe_str("analysis", "/ai_summary");
    let nested = nested_summary(p);
    let summary = match (ai_summary, nested) {
        (Some(s), Some(n)) if s == n => {
            p.consume("/analysis/summary");
            Some(s)
        }
        (Some(s), _) => Some(s),
        (None, Some(n)) => {
            p.consume("/analysis/summary");
            Some(n.to_owned())
        }
        (None, None) => None,
    };
    (summary.is_some() || outcome.is_some()).then(|| Analysis {
        summary,
        outcome,
        sentiment: None,
        sentiment_raw: None,
        extracted: Default::default(),
    })
}

/// `analysis.summary` when it is a string, not yet consumed; a null `analysis` or `summary` is
/// consumed (it says "none"), any other shape degraded.
fn nested_summary<'a>(p: &Payload<'a>) -> Option<&'a str> {
    if !p.peek("/analysis")?.is_object() {
        p.describe("analysis", "/analysis", "an object", |_| None::<()>);
        return None;
    }
    match p.peek("/analysis/summary")? {
        Value::String(summary) => Some(summary),
        _ => {
            p.describe_str("analysis", "/analysis/summary");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::vendors::{Normalized, Origin, Rejection, normalize};

    fn run(body: Value) -> Result<Normalized, Rejection> {
        let origin = Origin { source: "oneinbox", vendor: Vendor::Oneinbox, phone_region: None };
        normalize(&origin, &serde_json::to_vec(&body).unwrap(), Utc::now())
    }

    #[test]
    fn a_negative_duration_is_degraded_and_null_summaries_say_none() {
        let body = json!({"event": "call.ended", "call_id": "c1", "status": "completed", "duration_seconds": -3,
            "ai_summary": "Booked.", "analysis": {"summary": null}});
        let normalized = run(body).unwrap();
        let event = &normalized.events[0];
        assert_eq!(event.kind, EventType::CallEnded);
        let degraded: Vec<_> = normalized.degraded.iter().map(|d| (d.field, d.pointer.as_str())).collect();
        assert_eq!(degraded, [("duration", "/duration_seconds")]);
        assert_eq!(Value::Object((*event.data.vendor_extra).clone()), json!({"duration_seconds": -3}));
    }

    /// The facts these events consist of decide them: unreadable, the payload is rejected
    /// (and quarantined) rather than sent without its point.
    #[test]
    fn transcript_messages_and_recording_urls_decide_their_events() {
        let bodies = [
            json!({"event": "transcript.final", "call_id": "c1", "messages": [{"role": "agent", "content": 5}]}),
            json!({"event": "transcript.partial", "call_id": "c1", "messages": "Agent: hi"}),
            json!({"event": "call.recording.available", "call_id": "c1", "recording_url": {"url": "x"}}),
            json!({"event": "call.ended", "call_id": "c1", "status": 1}),
            json!({"event": "call.started", "call_id": "c1", "created_at": "noon"}),
        ];
        for body in bodies {
            assert!(matches!(run(body.clone()), Err(Rejection::Invalid { .. })), "{body} accepted");
        }
    }

    /// A `status` or `reason` outside the table is `unknown` with its raw value and reported
    /// where it is (for the drift report).
    #[test]
    fn unknown_statuses_and_reasons_are_reported_with_their_raw_value() {
        let drift = |body: Value| {
            let normalized = run(body).unwrap();
            let end = normalized.events[0].data.details.end.clone().unwrap();
            assert_eq!(end.reason, EndReason::Unknown);
            normalized.drift.iter().map(|d| (d.kind.as_str(), d.path.clone(), d.value.clone())).collect::<Vec<_>>()
        };
        assert_eq!(
            drift(json!({"event": "call.ended", "call_id": "c1", "status": "teleported"})),
            [("unknown_value", "status".to_owned(), "teleported".to_owned())]
        );
        assert_eq!(
            drift(json!({"event": "call.failed", "call_id": "c1", "reason": "eaten-by-grue"})),
            [("unknown_value", "reason".to_owned(), "eaten-by-grue".to_owned())]
        );
    }

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/oneinbox/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn key(body: &Value) -> Option<[u8; 32]> {
        identity(event(body).unwrap(), body).map(|id| id.digest(Vendor::Oneinbox))
    }

    /// The README table's keys; fields outside them (an added retry counter, other numbers)
    /// do not count, the ones in them tell instances apart.
    #[test]
    fn the_identity_is_the_call_and_the_facts_that_differ_between_instances() {
        let labels = |name: &str| {
            let body = fixture(name);
            identity(event(&body).unwrap(), &body).unwrap().labels()
        };
        assert_eq!(labels("doc-call.started.json"), ["call_id", "created_at"]);
        assert_eq!(labels("doc-call.ended.json"), ["call_id", "status", "duration_seconds"]);
        assert_eq!(labels("doc-call.analyzed.json"), ["call_id", "outcome", "ai_summary"]);
        assert_eq!(labels("doc-call.failed.json"), ["call_id", "reason"]);
        assert_eq!(labels("doc-call.recording.available.json"), ["call_id", "recording_url"]);
        assert_eq!(labels("doc-transcript.partial.json"), ["call_id", "messages"]);
        assert_eq!(labels("doc-transcript.final.json"), ["call_id", "messages"]);

        let ended = fixture("doc-call.ended.json");
        let mut retried = ended.clone();
        retried["delivery_attempt"] = json!(2);
        retried["to_number"] = json!("+91 98765 43210");
        assert_eq!(key(&ended), key(&retried));
        let mut busy = ended.clone();
        busy["status"] = json!("busy");
        assert_ne!(key(&ended), key(&busy));
        let mut other_call = ended.clone();
        other_call["call_id"] = json!("call_other");
        assert_ne!(key(&ended), key(&other_call));

        // Partial transcripts of one call grow; each is its own event.
        let (partial, last) = (fixture("doc-transcript.partial.json"), fixture("doc-transcript.final.json"));
        let mut longer = partial.clone();
        longer["messages"] = last["messages"].clone();
        assert_ne!(key(&partial), key(&longer));
        assert_ne!(key(&longer), key(&last), "partial and final differ by event");

        let mut unstarted = fixture("doc-call.started.json");
        unstarted.as_object_mut().unwrap().remove("created_at");
        assert_eq!(key(&unstarted), None, "no identity: keyed by the body");
    }
}
