use super::*;
use crate::store::{
    Attempt, Store, now_ms,
    test_support::{claim, delivered, ingest, outcome},
};

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("db.sqlite"), Duration::from_secs(1)).unwrap()
}

fn table_counts(path: &Path) -> Counts {
    count(&Connection::open(path).unwrap()).unwrap()
}

#[tokio::test]
async fn a_retry_pushes_the_calls_followers_back_in_the_table() {
    // The backend-neutral checks are in `store::conformance`; this one reads SQLite's table.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = now_ms();
    store.ingest(ingest("vox", "1", &[("a1", "call-a", &["r"]), ("a2", "call-a", &["r"])])).await.unwrap();
    let head = claim(&store, "r", now, 10).await.remove(0);
    let later = now + 60_000;
    let attempt = Attempt { at: now, status: Some(500), ..Attempt::default() };
    store.complete(vec![outcome(&head, OutcomeKind::Retry { next_at: later, attempt })], now).await.unwrap();
    let follower_next: i64 = Connection::open(dir.path().join("db.sqlite"))
        .unwrap()
        .query_row("SELECT o.next_at FROM outbox o JOIN events e ON e.seq = o.event_seq WHERE e.id = 'a2'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(follower_next, later, "the follower is never due before its head");
    assert_eq!(store.counts().await.unwrap(), table_counts(&dir.path().join("db.sqlite")));
}

#[tokio::test]
async fn counts_always_equal_the_tables_including_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = open(&dir);
    store.ingest(ingest("vox", "1", &[("a", "x", &["r1", "r2"]), ("b", "y", &["r1"])])).await.unwrap();
    assert_eq!(store.counts().await.unwrap(), table_counts(&path));
    let due = claim(&store, "r1", 5_000, 10).await;
    let attempt = Attempt { at: 5_000, error: Some("boom".into()), ..Attempt::default() };
    store.complete(vec![delivered(&due[0]), outcome(&due[1], OutcomeKind::Dead { attempt })], 5_000).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts, table_counts(&path));
    assert_eq!(counts.backlog.get("r2"), Some(&1));
    assert_eq!(counts.backlog.get("r1"), None);
    assert_eq!(counts.dead.get("r1"), Some(&1));
    drop(store);
    let reopened = open(&dir);
    assert_eq!(reopened.counts().await.unwrap(), counts);
}

#[tokio::test]
async fn the_database_is_in_wal_mode_and_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.ping().await.unwrap();
    let conn = Connection::open(dir.path().join("db.sqlite")).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!((mode.as_str(), version), ("wal", MIGRATIONS.len() as i64));
}

#[tokio::test]
async fn a_database_from_an_older_version_is_migrated_with_its_pending_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        // As the first release left it: schema 1, one accepted payload waiting for delivery.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO payloads (id, source, digest, received_at, body, event_ids)
                  VALUES (1, 'vox', x'00', 1000, x'7b7d', '[\"old\"]');
             INSERT INTO events (seq, id, payload_id, type, subject, body)
                  VALUES (7, 'old', 1, 'call.ended', 'call-a', '{\"id\":\"old\"}');
             INSERT INTO outbox (event_seq, route, subject, next_at) VALUES (7, 'r', 'call-a', 1000);",
        )
        .unwrap();
    }
    let store = open(&dir);
    let due = claim(&store, "r", now_ms(), 10).await;
    assert_eq!(due.len(), 1, "the waiting delivery survived the migration");
    assert_eq!((due[0].event_id.as_str(), due[0].json.as_str()), ("old", "{\"id\":\"old\"}"));
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    let unique_id_indexes: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_index_list('events') WHERE \"unique\" = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(unique_id_indexes, 0, "event ids no longer carry a unique index");
    // New work still flows, and a duplicate body is still recognised.
    let first = store.ingest(ingest("vox", "new", &[("n1", "call-b", &["r"])])).await.unwrap();
    assert_eq!(first, IngestOutcome::Accepted(vec!["n1".into()]));
    let again = store.ingest(ingest("vox", "new", &[("n1", "call-b", &["r"])])).await.unwrap();
    assert_eq!(again, IngestOutcome::Duplicate(vec!["n1".into()]));
}

/// Events of `fixture` as this version emits them for `source`: (id, subject, json).
fn emitted(source: &str, fixture: &str) -> Vec<(String, String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vox").join(fixture);
    let body = std::fs::read(&path).unwrap();
    let origin = crate::vendors::Origin { source, vendor: crate::canonical::Vendor::Vox, phone_region: None };
    let received = chrono::DateTime::from_timestamp_millis(1_000).unwrap();
    crate::vendors::normalize(&origin, &body, received)
        .unwrap()
        .events
        .iter()
        .map(|e| (e.id.clone(), e.subject.clone(), serde_json::to_string(e).unwrap()))
        .collect()
}

#[tokio::test]
async fn schema_2_subjects_move_to_the_source_keeping_bodies_order_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let far = now_ms() + 3_600_000;
    // Two accounts of vox whose payloads share a call id, and one source named after the
    // vendor, whose subjects do not change.
    let a = emitted("vox-a", "doc-call_ended.json");
    let b = emitted("vox-b", "doc-call_ended.json");
    let plain = emitted("vox", "doc-call_started.json");
    assert!(a.len() >= 2 && b.len() >= 2 && a[0].1.starts_with("vox-a:") && a[0].1[6..] == b[0].1[6..]);
    // What schema 2 stored: `vox:{call_id}` in the column and in the body.
    let old = |(id, subject, json): &(String, String, String)| {
        let call_id = &subject[subject.find(':').unwrap() + 1..];
        let old_subject = format!("vox:{call_id}");
        let old_json = json.replace(&format!("\"subject\":\"{subject}\""), &format!("\"subject\":\"{old_subject}\""));
        assert!(old_subject == *subject || old_json != *json, "the body carries its subject");
        (id.clone(), old_subject, old_json)
    };
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.execute_batch(MIGRATIONS[1]).unwrap();
        tx.pragma_update(None, "user_version", 2).unwrap();
        let mut seq = 0;
        for (payload, (source, events)) in [("vox-a", &a), ("vox-b", &b), ("vox", &plain)].into_iter().enumerate() {
            tx.execute(
                "INSERT INTO payloads (id, source, digest, received_at, body, event_ids) VALUES (?1, ?2, ?3, 1000, x'7b7d', '[]')",
                params![payload as i64 + 1, source, vec![payload as u8]],
            )
            .unwrap();
            for event in events.iter() {
                seq += 1;
                let (id, subject, json) = old(event);
                tx.execute(
                    "INSERT INTO events (seq, id, payload_id, type, subject, body) VALUES (?1, ?2, ?3, 'call.ended', ?4, ?5)",
                    params![seq, id, payload as i64 + 1, subject, json],
                )
                .unwrap();
            }
        }
        // A call id with a `:` of its own: only the vendor prefix is replaced.
        tx.execute(
            "INSERT INTO events (seq, id, payload_id, type, subject, body)
             VALUES (100, 'colon', 2, 'call.ended', 'vox:x:y', '{\"id\":\"colon\",\"subject\":\"vox:x:y\",\"data\":{\"n\":1.50,\"s\":\"\\u00e9\"}}')",
            [],
        )
        .unwrap();
        // Route r: vox-a's first event is being retried an hour from now; under the shared
        // subject that pushed back vox-a's next event and every event of vox-b too.
        let seq_a = (1..=a.len() as i64).collect::<Vec<_>>();
        let seq_b = (a.len() as i64 + 1..=(a.len() + b.len()) as i64).collect::<Vec<_>>();
        let outbox = [
            (1, seq_a[0], 2, far),
            (2, seq_a[1], 0, far),
            (3, seq_b[0], 0, far),
            (4, seq_b[1], 0, far),
            (5, 100, 0, far),
            (6, (a.len() + b.len() + 1) as i64, 0, 1000),
        ];
        for (id, seq, attempts, next_at) in outbox {
            let subject: String =
                tx.query_row("SELECT subject FROM events WHERE seq = ?1", [seq], |r| r.get(0)).unwrap();
            tx.execute(
                "INSERT INTO outbox (id, event_seq, route, subject, attempts, next_at) VALUES (?1, ?2, 'r', ?3, ?4, ?5)",
                params![id, seq, subject, attempts, next_at],
            )
            .unwrap();
        }
        // Route d: one dead letter of each account for the same call.
        for (id, seq) in [(7, seq_a[0]), (8, seq_b[0])] {
            tx.execute(
                "INSERT INTO dead_letters (id, event_seq, route, subject, attempts, dead_at, last_error)
                 VALUES (?1, ?2, 'd', (SELECT subject FROM events WHERE seq = ?2), 5, 2000, 'HTTP 500')",
                params![id, seq],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    let store = open(&dir);
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    // Subjects and bodies are exactly what this version emits, byte for byte.
    for (id, subject, json) in a.iter().chain(&b).chain(&plain) {
        let (s, body): (String, String) = conn
            .query_row("SELECT subject, body FROM events WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((&s, &body), (subject, json), "event {id}");
    }
    assert!(plain[0].1.starts_with("vox:"), "a source named after its vendor keeps its subjects");
    let (s, body): (String, String) =
        conn.query_row("SELECT subject, body FROM events WHERE seq = 100", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(s, "vox-b:x:y");
    assert_eq!(body, r#"{"id":"colon","subject":"vox-b:x:y","data":{"n":1.50,"s":"\u00e9"}}"#);
    // The outbox keeps its rows, ids and subjects follow their events.
    let rows: Vec<(i64, String, i64, i64)> = conn
        .prepare("SELECT o.id, o.subject, o.attempts, o.next_at FROM outbox o ORDER BY o.id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let subjects: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(subjects, [a[0].1.as_str(), &a[1].1, &b[0].1, &b[1].1, "vox-b:x:y", &plain[0].1]);
    assert_eq!((rows[0].2, rows[0].3), (2, far), "the retry keeps its schedule");
    assert_eq!(rows[1].3, far, "vox-a's next event still waits behind its own retry");
    assert_eq!((rows[2].3, rows[3].3, rows[4].3), (1000, 1000, 1000), "vox-b no longer waits for vox-a");
    // Order per (route, subject): vox-b's first event is due, its second waits behind it,
    // vox-a's call waits for its retry.
    // (Leases that end at once, so the second look sees the same heads again.)
    let now = now_ms();
    let due: Vec<i64> = store.claim("r", now, 10, now).await.unwrap().deliveries.iter().map(|d| d.id).collect();
    assert_eq!(due, [3, 5, 6]);
    let due_later: Vec<i64> = store.claim("r", far, 10, far).await.unwrap().deliveries.iter().map(|d| d.id).collect();
    assert_eq!(due_later, [3, 5, 6, 1]);
    // Dead letters keep their ids (their place on replay) and take the new subjects.
    let dead = store.dead_letters(&Filter::default()).await.unwrap();
    let dead: Vec<(i64, &str)> = dead.iter().map(|d| (d.id, d.subject.as_str())).collect();
    assert_eq!(dead, [(8, b[0].1.as_str()), (7, a[0].1.as_str())]);
    assert_eq!(store.counts().await.unwrap(), table_counts(&path));
    store.replay_dead_letters(&Filter { name: Some("d".into()), ..Filter::default() }, now_ms()).await.unwrap();
    let replayed: Vec<(i64, String)> =
        claim(&store, "d", now_ms(), 10).await.into_iter().map(|d| (d.id, d.subject)).collect();
    assert_eq!(replayed, [(7, a[0].1.clone()), (8, b[0].1.clone())], "both accounts' calls flow side by side");
}

#[tokio::test]
async fn schema_4_attempts_become_the_delivery_log_with_their_routes_events_and_outcomes() {
    use crate::store::{DeliveryState, LogFilter, LogOutcome};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        // Schema 4: a pending delivery retried once, a dead letter with its two attempts, and
        // an attempt whose delivery went through since (only failures were kept then).
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..4] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 4).unwrap();
        tx.execute_batch(
            "INSERT INTO payloads (id, source, digest, received_at, body, event_ids)
                  VALUES (1, 'vox', x'00', 1000, x'7b7d', '[\"p\",\"d\",\"g\"]');
             INSERT INTO events (seq, id, payload_id, type, subject, body) VALUES
                  (1, 'p', 1, 'call.ended', 'vox:a', '{\"id\":\"p\"}'),
                  (2, 'd', 1, 'call.ended', 'vox:b', '{\"id\":\"d\"}'),
                  (3, 'g', 1, 'call.ended', 'vox:c', '{\"id\":\"g\"}');
             INSERT INTO outbox (id, event_seq, route, subject, attempts, next_at) VALUES (10, 1, 'crm', 'vox:a', 1, 5000);
             INSERT INTO dead_letters (id, event_seq, route, subject, attempts, dead_at, last_error)
                  VALUES (11, 2, 'crm', 'vox:b', 2, 3000, 'HTTP 500');
             INSERT INTO attempts (delivery_id, attempt, at, status, error, response, duration_ms) VALUES
                  (10, 1, 1500, 503, NULL, 'busy', 4),
                  (11, 1, 2000, 500, NULL, 'no', 5),
                  (11, 2, 3000, 500, NULL, 'no', 6),
                  (12, 1, 2500, 502, NULL, 'gone by', 7);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = open(&dir);
    let log = store.delivery_log(&LogFilter { route: Some("crm".into()), ..LogFilter::default() }).await.unwrap();
    let seen: Vec<(Option<&str>, i64, LogOutcome, Option<i64>)> =
        log.iter().map(|e| (e.event_id.as_deref(), e.attempt, e.outcome, e.delivery_id)).collect();
    assert_eq!(
        seen,
        [
            (Some("d"), 2, LogOutcome::Dead, Some(11)),
            (Some("d"), 1, LogOutcome::Failed, Some(11)),
            (Some("p"), 1, LogOutcome::Failed, Some(10)),
        ],
        "each attempt keeps its delivery's route and event; a dead letter's last is `dead`"
    );
    let orphan = store.delivery_log(&LogFilter { route: Some(String::new()), ..LogFilter::default() }).await.unwrap();
    assert_eq!((orphan.len(), orphan[0].delivery_id, orphan[0].event_id.as_deref()), (1, Some(12), None));
    let pending = store.event("p", now_ms()).await.unwrap().unwrap();
    assert_eq!((pending.deliveries[0].state, pending.deliveries[0].attempts_log.len()), (DeliveryState::Retrying, 1));
    let dead = store.dead_letter(11).await.unwrap().unwrap();
    assert_eq!(dead.attempts_log.len(), 2, "a dead letter's attempts are found through its event");
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn schema_4_calls_get_their_summaries_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let started = emitted("vox", "doc-call_started.json");
    let ended = emitted("vox", "doc-call_ended.json");
    let subject = started[0].1.clone();
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..4] {
            tx.execute_batch(migration).unwrap();
        }
        tx.pragma_update(None, "user_version", 4).unwrap();
        let mut seq = 0;
        for (payload, (events, at)) in [(&started, 1_000), (&ended, 2_000)].into_iter().enumerate() {
            tx.execute(
                "INSERT INTO payloads (id, source, digest, received_at, body, event_ids) VALUES (?1, 'vox', ?2, ?3, x'7b7d', '[]')",
                params![payload as i64 + 1, vec![payload as u8], at],
            )
            .unwrap();
            for (id, subject, json) in events.iter() {
                seq += 1;
                let kind =
                    serde_json::from_str::<serde_json::Value>(json).unwrap()["type"].as_str().unwrap().to_owned();
                tx.execute(
                    "INSERT INTO events (seq, id, payload_id, type, subject, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![seq, id, payload as i64 + 1, kind, subject, json],
                )
                .unwrap();
            }
        }
        // The first event dead on d, the last one pending on r; the rest left no trace.
        tx.execute(
            "INSERT INTO dead_letters (id, event_seq, route, subject, attempts, dead_at, last_error) VALUES (1, 1, 'd', ?1, 3, 5000, 'HTTP 500')",
            [&subject],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO outbox (id, event_seq, route, subject, attempts, next_at) VALUES (2, ?1, 'r', ?2, 0, 2000)",
            params![seq, subject],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = open(&dir);
    let call = store.call(&subject, now_ms()).await.unwrap().expect("the stored call");
    assert_eq!(call.summary.status.as_deref(), Some("completed"));
    assert_eq!((call.summary.first_at.as_str(), call.summary.last_at.as_str()), (&*rfc3339(1_000), &*rfc3339(2_000)));
    assert_eq!(call.summary.terminal_at, Some(rfc3339(2_000)));
    assert_eq!(call.summary.events, (started.len() + ended.len()) as i64);
    assert!(call.events.iter().all(|e| e.routes.is_none()), "routes were not kept before migration 7");
    let states: Vec<(i64, &str, super::super::DeliveryState)> =
        call.deliveries.iter().map(|d| (d.delivery_id.unwrap(), d.route.as_str(), d.state)).collect();
    assert_eq!(
        states,
        [(1, "d", super::super::DeliveryState::Dead), (2, "r", super::super::DeliveryState::Pending)],
        "only what the outbox and dead letters show"
    );
    let events: Vec<crate::canonical::CloudEvent> =
        call.events.iter().map(|e| serde_json::from_str(&e.json).unwrap()).collect();
    let record = crate::canonical::call::merge(&events).unwrap();
    assert_eq!(record.status.map(|s| s.as_str()), call.summary.status.as_deref());
    // The listing shows it.
    let later = store.calls(&crate::store::CallFilter::default()).await.unwrap();
    assert_eq!(later.len(), 1);
}

#[tokio::test]
async fn schema_7_calls_that_ended_count_as_completed_and_do_not_settle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let ended = emitted("vox", "doc-call_ended.json");
    let open_call = emitted("vox", "v2-call_started.json");
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..6] {
            tx.execute_batch(migration).unwrap();
        }
        let mut seq = 0;
        for (payload, events) in [&ended, &open_call].into_iter().enumerate() {
            tx.execute(
                "INSERT INTO payloads (id, source, digest, received_at, body, event_ids) VALUES (?1, 'vox', ?2, 2000, x'7b7d', '[]')",
                params![payload as i64 + 1, vec![payload as u8]],
            )
            .unwrap();
            for (id, subject, json) in events.iter() {
                seq += 1;
                let kind =
                    serde_json::from_str::<serde_json::Value>(json).unwrap()["type"].as_str().unwrap().to_owned();
                tx.execute(
                    "INSERT INTO events (seq, id, payload_id, type, subject, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![seq, id, payload as i64 + 1, kind, subject, json],
                )
                .unwrap();
            }
        }
        // Migration 7 summarises the calls stored before it.
        tx.execute_batch(MIGRATIONS[6]).unwrap();
        tx.pragma_update(None, "user_version", 7).unwrap();
        tx.commit().unwrap();
    }
    let store = open(&dir);
    let done = store.call(&ended[0].1, now_ms()).await.unwrap().unwrap();
    assert_eq!(done.summary.completed_at, Some(rfc3339(2_000)), "ended before the upgrade: completed");
    assert_eq!(done.summary.completed_at, done.summary.terminal_at);
    let open_call = store.call(&open_call[0].1, now_ms()).await.unwrap().unwrap();
    assert_eq!(open_call.summary.completed_at, None);
    assert!(store.settling(i64::MAX, 10).await.unwrap().is_empty(), "no call.completed for what ended before");
}
