//! What only a shared database shows: two `PostgresStore`s on one database act as two
//! replicas. The backend-neutral checks live in the shared conformance suite.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::*;
use crate::store::{Store, test_support::ingest};

async fn replicas() -> Option<(testdb::TestDb, PostgresStore, PostgresStore)> {
    let db = testdb::create().await?;
    // Both start at once on an empty database: the migrations race and run once.
    let (a, b) = tokio::join!(
        PostgresStore::open(&db.url, PgOptions::default()),
        PostgresStore::open(&db.url, PgOptions::default())
    );
    Some((db, a.expect("replica a opens"), b.expect("replica b opens")))
}

/// Waits for a notice matching `want`, up to a generous deadline (a signal, not a timing).
async fn expect_notice(rx: &mut broadcast::Receiver<Notice>, want: impl Fn(&Notice) -> bool) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Ok(n) if want(&n) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("notices closed"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "the expected notice never came");
}

#[test]
fn the_password_never_shows() {
    assert_eq!(redact("postgres://cg:s3cret@db:5432/cg"), "postgres://cg:***@db:5432/cg");
    assert_eq!(redact("postgres://cg@db/cg"), "postgres://cg@db/cg");
    assert!(!redact("not a url s3cret").contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_lease_two_deliveries_of_one_call_at_once() {
    let Some((_db, a, b)) = replicas().await else { return };
    let (a, b) = (Arc::new(a), Arc::new(b));
    const CALLS: usize = 12;
    const EVENTS: usize = 6;
    // The events of each call are accepted alternately by the two replicas, one after the
    // other, so acceptance order is known.
    for k in 0..EVENTS {
        for c in 0..CALLS {
            let store = if (c + k) % 2 == 0 { &a } else { &b };
            let id = format!("c{c}-e{k}");
            let outcome = store.ingest(ingest("vox", &id, &[(&id, &format!("vox:c{c}"), &["r"])])).await.unwrap();
            assert_eq!(outcome, IngestOutcome::Accepted(vec![id]));
        }
    }
    let now = now_ms();
    let in_flight = Arc::new(Mutex::new(HashSet::<String>::new()));
    let delivered = Arc::new(Mutex::new(BTreeMap::<String, Vec<usize>>::new()));
    let total = CALLS * EVENTS;
    let worker = |store: Arc<PostgresStore>| {
        let (in_flight, delivered) = (in_flight.clone(), delivered.clone());
        tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let done: usize = delivered.lock().unwrap().values().map(Vec::len).sum();
                if done == total {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "deliveries stalled at {done} of {total}");
                let claimed = store.claim("r", now, 4, now + 600_000).await.unwrap();
                if claimed.deliveries.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                for d in &claimed.deliveries {
                    assert!(in_flight.lock().unwrap().insert(d.subject.clone()), "two of {} in flight", d.subject);
                }
                tokio::task::yield_now().await;
                let mut outcomes = Vec::new();
                for d in &claimed.deliveries {
                    // Recorded (and released) before the outcome commits: the other replica
                    // may lease the next event only after that commit.
                    let k: usize = d.event_id.rsplit('e').next().unwrap().parse().unwrap();
                    delivered.lock().unwrap().entry(d.subject.clone()).or_default().push(k);
                    in_flight.lock().unwrap().remove(&d.subject);
                    outcomes.push(Outcome {
                        id: d.id,
                        lease: d.lease,
                        kind: OutcomeKind::Delivered { recovered: false, attempt: crate::store::Attempt::default() },
                    });
                }
                assert_eq!(store.complete(outcomes, now).await.unwrap(), Completed { stale: 0 });
            }
        })
    };
    let (x, y) = tokio::join!(worker(a.clone()), worker(b.clone()));
    x.unwrap();
    y.unwrap();
    let delivered = delivered.lock().unwrap().clone();
    for (subject, ks) in delivered.iter() {
        assert_eq!(*ks, (0..EVENTS).collect::<Vec<_>>(), "{subject} out of order or repeated");
    }
    assert_eq!(delivered.len(), CALLS);
    assert!(a.counts().await.unwrap().backlog.is_empty());
    // No foreign keys: the store keeps the references whole.
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = o.event_seq)",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(orphans, 0);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_holders_outcome_is_stale() {
    let Some((_db, a, b)) = replicas().await else { return };
    a.ingest(ingest("vox", "1", &[("e1", "vox:c", &["r"]), ("e2", "vox:c", &["r"])])).await.unwrap();
    let now = 10_000;
    let first = a.claim("r", now, 10, now + 1_000).await.unwrap().deliveries;
    assert_eq!(first.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["e1"]);
    assert!(b.claim("r", now + 500, 10, now + 1_500).await.unwrap().deliveries.is_empty(), "the lease is live");
    assert_eq!(b.next_due("r", now + 500).await.unwrap(), Some(now + 1_000), "the lease expiry is the next time");
    let taken = b.claim("r", now + 1_000, 10, now + 2_000).await.unwrap().deliveries;
    assert_eq!(taken.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["e1"], "taken over, e2 still waits");
    assert_ne!(taken[0].lease, first[0].lease);
    let delivered = |d: &Delivery| Outcome {
        id: d.id,
        lease: d.lease,
        kind: OutcomeKind::Delivered { recovered: false, attempt: crate::store::Attempt::default() },
    };
    assert_eq!(a.complete(vec![delivered(&first[0])], now + 1_100).await.unwrap(), Completed { stale: 1 });
    assert_eq!(a.counts().await.unwrap().backlog.get("r"), Some(&2), "the stale outcome changed nothing");
    assert_eq!(b.complete(vec![delivered(&taken[0])], now + 1_200).await.unwrap(), Completed { stale: 0 });
    let next = a.claim("r", now + 1_200, 10, now + 3_000).await.unwrap().deliveries;
    assert_eq!(next.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["e2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_body_through_both_replicas_at_once_is_accepted_once() {
    let Some((_db, a, b)) = replicas().await else { return };
    for n in 0..20 {
        let body = format!("body-{n}");
        let id = format!("e{n}");
        let make = || ingest("vox", &body, &[(&id, "vox:c", &["r"])]);
        let (x, y) = tokio::join!(a.ingest(make()), b.ingest(make()));
        let mut outcomes = [x.unwrap(), y.unwrap()];
        outcomes.sort_by_key(|o| matches!(o, IngestOutcome::Duplicate(_)));
        assert_eq!(outcomes, [IngestOutcome::Accepted(vec![id.clone()]), IngestOutcome::Duplicate(vec![id.clone()])]);
    }
    assert_eq!(b.counts().await.unwrap().backlog.get("r"), Some(&20));
}

#[tokio::test]
async fn a_pause_through_one_replica_stops_the_other_and_a_resume_through_it_restarts_both() {
    let Some((_db, a, b)) = replicas().await else { return };
    let mut a_notices = a.notices();
    let mut b_notices = b.notices();
    a.ingest(ingest("vox", "1", &[("e1", "vox:c", &["r"])])).await.unwrap();
    expect_notice(&mut b_notices, |n| *n == Notice::Due("r".into())).await;

    a.set_paused("r", Some("operator"), 5_000).await.unwrap();
    expect_notice(&mut b_notices, |n| *n == Notice::Paused { route: "r".into(), paused: true }).await;
    let claimed = b.claim("r", 10_000, 10, 20_000).await.unwrap();
    assert!(claimed.paused && claimed.deliveries.is_empty());
    assert_eq!(b.paused().await.unwrap().iter().map(|p| p.route.as_str()).collect::<Vec<_>>(), ["r"]);

    b.set_paused("r", None, 6_000).await.unwrap();
    expect_notice(&mut a_notices, |n| *n == Notice::Paused { route: "r".into(), paused: false }).await;
    let claimed = a.claim("r", 10_000, 10, 20_000).await.unwrap();
    assert!(!claimed.paused);
    assert_eq!(claimed.deliveries.len(), 1);
}

#[tokio::test]
async fn a_410_through_one_replica_pauses_the_route_for_the_other() {
    let Some((_db, a, b)) = replicas().await else { return };
    let mut b_notices = b.notices();
    a.ingest(ingest("vox", "1", &[("e1", "vox:c", &["r"])])).await.unwrap();
    let d = a.claim("r", 10_000, 10, 20_000).await.unwrap().deliveries.remove(0);
    let gone = Outcome { id: d.id, lease: d.lease, kind: OutcomeKind::Gone { attempt: Attempt::default() } };
    a.complete(vec![gone], 10_500).await.unwrap();
    expect_notice(&mut b_notices, |n| *n == Notice::Paused { route: "r".into(), paused: true }).await;
    assert!(b.claim("r", 11_000, 10, 21_000).await.unwrap().paused);
}

#[tokio::test]
async fn a_lost_listening_connection_reconnects_and_says_lost() {
    let Some((_db, a, b)) = replicas().await else { return };
    let mut a_notices = a.notices();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(b.pool())
    .await
    .unwrap();
    assert_eq!(killed.len(), 2, "one listener per replica");
    expect_notice(&mut a_notices, |n| *n == Notice::Lost).await;
    // Listening again: a pause through the other replica still arrives.
    b.set_paused("r", Some("operator"), 1).await.unwrap();
    expect_notice(&mut a_notices, |n| *n == Notice::Paused { route: "r".into(), paused: true }).await;
}

/// Kills every listening connection as soon as it has run its `LISTEN`, again and again, so
/// some kills land while a listener is half way through re-listening; then lets them be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_while_it_reconnects_still_comes_back() {
    let Some((_db, a, b)) = replicas().await else { return };
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'";
    let mut killed = 0;
    for _ in 0..2_000 {
        killed += sqlx::query_scalar::<_, bool>(kill).fetch_all(b.pool()).await.unwrap().len();
    }
    assert!(killed > 2, "the listeners reconnected between the kills ({killed} killed)");
    // Both listening again (a signal from the server: their sessions ran LISTEN) ...
    let listening = "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sqlx::query_scalar::<_, i64>(listening).fetch_one(b.pool()).await.unwrap() != 2 {
        assert!(std::time::Instant::now() < deadline, "a listener never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and a pause through one replica reaches the other. A session that is being
    // terminated can still be counted above for a moment, so the pause is sent again until
    // one arrives (a notice sent before a listener is back is lost, and `Lost` says so).
    let mut a_notices = a.notices();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        b.set_paused("r", Some("operator"), 1).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match a_notices.recv().await {
                    Ok(Notice::Paused { route, paused: true }) if route == "r" => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("notices closed"),
                }
            }
        })
        .await;
        if heard.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a pause on one replica never reached the other");
    }
}

#[tokio::test]
async fn prune_runs_on_one_replica_at_a_time() {
    let Some((_db, a, b)) = replicas().await else { return };
    a.ingest(ingest("vox", "1", &[("e1", "vox:c", &[])])).await.unwrap();
    let mut holder = b.pool().begin().await.unwrap();
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(PRUNE_LOCK)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    assert!(held);
    assert_eq!(a.prune(i64::MAX, i64::MAX).await.unwrap(), Pruned::default(), "another replica is pruning");
    holder.rollback().await.unwrap();
    let pruned = a.prune(i64::MAX, i64::MAX).await.unwrap();
    assert_eq!((pruned.events, pruned.payloads), (1, 1));
}

#[tokio::test]
async fn a_statement_held_up_past_its_timeout_is_unavailable_and_accepts_nothing() {
    let Some(db) = testdb::create().await else { return };
    let options = PgOptions { statement_timeout: Duration::from_millis(300), ..PgOptions::default() };
    let store = PostgresStore::open(&db.url, options).await.unwrap();
    // Another session holds the payloads table, as a long migration or a stuck lock would.
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *holder).await.unwrap();
    sqlx::query("LOCK TABLE payloads IN ACCESS EXCLUSIVE MODE").execute(&mut *holder).await.unwrap();
    let held = store.ingest(ingest("vox", "1", &[("e1", "vox:c", &["r"])])).await;
    assert!(matches!(held, Err(StoreError::Unavailable(_))), "{held:?}");
    holder.rollback().await.unwrap();
    // Nothing was accepted: the same body is new once the lock is gone.
    let again = store.ingest(ingest("vox", "1", &[("e1", "vox:c", &["r"])])).await.unwrap();
    assert_eq!(again, IngestOutcome::Accepted(vec!["e1".into()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_runs_an_hour_ahead_agrees_with_the_others_on_leases_and_due_times() {
    let Some(db) = testdb::create().await else { return };
    const HOUR: Millis = 3_600_000;
    let a = PostgresStore::open(&db.url, PgOptions::default()).await.unwrap();
    let b =
        PostgresStore::open(&db.url, PgOptions { pretend_clock_ahead: HOUR, ..PgOptions::default() }).await.unwrap();
    assert!((b.clock.offset() + HOUR).abs() < 1_000, "b measured its clock an hour ahead: {} ms", b.clock.offset());
    let delivered = |d: &Delivery| Outcome {
        id: d.id,
        lease: d.lease,
        kind: OutcomeKind::Delivered { recovered: false, attempt: crate::store::Attempt::default() },
    };
    a.ingest(ingest("vox", "1", &[("a", "vox:x", &["r"]), ("b", "vox:x", &["r"])])).await.unwrap();

    // a leases the head for a minute; b, an hour ahead, must not see that lease as expired.
    let now = now_ms();
    let held = a.claim("r", now, 10, now + 60_000).await.unwrap().deliveries;
    assert_eq!(held.len(), 1);
    let b_now = b.clock.local();
    assert!(
        b.claim("r", b_now, 10, b_now + 60_000).await.unwrap().deliveries.is_empty(),
        "a live lease is not taken over by a replica whose clock runs ahead"
    );
    assert_eq!(a.complete(vec![delivered(&held[0])], now_ms()).await.unwrap().stale, 0, "a's outcome counts");

    // b leases the follower for a minute of its own clock: live for a as well.
    let b_now = b.clock.local();
    let follower = b.claim("r", b_now, 10, b_now + 60_000).await.unwrap().deliveries;
    assert_eq!(follower.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["b"]);
    let now = now_ms();
    assert!(a.claim("r", now, 10, now + 60_000).await.unwrap().deliveries.is_empty(), "b's lease holds for a");
    // What b tells its worker to wait for is on b's clock: the lease's end, a minute away.
    let b_now = b.clock.local();
    let wait = b.next_due("r", b_now).await.unwrap().expect("the lease ends") - b_now;
    assert!((50_000..=61_000).contains(&wait), "{wait} ms");

    // An event b accepts, stamped by its clock, is due now for a, not in an hour.
    let mut late = ingest("vox", "2", &[("c", "vox:y", &["r"])]);
    late.received_at = b.clock.local();
    b.ingest(late).await.unwrap();
    // Each replica's clock offset is measured over a round trip, so the two may disagree by
    // that much: a claims ten seconds ahead, which is "now" next to the hour it must not wait.
    let now = now_ms() + 10_000;
    let claimed = a.claim("r", now, 10, now + 60_000).await.unwrap().deliveries;
    assert_eq!(claimed.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["c"]);
}

#[tokio::test]
async fn migration_1_attempts_become_the_delivery_log_with_their_routes_events_and_outcomes() {
    use crate::store::{LogFilter, LogOutcome};
    let Some(db) = testdb::create().await else { return };
    {
        // Migration 1 only, as the previous release left it, with its kept failures.
        let pool = PgPoolOptions::new().max_connections(1).connect(&db.url).await.unwrap();
        let (version, name, sql) = MIGRATIONS[0];
        let first = Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(sql),
            false,
        );
        Migrator::with_migrations(vec![first]).run(&pool).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO payloads (source, digest, received_at, body, event_ids) VALUES ('vox', '\\x00', 1000, '\\x7b7d', '[]');
             INSERT INTO events (id, payload_id, type, subject, body) VALUES
                  ('p', 1, 'call.ended', 'vox:a', '{\"id\":\"p\"}'), ('d', 1, 'call.ended', 'vox:b', '{\"id\":\"d\"}');
             INSERT INTO outbox (id, event_seq, route, subject, attempts, next_at) VALUES (10, 1, 'crm', 'vox:a', 1, 5000);
             INSERT INTO dead_letters (id, event_seq, route, subject, attempts, dead_at, last_error)
                  VALUES (11, 2, 'crm', 'vox:b', 2, 3000, 'HTTP 500');
             INSERT INTO attempts (delivery_id, attempt, at, status, response, duration_ms) VALUES
                  (10, 1, 1500, 503, 'busy', 4), (11, 1, 2000, 500, 'no', 5), (11, 2, 3000, 500, 'no', 6),
                  (12, 1, 2500, 502, 'gone by', 7);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = PostgresStore::open(&db.url, PgOptions::default()).await.unwrap();
    let log = store.delivery_log(&LogFilter { route: Some("crm".into()), ..LogFilter::default() }).await.unwrap();
    let seen: Vec<(Option<&str>, i64, LogOutcome, Option<i64>)> =
        log.iter().map(|e| (e.event_id.as_deref(), e.attempt, e.outcome, e.delivery_id)).collect();
    assert_eq!(
        seen,
        [
            (Some("d"), 2, LogOutcome::Dead, Some(11)),
            (Some("d"), 1, LogOutcome::Failed, Some(11)),
            (Some("p"), 1, LogOutcome::Failed, Some(10)),
        ]
    );
    let orphan = store.delivery_log(&LogFilter { route: Some(String::new()), ..LogFilter::default() }).await.unwrap();
    assert_eq!((orphan.len(), orphan[0].delivery_id), (1, Some(12)));
    assert_eq!(store.dead_letter(11).await.unwrap().unwrap().attempts_log.len(), 2);
    assert_eq!(store.event("p", now_ms()).await.unwrap().unwrap().deliveries[0].attempts_log.len(), 1);
}

/// Waits until some session of this database waits for a lock (a signal polled, not a timing).
async fn until_a_session_waits_for_a_lock(store: &PostgresStore) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no session ever waited for a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_meeting_a_completion_in_flight_erases_its_call_completed_too() {
    let Some((_db, a, b)) = replicas().await else { return };
    let subject = "vox:erased-while-completing";
    a.ingest(ingest("vox", "ended", &[("e1", subject, &["r"])])).await.unwrap();
    // Replica b is completing the call: the call's row marked and its `call.completed` (which
    // holds the merged record: numbers, transcript) stored, not committed yet.
    let completion = Ingest {
        source: "vox".into(),
        digest: crate::canonical::completed::digest(subject),
        body: Vec::new(),
        received_at: 2_000,
        events: vec![crate::store::NewEvent {
            id: crate::canonical::completed::id(subject),
            kind: "call.completed".into(),
            subject: subject.into(),
            json: r#"{"data":{"from":"+12025550143"}}"#.into(),
            routes: vec!["r".into()],
            status: None,
        }],
    };
    let mut held = b.pool().begin().await.unwrap();
    sqlx::query("UPDATE calls SET completed_at = 2000 WHERE subject = $1")
        .bind(subject)
        .execute(&mut *held)
        .await
        .unwrap();
    ingest_in(&mut held, &[&completion], &mut BTreeSet::new()).await.unwrap();
    // Replica a erases the call meanwhile; the completion commits once the erasure waits.
    let commit = async {
        until_a_session_waits_for_a_lock(&b).await;
        held.commit().await.unwrap();
    };
    let (erased, ()) = tokio::join!(a.erase(erase::Erasure::Call(subject.into()), now_ms()), commit);
    let erased = erased.unwrap();
    assert_eq!((erased.calls, erased.events, erased.outbox_cancelled), (1, 2, 2), "{erased:?}");
    let queries = [
        "SELECT count(*) FROM events WHERE subject = $1",
        "SELECT count(*) FROM outbox WHERE subject = $1",
        "SELECT count(*) FROM calls WHERE subject = $1",
    ];
    for query in queries {
        let left: i64 = sqlx::query_scalar(query).bind(subject).fetch_one(a.pool()).await.unwrap();
        assert_eq!(left, 0, "{query}: rows of the erased call are left");
    }
    let payloads: i64 = sqlx::query_scalar("SELECT count(*) FROM payloads").fetch_one(a.pool()).await.unwrap();
    assert_eq!(payloads, 0, "the call.completed's payload key goes too");
}
