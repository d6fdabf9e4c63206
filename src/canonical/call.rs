//! A call's merged record: what its canonical events say together, computed from the events
//! alone ([`merge`], pure, like the adapters), for `GET /v1/calls/{subject}` and for a later
//! `call.completed`.
//!
//! Events are taken in acceptance order (the order callgate stored them, which is the order a
//! route receives them). Vendor times do not order them: most events carry none (OneInbox
//! times only `call.started`, Utel sends a time of day without a date), so the rules are:
//!
//! - **Identity** (`source`, `vendor`, `call_id`) from the first event; `test` when any event
//!   is a test.
//! - **Descriptive facts** (numbers, agent, direction, `started_at`, `connected_at`,
//!   recording, cost): the last event that carries a value wins; a missing value (`null`,
//!   direction `unknown`) never erases a known one.
//! - **The terminal state** (`status`, `end`, `ended_at`, `duration_ms`,
//!   `talk_duration_ms`) comes only from terminal events (`call.ended`, `call.failed`) and the
//!   vendor's final record (`call.cdr`), the last of them winning: a late non-terminal event
//!   (a `call.leg.ended` with its leg's end, a redelivered `call.connected`) never changes it.
//! - **`phase`** is the furthest stage seen (`initiated` < `ringing` < `connected` < `ended`)
//!   and never goes back, whatever order the events arrived in.
//! - **Analysis:** a `call.analyzed` event's analysis wins over one carried by another event
//!   (OneInbox's `call.ended`), whichever arrived first; among the same kind the last wins.
//! - **Transcript:** the last `transcript.final`; else the last `transcript.partial` (each
//!   replaces the one before); else the `transcript.segment` utterances, ordered by their
//!   `at` when every one has it (acceptance order breaks ties), in acceptance order otherwise.
//! - **`metadata`, `variables`:** merged key by key, the last event's value winning.
//! - **`pieces`:** every canonical type seen, in the order of `canonical.md` §3.
//! - **`call.completed`** (callgate's own, `completed.rs`) is not merged: its time is
//!   `completed_at`, and the types of the events accepted after it are `late`.

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Analysis, CloudEvent, Cost, Direction, End, EventType, Status, Transfer, Utterance, Vendor};

string_enum! {
    /// How far a call got (never goes back).
    Phase { Initiated = "initiated", Ringing = "ringing", Connected = "connected", Ended = "ended" }
}

impl Phase {
    fn of(kind: EventType) -> Option<Phase> {
        match kind {
            EventType::CallInitiated => Some(Phase::Initiated),
            EventType::CallRinging => Some(Phase::Ringing),
            EventType::CallConnected => Some(Phase::Connected),
            EventType::CallEnded | EventType::CallFailed | EventType::CallCdr => Some(Phase::Ended),
            _ => None,
        }
    }

    fn rank(self) -> usize {
        Phase::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

string_enum! {
    /// Which events a merged transcript was taken from.
    TranscriptSource { Final = "final", Partial = "partial", Segments = "segments" }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Transcript {
    pub source: TranscriptSource,
    pub utterances: Vec<Utterance>,
}

/// The merged state of one call (the module doc gives the rules).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CallRecord {
    pub subject: String,
    pub source: String,
    pub vendor: Vendor,
    pub call_id: String,
    pub test: bool,
    pub phase: Option<Phase>,
    pub status: Option<Status>,
    pub end: Option<End>,
    pub started_at: Option<String>,
    pub connected_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub talk_duration_ms: Option<i64>,
    pub direction: Direction,
    pub from: Option<String>,
    pub to: Option<String>,
    pub from_e164: Option<String>,
    pub to_e164: Option<String>,
    pub agent_id: Option<String>,
    pub transcript: Option<Transcript>,
    pub recording_url: Option<String>,
    pub analysis: Option<Analysis>,
    pub cost: Option<Cost>,
    /// Every transfer, in acceptance order.
    pub transfers: Vec<Transfer>,
    /// Every non-terminal error the vendor reported, in acceptance order.
    pub errors: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// Canonical types seen, in `canonical.md` order.
    pub pieces: Vec<EventType>,
    /// How many events were merged (`call.completed` is not).
    pub events: usize,
    /// When callgate emitted the call's `call.completed` (its `time`), if it did.
    pub completed_at: Option<String>,
    /// Types of the events accepted after `call.completed`, in acceptance order.
    pub late: Vec<EventType>,
}

/// Merges a call's events, given in acceptance order; `None` when there are none.
pub fn merge(events: &[CloudEvent]) -> Option<CallRecord> {
    let first = events.first()?;
    let common = &first.data.common;
    let mut record = CallRecord {
        subject: first.subject.clone(),
        source: common.source.clone(),
        vendor: common.vendor,
        call_id: common.call_id.clone(),
        test: false,
        phase: None,
        status: None,
        end: None,
        started_at: None,
        connected_at: None,
        ended_at: None,
        duration_ms: None,
        talk_duration_ms: None,
        direction: Direction::Unknown,
        from: None,
        to: None,
        from_e164: None,
        to_e164: None,
        agent_id: None,
        transcript: None,
        recording_url: None,
        analysis: None,
        cost: None,
        transfers: Vec::new(),
        errors: Vec::new(),
        metadata: Map::new(),
        variables: Map::new(),
        pieces: Vec::new(),
        events: 0,
        completed_at: None,
        late: Vec::new(),
    };
    let mut pieces = BTreeSet::new();
    let mut analysis_from_analyzed = false;
    let mut final_transcript: Option<&Vec<Utterance>> = None;
    let mut partial_transcript: Option<&Vec<Utterance>> = None;
    let mut segments: Vec<&Utterance> = Vec::new();

    for event in events {
        if event.kind == EventType::CallCompleted {
            if record.completed_at.is_none() {
                record.completed_at = Some(event.time.clone());
            }
            continue;
        }
        if record.completed_at.is_some() {
            record.late.push(event.kind);
        }
        record.events += 1;
        let (c, d) = (&event.data.common, &event.data.details);
        pieces.insert(EventType::ALL.iter().position(|k| *k == event.kind).unwrap_or(usize::MAX));
        record.test |= c.test;
        if let Some(phase) = Phase::of(event.kind)
            && record.phase.is_none_or(|p| p.rank() < phase.rank())
        {
            record.phase = Some(phase);
        }
        later(&mut record.from, &c.from);
        later(&mut record.to, &c.to);
        later(&mut record.from_e164, &c.from_e164);
        later(&mut record.to_e164, &c.to_e164);
        later(&mut record.agent_id, &c.agent_id);
        if c.direction != Direction::Unknown {
            record.direction = c.direction;
        }
        later(&mut record.started_at, &d.started_at);
        later(&mut record.connected_at, &d.connected_at);
        later(&mut record.recording_url, &d.recording_url);
        later(&mut record.cost, &d.cost);
        if matches!(event.kind, EventType::CallEnded | EventType::CallFailed | EventType::CallCdr) {
            later(&mut record.status, &d.status);
            later(&mut record.end, &d.end);
            later(&mut record.ended_at, &d.ended_at);
            later(&mut record.duration_ms, &d.duration_ms);
            later(&mut record.talk_duration_ms, &d.talk_duration_ms);
        }
        if let Some(analysis) = &d.analysis {
            let analyzed = event.kind == EventType::CallAnalyzed;
            if analyzed || !analysis_from_analyzed {
                record.analysis = Some(analysis.clone());
                analysis_from_analyzed |= analyzed;
            }
        }
        if let Some(transcript) = &d.transcript {
            match event.kind {
                EventType::TranscriptFinal => final_transcript = Some(transcript),
                EventType::TranscriptPartial => partial_transcript = Some(transcript),
                EventType::TranscriptSegment => segments.extend(transcript),
                _ => {}
            }
        }
        if let Some(transfer) = &d.transfer {
            record.transfers.push(transfer.clone());
        }
        if let Some(error) = &d.error {
            record.errors.push(error.message.clone());
        }
        for (key, value) in event.data.metadata.iter() {
            record.metadata.insert(key.clone(), value.clone());
        }
        for (key, value) in event.data.variables.iter() {
            record.variables.insert(key.clone(), value.clone());
        }
    }

    record.transcript = if let Some(utterances) = final_transcript {
        Some(Transcript { source: TranscriptSource::Final, utterances: utterances.clone() })
    } else if let Some(utterances) = partial_transcript {
        Some(Transcript { source: TranscriptSource::Partial, utterances: utterances.clone() })
    } else if !segments.is_empty() {
        // RFC 3339 UTC with milliseconds (every time callgate emits) sorts as text.
        if segments.iter().all(|u| u.at.is_some()) {
            segments.sort_by(|a, b| a.at.cmp(&b.at));
        }
        Some(Transcript { source: TranscriptSource::Segments, utterances: segments.into_iter().cloned().collect() })
    } else {
        None
    };
    record.pieces = pieces.into_iter().filter_map(|i| EventType::ALL.get(i).copied()).collect();
    Some(record)
}

/// A later value replaces an earlier one; a missing one keeps it.
fn later<T: Clone>(merged: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        merged.clone_from(value);
    }
}

#[cfg(test)]
mod tests;
