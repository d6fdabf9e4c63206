//! One integration-test binary (faster to link than one per file), on the SQLite backend;
//! `tests/postgres` runs the same store-touching modules against PostgreSQL.

const BACKEND: support::Backend = support::Backend::Sqlite;

mod calls;
mod cli;
mod completed;
mod dedup;
mod dlog;
mod drift;
mod e2e;
mod edges;
mod erasure;
mod filters;
mod fuzz_regressions;
mod golden;
mod inbound;
mod openapi;
mod reliability;
mod reload;
mod retell;
mod security;
mod support;
mod tail;
mod ui;
mod vendors_cli;
