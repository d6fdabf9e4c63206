//! The store contract as tests: every check here runs against each backend (SQLite always,
//! PostgreSQL on the server `CALLGATE_TEST_PG_URL` names, see `postgres::testdb`). Checks take
//! a [`Harness`], which opens stores on one database: a second store is a reopen (SQLite) or
//! another replica (PostgreSQL). What only one backend shows stays in its own tests.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Attempt, CallFilter, CallStatus, DRIFT_OVERFLOW, DeliveryState, DriftCount, Filter, Ingest, IngestOutcome,
    LogFilter, LogOutcome, NewEvent, Notice, OutcomeKind, Pruned, Quarantined, Store, TestSend, now_ms,
    test_support::{claim, delivered, ingest, outcome},
};

#[async_trait]
pub(crate) trait Harness: Send + Sync {
    /// A store on this harness's database; each call opens another one on the same data.
    async fn open(&self) -> Arc<dyn Store>;
}

pub(crate) async fn duplicates_return_the_original_ids(h: &dyn Harness) {
    let store = h.open().await;
    let first = store.ingest(ingest("vox", "{}", &[("a", "s", &["r"])])).await.unwrap();
    assert_eq!(first, IngestOutcome::Accepted(vec!["a".into()]));
    let again = store.ingest(ingest("vox", "{}", &[("ignored", "s", &["r"])])).await.unwrap();
    assert_eq!(again, IngestOutcome::Duplicate(vec!["a".into()]));
    let other_source = store.ingest(ingest("salpre", "{}", &[("b", "s", &["r"])])).await.unwrap();
    assert_eq!(other_source, IngestOutcome::Accepted(vec!["b".into()]));
}

pub(crate) async fn concurrent_ingests_of_one_body_are_accepted_once(h: &dyn Harness) {
    let store = h.open().await;
    let make = || ingest("vox", "same", &[("a", "s", &["r"])]);
    let (x, y, z) = tokio::join!(store.ingest(make()), store.ingest(make()), store.ingest(make()));
    let mut outcomes = [x.unwrap(), y.unwrap(), z.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, IngestOutcome::Duplicate(_)));
    let dup = IngestOutcome::Duplicate(vec!["a".into()]);
    assert_eq!(outcomes, [IngestOutcome::Accepted(vec!["a".into()]), dup.clone(), dup]);
    assert_eq!(store.counts().await.unwrap().backlog.get("r"), Some(&1));
}

pub(crate) async fn claims_lease_one_head_per_subject_oldest_first(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    let now = now_ms();
    let received = |mut i: Ingest| {
        i.received_at = now - 10_000;
        i
    };
    store.ingest(received(ingest("vox", "1", &[("a1", "call-a", &["r"]), ("a2", "call-a", &["r"])]))).await.unwrap();
    store.ingest(received(ingest("vox", "2", &[("b1", "call-b", &["r", "other"])]))).await.unwrap();
    assert!(claim(store, "other", now - 20_000, 10).await.is_empty(), "nothing is due before received_at");
    let due = claim(store, "r", now, 10).await;
    let ids: Vec<&str> = due.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["a1", "b1"], "a2 waits behind a1");
    assert!(claim(store, "r", now, 10).await.is_empty(), "a leased head is not handed out again, nor its follower");

    // A retry scheduled later keeps the subject's head in place, and its follower behind it.
    let later = now + 60_000;
    let attempt = Attempt { at: now, status: Some(500), ..Attempt::default() };
    store.complete(vec![outcome(&due[0], OutcomeKind::Retry { next_at: later, attempt })], now).await.unwrap();
    assert!(claim(store, "r", now, 10).await.is_empty(), "a1 waits for its retry, b1 is still leased");
    store.complete(vec![delivered(&due[1])], now).await.unwrap();
    assert_eq!(store.next_due("r", now).await.unwrap(), Some(later), "only the retried call waits");
    let retried = claim(store, "r", later, 10).await;
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].event_id.as_str(), retried[0].attempts), ("a1", 1));
    store.complete(vec![delivered(&retried[0])], later).await.unwrap();
    let follower = claim(store, "r", later, 10).await;
    assert_eq!(follower.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["a2"]);
}

pub(crate) async fn an_expired_lease_is_taken_over_and_its_late_outcome_dropped(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    let now = now_ms();
    store.ingest(ingest("vox", "1", &[("a", "x", &["r"]), ("b", "x", &["r"])])).await.unwrap();
    let first = store.claim("r", now, 10, now + 100).await.unwrap().deliveries;
    assert_eq!(first.len(), 1);
    assert_eq!(
        store.next_due("r", now).await.unwrap(),
        Some(now + 100),
        "the lease's end is the next thing to wake for"
    );
    assert!(store.claim("r", now + 50, 10, now + 150).await.unwrap().deliveries.is_empty());
    let taken = store.claim("r", now + 200, 10, now + 60_000).await.unwrap().deliveries;
    assert_eq!((taken.len(), taken[0].id), (1, first[0].id), "taken over, the head still first");
    assert_ne!(taken[0].lease, first[0].lease);
    let late = store.complete(vec![delivered(&first[0])], now + 300).await.unwrap();
    assert_eq!(late.stale, 1, "the old holder's outcome is dropped");
    assert_eq!(store.counts().await.unwrap().backlog["r"], 2);
    assert_eq!(store.complete(vec![delivered(&taken[0])], now + 300).await.unwrap().stale, 0);
    assert_eq!(claim(store, "r", now + 400, 10).await[0].event_id, "b");
}

pub(crate) async fn notices_tell_workers_what_changed_and_a_paused_route_claims_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    let mut notices = store.notices();
    store.ingest(ingest("vox", "1", &[("a", "x", &["r1", "r2"]), ("b", "x", &["r1"])])).await.unwrap();
    let mut due = vec![notices.recv().await.unwrap(), notices.recv().await.unwrap()];
    due.sort_by_key(|n| format!("{n:?}"));
    assert_eq!(due, [Notice::Due("r1".into()), Notice::Due("r2".into())]);
    store.set_paused("r1", Some("maintenance"), now_ms()).await.unwrap();
    assert_eq!(notices.recv().await.unwrap(), Notice::Paused { route: "r1".into(), paused: true });
    let claimed = store.claim("r1", now_ms(), 10, now_ms() + 60_000).await.unwrap();
    assert!(claimed.paused && claimed.deliveries.is_empty());
    store.set_paused("r1", None, now_ms()).await.unwrap();
    assert_eq!(notices.recv().await.unwrap(), Notice::Paused { route: "r1".into(), paused: false });
    assert_eq!(notices.recv().await.unwrap(), Notice::Due("r1".into()));
    let head = claim(store, "r1", now_ms(), 10).await.remove(0);
    store.complete(vec![delivered(&head)], now_ms()).await.unwrap();
    assert_eq!(notices.recv().await.unwrap(), Notice::Due("r1".into()), "the call's next event may go");
}

pub(crate) async fn a_recovered_route_makes_its_waiting_retries_due_now(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    let now = now_ms();
    store.ingest(ingest("vox", "1", &[("a", "x", &["r"]), ("b", "y", &["r"])])).await.unwrap();
    let due = claim(store, "r", now, 10).await;
    let attempt = Attempt { at: now, status: Some(503), ..Attempt::default() };
    store
        .complete(vec![outcome(&due[0], OutcomeKind::Retry { next_at: now + 3_600_000, attempt })], now)
        .await
        .unwrap();
    store
        .complete(
            vec![outcome(
                &due[1],
                OutcomeKind::Delivered { recovered: true, attempt: crate::store::Attempt::default() },
            )],
            now_ms(),
        )
        .await
        .unwrap();
    let again = claim(store, "r", now_ms(), 10).await;
    assert_eq!(again.len(), 1, "the hour-long retry is due at once");
    assert_eq!(again[0].event_id, "a");
}

pub(crate) async fn dead_letters_replay_at_their_place_and_gone_pauses_the_route(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    store.ingest(ingest("vox", "1", &[("a", "x", &["r"]), ("b", "x", &["r"])])).await.unwrap();
    let head = claim(store, "r", now_ms(), 10).await.remove(0);
    let attempt = Attempt { at: now_ms(), status: Some(500), response: Some("nope".into()), ..Attempt::default() };
    store.complete(vec![outcome(&head, OutcomeKind::Dead { attempt })], now_ms()).await.unwrap();
    let listed = store.dead_letters(&Filter::default()).await.unwrap();
    assert_eq!((listed.len(), listed[0].event_id.as_str(), listed[0].attempts), (1, "a", 1));
    assert_eq!(listed[0].last_error.as_deref(), Some("HTTP 500"));
    let detail = store.dead_letter(head.id).await.unwrap().unwrap();
    assert_eq!(detail.attempts_log[0].response.as_deref(), Some("nope"));
    assert_eq!(detail.event["id"], "a");
    assert!(store.dead_letter(head.id + 1000).await.unwrap().is_none());
    assert!(store.dead_letters(&Filter { name: Some("other".into()), ..Filter::default() }).await.unwrap().is_empty());
    // b is now the head; replaying a puts it in front again.
    let b = claim(store, "r", now_ms(), 10).await.remove(0);
    assert_eq!(b.event_id, "b");
    let attempt = Attempt { at: now_ms(), status: Some(500), ..Attempt::default() };
    store.complete(vec![outcome(&b, OutcomeKind::Retry { next_at: now_ms(), attempt })], now_ms()).await.unwrap();
    let filter = Filter { name: Some("r".into()), ..Filter::default() };
    let replayed = store.replay_dead_letters(&filter, now_ms()).await.unwrap();
    assert_eq!(replayed, [(head.id, "r".to_owned())]);
    let due = claim(store, "r", now_ms(), 10).await;
    assert_eq!((due[0].event_id.as_str(), due[0].attempts, due[0].id), ("a", 0, head.id));
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.backlog.get("r"), counts.dead.get("r")), (Some(&2), None));

    let attempt = Attempt { at: now_ms(), status: Some(410), ..Attempt::default() };
    store.complete(vec![outcome(&due[0], OutcomeKind::Gone { attempt })], now_ms()).await.unwrap();
    let paused = store.paused().await.unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].route, "r");
    assert_eq!(store.counts().await.unwrap().backlog["r"], 2, "a 410 keeps the delivery");
    store.set_paused("r", None, now_ms()).await.unwrap();
    assert!(store.paused().await.unwrap().is_empty());
}

pub(crate) async fn quarantine_lists_pages_and_releases(h: &dyn Harness) {
    let store = h.open().await;
    for (n, source) in ["vox", "salpre", "vox"].iter().enumerate() {
        store
            .quarantine(Quarantined {
                source: (*source).into(),
                vendor: (*source).into(),
                received_at: 1_000 + n as i64,
                status: 422,
                reason: "schema_violation".into(),
                details: r#"[{"path":"/a","message":"m"}]"#.into(),
                body: format!("body-{n}").into_bytes(),
            })
            .await
            .unwrap();
    }
    let all = store.quarantined(&Filter::default(), false).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].id > all[1].id && all[1].id > all[2].id, "newest first");
    assert!(all[0].body.is_none());
    assert_eq!((all[0].status, all[0].details[0]["path"].as_str()), (422, Some("/a")));
    let vox = store.quarantined(&Filter { name: Some("vox".into()), ..Filter::default() }, true).await.unwrap();
    assert_eq!(vox.iter().map(|q| q.body.as_deref().unwrap()).collect::<Vec<_>>(), ["body-2", "body-0"]);
    let page = Filter { before_id: Some(all[0].id), limit: Some(1), ..Filter::default() };
    assert_eq!(store.quarantined(&page, false).await.unwrap().iter().map(|q| q.id).collect::<Vec<_>>(), [all[1].id]);
    let raw = store.quarantined_raw(&Filter { after_id: Some(all[2].id), ..Filter::default() }).await.unwrap();
    assert_eq!(
        raw.iter().map(|r| (r.0, r.2.as_slice())).collect::<Vec<_>>(),
        [(all[1].id, &b"body-1"[..]), (all[0].id, &b"body-2"[..])]
    );
    store.release_quarantined(all[1].id).await.unwrap();
    assert_eq!(store.quarantined(&Filter::default(), false).await.unwrap().len(), 2);
}

pub(crate) async fn prune_removes_old_delivered_data_but_keeps_what_is_pending(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    store.ingest(ingest("vox", "old-delivered", &[("a", "x", &["r"])])).await.unwrap();
    store.ingest(ingest("vox", "old-pending", &[("b", "y", &["r"])])).await.unwrap();
    let due = claim(store, "r", now_ms(), 10).await;
    let a = due.iter().find(|d| d.event_id == "a").unwrap();
    let b = due.iter().find(|d| d.event_id == "b").unwrap();
    store.complete(vec![delivered(a)], now_ms()).await.unwrap();
    let attempt = Attempt { at: now_ms(), status: Some(500), ..Attempt::default() };
    store.complete(vec![outcome(b, OutcomeKind::Retry { next_at: now_ms(), attempt })], now_ms()).await.unwrap();
    store
        .quarantine(Quarantined {
            source: "vox".into(),
            vendor: "vox".into(),
            received_at: 1_000,
            status: 400,
            reason: "invalid_json".into(),
            details: "[]".into(),
            body: b"{".to_vec(),
        })
        .await
        .unwrap();
    let recent = now_ms();
    store.record_drift(vec![drift("vox", "old", 1, 1_000), drift("vox", "recent", 1, recent)], 10).await.unwrap();
    // received_at of both payloads is 1_000 (see `ingest`): everything is old, but for b's
    // failed attempt (now, and its delivery pending). a's success (`delivered`: at 0) goes
    // with the event it belongs to.
    let pruned = store.prune(2_000, 2_000).await.unwrap();
    assert_eq!(pruned, Pruned { events: 1, payloads: 1, attempts: 1, quarantine: 1, drift: 1, calls: 1 });
    assert!(store.event("a", now_ms()).await.unwrap().is_none());
    assert_eq!(store.delivery_log(&LogFilter::default()).await.unwrap().len(), 1, "b's attempt is kept");
    let kept: Vec<String> = store.drift(&Filter::default()).await.unwrap().into_iter().map(|d| d.path).collect();
    assert_eq!(kept, ["recent"], "drift seen within the retention is kept");
    assert!(store.call("x", now_ms()).await.unwrap().is_none(), "a call without events is forgotten");
    assert_eq!(store.call("y", now_ms()).await.unwrap().unwrap().events.len(), 1);
    assert_eq!(claim(store, "r", now_ms(), 10).await[0].event_id, "b", "pending work is kept");
    // The redelivery window outlived: the old body is accepted again.
    let again = store.ingest(ingest("vox", "old-delivered", &[("a2", "x", &["r"])])).await.unwrap();
    assert_eq!(again, IngestOutcome::Accepted(vec!["a2".into()]));
    let dup = store.ingest(ingest("vox", "old-pending", &[("b2", "y", &["r"])])).await.unwrap();
    assert_eq!(dup, IngestOutcome::Duplicate(vec!["b".into()]), "a payload with pending events is kept");
}

/// A drift count of `path` in `source` at `at`.
fn drift(source: &str, path: &str, count: i64, at: i64) -> DriftCount {
    DriftCount {
        source: source.into(),
        vendor_event: "call_ended".into(),
        kind: "unknown_field".into(),
        path: path.into(),
        value: String::new(),
        count,
        first_seen: at,
        last_seen: at,
        example: format!("seen at {at}"),
    }
}

pub(crate) async fn drift_adds_up_across_stores_and_each_source_is_capped(h: &dyn Harness) {
    let t = now_ms();
    let first = h.open().await;
    first.record_drift(vec![drift("vox", "a", 2, t), drift("vox", "b", 1, t + 5)], 3).await.unwrap();
    drop(first);
    // Another replica (PostgreSQL) or the same file reopened (SQLite) adds to the same rows.
    let store = h.open().await;
    let mut again = drift("vox", "a", 3, t + 10);
    again.first_seen = t - 10;
    store.record_drift(vec![again], 3).await.unwrap();
    let a = store.drift(&Filter::default()).await.unwrap().into_iter().find(|d| d.path == "a").unwrap();
    assert_eq!((a.count, a.first_seen, a.last_seen), (5, t - 10, t + 10), "counts add up, times widen");
    assert_eq!(a.example, format!("seen at {}", t + 10), "the latest example wins");
    // An older sighting does not replace the example or move last_seen back.
    store.record_drift(vec![drift("vox", "a", 1, t)], 3).await.unwrap();
    let a = store.drift(&Filter::default()).await.unwrap().into_iter().find(|d| d.path == "a").unwrap();
    assert_eq!((a.count, a.last_seen, a.example.as_str()), (6, t + 10, format!("seen at {}", t + 10).as_str()));

    // Cap 3: vox holds a and b, so c fits; d and e overflow; known rows still count.
    let batch = vec![drift("vox", "c", 1, t + 20), drift("vox", "d", 4, t + 21), drift("vox", "e", 1, t + 22)];
    store.record_drift(batch, 3).await.unwrap();
    store.record_drift(vec![drift("vox", "b", 1, t + 30), drift("salpre", "x", 1, t + 30)], 3).await.unwrap();
    let rows = store.drift(&Filter { name: Some("vox".into()), ..Filter::default() }).await.unwrap();
    let seen: Vec<(&str, &str, i64)> = rows.iter().map(|d| (d.kind.as_str(), d.path.as_str(), d.count)).collect();
    assert_eq!(
        seen,
        [("unknown_field", "b", 2), (DRIFT_OVERFLOW, "", 5), ("unknown_field", "c", 1), ("unknown_field", "a", 6)]
    );
    // Filters: source, and last seen since.
    let recent = store.drift(&Filter { since: Some(t + 25), ..Filter::default() }).await.unwrap();
    let mut sources: Vec<&str> = recent.iter().map(|d| d.source.as_str()).collect();
    sources.sort_unstable();
    assert_eq!(sources, ["salpre", "vox"], "only rows last seen since then");
    let limited = store.drift(&Filter { limit: Some(2), ..Filter::default() }).await.unwrap();
    assert_eq!(limited.len(), 2);
}

pub(crate) async fn counts_follow_every_change_and_survive_reopening(h: &dyn Harness) {
    let store = h.open().await;
    store.ingest(ingest("vox", "1", &[("a", "x", &["r1", "r2"]), ("b", "y", &["r1"])])).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.backlog.get("r1"), counts.backlog.get("r2")), (Some(&2), Some(&1)));
    let due = claim(&*store, "r1", 5_000, 10).await;
    let attempt = Attempt { at: 5_000, error: Some("boom".into()), ..Attempt::default() };
    store.complete(vec![delivered(&due[0]), outcome(&due[1], OutcomeKind::Dead { attempt })], 5_000).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.backlog.get("r2"), Some(&1));
    assert_eq!(counts.backlog.get("r1"), None);
    assert_eq!(counts.dead.get("r1"), Some(&1));
    drop(store);
    let reopened = h.open().await;
    assert_eq!(reopened.counts().await.unwrap(), counts);
    reopened.ping().await.unwrap();
}

pub(crate) async fn released_leases_are_claimable_at_once_and_stale_ones_change_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    let mut notices = store.notices();
    store.ingest(ingest("vox", "1", &[("a", "x", &["r"]), ("b", "x", &["r"])])).await.unwrap();
    let now = now_ms();
    let first = claim(store, "r", now, 10).await;
    assert_eq!(first.len(), 1);
    assert!(claim(store, "r", now, 10).await.is_empty(), "leased for a minute");
    // A token that is not the delivery's lease releases nothing.
    store.release(vec![(first[0].id, crate::store::Lease(first[0].lease.0 ^ 1))]).await.unwrap();
    assert!(claim(store, "r", now, 10).await.is_empty());
    while notices.try_recv().is_ok() {}
    store.release(vec![(first[0].id, first[0].lease)]).await.unwrap();
    assert_eq!(notices.recv().await.unwrap(), Notice::Due("r".into()));
    let again = claim(store, "r", now, 10).await;
    assert_eq!(
        (again.len(), again[0].id, again[0].attempts),
        (1, first[0].id, 0),
        "the head, at once, no attempt counted"
    );
    assert_eq!(store.complete(vec![delivered(&first[0])], now).await.unwrap().stale, 1, "the released lease is gone");
    store.complete(vec![delivered(&again[0])], now).await.unwrap();
    assert_eq!(claim(store, "r", now, 10).await[0].event_id, "b");
}

pub(crate) async fn a_discarded_backlog_is_gone_but_leased_rows_and_other_routes_stay(h: &dyn Harness) {
    let owned = h.open().await;
    let store = &*owned;
    let now = now_ms();
    store
        .ingest(ingest("vox", "1", &[("a", "x", &["gone", "kept"]), ("b", "y", &["gone"]), ("c", "z", &["gone"])]))
        .await
        .unwrap();
    let in_flight = claim(store, "gone", now, 1).await;
    assert_eq!(in_flight.len(), 1);
    assert_eq!(store.discard_backlog("gone", now).await.unwrap(), 2, "all but the leased row");
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.backlog.get("gone"), counts.backlog.get("kept")), (Some(&1), Some(&1)));
    assert!(claim(store, "gone", now, 10).await.is_empty(), "nothing discarded is claimable");
    // The attempt in flight records its outcome as usual.
    assert_eq!(store.complete(vec![delivered(&in_flight[0])], now).await.unwrap().stale, 0);
    assert_eq!(store.counts().await.unwrap().backlog.get("gone"), None);
    assert_eq!(store.discard_backlog("gone", now).await.unwrap(), 0);
    assert_eq!(claim(store, "kept", now, 10).await[0].event_id, "a", "another route's deliveries stay");
    drop(owned);
    let reopened = h.open().await;
    assert_eq!(reopened.counts().await.unwrap().backlog.get("gone"), None, "the discard was durable");
}

/// What one process gives `send_tail` reaches the tail feed of every process on the store,
/// its own included, and a payload over the limit is refused; a store that only one process
/// opens has no feed and takes payloads without complaint.
pub(crate) async fn tail_payloads_reach_every_process_sharing_the_store(h: &dyn Harness) {
    let a = h.open().await;
    let Some(mut feed_a) = a.tail_feed() else {
        a.send_tail(vec!["nobody hears this".into()]).await.unwrap();
        return;
    };
    let b = h.open().await;
    let mut feed_b = b.tail_feed().expect("another process on the same store has a feed too");
    let big = "x".repeat(super::TAIL_PAYLOAD_MAX + 1);
    assert!(a.send_tail(vec![big]).await.is_err(), "a payload over the limit is refused");
    let most = "y".repeat(super::TAIL_PAYLOAD_MAX);
    a.send_tail(vec!["one".into(), most.clone()]).await.unwrap();
    for feed in [&mut feed_a, &mut feed_b] {
        let mut heard = Vec::new();
        while heard.len() < 2 {
            match tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv()).await {
                Ok(Ok(super::TailFeed::Payload(p))) => heard.push(p.to_string()),
                other => panic!("expected a tail payload, got {other:?}"),
            }
        }
        assert_eq!(heard, ["one".to_owned(), most.clone()]);
    }
}

pub(crate) async fn the_delivery_log_keeps_every_attempt_and_lists_it_newest_first(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    let now = now_ms();
    store.ingest(ingest("vox", "1", &[("a", "call-a", &["r", "s"]), ("b", "call-b", &["r"])])).await.unwrap();
    let due = claim(store, "r", now, 10).await;
    let (a, b) = (&due[0], &due[1]);
    let answer = |status: u16, response: &str| Attempt {
        at: now,
        status: Some(status),
        error: None,
        response: Some(response.into()),
        duration_ms: 7,
    };
    let retry = OutcomeKind::Retry { next_at: now, attempt: answer(500, "busy") };
    store.complete(vec![outcome(a, retry)], now).await.unwrap();
    let again = claim(store, "r", now, 10).await;
    assert_eq!(again[0].id, a.id);
    let success = OutcomeKind::Delivered { recovered: false, attempt: answer(204, "fine") };
    let gone = OutcomeKind::Dead {
        attempt: Attempt { at: now, error: Some("connection failed".into()), ..Attempt::default() },
    };
    store.complete(vec![outcome(&again[0], success), outcome(b, gone)], now).await.unwrap();
    let test = TestSend {
        route: "r".into(),
        event_id: "t".into(),
        kind: "call.ended".into(),
        subject: "vox:test".into(),
        success: true,
        attempt: answer(200, "ok"),
    };
    let test_id = store.record_test(test).await.unwrap();

    let all = store.delivery_log(&LogFilter { route: Some("r".into()), ..LogFilter::default() }).await.unwrap();
    let seen: Vec<(Option<&str>, i64, LogOutcome, bool)> =
        all.iter().map(|e| (e.event_id.as_deref(), e.attempt, e.outcome, e.test)).collect();
    assert_eq!(
        seen,
        [
            (Some("t"), 1, LogOutcome::Success, true),
            (Some("b"), 1, LogOutcome::Dead, false),
            (Some("a"), 2, LogOutcome::Success, false),
            (Some("a"), 1, LogOutcome::Failed, false),
        ],
        "newest first"
    );
    assert_eq!(all[0].id, test_id);
    assert_eq!(
        (all[0].delivery_id, all[0].subject.as_deref(), all[0].kind.as_deref()),
        (None, Some("vox:test"), Some("call.ended"))
    );
    assert_eq!((all[2].status, all[2].response.as_deref(), all[2].duration_ms), (Some(204), Some("fine"), 7));
    assert_eq!(
        (all[2].delivery_id, all[2].subject.as_deref(), all[2].kind.as_deref()),
        (Some(a.id), Some("call-a"), Some("call.ended"))
    );
    assert_eq!(all[1].error.as_deref(), Some("connection failed"));
    let only = |f: LogFilter| async move {
        let f = LogFilter { route: Some("r".into()), ..f };
        store.delivery_log(&f).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(only(LogFilter { outcome: Some(LogOutcome::Success), ..LogFilter::default() }).await, [ids[0], ids[2]]);
    assert_eq!(only(LogFilter { test: Some(false), ..LogFilter::default() }).await, ids[1..]);
    assert_eq!(only(LogFilter { subject: Some("call-a".into()), ..LogFilter::default() }).await, ids[2..]);
    assert_eq!(only(LogFilter { before_id: Some(ids[1]), limit: Some(1), ..LogFilter::default() }).await, [ids[2]]);
    assert_eq!(only(LogFilter { since: Some(now + 1), ..LogFilter::default() }).await, Vec::<i64>::new());
    assert!(
        store.delivery_log(&LogFilter { route: Some("s".into()), ..LogFilter::default() }).await.unwrap().is_empty()
    );

    // One event, each route's delivery as the tables tell.
    let shown = store.event("a", now).await.unwrap().unwrap();
    assert_eq!((shown.kind.as_str(), shown.subject.as_str()), ("call.ended", "call-a"));
    assert_eq!(shown.event["id"], "a");
    let states: Vec<(&str, DeliveryState, i64, usize)> =
        shown.deliveries.iter().map(|d| (d.route.as_str(), d.state, d.attempts, d.attempts_log.len())).collect();
    assert_eq!(states, [("r", DeliveryState::Delivered, 2, 2), ("s", DeliveryState::Pending, 0, 0)]);
    assert!(shown.deliveries[1].next_at.is_some());
    let leased = claim(store, "s", now, 10).await;
    let shown = store.event("a", now).await.unwrap().unwrap();
    assert_eq!(shown.deliveries[1].state, DeliveryState::InFlight);
    assert!(shown.deliveries[1].lease_until.is_some());
    assert_eq!(
        store.event("a", now + 120_000).await.unwrap().unwrap().deliveries[1].state,
        DeliveryState::Pending,
        "an expired lease is no flight"
    );
    store.release(vec![(leased[0].id, leased[0].lease)]).await.unwrap();
    store.set_paused("s", Some("maintenance"), now).await.unwrap();
    assert_eq!(store.event("a", now).await.unwrap().unwrap().deliveries[1].state, DeliveryState::Paused);
    let dead = store.event("b", now).await.unwrap().unwrap();
    assert_eq!((dead.deliveries.len(), dead.deliveries[0].state), (1, DeliveryState::Dead));
    assert!(store.event("t", now).await.unwrap().is_none(), "a test send stores no event");
    assert!(store.event("nope", now).await.unwrap().is_none());
}

/// A payload of one event: `(id, kind, status, routes)` of call `subject`, received at `at`.
fn call_event(body: &str, subject: &str, at: i64, event: (&str, &str, Option<&'static str>, &[&str])) -> Ingest {
    let (id, kind, status, routes) = event;
    Ingest {
        received_at: at,
        events: vec![NewEvent {
            id: id.into(),
            kind: kind.into(),
            subject: subject.into(),
            json: format!("{{\"id\":\"{id}\"}}"),
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
            status,
        }],
        ..ingest("vox", body, &[])
    }
}

pub(crate) async fn calls_are_summarised_at_ingest_and_show_each_delivery(h: &dyn Harness) {
    let store = h.open().await;
    let store = &*store;
    let now = now_ms();
    store.ingest(call_event("1", "vox:a", 1_000, ("a1", "call.connected", None, &["r", "s"]))).await.unwrap();
    store.ingest(call_event("2", "vox:a", 2_000, ("a2", "call.ended", Some("completed"), &["r"]))).await.unwrap();
    store.ingest(call_event("3", "vox:b", 3_000, ("b1", "call.failed", Some("no_answer"), &["r"]))).await.unwrap();
    // A late non-terminal event changes no status; a later terminal one does.
    store.ingest(call_event("4", "vox:a", 4_000, ("a3", "call.analyzed", None, &[]))).await.unwrap();
    store.ingest(call_event("5", "vox:c", 5_000, ("c1", "call.ringing", None, &["r"]))).await.unwrap();
    // r: a1 delivered, b1 dead, then a2 leased; s: a1 still pending.
    let due = claim(store, "r", now, 10).await;
    let ids: Vec<&str> = due.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["a1", "b1", "c1"]);
    let attempt = Attempt { at: now, status: Some(400), ..Attempt::default() };
    store
        .complete(vec![delivered(&due[0]), outcome(&due[1], OutcomeKind::Dead { attempt: attempt.clone() })], now)
        .await
        .unwrap();
    store.complete(vec![outcome(&due[2], OutcomeKind::Retry { next_at: now + 60_000, attempt })], now).await.unwrap();
    let next = claim(store, "r", now, 10).await;
    assert_eq!(next.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["a2"]);

    let a = store.call("vox:a", now).await.unwrap().expect("call a");
    assert_eq!(a.summary.status.as_deref(), Some("completed"));
    assert_eq!((a.summary.source.as_str(), a.summary.events), ("vox", 3));
    assert_eq!(a.summary.first_at, crate::store::rfc3339(1_000));
    assert_eq!(a.summary.last_at, crate::store::rfc3339(4_000));
    assert_eq!(a.summary.terminal_at, Some(crate::store::rfc3339(2_000)));
    let events: Vec<(&str, &str, i64)> =
        a.events.iter().map(|e| (e.id.as_str(), e.kind.as_str(), e.accepted_at)).collect();
    assert_eq!(events, [("a1", "call.connected", 1_000), ("a2", "call.ended", 2_000), ("a3", "call.analyzed", 4_000)]);
    assert_eq!(a.events[0].json, "{\"id\":\"a1\"}");
    assert!(!a.truncated);
    let states: Vec<(&str, &str, DeliveryState)> =
        a.deliveries.iter().map(|d| (d.event_id.as_str(), d.route.as_str(), d.state)).collect();
    assert_eq!(
        states,
        [
            ("a1", "r", DeliveryState::Delivered),
            ("a1", "s", DeliveryState::Pending),
            ("a2", "r", DeliveryState::InFlight)
        ]
    );
    let b = store.call("vox:b", now).await.unwrap().expect("call b");
    assert_eq!(b.summary.status.as_deref(), Some("no_answer"));
    assert_eq!(b.deliveries.len(), 1);
    assert_eq!((b.deliveries[0].state, b.deliveries[0].delivery_id), (DeliveryState::Dead, Some(due[1].id)));
    assert_eq!(b.deliveries[0].last_error.as_deref(), Some("HTTP 400"));
    let c = store.call("vox:c", now).await.unwrap().expect("call c");
    assert_eq!((c.deliveries[0].state, c.deliveries[0].attempts), (DeliveryState::Retrying, 1));
    assert_eq!(c.deliveries[0].next_at, Some(crate::store::rfc3339(now + 60_000)));
    assert!(store.call("vox:nothing", now).await.unwrap().is_none());
    // What a completion check reads: the same summary and events, without delivery states.
    for subject in ["vox:a", "vox:b", "vox:c"] {
        let whole = store.call(subject, now).await.unwrap().unwrap();
        let (summary, events) = store.call_for_completion(subject).await.unwrap().expect(subject);
        assert_eq!(summary, whole.summary);
        assert_eq!(format!("{events:?}"), format!("{:?}", whole.events));
    }
    assert!(store.call_for_completion("vox:nothing").await.unwrap().is_none());

    // Listing: newest first, filtered, paged.
    let list = |filter: CallFilter| async move {
        store.calls(&filter).await.unwrap().into_iter().map(|c| c.subject).collect::<Vec<_>>()
    };
    assert_eq!(list(CallFilter::default()).await, ["vox:c", "vox:b", "vox:a"]);
    assert_eq!(list(CallFilter { status: Some(CallStatus::InProgress), ..CallFilter::default() }).await, ["vox:c"]);
    let no_answer = CallFilter { status: Some(CallStatus::Is("no_answer".into())), ..CallFilter::default() };
    assert_eq!(list(no_answer).await, ["vox:b"]);
    assert_eq!(list(CallFilter { source: Some("salpre".into()), ..CallFilter::default() }).await, Vec::<String>::new());
    assert_eq!(list(CallFilter { since: Some(3_000), ..CallFilter::default() }).await, ["vox:c", "vox:b"]);
    let first = store.calls(&CallFilter { limit: Some(2), ..CallFilter::default() }).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = CallFilter { before_id: Some(first[1].id), ..CallFilter::default() };
    assert_eq!(list(rest).await, ["vox:a"]);

    // The last terminal event decides, also when it arrives later than another.
    store.ingest(call_event("6", "vox:b", 6_000, ("b2", "call.ended", Some("completed"), &["r"]))).await.unwrap();
    let b = store.call("vox:b", now).await.unwrap().unwrap();
    assert_eq!(
        (b.summary.status.as_deref(), b.summary.terminal_at),
        (Some("completed"), Some(crate::store::rfc3339(3_000)))
    );
    // A duplicate body adds nothing to its call.
    store.ingest(call_event("6", "vox:b", 7_000, ("b3", "call.failed", Some("busy"), &["r"]))).await.unwrap();
    let b = store.call("vox:b", now).await.unwrap().unwrap();
    assert_eq!((b.summary.status.as_deref(), b.summary.events), (Some("completed"), 2));
}

pub(crate) async fn concurrent_ingests_keep_one_summary_per_call_with_the_last_terminal_status(h: &dyn Harness) {
    let store = h.open().await;
    let statuses = ["completed", "busy", "no_answer", "failed"];
    // Each payload holds events of two calls, in either order, so concurrent batches share
    // calls (on PostgreSQL, writers commit them in parallel).
    let payloads: Vec<Ingest> = (0..40usize)
        .map(|i| {
            let (x, y) = (format!("vox:{}", i % 3), format!("vox:{}", (i + 1) % 3));
            let (first, second) = if i % 2 == 0 { (x, y) } else { (y, x) };
            let event = |n: usize, subject: String| NewEvent {
                id: format!("e{i}-{n}"),
                kind: if n == 0 { "call.ended".into() } else { "call.connected".into() },
                subject,
                json: "{}".into(),
                routes: vec!["r".into()],
                status: (n == 0).then_some(statuses[i % statuses.len()]),
            };
            Ingest {
                received_at: 1_000 + i as i64,
                events: vec![event(0, first), event(1, second)],
                ..ingest("vox", &format!("c{i}"), &[])
            }
        })
        .collect();
    let statuses_of: std::collections::HashMap<String, &str> =
        payloads.iter().flat_map(|p| p.events.iter().filter_map(|e| e.status.map(|s| (e.id.clone(), s)))).collect();
    let tasks: Vec<_> = payloads
        .into_iter()
        .map(|p| {
            let store = store.clone();
            tokio::spawn(async move { store.ingest(p).await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap().unwrap(), IngestOutcome::Accepted(_)));
    }
    let calls = store.calls(&CallFilter::default()).await.unwrap();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls.iter().map(|c| c.events).sum::<i64>(), 80);
    for summary in calls {
        let call = store.call(&summary.subject, now_ms()).await.unwrap().unwrap();
        assert_eq!(call.events.len() as i64, summary.events, "{}", summary.subject);
        let last_terminal = call.events.iter().rev().find(|e| e.kind == "call.ended").unwrap();
        assert_eq!(summary.status.as_deref(), Some(statuses_of[&last_terminal.id]), "{}", summary.subject);
        let seqs: Vec<i64> = call.events.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "acceptance order");
    }
}

pub(crate) async fn a_large_call_is_returned_up_to_its_byte_bound(h: &dyn Harness) {
    let store = h.open().await;
    let big = format!("\"{}\"", "x".repeat(crate::store::CALL_BYTES_MAX * 3 / 8));
    for (i, id) in ["l1", "l2", "l3"].into_iter().enumerate() {
        let mut payload =
            call_event(&format!("large-{i}"), "vox:large", 1_000, (id, "transcript.partial", None, &["r"]));
        payload.events[0].json = big.clone();
        store.ingest(payload).await.unwrap();
    }
    let call = store.call("vox:large", now_ms()).await.unwrap().unwrap();
    assert_eq!(call.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["l1", "l2"], "a third passes the bound");
    assert!(call.truncated);
    assert_eq!(call.summary.events, 3);
    assert_eq!(call.deliveries.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["l1", "l2"]);
    let (summary, events) = store.call_for_completion("vox:large").await.unwrap().unwrap();
    assert_eq!(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["l1", "l2"], "the same bound");
    assert_eq!(summary, call.summary);
}

/// An event of `subject` whose JSON carries `from` as its caller's number.
fn numbered(id: &str, subject: &str, from: &str) -> NewEvent {
    NewEvent {
        id: id.into(),
        kind: "call.started".into(),
        subject: subject.into(),
        json: serde_json::json!({ "id": id, "subject": subject, "data": { "from": from, "to": "+15550001111" } })
            .to_string(),
        routes: vec!["r".into()],
        status: None,
    }
}

fn payload(source: &str, body: &str, events: Vec<NewEvent>) -> Ingest {
    Ingest {
        source: source.into(),
        digest: crate::canonical::body_digest(body.as_bytes()),
        body: body.as_bytes().to_vec(),
        received_at: 1_000,
        events,
    }
}

fn quarantined(source: &str, body: &str) -> Quarantined {
    Quarantined {
        source: source.into(),
        vendor: source.into(),
        received_at: 1_000,
        status: 422,
        reason: "schema_violation".into(),
        details: "[]".into(),
        body: body.as_bytes().to_vec(),
    }
}

/// Erasing a call removes its pending (and in-flight) deliveries, dead letter, log, events,
/// summary, payload (emptied when another call's events came in it too) and quarantined bodies
/// of its source naming it; erasing a number does so for each call whose events carry it in
/// either form. Other calls, test sends and the gauges stay right, also after a reopen.
pub(crate) async fn erasure_removes_a_call_or_a_numbers_calls_and_nothing_else(h: &dyn Harness) {
    use crate::store::erase::{Erased, Erasure, Number};
    let owned = h.open().await;
    let store = &*owned;
    let now = now_ms();
    let number = "+14155550123";
    let shared = payload(
        "vox",
        r#"[{"call":"call-a","from":"+14155550123"},{"call":"call-b"}]"#,
        vec![
            numbered("a1", "vox:call-a", number),
            numbered("a2", "vox:call-a", number),
            numbered("b1", "vox:call-b", "+15550002222"),
        ],
    );
    store.ingest(shared).await.unwrap();
    store
        .ingest(payload("vox", r#"{"call":"call-c"}"#, vec![numbered("c1", "vox:call-c", "+15550003333")]))
        .await
        .unwrap();
    let mut d1 = numbered("d1", "utel:call-d", "(415) 555-0123");
    d1.json = d1.json.replace(r#""to":"+15550001111""#, r#""to_e164":"+14155550123""#);
    store.ingest(payload("utel", r#"{"id":"call-d","to":"4155550123"}"#, vec![d1])).await.unwrap();
    for (source, body) in [("vox", "{\"call\":\"call-a\"}"), ("salpre", "from +14155550123"), ("vox", "unrelated")] {
        store.quarantine(quarantined(source, body)).await.unwrap();
    }
    // a1 dead-lettered (with its log row), a2 in flight, the rest waiting.
    let a1 = claim(store, "r", now, 1).await.remove(0);
    assert_eq!(a1.event_id, "a1");
    let attempt = Attempt { at: now, status: Some(500), ..Attempt::default() };
    store.complete(vec![outcome(&a1, OutcomeKind::Dead { attempt })], now).await.unwrap();
    let a2 = claim(store, "r", now, 1).await.remove(0);
    assert_eq!(a2.event_id, "a2");
    let test = TestSend {
        route: "r".into(),
        event_id: "sample".into(),
        kind: "call.started".into(),
        subject: "vox:call-a".into(),
        success: true,
        attempt: Attempt { at: now, status: Some(200), ..Attempt::default() },
    };
    store.record_test(test).await.unwrap();

    assert_eq!(store.erase(Erasure::Call("vox:nothing".into()), now).await.unwrap(), Erased::default());
    let erased = store.erase(Erasure::Call("vox:call-a".into()), now).await.unwrap();
    assert_eq!(
        erased,
        Erased {
            calls: 1,
            events: 2,
            payloads: 1,
            outbox_cancelled: 1,
            dead_letters: 1,
            log_rows: 1,
            quarantined: 1,
            drift_rows: 0
        }
    );
    assert!(store.call("vox:call-a", now).await.unwrap().is_none());
    assert!(store.event("a1", now).await.unwrap().is_none());
    assert!(store.dead_letters(&Filter::default()).await.unwrap().is_empty());
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.backlog.get("r"), counts.dead.get("r")), (Some(&3), None), "b1, c1, d1 wait");
    // The attempt in flight ends; it finds nothing to record.
    store.complete(vec![delivered(&a2)], now).await.unwrap();
    let log = store.delivery_log(&LogFilter { route: Some("r".into()), ..LogFilter::default() }).await.unwrap();
    assert_eq!(log.iter().map(|e| (e.test, e.subject.as_deref())).collect::<Vec<_>>(), [(true, Some("vox:call-a"))]);
    let call_b = store.call("vox:call-b", now).await.unwrap().expect("the other call of the payload stays");
    assert_eq!(call_b.events.len(), 1);
    let waiting = claim(store, "r", now, 10).await;
    let ids: Vec<&str> = waiting.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["b1", "c1", "d1"], "nothing of the erased call is delivered");
    let bodies = store.quarantined_raw(&Filter::default()).await.unwrap();
    assert_eq!(bodies.iter().map(|q| q.2.as_slice()).collect::<Vec<_>>(), [&b"from +14155550123"[..], b"unrelated"]);

    // A vendor's unknown value that is the number, in the drift report (and one that is not).
    let drift = |value: &str| DriftCount {
        source: "utel".into(),
        vendor_event: "call_ended".into(),
        kind: "unknown_value".into(),
        path: "disposition".into(),
        value: value.into(),
        count: 1,
        first_seen: now,
        last_seen: now,
        example: value.into(),
    };
    store.record_drift(vec![drift("transferred to +14155550123"), drift("voicemail")], 100).await.unwrap();
    // d1 holds the number in E.164 only (and as sent, another form): both are matched.
    let by_number = Number::parse("+1 415 555 0123", []).unwrap();
    let erased = store.erase(Erasure::Number(by_number), now).await.unwrap();
    assert_eq!(
        erased,
        Erased {
            calls: 1,
            events: 1,
            payloads: 1,
            outbox_cancelled: 1,
            dead_letters: 0,
            log_rows: 0,
            quarantined: 1,
            drift_rows: 1
        }
    );
    assert!(store.call("utel:call-d", now).await.unwrap().is_none());
    assert!(store.call("vox:call-c", now).await.unwrap().is_some());
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.backlog.get("r"), Some(&2), "the leased d1 was cancelled too");
    for d in &waiting {
        store.complete(vec![delivered(d)], now).await.unwrap();
    }
    assert_eq!(store.counts().await.unwrap().backlog.get("r"), None);
    let bodies = store.quarantined_raw(&Filter::default()).await.unwrap();
    assert_eq!(bodies.iter().map(|q| q.2.as_slice()).collect::<Vec<_>>(), [&b"unrelated"[..]]);
    let calls = store.calls(&CallFilter::default()).await.unwrap();
    let mut subjects: Vec<&str> = calls.iter().map(|c| c.subject.as_str()).collect();
    subjects.sort();
    assert_eq!(subjects, ["vox:call-b", "vox:call-c"]);
    let drift = store.drift(&Filter::default()).await.unwrap();
    assert_eq!(drift.iter().map(|d| d.value.as_str()).collect::<Vec<_>>(), ["voicemail"]);
    let number_again = Number::parse(number, []).unwrap();
    assert_eq!(store.erase(Erasure::Number(number_again), now).await.unwrap(), Erased::default(), "nothing left");
    drop(owned);
    let reopened = h.open().await;
    assert_eq!(reopened.counts().await.unwrap(), crate::store::Counts::default(), "the tables agree");
}

/// A number erased in E.164 whose vendor wrote it otherwise (`from` beside the matching
/// `from_e164`): a quarantined body holding the vendor's notation goes too.
pub(crate) async fn erasing_a_number_also_finds_bodies_in_the_notation_its_vendor_used(h: &dyn Harness) {
    use crate::store::erase::{Erasure, Number};
    let store = h.open().await;
    let mut event = numbered("n1", "vox:call-n", "(415) 555-0123");
    event.json = serde_json::json!({
        "id": "n1", "subject": "vox:call-n",
        "data": { "from": "(415) 555-0123", "from_e164": "+14155550123", "to": "+15550001111" },
    })
    .to_string();
    store.ingest(payload("vox", r#"{"call":"call-n","from":"(415) 555-0123"}"#, vec![event])).await.unwrap();
    // Rejected payloads of no stored call: one from that caller, one from another.
    store.quarantine(quarantined("salpre", r#"{"caller":"(415) 555-0123","#)).await.unwrap();
    store.quarantine(quarantined("salpre", r#"{"caller":"(415) 555-0199","#)).await.unwrap();

    let erased = store.erase(Erasure::Number(Number::parse("+14155550123", []).unwrap()), now_ms()).await.unwrap();
    assert_eq!((erased.calls, erased.payloads, erased.quarantined), (1, 1, 1), "{erased:?}");
    let left = store.quarantined(&Filter::default(), true).await.unwrap();
    assert_eq!(left.len(), 1, "the other caller's stays");
}

/// The `call.completed` of call `subject` (with outbox rows for `routes`) at `at`.
fn completion(subject: &str, at: i64, routes: &[&str]) -> Ingest {
    Ingest {
        source: "vox".into(),
        digest: crate::canonical::completed::digest(subject),
        body: Vec::new(),
        received_at: at,
        events: vec![NewEvent {
            id: crate::canonical::completed::id(subject),
            kind: "call.completed".into(),
            subject: subject.into(),
            json: "{}".into(),
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
            status: None,
        }],
    }
}

pub(crate) async fn a_call_is_completed_once_and_only_on_the_events_it_was_read_with(h: &dyn Harness) {
    let (store, replica) = (h.open().await, h.open().await);
    store.ingest(call_event("1", "vox:done", 1_000, ("d1", "call.ended", Some("completed"), &["r"]))).await.unwrap();
    store.ingest(call_event("2", "vox:open", 1_000, ("o1", "call.connected", None, &["r"]))).await.unwrap();
    store.ingest(call_event("3", "vox:late", 2_000, ("l1", "call.failed", Some("busy"), &["r"]))).await.unwrap();
    assert_eq!(store.settling(1_500, 10).await.unwrap(), ["vox:done"], "terminal before the time, oldest first");
    assert_eq!(store.settling(5_000, 10).await.unwrap(), ["vox:done", "vox:late"]);
    assert_eq!(store.settling(5_000, 1).await.unwrap(), ["vox:done"]);

    assert!(
        !store.complete_call("vox:done", 2, completion("vox:done", 3_000, &["r", "s"])).await.unwrap(),
        "read with other events"
    );
    // Two replicas racing with what they read: one stores it.
    let (a, b) = tokio::join!(
        store.complete_call("vox:done", 1, completion("vox:done", 3_000, &["r", "s"])),
        replica.complete_call("vox:done", 1, completion("vox:done", 3_000, &["r", "s"])),
    );
    assert_eq!([a.unwrap(), b.unwrap()].into_iter().filter(|won| *won).count(), 1, "exactly one completes it");
    let call = store.call("vox:done", now_ms()).await.unwrap().unwrap();
    assert_eq!(call.summary.completed_at, Some(crate::store::rfc3339(3_000)));
    assert_eq!((call.summary.events, call.summary.late.len()), (2, 0));
    let kinds: Vec<&str> = call.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["call.ended", "call.completed"]);
    assert_eq!(call.events[1].id, crate::canonical::completed::id("vox:done"));
    // (Read by a store opened now: on SQLite each open keeps its own counts.)
    let counts = h.open().await.counts().await.unwrap();
    assert_eq!((counts.backlog.get("s"), counts.backlog.get("r")), (Some(&1), Some(&4)), "queued like any event");
    assert!(!replica.complete_call("vox:done", 2, completion("vox:done", 4_000, &["s"])).await.unwrap(), "once");
    assert_eq!(store.settling(5_000, 10).await.unwrap(), ["vox:late"]);

    // What arrives after it is noted on the call, in acceptance order.
    store.ingest(call_event("4", "vox:done", 5_000, ("d2", "call.analyzed", None, &["r"]))).await.unwrap();
    store.ingest(call_event("5", "vox:done", 6_000, ("d3", "transcript.final", None, &[]))).await.unwrap();
    let done =
        store.calls(&CallFilter::default()).await.unwrap().into_iter().find(|c| c.subject == "vox:done").unwrap();
    assert_eq!(done.late, ["call.analyzed", "transcript.final"]);
    assert_eq!(done.events, 4);

    // A piece committed between the read and the write: the write stores nothing.
    store.ingest(call_event("6", "vox:late", 3_000, ("l2", "call.analyzed", None, &[]))).await.unwrap();
    assert!(!store.complete_call("vox:late", 1, completion("vox:late", 7_000, &["s"])).await.unwrap());
    assert!(store.complete_call("vox:late", 2, completion("vox:late", 7_000, &["s"])).await.unwrap());
    let late = store.call("vox:late", now_ms()).await.unwrap().unwrap();
    assert_eq!((late.summary.events, late.summary.late.len()), (3, 0));
    assert!(store.settling(i64::MAX, 10).await.unwrap().is_empty(), "a call without a terminal event never settles");
}

/// The sweeper completes a settled call however many settled calls before it cannot be
/// completed (here: events that are no canonical event, the unreadable case), and leaves those.
pub(crate) async fn the_sweeper_completes_settled_calls_behind_more_than_a_batch_it_cannot_read(h: &dyn Harness) {
    use crate::canonical::{EventType, Vendor, sample::sample};
    let store = h.open().await;
    let stuck = crate::completion::BATCH + 5;
    for i in 0..stuck {
        let event = (format!("s{i}"), "call.ended", Some("completed"), &[][..]);
        let subject = format!("vox:stuck-{i}");
        store
            .ingest(call_event(
                &format!("stuck {i}"),
                &subject,
                1_000 + i as i64,
                (&event.0, event.1, event.2, event.3),
            ))
            .await
            .unwrap();
    }
    let ended = sample(EventType::CallEnded, "salpre", Vendor::Salpre, chrono::Utc::now());
    let readable = Ingest {
        received_at: 10_000,
        events: vec![NewEvent {
            id: ended.id.clone(),
            kind: "call.ended".into(),
            subject: ended.subject.clone(),
            json: serde_json::to_string(&ended).unwrap(),
            routes: Vec::new(),
            status: Some("completed"),
        }],
        ..ingest("salpre", "readable", &[])
    };
    store.ingest(readable).await.unwrap();
    let config = crate::config::Config::from_toml("", &crate::config::ProcessEnv).unwrap();
    let completions = crate::completion::Completions::new(store.clone(), None);
    assert_eq!(completions.sweep(&config).await.unwrap(), 1, "the readable call, behind the others");
    let call = store.call(&ended.subject, now_ms()).await.unwrap().unwrap();
    assert!(call.summary.completed_at.is_some());
    assert_eq!(store.settling(i64::MAX, 1_000).await.unwrap().len(), stuck, "the unreadable ones stay settling");
    assert_eq!(completions.sweep(&config).await.unwrap(), 0, "and are tried again, completing nothing");
}

/// A settled call whose completion fails every time (here its `call.completed`'s payload key is
/// taken: a call pruned while that key was kept, which a late redelivery brought back) does not
/// keep the sweeper from completing the calls after it.
pub(crate) async fn the_sweeper_completes_settled_calls_behind_one_whose_completion_fails(h: &dyn Harness) {
    use crate::canonical::{EventType, Vendor, sample::sample};
    let store = h.open().await;
    let mut subjects = Vec::new();
    for (i, at) in [1_000, 2_000].into_iter().enumerate() {
        let ended = sample(EventType::CallEnded, "salpre", Vendor::Salpre, chrono::Utc::now());
        let ingest = Ingest {
            received_at: at,
            events: vec![NewEvent {
                id: ended.id.clone(),
                kind: "call.ended".into(),
                subject: ended.subject.clone(),
                json: serde_json::to_string(&ended).unwrap(),
                routes: Vec::new(),
                status: Some("completed"),
            }],
            ..ingest("salpre", &format!("ended {i}"), &[])
        };
        store.ingest(ingest).await.unwrap();
        subjects.push(ended.subject);
    }
    let taken = Ingest {
        digest: crate::canonical::completed::digest(&subjects[0]),
        ..ingest("salpre", "", &[("kept-key", "salpre:another-call", &[])])
    };
    store.ingest(taken).await.unwrap();
    let config = crate::config::Config::from_toml("", &crate::config::ProcessEnv).unwrap();
    let completions = crate::completion::Completions::new(store.clone(), None);
    assert_eq!(completions.sweep(&config).await.unwrap(), 1, "the call behind the failing one");
    let second = store.call(&subjects[1], now_ms()).await.unwrap().unwrap();
    assert!(second.summary.completed_at.is_some());
    let settling = store.settling(i64::MAX, 10).await.unwrap();
    assert!(settling.contains(&subjects[0]) && !settling.contains(&subjects[1]), "the failing one stays: {settling:?}");
}

/// A completed call that keeps getting events (a call id a vendor or an integrator reuses)
/// notes the first late ones and then stops: its summary row does not grow with every event.
pub(crate) async fn a_completed_calls_late_list_stops_growing(h: &dyn Harness) {
    let store = h.open().await;
    store.ingest(call_event("end", "vox:reused", 1_000, ("r0", "call.ended", Some("completed"), &[]))).await.unwrap();
    assert!(store.complete_call("vox:reused", 1, completion("vox:reused", 2_000, &[])).await.unwrap());
    for i in 0..600 {
        let id = format!("late{i}");
        store.ingest(call_event(&id, "vox:reused", 3_000 + i, (&id, "transcript.segment", None, &[]))).await.unwrap();
    }
    let call = store.call("vox:reused", now_ms()).await.unwrap().unwrap();
    assert_eq!(call.summary.events, 602);
    let late = call.summary.late;
    assert!(!late.is_empty() && late.len() < 600, "{} late types kept", late.len());
    assert!(late.join(",").len() <= crate::store::LATE_MAX_BYTES + "transcript.segment".len() + 1);
    assert!(late.iter().all(|k| k == "transcript.segment"));
}

/// One `#[tokio::test]` per check, for a backend whose harness `$harness` makes (`None`: the
/// backend is unavailable here and the check is skipped).
macro_rules! conformance {
    ($harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(harness) = $harness else { return };
                crate::store::conformance::$check(&harness).await;
            }
        )*
    };
}

macro_rules! all_checks {
    ($harness:expr) => {
        conformance!($harness;
            duplicates_return_the_original_ids,
            concurrent_ingests_of_one_body_are_accepted_once,
            claims_lease_one_head_per_subject_oldest_first,
            an_expired_lease_is_taken_over_and_its_late_outcome_dropped,
            notices_tell_workers_what_changed_and_a_paused_route_claims_nothing,
            a_recovered_route_makes_its_waiting_retries_due_now,
            dead_letters_replay_at_their_place_and_gone_pauses_the_route,
            quarantine_lists_pages_and_releases,
            prune_removes_old_delivered_data_but_keeps_what_is_pending,
            counts_follow_every_change_and_survive_reopening,
            released_leases_are_claimable_at_once_and_stale_ones_change_nothing,
            drift_adds_up_across_stores_and_each_source_is_capped,
            a_discarded_backlog_is_gone_but_leased_rows_and_other_routes_stay,
            tail_payloads_reach_every_process_sharing_the_store,
            the_delivery_log_keeps_every_attempt_and_lists_it_newest_first,
            calls_are_summarised_at_ingest_and_show_each_delivery,
            concurrent_ingests_keep_one_summary_per_call_with_the_last_terminal_status,
            a_large_call_is_returned_up_to_its_byte_bound,
            erasure_removes_a_call_or_a_numbers_calls_and_nothing_else,
            a_call_is_completed_once_and_only_on_the_events_it_was_read_with,
            the_sweeper_completes_settled_calls_behind_more_than_a_batch_it_cannot_read,
            erasing_a_number_also_finds_bodies_in_the_notation_its_vendor_used,
            the_sweeper_completes_settled_calls_behind_one_whose_completion_fails,
            a_completed_calls_late_list_stops_growing,
        );
    };
}

mod sqlite {
    use std::{sync::Arc, time::Duration};

    use async_trait::async_trait;

    use crate::store::{Store, sqlite::SqliteStore};

    struct Sqlite(tempfile::TempDir);

    #[async_trait]
    impl super::Harness for Sqlite {
        async fn open(&self) -> Arc<dyn Store> {
            Arc::new(SqliteStore::open(&self.0.path().join("db.sqlite"), Duration::from_secs(1)).unwrap())
        }
    }

    all_checks!(Some(Sqlite(tempfile::tempdir().unwrap())));
}

mod postgres {
    use std::sync::Arc;

    use async_trait::async_trait;

    use crate::store::{
        Store,
        postgres::{PgOptions, PostgresStore, testdb},
    };

    struct Postgres(testdb::TestDb);

    #[async_trait]
    impl super::Harness for Postgres {
        async fn open(&self) -> Arc<dyn Store> {
            Arc::new(PostgresStore::open(&self.0.url, PgOptions::default()).await.unwrap())
        }
    }

    all_checks!(testdb::create().await.map(Postgres));
}
