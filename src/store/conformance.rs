//! The store contract as tests: every check here runs against each backend (SQLite always,
//! PostgreSQL on the server `CALLGATE_TEST_PG_URL` names, see `postgres::testdb`). Checks take
//! a [`Harness`], which opens stores on one database: a second store is a reopen (SQLite) or
//! another replica (PostgreSQL). What only one backend shows stays in its own tests.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Attempt, CallFilter, CallStatus, DeliveryState, Filter, Ingest, IngestOutcome, NewEvent, Notice, OutcomeKind,
    Pruned, Quarantined, Store, now_ms,
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
    store.complete(vec![outcome(&due[1], OutcomeKind::Delivered { recovered: true })], now_ms()).await.unwrap();
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
    // received_at of both payloads is 1_000 (see `ingest`): everything is old.
    let pruned = store.prune(2_000, 2_000).await.unwrap();
    assert_eq!(pruned, Pruned { events: 1, payloads: 1, attempts: 0, quarantine: 1, calls: 1 });
    assert!(store.call("x", now_ms()).await.unwrap().is_none(), "a call without events is forgotten");
    assert_eq!(store.call("y", now_ms()).await.unwrap().unwrap().events.len(), 1);
    assert_eq!(claim(store, "r", now_ms(), 10).await[0].event_id, "b", "pending work is kept");
    // The redelivery window outlived: the old body is accepted again.
    let again = store.ingest(ingest("vox", "old-delivered", &[("a2", "x", &["r"])])).await.unwrap();
    assert_eq!(again, IngestOutcome::Accepted(vec!["a2".into()]));
    let dup = store.ingest(ingest("vox", "old-pending", &[("b2", "y", &["r"])])).await.unwrap();
    assert_eq!(dup, IngestOutcome::Duplicate(vec!["b".into()]), "a payload with pending events is kept");
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
            calls_are_summarised_at_ingest_and_show_each_delivery,
            concurrent_ingests_keep_one_summary_per_call_with_the_last_terminal_status,
            a_large_call_is_returned_up_to_its_byte_bound,
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
