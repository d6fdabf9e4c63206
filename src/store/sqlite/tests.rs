use super::*;
use crate::store::{Attempt, Ingest, NewEvent, Store};

fn ingest(source: &str, body: &str, events: &[(&str, &str, &[&str])]) -> Ingest {
    Ingest {
        source: source.into(),
        digest: crate::canonical::body_digest(body.as_bytes()),
        body: body.as_bytes().to_vec(),
        received_at: 1_000,
        events: events
            .iter()
            .map(|(id, subject, routes)| NewEvent {
                id: (*id).into(),
                kind: "call.ended".into(),
                subject: (*subject).into(),
                json: format!("{{\"id\":\"{id}\"}}"),
                routes: routes.iter().map(|r| (*r).to_owned()).collect(),
            })
            .collect(),
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("db.sqlite"), Duration::from_secs(1)).unwrap()
}

fn table_counts(path: &Path) -> Counts {
    count(&Connection::open(path).unwrap()).unwrap()
}

#[tokio::test]
async fn duplicates_return_the_original_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store.ingest(ingest("vox", "{}", &[("a", "s", &["r"])])).await.unwrap();
    assert_eq!(first, IngestOutcome::Accepted(vec!["a".into()]));
    let again = store.ingest(ingest("vox", "{}", &[("ignored", "s", &["r"])])).await.unwrap();
    assert_eq!(again, IngestOutcome::Duplicate(vec!["a".into()]));
    let other_source = store.ingest(ingest("salpre", "{}", &[("b", "s", &["r"])])).await.unwrap();
    assert_eq!(other_source, IngestOutcome::Accepted(vec!["b".into()]));
}

#[tokio::test]
async fn due_returns_one_head_per_subject_oldest_first_and_skips_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.ingest(ingest("vox", "1", &[("a1", "call-a", &["r"]), ("a2", "call-a", &["r"])])).await.unwrap();
    store.ingest(ingest("vox", "2", &[("b1", "call-b", &["r", "other"])])).await.unwrap();
    let due = store.due("r", 2_000, 10, &[]).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["a1", "b1"], "a2 waits behind a1");
    let skip = [due[0].id];
    let rest: Vec<String> = store.due("r", 2_000, 10, &skip).await.unwrap().into_iter().map(|d| d.event_id).collect();
    assert_eq!(rest, ["b1"]);
    assert!(store.due("r", 999, 10, &[]).await.unwrap().is_empty(), "nothing is due before received_at");

    // A retry scheduled later keeps the subject's head in place; other subjects flow.
    let attempt = Attempt { at: 2_000, status: Some(500), ..Attempt::default() };
    store.complete(vec![Outcome::Retry { id: due[0].id, next_at: 60_000, attempt }]).await.unwrap();
    let now: Vec<String> = store.due("r", 3_000, 10, &[]).await.unwrap().into_iter().map(|d| d.event_id).collect();
    assert_eq!(now, ["b1"]);
    assert_eq!(store.next_due("r").await.unwrap(), Some(1_000), "b1 is still due");
    store.complete(vec![Outcome::Delivered { id: store.due("r", 3_000, 1, &[]).await.unwrap()[0].id }]).await.unwrap();
    assert_eq!(store.next_due("r").await.unwrap(), Some(60_000), "only the retried head remains");
    let later = store.due("r", 60_000, 10, &[]).await.unwrap();
    assert_eq!((later[0].event_id.as_str(), later[0].attempts), ("a1", 1));
}

#[tokio::test]
async fn counts_always_equal_the_tables_including_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = open(&dir);
    store.ingest(ingest("vox", "1", &[("a", "x", &["r1", "r2"]), ("b", "y", &["r1"])])).await.unwrap();
    assert_eq!(store.counts().await.unwrap(), table_counts(&path));
    let due = store.due("r1", 5_000, 10, &[]).await.unwrap();
    store
        .complete(vec![
            Outcome::Delivered { id: due[0].id },
            Outcome::Dead {
                id: due[1].id,
                attempt: Attempt { at: 5_000, error: Some("boom".into()), ..Attempt::default() },
            },
        ])
        .await
        .unwrap();
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
