//! The integration suite of `tests/it` again, with every gateway on PostgreSQL: each test
//! makes its own database on `CALLGATE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and drops it after. Without a reachable
//! server the tests say so and pass, except under `CI=true`, where they fail.

const BACKEND: support::Backend = support::Backend::Postgres;

#[path = "../it/calls.rs"]
mod calls;
#[path = "../it/completed.rs"]
mod completed;
#[path = "../it/dedup.rs"]
mod dedup;
#[path = "../it/dlog.rs"]
mod dlog;
#[path = "../it/drift.rs"]
mod drift;
#[path = "../it/e2e.rs"]
mod e2e;
#[path = "../it/edges.rs"]
mod edges;
#[path = "../it/erasure.rs"]
mod erasure;
#[path = "../it/filters.rs"]
mod filters;
#[path = "../it/golden.rs"]
mod golden;
#[path = "../it/inbound.rs"]
mod inbound;
#[path = "../it/openapi.rs"]
mod openapi;
#[path = "../it/reliability.rs"]
mod reliability;
#[path = "../it/reload.rs"]
mod reload;
#[path = "../it/retell.rs"]
mod retell;
#[path = "../it/security.rs"]
mod security;
#[path = "../it/support.rs"]
mod support;
#[path = "../it/tail.rs"]
mod tail;
#[path = "../it/ui.rs"]
mod ui;

// PostgreSQL only: several replicas on one database, and the database going away.
mod cluster;
mod completed_replicas;
mod outage;
mod reload_replicas;
mod replicas;
mod tail_replicas;
