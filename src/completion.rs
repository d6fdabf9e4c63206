//! When a call gets its `call.completed` (`canonical::completed` says what it holds).
//!
//! - **At ingest:** after the commit of a payload holding a terminal event or a piece some
//!   vendor sends after one, [`Completions::check`] reads the call and completes it when its
//!   terminal event is there and nothing its vendor sends later is missing.
//! - **Settled:** the sweeper ([`Completions::run`]) completes every call whose first terminal
//!   event was accepted `[calls] settle` ago or more and that is still not completed, with the
//!   missing pieces listed. It wakes at the settle time of each terminal event this replica
//!   accepted, and every [`POLL`] in any case (the terminal events other replicas accepted,
//!   and those accepted before a restart).
//!
//! **Invariant:** a call is completed once. [`Store::complete_call`] stores the event only if
//! the call is not completed yet and still has the events it was read with, in the
//! transaction that marks it; a replica (or a task) that loses the race stores nothing, and
//! an event committed between the read and the write makes the write a no-op, and the
//! completion reads the call again.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::{
    canonical::{CloudEvent, EventType, completed},
    config::Config,
    store::{CallEvent, Ingest, Millis, Store, StoreError, now_ms},
};

/// The sweeper looks for settled calls at least this often.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(15);
/// Calls one sweep reads at a time.
const BATCH: usize = 100;
/// Reads and writes one completion tries while the call keeps changing in between.
const ATTEMPTS: usize = 5;
/// Settle times the sweeper keeps an alarm for.
const ALARMS: usize = 10_000;

/// Types whose acceptance may complete a call: the terminal events and every piece some
/// vendor sends after one (`completed::follows`).
const TRIGGERS: &[EventType] = &[
    EventType::CallEnded,
    EventType::CallFailed,
    EventType::CallAnalyzed,
    EventType::CallRecordingReady,
    EventType::TranscriptFinal,
    EventType::CallCdr,
];

/// Whether accepting an event of `kind` may complete its call (or start its settle time).
pub fn triggers(kind: EventType) -> bool {
    TRIGGERS.contains(&kind)
}

#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A defect: the event could not be rendered.
    #[error("rendering a call.completed: {0}")]
    Render(String),
}

/// False only when [`completed::assess`] of these events would find no terminal event, or a
/// piece missing: judged from their stored types and the first own event that reads (where
/// `assess` takes the vendor from), without reading the others. Any terminal type among them
/// may be the one `assess` finds last (an event that does not read is left out there), so
/// the pieces are checked against each; a type this build does not know reads them all.
fn may_complete(events: &[CallEvent]) -> bool {
    let Some(kinds) = events.iter().map(|e| EventType::parse(&e.kind)).collect::<Option<Vec<EventType>>>() else {
        return true;
    };
    let mut terminals = [EventType::CallEnded, EventType::CallFailed].into_iter().filter(|t| kinds.contains(t));
    if terminals.clone().next().is_none() {
        return false;
    }
    let first = events
        .iter()
        .filter_map(|e| serde_json::from_str::<CloudEvent>(&e.json).ok())
        .find(|e| e.kind != EventType::CallCompleted);
    let Some(first) = first else { return true };
    let common = &first.data.common;
    terminals.any(|terminal| {
        completed::follows(common.vendor, common.vendor_format, terminal).iter().all(|piece| kinds.contains(piece))
    })
}

/// How a call's completion went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This call stored its `call.completed`.
    Completed,
    /// Not now: no terminal event yet, pieces missing before the settle time, already
    /// completed, or another replica (or task) completed it first.
    Not,
    /// Settled, but its events hold no readable terminal event (the summary says it ended):
    /// it cannot be completed.
    Unreadable,
}

/// The completion side of a gateway: the at-ingest check and the sweeper's wake-ups.
pub struct Completions {
    store: Arc<dyn Store>,
    /// The settle times of the terminal events this replica accepted, not swept yet (at most
    /// [`ALARMS`]; the poll finds the others).
    next: Mutex<BTreeSet<Millis>>,
    wake: Notify,
}

impl Completions {
    pub fn new(store: Arc<dyn Store>) -> Arc<Completions> {
        Arc::new(Completions { store, next: Mutex::new(BTreeSet::new()), wake: Notify::new() })
    }

    /// After a payload's commit (at `accepted_at`), given its events that [`triggers`] a
    /// completion: completes each of their calls that is complete now (in the background:
    /// the vendor's answer does not wait), and sets the sweeper's alarm at a terminal event's
    /// settle time.
    pub fn accepted(self: &Arc<Self>, config: &Arc<Config>, events: &[(String, EventType)], accepted_at: Millis) {
        if events.iter().any(|(_, kind)| matches!(kind, EventType::CallEnded | EventType::CallFailed)) {
            let due = accepted_at.saturating_add(config.calls.settle.as_millis() as i64);
            if let Ok(mut next) = self.next.lock() {
                next.insert(due);
                while next.len() > ALARMS {
                    next.pop_last();
                }
            }
            self.wake.notify_one();
        }
        let mut subjects: Vec<&str> = events.iter().map(|(s, _)| s.as_str()).collect();
        subjects.dedup();
        for subject in subjects {
            let (this, config, subject) = (self.clone(), config.clone(), subject.to_owned());
            tokio::spawn(async move {
                if let Err(e) = this.complete(&config, &subject, false).await {
                    tracing::warn!(error = %e, "Could not complete a call at ingest; the sweeper will.");
                }
            });
        }
    }

    /// Completes the call `subject` if it has a terminal event, is not completed, and
    /// (unless `settled`) lacks none of the pieces its vendor sends later.
    pub async fn complete(&self, config: &Config, subject: &str, settled: bool) -> Result<Outcome, CompletionError> {
        // A write that found the call changed (an event committed since the read, which may be
        // no trigger, such as a leg's end) reads it again.
        for _ in 0..ATTEMPTS {
            if let Some(outcome) = self.try_complete(config, subject, settled).await? {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Not)
    }

    /// One read and conditional write: `None` when the call changed in between.
    async fn try_complete(
        &self,
        config: &Config,
        subject: &str,
        settled: bool,
    ) -> Result<Option<Outcome>, CompletionError> {
        let Some((summary, stored)) = self.store.call_for_completion(subject).await? else {
            return Ok(Some(Outcome::Not));
        };
        if summary.completed_at.is_some() {
            return Ok(Some(Outcome::Not));
        }
        // Most checks at ingest find the call incomplete; their types tell it without reading
        // every event (the reading was most of a check's cost).
        if !settled && !may_complete(&stored) {
            return Ok(Some(Outcome::Not));
        }
        let events: Vec<CloudEvent> = stored.iter().filter_map(|e| serde_json::from_str(&e.json).ok()).collect();
        let unreadable = if settled { Outcome::Unreadable } else { Outcome::Not };
        let Some(assessment) = completed::assess(&events) else { return Ok(Some(unreadable)) };
        if assessment.completed || (!settled && !assessment.missing.is_empty()) {
            return Ok(Some(Outcome::Not));
        }
        let now = chrono::Utc::now();
        let Some(event) = completed::build(&events, now) else { return Ok(Some(unreadable)) };
        let new_event =
            crate::ingress::new_event(config, &event).map_err(|e| CompletionError::Render(e.to_string()))?;
        let ingest = Ingest {
            source: event.data.common.source.clone(),
            digest: completed::digest(subject),
            body: Vec::new(),
            received_at: now.timestamp_millis(),
            events: vec![new_event],
        };
        let done = self.store.complete_call(subject, summary.events, ingest).await?;
        if done {
            crate::telemetry::event(&event.data.common.source, EventType::CallCompleted.as_str());
        }
        Ok(done.then_some(Outcome::Completed))
    }

    /// Completes the calls that settled by now; how many it completed.
    pub async fn sweep(&self, config: &Config) -> Result<usize, CompletionError> {
        let settle = config.calls.settle.as_millis() as i64;
        // Settled: the terminal event was accepted `settle` ago or more.
        let before = now_ms().saturating_sub(settle).saturating_add(1);
        let mut done = 0;
        loop {
            let subjects = self.store.settling(before, BATCH).await?;
            let mut stuck = 0;
            for subject in &subjects {
                match self.complete(config, subject, true).await? {
                    Outcome::Completed => done += 1,
                    // Another replica's (or an ingest check's) completion came first.
                    Outcome::Not => {}
                    Outcome::Unreadable => stuck += 1,
                }
            }
            if stuck > 0 {
                tracing::warn!(
                    calls = stuck,
                    "Calls past their settle time could not be completed (their events cannot be read); trying again later."
                );
            }
            // A full batch, none stuck: there may be more.
            if subjects.len() < BATCH || stuck > 0 {
                return Ok(done);
            }
        }
    }

    /// The sweeper: runs until the task is aborted, reading `[calls] settle` from the
    /// running configuration at each pass (so a reload changes it).
    pub async fn run(&self, config: &ArcSwap<Config>) {
        let mut first = true;
        loop {
            let started = now_ms();
            match self.sweep(&config.load_full()).await {
                Ok(completed) if first => {
                    tracing::info!(completed, "Completed the calls that settled before this start.")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Could not complete the settled calls; trying again."),
            }
            first = false;
            let wait = {
                // The alarms before this sweep began are done with.
                let alarm = self.next.lock().ok().and_then(|mut next| {
                    *next = next.split_off(&started);
                    next.first().copied()
                });
                let poll = POLL.as_millis() as i64;
                alarm.map_or(poll, |due| (due - now_ms()).clamp(0, poll))
            };
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait as u64)) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        canonical::Vendor,
        vendors::{Origin, normalize},
    };

    /// Every vendor's fixture events as stored, in file order.
    fn stored(vendor: Vendor) -> Vec<(CloudEvent, CallEvent)> {
        let dir = format!("{}/tests/fixtures/{}", env!("CARGO_MANIFEST_DIR"), vendor.as_str());
        let origin = Origin { source: "src", vendor, phone_region: None };
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut out = Vec::new();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".json") || name.ends_with(".expected.json") {
                continue;
            }
            let Ok(normalized) = normalize(&origin, &std::fs::read(&path).unwrap(), chrono::Utc::now()) else {
                continue;
            };
            for event in normalized.events {
                let json = serde_json::to_string(&event).unwrap();
                let row = CallEvent {
                    seq: out.len() as i64,
                    id: event.id.clone(),
                    kind: event.kind.as_str().to_owned(),
                    accepted_at: 0,
                    json,
                    routes: None,
                };
                out.push((event, row));
            }
        }
        out
    }

    #[test]
    fn the_quick_check_says_no_only_where_the_assessment_finds_the_call_incomplete() {
        for vendor in [Vendor::Oneinbox, Vendor::Vox, Vendor::Salpre, Vendor::Utel] {
            let all = stored(vendor);
            assert!(!all.is_empty(), "{vendor:?} has fixtures");
            // Each event alone, each pair, and every prefix of the whole list.
            let mut sets: Vec<Vec<usize>> = (0..all.len()).map(|i| vec![i]).collect();
            for i in 0..all.len() {
                for j in 0..all.len() {
                    sets.push(vec![i, j]);
                }
                sets.push((0..=i).collect());
            }
            let (mut said_no, mut said_maybe) = (0, 0);
            for set in sets {
                let events: Vec<CloudEvent> = set.iter().map(|&i| all[i].0.clone()).collect();
                let rows: Vec<CallEvent> = set.iter().map(|&i| all[i].1.clone()).collect();
                let complete = completed::assess(&events).is_some_and(|a| a.missing.is_empty());
                if may_complete(&rows) {
                    said_maybe += 1;
                } else {
                    said_no += 1;
                    assert!(!complete, "{vendor:?} {set:?}: said incomplete, but it is complete");
                }
            }
            assert!(said_no > 0 && said_maybe > 0, "{vendor:?}: both answers are exercised");
        }
    }
}
