//! `call.completed`: one canonical event per call, emitted once its terminal event and the
//! pieces its vendor sends separately have arrived, or once `[calls] settle` has passed since
//! the terminal event (`completion.rs` decides when; this module decides what).
//!
//! Its `data` is the call's merged record ([`merge`]) in the canonical shape: the facts every
//! event carries (`vendor`, `call_id`, numbers, `direction`…), the terminal facts (`status`,
//! `end`, times, durations), `transcript`, `recording_url`, `analysis`, `cost`, `metadata` and
//! `variables` as merged, and `completion`: why it was emitted (`complete` or `settled`), the
//! pieces seen, the pieces still `missing`, how many events were merged, the furthest
//! `phase`, every transfer and error. `vendor_event` is [`VENDOR_EVENT`] (no vendor sent it)
//! and `vendor_extra` is empty.
//!
//! Its id is a digest of the subject alone (domain separated from the ids of vendor events),
//! so every replica that builds it builds the same id.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::Map;
use sha2::{Digest, Sha256};

use super::{
    CloudEvent, Common, Details, EventData, EventType, SCHEMA_VERSION, Transfer, Vendor, VendorFormat,
    call::{Phase, merge},
};

/// `vendor_event` of every `call.completed`: callgate made it, no vendor sent it.
pub const VENDOR_EVENT: &str = "callgate.completed";

string_enum! {
    /// Why a `call.completed` was emitted.
    CompletionReason { Complete = "complete", Settled = "settled" }
}

/// `data.completion` of a `call.completed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    /// `complete`: every piece its vendor sends after the terminal event had arrived;
    /// `settled`: `[calls] settle` passed first.
    pub reason: CompletionReason,
    /// Canonical types seen, in `canonical.md` order.
    pub pieces: Vec<EventType>,
    /// Pieces its vendor sends after this terminal event that had not arrived.
    pub missing: Vec<EventType>,
    /// How many events were merged.
    pub events: usize,
    /// How far the call got.
    pub phase: Option<Phase>,
    /// Every transfer, in acceptance order.
    pub transfers: Vec<Transfer>,
    /// Every non-terminal error the vendor reported, in acceptance order.
    pub errors: Vec<String>,
}

/// The pieces a vendor sends separately after a call's terminal event (`terminal`:
/// `call.ended` or `call.failed`), per vendor and format, as the adapters in `vendors/` map
/// them:
///
/// - OneInbox: `transcript.final` and `call.recording.ready` (its `call.recording.available`)
///   after `call.ended`; nothing after `call.failed`.
/// - vox v2 and Retell: `call.analyzed` (`call_analyzed`), after either.
/// - vox v1 and Salpre: nothing (their `call_ended` carries everything).
/// - Utel: `call.cdr` (`call_saved`, the saved call record), after either.
pub fn follows(vendor: Vendor, format: Option<VendorFormat>, terminal: EventType) -> &'static [EventType] {
    match vendor {
        Vendor::Oneinbox if terminal == EventType::CallEnded => {
            &[EventType::CallRecordingReady, EventType::TranscriptFinal]
        }
        Vendor::Oneinbox => &[],
        Vendor::Vox if format == Some(VendorFormat::V2) => &[EventType::CallAnalyzed],
        Vendor::Vox | Vendor::Salpre => &[],
        Vendor::Retell => &[EventType::CallAnalyzed],
        Vendor::Utel => &[EventType::CallCdr],
    }
}

/// What a call's events (in acceptance order) say about its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Its last terminal event's type (`call.ended` or `call.failed`).
    pub terminal: EventType,
    /// The pieces its vendor sends after that terminal event that have not arrived.
    pub missing: Vec<EventType>,
    /// A `call.completed` is among the events already.
    pub completed: bool,
}

/// `None` while the call has no terminal event.
pub fn assess(events: &[CloudEvent]) -> Option<Assessment> {
    let own = || events.iter().filter(|e| e.kind != EventType::CallCompleted);
    let terminal = own().rfind(|e| matches!(e.kind, EventType::CallEnded | EventType::CallFailed))?.kind;
    let first = own().next()?;
    let common = &first.data.common;
    let missing = follows(common.vendor, common.vendor_format, terminal)
        .iter()
        .copied()
        .filter(|piece| !own().any(|e| e.kind == *piece))
        .collect();
    let completed = events.iter().any(|e| e.kind == EventType::CallCompleted);
    Some(Assessment { terminal, missing, completed })
}

/// The call's `call.completed` at `now`: `None` when its events hold no terminal event.
pub fn build(events: &[CloudEvent], now: chrono::DateTime<chrono::Utc>) -> Option<CloudEvent> {
    let assessment = assess(events)?;
    let record = merge(events)?;
    let first = events.iter().find(|e| e.kind != EventType::CallCompleted)?;
    let at = super::convert::rfc3339(now);
    let reason = if assessment.missing.is_empty() { CompletionReason::Complete } else { CompletionReason::Settled };
    let common = Common {
        schema_version: SCHEMA_VERSION,
        vendor: record.vendor,
        source: record.source.clone(),
        vendor_event: VENDOR_EVENT.to_owned(),
        vendor_format: first.data.common.vendor_format,
        test: record.test,
        call_id: record.call_id.clone(),
        agent_id: record.agent_id.clone(),
        direction: record.direction,
        from: record.from.clone(),
        to: record.to.clone(),
        from_e164: record.from_e164.clone(),
        to_e164: record.to_e164.clone(),
        occurred_at: record.ended_at.clone(),
        received_at: at.clone(),
    };
    let completion = Completion {
        reason,
        pieces: record.pieces.clone(),
        missing: assessment.missing,
        events: record.events,
        phase: record.phase,
        transfers: record.transfers.clone(),
        errors: record.errors.clone(),
    };
    let details = Details {
        status: record.status,
        end: record.end.clone(),
        started_at: record.started_at.clone(),
        connected_at: record.connected_at.clone(),
        ended_at: record.ended_at.clone(),
        duration_ms: record.duration_ms,
        talk_duration_ms: record.talk_duration_ms,
        transcript: record.transcript.as_ref().map(|t| t.utterances.clone()),
        recording_url: record.recording_url.clone(),
        analysis: record.analysis.clone(),
        cost: record.cost.clone(),
        completion: Some(Box::new(completion)),
        ..Details::default()
    };
    Some(CloudEvent {
        specversion: "1.0",
        id: id(&record.subject),
        source: format!("/callgate/sources/{}", record.source),
        kind: EventType::CallCompleted,
        subject: record.subject.clone(),
        time: at,
        datacontenttype: "application/json",
        data: EventData {
            common: Arc::new(common),
            details,
            metadata: Arc::new(record.metadata),
            variables: Arc::new(record.variables),
            vendor_extra: Arc::new(Map::new()),
        },
    })
}

/// The id of a call's `call.completed`: `ce_` + 32 hex digits of SHA-256 of a domain tag and
/// the subject (a vendor event's id hashes a source name first, which holds no NUL).
pub fn id(subject: &str) -> String {
    let digest = Sha256::new().chain_update(b"callgate\0call.completed\0").chain_update(subject.as_bytes()).finalize();
    format!("ce_{}", hex::encode(&digest[..16]))
}

/// The dedup key of the payload row a `call.completed` is stored under (no vendor body: the
/// row only anchors the event, and its key can be taken once per call).
pub fn digest(subject: &str) -> [u8; 32] {
    Sha256::new().chain_update(b"callgate\0call.completed payload\0").chain_update(subject.as_bytes()).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::{Origin, normalize};

    fn events(vendor: Vendor, names: &[&str]) -> Vec<CloudEvent> {
        let origin = Origin { source: "src", vendor, phone_region: None };
        names
            .iter()
            .flat_map(|name| {
                let path = format!("{}/tests/fixtures/{}/{name}", env!("CARGO_MANIFEST_DIR"), vendor.as_str());
                let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                normalize(&origin, &body, chrono::Utc::now()).unwrap().events
            })
            .collect()
    }

    #[test]
    fn a_call_is_complete_once_its_vendors_later_pieces_arrived_and_its_id_depends_on_the_subject_only() {
        let ended = events(Vendor::Oneinbox, &["doc-call.ended.json"]);
        let assessment = assess(&ended).unwrap();
        assert_eq!(assessment.terminal, EventType::CallEnded);
        assert_eq!(assessment.missing, [EventType::CallRecordingReady, EventType::TranscriptFinal]);
        assert!(assess(&events(Vendor::Oneinbox, &["doc-call.started.json"])).is_none(), "no terminal event yet");

        let all = events(
            Vendor::Oneinbox,
            &["doc-transcript.final.json", "doc-call.ended.json", "doc-call.recording.available.json"],
        );
        assert_eq!(assess(&all).unwrap().missing, []);
        let now = chrono::Utc::now();
        let a = build(&all, now).unwrap();
        let b = build(&all, now + chrono::Duration::seconds(5)).unwrap();
        assert_eq!(a.id, b.id, "two replicas build the same id");
        assert_eq!(a.id, id(&a.subject));
        assert_ne!(a.id, id("src:another"));
        let completion = a.data.details.completion.as_ref().unwrap();
        assert_eq!(completion.reason, CompletionReason::Complete);
        assert!(completion.pieces.contains(&EventType::TranscriptFinal));

        let settled = build(&ended, now).unwrap();
        let completion = settled.data.details.completion.as_ref().unwrap();
        assert_eq!(completion.reason, CompletionReason::Settled);
        assert_eq!(completion.missing, [EventType::CallRecordingReady, EventType::TranscriptFinal]);

        let validator = crate::vendors::compile(include_str!("../../schemas/canonical/event.json")).unwrap();
        for event in [a, settled] {
            let json = serde_json::to_value(&event).unwrap();
            let errors: Vec<String> =
                validator.iter_errors(&json).map(|e| format!("{}: {e}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{errors:?}");
            let read: CloudEvent = serde_json::from_value(json).unwrap();
            assert_eq!(read.kind, EventType::CallCompleted);
            // Read back with the call's events, it is not merged: its time is `completed_at`.
            let mut with = ended.to_vec();
            with.push(read);
            let record = merge(&with).unwrap();
            assert_eq!(record.events, ended.len());
            assert!(record.completed_at.is_some() && record.late.is_empty());
            assert!(!record.pieces.contains(&EventType::CallCompleted));
        }
    }

    #[test]
    fn every_vendor_declares_only_pieces_its_adapter_emits() {
        // vox v1 and Salpre carry everything in their terminal event; the others name types
        // their own mapper produces (checked against the fixtures' events below).
        assert!(follows(Vendor::Vox, Some(VendorFormat::V1), EventType::CallEnded).is_empty());
        assert!(follows(Vendor::Salpre, None, EventType::CallEnded).is_empty());
        assert!(follows(Vendor::Oneinbox, None, EventType::CallFailed).is_empty());
        let emitted = |vendor: Vendor| -> Vec<EventType> {
            let dir = format!("{}/tests/fixtures/{}", env!("CARGO_MANIFEST_DIR"), vendor.as_str());
            let origin = Origin { source: "src", vendor, phone_region: None };
            let mut kinds = Vec::new();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.ends_with(".json") || name.ends_with(".expected.json") {
                    continue;
                }
                if let Ok(n) = normalize(&origin, &std::fs::read(&path).unwrap(), chrono::Utc::now()) {
                    kinds.extend(n.events.iter().map(|e| e.kind));
                }
            }
            kinds
        };
        for vendor in Vendor::ALL.iter().copied() {
            let kinds = emitted(vendor);
            for format in [None, Some(VendorFormat::V1), Some(VendorFormat::V2)] {
                for terminal in [EventType::CallEnded, EventType::CallFailed] {
                    for piece in follows(vendor, format, terminal) {
                        assert!(kinds.contains(piece), "{vendor:?} never emits {piece}");
                    }
                }
            }
        }
    }
}
