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
    collections::{BTreeSet, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::{
    canonical::{CloudEvent, EventType, completed},
    config::Config,
    store::{CallEvent, Ingest, Millis, Store, StoreError, now_ms},
    tail::Tail,
};

/// The sweeper looks for settled calls at least this often.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(15);
/// Calls one sweep reads at a time.
pub(crate) const BATCH: usize = 100;
/// Most calls one sweep tries (what [`Store::settling`] answers at most).
const SWEEP_MAX: usize = 10_000;
/// Reads and writes one completion tries while the call keeps changing in between.
const ATTEMPTS: usize = 5;
/// Settle times the sweeper keeps an alarm for.
const ALARMS: usize = 10_000;
/// At-ingest checks running at once: each holds a store connection for its read and write,
/// which ingest needs too.
const CHECKERS: usize = 4;
/// Calls waiting for their at-ingest check; a call past this is left to the sweeper.
const QUEUED_MAX: usize = 10_000;

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
    /// The live tail, told of each `call.completed` this replica stores, as ingress tells it
    /// of the events it accepts (`None` in tests without one).
    tail: Option<Arc<Tail>>,
    /// The settle times of the terminal events this replica accepted, not swept yet (at most
    /// [`ALARMS`]; the poll finds the others).
    next: Mutex<BTreeSet<Millis>>,
    wake: Notify,
    /// The calls waiting for their at-ingest check, and the checkers running.
    checks: Mutex<Checks>,
}

/// At most [`QUEUED_MAX`] calls (each once) wait for one of at most [`CHECKERS`] tasks.
#[derive(Default)]
struct Checks {
    running: usize,
    queue: VecDeque<(String, Arc<Config>)>,
    queued: HashSet<String>,
}

impl Completions {
    pub fn new(store: Arc<dyn Store>, tail: Option<Arc<Tail>>) -> Arc<Completions> {
        Arc::new(Completions {
            store,
            tail,
            next: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            checks: Mutex::new(Checks::default()),
        })
    }

    /// After a payload's commit (at `accepted_at`), given its events that [`triggers`] a
    /// completion: completes each of their calls that is complete now (in the background:
    /// the vendor's answer does not wait; queued for one of at most [`CHECKERS`] tasks, at
    /// most [`QUEUED_MAX`] calls, the rest left to the sweeper), and sets the sweeper's alarm
    /// at a terminal event's settle time.
    pub fn accepted(self: &Arc<Self>, config: &Arc<Config>, events: &[(String, EventType)], accepted_at: Millis) {
        if events.iter().any(|(_, kind)| matches!(kind, EventType::CallEnded | EventType::CallFailed)) {
            let due = accepted_at.saturating_add(config.calls.settle.as_millis() as i64);
            // The sweeper sleeps until its first alarm (or the poll): it needs waking only
            // when this one comes first (with one settle time: when it had none).
            let first = self.next.lock().is_ok_and(|mut next| {
                next.insert(due);
                while next.len() > ALARMS {
                    next.pop_last();
                }
                next.first() == Some(&due)
            });
            if first {
                self.wake.notify_one();
            }
        }
        let (mut spawn, mut dropped) = (0, 0);
        if let Ok(mut checks) = self.checks.lock() {
            for (subject, _) in events {
                if checks.queued.contains(subject) {
                    continue;
                }
                if checks.queued.len() >= QUEUED_MAX {
                    dropped += 1;
                    continue;
                }
                checks.queued.insert(subject.clone());
                checks.queue.push_back((subject.clone(), config.clone()));
            }
            spawn = checks.queue.len().min(CHECKERS.saturating_sub(checks.running));
            checks.running += spawn;
        }
        if dropped > 0 {
            tracing::warn!(
                calls = dropped,
                "Too many calls wait for their completion check; the sweeper completes these once settled."
            );
        }
        for _ in 0..spawn {
            let this = self.clone();
            tokio::spawn(async move { this.check_queued().await });
        }
    }

    /// A checker: completes the queued calls until none is left.
    async fn check_queued(&self) {
        loop {
            let next = match self.checks.lock() {
                Ok(mut checks) => match checks.queue.pop_front() {
                    Some((subject, config)) => {
                        checks.queued.remove(&subject);
                        Some((subject, config))
                    }
                    None => {
                        checks.running = checks.running.saturating_sub(1);
                        None
                    }
                },
                Err(_) => None,
            };
            let Some((subject, config)) = next else { return };
            if let Err(e) = self.complete(&config, &subject, false).await {
                tracing::warn!(error = %e, "Could not complete a call at ingest; the sweeper will.");
            }
        }
    }

    /// Calls queued or being checked, and checkers running (tests).
    #[cfg(test)]
    fn checking(&self) -> (usize, usize) {
        self.checks.lock().map(|c| (c.queue.len(), c.running)).unwrap_or_default()
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
        let source = &event.data.common.source;
        // Kept for the live tail only while someone reads it.
        let tailed =
            self.tail.as_ref().filter(|t| t.active()).map(|t| (t, crate::tail::summaries(source, &ingest.events)));
        let done = self.store.complete_call(subject, summary.events, ingest).await?;
        if done {
            if let Some((tail, accepted)) = tailed {
                tail.accepted(accepted);
            }
            crate::telemetry::event(source, EventType::CallCompleted.as_str());
        }
        Ok(done.then_some(Outcome::Completed))
    }

    /// Completes the calls that settled by now; how many it completed.
    ///
    /// A call it cannot complete (its events unreadable, changing on every try, or its write
    /// failing; only an unavailable store ends the pass) stays in
    /// [`Store::settling`], oldest terminal event first, so each batch asks for those it kept
    /// and [`BATCH`] more, and skips the ones it tried: calls it cannot complete never keep the
    /// others from being completed (at most [`SWEEP_MAX`] kept per pass).
    pub async fn sweep(&self, config: &Config) -> Result<usize, CompletionError> {
        let settle = config.calls.settle.as_millis() as i64;
        // Settled: the terminal event was accepted `settle` ago or more.
        let before = now_ms().saturating_sub(settle).saturating_add(1);
        let (mut done, mut kept, mut stuck, mut failed) = (0, 0, 0, 0);
        let mut tried: HashSet<String> = HashSet::new();
        loop {
            let limit = (kept + BATCH).min(SWEEP_MAX);
            let subjects = self.store.settling(before, limit).await?;
            let mut fresh = 0;
            for subject in &subjects {
                if !tried.insert(subject.clone()) {
                    continue;
                }
                fresh += 1;
                match self.complete(config, subject, true).await {
                    Ok(Outcome::Completed) => done += 1,
                    // Another replica's (or an ingest check's) completion came first, or the
                    // call kept changing: then it stays.
                    Ok(Outcome::Not) => kept += 1,
                    Ok(Outcome::Unreadable) => (kept, stuck) = (kept + 1, stuck + 1),
                    // The store is away: this pass ends, the next one tries again.
                    Err(CompletionError::Store(e @ (StoreError::Unavailable(_) | StoreError::Closed))) => {
                        return Err(e.into());
                    }
                    // This call's completion failed (it stays): the others go on.
                    Err(e) => {
                        (kept, failed) = (kept + 1, failed + 1);
                        tracing::warn!(error = %e, "Could not complete a settled call; trying again later.");
                    }
                }
            }
            // Fewer than asked for: none left; nothing new: none this pass can reach.
            if subjects.len() < limit || fresh == 0 {
                break;
            }
        }
        if stuck > 0 {
            tracing::warn!(
                calls = stuck,
                "Calls past their settle time could not be completed (their events cannot be read); trying again later."
            );
        }
        if failed > 0 {
            tracing::warn!(calls = failed, "Calls past their settle time failed to complete; trying again later.");
        }
        Ok(done)
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
        canonical::{Vendor, sample::sample},
        store::{NewEvent, sqlite::SqliteStore},
        vendors::{Origin, normalize},
    };

    #[tokio::test]
    async fn a_burst_of_accepted_calls_is_checked_by_a_few_tasks_and_each_call_completed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("db.sqlite"), std::time::Duration::from_secs(1)).unwrap());
        let mut events = Vec::new();
        for i in 0..40 {
            let ended = sample(EventType::CallEnded, "salpre", Vendor::Salpre, chrono::Utc::now());
            let ingest = Ingest {
                source: "salpre".into(),
                digest: crate::canonical::body_digest(format!("ended {i}").as_bytes()),
                body: Vec::new(),
                received_at: now_ms(),
                events: vec![NewEvent {
                    id: ended.id.clone(),
                    kind: "call.ended".into(),
                    subject: ended.subject.clone(),
                    json: serde_json::to_string(&ended).unwrap(),
                    routes: Vec::new(),
                    status: Some("completed"),
                }],
            };
            store.ingest(ingest).await.unwrap();
            // Each call twice: a redelivered trigger waits once.
            events.push((ended.subject.clone(), EventType::CallEnded));
            events.push((ended.subject, EventType::CallEnded));
        }
        let config = Arc::new(Config::from_toml("", &crate::config::ProcessEnv).unwrap());
        let completions = Completions::new(store.clone(), None);
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        // Whether a wake-up is stored for the sweeper (taking it).
        let woken = |c: &Completions| futures_util::FutureExt::now_or_never(c.wake.notified()).is_some();
        // One payload per call, accepted at once (nothing runs in between on this runtime),
        // a millisecond apart.
        let at = now_ms();
        for (i, pair) in events.chunks(2).enumerate() {
            completions.accepted(&config, pair, at + i as i64);
            // The sweeper was woken for the first settle time only (the others come after it).
            assert_eq!(woken(&completions), i == 0, "payload {i}");
        }
        let spawned = metrics.num_alive_tasks() - before;
        assert!(spawned <= CHECKERS, "{spawned} tasks for 40 calls");
        assert_eq!(completions.checking(), (40, CHECKERS), "each call queued once");
        // Until every check ran (a condition polled, under a deadline).
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while completions.checking() != (0, 0) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the checks finished");
        for (subject, _) in events.iter().step_by(2) {
            let call = store.call(subject, now_ms()).await.unwrap().unwrap();
            assert!(call.summary.completed_at.is_some(), "{subject}");
            assert_eq!(call.summary.events, 2, "{subject}: its call.completed, once");
        }
    }

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
