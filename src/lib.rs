//! callgate: one binary that receives call-event webhooks from voice-AI and telephony vendors,
//! validates and maps them into canonical CloudEvents, stores them durably, and re-emits them
//! to configured routes.
//!
//! # Layout
//! The pipeline reads top to bottom: [`ingress`] (HTTP, auth, status codes) →
//! [`vendors`] (schema validation + mapping, pure) → [`canonical`] (the event model) →
//! [`store`] (durable SQLite outbox) → [`delivery`] (routes, retries, dead letters).
//! [`drift`] sums what payloads show that the mapping does not know, for the drift report.
//! [`tail`] streams accepted events and delivery outcomes live to operators.
//! [`config`], [`telemetry`] and [`server`] wire it together, [`reload`] swaps in a new
//! configuration while running; `main.rs` is the CLI.

pub mod admin;
pub mod admin_client;
pub mod auth;
pub mod canonical;
pub mod completion;
pub mod config;
pub mod delivery;
pub mod drift;
pub mod http;
pub mod ingress;
pub mod receiver;
pub mod reload;
pub mod server;
pub mod store;
pub mod tail;
pub mod telemetry;
pub mod ui;
pub mod vendor_client;
pub mod vendors;
