//! Sample canonical events for test sends (`POST /v1/admin/routes/{name}/test`): one of each
//! type, shaped like a real one (every field its type promises), marked `data.test = true`,
//! with a random id and call id so a receiver never takes it for a delivered event.

use serde_json::{Map, Value};

use super::{
    Analysis, CloudEvent, Common, Details, Direction, Draft, End, EndReason, EndedBy, ErrorInfo, EventType, Flow,
    FlowNode, Mapped, Role, Sms, Status, Transfer, TransferType, Utterance, Vendor,
};

/// `vendor_event` of every sample: no vendor sent it.
pub const VENDOR_EVENT: &str = "callgate.test";

const FROM: &str = "+15555550100";
const TO: &str = "+15555550101";

/// A sample event of `kind`, as if `source` (of `vendor`) had sent it at `now`.
pub fn sample(kind: EventType, source: &str, vendor: Vendor, now: chrono::DateTime<chrono::Utc>) -> CloudEvent {
    let at = super::convert::rfc3339(now);
    let started = super::convert::rfc3339(now - chrono::Duration::seconds(60));
    let call_id = format!("test_{:016x}", fastrand::u64(..));
    let common = Common {
        schema_version: super::SCHEMA_VERSION,
        vendor,
        source: source.to_owned(),
        vendor_event: VENDOR_EVENT.to_owned(),
        // What a vox event always carries; null for the others.
        vendor_format: (vendor == Vendor::Vox).then(|| super::VendorFormat::parse("v2")).flatten(),
        test: true,
        call_id,
        agent_id: None,
        direction: Direction::Outbound,
        from: Some(FROM.to_owned()),
        to: Some(TO.to_owned()),
        from_e164: Some(FROM.to_owned()),
        to_e164: Some(TO.to_owned()),
        occurred_at: Some(at.clone()),
        received_at: at.clone(),
    };
    let utterance = || Utterance {
        role: Role::Agent,
        role_raw: "agent".to_owned(),
        text: "This is a test event from callgate.".to_owned(),
        at: Some(at.clone()),
    };
    let mut details = Details::default();
    match kind {
        EventType::CallEnded | EventType::CallCdr => {
            details.status = Some(Status::Completed);
            details.started_at = Some(started.clone());
            details.ended_at = Some(at.clone());
            details.duration_ms = Some(60_000);
            if kind == EventType::CallEnded {
                details.end = Some(End { reason: EndReason::CustomerHangup, reason_raw: None, by: EndedBy::Customer });
            }
        }
        EventType::CallFailed => {
            details.status = Some(Status::NoAnswer);
            details.end = Some(End { reason: EndReason::NoAnswer, reason_raw: None, by: EndedBy::System });
        }
        EventType::CallConnected => details.connected_at = Some(at.clone()),
        EventType::CallInitiated | EventType::CallRinging => details.started_at = Some(at.clone()),
        EventType::TranscriptSegment => details.transcript = Some(vec![utterance()]),
        EventType::TranscriptPartial | EventType::TranscriptFinal => details.transcript = Some(vec![utterance()]),
        EventType::CallRecordingReady => {
            details.recording_url = Some("https://example.invalid/callgate-test-recording.wav".to_owned())
        }
        EventType::CallAnalyzed => {
            details.analysis =
                Some(Analysis { summary: Some("A test event from callgate.".to_owned()), ..Analysis::empty() })
        }
        EventType::CallFlowTransition => {
            details.flow = Some(Flow {
                from_node: FlowNode { id: Some("start".to_owned()), name: Some("Start".to_owned()) },
                to_node: FlowNode { id: Some("end".to_owned()), name: Some("End".to_owned()) },
            })
        }
        EventType::CallError => details.error = Some(ErrorInfo { message: "A test error from callgate.".to_owned() }),
        EventType::CallTransferred => {
            details.transfer =
                Some(Transfer { kind: TransferType::Blind, target: Some(TO.to_owned()), related_call_ids: Vec::new() })
        }
        EventType::CallLegEnded => details.ended_at = Some(at.clone()),
        EventType::CallCompleted => {
            details.status = Some(Status::Completed);
            details.started_at = Some(started.clone());
            details.ended_at = Some(at.clone());
            details.duration_ms = Some(60_000);
            details.end = Some(End { reason: EndReason::CustomerHangup, reason_raw: None, by: EndedBy::Customer });
            details.completion = Some(Box::new(super::completed::Completion {
                reason: super::completed::CompletionReason::Complete,
                pieces: vec![EventType::CallEnded],
                missing: Vec::new(),
                events: 1,
                phase: Some(super::call::Phase::Ended),
                transfers: Vec::new(),
                errors: Vec::new(),
            }));
        }
        EventType::SmsReceived => {
            details.sms = Some(Sms {
                from: Some(FROM.to_owned()),
                to: Some(TO.to_owned()),
                text: "A test message from callgate.".to_owned(),
            })
        }
    }
    let key: [u8; 32] = std::array::from_fn(|_| fastrand::u8(..));
    let mut events = Mapped::new(common, vec![Draft::new(kind, details)]).finish(&key, Map::<String, Value>::new());
    events.remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_validates_against_the_canonical_schema_and_is_marked_test() {
        let validator = crate::vendors::compile(include_str!("../../schemas/canonical/event.json")).unwrap();
        for (kind, vendor) in EventType::ALL.iter().flat_map(|k| Vendor::ALL.iter().map(move |v| (k, *v))) {
            let event = sample(*kind, "crm-src", vendor, chrono::Utc::now());
            let json = serde_json::to_value(&event).unwrap();
            let errors: Vec<String> =
                validator.iter_errors(&json).map(|e| format!("{}: {e}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{kind} ({vendor:?}): {errors:?}");
            assert_eq!(json["data"]["test"], true);
            assert_eq!(json["type"], kind.as_str());
            assert!(json["subject"].as_str().unwrap().starts_with("crm-src:test_"));
        }
        let (a, b) = (
            sample(EventType::CallEnded, "s", Vendor::ALL[0], chrono::Utc::now()),
            sample(EventType::CallEnded, "s", Vendor::ALL[0], chrono::Utc::now()),
        );
        assert_ne!((a.id, a.subject), (b.id, b.subject), "each sample is a new event");
    }
}
