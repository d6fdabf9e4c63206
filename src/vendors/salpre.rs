//! Salpre: `{event_type, timestamp_utc (epoch seconds), payload, is_test}`. Call ids are
//! integers; `transcript` and `error` nest the call under `payload.call`.
//!
//! Strict on what decides (canonical.md §1.4): `event_type`, the call id, `timestamp_utc`
//! (the event time), `is_test` (it decides which routes get the event), and the facts an
//! event is nothing without (`transcript`'s `type` and `transcript`, `error`'s
//! `error_message`). Numbers, direction and `call_ended`'s transcript are descriptive.

use serde_json::Value;

use super::{Context, Identity, MapResult, Violation};
use crate::canonical::{
    Details, Draft, End, EndReason, EndedBy, ErrorInfo, EventType, Mapped, Payload, Status, Vendor, convert,
};

events! {
    "salpre" {
        CallInitiated = "call_initiated",
        CallRinging = "call_ringing",
        CallAnswered = "call_answered",
        Transcript = "transcript",
        CallEnded = "call_ended",
        Error = "error",
    }
}

pub fn event(body: &Value) -> Result<Event, Violation> {
    super::discriminate_named(body, "/event_type", Vendor::Salpre, Event::ALL, Event::name)
}

/// `dedup = "event"`: the event, its call and `timestamp_utc` (seconds); a `transcript`
/// segment also by its speaker, text and own timestamp (several can share a second), an
/// `error` by its message.
pub fn identity(event: Event, body: &Value) -> Option<Identity> {
    let id = Identity::new(event.name())
        .field(body, "call_id", &["/payload/call_id", "/payload/call/id"])?
        .field(body, "timestamp_utc", &["/timestamp_utc"])?;
    Some(match event {
        Event::Transcript => id
            .optional(body, "type", "/payload/type")
            .optional(body, "transcript", "/payload/transcript")
            .optional(body, "payload.timestamp_utc", "/payload/timestamp_utc"),
        Event::Error => id.optional(body, "error_message", "/payload/error_message"),
        Event::CallInitiated | Event::CallRinging | Event::CallAnswered | Event::CallEnded => id,
    })
}

pub fn map(event: Event, p: &Payload<'_>, cx: &Context<'_>) -> MapResult {
    p.consume("/event_type");
    // `transcript` and `error` carry the call as an object; the others flatten it.
    let (call, id_field) = match event {
        Event::Transcript | Event::Error => ("/payload/call", "id"),
        Event::CallInitiated | Event::CallRinging | Event::CallAnswered | Event::CallEnded => ("/payload", "call_id"),
    };
    let mut common = cx.common(event.name(), p.required_id(&format!("{call}/{id_field}"))?);
    common.test = p.bool("/is_test").unwrap_or(false);
    common.direction = p.describe_direction(&format!("{call}/direction"));
    let number = |field: &str| p.describe_str("numbers", &format!("{call}/{field}"));
    cx.numbers(&mut common, number("from"), number("to"));
    let at = p.i64("/timestamp_utc").and_then(convert::from_epoch_s);
    common.occurred_at = at.clone();

    let events = match event {
        Event::CallInitiated => {
            vec![Draft::new(EventType::CallInitiated, Details { started_at: at, ..Details::default() })]
        }
        Event::CallRinging => vec![Draft::new(EventType::CallRinging, Details::default())],
        Event::CallAnswered => {
            vec![Draft::new(EventType::CallConnected, Details { connected_at: at, ..Details::default() })]
        }
        Event::Transcript => {
            // `payload.timestamp_utc` is a string of unknown unit ("111111" in the docs): it
            // is not interpreted, and travels in vendor_extra.
            let utterance = p.utterance("/payload", "type", "transcript", None)?;
            vec![Draft::new(
                EventType::TranscriptSegment,
                Details { transcript: Some(vec![utterance]), ..Details::default() },
            )]
        }
        Event::CallEnded => {
            let end = End { reason: EndReason::CompletedUnspecified, reason_raw: None, by: EndedBy::Unknown };
            let ended = Details { status: Some(Status::Completed), end: Some(end), ended_at: at, ..Details::default() };
            let mut events = vec![Draft::new(EventType::CallEnded, ended)];
            // Items are `{type, message, utc_timestamp?}`; the timestamp (unit unknown) is not
            // read and stays in vendor_extra.
            let transcript = p.describe_utterances("transcript", "/payload/transcript", "type", "message");
            if let Some(transcript) = transcript.filter(|t| !t.is_empty()) {
                events.push(Draft::new(
                    EventType::TranscriptFinal,
                    Details { transcript: Some(transcript), ..Details::default() },
                ));
            }
            events
        }
        Event::Error => {
            let message = p
                .str("/payload/error_message")
                .ok_or_else(|| Violation::new("/payload/error_message", "error message is missing"))?;
            vec![Draft::new(EventType::CallError, Details { error: Some(ErrorInfo { message }), ..Details::default() })]
        }
    };
    Ok(Mapped::new(common, events))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::vendors::{Normalized, Origin, Rejection, normalize};

    fn run(body: Value) -> Result<Normalized, Rejection> {
        let origin = Origin { source: "salpre", vendor: Vendor::Salpre, phone_region: None };
        normalize(&origin, &serde_json::to_vec(&body).unwrap(), Utc::now())
    }

    #[test]
    fn a_transcript_that_is_not_an_array_is_degraded() {
        let body = json!({"event_type": "call_ended", "timestamp_utc": 1760084597,
            "payload": {"call_id": 1, "direction": "outbound", "transcript": "ai: hello"}});
        let normalized = run(body).unwrap();
        assert_eq!(normalized.events.len(), 1, "no transcript.final");
        assert_eq!(normalized.events[0].data.common.direction, crate::canonical::Direction::Outbound);
        assert_eq!(normalized.degraded.len(), 1);
        assert_eq!(normalized.degraded[0].problem, "expected an array, got a string");
        assert_eq!(normalized.events[0].data.vendor_extra["payload"]["transcript"], "ai: hello");
    }

    /// `is_test` decides which routes get the event, and a segment is nothing without its
    /// speaker and text: these reject.
    #[test]
    fn is_test_and_the_segment_decide() {
        let bodies = [
            json!({"event_type": "call_answered", "timestamp_utc": 1, "payload": {"call_id": 1}, "is_test": "yes"}),
            json!({"event_type": "transcript", "timestamp_utc": 1,
                "payload": {"call": {"id": 1}, "type": "ai", "transcript": ["hi"]}}),
            json!({"event_type": "error", "timestamp_utc": 1, "payload": {"call": {"id": 1}, "error_message": 3}}),
            json!({"event_type": "call_ringing", "timestamp_utc": "now", "payload": {"call_id": 1}}),
        ];
        for body in bodies {
            assert!(matches!(run(body.clone()), Err(Rejection::Invalid { .. })), "{body} accepted");
        }
    }

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/salpre/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn key(body: &Value) -> Option<[u8; 32]> {
        identity(event(body).unwrap(), body).map(|id| id.digest(Vendor::Salpre))
    }

    #[test]
    fn the_identity_is_the_event_call_and_second_and_a_segment_its_speaker_and_text() {
        let labels = |name: &str| {
            let body = fixture(name);
            identity(event(&body).unwrap(), &body).unwrap().labels()
        };
        for name in ["doc-call_initiated.json", "doc-call_ringing.json", "doc-call_answered.json", "doc-call_ended.json"] {
            assert_eq!(labels(name), ["call_id", "timestamp_utc"], "{name}");
        }
        assert_eq!(labels("doc-transcript.json"), ["call_id", "timestamp_utc", "type", "transcript", "payload.timestamp_utc"]);
        assert_eq!(labels("doc-error.json"), ["call_id", "timestamp_utc", "error_message"]);

        let ended = fixture("doc-call_ended.json");
        let mut retried = ended.clone();
        retried["retry"] = json!(true);
        retried["payload"]["source"] = json!("salprebox:OTHER");
        assert_eq!(key(&ended), key(&retried));
        let mut later = ended.clone();
        later["timestamp_utc"] = json!(1760084598);
        assert_ne!(key(&ended), key(&later));

        // Two segments in one second: the speaker and the text tell them apart.
        let segment = fixture("doc-transcript.json");
        let mut reply = segment.clone();
        reply["payload"]["type"] = json!("ai");
        let mut other_text = segment.clone();
        other_text["payload"]["transcript"] = json!("Fine, thanks.");
        assert_ne!(key(&segment), key(&reply));
        assert_ne!(key(&segment), key(&other_text));
        assert_ne!(key(&fixture("doc-call_ringing.json")), key(&fixture("doc-call_answered.json")));

        let mut timeless = ended;
        timeless.as_object_mut().unwrap().remove("timestamp_utc");
        assert_eq!(key(&timeless), None, "no identity: keyed by the body");
    }
}
