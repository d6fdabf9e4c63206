use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::{
    canonical::{EndReason, Role},
    vendors::{self, Origin},
};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The canonical events of one golden fixture, as the golden test makes them.
fn fixture(vendor: Vendor, name: &str) -> Vec<CloudEvent> {
    let path = fixtures_dir().join(vendor.as_str()).join(format!("{name}.json"));
    normalized(vendor, &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn normalized(vendor: Vendor, body: &[u8]) -> Vec<CloudEvent> {
    let region = match vendor {
        Vendor::Vox => Some(phonenumber::country::Id::KR),
        Vendor::Utel => Some(phonenumber::country::Id::UZ),
        _ => None,
    };
    let origin = Origin { source: vendor.as_str(), vendor, phone_region: region };
    let received_at: DateTime<Utc> = "2026-11-21T12:00:00Z".parse().unwrap();
    vendors::normalize(&origin, body, received_at).unwrap().events
}

fn call(vendor: Vendor, names: &[&str]) -> Vec<CloudEvent> {
    names.iter().flat_map(|name| fixture(vendor, name)).collect()
}

/// An event edited as JSON (as a stored event is read back).
fn edited(event: &CloudEvent, edit: impl FnOnce(&mut Value)) -> CloudEvent {
    let mut value = serde_json::to_value(event).unwrap();
    edit(&mut value);
    serde_json::from_value(value).unwrap()
}

fn kinds(record: &CallRecord) -> Vec<&'static str> {
    record.pieces.iter().map(|k| k.as_str()).collect()
}

#[test]
fn every_fixture_event_reads_back_exactly_as_written() {
    for vendor in Vendor::ALL {
        for entry in std::fs::read_dir(fixtures_dir().join(vendor.as_str())).unwrap() {
            let path = entry.unwrap().path();
            let name = path.to_string_lossy().into_owned();
            if !name.ends_with(".json") || name.ends_with(".expected.json") {
                continue;
            }
            for event in normalized(vendor, &std::fs::read(&path).unwrap()) {
                let written = serde_json::to_string(&event).unwrap();
                let read: CloudEvent = serde_json::from_str(&written).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(serde_json::to_string(&read).unwrap(), written, "{name}");
            }
        }
    }
}

#[test]
fn no_events_no_record() {
    assert!(merge(&[]).is_none());
}

#[test]
fn a_oneinbox_call_merges_every_piece() {
    let events = call(
        Vendor::Oneinbox,
        &[
            "doc-call.started",
            "doc-transcript.partial",
            "doc-transcript.final",
            "doc-call.ended",
            "doc-call.recording.available",
            "doc-call.analyzed",
        ],
    );
    let record = merge(&events).unwrap();
    assert_eq!(record.subject, "oneinbox:call_abc123");
    assert_eq!(
        (record.source.as_str(), record.vendor, record.call_id.as_str()),
        ("oneinbox", Vendor::Oneinbox, "call_abc123")
    );
    assert_eq!(record.phase, Some(Phase::Ended));
    assert_eq!(record.status, Some(Status::Completed));
    assert_eq!(record.end.as_ref().map(|e| e.reason), Some(EndReason::CompletedUnspecified));
    assert_eq!(record.connected_at.as_deref(), Some("2026-06-01T10:00:00.000Z"));
    assert_eq!(record.duration_ms, Some(87_000));
    assert_eq!((record.from.as_deref(), record.to.as_deref()), (Some("+15739693824"), Some("+919876543210")));
    assert_eq!(record.agent_id.as_deref(), Some("agt_abc123"));
    let transcript = record.transcript.as_ref().unwrap();
    assert_eq!((transcript.source, transcript.utterances.len()), (TranscriptSource::Final, 3));
    assert_eq!(record.recording_url.as_deref(), Some("https://storage.oneinbox.ai/recordings/call_abc123.mp3"));
    assert_eq!(
        record.analysis.as_ref().and_then(|a| a.summary.as_deref()),
        Some("Caller agreed to a product demo on Thursday at 3pm.")
    );
    assert_eq!(
        kinds(&record),
        [
            "call.connected",
            "call.ended",
            "call.analyzed",
            "call.recording.ready",
            "transcript.partial",
            "transcript.final"
        ]
    );
    assert_eq!(record.events, 6);
}

#[test]
fn a_partial_transcript_stands_in_until_the_final_one() {
    let record = merge(&call(Vendor::Oneinbox, &["doc-call.started", "doc-transcript.partial"])).unwrap();
    let transcript = record.transcript.unwrap();
    assert_eq!((transcript.source, transcript.utterances.len()), (TranscriptSource::Partial, 2));
    assert_eq!(record.phase, Some(Phase::Connected));
    assert_eq!(record.status, None);
}

#[test]
fn salpre_segments_are_assembled_until_the_final_transcript() {
    let live = call(
        Vendor::Salpre,
        &["doc-call_initiated", "doc-call_ringing", "doc-call_answered", "doc-transcript", "doc-error"],
    );
    let record = merge(&live).unwrap();
    assert_eq!(record.phase, Some(Phase::Connected));
    assert_eq!(record.status, None);
    let transcript = record.transcript.as_ref().unwrap();
    assert_eq!(transcript.source, TranscriptSource::Segments);
    assert_eq!(transcript.utterances.len(), 1);
    assert_eq!(record.errors.len(), 1);

    let mut ended = live.clone();
    ended.extend(fixture(Vendor::Salpre, "doc-call_ended"));
    let record = merge(&ended).unwrap();
    assert_eq!((record.phase, record.status), (Some(Phase::Ended), Some(Status::Completed)));
    assert_eq!(record.transcript.as_ref().unwrap().source, TranscriptSource::Final);
    assert_eq!(
        kinds(&record),
        [
            "call.initiated",
            "call.ringing",
            "call.connected",
            "call.ended",
            "call.error",
            "transcript.segment",
            "transcript.final"
        ]
    );
}

#[test]
fn segments_follow_their_times_when_every_one_has_a_time_and_arrival_otherwise() {
    let segment = &fixture(Vendor::Salpre, "doc-transcript")[0];
    let say = |text: &str, at: Option<&str>| {
        edited(segment, |v| {
            v["data"]["transcript"][0]["text"] = json!(text);
            v["data"]["transcript"][0]["at"] = json!(at);
        })
    };
    let texts = |events: &[CloudEvent]| -> Vec<String> {
        merge(events).unwrap().transcript.unwrap().utterances.into_iter().map(|u| u.text).collect()
    };
    let timed = [say("second", Some("2026-01-01T00:00:02.000Z")), say("first", Some("2026-01-01T00:00:01.000Z"))];
    assert_eq!(texts(&timed), ["first", "second"]);
    let untimed = [say("b", Some("2026-01-01T00:00:02.000Z")), say("a", None)];
    assert_eq!(texts(&untimed), ["b", "a"], "without every time, acceptance order");
}

#[test]
fn utel_cdr_after_the_end_keeps_the_terminal_state_and_adds_the_recording() {
    let events = call(
        Vendor::Utel,
        &[
            "synthetic-call_started",
            "synthetic-dial_started",
            "synthetic-dial_answered",
            "synthetic-dial_ended",
            "synthetic-call_ended-answered",
            "synthetic-call_saved-answered",
        ],
    );
    let record = merge(&events).unwrap();
    assert_eq!((record.phase, record.status), (Some(Phase::Ended), Some(Status::Completed)));
    assert!(record.recording_url.is_some());
    assert!(record.duration_ms.is_some());
    assert_eq!(
        kinds(&record),
        [
            "call.initiated",
            "call.ringing",
            "call.connected",
            "call.leg.ended",
            "call.ended",
            "call.recording.ready",
            "call.cdr"
        ]
    );
}

#[test]
fn a_late_non_terminal_event_changes_no_terminal_fact() {
    let ended = fixture(Vendor::Utel, "synthetic-call_ended-answered");
    let leg = &fixture(Vendor::Utel, "synthetic-dial_ended")[0];
    let late_leg = edited(leg, |v| v["data"]["ended_at"] = json!("2030-01-01T00:00:00.000Z"));
    let late_connected = fixture(Vendor::Utel, "synthetic-dial_answered");
    let before = merge(&ended).unwrap();
    let mut events = ended.clone();
    events.push(late_leg);
    events.extend(late_connected);
    let after = merge(&events).unwrap();
    assert_eq!(after.phase, Some(Phase::Ended), "the phase never goes back");
    assert_eq!(after.status, before.status);
    assert_eq!(after.ended_at, before.ended_at, "a leg's end is not the call's");
    assert_eq!(after.duration_ms, before.duration_ms);
}

#[test]
fn the_last_terminal_event_wins() {
    let ended = &fixture(Vendor::Oneinbox, "doc-call.ended")[0];
    let failed = &fixture(Vendor::Oneinbox, "doc-call.failed")[0];
    assert_eq!(merge(&[ended.clone(), failed.clone()]).unwrap().status, Some(Status::NoAnswer));
    assert_eq!(merge(&[failed.clone(), ended.clone()]).unwrap().status, Some(Status::Completed));
}

#[test]
fn call_analyzed_wins_over_an_analysis_on_call_ended_in_either_order() {
    let ended = edited(&fixture(Vendor::Oneinbox, "doc-call.ended")[0], |v| {
        v["data"]["analysis"]["summary"] = json!("from the end")
    });
    let analyzed = edited(&fixture(Vendor::Oneinbox, "doc-call.analyzed")[0], |v| {
        v["data"]["analysis"]["summary"] = json!("from the analysis")
    });
    for events in [[ended.clone(), analyzed.clone()], [analyzed.clone(), ended.clone()]] {
        let record = merge(&events).unwrap();
        assert_eq!(record.analysis.unwrap().summary.as_deref(), Some("from the analysis"));
        assert_eq!(record.status, Some(Status::Completed));
    }
    let alone = merge(std::slice::from_ref(&ended)).unwrap();
    assert_eq!(alone.analysis.unwrap().summary.as_deref(), Some("from the end"));
}

#[test]
fn vox_v2_cost_and_analysis_arrive_after_the_end() {
    let events = call(
        Vendor::Vox,
        &[
            "v2-call_started",
            "v2-mid_call-flow_transition",
            "v2-mid_call-call_message",
            "v2-call_ended",
            "v2-call_analyzed",
        ],
    );
    let record = merge(&events).unwrap();
    assert_eq!((record.phase, record.status), (Some(Phase::Ended), Some(Status::Completed)));
    assert_eq!(record.transcript.as_ref().unwrap().source, TranscriptSource::Final);
    assert!(record.recording_url.is_some());
    assert!(record.analysis.is_some());
    assert!(record.cost.is_some());
    assert!(record.from_e164.is_some());
    assert!(kinds(&record).contains(&"call.analyzed"));
}

#[test]
fn a_call_that_never_connected_is_failed() {
    let record = merge(&fixture(Vendor::Vox, "v2-call_ended-not_connected")).unwrap();
    assert_eq!(record.phase, Some(Phase::Ended));
    assert!(record.status.is_some_and(|s| s != Status::Completed));
    assert_eq!(kinds(&record), ["call.failed"]);
}

#[test]
fn retell_and_vox_v1_calls_merge() {
    let retell = merge(&call(Vendor::Retell, &["var-call_started", "doc-call_ended", "var-call_analyzed"])).unwrap();
    assert_eq!((retell.phase, retell.status), (Some(Phase::Ended), Some(Status::Completed)));
    assert!(retell.analysis.is_some());
    assert_eq!(retell.transcript.as_ref().unwrap().source, TranscriptSource::Final);
    let vox = merge(&call(
        Vendor::Vox,
        &["doc-call_started", "doc-mid_call-flow_transition", "doc-mid_call-call_message", "doc-call_ended"],
    ))
    .unwrap();
    assert_eq!((vox.phase, vox.status), (Some(Phase::Ended), Some(Status::Completed)));
    let transcript = vox.transcript.unwrap();
    assert_eq!(transcript.source, TranscriptSource::Final);
    assert!(transcript.utterances.iter().any(|u| u.role == Role::Customer));
}

#[test]
fn metadata_and_variables_merge_key_by_key() {
    let base = &fixture(Vendor::Vox, "doc-call_started")[0];
    let one = edited(base, |v| {
        v["data"]["metadata"] = json!({"a": 1, "b": 1});
        v["data"]["variables"] = json!({"x": "1"});
    });
    let two = edited(base, |v| {
        v["data"]["metadata"] = json!({"b": 2});
        v["data"]["variables"] = json!({});
    });
    let record = merge(&[one, two]).unwrap();
    assert_eq!(Value::Object(record.metadata), json!({"a": 1, "b": 2}));
    assert_eq!(Value::Object(record.variables), json!({"x": "1"}));
}
