//! Builders the store's tests share: the conformance suite, each backend's own tests and the
//! SQLite → PostgreSQL move.

use super::{Delivery, Ingest, Millis, NewEvent, Outcome, OutcomeKind, Store};

/// A payload of `source` with body `body`, received at 1 s past the epoch, whose events are
/// `(id, subject, routes)`; each event's JSON is `{"id":…}`.
pub(crate) fn ingest(source: &str, body: &str, events: &[(&str, &str, &[&str])]) -> Ingest {
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
                status: Some("completed"),
            })
            .collect(),
    }
}

/// Claims with a lease of a minute (long enough for any test).
pub(crate) async fn claim(store: &dyn Store, route: &str, now: Millis, limit: usize) -> Vec<Delivery> {
    store.claim(route, now, limit, now + 60_000).await.unwrap().deliveries
}

pub(crate) fn outcome(d: &Delivery, kind: OutcomeKind) -> Outcome {
    Outcome { id: d.id, lease: d.lease, kind }
}

pub(crate) fn delivered(d: &Delivery) -> Outcome {
    outcome(d, OutcomeKind::Delivered { recovered: false, attempt: crate::store::Attempt::default() })
}
