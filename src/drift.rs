//! The drift report's gateway side: ingress adds the drift of every accepted payload
//! (`vendors::Drift`) to an in-memory sum per (source, vendor event, kind, path, value), and a
//! task adds the sums to the store every [`FLUSH_EVERY`] and at shutdown
//! (`Store::record_drift`), so drift costs ingest no store round trip. A crash loses at most
//! the last interval's counts; the report is a report, not data. Every replica writes into the
//! same rows, so `GET /v1/admin/drift` on any replica shows what all of them saw (theirs up to
//! one interval late; its own is written before the answer is read).
//!
//! **Invariant:** memory is bounded: at most [`MAX_ROWS_PER_SOURCE`] keys per source wait in
//! memory, and the rest is counted in the source's overflow row, as the store does.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    store::{DRIFT_OVERFLOW, DriftCount, Millis, Store, StoreError},
    telemetry,
    vendors::Drift,
};

/// How often the sums are added to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Most distinct rows a source holds in the report (and in memory between writes); drift past
/// it is counted in the source's overflow row.
pub const MAX_ROWS_PER_SOURCE: usize = 1000;

type Key = (String, String, String, String, String);

/// Drift sums waiting for the store.
pub struct DriftRecorder {
    store: Arc<dyn Store>,
    pending: Mutex<Pending>,
    /// One write at a time, so a report read after [`DriftRecorder::flush`] sees every sum
    /// taken before it (also those an interval write had in flight).
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Pending {
    counts: HashMap<Key, DriftCount>,
    /// Keys held per source (overflow rows not counted).
    per_source: HashMap<String, usize>,
}

impl Pending {
    fn add(&mut self, count: DriftCount) {
        let key = key(&count);
        if let Some(held) = self.counts.get_mut(&key) {
            held.merge(&count);
            return;
        }
        let held = self.per_source.entry(count.source.clone()).or_default();
        let count = if count.kind == DRIFT_OVERFLOW {
            count
        } else if *held < MAX_ROWS_PER_SOURCE {
            *held += 1;
            count
        } else {
            DriftCount::overflow(&count.source, count.count, count.first_seen, count.last_seen)
        };
        match self.counts.get_mut(&self::key(&count)) {
            Some(overflow) => overflow.merge(&count),
            None => {
                self.counts.insert(self::key(&count), count);
            }
        }
    }
}

fn key(c: &DriftCount) -> Key {
    (c.source.clone(), c.vendor_event.clone(), c.kind.clone(), c.path.clone(), c.value.clone())
}

impl DriftRecorder {
    pub fn new(store: Arc<dyn Store>) -> Self {
        DriftRecorder { store, pending: Mutex::default(), flushing: tokio::sync::Mutex::new(()) }
    }

    /// Adds one accepted payload's drift (of `vendor_event` from `source`, seen `at`), and
    /// counts it in `callgate_vendor_drift_total`.
    pub fn observe(&self, source: &str, vendor_event: &str, drift: &[Drift], at: Millis) {
        if drift.is_empty() {
            return;
        }
        for d in drift {
            telemetry::vendor_drift(source, d.kind.as_str(), d.count);
        }
        let Ok(mut pending) = self.pending.lock() else { return };
        for d in drift {
            pending.add(DriftCount {
                source: source.to_owned(),
                vendor_event: vendor_event.to_owned(),
                kind: d.kind.as_str().to_owned(),
                path: d.path.clone(),
                value: d.value.clone(),
                count: i64::try_from(d.count).unwrap_or(i64::MAX),
                first_seen: at,
                last_seen: at,
                example: d.example.clone(),
            });
        }
    }

    /// Adds every waiting sum to the store; on failure they wait for the next write.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _one = self.flushing.lock().await;
        let taken = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Ok(()),
        };
        if taken.counts.is_empty() {
            return Ok(());
        }
        let counts: Vec<DriftCount> = taken.counts.into_values().collect();
        match self.store.record_drift(counts.clone(), MAX_ROWS_PER_SOURCE).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Ok(mut pending) = self.pending.lock() {
                    counts.into_iter().for_each(|c| pending.add(c));
                }
                Err(e)
            }
        }
    }

    /// Writes the sums every [`FLUSH_EVERY`] until `stop`, then once more.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.flush().await {
                        tracing::warn!(error = %e, "Could not write the vendor drift counts; they wait for the next write.");
                    }
                }
                () = &mut stop => break,
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "Could not write the last vendor drift counts at shutdown; they are lost.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(source: &str, path: &str, n: i64, at: Millis) -> DriftCount {
        DriftCount {
            source: source.into(),
            vendor_event: "e".into(),
            kind: "unknown_field".into(),
            path: path.into(),
            value: String::new(),
            count: n,
            first_seen: at,
            last_seen: at,
            example: String::new(),
        }
    }

    #[test]
    fn pending_sums_are_bounded_per_source_and_the_rest_overflows() {
        let mut pending = Pending::default();
        for i in 0..MAX_ROWS_PER_SOURCE + 5 {
            pending.add(count("vox", &format!("f{i}"), 1, i as i64));
        }
        pending.add(count("vox", "f0", 2, 9_999));
        pending.add(count("salpre", "x", 1, 1));
        assert_eq!(pending.counts.len(), MAX_ROWS_PER_SOURCE + 2, "vox's keys, its overflow row, salpre's key");
        let overflow = pending.counts.values().find(|c| c.kind == DRIFT_OVERFLOW).unwrap();
        assert_eq!((overflow.source.as_str(), overflow.count), ("vox", 5));
        let f0 = pending.counts.values().find(|c| c.path == "f0").unwrap();
        assert_eq!((f0.count, f0.first_seen, f0.last_seen), (3, 0, 9_999));
    }
}
