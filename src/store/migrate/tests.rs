//! A SQLite store filled through the trait, moved, and read back through the trait on
//! PostgreSQL.

use std::time::Duration;

use super::*;
use crate::store::{
    Attempt, Claimed, Filter, Ingest, IngestOutcome, Outcome, OutcomeKind, Quarantined, Store,
    postgres::{PgOptions, PostgresStore, testdb},
    sqlite::SqliteStore,
    test_support::{self, outcome},
};

const T: i64 = 1_000_000;
const LEASE: i64 = 60_000;

/// A Vox payload received at `T`.
fn ingest(body: &str, events: &[(&str, &str, &[&str])]) -> Ingest {
    Ingest { received_at: T, ..test_support::ingest("vox", body, events) }
}

fn attempt(at: i64, status: u16) -> Attempt {
    Attempt { at, status: Some(status), error: None, response: Some("nope".into()), duration_ms: 7 }
}

/// What a claim handed out, without the lease: (id, event id, attempts).
fn seen(claimed: &Claimed) -> Vec<(i64, String, u32)> {
    claimed.deliveries.iter().map(|d| (d.id, d.event_id.clone(), d.attempts)).collect()
}

async fn release(store: &dyn Store, claimed: &Claimed) {
    store.release(claimed.deliveries.iter().map(|d| (d.id, d.lease)).collect()).await.unwrap();
}

/// A row of the drift report.
fn drift_count() -> crate::store::DriftCount {
    crate::store::DriftCount {
        source: "vox".into(),
        vendor_event: "v1/call_ended".into(),
        kind: "unknown_field".into(),
        path: "call.new_field".into(),
        value: String::new(),
        count: 3,
        first_seen: T,
        last_seen: T + 10,
        example: "a string of 5 characters".into(),
    }
}

/// The payloads, in the order they were accepted.
fn payloads() -> Vec<Ingest> {
    vec![
        // Call a: two events to crm, the second also to bi.
        ingest("p1", &[("ev-a1", "vox:a", &["crm"]), ("ev-a2", "vox:a", &["crm", "bi"])]),
        ingest("p2", &[("ev-b1", "vox:b", &["crm"])]),
        // Delivered: only its payload stays (the dedup window).
        ingest("p3", &[("ev-c1", "vox:c", &["bi"])]),
        // Dead lettered after two attempts.
        ingest("p4", &[("ev-d1", "vox:d", &["bi"])]),
    ]
}

/// Fills a SQLite store through the trait and stops it; returns what a claim there sees at
/// the times the test claims later (crm at T + 5 s, bi at T + 1 ms) and its counts.
async fn fill(path: &Path) -> (Vec<(i64, String, u32)>, Vec<(i64, String, u32)>, crate::store::Counts) {
    let store = SqliteStore::open(path, Duration::from_secs(5)).unwrap();
    for p in payloads() {
        assert!(matches!(store.ingest(p).await.unwrap(), IngestOutcome::Accepted(_)));
    }
    // crm: a1 is retried (attempts 1, due at T + 5 s, a2 waits behind it); b1 stays as it was.
    let crm = store.claim("crm", T, 10, T + LEASE).await.unwrap();
    assert_eq!(seen(&crm), [(1, "ev-a1".into(), 0), (4, "ev-b1".into(), 0)]);
    let a1 = &crm.deliveries[0];
    store
        .complete(vec![outcome(a1, OutcomeKind::Retry { next_at: T + 5_000, attempt: attempt(T, 500) })], T)
        .await
        .unwrap();
    store.release(vec![(crm.deliveries[1].id, crm.deliveries[1].lease)]).await.unwrap();
    // bi: c1 delivered, d1 retried once then dead; a2's bi delivery is left alone.
    let bi = store.claim("bi", T, 10, T + LEASE).await.unwrap();
    assert_eq!(seen(&bi), [(3, "ev-a2".into(), 0), (5, "ev-c1".into(), 0), (6, "ev-d1".into(), 0)]);
    store
        .complete(
            vec![
                outcome(
                    &bi.deliveries[1],
                    OutcomeKind::Delivered { recovered: false, attempt: crate::store::Attempt::default() },
                ),
                outcome(&bi.deliveries[2], OutcomeKind::Retry { next_at: T + 1, attempt: attempt(T, 503) }),
            ],
            T,
        )
        .await
        .unwrap();
    release(&store, &Claimed { deliveries: vec![bi.deliveries[0].clone()], paused: false }).await;
    let bi = store.claim("bi", T + 1, 10, T + LEASE).await.unwrap();
    assert_eq!(seen(&bi), [(3, "ev-a2".into(), 0), (6, "ev-d1".into(), 1)]);
    store
        .complete(vec![outcome(&bi.deliveries[1], OutcomeKind::Dead { attempt: attempt(T + 1, 400) })], T + 1)
        .await
        .unwrap();
    release(&store, &bi).await;
    store
        .quarantine(Quarantined {
            source: "vox".into(),
            vendor: "vox".into(),
            received_at: T,
            status: 422,
            reason: "schema_violation".into(),
            details: r#"[{"path":"/call","message":"call_id is required"}]"#.into(),
            body: b"{\"quarantined\":true}".to_vec(),
        })
        .await
        .unwrap();
    store.set_paused("archive", Some("operator"), T).await.unwrap();
    store.record_drift(vec![drift_count()], 1000).await.unwrap();
    // Call c is completed, and a piece comes after that.
    let completion = Ingest {
        digest: crate::canonical::completed::digest("vox:c"),
        body: Vec::new(),
        events: vec![crate::store::NewEvent {
            kind: "call.completed".into(),
            status: None,
            ..ingest("unused", &[("ev-c-done", "vox:c", &[])]).events.remove(0)
        }],
        ..ingest("unused", &[])
    };
    assert!(store.complete_call("vox:c", 1, completion).await.unwrap());
    store.ingest(ingest("p-late", &[("ev-c2", "vox:c", &[])])).await.unwrap();

    // What the moved store must show the same way.
    let crm = store.claim("crm", T + 5_000, 10, T + 5_000 + LEASE).await.unwrap();
    release(&store, &crm).await;
    let bi = store.claim("bi", T + 1, 10, T + 1 + LEASE).await.unwrap();
    release(&store, &bi).await;
    let counts = store.counts().await.unwrap();
    (seen(&crm), seen(&bi), counts)
}

#[tokio::test]
async fn a_moved_store_goes_on_where_the_sqlite_one_stopped() {
    let Some(db) = testdb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callgate.db");
    let (crm_before, bi_before, counts_before) = fill(&path).await;
    assert_eq!(crm_before, [(4, "ev-b1".into(), 0), (1, "ev-a1".into(), 1)], "b1 is due first, a1 on its retry");
    assert_eq!(bi_before, [(3, "ev-a2".into(), 0)]);

    let copied = sqlite_to_postgres(&path, &db.url).await.unwrap();
    assert_eq!(
        copied,
        Copied {
            payloads: 6,
            events: 7, // a1, a2, b1 pending; d1 dead; c1 delivered (its call's record), its completion, a late one
            calls: 4,
            deliveries: 4,
            dead_letters: 1,
            attempts: 4, // a1's and d1's failures, d1's death, c1's success
            quarantined: 1,
            paused_routes: 1,
            drift: 1,
        }
    );

    let pg = PostgresStore::open(&db.url, PgOptions::default()).await.unwrap();
    assert_eq!(pg.counts().await.unwrap(), counts_before);
    // The delivery log moved whole, with the events it names.
    let log =
        pg.delivery_log(&crate::store::LogFilter { route: Some("bi".into()), ..Default::default() }).await.unwrap();
    let log: Vec<(Option<&str>, crate::store::LogOutcome)> =
        log.iter().map(|e| (e.event_id.as_deref(), e.outcome)).collect();
    use crate::store::LogOutcome::{Dead, Failed, Success};
    assert_eq!(log, [(Some("ev-d1"), Dead), (Some("ev-d1"), Failed), (Some("ev-c1"), Success)]);

    // Call records read the same: summaries in their order, a delivered event still known.
    let sqlite = SqliteStore::open(&path, Duration::from_secs(5)).unwrap();
    let all = crate::store::CallFilter::default();
    assert_eq!(pg.calls(&all).await.unwrap(), sqlite.calls(&all).await.unwrap());
    let c = pg.call("vox:c", T).await.unwrap().expect("the delivered call");
    assert_eq!(c.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["ev-c1", "ev-c-done", "ev-c2"]);
    assert_eq!(
        (c.summary.completed_at.as_deref(), &c.summary.late[..]),
        (Some(&*crate::store::rfc3339(T)), &["call.ended".to_owned()][..])
    );
    assert_eq!(c.deliveries, sqlite.call("vox:c", T).await.unwrap().unwrap().deliveries);
    assert_eq!(c.deliveries[0].state, crate::store::DeliveryState::Delivered);
    drop(sqlite);

    // Claims: same order, same ids, same attempts.
    let crm = pg.claim("crm", T + 5_000, 10, T + 5_000 + LEASE).await.unwrap();
    assert_eq!(seen(&crm), crm_before);
    let bi = pg.claim("bi", T + 1, 10, T + 1 + LEASE).await.unwrap();
    assert_eq!(seen(&bi), bi_before);
    // a2 follows a1 on crm once a1 is delivered.
    let done: Vec<Outcome> = crm
        .deliveries
        .iter()
        .map(|d| outcome(d, OutcomeKind::Delivered { recovered: false, attempt: crate::store::Attempt::default() }))
        .collect();
    pg.complete(done, T + 5_000).await.unwrap();
    let crm = pg.claim("crm", T + 5_000, 10, T + 5_000 + LEASE).await.unwrap();
    assert_eq!(seen(&crm), [(2, "ev-a2".into(), 0)]);

    // The dead letter, with its attempts; a new event of its call is accepted after the move
    // (a later id: the sequences are past the moved ones), and the replay goes ahead of it.
    let dead = pg.dead_letters(&Filter::default()).await.unwrap();
    assert_eq!(dead.iter().map(|d| (d.id, d.event_id.as_str(), d.attempts)).collect::<Vec<_>>(), [(6, "ev-d1", 2)]);
    let detail = pg.dead_letter(6).await.unwrap().unwrap();
    assert_eq!(
        detail.attempts_log.iter().map(|a| (a.attempt, a.status)).collect::<Vec<_>>(),
        [(1, Some(503)), (2, Some(400))]
    );
    pg.complete(
        bi.deliveries
            .iter()
            .map(|d| outcome(d, OutcomeKind::Delivered { recovered: false, attempt: crate::store::Attempt::default() }))
            .collect(),
        T + 2,
    )
    .await
    .unwrap();
    pg.ingest(ingest("p5", &[("ev-d2", "vox:d", &["bi"])])).await.unwrap();
    let replayed = pg.replay_dead_letters(&Filter { id: Some(6), ..Filter::default() }, T + 3).await.unwrap();
    assert_eq!(replayed, [(6, "bi".to_owned())]);
    let bi = pg.claim("bi", T + 3, 10, T + 3 + LEASE).await.unwrap();
    assert_eq!(seen(&bi), [(6, "ev-d1".into(), 0)], "the replay at its old place, ahead of d2");
    pg.complete(
        vec![outcome(
            &bi.deliveries[0],
            OutcomeKind::Delivered { recovered: false, attempt: crate::store::Attempt::default() },
        )],
        T + 3,
    )
    .await
    .unwrap();
    let bi = pg.claim("bi", T + 3, 10, T + 3 + LEASE).await.unwrap();
    assert_eq!(bi.deliveries.len(), 1);
    assert_eq!(bi.deliveries[0].event_id, "ev-d2");
    assert!(bi.deliveries[0].id > 6, "new ids come after the moved ones: {}", bi.deliveries[0].id);

    // Quarantine, pause, dedup window.
    let quarantined = pg.quarantined(&Filter::default(), true).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].body.as_deref(), Some("{\"quarantined\":true}"));
    assert_eq!(quarantined[0].reason, "schema_violation");
    assert_eq!(pg.paused().await.unwrap().iter().map(|p| p.route.as_str()).collect::<Vec<_>>(), ["archive"]);
    assert!(pg.claim("archive", T, 10, T + LEASE).await.unwrap().paused);
    assert_eq!(pg.drift(&Filter::default()).await.unwrap(), [drift_count()], "the drift report, as it was");
    let again = payloads();
    assert_eq!(pg.ingest(again[2].clone()).await.unwrap(), IngestOutcome::Duplicate(vec!["ev-c1".into()]));
    assert_eq!(
        pg.ingest(again[0].clone()).await.unwrap(),
        IngestOutcome::Duplicate(vec!["ev-a1".into(), "ev-a2".into()])
    );

    // The SQLite file was only read: the store opens on it as it was.
    let sqlite = SqliteStore::open(&path, Duration::from_secs(5)).unwrap();
    assert_eq!(sqlite.counts().await.unwrap(), counts_before);
}

#[tokio::test]
async fn a_target_that_is_not_empty_is_refused_and_left_as_it_was() {
    let Some(db) = testdb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callgate.db");
    let (_, _, counts) = fill(&path).await;
    sqlite_to_postgres(&path, &db.url).await.unwrap();
    let err = sqlite_to_postgres(&path, &db.url).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, MigrateError::NotEmpty { .. }), "{message}");
    assert!(message.contains("6 row(s) in payloads") && message.contains("outbox"), "{message}");
    let pg = PostgresStore::open(&db.url, PgOptions::default()).await.unwrap();
    assert_eq!(pg.counts().await.unwrap(), counts, "nothing was added");
}

#[tokio::test]
async fn an_older_sqlite_store_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callgate.db");
    drop(SqliteStore::open(&path, Duration::from_secs(5)).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 3).unwrap();
    drop(conn);
    // Refused before the target is looked at (nothing listens on port 9).
    let err = sqlite_to_postgres(&path, "postgres://u:pw@127.0.0.1:9/none").await.unwrap_err();
    assert!(matches!(err, MigrateError::OldSchema { found: 3, .. }), "{err}");
    assert!(err.to_string().contains("start this callgate"), "{err}");

    let missing = sqlite_to_postgres(&dir.path().join("nope.db"), "postgres://u:pw@127.0.0.1:9/none").await;
    assert!(matches!(missing, Err(MigrateError::NotFound(_))));
    std::fs::write(dir.path().join("empty.db"), b"").unwrap();
    let empty = sqlite_to_postgres(&dir.path().join("empty.db"), "postgres://u:pw@127.0.0.1:9/none").await;
    assert!(matches!(empty, Err(MigrateError::NotCallgate(_))), "{empty:?}");
}

#[tokio::test]
async fn an_unreachable_target_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callgate.db");
    drop(SqliteStore::open(&path, Duration::from_secs(5)).unwrap());
    let err = sqlite_to_postgres(&path, "postgres://u:s3cret-pw@127.0.0.1:9/none").await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, MigrateError::Target { .. }), "{message}");
    assert!(message.contains("127.0.0.1:9") && !message.contains("s3cret-pw"), "{message}");
}
